//! The guard's eviction as a library call: one guest's ESTABLISHED flows evicted without a
//! human, each written to a spool under a state directory before its delete is sent
//! (`evict::unattended`), then the spool committed and the state directory's spools pruned.
//! `plain` runs the streamed deletes without a spool, for comparison.
//!
//! Run it inside a namespace you made for it, never on a host's own table:
//! `ip netns exec NS cargo run --release --example unattended -- 172.16.3.5 /tmp/state
//! [plain | limit N]`; `ctguard load` of the spool it names puts the flows back.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime};

use ctguard::select::{GuestFilter, Selector, parse_cidr, parse_states};
use ctguard::spool::{self, Spool};
use ctguard::{Conntrack, evict};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unattended: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let usage = "usage: unattended GUEST-CIDR STATE-DIR [plain | limit N]";
    let mut args = std::env::args().skip(1);
    let guest = args.next().ok_or(usage)?;
    let state = std::path::PathBuf::from(args.next().ok_or(usage)?);
    let mode = args.next();
    let limit = match mode.as_deref() {
        Some("limit") => Some(args.next().and_then(|n| n.parse().ok()).ok_or(usage)?),
        _ => None,
    };
    let plain = mode.as_deref() == Some("plain");
    let sel = Selector {
        guests: Some(GuestFilter {
            cidrs: vec![parse_cidr(&guest).map_err(|e| e.to_string())?],
            ..GuestFilter::default()
        }),
        states: parse_states("ESTABLISHED").map_err(|e| e.to_string())?,
        ..Selector::default()
    };
    let stop = AtomicBool::new(false);
    let mut ct = Conntrack::open().map_err(|e| e.to_string())?;
    let started = Instant::now();
    if plain {
        let done =
            evict::unattended(&mut ct, &sel, limit, None, &stop).map_err(|e| e.to_string())?;
        println!("plain streamed: {:.3} s", started.elapsed().as_secs_f64());
        return done.report.write_text(&mut std::io::stdout()).map_err(|e| e.to_string());
    }
    let name = guest.replace('/', "_");
    let path = spool::in_state_dir(&state, &name, SystemTime::now()).map_err(|e| e.to_string())?;
    let mut spool = Spool::create(&path).map_err(|e| e.to_string())?;
    let done = evict::unattended(&mut ct, &sel, limit, Some(&mut spool), &stop);
    let evicted = started.elapsed().as_secs_f64();
    // Whatever the outcome: the spool holds what may have been deleted.
    let written = spool.len();
    let saved =
        if spool.is_empty() { None } else { Some(spool.commit().map_err(|e| e.to_string())?) };
    let total = started.elapsed().as_secs_f64();
    let done = done.map_err(|e| e.to_string())?;
    println!(
        "spooled: {evicted:.3} s to evict, {total:.3} s with the commit; {written} flows in {saved:?}"
    );
    if let Some(e) = &done.hook_error {
        println!("the spool failed: {e}");
    }
    done.report.write_text(&mut std::io::stdout()).map_err(|e| e.to_string())?;
    let pruned = spool::prune(&state, 1 << 30).map_err(|e| e.to_string())?;
    println!("{pruned:?}");
    Ok(())
}
