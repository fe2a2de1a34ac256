//! The guard's per-guest caps (issue 13): an nftables `ct count` rule per offender network, in
//! ctguard's own table `inet ctguard`, added and removed in atomic transactions, adopted again
//! by a restarted guard, and never touching any other table.
//!
//! # Why the `nftables` crate, driving `nft -j`
//!
//! The `nftables` crate (nftables-rs) is the kept Rust binding of libnftables' JSON API: typed
//! `Table`/`Chain`/`Rule` objects and statements, `ct count` (`CTCount`) and rule comments
//! included, serialised to the documented schema that `nft -j -f -` applies as ONE netlink
//! batch, i.e. one transaction the kernel commits whole or not at all. The alternatives:
//! `rustables` (0.9: netlink expressions built by hand) has no `connlimit` expression at all,
//! and its GPL-3.0 would bind this MIT binary; binding libnftnl/libnftables in C needs
//! `unsafe` and a C build for what the JSON API already gives; building `nft` text means
//! quoting free-form guest names into a language we do not parse back. Reading back also goes
//! through the JSON API (`nft -j list chain`), so the caps a guard finds after a restart are
//! parsed from typed objects, not scraped text.
//!
//! We use the crate's types but not its `helper` runner: that one waits for `nft` without a
//! time limit and panics on a closed pipe. [`Caps`] runs `nft` itself, kills it after
//! [`NFT_TIMEOUT`] (a hung `nft` must not hang the guard) and turns its stderr into
//! [`CapError::Failed`]. The child inherits the calling thread's network namespace (fork
//! copies the caller's namespaces), so a guard thread that entered the guarded namespace caps
//! there.
//!
//! # What the kernel does with the rule
//!
//! One base chain, `caps`: `type filter hook prerouting priority -150`, policy accept. Each cap
//! is one rule: `ip saddr NET ct state new ct count over LIMIT drop comment "ctguard:GUEST"`
//! (`ip6 saddr` for IPv6; both live in the one `inet` table).
//!
//! - **Hook and priority.** conntrack creates the entry at prerouting priority -200 and
//!   inserts it into the table only at confirmation, the last thing before the packet is
//!   delivered or sent out (postrouting / input, priority `INT_MAX`). A packet dropped at
//!   prerouting -150 takes its still-unconfirmed entry with it: a refused connection never
//!   occupies a slot, so the table cannot fill through a capped guest. Prerouting sees both
//!   paths guest traffic takes, forwarded (the hypervisor routes it) and local input (to the
//!   host), and sees the guest's own source address, before any SNAT/masquerade (postrouting)
//!   rewrites it. The host's own output is not capped (it is not guest traffic).
//! - **`drop`, not `reject`.** `reject` is only valid in input, forward and output; in
//!   prerouting only `drop` is. A dropped SYN makes the guest's `connect()` wait and retry
//!   rather than hammer the host with immediate retries after a RST.
//! - **`ct state new`.** Only a connection's first packet reaches `ct count`: established
//!   flows are never dropped by a cap, and only new connections are counted.
//! - **How `ct count` counts.** `nft_connlimit` keeps its own list per rule of the connections
//!   that reached the expression, and drops those the conntrack table no longer holds (or TCP
//!   flows in TIME_WAIT/CLOSE) lazily as new ones arrive. So flows that existed before the rule
//!   was added are NOT counted: a cap of N allows N more concurrent new connections beyond
//!   whatever the guest already held (evicting its stale flows is the other half of relief).
//!   The count is per rule: one rule per network, so a guest with a /24 shares N across the
//!   /24, and a guest with an IPv4 and an IPv6 network gets N in each.
//! - **The guest's name** lives in the rule's comment as `ctguard:` and the name
//!   percent-encoded (every byte outside `A-Z a-z 0-9 . _ ~ -` becomes `%XX`), so any string
//!   survives the round trip and nothing in it can be read as syntax by `nft` or its text
//!   listing. nftables limits a comment to 128 bytes (`NFTNL_UDATA_COMMENT_MAXLEN`); a name
//!   whose encoding does not fit, or an empty name, is refused with [`CapError::BadGuest`]
//!   before anything is sent. Rules in the chain without a `ctguard:` comment are not ours:
//!   they are listed nowhere and never touched.
//! - **No `owner` flag** on the table: an owned table vanishes with the process, and a restart
//!   must not lift every cap at once. [`Caps::open`] adopts what is there instead.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use nftables::expr::{CT, Expression, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{CTCount, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

/// ctguard's table, family `inet` (IPv4 and IPv6 in one).
pub const TABLE: &str = "ctguard";
/// The base chain holding the caps.
pub const CHAIN: &str = "caps";
/// The chain's priority on the prerouting hook: after conntrack (-200) made the entry, before
/// it is confirmed.
pub const PRIORITY: i32 = -150;
/// How long one `nft` run may take before it is killed.
pub const NFT_TIMEOUT: Duration = Duration::from_secs(5);
/// What marks a rule as a ctguard cap, before the encoded guest name.
const COMMENT_PREFIX: &str = "ctguard:";
/// nftables' longest comment, in bytes (`NFTNL_UDATA_COMMENT_MAXLEN`).
const COMMENT_MAX: usize = 128;
/// The most `nft` may print on one stream; past this the run is refused, not buffered.
const OUTPUT_MAX: u64 = 16 << 20;
/// Where `nft` is looked for first (a root daemon should not take it from `$PATH` when it
/// does not have to); then `nft` on `$PATH`.
const NFT_PATHS: [&str; 2] = ["/usr/sbin/nft", "/sbin/nft"];

/// One cap rule: new connections from `net` beyond `limit` are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cap {
    /// The guest it caps (from the rule's comment).
    pub guest: String,
    /// The source network (an address is a /32 or /128).
    pub net: IpNetwork,
    /// How many concurrent new connections the rule lets through.
    pub limit: u32,
}

/// ctguard's caps in the current network namespace: `inet ctguard`, chain `caps`.
#[derive(Debug)]
pub struct Caps {
    nft: Nft,
    adopted: Vec<Cap>,
}

/// Why a cap could not be read, installed or removed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CapError {
    /// `nft` could not be started (not installed: `apt-get install nftables`).
    #[error("cannot run {}: {source} (is nftables installed?)", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `nft` did not finish in time and was killed.
    #[error("{} did not finish {op} within {timeout:?} and was killed", program.display())]
    Timeout {
        /// The program.
        program: PathBuf,
        /// What it was asked to do.
        op: &'static str,
        /// The limit.
        timeout: Duration,
    },
    /// `nft` exited with an error; `stderr` is its own explanation (EPERM: the guard needs
    /// CAP_NET_ADMIN).
    #[error("{} failed {op} ({}): {stderr}", program.display(), exit_text(*code))]
    Failed {
        /// The program.
        program: PathBuf,
        /// What it was asked to do.
        op: &'static str,
        /// Its exit code, `None` when a signal ended it.
        code: Option<i32>,
        /// Its standard error, trimmed and shortened.
        stderr: String,
    },
    /// `nft` printed more than ctguard reads, or something that is not its JSON.
    #[error("{} {op}: unreadable output: {why}", program.display())]
    Output {
        /// The program.
        program: PathBuf,
        /// What it was asked to do.
        op: &'static str,
        /// What was wrong with it.
        why: String,
    },
    /// The guest's name cannot be stored in a rule comment.
    #[error("guest name {name:?} cannot be stored in an nftables comment: {why}")]
    BadGuest {
        /// The name.
        name: String,
        /// Why not.
        why: &'static str,
    },
    /// A cap needs at least one network.
    #[error("guest {guest:?}: no networks to cap")]
    NoNetworks {
        /// The guest.
        guest: String,
    },
}

impl Caps {
    /// Ensures table `inet ctguard` and its chain exist (idempotent: `add` of an existing
    /// table or chain with the same hook changes nothing; both in one transaction) and reads
    /// the caps already there (a restarted guard adopts them: [`Caps::adopted`]).
    pub fn open() -> Result<Caps, CapError> {
        Caps::open_with(&nft_program(), NFT_TIMEOUT)
    }

    /// [`Caps::open`] with another `nft` and time limit (tests: a hung or failing `nft`).
    pub fn open_with(program: &Path, timeout: Duration) -> Result<Caps, CapError> {
        let nft = Nft { program: program.to_path_buf(), timeout };
        nft.apply("creating table inet ctguard", &ensure_document())?;
        let adopted = nft.installed()?.into_iter().map(|i| i.cap).collect();
        Ok(Caps { nft, adopted })
    }

    /// The caps that were in place when [`Caps::open`] ran (left by an earlier guard).
    pub fn adopted(&self) -> &[Cap] {
        &self.adopted
    }

    /// The caps in place now, read back from the kernel (guest from the rule's comment), in
    /// rule order.
    pub fn list(&self) -> Result<Vec<Cap>, CapError> {
        Ok(self.nft.installed()?.into_iter().map(|i| i.cap).collect())
    }

    /// Caps `guest`'s networks at `limit` new connections each, in one atomic transaction.
    /// Idempotent: the same cap again changes nothing (no transaction at all); a different
    /// limit or set of networks replaces the old rules in the same transaction, which also
    /// re-creates the table and chain if someone deleted them.
    pub fn install(&mut self, guest: &str, nets: &[IpNetwork], limit: u32) -> Result<(), CapError> {
        let comment = comment_of(guest)?;
        if nets.is_empty() {
            return Err(CapError::NoNetworks { guest: guest.to_string() });
        }
        let installed = self.nft.installed()?;
        if let Some(doc) = install_document(&installed, guest, &comment, nets, limit) {
            self.nft.apply("installing a cap", &doc)?;
        }
        Ok(())
    }

    /// Removes `guest`'s cap rules, atomically; removing a cap that is not there is Ok.
    pub fn remove(&mut self, guest: &str) -> Result<(), CapError> {
        let installed = self.nft.installed()?;
        if let Some(doc) = remove_document(&installed, guest) {
            self.nft.apply("removing a cap", &doc)?;
        }
        Ok(())
    }
}

/// How `nft` ended, for [`CapError::Failed`].
fn exit_text(code: Option<i32>) -> String {
    code.map_or_else(|| "killed by a signal".to_string(), |c| format!("exit {c}"))
}

/// A cap rule as read back, with the handle that deletes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Installed {
    handle: u32,
    cap: Cap,
}

/// The rule comment for `guest`: `ctguard:` and the percent-encoded name.
fn comment_of(guest: &str) -> Result<String, CapError> {
    let bad = |why| CapError::BadGuest { name: guest.to_string(), why };
    if guest.is_empty() {
        return Err(bad("the name is empty"));
    }
    let mut out = String::from(COMMENT_PREFIX);
    for b in guest.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > COMMENT_MAX {
        return Err(bad("encoded, it is longer than nftables' 128-byte comment"));
    }
    Ok(out)
}

/// The guest a comment names, if it is one of ours.
fn guest_of(comment: &str) -> Option<String> {
    let encoded = comment.strip_prefix(COMMENT_PREFIX)?;
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(out).ok()?;
    (!name.is_empty()).then_some(name)
}

/// The network as nftables stores it: host bits cleared (nft would clear them, and an
/// idempotent install must compare like with like).
fn normalised(net: IpNetwork) -> IpNetwork {
    IpNetwork::new(net.network(), net.prefix()).unwrap_or(net)
}

fn table() -> Table<'static> {
    Table { family: NfFamily::INet, name: TABLE.into(), handle: None }
}

fn chain() -> Chain<'static> {
    Chain {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: CHAIN.into(),
        _type: Some(NfChainType::Filter),
        hook: Some(NfHook::Prerouting),
        prio: Some(PRIORITY),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }
}

/// `add table` + `add chain`: both idempotent, one transaction.
fn ensure_document() -> Nftables<'static> {
    document(ensure_cmds())
}

fn ensure_cmds() -> Vec<NfCmd<'static>> {
    vec![NfCmd::Add(NfListObject::Table(table())), NfCmd::Add(NfListObject::Chain(chain()))]
}

fn document(cmds: Vec<NfCmd<'static>>) -> Nftables<'static> {
    Nftables { objects: cmds.into_iter().map(NfObject::CmdObject).collect::<Vec<_>>().into() }
}

/// `ip saddr NET ct state new ct count over LIMIT drop comment "ctguard:GUEST"`.
fn cap_rule(net: IpNetwork, limit: u32, comment: &str) -> Rule<'static> {
    let (protocol, full) = match net {
        IpNetwork::V4(_) => ("ip", 32),
        IpNetwork::V6(_) => ("ip6", 128),
    };
    let addr = Expression::String(net.network().to_string().into());
    let right = if net.prefix() == full {
        addr
    } else {
        Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(addr),
            len: u32::from(net.prefix()),
        }))
    };
    let saddr = Statement::Match(Match {
        left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
            protocol: protocol.into(),
            field: "saddr".into(),
        }))),
        right,
        op: Operator::EQ,
    });
    let new = Statement::Match(Match {
        left: Expression::Named(NamedExpression::CT(CT {
            key: "state".into(),
            family: None,
            dir: None,
        })),
        right: Expression::String("new".into()),
        op: Operator::IN,
    });
    let count = Statement::CTCount(CTCount { val: Expression::Number(limit), inv: Some(true) });
    Rule {
        family: NfFamily::INet,
        table: TABLE.into(),
        chain: CHAIN.into(),
        expr: vec![saddr, new, count, Statement::Drop(None)].into(),
        handle: None,
        index: None,
        comment: Some(comment.to_string().into()),
    }
}

fn delete_rule(handle: u32) -> NfCmd<'static> {
    NfCmd::Delete(NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: TABLE.into(),
        chain: CHAIN.into(),
        expr: Cow::Owned(Vec::new()),
        handle: Some(handle),
        index: None,
        comment: None,
    }))
}

/// The transaction that makes `guest`'s caps exactly `nets` at `limit`, or `None` when they
/// already are.
fn install_document(
    installed: &[Installed],
    guest: &str,
    comment: &str,
    nets: &[IpNetwork],
    limit: u32,
) -> Option<Nftables<'static>> {
    let mut want: Vec<IpNetwork> = nets.iter().copied().map(normalised).collect();
    want.sort_unstable();
    want.dedup();
    let mine: Vec<&Installed> = installed.iter().filter(|i| i.cap.guest == guest).collect();
    let mut have: Vec<(IpNetwork, u32)> = mine.iter().map(|i| (i.cap.net, i.cap.limit)).collect();
    have.sort_unstable();
    if have == want.iter().map(|n| (*n, limit)).collect::<Vec<_>>() {
        return None;
    }
    let mut cmds = ensure_cmds();
    cmds.extend(mine.iter().map(|i| delete_rule(i.handle)));
    cmds.extend(want.iter().map(|n| NfCmd::Add(NfListObject::Rule(cap_rule(*n, limit, comment)))));
    Some(document(cmds))
}

/// The transaction that deletes `guest`'s rules, or `None` when it has none.
fn remove_document(installed: &[Installed], guest: &str) -> Option<Nftables<'static>> {
    let cmds: Vec<_> =
        installed.iter().filter(|i| i.cap.guest == guest).map(|i| delete_rule(i.handle)).collect();
    (!cmds.is_empty()).then(|| document(cmds))
}

/// The caps in an `nft -j list chain inet ctguard caps` document. Each object is read on its
/// own: a rule someone else put in our chain, in a shape the crate does not know, is skipped,
/// not an error; so is any rule without our comment or our exact shape.
fn parse_installed(json: &str) -> Result<Vec<Installed>, String> {
    let doc: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let objects = doc
        .get("nftables")
        .and_then(|v| v.as_array())
        .ok_or_else(|| "no \"nftables\" array".to_string())?;
    let mut out = Vec::new();
    for object in objects {
        let Some(rule) = object.get("rule") else { continue };
        let Ok(rule) = serde_json::from_value::<Rule<'static>>(rule.clone()) else { continue };
        if let Some(installed) = cap_of(&rule) {
            out.push(installed);
        }
    }
    Ok(out)
}

/// A rule of ours, read back: the inverse of [`cap_rule`].
fn cap_of(rule: &Rule<'_>) -> Option<Installed> {
    if rule.family != NfFamily::INet || rule.table != TABLE || rule.chain != CHAIN {
        return None;
    }
    let guest = guest_of(rule.comment.as_deref()?)?;
    let handle = rule.handle?;
    let [
        Statement::Match(saddr),
        Statement::Match(new),
        Statement::CTCount(count),
        Statement::Drop(_),
    ] = &rule.expr[..]
    else {
        return None;
    };
    let Expression::Named(NamedExpression::Payload(Payload::PayloadField(field))) = &saddr.left
    else {
        return None;
    };
    if field.field != "saddr" || saddr.op != Operator::EQ {
        return None;
    }
    let (addr, len) = match &saddr.right {
        Expression::String(a) => (a.as_ref(), None),
        Expression::Named(NamedExpression::Prefix(p)) => match p.addr.as_ref() {
            Expression::String(a) => (a.as_ref(), Some(p.len)),
            _ => return None,
        },
        _ => return None,
    };
    let addr: std::net::IpAddr = addr.parse().ok()?;
    let full = if addr.is_ipv4() { 32 } else { 128 };
    let family_ok =
        matches!((field.protocol.as_ref(), addr.is_ipv4()), ("ip", true) | ("ip6", false));
    let len = u8::try_from(len.unwrap_or(full)).ok()?;
    let net = IpNetwork::new(addr, len).ok()?;
    let ct_state =
        matches!(&new.left, Expression::Named(NamedExpression::CT(ct)) if ct.key == "state");
    let is_new = ct_state && matches!(&new.right, Expression::String(s) if s == "new");
    let Expression::Number(limit) = count.val else { return None };
    (family_ok && is_new && count.inv == Some(true))
        .then_some(Installed { handle, cap: Cap { guest, net, limit } })
}

/// `nft` on this machine: the first of [`NFT_PATHS`] that exists, else `nft` on `$PATH`.
fn nft_program() -> PathBuf {
    NFT_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("nft"))
}

/// One `nft` binary and how long each run of it may take.
#[derive(Debug)]
struct Nft {
    program: PathBuf,
    timeout: Duration,
}

impl Nft {
    /// Applies a document as one transaction (`nft -j -f -`).
    fn apply(&self, op: &'static str, doc: &Nftables<'_>) -> Result<(), CapError> {
        let payload = serde_json::to_string(doc).map_err(|e| self.output(op, e.to_string()))?;
        self.run(op, &["-j", "-f", "-"], Some(payload.into_bytes())).map(drop)
    }

    /// Our chain's cap rules with their handles.
    fn installed(&self) -> Result<Vec<Installed>, CapError> {
        const OP: &str = "listing the caps";
        let out = self.run(OP, &["-j", "list", "chain", "inet", TABLE, CHAIN], None)?;
        parse_installed(&out).map_err(|why| self.output(OP, why))
    }

    fn output(&self, op: &'static str, why: String) -> CapError {
        CapError::Output { program: self.program.clone(), op, why }
    }

    /// Runs `nft args`, feeding it `stdin`, killed after the time limit; its stdout, or its
    /// stderr as the error.
    fn run(
        &self,
        op: &'static str,
        args: &[&str],
        stdin: Option<Vec<u8>>,
    ) -> Result<String, CapError> {
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| CapError::Spawn { program: self.program.clone(), source })?;
        // Feeding and draining on threads of their own: a child that stops reading or
        // writing cannot block us past the deadline, and killing it closes the pipes, which
        // ends the threads.
        let feeder = match (child.stdin.take(), stdin) {
            (Some(mut pipe), Some(bytes)) => Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            })),
            _ => None,
        };
        let out = child.stdout.take().map(drain);
        let err = child.stderr.take().map(drain);
        // On a timeout the threads are left to end by themselves: a grandchild of a wrapper
        // script may still hold the pipes open, and the guard must not wait for it.
        let status = self.wait(&mut child, op)?;
        if let Some(f) = feeder {
            let _ = f.join();
        }
        let collect = |h: Option<std::thread::JoinHandle<Drained>>| {
            h.and_then(|h| h.join().ok()).unwrap_or(Drained { bytes: Vec::new(), over: false })
        };
        let (out, err) = (collect(out), collect(err));
        if !status.success() {
            let text = String::from_utf8_lossy(&err.bytes);
            let text: String = text.trim().chars().take(2000).collect();
            return Err(CapError::Failed {
                program: self.program.clone(),
                op,
                code: status.code(),
                stderr: text.replace('\n', "; "),
            });
        }
        if out.over {
            return Err(self.output(op, format!("more than {OUTPUT_MAX} bytes")));
        }
        String::from_utf8(out.bytes).map_err(|e| self.output(op, e.to_string()))
    }

    /// Waits for the child until the deadline, then kills and reaps it.
    fn wait(
        &self,
        child: &mut Child,
        op: &'static str,
    ) -> Result<std::process::ExitStatus, CapError> {
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(CapError::Timeout {
                        program: self.program.clone(),
                        op,
                        timeout: self.timeout,
                    });
                }
                Err(source) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(CapError::Spawn { program: self.program.clone(), source });
                }
            }
        }
    }
}

/// What a reader thread collected: at most [`OUTPUT_MAX`] bytes, and whether there was more.
struct Drained {
    bytes: Vec<u8>,
    over: bool,
}

/// Reads a pipe to its end on a thread, keeping at most [`OUTPUT_MAX`] bytes and discarding
/// the rest (the writer must never block on a full pipe).
fn drain(pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Drained> {
    std::thread::spawn(move || {
        let mut pipe = pipe;
        let mut bytes = Vec::new();
        let _ = pipe.by_ref().take(OUTPUT_MAX).read_to_end(&mut bytes);
        let over = std::io::copy(&mut pipe, &mut std::io::sink()).map(|n| n > 0).unwrap_or(false);
        Drained { bytes, over }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn json(doc: &Nftables<'_>) -> String {
        serde_json::to_string(doc).unwrap()
    }

    const ENSURE: &str = r#"{"add":{"table":{"family":"inet","name":"ctguard"}}},{"add":{"chain":{"family":"inet","table":"ctguard","name":"caps","type":"filter","hook":"prerouting","prio":-150,"policy":"accept"}}}"#;

    #[test]
    fn issue_13_open_sends_table_and_chain_in_one_document() {
        assert_eq!(json(&ensure_document()), format!(r#"{{"nftables":[{ENSURE}]}}"#));
    }

    #[test]
    fn issue_13_install_sends_one_rule_per_network_ipv4_and_ipv6() {
        let doc = install_document(
            &[],
            "web 1",
            &comment_of("web 1").unwrap(),
            &[net("10.0.0.7/24"), net("2001:db8::1/128")],
            20,
        )
        .unwrap();
        let rule = |proto: &str, right: &str| {
            format!(
                r#"{{"add":{{"rule":{{"family":"inet","table":"ctguard","chain":"caps","expr":[{{"match":{{"left":{{"payload":{{"protocol":"{proto}","field":"saddr"}}}},"right":{right},"op":"=="}}}},{{"match":{{"left":{{"ct":{{"key":"state"}}}},"right":"new","op":"in"}}}},{{"ct count":{{"val":20,"inv":true}}}},{{"drop":null}}],"comment":"ctguard:web%201"}}}}}}"#
            )
        };
        let want = format!(
            r#"{{"nftables":[{ENSURE},{},{}]}}"#,
            rule("ip", r#"{"prefix":{"addr":"10.0.0.0","len":24}}"#),
            rule("ip6", r#""2001:db8::1""#),
        );
        assert_eq!(json(&doc), want);
    }

    fn installed(handle: u32, guest: &str, n: &str, limit: u32) -> Installed {
        Installed { handle, cap: Cap { guest: guest.into(), net: net(n), limit } }
    }

    #[test]
    fn issue_13_install_is_idempotent_and_replaces_a_different_limit_in_one_document() {
        let have = [installed(4, "a", "10.0.0.0/24", 20), installed(5, "b", "10.0.1.0/24", 20)];
        let c = comment_of("a").unwrap();
        // The same cap (host bits and duplicates aside): nothing to send.
        assert_eq!(
            install_document(&have, "a", &c, &[net("10.0.0.9/24"), net("10.0.0.0/24")], 20),
            None
        );
        // Another limit: delete by handle and add, in the same document; b is untouched.
        let doc = json(&install_document(&have, "a", &c, &[net("10.0.0.0/24")], 30).unwrap());
        assert!(doc.starts_with(&format!(r#"{{"nftables":[{ENSURE},{{"delete":{{"rule":{{"family":"inet","table":"ctguard","chain":"caps","expr":[],"handle":4}}}}}},{{"add":{{"rule""#)), "{doc}");
        assert!(doc.contains(r#""val":30"#) && !doc.contains(r#""handle":5"#), "{doc}");
    }

    #[test]
    fn issue_13_remove_deletes_only_the_guests_rules_and_nothing_when_absent() {
        let have = [
            installed(4, "a", "10.0.0.0/24", 20),
            installed(6, "a", "fd00::/64", 20),
            installed(5, "b", "10.0.1.0/24", 20),
        ];
        assert_eq!(
            json(&remove_document(&have, "a").unwrap()),
            r#"{"nftables":[{"delete":{"rule":{"family":"inet","table":"ctguard","chain":"caps","expr":[],"handle":4}}},{"delete":{"rule":{"family":"inet","table":"ctguard","chain":"caps","expr":[],"handle":6}}}]}"#
        );
        assert_eq!(remove_document(&have, "c"), None);
    }

    #[test]
    fn issue_13_guest_names_round_trip_through_the_comment() {
        for name in [
            "web-1",
            "a b",
            "100%",
            "ünï/cödé",
            "quote\"back\\slash",
            "ctguard:x",
            "\n\t\0",
            "~._-",
        ] {
            let c = comment_of(name).unwrap();
            assert!(c.len() <= COMMENT_MAX);
            assert!(c.bytes().all(|b| b.is_ascii_graphic()), "{c:?}");
            assert_eq!(guest_of(&c).as_deref(), Some(name), "{c:?}");
        }
        assert_eq!(guest_of("someone else's rule"), None);
        assert_eq!(guest_of("ctguard:%zz"), None);
        assert_eq!(guest_of("ctguard:%4"), None);
        assert_eq!(guest_of("ctguard:"), None);
    }

    #[test]
    fn issue_13_names_that_cannot_be_stored_are_refused() {
        assert!(matches!(comment_of(""), Err(CapError::BadGuest { .. })));
        let longest = "g".repeat(COMMENT_MAX - COMMENT_PREFIX.len());
        assert!(comment_of(&longest).is_ok());
        assert!(matches!(comment_of(&format!("{longest}g")), Err(CapError::BadGuest { .. })));
        // Encoding counts: 40 spaces are 120 bytes.
        assert!(comment_of(&" ".repeat(40)).is_ok());
        assert!(matches!(comment_of(&" ".repeat(41)), Err(CapError::BadGuest { .. })));
    }

    /// What `nft -j list chain inet ctguard caps` printed (nftables 1.0.6, Linux 6.1) for a
    /// chain holding two caps of ours, one foreign rule and one rule with a comment not ours.
    const LISTED: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"chain": {"family": "inet", "table": "ctguard", "name": "caps", "handle": 1, "type": "filter", "hook": "prerouting", "prio": -150, "policy": "accept"}}, {"rule": {"family": "inet", "table": "ctguard", "chain": "caps", "handle": 2, "comment": "ctguard:a%20b", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.0.0.0", "len": 24}}}}, {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}, {"ct count": {"val": 20, "inv": true}}, {"drop": null}]}}, {"rule": {"family": "inet", "table": "ctguard", "chain": "caps", "handle": 3, "comment": "ctguard:b", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": "2001:db8::1"}}, {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}, {"ct count": {"val": 3, "inv": true}}, {"drop": null}]}}, {"rule": {"family": "inet", "table": "ctguard", "chain": "caps", "handle": 4, "expr": [{"counter": {"packets": 0, "bytes": 0}}]}}, {"rule": {"family": "inet", "table": "ctguard", "chain": "caps", "handle": 5, "comment": "x", "expr": [{"accept": null}]}}]}"#;

    #[test]
    fn issue_13_listing_reads_our_rules_back_and_skips_the_rest() {
        assert_eq!(
            parse_installed(LISTED).unwrap(),
            vec![installed(2, "a b", "10.0.0.0/24", 20), installed(3, "b", "2001:db8::1/128", 3)]
        );
        assert!(parse_installed("not json").is_err());
    }

    #[test]
    fn issue_13_what_install_sends_reads_back_as_the_same_cap() {
        let rule = cap_rule(net("fd00:1::/64"), 7, &comment_of("g").unwrap());
        let mut value = serde_json::to_value(&rule).unwrap();
        value["handle"] = 9.into();
        let back: Rule<'static> = serde_json::from_value(value).unwrap();
        assert_eq!(cap_of(&back), Some(installed(9, "g", "fd00:1::/64", 7)));
    }

    fn fake_nft(dir: &tempfile::TempDir, script: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join("nft");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn issue_13_a_hung_nft_is_killed_after_the_time_limit() {
        let dir = tempfile::tempdir().unwrap();
        // Not `exec`: the orphaned `sleep` keeps the pipes open after the shell is killed.
        let nft = fake_nft(&dir, "sleep 4");
        let start = Instant::now();
        let got = Caps::open_with(&nft, Duration::from_millis(300));
        assert!(matches!(got, Err(CapError::Timeout { .. })), "{got:?}");
        assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    }

    #[test]
    fn issue_13_nft_stderr_becomes_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let nft =
            fake_nft(&dir, "cat >/dev/null; echo 'Error: Operation not permitted' >&2; exit 1");
        let err = Caps::open_with(&nft, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, CapError::Failed { code: Some(1), .. }), "{err:?}");
        assert!(err.to_string().contains("Operation not permitted"), "{err}");
        let missing = Caps::open_with(&dir.path().join("absent"), Duration::from_secs(1));
        assert!(matches!(missing, Err(CapError::Spawn { .. })), "{missing:?}");
    }
}
