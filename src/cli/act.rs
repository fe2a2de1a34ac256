//! The run `evict` and `update` share: `evict`'s flags, the plan, and the run around the engine
//! in `ctguard::evict`: preview and confirmation, `--dry-run`, `--save` (in `save`), signals
//! (in `signals`), the report and the audit trail (`ctguard::audit`). `update` is the same run
//! with another act ([`Act::Update`]) and its own [`Words`].

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use clap::Args;

use ctguard::GuestMap;
use ctguard::audit::{self, Actor, AuditLog, RunInfo, Trail};
use ctguard::ctnetlink::{Act, Conntrack, DeleteProgress};
use ctguard::evict::{self, Ask, Before, Decision, Edges, Ran, Report, Seen, Selection, Strategy};
use ctguard::flow::Flow;
use ctguard::flushproof::Refusal;
use ctguard::output::{conntrack as ct_text, json, jsonl};
use ctguard::select::Selector;
use ctguard::sysctl::StateTimeouts;
use ctguard::tally::{GroupBy, Tally};

use crate::cli::batch;
use crate::cli::discovery::Pending;
use crate::cli::exit::{Failure, Outcome};
use crate::cli::expect;
use crate::cli::parse;
use crate::cli::progress::Bar;
use crate::cli::save::{self, SaveFile};
use crate::cli::select_args::{self, SelectArgs};
use crate::cli::signals;
use crate::cli::term::Term;

const EVICT_EXIT_STATUS: &str = "\
EXIT STATUS:
  0  every selected flow is dealt with: deleted, vanished by itself, or left alone because
     it changed (no longer matches) or its tuple now belongs to a new entry; a --dry-run
     that matched
  1  nothing matched, or the question was answered no
  2  bad input (nothing was touched), an audit log that cannot be written (nothing was
     touched), a delete the kernel refused, or interrupted (Ctrl-C, SIGTERM, SIGHUP)

No flow is deleted on a kernel answer older than 0.5 s: flows shown at the prompt, paced by
--rate or chosen by --limit are looked up again right before their delete and deleted only
if still the same entry and still selected. See the README's \"What a delete guarantees\".";

/// `ctguard evict`: delete exactly the selected flows.
#[derive(Debug, Args)]
#[command(after_help = EVICT_EXIT_STATUS)]
pub struct EvictArgs {
    /// Delete expectations instead of flows (`conntrack -D expect`): selected by -s, -d, -p,
    /// --sport, --dport, -f of the expected tuple, each deleted by tuple and id.
    #[arg(long)]
    pub expect: bool,
    /// Delete at most N flows, the most idle first.
    #[arg(long, value_name = "N", value_parser = limit)]
    pub limit: Option<u64>,
    /// Write the flows about to be deleted to FILE first (JSON Lines, as `list --json`;
    /// `ctguard load FILE` puts them back).
    #[arg(long, value_name = "FILE")]
    pub save: Option<String>,
    /// Delete by the `-D` lines of a `conntrack -R` file (`-` for stdin) instead of flags:
    /// one eviction per line, in order, each as if its flags were given here.
    #[arg(long, value_name = "FILE")]
    pub batch: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// The flags of a run `evict` and `update` share: how it asks, paces, reports and audits.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Every flow in the table (must be said explicitly; still asks, or needs --yes).
    #[arg(long)]
    pub all: bool,
    /// Do not ask: act at once (for scripts; also needed without a terminal).
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Change nothing; report what would be done.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: print every selected flow (conntrack -L lines, JSON Lines with --json).
    #[arg(long)]
    pub list: bool,
    /// Act on at most N flows a second (N or N/s).
    #[arg(long, value_name = "N/s", value_parser = parse::rate)]
    pub rate: Option<u32>,
    /// Append the audit records (intent before the first change, outcome after) to this file;
    /// if it cannot be written, nothing is changed. '' turns auditing off, like --no-audit.
    #[arg(long, value_name = "PATH", env = "CTGUARD_AUDIT_LOG", default_value = audit::DEFAULT_LOG)]
    pub audit_log: String,
    /// Write no audit records.
    #[arg(long)]
    pub no_audit: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--limit N`: a positive number of flows.
fn limit(s: &str) -> Result<u64, String> {
    parse::positive_of("--limit", " of flows", s)
}

/// The words of a run: `evict`'s, or `update`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Words {
    /// The command, as the audit records name it.
    pub command: &'static str,
    /// `Delete`, as the question asks.
    pub verb: &'static str,
    /// `deleted`.
    pub done: &'static str,
}

/// `evict`'s words.
pub const EVICT: Words = Words { command: "evict", verb: "Delete", done: "deleted" };

/// A validated `evict` (or `update`).
#[derive(Debug)]
pub struct EvictPlan {
    sel: Selector,
    guests: Arc<GuestMap>,
    /// What discovery owes the selection (`--guest` names) and the preview's owners.
    pending: Pending,
    selector_text: String,
    yes: bool,
    dry_run: bool,
    list: bool,
    limit: Option<u64>,
    rate: Option<u32>,
    save: Option<PathBuf>,
    /// `None`: auditing turned off.
    audit_log: Option<PathBuf>,
    json: bool,
    /// `--expect`: the expectation table instead of flows.
    expect: bool,
    /// What is done to each selected flow.
    pub act: Act,
    pub words: Words,
    /// For an update: what it sets, as given (the audit records carry it).
    pub change_text: Option<String>,
    /// `--batch`: the file and its `-D` lines (`-U` for an update), each run in turn instead
    /// of `sel`.
    batch: Option<(String, Vec<(usize, batch::Selected)>)>,
}

/// Checks every flag before anything is touched; a bad one is a one-line reason.
/// `update` shares these flags (but `--limit` and `--save`) and rules, with its own words.
pub fn plan_as(mut a: EvictArgs, words: Words) -> Result<EvictPlan, String> {
    let (command, verb) = (words.command, words.verb.to_lowercase());
    let batch = match a.batch.take() {
        Some(path) => Some(batch_lines(&a, path, words)?),
        None => None,
    };
    let select_args::Selection { sel, guests, pending } = a.select.selection()?;
    // An exclusion alone selects everything else: that is --all with an exception, and says so.
    let only_except = Selector { except: Vec::new(), ..sel.clone() }.is_empty();
    if a.run.all && !only_except {
        return Err("--all takes every flow (but --except); leave out the selecting flags, or \
                    --all"
            .into());
    }
    if only_except && !a.run.all && !sel.except.is_empty() {
        return Err("--except alone would take every other flow; add --all to mean that, or a \
                    selection"
            .into());
    }
    // With --batch each line is the selection; `sel` is never run.
    if only_except && !a.run.all && batch.is_none() {
        if a.expect {
            return Err("evict --expect needs a selection (e.g. -p tcp --dport 50000), or --all \
                        for every expectation"
                .into());
        }
        return Err(format!(
            "{command} needs a selection (e.g. --guest 172.16.3.5 --state ESTABLISHED), or \
             --all for every flow"
        ));
    }
    let (limit, rate) = (a.limit, a.run.rate);
    if a.expect {
        let refused = [("--limit", limit.is_some()), ("--rate", rate.is_some())];
        let refused =
            refused.into_iter().chain([("--save", a.save.is_some()), ("--batch", batch.is_some())]);
        if let Some((flag, _)) = refused.into_iter().find(|(_, given)| *given) {
            return Err(format!("{flag} does not apply to --expect"));
        }
        expect::check(&sel, None)?;
    }
    if a.run.list && !a.run.dry_run {
        return Err("--list prints what --dry-run would delete; add --dry-run".into());
    }
    let save = match &a.save {
        None => None,
        Some(s) if a.run.dry_run => {
            return Err(format!("--save {s} keeps what is deleted; --dry-run deletes nothing"));
        }
        Some(s) => Some(save::check(s)?),
    };
    if !a.run.yes && !a.run.dry_run && !io::stdin().is_terminal() {
        return Err(format!(
            "refusing to {command} without a terminal to confirm: add --yes to {verb}, or \
             --dry-run to see what would be {}",
            words.done
        ));
    }
    Ok(EvictPlan {
        selector_text: if a.run.all { "--all".into() } else { a.select.describe() },
        sel,
        guests,
        pending,
        yes: a.run.yes,
        dry_run: a.run.dry_run,
        list: a.run.list,
        limit,
        rate,
        save,
        audit_log: (!a.run.no_audit && !a.run.audit_log.is_empty())
            .then(|| PathBuf::from(a.run.audit_log)),
        json: a.run.json,
        expect: a.expect,
        act: Act::Delete,
        words,
        change_text: None,
        batch,
    })
}

/// The `-D` lines of `--batch FILE` (`-U` lines for `update`), read and parsed whole before
/// anything is touched; the selecting flags, `--all`, `--save` and `--limit` do not go with it.
fn batch_lines(
    a: &EvictArgs,
    path: String,
    words: Words,
) -> Result<(String, Vec<(usize, batch::Selected)>), String> {
    // `--guests` (or `$CTGUARD_GUESTS`) alone selects nothing: the lines without their own use it.
    let selects = !a.select.selection()?.sel.is_empty();
    let conflicts = [
        (selects, "selecting flags"),
        (a.run.all, "--all"),
        (a.save.is_some(), "--save"),
        (a.limit.is_some(), "--limit"),
    ];
    if let Some((_, what)) = conflicts.iter().find(|(given, _)| *given) {
        return Err(format!("--batch {path} with {what}: each batch line is its own selection"));
    }
    let updating = words.command == "update";
    let mut lines = Vec::new();
    for line in batch::read(&path, a.select.guests.as_deref())? {
        match line.op {
            batch::Op::Delete(d) if !updating => lines.push((line.number, *d)),
            batch::Op::Update(u) if updating => lines.push((line.number, *u)),
            _ => return Err(line.elsewhere(&path)),
        }
    }
    Ok((path, lines))
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
    fn new(guests: &Arc<GuestMap>) -> Preview {
        let by = select_args::default_group_by(guests);
        Preview {
            by_state: Tally::new(GroupBy::State, GuestMap::new()),
            by_owner: Tally::new(by, Arc::clone(guests)),
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

    fn write(
        &self,
        out: &mut impl Write,
        table: Option<u32>,
        limit: Option<u64>,
    ) -> io::Result<()> {
        let matched = self.by_state.total().total;
        match table {
            Some(t) if t > 0 => writeln!(
                out,
                "{matched} flows match ({:.1}% of the {t} in the table)",
                matched as f64 * 100.0 / f64::from(t)
            )?,
            _ => writeln!(out, "{matched} flows match")?,
        }
        let owner = if self.by_owner.by() == GroupBy::Guest { "by guest" } else { "by source" };
        for (title, tally) in [("by state", &self.by_state), (owner, &self.by_owner)] {
            let rows = tally.sorted();
            let shown: Vec<String> = rows
                .iter()
                .take(PREVIEW_GROUPS)
                .map(|(k, r)| format!("{} {}", ctguard::guests::escaped(&tally.label(k)), r.total))
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
        if let Some(n) = limit {
            writeln!(out, "  --limit {n}: at most {n} of them, the most idle first")?;
        }
        Ok(())
    }
}

/// The question before deleting (or updating): how many of what (`flows`, `expectations`),
/// and in which namespace.
fn question(verb: &str, n: u64, what: &str, netns: Option<&str>) -> String {
    match netns {
        Some(ns) => format!("{verb} {n} {what} in netns {ns}? [y/N] "),
        None => format!("{verb} {n} {what} in the current network namespace? [y/N] "),
    }
}

/// Asks on the terminal; true only for y/yes. A stopping signal ends the wait (as a no): the
/// handlers restart a blocked read, so stdin is polled, a quarter second at a time.
fn confirm(verb: &str, n: u64, what: &str, netns: Option<&str>) -> bool {
    eprint!("{}", question(verb, n, what, netns));
    let _ = io::stderr().flush();
    let mut stdin = libc::pollfd { fd: libc::STDIN_FILENO, events: libc::POLLIN, revents: 0 };
    loop {
        if signals::stopped() {
            eprintln!();
            return false;
        }
        // SAFETY: one valid pollfd, and its count.
        let ready = unsafe { libc::poll(&mut stdin, 1, 250) };
        if ready > 0 {
            break;
        }
        if ready < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
        }
    }
    let mut answer = String::new();
    if io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Runs the eviction: the signal handlers and the audit log first (a log that cannot be
/// written refuses the run before anything is touched), then the eviction; an audit intent
/// the eviction left without an outcome (an error, nothing matched) gets one here.
pub fn run(
    ct: &mut Conntrack,
    mut p: EvictPlan,
    netns: Option<&str>,
    term: &Term,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
    match p.batch.take() {
        None => {
            // In the namespace, before anything is touched: a name found nowhere is refused.
            let owners = !p.expect;
            std::mem::take(&mut p.pending).resolve(&mut p.sel, &mut p.guests, owners)?;
            run_one(ct, p, netns, term, out)
        }
        Some((path, lines)) => {
            // One eviction per line, in order, as conntrack -R runs them; the first failure
            // ends the batch. Exit 1 only when no line matched anything.
            let mut outcome = Outcome::NothingMatched;
            for (number, d) in lines {
                let line = EvictPlan {
                    sel: d.sel,
                    guests: d.guests,
                    pending: Pending::default(),
                    selector_text: format!("--batch {path}:{number} {}", d.text),
                    save: None,
                    audit_log: p.audit_log.clone(),
                    act: d.act,
                    change_text: d.change,
                    batch: None,
                    ..p
                };
                if run_one(ct, line, netns, term, out)? == Outcome::Ok {
                    outcome = Outcome::Ok;
                }
            }
            Ok(outcome)
        }
    }
}

/// One eviction of `p.sel`.
fn run_one(
    ct: &mut Conntrack,
    p: EvictPlan,
    netns: Option<&str>,
    term: &Term,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
    let stop = signals::install()?;
    let mut trail = open_trail(&p, netns)?;
    let act = p.act;
    let result = if p.expect {
        let e = expect::EvictExpect {
            sel: &p.sel,
            yes: p.yes,
            dry_run: p.dry_run,
            list: p.list,
            json: p.json,
        };
        expect::evict(
            ct,
            &e,
            stop,
            &mut trail,
            |n| confirm("Delete", n, "expectations", netns),
            out,
        )
    } else {
        // The deletes' bar: on a terminal, not for JSON, nor a dry run (nothing is deleted).
        let bar = term.progress_unless(p.json || p.dry_run);
        evict(ct, p, netns, stop, bar, &mut trail, out)
    };
    if trail.pending() {
        // Nothing matched: a report of nothing. An error: no counts, they are not known.
        let (counts, error) = match &result {
            Ok(_) => {
                (serde_json::to_value(AsJson(&Report::nothing(0, 0, false).of_act(act))).ok(), None)
            }
            Err(Failure::Message(m)) => (None, Some(m.clone())),
            Err(Failure::Output(e)) => (None, Some(format!("writing output: {e}"))),
        };
        let counts = counts.unwrap_or_else(|| serde_json::json!({}));
        if let Err(e) = trail.outcome(&counts, signals::caught(), error.as_deref()) {
            eprintln!("ctguard: warning: {e}");
        }
    }
    result
}

/// The audit trail of this run: none for `--dry-run` or `--no-audit`; else the log, opened
/// (and checked) now, before anything is touched.
fn open_trail(p: &EvictPlan, netns: Option<&str>) -> Result<Trail, Failure> {
    let info = RunInfo::new(p.words.command, Actor::current(), netns, p.selector_text.clone())
        .with_pace(p.limit, p.rate)
        .with_save(p.save.as_deref())
        .with_change(p.change_text.clone());
    let log = match &p.audit_log {
        Some(path) if !p.dry_run => Some(AuditLog::open(path).map_err(|e| {
            let done = p.words.done;
            Failure::Message(format!(
                "{e}; nothing was {done} (--no-audit runs without an audit trail)"
            ))
        })?),
        _ => None,
    };
    Ok(Trail::new(log, info))
}

/// Writes the audit intent before the first delete; if it cannot be written, nothing is
/// deleted.
fn intent(trail: &mut Trail, selected: Option<u64>, w: &Words) -> Result<(), Failure> {
    trail.intent(selected).map_err(|e| Failure::Message(format!("{e}; nothing was {}", w.done)))
}

/// The failure for a stopping signal before the first delete.
fn interrupted_before_deleting(p: &EvictPlan, during: &str) -> Failure {
    let signal = signals::caught().unwrap_or("a signal");
    let saved = match &p.save {
        Some(path) => format!("; {} was not written", path.display()),
        None => String::new(),
    };
    let done = p.words.done;
    Failure::Message(format!("interrupted by {signal} {during}; nothing was {done}{saved}"))
}

/// How often the deletes' bar looks at their progress.
const BAR_TICK: Duration = Duration::from_millis(100);

/// The deletes' bar template: flows dealt with of those selected, the rate, and with `--rate`
/// the time left.
fn bar_template(p: &EvictPlan) -> String {
    let left = if p.rate.is_some() { ", {eta} left" } else { "" };
    format!(
        "ctguard: {}: {{pos}}/{{len}} flows {} ({{per_sec:0}}{left}) [{{wide_bar}}]",
        p.words.command, p.words.done
    )
}

/// Draws the deletes' bar from `progress` (once they have run a second) until `finished`
/// hangs up; the bar is cleared then, before the report is printed.
fn draw_deletes(progress: &DeleteProgress, finished: &mpsc::Receiver<()>, template: &str) {
    let mut bar: Option<Bar> = None;
    while let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(BAR_TICK) {
        let selected = progress.selected.load(Ordering::Relaxed);
        if selected == 0 {
            continue;
        }
        let bar = bar.get_or_insert_with(|| Bar::new(true, template, Some(selected)));
        bar.set_len(selected);
        bar.set(progress.done.load(Ordering::Relaxed));
    }
}

fn evict(
    ct: &mut Conntrack,
    mut p: EvictPlan,
    netns: Option<&str>,
    stop: &'static AtomicBool,
    bar: bool,
    trail: &mut Trail,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
    if p.sel.idle_min.is_some() || p.limit.is_some() {
        p.sel.timeouts = Some(StateTimeouts::read());
    }
    let ask = Ask {
        yes: p.yes,
        dry_run: p.dry_run,
        limit: p.limit,
        rate: p.rate,
        save: p.save.is_some(),
        kernel: ctguard::kernel::release(),
        act: p.act,
    };
    let strategy = Strategy::choose(&p.sel, &ask);

    /// This command's part of the run: the preview, --list, --save, the question, the audit
    /// trail and the words of each refusal.
    struct Cli<'a, W: Write> {
        p: &'a EvictPlan,
        netns: Option<&'a str>,
        trail: &'a mut Trail,
        out: &'a mut W,
        preview: Preview,
        show_preview: bool,
        save: Option<SaveFile>,
        save_err: Option<io::Error>,
        list_err: Option<io::Error>,
    }

    impl<W: Write> Edges for Cli<'_, W> {
        type Error = Failure;

        fn interrupted(&mut self, before: Before) -> Failure {
            let during = match before {
                Before::Flush => "before the flush",
                Before::FlushProof => "during the flush's proof",
                Before::Selection => "during the selection",
                Before::Question => "at the question",
            };
            interrupted_before_deleting(self.p, during)
        }

        fn intent(&mut self, selected: Option<u64>) -> Result<(), Failure> {
            intent(self.trail, selected, &self.p.words)
        }

        fn unproven(&mut self, why: &Refusal) {
            eprintln!(
                "ctguard: note: the filtered flush was not proven in a scratch namespace ({why}); \
                 dumping and deleting flow by flow"
            );
        }

        fn seen(&mut self, seen: Seen<'_>) {
            match seen {
                Seen::Flow(flow) => {
                    if self.show_preview {
                        self.preview.add(flow);
                    }
                    if let Some(s) = self.save.as_mut()
                        && self.save_err.is_none()
                        && let Err(e) = s.write(flow)
                    {
                        self.save_err = Some(e);
                    }
                    if self.p.list && self.list_err.is_none() {
                        let r = if self.p.json {
                            json::write_flow(self.out, flow)
                        } else {
                            ct_text::write_line(self.out, flow)
                        };
                        self.list_err = r.err();
                    }
                }
                Seen::Restart => {
                    self.preview.clear();
                    if let Some(s) = self.save.as_mut()
                        && let Err(e) = s.restart()
                    {
                        self.save_err = Some(e);
                    }
                }
            }
        }

        fn selected(&mut self, _: &Selection) -> Result<(), Failure> {
            if let Some(e) = self.list_err.take() {
                return Err(Failure::Output(e));
            }
            if let Some(e) = self.save_err.take() {
                let f = self.save.as_ref().map(|s| s.fail(e));
                return Err(f.unwrap_or_else(|| Failure::Message("--save failed".into())));
            }
            Ok(())
        }

        fn decide(
            &mut self,
            ct: &mut Conntrack,
            selection: &Selection,
        ) -> Result<Decision, Failure> {
            let (p, selected) = (self.p, selection.keys.len() as u64);
            let table = ct.table_stats().ok().map(|t| t.count);
            let mut text = Vec::new();
            self.preview.write(&mut text, table, p.limit)?;
            if p.dry_run {
                // The summary goes where the report goes, unless --list fills stdout with flows.
                let report = Report::nothing(selection.matched, selected, true).of_act(p.act);
                if p.list || p.json {
                    io::stderr().write_all(&text)?;
                } else {
                    self.out.write_all(&text)?;
                }
                print_report(self.out, p, &report)?;
                return Ok(Decision::DryRun);
            }
            io::stderr().write_all(&text)?;
            let verb = p.words.verb;
            Ok(if confirm(verb, selected, "flows", self.netns) {
                Decision::Delete
            } else {
                Decision::Decline
            })
        }

        fn before_deletes(&mut self, selection: &Selection) -> Result<(), Failure> {
            // Written and synced before the first delete.
            if let Some(s) = self.save.take() {
                s.commit()?;
            } else if let Some(path) = &self.p.save {
                SaveFile::write_all(path, &selection.flows)?;
            }
            Ok(())
        }
    }

    let save = match (&p.save, p.limit) {
        (Some(path), None) => Some(SaveFile::create(path)?),
        _ => None,
    };
    let mut cli = Cli {
        p: &p,
        netns,
        trail,
        out,
        preview: Preview::new(&p.guests),
        show_preview: p.dry_run || !p.yes,
        save,
        save_err: None,
        list_err: None,
    };
    let progress = DeleteProgress::default();
    let template = bar.then(|| bar_template(&p));
    let (finished, drawing) = mpsc::channel::<()>();
    // On an early return the temporary --save file is removed (its drop, with `cli`).
    let ran = std::thread::scope(|scope| {
        if let Some(template) = template {
            let progress = &progress;
            scope.spawn(move || draw_deletes(progress, &drawing, &template));
        }
        let ran = evict::run(ct, &p.sel, &ask, &strategy, stop, Some(&progress), &mut cli);
        // The bar is cleared (the scope joins its thread) before anything else is printed.
        drop(finished);
        ran
    })?;
    drop(cli);
    match ran {
        Ran::Deleted(report) => finish(out, &p, trail, report),
        Ran::NothingMatched => nothing_matched(out, &p),
        Ran::Declined => {
            eprintln!("ctguard: nothing {}", p.words.done);
            Ok(Outcome::NothingMatched)
        }
        Ran::DryRun => Ok(Outcome::Ok),
    }
}

fn nothing_matched(out: &mut impl Write, p: &EvictPlan) -> Result<Outcome, Failure> {
    if p.json {
        print_report(out, p, &Report::nothing(0, 0, p.dry_run).of_act(p.act))?;
    } else {
        eprintln!("ctguard: no flow matches; nothing {}", p.words.done);
    }
    Ok(Outcome::NothingMatched)
}

/// The report as its JSON holds it: `evict`'s as [`Report`] serialises (its keys in its
/// order); an update's with `updated` for `deleted` (docs/json-schema.md).
struct AsJson<'a>(&'a Report);

impl serde::Serialize for AsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !self.0.update {
            return self.0.serialize(s);
        }
        let mut v = serde_json::to_value(self.0).map_err(serde::ser::Error::custom)?;
        if let Some(map) = v.as_object_mut()
            && let Some(n) = map.remove("deleted")
        {
            map.insert("updated".into(), n);
        }
        v.serialize(s)
    }
}

fn print_report(out: &mut impl Write, p: &EvictPlan, r: &Report) -> Result<(), Failure> {
    if p.json {
        jsonl::write_line(out, &AsJson(r))?;
    } else if p.list {
        r.write_text(&mut io::stderr())?;
    } else {
        r.write_text(out)?;
    }
    Ok(())
}

/// Prints the report, appends the audit outcome, and turns the outcome into the exit status.
/// The eviction's outcome wins over the output's: when stdout is gone (a closed pipe), the
/// report goes to stderr and an unfinished eviction still exits 2.
fn finish(
    out: &mut impl Write,
    p: &EvictPlan,
    trail: &mut Trail,
    report: Report,
) -> Result<Outcome, Failure> {
    let verb = p.words.verb.to_lowercase();
    for f in &report.failures {
        eprintln!("ctguard: could not {verb} {}: {} (errno {})", f.flow, f.error, f.errno);
    }
    if matches!(p.act, Act::Update(c) if c.labels.is_some())
        && report.failures.iter().any(|f| f.errno == libc::ENOSPC)
    {
        eprintln!(
            "ctguard: note: ENOSPC: the flow has no room for labels; the kernel gives it only to \
             flows created while a label user (an nft `ct label` rule, xt_connlabel) exists in \
             the namespace"
        );
    }
    let printed = print_report(out, p, &report).and_then(|()| Ok(out.flush()?));
    if let Err(e) = trail.outcome(&AsJson(&report), signals::caught(), None) {
        eprintln!("ctguard: warning: {e} (the {} itself is done)", p.words.command);
    }
    let status = status_of(&report, &p.words);
    match printed {
        Ok(()) => status,
        Err(e) => {
            if let Failure::Output(io) = &e
                && io.kind() != io::ErrorKind::BrokenPipe
            {
                eprintln!("ctguard: writing the report: {io}");
            }
            let _ = report.write_text(&mut io::stderr());
            // A successful eviction whose report could not be written is still a success
            // (a closed pipe exits 0 quietly); an unfinished one is never turned into one.
            match status {
                Ok(_) => Err(e),
                failed => failed,
            }
        }
    }
}

/// The exit status a report means.
fn status_of(report: &Report, w: &Words) -> Result<Outcome, Failure> {
    // Interrupted counts as unfinished even when the flows seen so far are all gone: the dump
    // may have been cut short before it saw the rest.
    if report.all_gone() && !report.interrupted {
        return Ok(Outcome::Ok);
    }
    let by = signals::caught().map(|s| format!(" by {s}")).unwrap_or_default();
    Err(Failure::Message(if report.interrupted && report.matched == 0 {
        format!("interrupted{by} during the selection; nothing was {}", w.done)
    } else if report.interrupted || report.not_attempted > 0 {
        format!(
            "interrupted{by}: {} of {} selected flows not attempted",
            report.not_attempted, report.selected
        )
    } else {
        format!("{} of {} selected flows could not be {}", report.failed, report.selected, w.done)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_16_the_deletes_bar_says_what_is_done_and_with_rate_the_time_left() {
        #[derive(clap::Parser)]
        struct Line {
            #[command(flatten)]
            args: EvictArgs,
        }
        let plan = |argv: &[&str]| {
            let a = <Line as clap::Parser>::try_parse_from(argv).expect("parse").args;
            plan_as(a, EVICT).expect("plan")
        };
        let t = bar_template(&plan(&["evict", "--yes", "--all"]));
        assert_eq!(t, "ctguard: evict: {pos}/{len} flows deleted ({per_sec:0}) [{wide_bar}]");
        let t = bar_template(&plan(&["evict", "--yes", "--all", "--rate", "100"]));
        assert!(t.contains("({per_sec:0}, {eta} left)"), "{t}");
        assert!(indicatif::ProgressStyle::with_template(&t).is_ok(), "{t}");
    }

    #[test]
    fn issue_9_15_the_question_names_the_namespace() {
        assert_eq!(
            question("Delete", 240_000, "flows", Some("guests")),
            "Delete 240000 flows in netns guests? [y/N] "
        );
        assert_eq!(
            question("Delete", 3, "flows", None),
            "Delete 3 flows in the current network namespace? [y/N] "
        );
        assert_eq!(
            question("Delete", 2, "expectations", None),
            "Delete 2 expectations in the current network namespace? [y/N] "
        );
    }

    #[test]
    fn issue_9_15_the_preview_says_by_source_unless_grouping_by_guest() {
        let text = |guests: &GuestMap| {
            let mut v = Vec::new();
            Preview::new(&Arc::new(guests.clone())).write(&mut v, None, None).expect("write");
            String::from_utf8(v).expect("utf8")
        };
        let by_src = text(&GuestMap::new());
        assert!(by_src.contains("  by source: ") && !by_src.contains("by guest"), "{by_src}");
        let mut guests = GuestMap::new();
        guests.add("web", vec!["172.16.3.0/24".parse().expect("cidr")]);
        let by_guest = text(&guests);
        assert!(by_guest.contains("  by guest: ") && !by_guest.contains("by source"), "{by_guest}");
    }
}
