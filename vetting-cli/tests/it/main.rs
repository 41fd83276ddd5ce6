//! Integration tests of the `vetting` binary with real processes over real
//! sockets on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod serve;
mod whole_run;
