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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::recommend::tests::incident_host;
    use super::*;
    use crate::stats::TableStats;

    #[test]
    fn issue_5_tune_json_is_pinned_and_rejects_unknown_fields() {
        let facts = TuneFacts { mem_total: 64 << 30, ..incident_host() };
        let recs = recommend(&facts);
        let report = TuneReport {
            netns: NetnsInfo { inode: 4_026_532_290, initial: Some(false) },
            kernel: Some("6.18".into()),
            memory_bytes: facts.mem_total,
            entry_bytes: facts.entry_bytes(),
            table: Fill::new(TableStats { count: 258_540, max: 262_144 }, Some(262_144)),
            recommendations: recs.clone(),
            applied: None,
            persisted: None,
        };
        let got = serde_json::to_value(&report).unwrap();
        let keys: Vec<&str> = got.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["entry_bytes", "kernel", "memory_bytes", "netns", "recommendations", "table"],
            "applied and persisted are left out without --apply / --persist"
        );
        // 64 GiB / 32 = 2 GiB; / 456 B = 4.7M; the ceiling is the write-up's 2,097,152.
        assert_eq!(
            got["recommendations"][0],
            json!({"key": "net.netfilter.nf_conntrack_max", "current": 262_144, "value": 2_097_152,
                   "reason": recs[0].reason, "scope": "global", "change": true})
        );
        let values: Vec<(String, u64, bool)> =
            recs.iter().map(|r| (r.key.clone(), r.value, r.change)).collect();
        let want = [
            ("net.netfilter.nf_conntrack_max", 2_097_152, true),
            ("net.netfilter.nf_conntrack_buckets", 2_097_152, true),
            ("net.netfilter.nf_conntrack_tcp_timeout_established", 3600, true),
            ("net.netfilter.nf_conntrack_tcp_timeout_time_wait", 30, true),
            ("net.netfilter.nf_conntrack_tcp_timeout_fin_wait", 30, true),
            ("net.netfilter.nf_conntrack_tcp_timeout_close_wait", 60, false),
        ];
        assert_eq!(values, want.map(|(k, v, c)| (k.to_string(), v, c)));
        let text = got.to_string();
        assert_eq!(serde_json::from_str::<TuneReport>(&text).unwrap(), report);
        for at in ["", "\"recommendations\":[", "\"table\":", "\"netns\":"] {
            let bad = text.replacen(&format!("{at}{{"), &format!("{at}{{\"extra\":1,"), 1);
            assert_ne!(bad, text);
            let e = serde_json::from_str::<TuneReport>(&bad).expect_err(at).to_string();
            assert!(e.contains("unknown field `extra`"), "{at}: {e}");
        }
    }
}
