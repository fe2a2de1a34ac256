//! The table's figures: how full it is and what each CPU counted (`conntrack -C`, `conntrack
//! -S`), and what commands report of them: the [`Fill`] of the table, and how far the counters
//! rose in a window.
//!
//! Plain values; `ctnetlink` fills them from `IPCTNL_MSG_CT_GET_STATS` and `GET_STATS_CPU`.
//! [`CounterWindow`] and [`CounterSampler`] are the one place counters become rises and rates
//! per second: `doctor` samples one window, `stats --interval` and the watch view one after
//! another.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Global table figures (`conntrack -C`, read with `IPCTNL_MSG_CT_GET_STATS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableStats {
    /// Entries in this namespace (`nf_conntrack_count`).
    pub count: u32,
    /// The global `nf_conntrack_max`, compared with each namespace's own count.
    pub max: u32,
}

/// Per-CPU counters from `IPCTNL_MSG_CT_GET_STATS_CPU` (what `conntrack -S` prints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuStats {
    /// CPU number (`nfgenmsg.res_id`).
    pub cpu: u16,
    /// Lookups that found an entry.
    pub found: u32,
    /// Packets that could not be tracked.
    pub invalid: u32,
    /// Entries inserted.
    pub insert: u32,
    /// Confirm-time clashes that could not be resolved.
    pub insert_failed: u32,
    /// Packets dropped because no entry could be allocated: the table-full signal.
    pub drop: u32,
    /// Non-assured entries evicted to make room.
    pub early_drop: u32,
    /// Errors.
    pub error: u32,
    /// Lookups restarted.
    pub search_restart: u32,
    /// Clashes resolved.
    pub clash_resolve: u32,
    /// Inserts refused for an over-long hash chain.
    pub chaintoolong: u32,
}

impl CpuStats {
    /// Field names in `conntrack -S` order with their values.
    pub fn fields(&self) -> [(&'static str, u32); 10] {
        [
            ("found", self.found),
            ("invalid", self.invalid),
            ("insert", self.insert),
            ("insert_failed", self.insert_failed),
            ("drop", self.drop),
            ("early_drop", self.early_drop),
            ("error", self.error),
            ("search_restart", self.search_restart),
            ("clash_resolve", self.clash_resolve),
            ("chaintoolong", self.chaintoolong),
        ]
    }

    /// Adds another CPU's counters (wrapping, as the kernel's u32 counters do).
    pub fn add(&mut self, o: &CpuStats) {
        self.found = self.found.wrapping_add(o.found);
        self.invalid = self.invalid.wrapping_add(o.invalid);
        self.insert = self.insert.wrapping_add(o.insert);
        self.insert_failed = self.insert_failed.wrapping_add(o.insert_failed);
        self.drop = self.drop.wrapping_add(o.drop);
        self.early_drop = self.early_drop.wrapping_add(o.early_drop);
        self.error = self.error.wrapping_add(o.error);
        self.search_restart = self.search_restart.wrapping_add(o.search_restart);
        self.clash_resolve = self.clash_resolve.wrapping_add(o.clash_resolve);
        self.chaintoolong = self.chaintoolong.wrapping_add(o.chaintoolong);
    }
}

/// Table fill: count, max, buckets; what `top`, `stats`, `doctor` and `tune` report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fill {
    /// Entries in the namespace.
    pub count: u32,
    /// The global `nf_conntrack_max`.
    pub max: u32,
    /// count / max, in percent.
    pub fill_percent: f64,
    /// Hash buckets (`nf_conntrack_buckets`), when readable.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub buckets: Option<u64>,
}

impl Fill {
    /// From the kernel's stats and the bucket sysctl.
    pub fn new(s: TableStats, buckets: Option<u64>) -> Fill {
        let fill_percent =
            if s.max == 0 { 0.0 } else { (s.count as f64 * 1000.0 / s.max as f64).round() / 10.0 };
        Fill { count: s.count, max: s.max, fill_percent, buckets }
    }
}

impl CpuStats {
    /// The counters of all CPUs added up (the `cpu` number is left 0).
    pub fn sum(cpus: &[CpuStats]) -> CpuStats {
        let mut s = CpuStats::default();
        for c in cpus {
            s.add(c);
        }
        s
    }

    /// How much each counter rose since `before` (wrapping, as the kernel's u32 counters do).
    pub fn since(&self, before: &CpuStats) -> CpuStats {
        CpuStats {
            cpu: self.cpu,
            found: self.found.wrapping_sub(before.found),
            invalid: self.invalid.wrapping_sub(before.invalid),
            insert: self.insert.wrapping_sub(before.insert),
            insert_failed: self.insert_failed.wrapping_sub(before.insert_failed),
            drop: self.drop.wrapping_sub(before.drop),
            early_drop: self.early_drop.wrapping_sub(before.early_drop),
            error: self.error.wrapping_sub(before.error),
            search_restart: self.search_restart.wrapping_sub(before.search_restart),
            clash_resolve: self.clash_resolve.wrapping_sub(before.clash_resolve),
            chaintoolong: self.chaintoolong.wrapping_sub(before.chaintoolong),
        }
    }
}

/// The per-CPU counters, summed over CPUs, at the start and the end of a window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CounterWindow {
    /// Sums at the start.
    pub before: CpuStats,
    /// Sums at the end.
    pub after: CpuStats,
    /// Seconds between the two samples, on the monotonic clock.
    pub seconds: f64,
    /// CPUs that reported.
    pub cpus: usize,
}

/// A window shorter than this is taken as this long when dividing: two readings cannot be
/// closer than a netlink round trip, and a rate over less would be noise.
const SHORTEST_WINDOW: f64 = 1e-3;

impl CounterWindow {
    /// How much each counter rose over the window. The kernel's counters are u32 and wrap,
    /// so a counter that passed 2^32 in the window still rises by what it counted (wrapping
    /// subtraction), not by 0: one wrap per window is told apart, not two.
    pub fn rise(&self) -> CpuStats {
        CpuStats { cpu: 0, ..self.after.since(&self.before) }
    }

    /// Each counter's rise per second over the window, in `conntrack -S` order.
    pub fn per_second(&self) -> [(&'static str, f64); 10] {
        let secs = self.seconds.max(SHORTEST_WINDOW);
        self.rise().fields().map(|(name, rise)| (name, f64::from(rise) / secs))
    }

    /// One counter's rise per second (`|c| c.drop`).
    pub fn rate(&self, counter: fn(&CpuStats) -> u32) -> f64 {
        f64::from(counter(&self.rise())) / self.seconds.max(SHORTEST_WINDOW)
    }
}

/// Windows one after another: each reading closes the window the previous one opened, so no
/// counting is lost between two windows.
#[derive(Debug, Clone, Copy)]
pub struct CounterSampler {
    at: Instant,
    last: CpuStats,
}

impl CounterSampler {
    /// Opens the first window with a reading of every CPU taken at `at`.
    pub fn start(at: Instant, cpus: &[CpuStats]) -> CounterSampler {
        CounterSampler { at, last: CpuStats::sum(cpus) }
    }

    /// Closes the window with a reading taken at `at` and opens the next one there.
    pub fn next(&mut self, at: Instant, cpus: &[CpuStats]) -> CounterWindow {
        let after = CpuStats::sum(cpus);
        let w = CounterWindow {
            before: self.last,
            after,
            seconds: at.saturating_duration_since(self.at).as_secs_f64(),
            cpus: cpus.len(),
        };
        (self.at, self.last) = (at, after);
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn issue_16_6_windows_follow_each_other_and_rates_divide_by_the_real_time() {
        let t0 = Instant::now();
        let cpu = |drop, insert| CpuStats { drop, insert, ..CpuStats::default() };
        let mut s = CounterSampler::start(t0, &[cpu(10, 1), cpu(5, 0)]);
        let w = s.next(t0 + Duration::from_millis(2_000), &[cpu(20, 1), cpu(15, 0)]);
        assert_eq!((w.rise().drop, w.rise().insert, w.cpus), (20, 0, 2));
        assert_eq!(w.seconds, 2.0);
        assert_eq!(w.rate(|c| c.drop), 10.0);
        let per: Vec<_> = w.per_second().iter().map(|(n, _)| *n).collect();
        assert_eq!(per, CpuStats::default().fields().map(|(n, _)| n).to_vec());
        assert_eq!(w.per_second()[4], ("drop", 10.0));
        // The next window starts where this one ended.
        let w = s.next(t0 + Duration::from_millis(2_500), &[cpu(21, 1), cpu(15, 0)]);
        assert_eq!((w.before.drop, w.after.drop, w.rise().drop, w.seconds), (35, 36, 1, 0.5));
        assert_eq!(w.rate(|c| c.drop), 2.0);
    }

    #[test]
    fn issue_16_6_a_counter_that_wraps_still_rises_and_an_empty_window_does_not_divide_by_0() {
        let t0 = Instant::now();
        let mut s =
            CounterSampler::start(t0, &[CpuStats { drop: u32::MAX - 1, ..Default::default() }]);
        let w = s.next(t0 + Duration::from_secs(1), &[CpuStats { drop: 3, ..Default::default() }]);
        assert_eq!(w.rise().drop, 5, "u32::MAX - 1 -> 3 is 5 counted, not 0");
        assert_eq!(w.rate(|c| c.drop), 5.0);
        let w = s.next(t0 + Duration::from_secs(1), &[CpuStats { drop: 4, ..Default::default() }]);
        assert_eq!(w.seconds, 0.0);
        assert_eq!(w.rate(|c| c.drop), 1000.0, "taken as a millisecond");
        // A clock reading older than the window's start is an empty window, not a panic.
        let w = s.next(t0, &[CpuStats { drop: 4, ..Default::default() }]);
        assert_eq!((w.seconds, w.rate(|c| c.drop)), (0.0, 0.0));
    }

    #[test]
    fn issue_11_6_one_sum_and_one_rise_for_doctor_and_stats() {
        let a = CpuStats { cpu: 0, drop: 4_294_967_290, insert: 5, ..CpuStats::default() };
        let b = CpuStats { cpu: 1, drop: 10, early_drop: 2, ..CpuStats::default() };
        let s = CpuStats::sum(&[a, b]);
        assert_eq!(
            (s.cpu, s.drop, s.insert, s.early_drop),
            (0, 4, 5, 2),
            "wrapping, as the kernel"
        );
        let rise = s.since(&a);
        assert_eq!((rise.drop, rise.insert, rise.early_drop), (10, 0, 2));
        assert_eq!(CpuStats::sum(&[]), CpuStats::default());
    }

    #[test]
    fn fill_is_rounded_to_a_tenth_and_an_unlimited_table_is_empty() {
        let f = Fill::new(TableStats { count: 258_540, max: 262_144 }, None);
        assert_eq!(f.fill_percent, 98.6);
        assert_eq!(Fill::new(TableStats { count: 5, max: 0 }, None).fill_percent, 0.0);
    }
}
