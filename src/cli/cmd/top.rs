//! `ctguard top`: who fills the table, the top owners by entries, per-state columns.

use std::io::Write;

use clap::Args as ClapArgs;
use ctguard::ctnetlink::Conntrack;
use ctguard::output::report::Ranking;
use ctguard::tally::GroupBy;

use crate::cli::ask::{self, LiveArgs, Source};
use crate::cli::dump;
use crate::cli::exit::{Failure, Outcome};
use crate::cli::parse;
use crate::cli::report_args::ReportArgs;
use crate::cli::select_args;
use crate::cli::term::Term;

/// `ctguard top`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Group by: guest, src, dst, src/N, dst/N, state, proto, zone, mark, helper
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
    source: Source,
    /// `None`: by guest when guests are known at run (a file's or discovered), else by source.
    by: Option<GroupBy>,
    limit: usize,
    json: bool,
}

/// Checks the flags; reads the guest file.
pub fn plan(a: Args) -> Result<Plan, String> {
    let source = Source::of(&a.live, a.by, GroupBy::Guest, &a.report.select)?;
    let by = match &source {
        Source::Live(_) => Some(GroupBy::Guest),
        // Without discovery the guest file alone decides, now.
        Source::Dump(_, guests, pending) if pending.off() => {
            Some(select_args::group_by(a.by, guests)?)
        }
        Source::Dump(..) => a.by,
    };
    Ok(Plan { source, by, limit: a.limit, json: a.report.json })
}

impl Plan {
    /// With `--live`: answered by the guard, no namespace, no netlink socket.
    pub fn live(&self) -> bool {
        matches!(self.source, Source::Live(_))
    }
}

/// Runs `top --live`: the guard's counts, printed as a dump's would be.
pub fn run_live(p: Plan, term: &Term, out: &mut impl Write) -> Result<Outcome, Failure> {
    let Source::Live(live) = &p.source else {
        return Err(Failure::Message("top: not --live".into()));
    };
    let (tally, fill) = ask::counts(live)?;
    print(&Ranking::new(&tally, fill, Some(p.limit)), p.json, term, out)
}

fn print(
    ranking: &Ranking<'_>,
    json: bool,
    term: &Term,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
    if json {
        ranking.write_json(out)?;
    } else {
        ranking.write_text_as(out, true, term.look)?;
    }
    Ok(Outcome::Ok)
}

/// Runs `top`.
pub fn run(
    p: Plan,
    ct: &mut Conntrack,
    term: &Term,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
    let Source::Dump(mut sel, mut guests, pending) = p.source else {
        return run_live(p, term, out);
    };
    let owners = p.by.is_none_or(|by| by == GroupBy::Guest);
    pending.resolve(&mut sel, &mut guests, owners)?;
    let by = select_args::group_by(p.by, &guests).map_err(Failure::Message)?;
    let fill = dump::fill(ct)?;
    let bar = dump::bar(term.progress_unless(p.json), Some(fill.count));
    let tally = dump::tally(ct, *sel, by, guests, bar)?;
    print(&Ranking::new(&tally, Some(fill), Some(p.limit)), p.json, term, out)
}
