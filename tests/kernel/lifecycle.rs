//! Issues 9 and 10: evict's lifecycle around the engine: signals, exit status with a closed
//! stdout, the `--save` file's safety, and the audit trail (intent and outcome records).
//! Every process here is spawned by the test, signalled by its pid, and waited for with a
//! deadline.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::checks::{Checks, equal};
use crate::netns::{CTGUARD, Netns};

const SRC: &str = "10.9.0.1";

/// The test namespace's table, emptied, then `n` ESTABLISHED TCP flows from [`SRC`], all
/// different tuples (`conntrack -R`).
fn seed(ns: &Netns, n: usize) {
    ns.conntrack(&["-F"]).ok();
    let lines: String = (0..n)
        .map(|i| {
            format!(
                "-I -p tcp -s {SRC} -d 10.8.{}.2 --sport {} --dport 443 --state ESTABLISHED \
                 -t 3600 -u ASSURED\n",
                i / 600,
                10_000 + i % 600
            )
        })
        .collect();
    let path = ns.write_file("seed.conntrack", &lines);
    ns.conntrack(&["-R", &path]).ok();
    assert_eq!(ns.conntrack_count(), n as u64, "seeding {n} flows");
}

/// `ctguard --netns NS ARGS`, stdin closed, stderr piped, stdout as given.
fn spawn(ns: &Netns, args: &[&str], stdout: Stdio, env: &[(&str, Option<&str>)]) -> Child {
    let mut cmd = Command::new(CTGUARD);
    cmd.args(["--netns", &ns.path()]).args(args);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(Stdio::piped()).spawn().expect("spawn ctguard")
}

/// `evict --yes -s SRC EXTRA --audit-log AUDIT`: the run every test here starts from.
fn evict_argv<'a>(audit: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut argv = vec!["evict", "--yes", "-s", SRC];
    argv.extend_from_slice(extra);
    argv.extend(["--audit-log", audit]);
    argv
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill with the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

/// Waits at most `secs` for the child; kills it (by its pid) if it does not end.
fn wait(mut child: Child, secs: u64) -> Result<Output, String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("ctguard did not end within {secs} s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().map_err(|e| e.to_string())
}

/// Polls `cond` every millisecond for at most `secs`.
fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

fn records(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("audit line {l:?}: {e}")))
        .collect()
}

/// The intent and outcome records of one run, in that order, with one run id.
fn intent_and_outcome(path: &Path) -> Result<(Value, Value), String> {
    let r = records(path)?;
    let [intent, outcome] = r.as_slice() else {
        return Err(format!("want 2 audit records, got {}: {r:?}", r.len()));
    };
    equal("first record", intent["record"].as_str(), Some("intent"))?;
    equal("second record", outcome["record"].as_str(), Some("outcome"))?;
    if intent["run_id"].as_str().is_none_or(str::is_empty) || intent["run_id"] != outcome["run_id"]
    {
        return Err(format!("run ids differ: {intent} / {outcome}"));
    }
    Ok((intent.clone(), outcome.clone()))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn issue_10_4_a_closed_stdout_never_turns_an_interrupted_evict_into_success() {
    let ns = Netns::new();
    seed(&ns, 600);
    let audit = ns.file("audit.jsonl").to_string_lossy().into_owned();
    let mut child = spawn(&ns, &evict_argv(&audit, &["--rate", "100/s"]), Stdio::piped(), &[]);
    // `| true`: the reader is gone before anything is written.
    drop(child.stdout.take());
    std::thread::sleep(Duration::from_millis(800));
    signal(&child, libc::SIGINT);
    let out = wait(child, 20).unwrap_or_else(|e| panic!("{e}"));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("interrupted by SIGINT") && err.contains("not attempted"), "{err}");
    assert!(err.contains("of 600 selected flows in"), "the summary is not on stderr: {err}");
    let (_, outcome) = intent_and_outcome(Path::new(&audit)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outcome["interrupted"], true, "{outcome}");
}

#[test]
fn issue_10_5_sigterm_and_sighup_stop_with_report_audit_and_exit_2() {
    let ns = Netns::new();
    let mut c = Checks::new();
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGHUP, "SIGHUP")] {
        c.run(&format!("{name} mid-evict"), || {
            seed(&ns, 600);
            let audit = ns.file(&format!("audit-{name}.jsonl"));
            let audit_s = audit.to_string_lossy().into_owned();
            let child = spawn(
                &ns,
                &evict_argv(&audit_s, &["--json", "--rate", "100/s"]),
                Stdio::piped(),
                &[],
            );
            std::thread::sleep(Duration::from_millis(800));
            signal(&child, sig);
            let out = wait(child, 20)?;
            let err = stderr(&out);
            equal("exit code", out.status.code(), Some(2)).map_err(|e| format!("{e}: {err}"))?;
            if !err.contains(&format!("interrupted by {name}")) {
                return Err(format!("stderr does not name {name}: {err}"));
            }
            let report: Value = serde_json::from_slice(&out.stdout)
                .map_err(|e| format!("no report on stdout ({e}): {err}"))?;
            equal("interrupted", report["interrupted"].as_bool(), Some(true))?;
            let deleted = report["deleted"].as_u64().unwrap_or(0);
            let not_attempted = report["not_attempted"].as_u64().unwrap_or(0);
            equal("deleted + not attempted", deleted + not_attempted, 600)?;
            if deleted == 0 || not_attempted == 0 {
                return Err(format!("stopped at a strange point: {report}"));
            }
            let (_, outcome) = intent_and_outcome(&audit)?;
            equal("audit signal", outcome["signal"].as_str(), Some(name))?;
            equal("audit deleted", outcome["deleted"].as_u64(), Some(deleted))?;
            equal("flows left", ns.conntrack_count(), not_attempted)
        });
    }
    c.finish();
}

#[test]
fn issue_10_9_ctrl_c_during_the_save_dump_cleans_up_and_exits_2() {
    let ns = Netns::new();
    // Big enough that the selection dump with --save runs long after its temporary appears.
    let n = 60_000;
    seed(&ns, n);
    let dir = ns.file("save");
    std::fs::create_dir(&dir).expect("save dir");
    let saved = dir.join("saved.jsonl");
    let audit = ns.file("audit.jsonl");
    let child = spawn(
        &ns,
        &evict_argv(
            &audit.to_string_lossy(),
            &["--rate", "1/s", "--save", &saved.to_string_lossy()],
        ),
        Stdio::piped(),
        &[],
    );
    // The temporary is created after the handlers are installed, as the dump starts.
    let started = wait_for(20, || std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()));
    signal(&child, libc::SIGINT);
    let out = wait(child, 30).unwrap_or_else(|e| panic!("{e}"));
    assert!(started, "no temporary save file appeared");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    let want = format!(
        "interrupted by SIGINT during the selection; nothing was deleted; {} was not written",
        saved.display()
    );
    assert!(err.contains(&want), "want {want:?} in {err:?}");
    let left: Vec<_> = std::fs::read_dir(&dir).expect("read save dir").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(ns.conntrack_count(), n as u64, "flows were deleted");
    assert!(records(&audit).map_or(true, |r| r.is_empty()), "an intent was written");
}

#[test]
fn issue_10_10_sigkill_mid_evict_leaves_the_intent_record() {
    let ns = Netns::new();
    seed(&ns, 600);
    let saved = ns.file("saved.jsonl");
    let audit = ns.file("audit.jsonl");
    let child = spawn(
        &ns,
        &evict_argv(
            &audit.to_string_lossy(),
            &["--rate", "50/s", "--save", &saved.to_string_lossy()],
        ),
        Stdio::null(),
        &[],
    );
    let intent_seen = wait_for(20, || records(&audit).is_ok_and(|r| !r.is_empty()));
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGKILL);
    let out = wait(child, 20).unwrap_or_else(|e| panic!("{e}"));
    assert!(intent_seen, "no intent record before the deletes: {}", stderr(&out));
    assert_eq!(out.status.code(), None, "not killed: {}", stderr(&out));
    let r = records(&audit).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.len(), 1, "{r:?}");
    let intent = &r[0];
    assert_eq!(intent["record"], "intent", "{intent}");
    assert_eq!(intent["selector"], format!("-s {SRC}"), "{intent}");
    assert_eq!(intent["saved"], saved.to_string_lossy().as_ref(), "{intent}");
    assert_eq!(intent["itemised"], true, "{intent}");
    assert_eq!(intent["selected"], 600, "{intent}");
    assert_eq!(intent["namespace"], ns.path(), "{intent}");
    assert!(intent["run_id"].as_str().is_some_and(|s| !s.is_empty()), "{intent}");
    let lines = std::fs::read_to_string(&saved).expect("the save file").lines().count();
    assert_eq!(lines, 600, "the save file holds every selected flow");
    let left = ns.conntrack_count();
    assert!(left > 0 && left < 600, "the kill did not land mid-evict: {left} left");
}

#[test]
fn issue_10_11_the_audit_names_the_real_uid_and_only_claims_the_environment() {
    let ns = Netns::new();
    let login = std::fs::read_to_string("/proc/self/loginuid").expect("loginuid");
    let login: u32 = login.trim().parse().expect("loginuid number");
    let want_login = if login == u32::MAX { Value::Null } else { Value::from(login) };
    let mut c = Checks::new();
    for (env, claimed) in [
        (vec![("USER", Some("alice")), ("SUDO_USER", Some("mallory"))], Value::from("mallory")),
        (vec![("USER", None), ("SUDO_USER", None)], Value::Null),
    ] {
        c.run(&format!("environment {env:?}"), || {
            seed(&ns, 5);
            let audit = ns.file("audit.jsonl");
            let _ = std::fs::remove_file(&audit);
            let child = spawn(
                &ns,
                &evict_argv(&audit.to_string_lossy(), &["-p", "tcp"]),
                Stdio::null(),
                &env,
            );
            let out = wait(child, 20)?;
            equal("exit code", out.status.code(), Some(0)).map_err(|e| format!("{e}: {out:?}"))?;
            let (intent, outcome) = intent_and_outcome(&audit)?;
            for rec in [&intent, &outcome] {
                equal("uid", rec["uid"].as_u64(), Some(0))?;
                equal("user", rec["user"].as_str(), Some("root"))?;
                equal("claimed_user", &rec["claimed_user"], &claimed)?;
                equal("login_uid", &rec["login_uid"], &want_login)?;
            }
            Ok(())
        });
    }
    c.finish();
}

#[test]
fn issue_10_12_a_kernel_flush_says_whether_it_was_itemised() {
    let ns = Netns::new();
    let mut c = Checks::new();
    c.run("proven flush, no --save: not itemised", || {
        seed(&ns, 50);
        let audit = ns.file("audit-flush.jsonl");
        let a = audit.to_string_lossy().into_owned();
        let r = ns.ctguard(&evict_argv(&a, &["--json"]));
        let json: Value = serde_json::from_str(r.stdout.trim())
            .map_err(|e| format!("no report ({e}): {}", r.describe()))?;
        equal("exit code", r.code, Some(0)).map_err(|e| format!("{e}; {}", r.describe()))?;
        equal("method", json["method"].as_str(), Some("kernel-flush"))?;
        let (intent, outcome) = intent_and_outcome(&audit)?;
        for rec in [&intent, &outcome] {
            equal("itemised", rec["itemised"].as_bool(), Some(false))?;
            equal("saved", &rec["saved"], &Value::Null)?;
        }
        equal("intent selected (no dump: unknown)", &intent["selected"], &Value::Null)?;
        equal("outcome method", outcome["method"].as_str(), Some("kernel-flush"))?;
        equal("outcome deleted", outcome["deleted"].as_u64(), Some(50))
    });
    // With --save the flows are saved first and then deleted one by one, each re-checked
    // (issue 10.2): no kernel flush, which could also take flows the file does not list.
    c.run("--save: per-flow deletes, itemised, the file lists what went", || {
        seed(&ns, 50);
        let audit = ns.file("audit-saved.jsonl").to_string_lossy().into_owned();
        let saved = ns.file("flushed.jsonl").to_string_lossy().into_owned();
        let r = ns.ctguard(&evict_argv(&audit, &["--json", "--save", &saved]));
        equal("exit code", r.code, Some(0)).map_err(|e| format!("{e}; {}", r.describe()))?;
        let (intent, outcome) = intent_and_outcome(Path::new(&audit))?;
        equal("outcome method", outcome["method"].as_str(), Some("per-flow"))?;
        for rec in [&intent, &outcome] {
            equal("itemised", rec["itemised"].as_bool(), Some(true))?;
            equal("saved", rec["saved"].as_str(), Some(saved.as_str()))?;
        }
        equal("intent selected", intent["selected"].as_u64(), Some(50))?;
        let lines = std::fs::read_to_string(&saved).map_err(|e| e.to_string())?.lines().count();
        equal("saved lines", lines, 50)
    });
    c.finish();
}

#[test]
fn issue_9_4_the_audit_log_is_private_and_never_followed() {
    let ns = Netns::new();
    let mut c = Checks::new();
    c.run("umask 000: new directories 0750, the log 0640", || {
        seed(&ns, 5);
        let audit = ns.file("new/sub/audit.jsonl");
        let cmd = format!(
            "umask 000; exec {CTGUARD} --netns {} evict --yes -s {SRC} -p tcp --audit-log {}",
            ns.path(),
            audit.display()
        );
        let r = crate::netns::run("sh", &["-c", &cmd]);
        equal("exit code", r.code, Some(0)).map_err(|e| format!("{e}; {}", r.describe()))?;
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o7777);
        equal("new/ mode", mode(&ns.file("new")).ok(), Some(0o750))?;
        equal("new/sub/ mode", mode(&ns.file("new/sub")).ok(), Some(0o750))?;
        equal("log mode", mode(&audit).ok(), Some(0o640))?;
        intent_and_outcome(&audit).map(|_| ())
    });
    c.run("a planted symlink: refused, exit 2, victim and flows untouched", || {
        seed(&ns, 5);
        let victim = ns.write_file("victim", "precious\n");
        let link = ns.file("linked-audit.jsonl");
        std::os::unix::fs::symlink(&victim, &link).map_err(|e| e.to_string())?;
        let link_s = link.to_string_lossy().into_owned();
        let r = ns.ctguard(&evict_argv(&link_s, &[]));
        equal("exit code", r.code, Some(2)).map_err(|e| format!("{e}; {}", r.describe()))?;
        if !r.stderr.contains("symbolic link") || !r.stderr.contains("nothing was deleted") {
            return Err(format!("unclear refusal: {}", r.stderr));
        }
        equal("victim", std::fs::read_to_string(&victim).ok().as_deref(), Some("precious\n"))?;
        equal("flows", ns.conntrack_count(), 5)?;
        // The operator may opt out explicitly; the link is still not followed.
        let r = ns.ctguard(&evict_argv(&link_s, &["--no-audit"]));
        equal("--no-audit exit", r.code, Some(0)).map_err(|e| format!("{e}; {}", r.describe()))?;
        equal("victim", std::fs::read_to_string(&victim).ok().as_deref(), Some("precious\n"))?;
        equal("flows after --no-audit", ns.conntrack_count(), 0)
    });
    c.run("a log owned by another user: refused", || {
        seed(&ns, 5);
        let other = ns.write_file("other-audit.jsonl", "");
        std::os::unix::fs::chown(&other, Some(65534), Some(65534)).map_err(|e| e.to_string())?;
        let r = ns.ctguard(&evict_argv(&other, &[]));
        equal("exit code", r.code, Some(2)).map_err(|e| format!("{e}; {}", r.describe()))?;
        if !r.stderr.contains("owned by uid 65534") {
            return Err(format!("unclear refusal: {}", r.stderr));
        }
        equal("flows", ns.conntrack_count(), 5)
    });
    c.run("an existing world-writable log is tightened to 0640", || {
        seed(&ns, 5);
        let loose = ns.write_file("loose-audit.jsonl", "");
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| e.to_string())?;
        let r = ns.ctguard(&evict_argv(&loose, &[]));
        equal("exit code", r.code, Some(0)).map_err(|e| format!("{e}; {}", r.describe()))?;
        let m = std::fs::metadata(&loose).map_err(|e| e.to_string())?;
        equal("mode", m.mode() & 0o7777, 0o640)
    });
    c.finish();
}

#[test]
fn issue_9_5_save_onto_a_dangling_symlink_is_refused() {
    let ns = Netns::new();
    seed(&ns, 5);
    let target = ns.file("link-target.jsonl");
    let link = ns.file("saved.jsonl");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let audit = ns.file("audit.jsonl").to_string_lossy().into_owned();
    let r = ns.ctguard(&evict_argv(&audit, &["--save", &link.to_string_lossy()]));
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(r.stderr.contains("exists"), "{}", r.stderr);
    assert!(!target.exists(), "the link's target was created");
    assert!(link.symlink_metadata().expect("link").file_type().is_symlink(), "link replaced");
    assert_eq!(ns.conntrack_count(), 5, "flows were touched");
}

#[test]
fn issue_10_10_an_intent_without_a_match_still_gets_its_outcome() {
    let ns = Netns::new();
    seed(&ns, 5);
    let audit = ns.file("audit.jsonl");
    // Streamed (--yes, no --save): the intent precedes the dump, which then matches nothing.
    let r = ns.ctguard(&evict_argv(&audit.to_string_lossy(), &["--dport", "9"]));
    assert_eq!(r.code, Some(1), "{}", r.describe());
    let (intent, outcome) = intent_and_outcome(&audit).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(intent["selected"], Value::Null, "{intent}");
    assert_eq!(outcome["matched"], 0, "{outcome}");
    assert_eq!(outcome["deleted"], 0, "{outcome}");
    assert_eq!(ns.conntrack_count(), 5);
}
