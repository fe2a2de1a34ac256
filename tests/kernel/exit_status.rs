//! Issue 2: exit status is API. `list` and `count` exit 1 when nothing matched, 0 otherwise.

use crate::checks::{Checks, equal};
use crate::netns::Netns;
use crate::seed::{self, RUNAWAY_V4};

#[test]
fn issue_2_list_and_count_exit_1_when_nothing_matched() {
    let ns = Netns::new();
    let empty = Netns::new();
    seed::with_conntrack(&ns, &seed::mixed_table(400), "seed.conntrack");
    let mut c = Checks::new();
    let none = ["-s", "192.0.2.99"];
    let cases: Vec<(&Netns, Vec<&str>, i32, &str)> = vec![
        (&ns, [&["list"][..], &none].concat(), 1, ""),
        (&ns, [&["count"][..], &none].concat(), 1, "0\n"),
        (&ns, [&["count", "--json"][..], &none].concat(), 1, "{\"matched\":0}\n"),
        (
            &ns,
            [&["list", "-p", "tcp", "--state", "ESTABLISHED", "--zone", "4242"][..]].concat(),
            1,
            "",
        ),
        (&empty, vec!["list"], 1, ""),
        (&empty, vec!["count"], 1, "0\n"),
    ];
    for (ns, args, code, stdout) in &cases {
        c.run(&format!("ctguard {} exits {code}", args.join(" ")), || {
            let r = ns.ctguard(args);
            equal("exit code", r.code, Some(*code))
                .map_err(|e| format!("{e}; {}", r.describe()))?;
            equal("stdout", r.stdout.as_str(), *stdout)
        });
    }
    let matching: Vec<Vec<&str>> = vec![
        vec!["list", "-s", RUNAWAY_V4],
        vec!["count", "-s", RUNAWAY_V4],
        vec!["count", "--by", "state", "-s", RUNAWAY_V4],
        vec!["list"],
        vec!["count"],
    ];
    for args in &matching {
        c.run(&format!("ctguard {} exits 0", args.join(" ")), || {
            let r = ns.ctguard(args);
            equal("exit code", r.code, Some(0)).map_err(|e| format!("{e}; {}", r.describe()))?;
            if r.stdout.trim().is_empty() || r.stdout.trim() == "0" {
                return Err(format!("printed nothing matched: {:?}", r.stdout));
            }
            Ok(())
        });
    }
    c.finish();
}
