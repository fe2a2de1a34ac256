//! The dump pipeline (`conntrack -L`): one thread receives the kernel's chunks while this one
//! decodes them in place, dropping the repeats a resumed dump sends.

use std::io;
use std::ops::ControlFlow;
use std::sync::mpsc;
use std::time::Instant;

use netlink_sys::Socket;
use rustc_hash::FxHashSet;

use super::uapi::*;
use super::{
    Conntrack, DumpFilter, Error, Malformed, decode, encode, error_code, messages, recv_error,
};
use crate::flow::{EntryId, Flow};

/// What a dump saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DumpSummary {
    /// Entries handed to the callback.
    pub entries: u64,
    /// Entries skipped because the kernel sent them twice (a resume re-walked a bucket).
    pub duplicates: u64,
    /// The kernel flagged the dump as inconsistent (`NLM_F_DUMP_INTR`).
    pub interrupted: bool,
}

/// One hand-off between the dump threads: several skbs received back to back. Waking the
/// decoding thread costs an IPI, dear on a VM; once per skb it added ~20 % to a dump.
const DUMP_BATCH: usize = 256 << 10;
/// Room a `recv` needs at the end of a batch: one whole dump skb.
const DUMP_SKB_MAX: usize = 32 << 10;
/// Receive buffers in flight between the receiving and the decoding thread.
const PIPELINE: usize = 4;
/// Dump attempts when our receive buffer overflowed ([`Conntrack::dump_retrying`]).
pub const DUMP_ATTEMPTS: usize = 3;

/// What [`Conntrack::dump_retrying`] hands its callback.
#[derive(Debug)]
pub enum Dumped<'a> {
    /// One entry, and when the kernel's answer about it was received: the start of the
    /// receive batch that held it (the oldest moment of that batch), not when it was decoded.
    Flow(&'a Flow, Instant),
    /// The dump overflowed our receive buffer and starts again from scratch: forget every
    /// flow seen so far (they all come again, but those that vanished meanwhile).
    Restart,
}

impl Conntrack {
    /// Streams the table to `each`, one decoded flow at a time (`conntrack -L`; the filter's
    /// kernel-side parts need the kernels named on [`DumpFilter`]). Memory stays bounded: the
    /// flow is decoded in place and only a small window of ids is kept to drop the entries a
    /// dump resume may repeat. Returning `Break` stops early.
    pub fn dump(
        &mut self,
        filter: &DumpFilter,
        mut each: impl FnMut(&Flow) -> ControlFlow<()>,
    ) -> Result<DumpSummary, Error> {
        self.dump_stamped(filter, |flow, _| each(flow))
    }

    /// [`Conntrack::dump`], each flow handed on with the moment its answer was received. The
    /// receiving thread reads up to a few batches ahead of the decoding, so a stall between
    /// the two (a slow callback, SIGSTOP) makes an answer older than its decode time says:
    /// the stamp is taken before the first `recv` of the batch that held the entry (one
    /// `Instant` a batch, none per entry), so it errs old, never young.
    pub fn dump_stamped(
        &mut self,
        filter: &DumpFilter,
        mut each: impl FnMut(&Flow, Instant) -> ControlFlow<()>,
    ) -> Result<DumpSummary, Error> {
        let op = "dump conntrack table";
        let mut flow = std::mem::take(&mut self.flow);
        // A resume whose last entry vanished re-walks that hash bucket from its head, so a
        // repeat can only be an entry of the previous one or two receive chunks (a chain is far
        // shorter than the ~130 entries of a 32 KiB chunk).
        let mut window = IdWindow::default();
        let mut duplicates = 0;
        let mut received = Instant::now();
        let r = self.stream(op, filter, |item| match item {
            Item::Chunk(at) => {
                received = at;
                window.rotate();
                Ok(ControlFlow::Continue(false))
            }
            Item::Message(msg) => {
                decode::decode_flow(&msg[NLMSG_HDRLEN..], &mut flow)
                    .map_err(|source| Error::Malformed { op, source })?;
                // What a resumed dump repeats is the same entry, so the same id *and* tuple: among
                // a quarter million live entries a few pairs share a 32-bit id, and a window of a
                // few thousand ids would drop a distinct entry as a "repeat" in about one dump in
                // six of the incident's table (a flow `evict` then never sees).
                if flow.id.is_some() && !window.insert(flow.identity()) {
                    duplicates += 1;
                    return Ok(ControlFlow::Continue(false));
                }
                Ok(each(&flow, received).map_continue(|()| true))
            }
        });
        self.flow = flow;
        r.map(|s| DumpSummary { duplicates, ..s })
    }

    /// [`Conntrack::dump_stamped`], run again from scratch when our receive buffer overflowed
    /// (ENOBUFS: the kernel dropped part of the dump), at most [`DUMP_ATTEMPTS`] times in
    /// all. Before each new attempt `each` gets [`Dumped::Restart`] (its answer is ignored):
    /// what it saw so far is to be forgotten. The last attempt's overrun is the error.
    pub fn dump_retrying(
        &mut self,
        filter: &DumpFilter,
        mut each: impl FnMut(Dumped<'_>) -> ControlFlow<()>,
    ) -> Result<DumpSummary, Error> {
        let mut attempt = 1;
        loop {
            match self.dump_stamped(filter, |flow, at| each(Dumped::Flow(flow, at))) {
                Err(Error::Overrun { .. }) if attempt < DUMP_ATTEMPTS => {
                    attempt += 1;
                    let _ = each(Dumped::Restart);
                }
                r => return r,
            }
        }
    }

    /// Streams the raw netlink messages of a dump, header included, as the kernel sent them:
    /// for recording fixtures. Decode one with [`decode_message`].
    pub fn dump_raw(
        &mut self,
        filter: &DumpFilter,
        mut each: impl FnMut(&[u8]),
    ) -> Result<DumpSummary, Error> {
        self.stream("dump conntrack table", filter, |item| {
            if let Item::Message(m) = item {
                each(m);
            }
            Ok(ControlFlow::Continue(true))
        })
    }

    /// Sends a dump request and hands every entry message (and each new receive chunk) to
    /// `each`, which answers Continue(counted) or Break.
    ///
    /// The kernel builds each chunk inside our `recv`, so a receiving thread keeps the kernel
    /// busy while this thread decodes the previous chunk: on two cores a dump costs about the
    /// kernel's time alone. The receiver always reads to DONE, even after a Break or an
    /// error here, so the socket stays usable.
    fn stream(
        &mut self,
        op: &'static str,
        filter: &DumpFilter,
        mut each: impl FnMut(Item<'_>) -> Result<ControlFlow<(), bool>, Error>,
    ) -> Result<DumpSummary, Error> {
        let seq = self.next_seq();
        self.req.clear();
        encode::dump(&mut self.req, seq, filter);
        self.send_req(op)?;
        let sock = &self.sock;
        let (full_tx, full_rx) = mpsc::sync_channel::<Result<Batch, Error>>(PIPELINE);
        let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
        for _ in 0..PIPELINE {
            let _ = empty_tx.send(Vec::with_capacity(DUMP_BATCH));
        }
        std::thread::scope(|scope| {
            scope.spawn(move || receive_dump(sock, op, seq, &empty_rx, &full_tx));
            let mut summary = DumpSummary::default();
            let mut stopped = false;
            let mut outcome: Option<Result<DumpSummary, Error>> = None;
            for chunk in full_rx.iter() {
                let (buf, received) = match chunk {
                    Ok(batch) => batch,
                    Err(e) => {
                        outcome.get_or_insert(Err(e));
                        continue;
                    }
                };
                if outcome.is_none() {
                    let chunk = Chunk { buf: &buf, received };
                    match process_chunk(chunk, seq, op, &mut summary, &mut stopped, &mut each) {
                        Ok(true) => outcome = Some(Ok(summary)),
                        Ok(false) => {}
                        Err(e) => outcome = Some(Err(e)),
                    }
                }
                let _ = empty_tx.send(buf);
            }
            outcome.unwrap_or(Err(Error::Malformed {
                op,
                source: Malformed("dump ended without DONE"),
            }))
        })
    }
}

/// One receive batch, and the moment before its first `recv`.
type Batch = (Vec<u8>, Instant);

/// One receive batch as the decoding thread reads it.
struct Chunk<'a> {
    buf: &'a [u8],
    received: Instant,
}

/// Receives a dump's chunks into recycled buffers until the chunk holding its end, each
/// batch stamped with the moment before its first `recv` (the kernel builds an skb inside
/// the `recv` that takes it, so nothing in the batch is older than that).
fn receive_dump(
    sock: &Socket,
    op: &'static str,
    seq: u32,
    empty: &mpsc::Receiver<Vec<u8>>,
    full: &mpsc::SyncSender<Result<Batch, Error>>,
) {
    loop {
        let mut buf = empty.try_recv().unwrap_or_else(|_| Vec::with_capacity(DUMP_BATCH));
        buf.clear();
        let received = Instant::now();
        // Each `recv` appends one skb (the kernel builds the next inside it); the batch goes
        // across once it cannot take another whole skb, or at the end of the dump.
        let last = loop {
            let start = buf.len();
            if let Err(e) = sock.recv(&mut buf, 0) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                let err = recv_error(op, e);
                if !buf.is_empty() {
                    let _ = full.send(Ok((buf, received)));
                }
                let _ = full.send(Err(err));
                return;
            }
            if ends_dump(&buf[start..], seq) {
                break true;
            }
            if buf.capacity() - buf.len() < DUMP_SKB_MAX {
                break false;
            }
        };
        // A consumer that stopped listening still lets us drain to the end.
        let _ = full.send(Ok((buf, received)));
        if last {
            return;
        }
    }
}

/// True when the chunk holds our dump's DONE or its error.
fn ends_dump(buf: &[u8], seq: u32) -> bool {
    messages(buf).map_while(Result::ok).any(|msg| {
        msg.sequence_number() == seq
            && (msg.message_type() == NLMSG_DONE
                || (msg.message_type() == NLMSG_ERROR && error_code(msg.payload()) != 0))
    })
}

/// Hands one chunk's entry messages on; Ok(true) once the dump's DONE is seen.
fn process_chunk(
    chunk: Chunk<'_>,
    seq: u32,
    op: &'static str,
    summary: &mut DumpSummary,
    stopped: &mut bool,
    each: &mut impl FnMut(Item<'_>) -> Result<ControlFlow<(), bool>, Error>,
) -> Result<bool, Error> {
    // A chunk start only moves the dedupe window and the stamp; it counts nothing.
    let _ = each(Item::Chunk(chunk.received))?;
    for msg in messages(chunk.buf) {
        let msg = msg.map_err(|source| Error::Malformed { op, source })?;
        if msg.sequence_number() != seq {
            continue;
        }
        if msg.flags() & NLM_F_DUMP_INTR != 0 {
            summary.interrupted = true;
        }
        match msg.message_type() {
            NLMSG_DONE => {
                let errno = error_code(msg.payload());
                return if errno != 0 { Err(Error::Kernel { op, errno }) } else { Ok(true) };
            }
            NLMSG_ERROR => {
                let errno = error_code(msg.payload());
                if errno != 0 {
                    return Err(Error::Kernel { op, errno });
                }
            }
            _ if *stopped => {}
            _ => match each(Item::Message(msg.into_inner()))? {
                ControlFlow::Continue(counted) => summary.entries += u64::from(counted),
                ControlFlow::Break(()) => {
                    summary.entries += 1;
                    *stopped = true;
                }
            },
        }
    }
    Ok(false)
}

/// What a dump stream hands on: the start of a receive chunk (when it was received), or one
/// entry message.
enum Item<'a> {
    Chunk(Instant),
    Message(&'a [u8]),
}

/// Decodes one whole ctnetlink conntrack message (netlink header included) into `flow`, as
/// [`Conntrack::dump`] does; for messages recorded with [`Conntrack::dump_raw`].
pub fn decode_message(msg: &[u8], flow: &mut Flow) -> Result<(), Malformed> {
    let body = msg.get(NLMSG_HDRLEN..).ok_or(Malformed("shorter than a netlink header"))?;
    decode::decode_flow(body, flow)
}

/// The ids of the current receive chunk and the two before it, to drop the repeats of a
/// resumed dump. Three small sets, reused: nothing grows with the table.
#[derive(Default)]
struct IdWindow {
    chunks: [FxHashSet<EntryId>; 3],
    current: usize,
}

impl IdWindow {
    /// Starts a new chunk, forgetting the oldest.
    fn rotate(&mut self) {
        self.current = (self.current + 1) % self.chunks.len();
        self.chunks[self.current].clear();
    }

    /// False when `id` (a [`Flow::identity`]) was already seen in the window.
    fn insert(&mut self, id: EntryId) -> bool {
        let seen =
            self.chunks.iter().enumerate().any(|(i, c)| i != self.current && c.contains(&id));
        !seen && self.chunks[self.current].insert(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_window_drops_repeats_across_one_chunk_boundary() {
        let mut w = IdWindow::default();
        w.rotate();
        assert!(w.insert(1) && w.insert(2) && w.insert(3));
        assert!(!w.insert(2), "repeat inside a chunk");
        w.rotate();
        // A resumed dump re-sends 2 and 3 at the head of the next chunk.
        assert!(!w.insert(2) && !w.insert(3));
        assert!(w.insert(4));
        w.rotate();
        assert!(!w.insert(1), "two chunks back is still inside the window");
        w.rotate();
        w.rotate();
        // Later the window has moved on: memory stays bounded.
        assert!(w.insert(3));
        assert!(w.chunks.iter().map(FxHashSet::len).sum::<usize>() < 8);
    }

    #[test]
    fn two_live_entries_sharing_an_id_are_both_kept() {
        let flow = |sport| {
            let mut f = crate::flow::test_tcp(
                "172.16.3.5",
                "10.0.0.1",
                sport,
                443,
                crate::flow::TcpState::Established,
            );
            f.id = Some(0xdead_beef);
            f
        };
        let (a, b) = (flow(40000), flow(40001));
        let mut w = IdWindow::default();
        w.rotate();
        assert!(w.insert(a.identity()));
        assert!(w.insert(b.identity()), "same id, another tuple: not a repeat");
        w.rotate();
        assert!(!w.insert(a.identity()), "the resumed dump's repeat");
    }
}
