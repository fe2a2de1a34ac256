//! The uapi numbers ctnetlink speaks, each with its header.
//!
//! The netlink ones (include/uapi/linux/netlink.h) come from netlink-packet-core and
//! netlink-sys, typed as the wire has them. Those defined here are the ones the netlink crates
//! lack: netlink-packet-netfilter 0.4 keeps its few `IPCTNL_MSG_*` and `NFNL_SUBSYS_*` private
//! (as `u8`) and models no `CTA_*` numbers we use; libc has some nfnetlink values, but as
//! `c_int` and not the `CTA_*` attributes, so it would only add casts (the socket options
//! come from libc and rustix, where they are used).

pub(crate) use netlink_packet_core::{
    NLA_F_NESTED, NLA_TYPE_MASK, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL,
    NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
};
pub(crate) use netlink_sys::protocols::NETLINK_NETFILTER;
// netlink.h NLMSG_HDRLEN: netlink-packet-core has it (NETLINK_HEADER_LEN) but does not export it.
pub(crate) const NLMSG_HDRLEN: usize = 16;

// include/uapi/linux/netfilter/nfnetlink.h
pub(crate) const NFNETLINK_V0: u8 = 0;
pub(crate) const NFNL_SUBSYS_CTNETLINK: u16 = 1;
pub(crate) const NFNL_SUBSYS_CTNETLINK_EXP: u16 = 2;
// nfnetlink.h: enum nfnetlink_groups. bind(2) takes them as a mask, bit (group - 1).
pub(crate) const NFNLGRP_CONNTRACK_NEW: u32 = 1;
pub(crate) const NFNLGRP_CONNTRACK_UPDATE: u32 = 2;
pub(crate) const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;

// include/uapi/linux/netfilter/nfnetlink_conntrack.h: enum cntl_msg_types
pub(crate) const IPCTNL_MSG_CT_NEW: u16 = 0;
pub(crate) const IPCTNL_MSG_CT_GET: u16 = 1;
pub(crate) const IPCTNL_MSG_CT_DELETE: u16 = 2;
pub(crate) const IPCTNL_MSG_CT_GET_STATS_CPU: u16 = 4;
pub(crate) const IPCTNL_MSG_CT_GET_STATS: u16 = 5;

// nfnetlink_conntrack.h: enum cntl_msg_exp_types
pub(crate) const IPCTNL_MSG_EXP_GET: u16 = 1;
pub(crate) const IPCTNL_MSG_EXP_DELETE: u16 = 2;

// nfnetlink_conntrack.h: enum ctattr_expect and enum ctattr_expect_nat
pub(crate) const CTA_EXPECT_MASTER: u16 = 1;
pub(crate) const CTA_EXPECT_TUPLE: u16 = 2;
pub(crate) const CTA_EXPECT_MASK: u16 = 3;
pub(crate) const CTA_EXPECT_TIMEOUT: u16 = 4;
pub(crate) const CTA_EXPECT_ID: u16 = 5;
pub(crate) const CTA_EXPECT_HELP_NAME: u16 = 6;
pub(crate) const CTA_EXPECT_ZONE: u16 = 7;
pub(crate) const CTA_EXPECT_FLAGS: u16 = 8;
pub(crate) const CTA_EXPECT_CLASS: u16 = 9;
pub(crate) const CTA_EXPECT_NAT: u16 = 10;
pub(crate) const CTA_EXPECT_FN: u16 = 11;
pub(crate) const CTA_EXPECT_NAT_DIR: u16 = 1;
pub(crate) const CTA_EXPECT_NAT_TUPLE: u16 = 2;

// nfnetlink_conntrack.h: enum ctattr_type
pub(crate) const CTA_TUPLE_ORIG: u16 = 1;
pub(crate) const CTA_TUPLE_REPLY: u16 = 2;
pub(crate) const CTA_STATUS: u16 = 3;
pub(crate) const CTA_PROTOINFO: u16 = 4;
pub(crate) const CTA_HELP: u16 = 5;
pub(crate) const CTA_NAT_SRC: u16 = 6;
pub(crate) const CTA_TIMEOUT: u16 = 7;
pub(crate) const CTA_MARK: u16 = 8;
pub(crate) const CTA_COUNTERS_ORIG: u16 = 9;
pub(crate) const CTA_COUNTERS_REPLY: u16 = 10;
pub(crate) const CTA_USE: u16 = 11;
pub(crate) const CTA_ID: u16 = 12;
pub(crate) const CTA_NAT_DST: u16 = 13;
pub(crate) const CTA_SECMARK: u16 = 17;
pub(crate) const CTA_ZONE: u16 = 18;
pub(crate) const CTA_SECCTX: u16 = 19;
pub(crate) const CTA_TIMESTAMP: u16 = 20;
pub(crate) const CTA_MARK_MASK: u16 = 21;
pub(crate) const CTA_LABELS: u16 = 22;
pub(crate) const CTA_LABELS_MASK: u16 = 23;
pub(crate) const CTA_SYNPROXY: u16 = 24;
pub(crate) const CTA_FILTER: u16 = 25;
pub(crate) const CTA_STATUS_MASK: u16 = 26;

// enum ctattr_nat / ctattr_protonat (requests only: a dump never carries them)
pub(crate) const CTA_NAT_V4_MINIP: u16 = 1;
pub(crate) const CTA_NAT_V4_MAXIP: u16 = 2;
pub(crate) const CTA_NAT_PROTO: u16 = 3;
pub(crate) const CTA_NAT_V6_MINIP: u16 = 4;
pub(crate) const CTA_NAT_V6_MAXIP: u16 = 5;
pub(crate) const CTA_PROTONAT_PORT_MIN: u16 = 1;
pub(crate) const CTA_PROTONAT_PORT_MAX: u16 = 2;

// enum ctattr_tuple / ctattr_ip / ctattr_l4proto
pub(crate) const CTA_TUPLE_IP: u16 = 1;
pub(crate) const CTA_TUPLE_PROTO: u16 = 2;
pub(crate) const CTA_TUPLE_ZONE: u16 = 3;
pub(crate) const CTA_IP_V4_SRC: u16 = 1;
pub(crate) const CTA_IP_V4_DST: u16 = 2;
pub(crate) const CTA_IP_V6_SRC: u16 = 3;
pub(crate) const CTA_IP_V6_DST: u16 = 4;
pub(crate) const CTA_PROTO_NUM: u16 = 1;
pub(crate) const CTA_PROTO_SRC_PORT: u16 = 2;
pub(crate) const CTA_PROTO_DST_PORT: u16 = 3;
pub(crate) const CTA_PROTO_ICMP_ID: u16 = 4;
pub(crate) const CTA_PROTO_ICMP_TYPE: u16 = 5;
pub(crate) const CTA_PROTO_ICMP_CODE: u16 = 6;
pub(crate) const CTA_PROTO_ICMPV6_ID: u16 = 7;
pub(crate) const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
pub(crate) const CTA_PROTO_ICMPV6_CODE: u16 = 9;

// enum ctattr_protoinfo / _tcp / _dccp / _sctp
pub(crate) const CTA_PROTOINFO_TCP: u16 = 1;
pub(crate) const CTA_PROTOINFO_DCCP: u16 = 2;
pub(crate) const CTA_PROTOINFO_SCTP: u16 = 3;
pub(crate) const CTA_PROTOINFO_TCP_STATE: u16 = 1;
pub(crate) const CTA_PROTOINFO_DCCP_STATE: u16 = 1;
pub(crate) const CTA_PROTOINFO_SCTP_STATE: u16 = 1;
pub(crate) const CTA_PROTOINFO_SCTP_VTAG_ORIGINAL: u16 = 2;
pub(crate) const CTA_PROTOINFO_SCTP_VTAG_REPLY: u16 = 3;

// enum ctattr_counters / ctattr_tstamp / ctattr_help
pub(crate) const CTA_COUNTERS_PACKETS: u16 = 1;
pub(crate) const CTA_COUNTERS_BYTES: u16 = 2;
pub(crate) const CTA_COUNTERS32_PACKETS: u16 = 3;
pub(crate) const CTA_COUNTERS32_BYTES: u16 = 4;
pub(crate) const CTA_TIMESTAMP_START: u16 = 1;
pub(crate) const CTA_TIMESTAMP_STOP: u16 = 2;
pub(crate) const CTA_HELP_NAME: u16 = 1;
// enum ctattr_secctx
pub(crate) const CTA_SECCTX_NAME: u16 = 1;

// enum ctattr_filter; the flag bits live in the kernel-private net/netfilter/nf_internals.h
// (CTA_FILTER_FLAG_*), stable ABI since 5.8.
pub(crate) const CTA_FILTER_ORIG_FLAGS: u16 = 1;
pub(crate) const CTA_FILTER_REPLY_FLAGS: u16 = 2;
pub(crate) const CTA_FILTER_FLAG_IP_SRC: u32 = 1 << 0;
pub(crate) const CTA_FILTER_FLAG_IP_DST: u32 = 1 << 1;

// enum ctattr_stats_cpu (stats per CPU) and ctattr_stats_global.
pub(crate) const CTA_STATS_FOUND: u16 = 2;
pub(crate) const CTA_STATS_INVALID: u16 = 4;
pub(crate) const CTA_STATS_INSERT: u16 = 8;
pub(crate) const CTA_STATS_INSERT_FAILED: u16 = 9;
pub(crate) const CTA_STATS_DROP: u16 = 10;
pub(crate) const CTA_STATS_EARLY_DROP: u16 = 11;
pub(crate) const CTA_STATS_ERROR: u16 = 12;
pub(crate) const CTA_STATS_SEARCH_RESTART: u16 = 13;
pub(crate) const CTA_STATS_CLASH_RESOLVE: u16 = 14;
pub(crate) const CTA_STATS_CHAIN_TOOLONG: u16 = 15;
pub(crate) const CTA_STATS_GLOBAL_ENTRIES: u16 = 1;
pub(crate) const CTA_STATS_GLOBAL_MAX_ENTRIES: u16 = 2;

// include/uapi/linux/netfilter/nf_conntrack_common.h: IPS_CONFIRMED. A CT_NEW without it is
// answered EBUSY on 6.x, so every create ORs it in.
pub(crate) const IPS_CONFIRMED: u32 = 1 << 3;
