//! A spool of deleted flows: the flows an eviction takes, as JSON Lines `ctguard load` restores,
//! written where only root can touch them and named only once complete (`evict --save FILE`,
//! and the guard's spools under its state directory).
//!
//! A [`Spool`] writes to a temporary beside its final name (created exclusively, with an
//! unpredictable name, mode 0600). [`Spool::commit`] syncs it and gives it the final name by a
//! rename that never replaces anything (`renameat2(RENAME_NOREPLACE)`), then syncs the
//! directory; until then, dropping the spool removes the temporary, so the final name never
//! holds half a spool. A process killed before its commit leaves the temporary
//! (`.ctguard-save-*.partial`): it holds flows that may have been deleted, and is never pruned.
//!
//! ```no_run
//! use std::time::SystemTime;
//! use ctguard::spool::{self, Spool};
//! let path = spool::in_state_dir("/var/lib/ctguard".as_ref(), "web", SystemTime::now())?;
//! let mut spool = Spool::create(&path)?;
//! // ... spool.write(&flow)? for each flow, before its delete is sent ...
//! spool.commit()?;
//! spool::prune("/var/lib/ctguard".as_ref(), 256 << 20)?;
//! # Ok::<(), ctguard::spool::SpoolError>(())
//! ```

use std::fs::{DirBuilder, File};
use std::io::{self, BufWriter, Seek, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use tempfile::NamedTempFile;

use crate::flow::Flow;
use crate::output::json;
use crate::trusted_dir::{self, Untrusted};

/// The subdirectory of a state directory that holds the spools.
pub const SPOOL_DIR: &str = "spool";
/// Mode of the spool directory ctguard creates (whatever the umask).
pub const DIR_MODE: u32 = 0o700;
/// The longest guest part of a spool file's name.
pub const GUEST_NAME_MAX: usize = 64;

/// Why a spool could not be named, written or pruned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// Creating, writing, syncing, renaming or listing failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A directory on the way is one another user could swap files in.
    #[error(transparent)]
    Untrusted(#[from] Untrusted),
    /// The state directory or its spool directory is a symlink.
    #[error("{} is a symlink; refusing to write spools through it", .path.display())]
    Symlink {
        /// The symlink.
        path: PathBuf,
    },
    /// The state directory or its spool directory is not a directory.
    #[error("{} is not a directory", .path.display())]
    NotDir {
        /// What is there.
        path: PathBuf,
    },
}

impl SpoolError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
        move |source| SpoolError::Io { path: path.to_path_buf(), source }
    }
}

/// The directory a file `path` lives in (`.` for a bare name).
pub fn dir_of(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// A spool being written: flows go to its temporary; [`Spool::commit`] names it.
pub struct Spool {
    path: PathBuf,
    out: BufWriter<NamedTempFile>,
    written: u64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("path", &self.path).field("written", &self.written).finish()
    }
}

impl Spool {
    /// Creates the temporary beside `path` (which the caller made sure names a new file in a
    /// trusted directory: `--save`'s checks, or [`in_state_dir`]).
    pub fn create(path: &Path) -> Result<Spool, SpoolError> {
        let tmp = tempfile::Builder::new()
            .prefix(".ctguard-save-")
            .suffix(".partial")
            .tempfile_in(dir_of(path))
            .map_err(SpoolError::io(path))?;
        Ok(Spool { path: path.to_path_buf(), out: BufWriter::new(tmp), written: 0 })
    }

    /// The name the spool gets at its commit.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flows written so far (since the last [`Spool::restart`]).
    pub fn len(&self) -> u64 {
        self.written
    }

    /// True when no flow was written.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Appends one flow (buffered: [`Spool::flush`] hands it to the kernel).
    pub fn write(&mut self, flow: &Flow) -> io::Result<()> {
        json::write_flow(&mut self.out, flow)?;
        self.written += 1;
        Ok(())
    }

    /// Hands what is buffered to the kernel: from here it survives the end of this process
    /// (not a power cut: that takes [`Spool::sync`] or the commit).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and syncs the temporary to disk, without naming it.
    pub fn sync(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().as_file().sync_data()
    }

    /// The selection starts again: forget what was written.
    pub fn restart(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let f = self.out.get_mut().as_file_mut();
        f.set_len(0)?;
        f.rewind()?;
        self.written = 0;
        Ok(())
    }

    /// Flushes, syncs and gives the file its name (never replacing one that appeared since),
    /// then syncs the directory: after this the flows are safe on disk under [`Spool::path`],
    /// which it returns.
    pub fn commit(self) -> Result<PathBuf, SpoolError> {
        let Spool { path, out, .. } = self;
        let fail = |source| SpoolError::Io { path: path.clone(), source };
        let tmp = out.into_inner().map_err(|e| fail(e.into_error()))?;
        tmp.as_file().sync_all().map_err(fail)?;
        tmp.persist_noclobber(&path).map_err(|e| fail(e.error))?;
        File::open(dir_of(&path)).and_then(|d| d.sync_all()).map_err(fail)?;
        Ok(path)
    }
}

/// The `DIR/spool/<UTC time>-<guest>.jsonl` name of a new spool of `guest`'s flows, made at
/// `now`; creates `DIR/spool` (mode 0700) if missing. Refuses a `DIR` or `DIR/spool` that is a
/// symlink, not a directory, or not trusted ([`trusted_dir::check`]: writable or owned by
/// another user, on the whole path). The time is `2026-12-02T101017.123456Z` (RFC 3339 less
/// its colons, UTC, microseconds): names sort by time. The guest part keeps ASCII letters,
/// digits, `-`, `_` and inner dots, any other character becoming `_`, at most
/// [`GUEST_NAME_MAX`] of them.
pub fn in_state_dir(dir: &Path, guest: &str, now: SystemTime) -> Result<PathBuf, SpoolError> {
    let uid = rustix::process::getuid().as_raw();
    real_dir(dir)?;
    trusted_dir::check(dir, uid)?;
    let spool = dir.join(SPOOL_DIR);
    match spool.symlink_metadata() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match DirBuilder::new().mode(DIR_MODE).create(&spool) {
                Ok(()) => {}
                // Made meanwhile: looked at below like any other.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(SpoolError::io(&spool)(e)),
            }
        }
        Err(e) => return Err(SpoolError::io(&spool)(e)),
        Ok(_) => {}
    }
    real_dir(&spool)?;
    trusted_dir::check(&spool, uid)?;
    Ok(spool.join(file_name(guest, now)))
}

fn real_dir(dir: &Path) -> Result<(), SpoolError> {
    let meta = dir.symlink_metadata().map_err(SpoolError::io(dir))?;
    if meta.file_type().is_symlink() {
        return Err(SpoolError::Symlink { path: dir.to_path_buf() });
    }
    if !meta.is_dir() {
        return Err(SpoolError::NotDir { path: dir.to_path_buf() });
    }
    Ok(())
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
const LAST_SECOND: u64 = 253_402_300_799;

fn file_name(guest: &str, now: SystemTime) -> String {
    // humantime cannot write a time before 1970 or after 9999: a clock that far off is
    // clamped (the name stays well-formed; only the order of such spools suffers).
    let now = now.clamp(UNIX_EPOCH, UNIX_EPOCH + Duration::from_secs(LAST_SECOND));
    let stamp: String =
        humantime::format_rfc3339_micros(now).to_string().chars().filter(|c| *c != ':').collect();
    format!("{stamp}-{}.jsonl", safe_guest(guest))
}

fn safe_guest(guest: &str) -> String {
    let mut s: String = guest
        .chars()
        .take(GUEST_NAME_MAX)
        .enumerate()
        .map(|(i, c)| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            '.' if i > 0 => c,
            _ => '_',
        })
        .collect();
    if s.is_empty() {
        s.push('_');
    }
    s
}

/// The shape of a spool's time stamp: `d` a digit, anything else itself.
const STAMP: &[u8] = b"dddd-dd-ddTdddddd.ddddddZ-";

/// True for a name [`in_state_dir`] makes: nothing else in the spool directory is ever pruned.
pub fn is_spool_name(name: &str) -> bool {
    let b = name.as_bytes();
    let Some(guest) = name.get(STAMP.len()..).and_then(|rest| rest.strip_suffix(".jsonl")) else {
        return false;
    };
    b.len() > STAMP.len()
        && STAMP.iter().zip(b).all(|(want, got)| match want {
            b'd' => got.is_ascii_digit(),
            w => w == got,
        })
        && !guest.is_empty()
        && guest.len() <= GUEST_NAME_MAX
        && !guest.starts_with('.')
        && guest.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// What [`prune`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Spool files removed.
    pub removed: u64,
    /// Their bytes.
    pub freed_bytes: u64,
    /// Spool files kept.
    pub kept: u64,
    /// Their bytes.
    pub kept_bytes: u64,
}

/// Bounded retention: keeps the newest spools of `DIR/spool` whose sizes add up to at most
/// `keep_bytes`, and removes the older ones. The newest spool is always kept, even when it
/// alone is larger (it is the record of the last eviction). Only regular files with a name
/// [`in_state_dir`] makes are counted or removed; `DIR` and `DIR/spool` are opened without
/// following symlinks, and every entry is looked at and removed relative to that directory,
/// never through a link. No `DIR/spool` is nothing to prune.
pub fn prune(dir: &Path, keep_bytes: u64) -> Result<Pruned, SpoolError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let state =
        rustix::fs::open(dir, flags, Mode::empty()).map_err(|e| SpoolError::io(dir)(e.into()))?;
    let path = dir.join(SPOOL_DIR);
    let spool = match rustix::fs::openat(&state, SPOOL_DIR, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(Pruned::default()),
        Err(e) => return Err(SpoolError::io(&path)(e.into())),
    };
    let mut spools = Vec::new();
    let entries =
        rustix::fs::Dir::read_from(&spool).map_err(|e| SpoolError::io(&path)(e.into()))?;
    for entry in entries {
        let entry = entry.map_err(|e| SpoolError::io(&path)(e.into()))?;
        let Ok(name) = entry.file_name().to_str() else { continue };
        if !is_spool_name(name) {
            continue;
        }
        let name = name.to_owned();
        let st = match rustix::fs::statat(&spool, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Removed meanwhile.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(SpoolError::io(&path.join(&name))(e.into())),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile {
            spools.push((name, u64::try_from(st.st_size).unwrap_or(0)));
        }
    }
    // Names sort by time: newest first.
    spools.sort_unstable_by(|a, b| b.0.cmp(&a.0));
    let mut out = Pruned::default();
    for (i, (name, size)) in spools.into_iter().enumerate() {
        if i == 0 || out.kept_bytes.saturating_add(size) <= keep_bytes {
            out.kept += 1;
            out.kept_bytes = out.kept_bytes.saturating_add(size);
            continue;
        }
        match rustix::fs::unlinkat(&spool, name.as_str(), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(SpoolError::io(&path.join(&name))(e.into())),
        }
        out.removed += 1;
        out.freed_bytes += size;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ctg-spool-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        d
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn issue_13_spool_names_sort_by_time_and_are_filename_safe() {
        let n = file_name("web", at(1_796_206_217) + Duration::from_micros(5));
        assert_eq!(n, "2026-12-02T101017.000005Z-web.jsonl");
        assert!(is_spool_name(&n));
        for (guest, want) in [
            ("(no guest)", "_no_guest_"),
            ("../etc", "_._etc"),
            ("a/b", "a_b"),
            ("", "_"),
            (".hidden", "_hidden"),
            ("vm-1.prod", "vm-1.prod"),
        ] {
            assert_eq!(safe_guest(guest), want, "{guest:?}");
            assert!(is_spool_name(&file_name(guest, at(0))), "{guest:?}");
        }
        assert_eq!(safe_guest(&"x".repeat(300)).len(), GUEST_NAME_MAX);
        assert!(file_name("a", at(0)) < file_name("a", at(1)));
        assert!(file_name("a", at(u64::MAX / 4)).starts_with("9999-12-31T235959"), "clamped");
        for other in [".ctguard-save-abc.partial", "2026-12-02T101017Z-web.jsonl", "notes.txt"] {
            assert!(!is_spool_name(other), "{other}");
        }
    }

    #[test]
    fn issue_13_in_state_dir_makes_a_private_spool_dir_and_refuses_symlinks() {
        let d = scratch("state");
        let p = in_state_dir(&d, "web", at(0)).expect("named");
        assert_eq!(p.parent(), Some(d.join(SPOOL_DIR).as_path()));
        let mode = std::fs::metadata(d.join(SPOOL_DIR)).expect("spool dir").permissions().mode();
        assert_eq!(mode & 0o7777, DIR_MODE);
        // Named twice: the directory is there already.
        in_state_dir(&d, "web", at(1)).expect("again");

        let link = d.join("link");
        std::os::unix::fs::symlink(&d, &link).expect("symlink");
        let e = in_state_dir(&link, "web", at(0)).expect_err("a symlinked state dir");
        assert!(matches!(e, SpoolError::Symlink { .. }), "{e}");

        let other = scratch("state2");
        std::os::unix::fs::symlink(&d, other.join(SPOOL_DIR)).expect("symlink");
        let e = in_state_dir(&other, "web", at(0)).expect_err("a symlinked spool dir");
        assert!(matches!(e, SpoolError::Symlink { .. }), "{e}");

        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = in_state_dir(&other, "web", at(0)).expect_err("world-writable");
        assert!(e.to_string().contains("writable by others"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::remove_dir_all(&other);
    }

    #[test]
    fn issue_13_prune_keeps_the_newest_within_the_bound_and_nothing_else_is_touched() {
        let d = scratch("prune");
        let s = d.join(SPOOL_DIR);
        std::fs::create_dir(&s).expect("mkdir");
        let names: Vec<String> = (0..5).map(|i| file_name("web", at(1000 + i))).collect();
        for n in &names {
            std::fs::write(s.join(n), [b'x'; 100]).expect("write");
        }
        // Not ctguard's: never removed, never counted.
        std::fs::write(s.join("notes.txt"), [b'x'; 10_000]).expect("write");
        std::fs::write(s.join(".ctguard-save-x.partial"), [b'x'; 10_000]).expect("write");
        let victim = d.join("victim");
        std::fs::write(&victim, b"keep").expect("write");
        let link = file_name("web", at(1));
        std::os::unix::fs::symlink(&victim, s.join(&link)).expect("symlink");

        let p = prune(&d, 250).expect("pruned");
        assert_eq!(p, Pruned { removed: 3, freed_bytes: 300, kept: 2, kept_bytes: 200 });
        let mut left: Vec<String> = std::fs::read_dir(&s)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            ".ctguard-save-x.partial".to_string(),
            link,
            names[3].clone(),
            names[4].clone(),
            "notes.txt".into(),
        ];
        want.sort();
        assert_eq!(left, want);
        assert!(victim.exists());
        // A bound smaller than the newest spool keeps the newest.
        assert_eq!(prune(&d, 0).expect("pruned").kept, 1);
        // No spool directory: nothing to do. A symlinked state dir: refused.
        let empty = scratch("prune-empty");
        assert_eq!(prune(&empty, 0).expect("nothing"), Pruned::default());
        let l = empty.join("l");
        std::os::unix::fs::symlink(&d, &l).expect("symlink");
        assert!(prune(&l, 0).is_err());
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::remove_dir_all(&empty);
    }

    #[test]
    fn issue_13_a_dropped_spool_leaves_nothing_and_a_commit_names_it() {
        let d = scratch("commit");
        let path = d.join("x.jsonl");
        let mut s = Spool::create(&path).expect("create");
        s.write(&crate::flow::test_tcp("10.0.0.1", "10.0.0.2", 1, 2, crate::TcpState::Established))
            .expect("write");
        assert_eq!(s.len(), 1);
        drop(s);
        assert_eq!(std::fs::read_dir(&d).expect("list").count(), 0);
        let mut s = Spool::create(&path).expect("create");
        s.write(&crate::flow::test_tcp("10.0.0.1", "10.0.0.2", 1, 2, crate::TcpState::Established))
            .expect("write");
        assert_eq!(s.commit().expect("commit"), path);
        let mode = std::fs::metadata(&path).expect("saved").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).expect("read").lines().count(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }
}
