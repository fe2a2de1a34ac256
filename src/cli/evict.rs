//! `ctguard evict`: flags, plan, and the run around the engine in `ctguard::evict`: preview and
//! confirmation, `--dry-run`, `--save`, Ctrl-C, the report and the audit line.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use clap::Args;

use ctguard::GuestMap;
use ctguard::ctnetlink::{Conntrack, Deleter};
use ctguard::evict::{self, ProvenFlush, Report, Seen};
use ctguard::flow::Flow;
use ctguard::output::{conntrack as ct_text, json};
use ctguard::select::Selector;
use ctguard::sysctl::StateTimeouts;
use ctguard::tally::{GroupBy, Tally};

use super::SelectArgs;
use super::run::{Failure, Outcome};

/// Where the audit line goes unless `--audit-log` says otherwise.
pub const DEFAULT_AUDIT_LOG: &str = "/var/log/ctguard/audit.jsonl";

const EVICT_EXIT_STATUS: &str = "\
EXIT STATUS:
  0  every selected flow is dealt with: deleted, vanished by itself, or left alone because
     it changed (no longer matches) or its tuple now belongs to a new entry; a --dry-run
     that matched
  1  nothing matched, or the question was answered no
  2  bad input (nothing was touched), a delete the kernel refused, or Ctrl-C

No flow is deleted on a kernel answer older than 0.5 s: flows shown at the prompt, paced by
--rate or chosen by --limit are looked up again right before their delete and deleted only
if still the same entry and still selected. See the README's \"What a delete guarantees\".";

/// `ctguard evict`: delete exactly the selected flows.
#[derive(Debug, Args)]
#[command(after_help = EVICT_EXIT_STATUS)]
pub struct EvictArgs {
    /// Every flow in the table (must be said explicitly; still asks, or needs --yes).
    #[arg(long)]
    pub all: bool,
    /// Do not ask: delete at once (for scripts; also needed without a terminal).
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Delete nothing; report what would go.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: print every selected flow (conntrack -L lines, JSON Lines with --json).
    #[arg(long)]
    pub list: bool,
    /// Delete at most N flows, the most idle first.
    #[arg(long, value_name = "N")]
    pub limit: Option<String>,
    /// Delete at most N flows a second (N or N/s).
    #[arg(long, value_name = "N/s")]
    pub rate: Option<String>,
    /// Write the flows about to be deleted to FILE first (JSON Lines, as `list --json`;
    /// `ctguard load FILE` puts them back).
    #[arg(long, value_name = "FILE")]
    pub save: Option<String>,
    /// Append one JSON line per eviction to this file.
    #[arg(long, value_name = "PATH", env = "CTGUARD_AUDIT_LOG", default_value = DEFAULT_AUDIT_LOG)]
    pub audit_log: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// A validated `evict`.
#[derive(Debug)]
pub struct EvictPlan {
    sel: Selector,
    guests: GuestMap,
    selector_text: String,
    yes: bool,
    dry_run: bool,
    list: bool,
    limit: Option<u64>,
    rate: Option<u32>,
    save: Option<PathBuf>,
    audit_log: String,
    json: bool,
}

/// Checks every flag before anything is touched; a bad one is a one-line reason.
pub fn plan(a: EvictArgs) -> Result<EvictPlan, String> {
    let (sel, guests) = super::plan::selector(&a.select)?;
    if a.all && !sel.is_empty() {
        return Err("--all takes every flow; leave out the selecting flags, or --all".into());
    }
    if sel.is_empty() && !a.all {
        return Err("evict needs a selection (e.g. --guest 172.16.3.5 --state ESTABLISHED), \
                    or --all for every flow"
            .into());
    }
    let limit = a
        .limit
        .as_deref()
        .map(|s| {
            s.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("invalid --limit '{s}' (a positive number of flows)"))
        })
        .transpose()?;
    let rate = a.rate.as_deref().map(parse_rate).transpose()?;
    if a.list && !a.dry_run {
        return Err("--list prints what --dry-run would delete; add --dry-run".into());
    }
    let save = match &a.save {
        None => None,
        Some(s) if a.dry_run => {
            return Err(format!("--save {s} keeps what is deleted; --dry-run deletes nothing"));
        }
        Some(s) => {
            let path = PathBuf::from(s);
            if path.exists() {
                return Err(format!("--save {s}: the file exists; name a new file"));
            }
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if !dir.is_dir() {
                return Err(format!("--save {s}: no directory {}", dir.display()));
            }
            Some(path)
        }
    };
    if !a.yes && !a.dry_run && !io::stdin().is_terminal() {
        return Err("refusing to evict without a terminal to confirm: add --yes to delete, \
                    or --dry-run to see what would go"
            .into());
    }
    Ok(EvictPlan {
        selector_text: if a.all { "--all".into() } else { describe_selection(&a.select) },
        sel,
        guests,
        yes: a.yes,
        dry_run: a.dry_run,
        list: a.list,
        limit,
        rate,
        save,
        audit_log: a.audit_log,
        json: a.json,
    })
}

/// `N` or `N/s`, a positive number of deletes a second.
pub fn parse_rate(s: &str) -> Result<u32, String> {
    let n = s.strip_suffix("/s").unwrap_or(s);
    n.parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid --rate '{s}' (deletes per second: N or N/s, N > 0)"))
}

/// The selecting flags as given, for the audit line.
fn describe_selection(a: &SelectArgs) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut add = |flag: &str, values: &[String]| {
        for v in values {
            parts.push(format!("{flag} {v}"));
        }
    };
    add("-s", &a.src);
    add("-d", &a.dst);
    add("--reply-src", &a.reply_src);
    add("--reply-dst", &a.reply_dst);
    add("--guest", &a.guest);
    add("-p", &a.proto);
    add("--sport", &a.sport);
    add("--dport", &a.dport);
    add("--state", &a.state);
    for (flag, v) in [
        ("--guests", &a.guests),
        ("--status", &a.status),
        ("--mark", &a.mark),
        ("--zone", &a.zone),
        ("-f", &a.family),
        ("--idle", &a.idle),
        ("--timeout-below", &a.timeout_below),
    ] {
        if let Some(v) = v {
            parts.push(format!("{flag} {v}"));
        }
    }
    parts.join(" ")
}

/// Set by SIGINT once deleting has begun: the deletes stop between two chunks.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// From here on Ctrl-C stops the deletes cleanly instead of killing the process.
fn catch_ctrl_c() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

/// The `--save` file: written to `FILE.partial` while the selection runs, renamed to FILE once
/// the eviction is confirmed, before the first delete; removed (on drop) when nothing is.
struct SaveFile {
    path: PathBuf,
    partial: PathBuf,
    out: BufWriter<File>,
    committed: bool,
}

impl SaveFile {
    fn create(path: &Path) -> Result<SaveFile, Failure> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .map_err(|e| Failure::Message(format!("--save {}: {e}", partial.display())))?;
        Ok(SaveFile { path: path.to_path_buf(), partial, out: BufWriter::new(f), committed: false })
    }

    fn fail(&self, e: io::Error) -> Failure {
        Failure::Message(format!("--save {}: {e}; nothing was deleted", self.partial.display()))
    }

    fn restart(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_mut().set_len(0)?;
        io::Seek::rewind(self.out.get_mut()).map(|_| ())
    }

    /// Flushes, syncs and gives the file its name: after this the flows are safe on disk.
    fn commit(mut self) -> Result<(), Failure> {
        let r = self
            .out
            .flush()
            .and_then(|()| self.out.get_ref().sync_all())
            .and_then(|()| fs::rename(&self.partial, &self.path));
        r.map_err(|e| self.fail(e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for SaveFile {
    /// Without a commit nothing is deleted, so the partial file goes.
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.partial);
        }
    }
}

/// What the preview shows.
struct Preview {
    by_state: Tally,
    by_owner: Tally,
    samples: Vec<Flow>,
}

const SAMPLES: usize = 5;
const PREVIEW_GROUPS: usize = 5;

impl Preview {
    fn new(guests: &GuestMap) -> Preview {
        let by = if guests.is_empty() { GroupBy::Src } else { GroupBy::Guest };
        Preview {
            by_state: Tally::new(GroupBy::State, GuestMap::new()),
            by_owner: Tally::new(by, guests.clone()),
            samples: Vec::new(),
        }
    }

    fn add(&mut self, flow: &Flow) {
        self.by_state.add(flow);
        self.by_owner.add(flow);
        if self.samples.len() < SAMPLES {
            self.samples.push(flow.clone());
        }
    }

    fn clear(&mut self) {
        self.by_state.clear();
        self.by_owner.clear();
        self.samples.clear();
    }

    fn write(&self, out: &mut impl Write, table: Option<u32>, plan: &EvictPlan) -> io::Result<()> {
        let matched = self.by_state.total().total;
        match table {
            Some(t) if t > 0 => writeln!(
                out,
                "{matched} flows match ({:.1}% of the {t} in the table)",
                matched as f64 * 100.0 / f64::from(t)
            )?,
            _ => writeln!(out, "{matched} flows match")?,
        }
        for (title, tally) in [("by state", &self.by_state), ("by guest", &self.by_owner)] {
            let rows = tally.sorted();
            let shown: Vec<String> = rows
                .iter()
                .take(PREVIEW_GROUPS)
                .map(|(k, r)| format!("{} {}", tally.label(k), r.total))
                .collect();
            let more = rows.len().saturating_sub(PREVIEW_GROUPS);
            let more = if more > 0 { format!(", and {more} more") } else { String::new() };
            writeln!(out, "  {title}: {}{more}", shown.join(", "))?;
        }
        writeln!(out, "  sample:")?;
        for f in &self.samples {
            write!(out, "    ")?;
            ct_text::write_line(out, f)?;
        }
        if let Some(n) = plan.limit {
            writeln!(out, "  --limit {n}: at most {n} of them, the most idle first")?;
        }
        Ok(())
    }
}

/// Asks on the terminal; true only for y/yes.
fn confirm(n: u64) -> bool {
    eprint!("Delete {n} flows? [y/N] ");
    let _ = io::stderr().flush();
    let mut answer = String::new();
    if io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Runs the eviction.
pub fn run(
    ct: &mut Conntrack,
    mut p: EvictPlan,
    netns: Option<&str>,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
    let started = Instant::now();
    if p.sel.idle_min.is_some() || p.limit.is_some() {
        p.sel.timeouts = Some(StateTimeouts::read());
    }
    let kernel = evict::kernel_release();
    let flush = evict::flush_filter(&p.sel, kernel, p.limit.is_some() || p.rate.is_some());

    // Scripted relief the kernel can flush: prove the flush request in a scratch namespace,
    // then send the same bytes here; no dump of this table at all.
    if p.yes
        && !p.dry_run
        && p.limit.is_none()
        && p.save.is_none()
        && p.rate.is_none()
        && let Ok(filter) = &flush
    {
        match evict::proven_flush(ct, &p.sel, filter)? {
            ProvenFlush::Flushed { proof, removed } => {
                if removed == 0 {
                    return nothing_matched(out, &p);
                }
                let mut report =
                    Report::nothing(removed, removed, false).with_flush(removed, removed);
                report.proof = Some(proof);
                report.elapsed_s = started.elapsed().as_secs_f64();
                return finish(out, &p, netns, report);
            }
            ProvenFlush::Refused(why) => eprintln!(
                "ctguard: note: the filtered flush was not proven in a scratch namespace ({why}); \
                 dumping and deleting flow by flow"
            ),
        }
    }

    // Every delete is decided on what the kernel said of the flow at most FRESH_FOR before;
    // an older answer is looked up again and the flow deleted only if it still matches.
    let sel = p.sel.clone();
    let still_selected = move |f: &Flow| sel.matches(f);

    // Scripted relief: dump and delete at once, each flow deleted moments after the dump read
    // it. For a selection the kernel can flush, the dump is the flush's dry run, and the flush
    // removes what is left once it is proven.
    if p.yes && !p.dry_run && p.limit.is_none() && p.save.is_none() {
        catch_ctrl_c();
        let deleter = Deleter::open()?
            .with_rate(p.rate)
            .with_stop(&STOP)
            .with_recheck(&still_selected, evict::FRESH_FOR);
        let s = evict::select_and_delete(ct, &p.sel, deleter, &STOP, flush.as_ref().ok())?;
        if s.matched == 0 && s.complete {
            return nothing_matched(out, &p);
        }
        let mut report =
            Report::nothing(s.matched, s.matched, false).with_tally(&s.tally, s.without_id);
        if let Some((handed, removed)) = s.flushed {
            report = report.with_flush(handed, removed);
        }
        report.interrupted = STOP.load(Ordering::Relaxed);
        report.complete = s.complete;
        report.elapsed_s = started.elapsed().as_secs_f64();
        return finish(out, &p, netns, report);
    }

    let mut preview = Preview::new(&p.guests);
    let mut save = match (&p.save, p.limit) {
        (Some(path), None) => Some(SaveFile::create(path)?),
        _ => None,
    };
    let mut save_err = None;
    let mut list_err = None;
    let keep_flows = p.save.is_some() && p.limit.is_some();
    let (list, json_out) = (p.list, p.json);
    let show_preview = p.dry_run || !p.yes;
    let selection = evict::select(ct, &p.sel, p.limit, keep_flows, &STOP, |seen| match seen {
        Seen::Flow(flow) => {
            if show_preview {
                preview.add(flow);
            }
            if let Some(s) = save.as_mut()
                && save_err.is_none()
                && let Err(e) = json::write_flow(&mut s.out, flow)
            {
                save_err = Some(e);
            }
            if list && list_err.is_none() {
                let r = if json_out {
                    json::write_flow(out, flow)
                } else {
                    ct_text::write_line(out, flow)
                };
                list_err = r.err();
            }
        }
        Seen::Restart => {
            preview.clear();
            if let Some(s) = save.as_mut()
                && let Err(e) = s.restart()
            {
                save_err = Some(e);
            }
        }
    });
    // On any early return from here on, the partial --save file is removed (SaveFile's drop).
    let selection = selection?;
    if let Some(e) = list_err {
        return Err(Failure::Output(e));
    }
    if let Some(e) = save_err {
        let f = save.as_ref().map(|s| s.fail(e));
        return Err(f.unwrap_or_else(|| Failure::Message("--save failed".into())));
    }
    let selected = selection.keys.len() as u64;
    if selection.matched == 0 {
        return nothing_matched(out, &p);
    }

    if p.dry_run || !p.yes {
        let table = ct.table_stats().ok().map(|t| t.count);
        let mut text = Vec::new();
        preview.write(&mut text, table, &p)?;
        if p.dry_run {
            // The summary goes where the report goes, unless --list fills stdout with flows.
            let report = Report::nothing(selection.matched, selected, true);
            if p.list || p.json {
                io::stderr().write_all(&text)?;
            } else {
                out.write_all(&text)?;
            }
            print_report(out, &p, &report)?;
            return Ok(Outcome::Ok);
        }
        io::stderr().write_all(&text)?;
        if !confirm(selected) {
            eprintln!("ctguard: nothing deleted");
            return Ok(Outcome::NothingMatched);
        }
    }

    // The deleting is timed from here: the selection and the time at the prompt are not in it.
    let started = Instant::now();
    // Written and synced before the first delete.
    if let Some(s) = save {
        s.commit()?;
    } else if let Some(path) = &p.save {
        write_save(path, &selection.flows)?;
    }

    // The selection is re-established flow by flow: what the preview (or the dump a --limit
    // needed whole) showed is older than FRESH_FOR by now, so each flow is looked up again
    // right before its delete and deleted only if it is still the entry shown and still
    // matches. No kernel flush here: it would also take flows that appeared after the preview.
    catch_ctrl_c();
    let mut report = Report::nothing(selection.matched, selected, false);
    let deleter = Deleter::open()?
        .with_rate(p.rate)
        .with_stop(&STOP)
        .with_recheck(&still_selected, evict::FRESH_FOR);
    let tally = evict::delete_selected(&selection.keys, deleter)?;
    report = report.with_tally(&tally, selection.without_id);
    report.interrupted = STOP.load(Ordering::Relaxed);
    report.complete = selection.complete;
    report.elapsed_s = started.elapsed().as_secs_f64();
    finish(out, &p, netns, report)
}

fn write_save(path: &Path, flows: &[Flow]) -> Result<(), Failure> {
    let fail = |e: io::Error| {
        Failure::Message(format!("--save {}: {e}; nothing was deleted", path.display()))
    };
    let f = OpenOptions::new().write(true).create_new(true).open(path).map_err(fail)?;
    let mut w = BufWriter::new(f);
    for flow in flows {
        json::write_flow(&mut w, flow).map_err(fail)?;
    }
    w.flush().map_err(fail)?;
    w.get_ref().sync_all().map_err(fail)
}

fn nothing_matched(out: &mut impl Write, p: &EvictPlan) -> Result<Outcome, Failure> {
    if p.json {
        print_report(out, p, &Report::nothing(0, 0, p.dry_run))?;
    } else {
        eprintln!("ctguard: no flow matches; nothing deleted");
    }
    Ok(Outcome::NothingMatched)
}

fn print_report(out: &mut impl Write, p: &EvictPlan, r: &Report) -> Result<(), Failure> {
    if p.json {
        serde_json::to_writer(&mut *out, r).map_err(io::Error::from)?;
        writeln!(out)?;
    } else if p.list {
        r.write_text(&mut io::stderr())?;
    } else {
        r.write_text(out)?;
    }
    Ok(())
}

/// Prints the report, appends the audit line, and turns the outcome into the exit status.
fn finish(
    out: &mut impl Write,
    p: &EvictPlan,
    netns: Option<&str>,
    report: Report,
) -> Result<Outcome, Failure> {
    for f in &report.failures {
        eprintln!("ctguard: could not delete {}: {} (errno {})", f.flow, f.error, f.errno);
    }
    print_report(out, p, &report)?;
    audit(p, netns, &report);
    // Interrupted counts as unfinished even when the flows seen so far are all gone: the dump
    // may have been cut short before it saw the rest.
    if report.all_gone() && !report.interrupted {
        return Ok(Outcome::Ok);
    }
    out.flush()?;
    Err(Failure::Message(if report.interrupted || report.not_attempted > 0 {
        format!(
            "interrupted: {} of {} selected flows not attempted",
            report.not_attempted, report.selected
        )
    } else {
        format!("{} of {} selected flows could not be deleted", report.failed, report.selected)
    }))
}

/// Appends one JSON line for a real eviction; a warning, never a failure, if that fails.
fn audit(p: &EvictPlan, netns: Option<&str>, r: &Report) {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let inode = fs::read_link("/proc/thread-self/ns/net")
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default();
    let line = serde_json::json!({
        "time": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        "user": user,
        "uid": uid,
        "namespace": netns.unwrap_or("(current)"),
        "netns": inode,
        "selector": p.selector_text,
        "limit": p.limit,
        "rate": p.rate,
        "saved": p.save.as_ref().map(|s| s.display().to_string()),
        "method": r.method,
        "proof": r.proof,
        "matched": r.matched,
        "selected": r.selected,
        "deleted": r.deleted,
        "vanished": r.vanished,
        "failed": r.failed,
        "not_attempted": r.not_attempted,
        "interrupted": r.interrupted,
        "elapsed_s": r.elapsed_s,
    });
    let path = Path::new(&p.audit_log);
    let write = || -> io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let mut f = OpenOptions::new().create(true).append(true).open(path)?;
        // One write of the whole line, so concurrent evictions never interleave.
        f.write_all(format!("{line}\n").as_bytes())
    };
    if let Err(e) = write() {
        eprintln!(
            "ctguard: warning: audit log {}: {e} (the eviction itself is done)",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("50000/s"), Ok(50_000));
        assert_eq!(parse_rate("10"), Ok(10));
        for bad in ["0", "-5", "fast", "10/m", ""] {
            let e = parse_rate(bad).unwrap_err();
            assert!(e.contains("--rate") && !e.contains('\n'), "{e}");
        }
    }
}
