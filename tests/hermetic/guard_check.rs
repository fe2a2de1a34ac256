//! Issue 13: `ctguard guard --check --config FILE` needs neither the kernel nor privileges:
//! exit 0 with one line for a good configuration, exit 2 with `FILE:LINE:` on one line for a
//! bad one. Run as root (scripts/test), the checks drop to nobody with every capability gone.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory nobody can read (0755), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("ctguard-gcheck-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Scratch(dir)
    }

    /// Writes `name` (mode 0644) and returns its path.
    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write a scratch file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        path.to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `ctguard ARGS` unprivileged: as it is when the tests run as a user; as nobody without
/// any capability (a world-executable copy of the binary) when they run as root.
fn unprivileged(dir: &Scratch, args: &[&str]) -> Output {
    let root = rustix::process::geteuid().is_root();
    let mut cmd = if root {
        let bin = dir.0.join("ctguard");
        if !bin.exists() {
            std::fs::copy(env!("CARGO_BIN_EXE_ctguard"), &bin).expect("copy the binary");
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(&bin);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_ctguard"))
    };
    cmd.args(args).env_remove("CTGUARD_GUESTS").output().expect("run ctguard")
}

/// A good configuration naming every pinned key, its namespace one that does not exist:
/// `--check` enters nothing.
fn good(dir: &Scratch) -> String {
    let guests = dir.write("guests.toml", "vm-1 = [\"172.16.3.5/32\"]\nvm-2 = [\"10.0.0.0/24\"]\n");
    format!(
        "guests = \"{guests}\"\nhigh = \"90%\"\nlow = \"75%\"\nquota = 60000\n\
         action = \"cap+evict\"\nevict_state = [\"ESTABLISHED\"]\nevict_idle = \"10m\"\n\
         cap = 20000\ncooldown = \"10m\"\nprotect = [\"172.16.0.1/32\"]\n\
         metrics = \"127.0.0.1:9731\"\nsocket = \"/run/ctguard/guard.sock\"\n\
         audit_log = \"/var/log/ctguard/audit.jsonl\"\nnetns = \"ctg-no-such-namespace\"\n\
         \n[guest.vm-1]\nquota = \"10%\"\naction = \"alert\"\n"
    )
}

#[test]
fn issue_13_guard_check_accepts_a_good_config_without_privileges() {
    let dir = Scratch::new("good");
    let config = dir.write("guard.toml", &good(&dir));
    let out = unprivileged(&dir, &["guard", "--check", "--config", &config]);
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout {stdout:?}, stderr {stderr:?}");
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout:?}");
    assert!(stdout.starts_with(&format!("{config}: ok")), "{stdout:?}");
    assert_eq!(stderr, "", "nothing on stderr");
}

#[test]
fn issue_13_guard_check_refuses_a_bad_config_with_its_line() {
    let dir = Scratch::new("bad");
    let good = good(&dir);
    let line_of = |key: &str| good.lines().position(|l| l.starts_with(key)).expect(key) + 1;
    for (key, bad) in [
        ("high", "high = \"190%\""),
        ("low", "low = \"lots\""),
        ("quota", "quota = 0"),
        ("action", "action = \"nuke\""),
        ("evict_state", "evict_state = [\"ESTABLISHD\"]"),
        ("evict_idle", "evict_idle = \"soon\""),
        ("cap", "cap = -1"),
        ("cooldown", "cooldown = \"0s\""),
        ("protect", "protect = [\"172.16.0.1/33\"]"),
        ("metrics", "metrics = \"localhost\""),
        ("socket", "socket = \"guard.sock\""),
        ("audit_log", "audit_log = \"audit.jsonl\""),
        ("netns", "netns = 7"),
        ("action = \"alert\"", "actoin = \"alert\""),
    ] {
        let line = line_of(key);
        let text: Vec<&str> =
            good.lines().enumerate().map(|(i, l)| if i + 1 == line { bad } else { l }).collect();
        let config = dir.write("guard.toml", &text.join("\n"));
        let out = unprivileged(&dir, &["guard", "--check", "--config", &config]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: stderr {stderr:?}");
        assert!(out.stdout.is_empty(), "{bad}: stdout {:?}", String::from_utf8_lossy(&out.stdout));
        assert_eq!(stderr.lines().count(), 1, "{bad}: one line: {stderr:?}");
        assert!(stderr.starts_with("ctguard: "), "{bad}: {stderr:?}");
        assert!(stderr.contains(&format!("{config}:{line}: ")), "{bad}: line {line}: {stderr:?}");
    }
}

#[test]
fn issue_13_guard_check_refuses_a_missing_file_and_a_bad_guest_file() {
    let dir = Scratch::new("files");
    let missing = dir.0.join("nowhere.toml");
    let guests = dir.write("guests.toml", "vm-1 = [\"172.16.3.5/32\"]\nvm-2 = [\"10.0.0.0/33\"]\n");
    let config = dir.write("guard.toml", &format!("guests = \"{guests}\"\n"));
    let unknown = dir.write(
        "unknown.toml",
        &format!(
            "guests = \"{}\"\n[guest.vm-9]\nquota = 5\n",
            dir.write("g.toml", "vm-1 = [\"10.1.0.0/16\"]\n")
        ),
    );
    for (args, words) in [
        (vec!["guard", "--check", "--config", path(&missing)], path(&missing).to_string()),
        (vec!["guard", "--check", "--config", &config], format!("{guests}:2")),
        (vec!["guard", "--check", "--config", &unknown], "[guest.vm-9]".to_string()),
    ] {
        let out = unprivileged(&dir, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: stderr {stderr:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr:?}");
        assert!(stderr.contains(&words), "{args:?}: {words} in {stderr:?}");
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
