//! The load harness: the orchestrator in its own process, pinned to one
//! core, and simulated agents (built on `vetting_agent::client` and its
//! outbox) on the other, over real loopback sockets. See
//! `docs/performance.md` for the command and the figures.

pub mod agents;
pub mod pin;
pub mod procfs;
pub mod scenarios;
pub mod server;
pub mod stats;
pub mod verify;
pub mod watch;
