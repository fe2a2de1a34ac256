//! `ctguard tune`: recommended conntrack sysctls for this host, each with its reason;
//! `--apply` and `--persist` write them through `ctguard::tune`.

use std::io::Write;

use clap::Args as ClapArgs;
use ctguard::ctnetlink::Conntrack;
use ctguard::output::jsonl;
use ctguard::tune::ApplyOutcome;
use ctguard::tune::{self, TuneFacts, TuneReport};
use ctguard::{kernel, sysctl};

use crate::cli::exit::{Failure, Outcome};
use crate::cli::{dump, host};

/// `ctguard tune`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Write the values to /proc/sys in the target namespace where writable.
    #[arg(long)]
    pub apply: bool,
    /// Write the recommendations to this sysctl.d file.
    #[arg(long, value_name = "FILE")]
    pub persist: Option<String>,
    /// Print JSON (schema in docs/json-schema.md).
    #[arg(long)]
    pub json: bool,
}

/// A validated `tune`.
pub type Plan = Args;

/// A sysctl.d file can be written there: `tune::persist_target_problem` has no objection.
pub fn plan(a: Args) -> Result<Plan, String> {
    if let Some(p) = &a.persist
        && let Some(why) = tune::persist_target_problem(std::path::Path::new(p))
    {
        return Err(format!("--persist {p}: {why}"));
    }
    Ok(a)
}

/// Runs `ctguard tune`.
pub fn run(p: Plan, ct: &mut Conntrack, out: &mut impl Write) -> Result<Outcome, Failure> {
    let (apply, persist, json) = (p.apply, p.persist.as_deref(), p.json);
    let kernel = kernel::release();
    let ns = host::identity(kernel)?;
    let fill = dump::fill(ct)?;
    let facts = TuneFacts::read(u64::from(fill.count), u64::from(fill.max));
    let recs = tune::recommend(&facts);
    let header = format!(
        "Written by ctguard tune: conntrack sysctls for a host with {} MiB of RAM.\n\
         Load with `sysctl -p FILE`. nf_conntrack_max and nf_conntrack_buckets are global:\n\
         they take effect only from the host's initial network namespace. At boot the\n\
         nf_conntrack module must be loaded before sysctl runs (/etc/modules-load.d).",
        facts.mem_total >> 20
    );
    let text = tune::sysctl_d(&recs, kernel, &header);
    let applied = apply.then(|| {
        let steps = tune::plan_apply(&recs, ns.initial, kernel, sysctl::writable);
        tune::apply(&recs, &steps)
    });
    if let Some(path) = persist {
        tune::write_file_atomically(path, &text)
            .map_err(|e| Failure::Message(format!("--persist {path}: {e}")))?;
    }
    let report = TuneReport {
        netns: ns,
        kernel: kernel.map(|(a, b)| format!("{a}.{b}")),
        memory_bytes: facts.mem_total,
        entry_bytes: facts.entry_bytes(),
        table: fill,
        recommendations: recs,
        applied,
        persisted: persist.map(str::to_string),
    };
    if json {
        jsonl::write_line(out, &report)?;
    } else {
        out.write_all(text.as_bytes())?;
        for a in report.applied.iter().flatten() {
            eprintln!("ctguard: tune: {}: {} ({})", a.key, a.outcome, a.detail);
        }
        if let Some(p) = &report.persisted {
            eprintln!("ctguard: tune: wrote {p}");
        }
    }
    let failed: Vec<&str> = report
        .applied
        .iter()
        .flatten()
        .filter(|a| a.outcome == ApplyOutcome::Failed)
        .map(|a| a.key.as_str())
        .collect();
    if !failed.is_empty() {
        out.flush()?;
        return Err(Failure::Message(format!(
            "tune --apply: could not write {}",
            failed.join(", ")
        )));
    }
    Ok(Outcome::Ok)
}
