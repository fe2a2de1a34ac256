//! Issue 12.4: expectations decoded from a dump recorded from the real kernel
//! (`tests/fixtures/expect.*`, `scripts/capture-expect-fixture`) print as `conntrack -L expect`
//! printed them.

use ctguard::ctnetlink::decode_expectation;
use ctguard::expect::Expectation;
use ctguard::output::expect::{write_json, write_line};

use crate::fixtures::unhex;

const EXPECT_HEX: &str = include_str!("../fixtures/expect.hex");
const EXPECT_CONNTRACK_L: &str = include_str!("../fixtures/expect.conntrack-L.txt");

fn recorded() -> Vec<Expectation> {
    let all: Vec<Expectation> = EXPECT_HEX
        .lines()
        .map(|l| decode_expectation(&unhex(l)).expect("recorded message decodes"))
        .collect();
    assert_eq!(all.len(), 4, "the fixture holds four expectations");
    all
}

/// The line without its first field (the timeout, which moved on between the two recordings).
fn without_timeout(line: &str) -> String {
    let (timeout, rest) = line.split_once(' ').expect("a line with fields");
    assert!(timeout.parse::<u32>().is_ok(), "{line:?} starts with a timeout");
    rest.to_string()
}

#[test]
fn issue_12_recorded_expectations_print_as_conntrack_listed_them() {
    let mut ours: Vec<String> = recorded()
        .iter()
        .map(|e| {
            let mut v = Vec::new();
            write_line(&mut v, e).expect("write");
            let line = String::from_utf8(v).expect("utf8");
            without_timeout(line.strip_suffix('\n').expect("one line"))
        })
        .collect();
    ours.sort();
    let mut theirs: Vec<String> = EXPECT_CONNTRACK_L.lines().map(without_timeout).collect();
    theirs.sort();
    assert_eq!(ours, theirs);
}

#[test]
fn issue_12_recorded_expectations_decode_every_attribute_the_kernel_sent() {
    let all = recorded();
    for e in &all {
        assert!(e.id.is_some(), "CTA_EXPECT_ID: {e:?}");
        assert!(e.timeout.is_some_and(|t| t <= 300), "CTA_EXPECT_TIMEOUT: {e:?}");
        assert_eq!(e.helper.map(|h| h.as_str().into_owned()).as_deref(), Some("ftp"));
        assert_eq!((e.flags, e.class), (Some(0), Some(0)));
        assert_eq!(e.zone, None, "6.18 dumps no CTA_EXPECT_ZONE, not even for zone 5");
        let tcp = ctguard::Proto::TCP;
        assert_eq!((e.proto, e.mask_proto, e.master_proto), (tcp, tcp, tcp));
    }
    let v6 = all.iter().filter(|e| e.family == ctguard::Family::Ipv6).count();
    assert_eq!(v6, 1, "the EPSV expectation is IPv6");
}

#[test]
fn issue_12_a_recorded_expectation_as_json() {
    let e = recorded()
        .into_iter()
        .find(|e| e.tuple.dport() == Some(50023))
        .expect("the IPv6 expectation");
    let mut v = Vec::new();
    write_json(&mut v, &e).expect("write");
    let j: serde_json::Value = serde_json::from_slice(&v).expect("json");
    assert_eq!(j["family"], "ipv6");
    assert_eq!(j["tuple"]["dst"], "::1");
    assert_eq!(j["tuple"]["dport"], 50023);
    assert_eq!(j["mask"]["src"], "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    assert_eq!(j["master"]["sport"], 40023);
    assert_eq!(j["master_proto"], "tcp");
    assert_eq!(j["id"], e.id.expect("id"));
}

/// Every prefix of every recorded message decodes or fails; none panics.
#[test]
fn issue_12_truncated_recorded_expectations_are_errors_not_panics() {
    for line in EXPECT_HEX.lines() {
        let bytes = unhex(line);
        for len in 0..bytes.len() {
            let _ = decode_expectation(&bytes[..len]);
        }
        assert!(decode_expectation(&bytes[..3]).is_err());
    }
}

/// The example in docs/json-schema.md is what ctguard writes for that expectation.
#[test]
fn issue_12_the_documented_expectation_example_is_what_ctguard_writes() {
    let doc = include_str!("../../docs/json-schema.md");
    let example = doc
        .split("Example (an FTP passive-mode data connection):\n\n```jsonl\n")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .expect("the expectation example");
    let lo: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
    let ones: std::net::IpAddr = "255.255.255.255".parse().expect("ip");
    let tuple = |src, dst, sport, dport| ctguard::Tuple {
        src,
        dst,
        l4: ctguard::L4::Ports { src: sport, dst: dport },
        zone: None,
    };
    let tcp = ctguard::Proto::TCP;
    let e = Expectation {
        proto: tcp,
        tuple: tuple(lo, lo, 0, 50003),
        mask: tuple(ones, ones, 0, 65535),
        mask_proto: tcp,
        master: tuple(lo, lo, 40023, 21),
        master_proto: tcp,
        timeout: Some(299),
        id: Some(1582629177),
        helper: Some(ctguard::flow::HelperName::new(b"ftp")),
        flags: Some(0),
        class: Some(0),
        ..Expectation::default()
    };
    let mut v = Vec::new();
    write_json(&mut v, &e).expect("write");
    assert_eq!(String::from_utf8(v).expect("utf8"), format!("{example}\n"));
}
