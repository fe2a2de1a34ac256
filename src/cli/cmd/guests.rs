//! `ctguard guests`: the guest interfaces of the host from route netlink (links, neighbours,
//! bridge FDB), one row per guest MAC behind an interface: NAME IFACE MAC IPv4 IPv6 SOURCE.

use std::io::Write;
use std::net::IpAddr;

use clap::Args as ClapArgs;
use ctguard::discover::{self, Names};
use ctguard::output::jsonl;
use ctguard::rtnl::{self, Mac, join::GuestIface};

use crate::cli::discovery::DirsArgs;
use crate::cli::exit::{Failure, Outcome};

/// `ctguard guests`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Print JSON Lines, one object per row (docs/json-schema.md).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dirs: DirsArgs,
}

/// A validated `guests`: nothing to check.
pub type Plan = Args;

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
pub fn run(p: Plan, out: &mut impl Write) -> Result<Outcome, Failure> {
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
