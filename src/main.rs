//! The `ctguard` binary: parse → plan → run → exit code. Nothing else.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use cli::run::{Failure, Outcome};

fn main() -> ExitCode {
    let parsed = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(2);
        }
        Err(e) => {
            // clap's message spans several lines; an operator under pressure gets one: the first
            // paragraph (which names the flag, e.g. a missing --timeout), joined.
            let text = e.to_string();
            let reason: Vec<&str> =
                text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
            let reason = reason.join(" ");
            eprintln!("ctguard: {} (see --help)", reason.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let plan = match cli::plan::plan(parsed) {
        Ok(p) => p,
        Err(reason) => {
            eprintln!("ctguard: {reason}");
            return ExitCode::from(2);
        }
    };
    match cli::run::run(plan) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::NothingMatched) => ExitCode::from(1),
        Ok(Outcome::Trouble) => ExitCode::from(1),
        Err(Failure::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Output(e)) => {
            eprintln!("ctguard: writing output: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Message(m)) => {
            eprintln!("ctguard: {m}");
            ExitCode::from(2)
        }
    }
}
