//! Live counts per source from conntrack events, with the library's live engine: subscribe,
//! seed the live table from a dump, apply every event, resync after an overrun, and hand a
//! snapshot every second to a sink, here one that prints the top sources. `ctguard watch` is
//! the same engine with a sink that prints JSON Lines or a terminal frame.
//!
//! Run as root, for N seconds (default 5): `cargo run --example live_counts -- 10`, or inside a
//! namespace: `ip netns exec NS target/debug/examples/live_counts 10`.

use std::process::ExitCode;
use std::time::Duration;

use ctguard::live::watcher::{Error, Overrun};
use ctguard::live::{Classifier, Config, Netns, Resynced, Shutdown, Sink, View, Watcher};
use ctguard::{Conntrack, GroupBy, GuestMap, Selector};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("live_counts: {e}");
            ExitCode::from(2)
        }
    }
}

/// Prints each snapshot's top three sources, and what the engine did to stay exact.
struct Print;

impl Sink for Print {
    type Error = Error;

    fn overrun(&mut self, o: &Overrun) -> Result<(), Error> {
        println!("events lost ({} overruns): resyncing from a dump", o.overruns);
        Ok(())
    }

    fn resynced(&mut self, r: &Resynced) -> Result<(), Error> {
        println!(
            "resync ({}): {} flows, {} events replayed",
            r.reason.name(),
            r.matched,
            r.replayed
        );
        Ok(())
    }

    fn snapshot(&mut self, v: &View<'_>) -> Result<(), Error> {
        let tally = v.table.tally();
        let top: Vec<String> = tally
            .sorted()
            .iter()
            .take(3)
            .map(|(key, row)| format!("{} {}", tally.label(key), row.total))
            .collect();
        println!("{} flows; top sources: {}", v.table.len(), top.join(", "));
        Ok(())
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse().map_err(|_| format!("bad number of seconds '{n}'"))?,
        None => 5,
    };
    let cfg = Config {
        classifier: Classifier::new(Selector::default(), GroupBy::Src, GuestMap::new()),
        interval: Duration::from_secs(1),
        reconcile: None,
        snapshots: Some(seconds),
        wake: None,
    };
    let mut ct = Conntrack::open()?;
    let mut kernel = Netns { ct: &mut ct, rcvbuf: 64 << 20 };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // A daemon would pass its shutdown (a signal) here; this one stops after its snapshots.
    let never = std::future::pending::<Shutdown>();
    rt.block_on(Watcher::new(&cfg, &mut kernel, &mut Print).run(never))?;
    Ok(())
}
