//! The command line. `Cli` is the clap definition; each command is one file under `cmd/` (its
//! arguments, its plan, its run), over leaf modules that never use a command: `exit` (the
//! exit status), `parse` (typed value parsers), `select_args` (the selecting flags),
//! `report_args` (the `--json` and selection tail of `count`, `top` and `list`), `dump` (the
//! shared dump passes), `expect` (`--expect`: the expectation table), `live` (what `events` and `watch` share), `ask` (`--live`: the
//! guard's answers as tallies), `host`, `save`, `signals`, `term` (colour, width and
//! progress: what the terminal allows, decided once per run) and `progress` (the bars). Parsing reads only the command line and `CTGUARD_*` variables. A plan reads its
//! input (`--guests`, `load`'s file or stdin), looks at the paths it will write (`--save`,
//! `--persist`) and whether stdin is a terminal (`evict`), and touches nothing; only a run
//! enters the namespace, opens the socket and writes.

pub mod act;
pub mod ask;
pub mod batch;
pub mod cmd;
pub mod create_args;
pub mod discovery;
pub mod dump;
pub mod exit;
pub mod expect;
pub mod host;
pub mod live;
pub mod parse;
pub mod progress;
pub mod report_args;
pub mod save;
pub mod select_args;
pub mod set_args;
pub mod signals;
pub mod term;
pub mod tui;

use std::io::{self, BufWriter, Write};

use clap::{CommandFactory, Parser};
use ctguard::ctnetlink::Conntrack;
use ctguard::netns;

use exit::{Failure, Outcome};

/// ctguard: find who fills the conntrack table, and relieve it. Talks ctnetlink directly.
#[derive(Debug, Parser)]
#[command(name = "ctguard", version, about, after_help = exit::help(), propagate_version = true)]
pub struct Cli {
    /// Run inside this network namespace: a name under /run/netns, or a path to a netns file.
    #[arg(long, global = true, value_name = "NAME|PATH")]
    pub netns: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: cmd::Command,
}

/// What to run, fully validated.
#[derive(Debug)]
pub struct Plan {
    /// Namespace to enter first.
    netns: Option<String>,
    /// The command's plan.
    command: cmd::Plan,
}

/// Builds the plan, or says in one line what is wrong with the input.
pub fn plan(cli: Cli) -> Result<Plan, String> {
    let command = cmd::plan(cli.command, cli.netns.as_deref())?;
    if cli.netns.is_some() && cmd::asks_the_guard(&command) {
        return Err("--netns with --live: the guard guards its own namespace; point --socket \
                    at its query socket instead"
            .into());
    }
    let netns = cli.netns.or_else(|| command.netns().map(str::to_string));
    Ok(Plan { netns, command })
}

/// Runs the plan: enter the namespace, open the socket, run the command, flush its output.
pub fn run(plan: Plan) -> Result<Outcome, Failure> {
    let term = term::Term::detect();
    if cmd::offline(&plan.command) {
        let stdout = io::stdout();
        let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
        let outcome = cmd::run_offline(plan.command, Cli::command, &term, &mut out)?;
        out.flush()?;
        return Ok(outcome);
    }
    if let Some(ns) = &plan.netns {
        netns::enter(ns).map_err(|e| Failure::Message(e.to_string()))?;
    }
    let stdout = io::stdout();
    if cmd::route_only(&plan.command) {
        let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
        let outcome = cmd::run_route(plan.command, &mut out)?;
        out.flush()?;
        return Ok(outcome);
    }
    let mut ct = Conntrack::open()?;
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let outcome = cmd::run(plan.command, &mut ct, plan.netns.as_deref(), &term, &mut out)?;
    out.flush()?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_11_10_parsing_reads_no_file_the_plan_reads_the_inputs() {
        for argv in [
            &["ctguard", "top", "--guests", "/nonexistent/guests.toml"][..],
            &["ctguard", "doctor", "--guests", "/nonexistent/guests.toml"],
            &["ctguard", "load", "/nonexistent/flows.jsonl"],
            &["ctguard", "tune", "--persist", "/nonexistent/dir/ct.conf"],
        ] {
            let cli = Cli::try_parse_from(argv).expect("parsing opens nothing");
            let reason = plan(cli).expect_err("the plan reads the input or checks the path");
            assert!(reason.contains("/nonexistent/"), "{argv:?}: {reason}");
        }
    }
}
