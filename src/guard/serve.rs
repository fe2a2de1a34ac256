//! The accept loop the guard's two servers share (`/metrics` over TCP, the query socket over
//! unix): at most a fixed number of connections at once, each in its own task, until shutdown.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// A listener the loop accepts from.
pub(crate) trait Listener {
    /// An accepted connection.
    type Stream: Send + 'static;
    /// The next connection.
    fn next(&self) -> impl Future<Output = io::Result<Self::Stream>>;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn next(&self) -> io::Result<Self::Stream> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn next(&self) -> io::Result<Self::Stream> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// Accept errors that say something is wrong with the listener itself. Any other (a client
/// gone before accept, descriptors or memory short for a moment) is waited out.
fn fatal(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP))
}

/// Hands each connection to `handle` in a task of its own, at most `max` at once: one more is
/// closed as soon as it is accepted rather than queued behind the others. Returns when
/// `shutdown` resolves, dropping (cancelling) the connections still open.
pub(crate) async fn each<L, F, Fut>(
    listener: L,
    max: usize,
    shutdown: impl Future<Output = ()>,
    handle: F,
) -> io::Result<()>
where
    L: Listener,
    F: Fn(L::Stream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.next() => {
                let stream = match accepted {
                    Ok(stream) => stream,
                    Err(e) if fatal(&e) => return Err(e),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else { continue };
                let served = handle(stream);
                conns.spawn(async move {
                    served.await;
                    drop(slot);
                });
            }
        }
    }
}
