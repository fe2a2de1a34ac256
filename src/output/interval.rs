//! What `stats --interval` prints each interval: the table's count and fill, and every
//! counter's rise and rise per second, as a JSON Lines object or a row of a vmstat-like table.

use std::collections::BTreeMap;
use std::io::{self, Write};

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::output::live::timestamp;
use crate::stats::{CounterWindow, Fill};

/// One interval of `stats --interval`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IntervalReport {
    /// When the reading that closed the interval was taken (RFC 3339, UTC, microseconds), as
    /// `events` and `watch` stamp their lines.
    pub time: String,
    /// The interval's real length in seconds (monotonic clock, to the microsecond): what the
    /// rises are divided by.
    pub seconds: f64,
    /// Count, max, fill, buckets at the end of the interval.
    pub table: Fill,
    /// How many CPUs reported.
    pub cpus: usize,
    /// How much each counter rose over the interval, summed over CPUs (the kernel's u32
    /// counters wrap; a wrap is counted through).
    pub delta: BTreeMap<String, u64>,
    /// `delta / seconds`, to a thousandth.
    pub per_second: BTreeMap<String, f64>,
}

impl IntervalReport {
    /// The report of one window closed `at`, with the fill read at its end.
    pub fn new(at: SystemTime, table: Fill, w: &CounterWindow) -> IntervalReport {
        IntervalReport {
            time: timestamp(at),
            seconds: (w.seconds * 1e6).round() / 1e6,
            table,
            cpus: w.cpus,
            delta: w.rise().fields().iter().map(|(k, v)| (k.to_string(), u64::from(*v))).collect(),
            per_second: w
                .per_second()
                .iter()
                .map(|(k, v)| (k.to_string(), (v * 1000.0).round() / 1000.0))
                .collect(),
        }
    }
}

/// The table's leading columns, then one per counter in `conntrack -S` order.
const LEADING: [(&str, usize); 3] = [("count", 8), ("max", 8), ("fill%", 6)];
/// A counter's column is at least this wide (its name may be wider).
const COUNTER_WIDTH: usize = 6;

/// The rows of `stats --interval`: rates per second, right-aligned under their counter's
/// name; the heading again every `repeat` rows (on a terminal, where the first one scrolls
/// away), or once.
pub struct IntervalTable {
    repeat: Option<usize>,
    rows: usize,
}

impl IntervalTable {
    /// A table that repeats its heading every `repeat` rows, or never.
    pub fn new(repeat: Option<usize>) -> IntervalTable {
        IntervalTable { repeat, rows: 0 }
    }

    /// Writes one row, after the heading when one is due.
    pub fn write(&mut self, out: &mut impl Write, r: &IntervalReport) -> io::Result<()> {
        let due = match self.repeat {
            Some(n) => self.rows.is_multiple_of(n.max(1)),
            None => self.rows == 0,
        };
        if due {
            write_heading(out)?;
        }
        self.rows += 1;
        let t = &r.table;
        let leading = [t.count.to_string(), t.max.to_string(), format!("{:.1}", t.fill_percent)];
        let mut line: Vec<String> =
            LEADING.iter().zip(leading).map(|((_, w), v)| format!("{v:>w$}")).collect();
        for (name, _) in crate::stats::CpuStats::default().fields() {
            let rate = r.per_second.get(name).copied().unwrap_or(0.0);
            line.push(format!("{:>w$}", rate_text(rate), w = name.len().max(COUNTER_WIDTH)));
        }
        writeln!(out, "{}", line.join(" "))
    }
}

fn write_heading(out: &mut impl Write) -> io::Result<()> {
    let mut line: Vec<String> = LEADING.iter().map(|(name, w)| format!("{name:>w$}")).collect();
    for (name, _) in crate::stats::CpuStats::default().fields() {
        line.push(format!("{name:>w$}", w = name.len().max(COUNTER_WIDTH)));
    }
    writeln!(out, "{}", line.join(" "))
}

/// A rate as the table shows it: whole numbers from 10 a second, tenths from 1, hundredths
/// below (one drop a minute must not read as 0), and a plain 0 for none.
fn rate_text(rate: f64) -> String {
    if rate == 0.0 {
        "0".into()
    } else if rate < 1.0 {
        format!("{rate:.2}")
    } else if rate < 10.0 {
        format!("{rate:.1}")
    } else {
        format!("{rate:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{CpuStats, TableStats};

    fn report(drop: u32, seconds: f64) -> IntervalReport {
        let w = CounterWindow {
            before: CpuStats { drop: u32::MAX, insert: 7, ..CpuStats::default() },
            after: CpuStats {
                drop: drop.wrapping_sub(1),
                insert: 7,
                found: 3,
                ..CpuStats::default()
            },
            seconds,
            cpus: 2,
        };
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_796_274_601_123_456);
        IntervalReport::new(at, Fill::new(TableStats { count: 981, max: 1000 }, None), &w)
    }

    #[test]
    fn issue_16_6_json_states_the_deltas_the_time_and_the_rates() {
        let r = report(250, 2.0000004);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["time"], "2026-12-03T05:10:01.123456Z", "the reading's wall-clock time");
        assert_eq!(v["seconds"], 2.0);
        assert_eq!(v["delta"]["drop"], 250, "through the wrap");
        assert_eq!(v["delta"]["insert"], 0);
        assert_eq!(v["per_second"]["drop"], 125.0);
        assert_eq!(v["per_second"]["found"], 1.5);
        assert_eq!(v["table"]["fill_percent"], 98.1);
        assert_eq!(v["delta"].as_object().unwrap().len(), 10);
        assert_eq!(v["per_second"].as_object().unwrap().len(), 10);
        let back: IntervalReport = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, r);
        let mut extra = v;
        extra["surprise"] = 1.into();
        assert!(serde_json::from_value::<IntervalReport>(extra).is_err());
    }

    #[test]
    fn issue_16_6_text_is_a_table_with_its_heading_repeated_and_no_trailing_blanks() {
        let mut t = IntervalTable::new(Some(2));
        let mut out = Vec::new();
        for drop in [250, 0, 3] {
            t.write(&mut out, &report(drop, 1.0)).unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let heading = "   count      max  fill%  found invalid insert insert_failed   drop \
                       early_drop  error search_restart clash_resolve chaintoolong";
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0], heading);
        assert_eq!(
            lines[1],
            concat!(
                "     981     1000   98.1    3.0       0      0             0    250",
                "          0      0              0             0            0"
            )
        );
        assert_eq!(lines[3], heading, "again after two rows");
        assert!(lines[4].contains("    3.0 "), "{}", lines[4]);
        assert!(lines.iter().all(|l| l.len() == heading.len() && !l.ends_with(' ')));
        let mut once = IntervalTable::new(None);
        let mut out = Vec::new();
        for _ in 0..3 {
            once.write(&mut out, &report(1, 1.0)).unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap().matches("count").count(), 1);
    }

    #[test]
    fn rates_read_as_whole_numbers_from_10() {
        assert_eq!(rate_text(0.0), "0");
        assert_eq!(rate_text(1.0 / 60.0), "0.02");
        assert_eq!(rate_text(2.25), "2.2");
        assert_eq!(rate_text(99.6), "100");
    }
}
