//! vetting-agent: the in-image test agent. The command-line subcommands
//! live in [`cli`]; the run loop and its HTTP client come next to it.

pub mod cli;
pub mod client;
pub mod outbox;
pub mod params;
pub mod run_loop;
pub mod sidecar;
pub mod stages;
