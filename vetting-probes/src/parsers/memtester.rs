//! Parser and verdict rules for `memtester` output (stdout and stderr
//! together, as captured).
//!
//! memtester draws progress with backspaces (`setting   3\b\b\b…`); they
//! are applied before parsing, so `  Stuck Address       : ok` reads as
//! printed on a terminal. A failing test prints `FAILURE: 0x… != 0x… at
//! offset 0x…` (or `FAILURE: possible bad address line at offset 0x…`) on
//! stderr instead of `ok`. A run ends with `Done.`.
//!
//! Verdict: any FAILURE fails; a run that did not finish fails; testing less
//! memory than asked for (mlock limits) warns.

use serde::{Deserialize, Serialize};

use crate::error::text;
use crate::{ParseError, Thresholds, Tool, ToolReport, Verdict};

const TOOL: &str = "memtester";

/// How many failure lines the verdict quotes.
const QUOTED_FAILURES: usize = 10;

/// A memtester run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memtester {
    pub version: Option<String>,
    pub wanted_bytes: Option<u64>,
    pub got_bytes: Option<u64>,
    /// The memory was locked (`trying mlock ...locked.`).
    pub locked: bool,
    /// Loops asked for (`Loop 1/3:`); `None` for an endless run.
    pub loops_requested: Option<u64>,
    /// Loops started.
    pub loops_started: u64,
    pub tests: Vec<MemtesterTest>,
    /// Every FAILURE line, in order.
    pub failures: Vec<String>,
    /// `Done.` was printed.
    pub finished: bool,
}

/// The outcome of one test in one loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestOutcome {
    Ok,
    Failed,
    /// Neither `ok` nor a failure: the run stopped during this test.
    Unfinished,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemtesterTest {
    pub loop_number: u64,
    pub name: String,
    pub outcome: TestOutcome,
}

/// Applies backspaces the way a terminal would.
fn apply_backspaces(line: &str) -> String {
    let mut shown = String::with_capacity(line.len());
    for character in line.chars() {
        if character == '\u{8}' {
            shown.pop();
        } else {
            shown.push(character);
        }
    }
    shown
}

/// `4MB (4194304 bytes)…` → 4194304.
fn bytes_in_parentheses(text: &str) -> Option<u64> {
    let inner = text.split_once('(')?.1;
    let number = inner.split_once(" bytes")?.0;
    number.trim().parse().ok()
}

/// `  Compare XOR         : ok` → (`Compare XOR`, `ok`).
fn test_line(line: &str) -> Option<(&str, &str)> {
    let body = line.strip_prefix("  ")?;
    let (name, rest) = body.split_once(':')?;
    let name = name.trim();
    let plausible = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-');
    plausible.then_some((name, rest.trim()))
}

/// Parses memtester's output.
pub fn parse(input: &[u8]) -> Result<Memtester, ParseError> {
    let text = text(TOOL, input)?;
    let mut data = Memtester::default();
    let mut recognised = false;
    let mut current_loop = 0;
    for raw_line in text.lines() {
        let line = apply_backspaces(raw_line.trim_end_matches('\r'));
        let trimmed = line.trim();
        if let Some(version) = trimmed.strip_prefix("memtester version ") {
            data.version = version.split_whitespace().next().map(str::to_string);
            recognised = true;
        } else if let Some(rest) = trimmed.strip_prefix("want ") {
            data.wanted_bytes = bytes_in_parentheses(rest);
        } else if let Some(rest) = trimmed.strip_prefix("got ") {
            data.got_bytes = bytes_in_parentheses(rest);
            data.locked = rest.contains("locked.");
        } else if let Some(rest) = trimmed
            .strip_prefix("Loop ")
            .and_then(|rest| rest.strip_suffix(':'))
        {
            let (number, total) = match rest.split_once('/') {
                Some((number, total)) => (number, total.trim().parse().ok()),
                None => (rest, None),
            };
            if let Ok(number) = number.trim().parse::<u64>() {
                current_loop = number;
                data.loops_started = data.loops_started.max(number);
                data.loops_requested = total;
                recognised = true;
            }
        } else if trimmed == "Done." {
            data.finished = true;
        } else if let Some((name, rest)) = test_line(&line) {
            recognised = true;
            let outcome = if let Some(failure) = failure_text(rest) {
                data.failures.push(failure);
                TestOutcome::Failed
            } else if rest.ends_with("ok") {
                TestOutcome::Ok
            } else {
                TestOutcome::Unfinished
            };
            data.tests.push(MemtesterTest {
                loop_number: current_loop,
                name: name.to_string(),
                outcome,
            });
        } else if let Some(failure) = failure_text(trimmed) {
            recognised = true;
            data.failures.push(failure);
            if let Some(test) = data.tests.last_mut() {
                test.outcome = TestOutcome::Failed;
            }
        }
    }
    if !recognised {
        return Err(ParseError::format(
            TOOL,
            "no memtester banner, loop or test line found",
        ));
    }
    Ok(data)
}

/// The `FAILURE: …` part of a line, if it has one.
fn failure_text(line: &str) -> Option<String> {
    line.find("FAILURE")
        .map(|start| line[start..].trim().to_string())
}

/// Fails on any FAILURE or an unfinished run; warns when less memory was
/// tested than asked for.
pub fn verdict(data: &Memtester, _thresholds: &Thresholds) -> Verdict {
    let mut verdict = Verdict::pass();
    for test in data
        .tests
        .iter()
        .filter(|test| test.outcome == TestOutcome::Failed)
    {
        verdict.fail_with(format!(
            "memtester loop {} test {}: failed",
            test.loop_number, test.name
        ));
    }
    for failure in data.failures.iter().take(QUOTED_FAILURES) {
        verdict.fail_with(format!("memtester: {failure}"));
    }
    if data.failures.len() > QUOTED_FAILURES {
        verdict.fail_with(format!(
            "memtester: {} FAILURE lines in all",
            data.failures.len()
        ));
    }
    if !data.finished {
        let last = data
            .tests
            .last()
            .map(|test| format!(" (last test: loop {} {})", test.loop_number, test.name))
            .unwrap_or_default();
        verdict.fail_with(format!("memtester did not finish: no `Done.`{last}"));
    } else if data.tests.is_empty() {
        verdict.fail_with("memtester ran no test");
    }
    if let (Some(wanted), Some(got)) = (data.wanted_bytes, data.got_bytes)
        && got < wanted
    {
        verdict.warn(format!(
            "memtester tested {got} bytes of the {wanted} bytes asked for"
        ));
    }
    verdict
}

pub fn report(input: &[u8], thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let data = parse(input)?;
    let verdict = verdict(&data, thresholds);
    ToolReport::new(Tool::Memtester, &data, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;

    const PASSING: &str = "memtester version 4.6.0 (64-bit)\nwant 4MB (4194304 bytes)\ngot  4MB (4194304 bytes), trying mlock ...locked.\nLoop 1/1:\n  Stuck Address       :            \u{8}\u{8}\u{8}setting   0\u{8}\u{8}\u{8}ok\n  Compare XOR         : ok\n\nDone.\n";

    #[test]
    fn backspaced_progress_reads_as_ok() {
        let data = parse(PASSING.as_bytes()).unwrap();
        assert_eq!(data.tests.len(), 2);
        assert!(
            data.tests
                .iter()
                .all(|test| test.outcome == TestOutcome::Ok)
        );
        assert_eq!(verdict(&data, &Thresholds::default()).status, Status::Pass);
    }

    #[test]
    fn a_failure_line_fails_its_test() {
        let output = PASSING.replace(
            "  Compare XOR         : ok\n",
            "  Compare XOR         : FAILURE: 0x12345678 != 0x12345679 at offset 0x00001000.\nFAILURE: 0xffffffff != 0xfffffffe at offset 0x00002000.\n",
        );
        let data = parse(output.as_bytes()).unwrap();
        assert_eq!(data.failures.len(), 2);
        let verdict = verdict(&data, &Thresholds::default());
        assert_eq!(verdict.status, Status::Fail);
        assert!(
            verdict
                .messages(Status::Fail)
                .any(|message| message.contains("Compare XOR"))
        );
        assert!(
            verdict
                .messages(Status::Fail)
                .any(|message| message.contains("0x12345678 != 0x12345679"))
        );
    }

    #[test]
    fn an_unfinished_run_fails() {
        let cut = &PASSING[..PASSING.find("\nDone.").unwrap()];
        let data = parse(cut.as_bytes()).unwrap();
        assert_eq!(verdict(&data, &Thresholds::default()).status, Status::Fail);
    }
}
