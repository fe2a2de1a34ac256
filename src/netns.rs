//! Entering a network namespace before any socket opens (`--netns NAME|PATH`).

use std::fs::File;
use std::os::fd::AsRawFd;

/// Where a namespace name points: a path as given, or `/run/netns/NAME` (`ip netns add`).
pub fn path_of(name_or_path: &str) -> String {
    if name_or_path.contains('/') {
        name_or_path.to_string()
    } else {
        format!("/run/netns/{name_or_path}")
    }
}

/// Moves the calling thread into the namespace. Call it while the process has one thread,
/// before any socket opens: sockets and `/proc/sys/net` then belong to the target namespace.
pub fn enter(name_or_path: &str) -> Result<(), String> {
    let path = path_of(name_or_path);
    let file = File::open(&path).map_err(|e| format!("network namespace {path}: {e}"))?;
    // SAFETY: setns takes a valid open descriptor, which `file` holds for the whole call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let hint =
            if e.raw_os_error() == Some(libc::EPERM) { " (needs CAP_SYS_ADMIN)" } else { "" };
        return Err(format!("enter network namespace {path}: {e}{hint}"));
    }
    Ok(())
}
