//! Pipelined, identity-guarded deletes (`conntrack -D` without its round trip per flow) and
//! updates (`conntrack -U`), and the filtered kernel flush.
//!
//! One pipeline serves both: a [`Deleter`] sends each marked flow's [`Act`], a delete or an
//! update ([`Change`]), in the same chunks, with the same re-check and the same accounting.
//!
//! Requests are packed about 64 KiB per `sendmsg` (measured best on 6.18: 3.9 µs per delete,
//! 1 MiB chunks are 4× slower). Only the last request of a chunk asks for an ACK: the kernel
//! answers the others only when they fail, so our receive buffer holds at most one chunk's
//! failures, and that ACK tells when the whole chunk has been processed.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netlink_sys::Socket;

use super::uapi::*;
use super::{Error, decode, encode, error_code, messages, open_socket, recv_into, send_all};
use crate::flow::{Family, Flow, Proto, Tuple};

/// What an identity-guarded delete needs of a flow: the original tuple, the zone and the
/// kernel's id. Small and `Copy`, so a selection of 240,000 flows costs about 15 MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Address family.
    pub family: Family,
    /// Layer-4 protocol.
    pub proto: Proto,
    /// The original tuple, with its directional zone if it has one.
    pub orig: Tuple,
    /// `CTA_ZONE`, when the entry has one.
    pub zone: Option<u16>,
    /// `CTA_ID`: the kernel deletes only the entry with this id.
    pub id: u32,
}

impl FlowKey {
    /// The key of a dumped flow; `None` without a `CTA_ID` (every kernel since 2.6 sends one),
    /// because a delete without it could hit a new entry that re-used the tuple.
    pub fn of(flow: &Flow) -> Option<FlowKey> {
        Some(FlowKey {
            family: flow.family,
            proto: flow.proto,
            orig: flow.orig,
            zone: flow.zone,
            id: flow.id?,
        })
    }
}

/// A flow chosen for deletion, with what the kernel said of it and when: enough to tell, just
/// before the delete, whether the entry the tuple now finds is still that flow and still selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marked {
    /// What the delete sends.
    pub key: FlowKey,
    /// When the kernel's answer describing the flow was read.
    pub seen: Instant,
    /// `CTA_TIMESTAMP_START` then (`nf_conntrack_timestamp=1`): a new entry on the same tuple,
    /// even one that re-uses the old entry's memory and so its id, has another start time.
    pub start_ns: Option<u64>,
    /// Packets in both directions then (`nf_conntrack_acct=1`): they never go down for one
    /// entry, so fewer now means a new entry.
    pub packets: Option<u64>,
    /// The status bits then: an update that sets bits sends them with these (the kernel
    /// refuses a status that clears a bit it may not clear).
    pub status: u32,
}

impl Marked {
    /// `flow` as read at `seen`; `None` without a `CTA_ID` (see [`FlowKey::of`]).
    pub fn of(flow: &Flow, seen: Instant) -> Option<Marked> {
        Some(Marked {
            key: FlowKey::of(flow)?,
            seen,
            start_ns: flow.start_ns,
            packets: packets(flow),
            status: flow.status.0,
        })
    }
}

/// What an update changes on each selected flow (`conntrack -U`); the kernel applies each part
/// to the entry as it is when the request arrives (`ctnetlink_change_conntrack`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Change {
    /// `(value, mask)`: the new mark is `(old & !mask) ^ value` (`CTA_MARK` with
    /// `CTA_MARK_MASK`, computed by the kernel, so a mark set meanwhile outside the mask stays).
    pub mark: Option<(u32, u32)>,
    /// `CTA_TIMEOUT`: seconds from now.
    pub timeout: Option<u32>,
    /// Status bits to set (`CTA_STATUS`); bits can only be set, never cleared.
    pub status: u32,
    /// `(bits, mask)`: the labels under `mask` become `bits`, the others stay (`CTA_LABELS`
    /// with `CTA_LABELS_MASK`). The entry needs the connlabel extension, which the kernel
    /// attaches at creation only while a label user (an nft `ct label` rule, xt_connlabel)
    /// exists in the namespace; without it the answer is ENOSPC.
    pub labels: Option<(u128, u128)>,
}

impl Change {
    /// True when nothing would change.
    pub fn is_empty(&self) -> bool {
        *self == Change::default()
    }
}

/// What a [`Deleter`] does to each flow it is handed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Act {
    /// `IPCTNL_MSG_CT_DELETE` (`conntrack -D`).
    #[default]
    Delete,
    /// `IPCTNL_MSG_CT_NEW` without `NLM_F_CREATE` (`conntrack -U`).
    Update(Change),
}

impl Act {
    /// Appends this act's request for `m`.
    fn encode(&self, buf: &mut Vec<u8>, seq: u32, m: &Marked) {
        match self {
            Act::Delete => encode::delete(buf, seq, &m.key, false),
            Act::Update(change) => encode::update(buf, seq, &m.key, m.status, change),
        }
    }
}

fn packets(flow: &Flow) -> Option<u64> {
    match (flow.counters_orig, flow.counters_reply) {
        (None, None) => None,
        (o, r) => Some(o.map_or(0, |c| c.packets) + r.map_or(0, |c| c.packets)),
    }
}

/// What the re-check found of one marked flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Still the same entry and still selected: delete (or update) it now.
    Act,
    /// No entry has the tuple any more (ENOENT).
    Gone,
    /// The tuple belongs to a new entry (another id, or the same id with another start time
    /// or fewer packets: the kernel handed the freed entry's memory to a new connection).
    Replaced,
    /// The same entry, but it no longer matches the selection (its state, mark, idle time ...
    /// changed).
    Changed,
    /// The kernel refused the lookup with this errno.
    Failed(i32),
}

fn judge(m: &Marked, now: &Flow, selected: &dyn Fn(&Flow) -> bool) -> Verdict {
    if now.id != Some(m.key.id) {
        return Verdict::Replaced;
    }
    if m.start_ns.is_some() && now.start_ns != m.start_ns {
        return Verdict::Replaced;
    }
    if let Some(before) = m.packets
        && packets(now).is_some_and(|p| p < before)
    {
        return Verdict::Replaced;
    }
    if !selected(now) {
        return Verdict::Changed;
    }
    Verdict::Act
}

/// How the deletes (or updates) went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteTally {
    /// Deleted (or, by an update deleter, updated) by this run.
    pub deleted: u64,
    /// Gone before their delete (ENOENT: expired, deleted by someone else, or the tuple now
    /// belongs to a new entry with another id, which the kernel left alone).
    pub vanished: u64,
    /// Left alone because, re-checked just before the delete, the tuple belonged to a new
    /// entry (see [`Marked`]).
    pub replaced: u64,
    /// Left alone because, re-checked just before the delete, the flow no longer matched.
    pub changed: u64,
    /// Refused with another errno.
    pub failed: u64,
    /// The first few failures: the flow and the errno.
    pub failures: Vec<(FlowKey, i32)>,
    /// Not sent because the run was stopped.
    pub not_attempted: u64,
    /// Flows re-checked with a lookup before their delete.
    pub rechecked: u64,
}

impl DeleteTally {
    fn fail(&mut self, key: FlowKey, errno: i32) {
        self.failed += 1;
        if self.failures.len() < FAILURES_KEPT {
            self.failures.push((key, errno));
        }
    }
}

/// How far a run of deletes has got, read from another thread while it runs (a progress bar).
/// Plain counters, relaxed: a reader sees them a moment late, never torn.
#[derive(Debug, Default)]
pub struct DeleteProgress {
    /// The flows the run found to delete so far: all of a selection made first, or what a
    /// streamed dump has matched until now (set by the caller feeding the deleter).
    pub selected: AtomicU64,
    /// The flows the deleter has dealt with: deleted, found gone, left alone or refused.
    pub done: AtomicU64,
}

/// Failures kept with their flow for the report; the rest are only counted.
const FAILURES_KEPT: usize = 20;
/// Bytes of requests per `sendmsg`.
const CHUNK_BYTES: usize = 64 << 10;
/// After a re-check, how long its lookups stay good for the deletes that follow (they go out
/// milliseconds later unless this thread stalls).
const RECHECK_STALL: Duration = Duration::from_millis(100);
/// Re-check rounds for one chunk before what is still stale is left undone.
const RECHECK_ROUNDS: usize = 3;
/// How far paced deletes may fall behind their schedule before the schedule moves instead.
const PACE_SLACK: Duration = Duration::from_millis(100);
/// Lookups per `sendmsg` when re-checking. Each answer is a separate skb of a page or two of
/// truesize (`ctnetlink_get_conntrack` allocates `NLMSG_DEFAULT_SIZE`), all queued on our
/// socket before we read them: 256 of them stay far below its 8 MiB receive buffer.
const RECHECK_BATCH: usize = 256;

/// The re-check before a delete: flows whose answer is older than `fresh_for` are looked up
/// again and deleted only if [`judge`] says so.
struct Recheck<'a> {
    selected: &'a (dyn Fn(&Flow) -> bool + Sync),
    fresh_for: Duration,
    flow: Flow,
}

/// A ctnetlink socket that deletes flows in pipelined chunks. Use one per thread; it can run
/// beside a [`super::Conntrack`] that is still dumping (a second socket).
///
/// With [`Deleter::with_recheck`], no delete is sent on an answer older than its bound: a chunk
/// holding a flow read longer ago is first looked up again (pipelined `IPCTNL_MSG_CT_GET`s on
/// this socket), and only the flows that are still the same entry and still selected are
/// deleted, at once.
pub struct Deleter<'a> {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
    rbuf: Vec<u8>,
    chunk: Vec<Marked>,
    first_seq: u32,
    tally: DeleteTally,
    /// Deletes per second, if paced.
    rate: Option<u32>,
    started: Option<Instant>,
    sent: u64,
    stop: Option<&'a AtomicBool>,
    stopped: bool,
    recheck: Option<Recheck<'a>>,
    act: Act,
    progress: Option<&'a DeleteProgress>,
}

impl<'a> Deleter<'a> {
    /// Opens a `NETLINK_NETFILTER` socket for deletes (needs `CAP_NET_ADMIN`).
    pub fn open() -> Result<Deleter<'a>, Error> {
        Ok(Deleter {
            sock: open_socket()?,
            seq: 0,
            buf: Vec::with_capacity(CHUNK_BYTES + 512),
            rbuf: Vec::with_capacity(64 << 10),
            chunk: Vec::new(),
            first_seq: 1,
            tally: DeleteTally::default(),
            rate: None,
            started: None,
            sent: 0,
            stop: None,
            stopped: false,
            recheck: None,
            act: Act::Delete,
            progress: None,
        })
    }

    /// Publishes the flows dealt with into `progress.done` after each chunk (`None`: no one
    /// watches).
    pub fn with_progress(mut self, progress: Option<&'a DeleteProgress>) -> Deleter<'a> {
        self.progress = progress;
        self
    }

    /// The progress this deleter publishes into, for the code that feeds it.
    pub fn progress(&self) -> Option<&'a DeleteProgress> {
        self.progress
    }

    /// Stores the flows dealt with so far into the watched progress.
    fn publish(&self) {
        if let Some(p) = self.progress {
            let t = &self.tally;
            p.done.store(
                t.deleted + t.vanished + t.replaced + t.changed + t.failed,
                Ordering::Relaxed,
            );
        }
    }

    /// Sends `act` for each flow instead of a delete: [`Act::Update`] makes this an updater
    /// (`conntrack -U`), with the same chunks, re-check and tally (`deleted` counts updates).
    pub fn with_act(mut self, act: Act) -> Deleter<'a> {
        self.act = act;
        self
    }

    /// Paces the deletes to at most `per_sec` a second (smaller chunks, sleeps between them).
    pub fn with_rate(mut self, per_sec: Option<u32>) -> Deleter<'a> {
        self.rate = per_sec.filter(|r| *r > 0);
        self
    }

    /// Stops sending once `flag` is set (e.g. by SIGINT); what was not sent is counted as
    /// not attempted.
    pub fn with_stop(mut self, flag: &'a AtomicBool) -> Deleter<'a> {
        self.stop = Some(flag);
        self
    }

    /// Deletes no flow on an answer older than `fresh_for`: such a flow is looked up again
    /// right before its delete, and left alone unless the entry is still the one marked and
    /// `selected` still accepts it. The lookup and the delete are then a few milliseconds
    /// apart; an entry re-created on the same tuple within them (and re-using the old one's
    /// memory, hence its id) cannot be told from the old one unless timestamps or counters
    /// are on.
    pub fn with_recheck(
        mut self,
        selected: &'a (dyn Fn(&Flow) -> bool + Sync),
        fresh_for: Duration,
    ) -> Deleter<'a> {
        self.recheck = Some(Recheck { selected, fresh_for, flow: Flow::default() });
        self
    }

    /// How many requests a chunk holds at most: about 64 KiB, or a twentieth of a second's
    /// worth when paced, so the pace is smooth.
    fn chunk_limit(&self) -> usize {
        match self.rate {
            Some(r) => (r as usize / 20).clamp(1, 1024),
            None => usize::MAX,
        }
    }

    /// True once the stop flag was seen.
    pub fn stopped(&self) -> bool {
        self.stopped || self.stop.is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// Queues the delete of one flow; sends a chunk when it is full. `Break` once stopped:
    /// this flow and every later one count as not attempted.
    pub fn push(&mut self, marked: &Marked) -> Result<ControlFlow<()>, Error> {
        if self.stopped() {
            self.stopped = true;
            self.tally.not_attempted += 1;
            return Ok(ControlFlow::Break(()));
        }
        self.seq = self.seq.wrapping_add(1);
        if self.chunk.is_empty() {
            self.first_seq = self.seq;
        }
        self.act.encode(&mut self.buf, self.seq, marked);
        self.chunk.push(*marked);
        if self.buf.len() >= CHUNK_BYTES || self.chunk.len() >= self.chunk_limit() {
            self.send_chunk()?;
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Sends what is queued and returns the tally.
    pub fn finish(mut self) -> Result<DeleteTally, Error> {
        if !self.chunk.is_empty() {
            if self.stopped() {
                self.tally.not_attempted += self.chunk.len() as u64;
            } else {
                self.send_chunk()?;
            }
        }
        Ok(self.tally)
    }

    fn pace(&mut self) {
        let Some(rate) = self.rate else { return };
        let mut started = *self.started.get_or_insert_with(Instant::now);
        // The chunk about to go may start once the ones before it are due.
        let due = Duration::from_secs_f64(self.sent as f64 / f64::from(rate));
        // Behind by more than a chunk's time (this thread was not scheduled, a re-check was
        // slow): carry on at the rate from now instead of a burst that catches up, which
        // would delete more than the rate in a second.
        if started.elapsed() > due + PACE_SLACK {
            started = Instant::now() - due;
            self.started = Some(started);
        }
        while let Some(wait) = due.checked_sub(started.elapsed()) {
            if self.stopped() || wait.is_zero() {
                break;
            }
            std::thread::sleep(wait.min(Duration::from_millis(50)));
        }
    }

    fn send_chunk(&mut self) -> Result<(), Error> {
        let op = match self.act {
            Act::Delete => "delete conntrack entries",
            Act::Update(_) => "update conntrack entries",
        };
        // Pace first: the re-check below must be the last look before the deletes.
        self.pace();
        if self.stopped() {
            self.stopped = true;
            self.tally.not_attempted += self.chunk.len() as u64;
            self.chunk.clear();
            self.buf.clear();
            return Ok(());
        }
        // A re-check stamps each kept flow with the time of its lookup; should this thread
        // stall past the bound before the deletes go, the next round looks them up again.
        let mut rounds = 0;
        while self.recheck_chunk(rounds)? {
            rounds += 1;
            if rounds == RECHECK_ROUNDS {
                // Never delete on an old answer: what is still stale is left undone.
                self.drop_stale(rounds);
                break;
            }
        }
        if self.chunk.is_empty() {
            self.buf.clear();
            self.publish();
            return Ok(());
        }
        // The last request becomes the chunk's ACK barrier.
        let last = last_message(&self.buf);
        set_ack(&mut self.buf[last..]);
        send_all(&self.sock, &self.buf, op)?;
        self.sent += self.chunk.len() as u64;
        let barrier = self.first_seq.wrapping_add(self.chunk.len() as u32 - 1);
        let (mut vanished, mut failed) = (0u64, 0u64);
        let mut done = false;
        while !done {
            // ENOBUFS cannot happen with one chunk in flight (its failures fit our buffer many
            // times over); if it does, or if the barrier's ACK never comes (the REPLY_TIMEOUT
            // wait), the chunk's outcome is unknown: an error.
            recv_into(&self.sock, &mut self.rbuf, op)?;
            for msg in messages(&self.rbuf) {
                let msg = msg.map_err(|source| Error::Malformed { op, source })?;
                let idx = msg.sequence_number().wrapping_sub(self.first_seq) as usize;
                if msg.message_type() != NLMSG_ERROR || idx >= self.chunk.len() {
                    continue;
                }
                match error_code(msg.payload()) {
                    0 => {}
                    // Without CAP_NET_ADMIN, nfnetlink_rcv answers the whole chunk with one
                    // EPERM (with its first sequence number) and deletes nothing: the barrier's
                    // ACK is not coming.
                    libc::EPERM => return Err(Error::Kernel { op, errno: libc::EPERM }),
                    libc::ENOENT => vanished += 1,
                    errno => {
                        failed += 1;
                        if self.tally.failures.len() < FAILURES_KEPT {
                            self.tally.failures.push((self.chunk[idx].key, errno));
                        }
                    }
                }
                if msg.sequence_number() == barrier {
                    done = true;
                }
            }
        }
        let n = self.chunk.len() as u64;
        self.tally.deleted += n - vanished - failed;
        self.tally.vanished += vanished;
        self.tally.failed += failed;
        self.chunk.clear();
        self.buf.clear();
        self.publish();
        Ok(())
    }

    /// With a re-check set and a flow in the chunk read longer ago than its bound: looks every
    /// flow of the chunk up again and keeps (and re-encodes) only those to delete, stamped
    /// with the time of their lookup. True when it looked.
    fn recheck_chunk(&mut self, round: usize) -> Result<bool, Error> {
        let Some(fresh_for) = self.bound(round) else { return Ok(false) };
        if self.chunk.iter().all(|m| m.seen.elapsed() <= fresh_for) {
            return Ok(false);
        }
        let mut verdicts = Vec::with_capacity(self.chunk.len());
        let mut looked_at = Vec::with_capacity(self.chunk.len());
        for part in 0..self.chunk.len().div_ceil(RECHECK_BATCH) {
            let from = part * RECHECK_BATCH;
            let to = (from + RECHECK_BATCH).min(self.chunk.len());
            // The kernel answers each lookup inside our send: the answer is this recent.
            let now = Instant::now();
            self.lookup(from..to, &mut verdicts)?;
            looked_at.resize(to, now);
        }
        self.tally.rechecked += verdicts.len() as u64;
        let marked = std::mem::take(&mut self.chunk);
        self.buf.clear();
        for ((m, (v, status)), looked) in marked.iter().zip(verdicts).zip(looked_at) {
            match v {
                Verdict::Act => self.requeue(Marked { seen: looked, status, ..*m }),
                Verdict::Gone => self.tally.vanished += 1,
                Verdict::Replaced => self.tally.replaced += 1,
                Verdict::Changed => self.tally.changed += 1,
                Verdict::Failed(errno) => self.tally.fail(m.key, errno),
            }
        }
        Ok(true)
    }

    /// Queues `m` again after a re-check, with a new sequence number.
    fn requeue(&mut self, m: Marked) {
        self.seq = self.seq.wrapping_add(1);
        if self.chunk.is_empty() {
            self.first_seq = self.seq;
        }
        self.act.encode(&mut self.buf, self.seq, &m);
        self.chunk.push(m);
    }

    /// How old an answer may be in re-check round `round`: the caller's bound for the answers
    /// it marked, and at least [`RECHECK_STALL`] for our own lookups (so a bound of zero, "look
    /// every flow up", settles after one round). `None` without a re-check.
    fn bound(&self, round: usize) -> Option<Duration> {
        let fresh_for = self.recheck.as_ref()?.fresh_for;
        Some(if round == 0 { fresh_for } else { fresh_for.max(RECHECK_STALL) })
    }

    /// Takes out of the chunk, as not attempted, every flow whose answer is past the bound.
    fn drop_stale(&mut self, round: usize) {
        let Some(fresh_for) = self.bound(round) else { return };
        let marked = std::mem::take(&mut self.chunk);
        self.buf.clear();
        for m in marked {
            if m.seen.elapsed() <= fresh_for {
                self.requeue(m);
            } else {
                self.tally.not_attempted += 1;
            }
        }
    }

    /// Pipelined lookups of `chunk[range]`: one answer each, the entry (its verdict and its
    /// status bits now) or an error.
    fn lookup(
        &mut self,
        range: std::ops::Range<usize>,
        verdicts: &mut Vec<(Verdict, u32)>,
    ) -> Result<(), Error> {
        let op = "re-check conntrack entries before deleting";
        // Only a deleter with a re-check looks up (`bound` is `None` without one).
        let Some(rc) = self.recheck.as_mut() else { return Ok(()) };
        let mut req = Vec::with_capacity(range.len() * 96);
        let first = self.seq.wrapping_add(1);
        for m in &self.chunk[range.clone()] {
            self.seq = self.seq.wrapping_add(1);
            encode::get_key(&mut req, self.seq, &m.key);
        }
        send_all(&self.sock, &req, op)?;
        let n = range.len();
        let mut answers: Vec<Option<(Verdict, u32)>> = vec![None; n];
        let mut pending = n;
        while pending > 0 {
            // An overrun, or an answer that never came (the REPLY_TIMEOUT wait), is an error.
            recv_into(&self.sock, &mut self.rbuf, op)?;
            for msg in messages(&self.rbuf) {
                let msg = msg.map_err(|source| Error::Malformed { op, source })?;
                let idx = msg.sequence_number().wrapping_sub(first) as usize;
                if idx >= n || answers[idx].is_some() {
                    continue;
                }
                let m = &self.chunk[range.start + idx];
                let verdict = if msg.message_type() == NLMSG_ERROR {
                    let v = match error_code(msg.payload()) {
                        // An ACK: cannot answer a GET without NLM_F_ACK; wait for its entry.
                        0 => continue,
                        libc::ENOENT => Verdict::Gone,
                        // nfnetlink checks CAP_NET_ADMIN once per skb and answers only the
                        // first request: no other answer will come.
                        libc::EPERM => return Err(Error::Kernel { op, errno: libc::EPERM }),
                        errno => Verdict::Failed(errno),
                    };
                    (v, m.status)
                } else {
                    decode::decode_flow(msg.payload(), &mut rc.flow)
                        .map_err(|source| Error::Malformed { op, source })?;
                    (judge(m, &rc.flow, rc.selected), rc.flow.status.0)
                };
                answers[idx] = Some(verdict);
                pending -= 1;
            }
        }
        // No answer is pending: every slot holds its verdict.
        verdicts.extend(answers.into_iter().flatten());
        Ok(())
    }
}

/// Offset of the last message in a buffer of whole netlink messages.
fn last_message(buf: &[u8]) -> usize {
    let last = messages(buf).map_while(Result::ok).last();
    // Each message is a sub-slice of `buf`: its start's distance from `buf`'s is its offset.
    last.map_or(0, |msg| msg.into_inner().as_ptr() as usize - buf.as_ptr() as usize)
}

/// Sets NLM_F_ACK on the message at the start of `msg`.
fn set_ack(msg: &mut [u8]) {
    let flags = u16::from_ne_bytes([msg[6], msg[7]]) | NLM_F_ACK;
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::NetlinkBuffer;

    use super::*;
    use crate::flow::TcpState;

    #[test]
    fn ack_goes_on_the_last_message_only() {
        let key = FlowKey::of(&{
            let mut f = crate::flow::test_tcp("10.0.0.1", "10.0.0.2", 1, 2, TcpState::Established);
            f.id = Some(7);
            f
        })
        .unwrap();
        let mut buf = Vec::new();
        for seq in 1..=3 {
            encode::delete(&mut buf, seq, &key, false);
        }
        let last = last_message(&buf);
        assert_eq!(last, buf.len() / 3 * 2);
        set_ack(&mut buf[last..]);
        let flags: Vec<u16> = (0..3)
            .map(|i| NetlinkBuffer::new_checked(&buf[i * buf.len() / 3..]).unwrap().flags())
            .collect();
        assert_eq!(flags, [NLM_F_REQUEST, NLM_F_REQUEST, NLM_F_REQUEST | NLM_F_ACK]);
    }

    fn marked(f: &Flow) -> Marked {
        Marked::of(f, Instant::now()).unwrap()
    }

    #[test]
    fn issue_10_the_recheck_deletes_only_the_same_entry_still_selected() {
        let mut then = crate::flow::test_tcp("10.0.0.1", "10.0.0.2", 1, 2, TcpState::Established);
        then.id = Some(7);
        let established = |f: &Flow| f.tcp_state() == Some(TcpState::Established);
        let m = marked(&then);
        assert_eq!(judge(&m, &then, &established), Verdict::Act);

        let moved =
            Flow { state: Some(crate::flow::ProtoState::Tcp(TcpState::TimeWait)), ..then.clone() };
        assert_eq!(judge(&m, &moved, &established), Verdict::Changed, "stopped matching");
        let other_id = Flow { id: Some(8), ..then.clone() };
        assert_eq!(judge(&m, &other_id, &established), Verdict::Replaced, "another entry");

        // The same id (the kernel re-used the memory) but another start time: a new entry.
        let stamped = Flow { start_ns: Some(1_000), ..then.clone() };
        let m = marked(&stamped);
        assert_eq!(judge(&m, &stamped, &established), Verdict::Act);
        let reborn = Flow { start_ns: Some(2_000), ..stamped.clone() };
        assert_eq!(judge(&m, &reborn, &established), Verdict::Replaced);

        // Counters never go down for one entry.
        let counted = Flow {
            counters_orig: Some(crate::flow::Counter { packets: 10, bytes: 1 }),
            ..then.clone()
        };
        let m = marked(&counted);
        let more = Flow {
            counters_reply: Some(crate::flow::Counter { packets: 1, bytes: 1 }),
            ..counted.clone()
        };
        assert_eq!(judge(&m, &more, &established), Verdict::Act, "traffic since");
        let fewer = Flow {
            counters_orig: Some(crate::flow::Counter { packets: 2, bytes: 1 }),
            ..counted.clone()
        };
        assert_eq!(judge(&m, &fewer, &established), Verdict::Replaced);
    }

    #[test]
    fn a_flow_without_an_id_has_no_key() {
        let f = crate::flow::test_tcp("10.0.0.1", "10.0.0.2", 1, 2, TcpState::Established);
        assert_eq!(FlowKey::of(&f), None);
    }
}
