//! Runs a plan: enter the namespace, open the socket, stream, print. Returns the exit code.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::ops::ControlFlow;

use ctguard::ctnetlink::{self, Conntrack, DumpSummary};
use ctguard::flow::Flow;
use ctguard::output::report::{Fill, Ranking, StatsReport};
use ctguard::output::{conntrack as ct_text, json};
use ctguard::select::Selector;
use ctguard::sysctl::{self, StateTimeouts};
use ctguard::tally::{GroupBy, Tally};
use ctguard::{GuestMap, netns};

use super::plan::{Job, Plan};

/// Exit status, documented in the README and `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 0.
    Ok,
    /// 1: nothing matched.
    NothingMatched,
    /// 1: trouble found (doctor: at risk or full).
    Trouble,
}

/// A failure: printed as `ctguard: <message>`, exit 2.
#[derive(Debug)]
pub enum Failure {
    /// Something the operator must fix.
    Message(String),
    /// Writing our output failed (a closed pipe is not an error).
    Output(io::Error),
}

impl From<ctnetlink::Error> for Failure {
    fn from(e: ctnetlink::Error) -> Self {
        Failure::Message(e.to_string())
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Output(e)
    }
}

/// How often a dump that overran our buffer is tried again before giving up.
const DUMP_ATTEMPTS: usize = 3;

/// Runs the plan.
pub fn run(plan: Plan) -> Result<Outcome, Failure> {
    if let Some(ns) = &plan.netns {
        netns::enter(ns).map_err(Failure::Message)?;
    }
    let mut ct = Conntrack::open()?;
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let outcome = match plan.job {
        Job::Top { sel, by, guests, limit, json } => {
            let fill = fill(&mut ct)?;
            let tally = tally(&mut ct, sel, by, guests)?;
            let ranking = Ranking::new(&tally, Some(fill), Some(limit));
            print_report(&mut out, &ranking, json, true)?;
            Outcome::Ok
        }
        Job::Count { sel, by, guests, json } => {
            let tally = tally(&mut ct, sel, by.unwrap_or(GroupBy::All), guests)?;
            let matched = tally.total().total;
            match by {
                None if json => writeln!(out, "{}", serde_json::json!({ "matched": matched }))?,
                None => writeln!(out, "{matched}")?,
                Some(_) => print_report(&mut out, &Ranking::new(&tally, None, None), json, false)?,
            }
            if matched == 0 { Outcome::NothingMatched } else { Outcome::Ok }
        }
        Job::List { sel, json } => {
            let sel = with_timeouts(sel);
            let mut shown = 0u64;
            let mut err = None;
            let summary = ct.dump(&sel.kernel_filter(), |flow| {
                if !sel.matches(flow) {
                    return ControlFlow::Continue(());
                }
                shown += 1;
                let r = if json {
                    json::write_flow(&mut out, flow)
                } else {
                    ct_text::write_line(&mut out, flow)
                };
                match r {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(e) => {
                        err = Some(e);
                        ControlFlow::Break(())
                    }
                }
            })?;
            if let Some(e) = err {
                return Err(Failure::Output(e));
            }
            warn_inconsistent(&summary);
            if io::stderr().is_terminal() {
                eprintln!("ctguard: {shown} flow entries shown");
            }
            if shown == 0 { Outcome::NothingMatched } else { Outcome::Ok }
        }
        Job::Stats { json, per_cpu } => {
            let fill = fill(&mut ct)?;
            let cpus = ct.cpu_stats()?;
            let report = StatsReport::new(fill, &cpus, per_cpu);
            if json {
                serde_json::to_writer(&mut out, &report).map_err(io::Error::from)?;
                writeln!(out)?;
            } else {
                report.write_text(&mut out)?;
            }
            Outcome::Ok
        }
        Job::Create { flow } => {
            let mut failed = None;
            ct.create(std::slice::from_ref(&*flow), |_, errno| failed = Some(errno))?;
            if let Some(errno) = failed {
                return Err(Failure::Message(format!("create: {}", errno_text(errno))));
            }
            Outcome::Ok
        }
        Job::Load { path } => load(&mut ct, &path)?,
        Job::Doctor(p) => super::doctor::doctor(&mut ct, p, plan.netns.as_deref(), &mut out)?,
        Job::Tune { apply, persist, json } => {
            super::doctor::tune(&mut ct, apply, persist.as_deref(), json, &mut out)?
        }
        Job::Events(job) => super::live::events(job, &mut out)?,
        Job::Watch(job) => super::live::watch(&mut ct, job, &mut out)?,
        Job::Evict(p) => super::evict::run(&mut ct, *p, plan.netns.as_deref(), &mut out)?,
    };
    out.flush()?;
    Ok(outcome)
}

fn errno_text(errno: i32) -> String {
    match errno {
        libc::EEXIST => "the flow already exists (EEXIST)".into(),
        libc::ENOMEM => "the table is full (ENOMEM)".into(),
        libc::EPERM => "permission denied: ctguard needs CAP_NET_ADMIN (run it as root)".into(),
        e => io::Error::from_raw_os_error(e).to_string(),
    }
}

fn with_timeouts(mut sel: Selector) -> Selector {
    if sel.idle_min.is_some() {
        sel.timeouts = Some(StateTimeouts::read());
    }
    sel
}

fn warn_inconsistent(s: &DumpSummary) {
    if s.interrupted {
        eprintln!(
            "ctguard: warning: the kernel flagged the dump as inconsistent (NLM_F_DUMP_INTR); counts may be off"
        );
    }
}

pub(super) fn fill(ct: &mut Conntrack) -> Result<Fill, Failure> {
    Ok(Fill::new(ct.table_stats()?, sysctl::read("nf_conntrack_buckets")))
}

/// One streaming pass: select, then count. A dump that overran is counted again from scratch.
pub(super) fn tally(
    ct: &mut Conntrack,
    sel: Selector,
    by: GroupBy,
    guests: GuestMap,
) -> Result<Tally, Failure> {
    let sel = with_timeouts(sel);
    let filter = sel.kernel_filter();
    let mut tally = Tally::new(by, guests);
    for attempt in 1..=DUMP_ATTEMPTS {
        tally.clear();
        let r = ct.dump(&filter, |flow: &Flow| {
            if sel.matches(flow) {
                tally.add(flow);
            }
            ControlFlow::Continue(())
        });
        match r {
            Ok(summary) => {
                warn_inconsistent(&summary);
                return Ok(tally);
            }
            Err(ctnetlink::Error::Overrun { .. }) if attempt < DUMP_ATTEMPTS => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(tally)
}

fn print_report(
    out: &mut impl Write,
    report: &Ranking<'_>,
    json: bool,
    states: bool,
) -> Result<(), Failure> {
    if json {
        report.write_json(out)?;
    } else {
        report.write_text(out, states)?;
    }
    Ok(())
}

/// Flows per kernel request batch while loading.
const LOAD_CHUNK: usize = 4096;

fn load(ct: &mut Conntrack, path: &str) -> Result<Outcome, Failure> {
    let input: Box<dyn io::BufRead> = if path == "-" {
        Box::new(io::BufReader::new(io::stdin()))
    } else {
        let f = std::fs::File::open(path).map_err(|e| Failure::Message(format!("{path}: {e}")))?;
        Box::new(io::BufReader::new(f))
    };
    // Parse everything first: a bad line means nothing is created. The error is one line: the
    // first bad line, and how many more there are.
    let mut flows = Vec::new();
    let (mut first_bad, mut bad_lines) = (None, 0usize);
    for r in json::read_flows(input) {
        match r {
            Ok(f) => flows.push(f),
            Err(e) => {
                first_bad.get_or_insert_with(|| e.to_string());
                bad_lines += 1;
            }
        }
    }
    if let Some(first) = first_bad {
        let more = if bad_lines > 1 {
            format!(" (and {} more bad lines)", bad_lines - 1)
        } else {
            String::new()
        };
        return Err(Failure::Message(format!("{path}: {first}{more}; nothing was created")));
    }
    let (mut created, mut existed, mut failed) = (0u64, 0u64, 0u64);
    for chunk in flows.chunks(LOAD_CHUNK) {
        let mut bad = 0u64;
        ct.create(chunk, |_, errno| {
            if errno == libc::EEXIST {
                existed += 1;
            } else {
                if failed < 5 {
                    eprintln!("ctguard: load: {}", errno_text(errno));
                }
                failed += 1;
            }
            bad += 1;
        })?;
        created += chunk.len() as u64 - bad;
    }
    eprintln!("ctguard: load: {created} created, {existed} already present, {failed} failed");
    if failed > 0 {
        return Err(Failure::Message(format!("load: {failed} flows could not be created")));
    }
    Ok(Outcome::Ok)
}
