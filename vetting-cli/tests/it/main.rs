//! Integration tests of the `vetting` binary with real processes over real
//! sockets on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli_bad_input;
mod cli_commands;
mod cli_help;
mod cli_hold;
mod cli_lifecycle;
mod cli_support;
mod cli_watch_screen;
mod serve;
// vetting-core's test databases (a fresh PostgreSQL database per test)
#[path = "../../../vetting-core/tests/it/support.rs"]
#[allow(dead_code)]
mod support;
mod whole_run;
// deploy/, the package and the unit
mod deploy;
