//! The incident end to end, in the lab: a full table, its symptoms, the relief, the recovery.
//!
//! Needs root; run by `scripts/test` after building the ctguard binary
//! (`cargo test -p ctguard-lab --features lab-tests`).

// A test crate: a panic on unwrap or expect is a failed test (the workspace denies them elsewhere).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ctguard_lab::place;
use ctguard_lab::replay::{self, Options};

#[test]
fn issue_5_incident_replay_full_table_doctor_evict_recovery() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the lab test needs root: it creates network namespaces");
    let opts = Options {
        ctguard: place::built_ctguard("CTGUARD", None).unwrap_or_else(|e| panic!("{e}")),
        show_doctor_report: false,
        narrate_to_stderr: true,
    };
    // Bounded in time; Ctrl-C or SIGTERM end it with the lab removed, not left behind.
    let outcome =
        replay::run_bounded(&opts).unwrap_or_else(|e| panic!("the incident replay failed: {e}"));

    assert_eq!(outcome.seeded, 258_540, "the incident's table");
    assert_eq!(outcome.full_count, outcome.max, "the lab's host table filled to nf_conntrack_max");
    assert!(outcome.runaway_established > 0 && outcome.fill_secs < 60.0);
    assert!(outcome.drop_full > outcome.drop_before, "drop rose while full");
    assert!(
        outcome.count_after < outcome.max / 2,
        "the relief freed the table: {}",
        outcome.count_after
    );
    assert!(outcome.healthy_established >= 9, "the healthy guests' sessions were counted");
    let doctor = outcome.doctor.as_ref().expect("the doctor ran");
    assert_eq!(doctor["verdict"], "full");
    assert_eq!(doctor["offenders"][0]["key"], "v-runaway", "the guest found behind its port");
    assert_eq!(outcome.relief[0], "ctguard", "the command doctor printed: {:?}", outcome.relief);
    assert!(outcome.relief.contains(&"evict".to_string()));
    // Issue 9.18: the narration's counts are evict's own report; the oracle's listing came
    // first, so evict found all of it and the guest's newer connections.
    assert!(outcome.relief_listed > 0);
    assert!(
        outcome.relief_selected >= outcome.relief_listed,
        "evict selected {}, conntrack -L listed {} before it",
        outcome.relief_selected,
        outcome.relief_listed
    );
    assert!(outcome.relief_deleted > 0 && outcome.relief_deleted <= outcome.relief_selected);
    assert_ne!(outcome.verdict_after, "full", "doctor after the relief");
    // Every entry outside the selection that vanished was one the kernel frees by itself under
    // pressure (checked entry by entry in the replay); most stay.
    assert!(outcome.kept_missing * 2 < outcome.kept_before);
}
