//! What the interactive `watch` shows, as plain data: the runtime (`run.rs`) fills it from the
//! live engine and the kernel, the view (`app.rs`, `render.rs`) draws it and turns keys into
//! effects. Nothing here talks to a kernel or a terminal, so every frame is testable from a
//! fixed snapshot.

use ctguard::flow::ProtoState;
use ctguard::tally::GroupBy;

/// The fill at which the gauge turns yellow: doctor's "at risk".
pub const YELLOW_FILL: f64 = ctguard::doctor::AT_RISK_FILL;
/// The fill at which the gauge turns red: doctor's "full" once `drop` rises.
pub const RED_FILL: f64 = ctguard::doctor::DROP_MEANS_FULL;

/// The header's facts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    /// The namespace watched (`None`: ctguard's own).
    pub netns: Option<String>,
    /// Entries in the table and its limit, when read.
    pub count: Option<u64>,
    pub max: Option<u64>,
    /// Events per second over the last interval.
    pub new_per_s: f64,
    pub destroy_per_s: f64,
    /// The kernel's counters per second over the last interval (`None` before two readings).
    pub drop_per_s: Option<f64>,
    pub early_drop_per_s: Option<f64>,
    pub insert_failed_per_s: Option<f64>,
    /// Events the kernel dropped for us so far (`None`: not reported), overruns, resyncs.
    pub lost_events: Option<u64>,
    pub overruns: u64,
    pub resyncs: u64,
    /// The counts agree with the kernel's; else why not, in words ("reconciling",
    /// "resyncing after overrun", "out of sync: counts disagree with the table").
    pub synced: bool,
    pub why_not: Option<String>,
}

/// One group of the table: a guest, a source, a network, a state, a zone...
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The group's key as `top` prints it (`web-7`, `172.16.3.5`, `172.16.3.0/24`, ...).
    pub key: String,
    /// Its live flows.
    pub entries: u64,
    /// Its flows per state column, [`ctguard::tally::COLUMNS`] long, in column order
    /// ([`ctguard::tally::column_name`]).
    pub by_state: Vec<u64>,
}

/// One snapshot for the view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Data {
    pub header: Header,
    /// How the groups are keyed.
    pub by: Option<GroupBy>,
    /// Every group, in no particular order (the view sorts).
    pub groups: Vec<Group>,
    /// The flows counted over all groups (the share's denominator).
    pub matched: u64,
}

/// The drill-down of one group (`Enter`): its flows summarised from one dump.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Drill {
    pub key: String,
    /// The group's flows the dump found.
    pub flows: u64,
    /// Most frequent first, at most ten each: destination address, destination port
    /// (`tcp/443`), state.
    pub destinations: Vec<(String, u64)>,
    pub ports: Vec<(String, u64)>,
    pub states: Vec<(String, u64)>,
    /// The most idle flows, most idle first, at most ten: a one-line flow and its idle
    /// seconds.
    pub most_idle: Vec<(String, u64)>,
}

/// What `e` would delete, before `y`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvictPreview {
    pub key: String,
    /// The group's states with flows now, and whether each is chosen (ESTABLISHED is by
    /// default; another key toggles).
    pub states: Vec<(ProtoState, u64, bool)>,
}

/// What `c` would cap, before `y`.
#[derive(Debug, Clone, PartialEq)]
pub struct CapPreview {
    pub key: String,
    /// The networks the rule would cover (protected ones left out), and the limit.
    pub nets: Vec<String>,
    pub limit: u32,
    /// Why it cannot be capped (no network, all protected), when it cannot.
    pub refused: Option<String>,
}

/// A cap in ctguard's table (`C`).
#[derive(Debug, Clone, PartialEq)]
pub struct CapRow {
    pub guest: String,
    pub net: String,
    pub limit: u32,
}

/// What a key asks of the runtime.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Nothing beyond redrawing.
    None,
    /// Quit (exit 0).
    Quit,
    /// Regroup the live counts (`g`): the runtime restarts the engine under this grouping.
    Regroup(GroupBy),
    /// Dump and summarise the group (`Enter`); answered by [`crate::cli::tui::app::App::set_drill`].
    Drill { key: String },
    /// Preview an eviction of the group; answered by `App::set_evict_preview`.
    PreviewEvict { key: String },
    /// Evict the group's flows in `states` (after `y`).
    Evict { key: String, states: Vec<ProtoState> },
    /// Preview a cap on the group; answered by `App::set_cap_preview`.
    PreviewCap { key: String },
    /// Cap the group (after `y`).
    Cap { key: String },
    /// List the caps (`C`); answered by `App::set_caps`.
    ListCaps,
    /// Lift the caps of `guest` (in the caps list).
    Uncap { guest: String },
}
