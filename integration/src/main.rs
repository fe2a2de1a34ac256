//! `ctguard-lab demo`: the incident replayed in namespaces for a person to watch;
//! `ctguard-lab guard-demo`: the same incident with `ctguard guard` running, which relieves it
//! unattended (issue 13);
//! `ctguard-lab seed-table FILE`: the incident's table as a `conntrack -R` file, for the bench.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ctguard_lab::replay::{self, Options};
use ctguard_lab::{guarded, seed};

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
    },
    /// The runaway guest floods with `ctguard guard` running in the host namespace: the guard
    /// caps it and evicts its flows, the healthy guests keep connecting (about a minute).
    GuardDemo {
        /// The ctguard binary to run (a release build).
        #[arg(long, env = "CTGUARD", default_value = "ctguard")]
        ctguard: PathBuf,
    },
    /// Write the incident's table (258,540 TCP entries) to FILE as `conntrack -R` input. Touches
    /// no conntrack table and needs no privileges.
    SeedTable {
        /// The file to write (replaced if it exists).
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Demo { ctguard } => {
            let opts = Options { ctguard, show_doctor_report: true, narrate_to_stderr: false };
            match replay::run_bounded(&opts) {
                Ok(_) => ExitCode::SUCCESS,
                // Dropping the replay removed the lab, also on timeout, Ctrl-C or SIGTERM.
                Err(e) => {
                    eprintln!("ctguard-lab: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::GuardDemo { ctguard } => {
            let opts = guarded::Options { ctguard, narrate_to_stderr: false };
            match guarded::run_bounded(&opts) {
                Ok(_) => ExitCode::SUCCESS,
                // The guard was stopped and the lab removed, also on timeout or a signal.
                Err(e) => {
                    eprintln!("ctguard-lab: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::SeedTable { file } => match seed::write_file(&file) {
            Ok(n) => {
                println!("{n} entries written to {}", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ctguard-lab: {e}");
                ExitCode::from(2)
            }
        },
    }
}
