//! Who caused an event: the process whose netlink request (a create, an update, a delete)
//! made the kernel send it, as `conntrack -E` names it after `[USERSPACE]`: the port id the
//! event carries, and the program behind that port, found in `/proc`.
//!
//! A port id names a socket, not a process. As conntrack-tools does, the socket's inode is
//! read from `/proc/thread-self/net/netlink` (this thread's namespace: port ids are per
//! namespace), then looked for among the descriptors of the process whose pid is the port id
//! (a process's first netlink socket gets its pid as port id), then of every process. A
//! requester that already exited is not found: its events show the port id alone.

use std::fs;
use std::time::{Duration, Instant};

/// The process whose request caused an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// The netlink port id of its socket (the event message's `nlmsg_pid`).
    pub portid: u32,
    /// Its name (`/proc/PID/comm`), when the process was still there to be found.
    pub progname: Option<String>,
}

/// `NETLINK_NETFILTER`, the protocol number in `/proc/net/netlink`'s `Eth` column.
const NETLINK_NETFILTER: u32 = 12;

/// How long an answer is reused for the same port id: a flush's thousands of DESTROY events
/// cost one look through `/proc`, and a port id freed and taken again shows the new owner
/// within this.
const REUSE: Duration = Duration::from_secs(1);

/// The inode of the netlink socket of protocol `proto` bound to `portid`, from the text of
/// `/proc/net/netlink` (`sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode`).
pub fn socket_inode(table: &str, proto: u32, portid: u32) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (eth, pid) = (f.get(1)?.parse::<u32>().ok()?, f.get(2)?.parse::<u32>().ok()?);
        (eth == proto && pid == portid).then(|| f.get(9)?.parse().ok()).flatten()
    })
}

/// The program holding the netlink socket of protocol `proto` bound to `portid` in this
/// thread's namespace.
fn program(proto: u32, portid: u32) -> Option<String> {
    let table = fs::read_to_string("/proc/thread-self/net/netlink").ok()?;
    let inode = socket_inode(&table, proto, portid)?;
    comm(holder(inode, portid)?)
}

/// True when process `pid` holds socket `inode` (one of its descriptors links to it).
fn holds(pid: u32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
}

/// The process holding socket `inode`: the one whose pid is `portid` first, then any.
fn holder(inode: u64, portid: u32) -> Option<u32> {
    if holds(portid, inode) {
        return Some(portid);
    }
    fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid > 1 && *pid != portid)
        .find(|pid| holds(*pid, inode))
}

/// The program name of process `pid`, as the process set it: any bytes but NUL (a name that
/// is not UTF-8 keeps its other characters), so printers escape it.
fn comm(pid: u32) -> Option<String> {
    let name = fs::read(format!("/proc/{pid}/comm")).ok()?;
    let name = name.strip_suffix(b"\n").unwrap_or(&name);
    Some(String::from_utf8_lossy(name).into_owned()).filter(|n| !n.is_empty())
}

/// Names the requesters of events, remembering the last answer for a second.
#[derive(Debug, Default)]
pub struct Requesters {
    last: Option<(u32, Instant, Option<String>)>,
}

impl Requesters {
    /// The requester behind `portid`, its program looked up in `/proc` (or remembered).
    pub fn of(&mut self, portid: u32) -> Requester {
        let now = Instant::now();
        if let Some((p, at, name)) = &self.last
            && *p == portid
            && now.duration_since(*at) < REUSE
        {
            return Requester { portid, progname: name.clone() };
        }
        let progname = program(NETLINK_NETFILTER, portid);
        self.last = Some((portid, now, progname.clone()));
        Requester { portid, progname }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/net/netlink` as a 6.18 kernel prints it.
    const TABLE: &str = "\
sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode
ffff8e0a4b1c2000 0   1          00000551 0        0        0     2        0        21102
ffff8e0a4b1c4800 12  3748       00000000 0        0        0     2        0        98231
ffff8e0a4b1c5000 12  3145348193 00000007 0        0        0     2        0        98240
ffff8e0a4b1c5800 0   3748       00000000 0        0        0     2        0        98299
";

    #[test]
    fn issue_16_7_a_port_id_names_its_netfilter_socket() {
        let nf = NETLINK_NETFILTER;
        assert_eq!(socket_inode(TABLE, nf, 3748), Some(98231), "protocol 12, not route's 0");
        assert_eq!(socket_inode(TABLE, 0, 3748), Some(98299));
        assert_eq!(socket_inode(TABLE, nf, 3_145_348_193), Some(98240));
        assert_eq!(socket_inode(TABLE, nf, 1), None, "a route socket");
        assert_eq!(socket_inode(TABLE, nf, 9), None);
        assert_eq!(socket_inode("", nf, 3748), None);
        assert_eq!(socket_inode("header\nffff 12 x\n", nf, 3748), None, "a short line is skipped");
    }

    #[test]
    fn issue_16_7_this_process_is_found_behind_its_own_socket() {
        // A route netlink socket of this test process (route netlink is always there, unlike
        // nfnetlink), bound by the kernel to a port id; the lookup is the same for both.
        // SAFETY: plain socket calls on a descriptor this test owns and closes.
        let (fd, portid) = unsafe {
            let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE);
            assert!(fd >= 0, "netlink socket");
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            assert_eq!(libc::bind(fd, (&raw const addr).cast(), len), 0, "bind");
            let mut got: libc::sockaddr_nl = std::mem::zeroed();
            let mut l = len;
            assert_eq!(libc::getsockname(fd, (&raw mut got).cast(), &mut l), 0);
            (fd, got.nl_pid)
        };
        let found = program(0, portid);
        let not_netfilter = program(NETLINK_NETFILTER, portid);
        // SAFETY: closes the descriptor opened above.
        unsafe { libc::close(fd) };
        let me = fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(found, Some(me.trim_end().to_string()));
        assert_eq!(not_netfilter, None, "a route socket is not a netfilter one");
        assert_eq!(program(0, portid), None, "gone with its socket");
        assert_eq!(Requesters::default().of(0), Requester { portid: 0, progname: None });
    }
}
