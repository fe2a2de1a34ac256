//! Issues 9.6, 9.7, 9.8 and 9.12: what ctguard reads is bounded, guest files load in linear
//! time and say who owns what unambiguously, and `load` reads any readable path. Everything
//! here is refused before a socket opens, so it runs without privileges.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ctguard::flow::{Flow, L4, Tuple};
use ctguard::guests::GuestMap;
use ctguard::output::report::TallyReport;
use ctguard::tally::{GroupBy, Tally};

use crate::cli::TempFile;

/// Virtual memory a bad-input run may use, in KiB (`ulimit -v`): before the bounds, reading
/// `/dev/zero` grew without end and died on this limit instead of exiting 2.
const MEMORY_KIB: u64 = 1 << 20;

/// Runs `sh -c script` with `$CTGUARD` set and the memory limit; checks the bad-input
/// contract (exit 2, one `ctguard: ` line, empty stdout) within `within`, and returns the line.
fn refused_sh(script: &str, env: &[(&str, &str)], within: Duration) -> String {
    let started = Instant::now();
    let out: Output = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {MEMORY_KIB}; {script}"))
        .env("CTGUARD", env!("CARGO_BIN_EXE_ctguard"))
        .env_remove("CTGUARD_GUESTS")
        .envs(env.iter().copied())
        .output()
        .expect("run sh");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{script}: exit status ({:?}); stderr: {stderr}",
        out.status
    );
    assert!(out.stdout.is_empty(), "{script}: stdout: {}", String::from_utf8_lossy(&out.stdout));
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{script}: one line on stderr, got {stderr:?}");
    assert!(lines[0].starts_with("ctguard: "), "{script}: {}", lines[0]);
    assert!(took < within, "{script}: took {took:?}");
    lines[0].to_string()
}

#[test]
fn issue_9_6_guest_file_from_dev_zero_is_refused_in_bounded_memory() {
    let limit = Duration::from_secs(10);
    let line = refused_sh(r#"exec "$CTGUARD" top --guests /dev/zero"#, &[], limit);
    assert_eq!(line, "ctguard: /dev/zero: larger than 32 MiB: not a guest file");
    // Every command that reads a guest file reads it through the environment too.
    for cmd in ["top", "count", "list", "doctor", "evict --dry-run -s 10.0.0.1", "watch"] {
        let line = refused_sh(
            &format!(r#"exec "$CTGUARD" {cmd}"#),
            &[("CTGUARD_GUESTS", "/dev/zero")],
            limit,
        );
        assert!(line.contains("/dev/zero: larger than 32 MiB"), "{cmd}: {line}");
    }
}

#[test]
fn issue_9_6_load_from_dev_zero_is_refused_in_bounded_memory() {
    let line = refused_sh(r#"exec "$CTGUARD" load - </dev/zero"#, &[], Duration::from_secs(10));
    assert_eq!(
        line,
        "ctguard: -: line 1: longer than 64 KiB: not a JSON Lines flow file; nothing was created"
    );
    // A long line after good ones is named by its number; nothing is created either.
    let line = refused_sh(
        r#"{ echo; echo; head -c 70000 /dev/zero | tr '\0' ' '; echo x; } | exec "$CTGUARD" load -"#,
        &[],
        Duration::from_secs(10),
    );
    assert!(line.contains("-: line 3: longer than 64 KiB"), "{line}");
}

/// 100,000 guests with two CIDRs each: the file is parsed and indexed in linear time. The
/// bound is generous for a debug build on a busy machine; the release build takes ~0.1 s.
#[test]
fn issue_9_7_a_100k_guest_file_loads_in_linear_time() {
    let mut text = String::new();
    for i in 0..100_000u32 {
        text.push_str(&format!(
            "vm{i:06} = [\"10.{}.{}.{}/32\", \"fd00::{:x}:{:x}/128\"]\n",
            i >> 16,
            (i >> 8) & 255,
            i & 255,
            i >> 16,
            i & 0xffff
        ));
    }
    let started = Instant::now();
    let map = GuestMap::parse(&text, "g.toml").expect("the generated file is valid");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "100k guests took {took:?}");
    let last = map.find("vm099999").expect("the last guest");
    assert_eq!(map.lookup("10.1.134.159".parse().unwrap()), Some(last));
    assert_eq!(map.lookup("fd00::1:869f".parse().unwrap()), Some(last));
    // An error in the last line is still named by its line.
    text.push_str("bad = \"10.0.0.300\"\n");
    let e = GuestMap::parse(&text, "g.toml").unwrap_err().to_string();
    assert!(e.starts_with("g.toml:100001: guest 'bad'"), "{e}");
}

#[test]
fn issue_9_8_guest_names_cannot_shadow_addresses_or_share_a_network() {
    let short = Duration::from_secs(10);
    let shadow = TempFile::new("shadow.toml", "\"10.1.0.5\" = \"10.1.0.1\"\n");
    let line = refused_sh(
        &format!(r#"exec "$CTGUARD" count --guests {} --guest 10.1.0.5"#, shadow.path()),
        &[],
        short,
    );
    assert!(line.contains(":1: guest name '10.1.0.5' is an address"), "{line}");
    let twice = TempFile::new("twice.toml", "web01 = \"10.1.0.0/24\"\ndb01 = \"10.1.0.0/24\"\n");
    let line = refused_sh(
        &format!(r#"exec "$CTGUARD" count --guests {} --guest web01"#, twice.path()),
        &[],
        short,
    );
    assert!(
        line.ends_with(":2: guests 'web01' (line 1) and 'db01' both claim 10.1.0.0/24: give each network one owner"),
        "{line}"
    );
}

#[test]
fn issue_9_8_guest_names_are_escaped_in_text_tables_and_raw_in_json() {
    let map = GuestMap::parse("\"web\\u001b[2J\\nfake 99\" = \"172.16.3.0/24\"\n", "g").unwrap();
    let orig = Tuple {
        src: "172.16.3.5".parse().unwrap(),
        dst: "10.0.0.1".parse().unwrap(),
        l4: L4::Ports { src: 1, dst: 2 },
        zone: None,
    };
    let flow = Flow { orig, reply: orig.inverse(), ..Flow::default() };
    let mut tally = Tally::new(GroupBy::Guest, map);
    tally.add(&flow);
    let report = TallyReport::new(&tally, None, None);
    let mut text = Vec::new();
    report.write_text(&mut text, false).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(!text.contains('\x1b'), "raw ESC in {text:?}");
    assert!(text.contains("web\\u{1b}[2J\\nfake 99"), "{text}");
    assert_eq!(text.lines().count(), 3, "header, one row, summary: {text}");
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains(r#""key":"web\u001b[2J\nfake 99""#), "{json}");
}

#[test]
fn issue_9_12_load_reads_fifos_and_process_substitutions() {
    let short = Duration::from_secs(10);
    // A bad line through `<(...)`: it is read (and refused by its line), not "no such file".
    if Command::new("bash").arg("--version").output().is_ok() {
        let line = refused_sh(
            r#"exec bash -c 'exec "$CTGUARD" load <(printf "\n{\"family\":1}\n")'"#,
            &[],
            short,
        );
        assert!(line.contains("/dev/fd/") && line.contains(": line 2: "), "{line}");
    }
    let dir = std::env::temp_dir().join(format!("ctguard-inputs-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("flows.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let line = refused_sh(
        &format!(r#"printf 'not json\n' > {0} & exec "$CTGUARD" load {0}"#, fifo.display()),
        &[],
        short,
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(line.contains("flows.fifo: line 1: "), "{line}");
}

/// Issue 12.5: a mixed-family selection is refused with conntrack's words by every command
/// that selects, before a socket opens (it used to match nothing, exit 1).
#[test]
fn issue_12_mixed_families_are_refused_by_every_selecting_command() {
    for cmd in ["list", "count", "top", "evict --yes", "evict --dry-run", "events", "watch"] {
        for flags in ["-s 2.2.2.2 -d ::1", "-f ipv4 -s ::1", "-s 10.0.0.0/8 --reply-dst fd00::1"] {
            let line = refused_sh(
                &format!(r#"exec "$CTGUARD" {cmd} {flags}"#),
                &[],
                Duration::from_secs(10),
            );
            assert!(
                line.starts_with("ctguard: mismatched address family"),
                "{cmd} {flags}: {line}"
            );
        }
    }
    let line = crate::cli::refused(&[
        "create", "-p", "udp", "-s", "10.0.0.1", "-d", "::1", "--sport", "1", "--dport", "2", "-t",
        "10",
    ]);
    assert!(line.starts_with("ctguard: mismatched address family"), "{line}");
}

/// Issue 12.5: `--mask-src`/`--mask-dst` need their one address, without a prefix, of the
/// mask's family, and contiguous ones.
#[test]
fn issue_12_masks_refused_before_anything_is_touched() {
    for (args, needle) in [
        (&["list", "--mask-src", "255.0.0.0"][..], "--mask-src needs -s"),
        (&["list", "-s", "10.0.0.0/8", "--mask-src", "255.0.0.0"], "has a prefix already"),
        (&["list", "-s", "10.0.0.0", "--mask-src", "255.0.255.0"], "invalid mask '255.0.255.0'"),
        (&["list", "-d", "10.0.0.0", "--mask-dst", "ffff::"], "mismatched address family"),
        (&["list", "-s", "10.0.0.1", "-s", "10.0.0.2", "--mask-src", "255.0.0.0"], "exactly one"),
        (&["list", "-u", "UNSET"], "names no bit"),
    ] {
        let line = crate::cli::refused(args);
        assert!(line.contains(needle), "{args:?}: {line}");
    }
}

/// Issue 12.3: an entry has one zone; `create` refuses two zone flags, as the kernel does
/// (EINVAL), before a socket opens.
#[test]
fn issue_12_create_takes_one_zone() {
    let create = |zones: &[&'static str]| -> Vec<&'static str> {
        let mut v = vec!["create", "-p", "udp", "-s", "10.0.0.1", "-d", "10.0.0.2"];
        v.extend(["--sport", "1", "--dport", "2", "-t", "10"]);
        v.extend(zones);
        v
    };
    for zones in [
        &["--orig-zone", "3", "--reply-zone", "4"][..],
        &["--orig-zone", "3", "--reply-zone", "3"],
        &["-w", "3", "--orig-zone", "3"],
    ] {
        let line = crate::cli::refused(&create(zones));
        assert!(line.contains("an entry has one zone"), "{zones:?}: {line}");
    }
}

/// Issue 12.5: a batch file is parsed whole before anything is touched; a bad line is named
/// by its number; `-F` is refused, and each command takes its own kind of line (`-U` lines
/// are `update --batch`'s).
#[test]
fn issue_12_batch_lines_refused_with_their_number() {
    let good = "# saved by conntrack -L -o save\n\n\
                -A -t 99 -u UNSET -s 10.0.0.1 -d 10.0.0.2 -r 10.0.0.2 -q 10.0.0.1 -p tcp --sport 1 --dport 2 --reply-port-src 2 --reply-port-dst 1 --state ESTABLISHED\n\
                -I -s 10.0.0.3 -d 10.0.0.4 -p igmp -t 30 --orig-zone 3\n";
    let deletes = "-D -s 10.0.0.1 -p tcp --state LISTEN\n-D --orig-zone 3\n";
    for (cmd, text, needle) in [
        (
            "load --batch",
            format!("{good}-I -s 10.0.0.5 -d 10.0.0.6 -p tcp -t 9\n"),
            ":5: tcp needs --sport",
        ),
        (
            "load --batch",
            format!("{good}-I -s 1.1.1.1 -d ::1 -p udp --sport 1 --dport 2 -t 9\n"),
            ":5: mismatched address family",
        ),
        (
            "load --batch",
            format!("{good}-U -s 10.0.0.1 -m 1\n"),
            ":5: -U lines update: run ctguard update --batch",
        ),
        ("load --batch", format!("{good}-F\n"), ":5: -F (flush) is refused"),
        ("load --batch", format!("{good}-L\n"), ":5: '-L' is not a batch command"),
        (
            "load --batch",
            format!("{good}{deletes}"),
            ":5: -D lines delete: run ctguard evict --batch",
        ),
        ("evict --yes --batch", format!("{deletes}{good}"), ":5: -I/-A lines create"),
        ("update --yes --batch", deletes.to_string(), ":1: -D lines delete: run ctguard evict"),
        ("update --yes --batch", "-U -s 10.0.0.1\n".to_string(), ":1: -U sets nothing"),
        ("evict --yes --batch", format!("{deletes}-D\n"), ":3: -D without a selection"),
        (
            "evict --yes --batch",
            format!("{deletes}-D -s 10.0.0.1 -d ::1\n"),
            ":3: mismatched address family",
        ),
        (
            "evict --yes --batch",
            format!("{deletes}-D --state BOGUS\n"),
            ":3: unknown state 'BOGUS'",
        ),
        (
            "evict --yes --batch",
            format!("{deletes}-D --bogus\n"),
            ":3: unexpected argument '--bogus'",
        ),
    ] {
        let file = TempFile::new("batch.txt", &text);
        let line = refused_sh(
            &format!(r#"exec "$CTGUARD" {cmd} {}"#, file.path()),
            &[],
            Duration::from_secs(10),
        );
        assert!(line.contains(needle), "{cmd}: {line}");
        assert!(line.ends_with("nothing was touched"), "{cmd}: {line}");
    }
    let file = TempFile::new("batch.txt", deletes);
    let line = refused_sh(
        &format!(r#"exec "$CTGUARD" evict --yes --batch {} -s 10.0.0.1"#, file.path()),
        &[],
        Duration::from_secs(10),
    );
    assert!(line.contains("each batch line is its own selection"), "{line}");
}

/// A batch's guest file comes from the command line (`$CTGUARD_GUESTS` too) and is no
/// selection of its own; a line naming a guest of it is parsed against it; a bad line's
/// reason shows a few of its words, never a whole 100 KB word.
#[test]
fn issue_12_batch_guests_from_the_command_line_and_short_reasons() {
    let guests = TempFile::new("guests.toml", "web01 = [\"10.0.0.5/32\"]\n");
    let batch = TempFile::new("batch.txt", "-D --guest web01\n-D --guest nosuch\n");
    let env = [("CTGUARD_GUESTS", guests.path())];
    let line = refused_sh(
        &format!(r#"exec "$CTGUARD" evict --yes --batch {}"#, batch.path()),
        &env,
        Duration::from_secs(10),
    );
    assert!(line.contains("batch.txt:2: --guest 'nosuch'"), "line 1 parsed, line 2 named: {line}");
    let line = refused_sh(
        &format!(
            r#"exec "$CTGUARD" evict --yes --guests {} --batch {}"#,
            guests.path(),
            batch.path()
        ),
        &[],
        Duration::from_secs(10),
    );
    assert!(line.contains("batch.txt:2: --guest 'nosuch'"), "{line}");
    let big = TempFile::new("big.txt", &format!("-I -s 10.0.0.1 {}\n", "x".repeat(100_000)));
    let line = refused_sh(
        &format!(r#"exec "$CTGUARD" load --batch {}"#, big.path()),
        &[],
        Duration::from_secs(10),
    );
    assert!(line.len() < 400 && line.contains("big.txt:1:"), "{} bytes: {line:.200}", line.len());
}
