//! Reads that stop at a limit: every file ctguard takes from a user (a guest file, a batch,
//! the label map, `/etc/protocols`, a hypervisor's records) is read through [`read_at_most`],
//! so `/dev/zero` or a runaway FIFO costs at most the limit and one byte.

use std::io::{self, Read};

/// All of `source` when it holds at most `limit` bytes; `Ok(None)` when it holds more (read no
/// further than `limit + 1` bytes).
pub fn read_at_most(source: impl Read, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    source.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_12_a_read_stops_one_byte_past_its_limit() {
        assert_eq!(read_at_most(&b"abc"[..], 3).unwrap(), Some(b"abc".to_vec()));
        assert_eq!(read_at_most(&b"abcd"[..], 3).unwrap(), None);
        assert_eq!(read_at_most(io::repeat(0), 1 << 20).unwrap(), None, "an endless source ends");
    }
}
