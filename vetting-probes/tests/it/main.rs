//! Integration tests of vetting-probes: every parser on the real fixtures in
//! `../shared/fixtures`, the real tools on loop devices, and robustness.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

// storage and SMART
mod smartctl;
mod storage_tools;
// GPU, PSU, sensors
mod gpu;
mod psu_sensors;
// inventory, CPU/memory stress, network
mod inventory;
mod stress_net;
// every parser on truncated, empty, non-UTF-8 and random input
mod robustness;
