//! Issue 15: `ctguard --netns NS watch` in a real terminal (tmux): on a seeded table the
//! runaway guest is the top row with its exact ESTABLISHED count; `e` then `y` deletes exactly
//! its ESTABLISHED flows (checked against `conntrack -L`), the screen follows within a second;
//! at 60 columns no number is cut; `q` exits 0 and leaves the alternate screen.

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::netns::{CTGUARD, Netns, run};
use crate::oracle;
use crate::seed::{self, L4, Spec};

/// A tmux session of the test's own, killed when dropped (its shell and ctguard get SIGHUP).
struct Tmux {
    name: String,
}

impl Tmux {
    fn start(cmd: &str, cols: u16, rows: u16) -> Tmux {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("ctg-tui-{}-{n}", std::process::id());
        let size = (cols.to_string(), rows.to_string());
        // The shell stays a while after ctguard, so that its exit code and screen are seen.
        let line = format!("{cmd}; echo EXIT=$?; sleep 20");
        let r =
            run("tmux", &["new-session", "-d", "-s", &name, "-x", &size.0, "-y", &size.1, &line]);
        assert_eq!(r.code, Some(0), "tmux: {}", r.describe());
        Tmux { name }
    }

    /// The session by its exact name (tmux would take a prefix of another's too).
    fn target(&self) -> String {
        format!("={}:", self.name)
    }

    fn screen(&self) -> String {
        run("tmux", &["capture-pane", "-p", "-t", &self.target()]).stdout
    }

    /// Sends one key (tmux's name for it), then lets the view take it in.
    fn key(&self, key: &str) {
        run("tmux", &["send-keys", "-t", &self.target(), key]);
        std::thread::sleep(Duration::from_millis(150));
    }

    /// Waits (at most `limit`) for a screen `want` accepts; the last screen either way.
    fn wait(&self, limit: Duration, want: impl Fn(&str) -> bool) -> Result<String, String> {
        let end = Instant::now() + limit;
        loop {
            let s = self.screen();
            if want(&s) {
                return Ok(s);
            }
            if Instant::now() > end {
                return Err(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ =
            Command::new("tmux").args(["kill-session", "-t", &format!("={}", self.name)]).output();
    }
}

fn flows(src: &str, n: usize, base: u16, state: &'static str) -> Vec<Spec> {
    (0..n)
        .map(|i| Spec {
            proto: "tcp",
            src: src.parse::<IpAddr>().expect("address"),
            dst: seed::ip("10.40.0.1"),
            l4: L4::Ports(base + i as u16, 443),
            reply: None,
            state: Some(state),
            status: &["SEEN_REPLY", "ASSURED"],
            timeout: 3000,
            mark: 0,
            zone: 0,
        })
        .collect()
}

/// The cells of the row whose first cell is `group`, by the header's column names.
fn row(screen: &str, group: &str, column: &str) -> Option<u64> {
    let lines: Vec<&str> = screen.lines().collect();
    let header = lines.iter().position(|l| l.split_whitespace().next() == Some("GROUP"))?;
    let names: Vec<&str> = lines[header].split_whitespace().collect();
    let at = names.iter().position(|n| *n == column)?;
    let cells: Vec<&str> = lines[header + 1..]
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|c| c.first() == Some(&group))?
        .into_iter()
        .collect();
    cells.get(at)?.trim_end_matches('%').parse().ok()
}

/// The screen's lines inside a modal's borders, joined by spaces: a line the modal wrapped
/// reads whole again.
fn flat(screen: &str) -> String {
    let inner = screen.lines().map(|l| l.trim().trim_matches('│').trim());
    inner.collect::<Vec<_>>().join(" ")
}

/// The first row's group.
fn top(screen: &str) -> Option<String> {
    let mut lines = screen.lines().skip_while(|l| l.split_whitespace().next() != Some("GROUP"));
    lines.next()?;
    lines.next()?.split_whitespace().next().map(str::to_string)
}

#[test]
fn issue_15_watch_on_a_terminal_finds_the_runaway_and_evicts_it_with_two_keys() {
    let ns = Netns::new();
    let guests =
        ns.write_file("guests.toml", "runaway = \"172.16.3.5\"\ncalm = \"172.16.4.0/24\"\n");
    let mut specs = flows("172.16.3.5", 400, 10_000, "ESTABLISHED");
    specs.extend(flows("172.16.3.5", 50, 20_000, "TIME_WAIT"));
    specs.extend(flows("172.16.4.7", 100, 30_000, "ESTABLISHED"));
    specs.extend(flows("172.16.4.8", 30, 40_000, "TIME_WAIT"));
    seed::with_conntrack(&ns, &specs, "seed.txt");
    let before = ns.conntrack_list(&[]);
    let expected: Vec<String> = before
        .iter()
        .filter(|l| !(l.contains("src=172.16.3.5 ") && l.contains(" ESTABLISHED ")))
        .cloned()
        .collect();
    assert_eq!(before.len() - expected.len(), 400);
    let (audit, save) = (ns.file("audit.jsonl"), ns.file("state"));
    let cmd = format!(
        "{CTGUARD} --netns {} watch --no-discover --guests {guests} --audit-log {} --save-dir {}",
        ns.path(),
        audit.display(),
        save.display()
    );
    let t = Tmux::start(&cmd, 120, 40);
    let seeded = t.wait(Duration::from_secs(10), |s| top(s).as_deref() == Some("runaway"));
    let screen = seeded.unwrap_or_else(|s| panic!("runaway never the top row:\n{s}"));
    assert_eq!(row(&screen, "runaway", "ESTABLISHED"), Some(400), "{screen}");
    assert_eq!(row(&screen, "runaway", "ENTRIES"), Some(450), "{screen}");
    assert_eq!(row(&screen, "calm", "ENTRIES"), Some(130), "{screen}");

    t.key("e");
    // The modal wraps the command line between words, where the paths put the break.
    let preview = t.wait(Duration::from_secs(10), |s| flat(s).contains("--guest runaway"));
    let preview = preview.unwrap_or_else(|s| panic!("no preview:\n{s}"));
    assert!(flat(&preview).contains("--state ESTABLISHED --yes"), "{preview}");
    t.key("y");
    let asked = Instant::now();
    let after = t.wait(Duration::from_secs(5), |s| {
        row(s, "runaway", "ESTABLISHED").is_none_or(|n| n == 0)
            && row(s, "runaway", "ENTRIES") == Some(50)
    });
    let after = after.unwrap_or_else(|s| panic!("the counts never followed:\n{s}"));
    assert!(asked.elapsed() < Duration::from_secs(2), "followed after {:?}", asked.elapsed());
    assert!(after.contains("400 deleted"), "the report: {after}");
    let left = oracle::same_lines(&ns.conntrack_list(&[]), &expected);
    left.unwrap_or_else(|e| panic!("conntrack -L: exactly runaway's ESTABLISHED gone: {e}"));
    assert!(std::fs::read_to_string(&audit).is_ok_and(|a| a.contains("\"command\":\"watch\"")));

    // Narrow: the numbers stay whole.
    t.key("Escape");
    run("tmux", &["resize-window", "-t", &t.target(), "-x", "60", "-y", "20"]);
    let narrow = t.wait(Duration::from_secs(3), |s| {
        s.lines().all(|l| l.chars().count() <= 60) && row(s, "calm", "ENTRIES") == Some(130)
    });
    let narrow = narrow.unwrap_or_else(|s| panic!("60 columns:\n{s}"));
    assert_eq!(row(&narrow, "runaway", "ENTRIES"), Some(50), "{narrow}");

    t.key("q");
    let gone = t.wait(Duration::from_secs(3), |s| s.contains("EXIT="));
    let gone = gone.unwrap_or_else(|s| panic!("q did not quit:\n{s}"));
    assert!(gone.contains("EXIT=0"), "{gone}");
    assert!(!gone.contains("GROUP"), "the alternate screen is left: {gone}");
}

/// `ctguard:` rules in ctguard's own nftables table of `ns`, as `nft list` prints them.
fn cap_rules(ns: &Netns) -> Vec<String> {
    let r = ns.exec("nft", &["list", "table", "inet", "ctguard"]);
    r.stdout.lines().filter(|l| l.contains("ctguard:")).map(|l| l.trim().to_string()).collect()
}

#[test]
fn issue_15_c_caps_the_selected_guest_capital_c_lifts_it_and_sigterm_restores_the_terminal() {
    let ns = Netns::new();
    let guests =
        ns.write_file("guests.toml", "runaway = \"172.16.3.5\"\ncalm = \"172.16.4.0/24\"\n");
    let mut specs = flows("172.16.3.5", 60, 10_000, "ESTABLISHED");
    specs.extend(flows("172.16.4.7", 20, 30_000, "ESTABLISHED"));
    seed::with_conntrack(&ns, &specs, "seed.txt");
    let cmd = format!(
        "{CTGUARD} --netns {} watch --no-discover --guests {guests} --no-audit --cap 500 \
         --save-dir {}",
        ns.path(),
        ns.file("state").display()
    );
    let t = Tmux::start(&cmd, 100, 30);
    t.wait(Duration::from_secs(10), |s| top(s).as_deref() == Some("runaway"))
        .unwrap_or_else(|s| panic!("runaway never the top row:\n{s}"));
    t.key("c");
    let preview = t.wait(Duration::from_secs(10), |s| s.contains("172.16.3.5/32"));
    let preview = preview.unwrap_or_else(|s| panic!("no cap preview:\n{s}"));
    assert!(preview.contains("500"), "the limit: {preview}");
    t.key("y");
    t.wait(Duration::from_secs(5), |s| s.contains("capped runaway"))
        .unwrap_or_else(|s| panic!("no cap report:\n{s}"));
    let rules = cap_rules(&ns);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert!(rules[0].contains("172.16.3.5") && rules[0].contains("500"), "{rules:?}");
    assert!(rules[0].contains("ctguard:runaway"), "{rules:?}");
    t.key("Escape");
    t.key("C");
    t.wait(Duration::from_secs(3), |s| s.contains("runaway") && s.contains("172.16.3.5/32"))
        .unwrap_or_else(|s| panic!("the caps list:\n{s}"));
    t.key("d");
    let lifted = Instant::now();
    while !cap_rules(&ns).is_empty() && lifted.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(cap_rules(&ns), Vec::<String>::new(), "d lifts the cap");

    // SIGTERM to ctguard (the shell's child): it quits, and the terminal is the shell's again.
    let shell = run("tmux", &["display-message", "-p", "-t", &t.target(), "#{pane_pid}"]).stdout;
    let child = run("pgrep", &["-P", shell.trim()]).stdout;
    let pid: i32 = child.lines().next().and_then(|p| p.trim().parse().ok()).expect("ctguard's pid");
    // SAFETY: kill(2) on a process this test started (tmux's shell's child), no memory involved.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let gone = t.wait(Duration::from_secs(3), |s| s.contains("EXIT="));
    let gone = gone.unwrap_or_else(|s| panic!("SIGTERM did not end the view:\n{s}"));
    assert!(gone.contains("EXIT=0"), "{gone}");
    assert!(!gone.contains("GROUP"), "the alternate screen is left: {gone}");
}
