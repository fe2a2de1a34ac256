//! One file per command, each with its clap arguments, its plan (every value and cross-flag
//! rule checked, before any socket opens) and its run. Here only the list of them, and the
//! dispatch; the commands never use each other, what two share is a leaf of `cli` or the
//! library.

pub mod completions;
pub mod count;
pub mod create;
pub mod doctor;
pub mod events;
pub mod evict;
pub mod guard;
pub mod guests;
pub mod list;
pub mod load;
pub mod man;
pub mod stats;
pub mod top;
pub mod tune;
pub mod update;
pub mod watch;

use std::io::Write;

use clap::Subcommand;
use ctguard::ctnetlink::Conntrack;

use super::exit::{Failure, Outcome};
use super::term::Term;

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Who fills the table: fill %, the top owners by entries, per-state columns.
    Top(top::Args),
    /// Count the selected flows, optionally grouped (`--by state` is the procfs awk one-liner).
    Count(count::Args),
    /// Print the selected flows like `conntrack -L`, or as JSON Lines.
    List(list::Args),
    /// Table count, max, fill %, buckets, and the per-CPU counters summed; with --interval,
    /// their rise per second, interval after interval.
    Stats(stats::Args),
    /// Create one flow (`conntrack -I`).
    Create(create::Args),
    /// Create the flows of a JSON Lines file written by `list --json` (or `-` for stdin).
    Load(load::Args),
    /// Is the table full, who filled it, what to run now (exit 0 healthy, 1 at risk or full).
    Doctor(doctor::Args),
    /// Recommended conntrack sysctls for this host, each with its reason.
    Tune(tune::Args),
    /// Print conntrack events like `conntrack -E` (with timestamps), or as JSON Lines.
    Events(events::Args),
    /// Live counts per group and state from events: a top-like view, or JSON Lines snapshots.
    #[command(after_help = watch::HELP)]
    Watch(watch::Args),
    /// Delete exactly the selected flows: preview and confirm, or --yes; --dry-run to see.
    Evict(evict::EvictArgs),
    /// Set mark, timeout, status or labels on the selected flows (`conntrack -U`): preview
    /// and confirm, or --yes; --dry-run to see.
    Update(update::Args),
    /// The always-on guard: live counts per guest, automatic relief, /metrics (see --help).
    #[command(after_help = guard::HELP)]
    Guard(guard::Args),
    /// The guest interfaces found on this host (links, neighbours, bridge FDB): NAME IFACE
    /// MAC IPv4 IPv6 SOURCE.
    Guests(guests::Args),
    /// Write the completion script of bash, zsh or fish to stdout (guest names included).
    Completions(completions::Args),
    /// Write the manual pages (ctguard.8, ctguard-COMMAND.8) into DIR.
    Man(man::Args),
}

/// A command, validated: what its run needs.
#[derive(Debug)]
pub enum Plan {
    /// `top`.
    Top(top::Plan),
    /// `count`.
    Count(count::Plan),
    /// `list`.
    List(list::Plan),
    /// `stats`.
    Stats(stats::Plan),
    /// `create`.
    Create(create::Plan),
    /// `load`.
    Load(load::Plan),
    /// `doctor`.
    Doctor(doctor::Plan),
    /// `tune`.
    Tune(tune::Plan),
    /// `events`.
    Events(events::Plan),
    /// `watch`.
    Watch(watch::Plan),
    /// `evict`.
    Evict(Box<evict::EvictPlan>),
    /// `guard`.
    Guard(Box<guard::Plan>),
    /// `guests`.
    Guests(guests::Plan),
    /// `completions`.
    Completions(completions::Plan),
    /// `man`.
    Man(man::Plan),
}

impl Plan {
    /// The namespace the command's own input names (the guard's configuration), for a
    /// command line without `--netns`.
    pub fn netns(&self) -> Option<&str> {
        match self {
            Plan::Guard(p) => p.netns(),
            _ => None,
        }
    }
}

/// The command's plan, or in one line what is wrong with the input.
pub fn plan(command: Command, netns: Option<&str>) -> Result<Plan, String> {
    Ok(match command {
        Command::Top(a) => Plan::Top(top::plan(a)?),
        Command::Count(a) => Plan::Count(count::plan(a)?),
        Command::List(a) => Plan::List(list::plan(a)?),
        Command::Stats(a) => Plan::Stats(a),
        Command::Create(a) => Plan::Create(create::plan(a)?),
        Command::Load(a) => Plan::Load(load::plan(a)?),
        Command::Doctor(a) => Plan::Doctor(doctor::plan(a)?),
        Command::Tune(a) => Plan::Tune(tune::plan(a)?),
        Command::Events(a) => Plan::Events(events::plan(a)?),
        Command::Watch(a) => Plan::Watch(watch::plan(a, netns)?),
        Command::Evict(a) => Plan::Evict(Box::new(evict::plan(a)?)),
        Command::Update(a) => Plan::Evict(Box::new(update::plan(a)?)),
        Command::Guard(a) => Plan::Guard(Box::new(guard::plan(a)?)),
        Command::Guests(a) => Plan::Guests(guests::plan(a)?),
        Command::Completions(a) => Plan::Completions(a),
        Command::Man(a) => Plan::Man(man::plan(a)?),
    })
}

/// True when the plan is answered by the running guard (`--live`): no namespace is entered
/// and no netlink socket opened for it.
pub fn asks_the_guard(plan: &Plan) -> bool {
    match plan {
        Plan::Top(p) => p.live(),
        Plan::Count(p) => p.live(),
        _ => false,
    }
}

/// True when the plan needs neither a namespace nor a netlink socket: `--live` (the guard
/// answers), `guard --check` (the configuration alone), and the completion scripts and man
/// pages (the command line's own definition), which run as any user.
pub fn offline(plan: &Plan) -> bool {
    asks_the_guard(plan)
        || matches!(plan, Plan::Guard(p) if p.is_check())
        || matches!(plan, Plan::Completions(_) | Plan::Man(_))
}

/// Runs a plan [`offline`] says needs no kernel; `tree` is the whole command line's clap
/// definition, which the completion scripts and man pages are generated from.
pub fn run_offline(
    plan: Plan,
    tree: fn() -> clap::Command,
    term: &Term,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
    match plan {
        Plan::Top(p) => top::run_live(p, term, out),
        Plan::Count(p) => count::run_live(p, term, out),
        Plan::Guard(p) => guard::check(&p, out),
        Plan::Completions(p) => completions::run(p, tree(), out),
        Plan::Man(p) => man::run(p, tree(), out),
        _ => Err(Failure::Message("this command needs the kernel".into())),
    }
}

/// True when the plan reads route netlink only: the namespace is entered, no ctnetlink
/// socket opened.
pub fn route_only(plan: &Plan) -> bool {
    matches!(plan, Plan::Guests(_))
}

/// Runs a plan [`route_only`] says needs no ctnetlink socket, in the entered namespace.
pub fn run_route(plan: Plan, out: &mut impl Write) -> Result<Outcome, Failure> {
    match plan {
        Plan::Guests(p) => guests::run(p, out),
        _ => Err(Failure::Message("this command needs the conntrack table".into())),
    }
}

/// Runs the command's plan on the open socket, printing to `out` as `term` allows.
pub fn run(
    plan: Plan,
    ct: &mut Conntrack,
    netns: Option<&str>,
    term: &Term,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
    match plan {
        Plan::Top(p) => top::run(p, ct, term, out),
        Plan::Count(p) => count::run(p, ct, term, out),
        Plan::List(p) => list::run(p, ct, out),
        Plan::Stats(p) => stats::run(p, ct, term, out),
        Plan::Create(p) => create::run(p, ct),
        Plan::Load(p) => load::run(p, ct, term),
        Plan::Doctor(p) => doctor::run(p, ct, netns, term, out),
        Plan::Tune(p) => tune::run(p, ct, out),
        Plan::Events(p) => events::run(p, out),
        Plan::Watch(p) => watch::run(p, ct, term, out),
        Plan::Evict(p) => evict::run(ct, *p, netns, term, out),
        Plan::Guard(p) => guard::run(*p, out),
        Plan::Guests(p) => guests::run(p, out),
        Plan::Completions(_) | Plan::Man(_) => {
            Err(Failure::Message("this command runs without the kernel".into()))
        }
    }
}
