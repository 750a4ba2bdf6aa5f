//! Placeholder: the benchmark harness is being written.
fn main() {}
