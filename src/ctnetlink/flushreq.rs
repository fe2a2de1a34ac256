//! The filtered flush as one fixed request: built once, sent first to a scratch namespace to
//! prove what it deletes, then sent unchanged to the real one (see `crate::flushproof`).
//!
//! The request carries a fixed sequence number, so the bytes that reach the real namespace are
//! exactly the bytes that were proven. Its dry-run dump is derived from those same bytes: only
//! the message type (GET instead of DELETE) and the flags (DUMP instead of ACK) differ, the
//! family, version and every attribute are the flush's own, whatever they are.

use netlink_packet_core::NetlinkBuffer;

use super::uapi::*;
use super::{DumpFilter, Error, Malformed, decode, encode};
use crate::flow::Flow;

/// The sequence number every flush request carries (replies are matched by it).
const FLUSH_SEQ: u32 = 0x6673_6c31;

/// One filtered-flush request (`IPCTNL_MSG_CT_DELETE` with `CTA_FILTER`, Linux 6.12+) and the
/// dump request with its very attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushRequest {
    flush: Vec<u8>,
    dump: Vec<u8>,
}

impl FlushRequest {
    /// The flush of exactly what a dump with `filter` returns; `None` unless `filter` carries
    /// an IPv4 `CTA_FILTER` address (a flush by mark, status or zone alone is never built).
    pub fn new(filter: &DumpFilter) -> Option<FlushRequest> {
        let mut flush = Vec::new();
        encode::flush(&mut flush, FLUSH_SEQ, filter).then(|| FlushRequest::with_dump(flush, None))
    }

    /// A request as given, for the kernel tests that must show a request the kernel misreads
    /// is caught (one without `CTA_FILTER`, or with attributes it ignores). Its dump is derived
    /// from it, or, with `dump`, given too: a kernel whose dump honours what its flush ignores.
    /// Only in builds with the `kernel-tests` feature: no program should send such bytes.
    #[cfg(feature = "kernel-tests")]
    pub fn from_raw(flush: Vec<u8>, dump: Option<Vec<u8>>) -> FlushRequest {
        FlushRequest::with_dump(flush, dump)
    }

    fn with_dump(flush: Vec<u8>, dump: Option<Vec<u8>>) -> FlushRequest {
        let dump = dump.unwrap_or_else(|| {
            let mut dump = flush.clone();
            if dump.len() >= NLMSG_HDRLEN {
                let kind = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
                dump[4..6].copy_from_slice(&kind.to_ne_bytes());
                dump[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
            }
            dump
        });
        FlushRequest { flush, dump }
    }

    /// The flush request's bytes, as sent.
    pub fn bytes(&self) -> &[u8] {
        &self.flush
    }

    /// The dump request's bytes: the flush's, with the type GET and the flag DUMP.
    pub fn dump_bytes(&self) -> &[u8] {
        &self.dump
    }
}

impl super::Conntrack {
    /// The dump with the flush request's own attributes (`req.dump_bytes()`), each returned
    /// flow handed to `each`. For small tables (a scratch namespace): the replies are read on
    /// this thread, without the dump pipeline or its resume dedupe.
    pub fn dump_as_flush(
        &mut self,
        req: &FlushRequest,
        mut each: impl FnMut(&Flow),
    ) -> Result<(), Error> {
        let op = "dump conntrack table (flush filter)";
        self.req.clear();
        self.req.extend_from_slice(&req.dump);
        self.send_req(op)?;
        let mut flow = Flow::default();
        let mut bad = None;
        self.read_replies(op, FLUSH_SEQ, true, |payload| {
            match decode::decode_flow(payload, &mut flow) {
                Ok(()) => each(&flow),
                Err(e) => bad = Some(e),
            }
        })?;
        match bad {
            Some(source) => Err(Error::Malformed { op, source }),
            None => Ok(()),
        }
    }

    /// The entry with `flow`'s original tuple and zone, as the kernel holds it (`conntrack
    /// -G`; a hash lookup, no walk of the table); `None` when there is none (ENOENT).
    pub fn get(&mut self, flow: &Flow) -> Result<Option<Flow>, Error> {
        let op = "get conntrack entry";
        let seq = self.next_seq();
        self.req.clear();
        encode::get(&mut self.req, seq, flow);
        self.send_req(op)?;
        let mut found = Flow::default();
        let mut got = None;
        let r = self.read_replies(op, seq, false, |payload| {
            got = Some(decode::decode_flow(payload, &mut found));
        });
        match (r, got) {
            (Err(Error::Kernel { errno: libc::ENOENT, .. }), _) => Ok(None),
            (Err(e), _) => Err(e),
            (Ok(()), Some(Ok(()))) => Ok(Some(found)),
            (Ok(()), Some(Err(source))) => Err(Error::Malformed { op, source }),
            (Ok(()), None) => Err(Error::Malformed { op, source: Malformed("no entry in reply") }),
        }
    }

    /// Sends the flush request's bytes unchanged and waits for the kernel's answer. On a
    /// kernel that ignores any of its attributes this empties the whole table: send it to a
    /// real namespace only after `crate::flushproof::prove` accepted these very bytes.
    pub fn send_flush(&mut self, req: &FlushRequest) -> Result<(), Error> {
        let op = "flush conntrack entries (proven filter)";
        let seq = NetlinkBuffer::new_checked(&req.flush[..]).map(|m| m.sequence_number());
        if seq.ok() != Some(FLUSH_SEQ) {
            return Err(Error::Malformed { op, source: Malformed("not a flush request") });
        }
        self.req.clear();
        self.req.extend_from_slice(&req.flush);
        self.send_req(op)?;
        self.read_replies(op, FLUSH_SEQ, false, |_| {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dump_differs_from_the_flush_only_in_type_and_flags() {
        let f = DumpFilter {
            orig_src_v4: Some("172.16.3.5".parse().unwrap()),
            mark: Some((42, u32::MAX)),
            zone: Some(7),
            status: Some((4, 4)),
            ..Default::default()
        };
        let req = FlushRequest::new(&f).unwrap();
        let (fl, du) = (req.bytes(), req.dump_bytes());
        assert_eq!(fl.len(), du.len());
        assert_eq!(fl[..4], du[..4], "length");
        assert_eq!(fl[8..], du[8..], "sequence, port, family, version, attributes");
        let fh = NetlinkBuffer::new_checked(fl).unwrap();
        let dh = NetlinkBuffer::new_checked(du).unwrap();
        assert_eq!(fh.message_type() & 0xff, IPCTNL_MSG_CT_DELETE);
        assert_eq!(dh.message_type() & 0xff, IPCTNL_MSG_CT_GET);
        assert_eq!(fh.flags(), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(dh.flags(), NLM_F_REQUEST | NLM_F_DUMP);
        // The derived dump is exactly the selection dump the evict path sends for `f`.
        let mut sel = Vec::new();
        encode::dump(&mut sel, FLUSH_SEQ, &f);
        assert_eq!(du, &sel[..]);
    }

    #[test]
    fn no_request_without_cta_filter() {
        let f = DumpFilter { mark: Some((1, u32::MAX)), ..Default::default() };
        assert_eq!(FlushRequest::new(&f), None);
    }
}
