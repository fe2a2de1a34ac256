//! What `events` and `watch` share around the library's live engines (`ctguard::live`): their
//! flags, the event loop, how they stop (signals, a gone reader, `--duration`), and the
//! `nf_conntrack_events` setting and its warnings.

use std::future::Future;
use std::io::{self, IsTerminal};
use std::time::Duration;

use clap::Args;
use ctguard::live::Shutdown;
use ctguard::sysctl;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::sleep;

use super::exit::Failure;
use super::parse::{self, Given};
use super::select_args::SelectArgs;

/// Default receive buffer: the kernel doubles it, and charges ~1.3 KiB per queued event, so
/// 64 MiB holds about 100,000 events (a second of `conntrack -D` at full speed) before it
/// overruns. The memory is only used while events wait to be read.
pub const DEFAULT_BUFFER: &str = "64M";

/// Shared by `events` and `watch`.
#[derive(Debug, Args, Clone)]
pub struct LiveArgs {
    /// Kernel receive buffer for events (SO_RCVBUFFORCE): bytes or 256K, 64M, 1G. The kernel
    /// doubles it and charges ~1.3 KiB per waiting event: 64M holds ~100,000 events.
    #[arg(long, value_name = "SIZE", default_value = DEFAULT_BUFFER, value_parser = parse::size)]
    pub buffer: usize,
    /// Set nf_conntrack_events=1 first, in the target network namespace only (the sysctl is per
    /// namespace), so that every new flow reports events.
    #[arg(long)]
    pub enable_events: bool,
    /// Stop after N events (events) or N snapshots (watch).
    #[arg(long, value_name = "N", value_parser = parse::positive("--count"))]
    pub count: Option<u64>,
    /// Stop after this long (30s, 5m); watch prints a last snapshot.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration("--duration"))]
    pub duration: Option<Duration>,
}

/// The tail `events` and `watch` share: the event flags, then the selecting flags without the
/// clock ones ([`hide_clock_flags`]).
#[derive(Debug, Args)]
#[command(mut_args(hide_clock_flags))]
pub struct LiveSelectArgs {
    #[command(flatten)]
    pub live: LiveArgs,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `--idle` and `--timeout-below` change with the clock, not with events, so they cannot hold
/// for a live count: `events` and `watch` refuse them, whatever their value, with that reason,
/// and their help leaves them out. They are still flags, so the refusal keeps its reason.
fn hide_clock_flags(a: clap::Arg) -> clap::Arg {
    match a.get_id().as_str() {
        "idle" | "timeout_below" => a.hide(true).value_parser(clock_flag),
        _ => a,
    }
}

/// The parser of `--idle` and `--timeout-below` in a live command: a refusal.
fn clock_flag(_: &str) -> Result<Given<u32>, String> {
    Err("--idle and --timeout-below do not apply to live events (they change with time, not \
         with events); use them with list or count"
        .into())
}

/// The event loop of a live command: one thread, IO and timers.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Failure::Message(format!("start the event loop: {e}")))
}

/// Resolves on SIGINT or SIGTERM. Needs the runtime.
fn shutdown() -> Result<impl Future<Output = ()>, Failure> {
    let fail = |e: io::Error| Failure::Message(format!("install signal handlers: {e}"));
    let mut int = signal(SignalKind::interrupt()).map_err(fail)?;
    let mut term = signal(SignalKind::terminate()).map_err(fail)?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

/// Resolves when stdout is a pipe whose reader went away (`events | head -5`): the kernel
/// reports POLLERR on a pipe's write end once no reader is left (pipe_poll), so a quiet
/// stream learns it without waiting for its next write. Never resolves for a terminal, a
/// file (epoll refuses regular files) or anything else that cannot tell.
async fn reader_gone() {
    use std::os::fd::AsFd;
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    /// POLLERR or POLLHUP on stdout now.
    fn hung_up() -> bool {
        let mut p = libc::pollfd { fd: libc::STDOUT_FILENO, events: 0, revents: 0 };
        // SAFETY: poll reads and writes one pollfd, which lives for the call.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n == 1 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
    }

    let stdout = io::stdout();
    if stdout.is_terminal() {
        return std::future::pending().await;
    }
    // A duplicate of stdout, owned here: the same pipe, open as long as the AsyncFd.
    let Ok(dup) = stdout.as_fd().try_clone_to_owned() else {
        return std::future::pending().await;
    };
    // SAFETY: `dup` is an open descriptor the AsyncFd owns until it drops (register's rule).
    let Ok(fd) = (unsafe { AsyncFd::register_with_interest(dup, Interest::ERROR) }) else {
        return std::future::pending().await;
    };
    loop {
        match fd.ready(Interest::ERROR).await {
            Ok(_) if hung_up() => return,
            Ok(mut guard) => guard.clear_ready(),
            Err(_) => return std::future::pending().await,
        }
    }
}

/// Resolves after `d`, or never.
async fn deadline(d: Option<Duration>) {
    match d {
        Some(d) => sleep(d).await,
        None => std::future::pending().await,
    }
}

/// How a live command ends: at SIGINT or SIGTERM, when the reader of stdout is gone, or after
/// `duration`. Needs the runtime.
pub fn stopping(duration: Option<Duration>) -> Result<impl Future<Output = Shutdown>, Failure> {
    let signalled = shutdown()?;
    Ok(async move {
        tokio::select! {
            biased;
            () = signalled => Shutdown::Now,
            () = reader_gone() => Shutdown::Quiet,
            () = deadline(duration) => Shutdown::Deadline,
        }
    })
}

/// Sets `nf_conntrack_events=1` when asked, then reads the namespace's setting: the setting,
/// and what it means for events, for the operator (a warning, or what `--enable-events` did).
/// `/proc/sys/net` is the namespace ctguard entered.
/// `then` says, for the setting read, what follows for the counts.
pub fn events_setting(
    enable: bool,
    then: impl FnOnce(Option<u64>) -> String,
) -> Result<(Option<u64>, Option<String>), Failure> {
    if enable {
        sysctl::write("nf_conntrack_events", "1").map_err(|e| {
            Failure::Message(format!(
                "--enable-events: cannot set nf_conntrack_events=1 in this network namespace: {e}"
            ))
        })?;
    }
    let mode = sysctl::read("nf_conntrack_events");
    let then = then(mode);
    let message = match mode {
        Some(1) if enable => Some(
            "set nf_conntrack_events=1 in this network namespace only; flows created before \
             stay silent until they end"
                .to_string(),
        ),
        Some(0) => Some(format!(
            "warning: nf_conntrack_events=0 here: the kernel sends no events; {then} \
             (--enable-events sets it to 1 in this namespace)"
        )),
        Some(2) => Some(format!(
            "warning: nf_conntrack_events=2 here: flows created while no event listener \
             existed never report UPDATE or DESTROY; {then} (--enable-events sets it to 1 in \
             this namespace)"
        )),
        _ => None,
    };
    Ok((mode, message))
}
