//! `ctguard-lab demo`: the incident replayed in namespaces for a person to watch.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ctguard_lab::replay::{self, Options};

/// The hypervisor lab: replays the conntrack table-full incident in network namespaces
/// (ctg-lab-<pid>-*), and removes them again. Needs root.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay the incident step by step, narrated with timings (about a minute).
    Demo {
        /// The ctguard binary to run.
        #[arg(long, env = "CTGUARD", default_value = "ctguard")]
        ctguard: PathBuf,
        /// The shared folder with bench/seed_table.py (default: shared/ beside the repository).
        #[arg(long, env = "CTGUARD_SHARED")]
        shared: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let Command::Demo { ctguard, shared } = Cli::parse().command;
    let opts = Options {
        ctguard,
        shared: shared.unwrap_or_else(ctguard_lab::shared_dir),
        show_doctor_report: true,
        narrate_to_stderr: false,
    };
    let result = replay::run_bounded(&opts);
    match result {
        Ok(_) => ExitCode::SUCCESS,
        // Dropping the replay removed the lab, also on timeout, Ctrl-C or SIGTERM.
        Err(e) => {
            eprintln!("ctguard-lab: {e}");
            ExitCode::from(1)
        }
    }
}
