//! The conntrack entry as people think of it: typed, flat, and free of netlink.
//!
//! `ctnetlink` decodes kernel bytes into these types; everything else (selectors, tallies,
//! output) reads only these. Values the kernel may grow (protocol states, status bits,
//! attributes) keep what they do not know instead of failing.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// Address family of a flow (`nfgen_family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Family {
    /// AF_INET.
    Ipv4,
    /// AF_INET6.
    Ipv6,
    /// Anything else the kernel reports.
    Other(u8),
}

impl Family {
    /// The `AF_*` number.
    pub fn number(self) -> u8 {
        match self {
            Family::Ipv4 => 2,
            Family::Ipv6 => 10,
            Family::Other(n) => n,
        }
    }

    /// From an `AF_*` number.
    pub fn from_number(n: u8) -> Family {
        match n {
            2 => Family::Ipv4,
            10 => Family::Ipv6,
            n => Family::Other(n),
        }
    }

    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// `ipv4`, `ipv6`, or `unknown`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
            Family::Other(_) => "unknown",
        }
    }
}

/// Layer-4 protocol number, with the names `conntrack -L` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Proto(pub u8);

impl Proto {
    /// ICMP.
    pub const ICMP: Proto = Proto(1);
    /// TCP.
    pub const TCP: Proto = Proto(6);
    /// UDP.
    pub const UDP: Proto = Proto(17);
    /// GRE.
    pub const GRE: Proto = Proto(47);
    /// DCCP.
    pub const DCCP: Proto = Proto(33);
    /// ICMPv6.
    pub const ICMPV6: Proto = Proto(58);
    /// SCTP.
    pub const SCTP: Proto = Proto(132);
    /// UDP-Lite.
    pub const UDPLITE: Proto = Proto(136);

    const NAMES: [(&'static str, Proto); 8] = [
        ("tcp", Proto::TCP),
        ("udp", Proto::UDP),
        ("icmp", Proto::ICMP),
        ("icmpv6", Proto::ICMPV6),
        ("sctp", Proto::SCTP),
        ("dccp", Proto::DCCP),
        ("gre", Proto::GRE),
        ("udplite", Proto::UDPLITE),
    ];

    /// The protocol's name, or `unknown`: libnetfilter_conntrack's `proto2str[]`, what
    /// `conntrack -L` prints.
    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, p)| *p == self).map_or("unknown", |(n, _)| n)
    }

    /// Parses a name (`tcp`, case-insensitive) or a number (`6`).
    pub fn parse(s: &str) -> Option<Proto> {
        if let Ok(n) = s.parse::<u8>() {
            return Some(Proto(n));
        }
        let lower = s.to_ascii_lowercase();
        let lower = if lower == "ipv6-icmp" { "icmpv6".to_string() } else { lower };
        Self::NAMES.iter().find(|(n, _)| *n == lower).map(|(_, p)| *p)
    }

    /// True for protocols whose tuples carry ports. GRE counts: the kernel sends its 16-bit
    /// keys in `CTA_PROTO_SRC_PORT`/`DST_PORT` (nf_conntrack_proto_gre.c).
    pub fn has_ports(self) -> bool {
        matches!(
            self,
            Proto::TCP | Proto::UDP | Proto::SCTP | Proto::DCCP | Proto::UDPLITE | Proto::GRE
        )
    }

    /// True for ICMP and ICMPv6, whose tuples carry type, code and id.
    pub fn is_icmp(self) -> bool {
        matches!(self, Proto::ICMP | Proto::ICMPV6)
    }
}

/// The layer-4 part of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum L4 {
    /// Source and destination ports (TCP, UDP, SCTP, DCCP, UDP-Lite).
    Ports {
        /// Source port.
        src: u16,
        /// Destination port.
        dst: u16,
    },
    /// ICMP or ICMPv6 type, code and identifier.
    Icmp {
        /// ICMP type.
        kind: u8,
        /// ICMP code.
        code: u8,
        /// ICMP identifier.
        id: u16,
    },
    /// No layer-4 fields (GRE keys and other protocols are not modelled).
    #[default]
    None,
}

/// One direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Ports or ICMP fields.
    pub l4: L4,
    /// Directional zone (`CTA_TUPLE_ZONE`), when the kernel sends one.
    pub zone: Option<u16>,
}

impl Default for Tuple {
    fn default() -> Self {
        Tuple {
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            l4: L4::None,
            zone: None,
        }
    }
}

impl Tuple {
    /// Source port, if the tuple has ports.
    pub fn sport(&self) -> Option<u16> {
        match self.l4 {
            L4::Ports { src, .. } => Some(src),
            _ => None,
        }
    }

    /// Destination port, if the tuple has ports.
    pub fn dport(&self) -> Option<u16> {
        match self.l4 {
            L4::Ports { dst, .. } => Some(dst),
            _ => None,
        }
    }

    /// The tuple seen from the other side: addresses and ports swapped.
    pub fn inverse(&self) -> Tuple {
        let l4 = match self.l4 {
            L4::Ports { src, dst } => L4::Ports { src: dst, dst: src },
            // Echo request (8 / 128) is answered by echo reply (0 / 129); other types keep theirs.
            L4::Icmp { kind, code, id } => L4::Icmp {
                kind: match kind {
                    8 => 0,
                    0 => 8,
                    128 => 129,
                    129 => 128,
                    k => k,
                },
                code,
                id,
            },
            L4::None => L4::None,
        };
        Tuple { src: self.dst, dst: self.src, l4, zone: self.zone }
    }
}

macro_rules! state_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $num:literal => $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $(#[doc = $text] $variant,)*
            /// A value this build does not know.
            Other(u8),
        }

        impl $name {
            /// Every known state, in kernel order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// From the kernel's number.
            pub fn from_number(n: u8) -> Self {
                match n {
                    $($num => $name::$variant,)*
                    n => $name::Other(n),
                }
            }

            /// The kernel's number.
            pub fn number(self) -> u8 {
                match self {
                    $($name::$variant => $num,)*
                    $name::Other(n) => n,
                }
            }

            /// The name `conntrack -L` prints.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                    $name::Other(_) => "UNKNOWN",
                }
            }

            /// Parses a name, case-insensitively.
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|st| st.name().eq_ignore_ascii_case(s))
            }
        }
    };
}

state_enum! {
    /// TCP connection-tracking state (`enum tcp_conntrack`, include/uapi/linux/netfilter/nf_conntrack_tcp.h).
    TcpState {
        None = 0 => "NONE",
        SynSent = 1 => "SYN_SENT",
        SynRecv = 2 => "SYN_RECV",
        Established = 3 => "ESTABLISHED",
        FinWait = 4 => "FIN_WAIT",
        CloseWait = 5 => "CLOSE_WAIT",
        LastAck = 6 => "LAST_ACK",
        TimeWait = 7 => "TIME_WAIT",
        Close = 8 => "CLOSE",
        SynSent2 = 9 => "SYN_SENT2",
    }
}

state_enum! {
    /// SCTP state (`enum sctp_conntrack`, include/uapi/linux/netfilter/nf_conntrack_sctp.h).
    SctpState {
        None = 0 => "NONE",
        Closed = 1 => "CLOSED",
        CookieWait = 2 => "COOKIE_WAIT",
        CookieEchoed = 3 => "COOKIE_ECHOED",
        Established = 4 => "ESTABLISHED",
        ShutdownSent = 5 => "SHUTDOWN_SENT",
        ShutdownRecd = 6 => "SHUTDOWN_RECD",
        ShutdownAckSent = 7 => "SHUTDOWN_ACK_SENT",
        HeartbeatSent = 8 => "HEARTBEAT_SENT",
        HeartbeatAcked = 9 => "HEARTBEAT_ACKED",
    }
}

state_enum! {
    /// DCCP state (`enum ct_dccp_states`, include/uapi/linux/netfilter/nf_conntrack_common.h).
    DccpState {
        None = 0 => "NONE",
        Request = 1 => "REQUEST",
        Respond = 2 => "RESPOND",
        PartOpen = 3 => "PARTOPEN",
        Open = 4 => "OPEN",
        CloseReq = 5 => "CLOSEREQ",
        Closing = 6 => "CLOSING",
        TimeWait = 7 => "TIMEWAIT",
        Ignore = 8 => "IGNORE",
        Invalid = 9 => "INVALID",
    }
}

/// The protocol state of a stateful protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ProtoState {
    /// TCP.
    Tcp(TcpState),
    /// SCTP.
    Sctp(SctpState),
    /// DCCP.
    Dccp(DccpState),
}

impl ProtoState {
    /// The name `conntrack -L` prints.
    pub fn name(self) -> &'static str {
        match self {
            ProtoState::Tcp(s) => s.name(),
            ProtoState::Sctp(s) => s.name(),
            ProtoState::Dccp(s) => s.name(),
        }
    }
}

/// Connection status bits (`enum ip_conntrack_status`, include/uapi/linux/netfilter/nf_conntrack_common.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Status(pub u32);

impl Status {
    /// IPS_EXPECTED.
    pub const EXPECTED: u32 = 1 << 0;
    /// IPS_SEEN_REPLY.
    pub const SEEN_REPLY: u32 = 1 << 1;
    /// IPS_ASSURED.
    pub const ASSURED: u32 = 1 << 2;
    /// IPS_CONFIRMED.
    pub const CONFIRMED: u32 = 1 << 3;
    /// IPS_SRC_NAT.
    pub const SRC_NAT: u32 = 1 << 4;
    /// IPS_DST_NAT.
    pub const DST_NAT: u32 = 1 << 5;
    /// IPS_SRC_NAT_DONE: the source manipulation was set up (perhaps a null binding).
    pub const SRC_NAT_DONE: u32 = 1 << 7;
    /// IPS_DST_NAT_DONE: the destination manipulation was set up (perhaps a null binding).
    pub const DST_NAT_DONE: u32 = 1 << 8;
    /// IPS_FIXED_TIMEOUT.
    pub const FIXED_TIMEOUT: u32 = 1 << 10;
    /// IPS_DYING.
    pub const DYING: u32 = 1 << 9;
    /// IPS_OFFLOAD.
    pub const OFFLOAD: u32 = 1 << 14;
    /// IPS_HW_OFFLOAD.
    pub const HW_OFFLOAD: u32 = 1 << 15;

    /// Bit names, in bit order (the uapi names without `IPS_`).
    pub const NAMES: [&'static str; 17] = [
        "EXPECTED",
        "SEEN_REPLY",
        "ASSURED",
        "CONFIRMED",
        "SRC_NAT",
        "DST_NAT",
        "SEQ_ADJUST",
        "SRC_NAT_DONE",
        "DST_NAT_DONE",
        "DYING",
        "FIXED_TIMEOUT",
        "TEMPLATE",
        "UNTRACKED",
        "HELPER",
        "OFFLOAD",
        "HW_OFFLOAD",
        "NAT_CLASH",
    ];

    /// True when every bit of `bits` is set.
    pub fn has(self, bits: u32) -> bool {
        self.0 & bits == bits
    }

    /// The bit of a name (case-insensitive), e.g. `ASSURED`.
    pub fn bit_of(name: &str) -> Option<u32> {
        Self::NAMES.iter().position(|n| n.eq_ignore_ascii_case(name)).map(|i| 1 << i)
    }

    /// Names of the set bits; unknown bits as `BIT<n>`.
    pub fn names(self) -> impl Iterator<Item = String> {
        (0..32).filter(move |i| self.0 & (1 << i) != 0).map(|i| match Self::NAMES.get(i) {
            Some(n) => (*n).to_string(),
            None => format!("BIT{i}"),
        })
    }
}

/// Where one side of a flow is NATed to: an address, and the port for protocols with ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatTarget {
    /// The address the kernel rewrites to.
    pub addr: IpAddr,
    /// The port it rewrites to; `None` for protocols without ports, or (when asking) to keep
    /// the original port as the kernel can.
    pub port: Option<u16>,
}

impl fmt::Display for NatTarget {
    /// `IP`, `IP:PORT`, `[IPv6]:PORT`: what `--src-nat`/`--dst-nat` take.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.addr, self.port) {
            (a, None) => write!(f, "{a}"),
            (IpAddr::V4(a), Some(p)) => write!(f, "{a}:{p}"),
            (IpAddr::V6(a), Some(p)) => write!(f, "[{a}]:{p}"),
        }
    }
}

/// A flow's NAT binding: what SNAT rewrites the source to, and what DNAT rewrites the
/// destination to. The kernel does not send it as such in a dump (`CTA_NAT_SRC`/`CTA_NAT_DST`
/// are request-only); it is what the status bits and the reply tuple say ([`Flow::nat`]), and
/// what a create sends so that the kernel redoes it (`ctnetlink_setup_nat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Nat {
    /// Source NAT.
    pub src: Option<NatTarget>,
    /// Destination NAT.
    pub dst: Option<NatTarget>,
}

impl Nat {
    /// True when neither direction is NATed.
    pub fn is_empty(&self) -> bool {
        self.src.is_none() && self.dst.is_none()
    }
}

/// Packet and byte counters of one direction (`CTA_COUNTERS_*`, needs `nf_conntrack_acct=1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// An attribute this build does not decode, kept as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttr {
    /// The attribute type (`CTA_*` number).
    pub kind: u16,
    /// Its payload.
    pub value: Vec<u8>,
}

/// One conntrack entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Address family.
    pub family: Family,
    /// Layer-4 protocol.
    pub proto: Proto,
    /// Original direction.
    pub orig: Tuple,
    /// Reply direction; differs from `orig.inverse()` when the flow is NATed.
    pub reply: Tuple,
    /// TCP, SCTP or DCCP state.
    pub state: Option<ProtoState>,
    /// Status bits.
    pub status: Status,
    /// Seconds left before the entry expires.
    pub timeout: Option<u32>,
    /// Connection mark.
    pub mark: Option<u32>,
    /// Conntrack zone (`CTA_ZONE`); absent means the default zone 0.
    pub zone: Option<u16>,
    /// The kernel's 32-bit entry id (`CTA_ID`), stable for the entry's life.
    pub id: Option<u32>,
    /// Reference count (`CTA_USE`).
    pub use_count: Option<u32>,
    /// Original-direction counters.
    pub counters_orig: Option<Counter>,
    /// Reply-direction counters.
    pub counters_reply: Option<Counter>,
    /// Start time, ns since the epoch (`CTA_TIMESTAMP_START`, needs `nf_conntrack_timestamp=1`).
    pub start_ns: Option<u64>,
    /// Stop time, ns since the epoch (only in DESTROY events).
    pub stop_ns: Option<u64>,
    /// Connection labels (`CTA_LABELS`), up to 128 bits, bit 0 in the lowest bit.
    pub labels: Option<u128>,
    /// Helper name (`CTA_HELP`), when a helper is attached.
    pub helper: Option<HelperName>,
    /// Security mark (`CTA_SECMARK`).
    pub secmark: Option<u32>,
    /// Security context (`CTA_SECCTX`), e.g. `system_u:object_r:unlabeled_t:s0`.
    pub secctx: Option<SecCtx>,
    /// Attributes this build does not decode.
    pub unknown: Vec<RawAttr>,
}

/// A conntrack helper name (at most 16 bytes in the kernel, `NF_CT_HELPER_NAME_LEN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct HelperName {
    bytes: [u8; 16],
    len: u8,
}

impl HelperName {
    /// From raw bytes, trailing NULs dropped, cut at 16 bytes.
    pub fn new(raw: &[u8]) -> HelperName {
        let raw = raw.split(|b| *b == 0).next().unwrap_or(&[]);
        let len = raw.len().min(16);
        let mut bytes = [0; 16];
        bytes[..len].copy_from_slice(&raw[..len]);
        HelperName { bytes, len: len as u8 }
    }

    /// The name as text (lossy).
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes[..self.len as usize])
    }
}

/// A security context name (`CTA_SECCTX_NAME`, without its NUL). The contexts SELinux gives
/// conntrack entries are short, so they are kept inline: an SELinux host sends one with every
/// entry, and the dump decodes without allocating; a longer one goes to the heap.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecCtx(SecCtxBytes);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SecCtxBytes {
    Inline { bytes: [u8; SecCtx::INLINE], len: u8 },
    Heap(Box<[u8]>),
}

impl SecCtx {
    const INLINE: usize = 62;

    /// From the attribute's bytes, cut at the first NUL.
    pub fn new(raw: &[u8]) -> SecCtx {
        let raw = raw.split(|b| *b == 0).next().unwrap_or(&[]);
        if raw.len() <= Self::INLINE {
            let mut bytes = [0; Self::INLINE];
            bytes[..raw.len()].copy_from_slice(raw);
            SecCtx(SecCtxBytes::Inline { bytes, len: raw.len() as u8 })
        } else {
            SecCtx(SecCtxBytes::Heap(raw.into()))
        }
    }

    /// The context's bytes, as the kernel sent them.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            SecCtxBytes::Inline { bytes, len } => &bytes[..usize::from(*len)],
            SecCtxBytes::Heap(b) => b,
        }
    }

    /// The context as text (lossy).
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            family: Family::Ipv4,
            proto: Proto(0),
            orig: Tuple::default(),
            reply: Tuple::default(),
            state: None,
            status: Status::default(),
            timeout: None,
            mark: None,
            zone: None,
            id: None,
            use_count: None,
            counters_orig: None,
            counters_reply: None,
            start_ns: None,
            stop_ns: None,
            labels: None,
            helper: None,
            secmark: None,
            secctx: None,
            unknown: Vec::new(),
        }
    }
}

/// An entry's identity for the lifetime of the entry: `CTA_ID` in the upper half, a hash of
/// what never changes in an entry's life (family, protocol, original tuple, zone) in the lower
/// half. See [`Flow::identity`].
pub type EntryId = u64;

impl Flow {
    /// A flow in a few words for messages: `tcp 10.0.0.1:40000 -> 10.0.0.2:443 zone 3`.
    pub fn brief(&self) -> String {
        let end = |a: std::net::IpAddr, port: Option<u16>| match (a, port) {
            (std::net::IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
            (a, Some(p)) => format!("{a}:{p}"),
            (a, None) => a.to_string(),
        };
        let (sp, dp) = match self.orig.l4 {
            L4::Ports { src, dst } => (Some(src), Some(dst)),
            _ => (None, None),
        };
        let icmp = match self.orig.l4 {
            L4::Icmp { kind, code, id } => format!(" type {kind} code {code} id {id}"),
            _ => String::new(),
        };
        let zone = self.zone.map(|z| format!(" zone {z}")).unwrap_or_default();
        format!(
            "{} {} -> {}{icmp}{zone}",
            self.proto,
            end(self.orig.src, sp),
            end(self.orig.dst, dp)
        )
    }

    /// A flow of `proto` along `orig` whose reply is the plain inverse (no NAT), as
    /// `conntrack -I` without reply options creates it; every other field empty.
    pub fn new(proto: Proto, orig: Tuple) -> Flow {
        Flow { family: Family::of(orig.src), proto, orig, reply: orig.inverse(), ..Flow::default() }
    }

    /// What tells this entry from every other one in the table, and from a later entry on the
    /// same tuple: what a resumed dump repeats, and what the live table keys by.
    ///
    /// The id alone is not enough: it is a 32-bit hash of the entry (`nf_ct_get_id`), so a table
    /// of 260,000 entries holds about eight colliding pairs. The tuple hash is Fx (a few
    /// nanoseconds: this runs for every dumped entry) and deterministic, so a dump thread and an
    /// event loop compute the same identity for the same entry.
    pub fn identity(&self) -> EntryId {
        use std::hash::{Hash, Hasher};
        let mut h = rustc_hash::FxHasher::default();
        (self.family, self.proto, &self.orig, self.zone_id()).hash(&mut h);
        (u64::from(self.id.unwrap_or(0)) << 32) | (h.finish() >> 32)
    }

    /// Resets every field, keeping the `unknown` vector's allocation for reuse.
    pub fn clear(&mut self) {
        let mut unknown = std::mem::take(&mut self.unknown);
        unknown.clear();
        *self = Flow { unknown, ..Flow::default() };
    }

    /// The entry's zone id (0 when absent). A zone set for one direction only comes as a
    /// tuple zone without `CTA_ZONE`; its id is still the entry's, and the kernel's zone
    /// filter (`nf_ct_zone_equal_any`) compares it.
    pub fn zone_id(&self) -> u16 {
        self.zone.or(self.orig.zone).or(self.reply.zone).unwrap_or(0)
    }

    /// The zone id the kernel looks the original tuple up in (`nf_ct_zone_id(zone,
    /// IP_CT_DIR_ORIGINAL)`): the entry's zone when it applies to both directions
    /// (`CTA_ZONE`) or to the original one (`CTA_TUPLE_ZONE` in the original tuple), else 0.
    pub fn orig_zone_id(&self) -> u16 {
        self.zone.or(self.orig.zone).unwrap_or(0)
    }

    /// The zone id of the reply direction, as [`Flow::orig_zone_id`].
    pub fn reply_zone_id(&self) -> u16 {
        self.zone.or(self.reply.zone).unwrap_or(0)
    }

    /// The TCP state, if this is a TCP flow with one.
    pub fn tcp_state(&self) -> Option<TcpState> {
        match self.state {
            Some(ProtoState::Tcp(s)) => Some(s),
            _ => None,
        }
    }

    /// The NAT binding the kernel reports. `nf_nat_setup_info` sets `IPS_SRC_NAT` or
    /// `IPS_DST_NAT` only when it changed the tuple, and writes the change into the reply
    /// tuple: SNAT to the reply destination (and its port), DNAT to the reply source (and its
    /// port). ICMP ids are not carried: the kernel keeps an id that is unique.
    pub fn nat(&self) -> Nat {
        let port = |p: Option<u16>| if self.proto.has_ports() { p } else { None };
        let target = |bit, addr, p| self.status.has(bit).then(|| NatTarget { addr, port: port(p) });
        Nat {
            src: target(Status::SRC_NAT, self.reply.dst, self.reply.dport()),
            dst: target(Status::DST_NAT, self.reply.src, self.reply.sport()),
        }
    }

    /// The reply tuple before NAT: the inverse of the original, in the reply's zone. A create
    /// that asks for NAT sends this one and lets the kernel rewrite it, as it does for a packet
    /// (a reply already rewritten would leave nothing to rewrite, and no NAT status).
    pub fn unnated_reply(&self) -> Tuple {
        Tuple { zone: self.reply.zone, ..self.orig.inverse() }
    }

    /// conntrack's test of a source-NATed flow (libnetfilter_conntrack's `NFCT_GOPT_IS_SNAT`
    /// and `IS_SPAT`): the source manipulation is done and changed (address, port). The port
    /// compares the reply's destination port (or ICMP id) with the original source's.
    pub fn snat_changed(&self) -> (bool, bool) {
        if !self.status.has(Status::SRC_NAT_DONE) {
            return (false, false);
        }
        (self.reply.dst != self.orig.src, l4_id(&self.reply, false) != l4_id(&self.orig, true))
    }

    /// conntrack's test of a destination-NATed flow (`NFCT_GOPT_IS_DNAT`, `IS_DPAT`).
    pub fn dnat_changed(&self) -> (bool, bool) {
        if !self.status.has(Status::DST_NAT_DONE) {
            return (false, false);
        }
        (self.reply.src != self.orig.dst, l4_id(&self.reply, true) != l4_id(&self.orig, false))
    }

    /// True when the reply tuple is not the plain inverse of the original (NAT).
    pub fn is_nated(&self) -> bool {
        self.reply.src != self.orig.dst || self.reply.dst != self.orig.src
    }
}

/// A tuple's source (`src`) or destination port, or its ICMP id for either: what NAT may
/// rewrite besides the address.
fn l4_id(t: &Tuple, src: bool) -> Option<u16> {
    match t.l4 {
        L4::Ports { src: s, dst: d } => Some(if src { s } else { d }),
        L4::Icmp { id, .. } => Some(id),
        L4::None => None,
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A TCP flow for unit tests: no NAT, ASSURED and SEEN_REPLY, an hour left, mark 0.
#[cfg(test)]
pub(crate) fn test_tcp(src: &str, dst: &str, sport: u16, dport: u16, state: TcpState) -> Flow {
    let parse = |s: &str| s.parse::<IpAddr>().expect("test address");
    let orig = Tuple {
        src: parse(src),
        dst: parse(dst),
        l4: L4::Ports { src: sport, dst: dport },
        zone: None,
    };
    Flow {
        state: Some(ProtoState::Tcp(state)),
        status: Status(Status::ASSURED | Status::SEEN_REPLY),
        timeout: Some(3600),
        mark: Some(0),
        ..Flow::new(Proto::TCP, orig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_keep_unknown_values() {
        for s in TcpState::ALL {
            assert_eq!(TcpState::from_number(s.number()), *s);
            assert_eq!(TcpState::parse(&s.name().to_lowercase()), Some(*s));
        }
        assert_eq!(TcpState::from_number(42), TcpState::Other(42));
        assert_eq!(TcpState::Other(42).number(), 42);
        assert_eq!(SctpState::parse("cookie_wait"), Some(SctpState::CookieWait));
        assert_eq!(TcpState::parse("ESTABLISHEDX"), None);
    }

    #[test]
    fn proto_names_and_numbers() {
        assert_eq!(Proto::parse("TCP"), Some(Proto::TCP));
        assert_eq!(Proto::parse("58"), Some(Proto::ICMPV6));
        assert_eq!(Proto::parse("ipv6-icmp"), Some(Proto::ICMPV6));
        assert_eq!(Proto::parse("tcpx"), None);
        assert_eq!(Proto(200).name(), "unknown");
    }

    #[test]
    fn status_names_include_unknown_bits() {
        let s = Status(Status::ASSURED | Status::SEEN_REPLY | (1 << 30));
        let names: Vec<_> = s.names().collect();
        assert_eq!(names, ["SEEN_REPLY", "ASSURED", "BIT30"]);
        assert_eq!(Status::bit_of("assured"), Some(Status::ASSURED));
    }

    #[test]
    fn issue_11_5_secctx_keeps_short_contexts_inline_and_long_ones_whole() {
        let short = SecCtx::new(b"system_u:object_r:unlabeled_t:s0\0\0\0");
        assert_eq!(short.as_bytes(), b"system_u:object_r:unlabeled_t:s0");
        assert!(matches!(short.0, SecCtxBytes::Inline { .. }));
        let long = "system_u:object_r:container_t:s0:".to_string() + &"c1,".repeat(40);
        let kept = SecCtx::new(long.as_bytes());
        assert_eq!(kept.as_str(), long);
        assert!(matches!(kept.0, SecCtxBytes::Heap(_)));
        assert_eq!(SecCtx::new(b"").as_bytes(), b"");
    }

    #[test]
    fn issue_11_6_new_flow_replies_along_the_inverse() {
        let orig = Tuple {
            src: "2001:db8::2".parse().unwrap(),
            dst: "2001:db8::1".parse().unwrap(),
            l4: L4::Icmp { kind: 128, code: 0, id: 7 },
            zone: None,
        };
        let f = Flow::new(Proto::ICMPV6, orig);
        assert_eq!((f.family, f.proto, f.orig), (Family::Ipv6, Proto::ICMPV6, orig));
        assert_eq!(f.reply.l4, L4::Icmp { kind: 129, code: 0, id: 7 });
        assert_eq!((f.reply.src, f.reply.dst), (orig.dst, orig.src));
        assert!(!f.is_nated());
    }

    /// One identity serves the dump's repeat filter and the live table: the id and the tuple.
    #[test]
    fn issue_11_6_identity_is_the_id_and_the_tuple() {
        let mut a = test_tcp("172.16.3.5", "10.0.0.1", 40000, 443, TcpState::Established);
        a.id = Some(0xdead_beef);
        let mut b = a.clone();
        b.orig.l4 = L4::Ports { src: 40001, dst: 443 };
        assert_eq!(a.identity() >> 32, 0xdead_beef);
        assert_ne!(a.identity(), b.identity(), "same id, another tuple");
        // What changes in an entry's life does not change its identity.
        let mut later = a.clone();
        later.state = Some(ProtoState::Tcp(TcpState::TimeWait));
        later.timeout = Some(5);
        later.counters_orig = Some(Counter { packets: 9, bytes: 900 });
        assert_eq!(later.identity(), a.identity());
        let mut zoned = a.clone();
        zoned.zone = Some(3);
        assert_ne!(zoned.identity(), a.identity());
    }

    #[test]
    fn clear_keeps_unknown_capacity() {
        let mut f = Flow::default();
        f.unknown.push(RawAttr { kind: 99, value: vec![1] });
        f.mark = Some(3);
        f.clear();
        assert!(f.unknown.is_empty() && f.unknown.capacity() >= 1);
        assert_eq!(f.mark, None);
    }
}
