//! libvirt's live domain XML: one `<name>.xml` per running domain.
//!
//! The files under `/run/libvirt/qemu` wrap the domain in `<domstatus>`; a bare `<domain>` (the
//! shape of `virsh dumpxml` and `/etc/libvirt/qemu`) is read too. From each domain: its
//! `<name>`, `<uuid>`, and every `<devices><interface>`'s `<target dev=…>` and
//! `<mac address=…>`. When the domain's `<metadata>` carries OpenStack Nova's `<nova:instance>`
//! (namespace `http://openstack.org/xmlns/libvirt/nova/<version>`), its `<nova:name>` names the
//! guest (the domain name is then `instance-0000abcd`).

use std::path::Path;

use super::{Named, Names, Source};

/// Where libvirt's QEMU driver keeps the live domain XML.
pub const DEFAULT_DIR: &str = "/run/libvirt/qemu";

/// Nova's metadata namespace, without its version.
const NOVA_NS: &str = "http://openstack.org/xmlns/libvirt/nova/";

/// One domain as its XML describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// `<name>`.
    pub name: String,
    /// `<uuid>`, when present.
    pub uuid: Option<String>,
    /// `<nova:name>`, when present.
    pub nova_name: Option<String>,
    /// Each `<interface>`: its target dev (absent before the guest starts) and MAC.
    pub interfaces: Vec<(Option<String>, Option<String>)>,
}

impl Domain {
    /// The guest's name and its source: Nova's name when present, else the domain name.
    pub fn named(&self) -> Named {
        match &self.nova_name {
            Some(name) => Named { name: name.clone(), source: Source::Nova },
            None => Named { name: self.name.clone(), source: Source::Libvirt },
        }
    }
}

/// Parses one domain XML document (`<domstatus>` or `<domain>`); the error says why not.
pub fn parse(text: &str) -> Result<Domain, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    let domain = match root.tag_name().name() {
        "domain" => root,
        "domstatus" => child(root, "domain").ok_or("<domstatus> without a <domain>")?,
        other => return Err(format!("<{other}>: not a libvirt domain")),
    };
    let name = child(domain, "name")
        .and_then(|n| n.text())
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or("a <domain> without a <name>")?
        .to_string();
    let uuid = child(domain, "uuid").and_then(|n| n.text()).map(|u| u.trim().to_string());
    let nova_name = child(domain, "metadata")
        .into_iter()
        .flat_map(|m| m.children())
        .filter(|n| is_nova(*n, "instance"))
        .flat_map(|i| i.children())
        .find(|n| is_nova(*n, "name"))
        .and_then(|n| n.text())
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let interfaces = child(domain, "devices")
        .into_iter()
        .flat_map(|d| d.children())
        .filter(|n| n.has_tag_name("interface"))
        .map(|i| {
            let attr =
                |tag, name| child(i, tag).and_then(|n| n.attribute(name)).map(str::to_string);
            (attr("target", "dev"), attr("mac", "address"))
        })
        .collect();
    Ok(Domain { name, uuid, nova_name, interfaces })
}

/// Reads every `*.xml` in `dir` into `names` (see the [module](super) doc for the bounds).
pub fn read_dir(dir: &Path, names: &mut Names) {
    for path in super::files(dir, ".xml", names).unwrap_or_default() {
        let Some(text) = super::read_text(&path, names) else { continue };
        let domain = match parse(&text) {
            Ok(domain) => domain,
            Err(reason) => {
                names.warn(&path, reason);
                continue;
            }
        };
        let named = domain.named();
        for (dev, mac) in &domain.interfaces {
            let parsed = mac.as_deref().and_then(super::parse_mac);
            if mac.is_some() && parsed.is_none() {
                names.warn(&path, format!("{}: a bad <mac address>", domain.name));
            }
            names.add(dev.as_deref(), parsed, &named, &path);
        }
    }
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|n| n.has_tag_name(tag))
}

fn is_nova(node: roxmltree::Node<'_, '_>, tag: &str) -> bool {
    let name = node.tag_name();
    name.name() == tag && name.namespace().is_some_and(|ns| ns.starts_with(NOVA_NS))
}
