//! `ctguard top`: who fills the table, the top owners by entries, per-state columns.

use std::io::Write;
use std::sync::Arc;

use clap::Args as ClapArgs;
use ctguard::ctnetlink::Conntrack;
use ctguard::guests::GuestMap;
use ctguard::output::report::Ranking;
use ctguard::select::Selector;
use ctguard::tally::GroupBy;

use crate::cli::ask::{self, Ask, LiveArgs};
use crate::cli::dump;
use crate::cli::exit::{Failure, Outcome};
use crate::cli::parse;
use crate::cli::report_args::ReportArgs;
use crate::cli::select_args;

/// `ctguard top`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Group by: guest, src, dst, src/N, dst/N, state, proto, zone, mark
    /// (default: guest with --guests, else src).
    #[arg(long, value_name = "KEY", value_parser = GroupBy::parse)]
    pub by: Option<GroupBy>,
    /// How many groups to show.
    #[arg(short = 'n', long, default_value = "10", value_name = "N", value_parser = parse::positive_usize("-n"))]
    pub limit: usize,
    #[command(flatten)]
    pub report: ReportArgs,
    #[command(flatten)]
    pub live: LiveArgs,
}

/// A validated `top`.
#[derive(Debug)]
pub struct Plan {
    sel: Selector,
    by: GroupBy,
    guests: Arc<GuestMap>,
    limit: usize,
    json: bool,
    /// `--live`: what to ask the guard.
    live: Option<Ask>,
}

/// Checks the flags; reads the guest file.
pub fn plan(a: Args) -> Result<Plan, String> {
    if a.live.live {
        // Checked before the guest file is read: the guard's names are the ones that count.
        let live = ask::plan(&a.live, a.by, GroupBy::Guest, &a.report.select)?;
        let (sel, guests) = (Selector::default(), Arc::new(GuestMap::new()));
        let (by, limit, json) = (GroupBy::Guest, a.limit, a.report.json);
        return Ok(Plan { sel, by, guests, limit, json, live: Some(live) });
    }
    let (sel, guests) = a.report.select.selector()?;
    let by = select_args::group_by(a.by, &guests)?;
    Ok(Plan { sel, by, guests, limit: a.limit, json: a.report.json, live: None })
}

impl Plan {
    /// With `--live`: answered by the guard, no namespace, no netlink socket.
    pub fn live(&self) -> bool {
        self.live.is_some()
    }
}

/// Runs `top --live`: the guard's counts, printed as a dump's would be.
pub fn run_live(p: Plan, out: &mut impl Write) -> Result<Outcome, Failure> {
    let Some(live) = &p.live else { return Err(Failure::Message("top: not --live".into())) };
    let (tally, fill) = ask::counts(live)?;
    print(&Ranking::new(&tally, fill, Some(p.limit)), p.json, out)
}

fn print(ranking: &Ranking<'_>, json: bool, out: &mut impl Write) -> Result<Outcome, Failure> {
    if json {
        ranking.write_json(out)?;
    } else {
        ranking.write_text(out, true)?;
    }
    Ok(Outcome::Ok)
}

/// Runs `top`.
pub fn run(p: Plan, ct: &mut Conntrack, out: &mut impl Write) -> Result<Outcome, Failure> {
    let fill = dump::fill(ct)?;
    let tally = dump::tally(ct, p.sel, p.by, p.guests)?;
    print(&Ranking::new(&tally, Some(fill), Some(p.limit)), p.json, out)
}
