//! Protocol names beyond the built-in ones: `/etc/protocols`, read once and bounded, as
//! `conntrack -p` resolves them through `getprotobyname`.
//!
//! The file is the system's protocol database (`name number [aliases...] [# comment]`). A
//! missing, unreadable or oversized file leaves only the built-in names and numbers; a line
//! that does not parse is skipped, as the C library skips it.

use std::sync::OnceLock;

use crate::flow::Proto;

/// Names and aliases of protocols, each with its number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtocolNames {
    names: Vec<(String, Proto)>,
}

impl ProtocolNames {
    /// The system's protocol database.
    pub const PATH: &'static str = "/etc/protocols";
    /// At most this much of it is read (the file is about 3 KiB; a larger one is not it).
    pub const MAX_BYTES: u64 = 1 << 20;

    /// Parses the text of a protocols file. Names are compared exactly (`getprotobyname`
    /// uses `strcmp`; the file lists upper-case spellings as aliases).
    pub fn parse(text: &str) -> ProtocolNames {
        let mut names = Vec::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let (Some(name), Some(number)) = (words.next(), words.next()) else { continue };
            let Ok(number) = number.parse::<u8>() else { continue };
            for n in std::iter::once(name).chain(words) {
                names.push((n.to_string(), Proto(number)));
            }
        }
        ProtocolNames { names }
    }

    /// Reads and parses `path`, at most [`Self::MAX_BYTES`]; `None` when it cannot be read,
    /// is larger, or is not text.
    pub fn read(path: &str) -> Option<ProtocolNames> {
        let file = std::fs::File::open(path).ok()?;
        let bytes = crate::bounded::read_at_most(file, Self::MAX_BYTES).ok()??;
        Some(Self::parse(std::str::from_utf8(&bytes).ok()?))
    }

    /// The system's names, read from [`Self::PATH`] the first time they are asked for; empty
    /// when the file is missing or bad.
    pub fn system() -> &'static ProtocolNames {
        static SYSTEM: OnceLock<ProtocolNames> = OnceLock::new();
        SYSTEM.get_or_init(|| Self::read(Self::PATH).unwrap_or_default())
    }

    /// The protocol a name or alias stands for.
    pub fn lookup(&self, name: &str) -> Option<Proto> {
        self.names.iter().find(|(n, _)| n == name).map(|(_, p)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_12_names_aliases_comments_and_bad_lines() {
        let db = ProtocolNames::parse(
            "# comment\nigmp\t2\tIGMP\t\t# Internet Group Management\n\
             ipv6-icmp 58 IPv6-ICMP\nbroken\nbig 300 BIG\n  \nvrrp 112 VRRP",
        );
        assert_eq!(db.lookup("igmp"), Some(Proto(2)));
        assert_eq!(db.lookup("IGMP"), Some(Proto(2)));
        assert_eq!(db.lookup("Igmp"), None, "exact, as getprotobyname");
        assert_eq!(db.lookup("vrrp"), Some(Proto(112)));
        assert_eq!(db.lookup("big"), None, "a number over 255 is no protocol");
        assert_eq!(db.lookup("broken"), None);
        assert_eq!(db.lookup("Internet"), None, "comments are not aliases");
    }

    #[test]
    fn issue_12_a_missing_file_gives_no_names() {
        assert_eq!(ProtocolNames::read("/nonexistent/protocols"), None);
    }
}
