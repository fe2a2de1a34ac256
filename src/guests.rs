//! Who owns an address: the guest map (guest name → CIDRs) and the ownership rule for flows.
//!
//! A guest owns a flow when one of its CIDRs contains, in this order, the original source,
//! the reply source (DNAT to the guest), the original destination, the reply destination.
//! Lookups are longest-prefix-first over a hash per prefix length, so grouping 260k flows by
//! hundreds of guests stays a few hash probes per address.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::flow::Flow;

/// Index of a guest in its [`GuestMap`].
pub type GuestId = u32;

/// A guest file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid for a guest map.
    #[error("{path}:{line}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Guest names and the CIDRs each one owns.
#[derive(Debug, Clone, Default)]
pub struct GuestMap {
    names: Vec<String>,
    cidrs: Vec<Vec<IpNetwork>>,
    /// (is_v6, prefix length, masked address) → guest; prefix lengths longest first.
    by_prefix: HashMap<(bool, u8, u128), GuestId>,
    v4_lens: Vec<u8>,
    v6_lens: Vec<u8>,
}

fn bits(addr: IpAddr) -> (bool, u128, u8) {
    match addr {
        IpAddr::V4(a) => (false, u32::from(a) as u128, 32),
        IpAddr::V6(a) => (true, u128::from(a), 128),
    }
}

fn masked(value: u128, width: u8, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        let keep = u32::from(width - len.min(width));
        (value >> keep) << keep
    }
}

impl GuestMap {
    /// An empty map.
    pub fn new() -> GuestMap {
        GuestMap::default()
    }

    /// Adds a guest; a CIDR already owned by an earlier guest stays with it.
    pub fn add(&mut self, name: &str, cidrs: Vec<IpNetwork>) -> GuestId {
        let id = self.names.len() as GuestId;
        for net in &cidrs {
            let (v6, value, width) = bits(net.ip());
            let len = net.prefix();
            self.by_prefix.entry((v6, len, masked(value, width, len))).or_insert(id);
            let lens = if v6 { &mut self.v6_lens } else { &mut self.v4_lens };
            if !lens.contains(&len) {
                lens.push(len);
                lens.sort_unstable_by(|a, b| b.cmp(a));
            }
        }
        self.names.push(name.to_string());
        self.cidrs.push(cidrs);
        id
    }

    /// Reads a TOML guest file: `name = ["CIDR", ...]` (or a single `"CIDR"`) per guest.
    pub fn load(path: &str) -> Result<GuestMap, GuestError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| GuestError::Read { path: path.to_string(), source })?;
        GuestMap::parse(&text, path)
    }

    /// Parses guest-file text; `path` only labels errors.
    pub fn parse(text: &str, path: &str) -> Result<GuestMap, GuestError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let invalid = |offset: usize, reason: String| GuestError::Invalid {
            path: path.to_string(),
            line: line_of(offset),
            reason,
        };
        let doc: toml::Spanned<toml::Table> = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            invalid(at, e.message().to_string())
        })?;
        // Spans of values are not kept by `Table`; find each guest's line by its key instead.
        let mut map = GuestMap::new();
        for (name, value) in doc.get_ref() {
            let at = find_key(text, name);
            let items: Vec<&toml::Value> = match value {
                toml::Value::String(_) => vec![value],
                toml::Value::Array(a) => a.iter().collect(),
                _ => {
                    return Err(invalid(
                        at,
                        format!("guest '{name}': expected a CIDR or a list of CIDRs"),
                    ));
                }
            };
            let mut cidrs = Vec::new();
            for item in items {
                let Some(s) = item.as_str() else {
                    return Err(invalid(at, format!("guest '{name}': CIDRs must be strings")));
                };
                let net = s
                    .parse::<IpNetwork>()
                    .map_err(|e| invalid(at, format!("guest '{name}': invalid CIDR '{s}': {e}")))?;
                cidrs.push(net);
            }
            if cidrs.is_empty() {
                return Err(invalid(at, format!("guest '{name}' has no CIDRs")));
            }
            map.add(name, cidrs);
        }
        Ok(map)
    }

    /// True when no guest is defined.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// A guest's name.
    pub fn name(&self, id: GuestId) -> &str {
        self.names.get(id as usize).map_or("?", String::as_str)
    }

    /// A guest's CIDRs.
    pub fn cidrs(&self, id: GuestId) -> &[IpNetwork] {
        self.cidrs.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// The guest called `name`.
    pub fn find(&self, name: &str) -> Option<GuestId> {
        self.names.iter().position(|n| n == name).map(|i| i as GuestId)
    }

    /// The guest owning `addr` (the most specific CIDR wins).
    pub fn lookup(&self, addr: IpAddr) -> Option<GuestId> {
        let (v6, value, width) = bits(addr);
        let lens = if v6 { &self.v6_lens } else { &self.v4_lens };
        lens.iter()
            .find_map(|&len| self.by_prefix.get(&(v6, len, masked(value, width, len))).copied())
    }

    /// The guest owning `flow`: original source, reply source, original destination, reply
    /// destination, in that order.
    pub fn owner(&self, flow: &Flow) -> Option<GuestId> {
        [flow.orig.src, flow.reply.src, flow.orig.dst, flow.reply.dst]
            .into_iter()
            .find_map(|a| self.lookup(a))
    }
}

/// Byte offset of `name = ...` at the start of a line (0 when not found).
fn find_key(text: &str, name: &str) -> usize {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let key = t.strip_prefix('"').map_or(t, |r| r);
        if key.starts_with(name)
            && key[name.len()..].trim_start_matches('"').trim_start().starts_with('=')
        {
            return offset;
        }
        offset += line.len();
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Tuple;

    fn flow(os: &str, od: &str, rs: &str, rd: &str) -> Flow {
        let t = |s: &str, d: &str| Tuple {
            src: s.parse().unwrap(),
            dst: d.parse().unwrap(),
            ..Tuple::default()
        };
        Flow { orig: t(os, od), reply: t(rs, rd), ..Flow::default() }
    }

    #[test]
    fn ownership_order_is_orig_src_reply_src_orig_dst_reply_dst() {
        let map = GuestMap::parse(
            "web = [\"172.16.3.0/24\"]\nvip = \"10.9.9.9\"\nhost = \"192.168.1.1\"\n",
            "g.toml",
        )
        .unwrap();
        let web = map.find("web");
        // Outbound from the guest.
        assert_eq!(map.owner(&flow("172.16.3.5", "1.1.1.1", "1.1.1.1", "172.16.3.5")), web);
        // DNAT to the guest: orig dst is a VIP, reply src is the guest; reply src wins over dst.
        assert_eq!(map.owner(&flow("8.8.8.8", "10.9.9.9", "172.16.3.5", "8.8.8.8")), web);
        // Inbound, no NAT: only the destination belongs to a guest.
        assert_eq!(
            map.owner(&flow("8.8.8.8", "192.168.1.1", "192.168.1.1", "8.8.8.8")),
            map.find("host")
        );
        assert_eq!(map.owner(&flow("8.8.8.8", "8.8.4.4", "8.8.4.4", "8.8.8.8")), None);
    }

    #[test]
    fn most_specific_cidr_wins_and_ipv6_works() {
        let map = GuestMap::parse(
            "net = [\"172.16.0.0/16\", \"fd00::/64\"]\none = [\"172.16.3.5/32\"]\n",
            "g.toml",
        )
        .unwrap();
        assert_eq!(map.lookup("172.16.3.5".parse().unwrap()), map.find("one"));
        assert_eq!(map.lookup("172.16.3.6".parse().unwrap()), map.find("net"));
        assert_eq!(map.lookup("fd00::1234".parse().unwrap()), map.find("net"));
        assert_eq!(map.lookup("fd01::1".parse().unwrap()), None);
    }

    #[test]
    fn errors_name_the_line() {
        let e =
            GuestMap::parse("a = [\"10.0.0.1\"]\nb = [\"10.0.0.300\"]\n", "g.toml").unwrap_err();
        assert_eq!(e.to_string().split(": ").next(), Some("g.toml:2"));
        assert!(e.to_string().contains("10.0.0.300"));
        let e = GuestMap::parse("a = [\"10.0.0.1\"\nb = 3\n", "g.toml").unwrap_err();
        assert!(e.to_string().starts_with("g.toml:"), "{e}");
        let e = GuestMap::parse("a = 3\n", "g.toml").unwrap_err();
        assert!(e.to_string().contains("expected a CIDR"));
    }
}
