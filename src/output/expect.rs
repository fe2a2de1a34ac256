//! Expectations as `conntrack -L expect` prints them, and as JSON Lines.
//!
//! conntrack-tools 1.4.7 prints each with libnetfilter_conntrack's
//! `src/expect/snprintf_default.c` (1.0.9): every part followed by one blank, the line's last
//! blank removed:
//!
//! ```text
//! timeout? proto=N src= dst= <l4> mask-src= mask-dst= <l4 of the mask>
//! master-src= master-dst= <l4 of the master> zone=? FLAGS? class=? helper=?
//! ```
//!
//! `<l4>` is what a `conntrack -L` tuple prints for the tuple's protocol (`sport= dport=`,
//! `type= code= id=`, GRE keys, or nothing). `FLAGS` are `PERMANENT`, `INACTIVE`, `USERSPACE`
//! joined by commas; when the flags word is not 0 one more blank follows (so unnamed bits
//! alone leave two blanks). NAT and the expect function are not printed (`-o` has no option
//! for them); the JSON has them.

use std::io::{self, Write};

use serde::Serialize;

use super::conntrack::{write_addr, write_l4, write_u64};
use super::json::{FamilyName, TupleRecord};
use crate::expect::Expectation;
use crate::flow::{Family, HelperName, Proto, Tuple};

/// Writes `e` as one `conntrack -L expect` line, with the trailing newline.
pub fn write_line(out: &mut impl Write, e: &Expectation) -> io::Result<()> {
    // Parts are written with a leading blank; the first blank is dropped at the end.
    let mut line = Vec::with_capacity(256);
    if let Some(t) = e.timeout {
        line.push(b' ');
        write_u64(&mut line, u64::from(t))?;
    }
    line.extend_from_slice(b" proto=");
    write_u64(&mut line, u64::from(e.proto.0))?;
    write_tuple(&mut line, e.family, e.proto, &e.tuple, b" src=", b" dst=")?;
    write_tuple(&mut line, e.family, e.mask_proto, &e.mask, b" mask-src=", b" mask-dst=")?;
    write_tuple(&mut line, e.family, e.master_proto, &e.master, b" master-src=", b" master-dst=")?;
    if let Some(zone) = e.zone {
        line.extend_from_slice(b" zone=");
        write_u64(&mut line, u64::from(zone))?;
    }
    let mut names = e.flag_names().peekable();
    if names.peek().is_some() {
        line.push(b' ');
        for (i, name) in names.enumerate() {
            if i > 0 {
                line.push(b',');
            }
            line.extend_from_slice(name.as_bytes());
        }
    }
    if e.flags.is_some_and(|f| f != 0) && e.flag_names().next().is_none() {
        // The C prints "FLAGS " after the flag names; with none named only that blank is left.
        line.push(b' ');
    }
    if let Some(class) = e.class {
        line.extend_from_slice(b" class=");
        write_u64(&mut line, u64::from(class))?;
    }
    if let Some(helper) = &e.helper {
        line.extend_from_slice(b" helper=");
        line.extend_from_slice(helper.as_str().as_bytes());
    }
    line.push(b'\n');
    out.write_all(line.strip_prefix(b" ").unwrap_or(&line))
}

/// Addresses (only for IPv4 and IPv6, as the library does) and the layer-4 fields.
fn write_tuple(
    out: &mut Vec<u8>,
    family: Family,
    proto: Proto,
    t: &Tuple,
    src_tag: &[u8],
    dst_tag: &[u8],
) -> io::Result<()> {
    if matches!(family, Family::Ipv4 | Family::Ipv6) {
        out.extend_from_slice(src_tag);
        write_addr(out, t.src)?;
        out.extend_from_slice(dst_tag);
        write_addr(out, t.dst)?;
    }
    write_l4(out, proto, t.l4)
}

/// One expectation as a JSON object (`list --expect --json`); schema in docs/json-schema.md.
#[derive(Debug, Serialize)]
pub struct ExpectRecord {
    /// `ipv4`, `ipv6`, `unknown(N)`.
    pub family: String,
    /// Protocol name of the expected connection, or `unknown`.
    pub proto: &'static str,
    /// Its protocol number.
    pub proto_num: u8,
    /// The expected connection's original tuple.
    pub tuple: TupleRecord,
    /// The mask over it.
    pub mask: TupleRecord,
    /// The master flow's original tuple.
    pub master: TupleRecord,
    /// The master flow's protocol name.
    pub master_proto: &'static str,
    /// Seconds left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    /// `CTA_EXPECT_ID`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// Zone, when not 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<u16>,
    /// Named flag bits.
    pub flags: Vec<&'static str>,
    /// The helper's expectation class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<u32>,
    /// The helper.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helper: Option<String>,
    /// NAT of the expected connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat: Option<NatRecord>,
    /// The expect function.
    #[serde(rename = "fn", skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
}

/// `CTA_EXPECT_NAT`.
#[derive(Debug, Serialize)]
pub struct NatRecord {
    /// `orig` or `reply`.
    pub dir: &'static str,
    /// Where the expected connection is mapped (its source part).
    pub tuple: TupleRecord,
}

impl From<&Expectation> for ExpectRecord {
    fn from(e: &Expectation) -> Self {
        ExpectRecord {
            family: FamilyName(e.family).to_string(),
            proto: e.proto.name(),
            proto_num: e.proto.0,
            tuple: TupleRecord::from(&e.tuple),
            mask: TupleRecord::from(&e.mask),
            master: TupleRecord::from(&e.master),
            master_proto: e.master_proto.name(),
            timeout: e.timeout,
            id: e.id,
            zone: e.zone,
            flags: e.flag_names().collect(),
            class: e.class,
            helper: e.helper.as_ref().map(HelperName::as_str).map(Into::into),
            nat: e.nat.map(|n| NatRecord {
                dir: if n.dir == 0 { "orig" } else { "reply" },
                tuple: TupleRecord::from(&n.tuple),
            }),
            function: e.function.clone(),
        }
    }
}

/// Writes `e` as one JSON line.
pub fn write_json(out: &mut impl Write, e: &Expectation) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &ExpectRecord::from(e))?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::L4;

    fn ftp() -> Expectation {
        let lo = "127.0.0.1".parse().expect("ip");
        let ones = "255.255.255.255".parse().expect("ip");
        Expectation {
            proto: Proto::TCP,
            tuple: Tuple { src: lo, dst: lo, l4: L4::Ports { src: 0, dst: 50000 }, zone: None },
            mask: Tuple { src: ones, dst: ones, l4: L4::Ports { src: 0, dst: 65535 }, zone: None },
            mask_proto: Proto::TCP,
            master: Tuple { src: lo, dst: lo, l4: L4::Ports { src: 40994, dst: 21 }, zone: None },
            master_proto: Proto::TCP,
            timeout: Some(299),
            id: Some(7),
            helper: Some(HelperName::new(b"ftp\0")),
            flags: Some(0),
            class: Some(0),
            ..Expectation::default()
        }
    }

    fn line(e: &Expectation) -> String {
        let mut v = Vec::new();
        write_line(&mut v, e).expect("write");
        String::from_utf8(v).expect("utf8")
    }

    /// The line `conntrack -L expect` printed for an FTP PASV expectation on 6.18.44.
    #[test]
    fn issue_12_an_ftp_expectation_prints_like_conntrack() {
        assert_eq!(
            line(&ftp()),
            "299 proto=6 src=127.0.0.1 dst=127.0.0.1 sport=0 dport=50000 \
             mask-src=255.255.255.255 mask-dst=255.255.255.255 sport=0 dport=65535 \
             master-src=127.0.0.1 master-dst=127.0.0.1 sport=40994 dport=21 class=0 helper=ftp\n"
        );
    }

    #[test]
    fn issue_12_flags_zone_and_absent_parts_follow_the_library() {
        let mut e = ftp();
        e.zone = Some(3);
        e.flags = Some(0b011);
        assert!(line(&e).contains(" dport=21 zone=3 PERMANENT,INACTIVE class=0 helper=ftp\n"));
        e.flags = Some(0b1000);
        assert!(line(&e).contains(" zone=3  class=0 helper=ftp\n"), "{}", line(&e));
        e.timeout = None;
        e.class = None;
        e.helper = None;
        let l = line(&e);
        assert!(l.starts_with("proto=6 src="), "{l}");
        assert!(l.ends_with(" zone=3 \n"), "the C drops one blank of the two: {l:?}");
    }

    #[test]
    fn issue_12_the_json_record_names_every_part() {
        let mut v = Vec::new();
        write_json(&mut v, &ftp()).expect("write");
        let j: serde_json::Value = serde_json::from_slice(&v).expect("json");
        assert_eq!(j["family"], "ipv4");
        assert_eq!(j["proto"], "tcp");
        assert_eq!(j["tuple"]["dport"], 50000);
        assert_eq!(j["mask"]["dport"], 65535);
        assert_eq!(j["master"]["sport"], 40994);
        assert_eq!(j["helper"], "ftp");
        assert_eq!(j["flags"], serde_json::json!([]));
        assert!(j.get("nat").is_none() && j.get("fn").is_none());
    }
}
