//! Hermetic tests: no privileges, no kernel; golden bytes recorded from the kernel.
//!
//! The fixtures under `tests/fixtures` were recorded by `scripts/capture-fixture` in a throwaway
//! namespace (provenance in `tests/fixtures/README.md`). Nothing here opens a netlink socket.

// A test crate: a panic on unwrap or expect is a failed test (the crate denies them elsewhere).
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Usage errors exit 2 with one line, before anything is touched; --help and --version.
mod cli;
// Recorded ctnetlink bytes → Flow → `conntrack -L` text; a second decoder agrees; no panics.
mod decode;
// deploy/: the example configs, the Prometheus rules (promtool), the dashboard, the unit.
mod deploy;
// The recorded fixtures as bytes and flows.
mod fixtures;
// Issue 16: stats --interval's input, a stray comma in a list.
mod habits;
// Issue 16: the man pages and completion scripts (golden), the guest names call back.
mod manual;
// Issue 12.4: recorded expectations → conntrack -L expect lines and JSON; no panics.
mod expect;
// doctor and tune: JSON pinned key by key, bad input.
mod doctor;
// Recorded conntrack events → conntrack -E lines and the live table; live JSON records.
mod live;
// `--except` / `protect`: never selected, never a kernel flush.
mod except;
// `evict`: refusals before anything is touched; its report's wire format.
mod evict;
// The proven flush: its report and its scratch tables.
mod flushproof;
// Issue 13: the guard's query socket (top --live) and /metrics, served from a made-up snapshot.
mod guard;
// The gate: its lints, and that scripts/check needs no root.
mod gate;
// `guard --check`: no kernel, no privileges; a bad config names its line.
mod guard_check;
// Bounded input, guest files (time, shadowing, escaping), load from any readable path.
mod inputs;
// JSON Lines and report wire formats (unknown fields rejected), golden text.
mod output;
// Issue 14.2: guest names from libvirt / Nova / Proxmox records; bad files are warnings.
mod discover;
// The selector corpus: flags → Selector → matches / kernel_filter.
mod selector;
