//! Requests: [`Flow`]s and filters → ctnetlink messages, appended to a reused buffer.
//!
//! Headers are emitted with netlink-packet-core's `NetlinkHeader` and netlink-packet-netfilter's
//! `NetfilterHeader`; the attributes those crates do not model (ids, zones, filters, ICMP
//! tuples) are laid out here, following include/uapi/linux/netfilter/nfnetlink_conntrack.h.

use std::net::IpAddr;

use netlink_packet_core::{Emitable, NetlinkHeader};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterProtoFamily};

use super::uapi::*;
use super::{Change, DumpFilter, FlowKey};
use crate::flow::{Family, Flow, L4, NatTarget, Proto, ProtoState, Tuple};

/// Appends one netlink message to a buffer; lengths are fixed up by `finish`.
pub(crate) struct MsgWriter<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
    header: NetlinkHeader,
}

impl<'a> MsgWriter<'a> {
    pub(crate) fn begin(
        buf: &'a mut Vec<u8>,
        msg_type: u16,
        flags: u16,
        seq: u32,
        family: u8,
        version: u8,
    ) -> Self {
        Self::begin_in(NFNL_SUBSYS_CTNETLINK, buf, msg_type, flags, seq, family, version)
    }

    /// [`MsgWriter::begin`] for another nfnetlink subsystem (the expectations').
    pub(crate) fn begin_in(
        subsys: u16,
        buf: &'a mut Vec<u8>,
        msg_type: u16,
        flags: u16,
        seq: u32,
        family: u8,
        version: u8,
    ) -> Self {
        let start = buf.len();
        let mut header = NetlinkHeader::default();
        header.message_type = (subsys << 8) | msg_type;
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        buf.resize(start + NLMSG_HDRLEN + 4, 0);
        NetfilterHeader::new(NetfilterProtoFamily::from(family), version, 0)
            .emit(&mut buf[start + NLMSG_HDRLEN..]);
        MsgWriter { buf, start, header }
    }

    fn attr(&mut self, kind: u16, value: &[u8]) {
        let len = 4 + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
    }

    fn pad(&mut self) {
        let pad = (4 - self.buf.len() % 4) % 4;
        self.buf.extend_from_slice(&[0; 3][..pad]);
    }

    fn u8(&mut self, kind: u16, v: u8) {
        self.attr(kind, &[v]);
    }

    pub(super) fn be16(&mut self, kind: u16, v: u16) {
        self.attr(kind, &v.to_be_bytes());
    }

    pub(super) fn be32(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_be_bytes());
    }

    /// `CTA_FILTER_*_FLAGS` are host byte order, unlike every other ctnetlink integer.
    fn ne32(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_ne_bytes());
    }

    fn nest(&mut self, kind: u16, body: impl FnOnce(&mut Self)) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        body(self);
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        // The kernel parses nests strictly (nla_parse_nested): the flag is required.
        self.buf[at + 2..at + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    }

    fn ip(&mut self, src: Option<IpAddr>, dst: Option<IpAddr>) {
        self.nest(CTA_TUPLE_IP, |w| {
            for (addr, v4, v6) in
                [(src, CTA_IP_V4_SRC, CTA_IP_V6_SRC), (dst, CTA_IP_V4_DST, CTA_IP_V6_DST)]
            {
                match addr {
                    Some(IpAddr::V4(a)) => w.attr(v4, &a.octets()),
                    Some(IpAddr::V6(a)) => w.attr(v6, &a.octets()),
                    None => {}
                }
            }
        });
    }

    pub(super) fn tuple(&mut self, kind: u16, t: &Tuple, proto: Proto) {
        self.nest(kind, |w| {
            w.ip(Some(t.src), Some(t.dst));
            w.nest(CTA_TUPLE_PROTO, |w| {
                w.u8(CTA_PROTO_NUM, proto.0);
                match t.l4 {
                    L4::Ports { src, dst } => {
                        w.be16(CTA_PROTO_SRC_PORT, src);
                        w.be16(CTA_PROTO_DST_PORT, dst);
                    }
                    L4::Icmp { kind, code, id } => {
                        let (ti, ci, ii) = if proto == Proto::ICMPV6 {
                            (CTA_PROTO_ICMPV6_TYPE, CTA_PROTO_ICMPV6_CODE, CTA_PROTO_ICMPV6_ID)
                        } else {
                            (CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE, CTA_PROTO_ICMP_ID)
                        };
                        w.u8(ti, kind);
                        w.u8(ci, code);
                        w.be16(ii, id);
                    }
                    L4::None => {}
                }
            });
            if let Some(z) = t.zone {
                w.be16(CTA_TUPLE_ZONE, z);
            }
        });
    }

    /// `CTA_NAT_SRC`/`CTA_NAT_DST`: a range of one address (and one port), which
    /// `nfnetlink_parse_nat` turns into `NF_NAT_RANGE_MAP_IPS` (and `PROTO_SPECIFIED`).
    fn nat(&mut self, kind: u16, t: &NatTarget) {
        self.nest(kind, |w| {
            match t.addr {
                IpAddr::V4(a) => {
                    w.attr(CTA_NAT_V4_MINIP, &a.octets());
                    w.attr(CTA_NAT_V4_MAXIP, &a.octets());
                }
                IpAddr::V6(a) => {
                    w.attr(CTA_NAT_V6_MINIP, &a.octets());
                    w.attr(CTA_NAT_V6_MAXIP, &a.octets());
                }
            }
            if let Some(port) = t.port {
                w.nest(CTA_NAT_PROTO, |w| {
                    w.be16(CTA_PROTONAT_PORT_MIN, port);
                    w.be16(CTA_PROTONAT_PORT_MAX, port);
                });
            }
        });
    }

    pub(crate) fn finish(mut self) {
        self.header.length = (self.buf.len() - self.start) as u32;
        self.header.emit(&mut self.buf[self.start..self.start + NLMSG_HDRLEN]);
    }
}

/// `IPCTNL_MSG_CT_GET` dump, with the kernel-side filters of `f`.
pub(crate) fn dump(buf: &mut Vec<u8>, seq: u32, f: &DumpFilter) {
    let mut w =
        MsgWriter::begin(buf, IPCTNL_MSG_CT_GET, NLM_F_DUMP, seq, f.family_number(), NFNETLINK_V0);
    filter_attrs(&mut w, f);
    w.finish();
}

/// The filter attributes of `f`, laid out the same way for a dump and for a filtered flush, so
/// a dry-run dump proves what the flush will select.
fn filter_attrs(w: &mut MsgWriter<'_>, f: &DumpFilter) {
    if let Some((value, mask)) = f.mark {
        w.be32(CTA_MARK, value & mask);
        w.be32(CTA_MARK_MASK, mask);
    }
    if let Some((value, mask)) = f.status {
        w.be32(CTA_STATUS, value & mask);
        w.be32(CTA_STATUS_MASK, mask);
    }
    if let Some(zone) = f.zone {
        w.be16(CTA_ZONE, zone);
    }
    if f.uses_cta_filter() {
        let mut flags = 0;
        if f.orig_src_v4.is_some() {
            flags |= CTA_FILTER_FLAG_IP_SRC;
        }
        if f.orig_dst_v4.is_some() {
            flags |= CTA_FILTER_FLAG_IP_DST;
        }
        w.nest(CTA_FILTER, |w| {
            w.ne32(CTA_FILTER_ORIG_FLAGS, flags);
            w.ne32(CTA_FILTER_REPLY_FLAGS, 0);
        });
        w.nest(CTA_TUPLE_ORIG, |w| {
            w.ip(f.orig_src_v4.map(IpAddr::V4), f.orig_dst_v4.map(IpAddr::V4));
        });
    }
}

/// `IPCTNL_MSG_CT_DELETE` of one entry, guarded by identity. The original tuple finds the
/// entry; `CTA_ZONE` (and a directional `CTA_TUPLE_ZONE` inside the tuple) picks its zone, as
/// a zoned entry is not found without it; `CTA_ID` makes the kernel answer ENOENT instead of
/// deleting a new entry that re-used the tuple (`ctnetlink_del_conntrack`). Without `ack` the
/// kernel answers only a failure.
pub(crate) fn delete(buf: &mut Vec<u8>, seq: u32, key: &FlowKey, ack: bool) {
    let flags = if ack { NLM_F_ACK } else { 0 };
    let mut w =
        MsgWriter::begin(buf, IPCTNL_MSG_CT_DELETE, flags, seq, key.family.number(), NFNETLINK_V0);
    w.tuple(CTA_TUPLE_ORIG, &key.orig, key.proto);
    if let Some(zone) = key.zone {
        w.be16(CTA_ZONE, zone);
    }
    w.be32(CTA_ID, key.id);
    w.finish();
}

/// `IPCTNL_MSG_CT_NEW` updating one existing entry (`conntrack -U`), without an ACK (only a
/// failure is answered). Without `NLM_F_CREATE` the kernel never creates: a tuple nobody holds
/// is ENOENT. The tuple and zone find the entry as for a delete; `CTA_ID` is sent too, but
/// 6.18's `ctnetlink_new_conntrack` does not compare it (unlike the delete path), so the
/// caller's re-check right before is what keeps an update off a new entry on the same tuple.
/// `status` is the entry's status bits as last read: the kernel refuses (EBUSY) a status that
/// would clear SEEN_REPLY, ASSURED or CONFIRMED, so the bits to set are sent with them.
pub(crate) fn update(buf: &mut Vec<u8>, seq: u32, key: &FlowKey, status: u32, change: &Change) {
    let mut w = MsgWriter::begin(buf, IPCTNL_MSG_CT_NEW, 0, seq, key.family.number(), NFNETLINK_V0);
    w.tuple(CTA_TUPLE_ORIG, &key.orig, key.proto);
    if let Some(zone) = key.zone {
        w.be16(CTA_ZONE, zone);
    }
    w.be32(CTA_ID, key.id);
    if let Some(timeout) = change.timeout {
        w.be32(CTA_TIMEOUT, timeout);
    }
    if change.status != 0 {
        w.be32(CTA_STATUS, status | change.status);
    }
    if let Some((value, mask)) = change.mark {
        w.be32(CTA_MARK, value);
        w.be32(CTA_MARK_MASK, mask);
    }
    if let Some((bits, mask)) = change.labels {
        w.attr(CTA_LABELS, &label_words(bits));
        w.attr(CTA_LABELS_MASK, &label_words(mask));
    }
    w.finish();
}

/// 128 label bits as the kernel's four host-order u32 words, bit n in word n/32.
fn label_words(labels: u128) -> [u8; 16] {
    let mut words = [0u8; 16];
    for i in 0..4 {
        words[i * 4..i * 4 + 4].copy_from_slice(&((labels >> (32 * i)) as u32).to_ne_bytes());
    }
    words
}

/// `IPCTNL_MSG_CT_DELETE` without a tuple: a flush, filtered by exactly the attributes a dump
/// with `f` sends (Linux 6.12+ honours `CTA_FILTER` in a flush), acknowledged. A flush whose
/// filter the kernel ignores empties the whole table, so this refuses (returns false, encodes
/// nothing) unless `f` carries an IPv4 `CTA_FILTER` address; callers must also have proven the
/// filter with a dry-run dump on this kernel.
pub(crate) fn flush(buf: &mut Vec<u8>, seq: u32, f: &DumpFilter) -> bool {
    if !f.uses_cta_filter() {
        return false;
    }
    let mut w = MsgWriter::begin(
        buf,
        IPCTNL_MSG_CT_DELETE,
        NLM_F_ACK,
        seq,
        f.family_number(),
        NFNETLINK_V0,
    );
    filter_attrs(&mut w, f);
    w.finish();
    true
}

/// `IPCTNL_MSG_CT_GET` of one entry by its original tuple and zone (`conntrack -G`).
pub(crate) fn get(buf: &mut Vec<u8>, seq: u32, flow: &Flow) {
    get_tuple(buf, seq, flow.family, flow.proto, &flow.orig, flow.zone);
}

/// `IPCTNL_MSG_CT_GET` of the entry a delete of `key` would find: the kernel looks it up by
/// tuple and zone only (`ctnetlink_get_conntrack` ignores `CTA_ID`), so the caller compares
/// the id of the answer.
pub(crate) fn get_key(buf: &mut Vec<u8>, seq: u32, key: &FlowKey) {
    get_tuple(buf, seq, key.family, key.proto, &key.orig, key.zone);
}

fn get_tuple(
    buf: &mut Vec<u8>,
    seq: u32,
    family: Family,
    proto: Proto,
    orig: &Tuple,
    zone: Option<u16>,
) {
    let mut w = MsgWriter::begin(buf, IPCTNL_MSG_CT_GET, 0, seq, family.number(), NFNETLINK_V0);
    w.tuple(CTA_TUPLE_ORIG, orig, proto);
    if let Some(zone) = zone {
        w.be16(CTA_ZONE, zone);
    }
    w.finish();
}

/// `IPCTNL_MSG_CT_NEW` creating `flow` (`conntrack -I`, with `--src-nat`/`--dst-nat` for a
/// NATed flow), acknowledged.
///
/// A NATed flow ([`Flow::nat`]) is sent as `conntrack -I` sends one: the un-NATed reply and
/// `CTA_NAT_SRC`/`CTA_NAT_DST`; `ctnetlink_setup_nat` rewrites the reply and sets the NAT
/// status bits (`IPS_*_NAT`, and both `*_NAT_DONE`: a missing direction gets the null
/// binding), which `CTA_STATUS` alone cannot. It needs the kernel's NAT (`nf_nat`).
pub(crate) fn create(buf: &mut Vec<u8>, seq: u32, flow: &Flow) {
    let mut w = MsgWriter::begin(
        buf,
        IPCTNL_MSG_CT_NEW,
        NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        seq,
        flow.family.number(),
        NFNETLINK_V0,
    );
    let nat = flow.nat();
    w.tuple(CTA_TUPLE_ORIG, &flow.orig, flow.proto);
    let reply = if nat.is_empty() { flow.reply } else { flow.unnated_reply() };
    w.tuple(CTA_TUPLE_REPLY, &reply, flow.proto);
    // The kernel refuses a create without a timeout (EINVAL); 120 s matches conntrack -I's need
    // to say one, so a flow without one gets the UDP default rather than an error.
    w.be32(CTA_TIMEOUT, flow.timeout.unwrap_or(120));
    // Without IPS_CONFIRMED a create is answered EBUSY on 6.x. Bits the kernel may not change
    // (NAT, DYING, ...) are ignored by it.
    w.be32(CTA_STATUS, flow.status.0 | IPS_CONFIRMED);
    if let Some(state) = flow.state {
        w.nest(CTA_PROTOINFO, |w| match state {
            ProtoState::Tcp(s) => {
                w.nest(CTA_PROTOINFO_TCP, |w| w.u8(CTA_PROTOINFO_TCP_STATE, s.number()))
            }
            ProtoState::Sctp(s) => {
                // nlattr_to_sctp refuses a create without both verification tags (EINVAL);
                // a restored flow has no tags to keep, so they start at 0 as conntrack -I's do
                // when given 0.
                w.nest(CTA_PROTOINFO_SCTP, |w| {
                    w.u8(CTA_PROTOINFO_SCTP_STATE, s.number());
                    w.be32(CTA_PROTOINFO_SCTP_VTAG_ORIGINAL, 0);
                    w.be32(CTA_PROTOINFO_SCTP_VTAG_REPLY, 0);
                })
            }
            ProtoState::Dccp(s) => {
                w.nest(CTA_PROTOINFO_DCCP, |w| w.u8(CTA_PROTOINFO_DCCP_STATE, s.number()))
            }
        });
    }
    if let Some(mark) = flow.mark {
        w.be32(CTA_MARK, mark);
    }
    if let Some(zone) = flow.zone {
        w.be16(CTA_ZONE, zone);
    }
    if let Some(labels) = flow.labels {
        w.attr(CTA_LABELS, &label_words(labels));
    }
    for (kind, target) in [(CTA_NAT_SRC, nat.src), (CTA_NAT_DST, nat.dst)] {
        if let Some(t) = target {
            w.nat(kind, &t);
        }
    }
    w.finish();
}

/// `IPCTNL_MSG_CT_GET_STATS` (count and max, `conntrack -C`).
pub(crate) fn table_stats(buf: &mut Vec<u8>, seq: u32) {
    MsgWriter::begin(buf, IPCTNL_MSG_CT_GET_STATS, 0, seq, 0, NFNETLINK_V0).finish();
}

/// `IPCTNL_MSG_CT_GET_STATS_CPU` dump (`conntrack -S`).
pub(crate) fn cpu_stats(buf: &mut Vec<u8>, seq: u32) {
    MsgWriter::begin(buf, IPCTNL_MSG_CT_GET_STATS_CPU, NLM_F_DUMP, seq, 0, NFNETLINK_V0).finish();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::TcpState;
    use netlink_packet_core::NetlinkBuffer;

    fn sample() -> Flow {
        let mut f = crate::flow::test_tcp("10.0.0.5", "10.0.1.1", 40000, 80, TcpState::Established);
        f.mark = Some(7);
        f.zone = Some(3);
        f.id = Some(0xdead_beef);
        f
    }

    #[test]
    fn create_round_trips_through_the_decoder() {
        let mut buf = Vec::new();
        create(&mut buf, 1, &sample());
        let mut back = Flow::default();
        super::super::decode::decode_flow(&buf[NLMSG_HDRLEN..], &mut back).unwrap();
        let want = sample();
        assert_eq!((back.orig, back.reply, back.state), (want.orig, want.reply, want.state));
        assert_eq!(back.status.0, want.status.0 | IPS_CONFIRMED);
        assert_eq!((back.mark, back.zone, back.timeout), (Some(7), Some(3), Some(3600)));
    }

    /// A DNATed flow (to 10.9.9.9:8080) is created as `conntrack -I --dst-nat` does: the
    /// un-NATed reply, and a one-address, one-port `CTA_NAT_DST` range; no `CTA_NAT_SRC`.
    #[test]
    fn issue_12_nat_create_sends_the_unnated_reply_and_the_range() {
        let mut f = sample();
        f.reply.src = "10.9.9.9".parse().unwrap();
        f.reply.l4 = L4::Ports { src: 8080, dst: 40000 };
        f.status.0 |= crate::flow::Status::DST_NAT;
        let mut buf = Vec::new();
        create(&mut buf, 1, &f);
        let mut back = Flow::default();
        super::super::decode::decode_flow(&buf[NLMSG_HDRLEN..], &mut back).unwrap();
        assert_eq!(back.reply, f.orig.inverse(), "the kernel is left to rewrite the reply");
        let nest = |kind: u16| {
            let mut b = vec![40u8, 0];
            b.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
            for attr in [CTA_NAT_V4_MINIP, CTA_NAT_V4_MAXIP] {
                b.extend_from_slice(&[8, 0]);
                b.extend_from_slice(&attr.to_ne_bytes());
                b.extend_from_slice(&[10, 9, 9, 9]);
            }
            b.extend_from_slice(&[20, 0]);
            b.extend_from_slice(&(CTA_NAT_PROTO | NLA_F_NESTED).to_ne_bytes());
            for attr in [CTA_PROTONAT_PORT_MIN, CTA_PROTONAT_PORT_MAX] {
                b.extend_from_slice(&[6, 0]);
                b.extend_from_slice(&attr.to_ne_bytes());
                b.extend_from_slice(&[0x1f, 0x90, 0, 0]);
            }
            b
        };
        let has = |buf: &[u8], bytes: &[u8]| buf.windows(bytes.len()).any(|w| w == bytes);
        assert!(has(&buf, &nest(CTA_NAT_DST)), "CTA_NAT_DST to 10.9.9.9:8080");
        assert!(!has(&buf, &(CTA_NAT_SRC | NLA_F_NESTED).to_ne_bytes()), "no CTA_NAT_SRC");
        // Without NAT status the reply goes as given (conntrack -I -r/-q), with no NAT nest.
        f.status.0 &= !crate::flow::Status::DST_NAT;
        buf.clear();
        create(&mut buf, 1, &f);
        super::super::decode::decode_flow(&buf[NLMSG_HDRLEN..], &mut back).unwrap();
        assert_eq!(back.reply, f.reply);
        assert!(!has(&buf, &(CTA_NAT_DST | NLA_F_NESTED).to_ne_bytes()));
    }

    #[test]
    fn delete_carries_tuple_zone_and_id_and_asks_no_ack() {
        let flow = sample();
        let key = FlowKey::of(&flow).unwrap();
        let mut buf = Vec::new();
        delete(&mut buf, 9, &key, false);
        let hdr = NetlinkBuffer::new_checked(&buf[..]).unwrap();
        assert_eq!(hdr.message_type(), (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE);
        assert_eq!(hdr.flags(), NLM_F_REQUEST, "no ACK: only failures are answered");
        assert_eq!(hdr.length() as usize, buf.len());
        let mut back = Flow::default();
        super::super::decode::decode_flow(&buf[NLMSG_HDRLEN..], &mut back).unwrap();
        assert_eq!((back.orig, back.zone, back.id), (flow.orig, Some(3), Some(0xdead_beef)));
        assert_eq!(back.reply, Tuple::default(), "the reply tuple is not sent");
        buf.clear();
        delete(&mut buf, 9, &key, true);
        assert_eq!(
            NetlinkBuffer::new_checked(&buf[..]).unwrap().flags(),
            NLM_F_REQUEST | NLM_F_ACK
        );
    }

    #[test]
    fn issue_12_update_finds_by_tuple_zone_and_id_and_sends_only_the_change() {
        let key = FlowKey::of(&sample()).unwrap();
        let change = Change {
            mark: Some((0x10, 0xf0)),
            timeout: Some(77),
            status: crate::flow::Status::ASSURED,
            labels: Some((1 << 3, 1 << 3 | 1 << 100)),
        };
        let mut buf = Vec::new();
        update(&mut buf, 4, &key, IPS_CONFIRMED | crate::flow::Status::SEEN_REPLY, &change);
        let hdr = NetlinkBuffer::new_checked(&buf[..]).unwrap();
        assert_eq!(hdr.message_type(), (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW);
        assert_eq!(hdr.flags(), NLM_F_REQUEST, "no NLM_F_CREATE: never creates; no ACK");
        let mut back = Flow::default();
        super::super::decode::decode_flow(&buf[NLMSG_HDRLEN..], &mut back).unwrap();
        assert_eq!((back.orig, back.zone, back.id), (key.orig, Some(3), Some(0xdead_beef)));
        assert_eq!(back.reply, Tuple::default(), "the reply tuple is not sent");
        assert_eq!((back.mark, back.timeout), (Some(0x10), Some(77)));
        // The bits to set go with the bits the entry had: the kernel refuses clearing any.
        assert_eq!(back.status.0, IPS_CONFIRMED | 0b110);
        assert_eq!(back.labels, Some(1 << 3));
        let raw = |kind| back.unknown.iter().find(|a| a.kind == kind).map(|a| a.value.clone());
        assert_eq!(raw(CTA_MARK_MASK), Some(0xf0u32.to_be_bytes().to_vec()));
        assert_eq!(raw(CTA_LABELS_MASK), Some(label_words(1 << 3 | 1 << 100).to_vec()));
        // Nothing asked, nothing sent: a mark-only change carries no status, timeout, labels.
        buf.clear();
        update(&mut buf, 5, &key, 0, &Change { mark: Some((1, u32::MAX)), ..Change::default() });
        let mut back = Flow::default();
        super::super::decode::decode_flow(&buf[NLMSG_HDRLEN..], &mut back).unwrap();
        assert_eq!((back.status.0, back.timeout, back.labels), (0, None, None));
    }

    #[test]
    fn flush_refuses_without_cta_filter_and_matches_the_dump_body() {
        let mut buf = Vec::new();
        let unfiltered = DumpFilter { mark: Some((1, u32::MAX)), ..Default::default() };
        assert!(!flush(&mut buf, 1, &unfiltered), "a mark-only flush is never encoded");
        assert!(buf.is_empty());
        let f = DumpFilter {
            orig_src_v4: Some("172.16.3.5".parse().unwrap()),
            status: Some((4, 4)),
            ..Default::default()
        };
        assert!(flush(&mut buf, 1, &f));
        let mut d = Vec::new();
        dump(&mut d, 1, &f);
        assert_eq!(buf[NLMSG_HDRLEN..], d[NLMSG_HDRLEN..], "same family, version, attributes");
        let hdr = NetlinkBuffer::new_checked(&buf[..]).unwrap();
        assert_eq!(hdr.message_type() & 0xff, IPCTNL_MSG_CT_DELETE);
        assert_eq!(hdr.flags(), NLM_F_REQUEST | NLM_F_ACK);
    }

    #[test]
    fn cta_filter_forces_ipv4_and_nests_strictly() {
        let mut buf = Vec::new();
        let f =
            DumpFilter { orig_src_v4: Some("172.16.3.5".parse().unwrap()), ..Default::default() };
        dump(&mut buf, 1, &f);
        assert_eq!(buf[NLMSG_HDRLEN], 2, "family must be AF_INET with CTA_FILTER");
        let filter_at = NLMSG_HDRLEN + 4;
        let kind = u16::from_ne_bytes([buf[filter_at + 2], buf[filter_at + 3]]);
        assert_eq!(kind, CTA_FILTER | NLA_F_NESTED);
    }
}
