//! Command-line definitions (clap) for the binary; no I/O happens here.

pub mod evict;
pub mod plan;
pub mod run;

use clap::{Args, Parser, Subcommand};

const EXIT_STATUS: &str = "\
EXIT STATUS:
  0  success
  1  nothing matched (list, count)
  2  error or bad input (nothing was touched)

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
    /// Print JSON Lines (schema in the README).
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
