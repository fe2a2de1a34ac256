//! The eviction engine: which way to delete ([`Strategy::choose`], pure), and the three ways,
//! each exact.
//!
//! - **Proven kernel flush** ([`Strategy::ProvenFlush`], [`proven_flush`]): for selections the
//!   kernel's filter expresses exactly ([`flush_filter`]), on kernels that honour it, scripted
//!   (`--yes`, nothing kept or paced). No dump of the real table: the request's bytes are
//!   first proven in a scratch namespace ([`crate::flushproof`]), then sent unchanged. This
//!   proof guards every kernel flush ctguard sends; [`FlushRequest`] builds the only bytes and
//!   [`Conntrack::send_flush`] is their only sender.
//! - **Streamed** ([`Strategy::Streamed`], [`streamed`], [`select_and_delete`]): one dump, each
//!   matched flow deleted moments after the dump read it, on a second socket.
//! - **Select first** ([`Strategy::SelectFirst`], [`select`], [`delete_chosen`]): one dump to
//!   preview, list, save or limit; then, once confirmed, per-flow deletes.
//!
//! [`run`] carries out a chosen strategy from start to report, the caller's part (preview,
//! question, `--save`, audit trail) injected as [`Edges`].
//!
//! Every per-flow delete carries the original tuple, the zone and the `CTA_ID` read in the
//! dump, so an entry that vanished, or whose tuple a new connection re-used meanwhile, is
//! answered ENOENT and left alone; an answer older than [`FRESH_FOR`] (by the time its batch
//! was received, not decoded) is looked up again and deleted only if still selected.

mod run;

pub use run::{Before, Decision, Edges, Ran, run};

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ipnetwork::IpNetwork;

use crate::ctnetlink::{
    self, Act, Conntrack, DeleteProgress, DeleteTally, Deleter, DumpFilter, Dumped, FlowKey,
    FlushRequest, Marked,
};
use crate::flow::{Family, Flow};
use crate::flushproof::{self, Proof, Refusal};
use crate::select::Selector;
use crate::sysctl::StateTimeouts;

/// The first kernel whose flush honours `CTA_FILTER` ("netfilter: ctnetlink: support
/// CTA_FILTER for flush", merged for 6.11/6.12; 6.8 answers EOPNOTSUPP). Older kernels may
/// parse the request and flush everything.
pub const FLUSH_FILTER_SINCE: (u32, u32) = (6, 12);

/// Why the kernel flush may not replace the per-flow deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoFlush {
    /// The kernel is older than [`FLUSH_FILTER_SINCE`], or its release is unknown.
    Kernel(Option<(u32, u32)>),
    /// The selection names no single exact IPv4 source or destination, so there would be no
    /// `CTA_FILTER` tuple: a flush by mark, status or zone alone is never sent.
    NoIpv4Host,
    /// An IPv6 address is involved: the kernel's IPv6 `CTA_FILTER` match is inverted (6.18).
    Ipv6,
    /// A criterion the kernel cannot apply exactly (CIDR, state, port, idle, guest, ...).
    NotExact(&'static str),
    /// `--limit` or `--rate` asks for a part of the selection, or a pace.
    Partial,
    /// The selection leaves addresses out (`--except`, the guard's `protect`): the kernel's
    /// filter has no exclusion, so its flush would take the protected flows too.
    Except,
}

impl fmt::Display for NoFlush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoFlush::Kernel(Some((a, b))) => write!(f, "kernel {a}.{b} is older than 6.12"),
            NoFlush::Kernel(None) => f.write_str("kernel release unknown"),
            NoFlush::NoIpv4Host => f.write_str("no single IPv4 host to filter on"),
            NoFlush::Ipv6 => f.write_str("IPv6 (the kernel's IPv6 filter is inverted)"),
            NoFlush::NotExact(what) => write!(f, "{what} is not a kernel filter"),
            NoFlush::Partial => f.write_str("--limit/--rate"),
            NoFlush::Except => f.write_str("--except cannot be applied by the kernel"),
        }
    }
}

/// The guard's first half, pure: the flush filter for `sel`, when the kernel's filtered flush
/// deletes exactly the flows `sel` selects. That holds only for a single exact IPv4 original
/// source and/or destination (`CTA_FILTER`), plus optionally mark/mask, status bits and zone,
/// and nothing else; on Linux 6.12+; and never for a part of the selection (`partial`:
/// `--limit`, `--rate`). The filter returned is the one the selection dump sends
/// ([`Selector::kernel_filter`]).
pub fn flush_filter(
    sel: &Selector,
    kernel: Option<(u32, u32)>,
    partial: bool,
) -> Result<DumpFilter, NoFlush> {
    if partial {
        return Err(NoFlush::Partial);
    }
    if !sel.except.is_empty() {
        return Err(NoFlush::Except);
    }
    if kernel.is_none_or(|k| k < FLUSH_FILTER_SINCE) {
        return Err(NoFlush::Kernel(kernel));
    }
    let v6 = |nets: &[IpNetwork]| nets.iter().any(|n| n.is_ipv6());
    if sel.family == Some(Family::Ipv6) || v6(&sel.src) || v6(&sel.dst) {
        return Err(NoFlush::Ipv6);
    }
    let exact_host = |nets: &[IpNetwork]| match nets {
        [] => Ok(false),
        [IpNetwork::V4(n)] if n.prefix() == 32 => Ok(true),
        [_] => Err(NoFlush::NotExact("a CIDR")),
        _ => Err(NoFlush::NotExact("more than one address")),
    };
    let (src, dst) = (exact_host(&sel.src)?, exact_host(&sel.dst)?);
    let not_exact = [
        (!sel.reply_src.is_empty() || !sel.reply_dst.is_empty(), "a reply address"),
        (sel.guests.is_some(), "--guest"),
        (!sel.protos.is_empty(), "a protocol"),
        (!sel.sport.is_empty() || !sel.dport.is_empty(), "a port"),
        (!sel.states.is_empty(), "a state"),
        (sel.idle_min.is_some(), "--idle"),
        // The kernel's zone filter ignores the direction (nf_ct_zone_equal_any).
        (sel.orig_zone.is_some() || sel.reply_zone.is_some(), "a directional zone"),
        (sel.timeout_below.is_some(), "--timeout-below"),
        (sel.labels != 0, "--label"),
        (!sel.nat.is_empty(), "a NAT criterion"),
        (matches!(sel.family, Some(Family::Other(_))), "the family"),
    ];
    if let Some((_, what)) = not_exact.iter().find(|(set, _)| *set) {
        return Err(NoFlush::NotExact(what));
    }
    if !src && !dst {
        return Err(NoFlush::NoIpv4Host);
    }
    let filter = sel.kernel_filter();
    // kernel_filter pushes exactly these; if it ever stops doing so, no flush.
    if filter.orig_src_v4.is_some() != src || filter.orig_dst_v4.is_some() != dst {
        return Err(NoFlush::NotExact("the address filter"));
    }
    Ok(filter)
}

/// What a run of `ctguard evict` asks for besides the selection: the inputs of
/// [`Strategy::choose`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ask {
    /// No question: delete at once (`--yes`).
    pub yes: bool,
    /// Delete nothing (`--dry-run`).
    pub dry_run: bool,
    /// At most this many flows, the most idle first (`--limit`).
    pub limit: Option<u64>,
    /// At most this many deletes a second (`--rate`).
    pub rate: Option<u32>,
    /// The flows are written to a file before the first delete (`--save`).
    pub save: bool,
    /// The running kernel's release, `None` when unknown.
    pub kernel: Option<(u32, u32)>,
    /// What is done to each selected flow: deleted (`evict`), or updated (`update`).
    pub act: Act,
}

/// How a selection is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The kernel's filtered flush with this filter, proven in a scratch namespace first
    /// ([`proven_flush`]); no dump of the real table. A refused proof sends nothing, and the
    /// run goes on as [`Strategy::Streamed`].
    ProvenFlush(DumpFilter),
    /// One dump, each matched flow deleted moments after it was read ([`streamed`]).
    Streamed,
    /// One dump to select, preview, list, save or limit ([`select`]); then the question or
    /// the dry run; then per-flow deletes, each older answer re-checked ([`delete_chosen`]).
    SelectFirst,
}

impl Strategy {
    /// The strategy for `sel` and `ask`, pure. Anything shown, kept or limited needs the whole
    /// selection first; otherwise a scripted run flushes when the kernel's filter is exact
    /// (never for a part or a pace of the selection) and streams the deletes when it is not.
    pub fn choose(sel: &Selector, ask: &Ask) -> Strategy {
        if !ask.yes || ask.dry_run || ask.limit.is_some() || ask.save {
            return Strategy::SelectFirst;
        }
        // The kernel has no filtered update: an update is always flow by flow.
        if ask.act != Act::Delete {
            return Strategy::Streamed;
        }
        match flush_filter(sel, ask.kernel, ask.rate.is_some()) {
            Ok(filter) => Strategy::ProvenFlush(filter),
            Err(_) => Strategy::Streamed,
        }
    }
}

/// One selected flow, with how long it has been idle (for `--limit`, most idle first).
#[derive(Debug, Clone, Copy)]
struct Candidate {
    idle: u32,
    /// Dump order, to break ties deterministically (earlier first).
    order: Reverse<u64>,
    marked: Marked,
}

impl PartialEq for Candidate {
    fn eq(&self, o: &Self) -> bool {
        (self.idle, self.order) == (o.idle, o.order)
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Candidate {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.idle, self.order).cmp(&(o.idle, o.order))
    }
}

/// How long a kernel answer about a flow is good for a decision to delete it. A flow read
/// longer ago than this (behind a prompt, a `--rate`, a `--limit` that needed the whole dump,
/// a slow deleting thread) is looked up again right before its delete, and deleted only if it
/// is still the same entry and still selected ([`Deleter::with_recheck`]).
pub const FRESH_FOR: Duration = Duration::from_millis(500);

/// The flows one selection dump chose, ready to delete.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The flows to delete, most idle first when limited, else in dump order.
    pub keys: Vec<Marked>,
    /// With `--limit` and `keep_flows`: the flows behind `keys`, in the same order.
    pub flows: Vec<Flow>,
    /// Flows the selector matched (before `--limit`).
    pub matched: u64,
    /// Matched flows without a `CTA_ID`: never deleted (no identity to guard the delete).
    pub without_id: u64,
    /// False when `stop` cut the dump short: more flows may match than `matched`.
    pub complete: bool,
}

/// What [`select`] hands its observer.
#[derive(Debug)]
pub enum Seen<'a> {
    /// A matched flow.
    Flow(&'a Flow),
    /// The dump overflowed our buffer and starts again: forget what was seen.
    Restart,
}

/// What [`select`] keeps while the dump runs.
#[derive(Default)]
struct Chooser {
    s: Selection,
    heap: BinaryHeap<Reverse<(Candidate, usize)>>,
    slots: Vec<Option<Flow>>,
    free: Vec<usize>,
    cut: bool,
}

/// Dumps once with `sel`'s kernel filter and collects the flows to delete. `each` sees every
/// matched flow (for previews, tallies and `--save`; with a limit, all of them, not only the
/// chosen), and [`Seen::Restart`] if the dump has to be repeated. With `limit`, only the
/// `limit` most idle are kept (memory grows with the limit, not the table), and `keep_flows`
/// keeps their whole flows too. Once `stop` is set the dump ends early (`complete` false).
/// Each key is stamped with the moment its answer was received ([`Dumped::Flow`]).
pub fn select(
    ct: &mut Conntrack,
    sel: &Selector,
    limit: Option<u64>,
    keep_flows: bool,
    stop: &AtomicBool,
    mut each: impl FnMut(Seen<'_>),
) -> Result<Selection, ctnetlink::Error> {
    let filter = sel.kernel_filter();
    let timeouts = sel.timeouts.clone().unwrap_or_else(StateTimeouts::defaults);
    let mut c = Chooser::default();
    ct.dump_retrying(&filter, |seen| {
        let (flow, received) = match seen {
            Dumped::Flow(flow, received) => (flow, received),
            Dumped::Restart => {
                c = Chooser::default();
                each(Seen::Restart);
                return ControlFlow::Continue(());
            }
        };
        if stop.load(Ordering::Relaxed) {
            c.cut = true;
            return ControlFlow::Break(());
        }
        if !sel.matches(flow) {
            return ControlFlow::Continue(());
        }
        c.s.matched += 1;
        each(Seen::Flow(flow));
        let Some(marked) = Marked::of(flow, received) else {
            c.s.without_id += 1;
            return ControlFlow::Continue(());
        };
        let Some(n) = limit else {
            c.s.keys.push(marked);
            return ControlFlow::Continue(());
        };
        let cand = Candidate {
            idle: timeouts.idle(flow).unwrap_or(0),
            order: Reverse(c.s.matched),
            marked,
        };
        if (c.heap.len() as u64) < n {
            let slot = store(&mut c.slots, &mut c.free, keep_flows.then(|| flow.clone()));
            c.heap.push(Reverse((cand, slot)));
        } else if c.heap.peek().is_some_and(|Reverse((least, _))| cand > *least) {
            if let Some(Reverse((_, slot))) = c.heap.pop() {
                c.slots[slot] = None;
                c.free.push(slot);
            }
            let slot = store(&mut c.slots, &mut c.free, keep_flows.then(|| flow.clone()));
            c.heap.push(Reverse((cand, slot)));
        }
        ControlFlow::Continue(())
    })?;
    let Chooser { mut s, heap, mut slots, cut, .. } = c;
    // into_sorted_vec of Reverse is descending by candidate: most idle first.
    for Reverse((c, slot)) in heap.into_sorted_vec() {
        s.keys.push(c.marked);
        if let Some(f) = slots.get_mut(slot).and_then(Option::take) {
            s.flows.push(f);
        }
    }
    s.complete = !cut;
    Ok(s)
}

fn store(slots: &mut Vec<Option<Flow>>, free: &mut Vec<usize>, flow: Option<Flow>) -> usize {
    match free.pop() {
        Some(i) => {
            slots[i] = flow;
            i
        }
        None => {
            slots.push(flow);
            slots.len() - 1
        }
    }
}

/// Deletes the selected flows, pipelined, each guarded by its identity (and, with a deleter
/// [`Deleter::with_recheck`], re-checked when its answer is older than the bound).
pub fn delete_selected(
    keys: &[Marked],
    mut deleter: Deleter<'_>,
) -> Result<DeleteTally, ctnetlink::Error> {
    for (i, key) in keys.iter().enumerate() {
        if deleter.push(key)?.is_break() {
            let mut t = deleter.finish()?;
            // push counted the key that found the stop; the rest were never offered.
            t.not_attempted += (keys.len() - i - 1) as u64;
            return Ok(t);
        }
    }
    deleter.finish()
}

/// A flow key as one line for messages: `tcp src=... dst=... sport=... dport=... zone=... id=...`.
pub fn describe_key(k: &FlowKey) -> String {
    use crate::flow::L4;
    let mut s = format!("{} src={} dst={}", k.proto, k.orig.src, k.orig.dst);
    match k.orig.l4 {
        L4::Ports { src, dst } => s += &format!(" sport={src} dport={dst}"),
        L4::Icmp { kind, code, id } => s += &format!(" type={kind} code={code} id={id}"),
        L4::None => {}
    }
    if let Some(z) = k.zone.or(k.orig.zone) {
        s += &format!(" zone={z}");
    }
    s + &format!(" id={}", k.id)
}

/// Keys per batch handed from the dump to the deleting thread.
const BATCH: usize = 1024;
/// Batches in flight between the two threads.
const BATCHES_IN_FLIGHT: usize = 64;

/// What [`select_and_delete`] did.
#[derive(Debug, Clone, Default)]
pub struct Streamed {
    /// Flows the selector matched.
    pub matched: u64,
    /// Matched flows without a `CTA_ID`, not deleted.
    pub without_id: u64,
    /// The per-flow deletes.
    pub tally: DeleteTally,
    /// False when `stop` cut the dump short: more flows may match than `matched`.
    pub complete: bool,
}

/// The dump and the deletes at once: while this thread decodes and matches the dump, a second
/// thread deletes the flows already matched on its own socket. Exact all the same: each delete
/// is guarded by the identity the dump just read (stamped with the time it was received, so a
/// stall behind the dump makes it re-checked), and the dump never re-sends an entry it has
/// sent (a resume that finds its entry gone re-walks the bucket; the repeats are dropped by
/// id). A dump that overflowed our buffer is run again for what is left, at most
/// [`ctnetlink::DUMP_ATTEMPTS`] times in all.
///
/// No kernel flush here: a flush is sent only after its scratch-namespace proof
/// ([`proven_flush`]), which [`Strategy::choose`] tries before this for any selection the
/// kernel's filter expresses.
pub fn select_and_delete(
    ct: &mut Conntrack,
    sel: &Selector,
    deleter: Deleter<'_>,
    stop: &AtomicBool,
) -> Result<Streamed, ctnetlink::Error> {
    let (out, _) =
        spooled::select_and_delete_before(ct, sel, deleter, stop, &mut |_: &Flow| Ok(()))?;
    Ok(out)
}

/// [`Strategy::Streamed`]: [`select_and_delete`] with a deleter that does `act`, paces to
/// `rate` and re-checks an answer older than [`FRESH_FOR`] against `sel` (every answer, for
/// an update), and its report. `progress`, when given, follows the flows matched and dealt
/// with.
pub fn streamed(
    ct: &mut Conntrack,
    sel: &Selector,
    rate: Option<u32>,
    act: Act,
    stop: &AtomicBool,
    progress: Option<&DeleteProgress>,
) -> Result<Report, ctnetlink::Error> {
    let still_selected = |f: &Flow| sel.matches(f);
    let deleter = deleter(&still_selected, rate, act, stop)?.with_progress(progress);
    let s = select_and_delete(ct, sel, deleter, stop)?;
    let report =
        Report::nothing(s.matched, s.matched, false).of_act(act).with_tally(&s.tally, s.without_id);
    Ok(report.ended(s.complete, stop))
}

/// [`Strategy::SelectFirst`], once confirmed: deletes `selection`'s keys flow by flow, paced to
/// `rate`. What the preview (or the dump a `--limit` needed whole) showed is older than
/// [`FRESH_FOR`] by now, so each flow is looked up again right before its delete and deleted
/// only if it is still the entry shown and still matches `sel`. No kernel flush here: it
/// would also take flows that appeared after the preview. `progress`, when given, follows
/// the flows dealt with of those selected.
pub fn delete_chosen(
    selection: &Selection,
    sel: &Selector,
    rate: Option<u32>,
    act: Act,
    stop: &AtomicBool,
    progress: Option<&DeleteProgress>,
) -> Result<Report, ctnetlink::Error> {
    let still_selected = |f: &Flow| sel.matches(f);
    if let Some(p) = progress {
        p.selected.store(selection.keys.len() as u64, Ordering::Relaxed);
    }
    let deleter = deleter(&still_selected, rate, act, stop)?.with_progress(progress);
    let tally = delete_selected(&selection.keys, deleter)?;
    let selected = selection.keys.len() as u64;
    let report = Report::nothing(selection.matched, selected, false)
        .of_act(act)
        .with_tally(&tally, selection.without_id);
    Ok(report.ended(selection.complete, stop))
}

/// The per-flow deleter of both strategies: doing `act`, paced to `rate`, ended by `stop`, and
/// each answer older than [`FRESH_FOR`] looked up again and acted on only if `still_selected`.
/// An update looks every flow up right before it is sent: the kernel checks `CTA_ID` on a
/// delete but not on an update, so only this lookup keeps an update off a new entry that
/// took the tuple.
fn deleter<'a>(
    still_selected: &'a (dyn Fn(&Flow) -> bool + Sync),
    rate: Option<u32>,
    act: Act,
    stop: &'a AtomicBool,
) -> Result<Deleter<'a>, ctnetlink::Error> {
    let fresh_for = match act {
        Act::Delete => FRESH_FOR,
        Act::Update(_) => Duration::ZERO,
    };
    Ok(Deleter::open()?
        .with_act(act)
        .with_rate(rate)
        .with_stop(stop)
        .with_recheck(still_selected, fresh_for))
}

/// The table's entry count and the kernel's insert counter (summed over CPUs) at one moment:
/// the kernel does not say how many entries a flush deleted, so two of these around it tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Census {
    entries: u64,
    inserted: u64,
}

impl Census {
    /// Before the flush: the inserts first, then the count. Flows created between the two
    /// reads then raise the count only, so the flush's figure errs high, never to zero.
    fn before(ct: &mut Conntrack) -> Result<Census, ctnetlink::Error> {
        let inserted = Census::inserted(ct)?;
        let entries = u64::from(ct.table_stats()?.count);
        Ok(Census { entries, inserted })
    }

    /// After the flush: the count first, then the inserts (the same bias).
    fn after(ct: &mut Conntrack) -> Result<Census, ctnetlink::Error> {
        let entries = u64::from(ct.table_stats()?.count);
        let inserted = Census::inserted(ct)?;
        Ok(Census { entries, inserted })
    }

    fn inserted(ct: &mut Conntrack) -> Result<u64, ctnetlink::Error> {
        Ok(ct.cpu_stats()?.iter().map(|c| u64::from(c.insert)).sum())
    }

    /// Entries removed between `self` and `later`: the fall of the count plus what was
    /// inserted meanwhile (ctnetlink creates and confirmed packets both count as inserts), so
    /// flows other guests open during a flush do not hide what it deleted. Entries that
    /// expired or that someone else deleted meanwhile count too.
    fn removed_until(&self, later: &Census) -> u64 {
        let inserted = later.inserted.saturating_sub(self.inserted);
        (self.entries + inserted).saturating_sub(later.entries)
    }
}

/// What [`proven_flush`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum ProvenFlush {
    /// The scratch-namespace proof held and the same request was sent to the real table:
    /// the proof, and how many entries the table lost during the flush (its count before
    /// minus after).
    Flushed {
        /// What the scratch namespace showed.
        proof: Proof,
        /// Entries the real table lost.
        removed: u64,
    },
    /// Nothing was sent to the real table; why the proof did not hold.
    Refused(Refusal),
    /// The stop flag was set by the time the proof held: nothing was sent to the real table.
    Stopped,
}

/// The kernel flush without a dump of the real table: the filtered-flush request for
/// `filter` (one [`flush_filter`] accepted for `sel`) is built once, proven in a scratch
/// namespace against `sel`'s exact check ([`flushproof::prove`]), and only then sent, the same
/// bytes, through `ct`. A refused proof sends nothing (the caller deletes flow by flow); a
/// proof the kernel refused for want of `CAP_NET_ADMIN` is that error (no delete here could
/// do better).
pub fn proven_flush(
    ct: &mut Conntrack,
    sel: &Selector,
    filter: &DumpFilter,
    stop: &AtomicBool,
) -> Result<ProvenFlush, ctnetlink::Error> {
    match FlushRequest::new(filter) {
        Some(req) => proven_flush_with(ct, sel, filter, &req, stop),
        None => Ok(ProvenFlush::Refused(Refusal {
            scratch_netns: Vec::new(),
            why: "the filter has no CTA_FILTER address".into(),
            errno: None,
        })),
    }
}

// One body for the flush with its request built here and for the kernel tests' hook, which
// hands a request the kernel misreads to show that only the scratch namespace sees it: public
// only in builds with the `kernel-tests` feature.
#[cfg(feature = "kernel-tests")]
pub use with_request::proven_flush_with;
#[cfg(not(feature = "kernel-tests"))]
use with_request::proven_flush_with;

mod with_request {
    use super::*;

    /// [`proven_flush`] with the request given. Only in builds with the `kernel-tests`
    /// feature.
    pub fn proven_flush_with(
        ct: &mut Conntrack,
        sel: &Selector,
        filter: &DumpFilter,
        req: &FlushRequest,
        stop: &AtomicBool,
    ) -> Result<ProvenFlush, ctnetlink::Error> {
        let selects = |f: &Flow| sel.matches(f);
        let (proof, scratch) = match flushproof::prove(req, filter, &selects) {
            Ok(p) => p,
            Err(Refusal { errno: Some(errno @ (libc::EPERM | libc::EACCES)), .. }) => {
                return Err(ctnetlink::Error::Kernel {
                    op: "prove the filtered flush in a scratch namespace",
                    errno,
                });
            }
            Err(why) => return Ok(ProvenFlush::Refused(why)),
        };
        // A signal during the proof (it takes a walk of the hash): the real flush is not sent.
        if stop.load(Ordering::Relaxed) {
            return Ok(ProvenFlush::Stopped);
        }
        let before = Census::before(ct)?;
        ct.send_flush(req)?;
        let after = Census::after(ct)?;
        // The scratch namespaces go now, their teardown no longer beside the real flush.
        drop(scratch);
        Ok(ProvenFlush::Flushed { proof, removed: before.removed_until(&after) })
    }
}

/// How the selected flows were deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Nothing was deleted (`--dry-run`, nothing matched, or not confirmed).
    None,
    /// Pipelined deletes, each guarded by the flow's tuple, zone and id.
    PerFlow,
    /// The kernel's filtered flush, after its scratch-namespace proof.
    KernelFlush,
}

/// One delete the kernel refused with an errno other than ENOENT.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailedDelete {
    /// The flow, as `describe_key` prints it.
    pub flow: String,
    /// The errno.
    pub errno: i32,
    /// Its text.
    pub error: String,
}

/// The outcome of `ctguard evict` (its `--json` line; docs/json-schema.md).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    /// True for `--dry-run`: nothing was deleted.
    pub dry_run: bool,
    /// How the flows were deleted.
    pub method: Method,
    /// Flows the selection matched.
    pub matched: u64,
    /// Flows chosen to delete: the matched ones, or the `--limit` most idle of them.
    pub selected: u64,
    /// Deleted by this run.
    pub deleted: u64,
    /// Gone before their delete reached them (ENOENT: expired, or deleted by someone else).
    pub vanished: u64,
    /// Left alone: re-checked right before the delete, the tuple belonged to a new entry
    /// (another id; or the same id, the kernel having re-used the old entry's memory, with
    /// another start time or fewer packets).
    pub replaced: u64,
    /// Left alone: re-checked right before the delete, the flow no longer matched the
    /// selection (its state, mark, idle time ... changed since it was selected).
    pub changed: u64,
    /// Refused by the kernel with another error (see `failures`), or without an id to guard
    /// the delete.
    pub failed: u64,
    /// Not attempted because the run was interrupted.
    pub not_attempted: u64,
    /// A signal (Ctrl-C, SIGTERM, SIGHUP) stopped the run.
    pub interrupted: bool,
    /// False when the interruption cut the selection dump short: `matched` is what it had
    /// matched by then, and more flows may match.
    pub complete: bool,
    /// For a kernel flush: `deleted` is how much the table's entry count fell during the
    /// flush, which other flows coming or going at the same moment move too.
    pub count_is_table_delta: bool,
    /// Seconds the deleting took: from the confirmation (or the start, without a prompt) to
    /// the end of the deletes; never the time spent at the prompt.
    pub elapsed_s: f64,
    /// The first few refused deletes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<FailedDelete>,
    /// For a kernel flush without a dump of the table: what its scratch-namespace proof showed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof: Option<Proof>,
    /// True for an update (`ctguard update`): `deleted` counts the flows updated, and the text
    /// says so. Not in the JSON, whose `update` form names the field `updated`.
    #[serde(skip)]
    pub update: bool,
}

impl Report {
    /// A report of no deletes.
    pub fn nothing(matched: u64, selected: u64, dry_run: bool) -> Report {
        Report {
            dry_run,
            method: Method::None,
            matched,
            selected,
            deleted: 0,
            vanished: 0,
            replaced: 0,
            changed: 0,
            failed: 0,
            not_attempted: 0,
            interrupted: false,
            complete: true,
            count_is_table_delta: false,
            elapsed_s: 0.0,
            failures: Vec::new(),
            proof: None,
            update: false,
        }
    }

    /// The report of a proven kernel flush: `removed` is what the table lost during it. The
    /// kernel does not say how many entries a flush deleted, so this is a table delta
    /// (`count_is_table_delta`).
    pub fn proven(proof: Proof, removed: u64) -> Report {
        Report {
            method: Method::KernelFlush,
            deleted: removed,
            count_is_table_delta: true,
            proof: Some(proof),
            ..Report::nothing(removed, removed, false)
        }
    }

    /// Says how the run ended: whether the selection dump was complete, and whether `stop`
    /// interrupted it.
    fn ended(mut self, complete: bool, stop: &AtomicBool) -> Report {
        self.interrupted = stop.load(Ordering::Relaxed);
        self.complete = complete;
        self
    }

    /// Marks the report as that of `act`'s run (an update's text says updated).
    pub fn of_act(mut self, act: Act) -> Report {
        self.update = act != Act::Delete;
        self
    }

    /// Fills in the outcome of per-flow deletes.
    pub fn with_tally(mut self, t: &DeleteTally, without_id: u64) -> Report {
        self.method = Method::PerFlow;
        self.deleted = t.deleted;
        self.vanished = t.vanished;
        self.replaced = t.replaced;
        self.changed = t.changed;
        self.failed = t.failed + without_id;
        self.not_attempted = t.not_attempted;
        self.failures = t
            .failures
            .iter()
            .map(|(k, errno)| FailedDelete {
                flow: describe_key(k),
                errno: *errno,
                error: std::io::Error::from_raw_os_error(*errno).to_string(),
            })
            .collect();
        self
    }

    /// True when every selected flow is dealt with: deleted by us, vanished by itself, or
    /// deliberately left alone because the re-check found it replaced or changed.
    pub fn all_gone(&self) -> bool {
        !self.dry_run
            && self.deleted + self.vanished + self.replaced + self.changed == self.selected
    }

    /// The one-line text form.
    pub fn write_text(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let (done, per_flow) = if self.update {
            ("updated", "per-flow updates")
        } else {
            ("deleted", "per-flow deletes")
        };
        if self.dry_run {
            return writeln!(
                out,
                "dry run: {} flows would be {done} (matched {}); nothing was {done}",
                self.selected, self.matched
            );
        }
        let how = match self.method {
            Method::None => String::new(),
            Method::PerFlow => format!(", {per_flow}"),
            Method::KernelFlush => ", kernel flush".into(),
        };
        write!(
            out,
            "{done} {} of {} selected flows in {:.2} s (matched {}, vanished {}, failed {}{how})",
            self.deleted, self.selected, self.elapsed_s, self.matched, self.vanished, self.failed
        )?;
        if self.replaced + self.changed > 0 {
            write!(
                out,
                "; left alone {}: {} no longer matched, {} replaced by a new entry",
                self.replaced + self.changed,
                self.changed,
                self.replaced
            )?;
        }
        if self.count_is_table_delta {
            write!(out, "; the flush's count is the table's fall during it")?;
        }
        if self.interrupted || self.not_attempted > 0 {
            write!(out, "; interrupted, {} not attempted", self.not_attempted)?;
        }
        if !self.complete {
            write!(out, "; the selection dump was cut short: more flows may match")?;
        }
        writeln!(out)
    }
}

// The streamed deletes with a hook before each (the guard's spool), and the unattended run.
mod spooled;
// The unattended run with its records and spool: the guard's and `watch`'s evictions.
pub mod audited;

pub use spooled::{BeforeDelete, Spooled, streamed_spooled, unattended};

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::select::{GuestFilter, parse_cidr, parse_states};

    const K: Option<(u32, u32)> = Some((6, 18));

    fn src(s: &str) -> Selector {
        Selector { src: vec![parse_cidr(s).unwrap()], ..Selector::default() }
    }

    #[test]
    fn issue_10_attack_a_flush_count_survives_flows_created_meanwhile() {
        let before = Census { entries: 1_000, inserted: 50 };
        // The flush deleted 3 while 150 new flows came: the count rose, yet 3 went.
        assert_eq!(before.removed_until(&Census { entries: 1_147, inserted: 200 }), 3);
        // Nothing deleted, nothing new.
        assert_eq!(before.removed_until(&before), 0);
        // 240,000 deleted on a quiet table.
        assert_eq!(
            Census { entries: 258_540, inserted: 0 }
                .removed_until(&Census { entries: 18_540, inserted: 0 }),
            240_000
        );
    }

    #[test]
    fn issue_11_2_the_strategy_over_a_table_of_cases() {
        use Strategy::{ProvenFlush as Flush, SelectFirst, Streamed};
        let host = src("172.16.3.5");
        let filter = flush_filter(&host, K, false).unwrap();
        let not_flushable =
            Selector { states: parse_states("ESTABLISHED").unwrap(), ..host.clone() };
        let yes = Ask { yes: true, kernel: K, ..Ask::default() };
        let cases: [(&str, &Selector, Ask, Strategy); 14] = [
            ("--yes, flushable", &host, yes, Flush(filter)),
            ("--yes, a state is not a kernel filter", &not_flushable, yes, Streamed),
            ("the prompt shows the selection first", &host, Ask { yes: false, ..yes }, SelectFirst),
            ("the prompt, not flushable", &not_flushable, Ask { yes: false, ..yes }, SelectFirst),
            ("--dry-run", &host, Ask { dry_run: true, ..yes }, SelectFirst),
            (
                "--dry-run without --yes",
                &host,
                Ask { yes: false, dry_run: true, ..yes },
                SelectFirst,
            ),
            (
                "--limit needs the whole selection",
                &host,
                Ask { limit: Some(5), ..yes },
                SelectFirst,
            ),
            ("--save keeps the flows first", &host, Ask { save: true, ..yes }, SelectFirst),
            ("--rate paces: never a flush", &host, Ask { rate: Some(100), ..yes }, Streamed),
            ("--rate, not flushable", &not_flushable, Ask { rate: Some(100), ..yes }, Streamed),
            (
                "kernel 6.11 ignores the filter",
                &host,
                Ask { kernel: Some((6, 11)), ..yes },
                Streamed,
            ),
            ("kernel 6.12 honours it", &host, Ask { kernel: Some((6, 12)), ..yes }, Flush(filter)),
            ("kernel unknown", &host, Ask { kernel: None, ..yes }, Streamed),
            ("--all", &Selector::default(), yes, Streamed),
        ];
        for (what, sel, ask, want) in cases {
            assert_eq!(Strategy::choose(sel, &ask), want, "{what}: {ask:?}");
        }
    }

    #[test]
    fn flush_only_for_exact_ipv4_hosts_on_new_kernels() {
        let f = flush_filter(&src("172.16.3.5"), K, false).unwrap();
        assert_eq!(f.orig_src_v4, Some("172.16.3.5".parse().unwrap()));
        let both = Selector {
            dst: vec![parse_cidr("10.0.0.1").unwrap()],
            mark: Some((7, u32::MAX)),
            zone: Some(3),
            status_set: 4,
            ..src("172.16.3.5")
        };
        let f = flush_filter(&both, K, false).unwrap();
        assert_eq!((f.mark, f.zone, f.status), (Some((7, u32::MAX)), Some(3), Some((4, 4))));
        assert_eq!(f, both.kernel_filter(), "the flush filter is the selection dump's");

        assert_eq!(
            flush_filter(&src("172.16.3.5"), Some((6, 11)), false),
            Err(NoFlush::Kernel(Some((6, 11))))
        );
        assert_eq!(flush_filter(&src("172.16.3.5"), None, false), Err(NoFlush::Kernel(None)));
        assert_eq!(flush_filter(&src("172.16.3.5"), K, true), Err(NoFlush::Partial));
        assert_eq!(flush_filter(&src("fd00::5"), K, false), Err(NoFlush::Ipv6));
        assert!(matches!(flush_filter(&src("172.16.3.0/24"), K, false), Err(NoFlush::NotExact(_))));
        let two = Selector {
            src: vec![parse_cidr("10.0.0.1").unwrap(), parse_cidr("10.0.0.2").unwrap()],
            ..Selector::default()
        };
        assert!(matches!(flush_filter(&two, K, false), Err(NoFlush::NotExact(_))));
        let only_mark = Selector { mark: Some((1, u32::MAX)), ..Selector::default() };
        assert_eq!(flush_filter(&only_mark, K, false), Err(NoFlush::NoIpv4Host));
        assert_eq!(flush_filter(&Selector::default(), K, false), Err(NoFlush::NoIpv4Host));
        let v6fam = Selector { family: Some(Family::Ipv6), ..src("172.16.3.5") };
        assert_eq!(flush_filter(&v6fam, K, false), Err(NoFlush::Ipv6));
    }

    #[test]
    fn no_flush_when_any_userspace_criterion_is_set() {
        let base = src("172.16.3.5");
        let guest =
            GuestFilter { cidrs: vec![parse_cidr("172.16.3.5").unwrap()], ..Default::default() };
        let cases = [
            Selector { states: parse_states("ESTABLISHED").unwrap(), ..base.clone() },
            Selector { protos: vec![crate::flow::Proto::TCP], ..base.clone() },
            Selector {
                dport: vec![crate::select::parse_port_range("443").unwrap()],
                ..base.clone()
            },
            Selector { idle_min: Some(600), ..base.clone() },
            Selector { timeout_below: Some(600), ..base.clone() },
            Selector { reply_src: vec![parse_cidr("10.0.0.1").unwrap()], ..base.clone() },
            Selector { guests: Some(guest), ..base.clone() },
            Selector { labels: 1 << 3, ..base.clone() },
        ];
        for sel in &cases {
            assert!(matches!(flush_filter(sel, K, false), Err(NoFlush::NotExact(_))), "{sel:?}");
        }
    }

    #[test]
    fn issue_12_an_update_is_never_a_flush_and_says_updated() {
        let host = src("172.16.3.5");
        let update = Act::Update(crate::ctnetlink::Change {
            mark: Some((1, u32::MAX)),
            ..Default::default()
        });
        let ask = Ask { yes: true, kernel: K, act: update, ..Ask::default() };
        assert_eq!(Strategy::choose(&host, &ask), Strategy::Streamed);
        let mut text = Vec::new();
        Report::nothing(3, 3, false).of_act(update).write_text(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.starts_with("updated 0 of 3 selected flows"), "{text}");
        let mut dry = Vec::new();
        Report::nothing(3, 3, true).of_act(update).write_text(&mut dry).unwrap();
        assert_eq!(
            String::from_utf8(dry).unwrap(),
            "dry run: 3 flows would be updated (matched 3); nothing was updated\n"
        );
    }

    #[test]
    fn candidates_order_most_idle_first_then_dump_order() {
        let key = FlowKey::of(&{
            let mut f = crate::flow::test_tcp(
                "10.0.0.1",
                "10.0.0.2",
                1,
                2,
                crate::flow::TcpState::Established,
            );
            f.id = Some(1);
            f
        })
        .unwrap();
        let marked = Marked { key, seen: Instant::now(), start_ns: None, packets: None, status: 0 };
        let c = |idle, order| Candidate { idle, order: Reverse(order), marked };
        assert!(c(10, 5) > c(9, 1));
        assert!(c(10, 1) > c(10, 2), "ties: the earlier flow first");
    }
}
