//! Kernel tests: each in its own fresh network namespace, against the real ctnetlink.
