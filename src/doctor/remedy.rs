//! What doctor tells the operator to run: the `ctguard evict` line for the top offender, the
//! nftables cap that keeps it from re-taking the table, quoted for a POSIX shell.

use std::cmp::Reverse;
use std::fmt::Write as _;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::flow::TcpState;
use crate::guests::GuestMap;
use crate::tally::{COLUMNS, Counts, GroupKey, column_name};

/// The top offender's state to evict: its largest state column when that is a TCP state;
/// `None` when most of its entries are not TCP (evict then takes all its flows).
pub fn dominant_state(counts: &Counts) -> Option<TcpState> {
    let col = (0..COLUMNS)
        .filter(|c| counts.state(*c) > 0)
        .max_by_key(|c| (counts.state(*c), Reverse(column_name(*c))))?;
    // The first columns are the TCP states by number; past them, TCP_OTHER and NON_TCP.
    match TcpState::from_number(u8::try_from(col).ok()?) {
        TcpState::Other(_) => None,
        s => Some(s),
    }
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn shell_word(w: &str) -> String {
    let plain =
        !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain { w.to_string() } else { format!("'{}'", w.replace('\'', r"'\''")) }
}

/// A shell line of words.
pub fn shell_line(argv: &[String]) -> String {
    argv.iter().map(|w| shell_word(w)).collect::<Vec<_>>().join(" ")
}

/// The `ctguard evict` invocation for a guest (a name, with the flags that named it:
/// `--guests FILE`, the discovery flags; or an address).
pub fn evict_argv(
    netns: Option<&str>,
    guest_flags: &[String],
    key: &str,
    state: Option<&str>,
) -> Vec<String> {
    let mut a = vec!["ctguard".to_string()];
    if let Some(ns) = netns {
        a.extend(["--netns".into(), ns.into()]);
    }
    a.push("evict".into());
    a.extend(guest_flags.iter().cloned());
    a.extend(["--guest".into(), key.into()]);
    if let Some(s) = state {
        a.extend(["--state".into(), s.into()]);
    }
    a.push("--yes".into());
    a
}

/// The per-guest connection cap: a tenth of the table, in thousands (at least 1000), so
/// that no fewer than ten runaway guests can fill it.
pub fn cap_limit(max: u64) -> u64 {
    (max / 10 / 1000 * 1000).max(1000)
}

/// How to run a command inside the target namespace: `ip netns exec NAME` for a name,
/// `nsenter --net=PATH` for a path, nothing for the current namespace.
fn ns_prefix(netns: Option<&str>) -> String {
    match netns {
        None => String::new(),
        Some(ns) if ns.contains('/') => format!("nsenter --net={} ", shell_word(ns)),
        Some(ns) => format!("ip netns exec {} ", shell_word(ns)),
    }
}

fn addr_list(nets: &[&IpNetwork]) -> String {
    let items: Vec<String> = nets
        .iter()
        .map(|n| {
            let host = if n.is_ipv4() { 32 } else { 128 };
            if n.prefix() == host { n.ip().to_string() } else { n.to_string() }
        })
        .collect();
    if items.len() == 1 { items[0].clone() } else { format!("{{ {} }}", items.join(", ")) }
}

/// An nftables ruleset, as shell lines, that caps the connections these addresses open
/// through the host (`ct count`, nft_connlimit): a table and a forward chain of ctguard's
/// own, and one rule per family. Deleting entries alone does not stop a guest that keeps
/// connecting; the cap does. It counts connections opened after the rule is in place.
pub fn nft_cap(nets: &[IpNetwork], limit: u64, netns: Option<&str>) -> Option<String> {
    if nets.is_empty() {
        return None;
    }
    let nft = format!("{}nft", ns_prefix(netns));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# cap new connections from {} at {limit} live ones (counted from when the rule is added)",
        addr_list(&nets.iter().collect::<Vec<_>>())
    );
    let _ = writeln!(s, "{nft} add table inet ctguard");
    let _ = writeln!(
        s,
        "{nft} add chain inet ctguard forward '{{ type filter hook forward priority -1; policy accept; }}'"
    );
    for (family, v4) in [("ip", true), ("ip6", false)] {
        let of: Vec<&IpNetwork> = nets.iter().filter(|n| n.is_ipv4() == v4).collect();
        if of.is_empty() {
            continue;
        }
        let rule = format!(
            "{family} saddr {} ct state new ct count over {limit} counter reject",
            addr_list(&of)
        );
        let rule = if rule.contains('{') { format!("'{rule}'") } else { rule };
        let _ = writeln!(s, "{nft} add rule inet ctguard forward {rule}");
    }
    Some(s.trim_end().to_string())
}

/// The addresses a group stands for: the guest's CIDRs, the address or the network itself;
/// nothing for flows no guest owns or for groups that are not addresses.
pub fn key_networks(key: &GroupKey, guests: &GuestMap) -> Vec<IpNetwork> {
    match key {
        GroupKey::Guest(Some(id)) => guests.cidrs(*id).to_vec(),
        GroupKey::Addr(a) => vec![IpNetwork::from(*a)],
        GroupKey::Net(n) => vec![*n],
        _ => Vec::new(),
    }
}

/// What to run next.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actions {
    /// The top offender for a human: `web-7 (172.16.3.5, vnet3)` for a guest (its addresses
    /// and interfaces), else the group's label.
    #[serde(default)]
    pub offender: Option<String>,
    /// The evict command for the top offender, as a shell line.
    pub evict: Option<String>,
    /// The same as words.
    pub evict_argv: Option<Vec<String>>,
    /// nft commands that cap the offender's connections.
    pub cap: Option<String>,
    /// `key=value` sysctl changes `ctguard tune` recommends.
    pub tune: Vec<String>,
    /// The `ctguard tune --apply` line that writes them (`null` when `tune` is empty); outside
    /// the initial namespace it writes the per-namespace ones only.
    pub tune_command: Option<String>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::flow::{Flow, Proto};
    use crate::tally::{GroupBy, Tally, column_of};

    /// A tally of these groups, each holding `n` flows in each of its columns.
    pub(crate) fn tally_of(
        by: GroupBy,
        guests: &GuestMap,
        groups: &[(GroupKey, &[(usize, u64)])],
    ) -> Tally {
        let mut t = Tally::new(by, guests.clone());
        for (key, cols) in groups {
            for (col, n) in cols.iter() {
                for _ in 0..*n {
                    t.add_placed(*key, *col);
                }
            }
        }
        t
    }

    fn counts(cols: &[(usize, u64)]) -> Counts {
        let key = GroupKey::Zone(0);
        let t = tally_of(GroupBy::Zone, &GuestMap::new(), &[(key, cols)]);
        *t.ranked_counts(None)[0].1
    }

    pub(crate) const ESTABLISHED: usize = 3;
    pub(crate) const TIME_WAIT: usize = 7;
    pub(crate) fn non_tcp() -> usize {
        column_of(&Flow { proto: Proto::UDP, ..Flow::default() })
    }

    #[test]
    fn evict_command_names_the_offender_and_its_dominant_state() {
        let g = counts(&[(ESTABLISHED, 240_000), (TIME_WAIT, 10), (non_tcp(), 5)]);
        assert_eq!(dominant_state(&g).map(TcpState::name), Some("ESTABLISHED"));
        let argv = evict_argv(Some("guests"), &[], "172.16.3.5", Some("ESTABLISHED"));
        assert_eq!(
            argv,
            [
                "ctguard",
                "--netns",
                "guests",
                "evict",
                "--guest",
                "172.16.3.5",
                "--state",
                "ESTABLISHED",
                "--yes"
            ]
        );
        assert_eq!(
            shell_line(&argv),
            "ctguard --netns guests evict --guest 172.16.3.5 --state ESTABLISHED --yes"
        );
        let named = evict_argv(
            None,
            &["--guests".into(), "/etc/ctguard/my guests.toml".into()],
            "web01",
            None,
        );
        assert_eq!(
            shell_line(&named),
            "ctguard evict --guests '/etc/ctguard/my guests.toml' --guest web01 --yes"
        );
        assert_eq!(dominant_state(&counts(&[(non_tcp(), 9), (ESTABLISHED, 1)])), None);
        // A tie goes to the name first in order, as the states are listed.
        let tie = counts(&[(TIME_WAIT, 4), (ESTABLISHED, 4)]);
        assert_eq!(dominant_state(&tie), Some(TcpState::Established));
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }

    #[test]
    fn nft_cap_is_a_complete_ruleset_per_family() {
        let v4: Vec<IpNetwork> = vec!["172.16.3.5/32".parse().unwrap()];
        let cap = nft_cap(&v4, cap_limit(262_144), None).unwrap();
        let lines: Vec<&str> = cap.lines().collect();
        assert!(lines[0].starts_with("# cap new connections from 172.16.3.5 at 26000"));
        assert_eq!(lines[1], "nft add table inet ctguard");
        assert_eq!(
            lines[2],
            "nft add chain inet ctguard forward '{ type filter hook forward priority -1; policy accept; }'"
        );
        assert_eq!(
            lines[3],
            "nft add rule inet ctguard forward ip saddr 172.16.3.5 ct state new ct count over 26000 counter reject"
        );
        assert_eq!(lines.len(), 4);
        let both: Vec<IpNetwork> =
            vec!["172.16.3.0/24".parse().unwrap(), "fd00:2::5/128".parse().unwrap()];
        let cap = nft_cap(&both, 1000, Some("/proc/42/ns/net")).unwrap();
        assert!(cap.contains("nsenter --net=/proc/42/ns/net nft add rule inet ctguard forward ip saddr 172.16.3.0/24 "));
        assert!(cap.contains(
            "forward ip6 saddr fd00:2::5 ct state new ct count over 1000 counter reject"
        ));
        let two: Vec<IpNetwork> =
            vec!["fd00:2::5/128".parse().unwrap(), "fd00:3::/64".parse().unwrap()];
        let cap = nft_cap(&two, 1000, Some("lab")).unwrap();
        assert!(cap.contains("ip netns exec lab nft add rule inet ctguard forward 'ip6 saddr { fd00:2::5, fd00:3::/64 } ct state new"));
        assert!(!cap.contains(" ip saddr"));
        assert_eq!(nft_cap(&[], 1000, None), None);
        assert_eq!(cap_limit(262_144), 26_000);
        assert_eq!(cap_limit(4096), 1000);
    }

    #[test]
    fn issue_11_4_networks_come_from_the_group_key_not_its_label() {
        let mut guests = GuestMap::new();
        guests.add("10.0.0.1", vec!["172.16.3.0/24".parse().unwrap()]);
        let id = guests.find("10.0.0.1").unwrap();
        // A guest whose name reads as an address is still the guest: its CIDRs.
        let nets = key_networks(&GroupKey::Guest(Some(id)), &guests);
        assert_eq!(nets, ["172.16.3.0/24".parse::<IpNetwork>().unwrap()]);
        assert_eq!(key_networks(&GroupKey::Guest(None), &guests), []);
        let addr = GroupKey::Addr("fd00:2::5".parse().unwrap());
        assert_eq!(key_networks(&addr, &guests), ["fd00:2::5/128".parse::<IpNetwork>().unwrap()]);
        let net = GroupKey::Net("10.1.0.0/16".parse().unwrap());
        assert_eq!(key_networks(&net, &guests), ["10.1.0.0/16".parse::<IpNetwork>().unwrap()]);
        assert_eq!(key_networks(&GroupKey::Zone(3), &guests), []);
    }
}
