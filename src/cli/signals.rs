//! SIGINT, SIGTERM and SIGHUP during `evict`: the first one sets the stop flag (no new
//! deletes are sent, the acks of those in flight are drained, the report and the audit outcome
//! are written, exit 2); a second one ends the process at once with exit 2 (the audit intent
//! line, written before the first delete, still accounts for the run).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::flag;

use super::exit::Failure;

/// The signals that stop an eviction cleanly.
const STOPPING: [(libc::c_int, &str); 3] =
    [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM"), (SIGHUP, "SIGHUP")];

/// Set by the first stopping signal.
static STOP: AtomicBool = AtomicBool::new(false);
/// The last stopping signal caught (0: none).
static CAUGHT: AtomicUsize = AtomicUsize::new(0);

/// Installs the handlers (once per process) and returns the stop flag the engine polls.
pub fn install() -> Result<&'static AtomicBool, Failure> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let r = INSTALLED.get_or_init(|| {
        for (sig, name) in STOPPING {
            // Registered first, so it sees the flag as it was before this signal: only a
            // second signal finds it set and exits.
            flag::register_conditional_shutdown(sig, 2, &STOP)
                .and_then(|_| flag::register_usize(sig, &CAUGHT, sig as usize))
                .and_then(|_| flag::register(sig, &STOP))
                .map_err(|e| format!("cannot handle {name}: {e}"))?;
        }
        Ok(())
    });
    r.clone().map_err(Failure::Message)?;
    Ok(&STOP)
}

/// True once a stopping signal arrived.
pub fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// The name of the signal that stopped the run, if one did.
pub fn caught() -> Option<&'static str> {
    let sig = CAUGHT.load(Ordering::Relaxed);
    STOPPING.iter().find(|(s, _)| *s as usize == sig).map(|(_, name)| *name)
}
