//! What the terminal allows, decided once per run before any command prints: colour and width
//! for stdout (only when it is a terminal), progress for stderr (only when it is one). The
//! commands get the [`Term`] as a value; nothing deeper looks at a file descriptor or at the
//! environment again.

use std::ffi::OsStr;
use std::io::{self, IsTerminal};

use ctguard::output::look::Look;

/// The run's terminal.
#[derive(Debug, Clone, Copy, Default)]
pub struct Term {
    /// How stdout's text looks.
    pub look: Look,
    /// Progress bars may be drawn on stderr (a command with `--json` still draws none).
    pub progress: bool,
}

impl Term {
    /// Looks at stdout, stderr and `NO_COLOR`/`TERM`.
    pub fn detect() -> Term {
        let stdout = io::stdout();
        let on_terminal = stdout.is_terminal();
        let no_color = std::env::var_os("NO_COLOR");
        let term = std::env::var_os("TERM");
        let colour = colour(on_terminal, no_color.as_deref(), term.as_deref());
        let width = if on_terminal { columns(&stdout) } else { None };
        Term { look: Look { colour, width }, progress: io::stderr().is_terminal() }
    }

    /// Progress for a command: not with `--json` (a script reads it; its stderr stays for
    /// errors alone).
    pub fn progress_unless(&self, json: bool) -> bool {
        self.progress && !json
    }
}

/// Colour only on a terminal that can show it, and never when `NO_COLOR` is set to anything
/// but the empty string (no-color.org) or `TERM` is `dumb`.
pub fn colour(on_terminal: bool, no_color: Option<&OsStr>, term: Option<&OsStr>) -> bool {
    on_terminal && no_color.is_none_or(OsStr::is_empty) && term != Some(OsStr::new("dumb"))
}

/// The terminal's columns (`None`: it does not say).
fn columns(stdout: &io::Stdout) -> Option<usize> {
    let size = rustix::termios::tcgetwinsize(stdout).ok()?;
    (size.ws_col > 0).then_some(usize::from(size.ws_col))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_16_colour_only_on_a_terminal_without_no_color_or_a_dumb_term() {
        let s = |v: &'static str| Some(OsStr::new(v));
        assert!(colour(true, None, s("xterm-256color")));
        assert!(colour(true, None, None), "no TERM: a terminal all the same");
        assert!(colour(true, s(""), s("xterm")), "an empty NO_COLOR is not set");
        assert!(!colour(false, None, s("xterm")), "a pipe or a file");
        assert!(!colour(true, s("1"), s("xterm")));
        assert!(!colour(true, s("0"), s("xterm")), "any value but empty turns colour off");
        assert!(!colour(true, None, s("dumb")));
    }

    #[test]
    fn issue_16_json_draws_no_progress() {
        let t = Term { look: Look::PLAIN, progress: true };
        assert!(t.progress_unless(false));
        assert!(!t.progress_unless(true));
        assert!(!Term::default().progress_unless(false));
    }
}
