//! The join of the three route netlink dumps into guest interfaces: a guest interface is a
//! tap, veth or macvtap, the host side a hypervisor or a container runtime gives a guest,
//! bridged or routed. A physical uplink, a VLAN or a bond is not one, though it has
//! neighbours (the router behind `eth0` is no guest). A guest's addresses are the neighbours
//! whose MAC sits behind its interface: the entry is on the interface itself, or on its bridge
//! with the FDB saying the MAC was learned on this port.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use super::{Dumps, Link, Mac};

/// The kinds a hypervisor gives a guest's host side.
const GUEST_KINDS: [&str; 3] = ["tun", "veth", "macvtap"];

/// One guest seen behind one interface: a MAC and its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestIface {
    /// The host-side interface's index.
    pub ifindex: u32,
    /// The host-side interface's name.
    pub iface: String,
    /// Its `IFLA_INFO_KIND`, if any.
    pub kind: Option<String>,
    /// Its alias.
    pub alias: Option<String>,
    /// The guest's MAC; `None` for an interface with no neighbour learned behind it yet.
    pub mac: Option<Mac>,
    /// The guest's addresses, IPv4 then IPv6, each sorted.
    pub addrs: Vec<IpAddr>,
}

/// The guest interfaces of the dumps, by interface name then MAC: one row per MAC behind an
/// interface, or one row without a MAC for a guest-kind port nothing was learned behind.
pub fn guests(d: &Dumps) -> Vec<GuestIface> {
    let by_index: HashMap<u32, &Link> = d.links.iter().map(|l| (l.index, l)).collect();
    let masters: HashSet<u32> = d.links.iter().filter_map(|l| l.master).collect();
    let is_bridge = |i: u32| {
        by_index.get(&i).is_some_and(|l| l.kind.as_deref() == Some("bridge"))
            || masters.contains(&i)
    };
    // (bridge, MAC) → the port it was learned on.
    let learned: HashMap<(u32, Mac), u32> = d
        .fdb
        .iter()
        .filter(|e| !e.local)
        .filter_map(|e| {
            let bridge = e.bridge.or_else(|| by_index.get(&e.port).and_then(|l| l.master))?;
            Some(((bridge, e.mac), e.port))
        })
        .collect();
    // Interface → MAC → addresses.
    let mut behind: HashMap<u32, BTreeMap<Mac, Vec<IpAddr>>> = HashMap::new();
    for n in &d.neighbours {
        let Some(on) = by_index.get(&n.ifindex) else { continue };
        if on.loopback {
            continue;
        }
        let iface = if is_bridge(n.ifindex) {
            match learned.get(&(n.ifindex, n.mac)) {
                Some(port) => *port,
                None => continue,
            }
        } else {
            n.ifindex
        };
        behind.entry(iface).or_default().entry(n.mac).or_default().push(n.ip);
    }
    let mut rows = Vec::new();
    for link in &d.links {
        let guest_kind = link.kind.as_deref().is_some_and(|k| GUEST_KINDS.contains(&k));
        if link.loopback || is_bridge(link.index) || !guest_kind {
            continue;
        }
        let port_or_tap = link.master.is_some() || link.kind.as_deref() == Some("macvtap");
        let row = |mac, addrs| GuestIface {
            ifindex: link.index,
            iface: link.name.clone(),
            kind: link.kind.clone(),
            alias: link.alias.clone(),
            mac,
            addrs,
        };
        match behind.remove(&link.index) {
            Some(macs) => {
                for (mac, mut addrs) in macs {
                    addrs.sort_by_key(|a| (a.is_ipv6(), *a));
                    addrs.dedup();
                    rows.push(row(Some(mac), addrs));
                }
            }
            // A macvtap's own MAC is the guest's.
            None if port_or_tap => {
                let mac = if link.kind.as_deref() == Some("macvtap") { link.mac } else { None };
                rows.push(row(mac, Vec::new()));
            }
            None => {}
        }
    }
    rows.sort_by(|a, b| (&a.iface, a.mac).cmp(&(&b.iface, b.mac)));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtnl::{FdbEntry, Neighbour};

    fn link(index: u32, name: &str, kind: Option<&str>, master: Option<u32>) -> Link {
        Link {
            index,
            name: name.into(),
            kind: kind.map(str::to_string),
            master,
            alias: None,
            mac: Some(Mac([2, 0, 0, 0, 0, index as u8])),
            loopback: false,
        }
    }

    fn mac(last: u8) -> Mac {
        Mac([0x52, 0x54, 0, 0, 0, last])
    }

    fn neigh(ip: &str, m: Mac, ifindex: u32) -> Neighbour {
        Neighbour { ip: ip.parse().unwrap(), mac: m, ifindex }
    }

    fn fdb(m: Mac, port: u32, bridge: u32) -> FdbEntry {
        FdbEntry { mac: m, port, bridge: Some(bridge), local: false }
    }

    /// lo, eth0 (uplink with a router behind), br0 with vnet0 (tap), vnet1 (veth, alias) and
    /// vnet2 (tap, nothing learned), a routed veth outside any bridge.
    fn host() -> Dumps {
        let mut lo = link(1, "lo", None, None);
        lo.loopback = true;
        let mut vnet1 = link(5, "vnet1", Some("veth"), Some(3));
        vnet1.alias = Some("web-7".into());
        Dumps {
            links: vec![
                lo,
                link(2, "eth0", None, None),
                link(3, "br0", Some("bridge"), None),
                link(4, "vnet0", Some("tun"), Some(3)),
                vnet1,
                link(6, "vnet2", Some("tun"), Some(3)),
                link(7, "veth-r", Some("veth"), None),
            ],
            neighbours: vec![
                neigh("127.0.0.1", mac(99), 1),
                neigh("192.0.2.1", mac(1), 2),
                neigh("172.16.3.5", mac(10), 3),
                neigh("fe80::5054:ff:fe00:a", mac(10), 3),
                neigh("2001:db8::5", mac(10), 3),
                neigh("172.16.3.7", mac(11), 3),
                neigh("172.16.3.9", mac(12), 3), // on the bridge, not in the FDB: nobody's
                neigh("10.9.0.2", mac(20), 7),
            ],
            fdb: vec![
                fdb(mac(10), 4, 3),
                fdb(mac(11), 5, 3),
                FdbEntry { mac: Mac([2, 0, 0, 0, 0, 4]), port: 4, bridge: Some(3), local: true },
                FdbEntry {
                    mac: Mac([0x33, 0x33, 0, 0, 0, 1]),
                    port: 4,
                    bridge: Some(3),
                    local: false,
                },
            ],
        }
    }

    fn ips(row: &GuestIface) -> Vec<String> {
        row.addrs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn issue_14_bridge_neighbours_go_to_the_port_the_fdb_names() {
        let rows = guests(&host());
        let names: Vec<_> = rows.iter().map(|r| r.iface.as_str()).collect();
        // eth0, the uplink with the router behind it, is no guest interface.
        assert_eq!(names, ["veth-r", "vnet0", "vnet1", "vnet2"]);
        let vnet0 = &rows[1];
        assert_eq!(vnet0.mac, Some(mac(10)));
        assert_eq!(ips(vnet0), ["172.16.3.5", "2001:db8::5", "fe80::5054:ff:fe00:a"]);
        let vnet1 = &rows[2];
        assert_eq!((vnet1.mac, ips(vnet1)), (Some(mac(11)), vec!["172.16.3.7".to_string()]));
        assert_eq!(vnet1.alias.as_deref(), Some("web-7"));
        // A port nothing was learned behind is still a guest interface, without a MAC.
        assert_eq!((rows[3].mac, rows[3].addrs.len()), (None, 0));
        // No row holds the address on the bridge the FDB does not place, nor loopback's.
        assert!(rows.iter().all(|r| !ips(r).contains(&"172.16.3.9".to_string())));
        assert!(rows.iter().all(|r| r.iface != "lo" && r.iface != "br0"));
    }

    #[test]
    fn issue_14_a_link_outside_a_bridge_owns_its_own_neighbours() {
        let rows = guests(&host());
        let routed = rows.iter().find(|r| r.iface == "veth-r").unwrap();
        assert_eq!((routed.mac, ips(routed)), (Some(mac(20)), vec!["10.9.0.2".to_string()]));
    }

    #[test]
    fn issue_14_two_macs_behind_one_port_are_two_rows() {
        let mut d = host();
        d.neighbours.push(neigh("172.16.3.8", mac(13), 3));
        d.fdb.push(fdb(mac(13), 4, 3));
        let vnet0: Vec<_> = guests(&d).into_iter().filter(|r| r.iface == "vnet0").collect();
        assert_eq!(vnet0.len(), 2);
        assert_eq!(ips(&vnet0[1]), ["172.16.3.8"]);
    }

    #[test]
    fn issue_14_a_removed_interface_takes_its_guest_with_it() {
        let mut d = host();
        d.links.retain(|l| l.name != "vnet0");
        d.fdb.retain(|e| e.port != 4);
        assert!(guests(&d).iter().all(|r| r.iface != "vnet0" && r.mac != Some(mac(10))));
    }

    #[test]
    fn issue_14_a_macvtap_is_a_guest_with_its_own_mac() {
        let mut d = host();
        d.links.push(link(8, "macvtap0", Some("macvtap"), None));
        let row = guests(&d).into_iter().find(|r| r.iface == "macvtap0").unwrap();
        assert_eq!(row.mac, Some(Mac([2, 0, 0, 0, 0, 8])));
    }

    #[test]
    fn issue_14_mac_prints_like_ip_link() {
        assert_eq!(Mac([0x52, 0x54, 0, 0xab, 0xcd, 0xef]).to_string(), "52:54:00:ab:cd:ef");
        assert_eq!(Mac::from_slice(&[0; 6]), None);
        assert_eq!(Mac::from_slice(&[1, 2, 3, 4]), None);
    }
}
