//! The interactive `watch`'s frames, drawn from an [`App`] with ratatui's widgets.
//!
//! Numbers are never cut. When the terminal is too narrow for every column, columns drop in
//! this order (see [`columns`]): first the state columns, those with the fewest flows in the
//! data first, then SHARE; GROUP and ENTRIES always stay. Before a column drops, GROUP shrinks
//! (keys truncated with a trailing `…`), but not below [`MIN_GROUP`] characters. The header
//! wraps between its facts, never inside a number.
//!
//! Colour only when the app is in colour (the runtime decides from `NO_COLOR` and the
//! terminal); otherwise the only styles are bold and reversed.

use crate::cli::tui::app::{App, Mode, SortBy, state_of};
use crate::cli::tui::model::{CapPreview, Data, Drill, EvictPreview, Group, Header, RED_FILL};
use crate::cli::tui::model::{CapRow, YELLOW_FILL};
use ctguard::tally::{COLUMNS, column_name};
use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// GROUP never shrinks below this many characters (while another column can drop).
pub const MIN_GROUP: usize = 8;
/// The space between two table columns.
const SPACING: usize = 1;
/// The key map the help overlay shows, one key per line (the column drop order last).
pub const HELP: &[(&str, &str)] = &[
    ("q Ctrl-C", "quit (Ctrl-C also while typing a filter)"),
    ("j k Down Up", "move the selection"),
    ("PgDn PgUp", "move a page"),
    ("Home End", "first row, last row"),
    ("s  S", "sort: entries, key, states in turn; reverse"),
    ("g", "next grouping"),
    ("/", "filter keys: type, Enter keeps, Esc clears"),
    ("Enter", "drill into the group (Esc back)"),
    ("e", "evict: 1-9 or space toggle states, j/k move"),
    ("c", "cap the group's addresses"),
    ("y  n Esc", "confirm, cancel (any other key cancels)"),
    ("C", "caps: j/k move, d or x uncap, Esc back"),
    ("p", "pause the view (the counts go on)"),
    ("?", "this help (any key closes)"),
    ("narrow", "drops states with fewest flows, then SHARE"),
];

/// Draws the whole screen: header, the mode's body, footer, then any modal over them.
pub fn draw(app: &App, f: &mut Frame) {
    let area = f.area();
    let width = area.width as usize;
    let header = header_lines(app, width);
    let [top, body, foot] = Layout::vertical([
        Constraint::Length(header.len() as u16),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(header), top);
    match &app.mode {
        Mode::Drill { key } => draw_drill(app, f, body, key),
        Mode::Caps => draw_caps(app, f, body),
        _ => draw_table(app, f, body),
    }
    f.render_widget(Paragraph::new(footer(app, width)), foot);
    draw_modal(app, f, area);
}

/// The modal over the body, if any: a report first, then help, then a preview.
fn draw_modal(app: &App, f: &mut Frame, area: Rect) {
    if let Some(lines) = &app.report {
        let mut text: Vec<Line> = lines.iter().map(|l| Line::from(l.clone())).collect();
        text.push(Line::from(""));
        text.push(Line::from("any key closes"));
        modal(f, area, "result", text);
    } else if app.help {
        modal(f, area, "keys", help_lines(area.width as usize));
    } else {
        match &app.mode {
            Mode::Evict { key } => {
                modal(f, area, "evict", evict_lines(app, key, app.evict.as_ref()))
            }
            Mode::Cap { key } => modal(f, area, "cap", cap_lines(key, app.cap.as_ref())),
            _ => {}
        }
    }
}

/// A style that is `s` in colour, plain without.
fn paint(app: &App, s: Style) -> Style {
    if app.colour { s } else { Style::default() }
}

/// Bold: allowed with or without colour.
fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

/// One fact of the header or footer: its text and style.
type Item = (String, Style);

/// The header: the table's fill and the engine's health, the rates, the counters; each group
/// of facts on its own lines, wrapped between facts.
fn header_lines(app: &App, width: usize) -> Vec<Line<'static>> {
    let h = &app.data.header;
    let mut first = vec![fill_item(app, h), (format!("netns {}", netns(h)), Style::default())];
    first.push(sync_item(app, h));
    if app.paused {
        first.push(("PAUSED".into(), paint(app, Style::default().fg(Color::Yellow)).patch(bold())));
    }
    if let Some(b) = &app.busy {
        first.push((b.clone(), paint(app, Style::default().fg(Color::Cyan)).patch(bold())));
    }
    let red = paint(app, Style::default().fg(Color::Red));
    let rate_item = |name: &str, v: Option<f64>| {
        let style = if v.is_some_and(|v| v > 0.0) { red } else { Style::default() };
        (format!("{name} {}", v.map_or("-".into(), rate)), style)
    };
    let rates = vec![
        (format!("new/s {}", rate(h.new_per_s)), Style::default()),
        (format!("destroy/s {}", rate(h.destroy_per_s)), Style::default()),
        rate_item("drop/s", h.drop_per_s),
        rate_item("early_drop/s", h.early_drop_per_s),
        rate_item("insert_failed/s", h.insert_failed_per_s),
    ];
    let counters = vec![
        (format!("lost {}", h.lost_events.map_or("-".into(), |n| n.to_string())), Style::default()),
        (format!("overruns {}", h.overruns), Style::default()),
        (format!("resyncs {}", h.resyncs), Style::default()),
        (by_item(app), Style::default()),
        (format!("sort {}", sort_name(app)), Style::default()),
    ];
    [first, rates, counters].into_iter().flat_map(|items| flow(items, width)).collect()
}

/// The grouping asked for, and whether the data on screen is still the previous grouping's.
fn by_item(app: &App) -> String {
    match app.data.by {
        Some(shown) if shown != app.by => format!("by {} (regrouping)", app.by.name()),
        _ => format!("by {}", app.by.name()),
    }
}

/// The fill gauge, green, yellow from doctor's "at risk", red from its "full".
fn fill_item(app: &App, h: &Header) -> Item {
    let (text, pct) = match (h.count, h.max) {
        (Some(c), Some(m)) if m > 0 => {
            let pct = c as f64 * 100.0 / m as f64;
            (format!("fill {c} / {m} ({pct:.1}%)"), Some(pct))
        }
        (Some(c), _) => (format!("fill {c} / ?"), None),
        _ => ("fill ?".into(), None),
    };
    let colour = match pct {
        Some(p) if p >= RED_FILL => Color::Red,
        Some(p) if p >= YELLOW_FILL => Color::Yellow,
        _ => Color::Green,
    };
    let at_risk = pct.is_some_and(|p| p >= YELLOW_FILL);
    let style = paint(app, Style::default().fg(colour));
    (text, if at_risk { style.patch(bold()) } else { style })
}

/// Whether the counts can be trusted, and if not why.
fn sync_item(app: &App, h: &Header) -> Item {
    if h.synced {
        return ("in sync".into(), paint(app, Style::default().fg(Color::Green)));
    }
    let text = match &h.why_not {
        Some(w) => format!("NOT IN SYNC: {w}"),
        None => "NOT IN SYNC".into(),
    };
    (text, paint(app, Style::default().fg(Color::Red)).patch(bold()))
}

/// The namespace watched, in words.
fn netns(h: &Header) -> &str {
    h.netns.as_deref().unwrap_or("(own)")
}

/// A rate as a number of a sensible precision.
fn rate(v: f64) -> String {
    if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") }
}

/// The sort column and its direction.
fn sort_name(app: &App) -> String {
    let (name, descending) = match app.sort {
        SortBy::Entries => ("ENTRIES".to_string(), true),
        SortBy::Key => ("GROUP".to_string(), false),
        SortBy::State(c) => (column_name(c).to_string(), true),
    };
    let arrow = if descending != app.reversed { "↓" } else { "↑" };
    format!("{name} {arrow}")
}

/// Packs items into lines of `width`, two spaces apart; an item wider than a line is split.
fn flow(items: Vec<Item>, width: usize) -> Vec<Line<'static>> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line: Vec<Span<'static>> = Vec::new();
    let mut used = 0;
    for (text, style) in items.into_iter().flat_map(|(t, s)| split(&t, width, s)) {
        let w = text.width();
        if used > 0 && used + 2 + w > width {
            lines.push(Line::from(std::mem::take(&mut line)));
            used = 0;
        }
        if used > 0 {
            line.push(Span::raw("  "));
            used += 2;
        }
        used += w;
        line.push(Span::styled(text, style));
    }
    if !line.is_empty() {
        lines.push(Line::from(line));
    }
    lines
}

/// `text` in pieces no wider than `width`.
fn split(text: &str, width: usize, style: Style) -> Vec<Item> {
    let mut pieces = Vec::new();
    let mut piece = String::new();
    for ch in text.chars() {
        if piece.width() + ch.width().unwrap_or(0) > width {
            pieces.push((std::mem::take(&mut piece), style));
        }
        piece.push(ch);
    }
    pieces.push((piece, style));
    pieces
}

/// `s` cut to `width` columns, a trailing `…` saying it was cut.
pub fn truncate(s: &str, width: usize) -> String {
    if s.width() <= width {
        return s.to_string();
    }
    let mut out = String::new();
    for ch in s.chars() {
        if out.width() + ch.width().unwrap_or(0) + 1 > width {
            break;
        }
        out.push(ch);
    }
    out.push('…');
    out
}

/// The state columns with flows in the data, in column order, with their flows.
pub fn state_columns(d: &Data) -> Vec<(usize, u64)> {
    (0..COLUMNS)
        .map(|c| (c, d.groups.iter().map(|g| state_of(g, c)).sum::<u64>()))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The table's columns at one width.
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    pub group: usize,
    pub entries: usize,
    /// SHARE's width, when it is shown.
    pub share: Option<usize>,
    /// The state columns shown, in column order, with their widths.
    pub states: Vec<(usize, usize)>,
}

impl Columns {
    /// The width of every column and the spaces between them.
    fn total(&self) -> usize {
        let widths = [self.group, self.entries].into_iter().chain(self.share);
        let widths: Vec<usize> = widths.chain(self.states.iter().map(|s| s.1)).collect();
        widths.iter().sum::<usize>() + SPACING * widths.len().saturating_sub(1)
    }
}

/// The columns that fit `width` for `rows`: every number at its full width, columns dropped
/// in the module's documented order, GROUP shrunk to what is left (at least [`MIN_GROUP`]).
pub fn columns(width: usize, rows: &[&Group], states: &[(usize, u64)]) -> Columns {
    let digits = |n: u64| n.to_string().len();
    let widest = |f: &dyn Fn(&Group) -> u64| rows.iter().map(|g| digits(f(g))).max().unwrap_or(1);
    let want_group = rows.iter().map(|g| g.key.width()).max().unwrap_or(0).max("GROUP".len());
    let mut cols = Columns {
        group: 0,
        entries: widest(&|g| g.entries).max("ENTRIES".len()),
        share: Some("100.0%".len()),
        states: states
            .iter()
            .map(|&(c, _)| (c, widest(&|g| state_of(g, c)).max(column_name(c).len())))
            .collect(),
    };
    let mut fewest: Vec<(usize, u64)> = states.to_vec();
    fewest.sort_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
    let mut fewest = fewest.into_iter();
    loop {
        let left = width.saturating_sub(cols.total());
        if left >= want_group.min(MIN_GROUP) {
            cols.group = left.min(want_group);
            return cols;
        }
        if let Some((c, _)) = fewest.next() {
            cols.states.retain(|s| s.0 != c);
        } else if cols.share.is_some() {
            cols.share = None;
        } else {
            cols.group = left.max(1);
            return cols;
        }
    }
}

/// The live table, or a line saying why it is empty.
fn draw_table(app: &App, f: &mut Frame, area: Rect) {
    let rows = app.rows();
    app.page.set((area.height as usize).saturating_sub(1).max(1));
    if rows.is_empty() {
        let why = if app.filter.is_empty() {
            "no flows counted yet".to_string()
        } else {
            format!("no group matches \"{}\"", app.filter)
        };
        f.render_widget(Paragraph::new(why), area);
        return;
    }
    let cols = columns(area.width as usize, &rows, &state_columns(&app.data));
    let head = paint(app, Style::default().fg(Color::Cyan)).patch(bold());
    let mut heading = vec![Cell::from("GROUP"), right("ENTRIES")];
    heading.extend(cols.share.map(|_| right("SHARE")));
    heading.extend(cols.states.iter().map(|&(c, _)| right(column_name(c))));
    let body = rows.iter().map(|g| table_row(app, g, &cols));
    let mut widths = vec![cols.group, cols.entries];
    widths.extend(cols.share);
    widths.extend(cols.states.iter().map(|s| s.1));
    let table = Table::new(body, widths.into_iter().map(|w| Constraint::Length(w as u16)))
        .header(Row::new(heading).style(head))
        .column_spacing(SPACING as u16)
        .flex(Flex::Start)
        .row_highlight_style(selected_style(app));
    let mut state =
        TableState::default().with_offset(app.offset.get()).with_selected(Some(app.sel_idx));
    f.render_stateful_widget(table, area, &mut state);
    app.offset.set(state.offset());
}

/// The selected row: reversed, or on a blue background in colour.
fn selected_style(app: &App) -> Style {
    if app.colour {
        Style::default().bg(Color::Blue).fg(Color::White).add_modifier(Modifier::BOLD)
    } else {
        Style::default().add_modifier(Modifier::REVERSED)
    }
}

/// A right-aligned cell: numbers line up by their last digit.
fn right(s: &str) -> Cell<'static> {
    Cell::from(Line::from(s.to_string()).alignment(Alignment::Right))
}

/// One group as a row of `cols`: its key truncated, its numbers whole.
fn table_row(app: &App, g: &Group, cols: &Columns) -> Row<'static> {
    let mut cells = vec![Cell::from(truncate(&g.key, cols.group)), right(&g.entries.to_string())];
    if cols.share.is_some() {
        cells.push(right(&share(g.entries, app.data.matched)));
    }
    cells.extend(cols.states.iter().map(|&(c, _)| right(&state_of(g, c).to_string())));
    Row::new(cells)
}

/// `n` as a percentage of `of`.
fn share(n: u64, of: u64) -> String {
    if of == 0 { "-".into() } else { format!("{:.1}%", n as f64 * 100.0 / of as f64) }
}

/// The drill-down: four summaries of the group's flows in a grid.
fn draw_drill(app: &App, f: &mut Frame, area: Rect, key: &str) {
    let Some(d) = app.drill.as_ref() else {
        f.render_widget(Paragraph::new(format!("reading the flows of {key}…")), area);
        return;
    };
    let [title, grid] = Layout::vertical([Constraint::Length(1), Constraint::Min(2)]).areas(area);
    f.render_widget(Paragraph::new(drill_title(d, title.width as usize)).style(bold()), title);
    let [upper, lower] = Layout::vertical([Constraint::Fill(1); 2]).areas(grid);
    let [a, b] = Layout::horizontal([Constraint::Fill(1); 2]).spacing(1).areas(upper);
    let [c, e] = Layout::horizontal([Constraint::Fill(1); 2]).spacing(1).areas(lower);
    summary(app, f, a, "DESTINATION", "FLOWS", &d.destinations);
    summary(app, f, b, "PORT", "FLOWS", &d.ports);
    summary(app, f, c, "STATE", "FLOWS", &d.states);
    summary(app, f, e, "MOST IDLE", "IDLE s", &d.most_idle);
}

/// "key: N flows", the key truncated so the count stays whole.
fn drill_title(d: &Drill, width: usize) -> String {
    let tail = format!(": {} flows", d.flows);
    format!("{}{tail}", truncate(&d.key, width.saturating_sub(tail.width()).max(MIN_GROUP)))
}

/// One summary of the drill-down: names shrink, numbers stay whole.
fn summary(app: &App, f: &mut Frame, area: Rect, what: &str, unit: &str, rows: &[(String, u64)]) {
    let num = rows.iter().map(|r| r.1.to_string().len()).max().unwrap_or(0).max(unit.len());
    let name = (area.width as usize).saturating_sub(num + SPACING).max(1);
    let head = paint(app, Style::default().fg(Color::Cyan)).patch(bold());
    let body =
        rows.iter().map(|(n, v)| Row::new([Cell::from(truncate(n, name)), right(&v.to_string())]));
    let table = Table::new(body, [Constraint::Length(name as u16), Constraint::Length(num as u16)])
        .header(Row::new([Cell::from(what.to_string()), right(unit)]).style(head))
        .column_spacing(SPACING as u16)
        .flex(Flex::Start);
    f.render_widget(table, area);
}

/// The caps in ctguard's table, the selected one highlighted.
fn draw_caps(app: &App, f: &mut Frame, area: Rect) {
    if app.caps.is_empty() {
        f.render_widget(Paragraph::new("no caps in ctguard's table"), area);
        return;
    }
    let limit = app.caps.iter().map(|c| c.limit.to_string().len()).max().unwrap_or(0).max(5);
    let net = app.caps.iter().map(|c| c.net.width()).max().unwrap_or(0).max(3);
    let room = (area.width as usize).saturating_sub(limit + 2 * SPACING);
    let net = net.min(room.saturating_sub(MIN_GROUP)).max(MIN_GROUP.min(room));
    let guest = room.saturating_sub(net).max(1);
    let row = |c: &CapRow| {
        Row::new([
            Cell::from(truncate(&c.guest, guest)),
            Cell::from(truncate(&c.net, net)),
            right(&c.limit.to_string()),
        ])
    };
    let widths = [guest, net, limit].map(|w| Constraint::Length(w as u16));
    let head = paint(app, Style::default().fg(Color::Cyan)).patch(bold());
    let table = Table::new(app.caps.iter().map(row), widths)
        .header(Row::new([Cell::from("GUEST"), Cell::from("NET"), right("LIMIT")]).style(head))
        .column_spacing(SPACING as u16)
        .flex(Flex::Start)
        .row_highlight_style(selected_style(app));
    let mut state = TableState::default().with_selected(Some(app.caps_idx));
    f.render_stateful_widget(table, area, &mut state);
}

/// The footer: the mode's keys, as many as fit, the main ones (and a kept filter) first.
fn footer(app: &App, width: usize) -> Line<'static> {
    let keys: Vec<String> = match &app.mode {
        Mode::Filter => vec![format!("/{}_", app.filter), "Enter keep".into(), "Esc clear".into()],
        Mode::Drill { .. } => vec!["Esc back".into(), "q quit".into(), "? help".into()],
        Mode::Caps => {
            ["j/k move", "d/x uncap", "Esc back", "q quit", "? help"].map(String::from).into()
        }
        _ => {
            let main = ["q quit", "e evict", "c cap", "? help"].map(String::from);
            let filter = Some(format!("filter /{}", app.filter)).filter(|_| !app.filter.is_empty());
            let more = ["Enter drill", "/ filter", "g group", "s sort", "p pause", "C caps"];
            main.into_iter().chain(filter).chain(more.map(String::from)).collect()
        }
    };
    let mut text = String::new();
    for k in keys {
        if !text.is_empty() && text.width() + 2 + k.width() > width {
            break;
        }
        if !text.is_empty() {
            text.push_str("  ");
        }
        text.push_str(&k);
    }
    Line::from(Span::styled(truncate(&text, width), bold()))
}

/// The help overlay's lines, keys in one column, what they do in the other.
fn help_lines(width: usize) -> Vec<Line<'static>> {
    let keys = HELP.iter().map(|(k, _)| k.width()).max().unwrap_or(0);
    HELP.iter()
        .map(|(k, what)| {
            let room = width.saturating_sub(keys + 5);
            Line::from(vec![
                Span::styled(format!("{k:<keys$}  "), bold()),
                Span::raw(truncate(what, room.max(1))),
            ])
        })
        .collect()
}

/// The evict modal's lines: the states with their flows and whether chosen, the total, the
/// command line.
fn evict_lines(app: &App, key: &str, p: Option<&EvictPreview>) -> Vec<Line<'static>> {
    let Some(p) = p else {
        return vec![Line::from(format!("reading the flows of {key}…")), Line::from("Esc cancels")];
    };
    if p.states.is_empty() {
        return vec![
            Line::from(format!("{key} has no flows in a state")),
            Line::from("any key closes"),
        ];
    }
    let mut lines = vec![Line::from(format!("evict flows of {key} in the chosen states?"))];
    let name = p.states.iter().map(|s| s.0.name().len()).max().unwrap_or(0);
    let num = p.states.iter().map(|s| s.1.to_string().len()).max().unwrap_or(0);
    for (i, (state, flows, on)) in p.states.iter().enumerate() {
        let cursor = if i == app.evict_cursor { ">" } else { " " };
        let mark = if *on { "[x]" } else { "[ ]" };
        let digit = if i < 9 { (i + 1).to_string() } else { " ".into() };
        let text = format!("{cursor}{digit} {mark} {:<name$} {flows:>num$}", state.name());
        let style = if i == app.evict_cursor { bold() } else { Style::default() };
        lines.push(Line::from(Span::styled(text, style)));
    }
    let total: u64 = p.states.iter().filter(|s| s.2).map(|s| s.1).sum();
    lines.push(Line::from(format!("chosen: {total} flows")));
    lines.push(Line::from(app.command_line().unwrap_or_default()));
    lines.push(Line::from(Span::styled("y evict  n/Esc cancel  1-9/space toggle", bold())));
    lines
}

/// The cap modal's lines: the networks and the limit, or why it is refused.
fn cap_lines(key: &str, p: Option<&CapPreview>) -> Vec<Line<'static>> {
    let Some(p) = p else {
        return vec![
            Line::from(format!("working out the cap of {key}…")),
            Line::from("Esc cancels"),
        ];
    };
    if let Some(why) = &p.refused {
        return vec![
            Line::from(format!("cannot cap {key}: refused: {why}")),
            Line::from("any key closes"),
        ];
    }
    let mut lines = vec![Line::from(format!("cap {key} (nftables ct count)?"))];
    lines.extend(p.nets.iter().map(|n| Line::from(format!("  {n}"))));
    lines.push(Line::from(format!(
        "limit: {} new connections at most, one count per network",
        p.limit
    )));
    lines.push(Line::from(Span::styled("y cap  n/Esc cancel", bold())));
    lines
}

/// A bordered box over the middle of `area`, sized to its lines; a line too wide is wrapped
/// here (between words where it can), so the box's height is exact and nothing falls off.
fn modal(f: &mut Frame, area: Rect, title: &str, lines: Vec<Line<'static>>) {
    let inner_w = lines.iter().map(|l| l.width()).max().unwrap_or(0).max(title.len() + 2);
    let w = (inner_w + 2).min(area.width as usize);
    let lines: Vec<Line> =
        lines.into_iter().flat_map(|l| wrap_line(l, w.saturating_sub(2))).collect();
    let h = (lines.len() + 2).min(area.height as usize);
    let r = area.centered(Constraint::Length(w as u16), Constraint::Length(h as u16));
    f.render_widget(Clear, r);
    let block = Block::default().borders(Borders::ALL).title(format!(" {title} "));
    f.render_widget(Paragraph::new(lines).block(block), r);
}

/// `line` as lines no wider than `width`, in its first span's style when it had to wrap.
fn wrap_line(line: Line<'static>, width: usize) -> Vec<Line<'static>> {
    if line.width() <= width {
        return vec![line];
    }
    let style = line.spans.first().map_or(Style::default(), |s| s.style);
    let text = line.to_string();
    wrap_words(&text, width.max(1))
        .into_iter()
        .map(|t| Line::from(Span::styled(t, style)))
        .collect()
}

/// `text` broken between words into lines of `width`; a word longer than a line is split.
fn wrap_words(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        for (piece, _) in split(word, width, Style::default()) {
            if !line.is_empty() && line.width() + 1 + piece.width() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&piece);
        }
    }
    lines.push(line);
    lines
}

#[cfg(test)]
mod tests {
    //! Frames from fixed snapshots at 120×40, 80×24 and 60×20, compared with the golden
    //! buffers in `golden/` (`CTGUARD_BLESS=1 cargo test --bin ctguard tui` rewrites them).

    use super::*;
    use crate::cli::tui::fixture;
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ctguard::tally::GroupBy;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;

    const SIZES: [(u16, u16); 3] = [(120, 40), (80, 24), (60, 20)];

    fn render(app: &App, w: u16, h: u16) -> Buffer {
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        term.draw(|f| app.draw(f)).unwrap();
        term.backend().buffer().clone()
    }

    /// The buffer's symbols, row by row, trailing blanks trimmed.
    fn text(buf: &Buffer) -> String {
        let area = buf.area;
        let mut out = String::new();
        for y in 0..area.height {
            let row: String = (0..area.width).map(|x| buf[(x, y)].symbol()).collect();
            out.push_str(row.trim_end());
            out.push('\n');
        }
        out
    }

    /// Compares `got` with `golden/<name>.txt`, or rewrites it under `CTGUARD_BLESS`.
    fn golden(name: &str, got: &str) {
        let path = format!("{}/src/cli/tui/golden/{name}.txt", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("CTGUARD_BLESS").is_some() {
            std::fs::write(&path, got).unwrap();
            return;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e} (CTGUARD_BLESS=1 writes it)"));
        assert!(want == got, "{name} differs from {path} (CTGUARD_BLESS=1 rewrites it):\n{got}");
    }

    fn press(app: &mut App, keys: &str) {
        for c in keys.chars() {
            app.key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        }
    }

    fn press_code(app: &mut App, code: KeyCode) {
        app.key(KeyEvent::new(code, KeyModifiers::NONE));
    }

    #[test]
    fn the_table_at_each_size() {
        for (w, h) in SIZES {
            golden(&format!("table_{w}x{h}"), &text(&render(&fixture::app(false), w, h)));
        }
    }

    #[test]
    fn the_screens_at_each_size() {
        type Setup = fn(&mut App);
        let screens: [(&str, Setup); 9] = [
            ("help", |a| press(a, "?")),
            ("evict_waiting", |a| press(a, "e")),
            ("evict", |a| {
                press(a, "e");
                a.set_evict_preview(fixture::evict_preview("runaway"));
                press(a, "j ");
            }),
            ("cap", |a| {
                press(a, "c");
                a.set_cap_preview(fixture::cap_preview("runaway"));
            }),
            ("cap_refused", |a| {
                press(a, "c");
                a.set_cap_preview(fixture::cap_refused("runaway"));
            }),
            ("drill", |a| {
                press_code(a, KeyCode::Enter);
                a.set_drill(fixture::drill("runaway"));
            }),
            ("caps", |a| {
                press(a, "Cj");
                a.set_caps(fixture::caps());
            }),
            ("report_paused_busy", |a| {
                press(a, "p");
                a.set_busy(Some("evicting runaway…".into()));
                a.set_report(fixture::report());
            }),
            ("filter", |a| press(a, "/e")),
        ];
        for (name, setup) in screens {
            for (w, h) in SIZES {
                let mut app = fixture::app(false);
                setup(&mut app);
                golden(&format!("{name}_{w}x{h}"), &text(&render(&app, w, h)));
            }
        }
    }

    #[test]
    fn empty_and_in_sync() {
        let mut app = fixture::app(false);
        app.set_data(fixture::overtaken());
        golden("in_sync_80x24", &text(&render(&app, 80, 24)));
        app.set_data(Data::default());
        golden("empty_60x20", &text(&render(&app, 60, 20)));
        press(&mut app, "/x");
        press_code(&mut app, KeyCode::Enter);
        let screen = text(&render(&app, 60, 20));
        assert!(screen.contains("no group matches \"x\""), "{screen}");
        assert!(
            screen.ends_with("q quit  e evict  c cap  ? help  filter /x  Enter drill\n"),
            "{screen}"
        );
    }

    /// Every visible row's numbers appear whole on its line, at every size, and each state
    /// column shown is whole too.
    #[test]
    fn no_number_is_cut() {
        for (w, h) in SIZES.into_iter().chain([(40, 12), (50, 15), (70, 20), (100, 30)]) {
            let app = fixture::app(false);
            let screen = text(&render(&app, w, h));
            let rows = app.rows();
            let cols = columns(w as usize, &rows, &state_columns(&app.data));
            let visible = app.page.get().min(rows.len());
            assert!(visible >= 1, "{w}x{h}: no row visible");
            for g in &rows[..visible] {
                let key = truncate(&g.key, cols.group);
                let line = screen.lines().find(|l| l.starts_with(&key)).unwrap_or_else(|| {
                    panic!("{w}x{h}: no line for {key}:\n{screen}");
                });
                let words: Vec<&str> = line[key.len()..].split_whitespace().collect();
                let mut want = vec![g.entries.to_string()];
                want.extend(cols.share.map(|_| share(g.entries, app.data.matched)));
                want.extend(cols.states.iter().map(|&(c, _)| state_of(g, c).to_string()));
                assert_eq!(words, want, "{w}x{h}: {line:?}");
            }
            assert!(cols.total() <= w as usize, "{w}x{h}: {cols:?}");
        }
    }

    #[test]
    fn columns_drop_fewest_flows_first_then_share() {
        let app = fixture::app(false);
        let rows = app.rows();
        let states = state_columns(&app.data);
        let names = |w: usize| {
            let c = columns(w, &rows, &states);
            let mut v: Vec<&str> = c.states.iter().map(|&(c, _)| column_name(c)).collect();
            if c.share.is_some() {
                v.push("SHARE");
            }
            (c.group, v)
        };
        // The columns left once the first `drop` of the documented order are gone, in the
        // table's order.
        let order = ["SYN_SENT", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "TIME_WAIT", "NON_TCP"];
        let drops = ["FIN_WAIT", "SYN_SENT", "CLOSE_WAIT", "NON_TCP", "TIME_WAIT", "ESTABLISHED"];
        let all = |drop: usize| {
            let gone = &drops[..drop.min(drops.len())];
            let mut v: Vec<&str> = order.into_iter().filter(|c| !gone.contains(c)).collect();
            if drop <= drops.len() {
                v.push("SHARE");
            }
            v
        };
        // Fewest flows first: FIN_WAIT (7), SYN_SENT (17), CLOSE_WAIT (40), NON_TCP (2420),
        // TIME_WAIT (2663), ESTABLISHED; then SHARE. GROUP shrinks first, to 8 at the least.
        let want = [(120, 40, 0), (100, 26, 0), (90, 16, 0), (80, 15, 1), (70, 14, 2), (60, 15, 3)];
        let want = want.into_iter().chain([(50, 13, 4), (40, 13, 5), (30, 15, 6), (20, 12, 7)]);
        for (w, group, dropped) in want {
            assert_eq!(names(w), (group, all(dropped)), "at {w} columns");
        }
        assert!(HELP.iter().any(|(_, what)| what.contains("fewest flows, then SHARE")));
    }

    #[test]
    fn truncation_marks_the_cut() {
        assert_eq!(truncate("mail-relay", 8), "mail-re…");
        assert_eq!(truncate("web-7", 8), "web-7");
        assert_eq!(truncate("exactly8", 8), "exactly8");
    }

    /// Without colour the only styles are bold and reversed; the selection is reversed.
    #[test]
    fn no_colour_is_plain() {
        let mut app = fixture::app(false);
        press(&mut app, "p");
        let buf = render(&app, 120, 40);
        let plain = Modifier::BOLD | Modifier::REVERSED;
        for cell in buf.content() {
            assert_eq!((cell.fg, cell.bg), (Color::Reset, Color::Reset), "{cell:?}");
            assert!(plain.contains(cell.modifier), "{cell:?}");
        }
        let selected = (0..buf.area.height)
            .find(|&y| text(&buf).lines().nth(y as usize).unwrap().starts_with("runaway"));
        assert!(buf[(0, selected.unwrap())].modifier.contains(Modifier::REVERSED));
    }

    /// In colour the gauge follows doctor's thresholds and the selection is highlighted.
    #[test]
    fn colour_gauge_and_selection() {
        let app = fixture::app(true);
        let buf = render(&app, 120, 40);
        assert_eq!(buf[(0, 0)].fg, Color::Red, "98.6% is past doctor's full");
        let gauge = |count: u64| {
            let mut app = fixture::app(true);
            let mut d = fixture::incident();
            (d.header.count, d.header.max) = (Some(count), Some(1000));
            app.set_data(d);
            fill_item(&app, &app.data.header).1.fg
        };
        assert_eq!(gauge(799), Some(Color::Green));
        assert_eq!(gauge(800), Some(Color::Yellow));
        assert_eq!(gauge(899), Some(Color::Yellow));
        assert_eq!(gauge(900), Some(Color::Red));
        let screen = text(&buf);
        let y = screen.lines().position(|l| l.starts_with("runaway")).unwrap();
        assert_eq!(buf[(0, y as u16)].bg, Color::Blue);
    }

    #[test]
    fn the_header_wraps_between_facts() {
        let lines =
            flow(vec![("abc def".into(), Style::default()), ("ghij".into(), Style::default())], 9);
        let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        assert_eq!(text, ["abc def", "ghij"]);
        let lines = flow(vec![("abcdefghijk".into(), Style::default())], 5);
        let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        assert_eq!(text, ["abcde", "fghij", "k"]);
    }

    #[test]
    fn wrapping_keeps_words_whole() {
        let line = "ctguard evict --guest runaway --state ESTABLISHED --yes";
        let want = ["ctguard evict", "--guest runaway", "--state ESTABLISHED", "--yes"];
        assert_eq!(wrap_words(line, 20), want);
        assert_eq!(wrap_words("abcdefghij kl", 4), ["abcd", "efgh", "ij", "kl"]);
    }

    /// A modal's last line stays on screen however its lines wrap.
    #[test]
    fn the_evict_modal_keeps_its_keys_at_60x20() {
        let mut app = fixture::app(false);
        press(&mut app, "e");
        app.set_evict_preview(fixture::evict_preview("runaway"));
        press(&mut app, "23");
        let screen = text(&render(&app, 60, 20));
        assert!(screen.contains("chosen: 246280 flows"), "{screen}");
        assert!(screen.contains("y evict  n/Esc cancel"), "{screen}");
        assert!(screen.contains("ESTABLISHED,SYN_SENT,TIME_WAIT"), "{screen}");
    }

    /// The view scrolls only when the selection leaves it.
    #[test]
    fn scrolling_follows_the_selection() {
        let mut app = fixture::app(false);
        let mut d = fixture::incident();
        d.groups =
            (0..40).map(|i| fixture::group(&format!("guest-{i:02}"), &[(3, 1000 - i)])).collect();
        app.set_data(d);
        let first_row = |app: &App| {
            let screen = text(&render(app, 60, 20));
            screen.lines().find(|l| l.starts_with("guest-")).unwrap()[..8].to_string()
        };
        assert_eq!(first_row(&app), "guest-00");
        press_code(&mut app, KeyCode::End);
        assert_eq!(first_row(&app), "guest-27");
        press(&mut app, "kkk");
        assert_eq!(first_row(&app), "guest-27", "moving inside the page does not scroll");
        press_code(&mut app, KeyCode::PageUp);
        assert_eq!(app.selected().unwrap().key, "guest-23", "a page is the 13 rows shown");
        assert_eq!(first_row(&app), "guest-23");
        press_code(&mut app, KeyCode::Home);
        assert_eq!(first_row(&app), "guest-00");
    }

    #[test]
    fn the_header_says_when_regrouping() {
        let mut app = fixture::app(false);
        press(&mut app, "g");
        assert!(text(&render(&app, 80, 24)).contains("by src (regrouping)"));
        let mut d = fixture::incident();
        d.by = Some(GroupBy::Src);
        app.set_data(d);
        assert!(text(&render(&app, 80, 24)).contains("by src  sort"));
    }
}
