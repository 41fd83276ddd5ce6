//! The verdict rules of what the agent measures itself instead of reading
//! it from one tool's output: counters read before and after a test (EDAC
//! memory errors and CPU thermal throttling during CPUStress, a NIC's
//! errors and drops during Network, a disk's SMART counters during
//! Storage) and the thermal sidecar's peaks. Each comes with the document
//! the agent uploads as evidence under a [`Tool`] of its own, so that the
//! orchestrator re-judges it with its own thresholds, like any tool output.
//!
//! The documents are small JSON objects defined here once (counters:
//! [`BeforeAfter`]; the sidecar: [`cpu::SidecarSummary`]); every name in
//! them that reaches a verdict's message is checked to be what sysfs would
//! call it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{ParseError, Tool};

pub mod cpu;
pub mod network;
pub mod storage;

/// Counters read before and after a test, as the agent uploads them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeforeAfter<T> {
    /// What was read (an interface, a disk); absent for the whole host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub before: T,
    pub after: T,
}

impl<T: Serialize> BeforeAfter<T> {
    pub fn new(subject: Option<&str>, before: T, after: T) -> Self {
        BeforeAfter {
            subject: subject.map(str::to_string),
            before,
            after,
        }
    }

    /// The document as uploaded (JSON).
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec_pretty(self)
    }
}

/// Parses a document of `tool`.
pub(crate) fn document<T: DeserializeOwned>(tool: Tool, input: &[u8]) -> Result<T, ParseError> {
    crate::error::json(tool.name(), input)
}

/// Whether `name` is `prefix` followed by a decimal number (`mc0`,
/// `cpu12`), as sysfs names memory controllers and CPUs.
pub(crate) fn numbered(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|number| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
}

/// Refuses a document naming something sysfs would not (`what` says what
/// kind of name it is).
pub(crate) fn check_names<'a>(
    tool: Tool,
    what: &str,
    names: impl IntoIterator<Item = &'a String>,
    valid: impl Fn(&str) -> bool,
) -> Result<(), ParseError> {
    for name in names {
        if !valid(name) {
            return Err(ParseError::format(
                tool.name(),
                format!(
                    "`{}` is not a {what} name",
                    name.chars().take(32).collect::<String>().escape_debug()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sysfs_numbered_names_pass() {
        assert!(numbered("mc0", "mc"));
        assert!(numbered("cpu17", "cpu"));
        for name in ["mc", "mcx", "mc0 ", "cpu-1", "cpufreq", "../mc0"] {
            assert!(!numbered(name, "mc") && !numbered(name, "cpu"), "{name}");
        }
    }
}
