//! The guard's Prometheus exposition (`/metrics`): what the guard saw at its last snapshot and
//! what it did, as OpenMetrics text (or the Prometheus text format 0.0.4).
//!
//! Everything is encoded at scrape time by one `prometheus-client` [`Collector`] from the
//! latest [`Seen`] and the guard's own per-guest tallies, as `ConstCounter`s and `ConstGauge`s.
//! The kernel's counters are absolute per-CPU sums the guard reads every second: mirroring
//! them as they are (rather than adding up deltas) keeps a restart of the guard, or a missed
//! read, from drifting from `conntrack -S`. The per-guest families are kept in sorted maps, so
//! the exposition is in a stable order (the crate's `Family` is a hash map), and their label
//! sets are bounded by the guests: never a series per address. A scrape reads the snapshot (a
//! few hundred rows), never the table.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::{Board, Seen};
use crate::tally::{COLUMNS, column_name};

/// What the guard did to a guest, the `action` label of `ctguard_actions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Logged and counted only.
    Alert,
    /// Its flows were evicted.
    Evict,
    /// A `ct count` cap was installed.
    Cap,
    /// Its cap was removed.
    Uncap,
}

impl Action {
    /// The label value: `alert`, `evict`, `cap`, `uncap`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Evict => "evict",
            Action::Cap => "cap",
            Action::Uncap => "uncap",
        }
    }
}

/// The label of flows no guest owns, as `top` prints it.
const NO_GUEST: &str = "(no guest)";

/// The guard's own tallies, per guest (bounded by the guests the daemon names).
#[derive(Debug, Default)]
struct Acts {
    actions: BTreeMap<(String, Action), u64>,
    evicted: BTreeMap<String, u64>,
    capped: BTreeMap<String, bool>,
    quota: BTreeMap<String, u64>,
}

/// Encodes the live families from the board and the guard's tallies at each scrape.
#[derive(Debug)]
struct Live {
    board: Arc<Board>,
    acts: Arc<Mutex<Acts>>,
}

/// The guard's metrics: `Send + Sync`, shared as `Arc<Metrics>` by the daemon (which counts
/// its actions here) and the `/metrics` server (which encodes).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    acts: Arc<Mutex<Acts>>,
}

fn lock(m: &Mutex<Acts>) -> MutexGuard<'_, Acts> {
    // A panic while counting leaves plain numbers behind: still worth reporting.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// The metrics of a guard publishing its snapshots on `board`; `version` is the
    /// `ctguard_build_info` label.
    pub fn new(board: Arc<Board>, version: &str) -> Metrics {
        let acts = Arc::new(Mutex::new(Acts::default()));
        let mut registry = Registry::default();
        registry.register(
            "ctguard_build",
            "The running ctguard's version",
            Info::new(vec![("version".to_string(), version.to_string())]),
        );
        registry.register_collector(Box::new(Live { board, acts: Arc::clone(&acts) }));
        Metrics { registry, acts }
    }

    /// Forgets the series of every guest `keep` says no to (guests gone from the map: a
    /// migrated guest's series end rather than stay at their last values).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut acts = lock(&self.acts);
        acts.actions.retain(|(g, _), _| keep(g));
        acts.evicted.retain(|g, _| keep(g));
        acts.capped.retain(|g, _| keep(g));
        acts.quota.retain(|g, _| keep(g));
    }

    /// Counts an action on a guest (`ctguard_actions_total{guest,action}`).
    pub fn acted(&self, guest: &str, action: Action) {
        *lock(&self.acts).actions.entry((guest.to_string(), action)).or_default() += 1;
    }

    /// Counts flows of a guest evicted (`ctguard_evicted_total{guest}`).
    pub fn evicted(&self, guest: &str, flows: u64) {
        let mut acts = lock(&self.acts);
        let n = acts.evicted.entry(guest.to_string()).or_default();
        *n = n.saturating_add(flows);
    }

    /// Whether a guest is capped now (`ctguard_capped{guest}`, 0 or 1).
    pub fn capped(&self, guest: &str, on: bool) {
        lock(&self.acts).capped.insert(guest.to_string(), on);
    }

    /// A guest's quota in entries (`ctguard_quota_entries{guest}`).
    pub fn quota(&self, guest: &str, entries: u64) {
        lock(&self.acts).quota.insert(guest.to_string(), entries);
    }

    /// The OpenMetrics text exposition (ends in `# EOF`).
    pub fn encode(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::text::encode(out, &self.registry)
    }

    /// The Prometheus text format 0.0.4, for a scraper that does not ask for OpenMetrics.
    pub fn encode_prometheus(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::prometheus_text::encode(out, &self.registry)
    }
}

/// One family: its descriptor, then each series.
fn family<'a, L: EncodeLabelSet + 'a, M: EncodeMetric + 'a>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (L, M)>,
) -> std::fmt::Result {
    let mut fam = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in series {
        metric.encode(fam.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One family of one unlabelled series.
fn single(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> std::fmt::Result {
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn gauge(v: u64) -> ConstGauge<u64> {
    ConstGauge::new(v)
}

/// The live families of a snapshot.
fn encode_seen(enc: &mut DescriptorEncoder<'_>, seen: &Seen) -> std::fmt::Result {
    let name = |g: Option<u32>| match g {
        Some(id) => seen.guests.get(id as usize).map_or("?", String::as_str),
        None => NO_GUEST,
    };
    // Every guest of the snapshot (and the flows of none) × every column, zero or not: a
    // series that goes to zero stays, rather than going stale, and the set is bounded by the
    // guests whatever the table holds.
    let mut rows: BTreeMap<&str, [u64; COLUMNS]> = BTreeMap::new();
    for g in (0..seen.guests.len() as u32).map(Some).chain([None]) {
        rows.insert(name(g), [0; COLUMNS]);
    }
    for (g, row) in &seen.rows {
        let cols = rows.entry(name(*g)).or_insert([0; COLUMNS]);
        for (c, n) in row.by_state.iter().enumerate() {
            cols[c] = cols[c].saturating_add(*n);
        }
    }
    family(
        enc,
        "ctguard_entries",
        "Live conntrack entries per guest and state, as the guard counts them.",
        MetricType::Gauge,
        rows.iter().flat_map(|(guest, cols)| {
            cols.iter()
                .enumerate()
                .map(move |(c, n)| ([("guest", *guest), ("state", column_name(c))], gauge(*n)))
        }),
    )?;
    let help = "Guests the guard names: the guest file's and those found on the host.";
    single(enc, "ctguard_guests", help, gauge(seen.guests.len() as u64))?;
    if let Some(t) = seen.stats {
        let help = "Entries in the conntrack table (nf_conntrack_count).";
        single(enc, "ctguard_table_entries", help, gauge(u64::from(t.count)))?;
        let help = "The conntrack table's limit (nf_conntrack_max).";
        single(enc, "ctguard_table_limit", help, gauge(u64::from(t.max)))?;
    }
    if let Some(k) = seen.kernel {
        for (name, help, v) in [
            (
                "ctguard_kernel_drop",
                "Packets the kernel dropped for want of a conntrack entry (conntrack -S drop), summed over CPUs.",
                k.drop,
            ),
            (
                "ctguard_kernel_early_drop",
                "Unassured entries the kernel evicted to make room (conntrack -S early_drop), summed over CPUs.",
                k.early_drop,
            ),
            (
                "ctguard_kernel_insert_failed",
                "Entries the kernel failed to insert (conntrack -S insert_failed), summed over CPUs.",
                k.insert_failed,
            ),
            (
                "ctguard_kernel_chaintoolong",
                "Inserts refused for an over-long hash chain (conntrack -S chaintoolong), summed over CPUs.",
                k.chaintoolong,
            ),
        ] {
            single(enc, name, help, counter(u64::from(v)))?;
        }
    }
    let help = "Conntrack events the guard received.";
    single(enc, "ctguard_events", help, counter(seen.events))?;
    let help = "Times the kernel dropped events for the guard (ENOBUFS).";
    single(enc, "ctguard_event_overruns", help, counter(seen.overruns))?;
    let help = "Times the guard recounted the table from a dump, the first seed included.";
    single(enc, "ctguard_resyncs", help, counter(seen.resyncs))
}

impl Collector for Live {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let seen = self.board.latest();
        let synced = seen.as_ref().is_some_and(|s| s.synced);
        let help = "1 when the guard's counts agree with the kernel's; 0 before its first seed \
                    and while it resyncs.";
        single(&mut enc, "ctguard_synced", help, gauge(u64::from(synced)))?;
        // Before the first seed there is nothing true to say about the table: no family,
        // rather than a table of zeros.
        if let Some(seen) = &seen {
            encode_seen(&mut enc, seen)?;
        }
        let acts = lock(&self.acts);
        family(
            &mut enc,
            "ctguard_actions",
            "Actions the guard took, per guest and action.",
            MetricType::Counter,
            acts.actions
                .iter()
                .map(|((g, a), n)| ([("guest", g.as_str()), ("action", a.name())], counter(*n))),
        )?;
        family(
            &mut enc,
            "ctguard_evicted",
            "Flows the guard evicted, per guest.",
            MetricType::Counter,
            acts.evicted.iter().map(|(g, n)| ([("guest", g.as_str())], counter(*n))),
        )?;
        family(
            &mut enc,
            "ctguard_capped",
            "1 while the guard holds a ct count cap on the guest.",
            MetricType::Gauge,
            acts.capped.iter().map(|(g, on)| ([("guest", g.as_str())], gauge(u64::from(*on)))),
        )?;
        family(
            &mut enc,
            "ctguard_quota_entries",
            "The guest's quota, in entries.",
            MetricType::Gauge,
            acts.quota.iter().map(|(g, n)| ([("guest", g.as_str())], gauge(*n))),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{CpuStats, TableStats};
    use crate::tally::Row;

    fn row(cols: &[(usize, u64)]) -> Row {
        let mut r = Row::default();
        for (c, n) in cols {
            r.by_state[*c] += n;
            r.total += n;
        }
        r
    }

    fn seen() -> Seen {
        Seen {
            guests: vec!["web01".into(), "we\"ird\\na\nme".into()],
            rows: vec![(Some(0), row(&[(3, 240_000), (7, 5)])), (None, row(&[(11, 12)]))],
            stats: Some(TableStats { count: 240_017, max: 262_144 }),
            kernel: Some(CpuStats {
                drop: 7,
                early_drop: 3,
                insert_failed: 2,
                chaintoolong: 1,
                ..CpuStats::default()
            }),
            events: 1000,
            overruns: 1,
            resyncs: 2,
            synced: true,
            at_unix_ms: 1_700_000_000_000,
        }
    }

    fn text(m: &Metrics) -> String {
        let mut s = String::new();
        m.encode(&mut s).unwrap();
        s
    }

    #[test]
    fn issue_13_before_the_first_seed_no_table_only_synced_0() {
        let m = Metrics::new(Arc::new(Board::default()), "0.1.0");
        assert_eq!(
            text(&m),
            "# HELP ctguard_build The running ctguard's version.\n\
             # TYPE ctguard_build info\n\
             ctguard_build_info{version=\"0.1.0\"} 1\n\
             # HELP ctguard_synced 1 when the guard's counts agree with the kernel's; 0 before its first seed and while it resyncs.\n\
             # TYPE ctguard_synced gauge\n\
             ctguard_synced 0\n\
             # HELP ctguard_actions Actions the guard took, per guest and action.\n\
             # TYPE ctguard_actions counter\n\
             # HELP ctguard_evicted Flows the guard evicted, per guest.\n\
             # TYPE ctguard_evicted counter\n\
             # HELP ctguard_capped 1 while the guard holds a ct count cap on the guest.\n\
             # TYPE ctguard_capped gauge\n\
             # HELP ctguard_quota_entries The guest's quota, in entries.\n\
             # TYPE ctguard_quota_entries gauge\n\
             # EOF\n"
        );
    }

    #[test]
    fn issue_13_the_exposition_of_a_known_snapshot_and_actions() {
        let board = Arc::new(Board::default());
        board.publish(seen());
        let m = Metrics::new(Arc::clone(&board), "0.1.0");
        m.acted("web01", Action::Cap);
        m.acted("web01", Action::Evict);
        m.acted("web01", Action::Evict);
        m.evicted("web01", 1500);
        m.capped("web01", true);
        m.quota("web01", 131_072);
        let got = text(&m);
        let expected = include_str!("metrics_golden.txt");
        assert_eq!(got, expected, "\n{got}");
    }

    #[test]
    fn issue_13_series_are_bounded_by_the_guests() {
        let board = Arc::new(Board::default());
        let mut s = seen();
        s.guests = vec!["a".into(), "b".into()];
        // Many rows of the same guests (as a resync might leave) still make one series each.
        s.rows = (0..300)
            .map(|i| (if i % 3 == 0 { None } else { Some(i % 2) }, row(&[(3, 1)])))
            .collect();
        board.publish(s);
        let m = Metrics::new(board, "0.1.0");
        let t = text(&m);
        let entries = t.lines().filter(|l| l.starts_with("ctguard_entries{")).count();
        assert_eq!(entries, 3 * COLUMNS, "{t}");
        let est: u64 = t
            .lines()
            .filter(|l| l.starts_with("ctguard_entries{") && l.contains("ESTABLISHED"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(est, 300);
    }

    #[test]
    fn issue_14_a_departed_guests_series_end_and_the_guest_count_follows_the_map() {
        let board = Arc::new(Board::default());
        board.publish(seen());
        let m = Metrics::new(Arc::clone(&board), "0.1.0");
        for g in ["web01", "gone"] {
            m.acted(g, Action::Evict);
            m.evicted(g, 10);
            m.capped(g, true);
            m.quota(g, 5);
        }
        m.retain(|g| g != "gone");
        let t = text(&m);
        assert!(!t.contains("\"gone\""), "{t}");
        let tallies =
            t.lines().filter(|l| !l.starts_with("ctguard_entries") && l.contains("web01"));
        assert_eq!(tallies.count(), 4, "actions, evicted, capped, quota: {t}");
        assert!(t.contains("\nctguard_guests 2\n"), "{t}");
        let mut s = seen();
        s.guests.push("web-9".into());
        board.publish(s);
        assert!(text(&m).contains("\nctguard_guests 3\n"));
    }

    #[test]
    fn issue_13_prometheus_text_names_counters_with_total() {
        let board = Arc::new(Board::default());
        board.publish(seen());
        let m = Metrics::new(board, "0.1.0");
        let mut s = String::new();
        m.encode_prometheus(&mut s).unwrap();
        assert!(
            s.contains("# TYPE ctguard_kernel_drop_total counter\nctguard_kernel_drop_total 7\n"),
            "{s}"
        );
        assert!(!s.contains("# EOF"));
    }
}
