//! Shared helpers for the benchmarks, and the load harness
//! (`vetting-load`, see `docs/performance.md`).

pub mod load;
