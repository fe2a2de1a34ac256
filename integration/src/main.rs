//! `ctguard-lab demo`: the incident replayed in namespaces for a person to watch.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ctguard_lab::replay::{self, Options};
use tokio::signal::unix::SignalKind;

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

/// The whole replay may take this long; then it stops and cleans up.
const REPLAY_LIMIT: Duration = Duration::from_secs(300);

fn main() -> ExitCode {
    let Command::Demo { ctguard, shared } = Cli::parse().command;
    let opts = Options {
        ctguard,
        shared: shared.unwrap_or_else(ctguard_lab::shared_dir),
        show_doctor_report: true,
        narrate_to_stderr: false,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ctguard-lab: tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(SignalKind::terminate())
            .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
        tokio::select! {
            r = tokio::time::timeout(REPLAY_LIMIT, replay::run(&opts)) => {
                r.unwrap_or_else(|_| Err(format!("the replay took longer than {REPLAY_LIMIT:?}")))
            }
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
            _ = term.recv() => Err("terminated".to_string()),
        }
    });
    // Dropping the replay's future removed the lab, also on timeout, Ctrl-C or SIGTERM.
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ctguard-lab: {e}");
            ExitCode::from(1)
        }
    }
}
