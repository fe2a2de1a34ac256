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
