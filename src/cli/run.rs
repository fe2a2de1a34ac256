//! Runs a plan: enter the namespace, open the socket, stream, print. Returns the exit code.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::ops::ControlFlow;
use std::sync::Arc;

use ctguard::ctnetlink::{self, Conntrack, DumpSummary, Dumped};
use ctguard::flow::Flow;
use ctguard::output::report::{Ranking, StatsReport};
use ctguard::output::{conntrack as ct_text, json, jsonl};
use ctguard::select::Selector;
use ctguard::stats::Fill;
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
                jsonl::write_line(&mut out, &report)?;
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
        Job::Load { path, flows } => load(&mut ct, &path, &flows)?,
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
        libc::EPERM => ctnetlink::NEEDS_CAP_NET_ADMIN.into(),
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
    guests: impl Into<Arc<GuestMap>>,
) -> Result<Tally, Failure> {
    let sel = with_timeouts(sel);
    let filter = sel.kernel_filter();
    let mut tally = Tally::new(by, guests);
    let summary = ct.dump_retrying(&filter, |seen| {
        match seen {
            Dumped::Flow(flow, _) if sel.matches(flow) => tally.add(flow),
            Dumped::Flow(..) => {}
            Dumped::Restart => tally.clear(),
        }
        ControlFlow::Continue(())
    })?;
    warn_inconsistent(&summary);
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
/// Refused flows named one by one on stderr; the rest are counted.
const LOAD_ERRORS_SHOWN: u64 = 10;

/// Creates the parsed flows. EEXIST means either that an entry with this original tuple is
/// there (`ctnetlink_new_conntrack` with `NLM_F_EXCL` finds it), or that the new entry's reply
/// tuple clashes with another entry's (`nf_conntrack_hash_check_insert`); a lookup of the
/// original tuple tells which. Only the first is "already present", a clash is a failure.
fn load(ct: &mut Conntrack, path: &str, flows: &[(usize, Flow)]) -> Result<Outcome, Failure> {
    let (mut created, mut existed, mut failed) = (0u64, 0u64, 0u64);
    let mut report = |line: usize, flow: &Flow, why: &str| {
        if failed < LOAD_ERRORS_SHOWN {
            eprintln!("ctguard: load: {path}:{line}: {}: {why}", brief(flow));
        } else if failed == LOAD_ERRORS_SHOWN {
            eprintln!(
                "ctguard: load: more flows refused; only the first {LOAD_ERRORS_SHOWN} are shown"
            );
        }
        failed += 1;
    };
    let mut refused: Vec<(usize, i32)> = Vec::new();
    let mut chunk_flows: Vec<Flow> = Vec::with_capacity(LOAD_CHUNK);
    for chunk in flows.chunks(LOAD_CHUNK) {
        chunk_flows.clear();
        chunk_flows.extend(chunk.iter().map(|(_, f)| f.clone()));
        refused.clear();
        ct.create(&chunk_flows, |i, errno| refused.push((i, errno)))?;
        created += (chunk.len() - refused.len()) as u64;
        for &(i, errno) in &refused {
            let (line, flow) = &chunk[i];
            if errno != libc::EEXIST {
                report(*line, flow, &errno_text(errno));
                continue;
            }
            match ct.get(flow)? {
                Some(there) if there.proto == flow.proto && same_tuple(&there.orig, &flow.orig) => {
                    existed += 1
                }
                _ => report(
                    *line,
                    flow,
                    "its reply tuple clashes with another entry's (EEXIST), nothing created",
                ),
            }
        }
    }
    // After the creates: a load refused as a whole (EPERM) says only that.
    warn_not_restorable(flows);
    eprintln!("ctguard: load: {created} created, {existed} already present, {failed} failed");
    if failed > 0 {
        return Err(Failure::Message(format!("load: {failed} flows could not be created")));
    }
    Ok(Outcome::Ok)
}

/// The same tuple, whatever its directional zone field says (the kernel's lookup is by zone).
fn same_tuple(a: &ctguard::flow::Tuple, b: &ctguard::flow::Tuple) -> bool {
    (a.src, a.dst, a.l4) == (b.src, b.dst, b.l4)
}

/// Says once what the saved flows carry that a create cannot restore: the kernel sets these
/// itself (helper assignment, secmark from the ruleset, counters and timestamps from zero) or
/// they are attributes this build does not know.
fn warn_not_restorable(flows: &[(usize, Flow)]) {
    let count = |has: fn(&Flow) -> bool| flows.iter().filter(|(_, f)| has(f)).count();
    let lost: Vec<String> = [
        ("a helper", count(|f| f.helper.is_some())),
        ("a secmark", count(|f| f.secmark.is_some())),
        ("counters", count(|f| f.counters_orig.is_some() || f.counters_reply.is_some())),
        ("timestamps", count(|f| f.start_ns.is_some() || f.stop_ns.is_some())),
        ("unknown attributes", count(|f| !f.unknown.is_empty())),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(what, n)| format!("{n} with {what}"))
    .collect();
    if !lost.is_empty() {
        eprintln!(
            "ctguard: load: not restorable, created without: {} (the kernel sets these itself)",
            lost.join(", ")
        );
    }
}

/// A flow in a few words for messages: `tcp 10.0.0.1:40000 -> 10.0.0.2:443 zone 3`.
fn brief(f: &Flow) -> String {
    use ctguard::flow::L4;
    let end = |a: std::net::IpAddr, port: Option<u16>| match (a, port) {
        (std::net::IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    };
    let (sp, dp) = match f.orig.l4 {
        L4::Ports { src, dst } => (Some(src), Some(dst)),
        _ => (None, None),
    };
    let icmp = match f.orig.l4 {
        L4::Icmp { kind, code, id } => format!(" type {kind} code {code} id {id}"),
        _ => String::new(),
    };
    let zone = f.zone.map(|z| format!(" zone {z}")).unwrap_or_default();
    format!("{} {} -> {}{icmp}{zone}", f.proto, end(f.orig.src, sp), end(f.orig.dst, dp))
}
