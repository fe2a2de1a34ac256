//! Fixed snapshots for the view's tests: the incident's table (a runaway guest holding almost
//! all of 258540 entries of 262144, a few others with mixed states) and the runtime's answers.

use crate::cli::tui::app::App;
use crate::cli::tui::model::{CapPreview, CapRow, Data, Drill, EvictPreview, Group, Header};
use ctguard::flow::{ProtoState, TcpState};
use ctguard::tally::{COLUMNS, GroupBy};

/// State columns by kernel number (NON_TCP is the last column).
const SYN_SENT: usize = 1;
const ESTABLISHED: usize = 3;
const FIN_WAIT: usize = 4;
const CLOSE_WAIT: usize = 5;
const TIME_WAIT: usize = 7;
const NON_TCP: usize = 11;

/// A group from its flows per state column.
pub fn group(key: &str, states: &[(usize, u64)]) -> Group {
    let mut by_state = vec![0; COLUMNS];
    for &(c, n) in states {
        by_state[c] = n;
    }
    Group { key: key.into(), entries: by_state.iter().sum(), by_state }
}

/// The incident: "runaway" with 246265 ESTABLISHED, the table at 258540 of 262144.
pub fn incident() -> Data {
    let groups = vec![
        group("runaway", &[(ESTABLISHED, 246265), (SYN_SENT, 12), (TIME_WAIT, 3)]),
        group(
            "web-7",
            &[(ESTABLISHED, 4100), (TIME_WAIT, 2300), (CLOSE_WAIT, 40), (NON_TCP, 1500)],
        ),
        group("db-primary", &[(ESTABLISHED, 2400), (TIME_WAIT, 110), (NON_TCP, 30)]),
        group(
            "mail-relay-with-a-rather-long-guest-name",
            &[(ESTABLISHED, 600), (SYN_SENT, 5), (TIME_WAIT, 250), (FIN_WAIT, 7)],
        ),
        group("172.16.9.44", &[(NON_TCP, 800), (ESTABLISHED, 18)]),
        group("(none)", &[(NON_TCP, 90), (ESTABLISHED, 10)]),
    ];
    let matched = groups.iter().map(|g| g.entries).sum();
    Data { header: incident_header(), by: Some(GroupBy::Guest), groups, matched }
}

/// The incident's header: nearly full, dropping, resyncing after an overrun.
fn incident_header() -> Header {
    Header {
        netns: Some("ctg-lab".into()),
        count: Some(258540),
        max: Some(262144),
        new_per_s: 1830.0,
        destroy_per_s: 1790.5,
        drop_per_s: Some(42.0),
        early_drop_per_s: Some(0.0),
        insert_failed_per_s: Some(3.5),
        lost_events: Some(0),
        overruns: 1,
        resyncs: 1,
        synced: false,
        why_not: Some("resyncing after overrun".into()),
    }
}

/// The next second: "web-7" overtakes "runaway", which shrinks.
pub fn overtaken() -> Data {
    let mut d = incident();
    d.groups[0] = group("runaway", &[(ESTABLISHED, 1000)]);
    d.groups[1] = group("web-7", &[(ESTABLISHED, 250000)]);
    d.matched = d.groups.iter().map(|g| g.entries).sum();
    d.header.synced = true;
    d.header.why_not = None;
    d
}

/// A second later still: "web-7" is gone.
pub fn without_web7() -> Data {
    let mut d = incident();
    d.groups.retain(|g| g.key != "web-7");
    d
}

/// The choices `g` cycles through.
pub fn choices() -> Vec<GroupBy> {
    vec![GroupBy::Guest, GroupBy::Src, GroupBy::SrcNet(24, 64)]
}

/// The evict command line the runtime would give.
pub fn command(key: &str, states: &[ProtoState]) -> String {
    let names: Vec<&str> = states.iter().map(|s| s.name()).collect();
    format!("ctguard evict --guest {key} --state {} --yes", names.join(","))
}

/// An app on the incident, grouped by guest.
pub fn app(colour: bool) -> App {
    let mut app = App::new(GroupBy::Guest, choices(), colour, Box::new(command));
    app.set_data(incident());
    app
}

/// The runaway's states, ESTABLISHED chosen.
pub fn evict_preview(key: &str) -> EvictPreview {
    let tcp = |s| ProtoState::Tcp(s);
    EvictPreview {
        key: key.into(),
        states: vec![
            (tcp(TcpState::Established), 246265, true),
            (tcp(TcpState::SynSent), 12, false),
            (tcp(TcpState::TimeWait), 3, false),
        ],
    }
}

/// A cap on both of the guest's addresses.
pub fn cap_preview(key: &str) -> CapPreview {
    CapPreview {
        key: key.into(),
        nets: vec!["172.16.3.5/32".into(), "fd00:16:3::5/128".into()],
        limit: 2000,
        refused: None,
    }
}

/// A cap refused: every address protected.
pub fn cap_refused(key: &str) -> CapPreview {
    CapPreview {
        key: key.into(),
        nets: vec![],
        limit: 2000,
        refused: Some("every address is protected".into()),
    }
}

/// ctguard's caps: two of runaway's, one of web-7's.
pub fn caps() -> Vec<CapRow> {
    vec![
        CapRow { guest: "runaway".into(), net: "172.16.3.5/32".into(), limit: 2000 },
        CapRow { guest: "runaway".into(), net: "fd00:16:3::5/128".into(), limit: 2000 },
        CapRow { guest: "web-7".into(), net: "172.16.3.7/32".into(), limit: 500 },
    ]
}

/// The runaway's drill-down.
pub fn drill(key: &str) -> Drill {
    let pairs = |v: &[(&str, u64)]| v.iter().map(|(s, n)| (s.to_string(), *n)).collect();
    Drill {
        key: key.into(),
        flows: 246280,
        destinations: pairs(&[
            ("198.51.100.10", 200112),
            ("198.51.100.11", 46000),
            ("203.0.113.9", 168),
        ]),
        ports: pairs(&[("tcp/443", 246100), ("tcp/80", 165), ("udp/53", 15)]),
        states: pairs(&[("ESTABLISHED", 246265), ("SYN_SENT", 12), ("TIME_WAIT", 3)]),
        most_idle: pairs(&[
            ("tcp 172.16.3.5:40112 -> 198.51.100.10:443 ESTABLISHED", 431990),
            ("tcp 172.16.3.5:40113 -> 198.51.100.10:443 ESTABLISHED", 431985),
        ]),
    }
}

/// An eviction's report.
pub fn report() -> Vec<String> {
    vec![
        "evicted 246265 flows of runaway (ESTABLISHED)".into(),
        "saved to /var/lib/ctguard/evict-20261203T122100.jsonl".into(),
        "audit: /var/log/ctguard/audit.jsonl".into(),
    ]
}
