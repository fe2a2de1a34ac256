//! `ctguard guard`: the always-on guard, in the foreground (systemd runs it so), `--check` of
//! its configuration, `--dry-run`, and `--uncap` of the caps it left.

use std::io::Write;
use std::sync::Arc;

use clap::Args as ClapArgs;
use ctguard::guard::daemon::{self, Edges, LoadError, Loaded, Notify, Signal};
use tokio::signal::unix::{Signal as Sig, SignalKind, signal};

use crate::cli::exit::{Failure, Outcome};
use crate::cli::live;

/// What `guard --help` adds.
pub const HELP: &str = "\
Signals: SIGHUP reloads the configuration (a bad one is reported and the one in force stays);
SIGTERM or SIGINT stop within a second. With `discover = true` the guard looks at the host's
guests (as `ctguard guests` does) at start, at each reload and every `discover_every`; a
change of guests recounts the table, a cap whose guest left is lifted after the cooldown. Caps stay in place when the guard stops: a restarted
guard adopts them and lifts each after its own cooldown; `--uncap` lifts them by hand.";

/// `ctguard guard`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The configuration file (TOML; see deploy/guard.toml).
    #[arg(long, value_name = "FILE", default_value = "/etc/ctguard/guard.toml")]
    pub config: String,
    /// Decide and log, never act: no cap, no eviction (whatever the file's dry_run says).
    #[arg(long)]
    pub dry_run: bool,
    /// Check the configuration and its guest file, and exit: 0, or 2 with the line at fault.
    #[arg(long, conflicts_with_all = ["uncap", "dry_run"])]
    pub check: bool,
    /// Lift the caps of GUEST (or `all`) from ctguard's nftables table, and exit.
    #[arg(long, value_name = "GUEST|all")]
    pub uncap: Option<String>,
}

/// A validated `guard`.
#[derive(Debug)]
pub struct Plan {
    path: String,
    loaded: Loaded,
    dry_run: bool,
    mode: Mode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Run,
    Check,
    Uncap(Option<String>),
}

fn read(path: &str, dry_run: bool) -> Result<Loaded, LoadError> {
    let mut loaded = daemon::load(path)?;
    if dry_run {
        Arc::make_mut(&mut loaded.cfg).dry_run = true;
        loaded.file_cfg = loaded.cfg.clone();
    }
    Ok(loaded)
}

/// Reads and checks the configuration and its guest file.
pub fn plan(a: Args) -> Result<Plan, String> {
    let loaded = read(&a.config, a.dry_run).map_err(|e| e.to_string())?;
    let mode = match (a.check, a.uncap) {
        (true, _) => Mode::Check,
        (false, Some(u)) => Mode::Uncap(Some(u).filter(|u| u != "all")),
        (false, None) => Mode::Run,
    };
    if let Mode::Uncap(Some(name)) = &mode
        && name.is_empty()
    {
        return Err("--uncap: name a guest, or `all`".into());
    }
    // Discovering, a cap may belong to a guest found on the host: the table is the judge.
    if let Mode::Uncap(Some(name)) = &mode
        && !loaded.cfg.discover
        && loaded.guests.find(name).is_none()
    {
        return Err(format!("--uncap {name}: no such guest in the guest file (or name `all`)"));
    }
    Ok(Plan { path: a.config, loaded, dry_run: a.dry_run, mode })
}

impl Plan {
    /// The namespace the configuration names, for a command line without `--netns`.
    pub fn netns(&self) -> Option<&str> {
        self.loaded.cfg.netns.as_deref()
    }

    /// `--check` needs neither the kernel nor privileges.
    pub fn is_check(&self) -> bool {
        self.mode == Mode::Check
    }
}

/// `--check`: what the configuration says, on one line.
pub fn check(p: &Plan, out: &mut impl Write) -> Result<Outcome, Failure> {
    let c = &p.loaded.cfg;
    let level = ctguard::guard::decide::level_text;
    writeln!(
        out,
        "{}: ok: {} guests{}, high {}, low {}, quota {}, action {:?}, cooldown {}, metrics {}, socket {}{}",
        p.path,
        p.loaded.guests.len(),
        if c.discover {
            format!(
                " and those found on the host every {} (libvirt {}, pve {})",
                humantime::format_duration(c.discover_every),
                c.dirs.libvirt.display(),
                c.dirs.pve.display()
            )
        } else {
            String::new()
        },
        level(c.high),
        level(c.low),
        level(c.default.quota),
        c.default.action,
        humantime::format_duration(c.cooldown),
        c.metrics.map_or("off".into(), |a| a.to_string()),
        c.socket.as_ref().map_or("off".into(), |s| s.display().to_string()),
        if c.dry_run { ", dry run" } else { "" },
    )?;
    Ok(Outcome::Ok)
}

struct Live {
    path: String,
    dry_run: bool,
    netns: Option<String>,
    hup: Sig,
    term: Sig,
    int: Sig,
}

impl Edges for Live {
    async fn signal(&mut self) -> Signal {
        tokio::select! {
            _ = self.hup.recv() => Signal::Reload,
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
        }
    }

    fn reload(&mut self) -> Result<Loaded, LoadError> {
        let l = read(&self.path, self.dry_run)?;
        if l.cfg.netns != self.netns {
            return Err(LoadError::Config(ctguard::guard::config::ConfigError::Invalid {
                path: self.path.clone(),
                line: 1,
                reason: "netns: the guarded namespace changes only at a restart".into(),
            }));
        }
        Ok(l)
    }
}

fn sd_notify(n: Notify) {
    use sd_notify::NotifyState;
    let r = match n {
        Notify::Ready => sd_notify::notify(&[NotifyState::Ready]),
        Notify::Reloading => match NotifyState::monotonic_usec_now() {
            Ok(now) => sd_notify::notify(&[NotifyState::Reloading, now]),
            Err(e) => Err(e),
        },
        Notify::Stopping => sd_notify::notify(&[NotifyState::Stopping]),
    };
    if let Err(e) = r {
        eprintln!("ctguard: guard: sd_notify: {e}");
    }
}

/// Runs the guard (in the namespace `cli::run` entered), or lifts caps.
pub fn run(p: Plan, out: &mut impl Write) -> Result<Outcome, Failure> {
    let fail = |e: daemon::Error| Failure::Message(format!("guard: {e}"));
    match &p.mode {
        Mode::Check => return check(&p, out),
        Mode::Uncap(which) => {
            let lifted = daemon::uncap(which.as_deref())
                .map_err(|e| Failure::Message(format!("--uncap: {e}")))?;
            for name in &lifted {
                writeln!(out, "uncapped {name}")?;
            }
            if lifted.is_empty() {
                let which = which.as_deref().map_or("all".into(), ctguard::guests::escaped);
                eprintln!("ctguard: --uncap {which}: no such cap in table inet ctguard");
            }
            return Ok(if lifted.is_empty() { Outcome::NothingMatched } else { Outcome::Ok });
        }
        Mode::Run => {}
    }
    let rt = live::runtime()?;
    rt.block_on(async {
        let fail_sig =
            |e: std::io::Error| Failure::Message(format!("install signal handlers: {e}"));
        let mut edges = Live {
            path: p.path.clone(),
            dry_run: p.dry_run,
            netns: p.loaded.cfg.netns.clone(),
            hup: signal(SignalKind::hangup()).map_err(fail_sig)?,
            term: signal(SignalKind::terminate()).map_err(fail_sig)?,
            int: signal(SignalKind::interrupt()).map_err(fail_sig)?,
        };
        daemon::run(p.loaded, &mut edges, &sd_notify).await.map_err(fail)
    })?;
    Ok(Outcome::Ok)
}
