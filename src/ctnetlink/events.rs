//! Conntrack events (`conntrack -E`): a tokio socket bound to the NEW, UPDATE and DESTROY
//! multicast groups, each message decoded into a [`Flow`] and an [`EventKind`], with the
//! netlink port of the process whose request caused it ([`requester`]).
//!
//! Events are per network namespace: the socket hears the namespace it was opened in. When the
//! receive buffer fills, the kernel drops events, counts them in `sk_drops` and fails the next
//! `recv` once with ENOBUFS (af_netlink.c `netlink_overrun`); [`Received::overrun`] reports it,
//! and the caller must resync from a dump. About 1.3 KiB of buffer is charged per queued event
//! (measured on 6.18), so a 240,000-entry flush needs ~300 MiB to pass without loss.

use std::io;

use netlink_packet_core::NetlinkBuffer;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};

use super::uapi::*;
use super::{Error, Malformed, decode, set_rcvbuf};
use crate::event::EventKind;
use crate::flow::Flow;

/// The kind of a ctnetlink message (ctnetlink_conntrack_event): DESTROY is sent as
/// `IPCTNL_MSG_CT_DELETE`, NEW as `IPCTNL_MSG_CT_NEW` with `NLM_F_CREATE|NLM_F_EXCL`, and
/// every other event as `IPCTNL_MSG_CT_NEW` without those flags.
fn kind_of(message_type: u16, flags: u16) -> Option<EventKind> {
    if message_type >> 8 != NFNL_SUBSYS_CTNETLINK {
        return None;
    }
    match message_type & 0xff {
        IPCTNL_MSG_CT_DELETE => Some(EventKind::Destroy),
        IPCTNL_MSG_CT_NEW if flags & (NLM_F_CREATE | NLM_F_EXCL) != 0 => Some(EventKind::New),
        IPCTNL_MSG_CT_NEW => Some(EventKind::Update),
        _ => None,
    }
}

/// The netlink port id of the process whose request caused the event in `msg` (netlink header
/// included), or `None` for the kernel's own events. ctnetlink sends the events a create,
/// update or delete causes with the requester's port as `nlmsg_pid` (`nf_conntrack_eventmask_
/// report(..., portid, report)`), and 0 for those of packets and timeouts: `conntrack -E` then
/// prints ` [USERSPACE] portid=N`.
pub fn requester(msg: &[u8]) -> Option<u32> {
    let m = NetlinkBuffer::new_checked(msg).ok()?;
    Some(m.port_number()).filter(|p| *p != 0)
}

/// The multicast group (`NFNLGRP_CONNTRACK_*`) that carries `kind`.
fn group_of(kind: EventKind) -> u32 {
    match kind {
        EventKind::New => NFNLGRP_CONNTRACK_NEW,
        EventKind::Update => NFNLGRP_CONNTRACK_UPDATE,
        EventKind::Destroy => NFNLGRP_CONNTRACK_DESTROY,
    }
}

/// A set of event kinds, as `conntrack -E -e NEW,DESTROY` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventMask(u8);

impl EventMask {
    /// NEW, UPDATE and DESTROY.
    pub const ALL: EventMask = EventMask(0b111);

    /// No kind.
    pub const NONE: EventMask = EventMask(0);

    /// This set plus `kind`.
    pub fn with(self, kind: EventKind) -> EventMask {
        EventMask(self.0 | 1 << (group_of(kind) - 1))
    }

    /// True when `kind` is in the set.
    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & 1 << (group_of(kind) - 1) != 0
    }

    /// True when the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The `bind(2)` group mask: group N is bit N-1.
    fn groups(self) -> u32 {
        u32::from(self.0)
    }
}

/// What one [`Subscription::recv`] call got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// Events handed to the callback.
    pub events: usize,
    /// The kernel dropped events since the last call (ENOBUFS): counts built from events are
    /// no longer exact until a fresh dump.
    pub overrun: bool,
    /// The socket was read empty: a caller that is not in a hurry can let events gather a
    /// moment before the next call (one wakeup then reads many).
    pub drained: bool,
}

/// Event datagrams read per [`Subscription::recv`] before the task yields.
const BATCH: usize = 256;
/// One event is far below 4 KiB; a datagram never carries more than one skb.
const DATAGRAM: usize = 64 << 10;
/// Datagrams per `recvmmsg`: one syscall drains a burst instead of one per event.
const VLEN: usize = 64;
/// Receive slot per datagram of a `recvmmsg`; an event is a few hundred bytes (a longer one
/// is reported as malformed, never cut silently).
const SLOT: usize = 8 << 10;

/// A ctnetlink event subscription in the current network namespace.
pub struct Subscription {
    sock: TokioSocket,
    buf: Vec<u8>,
    slots: Vec<u8>,
    lens: [usize; VLEN],
    flow: Flow,
}

impl Subscription {
    /// Opens a `NETLINK_NETFILTER` socket bound to the groups of `mask`, with a receive buffer of
    /// `rcvbuf` bytes (`SO_RCVBUFFORCE`, which ignores `net.core.rmem_max`; without
    /// `CAP_NET_ADMIN` the kernel caps it at `rmem_max`). Equivalent to `conntrack -E -e ...
    /// -b rcvbuf`, but sizing the subscribed socket (conntrack 1.4.7's `-b` sizes another one).
    /// Needs `CAP_NET_ADMIN` and a tokio runtime with I/O enabled.
    pub fn open(mask: EventMask, rcvbuf: usize) -> Result<Subscription, Error> {
        let op = "subscribe to conntrack events";
        let mut sock =
            TokioSocket::new(NETLINK_NETFILTER).map_err(|source| Error::Io { op, source })?;
        set_rcvbuf(sock.socket_ref(), rcvbuf);
        // Error replies (we send nothing, but keep the socket's manners the same).
        let _ = sock.socket_ref().set_cap_ack(true);
        sock.socket_mut()
            .bind(&SocketAddr::new(0, mask.groups()))
            .map_err(|source| Error::Io { op, source })?;
        Ok(Subscription {
            sock,
            buf: Vec::with_capacity(DATAGRAM),
            slots: vec![0; VLEN * SLOT],
            lens: [0; VLEN],
            flow: Flow::default(),
        })
    }

    /// The receive buffer the kernel granted, in bytes (it doubles the asked size for its
    /// bookkeeping, as `getsockopt(SO_RCVBUF)` reports).
    pub fn rcvbuf(&self) -> Option<usize> {
        self.sock.socket_ref().get_rx_buf_sz().ok()
    }

    /// Events the kernel dropped on this socket so far (`sk_drops`, the Drops column of
    /// `/proc/net/netlink`), when the kernel reports it (`SO_MEMINFO`, Linux 4.6+: the socket's
    /// memory counters as u32s, sk_drops at index `SK_MEMINFO_DROPS`; a netlink overrun raises
    /// it once per lost message, af_netlink.c `netlink_overrun`).
    pub fn drops(&self) -> Option<u64> {
        use std::os::fd::AsRawFd;
        let mut info = [0u32; 16];
        let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `info`, which lives for the call.
        let rc = unsafe {
            libc::getsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let have = len as usize / std::mem::size_of::<u32>();
        let drops = libc::SK_MEMINFO_DROPS as usize;
        (rc == 0 && have > drops).then(|| u64::from(info[drops]))
    }

    /// Waits for events and hands each to `each` with its [`requester`] (a batch of up to a few
    /// hundred datagrams per call, so the caller's other work interleaves). Cancel-safe:
    /// dropping the future loses no event that was not handed on.
    pub async fn recv(
        &mut self,
        mut each: impl FnMut(EventKind, &Flow, Option<u32>),
    ) -> Result<Received, Error> {
        let op = "receive conntrack events";
        let mut got = Received::default();
        self.buf.clear();
        match self.sock.recv(&mut self.buf).await {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                got.overrun = true;
                return Ok(got);
            }
            Err(source) => return Err(Error::Io { op, source }),
        }
        got.events += self.hand_on(op, &mut each)?;
        let mut datagrams = 1;
        while datagrams < BATCH {
            match self.recv_many() {
                Ok(n) => {
                    datagrams += n;
                    for i in 0..n {
                        let at = i * SLOT;
                        let datagram = &self.slots[at..at + self.lens[i]];
                        got.events += for_each_event(datagram, &mut self.flow, &mut each)
                            .map_err(|source| Error::Malformed { op, source })?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    got.drained = true;
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    got.overrun = true;
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    let source = Malformed("an event longer than the receive slot");
                    return Err(Error::Malformed { op, source });
                }
                Err(source) => return Err(Error::Io { op, source }),
            }
        }
        Ok(got)
    }

    /// Decodes the messages of the datagram in `buf` and hands each event on.
    fn hand_on(
        &mut self,
        op: &'static str,
        each: &mut impl FnMut(EventKind, &Flow, Option<u32>),
    ) -> Result<usize, Error> {
        for_each_event(&self.buf, &mut self.flow, each)
            .map_err(|source| Error::Malformed { op, source })
    }

    /// Reads up to `VLEN` waiting datagrams with one `recvmmsg` (non-blocking) into `slots`,
    /// their lengths into `lens`. WouldBlock when none waits; ENOBUFS after an overrun (the
    /// kernel reports a pending socket error before any queued datagram).
    fn recv_many(&mut self) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: zeroed iovec and mmsghdr are valid (null pointers, zero lengths).
        let mut iov: [libc::iovec; VLEN] = unsafe { std::mem::zeroed() };
        // SAFETY: as above: an all-zero mmsghdr is a valid value.
        let mut hdrs: [libc::mmsghdr; VLEN] = unsafe { std::mem::zeroed() };
        for (i, (v, h)) in iov.iter_mut().zip(hdrs.iter_mut()).enumerate() {
            v.iov_base = self.slots[i * SLOT..].as_mut_ptr().cast();
            v.iov_len = SLOT;
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at one iovec of SLOT bytes inside `slots`; `iov`,
        // `hdrs` and `slots` outlive the call, and nothing else touches them meanwhile.
        let n = unsafe {
            libc::recvmmsg(
                self.sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                VLEN as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (len, h) in self.lens.iter_mut().zip(&hdrs[..n]) {
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
            }
            *len = h.msg_len as usize;
        }
        Ok(n)
    }

    /// Waits for the next datagram and hands its raw bytes on (for recording fixtures; decode
    /// each message with [`decode_event`]).
    pub async fn recv_raw(&mut self) -> Result<&[u8], Error> {
        let op = "receive conntrack events";
        self.buf.clear();
        match self.sock.recv(&mut self.buf).await {
            Ok(()) => Ok(&self.buf),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Err(Error::Overrun { op }),
            Err(source) => Err(Error::Io { op, source }),
        }
    }
}

/// Walks the netlink messages of one received datagram, decodes each conntrack event and
/// hands it on; returns how many.
fn for_each_event(
    datagram: &[u8],
    flow: &mut Flow,
    each: &mut impl FnMut(EventKind, &Flow, Option<u32>),
) -> Result<usize, Malformed> {
    let mut n = 0;
    for msg in super::messages(datagram) {
        let msg = msg?;
        if let Some(kind) = kind_of(msg.message_type(), msg.flags()) {
            decode::decode_flow(msg.payload(), flow)?;
            each(kind, flow, Some(msg.port_number()).filter(|p| *p != 0));
            n += 1;
        }
    }
    Ok(n)
}

/// Decodes one whole event message (netlink header included) into `flow` and says which event
/// it is; `None` for a message that is not a conntrack event.
pub fn decode_event(msg: &[u8], flow: &mut Flow) -> Result<Option<EventKind>, Malformed> {
    let m = NetlinkBuffer::new_checked(msg).map_err(|_| Malformed("bad netlink header"))?;
    match kind_of(m.message_type(), m.flags()) {
        Some(kind) => decode::decode_flow(m.payload(), flow).map(|()| Some(kind)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_type_and_flags() {
        let t = |m: u16| (NFNL_SUBSYS_CTNETLINK << 8) | m;
        let create = NLM_F_CREATE | NLM_F_EXCL;
        assert_eq!(kind_of(t(IPCTNL_MSG_CT_NEW), create), Some(EventKind::New));
        assert_eq!(kind_of(t(IPCTNL_MSG_CT_NEW), 0), Some(EventKind::Update));
        assert_eq!(kind_of(t(IPCTNL_MSG_CT_DELETE), 0), Some(EventKind::Destroy));
        // Expectation events (subsystem 2) and stats answers are not flow events.
        assert_eq!(kind_of((2 << 8) | IPCTNL_MSG_CT_NEW, create), None);
        assert_eq!(kind_of(t(IPCTNL_MSG_CT_GET_STATS), 0), None);
    }

    #[test]
    fn masks_are_group_bits() {
        let m = EventMask::NONE.with(EventKind::New).with(EventKind::Destroy);
        assert_eq!(m.groups(), 0b101);
        assert!(m.contains(EventKind::Destroy) && !m.contains(EventKind::Update));
        assert_eq!(EventMask::ALL.groups(), 0b111);
        assert!(EventMask::NONE.is_empty());
        assert_eq!(EventKind::parse("DESTROY"), Some(EventKind::Destroy));
    }
}
