//! `tune --persist`: the `sysctl.d` file, written whole or not at all, never through a link.

use std::io;
use std::path::Path;

/// The mode of a written `sysctl.d` file: root writes it, everyone may read it (as
/// `/etc/sysctl.d/*.conf` are shipped).
const PERSIST_MODE: u32 = 0o644;

/// Why `path` cannot be the `--persist` target, or `None` when it can: its directory must
/// exist, and the path itself must not be a directory or a symbolic link. A link is refused
/// rather than followed or replaced: root writing where a planted link points is the attack
/// the temporary file is guarded against, and replacing an operator's own link by a file
/// would silently detach it. Give the link's target instead.
pub fn persist_target_problem(path: &Path) -> Option<String> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Some(String::from(
                "is a symbolic link; ctguard does not write through links (give the file it \
                 points to)",
            ));
        }
        Ok(m) if m.is_dir() => {
            return Some(String::from(
                "is a directory (give a file, e.g. /etc/sysctl.d/90-conntrack.conf)",
            ));
        }
        _ => {}
    }
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Some(format!("directory {} does not exist", dir.display()));
    }
    None
}

/// The directory `path` is in (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Writes `text` to `path` whole or not at all, never through a link, mode 0644
/// ([`crate::atomic_file::write`]); `path` must pass [`persist_target_problem`].
pub fn write_file_atomically(path: &str, text: &str) -> io::Result<()> {
    let target = Path::new(path);
    if let Some(why) = persist_target_problem(target) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    }
    crate::atomic_file::write(target, text.as_bytes(), PERSIST_MODE)
}
