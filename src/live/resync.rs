//! When the live table is rebuilt from a dump, and what the rebuild replays: the resync and
//! reconcile decisions of the live engine ([`super::watcher`]). Pure: the clock is passed in,
//! the dump is the caller's; tests feed them vectors.
//!
//! A resync is wanted at the start (the seed), after an overrun (events were lost), on the
//! reconciliation period, and when the held count disagrees with the kernel's entry count
//! beyond churn. From the moment a dump is asked for (or, after an overrun, from the fresh
//! subscription on) every change is kept, to replay on the dump's result.

use std::time::{Duration, Instant};

use super::{Change, LiveTable};

/// After a resync, how long a disagreement with the kernel's count waits before it starts a
/// dump of its own; doubled while the disagreement outlives the dumps (a difference no dump
/// explains must not dump in a loop), back to this once the counts agree.
pub const MISMATCH_HOLDOFF: Duration = Duration::from_secs(1);

/// Why a resync runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The seed, right after subscribing.
    Start,
    /// Events were lost (ENOBUFS).
    Overrun,
    /// The reconciliation period came round.
    Reconcile,
    /// The held count disagrees with the kernel's entry count beyond churn.
    Mismatch,
}

impl Reason {
    /// `start`, `overrun`, `reconcile` or `mismatch` (the wire name).
    pub fn name(self) -> &'static str {
        match self {
            Reason::Start => "start",
            Reason::Overrun => "overrun",
            Reason::Reconcile => "reconcile",
            Reason::Mismatch => "mismatch",
        }
    }
}

/// A dump running for a resync.
#[derive(Debug, Clone, Copy)]
struct Running {
    reason: Reason,
    started: Instant,
    /// An overrun happened since it started: events it needs are lost, another dump follows.
    stale: bool,
}

/// A resync done: the table now holds a fresh dump and the changes received during it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resynced {
    /// Why it ran.
    pub reason: Reason,
    /// Selected flows held after it.
    pub matched: u64,
    /// Flows the count changed by against the event-kept count it replaced (0 at start).
    pub corrected: i64,
    /// Changes received while the dump ran, applied on top of it.
    pub replayed: u64,
    /// How long the dump and replay took.
    pub took: Duration,
}

/// The resyncs of the live table: the one wanted, the dump running, and the changes received
/// since that dump (or the subscription it follows an overrun on) started, to replay on it.
#[derive(Debug)]
pub struct Resyncs {
    want: Option<Reason>,
    running: Option<Running>,
    pending: Vec<Change>,
    buffering: bool,
    done: u64,
    /// The last snapshot's held count disagreed with the kernel's count.
    mismatch: bool,
    /// A disagreement may start a dump (not with `--reconcile off`).
    dump_on_mismatch: bool,
    /// When the last resync finished, and how long a disagreement then waits.
    last_done: Instant,
    holdoff: Duration,
    max_holdoff: Duration,
}

impl Resyncs {
    /// The first resync, the seed, is wanted; the subscription is already open. `reconcile`
    /// is the reconciliation period, `None` when off.
    pub fn new(reconcile: Option<Duration>, now: Instant) -> Resyncs {
        Resyncs {
            want: Some(Reason::Start),
            running: None,
            pending: Vec::new(),
            buffering: true,
            done: 0,
            mismatch: false,
            dump_on_mismatch: reconcile.is_some(),
            last_done: now,
            holdoff: MISMATCH_HOLDOFF,
            max_holdoff: reconcile.unwrap_or(MISMATCH_HOLDOFF).max(MISMATCH_HOLDOFF),
        }
    }

    /// No resync pending or running.
    pub fn idle(&self) -> bool {
        self.want.is_none() && self.running.is_none()
    }

    /// No resync pending or running, and the held count agrees with the kernel's: the counts
    /// are as exact as events make them.
    pub fn synced(&self) -> bool {
        self.idle() && !self.mismatch
    }

    /// Why the counts are not in sync: the resync running or wanted, else a disagreement.
    pub fn reason(&self) -> Option<Reason> {
        match (&self.running, self.want) {
            (Some(r), _) => Some(r.reason),
            (None, Some(w)) => Some(w),
            (None, None) => self.mismatch.then_some(Reason::Mismatch),
        }
    }

    /// Resyncs done so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Compares the held count with the kernel's entry count (GET_STATS) at a snapshot; a
    /// disagreement beyond churn is said (not synced) and, unless reconciling is off, starts a
    /// dump now instead of at the next period.
    pub fn check(
        &mut self,
        held: u64,
        table_count: u64,
        selects_all: bool,
        events_per_s: f64,
        now: Instant,
    ) {
        let band = super::churn_band(events_per_s);
        self.mismatch = super::disagrees(held, table_count, selects_all, band);
        if !self.mismatch {
            self.holdoff = MISMATCH_HOLDOFF;
            return;
        }
        let waited = now.saturating_duration_since(self.last_done);
        if self.dump_on_mismatch && self.idle() && waited >= self.holdoff {
            self.want = Some(Reason::Mismatch);
            self.holdoff = (self.holdoff * 2).min(self.max_holdoff);
        }
    }

    /// The dump to start now: the wanted one, unless one runs. From here on every change is
    /// kept for it ([`Resyncs::record`]).
    pub fn start(&mut self, now: Instant) -> Option<Reason> {
        if self.running.is_some() {
            return None;
        }
        let reason = self.want.take()?;
        if !self.buffering {
            self.pending.clear();
            self.buffering = true;
        }
        self.running = Some(Running { reason, started: now, stale: false });
        Some(reason)
    }

    /// Keeps a change applied to the table, when a dump will need it replayed.
    pub fn record(&mut self, change: Change) {
        if self.buffering {
            self.pending.push(change);
        }
    }

    /// Events were lost; a fresh subscription is open. Changes from now on are replayed on
    /// the next dump; a dump running now misses the lost ones and is thrown away.
    pub fn overrun(&mut self) {
        self.pending.clear();
        self.buffering = true;
        self.want = Some(Reason::Overrun);
        if let Some(r) = self.running.as_mut() {
            r.stale = true;
        }
    }

    /// Asks for a reconciliation dump unless a resync is pending anyway.
    pub fn reconcile(&mut self) {
        if self.idle() {
            self.want = Some(Reason::Reconcile);
        }
    }

    /// Takes the finished dump: replaces the table and replays the pending changes, unless
    /// the dump went stale (then its result, or its error, no longer matters: the next dump
    /// follows). Returns the resync done.
    pub fn finish<E>(
        &mut self,
        fresh: Result<LiveTable, E>,
        table: &mut LiveTable,
        now: Instant,
    ) -> Result<Option<Resynced>, E> {
        let Some(run) = self.running.take() else { return Ok(None) };
        if run.stale {
            return Ok(None);
        }
        let fresh = fresh?;
        let before = table.len() as i64;
        let replayed = self.pending.len() as u64;
        table.replace_with(fresh, &self.pending);
        self.pending.clear();
        self.buffering = false;
        self.done += 1;
        self.last_done = now;
        // A fresh dump is the truth; the next snapshot compares again.
        self.mismatch = false;
        let matched = table.len() as u64;
        Ok(Some(Resynced {
            reason: run.reason,
            matched,
            corrected: if run.reason == Reason::Start { 0 } else { matched as i64 - before },
            replayed,
            took: now.saturating_duration_since(run.started),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind::{Destroy, New};
    use crate::flow::{Flow, TcpState, test_tcp};
    use crate::guests::GuestMap;
    use crate::live::Classifier;
    use crate::select::Selector;
    use crate::tally::GroupBy;

    fn flow(id: u32, sport: u16) -> Flow {
        Flow {
            id: Some(id),
            ..test_tcp("172.16.3.5", "10.9.0.1", sport, 443, TcpState::Established)
        }
    }

    fn classifier() -> Classifier {
        Classifier::new(Selector::default(), GroupBy::Src, GuestMap::new())
    }

    fn dumped(c: &Classifier, flows: &[Flow]) -> LiveTable {
        let mut t = c.empty_table();
        for f in flows {
            if let Some(p) = c.place(f) {
                t.seed(f.identity(), p);
            }
        }
        t
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn issue_11_1_the_seed_replays_what_arrived_during_the_dump() {
        let (c, t0) = (classifier(), Instant::now());
        let mut r = Resyncs::new(Some(Duration::from_secs(30)), t0);
        assert_eq!(r.reason(), Some(Reason::Start));
        assert!(!r.synced());
        let mut table = c.empty_table();
        assert_eq!(r.start(t0), Some(Reason::Start));
        assert_eq!(r.start(t0), None, "one dump at a time");
        // While the dump runs: 3 is created, 1 ends.
        for change in [c.change(New, &flow(3, 3)), c.change(Destroy, &flow(1, 1))] {
            table.apply(&change);
            r.record(change);
        }
        let fresh = dumped(&c, &[flow(1, 1), flow(2, 2)]);
        let done = r.finish::<()>(Ok(fresh), &mut table, secs(t0, 2)).unwrap().unwrap();
        assert_eq!(
            done,
            Resynced {
                reason: Reason::Start,
                matched: 2,
                corrected: 0,
                replayed: 2,
                took: Duration::from_secs(2)
            }
        );
        assert_eq!(table.len(), 2, "2 from the dump, 3 from the events, 1 gone");
        assert!(r.synced() && r.reason().is_none());
        assert_eq!(r.done(), 1);
        // Once synced, changes are not kept: nothing would replay them.
        r.record(c.change(New, &flow(4, 4)));
        assert!(r.pending.is_empty());
    }

    #[test]
    fn issue_11_1_an_overrun_during_a_dump_throws_it_away_and_dumps_again() {
        let (c, t0) = (classifier(), Instant::now());
        let mut r = Resyncs::new(Some(Duration::from_secs(30)), t0);
        let mut table = c.empty_table();
        r.start(t0);
        r.record(c.change(New, &flow(1, 1)));
        r.overrun();
        assert!(r.pending.is_empty(), "changes before the loss are worthless");
        assert_eq!(r.reason(), Some(Reason::Start), "the running dump says why, until it ends");
        // The stale dump's result, even an error, is dropped.
        assert_eq!(r.finish(Err("overrun"), &mut table, secs(t0, 1)), Ok(None));
        assert_eq!(r.reason(), Some(Reason::Overrun));
        assert_eq!(r.start(secs(t0, 1)), Some(Reason::Overrun));
        r.record(c.change(New, &flow(2, 2)));
        let done = r.finish::<()>(Ok(dumped(&c, &[flow(1, 1)])), &mut table, secs(t0, 3));
        let done = done.unwrap().unwrap();
        assert_eq!(
            (done.reason, done.matched, done.corrected, done.replayed),
            (Reason::Overrun, 2, 2, 1)
        );
        assert_eq!(r.done(), 1);
    }

    #[test]
    fn issue_11_1_a_mismatch_dumps_after_a_holdoff_that_doubles_up_to_the_period() {
        let (c, t0) = (classifier(), Instant::now());
        let mut r = Resyncs::new(Some(Duration::from_secs(5)), t0);
        let mut table = c.empty_table();
        r.start(t0);
        r.finish::<()>(Ok(c.empty_table()), &mut table, t0).unwrap();
        // Within the band: in sync.
        r.check(0, 64, true, 0.0, secs(t0, 10));
        assert!(r.synced());
        // Beyond it, but within the hold-off after the last resync: said, not dumped.
        r.check(0, 1_000, true, 0.0, t0 + Duration::from_millis(500));
        assert!(!r.synced() && r.idle());
        assert_eq!(r.reason(), Some(Reason::Mismatch));
        // Each dump that leaves the disagreement doubles the wait: 1 s, 2 s, 4 s, then 5 s.
        let mut at = t0;
        for wait in [1, 2, 4, 5, 5] {
            r.check(0, 1_000, true, 0.0, secs(at, wait - 1));
            assert!(r.idle(), "not before {wait} s");
            r.check(0, 1_000, true, 0.0, secs(at, wait));
            assert_eq!(r.start(secs(at, wait)), Some(Reason::Mismatch), "after {wait} s");
            at = secs(at, wait);
            r.finish::<()>(Ok(c.empty_table()), &mut table, at).unwrap();
        }
        // Agreement resets the hold-off.
        r.check(0, 0, true, 0.0, at);
        r.check(0, 1_000, true, 0.0, secs(at, 1));
        assert_eq!(r.start(secs(at, 1)), Some(Reason::Mismatch));
    }

    #[test]
    fn issue_11_1_reconcile_off_says_a_mismatch_and_never_dumps_for_it() {
        let (c, t0) = (classifier(), Instant::now());
        let mut r = Resyncs::new(None, t0);
        let mut table = c.empty_table();
        r.start(t0);
        r.finish::<()>(Ok(c.empty_table()), &mut table, t0).unwrap();
        r.check(0, 1_000, true, 0.0, secs(t0, 3_600));
        assert_eq!(r.reason(), Some(Reason::Mismatch));
        assert_eq!(r.start(secs(t0, 3_600)), None);
        // A selection holds at most the table: fewer is no disagreement.
        r.check(10, 1_000, false, 0.0, secs(t0, 3_601));
        assert!(r.synced());
    }

    #[test]
    fn issue_11_1_a_reconcile_waits_for_a_pending_resync() {
        let (c, t0) = (classifier(), Instant::now());
        let mut r = Resyncs::new(Some(Duration::from_secs(30)), t0);
        r.reconcile();
        assert_eq!(r.start(t0), Some(Reason::Start), "the seed is not replaced");
        r.reconcile();
        assert_eq!(r.start(t0), None, "nor is a running dump");
        let mut table = c.empty_table();
        r.finish::<()>(Ok(c.empty_table()), &mut table, t0).unwrap();
        r.reconcile();
        assert_eq!(r.reason(), Some(Reason::Reconcile));
        assert_eq!(r.start(secs(t0, 30)), Some(Reason::Reconcile));
    }
}
