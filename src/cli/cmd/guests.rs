//! `ctguard guests`: the guest interfaces of the host from route netlink (links, neighbours,
//! bridge FDB), one row per guest MAC behind an interface: NAME IFACE MAC IPv4 IPv6 SOURCE.
//! With `--names`, the names `--guest` takes, one a line, for the shell completions to call
//! back: a guest file's and the host's.

use std::io::Write;
use std::net::IpAddr;

use clap::{Args as ClapArgs, ValueHint};
use ctguard::discover::{self, Names, host};
use ctguard::guests::{self, GuestId, GuestMap};
use ctguard::output::jsonl;
use ctguard::rtnl::{self, Mac, join::GuestIface};

use crate::cli::discovery::DirsArgs;
use crate::cli::exit::{Failure, Outcome};

/// `ctguard guests`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Print JSON Lines, one object per row (docs/json-schema.md).
    #[arg(long, conflicts_with = "names")]
    pub json: bool,
    /// Print only the guest names `--guest` takes, one a line, sorted: the --guests file's and
    /// the host's (the shell completions call this; a failed look at the host is a warning).
    #[arg(long)]
    pub names: bool,
    /// With --names: also the guests named in this file.
    #[arg(long, value_name = "FILE", env = "CTGUARD_GUESTS", value_hint = ValueHint::FilePath)]
    pub guests: Option<String>,
    /// With --names: the --guests file's names only, no look at the host.
    #[arg(long, requires = "names")]
    pub no_discover: bool,
    #[command(flatten)]
    pub dirs: DirsArgs,
}

/// A validated `guests`.
#[derive(Debug)]
pub struct Plan {
    args: Args,
    /// With `--names`: the `--guests` file's guests (empty without one).
    file: GuestMap,
}

/// Reads the guest file `--names` prints (a bad one is refused, as every command refuses it;
/// so is anything but a regular file, since a shell waits on `--names`).
pub fn plan(args: Args) -> Result<Plan, String> {
    let file = match (args.names, args.guests.as_deref()) {
        (true, Some(path)) => GuestMap::load_regular(path).map_err(|e| e.to_string())?,
        _ => GuestMap::new(),
    };
    Ok(Plan { args, file })
}

/// One output row.
#[derive(Debug, serde::Serialize)]
struct Row<'a> {
    name: String,
    source: &'static str,
    iface: &'a str,
    ifindex: u32,
    kind: Option<&'a str>,
    mac: Option<Mac>,
    ipv4: Vec<IpAddr>,
    ipv6: Vec<IpAddr>,
}

/// A row, named by `discover::resolve`'s precedence: the hypervisor's records, then the
/// interface alias, then its name.
fn row<'a>(g: &'a GuestIface, names: &Names) -> Row<'a> {
    let mac = g.mac.map(|m| m.to_string());
    let named =
        discover::resolve(None, &g.addrs, names, &g.iface, g.alias.as_deref(), mac.as_deref());
    let (name, source) = (named.name, named.source.as_str());
    let (ipv6, ipv4) = g.addrs.iter().partition(|a| a.is_ipv6());
    Row {
        name,
        source,
        iface: &g.iface,
        ifindex: g.ifindex,
        kind: g.kind.as_deref(),
        mac: g.mac,
        ipv4,
        ipv6,
    }
}

fn list(addrs: &[IpAddr]) -> String {
    if addrs.is_empty() {
        return "-".into();
    }
    addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// Runs `guests` in the current namespace. Exit 0 with rows, 1 when no guest interface is
/// found.
pub fn run(plan: Plan, out: &mut impl Write) -> Result<Outcome, Failure> {
    if plan.args.names {
        return names(plan, out);
    }
    let p = plan.args;
    let dumps = rtnl::dump(rtnl::DEFAULT_TIMEOUT).map_err(|e| Failure::Message(e.to_string()))?;
    let guests = rtnl::join::guests(&dumps);
    // An unreadable or malformed record is a warning naming the file: the rows go on.
    let names = Names::discover(&p.dirs.libvirt_dir, &p.dirs.pve_dir);
    for w in &names.warnings {
        eprintln!("ctguard: warning: {w}");
    }
    let rows: Vec<Row<'_>> = guests.iter().map(|g| row(g, &names)).collect();
    if p.json {
        for r in &rows {
            jsonl::write_line(out, r)?;
        }
    } else {
        let mut table = comfy_table::Table::new();
        table.load_style(comfy_table::presets::NOTHING);
        table.set_header(["NAME", "IFACE", "MAC", "IPv4", "IPv6", "SOURCE"]);
        for r in &rows {
            let mac = r.mac.map_or_else(|| "-".to_string(), |m| m.to_string());
            table.add_row([&r.name, r.iface, &mac, &list(&r.ipv4), &list(&r.ipv6), r.source]);
        }
        writeln!(out, "{table}")?;
    }
    Ok(if rows.is_empty() { Outcome::NothingMatched } else { Outcome::Ok })
}

/// `--names`: the file's guests joined with the host's (one route netlink dump, as every
/// command that names guests discovers), sorted. A shell waits on this, so
/// a failed discovery is a warning and the file's names still print. Exit 1 when there is no
/// name.
fn names(plan: Plan, out: &mut impl Write) -> Result<Outcome, Failure> {
    let map = if plan.args.no_discover {
        plan.file
    } else {
        match host::discover(&plan.file, &plan.args.dirs.dirs(), rtnl::DEFAULT_TIMEOUT) {
            Ok(found) => {
                for w in &found.warnings {
                    eprintln!("ctguard: warning: {w}");
                }
                found.map
            }
            Err(e) => {
                eprintln!("ctguard: warning: guest discovery: {e}");
                plan.file
            }
        }
    };
    let names = typable_names(&map);
    for name in &names {
        writeln!(out, "{name}")?;
    }
    Ok(if names.is_empty() { Outcome::NothingMatched } else { Outcome::Ok })
}

/// The map's names (each once: a map holds a name once), sorted, but for those carrying control or invisible
/// characters: no shell word completes to them, and one with a newline would read as two.
fn typable_names(map: &GuestMap) -> Vec<&str> {
    let mut names: Vec<&str> = (0..map.len())
        .map(|id| map.name(id as GuestId))
        .filter(|name| matches!(guests::escaped(name), std::borrow::Cow::Borrowed(_)))
        .collect();
    names.sort_unstable();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_16_names_are_sorted_once_and_typable() {
        let mut map = GuestMap::new();
        for name in ["web", "db", "evil\nname", "api"] {
            map.add(name, vec![]);
        }
        map.add_seen("db", vec![], &["vnet1".to_string()]);
        assert_eq!(typable_names(&map), ["api", "db", "web"]);
    }
}
