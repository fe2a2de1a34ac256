//! The documents `top`, `count` and `stats` print: serde types for `--json`, aligned tables
//! for people. The JSON shapes are wire format (README "JSON output"); tests pin them.

use std::io::{self, Write};

use comfy_table::{CellAlignment, Table, presets};
use serde::{Deserialize, Serialize};

use crate::ctnetlink::{CpuStats, TableStats};
use crate::tally::{COLUMNS, Tally, column_name};

/// Table fill: count, max, buckets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fill {
    /// Entries in the namespace.
    pub count: u32,
    /// The global `nf_conntrack_max`.
    pub max: u32,
    /// count / max, in percent.
    pub fill_percent: f64,
    /// Hash buckets (`nf_conntrack_buckets`), when readable.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub buckets: Option<u64>,
}

impl Fill {
    /// From the kernel's stats and the bucket sysctl.
    pub fn new(s: TableStats, buckets: Option<u64>) -> Fill {
        let fill_percent =
            if s.max == 0 { 0.0 } else { (s.count as f64 * 1000.0 / s.max as f64).round() / 10.0 };
        Fill { count: s.count, max: s.max, fill_percent, buckets }
    }
}

/// One group of a tally.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// The group: guest name, address, network, state, protocol, zone or mark.
    pub key: String,
    /// Flows in the group.
    pub entries: u64,
    /// Share of the matched flows, in percent.
    pub share_percent: f64,
    /// Flows per state (TCP state names, `TCP_OTHER`, `NON_TCP`); zero counts are left out.
    pub states: std::collections::BTreeMap<String, u64>,
}

/// What `top` and `count --by` print.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TallyReport {
    /// The table's fill (`top` only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub table: Option<Fill>,
    /// The grouping (`guest`, `src`, `src/24,64`, `state`, ...).
    pub by: String,
    /// Flows that matched the selection.
    pub matched: u64,
    /// Groups, largest first.
    pub groups: Vec<Group>,
    /// Groups left out by `-n` (`top` only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub more_groups: Option<u64>,
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { (part as f64 * 1000.0 / whole as f64).round() / 10.0 }
}

impl TallyReport {
    /// The `limit` largest groups of a tally.
    pub fn new(tally: &Tally, table: Option<Fill>, limit: Option<usize>) -> TallyReport {
        let matched = tally.total().total;
        let rows = tally.sorted();
        let shown = limit.unwrap_or(rows.len()).min(rows.len());
        let groups = rows[..shown]
            .iter()
            .map(|(key, row)| Group {
                key: tally.label(key),
                entries: row.total,
                share_percent: pct(row.total, matched),
                states: (0..COLUMNS)
                    .filter(|c| row.by_state[*c] > 0)
                    .map(|c| (column_name(c).to_string(), row.by_state[c]))
                    .collect(),
            })
            .collect();
        TallyReport {
            table,
            by: tally.by().name(),
            matched,
            groups,
            more_groups: limit.map(|_| (rows.len() - shown) as u64),
        }
    }

    /// The aligned text form; `states` adds the per-state columns.
    pub fn write_text(&self, out: &mut impl Write, states: bool) -> io::Result<()> {
        if let Some(t) = &self.table {
            writeln!(out, "{}", fill_line(t))?;
        }
        let mut columns: Vec<&str> = Vec::new();
        if states {
            for c in 0..COLUMNS {
                let name = column_name(c);
                if self.groups.iter().any(|g| g.states.contains_key(name)) {
                    columns.push(name);
                }
            }
        }
        let mut table = Table::new();
        table.load_style(presets::NOTHING);
        let mut header = vec![self.by.to_uppercase(), "ENTRIES".into(), "SHARE".into()];
        header.extend(columns.iter().map(|c| c.to_string()));
        table.set_header(header);
        for g in &self.groups {
            // Guest names are free text: escaped here, raw in JSON (which escapes by itself).
            let key = crate::guests::escaped(&g.key).into_owned();
            let mut row = vec![key, g.entries.to_string(), format!("{:.1}%", g.share_percent)];
            row.extend(columns.iter().map(|c| g.states.get(*c).copied().unwrap_or(0).to_string()));
            table.add_row(row);
        }
        for i in 1..3 + columns.len() {
            if let Some(col) = table.column_mut(i) {
                col.set_cell_alignment(CellAlignment::Right);
            }
        }
        write_table(out, &table)?;
        match self.more_groups {
            Some(n) if n > 0 => {
                writeln!(out, "({} matched flows; {n} more groups not shown)", self.matched)
            }
            _ => writeln!(out, "({} matched flows)", self.matched),
        }
    }
}

/// Writes a table line by line without the trailing blanks comfy-table pads the last column
/// with: no line of text output ends in a space (they break `diff`, copy-paste and tests).
fn write_table(out: &mut impl Write, table: &Table) -> io::Result<()> {
    for line in table.lines() {
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn fill_line(t: &Fill) -> String {
    let buckets = t.buckets.map(|b| format!(", {b} buckets")).unwrap_or_default();
    format!("table: {} of {} entries ({:.1}% full){buckets}", t.count, t.max, t.fill_percent)
}

/// What `stats` prints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StatsReport {
    /// Count, max, fill, buckets.
    pub table: Fill,
    /// The per-CPU counters summed over every CPU.
    pub counters: std::collections::BTreeMap<String, u64>,
    /// How many CPUs reported.
    pub cpus: usize,
    /// Each CPU's counters (with `--per-cpu`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub per_cpu: Option<Vec<std::collections::BTreeMap<String, u64>>>,
}

fn counter_map(s: &CpuStats) -> std::collections::BTreeMap<String, u64> {
    s.fields().iter().map(|(k, v)| (k.to_string(), *v as u64)).collect()
}

impl StatsReport {
    /// Sums the per-CPU counters.
    pub fn new(table: Fill, cpus: &[CpuStats], per_cpu: bool) -> StatsReport {
        let mut sum = CpuStats::default();
        for c in cpus {
            sum.add(c);
        }
        StatsReport {
            table,
            counters: counter_map(&sum),
            cpus: cpus.len(),
            per_cpu: per_cpu.then(|| cpus.iter().map(counter_map).collect()),
        }
    }

    /// The aligned text form.
    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(out, "{}", fill_line(&self.table))?;
        let mut table = Table::new();
        table.load_style(presets::NOTHING);
        let mut header = vec!["COUNTER".to_string(), format!("SUM ({} CPUs)", self.cpus)];
        if let Some(per) = &self.per_cpu {
            header.extend((0..per.len()).map(|i| format!("CPU{i}")));
        }
        table.set_header(header);
        for (name, v) in &self.counters {
            let mut row = vec![name.clone(), v.to_string()];
            if let Some(per) = &self.per_cpu {
                row.extend(per.iter().map(|c| c.get(name).copied().unwrap_or(0).to_string()));
            }
            table.add_row(row);
        }
        write_table(out, &table)
    }
}
