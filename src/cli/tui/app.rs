//! The interactive `watch`'s state machine: (state, key) → (state, effect). It holds what is
//! shown (the data, the selection, the modes and modals) and never does anything itself: a key
//! that needs the kernel returns an [`Effect`] for the runtime, whose answer comes back through a
//! `set_*` call. That keeps every key testable without a kernel or a terminal.

use crate::cli::tui::model::{CapPreview, CapRow, Data, Drill, Effect, EvictPreview, Group};
use crate::cli::tui::render;
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ctguard::flow::ProtoState;
use ctguard::tally::GroupBy;
use std::cell::Cell;

/// Builds the `ctguard evict ...` command line equivalent to an eviction of a group's states.
pub type CommandLine = Box<dyn Fn(&str, &[ProtoState]) -> String>;

/// The column the table is sorted by (`s` cycles, `S` reverses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    /// Entries, most first.
    Entries,
    /// The group's key, alphabetically.
    Key,
    /// A state column ([`ctguard::tally::column_name`]), most first.
    State(usize),
}

/// What the screen is showing, beyond the header.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// The live table.
    Table,
    /// Typing the filter (`/`): keys are text.
    Filter,
    /// The drill-down of a group (`Enter`), waiting for or showing its [`Drill`].
    Drill { key: String },
    /// The evict modal (`e`), waiting for or showing its [`EvictPreview`].
    Evict { key: String },
    /// The cap modal (`c`), waiting for or showing its [`CapPreview`].
    Cap { key: String },
    /// The list of caps (`C`).
    Caps,
}

/// The rows a page key moves when no frame has told the table's height yet.
const DEFAULT_PAGE: usize = 10;

/// The interactive view's whole state.
pub struct App {
    pub(super) by: GroupBy,
    choices: Vec<GroupBy>,
    pub(super) colour: bool,
    command: CommandLine,
    /// The data on screen, and while paused the latest one received.
    pub(super) data: Data,
    pending: Option<Data>,
    pub(super) paused: bool,
    pub(super) sort: SortBy,
    pub(super) reversed: bool,
    pub(super) filter: String,
    /// The selected row, by key (it follows its group across updates) and by index (where the
    /// selection falls when its group goes away).
    sel_key: Option<String>,
    pub(super) sel_idx: usize,
    pub(super) mode: Mode,
    pub(super) help: bool,
    pub(super) busy: Option<String>,
    pub(super) report: Option<Vec<String>>,
    pub(super) drill: Option<Drill>,
    pub(super) evict: Option<EvictPreview>,
    pub(super) evict_cursor: usize,
    pub(super) cap: Option<CapPreview>,
    pub(super) caps: Vec<CapRow>,
    pub(super) caps_idx: usize,
    /// The table's height at the last frame: what PageDown/PageUp move.
    pub(super) page: Cell<usize>,
}

impl App {
    /// A view grouped by `by`, where `g` cycles through `choices`, drawn in colour when
    /// `colour`, and whose evict preview shows `command`'s line.
    pub fn new(by: GroupBy, choices: Vec<GroupBy>, colour: bool, command: CommandLine) -> App {
        App {
            by,
            choices,
            colour,
            command,
            data: Data::default(),
            pending: None,
            paused: false,
            sort: SortBy::Entries,
            reversed: false,
            filter: String::new(),
            sel_key: None,
            sel_idx: 0,
            mode: Mode::Table,
            help: false,
            busy: None,
            report: None,
            drill: None,
            evict: None,
            evict_cursor: 0,
            cap: None,
            caps: Vec::new(),
            caps_idx: 0,
            page: Cell::new(DEFAULT_PAGE),
        }
    }

    /// A new snapshot: shown at once, or kept for when the view is unpaused.
    pub fn set_data(&mut self, d: Data) {
        if self.paused {
            self.pending = Some(d);
        } else {
            self.data = d;
            self.fix_selection();
        }
    }

    /// The drill-down asked for; dropped when the operator has left it meanwhile.
    pub fn set_drill(&mut self, d: Drill) {
        if self.mode == (Mode::Drill { key: d.key.clone() }) {
            self.drill = Some(d);
        }
    }

    /// The evict preview asked for; dropped when the operator has cancelled meanwhile.
    pub fn set_evict_preview(&mut self, p: EvictPreview) {
        if self.mode == (Mode::Evict { key: p.key.clone() }) {
            self.evict_cursor = 0;
            self.evict = Some(p);
        }
    }

    /// The cap preview asked for; dropped when the operator has cancelled meanwhile.
    pub fn set_cap_preview(&mut self, p: CapPreview) {
        if self.mode == (Mode::Cap { key: p.key.clone() }) {
            self.cap = Some(p);
        }
    }

    /// The caps in ctguard's table (after `C`, and after each uncap).
    pub fn set_caps(&mut self, caps: Vec<CapRow>) {
        self.caps_idx = self.caps_idx.min(caps.len().saturating_sub(1));
        self.caps = caps;
    }

    /// The outcome of an eviction, cap or uncap: shown until any key.
    pub fn set_report(&mut self, lines: Vec<String>) {
        self.report = Some(lines);
    }

    /// What the runtime is doing now ("evicting web-7…"), shown in the header.
    pub fn set_busy(&mut self, what: Option<String>) {
        self.busy = what;
    }

    /// The grouping asked for (changed by `g`).
    pub fn by(&self) -> GroupBy {
        self.by
    }

    /// Draws the whole screen.
    pub fn draw(&self, f: &mut ratatui::Frame) {
        render::draw(self, f);
    }

    /// Answers one key: changes the state and says what the runtime should do.
    pub fn key(&mut self, k: KeyEvent) -> Effect {
        if k.kind == KeyEventKind::Release {
            return Effect::None;
        }
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Effect::Quit;
        }
        if self.mode == Mode::Filter {
            self.filter_key(k.code);
            return Effect::None;
        }
        if k.code == KeyCode::Char('q') {
            return Effect::Quit;
        }
        // A report and the help are read, then any key puts them away.
        if self.report.take().is_some() {
            return Effect::None;
        }
        if self.help {
            self.help = false;
            return Effect::None;
        }
        if k.code == KeyCode::Char('?') {
            self.help = true;
            return Effect::None;
        }
        match self.mode.clone() {
            Mode::Table => self.table_key(k.code),
            Mode::Filter => Effect::None,
            Mode::Drill { .. } => self.drill_key(k.code),
            Mode::Evict { key } => self.evict_key(key, k.code),
            Mode::Cap { key } => self.cap_key(key, k.code),
            Mode::Caps => self.caps_key(k.code),
        }
    }

    /// The groups shown, filtered and sorted.
    pub(super) fn rows(&self) -> Vec<&Group> {
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<&Group> =
            self.data.groups.iter().filter(|g| g.key.to_lowercase().contains(&needle)).collect();
        rows.sort_by(|a, b| {
            let natural = match self.sort {
                SortBy::Entries => b.entries.cmp(&a.entries),
                SortBy::Key => a.key.cmp(&b.key),
                SortBy::State(c) => state_of(b, c).cmp(&state_of(a, c)),
            };
            let order = if self.reversed { natural.reverse() } else { natural };
            order.then_with(|| a.key.cmp(&b.key))
        });
        rows
    }

    /// The selected group, if any row is shown.
    pub(super) fn selected(&self) -> Option<&Group> {
        self.rows().get(self.sel_idx).copied()
    }

    /// The evict preview's chosen states.
    pub(super) fn chosen(&self) -> Vec<ProtoState> {
        self.evict
            .iter()
            .flat_map(|p| p.states.iter())
            .filter(|(_, _, on)| *on)
            .map(|(s, _, _)| *s)
            .collect()
    }

    /// The command line an eviction of the chosen states would run.
    pub(super) fn command_line(&self) -> Option<String> {
        self.evict.as_ref().map(|p| (self.command)(&p.key, &self.chosen()))
    }

    /// Keeps the selection on its group when the group is still shown, else on the same row.
    fn fix_selection(&mut self) {
        let keys: Vec<String> = self.rows().iter().map(|g| g.key.clone()).collect();
        if let Some(i) = self.sel_key.as_ref().and_then(|k| keys.iter().position(|x| x == k)) {
            self.sel_idx = i;
            return;
        }
        self.sel_idx = self.sel_idx.min(keys.len().saturating_sub(1));
        self.sel_key = keys.get(self.sel_idx).cloned();
    }

    /// Selects row `idx` (clamped to the rows shown).
    fn select(&mut self, idx: usize) {
        let keys: Vec<String> = self.rows().iter().map(|g| g.key.clone()).collect();
        self.sel_idx = idx.min(keys.len().saturating_sub(1));
        self.sel_key = keys.get(self.sel_idx).cloned();
    }

    /// The state columns `s` cycles through: those with flows in the data.
    fn sort_cycle(&self) -> Vec<SortBy> {
        let states = render::state_columns(&self.data).into_iter().map(|(c, _)| SortBy::State(c));
        [SortBy::Entries, SortBy::Key].into_iter().chain(states).collect()
    }

    fn table_key(&mut self, code: KeyCode) -> Effect {
        let page = self.page.get().max(1);
        match code {
            KeyCode::Char('j') | KeyCode::Down => self.select(self.sel_idx + 1),
            KeyCode::Char('k') | KeyCode::Up => self.select(self.sel_idx.saturating_sub(1)),
            KeyCode::PageDown => self.select(self.sel_idx + page),
            KeyCode::PageUp => self.select(self.sel_idx.saturating_sub(page)),
            KeyCode::Home => self.select(0),
            KeyCode::End => self.select(usize::MAX),
            KeyCode::Char('s') => self.next_sort(),
            KeyCode::Char('S') => {
                self.reversed = !self.reversed;
                self.fix_selection();
            }
            KeyCode::Char('g') => return self.regroup(),
            KeyCode::Char('/') => {
                self.filter.clear();
                self.mode = Mode::Filter;
                self.fix_selection();
            }
            KeyCode::Esc => {
                self.filter.clear();
                self.fix_selection();
            }
            KeyCode::Char('p') => self.toggle_pause(),
            KeyCode::Char('C') => {
                self.mode = Mode::Caps;
                return Effect::ListCaps;
            }
            KeyCode::Enter | KeyCode::Char('e') | KeyCode::Char('c') => return self.act(code),
            _ => {}
        }
        Effect::None
    }

    /// `Enter`, `e`, `c` on the selected group: a mode waiting for the runtime's answer.
    fn act(&mut self, code: KeyCode) -> Effect {
        let Some(key) = self.selected().map(|g| g.key.clone()) else {
            return Effect::None;
        };
        match code {
            KeyCode::Enter => {
                self.drill = None;
                self.mode = Mode::Drill { key: key.clone() };
                Effect::Drill { key }
            }
            KeyCode::Char('e') => {
                self.evict = None;
                self.mode = Mode::Evict { key: key.clone() };
                Effect::PreviewEvict { key }
            }
            _ => {
                self.cap = None;
                self.mode = Mode::Cap { key: key.clone() };
                Effect::PreviewCap { key }
            }
        }
    }

    fn next_sort(&mut self) {
        let cycle = self.sort_cycle();
        let next = match cycle.iter().position(|s| *s == self.sort) {
            Some(i) => cycle[(i + 1) % cycle.len()],
            None => SortBy::Entries,
        };
        self.sort = next;
        self.reversed = false;
        self.fix_selection();
    }

    /// The next grouping among the choices; the new groups start at the top.
    fn regroup(&mut self) -> Effect {
        let next = match self.choices.iter().position(|b| *b == self.by) {
            Some(i) => self.choices[(i + 1) % self.choices.len()],
            None => match self.choices.first() {
                Some(b) => *b,
                None => return Effect::None,
            },
        };
        if next == self.by {
            return Effect::None;
        }
        self.by = next;
        self.sel_key = None;
        self.sel_idx = 0;
        Effect::Regroup(next)
    }

    fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if let Some(d) = self.pending.take().filter(|_| !self.paused) {
            self.data = d;
            self.fix_selection();
        }
    }

    fn filter_key(&mut self, code: KeyCode) {
        match code {
            KeyCode::Char(c) => {
                self.filter.push(c);
            }
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Enter => self.mode = Mode::Table,
            KeyCode::Esc => {
                self.filter.clear();
                self.mode = Mode::Table;
            }
            _ => {}
        }
        self.fix_selection();
    }

    fn drill_key(&mut self, code: KeyCode) -> Effect {
        match code {
            KeyCode::Esc => {
                self.mode = Mode::Table;
                self.drill = None;
            }
            KeyCode::Char('p') => self.toggle_pause(),
            _ => {}
        }
        Effect::None
    }

    /// The evict modal: digits and space toggle states, j/k move the cursor, `y` evicts the
    /// chosen states (not none: that would be every state), anything else cancels.
    fn evict_key(&mut self, key: String, code: KeyCode) -> Effect {
        let n = self.evict.as_ref().map_or(0, |p| p.states.len());
        match code {
            KeyCode::Char(d @ '1'..='9') if n > 0 => {
                self.toggle_state(d as usize - '1' as usize);
            }
            KeyCode::Char(' ') if n > 0 => self.toggle_state(self.evict_cursor),
            KeyCode::Char('j') | KeyCode::Down if n > 0 => {
                self.evict_cursor = (self.evict_cursor + 1).min(n - 1);
            }
            KeyCode::Char('k') | KeyCode::Up if n > 0 => {
                self.evict_cursor = self.evict_cursor.saturating_sub(1);
            }
            KeyCode::Char('y') if n > 0 => {
                let states = self.chosen();
                if states.is_empty() {
                    return Effect::None;
                }
                self.close_modal();
                return Effect::Evict { key, states };
            }
            _ => self.close_modal(),
        }
        Effect::None
    }

    fn toggle_state(&mut self, i: usize) {
        if let Some(s) = self.evict.as_mut().and_then(|p| p.states.get_mut(i)) {
            s.2 = !s.2;
        }
    }

    /// The cap modal: `y` caps (unless refused), anything else cancels.
    fn cap_key(&mut self, key: String, code: KeyCode) -> Effect {
        let can = self.cap.as_ref().is_some_and(|p| p.refused.is_none());
        self.close_modal();
        if code == KeyCode::Char('y') && can { Effect::Cap { key } } else { Effect::None }
    }

    fn close_modal(&mut self) {
        self.mode = Mode::Table;
        self.evict = None;
        self.cap = None;
    }

    fn caps_key(&mut self, code: KeyCode) -> Effect {
        let last = self.caps.len().saturating_sub(1);
        match code {
            KeyCode::Char('j') | KeyCode::Down => self.caps_idx = (self.caps_idx + 1).min(last),
            KeyCode::Char('k') | KeyCode::Up => self.caps_idx = self.caps_idx.saturating_sub(1),
            KeyCode::Home => self.caps_idx = 0,
            KeyCode::End => self.caps_idx = last,
            KeyCode::Char('d') | KeyCode::Char('x') => {
                if let Some(c) = self.caps.get(self.caps_idx) {
                    return Effect::Uncap { guest: c.guest.clone() };
                }
            }
            KeyCode::Char('p') => self.toggle_pause(),
            KeyCode::Esc => self.mode = Mode::Table,
            _ => {}
        }
        Effect::None
    }
}

/// A group's flows in state column `c`.
pub(super) fn state_of(g: &Group, c: usize) -> u64 {
    g.by_state.get(c).copied().unwrap_or(0)
}
