//! Issue 16.6–16.7: `stats --interval` and `--count` refuse bad values, and a stray comma in
//! any comma list is refused like any other malformed list: exit 2, one line, nothing run.

use crate::cli::refused;

#[test]
fn issue_16_6_stats_interval_and_count_refuse_bad_values() {
    for (args, needle) in [
        (&["stats", "--interval", "0"][..], "--interval: '0' must be longer than zero"),
        (&["stats", "--interval", "0s"], "must be longer than zero"),
        (&["stats", "--interval", "x"], "--interval: invalid duration 'x'"),
        (&["stats", "--interval", "10ms"], "not between 100ms and 1h"),
        (&["stats", "--interval", "2h"], "not between 100ms and 1h"),
        (&["stats", "--interval", "1s", "--count", "0"], "invalid --count '0'"),
        (&["stats", "--interval", "1s", "--count", "three"], "invalid --count 'three'"),
        (&["stats", "--count", "3"], "--interval"),
        (&["stats", "--interval", "1s", "--per-cpu"], "--per-cpu"),
    ] {
        let line = refused(args);
        assert!(line.contains(needle), "{args:?}: {line}");
    }
}

#[test]
fn issue_16_7_a_stray_comma_in_a_list_is_refused() {
    for (args, needle) in [
        (&["list", "--state", "ESTABLISHED,"][..], "'ESTABLISHED,' has an empty item"),
        (&["count", "--state", ",ESTABLISHED"], "',ESTABLISHED' has an empty item"),
        (&["list", "--state", "SYN_SENT,,ESTABLISHED"], "has an empty item"),
        (&["list", "--status", "ASSURED,"], "status list 'ASSURED,' has an empty item"),
        (&["events", "--event", "new,"], "'new,' has an empty item"),
        (&["events", "--event", ","], "--event needs at least one of"),
        (&["list", "--label", "a,"], "empty item"),
    ] {
        let line = refused(args);
        assert!(line.contains(needle), "{args:?}: {line}");
    }
}

#[test]
fn issue_16_6_the_readme_stats_interval_example_has_the_code_s_heading_and_columns() {
    use ctguard::output::interval::{IntervalReport, IntervalTable};
    use ctguard::stats::{CounterWindow, Fill, TableStats};
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let at = readme.find("`stats --interval 1s` while").expect("the example");
    let block = &readme[at..];
    let start = block.find("```\n").expect("its code block") + 4;
    let end = start + block[start..].find("```").expect("the block's end");
    let lines: Vec<&str> = block[start..end].lines().collect();
    let w = CounterWindow { seconds: 1.0, cpus: 2, ..CounterWindow::default() };
    let mut out = Vec::new();
    let report = IntervalReport::new(
        std::time::SystemTime::now(),
        Fill::new(TableStats { count: 1, max: 2 }, None),
        &w,
    );
    IntervalTable::new(None).write(&mut out, &report).unwrap();
    let code = String::from_utf8(out).unwrap();
    assert_eq!(lines[0], code.lines().next().unwrap(), "the heading, byte for byte");
    for row in &lines[1..] {
        assert_eq!(row.len(), lines[0].len(), "right-aligned under the heading: {row:?}");
        assert_eq!(row.split_whitespace().count(), 13, "{row:?}");
    }
}
