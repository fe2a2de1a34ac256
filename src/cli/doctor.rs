//! `doctor` and `tune`: gather the facts from the kernel, let `ctguard::doctor` and
//! `ctguard::tune` decide, print; `tune --apply` and `--persist` write through `ctguard::tune`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Instant;

use ctguard::ctnetlink::Conntrack;
use ctguard::doctor::{self, CounterWindow, DoctorReport, Facts, Inputs, LogSummary, NetnsInfo};
use ctguard::output::jsonl;
use ctguard::select::Selector;
use ctguard::stats::CpuStats;
use ctguard::tally::GroupBy;
use ctguard::tune::ApplyOutcome;
use ctguard::tune::{self, TuneFacts, TuneReport};
use ctguard::{kernel, kmsg, netns, sysctl};

use super::plan::DoctorPlan;
use super::run::{self, Failure, Outcome};

fn identity(kernel: Option<(u32, u32)>) -> Result<NetnsInfo, Failure> {
    let id = netns::identity(kernel).map_err(Failure::Message)?;
    Ok(NetnsInfo { inode: id.inode, initial: id.initial })
}

fn kmsg_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => {
            "permission denied: reading /dev/kmsg needs CAP_SYSLOG (or kernel.dmesg_restrict=0)"
                .into()
        }
        _ => e.to_string(),
    }
}

/// `ctguard doctor`.
pub fn doctor(
    ct: &mut Conntrack,
    p: DoctorPlan,
    netns_arg: Option<&str>,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
    let kernel = kernel::release();
    let ns = identity(kernel)?;
    let before = ct.cpu_stats()?;
    let start = Instant::now();
    // The dump runs inside the window: its time is watching time too.
    let by = if p.guests.is_empty() { GroupBy::Src } else { GroupBy::Guest };
    let tally = run::tally(ct, Selector::default(), by, p.guests.clone())?;
    if let Some(rest) = p.window.checked_sub(start.elapsed()) {
        std::thread::sleep(rest);
    }
    let after = ct.cpu_stats()?;
    let seconds = start.elapsed().as_secs_f64();
    let fill = run::fill(ct)?;

    // Older kernels may print the classic wording for every namespace.
    let target = kmsg::Target {
        inode: ns.inode,
        initial: ns.initial,
        names_netns: kmsg::names_netns(kernel),
    };
    let mut log = LogSummary::default();
    match kmsg::read_table_full(|line| log.add(line, &target)) {
        Ok(()) => log.readable = true,
        Err(e) => log.error = Some(kmsg_error(&e)),
    }
    let now_usec = kmsg::now_usec();

    let sysctls: BTreeMap<String, Option<u64>> = doctor::WATCHED_SYSCTLS
        .iter()
        .map(|n| (format!("net.netfilter.{n}"), sysctl::read(n)))
        .collect();
    let tune_facts = TuneFacts::read(u64::from(fill.count), u64::from(fill.max));
    let tune_lines =
        tune::recommend(&tune_facts).iter().filter(|r| r.change).map(|r| r.assignment()).collect();
    let facts = Facts {
        fill,
        counters: CounterWindow {
            before: CpuStats::sum(&before),
            after: CpuStats::sum(&after),
            seconds,
            cpus: after.len(),
        },
        established_timeout: tune_facts.established,
        log,
        now_usec,
    };
    let report = DoctorReport::new(Inputs {
        facts,
        netns: ns,
        netns_arg,
        guests_file: p.guests_file.as_deref(),
        guests: &p.guests,
        tally: &tally,
        limit: p.limit,
        sysctl: sysctls,
        tune: tune_lines,
    });
    if p.json {
        jsonl::write_line(out, &report)?;
    } else {
        report.write_text(out)?;
    }
    Ok(if report.trouble() { Outcome::Trouble } else { Outcome::Ok })
}

/// `ctguard tune`.
pub fn tune(
    ct: &mut Conntrack,
    apply: bool,
    persist: Option<&str>,
    json: bool,
    out: &mut impl Write,
) -> Result<Outcome, Failure> {
    let kernel = kernel::release();
    let ns = identity(kernel)?;
    let fill = run::fill(ct)?;
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
