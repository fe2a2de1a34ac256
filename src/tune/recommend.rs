//! What `ctguard tune` recommends and why: the arithmetic over the host's memory and the
//! table, and the `sysctl.d` text with a reason above each line. Pure but for
//! [`TuneFacts::read`].

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Before Linux 4.8 `nf_conntrack_buckets` is read-only everywhere; the hash is resized here.
pub const HASHSIZE_PARAM: &str = "/sys/module/nf_conntrack/parameters/hashsize";

/// Bytes of one entry's slab object when the slab cannot be read (x86-64 6.x: 256).
const FALLBACK_OBJECT_BYTES: u64 = 256;
/// The extension area an entry carries besides its slab object: `nf_ct_ext_add`
/// (nf_conntrack_extend.c) allocates at least `NF_CT_EXT_PREALLOC` = 128 B for the first
/// extension (events are on by default) and kreallocs past it when acct, timestamp, labels
/// or NAT are added: kmalloc-128 to kmalloc-256. 192 B is the middle.
const EXTENSION_BYTES: u64 = 192;
/// One hash bucket: an `hlist_nulls_head`, one pointer.
const BUCKET_BYTES: u64 = 8;
/// A full table may cost at most this share of RAM (1/32, about 3 %).
const RAM_SHARE_DIVISOR: u64 = 32;
/// The largest max recommended by default: the write-up's 2,097,152. Larger tables are
/// possible but every full dump, `conntrack -L` or procfs walk then takes seconds.
const MAX_CEILING: u64 = 1 << 21;

/// Why TIME_WAIT gets 30 s. Printed above the line in the `sysctl.d` file, so it must stand on
/// its own: the operator reading it has no other document.
const TIME_WAIT_REASON: &str = "the endpoints keep their own TIME_WAIT, so the entry only has \
    to catch late retransmissions, yet every closed connection holds one for the whole timeout: \
    the same table-full condition has been caused by TIME_WAIT entries alone (at 120 s, 2,000 \
    closed connections a second keep 240,000 of them), and 30 s keeps a quarter as many";

/// A key's reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One value for the whole host, set from the initial namespace.
    Global,
    /// Each network namespace has its own.
    Namespace,
}

/// One recommended value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recommendation {
    /// Full sysctl name, `net.netfilter.nf_conntrack_max`.
    pub key: String,
    /// The value now, when readable.
    pub current: Option<u64>,
    /// The recommended value.
    pub value: u64,
    /// Why, in one sentence.
    pub reason: String,
    /// Global or per namespace.
    pub scope: Scope,
    /// `value` differs from `current`.
    pub change: bool,
}

impl Recommendation {
    /// `key=value`, as `sysctl -w` takes it.
    pub fn assignment(&self) -> String {
        format!("{}={}", self.key, self.value)
    }

    /// The name under `/proc/sys/net/netfilter`.
    pub fn proc_name(&self) -> &str {
        self.key.trim_start_matches("net.netfilter.")
    }
}

/// What the recommendations are computed from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TuneFacts {
    /// `MemTotal`, bytes.
    pub mem_total: u64,
    /// Bytes of one `nf_conntrack` slab object.
    pub object_bytes: u64,
    /// Entries in the namespace now.
    pub count: u64,
    /// The global max now.
    pub max: u64,
    /// Buckets now.
    pub buckets: Option<u64>,
    /// ESTABLISHED timeout (`nf_conntrack_tcp_timeout_established`).
    pub established: Option<u64>,
    /// TIME_WAIT timeout.
    pub time_wait: Option<u64>,
    /// FIN_WAIT timeout.
    pub fin_wait: Option<u64>,
    /// CLOSE_WAIT timeout.
    pub close_wait: Option<u64>,
    /// `nf_conntrack_tcp_loose`.
    pub tcp_loose: Option<u64>,
}

impl TuneFacts {
    /// The current namespace's values (enter it first); `count` and `max` come from ctnetlink.
    pub fn read(count: u64, max: u64) -> TuneFacts {
        let get = |name: &str| crate::sysctl::read(name);
        TuneFacts {
            mem_total: mem_total().unwrap_or(0),
            object_bytes: slab_object_bytes().unwrap_or(FALLBACK_OBJECT_BYTES),
            count,
            max,
            buckets: get("nf_conntrack_buckets"),
            established: get("nf_conntrack_tcp_timeout_established"),
            time_wait: get("nf_conntrack_tcp_timeout_time_wait"),
            fin_wait: get("nf_conntrack_tcp_timeout_fin_wait"),
            close_wait: get("nf_conntrack_tcp_timeout_close_wait"),
            tcp_loose: get("nf_conntrack_tcp_loose"),
        }
    }

    /// Bytes a table entry costs: slab object, extension area, its share of the buckets.
    pub fn entry_bytes(&self) -> u64 {
        self.object_bytes + EXTENSION_BYTES + BUCKET_BYTES
    }
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn mem_total() -> Option<u64> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// The `MemTotal:  24684096 kB` line, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The `nf_conntrack` slab's object size (SLUB sysfs, else `/proc/slabinfo`).
fn slab_object_bytes() -> Option<u64> {
    if let Ok(s) = std::fs::read_to_string("/sys/kernel/slab/nf_conntrack/slab_size") {
        return s.trim().parse().ok();
    }
    let info = std::fs::read_to_string("/proc/slabinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("nf_conntrack "))?;
    // name active_objs num_objs objsize ...
    line.split_whitespace().nth(3)?.parse().ok()
}

fn pow2_floor(n: u64) -> u64 {
    if n == 0 { 0 } else { 1 << (63 - n.leading_zeros()) }
}

fn human_bytes(b: u64) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    if b >= GIB { format!("{:.1} GiB", b as f64 / GIB as f64) } else { format!("{} MiB", b / MIB) }
}

/// A timeout that is only ever lowered to `target`.
fn timeout(key: &str, current: Option<u64>, target: u64, why: &str) -> Recommendation {
    let value = current.map_or(target, |c| c.min(target));
    let reason = match current {
        Some(c) if c <= target => format!("already {c} s (at most {target} s): {why}"),
        Some(c) => format!("{c} s now; {why}"),
        None => why.to_string(),
    };
    Recommendation {
        key: format!("net.netfilter.{key}"),
        current,
        value,
        reason,
        scope: Scope::Namespace,
        change: current != Some(value),
    }
}

/// The recommendations, in the order they are printed: max, buckets, then the timeouts.
pub fn recommend(f: &TuneFacts) -> Vec<Recommendation> {
    let per_entry = f.entry_bytes();
    let budget = f.mem_total / RAM_SHARE_DIVISOR;
    let by_memory = pow2_floor(budget / per_entry.max(1));
    let mut target = by_memory.min(MAX_CEILING);
    // Room for the table to double from where it is now, when the memory allows it.
    let headroom = f.count.saturating_mul(2).next_power_of_two();
    if headroom > target && headroom <= by_memory {
        target = headroom;
    }
    // Never shrink: a smaller max can turn a busy table full the moment it is written. Zero
    // means no limit at all (`__nf_conntrack_alloc` skips the check): also kept.
    let max = if f.max == 0 { 0 } else { target.max(f.max) };
    let max_reason = if f.max == 0 {
        "kept: 0 means no limit (the table grows until memory runs out)".to_string()
    } else if max == f.max && target < f.max {
        format!("kept: {} already exceeds what 1/{RAM_SHARE_DIVISOR} of RAM holds", f.max)
    } else {
        format!(
            "a full table of {max} entries costs about {} ({per_entry} B each: slab object, \
             extensions, bucket), within 1/{RAM_SHARE_DIVISOR} of {} RAM; {} entries now",
            human_bytes(max * per_entry),
            human_bytes(f.mem_total),
            f.count
        )
    };
    let buckets = f.buckets.map_or(max, |b| b.max(max));
    let mut out = vec![
        Recommendation {
            key: "net.netfilter.nf_conntrack_max".into(),
            current: Some(f.max),
            value: max,
            reason: max_reason,
            scope: Scope::Global,
            change: max != f.max,
        },
        Recommendation {
            key: "net.netfilter.nf_conntrack_buckets".into(),
            current: f.buckets,
            value: buckets,
            reason: format!(
                "one bucket per entry keeps hash chains short at a full table (the kernel's \
                 own default ratio); {} of bucket array",
                human_bytes(buckets * BUCKET_BYTES)
            ),
            scope: Scope::Global,
            change: f.buckets != Some(buckets),
        },
    ];
    let established = if f.tcp_loose == Some(0) {
        timeout(
            "nf_conntrack_tcp_timeout_established",
            f.established,
            7500,
            "the kernel never early-drops ESTABLISHED entries, so a vanished peer pins one \
             for the whole timeout; with nf_conntrack_tcp_loose=0 an expired entry is not \
             picked up again, so keep it past the 2 h TCP keepalive",
        )
    } else {
        timeout(
            "nf_conntrack_tcp_timeout_established",
            f.established,
            3600,
            "the kernel never early-drops ESTABLISHED entries, so a vanished peer pins one \
             for the whole timeout (432000 s = 5 days by default); an hour frees them, and \
             with nf_conntrack_tcp_loose=1 a connection idle longer is picked up again by \
             its next packet",
        )
    };
    out.push(established);
    out.push(timeout("nf_conntrack_tcp_timeout_time_wait", f.time_wait, 30, TIME_WAIT_REASON));
    out.push(timeout(
        "nf_conntrack_tcp_timeout_fin_wait",
        f.fin_wait,
        30,
        "a FIN the peer never answers should not hold an entry for 2 minutes",
    ));
    out.push(timeout(
        "nf_conntrack_tcp_timeout_close_wait",
        f.close_wait,
        60,
        "a half-closed connection whose application never closes is stale after a minute",
    ));
    out
}

/// True when `nf_conntrack_buckets` can be set by sysctl (Linux 4.8+).
pub fn buckets_by_sysctl(kernel: Option<(u32, u32)>) -> bool {
    kernel.is_none_or(|v| v >= (4, 8))
}

/// The `sysctl.d` file: a `# reason` line above each `key = value`. Before Linux 4.8 the bucket
/// count is a module parameter, written as a modprobe.d hint instead of a sysctl line.
pub fn sysctl_d(recs: &[Recommendation], kernel: Option<(u32, u32)>, header: &str) -> String {
    let mut s = String::new();
    for line in header.lines() {
        let _ = writeln!(s, "# {line}");
    }
    for r in recs {
        let _ = writeln!(s, "\n# {}", r.reason);
        if r.proc_name() == "nf_conntrack_buckets" && !buckets_by_sysctl(kernel) {
            let _ = writeln!(
                s,
                "# kernel before 4.8: set it in /etc/modprobe.d/nf_conntrack.conf as\n\
                 # options nf_conntrack hashsize={}",
                r.value
            );
        } else {
            let _ = writeln!(s, "{} = {}", r.key, r.value);
        }
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn incident_host() -> TuneFacts {
        TuneFacts {
            mem_total: 24_684_096 * 1024,
            object_bytes: 256,
            count: 258_540,
            max: 262_144,
            buckets: Some(262_144),
            established: Some(432_000),
            time_wait: Some(120),
            fin_wait: Some(120),
            close_wait: Some(60),
            tcp_loose: Some(1),
        }
    }

    fn value(recs: &[Recommendation], name: &str) -> u64 {
        recs.iter().find(|r| r.proc_name() == name).unwrap().value
    }

    #[test]
    fn incident_host_gets_the_write_ups_values() {
        let recs = recommend(&incident_host());
        // 24 GiB / 32 = 771 MiB; / 456 B = 1.69M entries; the power of two below is 2^20.
        assert_eq!(value(&recs, "nf_conntrack_max"), 1 << 20);
        assert_eq!(value(&recs, "nf_conntrack_buckets"), 1 << 20);
        assert_eq!(value(&recs, "nf_conntrack_tcp_timeout_established"), 3600);
        assert_eq!(value(&recs, "nf_conntrack_tcp_timeout_time_wait"), 30);
        assert_eq!(value(&recs, "nf_conntrack_tcp_timeout_fin_wait"), 30);
        assert_eq!(value(&recs, "nf_conntrack_tcp_timeout_close_wait"), 60);
        let close_wait = &recs[5];
        assert!(!close_wait.change && close_wait.reason.starts_with("already 60 s"));
        assert!(recs[0].reason.contains("456 B"), "{}", recs[0].reason);
        assert_eq!(recs[0].scope, Scope::Global);
        assert_eq!(recs[2].scope, Scope::Namespace);
    }

    #[test]
    fn big_hosts_stop_at_the_ceiling_small_ones_never_shrink() {
        let big = TuneFacts { mem_total: 256 << 30, ..incident_host() };
        assert_eq!(value(&recommend(&big), "nf_conntrack_max"), 2_097_152);
        // 1 GiB: 32 MiB budget holds 73k entries; the current 262144 is kept, not lowered.
        let small = TuneFacts { mem_total: 1 << 30, ..incident_host() };
        let recs = recommend(&small);
        assert_eq!(value(&recs, "nf_conntrack_max"), 262_144);
        assert!(!recs[0].change && recs[0].reason.starts_with("kept"));
        // A table already holding 1.5M entries on a big host gets room to double.
        let busy = TuneFacts { count: 1_500_000, max: 2_097_152, ..big };
        assert_eq!(value(&recommend(&busy), "nf_conntrack_max"), 4_194_304);
        let unlimited = TuneFacts { max: 0, ..incident_host() };
        let recs = recommend(&unlimited);
        assert_eq!((recs[0].value, recs[0].change), (0, false));
        assert!(recs[0].reason.contains("no limit"));
        // Buckets are never lowered below what is there.
        let many_buckets = TuneFacts { buckets: Some(1 << 22), ..incident_host() };
        assert_eq!(value(&recommend(&many_buckets), "nf_conntrack_buckets"), 1 << 22);
    }

    #[test]
    fn timeouts_are_only_lowered_and_loose_0_keeps_keepalives() {
        let low = TuneFacts { established: Some(600), time_wait: Some(10), ..incident_host() };
        let recs = recommend(&low);
        assert_eq!(value(&recs, "nf_conntrack_tcp_timeout_established"), 600);
        assert_eq!(value(&recs, "nf_conntrack_tcp_timeout_time_wait"), 10);
        let strict = TuneFacts { tcp_loose: Some(0), ..incident_host() };
        assert_eq!(value(&recommend(&strict), "nf_conntrack_tcp_timeout_established"), 7500);
    }

    #[test]
    fn issue_9_16_reasons_stand_on_their_own() {
        // The reasons land in the operator's sysctl.d file: no document they lack is cited.
        for facts in [incident_host(), TuneFacts::default()] {
            for r in recommend(&facts) {
                for word in ["write-up", "incident", "earlier"] {
                    assert!(!r.reason.contains(word), "{}: {}", r.key, r.reason);
                }
            }
        }
        let recs = recommend(&incident_host());
        let tw = recs.iter().find(|r| r.proc_name() == "nf_conntrack_tcp_timeout_time_wait");
        let reason = &tw.unwrap().reason;
        assert!(reason.starts_with("120 s now; "), "{reason}");
        assert!(reason.contains("caused by TIME_WAIT entries alone"), "{reason}");
        assert!(reason.contains("30 s keeps a quarter as many"), "{reason}");
    }

    #[test]
    fn parsers() {
        assert_eq!(
            parse_meminfo("MemTotal:       24684096 kB\nMemFree: 1 kB\n"),
            Some(25_276_514_304)
        );
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
        assert_eq!(pow2_floor(1_690_000), 1 << 20);
    }

    #[test]
    fn sysctl_d_puts_the_reason_above_each_line() {
        let recs = recommend(&incident_host());
        let text = sysctl_d(&recs, Some((6, 18)), "ctguard tune");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# ctguard tune");
        let at = lines.iter().position(|l| *l == "net.netfilter.nf_conntrack_max = 1048576");
        let at = at.expect("max line");
        assert!(lines[at - 1].starts_with("# a full table of 1048576 entries"));
        assert_eq!(text.matches("\nnet.netfilter.").count(), 6);
        let old = sysctl_d(&recs, Some((4, 4)), "x");
        assert!(!old.contains("nf_conntrack_buckets ="));
        assert!(old.contains("# options nf_conntrack hashsize=1048576"));
    }
}
