//! The always-on guard (`ctguard guard`, issue 13): exact live counts per guest and state from
//! the live engine, a decision four times a second, relief without a human (an nftables
//! `ct count` cap on the guest that fills the table, then the evict engine on its stale
//! flows), and what it saw for Prometheus (`/metrics`) and for `top --live` (a unix socket).
//!
//! The rooms: `config` (the TOML file, checked whole before anything runs), `decide` (pure:
//! counts, kernel counters, config and clock in, actions out), `caps` (ctguard's own nftables
//! table), `metrics` (the exposition), `http` (`/metrics`), `query` (the socket `top --live`
//! asks), `daemon` (the loop that ties them to the live engine and the evict engine).

pub mod caps;
pub mod config;
pub mod daemon;
pub mod decide;
pub mod discovery;
pub mod http;
pub mod metrics;
pub mod query;
mod serve;

use std::sync::{Arc, RwLock};

use crate::guests::GuestId;
use crate::stats::{CpuStats, TableStats};
use crate::tally::Row;

/// What the guard saw at its last snapshot (four a second): what `/metrics` and `top --live`
/// answer from, so neither ever dumps the table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// The guests' names, by [`GuestId`].
    pub guests: Vec<String>,
    /// Live flows per guest (`None`: flows of no guest), by state column
    /// ([`crate::tally::column_of`]).
    pub rows: Vec<(Option<GuestId>, Row)>,
    /// The kernel's entry count and limit, read for this snapshot.
    pub stats: Option<TableStats>,
    /// The kernel's per-CPU counters summed (`cpu` is 0), read at most a second ago.
    pub kernel: Option<CpuStats>,
    /// Events received since the guard started.
    pub events: u64,
    /// Event overruns since the guard started.
    pub overruns: u64,
    /// Resyncs since the guard started (the first seed included).
    pub resyncs: u64,
    /// The held counts agree with the kernel's.
    pub synced: bool,
    /// When the snapshot was taken, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// The latest [`Seen`], written by the daemon and read by the servers. Readers take an `Arc`
/// and let go of the lock at once: a slow scrape never holds up the engine.
#[derive(Debug, Default)]
pub struct Board {
    latest: RwLock<Option<Arc<Seen>>>,
}

impl Board {
    /// Publishes a snapshot.
    pub fn publish(&self, seen: Seen) {
        let seen = Arc::new(seen);
        match self.latest.write() {
            Ok(mut slot) => *slot = Some(seen),
            Err(poisoned) => *poisoned.into_inner() = Some(seen),
        }
    }

    /// The latest snapshot; `None` before the first seed.
    pub fn latest(&self) -> Option<Arc<Seen>> {
        match self.latest.read() {
            Ok(slot) => slot.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}
