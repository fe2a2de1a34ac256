//! `ctguard events` and `ctguard watch`: their plans, and the tokio loops around the event
//! subscription, the live table and the printers. The counting itself is `ctguard::live`.

use std::future::Future;
use std::io::{self, IsTerminal, Write};
use std::ops::ControlFlow;
use std::pin::pin;
use std::time::{Duration, Instant, SystemTime};

use ctguard::ctnetlink::{self, Conntrack, EventKind, EventMask, Subscription};
use ctguard::guests::GuestMap;
use ctguard::live::{self, Change, Classifier, Effect, LiveTable};
use ctguard::output::live::{
    self as view, End, FrameHeader, Lost, Rates, Resync, SCREEN_ENTER, SCREEN_LEAVE, Snapshot,
    SnapshotOf,
};
use ctguard::output::report::{Fill, Ranking};
use ctguard::select::{self, Selector};
use ctguard::sysctl;
use ctguard::tally::GroupBy;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, interval, interval_at, sleep};

use super::plan::{positive, selector};
use super::run::{Failure, Outcome};
use super::{EventsArgs, LiveArgs, WatchArgs};

/// Default receive buffer: the kernel doubles it, and charges ~1.3 KiB per queued event, so
/// 64 MiB holds about 100,000 events (a second of `conntrack -D` at full speed) before it
/// overruns. The memory is only used while events wait to be read.
pub const DEFAULT_BUFFER: &str = "64M";
/// After a read that emptied the socket, events gather this long before the next read: at
/// 100,000 events/s one wakeup then reads ~200 of them instead of one, which divides the
/// wakeups per event. Far fewer events arrive meanwhile than the buffer holds, and nobody sees
/// 2 ms on a 1 s snapshot. See [`gather`].
const GATHER: Duration = Duration::from_millis(2);

/// Lets events gather by pausing the whole (single-threaded) runtime. A tokio sleep would not
/// do: the socket is registered edge-triggered, so each arriving event would wake the
/// runtime's `epoll_wait` while this task sleeps (measured: one context switch per event).
/// Signals and timers wait at most `GATHER`; a running dump is on its own thread.
fn gather() {
    std::thread::sleep(GATHER);
}
/// Reconciliation period while events can be missing (`nf_conntrack_events` is not 1).
const RECONCILE_SILENT: Duration = Duration::from_secs(30);
/// Reconciliation period when every flow reports events: a safety net only.
const RECONCILE_SAFETY: Duration = Duration::from_secs(300);
/// After a resync, how long a disagreement with the kernel's count waits before it starts a
/// dump of its own; doubled while the disagreement outlives the dumps (a difference no dump
/// explains must not dump in a loop), back to this once the counts agree.
const MISMATCH_HOLDOFF: Duration = Duration::from_secs(1);

/// When to stop.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stop {
    /// After this many events (`events`) or snapshots (`watch`).
    pub count: Option<u64>,
    /// After this long.
    pub duration: Option<Duration>,
}

/// What both commands share.
#[derive(Debug, Clone)]
pub struct LiveOpts {
    /// Receive buffer asked for, in bytes.
    pub rcvbuf: usize,
    /// Set `nf_conntrack_events=1` in the target namespace first.
    pub enable_events: bool,
    /// When to stop.
    pub stop: Stop,
}

/// `ctguard events`, validated.
#[derive(Debug)]
pub struct EventsJob {
    sel: Selector,
    mask: EventMask,
    json: bool,
    opts: LiveOpts,
}

/// `ctguard watch`, validated.
#[derive(Debug)]
pub struct WatchJob {
    sel: Selector,
    by: GroupBy,
    guests: GuestMap,
    interval: Duration,
    /// `None`: the default for the namespace's `nf_conntrack_events`; `Some(None)`: off.
    reconcile: Option<Option<Duration>>,
    limit: Option<usize>,
    json: bool,
    opts: LiveOpts,
    netns: Option<String>,
}

/// Parses a byte size: `65536`, `256K`, `64M`, `1G` (powers of 1024; `KiB`, `MB` also read).
fn parse_size(s: &str) -> Result<usize, String> {
    let bad = || format!("invalid --buffer '{s}' (bytes, or a size like 256K, 64M, 1G)");
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: usize = t[..digits].parse().map_err(|_| bad())?;
    let unit = t[digits..].trim().to_ascii_lowercase();
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => return Err(bad()),
    };
    let bytes = n.checked_shl(shift).filter(|b| b >> shift == n).ok_or_else(bad)?;
    if bytes == 0 || bytes > i32::MAX as usize {
        return Err(format!("invalid --buffer '{s}': between 1 byte and 2G"));
    }
    Ok(bytes)
}

fn duration(flag: &str, s: &str) -> Result<Duration, String> {
    let d = select::parse_duration(s).map_err(|e| format!("{flag}: {e}"))?;
    if d.is_zero() {
        return Err(format!("{flag}: '{s}' must be longer than zero"));
    }
    Ok(d)
}

fn live_opts(a: &LiveArgs) -> Result<LiveOpts, String> {
    Ok(LiveOpts {
        rcvbuf: parse_size(&a.buffer)?,
        enable_events: a.enable_events,
        stop: Stop {
            count: a.count.as_deref().map(|c| positive("--count", c)).transpose()?,
            duration: a.duration.as_deref().map(|d| duration("--duration", d)).transpose()?,
        },
    })
}

/// The selector for live commands: `--idle` and `--timeout-below` change with the clock, not
/// with events, so they cannot hold for a live count.
fn live_selector(a: &super::SelectArgs) -> Result<(Selector, GuestMap), String> {
    if a.idle.is_some() || a.timeout_below.is_some() {
        return Err("--idle and --timeout-below do not apply to live events (they change with \
                    time, not with events); use them with list or count"
            .into());
    }
    selector(a)
}

/// Plans `ctguard events`.
pub fn plan_events(a: EventsArgs) -> Result<EventsJob, String> {
    let (sel, _) = live_selector(&a.select)?;
    let mask = match &a.event {
        None => EventMask::ALL,
        Some(list) => {
            let mut m = EventMask::NONE;
            for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                let kind = EventKind::parse(word).ok_or_else(|| {
                    format!("invalid --event '{word}' (new, update, destroy, comma separated)")
                })?;
                m = m.with(kind);
            }
            if m.is_empty() {
                return Err("--event needs at least one of new, update, destroy".into());
            }
            m
        }
    };
    Ok(EventsJob { sel, mask, json: a.json, opts: live_opts(&a.live)? })
}

/// Plans `ctguard watch`.
pub fn plan_watch(a: WatchArgs, netns: Option<String>) -> Result<WatchJob, String> {
    let (sel, guests) = live_selector(&a.select)?;
    let by = match &a.by {
        Some(b) => GroupBy::parse(b)?,
        None if !guests.is_empty() => GroupBy::Guest,
        None => GroupBy::Src,
    };
    if by == GroupBy::Guest && guests.is_empty() {
        return Err("--by guest needs a guest file (--guests FILE)".into());
    }
    let reconcile = match a.reconcile.as_deref() {
        None => None,
        Some("0" | "off" | "never") => Some(None),
        Some(d) => Some(Some(duration("--reconcile", d)?)),
    };
    let limit = a.limit.as_deref().map(|n| positive("-n", n).map(|n| n as usize)).transpose()?;
    Ok(WatchJob {
        sel,
        by,
        guests,
        interval: duration("--interval", &a.interval)?,
        reconcile,
        limit,
        json: a.json,
        opts: live_opts(&a.live)?,
        netns,
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Failure::Message(format!("start the event loop: {e}")))
}

/// Resolves on SIGINT or SIGTERM. Needs the runtime.
fn shutdown() -> Result<impl Future<Output = ()>, Failure> {
    let fail = |e: io::Error| Failure::Message(format!("install signal handlers: {e}"));
    let mut int = signal(SignalKind::interrupt()).map_err(fail)?;
    let mut term = signal(SignalKind::terminate()).map_err(fail)?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

/// Resolves when stdout is a pipe whose reader went away (`events | head -5`): the kernel
/// reports POLLERR on a pipe's write end once no reader is left (pipe_poll), so a quiet
/// stream learns it without waiting for its next write. Never resolves for a terminal, a
/// file (epoll refuses regular files) or anything else that cannot tell.
async fn reader_gone() {
    use std::os::fd::AsFd;
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    /// POLLERR or POLLHUP on stdout now.
    fn hung_up() -> bool {
        let mut p = libc::pollfd { fd: libc::STDOUT_FILENO, events: 0, revents: 0 };
        // SAFETY: poll reads and writes one pollfd, which lives for the call.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n == 1 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
    }

    let stdout = io::stdout();
    if stdout.is_terminal() {
        return std::future::pending().await;
    }
    // A duplicate of stdout, owned here: the same pipe, open as long as the AsyncFd.
    let Ok(dup) = stdout.as_fd().try_clone_to_owned() else {
        return std::future::pending().await;
    };
    // SAFETY: `dup` is an open descriptor the AsyncFd owns until it drops (register's rule).
    let Ok(fd) = (unsafe { AsyncFd::register_with_interest(dup, Interest::ERROR) }) else {
        return std::future::pending().await;
    };
    loop {
        match fd.ready(Interest::ERROR).await {
            Ok(_) if hung_up() => return,
            Ok(mut guard) => guard.clear_ready(),
            Err(_) => return std::future::pending().await,
        }
    }
}

/// Resolves after `d`, or never.
async fn deadline(d: Option<Duration>) {
    match d {
        Some(d) => sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Sets `nf_conntrack_events=1` when asked, then reads the namespace's setting: the setting,
/// and what it means for events, for the operator (a warning, or what `--enable-events` did).
/// `/proc/sys/net` is the namespace ctguard entered.
/// `then` says, for the setting read, what follows for the counts.
fn events_setting(
    enable: bool,
    then: impl FnOnce(Option<u64>) -> String,
) -> Result<(Option<u64>, Option<String>), Failure> {
    if enable {
        sysctl::write("nf_conntrack_events", "1").map_err(|e| {
            Failure::Message(format!(
                "--enable-events: cannot set nf_conntrack_events=1 in this network namespace: {e}"
            ))
        })?;
    }
    let mode = sysctl::read("nf_conntrack_events");
    let then = then(mode);
    let message = match mode {
        Some(1) if enable => Some(
            "set nf_conntrack_events=1 in this network namespace only; flows created before \
             stay silent until they end"
                .to_string(),
        ),
        Some(0) => Some(format!(
            "warning: nf_conntrack_events=0 here: the kernel sends no events; {then} \
             (--enable-events sets it to 1 in this namespace)"
        )),
        Some(2) => Some(format!(
            "warning: nf_conntrack_events=2 here: flows created while no event listener \
             existed never report UPDATE or DESTROY; {then} (--enable-events sets it to 1 in \
             this namespace)"
        )),
        _ => None,
    };
    Ok((mode, message))
}

/// Runs `ctguard events`.
pub fn events(job: EventsJob, out: &mut impl Write) -> Result<Outcome, Failure> {
    let rt = runtime()?;
    let r = rt.block_on(events_loop(job, out));
    rt.shutdown_background();
    r.map(|()| Outcome::Ok)
}

async fn events_loop(job: EventsJob, out: &mut impl Write) -> Result<(), Failure> {
    if let (_, Some(warning)) =
        events_setting(job.opts.enable_events, |_| "they are not shown".into())?
    {
        eprintln!("ctguard: {warning}");
    }
    let mut sub = Subscription::open(job.mask, job.opts.rcvbuf)?;
    let mut stop = pin!(shutdown()?);
    let mut end = pin!(deadline(job.opts.stop.duration));
    let mut gone = pin!(reader_gone());
    let limit = job.opts.stop.count.unwrap_or(u64::MAX);
    let (mut printed, mut overruns) = (0u64, 0u64);
    let mut scratch = Vec::new();
    let mut failed: Option<io::Error> = None;
    while printed < limit {
        tokio::select! {
            biased;
            () = &mut stop => break,
            () = &mut end => break,
            // Nobody reads what is left to say: quietly done (the broken pipe rule).
            () = &mut gone => return Ok(()),
            r = sub.recv(|kind, flow| {
                if failed.is_some() || printed >= limit || !job.mask.contains(kind)
                    || !job.sel.matches(flow)
                {
                    return;
                }
                let now = SystemTime::now();
                let r = if job.json {
                    view::write_event_json(out, &mut scratch, now, kind, flow)
                } else {
                    view::write_event_line(out, now, kind, flow)
                };
                match r {
                    Ok(()) => printed += 1,
                    Err(e) => failed = Some(e),
                }
            }) => {
                let r = r?;
                if let Some(e) = failed.take() {
                    return Err(Failure::Output(e));
                }
                if r.drained {
                    out.flush()?;
                    gather();
                }
                if r.overrun {
                    overruns += 1;
                    let lost = Lost::new(overruns, sub.drops());
                    if job.json {
                        view::write_record(out, &lost)?;
                    } else {
                        eprintln!(
                            "ctguard: receive buffer overrun at {}: {} events lost so far (raise --buffer)",
                            lost.time,
                            lost.lost_events.map_or("some".into(), |n| n.to_string())
                        );
                    }
                }
                out.flush()?;
            }
        }
    }
    // The last word: every drop, read from the socket's counter now. The kernel raises
    // ENOBUFS once per congestion (netlink_overrun), so events dropped after the last one
    // were never reported by a `lost` record.
    let end = End::new(printed, overruns, sub.drops());
    if job.json {
        view::write_record(out, &end)?;
    } else if end.lost_events.is_some_and(|n| n > 0) || end.overruns > 0 {
        eprintln!(
            "ctguard: {} events shown; {} lost in {} receive buffer overruns (raise --buffer)",
            end.events,
            end.lost_events.map_or("some".into(), |n| n.to_string()),
            end.overruns
        );
    } else if io::stderr().is_terminal() {
        eprintln!("ctguard: {} events shown", end.events);
    }
    out.flush()?;
    Ok(())
}

/// Why a resync runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Start,
    Overrun,
    Reconcile,
    /// The held count disagrees with the kernel's entry count beyond churn.
    Mismatch,
}

impl Reason {
    fn name(self) -> &'static str {
        match self {
            Reason::Start => "start",
            Reason::Overrun => "overrun",
            Reason::Reconcile => "reconcile",
            Reason::Mismatch => "mismatch",
        }
    }
}

type DumpTask = JoinHandle<Result<LiveTable, ctnetlink::Error>>;

/// How often a dump that overran its own socket is tried again.
const DUMP_ATTEMPTS: usize = 3;

/// Dumps the table on a blocking thread into a fresh live table. The socket is opened here,
/// on the thread that entered the namespace.
fn start_dump(classifier: &Classifier) -> Result<DumpTask, Failure> {
    let mut ct = Conntrack::open()?;
    let c = classifier.clone();
    Ok(tokio::task::spawn_blocking(move || {
        let filter = c.selector().kernel_filter();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut fresh = c.empty_table();
            let r = ct.dump(&filter, |flow| {
                if let Some(place) = c.place(flow) {
                    fresh.seed(flow.identity(), place);
                }
                ControlFlow::Continue(())
            });
            match r {
                Ok(_) => return Ok(fresh),
                Err(ctnetlink::Error::Overrun { .. }) if attempt < DUMP_ATTEMPTS => continue,
                Err(e) => return Err(e),
            }
        }
    }))
}

/// The running dump's result; never resolves while none runs.
async fn join(
    dump: &mut Option<DumpTask>,
) -> Result<Result<LiveTable, ctnetlink::Error>, tokio::task::JoinError> {
    match dump {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// The alternate screen while `watch` draws on a terminal; left on drop and on panic.
struct Screen;

impl Screen {
    fn enter() -> io::Result<Screen> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = io::stdout().write_all(SCREEN_LEAVE);
            let _ = io::stdout().flush();
            previous(info);
        }));
        let mut stdout = io::stdout();
        stdout.write_all(SCREEN_ENTER)?;
        stdout.flush()?;
        Ok(Screen)
    }

    /// The terminal's size: lines, columns.
    fn size() -> (usize, usize) {
        use std::os::fd::AsRawFd;
        // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which lives for the call.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::ioctl(io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        if rc == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
            (usize::from(ws.ws_row), usize::from(ws.ws_col))
        } else {
            (24, 80)
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let mut stdout = io::stdout();
        let _ = stdout.write_all(SCREEN_LEAVE);
        let _ = stdout.flush();
    }
}

/// Lines of a frame above the group table (with a note), and the table's header and footer.
const FRAME_OVERHEAD: usize = 7;

/// Runs `ctguard watch`.
pub fn watch(ct: &mut Conntrack, job: WatchJob, out: &mut impl Write) -> Result<Outcome, Failure> {
    let rt = runtime()?;
    let screen = !job.json && io::stdout().is_terminal();
    let r = rt.block_on(async {
        let _screen = if screen { Some(Screen::enter()?) } else { None };
        watch_loop(ct, job, out, screen).await
    });
    rt.shutdown_background();
    r.map(|()| Outcome::Ok)
}

/// Event counts between snapshots and since the start.
struct Counters {
    total: u64,
    events: u64,
    added: u64,
    removed: u64,
    overruns: u64,
    since: Instant,
}

impl Counters {
    fn new() -> Counters {
        Counters { total: 0, events: 0, added: 0, removed: 0, overruns: 0, since: Instant::now() }
    }

    /// Rates since the last call (or the start), then starts a new interval.
    fn rates(&mut self) -> Rates {
        let secs = self.since.elapsed().as_secs_f64().max(1e-3);
        let rate = |n: u64| (n as f64 / secs * 10.0).round() / 10.0;
        let rates = Rates {
            new_per_s: rate(self.added),
            destroy_per_s: rate(self.removed),
            events_per_s: rate(self.events),
        };
        (self.events, self.added, self.removed) = (0, 0, 0);
        self.since = Instant::now();
        rates
    }
}

/// A dump running for a resync.
struct Running {
    reason: Reason,
    started: Instant,
    /// An overrun happened since it started: events it needs are lost, another dump follows.
    stale: bool,
}

/// The resyncs of the live table: the one wanted, the dump running, and the changes received
/// since that dump (or the subscription it follows an overrun on) started, to replay on it.
struct Resyncs {
    want: Option<Reason>,
    dump: Option<DumpTask>,
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
    fn new(reconcile: Option<Duration>) -> Resyncs {
        Resyncs {
            want: Some(Reason::Start),
            dump: None,
            running: None,
            pending: Vec::new(),
            buffering: true,
            done: 0,
            mismatch: false,
            dump_on_mismatch: reconcile.is_some(),
            last_done: Instant::now(),
            holdoff: MISMATCH_HOLDOFF,
            max_holdoff: reconcile.unwrap_or(MISMATCH_HOLDOFF).max(MISMATCH_HOLDOFF),
        }
    }

    /// No resync pending or running.
    fn idle(&self) -> bool {
        self.want.is_none() && self.running.is_none()
    }

    /// No resync pending or running, and the held count agrees with the kernel's: the counts
    /// are as exact as events make them.
    fn synced(&self) -> bool {
        self.idle() && !self.mismatch
    }

    /// Why the counts are not in sync: the resync running or wanted, else a disagreement.
    fn reason(&self) -> Option<Reason> {
        match (&self.running, self.want) {
            (Some(r), _) => Some(r.reason),
            (None, Some(w)) => Some(w),
            (None, None) => self.mismatch.then_some(Reason::Mismatch),
        }
    }

    /// Compares the held count with the kernel's entry count (GET_STATS) at a snapshot; a
    /// disagreement beyond churn is said (not synced) and, unless reconciling is off, starts a
    /// dump now instead of at the next period.
    fn check(&mut self, held: u64, table_count: u64, selects_all: bool, events_per_s: f64) {
        let band = live::churn_band(events_per_s);
        self.mismatch = live::disagrees(held, table_count, selects_all, band);
        if !self.mismatch {
            self.holdoff = MISMATCH_HOLDOFF;
            return;
        }
        if self.dump_on_mismatch && self.idle() && self.last_done.elapsed() >= self.holdoff {
            self.want = Some(Reason::Mismatch);
            self.holdoff = (self.holdoff * 2).min(self.max_holdoff);
        }
    }

    /// Starts the wanted dump unless one runs.
    fn start_wanted(&mut self, classifier: &Classifier) -> Result<(), Failure> {
        if self.running.is_some() {
            return Ok(());
        }
        let Some(reason) = self.want.take() else { return Ok(()) };
        if !self.buffering {
            self.pending.clear();
            self.buffering = true;
        }
        self.dump = Some(start_dump(classifier)?);
        self.running = Some(Running { reason, started: Instant::now(), stale: false });
        Ok(())
    }

    /// Events were lost; a fresh subscription is open. Changes from now on are replayed on
    /// the next dump; a dump running now misses the lost ones and is thrown away.
    fn overrun(&mut self) {
        self.pending.clear();
        self.buffering = true;
        self.want = Some(Reason::Overrun);
        if let Some(r) = self.running.as_mut() {
            r.stale = true;
        }
    }

    /// Asks for a reconciliation dump unless a resync is pending anyway.
    fn reconcile(&mut self) {
        if self.idle() {
            self.want = Some(Reason::Reconcile);
        }
    }

    /// Takes the finished dump: replaces the table and replays the pending changes, unless
    /// the dump went stale. Returns the record of the resync done.
    fn finish(
        &mut self,
        fresh: Result<LiveTable, ctnetlink::Error>,
        table: &mut LiveTable,
    ) -> Result<Option<Resync>, Failure> {
        self.dump = None;
        let Some(run) = self.running.take() else { return Ok(None) };
        if run.stale {
            // Its result (or its error) no longer matters: the next dump follows.
            return Ok(None);
        }
        let fresh = fresh?;
        let before = table.len() as i64;
        let replayed = self.pending.len() as u64;
        table.replace_with(fresh, &self.pending);
        self.pending.clear();
        self.buffering = false;
        self.done += 1;
        self.last_done = Instant::now();
        // A fresh dump is the truth; the next snapshot compares again.
        self.mismatch = false;
        Ok(Some(Resync {
            kind: "resync".into(),
            time: view::timestamp(SystemTime::now()),
            reason: run.reason.name().into(),
            matched: table.len() as u64,
            corrected: if run.reason == Reason::Start { 0 } else { table.len() as i64 - before },
            replayed,
            took_ms: run.started.elapsed().as_millis() as u64,
        }))
    }
}

/// Where `watch` prints: JSON Lines, or frames on a terminal, where a `lost` or `resync`
/// record becomes the frame's marker line and the events warning its note.
struct Printer<'a, W: Write> {
    out: &'a mut W,
    screen: bool,
    limit: Option<usize>,
    /// The selection takes every flow: the held count must equal the kernel's.
    selects_all: bool,
    title: String,
    note: Option<String>,
    marker: Option<String>,
}

impl<W: Write> Printer<'_, W> {
    /// A record: a JSON line, or the marker `text` on screen.
    fn record(&mut self, record: &impl serde::Serialize, text: String) -> Result<(), Failure> {
        if self.screen {
            self.marker = Some(text);
        } else {
            view::write_record(self.out, record)?;
            self.out.flush()?;
        }
        Ok(())
    }

    /// One snapshot of `table`.
    fn snapshot(
        &mut self,
        ct: &mut Conntrack,
        table: &LiveTable,
        c: &mut Counters,
        resyncs: &mut Resyncs,
    ) -> Result<(), Failure> {
        let fill =
            ct.table_stats().ok().map(|s| Fill::new(s, sysctl::read("nf_conntrack_buckets")));
        let rates = c.rates();
        if let Some(f) = &fill {
            let held = table.len() as u64;
            resyncs.check(held, u64::from(f.count), self.selects_all, rates.events_per_s);
        }
        let (rows, cols) = if self.screen { Screen::size() } else { (0, 0) };
        let limit = match self.screen {
            true => Some(rows.saturating_sub(FRAME_OVERHEAD).max(1)),
            false => self.limit,
        };
        let ranking = Ranking::new(table.tally(), fill, limit);
        let reason = resyncs.reason().map(|r| r.name().to_string());
        if !self.screen {
            // Straight from the ranking: no owned label and state map per group.
            let snap = SnapshotOf {
                ranking: &ranking,
                rates,
                events: c.total,
                overruns: c.overruns,
                resyncs: resyncs.done,
                synced: resyncs.synced(),
                reason,
            };
            view::write_record(self.out, &snap)?;
            self.out.flush()?;
            return Ok(());
        }
        let report = ranking.report();
        let mut snap =
            Snapshot::new(report, rates, c.total, c.overruns, resyncs.done, resyncs.synced());
        snap.reason = reason;
        let header = FrameHeader {
            title: &self.title,
            snapshot: &snap,
            marker: self.marker.as_deref(),
            note: self.note.as_deref(),
        };
        view::write_frame(self.out, &header, rows, cols)?;
        Ok(())
    }
}

async fn watch_loop(
    ct: &mut Conntrack,
    job: WatchJob,
    out: &mut impl Write,
    screen: bool,
) -> Result<(), Failure> {
    let enable = job.opts.enable_events;
    // The reconciliation period: asked for, or the default for the namespace's setting.
    let period_for = |mode: Option<u64>| {
        let every_flow_reports = mode == Some(1) || enable;
        job.reconcile.unwrap_or(Some(if every_flow_reports {
            RECONCILE_SAFETY
        } else {
            RECONCILE_SILENT
        }))
    };
    let (mode, warning) = events_setting(enable, |mode| match period_for(mode) {
        Some(d) => format!(
            "a reconciliation dump every {} (--reconcile) corrects the counts, and one at once \
             when they disagree with the table's entry count",
            humantime::format_duration(d)
        ),
        None => "with --reconcile off nothing corrects the counts; snapshots say \
                 \"synced\":false (mismatch) when they disagree with the table's entry count"
            .into(),
    })?;
    if let (false, Some(w)) = (screen, &warning) {
        eprintln!("ctguard: {w}");
    }
    let reconcile = period_for(mode);
    let classifier = Classifier::new(job.sel.clone(), job.by, job.guests.clone());
    let mut print = Printer {
        out,
        screen,
        limit: job.limit,
        selects_all: job.sel.is_empty(),
        title: format!(
            "ctguard watch: by {}{}, every {}, reconcile {} (Ctrl-C quits)",
            job.by.name(),
            job.netns.as_deref().map(|n| format!(", netns {n}")).unwrap_or_default(),
            humantime::format_duration(job.interval),
            reconcile.map_or("off".into(), |d| humantime::format_duration(d).to_string()),
        ),
        // On a terminal the warning stays in the frame (the alternate screen hides stderr).
        note: warning.filter(|_| screen),
        marker: None,
    };

    // Subscribe first, then dump: every change the dump misses arrives as an event.
    let mut sub = Subscription::open(EventMask::ALL, job.opts.rcvbuf)?;
    let mut table = classifier.empty_table();
    let mut resyncs = Resyncs::new(reconcile);
    let mut seeded = false;
    let mut lost_before = 0u64;
    let mut c = Counters::new();
    let (mut snapshots, limit) = (0u64, job.opts.stop.count.unwrap_or(u64::MAX));

    let mut stop = pin!(shutdown()?);
    let mut end = pin!(deadline(job.opts.stop.duration));
    let mut gone = pin!(reader_gone());
    let mut ticker = interval(job.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let period = reconcile.unwrap_or(Duration::from_secs(86_400 * 365));
    let mut reconciler = interval_at(tokio::time::Instant::now() + period, period);
    reconciler.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        resyncs.start_wanted(&classifier)?;
        tokio::select! {
            biased;
            () = &mut stop => break,
            () = &mut gone => return Ok(()),
            () = &mut end => {
                if seeded {
                    print.snapshot(ct, &table, &mut c, &mut resyncs)?;
                }
                break;
            }
            done = join(&mut resyncs.dump) => {
                let done = done.map_err(|e| Failure::Message(format!("dump task: {e}")))?;
                let Some(record) = resyncs.finish(done, &mut table)? else { continue };
                let text = format!(
                    "last resync ({}) at {}: {} flows, corrected {:+}, {} ms",
                    record.reason, record.time, record.matched, record.corrected, record.took_ms
                );
                print.record(&record, text)?;
                if !seeded {
                    seeded = true;
                    ticker.reset();
                    c = Counters { total: c.total, overruns: c.overruns, ..Counters::new() };
                    if screen {
                        print.snapshot(ct, &table, &mut c, &mut resyncs)?;
                    }
                }
            }
            r = sub.recv(|kind, flow| {
                c.events += 1;
                c.total += 1;
                let change = classifier.change(kind, flow);
                match table.apply(&change) {
                    Effect::Added if kind == EventKind::New => c.added += 1,
                    Effect::Removed if kind == EventKind::Destroy => c.removed += 1,
                    _ => {}
                }
                if resyncs.buffering {
                    resyncs.pending.push(change);
                }
            }) => {
                let r = r?;
                if r.drained && !r.overrun {
                    gather();
                }
                if r.overrun {
                    c.overruns += 1;
                    let drops = sub.drops();
                    // A new subscription first, then drop the old one: the kernel's "a listener
                    // exists" bit never clears (nf_conntrack_events=2), and the events queued
                    // on the old socket, now useless, go with it.
                    sub = Subscription::open(EventMask::ALL, job.opts.rcvbuf)?;
                    resyncs.overrun();
                    let lost = drops.map(|d| lost_before + d);
                    lost_before = lost.unwrap_or(lost_before);
                    let record = Lost::new(c.overruns, lost);
                    let text = format!(
                        "OVERRUN at {}: {} events lost so far; resyncing from a dump (raise --buffer)",
                        record.time,
                        record.lost_events.map_or("some".into(), |n| n.to_string())
                    );
                    print.record(&record, text)?;
                }
            }
            _ = ticker.tick(), if seeded => {
                print.snapshot(ct, &table, &mut c, &mut resyncs)?;
                snapshots += 1;
                if snapshots >= limit {
                    break;
                }
            }
            _ = reconciler.tick(), if reconcile.is_some() => resyncs.reconcile(),
        }
    }
    print.out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("256KiB"), Ok(256 << 10));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(
            parse_size("3G").is_err() && parse_size("0").is_err() && parse_size("12X").is_err()
        );
        assert!(parse_size("").is_err() && parse_size("M").is_err());
    }
}
