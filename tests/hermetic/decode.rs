//! Recorded ctnetlink bytes → `Flow` → `conntrack -L` text, checked three ways: against what
//! conntrack-tools printed for the same table, against netlink-packet-netfilter's own parser,
//! and against truncated and corrupted copies of every message (errors, never panics).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};

use ctguard::ctnetlink::decode_message;
use ctguard::flow::{Family, Flow, Proto, Status, Tuple};
use ctguard::output::{conntrack, json};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple,
    Tuple as NfTuple,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};

use crate::fixtures::{
    MIXED_CONNTRACK_L, Normalised, mixed_flows, mixed_messages, normalise, rendered,
};

/// `struct nlmsghdr` + `struct nfgenmsg`: where the attributes of a message start.
const ATTRS_START: usize = 16 + 4;
/// How far apart the capture and the `conntrack -L` after it may be, in seconds.
const RECORDING_SLACK: u64 = 5;

fn by_line(lines: impl Iterator<Item = Normalised>) -> BTreeMap<String, Normalised> {
    let mut map = BTreeMap::new();
    for n in lines {
        let key = n.line.clone();
        assert!(map.insert(key, n).is_none(), "two entries normalise to the same line");
    }
    map
}

/// The latest start time of the table, in seconds: the moment the last entry was seeded,
/// shortly before the capture.
fn last_start_secs(flows: &[Flow]) -> i64 {
    let ns = flows.iter().filter_map(|f| f.start_ns).max().expect("some flows have timestamps");
    (ns / 1_000_000_000) as i64
}

#[test]
fn mixed_fixture_renders_as_conntrack_l_printed_it() {
    let flows = mixed_flows();
    let now = last_start_secs(&flows);
    let ours = by_line(flows.iter().map(|f| rendered(f, now)));
    let theirs = by_line(MIXED_CONNTRACK_L.lines().map(normalise));

    let joined =
        |m: &BTreeMap<String, Normalised>| m.keys().cloned().collect::<Vec<_>>().join("\n");
    assert_eq!(joined(&ours), joined(&theirs), "ctguard's rendering vs conntrack -L");
    assert_eq!(ours.len(), flows.len());

    // The moving parts moved the right way: conntrack -L ran a little after the capture, so its
    // timeouts are a little lower and its delta-times a little higher.
    for (line, o) in &ours {
        let t = &theirs[line];
        assert!(
            t.timeout <= o.timeout && o.timeout - t.timeout <= RECORDING_SLACK,
            "timeout {} recorded, {} listed after: {line}",
            o.timeout,
            t.timeout
        );
        match (o.delta_time, t.delta_time) {
            (None, None) => {}
            (Some(o), Some(t)) => assert!(o <= t && t - o <= RECORDING_SLACK, "{line}"),
            other => panic!("delta-time {other:?}: {line}"),
        }
    }
}

#[test]
fn accounting_and_timestamps_appear_only_after_the_sysctls() {
    let flows = mixed_flows();
    let stamped: Vec<&Flow> = flows.iter().filter(|f| f.start_ns.is_some()).collect();
    assert!(!stamped.is_empty() && stamped.len() < flows.len(), "the fixture seeds both kinds");
    for f in &flows {
        // nf_conntrack_acct and nf_conntrack_timestamp were switched on together.
        assert_eq!(f.counters_orig.is_some(), f.start_ns.is_some(), "{f:?}");
        assert_eq!(f.counters_reply.is_some(), f.start_ns.is_some(), "{f:?}");
        // Every dumped entry is confirmed and carries an id and a use count.
        assert!(f.status.has(Status::CONFIRMED), "{f:?}");
        assert!(f.id.is_some() && f.use_count == Some(1), "{f:?}");
        assert_eq!(f.stop_ns, None, "a live entry has no stop time");
        // No traffic went through: seeded entries count nothing.
        for c in [f.counters_orig, f.counters_reply].into_iter().flatten() {
            assert_eq!((c.packets, c.bytes), (0, 0));
        }
    }
    // Every IPv6 entry was seeded after the switch; 10.10.0.1 before it.
    assert!(flows.iter().filter(|f| f.family == Family::Ipv6).all(|f| f.start_ns.is_some()));
    let early = flows.iter().find(|f| f.orig.src == "10.10.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(early.and_then(|f| f.start_ns), None);
    // Start times are nanoseconds since the epoch (2020..2100), all from one short run.
    let starts: Vec<u64> = stamped.iter().filter_map(|f| f.start_ns).collect();
    let (lo, hi) = (starts.iter().min().unwrap(), starts.iter().max().unwrap());
    assert!(*lo > 1_577_836_800_000_000_000 && *hi < 4_102_444_800_000_000_000, "{lo}..{hi}");
    assert!(hi - lo < 60 * 1_000_000_000, "seeded within a minute");
    // The ids are distinct: they identify entries.
    let mut ids: Vec<u32> = flows.iter().filter_map(|f| f.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), flows.len());
}

#[test]
fn recorded_nat_zones_and_marks_decode_to_the_seeded_values() {
    let flows = mixed_flows();
    let find = |src: &str| {
        let src: IpAddr = src.parse().unwrap();
        flows.iter().find(|f| f.orig.src == src).unwrap_or_else(|| panic!("no flow from {src}"))
    };
    // DNAT: -r 192.168.0.9 -q 10.10.4.1 --reply-port-src 8080 --reply-port-dst 1234.
    let dnat = find("10.10.4.1");
    assert!(dnat.is_nated());
    assert_eq!(dnat.reply.src, "192.168.0.9".parse::<IpAddr>().unwrap());
    assert_eq!((dnat.reply.sport(), dnat.reply.dport()), (Some(8080), Some(1234)));
    // The plain entries' replies are the inverse of the original.
    let plain = find("10.10.0.1");
    assert!(!plain.is_nated());
    assert_eq!(plain.reply, plain.orig.inverse());
    assert_eq!(plain.mark, Some(42));
    // -w 7 is CTA_ZONE; --orig-zone / --reply-zone are CTA_TUPLE_ZONE of one direction only.
    assert_eq!(find("10.10.3.1").zone, Some(7));
    let orig_zone = find("10.10.3.3");
    assert_eq!((orig_zone.zone, orig_zone.orig.zone, orig_zone.reply.zone), (None, Some(3), None));
    let reply_zone = find("10.10.3.5");
    assert_eq!(
        (reply_zone.zone, reply_zone.orig.zone, reply_zone.reply.zone),
        (None, None, Some(4))
    );
    let max = find("10.10.6.1");
    assert_eq!((max.mark, max.zone), (Some(u32::MAX), Some(u16::MAX)));
    // ICMP tuples carry type, code and id; the reply is the echo reply.
    let icmp = find("10.10.2.1");
    assert_eq!(icmp.proto, Proto::ICMP);
    assert_eq!(icmp.reply, icmp.orig.inverse());
    assert_eq!(format!("{:?}", icmp.orig.l4), "Icmp { kind: 8, code: 0, id: 77 }");
    // Nothing the kernel sent was left undecoded.
    for f in &flows {
        assert!(f.unknown.is_empty(), "undecoded attributes in {f:?}");
    }
}

/// What netlink-packet-netfilter's parser sees in one direction.
#[derive(Debug, Default, PartialEq)]
struct TheirTuple {
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    proto: Option<u8>,
    sport: Option<u16>,
    dport: Option<u16>,
}

/// What netlink-packet-netfilter's parser sees in one message.
#[derive(Debug, Default)]
struct TheirFlow {
    family: u8,
    orig: TheirTuple,
    reply: TheirTuple,
    status: Option<u32>,
    timeout: Option<u32>,
    mark: Option<u32>,
    tcp_state: Option<u8>,
}

fn their_tuple(parts: &[NfTuple]) -> TheirTuple {
    let mut t = TheirTuple::default();
    for part in parts {
        match part {
            NfTuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => t.src = Some(*a),
                        IPTuple::DestinationAddress(a) => t.dst = Some(*a),
                        _ => {}
                    }
                }
            }
            NfTuple::Proto(protos) => {
                for p in protos {
                    match p {
                        ProtoTuple::Protocol(n) => t.proto = Some(u8::from(*n)),
                        ProtoTuple::SourcePort(n) => t.sport = Some(*n),
                        ProtoTuple::DestinationPort(n) => t.dport = Some(*n),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    t
}

fn parse_with_netlink_packet_netfilter(bytes: &[u8]) -> TheirFlow {
    let msg = NetlinkMessage::<NetfilterMessage>::deserialize(bytes)
        .unwrap_or_else(|e| panic!("netlink-packet-netfilter rejects a recorded message: {e}"));
    let NetlinkPayload::InnerMessage(nf) = msg.payload else {
        panic!("not a netfilter message: {:?}", msg.payload);
    };
    let NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)) = nf.inner else {
        panic!("not a conntrack NEW message: {:?}", nf.inner);
    };
    let mut out = TheirFlow { family: u8::from(nf.header.family), ..TheirFlow::default() };
    for attr in &attrs {
        match attr {
            ConntrackAttribute::CtaTupleOrig(t) => out.orig = their_tuple(t),
            ConntrackAttribute::CtaTupleReply(t) => out.reply = their_tuple(t),
            ConntrackAttribute::CtaStatus(s) => out.status = Some(s.bits()),
            ConntrackAttribute::CtaTimeout(t) => out.timeout = Some(*t),
            ConntrackAttribute::CtaMark(m) => out.mark = Some(*m),
            ConntrackAttribute::CtaProtoInfo(infos) => {
                for info in infos {
                    if let ProtoInfo::TCP(tcp) = info {
                        for item in tcp {
                            if let ProtoInfoTCP::State(s) = item {
                                out.tcp_state = Some(*s);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn our_tuple(t: &Tuple, proto: Proto) -> TheirTuple {
    TheirTuple {
        src: Some(t.src),
        dst: Some(t.dst),
        proto: Some(proto.0),
        sport: t.sport(),
        dport: t.dport(),
    }
}

#[test]
fn netlink_packet_netfilter_decodes_the_same_fields() {
    let messages = mixed_messages();
    let flows = mixed_flows();
    let mut tcp_states = 0;
    for (bytes, ours) in messages.iter().zip(&flows) {
        let theirs = parse_with_netlink_packet_netfilter(bytes);
        let ctx = format!("{ours:?}");
        assert_eq!(theirs.family, ours.family.number(), "{ctx}");
        assert_eq!(theirs.orig, our_tuple(&ours.orig, ours.proto), "{ctx}");
        assert_eq!(theirs.reply, our_tuple(&ours.reply, ours.proto), "{ctx}");
        assert_eq!(theirs.status, Some(ours.status.0), "{ctx}");
        assert_eq!(theirs.timeout, ours.timeout, "{ctx}");
        assert_eq!(theirs.mark, ours.mark, "{ctx}");
        assert_eq!(theirs.tcp_state, ours.tcp_state().map(|s| s.number()), "{ctx}");
        tcp_states += usize::from(theirs.tcp_state.is_some());
    }
    assert!(tcp_states >= 10, "the fixture holds TCP entries in many states");
}

/// A small deterministic generator (xorshift64*): the same corruptions on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes and renders `bytes` in every format; a panic fails the test with the input.
fn decode_and_render(bytes: &[u8]) -> Option<Flow> {
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut flow = Flow::default();
        decode_message(bytes, &mut flow).ok()?;
        let mut sink = Vec::new();
        conntrack::write_line_at(&mut sink, &flow, 1_700_000_000).unwrap();
        json::write_flow(&mut sink, &flow).unwrap();
        Some(flow)
    }));
    r.unwrap_or_else(|_| panic!("decoding or rendering panicked on {}", hex(bytes)))
}

/// (start, unpadded end) of each top-level attribute, walked from the lengths alone.
fn top_level_spans(msg: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut at = ATTRS_START;
    while at + 4 <= msg.len() {
        let len = usize::from(u16::from_ne_bytes([msg[at], msg[at + 1]]));
        assert!(len >= 4 && at + len <= msg.len(), "recorded message is well formed");
        spans.push((at, at + len));
        at += len.next_multiple_of(4);
    }
    assert_eq!(at, msg.len(), "attributes fill the message");
    spans
}

/// Each `Some` field of a decoded prefix must be what the whole message says.
fn never_invents(prefix: &Flow, whole: &Flow) {
    let same = |a: bool, what: &str| assert!(a, "a prefix decoded a different {what}");
    let blank = Tuple::default();
    same(prefix.orig == blank || prefix.orig == whole.orig, "orig tuple");
    same(prefix.reply == blank || prefix.reply == whole.reply, "reply tuple");
    same(prefix.status.0 == 0 || prefix.status == whole.status, "status");
    same(prefix.state.is_none() || prefix.state == whole.state, "state");
    same(prefix.timeout.is_none() || prefix.timeout == whole.timeout, "timeout");
    same(prefix.mark.is_none() || prefix.mark == whole.mark, "mark");
    same(prefix.zone.is_none() || prefix.zone == whole.zone, "zone");
    same(prefix.id.is_none() || prefix.id == whole.id, "id");
    same(prefix.counters_orig.is_none() || prefix.counters_orig == whole.counters_orig, "counters");
    same(prefix.start_ns.is_none() || prefix.start_ns == whole.start_ns, "start");
    assert_eq!(prefix.family, whole.family);
}

#[test]
fn truncated_messages_are_errors_unless_cut_between_attributes() {
    let mut checked = 0;
    for msg in mixed_messages() {
        let whole = decode_and_render(&msg).expect("the whole message decodes");
        let spans = top_level_spans(&msg);
        for cut in 0..=msg.len() {
            let splits_an_attribute = spans.iter().any(|&(start, end)| start < cut && cut < end);
            let should_decode = cut >= ATTRS_START && !splits_an_attribute;
            let got = decode_and_render(&msg[..cut]);
            assert_eq!(got.is_some(), should_decode, "cut at {cut} of {}", hex(&msg));
            if let Some(prefix) = got {
                never_invents(&prefix, &whole);
            }
            checked += 1;
        }
    }
    assert!(checked > 3000, "every prefix of every message: {checked}");
}

#[test]
fn corrupted_messages_never_panic() {
    let mut rng = Rng(0x0c7_6ad2_5eed);
    let (mut decoded, mut rejected) = (0, 0);
    for msg in mixed_messages() {
        for _ in 0..400 {
            let mut bytes = msg.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len());
                // Half flip one bit (lengths, flags, values), half write a random byte.
                if rng.next() & 1 == 0 {
                    bytes[at] ^= 1 << rng.below(8);
                } else {
                    bytes[at] = rng.next() as u8;
                }
            }
            // Sometimes also cut the message short or extend it with garbage.
            match rng.below(4) {
                0 => bytes.truncate(rng.below(bytes.len() + 1)),
                1 => bytes.extend((0..rng.below(16)).map(|_| rng.next() as u8)),
                _ => {}
            }
            match decode_and_render(&bytes) {
                Some(_) => decoded += 1,
                None => rejected += 1,
            }
        }
    }
    // Both outcomes occur: the corruptions reach the decoder's error paths and its happy path.
    assert!(decoded > 1000 && rejected > 1000, "decoded {decoded}, rejected {rejected}");
}

/// A recorded entry with the `CTA_SECCTX` nest an SELinux host adds (`ctnetlink_dump_secctx`:
/// a nest holding the NUL-terminated `CTA_SECCTX_NAME`): ctnetlink decodes it into the flow,
/// the text output prints it where conntrack-tools does, and JSON carries it by name and
/// reads it back, instead of a raw attribute.
#[test]
fn issue_11_5_secctx_is_decoded_printed_and_round_tripped() {
    const CTA_SECCTX: u16 = 19;
    const CTA_SECCTX_NAME: u16 = 1;
    const NLA_F_NESTED: u16 = 0x8000;
    let context = b"system_u:object_r:unlabeled_t:s0";
    let mut msg = mixed_messages().swap_remove(0);
    let mut name = context.to_vec();
    name.push(0);
    let inner = 4 + name.len();
    let outer = 4 + inner.next_multiple_of(4);
    msg.resize(msg.len().next_multiple_of(4), 0);
    msg.extend_from_slice(&(outer as u16).to_ne_bytes());
    msg.extend_from_slice(&(CTA_SECCTX | NLA_F_NESTED).to_ne_bytes());
    msg.extend_from_slice(&(inner as u16).to_ne_bytes());
    msg.extend_from_slice(&CTA_SECCTX_NAME.to_ne_bytes());
    msg.extend_from_slice(&name);
    msg.resize(msg.len().next_multiple_of(4), 0);
    let len = msg.len() as u32;
    msg[..4].copy_from_slice(&len.to_ne_bytes());

    let mut flow = Flow::default();
    decode_message(&msg, &mut flow).unwrap();
    assert_eq!(flow.secctx.as_ref().map(|c| c.as_bytes()), Some(&context[..]));
    assert!(flow.unknown.is_empty(), "secctx left as a raw attribute: {:?}", flow.unknown);

    let mut text = Vec::new();
    conntrack::write_line_at(&mut text, &flow, 1_700_000_000).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains(" secctx=system_u:object_r:unlabeled_t:s0 "), "{text}");

    let mut line = Vec::new();
    json::write_flow(&mut line, &flow).unwrap();
    let line = String::from_utf8(line).unwrap();
    assert!(line.contains(r#""secctx":"system_u:object_r:unlabeled_t:s0""#), "{line}");
    assert!(!line.contains("raw_attrs"), "{line}");
    let back: Vec<Flow> = json::read_flows(line.as_bytes()).map(Result::unwrap).collect();
    assert_eq!(back[0].secctx, flow.secctx);
}
