//! The event stream: each selected event handed on as it comes, losses counted (`ctguard
//! events`). The other use of the live engine's subscription: no table, no dump, so nothing
//! here needs every event, and an overrun is reported, not repaired.

use std::future::Future;
use std::pin::pin;

use super::watcher::{Error, Events, Overrun, Shutdown, gather};
use crate::ctnetlink::{EventKind, EventMask};
use crate::flow::Flow;
use crate::select::Selector;

/// Where the stream hands what it sees.
pub trait EventSink {
    /// The sink's error; the engine's own converts into it.
    type Error: From<Error>;
    /// One event of the mask and the selection, and the netlink port of the process whose
    /// request caused it (`None`: the kernel's own event).
    fn event(
        &mut self,
        kind: EventKind,
        flow: &Flow,
        portid: Option<u32>,
    ) -> Result<(), Self::Error>;
    /// Events were lost.
    fn overrun(&mut self, o: &Overrun) -> Result<(), Self::Error>;
    /// A batch of events was handed on: a moment to flush.
    fn batch_done(&mut self) -> Result<(), Self::Error>;
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streamed {
    /// Events handed to the sink.
    pub events: u64,
    /// Overruns (ENOBUFS) in all.
    pub overruns: u64,
    /// Events the kernel dropped in all, read when stopping (drops after the last ENOBUFS
    /// are in it: the kernel raises ENOBUFS once per congestion, not once per dropped event).
    pub lost_events: Option<u64>,
    /// What stopped it; [`Shutdown::Now`] also when `limit` events were handed on.
    pub how: Shutdown,
}

/// Hands every event of `mask` that `sel` matches to `sink`, until `shutdown` resolves or
/// `limit` events were handed on.
pub async fn stream<E: Events, S: EventSink>(
    events: &mut E,
    mask: EventMask,
    sel: &Selector,
    limit: Option<u64>,
    sink: &mut S,
    shutdown: impl Future<Output = Shutdown>,
) -> Result<Streamed, S::Error> {
    let mut shutdown = pin!(shutdown);
    let limit = limit.unwrap_or(u64::MAX);
    let (mut handed, mut overruns) = (0u64, 0u64);
    let mut failed: Option<S::Error> = None;
    let mut how = Shutdown::Now;
    while handed < limit {
        tokio::select! {
            biased;
            h = &mut shutdown => {
                how = h;
                break;
            }
            r = events.recv(|kind, flow, portid| {
                if failed.is_some() || handed >= limit || !mask.contains(kind) || !sel.matches(flow)
                {
                    return;
                }
                match sink.event(kind, flow, portid) {
                    Ok(()) => handed += 1,
                    Err(e) => failed = Some(e),
                }
            }) => {
                let r = r.map_err(Error::from)?;
                if let Some(e) = failed.take() {
                    return Err(e);
                }
                if r.drained {
                    sink.batch_done()?;
                    gather();
                }
                if r.overrun {
                    overruns += 1;
                    sink.overrun(&Overrun { overruns, lost_events: events.drops() })?;
                }
                sink.batch_done()?;
            }
        }
    }
    Ok(Streamed { events: handed, overruns, lost_events: events.drops(), how })
}
