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
