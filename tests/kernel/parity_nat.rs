//! Parity tier, NAT (issue 12, requirement 1): `--src-nat`, `--dst-nat`, `--any-nat` select,
//! delete and create like conntrack-tools' `-n`, `-g`, `-j`, and the JSON flow format carries
//! the NAT binding, so that `evict --save` → `load` and `list --json` → `load` restore NATed
//! flows exactly (reply tuple and NAT status bits, which a create without `CTA_NAT_*` loses).

use crate::netns::Netns;
use crate::oracle;
use crate::parity::Twins;

/// NATed flows of every shape, as `conntrack -I` arguments, and two flows without NAT. ICMP is
/// left out: conntrack 1.4.7 counts every ICMP flow with a NAT_DONE bit as port-NATed (it
/// compares the id with the type and code), which ctguard does not follow (see
/// `select::NatSelect`).
const SHAPES: [&str; 9] = [
    "-s 10.0.0.5 -d 192.0.2.1 -p tcp --sport 40000 --dport 80 --state ESTABLISHED -u SEEN_REPLY,ASSURED -t 3600 --dst-nat 10.9.9.9",
    "-s 10.0.0.6 -d 192.0.2.1 -p tcp --sport 40001 --dport 80 --state ESTABLISHED -t 3600 --dst-nat 10.9.9.9:8080",
    "-s 10.0.0.7 -d 192.0.2.2 -p tcp --sport 40002 --dport 443 --state ESTABLISHED -t 3600 --src-nat 203.0.113.1",
    "-s 10.0.0.8 -d 192.0.2.2 -p udp --sport 5000 --dport 53 -t 300 --src-nat 203.0.113.1:6000",
    "-s 10.0.0.9 -d 192.0.2.3 -p udp --sport 5001 --dport 53 -t 300 --src-nat 203.0.113.2:6001 --dst-nat 10.9.9.8:5353",
    "-s fd00::5 -d fd00::1 -p tcp --sport 40000 --dport 80 --state ESTABLISHED -t 3600 --dst-nat [fd00::9]:8080",
    "-s fd00::6 -d fd00::1 -p udp --sport 40001 --dport 53 -t 300 --src-nat fd00::77",
    "-s 10.0.0.10 -d 192.0.2.1 -p tcp --sport 40003 --dport 80 --state ESTABLISHED -t 3600",
    "-s fd00::7 -d fd00::1 -p udp --sport 40002 --dport 53 -t 300",
];

/// The kernel's NAT must be there (`nf_nat`, built in or a module): a NATed create in a
/// scratch namespace must come out NATed. A module is loaded if `modprobe` exists (loading a
/// module changes no namespace's table or sysctls); without NAT the test fails loudly.
fn require_nat() {
    if std::path::Path::new("/proc/modules").exists() {
        let _ = std::process::Command::new("modprobe").arg("nf_nat").status();
    }
    let ns = Netns::new();
    let made = ns.conntrack(&words(&format!("-I {}", SHAPES[0])));
    let listed = ns.conntrack(&["-L", "--dst-nat", "10.9.9.9"]);
    assert!(
        made.code == Some(0) && listed.lines().len() == 1,
        "the kernel's NAT is missing (load nf_nat: `modprobe nf_nat`, or CONFIG_NF_NAT): {} {}",
        made.describe(),
        listed.describe()
    );
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Every flow as `ctguard list --json` prints it, without what ticks or differs between
/// namespaces (timeout, id, use), sorted: the status bits and the `nat` binding included.
fn json_table(ns: &Netns) -> Vec<String> {
    let out = ns.ctguard(&["list", "--json"]);
    assert!(matches!(out.code, Some(0 | 1)), "list --json: {}", out.describe());
    let mut rows: Vec<String> = out
        .lines()
        .iter()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            let o = v.as_object_mut().expect("an object");
            for k in ["timeout", "id", "use"] {
                o.remove(k);
            }
            v.to_string()
        })
        .collect();
    rows.sort();
    rows
}

#[track_caller]
fn same_json(a: &Netns, b: &Netns) {
    let (x, y) = (json_table(a), json_table(b));
    assert_eq!(x, y, "the tables differ in status or NAT");
}

/// The issue's reproduction: a DNATed flow evicted with `--save` and loaded back is the same
/// entry (`conntrack -L` before and after identical, DST_NAT and both NAT_DONE bits kept) and
/// `conntrack -L --dst-nat` lists it again.
#[test]
fn issue_12_nat_undo_restores_the_dnated_flow() {
    require_nat();
    let ns = Netns::new();
    ns.conntrack(&words(&format!("-I {}", SHAPES[0]))).ok();
    let before = oracle::sorted(&ns.conntrack_list(&[]));
    let json_before = json_table(&ns);
    assert!(
        json_before[0].contains(r#""nat":{"dst":{"ip":"10.9.9.9","port":80}}"#),
        "{json_before:?}"
    );
    let saved = ns.file("F.jsonl").to_string_lossy().into_owned();
    ns.ctguard(&["evict", "-s", "10.0.0.5", "--save", &saved, "--yes"]).ok();
    assert_eq!(ns.conntrack_count(), 0, "the flow was evicted");
    ns.ctguard(&["load", &saved]).ok();
    let after = oracle::sorted(&ns.conntrack_list(&[]));
    if let Err(why) = oracle::same_lines(&after, &before) {
        panic!("the restored table differs: {why}");
    }
    assert_eq!(json_table(&ns), json_before, "status bits or NAT lost");
    assert!(json_before[0].contains(r#""DST_NAT","SRC_NAT_DONE","DST_NAT_DONE""#));
    assert_eq!(ns.conntrack_list(&["--dst-nat"]).len(), 1, "-L --dst-nat lists it again");
}

/// `ctguard create --src-nat/--dst-nat` makes the entry `conntrack -I` makes, every shape.
#[test]
fn issue_12_nat_create_like_conntrack() {
    require_nat();
    for shape in SHAPES {
        let t = Twins::seeded(&[]);
        t.same_effect(&format!("-I {shape}"), &format!("create {shape}"), &[]);
        same_json(&t.ct, &t.ctg);
    }
}

/// `list` and `evict` with the NAT selectors take the flows `conntrack -L`/`-D` take.
#[test]
fn issue_12_nat_selectors_list_and_delete_like_conntrack() {
    require_nat();
    let t = Twins::seeded(&SHAPES);
    for (ct, ctg) in [
        ("-n", "--src-nat"),
        ("-g", "--dst-nat"),
        ("-j", "--any-nat"),
        ("-n 203.0.113.1", "--src-nat 203.0.113.1"),
        ("-n 203.0.113.1:6000", "--src-nat 203.0.113.1:6000"),
        ("-g 10.9.9.9", "--dst-nat 10.9.9.9"),
        ("-g 10.9.9.9:8080", "--dst-nat 10.9.9.9:8080"),
        ("-g 10.9.9.8:5353", "--dst-nat 10.9.9.8:5353"),
        ("-g fd00::9", "--dst-nat fd00::9"),
        ("-g [fd00::9]:8080", "--dst-nat [fd00::9]:8080"),
        ("-n fd00::77", "--src-nat fd00::77"),
        ("-j 10.9.9.9", "--any-nat 10.9.9.9"),
        ("-j 203.0.113.2:6001", "--any-nat 203.0.113.2:6001"),
        ("-n -g", "--src-nat --dst-nat"),
        ("-g 10.9.9.8 -n 203.0.113.2", "--dst-nat 10.9.9.8 --src-nat 203.0.113.2"),
        ("-p tcp -g", "-p tcp --dst-nat"),
        ("-f ipv6 -j", "-f ipv6 --any-nat"),
    ] {
        let shown = t.same_list(ct, ctg);
        assert!(!shown.is_empty(), "`conntrack -L {ct}` selects something of the seed");
    }
    // Empty selections agree too: the port is compared only when NAT changed it.
    assert!(t.same_list("-g 10.9.9.9:80", "--dst-nat 10.9.9.9:80").is_empty());
    assert!(t.same_list("-n 203.0.113.1:40002", "--src-nat 203.0.113.1:40002").is_empty());
    assert!(t.same_list("-n 203.0.113.9", "--src-nat 203.0.113.9").is_empty());
    for (ct, ctg) in [
        ("-D -n 203.0.113.1:6000", "evict --src-nat 203.0.113.1:6000 --yes"),
        ("-D -g 10.9.9.9", "evict --dst-nat 10.9.9.9 --yes"),
        ("-D -f ipv6 -g", "evict -f ipv6 --dst-nat --yes"),
        ("-D -n", "evict --src-nat --yes"),
    ] {
        let before = t.ct.conntrack_count();
        t.same_effect(ct, ctg, &[]);
        assert!(t.ct.conntrack_count() < before, "`conntrack {ct}` deleted something");
    }
    assert_eq!(t.ct.conntrack_count(), 2, "the flows without NAT are left");
    same_json(&t.ct, &t.ctg);
    // conntrack -D refuses --any-nat ("Illegal option"); ctguard takes it on every command.
    let t = Twins::seeded(&SHAPES);
    t.ct.conntrack(&["-D", "-n"]).ok();
    t.same_effect("-D -g", "evict --any-nat --yes", &[]);
    assert_eq!(t.ctg.conntrack_count(), 2);
}

/// Every NAT shape survives `evict --save` → `load` in place, and `list --json` → `load` into
/// a fresh namespace, exactly.
#[test]
fn issue_12_nat_save_and_load_round_trip_every_shape() {
    require_nat();
    let t = Twins::seeded(&SHAPES);
    let (src, fresh) = (&t.ct, &t.ctg);
    let fresh_before = fresh.conntrack_count();
    assert_eq!(fresh_before, SHAPES.len() as u64);
    fresh.conntrack(&["-F"]).ok();
    assert_eq!(fresh.conntrack_count(), 0);
    let listed = src.ctguard(&["list", "--json"]).ok();
    let path = fresh.write_file("listed.jsonl", &listed.stdout);
    fresh.ctguard(&["load", &path]).ok();
    let (a, b) = t.tables(&[]);
    if let Err(why) = oracle::same_lines(&b, &a) {
        panic!("list --json → load: {why}");
    }
    same_json(src, fresh);

    let before = oracle::sorted(&src.conntrack_list(&[]));
    let json_before = json_table(src);
    let saved = src.file("saved.jsonl").to_string_lossy().into_owned();
    src.ctguard(&["evict", "--all", "--save", &saved, "--yes"]).ok();
    assert_eq!(src.conntrack_count(), 0);
    src.ctguard(&["load", &saved]).ok();
    if let Err(why) = oracle::same_lines(&oracle::sorted(&src.conntrack_list(&[])), &before) {
        panic!("evict --save → load: {why}");
    }
    assert_eq!(json_table(src), json_before);
}

/// A line without `nat` (written before it existed) still loads, NAT included: the status
/// and the reply tuple say it; a `nat` that contradicts them is refused, nothing created.
#[test]
fn issue_12_nat_old_lines_load_and_contradictions_are_refused() {
    require_nat();
    let t = Twins::seeded(&[SHAPES[4]]);
    let line = t.ct.ctguard(&["list", "--json"]).ok().stdout;
    let mut v: serde_json::Value = serde_json::from_str(line.trim()).expect("json");
    let nat = v.as_object_mut().and_then(|o| o.remove("nat")).expect("a nat field");
    let old = t.ctg.write_file("old.jsonl", &format!("{v}\n"));
    t.ctg.conntrack(&["-F"]).ok();
    t.ctg.ctguard(&["load", &old]).ok();
    same_json(&t.ct, &t.ctg);

    let mut wrong = v.clone();
    let mut bad_nat = nat.clone();
    bad_nat["dst"]["ip"] = "10.9.9.7".into();
    wrong["nat"] = bad_nat;
    let bad = t.ctg.write_file("bad.jsonl", &format!("{wrong}\n"));
    t.ctg.conntrack(&["-F"]).ok();
    let r = t.ctg.ctguard(&["load", &bad]);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(r.stderr.contains("nat: "), "{}", r.describe());
    assert_eq!(t.ctg.conntrack_count(), 0, "nothing created");
}

/// Bad NAT values are refused by both before anything is touched (ctguard: exit 2, one line).
#[test]
fn issue_12_nat_bad_input_is_refused() {
    require_nat();
    let t = Twins::seeded(&SHAPES);
    let flow = "-s 10.0.0.20 -d 192.0.2.1 -p tcp --sport 1 --dport 80 -t 60";
    for (ct, ctg) in [
        ("-L --dst-nat 10.9.9.9:70000".to_string(), "list --dst-nat 10.9.9.9:70000".to_string()),
        ("-D --src-nat 203.0.113.1:70000".into(), "evict --src-nat 203.0.113.1:70000 --yes".into()),
        (
            "-D -s 10.0.0.5 --dst-nat fd00::9".into(),
            "evict -s 10.0.0.5 --dst-nat fd00::9 --yes".into(),
        ),
        ("-D -f ipv6 --dst-nat 10.9.9.9".into(), "evict -f ipv6 --dst-nat 10.9.9.9 --yes".into()),
        ("-D --any-nat --src-nat".into(), "evict --any-nat --src-nat --yes".into()),
        (format!("-I {flow} --dst-nat fd00::9"), format!("create {flow} --dst-nat fd00::9")),
        (
            format!("-I {flow} --src-nat 1.2.3.4:70000"),
            format!("create {flow} --src-nat 1.2.3.4:70000"),
        ),
    ] {
        t.both_refuse(&ct, &ctg);
    }
    // `1.2.3` is an address to conntrack (inet_aton reads 1.2.0.3) and selects nothing there;
    // ctguard refuses it like every shortened address, before touching anything.
    let before = t.tables(&[]);
    assert_eq!(t.ct.conntrack(&["-L", "--dst-nat", "1.2.3"]).code, Some(0));
    for args in [&["evict", "--dst-nat", "1.2.3", "--yes"][..], &["list", "--dst-nat", "1.2.3"]] {
        let r = t.ctg.ctguard(args);
        assert_eq!(r.code, Some(2), "{}", r.describe());
        assert_eq!(r.stderr_lines().len(), 1, "{}", r.describe());
        assert!(r.stderr.contains("invalid NAT address '1.2.3'"), "{}", r.describe());
    }
    assert_eq!(t.tables(&[]), before);
}

/// `conntrack -L -o save` of every NAT shape (`-n`/`-g` with the NAT port in the reply ports)
/// loads back through `load --batch` exactly, ports included (conntrack -R of the same file
/// loses a NAT port: it restores 10.9.9.8:8443 as port 443).
#[test]
fn issue_12_nat_save_lines_load_back_through_load_batch() {
    require_nat();
    let t = Twins::seeded(&SHAPES);
    let want = t.tables(&[]).0;
    let saved = t.ctg.conntrack(&["-L", "-o", "save"]).ok().stdout;
    assert!(saved.contains(" -g ") && saved.contains(" -n "), "DNAT and SNAT lines: {saved}");
    let file = t.ctg.write_file("saved.txt", &saved);
    t.ctg.conntrack(&["-F"]).ok();
    t.ctg.ctguard(&["load", "--batch", &file]).ok();
    if let Err(why) = oracle::same_lines(&t.tables(&[]).1, &want) {
        panic!("-o save → load --batch: {why}");
    }
}
