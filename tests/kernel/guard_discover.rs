//! Issue 14: the guard names the guests it finds on the host (`discover = true`): a bridge
//! with two guest ports in the test's own namespace (web-7 named by its interface alias, db-9
//! by a libvirt record the test writes), a guest file naming one more address, and the
//! guard's `/metrics`, decisions, caps and evictions in those names. A guest that migrates
//! away (its port deleted) is gone at the next look; its cap is an orphan, lifted after the
//! cooldown. The evictions are checked against `conntrack -L`.

use std::time::Duration;

use crate::checks::{Checks, equal};
use crate::guard::{Setup, cap_rules, events, stops_within_a_second, value};
use crate::guests::{ip, named_host};
use crate::live::Live;
use crate::oracle::{self, Guests};

/// The guest file's guests: the 8 flows of 10.99.0.9 that no port has, and the loopback the
/// scrapes come over (so that what no guest owns is only what the test put there).
fn file_guests() -> Guests {
    let nets = |v: &[&str]| v.iter().map(|s| s.parse().expect("test CIDR")).collect();
    Guests(vec![
        ("infra", nets(&["10.99.0.9/32"])),
        ("loopback", nets(&["127.0.0.0/8", "::1/128"])),
    ])
}

/// Discovery on, looking every second at the test's libvirt directory; the table (58 flows)
/// above `high`; web-7 (40 flows) the only guest over its quota.
fn policy(libvirt: &str, action: &str) -> String {
    format!(
        "discover = true\nlibvirt_dir = \"{libvirt}\"\ndiscover_every = \"1s\"\nhigh = 40\n\
         low = 30\nquota = 20\naction = \"{action}\"\ncap = 1000\ncooldown = \"3s\"\n\
         [guest.ghost]\nquota = 5\n[guest.loopback]\nquota = 1000000\n"
    )
}

/// The sum of `ctguard_entries{guest}` over the TCP states (the host's own multicast reports
/// are the namespace's, not the test's).
fn guest_entries(text: &str, guest: &str) -> u64 {
    crate::guard::entries(text)
        .into_iter()
        .filter(|((g, state), _)| g == guest && state != "NON_TCP")
        .map(|(_, n)| n)
        .sum()
}

/// Scrapes (at most `limit`) until the guard is in sync and `want` holds of its exposition.
fn settles(
    s: &Setup,
    guard: &mut crate::live::Live,
    limit: Duration,
    want: impl Fn(&str) -> Result<(), String>,
) -> Result<(), String> {
    let end = std::time::Instant::now() + limit;
    loop {
        let text = s.wait_synced(guard)?;
        match want(&text) {
            Ok(()) => return Ok(()),
            Err(e) if std::time::Instant::now() > end => {
                return Err(format!("after {limit:?}: {e}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The guard's eviction is web-7's 32 ESTABLISHED flows, by its name, and `conntrack -L` is
/// then `expected`: nobody else's flow went.
fn evicts_web_7(checks: &mut Checks, s: &Setup, guard: &mut Live, expected: &[String]) {
    checks.run("the guard evicts web-7's 32 ESTABLISHED flows, by its own name", || {
        let i = guard.wait_for(Duration::from_secs(15), |l| {
            l.json["event"] == "done" && l.json["action"] == "evict"
        })?;
        let done = &guard.seen[i].json;
        equal("guest", done["guest"].as_str(), Some("web-7"))?;
        equal("deleted", done["deleted"].as_u64(), Some(32))
    });
    checks.run("conntrack -L: exactly web-7's ESTABLISHED flows are gone", || {
        oracle::same_lines(&s.ns.conntrack_list(&[]), expected)
    });
}

#[test]
fn issue_14_the_guard_names_discovered_guests_and_lifts_a_departed_guests_cap() {
    let (host, [web, _db], dir) = named_host();
    let s = Setup::within(host, file_guests(), &policy(&dir[1], "cap"));
    let mut guard = s.start(&[]);
    let mut checks = Checks::new();
    checks.run("the metrics count per discovered guest and the file's guest", || {
        let text = s.wait_synced(&mut guard)?;
        let got: Vec<u64> =
            ["web-7", "db-9", "infra"].iter().map(|g| guest_entries(&text, g)).collect();
        equal("web-7, db-9, infra", got, vec![40, 10, 8])?;
        equal("(no guest)", guest_entries(&text, "(no guest)"), 0)?;
        equal("ctguard_guests", value(&text, "ctguard_guests", &[]), Some(4.0))
    });
    checks.run("web-7 is capped in its own name, on both its addresses", || {
        let i = guard.wait_for(Duration::from_secs(10), |l| {
            l.json["event"] == "done" && l.json["action"] == "cap"
        })?;
        equal("capped", guard.seen[i].json["guest"].as_str(), Some("web-7"))?;
        let rules: Vec<String> = cap_rules(&s.ns).iter().map(ToString::to_string).collect();
        equal("cap rules", rules.len(), 2)?;
        for addr in [web.v4, web.v6] {
            if !rules.iter().any(|r| r.contains(addr) && r.contains("ctguard:web-7")) {
                return Err(format!("no ctguard:web-7 rule on {addr}: {rules:?}"));
            }
        }
        Ok(())
    });
    checks.run("the decision names the guest with its addresses and port", || {
        let d = events(&guard.seen, "decision");
        let detail = d.iter().find(|d| d["guest"] == "web-7").map(|d| d["guest_detail"].clone());
        let detail = detail.ok_or("no decision on web-7")?;
        let text = detail.as_str().unwrap_or("");
        if text.starts_with("web-7 (") && text.contains(web.v4) && text.contains("vnet0") {
            Ok(())
        } else {
            Err(format!("guest_detail {detail}"))
        }
    });
    checks.run("a [guest.NAME] no guest has is a policy_unmatched warning", || {
        let u = events(&guard.seen, "policy_unmatched");
        equal(
            "unmatched",
            u.iter().map(|l| l["guest"].clone()).collect::<Vec<_>>(),
            vec![serde_json::json!("ghost")],
        )
    });
    // web-7 migrates away: its port goes.
    ip(&s.ns, &["link", "del", web.port]);
    checks.run("the next look sees it gone, and its cap is an orphan", || {
        let i = guard.wait_for(Duration::from_secs(5), |l| l.json["event"] == "guests_changed")?;
        let went = guard.seen[i].json["went"].to_string();
        if !went.contains("web-7") {
            return Err(format!("went: {went}"));
        }
        guard.wait_for(Duration::from_secs(5), |l| {
            l.json["event"] == "cap_orphaned" && l.json["guest"] == "web-7"
        })?;
        Ok(())
    });
    checks.run("web-7's flows are nobody's now; db-9 and infra keep theirs", || {
        settles(&s, &mut guard, Duration::from_secs(5), |text| {
            let got: Vec<u64> = ["web-7", "db-9", "infra", "(no guest)"]
                .iter()
                .map(|g| guest_entries(text, g))
                .collect();
            equal("web-7, db-9, infra, (no guest)", got, vec![0, 10, 8, 40])?;
            equal("ctguard_guests", value(text, "ctguard_guests", &[]), Some(3.0))
        })
    });
    checks.run("after the cooldown the orphan's cap is lifted and its series end", || {
        guard.wait_for(Duration::from_secs(10), |l| {
            l.json["event"] == "done" && l.json["action"] == "uncap" && l.json["guest"] == "web-7"
        })?;
        equal("cap rules", cap_rules(&s.ns), vec![])?;
        let text = s.scrape()?;
        equal("series of web-7", text.lines().filter(|l| l.contains("\"web-7\"")).count(), 0)
    });
    stops_within_a_second(&mut checks, &mut guard);
    checks.finish();
}

#[test]
fn issue_14_the_guard_evicts_a_discovered_guests_flows_and_nothing_else() {
    let (host, [web, _db], dir) = named_host();
    let before = host.conntrack_list(&[]);
    let web_established = |line: &String| {
        let of_web = line.contains(&format!("src={} ", web.v4))
            || line.contains(&format!("src={} ", web.v6));
        of_web && line.contains(" ESTABLISHED ")
    };
    let expected: Vec<String> = before.iter().filter(|l| !web_established(l)).cloned().collect();
    assert_eq!(before.len() - expected.len(), 32, "web-7's ESTABLISHED: {before:?}");
    let s = Setup::within(host, file_guests(), &policy(&dir[1], "evict"));
    let mut guard = s.start(&[]);
    let mut checks = Checks::new();
    evicts_web_7(&mut checks, &s, &mut guard, &expected);
    checks.run("the audit log's evict records name the discovered guest", || {
        let audit = s.audit();
        let intent = audit.iter().find(|r| r["record"] == "intent");
        let what = intent.map(|r| r.to_string()).unwrap_or_default();
        if what.contains("--guest web-7") { Ok(()) } else { Err(format!("intent: {what}")) }
    });
    guard.signal(libc::SIGHUP);
    checks.run("SIGHUP: a reload that looks at the host again, and the counts agree", || {
        let i = guard.wait_for(Duration::from_secs(5), |l| l.json["event"] == "reload")?;
        equal("discover", guard.seen[i].json["discover"].as_bool(), Some(true))?;
        settles(&s, &mut guard, Duration::from_secs(5), |text| {
            equal("web-7 after the eviction", guest_entries(text, "web-7"), 8)?;
            equal("ctguard_guests", value(text, "ctguard_guests", &[]), Some(4.0))
        })
    });
    stops_within_a_second(&mut checks, &mut guard);
    checks.finish();
}

/// Two tenants call their instances by one display name (Nova's names are not unique): they
/// are two guests, named by their ports, and the guard's eviction of the one flooding never
/// touches the other's flows.
#[test]
fn issue_14_two_instances_of_one_nova_name_are_two_guests_to_the_guard() {
    let (host, [web, db], dir) = named_host();
    let nova = |uuid: &str, dev: &str| {
        format!(
            "<domain type='kvm'><name>instance-{uuid}</name><uuid>{uuid}</uuid><metadata>\
             <nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'>\
             <nova:name>web</nova:name></nova:instance></metadata><devices>\
             <interface type='bridge'><target dev='{dev}'/></interface></devices></domain>\n"
        )
    };
    let libvirt = std::path::Path::new(&dir[1]);
    std::fs::write(libvirt.join("db-9.xml"), nova("2222", db.port)).expect("domain xml");
    std::fs::write(libvirt.join("web.xml"), nova("1111", web.port)).expect("domain xml");
    let before = host.conntrack_list(&[]);
    let of_web = |line: &String| {
        (line.contains(&format!("src={} ", web.v4)) || line.contains(&format!("src={} ", web.v6)))
            && line.contains(" ESTABLISHED ")
    };
    let expected: Vec<String> = before.iter().filter(|l| !of_web(l)).cloned().collect();
    let s = Setup::within(host, file_guests(), &policy(&dir[1], "evict"));
    let mut guard = s.start(&[]);
    let mut checks = Checks::new();
    checks.run("the clash is a warning naming the other instance's record", || {
        let i = guard.wait_for(Duration::from_secs(10), |l| {
            l.json["event"] == "discover_warning"
                && l.json["warning"].as_str().is_some_and(|w| w.contains("'web'"))
        })?;
        let w = guard.seen[i].json["warning"].to_string();
        if w.contains("db-9.xml") || w.contains("web.xml") { Ok(()) } else { Err(w) }
    });
    evicts_web_7(&mut checks, &s, &mut guard, &expected);
    stops_within_a_second(&mut checks, &mut guard);
    checks.finish();
}
