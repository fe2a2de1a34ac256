//! The dump passes commands share: the table's fill, and one streaming select-and-count pass
//! (with its progress bar, for `top` and `count` on a terminal).

use std::ops::ControlFlow;
use std::sync::Arc;

use ctguard::GuestMap;
use ctguard::ctnetlink::{Conntrack, DumpSummary, Dumped};
use ctguard::select::Selector;
use ctguard::stats::Fill;
use ctguard::sysctl::{self, StateTimeouts};
use ctguard::tally::{GroupBy, Tally};

use super::exit::Failure;
use super::progress::{self, Bar};

/// Entries between two looks at the progress bar: the per-entry cost is a count and a test,
/// the bar's lock and clock are paid once per this many (`top` stays at its dump's floor).
const PROGRESS_EVERY: u64 = 4096;

/// The dump's bar: entries seen, of `total` when the table's count is known.
pub fn bar(on: bool, total: Option<u32>) -> Bar {
    match total {
        Some(n) => Bar::new(on, progress::DUMP_OF, Some(u64::from(n))),
        None => Bar::new(on, progress::DUMP, None),
    }
}

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

/// One streaming pass: select, then count, the entries seen shown on `bar` (cleared before
/// this returns). A dump that overran is counted again from scratch.
pub fn tally(
    ct: &mut Conntrack,
    sel: Selector,
    by: GroupBy,
    guests: impl Into<Arc<GuestMap>>,
    mut bar: Bar,
) -> Result<Tally, Failure> {
    let sel = with_timeouts(sel);
    let filter = sel.kernel_filter();
    let mut tally = Tally::new(by, guests);
    let mut seen_so_far = 0u64;
    let summary = ct.dump_retrying(&filter, |seen| {
        match seen {
            Dumped::Flow(flow, _) => {
                if sel.matches(flow) {
                    tally.add(flow);
                }
                seen_so_far += 1;
                if seen_so_far.is_multiple_of(PROGRESS_EVERY) {
                    bar.set(seen_so_far);
                }
            }
            Dumped::Restart => {
                tally.clear();
                seen_so_far = 0;
            }
        }
        ControlFlow::Continue(())
    })?;
    drop(bar);
    warn_inconsistent(&summary);
    Ok(tally)
}
