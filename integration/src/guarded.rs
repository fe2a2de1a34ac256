//! The incident replayed with `ctguard guard` running (issue 13): the guard watches the lab's
//! host namespace while the runaway guest floods, and relieves the table without a human. It
//! caps the guest and evicts its ESTABLISHED flows. The healthy guests keep connecting all the
//! while, and the cap is lifted after the cooldown. The lab test and `ctguard-lab guard-demo`
//! run this code.
//!
//! The guard is the binary under test, started as a child process with a configuration in the
//! lab's scratch directory. Everything it touches is in the lab's host namespace (`netns` in
//! its configuration) or in the scratch directory: its `/metrics` listens on the host
//! namespace's loopback, and its socket, audit log and spool are scratch files. What it did is
//! checked against `conntrack -L` (the oracle), `nft list table inet ctguard`, its
//! `/metrics`, and its audit log.
//!
//! Where the table starts: `nf_conntrack_max` is global and read-only in a child namespace
//! (see [`crate::replay`]), so the lab's table is as large as the machine's limit. It is
//! loaded to [`SEED_PERCENT`] with the incident's table, the runaway guest's part cut to fit.
//! The runaway guest's real connections then take it across `high` ([`HIGH_PERCENT`]).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::place::Place;
use crate::replay::{self, FLOOD, Narrator, PROBE_TIMEOUT, expect};
use crate::table;
use crate::topology::{self, GUESTS, GuestSpec, Lab, RUNAWAY};
use crate::traffic;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The ctguard binary under test (a release build: the guard's relief targets are a
    /// release build's).
    pub ctguard: PathBuf,
    /// Narration to stderr instead of stdout.
    pub narrate_to_stderr: bool,
}

/// The guard acts from this fill (percent of `nf_conntrack_max`).
pub const HIGH_PERCENT: u64 = 90;
/// It keeps acting until the table is under this.
pub const LOW_PERCENT: u64 = 80;
/// The fill the incident's table is loaded to before the flood: below `high`, so that the
/// runaway guest's own connections cross it, about 13,000 of them at 262,144.
pub const SEED_PERCENT: u64 = 85;
/// A guest holding more than this share of the table while it is above `high` is an
/// offender: the runaway guest holds nearly all of it, a healthy guest a few hundred entries.
pub const QUOTA: &str = "25%";
/// New connections a capped guest may still open: small against the 5 points (13,000 entries)
/// between `high` and the most the table may reach.
pub const CAP: u32 = 2_000;
/// Under its quota this long, a guest's cap is lifted.
pub const COOLDOWN: Duration = Duration::from_secs(3);
/// Where the guard's `/metrics` listens, on the host namespace's loopback (nothing else
/// listens there).
pub const METRICS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9731);
/// The fewest new TCP connections the healthy guests open during the flood (they go on until
/// the eviction is done), one every [`PROBE_EVERY`], over IPv4 and IPv6 in turn; every one
/// must succeed.
pub const HEALTHY_PROBES: usize = 120;
/// Between two healthy probes' starts: 25 a second.
pub const PROBE_EVERY: Duration = Duration::from_millis(40);
/// How long the guard may take to seed its live counts from the table.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// How long the relief (cap and eviction) may take after the flood starts.
const RELIEF_LIMIT: Duration = Duration::from_secs(60);
/// How long after the flood stops the cap must be gone: the cooldown, and time to spare.
const UNCAP_LIMIT: Duration = Duration::from_secs(20);
/// A stopped guard exits within this (issue 13: SIGTERM stops it within a second).
pub const STOP_LIMIT: Duration = Duration::from_secs(1);
/// The whole run may take this long; then it stops and the lab is removed.
pub const RUN_LIMIT: Duration = Duration::from_secs(170);

/// What the run observed, for the caller to report or assert on.
#[derive(Debug, Default)]
pub struct Outcome {
    /// `nf_conntrack_max`, and `high` in entries.
    pub max: u64,
    pub high: u64,
    /// Entries loaded, and the table's count when the flood started.
    pub seeded: u64,
    pub start_count: u64,
    /// The runaway guest's ESTABLISHED entries just before the flood (`conntrack -L`).
    pub runaway_before: usize,
    /// The most entries the table held (sampled every few milliseconds from the flood's start
    /// to its end).
    pub peak: u64,
    /// Samples of the count taken.
    pub samples: u64,
    /// Seconds from the flood's start until the count reached `high`, by the samples.
    pub fill_secs: Option<f64>,
    /// Milliseconds from the samples' first count at `high` to the guard's `done` record of
    /// the cap (an upper bound: the guard records it at its next snapshot).
    pub cross_to_cap_ms: Option<f64>,
    /// Milliseconds from the guard's `relief_started` to its cap's `done`.
    pub relief_to_cap_ms: Option<f64>,
    /// What the guard's `relief_started` record saw, in percent.
    pub relief_fill_percent: Option<f64>,
    /// Milliseconds from the cap's `done` to the eviction's `done`, and the eviction's own time
    /// (`elapsed_s` of its record) and count.
    pub cap_to_evicted_ms: Option<f64>,
    /// Milliseconds from the guard's `relief_started` to the eviction's `done`.
    pub relief_to_evicted_ms: Option<f64>,
    pub evict_secs: Option<f64>,
    pub evicted: u64,
    /// The runaway guest's ESTABLISHED entries of before the flood still in the table after
    /// the eviction (by tuple and id).
    pub runaway_left: usize,
    /// Healthy probes made and succeeded, and the first failure.
    pub probes: usize,
    pub probes_ok: usize,
    pub probe_failure: Option<String>,
    /// The healthy guests' ESTABLISHED entries before the flood and after the relief: how
    /// many, and whether the two sets are equal.
    pub healthy_established: usize,
    pub healthy_intact: bool,
    /// `ctguard_capped{guest="runaway"}`: whether a scrape showed 1 while the cap was in place;
    /// what the last scrape after the cap's removal showed.
    pub metrics_capped: bool,
    pub metrics_capped_after: Option<f64>,
    /// `ctguard_evicted_total{guest="runaway"}` after the eviction.
    pub metrics_evicted: Option<f64>,
    /// The guard's records (`"record":"guard"`), by event and action.
    pub records: Vec<(String, String)>,
    /// The eviction's `intent` and `outcome` records with `"command":"guard"`.
    pub evict_intents: usize,
    pub evict_outcomes: usize,
    /// Files in `state_dir/spool/`.
    pub spool_files: usize,
    /// Milliseconds from the flood's end to the cap's removal (`done` of `uncap`; negative
    /// when it came before).
    pub uncap_after_flood_ms: Option<f64>,
    /// Lines of `nft list table inet ctguard` naming the runaway guest after the uncap.
    pub nft_runaway_lines: Vec<String>,
    /// The runaway guest's flood.
    pub flood_attempts: usize,
    pub flood_established: usize,
    pub flood_timed_out: usize,
    /// How long the guard took to exit after SIGTERM, and how it exited.
    pub stop_ms: f64,
    pub guard_exit: Option<i32>,
}

impl Outcome {
    /// The peak's fill, in percent of `nf_conntrack_max`.
    pub fn peak_percent(&self) -> f64 {
        percent(self.peak, self.max)
    }

    /// How many guard records of `event` (and `action`, when given) the audit log holds.
    pub fn count(&self, event: &str, action: Option<&str>) -> usize {
        self.records.iter().filter(|(e, a)| e == event && action.is_none_or(|x| x == a)).count()
    }
}

fn percent(n: u64, of: u64) -> f64 {
    if of == 0 { 0.0 } else { 100.0 * n as f64 / of as f64 }
}

/// Runs the replay on a runtime of its own, for at most [`RUN_LIMIT`], and stops it on Ctrl-C
/// or SIGTERM. Whichever way it ends, the guard is stopped and the lab removed before this
/// returns.
pub fn run_bounded(opts: &Options) -> Result<Outcome, String> {
    crate::replay::bounded(RUN_LIMIT, "the guarded replay", run(opts))
}

/// Runs the guarded replay in a fresh lab, which is removed before this returns, whatever
/// happened.
pub async fn run(opts: &Options) -> Result<Outcome, String> {
    let say = Narrator::new(opts.narrate_to_stderr);
    say.step("Build the hypervisor lab: host namespace with a bridge, four guests, upstream");
    let lab = Lab::build().await?;
    let result = guarded(&lab, opts, &say).await;
    say.step("Remove the lab");
    drop(lab);
    say.note("every ctg-lab namespace deleted (links, rulesets, ctguard's table go with them)");
    result
}

async fn guarded(lab: &Lab, opts: &Options, say: &Narrator) -> Result<Outcome, String> {
    let mut out = Outcome::default();
    let healthy = replay::healthy(lab);
    replay::start_upstream(lab).await?;
    let sessions = replay::open_sessions(lab, &healthy).await?;
    say.note(&format!("{} sessions of the healthy guests open and echoing", sessions.len()));

    say.step(&format!("Load the incident's table to {SEED_PERCENT}% of nf_conntrack_max"));
    out.max = table::max(&lab.host)?;
    out.high = out.max * HIGH_PERCENT / 100;
    let others = crate::seed::ENTRIES - u64::from(crate::seed::RUNAWAY_ESTABLISHED);
    let target = out.max * SEED_PERCENT / 100;
    let runaway = target.saturating_sub(others + table::count(&lab.host)?);
    expect(runaway > 0 && runaway <= u64::from(crate::seed::RUNAWAY_ESTABLISHED), || {
        format!(
            "nf_conntrack_max is {}: the lab needs a table of 22,000 to 282,000 entries \
             (the incident's other guests' {others} entries below {SEED_PERCENT}% of it)",
            out.max
        )
    })?;
    let started = Instant::now();
    out.seeded = table::seed_entries(
        &lab.host,
        &lab.scratch("incident.conntrack"),
        crate::seed::entries_with_runaway(runaway as u32),
    )?;
    let count = table::count(&lab.host)?;
    say.note(&format!(
        "{} entries loaded in {:.1} s ({runaway} of them {}'s ESTABLISHED): table {count} of {} \
         ({:.1}% full); the guard acts from {HIGH_PERCENT}% ({} entries)",
        out.seeded,
        started.elapsed().as_secs_f64(),
        RUNAWAY.v4,
        out.max,
        percent(count, out.max),
        out.high
    ));

    say.step("Start the guard in the host namespace (release build)");
    let files = GuardFiles::write(lab)?;
    say.command(&[
        opts.ctguard.display().to_string(),
        "guard".into(),
        "--config".into(),
        files.config.display().to_string(),
    ]);
    say.note(&std::fs::read_to_string(&files.config).unwrap_or_default());
    let mut guard = GuardProcess::start(&opts.ctguard, &files)?;
    let started = Instant::now();
    loop {
        let seen = scrape(&lab.host).await.ok();
        let entries = seen.as_deref().and_then(|m| metric(m, "ctguard_table_entries", &[]));
        if entries.is_some_and(|n| n >= out.seeded as f64) {
            say.note(&format!(
                "seeded in {:.1} s: /metrics says ctguard_table_entries {}",
                started.elapsed().as_secs_f64(),
                entries.unwrap_or_default()
            ));
            break;
        }
        if !guard.running() || started.elapsed() > READY_LIMIT {
            return Err(format!(
                "the guard did not come up within {READY_LIMIT:?} (running: {}): {}",
                guard.running(),
                tail(&files.stderr)
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The oracle before the flood: the runaway guest's ESTABLISHED entries (by tuple and id:
    // a new connection on a re-used tuple is not one of them) and the healthy guests'.
    let selection = format!("ESTABLISHED src={} ", RUNAWAY.v4);
    let before = table::list(&lab.host, &selection)?;
    out.runaway_before = before.selected.len();
    let healthy_before = replay::healthy_established(&before.others, &healthy);
    out.healthy_established = healthy_before.len();

    say.step(&format!(
        "The runaway guest {} floods; the healthy guests keep opening new connections",
        RUNAWAY.v4
    ));
    let sampler = Sampler::start(lab.host.netns(), out.high)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let flood = lab.guest(RUNAWAY.role)?.spawn(traffic::flood(topology::sink(), FLOOD, stop_rx));
    let flood_started = SystemTime::now();
    let (over_tx, over) = watch::channel(false);
    let relief = async {
        let r = watch_relief(lab, &files, &mut guard).await;
        let _ = over_tx.send(true);
        r
    };
    let (probes, relief) = futures::future::join(probe(&healthy, over), relief).await;
    let relief = match relief {
        Ok(r) => r,
        Err(e) => {
            let _ = stop_tx.send(true);
            return Err(e);
        }
    };
    out.metrics_capped = relief.capped_seen;
    out.metrics_evicted = relief.evicted;
    out.probes = probes.len();
    out.probes_ok = probes.iter().filter(|p| p.is_ok()).count();
    out.probe_failure = probes.into_iter().find_map(Result::err);
    let _ = stop_tx.send(true);
    let flood = flood.await.map_err(|e| format!("the runaway guest's task failed: {e}"))?;
    let flood_stopped = SystemTime::now();
    let samples = sampler.stop()?;
    (out.flood_attempts, out.flood_established, out.flood_timed_out) =
        (flood.attempts, flood.established, flood.timed_out);
    (out.peak, out.samples) = (samples.peak, samples.samples);
    out.start_count = samples.first;
    out.fill_secs =
        samples.crossed.and_then(|t| t.duration_since(flood_started).ok()).map(|d| d.as_secs_f64());
    say.note(&format!(
        "the flood: {} attempts in {:.1} s, {} connections, {} timed out (dropped by the cap)",
        flood.attempts,
        flood.ran_for.as_secs_f64(),
        flood.established,
        flood.timed_out
    ));
    say.note(&format!(
        "healthy guests: {} of {} new connections (IPv4 and IPv6) opened and echoed{}",
        out.probes_ok,
        out.probes,
        out.probe_failure.as_ref().map(|e| format!("; first failure: {e}")).unwrap_or_default()
    ));

    let records = read_records(&files.audit)?;
    let time_of = |event: &str, action: Option<&str>| {
        records.iter().find(|r| {
            r["record"] == "guard"
                && r["event"] == event
                && action.is_none_or(|a| r["action"] == a)
                && (r["guest"] == RUNAWAY.role || action.is_none())
        })
    };
    let at = |r: Option<&Value>| r.and_then(|r| r["time"].as_str()).and_then(parse_time);
    let started_at = at(time_of("relief_started", None));
    let cap_at = at(time_of("done", Some("cap")));
    let evict_done = time_of("done", Some("evict"));
    let evict_at = at(evict_done);
    out.relief_fill_percent =
        time_of("relief_started", None).and_then(|r| r["table"]["fill_percent"].as_f64());
    out.cross_to_cap_ms = ms_between(samples.crossed, cap_at);
    out.relief_to_cap_ms = ms_between(started_at, cap_at);
    out.cap_to_evicted_ms = ms_between(cap_at, evict_at);
    out.relief_to_evicted_ms = ms_between(started_at, evict_at);
    out.evict_secs = evict_done.and_then(|r| r["elapsed_s"].as_f64());
    out.evicted = evict_done.and_then(|r| r["deleted"].as_u64()).unwrap_or_default();
    say.note(&format!(
        "table: {} at the flood's start, peak {} of {} ({:.1}% full; high {HIGH_PERCENT}%), \
         {} samples; high reached {} after the flood started",
        out.start_count,
        out.peak,
        out.max,
        out.peak_percent(),
        out.samples,
        secs_text(out.fill_secs)
    ));
    say.note(&format!(
        "the guard: relief started at {}% full; capped {} ms after the samples saw high \
         ({} ms after its relief_started); evicted {} flows in {} s",
        out.relief_fill_percent.map_or("?".into(), |f| f.to_string()),
        ms_text(out.cross_to_cap_ms),
        ms_text(out.relief_to_cap_ms),
        out.evicted,
        out.evict_secs.map_or("?".into(), |s| format!("{s:.2}")),
    ));

    let after = table::list(&lab.host, &selection)?;
    out.runaway_left = before.selected.intersection(&after.selected).count();
    let healthy_after = replay::healthy_established(&after.others, &healthy);
    out.healthy_intact = healthy_before == healthy_after;
    say.note(&format!(
        "conntrack -L: {} of the runaway guest's {} ESTABLISHED entries of before the flood left; \
         the healthy guests' {} ESTABLISHED entries {}",
        out.runaway_left,
        out.runaway_before,
        out.healthy_established,
        if out.healthy_intact { "all intact" } else { "CHANGED" }
    ));
    replay::echo_all(lab, sessions).await?;
    say.note("the sessions opened before the flood still carry data");

    say.step(&format!("The flood stopped: after the cooldown ({COOLDOWN:?}) the cap is lifted"));
    let started = Instant::now();
    let uncap = loop {
        let records = read_records(&files.audit)?;
        if let Some(r) = records.iter().find(|r| {
            r["record"] == "guard"
                && r["event"] == "done"
                && r["action"] == "uncap"
                && r["guest"] == RUNAWAY.role
        }) {
            break r["time"].as_str().and_then(parse_time);
        }
        if started.elapsed() > UNCAP_LIMIT || !guard.running() {
            return Err(format!(
                "no uncap of {} within {UNCAP_LIMIT:?} of the flood's end (guard running: {}): {}",
                RUNAWAY.role,
                guard.running(),
                tail(&files.stderr)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    out.uncap_after_flood_ms = match uncap {
        Some(t) => match t.duration_since(flood_stopped) {
            Ok(d) => Some(d.as_secs_f64() * 1e3),
            Err(e) => Some(-e.duration().as_secs_f64() * 1e3),
        },
        None => None,
    };
    let nft = lab.host.exec_ok("nft", &["list", "table", "inet", "ctguard"])?;
    let runaway_nets = [RUNAWAY.v4.to_string(), RUNAWAY.v6.to_string()];
    out.nft_runaway_lines = nft
        .lines()
        .filter(|l| {
            runaway_nets.iter().any(|n| l.contains(n.as_str()))
                || l.contains(&format!("ctguard:{}", RUNAWAY.role))
        })
        .map(|l| l.trim().to_string())
        .collect();
    let metrics = scrape(&lab.host).await?;
    out.metrics_capped_after = metric(&metrics, "ctguard_capped", &[("guest", RUNAWAY.role)]);
    say.note(&format!(
        "uncapped {} ms after the flood stopped; nft list table inet ctguard: {} rule line(s) \
         for {}; ctguard_capped{{guest=\"{}\"}} {}",
        ms_text(out.uncap_after_flood_ms),
        out.nft_runaway_lines.len(),
        RUNAWAY.v4,
        RUNAWAY.role,
        out.metrics_capped_after.map_or("missing".into(), |v| v.to_string())
    ));

    say.step("Stop the guard (SIGTERM)");
    let (took, status) = guard.stop()?;
    out.stop_ms = took.as_secs_f64() * 1e3;
    out.guard_exit = status.code();
    say.note(&format!("exited {:?} after {:.0} ms", status.code(), out.stop_ms));

    let records = read_records(&files.audit)?;
    out.records = records
        .iter()
        .filter(|r| r["record"] == "guard")
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (s("event"), s("action"))
        })
        .collect();
    let by_guard = |kind: &str| {
        records.iter().filter(|r| r["record"] == kind && r["command"] == "guard").count()
    };
    (out.evict_intents, out.evict_outcomes) = (by_guard("intent"), by_guard("outcome"));
    out.spool_files = std::fs::read_dir(files.state_dir.join("spool"))
        .map(|d| d.filter_map(Result::ok).count())
        .unwrap_or(0);
    say.note(&format!(
        "audit log: {} guard records ({} decisions, {} done), {} intent and {} outcome of the \
         guard's evictions; {} spool file(s) under state_dir/spool/",
        out.records.len(),
        out.count("decision", None),
        out.count("done", None),
        out.evict_intents,
        out.evict_outcomes,
        out.spool_files
    ));

    say.note("the guard's records, from the flood's start:");
    say.note(&timeline(&records, flood_started));

    say.step("The figures");
    say.note(&figures(&out));
    Ok(out)
}

/// The guard's records after `from`, one line each: seconds since `from`, event, guest,
/// action, and the figures that matter (fill, counts, cap, deleted).
fn timeline(records: &[Value], from: SystemTime) -> String {
    let mut s = String::new();
    for r in records.iter().filter(|r| r["record"] == "guard") {
        let Some(at) = r["time"].as_str().and_then(parse_time) else { continue };
        let Some(secs) = ms_between(Some(from), Some(at)).map(|ms| ms / 1e3) else { continue };
        if secs < 0.0 {
            continue;
        }
        let _ = write!(s, "  +{secs:6.2} s {}", r["event"].as_str().unwrap_or("?"));
        for key in ["guest", "action", "detail"] {
            if let Some(v) = r[key].as_str() {
                let _ = write!(s, " {v}");
            }
        }
        if let Some(f) = r["table"]["fill_percent"].as_f64() {
            let _ = write!(s, " (table {f}%)");
        }
        for key in ["guest_entries", "cap", "deleted", "elapsed_s"] {
            if let Some(v) = r.get(key).filter(|v| !v.is_null()) {
                let _ = write!(s, " {key}={v}");
            }
        }
        s.push('\n');
    }
    s.trim_end().to_string()
}

/// The figures issue 13 asks for, one per line.
pub fn figures(out: &Outcome) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "peak fill: {:.1}% ({} of {}; high {HIGH_PERCENT}%, at most {}% allowed)",
        out.peak_percent(),
        out.peak,
        out.max,
        HIGH_PERCENT + 5
    );
    let _ = writeln!(
        s,
        "crossing high -> cap in place: {} ms (relief_started -> cap done: {} ms)",
        ms_text(out.cross_to_cap_ms),
        ms_text(out.relief_to_cap_ms)
    );
    // The guard writes a `done` record at its next snapshot (4 a second), so the cap's may
    // come after the eviction, which follows it on the same thread, has started.
    let _ = writeln!(
        s,
        "eviction: {} flows in {} s (its elapsed_s); its done record {} ms after the cap's, \
         {} ms after relief_started",
        out.evicted,
        out.evict_secs.map_or("?".into(), |v| format!("{v:.2}")),
        ms_text(out.cap_to_evicted_ms),
        ms_text(out.relief_to_evicted_ms)
    );
    let _ = write!(s, "healthy probes: {} ok of {}", out.probes_ok, out.probes);
    s
}

fn ms_text(ms: Option<f64>) -> String {
    ms.map_or("?".into(), |v| format!("{v:.0}"))
}

fn secs_text(s: Option<f64>) -> String {
    s.map_or("never".into(), |v| format!("{v:.2} s"))
}

fn ms_between(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<f64> {
    let (a, b) = (a?, b?);
    Some(match b.duration_since(a) {
        Ok(d) => d.as_secs_f64() * 1e3,
        Err(e) => -e.duration().as_secs_f64() * 1e3,
    })
}

fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

/// What the relief showed while the flood ran.
struct Relief {
    /// A scrape showed `ctguard_capped{guest="runaway"} 1`.
    capped_seen: bool,
    /// `ctguard_evicted_total{guest="runaway"}` at the first scrape after the eviction.
    evicted: Option<f64>,
}

/// Waits (at most [`RELIEF_LIMIT`]) for the guard's `done` of the runaway guest's eviction,
/// scraping `/metrics` all the while; a `failed` record or a guard that exits is an error.
async fn watch_relief(
    lab: &Lab,
    files: &GuardFiles,
    guard: &mut GuardProcess,
) -> Result<Relief, String> {
    let started = Instant::now();
    let mut relief = Relief { capped_seen: false, evicted: None };
    loop {
        if let Ok(m) = scrape(&lab.host).await {
            let capped = metric(&m, "ctguard_capped", &[("guest", RUNAWAY.role)]);
            relief.capped_seen |= capped == Some(1.0);
        }
        let records = read_records(&files.audit)?;
        let ours = |r: &&Value| r["record"] == "guard" && r["guest"] == RUNAWAY.role;
        if let Some(r) = records.iter().filter(ours).find(|r| r["event"] == "failed") {
            return Err(format!("the guard failed to act on {}: {r}", RUNAWAY.role));
        }
        if records.iter().filter(ours).any(|r| r["event"] == "done" && r["action"] == "evict") {
            let m = scrape(&lab.host).await?;
            relief.capped_seen |=
                metric(&m, "ctguard_capped", &[("guest", RUNAWAY.role)]) == Some(1.0);
            relief.evicted = metric(&m, "ctguard_evicted_total", &[("guest", RUNAWAY.role)]);
            return Ok(relief);
        }
        if !guard.running() || started.elapsed() > RELIEF_LIMIT {
            return Err(format!(
                "no eviction of {} within {RELIEF_LIMIT:?} of the flood's start (guard running: {}): {}",
                RUNAWAY.role,
                guard.running(),
                tail(&files.stderr)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The healthy guests' new connections during the flood: one every [`PROBE_EVERY`], round
/// the healthy guests over IPv4 and IPv6 in turn, each opened and echoed within
/// [`PROBE_TIMEOUT`] and then closed. They go on until the relief is over (`over` turns true)
/// and at least [`HEALTHY_PROBES`] were made, so they span the crossing, the cap and the
/// eviction; at most [`RELIEF_LIMIT`] / [`PROBE_EVERY`] of them.
async fn probe(
    healthy: &[(GuestSpec, &Place)],
    over: watch::Receiver<bool>,
) -> Vec<Result<(), String>> {
    let most = (RELIEF_LIMIT.as_millis() / PROBE_EVERY.as_millis()) as usize;
    let one = |i: usize| {
        let (g, place) = healthy[i % healthy.len()];
        let dst = topology::upstream(i % 2 == 1);
        async move {
            // Closed at once, on the guest's thread, where its socket lives.
            let echoed =
                async move { traffic::connect_and_echo(dst, PROBE_TIMEOUT).await.map(drop) };
            match place.run(echoed).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) | Err(e) => Err(format!("guest {}: {e}", g.role)),
            }
        }
    };
    let mut running = FuturesUnordered::new();
    let mut results = Vec::new();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    let mut started = 0;
    while !healthy.is_empty() && started < most && (started < HEALTHY_PROBES || !*over.borrow()) {
        tokio::select! {
            _ = tick.tick() => {
                running.push(one(started));
                started += 1;
            }
            Some(r) = running.next(), if !running.is_empty() => results.push(r),
        }
    }
    while let Some(r) = running.next().await {
        results.push(r);
    }
    results
}

/// The guard's files in the lab's scratch directory.
struct GuardFiles {
    config: PathBuf,
    audit: PathBuf,
    stderr: PathBuf,
    state_dir: PathBuf,
}

impl GuardFiles {
    /// Writes the guest file (the lab's four guests, each its IPv4 and IPv6 address) and the
    /// guard's configuration.
    fn write(lab: &Lab) -> Result<GuardFiles, String> {
        let files = GuardFiles {
            config: lab.scratch("guard.toml"),
            audit: lab.scratch("audit.jsonl"),
            stderr: lab.scratch("guard.stderr"),
            state_dir: lab.scratch("state"),
        };
        // The state directory exists before the guard starts, as systemd's StateDirectory=
        // makes it; only root may write in it (the spool refuses a directory others can).
        std::fs::DirBuilder::new()
            .mode(0o750)
            .create(&files.state_dir)
            .map_err(|e| format!("{}: {e}", files.state_dir.display()))?;
        let guests_file = lab.scratch("guests.toml");
        std::fs::write(&guests_file, guests_toml(&GUESTS))
            .map_err(|e| format!("{}: {e}", guests_file.display()))?;
        let text = config_toml(
            lab.host.netns(),
            &guests_file,
            &lab.scratch("guard.sock"),
            &files.audit,
            &files.state_dir,
        );
        std::fs::write(&files.config, text)
            .map_err(|e| format!("{}: {e}", files.config.display()))?;
        Ok(files)
    }
}

/// The guest file: `role = ["v4/32", "v6/128"]` per guest.
fn guests_toml(guests: &[GuestSpec]) -> String {
    guests.iter().map(|g| format!("{} = [\"{}/32\", \"{}/128\"]\n", g.role, g.v4, g.v6)).collect()
}

/// The guard's configuration for the lab. `protect` holds the host's bridge addresses: the
/// host's own flows to its guests (its pings) are never evicted.
fn config_toml(netns: &str, guests: &Path, socket: &Path, audit: &Path, state: &Path) -> String {
    let mut protect: Vec<String> = GUESTS
        .iter()
        .map(topology::gateways)
        .flat_map(|(v4, v6)| [format!("\"{v4}/32\""), format!("\"{v6}/128\"")])
        .collect();
    protect.sort();
    protect.dedup();
    format!(
        "# ctguard guard in the lab's host namespace (issue 13)
netns = \"{netns}\"
guests = \"{}\"
high = \"{HIGH_PERCENT}%\"
low = \"{LOW_PERCENT}%\"
quota = \"{QUOTA}\"
action = \"cap+evict\"
cap = {CAP}
evict_state = [\"ESTABLISHED\"]
cooldown = \"{}s\"
protect = [{}]
metrics = \"{METRICS}\"
socket = \"{}\"
audit_log = \"{}\"
state_dir = \"{}\"
",
        guests.display(),
        COOLDOWN.as_secs(),
        protect.join(", "),
        socket.display(),
        audit.display(),
        state.display()
    )
}

/// The guard, a child process in the lab's host namespace, ended by its PID.
struct GuardProcess {
    child: Child,
}

impl GuardProcess {
    /// `ctguard guard --config FILE`, its stderr (one JSON line per record) to a scratch file.
    fn start(ctguard: &Path, files: &GuardFiles) -> Result<GuardProcess, String> {
        let stderr = std::fs::File::create(&files.stderr)
            .map_err(|e| format!("{}: {e}", files.stderr.display()))?;
        let mut cmd = Command::new(ctguard);
        cmd.arg("guard")
            .arg("--config")
            .arg(&files.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent. The kernel
        // sends SIGTERM to the guard if the thread that started it dies first (a killed test),
        // so no guard outlives the lab that it guards.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child =
            cmd.spawn().map_err(|e| format!("cannot start {} guard: {e}", ctguard.display()))?;
        Ok(GuardProcess { child })
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, and how long the guard took to exit; killed (and an error) after three times
    /// [`STOP_LIMIT`].
    fn stop(&mut self) -> Result<(Duration, ExitStatus), String> {
        let started = Instant::now();
        self.signal(libc::SIGTERM);
        while started.elapsed() < STOP_LIMIT * 3 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Ok((started.elapsed(), status));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
        Err(format!("the guard did not exit within {:?} of SIGTERM: killed", STOP_LIMIT * 3))
    }

    fn signal(&self, sig: libc::c_int) {
        // Our child, not yet reaped, so its PID is still its own.
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) has no memory effects in this process.
        unsafe { libc::kill(pid, sig) };
    }
}

impl Drop for GuardProcess {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.stop();
        }
    }
}

/// What the sampler saw.
#[derive(Debug, Clone, Copy, Default)]
struct Samples {
    first: u64,
    peak: u64,
    samples: u64,
    /// When the count was first at `high` or above.
    crossed: Option<SystemTime>,
}

/// A thread in the host namespace that reads its entry count every 2 ms (the namespace's own
/// `nf_conntrack_count`: a sysctl file resolves to the reading thread's namespace), at most
/// for [`RUN_LIMIT`].
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Samples, String>>>,
}

impl Sampler {
    fn start(netns: &str, high: u64) -> Result<Sampler, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let path = ctguard::netns::path_of(netns);
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sampler-{netns}"))
            .spawn(move || {
                ctguard::netns::enter(&path).map_err(|e| e.to_string())?;
                let started = Instant::now();
                let mut s = Samples::default();
                let mut text = String::new();
                while !stopped.load(Ordering::Relaxed) && started.elapsed() < RUN_LIMIT {
                    text.clear();
                    std::fs::File::open("/proc/sys/net/netfilter/nf_conntrack_count")
                        .and_then(|mut f| f.read_to_string(&mut text))
                        .map_err(|e| format!("nf_conntrack_count in {path}: {e}"))?;
                    let n: u64 = text
                        .trim()
                        .parse()
                        .map_err(|_| format!("nf_conntrack_count is {text:?}"))?;
                    if s.samples == 0 {
                        s.first = n;
                    }
                    s.samples += 1;
                    s.peak = s.peak.max(n);
                    if n >= high && s.crossed.is_none() {
                        s.crossed = Some(SystemTime::now());
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(s)
            })
            .map_err(|e| format!("cannot start the sampler: {e}"))?;
        Ok(Sampler { stop, thread: Some(thread) })
    }

    fn stop(mut self) -> Result<Samples, String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err("the sampler thread died".into()),
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `GET /metrics` from the guard, on the host namespace's loopback: the body.
async fn scrape(host: &Place) -> Result<String, String> {
    host.run(async {
        let work = async {
            let mut s = tokio::net::TcpStream::connect(METRICS).await?;
            // HTTP/1.0: the answer is the whole body, then the end of the connection.
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await?;
            let mut body = Vec::new();
            s.take(16 << 20).read_to_end(&mut body).await?;
            Ok::<_, std::io::Error>(body)
        };
        let body = tokio::time::timeout(Duration::from_secs(2), work)
            .await
            .map_err(|_| format!("GET http://{METRICS}/metrics: no answer within 2 s"))?
            .map_err(|e| format!("GET http://{METRICS}/metrics: {e}"))?;
        let text = String::from_utf8_lossy(&body);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1) != Some("200") {
            return Err(format!(
                "GET http://{METRICS}/metrics: {}",
                head.lines().next().unwrap_or("")
            ));
        }
        Ok(body.to_string())
    })
    .await?
}

/// The value of the series `name{labels...}` in an exposition (labels it has beyond those
/// asked for are allowed); `None` when it is not there.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (have, value) = match rest.strip_prefix('{') {
            Some(r) => {
                let (inside, after) = r.split_once('}')?;
                (inside, after)
            }
            None if rest.starts_with(' ') => ("", rest),
            None => return None,
        };
        let pairs: HashSet<(&str, &str)> = have
            .split(',')
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((k.trim(), v.trim().trim_matches('"')))
            })
            .collect();
        if !labels.iter().all(|l| pairs.contains(l)) {
            return None;
        }
        value.split_whitespace().next()?.parse().ok()
    })
}

/// The audit log's complete lines, as JSON (a line being written is left for the next read).
fn read_records(path: &Path) -> Result<Vec<Value>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{}: {e}: {l}", path.display())))
        .collect()
}

/// The last lines of the guard's stderr, for an error.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(8);
    format!("its stderr ends: {}", lines[from..].join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_13_metric_finds_a_series_by_its_labels() {
        let text = "# TYPE ctguard_capped gauge\n\
                    ctguard_capped{guest=\"web\"} 0\n\
                    ctguard_capped{guest=\"runaway\"} 1\n\
                    ctguard_entries{guest=\"runaway\",state=\"ESTABLISHED\"} 205000\n\
                    ctguard_table_entries 223000\n\
                    ctguard_table_entries_max 1\n";
        assert_eq!(metric(text, "ctguard_capped", &[("guest", "runaway")]), Some(1.0));
        assert_eq!(metric(text, "ctguard_capped", &[("guest", "db")]), None);
        assert_eq!(
            metric(text, "ctguard_entries", &[("state", "ESTABLISHED"), ("guest", "runaway")]),
            Some(205_000.0)
        );
        assert_eq!(metric(text, "ctguard_table_entries", &[]), Some(223_000.0));
        assert_eq!(metric(text, "ctguard_table", &[]), None);
    }

    #[test]
    fn issue_13_the_lab_config_names_the_host_and_protects_its_bridge() {
        let text = config_toml(
            "ctg-lab-1-host",
            Path::new("/tmp/g.toml"),
            Path::new("/tmp/s"),
            Path::new("/tmp/a"),
            Path::new("/tmp/st"),
        );
        assert!(text.contains("netns = \"ctg-lab-1-host\""), "{text}");
        assert!(text.contains("action = \"cap+evict\""), "{text}");
        assert!(text.contains("\"172.16.3.1/32\""), "{text}");
        assert!(text.contains("\"fd00:3::1/128\""), "{text}");
        assert_eq!(text.matches("172.16.3.1/32").count(), 1, "deduplicated: {text}");
        let guests = guests_toml(&GUESTS);
        assert!(guests.contains("runaway = [\"172.16.3.5/32\", \"fd00:3::5/128\"]"), "{guests}");
        assert_eq!(guests.lines().count(), 4);
    }
}
