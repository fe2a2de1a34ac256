//! Command-line definitions (clap) for the binary; no I/O happens here.

pub mod doctor;
pub mod evict;
pub mod live;
pub mod plan;
pub mod run;
pub mod save;
pub mod signals;

use clap::{Args, Parser, Subcommand};

const EXIT_STATUS: &str = "\
EXIT STATUS:
  0  success
  1  nothing matched (list, count, evict); evict's question answered no; at risk or full (doctor)
  2  error, or bad input (refused before anything is touched); evict: also a delete the kernel
     refused, or Ctrl-C

Needs CAP_NET_ADMIN (run as root). Conntrack-tools users: `list` prints `conntrack -L` lines.";

/// ctguard: find who fills the conntrack table, and relieve it. Talks ctnetlink directly.
#[derive(Debug, Parser)]
#[command(name = "ctguard", version, about, after_help = EXIT_STATUS, propagate_version = true)]
pub struct Cli {
    /// Run inside this network namespace: a name under /run/netns, or a path to a netns file.
    #[arg(long, global = true, value_name = "NAME|PATH")]
    pub netns: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Who fills the table: fill %, the top owners by entries, per-state columns.
    Top(TopArgs),
    /// Count the selected flows, optionally grouped (`--by state` is the procfs awk one-liner).
    Count(CountArgs),
    /// Print the selected flows like `conntrack -L`, or as JSON Lines.
    List(ListArgs),
    /// Table count, max, fill %, buckets, and the per-CPU counters summed.
    Stats(StatsArgs),
    /// Create one flow (`conntrack -I`).
    Create(CreateArgs),
    /// Create the flows of a JSON Lines file written by `list --json` (or `-` for stdin).
    Load(LoadArgs),
    /// Is the table full, who filled it, what to run now (exit 0 healthy, 1 at risk or full).
    Doctor(DoctorArgs),
    /// Recommended conntrack sysctls for this host, each with its reason.
    Tune(TuneArgs),
    /// Print conntrack events like `conntrack -E` (with timestamps), or as JSON Lines.
    Events(EventsArgs),
    /// Live counts per group and state from events: a top-like view, or JSON Lines snapshots.
    #[command(after_help = WATCH_HELP)]
    Watch(WatchArgs),
    /// Delete exactly the selected flows: preview and confirm, or --yes; --dry-run to see.
    Evict(evict::EvictArgs),
}

/// Which flows: the same flags for every command.
#[derive(Debug, Args, Default, Clone)]
pub struct SelectArgs {
    /// Original source IP or CIDR (repeatable: any of them).
    #[arg(short = 's', long = "src", value_name = "CIDR")]
    pub src: Vec<String>,
    /// Original destination IP or CIDR (repeatable).
    #[arg(short = 'd', long = "dst", value_name = "CIDR")]
    pub dst: Vec<String>,
    /// Reply source IP or CIDR (repeatable; the DNAT target).
    #[arg(long, value_name = "CIDR")]
    pub reply_src: Vec<String>,
    /// Reply destination IP or CIDR (repeatable; the SNAT address).
    #[arg(long, value_name = "CIDR")]
    pub reply_dst: Vec<String>,
    /// Guest name from --guests, or a CIDR standing for a guest (repeatable).
    #[arg(long, value_name = "NAME|CIDR")]
    pub guest: Vec<String>,
    /// Guest file (TOML: name = ["CIDR", ...]).
    #[arg(long, value_name = "FILE", env = "CTGUARD_GUESTS")]
    pub guests: Option<String>,
    /// Protocol name or number (repeatable).
    #[arg(short = 'p', long = "proto", value_name = "PROTO")]
    pub proto: Vec<String>,
    /// Original source port or range LOW-HIGH (repeatable).
    #[arg(long, value_name = "PORT")]
    pub sport: Vec<String>,
    /// Original destination port or range LOW-HIGH (repeatable).
    #[arg(long, value_name = "PORT")]
    pub dport: Vec<String>,
    /// States as `conntrack -L` prints them, comma separated (ESTABLISHED,TIME_WAIT).
    #[arg(long, value_name = "LIST")]
    pub state: Vec<String>,
    /// Status bits, comma separated, `!` negates (ASSURED,!SEEN_REPLY).
    #[arg(long, value_name = "LIST")]
    pub status: Option<String>,
    /// Mark VALUE[/MASK], decimal or 0x-hex.
    #[arg(long, value_name = "MARK")]
    pub mark: Option<String>,
    /// Conntrack zone.
    #[arg(long, value_name = "N")]
    pub zone: Option<String>,
    /// Address family: ipv4 or ipv6.
    #[arg(short = 'f', long, value_name = "FAMILY")]
    pub family: Option<String>,
    /// Idle at least this long (state timeout minus remaining; e.g. 10m, 1h).
    #[arg(long, value_name = "DURATION")]
    pub idle: Option<String>,
    /// Less than this long left before the entry expires.
    #[arg(long, value_name = "DURATION")]
    pub timeout_below: Option<String>,
}

/// `ctguard top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Group by: guest, src, dst, src/N, dst/N, state, proto, zone, mark
    /// (default: guest with --guests, else src).
    #[arg(long, value_name = "KEY")]
    pub by: Option<String>,
    /// How many groups to show.
    #[arg(short = 'n', long, default_value = "10", value_name = "N")]
    pub limit: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `ctguard count`.
#[derive(Debug, Args)]
pub struct CountArgs {
    /// Group by: guest, src, dst, src/N, dst/N, state, proto, zone, mark.
    #[arg(long, value_name = "KEY")]
    pub by: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `ctguard list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON Lines, one flow per line (schema in docs/json-schema.md).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `ctguard stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Also show each CPU's counters.
    #[arg(long)]
    pub per_cpu: bool,
}

/// `ctguard create`: like `conntrack -I`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Protocol name or number.
    #[arg(short = 'p', long = "proto", value_name = "PROTO")]
    pub proto: String,
    /// Original source address.
    #[arg(short = 's', long = "src", value_name = "IP")]
    pub src: String,
    /// Original destination address.
    #[arg(short = 'd', long = "dst", value_name = "IP")]
    pub dst: String,
    /// Original source port.
    #[arg(long, value_name = "PORT")]
    pub sport: Option<String>,
    /// Original destination port.
    #[arg(long, value_name = "PORT")]
    pub dport: Option<String>,
    /// Reply source address (default: the original destination; differs for DNAT).
    #[arg(long, value_name = "IP")]
    pub reply_src: Option<String>,
    /// Reply destination address (default: the original source; differs for SNAT).
    #[arg(long, value_name = "IP")]
    pub reply_dst: Option<String>,
    /// Reply source port (default: the original destination port).
    #[arg(long, value_name = "PORT")]
    pub reply_sport: Option<String>,
    /// Reply destination port (default: the original source port).
    #[arg(long, value_name = "PORT")]
    pub reply_dport: Option<String>,
    /// ICMP type (ICMP/ICMPv6).
    #[arg(long, value_name = "N")]
    pub icmp_type: Option<String>,
    /// ICMP code.
    #[arg(long, value_name = "N")]
    pub icmp_code: Option<String>,
    /// ICMP identifier.
    #[arg(long, value_name = "N")]
    pub icmp_id: Option<String>,
    /// TCP/SCTP/DCCP state.
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
    /// Timeout (seconds, or a duration like 1h).
    #[arg(short = 't', long, value_name = "DURATION")]
    pub timeout: String,
    /// Status bits to set, comma separated (ASSURED,SEEN_REPLY).
    #[arg(short = 'u', long, value_name = "LIST")]
    pub status: Option<String>,
    /// Mark.
    #[arg(short = 'm', long, value_name = "MARK")]
    pub mark: Option<String>,
    /// Zone.
    #[arg(short = 'w', long, value_name = "N")]
    pub zone: Option<String>,
}

/// `ctguard load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// JSON Lines file of flows (`list --json` output), or `-` for stdin.
    pub file: String,
}

/// `ctguard doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// How long to watch the per-CPU counters (a rising `drop` means full now).
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub window: String,
    /// Guest file: name the offenders by guest instead of by source address.
    #[arg(long, value_name = "FILE", env = "CTGUARD_GUESTS")]
    pub guests: Option<String>,
    /// How many top owners to show.
    #[arg(short = 'n', long, default_value = "5", value_name = "N")]
    pub limit: String,
    /// Print JSON (schema in docs/json-schema.md).
    #[arg(long)]
    pub json: bool,
}

/// `ctguard tune`.
#[derive(Debug, Args)]
pub struct TuneArgs {
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

const WATCH_HELP: &str = "\
Counts are exact: ctguard subscribes to NEW, UPDATE and DESTROY events first, seeds from a dump,
keys flows by CTA_ID and tuple, and re-dumps after any event loss (ENOBUFS: an `overrun`). With
nf_conntrack_events=2 (the kernel default) flows created while no listener existed never report
DESTROY; a reconciliation dump every --reconcile period corrects them. --enable-events sets
nf_conntrack_events=1 in the target network namespace only (the sysctl is per namespace).

Not on a terminal (or with --json) it prints JSON Lines: a `resync` record when the counts were
rebuilt from a dump, a `lost` record per overrun, and a `snapshot` per --interval.";

/// Shared by `events` and `watch`.
#[derive(Debug, Args, Clone)]
pub struct LiveArgs {
    /// Kernel receive buffer for events (SO_RCVBUFFORCE): bytes or 256K, 64M, 1G. The kernel
    /// doubles it and charges ~1.3 KiB per waiting event: 64M holds ~100,000 events.
    #[arg(long, value_name = "SIZE", default_value = live::DEFAULT_BUFFER)]
    pub buffer: String,
    /// Set nf_conntrack_events=1 first, in the target network namespace only (the sysctl is per
    /// namespace), so that every new flow reports events.
    #[arg(long)]
    pub enable_events: bool,
    /// Stop after N events (events) or N snapshots (watch).
    #[arg(long, value_name = "N")]
    pub count: Option<String>,
    /// Stop after this long (30s, 5m); watch prints a last snapshot.
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,
}

/// `--idle` and `--timeout-below` change with the clock, not with events: `events` and `watch`
/// refuse them (with that reason), so their help leaves them out. They still parse, so the
/// refusal keeps its reason.
fn hide_clock_flags(a: clap::Arg) -> clap::Arg {
    if matches!(a.get_id().as_str(), "idle" | "timeout_below") { a.hide(true) } else { a }
}

/// `ctguard events`.
#[derive(Debug, Args)]
#[command(mut_args(hide_clock_flags))]
pub struct EventsArgs {
    /// Event kinds, comma separated: new, update, destroy (default: all three). Only these
    /// groups are subscribed.
    #[arg(short = 'e', long = "event", value_name = "LIST")]
    pub event: Option<String>,
    /// Print JSON Lines: {"type":"new","time":...,"flow":{...}}, and {"type":"lost"} records.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub live: LiveArgs,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `ctguard watch`.
#[derive(Debug, Args)]
#[command(mut_args(hide_clock_flags))]
pub struct WatchArgs {
    /// Group by: guest, src, dst, src/N, dst/N, state, proto, zone, mark
    /// (default: guest with --guests, else src).
    #[arg(long, value_name = "KEY")]
    pub by: Option<String>,
    /// Time between snapshots.
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub interval: String,
    /// Re-dump and correct the counts this often; `off` disables. Default: 30s when
    /// nf_conntrack_events is not 1 (flows may be silent), else 5m (a safety net).
    #[arg(long, value_name = "DURATION")]
    pub reconcile: Option<String>,
    /// Groups per snapshot (default: all in JSON, what fits on a terminal).
    #[arg(short = 'n', long, value_name = "N")]
    pub limit: Option<String>,
    /// Print JSON Lines (the default when stdout is not a terminal).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub live: LiveArgs,
    #[command(flatten)]
    pub select: SelectArgs,
}
