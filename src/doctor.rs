//! `ctguard doctor`: the write-up's whole investigation as one verdict with next steps.
//!
//! The facts (table fill, per-CPU counters sampled twice, the kernel log, the top owners,
//! the sysctls) are gathered by the binary; everything here is pure: [`verdict`] decides
//! healthy / at risk / full, [`Actions`] builds the commands to run, [`DoctorReport`] is the
//! `--json` document and the text an operator reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::kmsg::{Attribution, TableFullLine, Target};
use crate::output::report::{Fill, Group};
use crate::stats::CpuStats;
use crate::tally::column_name;

/// At risk at this fill, whatever else holds: a burst of a few thousand flows from one guest
/// then fills the table before anyone looks.
pub const AT_RISK_FILL: f64 = 80.0;
/// An ESTABLISHED timeout this long (a day or more; the default is 5 days) means the table
/// drains only by deletes: the kernel never early-drops ESTABLISHED entries.
pub const LONG_ESTABLISHED: u64 = 86_400;
/// ...and with such a timeout, half full is already at risk: one guest doubling its
/// connections fills the table, and nothing frees it.
pub const LONG_ESTABLISHED_FILL: f64 = 50.0;
/// `drop` also counts packets a protocol tracker refused and failed allocations; it means a
/// full table when the table is this full (at the limit, entries come and go in the window).
pub const DROP_MEANS_FULL: f64 = 90.0;
/// A "table full" line for this namespace younger than this (seconds), with the table still
/// at least [`STILL_FULL`] % full, is full now even if nothing dropped inside the window (the
/// guest that filled it paused): the kernel's GC also treats 95 % as "near full".
pub const JUST_DROPPED: u64 = 60;
/// See [`JUST_DROPPED`].
pub const STILL_FULL: f64 = 95.0;
/// A "table full" kernel line younger than this (seconds) means the table was full recently.
pub const RECENT_LOG: u64 = 600;

/// The sysctls doctor reports (names under `net.netfilter.`).
pub const WATCHED_SYSCTLS: [&str; 11] = [
    "nf_conntrack_max",
    "nf_conntrack_buckets",
    "nf_conntrack_count",
    "nf_conntrack_tcp_timeout_established",
    "nf_conntrack_tcp_timeout_time_wait",
    "nf_conntrack_tcp_timeout_close_wait",
    "nf_conntrack_tcp_timeout_fin_wait",
    "nf_conntrack_events",
    "nf_conntrack_acct",
    "nf_conntrack_timestamp",
    "nf_conntrack_tcp_loose",
];

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Nothing to do.
    Healthy,
    /// Not dropping yet, but close to it or unable to drain.
    AtRisk,
    /// At its limit now: new flows are dropped or survive only by early drop.
    Full,
}

impl Verdict {
    /// As in JSON: `healthy`, `at-risk`, `full`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::AtRisk => "at-risk",
            Verdict::Full => "full",
        }
    }
}

/// The per-CPU counters, summed over CPUs, at the start and the end of the window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CounterWindow {
    /// Sums at the start.
    pub before: CpuStats,
    /// Sums at the end.
    pub after: CpuStats,
    /// Seconds between the two samples.
    pub seconds: f64,
    /// CPUs that reported.
    pub cpus: usize,
}

/// Sums per-CPU counters.
pub fn sum(cpus: &[CpuStats]) -> CpuStats {
    let mut s = CpuStats::default();
    for c in cpus {
        s.add(c);
    }
    s
}

impl CounterWindow {
    /// How much each counter rose (the kernel's u32 counters wrap).
    pub fn delta(&self) -> BTreeMap<String, u64> {
        self.before
            .fields()
            .iter()
            .zip(self.after.fields())
            .map(|((name, b), (_, a))| (name.to_string(), u64::from(a.wrapping_sub(*b))))
            .collect()
    }

    fn rose(&self, name: &str) -> u64 {
        self.delta().get(name).copied().unwrap_or(0)
    }
}

/// The kernel log's "table full" lines, attributed to the target namespace.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogSummary {
    /// `/dev/kmsg` could be read; else `error` says why.
    pub readable: bool,
    /// Why it could not.
    pub error: Option<String>,
    /// Lines for the target namespace.
    pub ours: u64,
    /// The newest of them.
    pub last: Option<TableFullLine>,
    /// Lines naming another namespace.
    pub other: u64,
    /// Classic lines on a kernel that does not name namespaces: possibly ours.
    pub unattributed: u64,
    /// The newest unattributed line.
    pub last_unattributed: Option<TableFullLine>,
}

impl LogSummary {
    /// Counts one line.
    pub fn add(&mut self, line: TableFullLine, target: &Target) {
        match target.attribute(&line) {
            Attribution::Ours => {
                self.ours += 1;
                self.last = Some(line);
            }
            Attribution::Other => self.other += 1,
            Attribution::Unattributed => {
                self.unattributed += 1;
                self.last_unattributed = Some(line);
            }
        }
    }
}

/// What the verdict is decided from.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Count, max, fill.
    pub fill: Fill,
    /// The counters over the window.
    pub counters: CounterWindow,
    /// `nf_conntrack_tcp_timeout_established` of the namespace.
    pub established_timeout: Option<u64>,
    /// The kernel log.
    pub log: LogSummary,
    /// Now, microseconds on the kernel log's clock.
    pub now_usec: u64,
}

fn age_secs(line: &TableFullLine, now_usec: u64) -> u64 {
    now_usec.saturating_sub(line.usec) / 1_000_000
}

/// The verdict and the reasons for it, worst first.
pub fn verdict(f: &Facts) -> (Verdict, Vec<String>) {
    let mut full = Vec::new();
    let mut risk = Vec::new();
    let secs = f.counters.seconds;
    let fill = f.fill.fill_percent;
    let drop = f.counters.rose("drop");
    if drop > 0 && fill >= DROP_MEANS_FULL {
        full.push(format!(
            "drop rose by {drop} in {secs:.1} s: new flows are dropped now (the table is full)"
        ));
    } else if drop > 0 {
        risk.push(format!(
            "drop rose by {drop} in {secs:.1} s with the table only {fill:.1}% full: a protocol \
             tracker or a failed allocation dropped packets, not a full table"
        ));
    }
    let early = f.counters.rose("early_drop");
    if early > 0 {
        full.push(format!(
            "early_drop rose by {early} in {secs:.1} s: the table is at its limit; new flows \
             get in only by evicting unreplied entries"
        ));
    }
    let (count, max) = (u64::from(f.fill.count), u64::from(f.fill.max));
    if max > 0 && count >= max {
        full.push(format!("{count} of {max} entries: the table is full"));
    }
    if fill >= AT_RISK_FILL && count < max {
        risk.push(format!("the table is {fill:.1}% full (at risk from {AT_RISK_FILL:.0}%)"));
    }
    if let Some(est) = f.established_timeout
        && est >= LONG_ESTABLISHED
        && (LONG_ESTABLISHED_FILL..AT_RISK_FILL).contains(&fill)
    {
        risk.push(format!(
            "the table is {fill:.1}% full and ESTABLISHED entries live {est} s: the kernel \
             never early-drops them, so only deletes or that timeout free the table"
        ));
    }
    let failed = f.counters.rose("insert_failed");
    if failed > 0 {
        risk.push(format!(
            "insert_failed rose by {failed}: packets dropped on confirm-time clashes (not a \
             full table)"
        ));
    }
    let chain = f.counters.rose("chaintoolong");
    if chain > 0 {
        risk.push(format!(
            "chaintoolong rose by {chain}: inserts refused for over-long hash chains (too few \
             buckets, or hash flooding)"
        ));
    }
    // A namespace inode is reused once its namespace is gone, so a line naming ours may be an
    // earlier namespace's. A table-full drop in this namespace also counts `drop`, whose
    // per-namespace sum starts at 0: without one, the lines are not this namespace's.
    let dropped_ever = f.counters.after.drop > 0;
    if let Some(line) = &f.log.last
        && dropped_ever
        && full.is_empty()
    {
        let age = age_secs(line, f.now_usec);
        if age <= JUST_DROPPED && fill >= STILL_FULL {
            full.push(format!(
                "the kernel logged \"table full\" for this namespace {age} s ago and the table \
                 is still {fill:.1}% full"
            ));
        } else if age <= RECENT_LOG {
            risk.push(format!(
                "the kernel logged \"table full\" for this namespace {age} s ago ({} such lines \
                 in the log)",
                f.log.ours
            ));
        }
    }
    if let Some(line) = &f.log.last_unattributed
        && dropped_ever
        && full.is_empty()
    {
        let age = age_secs(line, f.now_usec);
        if age <= RECENT_LOG {
            risk.push(format!(
                "the kernel logged \"table full\" {age} s ago; this kernel does not say for \
                 which namespace, so it may be this one"
            ));
        }
    }
    if !full.is_empty() {
        full.extend(risk);
        (Verdict::Full, full)
    } else if !risk.is_empty() {
        (Verdict::AtRisk, risk)
    } else {
        (Verdict::Healthy, vec![format!("the table is {fill:.1}% full and no counter rose")])
    }
}

/// The top offender's state to evict: its largest TCP state column; `None` when most of its
/// entries are not TCP (evict then takes all its flows).
pub fn dominant_state(group: &Group) -> Option<String> {
    let (name, _) = group.states.iter().max_by_key(|(name, n)| (**n, std::cmp::Reverse(*name)))?;
    let tcp = (0..10).any(|c| column_name(c) == name);
    tcp.then(|| name.clone())
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn shell_word(w: &str) -> String {
    let plain =
        !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain { w.to_string() } else { format!("'{}'", w.replace('\'', r"'\''")) }
}

/// A shell line of words.
pub fn shell_line(argv: &[String]) -> String {
    argv.iter().map(|w| shell_word(w)).collect::<Vec<_>>().join(" ")
}

/// The `ctguard evict` invocation for a guest (a name with `--guests FILE`, or an address).
pub fn evict_argv(
    netns: Option<&str>,
    guests_file: Option<&str>,
    key: &str,
    state: Option<&str>,
) -> Vec<String> {
    let mut a = vec!["ctguard".to_string()];
    if let Some(ns) = netns {
        a.extend(["--netns".into(), ns.into()]);
    }
    a.push("evict".into());
    if let Some(f) = guests_file {
        a.extend(["--guests".into(), f.into()]);
    }
    a.extend(["--guest".into(), key.into()]);
    if let Some(s) = state {
        a.extend(["--state".into(), s.into()]);
    }
    a.push("--yes".into());
    a
}

/// The per-guest connection cap: a tenth of the table, in thousands (at least 1000), so
/// that no fewer than ten runaway guests can fill it.
pub fn cap_limit(max: u64) -> u64 {
    (max / 10 / 1000 * 1000).max(1000)
}

/// How to run a command inside the target namespace: `ip netns exec NAME` for a name,
/// `nsenter --net=PATH` for a path, nothing for the current namespace.
fn ns_prefix(netns: Option<&str>) -> String {
    match netns {
        None => String::new(),
        Some(ns) if ns.contains('/') => format!("nsenter --net={} ", shell_word(ns)),
        Some(ns) => format!("ip netns exec {} ", shell_word(ns)),
    }
}

fn addr_list(nets: &[&IpNetwork]) -> String {
    let items: Vec<String> = nets
        .iter()
        .map(|n| {
            let host = if n.is_ipv4() { 32 } else { 128 };
            if n.prefix() == host { n.ip().to_string() } else { n.to_string() }
        })
        .collect();
    if items.len() == 1 { items[0].clone() } else { format!("{{ {} }}", items.join(", ")) }
}

/// An nftables ruleset, as shell lines, that caps the connections these addresses open
/// through the host (`ct count`, nft_connlimit): a table and a forward chain of ctguard's
/// own, and one rule per family. Deleting entries alone does not stop a guest that keeps
/// connecting; the cap does. It counts connections opened after the rule is in place.
pub fn nft_cap(nets: &[IpNetwork], limit: u64, netns: Option<&str>) -> Option<String> {
    if nets.is_empty() {
        return None;
    }
    let nft = format!("{}nft", ns_prefix(netns));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# cap new connections from {} at {limit} live ones (counted from when the rule is added)",
        addr_list(&nets.iter().collect::<Vec<_>>())
    );
    let _ = writeln!(s, "{nft} add table inet ctguard");
    let _ = writeln!(
        s,
        "{nft} add chain inet ctguard forward '{{ type filter hook forward priority -1; policy accept; }}'"
    );
    for (family, v4) in [("ip", true), ("ip6", false)] {
        let of: Vec<&IpNetwork> = nets.iter().filter(|n| n.is_ipv4() == v4).collect();
        if of.is_empty() {
            continue;
        }
        let rule = format!(
            "{family} saddr {} ct state new ct count over {limit} counter reject",
            addr_list(&of)
        );
        let rule = if rule.contains('{') { format!("'{rule}'") } else { rule };
        let _ = writeln!(s, "{nft} add rule inet ctguard forward {rule}");
    }
    Some(s.trim_end().to_string())
}

/// The addresses a group key stands for: the guest's CIDRs, or the address itself.
pub fn key_networks(key: &str, guests: &crate::GuestMap) -> Vec<IpNetwork> {
    if let Some(id) = guests.find(key) {
        return guests.cidrs(id).to_vec();
    }
    match key.parse::<IpNetwork>() {
        Ok(n) => vec![n],
        Err(_) => key.parse::<IpAddr>().map(|a| vec![IpNetwork::from(a)]).unwrap_or_default(),
    }
}

/// What to run next.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actions {
    /// The evict command for the top offender, as a shell line.
    pub evict: Option<String>,
    /// The same as words.
    pub evict_argv: Option<Vec<String>>,
    /// nft commands that cap the offender's connections.
    pub cap: Option<String>,
    /// `key=value` sysctl changes `ctguard tune` recommends.
    pub tune: Vec<String>,
    /// The command that applies the per-namespace ones (`null` when `tune` is empty).
    pub tune_command: Option<String>,
}

/// The namespace doctor looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetnsInfo {
    /// Its inode.
    pub inode: u64,
    /// Whether it is the host's initial namespace (`null`: cannot tell).
    pub initial: Option<bool>,
}

/// Counters over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    /// Seconds between the samples.
    pub window_seconds: f64,
    /// CPUs that reported.
    pub cpus: usize,
    /// Per-CPU counters summed, at the end of the window.
    pub sum: BTreeMap<String, u64>,
    /// How much each sum rose over the window.
    pub delta: BTreeMap<String, u64>,
}

/// The kernel log part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelLog {
    /// `/dev/kmsg` could be read.
    pub readable: bool,
    /// Why not.
    pub error: Option<String>,
    /// "table full" lines for this namespace.
    pub table_full_lines: u64,
    /// The newest of them.
    pub last: Option<String>,
    /// Its age in seconds.
    pub last_age_seconds: Option<u64>,
    /// Lines for other namespaces (not counted above).
    pub other_netns_lines: u64,
    /// Lines that do not say their namespace (kernels before the netns wording).
    pub unattributed_lines: u64,
}

/// The whole diagnosis: `doctor --json` prints it as one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoctorReport {
    /// `healthy`, `at-risk`, `full`.
    pub verdict: Verdict,
    /// Why, worst first.
    pub reasons: Vec<String>,
    /// The namespace examined.
    pub netns: NetnsInfo,
    /// Count, max, fill, buckets.
    pub table: Fill,
    /// Per-CPU counters.
    pub counters: Counters,
    /// How offenders are grouped: `guest` or `src`.
    pub by: String,
    /// Entries the dump saw.
    pub matched: u64,
    /// The top owners, largest first.
    pub offenders: Vec<Group>,
    /// Kernel log lines about a full table.
    pub kernel_log: KernelLog,
    /// The sysctls that matter, `null` when unreadable.
    pub sysctl: BTreeMap<String, Option<u64>>,
    /// Next steps.
    pub actions: Actions,
}

/// What the report is assembled from besides [`Facts`].
pub struct Inputs<'a> {
    /// The facts.
    pub facts: Facts,
    /// The namespace.
    pub netns: NetnsInfo,
    /// `--netns` as given, for the commands.
    pub netns_arg: Option<&'a str>,
    /// `--guests` as given.
    pub guests_file: Option<&'a str>,
    /// The guest map (empty without a file).
    pub guests: &'a crate::GuestMap,
    /// Grouping name.
    pub by: String,
    /// Entries counted.
    pub matched: u64,
    /// Top groups.
    pub offenders: Vec<Group>,
    /// Sysctl values.
    pub sysctl: BTreeMap<String, Option<u64>>,
    /// `tune`'s changes as `key=value`.
    pub tune: Vec<String>,
}

impl DoctorReport {
    /// Decides and assembles.
    pub fn new(i: Inputs<'_>) -> DoctorReport {
        let (verdict, reasons) = verdict(&i.facts);
        let f = &i.facts;
        let target = (verdict != Verdict::Healthy)
            .then(|| i.offenders.iter().find(|g| g.key != "(no guest)"))
            .flatten();
        let mut tune_argv = vec!["ctguard".to_string()];
        if let Some(ns) = i.netns_arg {
            tune_argv.extend(["--netns".into(), ns.into()]);
        }
        tune_argv.extend(["tune".into(), "--apply".into()]);
        let tune_command = (!i.tune.is_empty()).then(|| shell_line(&tune_argv));
        let mut actions = Actions { tune: i.tune, tune_command, ..Actions::default() };
        if let Some(g) = target {
            let argv = evict_argv(i.netns_arg, i.guests_file, &g.key, dominant_state(g).as_deref());
            actions.evict = Some(shell_line(&argv));
            actions.evict_argv = Some(argv);
            let nets = key_networks(&g.key, i.guests);
            actions.cap = nft_cap(&nets, cap_limit(u64::from(f.fill.max)), i.netns_arg);
        }
        let log = &f.log;
        DoctorReport {
            verdict,
            reasons,
            netns: i.netns,
            table: f.fill.clone(),
            counters: Counters {
                window_seconds: (f.counters.seconds * 1000.0).round() / 1000.0,
                cpus: f.counters.cpus,
                sum: f
                    .counters
                    .after
                    .fields()
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v as u64))
                    .collect(),
                delta: f.counters.delta(),
            },
            by: i.by,
            matched: i.matched,
            offenders: i.offenders,
            kernel_log: KernelLog {
                readable: log.readable,
                error: log.error.clone(),
                table_full_lines: log.ours,
                last: log.last.as_ref().map(|l| l.text.clone()),
                last_age_seconds: log.last.as_ref().map(|l| age_secs(l, f.now_usec)),
                other_netns_lines: log.other,
                unattributed_lines: log.unattributed,
            },
            sysctl: i.sysctl,
            actions,
        }
    }

    /// Exit status: 0 healthy, 1 at risk or full.
    pub fn trouble(&self) -> bool {
        self.verdict != Verdict::Healthy
    }

    /// The text an operator reads.
    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        let title = match self.verdict {
            Verdict::Healthy => "HEALTHY",
            Verdict::AtRisk => "AT RISK",
            Verdict::Full => "FULL NOW",
        };
        writeln!(out, "verdict: {title}")?;
        for r in &self.reasons {
            writeln!(out, "  - {r}")?;
        }
        let t = &self.table;
        let buckets = t.buckets.map(|b| format!(", {b} buckets")).unwrap_or_default();
        let initial = match self.netns.initial {
            Some(true) => "initial namespace",
            Some(false) => "not the initial namespace",
            None => "namespace",
        };
        writeln!(
            out,
            "\ntable: {} of {} entries ({:.1}% full){buckets}; netns {} ({initial})",
            t.count, t.max, t.fill_percent, self.netns.inode
        )?;
        let c = &self.counters;
        let d = |k: &str| c.delta.get(k).copied().unwrap_or(0);
        let s = |k: &str| c.sum.get(k).copied().unwrap_or(0);
        writeln!(
            out,
            "counters over {:.1} s ({} CPUs): drop +{} ({}), early_drop +{} ({}), \
             insert_failed +{} ({}), chaintoolong +{} ({})",
            c.window_seconds,
            c.cpus,
            d("drop"),
            s("drop"),
            d("early_drop"),
            s("early_drop"),
            d("insert_failed"),
            s("insert_failed"),
            d("chaintoolong"),
            s("chaintoolong"),
        )?;
        let k = &self.kernel_log;
        if k.readable {
            write!(
                out,
                "kernel log: {} \"table full\" lines for this namespace",
                k.table_full_lines
            )?;
            if let (Some(last), Some(age)) = (&k.last, k.last_age_seconds) {
                write!(out, ", the last {age} s ago: {last}")?;
            }
            writeln!(
                out,
                " ({} for other namespaces, {} unattributed)",
                k.other_netns_lines, k.unattributed_lines
            )?;
            if k.table_full_lines + k.unattributed_lines > 0 && s("drop") == 0 {
                writeln!(
                    out,
                    "  (this namespace has never dropped a packet: those lines belong to an \
                     earlier namespace with the same inode, or to another one)"
                )?;
            }
        } else {
            writeln!(
                out,
                "kernel log: not readable ({}); check `dmesg | grep 'table full'` as root",
                k.error.as_deref().unwrap_or("unknown")
            )?;
        }
        writeln!(out, "\ntop owners by {} ({} entries):", self.by, self.matched)?;
        if self.offenders.is_empty() {
            writeln!(out, "  (the table is empty)")?;
        }
        for g in &self.offenders {
            let states: Vec<String> = {
                let mut v: Vec<(&String, &u64)> = g.states.iter().collect();
                v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                v.iter().map(|(s, n)| format!("{s} {n}")).collect()
            };
            writeln!(
                out,
                "  {:<24} {:>9} {:>6.1}%  {}",
                crate::guests::escaped(&g.key),
                g.entries,
                g.share_percent,
                states.join(", ")
            )?;
        }
        writeln!(out, "\nsysctls:")?;
        for (key, v) in &self.sysctl {
            let v = v.map_or("(unreadable)".to_string(), |v| v.to_string());
            writeln!(out, "  {key} = {v}")?;
        }
        writeln!(out, "\nnext steps:")?;
        let mut n = 0;
        if let Some(cap) = &self.actions.cap {
            n += 1;
            writeln!(
                out,
                "  {n}. cap the offender first, so that it cannot re-take the slots evict frees \
                 (a runaway guest does so within seconds):"
            )?;
            for line in cap.lines() {
                writeln!(out, "       {line}")?;
            }
        }
        if let Some(evict) = &self.actions.evict {
            n += 1;
            writeln!(out, "  {n}. relieve the table: evict the offender's flows")?;
            writeln!(out, "       {evict}")?;
        }
        if let Some(cmd) = &self.actions.tune_command {
            n += 1;
            let scope = if self.netns.initial == Some(true) {
                "writes them"
            } else {
                "writes this namespace's timeouts; max and buckets are global, set from the \
                 initial namespace"
            };
            writeln!(out, "  {n}. tune (`ctguard tune` gives each reason): `{cmd}` {scope}:")?;
            for line in &self.actions.tune {
                writeln!(out, "       {line}")?;
            }
        }
        if n == 0 {
            writeln!(out, "  nothing to do")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(count: u32, max: u32) -> Fill {
        Fill::new(crate::stats::TableStats { count, max }, Some(u64::from(max)))
    }

    fn quiet(count: u32, max: u32) -> Facts {
        Facts {
            fill: fill(count, max),
            counters: CounterWindow { seconds: 1.0, cpus: 2, ..CounterWindow::default() },
            established_timeout: Some(3600),
            log: LogSummary { readable: true, ..LogSummary::default() },
            now_usec: 10_000_000_000,
        }
    }

    fn rising(f: &mut Facts, set: impl Fn(&mut CpuStats)) {
        set(&mut f.counters.after);
    }

    #[test]
    fn quiet_table_is_healthy() {
        let (v, why) = verdict(&quiet(1000, 262_144));
        assert_eq!(v, Verdict::Healthy);
        assert!(why[0].contains("0.4% full"), "{why:?}");
    }

    #[test]
    fn rising_drop_or_early_drop_or_count_at_max_is_full() {
        let mut f = quiet(240_000, 262_144); // 91.6 %
        f.counters.before.drop = 4_294_967_290; // wraps
        rising(&mut f, |c| c.drop = 5);
        let (v, why) = verdict(&f);
        assert_eq!(v, Verdict::Full);
        assert!(why[0].starts_with("drop rose by 11 in 1.0 s"), "{why:?}");

        let mut f = quiet(262_100, 262_144);
        rising(&mut f, |c| c.early_drop = 3);
        let (v, why) = verdict(&f);
        assert_eq!(v, Verdict::Full);
        assert!(why[0].starts_with("early_drop rose by 3"));
        assert!(why.iter().any(|w| w.contains("100.0% full")), "{why:?}");

        assert_eq!(verdict(&quiet(262_144, 262_144)).0, Verdict::Full);
        // Drops with a nearly empty table are not a full table.
        let mut f = quiet(1000, 262_144);
        rising(&mut f, |c| c.drop = 9);
        let (v, why) = verdict(&f);
        assert_eq!(v, Verdict::AtRisk);
        assert!(why[0].contains("only 0.4% full"), "{why:?}");
        // A drop counter that is high but not rising says nothing about now.
        let mut f = quiet(1000, 262_144);
        f.counters.before.drop = 500;
        f.counters.after.drop = 500;
        assert_eq!(verdict(&f).0, Verdict::Healthy);
    }

    #[test]
    fn at_risk_thresholds() {
        assert_eq!(verdict(&quiet(209_716, 262_144)).0, Verdict::AtRisk); // 80.0 %
        assert_eq!(verdict(&quiet(209_000, 262_144)).0, Verdict::Healthy); // 79.7 %, 1 h
        let mut long = quiet(131_072, 262_144); // 50 %
        long.established_timeout = Some(432_000);
        let (v, why) = verdict(&long);
        assert_eq!(v, Verdict::AtRisk);
        assert!(why[0].contains("ESTABLISHED entries live 432000 s"), "{why:?}");
        long.fill = fill(130_000, 262_144);
        assert_eq!(verdict(&long).0, Verdict::Healthy);
        for field in ["insert_failed", "chaintoolong"] {
            let mut f = quiet(10, 262_144);
            rising(&mut f, |c| match field {
                "insert_failed" => c.insert_failed = 1,
                _ => c.chaintoolong = 2,
            });
            let (v, why) = verdict(&f);
            assert_eq!(v, Verdict::AtRisk, "{field}");
            assert!(why[0].starts_with(field));
        }
    }

    #[test]
    fn recent_log_lines_of_this_namespace_are_at_risk_old_ones_are_not() {
        let target = Target { inode: 4_026_532_290, initial: Some(false), names_netns: true };
        let line = |usec: u64, ns: u64| TableFullLine {
            seq: 1,
            usec,
            netns: Some(ns),
            text: format!("nf_conntrack: nf_conntrack: table full in netns {ns}, dropping packet"),
        };
        let mut f = quiet(10, 262_144);
        f.log.add(line(9_900_000_000, 4_026_532_999), &target);
        assert_eq!(verdict(&f).0, Verdict::Healthy, "another namespace's line");
        assert_eq!(f.log.other, 1);
        f.log.add(line(9_000_000_000, 4_026_532_290), &target);
        assert_eq!((f.log.ours, verdict(&f).0), (1, Verdict::Healthy), "1000 s old");
        f.log.add(line(9_880_000_000, 4_026_532_290), &target);
        assert_eq!(verdict(&f).0, Verdict::Healthy, "this namespace never dropped: inode reused");
        f.counters.before.drop = 7;
        f.counters.after.drop = 7;
        let (v, why) = verdict(&f);
        assert_eq!(v, Verdict::AtRisk);
        assert!(why[0].contains("120 s ago (2 such lines"), "{why:?}");
        // 20 s ago, and the table is still 96 % full: full now.
        f.log.add(line(9_980_000_000, 4_026_532_290), &target);
        f.fill = fill(252_000, 262_144);
        let (v, why) = verdict(&f);
        assert_eq!(v, Verdict::Full);
        assert!(why[0].contains("20 s ago and the table is still 96.1% full"), "{why:?}");
        f.fill = fill(200_000, 262_144);
        assert_eq!(verdict(&f).0, Verdict::AtRisk, "emptied since");
    }

    fn group(key: &str, states: &[(&str, u64)]) -> Group {
        Group {
            key: key.into(),
            entries: states.iter().map(|s| s.1).sum(),
            share_percent: 90.0,
            states: states.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        }
    }

    #[test]
    fn evict_command_names_the_offender_and_its_dominant_state() {
        let g = group("172.16.3.5", &[("ESTABLISHED", 240_000), ("TIME_WAIT", 10), ("NON_TCP", 5)]);
        assert_eq!(dominant_state(&g).as_deref(), Some("ESTABLISHED"));
        let argv = evict_argv(Some("guests"), None, &g.key, Some("ESTABLISHED"));
        assert_eq!(
            argv,
            [
                "ctguard",
                "--netns",
                "guests",
                "evict",
                "--guest",
                "172.16.3.5",
                "--state",
                "ESTABLISHED",
                "--yes"
            ]
        );
        assert_eq!(
            shell_line(&argv),
            "ctguard --netns guests evict --guest 172.16.3.5 --state ESTABLISHED --yes"
        );
        let named = evict_argv(None, Some("/etc/ctguard/my guests.toml"), "web01", None);
        assert_eq!(
            shell_line(&named),
            "ctguard evict --guests '/etc/ctguard/my guests.toml' --guest web01 --yes"
        );
        assert_eq!(dominant_state(&group("x", &[("NON_TCP", 9), ("ESTABLISHED", 1)])), None);
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }

    #[test]
    fn nft_cap_is_a_complete_ruleset_per_family() {
        let v4: Vec<IpNetwork> = vec!["172.16.3.5/32".parse().unwrap()];
        let cap = nft_cap(&v4, cap_limit(262_144), None).unwrap();
        let lines: Vec<&str> = cap.lines().collect();
        assert!(lines[0].starts_with("# cap new connections from 172.16.3.5 at 26000"));
        assert_eq!(lines[1], "nft add table inet ctguard");
        assert_eq!(
            lines[2],
            "nft add chain inet ctguard forward '{ type filter hook forward priority -1; policy accept; }'"
        );
        assert_eq!(
            lines[3],
            "nft add rule inet ctguard forward ip saddr 172.16.3.5 ct state new ct count over 26000 counter reject"
        );
        assert_eq!(lines.len(), 4);
        let both: Vec<IpNetwork> =
            vec!["172.16.3.0/24".parse().unwrap(), "fd00:2::5/128".parse().unwrap()];
        let cap = nft_cap(&both, 1000, Some("/proc/42/ns/net")).unwrap();
        assert!(cap.contains("nsenter --net=/proc/42/ns/net nft add rule inet ctguard forward ip saddr 172.16.3.0/24 "));
        assert!(cap.contains(
            "forward ip6 saddr fd00:2::5 ct state new ct count over 1000 counter reject"
        ));
        let two: Vec<IpNetwork> =
            vec!["fd00:2::5/128".parse().unwrap(), "fd00:3::/64".parse().unwrap()];
        let cap = nft_cap(&two, 1000, Some("lab")).unwrap();
        assert!(cap.contains("ip netns exec lab nft add rule inet ctguard forward 'ip6 saddr { fd00:2::5, fd00:3::/64 } ct state new"));
        assert!(!cap.contains(" ip saddr"));
        assert_eq!(nft_cap(&[], 1000, None), None);
        assert_eq!(cap_limit(262_144), 26_000);
        assert_eq!(cap_limit(4096), 1000);
    }

    #[test]
    fn healthy_reports_have_no_evict_or_cap_and_trouble_ones_do() {
        let guests = crate::GuestMap::new();
        let inputs = |facts: Facts| Inputs {
            facts,
            netns: NetnsInfo { inode: 4_026_532_290, initial: Some(false) },
            netns_arg: Some("ctg-x"),
            guests_file: None,
            guests: &guests,
            by: "src".into(),
            matched: 240_010,
            offenders: vec![group("172.16.3.5", &[("ESTABLISHED", 240_000), ("TIME_WAIT", 10)])],
            sysctl: BTreeMap::new(),
            tune: vec!["net.netfilter.nf_conntrack_tcp_timeout_established=3600".into()],
        };
        // Flows no guest owns cannot be evicted by guest: the next group is the target.
        let mut unowned = inputs(quiet(262_144, 262_144));
        unowned.offenders.insert(0, group("(no guest)", &[("ESTABLISHED", 250_000)]));
        let r = DoctorReport::new(unowned);
        assert!(r.actions.evict.unwrap().contains("--guest 172.16.3.5 "));
        let healthy = DoctorReport::new(inputs(quiet(240_010, 1 << 20)));
        assert_eq!(healthy.verdict, Verdict::Healthy);
        assert!(!healthy.trouble());
        assert_eq!((healthy.actions.evict.as_ref(), healthy.actions.cap.as_ref()), (None, None));
        let mut full = quiet(262_144, 262_144);
        rising(&mut full, |c| c.drop = 200);
        let r = DoctorReport::new(inputs(full));
        assert_eq!(r.verdict, Verdict::Full);
        assert_eq!(
            r.actions.evict.as_deref(),
            Some("ctguard --netns ctg-x evict --guest 172.16.3.5 --state ESTABLISHED --yes")
        );
        assert!(r.actions.cap.as_deref().unwrap().contains("ip netns exec ctg-x nft"));
        assert_eq!(r.counters.delta["drop"], 200);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["verdict"], "full");
        assert_eq!(json["actions"]["evict_argv"][4], "--guest");
        let mut text = Vec::new();
        r.write_text(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.starts_with("verdict: FULL NOW\n  - drop rose by 200"), "{text}");
        assert!(text.contains("`ctguard --netns ctg-x tune --apply` writes this namespace's"));
        let cap_at = text.find("nft add table").unwrap();
        assert!(cap_at < text.find("evict --guest").unwrap(), "cap before evict");
        assert!(
            text.contains("\n       net.netfilter.nf_conntrack_tcp_timeout_established=3600\n")
        );
    }
}
