//! How text output looks: plain (files, pipes, tests, the default of every writer here), or
//! for a terminal, with colour on the few things an operator must see at a glance (doctor's
//! verdict, the table's fill, the top offender) and tables fitted to its width. The binary
//! decides once, from its stdout and the environment, and hands the [`Look`] down.

use std::fmt;

use anstyle::{AnsiColor, Style};

use crate::doctor::{AT_RISK_FILL, DROP_MEANS_FULL, Verdict};

/// Colour or not, and the width a table must fit (`None`: as wide as its cells).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Look {
    /// Colour escapes around the verdict, the fill and the top offender.
    pub colour: bool,
    /// The terminal's columns.
    pub width: Option<usize>,
}

impl Look {
    /// No escape, no fitting: the bytes a pipe, a file and the tests get.
    pub const PLAIN: Look = Look { colour: false, width: None };

    /// `text` in `style` when in colour, else `text` alone.
    pub fn paint<D: fmt::Display>(&self, style: Style, text: D) -> Painted<D> {
        Painted { style: self.colour.then_some(style), text }
    }
}

/// The style of the top offender's name: bold, in the fill's colour once the table is at risk
/// (`None`: the fill is not known, bold alone).
pub fn offender(fill_percent: Option<f64>) -> Style {
    match fill_percent.map(Level::of_fill) {
        Some(level @ (Level::AtRisk | Level::Full)) => level.style().bold(),
        _ => Style::new().bold(),
    }
}

/// How bad a reading is, the one scale behind every colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Below doctor's "at risk": green.
    Fine,
    /// Doctor's "at risk": yellow.
    AtRisk,
    /// Doctor's "full": red.
    Full,
}

impl Level {
    /// A fill's level: at risk from [`AT_RISK_FILL`], full from [`DROP_MEANS_FULL`].
    pub fn of_fill(percent: f64) -> Level {
        if percent >= DROP_MEANS_FULL {
            Level::Full
        } else if percent >= AT_RISK_FILL {
            Level::AtRisk
        } else {
            Level::Fine
        }
    }

    /// A verdict's level.
    pub fn of_verdict(v: Verdict) -> Level {
        match v {
            Verdict::Healthy => Level::Fine,
            Verdict::AtRisk => Level::AtRisk,
            Verdict::Full => Level::Full,
        }
    }

    /// Green, yellow, red: a fill's from doctor's thresholds, the watch view's gauge's too.
    pub fn style(self) -> Style {
        let colour = match self {
            Level::Fine => AnsiColor::Green,
            Level::AtRisk => AnsiColor::Yellow,
            Level::Full => AnsiColor::Red,
        };
        Style::new().fg_color(Some(colour.into()))
    }
}

/// Text that prints with its style's escapes around it, or bare.
pub struct Painted<D> {
    style: Option<Style>,
    text: D,
}

impl<D: fmt::Display> fmt::Display for Painted<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.style {
            Some(s) => write!(f, "{s}{}{s:#}", self.text),
            None => write!(f, "{}", self.text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_16_fill_levels_follow_doctors_thresholds() {
        assert_eq!(Level::of_fill(0.0), Level::Fine);
        assert_eq!(Level::of_fill(AT_RISK_FILL - 0.1), Level::Fine);
        assert_eq!(Level::of_fill(AT_RISK_FILL), Level::AtRisk);
        assert_eq!(Level::of_fill(DROP_MEANS_FULL - 0.1), Level::AtRisk);
        assert_eq!(Level::of_fill(DROP_MEANS_FULL), Level::Full);
        assert_eq!(Level::of_fill(100.0), Level::Full);
        assert_eq!(Level::of_verdict(Verdict::AtRisk), Level::of_fill(85.0));
    }

    #[test]
    fn issue_16_plain_paints_nothing_colour_wraps_in_sgr() {
        let style = Level::Full.style();
        assert_eq!(Look::PLAIN.paint(style, "95.0% full").to_string(), "95.0% full");
        let on = Look { colour: true, width: None };
        // SGR 31 (red), the text, SGR 0 (reset).
        assert_eq!(on.paint(style, "95.0% full").to_string(), "\x1b[31m95.0% full\x1b[0m");
        assert_eq!(on.paint(Level::Fine.style(), "x").to_string(), "\x1b[32mx\x1b[0m");
        assert_eq!(on.paint(Level::AtRisk.style(), "x").to_string(), "\x1b[33mx\x1b[0m");
        assert_eq!(offender(None), Style::new().bold());
        assert_eq!(offender(Some(10.0)), Style::new().bold());
        assert_eq!(offender(Some(92.0)), Level::Full.style().bold());
    }
}
