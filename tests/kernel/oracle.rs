//! The oracle's side: `conntrack -L` and `-S` output parsed, normalised and compared, and the
//! selections conntrack cannot express computed from its lines.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

/// One direction of a `conntrack -L` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dir {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// One `conntrack -L` line, parsed.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The line as printed.
    pub line: String,
    pub proto: String,
    pub timeout: u32,
    /// TCP/SCTP/DCCP state: the word after the timeout.
    pub state: Option<String>,
    pub orig: Dir,
    pub reply: Dir,
    /// `[ASSURED]` is printed.
    pub assured: bool,
    pub mark: u32,
    pub zone: u16,
}

impl Entry {
    /// Parses a line of `conntrack -L` default output.
    pub fn parse(line: &str) -> Entry {
        let bad = |why: &str| -> ! { panic!("cannot parse conntrack line ({why}): {line}") };
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 4 {
            bad("too short");
        }
        let timeout = words[2].parse().unwrap_or_else(|_| bad("timeout"));
        let state = (!words[3].contains('=')).then(|| words[3].to_string());
        let (mut srcs, mut dsts, mut sports, mut dports) = (vec![], vec![], vec![], vec![]);
        let (mut mark, mut zone, mut assured) = (0, 0, false);
        for w in &words[3..] {
            match w.split_once('=') {
                Some(("src", v)) => srcs.push(v.parse::<IpAddr>().unwrap_or_else(|_| bad("src"))),
                Some(("dst", v)) => dsts.push(v.parse::<IpAddr>().unwrap_or_else(|_| bad("dst"))),
                Some(("sport", v)) => {
                    sports.push(v.parse::<u16>().unwrap_or_else(|_| bad("sport")))
                }
                Some(("dport", v)) => {
                    dports.push(v.parse::<u16>().unwrap_or_else(|_| bad("dport")))
                }
                Some(("mark", v)) => mark = v.parse().unwrap_or_else(|_| bad("mark")),
                Some(("zone", v)) => zone = v.parse().unwrap_or_else(|_| bad("zone")),
                None if *w == "[ASSURED]" => assured = true,
                _ => {}
            }
        }
        if srcs.len() != 2 || dsts.len() != 2 {
            bad("expected two src= and two dst=");
        }
        let dir = |i: usize| Dir {
            src: srcs[i],
            dst: dsts[i],
            sport: sports.get(i).copied(),
            dport: dports.get(i).copied(),
        };
        Entry {
            line: line.to_string(),
            proto: words[0].to_string(),
            timeout,
            state,
            orig: dir(0),
            reply: dir(1),
            assured,
            mark,
            zone,
        }
    }

    /// The key `count --by state` files the entry under: the TCP state by its bare name, another
    /// protocol's state as `proto/STATE` (SCTP shares names with TCP), else the protocol.
    pub fn state_key(&self) -> String {
        match &self.state {
            Some(s) if self.proto == "tcp" => s.clone(),
            Some(s) => format!("{}/{s}", self.proto),
            None => self.proto.clone(),
        }
    }

    /// The four addresses: original source, reply source, original destination, reply
    /// destination (the order guest ownership is decided in).
    pub fn addresses(&self) -> [IpAddr; 4] {
        [self.orig.src, self.reply.src, self.orig.dst, self.reply.dst]
    }
}

/// Parses every line.
pub fn parse_all(lines: &[String]) -> Vec<Entry> {
    lines.iter().map(|l| Entry::parse(l)).collect()
}

/// The line with its timeout (third field) replaced by `T`, everything else byte for byte:
/// two dumps taken a moment apart differ only there.
pub fn normalise(line: &str) -> String {
    let mut fields = 0;
    let mut in_word = false;
    let (mut start, mut end) = (None, line.len());
    for (i, c) in line.char_indices() {
        let blank = c == ' ' || c == '\t';
        if !blank && !in_word {
            fields += 1;
            if fields == 3 {
                start = Some(i);
            }
        }
        if blank && in_word && fields == 3 {
            end = i;
            break;
        }
        in_word = !blank;
    }
    match start {
        Some(s) => format!("{}T{}", &line[..s], &line[end..]),
        None => line.to_string(),
    }
}

/// Lines normalised and sorted.
pub fn sorted<S: AsRef<str>>(lines: &[S]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(|l| normalise(l.as_ref())).collect();
    v.sort();
    v
}

/// Compares two line sets (normalised, sorted); on a difference says how many lines differ
/// and shows a few of each side.
pub fn same_lines<A: AsRef<str>, B: AsRef<str>>(got: &[A], want: &[B]) -> Result<(), String> {
    let (got, want) = (sorted(got), sorted(want));
    if got == want {
        return Ok(());
    }
    let missing = difference(&want, &got);
    let extra = difference(&got, &want);
    let show = |v: &[String]| {
        let by_proto = count_by_proto(v);
        let lines: String = v.iter().take(4).map(|l| format!("\n    {l}")).collect();
        format!("{by_proto:?}{lines}")
    };
    Err(format!(
        "got {} lines, expected {}; {} expected lines missing, by protocol {}; {} unexpected lines, by protocol {}",
        got.len(),
        want.len(),
        missing.len(),
        show(&missing),
        extra.len(),
        show(&extra)
    ))
}

/// How many lines per protocol (the first word).
fn count_by_proto(lines: &[String]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l.split_whitespace().next().unwrap_or("")).or_insert(0) += 1;
    }
    m
}

/// Lines of sorted `a` not in sorted `b` (as multisets).
fn difference(a: &[String], b: &[String]) -> Vec<String> {
    let (mut i, mut j, mut out) = (0, 0, vec![]);
    while i < a.len() {
        if j >= b.len() || a[i] < b[j] {
            out.push(a[i].clone());
            i += 1;
        } else if a[i] == b[j] {
            i += 1;
            j += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Counts of entries per key.
pub fn count_by<K: Ord>(entries: &[Entry], key: impl Fn(&Entry) -> K) -> BTreeMap<K, u64> {
    let mut m = BTreeMap::new();
    for e in entries {
        *m.entry(key(e)).or_insert(0) += 1;
    }
    m
}

/// `conntrack -S` output summed over the CPUs: counter name → total.
pub fn sum_cpu_stats(text: &str) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("cpu=")) {
        for (k, v) in line.split_whitespace().skip(1).filter_map(|w| w.split_once('=')) {
            let v: u64 = v.parse().unwrap_or_else(|_| panic!("bad counter {k}={v} in {line}"));
            *sums.entry(k.to_string()).or_insert(0) += v;
        }
    }
    sums
}

/// How many CPUs `conntrack -S` reported.
pub fn cpu_count(text: &str) -> u64 {
    text.lines().filter(|l| l.starts_with("cpu=")).count() as u64
}

/// A guest map as the oracle understands it: ownership by the first of the four addresses
/// some guest holds, the longest matching prefix deciding between guests.
pub struct Guests(pub Vec<(&'static str, Vec<IpNetwork>)>);

impl Guests {
    /// The guest owning `addr`.
    pub fn of_addr(&self, addr: IpAddr) -> Option<&'static str> {
        self.0
            .iter()
            .flat_map(|(name, nets)| nets.iter().map(move |n| (*name, n)))
            .filter(|(_, n)| n.contains(addr))
            .max_by_key(|(_, n)| n.prefix())
            .map(|(name, _)| name)
    }

    /// The guest owning an entry.
    pub fn owner(&self, e: &Entry) -> Option<&'static str> {
        e.addresses().into_iter().find_map(|a| self.of_addr(a))
    }

    /// The TOML guest file `--guests` reads.
    pub fn toml(&self) -> String {
        let mut s = String::new();
        for (name, nets) in &self.0 {
            let list: Vec<String> = nets.iter().map(|n| format!("\"{n}\"")).collect();
            s += &format!("{name} = [{}]\n", list.join(", "));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_keeps_everything_but_the_timeout() {
        let l = "tcp      6 2999 ESTABLISHED src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2";
        assert_eq!(
            normalise(l),
            "tcp      6 T ESTABLISHED src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2"
        );
        let e = Entry::parse(&format!(
            "{l} src=2.2.2.2 dst=1.1.1.1 sport=2 dport=1 [ASSURED] mark=7 zone=3 use=1"
        ));
        assert_eq!((e.timeout, e.mark, e.zone, e.assured), (2999, 7, 3, true));
        assert_eq!(e.state_key(), "ESTABLISHED");
        assert_eq!(e.reply.sport, Some(2));
    }
}
