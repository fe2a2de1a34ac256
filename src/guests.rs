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
#[non_exhaustive]
pub enum GuestError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than a guest file can be.
    #[error("{path}: larger than {} MiB: not a guest file", .limit >> 20)]
    TooLarge {
        /// The file.
        path: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// Not a regular file, where only one is read (`guests --names`, which a shell waits on).
    #[error("{path}: not a regular file (guests --names reads only a file that cannot block)")]
    NotRegular {
        /// The path.
        path: String,
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
    /// The host-side interfaces of discovered guests (empty for a guest file's).
    ifaces: Vec<Vec<String>>,
    /// Name → guest.
    by_name: HashMap<String, GuestId>,
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
        self.add_seen(name, cidrs, &[])
    }

    /// Adds a guest seen behind the host interfaces `ifaces` (discovery); a name already in
    /// the map is that guest (a second interface, or a guest file's guest discovered at more
    /// addresses), its CIDRs and interfaces joined to the old ones.
    pub fn add_seen(&mut self, name: &str, cidrs: Vec<IpNetwork>, ifaces: &[String]) -> GuestId {
        let id = self.find(name).unwrap_or(self.names.len() as GuestId);
        self.index(id, &cidrs);
        if let Some(known) = self.cidrs.get_mut(id as usize) {
            for net in cidrs {
                if !known.contains(&net) {
                    known.push(net);
                }
            }
            let seen = &mut self.ifaces[id as usize];
            for iface in ifaces {
                if !seen.contains(iface) {
                    seen.push(iface.clone());
                }
            }
        } else {
            self.names.push(name.to_string());
            self.by_name.insert(name.to_string(), id);
            self.cidrs.push(cidrs);
            self.ifaces.push(ifaces.to_vec());
        }
        id
    }

    /// Files `cidrs` under guest `id`, each unless an earlier guest owns it.
    fn index(&mut self, id: GuestId, cidrs: &[IpNetwork]) {
        for net in cidrs {
            let (v6, value, width) = bits(net.ip());
            let len = net.prefix();
            self.by_prefix.entry((v6, len, masked(value, width, len))).or_insert(id);
            let lens = if v6 { &mut self.v6_lens } else { &mut self.v4_lens };
            if !lens.contains(&len) {
                lens.push(len);
                lens.sort_unstable_by(|a, b| b.cmp(a));
            }
        }
    }

    /// Reads a TOML guest file: `name = ["CIDR", ...]` (or a single `"CIDR"`) per guest. A file
    /// over [`MAX_GUEST_FILE`] bytes is refused unread past the limit (`/dev/zero` is not a
    /// guest file). Any readable path works: a FIFO or a process substitution too.
    pub fn load(path: &str) -> Result<GuestMap, GuestError> {
        let file = std::fs::File::open(path)
            .map_err(|source| GuestError::Read { path: path.to_string(), source })?;
        GuestMap::read(file, path)
    }

    /// [`GuestMap::load`] for a reader that must not wait: only a regular file is read. A
    /// FIFO with no writer would block `open` (and one that never ends, `read`), and the
    /// shell completions wait on `guests --names`; the file is opened without blocking and
    /// checked after opening, so a path swapped for a FIFO cannot hang it either.
    pub fn load_regular(path: &str) -> Result<GuestMap, GuestError> {
        use std::os::unix::fs::OpenOptionsExt;
        let read = |source| GuestError::Read { path: path.to_string(), source };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(read)?;
        if !file.metadata().map_err(read)?.is_file() {
            return Err(GuestError::NotRegular { path: path.to_string() });
        }
        GuestMap::read(file, path)
    }

    /// The guest map in `file` (opened from `path`), read no further than [`MAX_GUEST_FILE`].
    fn read(file: std::fs::File, path: &str) -> Result<GuestMap, GuestError> {
        let read = |source| GuestError::Read { path: path.to_string(), source };
        let Some(bytes) = crate::bounded::read_at_most(file, MAX_GUEST_FILE).map_err(read)? else {
            return Err(GuestError::TooLarge { path: path.to_string(), limit: MAX_GUEST_FILE });
        };
        let text = String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() + 1;
            GuestError::Invalid {
                path: path.to_string(),
                line,
                reason: "not UTF-8 text (a guest file is TOML)".into(),
            }
        })?;
        GuestMap::parse(&text, path)
    }

    /// Parses guest-file text; `path` only labels errors.
    ///
    /// Refused: a guest name that is itself an address or a CIDR (`--guest` would otherwise
    /// read it as the guest, not the address), and two guests claiming the same network (the
    /// owner of its flows would be a coin toss). A more specific CIDR inside another guest's
    /// network is fine: the most specific wins.
    pub fn parse(text: &str, path: &str) -> Result<GuestMap, GuestError> {
        // Byte offsets of the newlines, to turn a span into a line in a binary search.
        let newlines: Vec<usize> = text.match_indices('\n').map(|(i, _)| i).collect();
        let line_of = |offset: usize| newlines.partition_point(|&nl| nl < offset) + 1;
        let invalid = |offset: usize, reason: String| GuestError::Invalid {
            path: path.to_string(),
            line: line_of(offset),
            reason,
        };
        let doc = toml::de::DeTable::parse(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            invalid(at, e.message().to_string())
        })?;
        // In file order, so the first problem reported is the first in the file.
        let mut guests: Vec<_> = doc.get_ref().iter().collect();
        guests.sort_unstable_by_key(|(key, _)| key.span().start);
        let mut map = GuestMap::new();
        let mut lines: Vec<usize> = Vec::with_capacity(guests.len());
        for (key, value) in guests {
            let (name, at) = (key.get_ref().as_ref(), key.span().start);
            let shown = escaped(name);
            if crate::select::parse_cidr(name).is_ok() {
                return Err(invalid(
                    at,
                    format!(
                        "guest name '{shown}' is an address: --guest would mean the address, \
                         not the guest (name it e.g. 'vm-{shown}')"
                    ),
                ));
            }
            let items: &[toml::Spanned<toml::de::DeValue<'_>>] = match value.get_ref() {
                toml::de::DeValue::String(_) => std::slice::from_ref(value),
                toml::de::DeValue::Array(a) => a,
                _ => {
                    return Err(invalid(
                        at,
                        format!("guest '{shown}': expected a CIDR or a list of CIDRs"),
                    ));
                }
            };
            let mut cidrs = Vec::with_capacity(items.len());
            for item in items {
                let toml::de::DeValue::String(s) = item.get_ref() else {
                    return Err(invalid(at, format!("guest '{shown}': CIDRs must be strings")));
                };
                let net = s.parse::<IpNetwork>().map_err(|e| {
                    invalid(item.span().start, format!("guest '{shown}': invalid CIDR '{s}': {e}"))
                })?;
                if let Some(other) = map.claimed(net) {
                    return Err(invalid(
                        item.span().start,
                        format!(
                            "guests '{}' (line {}) and '{shown}' both claim {net}: give each \
                             network one owner",
                            escaped(map.name(other)),
                            lines[other as usize],
                        ),
                    ));
                }
                cidrs.push(net);
            }
            if cidrs.is_empty() {
                return Err(invalid(at, format!("guest '{shown}' has no CIDRs")));
            }
            lines.push(line_of(at));
            map.add(name, cidrs);
        }
        Ok(map)
    }

    /// The guest already owning exactly the network `net` (same prefix length and address).
    fn claimed(&self, net: IpNetwork) -> Option<GuestId> {
        let (v6, value, width) = bits(net.ip());
        let len = net.prefix();
        self.by_prefix.get(&(v6, len, masked(value, width, len))).copied()
    }

    /// True when no guest is defined.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// How many guests are defined; their ids are `0..len`.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// A guest's name.
    pub fn name(&self, id: GuestId) -> &str {
        self.names.get(id as usize).map_or("?", String::as_str)
    }

    /// A guest's CIDRs.
    pub fn cidrs(&self, id: GuestId) -> &[IpNetwork] {
        self.cidrs.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// The host interfaces a discovered guest was seen behind (none for a guest file's).
    pub fn ifaces(&self, id: GuestId) -> &[String] {
        self.ifaces.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// A guest named for an operator: `web-7 (172.16.3.5, vnet3)`, its addresses (a host
    /// CIDR as its address) then its interfaces; the bare name when it has neither.
    pub fn detail(&self, id: GuestId) -> String {
        let name = escaped(self.name(id));
        let mut parts: Vec<String> = self
            .cidrs(id)
            .iter()
            .map(|n| match n.prefix() {
                32 if n.is_ipv4() => n.ip().to_string(),
                128 => n.ip().to_string(),
                _ => n.to_string(),
            })
            .collect();
        parts.extend(self.ifaces(id).iter().map(|i| escaped(i).into_owned()));
        if parts.is_empty() { name.into_owned() } else { format!("{name} ({})", parts.join(", ")) }
    }

    /// Whether `other` names the same guests, in the same order, with the same addresses and
    /// interfaces (in any order): a map looked at again that is the same needs no recount.
    pub fn same_guests(&self, other: &GuestMap) -> bool {
        self.names == other.names
            && (0..self.names.len()).all(|i| {
                same_members(&self.cidrs[i], &other.cidrs[i])
                    && same_members(&self.ifaces[i], &other.ifaces[i])
            })
    }

    /// The guest called `name`.
    pub fn find(&self, name: &str) -> Option<GuestId> {
        self.by_name.get(name).copied()
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

/// The longest guest file read: about half a million guests with a few CIDRs each.
pub const MAX_GUEST_FILE: u64 = 32 << 20;

/// Whether `a` and `b` hold the same items, in any order (a guest's CIDRs, its interfaces).
pub fn same_members<T: Ord + Clone>(a: &[T], b: &[T]) -> bool {
    let sorted = |v: &[T]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    a.len() == b.len() && sorted(a) == sorted(b)
}

/// `name` safe for a terminal: control and other invisible characters (and backslashes, so
/// the result is unambiguous) become Rust-style escapes like `\n`, `\u{1b}` or `\u{202e}`.
/// Names are free TOML strings; a name carrying ESC or a newline must not rewrite the
/// operator's screen or forge a table row.
pub fn escaped(name: &str) -> std::borrow::Cow<'_, str> {
    // `escape_debug` leaves printable characters alone; quotes need no escape here.
    let unsafe_char = |c: char| c != '"' && c != '\'' && c.escape_debug().len() > 1;
    if !name.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
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

    #[test]
    fn issue_9_6_guest_file_is_bounded() {
        let started = std::time::Instant::now();
        let e = GuestMap::load("/dev/zero").unwrap_err();
        assert!(matches!(e, GuestError::TooLarge { .. }), "{e}");
        assert_eq!(e.to_string(), "/dev/zero: larger than 32 MiB: not a guest file");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn issue_9_7_lines_come_from_spans_in_file_order() {
        // Keys out of alphabetical order, quoted and dotted-looking ones: each error names
        // the line of its own value.
        let text = "zz = \"10.0.0.1\"\n\"a b\" = [\"10.0.0.2\",\n  \"10.0.0.300\"]\n";
        let e = GuestMap::parse(text, "g.toml").unwrap_err();
        assert_eq!(e.to_string().split(": ").next(), Some("g.toml:3"), "{e}");
        let map = GuestMap::parse("zz = \"10.0.0.1\"\naa = \"10.0.0.2\"\n", "g.toml").unwrap();
        assert_eq!(map.name(0), "zz", "ids follow the file");
    }

    #[test]
    fn issue_9_8_a_name_that_is_an_address_is_refused() {
        for name in ["10.1.0.5", "10.1.0.0/24", "fd00::1", "fd00::/64"] {
            let text = format!("web = \"10.9.0.0/24\"\n\"{name}\" = \"10.1.0.1\"\n");
            let e = GuestMap::parse(&text, "g.toml").unwrap_err().to_string();
            assert!(e.starts_with("g.toml:2: guest name '"), "{e}");
            assert!(e.contains(name) && e.contains("is an address"), "{e}");
        }
        // Names that only look like numbers are no address `--guest` would take.
        let ok = "\"10\" = \"10.0.0.1\"\n\"vm-10.1.0.5\" = \"10.0.0.2\"\n";
        assert!(crate::select::parse_cidr("10").is_err());
        assert!(GuestMap::parse(ok, "g").is_ok());
    }

    #[test]
    fn issue_9_8_two_guests_claiming_one_network_are_refused() {
        let text = "web01 = [\"10.0.0.0/24\"]\n\n# db\ndb01 = [\"10.0.1.1\", \"10.0.0.9/24\"]\n";
        let e = GuestMap::parse(text, "g.toml").unwrap_err().to_string();
        assert_eq!(
            e,
            "g.toml:4: guests 'web01' (line 1) and 'db01' both claim 10.0.0.9/24: give each \
             network one owner"
        );
        let e = GuestMap::parse("a = \"fd00::1\"\nb = \"fd00::1/128\"\n", "g").unwrap_err();
        assert!(e.to_string().contains("'a' (line 1) and 'b'"), "{e}");
        // A more specific network inside another guest's, and one guest repeating its own
        // network, are not disputes.
        let map =
            GuestMap::parse("net = [\"10.0.0.0/16\", \"10.0.0.0/16\"]\nvm = \"10.0.3.5\"\n", "g")
                .unwrap();
        assert_eq!(map.lookup("10.0.3.5".parse().unwrap()), map.find("vm"));
        assert_eq!(map.lookup("10.0.3.6".parse().unwrap()), map.find("net"));
    }

    #[test]
    fn issue_9_8_names_are_escaped_for_terminals() {
        assert_eq!(escaped("web01"), "web01");
        assert!(matches!(escaped("wéb-01 \"x\""), std::borrow::Cow::Borrowed(_)));
        assert_eq!(escaped("a\x1b[2Jb\nc\td\\e\u{202e}f"), "a\\u{1b}[2Jb\\nc\\td\\\\e\\u{202e}f");
        // The file can carry such a name; errors about it are escaped too.
        let e = GuestMap::parse("\"x\\u001by\" = 3\n", "g").unwrap_err().to_string();
        assert!(!e.contains('\x1b') && e.contains("x\\u{1b}y"), "{e}");
    }
}
