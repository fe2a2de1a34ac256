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
    /// The first row shown at the last frame: the view scrolls only when the selection
    /// leaves it.
    pub(super) offset: Cell<usize>,
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
            offset: Cell::new(0),
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

    /// The live table's keys: moving, sorting, grouping, filtering, and the actions.
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

    /// `s`: the next sort column, in its own order (a vanished state column starts over).
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

    /// `p`: freezes what is shown so the operator can read it; unpausing shows the latest.
    fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if let Some(d) = self.pending.take().filter(|_| !self.paused) {
            self.data = d;
            self.fix_selection();
        }
    }

    /// Typing the filter: every character is text (so `q` is), Enter keeps, Esc clears.
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

    /// The drill-down reads until Esc.
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

    /// Chooses or unchooses the evict preview's `i`th state.
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

    /// Back to the table; a preview is only good for the modal it was asked for.
    fn close_modal(&mut self) {
        self.mode = Mode::Table;
        self.evict = None;
        self.cap = None;
    }

    /// The caps list: moving, `d`/`x` uncap the selected cap's guest, Esc back.
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

#[cfg(test)]
mod tests {
    //! The keys as a state machine: each case presses keys from a start state (runtime answers
    //! are `!`-tokens) and checks the effects asked for and what the app then shows.

    use super::*;
    use crate::cli::tui::fixture;
    use ctguard::flow::TcpState;

    /// A key from its name: a character, or `Enter`, `Esc`, `Space`, `C-c`...
    fn key_of(name: &str) -> KeyEvent {
        let code = match name {
            "Enter" => KeyCode::Enter,
            "Esc" => KeyCode::Esc,
            "Space" => KeyCode::Char(' '),
            "Backspace" => KeyCode::Backspace,
            "Down" => KeyCode::Down,
            "Up" => KeyCode::Up,
            "PgDn" => KeyCode::PageDown,
            "PgUp" => KeyCode::PageUp,
            "Home" => KeyCode::Home,
            "End" => KeyCode::End,
            "C-c" => return KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
            c if c.chars().count() == 1 => KeyCode::Char(c.chars().next().unwrap()),
            other => panic!("no key {other}"),
        };
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    /// The key of the mode waiting for an answer.
    fn waiting(app: &App) -> String {
        match &app.mode {
            Mode::Drill { key } | Mode::Evict { key } | Mode::Cap { key } => key.clone(),
            _ => "none".into(),
        }
    }

    /// Plays `script` on `app`: keys, and the runtime's answers as `!`-tokens. Returns the
    /// effects other than `Effect::None`.
    fn play(app: &mut App, script: &str) -> Vec<Effect> {
        let mut effects = Vec::new();
        for token in script.split_whitespace() {
            let k = waiting(app);
            match token {
                "!drill" => app.set_drill(fixture::drill(&k)),
                "!evict" => app.set_evict_preview(fixture::evict_preview(&k)),
                "!cap" => app.set_cap_preview(fixture::cap_preview(&k)),
                "!refused" => app.set_cap_preview(fixture::cap_refused(&k)),
                "!caps" => app.set_caps(fixture::caps()),
                "!report" => app.set_report(fixture::report()),
                "!overtaken" => app.set_data(fixture::overtaken()),
                "!noweb7" => app.set_data(fixture::without_web7()),
                "!empty" => app.set_data(Data::default()),
                key => effects.push(app.key(key_of(key))),
            }
        }
        effects.retain(|e| *e != Effect::None);
        effects
    }

    fn selected(app: &App) -> Option<String> {
        app.selected().map(|g| g.key.clone())
    }

    fn keys(app: &App) -> Vec<String> {
        app.rows().iter().map(|g| g.key.clone()).collect()
    }

    fn pe(key: &str) -> Effect {
        Effect::PreviewEvict { key: key.into() }
    }

    fn evict(key: &str, states: &[TcpState]) -> Effect {
        Effect::Evict {
            key: key.into(),
            states: states.iter().map(|s| ProtoState::Tcp(*s)).collect(),
        }
    }

    /// A check of the app after the script.
    type Check = fn(&App);

    fn at_table(app: &App) {
        assert_eq!(app.mode, Mode::Table);
    }

    #[test]
    fn keys_as_a_state_machine() {
        use TcpState::{Established as Est, SynSent, TimeWait};
        let cases: Vec<(&str, Vec<Effect>, Check)> = vec![
            // Quit from any mode; `q` is text while typing a filter, Ctrl-C is not.
            ("q", vec![Effect::Quit], at_table),
            ("C-c", vec![Effect::Quit], at_table),
            ("e !evict q", vec![pe("runaway"), Effect::Quit], |_| {}),
            ("C !caps q", vec![Effect::ListCaps, Effect::Quit], |_| {}),
            ("Enter q", vec![Effect::Drill { key: "runaway".into() }, Effect::Quit], |_| {}),
            ("/ q", vec![], |a| {
                assert_eq!((a.mode.clone(), a.filter.as_str()), (Mode::Filter, "q"))
            }),
            ("/ q C-c", vec![Effect::Quit], |_| {}),
            // Moving.
            ("j", vec![], |a| assert_eq!(selected(a).as_deref(), Some("web-7"))),
            ("Down Down Up", vec![], |a| assert_eq!(selected(a).as_deref(), Some("web-7"))),
            ("j j k", vec![], |a| assert_eq!(selected(a).as_deref(), Some("web-7"))),
            ("k Up", vec![], |a| assert_eq!(selected(a).as_deref(), Some("runaway"))),
            ("End", vec![], |a| assert_eq!(selected(a).as_deref(), Some("(none)"))),
            ("End j", vec![], |a| assert_eq!(selected(a).as_deref(), Some("(none)"))),
            ("End Home", vec![], |a| assert_eq!(selected(a).as_deref(), Some("runaway"))),
            ("PgDn", vec![], |a| assert_eq!(selected(a).as_deref(), Some("(none)"))),
            ("PgDn PgUp", vec![], |a| assert_eq!(selected(a).as_deref(), Some("runaway"))),
            // Sorting: entries, key, then each state column with flows; `S` reverses.
            ("s", vec![], |a| {
                assert_eq!(a.sort, SortBy::Key);
                assert_eq!(keys(a)[0], "(none)");
                assert_eq!(
                    selected(a).as_deref(),
                    Some("runaway"),
                    "the selection follows its key"
                );
            }),
            ("s s", vec![], |a| {
                assert_eq!(a.sort, SortBy::State(1));
                assert_eq!(keys(a)[..2], ["runaway", "mail-relay-with-a-rather-long-guest-name"]);
            }),
            ("s s s", vec![], |a| assert_eq!(a.sort, SortBy::State(3))),
            ("s s s s s s s s", vec![], |a| assert_eq!(a.sort, SortBy::Entries)),
            ("S", vec![], |a| {
                assert!(a.reversed);
                assert_eq!(keys(a)[0], "(none)");
                assert_eq!(selected(a).as_deref(), Some("runaway"));
            }),
            ("S S", vec![], |a| assert_eq!(keys(a)[0], "runaway")),
            ("S s", vec![], |a| assert!(!a.reversed, "a new sort column starts in its own order")),
            // Grouping.
            ("g", vec![Effect::Regroup(GroupBy::Src)], |a| assert_eq!(a.by(), GroupBy::Src)),
            (
                "g g g",
                vec![
                    Effect::Regroup(GroupBy::Src),
                    Effect::Regroup(GroupBy::SrcNet(24, 64)),
                    Effect::Regroup(GroupBy::Guest),
                ],
                |a| assert_eq!(a.by(), GroupBy::Guest),
            ),
            // Filter.
            ("/ w e b Enter", vec![], |a| {
                at_table(a);
                assert_eq!(keys(a), ["web-7"]);
                assert_eq!(selected(a).as_deref(), Some("web-7"));
            }),
            ("/ w e x Backspace b Enter", vec![], |a| assert_eq!(a.filter, "web")),
            ("/ W E B Enter", vec![], |a| assert_eq!(keys(a), ["web-7"], "case-insensitive")),
            ("/ w e b Esc", vec![], |a| {
                at_table(a);
                assert_eq!(keys(a).len(), 6);
            }),
            ("/ w e b Enter Esc", vec![], |a| assert_eq!(a.filter, "")),
            ("/ w e b Enter / d b Enter", vec![], |a| assert_eq!(keys(a), ["db-primary"])),
            ("/ z z z Enter e c Enter", vec![], |a| {
                at_table(a);
                assert_eq!(selected(a), None);
            }),
            // Drill-down.
            ("Enter", vec![Effect::Drill { key: "runaway".into() }], |a| {
                assert_eq!(a.mode, Mode::Drill { key: "runaway".into() });
                assert_eq!(a.drill, None);
            }),
            ("j Enter !drill", vec![Effect::Drill { key: "web-7".into() }], |a| {
                assert_eq!(a.drill.as_ref().map(|d| d.key.as_str()), Some("web-7"));
            }),
            ("Enter !drill j s Esc", vec![Effect::Drill { key: "runaway".into() }], |a| {
                at_table(a);
                assert_eq!(a.drill, None);
                assert_eq!((a.sort, selected(a).as_deref()), (SortBy::Entries, Some("runaway")));
            }),
            ("Enter Esc !drill", vec![Effect::Drill { key: "runaway".into() }], |a| {
                assert_eq!(a.drill, None, "a late answer is dropped");
            }),
            // Evict: ESTABLISHED chosen, digits and space toggle, y confirms, else cancels.
            ("e", vec![pe("runaway")], |a| {
                assert_eq!(a.mode, Mode::Evict { key: "runaway".into() })
            }),
            ("e !evict y", vec![pe("runaway"), evict("runaway", &[Est])], at_table),
            ("j e !evict y", vec![pe("web-7"), evict("web-7", &[Est])], at_table),
            ("e !evict 2 y", vec![pe("runaway"), evict("runaway", &[Est, SynSent])], at_table),
            ("e !evict j Space y", vec![pe("runaway"), evict("runaway", &[Est, SynSent])], |_| {}),
            (
                "e !evict Down Down Space Up Up Space y",
                vec![pe("runaway"), evict("runaway", &[TimeWait])],
                |_| {},
            ),
            ("e !evict 2 3 2 y", vec![pe("runaway"), evict("runaway", &[Est, TimeWait])], |_| {}),
            ("e !evict 1 y", vec![pe("runaway")], |a| {
                assert_eq!(a.mode, Mode::Evict { key: "runaway".into() }, "y with no state stays");
            }),
            ("e !evict 9", vec![pe("runaway")], |a| assert_eq!(a.chosen().len(), 1)),
            ("e !evict 2", vec![pe("runaway")], |a| {
                let line = a.command_line().unwrap();
                assert_eq!(
                    line,
                    "ctguard evict --guest runaway --state ESTABLISHED,SYN_SENT --yes"
                );
            }),
            ("e !evict n", vec![pe("runaway")], |a| {
                at_table(a);
                assert_eq!(a.evict, None);
            }),
            ("e !evict Esc", vec![pe("runaway")], at_table),
            ("e !evict x y", vec![pe("runaway")], at_table),
            ("e y", vec![pe("runaway")], at_table),
            ("e Esc !evict", vec![pe("runaway")], |a| assert_eq!(a.evict, None)),
            // Cap.
            ("c", vec![Effect::PreviewCap { key: "runaway".into() }], |a| {
                assert_eq!(a.mode, Mode::Cap { key: "runaway".into() });
            }),
            (
                "c !cap y",
                vec![
                    Effect::PreviewCap { key: "runaway".into() },
                    Effect::Cap { key: "runaway".into() },
                ],
                at_table,
            ),
            ("c !cap n", vec![Effect::PreviewCap { key: "runaway".into() }], at_table),
            ("c !cap Esc", vec![Effect::PreviewCap { key: "runaway".into() }], at_table),
            ("c !cap j", vec![Effect::PreviewCap { key: "runaway".into() }], at_table),
            ("c !refused y", vec![Effect::PreviewCap { key: "runaway".into() }], at_table),
            ("c y", vec![Effect::PreviewCap { key: "runaway".into() }], at_table),
            // Caps list.
            ("C", vec![Effect::ListCaps], |a| assert_eq!(a.mode, Mode::Caps)),
            (
                "C !caps d",
                vec![Effect::ListCaps, Effect::Uncap { guest: "runaway".into() }],
                |_| {},
            ),
            (
                "C !caps j j x",
                vec![Effect::ListCaps, Effect::Uncap { guest: "web-7".into() }],
                |_| {},
            ),
            ("C !caps End j j k", vec![Effect::ListCaps], |a| assert_eq!(a.caps_idx, 1)),
            ("C d", vec![Effect::ListCaps], |a| assert_eq!(a.mode, Mode::Caps)),
            ("C !caps Esc", vec![Effect::ListCaps], at_table),
            // Pause: the previous data stays, the latest shows on unpausing.
            ("p", vec![], |a| assert!(a.paused)),
            ("p !overtaken", vec![], |a| assert_eq!(keys(a)[0], "runaway")),
            ("p !overtaken p", vec![], |a| {
                assert!(!a.paused);
                assert_eq!(keys(a)[0], "web-7");
                assert_eq!(selected(a).as_deref(), Some("runaway"));
            }),
            ("p p", vec![], |a| assert_eq!(keys(a)[0], "runaway")),
            ("Enter p", vec![Effect::Drill { key: "runaway".into() }], |a| assert!(a.paused)),
            // The selection follows its key; when the key goes, it stays on the same row.
            ("!overtaken", vec![], |a| assert_eq!(selected(a).as_deref(), Some("runaway"))),
            ("j !overtaken", vec![], |a| {
                assert_eq!(a.sel_idx, 0);
                assert_eq!(selected(a).as_deref(), Some("web-7"));
            }),
            ("j !noweb7", vec![], |a| assert_eq!(selected(a).as_deref(), Some("db-primary"))),
            ("End !empty", vec![], |a| assert_eq!(selected(a), None)),
            ("!empty e c Enter", vec![], at_table),
            // Help: `?` shows it, any key puts it away (and does nothing else), q still quits.
            ("?", vec![], |a| assert!(a.help)),
            ("? ?", vec![], |a| assert!(!a.help)),
            ("? j", vec![], |a| {
                assert!(!a.help);
                assert_eq!(selected(a).as_deref(), Some("runaway"));
            }),
            ("? q", vec![Effect::Quit], |_| {}),
            ("/ ? Enter", vec![], |a| assert_eq!((a.help, a.filter.as_str()), (false, "?"))),
            // A report stays until any key, which does nothing else.
            ("!report", vec![], |a| assert!(a.report.is_some())),
            ("!report j", vec![], |a| {
                assert_eq!(a.report, None);
                assert_eq!(selected(a).as_deref(), Some("runaway"));
            }),
            ("!report e", vec![], at_table),
            ("!report q", vec![Effect::Quit], |_| {}),
        ];
        for (script, want, check) in cases {
            let mut app = fixture::app(false);
            let got = play(&mut app, script);
            assert_eq!(got, want, "effects of {script:?}");
            check(&app);
        }
    }

    #[test]
    fn key_releases_are_ignored() {
        let mut app = fixture::app(false);
        let q =
            KeyEvent::new_with_kind(KeyCode::Char('q'), KeyModifiers::NONE, KeyEventKind::Release);
        assert_eq!(app.key(q), Effect::None);
    }

    #[test]
    fn a_single_grouping_does_not_regroup() {
        let mut app = App::new(GroupBy::Src, vec![GroupBy::Src], false, Box::new(fixture::command));
        assert_eq!(app.key(key_of("g")), Effect::None);
        let mut app = App::new(GroupBy::Src, vec![], false, Box::new(fixture::command));
        assert_eq!(app.key(key_of("g")), Effect::None);
    }

    #[test]
    fn busy_and_caps_are_kept() {
        let mut app = fixture::app(false);
        app.set_busy(Some("evicting runaway…".into()));
        assert_eq!(app.busy.as_deref(), Some("evicting runaway…"));
        app.set_caps(fixture::caps());
        app.caps_idx = 2;
        app.set_caps(fixture::caps()[..1].to_vec());
        assert_eq!(app.caps_idx, 0, "the caps selection stays in the list");
        app.set_busy(None);
        assert_eq!(app.busy, None);
    }
}
