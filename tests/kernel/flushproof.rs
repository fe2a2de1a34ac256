//! The scratch-namespace proof of the filtered flush (`ctguard::flushproof`): a scripted
//! `evict -s IP --yes` flushes without dumping the table, exactly the IP's flows going; a flush
//! request the kernel would misread is caught in the scratch namespace while the real table
//! stays as it was; selections the filter cannot express never take the flush; and the proof
//! leaves no thread, namespace or name behind.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::AtomicBool;

use ctguard::ctnetlink::{Conntrack, FlushRequest};
use ctguard::evict::{self, ProvenFlush};
use ctguard::select::{self, Selector};

use crate::checks::{Checks, equal};
use crate::evict::evict_json;
use crate::netns::Netns;
use crate::oracle::{self, Entry};
use crate::seed::{self, RUNAWAY_V4, RUNAWAY_V6, ip};

/// The mixed table plus flows *to* the runaway address (the other direction) and flows from
/// it in other zones and with marks.
fn seed(ns: &Netns) {
    seed::with_conntrack(ns, &seed::mixed_table(2_000), "seed.conntrack");
    let mut lines = Vec::new();
    for i in 0..40u16 {
        lines.push(format!(
            "-I -p tcp -s 10.7.0.{} -d {RUNAWAY_V4} --sport {} --dport 443 --state TIME_WAIT -t 3600",
            1 + i % 200,
            30_000 + i
        ));
        lines.push(format!(
            "-I -p udp -s {RUNAWAY_V4} -d 10.6.0.1 --sport {} --dport 53 -t 3600 -m {} -w {}",
            30_000 + i,
            i % 3,
            i % 2
        ));
    }
    let path = ns.write_file("extra.conntrack", &(lines.join("\n") + "\n"));
    ns.conntrack(&["-R", &path]).ok();
}

fn lines_of(entries: &[Entry], keep: impl Fn(&Entry) -> bool) -> Vec<String> {
    entries.iter().filter(|e| keep(e)).map(|e| e.line.clone()).collect()
}

fn inode(path: &str) -> u64 {
    std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0)
}

/// Network namespaces any thread of any process is in right now.
fn namespaces_in_use() -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let tasks = p.path().join("task");
        for t in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            if let Ok(m) = std::fs::metadata(t.path().join("ns/net")) {
                out.insert(m.ino());
            }
        }
    }
    out
}

fn names_in_run_netns() -> BTreeSet<String> {
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("ctg-"))
        .collect()
}

/// Scratch namespaces that ended: one per check, none the process's or the host's, no thread
/// anywhere is in one, and nothing named them.
fn scratch_is_gone(scratch: &[u64], names_before: &BTreeSet<String>) -> Result<(), String> {
    equal("scratch namespaces made", scratch.len(), 2)?;
    let in_use = namespaces_in_use();
    for &ns in scratch {
        for (what, ino) in [("process", inode("/proc/self/ns/net")), ("init", 0xEFFF_FFF9)] {
            if ns == ino {
                return Err(format!("a scratch namespace is the {what}'s ({ino})"));
            }
        }
        if in_use.contains(&ns) {
            return Err(format!("a thread is still in scratch namespace {ns}"));
        }
    }
    equal("names in /run/netns (other than ctg-*)", &names_in_run_netns(), names_before)
}

/// `evict -s IP --yes`: the proven flush, no dump; exactly the IP's original-direction flows go
/// (its flows in every zone and with every mark), every other flow stays.
#[test]
fn flushproof_evict_src_yes_flushes_exactly_the_source() {
    let ns = Netns::new();
    seed(&ns);
    let runaway = ip(RUNAWAY_V4);
    let mut c = Checks::new();
    c.run("evict -s 172.16.3.5 --yes: kernel-flush after its scratch proof", || {
        let before = oracle::parse_all(&ns.conntrack_list(&[]));
        let gone = before.iter().filter(|e| e.orig.src == runaway).count() as u64;
        let to_it = before.iter().filter(|e| e.orig.dst == runaway).count();
        if gone == 0 || to_it == 0 || gone as usize == before.len() {
            return Err(format!("the seed tests nothing: {gone} from, {to_it} to the address"));
        }
        let (r, json) = evict_json(&ns, &["-s", RUNAWAY_V4])?;
        equal("exit code", r.code, Some(0)).map_err(|e| format!("{e}; {}", r.describe()))?;
        oracle::same_lines(&ns.conntrack_list(&[]), &lines_of(&before, |e| e.orig.src != runaway))
            .map_err(|e| format!("the table is not the original minus the source: {e}"))?;
        equal("method", json["method"].as_str(), Some("kernel-flush"))?;
        for field in ["matched", "selected", "deleted"] {
            equal(field, json[field].as_u64(), Some(gone)).map_err(|e| format!("{e}: {json}"))?;
        }
        let p = &json["proof"];
        let (flows, selected) = (p["scratch_flows"].as_u64(), p["selected"].as_u64());
        equal("proof: dump returned = selected", p["dump_returned"].as_u64(), selected)?;
        equal("proof: flushed = selected", p["flushed"].as_u64(), selected)?;
        equal(
            "proof: kept + selected = scratch flows",
            p["kept"].as_u64().zip(selected).map(|(k, s)| k + s),
            flows,
        )?;
        if selected < Some(2) || p["kept"].as_u64() < Some(5) {
            return Err(format!("a proof with too small a table: {p}"));
        }
        if r.stderr.contains("not proven") {
            return Err(format!("the proof was refused: {}", r.stderr));
        }
        Ok(())
    });
    let ns = Netns::new();
    seed(&ns);
    c.run("-s 172.16.3.5 --mark 1 --zone 1: the proven flush with mark and zone", || {
        let before = oracle::parse_all(&ns.conntrack_list(&[]));
        let selected = |e: &Entry| e.orig.src == runaway && e.mark == 1 && e.zone == 1;
        let n = before.iter().filter(|e| selected(e)).count() as u64;
        let (r, json) = evict_json(&ns, &["-s", RUNAWAY_V4, "--mark", "1", "--zone", "1"])?;
        equal("exit code", r.code, Some(0)).map_err(|e| format!("{e}; {}", r.describe()))?;
        oracle::same_lines(&ns.conntrack_list(&[]), &lines_of(&before, |e| !selected(e)))?;
        equal("method", json["method"].as_str(), Some("kernel-flush"))?;
        equal("deleted", json["deleted"].as_u64(), Some(n))
    });
    c.finish();
}

/// Selections the kernel filter cannot express exactly never take the flush (no proof either).
#[test]
fn flushproof_ipv6_cidr_and_state_selections_take_per_flow_deletes() {
    let ns = Netns::new();
    seed(&ns);
    let runaway6 = ip(RUNAWAY_V6);
    let net: ipnetwork::IpNetwork = "172.16.3.0/24".parse().expect("cidr");
    let runaway = ip(RUNAWAY_V4);
    let mut c = Checks::new();
    type Case = (&'static [&'static str], Box<dyn Fn(&Entry) -> bool>);
    let cases: Vec<Case> = vec![
        (&["-s", RUNAWAY_V6], Box::new(move |e: &Entry| e.orig.src == runaway6)),
        (
            &["-s", "172.16.3.0/24", "--mark", "2"],
            Box::new(move |e: &Entry| net.contains(e.orig.src) && e.mark == 2),
        ),
        (
            &["-s", RUNAWAY_V4, "--state", "ESTABLISHED"],
            Box::new(move |e: &Entry| {
                e.orig.src == runaway && e.state.as_deref() == Some("ESTABLISHED")
            }),
        ),
    ];
    for (args, selected) in &cases {
        c.run(&format!("evict {}: per-flow, exactly", args.join(" ")), || {
            let before = oracle::parse_all(&ns.conntrack_list(&[]));
            let n = before.iter().filter(|e| selected(e)).count() as u64;
            if n == 0 {
                return Err("the case selects nothing: it tests nothing".into());
            }
            let (r, json) = evict_json(&ns, args)?;
            equal("exit code", r.code, Some(0)).map_err(|e| format!("{e}; {}", r.describe()))?;
            oracle::same_lines(&ns.conntrack_list(&[]), &lines_of(&before, |e| !selected(e)))?;
            equal("method", json["method"].as_str(), Some("per-flow"))?;
            equal("deleted", json["deleted"].as_u64(), Some(n))?;
            equal("proof", json.get("proof"), None)
        });
    }
    c.finish();
}

/// A flush request the kernel would misread (no `CTA_FILTER`: version 0, so every entry of
/// every family goes; or its filter attributes renamed to types the kernel ignores) is refused
/// by the proof. The scratch namespace takes the damage, the test namespace's table stays as it
/// was; the true request is then proven and flushes exactly the selection. No scratch
/// namespace outlives its proof, and none gets a name.
#[test]
fn flushproof_refuses_a_request_the_kernel_misreads() {
    let ns = Netns::new();
    seed(&ns);
    let runaway = ip(RUNAWAY_V4);
    let sel = Selector {
        src: vec![select::parse_cidr(RUNAWAY_V4).expect("cidr")],
        ..Selector::default()
    };
    let filter = evict::flush_filter(&sel, ctguard::kernel::release(), false)
        .expect("this kernel (6.18) and a single IPv4 host allow the flush");
    let good = FlushRequest::new(&filter).expect("a CTA_FILTER request");
    let hdr_len = 16 + 4;
    // No attributes at all: a version-0 flush of everything.
    let mut bare = good.bytes()[..hdr_len].to_vec();
    bare[..4].copy_from_slice(&(hdr_len as u32).to_ne_bytes());
    // Every top-level attribute renamed to a type past CTA_MAX: ignored, so again everything.
    let mut renamed = good.bytes().to_vec();
    let mut at = hdr_len;
    while at + 4 <= renamed.len() {
        let len = u16::from_ne_bytes([renamed[at], renamed[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([renamed[at + 2], renamed[at + 3]]);
        renamed[at + 2..at + 4].copy_from_slice(&((kind & 0x8000) | 200).to_ne_bytes());
        at += (len + 3) & !3;
    }
    let cases = [
        // The dump derived from the misread bytes already returns unselected flows.
        ("no attributes", FlushRequest::from_raw(bare.clone(), None), "dump check"),
        ("ignored attributes", FlushRequest::from_raw(renamed, None), "dump check"),
        // A kernel whose dump honours the filter but whose flush ignores it (pre-6.12): only
        // the scratch flush shows it, by deleting flows it must keep.
        (
            "a flush that ignores what the dump honours",
            FlushRequest::from_raw(bare, Some(good.dump_bytes().to_vec())),
            "deleted the unselected",
        ),
    ];
    let names_before = names_in_run_netns();
    let mut c = Checks::new();
    ns.inside(|| {
        let mut ct = Conntrack::open().expect("open ctnetlink");
        let before = oracle::parse_all(&ns.conntrack_list(&[]));
        let all: Vec<String> = lines_of(&before, |_| true);
        for (name, req, says) in &cases {
            c.run(&format!("{name}: refused, the real table untouched"), || {
                match evict::proven_flush_with(&mut ct, &sel, &filter, req, &AtomicBool::new(false))
                {
                    Ok(ProvenFlush::Refused(r)) => {
                        if !r.why.contains(says) {
                            return Err(format!("refused for another reason: {}", r.why));
                        }
                        oracle::same_lines(&ns.conntrack_list(&[]), &all)?;
                        scratch_is_gone(&r.scratch_netns, &names_before)
                    }
                    Ok(other) => Err(format!("not refused: {other:?}")),
                    Err(e) => Err(format!("error instead of a refusal: {e}")),
                }
            });
        }
        c.run("the true request: proven, then exactly the selection flushed", || {
            let want = lines_of(&before, |e| e.orig.src != runaway);
            match evict::proven_flush_with(&mut ct, &sel, &filter, &good, &AtomicBool::new(false)) {
                Ok(ProvenFlush::Flushed { proof, removed }) => {
                    equal("removed", removed, (all.len() - want.len()) as u64)?;
                    oracle::same_lines(&ns.conntrack_list(&[]), &want)?;
                    let here = inode("/proc/thread-self/ns/net");
                    if proof.scratch_netns.contains(&here) {
                        return Err("the proof ran in the test namespace".into());
                    }
                    scratch_is_gone(&proof.scratch_netns, &names_before)
                }
                other => Err(format!("not flushed: {other:?}")),
            }
        });
    });
    c.finish();
}

/// Issue 10 (an attacker's find): without CAP_NET_ADMIN the scratch proof's own requests are
/// refused with EPERM. That is the run's error, one line naming CAP_NET_ADMIN, exit 2: not a
/// note that the flush "was not proven" before the same error from the per-flow path.
#[test]
fn issue_10_attack_eperm_in_the_proof_is_the_error() {
    let ns = Netns::new();
    seed(&ns);
    let before = ns.conntrack_list(&[]);
    let cmd = format!("{} evict -s {RUNAWAY_V4} --yes --no-audit", crate::netns::CTGUARD);
    let r = ns.exec("timeout", &["20", "capsh", "--drop=cap_net_admin", "--", "-c", &cmd]);
    let mut c = Checks::new();
    c.run("exit 2, one stderr line naming CAP_NET_ADMIN, no note", || {
        equal("exit code", r.code, Some(2)).map_err(|e| format!("{e}; {}", r.describe()))?;
        let lines = r.stderr_lines();
        equal("stderr lines", lines.len(), 1).map_err(|e| format!("{e}: {:?}", r.stderr))?;
        if !lines[0].starts_with("ctguard: ") || !lines[0].contains("CAP_NET_ADMIN") {
            return Err(format!("the line does not name CAP_NET_ADMIN: {:?}", r.stderr));
        }
        equal("stdout", r.stdout.as_str(), "")
    });
    c.run("the table is as it was", || oracle::same_lines(&ns.conntrack_list(&[]), &before));
    c.finish();
}
