//! The guard's caps (issue 13) against the real nftables: rules only in `inet ctguard`,
//! idempotent, adopted after a restart, and refusing new connections over the limit without
//! the refused ones ever taking a conntrack slot.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ctguard::guard::caps::{Cap, Caps};
use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::netns::Netns;

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn cap(guest: &str, n: &str, limit: u32) -> Cap {
    Cap { guest: guest.into(), net: net(n), limit }
}

/// `nft -j list ruleset` in the namespace, split into (everything not in `inet ctguard`,
/// serialised for a byte comparison; the rules of `inet ctguard`).
fn ruleset(ns: &Netns) -> (String, Vec<Value>) {
    let out = ns.exec("nft", &["-j", "list", "ruleset"]).ok();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let mut others = Vec::new();
    let mut ours = Vec::new();
    for object in doc["nftables"].as_array().unwrap() {
        let (kind, body) = object.as_object().unwrap().iter().next().unwrap();
        if kind == "metainfo" {
            continue;
        }
        let table = body.get("table").or_else(|| (kind == "table").then(|| &body["name"]));
        let mine = body["family"] == "inet" && table.and_then(Value::as_str) == Some("ctguard");
        match (mine, kind.as_str()) {
            (true, "rule") => ours.push(body.clone()),
            (true, _) => {}
            (false, _) => others.push(object.clone()),
        }
    }
    (serde_json::to_string(&others).unwrap(), ours)
}

fn limits(rules: &[Value]) -> Vec<u64> {
    rules
        .iter()
        .map(|r| {
            r["expr"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|e| e["ct count"]["val"].as_u64())
                .unwrap()
        })
        .collect()
}

#[test]
fn issue_13_caps_only_in_inet_ctguard() {
    let ns = Netns::new();
    // Someone else's tables, one of them also called ctguard in another family.
    let theirs = ns.write_file(
        "theirs.nft",
        "table inet other {\n chain c {\n  \
         type filter hook prerouting priority -150; policy accept;\n  \
         ip saddr 10.0.0.0/24 ct state new counter accept comment \"ctguard:web%201\"\n }\n}\n\
         table ip ctguard {\n chain caps {\n  type filter hook input priority 0;\n  \
         ip saddr 10.0.0.5 drop\n }\n}\n",
    );
    ns.exec("nft", &["-f", &theirs]).ok();
    let (before, ours) = ruleset(&ns);
    assert!(before.contains("\"other\"") && ours.is_empty(), "{before}");

    let web = [net("10.0.0.0/24"), net("2001:db8:1::/64")];
    ns.inside(|| {
        let mut caps = Caps::open().unwrap();
        assert_eq!(caps.adopted(), &[] as &[Cap]);
        caps.install("web 1", &web, 20).unwrap();
        // Idempotent: twice is still one rule per network.
        caps.install("web 1", &web, 20).unwrap();
        assert_eq!(
            caps.list().unwrap(),
            vec![cap("web 1", "10.0.0.0/24", 20), cap("web 1", "2001:db8:1::/64", 20)]
        );
    });
    let (after, ours) = ruleset(&ns);
    assert_eq!(after, before, "another table changed");
    assert_eq!(limits(&ours), [20, 20], "{ours:?}");

    ns.inside(|| {
        // A restarted guard adopts what it finds.
        let mut caps = Caps::open().unwrap();
        assert_eq!(
            caps.adopted(),
            &[cap("web 1", "10.0.0.0/24", 20), cap("web 1", "2001:db8:1::/64", 20)]
        );
        caps.install("web 1", &web, 30).unwrap();
        caps.install("db", &[net("10.0.1.7/32")], 5).unwrap();
        caps.remove("web 1").unwrap();
        caps.remove("web 1").unwrap();
        caps.remove("never capped").unwrap();
        assert_eq!(caps.list().unwrap(), vec![cap("db", "10.0.1.7/32", 5)]);
    });
    let (after, ours) = ruleset(&ns);
    assert_eq!(after, before, "another table changed");
    assert_eq!(limits(&ours), [5], "{ours:?}");

    ns.inside(|| {
        let mut caps = Caps::open().unwrap();
        caps.remove("db").unwrap();
        assert_eq!(caps.list().unwrap(), vec![]);
    });
    let (after, ours) = ruleset(&ns);
    assert_eq!(after, before, "another table changed");
    assert!(ours.is_empty(), "{ours:?}");
}

/// Runs `ip args` inside the namespace, which must succeed.
fn ip(ns: &Netns, args: &[&str]) {
    ns.exec("ip", args).ok();
}

/// Connection attempts from inside `client`, each given `timeout`: the ones that connected,
/// kept open so they stay counted.
fn connect(client: &Netns, to: SocketAddr, attempts: usize, timeout: Duration) -> Vec<TcpStream> {
    client.inside(|| {
        (0..attempts).filter_map(|_| TcpStream::connect_timeout(&to, timeout).ok()).collect()
    })
}

/// The router's conntrack lines for TCP to `port`.
fn tracked(router: &Netns, port: u16) -> Vec<String> {
    router.conntrack_list(&["-p", "tcp", "--dport", &port.to_string()])
}

/// The addresses of one family for [`refuses_over_limit`]: client, router's two sides, server,
/// the prefix length, and the sysctl that makes the router forward.
struct Plan {
    client: &'static str,
    router_c: &'static str,
    router_s: &'static str,
    server: &'static str,
    len: u8,
    forwarding: &'static str,
}

const V4: Plan = Plan {
    client: "10.213.1.2",
    router_c: "10.213.1.1",
    router_s: "10.213.2.1",
    server: "10.213.2.2",
    len: 24,
    forwarding: "net.ipv4.ip_forward",
};

const V6: Plan = Plan {
    client: "fd13:1::2",
    router_c: "fd13:1::1",
    router_s: "fd13:2::1",
    server: "fd13:2::2",
    len: 64,
    forwarding: "net.ipv6.conf.all.forwarding",
};

#[test]
fn issue_13_cap_refuses_new_connections_over_limit() {
    refuses_over_limit(&V4);
}

#[test]
fn issue_13_cap_refuses_new_ipv6_connections_over_limit() {
    refuses_over_limit(&V6);
}

/// The cap sits where a hypervisor's conntrack entries are made for its guests: on the router
/// between a client namespace (the guest) and a server namespace, on forwarded traffic.
/// Capping there is what protects the router's table; the server's own table is another one.
fn refuses_over_limit(plan: &Plan) {
    const LIMIT: usize = 4;
    const EXTRA: usize = 3;
    const PORT: u16 = 5801;
    let (client, router, server) = (Netns::new(), Netns::new(), Netns::new());
    if plan.len == 64 {
        // IPv6 addresses, the link-local ones included, usable at once: no duplicate address
        // detection on the links made below (the router's neighbour discovery waits for it).
        for ns in [&client, &router, &server] {
            ns.sysctl_write("net.ipv6.conf.default.accept_dad", "0");
        }
    }
    // Each link is made from inside a namespace of the test: nothing in the machine's own.
    ip(
        &client,
        &["link", "add", "c0", "type", "veth", "peer", "name", "r0", "netns", router.name()],
    );
    ip(
        &server,
        &["link", "add", "s0", "type", "veth", "peer", "name", "r1", "netns", router.name()],
    );
    for (ns, dev, addr) in [
        (&client, "c0", plan.client),
        (&router, "r0", plan.router_c),
        (&router, "r1", plan.router_s),
        (&server, "s0", plan.server),
    ] {
        let addr = format!("{addr}/{}", plan.len);
        ip(ns, &["addr", "add", &addr, "dev", dev]);
        ip(ns, &["link", "set", dev, "up"]);
        ip(ns, &["link", "set", "lo", "up"]);
    }
    ip(&client, &["route", "add", "default", "via", plan.router_c]);
    ip(&server, &["route", "add", "default", "via", plan.router_s]);
    router.sysctl_write(plan.forwarding, "1");

    // The server's kernel completes the handshakes into the listen backlog; no accept needed.
    let to = SocketAddr::new(plan.server.parse().unwrap(), PORT);
    let listener = server.inside(|| TcpListener::bind(to).unwrap());
    // The path works before any cap.
    assert_eq!(connect(&client, to, 1, Duration::from_secs(2)).len(), 1, "no path to the server");

    let host = IpNetwork::from(plan.client.parse::<std::net::IpAddr>().unwrap());
    router.inside(|| {
        let mut caps = Caps::open().unwrap();
        caps.install("guest", &[host], LIMIT as u32).unwrap();
    });
    let start = Instant::now();
    let held = connect(&client, to, LIMIT + EXTRA, Duration::from_millis(400));
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
    assert_eq!(held.len(), LIMIT, "exactly the cap's limit connects");
    // The refused SYNs were dropped before confirmation: no entry of theirs, not even one
    // in SYN_SENT; the router holds exactly the LIMIT established ones (plus the probe's
    // closed flow from before the cap, if it is still there in TIME_WAIT or CLOSE).
    let lines = tracked(&router, PORT);
    let established = lines.iter().filter(|l| l.contains("ESTABLISHED")).count();
    let syn = lines.iter().filter(|l| l.contains("SYN_")).count();
    assert_eq!((established, syn), (LIMIT, 0), "{lines:#?}");

    router.inside(|| Caps::open().unwrap().remove("guest").unwrap());
    let more = connect(&client, to, EXTRA, Duration::from_secs(2));
    assert_eq!(more.len(), EXTRA, "after the cap is removed new connections work again");
    drop((held, more, listener));
}
