//! The documents `top`, `count` and `stats` print: serde types for `--json`, aligned tables
//! for people. The JSON shapes are wire format (README "JSON output"); tests pin them.

use std::io::{self, Write};

use anstyle::Style;
use comfy_table::{ColumnConstraint, Table, presets};
use serde::{Deserialize, Serialize};

use super::look::{self, Level, Look};

use crate::stats::{CpuStats, Fill};
use crate::tally::{COLUMNS, Counts, GroupKey, Tally, column_name};

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

/// The state columns in the order a `states` object lists them (by name, as a BTreeMap).
fn columns_by_name() -> [usize; COLUMNS] {
    let mut order: [usize; COLUMNS] = std::array::from_fn(|c| c);
    order.sort_by_key(|c| column_name(*c));
    order
}

/// A tally's groups ranked for printing. `top` and `count --by` write it straight out, as JSON
/// or text, without a [`TallyReport`]'s owned label and state map per group (with 250,000
/// groups those cost far more than the tally); [`TallyReport::new`] is built from it, so both
/// print the same bytes.
pub struct Ranking<'a> {
    tally: &'a Tally,
    table: Option<Fill>,
    rows: Vec<(&'a GroupKey, &'a Counts)>,
    more_groups: Option<u64>,
}

impl<'a> Ranking<'a> {
    /// The `limit` largest groups of a tally (all without a limit; with one, ranked by a
    /// heap of `limit` groups).
    pub fn new(tally: &'a Tally, table: Option<Fill>, limit: Option<usize>) -> Ranking<'a> {
        let rows = tally.ranked_counts(limit);
        let more_groups = limit.map(|_| (tally.len() - rows.len()) as u64);
        Ranking { tally, table, rows, more_groups }
    }

    /// Flows that matched the selection.
    pub fn matched(&self) -> u64 {
        self.tally.total().total
    }

    /// The table's fill, if given.
    pub fn table(&self) -> Option<&Fill> {
        self.table.as_ref()
    }

    /// The grouping's name.
    pub fn by(&self) -> String {
        self.tally.by().name()
    }

    /// Groups left out by the limit (with a limit only).
    pub fn more_groups(&self) -> Option<u64> {
        self.more_groups
    }

    /// The groups, serialized as [`TallyReport`]'s `groups` are.
    pub fn groups(&self) -> impl Serialize + '_ {
        Groups(self)
    }

    /// The owned document (what `watch` and `doctor` keep).
    pub fn report(&self) -> TallyReport {
        let matched = self.matched();
        let groups = self
            .rows
            .iter()
            .map(|(key, row)| Group {
                key: self.tally.label(key),
                entries: row.total(),
                share_percent: pct(row.total(), matched),
                states: (0..COLUMNS)
                    .filter(|c| row.state(*c) > 0)
                    .map(|c| (column_name(c).to_string(), row.state(c)))
                    .collect(),
            })
            .collect();
        TallyReport {
            table: self.table.clone(),
            by: self.tally.by().name(),
            matched,
            groups,
            more_groups: self.more_groups,
        }
    }

    /// One JSON object and a newline: the bytes of [`TallyReport`]'s JSON.
    pub fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        super::jsonl::write_line(out, self)
    }

    /// The aligned text form; `states` adds the per-state columns.
    pub fn write_text(&self, out: &mut impl Write, states: bool) -> io::Result<()> {
        self.write_text_as(out, states, Look::PLAIN)
    }

    /// [`Ranking::write_text`] as `look` says: see [`TallyReport::write_text_as`].
    pub fn write_text_as(&self, out: &mut impl Write, states: bool, look: Look) -> io::Result<()> {
        let by = self.tally.by().name();
        let head = Head { table: self.table.as_ref(), by: &by, matched: self.matched() };
        write_groups(out, &head, self, self.more_groups, states, look)
    }
}

/// Serialized as [`TallyReport`] is, field for field.
impl Serialize for Ranking<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("TallyReport", 5)?;
        if let Some(t) = &self.table {
            st.serialize_field("table", t)?;
        }
        st.serialize_field("by", &self.tally.by().name())?;
        st.serialize_field("matched", &self.matched())?;
        st.serialize_field("groups", &Groups(self))?;
        if let Some(n) = self.more_groups {
            st.serialize_field("more_groups", &n)?;
        }
        st.end()
    }
}

struct Groups<'r>(&'r Ranking<'r>);

impl Serialize for Groups<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let (matched, order) = (r.matched(), columns_by_name());
        s.collect_seq(r.rows.iter().map(|(key, row)| GroupRef {
            key: Shown(r.tally.display(key)),
            row,
            matched,
            order: &order,
        }))
    }
}

/// A `Display` serialized as a string, formatted straight into the output.
struct Shown<D>(D);

impl<D: std::fmt::Display> Serialize for Shown<D> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// One group serialized as [`Group`] is, from the tally's row.
struct GroupRef<'r, D> {
    key: Shown<D>,
    row: &'r Counts,
    matched: u64,
    order: &'r [usize; COLUMNS],
}

impl<D: std::fmt::Display> Serialize for GroupRef<'_, D> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct States<'r>(&'r Counts, &'r [usize; COLUMNS]);
        impl Serialize for States<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let row = self.0;
                s.collect_map(
                    self.1
                        .iter()
                        .filter(|c| row.state(**c) > 0)
                        .map(|c| (column_name(*c), row.state(*c))),
                )
            }
        }
        let mut st = s.serialize_struct("Group", 4)?;
        st.serialize_field("key", &self.key)?;
        st.serialize_field("entries", &self.row.total())?;
        st.serialize_field("share_percent", &pct(self.row.total(), self.matched))?;
        st.serialize_field("states", &States(self.row, self.order))?;
        st.end()
    }
}

impl TallyReport {
    /// The `limit` largest groups of a tally.
    pub fn new(tally: &Tally, table: Option<Fill>, limit: Option<usize>) -> TallyReport {
        Ranking::new(tally, table, limit).report()
    }

    /// The aligned text form; `states` adds the per-state columns.
    pub fn write_text(&self, out: &mut impl Write, states: bool) -> io::Result<()> {
        self.write_text_as(out, states, Look::PLAIN)
    }

    /// The aligned text form as `look` says. Fitted to `look.width` when given (a terminal):
    /// numbers are never cut; columns shrink or go instead, in this order: the state headings
    /// shorten (`ESTAB`, `TIME_W`, ...), `SHARE` goes, the state columns with the fewest flows
    /// go, and last the group labels are cut (ending in `~`). In colour, the fill percentage
    /// is green, yellow or red, and with a fill (`top`) the first group, the top offender, is
    /// bold.
    pub fn write_text_as(&self, out: &mut impl Write, states: bool, look: Look) -> io::Result<()> {
        let head = Head { table: self.table.as_ref(), by: &self.by, matched: self.matched };
        write_groups(out, &head, self.groups.as_slice(), self.more_groups, states, look)
    }
}

/// What a group table is printed from: owned groups, or a ranking of the tally.
trait GroupRows {
    fn rows(&self) -> usize;
    fn key(&self, i: usize, buf: &mut String);
    fn entries(&self, i: usize) -> u64;
    fn share(&self, i: usize) -> f64;
    fn state(&self, i: usize, col: usize) -> u64;
}

impl GroupRows for [Group] {
    fn rows(&self) -> usize {
        self.len()
    }
    fn key(&self, i: usize, buf: &mut String) {
        // Guest names are free text: escaped here, raw in JSON (which escapes by itself).
        buf.push_str(&crate::guests::escaped(&self[i].key));
    }
    fn entries(&self, i: usize) -> u64 {
        self[i].entries
    }
    fn share(&self, i: usize) -> f64 {
        self[i].share_percent
    }
    fn state(&self, i: usize, col: usize) -> u64 {
        self[i].states.get(column_name(col)).copied().unwrap_or(0)
    }
}

impl GroupRows for Ranking<'_> {
    fn rows(&self) -> usize {
        self.rows.len()
    }
    fn key(&self, i: usize, buf: &mut String) {
        use std::fmt::Write as _;
        let start = buf.len();
        let _ = write!(buf, "{}", self.tally.display(self.rows[i].0));
        if let std::borrow::Cow::Owned(e) = crate::guests::escaped(&buf[start..]) {
            buf.truncate(start);
            buf.push_str(&e);
        }
    }
    fn entries(&self, i: usize) -> u64 {
        self.rows[i].1.total()
    }
    fn share(&self, i: usize) -> f64 {
        pct(self.rows[i].1.total(), self.matched())
    }
    fn state(&self, i: usize, col: usize) -> u64 {
        self.rows[i].1.state(col)
    }
}

/// The lines around a group table.
struct Head<'a> {
    table: Option<&'a Fill>,
    by: &'a str,
    matched: u64,
}

/// A state column's short heading, for a narrow terminal.
fn short_name(name: &str) -> &str {
    match name {
        "SYN_SENT" => "SYN_S",
        "SYN_RECV" => "SYN_R",
        "ESTABLISHED" => "ESTAB",
        "FIN_WAIT" => "FIN_W",
        "CLOSE_WAIT" => "CLS_W",
        "LAST_ACK" => "L_ACK",
        "TIME_WAIT" => "TIME_W",
        "SYN_SENT2" => "SYN_S2",
        "TCP_OTHER" => "OTHER",
        "NON_TCP" => "NOTCP",
        n => n,
    }
}

fn text_width(s: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(s)
}

/// Digits of `n`.
fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Writes the fill line, the group table and the footer. The table is laid out as comfy-table's
/// `NOTHING` preset did (the bytes `top` has always printed): every cell padded by one space
/// each side, the label column left-aligned, the others right-aligned, each column as wide as
/// its widest cell (display width), header included. Two passes over the rows, the first for
/// the widths, so no cell outlives its line.
fn write_groups<R: GroupRows + ?Sized>(
    out: &mut impl Write,
    head: &Head<'_>,
    rows: &R,
    more_groups: Option<u64>,
    states: bool,
    look: Look,
) -> io::Result<()> {
    let width = look.width;
    if let Some(t) = head.table {
        writeln!(out, "{}", fill_line(t, look))?;
    }
    // With a fill shown (`top`), the first group is the top offender.
    let offender = head.table.filter(|_| look.colour).map(|t| look::offender(Some(t.fill_percent)));
    let n = rows.rows();
    let mut buf = String::new();
    // Widths of the label, ENTRIES and SHARE columns, and per state column its widest
    // number and its total (which decides what goes first on a narrow terminal).
    let by = head.by.to_uppercase();
    let (mut key_w, mut entries_w, mut share_w) = (text_width(&by), "ENTRIES".len(), "SHARE".len());
    let mut state_w = [0usize; COLUMNS];
    let mut state_sum = [0u64; COLUMNS];
    for i in 0..n {
        buf.clear();
        rows.key(i, &mut buf);
        key_w = key_w.max(text_width(&buf));
        entries_w = entries_w.max(digits(rows.entries(i)));
        buf.clear();
        let _ = std::fmt::Write::write_fmt(&mut buf, format_args!("{:.1}%", rows.share(i)));
        share_w = share_w.max(buf.len());
        if states {
            for c in 0..COLUMNS {
                let v = rows.state(i, c);
                state_w[c] = state_w[c].max(digits(v));
                state_sum[c] += v;
            }
        }
    }
    // The state columns shown: those with a flow in a shown group, in column order.
    let mut shown: Vec<(usize, &str)> =
        (0..COLUMNS).filter(|c| state_sum[*c] > 0).map(|c| (c, column_name(c))).collect();
    let mut with_share = true;
    let cell_w = |name: &str, c: usize| text_width(name).max(state_w[c]) + 2;
    // The printed width: every cell padded a space each side, less the last line's padding,
    // which is trimmed.
    let line_w = |shown: &[(usize, &str)], with_share: bool, key_w: usize| {
        key_w
            + 2
            + entries_w
            + 2
            + if with_share { share_w + 2 } else { 0 }
            + shown.iter().map(|(c, name)| cell_w(name, *c)).sum::<usize>()
            - 1
    };
    if let Some(limit) = width {
        if line_w(&shown, with_share, key_w) > limit {
            for s in shown.iter_mut() {
                s.1 = short_name(s.1);
            }
        }
        if line_w(&shown, with_share, key_w) > limit {
            with_share = false;
        }
        while line_w(&shown, with_share, key_w) > limit && !shown.is_empty() {
            let fewest = (0..shown.len()).min_by_key(|i| (state_sum[shown[*i].0], usize::MAX - i));
            if let Some(i) = fewest {
                shown.remove(i);
            }
        }
        let rest = line_w(&shown, with_share, 0);
        key_w = key_w.min(limit.saturating_sub(rest).max(2));
    }
    // One line: the label, then right-aligned cells.
    let mut line = String::new();
    let mut write_line =
        |label: &str, style: Option<Style>, cells: &mut dyn Iterator<Item = (usize, &str)>| {
            line.clear();
            line.push(' ');
            // The escapes go around the label's text, never its padding: widths are of the text.
            let paint = |line: &mut String, reset: bool| {
                if let Some(s) = style {
                    use std::fmt::Write as _;
                    let _ = if reset { write!(line, "{s:#}") } else { write!(line, "{s}") };
                }
            };
            paint(&mut line, false);
            let lw = text_width(label);
            if lw > key_w {
                let mut used = 0;
                for ch in label.chars() {
                    let w = unicode_width::UnicodeWidthChar::width(ch).unwrap_or(0);
                    if used + w + 1 > key_w {
                        break;
                    }
                    line.push(ch);
                    used += w;
                }
                line.push('~');
                paint(&mut line, true);
                line.extend(std::iter::repeat_n(' ', key_w - used - 1));
            } else {
                line.push_str(label);
                paint(&mut line, true);
                line.extend(std::iter::repeat_n(' ', key_w - lw));
            }
            line.push(' ');
            for (w, text) in cells {
                line.push(' ');
                line.extend(std::iter::repeat_n(' ', w.saturating_sub(text_width(text))));
                line.push_str(text);
                line.push(' ');
            }
            // No line ends in a space (the last column's padding).
            line.truncate(line.trim_end_matches(' ').len());
            line.push('\n');
            out.write_all(line.as_bytes())
        };
    let state_cols: Vec<(usize, &str, usize)> =
        shown.iter().map(|(c, name)| (*c, *name, cell_w(name, *c) - 2)).collect();
    let header = std::iter::once((entries_w, "ENTRIES"))
        .chain(with_share.then_some((share_w, "SHARE")))
        .chain(state_cols.iter().map(|(_, name, w)| (*w, *name)));
    write_line(&by, None, &mut header.into_iter())?;
    let mut cells: Vec<String> = vec![String::new(); 2 + state_cols.len()];
    for i in 0..n {
        buf.clear();
        rows.key(i, &mut buf);
        let mut k = 0;
        let mut put = |cells: &mut Vec<String>, v: std::fmt::Arguments<'_>| {
            use std::fmt::Write as _;
            cells[k].clear();
            let _ = cells[k].write_fmt(v);
            k += 1;
        };
        put(&mut cells, format_args!("{}", rows.entries(i)));
        if with_share {
            put(&mut cells, format_args!("{:.1}%", rows.share(i)));
        }
        for (c, _, _) in &state_cols {
            put(&mut cells, format_args!("{}", rows.state(i, *c)));
        }
        let widths = std::iter::once(entries_w)
            .chain(with_share.then_some(share_w))
            .chain(state_cols.iter().map(|(_, _, w)| *w));
        let style = offender.filter(|_| i == 0);
        write_line(&buf, style, &mut widths.zip(cells.iter().map(String::as_str)))?;
    }
    match more_groups {
        Some(m) if m > 0 => {
            writeln!(out, "({} matched flows; {m} more groups not shown)", head.matched)
        }
        _ => writeln!(out, "({} matched flows)", head.matched),
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

/// `table: C of M entries (P% full), B buckets`, the percentage in its level's colour.
fn fill_line(t: &Fill, look: Look) -> String {
    let buckets = t.buckets.map(|b| format!(", {b} buckets")).unwrap_or_default();
    let full = format!("{:.1}% full", t.fill_percent);
    let full = look.paint(Level::of_fill(t.fill_percent).style(), full);
    format!("table: {} of {} entries ({full}){buckets}", t.count, t.max)
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
        let sum = CpuStats::sum(cpus);
        StatsReport {
            table,
            counters: counter_map(&sum),
            cpus: cpus.len(),
            per_cpu: per_cpu.then(|| cpus.iter().map(counter_map).collect()),
        }
    }

    /// The aligned text form.
    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        self.write_text_as(out, Look::PLAIN)
    }

    /// The aligned text form as `look` says: the fill percentage in its colour; fitted to
    /// `look.width`, the per-CPU columns that do not fit are left out (from the last one),
    /// and a line says which.
    pub fn write_text_as(&self, out: &mut impl Write, look: Look) -> io::Result<()> {
        writeln!(out, "{}", fill_line(&self.table, look))?;
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
        let hidden = look.width.map_or(0, |w| hide_to_fit(&mut table, w, 2));
        write_table(out, &table)?;
        if let (Some(per), true) = (&self.per_cpu, hidden > 0) {
            let first = per.len() - hidden;
            let last = per.len() - 1;
            let which =
                if hidden == 1 { format!("CPU{last}") } else { format!("CPU{first}-{last}") };
            writeln!(out, "({which} not shown: the terminal is too narrow; --json has every CPU)")?;
        }
        Ok(())
    }
}

/// Hides a table's last columns (never the first `keep`) until its lines fit `width`: each
/// cell is padded a space each side, the last line's padding trimmed. How many it hid.
fn hide_to_fit(table: &mut Table, width: usize, keep: usize) -> usize {
    let widths: Vec<usize> =
        table.column_max_content_widths().iter().map(|w| usize::from(*w) + 2).collect();
    let mut shown = widths.len();
    while shown > keep && widths[..shown].iter().sum::<usize>().saturating_sub(1) > width {
        shown -= 1;
    }
    for i in shown..widths.len() {
        if let Some(col) = table.column_mut(i) {
            col.set_constraint(ColumnConstraint::Hidden);
        }
    }
    widths.len() - shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Flow, Proto, TcpState, test_tcp};
    use crate::guests::GuestMap;
    use crate::tally::GroupBy;
    use comfy_table::CellAlignment;
    use std::collections::BTreeMap;

    /// What `write_text` printed through comfy-table before issue 9.11: the oracle the
    /// hand-laid table must equal byte for byte.
    fn comfy_text(r: &TallyReport, states: bool) -> String {
        let mut out = Vec::new();
        if let Some(t) = &r.table {
            writeln!(out, "{}", fill_line(t, Look::PLAIN)).unwrap();
        }
        let mut columns: Vec<&str> = Vec::new();
        if states {
            for c in 0..COLUMNS {
                let name = column_name(c);
                if r.groups.iter().any(|g| g.states.contains_key(name)) {
                    columns.push(name);
                }
            }
        }
        let mut table = Table::new();
        table.load_style(presets::NOTHING);
        let mut header = vec![r.by.to_uppercase(), "ENTRIES".into(), "SHARE".into()];
        header.extend(columns.iter().map(|c| c.to_string()));
        table.set_header(header);
        for g in &r.groups {
            let mut row =
                vec![g.key.clone(), g.entries.to_string(), format!("{:.1}%", g.share_percent)];
            row.extend(columns.iter().map(|c| g.states.get(*c).copied().unwrap_or(0).to_string()));
            table.add_row(row);
        }
        for i in 1..3 + columns.len() {
            if let Some(col) = table.column_mut(i) {
                col.set_cell_alignment(CellAlignment::Right);
            }
        }
        // As comfy-table printed it, less the padding at the end of each line (issue 9.19).
        for line in table.lines() {
            writeln!(out, "{}", line.trim_end()).unwrap();
        }
        match r.more_groups {
            Some(n) if n > 0 => {
                writeln!(out, "({} matched flows; {n} more groups not shown)", r.matched)
            }
            _ => writeln!(out, "({} matched flows)", r.matched),
        }
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    fn flows() -> Vec<Flow> {
        let mut v = Vec::new();
        let states = [TcpState::Established, TcpState::TimeWait, TcpState::SynSent];
        // One wide group (numbers wider than their headings), many narrow ones, IPv6, UDP.
        for i in 0..2_345u32 {
            v.push(test_tcp("172.16.3.5", "10.0.0.1", (i % 60_000) as u16, 80, states[0]));
        }
        for i in 0..300u32 {
            let src = format!("172.16.{}.{}", i / 200, i % 200);
            v.push(test_tcp(&src, "10.0.0.1", 1, 80, states[i as usize % 3]));
        }
        v.push(test_tcp("fd00:2::1234:5678:9abc", "fd00::1", 1, 80, TcpState::Close));
        let mut udp = test_tcp("192.0.2.77", "10.0.0.1", 1, 53, TcpState::Established);
        (udp.proto, udp.state) = (Proto::UDP, None);
        v.push(udp);
        v
    }

    fn tally(by: GroupBy, guests: GuestMap) -> Tally {
        let mut t = Tally::new(by, guests);
        for f in flows() {
            t.add(&f);
        }
        t
    }

    #[test]
    fn issue_9_11_streamed_reports_print_the_bytes_comfy_table_and_serde_printed() {
        let mut guests = GuestMap::new();
        guests.add("web01", vec!["172.16.3.0/24".parse().unwrap()]);
        guests.add("データベース", vec!["172.16.0.0/24".parse().unwrap()]);
        let fill = Fill { count: 2_647, max: 262_144, fill_percent: 1.0, buckets: Some(65_536) };
        let tallies = [
            tally(GroupBy::Src, GuestMap::new()),
            tally(GroupBy::State, GuestMap::new()),
            tally(GroupBy::Guest, guests),
            tally(GroupBy::parse("src/16").unwrap(), GuestMap::new()),
            Tally::new(GroupBy::Src, GuestMap::new()),
        ];
        for t in &tallies {
            for (table, limit) in [(Some(fill.clone()), Some(5)), (None, None), (None, Some(1))] {
                let ranking = Ranking::new(t, table, limit);
                let report = ranking.report();
                assert_eq!(report, TallyReport::new(t, ranking.table.clone(), limit));
                let mut json = Vec::new();
                ranking.write_json(&mut json).unwrap();
                let want = serde_json::to_string(&report).unwrap() + "\n";
                assert_eq!(String::from_utf8(json).unwrap(), want);
                for states in [true, false] {
                    let want = comfy_text(&report, states);
                    let mut text = Vec::new();
                    ranking.write_text(&mut text, states).unwrap();
                    assert_eq!(
                        String::from_utf8(text).unwrap(),
                        want,
                        "ranking, {}",
                        t.by().name()
                    );
                    let mut text = Vec::new();
                    report.write_text(&mut text, states).unwrap();
                    assert_eq!(String::from_utf8(text).unwrap(), want, "report, {}", t.by().name());
                }
            }
        }
    }

    fn report() -> TallyReport {
        let group = |key: &str, entries: u64, states: &[(&str, u64)]| Group {
            key: key.into(),
            entries,
            share_percent: 50.0,
            states: states.iter().map(|(s, n)| (s.to_string(), *n)).collect::<BTreeMap<_, _>>(),
        };
        TallyReport {
            table: None,
            by: "guest".into(),
            matched: 240_012,
            groups: vec![
                group("runaway-guest-01", 240_000, &[("ESTABLISHED", 239_990), ("TIME_WAIT", 10)]),
                group("db", 12, &[("SYN_SENT", 2), ("TIME_WAIT", 10)]),
            ],
            more_groups: None,
        }
    }

    fn text(width: Option<usize>) -> Vec<String> {
        let mut out = Vec::new();
        report().write_text_as(&mut out, true, Look { colour: false, width }).unwrap();
        String::from_utf8(out).unwrap().lines().map(str::to_string).collect()
    }

    #[test]
    fn issue_16_top_in_colour_paints_the_fill_and_the_offender_label_only() {
        let t = tally(GroupBy::Src, GuestMap::new());
        let fill = Fill { count: 230_000, max: 262_144, fill_percent: 87.7, buckets: None };
        let ranking = Ranking::new(&t, Some(fill), Some(3));
        let text = |look: Look| {
            let mut out = Vec::new();
            ranking.write_text_as(&mut out, true, look).unwrap();
            String::from_utf8(out).unwrap()
        };
        let plain = text(Look::PLAIN);
        let colour = text(Look { colour: true, width: None });
        let lines: Vec<&str> = colour.lines().collect();
        assert_eq!(lines[0], "table: 230000 of 262144 entries (\x1b[33m87.7% full\x1b[0m)");
        assert!(lines[2].starts_with(" \x1b[1m\x1b[33m172.16.3.5\x1b[0m "), "{:?}", lines[2]);
        assert!(lines.iter().enumerate().all(|(i, l)| !l.contains('\x1b') || i == 0 || i == 2));
        // Less its escapes, the coloured text is the plain text: the padding is outside them.
        let stripped = colour.replace("\x1b[33m", "").replace("\x1b[1m", "").replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
        assert!(colour.lines().all(|l| !l.ends_with(' ')));
        // count --by has no fill: nothing to paint.
        let mut out = Vec::new();
        Ranking::new(&t, None, None)
            .write_text_as(&mut out, false, Look { colour: true, width: None })
            .unwrap();
        assert!(!String::from_utf8(out).unwrap().contains('\x1b'));
    }

    #[test]
    fn issue_16_stats_per_cpu_leaves_out_the_cpus_that_do_not_fit() {
        let cpus: Vec<CpuStats> = (0..8)
            .map(|cpu| CpuStats { cpu, insert: 1_000 + u32::from(cpu), ..CpuStats::default() })
            .collect();
        let fill = Fill { count: 10, max: 100, fill_percent: 10.0, buckets: Some(64) };
        let report = StatsReport::new(fill, &cpus, true);
        let text = |look: Look| {
            let mut out = Vec::new();
            report.write_text_as(&mut out, look).unwrap();
            String::from_utf8(out).unwrap()
        };
        let plain = text(Look::PLAIN);
        assert_eq!(text(Look { colour: false, width: Some(500) }), plain, "what fits is as it was");
        let mut want = Vec::new();
        report.write_text(&mut want).unwrap();
        assert_eq!(plain, String::from_utf8(want).unwrap());
        let narrow = text(Look { colour: false, width: Some(50) });
        let lines: Vec<&str> = narrow.lines().collect();
        assert!(lines[1..lines.len() - 1].iter().all(|l| l.chars().count() <= 50), "{narrow}");
        assert!(lines[1].contains(" CPU0 ") && !lines[1].contains("CPU7"), "{}", lines[1]);
        let insert = lines.iter().find(|l| l.starts_with(" insert ")).unwrap();
        assert!(insert.contains(" 8028 ") && insert.contains(" 1000"), "the sum and CPU0 whole");
        let last = lines.last().unwrap();
        assert!(last.starts_with("(CPU") && last.contains("-7 not shown"), "{last}");
        assert!(narrow.lines().all(|l| !l.ends_with(' ')));
        // The sum column stays, however narrow.
        let tiny = text(Look { colour: false, width: Some(10) });
        assert!(tiny.contains("SUM (8 CPUs)") && tiny.contains("(CPU0-7 not shown"), "{tiny}");
    }

    #[test]
    fn issue_9_13_columns_shrink_then_go_in_the_documented_order() {
        let full = text(None);
        assert_eq!(full[0], " GUEST             ENTRIES  SHARE  SYN_SENT  ESTABLISHED  TIME_WAIT");
        let w = full[0].chars().count();
        assert_eq!(text(Some(w)), full, "what fits is printed as top prints it");
        // 1. Short state headings.
        let short = text(Some(w - 1));
        assert_eq!(short[0], " GUEST             ENTRIES  SHARE  SYN_S   ESTAB  TIME_W");
        // 2. Then SHARE goes.
        let n = short[0].chars().count();
        assert_eq!(text(Some(n - 1))[0], " GUEST             ENTRIES  SYN_S   ESTAB  TIME_W");
        // 3. Then the state column with the fewest flows (SYN_SENT: 2), then TIME_WAIT (20).
        let n = text(Some(n - 1))[0].chars().count();
        assert_eq!(text(Some(n - 1))[0], " GUEST             ENTRIES   ESTAB  TIME_W");
        let n = text(Some(n - 1))[0].chars().count();
        assert_eq!(text(Some(n - 1))[0], " GUEST             ENTRIES   ESTAB");
        assert_eq!(text(Some(n - 1))[1], " runaway-guest-01   240000  239990");
        // 4. Last, labels are cut (never a number).
        let tiny = text(Some(20));
        assert_eq!(tiny[0], " GUEST       ENTRIES");
        assert_eq!(tiny[1], " runaway-g~   240000");
        assert_eq!(tiny[2], " db               12");
        assert!(tiny[..3].iter().all(|l| l.chars().count() <= 20), "{tiny:?}");
        assert_eq!(tiny[3], "(240012 matched flows)");
    }
}
