//! `ctguard evict`: delete exactly the selected flows. Its flags, plan and run are in the
//! `act` leaf, which `update` shares.

pub use crate::cli::act::{EvictArgs, EvictPlan, run};

use crate::cli::act::{self, EVICT};

/// Checks every flag before anything is touched; a bad one is a one-line reason.
pub fn plan(a: EvictArgs) -> Result<EvictPlan, String> {
    act::plan_as(a, EVICT)
}
