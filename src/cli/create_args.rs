//! The flags that describe one flow to create (`ctguard create`, `conntrack -I` lines of a
//! batch), and the [`Flow`] they make: one parser for both, so a batch line means what the
//! command line means.

use std::net::IpAddr;

use clap::Args as ClapArgs;
use ctguard::flow::{Family, Flow, L4, NatTarget, Proto, ProtoState, Status, Tuple};
use ctguard::select;

use super::parse::{self, Given};
use super::select_args;

/// One flow, as `conntrack -I` takes it (its short flags and long spellings too).
#[derive(Debug, ClapArgs)]
pub struct CreateArgs {
    /// Protocol name or number.
    #[arg(short = 'p', long = "proto", value_name = "PROTO", value_parser = select::parse_proto)]
    pub proto: Proto,
    /// Original source address.
    #[arg(short = 's', long = "src", visible_alias = "orig-src", value_name = "IP", value_parser = parse::addr("source"))]
    pub src: IpAddr,
    /// Original destination address.
    #[arg(short = 'd', long = "dst", visible_alias = "orig-dst", value_name = "IP", value_parser = parse::addr("destination"))]
    pub dst: IpAddr,
    /// Original source port.
    #[arg(long, visible_alias = "orig-port-src", value_name = "PORT", value_parser = parse::number::<u16>("--sport"))]
    pub sport: Option<u16>,
    /// Original destination port.
    #[arg(long, visible_alias = "orig-port-dst", value_name = "PORT", value_parser = parse::number::<u16>("--dport"))]
    pub dport: Option<u16>,
    /// Reply source address (default: the original destination; differs for DNAT).
    #[arg(short = 'r', long, value_name = "IP", value_parser = parse::addr("reply source"))]
    pub reply_src: Option<IpAddr>,
    /// Reply destination address (default: the original source; differs for SNAT).
    #[arg(short = 'q', long, value_name = "IP", value_parser = parse::addr("reply destination"))]
    pub reply_dst: Option<IpAddr>,
    /// Reply source port (default: the original destination port).
    #[arg(long, visible_alias = "reply-port-src", value_name = "PORT", value_parser = parse::number::<u16>("--reply-sport"))]
    pub reply_sport: Option<u16>,
    /// Reply destination port (default: the original source port).
    #[arg(long, visible_alias = "reply-port-dst", value_name = "PORT", value_parser = parse::number::<u16>("--reply-dport"))]
    pub reply_dport: Option<u16>,
    /// Source NAT to IP[:PORT] ([IPv6]:PORT), like `conntrack -I --src-nat`; needs the
    /// kernel's NAT (nf_nat). Without a port the reply's destination port (--reply-dport,
    /// as `conntrack -L -o save` writes it; else the original source port) is kept.
    #[arg(short = 'n', long, value_name = "IP[:PORT]", value_parser = select::parse_nat_target, conflicts_with = "reply_dst")]
    pub src_nat: Option<NatTarget>,
    /// Destination NAT to IP[:PORT], like `conntrack -I --dst-nat`. Without a port the
    /// reply's source port (--reply-sport; else the original destination port) is kept.
    #[arg(short = 'g', long, value_name = "IP[:PORT]", value_parser = select::parse_nat_target, conflicts_with = "reply_src")]
    pub dst_nat: Option<NatTarget>,
    /// ICMP type (ICMP/ICMPv6).
    #[arg(long, value_name = "N", value_parser = parse::number::<u8>("--icmp-type"))]
    pub icmp_type: Option<u8>,
    /// ICMP code.
    #[arg(long, value_name = "N", value_parser = parse::number::<u8>("--icmp-code"))]
    pub icmp_code: Option<u8>,
    /// ICMP identifier.
    #[arg(long, value_name = "N", value_parser = parse::number::<u16>("--icmp-id"))]
    pub icmp_id: Option<u16>,
    /// TCP/SCTP/DCCP state.
    #[arg(long, value_name = "STATE", value_parser = parse::given(select::parse_states))]
    pub state: Option<Given<Vec<ProtoState>>>,
    /// Timeout (seconds, or a duration like 1h).
    #[arg(short = 't', long, value_name = "DURATION", value_parser = parse::seconds("--timeout"))]
    pub timeout: u32,
    /// Status bits to set, comma separated (ASSURED,SEEN_REPLY).
    #[arg(short = 'u', long, value_name = "LIST", value_parser = select::parse_status)]
    pub status: Option<(u32, u32)>,
    /// Mark.
    #[arg(short = 'm', long, value_name = "MARK", value_parser = select::parse_mark)]
    pub mark: Option<(u32, u32)>,
    /// Zone, for both directions (`CTA_ZONE`).
    #[arg(short = 'w', long, value_name = "N", value_parser = parse::zone)]
    pub zone: Option<u16>,
    /// Zone of the original direction only (`CTA_TUPLE_ZONE` in the original tuple).
    #[arg(long, value_name = "N", value_parser = parse::zone)]
    pub orig_zone: Option<u16>,
    /// Zone of the reply direction only (`CTA_TUPLE_ZONE` in the reply tuple).
    #[arg(long, value_name = "N", value_parser = parse::zone)]
    pub reply_zone: Option<u16>,
    /// Connection labels: names from the label map or bit numbers, comma separated
    /// (repeatable). The kernel keeps them only while a label user (an nft `ct label` rule)
    /// exists in the namespace.
    #[arg(short = 'l', long, value_name = "LABEL[,LABEL]")]
    pub label: Vec<String>,
    /// The label names (default /etc/xtables/connlabel.conf).
    #[arg(long, value_name = "FILE")]
    pub labelmap: Option<String>,
}

/// The zone flags of one create: the kernel keeps one zone per entry, for both directions or
/// for one (`ctnetlink_parse_tuple_zone` answers EINVAL to a second zone), so one flag only.
fn one_zone(a: &CreateArgs) -> Result<(), String> {
    let given: Vec<&str> = [
        (a.zone.is_some(), "--zone"),
        (a.orig_zone.is_some(), "--orig-zone"),
        (a.reply_zone.is_some(), "--reply-zone"),
    ]
    .into_iter()
    .filter_map(|(set, flag)| set.then_some(flag))
    .collect();
    if given.len() > 1 {
        return Err(format!(
            "{}: an entry has one zone, for both directions (--zone) or for one (the kernel \
             refuses two, EINVAL)",
            given.join(" with ")
        ));
    }
    Ok(())
}

/// The flow the flags ask for, with the reply tuple defaulting to the inverse.
pub fn flow(a: CreateArgs) -> Result<Flow, String> {
    let (proto, src, dst) = (a.proto, a.src, a.dst);
    let mismatched = |what: &str| {
        select::ValueError::MismatchedFamily(format!("{what}: {src} and {dst}")).to_string()
    };
    if Family::of(src) != Family::of(dst) {
        return Err(mismatched("source and destination"));
    }
    one_zone(&a)?;
    let l4 = if proto.has_ports() {
        let (Some(s), Some(d)) = (a.sport, a.dport) else {
            return Err(format!("{proto} needs --sport and --dport"));
        };
        L4::Ports { src: s, dst: d }
    } else if proto.is_icmp() {
        let Some(kind) = a.icmp_type else {
            return Err(format!("{proto} needs --icmp-type"));
        };
        L4::Icmp { kind, code: a.icmp_code.unwrap_or(0), id: a.icmp_id.unwrap_or(0) }
    } else {
        L4::None
    };
    let orig = Tuple { src, dst, l4, zone: a.orig_zone };
    let mut reply = Tuple { zone: a.reply_zone, ..orig.inverse() };
    if let Some(s) = a.reply_src {
        reply.src = s;
    }
    if let Some(d) = a.reply_dst {
        reply.dst = d;
    }
    if Family::of(reply.src) != Family::of(src) || Family::of(reply.dst) != Family::of(src) {
        return Err(select::ValueError::MismatchedFamily(format!(
            "reply {} and {} beside {src}",
            reply.src, reply.dst
        ))
        .to_string());
    }
    if let L4::Ports { src: rs, dst: rd } = &mut reply.l4 {
        if let Some(p) = a.reply_sport {
            *rs = p;
        }
        if let Some(p) = a.reply_dport {
            *rd = p;
        }
    }
    let state = match &a.state {
        None => None,
        Some(s) => {
            let fits = |st: &&ProtoState| {
                matches!(
                    (proto, st),
                    (Proto::TCP, ProtoState::Tcp(_))
                        | (Proto::SCTP, ProtoState::Sctp(_))
                        | (Proto::DCCP, ProtoState::Dccp(_))
                )
            };
            Some(
                *s.value
                    .iter()
                    .find(fits)
                    .ok_or_else(|| format!("state '{s}' does not apply to {proto}"))?,
            )
        }
    };
    let mut status = match a.status {
        Some((_, clear)) if clear != 0 => {
            return Err("--status for create takes bits to set, not negations".into());
        }
        Some((set, _)) => set,
        None => 0,
    };
    // The reply the kernel will make of the NAT ([`Flow::nat`] reads it back for the request).
    for (flag, target, bit) in
        [("--src-nat", a.src_nat, Status::SRC_NAT), ("--dst-nat", a.dst_nat, Status::DST_NAT)]
    {
        let Some(t) = target else { continue };
        if Family::of(t.addr) != Family::of(src) {
            return Err(select::ValueError::MismatchedFamily(format!("{flag} {t} and -s {src}"))
                .to_string());
        }
        let (addr, port) = match (bit == Status::SRC_NAT, &mut reply.l4) {
            (true, L4::Ports { dst, .. }) => (&mut reply.dst, Some(dst)),
            (true, _) => (&mut reply.dst, None),
            (false, L4::Ports { src, .. }) => (&mut reply.src, Some(src)),
            (false, _) => (&mut reply.src, None),
        };
        *addr = t.addr;
        match (t.port, port) {
            (Some(p), Some(slot)) => *slot = p,
            (Some(_), None) => return Err(format!("{flag} {t}: {proto} has no ports")),
            (None, _) => {}
        }
        status |= bit;
    }
    let mut labels = None;
    if !a.label.is_empty() {
        let map = select_args::label_map(a.labelmap.as_deref())?;
        let mut bits = 0;
        for list in &a.label {
            bits |= map.bits(list).map_err(|e| format!("--label {list}: {e}"))?;
        }
        labels = Some(bits);
    }
    Ok(Flow {
        labels,
        family: Family::of(src),
        proto,
        orig,
        reply,
        state,
        status: Status(status),
        timeout: Some(a.timeout),
        mark: a.mark.map(|(v, _)| v),
        zone: a.zone,
        ..Flow::default()
    })
}
