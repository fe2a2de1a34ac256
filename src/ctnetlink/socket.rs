//! The ctnetlink socket and its plain request/answer exchanges: open, send, receive, the
//! table's stats and batched creates. The dump's pipeline lives in `dump.rs`.

use std::io;

use netlink_packet_core::NetlinkBuffer;
use netlink_sys::{Socket, SocketAddr};
use rustix::net::sockopt;

use super::uapi::*;
use super::{Error, Malformed, decode, encode};
use crate::flow::Flow;
use crate::stats::{CpuStats, TableStats};

/// The `recv` buffer: a dump skb is at most 32 KiB (`netlink_dump` caps `max_recvmsg_len`).
const RECV_BUF: usize = 128 << 10;
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
    pub(super) sock: Socket,
    pub(super) seq: u32,
    pub(super) req: Vec<u8>,
    pub(super) rbuf: Vec<u8>,
    pub(super) flow: Flow,
}

/// A bound `NETLINK_NETFILTER` socket in the current network namespace, with the receive
/// buffer conntrack-tools uses and short error replies.
pub(crate) fn open_socket() -> Result<Socket, Error> {
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
/// Sends all of `bytes` (whole netlink messages) on `sock`.
pub(crate) fn send_all(sock: &Socket, bytes: &[u8], op: &'static str) -> Result<(), Error> {
    let mut sent = 0;
    while sent < bytes.len() {
        match sock.send(&bytes[sent..], 0).map_err(|source| Error::Io { op, source })? {
            // Not a netlink answer; without this arm a zero would repeat the send for ever.
            0 => return Err(Error::Io { op, source: io::ErrorKind::WriteZero.into() }),
            n => sent += n,
        }
    }
    Ok(())
}

/// Receives the next batch of messages into `rbuf`, again after a signal interrupted the wait.
pub(crate) fn recv_into(sock: &Socket, rbuf: &mut Vec<u8>, op: &'static str) -> Result<(), Error> {
    loop {
        rbuf.clear();
        match sock.recv(rbuf, 0) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(recv_error(op, e)),
        }
    }
}

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

    pub(super) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    pub(super) fn send_req(&mut self, op: &'static str) -> Result<(), Error> {
        send_all(&self.sock, &self.req, op)
    }

    pub(super) fn recv(&mut self, op: &'static str) -> Result<(), Error> {
        recv_into(&self.sock, &mut self.rbuf, op)
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
    pub(super) fn read_replies(
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
pub(crate) fn error_code(payload: &[u8]) -> i32 {
    payload.get(..4).map_or(0, |b| -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// SO_RCVBUFFORCE ignores `rmem_max` (needs CAP_NET_ADMIN); fall back to SO_RCVBUF.
pub(crate) fn set_rcvbuf(sock: &Socket, bytes: usize) {
    let bytes = bytes.min(i32::MAX as usize);
    if sockopt::set_socket_recv_buffer_size_force(sock, bytes).is_err() {
        let _ = sockopt::set_socket_recv_buffer_size(sock, bytes);
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

    /// The options now set through netlink-sys and rustix are really on the socket: short
    /// error replies (`NETLINK_CAP_ACK`) and the bounded wait (`SO_RCVTIMEO`).
    #[test]
    fn issue_11_8_the_socket_options_are_set() {
        let ct = Conntrack::open().unwrap();
        assert!(ct.sock.get_cap_ack().unwrap());
        let timeout = sockopt::socket_timeout(&ct.sock, sockopt::Timeout::Recv).unwrap();
        assert_eq!(timeout, Some(REPLY_TIMEOUT));
    }

    #[test]
    fn errno_of_ack_and_error() {
        assert_eq!(error_code(&0i32.to_ne_bytes()), 0);
        assert_eq!(error_code(&(-libc::ENOENT).to_ne_bytes()), libc::ENOENT);
        let e = Error::Kernel { op: "dump", errno: libc::EPERM };
        assert!(e.to_string().contains("CAP_NET_ADMIN"));
        // issue 11.6: one wording of the permission error, wherever EPERM comes from.
        assert_eq!(e.to_string(), format!("dump: {}", super::super::NEEDS_CAP_NET_ADMIN));
    }
}
