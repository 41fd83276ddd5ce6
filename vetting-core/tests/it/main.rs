//! Integration tests of vetting-core: the store and state machine on SQLite
//! and PostgreSQL, concurrency across processes, tokens, restart, PXE and power.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod concurrency;
mod operator;
mod runs;
mod tokens_restart;

mod netns;
mod ocp;
mod power;
mod pxe;
mod spec_reports;
