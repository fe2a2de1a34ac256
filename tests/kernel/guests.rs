//! Issue 14: `ctguard guests` finds the guests behind a bridge from route netlink alone.
//!
//! A "host" namespace with a bridge and two veth ports (vnet0 with an alias, vnet1 without),
//! a guest namespace behind each with IPv4 and IPv6 addresses; UDP datagrams from the host
//! to each guest make the kernel resolve them (ARP, NDP) and the bridge learn their MACs, so
//! the neighbour entries sit on the bridge and only the FDB says which port each is behind.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::netns::{CTGUARD, Netns, Run, run};
use crate::oracle;
use crate::seed::{self, L4, Spec};

pub(crate) struct Guest {
    ns: Netns,
    pub(crate) port: &'static str,
    pub(crate) v4: &'static str,
    pub(crate) v6: &'static str,
}

pub(crate) fn ip(ns: &Netns, args: &[&str]) {
    let mut all = vec!["-n", ns.name()];
    all.extend_from_slice(args);
    run("ip", &all).ok();
}

/// The host with its bridge, and one guest behind `port`.
fn guest(host: &Netns, port: &'static str, v4: &'static str, v6: &'static str) -> Guest {
    let ns = Netns::new();
    ip(host, &["link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.name()]);
    ip(host, &["link", "set", port, "master", "br0", "up"]);
    ip(&ns, &["link", "set", "eth0", "up"]);
    ip(&ns, &["addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
    ip(&ns, &["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"]);
    Guest { ns, port, v4, v6 }
}

fn mac_of(g: &Guest) -> String {
    g.ns.exec("cat", &["/sys/class/net/eth0/address"]).ok().stdout.trim().to_string()
}

/// Sends one datagram to each address from inside the host: the kernel resolves them.
fn poke(host: &Netns, addrs: &[&str]) {
    host.inside(|| {
        for a in addrs {
            let any = if a.contains(':') { "[::]:0" } else { "0.0.0.0:0" };
            let s = UdpSocket::bind(any).expect("bind");
            // Discard port: nothing answers, the neighbour resolution is what counts.
            let _ = s.send_to(b"ctguard", format!("{}:9", bracket(a)));
        }
    });
}

fn bracket(a: &str) -> String {
    if a.contains(':') { format!("[{a}]") } else { a.to_string() }
}

fn rows(host: &Netns) -> Vec<serde_json::Value> {
    let out = host.ctguard(&["guests", "--json"]);
    assert!(matches!(out.code, Some(0 | 1)), "{}", out.describe());
    out.lines().iter().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

fn row_for<'a>(rows: &'a [serde_json::Value], g: &Guest) -> Option<&'a serde_json::Value> {
    rows.iter().find(|r| {
        r["iface"] == g.port
            && r["ipv4"].as_array().is_some_and(|a| a.iter().any(|x| x == g.v4))
            && r["ipv6"].as_array().is_some_and(|a| a.iter().any(|x| x == g.v6))
    })
}

#[test]
fn issue_14_guests_lists_each_bridge_port_with_its_guests_mac_and_addresses() {
    let host = Netns::new();
    ip(&host, &["link", "add", "br0", "type", "bridge"]);
    // A fixed address: a bridge's own follows its lowest port's MAC, and when that port goes
    // the kernel flushes the neighbours learned on the bridge (the other guest's too).
    ip(&host, &["link", "set", "br0", "address", "02:00:00:00:00:01"]);
    ip(&host, &["link", "set", "br0", "up"]);
    ip(&host, &["addr", "add", "172.16.3.1/24", "dev", "br0"]);
    ip(&host, &["addr", "add", "2001:db8:3::1/64", "dev", "br0", "nodad"]);
    let web = guest(&host, "vnet0", "172.16.3.5", "2001:db8:3::5");
    let db = guest(&host, "vnet1", "172.16.3.7", "2001:db8:3::7");
    ip(&host, &["link", "set", "vnet0", "alias", "web-7"]);
    // Before any traffic: both ports are guest interfaces, nothing learned behind them.
    let before = rows(&host);
    assert!(before.iter().all(|r| r["ipv4"].as_array().is_some_and(Vec::is_empty)), "{before:?}");

    let start = Instant::now();
    let found = loop {
        poke(&host, &[web.v4, web.v6, db.v4, db.v6]);
        let now = rows(&host);
        if row_for(&now, &web).is_some() && row_for(&now, &db).is_some() {
            break now;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "guests not resolved: {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    for (g, name, source) in [(&web, "web-7", "alias"), (&db, "vnet1", "ifname")] {
        let r = row_for(&found, g).expect("found above");
        assert_eq!(r["name"], name, "{r}");
        assert_eq!(r["source"], source, "{r}");
        assert_eq!(r["kind"], "veth", "{r}");
        assert_eq!(r["mac"], mac_of(g).as_str(), "{r}");
        assert_eq!(r["ipv4"], serde_json::json!([g.v4]), "{r}");
    }
    // The bridge itself and loopback are no guests; nothing is listed twice.
    assert!(found.iter().all(|r| r["iface"] != "br0" && r["iface"] != "lo"), "{found:?}");
    assert_eq!(found.len(), 2, "{found:?}");

    // A guest whose interface goes (the VM migrated away) is gone from the next listing.
    ip(&host, &["link", "del", "vnet1"]);
    let after = rows(&host);
    assert!(row_for(&after, &web).is_some(), "{after:?}");
    assert!(after.iter().all(|r| r["iface"] != "vnet1" && r["name"] != "vnet1"), "{after:?}");
    assert!(
        after.iter().all(|r| !r["ipv4"].as_array().is_some_and(|a| a.iter().any(|x| x == db.v4))),
        "{after:?}"
    );
}

#[test]
fn issue_14_guests_text_has_the_documented_columns() {
    let host = Netns::new();
    ip(&host, &["link", "add", "br0", "type", "bridge"]);
    ip(&host, &["link", "set", "br0", "up"]);
    let _g = guest(&host, "tap104i0", "172.16.4.5", "2001:db8:4::5");
    let out = host.ctguard(&["guests"]).ok();
    let lines = out.lines();
    let header: Vec<_> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["NAME", "IFACE", "MAC", "IPv4", "IPv6", "SOURCE"]);
    // No traffic yet: no IPv4 neighbour (IPv6 may learn the guest's link-local on its own).
    let row: Vec<_> = lines[1].split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[3], row[5]),
        ("tap104i0", "tap104i0", "-", "ifname"),
        "{out:?}"
    );
    assert_eq!(lines.len(), 2, "{out:?}");
}

#[test]
fn issue_14_guests_with_no_guest_interface_exits_1() {
    let host = Netns::new();
    let out = host.ctguard(&["guests", "--json"]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

/// The hypervisor's records name the guests (issue 14.2): a Proxmox `qemu-server/104.conf`
/// names `tap104i0`, a libvirt domain names `vnet9` by its target dev; a malformed domain file
/// is a warning naming it, and the listing goes on.
#[test]
fn issue_14_guests_are_named_from_libvirt_and_proxmox_records() {
    let host = Netns::new();
    ip(&host, &["link", "add", "br0", "type", "bridge"]);
    ip(&host, &["link", "set", "br0", "up"]);
    let _a = guest(&host, "tap104i0", "172.16.4.5", "2001:db8:4::5");
    let _b = guest(&host, "vnet9", "172.16.4.6", "2001:db8:4::6");
    let pve = host.file("pve");
    std::fs::create_dir_all(pve.join("qemu-server")).unwrap();
    std::fs::write(pve.join("qemu-server/104.conf"), "name: web-104\nmemory: 2048\n").unwrap();
    let virt = host.file("libvirt");
    std::fs::create_dir_all(&virt).unwrap();
    std::fs::write(
        virt.join("db-9.xml"),
        "<domain type='kvm'><name>db-9</name><uuid>0b4f5c2e-1d7a-4c52-9f3e-2a6b1c9d8e71</uuid>\
         <devices><interface type='bridge'><source bridge='br0'/><target dev='vnet9'/>\
         </interface></devices></domain>\n",
    )
    .unwrap();
    std::fs::write(virt.join("broken.xml"), "<domain><name>half").unwrap();
    let (pve, virt) = (pve.to_string_lossy().into_owned(), virt.to_string_lossy().into_owned());
    let out = host.ctguard(&["guests", "--json", "--pve-dir", &pve, "--libvirt-dir", &virt]).ok();
    let rows: Vec<serde_json::Value> =
        out.lines().iter().map(|l| serde_json::from_str(l).expect("json")).collect();
    let named = |iface: &str| {
        rows.iter().find(|r| r["iface"] == iface).map(|r| {
            (r["name"].as_str().unwrap().to_string(), r["source"].as_str().unwrap().to_string())
        })
    };
    assert_eq!(named("tap104i0"), Some(("web-104".into(), "proxmox".into())), "{rows:?}");
    assert_eq!(named("vnet9"), Some(("db-9".into(), "libvirt".into())), "{rows:?}");
    assert!(out.stderr.contains("broken.xml"), "a warning names the bad file: {}", out.stderr);
}

/// `n` ESTABLISHED (every fifth TIME_WAIT) TCP flows from `src` to 10.40.0.1, ports from `base`.
fn flows_from(src: &str, n: usize, base: u16) -> Vec<Spec> {
    (0..n)
        .map(|i| Spec {
            proto: "tcp",
            src: src.parse().expect("an address"),
            dst: if src.contains(':') { seed::ip("fd00:40::1") } else { seed::ip("10.40.0.1") },
            l4: L4::Ports(base + i as u16, 443),
            reply: None,
            state: Some(if i % 5 == 4 { "TIME_WAIT" } else { "ESTABLISHED" }),
            status: &["SEEN_REPLY", "ASSURED"],
            timeout: 3000,
            mark: 0,
            zone: 0,
        })
        .collect()
}

/// A host whose table holds web-7's flows (behind vnet0, named by its alias; 30 over IPv4 and
/// 10 over IPv6), db-9's (behind vnet1, named by a libvirt record; 10) and 8 of an address no
/// guest has; with no guests file. Returns the host, its guests and `--libvirt-dir DIR`.
pub(crate) fn named_host() -> (Netns, [Guest; 2], [String; 2]) {
    let host = Netns::new();
    ip(&host, &["link", "add", "br0", "type", "bridge"]);
    ip(&host, &["link", "set", "br0", "address", "02:00:00:00:00:01", "up"]);
    ip(&host, &["addr", "add", "172.16.3.1/24", "dev", "br0"]);
    ip(&host, &["addr", "add", "2001:db8:3::1/64", "dev", "br0", "nodad"]);
    let web = guest(&host, "vnet0", "172.16.3.5", "2001:db8:3::5");
    let db = guest(&host, "vnet1", "172.16.3.6", "2001:db8:3::6");
    ip(&host, &["link", "set", "vnet0", "alias", "web-7"]);
    let virt = host.file("libvirt");
    std::fs::create_dir_all(&virt).expect("libvirt dir");
    std::fs::write(
        virt.join("db-9.xml"),
        "<domain type='kvm'><name>db-9</name><devices><interface type='bridge'>\
         <target dev='vnet1'/></interface></devices></domain>\n",
    )
    .expect("domain xml");
    let all = [web.v4, web.v6, db.v4, db.v6];
    let start = Instant::now();
    loop {
        poke(&host, &all);
        let rows = rows(&host);
        if row_for(&rows, &web).is_some() && row_for(&rows, &db).is_some() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "guests not resolved: {rows:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut specs = flows_from(web.v4, 30, 20_000);
    specs.extend(flows_from(web.v6, 10, 21_000));
    specs.extend(flows_from(db.v4, 10, 22_000));
    specs.extend(flows_from("10.99.0.9", 8, 23_000));
    seed::with_conntrack(&host, &specs, "named.txt");
    let dir = ["--libvirt-dir".to_string(), virt.to_string_lossy().into_owned()];
    (host, [web, db], dir)
}

/// The groups of a `top --json` / `count --json --by` answer: key → entries.
fn groups(out: &Run) -> Vec<(String, u64)> {
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
    let groups = v["groups"].as_array().expect("groups");
    groups
        .iter()
        .map(|g| (g["key"].as_str().unwrap_or("").to_string(), g["entries"].as_u64().unwrap_or(0)))
        .collect()
}

fn args<'a>(head: &[&'a str], dir: &'a [String; 2]) -> Vec<&'a str> {
    head.iter().copied().chain(dir.iter().map(String::as_str)).collect()
}

#[test]
fn issue_14_top_and_count_group_by_discovered_guests_without_a_guests_file() {
    let (host, _guests, dir) = named_host();
    let top = host.ctguard(&args(&["top", "--json"], &dir)).ok();
    let v: serde_json::Value = serde_json::from_str(top.stdout.trim()).expect("json");
    assert_eq!(v["by"], "guest", "{}", top.stdout);
    let want = [("web-7".to_string(), 40), ("db-9".to_string(), 10), ("(no guest)".into(), 8)];
    assert_eq!(groups(&top), want, "{}", top.stdout);
    let count = host.ctguard(&args(&["count", "--json", "--by", "guest"], &dir)).ok();
    assert_eq!(groups(&count), want, "{}", count.stdout);
    let only = host.ctguard(&args(&["count", "--guest", "web-7", "--state", "TIME_WAIT"], &dir));
    assert_eq!(only.ok().stdout.trim(), "8");
    // Without discovery and without a file there are no guests: by source, as before.
    let plain = host.ctguard(&["top", "--json", "--no-discover"]).ok();
    let v: serde_json::Value = serde_json::from_str(plain.stdout.trim()).expect("json");
    assert_eq!(v["by"], "src", "{}", plain.stdout);
    let refused = host.ctguard(&["count", "--by", "guest", "--no-discover"]);
    assert_eq!(refused.code, Some(2), "{}", refused.describe());
}

#[test]
fn issue_14_evict_by_a_discovered_name_deletes_that_guests_flows_only() {
    let (host, [web, _db], dir) = named_host();
    let before = host.conntrack_list(&[]);
    let gone = |line: &String| {
        let web_flow = line.contains(&format!("src={} ", web.v4))
            || line.contains(&format!("src={} ", web.v6));
        web_flow && line.contains(" ESTABLISHED ")
    };
    let expected: Vec<String> = before.iter().filter(|l| !gone(l)).cloned().collect();
    assert_eq!(before.len() - expected.len(), 32, "24 + 8 ESTABLISHED of web-7's: {before:?}");
    let run = host
        .ctguard(&args(&["evict", "--guest", "web-7", "--state", "ESTABLISHED", "--yes"], &dir));
    let run = run.ok();
    assert!(run.stdout.contains("32"), "the report counts them: {}", run.stdout);
    let left = oracle::same_lines(&host.conntrack_list(&[]), &expected);
    left.unwrap_or_else(|e| panic!("conntrack -L: exactly web-7's ESTABLISHED gone: {e}"));
    // A name nobody has is refused before anything is touched.
    let nobody = host.ctguard(&args(&["evict", "--guest", "web-8", "--yes"], &dir));
    assert_eq!(nobody.code, Some(2), "{}", nobody.describe());
    assert!(
        nobody.stderr.contains("web-8") && nobody.stderr.contains("ctguard guests"),
        "{}",
        nobody.stderr
    );
    assert_eq!(nobody.stderr.lines().count(), 1, "{}", nobody.stderr);
    let left = oracle::same_lines(&host.conntrack_list(&[]), &expected);
    left.unwrap_or_else(|e| panic!("conntrack -L after the refusal: {e}"));
}

/// Issue 16: `guests --names` (what the completions call back) joins the guest file's names
/// and the host's, and the bash completion of `--guest` gets them through the `--netns` and
/// `--guests` typed, from the real binary.
#[test]
fn issue_16_guest_names_for_completion_join_the_file_and_the_host() {
    let host = Netns::new();
    ip(&host, &["link", "add", "br0", "type", "bridge"]);
    ip(&host, &["link", "set", "br0", "up"]);
    let _g = guest(&host, "tap104i0", "172.16.4.5", "2001:db8:4::5");
    let file = host.write_file("guests.toml", "web01 = \"10.9.0.1\"\ndb01 = \"10.9.0.2\"\n");
    let names = host.ctguard(&["guests", "--names", "--guests", &file]).ok();
    assert_eq!(names.stdout, "db01\ntap104i0\nweb01\n", "{}", names.describe());
    let file_only = host.ctguard(&["guests", "--names", "--guests", &file, "--no-discover"]).ok();
    assert_eq!(file_only.stdout, "db01\nweb01\n");

    let script =
        host.write_file("ctguard.bash", &run(CTGUARD, &["completions", "bash"]).ok().stdout);
    let complete = format!(
        "source '{script}'; COMP_WORDS=('{CTGUARD}' --netns '{}' top --guests '{file}' --guest t); \
         COMP_CWORD=7; _ctguard_with_guests ctguard t --guest; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        host.name()
    );
    let got = run("bash", &["-c", &complete]).ok();
    assert_eq!(got.stdout, "tap104i0\n", "{}", got.describe());
}
