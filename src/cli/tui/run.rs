//! The interactive `watch`'s loop: the live engine counts, each snapshot becomes the view's
//! [`Data`], keys (read on their own thread) become effects, and what an effect takes longer
//! than a key (a dump for the drill-down, an eviction, nftables) runs on a blocking thread
//! whose answer comes back to the view. Regrouping restarts the engine under the new key.
//!
//! The terminal is raw and on the alternate screen from [`Term::enter`] until it is dropped,
//! which also happens on a panic (the hook) and after SIGTERM, SIGINT or SIGHUP (they quit).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Stdout};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyEvent, KeyEventKind};
use crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use ctguard::ctnetlink::{Conntrack, Dumped};
use ctguard::evict::audited::Audited;
use ctguard::flow::{Flow, L4, ProtoState};
use ctguard::guard::caps::Caps;
use ctguard::guard::decide;
use ctguard::guests::GuestMap;
use ctguard::live::watcher::Overrun;
use ctguard::live::{Classifier, Config, Netns, Resynced, Shutdown, Sink, View, Watcher};
use ctguard::output::report::Ranking;
use ctguard::select::Selector;
use ctguard::stats::{CounterSampler, CounterWindow, CpuStats};
use ctguard::sysctl::StateTimeouts;
use ctguard::tally::{self, GroupBy};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::app::App;
use super::group::{self, Origin};
use super::model::{CapPreview, CapRow, Data, Drill, Effect, EvictPreview, Group, Header};
use crate::cli::exit::Failure;

/// How often the key thread looks at whether the view has quit.
const KEY_POLL: Duration = Duration::from_millis(50);
/// Running actions get this long to stop when the view quits.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Most frequent destinations, ports, states and most idle flows a drill-down shows.
const DRILL_TOP: usize = 10;

/// What the interactive watch needs besides the kernel.
pub struct Opts {
    pub sel: Selector,
    pub guests: Arc<GuestMap>,
    pub by: GroupBy,
    pub interval: Duration,
    pub reconcile: Option<Duration>,
    pub rcvbuf: usize,
    pub origin: Origin,
    /// The audit log of its evictions (`None`: off).
    pub audit_log: Option<PathBuf>,
    /// Where their spools go (`DIR/spool/`).
    pub save_dir: PathBuf,
    /// The `ct count` limit of `c`.
    pub cap: u32,
    pub colour: bool,
    /// A note for the header (the events setting's warning).
    pub note: Option<String>,
    /// `--count`, `--duration`: the view quits after so many snapshots, or so long.
    pub count: Option<u64>,
    pub duration: Option<Duration>,
}

/// The raw terminal on the alternate screen, left on drop.
struct Term(Terminal<CrosstermBackend<Stdout>>);

impl Term {
    fn enter() -> io::Result<Term> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            Term::leave();
            previous(info);
        }));
        terminal::enable_raw_mode()?;
        if let Err(e) = crossterm::execute!(io::stdout(), EnterAlternateScreen) {
            Term::leave();
            return Err(e);
        }
        Terminal::new(CrosstermBackend::new(io::stdout())).map(Term).inspect_err(|_| Term::leave())
    }

    fn leave() {
        let _ = terminal::disable_raw_mode();
        let _ = crossterm::execute!(io::stdout(), crossterm::cursor::Show, LeaveAlternateScreen);
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        Term::leave();
    }
}

/// What comes to the view from outside it.
enum Input {
    Key(KeyEvent),
    Resize,
    /// A blocking job's answer.
    Done(Answer),
    /// The terminal cannot be read: why.
    Gone(String),
}

enum Answer {
    Drill(Result<Drill, String>),
    Report(Vec<String>),
    /// An eviction's report: the counts are taken again from a dump, since flows made while
    /// no listener existed (`nf_conntrack_events=2`) report no DESTROY when deleted.
    Evicted(Vec<String>),
    Caps(Result<Vec<CapRow>, String>),
}

/// Reads keys until `quit`, on its own thread: `event::read` blocks, the engine must not. A
/// read interrupted by a signal is tried again; a terminal that cannot be read ten times in a
/// row (it went away) ends the view, which could no longer be quit by a key.
fn read_keys(tx: UnboundedSender<Input>, quit: Arc<AtomicBool>) {
    let mut failures = 0;
    while !quit.load(Ordering::Relaxed) {
        let read = event::poll(KEY_POLL).and_then(|ready| ready.then(event::read).transpose());
        let input = match read {
            Ok(None) => continue,
            Ok(Some(Event::Key(k))) if k.kind != KeyEventKind::Release => Input::Key(k),
            Ok(Some(Event::Resize(..))) => Input::Resize,
            Ok(Some(_)) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                failures += 1;
                if failures < 10 {
                    std::thread::sleep(KEY_POLL);
                    continue;
                }
                Input::Gone(e.to_string())
            }
        };
        failures = 0;
        let gone = matches!(input, Input::Gone(_));
        if tx.send(input).is_err() || gone {
            return;
        }
    }
}

/// The view and what it was last shown.
struct Ui {
    app: App,
    term: Term,
    latest: Data,
    /// The counters' last reading: the next one closes a window over them.
    kernel: Option<CounterSampler>,
    ct: Option<Conntrack>,
    note: Option<String>,
    lost_events: Option<u64>,
    /// The last frame failed to be written.
    torn: bool,
}

impl Ui {
    /// Draws the view. After a frame that could not be written whole, the next is drawn in
    /// full: ratatui sends only what changed since the frame it believes is on screen.
    fn draw(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.torn) {
            self.term.0.clear()?;
        }
        let app = &self.app;
        let r = self.term.0.draw(|f| app.draw(f)).map(|_| ());
        self.torn = r.is_err();
        r
    }
}

/// The window a reading closes; the first reading only opens one.
fn kernel_window(sampler: &mut Option<CounterSampler>, cpus: &[CpuStats]) -> Option<CounterWindow> {
    let now = Instant::now();
    match sampler {
        Some(s) => Some(s.next(now, cpus)),
        None => {
            *sampler = Some(CounterSampler::start(now, cpus));
            None
        }
    }
}

/// Why the counts are not in sync, in the view's words.
fn why_not(reason: Option<&str>) -> Option<String> {
    Some(
        match reason? {
            "reconcile" => "reconciling",
            "overrun" => "resyncing after overrun",
            "mismatch" => "out of sync: the counts disagree with the table",
            "start" => "seeding",
            other => other,
        }
        .to_string(),
    )
}

struct UiSink<'a> {
    ui: &'a RefCell<Ui>,
    netns: Option<String>,
    by: GroupBy,
}

impl Sink for UiSink<'_> {
    type Error = Failure;

    fn overrun(&mut self, o: &Overrun) -> Result<(), Failure> {
        self.ui.borrow_mut().lost_events = o.lost_events;
        Ok(())
    }

    fn resynced(&mut self, _: &Resynced) -> Result<(), Failure> {
        Ok(())
    }

    fn snapshot(&mut self, v: &View<'_>) -> Result<(), Failure> {
        let mut ui = self.ui.borrow_mut();
        let reading = ui.ct.as_mut().and_then(|ct| ct.cpu_stats().ok());
        let window = reading.and_then(|cpus| kernel_window(&mut ui.kernel, &cpus));
        let rate = |counter: fn(&CpuStats) -> u32| window.map(|w| w.rate(counter));
        let (drop, early, failed) =
            (rate(|c| c.drop), rate(|c| c.early_drop), rate(|c| c.insert_failed));
        let report = Ranking::new(v.table.tally(), None, None).report();
        let groups = report
            .groups
            .into_iter()
            .map(|g| Group {
                by_state: (0..tally::COLUMNS)
                    .map(|c| g.states.get(tally::column_name(c)).copied().unwrap_or(0))
                    .collect(),
                key: g.key,
                entries: g.entries,
            })
            .collect();
        let header = Header {
            netns: self.netns.clone(),
            count: v.stats.map(|s| u64::from(s.count)),
            max: v.stats.map(|s| u64::from(s.max)),
            new_per_s: v.rates.new_per_s,
            destroy_per_s: v.rates.destroy_per_s,
            drop_per_s: drop,
            early_drop_per_s: early,
            insert_failed_per_s: failed,
            lost_events: ui.lost_events,
            overruns: v.overruns,
            resyncs: v.resyncs,
            synced: v.synced,
            why_not: if v.synced {
                None
            } else {
                why_not(v.reason.map(|r| r.name())).or_else(|| ui.note.clone())
            },
        };
        let data = Data { header, by: Some(self.by), groups, matched: report.matched };
        ui.latest = data.clone();
        ui.app.set_data(data);
        ui.draw()?;
        Ok(())
    }

    fn snapshot_at_seed(&self) -> bool {
        true
    }
}

/// Why the engine stopped.
enum Next {
    Quit,
    /// Count again from a dump, grouped as the view now asks (`g`, or after an eviction).
    Restart,
    /// The terminal went away: why.
    Gone(String),
}

/// Runs the interactive watch until `q`, Ctrl-C or a signal. Call it inside the namespace.
pub async fn run(ct: &mut Conntrack, o: Opts) -> Result<(), Failure> {
    let origin = o.origin.clone();
    let mut by = o.by;
    let command_origin = origin.clone();
    let command_by = std::rc::Rc::new(std::cell::Cell::new(by));
    let shown_by = command_by.clone();
    let command = Box::new(move |key: &str, states: &[ProtoState]| {
        group::evict_command(&command_origin, shown_by.get(), key, states)
    });
    let app = App::new(by, choices(by, &o.guests), o.colour, command);
    let ui = RefCell::new(Ui {
        app,
        term: Term::enter()?,
        latest: Data::default(),
        kernel: None,
        ct: Conntrack::open().ok(),
        note: o.note.clone(),
        lost_events: None,
        torn: false,
    });
    let quit = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = unbounded_channel();
    let keys = {
        let (tx, quit) = (tx.clone(), quit.clone());
        std::thread::spawn(move || read_keys(tx, quit))
    };
    let mut jobs = Jobs { tx, stop: quit.clone(), running: Vec::new() };
    let mut signals = Signals::new()?;
    let deadline = o.duration.map(|d| tokio::time::Instant::now() + d);
    let result = loop {
        command_by.set(by);
        let cfg = Config {
            classifier: Classifier::new(o.sel.clone(), by, o.guests.clone()),
            interval: o.interval,
            reconcile: o.reconcile,
            snapshots: o.count,
            wake: None,
        };
        let mut next = Next::Quit;
        let ended = {
            let mut kernel = Netns { ct: &mut *ct, rcvbuf: o.rcvbuf };
            let mut sink = UiSink { ui: &ui, netns: origin.netns.clone(), by };
            let edges = Edges { rx: &mut rx, signals: &mut signals, deadline };
            let inputs = inputs(&ui, edges, &mut jobs, &o, by, &mut next);
            Watcher::new(&cfg, &mut kernel, &mut sink).run(inputs).await
        };
        if let Err(e) = ended {
            break Err(e);
        }
        match next {
            Next::Quit => break Ok(()),
            Next::Restart => by = ui.borrow().app.by(),
            Next::Gone(why) => break Err(Failure::Message(format!("watch: the terminal: {why}"))),
        }
    };
    quit.store(true, Ordering::Relaxed);
    jobs.finish().await;
    drop(ui);
    let _ = keys.join();
    // What a running action said as the view quit, now on the shell's screen: an eviction
    // cut short by the quit is the operator's to know of (and an exit 2, as for `evict`).
    let mut cut_short = None;
    while let Ok(input) = rx.try_recv() {
        if let Input::Done(Answer::Evicted(lines) | Answer::Report(lines)) = input {
            for line in &lines {
                eprintln!("ctguard: watch: {line}");
            }
            if lines.iter().any(|l| l.starts_with("interrupted")) {
                cut_short = Some(lines.join("; "));
            }
        }
    }
    match cut_short {
        Some(what) if result.is_ok() => {
            Err(Failure::Message(format!("watch: an eviction was interrupted: {what}")))
        }
        _ => result,
    }
}

/// What `g` cycles through: the grouping watch started with first, then guest (when guests
/// are known), src, src/24, dst, state, zone.
fn choices(start: GroupBy, guests: &GuestMap) -> Vec<GroupBy> {
    let mut all = vec![start];
    let mut more =
        vec![GroupBy::Src, GroupBy::SrcNet(24, 64), GroupBy::Dst, GroupBy::State, GroupBy::Zone];
    if !guests.is_empty() {
        more.insert(0, GroupBy::Guest);
    }
    for b in more {
        if !all.contains(&b) {
            all.push(b);
        }
    }
    all
}

/// SIGTERM, SIGINT and SIGHUP: each quits the view.
struct Signals(Vec<tokio::signal::unix::Signal>);

impl Signals {
    fn new() -> Result<Signals, Failure> {
        use tokio::signal::unix::{SignalKind, signal};
        let kinds = [SignalKind::terminate(), SignalKind::interrupt(), SignalKind::hangup()];
        let mut v = Vec::new();
        for k in kinds {
            v.push(signal(k).map_err(|e| Failure::Message(format!("signal handlers: {e}")))?);
        }
        Ok(Signals(v))
    }

    async fn any(&mut self) {
        let [a, b, c] = &mut self.0[..] else { return std::future::pending().await };
        tokio::select! {
            _ = a.recv() => {}
            _ = b.recv() => {}
            _ = c.recv() => {}
        }
    }
}

/// The blocking jobs the view started, one at a time.
struct Jobs {
    tx: UnboundedSender<Input>,
    stop: Arc<AtomicBool>,
    running: Vec<tokio::task::JoinHandle<()>>,
}

impl Jobs {
    fn busy(&mut self) -> bool {
        self.running.retain(|t| !t.is_finished());
        !self.running.is_empty()
    }

    fn start(&mut self, job: impl FnOnce(&AtomicBool) -> Answer + Send + 'static) {
        let (tx, stop) = (self.tx.clone(), self.stop.clone());
        self.running.push(tokio::task::spawn_blocking(move || {
            let answer = job(&stop);
            let _ = tx.send(Input::Done(answer));
        }));
    }

    async fn finish(&mut self) {
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        for t in self.running.drain(..) {
            let _ = tokio::time::timeout_at(deadline, t).await;
        }
    }
}

/// Where the view's inputs come from, and when it ends by itself (`--duration`).
struct Edges<'a> {
    rx: &'a mut UnboundedReceiver<Input>,
    signals: &'a mut Signals,
    deadline: Option<tokio::time::Instant>,
}

/// The engine's shutdown future: keys, answers and signals until one of them ends the run.
async fn inputs(
    ui: &RefCell<Ui>,
    e: Edges<'_>,
    jobs: &mut Jobs,
    o: &Opts,
    by: GroupBy,
    next: &mut Next,
) -> Shutdown {
    let until = async {
        match e.deadline {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    };
    let mut until = std::pin::pin!(until);
    loop {
        let input = tokio::select! {
            i = e.rx.recv() => i,
            () = e.signals.any() => None,
            () = &mut until => None,
        };
        let Some(input) = input else {
            *next = Next::Quit;
            return Shutdown::Now;
        };
        let mut u = ui.borrow_mut();
        let effect = match input {
            Input::Key(k) => u.app.key(k),
            Input::Resize => Effect::None,
            Input::Gone(why) => {
                *next = Next::Gone(why);
                return Shutdown::Now;
            }
            Input::Done(answer) => {
                u.app.set_busy(None);
                match answer {
                    Answer::Drill(Ok(d)) => u.app.set_drill(d),
                    Answer::Caps(Ok(c)) => u.app.set_caps(c),
                    Answer::Drill(Err(e)) | Answer::Caps(Err(e)) => u.app.set_report(vec![e]),
                    Answer::Report(lines) => u.app.set_report(lines),
                    Answer::Evicted(lines) => {
                        u.app.set_report(lines);
                        let _ = u.draw();
                        *next = Next::Restart;
                        return Shutdown::Now;
                    }
                }
                Effect::None
            }
        };
        match act(&mut u, jobs, o, by, effect) {
            Some(n) => {
                *next = n;
                return Shutdown::Now;
            }
            None => {
                let _ = u.draw();
            }
        }
    }
}

/// Carries out an effect; `Some` when it ends this run of the engine.
fn act(u: &mut Ui, jobs: &mut Jobs, o: &Opts, by: GroupBy, effect: Effect) -> Option<Next> {
    let one_at_a_time = |u: &mut Ui, jobs: &mut Jobs| {
        let busy = jobs.busy();
        if busy {
            u.app.set_report(vec!["an action is still running: wait for its report".into()]);
        }
        busy
    };
    match effect {
        Effect::None => {}
        Effect::Quit => return Some(Next::Quit),
        Effect::Regroup(_) => return Some(Next::Restart),
        Effect::Drill { key } => match group::selector(&o.sel, by, &key, &o.guests) {
            Ok(sel) if !one_at_a_time(u, jobs) => {
                u.app.set_busy(Some(format!("dumping {key}…")));
                jobs.start(move |_| Answer::Drill(drill(&key, &sel)));
            }
            Ok(_) => {}
            Err(e) => u.app.set_report(vec![e]),
        },
        Effect::PreviewEvict { key } => {
            if let Err(e) = group::selector(&o.sel, by, &key, &o.guests) {
                u.app.set_report(vec![e]);
                return None;
            }
            let row = u.latest.groups.iter().find(|g| g.key == key);
            let states = row.map(|g| preview_states(&g.by_state)).unwrap_or_default();
            u.app.set_evict_preview(EvictPreview { key, states });
        }
        Effect::Evict { key, states } => {
            let sel = match group::selector(&o.sel, by, &key, &o.guests) {
                Ok(sel) => group::with_states(sel, &states),
                Err(e) => {
                    u.app.set_report(vec![e]);
                    return None;
                }
            };
            if one_at_a_time(u, jobs) {
                return None;
            }
            let audited = Audited {
                command: "watch",
                name: key.clone(),
                what: group::evict_command(&o.origin, by, &key, &states),
                sel,
                limit: None,
                state_dir: o.save_dir.clone(),
                audit_log: o.audit_log.clone(),
                netns: o.origin.netns.clone(),
            };
            u.app.set_busy(Some(format!("evicting {key}…")));
            jobs.start(move |stop| {
                let r = made(&audited.state_dir).and_then(|()| audited.run(stop));
                Answer::Evicted(evicted(&key, r))
            });
        }
        Effect::PreviewCap { key } => {
            let preview = match group::cap_nets(&o.sel, by, &key, &o.guests) {
                Ok(nets) => {
                    let nets = decide::cap_nets(&nets, &o.sel.except);
                    let refused = nets.is_empty().then(|| "every network is protected".into());
                    let nets = nets.iter().map(ToString::to_string).collect();
                    CapPreview { key, nets, limit: o.cap, refused }
                }
                Err(e) => CapPreview { key, nets: vec![], limit: o.cap, refused: Some(e) },
            };
            u.app.set_cap_preview(preview);
        }
        Effect::Cap { key } => {
            let nets = match group::cap_nets(&o.sel, by, &key, &o.guests) {
                Ok(nets) => decide::cap_nets(&nets, &o.sel.except),
                Err(e) => {
                    u.app.set_report(vec![e]);
                    return None;
                }
            };
            if nets.is_empty() || one_at_a_time(u, jobs) {
                return None;
            }
            let limit = o.cap;
            u.app.set_busy(Some(format!("capping {key}…")));
            jobs.start(move |_| {
                let r = Caps::open().and_then(|mut c| c.install(&key, &nets, limit));
                Answer::Report(vec![match r {
                    Ok(()) => format!(
                        "capped {key}: {} new connections at most on {} (table inet ctguard; \
                         C lists and lifts caps)",
                        limit,
                        nets.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    ),
                    Err(e) => format!("cap {key}: {e}"),
                }])
            });
        }
        Effect::ListCaps => {
            if !one_at_a_time(u, jobs) {
                jobs.start(|_| Answer::Caps(list_caps()));
            }
        }
        Effect::Uncap { guest } => {
            if !one_at_a_time(u, jobs) {
                jobs.start(move |_| match Caps::open().and_then(|mut c| c.remove(&guest)) {
                    Ok(()) => Answer::Caps(list_caps()),
                    Err(e) => Answer::Report(vec![format!("uncap {guest}: {e}")]),
                });
            }
        }
    }
    None
}

/// Makes `dir` (one level, 0700 whatever the umask) when it is missing: the save directory of
/// a first eviction. What is there already is the spool's to judge (owner, mode, symlink).
fn made(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("--save-dir {}: {e}", dir.display())),
    }
}

fn list_caps() -> Result<Vec<CapRow>, String> {
    let caps = Caps::open().and_then(|c| c.list()).map_err(|e| format!("caps: {e}"))?;
    Ok(caps
        .into_iter()
        .map(|c| CapRow { guest: c.guest, net: c.net.to_string(), limit: c.limit })
        .collect())
}

/// The group's TCP states with flows, ESTABLISHED chosen.
fn preview_states(by_state: &[u64]) -> Vec<(ProtoState, u64, bool)> {
    (0..tally::COLUMNS)
        .filter(|&c| by_state.get(c).is_some_and(|n| *n > 0))
        .filter_map(|c| {
            let state = ctguard::select::parse_states(tally::column_name(c)).ok()?;
            let state = *state.first()?;
            let established = state.name() == "ESTABLISHED";
            Some((state, by_state[c], established))
        })
        .collect()
}

/// An eviction's report, as lines for the view.
fn evicted(key: &str, r: Result<(ctguard::evict::Report, Option<PathBuf>), String>) -> Vec<String> {
    match r {
        Ok((report, spool)) => {
            let mut lines = vec![format!(
                "evicted {key}: {} deleted of {} matched in {:.2} s",
                report.deleted, report.matched, report.elapsed_s
            )];
            if let Some(p) = spool {
                lines.push(format!("saved: {} (ctguard load puts them back)", p.display()));
            }
            if report.interrupted {
                lines.push("interrupted: the rest are still there".into());
            }
            lines
        }
        Err(e) => vec![format!("evict {key}: {e}")],
    }
}

/// One dump of the group's flows, summarised; memory bounded by the distinct destinations
/// and ports (a tally), not the flows.
fn drill(key: &str, sel: &Selector) -> Result<Drill, String> {
    let mut d = Drill { key: key.to_string(), ..Drill::default() };
    let failed = |e: ctguard::ctnetlink::Error| format!("dump of {key}: {e}");
    let mut ct = Conntrack::open().map_err(failed)?;
    let timeouts = StateTimeouts::read();
    let sel = crate::cli::dump::with_timeouts(sel.clone());
    let (mut dst, mut port, mut state): (
        HashMap<String, u64>,
        HashMap<String, u64>,
        HashMap<String, u64>,
    ) = Default::default();
    let mut idle: Vec<(u64, String)> = Vec::new();
    let mut flows = 0;
    let r = ct.dump_retrying(&sel.kernel_filter(), |seen| {
        match seen {
            Dumped::Flow(f, _) if sel.matches(f) => {
                flows += 1;
                *dst.entry(f.orig.dst.to_string()).or_default() += 1;
                *port.entry(port_of(f)).or_default() += 1;
                *state.entry(f.state.map_or("-", |s| s.name()).to_string()).or_default() += 1;
                let secs = u64::from(timeouts.idle(f).unwrap_or(0));
                if idle.len() < DRILL_TOP || idle.last().is_some_and(|(s, _)| secs > *s) {
                    idle.push((secs, line_of(f)));
                    idle.sort_by_key(|(secs, _)| std::cmp::Reverse(*secs));
                    idle.truncate(DRILL_TOP);
                }
            }
            Dumped::Flow(..) => {}
            Dumped::Restart => {
                (flows, idle) = (0, Vec::new());
                (dst, port, state) = Default::default();
            }
        }
        ControlFlow::Continue(())
    });
    r.map_err(failed)?;
    let top = |m: HashMap<String, u64>| {
        let mut v: Vec<(String, u64)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(DRILL_TOP);
        v
    };
    d.flows = flows;
    d.destinations = top(dst);
    d.ports = top(port);
    d.states = top(state);
    d.most_idle = idle.into_iter().map(|(s, l)| (l, s)).collect();
    Ok(d)
}

fn port_of(f: &Flow) -> String {
    match f.orig.l4 {
        L4::Ports { dst, .. } => format!("{}/{dst}", f.proto.name()),
        _ => f.proto.name().to_string(),
    }
}

fn line_of(f: &Flow) -> String {
    format!("{} {}", f.brief(), f.state.map_or("", |s| s.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_15_the_preview_offers_the_groups_tcp_states_established_chosen() {
        let mut by_state = vec![0; tally::COLUMNS];
        let est = (0..tally::COLUMNS).find(|&c| tally::column_name(c) == "ESTABLISHED").unwrap();
        let tw = (0..tally::COLUMNS).find(|&c| tally::column_name(c) == "TIME_WAIT").unwrap();
        let non_tcp = (0..tally::COLUMNS).find(|&c| tally::column_name(c) == "NON_TCP").unwrap();
        (by_state[est], by_state[tw], by_state[non_tcp]) = (246_265, 12, 5);
        let p = preview_states(&by_state);
        let shown: Vec<(&str, u64, bool)> = p.iter().map(|(s, n, c)| (s.name(), *n, *c)).collect();
        assert_eq!(shown, vec![("ESTABLISHED", 246_265, true), ("TIME_WAIT", 12, false)]);
    }

    #[test]
    fn issue_15_g_cycles_from_the_starting_grouping() {
        let g = GuestMap::parse("a = \"10.0.0.1\"\n", "g").unwrap();
        let c = choices(GroupBy::Src, &g);
        assert_eq!(c[0], GroupBy::Src);
        assert_eq!(c[1], GroupBy::Guest);
        assert_eq!(c.iter().filter(|b| **b == GroupBy::Src).count(), 1);
        assert!(!choices(GroupBy::Src, &GuestMap::new()).contains(&GroupBy::Guest));
    }
}
