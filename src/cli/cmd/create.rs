//! `ctguard create`: create one flow, like `conntrack -I`.

use ctguard::ctnetlink::Conntrack;
use ctguard::flow::Flow;

use crate::cli::create_args;
use crate::cli::exit::{self, Failure, Outcome};

/// `ctguard create`: like `conntrack -I`.
pub use create_args::CreateArgs as Args;

/// A validated `create`: the flow.
#[derive(Debug)]
pub struct Plan {
    flow: Box<Flow>,
}

/// The flow `create` asks for.
pub fn plan(a: Args) -> Result<Plan, String> {
    Ok(Plan { flow: Box::new(create_args::flow(a)?) })
}

/// What `create` says on stderr once the kernel acknowledged the flow: `conntrack -I`'s
/// confirmation ("1 flow entries have been created."), in grammatical English. Stdout stays
/// empty, as conntrack's does.
const CREATED: &str = "ctguard: 1 flow entry has been created.";

/// Runs `create`.
pub fn run(p: Plan, ct: &mut Conntrack) -> Result<Outcome, Failure> {
    let mut failed = None;
    ct.create(std::slice::from_ref(&*p.flow), |_, errno| failed = Some(errno))?;
    if let Some(errno) = failed {
        return Err(Failure::Message(format!("create: {}", exit::errno_text(errno))));
    }
    eprintln!("{CREATED}");
    Ok(Outcome::Ok)
}
