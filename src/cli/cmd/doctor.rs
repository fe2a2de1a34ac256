//! `ctguard doctor`: is the table full, who filled it, what to run now. Gathers the facts
//! from the kernel, lets `ctguard::doctor` decide, prints.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use ctguard::ctnetlink::Conntrack;
use ctguard::doctor::{self, DoctorReport, Facts, Inputs, LogSummary};
use ctguard::guests::GuestMap;
use ctguard::output::jsonl;
use ctguard::select::{self, Selector};
use ctguard::stats::CounterSampler;
use ctguard::tune::{self, TuneFacts};
use ctguard::{kernel, kmsg, sysctl};

use crate::cli::discovery::{DiscoverArgs, Pending};
use crate::cli::exit::{Failure, Outcome};
use crate::cli::progress::Bar;
use crate::cli::select_args;
use crate::cli::term::Term;
use crate::cli::{dump, host, parse};

/// `ctguard doctor`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// How long to watch the per-CPU counters (a rising `drop` means full now).
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = window)]
    pub window: Duration,
    /// Guest file: name the offenders by guest instead of by source address (it wins over
    /// discovery for its addresses).
    #[arg(long, value_name = "FILE", env = "CTGUARD_GUESTS")]
    pub guests: Option<String>,
    #[command(flatten)]
    pub discover: DiscoverArgs,
    /// How many top owners to show.
    #[arg(short = 'n', long, default_value = "5", value_name = "N", value_parser = parse::positive_usize("-n"))]
    pub limit: usize,
    /// Print JSON (schema in docs/json-schema.md).
    #[arg(long)]
    pub json: bool,
}

/// The longest `--window`: doctor is for an operator waiting on it.
const MAX_WINDOW: Duration = Duration::from_secs(60);

fn window(s: &str) -> Result<Duration, String> {
    let window = select::parse_duration(s).map_err(|e| format!("--window: {e}"))?;
    if window.is_zero() || window > MAX_WINDOW {
        return Err(format!(
            "--window '{s}' must be more than 0 and at most 60s (the counters are sampled twice)"
        ));
    }
    Ok(window)
}

/// What `doctor` needs.
#[derive(Debug)]
pub struct Plan {
    /// How long to watch the counters.
    window: Duration,
    /// The guest file's map (empty without one); discovery joins the host's guests at run.
    guests: GuestMap,
    /// `--guests` as given and the discovery flags, repeated in the evict command.
    guest_flags: Vec<String>,
    /// The host's guests, found at run.
    pending: Pending,
    /// Top owners shown.
    limit: usize,
    /// JSON output.
    json: bool,
}

/// Checks the flags; reads the guest file.
pub fn plan(a: Args) -> Result<Plan, String> {
    let guests = select_args::load_guests(a.guests.as_deref())?;
    let mut guest_flags = a.discover.argv();
    if let Some(f) = &a.guests {
        guest_flags.splice(0..0, ["--guests".to_string(), f.clone()]);
    }
    let pending = Pending::new(a.discover.dirs(), Vec::new(), a.guests);
    Ok(Plan { window: a.window, guests, guest_flags, pending, limit: a.limit, json: a.json })
}

fn kmsg_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => {
            "permission denied: reading /dev/kmsg needs CAP_SYSLOG (or kernel.dmesg_restrict=0)"
                .into()
        }
        _ => e.to_string(),
    }
}

/// `ctguard doctor`.
pub fn run(
    p: Plan,
    ct: &mut Conntrack,
    netns_arg: Option<&str>,
    term: &Term,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
    let kernel = kernel::release();
    let ns = host::identity(kernel)?;
    let start = Instant::now();
    let mut sampler = CounterSampler::start(start, &ct.cpu_stats()?);
    // The dump (and the look at the host's guests) runs inside the window: its time is
    // watching time too.
    let mut guests = Arc::new(p.guests);
    p.pending.resolve(&mut Selector::default(), &mut guests, true)?;
    let by = select_args::default_group_by(&guests);
    // No bar: the dump runs inside the window, which the operator chose to wait.
    let tally = dump::tally(ct, Selector::default(), by, Arc::clone(&guests), Bar::off())?;
    if let Some(rest) = p.window.checked_sub(start.elapsed()) {
        std::thread::sleep(rest);
    }
    let counters = sampler.next(Instant::now(), &ct.cpu_stats()?);
    let fill = dump::fill(ct)?;

    // Older kernels may print the classic wording for every namespace.
    let target = kmsg::Target {
        inode: ns.inode,
        initial: ns.initial,
        names_netns: kmsg::names_netns(kernel),
    };
    let mut log = LogSummary::default();
    match kmsg::read_table_full(|line| log.add(line, &target)) {
        Ok(()) => log.readable = true,
        Err(e) => log.error = Some(kmsg_error(&e)),
    }
    let now_usec = kmsg::now_usec();

    let sysctls: BTreeMap<String, Option<u64>> = doctor::WATCHED_SYSCTLS
        .iter()
        .map(|n| (format!("net.netfilter.{n}"), sysctl::read(n)))
        .collect();
    let tune_facts = TuneFacts::read(u64::from(fill.count), u64::from(fill.max));
    let tune_lines =
        tune::recommend(&tune_facts).iter().filter(|r| r.change).map(|r| r.assignment()).collect();
    let facts =
        Facts { fill, counters, established_timeout: tune_facts.established, log, now_usec };
    let report = DoctorReport::new(Inputs {
        facts,
        netns: ns,
        netns_arg,
        guest_flags: &p.guest_flags,
        guests: &guests,
        tally: &tally,
        limit: p.limit,
        sysctl: sysctls,
        tune: tune_lines,
    });
    if p.json {
        jsonl::write_line(out, &report)?;
    } else {
        report.write_text_as(out, term.look)?;
    }
    Ok(if report.trouble() { Outcome::Trouble } else { Outcome::Ok })
}
