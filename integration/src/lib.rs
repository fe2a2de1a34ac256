//! The hypervisor lab: a simulated KVM host in network namespaces that replays the conntrack
//! table-full incident end to end (issue 5).
//!
//! - [`place`]: a namespace and the thread that lives in it (sockets belong to the namespace of
//!   the thread that opens them).
//! - [`topology`]: the host with its bridge, the guests, the upstream, the nftables ruleset,
//!   built with rtnetlink and removed on drop.
//! - [`traffic`]: the upstream echo server, the runaway guest's flood, TCP and ICMP probes.
//! - [`seed`]: the incident's table as a `conntrack -R` file (258,540 entries).
//! - [`table`]: the host's conntrack table through conntrack-tools, the oracle.
//! - [`replay`]: the incident, step by step, shared by the end-to-end test and the demo.
//! - [`guarded`]: the incident with `ctguard guard` running, which relieves it unattended
//!   (issue 13), shared by its lab test and `ctguard-lab guard-demo`.

pub mod guarded;
pub mod place;
pub mod replay;
pub mod seed;
pub mod table;
pub mod topology;
pub mod traffic;
