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

use crate::place::{Place, command};
use crate::table::{self, Counters, Entry};
use crate::topology::{self, GuestSpec, Lab, RUNAWAY};
use crate::traffic::{self, ConnectError, FloodLimits, Ping};

/// How the replay relieves the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// `ctguard doctor --json`, then the command of its `actions.evict_argv`.
    Doctor,
    /// TEMPORARY, until `ctguard doctor` and `ctguard evict` exist on this branch:
    /// `conntrack -D -s 172.16.3.5 -p tcp --state ESTABLISHED` inside the lab's host
    /// namespace. Remove this variant once the doctor and evict branches are merged.
    ConntrackDelete,
}

/// What to replay, with which tools.
#[derive(Debug, Clone)]
pub struct Options {
    /// The ctguard binary under test.
    pub ctguard: PathBuf,
    /// The shared folder with `bench/seed_table.py`.
    pub shared: PathBuf,
    pub recovery: Recovery,
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
    pub count_after: u64,
    /// Entries outside the eviction's selection, before it ran; how many of them were gone
    /// after it (all non-ESTABLISHED, within the kernel's own early drops).
    pub kept_before: usize,
    pub kept_missing: usize,
    /// The healthy guests' ESTABLISHED entries before and after the relief (equal sets).
    pub healthy_established: usize,
}

/// Prints the steps with the time since the start.
pub struct Narrator {
    started: Instant,
    to_stderr: bool,
}

impl Narrator {
    fn new(to_stderr: bool) -> Narrator {
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
fn expect(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

/// The runaway guest's bounds: it fills the table in a second, then keeps knocking (about 500
/// attempts a second, each given 250 ms) until stopped, so a slot the kernel frees is taken
/// again at once, as in the incident; at most 200,000 attempts and 150 s in any case.
const FLOOD: FloodLimits = FloodLimits {
    concurrency: 128,
    max_attempts: 200_000,
    max_held: 40_000,
    attempt_timeout: Duration::from_millis(250),
    duration: Duration::from_secs(150),
};
/// Pings the host sends to a healthy guest while the table is full.
const PING_PROBES: u16 = 20;
/// How long a healthy guest's connection attempt may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

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
    let healthy: Vec<(GuestSpec, &Place)> =
        lab.guests.iter().filter(|(g, _)| !g.runaway).map(|(g, p)| (*g, p)).collect();

    let listener = lab
        .upstream
        .run(traffic::listen(topology::UPSTREAM_PORT))
        .await?
        .map_err(|e| format!("upstream listen: {e}"))?;
    lab.upstream.spawn(traffic::serve(listener, 100_000));

    say.step("Healthy guests open sessions to the upstream server (IPv4 and IPv6)");
    let mut sessions: Vec<(GuestSpec, TcpStream)> = Vec::new();
    for (g, place) in &healthy {
        for v6 in [false, false, true] {
            let s = place
                .run(traffic::connect_and_echo(topology::upstream(v6), PROBE_TIMEOUT))
                .await??;
            sessions.push((*g, s));
        }
        ping_ok(lab, g).await?;
    }
    say.note(&format!(
        "{} sessions open and echoing; the host pings every healthy guest",
        sessions.len()
    ));

    say.step("Load the incident's table into the host namespace (conntrack -R)");
    out.max = table::max(&lab.host)?;
    let started = Instant::now();
    out.seeded = table::seed_incident(&lab.host, &opts.shared, &lab.scratch("incident.conntrack"))?;
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
    let flood = runaway.spawn(traffic::flood(topology::upstream(false), FLOOD, stop_rx));
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
    // A full table still lets the odd packet through: a new entry may evict an unassured one
    // near its hash bucket (the seed's SYN_SENT and SYN_RECV entries), or take a slot the
    // kernel's GC just freed before the runaway guest takes it back. The operators saw "loses
    // packets", not "loses all"; so the probes are many and at least 3 in 4 must fail.
    let target = healthy.first().map(|(g, _)| g.v4).ok_or("no healthy guest")?;
    let (mut eperm, mut replies) = (0, 0);
    for seq in 0..PING_PROBES {
        match lab.host.run(traffic::ping(target, 0x7e10 + seq, PROBE_TIMEOUT)).await? {
            Ok(Ping::SendFailed(e)) if e.raw_os_error() == Some(libc::EPERM) => eperm += 1,
            Ok(Ping::Reply(_)) => replies += 1,
            other => return Err(format!("ping {target} from the full host: {other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    say.note(&format!(
        "host: {eperm} of {PING_PROBES} pings to {target} fail in sendto with EPERM \
         (\"Operation not permitted\"; iputils now prints only the loss), {replies} got through"
    ));
    expect(eperm * 4 >= PING_PROBES * 3, || {
        format!("only {eperm} of {PING_PROBES} pings from the full host failed with EPERM")
    })?;
    // Every healthy guest tries at once, over both families, so the step takes one timeout.
    let attempts = healthy.iter().flat_map(|(g, place)| {
        [false, true, false, true, false, true, false, true].map(|v6| {
            let dst = topology::upstream(v6);
            async move { (g.role, dst, place.run(traffic::connect(dst, PROBE_TIMEOUT)).await) }
        })
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
    expect(connected.len() * 4 <= probes, || {
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

    let relief = match opts.recovery {
        Recovery::Doctor => {
            say.step("The operator runs ctguard doctor");
            doctor(lab, opts, say, &mut out)?
        }
        Recovery::ConntrackDelete => {
            say.step(
                "Relief (TEMPORARY: conntrack -D inside the lab, until ctguard doctor/evict land)",
            );
            // TEMPORARY: replace with the doctor's evict_argv once doctor and evict are merged.
            ["conntrack", "-D", "-s", "172.16.3.5", "-p", "tcp", "--state", "ESTABLISHED"]
                .map(String::from)
                .to_vec()
        }
    };

    say.step("Stop the runaway guest (in production: the nft ct count cap, or stop the VM)");
    let _ = stop_tx.send(true);
    let flood = flood.await.map_err(|e| format!("the runaway guest's task failed: {e}"))?;
    out.runaway_established = flood.established;
    out.runaway_attempts = flood.attempts;
    say.note(&format!(
        "it made {} attempts in {:.1} s: {} connections established and held, {} timed out",
        flood.attempts,
        flood.ran_for.as_secs_f64(),
        flood.established,
        flood.timed_out
    ));
    if let Some(e) = &flood.first_error {
        say.note(&format!("{} other errors, the first: {e}", flood.other_errors));
    }

    say.step("Evict the runaway guest's ESTABLISHED flows");
    // The eviction's selection, as it appears in a `conntrack -L` line.
    let selection = format!("ESTABLISHED src={} ", RUNAWAY.v4);
    let (snapshot, selected) = table::list(&lab.host, &selection)?;
    let kept: BTreeSet<&Entry> = snapshot.iter().collect();
    let counters_before = table::counters(&lab.host)?;
    say.command(&relief);
    let started = Instant::now();
    let run = relief_run(lab, opts, &relief)?;
    out.relief_secs = started.elapsed().as_secs_f64();
    expect(run.status.success(), || {
        format!(
            "`{}` exited {}: {}",
            relief.join(" "),
            run.status,
            String::from_utf8_lossy(&run.stderr).trim()
        )
    })?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    if stdout.lines().count() <= 8 {
        say.note(stdout.trim_end());
    } else {
        say.note(&format!("({} lines on stdout)", stdout.lines().count()));
    }
    say.note(String::from_utf8_lossy(&run.stderr).trim_end());
    out.relief = relief;
    let (after, left) = table::list(&lab.host, &selection)?;
    let counters_after = table::counters(&lab.host)?;
    out.count_after = (after.len() + left) as u64;
    say.note(&format!(
        "{:.2} s; the table went from {} to {} entries ({selected} selected)",
        out.relief_secs,
        snapshot.len() + selected,
        out.count_after
    ));
    expect(left == 0, || format!("{left} ESTABLISHED entries of {} are still there", RUNAWAY.v4))?;
    let after_set: BTreeSet<&Entry> = after.iter().collect();
    let missing: Vec<&&Entry> = kept.iter().filter(|e| !after_set.contains(**e)).collect();
    out.kept_before = kept.len();
    out.kept_missing = missing.len();
    // The kernel itself may free closing-state and unassured entries while the table is
    // nearly full (the GC's early drop, counted in early_drop); ESTABLISHED ones never.
    let kernel_freed = counters_after.early_drop - counters_before.early_drop;
    if let Some(e) = missing.iter().find(|e| e.state == "ESTABLISHED") {
        return Err(format!("an ESTABLISHED entry outside the selection was deleted: {}", e.key));
    }
    expect(missing.len() as u64 <= kernel_freed, || {
        format!(
            "{} entries outside the selection vanished (the kernel's early drop freed only {kernel_freed}); first: {}",
            missing.len(),
            missing[0].key
        )
    })?;
    let healthy_est = |entries: &[Entry]| -> BTreeSet<String> {
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
    };
    let (h_before, h_after) = (healthy_est(&snapshot), healthy_est(&after));
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
        "{} of {} entries outside the selection kept ({} freed by the kernel's own early drop)",
        kept.len() - missing.len(),
        kept.len(),
        missing.len()
    ));

    say.step("Recovery");
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
    let count = table::count(&lab.host)?;
    say.note(&format!(
        "table {count} of {} ({:.1}% full)",
        out.max,
        100.0 * count as f64 / out.max as f64
    ));
    Ok(out)
}

/// The host pings a guest and gets the reply.
async fn ping_ok(lab: &Lab, g: &GuestSpec) -> Result<Duration, String> {
    match lab.host.run(traffic::ping(g.v4, 0x7e00, PROBE_TIMEOUT)).await? {
        Ok(Ping::Reply(rtt)) => Ok(rtt),
        other => Err(format!("host: ping {} ({}): {other:?}", g.v4, g.role)),
    }
}

/// Every session echoes once more, on its guest's place.
async fn echo_all(
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

/// `ctguard --netns HOST doctor --json`: checks the verdict and the top offender, and returns
/// the eviction command it recommends.
fn doctor(
    lab: &Lab,
    opts: &Options,
    say: &Narrator,
    out: &mut Outcome,
) -> Result<Vec<String>, String> {
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
    expect(top["key"] == RUNAWAY.v4.to_string().as_str(), || {
        format!("doctor's top offender is {}, expected {}", top["key"], RUNAWAY.v4)
    })?;
    let argv: Vec<String> = json["actions"]["evict_argv"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    say.note(&format!("recommended: {}", json["actions"]["evict"].as_str().unwrap_or("?")));
    if let Some(cap) = json["actions"]["cap"].as_str() {
        say.note(&format!("to cap the guest: {cap}"));
    }
    // The recommended command must act on the lab's host namespace and nowhere else.
    let netns_at = argv.iter().position(|a| a == "--netns");
    expect(
        argv.len() > 1
            && netns_at.and_then(|i| argv.get(i + 1)) == Some(&host)
            && argv.contains(&"evict".to_string()),
        || format!("doctor's evict_argv does not name --netns {host} and evict: {argv:?}"),
    )?;
    out.doctor = Some(json);
    Ok(argv)
}

/// Runs the relief command: ctguard's (argv[0] replaced by the binary under test) or, for the
/// temporary path, conntrack inside the lab's host namespace only.
fn relief_run(
    lab: &Lab,
    opts: &Options,
    relief: &[String],
) -> Result<std::process::Output, String> {
    let args: Vec<&str> = relief[1..].iter().map(String::as_str).collect();
    match opts.recovery {
        Recovery::Doctor => command(&opts.ctguard.to_string_lossy(), &args),
        Recovery::ConntrackDelete => lab.host.exec("conntrack", &args),
    }
}
