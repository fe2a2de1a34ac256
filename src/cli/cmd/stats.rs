//! `ctguard stats`: table count, max, fill %, buckets, and the per-CPU counters summed; with
//! `--interval`, every counter's rise per second, interval after interval (runbook step 4,
//! "is drop still rising?", in one command).

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime};

use clap::Args as ClapArgs;
use ctguard::ctnetlink::Conntrack;
use ctguard::output::interval::{IntervalReport, IntervalTable};
use ctguard::output::jsonl;
use ctguard::output::report::StatsReport;
use ctguard::stats::CounterSampler;

use crate::cli::exit::{Failure, Outcome};
use crate::cli::term::Term;
use crate::cli::{dump, live, parse};

/// On a terminal the heading comes again every this many rows, as vmstat's does once the
/// first has scrolled away; piped, it is printed once, for the script reading it.
const HEADING_EVERY: usize = 20;

/// `ctguard stats`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Print JSON (with --interval, one JSON Lines object per interval).
    #[arg(long)]
    pub json: bool,
    /// Also show each CPU's counters.
    #[arg(long, conflicts_with = "interval")]
    pub per_cpu: bool,
    /// Every DURATION (1s, 500ms; 100ms to 1h), print the count, fill % and every counter's
    /// rise per second over the interval, until Ctrl-C or --count.
    #[arg(long, value_name = "DURATION", value_parser = interval)]
    pub interval: Option<Duration>,
    /// Stop after N intervals.
    #[arg(long, value_name = "N", requires = "interval", value_parser = parse::positive("--count"))]
    pub count: Option<u64>,
}

/// A validated `stats`: the flags' parsers checked everything.
pub type Plan = Args;

/// `--interval`: shorter than 100ms is a netlink round trip's noise, longer than an hour no
/// longer answers "is it still rising?".
fn interval(s: &str) -> Result<Duration, String> {
    let d = parse::nonzero_duration("--interval", s)?;
    if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&d) {
        return Err(format!("--interval: '{s}' is not between 100ms and 1h"));
    }
    Ok(d)
}

/// Runs `stats`.
pub fn run(
    p: Plan,
    ct: &mut Conntrack,
    term: &Term,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
    if let Some(every) = p.interval {
        let rt = live::runtime()?;
        let r = rt.block_on(intervals(every, p.count, p.json, ct, out));
        rt.shutdown_background();
        return r;
    }
    let fill = dump::fill(ct)?;
    let cpus = ct.cpu_stats()?;
    let report = StatsReport::new(fill, &cpus, p.per_cpu);
    if p.json {
        jsonl::write_line(out, &report)?;
    } else {
        report.write_text_as(out, term.look)?;
    }
    Ok(Outcome::Ok)
}

/// One line per interval until `count`, a signal, or the reader going away (all exit 0).
/// Each reading closes one window and opens the next, so the windows add up to the whole run;
/// each is divided by its real length on the monotonic clock, not by `every`.
async fn intervals(
    every: Duration,
    count: Option<u64>,
    json: bool,
    ct: &mut Conntrack,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
    let stop = live::stopping(None)?;
    tokio::pin!(stop);
    let mut sampler = CounterSampler::start(Instant::now(), &ct.cpu_stats()?);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut table = IntervalTable::new(io::stdout().is_terminal().then_some(HEADING_EVERY));
    let mut done = 0;
    while count.is_none_or(|n| done < n) {
        tokio::select! {
            biased;
            // Every line is flushed when written: nothing is left to say.
            _ = &mut stop => return Ok(Outcome::Ok),
            _ = ticks.tick() => {}
        }
        let window = sampler.next(Instant::now(), &ct.cpu_stats()?);
        let report = IntervalReport::new(SystemTime::now(), dump::fill(ct)?, &window);
        if json {
            jsonl::write_line(out, &report)?;
        } else {
            table.write(out, &report)?;
        }
        out.flush()?;
        done += 1;
    }
    Ok(Outcome::Ok)
}
