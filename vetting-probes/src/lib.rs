//! Hardware facts for vetting: inventory types, tool runners, parsers and the
//! verdict rules that decide whether a server passes, plus the wire types of
//! the agent ↔ orchestrator protocol (shared by both sides).
//!
//! Nothing here knows about HTTP servers or databases: a probe returns data
//! and knows nothing of where it goes.

pub mod disks;
pub mod error;
pub mod glob;
pub mod inventory;
pub mod parsers;
pub mod protocol;
pub mod runner;
pub mod sections;
pub mod thresholds;
pub mod verdict;
pub mod verdicts;

pub use error::ParseError;
pub use parsers::{Tool, ToolReport, parse_and_judge};
pub use thresholds::Thresholds;
pub use verdict::{Reason, Status, Verdict};
