//! Issue 13, `protect`: a selector's `except` networks (`--except CIDR`) leave out every flow
//! with any of its four addresses in one of them, the kernel filter never carries them, and no
//! kernel flush stands in for the per-flow deletes of such a selection.

use std::net::IpAddr;

use ctguard::evict::{self, Ask, NoFlush, Strategy};
use ctguard::flow::{Family, Flow, L4, Proto, ProtoState, Status, TcpState, Tuple};
use ctguard::select::{self, GuestFilter, Selector};

fn addr(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// An ESTABLISHED TCP flow `src:40000 → dst:443`, answered by `reply_src` (DNAT when it is not
/// `dst`) towards `reply_dst` (SNAT when it is not `src`).
fn flow(src: &str, dst: &str, reply_src: &str, reply_dst: &str) -> Flow {
    let orig = Tuple {
        src: addr(src),
        dst: addr(dst),
        l4: L4::Ports { src: 40000, dst: 443 },
        zone: None,
    };
    let reply = Tuple {
        src: addr(reply_src),
        dst: addr(reply_dst),
        l4: L4::Ports { src: 443, dst: 40000 },
        zone: None,
    };
    Flow {
        family: Family::of(orig.src),
        proto: Proto::TCP,
        orig,
        reply,
        state: Some(ProtoState::Tcp(TcpState::Established)),
        status: Status(Status::CONFIRMED),
        timeout: Some(3000),
        id: Some(7),
        ..Flow::default()
    }
}

fn guest(cidr: &str) -> Selector {
    Selector {
        guests: Some(GuestFilter {
            cidrs: vec![select::parse_cidr(cidr).expect("cidr")],
            ..GuestFilter::default()
        }),
        ..Selector::default()
    }
}

fn except(sel: Selector, nets: &[&str]) -> Selector {
    let except = nets.iter().map(|n| select::parse_cidr(n).expect("cidr")).collect();
    Selector { except, ..sel }
}

#[test]
fn issue_13_except_leaves_out_a_flow_with_any_of_its_four_addresses_protected() {
    let sel = except(guest("172.16.3.0/24"), &["172.16.0.1/32", "10.99.0.0/16"]);
    let cases = [
        ("not protected", flow("172.16.3.5", "8.8.8.8", "8.8.8.8", "172.16.3.5"), true),
        ("orig src", flow("172.16.0.1", "172.16.3.5", "172.16.3.5", "172.16.0.1"), false),
        ("orig dst", flow("172.16.3.5", "10.99.1.1", "10.99.1.1", "172.16.3.5"), false),
        // DNAT: the protected address shows only as the reply source.
        ("reply src", flow("172.16.3.5", "203.0.113.9", "10.99.0.7", "172.16.3.5"), false),
        // SNAT: only as the reply destination.
        ("reply dst", flow("172.16.3.5", "8.8.8.8", "8.8.8.8", "172.16.0.1"), false),
        ("the next address", flow("172.16.3.5", "172.16.0.2", "172.16.0.2", "172.16.3.5"), true),
    ];
    for (what, f, want) in cases {
        assert_eq!(sel.matches(&f), want, "{what}: {f:?}");
    }
    // An IPv6 exception never matches an IPv4 flow, and protects IPv6 flows alike.
    let v6 = except(Selector::default(), &["fd00::/64"]);
    assert!(v6.matches(&flow("172.16.3.5", "8.8.8.8", "8.8.8.8", "172.16.3.5")));
    assert!(!v6.matches(&flow("fd00:2::5", "fd00::1", "fd00::1", "fd00:2::5")));
}

#[test]
fn issue_13_except_alone_is_a_criterion_and_never_a_kernel_filter() {
    let alone = except(Selector::default(), &["172.16.0.1"]);
    assert!(!alone.is_empty(), "an exception alone selects less than everything");
    assert!(Selector::default().is_empty());
    let host = Selector {
        src: vec![select::parse_cidr("172.16.3.5").expect("cidr")],
        ..Selector::default()
    };
    let protected = except(host.clone(), &["172.16.0.1"]);
    assert_eq!(protected.kernel_filter(), host.kernel_filter(), "the kernel has no exclusion");
}

#[test]
fn issue_13_except_refuses_the_kernel_flush_so_the_run_streams() {
    let kernel = Some((6, 18));
    let host = Selector {
        src: vec![select::parse_cidr("172.16.3.5").expect("cidr")],
        ..Selector::default()
    };
    assert!(evict::flush_filter(&host, kernel, false).is_ok(), "flushable without --except");
    let protected = except(host, &["172.16.0.1"]);
    let refused = evict::flush_filter(&protected, kernel, false);
    assert_eq!(refused, Err(NoFlush::Except));
    let why = NoFlush::Except.to_string();
    assert!(why.contains("--except") && why.contains("kernel"), "{why}");
    let yes = Ask { yes: true, kernel, ..Ask::default() };
    assert_eq!(Strategy::choose(&protected, &yes), Strategy::Streamed);
}
