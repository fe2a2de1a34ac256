//! `ctguard count`: count the selected flows, optionally grouped.

use std::io::Write;

use clap::Args as ClapArgs;
use ctguard::ctnetlink::Conntrack;
use ctguard::output::report::Ranking;
use ctguard::tally::{GroupBy, Tally};

use crate::cli::ask::{self, LiveArgs, Source};
use crate::cli::exit::{Failure, Outcome};
use crate::cli::report_args::ReportArgs;
use crate::cli::select_args;
use crate::cli::term::Term;
use crate::cli::{dump, expect};

/// `ctguard count`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Count the expectation table instead of the flows (`conntrack -C expect`); --by src,
    /// dst, src/N, dst/N, proto of the expected tuple, or helper.
    #[arg(long, conflicts_with = "live")]
    pub expect: bool,
    /// Group by: guest, src, dst, src/N, dst/N, state, proto, zone, mark, helper.
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
    source: Source,
    by: Option<GroupBy>,
    json: bool,
    expect: bool,
}

/// Checks the flags; reads the guest file.
pub fn plan(a: Args) -> Result<Plan, String> {
    let source = Source::of(&a.live, a.by, GroupBy::All, &a.report.select)?;
    if let (Source::Dump(_, guests, pending), Some(by)) = (&source, a.by)
        && pending.off()
    {
        select_args::check_guest_grouping(by, guests)?;
    }
    if let (Source::Dump(sel, ..), true) = (&source, a.expect) {
        expect::check(sel, a.by)?;
    }
    Ok(Plan { source, by: a.by, json: a.report.json, expect: a.expect })
}

impl Plan {
    /// With `--live`: answered by the guard, no namespace, no netlink socket.
    pub fn live(&self) -> bool {
        matches!(self.source, Source::Live(_))
    }
}

/// Runs `count --live`: the guard's counts, printed as a dump's would be.
pub fn run_live(p: Plan, term: &Term, out: &mut impl Write) -> Result<Outcome, Failure> {
    let Source::Live(live) = &p.source else {
        return Err(Failure::Message("count: not --live".into()));
    };
    let (tally, _) = ask::counts(live)?;
    print(&tally, p.by, p.json, term, out)
}

/// Runs `count`: exit 1 when nothing matched.
pub fn run(
    p: Plan,
    ct: &mut Conntrack,
    term: &Term,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
    let Source::Dump(mut sel, mut guests, pending) = p.source else {
        return run_live(p, term, out);
    };
    pending.resolve(&mut sel, &mut guests, p.by == Some(GroupBy::Guest))?;
    let by = p.by.unwrap_or(GroupBy::All);
    select_args::check_guest_grouping(by, &guests).map_err(Failure::Message)?;
    let tally = if p.expect {
        expect::tally(ct, &sel, by)?
    } else {
        dump::tally(ct, *sel, by, guests, dump::bar(term.progress_unless(p.json), None))?
    };
    print(&tally, p.by, p.json, term, out)
}

fn print(
    tally: &Tally,
    by: Option<GroupBy>,
    json: bool,
    term: &Term,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
    let matched = tally.total().total;
    match by {
        None if json => writeln!(out, "{}", serde_json::json!({ "matched": matched }))?,
        None => writeln!(out, "{matched}")?,
        Some(_) if json => Ranking::new(tally, None, None).write_json(out)?,
        Some(_) => Ranking::new(tally, None, None).write_text_as(out, false, term.look)?,
    }
    Ok(if matched == 0 { Outcome::NothingMatched } else { Outcome::Ok })
}
