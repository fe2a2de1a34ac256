//! `ctguard stats`: table count, max, fill %, buckets, and the per-CPU counters summed.

use std::io::Write;

use clap::Args as ClapArgs;
use ctguard::ctnetlink::Conntrack;
use ctguard::output::jsonl;
use ctguard::output::report::StatsReport;

use crate::cli::dump;
use crate::cli::exit::{Failure, Outcome};
use crate::cli::term::Term;

/// `ctguard stats`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Also show each CPU's counters.
    #[arg(long)]
    pub per_cpu: bool,
}

/// A validated `stats`: nothing to check.
pub type Plan = Args;

/// Runs `stats`.
pub fn run(
    p: Plan,
    ct: &mut Conntrack,
    term: &Term,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
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
