//! Guests found on the host for the commands that name guests: `--guest NAME` for a name no
//! guest file holds, `--by guest` without a guest file, and the owners `top`, `watch`,
//! `doctor` and `evict` print. The plan (before any namespace is entered) leaves those names
//! [`Pending`]; the run, inside the namespace and before anything is touched, discovers once
//! ([`ctguard::discover::host`]) and resolves them. A name found nowhere is still a one-line
//! refusal, exit 2.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use ctguard::discover::host::{self, Dirs};
use ctguard::discover::{libvirt, proxmox};
use ctguard::guests::GuestMap;
use ctguard::rtnl;
use ctguard::select::Selector;

use super::exit::Failure;

/// `--libvirt-dir`, `--pve-dir`: where the hypervisors' records are read.
#[derive(Debug, Args, Clone)]
pub struct DirsArgs {
    /// libvirt's live domain XML, which names guests by their interface and MAC.
    #[arg(long, value_name = "DIR", default_value = libvirt::DEFAULT_DIR)]
    pub libvirt_dir: PathBuf,
    /// Proxmox VE's configuration (`qemu-server/`, `lxc/`), which names `tap<VMID>i<N>` and
    /// `veth<VMID>i<N>`.
    #[arg(long, value_name = "DIR", default_value = proxmox::DEFAULT_DIR)]
    pub pve_dir: PathBuf,
}

impl Default for DirsArgs {
    fn default() -> DirsArgs {
        let dirs = Dirs::default();
        DirsArgs { libvirt_dir: dirs.libvirt, pve_dir: dirs.pve }
    }
}

impl DirsArgs {
    /// The directories.
    pub fn dirs(&self) -> Dirs {
        Dirs { libvirt: self.libvirt_dir.clone(), pve: self.pve_dir.clone() }
    }
}

/// `--no-discover` and the record directories: where guest names come from besides
/// `--guests`.
#[derive(Debug, Args, Clone, Default)]
pub struct DiscoverArgs {
    /// Name guests from the --guests file only: no look at the host's interfaces, neighbour
    /// tables and hypervisor records.
    #[arg(long)]
    pub no_discover: bool,
    #[command(flatten)]
    pub dirs: DirsArgs,
}

impl DiscoverArgs {
    /// The record directories, or `None` with `--no-discover`.
    pub fn dirs(&self) -> Option<Dirs> {
        (!self.no_discover).then(|| self.dirs.dirs())
    }

    /// The flags as given, for a command line another command prints (doctor's evict): the
    /// directories only when they are not the defaults.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = Vec::new();
        let dirs = Dirs::default();
        if self.no_discover {
            argv.push("--no-discover".into());
            return argv;
        }
        if self.dirs.libvirt_dir != dirs.libvirt {
            argv.extend(["--libvirt-dir".into(), self.dirs.libvirt_dir.to_string_lossy().into()]);
        }
        if self.dirs.pve_dir != dirs.pve {
            argv.extend(["--pve-dir".into(), self.dirs.pve_dir.to_string_lossy().into()]);
        }
        argv
    }
}

/// What discovery is left to do at run time.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    /// Where to look; `None`: `--no-discover`, nothing to do.
    dirs: Option<Dirs>,
    /// `--guest` names neither the guest file nor an address: the host must name them.
    names: Vec<String>,
    /// The guest file's path, for the refusal.
    file: Option<String>,
}

impl Pending {
    /// Names to discover, with `dirs` (none when `--no-discover`).
    pub fn new(dirs: Option<Dirs>, names: Vec<String>, file: Option<String>) -> Pending {
        Pending { dirs, names, file }
    }

    /// Discovery is off (`--no-discover`): the guest file alone names guests, at plan time.
    pub fn off(&self) -> bool {
        self.dirs.is_none()
    }

    /// Discovers the host's guests when a `--guest` name waits for them or `owners` (the
    /// command prints owners by guest), joins them onto `guests` (a file's guests keep theirs),
    /// and puts the waiting names' guests into `sel`. Warnings go to stderr; a discovery
    /// failure is one when only owners' names were wanted, a refusal when a name waits.
    pub fn resolve(
        self,
        sel: &mut Selector,
        guests: &mut Arc<GuestMap>,
        owners: bool,
    ) -> Result<(), Failure> {
        let Some(dirs) = self.dirs else { return Ok(()) };
        if self.names.is_empty() && !owners {
            return Ok(());
        }
        let found = match host::discover(guests, &dirs, rtnl::DEFAULT_TIMEOUT) {
            Ok(found) => found,
            Err(e) if self.names.is_empty() => {
                eprintln!("ctguard: warning: guest discovery: {e}");
                return Ok(());
            }
            Err(e) => {
                return Err(Failure::Message(format!(
                    "--guest '{}': guest discovery failed: {e}",
                    self.names[0]
                )));
            }
        };
        for w in &found.warnings {
            eprintln!("ctguard: warning: {w}");
        }
        let map = Arc::new(found.map);
        if let Some(filter) = sel.guests.as_mut() {
            for name in &self.names {
                let Some(id) = map.find(name) else {
                    let name = ctguard::guests::escaped(name);
                    return Err(Failure::Message(match &self.file {
                        Some(f) => format!(
                            "--guest '{name}' is neither a guest in {f}, nor one found on this \
                             host (`ctguard guests`), nor an IP or CIDR"
                        ),
                        None => format!(
                            "--guest '{name}' is no guest found on this host (`ctguard guests` \
                             lists them) and not an IP or CIDR; or name it in --guests FILE"
                        ),
                    }));
                };
                filter.ids.push(id);
            }
            filter.map = Arc::clone(&map);
        }
        *guests = map;
        Ok(())
    }
}
