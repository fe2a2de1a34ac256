//! ctguard: a netlink-native conntrack manager.
//!
//! Data flows one way: kernel bytes → [`ctnetlink`] decodes → [`Flow`] → [`Selector`] →
//! tally / evict / print. Nothing outside `ctnetlink` sees a netlink attribute; nothing inside
//! it knows about guests, tables or terminals.
//!
//! The engines another program would use: [`ctnetlink`] (the kernel interface: dumps,
//! identity-guarded deletes, events, stats), [`flow`], [`select`], [`guests`] (and [`discover`], guest names from the hypervisor's records), [`tally`],
//! [`live`] (the live table and its engine, `live::Watcher`), [`evict`] (the strategy, the
//! re-checked deletes, the proven flush), [`expect`] (the expectation table), and [`spool`] (what an eviction deleted, on disk). The capability rooms the `ctguard` binary runs —
//! [`doctor`], [`tune`], [`audit`], [`output`] and their helpers ([`kmsg`], [`sysctl`],
//! [`netns`], [`kernel`], [`trusted_dir`], [`stats`], [`event`], [`flushproof`],
//! [`protocols`], [`requester`]) — are
//! public because the binary is a separate crate that calls them, and the guard will too.
//!
//! Enums the kernel or a later version may extend (`Family`, `ProtoState` and the protocol
//! states, `EventKind`, the error types) are `#[non_exhaustive]`: match them with a `_` arm.

#![deny(missing_docs)]

pub mod flow;
pub mod output;

pub use flow::{Counter, Family, Flow, L4, Proto, ProtoState, Status, TcpState, Tuple};
pub mod atomic_file;
pub mod audit;
pub mod bounded;
pub mod connlabel;
pub mod ctnetlink;
pub mod discover;
pub mod doctor;
pub mod event;
pub mod evict;
pub mod expect;
pub mod flushproof;
pub mod guard;
pub mod guests;
pub mod kernel;
pub mod kmsg;
pub mod live;
pub mod netns;
pub mod protocols;
pub mod requester;
pub mod rtnl;
pub mod select;
pub mod spool;
pub mod stats;
pub mod sysctl;
pub mod tally;
pub mod trusted_dir;
pub mod tune;

pub use ctnetlink::{Conntrack, DumpFilter};
pub use guests::GuestMap;
pub use select::Selector;
pub use tally::{GroupBy, Tally};

/// Issue 11.7: the enums the kernel or a later version may extend are `#[non_exhaustive]`, so a
/// match outside this crate needs a `_` arm. Each block below lists every variant one of them has
/// today and must fail to compile with E0004; the last one, with the `_` arm, must compile.
///
/// ```compile_fail,E0004
/// fn arm(v: &ctguard::Family) -> u8 {
///     match v {
///         ctguard::Family::Ipv4 => 0,
///         ctguard::Family::Ipv6 => 1,
///         ctguard::Family::Other(..) => 2,
///     }
/// }
/// ```
///
/// ```compile_fail,E0004
/// fn arm(v: &ctguard::ProtoState) -> u8 {
///     match v {
///         ctguard::ProtoState::Tcp(..) => 0,
///         ctguard::ProtoState::Sctp(..) => 1,
///         ctguard::ProtoState::Dccp(..) => 2,
///     }
/// }
/// ```
///
/// ```compile_fail,E0004
/// fn arm(v: &ctguard::event::EventKind) -> u8 {
///     match v {
///         ctguard::event::EventKind::New => 0,
///         ctguard::event::EventKind::Update => 1,
///         ctguard::event::EventKind::Destroy => 2,
///     }
/// }
/// ```
///
/// ```compile_fail,E0004
/// fn arm(v: &ctguard::ctnetlink::Error) -> u8 {
///     match v {
///         ctguard::ctnetlink::Error::Io { .. } => 0,
///         ctguard::ctnetlink::Error::Kernel { .. } => 1,
///         ctguard::ctnetlink::Error::Overrun { .. } => 2,
///         ctguard::ctnetlink::Error::Timeout { .. } => 3,
///         ctguard::ctnetlink::Error::Malformed { .. } => 4,
///     }
/// }
/// ```
///
/// ```compile_fail,E0004
/// fn arm(v: &ctguard::audit::Error) -> u8 {
///     match v {
///         ctguard::audit::Error::Io { .. } => 0,
///         ctguard::audit::Error::Refused { .. } => 1,
///     }
/// }
/// ```
///
/// ```compile_fail,E0004
/// fn arm(v: &ctguard::live::watcher::Error) -> u8 {
///     match v {
///         ctguard::live::watcher::Error::Kernel(..) => 0,
///         ctguard::live::watcher::Error::DumpTask(..) => 1,
///     }
/// }
/// ```
///
/// ```compile_fail,E0004
/// fn arm(v: &ctguard::guests::GuestError) -> u8 {
///     match v {
///         ctguard::guests::GuestError::Read { .. } => 0,
///         ctguard::guests::GuestError::TooLarge { .. } => 1,
///         ctguard::guests::GuestError::Invalid { .. } => 2,
///     }
/// }
/// ```
///
/// ```compile_fail,E0004
/// fn arm(v: &ctguard::output::json::RecordError) -> u8 {
///     match v {
///         ctguard::output::json::RecordError::UnknownFamily(..) => 0,
///         ctguard::output::json::RecordError::UnknownProto(..) => 1,
///         ctguard::output::json::RecordError::ProtoMismatch { .. } => 2,
///         ctguard::output::json::RecordError::MissingProtoNum => 3,
///         ctguard::output::json::RecordError::UnknownState { .. } => 4,
///         ctguard::output::json::RecordError::StateNotAllowed(..) => 5,
///         ctguard::output::json::RecordError::FamilyMismatch { .. } => 6,
///         ctguard::output::json::RecordError::BadL4 { .. } => 7,
///         ctguard::output::json::RecordError::UnknownStatus(..) => 8,
///         ctguard::output::json::RecordError::BadLabels(..) => 9,
///         ctguard::output::json::RecordError::BadHelper(..) => 10,
///         ctguard::output::json::RecordError::BadRawAttr { .. } => 11,
///     }
/// }
/// ```
///
/// ```compile_fail,E0004
/// fn arm(v: &ctguard::output::json::LoadError) -> u8 {
///     match v {
///         ctguard::output::json::LoadError::Io { .. } => 0,
///         ctguard::output::json::LoadError::TooLong { .. } => 1,
///         ctguard::output::json::LoadError::Json { .. } => 2,
///         ctguard::output::json::LoadError::Record { .. } => 3,
///     }
/// }
/// ```
///
/// ```compile_fail,E0004
/// fn arm(v: &ctguard::TcpState) -> u8 {
///     match v {
///         ctguard::TcpState::None => 0,
///         ctguard::TcpState::SynSent => 1,
///         ctguard::TcpState::SynRecv => 2,
///         ctguard::TcpState::Established => 3,
///         ctguard::TcpState::FinWait => 4,
///         ctguard::TcpState::CloseWait => 5,
///         ctguard::TcpState::LastAck => 6,
///         ctguard::TcpState::TimeWait => 7,
///         ctguard::TcpState::Close => 8,
///         ctguard::TcpState::SynSent2 => 9,
///         ctguard::TcpState::Other(..) => 10,
///     }
/// }
/// ```
///
/// ```
/// fn arm(v: ctguard::Family) -> u8 {
///     match v {
///         ctguard::Family::Ipv4 => 4,
///         ctguard::Family::Ipv6 => 6,
///         _ => 0,
///     }
/// }
/// ```
#[cfg(doctest)]
pub struct Issue11Item7NonExhaustive;
