//! The gate itself (issue 11.11, 11.7): the lints it enforces, and that its unprivileged half
//! needs no root.

use std::path::Path;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn toml_table(path: &str) -> toml::Table {
    repo_file(path).parse().unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn issue_11_11_clippy_denies_unwrap_expect_and_undocumented_unsafe() {
    let manifest = toml_table("Cargo.toml");
    let clippy = manifest
        .get("workspace")
        .and_then(|w| w.get("lints"))
        .and_then(|l| l.get("clippy"))
        .and_then(|c| c.as_table())
        .expect("Cargo.toml has a [workspace.lints.clippy] table");
    // Both packages, ctguard and the lab, take the workspace's lints.
    for package in ["Cargo.toml", "integration/Cargo.toml"] {
        let inherits = toml_table(package)
            .get("lints")
            .and_then(|l| l.get("workspace"))
            .and_then(|w| w.as_bool());
        assert_eq!(inherits, Some(true), "{package}: [lints] workspace = true");
    }
    for lint in ["unwrap_used", "expect_used", "undocumented_unsafe_blocks"] {
        let level = clippy.get(lint).and_then(|v| v.as_str().or_else(|| v.get("level")?.as_str()));
        assert_eq!(level, Some("deny"), "clippy::{lint} in Cargo.toml's [workspace.lints.clippy]");
    }
    // Tests may unwrap: a panic there is a failed test.
    let config = toml_table("clippy.toml");
    for key in ["allow-unwrap-in-tests", "allow-expect-in-tests"] {
        assert_eq!(config.get(key).and_then(|v| v.as_bool()), Some(true), "{key} in clippy.toml");
    }
}

#[test]
fn issue_11_7_the_library_denies_missing_docs() {
    let lib = repo_file("src/lib.rs");
    let inner: Vec<&str> = lib
        .lines()
        .map(str::trim)
        .take_while(|l| l.starts_with("//!") || l.starts_with("#![") || l.is_empty())
        .collect();
    assert!(
        inner.contains(&"#![deny(missing_docs)]"),
        "src/lib.rs opens with #![deny(missing_docs)]"
    );
}

/// The unprivileged gate runs the checks that need no kernel, and nothing that needs root.
#[test]
fn issue_11_11_check_is_unprivileged_and_test_runs_it_first() {
    let check = repo_file("scripts/check");
    for step in [
        "cargo fmt --all --check",
        "cargo clippy --workspace --all-targets --all-features -- -D warnings",
        "-D warnings\" cargo doc --workspace --no-deps",
        "cargo test --lib --bins --test hermetic",
        "cargo test --doc",
    ] {
        assert!(check.contains(step), "scripts/check runs `{step}`");
    }
    let code: Vec<&str> = check.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    for privileged in [
        "ctg_require_root",
        "apt-get",
        "ip netns",
        "unshare",
        "sudo",
        "rustup component add",
        "kernel-tests",
    ] {
        assert!(
            !code.iter().any(|l| l.contains(privileged)),
            "scripts/check must not run `{privileged}`"
        );
    }
    let test = repo_file("scripts/test");
    let check_at = test
        .find("ctg_step \"check\" \"$CTG_SCRIPTS/check\"")
        .expect("scripts/test runs scripts/check");
    let kernel_at =
        test.find("ctg_step \"kernel tests\"").expect("scripts/test runs the kernel tests");
    let lab_at = test.find("ctg_step \"lab\"").expect("scripts/test runs the lab");
    assert!(
        check_at < kernel_at && kernel_at < lab_at,
        "scripts/test: check, then the kernel tier, then the lab"
    );
    assert!(repo_file(".ci/run").contains("exec scripts/test"), ".ci/run still runs scripts/test");
}

/// On a machine where other runs (other checkouts, other helpers) create their own ctg-*
/// namespaces meanwhile, scripts/test's last step must count only what this run left behind:
/// the namespaces of a creator still running elsewhere are not a leftover.
#[test]
fn issue_11_11_leftover_check_skips_namespaces_of_another_running_run() {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib.sh");
    let alive = std::process::id(); // this test: running, and not the script
    let dead = 4_194_305u32; // above PID_MAX_LIMIT (2^22): never a process
    let script = r#"source "$1"
before=ctg-kt-1-1
now=$(printf '%s\n' ctg-kt-1-1 "ctg-kt-$2-3" "ctg-lab-$3-host" "ctg-test-preflight-$$" ctg-manual)
ctg_netns_new_leftovers "$before" "$now" | sed "s/-$$\$/-SELF/""#;
    let out = std::process::Command::new("bash")
        .args(["-c", script, "gate-test"])
        .arg(&lib)
        .args([alive.to_string(), dead.to_string()])
        .output()
        .expect("run bash");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bash failed: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("ctg-lab-{dead}-host\nctg-test-preflight-SELF\nctg-manual\n"),
        "new namespaces: a dead creator's, this script's own and an unnamed one count; \
         the one in BEFORE and the running creator's do not"
    );
    assert!(
        stderr.contains(&format!("not counted: ctg-kt-{alive}-3")),
        "the skipped one is named: {stderr}"
    );
}
