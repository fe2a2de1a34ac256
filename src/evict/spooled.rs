//! Deletes with a record: the streamed deletes with a hook that sees every flow before its
//! delete can be sent ([`streamed_spooled`], the guard's spool of what it evicted), and the
//! eviction a program runs without a human ([`unattended`]).

use std::io;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use super::{
    Ask, BATCH, BATCHES_IN_FLIGHT, Before, Decision, Edges, Ran, Report, Seen, Selection, Strategy,
    Streamed, deleter, run, streamed,
};
use crate::ctnetlink::{self, Act, Conntrack, DeleteTally, Deleter, Dumped, Marked};
use crate::flow::Flow;
use crate::flushproof::Refusal;
use crate::select::Selector;
use crate::spool::Spool;

/// What runs in the dumping thread before a matched flow can be deleted: [`Spool`] writes it
/// down; any `FnMut(&Flow) -> io::Result<()>` is one too.
pub trait BeforeDelete {
    /// `flow` matched and is about to be queued for its delete. An error stops the run: this
    /// flow, and every flow not yet handed over, is not deleted.
    fn flow(&mut self, flow: &Flow) -> io::Result<()>;

    /// Every flow given to [`BeforeDelete::flow`] since the last call is about to be handed to
    /// the deleting thread (about a thousand at a time): the last moment before any of their
    /// deletes may be sent. An error stops the run, and none of them is deleted.
    fn handoff(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<F: FnMut(&Flow) -> io::Result<()>> BeforeDelete for F {
    fn flow(&mut self, flow: &Flow) -> io::Result<()> {
        self(flow)
    }
}

/// A spool writes each flow into its buffer and, at each handoff, hands the buffer to the
/// kernel: a deleted flow is in the file even if this process dies right after the delete
/// (a power cut before [`Spool::commit`] may lose the tail: a sync per handoff would cost an
/// fsync per thousand flows, far beyond the guard's budget for 240,000).
impl BeforeDelete for Spool {
    fn flow(&mut self, flow: &Flow) -> io::Result<()> {
        self.write(flow)
    }

    fn handoff(&mut self) -> io::Result<()> {
        self.flush()
    }
}

/// What a run with a [`BeforeDelete`] hook (or a spool) did.
#[derive(Debug)]
pub struct Spooled {
    /// The deletes. After a hook error, the flows it stopped count as `not_attempted`, and
    /// `complete` is false (the dump was cut short there).
    pub report: Report,
    /// The hook's (the spool's) error that stopped the run, before the delete of the flow it
    /// failed on; `None` when it never failed.
    pub hook_error: Option<io::Error>,
}

/// [`super::select_and_delete`] with `before` run on each matched flow before its delete can
/// be sent. Returns the hook's error, if one stopped the run.
///
/// Why no delete goes out before its flow passed `before`: the deleting thread sends only
/// flows it received over the channel, and a batch goes into the channel only after `before`
/// took each of its flows ([`BeforeDelete::flow`], in this thread, as the flow is matched)
/// and then the whole batch ([`BeforeDelete::handoff`]). The deleter's chunks (about 64 KiB
/// per `sendmsg`, see [`Deleter`]) are cut from batches already received, and a re-check only
/// drops or re-queues flows of them, so every flow of a chunk passed `before` before the
/// chunk is sent. A batch whose handoff failed is never sent (its flows count as not
/// attempted), nor the batch being filled when `flow` failed.
///
/// A dump that restarts (its buffer overflowed) shows again the flows it had not finished
/// deleting: `before` sees those twice.
pub(super) fn select_and_delete_before(
    ct: &mut Conntrack,
    sel: &Selector,
    deleter: Deleter<'_>,
    stop: &AtomicBool,
    before: &mut dyn BeforeDelete,
) -> Result<(Streamed, Option<io::Error>), ctnetlink::Error> {
    let filter = sel.kernel_filter();
    let progress = deleter.progress();
    let (tx, rx) = mpsc::sync_channel::<Vec<Marked>>(BATCHES_IN_FLIGHT);
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || -> Result<DeleteTally, ctnetlink::Error> {
            let mut deleter = deleter;
            let mut extra = 0u64;
            let mut stopped = false;
            for batch in rx.iter() {
                for key in &batch {
                    if stopped {
                        extra += 1;
                    } else if deleter.push(key)?.is_break() {
                        stopped = true;
                    }
                }
            }
            let mut t = deleter.finish()?;
            t.not_attempted += extra;
            Ok(t)
        });
        let mut out = Streamed::default();
        let mut batch = Vec::with_capacity(BATCH);
        let mut cut = false;
        let mut hook_error = None;
        // Flows matched but never handed over because the hook failed.
        let mut held_back = 0u64;
        // On a restart the entries of the lost part of the dump are still there: they come
        // again. The ones already deleted are gone, the others match again.
        let result = ct.dump_retrying(&filter, |seen| {
            let Dumped::Flow(flow, received) = seen else {
                return ControlFlow::Continue(());
            };
            if stop.load(Ordering::Relaxed) {
                cut = true;
                return ControlFlow::Break(());
            }
            if !sel.matches(flow) {
                return ControlFlow::Continue(());
            }
            out.matched += 1;
            let Some(marked) = Marked::of(flow, received) else {
                out.without_id += 1;
                return ControlFlow::Continue(());
            };
            if let Err(e) = before.flow(flow) {
                held_back += 1 + batch.len() as u64;
                batch.clear();
                hook_error = Some(e);
                cut = true;
                return ControlFlow::Break(());
            }
            batch.push(marked);
            if batch.len() == BATCH {
                if let Err(e) = before.handoff() {
                    held_back += batch.len() as u64;
                    batch.clear();
                    hook_error = Some(e);
                    cut = true;
                    return ControlFlow::Break(());
                }
                if let Some(p) = progress {
                    p.selected.store(out.matched, Ordering::Relaxed);
                }
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if tx.send(full).is_err() {
                    // The deleting thread ended (an error); it reports why.
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if let Some(p) = progress {
            p.selected.store(out.matched, Ordering::Relaxed);
        }
        if !batch.is_empty() {
            match before.handoff() {
                Ok(()) => {
                    let _ = tx.send(batch);
                }
                Err(e) => {
                    held_back += batch.len() as u64;
                    hook_error = Some(e);
                }
            }
        }
        drop(tx);
        let tally = match worker.join() {
            Ok(t) => t?,
            Err(_) => {
                return Err(ctnetlink::Error::Malformed {
                    op: "delete conntrack entries",
                    source: ctnetlink::Malformed("the deleting thread panicked"),
                });
            }
        };
        result?;
        out.tally = tally;
        out.tally.not_attempted += held_back;
        out.complete = !cut;
        Ok((out, hook_error))
    })
}

/// [`streamed`] with `before` (a [`Spool`], or any `FnMut(&Flow) -> io::Result<()>`) run on
/// each matched flow before its delete can be sent: the guard's spool never misses a deleted
/// flow. A spooled flow whose delete then found it gone, replaced or changed is in the spool
/// but not deleted: harmless (`ctguard load` reports it as a clash). An error of `before`
/// stops the run before that flow's delete ([`Spooled::hook_error`]); the flows handed over
/// before it are deleted, and are in the spool. The spool is the caller's to commit (also
/// after an error or an interruption: it holds what was deleted).
pub fn streamed_spooled(
    ct: &mut Conntrack,
    sel: &Selector,
    rate: Option<u32>,
    stop: &AtomicBool,
    before: &mut dyn BeforeDelete,
) -> Result<Spooled, ctnetlink::Error> {
    let still_selected = |f: &Flow| sel.matches(f);
    let (s, hook_error) = select_and_delete_before(
        ct,
        sel,
        deleter(&still_selected, rate, Act::Delete, stop)?,
        stop,
        before,
    )?;
    let report = Report::nothing(s.matched, s.matched, false).with_tally(&s.tally, s.without_id);
    Ok(Spooled { report: report.ended(s.complete, stop), hook_error })
}

/// An eviction no human watches (the guard relieving an offender): no question, no preview,
/// no kernel flush (the spool needs the flows; without a spool the selection the guard makes
/// is never one the kernel filters exactly anyway).
///
/// - Without `limit`: [`streamed_spooled`] into `spool` (or [`streamed`] without one): each
///   flow spooled, then deleted moments after the dump read it.
/// - With `limit`: [`Strategy::SelectFirst`] through [`run`]: one dump keeps the `limit` most
///   idle flows; they are written to `spool` and synced before the first delete; then each is
///   re-checked and deleted.
///
/// A spool error is [`Spooled::hook_error`] (with `limit`: nothing was deleted); a stop
/// before the first delete is a report of nothing deleted, `interrupted`. `elapsed_s` times
/// the deletes from the start of the run (with `limit`: from the end of the selection). The
/// spool is the caller's to commit: after any run that may have deleted, whatever its outcome
/// ([`Spool::is_empty`]: nothing was written, nothing to keep).
pub fn unattended(
    ct: &mut Conntrack,
    sel: &Selector,
    limit: Option<u64>,
    spool: Option<&mut Spool>,
    stop: &AtomicBool,
) -> Result<Spooled, ctnetlink::Error> {
    let started = Instant::now();
    let Some(limit) = limit else {
        let mut done = match spool {
            Some(spool) => streamed_spooled(ct, sel, None, stop, spool)?,
            None => {
                let report = streamed(ct, sel, None, Act::Delete, stop, None)?;
                Spooled { report, hook_error: None }
            }
        };
        done.report.elapsed_s = started.elapsed().as_secs_f64();
        return Ok(done);
    };
    let ask = Ask { yes: true, limit: Some(limit), save: spool.is_some(), ..Ask::default() };
    let mut edges = NoHuman { spool, chosen: None };
    match run(ct, sel, &ask, &Strategy::SelectFirst, stop, None, &mut edges) {
        Ok(Ran::Deleted(report)) => Ok(Spooled { report, hook_error: None }),
        Ok(Ran::NothingMatched | Ran::Declined | Ran::DryRun) => {
            Ok(Spooled { report: Report::nothing(0, 0, false), hook_error: None })
        }
        Err(NoHumanError::Kernel(e)) => Err(e),
        Err(NoHumanError::Interrupted) => {
            let (matched, _) = edges.chosen.unwrap_or((0, 0));
            let mut report = Report::nothing(matched, 0, false);
            report.interrupted = true;
            report.complete = edges.chosen.is_some();
            Ok(Spooled { report, hook_error: None })
        }
        Err(NoHumanError::Spool(e)) => {
            let (matched, selected) = edges.chosen.unwrap_or((0, 0));
            let mut report = Report::nothing(matched, selected, false);
            report.not_attempted = selected;
            Ok(Spooled { report, hook_error: Some(e) })
        }
    }
}

/// [`unattended`]'s side of [`run`]: nothing to show or ask; the spool written before the
/// deletes.
struct NoHuman<'a> {
    spool: Option<&'a mut Spool>,
    /// Matched and chosen, once the selection is known.
    chosen: Option<(u64, u64)>,
}

enum NoHumanError {
    Kernel(ctnetlink::Error),
    Interrupted,
    Spool(io::Error),
}

impl From<ctnetlink::Error> for NoHumanError {
    fn from(e: ctnetlink::Error) -> NoHumanError {
        NoHumanError::Kernel(e)
    }
}

impl Edges for NoHuman<'_> {
    type Error = NoHumanError;

    fn interrupted(&mut self, _: Before) -> NoHumanError {
        NoHumanError::Interrupted
    }

    fn intent(&mut self, _: Option<u64>) -> Result<(), NoHumanError> {
        Ok(())
    }

    fn unproven(&mut self, _: &Refusal) {}

    fn seen(&mut self, _: Seen<'_>) {}

    fn selected(&mut self, selection: &Selection) -> Result<(), NoHumanError> {
        self.chosen = Some((selection.matched, selection.keys.len() as u64));
        Ok(())
    }

    fn decide(&mut self, _: &mut Conntrack, _: &Selection) -> Result<Decision, NoHumanError> {
        // Never asked: `unattended` runs with `yes` and without `dry_run`.
        Ok(Decision::Delete)
    }

    fn before_deletes(&mut self, selection: &Selection) -> Result<(), NoHumanError> {
        let Some(spool) = self.spool.as_deref_mut() else { return Ok(()) };
        for flow in &selection.flows {
            spool.write(flow).map_err(NoHumanError::Spool)?;
        }
        // One sync for the whole selection, as `evict --save` does, before the first delete.
        spool.sync().map_err(NoHumanError::Spool)
    }
}
