//! The simulated hypervisor, built with rtnetlink: a host namespace with a bridge, guests on
//! veths, an upstream namespace behind the host, and the host's nftables ruleset.
//!
//! ```text
//!  guest ns (eth0) ──veth── v-ROLE ┐
//!  guest ns (eth0) ──veth── v-ROLE ├─ br-lab (172.16.N.1/24, fd00:N::1/64)   host ns
//!  guest ns (eth0) ──veth── v-ROLE ┘      uplink (192.0.2.1/24, 2001:db8::1/64)
//!                                            │ veth
//!                                   upstream ns eth0 (192.0.2.2/24, 2001:db8::2/64)
//! ```
//!
//! Guests reach the upstream server through the host, which routes between the bridge and the
//! uplink. The host's nftables `forward` chain matches `ct state`, which makes conntrack track
//! every guest flow in the host namespace: the table the incident fills. Every namespace is
//! named `ctg-lab-<pid>-<role>`; every address lives inside them; dropping the [`Lab`] removes
//! them all, also when a test panics.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::place::{self, Place};

/// One guest of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestSpec {
    /// The role in the namespace name, and the host-side veth `v-<role>`.
    pub role: &'static str,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    /// The guest that opens connections without end.
    pub runaway: bool,
}

impl GuestSpec {
    /// The host-side veth, `v-<role>`: the guest's port on the bridge, and the name ctguard
    /// finds the guest by when no guest file names it.
    pub fn host_if(&self) -> String {
        format!("v-{}", self.role)
    }
}

/// The runaway guest of the incident.
pub const RUNAWAY: GuestSpec = GuestSpec {
    role: "runaway",
    v4: Ipv4Addr::new(172, 16, 3, 5),
    v6: Ipv6Addr::new(0xfd00, 3, 0, 0, 0, 0, 0, 5),
    runaway: true,
};

/// The guests: the runaway, a healthy neighbour on its /24, and healthy guests on two other
/// subnets of the incident's 172.16.0.0/16.
pub const GUESTS: [GuestSpec; 4] = [
    RUNAWAY,
    GuestSpec {
        role: "web",
        v4: Ipv4Addr::new(172, 16, 3, 6),
        v6: Ipv6Addr::new(0xfd00, 3, 0, 0, 0, 0, 0, 6),
        runaway: false,
    },
    GuestSpec {
        role: "app",
        v4: Ipv4Addr::new(172, 16, 2, 10),
        v6: Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 0x10),
        runaway: false,
    },
    GuestSpec {
        role: "db",
        v4: Ipv4Addr::new(172, 16, 5, 20),
        v6: Ipv6Addr::new(0xfd00, 5, 0, 0, 0, 0, 0, 0x20),
        runaway: false,
    },
];

/// The bridge in the host namespace.
pub const BRIDGE: &str = "br-lab";
/// The host's link to the upstream namespace.
pub const UPLINK: &str = "uplink";
/// The host's address on the uplink.
pub const HOST_UPLINK_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const HOST_UPLINK_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// The upstream server's addresses (documentation ranges: they exist only inside the lab).
pub const UPSTREAM_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const UPSTREAM_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// The upstream server's TCP port: it echoes, and keeps each connection open.
pub const UPSTREAM_PORT: u16 = 8080;
/// The upstream sink the runaway guest connects to: it accepts and forgets (see
/// [`leak_ruleset`]).
pub const SINK_PORT: u16 = 8081;

/// The gateway on the bridge for a guest: `.1` of its /24, `::1` of its /64.
pub fn gateways(guest: &GuestSpec) -> (Ipv4Addr, Ipv6Addr) {
    let [a, b, c, _] = guest.v4.octets();
    let s = guest.v6.segments();
    (Ipv4Addr::new(a, b, c, 1), Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 1))
}

/// The upstream sink (IPv4), where the runaway guest connects.
pub fn sink() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(UPSTREAM_V4), SINK_PORT)
}

/// The upstream server, over IPv4 or IPv6.
pub fn upstream(v6: bool) -> SocketAddr {
    if v6 {
        SocketAddr::new(IpAddr::V6(UPSTREAM_V6), UPSTREAM_PORT)
    } else {
        SocketAddr::new(IpAddr::V4(UPSTREAM_V4), UPSTREAM_PORT)
    }
}

/// The host's ruleset: a hypervisor's forward policy. `ct state` is what registers conntrack
/// in the host namespace; the table then tracks every flow forwarded or sent from there.
pub fn ruleset() -> String {
    format!(
        "table inet ctg_lab {{
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct state invalid drop
    iifname \"{BRIDGE}\" oifname \"{UPLINK}\" ct state new accept
  }}
  chain output {{
    type filter hook output priority filter; policy accept;
    ct state invalid drop
  }}
}}
"
    )
}

/// How the runaway guest leaks connections without holding a descriptor for each: both ends
/// close at once, but the guest's and the sink's own rulesets drop their FIN and RST. The
/// host never sees the connections end, and its conntrack table keeps one ASSURED
/// ESTABLISHED entry for each, as it did for the incident's guest. (Holding the sockets
/// instead would need 2 descriptors per connection, past this machine's 20,000 limit.)
pub fn leak_ruleset(port_match: &str) -> String {
    format!(
        "table inet ctg_lab_leak {{
  chain output {{
    type filter hook output priority filter; policy accept;
    {port_match} tcp flags & (fin | rst) != 0 drop
  }}
}}
"
    )
}

/// The namespaces a lab created, deleted on drop: declared last in [`Lab`], so its places
/// (threads and sockets) are gone first.
struct Namespaces {
    names: Vec<String>,
    scratch: PathBuf,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            if let Err(e) = place::delete_netns(name) {
                eprintln!("ctguard-lab: warning: {e}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// The running lab.
pub struct Lab {
    /// `ctg-lab-<pid>`: every namespace name starts with it.
    pub prefix: String,
    pub host: Place,
    pub upstream: Place,
    /// The guests, in the order of [`GUESTS`].
    pub guests: Vec<(GuestSpec, Place)>,
    namespaces: Namespaces,
}

impl Lab {
    /// Builds the lab. On any error, what was built is removed again before returning.
    pub async fn build() -> Result<Lab, String> {
        let prefix = format!("ctg-lab-{}", std::process::id());
        let scratch = std::env::temp_dir().join(&prefix);
        let mut namespaces = Namespaces { names: Vec::new(), scratch };
        std::fs::create_dir_all(&namespaces.scratch)
            .map_err(|e| format!("scratch dir {}: {e}", namespaces.scratch.display()))?;
        let mut roles = vec!["host", "upstream"];
        roles.extend(GUESTS.iter().map(|g| g.role));
        let mut places = Vec::new();
        for role in roles {
            let name = format!("{prefix}-{role}");
            place::create_netns(&name)?;
            namespaces.names.push(name.clone());
            places.push(Place::enter(&name)?);
        }
        let mut places = places.into_iter();
        let (Some(host), Some(upstream)) = (places.next(), places.next()) else {
            return Err("lab: host and upstream places missing".into());
        };
        let guests = GUESTS.iter().copied().zip(places).collect();
        let lab = Lab { prefix, host, upstream, guests, namespaces };
        lab.wire().await?;
        Ok(lab)
    }

    /// A file in the lab's scratch directory (removed with the lab).
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.namespaces.scratch.join(name)
    }

    /// The namespace names, host first.
    pub fn namespace_names(&self) -> &[String] {
        &self.namespaces.names
    }

    /// A guest's place by role.
    pub fn guest(&self, role: &str) -> Result<&Place, String> {
        self.guests
            .iter()
            .find(|(g, _)| g.role == role)
            .map(|(_, p)| p)
            .ok_or_else(|| format!("no guest {role} in the lab"))
    }

    async fn wire(&self) -> Result<(), String> {
        let all = std::iter::once(&self.host)
            .chain(std::iter::once(&self.upstream))
            .chain(self.guests.iter().map(|(_, p)| p));
        for p in all {
            // Before any link exists: addresses are usable at once, no duplicate detection wait.
            p.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
            p.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
            let rt = rtnl(p).await?;
            set_up(&rt, "lo").await?;
        }
        self.host.sysctl("net.ipv4.ip_forward", "1")?;
        // The runaway guest leaks connections to one address and port; each keeps its source
        // port while its socket lingers, so it needs more than the default 28,232 ports to
        // reach doctor's cap (a tenth of nf_conntrack_max).
        self.guest(RUNAWAY.role)?.sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
        // Both ends of a leaked connection are orphan sockets whose FIN is dropped: let them
        // give up after one retransmission instead of minutes, so they never pile up (the
        // kernel's orphan budget, tcp_max_orphans, is shared by the whole machine).
        for place in [&self.upstream, self.guest(RUNAWAY.role)?] {
            place.sysctl("net.ipv4.tcp_orphan_retries", "1")?;
        }
        self.host.sysctl("net.ipv6.conf.all.forwarding", "1")?;

        let host = rtnl(&self.host).await?;
        host.link()
            .add(LinkBridge::new(BRIDGE).up().build())
            .execute()
            .await
            .map_err(|e| format!("add bridge {BRIDGE}: {e}"))?;
        let bridge = index(&host, BRIDGE).await?;
        let mut subnets: Vec<(Ipv4Addr, Ipv6Addr)> = GUESTS.iter().map(gateways).collect();
        subnets.sort();
        subnets.dedup();
        for (gw4, gw6) in subnets {
            add_address(&host, bridge, IpAddr::V4(gw4), 24).await?;
            add_address(&host, bridge, IpAddr::V6(gw6), 64).await?;
        }

        for (guest, place) in &self.guests {
            let host_if = guest.host_if();
            veth_into(&host, &host_if, place.netns()).await?;
            host.link()
                .set(LinkUnspec::new_with_name(&host_if).controller(bridge).up().build())
                .execute()
                .await
                .map_err(|e| format!("attach {host_if} to {BRIDGE}: {e}"))?;
            let rt = rtnl(place).await?;
            let eth0 = set_up(&rt, "eth0").await?;
            add_address(&rt, eth0, IpAddr::V4(guest.v4), 24).await?;
            add_address(&rt, eth0, IpAddr::V6(guest.v6), 64).await?;
            let (gw4, gw6) = gateways(guest);
            default_routes(&rt, gw4, gw6).await?;
        }

        veth_into(&host, UPLINK, self.upstream.netns()).await?;
        let uplink = set_up(&host, UPLINK).await?;
        add_address(&host, uplink, IpAddr::V4(HOST_UPLINK_V4), 24).await?;
        add_address(&host, uplink, IpAddr::V6(HOST_UPLINK_V6), 64).await?;
        let up = rtnl(&self.upstream).await?;
        let eth0 = set_up(&up, "eth0").await?;
        add_address(&up, eth0, IpAddr::V4(UPSTREAM_V4), 24).await?;
        add_address(&up, eth0, IpAddr::V6(UPSTREAM_V6), 64).await?;
        // The upstream reaches the guests' subnets back through the host.
        let back4 = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::new(172, 16, 0, 0), 16)
            .gateway(HOST_UPLINK_V4)
            .build();
        let back6 = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0), 16)
            .gateway(HOST_UPLINK_V6)
            .build();
        for route in [back4, back6] {
            up.route().add(route).execute().await.map_err(|e| format!("upstream route: {e}"))?;
        }

        self.nft(&self.host, "host.nft", &ruleset())?;
        self.nft(&self.upstream, "sink.nft", &leak_ruleset(&format!("tcp sport {SINK_PORT}")))?;
        self.nft(self.guest(RUNAWAY.role)?, "runaway.nft", &leak_ruleset(""))?;
        Ok(())
    }

    /// Loads an nftables ruleset into one of the lab's namespaces.
    fn nft(&self, place: &Place, name: &str, rules: &str) -> Result<(), String> {
        let file = self.scratch(name);
        std::fs::write(&file, rules).map_err(|e| format!("{}: {e}", file.display()))?;
        place.exec_ok("nft", &["-f", &file.to_string_lossy()]).map(drop)
    }
}

/// An rtnetlink handle whose socket lives in the place's namespace.
async fn rtnl(place: &Place) -> Result<Handle, String> {
    let netns = place.netns().to_string();
    place
        .run(async move {
            let (connection, handle, _) =
                rtnetlink::new_connection().map_err(|e| format!("rtnetlink in {netns}: {e}"))?;
            // The connection task runs on the place's thread, with its socket.
            tokio::spawn(connection);
            Ok::<_, String>(handle)
        })
        .await?
}

/// The index of a link by name (`ip link show NAME`).
async fn index(rt: &Handle, name: &str) -> Result<u32, String> {
    let mut links = rt.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(link.header.index),
        Ok(None) => Err(format!("no link {name}")),
        Err(e) => Err(format!("link {name}: {e}")),
    }
}

/// `ip link set NAME up`; returns the link's index.
async fn set_up(rt: &Handle, name: &str) -> Result<u32, String> {
    let idx = index(rt, name).await?;
    rt.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(|e| format!("set {name} up: {e}"))?;
    Ok(idx)
}

/// `ip address add ADDR/PREFIX dev INDEX`.
async fn add_address(rt: &Handle, idx: u32, addr: IpAddr, prefix: u8) -> Result<(), String> {
    rt.address()
        .add(idx, addr, prefix)
        .execute()
        .await
        .map_err(|e| format!("add address {addr}/{prefix}: {e}"))
}

/// `ip route add default via GW4` and `via GW6`.
async fn default_routes(rt: &Handle, gw4: Ipv4Addr, gw6: Ipv6Addr) -> Result<(), String> {
    let v4 = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw4).build();
    let v6 = RouteMessageBuilder::<Ipv6Addr>::new().gateway(gw6).build();
    for route in [v4, v6] {
        rt.route().add(route).execute().await.map_err(|e| format!("default route: {e}"))?;
    }
    Ok(())
}

/// `ip link add HOST_IF type veth peer name eth0 netns NETNS`: the peer is born inside the
/// other namespace, so no `eth0` ever exists in the host namespace.
async fn veth_into(host: &Handle, host_if: &str, netns: &str) -> Result<(), String> {
    let path = format!("/run/netns/{netns}");
    let ns = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    let peer = LinkUnspec::new_with_name("eth0").setns_by_fd(ns.as_raw_fd()).build();
    let veth = LinkVeth::new(host_if, "eth0").set_info_data(InfoData::Veth(InfoVeth::Peer(peer)));
    let res = host.link().add(veth.build()).execute().await;
    drop(ns); // the kernel has resolved the descriptor once the request is answered
    res.map_err(|e| format!("add veth {host_if} with its peer in {netns}: {e}"))
}
