//! Issue 2: bad input touches nothing. Each bad command exits 2 with one line on stderr that
//! names the problem, prints nothing on stdout, and leaves the table as it was.

use crate::checks::{Checks, equal};
use crate::netns::Netns;
use crate::oracle;
use crate::seed;

#[test]
fn issue_2_bad_input_exits_2_with_one_line_and_touches_nothing() {
    let ns = Netns::new();
    seed::with_conntrack(&ns, &seed::mixed_table(500), "seed.conntrack");
    let before = ns.conntrack_list(&[]);
    let bad_guests =
        ns.write_file("bad-guests.toml", "web = [\"172.16.3.0/24\"]\ndb = [\"172.16.5.300/24\"]\n");
    // A load file whose second line is bad: nothing of it may be created.
    let good = seed::mixed_table(3)[0].json_line();
    let bad_load = ns.write_file(
        "bad.jsonl",
        &format!("{good}\n{}\n", good.replace("\"proto\":\"", "\"proto\":\"tcpp")),
    );
    // A create with everything but its timeout.
    let create = [
        "create",
        "-p",
        "tcp",
        "-s",
        "172.16.1.2",
        "-d",
        "10.0.0.1",
        "--sport",
        "1",
        "--dport",
        "2",
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["list", "-s", "10.0.0.300"], "10.0.0.300"),
        (vec!["count", "--state", "FOO"], "FOO"),
        (vec!["top", "-n", "0"], "-n"),
        (vec!["list", "--mark", "1/0"], "1/0"),
        (vec!["list", "--idle", "5 parsecs"], "parsecs"),
        (vec!["list", "--sport", "70000"], "70000"),
        (vec!["count", "--by", "colour"], "colour"),
        (vec!["list", "-p", "tcpp"], "tcpp"),
        (create.to_vec(), "--timeout"),
        ([&create[..], &["--timeout", "60", "--state", "BOGUS"]].concat(), "BOGUS"),
        (vec!["load", "/nonexistent"], "/nonexistent"),
        (vec!["load", &bad_load], "line 2"),
        (vec!["count", "--guests", &bad_guests, "--by", "guest"], "172.16.5.300"),
        (vec!["list", "--guests", &bad_guests, "--guest", "web"], "172.16.5.300"),
    ];
    let mut c = Checks::new();
    for (args, names) in &cases {
        c.run(&format!("ctguard {}", args.join(" ")), || {
            let r = ns.ctguard(args);
            equal("exit code", r.code, Some(2))?;
            let err = r.stderr_lines();
            equal("stderr lines", err.len(), 1).map_err(|e| format!("{e}: {:?}", r.stderr))?;
            if !err[0].starts_with("ctguard: ") || !err[0].contains(names) {
                return Err(format!(
                    "stderr {:?} should start with `ctguard: ` and name {names:?}",
                    err[0]
                ));
            }
            equal("stdout", r.stdout.as_str(), "")?;
            oracle::same_lines(&ns.conntrack_list(&[]), &before)
                .map_err(|e| format!("the table changed: {e}"))
        });
    }
    c.finish();
}
