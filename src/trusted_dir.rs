//! Directories root may write its files in: ones no other user can rename or replace entries
//! of. A file root creates (the audit log, a `--save` file) is only as safe as every directory
//! on its path: whoever may write to one of them can move root's file away and put their own
//! under its name between the write and a later read (`ctguard load FILE`).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Sticky bit: in such a directory (`/tmp`) only an entry's owner may rename or remove it.
const S_ISVTX: u32 = 0o1000;

/// Checks `dir` and every directory above it (symlinks resolved): each must be owned by root
/// or by `uid`, and be writable by no one else unless it is sticky. The reason when one is not.
pub fn check(dir: &Path, uid: u32) -> Result<(), Untrusted> {
    let real = fs::canonicalize(dir)
        .map_err(|source| Untrusted::Unreadable { dir: dir.to_path_buf(), source })?;
    for d in real.ancestors() {
        let meta = fs::metadata(d)
            .map_err(|source| Untrusted::Unreadable { dir: d.to_path_buf(), source })?;
        if meta.uid() != 0 && meta.uid() != uid {
            return Err(Untrusted::Owner { dir: d.to_path_buf(), uid: meta.uid() });
        }
        if meta.mode() & 0o022 != 0 && meta.mode() & S_ISVTX == 0 {
            return Err(Untrusted::Writable { dir: d.to_path_buf(), mode: meta.mode() & 0o7777 });
        }
    }
    Ok(())
}

/// Why a directory is not one to write root's files in.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Untrusted {
    /// It, or one above it, could not be looked at.
    #[error("{}: {source}", .dir.display())]
    Unreadable {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another user owns it, or one above it.
    #[error("directory {} is owned by uid {uid}, who could replace what ctguard writes there", .dir.display())]
    Owner {
        /// The directory.
        dir: std::path::PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Others may write to it, and it is not sticky.
    #[error("directory {} is writable by others (mode {mode:o}) and not sticky", .dir.display())]
    Writable {
        /// The directory.
        dir: std::path::PathBuf,
        /// Its mode bits.
        mode: u32,
    },
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ctg-tdir-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("scratch dir");
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod");
        d
    }

    #[test]
    fn issue_10_attack_only_directories_no_one_else_controls() {
        let uid = rustix::process::getuid().as_raw();
        let d = scratch("ok");
        assert!(check(&d, uid).is_ok(), "own 0755 directory under sticky /tmp");
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = check(&d, uid).expect_err("world-writable, not sticky").to_string();
        assert!(e.contains("writable by others"), "{e}");
        fs::set_permissions(&d, fs::Permissions::from_mode(0o1777)).expect("chmod");
        assert!(check(&d, uid).is_ok(), "sticky, like /tmp");
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod");
        // A directory owned by another user (nobody): refused, even 0755.
        let other = d.join("nobodys");
        fs::create_dir(&other).expect("mkdir");
        if uid == 0 {
            std::os::unix::fs::chown(&other, Some(65_534), Some(65_534)).expect("chown");
            let e = check(&other, uid).expect_err("owned by someone else").to_string();
            assert!(e.contains("owned by uid 65534"), "{e}");
        } else {
            // Not root: the directory is ours; seen as root's, it is someone else's.
            let e = check(&other, 0).expect_err("owned by someone else").to_string();
            assert!(e.contains(&format!("owned by uid {uid}")), "{e}");
        }
        let _ = fs::remove_dir_all(&d);
    }
}
