//! The whole diagnosis as a document: [`DoctorReport`] is what `doctor --json` prints (wire
//! format, pinned by tests) and what [`DoctorReport::write_text`] renders for an operator.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use super::remedy::{
    Actions, cap_limit, dominant_state, evict_argv, key_networks, nft_cap, shell_line,
};
use super::verdict::{Facts, Verdict, age_secs, verdict};
use crate::flow::TcpState;
use crate::output::look::{self, Level, Look};
use crate::output::report::{Group, TallyReport};
use crate::stats::{CpuStats, Fill};
use crate::tally::{GroupKey, Tally};

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
    /// Per-CPU counters summed, at the end of the window (`cpu` is not part of it).
    #[serde(with = "counter_map")]
    pub sum: CpuStats,
    /// How much each sum rose over the window.
    #[serde(with = "counter_map")]
    pub delta: CpuStats,
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
    /// Lines that do not say their namespace and cannot be placed: kernels before the netns
    /// wording, or a namespace that cannot be told to be the initial one.
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
    /// The flags that named the guests, repeated in the evict command: `--guests FILE` as
    /// given, the discovery flags.
    pub guest_flags: &'a [String],
    /// The guest map (a file's and the discovered guests; empty without either).
    pub guests: &'a crate::GuestMap,
    /// The owners of the table's entries, as `--by guest` or `--by src` counts them; its
    /// guest map is `guests`.
    pub tally: &'a Tally,
    /// How many of the largest groups to report.
    pub limit: usize,
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
        let top = TallyReport::new(i.tally, None, Some(i.limit));
        // Flows no guest owns cannot be evicted by guest: the next group is the target.
        let target = (verdict != Verdict::Healthy)
            .then(|| {
                i.tally
                    .ranked_counts(Some(i.limit))
                    .into_iter()
                    .find(|(key, _)| **key != GroupKey::Guest(None))
            })
            .flatten();
        let mut tune_argv = vec!["ctguard".to_string()];
        if let Some(ns) = i.netns_arg {
            tune_argv.extend(["--netns".into(), ns.into()]);
        }
        tune_argv.extend(["tune".into(), "--apply".into()]);
        let tune_command = (!i.tune.is_empty()).then(|| shell_line(&tune_argv));
        let mut actions = Actions { tune: i.tune, tune_command, ..Actions::default() };
        if let Some((key, counts)) = target {
            let state = dominant_state(counts).map(TcpState::name);
            let argv = evict_argv(i.netns_arg, i.guest_flags, &i.tally.label(key), state);
            actions.offender = Some(match key {
                GroupKey::Guest(Some(id)) => i.guests.detail(*id),
                _ => i.tally.label(key),
            });
            actions.evict = Some(shell_line(&argv));
            actions.evict_argv = Some(argv);
            let nets = key_networks(key, i.guests);
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
                sum: CpuStats { cpu: 0, ..f.counters.after },
                delta: CpuStats { cpu: 0, ..f.counters.rise() },
            },
            by: top.by,
            matched: top.matched,
            offenders: top.groups,
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
        self.write_text_as(out, Look::PLAIN)
    }

    /// The text as `look` says: in colour, the verdict (green, yellow, red), the fill
    /// percentage and who filled it (the top owner and the offender line).
    pub fn write_text_as(&self, out: &mut impl Write, look: Look) -> io::Result<()> {
        let title = match self.verdict {
            Verdict::Healthy => "HEALTHY",
            Verdict::AtRisk => "AT RISK",
            Verdict::Full => "FULL NOW",
        };
        let verdict_style = Level::of_verdict(self.verdict).style().bold();
        writeln!(out, "verdict: {}", look.paint(verdict_style, title))?;
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
        let full =
            look.paint(Level::of_fill(t.fill_percent).style(), format!("{:.1}%", t.fill_percent));
        writeln!(
            out,
            "\ntable: {} of {} entries ({full} full){buckets}; netns {} ({initial})",
            t.count, t.max, self.netns.inode
        )?;
        let (c, d, s) = (&self.counters, &self.counters.delta, &self.counters.sum);
        writeln!(
            out,
            "counters over {:.1} s ({} CPUs): drop +{} ({}), early_drop +{} ({}), \
             insert_failed +{} ({}), chaintoolong +{} ({})",
            c.window_seconds,
            c.cpus,
            d.drop,
            s.drop,
            d.early_drop,
            s.early_drop,
            d.insert_failed,
            s.insert_failed,
            d.chaintoolong,
            s.chaintoolong,
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
            if k.table_full_lines + k.unattributed_lines > 0 && s.drop == 0 {
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
        let offender = look::offender(Some(t.fill_percent));
        for (i, g) in self.offenders.iter().enumerate() {
            let states: Vec<String> = {
                let mut v: Vec<(&String, &u64)> = g.states.iter().collect();
                v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                v.iter().map(|(s, n)| format!("{s} {n}")).collect()
            };
            // Padded outside the escapes: the columns line up in colour too.
            let key = crate::guests::escaped(&g.key);
            let pad = 24usize.saturating_sub(key.chars().count());
            let key =
                if i == 0 { look.paint(offender, key) } else { Look::PLAIN.paint(offender, key) };
            writeln!(
                out,
                "  {key}{:pad$} {:>9} {:>6.1}%  {}",
                "",
                g.entries,
                g.share_percent,
                states.join(", ")
            )?;
        }
        if let Some(who) = &self.actions.offender {
            writeln!(out, "offender: {}", look.paint(offender, who))?;
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

/// The per-CPU counters as a JSON object of the `conntrack -S` names, in name order; every
/// name is required and no other is accepted. The CPU number is not part of it.
mod counter_map {
    use std::collections::BTreeMap;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::stats::CpuStats;

    pub fn serialize<S: Serializer>(c: &CpuStats, s: S) -> Result<S::Ok, S::Error> {
        let map: BTreeMap<&str, u64> =
            c.fields().iter().map(|(name, v)| (*name, u64::from(*v))).collect();
        map.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CpuStats, D::Error> {
        let mut map = BTreeMap::<String, u64>::deserialize(d)?;
        let mut take = |name: &'static str| -> Result<u32, D::Error> {
            let v = map.remove(name).ok_or_else(|| D::Error::missing_field(name))?;
            u32::try_from(v).map_err(|_| D::Error::custom(format!("{name}: {v} exceeds u32")))
        };
        let c = CpuStats {
            cpu: 0,
            found: take("found")?,
            invalid: take("invalid")?,
            insert: take("insert")?,
            insert_failed: take("insert_failed")?,
            drop: take("drop")?,
            early_drop: take("early_drop")?,
            error: take("error")?,
            search_restart: take("search_restart")?,
            clash_resolve: take("clash_resolve")?,
            chaintoolong: take("chaintoolong")?,
        };
        match map.keys().next() {
            Some(extra) => Err(D::Error::custom(format!("unknown field `{extra}`"))),
            None => Ok(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::remedy::tests::{ESTABLISHED, TIME_WAIT, tally_of};
    use crate::doctor::verdict::tests::{quiet, rising};
    use crate::tally::GroupBy;

    #[test]
    fn healthy_reports_have_no_evict_or_cap_and_trouble_ones_do() {
        let guests = crate::GuestMap::new();
        let addr = GroupKey::Addr("172.16.3.5".parse().unwrap());
        let by_src =
            tally_of(GroupBy::Src, &guests, &[(addr, &[(ESTABLISHED, 240_000), (TIME_WAIT, 10)])]);
        let inputs = |facts: Facts| Inputs {
            facts,
            netns: NetnsInfo { inode: 4_026_532_290, initial: Some(false) },
            netns_arg: Some("ctg-x"),
            guest_flags: &[],
            guests: &guests,
            tally: &by_src,
            limit: 10,
            sysctl: BTreeMap::new(),
            tune: vec!["net.netfilter.nf_conntrack_tcp_timeout_established=3600".into()],
        };
        // Flows no guest owns cannot be evicted by guest: the next group is the target.
        let mut owners = crate::GuestMap::new();
        let web01 =
            owners.add_seen("web01", vec!["172.16.3.5/32".parse().unwrap()], &["vnet3".into()]);
        let flags = ["--guests".to_string(), "guests.toml".into()];
        let by_guest = tally_of(
            GroupBy::Guest,
            &owners,
            &[
                (GroupKey::Guest(None), &[(ESTABLISHED, 250_000)]),
                (GroupKey::Guest(Some(web01)), &[(ESTABLISHED, 240_000)]),
            ],
        );
        let unowned = Inputs {
            guests: &owners,
            guest_flags: &flags,
            tally: &by_guest,
            ..inputs(quiet(262_144, 262_144))
        };
        let r = DoctorReport::new(unowned);
        assert_eq!(r.offenders[0].key, "(no guest)");
        assert!(r.actions.evict.unwrap().contains("--guests guests.toml --guest web01 "));
        assert_eq!(r.actions.offender.as_deref(), Some("web01 (172.16.3.5, vnet3)"));
        assert!(r.actions.cap.unwrap().contains("ip saddr 172.16.3.5 "));
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
        assert_eq!(r.counters.delta.drop, 200);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["verdict"], "full");
        assert_eq!(json["actions"]["evict_argv"][4], "--guest");
        assert_eq!(json["actions"]["offender"], "172.16.3.5");
        let mut text = Vec::new();
        r.write_text(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("\noffender: 172.16.3.5\n"), "{text}");
        assert!(text.starts_with("verdict: FULL NOW\n  - drop rose by 200"), "{text}");
        assert!(text.contains("`ctguard --netns ctg-x tune --apply` writes this namespace's"));
        let cap_at = text.find("nft add table").unwrap();
        assert!(cap_at < text.find("evict --guest").unwrap(), "cap before evict");
        assert!(
            text.contains("\n       net.netfilter.nf_conntrack_tcp_timeout_established=3600\n")
        );
    }

    #[test]
    fn issue_11_4_counters_are_typed_and_their_json_map_is_strict() {
        let c = Counters {
            window_seconds: 1.0,
            cpus: 2,
            sum: CpuStats { drop: 7, chaintoolong: 1, ..CpuStats::default() },
            delta: CpuStats { drop: 2, ..CpuStats::default() },
        };
        let json = serde_json::to_string(&c).unwrap();
        let map = |drop: u32, chain: u32| {
            format!(
                "{{\"chaintoolong\":{chain},\"clash_resolve\":0,\"drop\":{drop},\"early_drop\":0,\
                 \"error\":0,\"found\":0,\"insert\":0,\"insert_failed\":0,\"invalid\":0,\
                 \"search_restart\":0}}"
            )
        };
        let want = format!(
            "{{\"window_seconds\":1.0,\"cpus\":2,\"sum\":{},\"delta\":{}}}",
            map(7, 1),
            map(2, 0)
        );
        assert_eq!(json, want, "the same bytes as the name-ordered map it was");
        assert_eq!(serde_json::from_str::<Counters>(&json).unwrap(), c);
        // A misspelt or unknown counter is refused, never read as 0.
        let typo = json.replacen("\"drop\":7", "\"drops\":7", 1);
        let e = serde_json::from_str::<Counters>(&typo).unwrap_err().to_string();
        assert!(e.contains("missing field `drop`"), "{e}");
        let extra = json.replacen("\"drop\":7", "\"drop\":7,\"new_counter\":1", 1);
        let e = serde_json::from_str::<Counters>(&extra).unwrap_err().to_string();
        assert!(e.contains("unknown field `new_counter`"), "{e}");
        let big = json.replacen("\"drop\":7", "\"drop\":4294967296", 1);
        assert!(serde_json::from_str::<Counters>(&big).is_err());
    }
}
