//! Records the conntrack table as the kernel sends it: one netlink message per line, in
//! lowercase hex (`conntrack -L`, raw). `scripts/capture-fixture` runs it in a throwaway
//! namespace to make `tests/fixtures/*.hex`; decode a line with `ctnetlink::decode_message`.
//!
//! Arguments set the kernel-side dump filters, to record what the kernel keeps:
//! `family=ipv4|ipv6`, `mark=VALUE[/MASK]`, `status=VALUE[/MASK]`, `zone=N`, `src=IPv4`,
//! `dst=IPv4` (e.g. `capture zone=0 mark=0x10/0xf0`).

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use ctguard::select::{parse_family, parse_mark};
use ctguard::{Conntrack, DumpFilter};

fn main() -> ExitCode {
    match capture() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("capture: {e}");
            ExitCode::from(2)
        }
    }
}

fn filter(args: impl Iterator<Item = String>) -> Result<DumpFilter, String> {
    let mut f = DumpFilter::default();
    for arg in args {
        let bad = || format!("bad argument '{arg}'");
        match arg.split_once('=').ok_or(format!("expected KEY=VALUE, got '{arg}'"))? {
            ("family", v) => f.family = Some(parse_family(v).map_err(|e| e.to_string())?),
            ("mark", v) => f.mark = Some(parse_mark(v).map_err(|e| e.to_string())?),
            ("status", v) => f.status = Some(parse_mark(v).map_err(|e| e.to_string())?),
            ("zone", v) => f.zone = Some(v.parse().map_err(|_| bad())?),
            ("src", v) => f.orig_src_v4 = Some(v.parse().map_err(|_| bad())?),
            ("dst", v) => f.orig_dst_v4 = Some(v.parse().map_err(|_| bad())?),
            _ => return Err(format!("unknown argument '{arg}'")),
        }
    }
    Ok(f)
}

fn capture() -> Result<(), Box<dyn std::error::Error>> {
    let filter = filter(std::env::args().skip(1))?;
    let mut ct = Conntrack::open()?;
    let mut out = BufWriter::new(io::stdout().lock());
    let mut written = Ok(());
    ct.dump_raw(&filter, |msg| {
        if written.is_ok() {
            written =
                msg.iter().try_for_each(|b| write!(out, "{b:02x}")).and_then(|()| writeln!(out));
        }
    })?;
    written?;
    out.flush()?;
    Ok(())
}
