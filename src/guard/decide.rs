//! The guard's decisions, pure: the live counts per guest, the kernel's table figures and
//! `drop` counter, the configuration and the clock in; what to do to whom out. Nothing here
//! touches the kernel; the daemon carries the decisions out and says which caps are in place.
//!
//! The rules, in the order they apply:
//! - **Relief** starts when the table holds at least `high` entries or the kernel's `drop`
//!   counter rose since the last observation, and lasts until it holds fewer than `low`
//!   (hysteresis: a table hovering at `high` is not relieved and released four times a second).
//! - While relieving, the **offenders** are the guests holding more than their quota, largest
//!   first. Each is acted on per its policy (alert; cap if not capped yet; evict), at most once
//!   per `act_every`. Flows of no guest are never an offender: there is nobody to cap.
//! - A cap never covers a `protect`ed address: a guest network overlapping a protected one is
//!   left uncapped (and said so); eviction leaves flows touching them alone (the evict
//!   selector excludes them).
//! - A cap is lifted once its guest stayed at or under its quota for `cooldown`, relieving or
//!   not. A cap the guard found in place when it started counts its cooldown from then: a
//!   restart lifts no cap early, and none all at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;

use super::config::{Config, Level};
use crate::guests::{GuestId, GuestMap};
use crate::stats::TableStats;
use crate::tally::Row;

/// What the guard sees at one decision.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// When.
    pub now: Instant,
    /// The table's entry count and limit.
    pub table: TableStats,
    /// The kernel's `drop` counter summed over CPUs, when read.
    pub drop: Option<u64>,
    /// Live flows per guest (flows of no guest left out).
    pub guests: &'a [(GuestId, Row)],
}

/// Why relief started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The table reached `high`.
    High,
    /// The kernel's `drop` counter rose: packets are being refused now.
    Drop,
}

/// What is done to a guest.
#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    /// Logged and counted only.
    Alert,
    /// Install a cap of `limit` new connections on `nets`.
    Cap {
        /// New connections allowed past the rule.
        limit: u32,
        /// The guest's networks, those overlapping a protected one left out.
        nets: Vec<IpNetwork>,
    },
    /// The guest's networks all overlap protected ones: no cap.
    CapProtected,
    /// Evict the guest's flows in its policy's states.
    Evict,
    /// Remove the guest's cap: under quota for the cooldown.
    Uncap,
}

/// One decision, with what it was based on.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Whom.
    pub guest: GuestId,
    /// What.
    pub act: Act,
    /// The guest's live flows, by state.
    pub row: Row,
    /// The guest's quota, in entries, at this table limit.
    pub quota: u64,
}

/// The outcome of one decision round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Round {
    /// Relief started this round, and why.
    pub started: Option<Trigger>,
    /// Relief ended this round (the table is under `low`).
    pub ended: bool,
    /// Relieving now.
    pub relieving: bool,
    /// What to do, offenders largest first, then the caps to lift.
    pub decisions: Vec<Decision>,
}

#[derive(Debug, Clone, Copy, Default)]
struct GuestState {
    last_acted: Option<Instant>,
    capped: bool,
    under_since: Option<Instant>,
    /// A cap failed in a way that never passes (its name fits no rule comment): not tried again.
    uncappable: bool,
    /// Its last eviction found nothing: not evicted again before this.
    quiet_until: Option<Instant>,
}

/// The decisions' memory between rounds: relief on or off, the last `drop`, and per guest
/// when it was last acted on, whether it is capped, since when it is under quota.
#[derive(Debug, Default)]
pub struct Decider {
    relieving: bool,
    last_drop: Option<u64>,
    guests: HashMap<GuestId, GuestState>,
}

/// After an eviction that found nothing, the guest's next one waits this long.
pub const QUIET_AFTER_EMPTY: Duration = Duration::from_secs(60);

fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// The networks of a guest that a cap may cover: those overlapping no protected network.
pub fn cap_nets(nets: &[IpNetwork], protect: &[IpNetwork]) -> Vec<IpNetwork> {
    nets.iter().filter(|n| !protect.iter().any(|p| overlaps(n, p))).copied().collect()
}

impl Decider {
    /// A decider with relief off and no caps.
    pub fn new() -> Decider {
        Decider::default()
    }

    /// A cap is in place on `guest` from now on (installed, or found at start): its cooldown
    /// counts from the next round.
    pub fn capped(&mut self, guest: GuestId) {
        let g = self.guests.entry(guest).or_default();
        g.capped = true;
        g.under_since = None;
    }

    /// `guest`'s cap is gone.
    pub fn uncapped(&mut self, guest: GuestId) {
        let g = self.guests.entry(guest).or_default();
        g.capped = false;
        g.under_since = None;
    }

    /// `guest` can never be capped: the policy's evictions go on without the cap.
    pub fn uncappable(&mut self, guest: GuestId) {
        self.guests.entry(guest).or_default().uncappable = true;
    }

    /// An eviction of `guest` deleted `deleted` flows at `now`: one that found nothing is not
    /// asked again for [`QUIET_AFTER_EMPTY`] (an offender whose flows are in other states
    /// would otherwise be "evicted" of nothing at every `act_every`, each with its records).
    pub fn evicted(&mut self, guest: GuestId, deleted: u64, now: Instant) {
        let g = self.guests.entry(guest).or_default();
        g.quiet_until = (deleted == 0).then(|| now + QUIET_AFTER_EMPTY);
    }

    /// Whether the decider holds `guest` capped.
    pub fn is_capped(&self, guest: GuestId) -> bool {
        self.guests.get(&guest).is_some_and(|g| g.capped)
    }

    /// The guest map changed from `old` to `new` (a reload, or the host's guests looked at
    /// again): each guest's memory follows its name to its new id. Returns the guests the
    /// decider held capped that `new` does not have: their caps are orphans, for the daemon to
    /// lift after a cooldown unless they come back.
    pub fn rekey(&mut self, old: &GuestMap, new: &GuestMap) -> Vec<String> {
        let mut orphans = Vec::new();
        let mut kept = HashMap::with_capacity(self.guests.len());
        for (id, g) in self.guests.drain() {
            let name = old.name(id);
            match new.find(name) {
                Some(to) => {
                    kept.insert(to, g);
                }
                None if g.capped => orphans.push(name.to_string()),
                None => {}
            }
        }
        self.guests = kept;
        orphans.sort();
        orphans
    }

    /// Relieving now.
    pub fn relieving(&self) -> bool {
        self.relieving
    }

    /// One round: relief on or off, the offenders' decisions, the caps to lift.
    pub fn decide(&mut self, cfg: &Config, map: &GuestMap, obs: &Observation<'_>) -> Round {
        let max = u64::from(obs.table.max);
        let count = u64::from(obs.table.count);
        let high = cfg.high.entries(max);
        let low = cfg.low.entries(max).min(high);
        let dropped = matches!((self.last_drop, obs.drop), (Some(a), Some(b)) if b > a);
        if obs.drop.is_some() {
            self.last_drop = obs.drop;
        }
        let mut round = Round::default();
        let trigger = if count >= high && max > 0 {
            Some(Trigger::High)
        } else if dropped {
            Some(Trigger::Drop)
        } else {
            None
        };
        if !self.relieving && trigger.is_some() {
            self.relieving = true;
            round.started = trigger;
        } else if self.relieving && count < low && trigger.is_none() {
            self.relieving = false;
            round.ended = true;
        }
        round.relieving = self.relieving;

        if self.relieving {
            let mut offenders: Vec<(GuestId, Row, u64)> = obs
                .guests
                .iter()
                .filter_map(|&(id, row)| {
                    let quota = cfg.policy(map.name(id)).quota.entries(max);
                    (row.total > quota).then_some((id, row, quota))
                })
                .collect();
            offenders.sort_by(|a, b| b.1.total.cmp(&a.1.total).then(a.0.cmp(&b.0)));
            for (id, row, quota) in offenders {
                self.act_on(cfg, map, obs.now, (id, row, quota), &mut round.decisions);
            }
        }
        self.cooldowns(cfg, map, obs, &mut round.decisions);
        round
    }

    fn act_on(
        &mut self,
        cfg: &Config,
        map: &GuestMap,
        now: Instant,
        (guest, row, quota): (GuestId, Row, u64),
        out: &mut Vec<Decision>,
    ) {
        let g = self.guests.entry(guest).or_default();
        if g.last_acted.is_some_and(|t| now.saturating_duration_since(t) < cfg.act_every) {
            return;
        }
        let policy = cfg.policy(map.name(guest));
        let mut acts = Vec::new();
        if !policy.action.caps() && !policy.action.evicts() {
            acts.push(Act::Alert);
        }
        if policy.action.caps() && !g.capped && !g.uncappable {
            let nets = cap_nets(map.cidrs(guest), &cfg.protect);
            acts.push(if nets.is_empty() {
                Act::CapProtected
            } else {
                Act::Cap { limit: policy.cap, nets }
            });
        }
        if policy.action.evicts() && g.quiet_until.is_none_or(|t| now >= t) {
            acts.push(Act::Evict);
        }
        if acts.is_empty() {
            // Capped already, and the policy does not evict: the cap does the work.
            return;
        }
        g.last_acted = Some(now);
        out.extend(acts.into_iter().map(|act| Decision { guest, act, row, quota }));
    }

    fn cooldowns(
        &mut self,
        cfg: &Config,
        map: &GuestMap,
        obs: &Observation<'_>,
        out: &mut Vec<Decision>,
    ) {
        let max = u64::from(obs.table.max);
        let rows: HashMap<GuestId, Row> = obs.guests.iter().copied().collect();
        let mut capped: Vec<GuestId> =
            self.guests.iter().filter(|(_, g)| g.capped).map(|(id, _)| *id).collect();
        capped.sort_unstable();
        for guest in capped {
            let row = rows.get(&guest).copied().unwrap_or_default();
            let quota = cfg.policy(map.name(guest)).quota.entries(max);
            let Some(g) = self.guests.get_mut(&guest) else { continue };
            if row.total > quota {
                g.under_since = None;
                continue;
            }
            let since = *g.under_since.get_or_insert(obs.now);
            if obs.now.saturating_duration_since(since) >= cfg.cooldown {
                // Asked once per cooldown until the daemon says the cap is gone.
                g.under_since = Some(obs.now);
                out.push(Decision { guest, act: Act::Uncap, row, quota });
            }
        }
    }
}

/// A level shown for people: `90%` or `240000`.
pub fn level_text(l: Level) -> String {
    match l {
        Level::Share(s) => format!("{}%", (s * 1000.0).round() / 10.0),
        Level::Count(n) => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::guard::config::{self, Action};

    const MAX: u32 = 1000;

    fn map() -> GuestMap {
        let mut m = GuestMap::new();
        for (name, cidr) in
            [("host", "10.0.0.1/32"), ("vm-a", "10.0.0.2/32"), ("vm-b", "10.0.1.0/24")]
        {
            m.add(name, vec![cidr.parse().expect("cidr")]);
        }
        m
    }

    fn cfg(text: &str) -> Config {
        config::parse(text, "t.toml").expect("valid config")
    }

    fn row(total: u64) -> Row {
        let mut r = Row { total, ..Row::default() };
        r.by_state[3] = total;
        r
    }

    struct Clock(Instant);
    impl Clock {
        fn at(&self, secs: f64) -> Instant {
            self.0 + Duration::from_secs_f64(secs)
        }
    }

    fn round(
        d: &mut Decider,
        c: &Config,
        now: Instant,
        count: u32,
        drop: Option<u64>,
        guests: &[(GuestId, Row)],
    ) -> Round {
        let obs = Observation { now, table: TableStats { count, max: MAX }, drop, guests };
        d.decide(c, &map(), &obs)
    }

    fn acts(r: &Round) -> Vec<(GuestId, Act)> {
        r.decisions.iter().map(|d| (d.guest, d.act.clone())).collect()
    }

    fn cap(net: &str) -> Act {
        Act::Cap { limit: 20, nets: vec![net.parse().expect("cidr")] }
    }

    #[test]
    fn issue_13_hysteresis_acts_from_high_until_under_low() {
        let c = cfg(
            "high = \"90%\"\nlow = \"75%\"\nquota = \"50%\"\ncap = 20\naction = \"cap\"\nact_every = \"1s\"",
        );
        let (t, mut d) = (Clock(Instant::now()), Decider::new());
        let vm_a = [(1, row(600))];
        assert_eq!(round(&mut d, &c, t.at(0.0), 899, None, &vm_a), Round::default(), "under high");
        let r = round(&mut d, &c, t.at(0.25), 900, None, &vm_a);
        assert_eq!(r.started, Some(Trigger::High));
        assert_eq!(acts(&r), vec![(1, cap("10.0.0.2/32"))]);
        d.capped(1);
        // Still above low: relieving, but the cap is in place and the policy does not evict.
        let r = round(&mut d, &c, t.at(2.0), 800, None, &vm_a);
        assert!(r.relieving && r.decisions.is_empty(), "{r:?}");
        let r = round(&mut d, &c, t.at(2.25), 749, None, &vm_a);
        assert!(r.ended && !r.relieving, "under low ends relief: {r:?}");
        let r = round(&mut d, &c, t.at(2.5), 880, None, &vm_a);
        assert!(!r.relieving, "back between low and high does not restart it: {r:?}");
    }

    #[test]
    fn issue_13_offenders_largest_first_quota_by_share_and_by_count() {
        let c = cfg("quota = \"30%\"\ncap = 20\naction = \"cap\"\n[guest.vm-b]\nquota = 100");
        let (t, mut d) = (Clock(Instant::now()), Decider::new());
        // vm-a 250 is under its 30% (300); vm-b 150 is over its 100; host 400 is over 300.
        let guests = [(0, row(400)), (1, row(250)), (2, row(150))];
        let r = round(&mut d, &c, t.at(0.0), 950, None, &guests);
        assert_eq!(acts(&r), vec![(0, cap("10.0.0.1/32")), (2, cap("10.0.1.0/24"))]);
        assert_eq!((r.decisions[0].quota, r.decisions[1].quota), (300, 100));
    }

    #[test]
    fn issue_13_a_guest_is_acted_on_at_most_once_per_act_every() {
        let c = cfg("action = \"evict\"\nact_every = \"5s\"");
        let (t, mut d) = (Clock(Instant::now()), Decider::new());
        let g = [(1, row(700))];
        assert_eq!(acts(&round(&mut d, &c, t.at(0.0), 990, None, &g)), vec![(1, Act::Evict)]);
        for s in [0.25, 1.0, 4.9] {
            assert!(round(&mut d, &c, t.at(s), 990, None, &g).decisions.is_empty(), "at {s}s");
        }
        assert_eq!(acts(&round(&mut d, &c, t.at(5.0), 990, None, &g)), vec![(1, Act::Evict)]);
    }

    #[test]
    fn issue_13_cap_plus_evict_caps_once_and_evicts_again() {
        let c = cfg("cap = 20\nact_every = \"1s\"");
        let (t, mut d) = (Clock(Instant::now()), Decider::new());
        let g = [(1, row(700))];
        let r = round(&mut d, &c, t.at(0.0), 990, None, &g);
        assert_eq!(acts(&r), vec![(1, cap("10.0.0.2/32")), (1, Act::Evict)]);
        d.capped(1);
        let r = round(&mut d, &c, t.at(1.0), 990, None, &g);
        assert_eq!(acts(&r), vec![(1, Act::Evict)], "capped: only the eviction again");
    }

    #[test]
    fn issue_13_protected_networks_are_never_capped() {
        let c = cfg("cap = 20\naction = \"cap\"\nprotect = [\"10.0.1.7/32\", \"10.0.0.0/31\"]");
        let (t, mut d) = (Clock(Instant::now()), Decider::new());
        // host 10.0.0.1 lies in 10.0.0.0/31; vm-b's /24 holds 10.0.1.7; vm-a 10.0.0.2 is free.
        let g = [(0, row(600)), (1, row(550)), (2, row(520))];
        let r = round(&mut d, &c, t.at(0.0), 990, None, &g);
        assert_eq!(
            acts(&r),
            vec![(0, Act::CapProtected), (1, cap("10.0.0.2/32")), (2, Act::CapProtected)]
        );
        assert_eq!(
            cap_nets(
                &["10.0.0.0/8".parse().expect("cidr")],
                &["10.1.0.0/16".parse().expect("cidr")]
            ),
            vec![]
        );
    }

    #[test]
    fn issue_13_a_rising_drop_counter_starts_relief_below_high() {
        let c = cfg("action = \"alert\"");
        let (t, mut d) = (Clock(Instant::now()), Decider::new());
        let g = [(1, row(600))];
        assert!(round(&mut d, &c, t.at(0.0), 700, Some(10), &g).decisions.is_empty());
        assert!(round(&mut d, &c, t.at(1.0), 700, Some(10), &g).decisions.is_empty(), "flat");
        let r = round(&mut d, &c, t.at(2.0), 700, Some(11), &g);
        assert_eq!((r.started, acts(&r)), (Some(Trigger::Drop), vec![(1, Act::Alert)]));
        let r = round(&mut d, &c, t.at(3.0), 700, Some(11), &g);
        assert!(r.ended, "no more drops and under low (750): over");
        let r = round(&mut d, &c, t.at(4.0), 700, Some(5), &g);
        assert!(!r.relieving, "a counter that went down (CPU offlined) is not a rise");
    }

    #[test]
    fn issue_13_cooldown_lifts_a_cap_after_staying_under_quota() {
        let c = cfg("cap = 20\naction = \"cap\"\ncooldown = \"10s\"");
        let (t, mut d) = (Clock(Instant::now()), Decider::new());
        d.capped(1);
        let over = [(1, row(600))];
        let under = [(1, row(100))];
        assert!(round(&mut d, &c, t.at(1.0), 100, None, &under).decisions.is_empty());
        assert!(round(&mut d, &c, t.at(5.0), 100, None, &over).decisions.is_empty(), "over again");
        assert!(round(&mut d, &c, t.at(6.0), 100, None, &under).decisions.is_empty());
        assert!(round(&mut d, &c, t.at(15.9), 100, None, &under).decisions.is_empty(), "9.9 s");
        let r = round(&mut d, &c, t.at(16.0), 100, None, &under);
        assert_eq!(acts(&r), vec![(1, Act::Uncap)]);
        assert!(
            round(&mut d, &c, t.at(17.0), 100, None, &under).decisions.is_empty(),
            "asked once"
        );
        d.uncapped(1);
        assert!(!d.is_capped(1));
        assert!(round(&mut d, &c, t.at(40.0), 100, None, &[]).decisions.is_empty());
    }

    #[test]
    fn issue_14_memory_follows_a_guest_to_its_new_id_and_departed_caps_are_orphans() {
        let c = cfg("cap = 20\naction = \"cap\"\nact_every = \"10s\"");
        let (t, mut d) = (Clock(Instant::now()), Decider::new());
        let old = map();
        d.capped(1); // vm-a
        d.capped(2); // vm-b
        let r = round(&mut d, &c, t.at(0.0), 990, None, &[(0, row(600))]);
        assert_eq!(acts(&r), vec![(0, cap("10.0.0.1/32"))], "host acted on at 0 s");
        // The host looked at again: vm-b migrated away, a new guest came first, host moved.
        let mut new = GuestMap::new();
        for (name, cidr) in
            [("web-9", "10.0.2.9/32"), ("vm-a", "10.0.0.2/32"), ("host", "10.0.0.1/32")]
        {
            new.add(name, vec![cidr.parse().expect("cidr")]);
        }
        assert_eq!(d.rekey(&old, &new), vec!["vm-b".to_string()]);
        assert!(d.is_capped(1) && !d.is_capped(0) && !d.is_capped(2), "vm-a is 1 in both maps");
        // The host's act_every follows it to id 2: not acted on again before 10 s.
        let obs = Observation {
            now: t.at(1.0),
            table: TableStats { count: 990, max: MAX },
            drop: None,
            guests: &[(2, row(600))],
        };
        assert!(d.decide(&c, &new, &obs).decisions.is_empty(), "act_every kept across the rekey");
        assert_eq!(d.rekey(&new, &new), Vec::<String>::new(), "the same map changes nothing");
    }

    #[test]
    fn issue_14_an_uncappable_guest_is_still_evicted_and_an_empty_eviction_backs_off() {
        let c = cfg("cap = 20\nact_every = \"1s\"");
        let (t, mut d) = (Clock(Instant::now()), Decider::new());
        let g = [(1, row(700))];
        d.uncappable(1);
        assert_eq!(acts(&round(&mut d, &c, t.at(0.0), 990, None, &g)), vec![(1, Act::Evict)]);
        d.evicted(1, 0, t.at(0.5));
        assert!(round(&mut d, &c, t.at(2.0), 990, None, &g).decisions.is_empty(), "quiet");
        assert_eq!(acts(&round(&mut d, &c, t.at(60.5), 990, None, &g)), vec![(1, Act::Evict)]);
        d.evicted(1, 5, t.at(61.0));
        assert_eq!(acts(&round(&mut d, &c, t.at(62.0), 990, None, &g)), vec![(1, Act::Evict)]);
    }

    #[test]
    fn issue_13_a_restart_lifts_no_cap_at_once() {
        // Caps found at start count their cooldown from the start, each from its own guest's
        // counts: two guests under quota are lifted after the cooldown, one over stays.
        let c = cfg("cap = 20\naction = \"cap\"\ncooldown = \"60s\"");
        let (t, mut d) = (Clock(Instant::now()), Decider::new());
        for g in [0, 1, 2] {
            d.capped(g);
        }
        let g = [(0, row(10)), (1, row(10)), (2, row(900))];
        assert!(
            round(&mut d, &c, t.at(0.25), 920, None, &g)
                .decisions
                .iter()
                .all(|d| d.act != Act::Uncap)
        );
        assert!(
            round(&mut d, &c, t.at(59.0), 920, None, &g)
                .decisions
                .iter()
                .all(|d| d.act != Act::Uncap)
        );
        let r = round(&mut d, &c, t.at(61.0), 920, None, &g);
        let lifted: Vec<_> =
            r.decisions.iter().filter(|d| d.act == Act::Uncap).map(|d| d.guest).collect();
        assert_eq!(lifted, vec![0, 1]);
    }

    #[test]
    fn issue_13_dry_run_decides_the_same_and_caps_nothing() {
        // The decider never marks a cap itself: in a dry run nobody confirms one, so the
        // same cap is decided again after act_every, as a real run would without the cap.
        let c = cfg("cap = 20\naction = \"cap\"\ndry_run = true\nact_every = \"1s\"");
        assert!(c.dry_run);
        let (t, mut d) = (Clock(Instant::now()), Decider::new());
        let g = [(1, row(700))];
        assert_eq!(
            acts(&round(&mut d, &c, t.at(0.0), 990, None, &g)),
            vec![(1, cap("10.0.0.2/32"))]
        );
        assert!(!d.is_capped(1));
        assert_eq!(
            acts(&round(&mut d, &c, t.at(1.0), 990, None, &g)),
            vec![(1, cap("10.0.0.2/32"))]
        );
    }

    #[test]
    fn issue_13_low_above_high_in_mixed_units_acts_as_high() {
        let c = cfg("high = 500\nlow = \"90%\"\naction = \"alert\"");
        assert_eq!(c.default.action, Action::Alert);
        let (t, mut d) = (Clock(Instant::now()), Decider::new());
        let g = [(1, row(600))];
        assert!(round(&mut d, &c, t.at(0.0), 500, None, &g).relieving);
        assert!(round(&mut d, &c, t.at(1.0), 499, None, &g).ended, "low is clamped to high");
    }
}
