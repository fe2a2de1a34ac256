//! Proxmox VE: guests from `<pve-dir>/qemu-server/<VMID>.conf` (`name: …`) and
//! `<pve-dir>/lxc/<VMID>.conf` (`hostname: …`).
//!
//! Proxmox names a VM's NIC `N` `tap<VMID>i<N>` and a container's `veth<VMID>i<N>`; the
//! `netN:` lines give their MACs (`virtio=BC:24:11:…,bridge=vmbr0` for a VM,
//! `name=eth0,…,hwaddr=BC:24:11:…` for a container). Only the current config counts: the
//! file's snapshot sections (`[name]`) and pending changes (`[PENDING]`) are not read. With
//! no name line, the guest is `VM <VMID>` / `CT <VMID>`, as the Proxmox GUI shows it.

use std::path::Path;

use super::{Named, Names, Source};

/// Where Proxmox VE's cluster filesystem is mounted.
pub const DEFAULT_DIR: &str = "/etc/pve";

/// What one `.conf` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    /// The guest's name (`name:` or `hostname:`, else `VM <VMID>` / `CT <VMID>`).
    pub name: String,
    /// Each `netN:` line: N and the MAC, when it has one.
    pub nets: Vec<(u32, Option<String>)>,
}

/// The VMID in a Proxmox interface name: `tap104i0` or `veth104i1` → 104.
pub fn vmid(iface: &str) -> Option<u32> {
    let rest = iface.strip_prefix("tap").or_else(|| iface.strip_prefix("veth"))?;
    let (id, nic) = rest.split_once('i')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(id) && digits(nic)).then(|| id.parse().ok()).flatten()
}

/// Parses one `.conf`; `lxc` says which kind (`hostname:` and `hwaddr=` rather than `name:`
/// and `<model>=`).
pub fn parse(text: &str, vmid: u32, lxc: bool) -> Guest {
    let mut name = None;
    let mut nets = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            break; // a snapshot or [PENDING]: not the running config
        }
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match key.trim() {
            "name" if !lxc => name = Some(value),
            "hostname" if lxc => name = Some(value),
            key => {
                let Some(n) = key.strip_prefix("net").and_then(|n| n.parse().ok()) else {
                    continue;
                };
                let mac = value.split(',').find_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    let is_mac = if lxc { k == "hwaddr" } else { super::parse_mac(v).is_some() };
                    is_mac.then(|| v.to_string())
                });
                nets.push((n, mac));
            }
        }
    }
    let name = match name.filter(|n| !n.is_empty()) {
        Some(name) => name.to_string(),
        None if lxc => format!("CT {vmid}"),
        None => format!("VM {vmid}"),
    };
    Guest { name, nets }
}

/// Reads `<pve_dir>/qemu-server/*.conf` and `<pve_dir>/lxc/*.conf` into `names`.
pub fn read_dir(pve_dir: &Path, names: &mut Names) {
    for (sub, lxc, prefix) in [("qemu-server", false, "tap"), ("lxc", true, "veth")] {
        let dir = pve_dir.join(sub);
        for path in super::files(&dir, ".conf", names).unwrap_or_default() {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            let Ok(vmid) = stem.parse::<u32>() else {
                names.warn(&path, "not <VMID>.conf: not read");
                continue;
            };
            let Some(text) = super::read_text(&path, names) else { continue };
            let guest = parse(&text, vmid, lxc);
            let named = Named { name: guest.name.clone(), source: Source::Proxmox };
            for (n, mac) in &guest.nets {
                let parsed = mac.as_deref().and_then(super::parse_mac);
                if mac.is_some() && parsed.is_none() {
                    names.warn(&path, format!("net{n}: a bad MAC"));
                }
                names.add(Some(&format!("{prefix}{vmid}i{n}")), parsed, &named, &path);
            }
            names.claim(&guest.name, &path);
            names.vmids.entry(vmid).or_insert(guest.name);
        }
    }
}
