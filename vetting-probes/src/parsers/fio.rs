//! Parser and verdict rules for `fio --output-format=json`.
//!
//! fio's JSON repeats keys (percentile maps hold `"0.00"` several times, old
//! versions repeat `"filename"` in `global options`), which a derived
//! struct rejects as a "duplicate field": the document is read as a
//! `serde_json::Value`, which keeps the last of each duplicate. fio also
//! writes text around the JSON on the same stream (`fio: pid=..., err=84/...`
//! before it when a job fails, `verify: bad magic header ...` and `crc32c:
//! verify failed at file ...` when stderr is captured with it): that text is
//! kept as `messages`, and verify messages among it count.
//!
//! Units: `bw` is KiB/s in every version; `io_bytes` is bytes since fio 3
//! (which also prints `io_kbytes`) and KiB in fio 2.x (no `io_kbytes`).
//!
//! Rules (EXPECTED.md): a job with `error` ≠ 0 fails (a verify failure is
//! error 84, EILSEQ, on Linux), so do errors counted under
//! `continue_on_error` (`total_err`) and verify-failure messages.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::text;
use crate::parsers::shared::lenient_u64;
use crate::{ParseError, Thresholds, Tool, ToolReport, Verdict};

const TOOL: &str = "fio";

/// Bytes in a KiB.
const KIB: u64 = 1024;

/// Words that mark a message as a data-verification failure.
const VERIFY_FAILURE_MARKERS: [&str; 5] = [
    "verify failed",
    "bad magic header",
    "verify: bad",
    "verify type mismatch",
    "bad pattern block offset",
];

/// A parsed fio run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FioRun {
    /// e.g. "fio-3.33".
    pub version: Option<String>,
    pub jobs: Vec<FioJob>,
    pub disk_util: Vec<DiskUtilization>,
    /// Text fio printed around the JSON (errors, verify failures).
    pub messages: Vec<String>,
}

/// One job (or one group, with `group_reporting`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FioJob {
    pub name: String,
    /// 0 when the job succeeded, else an errno (84 = EILSEQ: verify failure).
    pub error: i64,
    /// The verify method in effect (`crc32c`, `md5`...), from the job or
    /// global options; `None` when none was asked for.
    pub verify: Option<String>,
    /// Whether the verify phase ran (`do_verify`, fio's default is on).
    pub do_verify: bool,
    /// Errors counted under `continue_on_error` (`total_err`).
    pub total_errors: Option<u64>,
    pub first_error: Option<i64>,
    pub read: FioDirection,
    pub write: FioDirection,
    pub trim: FioDirection,
}

/// Throughput of one direction of one job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FioDirection {
    pub io_bytes: u64,
    pub bandwidth_bytes_per_second: u64,
    pub iops: f64,
    pub runtime_ms: u64,
    pub total_ios: Option<u64>,
}

/// `disk_util` entry: how busy a disk was during the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskUtilization {
    pub name: String,
    pub util_percent: Option<f64>,
}

fn option_string(options: Option<&Value>, key: &str) -> Option<String> {
    let value = options?.get(key)?;
    match value {
        Value::String(text) => Some(text.trim().to_owned()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn parse_direction(job: &Value, direction: &str) -> FioDirection {
    let Some(stats) = job.get(direction) else {
        return FioDirection::default();
    };
    let number = |key: &str| stats.get(key).and_then(lenient_u64);
    let io_bytes = match number("io_kbytes") {
        // fio 3: io_bytes is in bytes.
        Some(_) => number("io_bytes").unwrap_or(0),
        // fio 2.x: io_bytes is in KiB.
        None => number("io_bytes").unwrap_or(0).saturating_mul(KIB),
    };
    let bandwidth =
        number("bw_bytes").unwrap_or_else(|| number("bw").unwrap_or(0).saturating_mul(KIB));
    FioDirection {
        io_bytes,
        bandwidth_bytes_per_second: bandwidth,
        iops: stats.get("iops").and_then(Value::as_f64).unwrap_or(0.0),
        runtime_ms: number("runtime").unwrap_or(0),
        total_ios: number("total_ios"),
    }
}

fn parse_job(job: &Value, global: Option<&Value>) -> Result<FioJob, ParseError> {
    let options = job.get("job options");
    let setting = |key: &str| option_string(options, key).or_else(|| option_string(global, key));
    let error = job
        .get("error")
        .and_then(Value::as_i64)
        .ok_or_else(|| ParseError::format(TOOL, "a job has no numeric \"error\" field"))?;
    let verify =
        setting("verify").filter(|method| !method.is_empty() && method != "0" && method != "none");
    let do_verify = setting("do_verify").is_none_or(|flag| flag != "0" && flag != "false");
    Ok(FioJob {
        name: job
            .get("jobname")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        error,
        verify,
        do_verify,
        total_errors: job.get("total_err").and_then(lenient_u64),
        first_error: job.get("first_error").and_then(Value::as_i64),
        read: parse_direction(job, "read"),
        write: parse_direction(job, "write"),
        trim: parse_direction(job, "trim"),
    })
}

fn text_lines(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
}

/// Parses fio's JSON output, with any text fio printed before or after it.
pub fn parse(input: &[u8]) -> Result<FioRun, ParseError> {
    let text = text(TOOL, input)?;
    // The JSON starts at the first line that opens an object.
    let start = text
        .match_indices('{')
        .map(|(index, _)| index)
        .find(|index| {
            text[..*index]
                .chars()
                .rev()
                .take_while(|c| *c != '\n')
                .all(char::is_whitespace)
        })
        .ok_or_else(|| ParseError::format(TOOL, "no JSON object in the output"))?;
    let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
    let document = match stream.next() {
        Some(Ok(document)) => document,
        Some(Err(source)) => return Err(ParseError::Json { tool: TOOL, source }),
        None => return Err(ParseError::format(TOOL, "no JSON object in the output")),
    };
    let end = start + stream.byte_offset();
    let messages: Vec<String> = text_lines(&text[..start])
        .chain(text_lines(&text[end..]))
        .collect();

    let jobs = document
        .get("jobs")
        .and_then(Value::as_array)
        .ok_or_else(|| ParseError::format(TOOL, "no \"jobs\" array: not fio JSON output"))?;
    if jobs.is_empty() {
        return Err(ParseError::format(TOOL, "the \"jobs\" array is empty"));
    }
    let global = document.get("global options");
    let jobs = jobs
        .iter()
        .map(|job| parse_job(job, global))
        .collect::<Result<Vec<_>, _>>()?;
    let disk_util = document
        .get("disk_util")
        .and_then(Value::as_array)
        .map(|disks| {
            disks
                .iter()
                .filter_map(|disk| {
                    Some(DiskUtilization {
                        name: disk.get("name")?.as_str()?.to_owned(),
                        util_percent: disk.get("util").and_then(Value::as_f64),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(FioRun {
        version: document
            .get("fio version")
            .and_then(Value::as_str)
            .map(str::to_owned),
        jobs,
        disk_util,
        messages,
    })
}

/// The system's description of an errno (fio's `error` is one).
fn describe_errno(code: i64) -> String {
    let description = i32::try_from(code)
        .map(|code| nix::errno::Errno::from_raw(code).desc())
        .unwrap_or("unknown error");
    if code == nix::errno::Errno::EILSEQ as i64 {
        format!("{description}: fio's code for a data verification failure")
    } else {
        description.to_owned()
    }
}

/// Judges a fio run: job errors and verify failures fail.
pub fn verdict(run: &FioRun) -> Verdict {
    let mut verdict = Verdict::pass();
    for job in &run.jobs {
        if job.error != 0 {
            verdict.fail_with(format!(
                "fio job '{}' error {} ({}) != 0",
                job.name,
                job.error,
                describe_errno(job.error)
            ));
        }
        if let Some(total) = job.total_errors.filter(|total| *total > 0) {
            verdict.fail_with(format!(
                "fio job '{}' total_err {total} > 0 (continue_on_error; first error {})",
                job.name,
                job.first_error
                    .map(|code| format!("{code}: {}", describe_errno(code)))
                    .unwrap_or_else(|| "unknown".to_owned())
            ));
        }
    }
    let verify_failures: Vec<&String> = run
        .messages
        .iter()
        .filter(|message| {
            let lower = message.to_ascii_lowercase();
            VERIFY_FAILURE_MARKERS
                .iter()
                .any(|marker| lower.contains(marker))
        })
        .collect();
    if let Some(first) = verify_failures.first() {
        verdict.fail_with(format!(
            "fio reported {} verify failure message{}: {first}",
            verify_failures.len(),
            if verify_failures.len() == 1 { "" } else { "s" }
        ));
    }
    verdict
}

pub fn report(input: &[u8], _thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let run = parse(input)?;
    let verdict = verdict(&run);
    ToolReport::new(Tool::Fio, &run, verdict)
}
