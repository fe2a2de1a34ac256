//! Batch input in `conntrack -R` (`--load-file`) form: one command per line, `-I`/`-A`
//! (create), `-D` (delete), `-U` (update), each parsed by the same clap flags as the command
//! line (`create`'s for a create, the selecting flags for a delete), so a line means what it
//! means typed. The whole input is read and every line parsed before anything is touched; the
//! first bad line is refused with its number.
//!
//! Accepted: `-I`/`--create` and `-A`/`--add` (both create; `-A` of an existing flow leaves
//! it as it is, where conntrack updates it), `-D`/`--delete`, `-U`/`--update` (its `-m`, `-t`,
//! `-u` set the mark, timeout and status, as conntrack -U reads them; `--label-add`,
//! `--label-del`), blank lines and `#` comments. Refused: `-F`/`--flush` (no selection, no
//! identity guard: `ctguard evict --all` asks first), and every other command.

use std::sync::Arc;

use clap::Parser;
use ctguard::GuestMap;
use ctguard::bounded::read_at_most;
use ctguard::ctnetlink::Act;
use ctguard::flow::Flow;
use ctguard::select::Selector;

use super::create_args::{self, CreateArgs};
use super::exit;
use super::select_args::{FileCache, SelectArgs};
use super::set_args::{self, SetArgs};

/// At most this much batch input is read (a line is about 200 bytes: some 300,000 lines).
pub const MAX_BYTES: u64 = 64 << 20;

/// At most this many characters of a bad line's reason are shown.
const REASON_MAX: usize = 160;

/// What one line asks for.
#[derive(Debug)]
pub enum Op {
    /// `-I`/`-A`: create this flow.
    Create(Box<Flow>),
    /// `-D`: delete the flows of this selection.
    Delete(Box<Selected>),
    /// `-U`: update the flows of this selection.
    Update(Box<Selected>),
}

/// A `-D` or `-U` line's selection, and what is done to it.
#[derive(Debug)]
pub struct Selected {
    /// The flows to act on.
    pub sel: Selector,
    /// The guest map its `--guests` named (empty without).
    pub guests: Arc<GuestMap>,
    /// Its selecting flags as given (for the audit line).
    pub text: String,
    /// The delete, or the update and what it sets.
    pub act: Act,
    /// For an update: what it sets, as given (`update`'s flag names).
    pub change: Option<String>,
}

/// One command of the batch, with its line number (from 1).
#[derive(Debug)]
pub struct Line {
    /// Where it stands in the input.
    pub number: usize,
    /// What it asks for.
    pub op: Op,
}

impl Line {
    /// The refusal of a line another command runs (batch file `path`), naming that command.
    pub fn elsewhere(&self, path: &str) -> String {
        let (what, command) = match self.op {
            Op::Create(_) => ("-I/-A lines create", "load"),
            Op::Delete(_) => ("-D lines delete", "evict"),
            Op::Update(_) => ("-U lines update", "update"),
        };
        format!(
            "{path}:{}: {what}: run ctguard {command} --batch {path} for those; nothing was \
             touched",
            self.number
        )
    }
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

#[derive(Parser)]
#[command(no_binary_name = true, disable_help_flag = true, disable_version_flag = true)]
struct UpdateLine {
    #[command(flatten)]
    set: SetArgs,
    #[command(flatten)]
    select: SelectArgs,
}

/// A `-U` line's words with conntrack's setting flags in `update`'s names: in `conntrack -U`
/// `-m`, `-t` and `-u` set the mark, timeout and status (they select nothing).
fn update_words<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    rest.iter()
        .map(|w| match *w {
            "-m" | "--mark" => "--set-mark",
            "-t" | "--timeout" => "--set-timeout",
            "-u" | "--status" => "--set-status",
            other => other,
        })
        .collect()
}

/// What the lines of one batch share: the guest file of the command line (a line without
/// `--guests` uses it), and the guest maps already read.
#[derive(Default)]
pub struct Context {
    /// The command line's `--guests` (or `$CTGUARD_GUESTS`).
    pub guests: Option<String>,
    files: FileCache,
}

/// The selection of a `-D` or `-U` line, which must select something.
fn selected(
    command: &str,
    select: &mut SelectArgs,
    act: Act,
    cx: &mut Context,
) -> Result<Selected, String> {
    if select.guests.is_none() {
        select.guests.clone_from(&cx.guests);
    }
    let (sel, guests) = select.selector_with(&mut cx.files)?;
    if sel.is_empty() {
        let (what, run) = match act {
            Act::Delete => ("delete", "evict"),
            Act::Update(_) => ("update", "update"),
        };
        return Err(format!(
            "{command} without a selection would {what} every flow (ctguard {run} --all asks \
             first)"
        ));
    }
    Ok(Selected { sel, guests, text: select.describe(), act, change: None })
}

fn parse_with<T: Parser>(words: &[&str]) -> Result<T, String> {
    T::try_parse_from(words).map_err(|e| exit::reason(&e))
}

/// One line's command, parsed; `Ok(None)` for a blank line or a comment.
#[cfg(test)]
pub fn parse_line(text: &str) -> Result<Option<Op>, String> {
    parse_line_in(text, &mut Context::default())
}

/// [`parse_line`] among the lines of one batch.
fn parse_line_in(text: &str, cx: &mut Context) -> Result<Option<Op>, String> {
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
            let mut line: DeleteLine = parse_with(rest)?;
            Ok(Some(Op::Delete(Box::new(selected(command, &mut line.select, Act::Delete, cx)?))))
        }
        "-U" | "--update" => {
            let mut line: UpdateLine = parse_with(&update_words(rest))?;
            let change = set_args::change(&line.set, &line.select, &mut cx.files)?;
            if change.is_empty() {
                return Err(format!(
                    "{command} sets nothing (give -m, -t, -u, --label-add or --label-del)"
                ));
            }
            let mut u = selected(command, &mut line.select, Act::Update(change), cx)?;
            u.change = Some(line.set.describe());
            Ok(Some(Op::Update(Box::new(u))))
        }
        "-F" | "--flush" => Err(format!(
            "{command} (flush) is refused in a batch: it has no selection and no identity \
             guard (ctguard evict --all asks first)"
        )),
        other => Err(format!("'{other}' is not a batch command (accepted: -I, -A, -D, -U)")),
    }
}

/// Reads `path` (`-` for stdin, at most [`MAX_BYTES`]) and parses every line, a line without
/// `--guests` with `guests` (the command line's). The error is one line: the first bad line,
/// by number, and that nothing was touched.
pub fn read(path: &str, guests: Option<&str>) -> Result<Vec<Line>, String> {
    let read = if path == "-" {
        read_at_most(std::io::stdin(), MAX_BYTES)
    } else {
        let f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
        read_at_most(f, MAX_BYTES)
    };
    let Some(bytes) = read.map_err(|e| format!("{path}: {e}"))? else {
        return Err(format!("{path}: more than {} MiB of batch lines", MAX_BYTES >> 20));
    };
    if bytes.contains(&0) {
        return Err(format!("{path}: not text (a NUL byte); nothing was touched"));
    }
    let text = String::from_utf8(bytes).map_err(|_| format!("{path}: not text"))?;
    let mut lines = Vec::new();
    let mut cx = Context { guests: guests.map(str::to_string), ..Context::default() };
    for (i, line) in text.lines().enumerate() {
        match parse_line_in(line, &mut cx) {
            Ok(Some(op)) => lines.push(Line { number: i + 1, op }),
            Ok(None) => {}
            Err(why) => {
                // A line's words are echoed in the reason: a few, never a whole file's worth
                // (a 10 MB word, or the first line of a file that was never a batch).
                let why: String = match why.char_indices().nth(REASON_MAX) {
                    Some((cut, _)) => format!("{}…", &why[..cut]),
                    None => why,
                };
                return Err(format!("{path}:{}: {why}; nothing was touched", i + 1));
            }
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctguard::flow::{L4, Proto, ProtoState, Status, TcpState};

    fn create(line: &str) -> Flow {
        match parse_line(line) {
            Ok(Some(Op::Create(f))) => *f,
            other => panic!("{line}: {other:?}"),
        }
    }

    /// A line as `conntrack -L -o save` writes it (conntrack 1.4.7, recorded) becomes the
    /// flow it describes: the reply tuple from -r/-q and --reply-port-*, the zone in its one
    /// direction, no status bit for UNSET.
    #[test]
    fn issue_12_a_saved_line_is_the_flow_it_describes() {
        let f = create(
            "-A -t 99 -u UNSET --orig-zone 3 -s 10.0.0.1 -d 10.0.0.2 -r 10.0.0.2 -q 10.0.0.1 \
             -p tcp --sport 1 --dport 2 --reply-port-src 2 --reply-port-dst 1 --state SYN_SENT2",
        );
        assert_eq!((f.proto, f.timeout, f.status), (Proto::TCP, Some(99), Status(0)));
        assert_eq!(f.state, Some(ProtoState::Tcp(TcpState::SynSent2)));
        assert_eq!((f.orig.zone, f.reply.zone, f.zone), (Some(3), None, None));
        assert_eq!(f.orig.l4, L4::Ports { src: 1, dst: 2 });
        assert_eq!(f.reply, ctguard::flow::Tuple { zone: None, ..f.orig.inverse() });
        let g = create("-I -s 10.0.0.1 -d 10.0.0.2 -p 2 -t 30 --reply-zone 4");
        assert!(g.proto == Proto(2) && g.reply.zone == Some(4), "{g:?}");
    }

    /// A NUL byte anywhere is refused before any line is parsed: no word of a batch line can
    /// then stand for a bare NAT flag, and no reason echoes a NUL to the terminal.
    #[test]
    fn issue_12_a_nul_byte_refuses_the_whole_input() {
        let dir = std::env::temp_dir().join(format!("ctguard-batch-nul-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nul.txt");
        std::fs::write(&path, b"-D -s 10.0.0.6 --dst-nat \0\n").unwrap();
        let e = read(path.to_str().unwrap(), None).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.ends_with("not text (a NUL byte); nothing was touched"), "{e}");
        assert!(!e.contains('\0'), "{e:?}");
    }

    #[test]
    fn issue_12_comments_blanks_and_refusals() {
        assert!(matches!(parse_line("   "), Ok(None)));
        assert!(matches!(parse_line("# -D -s 10.0.0.1"), Ok(None)));
        let d = match parse_line("-D -s 10.0.0.0 --mask-src 255.255.0.0 -p tcp --state LISTEN") {
            Ok(Some(Op::Delete(d))) => d,
            other => panic!("{other:?}"),
        };
        assert_eq!(d.sel.src, vec!["10.0.0.0/16".parse().unwrap()]);
        assert_eq!(d.text, "-s 10.0.0.0 --mask-src 255.255.0.0 -p tcp --state LISTEN");
        for (line, needle) in [
            ("-U -s 10.0.0.1", "sets nothing"),
            ("-U -m 1", "without a selection would update"),
            ("-U -s 10.0.0.1 -u !ASSURED", "can only be set"),
            ("-F", "refused in a batch"),
            ("-E", "not a batch command"),
            ("-D", "without a selection"),
            ("-I -s 10.0.0.1 -d 10.0.0.2 -p udp -t 1", "needs --sport and --dport"),
            ("-D -s 10.0.0.1 --help", "unexpected argument '--help'"),
        ] {
            let e = parse_line(line).unwrap_err();
            assert!(e.contains(needle) && !e.contains('\n'), "{line}: {e}");
        }
    }
}
