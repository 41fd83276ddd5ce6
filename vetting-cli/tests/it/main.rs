//! Integration tests of the `vetting` binary with real processes over real
//! sockets on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod serve;
// vetting-core's test databases (a fresh PostgreSQL database per test)
#[path = "../../../vetting-core/tests/it/support.rs"]
#[allow(dead_code)]
mod support;
mod whole_run;
// deploy/, the package and the unit
mod deploy;
