//! A throw-away network namespace per test, removed on drop (even when the test panics), and
//! the runners for `conntrack`, `ctguard` and other tools inside it.
//!
//! Nothing here touches the machine's own namespace: every `conntrack` and `sysctl` runs
//! through `ip netns exec NAME`, and `ctguard` gets `--netns NAME`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The binary under test.
pub const CTGUARD: &str = env!("CARGO_BIN_EXE_ctguard");

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct Run {
    /// The command line, for messages.
    pub cmd: String,
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// The run, or a panic naming the command, its exit status and its stderr.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "{}", self.describe());
        self
    }

    /// The run if it exited 0, else a one-paragraph reason.
    pub fn check_ok(self) -> Result<Run, String> {
        if self.code == Some(0) { Ok(self) } else { Err(self.describe()) }
    }

    /// Command, exit status and the start of stderr, for failure messages.
    pub fn describe(&self) -> String {
        let mut s = format!("`{}` exited {:?}", self.cmd, self.code);
        let err: String = self.stderr.chars().take(2000).collect();
        if !err.is_empty() {
            let _ = write!(s, "; stderr: {}", err.trim_end());
        }
        s
    }

    /// Standard output as lines.
    pub fn lines(&self) -> Vec<String> {
        self.stdout.lines().map(str::to_string).collect()
    }

    /// Standard error as lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }
}

/// Runs a program with stdin closed and collects its output.
pub fn run(program: &str, args: &[&str]) -> Run {
    let cmd = std::iter::once(program).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start `{cmd}`: {e}"));
    Run {
        cmd,
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Root, `ip`, `conntrack` v1.4 and the conntrack module: without them the kernel tier cannot
/// run, and says so by failing. Checked once per test binary.
pub fn require_environment() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(format!(
                "the kernel tests need root (they create network namespaces and talk \
                 ctnetlink); running as uid {euid}. Run them as root, or leave out \
                 --features kernel-tests"
            ));
        }
        let version = Command::new("conntrack").arg("--version").output().map_err(|e| {
            format!(
                "the kernel tests use conntrack-tools as their oracle, but `conntrack` \
                 cannot run: {e}. Install it (apt-get install conntrack)"
            )
        })?;
        let text = String::from_utf8_lossy(&version.stdout).into_owned()
            + &String::from_utf8_lossy(&version.stderr);
        if !text.contains("conntrack v1.4") {
            return Err(format!(
                "expected conntrack-tools v1.4.x, `conntrack --version` says {text:?}"
            ));
        }
        let ip = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map_err(|e| format!("the kernel tests need iproute2's `ip` for namespaces: {e}"))?;
        if !ip.status.success() {
            return Err(format!("`ip netns list` failed: {}", String::from_utf8_lossy(&ip.stderr)));
        }
        if !Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists() {
            return Err("the nf_conntrack module is not loaded (no \
                        /proc/sys/net/netfilter/nf_conntrack_max); modprobe nf_conntrack"
                .into());
        }
        Ok(())
    });
    if let Err(why) = result {
        panic!("KERNEL TESTS CANNOT RUN: {why}");
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace created for one test (`ctg-kt-<pid>-<n>`) with a scratch directory;
/// both are removed on drop.
pub struct Netns {
    name: String,
    dir: PathBuf,
}

impl Netns {
    /// Creates a fresh namespace. Fails the test loudly when the environment cannot run it.
    pub fn new() -> Netns {
        require_environment();
        let name = format!("ctg-kt-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        run("ip", &["netns", "add", &name]).ok();
        let dir = std::env::temp_dir().join(&name);
        // Build the guard first: from here on, drop removes the namespace whatever happens.
        let ns = Netns { name, dir };
        std::fs::create_dir_all(&ns.dir)
            .unwrap_or_else(|e| panic!("cannot create scratch dir {}: {e}", ns.dir.display()));
        ns
    }

    /// The namespace's name, for `ip ... netns NAME`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file, `/run/netns/NAME`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// A path in the test's scratch directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes a scratch file and returns its path as text.
    pub fn write_file(&self, name: &str, contents: &str) -> String {
        let path = self.file(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path.to_string_lossy().into_owned()
    }

    /// Runs `body` on a thread inside the namespace: setns moves only the calling thread, so a
    /// fresh scoped thread keeps the test harness's threads where they were. Sockets `body`
    /// opens belong to the namespace.
    pub fn inside<T: Send>(&self, body: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                ctguard::netns::enter(&self.path()).expect("enter the test namespace");
                body()
            })
            .join()
            .expect("the namespace thread panicked")
        })
    }

    /// Runs `program args` inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> Run {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `conntrack args` inside the namespace.
    pub fn conntrack(&self, args: &[&str]) -> Run {
        self.exec("conntrack", args)
    }

    /// `ctguard --netns NAME args`.
    pub fn ctguard(&self, args: &[&str]) -> Run {
        let mut all = vec!["--netns", &self.name];
        all.extend_from_slice(args);
        run(CTGUARD, &all)
    }

    /// `conntrack -L args`, which must succeed: its lines (the summary goes to stderr).
    #[track_caller]
    pub fn conntrack_list(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["-L"];
        all.extend_from_slice(args);
        self.conntrack(&all).ok().lines()
    }

    /// `conntrack -C`: the table's entry count.
    #[track_caller]
    pub fn conntrack_count(&self) -> u64 {
        let r = self.conntrack(&["-C"]).ok();
        r.stdout.trim().parse().unwrap_or_else(|_| panic!("`{}` printed {:?}", r.cmd, r.stdout))
    }

    /// Sets a sysctl inside this namespace only (never the machine's own).
    #[track_caller]
    pub fn sysctl_write(&self, key: &str, value: &str) {
        self.exec("sysctl", &["-w", &format!("{key}={value}")]).ok();
        let got = self.exec("sysctl", &["-n", key]).ok();
        assert_eq!(got.stdout.trim(), value, "sysctl {key} inside {} did not take", self.name);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let del = run("ip", &["netns", "del", &self.name]);
        if del.code != Some(0) {
            eprintln!("warning: could not remove namespace {}: {}", self.name, del.describe());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A command on a terminal of its own (`script(1)`), for prompts: type into it, then collect
/// what it printed. Its input stays open until it exits: `script` hangs the terminal up when
/// its input ends, and a reply typed just before could be lost to that hang-up.
pub struct OnTerminal {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl OnTerminal {
    /// Starts `cmd` (a shell command line) on a terminal, killed after `limit_s` seconds.
    pub fn spawn(cmd: &str, limit_s: u32) -> OnTerminal {
        let mut child = Command::new("timeout")
            .args([&limit_s.to_string(), "script", "-qec", cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start script for `{cmd}`: {e}"));
        let stdin = child.stdin.take();
        OnTerminal { child, stdin }
    }

    /// Types `text` at the terminal.
    pub fn type_in(&mut self, text: &str) {
        if let Some(i) = self.stdin.as_mut() {
            let _ = i.write_all(text.as_bytes());
            let _ = i.flush();
        }
    }

    /// Waits (at most `within`) for the command to end, its input still open, and returns
    /// everything the terminal showed.
    pub fn finish(mut self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(self.stdin.take());
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        self.child
            .wait_with_output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}
