//! Verdicts: `pass`, `warn`, `fail` or `skip`, with reasons that name the
//! attribute, its value and the threshold that decided.

use serde::{Deserialize, Serialize};

/// The outcome of judging one tool output (or one stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Status {
    /// How bad a status is, for combining: skip < pass < warn < fail.
    fn rank(self) -> u8 {
        match self {
            Status::Skip => 0,
            Status::Pass => 1,
            Status::Warn => 2,
            Status::Fail => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding: its own status and a message naming what was checked, the
/// value seen and the threshold (e.g. `attribute 5 Reallocated_Sector_Ct raw
/// 304 >= fail threshold 100`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub status: Status,
    pub message: String,
}

/// A verdict with every reason behind it. `status` is the worst of the
/// reasons, or `pass` when there are none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub status: Status,
    pub reasons: Vec<Reason>,
}

impl Default for Verdict {
    fn default() -> Self {
        Self::pass()
    }
}

impl Verdict {
    /// Nothing triggered.
    pub fn pass() -> Self {
        Verdict {
            status: Status::Pass,
            reasons: Vec::new(),
        }
    }

    /// The check could not apply (tool missing, no device data, no sensors).
    pub fn skip(message: impl Into<String>) -> Self {
        Verdict {
            status: Status::Skip,
            reasons: vec![Reason {
                status: Status::Skip,
                message: message.into(),
            }],
        }
    }

    /// A verdict that fails for one reason.
    pub fn fail(message: impl Into<String>) -> Self {
        let mut verdict = Verdict::pass();
        verdict.add(Status::Fail, message);
        verdict
    }

    /// Adds a finding; the status becomes the worst seen. A `pass` finding
    /// is kept as information without changing the status.
    pub fn add(&mut self, status: Status, message: impl Into<String>) {
        self.reasons.push(Reason {
            status,
            message: message.into(),
        });
        let replaces_skip = self.status == Status::Skip && status != Status::Skip;
        if replaces_skip || status.rank() > self.status.rank() {
            self.status = status;
        }
    }

    pub fn warn(&mut self, message: impl Into<String>) {
        self.add(Status::Warn, message);
    }

    pub fn fail_with(&mut self, message: impl Into<String>) {
        self.add(Status::Fail, message);
    }

    /// Folds another verdict into this one (e.g. the disks of a stage).
    /// Skips only win when everything skipped.
    pub fn merge(&mut self, other: Verdict) {
        let was_empty_pass = self.status == Status::Pass && self.reasons.is_empty();
        for reason in other.reasons {
            self.reasons.push(reason);
        }
        self.status = match (self.status, other.status) {
            (Status::Pass, Status::Skip) if was_empty_pass => Status::Skip,
            (a, Status::Skip) => a,
            (Status::Skip, b) => b,
            (a, b) if b.rank() > a.rank() => b,
            (a, _) => a,
        };
    }

    /// The messages of the reasons with the given status.
    pub fn messages(&self, status: Status) -> impl Iterator<Item = &str> {
        self.reasons
            .iter()
            .filter(move |reason| reason.status == status)
            .map(|reason| reason.message.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_reason_decides() {
        let mut verdict = Verdict::pass();
        verdict.warn("attribute 199 UDMA_CRC_Error_Count raw 12 > 0");
        assert_eq!(verdict.status, Status::Warn);
        verdict.fail_with("attribute 5 raw 304 >= 100");
        verdict.warn("another");
        assert_eq!(verdict.status, Status::Fail);
    }

    #[test]
    fn merge_keeps_skip_only_when_everything_skipped() {
        let mut all = Verdict::pass();
        all.merge(Verdict::skip("no GPU"));
        assert_eq!(all.status, Status::Skip);
        all.merge(Verdict::pass());
        assert_eq!(all.status, Status::Pass);
        all.merge(Verdict::fail("bad"));
        assert_eq!(all.status, Status::Fail);
    }
}
