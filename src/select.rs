//! The Selector: which flows a command acts on, what of it the kernel can filter, and the
//! exact userspace check every entry passes before anything is shown, counted or deleted.
//!
//! Within one criterion the values are alternatives (`-s A -s B`: A or B); across criteria
//! they all must hold. The kernel's filters are exact-match only and differ by version, so
//! they only narrow the dump; [`Selector::matches`] is always the judge.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::IpNetwork;

use crate::flow::{DccpState, Family, Flow, Proto, ProtoState, SctpState, Status, TcpState};
use crate::guests::{GuestId, GuestMap};
use crate::sysctl::StateTimeouts;

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub lo: u16,
    /// Last port.
    pub hi: u16,
}

/// The guests a selection is about: named guests of a map, and ad-hoc CIDRs standing for
/// themselves. A flow matches when its owner is one of the named guests, or when any of its
/// four addresses lies in one of the CIDRs.
#[derive(Debug, Clone, Default)]
pub struct GuestFilter {
    /// The guest map deciding ownership (shared with the tally that names the owners).
    pub map: Arc<GuestMap>,
    /// The selected guests of `map`.
    pub ids: Vec<GuestId>,
    /// Ad-hoc guest CIDRs.
    pub cidrs: Vec<IpNetwork>,
}

/// Which flows to act on. The default selects everything.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// Original source in any of these.
    pub src: Vec<IpNetwork>,
    /// Original destination in any of these.
    pub dst: Vec<IpNetwork>,
    /// Reply source in any of these.
    pub reply_src: Vec<IpNetwork>,
    /// Reply destination in any of these.
    pub reply_dst: Vec<IpNetwork>,
    /// Owned by one of these guests.
    pub guests: Option<GuestFilter>,
    /// Protocol is one of these.
    pub protos: Vec<Proto>,
    /// Original source port in one of these ranges.
    pub sport: Vec<PortRange>,
    /// Original destination port in one of these ranges.
    pub dport: Vec<PortRange>,
    /// Protocol state is one of these.
    pub states: Vec<ProtoState>,
    /// Status bits that must be set.
    pub status_set: u32,
    /// Status bits that must be clear.
    pub status_clear: u32,
    /// `mark & mask == value & mask`.
    pub mark: Option<(u32, u32)>,
    /// Zone (`CTA_ZONE`, 0 when absent).
    pub zone: Option<u16>,
    /// Address family.
    pub family: Option<Family>,
    /// Idle for at least this many seconds (needs `timeouts`).
    pub idle_min: Option<u32>,
    /// Fewer than this many seconds left.
    pub timeout_below: Option<u32>,
    /// State timeouts for `idle_min`, read from the target namespace.
    pub timeouts: Option<StateTimeouts>,
    /// Never a flow with any of its four addresses (original and reply, source and
    /// destination) in one of these (`--except`, the guard's `protect`): the host, the
    /// management networks. The kernel has no exclusion, so this is never pushed into a dump
    /// filter and never lets a kernel flush stand in for the per-flow deletes.
    pub except: Vec<IpNetwork>,
    /// Connection labels that must all be set (`--label`, like `conntrack -l`); 0 for none.
    /// Not a kernel filter: checked here only.
    pub labels: u128,
}

fn in_any(nets: &[IpNetwork], addr: IpAddr) -> bool {
    nets.is_empty() || nets.iter().any(|n| n.contains(addr))
}

fn port_in(ranges: &[PortRange], port: Option<u16>) -> bool {
    ranges.is_empty() || port.is_some_and(|p| ranges.iter().any(|r| r.lo <= p && p <= r.hi))
}

impl Selector {
    /// True when no criterion is set (the selector takes every flow).
    pub fn is_empty(&self) -> bool {
        self.src.is_empty()
            && self.dst.is_empty()
            && self.reply_src.is_empty()
            && self.reply_dst.is_empty()
            && self.guests.is_none()
            && self.protos.is_empty()
            && self.sport.is_empty()
            && self.dport.is_empty()
            && self.states.is_empty()
            && self.status_set == 0
            && self.status_clear == 0
            && self.mark.is_none()
            && self.zone.is_none()
            && self.family.is_none()
            && self.idle_min.is_none()
            && self.timeout_below.is_none()
            && self.except.is_empty()
            && self.labels == 0
    }

    /// The exact check: does `flow` belong to the selection?
    pub fn matches(&self, flow: &Flow) -> bool {
        self.family.is_none_or(|f| f == flow.family)
            && (self.protos.is_empty() || self.protos.contains(&flow.proto))
            && in_any(&self.src, flow.orig.src)
            && in_any(&self.dst, flow.orig.dst)
            && in_any(&self.reply_src, flow.reply.src)
            && in_any(&self.reply_dst, flow.reply.dst)
            && port_in(&self.sport, flow.orig.sport())
            && port_in(&self.dport, flow.orig.dport())
            && (self.states.is_empty() || flow.state.is_some_and(|s| self.states.contains(&s)))
            && flow.status.0 & self.status_set == self.status_set
            && flow.status.0 & self.status_clear == 0
            && self.mark.is_none_or(|(v, m)| flow.mark.unwrap_or(0) & m == v & m)
            && self.zone.is_none_or(|z| flow.zone_id() == z)
            && self.timeout_below.is_none_or(|t| flow.timeout.is_some_and(|left| left < t))
            && self.idle_ok(flow)
            && self.guest_ok(flow)
            && flow.labels.unwrap_or(0) & self.labels == self.labels
            && !self.excepted(flow)
    }

    /// True when one of `flow`'s four addresses is in an `except` network.
    fn excepted(&self, flow: &Flow) -> bool {
        !self.except.is_empty()
            && [flow.orig.src, flow.orig.dst, flow.reply.src, flow.reply.dst]
                .into_iter()
                .any(|a| self.except.iter().any(|n| n.contains(a)))
    }

    fn idle_ok(&self, flow: &Flow) -> bool {
        let Some(min) = self.idle_min else { return true };
        let idle = match &self.timeouts {
            Some(t) => t.idle(flow),
            None => StateTimeouts::defaults().idle(flow),
        };
        idle.is_some_and(|idle| idle >= min)
    }

    fn guest_ok(&self, flow: &Flow) -> bool {
        let Some(g) = &self.guests else { return true };
        (!g.ids.is_empty() && g.map.owner(flow).is_some_and(|o| g.ids.contains(&o)))
            || [flow.orig.src, flow.reply.src, flow.orig.dst, flow.reply.dst]
                .into_iter()
                .any(|a| g.cidrs.iter().any(|n| n.contains(a)))
    }

    /// The part of the selection the kernel can apply during the dump. Only exact criteria
    /// with a single value are pushed; the result never selects fewer flows than `matches`
    /// (`except` is not in it: the kernel's filters have no negation).
    pub fn kernel_filter(&self) -> DumpFilter {
        let single_v4_host = |nets: &[IpNetwork]| match nets {
            [IpNetwork::V4(n)] if n.prefix() == 32 => Some(n.ip()),
            _ => None,
        };
        let status_mask = self.status_set | self.status_clear;
        DumpFilter {
            family: self.family,
            mark: self.mark,
            status: (status_mask != 0).then_some((self.status_set, status_mask)),
            zone: self.zone,
            // IPv4 only: the kernel's IPv6 CTA_FILTER address match is inverted (6.18).
            orig_src_v4: single_v4_host(&self.src),
            orig_dst_v4: single_v4_host(&self.dst),
        }
    }
}

/// What the kernel can filter during a dump itself. Every field is exact-match; see
/// `ctnetlink_filter_match` in net/netfilter/nf_conntrack_netlink.c.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DumpFilter {
    /// `nfgen_family`, honoured by every kernel.
    pub family: Option<Family>,
    /// `CTA_MARK` + `CTA_MARK_MASK`: entries with `mark & mask == value`.
    pub mark: Option<(u32, u32)>,
    /// `CTA_STATUS` + `CTA_STATUS_MASK` (Linux 5.15+; older kernels ignore it in dumps).
    pub status: Option<(u32, u32)>,
    /// `CTA_ZONE` (Linux 6.8+; older kernels ignore it in dumps).
    pub zone: Option<u16>,
    /// Exact original IPv4 source through `CTA_FILTER` (Linux 5.8+). Never IPv6: the kernel's
    /// IPv6 address match is inverted (it keeps entries whose address differs) up to 6.18.
    pub orig_src_v4: Option<Ipv4Addr>,
    /// Exact original IPv4 destination through `CTA_FILTER`.
    pub orig_dst_v4: Option<Ipv4Addr>,
}

impl DumpFilter {
    pub(crate) fn uses_cta_filter(&self) -> bool {
        self.orig_src_v4.is_some() || self.orig_dst_v4.is_some()
    }

    /// The family the request must carry: `CTA_FILTER` only works with AF_INET/AF_INET6.
    pub(crate) fn family_number(&self) -> u8 {
        if self.uses_cta_filter() {
            Family::Ipv4.number()
        } else {
            self.family.map_or(0, Family::number)
        }
    }
}

// Parsers for command-line values; each error is a one-line reason.

/// A selector value that does not parse. Each says, in one line, what was given and what a
/// valid one looks like (the binary prints it after `ctguard: ` and exits 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Not an address or CIDR.
    #[error("invalid IP address or CIDR '{0}'")]
    Cidr(String),
    /// Not a port or a `LOW-HIGH` range.
    #[error("invalid port or range '{0}' (expected PORT or LOW-HIGH, 0-65535)")]
    Port(String),
    /// A range whose low end is above its high end.
    #[error("invalid port range '{input}': {lo} is above {hi}")]
    PortRange {
        /// What was given.
        input: String,
        /// Its low end.
        lo: u16,
        /// Its high end.
        hi: u16,
    },
    /// No protocol of that name or number.
    #[error("unknown protocol '{0}' (a name like tcp, or a number)")]
    Proto(String),
    /// No state of that name.
    #[error("unknown state '{name}' (TCP states: {known})")]
    State {
        /// The name given.
        name: String,
        /// The TCP state names, comma-separated.
        known: String,
    },
    /// No status bit of that name.
    #[error("unknown status '{name}' (one of: {known})")]
    Status {
        /// The name given.
        name: String,
        /// The status names, comma-separated.
        known: String,
    },
    /// A status list that requires and excludes one bit.
    #[error("status '{0}' both requires and excludes the same bit")]
    StatusConflict(String),
    /// A list (of states, of status bits) with nothing in it.
    #[error("empty {0} list")]
    Empty(&'static str),
    /// Not `VALUE[/MASK]`.
    #[error("invalid mark '{0}' (expected VALUE or VALUE/MASK, decimal or 0x-hex)")]
    Mark(String),
    /// A mask of zero.
    #[error("invalid mark '{0}': a zero mask matches everything")]
    ZeroMask(String),
    /// Not a duration.
    #[error("invalid duration '{0}' (e.g. 90s, 10m, 1h30m)")]
    Duration(String),
    /// Neither IPv4 nor IPv6.
    #[error("invalid family '{0}' (ipv4 or ipv6)")]
    Family(String),
}

/// An IP address or CIDR (`172.16.3.5`, `172.16.3.0/24`, `fd00::/64`).
pub fn parse_cidr(s: &str) -> Result<IpNetwork, ValueError> {
    s.parse::<IpNetwork>().map_err(|_| ValueError::Cidr(s.into()))
}

/// A port (`80`) or an inclusive range (`1000-2000`).
pub fn parse_port_range(s: &str) -> Result<PortRange, ValueError> {
    let bad = || ValueError::Port(s.into());
    let (lo, hi) = match s.split_once(['-', ':']) {
        Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
        None => {
            let p = s.parse().map_err(|_| bad())?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(ValueError::PortRange { input: s.into(), lo, hi });
    }
    Ok(PortRange { lo, hi })
}

/// A protocol name or number.
pub fn parse_proto(s: &str) -> Result<Proto, ValueError> {
    Proto::parse(s).ok_or_else(|| ValueError::Proto(s.into()))
}

/// State names as `conntrack -L` prints them; a comma list, case-insensitive. A name shared
/// by several protocols (ESTABLISHED: TCP and SCTP) selects it in each.
pub fn parse_states(s: &str) -> Result<Vec<ProtoState>, ValueError> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let before = out.len();
        out.extend(TcpState::parse(name).map(ProtoState::Tcp));
        out.extend(SctpState::parse(name).map(ProtoState::Sctp));
        out.extend(DccpState::parse(name).map(ProtoState::Dccp));
        if out.len() == before {
            let known: Vec<&str> = TcpState::ALL.iter().map(|s| s.name()).collect();
            return Err(ValueError::State { name: name.into(), known: known.join(", ") });
        }
    }
    if out.is_empty() {
        return Err(ValueError::Empty("state"));
    }
    Ok(out)
}

/// Status bits: a comma list of names, each optionally negated with `!`
/// (`ASSURED,!SEEN_REPLY`). Returns (bits that must be set, bits that must be clear).
pub fn parse_status(s: &str) -> Result<(u32, u32), ValueError> {
    let (mut set, mut clear) = (0, 0);
    for item in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let (negated, name) = match item.strip_prefix(['!', '~']) {
            Some(n) => (true, n),
            None => (false, item),
        };
        let bit = Status::bit_of(name).ok_or_else(|| ValueError::Status {
            name: name.into(),
            known: Status::NAMES.join(", "),
        })?;
        if negated {
            clear |= bit;
        } else {
            set |= bit;
        }
    }
    if set & clear != 0 {
        return Err(ValueError::StatusConflict(s.into()));
    }
    if set | clear == 0 {
        return Err(ValueError::Empty("status"));
    }
    Ok((set, clear))
}

fn parse_u32(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `VALUE[/MASK]`, decimal or 0x-hex; the mask defaults to all ones.
pub fn parse_mark(s: &str) -> Result<(u32, u32), ValueError> {
    let bad = || ValueError::Mark(s.into());
    let (v, m) = match s.split_once('/') {
        Some((v, m)) => (parse_u32(v).ok_or_else(bad)?, parse_u32(m).ok_or_else(bad)?),
        None => (parse_u32(s).ok_or_else(bad)?, u32::MAX),
    };
    if m == 0 {
        return Err(ValueError::ZeroMask(s.into()));
    }
    Ok((v, m))
}

/// A duration: `90` (seconds), `90s`, `10m`, `1h30m`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|_| ValueError::Duration(s.into()))
}

/// `ipv4` or `ipv6`.
pub fn parse_family(s: &str) -> Result<Family, ValueError> {
    match s.to_ascii_lowercase().as_str() {
        "ipv4" | "inet" | "4" => Ok(Family::Ipv4),
        "ipv6" | "inet6" | "6" => Ok(Family::Ipv6),
        _ => Err(ValueError::Family(s.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::flow::test_tcp as tcp;

    #[test]
    fn issue_12_label_selection_needs_every_listed_label() {
        let mut f = crate::flow::test_tcp("10.0.0.1", "10.0.0.2", 1, 2, TcpState::Established);
        let sel = Selector { labels: 0b1001, ..Selector::default() };
        assert!(!sel.is_empty());
        assert!(!sel.matches(&f), "a flow without labels");
        f.labels = Some(0b0001);
        assert!(!sel.matches(&f), "one of the two");
        f.labels = Some(0b1011);
        assert!(sel.matches(&f), "both, and more");
        assert_eq!(sel.kernel_filter(), DumpFilter::default(), "labels are no kernel filter");
    }

    #[test]
    fn or_within_a_flag_and_across_flags() {
        let f = tcp("172.16.3.5", "10.0.0.1", 40000, 443, TcpState::Established);
        let sel = Selector {
            src: vec![parse_cidr("172.16.9.0/24").unwrap(), parse_cidr("172.16.3.0/24").unwrap()],
            states: parse_states("established,time_wait").unwrap(),
            ..Selector::default()
        };
        assert!(sel.matches(&f));
        let sel2 = Selector { dport: vec![parse_port_range("80").unwrap()], ..sel.clone() };
        assert!(!sel2.matches(&f), "AND across flags");
        let sel3 = Selector { dport: vec![parse_port_range("400-500").unwrap()], ..sel };
        assert!(sel3.matches(&f));
    }

    #[test]
    fn status_negation_mark_mask_zone() {
        let mut f = tcp("10.0.0.1", "10.0.0.2", 1, 2, TcpState::SynSent);
        f.status = Status(0);
        f.mark = Some(0x11);
        f.zone = Some(7);
        let (set, clear) = parse_status("!ASSURED").unwrap();
        let sel = Selector {
            status_set: set,
            status_clear: clear,
            mark: Some(parse_mark("0x10/0xff0").unwrap()),
            zone: Some(7),
            ..Selector::default()
        };
        assert!(sel.matches(&f));
        f.status = Status(Status::ASSURED);
        assert!(!sel.matches(&f));
        assert!(!Selector { zone: Some(0), ..Selector::default() }.matches(&f));
    }

    #[test]
    fn idle_uses_the_state_timeout() {
        let mut f = tcp("10.0.0.1", "10.0.0.2", 1, 2, TcpState::Established);
        f.timeout = Some(432_000 - 3600);
        let sel = Selector {
            idle_min: Some(3600),
            timeouts: Some(StateTimeouts::defaults()),
            ..Selector::default()
        };
        assert!(sel.matches(&f));
        f.timeout = Some(432_000 - 3599);
        assert!(!sel.matches(&f));
    }

    #[test]
    fn guest_cidr_matches_any_of_the_four_addresses() {
        // DNAT: the guest shows only as the reply source.
        let mut f = tcp("8.8.8.8", "10.9.9.9", 5, 80, TcpState::Established);
        f.reply.src = "172.16.3.5".parse().unwrap();
        let sel = Selector {
            guests: Some(GuestFilter {
                cidrs: vec![parse_cidr("172.16.3.5").unwrap()],
                ..GuestFilter::default()
            }),
            ..Selector::default()
        };
        assert!(sel.matches(&f));
        assert!(!sel.matches(&tcp("8.8.8.8", "10.9.9.9", 5, 80, TcpState::Established)));
    }

    #[test]
    fn kernel_filter_pushes_only_exact_single_ipv4_hosts() {
        let one = Selector { src: vec![parse_cidr("172.16.3.5").unwrap()], ..Selector::default() };
        assert_eq!(one.kernel_filter().orig_src_v4, Some("172.16.3.5".parse().unwrap()));
        let net =
            Selector { src: vec![parse_cidr("172.16.3.0/24").unwrap()], ..Selector::default() };
        assert_eq!(net.kernel_filter().orig_src_v4, None);
        let v6 = Selector { src: vec![parse_cidr("fd00::5").unwrap()], ..Selector::default() };
        assert_eq!(v6.kernel_filter(), DumpFilter::default(), "never IPv6 through CTA_FILTER");
        let two = Selector {
            src: vec![parse_cidr("10.0.0.1").unwrap(), parse_cidr("10.0.0.2").unwrap()],
            ..Selector::default()
        };
        assert_eq!(two.kernel_filter().orig_src_v4, None, "OR of hosts is not exact-match");
    }

    #[test]
    fn bad_values_give_one_line_reasons() {
        for (r, needle) in [
            (parse_cidr("172.16.3.300").map(|_| ()), "invalid IP"),
            (parse_port_range("70000").map(|_| ()), "invalid port"),
            (parse_port_range("90-80").map(|_| ()), "above"),
            (parse_states("ESTABLISH").map(|_| ()), "unknown state"),
            (parse_status("ASSURED,!ASSURED").map(|_| ()), "both"),
            (parse_mark("0x1/0").map(|_| ()), "zero mask"),
            (parse_duration("10 parsecs").map(|_| ()), "invalid duration"),
            (parse_proto("tcpp").map(|_| ()), "unknown protocol"),
        ] {
            let e = r.unwrap_err().to_string();
            assert!(e.contains(needle) && !e.contains('\n'), "{e}");
        }
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("600").unwrap(), Duration::from_secs(600));
    }
}
