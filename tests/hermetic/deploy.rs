//! Issue 13: what ships in deploy/ beside the guard — the example configs parse and name every
//! pinned key, the Prometheus rules and their unit tests pass `promtool`, the dashboard is valid
//! JSON on a templated datasource, and the systemd unit passes `systemd-analyze verify`.
//!
//! None of it needs the guard binary. `promtool` (Debian's `prometheus` package) and
//! `systemd-analyze` are external: scripts/test installs them and sets
//! `CTGUARD_REQUIRE_TOOLS=1`, under which a missing one fails the test; a plain `cargo test`
//! (or scripts/check) on a machine without them says so on stderr and checks the rest.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use ctguard::guests::GuestMap;
use serde_json::Value;

/// Every metric the guard exposes (issue 13's pinned names): the rules and the dashboard may
/// use these and no other `ctguard_` name.
const METRICS: &[&str] = &[
    "ctguard_entries",
    "ctguard_table_entries",
    "ctguard_table_limit",
    "ctguard_kernel_drop_total",
    "ctguard_kernel_early_drop_total",
    "ctguard_kernel_insert_failed_total",
    "ctguard_kernel_chaintoolong_total",
    "ctguard_evicted_total",
    "ctguard_capped",
    "ctguard_actions_total",
    "ctguard_quota_entries",
    "ctguard_event_overruns_total",
    "ctguard_resyncs_total",
    "ctguard_events_total",
    "ctguard_synced",
    "ctguard_build_info",
    "ctguard_guests",
];

/// The pinned top-level keys of guard.toml that the example sets.
const TOP_KEYS: &[&str] = &[
    "guests",
    "discover",
    "high",
    "low",
    "quota",
    "action",
    "evict_state",
    "cap",
    "cooldown",
    "protect",
    "metrics",
    "socket",
    "audit_log",
    "state_dir",
    "dry_run",
];
/// Pinned keys that mean something by their absence (no idle bound; the guard's own
/// namespace): the example shows them commented out, and sets `evict_idle` per guest.
const OPTIONAL_TOP_KEYS: &[&str] =
    &["evict_idle", "netns", "libvirt_dir", "pve_dir", "discover_every"];
/// The keys of a `[guest.NAME]` table.
const GUEST_KEYS: &[&str] = &["quota", "action", "cap", "evict_state", "evict_idle"];

fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn repo_file(path: &str) -> String {
    let full = repo_path(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The external tool on PATH, or `None` (said on stderr) when it is missing and
/// `CTGUARD_REQUIRE_TOOLS` is not `1`; with it set, a missing tool fails the test.
pub(crate) fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CTGUARD_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "`{name}` is not on PATH, and CTGUARD_REQUIRE_TOOLS=1 requires it: \
             apt-get install {package} (scripts/test does)"
        );
        eprintln!(
            "deploy: `{name}` not installed ({package}): its checks did not run \
             (scripts/test installs it and requires them)"
        );
    }
    found
}

/// Runs the command, which must succeed: its stdout and stderr together.
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{text}", out.status);
    text
}

/// The `ctguard_*` names in a text (PromQL, YAML, JSON): words starting with `ctguard_`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("ctguard_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn issue_13_example_guard_toml_sets_every_pinned_key() {
    let text = repo_file("deploy/guard.toml");
    let config: toml::Table = text.parse().unwrap_or_else(|e| panic!("deploy/guard.toml: {e}"));
    for key in TOP_KEYS {
        assert!(config.contains_key(*key), "deploy/guard.toml sets `{key}`");
    }
    for key in OPTIONAL_TOP_KEYS {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("# {key} = "))),
            "deploy/guard.toml shows the optional `{key}` (commented out)"
        );
    }
    let known: BTreeSet<&str> =
        TOP_KEYS.iter().chain(OPTIONAL_TOP_KEYS).copied().chain(["guest"]).collect();
    for key in config.keys() {
        assert!(known.contains(key.as_str()), "deploy/guard.toml: `{key}` is not a pinned key");
    }
    // The incident's values (issue 13's table).
    for (key, value) in [
        ("high", "90%"),
        ("low", "75%"),
        ("quota", "50%"),
        ("action", "cap+evict"),
        ("cooldown", "10m"),
        ("metrics", "127.0.0.1:9731"),
        ("socket", "/run/ctguard/guard.sock"),
        ("audit_log", "/var/log/ctguard/audit.jsonl"),
        ("state_dir", "/var/lib/ctguard"),
    ] {
        assert_eq!(config[key].as_str(), Some(value), "deploy/guard.toml: {key}");
    }
    assert_eq!(config["cap"].as_integer(), Some(20_000));
    assert_eq!(config["dry_run"].as_bool(), Some(false), "the example acts");
    assert_eq!(config["protect"].as_array().map(Vec::len), Some(1));
    assert_eq!(config["protect"][0].as_str(), Some("172.16.0.1/32"));

    // Every [guest.NAME] uses only the per-guest keys, and together they show all of them;
    // every NAME is a guest of the example guest file.
    let guests = GuestMap::parse(&repo_file("deploy/guests.toml"), "deploy/guests.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    let tables = config["guest"].as_table().expect("deploy/guard.toml has a [guest.NAME]");
    let mut shown = BTreeSet::new();
    for (name, table) in tables {
        assert!(guests.find(name).is_some(), "[guest.{name}] is not in deploy/guests.toml");
        let table = table.as_table().unwrap_or_else(|| panic!("guest.{name} is a table"));
        for key in table.keys() {
            assert!(GUEST_KEYS.contains(&key.as_str()), "[guest.{name}]: `{key}` is not a key");
            shown.insert(key.as_str());
        }
    }
    assert_eq!(shown, GUEST_KEYS.iter().copied().collect(), "the [guest.NAME] examples");
}

#[test]
fn issue_13_prometheus_rules_and_config_pass_promtool() {
    // Offline first: the rules name only the guard's metrics.
    let rules = repo_file("deploy/prometheus/ctguard.rules.yml");
    for name in metric_names(&rules) {
        assert!(METRICS.contains(&name.as_str()), "ctguard.rules.yml uses `{name}`, not a metric");
    }
    let tests = repo_file("deploy/prometheus/ctguard.rules.test.yml");
    for name in metric_names(&tests) {
        assert!(METRICS.contains(&name.as_str()), "ctguard.rules.test.yml feeds `{name}`");
    }
    // Every alert has a unit test.
    let alerts: BTreeSet<&str> =
        rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    assert!(alerts.len() >= 8, "the rules define the alerts of issue 13: {alerts:?}");
    for alert in &alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}\n        exp_alerts:\n          - ")),
            "ctguard.rules.test.yml has no test where {alert} fires"
        );
        assert!(
            tests.contains(&format!("alertname: {alert}\n        exp_alerts: []")),
            "ctguard.rules.test.yml has no test where {alert} stays quiet"
        );
    }

    let Some(promtool) = tool("promtool", "prometheus") else { return };
    let dir = repo_path("deploy/prometheus");
    let out = run_ok(
        Command::new(&promtool).args(["check", "rules", "ctguard.rules.yml"]).current_dir(&dir),
    );
    assert!(out.contains(&format!("SUCCESS: {} rules found", alerts.len())), "{out}");
    let out = run_ok(
        Command::new(&promtool).args(["test", "rules", "ctguard.rules.test.yml"]).current_dir(&dir),
    );
    assert!(out.contains("SUCCESS"), "{out}");
    run_ok(Command::new(&promtool).args(["check", "config", "prometheus.yml"]).current_dir(&dir));
}

#[test]
fn issue_13_grafana_dashboard_is_json_on_a_templated_datasource() {
    let text = repo_file("deploy/grafana/ctguard.json");
    let dashboard: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("deploy/grafana/ctguard.json: {e}"));
    let variables = dashboard["templating"]["list"].as_array().expect("templating.list");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a `datasource` variable of type datasource (prometheus)"
    );
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {title}'s datasource");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} queries something");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "a target of {title}");
            exprs.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    // What issue 13 asks to see, by the metrics it needs.
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    for name in &used {
        assert!(METRICS.contains(&name.as_str()), "the dashboard queries `{name}`, not a metric");
    }
    for needed in [
        "ctguard_table_entries",
        "ctguard_entries",
        "ctguard_kernel_drop_total",
        "ctguard_evicted_total",
        "ctguard_actions_total",
        "ctguard_capped",
        "ctguard_event_overruns_total",
        "ctguard_resyncs_total",
    ] {
        assert!(used.contains(needed), "the dashboard shows {needed}");
    }

    // Each query is valid PromQL: promtool parses it as a recording rule once Grafana's
    // variables are given values.
    let Some(promtool) = tool("promtool", "prometheus") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$guest", ".*");
        file +=
            &format!("      - record: dashboard:query_{i}\n        expr: {}\n", Value::from(expr));
    }
    std::fs::write(dir.path().join("dashboard.yml"), file).unwrap();
    run_ok(Command::new(&promtool).args(["check", "rules"]).arg(dir.path().join("dashboard.yml")));
}

#[test]
fn issue_13_systemd_unit_is_hardened_and_verifies() {
    let unit = repo_file("deploy/ctguard.service");
    let lines: BTreeSet<&str> =
        unit.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/usr/sbin/ctguard guard --config /etc/ctguard/guard.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=ctguard",
        "LogsDirectory=ctguard",
        "RuntimeDirectory=ctguard",
        "RuntimeDirectoryMode=0700",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_NETLINK AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces=net",
        "SystemCallArchitectures=native",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
    ] {
        assert!(lines.contains(line), "deploy/ctguard.service has `{line}`");
    }
    assert!(lines.iter().any(|l| l.starts_with("TimeoutStopSec=")), "a TimeoutStopSec");
    // The paths it uses are the example config's, which systemd's directories make writable.
    let config: toml::Table = repo_file("deploy/guard.toml").parse().unwrap();
    for (key, dir) in [
        ("socket", "/run/ctguard/"),
        ("audit_log", "/var/log/ctguard/"),
        ("state_dir", "/var/lib/ctguard"),
    ] {
        let value = config[key].as_str().unwrap();
        assert!(value.starts_with(dir), "guard.toml's {key} ({value}) is under {dir}");
    }

    let Some(analyze) = tool("systemd-analyze", "systemd") else { return };
    // verify refuses an ExecStart that does not exist: point it at a stand-in executable, so
    // the check needs no ctguard installed. Any line naming the unit is a warning (an unknown
    // key, a bad value), which systemd ignores but the check does not.
    let dir = tempfile::tempdir().unwrap();
    let stand_in = dir.path().join("ctguard");
    std::fs::copy("/bin/true", &stand_in).unwrap();
    let unit_path = dir.path().join("ctguard.service");
    std::fs::write(&unit_path, unit.replace("/usr/sbin/ctguard", stand_in.to_str().unwrap()))
        .unwrap();
    let out = run_ok(Command::new(&analyze).arg("verify").arg(&unit_path));
    assert!(!out.contains("ctguard.service"), "systemd-analyze verify warns:\n{out}");
}
