//! Issue 2: without CAP_NET_ADMIN ctguard exits 2 and says which capability it needs.

use std::os::unix::fs::PermissionsExt;

use crate::checks::{Checks, equal};
use crate::netns::{CTGUARD, Netns};
use crate::seed;

#[test]
fn issue_2_unprivileged_user_gets_exit_2_naming_cap_net_admin() {
    let ns = Netns::new();
    seed::with_conntrack(&ns, &seed::mixed_table(50), "seed.conntrack");
    // The build directory may not be reachable by nobody: run a world-executable copy.
    let bin = ns.file("ctguard");
    std::fs::copy(CTGUARD, &bin).expect("copy the ctguard binary to the scratch dir");
    for (path, mode) in [(bin.as_path(), 0o755), (bin.parent().expect("scratch dir"), 0o755)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .expect("make the ctguard copy executable by nobody");
    }
    let bin = bin.to_string_lossy().into_owned();
    let mut c = Checks::new();
    for cmd in [vec!["stats"], vec!["list"], vec!["count", "--by", "src"]] {
        c.run(&format!("nobody: ctguard {}", cmd.join(" ")), || {
            let mut args = vec![
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                bin.as_str(),
            ];
            args.extend(cmd.iter().copied());
            let r = ns.exec("setpriv", &args);
            equal("exit code", r.code, Some(2)).map_err(|e| format!("{e}; {}", r.describe()))?;
            equal("stderr lines", r.stderr_lines().len(), 1)
                .map_err(|e| format!("{e}: {:?}", r.stderr))?;
            if !r.stderr.contains("CAP_NET_ADMIN") {
                return Err(format!("stderr does not mention CAP_NET_ADMIN: {:?}", r.stderr));
            }
            equal("stdout", r.stdout.as_str(), "")
        });
    }
    c.finish();
}
