//! The selecting flags every command shares, parsed once into typed values, and the
//! [`Selector`] they make (with the guest map, loaded from `--guests`, shared with the counts).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use clap::Args;
use ctguard::connlabel::{self, LabelMap};
use ctguard::flow::{Family, Proto, ProtoState};
use ctguard::guests::GuestMap;
use ctguard::select::{self, GuestFilter, NatMatch, NatSelect, PortRange, Selector};
use ctguard::tally::GroupBy;
use ipnetwork::IpNetwork;

use super::discovery::{DiscoverArgs, Pending};
use super::parse::{self, Given};

/// Which flows: the same flags for every command.
#[derive(Debug, Args, Default, Clone)]
pub struct SelectArgs {
    /// Original source IP or CIDR (repeatable: any of them).
    #[arg(short = 's', long = "src", visible_alias = "orig-src", value_name = "CIDR", value_parser = parse::given(select::parse_cidr))]
    pub src: Vec<Given<IpNetwork>>,
    /// Original destination IP or CIDR (repeatable).
    #[arg(short = 'd', long = "dst", visible_alias = "orig-dst", value_name = "CIDR", value_parser = parse::given(select::parse_cidr))]
    pub dst: Vec<Given<IpNetwork>>,
    /// Reply source IP or CIDR (repeatable; the DNAT target).
    #[arg(short = 'r', long, value_name = "CIDR", value_parser = parse::given(select::parse_cidr))]
    pub reply_src: Vec<Given<IpNetwork>>,
    /// Reply destination IP or CIDR (repeatable; the SNAT address).
    #[arg(short = 'q', long, value_name = "CIDR", value_parser = parse::given(select::parse_cidr))]
    pub reply_dst: Vec<Given<IpNetwork>>,
    /// Guest name (from --guests, or found on this host: `ctguard guests`), or a CIDR
    /// standing for a guest (repeatable).
    #[arg(long, value_name = "NAME|CIDR")]
    pub guest: Vec<String>,
    /// Guest file (TOML: name = ["CIDR", ...]); it wins over discovery for its addresses.
    #[arg(long, value_name = "FILE", env = "CTGUARD_GUESTS", value_hint = clap::ValueHint::FilePath)]
    pub guests: Option<String>,
    #[command(flatten)]
    pub discover: DiscoverArgs,
    /// Protocol name or number (repeatable).
    #[arg(short = 'p', long = "proto", value_name = "PROTO", value_parser = parse::given(select::parse_proto))]
    pub proto: Vec<Given<Proto>>,
    /// Original source port or range LOW-HIGH (repeatable).
    #[arg(long, visible_alias = "orig-port-src", value_name = "PORT", value_parser = parse::given(select::parse_port_range))]
    pub sport: Vec<Given<PortRange>>,
    /// Original destination port or range LOW-HIGH (repeatable).
    #[arg(long, visible_alias = "orig-port-dst", value_name = "PORT", value_parser = parse::given(select::parse_port_range))]
    pub dport: Vec<Given<PortRange>>,
    /// States as `conntrack -L` prints them, comma separated (ESTABLISHED,TIME_WAIT).
    #[arg(long, value_name = "LIST", value_parser = parse::given(select::parse_states))]
    pub state: Vec<Given<Vec<ProtoState>>>,
    /// Status bits, comma separated, `!` negates (ASSURED,!SEEN_REPLY).
    #[arg(short = 'u', long, value_name = "LIST", value_parser = parse::given(select::parse_status))]
    pub status: Option<Given<(u32, u32)>>,
    /// Mark VALUE[/MASK], decimal or 0x-hex.
    #[arg(short = 'm', long, value_name = "MARK", value_parser = parse::given(select::parse_mark))]
    pub mark: Option<Given<(u32, u32)>>,
    /// Conntrack zone, whichever directions it applies to.
    #[arg(short = 'w', long, value_name = "N", value_parser = parse::given(parse::zone))]
    pub zone: Option<Given<u16>>,
    /// Zone of the original direction (the entry's zone, or its original-only zone; else 0).
    #[arg(long, value_name = "N", value_parser = parse::given(parse::zone))]
    pub orig_zone: Option<Given<u16>>,
    /// Zone of the reply direction (the entry's zone, or its reply-only zone; else 0).
    #[arg(long, value_name = "N", value_parser = parse::given(parse::zone))]
    pub reply_zone: Option<Given<u16>>,
    /// Mask for the one -s address, instead of a /prefix (255.255.255.0; contiguous).
    #[arg(long, value_name = "MASK", value_parser = parse::given(select::parse_mask))]
    pub mask_src: Option<Given<(IpAddr, u8)>>,
    /// Mask for the one -d address, instead of a /prefix.
    #[arg(long, value_name = "MASK", value_parser = parse::given(select::parse_mask))]
    pub mask_dst: Option<Given<(IpAddr, u8)>>,
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
    /// Source-NATed flows (`conntrack -n`): any, or NATed to IP[:PORT] ([IPv6]:PORT).
    #[arg(long, value_name = "IP[:PORT]", num_args = 0..=1, default_missing_value = NAT_ANY, value_parser = parse::given(nat_match))]
    pub src_nat: Option<Given<NatMatch>>,
    /// Destination-NATed flows (`conntrack -g`): any, or NATed to IP[:PORT].
    #[arg(long, value_name = "IP[:PORT]", num_args = 0..=1, default_missing_value = NAT_ANY, value_parser = parse::given(nat_match))]
    pub dst_nat: Option<Given<NatMatch>>,
    /// Source- or destination-NATed flows (`conntrack -j`): any, or NATed to IP[:PORT].
    #[arg(long, value_name = "IP[:PORT]", num_args = 0..=1, default_missing_value = NAT_ANY, value_parser = parse::given(nat_match), conflicts_with_all = ["src_nat", "dst_nat"])]
    pub any_nat: Option<Given<NatMatch>>,
}

/// What clap hands a NAT flag given without a value. No word typed or read can be it (a
/// command-line argument cannot hold a NUL, and batch input with one is refused), so an
/// empty value (`--dst-nat "$UNSET"`) is refused as conntrack refuses it, never "any".
const NAT_ANY: &str = "\0";

/// A NAT flag's value: none (any NATed flow) or the target.
fn nat_match(s: &str) -> Result<NatMatch, select::ValueError> {
    if s == NAT_ANY {
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

/// The `-s`/`-d` networks with `--mask-src`/`--mask-dst` applied: conntrack's
/// `-s ADDR --mask-src MASK` is `-s ADDR/PREFIX`. The mask needs exactly one address, given
/// without a prefix, of the mask's family.
fn masked(
    nets: &[Given<IpNetwork>],
    mask: Option<&Given<(IpAddr, u8)>>,
    flag: &str,
    mask_flag: &str,
) -> Result<Vec<IpNetwork>, String> {
    let Some(mask) = mask else { return Ok(values(nets)) };
    let [one] = nets else {
        return Err(match nets {
            [] => format!("{mask_flag} needs {flag} ADDRESS (as conntrack's)"),
            _ => format!("{mask_flag} takes exactly one {flag} address"),
        });
    };
    if one.text.contains('/') {
        return Err(format!(
            "{flag} {one} has a prefix already: give a /prefix or {mask_flag}, not both"
        ));
    }
    let (mask_addr, prefix) = mask.value;
    if mask_addr.is_ipv4() != one.value.is_ipv4() {
        return Err(select::ValueError::MismatchedFamily(format!(
            "{mask_flag} {mask} does not fit {flag} {one}"
        ))
        .to_string());
    }
    let net = IpNetwork::new(one.value.ip(), prefix).map_err(|e| format!("{mask_flag}: {e}"))?;
    Ok(vec![net])
}

/// The guest files and label maps already read, by path (`None`: no `--guests`, the empty
/// map; no `--labelmap`, conntrack's default file): a batch's lines that name the same file
/// share one read of it (a file read for each line would cost its size each time).
#[derive(Debug, Default)]
pub struct FileCache {
    guests: HashMap<Option<String>, Arc<GuestMap>>,
    labels: HashMap<Option<String>, Arc<LabelMap>>,
}

impl FileCache {
    /// The guest map of `path`, read the first time it is asked for.
    fn guests(&mut self, path: &Option<String>) -> Result<Arc<GuestMap>, String> {
        if let Some(map) = self.guests.get(path) {
            return Ok(Arc::clone(map));
        }
        let map = Arc::new(load_guests(path.as_deref())?);
        self.guests.insert(path.clone(), Arc::clone(&map));
        Ok(map)
    }

    /// The label map of `path`, read the first time it is asked for.
    pub fn labels(&mut self, path: &Option<String>) -> Result<Arc<LabelMap>, String> {
        if let Some(map) = self.labels.get(path) {
            return Ok(Arc::clone(map));
        }
        let map = Arc::new(label_map(path.as_deref())?);
        self.labels.insert(path.clone(), Arc::clone(&map));
        Ok(map)
    }
}

/// A selection as planned: the selector, the guest map it shares with the counts, and the
/// discovery the run still owes (`--guest` names only the host can resolve).
#[derive(Debug)]
pub struct Selection {
    /// The flows.
    pub sel: Selector,
    /// The guest file's map (empty without one); discovery joins the host's guests at run.
    pub guests: Arc<GuestMap>,
    /// What discovery has left to do.
    pub pending: Pending,
}

impl SelectArgs {
    /// The selector and the guest map (empty without `--guests`), one map shared by both,
    /// with its files read through `files` (once per batch). Reads the guest file; a bad one,
    /// or a `--guest` it does not name, is a one-line reason: a batch line cannot discover, so
    /// a `--guest` name only the host could resolve is refused.
    pub fn selector_with(
        &self,
        files: &mut FileCache,
    ) -> Result<(Selector, Arc<GuestMap>), String> {
        let s = self.selection_with(files, false)?;
        Ok((s.sel, s.guests))
    }

    /// The selection: the selector and the guest map (empty without `--guests`), one map
    /// shared by both, with the `--guest` names the guest file does not hold left to
    /// discovery (unless `--no-discover`). A bad guest file is a one-line reason.
    pub fn selection(&self) -> Result<Selection, String> {
        self.selection_with(&mut FileCache::default(), true)
    }

    fn selection_with(&self, files: &mut FileCache, discovers: bool) -> Result<Selection, String> {
        let guests = files.guests(&self.guests)?;
        let dirs = self.discover.dirs().filter(|_| discovers);
        let mut filter = GuestFilter::default();
        let mut waiting = Vec::new();
        for g in &self.guest {
            if let Some(id) = guests.find(g) {
                filter.ids.push(id);
            } else if let Ok(net) = select::parse_cidr(g) {
                filter.cidrs.push(net);
            } else if dirs.is_some() {
                waiting.push(g.clone());
            } else {
                return Err(match (&self.guests, discovers) {
                    (None, true) => format!(
                        "--guest '{g}' is not an IP or CIDR (guest names need --guests FILE or \
                         discovery, which --no-discover turns off)"
                    ),
                    (None, false) => format!(
                        "--guest '{g}' is not an IP or CIDR (guest names here need --guests FILE)"
                    ),
                    (Some(file), _) => {
                        format!("--guest '{g}' is neither a guest in {file} nor an IP or CIDR")
                    }
                });
            }
        }
        let (status_set, status_clear) = self.status.as_ref().map_or((0, 0), |g| g.value);
        let mut labels = 0;
        if !self.label.is_empty() {
            let map = files.labels(&self.labelmap)?;
            for list in &self.label {
                labels |= map.bits(list).map_err(|e| format!("--label {list}: {e}"))?;
            }
        }
        if let Some(s) = self.status.as_ref().filter(|s| s.value == (0, 0)) {
            return Err(format!(
                "--status {s} names no bit: nothing to select by (the kernel refuses \
                 conntrack -L -u UNSET too)"
            ));
        }
        let sel = Selector {
            src: masked(&self.src, self.mask_src.as_ref(), "-s", "--mask-src")?,
            dst: masked(&self.dst, self.mask_dst.as_ref(), "-d", "--mask-dst")?,
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
            orig_zone: self.orig_zone.as_ref().map(|g| g.value),
            reply_zone: self.reply_zone.as_ref().map(|g| g.value),
            family: self.family.as_ref().map(|g| g.value),
            idle_min: self.idle.as_ref().map(|g| g.value),
            timeout_below: self.timeout_below.as_ref().map(|g| g.value),
            timeouts: None,
            except: values(&self.except),
            labels,
            nat: NatSelect {
                src: self.src_nat.as_ref().map(|g| g.value),
                dst: self.dst_nat.as_ref().map(|g| g.value),
                either: self.any_nat.as_ref().map(|g| g.value),
            },
        };
        sel.check_families().map_err(|e| e.to_string())?;
        let pending = Pending::new(dirs, waiting, self.guests.clone());
        Ok(Selection { sel, guests, pending })
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
        add(&mut parts, "--mask-src", self.mask_src.as_slice());
        add(&mut parts, "-d", &self.dst);
        add(&mut parts, "--mask-dst", self.mask_dst.as_slice());
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
        add(&mut parts, "--orig-zone", self.orig_zone.as_slice());
        add(&mut parts, "--reply-zone", self.reply_zone.as_slice());
        add(&mut parts, "-f", self.family.as_slice());
        add(&mut parts, "--idle", self.idle.as_slice());
        add(&mut parts, "--timeout-below", self.timeout_below.as_slice());
        add(&mut parts, "--except", &self.except);
        add(&mut parts, "--label", &self.label);
        for (flag, nat) in [
            ("--src-nat", &self.src_nat),
            ("--dst-nat", &self.dst_nat),
            ("--any-nat", &self.any_nat),
        ] {
            match nat {
                Some(g) if g.text == NAT_ANY => parts.push(flag.to_string()),
                Some(g) => parts.push(format!("{flag} {g}")),
                None => {}
            }
        }
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

/// Who owns a flow when no `--by` is given: the guest with guests (a file's or discovered),
/// else the source.
pub fn default_group_by(guests: &GuestMap) -> GroupBy {
    if guests.is_empty() { GroupBy::Src } else { GroupBy::Guest }
}

/// `--by KEY`, or the default owner; `--by guest` needs a guest file.
pub fn group_by(by: Option<GroupBy>, guests: &GuestMap) -> Result<GroupBy, String> {
    let by = by.unwrap_or_else(|| default_group_by(guests));
    check_guest_grouping(by, guests)?;
    Ok(by)
}

/// `--by guest` needs guests: a guest file's, or (after discovery) the host's.
pub fn check_guest_grouping(by: GroupBy, guests: &GuestMap) -> Result<(), String> {
    if by == GroupBy::Guest && guests.is_empty() {
        return Err("--by guest needs a guest file (--guests FILE) or guests on this host \
                    (`ctguard guests` finds none)"
            .into());
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
        let (sel, _) = a.selection().map(|s| (s.sel, s.guests)).expect("a selector");
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
        let (sel, _) = a.selection().map(|s| (s.sel, s.guests)).expect("a selector");
        assert_eq!(sel.nat.dst, Some(NatMatch::Any));
        assert!(matches!(sel.nat.src, Some(NatMatch::To(t)) if t.port == Some(6000)));
        for argv in [
            &["-s", "10.0.0.5", "--dst-nat", "fd00::9"][..],
            &["-f", "ipv6", "--any-nat", "10.9.9.9"],
            &["--src-nat", "10.9.9.9", "--dst-nat", "[fd00::9]:80"],
        ] {
            let e = args(argv).selection().expect_err("refused");
            assert!(e.starts_with("mismatched address family: "), "{e}");
        }
        assert!(
            args(&["-f", "ipv6", "--any-nat"]).selection().is_ok(),
            "a bare flag has no family"
        );
        let argv = ["ctguard", "--any-nat", "--src-nat"];
        assert!(Line::try_parse_from(argv).is_err(), "--any-nat excludes --src-nat");
    }

    /// An empty NAT value (`--dst-nat "$TARGET"` with TARGET unset) is refused, as conntrack
    /// refuses it ("Invalid IP address"), not read as the bare flag: that would widen an
    /// eviction to every NATed flow.
    #[test]
    fn issue_12_an_empty_nat_value_is_refused_not_any() {
        for flag in ["--src-nat", "--dst-nat", "--any-nat"] {
            let glued = format!("{flag}=");
            for argv in [vec!["ctguard", flag, ""], vec!["ctguard", &glued]] {
                let e = Line::try_parse_from(&argv).err().expect("refused");
                use std::error::Error as _;
                let why = e.source().map(ToString::to_string).unwrap_or_default();
                assert!(why.starts_with("invalid NAT address ''"), "{argv:?}: {e}");
            }
            let bare = args(&[flag, "-s", "10.0.0.5"]);
            assert_eq!(bare.describe(), format!("-s 10.0.0.5 {flag}"));
        }
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
