//! Issue 5: `doctor` and `tune` wire formats and bad input. The JSON documents are pinned
//! key by key (the lab's end-to-end test reads them), unknown fields are rejected, and bad
//! flags exit 2 with one line before any namespace or socket is touched. `tune --json` is
//! pinned beside `TuneReport` (src/tune/mod.rs), on the library's own incident host.

use std::collections::BTreeMap;

use ctguard::TcpState;
use ctguard::doctor::{
    CounterWindow, DoctorReport, Facts, Inputs, LogSummary, NetnsInfo, WATCHED_SYSCTLS,
};
use ctguard::guests::GuestMap;
use ctguard::kmsg::{self, Target};
use ctguard::stats::{CpuStats, Fill, TableStats};
use ctguard::tally::{GroupBy, GroupKey, Tally};
use ctguard::tune;
use serde_json::{Value, json};

use crate::cli::refused;

/// A tally of these groups, each `n` ESTABLISHED flows.
fn tally_of(by: GroupBy, guests: &GuestMap, groups: &[(GroupKey, u64)]) -> Tally {
    let established = usize::from(TcpState::Established.number());
    let mut tally = Tally::new(by, guests.clone());
    for (key, n) in groups {
        for _ in 0..*n {
            tally.add_placed(*key, established);
        }
    }
    tally
}

/// The incident's table at the moment the operators looked: full, drop rising, the runaway
/// guest holding 240,000 ESTABLISHED entries, a line in the kernel log for this namespace.
fn incident_report(guests: &GuestMap, guests_file: Option<&str>, key: &str) -> DoctorReport {
    let target = Target { inode: 4_026_532_290, initial: Some(false), names_netns: true };
    let mut log = LogSummary { readable: true, ..LogSummary::default() };
    for rec in [
        "4,9001,9100000000,-;nf_conntrack: nf_conntrack: table full in netns 4026532290, dropping packet",
        "4,9002,9110000000,-;nf_conntrack: nf_conntrack: table full in netns 4026532777, dropping packet",
        "4,9003,9115000000,-;nf_conntrack: table full, dropping packet",
    ] {
        log.add(kmsg::parse_record(rec).expect("a table-full record"), &target);
    }
    let before = CpuStats { drop: 1000, early_drop: 3, insert: 500_000, ..CpuStats::default() };
    let after = CpuStats { drop: 1200, early_drop: 3, insert: 500_000, ..CpuStats::default() };
    let facts = Facts {
        fill: Fill::new(TableStats { count: 262_144, max: 262_144 }, Some(262_144)),
        counters: CounterWindow { before, after, seconds: 1.0004, cpus: 2 },
        established_timeout: Some(432_000),
        log,
        now_usec: 9_120_000_000,
    };
    // The offender and, below the one group shown, the rest of the table.
    let (by, offender, rest) = match guests_file {
        Some(_) => (GroupBy::Guest, GroupKey::Guest(guests.find(key)), GroupKey::Guest(None)),
        None => (
            GroupBy::Src,
            GroupKey::Addr(key.parse().expect("an address")),
            GroupKey::Addr("172.16.9.9".parse().expect("an address")),
        ),
    };
    let tally = tally_of(by, guests, &[(offender, 240_000), (rest, 22_144)]);
    let sysctl = WATCHED_SYSCTLS
        .iter()
        .map(|n| (format!("net.netfilter.{n}"), (*n == "nf_conntrack_max").then_some(262_144)))
        .collect();
    let guest_flags: Vec<String> =
        guests_file.iter().flat_map(|f| ["--guests".to_string(), f.to_string()]).collect();
    DoctorReport::new(Inputs {
        facts,
        netns: NetnsInfo { inode: 4_026_532_290, initial: Some(false) },
        netns_arg: Some("hv"),
        guest_flags: &guest_flags,
        guests,
        tally: &tally,
        limit: 1,
        sysctl,
        tune: vec!["net.netfilter.nf_conntrack_tcp_timeout_established=3600".into()],
    })
}

#[test]
fn issue_5_doctor_json_is_pinned_key_by_key() {
    let report = incident_report(&GuestMap::new(), None, "172.16.3.5");
    let got = serde_json::to_value(&report).unwrap();
    let cap = "# cap new connections from 172.16.3.5 at 26000 live ones (counted from when the rule is added)\n\
               ip netns exec hv nft add table inet ctguard\n\
               ip netns exec hv nft add chain inet ctguard forward '{ type filter hook forward priority -1; policy accept; }'\n\
               ip netns exec hv nft add rule inet ctguard forward ip saddr 172.16.3.5 ct state new ct count over 26000 counter reject";
    let counters = |drop: u64, early: u64, insert: u64| {
        json!({"chaintoolong":0,"clash_resolve":0,"drop":drop,"early_drop":early,"error":0,
               "found":0,"insert":insert,"insert_failed":0,"invalid":0,"search_restart":0})
    };
    let mut sysctl = serde_json::Map::new();
    for n in WATCHED_SYSCTLS {
        let v = if n == "nf_conntrack_max" { json!(262_144) } else { Value::Null };
        sysctl.insert(format!("net.netfilter.{n}"), v);
    }
    let want = json!({
        "verdict": "full",
        "reasons": [
            "drop rose by 200 in 1.0 s: new flows are dropped now (the table is full)",
            "262144 of 262144 entries: the table is full"
        ],
        "netns": {"inode": 4_026_532_290u64, "initial": false},
        "table": {"count": 262_144, "max": 262_144, "fill_percent": 100.0, "buckets": 262_144},
        "counters": {
            "window_seconds": 1.0,
            "cpus": 2,
            "sum": counters(1200, 3, 500_000),
            "delta": counters(200, 0, 0)
        },
        "by": "src",
        "matched": 262_144,
        "offenders": [{"key": "172.16.3.5", "entries": 240_000, "share_percent": 91.6,
                       "states": {"ESTABLISHED": 240_000}}],
        "kernel_log": {
            "readable": true,
            "error": null,
            "table_full_lines": 1,
            "last": "nf_conntrack: nf_conntrack: table full in netns 4026532290, dropping packet",
            "last_age_seconds": 20,
            "other_netns_lines": 2,
            "unattributed_lines": 0
        },
        "sysctl": Value::Object(sysctl),
        "actions": {
            "offender": "172.16.3.5",
            "evict": "ctguard --netns hv evict --guest 172.16.3.5 --state ESTABLISHED --yes",
            "evict_argv": ["ctguard", "--netns", "hv", "evict", "--guest", "172.16.3.5",
                           "--state", "ESTABLISHED", "--yes"],
            "cap": cap,
            "tune": ["net.netfilter.nf_conntrack_tcp_timeout_established=3600"],
            "tune_command": "ctguard --netns hv tune --apply"
        }
    });
    assert_eq!(got, want, "\ngot:  {got}\nwant: {want}");
    // It reads back, and a field this build does not know is refused at every level.
    let text = got.to_string();
    assert_eq!(serde_json::from_str::<DoctorReport>(&text).unwrap(), report);
    for key in ["", "netns", "table", "counters", "kernel_log", "actions"] {
        let bad = if key.is_empty() {
            text.replacen('{', "{\"extra\":1,", 1)
        } else {
            text.replacen(&format!("\"{key}\":{{"), &format!("\"{key}\":{{\"extra\":1,"), 1)
        };
        let e = serde_json::from_str::<DoctorReport>(&bad).expect_err(key).to_string();
        assert!(e.contains("unknown field `extra`"), "{key}: {e}");
    }
}

#[test]
fn issue_5_doctor_with_guests_names_the_guest_file_and_caps_every_cidr() {
    let mut guests = GuestMap::new();
    guests.add("web01", vec!["172.16.3.5/32".parse().unwrap(), "fd00:3::/64".parse().unwrap()]);
    let r = incident_report(&guests, Some("/etc/ctguard/guests.toml"), "web01");
    assert_eq!(
        r.actions.evict_argv.as_deref().unwrap().join(" "),
        "ctguard --netns hv evict --guests /etc/ctguard/guests.toml --guest web01 --state ESTABLISHED --yes"
    );
    let cap = r.actions.cap.unwrap();
    assert!(cap.contains("forward ip saddr 172.16.3.5 ct state new ct count over 26000"), "{cap}");
    assert!(
        cap.contains("forward ip6 saddr fd00:3::/64 ct state new ct count over 26000"),
        "{cap}"
    );
}

#[test]
fn issue_5_bad_doctor_and_tune_input_exits_2_with_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["doctor", "--window", "0"], "--window '0' must be more than 0"),
        (&["doctor", "--window", "2m"], "at most 60s"),
        (&["doctor", "--window", "soon"], "--window: invalid duration 'soon'"),
        (&["doctor", "-n", "0"], "invalid -n '0'"),
        (&["doctor", "--guests", "/nonexistent/guests.toml"], "/nonexistent/guests.toml"),
        (&["tune", "--persist", "/nonexistent/dir/90-conntrack.conf"], "does not exist"),
        (&["tune", "--persist", "/"], "is a directory"),
        (&["tune", "--bogus"], "unexpected argument '--bogus'"),
        // Refused before the (missing) namespace is entered.
        (&["--netns", "/nonexistent/ns", "tune", "--apply", "--persist", "/"], "is a directory"),
    ];
    for (args, needle) in cases {
        let line = refused(args);
        assert!(line.contains(needle), "{args:?}: {line}");
    }
}

/// A scratch directory for one test, removed when dropped.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new(name: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("ctguard-htest-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("create a scratch dir");
        ScratchDir(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }

    /// The directory's entries, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .expect("read the scratch dir")
            .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn issue_9_3_persist_never_writes_through_a_planted_temporary_link() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    // What an unprivileged user can do in a shared directory such as /tmp: plant the name the
    // old code used for its temporary file, pointing at a file root owns.
    let dir = ScratchDir::new("persist-planted");
    let victim = dir.path("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let target = dir.path("p.conf");
    let planted = dir.path("p.conf.ctguard-tmp");
    symlink(&victim, &planted).unwrap();

    tune::write_file_atomically(&target, "net.netfilter.nf_conntrack_max = 1\n").unwrap();

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n", "the victim is untouched");
    let meta = std::fs::symlink_metadata(&target).unwrap();
    assert!(meta.file_type().is_file(), "{target} is a regular file, not the planted link");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o644, "mode set explicitly");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "net.netfilter.nf_conntrack_max = 1\n");
    assert_eq!(std::fs::read_link(&planted).unwrap().to_string_lossy(), victim, "left alone");
    // No temporary file is left behind.
    assert_eq!(dir.names(), ["p.conf", "p.conf.ctguard-tmp", "victim"]);
    // Writing again replaces the file in place (rename over it).
    tune::write_file_atomically(&target, "second\n").unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "second\n");
    assert_eq!(dir.names(), ["p.conf", "p.conf.ctguard-tmp", "victim"]);
}

#[test]
fn issue_9_3_persist_refuses_a_target_that_is_a_link() {
    use std::os::unix::fs::symlink;
    let dir = ScratchDir::new("persist-link");
    let victim = dir.path("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let link = dir.path("q.conf");
    symlink(&victim, &link).unwrap();
    // The library refuses it ...
    let e = tune::write_file_atomically(&link, "x\n").unwrap_err();
    assert!(e.to_string().contains("is a symbolic link"), "{e}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(dir.names(), ["q.conf", "victim"]);
    // ... and the binary, as bad input: exit 2, one line, before any socket or sysctl
    // (`--apply` would otherwise have written first).
    let line = refused(&["tune", "--apply", "--persist", &link]);
    assert!(line.contains(&format!("--persist {link}: is a symbolic link")), "{line}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    // A dangling link is refused the same way (the old code would create its target).
    let dangling = dir.path("r.conf");
    symlink(dir.path("created-by-root"), &dangling).unwrap();
    let line = refused(&["tune", "--persist", &dangling]);
    assert!(line.contains("is a symbolic link"), "{line}");
    assert_eq!(dir.names(), ["q.conf", "r.conf", "victim"]);
}

#[test]
fn issue_9_17_doctor_prints_next_steps_on_a_healthy_table_as_the_readme_says() {
    // A quiet, half-empty table: healthy. The README says the section is always there, with
    // tune's changes whenever there are some, and `nothing to do` otherwise.
    let guests = GuestMap::new();
    let quiet = CpuStats { insert: 10, ..CpuStats::default() };
    let owner = GroupKey::Addr("172.16.3.5".parse().expect("an address"));
    let one_owner = tally_of(GroupBy::Src, &guests, &[(owner, 1000)]);
    let healthy = |tune: Vec<String>| {
        DoctorReport::new(Inputs {
            facts: Facts {
                fill: Fill::new(TableStats { count: 1000, max: 262_144 }, Some(262_144)),
                counters: CounterWindow { before: quiet, after: quiet, seconds: 1.0, cpus: 2 },
                established_timeout: Some(3600),
                log: LogSummary { readable: true, ..LogSummary::default() },
                now_usec: 9_120_000_000,
            },
            netns: NetnsInfo { inode: 4_026_532_290, initial: Some(false) },
            netns_arg: Some("hv"),
            guest_flags: &[],
            guests: &guests,
            tally: &one_owner,
            limit: 10,
            sysctl: BTreeMap::new(),
            tune,
        })
    };
    let text = |r: &DoctorReport| {
        let mut out = Vec::new();
        r.write_text(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let with_tune = healthy(vec!["net.netfilter.nf_conntrack_tcp_timeout_time_wait=30".into()]);
    assert!(!with_tune.trouble());
    let t = text(&with_tune);
    let steps = &t[t.find("\nnext steps:\n").expect("a next steps section")..];
    assert!(steps.contains("1. tune"), "{steps}");
    assert!(steps.contains("net.netfilter.nf_conntrack_tcp_timeout_time_wait=30"), "{steps}");
    assert!(!steps.contains("nft ") && !steps.contains("evict"), "no cap or evict: {steps}");
    let t = text(&healthy(Vec::new()));
    assert!(t.ends_with("\nnext steps:\n  nothing to do\n"), "{t}");
}
