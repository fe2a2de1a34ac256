//! `tune --apply`: where each recommended value may be written from this namespace, and the
//! writes themselves, each read back.

use std::io;

use serde::{Deserialize, Serialize};

use super::recommend::{HASHSIZE_PARAM, Recommendation, Scope, buckets_by_sysctl};
use crate::sysctl;

/// How `--apply` treats one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Already at the value.
    Unchanged,
    /// Write the value to this file.
    Write(String),
    /// Global and not writable from here: the reason, nothing is attempted.
    ReadOnly(String),
}

/// Where each key's value goes, or why it cannot. `initial`: the namespace is the initial
/// one (`None`: cannot tell). `writable(name)`: the `/proc/sys` file's mode allows writing.
pub fn plan_apply(
    recs: &[Recommendation],
    initial: Option<bool>,
    kernel: Option<(u32, u32)>,
    writable: impl Fn(&str) -> bool,
) -> Vec<Step> {
    recs.iter()
        .map(|r| {
            if !r.change {
                return Step::Unchanged;
            }
            let name = r.proc_name();
            let proc_path = sysctl::path(name);
            if r.scope == Scope::Namespace {
                return Step::Write(proc_path);
            }
            match initial {
                Some(true) => {}
                Some(false) => {
                    return Step::ReadOnly(
                        "global, read-only inside a non-initial namespace (mode 0444): set it \
                         from the host's initial namespace"
                            .into(),
                    );
                }
                None => {
                    return Step::ReadOnly(
                        "global, and this namespace cannot be told to be the initial one: \
                         set it from the host's initial namespace"
                            .into(),
                    );
                }
            }
            if name == "nf_conntrack_buckets" && !buckets_by_sysctl(kernel) {
                return Step::Write(HASHSIZE_PARAM.into());
            }
            if !writable(name) {
                return Step::ReadOnly(format!("{proc_path} is read-only here"));
            }
            Step::Write(proc_path)
        })
        .collect()
}

/// What `--apply` did to one key, as in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApplyOutcome {
    /// The value was written and reads back.
    Written,
    /// Already at the value: nothing written.
    Unchanged,
    /// Not writable from here (global outside the initial namespace, or refused by the
    /// kernel with EACCES/EPERM/EROFS): nothing changed, and that is not an error.
    ReadOnly,
    /// The write failed otherwise, or the value did not read back.
    Failed,
}

impl ApplyOutcome {
    /// As in JSON: `written`, `unchanged`, `read-only`, `failed`.
    pub fn name(self) -> &'static str {
        match self {
            ApplyOutcome::Written => "written",
            ApplyOutcome::Unchanged => "unchanged",
            ApplyOutcome::ReadOnly => "read-only",
            ApplyOutcome::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ApplyOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What `--apply` did to one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Applied {
    /// The sysctl.
    pub key: String,
    /// `written`, `unchanged`, `read-only` or `failed`.
    pub outcome: ApplyOutcome,
    /// The file written, or why not.
    pub detail: String,
}

/// Executes the plan. A write the kernel refuses with EACCES/EPERM/EROFS counts as
/// read-only, any other failure as failed.
pub fn apply(recs: &[Recommendation], steps: &[Step]) -> Vec<Applied> {
    recs.iter()
        .zip(steps)
        .map(|(r, step)| {
            let (outcome, detail) = match step {
                Step::Unchanged => (ApplyOutcome::Unchanged, format!("already {}", r.value)),
                Step::ReadOnly(why) => (ApplyOutcome::ReadOnly, why.clone()),
                Step::Write(path) => match write_value(path, r.value) {
                    Ok(()) => (ApplyOutcome::Written, path.clone()),
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EACCES | libc::EPERM | libc::EROFS)
                        ) =>
                    {
                        (ApplyOutcome::ReadOnly, format!("{path}: {e}"))
                    }
                    Err(e) => (ApplyOutcome::Failed, format!("{path}: {e}")),
                },
            };
            Applied { key: r.key.clone(), outcome, detail }
        })
        .collect()
}

fn write_value(path: &str, value: u64) -> io::Result<()> {
    std::fs::write(path, format!("{value}\n"))?;
    // A sysctl may clamp or ignore a value without an error: read it back.
    let back = std::fs::read_to_string(path)?;
    if back.trim() != value.to_string() {
        return Err(io::Error::other(format!("wrote {value}, reads back {}", back.trim())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::recommend::recommend;
    use crate::tune::recommend::tests::incident_host;

    #[test]
    fn apply_plan_never_writes_globals_outside_the_initial_namespace() {
        let recs = recommend(&incident_host());
        let any = |_: &str| true;
        let inside = plan_apply(&recs, Some(false), Some((6, 18)), any);
        assert!(matches!(&inside[0], Step::ReadOnly(why) if why.contains("non-initial")));
        assert!(matches!(&inside[1], Step::ReadOnly(_)));
        assert_eq!(
            inside[2],
            Step::Write("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established".into())
        );
        assert_eq!(inside[5], Step::Unchanged);
        let unknown = plan_apply(&recs, None, Some((6, 18)), any);
        assert!(matches!(&unknown[0], Step::ReadOnly(_)));
        let host = plan_apply(&recs, Some(true), Some((6, 18)), any);
        assert_eq!(host[1], Step::Write("/proc/sys/net/netfilter/nf_conntrack_buckets".into()));
        let old = plan_apply(&recs, Some(true), Some((4, 4)), any);
        assert_eq!(old[1], Step::Write(HASHSIZE_PARAM.into()));
        let ro = plan_apply(&recs, Some(true), Some((6, 18)), |n| n != "nf_conntrack_max");
        assert!(matches!(&ro[0], Step::ReadOnly(why) if why.contains("read-only here")));
    }

    #[test]
    fn apply_writes_reads_back_and_reports_each_outcome() {
        let recs = recommend(&incident_host());
        let dir = std::env::temp_dir().join(format!("ctguard-tune-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("established");
        std::fs::write(&file, "432000\n").unwrap();
        let steps = [
            Step::ReadOnly("global".into()),
            Step::Write(dir.join("no/such/dir").to_string_lossy().into_owned()),
            Step::Write(file.to_string_lossy().into_owned()),
            Step::Unchanged,
        ];
        let done = apply(&recs[..4], &steps);
        let outcomes: Vec<&str> = done.iter().map(|a| a.outcome.name()).collect();
        assert_eq!(outcomes, ["read-only", "failed", "written", "unchanged"]);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "3600\n");
        assert_eq!(done[2].key, "net.netfilter.nf_conntrack_tcp_timeout_established");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn issue_11_4_outcomes_are_an_enum_with_the_same_json_words() {
        use ApplyOutcome::*;
        for (o, word) in [
            (Written, "written"),
            (Unchanged, "unchanged"),
            (ReadOnly, "read-only"),
            (Failed, "failed"),
        ] {
            assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{word}\""));
            assert_eq!(o.to_string(), word);
            assert_eq!(serde_json::from_str::<ApplyOutcome>(&format!("\"{word}\"")).unwrap(), o);
        }
        assert!(serde_json::from_str::<ApplyOutcome>("\"fail\"").is_err());
    }
}
