//! A place in the lab: one network namespace, and one thread living inside it that runs its
//! own single-threaded tokio runtime.
//!
//! A socket belongs to the network namespace of the thread that created it, for its whole
//! life. So everything that opens a socket for a namespace (an rtnetlink connection, the
//! upstream listener, a guest's connections, the host's ICMP socket) is spawned onto that
//! namespace's place and runs on its thread. Never `spawn_blocking` from a place: the blocking
//! pool's threads live in the caller's original namespace.

use std::future::Future;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Runs `program args` and returns its output, or why it could not start.
pub fn command(program: &str, args: &[&str]) -> Result<Output, String> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot start `{program} {}`: {e}", args.join(" ")))
}

/// Runs `program args`; an error unless it exits 0. Returns its standard output.
pub fn command_ok(program: &str, args: &[&str]) -> Result<String, String> {
    let out = command(program, args)?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` exited {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The ctguard binary a lab test runs: `$VAR` when set, else `ctguard` in the target directory
/// the test executable was built in (`target/<profile>/deps/NAME-HASH`): under `profile`
/// (`release`) when given, else beside the test's own `deps/`. An error, with the command that
/// builds it, when there is no such file.
pub fn built_ctguard(var: &str, profile: Option<&str>) -> Result<PathBuf, String> {
    let path = match std::env::var_os(var) {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe().map_err(|e| format!("test executable path: {e}"))?;
            let built = match profile {
                Some(profile) => exe.ancestors().nth(3).map(|target| target.join(profile)),
                None => exe.ancestors().nth(2).map(PathBuf::from),
            };
            built
                .ok_or_else(|| format!("no target directory above {}", exe.display()))?
                .join("ctguard")
        }
    };
    if !path.is_file() {
        let release = if profile == Some("release") { " --release" } else { "" };
        return Err(format!(
            "no ctguard binary at {}: build it first (cargo build{release} --bin ctguard) or set {var}",
            path.display()
        ));
    }
    Ok(path)
}

/// Creates the named namespace with `ip netns add` (a bind mount under /run/netns, which
/// `ctguard --netns NAME` and `ip netns exec NAME` both find).
pub fn create_netns(name: &str) -> Result<(), String> {
    command_ok("ip", &["netns", "add", name]).map(drop)
}

/// Deletes the named namespace. The kernel frees it, with its links, nftables ruleset and
/// conntrack table, once the last socket and process inside it are gone.
pub fn delete_netns(name: &str) -> Result<(), String> {
    command_ok("ip", &["netns", "del", name]).map(drop)
}

/// A namespace's thread and runtime. Dropping it stops the runtime, which drops every task
/// still running there and closes their sockets.
pub struct Place {
    netns: String,
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Place {
    /// Starts a thread inside the namespace `/run/netns/NAME` with its own runtime.
    pub fn enter(netns: &str) -> Result<Place, String> {
        let path = ctguard::netns::path_of(netns);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("lab-{netns}"))
            .spawn(move || {
                // setns moves only this thread, which is why each namespace gets a thread of
                // its own.
                if let Err(e) = ctguard::netns::enter(&path) {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
                let runtime =
                    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("tokio runtime for {path}: {e}")));
                            return;
                        }
                    };
                let _ = ready_tx.send(Ok(runtime.handle().clone()));
                // Tasks spawned through the handle run here, on this thread, until told to stop.
                runtime.block_on(async move {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| format!("cannot start a thread for {netns}: {e}"))?;
        let handle = match ready_rx.recv() {
            Ok(Ok(handle)) => handle,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => return Err(format!("the thread for {netns} died while starting")),
        };
        Ok(Place { netns: netns.to_string(), handle, stop: Some(stop), thread: Some(thread) })
    }

    /// The namespace's name.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Runs a future on this namespace's thread and waits for its result.
    pub async fn run<F, T>(&self, fut: F) -> Result<T, String>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.handle
            .spawn(fut)
            .await
            .map_err(|e| format!("a task in namespace {} failed: {e}", self.netns))
    }

    /// Starts a future on this namespace's thread and returns at once.
    pub fn spawn<F, T>(&self, fut: F) -> tokio::task::JoinHandle<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.handle.spawn(fut)
    }

    /// `ip netns exec NAME program args`: a tool run inside this namespace only.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        let mut all = vec!["netns", "exec", &self.netns, program];
        all.extend_from_slice(args);
        command("ip", &all)
    }

    /// Like [`Place::exec`], an error unless the tool exits 0; returns its standard output.
    pub fn exec_ok(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["netns", "exec", &self.netns, program];
        all.extend_from_slice(args);
        command_ok("ip", &all)
    }

    /// Sets a sysctl of this namespace (`ip netns exec NAME sysctl -w`), never the machine's.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), String> {
        self.exec_ok("sysctl", &["-q", "-w", &format!("{key}={value}")]).map(drop)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
