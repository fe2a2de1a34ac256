//! What an update sets: `update`'s `--set-*` and `--label-*` flags, and a batch `-U` line's
//! (conntrack's `-m`, `-t`, `-u` renamed to them), and the [`Change`] they make: one parser for
//! both, so a batch line means what the command line means.

use clap::Args as ClapArgs;

use ctguard::ctnetlink::Change;
use ctguard::flow::Status;
use ctguard::select;

use super::parse::{self, Given};
use super::select_args::{FileCache, SelectArgs};

/// What an update sets: `update`'s flags, and a batch `-U` line's (renamed from conntrack's).
#[derive(Debug, ClapArgs)]
pub struct SetArgs {
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
}

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

impl SetArgs {
    /// What is set, as given (the audit records carry it).
    pub fn describe(&self) -> String {
        let mut text: Vec<String> = Vec::new();
        text.extend(self.set_mark.iter().map(|g| format!("--set-mark {g}")));
        text.extend(self.set_timeout.iter().map(|g| format!("--set-timeout {g}")));
        text.extend(self.set_status.iter().map(|g| format!("--set-status {g}")));
        text.extend(self.label_add.iter().map(|l| format!("--label-add {l}")));
        text.extend(self.label_del.iter().map(|l| format!("--label-del {l}")));
        text.join(" ")
    }
}

/// What the `--set-*` and `--label-*` flags ask (labels named by `select`'s label map); a
/// label added and removed at once, or one the label map does not know, is refused.
pub fn change(a: &SetArgs, select: &SelectArgs, files: &mut FileCache) -> Result<Change, String> {
    let (mut add, mut del) = (0u128, 0u128);
    if !a.label_add.is_empty() || !a.label_del.is_empty() {
        let map = files.labels(&select.labelmap)?;
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
