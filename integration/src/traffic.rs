//! Real traffic in the lab: the upstream echo server, the guests' connections, the runaway
//! guest's flood, and the host's ICMP echo. Every loop here is bounded in count and in time.
//!
//! Each function opens its sockets on the thread it runs on, so it must run on the place of
//! the namespace it speaks for (`Place::run` / `Place::spawn`).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The upstream server's listener on `[::]:PORT`, dual-stack (`bindv6only` is 0 in a fresh
/// namespace). Run on the upstream place.
pub async fn listen(port: u16) -> io::Result<TcpListener> {
    TcpListener::bind(("::", port)).await
}

/// Accepts up to `limit` connections and echoes whatever each one sends until it closes.
/// Run on the upstream place; it ends after `limit` accepts or with the place.
pub async fn serve(listener: TcpListener, limit: usize) {
    let mut conns = JoinSet::new();
    for _ in 0..limit {
        let Ok((mut stream, _)) = listener.accept().await else { break };
        conns.spawn(async move {
            let mut buf = [0u8; 256];
            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                if stream.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        // Reap the echo tasks of closed connections as we go, so the set stays small.
        while conns.try_join_next().is_some() {}
    }
    // Keep the accepted connections open until the place stops.
    while conns.join_next().await.is_some() {}
}

/// The sink: accepts up to `limit` connections and closes each at once (its namespace's
/// ruleset drops the FIN, see `topology::leak_ruleset`). Run on the upstream place.
pub async fn sink(listener: TcpListener, limit: usize) {
    for _ in 0..limit {
        if listener.accept().await.is_err() {
            break;
        }
    }
}

/// Why a connection attempt failed.
#[derive(Debug)]
pub enum ConnectError {
    /// No answer within the timeout: the SYN was dropped somewhere (a full table drops it).
    Timeout,
    Io(io::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("timed out (no SYN-ACK)"),
            ConnectError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Opens a TCP connection within `timeout`.
pub async fn connect(dst: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    match tokio::time::timeout(timeout, TcpStream::connect(dst)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(ConnectError::Io(e)),
        Err(_) => Err(ConnectError::Timeout),
    }
}

/// Sends a line on an open connection and waits for the server's echo: proof that the
/// connection carries data both ways.
pub async fn echo(stream: &mut TcpStream, timeout: Duration) -> Result<(), String> {
    let msg = b"ctg-lab\n";
    let work = async {
        stream.write_all(msg).await?;
        let mut back = [0u8; 8];
        stream.read_exact(&mut back).await?;
        if &back != msg {
            return Err(io::Error::other(format!("echo came back as {back:?}")));
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r.map_err(|e| format!("echo: {e}")),
        Err(_) => Err(format!("echo: no answer within {timeout:?}")),
    }
}

/// A new connection that carries an echo: what "a guest can open connections" means.
pub async fn connect_and_echo(dst: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let mut s = connect(dst, timeout).await.map_err(|e| format!("connect to {dst}: {e}"))?;
    echo(&mut s, timeout).await?;
    Ok(s)
}

/// Bounds of the runaway guest's flood: it stops by itself at whichever comes first.
#[derive(Debug, Clone, Copy)]
pub struct FloodLimits {
    /// Connection attempts in flight at once.
    pub concurrency: usize,
    /// Attempts in total.
    pub max_attempts: usize,
    /// How long one attempt may wait for its SYN-ACK.
    pub attempt_timeout: Duration,
    /// How long the flood may run.
    pub duration: Duration,
}

/// What the runaway guest did.
#[derive(Debug, Default)]
pub struct Flood {
    pub attempts: usize,
    pub established: usize,
    pub timed_out: usize,
    pub other_errors: usize,
    pub first_error: Option<String>,
    pub ran_for: Duration,
}

/// The runaway guest: opens connections to `dst` as fast as `limits.concurrency` allows and
/// abandons each at once (its ruleset drops the FIN, so the host keeps the entry), until
/// `stop` turns true or a limit is reached. Once the host's table is full
/// its SYNs are dropped, each attempt times out, and it keeps knocking at about
/// `concurrency / attempt_timeout` attempts a second, as a runaway guest does. Run on the
/// runaway guest's place.
pub async fn flood(dst: SocketAddr, limits: FloodLimits, mut stop: watch::Receiver<bool>) -> Flood {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + limits.duration;
    let mut report = Flood::default();
    let mut inflight = JoinSet::new();
    let mut stopping = *stop.borrow();
    loop {
        while !stopping
            && inflight.len() < limits.concurrency
            && report.attempts < limits.max_attempts
        {
            inflight.spawn(async move {
                let r = connect(dst, limits.attempt_timeout).await;
                if matches!(r, Err(ConnectError::Io(_))) {
                    // Refused (the cap's reject): try again later, not in a tight loop.
                    tokio::time::sleep(limits.attempt_timeout).await;
                }
                r
            });
            report.attempts += 1;
        }
        if inflight.is_empty() {
            break;
        }
        tokio::select! {
            done = inflight.join_next() => match done {
                Some(Ok(Ok(_abandoned))) => report.established += 1,
                Some(Ok(Err(ConnectError::Timeout))) => report.timed_out += 1,
                Some(Ok(Err(e))) => {
                    report.other_errors += 1;
                    report.first_error.get_or_insert_with(|| e.to_string());
                }
                Some(Err(e)) => {
                    report.other_errors += 1;
                    report.first_error.get_or_insert_with(|| e.to_string());
                }
                None => {}
            },
            changed = stop.changed(), if !stopping => {
                stopping = changed.is_err() || *stop.borrow();
            }
            _ = tokio::time::sleep_until(deadline), if !stopping => stopping = true,
        }
    }
    report.ran_for = started.elapsed();
    report
}

/// What one ICMP echo from the host got.
#[derive(Debug)]
pub enum Ping {
    /// An echo reply came back after this long.
    Reply(Duration),
    /// `sendto` failed: with a full table, netfilter drops the packet on output and the
    /// kernel hands the sender `EPERM` (the incident's `sendmsg: Operation not permitted`).
    SendFailed(io::Error),
    /// Sent, but no reply within the timeout.
    NoReply,
}

/// One ICMP echo request to `dst` on a raw socket (iputils' `ping` prints nothing on EPERM
/// since 2021; the errno is the symptom). Run on the host place.
pub async fn ping(dst: Ipv4Addr, id: u16, timeout: Duration) -> io::Result<Ping> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns; the OwnedFd keeps it open for
    // the AsyncFd's whole life.
    let sock = unsafe { AsyncFd::register(OwnedFd::from_raw_fd(fd)) }.map_err(io::Error::from)?;
    let mut packet = [0u8; 16];
    packet[0] = 8; // echo request
    packet[4..6].copy_from_slice(&id.to_be_bytes());
    packet[6..8].copy_from_slice(&1u16.to_be_bytes());
    packet[8..].copy_from_slice(b"ctg-lab!");
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(dst).to_be() },
        sin_zero: [0; 8],
    };
    let started = Instant::now();
    // SAFETY: packet and addr outlive the call; the lengths are theirs.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Ok(Ping::SendFailed(io::Error::last_os_error()));
    }
    let wait_reply = async {
        let mut buf = [0u8; 1500];
        loop {
            let mut guard = sock.readable().await?;
            let n = match guard.try_io(|fd| {
                // SAFETY: buf outlives the call and its length is passed.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
            }) {
                Ok(r) => r?,
                Err(_would_block) => continue,
            };
            // A raw IPv4 socket receives the IP header too.
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            let from = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
            if n >= ihl + 8
                && from == dst
                && buf[ihl] == 0
                && buf[ihl + 4..ihl + 6] == id.to_be_bytes()
            {
                return Ok::<_, io::Error>(started.elapsed());
            }
        }
    };
    match tokio::time::timeout(timeout, wait_reply).await {
        Ok(r) => r.map(Ping::Reply),
        Err(_) => Ok(Ping::NoReply),
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::checksum;

    #[test]
    fn checksum_of_a_packet_with_its_checksum_is_zero() {
        let mut p = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'a', b'b', b'c'];
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(checksum(&p), 0);
    }
}
