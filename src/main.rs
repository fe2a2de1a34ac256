//! The `ctguard` binary: parse → plan → run → exit code.
fn main() {}
