//! `evict --save FILE`: the flows about to be deleted, as JSON Lines, on disk before the first
//! delete. Written to a temporary file in FILE's directory (created exclusively, with an
//! unpredictable name, mode 0600), synced, and given FILE's name only by a rename that never
//! replaces anything (`renameat2(RENAME_NOREPLACE)`); until then, any end (an error, a no at
//! the question, a signal) removes the temporary, and FILE never exists half-written.

use std::io;
use std::path::{Path, PathBuf};

use ctguard::flow::Flow;
use ctguard::spool::{Spool, SpoolError, dir_of};

use super::exit::Failure;

/// Checks `--save FILE` before anything is touched: FILE must not exist, not even as a
/// (dangling) symlink, and its directory must.
pub fn check(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    if path.symlink_metadata().is_ok() {
        return Err(format!("--save {s}: the file exists; name a new file"));
    }
    if !dir_of(&path).is_dir() {
        return Err(format!("--save {s}: no directory {}", dir_of(&path).display()));
    }
    // Someone who may write to the directory could swap the file for theirs before `load`.
    let uid = rustix::process::getuid().as_raw();
    ctguard::trusted_dir::check(dir_of(&path), uid).map_err(|why| format!("--save {s}: {why}"))?;
    Ok(path)
}

fn not_written(path: &Path, e: impl std::fmt::Display) -> Failure {
    let p = path.display();
    Failure::Message(format!("--save {p}: {e}; nothing was deleted, {p} was not written"))
}

/// The cause of a spool error, without the path the messages here name themselves.
fn cause(e: SpoolError) -> String {
    match e {
        SpoolError::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// The save file being written: the library's [`Spool`], with `--save`'s words for failures.
pub struct SaveFile {
    spool: Spool,
}

impl SaveFile {
    /// Creates the temporary beside `path`.
    pub fn create(path: &Path) -> Result<SaveFile, Failure> {
        let spool = Spool::create(path)
            .map_err(|e| Failure::Message(format!("--save {}: {}", path.display(), cause(e))))?;
        Ok(SaveFile { spool })
    }

    /// Writes every flow of `flows`, then commits: for a selection kept in memory.
    pub fn write_all(path: &Path, flows: &[Flow]) -> Result<(), Failure> {
        let mut s = SaveFile::create(path)?;
        for flow in flows {
            s.write(flow).map_err(|e| s.fail(e))?;
        }
        s.commit()
    }

    /// Appends one flow.
    pub fn write(&mut self, flow: &Flow) -> io::Result<()> {
        self.spool.write(flow)
    }

    /// The failure for `e`: nothing was deleted, FILE was not written.
    pub fn fail(&self, e: io::Error) -> Failure {
        not_written(self.spool.path(), e)
    }

    /// The selection starts again: forget what was written.
    pub fn restart(&mut self) -> io::Result<()> {
        self.spool.restart()
    }

    /// Flushes, syncs and gives the file its name (never replacing one that appeared since),
    /// then syncs the directory: after this the flows are safe on disk under FILE.
    pub fn commit(self) -> Result<(), Failure> {
        let path = self.spool.path().to_path_buf();
        self.spool.commit().map(drop).map_err(|e| not_written(&path, cause(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ctg-save-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn issue_9_5_a_dangling_symlink_is_refused_like_a_file() {
        let dir = scratch("dangling");
        let link = dir.join("saved.jsonl");
        std::os::unix::fs::symlink(dir.join("nowhere"), &link).expect("symlink");
        let e = check(&link.to_string_lossy()).expect_err("refused");
        assert!(e.contains("exists"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn issue_9_5_commit_never_replaces_what_appeared_meanwhile() {
        let dir = scratch("noclobber");
        let path = dir.join("saved.jsonl");
        let s = SaveFile::create(&path).expect("create");
        // Planted after the check, before the rename.
        std::os::unix::fs::symlink(dir.join("victim"), &path).expect("symlink");
        let e = match s.commit() {
            Err(Failure::Message(m)) => m,
            other => panic!("committed over a planted link: {other:?}"),
        };
        assert!(e.contains("was not written"), "{e}");
        assert!(path.symlink_metadata().expect("link").file_type().is_symlink());
        assert_eq!(entries(&dir), vec!["saved.jsonl".to_string()], "the temporary is gone");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn issue_10_9_a_dropped_save_file_leaves_nothing() {
        let dir = scratch("dropped");
        let path = dir.join("saved.jsonl");
        let s = SaveFile::create(&path).expect("create");
        let tmp = entries(&dir);
        assert_eq!(tmp.len(), 1, "{tmp:?}");
        assert!(tmp[0].starts_with(".ctguard-save-") && tmp[0] != "saved.jsonl.partial");
        drop(s);
        assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
