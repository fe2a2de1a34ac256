//! The guard's loop: the live engine ([`crate::live::Watcher`]) keeps the counts per guest and
//! state; every snapshot (four a second) is published for `/metrics` and `top --live`, handed
//! to the pure [`Decider`], and its decisions are logged and carried out on blocking threads
//! (nftables caps, the evict engine), one at a time per guest. Its edges are injected: the
//! signals (stop, reload), the reload itself, and the readiness note for systemd.
//!
//! Every decision and every result is one JSON line on stderr (journald) and in the audit log;
//! an eviction also writes the two records `ctguard evict` writes (intent, outcome) and a spool
//! of the flows it deleted under `state_dir/spool/`, for `ctguard load`.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::caps::{CapError, Caps};
use super::config::{self, Config, ConfigError, Policy};
use super::decide::{Act, Decider, Decision, Observation, Round, Trigger};
use super::discovery::{self, Discovery};
use super::metrics::{self, Metrics};
use super::{Board, Seen, http, query};
use crate::audit::{self, AuditLog};
use crate::ctnetlink::{self, Conntrack};
use crate::evict;
use crate::guests::{GuestError, GuestId, GuestMap};
use crate::live::watcher::{self, Overrun, Sink, View};
use crate::live::{Classifier, Netns, Resynced, Shutdown, Watcher};
use crate::rtnl;
use crate::select::{GuestFilter, Selector};
use crate::stats::CpuStats;
use crate::sysctl::{self, StateTimeouts};
use crate::tally::{self, GroupBy, GroupKey, Row};

/// Between decisions: at least four a second.
pub const DECIDE_EVERY: Duration = Duration::from_millis(250);
/// The kernel's per-CPU counters are read this often.
const KERNEL_EVERY: Duration = Duration::from_secs(1);
/// The event socket's receive buffer: the kernel charges ~1.3 KiB per queued event, so this
/// holds ~200,000 events, most of a 240k eviction's DESTROYs. Only used while events wait.
const RCVBUF: usize = 128 << 20;
/// ctguard's nftables table is read back this often: a `flush ruleset` (an nftables reload)
/// takes the caps with it, and the guard must know they are gone.
const CAPS_EVERY: Duration = Duration::from_secs(10);
/// At a stop, running actions get this long to finish (they stop at their next flow).
const STOP_GRACE: Duration = Duration::from_millis(800);

/// A configuration and the guest map it names, both checked.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration in force: the file's, less the `[guest.NAME]` policies of guests
    /// their tenants name (discovering).
    pub cfg: Arc<Config>,
    /// The configuration as the file says it.
    pub file_cfg: Arc<Config>,
    /// The guest file's guests (none without a file).
    pub file: Arc<GuestMap>,
    /// The guests in force: the file's, with those found on the host when discovering.
    pub guests: Arc<GuestMap>,
}

impl Loaded {
    /// The file's configuration and guests with what a look at the host found in force.
    fn with_found(&self, guests: GuestMap, cfg: Config) -> Loaded {
        Loaded {
            cfg: Arc::new(cfg),
            file_cfg: self.file_cfg.clone(),
            file: self.file.clone(),
            guests: Arc::new(guests),
        }
    }
}

/// Why a configuration cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The guest file it names.
    #[error(transparent)]
    Guests(#[from] GuestError),
}

/// Reads the configuration at `path` and the guest file it names, and checks them together.
pub fn load(path: &str) -> Result<Loaded, LoadError> {
    let cfg = config::load(path)?;
    let guests = match &cfg.guests {
        Some(p) => GuestMap::load(&p.to_string_lossy())?,
        None => GuestMap::new(),
    };
    cfg.check_guests(&guests)?;
    let (guests, cfg) = (Arc::new(guests), Arc::new(cfg));
    Ok(Loaded { cfg: cfg.clone(), file_cfg: cfg, file: guests.clone(), guests })
}

/// What the guard fails on (a configuration it cannot start with is a [`LoadError`] before).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel.
    #[error(transparent)]
    Kernel(#[from] ctnetlink::Error),
    /// The live engine.
    #[error(transparent)]
    Live(#[from] watcher::Error),
    /// ctguard's nftables table.
    #[error("caps: {0}")]
    Caps(#[from] CapError),
    /// `/metrics`.
    #[error("metrics: {0}")]
    Metrics(#[from] http::HttpError),
    /// `/metrics` could not join the event loop.
    #[error("metrics: {0}")]
    Listen(std::io::Error),
    /// The query socket.
    #[error("query socket: {0}")]
    Query(#[from] query::BindError),
    /// The audit log.
    #[error(transparent)]
    Audit(#[from] audit::Error),
}

/// What the guard is told from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Stop (SIGTERM, SIGINT).
    Stop,
    /// Reload the configuration (SIGHUP).
    Reload,
}

/// The guard's edges: where signals come from, and how a reload reads the configuration.
/// Whom to tell how it goes (systemd's `sd_notify`) is a function beside them.
pub trait Edges {
    /// The next signal.
    fn signal(&mut self) -> impl Future<Output = Signal>;
    /// Reads the configuration again.
    fn reload(&mut self) -> Result<Loaded, LoadError>;
}

/// What the guard tells its supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    /// Counting live.
    Ready,
    /// Reading the configuration again.
    Reloading,
    /// Stopping.
    Stopping,
}

/// What a step of a guest's job reports back; `last`: the guest's job is over.
#[derive(Debug)]
struct Step {
    done: Done,
    last: bool,
}

/// When a read of the caps' table began, and the guests it found capped.
type CapsRead = (Instant, Vec<String>);

/// One step of a guest's job, run on its blocking thread.
type StepFn = Box<dyn FnOnce() -> Done + Send>;

/// What a blocking action did.
#[derive(Debug)]
/// Guests are named, not numbered: a job may end after the guest map changed.
enum Done {
    Capped {
        guest: String,
        nets: Vec<String>,
        limit: u32,
    },
    Uncapped {
        guest: String,
    },
    Evicted {
        guest: String,
        report: evict::Report,
        spool: Option<PathBuf>,
    },
    /// `permanent`: it fails the same way every time (a name no rule comment holds).
    Failed {
        guest: String,
        action: &'static str,
        error: String,
        permanent: bool,
    },
}

/// The guard's state across reloads.
struct State {
    decider: Decider,
    board: Arc<Board>,
    metrics: Arc<Metrics>,
    caps: Option<Arc<Mutex<Caps>>>,
    log: Option<AuditLog>,
    stop: Arc<AtomicBool>,
    done_tx: Sender<Step>,
    done: Receiver<Step>,
    /// Notified after each step sent on `done_tx`: the watcher snapshots at once, so a step's
    /// record and the decisions that wait on it come without waiting for the next interval.
    wake: Arc<tokio::sync::Notify>,
    /// Guests with an action running.
    busy: HashSet<String>,
    ct: Conntrack,
    kernel: Option<CpuStats>,
    kernel_read: Option<Instant>,
    /// The guests with a cap rule in the table, read back on a blocking thread.
    caps_seen: (Sender<CapsRead>, Receiver<CapsRead>),
    /// When each cap the decider holds was known to be in place.
    capped_at: std::collections::HashMap<String, Instant>,
    /// Caps whose guest is gone from the map (migrated away, or out of the guest file), and
    /// since when: each is lifted after a cooldown unless its guest comes back.
    orphans: BTreeMap<String, Instant>,
    caps_read: Option<Instant>,
    ready: bool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn states_of(row: &Row) -> BTreeMap<&'static str, u64> {
    (0..tally::COLUMNS)
        .filter(|&c| row.by_state[c] > 0)
        .map(|c| (tally::column_name(c), row.by_state[c]))
        .collect()
}

impl State {
    /// One JSON line on stderr and in the audit log.
    fn record(&mut self, line: Value) {
        record(self.log.as_mut(), line);
    }
}

/// One JSON line on stderr and in `log`.
fn record(log: Option<&mut AuditLog>, mut line: Value) {
    // serde_json's map keeps its keys sorted: where these two go in the line is not chosen.
    if let Value::Object(m) = &mut line {
        m.insert("record".into(), json!("guard"));
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        m.insert("time".into(), json!(time));
    }
    eprintln!("{line}");
    if let Some(log) = log
        && let Err(e) = log.append(&line)
    {
        eprintln!("ctguard: guard: {e}");
    }
}

/// Runs the guard until a stop signal: `loaded` is in force until a reload that checks.
/// Call it inside the namespace to guard, on a tokio runtime with IO and time.
pub async fn run(
    mut loaded: Loaded,
    edges: &mut impl Edges,
    notify: &dyn Fn(Notify),
) -> Result<(), Error> {
    let cfg = loaded.cfg.clone();
    let board = Arc::new(Board::default());
    let metrics = Arc::new(Metrics::new(board.clone(), env!("CARGO_PKG_VERSION")));
    let (servers_stop, servers_done) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut servers = Vec::new();
    if let Some(addr) = cfg.metrics {
        let listener = http::bind(&addr.to_string())?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(Error::Listen)?;
        let serving = http::serve(listener, metrics.clone(), stopped(servers_done.clone()));
        servers.push(tokio::spawn(async move {
            if let Err(e) = serving.await {
                eprintln!("ctguard: guard: /metrics: {e}");
            }
        }));
    }
    if let Some(path) = &cfg.socket {
        let socket = query::bind(path)?;
        let serving = query::serve(socket, board.clone(), stopped(servers_done.clone()));
        servers.push(tokio::spawn(async move {
            if let Err(e) = serving.await {
                eprintln!("ctguard: guard: query socket: {e}");
            }
        }));
    }

    let (done_tx, done) = channel();
    let mut st = State {
        decider: Decider::new(),
        board,
        metrics,
        caps: None,
        log: match &cfg.audit_log {
            Some(p) => Some(AuditLog::open(p)?),
            None => None,
        },
        stop: Arc::new(AtomicBool::new(false)),
        done_tx,
        done,
        wake: Arc::new(tokio::sync::Notify::new()),
        busy: HashSet::new(),
        ct: Conntrack::open()?,
        kernel: None,
        kernel_read: None,
        caps_seen: channel(),
        capped_at: std::collections::HashMap::new(),
        orphans: BTreeMap::new(),
        caps_read: None,
        ready: false,
        tasks: Vec::new(),
    };
    let mut discovery = Discovery::new();
    if cfg.discover {
        loaded = look(&mut discovery, &loaded, st.log.as_mut()).await;
    }
    if !cfg.dry_run {
        // Opening creates ctguard's own table if missing, and reads the caps a guard before
        // this one left: they stay, and each is lifted after its own cooldown.
        let caps =
            tokio::task::spawn_blocking(Caps::open).await.map_err(watcher::Error::from)??;
        for cap in caps.list()? {
            match loaded.guests.find(&cap.guest) {
                Some(id) if !st.decider.is_capped(id) => {
                    st.decider.capped(id);
                    st.capped_at.insert(cap.guest.clone(), Instant::now());
                    st.metrics.capped(&cap.guest, true);
                    st.record(json!({"event": "adopted", "guest": cap.guest, "action": "cap",
                        "nets": [cap.net.to_string()], "cap": cap.limit}));
                }
                Some(_) => {}
                // Discovering, a guest not found is one that left the host while no guard ran.
                None if cfg.discover => {
                    if st.orphans.insert(cap.guest.clone(), Instant::now()).is_none() {
                        st.metrics.capped(&cap.guest, true);
                        st.record(orphaned(&cap.guest, &cfg));
                    }
                }
                None => st.record(json!({"event": "adopted", "guest": cap.guest,
                    "action": "cap", "detail": "no such guest in the guest file: the cap stays \
                    until `ctguard guard --uncap NAME`"})),
            }
        }
        st.caps = Some(Arc::new(Mutex::new(caps)));
    }
    st.record(json!({"event": "start", "dry_run": cfg.dry_run, "guests": loaded.guests.len(),
        "discover": cfg.discover, "high": super::decide::level_text(cfg.high),
        "low": super::decide::level_text(cfg.low)}));

    // The guard counts every flow, so each snapshot's comparison with the kernel's entry
    // count catches flows that end silently (nf_conntrack_events=2) and resyncs at once; the
    // periodic dump is a safety net, as under nf_conntrack_events=1, and at the full table a
    // dump every 30 s would cost more CPU than the guard may use (a dump is ~0.7 s of a core).
    let reconcile = crate::live::reconcile_period(Some(1));
    loop {
        publish_quotas(&st, &loaded);
        let wcfg = crate::live::Config {
            classifier: Classifier::new(Selector::default(), GroupBy::Guest, loaded.guests.clone()),
            interval: DECIDE_EVERY,
            reconcile: Some(reconcile),
            snapshots: None,
            wake: Some(st.wake.clone()),
        };
        let mut next: Option<Next> = None;
        let ended = {
            let mut kernel_ct = Conntrack::open()?;
            let rcvbuf = loaded.cfg.event_buffer.unwrap_or(RCVBUF);
            let mut kernel = Netns { ct: &mut kernel_ct, rcvbuf };
            let mut sink = GuardSink { st: &mut st, loaded: &loaded, notify };
            let next = &mut next;
            // The signals' own handle on the audit log: a refused reload is recorded too.
            let mut log = match &loaded.cfg.audit_log {
                Some(p) => Some(AuditLog::open(p)?),
                None => None,
            };
            let discovery = &mut discovery;
            let in_force = &loaded;
            let signals = async {
                let every = in_force.cfg.discover_every;
                let mut next_look = tokio::time::Instant::now() + every;
                loop {
                    let signal = tokio::select! {
                        s = edges.signal() => s,
                        () = tokio::time::sleep_until(next_look), if in_force.cfg.discover => {
                            next_look = tokio::time::Instant::now() + every;
                            let l = look(discovery, in_force, log.as_mut()).await;
                            if !l.guests.same_guests(&in_force.guests) {
                                *next = Some(Next::Found(l));
                                return Shutdown::Now;
                            }
                            continue;
                        }
                    };
                    match signal {
                        Signal::Stop => return Shutdown::Now,
                        Signal::Reload => {
                            notify(Notify::Reloading);
                            match edges.reload() {
                                Ok(mut l) => {
                                    if l.cfg.discover {
                                        l = look(discovery, &l, log.as_mut()).await;
                                    }
                                    *next = Some(Next::Reload(l));
                                    return Shutdown::Now;
                                }
                                Err(e) => {
                                    record(
                                        log.as_mut(),
                                        json!({"event": "reload_refused",
                                        "error": e.to_string(),
                                        "detail": "the configuration in force stays"}),
                                    );
                                    notify(Notify::Ready);
                                }
                            }
                        }
                    }
                }
            };
            Watcher::new(&wcfg, &mut kernel, &mut sink).run(signals).await
        };
        ended?;
        let l = match next {
            Some(Next::Reload(l)) => {
                if l.cfg.metrics != loaded.cfg.metrics || l.cfg.socket != loaded.cfg.socket {
                    st.record(json!({"event": "reload", "detail": "metrics and socket \
                        addresses change only at a restart"}));
                }
                st.record(json!({"event": "reload", "dry_run": l.cfg.dry_run,
                    "guests": l.guests.len(), "discover": l.cfg.discover}));
                l
            }
            Some(Next::Found(l)) => l,
            None => break,
        };
        if !l.guests.same_guests(&loaded.guests) {
            st.record(super::discovery::changed(&loaded.guests, &l.guests));
        }
        swap_guests(&mut st, &loaded, &l);
        loaded = l;
        st.ready = false;
        // The counts held were of the old map: not in sync until the recount under the new.
        if let Some(last) = st.board.latest() {
            st.board.publish(Seen { synced: false, ..(*last).clone() });
        }
    }

    notify(Notify::Stopping);
    st.stop.store(true, Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    for t in st.tasks.drain(..) {
        let _ = tokio::time::timeout_at(deadline, t).await;
    }
    drain(&mut st, &loaded);
    let _ = servers_stop.send(true);
    for s in servers {
        let _ = tokio::time::timeout_at(deadline + Duration::from_millis(100), s).await;
    }
    st.record(json!({"event": "stop", "caps": "left in place; a restarted guard adopts them"}));
    Ok(())
}

/// Why the watcher stopped for another round.
enum Next {
    /// SIGHUP: a configuration that checked (and the host looked at, when discovering).
    Reload(Loaded),
    /// The host's guests changed.
    Found(Loaded),
}

/// Looks at the host on a blocking thread and joins what it found onto `loaded`'s guest file,
/// writing the look's records to stderr and `log`.
async fn look(
    discovery: &mut Discovery,
    loaded: &Loaded,
    mut log: Option<&mut AuditLog>,
) -> Loaded {
    let dirs = loaded.cfg.dirs.clone();
    let looked = tokio::task::spawn_blocking(move || discovery::look(&dirs, rtnl::DEFAULT_TIMEOUT))
        .await
        .unwrap_or_else(|e| Err(rtnl::RtnlError::Socket(std::io::Error::other(e.to_string()))));
    let (map, cfg, lines) = discovery.take(looked, &loaded.file, &loaded.file_cfg);
    for line in lines {
        record(log.as_deref_mut(), line);
    }
    loaded.with_found(map, cfg)
}

/// The record of a cap left without its guest.
fn orphaned(guest: &str, cfg: &Config) -> Value {
    json!({"event": "cap_orphaned", "guest": guest, "action": "cap",
        "detail": format!("no such guest any more: the cap is lifted after the cooldown ({}) \
            unless the guest comes back", humantime::format_duration(cfg.cooldown))})
}

/// The guest map changes from `old`'s to `new`'s: the decider's memory follows each guest by
/// name, caps left without a guest become orphans, an orphan whose guest is back is its cap
/// again, and the series of guests gone end.
fn swap_guests(st: &mut State, old: &Loaded, new: &Loaded) {
    let now = Instant::now();
    for name in st.decider.rekey(&old.guests, &new.guests) {
        st.capped_at.remove(&name);
        if st.orphans.insert(name.clone(), now).is_none() {
            st.record(orphaned(&name, &new.cfg));
        }
    }
    let back: Vec<String> =
        st.orphans.keys().filter(|n| new.guests.find(n).is_some()).cloned().collect();
    for name in back {
        st.orphans.remove(&name);
        if let Some(id) = new.guests.find(&name) {
            st.decider.capped(id);
            st.capped_at.insert(name.clone(), now);
            st.record(json!({"event": "adopted", "guest": name, "action": "cap",
                "detail": "the guest of an orphaned cap is back: its cap is its own again"}));
        }
    }
    // A capped name now at other addresses (a rename, or another guest took the name): its
    // rule covers the old ones. Lifted, and decided again under the new addresses.
    let moved: Vec<(GuestId, String)> = (0..new.guests.len() as GuestId)
        .filter(|&id| st.decider.is_capped(id))
        .filter_map(|id| {
            let name = new.guests.name(id);
            let was = old.guests.find(name).map(|o| old.guests.cidrs(o)).unwrap_or_default();
            let same = crate::guests::same_members(was, new.guests.cidrs(id));
            (!same).then(|| (id, name.to_string()))
        })
        .collect();
    for (id, name) in moved {
        st.decider.uncapped(id);
        st.capped_at.remove(&name);
        st.record(json!({"event": "cap_moved", "guest": name, "action": "cap",
            "detail": "the guest's addresses changed: its cap is lifted and decided again"}));
        if !new.cfg.dry_run && !st.busy.contains(&name) {
            let step = uncap_step(st, &name);
            start(st, name, vec![step]);
        }
    }
    let orphans = &st.orphans;
    st.metrics.retain(|g| new.guests.find(g).is_some() || orphans.contains_key(g));
}

/// Lifting `guest`'s cap, as a step of its job.
fn uncap_step(st: &State, guest: &str) -> StepFn {
    let (caps, guest) = (st.caps.clone(), guest.to_string());
    Box::new(move || match with_caps(caps, |c| c.remove(&guest)) {
        Ok(()) => Done::Uncapped { guest },
        Err((error, permanent)) => Done::Failed { guest, action: "uncap", error, permanent },
    })
}

/// Lifts the orphaned caps whose cooldown passed (asked again a cooldown later if that fails).
fn lift_orphans(st: &mut State, loaded: &Loaded, now: Instant) {
    if loaded.cfg.dry_run {
        return;
    }
    let due: Vec<String> = st
        .orphans
        .iter()
        .filter(|(n, since)| {
            now.saturating_duration_since(**since) >= loaded.cfg.cooldown && !st.busy.contains(*n)
        })
        .map(|(n, _)| n.clone())
        .collect();
    for name in due {
        st.orphans.insert(name.clone(), now);
        st.record(json!({"event": "decision", "guest": name, "action": "uncap",
            "dry_run": false, "detail": "an orphaned cap's cooldown passed"}));
        st.metrics.acted(&name, metrics::Action::Uncap);
        let step = uncap_step(st, &name);
        start(st, name, vec![step]);
    }
}

fn publish_quotas(st: &State, loaded: &Loaded) {
    let max = sysctl::read("nf_conntrack_max").unwrap_or(0);
    for id in 0..loaded.guests.len() as GuestId {
        let name = loaded.guests.name(id);
        st.metrics.quota(name, loaded.cfg.policy(name).quota.entries(max));
    }
}

struct GuardSink<'a> {
    st: &'a mut State,
    loaded: &'a Loaded,
    notify: &'a dyn Fn(Notify),
}

impl Sink for GuardSink<'_> {
    type Error = Error;

    fn overrun(&mut self, o: &Overrun) -> Result<(), Error> {
        self.st.record(json!({"event": "overrun", "overruns": o.overruns,
            "lost_events": o.lost_events, "detail": "resyncing from a dump"}));
        Ok(())
    }

    fn resynced(&mut self, _: &Resynced) -> Result<(), Error> {
        Ok(())
    }

    fn snapshot(&mut self, v: &View<'_>) -> Result<(), Error> {
        let now = Instant::now();
        let st = &mut *self.st;
        if st.kernel_read.is_none_or(|t| now.duration_since(t) >= KERNEL_EVERY) {
            st.kernel = st.ct.cpu_stats().ok().map(|c| CpuStats::sum(&c));
            st.kernel_read = Some(now);
        }
        let rows: Vec<(Option<GuestId>, Row)> = v
            .table
            .tally()
            .sorted()
            .into_iter()
            .filter_map(|(k, r)| match k {
                GroupKey::Guest(g) => Some((g, r)),
                _ => None,
            })
            .collect();
        let names: Vec<String> = (0..self.loaded.guests.len() as GuestId)
            .map(|i| self.loaded.guests.name(i).into())
            .collect();
        st.board.publish(Seen {
            guests: names,
            rows: rows.clone(),
            stats: v.stats,
            kernel: st.kernel,
            events: v.events,
            overruns: v.overruns,
            resyncs: v.resyncs,
            synced: v.synced,
            at_unix_ms: unix_ms(),
        });
        drain(st, self.loaded);
        check_caps(st, self.loaded, now);
        lift_orphans(st, self.loaded, now);
        let Some(table) = v.stats else { return Ok(()) };
        let guests: Vec<(GuestId, Row)> =
            rows.iter().filter_map(|(g, r)| g.map(|g| (g, *r))).collect();
        let obs =
            Observation { now, table, drop: st.kernel.map(|k| u64::from(k.drop)), guests: &guests };
        let round = st.decider.decide(&self.loaded.cfg, &self.loaded.guests, &obs);
        carry_out(st, self.loaded, &round, table);
        if !st.ready {
            st.ready = true;
            (self.notify)(Notify::Ready);
        }
        Ok(())
    }

    fn snapshot_at_seed(&self) -> bool {
        true
    }
}

/// The table as a record shows it.
fn table_seen(t: crate::stats::TableStats) -> Value {
    let fill = if t.max > 0 { f64::from(t.count) * 100.0 / f64::from(t.max) } else { 0.0 };
    json!({"entries": t.count, "limit": t.max, "fill_percent": (fill * 10.0).round() / 10.0})
}

fn carry_out(st: &mut State, loaded: &Loaded, round: &Round, table: crate::stats::TableStats) {
    let cfg = &loaded.cfg;
    if let Some(t) = round.started {
        let why = match t {
            Trigger::High => "the table reached high",
            Trigger::Drop => "the kernel is dropping packets (drop rose)",
        };
        st.record(json!({"event": "relief_started", "trigger": why, "table": table_seen(table)}));
    }
    if round.ended {
        st.record(json!({"event": "relief_ended", "table": table_seen(table)}));
    }
    let mut jobs: Vec<(String, Vec<StepFn>)> = Vec::new();
    for d in &round.decisions {
        let name = loaded.guests.name(d.guest).to_string();
        let kind = metrics_action(&d.act);
        let action = kind.name();
        let mut line = json!({"event": "decision", "guest": name, "action": action,
            "dry_run": cfg.dry_run, "table": table_seen(table), "guest_entries": d.row.total,
            "quota": d.quota, "states": states_of(&d.row),
            "guest_detail": loaded.guests.detail(d.guest)});
        match &d.act {
            Act::Cap { limit, nets } => {
                line["cap"] = json!(limit);
                line["nets"] = json!(nets.iter().map(ToString::to_string).collect::<Vec<_>>());
            }
            Act::CapProtected => {
                line["detail"] =
                    json!("every network of the guest overlaps a protected one: not capped");
            }
            _ => {}
        }
        let busy = st.busy.contains(&name) && !matches!(d.act, Act::Alert);
        if busy {
            line["detail"] = json!("an action on this guest is still running: skipped");
        }
        st.record(line);
        st.metrics.acted(&name, kind);
        if cfg.dry_run || busy {
            continue;
        }
        if let Some(step) = step(st, loaded, d) {
            match jobs.iter_mut().find(|(g, _)| *g == name) {
                Some((_, steps)) => steps.push(step),
                None => jobs.push((name, vec![step])),
            }
        }
    }
    for (guest, steps) in jobs {
        start(st, guest, steps);
    }
}

fn metrics_action(a: &Act) -> metrics::Action {
    match a {
        Act::Alert => metrics::Action::Alert,
        Act::Cap { .. } | Act::CapProtected => metrics::Action::Cap,
        Act::Evict => metrics::Action::Evict,
        Act::Uncap => metrics::Action::Uncap,
    }
}

/// One step of a guest's job.
fn step(st: &State, loaded: &Loaded, d: &Decision) -> Option<StepFn> {
    let name = loaded.guests.name(d.guest).to_string();
    let guest = name.clone();
    let caps = st.caps.clone();
    Some(match d.act.clone() {
        Act::Cap { limit, nets } => {
            Box::new(move || match with_caps(caps, |c| c.install(&name, &nets, limit)) {
                Ok(()) => Done::Capped {
                    guest,
                    nets: nets.iter().map(ToString::to_string).collect(),
                    limit,
                },
                Err((error, permanent)) => Done::Failed { guest, action: "cap", error, permanent },
            })
        }
        Act::Uncap => uncap_step(st, &name),
        Act::Evict => {
            let policy = loaded.cfg.policy(&name).clone();
            let sel = evict_selector(loaded, d.guest, &policy);
            let audited = evict::audited::Audited {
                command: "guard",
                what: evict_what(&name, &sel),
                sel,
                name,
                limit: policy.evict_limit,
                state_dir: loaded.cfg.state_dir.clone(),
                audit_log: loaded.cfg.audit_log.clone(),
                netns: loaded.cfg.netns.clone(),
            };
            let job = EvictJob { audited, stop: st.stop.clone() };
            Box::new(move || job.run())
        }
        Act::Alert | Act::CapProtected => return None,
    })
}

/// Starts one guest's steps of a round, in order, on one blocking thread (which inherits the
/// namespace this one entered): a cap is in place before its eviction begins, so the slots
/// the eviction frees are not taken back.
fn start(st: &mut State, guest: String, steps: Vec<StepFn>) {
    if steps.is_empty() {
        return;
    }
    st.busy.insert(guest);
    let (tx, wake) = (st.done_tx.clone(), st.wake.clone());
    st.tasks.retain(|t| !t.is_finished());
    st.tasks.push(tokio::task::spawn_blocking(move || {
        let mut steps = steps.into_iter().peekable();
        while let Some(step) = steps.next() {
            let done = step();
            // A cap that can never be made leaves the eviction to do the relief alone.
            let failed = matches!(done, Done::Failed { permanent: false, .. });
            let last = steps.peek().is_none();
            let _ = tx.send(Step { done, last: last || failed });
            wake.notify_one();
            if failed {
                // A failed cap leaves no eviction behind it: the next round decides again.
                return;
            }
        }
    }));
}

/// Runs `f` on ctguard's table; the error in words, and whether it is permanent.
fn with_caps(
    caps: Option<Arc<Mutex<Caps>>>,
    f: impl FnOnce(&mut Caps) -> Result<(), CapError>,
) -> Result<(), (String, bool)> {
    let Some(caps) = caps else { return Err(("caps are off in a dry run".into(), false)) };
    let mut c = caps.lock().map_err(|_| ("caps: a previous action panicked".to_string(), false))?;
    f(&mut c).map_err(|e| {
        let permanent = matches!(e, CapError::BadGuest { .. } | CapError::NoNetworks { .. });
        (e.to_string(), permanent)
    })
}

/// The offender's flows the policy evicts: its own (by the guest map), in the policy's
/// states, idle long enough, none touching a protected address.
pub fn evict_selector(loaded: &Loaded, guest: GuestId, policy: &Policy) -> Selector {
    Selector {
        guests: Some(GuestFilter { map: loaded.guests.clone(), ids: vec![guest], cidrs: vec![] }),
        states: policy.evict_state.clone(),
        idle_min: policy.evict_idle.map(|d| d.as_secs().min(u64::from(u32::MAX)) as u32),
        timeouts: policy.evict_idle.map(|_| StateTimeouts::read()),
        except: loaded.cfg.protect.clone(),
        ..Selector::default()
    }
}

/// An eviction, as it runs on its thread.
struct EvictJob {
    audited: evict::audited::Audited,
    stop: Arc<AtomicBool>,
}

impl EvictJob {
    fn run(self) -> Done {
        let guest = self.audited.name.clone();
        match self.audited.run(&self.stop) {
            Ok((report, spool)) => Done::Evicted { guest, report, spool },
            Err(error) => Done::Failed { guest, action: "evict", error, permanent: false },
        }
    }
}

/// The selection as `evict` flags say it, for the records.
fn evict_what(name: &str, sel: &Selector) -> String {
    let mut what = format!("--guest {name} --state {}", states_text(sel));
    if let Some(idle) = sel.idle_min {
        what.push_str(&format!(" --idle {idle}s"));
    }
    for p in &sel.except {
        what.push_str(&format!(" --except {p}"));
    }
    what
}

fn states_text(sel: &Selector) -> String {
    let mut names: Vec<String> = sel.states.iter().map(|s| s.name().to_string()).collect();
    names.dedup();
    names.join(",")
}

/// Compares the caps the decider holds with the rules in the table (read every
/// [`CAPS_EVERY`] on a blocking thread, the answer taken in at the next snapshot): a cap whose
/// rule is gone is recorded and forgotten, so the next round that finds the guest an
/// offender caps it again.
fn check_caps(st: &mut State, loaded: &Loaded, now: Instant) {
    while let Ok((read_at, present)) = st.caps_seen.1.try_recv() {
        // An orphan whose rule is gone (lifted by hand) needs lifting no more.
        let gone: Vec<String> = st
            .orphans
            .keys()
            .filter(|n| !st.busy.contains(*n) && !present.contains(n))
            .cloned()
            .collect();
        for name in gone {
            st.orphans.remove(&name);
            st.metrics.retain(|g| g != name);
        }
        for id in 0..loaded.guests.len() as GuestId {
            let name = loaded.guests.name(id);
            // A cap confirmed after the read began may not be in what it read.
            let known_before = st.capped_at.get(name).is_some_and(|t| *t < read_at);
            if st.decider.is_capped(id)
                && known_before
                && !st.busy.contains(name)
                && !present.iter().any(|p| p == name)
            {
                st.decider.uncapped(id);
                st.metrics.capped(name, false);
                st.record(json!({"event": "cap_lost", "guest": name, "action": "cap",
                    "detail": "the rule is no longer in table inet ctguard (an nftables reload?); \
                    the guest is capped again if it is still an offender"}));
            }
        }
    }
    let Some(caps) = st.caps.clone() else { return };
    if st.caps_read.is_some_and(|t| now.duration_since(t) < CAPS_EVERY) {
        return;
    }
    st.caps_read = Some(now);
    let tx = st.caps_seen.0.clone();
    st.tasks.retain(|t| !t.is_finished());
    st.tasks.push(tokio::task::spawn_blocking(move || {
        let read_at = Instant::now();
        let listed = caps.lock().ok().and_then(|c| c.list().ok());
        if let Some(list) = listed {
            let _ = tx.send((read_at, list.into_iter().map(|c| c.guest).collect()));
        }
    }));
}

/// Takes in what finished actions reported.
fn drain(st: &mut State, loaded: &Loaded) {
    while let Ok(Step { done, last }) = st.done.try_recv() {
        let name = match &done {
            Done::Capped { guest, .. }
            | Done::Uncapped { guest }
            | Done::Evicted { guest, .. }
            | Done::Failed { guest, .. } => guest.clone(),
        };
        if last {
            st.busy.remove(&name);
        }
        // The guest's id now: the map may have changed while the job ran.
        let id = loaded.guests.find(&name);
        let line = match done {
            Done::Capped { nets, limit, .. } => {
                match id {
                    Some(id) => {
                        st.decider.capped(id);
                        st.capped_at.insert(name.clone(), Instant::now());
                    }
                    None => {
                        if st.orphans.insert(name.clone(), Instant::now()).is_none() {
                            st.record(orphaned(&name, &loaded.cfg));
                        }
                    }
                }
                st.metrics.capped(&name, true);
                json!({"event": "done", "guest": name, "action": "cap", "nets": nets, "cap": limit})
            }
            Done::Uncapped { .. } => {
                if let Some(id) = id {
                    st.decider.uncapped(id);
                }
                st.capped_at.remove(&name);
                let orphan = st.orphans.remove(&name).is_some();
                st.metrics.capped(&name, false);
                if orphan {
                    st.metrics.retain(|g| g != name);
                }
                json!({"event": "done", "guest": name, "action": "uncap"})
            }
            Done::Evicted { report, spool, .. } => {
                if let Some(id) = id {
                    st.decider.evicted(id, report.deleted, Instant::now());
                }
                st.metrics.evicted(&name, report.deleted);
                json!({"event": "done", "guest": name, "action": "evict",
                    "deleted": report.deleted, "matched": report.matched,
                    "spool": spool.map(|p| p.display().to_string()),
                    "elapsed_s": report.elapsed_s})
            }
            Done::Failed { action, error, permanent, .. } => {
                if permanent && action == "cap" {
                    if let Some(id) = id {
                        st.decider.uncappable(id);
                    }
                    json!({"event": "failed", "guest": name, "action": action, "error": error,
                        "detail": "this guest cannot be capped: it is not tried again, and its \
                                   flows are still evicted"})
                } else {
                    json!({"event": "failed", "guest": name, "action": action, "error": error})
                }
            }
        };
        st.record(line);
    }
}

/// Lifts the caps of `which` guests (all with `None`) from ctguard's table in this namespace:
/// `ctguard guard --uncap`. Returns the guests uncapped.
pub fn uncap(which: Option<&str>) -> Result<Vec<String>, CapError> {
    let mut caps = Caps::open()?;
    let mut names: Vec<String> = caps.list()?.into_iter().map(|c| c.guest).collect();
    names.sort();
    names.dedup();
    names.retain(|n| which.is_none_or(|w| w == n));
    for n in &names {
        caps.remove(n)?;
    }
    Ok(names)
}
