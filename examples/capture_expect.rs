//! Records the expectation table as the kernel sends it: the payload of each dump message
//! (from `nfgenmsg` on, the netlink header stripped) per line, in lowercase hex (`conntrack -L
//! expect`, raw). `scripts/capture-expect-fixture` runs it in a throwaway namespace to make
//! `tests/fixtures/expect.hex`; decode a line with `ctnetlink::decode_expectation`.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use ctguard::Conntrack;

fn main() -> ExitCode {
    match capture() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("capture_expect: {e}");
            ExitCode::from(2)
        }
    }
}

fn capture() -> Result<(), Box<dyn std::error::Error>> {
    let mut ct = Conntrack::open()?;
    let mut out = BufWriter::new(io::stdout().lock());
    let mut written = Ok(());
    ct.expectations_raw(None, |payload| {
        if written.is_ok() {
            written = payload
                .iter()
                .try_for_each(|b| write!(out, "{b:02x}"))
                .and_then(|()| writeln!(out));
        }
    })?;
    written?;
    out.flush()?;
    Ok(())
}
