//! Issue 16.7: conntrack-tools habits kept, against conntrack v1.4.7 in the same namespace:
//! `create` confirms on stderr as `conntrack -I` does, and `events` names the process whose
//! request caused an event (`[USERSPACE] portid=N progname=NAME`) where the kernel says.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::checks::{Checks, equal};
use crate::live::{Live, wait_subscribed};
use crate::netns::Netns;

/// `create` arguments for a UDP flow from 10.9.1.1:`sport`.
fn udp(sport: u16) -> Vec<String> {
    let flow = format!("-p udp -s 10.9.1.1 -d 10.9.1.2 --sport {sport} --dport 53 --timeout 300");
    flow.split(' ').map(String::from).collect()
}

#[test]
fn issue_16_7_create_confirms_on_stderr_like_conntrack_i() {
    let ns = Netns::new();
    let mut args = vec!["create".to_string()];
    args.extend(udp(1000));
    let ours = ns.ctguard(&args.iter().map(String::as_str).collect::<Vec<_>>()).ok();
    let mut theirs = vec!["-I".to_string()];
    theirs.extend(udp(1001));
    let ct = ns.conntrack(&theirs.iter().map(String::as_str).collect::<Vec<_>>()).ok();
    let mut c = Checks::new();
    c.run("ctguard: one line on stderr, nothing on stdout", || {
        equal("stderr", ours.stderr.as_str(), "ctguard: 1 flow entry has been created.\n")?;
        equal("stdout", ours.stdout.as_str(), "")
    });
    c.run("conntrack -I says the same of its flow", || {
        match ct.stderr.trim_end().ends_with(": 1 flow entries have been created.") {
            true => equal("stdout", ct.stdout.as_str(), ""),
            false => Err(format!("conntrack -I said {:?}", ct.stderr)),
        }
    });
    c.run("both flows are in the table", || equal("count", ns.conntrack_count(), 2));
    c.finish();
}

/// The `portid` and `progname` a `conntrack -E` line ends with.
fn userspace_of(line: &str) -> (Option<u64>, Option<String>) {
    let Some((_, tail)) = line.split_once(" [USERSPACE] ") else {
        return (None, None);
    };
    let mut words = tail.split(' ');
    let portid = words.next().and_then(|w| w.strip_prefix("portid=")?.parse().ok());
    (portid, words.next().and_then(|w| w.strip_prefix("progname=")).map(String::from))
}

/// The line of `live` for the `kind` event (`[NEW]`) of the flow from port `sport`.
fn line_for(live: &Live, kind: &str, sport: u16) -> Result<String, String> {
    let want = format!("sport={sport} ");
    live.seen
        .iter()
        .map(|l| l.text.clone())
        .find(|t| t.contains(kind) && t.contains(&want))
        .ok_or_else(|| format!("no {kind} line for sport {sport}"))
}

/// The record of `live` for the `kind` event (`new`) of the flow from port `sport`.
fn record_for(live: &Live, kind: &str, sport: u16) -> Result<Value, String> {
    live.seen
        .iter()
        .map(|l| l.json.clone())
        .find(|v| v["type"] == kind && v["flow"]["orig"]["sport"] == sport)
        .ok_or_else(|| format!("no {kind} record for sport {sport}"))
}

#[test]
fn issue_16_7_events_name_the_process_whose_request_caused_them() {
    // Conntrack hooks for loopback traffic: a flow the kernel makes from a packet.
    let ns = crate::stats::tracked_namespace();
    ns.sysctl_write("net.netfilter.nf_conntrack_events", "1");
    let mut json = Live::start(&ns, &["events", "--json"]);
    let mut text = Live::start(&ns, &["events"]);
    let mut oracle = {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns.name(), "conntrack", "-E", "-o", "userspace"]);
        Live::spawn(cmd)
    };
    wait_subscribed(&ns, 3);

    // A create: ctguard has exited by the time its NEW is read, so the port id alone.
    let mut args = vec!["create".to_string()];
    args.extend(udp(2000));
    ns.ctguard(&args.iter().map(String::as_str).collect::<Vec<_>>()).ok();
    // A rate-limited evict is still running while its first DESTROY events arrive: named.
    for sport in [2001, 2002, 2003] {
        let mut theirs = vec!["-I".to_string()];
        theirs.extend(udp(sport));
        ns.conntrack(&theirs.iter().map(String::as_str).collect::<Vec<_>>()).ok();
    }
    ns.ctguard(&["evict", "-s", "10.9.1.1", "--sport", "2001-2003", "--yes", "--rate", "2"]).ok();
    // A packet's flow: the kernel's own event, no requester.
    ns.exec(
        "python3",
        &["-c", "import socket; socket.socket(2, 2).sendto(b'x', ('127.0.0.1', 9))"],
    )
    .ok();
    for l in [&mut json, &mut text, &mut oracle] {
        l.wait_quiet(Duration::from_secs(2), Duration::from_secs(15));
    }

    let mut c = Checks::new();
    c.run("NEW of ctguard create: the port id conntrack -E printed", || {
        let want = userspace_of(&line_for(&oracle, "[NEW]", 2000)?);
        let ours = userspace_of(&line_for(&text, "[NEW]", 2000)?);
        let rec = record_for(&json, "new", 2000)?;
        if want.0.is_none() {
            return Err("conntrack -E printed no port id".into());
        }
        equal("text portid", ours.0, want.0)?;
        equal("json portid", rec["portid"].as_u64(), want.0)
    });
    c.run("DESTROY of ctguard evict: port ids as conntrack -E, progname=ctguard", || {
        let mut ours = Vec::new();
        for sport in [2001, 2002, 2003] {
            let want = userspace_of(&line_for(&oracle, "[DESTROY]", sport)?);
            let text = userspace_of(&line_for(&text, "[DESTROY]", sport)?);
            let rec = record_for(&json, "destroy", sport)?;
            equal("text portid", text.0, want.0)?;
            equal("json portid", rec["portid"].as_u64(), want.0)?;
            if let Some(theirs) = &want.1 {
                equal("conntrack's progname", theirs.as_str(), "ctguard")?;
            }
            ours.push((rec["time"].as_str().unwrap_or("").to_string(), text.1, rec));
        }
        // The last delete's event may be read after evict exited: only the port id is left.
        ours.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, text, rec) in &ours[..2] {
            equal("text progname", text.as_deref(), Some("ctguard"))?;
            equal("json progname", rec["progname"].as_str(), Some("ctguard"))?;
        }
        Ok(())
    });
    c.run("NEW of conntrack -I: its port id, as conntrack -E", || {
        let want = userspace_of(&line_for(&oracle, "[NEW]", 2001)?);
        let rec = record_for(&json, "new", 2001)?;
        equal("json portid", rec["portid"].as_u64(), want.0)
    });
    c.run("a packet's NEW: no [USERSPACE], no portid, in either", || {
        let find =
            |l: &Live| l.seen.iter().find(|x| x.text.contains("dport=9 ")).map(|x| x.text.clone());
        let theirs = find(&oracle).ok_or("conntrack -E saw no packet flow")?;
        let ours = find(&text).ok_or("no packet flow")?;
        let rec = json
            .seen
            .iter()
            .find(|l| l.json["flow"]["orig"]["dport"] == 9)
            .ok_or("no packet record")?;
        equal("conntrack's", userspace_of(&theirs), (None, None))?;
        equal("ours", userspace_of(&ours), (None, None))?;
        equal("json", (rec.json.get("portid"), rec.json.get("progname")), (None, None))
    });
    c.finish();
}
