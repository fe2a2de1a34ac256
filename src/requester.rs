//! Who caused an event: the process whose netlink request (a create, an update, a delete)
//! made the kernel send it, as `conntrack -E` names it after `[USERSPACE]`: the port id the
//! event carries, and the program behind that port, found in `/proc`.
//!
//! A port id names a socket, not a process. As conntrack-tools does, the socket's inode is
//! read from `/proc/thread-self/net/netlink` (this thread's namespace: port ids are per
//! namespace), then looked for among the descriptors of the process whose pid is the port id
//! (a process's first netlink socket gets its pid as port id), then of every process. A
//! requester that already exited is not found: its events show the port id alone.

use std::collections::VecDeque;
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
/// thread's namespace; every process is looked through only when `scan` allows it.
fn program(proto: u32, portid: u32, scan: &mut dyn FnMut() -> bool) -> Option<String> {
    let table = fs::read_to_string("/proc/thread-self/net/netlink").ok()?;
    let inode = socket_inode(&table, proto, portid)?;
    comm(holder(inode, portid, scan)?)
}

/// True when process `pid` holds socket `inode` (one of its descriptors links to it).
fn holds(pid: u32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
}

/// The process holding socket `inode`: the one whose pid is `portid` first, then any (when
/// `scan` says a look through every process may be spent).
fn holder(inode: u64, portid: u32, scan: &mut dyn FnMut() -> bool) -> Option<u32> {
    if holds(portid, inode) {
        return Some(portid);
    }
    if !scan() {
        return None;
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

/// How many port ids' answers are remembered at once: the requesters active within
/// [`REUSE`] (a guard, a script's deletes, an operator's `conntrack -D`) all fit, so
/// alternating between them does not look each up again.
const REMEMBERED: usize = 32;

/// How many looks through every process's descriptors may be spent per second. Such a look
/// reads `/proc/*/fd` whole (thousands of links on a busy host) on the event path; a stream
/// of events from many short-lived requesters (a loop of `conntrack -D`, or anyone who can
/// open netfilter sockets) would otherwise cost one per event and stall the stream. Past the
/// budget, a requester that is not the process its port id names shows its port id alone.
const SCANS_PER_SECOND: u32 = 8;

/// Names the requesters of events, remembering each answer for a second.
#[derive(Debug, Default)]
pub struct Requesters {
    /// The newest answers, oldest first; at most [`REMEMBERED`].
    known: VecDeque<(u32, Instant, Option<String>)>,
    /// The current second of the scan budget: when it began, and the scans spent in it.
    scans: Option<(Instant, u32)>,
}

impl Requesters {
    /// The requester behind `portid`, its program looked up in `/proc` (or remembered).
    pub fn of(&mut self, portid: u32) -> Requester {
        self.of_at(portid, Instant::now(), |portid, scan| program(NETLINK_NETFILTER, portid, scan))
    }

    /// [`Requesters::of`] at `now`, asking `look` for a program not remembered (which may
    /// call its `scan` to ask whether a look through every process is within the budget).
    fn of_at(
        &mut self,
        portid: u32,
        now: Instant,
        look: impl FnOnce(u32, &mut dyn FnMut() -> bool) -> Option<String>,
    ) -> Requester {
        self.known.retain(|(_, at, _)| now.saturating_duration_since(*at) < REUSE);
        if let Some((_, _, name)) = self.known.iter().find(|(p, _, _)| *p == portid) {
            return Requester { portid, progname: name.clone() };
        }
        let scans = &mut self.scans;
        let mut scan = || {
            let (start, spent) = match *scans {
                Some((start, spent)) if now.saturating_duration_since(start) < REUSE => {
                    (start, spent)
                }
                _ => (now, 0),
            };
            let allowed = spent < SCANS_PER_SECOND;
            *scans = Some((start, spent + u32::from(allowed)));
            allowed
        };
        let progname = look(portid, &mut scan);
        if self.known.len() == REMEMBERED {
            self.known.pop_front();
        }
        self.known.push_back((portid, now, progname.clone()));
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
        let mut scan = || true;
        let found = program(0, portid, &mut scan);
        let not_netfilter = program(NETLINK_NETFILTER, portid, &mut scan);
        // SAFETY: closes the descriptor opened above.
        unsafe { libc::close(fd) };
        let me = fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(found, Some(me.trim_end().to_string()));
        assert_eq!(not_netfilter, None, "a route socket is not a netfilter one");
        assert_eq!(program(0, portid, &mut scan), None, "gone with its socket");
        assert_eq!(Requesters::default().of(0), Requester { portid: 0, progname: None });
    }

    /// A `look` that names every port id `p<N>`: its process is found by pid (no scan), or
    /// only by a scan, when one is left in the budget.
    fn look(
        calls: &mut u32,
        by_pid: bool,
    ) -> impl FnOnce(u32, &mut dyn FnMut() -> bool) -> Option<String> {
        move |portid, scan| {
            *calls += 1;
            (by_pid || scan()).then(|| format!("p{portid}"))
        }
    }

    #[test]
    fn issue_16_7_alternating_requesters_are_each_remembered_for_a_second() {
        let (mut r, t0, mut calls) = (Requesters::default(), Instant::now(), 0);
        for round in 0..3 {
            for portid in 1..=REMEMBERED as u32 {
                let at = t0 + Duration::from_millis(10 * round);
                let got = r.of_at(portid, at, look(&mut calls, true));
                assert_eq!(got, Requester { portid, progname: Some(format!("p{portid}")) });
            }
        }
        assert_eq!(calls, REMEMBERED as u32, "each looked up once, not once per event");
        r.of_at(1, t0 + REUSE, look(&mut calls, true));
        assert_eq!(calls, REMEMBERED as u32 + 1, "an answer a second old is looked up again");
        r.of_at(REMEMBERED as u32 + 1, t0 + REUSE, look(&mut calls, true));
        r.of_at(2, t0 + REUSE, look(&mut calls, true));
        assert_eq!(r.known.len(), 3, "answers older than a second are forgotten, not kept");
    }

    #[test]
    fn issue_16_7_looks_through_every_process_are_budgeted_per_second() {
        let (mut r, t0, mut calls) = (Requesters::default(), Instant::now(), 0);
        let names: Vec<Option<String>> =
            (1..=100).map(|portid| r.of_at(portid, t0, look(&mut calls, false)).progname).collect();
        assert_eq!(calls, 100, "every new port id is asked about");
        let named = names.iter().filter(|n| n.is_some()).count();
        assert_eq!(named, SCANS_PER_SECOND as usize, "then only the budget's worth scan");
        assert_eq!(names[0].as_deref(), Some("p1"));
        assert_eq!(names[99], None, "past the budget: the port id alone");
        let own = r.of_at(200, t0, look(&mut calls, true)).progname;
        assert_eq!(own.as_deref(), Some("p200"), "found by its pid: no scan spent");
        let later = r.of_at(500, t0 + REUSE, look(&mut calls, false));
        assert_eq!(later.progname.as_deref(), Some("p500"), "a new second, a new budget");
    }
}
