//! Guest names from the hypervisor's own records (issue 14.2): small readers over files.
//!
//! Each reader takes its directory as a parameter (the default is the hypervisor's own:
//! [`libvirt::DEFAULT_DIR`], [`proxmox::DEFAULT_DIR`]) and fills a [`Names`]: interface →
//! guest name and MAC → guest name, each with the record it came from ([`Source`]), plus
//! warnings. A file that cannot be read or parsed is a warning naming the file, never an
//! error: the reader goes on with the rest.
//!
//! Bounds: a file over [`MAX_FILE`] bytes is not read past the limit (a warning), and a
//! directory yields at most [`MAX_FILES`] entries. Symlinks: the directory given is opened as
//! given (on a Proxmox host `/etc/pve/qemu-server` is itself a symlink into
//! `nodes/<node>/`), but an entry inside it that is a symlink, or anything but a regular file,
//! is skipped with a warning, and files are opened with `O_NOFOLLOW`, so a record can never
//! make ctguard read a file outside the directory.
//!
//! # Precedence
//!
//! [`resolve`] names one guest interface, in this order:
//! 1. a `--guests` file, for the addresses it names;
//! 2. libvirt: OpenStack Nova's `<nova:name>` when the domain carries it, else the domain name;
//! 3. Proxmox VE: the `name:` (qemu) or `hostname:` (lxc) of the VMID in `tap<VMID>i<N>` /
//!    `veth<VMID>i<N>`;
//! 4. the interface's alias (`IFLA_IFALIAS`);
//! 5. the interface's name.
//!
//! Within the hypervisor records, the interface name is looked up before the MAC.

pub mod host;
pub mod libvirt;
pub mod proxmox;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::guests::GuestMap;

/// The most bytes read from one record file.
pub const MAX_FILE: u64 = 4 << 20;
/// The most directory entries looked at in one directory.
pub const MAX_FILES: usize = 4096;

/// Where a guest's name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// A `--guests` file.
    GuestsFile,
    /// A libvirt domain's `<name>`.
    Libvirt,
    /// OpenStack Nova's `<nova:name>` in a libvirt domain's metadata.
    Nova,
    /// A Proxmox VE guest's `.conf`.
    Proxmox,
    /// The interface's alias.
    Alias,
    /// The interface's own name.
    Interface,
}

impl Source {
    /// The word `guests` prints: `guests-file`, `libvirt`, `nova`, `proxmox`, `alias`, `ifname`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::GuestsFile => "guests-file",
            Source::Libvirt => "libvirt",
            Source::Nova => "nova",
            Source::Proxmox => "proxmox",
            Source::Alias => "alias",
            Source::Interface => "ifname",
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A guest's name and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The guest's name.
    pub name: String,
    /// The record that named it.
    pub source: Source,
}

/// A record file that was skipped or only partly used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file (or directory).
    pub path: PathBuf,
    /// What was wrong.
    pub reason: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// What the hypervisor's records say: interface → guest, MAC → guest, and the warnings.
#[derive(Debug, Clone, Default)]
pub struct Names {
    ifaces: HashMap<String, Named>,
    macs: HashMap<[u8; 6], Named>,
    /// Proxmox VMID → guest name, for `tap<VMID>i<N>` / `veth<VMID>i<N>` the conf has no line for.
    vmids: HashMap<u32, String>,
    /// Name → the record file that gave it: a name two records give is two guests.
    records: HashMap<String, PathBuf>,
    /// Names two records give (two tenants may pick one display name): they name nobody,
    /// their interfaces are named by themselves, so that one guest's relief never hits another.
    contested: HashSet<String>,
    /// The files skipped, in the order they were met.
    pub warnings: Vec<Warning>,
}

impl Names {
    /// Nothing known.
    pub fn new() -> Names {
        Names::default()
    }

    /// Reads both hypervisors' records: libvirt from `libvirt_dir`, then Proxmox from `pve_dir`
    /// (an earlier record keeps an interface or MAC a later one names too). A directory that does
    /// not exist is no warning (that hypervisor is not on this host).
    pub fn discover(libvirt_dir: &Path, pve_dir: &Path) -> Names {
        let mut names = Names::new();
        libvirt::read_dir(libvirt_dir, &mut names);
        proxmox::read_dir(pve_dir, &mut names);
        names
    }

    /// The guest behind interface `iface`, by its name (libvirt's target dev, a Proxmox
    /// `tap`/`veth` name).
    pub fn by_iface(&self, iface: &str) -> Option<Named> {
        if let Some(named) = self.ifaces.get(iface) {
            return self.uncontested(named).cloned();
        }
        let vmid = proxmox::vmid(iface)?;
        let name = self.vmids.get(&vmid)?;
        let named = Named { name: name.clone(), source: Source::Proxmox };
        self.uncontested(&named).is_some().then_some(named)
    }

    /// The guest whose interface has MAC `mac` (`52:54:00:12:34:56`, any case).
    pub fn by_mac(&self, mac: &str) -> Option<&Named> {
        self.uncontested(self.macs.get(&parse_mac(mac)?)?)
    }

    fn uncontested<'a>(&self, named: &'a Named) -> Option<&'a Named> {
        (!self.contested.contains(&named.name)).then_some(named)
    }

    /// Notes that the record at `path` gives `name`; a second record giving it contests it.
    fn claim(&mut self, name: &str, path: &Path) {
        match self.records.get(name) {
            Some(first) if first != path => {
                if self.contested.insert(name.to_string()) {
                    let reason = format!(
                        "'{}' also names the guest of {}: two guests, each named by its interface",
                        crate::guests::escaped(name),
                        first.display()
                    );
                    self.warn(path, reason);
                }
            }
            Some(_) => {}
            None => {
                self.records.insert(name.to_string(), path.to_path_buf());
            }
        }
    }

    /// How many interfaces the records name.
    pub fn iface_count(&self) -> usize {
        self.ifaces.len()
    }

    /// How many MACs the records name.
    pub fn mac_count(&self) -> usize {
        self.macs.len()
    }

    pub(crate) fn add(
        &mut self,
        iface: Option<&str>,
        mac: Option<[u8; 6]>,
        named: &Named,
        path: &Path,
    ) {
        self.claim(&named.name, path);
        if let Some(iface) = iface.filter(|i| !i.is_empty()) {
            self.ifaces.entry(iface.to_string()).or_insert_with(|| named.clone());
        }
        if let Some(mac) = mac {
            self.macs.entry(mac).or_insert_with(|| named.clone());
        }
    }

    fn warn(&mut self, path: &Path, reason: impl Into<String>) {
        self.warnings.push(Warning { path: path.to_path_buf(), reason: reason.into() });
    }
}

/// Names one guest interface by the [precedence](self#precedence): `guests` (a `--guests`
/// file) for any of `addrs`, then the hypervisor records by `iface` then `mac`, then `alias`,
/// then `iface` itself.
pub fn resolve(
    guests: Option<&GuestMap>,
    addrs: &[IpAddr],
    names: &Names,
    iface: &str,
    alias: Option<&str>,
    mac: Option<&str>,
) -> Named {
    if let Some(map) = guests
        && let Some(id) = addrs.iter().find_map(|a| map.lookup(*a))
    {
        return Named { name: map.name(id).to_string(), source: Source::GuestsFile };
    }
    if let Some(named) =
        names.by_iface(iface).or_else(|| mac.and_then(|m| names.by_mac(m).cloned()))
    {
        return named;
    }
    match alias.map(str::trim).filter(|a| !a.is_empty()) {
        Some(alias) => Named { name: alias.to_string(), source: Source::Alias },
        None => Named { name: iface.to_string(), source: Source::Interface },
    }
}

/// `aa:bb:cc:dd:ee:ff` (any case; `-` also separates) → its six bytes.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.trim().split([':', '-']);
    for byte in &mut out {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The regular files of `dir` whose name ends in `suffix`, sorted; symlinks and other
/// non-regular entries are warnings, at most [`MAX_FILES`] entries are looked at. `None` when
/// `dir` does not exist.
fn files(dir: &Path, suffix: &str, names: &mut Names) -> Option<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            names.warn(dir, e.to_string());
            return None;
        }
    };
    let mut out = Vec::new();
    for (seen, entry) in entries.enumerate() {
        if seen == MAX_FILES {
            names.warn(dir, format!("more than {MAX_FILES} entries: the rest not read"));
            break;
        }
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                names.warn(dir, e.to_string());
                continue;
            }
        };
        let path = entry.path();
        if !entry.file_name().to_string_lossy().ends_with(suffix) {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_file() => out.push(path),
            Ok(t) if t.is_symlink() => names.warn(&path, "a symlink: not followed"),
            Ok(_) => names.warn(&path, "not a regular file: not read"),
            Err(e) => names.warn(&path, e.to_string()),
        }
    }
    out.sort();
    Some(out)
}

/// The text of a record file, at most [`MAX_FILE`] bytes, opened without following a symlink;
/// `None` (and a warning) when it cannot be read, is too large or is not UTF-8.
fn read_text(path: &Path, names: &mut Names) -> Option<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let file = match opened.and_then(|f| f.metadata().map(|m| (f, m))) {
        Ok((file, meta)) if meta.is_file() => file,
        Ok(_) => {
            names.warn(path, "not a regular file: not read");
            return None;
        }
        Err(e) => {
            names.warn(path, e.to_string());
            return None;
        }
    };
    let bytes = match crate::bounded::read_at_most(file, MAX_FILE) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            names.warn(path, format!("larger than {} MiB: not read", MAX_FILE >> 20));
            return None;
        }
        Err(e) => {
            names.warn(path, e.to_string());
            return None;
        }
    };
    match String::from_utf8(bytes) {
        Ok(text) => Some(text),
        Err(_) => {
            names.warn(path, "not UTF-8 text");
            None
        }
    }
}
