//! The expectation table (`NFNL_SUBSYS_CTNETLINK_EXP`): `IPCTNL_MSG_EXP_GET` dumps
//! (`conntrack -L expect`) and identity-guarded `IPCTNL_MSG_EXP_DELETE`s (`conntrack -D
//! expect`, plus `CTA_EXPECT_ID`).
//!
//! The table is small (at most `nf_conntrack_expect_max` entries per namespace, 1024 or so),
//! so a dump is read whole, and deletes go one request and one ACK at a time.

use rustc_hash::FxHashSet;

use super::decode::{attrs, be16, be32, decode_tuple, kind};
use super::encode::MsgWriter;
use super::uapi::*;
use super::{Conntrack, Error, Malformed};
use crate::expect::{ExpectNat, Expectation};
use crate::flow::{Family, HelperName, Tuple};

/// Expectations one dump may hand back before it is refused as runaway: far above any
/// `nf_conntrack_expect_max` the kernel allows (it is sized from the hash, 1/256 of it).
const MAX_EXPECTATIONS: usize = 1 << 20;

impl Conntrack {
    /// The expectation table (`conntrack -L expect [-f FAMILY]`), of one family or of all.
    /// Every kernel with ctnetlink has it. An expectation a resumed dump sends twice (same id
    /// and tuple) is kept once.
    pub fn expectations(&mut self, family: Option<Family>) -> Result<Vec<Expectation>, Error> {
        let op = "dump expectation table";
        let mut out = Vec::new();
        let mut seen = FxHashSet::default();
        let mut bad = None;
        self.expectations_raw(family, |payload| {
            if bad.is_some() {
                return;
            }
            let e = match decode_expectation(payload) {
                Ok(e) => e,
                Err(m) => {
                    bad = Some(m);
                    return;
                }
            };
            if out.len() >= MAX_EXPECTATIONS {
                bad = Some(Malformed("more expectations than any kernel table holds"));
                return;
            }
            // A resume whose last entry vanished re-walks its hash bucket (the kernel's
            // ctnetlink_exp_dump_table): the repeat has the same id and tuple.
            if seen.insert((e.id, e.tuple)) {
                out.push(e);
            }
        })?;
        match bad {
            Some(source) => Err(Error::Malformed { op, source }),
            None => Ok(out),
        }
    }

    /// Streams the payload (from `nfgenmsg` on) of every message of an expectation dump, as
    /// the kernel sent it: for recording fixtures. Decode one with [`decode_expectation`].
    pub fn expectations_raw(
        &mut self,
        family: Option<Family>,
        each: impl FnMut(&[u8]),
    ) -> Result<(), Error> {
        let op = "dump expectation table";
        let seq = self.next_seq();
        self.req.clear();
        MsgWriter::begin_in(
            NFNL_SUBSYS_CTNETLINK_EXP,
            &mut self.req,
            IPCTNL_MSG_EXP_GET,
            NLM_F_DUMP,
            seq,
            family.map_or(0, Family::number),
            NFNETLINK_V0,
        )
        .finish();
        self.send_req(op)?;
        self.read_replies(op, seq, true, each)
    }

    /// Deletes one expectation (`conntrack -D expect`), guarded by its id: the kernel finds
    /// the expectation by tuple and zone, and answers ENOENT without deleting when its id is
    /// not `e.id` (the one dumped was replaced by another on the same tuple, or is gone). The
    /// id check in `ctnetlink_del_expect` compares the id a dump reports only since the 2024
    /// fix "use helper function to calculate expect ID"; an older kernel answers ENOENT to
    /// every guarded delete, which leaves everything in place. An expectation without an id
    /// is refused, nothing sent.
    pub fn delete_expectation(&mut self, e: &Expectation) -> Result<(), Error> {
        let op = "delete expectation";
        let Some(id) = e.id else {
            return Err(Error::Malformed { op, source: Malformed("expectation without an id") });
        };
        let seq = self.next_seq();
        self.req.clear();
        delete_request(&mut self.req, seq, e, id);
        self.send_req(op)?;
        self.read_replies(op, seq, false, |_| {})
    }
}

/// `IPCTNL_MSG_EXP_DELETE` of one expectation by its tuple, zone and id, acknowledged.
fn delete_request(buf: &mut Vec<u8>, seq: u32, e: &Expectation, id: u32) {
    let mut w = MsgWriter::begin_in(
        NFNL_SUBSYS_CTNETLINK_EXP,
        buf,
        IPCTNL_MSG_EXP_DELETE,
        NLM_F_ACK,
        seq,
        e.family.number(),
        NFNETLINK_V0,
    );
    w.tuple(CTA_EXPECT_TUPLE, &e.tuple, e.proto);
    if let Some(zone) = e.zone {
        w.be16(CTA_EXPECT_ZONE, zone);
    }
    w.be32(CTA_EXPECT_ID, id);
    w.finish();
}

/// Decodes the payload of an `IPCTNL_MSG_EXP_NEW` message (from `nfgenmsg` on), as
/// `ctnetlink_exp_dump_expect` lays it out.
pub fn decode_expectation(payload: &[u8]) -> Result<Expectation, Malformed> {
    let mut e = Expectation::default();
    let family = *payload.first().ok_or(Malformed("no nfgenmsg"))?;
    e.family = Family::from_number(family);
    let body = payload.get(4..).ok_or(Malformed("short nfgenmsg"))?;
    for nla in attrs(body) {
        let nla = nla?;
        let v = nla.value();
        match kind(&nla) {
            CTA_EXPECT_TUPLE => e.proto = decode_tuple(v, &mut e.tuple)?,
            CTA_EXPECT_MASK => e.mask_proto = decode_tuple(v, &mut e.mask)?,
            CTA_EXPECT_MASTER => e.master_proto = decode_tuple(v, &mut e.master)?,
            CTA_EXPECT_TIMEOUT => e.timeout = Some(be32(v)?),
            CTA_EXPECT_ID => e.id = Some(be32(v)?),
            CTA_EXPECT_HELP_NAME => e.helper = Some(HelperName::new(v)),
            CTA_EXPECT_ZONE => e.zone = Some(be16(v)?),
            CTA_EXPECT_FLAGS => e.flags = Some(be32(v)?),
            CTA_EXPECT_CLASS => e.class = Some(be32(v)?),
            CTA_EXPECT_NAT => e.nat = Some(decode_nat(v)?),
            CTA_EXPECT_FN => {
                let name = v.split(|b| *b == 0).next().unwrap_or(&[]);
                e.function = Some(String::from_utf8_lossy(name).into_owned());
            }
            // Attributes a later kernel adds are not needed to list or delete.
            _ => {}
        }
    }
    Ok(e)
}

fn decode_nat(v: &[u8]) -> Result<ExpectNat, Malformed> {
    let mut nat = ExpectNat { dir: 0, proto: crate::flow::Proto(0), tuple: Tuple::default() };
    for a in attrs(v) {
        let a = a?;
        match kind(&a) {
            CTA_EXPECT_NAT_DIR => nat.dir = be32(a.value())?,
            CTA_EXPECT_NAT_TUPLE => nat.proto = decode_tuple(a.value(), &mut nat.tuple)?,
            _ => {}
        }
    }
    Ok(nat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::L4;

    #[test]
    fn issue_12_truncated_expectations_are_errors_not_panics() {
        assert!(decode_expectation(&[]).is_err());
        // CTA_EXPECT_TIMEOUT claiming 8 bytes with 4 present.
        let bytes = [2u8, 0, 0, 0, 12, 0, 4, 0, 0, 0, 1, 0];
        assert!(decode_expectation(&bytes).is_err());
        // CTA_EXPECT_ID with a 1-byte payload.
        let short = [2u8, 0, 0, 0, 5, 0, 5, 0, 7, 0, 0, 0];
        assert_eq!(decode_expectation(&short), Err(Malformed("short u32")));
    }

    #[test]
    fn issue_12_the_delete_carries_tuple_zone_and_id_in_the_expect_subsystem() {
        let e = Expectation {
            proto: crate::flow::Proto::TCP,
            tuple: Tuple {
                src: "10.0.0.1".parse().expect("ip"),
                dst: "10.0.0.2".parse().expect("ip"),
                l4: L4::Ports { src: 0, dst: 50000 },
                zone: None,
            },
            zone: Some(3),
            id: Some(0xdead_beef),
            ..Expectation::default()
        };
        let mut buf = Vec::new();
        delete_request(&mut buf, 1, &e, 0xdead_beef);
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        assert_eq!(ty, (NFNL_SUBSYS_CTNETLINK_EXP << 8) | IPCTNL_MSG_EXP_DELETE);
        let flags = u16::from_ne_bytes([buf[6], buf[7]]);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK);
        // The same attribute numbers decode back as an expectation.
        let back = decode_expectation(&buf[NLMSG_HDRLEN..]).expect("decodes");
        assert_eq!((back.tuple, back.proto, back.zone, back.id), (e.tuple, e.proto, e.zone, e.id));
    }
}
