//! Entering a network namespace before any socket opens (`--netns NAME|PATH`).

use std::fs::File;
use std::os::fd::AsFd;

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

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
pub fn enter(name_or_path: &str) -> Result<(), NetnsError> {
    let path = path_of(name_or_path);
    let file =
        File::open(&path).map_err(|source| NetnsError::Open { path: path.clone(), source })?;
    // setns(2) with CLONE_NEWNET: EINVAL if the file is another kind of namespace.
    move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(|errno| NetnsError::Enter { path, source: std::io::Error::from(errno) })
}

/// Why a namespace could not be entered or told.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetnsError {
    /// The namespace file could not be opened (no such name under /run/netns, no access).
    #[error("network namespace {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// setns(2) refused it (EPERM: CAP_SYS_ADMIN is needed; EINVAL: not a network namespace).
    #[error("enter network namespace {path}: {source}{}", cap_hint(.source))]
    Enter {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// `/proc/thread-self/ns/net` could not be read.
    #[error("read /proc/thread-self/ns/net: {0}")]
    Identity(std::io::Error),
}

fn cap_hint(e: &std::io::Error) -> &'static str {
    if e.raw_os_error() == Some(libc::EPERM) { " (needs CAP_SYS_ADMIN)" } else { "" }
}

/// The initial namespace's inode since Linux 6.18 (`PROC_NET_INIT_INO`); dynamically
/// allocated inodes start at 0xF0000000, so no other namespace can have it.
pub const INIT_NET_INODE: u64 = 0xEFFF_FFF9;

/// Which network namespace this thread is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Its inode, as `ls -iL /proc/self/ns/net` and the 6.x kernel log show it.
    pub inode: u64,
    /// Whether it is the host's initial namespace; `None` when that cannot be told.
    pub initial: Option<bool>,
}

/// The current thread's namespace. On 6.18+ it is the initial one exactly when its inode is
/// the fixed one; before, when it is PID 1's namespace.
pub fn identity(kernel: Option<(u32, u32)>) -> Result<Identity, NetnsError> {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata("/proc/thread-self/ns/net").map_err(NetnsError::Identity)?;
    let inode = own.ino();
    let initial = if inode == INIT_NET_INODE {
        Some(true)
    } else if kernel.is_some_and(|v| v >= (6, 18)) {
        Some(false)
    } else if let Ok(init) = std::fs::metadata("/proc/1/ns/net") {
        // Older kernels number the initial namespace like any other: compare with PID 1's.
        Some(init.ino() == inode && init.dev() == own.dev())
    } else {
        None
    };
    Ok(Identity { inode, initial })
}
