//! Kernel tests: each in its own fresh network namespace, against the real ctnetlink.
//!
//! Run as root: `cargo test --features kernel-tests --test kernel -- --test-threads=2`.
//! conntrack-tools (`conntrack` v1.4.7) is the independent oracle; the machine's own
//! namespace is never touched. A test that cannot run fails loudly, it never passes.

// A test crate: a panic on unwrap or expect is a failed test (the crate denies them elsewhere).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attack;
mod bad_input;
mod caps;
mod checks;
mod doctor;
mod evict;
mod evict_races;
mod exit_status;
mod flushproof;
mod guard;
mod guard_discover;
mod guests;
mod habits;
mod idle;
mod inputs;
mod lifecycle;
mod live;
mod mixed_table;
mod netns;
mod netns_path;
mod oracle;
mod parity;
mod parity_expect;
mod parity_input;
mod parity_nat;
mod parity_update;
mod permissions;
mod seed;
mod stats;
mod terminal;
mod unattended;
mod watch_tui;

/// Root, `ip`, `conntrack` and the conntrack module are present; else every test fails.
#[test]
fn preconditions_root_conntrack_and_namespaces() {
    netns::require_environment();
}
