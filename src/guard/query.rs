//! The guard's query socket, what `top --live` and `count --live` ask: a unix stream socket
//! (root only, mode 0600) answering one JSON line from the latest [`Seen`] per connection, so
//! a live count costs milliseconds and never a dump.
//!
//! The wire, one line each way, then the guard closes:
//!
//! ```text
//! → {"version":1,"query":"counts"}
//! ← {"version":1,"guests":["web01"],"rows":[{"guest":0,"states":{"ESTABLISHED":240000}},
//!    {"guest":null,"states":{"NON_TCP":12}}],"table":{"count":240012,"max":262144,
//!    "fill_percent":91.6,"buckets":65536},"synced":true,"at_unix_ms":1700000000000}
//! ← {"version":1,"error":"..."}                      (a request it cannot answer)
//! ```
//!
//! `version` lets the wire grow: a guard refuses a version it does not speak, and fields it
//! does not know, with an error line rather than a guess. Every read and write on both sides is
//! bounded in size and time: a client that sends nothing is cut off and never holds up the
//! next one.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::{Board, Seen};
use crate::guests::GuestId;
use crate::stats::Fill;
use crate::tally::{COLUMNS, Row, column_name};

/// Where the guard listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/ctguard/guard.sock";
/// The wire version this guard speaks.
pub const VERSION: u32 = 1;
/// The longest request line the guard reads.
pub const MAX_REQUEST: usize = 4096;
/// The longest answer a client reads (a few hundred guests take a few KiB).
pub const MAX_ANSWER: usize = 16 << 20;
/// How long the guard waits for a request line, and for its answer to be taken.
pub const SERVER_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections answered at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 16;

/// A request: one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The wire version ([`VERSION`]).
    pub version: u32,
    /// What is asked.
    pub query: Query,
}

/// What can be asked.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Query {
    /// The live counts per guest and state, and the table's fill.
    Counts,
}

/// The guard's answer to [`Query::Counts`], checked: every guest a row names exists, every
/// state is a known column.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The guests' names, by [`GuestId`].
    pub guests: Vec<String>,
    /// Live flows per guest (`None`: no guest's), by state column.
    pub rows: Vec<(Option<GuestId>, Row)>,
    /// The table's count, max and buckets at the snapshot.
    pub table: Option<Fill>,
    /// The guard's counts agreed with the kernel's at the snapshot.
    pub synced: bool,
    /// When the snapshot was taken, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRow {
    guest: Option<GuestId>,
    states: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireAnswer {
    version: u32,
    guests: Vec<String>,
    rows: Vec<WireRow>,
    table: Option<Fill>,
    synced: bool,
    at_unix_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireError {
    version: u32,
    error: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Reply {
    Answer(WireAnswer),
    Error(WireError),
}

impl Answer {
    /// The answer a snapshot gives; `buckets` is the table's hash size, when known.
    pub fn from_seen(seen: &Seen, buckets: Option<u64>) -> Answer {
        Answer {
            guests: seen.guests.clone(),
            rows: seen.rows.clone(),
            table: seen.stats.map(|s| Fill::new(s, buckets)),
            synced: seen.synced,
            at_unix_ms: seen.at_unix_ms,
        }
    }

    fn to_wire(&self) -> WireAnswer {
        let rows = self
            .rows
            .iter()
            .map(|(guest, row)| WireRow {
                guest: *guest,
                states: (0..COLUMNS)
                    .filter(|c| row.by_state[*c] > 0)
                    .map(|c| (column_name(c).to_string(), row.by_state[c]))
                    .collect(),
            })
            .collect();
        WireAnswer {
            version: VERSION,
            guests: self.guests.clone(),
            rows,
            table: self.table.clone(),
            synced: self.synced,
            at_unix_ms: self.at_unix_ms,
        }
    }

    fn from_wire(w: WireAnswer) -> Result<Answer, String> {
        if w.version != VERSION {
            return Err(format!("wire version {} (this ctguard speaks {VERSION})", w.version));
        }
        let mut rows = Vec::with_capacity(w.rows.len());
        for r in w.rows {
            if let Some(g) = r.guest.filter(|g| *g as usize >= w.guests.len()) {
                return Err(format!("a row names guest {g} of {}", w.guests.len()));
            }
            let mut row = Row::default();
            for (name, n) in r.states {
                let col = (0..COLUMNS)
                    .find(|c| column_name(*c) == name)
                    .ok_or_else(|| format!("unknown state column '{name}'"))?;
                row.by_state[col] = row.by_state[col].saturating_add(n);
                row.total = row.total.saturating_add(n);
            }
            rows.push((r.guest, row));
        }
        Ok(Answer {
            guests: w.guests,
            rows,
            table: w.table,
            synced: w.synced,
            at_unix_ms: w.at_unix_ms,
        })
    }
}

/// What the guard answers a request line with: one JSON line.
fn answer_line(line: &[u8], seen: Option<&Seen>) -> String {
    let error = |error: String| WireError { version: VERSION, error };
    let reply = match serde_json::from_slice::<Request>(line) {
        Err(e) => Err(error(format!("bad request: {e}"))),
        Ok(r) if r.version != VERSION => {
            Err(error(format!("unsupported version {} (this guard speaks {VERSION})", r.version)))
        }
        Ok(Request { query: Query::Counts, .. }) => match seen {
            None => Err(error(
                "the guard has not counted the table yet (it is seeding); ask again in a moment"
                    .into(),
            )),
            Some(seen) => {
                let buckets = crate::sysctl::read("nf_conntrack_buckets");
                Ok(Answer::from_seen(seen, buckets).to_wire())
            }
        },
    };
    let mut out = match reply {
        Ok(a) => serde_json::to_string(&a),
        Err(e) => serde_json::to_string(&e),
    }
    .unwrap_or_else(|_| format!("{{\"version\":{VERSION},\"error\":\"internal\"}}"));
    out.push('\n');
    out
}

/// The query socket cannot be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The socket's directory is missing, or others could replace what is in it.
    #[error("query socket {}: {source}", .path.display())]
    Untrusted {
        /// The socket path.
        path: PathBuf,
        /// Why the directory is not trusted.
        source: crate::trusted_dir::Untrusted,
    },
    /// Something that is not a socket (a symlink, a file) has the socket's name: left alone.
    #[error("query socket {}: a {kind} is in the way; not following or removing it", .path.display())]
    InTheWay {
        /// The socket path.
        path: PathBuf,
        /// What is there.
        kind: &'static str,
    },
    /// A socket of another user has the name: left alone.
    #[error("query socket {}: owned by uid {uid}, not by us; not removing it", .path.display())]
    Foreign {
        /// The socket path.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Another process answers on it (a second guard?).
    #[error("query socket {}: another process answers on it (is a guard already running?)", .path.display())]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The kernel refused.
    #[error("query socket {}: {source}", .path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// A bound, listening query socket, its file ours to remove.
#[derive(Debug)]
pub struct QuerySocket {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file we made: removed at the end only if still there.
    id: (u64, u64),
}

impl QuerySocket {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_file() {
        "regular file"
    } else if ft.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

/// Binds the query socket at `path`, mode 0600. Its directory must exist and be trusted
/// ([`crate::trusted_dir`]): no other user can then swap what is there between our look and
/// our act. A socket left by an earlier run (ours, no one answering) is replaced; anything
/// else at the path (a symlink, a file, someone else's socket) is refused and left untouched.
pub fn bind(path: &Path) -> Result<QuerySocket, BindError> {
    let io_err = |source| BindError::Io { path: path.to_path_buf(), source };
    let uid = rustix::process::geteuid().as_raw();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    crate::trusted_dir::check(dir, uid)
        .map_err(|source| BindError::Untrusted { path: path.to_path_buf(), source })?;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
        Ok(m) if !m.file_type().is_socket() => {
            return Err(BindError::InTheWay {
                path: path.to_path_buf(),
                kind: kind_of(m.file_type()),
            });
        }
        Ok(m) if m.uid() != uid => {
            return Err(BindError::Foreign { path: path.to_path_buf(), uid: m.uid() });
        }
        Ok(_) => {
            if UnixStream::connect(path).is_ok() {
                return Err(BindError::InUse { path: path.to_path_buf() });
            }
            std::fs::remove_file(path).map_err(io_err)?;
        }
    }
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let to_io = |e: rustix::io::Errno| io_err(io::Error::from(e));
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(to_io)?;
    let addr = SocketAddrUnix::new(path).map_err(to_io)?;
    rustix::net::bind(&fd, &addr).map_err(to_io)?;
    // bind() made the file with the umask's mode (0755 under 022, 0777 under 0): tightened to
    // 0600 *before* listen(), because until a socket listens every connect() to it fails with
    // ECONNREFUSED. No client can get in through the wider mode, and no process-wide umask
    // change (which would race with the guard's other threads creating files) is needed.
    let made = std::fs::symlink_metadata(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(io_err)?;
    rustix::net::listen(&fd, 64).map_err(to_io)?;
    let listener = std::os::unix::net::UnixListener::from(fd);
    Ok(QuerySocket { listener, path: path.to_path_buf(), id: (made.dev(), made.ino()) })
}

/// Answers queries from the board's latest snapshot until `shutdown` resolves, then removes
/// the socket file (if it is still the one [`bind`] made). Needs a tokio runtime with IO and
/// time (the guard's current-thread runtime).
pub async fn serve(
    socket: QuerySocket,
    board: Arc<Board>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let QuerySocket { listener, path, id } = socket;
    let result = run(listener, board, shutdown).await;
    if std::fs::symlink_metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == id) {
        let _ = std::fs::remove_file(&path);
    }
    result
}

async fn run(
    listener: std::os::unix::net::UnixListener,
    board: Arc<Board>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let listener = tokio::net::UnixListener::from_std(listener)?;
    super::serve::each(listener, MAX_CONNECTIONS, shutdown, move |stream| {
        let board = Arc::clone(&board);
        async move {
            let _ = answer(stream, &board).await;
        }
    })
    .await
}

async fn answer(stream: tokio::net::UnixStream, board: &Board) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::with_capacity(128);
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    let got = tokio::time::timeout(SERVER_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    let reply = match got {
        // Nothing in time: cut off without a word.
        Err(_) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) if line.len() > MAX_REQUEST => {
            format!(
                "{{\"version\":{VERSION},\"error\":\"request longer than {MAX_REQUEST} bytes\"}}\n"
            )
        }
        Ok(Ok(_)) => answer_line(line.trim_ascii_end(), board.latest().as_deref()),
    };
    let _ = tokio::time::timeout(SERVER_TIMEOUT, async {
        write.write_all(reply.as_bytes()).await?;
        write.shutdown().await
    })
    .await;
    Ok(())
}

/// Asking the guard failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// No socket there, or no one listening on it.
    #[error("no guard answers on {}: is `ctguard guard` running?", .path.display())]
    NoGuard {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket is root's (mode 0600).
    #[error("{}: permission denied (the guard's socket is root's only: run as root)", .path.display())]
    PermissionDenied {
        /// The socket path.
        path: PathBuf,
    },
    /// The guard did not answer in time.
    #[error("the guard on {} did not answer within {timeout:?}", .path.display())]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// The time allowed.
        timeout: Duration,
    },
    /// The guard answered with an error.
    #[error("the guard on {}: {reason}", .path.display())]
    Refused {
        /// The socket path.
        path: PathBuf,
        /// What it said.
        reason: String,
    },
    /// The answer is not one this ctguard understands.
    #[error("the guard on {} gave a bad answer: {reason}", .path.display())]
    BadAnswer {
        /// The socket path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another failure talking to the socket.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Asks the guard listening on `path` for its counts, all of it (connect, request, answer)
/// within `timeout`; the answer is read up to [`MAX_ANSWER`] bytes.
pub fn ask(path: &Path, timeout: Duration) -> Result<Answer, QueryError> {
    let deadline = Instant::now() + timeout;
    let p = || path.to_path_buf();
    let fail = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            QueryError::NoGuard { path: p() }
        }
        io::ErrorKind::PermissionDenied => QueryError::PermissionDenied { path: p() },
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            QueryError::Timeout { path: p(), timeout }
        }
        _ => QueryError::Io { path: p(), source: e },
    };
    let mut stream = connect(path, deadline).map_err(fail)?;
    let left = |deadline: Instant| {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))
    };
    let mut request = serde_json::to_vec(&Request { version: VERSION, query: Query::Counts })
        .map_err(|e| fail(io::Error::other(e)))?;
    request.push(b'\n');
    stream.set_write_timeout(Some(left(deadline).map_err(fail)?)).map_err(fail)?;
    stream.write_all(&request).map_err(fail)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 << 10];
    loop {
        stream.set_read_timeout(Some(left(deadline).map_err(fail)?)).map_err(fail)?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(e)),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_ANSWER {
            return Err(QueryError::BadAnswer {
                path: p(),
                reason: format!("longer than {} MiB", MAX_ANSWER >> 20),
            });
        }
        if buf.ends_with(b"\n") {
            break;
        }
    }
    let bad = |reason: String| QueryError::BadAnswer { path: p(), reason };
    if buf.is_empty() {
        return Err(bad("the guard closed the connection without answering".into()));
    }
    match serde_json::from_slice::<Reply>(buf.trim_ascii_end()) {
        Ok(Reply::Answer(a)) => Answer::from_wire(a).map_err(bad),
        Ok(Reply::Error(e)) => Err(QueryError::Refused { path: p(), reason: e.error }),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Connects without blocking past `deadline`: a unix socket's connect() waits while the
/// listener's backlog is full; non-blocking, it says EAGAIN instead, and we try again.
fn connect(path: &Path, deadline: Instant) -> io::Result<UnixStream> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let addr = SocketAddrUnix::new(path)?;
    loop {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => {
                let stream = UnixStream::from(fd);
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(rustix::io::Errno::AGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(rustix::io::Errno::AGAIN) => return Err(io::ErrorKind::TimedOut.into()),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::TableStats;

    #[test]
    fn issue_13_requests_and_answers_on_the_wire() {
        let mut row = Row::default();
        row.by_state[3] = 5;
        row.total = 5;
        let seen = Seen {
            guests: vec!["web01".into()],
            rows: vec![(Some(0), row), (None, Row::default())],
            stats: Some(TableStats { count: 5, max: 100 }),
            synced: true,
            at_unix_ms: 7,
            ..Seen::default()
        };
        let line = answer_line(br#"{"version":1,"query":"counts"}"#, Some(&seen));
        let Ok(Reply::Answer(w)) = serde_json::from_str(&line) else { panic!("{line}") };
        let a = Answer::from_wire(w).unwrap();
        assert_eq!(a.rows, seen.rows);
        assert_eq!(a.table.as_ref().map(|t| (t.count, t.max)), Some((5, 100)));
        for bad in [
            &br#"{"version":1,"query":"counts","extra":1}"#[..],
            br#"{"version":2,"query":"counts"}"#,
            br#"{"query":"counts"}"#,
            br#"{"version":1,"query":"flows"}"#,
            b"GET / HTTP/1.0",
        ] {
            let line = answer_line(bad, Some(&seen));
            assert!(matches!(serde_json::from_str(&line), Ok(Reply::Error(_))), "{line}");
        }
        let line = answer_line(br#"{"version":1,"query":"counts"}"#, None);
        assert!(line.contains("not counted the table yet"), "{line}");
        // A row naming a guest that is not there, or a state no column has: a bad answer.
        let w: WireAnswer = serde_json::from_str(
            r#"{"version":1,"guests":[],"rows":[{"guest":0,"states":{}}],"table":null,"synced":true,"at_unix_ms":0}"#,
        )
        .unwrap();
        assert!(Answer::from_wire(w).is_err());
        let w: WireAnswer = serde_json::from_str(
            r#"{"version":1,"guests":[],"rows":[{"guest":null,"states":{"WEIRD":1}}],"table":null,"synced":true,"at_unix_ms":0}"#,
        )
        .unwrap();
        assert!(Answer::from_wire(w).is_err());
    }
}
