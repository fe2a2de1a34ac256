//! Issue 14 in the lab: guests on hypervisor-style ports (libvirt's `vnetN`, Proxmox's
//! `tap104i0`), named from a libvirt and a Proxmox directory the test writes, their addresses
//! learned from real traffic; `guests`, `top` and `doctor` name the runaway with no guest file,
//! and a guest that migrates away leaves the listing.
//!
//! Needs root; run by `scripts/test` after building the ctguard binary
//! (`cargo test -p ctguard-lab --features lab-tests`).

// A test crate: a panic on unwrap or expect is a failed test (the workspace denies them elsewhere).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use ctguard_lab::place::{self, Place, command, command_ok};
use ctguard_lab::{seed, table};
use serde_json::Value;

/// The ctguard binary beside this test's `deps/` directory, or `$CTGUARD`.
static CTGUARD: LazyLock<PathBuf> =
    LazyLock::new(|| place::built_ctguard("CTGUARD", None).unwrap_or_else(|e| panic!("{e}")));

/// One guest port: the guest's namespace suffix, the host-side port, its bridge, the guest's
/// MAC and addresses.
struct Port {
    ns: &'static str,
    iface: &'static str,
    bridge: &'static str,
    mac: &'static str,
    v4: &'static str,
    v6: &'static str,
}

/// app-1 (an OpenStack instance), db-2 (libvirt), lb-3 (libvirt, two interfaces on two
/// bridges), web-104 (Proxmox VM 104, the runaway: the address the seeded table floods from).
const PORTS: [Port; 5] = [
    Port {
        ns: "app",
        iface: "vnet0",
        bridge: "br0",
        mac: "52:54:00:14:00:01",
        v4: "172.16.3.100",
        v6: "fd00:3::100",
    },
    Port {
        ns: "db",
        iface: "vnet1",
        bridge: "br0",
        mac: "52:54:00:14:00:02",
        v4: "172.16.3.101",
        v6: "fd00:3::101",
    },
    Port {
        ns: "lb",
        iface: "vnet2",
        bridge: "br0",
        mac: "52:54:00:14:00:03",
        v4: "172.16.3.102",
        v6: "fd00:3::102",
    },
    Port {
        ns: "lb",
        iface: "vnet3",
        bridge: "br1",
        mac: "52:54:00:14:00:04",
        v4: "172.16.4.102",
        v6: "fd00:4::102",
    },
    Port {
        ns: "web",
        iface: "tap104i0",
        bridge: "br0",
        mac: "52:54:00:14:01:04",
        v4: "172.16.3.5",
        v6: "fd00:3::5",
    },
];

/// The lab's namespaces and scratch directory, removed when dropped (also on a panic).
struct Lab {
    prefix: String,
    made: Vec<String>,
    scratch: PathBuf,
}

impl Lab {
    fn ns(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    fn make(&mut self, suffix: &str) -> String {
        let name = self.ns(suffix);
        place::create_netns(&name).unwrap();
        self.made.push(name.clone());
        name
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            let _ = place::delete_netns(ns);
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// `ip netns exec NS ip ARGS...`, which must succeed.
fn ip(ns: &str, args: &str) {
    let mut argv = vec!["netns", "exec", ns, "ip"];
    argv.extend(args.split_whitespace());
    command_ok("ip", &argv).unwrap_or_else(|e| panic!("ip {args} in {ns}: {e}"));
}

/// A libvirt domain as `/run/libvirt/qemu/NAME.xml` holds it, with its interfaces.
fn domain(name: &str, nova: Option<&str>, ports: &[&Port]) -> String {
    let meta = nova.map_or(String::new(), |n| {
        format!(
            "<metadata><nova:instance xmlns:nova=\"http://openstack.org/xmlns/libvirt/nova/1.1\">\
             <nova:name>{n}</nova:name></nova:instance></metadata>"
        )
    });
    let ifaces: String = ports
        .iter()
        .map(|p| {
            format!(
                "<interface type='bridge'><mac address='{}'/><source bridge='{}'/>\
                 <target dev='{}'/><model type='virtio'/></interface>",
                p.mac, p.bridge, p.iface
            )
        })
        .collect();
    format!(
        "<domstatus state='running' reason='booted' pid='4242'><domain type='kvm' id='3'>\
         <name>{name}</name><uuid>0f3b6a52-1c7e-4f0d-b8a9-5e2d7c41a9{:02x}</uuid>{meta}\
         <devices>{ifaces}</devices></domain></domstatus>\n",
        name.len()
    )
}

/// `ctguard --netns HOST ARGS...` run to its end: exit code and stdout.
fn run(host: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut argv = vec!["--netns", host];
    argv.extend_from_slice(args);
    let out = command(&CTGUARD.to_string_lossy(), &argv).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "ctguard {args:?}: {stderr}");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `guests --json` rows.
fn guests(host: &str, dirs: &[&str]) -> Vec<Value> {
    let mut args = vec!["guests", "--json"];
    args.extend_from_slice(dirs);
    let (code, out) = run(host, &args);
    assert_eq!(code, Some(0), "guests: {out}");
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| Some(s.as_str()?.to_string())).collect())
        .unwrap_or_default()
}

/// Sends datagrams from the host to `addr` until the host's neighbour table holds it as
/// reachable (at most 5 s): the host resolves the guest by ARP or NDP, the guest's answer
/// puts its MAC behind its port in the bridge's FDB.
fn reach(host: &Place, addr: &str) {
    let ip: IpAddr = addr.parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for _ in 0..50 {
        let sent = runtime.block_on(host.run(async move {
            let any: SocketAddr =
                if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
            let sock = tokio::net::UdpSocket::bind(any).await?;
            sock.send_to(b"who is there", SocketAddr::new(ip, 9)).await
        }));
        assert!(sent.is_ok(), "a datagram to {addr}: {sent:?}");
        std::thread::sleep(Duration::from_millis(100));
        let neigh = host.exec_ok("ip", &["neigh", "show", "to", addr]).unwrap();
        if neigh.contains("lladdr") && !neigh.contains("FAILED") {
            return;
        }
    }
    panic!("the host never resolved {addr}");
}

#[test]
fn issue_14_lab_guests_found_named_and_the_runaway_named_by_top_and_doctor() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the lab test needs root: it creates network namespaces");
    let prefix = format!("ctg-lg-{}", std::process::id());
    let scratch = std::env::temp_dir().join(format!("{prefix}.d"));
    let mut lab = Lab { prefix, made: Vec::new(), scratch: scratch.clone() };
    std::fs::create_dir_all(&scratch).unwrap();
    let host = lab.make("host");

    // The bridges get fixed MACs: a port leaving would otherwise change the bridge's, and the
    // kernel flushes every neighbour learned through it.
    for (br, mac, v4, v6) in [
        ("br0", "02:00:00:14:00:01", "172.16.3.1/24", "fd00:3::1/64"),
        ("br1", "02:00:00:14:00:02", "172.16.4.1/24", "fd00:4::1/64"),
    ] {
        ip(&host, &format!("link add {br} address {mac} type bridge"));
        ip(&host, &format!("link set {br} up"));
        ip(&host, &format!("address add {v4} dev {br}"));
        ip(&host, &format!("address add {v6} dev {br} nodad"));
    }
    for p in &PORTS {
        let guest = lab.ns(p.ns);
        if !lab.made.contains(&guest) {
            lab.make(p.ns);
        }
        let eth = format!("eth{}", i32::from(p.iface == "vnet3"));
        ip(&host, &format!("link add {} type veth peer name {eth} netns {guest}", p.iface));
        ip(&host, &format!("link set {} master {} up", p.iface, p.bridge));
        ip(&guest, &format!("link set {eth} address {}", p.mac));
        ip(&guest, &format!("address add {}/24 dev {eth}", p.v4));
        ip(&guest, &format!("address add {}/64 dev {eth} nodad", p.v6));
        ip(&guest, &format!("link set {eth} up"));
        ip(&guest, "link set lo up");
    }
    // Real traffic fills the host's ARP and NDP tables and the bridges' FDB.
    let place = Place::enter(&host).unwrap();
    for p in &PORTS {
        reach(&place, p.v4);
        reach(&place, p.v6);
    }

    let libvirt = scratch.join("libvirt");
    let pve = scratch.join("pve");
    std::fs::create_dir_all(&libvirt).unwrap();
    std::fs::create_dir_all(pve.join("qemu-server")).unwrap();
    let write =
        |dir: &Path, name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
    write(
        &libvirt,
        "instance-0000002a.xml",
        domain("instance-0000002a", Some("app-1"), &[&PORTS[0]]),
    );
    write(&libvirt, "db-2.xml", domain("db-2", None, &[&PORTS[1]]));
    write(&libvirt, "lb-3.xml", domain("lb-3", None, &[&PORTS[2], &PORTS[3]]));
    write(
        &pve.join("qemu-server"),
        "104.conf",
        "boot: order=scsi0\ncores: 2\nname: web-104\nnet0: virtio=52:54:00:14:01:04,bridge=vmbr0\n"
            .into(),
    );
    let (lv, pv) = (libvirt.to_string_lossy().into_owned(), pve.to_string_lossy().into_owned());
    let dirs = ["--libvirt-dir", lv.as_str(), "--pve-dir", pv.as_str()];

    let rows = guests(&host, &dirs);
    for (p, name, source) in [
        (&PORTS[0], "app-1", "nova"),
        (&PORTS[1], "db-2", "libvirt"),
        (&PORTS[2], "lb-3", "libvirt"),
        (&PORTS[3], "lb-3", "libvirt"),
        (&PORTS[4], "web-104", "proxmox"),
    ] {
        let row = rows
            .iter()
            .find(|r| r["iface"] == p.iface && r["mac"] == p.mac)
            .unwrap_or_else(|| panic!("no row for {} with MAC {}: {rows:?}", p.iface, p.mac));
        assert_eq!(row["name"], name, "{row}");
        assert_eq!(row["source"], source, "{row}");
        assert_eq!(strings(&row["ipv4"]), [p.v4], "{row}");
        assert!(strings(&row["ipv6"]).contains(&p.v6.to_string()), "{row}");
    }
    let lb: Vec<&Value> = rows.iter().filter(|r| r["name"] == "lb-3").collect();
    assert_eq!(lb.len(), 2, "lb-3 shows both its interfaces: {lb:?}");

    // The runaway: most of a seeded table is web-104's ESTABLISHED flows.
    let seeded =
        table::seed_entries(&place, &scratch.join("seed.txt"), seed::entries_with_runaway(133_000))
            .unwrap();
    assert!(seeded > 133_000);
    let (code, out) = run(&host, &[&["top", "--json"][..], &dirs].concat());
    assert!(matches!(code, Some(0 | 1)), "top: {out}");
    let top: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(top["by"], "guest", "top groups by the guests it found: {top}");
    assert_eq!(top["groups"][0]["key"], "web-104", "{top}");
    assert!(top["groups"][0]["entries"].as_u64().unwrap() >= 133_000, "{top}");

    let (code, out) = run(&host, &[&["doctor", "--json"][..], &dirs].concat());
    let doctor: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(code, Some(1), "doctor finds trouble: {doctor}");
    assert_eq!(doctor["offenders"][0]["key"], "web-104", "{doctor}");
    let offender = doctor["actions"]["offender"].as_str().unwrap();
    assert!(
        offender.starts_with("web-104 (172.16.3.5, fd00:3::5") && offender.ends_with("tap104i0)"),
        "{offender}"
    );
    let argv = strings(&doctor["actions"]["evict_argv"]);
    assert!(argv.windows(2).any(|w| w == ["--guest", "web-104"]), "{argv:?}");
    drop(place);

    // db-2 migrates away: its port goes, and the next listing no longer names it.
    ip(&host, "link del vnet1");
    let rows = guests(&host, &dirs);
    assert!(rows.iter().all(|r| r["name"] != "db-2"), "{rows:?}");
    assert!(rows.iter().any(|r| r["name"] == "app-1"), "the others stay: {rows:?}");
}
