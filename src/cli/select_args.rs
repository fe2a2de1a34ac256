//! The selecting flags every command shares, parsed once into typed values, and the
//! [`Selector`] they make (with the guest map, loaded from `--guests`, shared with the counts).

use std::sync::Arc;

use clap::Args;
use ctguard::flow::{Family, Proto, ProtoState};
use ctguard::guests::GuestMap;
use ctguard::select::{self, GuestFilter, NatMatch, NatSelect, PortRange, Selector};
use ctguard::tally::GroupBy;
use ipnetwork::IpNetwork;

use super::parse::{self, Given};

/// Which flows: the same flags for every command.
#[derive(Debug, Args, Default, Clone)]
pub struct SelectArgs {
    /// Original source IP or CIDR (repeatable: any of them).
    #[arg(short = 's', long = "src", value_name = "CIDR", value_parser = parse::given(select::parse_cidr))]
    pub src: Vec<Given<IpNetwork>>,
    /// Original destination IP or CIDR (repeatable).
    #[arg(short = 'd', long = "dst", value_name = "CIDR", value_parser = parse::given(select::parse_cidr))]
    pub dst: Vec<Given<IpNetwork>>,
    /// Reply source IP or CIDR (repeatable; the DNAT target).
    #[arg(long, value_name = "CIDR", value_parser = parse::given(select::parse_cidr))]
    pub reply_src: Vec<Given<IpNetwork>>,
    /// Reply destination IP or CIDR (repeatable; the SNAT address).
    #[arg(long, value_name = "CIDR", value_parser = parse::given(select::parse_cidr))]
    pub reply_dst: Vec<Given<IpNetwork>>,
    /// Guest name from --guests, or a CIDR standing for a guest (repeatable).
    #[arg(long, value_name = "NAME|CIDR")]
    pub guest: Vec<String>,
    /// Guest file (TOML: name = ["CIDR", ...]).
    #[arg(long, value_name = "FILE", env = "CTGUARD_GUESTS")]
    pub guests: Option<String>,
    /// Protocol name or number (repeatable).
    #[arg(short = 'p', long = "proto", value_name = "PROTO", value_parser = parse::given(select::parse_proto))]
    pub proto: Vec<Given<Proto>>,
    /// Original source port or range LOW-HIGH (repeatable).
    #[arg(long, value_name = "PORT", value_parser = parse::given(select::parse_port_range))]
    pub sport: Vec<Given<PortRange>>,
    /// Original destination port or range LOW-HIGH (repeatable).
    #[arg(long, value_name = "PORT", value_parser = parse::given(select::parse_port_range))]
    pub dport: Vec<Given<PortRange>>,
    /// States as `conntrack -L` prints them, comma separated (ESTABLISHED,TIME_WAIT).
    #[arg(long, value_name = "LIST", value_parser = parse::given(select::parse_states))]
    pub state: Vec<Given<Vec<ProtoState>>>,
    /// Status bits, comma separated, `!` negates (ASSURED,!SEEN_REPLY).
    #[arg(long, value_name = "LIST", value_parser = parse::given(select::parse_status))]
    pub status: Option<Given<(u32, u32)>>,
    /// Mark VALUE[/MASK], decimal or 0x-hex.
    #[arg(long, value_name = "MARK", value_parser = parse::given(select::parse_mark))]
    pub mark: Option<Given<(u32, u32)>>,
    /// Conntrack zone.
    #[arg(long, value_name = "N", value_parser = parse::given(parse::zone))]
    pub zone: Option<Given<u16>>,
    /// Address family: ipv4 or ipv6.
    #[arg(short = 'f', long, value_name = "FAMILY", value_parser = parse::given(select::parse_family))]
    pub family: Option<Given<Family>>,
    /// Idle at least this long (state timeout minus remaining; e.g. 10m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse::given(idle))]
    pub idle: Option<Given<u32>>,
    /// Less than this long left before the entry expires.
    #[arg(long, value_name = "DURATION", value_parser = parse::given(timeout_below))]
    pub timeout_below: Option<Given<u32>>,
    /// Never select flows with an address in CIDR (repeatable; any of their four addresses).
    #[arg(long, value_name = "CIDR", value_parser = parse::given(select::parse_cidr))]
    pub except: Vec<Given<IpNetwork>>,
    /// Source-NATed flows (`conntrack -n`): any, or NATed to IP[:PORT] ([IPv6]:PORT).
    #[arg(long, value_name = "IP[:PORT]", num_args = 0..=1, default_missing_value = "", value_parser = parse::given(nat_match))]
    pub src_nat: Option<Given<NatMatch>>,
    /// Destination-NATed flows (`conntrack -g`): any, or NATed to IP[:PORT].
    #[arg(long, value_name = "IP[:PORT]", num_args = 0..=1, default_missing_value = "", value_parser = parse::given(nat_match))]
    pub dst_nat: Option<Given<NatMatch>>,
    /// Source- or destination-NATed flows (`conntrack -j`): any, or NATed to IP[:PORT].
    #[arg(long, value_name = "IP[:PORT]", num_args = 0..=1, default_missing_value = "", value_parser = parse::given(nat_match), conflicts_with_all = ["src_nat", "dst_nat"])]
    pub any_nat: Option<Given<NatMatch>>,
}

/// A NAT flag's value: none (any NATed flow) or the target.
fn nat_match(s: &str) -> Result<NatMatch, select::ValueError> {
    if s.is_empty() {
        return Ok(NatMatch::Any);
    }
    select::parse_nat_target(s).map(NatMatch::To)
}

fn idle(s: &str) -> Result<u32, String> {
    parse::seconds("--idle")(s)
}

fn timeout_below(s: &str) -> Result<u32, String> {
    parse::seconds("--timeout-below")(s)
}

fn values<T: Clone>(given: &[Given<T>]) -> Vec<T> {
    given.iter().map(|g| g.value.clone()).collect()
}

impl SelectArgs {
    /// The selector and the guest map (empty without `--guests`), one map shared by both.
    /// Reads the guest file; a bad one, or a `--guest` it does not name, is a one-line reason.
    pub fn selector(&self) -> Result<(Selector, Arc<GuestMap>), String> {
        let guests = Arc::new(load_guests(self.guests.as_deref())?);
        let mut filter = GuestFilter::default();
        for g in &self.guest {
            match guests.find(g) {
                Some(id) => filter.ids.push(id),
                None => filter.cidrs.push(select::parse_cidr(g).map_err(|_| {
                    if guests.is_empty() {
                        format!(
                            "--guest '{g}' is not an IP or CIDR (guest names need --guests FILE)"
                        )
                    } else {
                        format!(
                            "--guest '{g}' is neither a guest in {} nor an IP or CIDR",
                            self.guests.as_deref().unwrap_or("")
                        )
                    }
                })?),
            }
        }
        self.check_nat_family()?;
        let (status_set, status_clear) = self.status.as_ref().map_or((0, 0), |g| g.value);
        let sel = Selector {
            src: values(&self.src),
            dst: values(&self.dst),
            reply_src: values(&self.reply_src),
            reply_dst: values(&self.reply_dst),
            guests: (!self.guest.is_empty())
                .then(|| GuestFilter { map: Arc::clone(&guests), ..filter }),
            protos: values(&self.proto),
            sport: values(&self.sport),
            dport: values(&self.dport),
            states: self.state.iter().flat_map(|g| g.value.iter().copied()).collect(),
            status_set,
            status_clear,
            mark: self.mark.as_ref().map(|g| g.value),
            zone: self.zone.as_ref().map(|g| g.value),
            family: self.family.as_ref().map(|g| g.value),
            idle_min: self.idle.as_ref().map(|g| g.value),
            timeout_below: self.timeout_below.as_ref().map(|g| g.value),
            timeouts: None,
            except: values(&self.except),
            nat: NatSelect {
                src: self.src_nat.as_ref().map(|g| g.value),
                dst: self.dst_nat.as_ref().map(|g| g.value),
                either: self.any_nat.as_ref().map(|g| g.value),
            },
        };
        Ok((sel, guests))
    }

    /// A NAT address of one family and an address or `-f` of the other select nothing;
    /// conntrack refuses them ("mismatched address family"), and so does this.
    fn check_nat_family(&self) -> Result<(), String> {
        let mut given: Vec<(String, Family)> = Vec::new();
        for (flag, nat) in [
            ("--src-nat", &self.src_nat),
            ("--dst-nat", &self.dst_nat),
            ("--any-nat", &self.any_nat),
        ] {
            if let Some(Given { value: NatMatch::To(t), text }) = nat {
                given.push((format!("{flag} {text}"), Family::of(t.addr)));
            }
        }
        let Some((nat_flag, nat_family)) = given.first().cloned() else { return Ok(()) };
        for (flag, nets) in [
            ("-s", &self.src),
            ("-d", &self.dst),
            ("--reply-src", &self.reply_src),
            ("--reply-dst", &self.reply_dst),
        ] {
            given.extend(nets.iter().map(|g| (format!("{flag} {g}"), Family::of(g.value.ip()))));
        }
        given.extend(self.family.iter().map(|g| (format!("-f {g}"), g.value)));
        match given.iter().find(|(_, f)| *f != nat_family) {
            Some((other, _)) => Err(format!("mismatched address family: {nat_flag} and {other}")),
            None => Ok(()),
        }
    }

    /// The selecting flags as given, for the audit line.
    pub fn describe(&self) -> String {
        fn add<T: std::fmt::Display>(parts: &mut Vec<String>, flag: &str, values: &[T]) {
            parts.extend(values.iter().map(|v| format!("{flag} {v}")));
        }
        let mut parts: Vec<String> = Vec::new();
        add(&mut parts, "-s", &self.src);
        add(&mut parts, "-d", &self.dst);
        add(&mut parts, "--reply-src", &self.reply_src);
        add(&mut parts, "--reply-dst", &self.reply_dst);
        add(&mut parts, "--guest", &self.guest);
        add(&mut parts, "-p", &self.proto);
        add(&mut parts, "--sport", &self.sport);
        add(&mut parts, "--dport", &self.dport);
        add(&mut parts, "--state", &self.state);
        add(&mut parts, "--guests", self.guests.as_slice());
        add(&mut parts, "--status", self.status.as_slice());
        add(&mut parts, "--mark", self.mark.as_slice());
        add(&mut parts, "--zone", self.zone.as_slice());
        add(&mut parts, "-f", self.family.as_slice());
        add(&mut parts, "--idle", self.idle.as_slice());
        add(&mut parts, "--timeout-below", self.timeout_below.as_slice());
        add(&mut parts, "--except", &self.except);
        for (flag, nat) in [
            ("--src-nat", &self.src_nat),
            ("--dst-nat", &self.dst_nat),
            ("--any-nat", &self.any_nat),
        ] {
            match nat {
                Some(g) if g.text.is_empty() => parts.push(flag.to_string()),
                Some(g) => parts.push(format!("{flag} {g}")),
                None => {}
            }
        }
        parts.join(" ")
    }
}

/// The guest map of `--guests FILE`, or an empty one.
pub fn load_guests(path: Option<&str>) -> Result<GuestMap, String> {
    match path {
        Some(path) => GuestMap::load(path).map_err(|e| e.to_string()),
        None => Ok(GuestMap::new()),
    }
}

/// Who owns a flow when no `--by` is given: the guest with a guest file, else the source.
pub fn default_group_by(guests: &GuestMap) -> GroupBy {
    if guests.is_empty() { GroupBy::Src } else { GroupBy::Guest }
}

/// `--by KEY`, or the default owner; `--by guest` needs a guest file.
pub fn group_by(by: Option<GroupBy>, guests: &GuestMap) -> Result<GroupBy, String> {
    let by = by.unwrap_or_else(|| default_group_by(guests));
    check_guest_grouping(by, guests)?;
    Ok(by)
}

/// `--by guest` needs a guest file.
pub fn check_guest_grouping(by: GroupBy, guests: &GuestMap) -> Result<(), String> {
    if by == GroupBy::Guest && guests.is_empty() {
        return Err("--by guest needs a guest file (--guests FILE)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        select: SelectArgs,
    }

    fn args(argv: &[&str]) -> SelectArgs {
        let argv = std::iter::once("ctguard").chain(argv.iter().copied());
        Line::try_parse_from(argv).expect("valid flags").select
    }

    #[test]
    fn issue_11_3_the_audit_selector_repeats_the_flags_as_typed() {
        let a = args(&[
            "-s",
            "10.0.0.0/8",
            "--state",
            "ESTABLISHED,time_wait",
            "-p",
            "6",
            "--dport",
            "80-90",
            "--mark",
            "0x1/0xff",
            "--zone",
            "3",
            "-f",
            "ipv4",
            "--idle",
            "10m",
        ]);
        assert_eq!(
            a.describe(),
            "-s 10.0.0.0/8 -p 6 --dport 80-90 --state ESTABLISHED,time_wait --mark 0x1/0xff \
             --zone 3 -f ipv4 --idle 10m"
        );
        let (sel, _) = a.selector().expect("a selector");
        assert_eq!(sel.idle_min, Some(600));
        assert_eq!(sel.mark, Some((1, 0xff)));
        assert_eq!(sel.states, select::parse_states("ESTABLISHED,time_wait").expect("states"));
    }

    #[test]
    fn issue_11_3_a_bad_value_is_refused_at_parse_time_with_todays_reason() {
        let argv = ["ctguard", "--zone", "70000"];
        let e = Line::try_parse_from(argv).err().expect("refused");
        use std::error::Error as _;
        assert_eq!(e.source().map(ToString::to_string).as_deref(), Some("invalid zone '70000'"));
    }

    /// The NAT flags: bare or with a target, in the audit line as typed, and a target of the
    /// other family than the addresses or `-f` refused as conntrack refuses it.
    #[test]
    fn issue_12_nat_flags_describe_and_refuse_mixed_families() {
        let a = args(&["--dst-nat", "-s", "10.0.0.5", "--src-nat", "203.0.113.1:6000"]);
        assert_eq!(a.describe(), "-s 10.0.0.5 --src-nat 203.0.113.1:6000 --dst-nat");
        let (sel, _) = a.selector().expect("a selector");
        assert_eq!(sel.nat.dst, Some(NatMatch::Any));
        assert!(matches!(sel.nat.src, Some(NatMatch::To(t)) if t.port == Some(6000)));
        for argv in [
            &["-s", "10.0.0.5", "--dst-nat", "fd00::9"][..],
            &["-f", "ipv6", "--any-nat", "10.9.9.9"],
            &["--src-nat", "10.9.9.9", "--dst-nat", "[fd00::9]:80"],
        ] {
            let e = args(argv).selector().expect_err("refused");
            assert!(e.starts_with("mismatched address family: "), "{e}");
        }
        assert!(args(&["-f", "ipv6", "--any-nat"]).selector().is_ok(), "a bare flag has no family");
        let argv = ["ctguard", "--any-nat", "--src-nat"];
        assert!(Line::try_parse_from(argv).is_err(), "--any-nat excludes --src-nat");
    }

    #[test]
    fn issue_11_6_one_default_owner() {
        assert_eq!(default_group_by(&GuestMap::new()), GroupBy::Src);
        let mut guests = GuestMap::new();
        guests.add("web", vec!["172.16.3.0/24".parse().expect("cidr")]);
        assert_eq!(default_group_by(&guests), GroupBy::Guest);
        assert!(group_by(Some(GroupBy::Guest), &GuestMap::new()).is_err());
    }
}
