//! `ctguard events` and `ctguard watch`: their plans, and sinks that print for the library's
//! live engines (`ctguard::live::stream` for events, `ctguard::live::Watcher` for watch). What
//! stays here is the terminal, the signals and the `nf_conntrack_events` warnings.

use std::future::Future;
use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossterm::cursor;
use crossterm::terminal::{Clear, ClearType, EnterAlternateScreen, LeaveAlternateScreen};
use ctguard::ctnetlink::{Conntrack, EventKind, EventMask, Subscription};
use ctguard::flow::Flow;
use ctguard::guests::GuestMap;
use ctguard::live::stream::{EventSink, stream};
use ctguard::live::watcher::{self, Overrun};
use ctguard::live::{Classifier, Config, Netns, Resynced, Shutdown, Sink, View, Watcher};
use ctguard::output::jsonl;
use ctguard::output::live::{
    self as view, End, FrameHeader, LiveStatus, Lost, Resync, Snapshot, SnapshotOf,
};
use ctguard::output::report::Ranking;
use ctguard::select::{self, Selector};
use ctguard::stats::Fill;
use ctguard::sysctl;
use ctguard::tally::GroupBy;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::sleep;

use super::plan::{positive, selector};
use super::run::{Failure, Outcome};
use super::{EventsArgs, LiveArgs, WatchArgs};

/// Default receive buffer: the kernel doubles it, and charges ~1.3 KiB per queued event, so
/// 64 MiB holds about 100,000 events (a second of `conntrack -D` at full speed) before it
/// overruns. The memory is only used while events wait to be read.
pub const DEFAULT_BUFFER: &str = "64M";

/// Reconciliation period while events can be missing (`nf_conntrack_events` is not 1).
const RECONCILE_SILENT: Duration = Duration::from_secs(30);
/// Reconciliation period when every flow reports events: a safety net only.
const RECONCILE_SAFETY: Duration = Duration::from_secs(300);

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
    guests: Arc<GuestMap>,
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
fn live_selector(a: &super::SelectArgs) -> Result<(Selector, Arc<GuestMap>), String> {
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

/// How a live command ends: at SIGINT or SIGTERM, when the reader of stdout is gone, or after
/// `duration`. Needs the runtime.
fn stopping(duration: Option<Duration>) -> Result<impl Future<Output = Shutdown>, Failure> {
    let signalled = shutdown()?;
    Ok(async move {
        tokio::select! {
            biased;
            () = signalled => Shutdown::Now,
            () = reader_gone() => Shutdown::Quiet,
            () = deadline(duration) => Shutdown::Deadline,
        }
    })
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
    let stop = stopping(job.opts.stop.duration)?;
    let mut print = EventPrinter { out: &mut *out, json: job.json, scratch: Vec::new() };
    let done = stream(&mut sub, job.mask, &job.sel, job.opts.stop.count, &mut print, stop).await?;
    if done.how == Shutdown::Quiet {
        // Nobody reads what is left to say: quietly done (the broken pipe rule).
        return Ok(());
    }
    // The last word: every drop, read from the socket's counter now. The kernel raises
    // ENOBUFS once per congestion (netlink_overrun), so events dropped after the last one
    // were never reported by a `lost` record.
    let end = End::new(done.events, done.overruns, done.lost_events);
    if job.json {
        jsonl::write_line(out, &end)?;
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

/// Where `events` prints: `conntrack -E` lines or JSON Lines; losses on stderr, or as `lost`
/// records in JSON.
struct EventPrinter<'a, W: Write> {
    out: &'a mut W,
    json: bool,
    scratch: Vec<u8>,
}

impl<W: Write> EventSink for EventPrinter<'_, W> {
    type Error = Failure;

    fn event(&mut self, kind: EventKind, flow: &Flow) -> Result<(), Failure> {
        let now = SystemTime::now();
        match self.json {
            true => view::write_event_json(self.out, &mut self.scratch, now, kind, flow)?,
            false => view::write_event_line(self.out, now, kind, flow)?,
        }
        Ok(())
    }

    fn overrun(&mut self, o: &Overrun) -> Result<(), Failure> {
        let lost = Lost::new(o.overruns, o.lost_events);
        if self.json {
            jsonl::write_line(self.out, &lost)?;
        } else {
            eprintln!(
                "ctguard: receive buffer overrun at {}: {} events lost so far (raise --buffer)",
                lost.time,
                lost.lost_events.map_or("some".into(), |n| n.to_string())
            );
        }
        Ok(())
    }

    fn batch_done(&mut self) -> Result<(), Failure> {
        Ok(self.out.flush()?)
    }
}

/// The alternate screen while `watch` draws on a terminal; left on drop and on panic.
struct Screen;

impl Screen {
    fn enter() -> io::Result<Screen> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = Screen::leave();
            previous(info);
        }));
        crossterm::execute!(
            io::stdout(),
            EnterAlternateScreen,
            cursor::Hide,
            cursor::MoveTo(0, 0),
            Clear(ClearType::All)
        )?;
        Ok(Screen)
    }

    fn leave() -> io::Result<()> {
        crossterm::execute!(io::stdout(), cursor::Show, LeaveAlternateScreen)
    }

    /// The terminal's size: lines, columns.
    fn size() -> (usize, usize) {
        match crossterm::terminal::size() {
            Ok((cols, rows)) if rows > 0 && cols > 0 => (usize::from(rows), usize::from(cols)),
            _ => (24, 80),
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = Screen::leave();
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

impl From<watcher::Error> for Failure {
    fn from(e: watcher::Error) -> Self {
        Failure::Message(e.to_string())
    }
}

/// Where `watch` prints: JSON Lines, or frames on a terminal, where a `lost` or `resync`
/// record becomes the frame's marker line and the events warning its note.
struct Printer<'a, W: Write> {
    out: &'a mut W,
    screen: bool,
    limit: Option<usize>,
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
            jsonl::write_line(self.out, record)?;
            self.out.flush()?;
        }
        Ok(())
    }
}

impl<W: Write> Sink for Printer<'_, W> {
    type Error = Failure;

    fn overrun(&mut self, o: &Overrun) -> Result<(), Failure> {
        let record = Lost::new(o.overruns, o.lost_events);
        let text = format!(
            "OVERRUN at {}: {} events lost so far; resyncing from a dump (raise --buffer)",
            record.time,
            record.lost_events.map_or("some".into(), |n| n.to_string())
        );
        self.record(&record, text)
    }

    fn resynced(&mut self, r: &Resynced) -> Result<(), Failure> {
        let record = Resync::of(r);
        let text = format!(
            "last resync ({}) at {}: {} flows, corrected {:+}, {} ms",
            record.reason, record.time, record.matched, record.corrected, record.took_ms
        );
        self.record(&record, text)
    }

    fn snapshot(&mut self, v: &View<'_>) -> Result<(), Failure> {
        let fill = v.stats.map(|s| Fill::new(s, sysctl::read("nf_conntrack_buckets")));
        let (rows, cols) = if self.screen { Screen::size() } else { (0, 0) };
        let limit = match self.screen {
            true => Some(rows.saturating_sub(FRAME_OVERHEAD).max(1)),
            false => self.limit,
        };
        let ranking = Ranking::new(v.table.tally(), fill, limit);
        let status = LiveStatus {
            rates: v.rates,
            events: v.events,
            overruns: v.overruns,
            resyncs: v.resyncs,
            synced: v.synced,
            reason: v.reason.map(|r| r.name().to_string()),
        };
        if !self.screen {
            // Straight from the ranking: no owned label and state map per group.
            let snap = SnapshotOf { ranking: &ranking, status };
            jsonl::write_line(self.out, &snap)?;
            self.out.flush()?;
            return Ok(());
        }
        let snap = Snapshot::new(ranking.report(), status);
        let header = FrameHeader {
            title: &self.title,
            snapshot: &snap,
            marker: self.marker.as_deref(),
            note: self.note.as_deref(),
        };
        view::write_frame(self.out, &header, rows, cols)?;
        Ok(())
    }

    fn snapshot_at_seed(&self) -> bool {
        self.screen
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
    let mut print = Printer {
        out,
        screen,
        limit: job.limit,
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
    let cfg = Config {
        classifier: Classifier::new(job.sel, job.by, job.guests),
        interval: job.interval,
        reconcile,
        snapshots: job.opts.stop.count,
    };
    let how = stopping(job.opts.stop.duration)?;
    let mut kernel = Netns { ct, rcvbuf: job.opts.rcvbuf };
    let ended = Watcher::new(&cfg, &mut kernel, &mut print).run(how).await?;
    if ended != Shutdown::Quiet {
        print.out.flush()?;
    }
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

    #[test]
    fn issue_11_1_the_selector_and_the_counts_share_one_guest_map() {
        use clap::Parser;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "web = [\"172.16.3.0/24\"]").unwrap();
        let path = file.path().to_str().unwrap();
        let args = ["ctguard", "watch", "--guests", path, "--guest", "web"];
        let super::super::Command::Watch(a) = super::super::Cli::parse_from(args).command else {
            panic!("not a watch");
        };
        let job = plan_watch(a, None).unwrap();
        let filter = job.sel.guests.as_ref().expect("a guest filter");
        assert!(Arc::ptr_eq(&filter.map, &job.guests), "one map, not a copy");
        assert_eq!(job.by, GroupBy::Guest);
    }
}
