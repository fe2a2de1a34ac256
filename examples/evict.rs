//! The eviction engine as a library: the strategy `ctguard evict --yes` would choose for one
//! source, then the select-first way: select its flows with a dump, and delete exactly those,
//! each delete guarded by the flow's tuple, zone and id and re-checked when its answer is old
//! (`conntrack -D -s IP`, without its round trip per flow and without its tuple-reuse race).
//!
//! Run it inside a namespace you made for it, never on a host's own table:
//! `ip netns exec NS cargo run --example evict -- 172.16.3.5` (add `delete` to delete; without
//! it the example only counts).

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use ctguard::ctnetlink::Act;
use ctguard::evict::{Ask, Strategy};
use ctguard::select::{Selector, parse_cidr};
use ctguard::{Conntrack, evict};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("evict: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let src = args.next().ok_or("usage: evict SRC-CIDR [delete]")?;
    let delete = args.next().as_deref() == Some("delete");
    let sel =
        Selector { src: vec![parse_cidr(&src).map_err(|e| e.to_string())?], ..Selector::default() };
    let ask = Ask { yes: true, kernel: ctguard::kernel::release(), ..Ask::default() };
    println!("ctguard evict --yes would take: {:?}", Strategy::choose(&sel, &ask));
    let stop = AtomicBool::new(false);
    let mut ct = Conntrack::open().map_err(|e| e.to_string())?;
    let selection =
        evict::select(&mut ct, &sel, None, false, &stop, |_| {}).map_err(|e| e.to_string())?;
    println!("{} flows from {src}", selection.matched);
    if delete {
        let report = evict::delete_chosen(&selection, &sel, None, Act::Delete, &stop, None)
            .map_err(|e| e.to_string())?;
        report.write_text(&mut std::io::stdout()).map_err(|e| e.to_string())?;
    }
    Ok(())
}
