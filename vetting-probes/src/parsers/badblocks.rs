//! Parser and verdict rules for `badblocks -sv` / `-wsv` output.
//!
//! badblocks prints the bad block numbers on stdout (or into the `-o` file),
//! one per line, and its progress and summary on stderr; `-s` draws the
//! progress with backspaces. The input is stdout and stderr together (in
//! either order, or interleaved), with the `-o` file's content appended
//! when one was used. badblocks must run with `-v`: only then does it print
//! the summary, `Pass completed, N bad blocks found. (R/W/C errors)` (older
//! versions leave the counts in parentheses out).
//!
//! badblocks exits 0 when it finds bad blocks, so the verdict comes from the
//! text: any bad block fails, naming the first blocks and the count. An
//! output without the summary line (killed by a timeout, run without `-v`,
//! refused by badblocks) is a parse error saying that badblocks did not
//! complete, never a pass.

use serde::{Deserialize, Serialize};

use crate::error::text;
use crate::{ParseError, Thresholds, Tool, ToolReport, Verdict};

const TOOL: &str = "badblocks";

/// How many bad block numbers a reason lists before summarizing.
const LISTED_BLOCKS: usize = 10;

/// How many other message lines are kept.
const KEPT_MESSAGES: usize = 20;

/// A completed badblocks run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadblocksRun {
    /// "read-only", "read-write" or "non-destructive read-write".
    pub mode: Option<String>,
    pub first_block: Option<u64>,
    pub last_block: Option<u64>,
    /// Patterns written (`0xaa`, `random`...).
    pub patterns: Vec<String>,
    /// One summary per pass (`-p` repeats passes).
    pub passes: Vec<BadblocksPass>,
    /// Bad block numbers listed in the output, in order, without repeats.
    pub bad_blocks: Vec<u64>,
    /// Other lines (error messages), without progress noise.
    pub messages: Vec<String>,
}

/// The summary of one pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadblocksPass {
    pub bad_blocks_found: u64,
    pub read_errors: Option<u64>,
    pub write_errors: Option<u64>,
    pub corruption_errors: Option<u64>,
}

impl BadblocksRun {
    /// The number of bad blocks: the largest pass count or the number
    /// listed, whichever is larger.
    pub fn bad_block_count(&self) -> u64 {
        let summarized = self
            .passes
            .iter()
            .map(|pass| pass.bad_blocks_found)
            .max()
            .unwrap_or(0);
        summarized.max(self.bad_blocks.len() as u64)
    }
}

/// `Pass completed, 3 bad blocks found. (0/0/3 errors)`.
fn parse_summary(segment: &str) -> Option<BadblocksPass> {
    let rest = segment.split("Pass completed,").nth(1)?.trim_start();
    let count: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let bad_blocks_found = count.parse().ok()?;
    let errors = rest
        .split_once('(')
        .and_then(|(_, inner)| inner.split_once(" errors)"))
        .map(|(counts, _)| {
            counts
                .split('/')
                .map(|count| count.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        });
    let error = |index: usize| {
        errors
            .as_ref()
            .and_then(|counts| counts.get(index).copied().flatten())
    };
    Some(BadblocksPass {
        bad_blocks_found,
        read_errors: error(0),
        write_errors: error(1),
        corruption_errors: error(2),
    })
}

fn is_progress(segment: &str) -> bool {
    segment.contains("% done") || segment.trim_start().starts_with("done")
}

/// Parses badblocks output; an error when the summary line is missing.
pub fn parse(input: &[u8]) -> Result<BadblocksRun, ParseError> {
    let text = text(TOOL, input)?;
    let mut run = BadblocksRun {
        mode: None,
        first_block: None,
        last_block: None,
        patterns: Vec::new(),
        passes: Vec::new(),
        bad_blocks: Vec::new(),
        messages: Vec::new(),
    };
    let mut last_message: Option<String> = None;
    // Progress is redrawn with backspaces and carriage returns: split on
    // them so that each drawn piece stands alone.
    for segment in text.split(['\n', '\u{8}', '\r']) {
        let segment = segment.trim();
        if segment.is_empty() {
            continue;
        }
        if segment.chars().all(|c| c.is_ascii_digit()) {
            if let Ok(block) = segment.parse::<u64>()
                && !run.bad_blocks.contains(&block)
            {
                run.bad_blocks.push(block);
            }
            continue;
        }
        if let Some(pass) = parse_summary(segment) {
            run.passes.push(pass);
            continue;
        }
        if let Some(rest) = segment.strip_prefix("Checking for bad blocks") {
            let rest = rest.trim();
            run.mode = Some(
                if rest.contains("non-destructive") {
                    "non-destructive read-write"
                } else if rest.contains("read-write") {
                    "read-write"
                } else {
                    "read-only"
                }
                .to_owned(),
            );
            continue;
        }
        if let Some(range) = segment.strip_prefix("From block ") {
            let mut numbers = range
                .split(" to ")
                .map(|number| number.trim().parse::<u64>().ok());
            run.first_block = numbers.next().flatten();
            run.last_block = numbers.next().flatten();
            continue;
        }
        if let Some(pattern) = segment.strip_prefix("Testing with pattern ") {
            let pattern = pattern
                .split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            if !pattern.is_empty() && !run.patterns.contains(&pattern) {
                run.patterns.push(pattern);
            }
            continue;
        }
        if segment.starts_with("Testing with random pattern") {
            if !run.patterns.iter().any(|pattern| pattern == "random") {
                run.patterns.push("random".to_owned());
            }
            continue;
        }
        if is_progress(segment)
            || segment.starts_with("Reading and comparing")
            || segment.starts_with("Checking blocks")
        {
            continue;
        }
        last_message = Some(segment.to_owned());
        if run.messages.len() < KEPT_MESSAGES {
            run.messages.push(segment.to_owned());
        }
    }
    if run.passes.is_empty() {
        let mut message =
            "badblocks did not complete: no 'Pass completed' summary (cut short, or run without -v)".to_owned();
        if !run.bad_blocks.is_empty() {
            message.push_str(&format!(
                "; {} bad blocks listed before it stopped: {}",
                run.bad_blocks.len(),
                list_blocks(&run.bad_blocks)
            ));
        }
        if let Some(last) = last_message {
            message.push_str(&format!("; last message: {last}"));
        }
        return Err(ParseError::format(TOOL, message));
    }
    Ok(run)
}

fn list_blocks(blocks: &[u64]) -> String {
    let listed: Vec<String> = blocks
        .iter()
        .take(LISTED_BLOCKS)
        .map(u64::to_string)
        .collect();
    let more = blocks.len().saturating_sub(LISTED_BLOCKS);
    if more > 0 {
        format!("{} and {more} more", listed.join(", "))
    } else {
        listed.join(", ")
    }
}

/// Judges a badblocks run: any bad block fails.
pub fn verdict(run: &BadblocksRun) -> Verdict {
    let count = run.bad_block_count();
    if count == 0 {
        return Verdict::pass();
    }
    let errors = run
        .passes
        .iter()
        .find(|pass| pass.bad_blocks_found == count)
        .or(run.passes.last())
        .and_then(
            |pass| match (pass.read_errors, pass.write_errors, pass.corruption_errors) {
                (Some(read), Some(write), Some(corruption)) => Some(format!(
                    " ({read} read, {write} write, {corruption} corruption errors)"
                )),
                _ => None,
            },
        )
        .unwrap_or_default();
    let blocks = if run.bad_blocks.is_empty() {
        String::new()
    } else {
        format!(": {}", list_blocks(&run.bad_blocks))
    };
    Verdict::fail(format!(
        "badblocks found {count} bad blocks > 0{errors}{blocks}"
    ))
}

pub fn report(input: &[u8], _thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let run = parse(input)?;
    let verdict = verdict(&run);
    ToolReport::new(Tool::Badblocks, &run, verdict)
}
