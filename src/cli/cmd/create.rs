//! `ctguard create`: create one flow, like `conntrack -I`.

use std::net::IpAddr;

use clap::Args as ClapArgs;
use ctguard::ctnetlink::Conntrack;
use ctguard::flow::{Family, Flow, L4, Proto, ProtoState, Status, Tuple};
use ctguard::select;

use crate::cli::exit::{self, Failure, Outcome};
use crate::cli::parse::{self, Given};
use crate::cli::select_args;

/// `ctguard create`: like `conntrack -I`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Protocol name or number.
    #[arg(short = 'p', long = "proto", value_name = "PROTO", value_parser = select::parse_proto)]
    pub proto: Proto,
    /// Original source address.
    #[arg(short = 's', long = "src", value_name = "IP", value_parser = parse::addr("source"))]
    pub src: IpAddr,
    /// Original destination address.
    #[arg(short = 'd', long = "dst", value_name = "IP", value_parser = parse::addr("destination"))]
    pub dst: IpAddr,
    /// Original source port.
    #[arg(long, value_name = "PORT", value_parser = parse::number::<u16>("--sport"))]
    pub sport: Option<u16>,
    /// Original destination port.
    #[arg(long, value_name = "PORT", value_parser = parse::number::<u16>("--dport"))]
    pub dport: Option<u16>,
    /// Reply source address (default: the original destination; differs for DNAT).
    #[arg(long, value_name = "IP", value_parser = parse::addr("reply source"))]
    pub reply_src: Option<IpAddr>,
    /// Reply destination address (default: the original source; differs for SNAT).
    #[arg(long, value_name = "IP", value_parser = parse::addr("reply destination"))]
    pub reply_dst: Option<IpAddr>,
    /// Reply source port (default: the original destination port).
    #[arg(long, value_name = "PORT", value_parser = parse::number::<u16>("--reply-sport"))]
    pub reply_sport: Option<u16>,
    /// Reply destination port (default: the original source port).
    #[arg(long, value_name = "PORT", value_parser = parse::number::<u16>("--reply-dport"))]
    pub reply_dport: Option<u16>,
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
    /// Zone.
    #[arg(short = 'w', long, value_name = "N", value_parser = parse::zone)]
    pub zone: Option<u16>,
    /// Connection labels: names from the label map or bit numbers, comma separated
    /// (repeatable). The kernel keeps them only while a label user (an nft `ct label` rule)
    /// exists in the namespace.
    #[arg(short = 'l', long, value_name = "LABEL[,LABEL]")]
    pub label: Vec<String>,
    /// The label names (default /etc/xtables/connlabel.conf).
    #[arg(long, value_name = "FILE")]
    pub labelmap: Option<String>,
}

/// A validated `create`: the flow.
#[derive(Debug)]
pub struct Plan {
    flow: Box<Flow>,
}

/// The flow `create` asks for, with the reply tuple defaulting to the inverse.
pub fn plan(a: Args) -> Result<Plan, String> {
    let (proto, src, dst) = (a.proto, a.src, a.dst);
    if Family::of(src) != Family::of(dst) {
        return Err("source and destination must be the same family".into());
    }
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
    let orig = Tuple { src, dst, l4, zone: None };
    let mut reply = orig.inverse();
    if let Some(s) = a.reply_src {
        reply.src = s;
    }
    if let Some(d) = a.reply_dst {
        reply.dst = d;
    }
    if Family::of(reply.src) != Family::of(src) || Family::of(reply.dst) != Family::of(src) {
        return Err("reply addresses must be the same family as the original".into());
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
    let status = match a.status {
        Some((_, clear)) if clear != 0 => {
            return Err("--status for create takes bits to set, not negations".into());
        }
        Some((set, _)) => set,
        None => 0,
    };
    let mut labels = None;
    if !a.label.is_empty() {
        let map = select_args::label_map(a.labelmap.as_deref())?;
        let mut bits = 0;
        for list in &a.label {
            bits |= map.bits(list).map_err(|e| format!("--label {list}: {e}"))?;
        }
        labels = Some(bits);
    }
    let flow = Flow {
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
    };
    Ok(Plan { flow: Box::new(flow) })
}

/// Runs `create`.
pub fn run(p: Plan, ct: &mut Conntrack) -> Result<Outcome, Failure> {
    let mut failed = None;
    ct.create(std::slice::from_ref(&*p.flow), |_, errno| failed = Some(errno))?;
    if let Some(errno) = failed {
        return Err(Failure::Message(format!("create: {}", exit::errno_text(errno))));
    }
    Ok(Outcome::Ok)
}
