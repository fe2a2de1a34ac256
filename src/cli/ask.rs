//! `--live` for `top` and `count`: ask the running guard (`ctguard guard`) over its query
//! socket instead of dumping the table, and turn its answer into the same [`Tally`] a dump
//! would have made, so the same printing gives the same bytes.
//!
//! The guard keeps counts per guest and state column, nothing finer: only `--by guest`,
//! `--by state` and the `--guest NAME` / `--state` (TCP states) filters can be answered; any
//! other selector needs a dump and is refused with that reason before anything is asked.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use ctguard::flow::{Proto, ProtoState, TcpState};
use ctguard::guard::query::{self, Answer, DEFAULT_SOCKET};
use ctguard::guests::{GuestId, GuestMap};
use ctguard::select::{self, Selector};
use ctguard::stats::Fill;
use ctguard::tally::{COLUMNS, GroupBy, GroupKey, Tally};

use super::discovery::Pending;
use super::exit::Failure;
use super::select_args::SelectArgs;

/// How long the whole exchange with the guard may take (it answers in milliseconds).
const TIMEOUT: Duration = Duration::from_secs(2);

/// `--live` and `--socket`, shared by `top` and `count`.
#[derive(Debug, Args, Clone)]
pub struct LiveArgs {
    /// Ask the running guard (`ctguard guard`) instead of dumping the table: milliseconds,
    /// no dump. By guest or by state only (non-TCP flows are one NON_TCP group); filters:
    /// --guest NAME, --state (TCP flows in those states). The guard's guest names are used
    /// (--guests is not read).
    #[arg(long)]
    pub live: bool,
    /// The guard's query socket (with --live).
    #[arg(long, value_name = "PATH", env = "CTGUARD_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// Where the counts of `top` or `count` come from.
#[derive(Debug)]
pub enum Source {
    /// The running guard (`--live`).
    Live(Ask),
    /// A dump of the table: the selection, the guest map naming the owners, and what
    /// discovery still owes them.
    Dump(Box<Selector>, Arc<GuestMap>, Pending),
}

impl Source {
    /// `--live`: the guard's answer (checked before any guest file is read: the guard's names
    /// are the ones that count); else the selection, with its guest file read.
    pub fn of(
        live: &LiveArgs,
        by: Option<GroupBy>,
        default: GroupBy,
        sel: &SelectArgs,
    ) -> Result<Source, String> {
        if live.live {
            return Ok(Source::Live(plan(live, by, default, sel)?));
        }
        let s = sel.selection()?;
        Ok(Source::Dump(Box::new(s.sel), s.guests, s.pending))
    }
}

/// What a `--live` command asks for, checked.
#[derive(Debug, Clone)]
pub struct Ask {
    socket: PathBuf,
    by: GroupBy,
    guests: Vec<String>,
    columns: Option<Vec<usize>>,
}

/// The plan of a `--live` command: `by` is the `--by` given (`None`: `default`); the
/// selecting flags may only name guests (by name) and TCP states.
pub fn plan(
    live: &LiveArgs,
    by: Option<GroupBy>,
    default: GroupBy,
    sel: &SelectArgs,
) -> Result<Ask, String> {
    let by = by.unwrap_or(default);
    if !matches!(by, GroupBy::Guest | GroupBy::State | GroupBy::All) {
        return Err(format!(
            "--by {} with --live: the guard holds counts by guest and state only (drop --live \
             to dump the table)",
            by.name()
        ));
    }
    let mut rest = sel.clone();
    rest.guest.clear();
    rest.state.clear();
    rest.guests = None;
    let rest = rest.describe();
    if !rest.is_empty() {
        return Err(format!(
            "{rest} with --live: the guard answers by guest and state only (drop --live to dump \
             the table)"
        ));
    }
    if let Some(g) = sel.guest.iter().find(|g| select::parse_cidr(g).is_ok()) {
        return Err(format!(
            "--guest {g} with --live: the guard answers guests by name only (drop --live to \
             dump the table)"
        ));
    }
    // A name may be a TCP state and an SCTP or DCCP one (ESTABLISHED): the guard's column is
    // the TCP flows in it; SCTP and DCCP flows are all in its NON_TCP column.
    let mut columns = None;
    for given in &sel.state {
        // The text passed `parse_states`: a list without empty items.
        for name in select::comma_list(&given.text, "state").map_err(|e| e.to_string())? {
            // Through the selection's own parser, so conntrack's LISTEN means SYN_SENT2 here too.
            let tcp = select::parse_states(name).ok().and_then(|states| {
                states.into_iter().find_map(|s| match s {
                    ProtoState::Tcp(t) => Some(t),
                    _ => None,
                })
            });
            match tcp {
                Some(t) if !matches!(t, TcpState::Other(_)) => {
                    columns.get_or_insert_with(Vec::new).push(usize::from(t.number()));
                }
                _ => {
                    return Err(format!(
                        "--state {name} with --live: the guard counts TCP states only (drop \
                         --live to dump the table)"
                    ));
                }
            }
        }
    }
    Ok(Ask { socket: live.socket.clone(), by, guests: sel.guest.clone(), columns })
}

/// The key of a column's flows when grouping by state: the TCP states as a dump keys them
/// (so the labels and their order are the dump's), `TCP_OTHER` and `NON_TCP` as columns.
fn state_key(col: usize) -> GroupKey {
    match TcpState::from_number(col as u8) {
        TcpState::Other(_) => GroupKey::Column(col as u8),
        t => GroupKey::State(Some(ProtoState::Tcp(t)), Proto::TCP),
    }
}

/// The guard's answer as a tally grouped as asked, with the guest filter and the state
/// columns applied; a `--guest` the guard does not know is an error.
pub fn tally(ask: &Ask, answer: &Answer) -> Result<Tally, String> {
    let mut map = GuestMap::new();
    for name in &answer.guests {
        map.add(name, Vec::new());
    }
    let mut only: Vec<GuestId> = Vec::new();
    for g in &ask.guests {
        match map.find(g) {
            Some(id) => only.push(id),
            None => {
                return Err(format!(
                    "--guest '{g}' is not a guest of the guard on {}",
                    ask.socket.display()
                ));
            }
        }
    }
    let mut tally = Tally::new(ask.by, Arc::new(map));
    for (guest, row) in &answer.rows {
        if !only.is_empty() && !guest.is_some_and(|g| only.contains(&g)) {
            continue;
        }
        for col in 0..COLUMNS {
            if ask.columns.as_ref().is_some_and(|cols| !cols.contains(&col)) {
                continue;
            }
            let key = match ask.by {
                GroupBy::Guest => GroupKey::Guest(*guest),
                GroupBy::State => state_key(col),
                _ => GroupKey::All,
            };
            tally.add_count(key, col, row.by_state[col]);
        }
    }
    Ok(tally)
}

/// Asks the guard: its counts as a tally, and the table's fill at its snapshot.
pub fn counts(ask: &Ask) -> Result<(Tally, Option<Fill>), Failure> {
    let answer = query::ask(&ask.socket, TIMEOUT).map_err(|e| Failure::Message(e.to_string()))?;
    let tally = tally(ask, &answer).map_err(Failure::Message)?;
    Ok((tally, answer.table))
}
