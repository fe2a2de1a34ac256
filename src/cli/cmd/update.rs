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

use ctguard::ctnetlink::{Act, Change};
use ctguard::flow::Status;
use ctguard::select;

use crate::cli::act::{self, EvictArgs, EvictPlan, RunArgs, Words};
use crate::cli::parse::{self, Given};
use crate::cli::select_args::SelectArgs;

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
    /// Set the mark: VALUE[/MASK], new = (old & ~MASK) ^ VALUE (conntrack -U -m).
    #[arg(long, value_name = "MARK[/MASK]", value_parser = parse::given(select::parse_mark))]
    pub set_mark: Option<Given<(u32, u32)>>,
    /// Set the timeout, in seconds from now (conntrack -U -t).
    #[arg(long, value_name = "SECS", value_parser = parse::given(timeout))]
    pub set_timeout: Option<Given<u32>>,
    /// Set status bits, comma separated: ASSURED, SEEN_REPLY, FIXED_TIMEOUT (bits can only be
    /// set; conntrack -U -u).
    #[arg(long, value_name = "LIST", value_parser = parse::given(set_status))]
    pub set_status: Option<Given<u32>>,
    /// Add a connection label: a name from the label map or a bit number (repeatable, or
    /// comma separated).
    #[arg(long, value_name = "LABEL")]
    pub label_add: Vec<String>,
    /// Remove a connection label (repeatable, or comma separated).
    #[arg(long, value_name = "LABEL")]
    pub label_del: Vec<String>,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `update`'s words.
const UPDATE: Words = Words { command: "update", verb: "Update", done: "updated" };

/// The status bits an update may set: the kernel refuses (EBUSY) a change of EXPECTED,
/// CONFIRMED or DYING, and ignores the NAT, helper and offload bits it manages itself.
const SETTABLE: u32 = Status::SEEN_REPLY | Status::ASSURED | Status::FIXED_TIMEOUT;

fn timeout(s: &str) -> Result<u32, String> {
    s.parse::<u32>().map_err(|_| format!("invalid --set-timeout '{s}' (whole seconds)"))
}

/// `--set-status LIST`: bits to set, no negation.
fn set_status(s: &str) -> Result<u32, String> {
    let (set, clear) = select::parse_status(s).map_err(|e| e.to_string())?;
    if clear != 0 {
        return Err(format!("invalid --set-status '{s}': status bits can only be set"));
    }
    if set & !SETTABLE != 0 {
        return Err(format!(
            "invalid --set-status '{s}': only ASSURED, SEEN_REPLY and FIXED_TIMEOUT can be set"
        ));
    }
    Ok(set)
}

/// Checks every flag (and reads the label map) before anything is touched.
pub fn plan(a: Args) -> Result<EvictPlan, String> {
    let change = change(&a)?;
    if change.is_empty() {
        return Err("update needs something to set: --set-mark, --set-timeout, --set-status, \
                    --label-add or --label-del"
            .into());
    }
    let mut text: Vec<String> = Vec::new();
    text.extend(a.set_mark.iter().map(|g| format!("--set-mark {g}")));
    text.extend(a.set_timeout.iter().map(|g| format!("--set-timeout {g}")));
    text.extend(a.set_status.iter().map(|g| format!("--set-status {g}")));
    text.extend(a.label_add.iter().map(|l| format!("--label-add {l}")));
    text.extend(a.label_del.iter().map(|l| format!("--label-del {l}")));
    let args = EvictArgs {
        expect: false,
        limit: None,
        save: None,
        batch: None,
        run: a.run,
        select: a.select,
    };
    let mut p = act::plan_as(args, UPDATE)?;
    p.act = Act::Update(change);
    p.change_text = Some(text.join(" "));
    Ok(p)
}

/// What the `--set-*` and `--label-*` flags ask; a label added and removed at once, or one
/// the label map does not know, is refused.
fn change(a: &Args) -> Result<Change, String> {
    let (mut add, mut del) = (0u128, 0u128);
    if !a.label_add.is_empty() || !a.label_del.is_empty() {
        let map = a.select.label_map()?;
        for l in &a.label_add {
            add |= map.bits(l).map_err(|e| format!("--label-add {l}: {e}"))?;
        }
        for l in &a.label_del {
            del |= map.bits(l).map_err(|e| format!("--label-del {l}: {e}"))?;
        }
    }
    if add & del != 0 {
        return Err("--label-add and --label-del name the same label".into());
    }
    Ok(Change {
        mark: a.set_mark.as_ref().map(|g| g.value),
        timeout: a.set_timeout.as_ref().map(|g| g.value),
        status: a.set_status.as_ref().map_or(0, |g| g.value),
        labels: (add | del != 0).then_some((add, add | del)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

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
