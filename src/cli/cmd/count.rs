//! `ctguard count`: count the selected flows, optionally grouped.

use std::io::Write;
use std::sync::Arc;

use clap::Args as ClapArgs;
use ctguard::ctnetlink::Conntrack;
use ctguard::guests::GuestMap;
use ctguard::output::report::Ranking;
use ctguard::select::Selector;
use ctguard::tally::GroupBy;

use crate::cli::dump;
use crate::cli::exit::{Failure, Outcome};
use crate::cli::report_args::ReportArgs;
use crate::cli::select_args;

/// `ctguard count`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Group by: guest, src, dst, src/N, dst/N, state, proto, zone, mark.
    #[arg(long, value_name = "KEY", value_parser = GroupBy::parse)]
    pub by: Option<GroupBy>,
    #[command(flatten)]
    pub report: ReportArgs,
}

/// A validated `count`.
#[derive(Debug)]
pub struct Plan {
    sel: Selector,
    by: Option<GroupBy>,
    guests: Arc<GuestMap>,
    json: bool,
}

/// Checks the flags; reads the guest file.
pub fn plan(a: Args) -> Result<Plan, String> {
    let (sel, guests) = a.report.select.selector()?;
    if let Some(by) = a.by {
        select_args::check_guest_grouping(by, &guests)?;
    }
    Ok(Plan { sel, by: a.by, guests, json: a.report.json })
}

/// Runs `count`: exit 1 when nothing matched.
pub fn run(p: Plan, ct: &mut Conntrack, out: &mut impl Write) -> Result<Outcome, Failure> {
    let tally = dump::tally(ct, p.sel, p.by.unwrap_or(GroupBy::All), p.guests)?;
    let matched = tally.total().total;
    match p.by {
        None if p.json => writeln!(out, "{}", serde_json::json!({ "matched": matched }))?,
        None => writeln!(out, "{matched}")?,
        Some(_) if p.json => Ranking::new(&tally, None, None).write_json(out)?,
        Some(_) => Ranking::new(&tally, None, None).write_text(out, false)?,
    }
    Ok(if matched == 0 { Outcome::NothingMatched } else { Outcome::Ok })
}
