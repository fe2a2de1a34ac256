//! Route netlink (`NETLINK_ROUTE`): one dump each of the links, the neighbour tables (ARP and
//! NDP) and the bridge FDB, read through the `rtnetlink` crate, and the join of the three into
//! the host's guest interfaces ([`join`]). Reads only: nothing here changes a link or a table.
//!
//! Every dump runs under one deadline and is bounded in entries, so a request always ends.

pub mod join;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};

/// The most entries one dump may hold before it is refused as not a host's table.
pub const MAX_ENTRIES: usize = 1 << 20;

/// How long the three dumps may take together by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// An Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The address in six bytes, or `None` for any other length (tunnels, loopback).
    pub fn from_slice(bytes: &[u8]) -> Option<Mac> {
        <[u8; 6]>::try_from(bytes).ok().filter(|b| b != &[0; 6]).map(Mac)
    }
}

impl Mac {
    /// A multicast or broadcast address: the group bit of the first byte.
    pub fn is_group(self) -> bool {
        self.0[0] & 1 != 0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One link (`ip -d link show`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `IFLA_INFO_KIND`: `tun` (taps), `veth`, `macvtap`, `bridge`, ...; `None` for physical
    /// devices and loopback.
    pub kind: Option<String>,
    /// The master (the bridge of a bridge port), `IFLA_MASTER`.
    pub master: Option<u32>,
    /// `IFLA_IFALIAS` (`ip link set NAME alias TEXT`).
    pub alias: Option<String>,
    /// The link's own MAC.
    pub mac: Option<Mac>,
    /// A loopback device.
    pub loopback: bool,
}

/// One neighbour entry with a link-layer address (`ip neigh show`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// The IPv4 or IPv6 address.
    pub ip: IpAddr,
    /// Its MAC.
    pub mac: Mac,
    /// The interface the entry is on.
    pub ifindex: u32,
}

/// One bridge forwarding entry (`bridge fdb show`): the MAC is behind this port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// The MAC.
    pub mac: Mac,
    /// The port's interface index.
    pub port: u32,
    /// The bridge, when the kernel says (`NDA_MASTER`).
    pub bridge: Option<u32>,
    /// A permanent entry: the port's own address (`local`), not one learned behind it.
    pub local: bool,
}

/// The three dumps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dumps {
    /// The links.
    pub links: Vec<Link>,
    /// The neighbours, IPv4 and IPv6.
    pub neighbours: Vec<Neighbour>,
    /// The bridge FDB.
    pub fdb: Vec<FdbEntry>,
}

/// Why the route netlink tables could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtnlError {
    /// The socket or its runtime could not be set up.
    #[error("route netlink socket: {0}")]
    Socket(std::io::Error),
    /// The kernel refused or broke a dump.
    #[error("route netlink {what} dump: {source}")]
    Dump {
        /// Which dump.
        what: &'static str,
        /// Why.
        source: rtnetlink::Error,
    },
    /// The dumps did not end in time.
    #[error("route netlink dumps did not end within {0:?}")]
    Timeout(Duration),
    /// A dump held more entries than a host has.
    #[error("route netlink {0} dump: more than {MAX_ENTRIES} entries")]
    TooMany(&'static str),
}

/// Reads the links, the neighbours and the FDB of the current namespace (enter it first with
/// [`crate::netns::enter`]), one dump each, all within `timeout`.
pub fn dump(timeout: Duration) -> Result<Dumps, RtnlError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(RtnlError::Socket)?;
    rt.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(RtnlError::Socket)?;
        let conn = tokio::spawn(connection);
        let res = tokio::time::timeout(timeout, dump_all(&handle)).await;
        conn.abort();
        res.map_err(|_| RtnlError::Timeout(timeout))?
    })
}

async fn dump_all(handle: &rtnetlink::Handle) -> Result<Dumps, RtnlError> {
    let mut dumps = Dumps::default();
    collect("link", handle.link().get().execute(), |m| {
        dumps.links.push(link_of(m));
    })
    .await?;
    collect("neighbour", handle.neighbours().get().execute(), |m| {
        dumps.neighbours.extend(neighbour_of(&m));
    })
    .await?;
    let fdb = handle.neighbours().get().set_address_family(AddressFamily::Bridge).execute();
    collect("fdb", fdb, |m| dumps.fdb.extend(fdb_of(&m))).await?;
    Ok(dumps)
}

async fn collect<T>(
    what: &'static str,
    stream: impl futures::Stream<Item = Result<T, rtnetlink::Error>>,
    mut each: impl FnMut(T),
) -> Result<(), RtnlError> {
    let mut stream = std::pin::pin!(stream);
    let mut n = 0usize;
    while let Some(item) = stream.next().await {
        n += 1;
        if n > MAX_ENTRIES {
            return Err(RtnlError::TooMany(what));
        }
        each(item.map_err(|source| RtnlError::Dump { what, source })?);
    }
    Ok(())
}

fn link_of(m: LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        kind: None,
        master: None,
        alias: None,
        mac: None,
        loopback: m.header.flags.contains(LinkFlags::Loopback),
    };
    for attr in m.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::IfAlias(a) if !a.is_empty() => link.alias = Some(a),
            LinkAttribute::Controller(i) if i != 0 => link.master = Some(i),
            LinkAttribute::Address(a) => link.mac = Mac::from_slice(&a),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(k) = info {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn usable(state: NeighbourState) -> bool {
    !matches!(
        state,
        NeighbourState::Failed
            | NeighbourState::Incomplete
            | NeighbourState::None
            | NeighbourState::Noarp
    )
}

fn neighbour_of(m: &NeighbourMessage) -> Option<Neighbour> {
    if !usable(m.header.state) {
        return None;
    }
    let mut ip: Option<IpAddr> = None;
    let mut mac = None;
    for attr in &m.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some((*a).into()),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => ip = Some((*a).into()),
            NeighbourAttribute::LinkLayerAddress(l) => mac = Mac::from_slice(l),
            _ => {}
        }
    }
    let (ip, mac) = (ip?, mac?);
    // Multicast groups (NOARP entries of 33:33:… and 01:00:5e:…) are nobody's address.
    if ip.is_multicast() || mac.is_group() {
        return None;
    }
    Some(Neighbour { ip, mac, ifindex: m.header.ifindex })
}

fn fdb_of(m: &NeighbourMessage) -> Option<FdbEntry> {
    let mut mac = None;
    let mut bridge = None;
    for attr in &m.attributes {
        match attr {
            NeighbourAttribute::LinkLayerAddress(l) => mac = Mac::from_slice(l),
            NeighbourAttribute::Controller(b) => bridge = Some(*b),
            _ => {}
        }
    }
    let mac = mac?;
    // Multicast and broadcast entries name no station.
    if mac.is_group() {
        return None;
    }
    Some(FdbEntry {
        mac,
        port: m.header.ifindex,
        bridge,
        local: m.header.state == NeighbourState::Permanent,
    })
}
