//! The exit status, documented API (README and `--help`): what a run ends with, how a refusal
//! or a failure is said in one line on stderr, and the code each becomes.

use std::error::Error as _;
use std::io;
use std::process::ExitCode;

use clap::error::ErrorKind;
use ctguard::ctnetlink;
use ctguard::live::watcher;

/// The exit statuses as `--help` and the man pages say them: the code, and what it means
/// (continuation lines indented for `--help`; a man page joins them).
pub const STATUSES: [(u8, &str); 3] = [
    (0, "success"),
    (
        1,
        "nothing matched (list, count, evict); evict's question answered no; at risk or full (doctor);
     nothing created (load: every flow already there)",
    ),
    (
        2,
        "error, or bad input (refused before anything is touched); evict: also a delete the kernel
     refused, or Ctrl-C",
    ),
];

/// What the top-level `--help` and every man page say after the exit statuses.
pub const PRIVILEGES: &str =
    "Needs CAP_NET_ADMIN (run as root). Conntrack-tools users: `list` prints `conntrack -L` lines.";

/// The top-level `--help`'s closing text: the exit statuses and [`PRIVILEGES`].
pub fn help() -> String {
    let mut text = String::from("EXIT STATUS:\n");
    for (code, meaning) in STATUSES {
        text.push_str(&format!("  {code}  {meaning}\n"));
    }
    text + "\n" + PRIVILEGES
}

/// Exit status, documented in the README and `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 0.
    Ok,
    /// 1: nothing matched.
    NothingMatched,
    /// 1: trouble found (doctor: at risk or full).
    Trouble,
}

/// A failure: printed as `ctguard: <message>`, exit 2.
#[derive(Debug)]
pub enum Failure {
    /// Something the operator must fix.
    Message(String),
    /// Writing our output failed (a closed pipe is not an error).
    Output(io::Error),
}

impl From<ctnetlink::Error> for Failure {
    fn from(e: ctnetlink::Error) -> Self {
        Failure::Message(e.to_string())
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Output(e)
    }
}

impl From<watcher::Error> for Failure {
    fn from(e: watcher::Error) -> Self {
        Failure::Message(e.to_string())
    }
}

/// What a kernel refusal of a create means, for the operator.
pub fn errno_text(errno: i32) -> String {
    match errno {
        libc::EEXIST => "the flow already exists (EEXIST)".into(),
        libc::ENOMEM => "the table is full (ENOMEM)".into(),
        libc::EPERM => ctnetlink::NEEDS_CAP_NET_ADMIN.into(),
        e => io::Error::from_raw_os_error(e).to_string(),
    }
}

/// A command line clap refused, or help and version (exit 0, before any socket).
pub fn usage(e: &clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(2)
        }
        _ => refused(&reason(e)),
    }
}

/// What clap refused, in one line: a value our typed parser refused gives its own reason
/// (which names the flag and the value); clap's own message spans several lines, so an
/// operator under pressure gets its first paragraph (which names the flag, e.g. a missing
/// --timeout), joined.
pub fn reason(e: &clap::Error) -> String {
    if e.kind() == ErrorKind::ValueValidation
        && let Some(source) = e.source()
    {
        return source.to_string();
    }
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
    format!("{} (see --help)", lines.join(" ").trim_start_matches("error: "))
}

/// Bad input, refused before anything is touched: one line, exit 2.
pub fn refused(reason: &str) -> ExitCode {
    eprintln!("ctguard: {reason}");
    ExitCode::from(2)
}

/// The exit code a run ends with; a broken pipe exits 0 quietly.
pub fn status(r: Result<Outcome, Failure>) -> ExitCode {
    match r {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::NothingMatched | Outcome::Trouble) => ExitCode::from(1),
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Output(e)) => refused(&format!("writing output: {e}")),
        Err(Failure::Message(m)) => refused(&m),
    }
}
