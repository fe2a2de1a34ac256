//! The guests found on this host as a guest map, so every command that names guests (`top`,
//! `count --by guest`, `evict --guest`, `watch`, `doctor`, the guard) speaks in the names of
//! [`ctguard guests`](super): one route netlink dump of links, neighbours and FDB, the
//! hypervisors' records, and the [precedence](super#precedence).
//!
//! A guest file's guests come first and keep their ids; a discovered guest interface whose
//! addresses the file names joins that guest (with its other addresses and its interface),
//! one the file does not name becomes a guest of its own, and interfaces with one name (a
//! guest with two interfaces) are one guest. An address the neighbour tables place behind two
//! differently named guests belongs to neither (a warning): a deletion by guest must not
//! follow a coin toss.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnetwork::IpNetwork;

use super::{Names, Source, Warning, libvirt, proxmox, resolve};
use crate::guests::GuestMap;
use crate::rtnl::{self, join::GuestIface};

/// Where the hypervisors keep their records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// libvirt's live domain XML.
    pub libvirt: PathBuf,
    /// Proxmox VE's configuration.
    pub pve: PathBuf,
}

impl Default for Dirs {
    fn default() -> Dirs {
        Dirs { libvirt: libvirt::DEFAULT_DIR.into(), pve: proxmox::DEFAULT_DIR.into() }
    }
}

/// The host's guests: `base` (a guest file's map, maybe empty) with the discovered guests.
#[derive(Debug, Clone, Default)]
pub struct Host {
    /// The guest map: the file's guests first, then the discovered ones.
    pub map: GuestMap,
    /// How many guest interfaces route netlink showed.
    pub interfaces: usize,
    /// Records skipped and addresses left unowned, for the operator.
    pub warnings: Vec<Warning>,
    /// The guests named by Nova's metadata, which the tenant chooses: a name to show and to
    /// type, never one to pick a policy by.
    pub tenant_named: Vec<String>,
}

/// Dumps route netlink in the current namespace (within `timeout`), reads the records in
/// `dirs`, and joins them onto `base`. An unreadable record is a warning; only route netlink
/// failing is an error.
pub fn discover(base: &GuestMap, dirs: &Dirs, timeout: Duration) -> Result<Host, rtnl::RtnlError> {
    let dumps = rtnl::dump(timeout)?;
    let rows = rtnl::join::guests(&dumps);
    let names = Names::discover(&dirs.libvirt, &dirs.pve);
    Ok(join(base, &rows, names))
}

/// [`discover`]'s join of guest interfaces `rows` and the records' `names` onto `base`.
pub fn join(base: &GuestMap, rows: &[GuestIface], names: Names) -> Host {
    let mut warnings = names.warnings.clone();
    let named: Vec<(String, Source, &GuestIface)> = rows
        .iter()
        .map(|row| {
            let mac = row.mac.map(|m| m.to_string());
            let n = resolve(
                Some(base),
                &row.addrs,
                &names,
                &row.iface,
                row.alias.as_deref(),
                mac.as_deref(),
            );
            // A name that reads as an address would make `--guest NAME` mean the address; one
            // ctguard gives a meaning of its own would be taken for it.
            let reserved = RESERVED.contains(&n.name.as_str());
            if n.source != Source::GuestsFile
                && (reserved || crate::select::parse_cidr(&n.name).is_ok())
            {
                let what = if reserved { "a name ctguard keeps" } else { "an address" };
                warnings.push(Warning {
                    path: PathBuf::from(&row.iface),
                    reason: format!("named '{}', {what}: named by its interface", n.name),
                });
                return (row.iface.clone(), Source::Interface, row);
            }
            (n.name, n.source, row)
        })
        .collect();
    let named = unshared(base, named, &mut warnings);
    let tenant_named: Vec<String> = {
        let mut v: Vec<String> = named
            .iter()
            .filter(|(_, s, _)| *s == Source::Nova)
            .map(|(n, _, _)| n.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let named: Vec<(String, &GuestIface)> = named.into_iter().map(|(n, _, r)| (n, r)).collect();
    // Address → the one name it is behind, or `None` once two names claim it.
    let mut owner: HashMap<IpAddr, Option<&str>> = HashMap::new();
    for (name, row) in &named {
        for addr in &row.addrs {
            owner
                .entry(*addr)
                .and_modify(|o| {
                    if *o != Some(name.as_str()) {
                        *o = None;
                    }
                })
                .or_insert(Some(name.as_str()));
        }
    }
    let mut ambiguous: Vec<IpAddr> =
        owner.iter().filter(|(_, o)| o.is_none()).map(|(a, _)| *a).collect();
    ambiguous.sort();
    for addr in &ambiguous {
        let behind: Vec<&str> = named
            .iter()
            .filter(|(_, r)| r.addrs.contains(addr))
            .map(|(_, r)| r.iface.as_str())
            .collect();
        warnings.push(Warning {
            path: PathBuf::from(behind.join(",")),
            reason: format!("{addr} is behind guests of two names: owned by neither"),
        });
    }
    let mut map = base.clone();
    for (name, row) in &named {
        let cidrs: Vec<IpNetwork> = row
            .addrs
            .iter()
            .filter(|a| base.lookup(**a).is_none() && owner.get(a).is_some_and(Option::is_some))
            .map(|a| IpNetwork::from(*a))
            .collect();
        map.add_seen(name, cidrs, std::slice::from_ref(&row.iface));
    }
    Host { map, interfaces: rows.len(), warnings, tenant_named }
}

/// Names ctguard gives a meaning of its own: the flows of no guest, every cap.
const RESERVED: &[&str] = &["(no guest)", "all"];

/// One name is one guest only when one kind of record gives it: a name both a record and an
/// alias give, or one the guest file's guest has while the file does not place these
/// interfaces' addresses, would join two guests, and one's relief would hit the other. Those
/// interfaces are named by themselves, each with a warning.
fn unshared<'r>(
    base: &GuestMap,
    named: Vec<(String, Source, &'r GuestIface)>,
    warnings: &mut Vec<Warning>,
) -> Vec<(String, Source, &'r GuestIface)> {
    let mut sources: HashMap<&str, Vec<Source>> = HashMap::new();
    for (name, source, _) in &named {
        let s = sources.entry(name.as_str()).or_default();
        if !s.contains(source) {
            s.push(*source);
        }
    }
    let clash = |name: &str, source: Source| -> Option<&'static str> {
        if source != Source::GuestsFile && base.find(name).is_some() {
            Some("the guest file's guest of that name does not own its addresses")
        } else if sources.get(name).is_some_and(|s| s.len() > 1) {
            Some("given by two kinds of record (two guests)")
        } else {
            None
        }
    };
    let out: Vec<_> = named
        .iter()
        .map(|(name, source, row)| match clash(name, *source) {
            Some(why) => {
                warnings.push(Warning {
                    path: PathBuf::from(&row.iface),
                    reason: format!(
                        "named '{}', {why}: named by its interface",
                        crate::guests::escaped(name)
                    ),
                });
                (row.iface.clone(), Source::Interface, *row)
            }
            None => (name.clone(), *source, *row),
        })
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::Named;
    use crate::rtnl::Mac;

    fn row(iface: &str, alias: Option<&str>, mac: u8, addrs: &[&str]) -> GuestIface {
        GuestIface {
            ifindex: u32::from(mac),
            iface: iface.into(),
            kind: Some("tun".into()),
            alias: alias.map(str::to_string),
            mac: Some(Mac([0x52, 0x54, 0, 0, 0, mac])),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn ip(a: &str) -> IpAddr {
        a.parse().unwrap()
    }

    #[test]
    fn issue_14_discovered_guests_own_their_addresses_and_one_name_is_one_guest() {
        let rows = [
            row("vnet0", Some("web-7"), 1, &["172.16.3.5", "fd00::5"]),
            row("vnet1", Some("web-7"), 2, &["172.16.4.5"]),
            row("vnet2", None, 3, &[]),
        ];
        let host = join(&GuestMap::new(), &rows, Names::new());
        let map = &host.map;
        let web = map.find("web-7").unwrap();
        assert_eq!(map.lookup(ip("172.16.4.5")), Some(web));
        assert_eq!(map.lookup(ip("fd00::5")), Some(web));
        assert_eq!(map.ifaces(web), ["vnet0", "vnet1"]);
        assert_eq!(map.detail(web), "web-7 (172.16.3.5, fd00::5, 172.16.4.5, vnet0, vnet1)");
        // A port with nothing learned behind it is a guest with no address.
        assert_eq!(map.find("vnet2").map(|g| map.cidrs(g).len()), Some(0));
        assert_eq!((host.interfaces, map.len()), (3, 2));
    }

    #[test]
    fn issue_14_a_guest_file_wins_for_its_addresses_and_keeps_its_ids() {
        let base = GuestMap::parse("db = \"172.16.3.0/24\"\n", "g.toml").unwrap();
        let rows = [
            row("vnet0", Some("web-7"), 1, &["172.16.3.5", "fd00::5"]),
            row("vnet1", Some("api"), 2, &["10.0.0.2"]),
        ];
        let host = join(&base, &rows, Names::new());
        let map = &host.map;
        let db = map.find("db").unwrap();
        assert_eq!(db, 0);
        assert_eq!(map.find("web-7"), None, "the file names 172.16.3.5: its guest is db");
        assert_eq!(map.lookup(ip("172.16.3.5")), Some(db));
        assert_eq!(map.lookup(ip("fd00::5")), Some(db), "the same MAC's other address");
        assert_eq!(map.detail(db), "db (172.16.3.0/24, fd00::5, vnet0)");
        assert_eq!(map.lookup(ip("10.0.0.2")), map.find("api"));
    }

    #[test]
    fn issue_14_an_address_behind_two_names_is_nobodys_and_a_warning() {
        let rows = [
            row("vnet0", Some("a"), 1, &["10.0.0.5", "10.0.0.6"]),
            row("vnet1", Some("b"), 2, &["10.0.0.5"]),
        ];
        let host = join(&GuestMap::new(), &rows, Names::new());
        assert_eq!(host.map.lookup(ip("10.0.0.5")), None);
        assert_eq!(host.map.lookup(ip("10.0.0.6")), host.map.find("a"));
        assert_eq!(host.warnings.len(), 1, "{:?}", host.warnings);
        assert!(host.warnings[0].to_string().contains("10.0.0.5"), "{}", host.warnings[0]);
        assert!(host.warnings[0].to_string().starts_with("vnet0,vnet1"), "{}", host.warnings[0]);
    }

    #[test]
    fn issue_14_a_name_two_kinds_of_record_give_or_the_files_is_no_one_guest() {
        let base = GuestMap::parse("infra = \"10.99.0.0/24\"\n", "g.toml").unwrap();
        let mut names = Names::new();
        let vm = Named { name: "infra".into(), source: Source::Libvirt };
        names.add(Some("vnet1"), None, &vm, std::path::Path::new("/run/libvirt/qemu/i.xml"));
        let dup = Named { name: "dup".into(), source: Source::Libvirt };
        names.add(Some("vnet2"), None, &dup, std::path::Path::new("/run/libvirt/qemu/d.xml"));
        let rows = [
            row("vnet1", None, 1, &["172.16.3.6"]),
            row("vnet0", Some("dup"), 2, &["172.16.3.5"]),
            row("vnet2", None, 3, &["172.16.3.7"]),
            row("vnet3", Some("(no guest)"), 4, &["172.16.3.8"]),
        ];
        let host = join(&base, &rows, names);
        let map = &host.map;
        // The VM calling itself infra is not the file's infra.
        assert_eq!(map.lookup(ip("172.16.3.6")), map.find("vnet1"));
        assert_eq!(map.cidrs(map.find("infra").unwrap()), ["10.99.0.0/24".parse().unwrap()]);
        // An alias and a domain both say dup: two guests, neither called dup.
        assert_eq!(map.find("dup"), None);
        assert_eq!(map.lookup(ip("172.16.3.5")), map.find("vnet0"));
        assert_eq!(map.lookup(ip("172.16.3.7")), map.find("vnet2"));
        assert_eq!(map.lookup(ip("172.16.3.8")), map.find("vnet3"), "(no guest) is ctguard's");
        assert_eq!(host.warnings.len(), 4, "{:?}", host.warnings);
    }

    #[test]
    fn issue_14_two_records_giving_one_name_are_two_guests() {
        let mut names = Names::new();
        let web = Named { name: "web".into(), source: Source::Nova };
        names.add(Some("vnet0"), None, &web, std::path::Path::new("/q/instance-1.xml"));
        names.add(Some("vnet9"), None, &web, std::path::Path::new("/q/instance-1.xml"));
        names.add(Some("vnet2"), None, &web, std::path::Path::new("/q/instance-2.xml"));
        let rows = [row("vnet0", None, 1, &["10.0.0.5"]), row("vnet2", None, 3, &["10.0.0.7"])];
        let host = join(&GuestMap::new(), &rows, names);
        assert_eq!(host.map.find("web"), None, "two tenants' web are two guests");
        assert_ne!(host.map.lookup(ip("10.0.0.5")), host.map.lookup(ip("10.0.0.7")));
        assert!(host.warnings.iter().any(|w| w.to_string().contains("instance-1.xml")));
        assert!(host.tenant_named.is_empty());
    }

    #[test]
    fn issue_14_an_alias_that_reads_as_an_address_names_nothing() {
        let rows = [row("vnet0", Some("10.0.0.9"), 1, &["10.0.0.5"])];
        let host = join(&GuestMap::new(), &rows, Names::new());
        assert_eq!(host.map.lookup(ip("10.0.0.5")), host.map.find("vnet0"));
        assert_eq!(host.map.find("10.0.0.9"), None);
        assert_eq!(host.warnings.len(), 1);
    }
}
