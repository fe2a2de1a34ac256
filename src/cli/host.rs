//! What `doctor` and `tune` learn about the network namespace they run in.

use ctguard::doctor::NetnsInfo;
use ctguard::netns;

use super::exit::Failure;

/// The namespace ctguard is in: its inode, and whether it is the host's initial one.
pub fn identity(kernel: Option<(u32, u32)>) -> Result<NetnsInfo, Failure> {
    let id = netns::identity(kernel).map_err(|e| Failure::Message(e.to_string()))?;
    Ok(NetnsInfo { inode: id.inode, initial: id.initial })
}
