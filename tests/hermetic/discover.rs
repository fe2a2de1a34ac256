//! Issue 14.2: guest names from the hypervisor's records (libvirt domain XML, OpenStack Nova's
//! metadata, Proxmox VE configs) over the fixtures in `tests/fixtures/discover`; malformed,
//! huge, binary and symlinked files are warnings, never failures.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ctguard::GuestMap;
use ctguard::discover::{self, Named, Names, Source, libvirt, proxmox};

fn fixtures(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/discover").join(sub)
}

fn named(name: &str, source: Source) -> Named {
    Named { name: name.to_string(), source }
}

/// A scratch directory holding a copy of the fixture directory `sub`.
fn copy_of(sub: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures(sub)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn no_proxmox() -> PathBuf {
    fixtures("no-such-dir")
}

#[test]
fn issue_14_libvirt_plain_kvm_guest() {
    let domain =
        libvirt::parse(&std::fs::read_to_string(fixtures("libvirt/web-1.xml")).unwrap()).unwrap();
    assert_eq!(domain.name, "web-1");
    assert_eq!(domain.uuid.as_deref(), Some("6d1c3e2a-8f4b-4c1d-9a7e-2b5f0c9d1e41"));
    assert_eq!(domain.nova_name, None);
    assert_eq!(domain.interfaces, vec![(Some("vnet0".into()), Some("52:54:00:3a:9c:01".into()))]);
    assert_eq!(domain.named(), named("web-1", Source::Libvirt));
}

#[test]
fn issue_14_libvirt_nova_instance_in_domstatus() {
    let text = std::fs::read_to_string(fixtures("libvirt/instance-0000002a.xml")).unwrap();
    let domain = libvirt::parse(&text).unwrap();
    assert_eq!(domain.name, "instance-0000002a");
    assert_eq!(domain.uuid.as_deref(), Some("0f3b6a52-1c7e-4f0d-b8a9-5e2d7c41a903"));
    assert_eq!(domain.nova_name.as_deref(), Some("web-7"));
    // The <devices> of <domstatus> (aliases only) is not the domain's.
    assert_eq!(
        domain.interfaces,
        vec![(Some("tap1b2c3d4e-5f".into()), Some("FA:16:3E:5B:0C:2D".into()))]
    );
    assert_eq!(domain.named(), named("web-7", Source::Nova));
    // The same domain bare (the <domain> inside, as `virsh dumpxml` writes it) reads the same.
    let start = text.find("<domain ").unwrap();
    let end = text.find("</domain>").unwrap() + "</domain>".len();
    assert_eq!(libvirt::parse(&text[start..end]).unwrap(), domain);
    // nova:name outside Nova's namespace is not Nova's.
    let foreign = text[start..end].replace("http://openstack.org/xmlns/libvirt/nova/1.1", "urn:x");
    assert_eq!(libvirt::parse(&foreign).unwrap().nova_name, None);
}

#[test]
fn issue_14_libvirt_several_interfaces() {
    let domain =
        libvirt::parse(&std::fs::read_to_string(fixtures("libvirt/db-2.xml")).unwrap()).unwrap();
    let devs: Vec<_> = domain.interfaces.iter().map(|(d, _)| d.as_deref()).collect();
    assert_eq!(devs, [Some("vnet3"), Some("vnet4"), Some("macvtap0"), None]);
    let names = Names::discover(&fixtures("libvirt"), &no_proxmox());
    assert_eq!(names.warnings, []);
    for iface in ["vnet3", "vnet4", "macvtap0"] {
        assert_eq!(names.by_iface(iface), Some(named("db-2", Source::Libvirt)), "{iface}");
    }
    // The hostdev interface has no target dev, but its MAC still names the guest.
    assert_eq!(names.by_mac("52:54:00:7e:11:05"), Some(&named("db-2", Source::Libvirt)));
}

#[test]
fn issue_14_libvirt_directory() {
    let names = Names::discover(&fixtures("libvirt"), &no_proxmox());
    assert_eq!(names.warnings, []);
    assert_eq!(names.iface_count(), 5);
    assert_eq!(names.mac_count(), 6);
    assert_eq!(names.by_iface("vnet0"), Some(named("web-1", Source::Libvirt)));
    assert_eq!(names.by_iface("tap1b2c3d4e-5f"), Some(named("web-7", Source::Nova)));
    // MACs in any case.
    assert_eq!(names.by_mac("fa:16:3e:5b:0c:2d"), Some(&named("web-7", Source::Nova)));
    assert_eq!(names.by_mac("52-54-00-3A-9C-01"), Some(&named("web-1", Source::Libvirt)));
    assert_eq!(names.by_iface("vnet9"), None);
    assert_eq!(names.by_mac("52:54:00:00:00:00"), None);
}

#[test]
fn issue_14_proxmox_qemu_and_lxc() {
    let names = Names::discover(&no_proxmox(), &fixtures("pve"));
    let warned: Vec<_> = names.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        warned,
        [format!(
            "{}: not <VMID>.conf: not read",
            fixtures("pve/qemu-server/notes.conf").display()
        )]
    );
    let vm = named("shop-frontend", Source::Proxmox);
    assert_eq!(names.by_iface("tap104i0"), Some(vm.clone()));
    assert_eq!(names.by_iface("tap104i1"), Some(vm.clone()));
    // A NIC the config does not list (hot-plugged since) still names the VM by its VMID.
    assert_eq!(names.by_iface("tap104i7"), Some(vm.clone()));
    assert_eq!(names.by_mac("bc:24:11:4a:7e:02"), Some(&vm));
    // The snapshot's old name is not the guest's.
    assert_ne!(names.by_iface("tap104i0").unwrap().name, "old-frontend");
    // No name: line: the GUI's "VM 105".
    assert_eq!(names.by_iface("tap105i0"), Some(named("VM 105", Source::Proxmox)));
    let ct = named("mail-relay", Source::Proxmox);
    assert_eq!(names.by_iface("veth201i0"), Some(ct.clone()));
    assert_eq!(names.by_iface("veth201i1"), Some(ct.clone()));
    assert_eq!(names.by_mac("BC:24:11:9D:20:02"), Some(&ct));
    // VMIDs are unique across VMs and containers in a cluster: the VMID fallback ignores the prefix.
    assert_eq!(names.by_iface("veth104i0"), Some(vm));
    assert_eq!(names.by_iface("tap999i0"), None);
    assert_eq!(proxmox::vmid("tap104i0"), Some(104));
    assert_eq!(proxmox::vmid("veth201i12"), Some(201));
    for not in ["tap104", "tapi0", "tap104i", "vnet0", "tap1b2c3d4e-5f", "veth12ab"] {
        assert_eq!(proxmox::vmid(not), None, "{not}");
    }
}

#[test]
fn issue_14_proxmox_conf_parse() {
    let text = std::fs::read_to_string(fixtures("pve/lxc/201.conf")).unwrap();
    let guest = proxmox::parse(&text, 201, true);
    assert_eq!(guest.name, "mail-relay");
    assert_eq!(
        guest.nets,
        vec![(0, Some("BC:24:11:9D:20:01".into())), (1, Some("BC:24:11:9D:20:02".into()))]
    );
    // A container's config read as a VM's has no name: line.
    assert_eq!(proxmox::parse(&text, 201, false).name, "VM 201");
}

#[test]
fn issue_14_malformed_files_are_warnings() {
    let dir = copy_of("libvirt-bad");
    // A file over the cap: valid XML naming a guest, so reading it would show.
    let mut huge = std::fs::read_to_string(fixtures("libvirt/web-1.xml")).unwrap();
    let pad = format!("<!-- {} -->\n", "x".repeat(4 << 20));
    huge = huge.replacen("<domain type='kvm'>", &format!("{pad}<domain type='kvm'>"), 1);
    huge = huge.replace("web-1", "huge").replace("vnet0", "vnet-huge");
    std::fs::write(dir.path().join("huge.xml"), huge).unwrap();
    // A symlink to a valid domain outside the directory: not followed.
    std::os::unix::fs::symlink(fixtures("libvirt/web-1.xml"), dir.path().join("outside.xml"))
        .unwrap();
    // A FIFO (nobody writes it): skipped, not a hang.
    let fifo = dir.path().join("fifo.xml");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    // And one good file among them: read.
    std::fs::copy(fixtures("libvirt/db-2.xml"), dir.path().join("db-2.xml")).unwrap();

    let names = Names::discover(dir.path(), &no_proxmox());
    let mut warned: Vec<_> = names
        .warnings
        .iter()
        .map(|w| (w.path.file_name().unwrap().to_string_lossy().into_owned(), w.reason.clone()))
        .collect();
    warned.sort();
    let files: Vec<_> = warned.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        files,
        [
            "fifo.xml",
            "huge.xml",
            "junk.xml",
            "nameless.xml",
            "network.xml",
            "outside.xml",
            "truncated.xml"
        ],
        "{warned:?}"
    );
    let reason = |f: &str| warned.iter().find(|(w, _)| w == f).unwrap().1.clone();
    assert_eq!(reason("huge.xml"), "larger than 4 MiB: not read");
    assert_eq!(reason("outside.xml"), "a symlink: not followed");
    assert_eq!(reason("fifo.xml"), "not a regular file: not read");
    assert_eq!(reason("junk.xml"), "not UTF-8 text");
    assert_eq!(reason("network.xml"), "<network>: not a libvirt domain");
    assert_eq!(reason("nameless.xml"), "a <domain> without a <name>");
    assert!(reason("truncated.xml").starts_with("not XML: "), "{warned:?}");
    // Every warning names its file.
    for w in &names.warnings {
        assert!(w.to_string().starts_with(&dir.path().display().to_string()), "{w}");
    }
    // The good file was read; nothing of the others was.
    assert_eq!(names.by_iface("vnet3"), Some(named("db-2", Source::Libvirt)));
    for iface in ["vnet0", "vnet-huge", "vnet99"] {
        assert_eq!(names.by_iface(iface), None, "{iface}");
    }
    assert_eq!(names.iface_count(), 3);
}

#[test]
fn issue_14_symlinked_file_inside_is_not_followed_either() {
    // Even a symlink to a sibling is skipped: the check is on the entry, not on where it points.
    let dir = copy_of("libvirt");
    std::os::unix::fs::symlink(dir.path().join("web-1.xml"), dir.path().join("alias.xml")).unwrap();
    let names = Names::discover(dir.path(), &no_proxmox());
    assert_eq!(names.warnings.len(), 1, "{:?}", names.warnings);
    assert_eq!(names.warnings[0].path, dir.path().join("alias.xml"));
    assert_eq!(names.warnings[0].reason, "a symlink: not followed");
    assert_eq!(names.by_iface("vnet0"), Some(named("web-1", Source::Libvirt)));
}

#[test]
fn issue_14_unreadable_directory_is_a_warning_missing_is_nothing() {
    let names = Names::discover(&no_proxmox(), &no_proxmox());
    assert_eq!(names.warnings, []);
    // A file where the directory should be: a warning naming it.
    let file = fixtures("libvirt/web-1.xml");
    let names = Names::discover(&file, &no_proxmox());
    assert_eq!(names.warnings.len(), 1);
    assert_eq!(names.warnings[0].path, file);
}

#[test]
fn issue_14_precedence() {
    let names = Names::discover(&fixtures("libvirt"), &fixtures("pve"));
    let guests = GuestMap::parse("pinned = [\"172.16.3.0/24\"]\n", "guests.toml").unwrap();
    let addr: IpAddr = "172.16.3.5".parse().unwrap();
    let other: IpAddr = "10.9.9.9".parse().unwrap();
    let resolve = |g: Option<&GuestMap>, addrs: &[IpAddr], iface, alias, mac| {
        discover::resolve(g, addrs, &names, iface, alias, mac)
    };
    // 1. The guests file, for the addresses it names; not for others.
    assert_eq!(
        resolve(Some(&guests), &[other, addr], "tap1b2c3d4e-5f", Some("alias"), None),
        named("pinned", Source::GuestsFile)
    );
    assert_eq!(
        resolve(Some(&guests), &[other], "tap1b2c3d4e-5f", Some("alias"), None),
        named("web-7", Source::Nova)
    );
    // 2. libvirt (Nova's name) over the alias; by MAC when the interface name is unknown.
    assert_eq!(resolve(None, &[], "vnet0", Some("alias"), None), named("web-1", Source::Libvirt));
    assert_eq!(
        resolve(None, &[], "renamed0", Some("alias"), Some("fa:16:3e:5b:0c:2d")),
        named("web-7", Source::Nova)
    );
    // 3. Proxmox.
    assert_eq!(
        resolve(None, &[], "tap104i0", Some("alias"), None),
        named("shop-frontend", Source::Proxmox)
    );
    // 4. The alias (blank is none), 5. the name.
    assert_eq!(
        resolve(None, &[addr], "eth7", Some("uplink guest"), None),
        named("uplink guest", Source::Alias)
    );
    assert_eq!(
        resolve(None, &[], "eth7", Some("  "), Some("00:11:22:33:44:55")),
        named("eth7", Source::Interface)
    );
    assert_eq!(
        resolve(None, &[], "eth7", None, Some("not a mac")),
        named("eth7", Source::Interface)
    );
}

#[test]
fn issue_14_parse_mac() {
    assert_eq!(discover::parse_mac("52:54:00:3A:9c:01"), Some([0x52, 0x54, 0, 0x3a, 0x9c, 1]));
    for bad in
        ["", "52:54:00:3a:9c", "52:54:00:3a:9c:01:02", "5:54:00:3a:9c:01", "zz:54:00:3a:9c:01"]
    {
        assert_eq!(discover::parse_mac(bad), None, "{bad}");
    }
}

#[test]
fn issue_14_proxmox_subdirectory_symlink_is_followed() {
    // On a Proxmox host /etc/pve/qemu-server is a symlink to nodes/<node>/qemu-server: the
    // directories are opened as given, only the entries inside them are not followed.
    let pve = tempfile::tempdir().unwrap();
    let node = pve.path().join("nodes/pve1");
    std::fs::create_dir_all(node.join("qemu-server")).unwrap();
    std::fs::copy(fixtures("pve/qemu-server/104.conf"), node.join("qemu-server/104.conf")).unwrap();
    std::os::unix::fs::symlink("nodes/pve1/qemu-server", pve.path().join("qemu-server")).unwrap();
    let names = Names::discover(&no_proxmox(), pve.path());
    assert_eq!(names.warnings, []);
    assert_eq!(names.by_iface("tap104i1"), Some(named("shop-frontend", Source::Proxmox)));
}

#[test]
fn issue_14_directory_entries_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..=discover::MAX_FILES {
        std::fs::write(dir.path().join(format!("{i}.txt")), "").unwrap();
    }
    let names = Names::discover(dir.path(), &no_proxmox());
    let warned: Vec<_> = names.warnings.iter().map(|w| w.to_string()).collect();
    let expected = format!(
        "{}: more than {} entries: the rest not read",
        dir.path().display(),
        discover::MAX_FILES
    );
    assert_eq!(warned, [expected]);
}
