//! What went wrong talking to the kernel: the operation, and the errno turned into advice.

use std::io;

use super::Malformed;

/// What went wrong talking to the kernel, with the operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The kernel did not answer within [`REPLY_TIMEOUT`](super::REPLY_TIMEOUT): a request or its acknowledgement
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

/// What EPERM (or EACCES) from a conntrack request means: it needs `CAP_NET_ADMIN`. The one
/// wording of it, for the library's errors and the binary's per-flow ones.
pub const NEEDS_CAP_NET_ADMIN: &str =
    "permission denied: ctguard needs CAP_NET_ADMIN (run it as root)";

/// Turns errnos into advice an operator can act on.
fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => NEEDS_CAP_NET_ADMIN.into(),
        Some(libc::EPROTONOSUPPORT) | Some(libc::EOPNOTSUPP) | Some(libc::EAFNOSUPPORT) => {
            format!("{e}: the kernel has no ctnetlink here (load the nf_conntrack_netlink module)")
        }
        _ => e.to_string(),
    }
}
