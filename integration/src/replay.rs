//! The incident, replayed for real: build the lab, seed the incident's table, let the runaway
//! guest fill it, check the symptoms, ask `ctguard doctor`, run the eviction it recommends, and
//! check the recovery. The end-to-end test and `ctguard-lab demo` run this same code; each
//! step checks what it expects and the replay stops at the first surprise, with the reason.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::place::{Place, command, command_ok};
use crate::table::{self, Counters, Entry};
use crate::topology::{self, GuestSpec, Lab, RUNAWAY};
use crate::traffic::{self, ConnectError, FloodLimits, Ping};

/// What to replay, with which tools.
#[derive(Debug, Clone)]
pub struct Options {
    /// The ctguard binary under test.
    pub ctguard: PathBuf,
    /// Also print the human `ctguard doctor` report (the demo does; the test reads JSON).
    pub show_doctor_report: bool,
    /// Narration to stderr instead of stdout.
    pub narrate_to_stderr: bool,
}

/// What the replay observed, for the caller to report or assert on.
#[derive(Debug, Default)]
pub struct Outcome {
    pub max: u64,
    pub seeded: u64,
    /// The host table's count when the runaway guest had filled it.
    pub full_count: u64,
    /// Seconds the runaway guest needed to fill the table.
    pub fill_secs: f64,
    /// How many connections the runaway guest opened, and attempts it made in all.
    pub runaway_established: usize,
    pub runaway_attempts: usize,
    /// `drop` summed over CPUs, before the flood and after the symptoms.
    pub drop_before: u64,
    pub drop_full: u64,
    /// `doctor --json` as printed, when the doctor ran.
    pub doctor: Option<serde_json::Value>,
    /// The relief command that ran (argv).
    pub relief: Vec<String>,
    pub relief_secs: f64,
    /// The guest's ESTABLISHED entries in the oracle's `conntrack -L` just before the relief.
    pub relief_listed: u64,
    /// What the relief's own report says (its audit outcome): the flows it selected and deleted.
    pub relief_selected: u64,
    pub relief_deleted: u64,
    pub count_after: u64,
    /// Entries outside the eviction's selection, before it ran; how many of them were gone
    /// after it (each one the kernel frees by itself under pressure: unassured or closing).
    pub kept_before: usize,
    pub kept_missing: usize,
    /// doctor's verdict after the relief.
    pub verdict_after: String,
    /// The healthy guests' ESTABLISHED entries before and after the relief (equal sets).
    pub healthy_established: usize,
}

/// Prints the steps with the time since the start.
pub struct Narrator {
    started: Instant,
    to_stderr: bool,
}

impl Narrator {
    pub(crate) fn new(to_stderr: bool) -> Narrator {
        Narrator { started: Instant::now(), to_stderr }
    }

    fn line(&self, text: &str) {
        if self.to_stderr {
            eprintln!("{text}");
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }

    /// A new step: `[  12.3s] == TITLE`.
    pub fn step(&self, title: &str) {
        self.line(&format!("\n[{:6.1}s] == {title}", self.started.elapsed().as_secs_f64()));
    }

    /// A line under the current step.
    pub fn note(&self, text: &str) {
        for l in text.lines() {
            self.line(&format!("           {l}"));
        }
    }

    /// A command as the operator would type it.
    pub fn command(&self, argv: &[String]) {
        self.note(&format!("$ {}", argv.join(" ")));
    }
}

/// Fails the replay with `what` unless `ok`.
pub(crate) fn expect(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

/// The runaway guest's bounds: it fills the table in a second, then keeps knocking (about 2,500
/// attempts a second, each given 100 ms) until stopped, so a slot the kernel frees is taken
/// again at once, as in the incident (5-8k connections in 2.7 s); at most 500,000 attempts and
/// 150 s in any case.
pub(crate) const FLOOD: FloodLimits = FloodLimits {
    concurrency: 256,
    max_attempts: 500_000,
    attempt_timeout: Duration::from_millis(100),
    duration: Duration::from_secs(150),
};
/// Pings the host sends to a healthy guest while the table is full.
const PING_PROBES: u16 = 20;
/// How long a healthy guest's connection attempt may take before it counts as failed.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The whole replay may take this long; then it stops and the lab is removed.
pub const REPLAY_LIMIT: Duration = Duration::from_secs(300);

/// Runs the replay on a runtime of its own, for at most [`REPLAY_LIMIT`], and stops it on
/// Ctrl-C or SIGTERM. Whichever way it ends, the lab's future is dropped before this returns,
/// and with it the lab: its namespaces are gone.
pub fn run_bounded(opts: &Options) -> Result<Outcome, String> {
    bounded(REPLAY_LIMIT, "the replay", run(opts))
}

/// Runs `fut` on a runtime of its own for at most `limit`, and stops it on Ctrl-C or SIGTERM:
/// `fut` is dropped (and the lab it holds with it) before this returns, whichever way it ends.
pub fn bounded<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
        tokio::select! {
            r = tokio::time::timeout(limit, fut) => {
                r.unwrap_or_else(|_| Err(format!("{what} took longer than {limit:?}")))
            }
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
            _ = term.recv() => Err("terminated".to_string()),
        }
    })
}

/// Runs the whole replay in a fresh lab, which is removed before this returns, whatever
/// happened.
pub async fn run(opts: &Options) -> Result<Outcome, String> {
    let say = Narrator::new(opts.narrate_to_stderr);
    say.step(
        "Build the hypervisor lab (rtnetlink): host namespace with a bridge, guests, upstream",
    );
    let lab = Lab::build().await?;
    for name in lab.namespace_names() {
        say.note(&format!("namespace {name}"));
    }
    for (g, _) in &lab.guests {
        let kind = if g.runaway { "the runaway guest" } else { "healthy" };
        say.note(&format!("guest {:<8} {:<12} {:<12} {kind}", g.role, g.v4, g.v6));
    }
    say.note(&format!(
        "upstream {} and {} port {}; host nftables: forward policy drop, ct state rules",
        topology::UPSTREAM_V4,
        topology::UPSTREAM_V6,
        topology::UPSTREAM_PORT
    ));
    let result = replay(&lab, opts, &say).await;
    say.step("Remove the lab");
    drop(lab);
    say.note("every ctg-lab namespace deleted (links, ruleset and table go with them)");
    result
}

async fn replay(lab: &Lab, opts: &Options, say: &Narrator) -> Result<Outcome, String> {
    let mut out = Outcome::default();
    let healthy = healthy(lab);
    start_upstream(lab).await?;

    say.step("Healthy guests open sessions to the upstream server (IPv4 and IPv6)");
    let mut sessions = open_sessions(lab, &healthy).await?;
    say.note(&format!(
        "{} sessions open and echoing; the host pings every healthy guest",
        sessions.len()
    ));

    say.step("Load the incident's table into the host namespace (conntrack -R)");
    out.max = table::max(&lab.host)?;
    let started = Instant::now();
    out.seeded = table::seed_incident(&lab.host, &lab.scratch("incident.conntrack"))?;
    let count = table::count(&lab.host)?;
    expect(count >= out.seeded, || {
        format!("after loading {} entries the table holds only {count}", out.seeded)
    })?;
    say.note(&format!(
        "{} entries loaded in {:.1} s; table {count} of max {} ({:.1}% full)",
        out.seeded,
        started.elapsed().as_secs_f64(),
        out.max,
        100.0 * count as f64 / out.max as f64
    ));
    say.note(
        "nf_conntrack_max is global and read-only here, but the count is this namespace's own",
    );

    say.step(&format!(
        "The runaway guest {} opens connections until the table is full",
        RUNAWAY.v4
    ));
    let before: Counters = table::counters(&lab.host)?;
    out.drop_before = before.drop;
    let (stop_tx, stop_rx) = watch::channel(false);
    let runaway = lab.guest(RUNAWAY.role)?;
    let flood = runaway.spawn(traffic::flood(topology::sink(), FLOOD, stop_rx));
    let started = Instant::now();
    let fill_deadline = Duration::from_secs(60);
    loop {
        let count = table::count(&lab.host)?;
        if count >= out.max {
            out.full_count = count;
            break;
        }
        if started.elapsed() > fill_deadline || flood.is_finished() {
            let _ = stop_tx.send(true);
            return Err(format!(
                "the runaway guest did not fill the table within {fill_deadline:?}: count {count} of {}",
                out.max
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out.fill_secs = started.elapsed().as_secs_f64();
    say.note(&format!(
        "table full after {:.1} s: count {} = nf_conntrack_max {} (the child namespace filled to the global max)",
        out.fill_secs, out.full_count, out.max
    ));
    say.note("the guest keeps knocking: each new SYN is now dropped by the host");

    say.step("Symptoms, as the operators saw them");
    // Let the knocking guest's first dropped SYNs register in the counters.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A full table still lets some packets through: a new entry may evict an unassured one
    // near its hash bucket (the seed's SYN_SENT and SYN_RECV entries), or take a slot the
    // kernel's GC just freed (it kills closing-state entries in batches under pressure)
    // before the runaway guest takes it back. The operators saw "loses packets", not "loses
    // all". So the probes are many, spread over seconds so that one GC batch cannot decide
    // them, and at least 3 in 5 must fail.
    let target = healthy.first().map(|(g, _)| g.v4).ok_or("no healthy guest")?;
    let (mut eperm, mut replies) = (0, 0);
    for seq in 0..PING_PROBES {
        match lab.host.run(traffic::ping(target, 0x7e10 + seq, PROBE_TIMEOUT)).await? {
            Ok(Ping::SendFailed(e)) if e.raw_os_error() == Some(libc::EPERM) => eperm += 1,
            Ok(Ping::Reply(_)) => replies += 1,
            other => return Err(format!("ping {target} from the full host: {other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    say.note(&format!(
        "host: {eperm} of {PING_PROBES} pings to {target} fail in sendto with EPERM \
         (\"Operation not permitted\"; iputils now prints only the loss), {replies} got through"
    ));
    expect(eperm * 5 >= PING_PROBES * 3, || {
        format!("only {eperm} of {PING_PROBES} pings from the full host failed with EPERM")
    })?;
    // The healthy guests' attempts, over both families, start 150 ms apart and overlap.
    let attempts = healthy
        .iter()
        .flat_map(|(g, place)| {
            [false, true, false, true, false, true, false, true].map(|v6| (g, place, v6))
        })
        .enumerate()
        .map(|(i, (g, place, v6))| {
            let dst = topology::upstream(v6);
            async move {
                tokio::time::sleep(Duration::from_millis(150) * i as u32).await;
                (g.role, dst, place.run(traffic::connect(dst, PROBE_TIMEOUT)).await)
            }
        });
    let mut probes = 0;
    let mut connected = Vec::new();
    for (role, dst, result) in futures::future::join_all(attempts).await {
        probes += 1;
        match result? {
            Err(ConnectError::Timeout) => {}
            Ok(_) => connected.push(format!("{role} -> {dst}")),
            Err(e) => {
                return Err(format!("guest {role}: connect to {dst}: {e}, expected a timeout"));
            }
        }
    }
    say.note(&format!(
        "{} healthy guests: {} of {probes} new TCP connections (IPv4 and IPv6) time out, SYNs dropped",
        healthy.len(),
        probes - connected.len()
    ));
    expect(connected.len() * 5 <= probes * 2, || {
        format!(
            "{} of {probes} new connections got through a full table: {connected:?}",
            connected.len()
        )
    })?;
    sessions = echo_all(lab, sessions).await?;
    say.note("sessions opened before the table filled still carry data: they have their entries");
    let full: Counters = table::counters(&lab.host)?;
    out.drop_full = full.drop;
    expect(full.drop > before.drop, || {
        format!(
            "the drop counter did not rise while the table was full: {} -> {}",
            before.drop, full.drop
        )
    })?;
    say.note(&format!(
        "conntrack -S: drop {} -> {}, early_drop {} -> {}, insert_failed {} (a full table is not a clash)",
        before.drop, full.drop, before.early_drop, full.early_drop, full.insert_failed
    ));

    say.step("The operator runs ctguard doctor (the guest is still knocking)");
    let advice = doctor(lab, opts, say, &mut out)?;

    say.step("Cap the runaway guest with doctor's nft lines, before evicting");
    for argv in &advice.cap {
        say.command(argv);
        let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        command_ok(&argv[0], &args)?;
    }
    say.note(&format!(
        "new connections from {} beyond {} are now refused (counted from this moment)",
        RUNAWAY.v4, advice.cap_limit
    ));

    say.step("Evict: the command doctor recommends, while the guest keeps connecting");
    // The eviction's selection, as it appears in a `conntrack -L` line: the runaway guest's
    // ESTABLISHED flows (it only ever connects out, so it is always the original source).
    let selection = format!("ESTABLISHED src={} ", RUNAWAY.v4);
    let snapshot = table::list(&lab.host, &selection)?;
    let kept: BTreeSet<&Entry> = snapshot.others.iter().collect();
    let audit = lab.scratch("audit.jsonl");
    say.command(&advice.evict_argv);
    let mut argv: Vec<&str> = advice.evict_argv[1..].iter().map(String::as_str).collect();
    let audit_arg = audit.to_string_lossy().into_owned();
    // The audit records go to the lab's scratch directory, not the machine's /var/log.
    argv.extend(["--audit-log", &audit_arg]);
    let started = Instant::now();
    let run = command(&opts.ctguard.to_string_lossy(), &argv)?;
    out.relief_secs = started.elapsed().as_secs_f64();
    expect(run.status.success(), || {
        format!(
            "`{}` exited {}: {}",
            advice.evict_argv.join(" "),
            run.status,
            String::from_utf8_lossy(&run.stderr).trim()
        )
    })?;
    say.note(String::from_utf8_lossy(&run.stdout).trim_end());
    say.note(String::from_utf8_lossy(&run.stderr).trim_end());
    out.relief = advice.evict_argv.clone();
    let audited = read_audit(&audit)?;
    (out.relief_selected, out.relief_deleted) = (audited.selected, audited.deleted);
    out.relief_listed = snapshot.selected.len() as u64;
    let after = table::list(&lab.host, &selection)?;
    out.count_after = (after.others.len() + after.selected.len()) as u64;
    say.note(&relief_note(
        out.relief_secs,
        &audited,
        out.relief_listed,
        (snapshot.others.len() + snapshot.selected.len()) as u64,
        out.count_after,
    ));
    // The listing came first and none of its entries can go by itself (ASSURED ESTABLISHED,
    // their FIN and RST dropped), so evict's own dump must find all of them, and the ones
    // the guest opened since.
    expect(out.relief_selected >= out.relief_listed, || {
        format!(
            "evict selected {} flows, fewer than the {} conntrack -L listed just before",
            out.relief_selected, out.relief_listed
        )
    })?;
    // The guest's new connections since are ESTABLISHED flows of 172.16.3.5 too, some on a
    // deleted one's tuple; none of the selected entries (same tuple and id) may be among them.
    let left = snapshot.selected.intersection(&after.selected).count();
    expect(left == 0, || format!("{left} of the selected entries are still there"))?;
    let after_set: BTreeSet<&Entry> = after.others.iter().collect();
    let missing: Vec<&&Entry> = kept.iter().filter(|e| !after_set.contains(**e)).collect();
    out.kept_before = kept.len();
    out.kept_missing = missing.len();
    // The kernel itself frees unassured and closing-state entries while the table is nearly
    // full (the GC's early drop, counted nowhere); the eviction may not have taken any other.
    if let Some(e) = missing.iter().find(|e| !e.kernel_may_free()) {
        return Err(format!(
            "{} entries outside the selection vanished, among them one the kernel never frees by itself: {}",
            missing.len(),
            e.key
        ));
    }
    let (h_before, h_after) = (
        healthy_established(&snapshot.others, &healthy),
        healthy_established(&after.others, &healthy),
    );
    expect(h_before == h_after, || {
        format!(
            "the healthy guests' ESTABLISHED entries changed: {} before, {} after",
            h_before.len(),
            h_after.len()
        )
    })?;
    expect(h_before.len() >= sessions.len(), || {
        format!(
            "only {} healthy ESTABLISHED entries for {} live sessions",
            h_before.len(),
            sessions.len()
        )
    })?;
    out.healthy_established = h_before.len();
    say.note(&format!(
        "the healthy guests' {} ESTABLISHED entries are all still there (their {} live sessions among them)",
        h_before.len(),
        sessions.len()
    ));
    say.note(&format!(
        "{} of {} entries outside the selection kept ({} unassured or closing ones freed by the kernel's own GC)",
        kept.len() - missing.len(),
        kept.len(),
        missing.len()
    ));

    say.step("Recovery, with the capped guest still connecting");
    for (g, place) in &healthy {
        let rtt = ping_ok(lab, g).await?;
        for v6 in [false, true] {
            place.run(traffic::connect_and_echo(topology::upstream(v6), PROBE_TIMEOUT)).await??;
        }
        say.note(&format!(
            "guest {:<4} {:<12} ping from the host {:.2} ms; new TCP connections over IPv4 and IPv6 work",
            g.role,
            g.v4,
            rtt.as_secs_f64() * 1e3
        ));
    }
    echo_all(lab, sessions).await?;
    say.note("the sessions opened before the incident still carry data");
    let host = lab.host.netns();
    say.command(&["ctguard", "--netns", host, "doctor", "--json"].map(String::from));
    let run = command(&opts.ctguard.to_string_lossy(), &["--netns", host, "doctor", "--json"])?;
    let json: serde_json::Value = serde_json::from_slice(&run.stdout)
        .map_err(|e| format!("ctguard doctor --json after the relief: {e}"))?;
    let verdict = json["verdict"].as_str().unwrap_or_default().to_string();
    say.note(&format!(
        "verdict {verdict:?} (exit {}): {}",
        run.status.code().unwrap_or(-1),
        json["reasons"][0].as_str().unwrap_or("no reason given")
    ));
    expect(verdict == "healthy" || verdict == "at-risk", || {
        format!("doctor after the relief says {verdict:?}: {json}")
    })?;
    out.verdict_after = verdict;

    say.step("The table stays far from full while the guest keeps connecting");
    // Give the guest up to 20 s to reach the cap: the rule's counter counts what it refused.
    let started = Instant::now();
    let mut refused = cap_refusals(lab)?;
    while refused == 0 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        refused = cap_refusals(lab)?;
    }
    if refused > 0 {
        say.note(&format!(
            "after {:.1} s the cap refuses the guest's new connections: {refused} packets rejected so far",
            started.elapsed().as_secs_f64()
        ));
    } else {
        say.note("in 20 s the guest did not reach its cap here (this lab's guest reconnects at a few thousand a second)");
    }
    let _ = stop_tx.send(true);
    let flood = flood.await.map_err(|e| format!("the runaway guest's task failed: {e}"))?;
    out.runaway_established = flood.established;
    out.runaway_attempts = flood.attempts;
    let refilled = table::list(&lab.host, &selection)?.selected.len();
    let count = table::count(&lab.host)?;
    say.note(&format!(
        "in {:.1} s it made {} attempts: {} connections, {} timed out (most while the table was full), {} refused by the cap",
        flood.ran_for.as_secs_f64(),
        flood.attempts,
        flood.established,
        flood.timed_out,
        flood.other_errors
    ));
    say.note(&format!(
        "it holds {refilled} ESTABLISHED entries again (cap {}); table {count} of {} ({:.1}% full)",
        advice.cap_limit,
        out.max,
        100.0 * count as f64 / out.max as f64
    ));
    expect(count < out.max / 2, || format!("the table refilled to {count} of {}", out.max))?;
    if let Some(e) = &flood.first_error {
        say.note(&format!("the guest's first refused connection: {e}"));
    }
    Ok(out)
}

/// The lab's healthy guests (all but the runaway), with their places.
pub(crate) fn healthy(lab: &Lab) -> Vec<(GuestSpec, &Place)> {
    lab.guests.iter().filter(|(g, _)| !g.runaway).map(|(g, p)| (*g, p)).collect()
}

/// Starts the upstream echo server (at most 10,000 connections) and the sink the runaway guest
/// leaks its connections to (at most 500,000).
pub(crate) async fn start_upstream(lab: &Lab) -> Result<(), String> {
    let listener = lab
        .upstream
        .run(traffic::listen(topology::UPSTREAM_PORT))
        .await?
        .map_err(|e| format!("upstream listen: {e}"))?;
    lab.upstream.spawn(traffic::serve(listener, 10_000));
    let sink = lab
        .upstream
        .run(traffic::listen(topology::SINK_PORT))
        .await?
        .map_err(|e| format!("upstream sink listen: {e}"))?;
    lab.upstream.spawn(traffic::sink(sink, 500_000));
    Ok(())
}

/// Each healthy guest opens three sessions to the upstream server (two over IPv4, one over
/// IPv6) that echo, and the host pings it.
pub(crate) async fn open_sessions(
    lab: &Lab,
    healthy: &[(GuestSpec, &Place)],
) -> Result<Vec<(GuestSpec, TcpStream)>, String> {
    let mut sessions = Vec::new();
    for (g, place) in healthy {
        for v6 in [false, false, true] {
            let s = place
                .run(traffic::connect_and_echo(topology::upstream(v6), PROBE_TIMEOUT))
                .await??;
            sessions.push((*g, s));
        }
        ping_ok(lab, g).await?;
    }
    Ok(sessions)
}

/// The healthy guests' ESTABLISHED entries in a listing, by key (tuple and id, no timeout).
pub(crate) fn healthy_established(
    entries: &[Entry],
    healthy: &[(GuestSpec, &Place)],
) -> BTreeSet<String> {
    entries
        .iter()
        .filter(|e| {
            e.state == "ESTABLISHED"
                && healthy
                    .iter()
                    .any(|(g, _)| e.src == IpAddr::V4(g.v4) || e.src == IpAddr::V6(g.v6))
        })
        .map(|e| e.key.clone())
        .collect()
}

/// The counts of the outcome record `ctguard evict` appended to its audit log: the same numbers
/// its report printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Audited {
    selected: u64,
    deleted: u64,
}

/// Reads the relief's audit log, which must hold one run: its intent (written before the
/// first delete) and its outcome, with one run id.
fn read_audit(path: &std::path::Path) -> Result<Audited, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let records = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<serde_json::Value>, _>>()
        .map_err(|e| format!("{}: not JSON lines: {e}", path.display()))?;
    let kinds: Vec<&str> = records.iter().filter_map(|r| r["record"].as_str()).collect();
    let [intent, outcome] = &records[..] else {
        return Err(format!(
            "audit records {kinds:?} in {}, expected one intent and its outcome",
            path.display()
        ));
    };
    if kinds != ["intent", "outcome"] || intent["run_id"] != outcome["run_id"] {
        return Err(format!(
            "audit records {kinds:?} in {}, expected one intent and its outcome (one run id)",
            path.display()
        ));
    }
    let count = |key: &str| {
        outcome[key]
            .as_u64()
            .ok_or_else(|| format!("{}: no {key:?} count in the outcome {outcome}", path.display()))
    };
    Ok(Audited { selected: count("selected")?, deleted: count("deleted")? })
}

/// The narration under the relief's own report: evict's numbers first, then the oracle's
/// listing taken a moment before, which the guest's new connections have outgrown since.
fn relief_note(secs: f64, evict: &Audited, listed: u64, before: u64, after: u64) -> String {
    let since = evict.selected.saturating_sub(listed);
    format!(
        "{secs:.2} s; evict selected {} flows and deleted {}: the {listed} conntrack -L listed \
         just before, and {since} the guest opened since; the table went from {before} to \
         {after} entries",
        evict.selected, evict.deleted
    )
}

/// Packets the cap's rule rejected: the `counter packets N` of doctor's `ct count` rule.
fn cap_refusals(lab: &Lab) -> Result<u64, String> {
    let rules = lab.host.exec_ok("nft", &["list", "chain", "inet", "ctguard", "forward"])?;
    Ok(rules
        .lines()
        .filter(|l| l.contains("ct count over"))
        .filter_map(|l| l.split("counter packets ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum())
}

/// The host pings a guest and gets the reply.
pub(crate) async fn ping_ok(lab: &Lab, g: &GuestSpec) -> Result<Duration, String> {
    match lab.host.run(traffic::ping(g.v4, 0x7e00, PROBE_TIMEOUT)).await? {
        Ok(Ping::Reply(rtt)) => Ok(rtt),
        other => Err(format!("host: ping {} ({}): {other:?}", g.v4, g.role)),
    }
}

/// Every session echoes once more, on its guest's place.
pub(crate) async fn echo_all(
    lab: &Lab,
    sessions: Vec<(GuestSpec, TcpStream)>,
) -> Result<Vec<(GuestSpec, TcpStream)>, String> {
    let mut back = Vec::with_capacity(sessions.len());
    for (g, mut s) in sessions {
        let place = lab.guest(g.role)?;
        let s = place
            .run(async move { traffic::echo(&mut s, PROBE_TIMEOUT).await.map(|()| s) })
            .await?
            .map_err(|e| format!("guest {}: an open session stopped working: {e}", g.role))?;
        back.push((g, s));
    }
    Ok(back)
}

/// What doctor told the operator to run.
struct Advice {
    /// `actions.evict_argv`.
    evict_argv: Vec<String>,
    /// `actions.cap` without its comment lines, as argv.
    cap: Vec<Vec<String>>,
    /// The `ct count over N` of the cap.
    cap_limit: u64,
}

/// `ctguard --netns HOST doctor --json`: checks the verdict and the top offender, and returns
/// the commands it recommends, once they are proven to act on the lab's host namespace only.
fn doctor(lab: &Lab, opts: &Options, say: &Narrator, out: &mut Outcome) -> Result<Advice, String> {
    let ctguard = opts.ctguard.to_string_lossy().into_owned();
    let host = lab.host.netns().to_string();
    if opts.show_doctor_report {
        say.command(&["ctguard", "--netns", &host, "doctor"].map(String::from));
        let run = command(&ctguard, &["--netns", &host, "doctor"])?;
        say.note(String::from_utf8_lossy(&run.stdout).trim_end());
    }
    say.command(&["ctguard", "--netns", &host, "doctor", "--json"].map(String::from));
    let started = Instant::now();
    let run = command(&ctguard, &["--netns", &host, "doctor", "--json"])?;
    let took = started.elapsed().as_secs_f64();
    expect(run.status.code() == Some(1), || {
        format!(
            "ctguard doctor on a full table: expected exit 1, got {}: {}",
            run.status,
            String::from_utf8_lossy(&run.stderr).trim()
        )
    })?;
    let json: serde_json::Value = serde_json::from_slice(&run.stdout)
        .map_err(|e| format!("ctguard doctor --json is not one JSON object: {e}"))?;
    let verdict = json["verdict"].as_str().unwrap_or_default();
    let top = &json["offenders"][0];
    say.note(&format!(
        "{took:.2} s: verdict {verdict:?}; top offender {} with {} entries {}",
        top["key"], top["entries"], top["states"]
    ));
    expect(verdict == "full", || {
        format!("doctor's verdict is {verdict:?}, expected \"full\": {json}")
    })?;
    // Without a guest file, doctor names the guest it found behind the host's port: the
    // runaway's veth `v-runaway`, with its address in the offender's line.
    let name = RUNAWAY.host_if();
    let offender = json["actions"]["offender"].as_str().unwrap_or_default();
    expect(top["key"] == name.as_str(), || {
        format!("doctor's top offender is {}, expected the guest {name}", top["key"])
    })?;
    expect(
        offender.starts_with(&format!("{name} (")) && offender.contains(&RUNAWAY.v4.to_string()),
        || format!("doctor's offender is {offender:?}, expected {name} with {}", RUNAWAY.v4),
    )?;
    let evict_argv: Vec<String> = json["actions"]["evict_argv"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    // The recommended commands must act on the lab's host namespace and nowhere else.
    let netns_at = evict_argv.iter().position(|a| a == "--netns");
    expect(
        evict_argv.len() > 1
            && netns_at.and_then(|i| evict_argv.get(i + 1)) == Some(&host)
            && evict_argv.iter().any(|a| a == "evict"),
        || format!("doctor's evict_argv does not name --netns {host} and evict: {evict_argv:?}"),
    )?;
    let cap_text = json["actions"]["cap"].as_str().unwrap_or_default();
    let cap: Vec<Vec<String>> = cap_text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(shell_words)
        .collect::<Result<_, _>>()?;
    let in_lab = ["ip", "netns", "exec", host.as_str(), "nft"];
    expect(
        !cap.is_empty() && cap.iter().all(|argv| argv.len() > 5 && argv[..5] == in_lab),
        || {
            format!(
                "doctor's cap lines are not all `ip netns exec {host} nft ...` commands: {cap_text:?}"
            )
        },
    )?;
    let cap_limit = cap_text
        .split("ct count over ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no `ct count over N` in doctor's cap: {cap_text:?}"))?;
    out.doctor = Some(json);
    Ok(Advice { evict_argv, cap, cap_limit })
}

/// Splits a shell line as doctor prints it: words separated by spaces, `'...'` quoting a word
/// with spaces. Anything else a shell would interpret is refused rather than guessed at.
fn shell_words(line: &str) -> Result<Vec<String>, String> {
    let outside: String = line.split('\'').step_by(2).collect();
    if outside.contains(['"', '\\', '$', '`', ';', '&', '|', '<', '>']) {
        return Err(format!("not a plain command line: {line:?}"));
    }
    let mut words = Vec::new();
    for (i, part) in line.split('\'').enumerate() {
        if i % 2 == 1 {
            words.push(part.to_string());
        } else {
            words.extend(part.split_whitespace().map(String::from));
        }
    }
    if line.matches('\'').count() % 2 == 1 {
        return Err(format!("unbalanced quote in {line:?}"));
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::{Audited, read_audit, relief_note, shell_words};

    #[test]
    fn issue_9_18_relief_note_tells_evicts_selection_from_the_earlier_listing() {
        let evict = Audited { selected: 249_318, deleted: 249_318 };
        let note = relief_note(1.42, &evict, 244_322, 262_144, 13_021);
        assert_eq!(
            note,
            "1.42 s; evict selected 249318 flows and deleted 249318: the 244322 conntrack -L \
             listed just before, and 4996 the guest opened since; the table went from 262144 \
             to 13021 entries"
        );
        // The old narration put the listing's count after the report's as "(N selected)".
        assert!(!note.contains("244322 selected"), "{note}");
    }

    #[test]
    fn issue_9_18_the_audit_outcome_gives_the_reports_counts() {
        let dir = std::env::temp_dir().join(format!("ctg-lab-audit-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let intent = r#"{"record":"intent","run_id":"a-1","selected":null}"#;
        let outcome = r#"{"record":"outcome","run_id":"a-1","selected":249318,"deleted":249310}"#;
        let other = r#"{"record":"outcome","run_id":"b-2","selected":1,"deleted":1}"#;
        let read = |lines: &[&str]| {
            std::fs::write(&path, lines.join("\n") + "\n").unwrap();
            read_audit(&path)
        };
        let got = read(&[intent, outcome]);
        let alone = read(&[outcome]);
        let mixed = read(&[intent, other]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got, Ok(Audited { selected: 249_318, deleted: 249_310 }));
        assert!(alone.unwrap_err().contains("expected one intent and its outcome"));
        assert!(mixed.unwrap_err().contains("(one run id)"));
    }

    #[test]
    fn shell_words_keep_a_quoted_nft_chain_spec_whole() {
        let w = shell_words("ip netns exec lab nft add chain inet ctguard forward '{ type filter hook forward priority -1; policy accept; }'").unwrap();
        assert_eq!(w.len(), 11);
        assert_eq!(w[10], "{ type filter hook forward priority -1; policy accept; }");
        assert!(shell_words("nft add table x; rm -rf /").is_err());
        assert!(shell_words("echo $HOME").is_err());
        assert!(shell_words("echo 'open").is_err());
    }
}
