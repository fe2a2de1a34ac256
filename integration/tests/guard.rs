//! Issue 13 in the lab: the incident replayed with `ctguard guard` running in the host
//! namespace, which relieves the table unattended while the healthy guests keep working.
//!
//! Needs root, and the RELEASE build of ctguard (the guard's relief targets are a release
//! build's): `cargo build --release --bin ctguard` first (scripts/test does), or
//! `$CTGUARD_RELEASE`. Run by `cargo test -p ctguard-lab --features lab-tests`.

// A test crate: a panic on unwrap or expect is a failed test (the workspace denies them elsewhere).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ctguard_lab::guarded::{self, HIGH_PERCENT, Options};
use ctguard_lab::place;

#[test]
fn issue_13_guard_relieves_the_incident_unattended() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the lab test needs root: it creates network namespaces");
    let opts = Options {
        ctguard: place::built_ctguard("CTGUARD_RELEASE", Some("release"))
            .unwrap_or_else(|e| panic!("{e}")),
        narrate_to_stderr: true,
    };
    // Bounded in time; the guard is stopped and the lab removed however it ends.
    let out = guarded::run_bounded(&opts)
        .unwrap_or_else(|e| panic!("the guarded incident replay failed: {e}"));
    // The figures the issue's resolution reports, also when an assertion below fails.
    eprintln!("\n{}", guarded::figures(&out));

    // The table never reached its max, nor more than 5 points over high.
    assert!(out.start_count < out.high, "the flood started under high: {out:?}");
    assert!(out.fill_secs.is_some(), "the flood took the table across high: {out:?}");
    assert!(out.peak < out.max, "the table reached its max: {out:?}");
    assert!(
        out.peak_percent() <= (HIGH_PERCENT + 5) as f64,
        "peak fill {:.1}% is more than 5 points over high {HIGH_PERCENT}%",
        out.peak_percent()
    );
    assert!(out.samples > 100, "the count was sampled: {}", out.samples);

    // Capped within a second of the fill crossing high.
    let cross_to_cap = out.cross_to_cap_ms.expect("the samples' crossing and the cap's done");
    assert!(cross_to_cap <= 1000.0, "capped {cross_to_cap:.0} ms after the fill crossed high");
    let relief_to_cap = out.relief_to_cap_ms.expect("relief_started and the cap's done");
    assert!((0.0..=1000.0).contains(&relief_to_cap), "relief_started -> cap: {relief_to_cap}");

    // The eviction follows the cap at once (relief is cap, then evict): it started (its done
    // record's time less its own elapsed_s) within a second of relief_started.
    let relief_to_evicted =
        out.relief_to_evicted_ms.expect("relief_started and the eviction's done");
    let evict_ms = out.evict_secs.expect("the eviction's elapsed_s") * 1e3;
    assert!(
        relief_to_evicted - evict_ms <= 1000.0,
        "the eviction was done {relief_to_evicted:.0} ms after relief_started and took \
         {evict_ms:.0} ms: it started {:.0} ms after relief_started",
        relief_to_evicted - evict_ms
    );

    // Its ESTABLISHED flows evicted (the oracle: conntrack -L by tuple and id).
    assert!(out.runaway_before > 0);
    assert_eq!(out.runaway_left, 0, "the runaway's ESTABLISHED entries of before are all gone");
    assert!(out.evicted as usize >= out.runaway_before, "{out:?}");

    // The healthy guests worked throughout.
    assert!(out.probes >= 100, "{} healthy probes", out.probes);
    assert_eq!(
        out.probes_ok, out.probes,
        "every healthy new connection succeeded: {:?}",
        out.probe_failure
    );
    assert!(out.healthy_established >= 9, "the healthy sessions were counted");
    assert!(out.healthy_intact, "the healthy guests' ESTABLISHED entries are the same set");

    // What the guard says: /metrics, the audit log, the spool.
    assert!(out.metrics_capped, "ctguard_capped{{guest=\"runaway\"}} 1 while capped");
    assert!(out.metrics_evicted.is_some_and(|n| n > 0.0), "{:?}", out.metrics_evicted);
    assert_eq!(out.count("relief_started", None), 1, "{:?}", out.records);
    assert!(out.count("decision", Some("cap")) >= 1, "{:?}", out.records);
    assert!(out.count("done", Some("cap")) >= 1, "{:?}", out.records);
    assert!(out.count("decision", Some("evict")) >= 1, "{:?}", out.records);
    assert!(out.count("done", Some("evict")) >= 1, "{:?}", out.records);
    assert_eq!(out.count("failed", None), 0, "{:?}", out.records);
    assert!(out.evict_intents >= 1 && out.evict_outcomes == out.evict_intents, "{out:?}");
    assert!(out.spool_files >= 1, "the evicted flows were spooled");

    // After the flood and the cooldown, the cap is gone.
    assert_eq!(out.count("done", Some("uncap")), 1, "{:?}", out.records);
    assert!(out.nft_runaway_lines.is_empty(), "cap rules left: {:?}", out.nft_runaway_lines);
    assert_eq!(out.metrics_capped_after, Some(0.0));

    // SIGTERM stops the guard within a second, cleanly.
    assert!(out.stop_ms <= 1000.0, "the guard took {:.0} ms to stop", out.stop_ms);
    assert_eq!(out.guard_exit, Some(0));
}
