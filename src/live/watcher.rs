//! The live engine: subscribe → seed → apply → resync on overrun → reconcile, with its edges
//! injected. The kernel ([`Kernel`]: the subscription, the dump, the entry count) and the
//! shutdown (a future) come from the caller; snapshots, losses and resyncs go to a [`Sink`].
//! `ctguard watch` is a sink that prints; the guard, `/metrics` and the TUI are others.
//!
//! The clock is tokio's: a test on a paused runtime moves it by hand.

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, interval, interval_at};

use super::resync::{Reason, Resynced, Resyncs};
use super::{Classifier, Effect, LiveTable};
use crate::ctnetlink::{
    self, Conntrack, Dumped, EventKind, EventMask, Received, Subscription, TableStats,
};
use crate::flow::Flow;

/// After a read that emptied the socket, events gather this long before the next read: at
/// 100,000 events/s one wakeup then reads ~200 of them instead of one, which divides the
/// wakeups per event. Far fewer events arrive meanwhile than the buffer holds, and nobody sees
/// 2 ms on a 1 s snapshot. See [`gather`].
const GATHER: Duration = Duration::from_millis(2);

/// Lets events gather by pausing the whole (single-threaded) runtime. A tokio sleep would not
/// do: the socket is registered edge-triggered, so each arriving event would wake the
/// runtime's `epoll_wait` while this task sleeps (measured: one context switch per event).
/// Signals and timers wait at most 2 ms; a running dump is on its own thread.
pub fn gather() {
    std::thread::sleep(GATHER);
}

/// A dump running for a resync, on a blocking thread.
pub type DumpTask = JoinHandle<Result<LiveTable, ctnetlink::Error>>;

/// What the engine fails on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel (the subscription, a dump).
    #[error(transparent)]
    Kernel(#[from] ctnetlink::Error),
    /// The dump's thread panicked or was cancelled.
    #[error("dump task: {0}")]
    DumpTask(#[from] tokio::task::JoinError),
}

/// A conntrack event stream: [`Subscription`], or a test's vector.
pub trait Events {
    /// Waits for events and hands each to `each` (see [`Subscription::recv`]).
    fn recv(
        &mut self,
        each: impl FnMut(EventKind, &Flow, Option<u32>),
    ) -> impl Future<Output = Result<Received, ctnetlink::Error>>;
    /// Events the kernel dropped on this stream so far, when it says.
    fn drops(&self) -> Option<u64>;
}

impl Events for Subscription {
    fn recv(
        &mut self,
        each: impl FnMut(EventKind, &Flow, Option<u32>),
    ) -> impl Future<Output = Result<Received, ctnetlink::Error>> {
        Subscription::recv(self, each)
    }

    fn drops(&self) -> Option<u64> {
        Subscription::drops(self)
    }
}

/// The kernel as the engine uses it.
pub trait Kernel {
    /// The event stream.
    type Events: Events;
    /// Subscribes to every event (again after an overrun).
    fn subscribe(&mut self) -> Result<Self::Events, ctnetlink::Error>;
    /// Starts a dump of the flows `classifier` selects into a fresh table.
    fn dump(&mut self, classifier: &Classifier) -> Result<DumpTask, ctnetlink::Error>;
    /// The table's entry count and limit (GET_STATS), when the kernel answers.
    fn table_stats(&mut self) -> Option<TableStats>;
}

/// The kernel of the namespace the thread is in.
pub struct Netns<'a> {
    /// For GET_STATS.
    pub ct: &'a mut Conntrack,
    /// Receive buffer asked for each subscription, in bytes.
    pub rcvbuf: usize,
}

impl Kernel for Netns<'_> {
    type Events = Subscription;

    fn subscribe(&mut self) -> Result<Subscription, ctnetlink::Error> {
        Subscription::open(EventMask::ALL, self.rcvbuf)
    }

    fn dump(&mut self, classifier: &Classifier) -> Result<DumpTask, ctnetlink::Error> {
        spawn_dump(classifier)
    }

    fn table_stats(&mut self) -> Option<TableStats> {
        self.ct.table_stats().ok()
    }
}

/// Dumps the table on a blocking thread into a fresh live table. The socket is opened here,
/// on the thread that entered the namespace. Needs a tokio runtime.
pub fn spawn_dump(classifier: &Classifier) -> Result<DumpTask, ctnetlink::Error> {
    let mut ct = Conntrack::open()?;
    let c = classifier.clone();
    Ok(tokio::task::spawn_blocking(move || {
        let filter = c.selector().kernel_filter();
        let mut fresh = c.empty_table();
        ct.dump_retrying(&filter, |seen| {
            match seen {
                Dumped::Flow(flow, _) => {
                    if let Some(place) = c.place(flow) {
                        fresh.seed(flow.identity(), place);
                    }
                }
                Dumped::Restart => fresh = c.empty_table(),
            }
            ControlFlow::Continue(())
        })?;
        Ok(fresh)
    }))
}

/// Event rates over the last interval, of the selected flows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rates {
    /// Flows that entered the counts per second (NEW).
    pub new_per_s: f64,
    /// Flows that left the counts per second (DESTROY).
    pub destroy_per_s: f64,
    /// Events per second received, all kinds, before the selection.
    pub events_per_s: f64,
}

/// Event counts between snapshots and since the start.
#[derive(Debug, Clone, Copy)]
struct Counters {
    total: u64,
    events: u64,
    added: u64,
    removed: u64,
    overruns: u64,
    since: Instant,
}

impl Counters {
    fn new(now: Instant) -> Counters {
        Counters { total: 0, events: 0, added: 0, removed: 0, overruns: 0, since: now }
    }

    /// Counts one event and what it did to the table.
    fn count(&mut self, kind: EventKind, effect: Effect) {
        self.events += 1;
        self.total += 1;
        match effect {
            Effect::Added if kind == EventKind::New => self.added += 1,
            Effect::Removed if kind == EventKind::Destroy => self.removed += 1,
            _ => {}
        }
    }

    /// Rates since the last call (or the start), then starts a new interval.
    fn rates(&mut self, now: Instant) -> Rates {
        let secs = now.saturating_duration_since(self.since).as_secs_f64().max(1e-3);
        let rate = |n: u64| (n as f64 / secs * 10.0).round() / 10.0;
        let rates = Rates {
            new_per_s: rate(self.added),
            destroy_per_s: rate(self.removed),
            events_per_s: rate(self.events),
        };
        (self.events, self.added, self.removed) = (0, 0, 0);
        self.since = now;
        rates
    }
}

/// One snapshot of the live counts.
pub struct View<'a> {
    /// The held flows and their tally.
    pub table: &'a LiveTable,
    /// The kernel's entry count and limit, read for this snapshot.
    pub stats: Option<TableStats>,
    /// Rates over the last interval.
    pub rates: Rates,
    /// Events received since the start, all kinds, before the selection.
    pub events: u64,
    /// Overruns so far.
    pub overruns: u64,
    /// Resyncs so far.
    pub resyncs: u64,
    /// No resync pending or running, and the held count agrees with the table's.
    pub synced: bool,
    /// Why not synced.
    pub reason: Option<Reason>,
}

/// An overrun: events were lost, a fresh subscription is open and a resync follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overrun {
    /// Overruns so far, this one included.
    pub overruns: u64,
    /// Events dropped so far over all subscriptions, when the kernel reports it.
    pub lost_events: Option<u64>,
}

/// Where the engine hands what it sees.
pub trait Sink {
    /// The sink's error; the engine's own converts into it.
    type Error: From<Error>;
    /// Events were lost.
    fn overrun(&mut self, o: &Overrun) -> Result<(), Self::Error>;
    /// A resync finished.
    fn resynced(&mut self, r: &Resynced) -> Result<(), Self::Error>;
    /// A snapshot: every interval once seeded, and at a [`Shutdown::Deadline`].
    fn snapshot(&mut self, v: &View<'_>) -> Result<(), Self::Error>;
    /// Also take a snapshot right after the seed (a screen draws its first frame then).
    fn snapshot_at_seed(&self) -> bool {
        false
    }
}

/// How the shutdown future ends the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Stop now (a signal).
    Now,
    /// A last snapshot, when seeded, then stop (`--duration`).
    Deadline,
    /// Stop without a word: nobody reads what is left to say (a closed pipe).
    Quiet,
}

/// What the engine needs to know besides its edges.
#[derive(Debug, Clone)]
pub struct Config {
    /// What is counted, and how grouped.
    pub classifier: Classifier,
    /// Between snapshots.
    pub interval: Duration,
    /// The reconciliation period; `None` when off.
    pub reconcile: Option<Duration>,
    /// Stop after this many snapshots.
    pub snapshots: Option<u64>,
    /// A snapshot also as soon as this is notified, besides the interval's (the guard: one of
    /// its actions finished, and what it did is recorded and decided on at once). Such a
    /// snapshot does not count towards `snapshots`.
    pub wake: Option<Arc<Notify>>,
}

/// The live engine's state across one run.
pub struct Watcher<'a, K: Kernel, S: Sink> {
    cfg: &'a Config,
    kernel: &'a mut K,
    sink: &'a mut S,
    table: LiveTable,
    resyncs: Resyncs,
    counters: Counters,
    selects_all: bool,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// `wake`'s next notification; never resolves without one.
async fn woken(wake: &Option<Arc<Notify>>) {
    match wake {
        Some(w) => w.notified().await,
        None => std::future::pending().await,
    }
}

/// The running dump's result; never resolves while none runs.
async fn join(dump: &mut Option<DumpTask>) -> Result<Result<LiveTable, ctnetlink::Error>, Error> {
    match dump {
        Some(task) => {
            let r = task.await;
            *dump = None;
            Ok(r?)
        }
        None => std::future::pending().await,
    }
}

impl<'a, K: Kernel, S: Sink> Watcher<'a, K, S> {
    /// An engine over `kernel`, handing to `sink`.
    pub fn new(cfg: &'a Config, kernel: &'a mut K, sink: &'a mut S) -> Self {
        let t = now();
        Watcher {
            table: cfg.classifier.empty_table(),
            resyncs: Resyncs::new(cfg.reconcile, t),
            counters: Counters::new(t),
            selects_all: cfg.classifier.selector().is_empty(),
            cfg,
            kernel,
            sink,
        }
    }

    /// Runs until `shutdown` resolves, the snapshots asked for are taken, or an error. Returns
    /// how it ended ([`Shutdown::Now`] after the last snapshot).
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = Shutdown>,
    ) -> Result<Shutdown, S::Error> {
        // Subscribe first, then dump: every change the dump misses arrives as an event.
        let mut sub = self.kernel.subscribe().map_err(Error::from)?;
        let mut dump: Option<DumpTask> = None;
        let mut seeded = false;
        let mut lost_before = 0u64;
        let (mut snapshots, limit) = (0u64, self.cfg.snapshots.unwrap_or(u64::MAX));

        let mut shutdown = pin!(shutdown);
        let mut ticker = interval(self.cfg.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let period = self.cfg.reconcile.unwrap_or(Duration::from_secs(86_400 * 365));
        let mut reconciler = interval_at(tokio::time::Instant::now() + period, period);
        reconciler.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            if dump.is_none() && self.resyncs.start(now()).is_some() {
                dump = Some(self.kernel.dump(&self.cfg.classifier).map_err(Error::from)?);
            }
            tokio::select! {
                biased;
                how = &mut shutdown => {
                    if how == Shutdown::Deadline && seeded {
                        self.snapshot()?;
                    }
                    return Ok(how);
                }
                done = join(&mut dump) => {
                    let done = done?;
                    let finished = self.resyncs.finish(done, &mut self.table, now());
                    let Some(r) = finished.map_err(Error::from)? else { continue };
                    self.sink.resynced(&r)?;
                    if !seeded {
                        seeded = true;
                        ticker.reset();
                        let c = &self.counters;
                        self.counters =
                            Counters { total: c.total, overruns: c.overruns, ..Counters::new(now()) };
                        if self.sink.snapshot_at_seed() {
                            self.snapshot()?;
                        }
                    }
                }
                // The wake and the interval's snapshot before the events: under a flood of
                // them (a runaway guest's new flows, the guard's own eviction's one per deleted
                // flow) they would otherwise wait for the flood to pause, and the guard would
                // see the table fill late.
                _ = woken(&self.cfg.wake), if seeded => self.snapshot()?,
                _ = ticker.tick(), if seeded => {
                    self.snapshot()?;
                    snapshots += 1;
                    if snapshots >= limit {
                        return Ok(Shutdown::Now);
                    }
                }
                r = sub.recv(|kind, flow, _| {
                    let change = self.cfg.classifier.change(kind, flow);
                    self.counters.count(kind, self.table.apply(&change));
                    self.resyncs.record(change);
                }) => {
                    let r = r.map_err(Error::from)?;
                    if r.drained && !r.overrun {
                        gather();
                    }
                    if r.overrun {
                        self.counters.overruns += 1;
                        let drops = sub.drops();
                        // A new subscription first, then drop the old one: the kernel's "a
                        // listener exists" bit never clears (nf_conntrack_events=2), and the
                        // events queued on the old socket, now useless, go with it.
                        sub = self.kernel.subscribe().map_err(Error::from)?;
                        self.resyncs.overrun();
                        let lost = drops.map(|d| lost_before + d);
                        lost_before = lost.unwrap_or(lost_before);
                        let o = Overrun { overruns: self.counters.overruns, lost_events: lost };
                        self.sink.overrun(&o)?;
                    }
                }
                _ = reconciler.tick(), if self.cfg.reconcile.is_some() => self.resyncs.reconcile(),
            }
        }
    }

    /// One snapshot to the sink; compares the held count with the kernel's on the way.
    fn snapshot(&mut self) -> Result<(), S::Error> {
        let stats = self.kernel.table_stats();
        let t = now();
        let rates = self.counters.rates(t);
        if let Some(s) = &stats {
            let held = self.table.len() as u64;
            self.resyncs.check(held, u64::from(s.count), self.selects_all, rates.events_per_s, t);
        }
        let view = View {
            table: &self.table,
            stats,
            rates,
            events: self.counters.total,
            overruns: self.counters.overruns,
            resyncs: self.resyncs.done(),
            synced: self.resyncs.synced(),
            reason: self.resyncs.reason(),
        };
        self.sink.snapshot(&view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_11_1_rates_count_what_entered_and_left_per_second() {
        let t0 = Instant::now();
        let mut c = Counters::new(t0);
        for (kind, effect) in [
            (EventKind::New, Effect::Added),
            (EventKind::New, Effect::Kept),
            (EventKind::Update, Effect::Added),
            (EventKind::Destroy, Effect::Removed),
            (EventKind::Destroy, Effect::Ignored),
        ] {
            c.count(kind, effect);
        }
        let r = c.rates(t0 + Duration::from_secs(2));
        assert_eq!(r, Rates { new_per_s: 0.5, destroy_per_s: 0.5, events_per_s: 2.5 });
        assert_eq!(c.total, 5, "the total survives an interval");
        let r = c.rates(t0 + Duration::from_secs(3));
        assert_eq!(r, Rates { new_per_s: 0.0, destroy_per_s: 0.0, events_per_s: 0.0 });
    }
}
