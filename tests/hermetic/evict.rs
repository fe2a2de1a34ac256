//! Issue 3: `evict` refuses bad input and a missing confirmation before anything is touched
//! (these run unprivileged: no namespace is entered, no socket opens), and its JSON report is
//! a pinned wire format.

use std::process::Command;

use ctguard::evict::{FailedDelete, Method, Report};

use crate::flushproof::proof;

/// Runs ctguard with stdin closed (no terminal): exit 2, one line naming `needle`.
fn refused(args: &[&str], needle: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_ctguard"))
        .args(args)
        .env_remove("CTGUARD_GUESTS")
        .env_remove("CTGUARD_AUDIT_LOG")
        .output()
        .expect("run the ctguard binary");
    let stderr = String::from_utf8(out.stderr).expect("stderr is UTF-8");
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: stdout {:?}", out.stdout);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: {stderr:?}");
    assert!(lines[0].starts_with("ctguard: ") && lines[0].contains(needle), "{args:?}: {stderr}");
}

#[test]
fn issue_3_evict_refuses_before_touching_anything() {
    // A namespace that does not exist: had ctguard got as far as entering it, it would say so.
    let ns = ["--netns", "/nonexistent/ns"];
    let cases: &[(&[&str], &str)] = &[
        (&["evict"], "needs a selection"),
        (&["evict", "--yes"], "--all"),
        (&["evict", "--all", "--guest", "172.16.3.5", "--yes"], "--all takes every flow"),
        (&["evict", "--guest", "172.16.3.5"], "add --yes to delete, or --dry-run"),
        (&["evict", "--all"], "without a terminal"),
        (&["evict", "-s", "172.16.3.0/33", "--yes"], "'172.16.3.0/33'"),
        (&["evict", "-s", "172.16.3.5", "--state", "STALE", "--yes"], "unknown state 'STALE'"),
        (&["evict", "-s", "172.16.3.5", "--idle", "ages", "--yes"], "invalid duration 'ages'"),
        (&["evict", "-s", "172.16.3.5", "--except", "10.0.0.0/40", "--yes"], "'10.0.0.0/40'"),
        (&["evict", "-s", "172.16.3.5", "--except", "host", "--yes"], "invalid IP address"),
        (&["evict", "-s", "172.16.3.5", "--rate", "lots", "--yes"], "invalid --rate 'lots'"),
        (&["evict", "-s", "172.16.3.5", "--rate", "0", "--yes"], "invalid --rate '0'"),
        (&["evict", "-s", "172.16.3.5", "--limit", "none", "--yes"], "invalid --limit 'none'"),
        (&["evict", "-s", "172.16.3.5", "--limit", "0", "--yes"], "invalid --limit '0'"),
        (&["evict", "-s", "172.16.3.5", "--list"], "add --dry-run"),
        (&["evict", "-s", "172.16.3.5", "--dry-run", "--save", "x.jsonl"], "deletes nothing"),
        (
            &["evict", "-s", "172.16.3.5", "--save", "/nonexistent/d/x.jsonl", "--yes"],
            "no directory",
        ),
        (&["evict", "-s", "172.16.3.5", "--save", "Cargo.toml", "--yes"], "the file exists"),
    ];
    for (args, needle) in cases {
        refused(args, needle);
        let with_ns: Vec<&str> = ns.iter().chain(args.iter()).copied().collect();
        refused(&with_ns, needle);
    }
}

#[test]
fn issue_3_evict_help_names_confirmation_and_exit_status() {
    let out = Command::new(env!("CARGO_BIN_EXE_ctguard"))
        .args(["evict", "--help"])
        .output()
        .expect("run the ctguard binary");
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).expect("UTF-8");
    for needle in
        ["--yes", "--dry-run", "--limit", "--rate", "--save", "--audit-log", "--all", "EXIT STATUS"]
    {
        assert!(help.contains(needle), "evict --help lacks {needle}:\n{help}");
    }
}

#[test]
fn issue_3_report_json_is_pinned() {
    let mut r = Report::nothing(240_000, 240_000, false);
    r.method = Method::PerFlow;
    r.deleted = 239_998;
    r.vanished = 1;
    r.failed = 1;
    r.elapsed_s = 0.5;
    let v = serde_json::to_value(&r).expect("serialise");
    let keys: Vec<&str> = v.as_object().expect("object").keys().map(String::as_str).collect();
    let mut want = vec![
        "dry_run",
        "method",
        "matched",
        "selected",
        "deleted",
        "vanished",
        "replaced",
        "changed",
        "failed",
        "not_attempted",
        "interrupted",
        "complete",
        "count_is_table_delta",
        "elapsed_s",
    ];
    want.sort_unstable();
    let mut got = keys.clone();
    got.sort_unstable();
    assert_eq!(got, want, "failures is left out when empty");
    assert_eq!(v["method"], "per-flow");
    assert!(!r.all_gone(), "one failed");
    r.failures.push(FailedDelete { flow: "tcp src=1.1.1.1".into(), errno: 1, error: "x".into() });
    let v = serde_json::to_value(&r).expect("serialise");
    assert_eq!(v["failures"][0]["errno"], 1);
    for (m, s) in [(Method::None, "none"), (Method::KernelFlush, "kernel-flush")] {
        assert_eq!(serde_json::to_value(m).expect("serialise"), s);
    }
    let gone = Report { failed: 0, vanished: 2, ..r.clone() };
    assert!(gone.all_gone(), "deleted + vanished == selected");
    let left_alone = Report { failed: 0, vanished: 0, changed: 1, replaced: 1, ..r.clone() };
    assert!(left_alone.all_gone(), "flows the re-check left alone are dealt with too");
    assert!(!Report { dry_run: true, ..gone }.all_gone(), "a dry run deletes nothing");
}

#[test]
fn issue_3_flush_accounting() {
    // The proven flush: what the table lost is what was matched, selected and deleted.
    let r = Report::proven(proof(), 50);
    assert_eq!((r.method, r.matched, r.selected), (Method::KernelFlush, 50, 50));
    assert_eq!((r.deleted, r.vanished), (50, 0));
    assert!(r.all_gone());
    assert!(r.count_is_table_delta, "issue 10.8: a flush's count is a table delta");
}

/// Issue 10.6/10.8: the text report says what the numbers are.
#[test]
fn issue_10_report_text_says_cut_short_left_alone_and_delta() {
    let mut r = Report::nothing(147_456, 147_456, false);
    r.method = Method::PerFlow;
    r.deleted = 80_360;
    r.not_attempted = 67_096;
    r.interrupted = true;
    r.complete = false;
    let mut text = Vec::new();
    r.write_text(&mut text).expect("write");
    let text = String::from_utf8(text).expect("UTF-8");
    assert!(text.contains("the selection dump was cut short: more flows may match"), "{text}");
    assert!(text.contains("67096 not attempted"), "{text}");

    let mut r = Report::nothing(4_000, 4_000, false);
    r.method = Method::PerFlow;
    r.deleted = 3_900;
    r.changed = 60;
    r.replaced = 40;
    let mut text = Vec::new();
    r.write_text(&mut text).expect("write");
    let text = String::from_utf8(text).expect("UTF-8");
    assert!(
        text.contains("left alone 100: 60 no longer matched, 40 replaced by a new entry"),
        "{text}"
    );

    let r = Report::proven(proof(), 10);
    let mut text = Vec::new();
    r.write_text(&mut text).expect("write");
    let text = String::from_utf8(text).expect("UTF-8");
    assert!(text.contains("the flush's count is the table's fall during it"), "{text}");
}
