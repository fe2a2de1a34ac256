//! Named checks over one expensive fixture: every check runs (a failure or a panic in one does
//! not hide the others), and the test fails at the end listing each failed check by name.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

/// The checks run so far.
#[derive(Default)]
pub struct Checks {
    failed: Vec<String>,
    passed: usize,
}

impl Checks {
    /// An empty list.
    pub fn new() -> Checks {
        Checks::default()
    }

    /// Runs one named check; `Err` or a panic marks it failed.
    pub fn run(&mut self, name: &str, check: impl FnOnce() -> Result<(), String>) {
        let start = Instant::now();
        let outcome = match catch_unwind(AssertUnwindSafe(check)) {
            Ok(r) => r,
            Err(panic) => Err(panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into())),
        };
        let took = start.elapsed().as_secs_f32();
        match outcome {
            Ok(()) => {
                eprintln!("check ok   ({took:.1}s) {name}");
                self.passed += 1;
            }
            Err(why) => {
                eprintln!("check FAIL ({took:.1}s) {name}: {why}");
                self.failed.push(format!("{name}: {why}"));
            }
        }
    }

    /// Fails the test if any check failed.
    #[track_caller]
    pub fn finish(self) {
        assert!(
            self.failed.is_empty(),
            "{} of {} checks failed:\n- {}",
            self.failed.len(),
            self.failed.len() + self.passed,
            self.failed.join("\n- ")
        );
    }
}

/// `Err` with a message unless `got == want`.
pub fn equal<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want { Ok(()) } else { Err(format!("{what}: got {got:?}, expected {want:?}")) }
}
