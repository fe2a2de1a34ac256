//! The `ctguard` binary: parse → plan → run → exit code. Nothing else.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::exit;

fn main() -> ExitCode {
    cli::progress::started();
    let parsed = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return exit::usage(&e),
    };
    let plan = match cli::plan(parsed) {
        Ok(p) => p,
        Err(reason) => return exit::refused(&reason),
    };
    exit::status(cli::run(plan))
}
