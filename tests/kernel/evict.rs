//! Issue 3: `ctguard evict` deletes exactly the selected flows. conntrack-tools is the oracle:
//! after each eviction `conntrack -L` must equal the listing before it minus exactly the flows
//! the selection names, judged from conntrack's own lines.

use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde_json::Value;

use ctguard::ctnetlink::{Conntrack, Deleter};
use ctguard::evict;
use ctguard::select::{self, GuestFilter, Selector};

use crate::checks::{Checks, equal};
use crate::netns::{CTGUARD, Netns, OnTerminal, Run};
use crate::oracle::{self, Entry};
use crate::seed::{self, RUNAWAY_V4, RUNAWAY_V6, ip};

/// `ctguard evict ARGS --yes --json --audit-log <scratch>`; the report it printed.
pub(crate) fn evict_json(ns: &Netns, args: &[&str]) -> Result<(Run, Value), String> {
    let audit = ns.file("audit.jsonl").to_string_lossy().into_owned();
    let mut all = vec!["evict", "--yes", "--json", "--audit-log", &audit];
    all.extend_from_slice(args);
    let r = ns.ctguard(&all);
    let json: Value = serde_json::from_str(r.stdout.trim())
        .map_err(|e| format!("no JSON report ({e}); {}", r.describe()))?;
    Ok((r, json))
}

/// Runs an eviction and checks the table against the oracle: the listing before minus the
/// entries `selected` picks; the report's counts; and the method used.
fn evict_exactly(
    ns: &Netns,
    args: &[&str],
    selected: &dyn Fn(&Entry) -> bool,
    method: &str,
) -> Result<(), String> {
    let before = oracle::parse_all(&ns.conntrack_list(&[]));
    let gone: Vec<&Entry> = before.iter().filter(|e| selected(e)).collect();
    if gone.is_empty() || gone.len() == before.len() {
        return Err(format!(
            "the case selects {} of {}: it tests nothing",
            gone.len(),
            before.len()
        ));
    }
    let want: Vec<&str> = before.iter().filter(|e| !selected(e)).map(|e| e.line.as_str()).collect();
    let (r, json) = evict_json(ns, args)?;
    equal("exit code", r.code, Some(0)).map_err(|e| format!("{e}; {}", r.describe()))?;
    oracle::same_lines(&ns.conntrack_list(&[]), &want)
        .map_err(|e| format!("the table is not the original minus the selection: {e}"))?;
    let n = gone.len() as u64;
    for (field, value) in [("matched", n), ("selected", n), ("deleted", n), ("failed", 0)] {
        equal(field, json[field].as_u64(), Some(value)).map_err(|e| format!("{e}: {json}"))?;
    }
    equal("method", json["method"].as_str(), Some(method))
}

/// Collateral safety: evictions of several kinds on one mixed table, each checked by the
/// oracle against the table as it was right before.
#[test]
fn issue_3_evict_deletes_exactly_the_selection_on_a_mixed_table() {
    let ns = Netns::new();
    seed::with_conntrack(&ns, &seed::mixed_table(6_000), "seed.conntrack");
    let guest_file = ns.write_file("guests.toml", &seed::guests().toml());
    let guests = seed::guests();
    let runaway4 = ip(RUNAWAY_V4);
    let runaway6 = ip(RUNAWAY_V6);
    let mut c = Checks::new();
    c.run("--guest 172.16.3.5 --state ESTABLISHED (the incident's relief)", || {
        evict_exactly(
            &ns,
            &["--guest", RUNAWAY_V4, "--state", "ESTABLISHED"],
            &|e| e.addresses().contains(&runaway4) && e.state.as_deref() == Some("ESTABLISHED"),
            "per-flow",
        )
    });
    c.run("--guests FILE --guest web -p udp (guest map, NAT included)", || {
        evict_exactly(
            &ns,
            &["--guests", &guest_file, "--guest", "web", "-p", "udp"],
            &|e| guests.owner(e) == Some("web") && e.proto == "udp",
            "per-flow",
        )
    });
    c.run("-s fd00:2::5 (IPv6 host: never the kernel flush)", || {
        evict_exactly(&ns, &["-s", RUNAWAY_V6], &|e| e.orig.src == runaway6, "per-flow")
    });
    c.run("--reply-src 172.16.0.0/16 -d 203.0.113.10 (DNAT flows)", || {
        let net: ipnetwork::IpNetwork = "172.16.0.0/16".parse().expect("net");
        evict_exactly(
            &ns,
            &["--reply-src", "172.16.0.0/16", "-d", "203.0.113.10"],
            &|e| net.contains(e.reply.src) && e.orig.dst == ip("203.0.113.10"),
            "per-flow",
        )
    });
    c.run("--zone 300 -p icmp,icmpv6 --status SEEN_REPLY", || {
        evict_exactly(
            &ns,
            &["--zone", "300", "-p", "icmp", "-p", "icmpv6", "--status", "SEEN_REPLY"],
            &|e| {
                e.zone == 300
                    && (e.proto == "icmp" || e.proto == "icmpv6")
                    && !e.line.contains("[UNREPLIED]")
            },
            "per-flow",
        )
    });
    c.run("-s 172.16.1.0/24 -p tcp --state TIME_WAIT,SYN_SENT --mark 0x10/0xff0", || {
        let net: ipnetwork::IpNetwork = "172.16.1.0/24".parse().expect("net");
        evict_exactly(
            &ns,
            &[
                "-s",
                "172.16.1.0/24",
                "-p",
                "tcp",
                "--state",
                "TIME_WAIT,SYN_SENT",
                "--mark",
                "0x10/0xff0",
            ],
            &|e| {
                net.contains(e.orig.src)
                    && e.proto == "tcp"
                    && matches!(e.state.as_deref(), Some("TIME_WAIT" | "SYN_SENT"))
                    && e.mark & 0xff0 == 0x10
            },
            "per-flow",
        )
    });
    // Exactly expressible by the kernel: the guarded flush (Linux 6.12+) does it.
    c.run("-s 172.16.3.5 --mark 42 (the kernel flush, after its dry run)", || {
        evict_exactly(
            &ns,
            &["-s", RUNAWAY_V4, "--mark", "42"],
            &|e| e.orig.src == runaway4 && e.mark == 42,
            "kernel-flush",
        )
    });
    c.run("-s 172.16.3.5 --zone 7 --status ASSURED (flush with zone and status)", || {
        evict_exactly(
            &ns,
            &["-s", RUNAWAY_V4, "--zone", "7", "--status", "ASSURED"],
            &|e| e.orig.src == runaway4 && e.zone == 7 && e.assured,
            "kernel-flush",
        )
    });
    c.run("the audit log has an intent and an outcome record per eviction", || {
        let text = std::fs::read_to_string(ns.file("audit.jsonl")).map_err(|e| e.to_string())?;
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).map_err(|e| format!("audit line {l:?}: {e}")))
            .collect::<Result<_, _>>()?;
        equal("audit lines", lines.len(), 16)?;
        for pair in lines.chunks(2) {
            equal("intent", pair[0]["record"].as_str(), Some("intent"))?;
            equal("outcome", pair[1]["record"].as_str(), Some("outcome"))?;
            equal("run id", &pair[0]["run_id"], &pair[1]["run_id"])?;
        }
        let first = &lines[1];
        for key in ["time", "user", "namespace", "selector", "matched", "deleted", "vanished"] {
            if first.get(key).is_none() {
                return Err(format!("audit line lacks {key:?}: {first}"));
            }
        }
        equal(
            "selector",
            first["selector"].as_str(),
            Some("--guest 172.16.3.5 --state ESTABLISHED"),
        )
    });
    c.finish();
}

fn tcp_line(src: &str, dst: &str, sport: u16, state: &str, mark: u32, zone: u16) -> String {
    let mut s = format!(
        "-I -p tcp -s {src} -d {dst} --sport {sport} --dport 443 --state {state} -t 3600 -u ASSURED -m {mark}"
    );
    if zone != 0 {
        s += &format!(" -w {zone}");
    }
    s
}

pub(crate) fn load_lines(ns: &Netns, name: &str, lines: &[String]) {
    let path = ns.write_file(name, &(lines.join("\n") + "\n"));
    ns.conntrack(&["-R", &path]).ok();
}

/// The tuple of a selected flow is deleted and re-created (a new connection) between the
/// selection and the deletes: the new flow is left alone. The kernel may give the new entry
/// the old one's memory and so its id (issue 10.1), which the id guard alone cannot see: the
/// deleter re-checks (here every flow, bound zero) and timestamps tell the entries apart.
#[test]
fn issue_3_tuple_reuse_between_selection_and_delete_survives() {
    let ns = Netns::new();
    ns.sysctl_write("net.netfilter.nf_conntrack_timestamp", "1");
    let mut lines: Vec<String> = (0..40)
        .map(|i| tcp_line(RUNAWAY_V4, "10.9.0.1", 20_000 + i, "ESTABLISHED", 0, 0))
        .collect();
    lines.extend(
        (0..10).map(|i| tcp_line("172.16.4.4", "10.9.0.1", 20_000 + i, "ESTABLISHED", 0, 0)),
    );
    load_lines(&ns, "seed.conntrack", &lines);
    let sel = Selector {
        guests: Some(GuestFilter {
            cidrs: vec![select::parse_cidr(RUNAWAY_V4).expect("cidr")],
            ..GuestFilter::default()
        }),
        states: select::parse_states("ESTABLISHED").expect("state"),
        ..Selector::default()
    };
    let (selection, tally) = ns.inside(|| {
        let mut ct = Conntrack::open().expect("open ctnetlink");
        let selection = evict::select(&mut ct, &sel, None, false, &AtomicBool::new(false), |_| {})
            .expect("select");
        // Between selection and deletion: the flow with sport 20007 ends and a new connection
        // re-uses its tuple. Mark 99 tells the new one apart; it still matches the selection.
        ns.conntrack(&["-D", "-p", "tcp", "-s", RUNAWAY_V4, "--sport", "20007"]).ok();
        load_lines(
            &ns,
            "reuse.conntrack",
            &[tcp_line(RUNAWAY_V4, "10.9.0.1", 20_007, "ESTABLISHED", 99, 0)],
        );
        let matches = |f: &ctguard::Flow| sel.matches(f);
        let deleter = Deleter::open().expect("deleter").with_recheck(&matches, Duration::ZERO);
        let tally = evict::delete_selected(&selection.keys, deleter).expect("delete");
        (selection, tally)
    });
    let mut c = Checks::new();
    c.run("the selection held the 40 flows of the guest", || {
        equal("selected", selection.keys.len(), 40)
    });
    c.run("39 deleted, 1 replaced (a new entry on the tuple), 0 vanished or failed", || {
        equal(
            "(deleted, replaced, vanished, failed)",
            (tally.deleted, tally.replaced, tally.vanished, tally.failed),
            (39, 1, 0, 0),
        )
    });
    c.run("the re-created flow survives; the other guest is untouched", || {
        let left = oracle::parse_all(&ns.conntrack_list(&[]));
        let runaway: Vec<&Entry> = left.iter().filter(|e| e.orig.src == ip(RUNAWAY_V4)).collect();
        equal("runaway flows left", runaway.len(), 1)?;
        equal("the survivor", (runaway[0].orig.sport, runaway[0].mark), (Some(20_007), 99))?;
        equal("other guest's flows", left.len() - 1, 10)
    });
    c.finish();
}

/// The same tuple in zones 0, 7 and 300: each delete echoes its entry's zone.
#[test]
fn issue_3_same_tuple_in_several_zones() {
    let ns = Netns::new();
    let mut lines = Vec::new();
    for zone in [0, 7, 300] {
        for i in 0..5 {
            lines.push(tcp_line(RUNAWAY_V4, "10.9.0.1", 30_000 + i, "ESTABLISHED", 0, zone));
        }
    }
    load_lines(&ns, "seed.conntrack", &lines);
    let runaway4 = ip(RUNAWAY_V4);
    let mut c = Checks::new();
    c.run("--zone 7 -p tcp deletes zone 7's copies only", || {
        evict_exactly(&ns, &["--zone", "7", "-p", "tcp"], &|e| e.zone == 7, "per-flow")
    });
    c.run("--guest 172.16.3.5 --sport 30000-30001 deletes them in zones 0 and 300", || {
        evict_exactly(
            &ns,
            &["--guest", RUNAWAY_V4, "--sport", "30000-30001"],
            &|e| e.orig.src == runaway4 && matches!(e.orig.sport, Some(30_000 | 30_001)),
            "per-flow",
        )
    });
    c.run("-s 172.16.3.5 --zone 300 (kernel flush) leaves zone 0", || {
        evict_exactly(&ns, &["-s", RUNAWAY_V4, "--zone", "300"], &|e| e.zone == 300, "kernel-flush")
    });
    c.run("--all --yes takes what is left, zone 0 included", || {
        let left = ns.conntrack_count();
        let (r, json) = evict_json(&ns, &["--all"])?;
        equal("exit code", r.code, Some(0)).map_err(|e| format!("{e}; {}", r.describe()))?;
        equal("deleted", json["deleted"].as_u64(), Some(left))?;
        equal("entries", ns.conntrack_count(), 0)
    });
    c.finish();
}

/// Selections the kernel's filter cannot express exactly take per-flow deletes, never the
/// flush. (That a flush request the kernel would misread is refused by its proof, and only the
/// scratch namespace sees it, is tests/kernel/flushproof.rs.)
#[test]
fn issue_3_selections_the_filter_cannot_express_take_per_flow_deletes() {
    let ns = Netns::new();
    seed::with_conntrack(&ns, &seed::mixed_table(3_000), "seed.conntrack");
    let mut c = Checks::new();
    for args in [
        vec!["--state", "ESTABLISHED", "-s", "172.16.2.0/24"],
        vec!["-s", "172.16.2.10", "-p", "tcp"],
        vec!["-s", "172.16.2.11", "--dport", "443"],
        vec!["-s", "172.16.2.12", "--limit", "1"],
        vec!["-s", "172.16.2.13", "-s", "172.16.2.14"],
        vec!["--guest", "172.16.2.15"],
        vec!["-s", "fd00:1::2"],
    ] {
        c.run(&format!("evict {} takes per-flow deletes", args.join(" ")), || {
            let (r, json) = evict_json(&ns, &args)?;
            match r.code {
                Some(1) => Ok(()), // nothing matched: nothing deleted either way
                Some(0) => equal("method", json["method"].as_str(), Some("per-flow")),
                _ => Err(r.describe()),
            }
        });
    }
    c.finish();
}

/// Bad input and missing confirmation: exit 2, one line, nothing on stdout, the table as it was.
#[test]
fn issue_3_refusals_touch_nothing() {
    let ns = Netns::new();
    seed::with_conntrack(&ns, &seed::mixed_table(300), "seed.conntrack");
    let before = ns.conntrack_list(&[]);
    let existing = ns.write_file("exists.jsonl", "");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["evict", "--yes"], "--all"),
        (vec!["evict", "--guest", RUNAWAY_V4], "--yes"),
        (vec!["evict", "--all"], "--dry-run"),
        (vec!["evict", "--all", "-s", RUNAWAY_V4, "--yes"], "--all"),
        (vec!["evict", "-s", "172.16.3.300", "--yes"], "172.16.3.300"),
        (vec!["evict", "-s", RUNAWAY_V4, "--state", "ESTABLISHD", "--yes"], "ESTABLISHD"),
        (vec!["evict", "-s", RUNAWAY_V4, "--idle", "10 fortnights", "--yes"], "fortnights"),
        (vec!["evict", "-s", RUNAWAY_V4, "--rate", "fast", "--yes"], "--rate"),
        (vec!["evict", "-s", RUNAWAY_V4, "--rate", "0/s", "--yes"], "--rate"),
        (vec!["evict", "-s", RUNAWAY_V4, "--limit", "0", "--yes"], "--limit"),
        (vec!["evict", "-s", RUNAWAY_V4, "--limit=-3", "--yes"], "--limit"),
        (vec!["evict", "-s", RUNAWAY_V4, "--save", &existing, "--yes"], "exists"),
        (
            vec!["evict", "-s", RUNAWAY_V4, "--save", "/nonexistent/dir/x.jsonl", "--yes"],
            "/nonexistent/dir",
        ),
        (vec!["evict", "-s", RUNAWAY_V4, "--list"], "--dry-run"),
    ];
    let mut c = Checks::new();
    for (args, names) in &cases {
        c.run(&format!("ctguard {}", args.join(" ")), || {
            let r = ns.ctguard(args);
            equal("exit code", r.code, Some(2)).map_err(|e| format!("{e}; {}", r.describe()))?;
            let err = r.stderr_lines();
            equal("stderr lines", err.len(), 1).map_err(|e| format!("{e}: {:?}", r.stderr))?;
            if !err[0].starts_with("ctguard: ") || !err[0].contains(names) {
                return Err(format!("stderr {:?} should name {names:?}", err[0]));
            }
            equal("stdout", r.stdout.as_str(), "")?;
            oracle::same_lines(&ns.conntrack_list(&[]), &before)
                .map_err(|e| format!("the table changed: {e}"))
        });
    }
    c.run("nothing matched: exit 1, table unchanged", || {
        let (r, json) = evict_json(&ns, &["-s", "192.0.2.77"])?;
        equal("exit code", r.code, Some(1))?;
        equal("matched", json["matched"].as_u64(), Some(0))?;
        equal("entries", ns.conntrack_count(), before.len() as u64)
    });
    c.run("--dry-run --list prints the selection, deletes nothing", || {
        let r = ns.ctguard(&["evict", "--dry-run", "--list", "-s", RUNAWAY_V4]).check_ok()?;
        oracle::same_lines(&r.lines(), &ns.conntrack_list(&["-s", RUNAWAY_V4]))?;
        if !r.stderr.contains("would be deleted") {
            return Err(format!("no dry-run summary on stderr: {:?}", r.stderr));
        }
        equal("entries", ns.conntrack_count(), before.len() as u64)
    });
    c.finish();
}

/// `--save` writes what is deleted; `load` puts it back. With `--limit` the most idle go.
#[test]
fn issue_3_save_then_load_restores_and_limit_takes_the_most_idle() {
    let ns = Netns::new();
    seed::with_conntrack(&ns, &seed::mixed_table(2_000), "seed.conntrack");
    let before = ns.conntrack_list(&[]);
    let runaway4 = ip(RUNAWAY_V4);
    let mut c = Checks::new();
    let saved = ns.file("evicted.jsonl").to_string_lossy().into_owned();
    c.run("evict --guest 172.16.3.5 --save FILE, then load FILE: the table is back", || {
        evict_exactly(
            &ns,
            &["--guest", RUNAWAY_V4, "--save", &saved],
            &|e| e.addresses().contains(&runaway4),
            "per-flow",
        )?;
        let lines = std::fs::read_to_string(&saved).map_err(|e| e.to_string())?.lines().count();
        let want =
            oracle::parse_all(&before).iter().filter(|e| e.addresses().contains(&runaway4)).count();
        equal("saved lines", lines, want)?;
        ns.ctguard(&["load", &saved]).check_ok()?;
        oracle::same_lines(&ns.conntrack_list(&[]), &before)
    });
    let limited = ns.file("limited.jsonl").to_string_lossy().into_owned();
    c.run("--limit 25 deletes the 25 most idle ESTABLISHED TCP flows of the guest", || {
        let table = oracle::parse_all(&ns.conntrack_list(&[]));
        let chosen = |e: &Entry| {
            e.orig.src == runaway4 && e.proto == "tcp" && e.state.as_deref() == Some("ESTABLISHED")
        };
        let (r, json) = evict_json(
            &ns,
            &[
                "-s",
                RUNAWAY_V4,
                "-p",
                "tcp",
                "--state",
                "ESTABLISHED",
                "--limit",
                "25",
                "--save",
                &limited,
            ],
        )?;
        equal("exit code", r.code, Some(0)).map_err(|e| format!("{e}; {}", r.describe()))?;
        equal("deleted", json["deleted"].as_u64(), Some(25))?;
        let left = oracle::parse_all(&ns.conntrack_list(&[]));
        let gone: Vec<&Entry> = table
            .iter()
            .filter(|e| {
                chosen(e)
                    && !left
                        .iter()
                        .any(|l| oracle::normalise(&l.line) == oracle::normalise(&e.line))
            })
            .collect();
        equal("gone", gone.len(), 25)?;
        // Same state, same configured timeout: most idle = least time left.
        let max_gone = gone.iter().map(|e| e.timeout).max().unwrap_or(0);
        let min_left =
            left.iter().filter(|e| chosen(e)).map(|e| e.timeout).min().unwrap_or(u32::MAX);
        if max_gone > min_left {
            return Err(format!(
                "a flow with {min_left} s left stayed while one with {max_gone} s went"
            ));
        }
        let saved_lines =
            std::fs::read_to_string(&limited).map_err(|e| e.to_string())?.lines().count();
        equal("saved lines", saved_lines, 25)
    });
    c.finish();
}

/// `--rate` paces; Ctrl-C stops between two chunks and the report adds up.
#[test]
fn issue_3_rate_paces_and_ctrl_c_stops_cleanly() {
    let ns = Netns::new();
    let lines: Vec<String> = (0..600)
        .map(|i| tcp_line(RUNAWAY_V4, "10.9.0.2", 10_000 + i, "ESTABLISHED", 0, 0))
        .collect();
    load_lines(&ns, "seed.conntrack", &lines);
    let mut c = Checks::new();
    c.run("--rate 1000/s: 200 flows take at least 0.15 s", || {
        let started = Instant::now();
        let (r, json) =
            evict_json(&ns, &["-s", RUNAWAY_V4, "--sport", "10000-10199", "--rate", "1000/s"])?;
        let took = started.elapsed();
        equal("exit code", r.code, Some(0)).map_err(|e| format!("{e}; {}", r.describe()))?;
        equal("deleted", json["deleted"].as_u64(), Some(200))?;
        if took < Duration::from_millis(150) {
            return Err(format!("took {took:?}: not paced"));
        }
        Ok(())
    });
    c.run("SIGINT during a paced eviction: exit 2, report adds up, the rest stays", || {
        let audit = ns.file("audit.jsonl").to_string_lossy().into_owned();
        let mut child = Command::new(CTGUARD)
            .args(["--netns", &ns.path(), "evict", "--yes", "--json", "--audit-log", &audit])
            .args(["-s", RUNAWAY_V4, "--rate", "100/s"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(800));
        // SAFETY: kill with a pid we spawned and have not waited for.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().map_err(|e| e.to_string())?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("evict did not stop within 10 s of SIGINT".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        equal("exit code", out.status.code(), Some(2))?;
        let json: Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {:?}", out.stdout))?;
        equal("interrupted", json["interrupted"].as_bool(), Some(true))?;
        let (deleted, not_attempted) =
            (json["deleted"].as_u64().unwrap_or(0), json["not_attempted"].as_u64().unwrap_or(0));
        equal("deleted + not attempted", deleted + not_attempted, 400)?;
        if deleted == 0 || not_attempted == 0 {
            return Err(format!("stopped at a strange point: {json}"));
        }
        equal("flows left", ns.conntrack_count(), not_attempted)
    });
    // Issue 9.4: the audit trail is the accountability record; without it nothing goes.
    c.run("an unwritable audit log refuses the eviction: exit 2, nothing touched", || {
        let before = ns.conntrack_count();
        let r = ns.ctguard(&[
            "evict",
            "--yes",
            "-s",
            RUNAWAY_V4,
            "--audit-log",
            "/proc/ctguard-not-here/audit.jsonl",
        ]);
        equal("exit code", r.code, Some(2)).map_err(|e| format!("{e}; {}", r.describe()))?;
        if !r.stderr.contains("audit log /proc/ctguard-not-here/audit.jsonl")
            || !r.stderr.contains("nothing was deleted")
        {
            return Err(format!("no refusal: {:?}", r.stderr));
        }
        equal("flows left", ns.conntrack_count(), before)
    });
    c.run("--audit-log '' deletes without an audit trail", || {
        let r = ns.ctguard(&["evict", "--yes", "-s", RUNAWAY_V4, "--audit-log", ""]);
        equal("exit code", r.code, Some(0)).map_err(|e| format!("{e}; {}", r.describe()))?;
        equal("flows left", ns.conntrack_count(), 0)
    });
    c.finish();
}

/// On a terminal: the preview, then the question; "n" deletes nothing, "y" deletes.
#[test]
fn issue_3_terminal_preview_asks_before_deleting() {
    let ns = Netns::new();
    let lines: Vec<String> = (0..30)
        .map(|i| tcp_line(RUNAWAY_V4, "10.9.0.3", 10_000 + i, "ESTABLISHED", 0, 0))
        .collect();
    load_lines(&ns, "seed.conntrack", &lines);
    let audit = ns.file("audit.jsonl").to_string_lossy().into_owned();
    // script(1) gives ctguard a terminal and feeds it our answer.
    let ask = |answer: &str| -> Result<String, String> {
        let cmd = format!(
            "{CTGUARD} --netns {} evict --audit-log {audit} --guest {RUNAWAY_V4} --state ESTABLISHED",
            ns.path()
        );
        let mut term = OnTerminal::spawn(&cmd, 20);
        std::thread::sleep(Duration::from_millis(700));
        term.type_in(answer);
        Ok(term.finish(Duration::from_secs(20)))
    };
    let mut c = Checks::new();
    c.run("answer n: preview shown, nothing deleted", || {
        let text = ask("n\n")?;
        for needle in [
            "30 flows match",
            "by state: ESTABLISHED 30",
            "by source: 172.16.3.5 30",
            "sample:",
            &format!("Delete 30 flows in netns {}? [y/N]", ns.path()),
        ] {
            if !text.contains(needle) {
                return Err(format!("the preview lacks {needle:?}: {text}"));
            }
        }
        equal("entries", ns.conntrack_count(), 30)
    });
    c.run("answer y: deleted", || {
        let text = ask("y\n")?;
        if !text.contains("deleted 30 of 30") {
            return Err(format!("no report: {text}"));
        }
        equal("entries", ns.conntrack_count(), 0)
    });
    c.finish();
}

/// A delete the kernel refuses with another errno (here EINVAL: a TCP tuple without ports)
/// is reported with its flow; the deletes around it in the same chunk still go through.
#[test]
fn issue_3_other_errors_are_reported_with_the_flow() {
    let ns = Netns::new();
    let lines: Vec<String> = (0..20)
        .map(|i| tcp_line(RUNAWAY_V4, "10.9.0.4", 10_000 + i, "ESTABLISHED", 0, 0))
        .collect();
    load_lines(&ns, "seed.conntrack", &lines);
    let sel = Selector {
        src: vec![select::parse_cidr(RUNAWAY_V4).expect("cidr")],
        ..Selector::default()
    };
    let (tally, bad) = ns.inside(|| {
        let mut ct = Conntrack::open().expect("open ctnetlink");
        let selection = evict::select(&mut ct, &sel, None, false, &AtomicBool::new(false), |_| {})
            .expect("select");
        let mut keys = selection.keys.clone();
        let mut bad = keys[0];
        bad.key.orig.l4 = ctguard::flow::L4::None;
        bad.key.id = 12_345;
        keys.insert(7, bad);
        (evict::delete_selected(&keys, Deleter::open().expect("deleter")).expect("delete"), bad)
    });
    let mut c = Checks::new();
    c.run("20 deleted, 1 failed with EINVAL, reported with its flow", || {
        equal(
            "(deleted, vanished, failed)",
            (tally.deleted, tally.vanished, tally.failed),
            (20, 0, 1),
        )?;
        equal("failures", tally.failures.clone(), vec![(bad.key, libc::EINVAL)])
    });
    c.run("the table is empty", || equal("entries", ns.conntrack_count(), 0));
    c.finish();
}

/// A scripted eviction the kernel can flush: the per-flow deletes start while the dump (the
/// flush's dry run) is still running, and once the dump has proven the filter the flush takes
/// what is left. Either way the table ends as the oracle says and every flow is accounted for.
#[test]
fn issue_3_streamed_deletes_hand_over_to_the_proven_flush() {
    let ns = Netns::new();
    let mut lines: Vec<String> = (0..6_000)
        .map(|i| {
            tcp_line(
                "172.16.9.9",
                &format!("10.8.{}.{}", i / 250, i % 250),
                1_000 + i as u16,
                "ESTABLISHED",
                0,
                0,
            )
        })
        .collect();
    lines.extend(
        (0..1_500).map(|i| tcp_line("172.16.9.10", "10.8.0.1", 1_000 + i, "ESTABLISHED", 0, 0)),
    );
    // The same source in another direction: a flow *to* 172.16.9.9 is not selected by -s.
    lines
        .extend((0..500).map(|i| tcp_line("10.7.0.1", "172.16.9.9", 1_000 + i, "TIME_WAIT", 0, 0)));
    load_lines(&ns, "seed.conntrack", &lines);
    let source = ip("172.16.9.9");
    let mut c = Checks::new();
    c.run("evict -s 172.16.9.9 --yes: exactly its 6,000 flows go", || {
        let before = oracle::parse_all(&ns.conntrack_list(&[]));
        let want: Vec<&str> =
            before.iter().filter(|e| e.orig.src != source).map(|e| e.line.as_str()).collect();
        let (r, json) = evict_json(&ns, &["-s", "172.16.9.9"])?;
        equal("exit code", r.code, Some(0)).map_err(|e| format!("{e}; {}", r.describe()))?;
        oracle::same_lines(&ns.conntrack_list(&[]), &want)?;
        equal(
            "(matched, deleted, vanished)",
            (json["matched"].as_u64(), json["deleted"].as_u64(), json["vanished"].as_u64()),
            (Some(6_000), Some(6_000), Some(0)),
        )?;
        match json["method"].as_str() {
            Some("kernel-flush") => Ok(()),
            m => Err(format!("method {m:?}: the proven flush was not used: {json}")),
        }
    });
    c.finish();
}

/// Issue 13, `protect`: `--except` keeps every flow of the guest that touches a protected
/// address (as original destination, the DNAT VIP, or the SNAT address in the reply), and the
/// rest of the guest's selection goes.
#[test]
fn issue_13_except_never_deleted() {
    let ns = Netns::new();
    seed::with_conntrack(&ns, &seed::mixed_table(4_000), "seed.conntrack");
    let runaway4 = ip(RUNAWAY_V4);
    let protected: Vec<ipnetwork::IpNetwork> = ["10.1.0.0/16", "203.0.113.10/32", "192.168.100.1"]
        .iter()
        .map(|n| n.parse().expect("net"))
        .collect();
    let touches =
        |e: &Entry| e.addresses().iter().any(|a| protected.iter().any(|n| n.contains(*a)));
    let before = oracle::parse_all(&ns.conntrack_list(&[]));
    let guests_protected =
        before.iter().filter(|e| e.addresses().contains(&runaway4) && touches(e));
    let kinds = |f: &dyn Fn(&&Entry) -> bool| guests_protected.clone().filter(f).count();
    let mut c = Checks::new();
    c.run("the table has protected flows of the guest of each kind", || {
        let orig_dst = kinds(&|e| protected[0].contains(e.orig.dst));
        let vip = kinds(&|e| e.orig.dst == ip("203.0.113.10"));
        let snat = kinds(&|e| e.reply.dst == ip("192.168.100.1"));
        if orig_dst == 0 || vip == 0 || snat == 0 {
            return Err(format!("orig dst {orig_dst}, VIP {vip}, SNAT {snat}: it tests nothing"));
        }
        Ok(())
    });
    c.run("--guest 172.16.3.5 --except ... --yes: the protected flows stay", || {
        evict_exactly(
            &ns,
            &[
                "--guest",
                RUNAWAY_V4,
                "--except",
                "10.1.0.0/16",
                "--except",
                "203.0.113.10",
                "--except",
                "192.168.100.1",
            ],
            &|e| e.addresses().contains(&runaway4) && !touches(e),
            "per-flow",
        )
    });
    c.run("every flow touching a protected address is intact", || {
        let want: Vec<&str> =
            before.iter().filter(|e| touches(e)).map(|e| e.line.as_str()).collect();
        let now = oracle::parse_all(&ns.conntrack_list(&[]));
        let got: Vec<&str> = now.iter().filter(|e| touches(e)).map(|e| e.line.as_str()).collect();
        oracle::same_lines(&got, &want)
    });
    c.finish();
}
