//! `ctguard update`: set mark, timeout, status bits or labels on exactly the selected flows
//! (`conntrack -U`). Its flags, and a plan for `evict`'s run: the same selection, preview,
//! question, `--dry-run`, report, exit status and audit trail, with [`Act::Update`] in place
//! of the delete.
//!
//! The selecting flags are every command's (`--mark` selects, as everywhere); what is set has
//! its own `--set-*` flags. conntrack-tools' `-U -m` sets the mark and does not select by it,
//! which a script moving from `-L -m 1` to `-U -m 1` does not expect; here a flag means one
//! thing in every command.

use clap::Args as ClapArgs;

use ctguard::ctnetlink::Act;

use crate::cli::act::{self, EvictArgs, EvictPlan, RunArgs, Words};
use crate::cli::select_args::FileCache;
use crate::cli::select_args::SelectArgs;
use crate::cli::set_args::{self, SetArgs};

const UPDATE_EXIT_STATUS: &str = "\
EXIT STATUS:
  0  every selected flow is dealt with: updated, vanished by itself, or left alone because
     it changed (no longer matches) or its tuple now belongs to a new entry; a --dry-run
     that matched
  1  nothing matched, or the question was answered no
  2  bad input (nothing was touched), an audit log that cannot be written (nothing was
     touched), an update the kernel refused (e.g. --label-add on a flow created while no
     label user existed in its namespace: ENOSPC), or interrupted

Each flow is looked up again right before its update and updated only if it is still the
same entry (its CTA_ID, start time, counters) and still selected: the kernel compares CTA_ID
on a delete, not on an update.";

/// `ctguard update`: change exactly the selected flows.
#[derive(Debug, ClapArgs)]
#[command(after_help = UPDATE_EXIT_STATUS)]
pub struct Args {
    #[command(flatten)]
    pub set: SetArgs,
    /// Update by the `-U` lines of a `conntrack -R` file (`-` for stdin) instead of flags: one
    /// update per line, in order, its `-m`, `-t`, `-u`, `--label-add`, `--label-del` what it
    /// sets (as conntrack -U reads them) and its other flags the selection.
    #[arg(long, value_name = "FILE")]
    pub batch: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `update`'s words.
const UPDATE: Words = Words { command: "update", verb: "Update", done: "updated" };

/// Checks every flag (and reads the label map) before anything is touched.
pub fn plan(a: Args) -> Result<EvictPlan, String> {
    let change = set_args::change(&a.set, &a.select, &mut FileCache::default())?;
    match &a.batch {
        Some(path) if !change.is_empty() => {
            return Err(format!("--batch {path}: each -U line says what it sets"));
        }
        Some(_) => {}
        None if change.is_empty() => {
            return Err("update needs something to set: --set-mark, --set-timeout, \
                        --set-status, --label-add or --label-del"
                .into());
        }
        None => {}
    }
    let text = a.set.describe();
    let args = EvictArgs {
        expect: false,
        limit: None,
        save: None,
        batch: a.batch,
        run: a.run,
        select: a.select,
    };
    let mut p = act::plan_as(args, UPDATE)?;
    p.act = Act::Update(change);
    p.change_text = Some(text);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use ctguard::ctnetlink::Change;
    use ctguard::flow::Status;

    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        args: Args,
    }

    fn planned(argv: &[&str]) -> Result<EvictPlan, String> {
        let argv = ["ctguard", "--yes"].into_iter().chain(argv.iter().copied());
        plan(Line::try_parse_from(argv).map_err(|e| e.to_string())?.args)
    }

    fn change_of(argv: &[&str]) -> Change {
        match planned(argv).expect("a plan").act {
            Act::Update(c) => c,
            Act::Delete => panic!("an update plans an update"),
        }
    }

    #[test]
    fn issue_12_update_flags_make_one_change() {
        let c = change_of(&["-s", "10.0.0.5", "--set-mark", "0x10/0xf0", "--set-timeout", "60"]);
        assert_eq!(
            (c.mark, c.timeout, c.status, c.labels),
            (Some((0x10, 0xf0)), Some(60), 0, None)
        );
        let c = change_of(&[
            "--all",
            "--set-status",
            "ASSURED",
            "--label-add",
            "3,5",
            "--label-del",
            "1",
        ]);
        assert_eq!(c.status, Status::ASSURED);
        assert_eq!(c.labels, Some((0b101000, 0b101010)));
    }

    #[test]
    fn issue_12_update_refuses_bad_input_before_anything() {
        for (argv, why) in [
            (&["-s", "10.0.0.5"][..], "needs something to set"),
            (&["--set-mark", "1"][..], "update needs a selection"),
            (&["-s", "10.0.0.5", "--set-status", "!ASSURED"][..], "can only be set"),
            (&["-s", "10.0.0.5", "--set-status", "CONFIRMED"][..], "only ASSURED"),
            (&["-s", "10.0.0.5", "--label-add", "no-such-label"][..], "unknown label"),
            (&["-s", "10.0.0.5", "--label-add", "3", "--label-del", "3"][..], "same label"),
            (&["-s", "10.0.0.5", "--set-timeout", "1h"][..], "--set-timeout"),
        ] {
            let e = planned(argv).err().unwrap_or_default();
            assert!(e.contains(why), "{argv:?}: {e}");
        }
    }
}
