//! `ctguard doctor`: the write-up's whole investigation as one verdict with next steps.
//!
//! The facts (table fill, per-CPU counters sampled twice, the kernel log, the top owners,
//! the sysctls) are gathered by the binary; everything here is pure: [`verdict`](mod@verdict)
//! decides healthy / at risk / full from the [`Facts`], [`remedy`] builds the commands to
//! run, and [`report`] assembles the `--json` document and the text an operator reads.

pub mod remedy;
pub mod report;
pub mod verdict;

pub use crate::stats::CounterWindow;
pub use remedy::Actions;
pub use report::{Counters, DoctorReport, Inputs, KernelLog, NetnsInfo};
pub use verdict::{
    AT_RISK_FILL, DROP_MEANS_FULL, Facts, JUST_DROPPED, LONG_ESTABLISHED, LONG_ESTABLISHED_FILL,
    LogSummary, RECENT_LOG, STILL_FULL, Verdict, WATCHED_SYSCTLS, verdict,
};
