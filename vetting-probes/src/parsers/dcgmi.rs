//! Parser and verdict rules for `dcgmi diag -j` (NVIDIA DCGM diagnostics).
//!
//! Both JSON generations are read, as NVIDIA/DCGM `dcgmi/Diag.cpp` writes
//! them (key names from `nvvs/include/NvvsJsonStrings.h`):
//! - 2.x/3.x: `{"DCGM GPU Diagnostic": {"test_categories": [{"category",
//!   "tests": [{"name", "results": [{"gpu_id"|"gpu_ids", "status",
//!   "warnings": [{"warning", "error_id", ...}] or a string, "info"}]}]}]},
//!   "version", "Driver Version Detected", "GPU Device IDs", ...}`;
//! - 4.x: `{"DCGM Diagnostic": {"test_categories": [... tests with lower-case
//!   names ("software", "memory") whose results carry "entity_group",
//!   "entity_group_id", "entity_id", and a "test_summary"]}, "entity_groups":
//!   [...], "metadata": {"version", "Driver Version Detected"}}`;
//!
//! plus the multi-iteration wrapper (`{"iterations": [...], "Overall
//! Result"}`) and the error form (`{"DCGM ...": {"runtime_error": ...}}`).
//!
//! Rules: any result `Fail` fails with the test name and its messages, `Warn`
//! warns, `Skip` and not-run results are fine; a runtime error or an overall
//! result of `Fail` fails.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::text as utf8_text;
use crate::{ParseError, Status, Thresholds, Tool, ToolReport, Verdict};

const TOOL: &str = "dcgmi";

/// Root keys of the diagnostic object in 2.x/3.x and in 4.x.
const ROOT_KEYS: [&str; 2] = ["DCGM GPU Diagnostic", "DCGM Diagnostic"];

/// Which JSON generation the output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DcgmSchema {
    /// `DCGM GPU Diagnostic`, per-GPU `gpu_id`/`gpu_ids`.
    V3,
    /// `DCGM Diagnostic`, `entity_groups`, `metadata`, per-entity results.
    V4,
}

/// The outcome of one test on one entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagStatus {
    Pass,
    Fail,
    Warn,
    Skip,
    NotRun,
    Other(String),
}

impl DiagStatus {
    fn from_text(text: &str) -> DiagStatus {
        match text.trim().to_ascii_lowercase().as_str() {
            "pass" | "passed" => DiagStatus::Pass,
            "fail" | "failed" | "failure" => DiagStatus::Fail,
            "warn" | "warning" => DiagStatus::Warn,
            "skip" | "skipped" => DiagStatus::Skip,
            "" | "not run" | "notrun" | "not_run" => DiagStatus::NotRun,
            other => DiagStatus::Other(other.to_string()),
        }
    }
}

/// Everything read from one `dcgmi diag -j` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DcgmiDiag {
    pub schema: DcgmSchema,
    pub version: Option<String>,
    pub driver_version: Option<String>,
    /// Set when the diagnostic could not run.
    pub runtime_error: Option<String>,
    /// `Overall Result` of a multi-iteration run.
    pub overall_result: Option<String>,
    pub iterations: usize,
    pub tests: Vec<DiagTest>,
    pub entities: Vec<DiagEntity>,
}

/// One test (plugin) and its results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagTest {
    pub category: Option<String>,
    pub name: String,
    pub results: Vec<DiagResult>,
    /// 4.x `test_summary`: the overall result and errors not tied to an
    /// entity.
    pub summary: Option<DiagResult>,
    /// Which iteration it came from (0 for a single run).
    pub iteration: usize,
}

/// One result entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagResult {
    /// `GPU 0` (4.x entity or 3.x gpu id), or the GPU id list of a 3.x
    /// deployment test.
    pub entity: Option<String>,
    pub status: DiagStatus,
    pub warnings: Vec<String>,
    pub error_ids: Vec<i64>,
    pub info: Vec<String>,
}

/// A 4.x entity (GPU, CPU, switch...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagEntity {
    pub group: String,
    pub id: u64,
    pub serial: Option<String>,
    pub device_id: Option<String>,
}

/// DCGM's own tests cut the JSON out of surrounding text the same way
/// (`trimJsonText` in its python test helpers): from the first `{` to the
/// last `}`.
fn json_slice(text: &str) -> Option<&str> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    (end > start).then(|| &text[start..=end])
}

fn string_of(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Parses `dcgmi diag -j` output.
pub fn parse(input: &[u8]) -> Result<DcgmiDiag, ParseError> {
    let text = utf8_text(TOOL, input)?;
    let slice =
        json_slice(text).ok_or_else(|| ParseError::format(TOOL, "no JSON object in the output"))?;
    let document: Value =
        serde_json::from_str(slice).map_err(|source| ParseError::Json { tool: TOOL, source })?;
    let object = document
        .as_object()
        .ok_or_else(|| ParseError::format(TOOL, "dcgmi diag -j output is not a JSON object"))?;
    let mut diag = DcgmiDiag {
        schema: DcgmSchema::V3,
        version: None,
        driver_version: None,
        runtime_error: None,
        overall_result: None,
        iterations: 0,
        tests: Vec::new(),
        entities: Vec::new(),
    };
    match object.get("iterations").and_then(Value::as_array) {
        Some(iterations) => {
            for (index, iteration) in iterations.iter().enumerate() {
                if let Some(iteration) = iteration.as_object() {
                    read_document(&mut diag, iteration, index);
                }
            }
            diag.iterations = iterations.len();
            diag.overall_result = object.get("Overall Result").and_then(string_of);
            if diag.runtime_error.is_none() {
                diag.runtime_error = object.get("warning").and_then(string_of);
            }
        }
        None => {
            read_document(&mut diag, object, 0);
            diag.iterations = 1;
        }
    }
    if diag.tests.is_empty() && diag.runtime_error.is_none() && diag.overall_result.is_none() {
        return Err(ParseError::format(
            TOOL,
            "no DCGM diagnostic results (expected \"DCGM GPU Diagnostic\" or \"DCGM Diagnostic\" test_categories)",
        ));
    }
    Ok(diag)
}

fn read_document(diag: &mut DcgmiDiag, document: &Map<String, Value>, iteration: usize) {
    let (root_key, root) = ROOT_KEYS
        .iter()
        .find_map(|key| {
            document
                .get(*key)
                .and_then(Value::as_object)
                .map(|root| (*key, root))
        })
        .map_or((None, None), |(key, root)| (Some(key), Some(root)));
    let metadata = document.get("metadata").and_then(Value::as_object);
    if root_key == Some("DCGM Diagnostic")
        || metadata.is_some()
        || document.contains_key("entity_groups")
    {
        diag.schema = DcgmSchema::V4;
    }
    let lookup = |key: &str| {
        metadata
            .and_then(|metadata| metadata.get(key))
            .or_else(|| document.get(key))
            .or_else(|| root.and_then(|root| root.get(key)))
            .and_then(string_of)
    };
    diag.version = diag.version.take().or_else(|| lookup("version"));
    diag.driver_version = diag
        .driver_version
        .take()
        .or_else(|| lookup("Driver Version Detected"))
        .or_else(|| lookup("driver_version"));
    if let Some(error) = root
        .and_then(|root| root.get("runtime_error"))
        .and_then(string_of)
    {
        diag.runtime_error = Some(error);
    }
    if let Some(groups) = document.get("entity_groups").and_then(Value::as_array)
        && iteration == 0
    {
        for group in groups {
            let group_name = group
                .get("entity_group")
                .and_then(string_of)
                .unwrap_or_else(|| "?".to_string());
            for entity in group
                .get("entities")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                diag.entities.push(DiagEntity {
                    group: group_name.clone(),
                    id: entity.get("entity_id").and_then(Value::as_u64).unwrap_or(0),
                    serial: entity.get("serial_num").and_then(string_of),
                    device_id: entity.get("device_id").and_then(string_of),
                });
            }
        }
    }
    let categories = root
        .and_then(|root| root.get("test_categories"))
        .and_then(Value::as_array);
    for category in categories.into_iter().flatten() {
        let category_name = category.get("category").and_then(string_of);
        for test in category
            .get("tests")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            diag.tests
                .push(read_test(test, category_name.clone(), iteration));
        }
    }
    // Tolerate a flat `tests` array at the top level as well.
    for test in document
        .get("tests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        diag.tests.push(read_test(test, None, iteration));
    }
}

fn read_test(test: &Value, category: Option<String>, iteration: usize) -> DiagTest {
    DiagTest {
        category,
        name: test
            .get("name")
            .and_then(string_of)
            .unwrap_or_else(|| "?".to_string()),
        results: test
            .get("results")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(read_result)
            .collect(),
        summary: test
            .get("test_summary")
            .filter(|summary| summary.is_object())
            .map(read_result),
        iteration,
    }
}

fn read_result(result: &Value) -> DiagResult {
    let entity = match (
        result.get("entity_group").and_then(string_of),
        result.get("entity_id").and_then(string_of),
    ) {
        (Some(group), Some(id)) => Some(format!("{group} {id}")),
        (None, Some(id)) => Some(format!("entity {id}")),
        _ => result
            .get("gpu_id")
            .or_else(|| result.get("gpu_ids"))
            .and_then(string_of)
            .map(|ids| format!("GPU {ids}")),
    };
    let mut warnings = Vec::new();
    let mut error_ids = Vec::new();
    match result.get("warnings") {
        Some(Value::String(text)) => warnings.push(text.clone()),
        Some(Value::Array(entries)) => {
            for entry in entries {
                match entry {
                    Value::String(text) => warnings.push(text.clone()),
                    Value::Object(fields) => {
                        // 3.x deployment tests write the text under "warnings".
                        if let Some(text) = fields
                            .get("warning")
                            .or_else(|| fields.get("warnings"))
                            .and_then(string_of)
                        {
                            warnings.push(text);
                        }
                        if let Some(id) = fields.get("error_id").and_then(Value::as_i64) {
                            error_ids.push(id);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    let info = match result.get("info") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(entries)) => entries.iter().filter_map(string_of).collect(),
        _ => Vec::new(),
    };
    DiagResult {
        entity,
        status: result
            .get("status")
            .and_then(string_of)
            .map_or(DiagStatus::NotRun, |status| DiagStatus::from_text(&status)),
        warnings,
        error_ids,
        info,
    }
}

fn describe(test: &DiagTest, result: &DiagResult) -> String {
    let mut message = format!("test '{}'", test.name);
    if let Some(entity) = &result.entity {
        message.push_str(&format!(" {entity}"));
    }
    if test.iteration > 0 {
        message.push_str(&format!(" (iteration {})", test.iteration + 1));
    }
    message
}

/// Judges the diagnostic results.
pub fn verdict(diag: &DcgmiDiag, _thresholds: &Thresholds) -> Verdict {
    let mut verdict = Verdict::pass();
    if let Some(error) = &diag.runtime_error {
        verdict.fail_with(format!("dcgmi diag could not complete: {error}"));
    }
    if let Some(overall) = &diag.overall_result
        && DiagStatus::from_text(overall) == DiagStatus::Fail
    {
        verdict.fail_with(format!(
            "dcgmi diag Overall Result {overall} (threshold: Pass)"
        ));
    }
    let mut skipped = Vec::new();
    for test in &diag.tests {
        let mut judged_any = false;
        for result in &test.results {
            judged_any |= judge_result(&mut verdict, &mut skipped, test, result);
        }
        // The summary repeats the per-entity results; judge it only when
        // they found nothing (it also carries errors tied to no entity).
        if let Some(summary) = &test.summary
            && !judged_any
        {
            judge_result(&mut verdict, &mut skipped, test, summary);
        }
    }
    if !skipped.is_empty() {
        skipped.sort();
        skipped.dedup();
        verdict.add(
            Status::Pass,
            format!("skipped or not run (not a failure): {}", skipped.join(", ")),
        );
    }
    verdict
}

/// Adds one result's finding; true when it was a failure or warning.
fn judge_result(
    verdict: &mut Verdict,
    skipped: &mut Vec<String>,
    test: &DiagTest,
    result: &DiagResult,
) -> bool {
    let details = if result.warnings.is_empty() {
        String::new()
    } else {
        format!(": {}", result.warnings.join(" | "))
    };
    match &result.status {
        DiagStatus::Fail => {
            verdict.fail_with(format!("{} status Fail{details}", describe(test, result)));
            true
        }
        DiagStatus::Warn => {
            verdict.warn(format!("{} status Warn{details}", describe(test, result)));
            true
        }
        DiagStatus::Other(status) => {
            verdict.warn(format!(
                "{} has an unknown status '{status}'{details}",
                describe(test, result)
            ));
            true
        }
        DiagStatus::Skip | DiagStatus::NotRun => {
            skipped.push(test.name.clone());
            false
        }
        DiagStatus::Pass => false,
    }
}

/// Parses and judges `dcgmi diag -j` output.
pub fn report(input: &[u8], thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let diag = parse(input)?;
    let verdict = verdict(&diag, thresholds);
    ToolReport::new(Tool::Dcgmi, &diag, verdict)
}
