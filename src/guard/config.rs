//! The guard's configuration file (TOML): every key checked, with the line at fault, before
//! anything runs. `ctguard guard --check` is this module and nothing else; a SIGHUP reload
//! that fails here keeps the configuration in force.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnetwork::IpNetwork;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::discover::host::Dirs;
use crate::flow::ProtoState;
use crate::guests::{GuestMap, escaped};
use crate::select::{self, ValueError};

/// The bounds of `discover_every`.
const DISCOVER_EVERY_MIN: Duration = Duration::from_secs(1);
const DISCOVER_EVERY_MAX: Duration = Duration::from_secs(3600);

/// The longest configuration file read (`/dev/zero` is not a configuration).
pub const MAX_CONFIG: u64 = 1 << 20;

/// A fill level: a share of the table's limit (`"90%"`) or a count of entries (`240000`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Level {
    /// A share of `nf_conntrack_max`, in (0, 1].
    Share(f64),
    /// Entries.
    Count(u64),
}

impl Level {
    /// The level in entries, for a table of `max` entries.
    pub fn entries(self, max: u64) -> u64 {
        match self {
            Level::Share(s) => (s * max as f64).floor() as u64,
            Level::Count(n) => n,
        }
    }
}

/// What the guard does to an offender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Log and count only.
    Alert,
    /// Evict its stale flows.
    Evict,
    /// Cap its new connections (nftables `ct count`).
    Cap,
    /// Cap, then evict.
    CapEvict,
}

impl Action {
    /// Parses `alert`, `evict`, `cap`, `cap+evict`.
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "alert" => Action::Alert,
            "evict" => Action::Evict,
            "cap" => Action::Cap,
            "cap+evict" => Action::CapEvict,
            _ => return None,
        })
    }

    /// Whether the policy caps.
    pub fn caps(self) -> bool {
        matches!(self, Action::Cap | Action::CapEvict)
    }

    /// Whether the policy evicts.
    pub fn evicts(self) -> bool {
        matches!(self, Action::Evict | Action::CapEvict)
    }
}

/// How one guest (or every guest, by default) is treated.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// More than this while the table is above `high` makes an offender.
    pub quota: Level,
    /// What is done to an offender.
    pub action: Action,
    /// New connections allowed past the cap rule.
    pub cap: u32,
    /// The offender's flows in these states are evicted.
    pub evict_state: Vec<ProtoState>,
    /// Only flows idle at least this long are evicted.
    pub evict_idle: Option<Duration>,
    /// At most this many flows per eviction, the most idle first.
    pub evict_limit: Option<u64>,
}

/// A checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The guest file.
    pub guests: Option<PathBuf>,
    /// Guests found on the host (route netlink and the hypervisors' records) besides the
    /// guest file's, which wins for the addresses it names.
    pub discover: bool,
    /// Where the hypervisors' records are read when discovering.
    pub dirs: Dirs,
    /// The host is looked at again this often (and at each reload).
    pub discover_every: Duration,
    /// Act from this fill.
    pub high: Level,
    /// Until under this fill.
    pub low: Level,
    /// Every guest's policy but those named in `[guest.NAME]`.
    pub default: Policy,
    /// Per-guest policies, by name.
    pub per_guest: BTreeMap<String, Policy>,
    /// A cap is lifted once its guest stayed under quota this long.
    pub cooldown: Duration,
    /// A guest is acted on at most once per this.
    pub act_every: Duration,
    /// Flows touching these addresses are never evicted; these are never capped.
    pub protect: Vec<IpNetwork>,
    /// Where `/metrics` listens; `None`: off.
    pub metrics: Option<SocketAddr>,
    /// The query socket of `top --live`; `None`: off.
    pub socket: Option<PathBuf>,
    /// One JSON line per action.
    pub audit_log: Option<PathBuf>,
    /// Where the spool of evicted flows goes.
    pub state_dir: PathBuf,
    /// The namespace to guard.
    pub netns: Option<String>,
    /// Decide and log, never act.
    pub dry_run: bool,
    /// The event socket's receive buffer in bytes, `None`: the daemon's default. Not
    /// documented for operators: the kernel tests make it tiny to force an overrun.
    pub event_buffer: Option<usize>,
}

impl Config {
    /// The policy of the guest named `name`.
    pub fn policy(&self, name: &str) -> &Policy {
        self.per_guest.get(name).unwrap_or(&self.default)
    }

    /// Checks that every `[guest.NAME]` names a guest of `map` (the guest file's). With
    /// discovery on, a name may be a guest found on the host later: the daemon warns of the
    /// ones no guest holds (`policy_unmatched`) instead.
    pub fn check_guests(&self, map: &GuestMap) -> Result<(), ConfigError> {
        if self.discover {
            return Ok(());
        }
        match self.per_guest.keys().find(|n| map.find(n).is_none()) {
            Some(name) => Err(ConfigError::UnknownGuest(escaped(name).into_owned())),
            None => Ok(()),
        }
    }
}

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A key or value is wrong.
    #[error("{path}:{line}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// The line at fault.
        line: usize,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// A `[guest.NAME]` the guest file does not have.
    #[error(
        "[guest.{0}]: no such guest in the guest file (with discover = true it may be one found on the host)"
    )]
    UnknownGuest(String),
}

/// Reads and checks the file at `path`.
pub fn load(path: &str) -> Result<Config, ConfigError> {
    use std::io::Read;
    let read = |source| ConfigError::Read { path: path.to_string(), source };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG + 1).read_to_end(&mut bytes).map_err(read)?;
    let invalid = |reason: String| ConfigError::Invalid { path: path.into(), line: 1, reason };
    if bytes.len() as u64 > MAX_CONFIG {
        return Err(invalid(format!("larger than {MAX_CONFIG} bytes: not a configuration")));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| invalid("not UTF-8 text (the configuration is TOML)".into()))?;
    parse(&text, path)
}

type Value<'a> = Spanned<DeValue<'a>>;

/// What every key is checked against, with the text's lines for the errors.
struct Checker<'t> {
    path: &'t str,
    newlines: Vec<usize>,
}

impl Checker<'_> {
    fn fail(&self, at: usize, reason: String) -> ConfigError {
        let line = self.newlines.partition_point(|&nl| nl < at) + 1;
        ConfigError::Invalid { path: self.path.to_string(), line, reason }
    }

    fn string<'v>(&self, key: &str, v: &'v Value<'_>) -> Result<&'v str, ConfigError> {
        match v.get_ref() {
            DeValue::String(s) => Ok(s),
            _ => Err(self.fail(v.span().start, format!("{key}: expected a string"))),
        }
    }

    fn boolean(&self, key: &str, v: &Value<'_>) -> Result<bool, ConfigError> {
        match v.get_ref() {
            DeValue::Boolean(b) => Ok(*b),
            _ => Err(self.fail(v.span().start, format!("{key}: expected true or false"))),
        }
    }

    fn count(&self, key: &str, v: &Value<'_>) -> Result<u64, ConfigError> {
        let bad = || self.fail(v.span().start, format!("{key}: expected a positive count"));
        match v.get_ref() {
            DeValue::Integer(i) => {
                let n: u64 = i.as_str().replace('_', "").parse().map_err(|_| bad())?;
                if n == 0 { Err(bad()) } else { Ok(n) }
            }
            _ => Err(bad()),
        }
    }

    /// `"90%"` (more than 0, at most 100) or a count.
    fn level(&self, key: &str, v: &Value<'_>) -> Result<Level, ConfigError> {
        let DeValue::String(s) = v.get_ref() else {
            return self.count(key, v).map(Level::Count);
        };
        let bad = || {
            self.fail(
                v.span().start,
                format!(
                    "{key}: invalid level '{s}' (a share like \"90%\", or a count like 240000)"
                ),
            )
        };
        let share: f64 = s.strip_suffix('%').ok_or_else(bad)?.trim().parse().map_err(|_| bad())?;
        if !(share > 0.0 && share <= 100.0) {
            return Err(bad());
        }
        Ok(Level::Share(share / 100.0))
    }

    fn duration(&self, key: &str, v: &Value<'_>) -> Result<Duration, ConfigError> {
        let s = self.string(key, v)?;
        let d = select::parse_duration(s).map_err(|e| self.value(key, v, e))?;
        if d.is_zero() {
            return Err(self.fail(v.span().start, format!("{key}: '{s}' must be longer than zero")));
        }
        Ok(d)
    }

    fn value(&self, key: &str, v: &Value<'_>, e: ValueError) -> ConfigError {
        self.fail(v.span().start, format!("{key}: {e}"))
    }

    fn list<'v>(&self, key: &str, v: &'v Value<'_>) -> Result<Vec<&'v str>, ConfigError> {
        let DeValue::Array(items) = v.get_ref() else {
            return Err(self.fail(v.span().start, format!("{key}: expected a list of strings")));
        };
        items.iter().map(|item| self.string(key, item)).collect()
    }

    fn states(&self, key: &str, v: &Value<'_>) -> Result<Vec<ProtoState>, ConfigError> {
        let mut out = Vec::new();
        for name in self.list(key, v)? {
            out.extend(select::parse_states(name).map_err(|e| self.value(key, v, e))?);
        }
        if out.is_empty() {
            return Err(self.fail(v.span().start, format!("{key}: name at least one state")));
        }
        Ok(out)
    }

    fn action(&self, key: &str, v: &Value<'_>) -> Result<Action, ConfigError> {
        let s = self.string(key, v)?;
        Action::parse(s).ok_or_else(|| {
            self.fail(
                v.span().start,
                format!("{key}: invalid action '{s}' (alert, evict, cap or cap+evict)"),
            )
        })
    }

    fn cap(&self, key: &str, v: &Value<'_>) -> Result<u32, ConfigError> {
        let n = self.count(key, v)?;
        u32::try_from(n).map_err(|_| self.fail(v.span().start, format!("{key}: {n} is too large")))
    }

    /// The keys a policy has, at the top level or in `[guest.NAME]`; false for another key.
    fn policy_key(&self, p: &mut Policy, key: &str, v: &Value<'_>) -> Result<bool, ConfigError> {
        match key {
            "quota" => p.quota = self.level(key, v)?,
            "action" => p.action = self.action(key, v)?,
            "cap" => p.cap = self.cap(key, v)?,
            "evict_state" => p.evict_state = self.states(key, v)?,
            "evict_idle" => p.evict_idle = Some(self.duration(key, v)?),
            "evict_limit" => p.evict_limit = Some(self.count(key, v)?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

const KEYS: &str = "guests, discover, libvirt_dir, pve_dir, discover_every, high, low, quota, action, cap, evict_state, evict_idle, \
                    evict_limit, cooldown, act_every, protect, metrics, socket, audit_log, \
                    state_dir, netns, dry_run, [guest.NAME]";

/// The defaults of every key not given.
pub fn defaults() -> Config {
    Config {
        guests: None,
        discover: false,
        dirs: Dirs::default(),
        discover_every: Duration::from_secs(30),
        high: Level::Share(0.90),
        low: Level::Share(0.75),
        default: Policy {
            quota: Level::Share(0.50),
            action: Action::CapEvict,
            cap: 20_000,
            evict_state: vec![ProtoState::Tcp(crate::flow::TcpState::Established)],
            evict_idle: None,
            evict_limit: None,
        },
        per_guest: BTreeMap::new(),
        cooldown: Duration::from_secs(600),
        act_every: Duration::from_secs(5),
        protect: Vec::new(),
        metrics: Some(SocketAddr::from(([127, 0, 0, 1], 9731))),
        socket: Some(PathBuf::from("/run/ctguard/guard.sock")),
        audit_log: Some(PathBuf::from(crate::audit::DEFAULT_LOG)),
        state_dir: PathBuf::from("/var/lib/ctguard"),
        netns: None,
        dry_run: false,
        event_buffer: None,
    }
}

/// Parses configuration text; `path` only labels errors.
pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
    let c = Checker { path, newlines: text.match_indices('\n').map(|(i, _)| i).collect() };
    let doc = DeTable::parse(text)
        .map_err(|e| c.fail(e.span().map_or(0, |s| s.start), e.message().trim_end().to_string()))?;
    let mut cfg = defaults();
    // In file order, so the first problem reported is the first in the file.
    let mut keys: Vec<_> = doc.get_ref().iter().collect();
    keys.sort_unstable_by_key(|(k, _)| k.span().start);
    let (mut high_at, mut guest_tables) = (0, None);
    for (k, v) in keys {
        let key: &str = k.get_ref();
        if c.policy_key(&mut cfg.default, key, v)? {
            continue;
        }
        match key {
            "guests" => cfg.guests = Some(PathBuf::from(c.string(key, v)?)),
            "discover" => cfg.discover = c.boolean(key, v)?,
            "libvirt_dir" => cfg.dirs.libvirt = c.directory(key, v)?,
            "pve_dir" => cfg.dirs.pve = c.directory(key, v)?,
            "discover_every" => {
                cfg.discover_every = c.duration(key, v)?;
                if !(DISCOVER_EVERY_MIN..=DISCOVER_EVERY_MAX).contains(&cfg.discover_every) {
                    return Err(c.fail(
                        v.span().start,
                        format!("{key}: between 1s and 1h (a look at the host is a few ms)"),
                    ));
                }
            }
            "high" => (cfg.high, high_at) = (c.level(key, v)?, v.span().start),
            "low" => cfg.low = c.level(key, v)?,
            "cooldown" => cfg.cooldown = c.duration(key, v)?,
            "act_every" => cfg.act_every = c.duration(key, v)?,
            "protect" => {
                cfg.protect = c
                    .list(key, v)?
                    .into_iter()
                    .map(|s| select::parse_cidr(s).map_err(|e| c.value(key, v, e)))
                    .collect::<Result<_, _>>()?;
            }
            "metrics" => {
                let s = c.string(key, v)?;
                cfg.metrics = match s {
                    "" => None,
                    s => Some(s.parse().map_err(|_| {
                        c.fail(
                            v.span().start,
                            format!("{key}: invalid address '{s}' (like \"127.0.0.1:9731\", or \"\" for off)"),
                        )
                    })?),
                };
            }
            "socket" => cfg.socket = c.path_or_off(key, v)?,
            "audit_log" => cfg.audit_log = c.path_or_off(key, v)?,
            "state_dir" => {
                cfg.state_dir = c
                    .path_or_off(key, v)?
                    .ok_or_else(|| c.fail(v.span().start, format!("{key}: name a directory")))?;
            }
            "netns" => cfg.netns = Some(c.string(key, v)?.to_string()),
            "dry_run" => cfg.dry_run = c.boolean(key, v)?,
            "event_buffer" => {
                cfg.event_buffer = Some(usize::try_from(c.count(key, v)?).unwrap_or(usize::MAX));
            }
            "guest" => guest_tables = Some(v),
            _ => {
                return Err(c.fail(
                    k.span().start,
                    format!("unknown key '{}' (the keys: {KEYS})", escaped(key)),
                ));
            }
        }
    }
    if let Some(v) = guest_tables {
        cfg.per_guest = c.guest_policies(v, &cfg.default)?;
    }
    // A share and a count compare only at run time, against the table's limit; there the
    // decision never lets low stand above high.
    let inverted = match (cfg.low, cfg.high) {
        (Level::Share(l), Level::Share(h)) => l > h,
        (Level::Count(l), Level::Count(h)) => l > h,
        _ => false,
    };
    if inverted {
        return Err(c.fail(
            high_at,
            "low must not be above high (the guard acts from high down to low)".into(),
        ));
    }
    Ok(cfg)
}

impl Checker<'_> {
    /// A path, or `""` for off.
    fn directory(&self, key: &str, v: &Value<'_>) -> Result<PathBuf, ConfigError> {
        self.path_or_off(key, v)?
            .ok_or_else(|| self.fail(v.span().start, format!("{key}: name a directory")))
    }

    fn path_or_off(&self, key: &str, v: &Value<'_>) -> Result<Option<PathBuf>, ConfigError> {
        let s = self.string(key, v)?;
        if s.is_empty() {
            return Ok(None);
        }
        if !s.starts_with('/') {
            return Err(self.fail(v.span().start, format!("{key}: '{s}' must be an absolute path")));
        }
        if s.contains('\0') {
            return Err(self.fail(v.span().start, format!("{key}: a path holds no NUL byte")));
        }
        Ok(Some(PathBuf::from(s)))
    }

    fn guest_policies(
        &self,
        v: &Value<'_>,
        default: &Policy,
    ) -> Result<BTreeMap<String, Policy>, ConfigError> {
        let DeValue::Table(guests) = v.get_ref() else {
            return Err(self.fail(v.span().start, "guest: expected [guest.NAME] tables".into()));
        };
        let mut out = BTreeMap::new();
        for (name, table) in guests.iter() {
            let DeValue::Table(keys) = table.get_ref() else {
                return Err(
                    self.fail(name.span().start, "guest: expected [guest.NAME] tables".into())
                );
            };
            let mut p = default.clone();
            for (k, v) in keys.iter() {
                if !self.policy_key(&mut p, k.get_ref(), v)? {
                    return Err(self.fail(
                        k.span().start,
                        format!(
                            "[guest.{}]: unknown key '{}' (quota, action, cap, evict_state, evict_idle, evict_limit)",
                            escaped(name.get_ref()),
                            escaped(k.get_ref())
                        ),
                    ));
                }
            }
            out.insert(name.get_ref().to_string(), p);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, "g.toml").expect_err(text).to_string()
    }

    #[test]
    fn issue_13_every_key_parses() {
        let cfg = parse(
            r#"
guests = "/etc/ctguard/guests.toml"
high = "90%"
low = 200000
quota = 60_000
action = "cap"
evict_state = ["ESTABLISHED", "SYN_RECV"]
evict_idle = "10m"
cap = 20000
cooldown = "5m"
act_every = "2s"
protect = ["172.16.0.1/32", "fd00::/64"]
metrics = ""
socket = "/run/ctguard/g.sock"
audit_log = "/var/log/ctguard/audit.jsonl"
state_dir = "/var/lib/ctguard"
netns = "guests"
dry_run = true

[guest.vm-3]
quota = "10%"
action = "alert"
"#,
            "g.toml",
        )
        .expect("valid");
        assert_eq!(cfg.high, Level::Share(0.9));
        assert_eq!(cfg.low, Level::Count(200_000));
        assert_eq!(cfg.default.quota, Level::Count(60_000));
        assert_eq!(cfg.default.action, Action::Cap);
        assert_eq!(cfg.default.evict_state.len(), 3, "ESTABLISHED is TCP's and SCTP's");
        assert_eq!(cfg.default.evict_idle, Some(Duration::from_secs(600)));
        assert_eq!(cfg.cooldown, Duration::from_secs(300));
        assert_eq!(cfg.protect.len(), 2);
        assert_eq!(cfg.metrics, None);
        assert_eq!(cfg.netns.as_deref(), Some("guests"));
        assert!(cfg.dry_run);
        let vm3 = cfg.policy("vm-3");
        assert_eq!((vm3.quota, vm3.action, vm3.cap), (Level::Share(0.1), Action::Alert, 20_000));
        assert_eq!(cfg.policy("other").action, Action::Cap);
    }

    #[test]
    fn issue_13_bad_values_name_their_line() {
        for (text, line, words) in [
            ("high = \"95\"", 1, "invalid level '95'"),
            ("\nhigh = \"0%\"", 2, "invalid level"),
            ("high = \"101%\"", 1, "invalid level"),
            ("low = -5", 1, "positive count"),
            ("quota = 0", 1, "positive count"),
            ("action = \"nuke\"", 1, "invalid action 'nuke'"),
            ("cap = 5000000000", 1, "too large"),
            ("evict_state = [\"ESTABLISHD\"]", 1, "ESTABLISHD"),
            ("evict_state = []", 1, "at least one state"),
            ("evict_idle = \"soon\"", 1, "soon"),
            ("cooldown = \"0s\"", 1, "longer than zero"),
            ("protect = [\"10.0.0.0/33\"]", 1, "10.0.0.0/33"),
            ("protect = \"10.0.0.1\"", 1, "list of strings"),
            ("metrics = \"localhost\"", 1, "invalid address"),
            ("socket = \"guard.sock\"", 1, "absolute path"),
            ("state_dir = \"\"", 1, "name a directory"),
            ("dry_run = \"yes\"", 1, "true or false"),
            ("\n\nhgh = \"90%\"", 3, "unknown key 'hgh'"),
            ("[guest.a]\nquot = 5", 2, "[guest.a]: unknown key 'quot'"),
            ("guest = 5", 1, "[guest.NAME]"),
            ("high = \"70%\"\nlow = \"80%\"", 1, "low must not be above high"),
            ("discover = 1", 1, "true or false"),
            ("libvirt_dir = \"run/libvirt\"", 1, "absolute path"),
            ("pve_dir = \"\"", 1, "name a directory"),
            ("discover_every = \"500ms\"", 1, "between 1s and 1h"),
            ("discover_every = \"2h\"", 1, "between 1s and 1h"),
            ("libvirt_dir = \"/tmp/a\\u0000b\"", 1, "NUL"),
            ("high = ", 1, ""),
        ] {
            let e = err(text);
            assert!(e.starts_with(&format!("g.toml:{line}: ")), "{text:?}: {e}");
            assert!(e.contains(words), "{text:?}: {e}");
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
    }

    #[test]
    fn issue_13_unknown_guest_policies_are_refused_against_the_map() {
        let cfg = parse("[guest.vm-9]\nquota = 5", "g.toml").expect("valid text");
        let mut map = GuestMap::new();
        map.add("vm-1", vec!["172.16.3.5/32".parse().expect("cidr")]);
        let e = cfg.check_guests(&map).expect_err("vm-9 is not in the map");
        assert!(e.to_string().contains("[guest.vm-9]"), "{e}");
    }

    #[test]
    fn issue_14_discovery_keys_and_policies_for_guests_found_later() {
        let text = "discover = true\nlibvirt_dir = \"/srv/libvirt\"\npve_dir = \"/srv/pve\"\n\
                    discover_every = \"1m\"\n[guest.web-7]\nquota = 5";
        let cfg = parse(text, "g.toml").expect("valid text");
        assert!(cfg.discover);
        assert_eq!(cfg.dirs.libvirt, PathBuf::from("/srv/libvirt"));
        assert_eq!(cfg.dirs.pve, PathBuf::from("/srv/pve"));
        assert_eq!(cfg.discover_every, Duration::from_secs(60));
        // web-7 is in no file: it may be found on the host, so it is no refusal.
        cfg.check_guests(&GuestMap::new()).expect("a name discovery may find");
        let d = defaults();
        assert_eq!((d.discover, d.discover_every), (false, Duration::from_secs(30)));
        assert_eq!(d.dirs, Dirs::default());
    }

    #[test]
    fn issue_13_levels_in_entries() {
        assert_eq!(Level::Share(0.9).entries(262_144), 235_929);
        assert_eq!(Level::Count(60_000).entries(262_144), 60_000);
    }
}
