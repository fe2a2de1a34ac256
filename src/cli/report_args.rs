//! The tail `count`, `top` and `list` share: `--json`, then the selecting flags. A command's
//! own flags (`--by`, `-n`, and whatever a command adds later) stay in its `Args`, before it.

use clap::Args;

use super::select_args::SelectArgs;

/// JSON or text, and which flows. `list` words its `--json` help itself (JSON Lines).
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}
