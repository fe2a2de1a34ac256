//! ctguard: a netlink-native conntrack manager.
//!
//! Data flows one way: kernel bytes → [`ctnetlink`] decodes → [`Flow`] → [`Selector`] →
//! tally / evict / print. Nothing outside `ctnetlink` sees a netlink attribute; nothing inside
//! it knows about guests, tables or terminals.

pub mod flow;
pub mod output;

pub use flow::{Counter, Family, Flow, L4, Proto, ProtoState, Status, TcpState, Tuple};
pub mod audit;
pub mod ctnetlink;
pub mod doctor;
pub mod event;
pub mod evict;
pub mod flushproof;
pub mod guests;
pub mod kernel;
pub mod kmsg;
pub mod live;
pub mod netns;
pub mod select;
pub mod stats;
pub mod sysctl;
pub mod tally;
pub mod trusted_dir;
pub mod tune;

pub use ctnetlink::{Conntrack, DumpFilter};
pub use guests::GuestMap;
pub use select::Selector;
pub use tally::{GroupBy, Tally};
