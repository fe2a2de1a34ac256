//! `ctguard watch`: live counts per group and state, kept by the library's live engine
//! (`ctguard::live::Watcher`); here are the terminal frames and the JSON Lines snapshots.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args as ClapArgs;
use ctguard::ctnetlink::Conntrack;
use ctguard::guests::GuestMap;
use ctguard::live::watcher::Overrun;
use ctguard::live::{Classifier, Config, Netns, Resynced, Shutdown, Sink, View, Watcher};
use ctguard::output::jsonl;
use ctguard::output::live::{LiveStatus, Lost, Resync, SnapshotOf};
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
use crate::cli::term::Term;
use crate::cli::tui;

/// `watch --help`: how the counts stay exact.
pub const HELP: &str = "\
Counts are exact: ctguard subscribes to NEW, UPDATE and DESTROY events first, seeds from a dump,
keys flows by CTA_ID and tuple, and re-dumps after any event loss (ENOBUFS: an `overrun`). With
nf_conntrack_events=2 (the kernel default) flows created while no listener existed never report
DESTROY; a reconciliation dump every --reconcile period corrects them. --enable-events sets
nf_conntrack_events=1 in the target network namespace only (the sysctl is per namespace).

On a terminal it is interactive (keys: q quits, e evicts the selected row, y confirms, ? lists
them all). Not on a terminal (or with --json) it prints JSON Lines: a `resync` record when the counts were
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
    /// Groups per JSON snapshot (default: all; the terminal view scrolls).
    #[arg(short = 'n', long, value_name = "N", value_parser = parse::positive_usize("-n"))]
    pub limit: Option<usize>,
    /// Print JSON Lines (the default when stdout is not a terminal).
    #[arg(long)]
    pub json: bool,
    /// The audit log of what `e` evicts (one JSON line per run, before and after); '' turns
    /// auditing off, like --no-audit.
    #[arg(long, value_name = "PATH", env = "CTGUARD_AUDIT_LOG", default_value = ctguard::audit::DEFAULT_LOG)]
    pub audit_log: String,
    /// Write no audit records.
    #[arg(long)]
    pub no_audit: bool,
    /// Where what `e` evicts is saved, one file per eviction under DIR/spool/ (`ctguard load
    /// FILE` puts them back).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/ctguard", value_parser = save_dir)]
    pub save_dir: PathBuf,
    /// The new connections a cap (`c`) lets each of the group's networks open.
    #[arg(long, value_name = "N", default_value = "20000", value_parser = parse::positive("--cap"))]
    pub cap: u64,
    #[command(flatten)]
    pub tail: LiveSelectArgs,
}

/// `--save-dir`: an absolute directory.
fn save_dir(s: &str) -> Result<PathBuf, String> {
    if s.starts_with('/') && !s.contains('\0') {
        Ok(PathBuf::from(s))
    } else {
        Err(format!("invalid --save-dir '{s}': name an absolute directory"))
    }
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
    audit_log: Option<PathBuf>,
    save_dir: PathBuf,
    cap: u32,
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
        audit_log: (!a.no_audit && !a.audit_log.is_empty()).then(|| PathBuf::from(a.audit_log)),
        save_dir: a.save_dir,
        cap: u32::try_from(a.cap).map_err(|_| format!("invalid --cap {}: too large", a.cap))?,
    })
}

/// Runs `ctguard watch`.
pub fn run(
    mut job: Plan,
    ct: &mut Conntrack,
    term: &Term,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
    let owners = job.by.is_none_or(|by| by == GroupBy::Guest);
    std::mem::take(&mut job.pending).resolve(&mut job.sel, &mut job.guests, owners)?;
    let by = select_args::group_by(job.by, &job.guests).map_err(Failure::Message)?;
    job.by = Some(by);
    let rt = live::runtime()?;
    let screen = !job.json && io::stdout().is_terminal();
    let r = rt.block_on(async {
        if screen {
            interactive(ct, job, by, term.look.colour).await
        } else {
            watch_loop(ct, job, out).await
        }
    });
    rt.shutdown_background();
    r.map(|()| Outcome::Ok)
}

/// Where `watch` prints off a terminal: JSON Lines.
struct Printer<'a, W: Write> {
    out: &'a mut W,
    limit: Option<usize>,
}

impl<W: Write> Printer<'_, W> {
    fn record(&mut self, record: &impl serde::Serialize) -> Result<(), Failure> {
        jsonl::write_line(self.out, record)?;
        self.out.flush()?;
        Ok(())
    }
}

impl<W: Write> Sink for Printer<'_, W> {
    type Error = Failure;

    fn overrun(&mut self, o: &Overrun) -> Result<(), Failure> {
        self.record(&Lost::new(o.overruns, o.lost_events))
    }

    fn resynced(&mut self, r: &Resynced) -> Result<(), Failure> {
        self.record(&Resync::of(r))
    }

    fn snapshot(&mut self, v: &View<'_>) -> Result<(), Failure> {
        let fill = v.stats.map(|s| Fill::new(s, sysctl::read("nf_conntrack_buckets")));
        let ranking = Ranking::new(v.table.tally(), fill, self.limit);
        let status = LiveStatus {
            rates: v.rates,
            events: v.events,
            overruns: v.overruns,
            resyncs: v.resyncs,
            synced: v.synced,
            reason: v.reason.map(|r| r.name().to_string()),
        };
        // Straight from the ranking: no owned label and state map per group.
        let snap = SnapshotOf { ranking: &ranking, status };
        self.record(&snap)
    }
}

/// The reconciliation period and the events setting's warning, for the namespace.
fn reconciling(job: &Plan) -> Result<(Option<Duration>, Option<String>), Failure> {
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
    Ok((period_for(mode), warning))
}

async fn watch_loop(ct: &mut Conntrack, job: Plan, out: &mut impl Write) -> Result<(), Failure> {
    // `run` settled the grouping once discovery was done.
    let by = job.by.unwrap_or(GroupBy::Src);
    let (reconcile, warning) = reconciling(&job)?;
    if let Some(w) = &warning {
        eprintln!("ctguard: {w}");
    }
    let mut print = Printer { out, limit: job.limit };
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

/// The flags of `watch` that are no selection flag, read from the clap definitions: all of
/// watch's but those of [`SelectArgs`](select_args::SelectArgs), which `evict` takes too. The
/// view's `ctguard evict` line repeats the watch's selection without them (some, like
/// `--json` or `--limit`, `evict` has with a meaning of its own), and a flag added to `watch`
/// is left out of that line without a list to keep.
pub fn own_flags() -> Vec<tui::group::OwnFlag> {
    let watch = <Args as ClapArgs>::augment_args(clap::Command::new("watch"));
    let select = <select_args::SelectArgs as ClapArgs>::augment_args(clap::Command::new("select"));
    let selecting: Vec<&str> = select.get_arguments().map(|a| a.get_id().as_str()).collect();
    watch
        .get_arguments()
        .filter(|a| !selecting.contains(&a.get_id().as_str()))
        .map(|a| {
            let longs = a.get_long().into_iter().chain(a.get_all_aliases().unwrap_or_default());
            let shorts =
                a.get_short().into_iter().chain(a.get_all_short_aliases().unwrap_or_default());
            tui::group::OwnFlag {
                names: longs
                    .map(|l| format!("--{l}"))
                    .chain(shorts.map(|c| format!("-{c}")))
                    .collect(),
                valued: a.get_action().takes_values(),
            }
        })
        .collect()
}

/// `watch` on a terminal: the interactive view ([`crate::cli::tui`]).
/// The view, in colour when the run's terminal allows it (`NO_COLOR`, `TERM=dumb`).
async fn interactive(
    ct: &mut Conntrack,
    job: Plan,
    by: GroupBy,
    colour: bool,
) -> Result<(), Failure> {
    let (reconcile, note) = reconciling(&job)?;
    let after_watch: Vec<String> = std::env::args().skip_while(|a| a != "watch").skip(1).collect();
    let origin = tui::group::Origin {
        netns: job.netns.clone(),
        select: tui::group::selection_flags(&after_watch, &own_flags()),
        src: job.sel.src.clone(),
        dst: job.sel.dst.clone(),
    };
    let opts = tui::run::Opts {
        sel: job.sel,
        guests: job.guests,
        by,
        interval: job.interval,
        reconcile,
        rcvbuf: job.live.buffer,
        origin,
        audit_log: job.audit_log,
        save_dir: job.save_dir,
        cap: job.cap,
        colour,
        note,
        count: job.live.count,
        duration: job.live.duration,
    };
    tui::run::run(ct, opts).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error kind `ctguard evict <flag> [value]` parses to, or `None` when it parses.
    fn evict_error(flag: &str, valued: bool) -> Option<clap::error::ErrorKind> {
        let evict =
            <crate::cli::act::EvictArgs as ClapArgs>::augment_args(clap::Command::new("evict"));
        // A value the valued selection flags take (counts, marks, zones, ports, CIDRs).
        let mut argv = vec!["evict", flag];
        if valued {
            argv.push("5");
        }
        evict.try_get_matches_from(argv).err().map(|e| e.kind())
    }

    #[test]
    fn issue_15_watch_own_flags_come_from_clap_and_the_rest_is_evicts_selection() {
        let own = own_flags();
        // Issue 15's hand list, which this replaced, is among them.
        for must in [
            "--by",
            "--interval",
            "--reconcile",
            "-n",
            "--limit",
            "--count",
            "--duration",
            "--buffer",
            "--audit-log",
            "--save-dir",
            "--cap",
            "--json",
            "--enable-events",
            "--no-audit",
        ] {
            assert!(own.iter().any(|f| f.names.iter().any(|n| n == must)), "{must}: {own:?}");
        }
        // Which of them a value follows: the bare ones are switches.
        for flag in &own {
            let bare =
                ["--json", "--enable-events", "--no-audit"].contains(&flag.names[0].as_str());
            assert_eq!(flag.valued, !bare, "{flag:?}");
        }
        // Every other flag of watch is a selection flag, which evict takes alike.
        let watch = <Args as ClapArgs>::augment_args(clap::Command::new("watch"));
        let mut selecting = 0;
        for arg in watch.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let name = format!("--{long}");
            if !own.iter().any(|f| f.names.contains(&name)) {
                selecting += 1;
                let kind = evict_error(&name, arg.get_action().takes_values());
                assert_ne!(kind, Some(clap::error::ErrorKind::UnknownArgument), "evict {name}");
            }
        }
        assert!(selecting >= 20, "the selection flags stay in the evict line: {selecting}");
    }

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
