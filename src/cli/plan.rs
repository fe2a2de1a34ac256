//! Command line → Plan: every value parsed and every cross-flag rule checked, before any
//! socket opens. A bad value becomes a one-line reason (exit 2).

use std::net::IpAddr;
use std::sync::Arc;

use ctguard::flow::{Family, Flow, L4, Proto, ProtoState, Status, Tuple};
use ctguard::guests::GuestMap;
use ctguard::output::json;
use ctguard::select::{self, GuestFilter, Selector};
use ctguard::tally::GroupBy;

use super::{Cli, Command, CreateArgs, SelectArgs};

/// What to run, fully validated.
#[derive(Debug)]
pub struct Plan {
    /// Namespace to enter first.
    pub netns: Option<String>,
    /// The job.
    pub job: Job,
}

/// The job of a plan.
#[derive(Debug)]
pub enum Job {
    /// `top`.
    Top { sel: Selector, by: GroupBy, guests: Arc<GuestMap>, limit: usize, json: bool },
    /// `count`.
    Count { sel: Selector, by: Option<GroupBy>, guests: Arc<GuestMap>, json: bool },
    /// `list`.
    List { sel: Selector, json: bool },
    /// `stats`.
    Stats { json: bool, per_cpu: bool },
    /// `create`.
    Create { flow: Box<Flow> },
    /// `load`: every line already parsed, each flow with its line number.
    Load { path: String, flows: Vec<(usize, Flow)> },
    /// `doctor`.
    Doctor(DoctorPlan),
    /// `tune`.
    Tune { apply: bool, persist: Option<String>, json: bool },
    /// `events`.
    Events(super::live::EventsJob),
    /// `watch`.
    Watch(super::live::WatchJob),
    /// `evict`.
    Evict(Box<super::evict::EvictPlan>),
}

/// What `doctor` needs.
#[derive(Debug)]
pub struct DoctorPlan {
    /// How long to watch the counters.
    pub window: std::time::Duration,
    /// The guest map (empty without a file).
    pub guests: GuestMap,
    /// `--guests` as given, repeated in the evict command.
    pub guests_file: Option<String>,
    /// Top owners shown.
    pub limit: usize,
    /// JSON output.
    pub json: bool,
}

/// Builds the plan, or says in one line what is wrong with the input.
pub fn plan(cli: Cli) -> Result<Plan, String> {
    let job = match cli.command {
        Command::Top(a) => {
            let (sel, guests) = selector(&a.select)?;
            let by = match &a.by {
                Some(b) => GroupBy::parse(b)?,
                None if !guests.is_empty() => GroupBy::Guest,
                None => GroupBy::Src,
            };
            check_guest_grouping(by, &guests)?;
            let limit = positive("-n", &a.limit)? as usize;
            Job::Top { sel, by, guests, limit, json: a.json }
        }
        Command::Count(a) => {
            let (sel, guests) = selector(&a.select)?;
            let by = a.by.as_deref().map(GroupBy::parse).transpose()?;
            if let Some(by) = by {
                check_guest_grouping(by, &guests)?;
            }
            Job::Count { sel, by, guests, json: a.json }
        }
        Command::List(a) => Job::List { sel: selector(&a.select)?.0, json: a.json },
        Command::Stats(a) => Job::Stats { json: a.json, per_cpu: a.per_cpu },
        Command::Create(a) => Job::Create { flow: Box::new(create_flow(&a)?) },
        Command::Load(a) => Job::Load { flows: load_flows(&a.file)?, path: a.file },
        Command::Doctor(a) => Job::Doctor(doctor_plan(a)?),
        Command::Tune(a) => {
            if let Some(p) = &a.persist {
                check_persist_path(p)?;
            }
            Job::Tune { apply: a.apply, persist: a.persist, json: a.json }
        }
        Command::Events(a) => Job::Events(super::live::plan_events(a)?),
        Command::Watch(a) => Job::Watch(super::live::plan_watch(a, cli.netns.clone())?),
        Command::Evict(a) => Job::Evict(Box::new(super::evict::plan(a)?)),
    };
    Ok(Plan { netns: cli.netns, job })
}

/// Reads and parses a `load` file whole, so a bad line means nothing is created. Any readable
/// path is taken as it is (a FIFO, `<(cat f)`, a file), or `-` for stdin; nothing is stat-ed
/// first. The error is one line: the first bad line, and how many more there are.
fn load_flows(path: &str) -> Result<Vec<(usize, Flow)>, String> {
    use std::io::BufReader;
    let input: Box<dyn std::io::BufRead> = if path == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
        Box::new(BufReader::new(f))
    };
    let mut flows = Vec::new();
    let (mut first_bad, mut bad_lines) = (None, 0usize);
    for r in json::read_numbered_flows(input) {
        match r {
            Ok(f) => flows.push(f),
            Err(e) => {
                first_bad.get_or_insert_with(|| e.to_string());
                bad_lines += 1;
            }
        }
    }
    match first_bad {
        None => Ok(flows),
        Some(first) => {
            let more = if bad_lines > 1 {
                format!(" (and {} more bad lines)", bad_lines - 1)
            } else {
                String::new()
            };
            Err(format!("{path}: {first}{more}; nothing was created"))
        }
    }
}

/// The longest `--window`: doctor is for an operator waiting on it.
const MAX_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

fn doctor_plan(a: super::DoctorArgs) -> Result<DoctorPlan, String> {
    let window = select::parse_duration(&a.window).map_err(|e| format!("--window: {e}"))?;
    if window.is_zero() || window > MAX_WINDOW {
        return Err(format!(
            "--window '{}' must be more than 0 and at most 60s (the counters are sampled twice)",
            a.window
        ));
    }
    let limit = positive("-n", &a.limit)? as usize;
    let guests = match &a.guests {
        Some(path) => GuestMap::load(path).map_err(|e| e.to_string())?,
        None => GuestMap::new(),
    };
    Ok(DoctorPlan { window, guests, guests_file: a.guests, limit, json: a.json })
}

/// A sysctl.d file can be written there: `tune::persist_target_problem` has no objection.
fn check_persist_path(p: &str) -> Result<(), String> {
    match ctguard::tune::persist_target_problem(std::path::Path::new(p)) {
        Some(why) => Err(format!("--persist {p}: {why}")),
        None => Ok(()),
    }
}

fn check_guest_grouping(by: GroupBy, guests: &GuestMap) -> Result<(), String> {
    if by == GroupBy::Guest && guests.is_empty() {
        return Err("--by guest needs a guest file (--guests FILE)".into());
    }
    Ok(())
}

fn many<T>(values: &[String], parse: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    values.iter().map(|v| parse(v)).collect()
}

fn seconds(flag: &str, s: &str) -> Result<u32, String> {
    let d = select::parse_duration(s).map_err(|e| format!("{flag}: {e}"))?;
    u32::try_from(d.as_secs()).map_err(|_| format!("{flag}: duration '{s}' is too long"))
}

/// The selector and the guest map (empty without `--guests`), one map shared by both.
pub fn selector(a: &SelectArgs) -> Result<(Selector, Arc<GuestMap>), String> {
    let guests = match &a.guests {
        Some(path) => GuestMap::load(path).map_err(|e| e.to_string())?,
        None => GuestMap::new(),
    };
    let guests = Arc::new(guests);
    let mut filter = GuestFilter::default();
    for g in &a.guest {
        match guests.find(g) {
            Some(id) => filter.ids.push(id),
            None => filter.cidrs.push(select::parse_cidr(g).map_err(|_| {
                if guests.is_empty() {
                    format!("--guest '{g}' is not an IP or CIDR (guest names need --guests FILE)")
                } else {
                    format!(
                        "--guest '{g}' is neither a guest in {} nor an IP or CIDR",
                        a.guests.as_deref().unwrap_or("")
                    )
                }
            })?),
        }
    }
    let mut states = Vec::new();
    for s in &a.state {
        states.extend(select::parse_states(s)?);
    }
    let (status_set, status_clear) =
        a.status.as_deref().map(select::parse_status).transpose()?.unwrap_or((0, 0));
    let sel = Selector {
        src: many(&a.src, select::parse_cidr)?,
        dst: many(&a.dst, select::parse_cidr)?,
        reply_src: many(&a.reply_src, select::parse_cidr)?,
        reply_dst: many(&a.reply_dst, select::parse_cidr)?,
        guests: (!a.guest.is_empty()).then(|| GuestFilter { map: Arc::clone(&guests), ..filter }),
        protos: many(&a.proto, select::parse_proto)?,
        sport: many(&a.sport, select::parse_port_range)?,
        dport: many(&a.dport, select::parse_port_range)?,
        states,
        status_set,
        status_clear,
        mark: a.mark.as_deref().map(select::parse_mark).transpose()?,
        zone: a.zone.as_deref().map(|z| parse_num::<u16>("zone", z)).transpose()?,
        family: a.family.as_deref().map(select::parse_family).transpose()?,
        idle_min: a.idle.as_deref().map(|s| seconds("--idle", s)).transpose()?,
        timeout_below: a
            .timeout_below
            .as_deref()
            .map(|s| seconds("--timeout-below", s))
            .transpose()?,
        timeouts: None,
    };
    Ok((sel, guests))
}

fn parse_num<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("invalid {what} '{s}'"))
}

fn addr(what: &str, s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|_| format!("invalid {what} address '{s}'"))
}

/// The flow `create` asks for, with the reply tuple defaulting to the inverse.
fn create_flow(a: &CreateArgs) -> Result<Flow, String> {
    let proto = select::parse_proto(&a.proto)?;
    let (src, dst) = (addr("source", &a.src)?, addr("destination", &a.dst)?);
    if Family::of(src) != Family::of(dst) {
        return Err("source and destination must be the same family".into());
    }
    let port = |what: &str, v: &Option<String>| {
        v.as_deref().map(|p| parse_num::<u16>(what, p)).transpose()
    };
    let l4 = if proto.has_ports() {
        let (Some(s), Some(d)) = (port("--sport", &a.sport)?, port("--dport", &a.dport)?) else {
            return Err(format!("{proto} needs --sport and --dport"));
        };
        L4::Ports { src: s, dst: d }
    } else if proto.is_icmp() {
        let n = |what: &str, v: &Option<String>| {
            v.as_deref().map(|x| parse_num::<u8>(what, x)).transpose()
        };
        let Some(kind) = n("--icmp-type", &a.icmp_type)? else {
            return Err(format!("{proto} needs --icmp-type"));
        };
        let code = n("--icmp-code", &a.icmp_code)?.unwrap_or(0);
        let id = port("--icmp-id", &a.icmp_id)?.unwrap_or(0);
        L4::Icmp { kind, code, id }
    } else {
        L4::None
    };
    let orig = Tuple { src, dst, l4, zone: None };
    let mut reply = orig.inverse();
    if let Some(s) = &a.reply_src {
        reply.src = addr("reply source", s)?;
    }
    if let Some(d) = &a.reply_dst {
        reply.dst = addr("reply destination", d)?;
    }
    if Family::of(reply.src) != Family::of(src) || Family::of(reply.dst) != Family::of(src) {
        return Err("reply addresses must be the same family as the original".into());
    }
    if let L4::Ports { src: rs, dst: rd } = &mut reply.l4 {
        if let Some(p) = port("--reply-sport", &a.reply_sport)? {
            *rs = p;
        }
        if let Some(p) = port("--reply-dport", &a.reply_dport)? {
            *rd = p;
        }
    }
    let state = match &a.state {
        None => None,
        Some(s) => {
            let states = select::parse_states(s)?;
            let fits = |st: &&ProtoState| {
                matches!(
                    (proto, st),
                    (Proto::TCP, ProtoState::Tcp(_))
                        | (Proto::SCTP, ProtoState::Sctp(_))
                        | (Proto::DCCP, ProtoState::Dccp(_))
                )
            };
            Some(
                *states
                    .iter()
                    .find(fits)
                    .ok_or_else(|| format!("state '{s}' does not apply to {proto}"))?,
            )
        }
    };
    let status = match &a.status {
        Some(s) => {
            let (set, clear) = select::parse_status(s)?;
            if clear != 0 {
                return Err("--status for create takes bits to set, not negations".into());
            }
            set
        }
        None => 0,
    };
    Ok(Flow {
        family: Family::of(src),
        proto,
        orig,
        reply,
        state,
        status: Status(status),
        timeout: Some(seconds("--timeout", &a.timeout)?),
        mark: a.mark.as_deref().map(|m| select::parse_mark(m).map(|(v, _)| v)).transpose()?,
        zone: a.zone.as_deref().map(|z| parse_num::<u16>("zone", z)).transpose()?,
        ..Flow::default()
    })
}

/// A count flag's value: a positive whole number.
pub(super) fn positive(flag: &str, s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid {flag} '{s}' (a positive number)"))
}
