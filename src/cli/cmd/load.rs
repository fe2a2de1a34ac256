//! `ctguard load`: create the flows of a JSON Lines file written by `list --json` or `--save`.

use std::io::BufReader;

use clap::Args as ClapArgs;
use ctguard::ctnetlink::Conntrack;
use ctguard::flow::{Flow, Tuple};
use ctguard::output::json;

use crate::cli::batch::{self, Op};
use crate::cli::exit::{self, Failure, Outcome};
use crate::cli::progress::{self, Bar};
use crate::cli::term::Term;

/// `ctguard load`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// JSON Lines file of flows (`list --json` output), or `-` for stdin.
    pub file: String,
    /// FILE holds `conntrack -R` lines instead: `-I`/`-A` with conntrack's flags, one flow a
    /// line (`conntrack -L -o save` writes them); -D lines go to `evict --batch`.
    #[arg(long)]
    pub batch: bool,
}

/// A validated `load`: every line already parsed, each flow with its line number.
#[derive(Debug)]
pub struct Plan {
    path: String,
    flows: Vec<(usize, Flow)>,
}

/// Reads and parses the file whole, so a bad line means nothing is created. Any readable path
/// is taken as it is (a FIFO, `<(cat f)`, a file), or `-` for stdin; nothing is stat-ed
/// first. The error is one line: the first bad line, and how many more there are.
pub fn plan(a: Args) -> Result<Plan, String> {
    let path = a.file;
    if a.batch {
        return batch_plan(path);
    }
    let input: Box<dyn std::io::BufRead> = if path == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        Box::new(BufReader::new(f))
    };
    let mut flows = Vec::new();
    let (mut first_bad, mut bad_lines) = (None, 0usize);
    for r in json::read_numbered_flows(input) {
        match r {
            Ok(f) => flows.push(f),
            Err(e) => {
                first_bad.get_or_insert_with(|| e.to_string());
                bad_lines += 1;
            }
        }
    }
    match first_bad {
        None => Ok(Plan { path, flows }),
        Some(first) => {
            let more = if bad_lines > 1 {
                format!(" (and {} more bad lines)", bad_lines - 1)
            } else {
                String::new()
            };
            Err(format!("{path}: {first}{more}; nothing was created"))
        }
    }
}

/// The creates of a batch file; a `-D` or `-U` line is refused before anything is touched.
fn batch_plan(path: String) -> Result<Plan, String> {
    let mut flows = Vec::new();
    for line in batch::read(&path, None)? {
        match line.op {
            Op::Create(flow) => flows.push((line.number, *flow)),
            _ => return Err(line.elsewhere(&path)),
        }
    }
    Ok(Plan { path, flows })
}

/// Flows per kernel request batch while loading.
const LOAD_CHUNK: usize = 4096;
/// Refused flows named one by one on stderr; the rest are counted.
const LOAD_ERRORS_SHOWN: u64 = 10;

/// Creates the parsed flows. EEXIST means either that an entry with this original tuple is
/// there (`ctnetlink_new_conntrack` with `NLM_F_EXCL` finds it), or that the new entry's reply
/// tuple clashes with another entry's (`nf_conntrack_hash_check_insert`); a lookup of the
/// original tuple tells which. Only the first is "already present", a clash is a failure.
/// On a terminal, a bar shows the flows created so far once the load has run for a second.
pub fn run(p: Plan, ct: &mut Conntrack, term: &Term) -> Result<Outcome, Failure> {
    let (path, flows) = (&p.path, &p.flows);
    let (mut created, mut existed, mut failed) = (0u64, 0u64, 0u64);
    let mut bar = Bar::new(term.progress, progress::LOAD, Some(flows.len() as u64));
    let mut report = |bar: &Bar, line: usize, flow: &Flow, why: &str| {
        bar.suspend(|| {
            if failed < LOAD_ERRORS_SHOWN {
                eprintln!("ctguard: load: {path}:{line}: {}: {why}", flow.brief());
            } else if failed == LOAD_ERRORS_SHOWN {
                eprintln!(
                    "ctguard: load: more flows refused; only the first {LOAD_ERRORS_SHOWN} are \
                     shown"
                );
            }
        });
        failed += 1;
    };
    let mut refused: Vec<(usize, i32)> = Vec::new();
    let mut chunk_flows: Vec<Flow> = Vec::with_capacity(LOAD_CHUNK);
    for chunk in flows.chunks(LOAD_CHUNK) {
        chunk_flows.clear();
        chunk_flows.extend(chunk.iter().map(|(_, f)| f.clone()));
        refused.clear();
        ct.create(&chunk_flows, |i, errno| refused.push((i, errno)))?;
        created += (chunk.len() - refused.len()) as u64;
        for &(i, errno) in &refused {
            let (line, flow) = &chunk[i];
            if errno != libc::EEXIST {
                report(&bar, *line, flow, &exit::errno_text(errno));
                continue;
            }
            match ct.get(flow)? {
                Some(there) if there.proto == flow.proto && same_tuple(&there.orig, &flow.orig) => {
                    existed += 1
                }
                _ => report(
                    &bar,
                    *line,
                    flow,
                    "its reply tuple clashes with another entry's (EEXIST), nothing created",
                ),
            }
        }
        bar.set(created);
    }
    drop(bar);
    // After the creates: a load refused as a whole (EPERM) says only that.
    warn_not_restorable(flows);
    eprintln!("ctguard: load: {created} created, {existed} already present, {failed} failed");
    if failed > 0 {
        return Err(Failure::Message(format!("load: {failed} flows could not be created")));
    }
    if created == 0 {
        // Exit 1, as for a selection that matched nothing: a script sees that the table did
        // not change (conntrack -R fails on the first "Such conntrack exists").
        if existed > 0 {
            eprintln!("ctguard: load: nothing created: {existed} already exist");
        } else {
            eprintln!("ctguard: load: nothing created: {path} holds no flows");
        }
        return Ok(Outcome::NothingMatched);
    }
    Ok(Outcome::Ok)
}

/// The same tuple, whatever its directional zone field says (the kernel's lookup is by zone).
fn same_tuple(a: &Tuple, b: &Tuple) -> bool {
    (a.src, a.dst, a.l4) == (b.src, b.dst, b.l4)
}

/// Says once what the saved flows carry that a create cannot restore: the kernel sets these
/// itself (helper assignment, secmark from the ruleset, counters and timestamps from zero) or
/// they are attributes this build does not know.
fn warn_not_restorable(flows: &[(usize, Flow)]) {
    let count = |has: fn(&Flow) -> bool| flows.iter().filter(|(_, f)| has(f)).count();
    let lost: Vec<String> = [
        ("a helper", count(|f| f.helper.is_some())),
        ("a secmark", count(|f| f.secmark.is_some())),
        ("counters", count(|f| f.counters_orig.is_some() || f.counters_reply.is_some())),
        ("timestamps", count(|f| f.start_ns.is_some() || f.stop_ns.is_some())),
        ("unknown attributes", count(|f| !f.unknown.is_empty())),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(what, n)| format!("{n} with {what}"))
    .collect();
    if !lost.is_empty() {
        eprintln!(
            "ctguard: load: not restorable, created without: {} (the kernel sets these itself)",
            lost.join(", ")
        );
    }
}
