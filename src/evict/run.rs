//! One eviction run from start to report: the chosen [`Strategy`] carried out, with what is
//! not the engine's (preview, question, `--save`, the audit trail, the words of a refusal)
//! injected as [`Edges`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::{
    Ask, ProvenFlush, Report, Seen, Selection, Strategy, delete_chosen, proven_flush, select,
    streamed,
};
use crate::ctnetlink::{self, Conntrack, DeleteProgress};
use crate::flushproof::Refusal;
use crate::select::Selector;

/// Where a stopping signal found a run, before its first delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    /// Before the kernel flush's proof began.
    Flush,
    /// During the flush's proof: the real flush was not sent.
    FlushProof,
    /// During the selection dump.
    Selection,
    /// At the question.
    Question,
}

/// What the user said to the selection ([`Edges::decide`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Delete it.
    Delete,
    /// No.
    Decline,
    /// A dry run: it was shown, nothing is deleted.
    DryRun,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ran {
    /// Deletes (or a flush) were made: what they did.
    Deleted(Report),
    /// No flow matched; nothing was deleted.
    NothingMatched,
    /// The question was answered no; nothing was deleted.
    Declined,
    /// A dry run, shown by [`Edges::decide`]; nothing was deleted.
    DryRun,
}

/// What a run needs from its caller. Each is called at most once, but [`Edges::seen`].
pub trait Edges {
    /// The caller's error; kernel errors convert into it.
    type Error: From<ctnetlink::Error>;
    /// The error for a stopping signal before the first delete.
    fn interrupted(&mut self, before: Before) -> Self::Error;
    /// The audit intent, before the first delete (`None`: the count is not known yet). An
    /// error here deletes nothing.
    fn intent(&mut self, selected: Option<u64>) -> Result<(), Self::Error>;
    /// The flush's proof did not hold: the run deletes flow by flow instead.
    fn unproven(&mut self, why: &Refusal);
    /// [`Strategy::SelectFirst`]: each flow the selection dump matched, or its restart.
    fn seen(&mut self, seen: Seen<'_>);
    /// [`Strategy::SelectFirst`]: the selection dump is complete (and not interrupted); an
    /// error of what [`Edges::seen`] did ends the run here.
    fn selected(&mut self, selection: &Selection) -> Result<(), Self::Error>;
    /// [`Strategy::SelectFirst`], a matching selection, `--dry-run` or no `--yes`: show it,
    /// and ask (or, for a dry run, report it).
    fn decide(
        &mut self,
        ct: &mut Conntrack,
        selection: &Selection,
    ) -> Result<Decision, Self::Error>;
    /// [`Strategy::SelectFirst`], decided: the last step before the audit intent and the
    /// first delete (`--save` writes and syncs its file here).
    fn before_deletes(&mut self, selection: &Selection) -> Result<(), Self::Error>;
}

/// Carries out `strategy` (the one [`Strategy::choose`] gave for `sel` and `ask`) on `ct`,
/// stopping once `stop` is set. The report's `elapsed_s` is the deleting time: from the start,
/// or, after a question, from the answer. `progress`, when given, follows the deletes (not
/// the selection, nor a flush: one request).
pub fn run<E: Edges>(
    ct: &mut Conntrack,
    sel: &Selector,
    ask: &Ask,
    strategy: &Strategy,
    stop: &AtomicBool,
    progress: Option<&DeleteProgress>,
    edges: &mut E,
) -> Result<Ran, E::Error> {
    let started = Instant::now();
    let stopped = || stop.load(Ordering::Relaxed);
    match strategy {
        Strategy::ProvenFlush(filter) => {
            if stopped() {
                return Err(edges.interrupted(Before::Flush));
            }
            edges.intent(None)?;
            match proven_flush(ct, sel, filter, stop)? {
                ProvenFlush::Flushed { removed: 0, .. } if !stopped() => {
                    return Ok(Ran::NothingMatched);
                }
                ProvenFlush::Flushed { proof, removed } => {
                    let mut report = Report::proven(proof, removed);
                    // A signal after the flush went: it is done whole, but the run says so.
                    report.interrupted = stopped();
                    report.elapsed_s = started.elapsed().as_secs_f64();
                    return Ok(Ran::Deleted(report));
                }
                ProvenFlush::Stopped => return Err(edges.interrupted(Before::FlushProof)),
                ProvenFlush::Refused(why) => edges.unproven(&why),
            }
            Ok(streamed_run(ct, sel, ask, stop, started, progress)?)
        }
        Strategy::Streamed => {
            edges.intent(None)?;
            Ok(streamed_run(ct, sel, ask, stop, started, progress)?)
        }
        Strategy::SelectFirst => select_first(ct, sel, ask, stop, progress, edges),
    }
}

fn streamed_run(
    ct: &mut Conntrack,
    sel: &Selector,
    ask: &Ask,
    stop: &AtomicBool,
    started: Instant,
    progress: Option<&DeleteProgress>,
) -> Result<Ran, ctnetlink::Error> {
    let mut report = streamed(ct, sel, ask.rate, ask.act, stop, progress)?;
    if report.matched == 0 && report.complete && !stop.load(Ordering::Relaxed) {
        return Ok(Ran::NothingMatched);
    }
    report.elapsed_s = started.elapsed().as_secs_f64();
    Ok(Ran::Deleted(report))
}

fn select_first<E: Edges>(
    ct: &mut Conntrack,
    sel: &Selector,
    ask: &Ask,
    stop: &AtomicBool,
    progress: Option<&DeleteProgress>,
    edges: &mut E,
) -> Result<Ran, E::Error> {
    let keep_flows = ask.save && ask.limit.is_some();
    let selection = select(ct, sel, ask.limit, keep_flows, stop, |seen| edges.seen(seen))?;
    if stop.load(Ordering::Relaxed) {
        return Err(edges.interrupted(Before::Selection));
    }
    edges.selected(&selection)?;
    if selection.matched == 0 {
        return Ok(Ran::NothingMatched);
    }
    if ask.dry_run || !ask.yes {
        match edges.decide(ct, &selection)? {
            Decision::DryRun => return Ok(Ran::DryRun),
            _ if stop.load(Ordering::Relaxed) => return Err(edges.interrupted(Before::Question)),
            Decision::Decline => return Ok(Ran::Declined),
            Decision::Delete => {}
        }
    }
    // The deleting is timed from here: the selection and the time at the prompt are not in it.
    let started = Instant::now();
    edges.before_deletes(&selection)?;
    edges.intent(Some(selection.keys.len() as u64))?;
    let mut report = delete_chosen(&selection, sel, ask.rate, ask.act, stop, progress)?;
    report.elapsed_s = started.elapsed().as_secs_f64();
    Ok(Ran::Deleted(report))
}
