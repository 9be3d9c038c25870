//! Runtime benchmarks (criterion, `harness = false`). Placeholder until the object runtime
//! lands; see SPEC §11 for the figures each bench will print.

fn main() {}
