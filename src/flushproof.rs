//! The scratch-namespace proof of a filtered flush: before the kernel's filtered flush may
//! stand in for the per-flow deletes in a real namespace, the very request bytes are sent to
//! a throw-away namespace holding a small table built to tell right from wrong, and must
//! delete there exactly the flows the selection selects.
//!
//! How ([`prove`]):
//! 1. Two dedicated threads each call `unshare(CLONE_NEWNET)`: only that thread moves, into a
//!    fresh, empty, unnamed namespace (no `ip netns` name). Its inode is checked to differ
//!    from the caller's, the process's and the initial namespace's before anything is sent.
//! 2. Each creates the same [`scratch_table`]: flows that match every criterion of the
//!    filter (TCP and UDP, plus variants in the criteria the filter does not name) and, for
//!    each criterion, a flow that differs only in it (other source, other destination, the
//!    address in the other direction, other mark, a status bit flipped, other zone, IPv6 and
//!    IPv4-mapped IPv6 flows).
//! 3. Each reads its table back as the kernel holds it (one lookup per flow); the selector's
//!    exact userspace check says, for each flow, whether it is selected. At least one must
//!    be, and one not.
//! 4. (a) In the first namespace, the dump derived from the flush request's own bytes must
//!    return exactly the selected flows. (b) In the second, the flush request itself is sent;
//!    a lookup of every flow must then show exactly the selected flows gone and every other
//!    flow still there. Both run at once: each walks the kernel's whole conntrack hash.
//!
//! Only then does the caller send the same bytes to the real namespace. Any error (EPERM,
//! EOPNOTSUPP on an older kernel, a create refused) or any mismatch refuses the flush. The
//! threads' sockets are closed and the threads end before `prove` returns; one handle to each
//! scratch namespace is returned with the proof and held until the real flush is done (their
//! teardown walks the hash too), then dropped, and the kernel frees them. The threads always end: without
//! CAP_NET_ADMIN (which `unshare` does not need; CAP_SYS_ADMIN is enough) the scratch
//! creates end on the kernel's one EPERM, and every other wait for the kernel is bounded by
//! the sockets' receive timeout (`ctnetlink::REPLY_TIMEOUT`). Nothing is cached: each run
//! proves again (a few milliseconds).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use crate::ctnetlink::{Conntrack, DumpFilter, FlushRequest};
use crate::flow::{Family, Flow, L4, Proto, ProtoState, Status, TcpState, Tuple};
use crate::netns::INIT_NET_INODE;

/// What the proof established, for the report (`evict --json` `proof`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Proof {
    /// Inodes of the two scratch namespaces, one per check (gone by the time this is read).
    pub scratch_netns: Vec<u64>,
    /// Flows in the scratch table.
    pub scratch_flows: u64,
    /// Of those, the flows the selection selects.
    pub selected: u64,
    /// What the dump with the flush's attributes returned (= `selected`, all of them).
    pub dump_returned: u64,
    /// Flows the scratch flush deleted (= `selected`, all of them).
    pub flushed: u64,
    /// Flows the scratch flush left (= `scratch_flows - selected`, all of them).
    pub kept: u64,
    /// Milliseconds the proof took.
    pub elapsed_ms: f64,
}

/// Why a proof did not hold: nothing was sent to the caller's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The scratch namespaces' inodes, those that were made.
    pub scratch_netns: Vec<u64>,
    /// What went wrong, in words.
    pub why: String,
    /// The errno the kernel answered a scratch request with, when that is why (EPERM: the
    /// process lacks `CAP_NET_ADMIN`, which the real namespace needs as much).
    pub errno: Option<i32>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// A flow's identity in the scratch table: the sport (or ICMP id) is unique per flow there.
fn same_flow(a: &Flow, b: &Flow) -> bool {
    (a.family, a.proto, a.orig.src, a.orig.dst, a.orig.l4)
        == (b.family, b.proto, b.orig.src, b.orig.dst, b.orig.l4)
        && a.zone.unwrap_or(0) == b.zone.unwrap_or(0)
}

/// The scratch table for a flush `filter`: flows meeting every criterion, and for each
/// criterion flows that differ only in it. Pure; every flow has its own source port.
pub fn scratch_table(filter: &DumpFilter) -> Vec<Flow> {
    let taken: Vec<Ipv4Addr> = filter.orig_src_v4.into_iter().chain(filter.orig_dst_v4).collect();
    let mut free = (1..=250u8).map(|i| Ipv4Addr::new(192, 0, 2, i)).filter(|a| !taken.contains(a));
    let mut next_free = || free.next().unwrap_or(Ipv4Addr::new(198, 51, 100, 1));
    let src = filter.orig_src_v4.unwrap_or_else(&mut next_free);
    let dst = filter.orig_dst_v4.unwrap_or_else(&mut next_free);
    let (other_src, other_dst, third) = (next_free(), next_free(), next_free());

    let mark = filter.mark.map_or(0, |(v, m)| v & m);
    let status = match filter.status {
        Some((v, m)) => ((Status::ASSURED | Status::SEEN_REPLY) & !m) | (v & m),
        None => Status::ASSURED | Status::SEEN_REPLY,
    };
    let zone = filter.zone.filter(|z| *z != 0);
    let base = Flow {
        family: Family::Ipv4,
        proto: Proto::TCP,
        state: Some(ProtoState::Tcp(TcpState::Established)),
        status: Status(status),
        timeout: Some(600),
        mark: Some(mark),
        zone,
        ..Flow::default()
    };
    let mut table = Vec::new();
    let mut add = |mut f: Flow, s: IpAddr, d: IpAddr| {
        let sport = 40_000 + table.len() as u16;
        f.orig = Tuple { src: s, dst: d, l4: L4::Ports { src: sport, dst: 443 }, zone: None };
        f.reply = f.orig.inverse();
        f.family = Family::of(s);
        table.push(f);
    };
    let v4 = IpAddr::V4;
    let mapped = |a: Ipv4Addr| IpAddr::V6(a.to_ipv6_mapped());
    // Every criterion met: TCP, UDP; and whatever the filter leaves open.
    add(base.clone(), v4(src), v4(dst));
    let udp = Flow { proto: Proto::UDP, state: None, ..base.clone() };
    add(udp, v4(src), v4(dst));
    if filter.orig_src_v4.is_none() {
        add(base.clone(), v4(other_src), v4(dst));
    }
    if filter.orig_dst_v4.is_none() {
        add(base.clone(), v4(src), v4(other_dst));
    }
    if filter.mark.is_none() {
        add(Flow { mark: Some(0x5a5a), ..base.clone() }, v4(src), v4(dst));
    }
    if filter.status.is_none() {
        add(
            Flow { status: Status(0), state: None, proto: Proto::UDP, ..base.clone() },
            v4(src),
            v4(dst),
        );
    }
    if filter.zone.is_none() {
        add(Flow { zone: Some(9), ..base.clone() }, v4(src), v4(dst));
    }
    // Each criterion missed alone.
    if let Some(s) = filter.orig_src_v4 {
        add(base.clone(), v4(other_src), v4(dst));
        // The address in the other direction: to it, not from it.
        add(base.clone(), v4(third), v4(s));
        add(base.clone(), v4(dst), v4(s));
    }
    if let Some(d) = filter.orig_dst_v4 {
        add(base.clone(), v4(src), v4(other_dst));
        add(base.clone(), v4(d), v4(third));
        add(base.clone(), v4(d), v4(src));
    }
    if let Some((_, m)) = filter.mark {
        if m != 0 {
            let low = m & m.wrapping_neg();
            add(Flow { mark: Some(mark ^ low), ..base.clone() }, v4(src), v4(dst));
            let high = 1u32 << (31 - m.leading_zeros());
            if high != low {
                add(Flow { mark: Some(mark ^ high), ..base.clone() }, v4(src), v4(dst));
            }
        }
        if m != u32::MAX {
            // A bit outside the mask does not matter.
            let outside = !m & (!m).wrapping_neg();
            add(Flow { mark: Some(mark ^ outside), ..base.clone() }, v4(src), v4(dst));
        }
    }
    if let Some((_, m)) = filter.status {
        for bit in (0..16).map(|b| 1u32 << b).filter(|b| m & b != 0) {
            add(Flow { status: Status(status ^ bit), ..base.clone() }, v4(src), v4(dst));
        }
    }
    if let Some(z) = filter.zone {
        add(Flow { zone: Some(z.wrapping_add(1)), ..base.clone() }, v4(src), v4(dst));
        if z != 0 {
            add(Flow { zone: None, ..base.clone() }, v4(src), v4(dst));
        }
    }
    // The same hosts, but IPv6: IPv4-mapped and native.
    add(base.clone(), mapped(src), mapped(dst));
    let v6 =
        |a: Ipv4Addr| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, a.octets()[3].into()));
    add(base.clone(), v6(src), v6(dst));
    table
}

/// A scratch flow for messages.
fn describe(f: &Flow) -> String {
    let zone = f.zone.map(|z| format!(" zone={z}")).unwrap_or_default();
    format!(
        "{} {} -> {} mark={} status={:#x}{zone}",
        f.proto,
        f.orig.src,
        f.orig.dst,
        f.mark.unwrap_or(0),
        f.status.0
    )
}

/// The inode of a `/proc/.../ns/net` link's namespace.
fn ns_inode(path: &str) -> Result<u64, String> {
    std::fs::metadata(path).map(|m| m.ino()).map_err(|e| format!("{path}: {e}"))
}

/// Proves `req` on a scratch table built for `filter`, `selects` being the selection's exact
/// check. `Ok` only when the dump with the request's attributes returned exactly the selected
/// scratch flows and the request deleted exactly them; `Err` says why not. Never touches the
/// caller's namespace: everything happens on threads in namespaces of their own.
///
/// The two checks run at once, each on its own copy of the scratch table in its own scratch
/// namespace: each walks the kernel's whole conntrack hash (shared by every namespace), so
/// side by side they cost one walk, not two. The dump does not change the table, so checking
/// it on a twin is the same check.
///
/// With the proof come handles that keep the two scratch namespaces alive: drop them once
/// the real flush is done. Tearing a namespace down walks the whole conntrack hash too (in a
/// kernel worker), which would otherwise run beside the real flush.
pub fn prove(
    req: &FlushRequest,
    filter: &DumpFilter,
    selects: &(dyn Fn(&Flow) -> bool + Sync),
) -> Result<(Proof, Vec<OwnedFd>), Refusal> {
    let started = Instant::now();
    let refuse = |why| Refusal { scratch_netns: Vec::new(), why, errno: None };
    let process = ns_inode("/proc/self/ns/net").map_err(refuse)?;
    let caller = ns_inode("/proc/thread-self/ns/net").map_err(refuse)?;
    let not_these = [process, caller, INIT_NET_INODE];
    let table = scratch_table(filter);
    let (mut ns_dump, mut ns_flush) = (None, None);
    let (dump, flush) = std::thread::scope(|s| {
        let run = |check, made| {
            let table = &table;
            s.spawn(move || in_scratch(req, table, selects, check, &not_these, made))
        };
        let dump = run(Check::Dump, &mut ns_dump);
        let flush = run(Check::Flush, &mut ns_flush);
        let panicked = |_| Err(Failed::from("a scratch thread panicked".to_string()));
        (dump.join().unwrap_or_else(panicked), flush.join().unwrap_or_else(panicked))
    });
    let scratch_netns: Vec<u64> = ns_dump.into_iter().chain(ns_flush).collect();
    match (dump, flush) {
        (Ok(d), Ok(f)) if (d.flows, d.selected) == (f.flows, f.selected) => {
            let proof = Proof {
                scratch_netns,
                scratch_flows: d.flows,
                selected: d.selected,
                dump_returned: d.dump_returned,
                flushed: f.flushed,
                kept: f.kept,
                elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
            };
            Ok((proof, [d.hold, f.hold].into_iter().flatten().collect()))
        }
        (Ok(_), Ok(_)) => {
            Err(Refusal { scratch_netns, why: "the two scratch tables differ".into(), errno: None })
        }
        (d, f) => {
            let failed: Vec<(&str, Failed)> = [("dump", d), ("flush", f)]
                .into_iter()
                .filter_map(|(what, r)| r.err().map(|e| (what, e)))
                .collect();
            let why: Vec<String> =
                failed.iter().map(|(what, e)| format!("{what} check: {}", e.why)).collect();
            let errno = failed.iter().find_map(|(_, e)| e.errno);
            Err(Refusal { scratch_netns, why: why.join("; "), errno })
        }
    }
}

/// Why one scratch thread's check failed: in words, and the kernel's errno when it answered
/// with one.
#[derive(Debug)]
struct Failed {
    why: String,
    errno: Option<i32>,
}

impl From<String> for Failed {
    fn from(why: String) -> Failed {
        Failed { why, errno: None }
    }
}

impl From<crate::ctnetlink::Error> for Failed {
    fn from(e: crate::ctnetlink::Error) -> Failed {
        Failed { why: e.to_string(), errno: e.errno() }
    }
}

/// Which half of the proof a scratch thread checks.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// (a) The dump with the flush's attributes returns exactly the selected flows.
    Dump,
    /// (b) The flush deletes exactly the selected flows and keeps every other.
    Flush,
}

/// What one scratch thread saw.
#[derive(Debug, Default)]
struct Half {
    /// Keeps the namespace alive after the thread ends.
    hold: Option<OwnedFd>,
    flows: u64,
    selected: u64,
    dump_returned: u64,
    flushed: u64,
    kept: u64,
}

/// One half of the proof, on its own thread: moves the thread to a new namespace, creates
/// the table there and checks.
fn in_scratch(
    req: &FlushRequest,
    table: &[Flow],
    selects: &(dyn Fn(&Flow) -> bool + Sync),
    check: Check,
    not_these: &[u64],
    made: &mut Option<u64>,
) -> Result<Half, Failed> {
    // SAFETY: unshare takes flags only; CLONE_NEWNET moves just this thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        // EPERM here is CAP_SYS_ADMIN's, not the table's: a refusal, not the run's error.
        let e = std::io::Error::last_os_error();
        return Err(format!("unshare(CLONE_NEWNET): {e}").into());
    }
    let scratch = ns_inode("/proc/thread-self/ns/net")?;
    *made = Some(scratch);
    if not_these.contains(&scratch) {
        return Err(format!("namespace {scratch} is not a fresh one; nothing sent").into());
    }
    let hold = std::fs::File::open("/proc/thread-self/ns/net")
        .map(OwnedFd::from)
        .map_err(|e| format!("/proc/thread-self/ns/net: {e}"))?;
    let mut ct = Conntrack::open()?;
    let mut refused = None;
    ct.create(table, |i, errno| {
        refused.get_or_insert((i, errno));
    })?;
    if let Some((i, errno)) = refused {
        let e = std::io::Error::from_raw_os_error(errno);
        let why = format!("scratch flow {i} could not be created: {e}");
        return Err(Failed { why, errno: Some(errno) });
    }
    // The table as the kernel holds it, and which of it the selection selects. Entries are
    // looked up one by one (a hash lookup each): a dump would walk the whole global conntrack
    // hash, every namespace's entries.
    let mut held: Vec<(Flow, bool)> = Vec::with_capacity(table.len());
    for t in table {
        match ct.get(t)? {
            Some(f) if same_flow(t, &f) => {
                let s = selects(&f);
                held.push((f, s));
            }
            _ => return Err(format!("scratch flow {} is not in the table", describe(t)).into()),
        }
    }
    let selected = held.iter().filter(|(_, s)| *s).count();
    if selected == 0 || selected == held.len() {
        return Err(format!(
            "the scratch table has {selected} of {} flows selected: it proves nothing",
            held.len()
        )
        .into());
    }
    let mut half = Half {
        hold: Some(hold),
        flows: held.len() as u64,
        selected: selected as u64,
        ..Half::default()
    };
    match check {
        Check::Dump => {
            let mut returned: Vec<Flow> = Vec::new();
            ct.dump_as_flush(req, |f| returned.push(f.clone()))?;
            let exact = returned.len() == selected
                && returned.iter().all(|g| held.iter().any(|(h, s)| *s && same_flow(g, h)));
            if !exact {
                return Err(format!(
                    "the dump with the flush's attributes returned {} flows for {selected} \
                     selected",
                    returned.len()
                )
                .into());
            }
            half.dump_returned = returned.len() as u64;
        }
        Check::Flush => {
            ct.send_flush(req)?;
            for (f, s) in &held {
                let there = ct.get(f)?.is_some_and(|g| g.id == f.id);
                if there == *s {
                    let what = if *s { "left the selected" } else { "deleted the unselected" };
                    return Err(format!("the flush {what} scratch flow {}", describe(f)).into());
                }
                half.kept += u64::from(there);
            }
            half.flushed = half.flows - half.kept;
        }
    }
    Ok(half)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip4(s: &str) -> Option<Ipv4Addr> {
        Some(s.parse().unwrap())
    }

    /// What the kernel's filter selects, written from `ctnetlink_filter_match`.
    fn kernel_selects(f: &DumpFilter, flow: &Flow) -> bool {
        flow.family == Family::Ipv4
            && f.orig_src_v4.is_none_or(|a| flow.orig.src == IpAddr::V4(a))
            && f.orig_dst_v4.is_none_or(|a| flow.orig.dst == IpAddr::V4(a))
            && f.mark.is_none_or(|(v, m)| flow.mark.unwrap_or(0) & m == v & m)
            && f.status.is_none_or(|(v, m)| flow.status.0 & m == v & m)
            && f.zone.is_none_or(|z| flow.zone.unwrap_or(0) == z)
    }

    fn check(f: DumpFilter, min_flows: usize) {
        let t = scratch_table(&f);
        assert!(t.len() >= min_flows, "{f:?}: {} flows", t.len());
        for (i, a) in t.iter().enumerate() {
            for b in &t[i + 1..] {
                assert!(!same_flow(a, b), "two flows share a tuple: {a:?}");
            }
        }
        let selected = t.iter().filter(|fl| kernel_selects(&f, fl)).count();
        assert!(selected >= 2, "{f:?}: TCP and UDP both selected");
        assert!(selected < t.len(), "{f:?}: some flow kept");
        // For each criterion, some kept flow meets every other criterion: it differs in that
        // one only.
        let drop =
            |g: DumpFilter| t.iter().any(|fl| !kernel_selects(&f, fl) && kernel_selects(&g, fl));
        if let Some(s) = f.orig_src_v4 {
            assert!(drop(DumpFilter { orig_src_v4: None, ..f }), "other source");
            // The address as a destination (the other direction), kept.
            let s = IpAddr::V4(s);
            assert!(t.iter().any(|fl| fl.orig.dst == s && !kernel_selects(&f, fl)));
        }
        if let Some(d) = f.orig_dst_v4 {
            assert!(drop(DumpFilter { orig_dst_v4: None, ..f }), "other destination");
            let d = IpAddr::V4(d);
            assert!(t.iter().any(|fl| fl.orig.src == d && !kernel_selects(&f, fl)));
        }
        if f.mark.is_some() {
            assert!(drop(DumpFilter { mark: None, ..f }), "other mark");
        }
        if f.zone.is_some() {
            assert!(drop(DumpFilter { zone: None, ..f }), "other zone");
        }
        if let Some((v, m)) = f.status {
            for bit in (0..16).map(|b| 1u32 << b).filter(|b| m & b != 0) {
                let without = DumpFilter { status: Some((v & !bit, m & !bit)), ..f };
                let without =
                    if m & !bit == 0 { DumpFilter { status: None, ..f } } else { without };
                assert!(drop(without), "status bit {bit:#x}");
            }
        }
        // IPv6 flows with the same hosts are never selected.
        let v6: Vec<_> = t.iter().filter(|fl| fl.family == Family::Ipv6).collect();
        assert!(v6.len() >= 2 && v6.iter().all(|fl| !kernel_selects(&f, fl)));
        assert!(t.iter().any(|fl| fl.proto == Proto::UDP && kernel_selects(&f, fl)));
    }

    #[test]
    fn scratch_tables_for_each_filter_shape() {
        let src = DumpFilter { orig_src_v4: ip4("172.16.3.5"), ..Default::default() };
        check(src, 8);
        check(DumpFilter { orig_dst_v4: ip4("10.0.0.1"), ..Default::default() }, 8);
        check(DumpFilter { orig_dst_v4: ip4("10.0.0.1"), ..src }, 10);
        check(DumpFilter { mark: Some((42, u32::MAX)), ..src }, 9);
        check(DumpFilter { mark: Some((0x10, 0xff0)), ..src }, 10);
        check(DumpFilter { zone: Some(7), ..src }, 9);
        check(DumpFilter { zone: Some(0), ..src }, 9);
        check(DumpFilter { status: Some((Status::ASSURED, Status::ASSURED)), ..src }, 9);
        check(DumpFilter { status: Some((0, Status::ASSURED | Status::SEEN_REPLY)), ..src }, 10);
        check(
            DumpFilter {
                orig_dst_v4: ip4("10.0.0.1"),
                mark: Some((7, 0xff)),
                zone: Some(300),
                status: Some((Status::ASSURED, Status::ASSURED)),
                ..src
            },
            14,
        );
    }

    #[test]
    fn the_free_addresses_avoid_the_filtered_ones() {
        let f = DumpFilter {
            orig_src_v4: ip4("192.0.2.1"),
            orig_dst_v4: ip4("192.0.2.2"),
            ..Default::default()
        };
        check(f, 10);
    }
}
