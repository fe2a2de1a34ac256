//! The selecting flags every command shares, parsed once into typed values, and the
//! [`Selector`] they make (with the guest map, loaded from `--guests`, shared with the counts).

use std::path::Path;
use std::sync::Arc;

use clap::Args;
use ctguard::connlabel::{self, LabelMap};
use ctguard::flow::{Family, Proto, ProtoState};
use ctguard::guests::GuestMap;
use ctguard::select::{self, GuestFilter, PortRange, Selector};
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
    /// Connection labels the flow must all have: names from the label map or bit numbers,
    /// comma separated (repeatable; like conntrack -l).
    #[arg(short = 'l', long, value_name = "LABEL[,LABEL]")]
    pub label: Vec<String>,
    /// The label names (default /etc/xtables/connlabel.conf, as conntrack reads it).
    #[arg(long, value_name = "FILE")]
    pub labelmap: Option<String>,
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
        let (status_set, status_clear) = self.status.as_ref().map_or((0, 0), |g| g.value);
        let mut labels = 0;
        if !self.label.is_empty() {
            let map = self.label_map()?;
            for list in &self.label {
                labels |= map.bits(list).map_err(|e| format!("--label {list}: {e}"))?;
            }
        }
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
            labels,
        };
        Ok((sel, guests))
    }

    /// The label map: `--labelmap FILE` (which must exist), or conntrack's default file (an
    /// empty map when it is absent: bit numbers still work).
    pub fn label_map(&self) -> Result<LabelMap, String> {
        label_map(self.labelmap.as_deref())
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
        add(&mut parts, "--label", &self.label);
        parts.join(" ")
    }
}

/// The label map of `--labelmap FILE` (which must exist), or conntrack's default file (an
/// empty map when it is absent: bit numbers still work).
pub fn label_map(path: Option<&str>) -> Result<LabelMap, String> {
    match path {
        Some(path) => LabelMap::load(Path::new(path), true),
        None => LabelMap::load(Path::new(connlabel::DEFAULT_PATH), false),
    }
    .map_err(|e| format!("label map {e}"))
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

    #[test]
    fn issue_11_6_one_default_owner() {
        assert_eq!(default_group_by(&GuestMap::new()), GroupBy::Src);
        let mut guests = GuestMap::new();
        guests.add("web", vec!["172.16.3.0/24".parse().expect("cidr")]);
        assert_eq!(default_group_by(&guests), GroupBy::Guest);
        assert!(group_by(Some(GroupBy::Guest), &GuestMap::new()).is_err());
    }
}
