//! Files root writes: whole or not at all, never through a link, with an explicit mode.

use std::io::{self, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same directory, so a reader
/// never sees half a file. The temporary file has an unpredictable name and is created with
/// `O_CREAT|O_EXCL` (tempfile's `Builder::tempfile_in`), which refuses any existing name, a
/// planted symbolic link included: nothing is ever written through a link. It gets `mode`, is
/// synced, then renamed over `path` (a rename replaces the directory entry, it never follows
/// a link there); the directory is synced after. A `path` that is itself a symbolic link is
/// refused rather than replaced: replacing an operator's own link by a file would silently
/// detach it.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a symbolic link; ctguard does not write through links (give the file it points to)",
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new().prefix(".ctguard-").tempfile_in(dir)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // On failure the temporary file is removed when the error (which owns it) is dropped.
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}
