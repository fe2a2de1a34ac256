//! Group-by counting over flows, pure: one row per group, a column per TCP state.
//!
//! Memory grows with the number of groups, never with the number of flows: grouping the
//! incident's 258,540 entries by guest or source keeps a few hundred rows. A group costs its
//! key (20 bytes, `Copy`, no heap) and its [`Counts`], u32 columns (52 bytes), in one hash map,
//! about 80 to 170 bytes with the map's slack ([`Tally::heap_bytes`]); `top -n N` ranks with a
//! heap of N groups, not a sorted copy of all.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::flow::{Flow, HelperName, Proto, ProtoState, TcpState};
use std::sync::Arc;

use crate::guests::{GuestId, GuestMap};

/// What to group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// Everything in one group.
    All,
    /// The owning guest (needs a guest map).
    Guest,
    /// Original source address.
    Src,
    /// Original destination address.
    Dst,
    /// Original source network: IPv4 prefix, IPv6 prefix.
    SrcNet(u8, u8),
    /// Original destination network: IPv4 prefix, IPv6 prefix.
    DstNet(u8, u8),
    /// Protocol state (the protocol's name for stateless protocols).
    State,
    /// Protocol.
    Proto,
    /// Zone.
    Zone,
    /// Mark.
    Mark,
    /// Helper (`ftp`, `sip`, ...; flows without one are one group).
    Helper,
}

/// A `--by` key that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ByError {
    /// Not one of the keys.
    #[error("invalid --by '{0}' (guest, src, dst, src/N, dst/N, state, proto, zone, mark, helper)")]
    Unknown(String),
    /// A prefix longer than the address (`src/33`).
    #[error("invalid --by '{0}': prefix too long")]
    PrefixTooLong(String),
}

impl GroupBy {
    /// Parses `guest`, `src`, `dst`, `src/N`, `src/N,M` (IPv4 /N, IPv6 /M; M defaults to 64),
    /// `dst/N`, `state`, `proto`, `zone`, `mark`, `helper`.
    pub fn parse(s: &str) -> Result<GroupBy, ByError> {
        let bad = || ByError::Unknown(s.into());
        let lower = s.to_ascii_lowercase();
        if let Some((what, prefix)) = lower.split_once('/') {
            let (v4, v6) = match prefix.split_once(',') {
                Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
                None => (prefix.parse().map_err(|_| bad())?, 64),
            };
            if v4 > 32 || v6 > 128 {
                return Err(ByError::PrefixTooLong(s.into()));
            }
            return match what {
                "src" => Ok(GroupBy::SrcNet(v4, v6)),
                "dst" => Ok(GroupBy::DstNet(v4, v6)),
                _ => Err(bad()),
            };
        }
        Ok(match lower.as_str() {
            "guest" => GroupBy::Guest,
            "src" => GroupBy::Src,
            "dst" => GroupBy::Dst,
            "state" => GroupBy::State,
            "proto" => GroupBy::Proto,
            "zone" => GroupBy::Zone,
            "mark" => GroupBy::Mark,
            "helper" => GroupBy::Helper,
            _ => return Err(bad()),
        })
    }

    /// The name used in headers and JSON.
    pub fn name(self) -> String {
        match self {
            GroupBy::All => "all".into(),
            GroupBy::Guest => "guest".into(),
            GroupBy::Src => "src".into(),
            GroupBy::Dst => "dst".into(),
            GroupBy::SrcNet(a, b) => format!("src/{a},{b}"),
            GroupBy::DstNet(a, b) => format!("dst/{a},{b}"),
            GroupBy::State => "state".into(),
            GroupBy::Proto => "proto".into(),
            GroupBy::Zone => "zone".into(),
            GroupBy::Mark => "mark".into(),
            GroupBy::Helper => "helper".into(),
        }
    }
}

/// A group's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupKey {
    /// The single group of [`GroupBy::All`].
    All,
    /// A guest, or flows no guest owns.
    Guest(Option<GuestId>),
    /// An address.
    Addr(IpAddr),
    /// A network.
    Net(IpNetwork),
    /// A state; stateless protocols are keyed by protocol.
    State(Option<ProtoState>, Proto),
    /// A protocol.
    Proto(Proto),
    /// A zone.
    Zone(u16),
    /// A mark.
    Mark(u32),
    /// A helper, or none.
    Helper(Option<HelperName>),
    /// A state column ([`column_of`]) as a whole: what a count kept by column, not by flow,
    /// can group by (the guard's `--by state` answer, where non-TCP flows are one `NON_TCP`).
    Column(u8),
}

/// Per-state columns: the ten TCP states by number, then other TCP values, then non-TCP.
pub const COLUMNS: usize = 12;
const COL_TCP_OTHER: usize = 10;
const COL_NOT_TCP: usize = 11;

/// The column a flow is counted in.
pub fn column_of(flow: &Flow) -> usize {
    match flow.tcp_state() {
        Some(TcpState::Other(_)) => COL_TCP_OTHER,
        Some(s) => s.number() as usize,
        None => COL_NOT_TCP,
    }
}

/// A column's heading.
pub fn column_name(col: usize) -> &'static str {
    match col {
        COL_TCP_OTHER => "TCP_OTHER",
        COL_NOT_TCP => "NON_TCP",
        n => TcpState::from_number(n as u8).name(),
    }
}

/// Counts of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Row {
    /// Flows in the group.
    pub total: u64,
    /// Flows per column (see [`column_of`]).
    pub by_state: [u64; COLUMNS],
}

impl Row {
    fn add(&mut self, col: usize) {
        self.total += 1;
        self.by_state[col] += 1;
    }

    fn remove(&mut self, col: usize) {
        self.total = self.total.saturating_sub(1);
        self.by_state[col] = self.by_state[col].saturating_sub(1);
    }
}

/// A group's counts as the tally keeps them: u32 columns (a namespace's table holds fewer
/// than 2^32 entries: `nf_conntrack_max` and the count are u32), 52 bytes where a [`Row`]
/// takes 104.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    total: u32,
    by_state: [u32; COLUMNS],
}

impl Counts {
    /// Flows in the group.
    pub fn total(&self) -> u64 {
        u64::from(self.total)
    }

    /// Flows in a state column (see [`column_of`]).
    pub fn state(&self, col: usize) -> u64 {
        self.by_state.get(col).copied().map_or(0, u64::from)
    }

    /// As a [`Row`].
    pub fn row(&self) -> Row {
        Row { total: u64::from(self.total), by_state: self.by_state.map(u64::from) }
    }

    fn add(&mut self, col: usize) {
        self.total = self.total.saturating_add(1);
        self.by_state[col] = self.by_state[col].saturating_add(1);
    }

    fn remove(&mut self, col: usize) {
        self.total = self.total.saturating_sub(1);
        self.by_state[col] = self.by_state[col].saturating_sub(1);
    }

    fn add_n(&mut self, col: usize, n: u64) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.total = self.total.saturating_add(n);
        self.by_state[col] = self.by_state[col].saturating_add(n);
    }
}

/// A group being ranked, ordered best first: more flows, then the smaller key (the order
/// [`Tally::sorted`] lists them in). In a (max-)heap the top is the worst, the one to evict.
struct Ranked<'a>(&'a GroupKey, &'a Counts);

impl PartialEq for Ranked<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked<'_> {}

impl PartialOrd for Ranked<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        other.1.total.cmp(&self.1.total).then(self.0.cmp(other.0))
    }
}

/// Group-by counts.
#[derive(Debug, Clone)]
pub struct Tally {
    by: GroupBy,
    guests: Arc<GuestMap>,
    groups: HashMap<GroupKey, Counts>,
    total: Row,
}

fn net(addr: IpAddr, v4: u8, v6: u8) -> IpNetwork {
    let prefix = if addr.is_ipv4() { v4 } else { v6 };
    // The prefixes were range-checked by `GroupBy::parse`; keep the host if one is not.
    IpNetwork::new(addr, prefix)
        .and_then(|n| IpNetwork::new(n.network(), prefix))
        .unwrap_or_else(|_| IpNetwork::from(addr))
}

impl Tally {
    /// An empty tally; `guests` decides ownership for [`GroupBy::Guest`] (shared, not copied:
    /// a live engine's classifier and each dump's table hold the same map).
    pub fn new(by: GroupBy, guests: impl Into<Arc<GuestMap>>) -> Tally {
        Tally { by, guests: guests.into(), groups: HashMap::new(), total: Row::default() }
    }

    /// How this tally groups.
    pub fn by(&self) -> GroupBy {
        self.by
    }

    /// The group a flow falls in.
    pub fn key_of(&self, flow: &Flow) -> GroupKey {
        match self.by {
            GroupBy::All => GroupKey::All,
            GroupBy::Guest => GroupKey::Guest(self.guests.owner(flow)),
            GroupBy::Src => GroupKey::Addr(flow.orig.src),
            GroupBy::Dst => GroupKey::Addr(flow.orig.dst),
            GroupBy::SrcNet(a, b) => GroupKey::Net(net(flow.orig.src, a, b)),
            GroupBy::DstNet(a, b) => GroupKey::Net(net(flow.orig.dst, a, b)),
            GroupBy::State => GroupKey::State(flow.state, flow.proto),
            GroupBy::Proto => GroupKey::Proto(flow.proto),
            GroupBy::Zone => GroupKey::Zone(flow.zone_id()),
            GroupBy::Mark => GroupKey::Mark(flow.mark.unwrap_or(0)),
            GroupBy::Helper => GroupKey::Helper(flow.helper),
        }
    }

    /// Counts one flow.
    pub fn add(&mut self, flow: &Flow) {
        let col = column_of(flow);
        let key = self.key_of(flow);
        self.groups.entry(key).or_default().add(col);
        self.total.add(col);
    }

    /// Counts one flow whose group and column are already known (the live table keeps them
    /// per flow, so a DESTROY can uncount what NEW counted).
    pub fn add_placed(&mut self, key: GroupKey, col: usize) {
        self.groups.entry(key).or_default().add(col);
        self.total.add(col);
    }

    /// Counts `n` flows of one group and column at once: counts another tally made (the
    /// guard's answer to `top --live`). A column out of range counts nothing.
    pub fn add_count(&mut self, key: GroupKey, col: usize, n: u64) {
        if col >= COLUMNS || n == 0 {
            return;
        }
        self.groups.entry(key).or_default().add_n(col, n);
        self.total.total = self.total.total.saturating_add(n);
        self.total.by_state[col] = self.total.by_state[col].saturating_add(n);
    }

    /// Uncounts a flow counted with [`Tally::add_placed`]; a group left empty disappears, and
    /// then this returns true.
    pub fn remove_placed(&mut self, key: &GroupKey, col: usize) -> bool {
        let Some(row) = self.groups.get_mut(key) else { return false };
        row.remove(col);
        self.total.remove(col);
        if row.total == 0 {
            self.groups.remove(key);
            return true;
        }
        false
    }

    /// Forgets every count (a dump is being restarted).
    pub fn clear(&mut self) {
        self.groups.clear();
        self.total = Row::default();
    }

    /// All flows counted.
    pub fn total(&self) -> Row {
        self.total
    }

    /// How many groups hold flows.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// True when no flow is counted.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Groups, largest first (ties by key, so output is stable).
    pub fn sorted(&self) -> Vec<(GroupKey, Row)> {
        self.ranked(None)
    }

    /// The `limit` largest groups (all without a limit), largest first, ties by key. With a
    /// limit only a heap of `limit` groups is kept, whatever the number of groups.
    pub fn ranked(&self, limit: Option<usize>) -> Vec<(GroupKey, Row)> {
        self.ranked_counts(limit).into_iter().map(|(k, c)| (*k, c.row())).collect()
    }

    /// [`Tally::ranked`], borrowing the groups' keys and counts (16 bytes a group).
    pub fn ranked_counts(&self, limit: Option<usize>) -> Vec<(&GroupKey, &Counts)> {
        let ranked: Vec<Ranked<'_>> = match limit {
            Some(n) if n < self.groups.len() => {
                let mut heap = BinaryHeap::with_capacity(n + 1);
                for (k, p) in &self.groups {
                    let r = Ranked(k, p);
                    if heap.len() < n {
                        heap.push(r);
                    } else if heap.peek().is_some_and(|worst| r < *worst) {
                        heap.pop();
                        heap.push(r);
                    }
                }
                heap.into_sorted_vec()
            }
            _ => {
                let mut v: Vec<Ranked<'_>> =
                    self.groups.iter().map(|(k, p)| Ranked(k, p)).collect();
                v.sort_unstable();
                v
            }
        };
        ranked.into_iter().map(|Ranked(k, c)| (k, c)).collect()
    }

    /// The heap memory the groups take, in bytes: the hash map's buckets (a power of two at
    /// most 7/8 full, each an entry and a control byte) and its control tail. An accounting
    /// of hashbrown's layout, which std's map uses; what the allocator rounds up is not in it.
    pub fn heap_bytes(&self) -> usize {
        let cap = self.groups.capacity();
        if cap == 0 {
            return 0;
        }
        let buckets = if cap < 8 { cap + 1 } else { cap * 8 / 7 }.next_power_of_two();
        buckets * (std::mem::size_of::<(GroupKey, Counts)>() + 1) + 16
    }

    /// A group's label: guest name, address, state name, ...
    pub fn label(&self, key: &GroupKey) -> String {
        self.display(key).to_string()
    }

    /// A group's label, to format without an owned string.
    pub fn display<'a>(&'a self, key: &'a GroupKey) -> impl fmt::Display + 'a {
        Label(key, &self.guests)
    }
}

struct Label<'a>(&'a GroupKey, &'a GuestMap);

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            GroupKey::All => f.write_str("all"),
            GroupKey::Guest(Some(id)) => f.write_str(self.1.name(*id)),
            GroupKey::Guest(None) => f.write_str("(no guest)"),
            GroupKey::Addr(a) => write!(f, "{a}"),
            GroupKey::Net(n) => write!(f, "{n}"),
            // TCP states keep their bare names (what operators grep for); SCTP and DCCP share
            // some names with TCP, so they carry the protocol.
            GroupKey::State(Some(ProtoState::Tcp(s)), _) => f.write_str(s.name()),
            GroupKey::State(Some(s), p) => write!(f, "{}/{}", p.name(), s.name()),
            GroupKey::State(None, p) => f.write_str(p.name()),
            GroupKey::Proto(p) => f.write_str(p.name()),
            GroupKey::Zone(z) => write!(f, "{z}"),
            GroupKey::Mark(m) => write!(f, "{m}"),
            GroupKey::Helper(Some(h)) => f.write_str(&h.as_str()),
            GroupKey::Helper(None) => f.write_str("(no helper)"),
            GroupKey::Column(c) => f.write_str(column_name(usize::from(*c))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{L4, Tuple};

    fn flow(src: &str, state: Option<TcpState>, proto: Proto) -> Flow {
        let orig = Tuple {
            src: src.parse().unwrap(),
            dst: "10.0.0.1".parse().unwrap(),
            l4: L4::Ports { src: 1, dst: 2 },
            zone: None,
        };
        Flow { state: state.map(ProtoState::Tcp), ..Flow::new(proto, orig) }
    }

    #[test]
    fn counts_by_source_with_state_columns() {
        let mut t = Tally::new(GroupBy::Src, GuestMap::new());
        for _ in 0..3 {
            t.add(&flow("172.16.3.5", Some(TcpState::Established), Proto::TCP));
        }
        t.add(&flow("172.16.3.5", Some(TcpState::TimeWait), Proto::TCP));
        t.add(&flow("172.16.1.2", None, Proto::UDP));
        let rows = t.sorted();
        assert_eq!(rows.len(), 2);
        assert_eq!(t.label(&rows[0].0), "172.16.3.5");
        assert_eq!(rows[0].1.total, 4);
        assert_eq!(rows[0].1.by_state[3], 3);
        assert_eq!(rows[0].1.by_state[7], 1);
        assert_eq!(rows[1].1.by_state[COL_NOT_TCP], 1);
        assert_eq!(t.total().total, 5);
        assert_eq!(column_name(3), "ESTABLISHED");
    }

    #[test]
    fn issue_9_11_a_group_costs_at_most_200_bytes_and_top_n_keeps_a_heap_of_n() {
        // 250,000 distinct sources, as in the issue: measured after every 1,000 groups, so
        // the worst moment (just after the map doubled) is seen.
        assert!(std::mem::size_of::<(GroupKey, Counts)>() <= 72);
        let mut t = Tally::new(GroupBy::Src, GuestMap::new());
        let mut f = flow("10.0.0.0", Some(TcpState::Established), Proto::TCP);
        let mut worst = 0usize;
        for i in 0..250_000u32 {
            f.orig.src = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            f.state =
                Some(ProtoState::Tcp([TcpState::Established, TcpState::TimeWait][i as usize % 2]));
            t.add(&f);
            if i % 1_000 == 999 {
                worst = worst.max(t.heap_bytes() / t.len());
            }
        }
        assert_eq!(t.len(), 250_000);
        assert!(worst <= 200, "{worst} bytes per group");
        assert!(t.heap_bytes() / t.len() <= 200);

        // Ties broken by key, the same with a heap of N as with everything sorted.
        for _ in 0..3 {
            f.orig.src = "10.0.0.7".parse().unwrap();
            t.add(&f);
            f.orig.src = "10.0.1.0".parse().unwrap();
            t.add(&f);
        }
        let all = t.sorted();
        for n in [1, 2, 3, 10, 1_000] {
            assert_eq!(t.ranked(Some(n)), all[..n], "top {n}");
        }
        assert_eq!(t.ranked(Some(300_000)), all);
        assert_eq!(t.label(&all[0].0), "10.0.0.7");
        assert_eq!((all[0].1.total, all[2].1.total), (4, 1));
    }

    #[test]
    fn subnets_guests_and_states() {
        let mut t = Tally::new(GroupBy::parse("src/24").unwrap(), GuestMap::new());
        t.add(&flow("172.16.3.5", None, Proto::UDP));
        t.add(&flow("172.16.3.77", None, Proto::UDP));
        t.add(&flow("fd00::1:2", None, Proto::UDP));
        let rows = t.sorted();
        assert_eq!(t.label(&rows[0].0), "172.16.3.0/24");
        assert_eq!(t.label(&rows[1].0), "fd00::/64");

        let mut guests = GuestMap::new();
        guests.add("web01", vec!["172.16.3.0/24".parse().unwrap()]);
        let mut g = Tally::new(GroupBy::Guest, guests);
        g.add(&flow("172.16.3.5", None, Proto::UDP));
        g.add(&flow("172.16.3.6", None, Proto::UDP));
        g.add(&flow("192.0.2.1", None, Proto::UDP));
        let labels: Vec<_> = g.sorted().iter().map(|(k, _)| g.label(k)).collect();
        assert_eq!(labels, ["web01", "(no guest)"]);

        let mut s = Tally::new(GroupBy::State, GuestMap::new());
        s.add(&flow("1.1.1.1", Some(TcpState::Established), Proto::TCP));
        s.add(&flow("1.1.1.1", None, Proto::UDP));
        let mut labels: Vec<_> = s.sorted().iter().map(|(k, _)| s.label(k)).collect();
        labels.sort();
        assert_eq!(labels, ["ESTABLISHED", "udp"]);
        assert!(GroupBy::parse("src/33").is_err() && GroupBy::parse("colour").is_err());
    }

    #[test]
    fn issue_12_flows_group_by_helper() {
        let mut t = Tally::new(GroupBy::parse("helper").unwrap(), GuestMap::new());
        let mut ftp =
            crate::flow::test_tcp("10.0.0.1", "10.0.0.2", 40000, 21, TcpState::Established);
        ftp.helper = Some(HelperName::new(b"ftp"));
        t.add(&ftp);
        t.add(&ftp);
        t.add(&crate::flow::test_tcp("10.0.0.1", "10.0.0.2", 40001, 80, TcpState::Established));
        let rows: Vec<(String, u64)> =
            t.sorted().iter().map(|(k, r)| (t.label(k), r.total)).collect();
        assert_eq!(rows, [("ftp".to_string(), 2), ("(no helper)".to_string(), 1)]);
        assert_eq!(GroupBy::Helper.name(), "helper");
    }
}
