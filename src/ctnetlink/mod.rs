//! The only module that speaks netlink: a ctnetlink socket that dumps, creates, deletes and
//! reads stats.
//!
//! Built on netlink-sys (the socket) and netlink-packet-core / netlink-packet-netfilter (header
//! codecs); it adds what netlink-packet-netfilter 0.4 lacks: ids, zones, counters, timestamps,
//! labels, ICMP tuples, SCTP/DCCP state, mark/status masks, `CTA_FILTER` and the stats
//! messages. Callers see [`Flow`](crate::Flow)s, never attributes.
//!
//! `socket` opens and talks (requests with one answer), `dump` streams the table, `delete`
//! and `flushreq` remove entries, `events` listens, `expect` lists and deletes expectations; `decode` and `encode` are the two
//! directions of the wire format, `uapi` its numbers, `error` what can go wrong.

mod decode;
mod delete;
mod dump;
mod encode;
mod error;
mod events;
mod expect;
mod flushreq;
mod socket;
mod uapi;

pub use decode::Malformed;
pub use delete::{Act, Change, DeleteProgress, DeleteTally, Deleter, FlowKey, Marked};
pub use dump::{DUMP_ATTEMPTS, DumpSummary, Dumped, decode_message};

pub use error::{Error, NEEDS_CAP_NET_ADMIN};
pub use events::{EventMask, Received, Subscription, decode_event, requester};
pub use expect::decode_expectation;
pub use flushreq::FlushRequest;
pub use socket::{Conntrack, REPLY_TIMEOUT};
pub(crate) use socket::{
    error_code, messages, open_socket, recv_error, recv_into, send_all, set_rcvbuf,
};

// Domain types the socket returns, re-exported for callers that came here first.
pub use crate::event::EventKind;
pub use crate::select::DumpFilter;
pub use crate::stats::{CpuStats, TableStats};
