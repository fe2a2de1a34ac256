//! Hermetic tests: no privileges, no kernel; golden bytes recorded from the kernel.
