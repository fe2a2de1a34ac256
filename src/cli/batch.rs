//! Batch input in `conntrack -R` (`--load-file`) form: one command per line, `-I`/`-A`
//! (create), `-D` (delete), `-U` (update), each parsed by the same clap flags as the command
//! line (`create`'s for a create, the selecting flags for a delete), so a line means what it
//! means typed. The whole input is read and every line parsed before anything is touched; the
//! first bad line is refused with its number.
//!
//! Accepted: `-I`/`--create` and `-A`/`--add` (both create; `-A` of an existing flow leaves
//! it as it is, where conntrack updates it), `-D`/`--delete`, blank lines and `#` comments.
//! Refused: `-U`/`--update` (not supported yet), `-F`/`--flush` (no selection, no identity
//! guard: `ctguard evict --all` asks first), and every other command.

use std::io::Read;

use std::sync::Arc;

use clap::Parser;
use ctguard::GuestMap;
use ctguard::flow::Flow;
use ctguard::select::Selector;

use super::create_args::{self, CreateArgs};
use super::exit;
use super::select_args::SelectArgs;

/// At most this much batch input is read (a line is about 200 bytes: some 300,000 lines).
pub const MAX_BYTES: u64 = 64 << 20;

/// What one line asks for.
#[derive(Debug)]
pub enum Op {
    /// `-I`/`-A`: create this flow.
    Create(Box<Flow>),
    /// `-D`: delete the flows of this selection.
    Delete(Box<Delete>),
}

/// A `-D` line's selection.
#[derive(Debug)]
pub struct Delete {
    /// The flows to delete.
    pub sel: Selector,
    /// The guest map its `--guests` named (empty without).
    pub guests: Arc<GuestMap>,
    /// Its selecting flags as given (for the audit line).
    pub text: String,
}

/// One command of the batch, with its line number (from 1).
#[derive(Debug)]
pub struct Line {
    /// Where it stands in the input.
    pub number: usize,
    /// What it asks for.
    pub op: Op,
}

#[derive(Parser)]
#[command(no_binary_name = true, disable_help_flag = true, disable_version_flag = true)]
struct CreateLine {
    #[command(flatten)]
    flow: CreateArgs,
}

#[derive(Parser)]
#[command(no_binary_name = true, disable_help_flag = true, disable_version_flag = true)]
struct DeleteLine {
    #[command(flatten)]
    select: SelectArgs,
}

fn parse_with<T: Parser>(words: &[&str]) -> Result<T, String> {
    T::try_parse_from(words).map_err(|e| exit::reason(&e))
}

/// One line's command, parsed; `Ok(None)` for a blank line or a comment.
pub fn parse_line(text: &str) -> Result<Option<Op>, String> {
    let text = text.trim();
    if text.is_empty() || text.starts_with('#') {
        return Ok(None);
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let (command, rest) = words.split_first().ok_or("an empty line")?;
    match *command {
        "-I" | "--create" | "-A" | "--add" => {
            let line: CreateLine = parse_with(rest)?;
            Ok(Some(Op::Create(Box::new(create_args::flow(line.flow)?))))
        }
        "-D" | "--delete" => {
            let line: DeleteLine = parse_with(rest)?;
            let (sel, guests) = line.select.selector()?;
            if sel.is_empty() {
                return Err(format!(
                    "{command} without a selection would delete every flow (ctguard evict \
                     --all asks first)"
                ));
            }
            let text = line.select.describe();
            Ok(Some(Op::Delete(Box::new(Delete { sel, guests, text }))))
        }
        // The update engine plugs in here: parse `rest` with its flags, return its Op.
        "-U" | "--update" => Err(format!("{command} (update) is not supported yet")),
        "-F" | "--flush" => Err(format!(
            "{command} (flush) is refused in a batch: it has no selection and no identity \
             guard (ctguard evict --all asks first)"
        )),
        other => Err(format!(
            "'{other}' is not a batch command (accepted: -I, -A, -D; -U is not supported yet)"
        )),
    }
}

/// Reads `path` (`-` for stdin, at most [`MAX_BYTES`]) and parses every line. The error is
/// one line: the first bad line, by number, and that nothing was touched.
pub fn read(path: &str) -> Result<Vec<Line>, String> {
    let mut bytes = Vec::new();
    let limit = MAX_BYTES + 1;
    let read = if path == "-" {
        std::io::stdin().take(limit).read_to_end(&mut bytes)
    } else {
        let f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
        f.take(limit).read_to_end(&mut bytes)
    };
    read.map_err(|e| format!("{path}: {e}"))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!("{path}: more than {} MiB of batch lines", MAX_BYTES >> 20));
    }
    let text = String::from_utf8(bytes).map_err(|_| format!("{path}: not text"))?;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some(op)) => lines.push(Line { number: i + 1, op }),
            Ok(None) => {}
            Err(why) => return Err(format!("{path}:{}: {why}; nothing was touched", i + 1)),
        }
    }
    Ok(lines)
}
