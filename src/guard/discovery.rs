//! The guard's look at the host (`discover = true`): the guests found by route netlink and the
//! hypervisors' records ([`crate::discover::host`]), joined onto the guest file's, at start, at
//! each reload and every `discover_every`. What a look says is records for the journal and the
//! audit log; a look that fails keeps the guests of the last one that worked.
//!
//! The looking itself ([`look`]) blocks (it runs its own route netlink runtime) and is run on
//! a blocking thread; what follows from it ([`Discovery::take`]) is pure, so the records a
//! sequence of looks makes are tested without a kernel.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use super::config::Config;
use crate::discover::Names;
use crate::discover::host::{self, Dirs};
use crate::guests::{GuestId, GuestMap, escaped};
use crate::rtnl::{self, RtnlError, join::GuestIface};

/// What one look at the host saw, before it is joined onto a guest file.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The guest interfaces route netlink showed.
    pub rows: Vec<GuestIface>,
    /// What the hypervisors' records say.
    pub names: Names,
}

/// Looks at the host from the current namespace: one route netlink dump each of links,
/// neighbours and FDB (within `timeout`), and the records in `dirs`. Blocks.
pub fn look(dirs: &Dirs, timeout: Duration) -> Result<Seen, RtnlError> {
    let dumps = rtnl::dump(timeout)?;
    Ok(Seen { rows: rtnl::join::guests(&dumps), names: Names::discover(&dirs.libvirt, &dirs.pve) })
}

/// What the guard remembers between looks: the last look that worked (to join onto a guest
/// file reloaded while route netlink fails), the warnings and the failure last recorded (each
/// recorded once, not at every look), and the `[guest.NAME]` policies no guest holds.
#[derive(Debug, Default)]
pub struct Discovery {
    last: Option<Seen>,
    warned: BTreeSet<String>,
    failing: Option<String>,
    unmatched: BTreeSet<String>,
    untrusted: BTreeSet<String>,
}

impl Discovery {
    /// Nothing looked at yet.
    pub fn new() -> Discovery {
        Discovery::default()
    }

    /// Takes in a look's result: the guests it names, joined onto `file` (the guest file's
    /// map), the configuration in force (`cfg` without the `[guest.NAME]` policies a tenant
    /// could pick by naming its instance: `policy_untrusted`), and the records to write. A
    /// failed look (`discover_failed`) joins the last look that worked, or leaves `file` alone
    /// before any worked.
    pub fn take(
        &mut self,
        looked: Result<Seen, RtnlError>,
        file: &GuestMap,
        cfg: &Config,
    ) -> (GuestMap, Config, Vec<Value>) {
        let mut lines = Vec::new();
        match looked {
            Ok(seen) => {
                if self.failing.take().is_some() {
                    lines.push(json!({"event": "discover_recovered",
                        "detail": "the host's guests are looked at again"}));
                }
                self.last = Some(seen);
            }
            Err(e) => {
                let error = e.to_string();
                if self.failing.as_ref() != Some(&error) {
                    lines.push(json!({"event": "discover_failed", "error": error,
                    "detail": match self.last {
                        Some(_) => "the guests of the last look that worked stay",
                        None => "only the guest file's guests are named",
                    }}));
                }
                self.failing = Some(error);
            }
        }
        let found = match &self.last {
            Some(seen) => host::join(file, &seen.rows, seen.names.clone()),
            None => host::Host { map: file.clone(), ..host::Host::default() },
        };
        // A warning is written when it first appears; one that cleared and came back again.
        let warnings: BTreeSet<String> = found.warnings.iter().map(ToString::to_string).collect();
        for w in warnings.difference(&self.warned) {
            lines.push(json!({"event": "discover_warning", "warning": w}));
        }
        self.warned = warnings;
        let unmatched: BTreeSet<String> =
            cfg.per_guest.keys().filter(|n| found.map.find(n).is_none()).cloned().collect();
        for name in unmatched.difference(&self.unmatched) {
            lines.push(json!({"event": "policy_unmatched", "guest": escaped(name),
                "detail": "no guest of this name in the guest file or on the host: its \
                           [guest.NAME] policy waits for one"}));
        }
        self.unmatched = unmatched;
        let mut in_force = cfg.clone();
        let untrusted: BTreeSet<String> = found
            .tenant_named
            .iter()
            .filter(|n| in_force.per_guest.remove(*n).is_some())
            .cloned()
            .collect();
        for name in untrusted.difference(&self.untrusted) {
            lines.push(json!({"event": "policy_untrusted", "guest": escaped(name),
                "detail": "this guest is named by Nova's metadata, which its tenant chooses: \
                           the default policy applies, not [guest.NAME]; name it in the guest \
                           file for a policy of its own"}));
        }
        self.untrusted = untrusted;
        (found.map, in_force, lines)
    }
}

/// The record of a change of guests from `old` to `new`: who came, who went.
pub fn changed(old: &GuestMap, new: &GuestMap) -> Value {
    let names = |m: &GuestMap, other: &GuestMap| -> Vec<String> {
        (0..m.len() as GuestId)
            .filter(|&id| other.find(m.name(id)).is_none())
            .map(|id| m.detail(id))
            .collect()
    };
    json!({"event": "guests_changed", "guests": new.len(), "came": names(new, old),
        "went": names(old, new)})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::config;
    use crate::rtnl::Mac;

    fn row(iface: &str, alias: &str, mac: u8, addr: &str) -> GuestIface {
        GuestIface {
            ifindex: u32::from(mac),
            iface: iface.into(),
            kind: Some("tun".into()),
            alias: Some(alias.into()),
            mac: Some(Mac([0x52, 0x54, 0, 0, 0, mac])),
            addrs: vec![addr.parse().expect("addr")],
        }
    }

    fn seen(rows: Vec<GuestIface>) -> Result<Seen, RtnlError> {
        Ok(Seen { rows, names: Names::new() })
    }

    fn events(lines: &[Value]) -> Vec<&str> {
        lines.iter().map(|l| l["event"].as_str().unwrap_or("?")).collect()
    }

    fn failed() -> Result<Seen, RtnlError> {
        Err(RtnlError::Timeout(Duration::from_secs(5)))
    }

    #[test]
    fn issue_14_a_failed_look_keeps_the_last_guests_and_is_recorded_once() {
        let cfg = config::parse("discover = true\n[guest.web-7]\nquota = 5", "g.toml").unwrap();
        let file = GuestMap::parse("db = \"10.9.0.0/24\"\n", "guests.toml").unwrap();
        let mut d = Discovery::new();
        let (map, _, lines) = d.take(failed(), &file, &cfg);
        assert!(map.same_guests(&file), "before any look worked: the file's guests");
        assert_eq!(events(&lines), ["discover_failed", "policy_unmatched"]);
        assert_eq!(lines[1]["guest"], "web-7");
        let (_, _, lines) = d.take(failed(), &file, &cfg);
        assert!(lines.is_empty(), "the same failure again is not recorded again: {lines:?}");
        let (map, _, lines) = d.take(seen(vec![row("vnet0", "web-7", 1, "10.0.0.5")]), &file, &cfg);
        assert_eq!(events(&lines), ["discover_recovered"], "web-7 is found: its policy matches");
        assert_eq!(map.lookup("10.0.0.5".parse().unwrap()), map.find("web-7"));
        assert_eq!(map.find("db"), Some(0), "the file's guests keep their ids");
        // Route netlink fails again, and the guest file is reloaded meanwhile: the last look
        // that worked is joined onto the new file.
        let file2 = GuestMap::parse("db = \"10.9.0.0/24\"\napi = \"10.8.0.1\"\n", "g").unwrap();
        let (map, _, lines) = d.take(failed(), &file2, &cfg);
        assert_eq!(events(&lines), ["discover_failed"]);
        assert_eq!(lines[0]["detail"], "the guests of the last look that worked stay");
        assert!(map.find("web-7").is_some() && map.find("api").is_some());
    }

    #[test]
    fn issue_14_warnings_are_recorded_when_they_appear_not_at_every_look() {
        let cfg = config::parse("discover = true", "g.toml").unwrap();
        let file = GuestMap::new();
        let mut d = Discovery::new();
        // Two names claim 10.0.0.5: a warning naming both interfaces.
        let clash =
            || seen(vec![row("vnet0", "a", 1, "10.0.0.5"), row("vnet1", "b", 2, "10.0.0.5")]);
        let (_, _, lines) = d.take(clash(), &file, &cfg);
        assert_eq!(events(&lines), ["discover_warning"]);
        assert!(lines[0]["warning"].as_str().unwrap().contains("10.0.0.5"), "{lines:?}");
        assert!(d.take(clash(), &file, &cfg).2.is_empty(), "not repeated");
        assert!(d.take(seen(vec![]), &file, &cfg).2.is_empty(), "cleared: nothing to say");
        assert_eq!(events(&d.take(clash(), &file, &cfg).2), ["discover_warning"], "came back");
    }

    #[test]
    fn issue_14_a_tenant_cannot_pick_a_policy_by_naming_its_instance() {
        let cfg = config::parse("discover = true\n[guest.vip]\nquota = 1000000", "g.toml").unwrap();
        let mut names = Names::new();
        let vip =
            crate::discover::Named { name: "vip".into(), source: crate::discover::Source::Nova };
        names.add(Some("vnet0"), None, &vip, std::path::Path::new("/q/instance-1.xml"));
        let look = || {
            let mut r = row("vnet0", "x", 1, "10.0.0.5");
            r.alias = None;
            Ok(Seen { rows: vec![r], names: names.clone() })
        };
        let mut d = Discovery::new();
        let (map, in_force, lines) = d.take(look(), &GuestMap::new(), &cfg);
        assert!(map.find("vip").is_some(), "still named vip, for the operator");
        assert!(in_force.per_guest.is_empty(), "but [guest.vip] does not apply");
        assert_eq!(events(&lines), ["policy_untrusted"]);
        assert!(d.take(look(), &GuestMap::new(), &cfg).2.is_empty(), "said once");
    }

    #[test]
    fn issue_14_a_change_of_guests_names_who_came_and_who_went() {
        let cfg = config::parse("discover = true", "g.toml").unwrap();
        let mut d = Discovery::new();
        let file = GuestMap::new();
        let (old, _, _) = d.take(seen(vec![row("vnet0", "web-7", 1, "10.0.0.5")]), &file, &cfg);
        let (new, _, _) = d.take(seen(vec![row("vnet3", "db-2", 3, "10.0.0.7")]), &file, &cfg);
        assert!(!old.same_guests(&new));
        let line = changed(&old, &new);
        assert_eq!(line["came"], json!(["db-2 (10.0.0.7, vnet3)"]));
        assert_eq!(line["went"], json!(["web-7 (10.0.0.5, vnet0)"]));
        assert_eq!(line["guests"], 1);
    }
}
