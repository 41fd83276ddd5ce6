//! Shared helpers for the benchmarks and the load harness.
