//! Issue 16: the man pages and shell completions the binary generates from its clap definition
//! (`ctguard man DIR`, `ctguard completions SHELL`), compared with the golden copies in
//! `tests/hermetic/golden/` so a changed flag shows up as a changed page and script
//! (`CTGUARD_BLESS=1 cargo test --test hermetic manual` rewrites them); every command and
//! flag of `--help` on its page; and the guest names call back of each shell, run against a
//! stand-in `ctguard` that says what it was asked.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::deploy::tool;

const SHELLS: [(&str, &str); 3] =
    [("bash", "ctguard.bash"), ("zsh", "_ctguard"), ("fish", "ctguard.fish")];

fn ctguard(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ctguard"))
        .args(args)
        .env_remove("CTGUARD_GUESTS")
        .output()
        .expect("run the ctguard binary");
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hermetic/golden")
}

/// Compares `got` with `golden/<name>`, or rewrites it under `CTGUARD_BLESS`. The version
/// stands as `VERSION`, so a release does not rewrite every page.
fn golden(name: &str, got: &str) {
    let got = got.replace(env!("CARGO_PKG_VERSION"), "VERSION");
    let path = golden_dir().join(name);
    if std::env::var_os("CTGUARD_BLESS").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (CTGUARD_BLESS=1 writes it)", path.display()));
    assert!(
        want == got,
        "{name} differs from {} (a flag changed? CTGUARD_BLESS=1 rewrites it):\n{got}",
        path.display()
    );
}

fn stdout(out: Output) -> String {
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The commands `ctguard --help` lists (clap's `help` aside).
fn commands() -> Vec<String> {
    let help = stdout(ctguard(&["--help"]));
    let listed = help.split("Commands:\n").nth(1).expect("a Commands: list");
    let names: Vec<String> = listed
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 15, "ctguard --help lists the commands: {names:?}");
    names
}

/// The long flags a `--help` text lists.
fn long_flags(help: &str) -> BTreeSet<String> {
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned())
        .collect()
}

fn man_pages() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let listed = stdout(ctguard(&["man", dir.path().to_str().unwrap()]));
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(listed.lines().count(), names.len(), "`ctguard man` names each page it writes");
    (dir, names)
}

#[test]
fn issue_16_man_pages_are_the_golden_ones() {
    let (dir, names) = man_pages();
    let mut want: Vec<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".8"))
        .collect();
    want.sort();
    if std::env::var_os("CTGUARD_BLESS").is_none() {
        assert_eq!(names, want, "the pages `ctguard man` writes");
    }
    for name in &names {
        golden(name, &std::fs::read_to_string(dir.path().join(name)).unwrap());
    }
}

#[test]
fn issue_16_each_command_has_a_page_naming_its_flags_exit_status_and_schema() {
    let (dir, names) = man_pages();
    let page = |name: &str| {
        assert!(names.iter().any(|n| n == name), "no page {name}: {names:?}");
        std::fs::read_to_string(dir.path().join(name)).unwrap()
    };
    let top = page("ctguard.8");
    assert!(top.starts_with(".ie \\n(.g .ds Aq \\(aq\n"), "one roff preamble opens the page");
    assert_eq!(top.matches(".ds Aq").count(), 2, "the preamble once (its two branches)");
    for command in commands() {
        let name = format!("ctguard-{command}.8");
        let text = page(&name);
        let th = format!(".TH ctguard-{command} 8 \"\" \"ctguard {}\" ", env!("CARGO_PKG_VERSION"));
        assert!(text.contains(&th), "{name}: its .TH");
        assert!(top.contains(&format!("ctguard\\-{command}(8)")), "ctguard.8 lists {command}");
        let help = stdout(ctguard(&[&command, "--help"]));
        for flag in long_flags(&help) {
            let roff = flag.replace('-', "\\-");
            assert!(text.contains(&roff), "{name} has no {flag}, which `{command} --help` has");
        }
        assert!(text.contains(".SH \"EXIT STATUS\""), "{name}: EXIT STATUS");
        assert!(text.contains("ctguard(8)"), "{name}: SEE ALSO ctguard(8)");
        let json = help.lines().any(|l| l.trim_start().starts_with("--json"));
        assert_eq!(
            text.contains(".SH \"JSON OUTPUT\""),
            json,
            "{name}: a JSON OUTPUT section exactly when the command has --json"
        );
        if json {
            assert!(text.contains("/usr/share/doc/ctguard/json\\-schema.md"), "{name}: schema");
        }
    }
}

#[test]
fn issue_16_completion_scripts_are_the_golden_ones() {
    for (shell, file) in SHELLS {
        let script = stdout(ctguard(&["completions", shell]));
        assert!(script.contains("guests --names"), "{shell}: the guest names call back");
        golden(file, &script);
    }
}

/// A stand-in `ctguard` in a fresh directory: it appends its arguments to `calls` and prints
/// two guest names, as `guests --names` would.
fn stand_in() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("ctguard");
    let calls = dir.path().join("calls");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nprintf 'web01\\nweb02\\ndb01\\n'\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, calls)
}

/// Runs `script` in `shell` with the stand-in first on PATH.
fn shell_run(shell: &Path, dir: &Path, script: &str) -> String {
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new(shell).arg("-c").arg(script).env("PATH", path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {script}\n{stderr}", shell.display());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn issue_16_bash_completes_guest_names_from_the_call_back() {
    let (dir, calls) = stand_in();
    let script = dir.path().join("ctguard.bash");
    std::fs::write(&script, stdout(ctguard(&["completions", "bash"]))).unwrap();
    let complete = |words: &str| {
        let run = format!(
            "source '{}'; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _ctguard_with_guests ctguard \"${{COMP_WORDS[COMP_CWORD]}}\" \
             \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        shell_run(Path::new("bash"), dir.path(), &run)
    };
    assert_eq!(complete("ctguard top --guest web"), "web01\nweb02\n");
    assert_eq!(complete("ctguard evict --guest = d"), "db01\n", "--guest=VALUE");
    let asked = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(asked, "guests --names\nguests --names\n");
    // The guest file and namespace typed go with the call back.
    complete("ctguard --netns lab count --guests /etc/g.toml --guest ''");
    let asked = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(asked.lines().last(), Some("guests --names --netns lab --guests /etc/g.toml"));
    // Any other word is clap's: the flags, with no call back.
    assert_eq!(complete("ctguard top --gues"), "--guest\n--guests\n");
    assert_eq!(std::fs::read_to_string(&calls).unwrap().lines().count(), 3);
}

/// Guest names a guest file may hold that mean something to a shell.
const HOSTILE: [&str; 5] = ["w$(touch PWNED)", "w`touch PWNED`", "w*", "w it's", "w:x"];

/// A stand-in `ctguard` printing the hostile names, in a directory with a file `w*` could glob.
fn hostile_stand_in() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("ctguard");
    let names: String =
        HOSTILE.iter().map(|n| format!(" '{}'", n.replace('\'', r"'\''"))).collect();
    std::fs::write(&bin, format!("#!/bin/sh\nprintf '%s\\n'{names}\n")).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("wfile"), "").unwrap();
    dir
}

/// Completes in `shell` with the completion script for `generator` (saved as `file`) and the
/// hostile stand-in: `setup`, the script sourced, then `run`, in the stand-in's directory
/// (where `w*` could glob). What it printed; no name's command substitution may have run.
fn complete_hostile(shell: &Path, generator: &str, file: &str, setup: &str, run: &str) -> String {
    let dir = hostile_stand_in();
    let script = dir.path().join(file);
    std::fs::write(&script, stdout(ctguard(&["completions", generator]))).unwrap();
    let (dir_path, script_path) = (dir.path().display(), script.display());
    let run = format!("cd '{dir_path}'; {setup} source '{script_path}'; {run}");
    let out = shell_run(shell, dir.path(), &run);
    assert!(!dir.path().join("PWNED").exists(), "{generator}: a name's command substitution ran");
    out
}

#[test]
fn issue_16_bash_never_expands_a_guest_name_and_inserts_it_quoted() {
    // Each reply, read back as bash reads the command line, is the name.
    let run = "COMP_WORDS=(ctguard top --guest w); COMP_CWORD=3; \
               _ctguard_with_guests ctguard w --guest; \
               for r in \"${COMPREPLY[@]}\"; do eval \"set -- $r\"; printf '%s|%s\\n' \"$#\" \"$1\"; done";
    let out = complete_hostile(Path::new("bash"), "bash", "ctguard.bash", "", run);
    let want: String = HOSTILE.iter().map(|n| format!("1|{n}\n")).collect();
    assert_eq!(out, want, "every name whole, one word, unexpanded");
}

#[test]
fn issue_16_fish_offers_a_hostile_guest_name_as_it_is() {
    let Some(fish) = tool("fish", "fish") else { return };
    let run = "complete -C 'ctguard top --guest w'";
    let out = complete_hostile(&fish, "fish", "ctguard.fish", "", run);
    let mut want: Vec<String> = HOSTILE.iter().map(|n| format!("{n}\tguest")).collect();
    let mut got: Vec<String> = out.lines().map(String::from).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "names as printed (fish escapes what it inserts)");
}

#[test]
fn issue_16_zsh_keeps_a_colon_in_a_guest_name() {
    let Some(zsh) = tool("zsh", "zsh") else { return };
    // compsys stands in: `_describe` prints the `name:description` words it was given.
    let stubs = "compdef() { : }; _describe() { print -rl -- ${(P)4} };";
    let run = "LBUFFER='ctguard top --guest w'; _ctguard_guests";
    let out = complete_hostile(&zsh, "zsh", "_ctguard", stubs, run);
    let want: String = HOSTILE.iter().map(|n| format!("{}\n", n.replace(':', r"\:"))).collect();
    assert_eq!(out, want, "names as printed, a colon escaped for _describe");
}

#[test]
fn issue_16_fish_completes_guest_names_from_the_call_back() {
    let Some(fish) = tool("fish", "fish") else { return };
    let (dir, calls) = stand_in();
    let script = dir.path().join("ctguard.fish");
    std::fs::write(&script, stdout(ctguard(&["completions", "fish"]))).unwrap();
    let run = format!(
        "source '{}'; complete -C 'ctguard top --guests /etc/g.toml --guest web'",
        script.display()
    );
    assert_eq!(shell_run(&fish, dir.path(), &run), "web01\tguest\nweb02\tguest\n");
    let asked = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(asked, "guests --names --guests /etc/g.toml\n");
}

#[test]
fn issue_16_zsh_script_parses_and_routes_guest_to_the_call_back() {
    let script = stdout(ctguard(&["completions", "zsh"]));
    let guest_specs: Vec<&str> = script.lines().filter(|l| l.starts_with("'*--guest=[")).collect();
    let with_guest = commands()
        .iter()
        .filter(|c| stdout(ctguard(&[c.as_str(), "--help"])).contains("--guest <"))
        .count();
    assert!(with_guest >= 6, "the selecting commands have --guest");
    assert_eq!(guest_specs.len(), with_guest, "one --guest spec per command that has it");
    for spec in guest_specs {
        assert!(spec.ends_with(":_ctguard_guests' \\"), "--guest calls back: {spec}");
    }
    let Some(zsh) = tool("zsh", "zsh") else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("_ctguard");
    std::fs::write(&file, &script).unwrap();
    let out = Command::new(zsh).arg("-n").arg(&file).output().unwrap();
    assert!(out.status.success(), "zsh -n: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn issue_16_guests_names_prints_the_guest_files_names_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guests.toml");
    std::fs::write(&file, "web01 = \"172.16.3.5\"\ndb01 = \"172.16.3.6\"\napi = \"10.0.0.0/24\"\n")
        .unwrap();
    let file = file.to_str().unwrap();
    let out = ctguard(&["guests", "--names", "--no-discover", "--guests", file]);
    assert_eq!(stdout(out), "api\ndb01\nweb01\n");
    // $CTGUARD_GUESTS names the file as it does for every command.
    let out = Command::new(env!("CARGO_BIN_EXE_ctguard"))
        .args(["guests", "--names", "--no-discover"])
        .env("CTGUARD_GUESTS", file)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "api\ndb01\nweb01\n");
    // No name: exit 1, nothing printed.
    let out = Command::new(env!("CARGO_BIN_EXE_ctguard"))
        .args(["guests", "--names", "--no-discover"])
        .env_remove("CTGUARD_GUESTS")
        .output()
        .unwrap();
    assert_eq!((out.status.code(), out.stdout.len()), (Some(1), 0));
    // A bad file is bad input, as everywhere; --no-discover means nothing without --names.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "web01 = \"not an address\"\n").unwrap();
    let line = crate::cli::refused(&["guests", "--names", "--guests", bad.to_str().unwrap()]);
    assert!(line.contains("bad.toml"), "{line}");
    crate::cli::refused(&["guests", "--no-discover"]);
    crate::cli::refused(&["guests", "--names", "--json"]);
    crate::cli::refused(&["man", dir.path().join("missing").to_str().unwrap()]);
}

/// A shell waits on `guests --names`: a FIFO with no writer (whose `open` would block) or a
/// device as the guest file is refused at once, exit 2 and one line, like any bad file.
#[test]
fn issue_16_guests_names_refuses_a_fifo_or_a_device_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("guests.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo");
    let link = dir.path().join("link.toml");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    for path in [fifo.to_str().unwrap(), link.to_str().unwrap(), "/dev/zero", "/dev/null"] {
        let args = ["guests", "--names", "--no-discover", "--guests", path];
        let mut child = Command::new(env!("CARGO_BIN_EXE_ctguard"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let waited = child.try_wait().unwrap();
        if waited.is_none() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        assert!(waited.is_some(), "{path}: guests --names still waiting after 10 s");
        let line = crate::cli::refused(&args);
        assert!(line.contains("not a regular file"), "{path}: {line}");
    }
}

#[test]
fn issue_16_man_never_writes_through_a_planted_link_and_pages_are_0644() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("ctguard-top.8")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ctguard"))
        .args(["man", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a planted link is refused: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ctguard-top.8") && err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");

    let (pages, names) = man_pages();
    for name in &names {
        let mode = std::fs::metadata(pages.path().join(name)).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o644, "{name}");
    }
    let strays: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".ctguard-"))
        .collect();
    assert!(strays.is_empty(), "no temporary file is left: {strays:?}");
}
