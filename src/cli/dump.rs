//! The dump passes commands share: the table's fill, and one streaming select-and-count pass.

use std::ops::ControlFlow;
use std::sync::Arc;

use ctguard::GuestMap;
use ctguard::ctnetlink::{Conntrack, DumpSummary, Dumped};
use ctguard::select::Selector;
use ctguard::stats::Fill;
use ctguard::sysctl::{self, StateTimeouts};
use ctguard::tally::{GroupBy, Tally};

use super::exit::Failure;

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
    let summary = ct.dump_retrying(&filter, |seen| {
        match seen {
            Dumped::Flow(flow, _) if sel.matches(flow) => tally.add(flow),
            Dumped::Flow(..) => {}
            Dumped::Restart => tally.clear(),
        }
        ControlFlow::Continue(())
    })?;
    warn_inconsistent(&summary);
    Ok(tally)
}
