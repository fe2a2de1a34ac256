//! Records conntrack events as the kernel sends them: one netlink message per line, in
//! lowercase hex (`conntrack -E`, raw). `scripts/capture-events-fixture` runs it in a throwaway
//! namespace to make `tests/fixtures/events.hex`; decode a line with `ctnetlink::decode_event`.
//!
//! Argument: how many event messages to record before exiting (default 10). Prints `ready` on
//! stderr once subscribed.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use ctguard::ctnetlink::{EventMask, Subscription};

fn main() -> ExitCode {
    match capture() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("capture_events: {e}");
            ExitCode::from(2)
        }
    }
}

fn capture() -> Result<(), Box<dyn std::error::Error>> {
    let want: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().map_err(|_| format!("bad count '{n}'"))?,
        None => 10,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    rt.block_on(async {
        let mut sub = Subscription::open(EventMask::ALL, 1 << 20)?;
        eprintln!("ready");
        let mut out = BufWriter::new(io::stdout().lock());
        let mut seen = 0;
        while seen < want {
            let datagram = sub.recv_raw().await?;
            // One datagram can hold several messages; record each on its own line.
            let mut off = 0;
            while off + 16 <= datagram.len() && seen < want {
                let len = u32::from_ne_bytes(datagram[off..off + 4].try_into()?) as usize;
                let msg = datagram.get(off..off + len).ok_or("truncated message")?;
                msg.iter().try_for_each(|b| write!(out, "{b:02x}"))?;
                writeln!(out)?;
                seen += 1;
                off += (len + 3) & !3;
            }
        }
        out.flush()?;
        Ok(())
    })
}
