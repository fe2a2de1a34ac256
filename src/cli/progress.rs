//! Progress bars on stderr for long work: `load`, `evict`, the dump behind `top` and `count`.
//! Drawn only when the run's [`Term`](super::term::Term) allows it (stderr a terminal, no
//! `--json`), and only once the command has run for a second (the operator has waited that
//! long, whatever part of it the parsing or the dump took): a quick command prints exactly
//! what it always did. A bar is cleared when it is dropped, so whatever follows (the table,
//! the report, an error) starts on a clean line.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A command shorter than this shows no bar.
const QUIET_FOR: Duration = Duration::from_secs(1);

/// When the command started: [`started`] called first thing in `main`, or else by the first bar.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// Notes that the command starts now (first thing in `main`); the bars count from it.
pub fn started() -> Instant {
    *STARTED.get_or_init(Instant::now)
}

/// `load`: flows created of those in the file.
pub const LOAD: &str = "ctguard: load: {pos}/{len} flows created ({per_sec:0}) [{wide_bar}]";
/// The dump behind `top`: entries seen of the table's count.
pub const DUMP_OF: &str = "ctguard: dump: {pos}/{len} entries ({per_sec:0}) [{wide_bar}]";
/// The dump behind `count`: entries seen.
pub const DUMP: &str = "ctguard: dump: {pos} entries ({per_sec:0})";

/// A bar that may be off; every call on an off bar does nothing.
pub struct Bar {
    bar: Option<ProgressBar>,
    started: Instant,
    shown: bool,
}

impl Bar {
    /// No bar.
    pub fn off() -> Bar {
        Bar { bar: None, started: Instant::now(), shown: false }
    }

    /// A bar with an indicatif `template` (`{pos}`, `{len}`, `{per_sec}`, `{eta}`, ...), of
    /// `len` steps when known, drawn once the command has run a second; none unless `on`.
    pub fn new(on: bool, template: &str, len: Option<u64>) -> Bar {
        let Ok(style) = ProgressStyle::with_template(template) else { return Bar::off() };
        if !on {
            return Bar::off();
        }
        // Hidden at first: the rate is still measured from the start.
        let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::hidden())
            .with_style(style.progress_chars("=> "));
        Bar { bar: Some(bar), started: started(), shown: false }
    }

    /// The work done so far.
    pub fn set(&mut self, pos: u64) {
        let Some(bar) = &self.bar else { return };
        bar.set_position(pos);
        if !self.shown && self.started.elapsed() >= QUIET_FOR {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            // Drawn now, not at the next step: the step that shows it may be the last.
            bar.tick();
            self.shown = true;
        }
    }

    /// The work to do, when it grows as it is found.
    pub fn set_len(&mut self, len: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(len);
        }
    }

    /// Runs `f` (a line on stderr) with the bar out of the way, then draws it again.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_16_an_off_bar_has_nothing_to_draw() {
        let mut bar = Bar::new(false, "{pos}/{len}", Some(10));
        assert!(bar.bar.is_none());
        bar.set(5);
        assert!(!bar.shown);
    }

    #[test]
    fn issue_16_the_templates_are_indicatifs() {
        for t in [LOAD, DUMP_OF, DUMP] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
            assert!(Bar::new(true, t, Some(1)).bar.is_some(), "{t}");
        }
    }

    #[test]
    fn issue_16_a_bar_stays_hidden_for_the_first_second() {
        let mut bar = Bar::new(true, "{pos}", None);
        assert_eq!(bar.started, started(), "it counts from the command's start");
        // As if the command had just started (this test binary may have run for longer).
        bar.started = Instant::now();
        bar.set(1);
        assert!(!bar.shown, "drawn before a second passed");
        bar.started -= QUIET_FOR;
        bar.set(2);
        assert!(bar.shown);
        assert_eq!(bar.bar.as_ref().map(ProgressBar::position), Some(2));
    }
}
