//! Test tables: deterministic flow specs, written as `conntrack -R` lines, as the JSON Lines
//! `ctguard load` reads (docs/json-schema.md), or as `ctguard create` arguments.
//!
//! The mixed table has every TCP state, UDP with and without a reply, ICMP, ICMPv6, SCTP,
//! marks, zones, eight IPv4 and four IPv6 guest subnets, DNAT and SNAT flows whose reply is
//! not the inverse of the original, and one runaway guest per family. Timeouts are long
//! (3000–9000 s) and stay clear of 4000 s by a margin of minutes, so nothing expires and `--timeout-below 4000`
//! cannot flip while a test runs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fastrand::Rng;

use crate::netns::Netns;
use crate::oracle::Guests;

/// A test address from its text form.
pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// The runaway IPv4 guest: holds far more flows than anyone else.
pub const RUNAWAY_V4: &str = "172.16.3.5";
/// The runaway IPv6 guest.
pub const RUNAWAY_V6: &str = "fd00:2::5";

/// The guest file of the mixed table; `runaway` overlaps `web` and wins by longest prefix.
pub fn guests() -> Guests {
    let nets = |v: &[&str]| v.iter().map(|s| s.parse().expect("test CIDR")).collect();
    Guests(vec![
        ("runaway", nets(&["172.16.3.5/32", "fd00:2::5/128"])),
        ("web", nets(&["172.16.3.0/24", "fd00:3::/64"])),
        ("db", nets(&["172.16.5.0/24", "172.16.6.0/24"])),
        ("lab6", nets(&["fd00:1::/64"])),
    ])
}

/// Layer 4 of one direction.
#[derive(Debug, Clone, Copy)]
pub enum L4 {
    Ports(u16, u16),
    /// ICMP type, code, id.
    Icmp(u8, u8, u16),
}

/// One flow to create.
#[derive(Debug, Clone)]
pub struct Spec {
    pub proto: &'static str,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
    /// Reply source, destination and ports, when they differ from the inverse (NAT).
    pub reply: Option<(IpAddr, IpAddr, u16, u16)>,
    pub state: Option<&'static str>,
    /// Status bits to set: `SEEN_REPLY`, `ASSURED`.
    pub status: &'static [&'static str],
    pub timeout: u32,
    pub mark: u32,
    pub zone: u16,
}

fn v6(a: &IpAddr) -> bool {
    a.is_ipv6()
}

impl Spec {
    /// The reply tuple the kernel will hold.
    fn reply_tuple(&self) -> (IpAddr, IpAddr, L4) {
        match (self.reply, self.l4) {
            (Some((s, d, sp, dp)), _) => (s, d, L4::Ports(sp, dp)),
            (None, L4::Ports(sp, dp)) => (self.dst, self.src, L4::Ports(dp, sp)),
            (None, L4::Icmp(t, c, id)) => {
                let rt = match t {
                    8 => 0,
                    128 => 129,
                    t => t,
                };
                (self.dst, self.src, L4::Icmp(rt, c, id))
            }
        }
    }

    /// One `conntrack -I` command line (for `conntrack -R`).
    pub fn conntrack_line(&self) -> String {
        let mut s = format!("-I -p {} -s {} -d {}", self.proto, self.src, self.dst);
        match self.l4 {
            L4::Ports(sp, dp) => s += &format!(" --sport {sp} --dport {dp}"),
            L4::Icmp(t, c, id) if self.proto == "icmpv6" => {
                s += &format!(" --icmpv6-type {t} --icmpv6-code {c} --icmpv6-id {id}")
            }
            L4::Icmp(t, c, id) => s += &format!(" --icmp-type {t} --icmp-code {c} --icmp-id {id}"),
        }
        if let Some((rs, rd, rsp, rdp)) = self.reply {
            s += &format!(" -r {rs} -q {rd} --reply-port-src {rsp} --reply-port-dst {rdp}");
        }
        if let Some(st) = self.state {
            s += &format!(" --state {st}");
        }
        if self.proto == "sctp" {
            // conntrack -I insists on verification tags for SCTP.
            s += " --orig-vtag 1111 --reply-vtag 2222";
        }
        s += &format!(" -t {}", self.timeout);
        // conntrack 1.4.7 stores a `-u` given after `-m` as the mark: status comes first.
        if !self.status.is_empty() {
            s += &format!(" -u {}", self.status.join(","));
        }
        s += &format!(" -m {}", self.mark);
        if self.zone != 0 {
            s += &format!(" -w {}", self.zone);
        }
        s
    }

    /// One JSON line as `ctguard load` reads it.
    pub fn json_line(&self) -> String {
        let tuple = |src: IpAddr, dst: IpAddr, l4: L4| {
            let mut t = serde_json::json!({ "src": src.to_string(), "dst": dst.to_string() });
            match l4 {
                L4::Ports(sp, dp) => {
                    t["sport"] = sp.into();
                    t["dport"] = dp.into();
                }
                L4::Icmp(ty, code, id) => {
                    t["icmp_type"] = ty.into();
                    t["icmp_code"] = code.into();
                    t["icmp_id"] = id.into();
                }
            }
            t
        };
        let (rs, rd, rl4) = self.reply_tuple();
        let mut o = serde_json::json!({
            "family": if v6(&self.src) { "ipv6" } else { "ipv4" },
            "proto": self.proto,
            "orig": tuple(self.src, self.dst, self.l4),
            "reply": tuple(rs, rd, rl4),
            "status": self.status,
            "timeout": self.timeout,
            "mark": self.mark,
        });
        if let Some(st) = self.state {
            o["state"] = st.into();
        }
        if self.zone != 0 {
            o["zone"] = self.zone.into();
        }
        o.to_string()
    }

    /// Arguments of `ctguard create`.
    pub fn create_args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["-p", self.proto, "-s"].map(String::from).to_vec();
        a.push(self.src.to_string());
        a.push("-d".into());
        a.push(self.dst.to_string());
        match self.l4 {
            L4::Ports(sp, dp) => {
                a.extend(["--sport".into(), sp.to_string(), "--dport".into(), dp.to_string()])
            }
            L4::Icmp(t, c, id) => a.extend([
                "--icmp-type".into(),
                t.to_string(),
                "--icmp-code".into(),
                c.to_string(),
                "--icmp-id".into(),
                id.to_string(),
            ]),
        }
        if let Some((rs, rd, rsp, rdp)) = self.reply {
            a.extend([
                "--reply-src".into(),
                rs.to_string(),
                "--reply-dst".into(),
                rd.to_string(),
                "--reply-sport".into(),
                rsp.to_string(),
                "--reply-dport".into(),
                rdp.to_string(),
            ]);
        }
        if let Some(st) = self.state {
            a.extend(["--state".into(), st.into()]);
        }
        a.extend([
            "--timeout".into(),
            self.timeout.to_string(),
            "--mark".into(),
            self.mark.to_string(),
        ]);
        if !self.status.is_empty() {
            a.extend(["--status".into(), self.status.join(",")]);
        }
        if self.zone != 0 {
            a.extend(["--zone".into(), self.zone.to_string()]);
        }
        a
    }
}

/// One of `v`, drawn from `rng`.
fn pick<T: Copy>(rng: &mut Rng, v: &[T]) -> T {
    v[rng.usize(..v.len())]
}

const TCP_STATES: [&str; 10] = [
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
];
/// The HEARTBEAT_* states are left out: `conntrack -I` 1.4.7 segfaults on them.
const SCTP_STATES: [&str; 6] =
    ["CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT", "SHUTDOWN_RECD"];
const STATUSES: [&[&str]; 4] = [&[], &["SEEN_REPLY"], &["ASSURED"], &["SEEN_REPLY", "ASSURED"]];
/// 0x10 and 0x11 match `0x10/0xff0`; 0x110 does not.
const MARKS: [u32; 10] = [0, 0, 0, 0, 0, 0, 0x10, 0x11, 0x110, 42];
const DPORTS: [u16; 8] = [443, 443, 443, 80, 53, 22, 8080, 5432];

fn guest_host(rng: &mut Rng, ipv6: bool) -> IpAddr {
    let host = rng.u8(2..41);
    if ipv6 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, rng.u16(1..5), 0, 0, 0, 0, 0, host.into()))
    } else {
        IpAddr::V4(Ipv4Addr::new(172, 16, rng.u8(1..9), host))
    }
}

/// An address outside every guest subnet, unique per `i` (i < 262,144).
fn external(i: usize, ipv6: bool, net: u8) -> IpAddr {
    let q = (i / 4) as u32;
    if ipv6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            net.into(),
            (i % 4) as u16,
            0,
            0,
            (q >> 16) as u16,
            q as u16,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(net, 1 + (i % 4) as u8, (q >> 8) as u8, q as u8))
    }
}

/// The mixed table: `n` flows (n ≤ 262,144), a quarter of them IPv6.
pub fn mixed_table(n: usize) -> Vec<Spec> {
    // A fixed seed: every run builds the same table.
    let mut rng = Rng::with_seed(0x2c7_9a4d);
    let runaway4: IpAddr = RUNAWAY_V4.parse().expect("runaway v4");
    let runaway6: IpAddr = RUNAWAY_V6.parse().expect("runaway v6");
    (0..n)
        .map(|i| {
            let ipv6 = i % 4 == 3;
            let src = if rng.u8(..100) < 15 {
                if ipv6 { runaway6 } else { runaway4 }
            } else {
                guest_host(&mut rng, ipv6)
            };
            let dst = external(i, ipv6, 10);
            let sport = rng.u16(1000..65000);
            let dport = pick(&mut rng, &DPORTS);
            let kind = rng.u8(..100);
            let mut timeout = rng.u32(3000..9000);
            // Nothing within 1400 s above 4000: a loaded CI machine can take minutes.
            if (3600..5400).contains(&timeout) {
                timeout += 1800;
            }
            let mut spec = Spec {
                proto: "tcp",
                src,
                dst,
                l4: L4::Ports(sport, dport),
                reply: None,
                state: None,
                status: pick(&mut rng, &STATUSES),
                timeout,
                mark: pick(&mut rng, &MARKS),
                zone: match rng.u8(..20) {
                    0 => 7,
                    1 => 300,
                    _ => 0,
                },
            };
            match kind {
                0..62 => {
                    spec.state =
                        Some(if rng.bool() { "ESTABLISHED" } else { pick(&mut rng, &TCP_STATES) });
                }
                62..84 => spec.proto = "udp",
                84..92 => {
                    spec.proto = if ipv6 { "icmpv6" } else { "icmp" };
                    spec.l4 = L4::Icmp(if ipv6 { 128 } else { 8 }, 0, i as u16);
                    spec.status = if rng.bool() { &[] } else { &["SEEN_REPLY"] };
                }
                _ => {
                    spec.proto = "sctp";
                    spec.state = Some(pick(&mut rng, &SCTP_STATES));
                }
            }
            // NAT, TCP and UDP only: reply != inverse of the original.
            if matches!(spec.proto, "tcp" | "udp") {
                match rng.u8(..100) {
                    0..4 => {
                        // DNAT: an outside client hits a VIP; the reply comes from the guest.
                        let client = external(i, ipv6, 100);
                        let vip: IpAddr =
                            if ipv6 { "2001:db8:ff::10".parse() } else { "203.0.113.10".parse() }
                                .expect("vip");
                        spec.reply = Some((spec.src, client, 8080, sport));
                        spec.src = client;
                        spec.dst = vip;
                    }
                    4..8 => {
                        // SNAT: the guest leaves through the public address.
                        let public: IpAddr =
                            if ipv6 { "2001:db8:ff::1".parse() } else { "192.168.100.1".parse() }
                                .expect("public");
                        spec.reply = Some((dst, public, dport, 20000 + (i % 40000) as u16));
                    }
                    _ => {}
                }
            }
            spec
        })
        .collect()
}

/// Creates `specs` with `conntrack -R`; panics unless every one was created.
#[track_caller]
pub fn with_conntrack(ns: &Netns, specs: &[Spec], file: &str) {
    let text: String = specs.iter().map(|s| s.conntrack_line() + "\n").collect();
    let path = ns.write_file(file, &text);
    let before = ns.conntrack_count();
    ns.conntrack(&["-R", &path]).ok();
    let after = ns.conntrack_count();
    assert_eq!(after - before, specs.len() as u64, "conntrack -R {path} did not create every flow");
}

/// Creates `specs` with `ctguard load` from a JSON Lines file; panics unless all were created.
#[track_caller]
pub fn with_ctguard_load(ns: &Netns, specs: &[Spec], file: &str) {
    let text: String = specs.iter().map(|s| s.json_line() + "\n").collect();
    let path = ns.write_file(file, &text);
    let before = ns.conntrack_count();
    ns.ctguard(&["load", &path]).ok();
    let after = ns.conntrack_count();
    assert_eq!(after - before, specs.len() as u64, "ctguard load {path} did not create every flow");
}

/// Creates one flow with `ctguard create`.
pub fn with_ctguard_create(ns: &Netns, spec: &Spec) -> Result<(), String> {
    let args = spec.create_args();
    let mut all = vec!["create"];
    all.extend(args.iter().map(String::as_str));
    ns.ctguard(&all).check_ok().map(|_| ())
}
