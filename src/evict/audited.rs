//! An eviction nobody types: the guard's, and the one `watch` runs after `e` and `y`. Each
//! writes what `ctguard evict` writes: the intent on disk before the first delete, a spool of
//! every flow deleted under the state directory (`ctguard load` puts them back), and the
//! outcome; the deletes are [`unattended`]'s, ID-guarded like every other.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use super::{Report, unattended};
use crate::audit::{Actor, AuditLog, RunInfo, Trail};
use crate::ctnetlink::Conntrack;
use crate::select::Selector;
use crate::spool::{self, Spool};

/// Spool files kept, in bytes over all of them; the oldest go first.
const SPOOL_KEEP: u64 = 1 << 30;

/// One audited eviction.
#[derive(Debug, Clone)]
pub struct Audited {
    /// Who runs it, as the audit records say (`guard`, `watch`).
    pub command: &'static str,
    /// The group evicted, naming the spool file.
    pub name: String,
    /// The selection as `evict` flags would say it, for the records.
    pub what: String,
    /// The flows.
    pub sel: Selector,
    /// At most this many, the most idle first.
    pub limit: Option<u64>,
    /// The spool goes under `state_dir/spool/`.
    pub state_dir: PathBuf,
    /// Where the records go (`None`: nowhere).
    pub audit_log: Option<PathBuf>,
    /// The namespace, as the records name it.
    pub netns: Option<String>,
}

impl Audited {
    /// Runs it in the calling thread's namespace until done or `stop`. Returns the report and
    /// the spool written; an error in words.
    pub fn run(&self, stop: &AtomicBool) -> Result<(Report, Option<PathBuf>), String> {
        let mut ct = Conntrack::open().map_err(|e| e.to_string())?;
        let _ = spool::prune(&self.state_dir, SPOOL_KEEP);
        let path = spool::in_state_dir(&self.state_dir, &self.name, SystemTime::now())
            .map_err(|e| e.to_string())?;
        let mut file = Spool::create(&path).map_err(|e| e.to_string())?;
        let log = match &self.audit_log {
            Some(p) => Some(AuditLog::open(p).map_err(|e| e.to_string())?),
            None => None,
        };
        let run =
            RunInfo::new(self.command, Actor::current(), self.netns.as_deref(), self.what.clone())
                .with_pace(self.limit, None)
                .with_save(Some(&path));
        let mut trail = Trail::new(log, run);
        // The intent is on disk before the first delete, or nothing is deleted.
        trail.intent(None).map_err(|e| e.to_string())?;
        let r = unattended(&mut ct, &self.sel, self.limit, Some(&mut file), stop);
        // The spool is committed whatever happened: it lists flows that may be gone now.
        let committed = file.commit().map_err(|e| e.to_string());
        let done = match r {
            Ok(done) => done,
            Err(e) => {
                let _ = trail.outcome(&serde_json::json!({}), None, Some(&e.to_string()));
                return Err(e.to_string());
            }
        };
        let signal = stop.load(Ordering::Relaxed).then_some("SIGTERM");
        let hook =
            done.hook_error.as_ref().map(|e| format!("spool: {e}; the deletes stopped there"));
        trail.outcome(&done.report, signal, hook.as_deref()).map_err(|e| e.to_string())?;
        let path = committed?;
        if done.report.deleted == 0 && hook.is_none() {
            // Nothing was deleted, nothing to put back: no empty file left behind each time.
            let _ = std::fs::remove_file(&path);
            return Ok((done.report, None));
        }
        match hook {
            Some(h) => Err(h),
            None => Ok((done.report, Some(path))),
        }
    }
}
