//! Issue 16.6: `stats --interval` against the real per-CPU counters. The oracle is two
//! `conntrack -S` readings taken around the run: the rises it printed, added up, must be what
//! the kernel counted in between, and the activity the test made must show. On 6.x kernels
//! `insert` counts ctnetlink creates (not flows from traffic) and `invalid` packets conntrack
//! refused, such as a TCP segment with SYN and FIN set.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::checks::{Checks, equal};
use crate::live::Live;
use crate::netns::{CTGUARD, Netns};

/// Flows the test creates inside the run.
const FLOWS: u64 = 5;
/// TCP segments with SYN and FIN set the test sends inside the run.
const SYN_FINS: u64 = 10;

/// Sends `SYN_FINS` segments with SYN and FIN set on loopback from a raw socket: conntrack's
/// TCP tracker refuses the flag combination, counting `invalid`.
const SYN_FIN: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
for i in range(int(sys.argv[1])):
    s.sendto(struct.pack("!HHIIBBHHH", 40000 + i, 80, 1, 0, 5 << 4, 0x03, 1024, 0, 0),
             ("127.0.0.1", 0))
"#;

/// `conntrack -S` in `ns`, every counter summed over CPUs (the `cpu=N` field left out).
fn conntrack_s(ns: &Netns) -> BTreeMap<String, u64> {
    let out = ns.conntrack(&["-S"]).ok().stdout;
    let mut sum = BTreeMap::new();
    for field in out.split_whitespace().filter(|f| !f.starts_with("cpu=")) {
        let (name, v) = field.split_once('=').unwrap_or_else(|| panic!("`{field}` in {out}"));
        let v: u64 = v.parse().unwrap_or_else(|_| panic!("`{field}` in {out}"));
        *sum.entry(name.to_string()).or_default() += v;
    }
    assert!(sum.contains_key("insert"), "conntrack -S printed {out:?}");
    sum
}

/// A namespace whose IPv4 output is tracked (conntrack hooks run only when a ruleset asks for
/// them; IPv4 only, so that no IPv6 neighbour discovery counts behind the test's back).
pub fn tracked_namespace() -> Netns {
    let ns = Netns::new();
    ns.exec("ip", &["link", "set", "lo", "up"]).ok();
    let rules = ns.write_file(
        "ct.nft",
        "table ip ctg {\n chain out {\n  type filter hook output priority 0;\n  ct state new accept\n }\n}\n",
    );
    ns.exec("nft", &["-f", &rules]).ok();
    ns
}

/// `FLOWS` creates, then `SYN_FINS` refused segments.
fn make_activity(ns: &Netns) {
    for port in 1..=FLOWS {
        let p = port.to_string();
        let flow = ["-p", "udp", "-s", "10.9.0.1", "-d", "10.9.0.2", "--sport", &p];
        let mut args = vec!["create", "--dport", "53", "--timeout", "100"];
        args.extend(flow);
        ns.ctguard(&args).ok();
    }
    ns.exec("python3", &["-c", SYN_FIN, &SYN_FINS.to_string()]).ok();
}

fn stats(ns: &Netns, args: &[&str]) -> Live {
    let mut cmd = Command::new(CTGUARD);
    cmd.args(["--netns", &ns.path(), "stats"]).args(args);
    Live::spawn(cmd)
}

#[test]
fn issue_16_6_stats_interval_deltas_add_up_to_two_conntrack_s_readings() {
    let ns = tracked_namespace();
    let before = conntrack_s(&ns);
    let started = SystemTime::now();
    let mut live = stats(&ns, &["--interval", "1s", "--count", "3", "--json"]);
    // The activity comes after the first interval closed and well before the last: inside the
    // run, so the run's rises are the whole difference.
    live.wait_for(Duration::from_secs(10), |l| l.json.is_object()).unwrap();
    make_activity(&ns);
    live.wait_quiet(Duration::from_secs(3), Duration::from_secs(10));
    let status = live.child.wait().expect("wait for ctguard");
    let ended = SystemTime::now();
    let after = conntrack_s(&ns);
    let lines: Vec<&Value> = live.seen.iter().map(|l| &l.json).collect();

    let mut c = Checks::new();
    c.run("exit 0 after --count 3 lines, each a JSON object", || {
        equal("exit code", status.code(), Some(0))?;
        equal("lines", lines.len(), 3)?;
        match lines.iter().all(|l| l.is_object()) {
            true => Ok(()),
            false => Err(format!("{lines:?}")),
        }
    });
    c.run("every counter's rises add up to the conntrack -S difference", || {
        for (name, b) in &before {
            let sum: u64 =
                lines.iter().map(|l| l["delta"][name].as_u64().unwrap_or(u64::MAX)).sum();
            equal(&format!("{name}: sum of deltas"), sum, after[name] - b)?;
        }
        equal("counters", lines[0]["delta"].as_object().map(|o| o.len()), Some(before.len()))
    });
    let total =
        |name: &str| -> u64 { lines.iter().filter_map(|l| l["delta"][name].as_u64()).sum() };
    c.run("the creates are seen: insert rose by exactly that many", || {
        equal("insert", total("insert"), FLOWS)
    });
    c.run("the refused segments are seen: invalid rose by at least that many", || {
        match total("invalid") {
            n if n >= SYN_FINS => Ok(()),
            n => Err(format!("invalid rose by {n}, {SYN_FINS} segments sent")),
        }
    });
    c.run("rates are the deltas over the real interval, about a second", || {
        for l in &lines {
            let secs = l["seconds"].as_f64().ok_or("no seconds")?;
            if !(0.9..1.5).contains(&secs) {
                return Err(format!("seconds {secs} in {l}"));
            }
            for (name, d) in l["delta"].as_object().ok_or("no delta")? {
                let want = d.as_f64().unwrap_or(-1.0) / secs;
                let got = l["per_second"][name].as_f64().unwrap_or(-1.0);
                if (got - want).abs() > 0.001 + want * 1e-6 {
                    return Err(format!("{name}: {got}/s for {want}/s in {l}"));
                }
            }
        }
        Ok(())
    });
    c.run("each line is stamped with its reading's wall-clock time, a second apart", || {
        let times = lines
            .iter()
            .map(|l| l["time"].as_str().and_then(|t| humantime::parse_rfc3339(t).ok()))
            .collect::<Option<Vec<SystemTime>>>()
            .ok_or(format!("a time that is not RFC 3339 in {lines:?}"))?;
        for (a, b) in times.iter().zip(&times[1..]) {
            let apart = b.duration_since(*a).map_err(|_| format!("{a:?} after {b:?}"))?;
            if !(Duration::from_millis(900)..Duration::from_millis(1500)).contains(&apart) {
                return Err(format!("{apart:?} between two lines"));
            }
        }
        match times.iter().all(|t| (started..=ended).contains(t)) {
            true => Ok(()),
            false => Err(format!("{times:?} outside the run, {started:?} to {ended:?}")),
        }
    });
    c.run("the count is the table's", || {
        let n = lines.last().map(|l| l["table"]["count"].as_u64());
        equal("count", n, Some(Some(ns.conntrack_count())))
    });
    c.finish();
}

#[test]
fn issue_16_6_stats_interval_ends_with_0_on_sigterm_and_quietly_on_a_closed_pipe() {
    let ns = tracked_namespace();
    let mut live = stats(&ns, &["--interval", "200ms"]);
    live.wait_for(Duration::from_secs(10), |l| l.text.trim_start().starts_with(char::is_numeric))
        .unwrap();
    let (code, stderr) = live.stop();
    let mut c = Checks::new();
    c.run("SIGTERM: exit 0, nothing on stderr, a heading then rows", || {
        equal("exit code", code, Some(0))?;
        equal("stderr", stderr.as_str(), "")?;
        let heading = live.seen.first().map(|l| l.text.split_whitespace().collect::<Vec<_>>());
        equal(
            "heading starts",
            heading.as_deref().map(|h| &h[..4]),
            Some(&["count", "max", "fill%", "found"][..]),
        )
    });
    c.run("| head -3: ctguard ends by itself, exit 0, nothing on stderr", || {
        let script = format!(
            "set -o pipefail; timeout 10 {CTGUARD} --netns {} stats --interval 100ms 2>{err} \
             | head -3 >/dev/null; echo $?",
            ns.path(),
            err = ns.file("err").display()
        );
        let r = crate::netns::run("bash", &["-c", &script]).check_ok()?;
        equal("pipeline status", r.stdout.trim(), "0")?;
        let err = std::fs::read_to_string(ns.file("err")).map_err(|e| e.to_string())?;
        equal("stderr", err.as_str(), "")
    });
    c.finish();
}
