//! Recommended conntrack sysctls for this host, each with its reason (`ctguard tune`).
//!
//! In the spirit of the incident's write-up: a larger `nf_conntrack_max` with buckets to
//! match, ESTABLISHED entries kept an hour instead of five days, TIME_WAIT and FIN_WAIT 30 s,
//! CLOSE_WAIT 60 s. The arithmetic is pure ([`recommend`](mod@recommend): [`recommend()`],
//! [`sysctl_d`]); reading the host ([`TuneFacts::read`]) is an edge, and so are the two
//! writers: [`apply`](mod@apply) (`--apply`, to `/proc/sys`) and [`persist`] (`--persist`,
//! a `sysctl.d` file). [`TuneReport`] is what `tune --json` prints.
//!
//! Scope matters: the timeouts are per network namespace, but `nf_conntrack_max` and
//! `nf_conntrack_buckets` are global and read-only (mode 0444) inside a non-initial namespace
//! (`nf_conntrack_standalone_init_sysctl`). Global values are only ever written from the
//! initial namespace; elsewhere they are reported, never attempted.

use serde::{Deserialize, Serialize};

use crate::doctor::NetnsInfo;
use crate::stats::Fill;

pub mod apply;
pub mod persist;
pub mod recommend;

pub use apply::{Applied, ApplyOutcome, Step, apply, plan_apply};
pub use persist::{persist_target_problem, write_file_atomically};
pub use recommend::{
    HASHSIZE_PARAM, Recommendation, Scope, TuneFacts, buckets_by_sysctl, mem_total, parse_meminfo,
    recommend, sysctl_d,
};

/// What `tune --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneReport {
    /// The namespace the per-namespace values belong to.
    pub netns: NetnsInfo,
    /// `major.minor` of the running kernel, when readable.
    pub kernel: Option<String>,
    /// `MemTotal`, bytes.
    pub memory_bytes: u64,
    /// Bytes one entry costs, as the max is computed.
    pub entry_bytes: u64,
    /// Count, max, fill, buckets now.
    pub table: Fill,
    /// Every recommendation, changed or not.
    pub recommendations: Vec<Recommendation>,
    /// What `--apply` did, per key.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub applied: Option<Vec<Applied>>,
    /// The file `--persist` wrote.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub persisted: Option<String>,
}
