//! Live counts from conntrack events: the flows a selection holds, keyed by `CTA_ID` and tuple,
//! seeded from a dump and kept exact by NEW, UPDATE and DESTROY. Pure: events in, counts out;
//! the socket, the dump and the clock belong to the caller.
//!
//! The recipe (reference §3): subscribe first, then dump. Every event received after the
//! subscription is applied in order on top of the dump, including those that happened before
//! the dump reached their entry: NEW and UPDATE set a flow's place (an upsert, so a repeat of
//! what the dump saw changes nothing), DESTROY removes it and is a no-op for a flow not held.
//! As long as no event was lost, each flow ends where its last event or, without one, the dump
//! put it. A lost event (ENOBUFS) means a fresh dump: [`LiveTable::replace_with`].
//!
//! Memory per flow is a 64-bit key and a 5-byte place (group index, state column); groups are
//! interned once, and forgotten when their last flow goes (their index is reused), so a long
//! watch over churning sources holds only the groups that have flows.
//!
//! The table is the pure core; [`resync`] decides when it is rebuilt from a dump, and
//! [`watcher`] is the engine around both (subscription, dumps, snapshots to a sink);
//! [`stream`] hands each event on as it comes, without a table.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::event::EventKind;
use crate::flow::Flow;
use crate::guests::GuestMap;
use crate::select::Selector;
use crate::tally::{GroupBy, GroupKey, Tally, column_of};

pub mod resync;
pub mod stream;
pub mod watcher;

pub use resync::{Reason, Resynced, Resyncs};
pub use watcher::{Config, Kernel, Netns, Rates, Shutdown, Sink, View, Watcher};

pub use crate::flow::EntryId;

/// Where a flow is counted: its group and its state column ([`column_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// The group.
    pub group: GroupKey,
    /// The state column.
    pub column: u8,
}

/// One event reduced to what the table needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// NEW, UPDATE or DESTROY.
    pub kind: EventKind,
    /// The flow.
    pub key: EntryId,
    /// Where the flow now counts; `None` when it is outside the selection (an UPDATE can move
    /// a flow out of `--state ESTABLISHED`) and always for DESTROY.
    pub place: Option<Place>,
}

/// Decides for a flow whether it is selected and where it counts.
#[derive(Debug, Clone)]
pub struct Classifier {
    sel: Selector,
    keyer: Tally,
}

impl Classifier {
    /// Flows matching `sel`, grouped by `by` (`guests` names guests for [`GroupBy::Guest`];
    /// shared with every table this classifier makes).
    pub fn new(sel: Selector, by: GroupBy, guests: impl Into<Arc<GuestMap>>) -> Classifier {
        Classifier { sel, keyer: Tally::new(by, guests) }
    }

    /// The selector.
    pub fn selector(&self) -> &Selector {
        &self.sel
    }

    /// Where `flow` counts, or `None` when the selection does not hold it.
    pub fn place(&self, flow: &Flow) -> Option<Place> {
        self.sel
            .matches(flow)
            .then(|| Place { group: self.keyer.key_of(flow), column: column_of(flow) as u8 })
    }

    /// The change an event makes.
    pub fn change(&self, kind: EventKind, flow: &Flow) -> Change {
        let place = if kind == EventKind::Destroy { None } else { self.place(flow) };
        Change { kind, key: flow.identity(), place }
    }

    /// An empty table grouping as this classifier does.
    pub fn empty_table(&self) -> LiveTable {
        LiveTable::with_tally(self.keyer.clone())
    }
}

/// What applying a change did to the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// A flow entered the counts.
    Added,
    /// A held flow moved to another group or state column.
    Moved,
    /// A held flow stayed where it was.
    Kept,
    /// A held flow left the counts.
    Removed,
    /// Nothing: a DESTROY (or an unselected flow) the table did not hold.
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    group: u32,
    column: u8,
}

/// The held flows and their counts per group and state.
#[derive(Debug, Clone)]
pub struct LiveTable {
    flows: HashMap<EntryId, Slot>,
    groups: Vec<GroupKey>,
    index: HashMap<GroupKey, u32>,
    /// Indexes in `groups` of groups that emptied, to reuse.
    free: Vec<u32>,
    tally: Tally,
}

impl LiveTable {
    /// An empty table grouping by `by`.
    pub fn new(by: GroupBy, guests: impl Into<Arc<GuestMap>>) -> LiveTable {
        LiveTable::with_tally(Tally::new(by, guests))
    }

    fn with_tally(mut tally: Tally) -> LiveTable {
        tally.clear();
        LiveTable {
            flows: HashMap::new(),
            groups: Vec::new(),
            index: HashMap::new(),
            free: Vec::new(),
            tally,
        }
    }

    /// Flows held.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// True when no flow is held.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The counts per group and state column (what `top` prints).
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Adds a flow seen by a dump (a repeat of the same key only moves it).
    pub fn seed(&mut self, key: EntryId, place: Place) {
        self.upsert(key, place);
    }

    /// Applies one event.
    pub fn apply(&mut self, change: &Change) -> Effect {
        match (change.kind, change.place) {
            (EventKind::Destroy, _) | (_, None) => self.remove(change.key),
            (_, Some(place)) => self.upsert(change.key, place),
        }
    }

    /// Takes the contents of `fresh` (built with [`LiveTable::seed`] from a dump started after
    /// the subscription), then applies `during`: every event received since that dump started,
    /// in order.
    pub fn replace_with<'a>(
        &mut self,
        fresh: LiveTable,
        during: impl IntoIterator<Item = &'a Change>,
    ) {
        *self = fresh;
        for change in during {
            self.apply(change);
        }
    }

    /// Groups interned now (those holding flows).
    pub fn interned(&self) -> usize {
        self.index.len()
    }

    fn intern(&mut self, key: GroupKey) -> u32 {
        if let Some(i) = self.index.get(&key) {
            return *i;
        }
        let i = match self.free.pop() {
            Some(i) => {
                self.groups[i as usize] = key;
                i
            }
            None => {
                self.groups.push(key);
                (self.groups.len() - 1) as u32
            }
        };
        self.index.insert(key, i);
        i
    }

    /// Uncounts a flow from group `i`; forgets the group when that was its last flow (no
    /// held flow points at it then: every held flow is counted in its group once).
    fn uncount(&mut self, i: u32, column: u8) {
        let group = self.groups[i as usize];
        if self.tally.remove_placed(&group, usize::from(column)) {
            self.index.remove(&group);
            self.free.push(i);
        }
    }

    fn upsert(&mut self, key: EntryId, place: Place) -> Effect {
        let slot = Slot { group: self.intern(place.group), column: place.column };
        match self.flows.insert(key, slot) {
            None => {
                self.tally.add_placed(place.group, usize::from(place.column));
                Effect::Added
            }
            Some(old) if old == slot => Effect::Kept,
            Some(old) => {
                // Count the new place first: a flow moving within its group must not empty it.
                self.tally.add_placed(place.group, usize::from(place.column));
                self.uncount(old.group, old.column);
                Effect::Moved
            }
        }
    }

    fn remove(&mut self, key: EntryId) -> Effect {
        match self.flows.remove(&key) {
            Some(old) => {
                self.uncount(old.group, old.column);
                Effect::Removed
            }
            None => Effect::Ignored,
        }
    }
}

/// Reconciliation period while events can be missing (`nf_conntrack_events` is not 1).
const RECONCILE_SILENT: Duration = Duration::from_secs(30);
/// Reconciliation period when every flow reports events: a safety net only.
const RECONCILE_SAFETY: Duration = Duration::from_secs(300);

/// How often a live count is checked against a dump, for the namespace's
/// `nf_conntrack_events` setting: under 1 every flow reports its events and a dump is only a
/// safety net; under 0 or 2 (or unknown) flows can end silently, and the dump corrects them.
pub fn reconcile_period(events_setting: Option<u64>) -> Duration {
    if events_setting == Some(1) { RECONCILE_SAFETY } else { RECONCILE_SILENT }
}

/// How far the live count may stray from the kernel's entry count (GET_STATS) before it is
/// called wrong: the two are read moments apart, and events still queued on the socket are
/// churn, not error. 64 flows, plus a tenth of a second of events at the current rate.
pub fn churn_band(events_per_s: f64) -> u64 {
    64 + (events_per_s.max(0.0) / 10.0) as u64
}

/// True when `held` flows disagree with the kernel's `table_count` beyond `band`: a selection
/// that takes every flow must hold what the table holds; any other holds at most that.
/// Under `nf_conntrack_events=2` flows created before the first listener end silently, and
/// the held count stays above the table's until a dump corrects it.
pub fn disagrees(held: u64, table_count: u64, selects_all: bool, band: u64) -> bool {
    if selects_all {
        held.abs_diff(table_count) > band
    } else {
        held > table_count.saturating_add(band)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{ProtoState, TcpState, test_tcp};
    use crate::select::parse_cidr;
    use crate::tally::{Row, column_name};
    use EventKind::{Destroy, New, Update};

    fn flow(id: u32, src: &str, sport: u16, state: TcpState) -> Flow {
        Flow { id: Some(id), ..test_tcp(src, "10.9.0.1", sport, 443, state) }
    }

    fn classifier(by: GroupBy) -> Classifier {
        Classifier::new(Selector::default(), by, GuestMap::new())
    }

    /// (group label, state name, count) of every non-zero cell, sorted.
    fn cells(t: &LiveTable) -> Vec<(String, &'static str, u64)> {
        let mut v = Vec::new();
        for (key, row) in t.tally().sorted() {
            for (col, n) in row.by_state.iter().enumerate() {
                if *n > 0 {
                    v.push((t.tally().label(&key), column_name(col), *n));
                }
            }
        }
        v.sort();
        v
    }

    /// What a fresh dump of `flows` would count.
    fn dumped(c: &Classifier, flows: &[Flow]) -> LiveTable {
        let mut t = c.empty_table();
        for f in flows {
            if let Some(p) = c.place(f) {
                t.seed(f.identity(), p);
            }
        }
        t
    }

    #[test]
    fn issue_9_10_held_counts_that_disagree_with_the_table_beyond_churn() {
        // The incident: 18,540 held against a table of 16,201, quiet.
        let band = churn_band(3.0);
        assert_eq!(band, 64);
        assert!(disagrees(18_540, 16_201, true, band));
        assert!(disagrees(18_540, 16_201, false, band), "no selection holds more than the table");
        // A selection may hold fewer than the table; every flow may not.
        assert!(!disagrees(100, 16_201, false, band));
        assert!(disagrees(100, 16_201, true, band));
        // Within the band, and a band that widens with churn.
        assert!(!disagrees(16_201 + 64, 16_201, true, band));
        assert!(!disagrees(16_201, 16_201 + 64, true, band));
        assert!(disagrees(16_201 + 65, 16_201, true, band));
        assert_eq!(churn_band(100_000.0), 64 + 10_000);
        assert!(!disagrees(20_000, 16_201, true, churn_band(100_000.0)));
    }

    #[test]
    fn new_update_destroy_move_counts_between_columns() {
        let c = classifier(GroupBy::Src);
        let mut t = c.empty_table();
        let syn = flow(1, "172.16.3.5", 1000, TcpState::SynSent);
        let est = flow(1, "172.16.3.5", 1000, TcpState::Established);
        assert_eq!(t.apply(&c.change(New, &syn)), Effect::Added);
        assert_eq!(t.apply(&c.change(Update, &est)), Effect::Moved);
        assert_eq!(t.apply(&c.change(Update, &est)), Effect::Kept);
        assert_eq!(cells(&t), [("172.16.3.5".into(), "ESTABLISHED", 1)]);
        assert_eq!(t.apply(&c.change(Destroy, &est)), Effect::Removed);
        assert!(t.is_empty() && t.tally().sorted().is_empty());
        assert_eq!(t.tally().total(), Row::default());
    }

    #[test]
    fn issue_9_11_groups_whose_last_flow_went_are_forgotten() {
        // A long watch over churning sources: 10,000 sources come and go, ten at a time.
        let c = classifier(GroupBy::Src);
        let mut t = c.empty_table();
        let keep = flow(1, "172.16.9.9", 1, TcpState::Established);
        t.apply(&c.change(New, &keep));
        for i in 0..10_000u32 {
            let src = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            let syn = flow(i + 2, &src, 2, TcpState::SynSent);
            t.apply(&c.change(New, &syn));
            // Moving within its group keeps the group.
            t.apply(&c.change(Update, &flow(i + 2, &src, 2, TcpState::Established)));
            if i >= 10 {
                let j = i - 10;
                let old = format!("10.{}.{}.{}", j >> 16, (j >> 8) & 255, j & 255);
                t.apply(&c.change(Destroy, &flow(j + 2, &old, 2, TcpState::Established)));
            }
        }
        assert_eq!(t.len(), 11);
        assert_eq!(t.interned(), 11, "only groups with flows stay interned");
        assert!(t.groups.len() <= 12, "{} group slots for 11 groups", t.groups.len());
        assert_eq!(t.tally().len(), 11);
        assert!(cells(&t).contains(&("172.16.9.9".into(), "ESTABLISHED", 1)));
        // A reused slot counts its new group, not the old one.
        let back = flow(99_999, "10.0.0.0", 3, TcpState::TimeWait);
        assert_eq!(t.apply(&c.change(New, &back)), Effect::Added);
        assert!(cells(&t).contains(&("10.0.0.0".into(), "TIME_WAIT", 1)));
    }

    #[test]
    fn destroy_of_an_unknown_flow_is_a_no_op() {
        let c = classifier(GroupBy::Src);
        let mut t = c.empty_table();
        t.apply(&c.change(New, &flow(1, "172.16.3.5", 1000, TcpState::Established)));
        // A flow that existed before the subscription and was never dumped (or a second
        // DESTROY): the counts must not go below what is held.
        let stranger = flow(2, "172.16.3.5", 2000, TcpState::Established);
        assert_eq!(t.apply(&c.change(Destroy, &stranger)), Effect::Ignored);
        assert_eq!(t.apply(&c.change(Destroy, &stranger)), Effect::Ignored);
        assert_eq!(cells(&t), [("172.16.3.5".into(), "ESTABLISHED", 1)]);
    }

    #[test]
    fn colliding_ids_are_told_apart_by_tuple() {
        let c = classifier(GroupBy::Src);
        let mut t = c.empty_table();
        let a = flow(7, "172.16.3.5", 1000, TcpState::Established);
        let b = flow(7, "172.16.4.9", 1000, TcpState::Established);
        assert_ne!(a.identity(), b.identity());
        t.apply(&c.change(New, &a));
        t.apply(&c.change(New, &b));
        t.apply(&c.change(Destroy, &a));
        assert_eq!(cells(&t), [("172.16.4.9".into(), "ESTABLISHED", 1)]);
    }

    #[test]
    fn seed_then_events_buffered_during_the_dump() {
        let c = classifier(GroupBy::Src);
        // The kernel's story, in order: 1 and 2 exist; the dump starts; 3 is created and seen
        // by the dump; 2 is destroyed after the dump passed it; 1 moves to FIN_WAIT before the
        // dump reaches it; 4 is created and destroyed before the dump reaches its bucket; 5 is
        // created after the dump passed its bucket.
        let f1 = flow(1, "172.16.3.5", 1, TcpState::Established);
        let f1_fin = flow(1, "172.16.3.5", 1, TcpState::FinWait);
        let f2 = flow(2, "172.16.3.5", 2, TcpState::Established);
        let f3 = flow(3, "172.16.3.6", 3, TcpState::SynSent);
        let f4 = flow(4, "172.16.3.7", 4, TcpState::SynSent);
        let f5 = flow(5, "172.16.3.8", 5, TcpState::SynSent);
        // What the dump returned: 1 already in FIN_WAIT, 2 (not yet destroyed), 3, and 1 again
        // (a resumed dump repeats entries).
        let fresh = dumped(&c, &[f1_fin.clone(), f2.clone(), f3.clone(), f1_fin.clone()]);
        let during = [
            c.change(New, &f3),
            c.change(Destroy, &f2),
            c.change(Update, &f1_fin),
            c.change(New, &f4),
            c.change(Destroy, &f4),
            c.change(New, &f5),
        ];
        // The old contents are stale (they missed a loss); replace them.
        let mut t = c.empty_table();
        t.apply(&c.change(New, &f1));
        t.apply(&c.change(New, &flow(9, "172.16.9.9", 9, TcpState::Close)));
        t.replace_with(fresh, &during);
        let want = dumped(&c, &[f1_fin, f3, f5]);
        assert_eq!(cells(&t), cells(&want));
        assert_eq!(t.len(), 3);
        assert_eq!(t.tally().total().total, 3);
    }

    #[test]
    fn an_update_can_move_a_flow_out_of_the_selection() {
        let sel = Selector {
            states: vec![ProtoState::Tcp(TcpState::Established)],
            src: vec![parse_cidr("172.16.3.0/24").unwrap()],
            ..Selector::default()
        };
        let c = Classifier::new(sel, GroupBy::State, GuestMap::new());
        let mut t = c.empty_table();
        let est = flow(1, "172.16.3.5", 1, TcpState::Established);
        let fin = flow(1, "172.16.3.5", 1, TcpState::FinWait);
        let other = flow(2, "192.0.2.1", 1, TcpState::Established);
        assert_eq!(t.apply(&c.change(New, &other)), Effect::Ignored);
        assert_eq!(t.apply(&c.change(New, &est)), Effect::Added);
        assert_eq!(t.apply(&c.change(Update, &fin)), Effect::Removed);
        assert!(t.is_empty());
        // And back in.
        assert_eq!(t.apply(&c.change(Update, &est)), Effect::Added);
        assert_eq!(cells(&t), [("ESTABLISHED".into(), "ESTABLISHED", 1)]);
    }

    #[test]
    fn guests_group_and_a_long_churn_matches_a_dump() {
        let mut guests = GuestMap::new();
        guests.add("web", vec!["172.16.3.0/24".parse().unwrap()]);
        guests.add("db", vec!["172.16.5.0/24".parse().unwrap()]);
        let c = Classifier::new(Selector::default(), GroupBy::Guest, guests);
        let mut t = c.empty_table();
        let states = [TcpState::SynSent, TcpState::Established, TcpState::TimeWait];
        let srcs = ["172.16.3.5", "172.16.5.6", "192.0.2.7"];
        let mut live: Vec<Option<Flow>> = vec![None; 300];
        // A deterministic churn: create, move through states, destroy, re-create with new ids.
        let mut next_id = 1u32;
        for step in 0..5000usize {
            let slot = (step * 7919) % live.len();
            match live[slot].take() {
                None => {
                    let f = flow(next_id, srcs[step % 3], slot as u16, states[0]);
                    next_id += 1;
                    t.apply(&c.change(New, &f));
                    live[slot] = Some(f);
                }
                Some(f) if step % 5 == 0 => {
                    t.apply(&c.change(Destroy, &f));
                }
                Some(mut f) => {
                    f.state = Some(ProtoState::Tcp(states[step % 3]));
                    t.apply(&c.change(Update, &f));
                    live[slot] = Some(f);
                }
            }
        }
        let now: Vec<Flow> = live.into_iter().flatten().collect();
        assert_eq!(cells(&t), cells(&dumped(&c, &now)));
        let labels: Vec<String> =
            t.tally().sorted().iter().map(|(k, _)| t.tally().label(k)).collect();
        assert!(labels.contains(&"web".to_string()) && labels.contains(&"(no guest)".to_string()));
    }
}
