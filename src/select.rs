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

use crate::flow::{
    DccpState, Family, Flow, NatTarget, Proto, ProtoState, SctpState, Status, TcpState,
};
use crate::guests::{GuestId, GuestMap};
use crate::protocols::ProtocolNames;
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

/// One NAT criterion: any flow NATed that way (the bare flag), or one NATed to this address,
/// and port when it has one (`--dst-nat IP[:PORT]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatMatch {
    /// NATed at all: the address or the port changed.
    Any,
    /// NATed to this address (and port).
    To(NatTarget),
}

/// The NAT criteria, with `conntrack -L`'s meaning (`filter_nat` in conntrack.c): `src` is
/// `--src-nat`, `dst` is `--dst-nat` (both given: both must hold), `either` is `--any-nat`
/// (SNAT or DNAT, to the same target when it has one).
///
/// A flow is source-NATed when the kernel set up its source manipulation
/// (`IPS_SRC_NAT_DONE`) and the reply destination is not the original source, or the port
/// differs ([`Flow::snat_changed`]); destination NAT the same way on the reply source.
/// Unlike conntrack 1.4.7, an IPv6 target's address is compared (conntrack compares only
/// IPv4 addresses and lets any IPv6 address match), and an ICMP flow is port-NATed only
/// when its id changed (conntrack compares the id with the type and code, so every ICMP flow
/// that went through NAT hooks matches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NatSelect {
    /// `--src-nat`.
    pub src: Option<NatMatch>,
    /// `--dst-nat`.
    pub dst: Option<NatMatch>,
    /// `--any-nat`.
    pub either: Option<NatMatch>,
}

impl NatSelect {
    /// True when no NAT criterion is set.
    pub fn is_empty(&self) -> bool {
        self.src.is_none() && self.dst.is_none() && self.either.is_none()
    }

    /// Every criterion set holds for `flow`.
    pub fn matches(&self, flow: &Flow) -> bool {
        let snat = |m| nat_side(m, flow.snat_changed(), flow.reply.dst, flow.reply.dport());
        let dnat = |m| nat_side(m, flow.dnat_changed(), flow.reply.src, flow.reply.sport());
        self.src.is_none_or(snat)
            && self.dst.is_none_or(dnat)
            && self.either.is_none_or(|m| snat(m) || dnat(m))
    }
}

/// One side's test: `changed` is (address changed, port changed); `addr` and `port` what the
/// reply tuple says the side was rewritten to.
fn nat_side(m: NatMatch, changed: (bool, bool), addr: IpAddr, port: Option<u16>) -> bool {
    match m {
        NatMatch::Any => changed.0 || changed.1,
        NatMatch::To(t) => {
            changed.0 && addr == t.addr && t.port.is_none_or(|p| changed.1 && port == Some(p))
        }
    }
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
    /// Zone (`CTA_ZONE`, 0 when absent): the entry's zone id, whichever directions it
    /// applies to (the kernel's `nf_ct_zone_equal_any`).
    pub zone: Option<u16>,
    /// Zone of the original direction (`--orig-zone`): the id the kernel looks the original
    /// tuple up in (`nf_ct_zone_id(zone, IP_CT_DIR_ORIGINAL)`), so an entry zoned for both
    /// directions (`CTA_ZONE`) or for the original one (`CTA_TUPLE_ZONE` in the original
    /// tuple) has its id there, and an entry zoned for the reply direction only has zone 0.
    pub orig_zone: Option<u16>,
    /// Zone of the reply direction (`--reply-zone`), as [`Selector::orig_zone`].
    pub reply_zone: Option<u16>,
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
    /// NAT criteria (`--src-nat`, `--dst-nat`, `--any-nat`); userspace only.
    pub nat: NatSelect,
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
            && self.orig_zone.is_none()
            && self.reply_zone.is_none()
            && self.family.is_none()
            && self.idle_min.is_none()
            && self.timeout_below.is_none()
            && self.except.is_empty()
            && self.labels == 0
            && self.nat.is_empty()
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
            && self.orig_zone.is_none_or(|z| flow.orig_zone_id() == z)
            && self.reply_zone.is_none_or(|z| flow.reply_zone_id() == z)
            && self.timeout_below.is_none_or(|t| flow.timeout.is_some_and(|left| left < t))
            && self.idle_ok(flow)
            && self.guest_ok(flow)
            && flow.labels.unwrap_or(0) & self.labels == self.labels
            && self.nat.matches(flow)
            && !self.excepted(flow)
    }

    /// Refuses addresses that can never hold together, as `conntrack` does ("mismatched
    /// address family"): every criterion must hold, so the address flags (and `-f`) must
    /// agree on the family. A flag given both families (`-s 10.0.0.0/8 -s fd00::/8`, one
    /// or the other) is fine on its own, but not beside a flag that fixes one of them.
    pub fn check_families(&self) -> Result<(), ValueError> {
        // A NAT target is one address: it fixes its family like a one-address flag.
        let nat = |m: Option<NatMatch>| match m {
            Some(NatMatch::To(t)) => vec![IpNetwork::from(t.addr)],
            _ => vec![],
        };
        let (src_nat, dst_nat, any_nat) =
            (nat(self.nat.src), nat(self.nat.dst), nat(self.nat.either));
        let flags: [(&str, &[IpNetwork]); 7] = [
            ("-s", &self.src),
            ("-d", &self.dst),
            ("--reply-src", &self.reply_src),
            ("--reply-dst", &self.reply_dst),
            ("--src-nat", &src_nat),
            ("--dst-nat", &dst_nat),
            ("--any-nat", &any_nat),
        ];
        let of = |n: &IpNetwork| if n.is_ipv4() { Family::Ipv4 } else { Family::Ipv6 };
        // The family some criterion fixes, and which one does.
        let mut fixed: Option<(Family, String)> =
            self.family.map(|f| (f, format!("-f {}", f.name())));
        for (flag, nets) in flags {
            let Some(first) = nets.first() else { continue };
            if nets.iter().all(|n| of(n) == of(first)) {
                match &fixed {
                    Some((f, by)) if *f != of(first) => {
                        return Err(ValueError::MismatchedFamily(format!(
                            "{flag} {first} is {}, {by} is {}",
                            of(first).name(),
                            f.name()
                        )));
                    }
                    Some(_) => {}
                    None => fixed = Some((of(first), format!("{flag} {first}"))),
                }
            }
        }
        let Some((family, by)) = fixed else { return Ok(()) };
        for (flag, nets) in flags {
            if let Some(n) = nets.iter().find(|n| of(n) != family) {
                return Err(ValueError::MismatchedFamily(format!(
                    "{flag} {n} is {}, {by} is {}",
                    of(n).name(),
                    family.name()
                )));
            }
        }
        Ok(())
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
            // The kernel's zone filter compares the id whatever the direction, so a directional
            // zone other than 0 narrows the dump to a superset (zone 0 would drop the entries
            // zoned in the other direction only).
            zone: self
                .zone
                .or(self.orig_zone.filter(|z| *z != 0))
                .or(self.reply_zone.filter(|z| *z != 0)),
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
    /// A comma list with an empty item: `ESTABLISHED,`, `,ESTABLISHED`, `A,,B`.
    #[error("{what} list '{list}' has an empty item (a stray comma)")]
    EmptyItem {
        /// What the list holds (`state`, `status`).
        what: &'static str,
        /// The list as given.
        list: String,
    },
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
    /// Addresses (or `-f`) of both families where every one must hold (`conntrack`'s words).
    #[error("mismatched address family: {0}")]
    MismatchedFamily(String),
    /// Not an address mask, or one whose ones are not contiguous.
    #[error("invalid mask '{0}' (an address mask with contiguous ones, e.g. 255.255.255.0)")]
    Mask(String),
    /// `UNSET` names no bit: it cannot be negated or mixed with bits.
    #[error("status '{0}': UNSET names no bit, give it alone (create only)")]
    Unset(String),
    /// Not `IP`, `IP:PORT` or `[IPv6]:PORT`.
    #[error("invalid NAT address '{0}' (expected IP, IP:PORT or [IPv6]:PORT, port 0-65535)")]
    Nat(String),
}

/// An IP address or CIDR (`172.16.3.5`, `172.16.3.0/24`, `fd00::/64`).
pub fn parse_cidr(s: &str) -> Result<IpNetwork, ValueError> {
    s.parse::<IpNetwork>().map_err(|_| ValueError::Cidr(s.into()))
}

/// A NAT target as `conntrack --src-nat`/`--dst-nat` take it: `IP`, `IP:PORT`, an IPv6
/// address bare or in brackets, `[IPv6]:PORT`. Addresses are written out in full (conntrack's
/// `inet_aton` also takes `1.2.3` for 1.2.0.3; ctguard refuses it, as every address it takes).
pub fn parse_nat_target(s: &str) -> Result<NatTarget, ValueError> {
    let bad = || ValueError::Nat(s.into());
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(NatTarget { addr, port: None });
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let addr = inner.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        return Ok(NatTarget { addr: IpAddr::V6(addr), port: None });
    }
    let sa = s.parse::<std::net::SocketAddr>().map_err(|_| bad())?;
    Ok(NatTarget { addr: sa.ip(), port: Some(sa.port()) })
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

/// A protocol name or number, in `conntrack`'s order (`findproto`): the built-in names
/// (`tcp`, case-insensitive), then the names and aliases of `/etc/protocols` (exact, as
/// `getprotobyname` compares them), then a number 0-255.
pub fn parse_proto(s: &str) -> Result<Proto, ValueError> {
    Proto::parse(s)
        .or_else(|| ProtocolNames::system().lookup(s))
        .ok_or_else(|| ValueError::Proto(s.into()))
}

/// The items of a comma list of `what` (`state`): blanks around an item are dropped, but an
/// empty item is an error, as conntrack refuses it, not a silent nothing: a stray comma
/// (`ESTABLISHED,`) is more likely a word left out than a word not meant. A list of nothing
/// (`""`, `","`) is [`ValueError::Empty`].
pub fn comma_list<'a>(s: &'a str, what: &'static str) -> Result<Vec<&'a str>, ValueError> {
    let items: Vec<&str> = s.split(',').map(str::trim).collect();
    if items.iter().all(|i| i.is_empty()) {
        return Err(ValueError::Empty(what));
    }
    if items.iter().any(|i| i.is_empty()) {
        return Err(ValueError::EmptyItem { what, list: s.into() });
    }
    Ok(items)
}

/// State names as `conntrack -L` prints them; a comma list, case-insensitive. A name shared
/// by several protocols (ESTABLISHED: TCP and SCTP) selects it in each.
pub fn parse_states(s: &str) -> Result<Vec<ProtoState>, ValueError> {
    let mut out = Vec::new();
    for name in comma_list(s, "state")? {
        let before = out.len();
        // conntrack-tools names TCP state 9 LISTEN on input (libct_proto_tcp.c `states[]`),
        // the kernel SYN_SENT2; SCTP's and DCCP's input names are the kernel's.
        let tcp_name = if name.eq_ignore_ascii_case("LISTEN") { "SYN_SENT2" } else { name };
        out.extend(TcpState::parse(tcp_name).map(ProtoState::Tcp));
        out.extend(SctpState::parse(name).map(ProtoState::Sctp));
        out.extend(DccpState::parse(name).map(ProtoState::Dccp));
        if out.len() == before {
            let known: Vec<&str> = TcpState::ALL.iter().map(|s| s.name()).collect();
            return Err(ValueError::State { name: name.into(), known: known.join(", ") });
        }
    }
    Ok(out)
}

/// Status bits: a comma list of names, each optionally negated with `!`
/// (`ASSURED,!SEEN_REPLY`). Returns (bits that must be set, bits that must be clear).
/// `UNSET` alone, conntrack's name for no bit, gives `(0, 0)`: a create without status
/// bits; a selection refuses it, as the kernel refuses `conntrack -L -u UNSET` (EINVAL).
pub fn parse_status(s: &str) -> Result<(u32, u32), ValueError> {
    let items = comma_list(s, "status")?;
    if items.iter().any(|i| i.trim_start_matches(['!', '~']).eq_ignore_ascii_case("UNSET")) {
        return match items[..] {
            [only] if only.eq_ignore_ascii_case("UNSET") => Ok((0, 0)),
            _ => Err(ValueError::Unset(s.into())),
        };
    }
    let (mut set, mut clear) = (0, 0);
    for item in items {
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

/// An address mask (`--mask-src 255.255.0.0`, `ffff:ffff::`) as its prefix length: the
/// address and the number of leading ones. A mask whose ones are not contiguous is refused
/// (conntrack applies it bit by bit; ctguard selects by prefix).
pub fn parse_mask(s: &str) -> Result<(IpAddr, u8), ValueError> {
    let bad = || ValueError::Mask(s.into());
    let addr: IpAddr = s.parse().map_err(|_| bad())?;
    let (ones, zeros) = match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            (bits.leading_ones(), bits.trailing_zeros())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            (bits.leading_ones(), bits.trailing_zeros())
        }
    };
    let width = if addr.is_ipv4() { 32 } else { 128 };
    // Contiguous: the leading ones and the trailing zeros make up the whole width.
    if ones + zeros.min(width) < width {
        return Err(bad());
    }
    Ok((addr, ones as u8))
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

    #[test]
    fn issue_16_7_a_stray_comma_in_a_list_is_an_error() {
        assert_eq!(comma_list(" A , B", "state"), Ok(vec!["A", "B"]));
        for bad in ["ESTABLISHED,", ",ESTABLISHED", "SYN_SENT,,ESTABLISHED", "A, ,B"] {
            let e = comma_list(bad, "state").unwrap_err();
            assert_eq!(e, ValueError::EmptyItem { what: "state", list: bad.into() });
            assert!(parse_states(bad).is_err(), "{bad}");
        }
        assert!(matches!(parse_status("ASSURED,"), Err(ValueError::EmptyItem { .. })));
        for nothing in ["", ",", " , "] {
            assert_eq!(comma_list(nothing, "state"), Err(ValueError::Empty("state")));
        }
    }

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

    /// conntrack's `-n`/`-g`/`-j` over vectors: the bare flag takes any NATed flow; with an
    /// address the address, with a port also a changed port; both flags: both; any: either.
    #[test]
    fn issue_12_nat_selection_follows_conntrack() {
        use crate::flow::NatTarget;
        let to = |s: &str| NatMatch::To(parse_nat_target(s).unwrap());
        let done = Status::SRC_NAT_DONE | Status::DST_NAT_DONE;
        // DNAT 192.0.2.1:80 -> 10.9.9.9:8080.
        let mut dnat = tcp("10.0.0.5", "192.0.2.1", 40000, 80, TcpState::Established);
        dnat.reply.src = "10.9.9.9".parse().unwrap();
        dnat.reply.l4 = crate::flow::L4::Ports { src: 8080, dst: 40000 };
        dnat.status.0 |= Status::DST_NAT | done;
        // SNAT 10.0.0.6 -> 203.0.113.1, port kept.
        let mut snat = tcp("10.0.0.6", "192.0.2.1", 40000, 80, TcpState::Established);
        snat.reply.dst = "203.0.113.1".parse().unwrap();
        snat.status.0 |= Status::SRC_NAT | done;
        // Same tuples as a NAT, but no NAT_DONE: conntrack -I -r/-q, not NAT.
        let mut custom = dnat.clone();
        custom.status.0 &= !(Status::DST_NAT | done);
        let plain = tcp("10.0.0.7", "192.0.2.1", 1, 80, TcpState::Established);
        let sel = |src, dst, either| Selector {
            nat: NatSelect { src, dst, either },
            ..Selector::default()
        };
        let picks = |s: &Selector| -> Vec<bool> {
            [&dnat, &snat, &custom, &plain].iter().map(|f| s.matches(f)).collect()
        };
        let any = Some(NatMatch::Any);
        assert_eq!(picks(&sel(any, None, None)), [false, true, false, false]);
        assert_eq!(picks(&sel(None, any, None)), [true, false, false, false]);
        assert_eq!(picks(&sel(None, None, any)), [true, true, false, false]);
        assert_eq!(picks(&sel(any, any, None)), [false, false, false, false], "both");
        assert_eq!(picks(&sel(None, Some(to("10.9.9.9")), None)), [true, false, false, false]);
        assert!(picks(&sel(None, Some(to("10.9.9.9:8080")), None))[0]);
        assert!(!picks(&sel(None, Some(to("10.9.9.9:8081")), None))[0]);
        assert!(!picks(&sel(None, Some(to("10.9.9.8")), None))[0]);
        // The port only counts when NAT changed it (IS_SPAT): SNAT kept 40000.
        assert!(picks(&sel(Some(to("203.0.113.1")), None, None))[1]);
        assert!(!picks(&sel(Some(to("203.0.113.1:40000")), None, None))[1]);
        assert_eq!(picks(&sel(None, None, Some(to("203.0.113.1")))), [false, true, false, false]);
        assert!(!sel(any, None, None).is_empty() && sel(None, None, None).nat.is_empty());
        assert_eq!(
            parse_nat_target("[fd00::9]:8080").unwrap(),
            NatTarget { addr: "fd00::9".parse().unwrap(), port: Some(8080) }
        );
        assert_eq!(parse_nat_target("fd00::9").unwrap().port, None);
        assert_eq!(parse_nat_target("[fd00::9]").unwrap().port, None);
        for bad in ["1.2.3", "10.9.9.9:70000", "10.9.9.9:", ":80", "[fd00::9]:x", ""] {
            assert!(parse_nat_target(bad).is_err(), "{bad}");
        }
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
