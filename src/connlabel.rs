//! Connection label names: the `connlabel.conf` map (`/etc/xtables/connlabel.conf`, as
//! conntrack-tools and iptables' connlabel match read it) from names to the kernel's 128 label
//! bits, and back for printing.
//!
//! The file has one `BIT NAME` pair a line (`1 customer-a`), `#` comments and blank lines; a
//! bit is 0 to 127. A label on the command line is a name from the map or a bit number.

use std::fs;
use std::path::Path;

/// Where conntrack-tools reads the names (libnetfilter_conntrack's `CONNLABEL_CFG`).
pub const DEFAULT_PATH: &str = "/etc/xtables/connlabel.conf";

/// Label bits the kernel holds per entry (`NF_CT_LABELS_MAX_SIZE` is 16 bytes).
pub const BITS: u32 = 128;

/// The label map file is read whole; a real one is a few lines.
const MAX_BYTES: u64 = 1 << 20;

/// Names of label bits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelMap {
    names: Vec<(u32, String)>,
}

impl LabelMap {
    /// Parses the text of a `connlabel.conf`; a bad line is `LINE: reason`.
    pub fn parse(text: &str) -> Result<LabelMap, String> {
        let mut names = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (bit, name) = (parts.next().unwrap_or(""), parts.next());
            let bit = bit.parse::<u32>().ok().filter(|b| *b < BITS);
            match (bit, name) {
                (Some(bit), Some(name)) => names.push((bit, name.to_string())),
                _ => return Err(format!("line {}: not `BIT NAME` with a bit 0-127", i + 1)),
            }
        }
        Ok(LabelMap { names })
    }

    /// Reads `path`; with `required` false, a missing file is an empty map (names then fail to
    /// resolve, bit numbers still work).
    pub fn load(path: &Path, required: bool) -> Result<LabelMap, String> {
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(LabelMap::default());
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let bytes = crate::bounded::read_at_most(file, MAX_BYTES)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .ok_or_else(|| format!("{}: larger than 1 MiB", path.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("{}: stream did not contain valid UTF-8", path.display()))?;
        LabelMap::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The bit of a label: its name in the map (the first line naming it), or a bit number.
    pub fn bit(&self, label: &str) -> Result<u32, String> {
        if let Some((bit, _)) = self.names.iter().find(|(_, n)| n == label) {
            return Ok(*bit);
        }
        match label.parse::<u32>() {
            Ok(bit) if bit < BITS => Ok(bit),
            _ => Err(format!("unknown label '{label}' (not in the label map, nor a bit 0-127)")),
        }
    }

    /// The bits of a comma-separated list of labels (`red,blue`), as a mask.
    pub fn bits(&self, list: &str) -> Result<u128, String> {
        let mut bits = 0u128;
        for label in crate::select::comma_list(list, "label").map_err(|e| e.to_string())? {
            bits |= 1u128 << self.bit(label)?;
        }
        Ok(bits)
    }

    /// The name of a bit (the first line naming it), if it has one.
    pub fn name(&self, bit: u32) -> Option<&str> {
        self.names.iter().find(|(b, _)| *b == bit).map(|(_, n)| n.as_str())
    }

    /// The named labels of `labels`, comma separated, in bit order, as `conntrack -o labels`
    /// prints them (bits without a name are left out, as there); `None` when none is named.
    pub fn names_of(&self, labels: u128) -> Option<String> {
        let named: Vec<&str> =
            (0..BITS).filter(|b| labels & (1u128 << b) != 0).filter_map(|b| self.name(b)).collect();
        (!named.is_empty()).then(|| named.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_12_names_and_bits_resolve_both_ways() {
        let m = LabelMap::parse("# comment\n0 red\n\n3 blue # trailing\n127\tlast\n").unwrap();
        assert_eq!(m.bit("blue"), Ok(3));
        assert_eq!(m.bit("5"), Ok(5));
        assert_eq!(m.bits("red,blue"), Ok(0b1001));
        assert_eq!(m.names_of(0b1001 | 1 << 5), Some("red,blue".into()));
        assert_eq!(m.names_of(1 << 5), None);
        assert_eq!(m.name(127), Some("last"));
        assert!(m.bit("green").unwrap_err().contains("unknown label 'green'"));
        assert!(m.bit("128").is_err());
        assert!(m.bits("red,").is_err());
    }

    #[test]
    fn issue_12_a_bad_line_names_itself() {
        assert_eq!(
            LabelMap::parse("0 red\n200 big\n"),
            Err("line 2: not `BIT NAME` with a bit 0-127".into())
        );
        assert!(LabelMap::parse("red\n").is_err());
    }

    #[test]
    fn issue_12_a_missing_default_file_is_an_empty_map() {
        let p = Path::new("/nonexistent/ctguard/connlabel.conf");
        assert_eq!(LabelMap::load(p, false), Ok(LabelMap::default()));
        assert!(LabelMap::load(p, true).is_err());
    }
}
