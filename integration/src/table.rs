//! The host namespace's conntrack table, seen through conntrack-tools (the independent oracle):
//! count, max, the per-CPU drop counters, listings, and loading the incident's table.

use std::collections::HashSet;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::path::Path;

use crate::place::Place;
use crate::seed;

/// `conntrack -C`: the namespace's own entry count.
pub fn count(ns: &Place) -> Result<u64, String> {
    let out = ns.exec_ok("conntrack", &["-C"])?;
    out.trim().parse().map_err(|_| format!("conntrack -C printed {out:?}"))
}

/// `nf_conntrack_max`: global, read-only in a child namespace, but compared with each
/// namespace's own count.
pub fn max(ns: &Place) -> Result<u64, String> {
    let out = ns.exec_ok("sysctl", &["-n", "net.netfilter.nf_conntrack_max"])?;
    out.trim().parse().map_err(|_| format!("nf_conntrack_max is {out:?}"))
}

/// The per-CPU counters of `conntrack -S`, summed over the CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets dropped because no entry could be allocated: the table-full signal.
    pub drop: u64,
    /// Entries evicted to make room (never ASSURED ones).
    pub early_drop: u64,
    pub insert_failed: u64,
}

/// `conntrack -S`, summed.
pub fn counters(ns: &Place) -> Result<Counters, String> {
    let out = ns.exec_ok("conntrack", &["-S"])?;
    parse_counters(&out)
}

fn parse_counters(text: &str) -> Result<Counters, String> {
    let mut c = Counters::default();
    let mut cpus = 0;
    for line in text.lines().filter(|l| l.starts_with("cpu=")) {
        cpus += 1;
        for (key, value) in line.split_whitespace().filter_map(|w| w.split_once('=')) {
            let slot = match key {
                "drop" => &mut c.drop,
                "early_drop" => &mut c.early_drop,
                "insert_failed" => &mut c.insert_failed,
                _ => continue,
            };
            *slot += value.parse::<u64>().map_err(|_| format!("conntrack -S: {key}={value}"))?;
        }
    }
    if cpus == 0 {
        return Err(format!("conntrack -S printed no cpu= lines: {text:?}"));
    }
    Ok(c)
}

/// One line of `conntrack -L`, keyed without the remaining timeout (which ticks).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// The original source.
    pub src: IpAddr,
    /// TCP state, or empty.
    pub state: String,
    /// The `[ASSURED]` flag: both directions seen; the kernel never evicts such an entry to
    /// make room unless it is TCP in a closing state.
    pub assured: bool,
    /// The line without its timeout field.
    pub key: String,
}

/// A `conntrack -L` of the whole table, split by a selection.
#[derive(Debug, Default)]
pub struct Listing {
    /// The entries outside the selection, parsed.
    pub others: Vec<Entry>,
    /// The entries in the selection, as hashes of their keys (parsing and keeping a quarter
    /// million lines is slow in a debug build; comparing hashes is enough).
    pub selected: HashSet<u64>,
}

impl Entry {
    /// Whether the kernel may free this entry by itself while the table is nearly full: the
    /// GC's early drop (`gc_worker`, not counted in any statistic) kills entries that are not
    /// ASSURED, and TCP entries in FIN_WAIT, LAST_ACK, TIME_WAIT, CLOSE or CLOSE_WAIT;
    /// the packet path's early drop only unassured ones. Never an ASSURED ESTABLISHED one.
    pub fn kernel_may_free(&self) -> bool {
        !self.assured
            || matches!(
                self.state.as_str(),
                "FIN_WAIT" | "LAST_ACK" | "TIME_WAIT" | "CLOSE" | "CLOSE_WAIT"
            )
    }
}

/// `conntrack -L -o id` of the namespace's whole table; the lines that contain `selection`
/// are the selected ones. The kernel's id is part of each key: a new connection that re-uses
/// a deleted entry's tuple gets a new id, so it never passes for the old entry.
pub fn list(ns: &Place, selection: &str) -> Result<Listing, String> {
    let out = ns.exec_ok("conntrack", &["-L", "-o", "id"])?;
    let mut listing = Listing::default();
    for line in out.lines() {
        if line.contains(selection) {
            listing.selected.insert(key_hash(line));
        } else {
            listing.others.push(parse_entry(line)?);
        }
    }
    Ok(listing)
}

/// The hash of a line's key (every field but the timeout).
fn key_hash(line: &str) -> u64 {
    let mut h = DefaultHasher::new();
    for (i, w) in line.split_whitespace().enumerate() {
        if i != 2 {
            w.hash(&mut h);
        }
    }
    h.finish()
}

/// `tcp 6 431999 ESTABLISHED src=A dst=B sport=.. ` → the entry; the timeout is the third
/// field, the state (TCP) the fourth.
fn parse_entry(line: &str) -> Result<Entry, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let src = words
        .iter()
        .find_map(|w| w.strip_prefix("src="))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("conntrack -L line without a source: {line:?}"))?;
    let state = match words.get(3) {
        Some(w) if !w.contains('=') => (*w).to_string(),
        _ => String::new(),
    };
    let key = words
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, w)| *w)
        .collect::<Vec<_>>()
        .join(" ");
    let assured = words.contains(&"[ASSURED]");
    Ok(Entry { src, state, assured, key })
}

/// Writes the incident's table to `file` as a `conntrack -R` file ([`seed`]: 258,540 entries,
/// 240,000 of them 172.16.3.5's ESTABLISHED flows) and loads it into the namespace. Returns
/// how many entries it loaded.
pub fn seed_incident(ns: &Place, file: &Path) -> Result<u64, String> {
    seed_entries(ns, file, seed::entries())
}

/// Writes `entries` to `file` as a `conntrack -R` file and loads it into the namespace.
/// Returns how many entries it loaded.
pub fn seed_entries(
    ns: &Place,
    file: &Path,
    entries: impl Iterator<Item = seed::Entry>,
) -> Result<u64, String> {
    let lines = seed::write_file_of(file, entries)?;
    ns.exec_ok("conntrack", &["-R", &file.to_string_lossy()])?;
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_over_cpus() {
        let text = "cpu=0   \tfound=0 invalid=3 insert=0 insert_failed=0 drop=7 early_drop=1 error=0 search_restart=0 clash_resolve=0 chaintoolong=0 \n\
                    cpu=1   \tfound=0 invalid=0 insert=0 insert_failed=2 drop=5 early_drop=0 error=0 search_restart=0 clash_resolve=0 chaintoolong=0 \n";
        let c = parse_counters(text).unwrap();
        assert_eq!(c, Counters { drop: 12, early_drop: 1, insert_failed: 2 });
        assert!(parse_counters("").is_err());
    }

    #[test]
    fn entry_key_leaves_out_the_timeout() {
        let a = "tcp      6 431999 ESTABLISHED src=172.16.2.10 dst=192.0.2.2 sport=40000 dport=8080 src=192.0.2.2 dst=172.16.2.10 sport=8080 dport=40000 [ASSURED] mark=0 use=1";
        let b = a.replace("431999", "431990");
        let (ea, eb) = (parse_entry(a).unwrap(), parse_entry(&b).unwrap());
        assert_eq!(ea, eb);
        assert_eq!(key_hash(a), key_hash(&b));
        assert_ne!(key_hash(a), key_hash(&a.replace("sport=40000", "sport=40001")));
        assert_eq!(ea.state, "ESTABLISHED");
        assert!(ea.assured);
        assert_eq!(ea.src, "172.16.2.10".parse::<IpAddr>().unwrap());
        let udp = parse_entry("udp      17 20 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 [UNREPLIED] src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 mark=0 use=1").unwrap();
        assert_eq!(udp.state, "");
        assert!(!udp.assured);
    }
}
