//! The dump passes commands share: the table's fill, and one streaming select-and-count pass.

use std::ops::ControlFlow;
use std::sync::Arc;

use ctguard::GuestMap;
use ctguard::ctnetlink::{self, Conntrack, DumpSummary};
use ctguard::flow::Flow;
use ctguard::select::Selector;
use ctguard::stats::Fill;
use ctguard::sysctl::{self, StateTimeouts};
use ctguard::tally::{GroupBy, Tally};

use super::exit::Failure;

/// How often a dump that overran our buffer is tried again before giving up.
const DUMP_ATTEMPTS: usize = 3;

/// The selector, with the namespace's state timeouts when `--idle` needs them.
pub fn with_timeouts(mut sel: Selector) -> Selector {
    if sel.idle_min.is_some() {
        sel.timeouts = Some(StateTimeouts::read());
    }
    sel
}

/// Warns on stderr when the kernel flagged the dump as inconsistent.
pub fn warn_inconsistent(s: &DumpSummary) {
    if s.interrupted {
        eprintln!(
            "ctguard: warning: the kernel flagged the dump as inconsistent (NLM_F_DUMP_INTR); counts may be off"
        );
    }
}

/// The table's entry count, its maximum and its buckets.
pub fn fill(ct: &mut Conntrack) -> Result<Fill, Failure> {
    Ok(Fill::new(ct.table_stats()?, sysctl::read("nf_conntrack_buckets")))
}

/// One streaming pass: select, then count. A dump that overran is counted again from scratch.
pub fn tally(
    ct: &mut Conntrack,
    sel: Selector,
    by: GroupBy,
    guests: impl Into<Arc<GuestMap>>,
) -> Result<Tally, Failure> {
    let sel = with_timeouts(sel);
    let filter = sel.kernel_filter();
    let mut tally = Tally::new(by, guests);
    for attempt in 1..=DUMP_ATTEMPTS {
        tally.clear();
        let r = ct.dump(&filter, |flow: &Flow| {
            if sel.matches(flow) {
                tally.add(flow);
            }
            ControlFlow::Continue(())
        });
        match r {
            Ok(summary) => {
                warn_inconsistent(&summary);
                return Ok(tally);
            }
            Err(ctnetlink::Error::Overrun { .. }) if attempt < DUMP_ATTEMPTS => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(tally)
}
