//! `ctguard watch`: live counts per group and state, kept by the library's live engine
//! (`ctguard::live::Watcher`); here are the terminal frames and the JSON Lines snapshots.

use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use clap::Args as ClapArgs;
use crossterm::cursor;
use crossterm::terminal::{Clear, ClearType, EnterAlternateScreen, LeaveAlternateScreen};
use ctguard::ctnetlink::Conntrack;
use ctguard::guests::GuestMap;
use ctguard::live::watcher::Overrun;
use ctguard::live::{Classifier, Config, Netns, Resynced, Shutdown, Sink, View, Watcher};
use ctguard::output::jsonl;
use ctguard::output::live::{
    self as view, FrameHeader, LiveStatus, Lost, Resync, Snapshot, SnapshotOf,
};
use ctguard::output::report::Ranking;
use ctguard::select::Selector;
use ctguard::stats::Fill;
use ctguard::sysctl;
use ctguard::tally::GroupBy;

use crate::cli::discovery::Pending;
use crate::cli::exit::{Failure, Outcome};
use crate::cli::live::{self, LiveArgs, LiveSelectArgs};
use crate::cli::parse;
use crate::cli::select_args;
use crate::cli::select_args::Selection;

/// `watch --help`: how the counts stay exact.
pub const HELP: &str = "\
Counts are exact: ctguard subscribes to NEW, UPDATE and DESTROY events first, seeds from a dump,
keys flows by CTA_ID and tuple, and re-dumps after any event loss (ENOBUFS: an `overrun`). With
nf_conntrack_events=2 (the kernel default) flows created while no listener existed never report
DESTROY; a reconciliation dump every --reconcile period corrects them. --enable-events sets
nf_conntrack_events=1 in the target network namespace only (the sysctl is per namespace).

Not on a terminal (or with --json) it prints JSON Lines: a `resync` record when the counts were
rebuilt from a dump, a `lost` record per overrun, and a `snapshot` per --interval.";

/// `ctguard watch`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Group by: guest, src, dst, src/N, dst/N, state, proto, zone, mark, helper
    /// (default: guest with --guests, else src).
    #[arg(long, value_name = "KEY", value_parser = GroupBy::parse)]
    pub by: Option<GroupBy>,
    /// Time between snapshots.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse::duration("--interval"))]
    pub interval: Duration,
    /// Re-dump and correct the counts this often; `off` disables. Default: 30s when
    /// nf_conntrack_events is not 1 (flows may be silent), else 5m (a safety net).
    #[arg(long, value_name = "DURATION", value_parser = reconcile)]
    pub reconcile: Option<Reconcile>,
    /// Groups per snapshot (default: all in JSON, what fits on a terminal).
    #[arg(short = 'n', long, value_name = "N", value_parser = parse::positive_usize("-n"))]
    pub limit: Option<usize>,
    /// Print JSON Lines (the default when stdout is not a terminal).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tail: LiveSelectArgs,
}

/// `--reconcile`: a period, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconcile(Option<Duration>);

fn reconcile(s: &str) -> Result<Reconcile, String> {
    match s {
        "0" | "off" | "never" => Ok(Reconcile(None)),
        d => Ok(Reconcile(Some(parse::nonzero_duration("--reconcile", d)?))),
    }
}

/// `ctguard watch`, validated.
#[derive(Debug)]
pub struct Plan {
    sel: Selector,
    /// `None`: by guest when guests are known at run (a file's or discovered), else by source.
    by: Option<GroupBy>,
    guests: Arc<GuestMap>,
    /// What discovery owes the selection and the owners.
    pending: Pending,
    interval: Duration,
    /// `None`: the default for the namespace's `nf_conntrack_events`; `Some(None)`: off.
    reconcile: Option<Option<Duration>>,
    limit: Option<usize>,
    json: bool,
    live: LiveArgs,
    netns: Option<String>,
}

/// Checks the flags; reads the guest file.
pub fn plan(a: Args, netns: Option<&str>) -> Result<Plan, String> {
    let Selection { sel, guests, pending } = a.tail.select.selection()?;
    // Without discovery the guest file alone decides, now.
    let by = if pending.off() { Some(select_args::group_by(a.by, &guests)?) } else { a.by };
    Ok(Plan {
        sel,
        by,
        guests,
        pending,
        interval: a.interval,
        reconcile: a.reconcile.map(|r| r.0),
        limit: a.limit,
        json: a.json,
        live: a.tail.live,
        netns: netns.map(str::to_string),
    })
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
pub fn run(mut job: Plan, ct: &mut Conntrack, out: &mut impl Write) -> Result<Outcome, Failure> {
    let owners = job.by.is_none_or(|by| by == GroupBy::Guest);
    std::mem::take(&mut job.pending).resolve(&mut job.sel, &mut job.guests, owners)?;
    let by = select_args::group_by(job.by, &job.guests).map_err(Failure::Message)?;
    job.by = Some(by);
    let rt = live::runtime()?;
    let screen = !job.json && io::stdout().is_terminal();
    let r = rt.block_on(async {
        let _screen = if screen { Some(Screen::enter()?) } else { None };
        watch_loop(ct, job, out, screen).await
    });
    rt.shutdown_background();
    r.map(|()| Outcome::Ok)
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
    job: Plan,
    out: &mut impl Write,
    screen: bool,
) -> Result<(), Failure> {
    // `run` settled the grouping once discovery was done.
    let by = job.by.unwrap_or(GroupBy::Src);
    let enable = job.live.enable_events;
    // The reconciliation period: asked for, or the default for the namespace's setting.
    let period_for = |mode: Option<u64>| {
        let mode = if enable { Some(1) } else { mode };
        job.reconcile.unwrap_or(Some(ctguard::live::reconcile_period(mode)))
    };
    let (mode, warning) = live::events_setting(enable, |mode| match period_for(mode) {
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
            by.name(),
            job.netns.as_deref().map(|n| format!(", netns {n}")).unwrap_or_default(),
            humantime::format_duration(job.interval),
            reconcile.map_or("off".into(), |d| humantime::format_duration(d).to_string()),
        ),
        // On a terminal the warning stays in the frame (the alternate screen hides stderr).
        note: warning.filter(|_| screen),
        marker: None,
    };
    let cfg = Config {
        classifier: Classifier::new(job.sel, by, job.guests),
        interval: job.interval,
        reconcile,
        snapshots: job.live.count,
        wake: None,
    };
    let how = live::stopping(job.live.duration)?;
    let mut kernel = Netns { ct, rcvbuf: job.live.buffer };
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
    fn issue_11_1_the_selector_and_the_counts_share_one_guest_map() {
        use clap::Parser;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "web = [\"172.16.3.0/24\"]").unwrap();
        let path = file.path().to_str().unwrap();
        // Without discovery the grouping is settled at plan time (else at run, after it).
        let args = ["ctguard", "watch", "--no-discover", "--guests", path, "--guest", "web"];
        #[derive(clap::Parser)]
        struct Line {
            #[command(subcommand)]
            watch: Sub,
        }
        #[derive(clap::Subcommand)]
        enum Sub {
            Watch(Args),
        }
        let Sub::Watch(a) = Line::parse_from(args).watch;
        let job = plan(a, None).unwrap();
        let filter = job.sel.guests.as_ref().expect("a guest filter");
        assert!(Arc::ptr_eq(&filter.map, &job.guests), "one map, not a copy");
        assert_eq!(job.by, Some(GroupBy::Guest));
    }
}
