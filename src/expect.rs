//! Expectations (`conntrack -L expect`): the kernel's promise to a helper (FTP, SIP, ...) that
//! a connection matching a tuple under a mask will be RELATED to a master flow.
//!
//! An [`Expectation`] is what one `IPCTNL_MSG_EXP_NEW` message of a dump says, decoded by
//! `ctnetlink`. Selecting reuses the flow [`Selector`]: [`Expectation::as_flow`] gives the
//! flow a selector sees (the expected tuple as the original direction, the zone), and
//! [`check_selector`] refuses the criteria that mean nothing for an expectation.

use crate::flow::{Family, Flow, HelperName, Proto, Tuple};
use crate::select::Selector;

/// `NF_CT_EXPECT_*` flag bits (include/uapi/linux/netfilter/nf_conntrack_common.h), with the
/// names `conntrack -L expect` prints, in its order.
pub const FLAG_NAMES: [(u32, &str); 3] =
    [(1 << 0, "PERMANENT"), (1 << 1, "INACTIVE"), (1 << 2, "USERSPACE")];

/// One expectation, as a dump reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// Address family (`nfgen_family`).
    pub family: Family,
    /// Layer-4 protocol of the expected connection.
    pub proto: Proto,
    /// The expected connection's original tuple (`CTA_EXPECT_TUPLE`); a masked-out field is 0.
    pub tuple: Tuple,
    /// Which bits of the tuple must match (`CTA_EXPECT_MASK`): the source part (addresses and
    /// source port) as the kernel keeps it; the kernel sends the destination part as all ones.
    pub mask: Tuple,
    /// Protocol number the kernel put in the mask (that of the tuple).
    pub mask_proto: Proto,
    /// The master flow's original tuple (`CTA_EXPECT_MASTER`).
    pub master: Tuple,
    /// The master flow's protocol (TCP for FTP, UDP for TFTP or SIP over UDP).
    pub master_proto: Proto,
    /// Seconds left (`CTA_EXPECT_TIMEOUT`).
    pub timeout: Option<u32>,
    /// The kernel's id (`CTA_EXPECT_ID`): a delete carrying it removes only this expectation.
    pub id: Option<u32>,
    /// The helper that made it (`CTA_EXPECT_HELP_NAME`).
    pub helper: Option<HelperName>,
    /// Zone of the master (`CTA_EXPECT_ZONE`). Kernels up to 6.18 at least never send it in a
    /// dump (`ctnetlink_exp_dump_expect` has no zone), so it is `None` even for an
    /// expectation of a zoned master.
    pub zone: Option<u16>,
    /// `NF_CT_EXPECT_*` bits (`CTA_EXPECT_FLAGS`).
    pub flags: Option<u32>,
    /// The helper's expectation class (`CTA_EXPECT_CLASS`).
    pub class: Option<u32>,
    /// The NAT the expected connection will get (`CTA_EXPECT_NAT`).
    pub nat: Option<ExpectNat>,
    /// The kernel function run when it is met (`CTA_EXPECT_FN`, e.g. `nat-follow-master`).
    pub function: Option<String>,
}

/// `CTA_EXPECT_NAT`: where the expected connection is mapped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectNat {
    /// `CTA_EXPECT_NAT_DIR`: 0 original, 1 reply.
    pub dir: u32,
    /// Protocol number of the NAT tuple.
    pub proto: Proto,
    /// `CTA_EXPECT_NAT_TUPLE`: the saved address and port are its source.
    pub tuple: Tuple,
}

impl Default for Expectation {
    fn default() -> Self {
        Expectation {
            family: Family::Ipv4,
            proto: Proto(0),
            tuple: Tuple::default(),
            mask: Tuple::default(),
            mask_proto: Proto(0),
            master: Tuple::default(),
            master_proto: Proto(0),
            timeout: None,
            id: None,
            helper: None,
            zone: None,
            flags: None,
            class: None,
            nat: None,
            function: None,
        }
    }
}

impl Expectation {
    /// The flow a [`Selector`] sees for this expectation: its family and protocol, the
    /// expected tuple as the original direction, its zone and helper. Nothing else is set.
    pub fn as_flow(&self) -> Flow {
        Flow {
            family: self.family,
            proto: self.proto,
            orig: self.tuple,
            zone: self.zone,
            helper: self.helper,
            timeout: self.timeout,
            id: self.id,
            ..Flow::default()
        }
    }

    /// The names of the set flag bits, in `conntrack`'s order (unknown bits are not named).
    pub fn flag_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        let flags = self.flags.unwrap_or(0);
        FLAG_NAMES.iter().filter(move |(bit, _)| flags & bit != 0).map(|(_, name)| *name)
    }
}

/// What an expectation selection may use: the expected tuple's addresses (`-s`, `-d`, CIDRs),
/// protocol (`-p`), ports (`--sport`, `--dport`) and the family (`-f`). Anything else is
/// refused with the flag's name: an expectation has no reply direction, state, status, mark,
/// NAT binding, guest owner or idle time, and the kernel does not report its zone (`conntrack -L expect`
/// itself takes only `-f`).
pub fn check_selector(sel: &Selector) -> Result<(), String> {
    let refused = [
        ("--reply-src", !sel.reply_src.is_empty()),
        ("--reply-dst", !sel.reply_dst.is_empty()),
        ("--guest", sel.guests.is_some()),
        ("--state", !sel.states.is_empty()),
        ("--status", sel.status_set != 0 || sel.status_clear != 0),
        ("--mark", sel.mark.is_some()),
        ("--zone", sel.zone.is_some()),
        ("--orig-zone", sel.orig_zone.is_some()),
        ("--reply-zone", sel.reply_zone.is_some()),
        ("--src-nat", sel.nat.src.is_some()),
        ("--dst-nat", sel.nat.dst.is_some()),
        ("--any-nat", sel.nat.either.is_some()),
        ("--idle", sel.idle_min.is_some()),
        ("--timeout-below", sel.timeout_below.is_some()),
        ("--except", !sel.except.is_empty()),
        ("--label", sel.labels != 0),
    ];
    // What is left once the criteria expectations have are taken out: a selector added later
    // and not named above is refused too, never silently ignored.
    let rest = Selector {
        src: Vec::new(),
        dst: Vec::new(),
        protos: Vec::new(),
        sport: Vec::new(),
        dport: Vec::new(),
        family: None,
        ..sel.clone()
    };
    let named = refused.iter().find(|(_, given)| *given).map(|(flag, _)| *flag);
    match named.or((!rest.is_empty()).then_some("this selection")) {
        Some(flag) => Err(format!(
            "{flag} does not apply to expectations (--expect selects by -s, -d, -p, --sport, \
             --dport, -f)"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_12_an_expectation_is_selected_on_its_expected_tuple() {
        let mut e = Expectation {
            family: Family::Ipv4,
            proto: Proto::TCP,
            tuple: Tuple {
                src: "10.0.0.1".parse().expect("ip"),
                dst: "10.0.0.2".parse().expect("ip"),
                l4: crate::flow::L4::Ports { src: 0, dst: 50000 },
                zone: None,
            },
            ..Expectation::default()
        };
        let sel = |src: &str, dport: u16| Selector {
            src: vec![src.parse().expect("cidr")],
            dport: vec![crate::select::parse_port_range(&dport.to_string()).expect("port")],
            ..Selector::default()
        };
        assert!(sel("10.0.0.0/24", 50000).matches(&e.as_flow()));
        assert!(!sel("10.0.0.0/24", 50001).matches(&e.as_flow()));
        assert!(!sel("10.0.1.0/24", 50000).matches(&e.as_flow()));
        e.flags = Some(0b101);
        assert_eq!(e.flag_names().collect::<Vec<_>>(), ["PERMANENT", "USERSPACE"]);
    }

    #[test]
    fn issue_12_criteria_without_meaning_for_expectations_are_refused() {
        assert!(check_selector(&Selector::default()).is_ok());
        let marked = Selector { mark: Some((1, u32::MAX)), ..Selector::default() };
        let e = check_selector(&marked).expect_err("refused");
        assert!(e.starts_with("--mark does not apply to expectations"), "{e}");
    }
}
