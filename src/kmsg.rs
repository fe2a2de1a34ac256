//! The kernel log's "table full" lines, read from `/dev/kmsg` without waiting.
//!
//! `__nf_conntrack_alloc` (net/netfilter/nf_conntrack_core.c) logs, rate-limited by
//! `net_warn_ratelimited`, when a new entry finds the table full and nothing to early-drop.
//! The wording depends on the kernel and the namespace:
//!
//! - `nf_conntrack: table full, dropping packet` (2.6 added a trailing `.`): every kernel for
//!   the initial namespace, and older kernels for every namespace;
//! - `nf_conntrack: nf_conntrack: table full in netns 4026532290, dropping packet`: 6.18 (and
//!   the release that took the 2025 patch) for a non-initial namespace, naming its inode. The
//!   doubled prefix is the file's `pr_fmt` in front of the format string.
//!
//! The log is global, not per namespace: lines are attributed to the target namespace by that
//! inode. `/dev/kmsg` needs `CAP_SYSLOG` (or `kernel.dmesg_restrict=0`).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;

/// One "table full" line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFullLine {
    /// Sequence number of the record.
    pub seq: u64,
    /// When it was logged: microseconds since boot (the printk clock).
    pub usec: u64,
    /// The namespace inode of the 6.x wording; `None` for the classic wording.
    pub netns: Option<u64>,
    /// The message, as logged.
    pub text: String,
}

/// Parses one `/dev/kmsg` record (`PRIO,SEQ,USEC,FLAGS[,...];MESSAGE` then optional
/// continuation lines starting with a space). `None` unless it is a "table full" line.
pub fn parse_record(record: &str) -> Option<TableFullLine> {
    let first = record.lines().next()?;
    let (header, text) = first.split_once(';')?;
    if !(text.contains("table full") && text.contains("dropping packet")) {
        return None;
    }
    let mut fields = header.split(',');
    let _prio = fields.next()?;
    let seq = fields.next()?.parse().ok()?;
    let usec = fields.next()?.parse().ok()?;
    let netns = text.split_once("table full in netns ").and_then(|(_, rest)| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    });
    Some(TableFullLine { seq, usec, netns, text: text.trim_end().to_string() })
}

/// The first kernel known to name a non-initial namespace in its "table full" line (confirmed
/// on 6.18). A stable release that took the patch is treated as older: its lines that name a
/// namespace are still attributed by inode, its classic lines count as unattributed.
pub const NETNS_WORDING_SINCE: (u32, u32) = (6, 18);

/// Whether lines of this kernel (`None`: unknown) name their namespace.
pub fn names_netns(kernel: Option<(u32, u32)>) -> bool {
    kernel.is_some_and(|v| v >= NETNS_WORDING_SINCE)
}

/// Which lines belong to the namespace being diagnosed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The namespace's inode (`stat /proc/self/ns/net` after entering it).
    pub inode: u64,
    /// Whether it is the initial namespace; `None` when that cannot be told.
    pub initial: Option<bool>,
    /// The kernel names non-initial namespaces in the line ([`names_netns`]).
    pub names_netns: bool,
}

/// How a line relates to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribution {
    /// Logged for the target namespace.
    Ours,
    /// Logged for another namespace.
    Other,
    /// Classic wording on a kernel that does not name namespaces: it may be anyone's.
    Unattributed,
}

impl Target {
    /// Whose line this is.
    pub fn attribute(&self, line: &TableFullLine) -> Attribution {
        match (line.netns, self.initial) {
            (Some(n), _) if n == self.inode => Attribution::Ours,
            (Some(_), _) => Attribution::Other,
            // The classic wording is the initial namespace's once the kernel names the others.
            (None, Some(true)) if self.names_netns => Attribution::Ours,
            (None, Some(false)) if self.names_netns => Attribution::Other,
            (None, _) => Attribution::Unattributed,
        }
    }
}

/// Read `/dev/kmsg` from its oldest buffered record to the newest, then stop (non-blocking:
/// nothing is waited for). Calls `each` for every "table full" line. Err when the log cannot
/// be opened (no `CAP_SYSLOG`, no such device).
pub fn read_table_full(mut each: impl FnMut(TableFullLine)) -> io::Result<()> {
    let mut f = File::options().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg")?;
    // A record is at most 1 KiB of text plus its dictionary; a read takes exactly one record
    // and fails with EINVAL when the buffer is smaller than it.
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                if let Some(line) = parse_record(&String::from_utf8_lossy(&buf[..n])) {
                    each(line);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            // EPIPE: the ring buffer overwrote records we had not read yet; reading goes on
            // with the oldest one still there.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Microseconds since boot on the printk clock's base (`CLOCK_MONOTONIC`), to age lines.
pub fn now_usec() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (ts.tv_sec as u64).saturating_mul(1_000_000) + (ts.tv_nsec as u64) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLASSIC: &str = "4,1021,5567345678,-;nf_conntrack: table full, dropping packet\n";
    /// Recorded from /dev/kmsg on 6.18.44 while a namespace's table was full.
    const RECORDED: &str = "4,398,2991964166,-;nf_conntrack: nf_conntrack: table full in netns \
                            4026532246, dropping packet\n";
    const NETNS: &str = "4,2201,9120000123,-;nf_conntrack: nf_conntrack: table full in netns \
                         4026532290, dropping packet\n SUBSYSTEM=net\n";

    #[test]
    fn both_wordings_parse() {
        let c = parse_record(CLASSIC).unwrap();
        assert_eq!((c.seq, c.usec, c.netns), (1021, 5_567_345_678, None));
        assert_eq!(c.text, "nf_conntrack: table full, dropping packet");
        let n = parse_record(NETNS).unwrap();
        assert_eq!((n.seq, n.usec, n.netns), (2201, 9_120_000_123, Some(4_026_532_290)));
        assert!(n.text.ends_with("dropping packet"), "continuation lines are not text");
        let r = parse_record(RECORDED).unwrap();
        assert_eq!((r.seq, r.usec, r.netns), (398, 2_991_964_166, Some(4_026_532_246)));
        assert_eq!(
            r.text,
            "nf_conntrack: nf_conntrack: table full in netns 4026532246, dropping packet"
        );
        // 2.6 wording with a trailing period.
        assert!(parse_record("4,1,2,-;nf_conntrack: table full, dropping packet.").is_some());
        assert_eq!(parse_record("6,22,771,-;x86/PAT: Configuration [0-7]: WB"), None);
        assert_eq!(parse_record("garbage without header"), None);
        assert_eq!(parse_record("4,x,2,-;nf_conntrack: table full, dropping packet"), None);
    }

    #[test]
    fn lines_are_attributed_by_inode() {
        let classic = parse_record(CLASSIC).unwrap();
        let ours = parse_record(NETNS).unwrap();
        let t = Target { inode: 4_026_532_290, initial: Some(false), names_netns: true };
        assert_eq!(t.attribute(&ours), Attribution::Ours);
        assert_eq!(t.attribute(&classic), Attribution::Other);
        let other = Target { inode: 4_026_532_999, ..t };
        assert_eq!(other.attribute(&ours), Attribution::Other);
        let init = Target { inode: 0xEFFF_FFF9, initial: Some(true), names_netns: true };
        assert_eq!(init.attribute(&classic), Attribution::Ours);
        assert_eq!(init.attribute(&ours), Attribution::Other);
        let old = Target { names_netns: false, ..t };
        assert_eq!(old.attribute(&classic), Attribution::Unattributed);
        let unknown = Target { initial: None, ..t };
        assert_eq!(unknown.attribute(&classic), Attribution::Unattributed);
    }

    #[test]
    fn issue_11_6_the_netns_wording_is_decided_from_the_kernel_release() {
        assert!(names_netns(Some((6, 18))) && names_netns(Some((7, 0))));
        assert!(!names_netns(Some((6, 12))) && !names_netns(None));
    }
}
