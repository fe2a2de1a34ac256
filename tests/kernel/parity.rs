//! The parity tier (issue 12): one operation done once by conntrack-tools and once by ctguard,
//! each in its own fresh namespace seeded identically, must leave identical tables and print
//! the same flows; bad input is refused by both, ctguard with exit 2, and nothing is touched.
//!
//! A seed is a list of `conntrack -I` argument lines (split on blanks). Tables are compared as
//! `conntrack -L` prints them (with `-o` options when asked), timeouts masked.

use std::path::PathBuf;

use crate::netns::{Netns, Run, run};
use crate::oracle;

/// Two namespaces seeded with the same flows: `ct` for conntrack-tools, `ctg` for ctguard.
pub struct Twins {
    pub ct: Netns,
    pub ctg: Netns,
    /// With a label map: the directory every `conntrack` here sees over `/etc`.
    etc: Option<PathBuf>,
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

impl Twins {
    /// Fresh twins, each given every seed line with `conntrack -I`.
    #[track_caller]
    pub fn seeded(seed: &[&str]) -> Twins {
        Twins::build(seed, None, |_| {})
    }

    /// Fresh twins whose `conntrack` runs see `connlabel` as `/etc/xtables/connlabel.conf`
    /// (conntrack v1.4.7 reads only that path and has no `--labelmap`): each run gets its own
    /// mount namespace with the test's directory overlaid on `/etc`, so the machine's `/etc` is
    /// never written. `prepare` runs in each namespace before the seed (a label user, say).
    /// ctguard is given the same file with `--labelmap` ([`Twins::labelmap`]).
    #[track_caller]
    pub fn seeded_with_labels(seed: &[&str], connlabel: &str, prepare: impl Fn(&Netns)) -> Twins {
        Twins::build(seed, Some(connlabel), prepare)
    }

    #[track_caller]
    fn build(seed: &[&str], connlabel: Option<&str>, prepare: impl Fn(&Netns)) -> Twins {
        let (ct, ctg) = (Netns::new(), Netns::new());
        let etc = connlabel.map(|text| {
            let dir = ct.file("etc");
            std::fs::create_dir_all(dir.join("xtables")).expect("the overlay directory");
            std::fs::write(dir.join("xtables/connlabel.conf"), text).expect("connlabel.conf");
            dir
        });
        let t = Twins { ct, ctg, etc };
        for ns in [&t.ct, &t.ctg] {
            prepare(ns);
            for line in seed {
                let mut args = vec!["-I"];
                args.extend(words(line));
                t.conntrack(ns, &args).ok();
            }
        }
        let (a, b) = (t.ct.conntrack_count(), t.ctg.conntrack_count());
        assert_eq!((a, b), (seed.len() as u64, seed.len() as u64), "the seed did not load");
        t
    }

    /// The label map file the twins' `conntrack` runs read, for ctguard's `--labelmap`.
    pub fn labelmap(&self) -> String {
        let dir = self.etc.as_ref().expect("twins seeded with labels");
        dir.join("xtables/connlabel.conf").to_string_lossy().into_owned()
    }

    /// `conntrack args` in `ns`, seeing the twins' label map when they have one.
    pub fn conntrack(&self, ns: &Netns, args: &[&str]) -> Run {
        let Some(etc) = &self.etc else { return ns.conntrack(args) };
        let script = format!(
            "mount -t overlay overlay -o lowerdir={}:/etc /etc && exec ip netns exec {} conntrack \"$@\"",
            etc.display(),
            ns.name()
        );
        let mut all = vec!["--mount", "--propagation", "private", "sh", "-c", &script, "sh"];
        all.extend_from_slice(args);
        run("unshare", &all)
    }

    /// `conntrack -L args` in `ns`, which must succeed: its lines.
    #[track_caller]
    pub fn list(&self, ns: &Netns, args: &[&str]) -> Vec<String> {
        let mut all = vec!["-L"];
        all.extend_from_slice(args);
        self.conntrack(ns, &all).ok().lines()
    }

    /// Both tables, as `conntrack -L <list_opts>` prints them, normalised and sorted.
    pub fn tables(&self, list_opts: &[&str]) -> (Vec<String>, Vec<String>) {
        let table = |ns: &Netns| oracle::sorted(&self.list(ns, list_opts));
        (table(&self.ct), table(&self.ctg))
    }

    /// Runs `conntrack <ct_args>` in one twin and `ctguard <ctg_args>` in the other; both
    /// must succeed and leave the same table. Returns the two runs.
    #[track_caller]
    pub fn same_effect(&self, ct_args: &str, ctg_args: &str, list_opts: &[&str]) -> (Run, Run) {
        let ct = self.conntrack(&self.ct, &words(ct_args));
        let ctg = self.ctg.ctguard(&words(ctg_args));
        assert_eq!(ct.code, Some(0), "conntrack {ct_args} failed: {}", ct.describe());
        assert_eq!(ctg.code, Some(0), "ctguard {ctg_args} failed: {}", ctg.describe());
        let (a, b) = self.tables(list_opts);
        if let Err(why) = oracle::same_lines(&b, &a) {
            panic!("after `conntrack {ct_args}` and `ctguard {ctg_args}` the tables differ: {why}");
        }
        (ct, ctg)
    }

    /// `conntrack -L <ct_args>` and `ctguard list <ctg_args>` print the same flows (in the
    /// twin each runs in, which hold the same table).
    #[track_caller]
    pub fn same_list(&self, ct_args: &str, ctg_args: &str) -> Vec<String> {
        let want = self.list(&self.ct, &words(ct_args));
        let mut args = vec!["list"];
        args.extend(words(ctg_args));
        let got = self.ctg.ctguard(&args);
        assert!(
            matches!(got.code, Some(0 | 1)),
            "ctguard list {ctg_args} failed: {}",
            got.describe()
        );
        if let Err(why) = oracle::same_lines(&got.lines(), &want) {
            panic!("`conntrack -L {ct_args}` and `ctguard list {ctg_args}` differ: {why}");
        }
        want
    }

    /// Both refuse: conntrack exits non-zero, ctguard exits 2 with a one-line reason, and
    /// neither table changed. Returns ctguard's reason.
    #[track_caller]
    pub fn both_refuse(&self, ct_args: &str, ctg_args: &str) -> String {
        let before = self.tables(&[]);
        let ct = self.conntrack(&self.ct, &words(ct_args));
        let ctg = self.ctg.ctguard(&words(ctg_args));
        assert_ne!(ct.code, Some(0), "conntrack {ct_args} accepted it: {}", ct.describe());
        assert_eq!(ctg.code, Some(2), "ctguard {ctg_args}: {}", ctg.describe());
        let reason = ctg.stderr_lines();
        assert_eq!(reason.len(), 1, "one line of reason: {}", ctg.describe());
        assert_eq!(self.tables(&[]), before, "a refused command changed a table");
        reason[0].to_string()
    }
}

/// The options conntrack-tools and ctguard share today, selecting and deleting, through the
/// harness: the baseline the issue's new options are held to.
#[test]
fn issue_12_parity_baseline_selects_and_deletes_like_conntrack() {
    let seed = [
        "-s 10.0.0.5 -d 192.0.2.1 -p tcp --sport 40000 --dport 80 --state ESTABLISHED -u SEEN_REPLY,ASSURED -t 3600",
        "-s 10.0.0.5 -d 192.0.2.2 -p tcp --sport 40001 --dport 443 --state TIME_WAIT -t 100",
        "-s 10.0.0.6 -d 192.0.2.1 -p udp --sport 5353 --dport 53 -t 30 -m 7",
        "-s 10.0.0.7 -d 192.0.2.9 -p icmp --icmp-type 8 --icmp-code 0 --icmp-id 77 -t 30",
        "-s 2001:db8::5 -d 2001:db8::1 -p tcp --sport 40000 --dport 22 --state ESTABLISHED -t 600",
        "-s 10.0.0.8 -d 192.0.2.1 -p tcp --sport 40002 --dport 80 --state ESTABLISHED -t 3600 -w 3",
    ];
    let t = Twins::seeded(&seed);
    for (ct, ctg) in [
        ("-s 10.0.0.5", "-s 10.0.0.5"),
        ("-d 192.0.2.1", "-d 192.0.2.1"),
        ("-p tcp --dport 80", "-p tcp --dport 80"),
        ("-p tcp --state ESTABLISHED", "-p tcp --state ESTABLISHED"),
        ("-m 7", "--mark 7"),
        ("-w 3", "--zone 3"),
        ("-f ipv6", "-f ipv6"),
    ] {
        let shown = t.same_list(ct, ctg);
        assert!(!shown.is_empty(), "`conntrack -L {ct}` selects something of the seed");
    }
    t.same_effect(
        "-D -p tcp -s 10.0.0.5 --state ESTABLISHED",
        "evict -p tcp -s 10.0.0.5 --state ESTABLISHED --yes",
        &[],
    );
    assert_eq!(t.ct.conntrack_count(), seed.len() as u64 - 1);
    let reason = t.both_refuse("-D -s 10.0.0.300", "evict -s 10.0.0.300 --yes");
    assert!(reason.contains("10.0.0.300"), "{reason}");
}

/// The save → load round trip of every flow shape conntrack-tools can create here (the NAT
/// shapes are parity_nat's): `evict --all --save F` then `load F` leaves the table its twin
/// still holds, and so does `list --json` → `load` into an emptied namespace.
#[test]
fn issue_12_every_flow_shape_survives_save_and_load() {
    let seed = [
        "-s 10.0.1.1 -d 10.0.1.2 -p tcp --sport 1000 --dport 80 --state ESTABLISHED -u SEEN_REPLY,ASSURED -t 3600 -m 0x15",
        "-s 10.0.1.1 -d 10.0.1.2 -p tcp --sport 1001 --dport 80 --state TIME_WAIT -t 100",
        "-s 10.0.1.1 -d 10.0.1.2 -p tcp --sport 1002 --dport 80 --state SYN_SENT -t 100",
        "-s 10.0.1.1 -d 10.0.1.2 -p tcp --sport 1003 --dport 80 --state CLOSE_WAIT -t 100 -u FIXED_TIMEOUT",
        "-s 10.0.1.1 -d 10.0.1.2 -p udp --sport 5353 --dport 53 -t 300 -u SEEN_REPLY",
        "-s 10.0.1.1 -d 10.0.1.2 -p icmp --icmp-type 8 --icmp-code 0 --icmp-id 77 -t 30",
        "-s 10.0.1.1 -d 10.0.1.2 -p sctp --sport 1000 --dport 2000 --state ESTABLISHED -t 300 --orig-vtag 1 --reply-vtag 2",
        "-s 10.0.1.1 -d 10.0.1.2 -p gre --srckey 5 --dstkey 6 -t 300",
        "-s 10.0.1.1 -d 10.0.1.2 -p udplite --sport 1 --dport 2 -t 300",
        "-s 10.0.1.3 -d 10.0.1.2 -p 2 -t 30",
        "-s 10.0.1.3 -d 10.0.1.2 -p tcp --sport 1 --dport 2 --state ESTABLISHED -t 300 --orig-zone 4",
        "-s 10.0.1.3 -d 10.0.1.2 -p tcp --sport 3 --dport 2 --state ESTABLISHED -t 300 --reply-zone 5 -m 0xdead",
        "-s 10.0.1.4 -d 10.0.1.2 -p udp --sport 7 --dport 8 -t 300 -w 9",
        "-s fd00::1 -d fd00::2 -p tcp --sport 40000 --dport 22 --state ESTABLISHED -t 600",
        "-s fd00::1 -d fd00::2 -p icmpv6 --icmpv6-type 128 --icmpv6-code 0 --icmpv6-id 9 -t 30",
    ];
    let t = Twins::seeded(&seed);
    let want = t.tables(&[]).0;
    // In place: every flow deleted and saved, then loaded back.
    let saved = t.ctg.file("saved.jsonl").to_string_lossy().into_owned();
    t.ctg.ctguard(&["evict", "--all", "--save", &saved, "--yes", "--no-audit"]).ok();
    assert_eq!(t.ctg.conntrack_count(), 0, "evict --all took every flow");
    t.ctg.ctguard(&["load", &saved]).ok();
    if let Err(why) = oracle::same_lines(&t.tables(&[]).1, &want) {
        panic!("evict --save → load: {why}");
    }
    // Across namespaces: list --json of one twin loaded into the other, emptied.
    let listed = t.ct.ctguard(&["list", "--json"]).ok();
    let file = t.ctg.write_file("listed.jsonl", &listed.stdout);
    t.ctg.conntrack(&["-F"]).ok();
    t.ctg.ctguard(&["load", &file]).ok();
    if let Err(why) = oracle::same_lines(&t.tables(&[]).1, &want) {
        panic!("list --json → load: {why}");
    }
}
