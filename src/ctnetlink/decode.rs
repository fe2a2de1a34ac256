//! Kernel bytes → [`Flow`], decoded in place into a reused value (no allocation per entry).
//!
//! netlink-packet-netfilter 0.4 parses a message into a `Vec` of attributes and leaves ids,
//! zones, counters and timestamps as opaque `Other`; walking the attributes here, in place,
//! gives every field at no allocation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::uapi::*;
use crate::flow::{
    Counter, DccpState, Family, Flow, HelperName, L4, Proto, ProtoState, RawAttr, SctpState,
    SecCtx, Status, TcpState, Tuple,
};
use crate::stats::{CpuStats, TableStats};

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed ctnetlink message: {0}")]
pub struct Malformed(pub &'static str);

/// One attribute, borrowed from its message.
#[derive(Clone, Copy)]
pub(super) struct Nla<'a> {
    kind: u16,
    value: &'a [u8],
}

impl<'a> Nla<'a> {
    pub(super) fn value(&self) -> &'a [u8] {
        self.value
    }
}

/// Walks the attributes of `buf` in place (what netlink-packet-core's `NlasIterator` does, at a
/// third of its cost on the dump path); an attribute that overruns ends the walk with an error.
pub(super) struct Attrs<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Nla<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let header = self
            .buf
            .get(..4)
            .map(|h| (u16::from_ne_bytes([h[0], h[1]]) as usize, u16::from_ne_bytes([h[2], h[3]])));
        match header {
            Some((len, kind)) if len >= 4 && len <= self.buf.len() => {
                let value = &self.buf[4..len];
                self.buf = self.buf.get((len + 3) & !3..).unwrap_or(&[]);
                Some(Ok(Nla { kind, value }))
            }
            _ => {
                self.buf = &[];
                Some(Err(Malformed("attribute overruns its message")))
            }
        }
    }
}

pub(super) fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { buf }
}

pub(super) fn kind(nla: &Nla<'_>) -> u16 {
    // The nested and byte-order flags are not part of the type.
    nla.kind & NLA_TYPE_MASK
}

pub(super) fn be16(v: &[u8]) -> Result<u16, Malformed> {
    v.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or(Malformed("short u16"))
}

pub(super) fn be32(v: &[u8]) -> Result<u32, Malformed> {
    v.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok_or(Malformed("short u32"))
}

fn be64(v: &[u8]) -> Result<u64, Malformed> {
    let b: [u8; 8] = v.get(..8).and_then(|b| b.try_into().ok()).ok_or(Malformed("short u64"))?;
    Ok(u64::from_be_bytes(b))
}

fn u8_of(v: &[u8]) -> Result<u8, Malformed> {
    v.first().copied().ok_or(Malformed("short u8"))
}

fn ip4(v: &[u8]) -> Result<IpAddr, Malformed> {
    let b: [u8; 4] = v.get(..4).and_then(|b| b.try_into().ok()).ok_or(Malformed("short IPv4"))?;
    Ok(IpAddr::V4(Ipv4Addr::from(b)))
}

fn ip6(v: &[u8]) -> Result<IpAddr, Malformed> {
    let b: [u8; 16] = v.get(..16).and_then(|b| b.try_into().ok()).ok_or(Malformed("short IPv6"))?;
    Ok(IpAddr::V6(Ipv6Addr::from(b)))
}

/// Decodes the payload of a ctnetlink conntrack message (starting at `nfgenmsg`) into `flow`.
pub(crate) fn decode_flow(payload: &[u8], flow: &mut Flow) -> Result<(), Malformed> {
    flow.clear();
    let family = *payload.first().ok_or(Malformed("no nfgenmsg"))?;
    flow.family = Family::from_number(family);
    let body = payload.get(4..).ok_or(Malformed("short nfgenmsg"))?;
    for nla in attrs(body) {
        let nla = nla?;
        let v = nla.value();
        match kind(&nla) {
            CTA_TUPLE_ORIG => flow.proto = decode_tuple(v, &mut flow.orig)?,
            CTA_TUPLE_REPLY => {
                decode_tuple(v, &mut flow.reply)?;
            }
            CTA_STATUS => flow.status = Status(be32(v)?),
            CTA_PROTOINFO => flow.state = decode_protoinfo(v)?,
            CTA_TIMEOUT => flow.timeout = Some(be32(v)?),
            CTA_MARK => flow.mark = Some(be32(v)?),
            CTA_COUNTERS_ORIG => flow.counters_orig = Some(decode_counter(v)?),
            CTA_COUNTERS_REPLY => flow.counters_reply = Some(decode_counter(v)?),
            CTA_USE => flow.use_count = Some(be32(v)?),
            CTA_ID => flow.id = Some(be32(v)?),
            CTA_ZONE => flow.zone = Some(be16(v)?),
            CTA_SECMARK => flow.secmark = Some(be32(v)?),
            CTA_SECCTX => {
                for c in attrs(v) {
                    let c = c?;
                    if kind(&c) == CTA_SECCTX_NAME {
                        flow.secctx = Some(SecCtx::new(c.value()));
                    }
                }
            }
            CTA_TIMESTAMP => {
                for t in attrs(v) {
                    let t = t?;
                    match kind(&t) {
                        CTA_TIMESTAMP_START => flow.start_ns = Some(be64(t.value())?),
                        CTA_TIMESTAMP_STOP => flow.stop_ns = Some(be64(t.value())?),
                        _ => {}
                    }
                }
            }
            CTA_LABELS => flow.labels = Some(decode_labels(v)),
            CTA_HELP => {
                for h in attrs(v) {
                    let h = h?;
                    if kind(&h) == CTA_HELP_NAME {
                        flow.helper = Some(HelperName::new(h.value()));
                    }
                }
            }
            // Every 6.x dump carries the SYN-proxy sequence state, meaningful only to the kernel;
            // keeping it as raw bytes would cost an allocation per entry.
            CTA_SYNPROXY => {}
            other => flow.unknown.push(RawAttr { kind: other, value: v.to_vec() }),
        }
    }
    Ok(())
}

/// Labels arrive as an array of host-order u32 words (`NF_CT_LABELS_MAX_SIZE` = 16 bytes);
/// bit n of the label set is bit n%32 of word n/32.
fn decode_labels(v: &[u8]) -> u128 {
    let mut out = 0u128;
    for (i, word) in v.chunks_exact(4).take(4).enumerate() {
        let w = u32::from_ne_bytes([word[0], word[1], word[2], word[3]]);
        out |= (w as u128) << (32 * i);
    }
    out
}

fn decode_counter(v: &[u8]) -> Result<Counter, Malformed> {
    let mut c = Counter::default();
    for a in attrs(v) {
        let a = a?;
        match kind(&a) {
            CTA_COUNTERS_PACKETS => c.packets = be64(a.value())?,
            CTA_COUNTERS_BYTES => c.bytes = be64(a.value())?,
            CTA_COUNTERS32_PACKETS => c.packets = be32(a.value())? as u64,
            CTA_COUNTERS32_BYTES => c.bytes = be32(a.value())? as u64,
            _ => {}
        }
    }
    Ok(c)
}

fn decode_protoinfo(v: &[u8]) -> Result<Option<ProtoState>, Malformed> {
    for p in attrs(v) {
        let p = p?;
        let state_attr = match kind(&p) {
            CTA_PROTOINFO_TCP => CTA_PROTOINFO_TCP_STATE,
            CTA_PROTOINFO_SCTP => CTA_PROTOINFO_SCTP_STATE,
            CTA_PROTOINFO_DCCP => CTA_PROTOINFO_DCCP_STATE,
            _ => continue,
        };
        for s in attrs(p.value()) {
            let s = s?;
            if kind(&s) != state_attr {
                continue;
            }
            let n = u8_of(s.value())?;
            return Ok(Some(match kind(&p) {
                CTA_PROTOINFO_TCP => ProtoState::Tcp(TcpState::from_number(n)),
                CTA_PROTOINFO_SCTP => ProtoState::Sctp(SctpState::from_number(n)),
                _ => ProtoState::Dccp(DccpState::from_number(n)),
            }));
        }
    }
    Ok(None)
}

/// Decodes a `CTA_TUPLE_*` nest into `t`; returns the protocol number it carries.
pub(super) fn decode_tuple(v: &[u8], t: &mut Tuple) -> Result<Proto, Malformed> {
    let mut proto = Proto(0);
    let (mut sport, mut dport) = (None, None);
    let (mut itype, mut icode, mut iid) = (None, None, None);
    for a in attrs(v) {
        let a = a?;
        match kind(&a) {
            CTA_TUPLE_IP => {
                for ip in attrs(a.value()) {
                    let ip = ip?;
                    match kind(&ip) {
                        CTA_IP_V4_SRC => t.src = ip4(ip.value())?,
                        CTA_IP_V4_DST => t.dst = ip4(ip.value())?,
                        CTA_IP_V6_SRC => t.src = ip6(ip.value())?,
                        CTA_IP_V6_DST => t.dst = ip6(ip.value())?,
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for p in attrs(a.value()) {
                    let p = p?;
                    let pv = p.value();
                    match kind(&p) {
                        CTA_PROTO_NUM => proto = Proto(u8_of(pv)?),
                        CTA_PROTO_SRC_PORT => sport = Some(be16(pv)?),
                        CTA_PROTO_DST_PORT => dport = Some(be16(pv)?),
                        CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => iid = Some(be16(pv)?),
                        CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => itype = Some(u8_of(pv)?),
                        CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => icode = Some(u8_of(pv)?),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_ZONE => t.zone = Some(be16(a.value())?),
            _ => {}
        }
    }
    t.l4 = match (sport, dport, itype) {
        (Some(src), Some(dst), _) => L4::Ports { src, dst },
        (_, _, Some(kind)) => L4::Icmp { kind, code: icode.unwrap_or(0), id: iid.unwrap_or(0) },
        _ => L4::None,
    };
    Ok(proto)
}

pub(crate) fn decode_table_stats(payload: &[u8]) -> Result<TableStats, Malformed> {
    let mut s = TableStats::default();
    for a in attrs(payload.get(4..).ok_or(Malformed("short nfgenmsg"))?) {
        let a = a?;
        match kind(&a) {
            CTA_STATS_GLOBAL_ENTRIES => s.count = be32(a.value())?,
            CTA_STATS_GLOBAL_MAX_ENTRIES => s.max = be32(a.value())?,
            _ => {}
        }
    }
    Ok(s)
}

pub(crate) fn decode_cpu_stats(payload: &[u8]) -> Result<CpuStats, Malformed> {
    let res_id = payload.get(2..4).ok_or(Malformed("short nfgenmsg"))?;
    let mut s = CpuStats { cpu: u16::from_be_bytes([res_id[0], res_id[1]]), ..CpuStats::default() };
    for a in attrs(&payload[4..]) {
        let a = a?;
        let v = be32(a.value())?;
        match kind(&a) {
            CTA_STATS_FOUND => s.found = v,
            CTA_STATS_INVALID => s.invalid = v,
            CTA_STATS_INSERT => s.insert = v,
            CTA_STATS_INSERT_FAILED => s.insert_failed = v,
            CTA_STATS_DROP => s.drop = v,
            CTA_STATS_EARLY_DROP => s.early_drop = v,
            CTA_STATS_ERROR => s.error = v,
            CTA_STATS_SEARCH_RESTART => s.search_restart = v,
            CTA_STATS_CLASH_RESOLVE => s.clash_resolve = v,
            CTA_STATS_CHAIN_TOOLONG => s.chaintoolong = v,
            _ => {}
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_attributes_are_errors_not_panics() {
        // nfgenmsg + an attribute header claiming 64 bytes with 4 present.
        let bytes = [2u8, 0, 0, 0, 64, 0, 1, 0, 1, 2, 3, 4];
        let mut f = Flow::default();
        assert!(decode_flow(&bytes, &mut f).is_err());
        assert!(decode_flow(&[], &mut f).is_err());
        // CTA_MARK with a 1-byte payload.
        let short = [2u8, 0, 0, 0, 5, 0, 8, 0, 7, 0, 0, 0];
        assert_eq!(decode_flow(&short, &mut f), Err(Malformed("short u32")));
    }

    #[test]
    fn unknown_attributes_are_kept() {
        // CTA type 99 with 4 bytes.
        let bytes = [10u8, 0, 0, 0, 8, 0, 99, 0, 1, 2, 3, 4];
        let mut f = Flow::default();
        decode_flow(&bytes, &mut f).unwrap();
        assert_eq!(f.family, Family::Ipv6);
        assert_eq!(f.unknown, vec![RawAttr { kind: 99, value: vec![1, 2, 3, 4] }]);
    }

    /// `CTA_SECCTX` is a nest holding the context name (ctnetlink_dump_secctx); it is decoded
    /// into the flow, not left for the output to walk.
    #[test]
    fn issue_11_5_secctx_is_decoded_into_the_flow() {
        let name = b"system_u:object_r:unlabeled_t:s0\0";
        let mut bytes = vec![2u8, 0, 0, 0];
        let inner = 4 + name.len();
        let outer = 4 + inner.next_multiple_of(4);
        bytes.extend_from_slice(&(outer as u16).to_ne_bytes());
        bytes.extend_from_slice(&(CTA_SECCTX | NLA_F_NESTED).to_ne_bytes());
        bytes.extend_from_slice(&(inner as u16).to_ne_bytes());
        bytes.extend_from_slice(&CTA_SECCTX_NAME.to_ne_bytes());
        bytes.extend_from_slice(name);
        bytes.resize(4 + outer, 0);
        let mut f = Flow::default();
        decode_flow(&bytes, &mut f).unwrap();
        assert_eq!(
            f.secctx.as_ref().map(SecCtx::as_bytes),
            Some(&b"system_u:object_r:unlabeled_t:s0"[..])
        );
        assert!(f.unknown.is_empty(), "{:?}", f.unknown);
    }

    #[test]
    fn attribute_walk_aligns_and_stops_at_overruns() {
        let kinds = |b: &[u8]| -> Vec<Result<(u16, Vec<u8>), Malformed>> {
            attrs(b).map(|a| a.map(|a| (a.kind, a.value().to_vec()))).collect()
        };
        // A 5-byte attribute padded to 8, then an empty one.
        let ok = [5u8, 0, 1, 0, 9, 0, 0, 0, 4, 0, 2, 0];
        assert_eq!(kinds(&ok), vec![Ok((1, vec![9])), Ok((2, vec![]))]);
        assert_eq!(kinds(&ok[..8]), vec![Ok((1, vec![9]))]);
        // A length under the header's 4 bytes, and a stray 2 bytes, end the walk with an error.
        let bad = Err(Malformed("attribute overruns its message"));
        assert_eq!(kinds(&[3u8, 0, 1, 0, 7, 7, 7, 7]), vec![bad.clone()]);
        assert_eq!(kinds(&[4u8, 0, 1, 0, 0, 0]), vec![Ok((1, vec![])), bad]);
    }
}
