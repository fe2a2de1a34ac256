//! Issues 9.8, 9.12 and 10.3 against the kernel: `load` names what it refused and why, guest
//! names cannot rewrite the terminal, and every request/ack exchange ends, also without
//! CAP_NET_ADMIN (the kernel answers a whole unprivileged send with one EPERM).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ctguard::ctnetlink::{Conntrack, Deleter, DumpFilter, Marked};

use crate::checks::{Checks, equal};
use crate::netns::{CTGUARD, Netns, Run};
use crate::oracle;

/// What "at once" means for a refused run (a hang is cut at [`CUT`] by `timeout`).
const AT_ONCE: Duration = Duration::from_secs(3);
/// `timeout`'s limit, so a regression fails instead of hanging the suite.
const CUT: &str = "20";

fn tcp(src: &str, sport: u16, rsrc: &str, rdport: u16) -> String {
    format!(
        r#"{{"family":"ipv4","proto":"tcp","state":"ESTABLISHED","orig":{{"src":"{src}","dst":"10.2.0.1","sport":{sport},"dport":80}},"reply":{{"src":"10.2.0.1","dst":"{rsrc}","sport":80,"dport":{rdport}}},"status":["SEEN_REPLY","ASSURED"],"timeout":300}}"#
    )
}

/// A few flows of 10.1.0.1, created with conntrack -I (the oracle), for the runs to leave alone.
fn seeded() -> Netns {
    let ns = Netns::new();
    for (i, state) in ["ESTABLISHED", "ESTABLISHED", "TIME_WAIT"].iter().enumerate() {
        let sport = (1000 + i).to_string();
        ns.conntrack(&[
            "-I",
            "-p",
            "tcp",
            "-s",
            "10.1.0.1",
            "-d",
            "10.2.0.1",
            "--sport",
            &sport,
            "--dport",
            "80",
            "--state",
            state,
            "-t",
            "300",
            "-u",
            "SEEN_REPLY,ASSURED",
        ])
        .ok();
    }
    ns
}

/// Runs `args` inside `ns` without CAP_NET_ADMIN (capsh drops it from the bounding set, so
/// the exec'd ctguard has it in no set), cut at [`CUT`]; returns the run and how long it took.
fn without_cap(ns: &Netns, how: &str, args: &[&str]) -> (Run, Duration) {
    let started = Instant::now();
    let r = match how {
        "setpriv" => {
            let mut all =
                vec![CUT, "setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin", CTGUARD];
            all.extend_from_slice(args);
            ns.exec("timeout", &all)
        }
        _ => {
            let cmd = std::iter::once(CTGUARD).chain(args.iter().copied()).collect::<Vec<_>>();
            let cmd = cmd.join(" ");
            ns.exec("timeout", &[CUT, "capsh", "--drop=cap_net_admin", "--", "-c", &cmd])
        }
    };
    (r, started.elapsed())
}

/// Exit 2 at once, the last stderr line names CAP_NET_ADMIN, the table as it was.
fn refused_at_once(ns: &Netns, before: &[String], r: &Run, took: Duration) -> Result<(), String> {
    equal("exit code", r.code, Some(2)).map_err(|e| format!("{e}; {}", r.describe()))?;
    if took > AT_ONCE {
        return Err(format!("took {took:?}; {}", r.describe()));
    }
    let last = r.stderr_lines().last().copied().unwrap_or("");
    if !last.starts_with("ctguard: ") || !last.contains("CAP_NET_ADMIN") {
        return Err(format!("last stderr line does not name CAP_NET_ADMIN: {:?}", r.stderr));
    }
    equal("stdout", r.stdout.as_str(), "")?;
    oracle::same_lines(&ns.conntrack_list(&[]), before).map_err(|e| format!("table changed: {e}"))
}

#[test]
fn issue_10_3_load_without_cap_net_admin_ends_at_once() {
    let ns = seeded();
    let before = ns.conntrack_list(&[]);
    let helper = tcp("10.1.0.8", 1, "10.1.0.8", 1)
        .replace(r#""timeout":300"#, r#""timeout":300,"helper":"ftp""#);
    let file =
        ns.write_file("f.jsonl", &format!("{}\n{helper}\n", tcp("10.1.0.7", 1, "10.1.0.7", 1)));
    let mut c = Checks::new();
    for how in ["setpriv", "capsh"] {
        c.run(&format!("{how}: ctguard load"), || {
            let (r, took) = without_cap(&ns, how, &["load", &file]);
            refused_at_once(&ns, &before, &r, took)?;
            // Only that: no per-flow lines, no note about what could not be restored.
            equal("stderr lines", r.stderr_lines().len(), 1)
                .map_err(|e| format!("{e}: {:?}", r.stderr))
        });
    }
    c.finish();
}

#[test]
fn issue_10_3_evict_proven_flush_path_without_cap_net_admin_ends_at_once() {
    let ns = seeded();
    let before = ns.conntrack_list(&[]);
    // One IPv4 source and --yes: the proven filtered flush, whose scratch threads create
    // their tables first.
    let (r, took) = without_cap(&ns, "capsh", &["evict", "-s", "10.1.0.1", "--yes"]);
    refused_at_once(&ns, &before, &r, took).unwrap();
}

#[test]
fn issue_10_3_evict_per_flow_path_without_cap_net_admin_ends_at_once() {
    let ns = seeded();
    let before = ns.conntrack_list(&[]);
    let (r, took) = without_cap(&ns, "capsh", &["evict", "--state", "TIME_WAIT", "--yes"]);
    refused_at_once(&ns, &before, &r, took).unwrap();
}

/// Clears CAP_NET_ADMIN from the calling thread's effective set (capabilities are per thread;
/// nfnetlink checks the sender's at each send). The permitted set keeps it: only this thread,
/// only for what it sends from here on.
fn drop_net_admin_effective() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    let mut header = Header { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset read and write one header and two data structs of the v3 ABI.
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()), 0);
        data[0].effective &= !(1 << CAP_NET_ADMIN);
        assert_eq!(libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()), 0, "capset");
    }
}

/// The per-flow delete path: a chunk sent without CAP_NET_ADMIN gets one EPERM for the whole
/// send and no ACK for its barrier; the chunk must end there, with the CAP_NET_ADMIN error.
#[test]
fn issue_10_3_per_flow_deletes_without_cap_net_admin_end_on_the_eperm() {
    let ns = seeded();
    let before = ns.conntrack_list(&[]);
    let mut keys = Vec::new();
    ns.inside(|| {
        let mut ct = Conntrack::open().expect("open ctnetlink");
        ct.dump(&DumpFilter::default(), |f| {
            keys.extend(Marked::of(f, Instant::now()));
            std::ops::ControlFlow::Continue(())
        })
        .expect("dump");
    });
    assert_eq!(keys.len(), 3);
    // A detached thread, so a regression (a wait for an ACK that never comes) fails the test
    // at the deadline instead of hanging it.
    let (tx, rx) = mpsc::channel();
    let path = ns.path();
    std::thread::spawn(move || {
        let r = (|| {
            ctguard::netns::enter(&path).map_err(|e| format!("enter: {e}"))?;
            let mut d = Deleter::open().map_err(|e| e.to_string())?;
            drop_net_admin_effective();
            for k in &keys {
                let _ = d.push(k).map_err(|e| e.to_string())?;
            }
            d.finish().map(|t| format!("{t:?}")).map_err(|e| e.to_string())
        })();
        let _ = tx.send(r);
    });
    let r = rx.recv_timeout(Duration::from_secs(15)).expect("the deletes never ended");
    let e = r.expect_err("deletes without CAP_NET_ADMIN cannot succeed");
    assert!(e.contains("delete conntrack entries") && e.contains("CAP_NET_ADMIN"), "{e}");
    oracle::same_lines(&ns.conntrack_list(&[]), &before).unwrap();
}

#[test]
fn issue_9_12_load_names_lines_counts_clashes_and_says_what_is_lost() {
    let ns = Netns::new();
    let a = tcp("10.1.0.1", 1000, "10.1.0.1", 1000);
    // Its own original tuple, but the reply tuple of `a`: the kernel answers EEXIST although
    // no entry with this original tuple exists.
    let clash = tcp("10.1.0.9", 5000, "10.1.0.1", 1000);
    // ICMP type 3 is not a query: the kernel refuses the tuple (EINVAL).
    let bad_icmp = r#"{"family":"ipv4","proto":"icmp","orig":{"src":"10.1.0.1","dst":"10.2.0.1","icmp_type":3,"icmp_code":0,"icmp_id":7},"reply":{"src":"10.2.0.1","dst":"10.1.0.1","icmp_type":0,"icmp_code":0,"icmp_id":7},"timeout":30}"#;
    let lossy = r#"{"family":"ipv4","proto":"udp","orig":{"src":"10.1.0.2","dst":"10.2.0.1","sport":1000,"dport":53},"reply":{"src":"10.2.0.1","dst":"10.1.0.2","sport":53,"dport":1000},"timeout":30,"helper":"ftp","secmark":5,"counters":{"orig":{"packets":1,"bytes":60}}}"#;
    let text = format!("{a}\n{a}\n\n{clash}\n{bad_icmp}\n{lossy}\n{lossy}\n");
    let file = ns.write_file("flows.jsonl", &text);
    let r = ns.ctguard(&["load", &file]);
    let mut c = Checks::new();
    c.run("exit 2: two flows failed", || equal("exit code", r.code, Some(2)));
    c.run("the table holds a and the lossy flow", || equal("entries", ns.conntrack_count(), 2));
    let err = r.stderr_lines();
    let has = |needle: &str| err.iter().filter(|l| l.contains(needle)).count();
    c.run("the clash is a failure naming its line and flow", || {
        let want = format!(
            "ctguard: load: {file}:4: tcp 10.1.0.9:5000 -> 10.2.0.1:80: its reply tuple clashes"
        );
        equal("clash lines", has(&want), 1).map_err(|e| format!("{e}: {:?}", r.stderr))
    });
    c.run("the refused line is named once, with its flow and errno", || {
        let want = format!(
            "ctguard: load: {file}:5: icmp 10.1.0.1 -> 10.2.0.1 type 3 code 0 id 7: Invalid argument"
        );
        equal("EINVAL lines", has(&want), 1)?;
        equal("bare errno lines", has("load: Invalid argument"), 0)
            .map_err(|e| format!("{e}: {:?}", r.stderr))
    });
    c.run("the counts: the repeats are present, the clash failed", || {
        equal("summary", has("load: 2 created, 2 already present, 2 failed"), 1)
            .map_err(|e| format!("{e}: {:?}", r.stderr))
    });
    c.run("what is not restorable is said once, with counts", || {
        equal(
            "not restorable",
            has("not restorable, created without: 2 with a helper, 2 with a secmark, 2 with counters"),
            1,
        )
        .map_err(|e| format!("{e}: {:?}", r.stderr))
    });
    c.finish();
}

#[test]
fn issue_9_8_guest_names_are_escaped_in_top_and_the_evict_preview() {
    let ns = seeded();
    let guests = ns.write_file("guests.toml", "\"vm\\u001b[2J\\nfake\" = \"10.1.0.0/24\"\n");
    let mut c = Checks::new();
    let clean = |r: &Run| -> Result<(), String> {
        equal("exit code", r.code, Some(0)).map_err(|e| format!("{e}; {}", r.describe()))?;
        if r.stdout.contains('\x1b') || !r.stdout.contains("vm\\u{1b}[2J\\nfake") {
            return Err(format!("not escaped: {:?}", r.stdout));
        }
        Ok(())
    };
    c.run("top", || clean(&ns.ctguard(&["top", "--guests", &guests])));
    c.run("evict --dry-run preview", || {
        let r = ns.ctguard(&["evict", "--guests", &guests, "-s", "10.1.0.0/24", "--dry-run"]);
        clean(&r)?;
        equal("entries", ns.conntrack_count(), 3)
    });
    c.run("top --json keeps the name, JSON-escaped", || {
        let r = ns.ctguard(&["top", "--json", "--guests", &guests]).ok();
        if !r.stdout.contains(r#""key":"vm\u001b[2J\nfake""#) {
            return Err(format!("raw name missing: {}", r.stdout));
        }
        Ok(())
    });
    c.finish();
}
