//! The vetting orchestrator as a library: model, store (sea-orm + embedded
//! migrations), the run state machine, the dispatcher, run tokens, config,
//! the events hub, PXE (dnsmasq supervisor, iPXE scripts) and power control.
//!
//! Nothing here knows about HTTP: `vetting-http` parses requests, calls into
//! this crate and renders the answer.

pub mod agent;
pub mod boot;
pub mod clock;
pub mod config;
pub mod error;
pub mod events;
pub mod iperf;
pub mod machine;
pub mod model;
pub mod notify;
pub mod operator;
pub mod orchestrator;
pub mod power;
pub mod pxe;
pub mod reports;
pub mod runlogs;
pub mod runs;
pub mod spec;
pub mod store;
pub mod tokens;
