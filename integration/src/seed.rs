//! The incident's conntrack table, rebuilt as a `conntrack -R` file: the write-up's per-state
//! TCP counts, 240,000 of the ESTABLISHED entries the runaway guest's, the rest spread over
//! other guests. The lab loads it into its host namespace; `scripts/bench` loads it into its
//! scratch namespace (through `ctguard-lab seed-table FILE`).
//!
//! Every line is one `conntrack -I` of a TCP entry with a distinct original tuple, so a load
//! into an empty table inserts them all (a clash would make `conntrack -R` fail with EEXIST).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::Ipv4Addr;
use std::path::Path;

use crate::topology::RUNAWAY;

/// The per-state TCP count of the incident's `/proc/net/nf_conntrack`, in the order the table
/// is loaded. The order matters a little: over 95 % of `nf_conntrack_max` the kernel's GC
/// early-drops unassured and closing-state entries, so which states arrive last decides how
/// many a load into a table near the global max loses. This is the order the bench's earlier
/// measurements used.
pub const STATES: [(&str, u32); 8] = [
    ("LAST_ACK", 36),
    ("SYN_RECV", 52),
    ("CLOSE_WAIT", 350),
    ("CLOSE", 844),
    ("ESTABLISHED", 246_265),
    ("FIN_WAIT", 4),
    ("SYN_SENT", 993),
    ("TIME_WAIT", 9_996),
];

/// How many entries the table holds: the sum of [`STATES`].
pub const ENTRIES: u64 = 258_540;

/// How many of the ESTABLISHED entries are the runaway guest's (all of its entries are).
pub const RUNAWAY_ESTABLISHED: u32 = 240_000;

/// The other guests: 172.16.1.0/24 to 172.16.8.0/24, hosts .2 to .39, without the runaway
/// guest. Eight subnets, so that grouping by subnet has real work to do.
fn other_guests() -> Vec<Ipv4Addr> {
    (1..=8u8)
        .flat_map(|subnet| (2..40u8).map(move |host| Ipv4Addr::new(172, 16, subnet, host)))
        .filter(|a| *a != RUNAWAY.v4)
        .collect()
}

/// One entry of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub src: Ipv4Addr,
    /// 10.x.y.z from the entry's number: distinct for every entry, so every tuple is.
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub state: &'static str,
    /// Seconds. ESTABLISHED gets the tuned 3600 s of the write-up; every other state 3000 s,
    /// so that no entry times out during a bench or a replay (their real timeouts are 2 s to
    /// 2 min).
    pub timeout: u32,
    /// `-u ASSURED`: both directions were seen. Set for every state a real connection reaches
    /// only after the handshake; not for SYN_SENT and SYN_RECV, which the kernel's packet path
    /// may then evict to make room, as it did during the incident.
    pub assured: bool,
}

impl Entry {
    /// The `conntrack -R` line (the arguments of one `conntrack -I`).
    pub fn write_line(&self, w: &mut impl Write) -> io::Result<()> {
        write!(
            w,
            "-I -p tcp -s {} -d {} --sport {} --dport 443 --state {} -t {}",
            self.src, self.dst, self.sport, self.state, self.timeout
        )?;
        if self.assured {
            w.write_all(b" -u ASSURED")?;
        }
        w.write_all(b"\n")
    }
}

/// The table's entries, in load order: [`ENTRIES`] of them, computed as they are taken.
pub fn entries() -> impl Iterator<Item = Entry> {
    let guests = other_guests();
    // A fixed seed: the same spread of entries over the other guests on every run and every
    // machine.
    let mut rng = fastrand::Rng::with_seed(7);
    let mut n: u32 = 0;
    STATES.into_iter().flat_map(|(state, count)| (0..count).map(move |i| (state, i))).map(
        move |(state, i)| {
            n += 1;
            let src = if state == "ESTABLISHED" && i < RUNAWAY_ESTABLISHED {
                RUNAWAY.v4
            } else {
                guests[rng.usize(..guests.len())]
            };
            let [_, b, c, d] = n.to_be_bytes();
            Entry {
                src,
                dst: Ipv4Addr::new(10, b, c, d),
                sport: 1024 + (n % 60_000) as u16,
                state,
                timeout: if state == "ESTABLISHED" { 3600 } else { 3000 },
                assured: !matches!(state, "SYN_SENT" | "SYN_RECV"),
            }
        },
    )
}

/// The incident's table with only the first `runaway` of the runaway guest's 240,000
/// ESTABLISHED entries: every other guest's entries as in [`entries`]. The guard's lab test
/// loads a table this way to a chosen fill below the guard's `high`, so that crossing it is
/// the runaway's own doing.
pub fn entries_with_runaway(runaway: u32) -> impl Iterator<Item = Entry> {
    let mut kept = 0u32;
    entries().filter(move |e| {
        if e.src != RUNAWAY.v4 {
            return true;
        }
        kept += 1;
        kept <= runaway
    })
}

/// Writes the table to `w`; returns how many entries it wrote.
pub fn write(w: impl Write) -> io::Result<u64> {
    write_entries(w, entries())
}

/// Writes `entries` to `w` as `conntrack -R` lines; returns how many it wrote.
pub fn write_entries(w: impl Write, entries: impl Iterator<Item = Entry>) -> io::Result<u64> {
    let mut w = BufWriter::new(w);
    let mut written = 0;
    for e in entries {
        e.write_line(&mut w)?;
        written += 1;
    }
    w.flush()?;
    Ok(written)
}

/// Writes the table to a new file at `path` (an existing file is replaced).
pub fn write_file(path: &Path) -> Result<u64, String> {
    write_file_of(path, entries())
}

/// Writes `entries` to a new file at `path` (an existing file is replaced).
pub fn write_file_of(path: &Path, entries: impl Iterator<Item = Entry>) -> Result<u64, String> {
    let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    write_entries(file, entries).map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;

    #[test]
    fn issue_9_1_the_table_has_the_write_ups_per_state_counts() {
        let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
        let mut runaway_states: BTreeMap<&str, u64> = BTreeMap::new();
        let mut tuples = HashSet::new();
        let mut total = 0u64;
        for e in entries() {
            total += 1;
            *by_state.entry(e.state).or_default() += 1;
            if e.src == RUNAWAY.v4 {
                *runaway_states.entry(e.state).or_default() += 1;
            }
            assert!(tuples.insert((e.src, e.dst, e.sport)), "duplicate tuple {e:?}");
            assert_eq!(e.src.octets()[..2], [172, 16], "{e:?}");
        }
        assert_eq!(total, ENTRIES);
        assert_eq!(STATES.iter().map(|(_, c)| u64::from(*c)).sum::<u64>(), ENTRIES);
        let want: BTreeMap<&str, u64> = [
            ("ESTABLISHED", 246_265),
            ("TIME_WAIT", 9_996),
            ("SYN_SENT", 993),
            ("CLOSE", 844),
            ("CLOSE_WAIT", 350),
            ("SYN_RECV", 52),
            ("LAST_ACK", 36),
            ("FIN_WAIT", 4),
        ]
        .into();
        assert_eq!(by_state, want);
        // Every flow of the runaway guest is ESTABLISHED (the bench's four eviction rows
        // delete the same 240,000).
        assert_eq!(runaway_states, [("ESTABLISHED", 240_000)].into());
    }

    #[test]
    fn issue_9_1_the_other_guests_share_the_rest_over_eight_subnets() {
        let mut per_guest: BTreeMap<Ipv4Addr, u64> = BTreeMap::new();
        for e in entries().filter(|e| e.src != RUNAWAY.v4) {
            *per_guest.entry(e.src).or_default() += 1;
        }
        assert_eq!(per_guest.len(), 8 * 38 - 1, "every other guest holds entries");
        let subnets: HashSet<u8> = per_guest.keys().map(|a| a.octets()[2]).collect();
        assert_eq!(subnets.len(), 8);
        // 18,540 entries over 303 guests: about 61 each; none comes near the runaway guest.
        let most = per_guest.values().max().copied().unwrap_or_default();
        assert!((61..200).contains(&most), "the busiest other guest holds {most}");
    }

    #[test]
    fn issue_13_a_smaller_runaway_keeps_every_other_guests_entries() {
        let all: Vec<Entry> = entries().collect();
        let some: Vec<Entry> = entries_with_runaway(1000).collect();
        assert_eq!(some.len() as u64, ENTRIES - u64::from(RUNAWAY_ESTABLISHED) + 1000);
        assert_eq!(some.iter().filter(|e| e.src == RUNAWAY.v4).count(), 1000);
        let others =
            |v: &[Entry]| v.iter().filter(|e| e.src != RUNAWAY.v4).copied().collect::<Vec<_>>();
        assert_eq!(others(&some), others(&all));
        assert_eq!(entries_with_runaway(RUNAWAY_ESTABLISHED).count() as u64, ENTRIES);
    }

    #[test]
    fn issue_9_1_lines_are_conntrack_r_inserts() {
        let mut text = Vec::new();
        assert_eq!(write(&mut text).unwrap(), ENTRIES);
        let text = String::from_utf8(text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() as u64, ENTRIES);
        let first = entries().next().unwrap();
        assert_eq!(
            lines[0],
            format!(
                "-I -p tcp -s {} -d 10.0.0.1 --sport 1025 --dport 443 --state LAST_ACK -t 3000 -u ASSURED",
                first.src
            )
        );
        let est = lines.iter().find(|l| l.contains("ESTABLISHED")).unwrap();
        assert!(est.starts_with("-I -p tcp -s 172.16.3.5 -d "), "{est}");
        assert!(est.ends_with(" --dport 443 --state ESTABLISHED -t 3600 -u ASSURED"), "{est}");
        let syn = lines.iter().find(|l| l.contains("SYN_SENT")).unwrap();
        assert!(syn.ends_with(" --state SYN_SENT -t 3000"), "unassured: {syn}");
        // The same table on every run.
        let again: Vec<Entry> = entries().take(1000).collect();
        assert_eq!(again, entries().take(1000).collect::<Vec<_>>());
    }
}
