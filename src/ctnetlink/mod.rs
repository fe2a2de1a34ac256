//! The only module that speaks netlink: a ctnetlink socket that dumps, creates, deletes and
//! reads stats.
//!
//! Built on netlink-sys (the socket) and netlink-packet-core / netlink-packet-netfilter (header
//! codecs); it adds what netlink-packet-netfilter 0.4 lacks: ids, zones, counters, timestamps,
//! labels, ICMP tuples, SCTP/DCCP state, mark/status masks, `CTA_FILTER` and the stats
//! messages. Callers see [`Flow`]s, never attributes.

mod decode;
mod delete;
mod encode;
mod events;
mod flushreq;
mod uapi;

use std::io;
use std::ops::ControlFlow;
use std::sync::mpsc;

use netlink_packet_core::NetlinkBuffer;
use netlink_sys::{Socket, SocketAddr};
use rustc_hash::FxHashSet;
use rustix::net::sockopt;

pub use decode::Malformed;
pub use delete::{DeleteTally, Deleter, FlowKey, Marked};
pub use encode::DumpFilter;
pub use events::{EventMask, Received, Subscription, decode_event};
// Domain types the socket returns, re-exported for callers that came here first.
pub use crate::event::EventKind;
pub use crate::stats::{CpuStats, TableStats};
pub use flushreq::FlushRequest;
use uapi::*;

use crate::flow::{EntryId, Flow};

/// What went wrong talking to the kernel, with the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket call failed.
    #[error("{op}: {}", describe(.source))]
    Io {
        /// The operation, e.g. "dump conntrack table".
        op: &'static str,
        /// The system error.
        source: io::Error,
    },
    /// The kernel answered a request with an error.
    #[error("{op}: {}", describe(&io::Error::from_raw_os_error(*.errno)))]
    Kernel {
        /// The operation.
        op: &'static str,
        /// The positive errno.
        errno: i32,
    },
    /// Our receive buffer overflowed and the kernel dropped messages (ENOBUFS).
    #[error("{op}: receive buffer overrun (ENOBUFS), messages were lost")]
    Overrun {
        /// The operation.
        op: &'static str,
    },
    /// The kernel did not answer within [`REPLY_TIMEOUT`]: a request or its acknowledgement
    /// never came (the kernel drops a request it cannot parse without a word).
    #[error("{op}: no answer from the kernel within {} s; nothing more was sent", .after.as_secs())]
    Timeout {
        /// The operation.
        op: &'static str,
        /// How long we waited.
        after: std::time::Duration,
    },
    /// The kernel sent bytes we could not decode.
    #[error("{op}: {source}")]
    Malformed {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        source: Malformed,
    },
}

impl Error {
    /// The errno behind the error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            Error::Kernel { errno, .. } => Some(*errno),
            Error::Overrun { .. } => Some(libc::ENOBUFS),
            Error::Timeout { .. } => Some(libc::ETIMEDOUT),
            Error::Malformed { .. } => None,
        }
    }
}

/// Turns errnos into advice an operator can act on.
fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "permission denied: ctguard needs CAP_NET_ADMIN (run it as root)".into()
        }
        Some(libc::EPROTONOSUPPORT) | Some(libc::EOPNOTSUPP) | Some(libc::EAFNOSUPPORT) => {
            format!("{e}: the kernel has no ctnetlink here (load the nf_conntrack_netlink module)")
        }
        _ => e.to_string(),
    }
}

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

/// The `recv` buffer: a dump skb is at most 32 KiB (`netlink_dump` caps `max_recvmsg_len`).
const RECV_BUF: usize = 128 << 10;
/// One hand-off between the dump threads: several skbs received back to back. Waking the
/// decoding thread costs an IPI, dear on a VM; once per skb it added ~20 % to a dump.
const DUMP_BATCH: usize = 256 << 10;
/// Room a `recv` needs at the end of a batch: one whole dump skb.
const DUMP_SKB_MAX: usize = 32 << 10;
/// Receive buffers in flight between the receiving and the decoding thread.
const PIPELINE: usize = 4;
/// Kernel receive buffer, as conntrack-tools and the raw floor probe use.
const SOCK_RCVBUF: usize = 8 << 20;
/// Creates per send: one ACK each comes back, so the batch bounds what queues for us.
const CREATE_BATCH: usize = 512;
/// The longest wait for a kernel reply (`SO_RCVTIMEO`). The kernel handles a request inside
/// our `sendmsg` and builds each dump chunk inside our `recv`, so a reply is normally queued
/// before we wait at all; this only bounds the wait for one that never comes.
pub const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A ctnetlink socket in the current network namespace.
pub struct Conntrack {
    sock: Socket,
    seq: u32,
    req: Vec<u8>,
    rbuf: Vec<u8>,
    flow: Flow,
}

/// A bound `NETLINK_NETFILTER` socket in the current network namespace, with the receive
/// buffer conntrack-tools uses and short error replies.
fn open_socket() -> Result<Socket, Error> {
    let op = "open ctnetlink socket";
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|source| Error::Io { op, source })?;
    sock.bind(&SocketAddr::new(0, 0)).map_err(|source| Error::Io { op, source })?;
    set_rcvbuf(&sock, SOCK_RCVBUF);
    // Error replies then carry only the failed request's header, not the whole request
    // (NETLINK_CAP_ACK, Linux 4.3; an older kernel just sends the whole request back).
    let _ = sock.set_cap_ack(true);
    set_recv_timeout(&sock, REPLY_TIMEOUT).map_err(|source| Error::Io { op, source })?;
    Ok(sock)
}

/// Bounds every `recv` on `sock` (`SO_RCVTIMEO`): it then fails with EAGAIN, see [`recv_error`].
fn set_recv_timeout(sock: &Socket, after: std::time::Duration) -> io::Result<()> {
    sockopt::set_socket_timeout(sock, sockopt::Timeout::Recv, Some(after)).map_err(io::Error::from)
}

/// The error of a failed `recv` on a socket opened by [`open_socket`]: ENOBUFS is an overrun,
/// EAGAIN the end of the [`REPLY_TIMEOUT`] wait.
pub(crate) fn recv_error(op: &'static str, e: io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOBUFS) => Error::Overrun { op },
        Some(libc::EAGAIN) => Error::Timeout { op, after: REPLY_TIMEOUT },
        _ => Error::Io { op, source: e },
    }
}

impl Conntrack {
    /// Opens a `NETLINK_NETFILTER` socket (needs `CAP_NET_ADMIN` for everything but reads).
    pub fn open() -> Result<Conntrack, Error> {
        Ok(Conntrack {
            sock: open_socket()?,
            seq: 1,
            req: Vec::new(),
            rbuf: Vec::with_capacity(RECV_BUF),
            flow: Flow::default(),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send_req(&mut self, op: &'static str) -> Result<(), Error> {
        let mut sent = 0;
        while sent < self.req.len() {
            sent +=
                self.sock.send(&self.req[sent..], 0).map_err(|source| Error::Io { op, source })?;
        }
        Ok(())
    }

    fn recv(&mut self, op: &'static str) -> Result<(), Error> {
        self.rbuf.clear();
        loop {
            match self.sock.recv(&mut self.rbuf, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(recv_error(op, e)),
            }
        }
    }

    /// Streams the table to `each`, one decoded flow at a time (`conntrack -L`; the filter's
    /// kernel-side parts need the kernels named on [`DumpFilter`]). Memory stays bounded: the
    /// flow is decoded in place and only a small window of ids is kept to drop the entries a
    /// dump resume may repeat. Returning `Break` stops early.
    pub fn dump(
        &mut self,
        filter: &DumpFilter,
        mut each: impl FnMut(&Flow) -> ControlFlow<()>,
    ) -> Result<DumpSummary, Error> {
        let op = "dump conntrack table";
        let mut flow = std::mem::take(&mut self.flow);
        // A resume whose last entry vanished re-walks that hash bucket from its head, so a
        // repeat can only be an entry of the previous one or two receive chunks (a chain is far
        // shorter than the ~130 entries of a 32 KiB chunk).
        let mut window = IdWindow::default();
        let mut duplicates = 0;
        let r = self.stream(op, filter, |item| match item {
            Item::Chunk => {
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
                Ok(each(&flow).map_continue(|()| true))
            }
        });
        self.flow = flow;
        r.map(|s| DumpSummary { duplicates, ..s })
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
        let (full_tx, full_rx) = mpsc::sync_channel::<Result<Vec<u8>, Error>>(PIPELINE);
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
                let buf = match chunk {
                    Ok(buf) => buf,
                    Err(e) => {
                        outcome.get_or_insert(Err(e));
                        continue;
                    }
                };
                if outcome.is_none() {
                    match process_chunk(&buf, seq, op, &mut summary, &mut stopped, &mut each) {
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

    /// Count and max (`conntrack -C`; O(1), no dump).
    pub fn table_stats(&mut self) -> Result<TableStats, Error> {
        let op = "read conntrack stats";
        let seq = self.next_seq();
        self.req.clear();
        encode::table_stats(&mut self.req, seq);
        self.send_req(op)?;
        let mut out = None;
        self.read_replies(op, seq, false, |payload| {
            out = Some(decode::decode_table_stats(payload));
        })?;
        match out {
            Some(r) => r.map_err(|source| Error::Malformed { op, source }),
            None => Err(Error::Malformed { op, source: Malformed("no stats in reply") }),
        }
    }

    /// Per-CPU counters (`conntrack -S`), one entry per possible CPU.
    pub fn cpu_stats(&mut self) -> Result<Vec<CpuStats>, Error> {
        let op = "read per-CPU conntrack stats";
        let seq = self.next_seq();
        self.req.clear();
        encode::cpu_stats(&mut self.req, seq);
        self.send_req(op)?;
        let mut out = Vec::new();
        let mut bad = None;
        self.read_replies(op, seq, true, |payload| match decode::decode_cpu_stats(payload) {
            Ok(s) => out.push(s),
            Err(e) => bad = Some(e),
        })?;
        match bad {
            Some(source) => Err(Error::Malformed { op, source }),
            None => Ok(out),
        }
    }

    /// Reads the replies to request `seq` until DONE (a dump), the single answer, or an error.
    fn read_replies(
        &mut self,
        op: &'static str,
        seq: u32,
        dump: bool,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), Error> {
        loop {
            self.recv(op)?;
            let mut done = false;
            for msg in messages(&self.rbuf) {
                let msg = msg.map_err(|source| Error::Malformed { op, source })?;
                if msg.sequence_number() != seq {
                    continue;
                }
                match msg.message_type() {
                    NLMSG_DONE => done = true,
                    NLMSG_ERROR => {
                        let errno = error_code(msg.payload());
                        if errno != 0 {
                            return Err(Error::Kernel { op, errno });
                        }
                        done = true;
                    }
                    _ => {
                        each(msg.payload());
                        // GET_STATS answers with one message flagged NLM_F_MULTI and no DONE
                        // after it (ctnetlink_stat_ct_fill_info), so only a dump waits for DONE.
                        if !dump {
                            done = true;
                        }
                    }
                }
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Creates flows (`conntrack -I`), many requests per send, each acknowledged. Calls
    /// `on_error(index, errno)` for every flow the kernel refused (EEXIST for one already
    /// there, ENOMEM for a full table); the others were created.
    pub fn create(
        &mut self,
        flows: &[Flow],
        mut on_error: impl FnMut(usize, i32),
    ) -> Result<(), Error> {
        let op = "create conntrack entries";
        for (batch_no, batch) in flows.chunks(CREATE_BATCH).enumerate() {
            self.req.clear();
            let first = self.seq.wrapping_add(1);
            for flow in batch {
                let seq = self.next_seq();
                encode::create(&mut self.req, seq, flow);
            }
            self.send_req(op)?;
            let mut pending = batch.len();
            while pending > 0 {
                self.recv(op)?;
                for msg in messages(&self.rbuf) {
                    let msg = msg.map_err(|source| Error::Malformed { op, source })?;
                    let idx = msg.sequence_number().wrapping_sub(first) as usize;
                    if msg.message_type() != NLMSG_ERROR || idx >= batch.len() {
                        continue;
                    }
                    pending -= 1;
                    let errno = error_code(msg.payload());
                    // Without CAP_NET_ADMIN, nfnetlink_rcv answers the whole send with one
                    // EPERM (carrying the first request's sequence number) and runs none of it:
                    // no other answer is coming.
                    if errno == libc::EPERM {
                        return Err(Error::Kernel { op, errno });
                    }
                    if errno != 0 {
                        on_error(batch_no * CREATE_BATCH + idx, errno);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Receives a dump's chunks into recycled buffers until the chunk holding its end.
fn receive_dump(
    sock: &Socket,
    op: &'static str,
    seq: u32,
    empty: &mpsc::Receiver<Vec<u8>>,
    full: &mpsc::SyncSender<Result<Vec<u8>, Error>>,
) {
    loop {
        let mut buf = empty.try_recv().unwrap_or_else(|_| Vec::with_capacity(DUMP_BATCH));
        buf.clear();
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
                    let _ = full.send(Ok(buf));
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
        let _ = full.send(Ok(buf));
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
    buf: &[u8],
    seq: u32,
    op: &'static str,
    summary: &mut DumpSummary,
    stopped: &mut bool,
    each: &mut impl FnMut(Item<'_>) -> Result<ControlFlow<(), bool>, Error>,
) -> Result<bool, Error> {
    // A chunk start only moves the dedupe window; it counts nothing.
    let _ = each(Item::Chunk)?;
    for msg in messages(buf) {
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

/// What a dump stream hands on: the start of a receive chunk, or one entry message.
enum Item<'a> {
    Chunk,
    Message(&'a [u8]),
}

/// Decodes one whole ctnetlink conntrack message (netlink header included) into `flow`, as
/// [`Conntrack::dump`] does; for messages recorded with [`Conntrack::dump_raw`].
pub fn decode_message(msg: &[u8], flow: &mut Flow) -> Result<(), Malformed> {
    let body = msg.get(NLMSG_HDRLEN..).ok_or(Malformed("shorter than a netlink header"))?;
    decode::decode_flow(body, flow)
}

/// The whole netlink messages of a receive buffer, in order, each exactly its own bytes. A
/// header that does not fit ends the walk with an error; trailing bytes shorter than a header
/// end it quietly.
pub(crate) fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { buf }
}

pub(crate) struct Messages<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<NetlinkBuffer<&'a [u8]>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let Ok(len) = NetlinkBuffer::new_checked(self.buf).map(|m| m.length() as usize) else {
            self.buf = &[];
            return Some(Err(Malformed("bad netlink header")));
        };
        let msg = NetlinkBuffer::new(&self.buf[..len]);
        self.buf = self.buf.get((len + 3) & !3..).unwrap_or(&[]);
        Some(Ok(msg))
    }
}

/// The (positive) errno of an NLMSG_ERROR or NLMSG_DONE payload; 0 for an ACK.
fn error_code(payload: &[u8]) -> i32 {
    payload.get(..4).map_or(0, |b| -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// SO_RCVBUFFORCE ignores `rmem_max` (needs CAP_NET_ADMIN); fall back to SO_RCVBUF.
fn set_rcvbuf(sock: &Socket, bytes: usize) {
    let bytes = bytes.min(i32::MAX as usize);
    if sockopt::set_socket_recv_buffer_size_force(sock, bytes).is_err() {
        let _ = sockopt::set_socket_recv_buffer_size(sock, bytes);
    }
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
    fn messages_are_walked_whole_and_aligned() {
        // A 17-byte message padded to 20, a 16-byte one, then 3 stray bytes.
        let mut buf = vec![0u8; 39];
        buf[0] = 17;
        buf[8] = 1; // sequence number 1
        buf[20] = 16;
        buf[28] = 2;
        let walked: Vec<(u32, usize)> = messages(&buf)
            .map(|m| m.map(|m| (m.sequence_number(), m.into_inner().len())))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(walked, [(1, 17), (2, 16)]);
        // A length past the end is an error, and the walk stops there.
        buf[20] = 64;
        let walked: Vec<_> = messages(&buf).map(|m| m.is_ok()).collect();
        assert_eq!(walked, [true, false]);
    }

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

    /// A request the kernel never answers (it drops one it cannot parse without a word) ends
    /// at the receive timeout, with the operation named, instead of blocking forever.
    #[test]
    fn issue_10_3_a_missing_answer_ends_with_a_timeout_naming_the_operation() {
        // Nothing is sent: the socket only waits for an answer that cannot come.
        let mut ct = Conntrack::open().unwrap();
        set_recv_timeout(&ct.sock, std::time::Duration::from_millis(100)).unwrap();
        let started = std::time::Instant::now();
        let e = ct.read_replies("read conntrack stats", 7, false, |_| {}).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(matches!(e, Error::Timeout { op: "read conntrack stats", .. }), "{e:?}");
        assert!(
            e.to_string().starts_with("read conntrack stats: no answer from the kernel within")
        );
        assert_eq!(e.errno(), Some(libc::ETIMEDOUT));
    }

    #[test]
    fn errno_of_ack_and_error() {
        assert_eq!(error_code(&0i32.to_ne_bytes()), 0);
        assert_eq!(error_code(&(-libc::ENOENT).to_ne_bytes()), libc::ENOENT);
        let e = Error::Kernel { op: "dump", errno: libc::EPERM };
        assert!(e.to_string().contains("CAP_NET_ADMIN"));
    }
}
