//! What `events` and `watch` print: `conntrack -E` lines, the JSON Lines records (wire format,
//! docs/json-schema.md).

use std::io::{self, Write};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::event::EventKind;
use crate::flow::Flow;
use crate::live::Resynced;
use crate::output::report::{Ranking, TallyReport};
use crate::output::{conntrack, json};
use crate::requester::Requester;
use crate::stats::Fill;

/// `2026-11-27T05:30:01.123456Z`.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// Writes one `conntrack -E -o timestamp` line: `[SECONDS.MICROS]\t    [NEW] tcp      6 ...`,
/// and for an event a process's request caused, what conntrack.c `event_cb` appends:
/// ` [USERSPACE] portid=N`, then ` progname=NAME` when the process was found (its control
/// characters escaped).
pub fn write_event_line(
    out: &mut impl Write,
    at: SystemTime,
    kind: EventKind,
    flow: &Flow,
    by: Option<&Requester>,
) -> io::Result<()> {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    // conntrack.c event_cb: "[%-.8ld.%-.6ld]\t", then libnetfilter_conntrack's "%9s " tag.
    write!(out, "[{}.{:06}]\t{:>9} ", since.as_secs(), since.subsec_micros(), kind.tag())?;
    conntrack::write_entry_now(out, flow)?;
    if let Some(r) = by {
        write!(out, " [USERSPACE] portid={}", r.portid)?;
        if let Some(name) = &r.progname {
            // Any process names itself (prctl, its file name): ESC or a newline in it must not
            // rewrite the screen or forge an event line.
            write!(out, " progname={}", crate::guests::escaped(name))?;
        }
    }
    out.write_all(b"\n")
}

/// Writes one event as a JSON line: `{"type":"new","time":"...","flow":{...}}`, with
/// `"portid":N` and `"progname":"NAME"` after `time` as [`write_event_line`] prints them.
/// `scratch` is reused between calls.
pub fn write_event_json(
    out: &mut impl Write,
    scratch: &mut Vec<u8>,
    at: SystemTime,
    kind: EventKind,
    flow: &Flow,
    by: Option<&Requester>,
) -> io::Result<()> {
    scratch.clear();
    json::write_flow(scratch, flow)?;
    while scratch.last() == Some(&b'\n') {
        scratch.pop();
    }
    write!(out, "{{\"type\":\"{}\",\"time\":\"{}\",", kind.name(), timestamp(at))?;
    if let Some(r) = by {
        write!(out, "\"portid\":{},", r.portid)?;
        if let Some(name) = &r.progname {
            write!(out, "\"progname\":{},", serde_json::Value::from(name.as_str()))?;
        }
    }
    out.write_all(b"\"flow\":")?;
    out.write_all(scratch)?;
    out.write_all(b"}\n")
}

/// Events the kernel dropped because our receive buffer was full.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Lost {
    /// Always `lost`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the loss was noticed.
    pub time: String,
    /// Overruns (ENOBUFS) so far, this one included.
    pub overruns: u64,
    /// Events dropped so far, when the kernel reports it (`SO_MEMINFO`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lost_events: Option<u64>,
}

impl Lost {
    /// A record for now.
    pub fn new(overruns: u64, lost_events: Option<u64>) -> Lost {
        Lost { kind: "lost".into(), time: timestamp(SystemTime::now()), overruns, lost_events }
    }
}

/// The last record of `events --json`: what was shown and what the kernel dropped in all,
/// read from the socket's drop counter when stopping (drops after the last ENOBUFS are in it:
/// the kernel raises ENOBUFS once per congestion, not once per dropped event).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct End {
    /// Always `end`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When `events` stopped.
    pub time: String,
    /// Events printed (of the selection).
    pub events: u64,
    /// Overruns (ENOBUFS) in all.
    pub overruns: u64,
    /// Events the kernel dropped in all (`SO_MEMINFO` drops), when the kernel reports it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lost_events: Option<u64>,
}

impl End {
    /// A record for now.
    pub fn new(events: u64, overruns: u64, lost_events: Option<u64>) -> End {
        End {
            kind: "end".into(),
            time: timestamp(SystemTime::now()),
            events,
            overruns,
            lost_events,
        }
    }
}

/// A resync: the counts were rebuilt from a fresh dump.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Resync {
    /// Always `resync`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it finished.
    pub time: String,
    /// `start`, `overrun` or `reconcile`.
    pub reason: String,
    /// Selected flows held after it.
    pub matched: u64,
    /// Flows the count changed by, against the event-kept count it replaced (0 at start):
    /// what events had missed.
    pub corrected: i64,
    /// Events received while the dump ran, applied on top of it.
    pub replayed: u64,
    /// How long the dump and replay took, in milliseconds.
    pub took_ms: u64,
}

impl Resync {
    /// The record of a resync the live engine did, finished now.
    pub fn of(r: &Resynced) -> Resync {
        Resync {
            kind: "resync".into(),
            time: timestamp(SystemTime::now()),
            reason: r.reason.name().into(),
            matched: r.matched,
            corrected: r.corrected,
            replayed: r.replayed,
            took_ms: r.took.as_millis() as u64,
        }
    }
}

/// Event rates over the last interval (the live engine measures them).
pub use crate::live::Rates;

/// What a `watch` snapshot says besides its tally: the live engine's figures. One struct for
/// the owned [`Snapshot`] and the borrowed [`SnapshotOf`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LiveStatus {
    /// Rates over the last interval.
    pub rates: Rates,
    /// Events received since the start, all kinds, before the selection.
    pub events: u64,
    /// Overruns so far (each followed by a resync).
    pub overruns: u64,
    /// Resyncs so far (start, overrun, reconcile).
    pub resyncs: u64,
    /// False while a resync is pending or running, or while the held count disagrees with
    /// the table's entry count beyond churn: the counts may be off.
    pub synced: bool,
    /// Why not synced: `start`, `overrun`, `reconcile` or `mismatch` (the resync pending or
    /// running, or a disagreement with the table's entry count); only when `synced` is false.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

/// The keys of a snapshot that are [`LiveStatus`]'s.
const STATUS_KEYS: [&str; 6] = ["rates", "events", "overruns", "resyncs", "synced", "reason"];

/// One `watch --json` snapshot: `type` and `time`, then the fields of a [`TallyReport`] and
/// those of a [`LiveStatus`], flat in one object. Not `#[serde(flatten)]`: serde refuses
/// `deny_unknown_fields` with it, and the schema tests need unknown fields refused. Written
/// field by field (`write_snapshot`), read by splitting the object's keys between the two.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// When it was taken.
    pub time: String,
    /// The counts: fill, grouping, matched, groups.
    pub report: TallyReport,
    /// The engine's figures.
    pub status: LiveStatus,
}

impl Snapshot {
    /// A snapshot of a tally report, now.
    pub fn new(report: TallyReport, status: LiveStatus) -> Self {
        Snapshot { time: timestamp(SystemTime::now()), report, status }
    }
}

/// A snapshot's fields in their documented order.
#[allow(clippy::too_many_arguments)]
fn write_snapshot<S: serde::Serializer>(
    s: S,
    time: &str,
    table: Option<&Fill>,
    by: &str,
    matched: u64,
    groups: &impl Serialize,
    more_groups: Option<u64>,
    status: &LiveStatus,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("Snapshot", 13)?;
    st.serialize_field("type", "snapshot")?;
    st.serialize_field("time", time)?;
    if let Some(t) = table {
        st.serialize_field("table", t)?;
    }
    st.serialize_field("by", by)?;
    st.serialize_field("matched", &matched)?;
    st.serialize_field("groups", groups)?;
    if let Some(n) = more_groups {
        st.serialize_field("more_groups", &n)?;
    }
    st.serialize_field("rates", &status.rates)?;
    st.serialize_field("events", &status.events)?;
    st.serialize_field("overruns", &status.overruns)?;
    st.serialize_field("resyncs", &status.resyncs)?;
    st.serialize_field("synced", &status.synced)?;
    if let Some(reason) = &status.reason {
        st.serialize_field("reason", reason)?;
    }
    st.end()
}

impl Serialize for Snapshot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = &self.report;
        let (table, groups) = (r.table.as_ref(), &r.groups);
        write_snapshot(s, &self.time, table, &r.by, r.matched, groups, r.more_groups, &self.status)
    }
}

impl<'de> Deserialize<'de> for Snapshot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        use serde_json::{Map, Value};
        let mut fields = Map::<String, Value>::deserialize(d)?;
        if fields.remove("type") != Some(Value::from("snapshot")) {
            return Err(D::Error::custom("not a snapshot record (\"type\":\"snapshot\")"));
        }
        let Some(Value::String(time)) = fields.remove("time") else {
            return Err(D::Error::missing_field("time"));
        };
        let mut status = Map::new();
        for key in STATUS_KEYS {
            if let Some(v) = fields.remove(key) {
                status.insert(key.to_string(), v);
            }
        }
        // What is left is the report's: an unknown field is refused there.
        let status = LiveStatus::deserialize(Value::Object(status)).map_err(D::Error::custom)?;
        let report = TallyReport::deserialize(Value::Object(fields)).map_err(D::Error::custom)?;
        Ok(Snapshot { time, report, status })
    }
}

/// A `watch --json` snapshot written straight from a ranking of the live tally: the bytes a
/// [`Snapshot`] of the same counts prints, without a label and a state map owned per group.
pub struct SnapshotOf<'a> {
    /// The groups.
    pub ranking: &'a Ranking<'a>,
    /// The engine's figures.
    pub status: LiveStatus,
}

impl Serialize for SnapshotOf<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.ranking;
        let time = timestamp(SystemTime::now());
        let groups = r.groups();
        let (by, matched) = (r.by(), r.matched());
        write_snapshot(s, &time, r.table(), &by, matched, &groups, r.more_groups(), &self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Status, TcpState, test_tcp};
    use crate::output::report::Group;

    fn syn() -> Flow {
        let f = test_tcp("172.16.3.5", "10.0.0.1", 40000, 80, TcpState::SynSent);
        Flow { status: Status(0), timeout: Some(120), mark: None, id: Some(7), ..f }
    }

    #[test]
    fn event_line_is_conntrack_e_with_timestamp() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_764_221_239_000_042);
        let mut out = Vec::new();
        write_event_line(&mut out, at, EventKind::New, &syn(), None).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[1764221239.000042]\t    [NEW] tcp      6 120 SYN_SENT src=172.16.3.5 dst=10.0.0.1 \
             sport=40000 dport=80 [UNREPLIED] src=10.0.0.1 dst=172.16.3.5 sport=80 dport=40000\n"
        );
    }

    #[test]
    fn issue_16_7_an_event_a_process_caused_names_it_as_conntrack_e_does() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_764_221_239_000_042);
        let named = Requester { portid: 3748, progname: Some("conntrack".into()) };
        let gone = Requester { portid: 3_145_348_193, progname: None };
        let line = |by| {
            let mut out = Vec::new();
            write_event_line(&mut out, at, EventKind::New, &syn(), by).unwrap();
            String::from_utf8(out).unwrap()
        };
        let plain = line(None);
        let head = plain.trim_end();
        assert_eq!(
            line(Some(&named)),
            format!("{head} [USERSPACE] portid=3748 progname=conntrack\n")
        );
        assert_eq!(line(Some(&gone)), format!("{head} [USERSPACE] portid=3145348193\n"));
        let json = |by| {
            let (mut out, mut scratch) = (Vec::new(), Vec::new());
            write_event_json(&mut out, &mut scratch, at, EventKind::New, &syn(), by).unwrap();
            serde_json::from_slice::<serde_json::Value>(&out).unwrap()
        };
        let v = json(Some(&named));
        assert_eq!((v["portid"].as_u64(), v["progname"].as_str()), (Some(3748), Some("conntrack")));
        assert_eq!(v["flow"]["orig"]["src"], "172.16.3.5");
        let v = json(Some(&gone));
        assert_eq!((v["portid"].as_u64(), v.get("progname")), (Some(3_145_348_193), None));
        let v = json(None);
        assert_eq!((v.get("portid"), v.get("progname")), (None, None), "the kernel's own event");
    }

    #[test]
    fn issue_16_7_a_hostile_program_name_cannot_forge_a_line_or_drive_the_terminal() {
        let at = SystemTime::UNIX_EPOCH;
        let name = "\x1b[2J\nFAKE\x1b]0;x\x07";
        let by = Requester { portid: 7, progname: Some(name.into()) };
        let mut out = Vec::new();
        write_event_line(&mut out, at, EventKind::New, &syn(), Some(&by)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
        assert!(!text.chars().any(|c| c.is_control() && c != '\t' && c != '\n'), "{text:?}");
        assert!(text.ends_with(" progname=\\u{1b}[2J\\nFAKE\\u{1b}]0;x\\u{7}\n"), "{text:?}");
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        write_event_json(&mut out, &mut scratch, at, EventKind::New, &syn(), Some(&by)).unwrap();
        assert_eq!(out.iter().filter(|b| b.is_ascii_control()).count(), 1, "JSON escapes it");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["progname"].as_str(), Some(name), "JSON keeps the name exactly");
    }

    #[test]
    fn event_json_wraps_the_flow_object() {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        write_event_json(
            &mut out,
            &mut scratch,
            SystemTime::now(),
            EventKind::Destroy,
            &syn(),
            None,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "destroy");
        assert_eq!(v["flow"]["orig"]["src"], "172.16.3.5");
        assert_eq!(v["flow"]["state"], "SYN_SENT");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
    }

    #[test]
    fn issue_9_11_a_snapshot_of_a_ranking_prints_the_bytes_of_a_snapshot() {
        use crate::guests::GuestMap;
        use crate::tally::{GroupBy, Tally};
        let mut t = Tally::new(GroupBy::Src, GuestMap::new());
        for i in 0..50u16 {
            t.add(&test_tcp(&format!("172.16.3.{}", i % 7), "10.0.0.1", i, 80, TcpState::SynSent));
        }
        let rates = Rates { new_per_s: 1.5, destroy_per_s: 0.0, events_per_s: 3.0 };
        let fill = Fill { count: 50, max: 100, fill_percent: 50.0, buckets: None };
        for (limit, reason) in [(None, None), (Some(3), Some("mismatch"))] {
            let ranking = Ranking::new(&t, Some(fill.clone()), limit);
            let reason = reason.map(str::to_string);
            let synced = reason.is_none();
            let status = LiveStatus { rates, events: 9, overruns: 1, resyncs: 2, synced, reason };
            let snap = Snapshot::new(ranking.report(), status.clone());
            let of = SnapshotOf { ranking: &ranking, status };
            let mut got: serde_json::Value = serde_json::to_value(&of).unwrap();
            let mut want: serde_json::Value = serde_json::to_value(&snap).unwrap();
            // Taken a moment apart.
            got["time"] = "t".into();
            want["time"] = "t".into();
            assert_eq!(serde_json::to_string(&got).unwrap(), serde_json::to_string(&want).unwrap());
            let back: Snapshot = serde_json::from_value(got).unwrap();
            assert_eq!(back.report.groups, snap.report.groups);
        }
    }

    /// The incident's runaway and one ordinary guest, as `watch --by src` shows them.
    fn runaway() -> Snapshot {
        let group = |key: &str, states: &[(&str, u64)]| {
            let entries = states.iter().map(|(_, n)| n).sum();
            Group {
                key: key.into(),
                entries,
                share_percent: (entries as f64 * 1000.0 / 258_540.0).round() / 10.0,
                states: states.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            }
        };
        let report = TallyReport {
            table: Some(Fill { count: 258_540, max: 262_144, fill_percent: 98.6, buckets: None }),
            by: "src".into(),
            matched: 240_089,
            groups: vec![
                group("172.16.3.5", &[("ESTABLISHED", 240_000)]),
                group(
                    "172.16.2.10",
                    &[
                        ("SYN_SENT", 5),
                        ("ESTABLISHED", 28),
                        ("CLOSE_WAIT", 1),
                        ("LAST_ACK", 1),
                        ("TIME_WAIT", 47),
                        ("CLOSE", 7),
                    ],
                ),
            ],
            more_groups: None,
        };
        let rates = Rates { new_per_s: 12_345.0, destroy_per_s: 23_456.0, events_per_s: 98_765.0 };
        let status = LiveStatus {
            rates,
            events: 1_234_567,
            overruns: 3,
            resyncs: 4,
            synced: true,
            reason: None,
        };
        Snapshot::new(report, status)
    }

    #[test]
    fn issue_11_6_a_snapshot_is_a_tally_report_and_a_status_on_one_flat_line() {
        let snap = runaway();
        let line = serde_json::to_string(&snap).unwrap();
        let report = serde_json::to_value(&snap.report).unwrap();
        let status = serde_json::to_value(&snap.status).unwrap();
        let flat: serde_json::Value = serde_json::from_str(&line).unwrap();
        for (k, v) in report.as_object().unwrap().iter().chain(status.as_object().unwrap()) {
            assert_eq!(&flat[k], v, "{k}");
        }
        let halves = report.as_object().unwrap().len() + status.as_object().unwrap().len();
        assert_eq!(flat.as_object().unwrap().len(), 2 + halves, "type, time, and the halves");
        assert_eq!(serde_json::from_str::<Snapshot>(&line).unwrap(), snap);
        // Refused: another record's type, an unknown field (in either half), a missing one.
        for bad in [
            line.replace("\"type\":\"snapshot\"", "\"type\":\"resync\""),
            line.replace("\"synced\":true", "\"synced\":true,\"exact\":true"),
            line.replace("\"by\":\"src\"", "\"by\":\"src\",\"by_guest\":1"),
            line.replace(",\"synced\":true", ""),
            line.replace("\"matched\":240089,", ""),
        ] {
            assert_ne!(bad, line);
            assert!(serde_json::from_str::<Snapshot>(&bad).is_err(), "{bad}");
        }
    }
}
