//! JSON Lines wire format for flows: one JSON object per line, written by `list --json` and
//! `--save`, read back by `load`.
//!
//! The schema is documented in `docs/json-schema.md`. In short: [`FlowRecord`] is one line,
//! both ways: [`read_flows`] parses it (owning what it read), and [`write_flow`] writes it
//! from a borrowed [`Flow`] (`FlowRecord::from(&flow)` borrows the names and the raw
//! attributes and keeps the status as bits, so a line costs no allocation).
//!
//! Values this build does not name keep their number so that they round-trip:
//! an unknown family is written `unknown(N)`, an unknown protocol state `UNKNOWN(N)`,
//! an unknown status bit `BIT<n>`, and an unknown protocol `"unknown"` next to `proto_num`.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::net::IpAddr;

use serde::{Deserialize, Serialize, Serializer};

use crate::flow::{
    Counter, DccpState, Family, Flow, HelperName, L4, Nat, NatTarget, Proto, ProtoState, RawAttr,
    SctpState, SecCtx, Status, TcpState, Tuple,
};

/// One flow as a JSON object: one line, read or written.
///
/// Optional fields are omitted when absent and accepted as missing or `null` when read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowRecord<'a> {
    /// `ipv4`, `ipv6`, or `unknown(N)` for another `AF_*` number.
    pub family: Cow<'a, str>,
    /// Protocol name (`tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, `dccp`, `gre`, `udplite`) or
    /// `unknown`. On input a number (`"6"`) and `ipv6-icmp` are accepted too.
    pub proto: Cow<'a, str>,
    /// IP protocol number. Always written; on input it may be left out when `proto` is a name
    /// this build knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto_num: Option<u8>,
    /// TCP, SCTP or DCCP state name (`ESTABLISHED`), or `UNKNOWN(N)` for a state number this
    /// build does not name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Cow<'a, str>>,
    /// Original direction.
    pub orig: TupleRecord,
    /// Reply direction.
    pub reply: TupleRecord,
    /// Names of the set status bits in bit order (`SEEN_REPLY`, `ASSURED`, …; `BIT<n>` for bits
    /// without a name). Always written, may be left out on input.
    #[serde(default)]
    pub status: StatusField,
    /// The NAT binding ([`Flow::nat`]), omitted when the flow is not NATed. It says what
    /// `status` (`SRC_NAT`, `DST_NAT`) and `reply` say, in the terms `load` sends to the
    /// kernel; on input it must agree with them, and a line without it loads the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<NatRecord>,
    /// Seconds left before the entry expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    /// Connection mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<u32>,
    /// Conntrack zone (`CTA_ZONE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<u16>,
    /// Kernel entry id (`CTA_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// Reference count (`CTA_USE`), JSON key `use`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_count: Option<u32>,
    /// Packet and byte counters, present when either direction has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<CountersRecord>,
    /// Start time, ns since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ns: Option<u64>,
    /// Stop time, ns since the epoch (DESTROY events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_ns: Option<u64>,
    /// Connection labels as `0x`-prefixed lowercase hex without leading zeros (`0x5`); bit 0 is
    /// the lowest bit. A string because 128 bits do not fit a JSON number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Cow<'a, str>>,
    /// Helper name, at most 16 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helper: Option<Cow<'a, str>>,
    /// Security mark (`CTA_SECMARK`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secmark: Option<u32>,
    /// Security context (`CTA_SECCTX`), e.g. `system_u:object_r:unlabeled_t:s0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secctx: Option<Cow<'a, str>>,
    /// Attributes this build does not decode, kept as raw bytes; omitted when empty.
    #[serde(default, skip_serializing_if = "RawAttrs::is_empty")]
    pub raw_attrs: RawAttrs<'a>,
}

/// `status`: the names as read, or the bits of a flow being written.
#[derive(Debug, Clone, Eq)]
pub enum StatusField {
    /// Names as read, checked when the record becomes a [`Flow`].
    Names(Vec<String>),
    /// A flow's status word, written as the names of its set bits.
    Bits(Status),
}

impl Default for StatusField {
    fn default() -> Self {
        StatusField::Names(Vec::new())
    }
}

impl StatusField {
    fn names(&self) -> Vec<String> {
        match self {
            StatusField::Names(n) => n.clone(),
            StatusField::Bits(b) => bit_indices(b.0).map(|i| StatusBit(i).to_string()).collect(),
        }
    }
}

/// Equal when they write the same names.
impl PartialEq for StatusField {
    fn eq(&self, other: &Self) -> bool {
        self.names() == other.names()
    }
}

fn bit_indices(bits: u32) -> impl Iterator<Item = usize> {
    (0..32).filter(move |i| bits & (1 << i) != 0)
}

impl Serialize for StatusField {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StatusField::Names(names) => s.collect_seq(names),
            StatusField::Bits(b) => s.collect_seq(bit_indices(b.0).map(|i| AsStr(StatusBit(i)))),
        }
    }
}

impl<'de> Deserialize<'de> for StatusField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<String>::deserialize(d).map(StatusField::Names)
    }
}

/// `raw_attrs`: the records as read, or a flow's undecoded attributes being written.
#[derive(Debug, Clone, Eq)]
pub enum RawAttrs<'a> {
    /// Records as read, checked when the record becomes a [`Flow`].
    Read(Vec<RawAttrRecord>),
    /// A flow's attributes, written as `{"kind":N,"hex":"…"}`.
    Flow(&'a [RawAttr]),
}

impl Default for RawAttrs<'_> {
    fn default() -> Self {
        RawAttrs::Read(Vec::new())
    }
}

impl RawAttrs<'_> {
    /// How many attributes.
    pub fn len(&self) -> usize {
        match self {
            RawAttrs::Read(r) => r.len(),
            RawAttrs::Flow(f) => f.len(),
        }
    }

    /// No attributes.
    pub fn is_empty(&self) -> bool {
        match self {
            RawAttrs::Read(r) => r.is_empty(),
            RawAttrs::Flow(f) => f.is_empty(),
        }
    }

    fn into_records(self) -> Vec<RawAttrRecord> {
        match self {
            RawAttrs::Read(r) => r,
            RawAttrs::Flow(f) => f
                .iter()
                .map(|a| RawAttrRecord { kind: a.kind, hex: Hex(&a.value).to_string() })
                .collect(),
        }
    }
}

/// Equal when they write the same records.
impl PartialEq for RawAttrs<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.clone().into_records() == other.clone().into_records()
    }
}

impl Serialize for RawAttrs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Item<'a> {
            kind: u16,
            hex: AsStr<Hex<'a>>,
        }
        match self {
            RawAttrs::Read(r) => s.collect_seq(r),
            RawAttrs::Flow(f) => {
                s.collect_seq(f.iter().map(|a| Item { kind: a.kind, hex: AsStr(Hex(&a.value)) }))
            }
        }
    }
}

impl<'de> Deserialize<'de> for RawAttrs<'_> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<RawAttrRecord>::deserialize(d).map(RawAttrs::Read)
    }
}

/// One direction of a flow.
///
/// Exactly one of these shapes: `sport` + `dport` (port protocols), `icmp_type` + `icmp_code` +
/// `icmp_id` (ICMP, ICMPv6), or none of them (other protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TupleRecord {
    /// Source address, in its usual text form.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    /// Destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// ICMP type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// ICMP code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// ICMP identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_id: Option<u16>,
    /// Directional zone (`CTA_TUPLE_ZONE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<u16>,
}

/// `nat`: each NATed direction, the other omitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatRecord {
    /// Source NAT: what the original source is rewritten to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<NatTargetRecord>,
    /// Destination NAT: what the original destination is rewritten to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<NatTargetRecord>,
}

/// One NAT target: an address, and a port for protocols with ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatTargetRecord {
    /// The address.
    pub ip: IpAddr,
    /// The port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl From<Nat> for Option<NatRecord> {
    fn from(nat: Nat) -> Self {
        let target = |t: NatTarget| NatTargetRecord { ip: t.addr, port: t.port };
        (!nat.is_empty()).then(|| NatRecord { src: nat.src.map(target), dst: nat.dst.map(target) })
    }
}

/// Counters of both directions; a direction is omitted when the flow has none for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountersRecord {
    /// Original direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orig: Option<CounterRecord>,
    /// Reply direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<CounterRecord>,
}

/// Packets and bytes of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterRecord {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// An undecoded attribute: its `CTA_*` number and payload as lowercase hex (no `0x`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttrRecord {
    /// Attribute type.
    pub kind: u16,
    /// Payload, two hex digits per byte.
    pub hex: String,
}

/// Why a [`FlowRecord`] is not a valid [`Flow`]. Each message starts with the field's path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// `family` is not `ipv4`, `ipv6` or `unknown(N)`.
    #[error("family: unknown family {0:?} (expected \"ipv4\" or \"ipv6\")")]
    UnknownFamily(String),
    /// `proto` is neither a known name nor a number, and no usable `proto_num` is given.
    #[error("proto: unknown protocol {0:?}")]
    UnknownProto(String),
    /// `proto` and `proto_num` disagree.
    #[error("proto_num: {num} does not match proto {name:?}")]
    ProtoMismatch {
        /// The `proto` value.
        name: String,
        /// The `proto_num` value.
        num: u8,
    },
    /// `proto` is `unknown` and `proto_num` is missing.
    #[error("proto_num: required when proto is \"unknown\"")]
    MissingProtoNum,
    /// `state` is not a state of the flow's protocol.
    #[error("state: unknown {proto} state {state:?}")]
    UnknownState {
        /// The protocol name.
        proto: &'static str,
        /// The `state` value.
        state: String,
    },
    /// `state` is given for a protocol without states.
    #[error("state: protocol {0} has no state")]
    StateNotAllowed(String),
    /// A tuple address is not of the flow's family.
    #[error("{field}: address {addr} is not {family}")]
    FamilyMismatch {
        /// `orig.src`, `orig.dst`, `reply.src` or `reply.dst`.
        field: &'static str,
        /// The flow's family name.
        family: &'static str,
        /// The offending address.
        addr: IpAddr,
    },
    /// A tuple's layer-4 fields are incomplete, mixed, or wrong for the protocol.
    #[error("{field}: {reason}")]
    BadL4 {
        /// The field path, e.g. `orig.dport`.
        field: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `nat` says another binding than `status` and `reply` do.
    #[error("nat: {given} disagrees with status and reply, which say {derived}")]
    NatMismatch {
        /// The `nat` value, as JSON.
        given: String,
        /// What `status` and `reply` say, as JSON (`null`: not NATed).
        derived: String,
    },
    /// A `status` entry is not a status bit name.
    #[error("status: unknown status bit {0:?}")]
    UnknownStatus(String),
    /// `labels` is not `0x` followed by 1 to 32 hex digits.
    #[error("labels: {0:?} is not 0x followed by 1 to 32 hex digits")]
    BadLabels(String),
    /// `helper` is longer than 16 bytes or contains a NUL.
    #[error("helper: {0:?} is not a helper name (at most 16 bytes, no NUL)")]
    BadHelper(String),
    /// A `raw_attrs` payload is not an even number of hex digits.
    #[error("raw_attrs[{index}].hex: {hex:?} is not an even number of hex digits")]
    BadRawAttr {
        /// Position in `raw_attrs`.
        index: usize,
        /// The `hex` value.
        hex: String,
    },
}

/// Why [`read_flows`] could not produce a flow; every variant carries the 1-based line number.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Reading the input failed; the iterator ends after this.
    #[error("line {line}: read error: {error}")]
    Io {
        /// Line being read.
        line: usize,
        /// The I/O error.
        error: io::Error,
    },
    /// The line is longer than any flow line; reading stops there.
    #[error("line {line}: longer than {} KiB: not a JSON Lines flow file", .limit >> 10)]
    TooLong {
        /// Line number.
        line: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The line is not a JSON object of the expected shape (syntax, types, unknown fields).
    #[error("line {line}: {message}")]
    Json {
        /// Line number.
        line: usize,
        /// One-line reason, with the column.
        message: String,
    },
    /// The object is well formed but its values do not make a flow.
    #[error("line {line}: {error}")]
    Record {
        /// Line number.
        line: usize,
        /// Which field is bad and why.
        error: RecordError,
    },
}

impl LoadError {
    /// The 1-based line number the error is about.
    pub fn line(&self) -> usize {
        match self {
            LoadError::Io { line, .. }
            | LoadError::TooLong { line, .. }
            | LoadError::Json { line, .. }
            | LoadError::Record { line, .. } => *line,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Names shared by the owned and the borrowed serialisation.

/// `ipv4`, `ipv6`, `unknown(N)`.
struct FamilyName(Family);

impl fmt::Display for FamilyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Family::Other(n) => write!(f, "unknown({n})"),
            family => f.write_str(family.name()),
        }
    }
}

/// `ESTABLISHED`, `UNKNOWN(N)`.
struct StateName(ProtoState);

impl fmt::Display for StateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let number = match self.0 {
            ProtoState::Tcp(TcpState::Other(n))
            | ProtoState::Sctp(SctpState::Other(n))
            | ProtoState::Dccp(DccpState::Other(n)) => n,
            state => return f.write_str(state.name()),
        };
        write!(f, "UNKNOWN({number})")
    }
}

/// `0x…`.
struct LabelsHex(u128);

impl fmt::Display for LabelsHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Bytes as lowercase hex.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// One status bit: its name or `BIT<n>`.
struct StatusBit(usize);

impl fmt::Display for StatusBit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Status::NAMES.get(self.0) {
            Some(name) => f.write_str(name),
            None => write!(f, "BIT{}", self.0),
        }
    }
}

/// Serialises a `Display` value as a JSON string without an intermediate `String`.
struct AsStr<T>(T);

impl<T: fmt::Display> Serialize for AsStr<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Flow → record.

impl From<&Tuple> for TupleRecord {
    fn from(t: &Tuple) -> Self {
        let (mut sport, mut dport, mut icmp_type, mut icmp_code, mut icmp_id) =
            (None, None, None, None, None);
        match t.l4 {
            L4::Ports { src, dst } => (sport, dport) = (Some(src), Some(dst)),
            L4::Icmp { kind, code, id } => {
                (icmp_type, icmp_code, icmp_id) = (Some(kind), Some(code), Some(id))
            }
            L4::None => {}
        }
        TupleRecord {
            src: t.src,
            dst: t.dst,
            sport,
            dport,
            icmp_type,
            icmp_code,
            icmp_id,
            zone: t.zone,
        }
    }
}

impl From<Counter> for CounterRecord {
    fn from(c: Counter) -> Self {
        CounterRecord { packets: c.packets, bytes: c.bytes }
    }
}

fn counters_of(flow: &Flow) -> Option<CountersRecord> {
    if flow.counters_orig.is_none() && flow.counters_reply.is_none() {
        return None;
    }
    Some(CountersRecord {
        orig: flow.counters_orig.map(CounterRecord::from),
        reply: flow.counters_reply.map(CounterRecord::from),
    })
}

impl<'a> From<&'a Flow> for FlowRecord<'a> {
    /// The record of `flow`, borrowing from it: nothing is allocated for a known family,
    /// protocol and state, a UTF-8 helper and security context (the names of unknown values
    /// and the labels are formatted).
    fn from(flow: &'a Flow) -> Self {
        let shown = |known: Option<&'static str>, show: &dyn fmt::Display| match known {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(show.to_string()),
        };
        let family = match flow.family {
            Family::Other(_) => None,
            f => Some(f.name()),
        };
        let state = flow.state.map(|st| {
            let known = match st {
                ProtoState::Tcp(TcpState::Other(_))
                | ProtoState::Sctp(SctpState::Other(_))
                | ProtoState::Dccp(DccpState::Other(_)) => None,
                st => Some(st.name()),
            };
            shown(known, &StateName(st))
        });
        FlowRecord {
            family: shown(family, &FamilyName(flow.family)),
            proto: Cow::Borrowed(flow.proto.name()),
            proto_num: Some(flow.proto.0),
            state,
            orig: TupleRecord::from(&flow.orig),
            reply: TupleRecord::from(&flow.reply),
            status: StatusField::Bits(flow.status),
            nat: flow.nat().into(),
            timeout: flow.timeout,
            mark: flow.mark,
            zone: flow.zone,
            id: flow.id,
            use_count: flow.use_count,
            counters: counters_of(flow),
            start_ns: flow.start_ns,
            stop_ns: flow.stop_ns,
            labels: flow.labels.map(|l| Cow::Owned(LabelsHex(l).to_string())),
            helper: flow.helper.as_ref().map(HelperName::as_str),
            secmark: flow.secmark,
            secctx: flow.secctx.as_ref().map(SecCtx::as_str),
            raw_attrs: RawAttrs::Flow(&flow.unknown),
        }
    }
}

/// Writes `flow` as one JSON line (object + `\n`).
///
/// Builds nothing owned beyond a helper name that is not UTF-8; pass a buffered writer
/// (`BufWriter`, `StdoutLock` wrapped in one) when writing many flows.
pub fn write_flow(out: &mut impl Write, flow: &Flow) -> io::Result<()> {
    super::jsonl::write_line(out, &FlowRecord::from(flow))
}

// ---------------------------------------------------------------------------------------------
// Record → flow.

fn parse_family(s: &str) -> Result<Family, RecordError> {
    if s.eq_ignore_ascii_case("ipv4") {
        return Ok(Family::Ipv4);
    }
    if s.eq_ignore_ascii_case("ipv6") {
        return Ok(Family::Ipv6);
    }
    parse_unknown_number(s, "unknown")
        .map(Family::from_number)
        .ok_or_else(|| RecordError::UnknownFamily(s.to_string()))
}

/// Parses `<prefix>(N)` (prefix case-insensitive) into `N`.
fn parse_unknown_number(s: &str, prefix: &str) -> Option<u8> {
    let head = s.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let digits = s[prefix.len()..].strip_prefix('(')?.strip_suffix(')')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn parse_proto(name: &str, num: Option<u8>) -> Result<Proto, RecordError> {
    let unknown = name.eq_ignore_ascii_case("unknown");
    match (Proto::parse(name), num) {
        (Some(p), None) => Ok(p),
        (Some(p), Some(n)) if p.0 == n => Ok(p),
        (Some(_), Some(n)) => Err(RecordError::ProtoMismatch { name: name.to_string(), num: n }),
        (None, None) if unknown => Err(RecordError::MissingProtoNum),
        (None, None) => Err(RecordError::UnknownProto(name.to_string())),
        // A name this build does not know (`unknown`, or one a newer build writes) is accepted
        // only for a number this build does not name either; otherwise it is a typo.
        (None, Some(n)) if Proto(n).name() == "unknown" => Ok(Proto(n)),
        (None, Some(n)) if unknown => {
            Err(RecordError::ProtoMismatch { name: name.to_string(), num: n })
        }
        (None, Some(_)) => Err(RecordError::UnknownProto(name.to_string())),
    }
}

fn parse_state(proto: Proto, s: &str) -> Result<ProtoState, RecordError> {
    let number = parse_unknown_number(s, "UNKNOWN");
    let unknown = || RecordError::UnknownState { proto: proto.name(), state: s.to_string() };
    match proto {
        Proto::TCP => number
            .map(TcpState::from_number)
            .or_else(|| TcpState::parse(s))
            .map(ProtoState::Tcp)
            .ok_or_else(unknown),
        Proto::SCTP => number
            .map(SctpState::from_number)
            .or_else(|| SctpState::parse(s))
            .map(ProtoState::Sctp)
            .ok_or_else(unknown),
        Proto::DCCP => number
            .map(DccpState::from_number)
            .or_else(|| DccpState::parse(s))
            .map(ProtoState::Dccp)
            .ok_or_else(unknown),
        _ => Err(RecordError::StateNotAllowed(proto.name().to_string())),
    }
}

fn parse_status(names: &[String]) -> Result<Status, RecordError> {
    let mut bits = 0u32;
    for name in names {
        let bit = Status::bit_of(name)
            .or_else(|| {
                let digits = name.strip_prefix("BIT").or_else(|| name.strip_prefix("bit"))?;
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let n: u32 = digits.parse().ok()?;
                1u32.checked_shl(n)
            })
            .ok_or_else(|| RecordError::UnknownStatus(name.clone()))?;
        bits |= bit;
    }
    Ok(Status(bits))
}

fn parse_labels(s: &str) -> Result<u128, RecordError> {
    let bad = || RecordError::BadLabels(s.to_string());
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).ok_or_else(bad)?;
    if digits.is_empty() || digits.len() > 32 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    u128::from_str_radix(digits, 16).map_err(|_| bad())
}

fn parse_hex_bytes(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// `which` is `orig` or `reply`; `addr_fields` the paths of its `src` and `dst`.
fn parse_tuple(
    t: &TupleRecord,
    which: &str,
    addr_fields: [&'static str; 2],
    family: Family,
    proto: Proto,
) -> Result<Tuple, RecordError> {
    let wanted = match family {
        Family::Ipv4 => Some(("ipv4", true)),
        Family::Ipv6 => Some(("ipv6", false)),
        Family::Other(_) => None,
    };
    if let Some((family_name, v4)) = wanted {
        for (field, addr) in addr_fields.into_iter().zip([t.src, t.dst]) {
            if addr.is_ipv4() != v4 {
                return Err(RecordError::FamilyMismatch { field, family: family_name, addr });
            }
        }
    }
    let bad =
        |field: &str, reason| RecordError::BadL4 { field: format!("{which}.{field}"), reason };
    let has_ports = t.sport.is_some() || t.dport.is_some();
    let has_icmp = t.icmp_type.is_some() || t.icmp_code.is_some() || t.icmp_id.is_some();
    let l4 = match (has_ports, has_icmp) {
        (true, true) => return Err(bad("sport", "ports and icmp fields in one tuple")),
        (true, false) => {
            if !proto.has_ports() {
                return Err(bad("sport", "this protocol has no ports"));
            }
            match (t.sport, t.dport) {
                (Some(src), Some(dst)) => L4::Ports { src, dst },
                (None, _) => return Err(bad("sport", "missing (dport is present)")),
                (_, None) => return Err(bad("dport", "missing (sport is present)")),
            }
        }
        (false, true) => {
            if !proto.is_icmp() {
                return Err(bad("icmp_type", "this protocol has no icmp fields"));
            }
            match (t.icmp_type, t.icmp_code, t.icmp_id) {
                (Some(kind), Some(code), Some(id)) => L4::Icmp { kind, code, id },
                (None, _, _) => {
                    return Err(bad("icmp_type", "missing (other icmp fields present)"));
                }
                (_, None, _) => {
                    return Err(bad("icmp_code", "missing (other icmp fields present)"));
                }
                (_, _, None) => return Err(bad("icmp_id", "missing (other icmp fields present)")),
            }
        }
        (false, false) => L4::None,
    };
    Ok(Tuple { src: t.src, dst: t.dst, l4, zone: t.zone })
}

impl TryFrom<FlowRecord<'_>> for Flow {
    type Error = RecordError;

    fn try_from(r: FlowRecord<'_>) -> Result<Flow, RecordError> {
        let family = parse_family(&r.family)?;
        let proto = parse_proto(&r.proto, r.proto_num)?;
        let state = r.state.as_deref().map(|s| parse_state(proto, s)).transpose()?;
        let orig = parse_tuple(&r.orig, "orig", ["orig.src", "orig.dst"], family, proto)?;
        let reply = parse_tuple(&r.reply, "reply", ["reply.src", "reply.dst"], family, proto)?;
        let status = match &r.status {
            StatusField::Names(names) => parse_status(names)?,
            StatusField::Bits(bits) => *bits,
        };
        let labels = r.labels.as_deref().map(parse_labels).transpose()?;
        let helper = match r.helper {
            Some(h) if h.len() > 16 || h.contains('\0') => {
                return Err(RecordError::BadHelper(h.into_owned()));
            }
            Some(h) => Some(HelperName::new(h.as_bytes())),
            None => None,
        };
        let unknown = r
            .raw_attrs
            .into_records()
            .into_iter()
            .enumerate()
            .map(|(index, a)| match parse_hex_bytes(&a.hex) {
                Some(value) => Ok(RawAttr { kind: a.kind, value }),
                None => Err(RecordError::BadRawAttr { index, hex: a.hex }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let counter = |c: CounterRecord| Counter { packets: c.packets, bytes: c.bytes };
        let flow = Flow {
            family,
            proto,
            orig,
            reply,
            state,
            status,
            timeout: r.timeout,
            mark: r.mark,
            zone: r.zone,
            id: r.id,
            use_count: r.use_count,
            counters_orig: r.counters.and_then(|c| c.orig).map(counter),
            counters_reply: r.counters.and_then(|c| c.reply).map(counter),
            start_ns: r.start_ns,
            stop_ns: r.stop_ns,
            labels,
            helper,
            secmark: r.secmark,
            secctx: r.secctx.map(|c| SecCtx::new(c.as_bytes())),
            unknown,
        };
        if let Some(given) = r.nat {
            let derived: Option<NatRecord> = flow.nat().into();
            if derived != Some(given) {
                return Err(RecordError::NatMismatch {
                    given: serde_json::to_string(&given).unwrap_or_default(),
                    derived: serde_json::to_string(&derived).unwrap_or_default(),
                });
            }
        }
        Ok(flow)
    }
}

// ---------------------------------------------------------------------------------------------
// Reading.

/// Parses one line (without its newline) into a flow; `line` is only used in errors.
fn parse_line(bytes: &[u8], line: usize) -> Result<Flow, LoadError> {
    let record: FlowRecord = serde_json::from_slice(bytes).map_err(|e| {
        // serde_json appends " at line 1 column N"; the line is ours, the column is kept.
        let text = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let reason = text.strip_suffix(&suffix).unwrap_or(&text);
        let column = e.column();
        let message = match json_path_at(bytes, column) {
            path if path.is_empty() => format!("{reason} (column {column})"),
            path => format!("{path}: {reason} (column {column})"),
        };
        LoadError::Json { line, message }
    })?;
    Flow::try_from(record).map_err(|error| LoadError::Record { line, error })
}

/// The dotted path of object keys (`orig.src`) open at 1-based byte `column` of a JSON text,
/// for naming the field of a serde_json error. Inside an object, the path ends with the key
/// whose value is being read; between a `,` and the next `:` (where serde_json reports unknown
/// fields) it names the enclosing object. Array levels add nothing.
fn json_path_at(text: &[u8], column: usize) -> String {
    enum Level {
        Object(Option<String>),
        Array,
    }
    let mut stack: Vec<Level> = Vec::new();
    let (mut in_string, mut escaped) = (false, false);
    let mut current = Vec::new();
    let mut last_string: Option<Vec<u8>> = None;
    for &b in text.iter().take(column) {
        if in_string {
            match b {
                _ if escaped => {
                    escaped = false;
                    current.push(b);
                }
                b'\\' => escaped = true,
                b'"' => {
                    in_string = false;
                    last_string = Some(std::mem::take(&mut current));
                }
                _ => current.push(b),
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' => stack.push(Level::Object(None)),
            b'[' => stack.push(Level::Array),
            b'}' | b']' => {
                stack.pop();
            }
            b':' => {
                if let Some(Level::Object(key)) = stack.last_mut() {
                    *key = last_string.take().map(|k| String::from_utf8_lossy(&k).into_owned());
                }
            }
            b',' => {
                if let Some(Level::Object(key)) = stack.last_mut() {
                    *key = None;
                }
            }
            _ => {}
        }
    }
    let keys: Vec<&str> = stack
        .iter()
        .filter_map(|level| match level {
            Level::Object(Some(key)) => Some(key.as_str()),
            _ => None,
        })
        .collect();
    keys.join(".")
}

/// The longest line [`read_flows`] reads: a flow line is a few hundred bytes, and even one
/// carrying every attribute the kernel can send as raw hex stays far below this.
pub const MAX_LINE: usize = 64 << 10;

/// Reads JSON Lines, one flow per non-blank line. Errors carry the 1-based line number; a bad
/// line does not stop the iteration, a read error or a line over [`MAX_LINE`] does (it is the
/// last item: no more than `MAX_LINE` bytes are ever held, `/dev/zero` included).
pub fn read_flows(input: impl BufRead) -> impl Iterator<Item = Result<Flow, LoadError>> {
    read_numbered_flows(input).map(|r| r.map(|(_, flow)| flow))
}

/// [`read_flows`], each flow with its 1-based line number (for reports about it).
pub fn read_numbered_flows(
    input: impl BufRead,
) -> impl Iterator<Item = Result<(usize, Flow), LoadError>> {
    let mut input = input;
    let mut buf = Vec::new();
    let mut line = 0usize;
    let mut done = false;
    std::iter::from_fn(move || {
        while !done {
            buf.clear();
            line += 1;
            match (&mut input).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf) {
                Ok(0) => done = true,
                Ok(n) if n > MAX_LINE => {
                    done = true;
                    return Some(Err(LoadError::TooLong { line, limit: MAX_LINE }));
                }
                Ok(_) if buf.iter().all(u8::is_ascii_whitespace) => {}
                Ok(_) => {
                    return Some(parse_line(buf.trim_ascii_end(), line).map(|f| (line, f)));
                }
                Err(error) => {
                    done = true;
                    return Some(Err(LoadError::Io { line, error }));
                }
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
    }

    fn tuple(src: IpAddr, dst: IpAddr, l4: L4) -> Tuple {
        Tuple { src, dst, l4, zone: None }
    }

    fn tcp_flow() -> Flow {
        let orig = tuple(v4(10, 0, 0, 2), v4(93, 184, 216, 34), L4::Ports { src: 51234, dst: 443 });
        Flow {
            family: Family::Ipv4,
            proto: Proto::TCP,
            orig,
            reply: orig.inverse(),
            state: Some(ProtoState::Tcp(TcpState::Established)),
            status: Status(Status::SEEN_REPLY | Status::ASSURED | Status::CONFIRMED),
            timeout: Some(431999),
            mark: Some(0x2a),
            zone: Some(7),
            id: Some(3_735_928_559),
            use_count: Some(1),
            counters_orig: Some(Counter { packets: 12, bytes: 1840 }),
            counters_reply: Some(Counter { packets: 10, bytes: 9_000_000_000 }),
            start_ns: Some(1_712_345_678_901_234_567),
            labels: Some(0x5),
            ..Flow::default()
        }
    }

    fn udp_flow() -> Flow {
        let orig = tuple(v4(192, 168, 1, 5), v4(1, 1, 1, 1), L4::Ports { src: 40000, dst: 53 });
        Flow {
            family: Family::Ipv4,
            proto: Proto::UDP,
            orig,
            reply: orig.inverse(),
            status: Status(Status::CONFIRMED),
            timeout: Some(29),
            ..Flow::default()
        }
    }

    fn icmp_flow() -> Flow {
        let orig = tuple(v4(10, 0, 0, 2), v4(8, 8, 8, 8), L4::Icmp { kind: 8, code: 0, id: 4242 });
        Flow {
            family: Family::Ipv4,
            proto: Proto::ICMP,
            orig,
            reply: orig.inverse(),
            status: Status(Status::SEEN_REPLY | Status::CONFIRMED),
            timeout: Some(29),
            id: Some(17),
            ..Flow::default()
        }
    }

    fn icmpv6_flow() -> Flow {
        let orig = tuple(
            v6("2001:db8::2"),
            v6("2001:4860:4860::8888"),
            L4::Icmp { kind: 128, code: 0, id: 7 },
        );
        Flow {
            family: Family::Ipv6,
            proto: Proto::ICMPV6,
            orig,
            reply: orig.inverse(),
            status: Status(Status::CONFIRMED),
            timeout: Some(30),
            ..Flow::default()
        }
    }

    fn sctp_flow() -> Flow {
        let orig = tuple(v6("fd00::1"), v6("fd00::2"), L4::Ports { src: 5000, dst: 38412 });
        Flow {
            family: Family::Ipv6,
            proto: Proto::SCTP,
            orig,
            reply: orig.inverse(),
            state: Some(ProtoState::Sctp(SctpState::HeartbeatAcked)),
            status: Status(Status::SEEN_REPLY | Status::ASSURED | Status::CONFIRMED),
            timeout: Some(210),
            ..Flow::default()
        }
    }

    /// SNAT + DNAT: the reply tuple is not the inverse of the original.
    fn nated_flow() -> Flow {
        Flow {
            family: Family::Ipv4,
            proto: Proto::TCP,
            orig: Tuple {
                zone: Some(3),
                ..tuple(v4(10, 0, 0, 2), v4(203, 0, 113, 10), L4::Ports { src: 40000, dst: 80 })
            },
            reply: Tuple {
                zone: Some(4),
                ..tuple(v4(172, 16, 0, 9), v4(198, 51, 100, 1), L4::Ports { src: 8080, dst: 61000 })
            },
            state: Some(ProtoState::Tcp(TcpState::TimeWait)),
            status: Status(
                Status::SEEN_REPLY
                    | Status::ASSURED
                    | Status::CONFIRMED
                    | Status::SRC_NAT
                    | Status::DST_NAT
                    | (1 << 7)
                    | (1 << 8),
            ),
            timeout: Some(118),
            helper: Some(HelperName::new(b"ftp")),
            secmark: Some(9),
            ..Flow::default()
        }
    }

    /// Everything this build does not name, plus the rarely set fields.
    fn odd_flow() -> Flow {
        let orig = tuple(v4(10, 0, 0, 1), v4(10, 0, 0, 2), L4::None);
        Flow {
            family: Family::Ipv4,
            proto: Proto(200),
            orig,
            reply: orig.inverse(),
            status: Status(Status::CONFIRMED | (1 << 30) | (1 << 31)),
            counters_orig: Some(Counter { packets: 1, bytes: 2 }),
            stop_ns: Some(u64::MAX),
            labels: Some(u128::MAX),
            unknown: vec![
                RawAttr { kind: 99, value: vec![0, 0xab, 0xff] },
                RawAttr { kind: 100, value: vec![] },
            ],
            ..Flow::default()
        }
    }

    fn all_flows() -> Vec<Flow> {
        let mut unknown_tcp_state = tcp_flow();
        unknown_tcp_state.state = Some(ProtoState::Tcp(TcpState::Other(12)));
        let mut dccp = udp_flow();
        dccp.proto = Proto::DCCP;
        dccp.state = Some(ProtoState::Dccp(DccpState::PartOpen));
        let mut other_family = odd_flow();
        other_family.family = Family::Other(7);
        vec![
            tcp_flow(),
            udp_flow(),
            icmp_flow(),
            icmpv6_flow(),
            sctp_flow(),
            nated_flow(),
            odd_flow(),
            unknown_tcp_state,
            dccp,
            other_family,
        ]
    }

    fn line_of(flow: &Flow) -> String {
        let mut out = Vec::new();
        write_flow(&mut out, flow).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn read_all(text: &str) -> Vec<Result<Flow, LoadError>> {
        read_flows(text.as_bytes()).collect()
    }

    fn error_of(text: &str) -> String {
        let mut results = read_all(text);
        assert_eq!(results.len(), 1, "{text}");
        match results.remove(0) {
            Ok(flow) => panic!("accepted {text}: {flow:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_kind_of_flow_round_trips() {
        for flow in all_flows() {
            let line = line_of(&flow);
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'), "{line}");
            let back: Vec<_> = read_all(&line).into_iter().map(Result::unwrap).collect();
            assert_eq!(back.len(), 1, "{line}");
            assert_eq!(back[0], flow, "{line}");
            // Through the owned record as well.
            let record = FlowRecord::from(&flow);
            assert_eq!(Flow::try_from(record.clone()).unwrap(), flow);
            let parsed: FlowRecord = serde_json::from_str(&line).unwrap();
            assert_eq!(parsed, record);
        }
    }

    #[test]
    fn borrowed_and_owned_serialisations_agree() {
        // One record both ways: a line read back (owned names and attributes) writes the
        // same bytes as the flow it came from (borrowed names, status bits).
        for flow in all_flows() {
            let line = line_of(&flow);
            let read: FlowRecord = serde_json::from_str(&line).unwrap();
            assert!(matches!(read.status, StatusField::Names(_)), "{line}");
            let owned = serde_json::to_string(&read).unwrap();
            assert_eq!(format!("{owned}\n"), line);
        }
    }

    #[test]
    fn golden_tcp_line() {
        let expected = concat!(
            r#"{"family":"ipv4","proto":"tcp","proto_num":6,"state":"ESTABLISHED","#,
            r#""orig":{"src":"10.0.0.2","dst":"93.184.216.34","sport":51234,"dport":443},"#,
            r#""reply":{"src":"93.184.216.34","dst":"10.0.0.2","sport":443,"dport":51234},"#,
            r#""status":["SEEN_REPLY","ASSURED","CONFIRMED"],"timeout":431999,"mark":42,"#,
            r#""zone":7,"id":3735928559,"use":1,"#,
            r#""counters":{"orig":{"packets":12,"bytes":1840},"#,
            r#""reply":{"packets":10,"bytes":9000000000}},"#,
            r#""start_ns":1712345678901234567,"labels":"0x5"}"#,
            "\n"
        );
        assert_eq!(line_of(&tcp_flow()), expected);
    }

    #[test]
    fn golden_odd_line() {
        let expected = concat!(
            r#"{"family":"ipv4","proto":"unknown","proto_num":200,"#,
            r#""orig":{"src":"10.0.0.1","dst":"10.0.0.2"},"#,
            r#""reply":{"src":"10.0.0.2","dst":"10.0.0.1"},"#,
            r#""status":["CONFIRMED","BIT30","BIT31"],"counters":{"orig":{"packets":1,"bytes":2}},"#,
            r#""stop_ns":18446744073709551615,"labels":"0xffffffffffffffffffffffffffffffff","#,
            r#""raw_attrs":[{"kind":99,"hex":"00abff"},{"kind":100,"hex":""}]}"#,
            "\n"
        );
        assert_eq!(line_of(&odd_flow()), expected);
        let mut f = tcp_flow();
        f.state = Some(ProtoState::Tcp(TcpState::Other(12)));
        f.family = Family::Other(7);
        assert!(line_of(&f).starts_with(
            r#"{"family":"unknown(7)","proto":"tcp","proto_num":6,"state":"UNKNOWN(12)","#
        ));
    }

    #[test]
    fn icmp_line_has_icmp_fields() {
        let line = line_of(&icmp_flow());
        assert!(
            line.contains(
                r#""orig":{"src":"10.0.0.2","dst":"8.8.8.8","icmp_type":8,"icmp_code":0,"icmp_id":4242}"#
            ),
            "{line}"
        );
        assert!(!line.contains("\"state\""), "{line}");
    }

    #[test]
    fn minimal_input_with_nulls_and_loose_names_is_accepted() {
        let text = concat!(
            "\n",
            r#"{"family":"IPv4","proto":"TCP","state":"established","timeout":null,"#,
            r#""orig":{"src":"10.0.0.1","dst":"10.0.0.2","sport":1,"dport":2,"zone":null},"#,
            r#""reply":{"src":"10.0.0.2","dst":"10.0.0.1","sport":2,"dport":1},"#,
            r#""status":["assured","bit20"]}"#,
            "\r\n   \n",
            r#"{"family":"ipv6","proto":"ipv6-icmp","proto_num":58,"#,
            r#""orig":{"src":"::1","dst":"::2"},"reply":{"src":"::2","dst":"::1"},"state":null}"#,
        );
        let flows: Vec<_> = read_all(text).into_iter().map(Result::unwrap).collect();
        assert_eq!(flows.len(), 2);
        assert_eq!(flows[0].proto, Proto::TCP);
        assert_eq!(flows[0].state, Some(ProtoState::Tcp(TcpState::Established)));
        assert_eq!(flows[0].status, Status(Status::ASSURED | (1 << 20)));
        assert_eq!(flows[0].timeout, None);
        assert_eq!(flows[0].orig.l4, L4::Ports { src: 1, dst: 2 });
        assert_eq!(flows[1].proto, Proto::ICMPV6);
        assert_eq!(flows[1].orig.l4, L4::None);
        // UNKNOWN(n) of a number this build names maps to the named state.
        let line = line_of(&tcp_flow()).replace("ESTABLISHED", "UNKNOWN(3)");
        assert_eq!(read_all(&line).remove(0).unwrap(), tcp_flow());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let line = line_of(&udp_flow());
        let top = line.replacen('{', r#"{"colour":"red","#, 1);
        let e = error_of(&top);
        assert!(e.starts_with("line 1: unknown field `colour`, expected one of `family`"), "{e}");
        assert!(e.ends_with("(column 9)"), "{e}");
        let inner = line.replace(r#""sport":40000"#, r#""sport":40000,"port":1"#);
        let e = error_of(&inner);
        assert!(e.starts_with("line 1: orig: unknown field `port`"), "{e}");
        let counters = line_of(&tcp_flow()).replace(r#""bytes":1840"#, r#""bytes":1840,"x":0"#);
        let e = error_of(&counters);
        assert!(e.starts_with("line 1: counters.orig: unknown field `x`"), "{e}");
        let first = line.replace(r#""reply":{"#, r#""reply":{"a\"b":1,"#);
        let e = error_of(&first);
        assert!(e.starts_with("line 1: reply: unknown field `a\"b`"), "{e}");
        let missing = line.replace(r#","dst":"192.168.1.5""#, "");
        let e = error_of(&missing);
        assert!(e.starts_with("line 1: reply: missing field `dst`"), "{e}");
        let missing = line.replace(r#""family":"ipv4","#, "");
        assert!(error_of(&missing).starts_with("line 1: missing field `family`"));
    }

    #[test]
    fn bad_values_name_the_line_and_field() {
        let good = line_of(&tcp_flow());
        let good = good.trim_end();
        let cases: &[(&str, &str, &str)] = &[
            (r#""proto":"tcp""#, r#""proto":"tpc""#, "proto: unknown protocol \"tpc\""),
            (r#""proto_num":6"#, r#""proto_num":17"#, "proto_num: 17 does not match proto \"tcp\""),
            (r#""state":"ESTABLISHED""#, r#""state":"OPEN""#, "state: unknown tcp state \"OPEN\""),
            (r#""family":"ipv4""#, r#""family":"ipv6""#, "orig.src: address 10.0.0.2 is not ipv6"),
            (r#""family":"ipv4""#, r#""family":"ipx""#, "family: unknown family \"ipx\""),
            (r#""ASSURED""#, r#""ASURED""#, "status: unknown status bit \"ASURED\""),
            (r#""0x5""#, r#""5""#, "labels: \"5\" is not 0x followed by 1 to 32 hex digits"),
            (r#""0x5""#, r#""0xg""#, "labels: \"0xg\""),
            (r#""0x5""#, r#""0x""#, "labels: \"0x\""),
            (
                r#""0x5""#,
                r#""0x100000000000000000000000000000000""#,
                "labels: \"0x100000000000000000000000000000000\"",
            ),
            (r#","dport":443}"#, r#"}"#, "orig.dport: missing (sport is present)"),
            (
                r#""dport":443}"#,
                r#""dport":443,"icmp_type":0}"#,
                "orig.sport: ports and icmp fields in one tuple",
            ),
            (r#""src":"93.184.216.34""#, r#""src":"::1""#, "reply.src: address ::1 is not ipv4"),
            (r#""10.0.0.2","dst""#, r#""10.0.0.256","dst""#, "orig.src: invalid IP address syntax"),
            (r#""mark":42"#, r#""mark":-1"#, "mark: invalid value: integer `-1`, expected u32"),
            (r#""ASSURED""#, "7", "status: invalid type: integer `7`, expected a string"),
            (r#""bytes":1840"#, r#""bytes":"1840""#, "counters.orig.bytes: invalid type: string"),
            (r#""labels":"0x5""#, r#""labels":"0x5","helper":"abcdefghijklmnopq""#, "helper: "),
        ];
        for (from, to, want) in cases {
            assert!(good.contains(from), "{from}");
            let bad = good.replacen(from, to, 1);
            let text = format!("{good}\n\n{bad}\n{good}\n");
            let results = read_all(&text);
            assert_eq!(results.len(), 3, "{bad}");
            assert!(results[0].is_ok() && results[2].is_ok(), "{bad}");
            let e = results[1].as_ref().unwrap_err();
            assert_eq!(e.line(), 3);
            let msg = e.to_string();
            assert!(msg.starts_with("line 3: "), "{msg}");
            assert!(msg.contains(want), "{msg} does not contain {want}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn proto_name_and_number_rules() {
        assert_eq!(parse_proto("tcp", None), Ok(Proto::TCP));
        assert_eq!(parse_proto("6", Some(6)), Ok(Proto::TCP));
        assert_eq!(parse_proto("unknown", Some(200)), Ok(Proto(200)));
        // A name from a newer build, for a number this build does not name.
        assert_eq!(parse_proto("ethernet", Some(143)), Ok(Proto(143)));
        assert_eq!(parse_proto("unknown", None), Err(RecordError::MissingProtoNum));
        assert!(matches!(parse_proto("unknown", Some(6)), Err(RecordError::ProtoMismatch { .. })));
        assert!(matches!(parse_proto("tpc", None), Err(RecordError::UnknownProto(_))));
        assert!(matches!(parse_proto("tpc", Some(6)), Err(RecordError::UnknownProto(_))));
    }

    #[test]
    fn l4_must_fit_the_protocol() {
        let (icmp, udp) = (icmp_flow(), udp_flow());
        let mut r = FlowRecord::from(&icmp);
        r.orig.sport = Some(1);
        r.orig.dport = Some(2);
        r.orig.icmp_type = None;
        r.orig.icmp_code = None;
        r.orig.icmp_id = None;
        assert_eq!(
            Flow::try_from(r).unwrap_err().to_string(),
            "orig.sport: this protocol has no ports"
        );
        let mut r = FlowRecord::from(&icmp);
        r.reply.icmp_id = None;
        assert_eq!(
            Flow::try_from(r).unwrap_err().to_string(),
            "reply.icmp_id: missing (other icmp fields present)"
        );
        let mut r = FlowRecord::from(&udp);
        r.state = Some("ESTABLISHED".into());
        assert_eq!(Flow::try_from(r).unwrap_err().to_string(), "state: protocol udp has no state");
        let odd = odd_flow();
        let mut r = FlowRecord::from(&odd);
        let mut attrs = r.raw_attrs.into_records();
        attrs[0].hex = "abc".into();
        r.raw_attrs = RawAttrs::Read(attrs);
        assert!(matches!(Flow::try_from(r), Err(RecordError::BadRawAttr { index: 0, .. })));
    }

    #[test]
    fn syntax_errors_and_read_errors_carry_the_line() {
        let good = line_of(&udp_flow());
        let results = read_all(&format!("{good}{{\"family\":\n{good}"));
        assert_eq!(results.len(), 3);
        let msg = results[1].as_ref().unwrap_err().to_string();
        assert!(msg.starts_with("line 2: family: EOF while parsing a value (column "), "{msg}");
        assert!(!msg.contains("at line 1"), "{msg}");
        assert!(results[2].is_ok());

        let invalid_utf8 = [good.as_bytes(), b"\xff\xfe\n", good.as_bytes()].concat();
        let results: Vec<_> = read_flows(&invalid_utf8[..]).collect();
        assert_eq!(results.len(), 3);
        assert_eq!(results[1].as_ref().unwrap_err().line(), 2);

        struct Failing(bool);
        impl io::Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if std::mem::replace(&mut self.0, true) {
                    return Err(io::Error::other("disk on fire"));
                }
                let line = b"\n\n";
                buf[..line.len()].copy_from_slice(line);
                Ok(line.len())
            }
        }
        let results: Vec<_> = read_flows(io::BufReader::new(Failing(false))).collect();
        assert_eq!(results.len(), 1);
        assert_eq!(
            results[0].as_ref().unwrap_err().to_string(),
            "line 3: read error: disk on fire"
        );
    }

    #[test]
    fn schema_doc_examples_are_valid() {
        let doc = include_str!("../../docs/json-schema.md");
        let mut examples = Vec::new();
        let mut in_json = false;
        for line in doc.lines() {
            match line {
                "```json" => in_json = true,
                "```" => in_json = false,
                _ if in_json => examples.push(line),
                _ => {}
            }
        }
        assert_eq!(examples.len(), 4);
        assert_eq!(format!("{}\n", examples[0]), line_of(&tcp_flow()));
        assert_eq!(format!("{}\n", examples[1]), line_of(&icmp_flow()));
        for example in examples {
            let flow = read_all(example).remove(0).unwrap();
            if example.contains("proto_num") {
                assert_eq!(line_of(&flow).trim_end(), example);
            }
        }
    }

    /// `nat` is written for a NATed flow, may be left out, and must agree when given.
    #[test]
    fn issue_12_nat_binding_is_written_optional_and_checked() {
        let flow = nated_flow();
        let line = line_of(&flow);
        assert!(
            line.contains(r#""nat":{"src":{"ip":"198.51.100.1","port":61000},"dst":{"ip":"172.16.0.9","port":8080}}"#),
            "{line}"
        );
        let without = line.replace(
            r#""nat":{"src":{"ip":"198.51.100.1","port":61000},"dst":{"ip":"172.16.0.9","port":8080}},"#,
            "",
        );
        assert_ne!(without, line);
        assert_eq!(read_all(&without).remove(0).unwrap(), flow, "an old line loads the same");
        let wrong = line.replace(r#""port":8080}"#, r#""port":8081}"#);
        let e = error_of(&wrong);
        assert!(e.starts_with("line 1: nat: ") && e.contains("disagrees"), "{e}");
        assert!(!line_of(&tcp_flow()).contains("\"nat\""), "no nat without NAT");
    }
}
