//! Issue 2: `--netns` takes a path to a namespace file as well as a name under /run/netns.

use crate::checks::{Checks, equal};
use crate::netns::{CTGUARD, Netns, run};
use crate::oracle;
use crate::seed;

#[test]
fn issue_2_netns_by_path_and_by_name() {
    let ns = Netns::new();
    seed::with_conntrack(&ns, &seed::mixed_table(300), "seed.conntrack");
    let want = ns.conntrack_list(&[]);
    let path = ns.path();
    let mut c = Checks::new();
    c.run("--netns NAME list equals conntrack -L", || {
        oracle::same_lines(&ns.ctguard(&["list"]).check_ok()?.lines(), &want)
    });
    c.run("--netns /run/netns/NAME list equals conntrack -L", || {
        oracle::same_lines(&run(CTGUARD, &["--netns", &path, "list"]).check_ok()?.lines(), &want)
    });
    c.run("--netns /run/netns/NAME count equals conntrack -C", || {
        let r = run(CTGUARD, &["count", "--netns", &path]).check_ok()?;
        equal("count", r.stdout.trim().to_string(), want.len().to_string())
    });
    c.run("ip netns exec NAME ctguard list equals conntrack -L", || {
        oracle::same_lines(&ns.exec(CTGUARD, &["list"]).check_ok()?.lines(), &want)
    });
    c.run("a missing namespace path exits 2 with one line", || {
        let missing = format!("{path}-missing");
        let r = run(CTGUARD, &["--netns", &missing, "stats"]);
        equal("exit code", r.code, Some(2))?;
        equal("stderr lines", r.stderr_lines().len(), 1)?;
        if !r.stderr.contains(&missing) {
            return Err(format!("stderr does not name {missing}: {:?}", r.stderr));
        }
        Ok(())
    });
    c.finish();
}
