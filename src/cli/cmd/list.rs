//! `ctguard list`: the selected flows as `conntrack -L` lines, or as JSON Lines.

use std::io::{self, IsTerminal, Write};
use std::ops::ControlFlow;

use clap::Args as ClapArgs;
use ctguard::connlabel::LabelMap;
use ctguard::ctnetlink::Conntrack;
use ctguard::output::{conntrack as ct_text, json};
use ctguard::select::Selector;

use crate::cli::discovery::Pending;
use crate::cli::exit::{Failure, Outcome};
use crate::cli::report_args::ReportArgs;
use crate::cli::select_args::Selection;
use crate::cli::{dump, expect};

/// `ctguard list`.
#[derive(Debug, ClapArgs)]
#[command(mut_arg("json", |a| a.help(JSON_HELP)))]
pub struct Args {
    /// The expectation table instead of the flows (`conntrack -L expect`); selects by -s, -d,
    /// -p, --sport, --dport, -f of the expected tuple.
    #[arg(long)]
    pub expect: bool,
    /// `labels`: print the connection labels the label map names (conntrack -L -o labels;
    /// printed with --label too, as conntrack does).
    #[arg(short = 'o', long = "output", value_name = "FORMAT", value_parser = ["labels"])]
    pub output: Option<String>,
    #[command(flatten)]
    pub report: ReportArgs,
}

/// `list --json`'s help: one record per flow (no full stop, as clap shows a doc comment).
const JSON_HELP: &str = "Print JSON Lines, one flow per line (schema in docs/json-schema.md)";

/// A validated `list`.
#[derive(Debug)]
pub struct Plan {
    sel: Selector,
    /// `--guest` names the host must resolve.
    pending: Pending,
    json: bool,
    expect: bool,
    /// `-o labels`: the label map naming them.
    labels: Option<LabelMap>,
}

/// Checks the flags; reads the guest file.
pub fn plan(a: Args) -> Result<Plan, String> {
    let Selection { sel, pending, .. } = a.report.select.selection()?;
    if a.expect {
        if a.output.is_some() {
            return Err("-o labels is for flows; expectations carry no labels".into());
        }
        expect::check(&sel, None)?;
    }
    let labels = match a.output {
        Some(_) if a.report.json => {
            return Err("-o labels is for the text lines; --json always carries the labels".into());
        }
        // conntrack prints the labels whenever it has loaded its label map: for -o labels,
        // and for -l.
        Some(_) => Some(a.report.select.label_map()?),
        None if !a.report.select.label.is_empty() && !a.report.json => {
            Some(a.report.select.label_map()?)
        }
        None => None,
    };
    Ok(Plan { sel, pending, json: a.report.json, expect: a.expect, labels })
}

/// Runs `list`: streams the dump to `out`; exit 1 when nothing matched.
pub fn run(mut p: Plan, ct: &mut Conntrack, out: &mut impl Write) -> Result<Outcome, Failure> {
    let mut guests = Default::default();
    std::mem::take(&mut p.pending).resolve(&mut p.sel, &mut guests, false)?;
    if p.expect {
        return expect::list(ct, &p.sel, p.json, out);
    }
    let sel = dump::with_timeouts(p.sel);
    let mut shown = 0u64;
    let mut err = None;
    let summary = ct.dump(&sel.kernel_filter(), |flow| {
        if !sel.matches(flow) {
            return ControlFlow::Continue(());
        }
        shown += 1;
        let r = match (&p.labels, p.json) {
            (_, true) => json::write_flow(out, flow),
            (Some(map), false) => ct_text::write_line_labelled(out, flow, map),
            (None, false) => ct_text::write_line(out, flow),
        };
        match r {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                err = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = err {
        return Err(Failure::Output(e));
    }
    dump::warn_inconsistent(&summary);
    if io::stderr().is_terminal() {
        eprintln!("ctguard: {shown} flow entries shown");
    }
    Ok(if shown == 0 { Outcome::NothingMatched } else { Outcome::Ok })
}
