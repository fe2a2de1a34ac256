//! The eviction engine as a library: select the flows of one source with a dump, then delete
//! exactly those, each delete guarded by the flow's tuple, zone and id (`conntrack -D -s IP`,
//! without its round trip per flow and without its tuple-reuse race).
//!
//! Run it inside a namespace you made for it, never on a host's own table:
//! `ip netns exec NS cargo run --example evict -- 172.16.3.5` (add `delete` to delete; without
//! it the example only counts).

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use ctguard::ctnetlink::Deleter;
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
    let sel = Selector { src: vec![parse_cidr(&src)?], ..Selector::default() };
    let mut ct = Conntrack::open().map_err(|e| e.to_string())?;
    let selection = evict::select(&mut ct, &sel, None, false, &AtomicBool::new(false), |_| {})
        .map_err(|e| e.to_string())?;
    println!("{} flows from {src}", selection.matched);
    if delete {
        let deleter = Deleter::open().map_err(|e| e.to_string())?;
        let t = evict::delete_selected(&selection.keys, deleter).map_err(|e| e.to_string())?;
        println!("deleted {}, vanished {}, failed {}", t.deleted, t.vanished, t.failed);
    }
    Ok(())
}
