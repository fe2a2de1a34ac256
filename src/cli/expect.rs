//! `--expect`: what `list`, `count` and `evict` do with the expectation table instead of the
//! flows. The selection is the flow [`Selector`] applied to each expectation's expected tuple
//! (`ctguard::expect`); its flags are checked at plan time by [`check`].

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use ctguard::GuestMap;
use ctguard::audit::Trail;
use ctguard::ctnetlink::{Conntrack, Error};
use ctguard::expect::{self, Expectation};
use ctguard::output::{expect as text, jsonl};
use ctguard::select::Selector;
use ctguard::tally::{GroupBy, Tally};
use serde::Serialize;

use super::exit::{Failure, Outcome};
use super::signals;

/// The plan-time check of an `--expect` selection (and `--by`, for `count`): a criterion
/// without meaning for expectations is refused with its flag.
pub fn check(sel: &Selector, by: Option<GroupBy>) -> Result<(), String> {
    expect::check_selector(sel)?;
    match by {
        Some(GroupBy::Guest | GroupBy::State | GroupBy::Mark | GroupBy::Zone) => Err(
            "with --expect, --by is one of src, dst, src/N, dst/N, proto (of the expected tuple), \
             helper"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// The selected expectations, in the kernel's order.
pub fn selected(ct: &mut Conntrack, sel: &Selector) -> Result<Vec<Expectation>, Failure> {
    let mut all = ct.expectations(sel.family)?;
    all.retain(|e| sel.matches(&e.as_flow()));
    Ok(all)
}

/// Writes one expectation as `conntrack -L expect` does, or as a JSON line.
fn write(out: &mut impl Write, e: &Expectation, json: bool) -> io::Result<()> {
    if json { text::write_json(out, e) } else { text::write_line(out, e) }
}

/// `list --expect`: exit 1 when nothing matched.
pub fn list(
    ct: &mut Conntrack,
    sel: &Selector,
    json: bool,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
    let shown = selected(ct, sel)?;
    for e in &shown {
        write(out, e, json)?;
    }
    if io::IsTerminal::is_terminal(&io::stderr()) {
        eprintln!("ctguard: {} expectations shown", shown.len());
    }
    Ok(if shown.is_empty() { Outcome::NothingMatched } else { Outcome::Ok })
}

/// `count --expect`: the selected expectations counted as flows of their expected tuple.
pub fn tally(ct: &mut Conntrack, sel: &Selector, by: GroupBy) -> Result<Tally, Failure> {
    let mut tally = Tally::new(by, GuestMap::new());
    for e in selected(ct, sel)? {
        tally.add(&e.as_flow());
    }
    Ok(tally)
}

/// What `evict --expect` needs of its plan.
pub struct EvictExpect<'a> {
    /// Which expectations.
    pub sel: &'a Selector,
    /// No question.
    pub yes: bool,
    /// Report only.
    pub dry_run: bool,
    /// With `dry_run`: print every selected expectation.
    pub list: bool,
    /// JSON report (and JSON lines with `list`).
    pub json: bool,
}

/// The `evict --expect` report (`--json`: one line; the audit outcome carries the same).
#[derive(Debug, Default, Serialize)]
pub struct ExpectReport {
    /// Always `expect`: the table this report is about.
    pub table: &'static str,
    /// Nothing was deleted on purpose.
    pub dry_run: bool,
    /// Expectations the selection matched.
    pub matched: u64,
    /// Of them, chosen for deletion (all of them: there is no `--limit`).
    pub selected: u64,
    /// Deleted by this run.
    pub deleted: u64,
    /// Gone before their delete, or replaced by another expectation on the same tuple
    /// (ENOENT: the kernel's id check left the new one alone).
    pub vanished: u64,
    /// Refused with another errno.
    pub failed: u64,
    /// Not sent because a signal stopped the run.
    pub not_attempted: u64,
    /// A stopping signal ended the run.
    pub interrupted: bool,
}

impl ExpectReport {
    fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        if self.dry_run {
            return writeln!(out, "dry run: {} expectations would be deleted", self.selected);
        }
        writeln!(
            out,
            "deleted {} of {} selected expectations ({} vanished, {} failed, {} not attempted)",
            self.deleted, self.selected, self.vanished, self.failed, self.not_attempted
        )
    }
}

/// Samples shown before the question.
const SAMPLES: usize = 5;

/// `evict --expect`: select, preview, ask (`confirm`), write the audit intent, delete each
/// selected expectation by tuple and id, report. Exit statuses as `evict`'s.
pub fn evict(
    ct: &mut Conntrack,
    p: &EvictExpect<'_>,
    stop: &AtomicBool,
    trail: &mut Trail,
    confirm: impl FnOnce(u64) -> bool,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
    let chosen = selected(ct, p.sel)?;
    let n = chosen.len() as u64;
    if stop.load(Ordering::Relaxed) {
        return Err(interrupted(0, n));
    }
    if chosen.is_empty() {
        let report = ExpectReport { table: "expect", dry_run: p.dry_run, ..Default::default() };
        if p.json {
            jsonl::write_line(out, &report)?;
        } else {
            eprintln!("ctguard: no expectation matches; nothing deleted");
        }
        return Ok(Outcome::NothingMatched);
    }
    let mut preview = Vec::new();
    writeln!(preview, "{n} expectations match")?;
    writeln!(preview, "  sample:")?;
    for e in chosen.iter().take(SAMPLES) {
        write!(preview, "    ")?;
        text::write_line(&mut preview, e)?;
    }
    let mut report =
        ExpectReport { table: "expect", matched: n, selected: n, ..Default::default() };
    if p.dry_run {
        report.dry_run = true;
        if p.list {
            for e in &chosen {
                write(out, e, p.json)?;
            }
        }
        if p.list || p.json {
            io::stderr().write_all(&preview)?;
        } else {
            out.write_all(&preview)?;
        }
        print(out, p, &report)?;
        return Ok(Outcome::Ok);
    }
    if !p.yes {
        io::stderr().write_all(&preview)?;
        if !confirm(n) {
            if stop.load(Ordering::Relaxed) {
                return Err(interrupted(0, n));
            }
            eprintln!("ctguard: nothing deleted");
            return Ok(Outcome::NothingMatched);
        }
    }
    trail.intent(Some(n)).map_err(|e| Failure::Message(format!("{e}; nothing was deleted")))?;
    let mut missed = Vec::new();
    for (i, e) in chosen.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            report.interrupted = true;
            report.not_attempted = n - i as u64;
            break;
        }
        match ct.delete_expectation(e) {
            Ok(()) => report.deleted += 1,
            Err(Error::Kernel { errno: libc::ENOENT, .. }) => {
                report.vanished += 1;
                missed.push((e.id, e.tuple));
            }
            Err(Error::Kernel { errno, .. }) if errno != libc::EPERM => {
                report.failed += 1;
                let mut shown = Vec::new();
                text::write_line(&mut shown, e)?;
                eprintln!(
                    "ctguard: could not delete expectation {}: {} (errno {errno})",
                    String::from_utf8_lossy(&shown).trim_end(),
                    io::Error::from_raw_os_error(errno)
                );
            }
            Err(other) => {
                report.not_attempted = n - i as u64;
                let _ = trail.outcome(&report, signals::caught(), Some(&other.to_string()));
                return Err(other.into());
            }
        }
    }
    // ENOENT is also the answer when the kernel looked in the wrong zone: a dump does not say
    // an expectation's zone, and a delete without one looks in zone 0. One more dump tells
    // those (still there, same id) from the ones that really went.
    if !missed.is_empty() {
        for e in ct.expectations(p.sel.family)? {
            if missed.contains(&(e.id, e.tuple)) {
                report.vanished -= 1;
                report.failed += 1;
                let mut shown = Vec::new();
                text::write_line(&mut shown, &e)?;
                eprintln!(
                    "ctguard: could not delete expectation {}: not found in zone 0 (its master \
                     is in another zone, which the kernel's dump does not report)",
                    String::from_utf8_lossy(&shown).trim_end()
                );
            }
        }
    }
    if let Err(e) = trail.outcome(&report, signals::caught(), None) {
        eprintln!("ctguard: warning: {e} (the eviction itself is done)");
    }
    print(out, p, &report)?;
    if report.interrupted {
        return Err(interrupted(report.not_attempted, n));
    }
    if report.failed > 0 {
        return Err(Failure::Message(format!(
            "{} of {n} selected expectations could not be deleted",
            report.failed
        )));
    }
    Ok(Outcome::Ok)
}

fn interrupted(not_attempted: u64, selected: u64) -> Failure {
    let by = signals::caught().map(|s| format!(" by {s}")).unwrap_or_default();
    if not_attempted == 0 {
        Failure::Message(format!("interrupted{by}; nothing was deleted"))
    } else {
        Failure::Message(format!(
            "interrupted{by}: {not_attempted} of {selected} selected expectations not attempted"
        ))
    }
}

fn print(out: &mut impl Write, p: &EvictExpect<'_>, r: &ExpectReport) -> io::Result<()> {
    if p.json {
        jsonl::write_line(out, r)
    } else if p.list {
        r.write_text(&mut io::stderr())
    } else {
        r.write_text(out)
    }
}
