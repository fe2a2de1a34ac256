//! The running kernel's release, for the features that depend on it (filtered flush, the
//! netns wording of "table full", `nf_conntrack_buckets` as a sysctl).

/// A kernel release as `(major, minor)`, from `uname -r` text such as `6.18.44-fc-v669`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The running kernel's `(major, minor)`, if `uname` can tell.
pub fn release() -> Option<(u32, u32)> {
    let u = rustix::system::uname();
    parse_release(&u.release().to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse() {
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("6.18.44-fc-v595\n"), Some((6, 18)));
        assert_eq!(parse_release("6.12"), Some((6, 12)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_release("4.4.0-210-generic"), Some((4, 4)));
        assert_eq!(parse_release("garbage"), None);
    }

    #[test]
    fn issue_11_6_release_matches_proc() {
        // One home for the release: uname agrees with what /proc says (the old tune path).
        let proc = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(release(), parse_release(&proc));
        assert!(release().is_some());
    }
}
