//! From a row of the view to what acting on it means: the selector of exactly the group's
//! flows (the watch's own selection, narrowed to the group), the networks a cap on it covers,
//! and the `ctguard evict` command line that does the same as `e` then `y`.
//!
//! A group is narrowed by what it was keyed on, never by `--guest` for an address: `--guest
//! ADDR` takes a flow whose any address is ADDR, a `src` group only those from it.

use std::sync::Arc;

use ctguard::doctor::remedy::shell_line;
use ctguard::flow::ProtoState;
use ctguard::guests::GuestMap;
use ctguard::select::{self, GuestFilter, Selector};
use ctguard::tally::GroupBy;
use ipnetwork::IpNetwork;

/// The label `top` gives flows of no guest.
const NO_GUEST: &str = "(no guest)";

/// Why a group cannot be acted on, in words for the view.
pub type Refusal = String;

/// The CIDRs of `base` (any of them matches) that also lie in `key`; `key` alone when `base`
/// is empty. A group's flows all matched `base`, so this narrows and never widens.
fn within(base: &[IpNetwork], key: IpNetwork) -> Vec<IpNetwork> {
    if base.is_empty() {
        return vec![key];
    }
    let contains = |a: &IpNetwork, b: &IpNetwork| {
        a.is_ipv4() == b.is_ipv4() && a.prefix() <= b.prefix() && a.contains(b.network())
    };
    base.iter()
        .filter_map(|b| {
            if contains(&key, b) {
                Some(*b)
            } else if contains(b, &key) {
                Some(key)
            } else {
                None
            }
        })
        .collect()
}

fn net(key: &str) -> Result<IpNetwork, Refusal> {
    select::parse_cidr(key).map_err(|e| format!("group '{key}': {e}"))
}

/// The flows of the group `key` under grouping `by`: `base` narrowed to it.
pub fn selector(
    base: &Selector,
    by: GroupBy,
    key: &str,
    guests: &Arc<GuestMap>,
) -> Result<Selector, Refusal> {
    let mut sel = base.clone();
    match by {
        GroupBy::All => {}
        GroupBy::Guest => {
            if key == NO_GUEST {
                return Err("flows of no guest are nobody's to act on: group by src".into());
            }
            let id = guests.find(key).ok_or_else(|| format!("no guest '{key}' in the map"))?;
            // Guests by name narrow to one of them; `--guest CIDR` is another filter, which
            // one guest filter cannot hold beside the group's.
            if let Some(g) = &base.guests {
                if !g.cidrs.is_empty() {
                    return Err("the watch's --guest CIDR and a guest's group do not combine: \
                                group by src"
                        .into());
                }
                if !g.ids.is_empty() && !g.ids.contains(&id) {
                    return Err(format!("'{key}' is outside the watch's --guest"));
                }
            }
            sel.guests =
                Some(GuestFilter { map: Arc::clone(guests), ids: vec![id], cidrs: vec![] });
        }
        GroupBy::Src | GroupBy::SrcNet(..) => sel.src = within(&base.src, net(key)?),
        GroupBy::Dst | GroupBy::DstNet(..) => sel.dst = within(&base.dst, net(key)?),
        GroupBy::State => {
            let states = select::parse_states(key).map_err(|e| format!("group '{key}': {e}"))?;
            sel.states = states;
        }
        GroupBy::Proto => {
            sel.protos = vec![select::parse_proto(key).map_err(|e| format!("group '{key}': {e}"))?];
        }
        GroupBy::Zone => {
            let zone = key.parse().map_err(|_| format!("group '{key}': not a zone"))?;
            sel.zone = Some(zone);
        }
        GroupBy::Mark => {
            let mark = key.parse().map_err(|_| format!("group '{key}': not a mark"))?;
            sel.mark = Some((mark, u32::MAX));
        }
        other => return Err(format!("groups by {} cannot be acted on here", other.name())),
    }
    if sel.src.is_empty() && !base.src.is_empty() || sel.dst.is_empty() && !base.dst.is_empty() {
        return Err(format!("group '{key}' is outside the watch's selection"));
    }
    Ok(sel)
}

/// `sel` restricted to `states` (the preview's choice), for the eviction.
pub fn with_states(mut sel: Selector, states: &[ProtoState]) -> Selector {
    sel.states = states.to_vec();
    sel
}

/// The networks a cap on the group covers (source addresses only: a cap counts what a guest
/// opens), within the watch's `--src` when it has one, or why there are none.
pub fn cap_nets(
    base: &Selector,
    by: GroupBy,
    key: &str,
    guests: &GuestMap,
) -> Result<Vec<IpNetwork>, Refusal> {
    let nets = match by {
        GroupBy::Guest if key == NO_GUEST => return Err("flows of no guest: nobody to cap".into()),
        GroupBy::Guest => {
            let id = guests.find(key).ok_or_else(|| format!("no guest '{key}' in the map"))?;
            guests.cidrs(id).to_vec()
        }
        GroupBy::Src | GroupBy::SrcNet(..) => vec![net(key)?],
        other => {
            return Err(format!(
                "a cap needs source addresses: group by guest, src or src/N, not {}",
                other.name()
            ));
        }
    };
    let mut nets: Vec<IpNetwork> = nets.into_iter().flat_map(|n| within(&base.src, n)).collect();
    nets.dedup();
    if nets.is_empty() {
        return Err(format!("'{key}' has no address to cap within the watch's selection"));
    }
    Ok(nets)
}

/// What the watch was started with, for the command lines it shows.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// `--netns NS`, when given.
    pub netns: Option<String>,
    /// The watch's selection flags (its `--guests FILE`, discovery flags, `--src`, ...), as
    /// given, to repeat before the group's own.
    pub select: Vec<String>,
    /// The watch's `--src` and `--dst`: a group's address is narrowed to them.
    pub src: Vec<IpNetwork>,
    pub dst: Vec<IpNetwork>,
}

/// The flags (all their spellings) a group of `by` says for itself: the watch's own of that
/// kind are dropped from the command line, since a repeated one means "any of them".
fn own_flags(by: GroupBy) -> &'static [&'static str] {
    match by {
        GroupBy::Guest => &["--guest"],
        GroupBy::Src | GroupBy::SrcNet(..) => &["-s", "--src", "--orig-src"],
        GroupBy::Dst | GroupBy::DstNet(..) => &["-d", "--dst", "--orig-dst"],
        GroupBy::Proto => &["-p", "--proto"],
        GroupBy::Zone => &["--zone"],
        GroupBy::Mark => &["-m", "--mark"],
        _ => &[],
    }
}

/// `args` without the flags named in `drop` and their values (`--flag V`, `--flag=V`).
fn without(args: &[String], drop: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(w) = it.next() {
        let (name, inline) = w.split_once('=').map_or((w.as_str(), false), |(n, _)| (n, true));
        if drop.contains(&name) {
            if !inline {
                it.next();
            }
        } else {
            out.push(w.clone());
        }
    }
    out
}

/// The `ctguard evict` command line that deletes what `e` with `states` then `y` deletes: the
/// watch's selection with the group's own flags in place of the watch's of the same kind, the
/// group's addresses narrowed to the watch's as the eviction's selector narrows them.
pub fn evict_command(o: &Origin, by: GroupBy, key: &str, states: &[ProtoState]) -> String {
    if states.is_empty() {
        return "(no state chosen: nothing would be evicted)".into();
    }
    let mut a = vec!["ctguard".to_string()];
    if let Some(ns) = &o.netns {
        a.extend(["--netns".into(), ns.clone()]);
    }
    a.push("evict".into());
    let mut drop = own_flags(by).to_vec();
    drop.push("--state");
    a.extend(without(&o.select, &drop));
    let nets = |base: &[IpNetwork]| -> Vec<String> {
        match net(key) {
            Ok(n) => within(base, n).iter().map(ToString::to_string).collect(),
            Err(_) => vec![key.to_string()],
        }
    };
    let values = match by {
        GroupBy::Src | GroupBy::SrcNet(..) => nets(&o.src),
        GroupBy::Dst | GroupBy::DstNet(..) => nets(&o.dst),
        GroupBy::Guest | GroupBy::Proto | GroupBy::Zone | GroupBy::Mark => vec![key.to_string()],
        _ => Vec::new(),
    };
    if let Some(flag) = own_flags(by).iter().find(|f| f.starts_with("--")) {
        for v in values {
            a.extend([flag.to_string(), v]);
        }
    }
    let mut names: Vec<&str> = states.iter().map(|s| s.name()).collect();
    names.dedup();
    a.extend(["--state".into(), names.join(",")]);
    a.push("--yes".into());
    shell_line(&a)
}

/// A flag of `watch` that `evict` does not take: its spellings (`--limit`, `-n`, aliases) and
/// whether a value follows it as the next word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnFlag {
    /// `--limit`, `-n`, ...
    pub names: Vec<String>,
    /// A value follows (`--limit 5`), unless given as `--limit=5`.
    pub valued: bool,
}

/// Drops `own` (the flags of `watch` that are no selection: watch's alone) from its arguments
/// (those after `watch`), leaving what `evict` takes too.
pub fn selection_flags(after_watch: &[String], own: &[OwnFlag]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = after_watch.iter();
    while let Some(w) = it.next() {
        let name = w.split_once('=').map_or(w.as_str(), |(n, _)| n);
        match own.iter().find(|f| f.names.iter().any(|n| n == name)) {
            Some(flag) if flag.valued && !w.contains('=') => {
                it.next();
            }
            Some(_) => {}
            None => out.push(w.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctguard::flow::TcpState;

    fn map() -> Arc<GuestMap> {
        Arc::new(GuestMap::parse("web-7 = [\"172.16.3.5\", \"fd00::5\"]\n", "g.toml").unwrap())
    }

    fn cidr(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn issue_15_a_group_narrows_the_watch_selection_and_never_widens_it() {
        let base = Selector { src: vec![cidr("10.0.0.5/32")], ..Selector::default() };
        // Grouped by src/24 under --src 10.0.0.5: the group 10.0.0.0/24 is still 10.0.0.5.
        let sel = selector(&base, GroupBy::SrcNet(24, 64), "10.0.0.0/24", &map()).unwrap();
        assert_eq!(sel.src, vec![cidr("10.0.0.5/32")]);
        let all = selector(&Selector::default(), GroupBy::SrcNet(24, 64), "10.0.0.0/24", &map());
        assert_eq!(all.unwrap().src, vec![cidr("10.0.0.0/24")]);
        assert!(selector(&base, GroupBy::Src, "10.0.0.6", &map()).is_err(), "outside --src");
        let g = selector(&Selector::default(), GroupBy::Guest, "web-7", &map()).unwrap();
        assert_eq!(g.guests.map(|f| f.ids), Some(vec![0]));
        assert!(selector(&Selector::default(), GroupBy::Guest, "(no guest)", &map()).is_err());
        let st = selector(&Selector::default(), GroupBy::State, "TIME_WAIT", &map()).unwrap();
        assert_eq!(st.states, vec![ProtoState::Tcp(TcpState::TimeWait)]);
        assert!(selector(&Selector::default(), GroupBy::Helper, "ftp", &map()).is_err());
    }

    #[test]
    fn issue_15_caps_cover_source_addresses_only() {
        let m = map();
        let all = Selector::default();
        assert_eq!(cap_nets(&all, GroupBy::Guest, "web-7", &m).unwrap().len(), 2);
        // Under --src 10.0.0.5, a src/24 group's cap is 10.0.0.5's, not the /24's.
        let narrow = Selector { src: vec![cidr("10.0.0.5/32")], ..Selector::default() };
        let nets = cap_nets(&narrow, GroupBy::SrcNet(24, 64), "10.0.0.0/24", &m).unwrap();
        assert_eq!(nets, vec![cidr("10.0.0.5/32")]);
        assert_eq!(
            cap_nets(&all, GroupBy::SrcNet(24, 64), "10.0.0.0/24", &m).unwrap(),
            vec![cidr("10.0.0.0/24")]
        );
        let e = cap_nets(&all, GroupBy::Dst, "10.0.0.1", &m).unwrap_err();
        assert!(e.contains("source addresses"), "{e}");
    }

    #[test]
    fn issue_15_the_shown_command_is_the_selection_the_group_and_the_states() {
        let o = Origin {
            netns: Some("guests".into()),
            select: selection_flags(
                &[
                    "--guests".into(),
                    "/etc/ctguard/guests.toml".into(),
                    "--interval".into(),
                    "2s".into(),
                    "--json".into(),
                    "--by=src".into(),
                ],
                &[
                    OwnFlag { names: vec!["--interval".into()], valued: true },
                    OwnFlag { names: vec!["--json".into()], valued: false },
                    OwnFlag { names: vec!["--by".into()], valued: true },
                ],
            ),
            ..Origin::default()
        };
        let est = [ProtoState::Tcp(TcpState::Established), ProtoState::Tcp(TcpState::TimeWait)];
        assert_eq!(
            evict_command(&o, GroupBy::Guest, "web 7", &est),
            "ctguard --netns guests evict --guests /etc/ctguard/guests.toml --guest 'web 7' \
             --state ESTABLISHED,TIME_WAIT --yes"
        );
        assert_eq!(
            evict_command(&Origin::default(), GroupBy::Src, "172.16.3.5", &est[..1]),
            "ctguard evict --src 172.16.3.5/32 --state ESTABLISHED --yes"
        );
        // The watch's own --src and --guest are the group's, narrowed: never "any of them".
        let o = Origin {
            select: vec!["--src".into(), "10.0.0.5".into(), "--state=ESTABLISHED".into()],
            src: vec![cidr("10.0.0.5/32")],
            ..Origin::default()
        };
        assert_eq!(
            evict_command(&o, GroupBy::SrcNet(24, 64), "10.0.0.0/24", &est[..1]),
            "ctguard evict --src 10.0.0.5/32 --state ESTABLISHED --yes"
        );
        let o = Origin {
            select: vec!["--guest".into(), "runaway".into(), "--guest=calm".into()],
            ..Origin::default()
        };
        assert_eq!(
            evict_command(&o, GroupBy::Guest, "calm", &est[..1]),
            "ctguard evict --guest calm --state ESTABLISHED --yes"
        );
        assert!(evict_command(&o, GroupBy::Guest, "calm", &[]).contains("no state chosen"));
    }
}
