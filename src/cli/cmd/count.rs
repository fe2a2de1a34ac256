//! `ctguard count`: count the selected flows, optionally grouped.

use std::io::Write;
use std::sync::Arc;

use clap::Args as ClapArgs;
use ctguard::ctnetlink::Conntrack;
use ctguard::guests::GuestMap;
use ctguard::output::report::Ranking;
use ctguard::select::Selector;
use ctguard::tally::{GroupBy, Tally};

use crate::cli::ask::{self, Ask, LiveArgs};
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
    #[command(flatten)]
    pub live: LiveArgs,
}

/// A validated `count`.
#[derive(Debug)]
pub struct Plan {
    sel: Selector,
    by: Option<GroupBy>,
    guests: Arc<GuestMap>,
    json: bool,
    /// `--live`: what to ask the guard.
    live: Option<Ask>,
}

/// Checks the flags; reads the guest file.
pub fn plan(a: Args) -> Result<Plan, String> {
    if a.live.live {
        // Checked before the guest file is read: the guard's names are the ones that count.
        let live = ask::plan(&a.live, a.by, GroupBy::All, &a.report.select)?;
        let (sel, guests) = (Selector::default(), Arc::new(GuestMap::new()));
        return Ok(Plan { sel, by: a.by, guests, json: a.report.json, live: Some(live) });
    }
    let (sel, guests) = a.report.select.selector()?;
    if let Some(by) = a.by {
        select_args::check_guest_grouping(by, &guests)?;
    }
    Ok(Plan { sel, by: a.by, guests, json: a.report.json, live: None })
}

impl Plan {
    /// With `--live`: answered by the guard, no namespace, no netlink socket.
    pub fn live(&self) -> bool {
        self.live.is_some()
    }
}

/// Runs `count --live`: the guard's counts, printed as a dump's would be.
pub fn run_live(p: Plan, out: &mut impl Write) -> Result<Outcome, Failure> {
    let Some(live) = &p.live else { return Err(Failure::Message("count: not --live".into())) };
    let (tally, _) = ask::counts(live)?;
    print(&tally, p.by, p.json, out)
}

/// Runs `count`: exit 1 when nothing matched.
pub fn run(p: Plan, ct: &mut Conntrack, out: &mut impl Write) -> Result<Outcome, Failure> {
    let tally = dump::tally(ct, p.sel, p.by.unwrap_or(GroupBy::All), p.guests)?;
    print(&tally, p.by, p.json, out)
}

fn print(
    tally: &Tally,
    by: Option<GroupBy>,
    json: bool,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
    let matched = tally.total().total;
    match by {
        None if json => writeln!(out, "{}", serde_json::json!({ "matched": matched }))?,
        None => writeln!(out, "{matched}")?,
        Some(_) if json => Ranking::new(tally, None, None).write_json(out)?,
        Some(_) => Ranking::new(tally, None, None).write_text(out, false)?,
    }
    Ok(if matched == 0 { Outcome::NothingMatched } else { Outcome::Ok })
}
