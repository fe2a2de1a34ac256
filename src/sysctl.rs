//! Conntrack sysctls of the current network namespace under `/proc/sys/net/netfilter`: read,
//! written, and the state timeouts that tell how long a flow has been idle.
//!
//! `/proc/sys/net` shows the namespace of the reading process, so after `--netns` these are
//! the target namespace's values. Timeouts are per namespace; max and buckets are global.

use std::os::unix::fs::PermissionsExt;

use crate::flow::{Flow, Proto, ProtoState, SctpState, Status, TcpState};

const DIR: &str = "/proc/sys/net/netfilter";

/// The file of `net.netfilter.<name>`: `/proc/sys/net/netfilter/<name>`.
pub fn path(name: &str) -> String {
    format!("{DIR}/{name}")
}

/// Reads `/proc/sys/net/netfilter/<name>` as a number.
pub fn read(name: &str) -> Option<u64> {
    std::fs::read_to_string(path(name)).ok()?.trim().parse().ok()
}

/// Writes `/proc/sys/net/netfilter/<name>` in the current network namespace (per-namespace
/// sysctls only change that namespace).
pub fn write(name: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(path(name), value)
}

/// The file's mode allows writing: global sysctls are mode 0444 inside a non-initial
/// namespace (`nf_conntrack_standalone_init_sysctl`).
pub fn writable(name: &str) -> bool {
    std::fs::metadata(path(name)).is_ok_and(|m| m.permissions().mode() & 0o222 != 0)
}

/// The configured timeout of each state, to tell how long a flow has been idle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTimeouts {
    tcp: [u32; 10],
    sctp: [u32; 10],
    udp: u32,
    udp_stream: u32,
    icmp: u32,
    icmpv6: u32,
    generic: u32,
}

const TCP_SYSCTLS: [&str; 10] = [
    "", // NONE has no timeout
    "syn_sent",
    "syn_recv",
    "established",
    "fin_wait",
    "close_wait",
    "last_ack",
    "time_wait",
    "close",
    "syn_sent2",
];

const SCTP_SYSCTLS: [&str; 10] = [
    "",
    "closed",
    "cookie_wait",
    "cookie_echoed",
    "established",
    "shutdown_sent",
    "shutdown_recd",
    "shutdown_ack_sent",
    "heartbeat_sent",
    "heartbeat_acked",
];

impl StateTimeouts {
    /// The kernel defaults (net/netfilter/nf_conntrack_proto_*.c), used where a sysctl is absent.
    pub fn defaults() -> StateTimeouts {
        StateTimeouts {
            tcp: [0, 120, 60, 432_000, 120, 60, 30, 120, 10, 120],
            sctp: [0, 10, 3, 3, 210, 3, 3, 3, 30, 210],
            udp: 30,
            udp_stream: 120,
            icmp: 30,
            icmpv6: 30,
            generic: 600,
        }
    }

    /// The current namespace's values.
    pub fn read() -> StateTimeouts {
        let mut t = StateTimeouts::defaults();
        let get = |name: String, slot: &mut u32| {
            if let Some(v) = read(&name) {
                *slot = v.min(u32::MAX as u64) as u32;
            }
        };
        for (i, s) in TCP_SYSCTLS.iter().enumerate().skip(1) {
            get(format!("nf_conntrack_tcp_timeout_{s}"), &mut t.tcp[i]);
        }
        for (i, s) in SCTP_SYSCTLS.iter().enumerate().skip(1) {
            get(format!("nf_conntrack_sctp_timeout_{s}"), &mut t.sctp[i]);
        }
        get("nf_conntrack_udp_timeout".into(), &mut t.udp);
        get("nf_conntrack_udp_timeout_stream".into(), &mut t.udp_stream);
        get("nf_conntrack_icmp_timeout".into(), &mut t.icmp);
        get("nf_conntrack_icmpv6_timeout".into(), &mut t.icmpv6);
        get("nf_conntrack_generic_timeout".into(), &mut t.generic);
        t
    }

    /// The timeout the kernel set when the flow last saw a packet, as far as sysctls tell.
    ///
    /// Approximate where the kernel picks another timer: TCP flows with unacknowledged data
    /// or retransmissions run on the 300 s UNACK/RETRANS timers, an ESTABLISHED flow without
    /// SEEN_REPLY too; per-flow timeout policies (nft `ct timeout`) override the sysctls.
    pub fn configured(&self, flow: &Flow) -> u32 {
        match (flow.proto, flow.state) {
            (_, Some(ProtoState::Tcp(TcpState::Other(_)))) => self.generic,
            (_, Some(ProtoState::Tcp(s))) => self.tcp[s.number() as usize],
            (_, Some(ProtoState::Sctp(SctpState::Other(_)))) => self.generic,
            (_, Some(ProtoState::Sctp(s))) => self.sctp[s.number() as usize],
            (Proto::UDP | Proto::UDPLITE, _) if flow.status.has(Status::ASSURED) => self.udp_stream,
            (Proto::UDP | Proto::UDPLITE, _) => self.udp,
            (Proto::ICMP, _) => self.icmp,
            (Proto::ICMPV6, _) => self.icmpv6,
            _ => self.generic,
        }
    }

    /// Seconds since the flow last saw a packet: configured timeout minus what is left.
    pub fn idle(&self, flow: &Flow) -> Option<u32> {
        flow.timeout.map(|left| self.configured(flow).saturating_sub(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_is_configured_minus_remaining() {
        let t = StateTimeouts::defaults();
        let f = Flow {
            proto: Proto::TCP,
            state: Some(ProtoState::Tcp(TcpState::Established)),
            timeout: Some(432_000 - 600),
            ..Flow::default()
        };
        assert_eq!(t.idle(&f), Some(600));
        let udp = Flow { proto: Proto::UDP, timeout: Some(10), ..Flow::default() };
        assert_eq!(t.idle(&udp), Some(20));
        let assured = Flow { status: Status(Status::ASSURED), ..udp.clone() };
        assert_eq!(t.idle(&assured), Some(110));
    }
}
