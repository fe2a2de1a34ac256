//! Output wire formats and golden renderings: `list --json` lines of the recorded flows parse
//! back into `FlowRecord` and round-trip; unknown fields are rejected in flows and in the
//! `top` / `count --by` / `stats` reports; the report text is pinned.

use ctguard::ctnetlink::{CpuStats, TableStats};
use ctguard::flow::Flow;
use ctguard::guests::GuestMap;
use ctguard::output::json::{FlowRecord, LoadError, read_flows, write_flow};
use ctguard::output::report::{StatsReport, TallyReport};
use ctguard::stats::Fill;
use ctguard::tally::{GroupBy, Tally};
use serde::de::DeserializeOwned;

use crate::fixtures::{mixed_flow, mixed_flows};

fn json_line(flow: &Flow) -> String {
    let mut out = Vec::new();
    write_flow(&mut out, flow).unwrap();
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// `text` with `,"extra":1` added to the object that starts at the first `"{key}":{`
/// (or to the outermost object when `key` is empty).
fn with_extra_field(text: &str, key: &str) -> String {
    let open = if key.is_empty() {
        0
    } else {
        let at =
            text.find(&format!("\"{key}\":{{")).unwrap_or_else(|| panic!("no {key} in {text}"));
        at + key.len() + 3
    };
    let mut out = text.to_string();
    out.insert_str(open + 1, "\"extra\":1,");
    out
}

fn rejects_unknown_field<T: DeserializeOwned + std::fmt::Debug>(json: &str, key: &str) {
    let bad = with_extra_field(json, key);
    let e = serde_json::from_str::<T>(&bad).expect_err(&bad).to_string();
    assert!(e.contains("unknown field `extra`"), "{key}: {e}");
}

#[test]
fn list_json_of_the_recorded_flows_round_trips() {
    let flows = mixed_flows();
    let mut text = String::new();
    let mut broken = Vec::new();
    for flow in &flows {
        let line = json_line(flow);
        let record: FlowRecord =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        // The borrowed writer and the owned record write the same bytes.
        assert_eq!(record, FlowRecord::from(flow));
        assert_eq!(serde_json::to_string(&record).unwrap() + "\n", line);
        match Flow::try_from(record) {
            Ok(back) if back == *flow => {}
            Ok(back) => broken.push(format!("{line}  read back as {back:?}")),
            Err(e) => broken.push(format!("{line}  rejected: {e}")),
        }
        text.push_str(&line);
    }
    assert!(broken.is_empty(), "lines that do not load back:\n{}", broken.join("\n"));
    // `load` reads the whole file back to the same flows.
    let loaded: Vec<Flow> = read_flows(text.as_bytes()).map(Result::unwrap).collect();
    assert_eq!(loaded, flows);
}

#[test]
fn list_json_of_recorded_flows_is_pinned() {
    // The entry id, timeout and start time change with every recording; the rest was seeded.
    let golden = |proto: &str, src: &str| {
        let mut f = mixed_flow(proto, src);
        assert!(f.id.is_some() && f.timeout.is_some());
        (f.id, f.timeout, f.start_ns) = (None, None, None);
        json_line(&f)
    };
    assert_eq!(
        golden("tcp", "10.10.4.1"),
        concat!(
            r#"{"family":"ipv4","proto":"tcp","proto_num":6,"state":"ESTABLISHED","#,
            r#""orig":{"src":"10.10.4.1","dst":"10.10.4.2","sport":1234,"dport":80},"#,
            r#""reply":{"src":"192.168.0.9","dst":"10.10.4.1","sport":8080,"dport":1234},"#,
            r#""status":["SEEN_REPLY","ASSURED","CONFIRMED"],"mark":0,"use":1}"#,
            "\n"
        )
    );
    assert_eq!(
        golden("icmpv6", "2001:db8::1"),
        concat!(
            r#"{"family":"ipv6","proto":"icmpv6","proto_num":58,"#,
            r#""orig":{"src":"2001:db8::1","dst":"2001:db8::2","#,
            r#""icmp_type":128,"icmp_code":0,"icmp_id":9},"#,
            r#""reply":{"src":"2001:db8::2","dst":"2001:db8::1","#,
            r#""icmp_type":129,"icmp_code":0,"icmp_id":9},"#,
            r#""status":["CONFIRMED"],"mark":0,"use":1,"#,
            r#""counters":{"orig":{"packets":0,"bytes":0},"reply":{"packets":0,"bytes":0}}}"#,
            "\n"
        )
    );
    assert_eq!(
        golden("tcp", "10.10.3.3"),
        concat!(
            r#"{"family":"ipv4","proto":"tcp","proto_num":6,"state":"ESTABLISHED","#,
            r#""orig":{"src":"10.10.3.3","dst":"10.10.3.4","sport":1001,"dport":22,"zone":3},"#,
            r#""reply":{"src":"10.10.3.4","dst":"10.10.3.3","sport":22,"dport":1001},"#,
            r#""status":["CONFIRMED"],"mark":0,"use":1}"#,
            "\n"
        )
    );
}

#[test]
fn flow_lines_with_unknown_fields_are_rejected() {
    // A recorded flow with counters: every nested object is present.
    let line = json_line(&mixed_flow("tcp", "2001:db8::1"));
    let line = line.trim_end();
    for key in ["", "orig", "reply", "counters"] {
        rejects_unknown_field::<FlowRecord>(line, key);
    }
    // Inside counters: the per-direction object.
    let bad = line.replace(r#""counters":{"orig":{"#, r#""counters":{"orig":{"extra":1,"#);
    assert_ne!(bad, line);
    let e = serde_json::from_str::<FlowRecord>(&bad).unwrap_err().to_string();
    assert!(e.contains("unknown field `extra`"), "{e}");
    // Inside a raw attribute.
    let body = line.strip_suffix('}').unwrap();
    let raw = |item: &str| format!(r#"{body},"raw_attrs":[{item}]}}"#);
    let ok: FlowRecord = serde_json::from_str(&raw(r#"{"kind":99,"hex":"01ff"}"#)).unwrap();
    assert_eq!(ok.raw_attrs.len(), 1);
    let e = serde_json::from_str::<FlowRecord>(&raw(r#"{"kind":99,"hex":"01ff","extra":1}"#))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `extra`"), "{e}");
    // `load` reports it against its line, on one line.
    let text = format!("{line}\n{}\n", with_extra_field(line, "orig"));
    let results: Vec<Result<Flow, LoadError>> = read_flows(text.as_bytes()).collect();
    assert!(results[0].is_ok());
    let e = results[1].as_ref().unwrap_err();
    assert_eq!(e.line(), 2);
    let msg = e.to_string();
    assert!(msg.starts_with("line 2: ") && msg.contains("unknown field `extra`"), "{msg}");
    assert!(!msg.contains('\n'));
}

/// What `top --by state -n 4` builds for the recorded table.
fn top_by_state() -> TallyReport {
    let mut tally = Tally::new(GroupBy::State, GuestMap::new());
    for flow in mixed_flows() {
        tally.add(&flow);
    }
    let fill = Fill::new(TableStats { count: 33, max: 262_144 }, Some(65_536));
    TallyReport::new(&tally, Some(fill), Some(4))
}

fn stats() -> StatsReport {
    let cpu =
        |cpu, found, insert, drop| CpuStats { cpu, found, insert, drop, ..Default::default() };
    let fill = Fill::new(TableStats { count: 262_100, max: 262_144 }, Some(65_536));
    StatsReport::new(fill, &[cpu(0, 10, 100, 7), cpu(1, 5, 50, 0)], true)
}

#[test]
fn report_json_round_trips_and_rejects_unknown_fields() {
    let top = top_by_state();
    let json = serde_json::to_string(&top).unwrap();
    assert_eq!(serde_json::from_str::<TallyReport>(&json).unwrap(), top);
    for key in ["", "table"] {
        rejects_unknown_field::<TallyReport>(&json, key);
    }
    // The first group object.
    let bad = json.replacen(r#""groups":[{"#, r#""groups":[{"extra":1,"#, 1);
    assert_ne!(bad, json);
    let e = serde_json::from_str::<TallyReport>(&bad).unwrap_err().to_string();
    assert!(e.contains("unknown field `extra`"), "{e}");

    let stats = stats();
    let json = serde_json::to_string(&stats).unwrap();
    assert_eq!(serde_json::from_str::<StatsReport>(&json).unwrap(), stats);
    for key in ["", "table"] {
        rejects_unknown_field::<StatsReport>(&json, key);
    }
}

/// Lines joined with newlines, each line quoted so trailing blanks stay visible.
fn lines(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn top_report_json_is_pinned() {
    let json = serde_json::to_string(&top_by_state()).unwrap();
    assert_eq!(
        json,
        concat!(
            r#"{"table":{"count":33,"max":262144,"fill_percent":0.0,"buckets":65536},"#,
            r#""by":"state","matched":33,"groups":["#,
            r#"{"key":"ESTABLISHED","entries":8,"share_percent":24.2,"states":{"ESTABLISHED":8}},"#,
            r#"{"key":"udp","entries":7,"share_percent":21.2,"states":{"NON_TCP":7}},"#,
            r#"{"key":"SYN_SENT","entries":2,"share_percent":6.1,"states":{"SYN_SENT":2}},"#,
            r#"{"key":"TIME_WAIT","entries":2,"share_percent":6.1,"states":{"TIME_WAIT":2}}],"#,
            r#""more_groups":14}"#
        )
    );
}

#[test]
fn top_report_text_is_pinned() {
    let mut text = Vec::new();
    top_by_state().write_text(&mut text, true).unwrap();
    assert_eq!(
        String::from_utf8(text).unwrap(),
        lines(&[
            "table: 33 of 262144 entries (0.0% full), 65536 buckets",
            " STATE        ENTRIES  SHARE  SYN_SENT  ESTABLISHED  TIME_WAIT  NON_TCP",
            " ESTABLISHED        8  24.2%         0            8          0        0",
            " udp                7  21.2%         0            0          0        7",
            " SYN_SENT           2   6.1%         2            0          0        0",
            " TIME_WAIT          2   6.1%         0            0          2        0",
            "(33 matched flows; 14 more groups not shown)",
        ])
    );
}

#[test]
fn stats_report_text_is_pinned() {
    let mut text = Vec::new();
    stats().write_text(&mut text).unwrap();
    assert_eq!(
        String::from_utf8(text).unwrap(),
        lines(&[
            "table: 262100 of 262144 entries (100.0% full), 65536 buckets",
            " COUNTER         SUM (2 CPUs)  CPU0  CPU1",
            " chaintoolong    0             0     0",
            " clash_resolve   0             0     0",
            " drop            7             7     0",
            " early_drop      0             0     0",
            " error           0             0     0",
            " found           15            10    5",
            " insert          150           100   50",
            " insert_failed   0             0     0",
            " invalid         0             0     0",
            " search_restart  0             0     0",
        ])
    );
}

/// Every line of `text` ends in something other than a blank.
fn assert_no_trailing_blanks(what: &str, text: &[u8]) {
    let text = std::str::from_utf8(text).expect("text output is UTF-8");
    assert!(text.ends_with('\n'), "{what}: ends with a newline");
    for (i, line) in text.lines().enumerate() {
        assert!(!line.ends_with([' ', '\t']), "{what}: line {} ends in a blank: {line:?}", i + 1);
    }
}

#[test]
fn issue_9_19_top_and_stats_lines_do_not_end_in_a_space() {
    // top with and without the state columns, with a short key last (left-aligned would pad).
    let top = top_by_state();
    for states in [true, false] {
        let mut text = Vec::new();
        top.write_text(&mut text, states).unwrap();
        assert_no_trailing_blanks(&format!("top (states {states})"), &text);
    }
    // stats, summed and per CPU: the last column is left-aligned numbers of unequal width.
    for per_cpu in [true, false] {
        let cpu = |cpu, found| CpuStats { cpu, found, insert: 123_456, ..Default::default() };
        let fill = Fill::new(TableStats { count: 262_100, max: 262_144 }, None);
        let stats = StatsReport::new(fill, &[cpu(0, 1), cpu(1, 1_000_000)], per_cpu);
        let mut text = Vec::new();
        stats.write_text(&mut text).unwrap();
        assert_no_trailing_blanks(&format!("stats (per_cpu {per_cpu})"), &text);
    }
}

#[test]
fn report_group_keys_name_one_group_each() {
    // A consumer of `top --json` / `count --by --json` looks groups up by key.
    let mut guests = GuestMap::new();
    guests.add("web", vec!["192.168.0.0/24".parse().unwrap()]);
    guests.add("lab", vec!["10.10.0.0/16".parse().unwrap()]);
    let flows = mixed_flows();
    let mut ambiguous = Vec::new();
    for by in ["guest", "src", "dst", "src/24", "dst/16,48", "state", "proto", "zone", "mark"] {
        let mut tally = Tally::new(GroupBy::parse(by).unwrap(), guests.clone());
        for flow in &flows {
            tally.add(flow);
        }
        let report = TallyReport::new(&tally, None, None);
        assert_eq!(report.groups.iter().map(|g| g.entries).sum::<u64>(), flows.len() as u64);
        let mut keys: Vec<&str> = report.groups.iter().map(|g| g.key.as_str()).collect();
        keys.sort_unstable();
        for pair in keys.windows(2).filter(|p| p[0] == p[1]) {
            ambiguous.push(format!("--by {by}: two groups keyed {:?}", pair[0]));
        }
    }
    assert!(ambiguous.is_empty(), "{}", ambiguous.join("\n"));
}
