//! The audit trail of deletions: two JSON lines per run, appended to a log only root (or the
//! running user) can write.
//!
//! A run that deletes writes an **intent** record before its first delete (appended and
//! fsynced: even a `SIGKILL` or a power cut after it leaves a trace naming who deleted what,
//! where, and where the deleted flows were saved), and an **outcome** record with the same
//! `run_id` after the last. An intent without an outcome is a run that died mid-way. Both
//! records are documented in `docs/json-schema.md`.
//!
//! ```no_run
//! use ctguard::audit::{Actor, AuditLog, RunInfo, Trail};
//! let run = RunInfo::new("evict", Actor::current(), None, "-s 10.0.0.5".into());
//! let mut trail = Trail::new(Some(AuditLog::open("/var/log/ctguard/audit.jsonl".as_ref())?), run);
//! trail.intent(Some(42))?; // before the first delete: refuse to delete if this fails
//! // ... the deletes ...
//! trail.outcome(&serde_json::json!({"deleted": 42}), None, None)?;
//! # Ok::<(), ctguard::audit::Error>(())
//! ```

use std::ffi::CStr;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Where the records go unless the operator says otherwise.
pub const DEFAULT_LOG: &str = "/var/log/ctguard/audit.jsonl";

/// Mode of a log directory ctguard creates (whatever the umask).
pub const DIR_MODE: u32 = 0o750;
/// Mode of a log file ctguard creates (whatever the umask).
pub const FILE_MODE: u32 = 0o640;

/// `/proc/self/loginuid` when no login session set it.
const LOGINUID_UNSET: u32 = u32::MAX;

/// Why the audit log cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Creating, opening, writing or syncing failed.
    #[error("audit log {path}: {source}")]
    Io {
        /// The log.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The log is a symlink, not a regular file, or owned by someone else.
    #[error("audit log {path}: {why}; refusing to write to it")]
    Refused {
        /// The log.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// The audit log, open for appending.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
}

impl AuditLog {
    /// Opens `path` for appending, creating it (and missing directories) if needed.
    ///
    /// Directories ctguard creates get [`DIR_MODE`], a file it creates [`FILE_MODE`], set
    /// explicitly so a `umask 000` cannot make them writable by others. The last component is
    /// opened with `O_NOFOLLOW` (a planted symlink is refused, its target untouched) and
    /// `O_APPEND|O_CLOEXEC`. Refused: anything that is not a regular file, a file owned by
    /// neither root nor the running uid, and one with another hard link. An existing log that group or others may write is
    /// tightened to [`FILE_MODE`] (a note says so on stderr).
    pub fn open(path: &Path) -> Result<AuditLog, Error> {
        let io_err = |source| Error::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_dirs(dir).map_err(io_err)?;
        }
        let uid = rustix::process::getuid().as_raw();
        let refuse = |why: String| Error::Refused { path: path.to_path_buf(), why };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::trusted_dir::check(dir, uid).map_err(|e| refuse(e.to_string()))?;
        }
        // Never open a FIFO or a device to find out what it is: the open itself can block (a
        // FIFO without a reader) or act (a tape). What is there is looked at first; O_NONBLOCK
        // keeps a FIFO swapped in after the look from blocking the open.
        if let Ok(meta) = fs::symlink_metadata(path)
            && !meta.is_file()
        {
            return Err(refuse(if meta.file_type().is_symlink() {
                "it is a symbolic link".into()
            } else {
                "not a regular file".into()
            }));
        }
        let mut opts = OpenOptions::new();
        opts.append(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK);
        let (file, created) = match opts.clone().create_new(true).mode(FILE_MODE).open(path) {
            Ok(f) => (f, true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                (opts.open(path).map_err(|e| refused_or_io(path, e))?, false)
            }
            Err(e) => return Err(refused_or_io(path, e)),
        };
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(refuse("not a regular file".into()));
        }
        if meta.uid() != 0 && meta.uid() != uid {
            return Err(refuse(format!("owned by uid {}, not root or uid {uid}", meta.uid())));
        }
        // A second name is a hard link someone planted to make us append to another file.
        if meta.nlink() != 1 {
            return Err(refuse(format!("it has {} hard links", meta.nlink())));
        }
        if created || meta.mode() & 0o022 != 0 {
            // fchmod on the open file: the umask does not apply, and no path is looked up again.
            file.set_permissions(Permissions::from_mode(FILE_MODE)).map_err(io_err)?;
            if !created {
                eprintln!(
                    "ctguard: note: audit log {} was writable by others (mode {:o}); now {FILE_MODE:o}",
                    path.display(),
                    meta.mode() & 0o7777
                );
            }
        }
        Ok(AuditLog { path: path.to_path_buf(), file })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record as one line, in a single `write(2)` (`O_APPEND`: concurrent runs
    /// never interleave), then fsyncs it.
    pub fn append(&mut self, record: &impl Serialize) -> Result<(), Error> {
        let io_err = |source| Error::Io { path: self.path.clone(), source };
        let mut line = serde_json::to_vec(record).map_err(|e| io_err(io::Error::from(e)))?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(io_err)?;
        self.file.sync_data().map_err(io_err)
    }
}

/// ELOOP from `O_NOFOLLOW` is a symlink, ENXIO from `O_NONBLOCK` a FIFO no one reads: say so.
fn refused_or_io(path: &Path, e: io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        Error::Refused { path: path.to_path_buf(), why: "it is a symbolic link".into() }
    } else if e.raw_os_error() == Some(libc::ENXIO) {
        Error::Refused { path: path.to_path_buf(), why: "not a regular file".into() }
    } else {
        Error::Io { path: path.to_path_buf(), source: e }
    }
}

/// Creates the missing directories of `dir`, each [`DIR_MODE`] whatever the umask; existing
/// ones are left as they are.
fn create_dirs(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> =
        dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).collect();
    for d in missing.into_iter().rev() {
        match DirBuilder::new().mode(DIR_MODE).create(d) {
            Ok(()) => fs::set_permissions(d, Permissions::from_mode(DIR_MODE))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Who ran it, from the kernel's view, not the environment's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// The real uid.
    pub uid: u32,
    /// Its name in the password database (`getpwuid`), if it has one.
    pub user: Option<String>,
    /// The login uid (`/proc/self/loginuid`), kept across `sudo` and `su`: the person who
    /// logged in. `None` when no login session set it (4294967295), e.g. a system service.
    pub login_uid: Option<u32>,
    /// The login uid's name, if it has one.
    pub login_user: Option<String>,
    /// What the environment claims (`$SUDO_USER`, else `$USER`): anyone can set it, so it
    /// is recorded only as a claim.
    pub claimed_user: Option<String>,
}

impl Actor {
    /// The running process's actor.
    pub fn current() -> Actor {
        let uid = rustix::process::getuid().as_raw();
        let login_uid = fs::read_to_string("/proc/self/loginuid")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|u| *u != LOGINUID_UNSET);
        let claimed_user = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).ok();
        Actor {
            uid,
            user: user_name(uid),
            login_uid,
            login_user: login_uid.and_then(user_name),
            claimed_user,
        }
    }
}

/// The name of `uid` in the password database.
fn user_name(uid: u32) -> Option<String> {
    let mut len = 1024usize;
    while len <= 1 << 20 {
        let mut buf = vec![0 as libc::c_char; len];
        // SAFETY: passwd is plain data (integers and pointers); getpwuid_r fills it.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: pwd, buf (of the length passed) and found are valid for writes for the whole
        // call; on success the strings in pwd point into buf, which outlives their use below.
        let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), len, &mut found) };
        if rc == libc::ERANGE {
            len *= 4;
            continue;
        }
        if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: pw_name is a NUL-terminated string inside buf, still alive here.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) };
        return Some(name.to_string_lossy().into_owned());
    }
    None
}

/// What both records of one run share: the run id, who, where, what, and where the deleted
/// flows are itemised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    /// Unique per run on this host; the outcome repeats the intent's.
    pub run_id: String,
    /// `evict`, or the command that deletes.
    pub command: &'static str,
    /// Who.
    #[serde(flatten)]
    pub actor: Actor,
    /// The namespace as given (`--netns`), or `(current)`.
    pub namespace: String,
    /// The namespace's identity, `net:[INODE]`.
    pub netns: String,
    /// The selection, as the flags were given.
    pub selector: String,
    /// `--limit`, if any.
    pub limit: Option<u64>,
    /// `--rate`, if any.
    pub rate: Option<u32>,
    /// Where the selected flows are saved (`--save`), if anywhere.
    pub saved: Option<String>,
    /// True when a save file lists every selected flow; false when the run (a kernel flush
    /// or per-flow deletes without `--save`) left only its selector and counts.
    pub itemised: bool,
    /// For `update`: what it sets, as the flags were given (`--set-mark 0x1/0xff`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
}

impl RunInfo {
    /// A new run in the calling thread's current network namespace (call it after entering
    /// `--netns`), with a fresh run id.
    pub fn new(
        command: &'static str,
        actor: Actor,
        namespace: Option<&str>,
        selector: String,
    ) -> RunInfo {
        let netns = fs::read_link("/proc/thread-self/ns/net")
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        RunInfo {
            run_id: run_id(),
            command,
            actor,
            namespace: namespace.unwrap_or("(current)").to_string(),
            netns,
            selector,
            limit: None,
            rate: None,
            saved: None,
            itemised: false,
            change: None,
        }
    }

    /// With what an update sets.
    pub fn with_change(mut self, change: Option<String>) -> RunInfo {
        self.change = change;
        self
    }

    /// With `--limit` and `--rate`.
    pub fn with_pace(mut self, limit: Option<u64>, rate: Option<u32>) -> RunInfo {
        self.limit = limit;
        self.rate = rate;
        self
    }

    /// With the save file that itemises the selected flows.
    pub fn with_save(mut self, saved: Option<&Path>) -> RunInfo {
        self.saved = saved.map(|p| p.display().to_string());
        self.itemised = self.saved.is_some();
        self
    }
}

/// A run id: the start time in nanoseconds and the pid, in hex (`18f0c2a1b3c4d5e6-1a2b`).
pub fn run_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", std::process::id())
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[derive(Serialize)]
struct Line<'a, B: Serialize> {
    record: &'static str,
    time: String,
    #[serde(flatten)]
    run: &'a RunInfo,
    #[serde(flatten)]
    body: B,
}

#[derive(Serialize)]
struct IntentBody {
    /// `None` when the count is not known before the deletes begin (streamed deletes, a
    /// kernel flush without a dump).
    selected: Option<u64>,
}

#[derive(Serialize)]
struct OutcomeBody<'a, R: Serialize> {
    #[serde(flatten)]
    result: &'a R,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// One run's two records, written to a log (or to none when auditing is off).
#[derive(Debug)]
pub struct Trail {
    log: Option<AuditLog>,
    run: RunInfo,
    intent_written: bool,
    outcome_written: bool,
}

impl Trail {
    /// The trail of `run` in `log`; `None` writes nothing (the operator turned auditing off).
    pub fn new(log: Option<AuditLog>, run: RunInfo) -> Trail {
        Trail { log, run, intent_written: false, outcome_written: false }
    }

    /// The run's shared part.
    pub fn run(&self) -> &RunInfo {
        &self.run
    }

    /// Writes the intent record (once; later calls do nothing), fsynced. Call it before the
    /// first delete, and do not delete if it fails.
    pub fn intent(&mut self, selected: Option<u64>) -> Result<(), Error> {
        if self.intent_written {
            return Ok(());
        }
        if let Some(log) = self.log.as_mut() {
            log.append(&Line {
                record: "intent",
                time: now(),
                run: &self.run,
                body: IntentBody { selected },
            })?;
        }
        self.intent_written = true;
        Ok(())
    }

    /// True when the intent was written and the outcome not yet.
    pub fn pending(&self) -> bool {
        self.intent_written && !self.outcome_written
    }

    /// Writes the outcome record: `result`'s fields (e.g. the evict report), the signal that
    /// stopped the run and the error that ended it, if any. Once; later calls do nothing.
    pub fn outcome(
        &mut self,
        result: &impl Serialize,
        signal: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), Error> {
        if self.outcome_written {
            return Ok(());
        }
        self.outcome_written = true;
        match self.log.as_mut() {
            Some(log) => log.append(&Line {
                record: "outcome",
                time: now(),
                run: &self.run,
                body: OutcomeBody { result, signal, error },
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ctg-audit-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn sample() -> RunInfo {
        let actor = Actor {
            uid: 0,
            user: Some("root".into()),
            login_uid: Some(1000),
            login_user: Some("alice".into()),
            claimed_user: Some("mallory".into()),
        };
        RunInfo::new("evict", actor, Some("guests"), "-s 10.0.0.5".into())
            .with_save(Some(Path::new("/tmp/x.jsonl")))
    }

    #[test]
    fn issue_10_10_intent_then_outcome_share_the_run_id() {
        let dir = scratch("records");
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(&path).expect("open");
        let mut trail = Trail::new(Some(log), sample());
        assert!(!trail.pending());
        trail.intent(Some(7)).expect("intent");
        trail.intent(Some(9)).expect("a second intent is a no-op");
        assert!(trail.pending());
        trail.outcome(&serde_json::json!({"deleted": 7}), Some("SIGTERM"), None).expect("outcome");
        assert!(!trail.pending());
        let text = fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["record"], "intent");
        assert_eq!(lines[0]["selected"], 7);
        assert_eq!(lines[0]["saved"], "/tmp/x.jsonl");
        assert_eq!(lines[0]["itemised"], true);
        assert_eq!(lines[0]["claimed_user"], "mallory");
        assert_eq!(lines[0]["login_uid"], 1000);
        assert_eq!(lines[1]["record"], "outcome");
        assert_eq!(lines[1]["deleted"], 7);
        assert_eq!(lines[1]["signal"], "SIGTERM");
        assert_eq!(lines[0]["run_id"], lines[1]["run_id"]);
        let _ = fs::remove_dir_all(&dir);
    }

    /// The records in docs/json-schema.md have exactly the keys the code writes.
    #[test]
    fn issue_10_10_schema_doc_examples_match_the_records() {
        let doc = include_str!("../docs/json-schema.md");
        let start = doc.find("```jsonl\n{\"record\":\"intent\"").expect("the audit example") + 9;
        let block = &doc[start..start + doc[start..].find("```").expect("block end")];
        let examples: Vec<serde_json::Value> =
            block.lines().map(|l| serde_json::from_str(l).expect("example json")).collect();
        assert_eq!(examples.len(), 2);
        let dir = scratch("schema");
        let path = dir.join("audit.jsonl");
        let mut trail = Trail::new(Some(AuditLog::open(&path).expect("open")), sample());
        trail.intent(Some(1)).expect("intent");
        let report = crate::evict::Report::nothing(1, 1, false);
        trail.outcome(&report, None, None).expect("outcome");
        let text = fs::read_to_string(&path).expect("read");
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
            k.sort();
            k
        };
        for (line, example) in text.lines().zip(&examples) {
            let written: serde_json::Value = serde_json::from_str(line).expect("json");
            assert_eq!(keys(&written), keys(example), "{line}");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn issue_10_11_actor_is_the_real_uid_not_the_environment() {
        let a = Actor::current();
        // SAFETY: getuid cannot fail.
        assert_eq!(a.uid, rustix::process::getuid().as_raw());
        if a.uid == 0 {
            assert_eq!(a.user.as_deref(), Some("root"));
        }
        assert_ne!(a.login_uid, Some(LOGINUID_UNSET));
    }

    #[test]
    fn issue_10_12_no_save_file_means_not_itemised() {
        let r = sample().with_save(None);
        assert!(!r.itemised);
        assert_eq!(r.saved, None);
    }

    #[test]
    fn issue_9_4_a_symlinked_log_is_refused() {
        let dir = scratch("symlink");
        fs::create_dir_all(&dir).expect("dir");
        let victim = dir.join("victim");
        fs::write(&victim, "keep\n").expect("victim");
        let link = dir.join("audit.jsonl");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        let e = AuditLog::open(&link).expect_err("a symlink must be refused");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(fs::read_to_string(&victim).expect("read"), "keep\n");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn issue_9_4_a_hard_linked_log_is_refused() {
        let dir = scratch("hardlink");
        fs::create_dir_all(&dir).expect("dir");
        let victim = dir.join("victim");
        fs::write(&victim, "keep\n").expect("victim");
        let link = dir.join("audit.jsonl");
        fs::hard_link(&victim, &link).expect("hard link");
        let e = AuditLog::open(&link).expect_err("a hard link must be refused");
        assert!(e.to_string().contains("hard links"), "{e}");
        assert_eq!(fs::read_to_string(&victim).expect("read"), "keep\n");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn issue_9_4_a_directory_is_not_a_log() {
        let dir = scratch("notfile");
        fs::create_dir_all(dir.join("audit.jsonl")).expect("dir");
        let e = AuditLog::open(&dir.join("audit.jsonl")).expect_err("refused");
        assert!(e.to_string().contains("audit.jsonl"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }
}
