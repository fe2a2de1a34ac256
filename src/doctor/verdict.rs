//! Doctor's verdict: healthy, at risk or full, decided from the [`Facts`] (fill, the counters
//! over a window, the ESTABLISHED timeout, the kernel log), with the reasons, worst first.

use serde::{Deserialize, Serialize};

use crate::kmsg::{Attribution, TableFullLine, Target};
use crate::stats::{CounterWindow, Fill};

/// At risk at this fill, whatever else holds: a burst of a few thousand flows from one guest
/// then fills the table before anyone looks.
pub const AT_RISK_FILL: f64 = 80.0;
/// An ESTABLISHED timeout this long (a day or more; the default is 5 days) means the table
/// drains only by deletes: the kernel never early-drops ESTABLISHED entries.
pub const LONG_ESTABLISHED: u64 = 86_400;
/// ...and with such a timeout, half full is already at risk: one guest doubling its
/// connections fills the table, and nothing frees it.
pub const LONG_ESTABLISHED_FILL: f64 = 50.0;
/// `drop` also counts packets a protocol tracker refused and failed allocations; it means a
/// full table when the table is this full (at the limit, entries come and go in the window).
pub const DROP_MEANS_FULL: f64 = 90.0;
/// A "table full" line for this namespace younger than this (seconds), with the table still
/// at least [`STILL_FULL`] % full, is full now even if nothing dropped inside the window (the
/// guest that filled it paused): the kernel's GC also treats 95 % as "near full".
pub const JUST_DROPPED: u64 = 60;
/// See [`JUST_DROPPED`].
pub const STILL_FULL: f64 = 95.0;
/// A "table full" kernel line younger than this (seconds) means the table was full recently.
pub const RECENT_LOG: u64 = 600;

/// The sysctls doctor reports (names under `net.netfilter.`).
pub const WATCHED_SYSCTLS: [&str; 11] = [
    "nf_conntrack_max",
    "nf_conntrack_buckets",
    "nf_conntrack_count",
    "nf_conntrack_tcp_timeout_established",
    "nf_conntrack_tcp_timeout_time_wait",
    "nf_conntrack_tcp_timeout_close_wait",
    "nf_conntrack_tcp_timeout_fin_wait",
    "nf_conntrack_events",
    "nf_conntrack_acct",
    "nf_conntrack_timestamp",
    "nf_conntrack_tcp_loose",
];

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Nothing to do.
    Healthy,
    /// Not full now, but close to it, unable to drain, recently full, or dropping packets for
    /// another reason (a protocol tracker, insert clashes, over-long hash chains).
    AtRisk,
    /// At its limit now: new flows are dropped or survive only by early drop.
    Full,
}

impl Verdict {
    /// As in JSON: `healthy`, `at-risk`, `full`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::AtRisk => "at-risk",
            Verdict::Full => "full",
        }
    }
}

/// The kernel log's "table full" lines, attributed to the target namespace.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogSummary {
    /// `/dev/kmsg` could be read; else `error` says why.
    pub readable: bool,
    /// Why it could not.
    pub error: Option<String>,
    /// Lines for the target namespace.
    pub ours: u64,
    /// The newest of them.
    pub last: Option<TableFullLine>,
    /// Lines of another namespace: naming it, or in the classic wording of the initial
    /// namespace when the target is not that one.
    pub other: u64,
    /// Classic lines that cannot be placed (the kernel does not name namespaces, or this
    /// namespace cannot be told to be the initial one): possibly ours.
    pub unattributed: u64,
    /// The newest unattributed line.
    pub last_unattributed: Option<TableFullLine>,
}

impl LogSummary {
    /// Counts one line.
    pub fn add(&mut self, line: TableFullLine, target: &Target) {
        match target.attribute(&line) {
            Attribution::Ours => {
                self.ours += 1;
                self.last = Some(line);
            }
            Attribution::Other => self.other += 1,
            Attribution::Unattributed => {
                self.unattributed += 1;
                self.last_unattributed = Some(line);
            }
        }
    }
}

/// What the verdict is decided from.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Count, max, fill.
    pub fill: Fill,
    /// The counters over the window.
    pub counters: CounterWindow,
    /// `nf_conntrack_tcp_timeout_established` of the namespace.
    pub established_timeout: Option<u64>,
    /// The kernel log.
    pub log: LogSummary,
    /// Now, microseconds on the kernel log's clock.
    pub now_usec: u64,
}

pub(crate) fn age_secs(line: &TableFullLine, now_usec: u64) -> u64 {
    now_usec.saturating_sub(line.usec) / 1_000_000
}

/// The verdict and the reasons for it, worst first.
pub fn verdict(f: &Facts) -> (Verdict, Vec<String>) {
    let mut full = Vec::new();
    let mut risk = Vec::new();
    let secs = f.counters.seconds;
    let fill = f.fill.fill_percent;
    let rise = f.counters.rise();
    let drop = rise.drop;
    if drop > 0 && fill >= DROP_MEANS_FULL {
        full.push(format!(
            "drop rose by {drop} in {secs:.1} s: new flows are dropped now (the table is full)"
        ));
    } else if drop > 0 {
        risk.push(format!(
            "drop rose by {drop} in {secs:.1} s with the table only {fill:.1}% full: a protocol \
             tracker or a failed allocation dropped packets, not a full table"
        ));
    }
    let early = rise.early_drop;
    if early > 0 {
        full.push(format!(
            "early_drop rose by {early} in {secs:.1} s: the table is at its limit; new flows \
             get in only by evicting unreplied entries"
        ));
    }
    let (count, max) = (u64::from(f.fill.count), u64::from(f.fill.max));
    if max > 0 && count >= max {
        full.push(format!("{count} of {max} entries: the table is full"));
    }
    if fill >= AT_RISK_FILL && count < max {
        risk.push(format!("the table is {fill:.1}% full (at risk from {AT_RISK_FILL:.0}%)"));
    }
    if let Some(est) = f.established_timeout
        && est >= LONG_ESTABLISHED
        && (LONG_ESTABLISHED_FILL..AT_RISK_FILL).contains(&fill)
    {
        risk.push(format!(
            "the table is {fill:.1}% full and ESTABLISHED entries live {est} s: the kernel \
             never early-drops them, so only deletes or that timeout free the table"
        ));
    }
    let failed = rise.insert_failed;
    if failed > 0 {
        risk.push(format!(
            "insert_failed rose by {failed}: packets dropped on confirm-time clashes (not a \
             full table)"
        ));
    }
    let chain = rise.chaintoolong;
    if chain > 0 {
        risk.push(format!(
            "chaintoolong rose by {chain}: inserts refused for over-long hash chains (too few \
             buckets, or hash flooding)"
        ));
    }
    // A namespace inode is reused once its namespace is gone, so a line naming ours may be an
    // earlier namespace's. A table-full drop in this namespace also counts `drop`, whose
    // per-namespace sum starts at 0: without one, the lines are not this namespace's.
    let dropped_ever = f.counters.after.drop > 0;
    if let Some(line) = &f.log.last
        && dropped_ever
        && full.is_empty()
    {
        let age = age_secs(line, f.now_usec);
        if age <= JUST_DROPPED && fill >= STILL_FULL {
            full.push(format!(
                "the kernel logged \"table full\" for this namespace {age} s ago and the table \
                 is still {fill:.1}% full"
            ));
        } else if age <= RECENT_LOG {
            risk.push(format!(
                "the kernel logged \"table full\" for this namespace {age} s ago ({} such lines \
                 in the log)",
                f.log.ours
            ));
        }
    }
    if let Some(line) = &f.log.last_unattributed
        && dropped_ever
        && full.is_empty()
    {
        let age = age_secs(line, f.now_usec);
        if age <= RECENT_LOG {
            risk.push(format!(
                "the kernel logged \"table full\" {age} s ago; this kernel does not say for \
                 which namespace, so it may be this one"
            ));
        }
    }
    if !full.is_empty() {
        full.extend(risk);
        (Verdict::Full, full)
    } else if !risk.is_empty() {
        (Verdict::AtRisk, risk)
    } else {
        (Verdict::Healthy, vec![format!("the table is {fill:.1}% full and no counter rose")])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::stats::CpuStats;

    pub(crate) fn fill(count: u32, max: u32) -> Fill {
        Fill::new(crate::stats::TableStats { count, max }, Some(u64::from(max)))
    }

    pub(crate) fn quiet(count: u32, max: u32) -> Facts {
        Facts {
            fill: fill(count, max),
            counters: CounterWindow { seconds: 1.0, cpus: 2, ..CounterWindow::default() },
            established_timeout: Some(3600),
            log: LogSummary { readable: true, ..LogSummary::default() },
            now_usec: 10_000_000_000,
        }
    }

    pub(crate) fn rising(f: &mut Facts, set: impl Fn(&mut CpuStats)) {
        set(&mut f.counters.after);
    }

    #[test]
    fn quiet_table_is_healthy() {
        let (v, why) = verdict(&quiet(1000, 262_144));
        assert_eq!(v, Verdict::Healthy);
        assert!(why[0].contains("0.4% full"), "{why:?}");
    }

    #[test]
    fn rising_drop_or_early_drop_or_count_at_max_is_full() {
        let mut f = quiet(240_000, 262_144); // 91.6 %
        f.counters.before.drop = 4_294_967_290; // wraps
        rising(&mut f, |c| c.drop = 5);
        let (v, why) = verdict(&f);
        assert_eq!(v, Verdict::Full);
        assert!(why[0].starts_with("drop rose by 11 in 1.0 s"), "{why:?}");

        let mut f = quiet(262_100, 262_144);
        rising(&mut f, |c| c.early_drop = 3);
        let (v, why) = verdict(&f);
        assert_eq!(v, Verdict::Full);
        assert!(why[0].starts_with("early_drop rose by 3"));
        assert!(why.iter().any(|w| w.contains("100.0% full")), "{why:?}");

        assert_eq!(verdict(&quiet(262_144, 262_144)).0, Verdict::Full);
        // Drops with a nearly empty table are not a full table.
        let mut f = quiet(1000, 262_144);
        rising(&mut f, |c| c.drop = 9);
        let (v, why) = verdict(&f);
        assert_eq!(v, Verdict::AtRisk);
        assert!(why[0].contains("only 0.4% full"), "{why:?}");
        // A drop counter that is high but not rising says nothing about now.
        let mut f = quiet(1000, 262_144);
        f.counters.before.drop = 500;
        f.counters.after.drop = 500;
        assert_eq!(verdict(&f).0, Verdict::Healthy);
    }

    #[test]
    fn at_risk_thresholds() {
        assert_eq!(verdict(&quiet(209_716, 262_144)).0, Verdict::AtRisk); // 80.0 %
        assert_eq!(verdict(&quiet(209_000, 262_144)).0, Verdict::Healthy); // 79.7 %, 1 h
        let mut long = quiet(131_072, 262_144); // 50 %
        long.established_timeout = Some(432_000);
        let (v, why) = verdict(&long);
        assert_eq!(v, Verdict::AtRisk);
        assert!(why[0].contains("ESTABLISHED entries live 432000 s"), "{why:?}");
        long.fill = fill(130_000, 262_144);
        assert_eq!(verdict(&long).0, Verdict::Healthy);
        for field in ["insert_failed", "chaintoolong"] {
            let mut f = quiet(10, 262_144);
            rising(&mut f, |c| match field {
                "insert_failed" => c.insert_failed = 1,
                _ => c.chaintoolong = 2,
            });
            let (v, why) = verdict(&f);
            assert_eq!(v, Verdict::AtRisk, "{field}");
            assert!(why[0].starts_with(field));
        }
    }

    #[test]
    fn recent_log_lines_of_this_namespace_are_at_risk_old_ones_are_not() {
        let target = Target { inode: 4_026_532_290, initial: Some(false), names_netns: true };
        let line = |usec: u64, ns: u64| TableFullLine {
            seq: 1,
            usec,
            netns: Some(ns),
            text: format!("nf_conntrack: nf_conntrack: table full in netns {ns}, dropping packet"),
        };
        let mut f = quiet(10, 262_144);
        f.log.add(line(9_900_000_000, 4_026_532_999), &target);
        assert_eq!(verdict(&f).0, Verdict::Healthy, "another namespace's line");
        assert_eq!(f.log.other, 1);
        f.log.add(line(9_000_000_000, 4_026_532_290), &target);
        assert_eq!((f.log.ours, verdict(&f).0), (1, Verdict::Healthy), "1000 s old");
        f.log.add(line(9_880_000_000, 4_026_532_290), &target);
        assert_eq!(verdict(&f).0, Verdict::Healthy, "this namespace never dropped: inode reused");
        f.counters.before.drop = 7;
        f.counters.after.drop = 7;
        let (v, why) = verdict(&f);
        assert_eq!(v, Verdict::AtRisk);
        assert!(why[0].contains("120 s ago (2 such lines"), "{why:?}");
        // 20 s ago, and the table is still 96 % full: full now.
        f.log.add(line(9_980_000_000, 4_026_532_290), &target);
        f.fill = fill(252_000, 262_144);
        let (v, why) = verdict(&f);
        assert_eq!(v, Verdict::Full);
        assert!(why[0].contains("20 s ago and the table is still 96.1% full"), "{why:?}");
        f.fill = fill(200_000, 262_144);
        assert_eq!(verdict(&f).0, Verdict::AtRisk, "emptied since");
    }
}
