//! Issue 16.4 and 16.5: colour, width and progress on a terminal only. Each command runs on a
//! pseudo-terminal of its own (`script(1)`, through [`OnTerminal`]), with `NO_COLOR`, and
//! piped; what the terminal showed is compared byte for byte with what a pipe got.
//!
//! The fill cannot be set by lowering `nf_conntrack_max` (global, read-only in a namespace):
//! the yellow case seeds a namespace's table past doctor's 80 % of it.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::checks::{Checks, equal};
use crate::netns::{CTGUARD, Netns, OnTerminal};
use crate::seed::{self, L4, RUNAWAY_V4, Spec};

const ESC: char = '\x1b';
/// SGR sequences as anstyle writes them: green, yellow, bold, reset.
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// `n` established flows from the runaway guest and a few from others.
fn table(n: usize) -> Vec<Spec> {
    let src: IpAddr = RUNAWAY_V4.parse().expect("runaway");
    let flow = |src: IpAddr, i: usize, state: &'static str| Spec {
        proto: "tcp",
        src,
        dst: IpAddr::V4(Ipv4Addr::new(10, 20 + (i / 60_000) as u8, 0, 1)),
        l4: L4::Ports(1024 + (i % 60_000) as u16, 443),
        reply: None,
        state: Some(state),
        status: &["SEEN_REPLY", "ASSURED"],
        timeout: 6000,
        mark: 0,
        zone: 0,
    };
    let mut specs: Vec<Spec> = (0..n).map(|i| flow(src, i, "ESTABLISHED")).collect();
    for g in 0..4u8 {
        let other = IpAddr::V4(Ipv4Addr::new(172, 16, 1, 2 + g));
        specs.extend((0..5).map(|i| flow(other, i, "TIME_WAIT")));
    }
    specs
}

/// What `ctguard --netns NS args` showed on a terminal `cols` wide, its lines ending in `\n`
/// (the terminal's `\r\n` undone). `env` goes before the command (`NO_COLOR=1`).
fn on_terminal(ns: &Netns, env: &str, cols: u16, args: &str) -> String {
    let cmd = format!("stty cols {cols} rows 50; {env} {CTGUARD} --netns {} {args}", ns.name());
    OnTerminal::spawn(&cmd, 60).finish(Duration::from_secs(60)).replace("\r\n", "\n")
}

/// The text with its SGR escapes taken out.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == ESC {
            // ESC [ params m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// No escape byte, no line ending in a space.
fn is_plain(what: &str, text: &str) -> Result<(), String> {
    if text.contains(ESC) {
        return Err(format!("{what}: an escape in {text:?}"));
    }
    no_trailing_spaces(what, text)
}

fn no_trailing_spaces(what: &str, text: &str) -> Result<(), String> {
    match text.lines().find(|l| l.ends_with(' ')) {
        Some(l) => Err(format!("{what}: a line ends in a space: {l:?}")),
        None => Ok(()),
    }
}

#[test]
fn issue_16_colour_and_width_on_a_terminal_only() {
    let ns = Netns::new();
    seed::with_ctguard_load(&ns, &table(300), "seed.jsonl");
    let mut c = Checks::new();
    let top = on_terminal(&ns, "", 200, "top");
    c.run("top on a terminal: the fill green, the top offender bold", || {
        if !top.contains(&format!("({GREEN}0.1% full{RESET})")) {
            return Err(format!("no green fill: {top:?}"));
        }
        let row = top.lines().nth(2).unwrap_or("");
        if !row.starts_with(&format!(" {BOLD}{RUNAWAY_V4}{RESET} ")) {
            return Err(format!("the first row is not the offender in bold: {row:?}"));
        }
        let others = top.lines().skip(3).filter(|l| l.contains(ESC)).count();
        equal("other rows with escapes", others, 0)?;
        no_trailing_spaces("top", &top)
    });
    let doctor = on_terminal(&ns, "", 200, "doctor --window 100ms");
    c.run("doctor on a terminal: the verdict and the fill green", || {
        if !doctor.starts_with(&format!("verdict: {BOLD}{GREEN}HEALTHY{RESET}\n")) {
            return Err(format!("verdict: {doctor:?}"));
        }
        if !doctor.contains(&format!("({GREEN}0.1%{RESET} full)")) {
            return Err(format!("fill: {doctor:?}"));
        }
        no_trailing_spaces("doctor", &doctor)
    });
    let piped = ns.ctguard(&["top"]);
    for (name, args) in [("top", "top"), ("doctor", "doctor --window 100ms"), ("stats", "stats")] {
        let no_color = on_terminal(&ns, "NO_COLOR=1", 200, args);
        c.run(&format!("{name} with NO_COLOR on a terminal: plain"), || is_plain(name, &no_color));
        if name == "top" {
            c.run("top with NO_COLOR on a terminal prints what a pipe gets", || {
                equal("top", no_color.as_str(), piped.stdout.as_str())
            });
        }
        let pipe = ns.ctguard(&args.split(' ').collect::<Vec<_>>());
        c.run(&format!("{name} piped: plain"), || is_plain(name, &pipe.stdout));
    }
    let narrow = on_terminal(&ns, "", 30, "top");
    c.run("top on a narrow terminal fits it and cuts no number", || {
        let text = plain(&narrow);
        if let Some(l) = text.lines().skip(1).find(|l| l.chars().count() > 30) {
            return Err(format!("wider than 30: {l:?}"));
        }
        let row = text.lines().nth(2).unwrap_or("");
        if !row.ends_with(" 300") {
            return Err(format!("the offender's 300 entries: {row:?} in {text}"));
        }
        no_trailing_spaces("narrow top", &narrow)
    });
    c.finish();
}

#[test]
fn issue_16_a_table_past_80_percent_is_yellow() {
    let ns = Netns::new();
    let max: usize = ns
        .exec("sysctl", &["-n", "net.netfilter.nf_conntrack_max"])
        .ok()
        .stdout
        .trim()
        .parse()
        .expect("nf_conntrack_max");
    // Past doctor's 80 %, short of its 90 %.
    let runaway = max * 85 / 100;
    let specs = table(runaway);
    let text: String = specs.iter().map(|s| s.json_line() + "\n").collect();
    let path = ns.write_file("seed.jsonl", &text);
    let out = ns.file("load.out");
    let ms = ns.file("load.ms");
    // stdout to a file: the terminal shows stderr alone. The load's own run time is taken
    // around it in the terminal's shell (the terminal's start-up is no part of it).
    let cmd = format!(
        "stty cols 120 rows 50; s=$(date +%s%N); {CTGUARD} --netns {} load {path} >{}; \
         e=$(date +%s%N); echo $(( (e - s) / 1000000 )) >{}",
        ns.name(),
        out.display(),
        ms.display()
    );
    let load = OnTerminal::spawn(&cmd, 60).finish(Duration::from_secs(60)).replace("\r\n", "\n");
    let took = std::fs::read_to_string(&ms)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .map(Duration::from_millis)
        .expect("the load's run time");
    let mut c = Checks::new();
    c.run("load created every flow", || equal("count", ns.conntrack_count(), specs.len() as u64));
    c.run("load's stdout got nothing of its bar", || {
        let stdout = std::fs::read_to_string(&out).unwrap_or_default();
        if stdout.contains("flows created (") || stdout.contains(ESC) {
            return Err(format!("stdout: {stdout:?}"));
        }
        Ok(())
    });
    // The bar waits until the command has run a second and is drawn at the first step after:
    // a load that ran 1.5 s had steps (one per 4,096 flows, to its end) past that second.
    eprintln!("load ran {took:?}");
    if took > Duration::from_millis(1500) {
        c.run("a load of more than a second shows its bar on the terminal", || {
            if !load.contains("flows created (") {
                return Err(format!("took {took:?}; the terminal showed {load:?}"));
            }
            Ok(())
        });
    }
    let pct = format!("{:.1}%", ns.conntrack_count() as f64 * 100.0 / max as f64);
    let doctor = on_terminal(&ns, "", 200, "doctor --window 100ms");
    c.run("doctor: AT RISK and the fill in yellow", || {
        if !doctor.starts_with(&format!("verdict: {BOLD}{YELLOW}AT RISK{RESET}\n")) {
            return Err(format!("verdict: {doctor:?}"));
        }
        if !doctor.contains(&format!("({YELLOW}{pct}{RESET} full)")) {
            return Err(format!("fill {pct}: {doctor:?}"));
        }
        if !doctor.contains(&format!("\noffender: {BOLD}{YELLOW}{RUNAWAY_V4}{RESET}\n")) {
            return Err(format!("offender: {doctor:?}"));
        }
        no_trailing_spaces("doctor", &doctor)
    });
    let top = on_terminal(&ns, "", 200, "top");
    c.run("top: the fill yellow, the offender bold yellow", || {
        if !top.contains(&format!("({YELLOW}{pct} full{RESET})")) {
            return Err(format!("fill {pct}: {top:?}"));
        }
        let row = top.lines().find(|l| l.contains(RUNAWAY_V4)).unwrap_or("");
        if !row.starts_with(&format!(" {BOLD}{YELLOW}{RUNAWAY_V4}{RESET} ")) {
            return Err(format!("offender row: {row:?}"));
        }
        Ok(())
    });
    c.run("doctor piped: plain", || is_plain("doctor", &ns.ctguard(&["doctor"]).stdout));
    c.finish();
}

#[test]
fn issue_16_evict_shows_progress_on_a_terminal_only() {
    let ns = Netns::new();
    let specs = table(300);
    let select = format!("evict --yes --no-audit -s {RUNAWAY_V4} --rate 150");
    let mut c = Checks::new();

    seed::with_ctguard_load(&ns, &specs, "seed.jsonl");
    let out = ns.file("evict.out");
    // stdout to a file: the terminal shows stderr alone.
    let shown = on_terminal(&ns, "", 120, &format!("{select} >{}", out.display()));
    c.run("a paced evict on a terminal shows deleted / selected, the rate, the time left", || {
        if !shown.contains("ctguard: evict: ") || !shown.contains("/300 flows deleted (") {
            return Err(format!("the terminal showed {shown:?}"));
        }
        if !shown.contains(" left) [") {
            return Err(format!("no time left with --rate: {shown:?}"));
        }
        Ok(())
    });
    c.run("the report on stdout is whole, and none of the bar is in it", || {
        let stdout = std::fs::read_to_string(&out).unwrap_or_default();
        if !stdout.starts_with("deleted 300 of 300 selected flows") {
            return Err(format!("stdout: {stdout:?}"));
        }
        is_plain("stdout", &stdout)
    });

    // The runaway's flows again (the others were not selected, they are still there).
    let runaway = &specs[..300];
    seed::with_ctguard_load(&ns, runaway, "seed2.jsonl");
    let args: Vec<&str> = select.split(' ').collect();
    let piped = ns.ctguard(&args);
    c.run("piped: no progress on stderr", || {
        equal("exit", piped.code, Some(0))?;
        if piped.stderr.contains("flows deleted") || piped.stderr.contains('\r') {
            return Err(format!("stderr: {:?}", piped.stderr));
        }
        is_plain("stderr", &piped.stderr)
    });

    seed::with_ctguard_load(&ns, runaway, "seed3.jsonl");
    let json = on_terminal(&ns, "", 120, &format!("{select} --json"));
    c.run("--json on a terminal: the JSON line alone, no bar", || {
        let lines: Vec<&str> = json.lines().collect();
        if lines.len() != 1 || !lines[0].starts_with('{') || json.contains("flows deleted") {
            return Err(format!("the terminal showed {json:?}"));
        }
        Ok(())
    });
    c.finish();
}
