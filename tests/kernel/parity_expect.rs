//! Issue 12.4, the parity tier for expectations: `list --expect`, `count --expect` and
//! `evict --expect` against `conntrack -L/-C/-D expect`, on expectations the kernel's FTP
//! helper made from real control connections (`scripts/ftp-expect.py`) in twin namespaces
//! seeded alike.
//!
//! `conntrack -L expect` without `-f` lists IPv4 only; ctguard lists every family, so the
//! tables are compared as `-f ipv4` and `-f ipv6` together.

use ctguard::ctnetlink::{Conntrack, Error};
use serde_json::Value;

use crate::netns::Netns;
use crate::parity::Twins;

/// The FTP-like client and server, run with `python3 -c` inside a namespace.
const FTP: &str = include_str!("../../scripts/ftp-expect.py");

/// The ftp helper on port 21 (and 2121, whose flows go to zone 5), inside the namespace only.
const RULESET: &str = r#"table inet ctg_expect {
  ct helper ftp-std { type "ftp" protocol tcp; }
  chain zone { type filter hook output priority -300; tcp dport 2121 ct zone set 5; tcp sport 2121 ct zone set 5; }
  chain out { type filter hook output priority 0; tcp dport { 21, 2121 } ct helper set "ftp-std"; }
}
"#;

/// The data ports the seed expects, IPv4 then IPv6.
const SEED_V4: [&str; 3] = ["40021:50021", "40022:50022", "40023:50023"];
const SEED_V6: [&str; 1] = ["40024:50024"];

/// Loopback up and the ftp helper rules, in `ns` (a namespace this test created).
fn with_ftp_helper(ns: &Netns) {
    ns.exec("ip", &["link", "set", "lo", "up"]).ok();
    let rules = ns.write_file("ruleset.nft", RULESET);
    ns.exec("nft", &["-f", &rules]).ok();
}

/// FTP control connections from `addr:client` to `addr:ctrl`, each announcing a data port:
/// the kernel's helper creates one expectation per pair.
#[track_caller]
fn expect_from(ns: &Netns, addr: &str, ctrl: &str, pairs: &[&str]) {
    let mut args = vec!["30", "python3", "-c", FTP, addr, ctrl];
    args.extend_from_slice(pairs);
    ns.exec("timeout", &args).ok();
}

/// Twins, each with the same four expectations (three IPv4, one IPv6).
fn seeded() -> Twins {
    let t = Twins::seeded(&[]);
    for ns in [&t.ct, &t.ctg] {
        with_ftp_helper(ns);
        expect_from(ns, "127.0.0.1", "21", &SEED_V4);
        expect_from(ns, "::1", "21", &SEED_V6);
        assert_eq!(expect_table(ns).len(), 4, "the seed made four expectations");
    }
    t
}

/// The line with its first field (the ticking timeout) replaced by `T`.
fn normalise(line: &str) -> String {
    match line.split_once(' ') {
        Some((t, rest)) if t.parse::<u32>().is_ok() => format!("T {rest}"),
        _ => line.to_string(),
    }
}

fn sorted(lines: &[String]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(|l| normalise(l)).collect();
    v.sort();
    v
}

/// `conntrack -L expect <args>` lines.
#[track_caller]
fn ct_expect(ns: &Netns, args: &[&str]) -> Vec<String> {
    let mut all = vec!["-L", "expect"];
    all.extend_from_slice(args);
    ns.conntrack(&all).ok().lines()
}

/// The whole expectation table as conntrack lists it, both families, normalised and sorted.
fn expect_table(ns: &Netns) -> Vec<String> {
    let mut all = ct_expect(ns, &["-f", "ipv4"]);
    all.extend(ct_expect(ns, &["-f", "ipv6"]));
    sorted(&all)
}

/// `conntrack -D expect` of the TCP expectation `addr -> addr:dport` (conntrack-tools wants
/// the whole expected tuple, reply ports too, unused).
fn ct_delete_expect(ns: &Netns, addr: &str, dport: &str) -> crate::netns::Run {
    ns.conntrack(&[
        "-D",
        "expect",
        "-s",
        addr,
        "-d",
        addr,
        "-p",
        "tcp",
        "--sport",
        "0",
        "--dport",
        dport,
        "--reply-port-src",
        "0",
        "--reply-port-dst",
        "0",
    ])
}

/// `ctguard list --expect <args>` lines (exit 0 or 1).
#[track_caller]
fn ctg_expect(ns: &Netns, args: &str) -> Vec<String> {
    let mut all = vec!["list", "--expect"];
    all.extend(args.split_whitespace());
    let r = ns.ctguard(&all);
    assert!(matches!(r.code, Some(0 | 1)), "{}", r.describe());
    r.lines()
}

#[test]
fn issue_12_list_expect_prints_the_lines_conntrack_lists() {
    let t = seeded();
    for family in ["ipv4", "ipv6"] {
        let want = sorted(&ct_expect(&t.ct, &["-f", family]));
        let got = sorted(&ctg_expect(&t.ctg, &format!("-f {family}")));
        assert!(!want.is_empty(), "the seed has {family} expectations");
        assert_eq!(got, want, "-f {family}");
    }
    // Without -f, every family (conntrack's -L expect would show IPv4 only).
    assert_eq!(sorted(&ctg_expect(&t.ctg, "")), expect_table(&t.ct));
    // The same namespace, the same moment: byte for byte but the timeout.
    assert_eq!(sorted(&ctg_expect(&t.ct, "")), expect_table(&t.ct));

    let json = ctg_expect(&t.ctg, "--json");
    let records: Vec<Value> =
        json.iter().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let mut ports: Vec<u64> =
        records.iter().map(|r| r["tuple"]["dport"].as_u64().expect("dport")).collect();
    ports.sort();
    assert_eq!(ports, [50021, 50022, 50023, 50024]);
    for r in &records {
        assert_eq!(r["helper"], "ftp");
        assert_eq!(r["master"]["dport"], 21);
        assert!(r["id"].as_u64().is_some(), "{r}");
    }
}

#[test]
fn issue_12_list_expect_selects_on_the_expected_tuple() {
    let t = seeded();
    let all = expect_table(&t.ct);
    let with = |needle: &str| -> Vec<String> {
        all.iter().filter(|l| l.contains(needle)).cloned().collect()
    };
    for (ctg_args, want) in [
        ("-p tcp --dport 50022", with("sport=0 dport=50022 mask")),
        ("--dport 50021-50022", [with("dport=50021 mask"), with("dport=50022 mask")].concat()),
        ("-s 127.0.0.0/8", with("src=127.0.0.1")),
        ("-d ::1", with("src=::1")),
        ("-f ipv6 -p tcp", with("src=::1")),
        ("-p udp", vec![]),
        ("--sport 1", vec![]),
    ] {
        let mut want = want;
        want.sort();
        assert_eq!(sorted(&ctg_expect(&t.ctg, ctg_args)), want, "list --expect {ctg_args}");
    }
    let none = t.ctg.ctguard(&["list", "--expect", "--dport", "1"]);
    assert_eq!(none.code, Some(1), "nothing matched: {}", none.describe());
}

#[test]
fn issue_12_count_expect_counts_like_conntrack() {
    let t = seeded();
    // conntrack -C expect counts what its -L expect lists: IPv4.
    let ct = t.ct.conntrack(&["-C", "expect"]).ok();
    let ctg = t.ctg.ctguard(&["count", "--expect", "-f", "ipv4"]).ok();
    assert_eq!(ctg.stdout.trim(), ct.stdout.trim());
    assert_eq!(t.ctg.ctguard(&["count", "--expect"]).ok().stdout.trim(), "4");
    let by = t.ctg.ctguard(&["count", "--expect", "--by", "dst", "--json"]).ok();
    let v: Value = serde_json::from_str(by.stdout.trim()).expect("JSON");
    assert_eq!(v["matched"], 4);
    let groups = v["groups"].as_array().expect("groups");
    let entries = |key: &str| groups.iter().find(|g| g["key"] == key).map(|g| g["entries"].clone());
    assert_eq!(entries("127.0.0.1"), Some(Value::from(3)));
    assert_eq!(entries("::1"), Some(Value::from(1)));
    let helper = t.ctg.ctguard(&["count", "--expect", "--by", "helper", "--json"]).ok();
    let v: Value = serde_json::from_str(helper.stdout.trim()).expect("JSON");
    assert_eq!((&v["groups"][0]["key"], &v["groups"][0]["entries"]), (&"ftp".into(), &4.into()));
    // The masters carry the helper too: `count --by helper` of the flows.
    let masters = t.ct.conntrack_list(&[]).iter().filter(|l| l.contains(" helper=ftp")).count();
    assert_eq!(masters, 4, "one master flow per expectation");
    let flows = t.ctg.ctguard(&["count", "--by", "helper", "--json"]).ok();
    let v: Value = serde_json::from_str(flows.stdout.trim()).expect("JSON");
    assert_eq!((&v["groups"][0]["key"], &v["groups"][0]["entries"]), (&"ftp".into(), &4.into()));
    let none = t.ctg.ctguard(&["count", "--expect", "-p", "udp"]);
    assert_eq!((none.code, none.stdout.trim()), (Some(1), "0"), "{}", none.describe());
}

#[test]
fn issue_12_evict_expect_leaves_the_table_conntrack_d_expect_leaves() {
    let t = seeded();
    let ct = ct_delete_expect(&t.ct, "127.0.0.1", "50022");
    let ctg = t.ctg.ctguard(&[
        "evict",
        "--expect",
        "-p",
        "tcp",
        "--dport",
        "50022",
        "--yes",
        "--json",
        "--no-audit",
    ]);
    assert_eq!(ctg.code, Some(0), "{}", ctg.describe());
    let report: Value = serde_json::from_str(ctg.stdout.trim()).expect("JSON report");
    assert_eq!(
        (&report["table"], &report["selected"], &report["deleted"], &report["vanished"]),
        (&Value::from("expect"), &Value::from(1), &Value::from(1), &Value::from(0)),
        "{report}"
    );
    assert_eq!(expect_table(&t.ctg), expect_table(&t.ct), "after {}", ct.describe());
    assert_eq!(expect_table(&t.ctg).len(), 3);

    // The IPv6 one, by family.
    ct_delete_expect(&t.ct, "::1", "50024");
    let ctg = t.ctg.ctguard(&["evict", "--expect", "-f", "ipv6", "--yes", "--no-audit"]);
    assert_eq!(ctg.code, Some(0), "{}", ctg.describe());
    assert_eq!(expect_table(&t.ctg), expect_table(&t.ct));
    assert_eq!(expect_table(&t.ctg).len(), 2);
    // Nothing left to match: exit 1, nothing touched.
    let again = t.ctg.ctguard(&["evict", "--expect", "-f", "ipv6", "--yes", "--no-audit"]);
    assert_eq!(again.code, Some(1), "{}", again.describe());
    // The flows (the masters, in TIME_WAIT) are not expectations: evict --expect left them.
    assert_eq!(t.ctg.conntrack_count(), t.ct.conntrack_count());
}

#[test]
fn issue_12_evict_expect_dry_run_audit_and_refusals() {
    let t = seeded();
    let before = expect_table(&t.ctg);
    let dry = t.ctg.ctguard(&["evict", "--expect", "-f", "ipv4", "--dry-run", "--list"]).ok();
    assert_eq!(sorted(&dry.lines()), sorted(&ct_expect(&t.ct, &["-f", "ipv4"])));
    assert!(dry.stderr.contains("dry run: 3 expectations would be deleted"), "{}", dry.stderr);
    assert_eq!(expect_table(&t.ctg), before, "a dry run deletes nothing");

    // Bad input: exit 2, one line, nothing touched; conntrack refuses the same.
    for (ct_args, ctg_args) in [
        ("-L expect -m 1", "list --expect --mark 1"),
        ("-L expect --state ESTABLISHED", "list --expect --state ESTABLISHED"),
        ("-L expect -f ipv4 -s 10.0.0.300", "list --expect -s 10.0.0.300"),
    ] {
        let reason = t.both_refuse(ct_args, ctg_args);
        assert!(!reason.is_empty());
    }
    let save = t.ctg.file("saved.jsonl").to_string_lossy().into_owned();
    for args in [
        vec!["evict", "--expect", "--yes"],
        vec!["evict", "--expect", "-p", "tcp", "--limit", "1", "--yes"],
        vec!["evict", "--expect", "-p", "tcp", "--rate", "10", "--yes"],
        vec!["evict", "--expect", "-p", "tcp", "--save", &save, "--yes"],
        vec!["evict", "--expect", "-p", "tcp", "--zone", "5", "--yes"],
        vec!["evict", "--expect", "-p", "tcp"],
        vec!["count", "--expect", "--by", "state"],
        vec!["count", "--expect", "--live"],
        vec!["list", "--expect", "--guest", "10.0.0.1"],
        vec!["list", "--expect", "--dst-nat", "10.0.0.1"],
        vec!["list", "--expect", "--orig-zone", "5"],
    ] {
        let r = t.ctg.ctguard(&args);
        assert_eq!(r.code, Some(2), "{}", r.describe());
        assert_eq!(r.stderr_lines().len(), 1, "one line of reason: {}", r.describe());
    }
    assert_eq!(expect_table(&t.ctg), before, "a refused command changed the table");
    assert!(!t.ctg.file("saved.jsonl").exists());

    // An eviction that deletes writes its intent and outcome.
    let audit = t.ctg.file("audit.jsonl").to_string_lossy().into_owned();
    t.ctg.ctguard(&["evict", "--expect", "--all", "--yes", "--audit-log", &audit]).ok();
    assert!(expect_table(&t.ctg).is_empty());
    let records: Vec<Value> = std::fs::read_to_string(&audit)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[0]["record"], "intent");
    assert_eq!(records[1]["record"], "outcome");
    assert_eq!(records[1]["deleted"], 4, "{}", records[1]);
}

/// The id guard, staged: the expectation dumped is deleted and another takes its tuple (a new
/// master announcing the same data port) before the delete is sent; the kernel refuses the
/// old id and the new expectation stays.
#[test]
fn issue_12_an_expectation_replaced_after_the_dump_is_not_deleted() {
    let ns = Netns::new();
    with_ftp_helper(&ns);
    expect_from(&ns, "127.0.0.1", "21", &["40031:50031"]);
    let dump = || ns.inside(|| Conntrack::open().expect("socket").expectations(None));
    let old = dump().expect("dump");
    assert_eq!(old.len(), 1);
    ct_delete_expect(&ns, "127.0.0.1", "50031");
    expect_from(&ns, "127.0.0.1", "21", &["40032:50031"]);
    let new = dump().expect("dump");
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].tuple, old[0].tuple, "the same expected tuple");
    assert_ne!(new[0].id, old[0].id, "another expectation, another id");

    let stale = ns.inside(|| Conntrack::open().expect("socket").delete_expectation(&old[0]));
    assert!(
        matches!(stale, Err(Error::Kernel { errno: libc::ENOENT, .. })),
        "the old id is refused: {stale:?}"
    );
    let left = expect_table(&ns);
    assert_eq!(left.len(), 1, "the new expectation stays");
    assert!(left[0].contains("master-src=127.0.0.1 master-dst=127.0.0.1 sport=40032"), "{left:?}");

    ns.inside(|| Conntrack::open().expect("socket").delete_expectation(&new[0]))
        .expect("the current id deletes");
    assert!(expect_table(&ns).is_empty());
}

/// A dump does not say an expectation's zone, and the kernel's delete looks in zone 0: an
/// expectation of a zoned master cannot be deleted; evict says so (exit 2), not "vanished".
#[test]
fn issue_12_an_expectation_of_a_zoned_master_is_reported_not_deleted() {
    let ns = Netns::new();
    with_ftp_helper(&ns);
    expect_from(&ns, "127.0.0.1", "2121", &["40041:50041"]);
    let before = expect_table(&ns);
    assert_eq!(before.len(), 1);
    let r = ns.ctguard(&["evict", "--expect", "--all", "--yes", "--json", "--no-audit"]);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    let report: Value = serde_json::from_str(r.stdout.trim()).expect("JSON report");
    assert_eq!((&report["failed"], &report["vanished"]), (&Value::from(1), &Value::from(0)));
    assert!(r.stderr.contains("not found in zone 0"), "{}", r.stderr);
    assert_eq!(expect_table(&ns), before);
}
