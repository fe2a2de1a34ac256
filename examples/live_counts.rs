//! Live counts per source from conntrack events, with the library: subscribe, seed the live
//! table from a dump, apply every event, print the top sources every second. `ctguard watch`
//! does the same and also resyncs after an overrun and reconciles on a timer.
//!
//! Run as root, for N seconds (default 5): `cargo run --example live_counts -- 10`, or inside a
//! namespace: `ip netns exec NS target/debug/examples/live_counts 10`.

use std::ops::ControlFlow;
use std::process::ExitCode;
use std::time::Duration;

use ctguard::ctnetlink::{EventMask, Subscription};
use ctguard::live::Classifier;
use ctguard::{Conntrack, DumpFilter, GroupBy, GuestMap, Selector};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("live_counts: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse().map_err(|_| format!("bad number of seconds '{n}'"))?,
        None => 5,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let classifier = Classifier::new(Selector::default(), GroupBy::Src, GuestMap::new());
        // Subscribe first: whatever changes while the dump runs arrives as an event.
        let mut events = Subscription::open(EventMask::ALL, 64 << 20)?;
        let mut table = classifier.empty_table();
        Conntrack::open()?.dump(&DumpFilter::default(), |flow| {
            if let Some(place) = classifier.place(flow) {
                table.seed(flow.identity(), place);
            }
            ControlFlow::Continue(())
        })?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        for _ in 0..seconds {
            loop {
                tokio::select! {
                    _ = tick.tick() => break,
                    r = events.recv(|kind, flow| {
                        table.apply(&classifier.change(kind, flow));
                    }) => {
                        if r?.overrun {
                            return Err("events were lost: a real watcher re-dumps now".into());
                        }
                    }
                }
            }
            let top: Vec<String> = table
                .tally()
                .sorted()
                .iter()
                .take(3)
                .map(|(key, row)| format!("{} {}", table.tally().label(key), row.total))
                .collect();
            println!("{} flows; top sources: {}", table.len(), top.join(", "));
        }
        Ok(())
    })
}
