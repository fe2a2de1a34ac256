//! The selector corpus: command-line values → `Selector` (through `ctguard::select`'s parsers)
//! → `matches` on recorded and synthetic flows; and what `kernel_filter` may push to the kernel.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ctguard::ctnetlink::DumpFilter;
use ctguard::flow::{Family, Flow, L4, Proto, ProtoState, SctpState, Status, TcpState, Tuple};
use ctguard::guests::GuestMap;
use ctguard::select::{self, GuestFilter, Selector};
use ctguard::sysctl::StateTimeouts;

use crate::fixtures::{
    MIXED_CONNTRACK_L, NAT_HEX, flows_of, mixed_flow, mixed_flows, normalise, rendered,
};

/// The guest file of the named-guest cases.
const GUESTS: &str = r#"
client = "10.10.4.1"
web = ["192.168.0.0/24", "fd00::10"]
vip = "10.10.4.2"
inside = "172.16.3.5"
resolver = "8.8.8.8"
edge = "203.0.113.1"
server = "10.10.0.2"
"#;

fn guests() -> GuestMap {
    GuestMap::parse(GUESTS, "guests.toml").expect("test guest file")
}

fn seconds(s: &str) -> u32 {
    u32::try_from(select::parse_duration(s).expect("test duration").as_secs()).unwrap()
}

/// The selector `ctguard list FLAGS` builds: each value through `ctguard::select`'s parser,
/// repeated flags are alternatives, `--guest` is a name of `guests` or a CIDR, and `--idle`
/// judges with the kernel's default state timeouts.
fn selector(flags: &[&str], guests: &GuestMap) -> Result<Selector, String> {
    let e = |e: select::ValueError| e.to_string();
    let mut sel = Selector::default();
    let mut guest_filter: Option<GuestFilter> = None;
    for pair in flags.chunks(2) {
        let [flag, value] = pair else { panic!("flag without a value in {flags:?}") };
        let value = *value;
        match *flag {
            "-s" | "--src" => sel.src.push(select::parse_cidr(value).map_err(e)?),
            "-d" | "--dst" => sel.dst.push(select::parse_cidr(value).map_err(e)?),
            "--reply-src" => sel.reply_src.push(select::parse_cidr(value).map_err(e)?),
            "--reply-dst" => sel.reply_dst.push(select::parse_cidr(value).map_err(e)?),
            "-p" | "--proto" => sel.protos.push(select::parse_proto(value).map_err(e)?),
            "--sport" => sel.sport.push(select::parse_port_range(value).map_err(e)?),
            "--dport" => sel.dport.push(select::parse_port_range(value).map_err(e)?),
            "--state" => sel.states.extend(select::parse_states(value).map_err(e)?),
            "--status" => {
                (sel.status_set, sel.status_clear) = select::parse_status(value).map_err(e)?
            }
            "--mark" => sel.mark = Some(select::parse_mark(value).map_err(e)?),
            "--zone" => sel.zone = Some(value.parse().map_err(|_| format!("bad zone {value}"))?),
            "-f" | "--family" => sel.family = Some(select::parse_family(value).map_err(e)?),
            "--idle" => {
                sel.idle_min = Some(seconds(value));
                sel.timeouts = Some(StateTimeouts::defaults());
            }
            "--timeout-below" => sel.timeout_below = Some(seconds(value)),
            "--guest" => {
                let g = guest_filter.get_or_insert_with(|| GuestFilter {
                    map: guests.clone().into(),
                    ..Default::default()
                });
                match guests.find(value) {
                    Some(id) => g.ids.push(id),
                    None => g.cidrs.push(select::parse_cidr(value).map_err(e)?),
                }
            }
            other => panic!("the corpus uses an unknown flag {other}"),
        }
    }
    sel.guests = guest_filter;
    Ok(sel)
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn ports(src: u16, dst: u16) -> L4 {
    L4::Ports { src, dst }
}

/// A flow that was never NATed: the reply is the inverse of the original.
fn synth(
    proto: Proto,
    orig: (&str, &str, L4),
    state: Option<ProtoState>,
    timeout: Option<u32>,
) -> Flow {
    let orig = Tuple { src: addr(orig.0), dst: addr(orig.1), l4: orig.2, zone: None };
    Flow {
        family: Family::of(orig.src),
        proto,
        orig,
        reply: orig.inverse(),
        state,
        status: Status(Status::CONFIRMED),
        timeout,
        mark: Some(0),
        ..Flow::default()
    }
}

fn tcp(state: TcpState) -> Option<ProtoState> {
    Some(ProtoState::Tcp(state))
}

/// One row of the corpus.
struct Case {
    name: &'static str,
    flow: Flow,
    flags: &'static [&'static str],
    expected: bool,
}

fn case(name: &'static str, flow: &Flow, flags: &'static [&'static str], expected: bool) -> Case {
    Case { name, flow: flow.clone(), flags, expected }
}

fn corpus() -> Vec<Case> {
    // Recorded flows (tests/fixtures/mixed.hex).
    let est = mixed_flow("tcp", "10.10.0.1"); // 40000 → 443, ESTABLISHED, ASSURED, mark 42
    let syn = mixed_flow("tcp", "10.10.0.3"); // SYN_SENT, unreplied
    let dnat = mixed_flow("tcp", "10.10.4.1"); // → 10.10.4.2:80, answered by 192.168.0.9:8080
    let snat = mixed_flow("udp", "172.16.3.5"); // → 8.8.8.8:53, leaves as 203.0.113.1:61000
    let v6 = mixed_flow("tcp", "2001:db8::1"); // ESTABLISHED, mark 0xffffffff
    let v6nat = mixed_flow("tcp", "fd00::6"); // → 2001:db8::80, answered by fd00::10
    let icmp = mixed_flow("icmp", "10.10.2.1");
    let icmp6 = mixed_flow("icmpv6", "2001:db8::1");
    let sctp = mixed_flow("sctp", "10.10.5.1"); // ESTABLISHED
    let cookie = mixed_flow("sctp", "10.10.5.3"); // COOKIE_WAIT
    let zone7 = mixed_flow("tcp", "10.10.3.1");
    let mark17 = mixed_flow("udp", "10.10.1.4"); // mark 0x11
    let max = mixed_flow("tcp", "10.10.6.1"); // mark 0xffffffff, zone 65535
    let udp = mixed_flow("udp", "10.10.1.1"); // unreplied
    let generic = mixed_flow("unknown", "10.10.9.1"); // protocol 200

    // Synthetic flows with exact timeouts for --idle (kernel defaults: TCP ESTABLISHED 432000,
    // UDP 30, UDP stream 120, ICMP 30, SCTP ESTABLISHED 210, generic 600).
    let est_idle_600 = synth(
        Proto::TCP,
        ("10.0.0.1", "10.0.0.2", ports(1, 2)),
        tcp(TcpState::Established),
        Some(431_400),
    );
    let udp_idle_20 = synth(Proto::UDP, ("10.0.0.1", "10.0.0.2", ports(1, 53)), None, Some(10));
    let mut udp_stream_idle_20 =
        synth(Proto::UDP, ("10.0.0.1", "10.0.0.2", ports(1, 53)), None, Some(100));
    udp_stream_idle_20.status.0 |= Status::SEEN_REPLY | Status::ASSURED;
    let echo = L4::Icmp { kind: 8, code: 0, id: 1 };
    let icmp_29 = synth(Proto::ICMP, ("10.0.0.1", "10.0.0.2", echo), None, Some(29));
    let generic_idle_600 = synth(Proto(200), ("10.0.0.1", "10.0.0.2", L4::None), None, Some(0));
    let sctp_idle_10 = synth(
        Proto::SCTP,
        ("10.0.0.1", "10.0.0.2", ports(1, 2)),
        Some(ProtoState::Sctp(SctpState::Established)),
        Some(200),
    );
    let no_timeout =
        synth(Proto::TCP, ("10.0.0.1", "10.0.0.2", ports(1, 2)), tcp(TcpState::Established), None);
    // Ownership order: reply src before orig dst, and reply dst last.
    let mut dnat_from_outside =
        synth(Proto::TCP, ("8.8.4.4", "10.10.4.2", ports(1, 80)), None, Some(9));
    dnat_from_outside.reply.src = addr("192.168.0.9");
    let mut only_reply_dst = synth(Proto::UDP, ("1.1.1.1", "2.2.2.2", ports(1, 2)), None, Some(9));
    only_reply_dst.reply.dst = addr("203.0.113.1");

    vec![
        // Addresses: alternatives within a flag, each flag on its own tuple field.
        case("src CIDR", &est, &["-s", "10.10.0.0/24"], true),
        case("src CIDR elsewhere", &est, &["-s", "10.9.0.0/16"], false),
        case(
            "src CIDRs are alternatives",
            &est,
            &["-s", "10.9.0.0/16", "-s", "10.10.0.0/24"],
            true,
        ),
        case("src host", &est, &["-s", "10.10.0.1"], true),
        case("src host, another", &est, &["-s", "10.10.0.11"], false),
        case("dst is the original destination", &dnat, &["-d", "10.10.4.2"], true),
        case("dst is not the DNAT target", &dnat, &["-d", "192.168.0.9"], false),
        case("reply-src is the DNAT target", &dnat, &["--reply-src", "192.168.0.0/24"], true),
        case("reply-dst is the SNAT address", &snat, &["--reply-dst", "203.0.113.1"], true),
        case("reply-dst of a plain flow", &est, &["--reply-dst", "10.10.0.1"], true),
        case("IPv6 CIDR", &v6, &["-s", "2001:db8::/32"], true),
        case("IPv4 /0 never holds IPv6", &v6, &["-s", "0.0.0.0/0"], false),
        case("IPv6 /0 never holds IPv4", &est, &["-s", "::/0"], false),
        // Across flags, every criterion must hold.
        case("src and dport", &est, &["-s", "10.10.0.0/24", "--dport", "443"], true),
        case("src and another dport", &est, &["-s", "10.10.0.0/24", "--dport", "80"], false),
        case(
            "proto, state, family",
            &v6,
            &["-p", "tcp", "--state", "established", "-f", "ipv6"],
            true,
        ),
        case(
            "proto, state, other family",
            &v6,
            &["-p", "tcp", "--state", "established", "-f", "ipv4"],
            false,
        ),
        // Ports and ranges: the original direction's ports.
        case("dport range", &est, &["--dport", "400-500"], true),
        case("dport range with a colon", &est, &["--dport", "443:443"], true),
        case("dport range above", &est, &["--dport", "444-65535"], false),
        case("dports are alternatives", &est, &["--dport", "80", "--dport", "443"], true),
        case("sport", &est, &["--sport", "40000"], true),
        case("sport is not the reply's", &dnat, &["--sport", "8080"], false),
        case("ICMP has no ports", &icmp, &["--dport", "0-65535"], false),
        case("SCTP ports", &sctp, &["--dport", "5001"], true),
        // Protocols.
        case("proto name, any case", &udp, &["-p", "UDP"], true),
        case("protos are alternatives", &udp, &["-p", "tcp", "-p", "udp"], true),
        case("proto number", &generic, &["-p", "200"], true),
        case("ipv6-icmp is icmpv6", &icmp6, &["-p", "ipv6-icmp"], true),
        case("icmp is not icmpv6", &icmp6, &["-p", "icmp"], false),
        // States, case-insensitive; a name shared by TCP and SCTP selects both.
        case("state lowercase", &est, &["--state", "established"], true),
        case("state list, mixed case", &est, &["--state", "Time_Wait,ESTABLISHED"], true),
        case(
            "state flags are alternatives",
            &syn,
            &["--state", "established", "--state", "syn_sent"],
            true,
        ),
        case("another state", &syn, &["--state", "established"], false),
        case("SCTP ESTABLISHED", &sctp, &["--state", "ESTABLISHED"], true),
        case("SCTP-only state", &cookie, &["--state", "cookie_wait"], true),
        case("UDP has no state", &udp, &["--state", "established"], false),
        // Status bits, `!` and `~` negate.
        case("status bit set", &est, &["--status", "ASSURED"], true),
        case("status list, lowercase", &est, &["--status", "assured,seen_reply"], true),
        case("status bit missing", &syn, &["--status", "ASSURED"], false),
        case("negated status", &syn, &["--status", "!SEEN_REPLY"], true),
        case("negated status, bit set", &est, &["--status", "!SEEN_REPLY"], false),
        case("tilde negates too", &syn, &["--status", "~ASSURED"], true),
        case("set and clear together", &est, &["--status", "ASSURED,!DYING"], true),
        // Marks: decimal or hex, with a mask.
        case("mark", &est, &["--mark", "42"], true),
        case("mark in hex", &est, &["--mark", "0x2a"], true),
        case("mark under a mask", &mark17, &["--mark", "0x10/0xf0"], true),
        case("mark without a mask is exact", &mark17, &["--mark", "0x10"], false),
        case("value bits outside the mask do not count", &mark17, &["--mark", "0x1f/0xf0"], true),
        case("largest mark", &max, &["--mark", "0xffffffff"], true),
        case("mark 0", &udp, &["--mark", "0"], true),
        // Zones: CTA_ZONE, 0 when the kernel sent none.
        case("zone", &zone7, &["--zone", "7"], true),
        case("zone 0 is not zone 7", &zone7, &["--zone", "0"], false),
        case("no CTA_ZONE is zone 0", &est, &["--zone", "0"], true),
        case("largest zone", &max, &["--zone", "65535"], true),
        // Family.
        case("family ipv6", &v6, &["-f", "ipv6"], true),
        case("family inet", &est, &["-f", "inet"], true),
        case("family 6 is not ipv4", &est, &["-f", "6"], false),
        // Guest CIDRs: any of the four addresses.
        case("guest CIDR at orig src", &snat, &["--guest", "172.16.3.0/24"], true),
        case("guest CIDR at reply src", &dnat, &["--guest", "192.168.0.9"], true),
        case("guest CIDR at orig dst", &dnat, &["--guest", "10.10.4.2"], true),
        case("guest CIDR at reply dst", &snat, &["--guest", "203.0.113.1"], true),
        case("guest CIDR at none", &dnat, &["--guest", "10.99.0.0/16"], false),
        case(
            "guest CIDRs are alternatives",
            &dnat,
            &["--guest", "10.99.0.0/16", "--guest", "192.168.0.0/24"],
            true,
        ),
        case("IPv6 guest CIDR at reply src", &v6nat, &["--guest", "fd00::10/128"], true),
        // Named guests: the owner decides, by orig src, reply src, orig dst, reply dst.
        case("owner by orig src", &dnat, &["--guest", "client"], true),
        case("reply src loses to orig src", &dnat, &["--guest", "web"], false),
        case("orig dst loses to orig src", &dnat, &["--guest", "vip"], false),
        case("a name or a CIDR", &dnat, &["--guest", "web", "--guest", "192.168.0.9"], true),
        case("SNAT belongs to the inside guest", &snat, &["--guest", "inside"], true),
        case("SNAT does not belong to the resolver", &snat, &["--guest", "resolver"], false),
        case("SNAT does not belong to its address", &snat, &["--guest", "edge"], false),
        case("owner by reply src", &v6nat, &["--guest", "web"], true),
        case("owner by orig dst", &est, &["--guest", "server"], true),
        case("reply src beats orig dst", &dnat_from_outside, &["--guest", "web"], true),
        case("orig dst after reply src", &dnat_from_outside, &["--guest", "vip"], false),
        case("owner by reply dst, last", &only_reply_dst, &["--guest", "edge"], true),
        // Idle: the state's default timeout minus what is left.
        case("idle 10m, ESTABLISHED", &est_idle_600, &["--idle", "10m"], true),
        case("idle 601s, ESTABLISHED", &est_idle_600, &["--idle", "601"], false),
        case("idle, UDP", &udp_idle_20, &["--idle", "20s"], true),
        case("idle, UDP, a second more", &udp_idle_20, &["--idle", "21s"], false),
        case("idle, UDP stream", &udp_stream_idle_20, &["--idle", "20"], true),
        case("idle, UDP stream, a second more", &udp_stream_idle_20, &["--idle", "21"], false),
        case("idle, ICMP", &icmp_29, &["--idle", "1s"], true),
        case("idle, generic", &generic_idle_600, &["--idle", "10m"], true),
        case("idle, SCTP", &sctp_idle_10, &["--idle", "10s"], true),
        case("idle, SCTP, a second more", &sctp_idle_10, &["--idle", "11s"], false),
        case("idle without a timeout", &no_timeout, &["--idle", "0"], false),
        // Time left.
        case("timeout below", &icmp_29, &["--timeout-below", "30s"], true),
        case("timeout not below", &icmp_29, &["--timeout-below", "29"], false),
        case("timeout below, no timeout", &no_timeout, &["--timeout-below", "1h"], false),
    ]
}

#[test]
fn corpus_matches_as_expected() {
    let guests = guests();
    let cases = corpus();
    let mut wrong = Vec::new();
    for c in &cases {
        let sel = selector(c.flags, &guests).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert!(!sel.is_empty(), "{}: flags set a criterion", c.name);
        if sel.matches(&c.flow) != c.expected {
            wrong.push(format!("{} ({:?}): expected {}", c.name, c.flags, c.expected));
        }
    }
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
    let hits = cases.iter().filter(|c| c.expected).count();
    assert!(hits > 20 && cases.len() - hits > 20, "the corpus has both verdicts");
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), cases.len(), "case names are unique");
}

#[test]
fn empty_selector_takes_every_flow() {
    let sel = selector(&[], &GuestMap::new()).unwrap();
    assert!(sel.is_empty());
    let flows = mixed_flows();
    assert!(flows.iter().all(|f| sel.matches(f)));
    assert!(corpus().iter().all(|c| sel.matches(&c.flow)));
    assert_eq!(sel.kernel_filter(), DumpFilter::default());
}

/// The orig-direction `dport=` of a `conntrack -L` line.
fn first_dport(line: &str) -> Option<&str> {
    line.split(' ').find_map(|w| w.strip_prefix("dport="))
}

#[test]
fn fixture_selections_agree_with_conntrack_l_text() {
    type Grep = fn(&str) -> bool;
    let oracles: [(&[&str], Grep); 9] = [
        (&["--state", "ESTABLISHED"], |l| l.contains(" ESTABLISHED ")),
        (&["--status", "!SEEN_REPLY"], |l| l.contains(" [UNREPLIED] ")),
        (&["--status", "ASSURED"], |l| l.contains(" [ASSURED] ")),
        (&["-p", "udp"], |l| l.starts_with("udp ")),
        (&["-f", "ipv6"], |l| l.split(' ').any(|w| w.starts_with("src=") && w.contains(':'))),
        (&["--mark", "4294967295"], |l| l.contains(" mark=4294967295 ")),
        (&["--zone", "7"], |l| l.contains(" zone=7 ")),
        (&["--dport", "80"], |l| first_dport(l) == Some("80")),
        (&["--reply-src", "192.168.0.0/16", "--reply-src", "fd00::10"], |l| {
            l.contains(" src=192.168.") || l.contains(" src=fd00::10 ")
        }),
    ];
    let flows = mixed_flows();
    for (flags, grep) in oracles {
        let sel = selector(flags, &GuestMap::new()).unwrap();
        let ours: BTreeSet<String> =
            flows.iter().filter(|f| sel.matches(f)).map(|f| rendered(f, 0).line).collect();
        let theirs: BTreeSet<String> =
            MIXED_CONNTRACK_L.lines().filter(|l| grep(l)).map(|l| normalise(l).line).collect();
        assert!(!theirs.is_empty() && theirs.len() < flows.len(), "{flags:?} selects some");
        assert_eq!(ours, theirs, "{flags:?}");
    }
}

/// The NAT selectors over entries the kernel NATed itself, recorded with `conntrack -L` and
/// each of `-n`/`-g`/`-j` (`tests/fixtures/nat.md`): the same flows, the status bits and the
/// reply tuples as decoded from the kernel's bytes.
#[test]
fn issue_12_nat_fixture_selections_agree_with_conntrack() {
    use select::{NatMatch, NatSelect};
    let to = |s: &str| Some(NatMatch::To(select::parse_nat_target(s).unwrap()));
    let any = Some(NatMatch::Any);
    let nat = |src, dst, either| NatSelect { src, dst, either };
    let recorded: [(&str, NatSelect, &str); 11] = [
        ("n", nat(any, None, None), include_str!("../fixtures/nat.conntrack-L-n.txt")),
        ("g", nat(None, any, None), include_str!("../fixtures/nat.conntrack-L-g.txt")),
        ("j", nat(None, None, any), include_str!("../fixtures/nat.conntrack-L-j.txt")),
        (
            "n-ip",
            nat(to("203.0.113.1"), None, None),
            include_str!("../fixtures/nat.conntrack-L-n-ip.txt"),
        ),
        (
            "n-ip-port",
            nat(to("203.0.113.1:6000"), None, None),
            include_str!("../fixtures/nat.conntrack-L-n-ip-port.txt"),
        ),
        (
            "g-ip",
            nat(None, to("10.9.9.9"), None),
            include_str!("../fixtures/nat.conntrack-L-g-ip.txt"),
        ),
        (
            "g-ip-port",
            nat(None, to("10.9.9.9:8080"), None),
            include_str!("../fixtures/nat.conntrack-L-g-ip-port.txt"),
        ),
        (
            "g-ip6-port",
            nat(None, to("[fd00::9]:8080"), None),
            include_str!("../fixtures/nat.conntrack-L-g-ip6-port.txt"),
        ),
        (
            "n-ip6",
            nat(to("fd00::77"), None, None),
            include_str!("../fixtures/nat.conntrack-L-n-ip6.txt"),
        ),
        (
            "j-ip",
            nat(None, None, to("10.9.9.9")),
            include_str!("../fixtures/nat.conntrack-L-j-ip.txt"),
        ),
        ("n-g", nat(any, any, None), include_str!("../fixtures/nat.conntrack-L-n-g.txt")),
    ];
    let flows = flows_of(NAT_HEX);
    assert_eq!(flows.len(), 10, "the NAT fixture");
    for (name, nat, text) in recorded {
        let sel = Selector { nat, ..Selector::default() };
        let ours: BTreeSet<String> =
            flows.iter().filter(|f| sel.matches(f)).map(|f| rendered(f, 0).line).collect();
        let theirs: BTreeSet<String> = text.lines().map(|l| normalise(l).line).collect();
        assert!(!theirs.is_empty() && theirs.len() < flows.len(), "{name} selects some");
        assert_eq!(ours, theirs, "{name}");
    }
    // What a restore sends: the binding read back from the kernel's own bytes.
    let both = flows.iter().find(|f| f.orig.src == "10.0.0.9".parse::<IpAddr>().unwrap());
    let both = both.expect("the SNAT+DNAT entry").nat();
    assert_eq!(both.src.map(|t| t.to_string()).as_deref(), Some("203.0.113.2:6001"));
    assert_eq!(both.dst.map(|t| t.to_string()).as_deref(), Some("10.9.9.8:5353"));
    let custom = flows.iter().find(|f| f.orig.src == "10.0.0.11".parse::<IpAddr>().unwrap());
    let custom = custom.expect("the explicit-reply entry");
    assert!(custom.is_nated() && custom.nat().is_empty(), "an explicit reply is not NAT");
}

#[test]
fn kernel_filter_pushes_only_exact_single_values() {
    let ip = |s: &str| Some(s.parse::<Ipv4Addr>().unwrap());
    let none = DumpFilter::default();
    let cases: Vec<(&[&str], DumpFilter)> = vec![
        (&["-s", "10.10.0.1"], DumpFilter { orig_src_v4: ip("10.10.0.1"), ..none }),
        (&["-s", "10.10.0.1/32"], DumpFilter { orig_src_v4: ip("10.10.0.1"), ..none }),
        (&["-d", "10.10.0.2"], DumpFilter { orig_dst_v4: ip("10.10.0.2"), ..none }),
        (&["-s", "10.10.0.0/24"], none),
        (&["-s", "10.10.0.1", "-s", "10.10.0.3"], none),
        (&["-s", "2001:db8::1"], none),
        (
            &["-d", "2001:db8::2/128", "-f", "ipv6"],
            DumpFilter { family: Some(Family::Ipv6), ..none },
        ),
        (&["--reply-src", "192.168.0.9"], none),
        (&["--reply-dst", "203.0.113.1"], none),
        (&["--guest", "10.10.0.1"], none),
        (&["-p", "tcp"], none),
        (&["--state", "established"], none),
        (&["--dport", "443"], none),
        (&["--idle", "1m", "--timeout-below", "1h"], none),
        (&["-f", "ipv4"], DumpFilter { family: Some(Family::Ipv4), ..none }),
        (&["--mark", "0x10/0xf0"], DumpFilter { mark: Some((0x10, 0xf0)), ..none }),
        (&["--zone", "7"], DumpFilter { zone: Some(7), ..none }),
        (
            &["--status", "ASSURED,!SEEN_REPLY"],
            DumpFilter {
                status: Some((Status::ASSURED, Status::ASSURED | Status::SEEN_REPLY)),
                ..none
            },
        ),
    ];
    for (flags, want) in cases {
        let sel = selector(flags, &GuestMap::new()).unwrap();
        assert_eq!(sel.kernel_filter(), want, "{flags:?}");
    }
}

/// The zone the kernel keeps for an entry (`ct->zone.id`). It is one id with a direction:
/// ctnetlink dumps it as `CTA_ZONE` when it applies to both directions and as the tuple's
/// `CTA_TUPLE_ZONE` when it applies to one; the dump filter compares the id in any direction
/// (`nf_ct_zone_equal_any`).
fn kernel_zone_id(flow: &Flow) -> u16 {
    flow.zone.or(flow.orig.zone).or(flow.reply.zone).unwrap_or(0)
}

/// Whether the kernel (6.8+, `ctnetlink_filter_match`) sends `flow` for a dump with `f`.
fn kernel_keeps(f: &DumpFilter, flow: &Flow) -> bool {
    // CTA_FILTER needs an AF_INET request, which then drops every other family.
    let family = if f.orig_src_v4.is_some() || f.orig_dst_v4.is_some() {
        Some(Family::Ipv4)
    } else {
        f.family
    };
    let v4 = |a: Option<Ipv4Addr>, b: IpAddr| a.is_none_or(|a| IpAddr::V4(a) == b);
    family.is_none_or(|fam| fam == flow.family)
        && f.zone.is_none_or(|z| kernel_zone_id(flow) == z)
        && f.mark.is_none_or(|(v, m)| flow.mark.unwrap_or(0) & m == v & m)
        && f.status.is_none_or(|(v, m)| flow.status.0 & m == v & m)
        && v4(f.orig_src_v4, flow.orig.src)
        && v4(f.orig_dst_v4, flow.orig.dst)
}

/// The recordings of the fixture table dumped with kernel-side filters: the `capture`
/// arguments (as in scripts/capture-fixture), the recording, and the same filter as a value.
fn recorded_filters() -> Vec<(&'static str, &'static str, DumpFilter)> {
    let none = DumpFilter::default();
    let ip = |s: &str| Some(s.parse::<Ipv4Addr>().unwrap());
    vec![
        (
            "zone=0",
            include_str!("../fixtures/mixed.filter-zone-0.hex"),
            DumpFilter { zone: Some(0), ..none },
        ),
        (
            "zone=3",
            include_str!("../fixtures/mixed.filter-zone-3.hex"),
            DumpFilter { zone: Some(3), ..none },
        ),
        (
            "zone=7",
            include_str!("../fixtures/mixed.filter-zone-7.hex"),
            DumpFilter { zone: Some(7), ..none },
        ),
        (
            "mark=0x10/0xf0",
            include_str!("../fixtures/mixed.filter-mark.hex"),
            DumpFilter { mark: Some((0x10, 0xf0)), ..none },
        ),
        (
            "status=0x4/0x6",
            include_str!("../fixtures/mixed.filter-status.hex"),
            DumpFilter { status: Some((0x4, 0x6)), ..none },
        ),
        (
            "src=10.10.0.1",
            include_str!("../fixtures/mixed.filter-src.hex"),
            DumpFilter { orig_src_v4: ip("10.10.0.1"), ..none },
        ),
        (
            "dst=10.10.0.2",
            include_str!("../fixtures/mixed.filter-dst.hex"),
            DumpFilter { orig_dst_v4: ip("10.10.0.2"), ..none },
        ),
        (
            "family=ipv6",
            include_str!("../fixtures/mixed.filter-family-ipv6.hex"),
            DumpFilter { family: Some(Family::Ipv6), ..none },
        ),
    ]
}

/// Entry ids of flows: the kernel's `CTA_ID` names an entry across dumps of one table.
fn ids<'a>(flows: impl IntoIterator<Item = &'a Flow>) -> BTreeSet<u32> {
    flows.into_iter().map(|f| f.id.expect("dumped entries carry an id")).collect()
}

#[test]
fn kernel_model_predicts_the_recorded_filtered_dumps() {
    let table = mixed_flows();
    for (args, hex, filter) in recorded_filters() {
        let kept = ids(&flows_of(hex));
        let predicted = ids(table.iter().filter(|f| kernel_keeps(&filter, f)));
        assert!(!kept.is_empty() && kept.len() < table.len(), "{args} filters something");
        assert_eq!(kept, predicted, "what the kernel kept for {args}");
    }
}

#[test]
fn recorded_kernel_filters_keep_every_flow_the_selector_matches() {
    let table = mixed_flows();
    let recorded = recorded_filters();
    let selections: [(&[&str], &str); 8] = [
        (&["--zone", "0"], "zone=0"),
        (&["--zone", "3"], "zone=3"),
        (&["--zone", "7"], "zone=7"),
        (&["--mark", "0x10/0xf0"], "mark=0x10/0xf0"),
        (&["--status", "ASSURED,!SEEN_REPLY"], "status=0x4/0x6"),
        (&["-s", "10.10.0.1"], "src=10.10.0.1"),
        (&["-d", "10.10.0.2"], "dst=10.10.0.2"),
        (&["-f", "ipv6"], "family=ipv6"),
    ];
    let mut lost = Vec::new();
    for (flags, args) in selections {
        let (_, hex, filter) = recorded.iter().find(|r| r.0 == args).expect("a recording");
        let sel = selector(flags, &GuestMap::new()).unwrap();
        assert_eq!(sel.kernel_filter(), *filter, "{flags:?} pushes what {args} recorded");
        let kept = ids(&flows_of(hex));
        for flow in table.iter().filter(|f| sel.matches(f)) {
            if !kept.contains(&flow.id.unwrap()) {
                lost.push(format!("{flags:?}: the kernel dropped {}", rendered(flow, 0).line));
            }
        }
    }
    assert!(lost.is_empty(), "matching flows the kernel filter dropped:\n{}", lost.join("\n"));
}

#[test]
fn kernel_filter_keeps_every_flow_the_selector_matches() {
    let guests = guests();
    let mut flows = mixed_flows();
    let cases = corpus();
    flows.extend(cases.iter().map(|c| c.flow.clone()));
    let mut flag_sets: BTreeSet<&[&str]> = cases.iter().map(|c| c.flags).collect();
    flag_sets.extend([
        &["-s", "10.10.4.1", "-d", "10.10.4.2"][..],
        &["-s", "10.10.0.1", "-f", "ipv6"],
        &["--zone", "3"],
        &["--zone", "4"],
        &["--mark", "0x11", "--status", "SEEN_REPLY,!DYING", "-f", "ipv4"],
    ]);
    let mut checked = 0;
    let mut lost = Vec::new();
    for flags in flag_sets {
        let sel = selector(flags, &guests).unwrap();
        let filter = sel.kernel_filter();
        for flow in flows.iter().filter(|f| sel.matches(f)) {
            checked += 1;
            if !kernel_keeps(&filter, flow) {
                let line = rendered(flow, 0).line;
                lost.push(format!("{flags:?} → {filter:?} drops a matching flow: {line}"));
            }
        }
    }
    assert!(checked > 200, "selector/flow pairs checked: {checked}");
    assert!(lost.is_empty(), "kernel_filter is narrower than matches:\n{}", lost.join("\n"));
}

#[test]
fn bad_values_are_refused_with_one_line_reasons() {
    let guests = guests();
    for (flags, needle) in [
        (&["-s", "10.10.0.300"][..], "invalid IP address or CIDR '10.10.0.300'"),
        (&["-d", "10.0.0.0/33"], "'10.0.0.0/33'"),
        (&["--guest", "nobody"], "'nobody'"),
        (&["--dport", "70000"], "invalid port or range '70000'"),
        (&["--sport", "90-80"], "80"),
        (&["-p", "tcpp"], "unknown protocol 'tcpp'"),
        (&["--state", "ESTABLISH"], "unknown state 'ESTABLISH'"),
        (&["--state", ","], "empty state list"),
        (&["--status", "ASSURED,!ASSURED"], "both requires and excludes"),
        (&["--status", "FAST"], "unknown status 'FAST'"),
        (&["--mark", "0x1/0"], "zero mask"),
        (&["--mark", "forty-two"], "invalid mark 'forty-two'"),
        (&["-f", "ipx"], "invalid family 'ipx'"),
    ] {
        let e = selector(flags, &guests).map(|_| ()).unwrap_err();
        assert!(e.contains(needle), "{flags:?}: {e}");
        assert!(!e.contains('\n'), "{flags:?}: one line: {e}");
    }
    for bad in ["10 parsecs", "1h30", "-5s", ""] {
        let e = select::parse_duration(bad).unwrap_err().to_string();
        assert!(e.contains("invalid duration") && !e.contains('\n'), "{bad:?}: {e}");
    }
}

/// Issue 12.3: directional zones with the kernel's meaning, on the recorded flows: the zone
/// the kernel looks each direction up in (`nf_ct_zone_id`). A `-w 7` entry (`CTA_ZONE`) is in
/// zone 7 both ways; `--orig-zone 3` (`CTA_TUPLE_ZONE` in the original tuple) only in the
/// original direction, its reply in zone 0; `--reply-zone 4` the other way round.
#[test]
fn issue_12_directional_zones_follow_the_kernel() {
    let both = mixed_flow("tcp", "10.10.3.1"); // zone=7
    let orig = mixed_flow("tcp", "10.10.3.3"); // zone-orig=3
    let reply = mixed_flow("udp", "10.10.3.5"); // zone-reply=4
    let plain = mixed_flow("tcp", "10.10.0.1"); // no zone
    let sel = |orig_zone: Option<u16>, reply_zone: Option<u16>| Selector {
        orig_zone,
        reply_zone,
        ..Selector::default()
    };
    for (what, s, flows) in [
        ("--orig-zone 7", sel(Some(7), None), [true, false, false, false]),
        ("--reply-zone 7", sel(None, Some(7)), [true, false, false, false]),
        ("--orig-zone 3", sel(Some(3), None), [false, true, false, false]),
        ("--reply-zone 3", sel(None, Some(3)), [false, false, false, false]),
        ("--reply-zone 4", sel(None, Some(4)), [false, false, true, false]),
        ("--orig-zone 4", sel(Some(4), None), [false, false, false, false]),
        ("--orig-zone 0", sel(Some(0), None), [false, false, true, true]),
        ("--reply-zone 0", sel(None, Some(0)), [false, true, false, true]),
        ("--orig-zone 3 --reply-zone 0", sel(Some(3), Some(0)), [false, true, false, false]),
    ] {
        let got: Vec<bool> = [&both, &orig, &reply, &plain].map(|f| s.matches(f)).to_vec();
        assert_eq!(got, flows, "{what}: zone=7, zone-orig=3, zone-reply=4, none");
    }
    // The kernel's zone filter ignores the direction: a directional zone other than 0 narrows
    // the dump by its id, zone 0 cannot (it would drop the entries zoned the other way only).
    assert_eq!(sel(Some(3), None).kernel_filter().zone, Some(3));
    assert_eq!(sel(None, Some(4)).kernel_filter().zone, Some(4));
    assert_eq!(sel(Some(0), None).kernel_filter().zone, None);
    assert!(
        ctguard::evict::flush_filter(
            &Selector { src: vec![select::parse_cidr("10.10.3.3").unwrap()], ..sel(Some(3), None) },
            Some((6, 18)),
            false
        )
        .is_err(),
        "a directional zone is never a kernel flush"
    );
}

/// Issue 12.5: conntrack's spellings on input. TCP state 9 is LISTEN to conntrack-tools
/// (libct_proto_tcp.c) and SYN_SENT2 to the kernel; status names are conntrack's `-u` list,
/// UNSET naming no bit.
#[test]
fn issue_12_conntrack_state_and_status_spellings() {
    let syn_sent2 = vec![ProtoState::Tcp(TcpState::SynSent2)];
    assert_eq!(select::parse_states("LISTEN").unwrap(), syn_sent2);
    assert_eq!(select::parse_states("listen").unwrap(), syn_sent2);
    assert_eq!(select::parse_states("SYN_SENT2").unwrap(), syn_sent2);
    assert_eq!(
        select::parse_states("SHUTDOWN_RECD,COOKIE_ECHOED").unwrap(),
        vec![ProtoState::Sctp(SctpState::ShutdownRecd), ProtoState::Sctp(SctpState::CookieEchoed)]
    );
    assert!(select::parse_states("PARTOPEN,TIMEWAIT").is_ok(), "DCCP's names");
    for name in ["ASSURED", "SEEN_REPLY", "FIXED_TIMEOUT", "EXPECTED", "OFFLOAD", "HW_OFFLOAD"] {
        let (set, clear) = select::parse_status(name).unwrap();
        assert_eq!((set.count_ones(), clear), (1, 0), "{name}");
    }
    assert_eq!(select::parse_status("unset"), Ok((0, 0)));
    for bad in ["UNSET,ASSURED", "!UNSET"] {
        let e = select::parse_status(bad).unwrap_err().to_string();
        assert!(e.contains("UNSET names no bit"), "{bad}: {e}");
    }
}

/// Issue 12.5: `-p` resolves as conntrack's `findproto`: built-in names, then
/// `/etc/protocols` (here a recorded copy's lines), then numbers.
#[test]
fn issue_12_protocol_names_and_numbers() {
    use ctguard::protocols::ProtocolNames;
    let db = ProtocolNames::parse(
        "ip\t0\tIP\t\t# internet protocol, pseudo protocol number\n\
         igmp\t2\tIGMP\t\t# Internet Group Management\n\
         ipv6-icmp 58\tIPv6-ICMP\t# ICMP for IPv6\n\
         vrrp\t112\tVRRP\t\t# Virtual Router Redundancy Protocol\n",
    );
    assert_eq!(db.lookup("igmp"), Some(Proto(2)));
    assert_eq!(db.lookup("IGMP"), Some(Proto(2)));
    assert_eq!(db.lookup("vrrp"), Some(Proto(112)));
    assert_eq!(db.lookup("tcp"), None, "not in this copy");
    assert_eq!(select::parse_proto("TCP"), Ok(Proto::TCP), "the built-in eight, any case");
    assert_eq!(select::parse_proto("2"), Ok(Proto(2)));
    assert_eq!(select::parse_proto("255"), Ok(Proto(255)));
    for bad in ["256", "-1", "no-such-protocol"] {
        let e = select::parse_proto(bad).unwrap_err().to_string();
        assert!(e.contains("unknown protocol"), "{bad}: {e}");
    }
}

/// Issue 12.5: `--mask-src`/`--mask-dst` masks become prefixes; a mask whose ones are not
/// contiguous is refused (conntrack applies one bit by bit).
#[test]
fn issue_12_masks_are_contiguous_prefixes() {
    let mask = |s: &str| select::parse_mask(s).map(|(_, p)| p);
    assert_eq!(mask("255.255.255.0"), Ok(24));
    assert_eq!(mask("255.255.255.255"), Ok(32));
    assert_eq!(mask("0.0.0.0"), Ok(0));
    assert_eq!(mask("255.128.0.0"), Ok(9));
    assert_eq!(mask("ffff:ffff::"), Ok(32));
    assert_eq!(mask("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), Ok(128));
    for bad in ["255.0.255.0", "0.255.255.255", "255.255.255.1", "ffff::ffff", "24", "x"] {
        let e = select::parse_mask(bad).unwrap_err().to_string();
        assert!(e.starts_with("invalid mask"), "{bad}: {e}");
    }
}

/// Issue 12.5: addresses of both families where all must hold are refused with conntrack's
/// words; one flag naming both families (alternatives) is fine on its own.
#[test]
fn issue_12_mixed_families_are_refused() {
    let cidr = |s: &str| select::parse_cidr(s).unwrap();
    let refused = |sel: Selector| sel.check_families().unwrap_err().to_string();
    let e = refused(Selector {
        src: vec![cidr("2.2.2.2")],
        dst: vec![cidr("::1")],
        ..Default::default()
    });
    assert!(e.starts_with("mismatched address family"), "{e}");
    let e = refused(Selector {
        family: Some(Family::Ipv4),
        src: vec![cidr("::1")],
        ..Default::default()
    });
    assert!(e.contains("-f ipv4"), "{e}");
    let e = refused(Selector {
        reply_src: vec![cidr("10.0.0.0/8")],
        reply_dst: vec![cidr("fd00::/8")],
        ..Default::default()
    });
    assert!(e.contains("--reply-dst"), "{e}");
    let e = refused(Selector {
        src: vec![cidr("10.0.0.0/8"), cidr("fd00::/8")],
        dst: vec![cidr("192.0.2.1")],
        ..Default::default()
    });
    assert!(e.contains("-s fd00::/8"), "an alternative that can never hold: {e}");
    let either = Selector { src: vec![cidr("10.0.0.0/8"), cidr("fd00::/8")], ..Default::default() };
    assert_eq!(either.check_families(), Ok(()));
    let v6 =
        Selector { family: Some(Family::Ipv6), dst: vec![cidr("fd00::1")], ..Default::default() };
    assert_eq!(v6.check_families(), Ok(()));
}
