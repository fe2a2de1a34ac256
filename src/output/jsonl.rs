//! JSON Lines: one serde value, one line. The one place every `--json` record is written.

use std::io::{self, Write};

use serde::Serialize;

/// Writes `value` as one JSON object and a newline. Streams into `out` (nothing owned is
/// built), so it serves the dump's hot path as well as a one-off report.
pub fn write_line(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_11_6_one_object_and_one_newline() {
        #[derive(Serialize)]
        struct R<'a> {
            kind: &'a str,
            n: u64,
        }
        let mut out = Vec::new();
        write_line(&mut out, &R { kind: "a\nb", n: 7 }).unwrap();
        write_line(&mut out, &R { kind: "c", n: 8 }).unwrap();
        assert_eq!(out, b"{\"kind\":\"a\\nb\",\"n\":7}\n{\"kind\":\"c\",\"n\":8}\n");
    }
}
