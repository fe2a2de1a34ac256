//! Issue 2: `--idle` measures against the target namespace's own state timeouts.

use crate::checks::{Checks, equal};
use crate::netns::Netns;

#[test]
fn issue_2_idle_uses_the_namespace_tcp_timeout() {
    let ns = Netns::new();
    // Inside the test's namespace only: ESTABLISHED times out after 2 h there.
    ns.sysctl_write("net.netfilter.nf_conntrack_tcp_timeout_established", "7200");
    let create = |sport: &str, timeout: &str| {
        ns.ctguard(&[
            "create",
            "-p",
            "tcp",
            "-s",
            "172.16.3.5",
            "-d",
            "10.0.0.1",
            "--sport",
            sport,
            "--dport",
            "443",
            "--state",
            "ESTABLISHED",
            "--status",
            "SEEN_REPLY,ASSURED",
            "--timeout",
            timeout,
        ])
        .ok();
    };
    create("40000", "3600"); // idle 7200 - 3600 = 1 h
    create("40001", "7000"); // idle about 200 s
    let mut c = Checks::new();
    c.run("--idle 1h selects the flow idle for an hour, not the fresh one", || {
        let r = ns.ctguard(&["list", "--idle", "1h"]).check_ok()?;
        equal("lines", r.lines().len(), 1)?;
        if !r.stdout.contains("sport=40000 ") {
            return Err(format!("wrong flow: {}", r.stdout));
        }
        Ok(())
    });
    c.run("--idle 2h selects nothing (exit 1)", || {
        let r = ns.ctguard(&["list", "--idle", "2h"]);
        equal("exit code", r.code, Some(1)).map_err(|e| format!("{e}; stdout {:?}", r.stdout))?;
        equal("stdout", r.stdout.as_str(), "")
    });
    c.run("--idle 2m selects both", || {
        let r = ns.ctguard(&["count", "--idle", "2m"]).check_ok()?;
        equal("count", r.stdout.trim(), "2")
    });
    c.finish();
}
