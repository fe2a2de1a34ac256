//! The recorded fixtures: `tests/fixtures/mixed.*`, as raw kernel messages and decoded flows.

use ctguard::Flow;
use ctguard::ctnetlink::decode_message;
use ctguard::output::conntrack::write_line_at;

/// `conntrack -L` dump messages, netlink header included, one per line in lowercase hex.
pub const MIXED_HEX: &str = include_str!("../fixtures/mixed.hex");
/// `conntrack -L` of the same table, sorted, recorded right after `MIXED_HEX`.
pub const MIXED_CONNTRACK_L: &str = include_str!("../fixtures/mixed.conntrack-L.txt");

/// Dump messages of kernel-NATed entries (`scripts/capture-fixture --nat`, `nat.md`).
pub const NAT_HEX: &str = include_str!("../fixtures/nat.hex");

/// Bytes of a lowercase hex string.
pub fn unhex(line: &str) -> Vec<u8> {
    assert!(line.len().is_multiple_of(2), "odd hex length");
    (0..line.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&line[i..i + 2], 16).expect("fixture is hex"))
        .collect()
}

/// Every message of `mixed.hex`.
pub fn mixed_messages() -> Vec<Vec<u8>> {
    let messages: Vec<Vec<u8>> = MIXED_HEX.lines().map(unhex).collect();
    assert!(messages.len() >= 20, "the fixture should hold a varied table");
    messages
}

/// The flows of a recorded dump, decoded by ctguard, in recording order.
pub fn flows_of(hex: &str) -> Vec<Flow> {
    hex.lines()
        .map(|line| {
            let mut flow = Flow::default();
            decode_message(&unhex(line), &mut flow).expect("recorded message decodes");
            flow
        })
        .collect()
}

/// Every flow of `mixed.hex`.
pub fn mixed_flows() -> Vec<Flow> {
    flows_of(MIXED_HEX)
}

/// The one fixture flow with this protocol name and original source address.
pub fn mixed_flow(proto: &str, src: &str) -> Flow {
    let src: std::net::IpAddr = src.parse().expect("test address");
    let mut found: Vec<Flow> = mixed_flows()
        .into_iter()
        .filter(|f| f.proto.name() == proto && f.orig.src == src)
        .collect();
    assert_eq!(found.len(), 1, "fixture flows {proto} from {src}");
    found.remove(0)
}

/// A `conntrack -L` line with the moving parts taken out: the line with the timeout (third
/// field) and the `delta-time` value replaced by placeholders, and the two values.
#[derive(Debug)]
pub struct Normalised {
    /// The line with `<timeout>` and `delta-time=<delta>` in place of the values.
    pub line: String,
    /// The timeout, in seconds.
    pub timeout: u64,
    /// The `delta-time`, when the entry has a start time.
    pub delta_time: Option<u64>,
}

/// Byte range of the `n`th (0-based) run of non-blank characters.
fn field(line: &str, n: usize) -> std::ops::Range<usize> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices().chain([(line.len(), ' ')]) {
        match (c == ' ', start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                runs.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    runs.get(n).cloned().unwrap_or_else(|| panic!("no field {n} in {line:?}"))
}

/// Takes the moving parts out of one `conntrack -L` line (without its newline).
pub fn normalise(line: &str) -> Normalised {
    let range = field(line, 2);
    let timeout = line[range.clone()]
        .parse()
        .unwrap_or_else(|_| panic!("third field of {line:?} is not a timeout"));
    let mut out = format!("{}<timeout>{}", &line[..range.start], &line[range.end..]);
    let mut delta_time = None;
    if let Some(at) = out.find(" delta-time=") {
        let digits_at = at + " delta-time=".len();
        let len = out[digits_at..].find(' ').unwrap_or(out.len() - digits_at);
        delta_time = Some(out[digits_at..digits_at + len].parse().expect("delta-time value"));
        out.replace_range(digits_at..digits_at + len, "<delta>");
    }
    Normalised { line: out, timeout, delta_time }
}

/// ctguard's `conntrack -L` line for `flow` with the clock at `now` (Unix seconds), normalised.
pub fn rendered(flow: &Flow, now: i64) -> Normalised {
    let mut line = Vec::new();
    write_line_at(&mut line, flow, now).expect("writing to a Vec");
    let line = String::from_utf8(line).expect("conntrack text is UTF-8");
    normalise(line.strip_suffix('\n').expect("one line, newline-terminated"))
}
