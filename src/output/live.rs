//! What `events` and `watch` print: `conntrack -E` lines, the JSON Lines records (wire format,
//! docs/json-schema.md) and the terminal frame of `watch`.

use std::io::{self, Write};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::event::EventKind;
use crate::flow::Flow;
use crate::live::Resynced;
use crate::output::report::{Ranking, TallyReport};
use crate::output::{conntrack, json};
use crate::stats::Fill;

/// `2026-11-27T05:30:01.123456Z`.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// Writes one `conntrack -E -o timestamp` line: `[SECONDS.MICROS]\t    [NEW] tcp      6 ...`.
pub fn write_event_line(
    out: &mut impl Write,
    at: SystemTime,
    kind: EventKind,
    flow: &Flow,
) -> io::Result<()> {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    // conntrack.c event_cb: "[%-.8ld.%-.6ld]\t", then libnetfilter_conntrack's "%9s " tag.
    write!(out, "[{}.{:06}]\t{:>9} ", since.as_secs(), since.subsec_micros(), kind.tag())?;
    conntrack::write_line(out, flow)
}

/// Writes one event as a JSON line: `{"type":"new","time":"...","flow":{...}}`. `scratch` is
/// reused between calls.
pub fn write_event_json(
    out: &mut impl Write,
    scratch: &mut Vec<u8>,
    at: SystemTime,
    kind: EventKind,
    flow: &Flow,
) -> io::Result<()> {
    scratch.clear();
    json::write_flow(scratch, flow)?;
    while scratch.last() == Some(&b'\n') {
        scratch.pop();
    }
    write!(out, "{{\"type\":\"{}\",\"time\":\"{}\",\"flow\":", kind.name(), timestamp(at))?;
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

/// The header of a `watch` frame.
pub struct FrameHeader<'a> {
    /// First line: what is watched.
    pub title: &'a str,
    /// The snapshot.
    pub snapshot: &'a Snapshot,
    /// A marker line (overrun, resync), if any.
    pub marker: Option<&'a str>,
    /// A standing note (the `nf_conntrack_events` warning), if any.
    pub note: Option<&'a str>,
}

/// Parts of a status line, joined by three spaces: as many whole parts as fit in `cols`
/// (a part is a label and its number; neither is ever cut).
fn fit_parts(parts: &[String], cols: usize) -> String {
    let mut line = String::new();
    for p in parts {
        let sep = if line.is_empty() { 0 } else { 3 };
        if !line.is_empty() && line.chars().count() + sep + p.chars().count() > cols {
            break;
        }
        if sep > 0 {
            line.push_str("   ");
        }
        line.push_str(p);
    }
    line
}

/// `line` cut to `cols` characters, at a space when there is one: a word (a number) is left
/// out whole, never cut.
fn fit_words(line: &str, cols: usize) -> &str {
    let Some((cut, next)) = line.char_indices().nth(cols) else {
        return line;
    };
    let head = &line[..cut];
    if next == ' ' {
        return head.trim_end();
    }
    match head.rfind(' ') {
        Some(i) => head[..i].trim_end(),
        None => head,
    }
}

/// Draws one `watch` frame for a terminal of `rows` lines and `cols` columns, without flicker:
/// cursor home, each line fitted to the width (a wrapped line would scroll) and followed by
/// clear-to-end-of-line, then clear-to-end-of-screen, written at once. Numbers are never cut:
/// the status lines keep whole parts, the group table narrows as
/// [`TallyReport::write_text_within`] says (short state headings, then no SHARE, then the
/// state columns with the fewest flows go, then labels are cut), other lines are cut at a
/// space.
pub fn write_frame(
    out: &mut impl Write,
    h: &FrameHeader<'_>,
    rows: usize,
    cols: usize,
) -> io::Result<()> {
    let (s, report) = (&h.snapshot.status, &h.snapshot.report);
    let cols = cols.max(1);
    let mut text = Vec::with_capacity(8 << 10);
    writeln!(text, "{}", fit_words(h.title, cols))?;
    let table = match &report.table {
        Some(t) => format!("table: {} of {} entries ({:.1}% full)", t.count, t.max, t.fill_percent),
        None => "table: ?".to_string(),
    };
    let rates = [
        table,
        format!("new/s {:.0}", s.rates.new_per_s),
        format!("destroy/s {:.0}", s.rates.destroy_per_s),
        format!("events/s {:.0}", s.rates.events_per_s),
    ];
    writeln!(text, "{}", fit_parts(&rates, cols))?;
    let sync = match (s.synced, s.reason.as_deref()) {
        (true, _) => "in sync".to_string(),
        (false, Some("mismatch")) => {
            "OUT OF SYNC: the counts disagree with the table's entry count".to_string()
        }
        (false, Some(r)) => format!("RESYNCING ({r}): counts may be off"),
        (false, None) => "RESYNCING: counts may be off".to_string(),
    };
    let status = [format!("overruns {}", s.overruns), format!("resyncs {}", s.resyncs), sync];
    writeln!(text, "{}", fit_parts(&status, cols))?;
    if let Some(note) = h.note {
        writeln!(text, "{}", fit_words(note, cols))?;
    }
    writeln!(text, "{}", fit_words(h.marker.unwrap_or(""), cols))?;
    // The fill is the status line's; the table below goes without it.
    let report = TallyReport { table: None, ..report.clone() };
    report.write_text_within(&mut text, true, Some(cols))?;
    let mut frame = Vec::with_capacity(text.len() + rows * 4 + 16);
    frame.extend_from_slice(b"\x1b[H");
    for (i, line) in String::from_utf8_lossy(&text).lines().take(rows.max(1)).enumerate() {
        if i > 0 {
            frame.push(b'\n');
        }
        // Only a table too wide for even its narrowest form (a tiny terminal) is cut here.
        frame.extend_from_slice(fit_words(line, cols).as_bytes());
        frame.extend_from_slice(b"\x1b[K");
    }
    frame.extend_from_slice(b"\x1b[J");
    out.write_all(&frame)?;
    out.flush()
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
        write_event_line(&mut out, at, EventKind::New, &syn()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[1764221239.000042]\t    [NEW] tcp      6 120 SYN_SENT src=172.16.3.5 dst=10.0.0.1 \
             sport=40000 dport=80 [UNREPLIED] src=10.0.0.1 dst=172.16.3.5 sport=80 dport=40000\n"
        );
    }

    #[test]
    fn event_json_wraps_the_flow_object() {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        write_event_json(&mut out, &mut scratch, SystemTime::now(), EventKind::Destroy, &syn())
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

    fn frame_lines(snap: &Snapshot, cols: usize) -> Vec<String> {
        let header = FrameHeader {
            title: "ctguard watch: by src, every 1s, reconcile 30s (Ctrl-C quits)",
            snapshot: snap,
            marker: Some("OVERRUN at 2026-11-27T05:36:10.000001Z: 19591 events lost so far"),
            note: None,
        };
        let mut out = Vec::new();
        write_frame(&mut out, &header, 24, cols).unwrap();
        let text = String::from_utf8(out).unwrap();
        text.trim_start_matches("\x1b[H")
            .trim_end_matches("\x1b[J")
            .split('\n')
            .map(|l| l.trim_end_matches("\x1b[K").to_string())
            .collect()
    }

    #[test]
    fn issue_9_13_a_60_column_frame_drops_columns_and_never_cuts_a_number() {
        let snap = runaway();
        let wide = frame_lines(&snap, 1_000);
        let narrow = frame_lines(&snap, 60);
        let numbers = |lines: &[String]| -> Vec<String> {
            let mut v: Vec<String> = lines
                .iter()
                .flat_map(|l| l.split(|c: char| !c.is_ascii_digit() && c != '.'))
                .filter(|w| w.chars().any(|c| c.is_ascii_digit()))
                .map(str::to_string)
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let all = numbers(&wide);
        assert!(all.contains(&"240000".to_string()) && all.contains(&"98765".to_string()));
        for n in numbers(&narrow) {
            assert!(all.contains(&n), "{n:?} is not a number of the wide frame: {narrow:#?}");
        }
        for l in &narrow {
            assert!(l.chars().count() <= 60, "{} columns: {l:?}", l.chars().count());
        }
        // The runaway's row keeps its entries and its ESTABLISHED column, whole.
        let row = narrow.iter().find(|l| l.starts_with(" 172.16.3.5 ")).expect("runaway row");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[..2], ["172.16.3.5", "240000"], "{narrow:#?}");
        let head = narrow.iter().find(|l| l.starts_with(" SRC ")).expect("table header");
        let est = head.split_whitespace().position(|h| h == "ESTAB").expect("ESTAB column");
        assert_eq!(cells[est], "240000", "{head:?} / {row:?}");
        // The status lines keep whole parts: the fill and the new rate, not a cut one.
        assert_eq!(narrow[1], "table: 258540 of 262144 entries (98.6% full)   new/s 12345");
        // A wide terminal shows everything, as `top` prints it.
        assert!(wide.iter().any(|l| l.contains(" ESTABLISHED ") && l.contains(" SHARE ")));
        assert!(wide.iter().any(|l| l.starts_with(" 172.16.2.10 ") && l.contains("  47 ")));
    }

    #[test]
    fn frame_redraws_in_place_within_the_terminal() {
        let report = TallyReport {
            table: Some(Fill { count: 3, max: 100, fill_percent: 3.0, buckets: None }),
            by: "src".into(),
            matched: 3,
            groups: (1..=3)
                .map(|i| Group {
                    key: format!("172.16.3.{i}"),
                    entries: 1,
                    share_percent: 33.3,
                    states: [("ESTABLISHED".to_string(), 1)].into(),
                })
                .collect(),
            more_groups: None,
        };
        let rates = Rates { new_per_s: 1.0, destroy_per_s: 0.0, events_per_s: 1.0 };
        let status =
            LiveStatus { rates, events: 5, overruns: 1, resyncs: 2, synced: false, reason: None };
        let snap = Snapshot::new(report, status);
        let header = FrameHeader {
            title: "a title that is longer than twenty columns",
            snapshot: &snap,
            marker: Some("OVERRUN"),
            note: None,
        };
        let mut out = Vec::new();
        write_frame(&mut out, &header, 8, 20).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("\x1b[H") && text.ends_with("\x1b[J"), "{text:?}");
        let lines: Vec<&str> = text.trim_start_matches("\x1b[H").split('\n').collect();
        assert_eq!(lines.len(), 8, "cut to the terminal's height: {lines:?}");
        for l in &lines[..7] {
            assert!(l.ends_with("\x1b[K"), "each line clears its rest: {l:?}");
            assert!(l.trim_end_matches("\x1b[K").chars().count() <= 20, "cut to the width: {l:?}");
        }
        assert_eq!(lines[0], "a title that is\x1b[K", "cut at a space");
        assert_eq!(lines[2], "overruns 1\x1b[K", "whole parts only");
        assert_eq!(lines[3], "OVERRUN\x1b[K");
    }
}
