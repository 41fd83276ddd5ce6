//! Parser and verdict rules for `gpu_burn` output (wilicc/gpu-burn).
//!
//! The format follows `gpu_burn-drv.cpp`: progress lines written with `\r`,
//! `10.0%  proc'd: 3454 (12109 Gflop/s) - 3400 (12000 Gflop/s)   errors: 0 - 0
//!   temps: 65 C - 60 C   power: 250 W - 248 W` (an error count is followed by
//! ` (WARNING!)`, a dead worker by ` (DIED!)`), `Summary at:` dates, then
//! `Tested N GPUs:` and one `GPU i: OK` or `GPU i: FAULTY` line per GPU.
//!
//! gpu_burn exits 0 even when a GPU is FAULTY, so the verdict comes from the
//! text: FAULTY, errors > 0 or a dead worker fail; a run without the final
//! per-GPU lines did not finish and fails; a temperature at or above the GPU
//! warning limit warns.

use serde::{Deserialize, Serialize};

use crate::error::text as utf8_text;
use crate::{ParseError, Status, Thresholds, Tool, ToolReport, Verdict};

const TOOL: &str = "gpu-burn";

/// Messages gpu_burn prints when it cannot run or a worker fails.
const ABORT_MESSAGES: [&str; 5] = [
    "No clients are alive!",
    "Couldn't init a GPU test",
    "Failure during compute",
    "No CUDA devices",
    "Couldn't init CUDA",
];

/// Everything read from one `gpu_burn` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuBurnOutput {
    /// `Initialized device 0 with 81559 MB of memory ...` lines.
    pub initialized_devices: Vec<String>,
    /// How many progress lines were read.
    pub progress_samples: usize,
    /// The percentage of the run the last progress line reached.
    pub last_percent: Option<f64>,
    /// Per GPU, over the whole run.
    pub gpus: Vec<GpuBurnGpu>,
    /// `Tested N GPUs:`.
    pub tested_gpus: Option<u32>,
    /// The final `GPU i: OK|FAULTY` lines.
    pub results: Vec<GpuBurnResult>,
    /// Whether the final per-GPU result was printed.
    pub finished: bool,
    /// Abort or worker failure messages.
    pub errors: Vec<String>,
}

/// One GPU's progress over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuBurnGpu {
    pub index: u32,
    /// Matrix products done (the last count printed).
    pub processed: Option<i64>,
    pub last_gflops: Option<f64>,
    /// The largest error count printed (counts reset at each summary).
    pub max_errors: u64,
    pub died: bool,
    pub max_temperature_c: Option<f64>,
    pub max_power_w: Option<f64>,
}

/// A final per-GPU line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuBurnResult {
    pub index: u32,
    pub faulty: bool,
}

fn max_option(current: Option<f64>, value: Option<f64>) -> Option<f64> {
    match (current, value) {
        (Some(current), Some(value)) => Some(current.max(value)),
        (current, value) => current.or(value),
    }
}

/// The text between `label` and the next of `ends` (or the end).
fn field<'a>(line: &'a str, label: &str, ends: &[&str]) -> Option<&'a str> {
    let start = line.find(label)? + label.len();
    let rest = &line[start..];
    let end = ends
        .iter()
        .filter_map(|end| rest.find(end))
        .min()
        .unwrap_or(rest.len());
    Some(rest[..end].trim())
}

/// Splits per-GPU parts joined by `- ` (numbers may be negative: `-1`).
/// gpu_burn prints `%d  (WARNING!)` without a trailing space before the
/// `- ` separator, so a separator may follow `)` directly.
fn per_gpu(part: &str) -> Vec<String> {
    part.replace(")- ", ") - ")
        .split(" - ")
        .map(str::trim)
        .filter(|piece| !piece.is_empty())
        .map(str::to_string)
        .collect()
}

fn leading_number(text: &str) -> Option<f64> {
    let text = text.trim();
    let end = text
        .char_indices()
        .find(|&(index, character)| {
            !(character.is_ascii_digit() || character == '.' || (index == 0 && character == '-'))
        })
        .map_or(text.len(), |(index, _)| index);
    text[..end]
        .parse::<f64>()
        .ok()
        .filter(|value| value.is_finite())
}

fn progress_line(output: &mut GpuBurnOutput, line: &str) -> bool {
    let Some(percent_end) = line.find('%') else {
        return false;
    };
    let Ok(percent) = line[..percent_end].trim().parse::<f64>() else {
        return false;
    };
    let Some(processed) = field(line, "proc'd:", &["errors:"]) else {
        return false;
    };
    output.progress_samples += 1;
    output.last_percent = Some(percent);
    let errors = field(line, "errors:", &["temps:", "power:"]).unwrap_or("");
    let temperatures = field(line, "temps:", &["power:"]).unwrap_or("");
    let powers = field(line, "power:", &[]).unwrap_or("");
    let processed = per_gpu(processed);
    let errors = per_gpu(errors);
    let temperatures = per_gpu(temperatures);
    let powers = per_gpu(powers);
    let count = processed.len().max(errors.len());
    for index in 0..count {
        if output.gpus.len() <= index {
            output.gpus.push(GpuBurnGpu {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                ..GpuBurnGpu::default()
            });
        }
        let gpu = &mut output.gpus[index];
        if let Some(part) = processed.get(index) {
            gpu.processed = leading_number(part).map(|value| value as i64);
            gpu.last_gflops = part
                .split_once('(')
                .and_then(|(_, inside)| leading_number(inside));
            if gpu.processed == Some(-1) {
                gpu.died = true;
            }
        }
        if let Some(part) = errors.get(index) {
            if part.contains("DIED!") {
                gpu.died = true;
            }
            if let Some(count) = leading_number(part).filter(|count| *count > 0.0) {
                gpu.max_errors = gpu.max_errors.max(count as u64);
            }
        }
        gpu.max_temperature_c = max_option(
            gpu.max_temperature_c,
            temperatures
                .get(index)
                .and_then(|part| leading_number(part)),
        );
        gpu.max_power_w = max_option(
            gpu.max_power_w,
            powers.get(index).and_then(|part| leading_number(part)),
        );
    }
    true
}

/// Parses `gpu_burn` output.
pub fn parse(input: &[u8]) -> Result<GpuBurnOutput, ParseError> {
    let text = utf8_text(TOOL, input)?;
    let mut output = GpuBurnOutput {
        initialized_devices: Vec::new(),
        progress_samples: 0,
        last_percent: None,
        gpus: Vec::new(),
        tested_gpus: None,
        results: Vec::new(),
        finished: false,
        errors: Vec::new(),
    };
    let mut in_results = false;
    let mut recognized = false;
    for line in text
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        if line.contains("proc'd:") && progress_line(&mut output, line) {
            recognized = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("Tested ") {
            output.tested_gpus = rest
                .split_whitespace()
                .next()
                .and_then(|count| count.parse::<u32>().ok());
            in_results = true;
            recognized = true;
            continue;
        }
        if in_results
            && let Some(rest) = line.strip_prefix("GPU ")
            && let Some((index, state)) = rest.split_once(':')
            && let Ok(index) = index.trim().parse::<u32>()
        {
            let state = state.trim();
            if state == "OK" || state == "FAULTY" {
                output.results.push(GpuBurnResult {
                    index,
                    faulty: state == "FAULTY",
                });
                continue;
            }
        }
        if line.starts_with("Initialized device") {
            output.initialized_devices.push(line.to_string());
            recognized = true;
            continue;
        }
        if ABORT_MESSAGES.iter().any(|message| line.contains(message)) {
            output.errors.push(line.to_string());
            recognized = true;
        }
    }
    output.finished = output.tested_gpus.is_some() && !output.results.is_empty();
    if !recognized {
        return Err(ParseError::format(
            TOOL,
            "no gpu_burn progress, result or error lines (not gpu_burn output)",
        ));
    }
    Ok(output)
}

/// Judges a `gpu_burn` run.
pub fn verdict(output: &GpuBurnOutput, thresholds: &Thresholds) -> Verdict {
    let mut verdict = Verdict::pass();
    for error in &output.errors {
        verdict.fail_with(format!("gpu_burn reported: {error}"));
    }
    for result in &output.results {
        if result.faulty {
            verdict.fail_with(format!(
                "GPU {}: FAULTY (gpu_burn found wrong results; threshold: OK)",
                result.index
            ));
        }
    }
    for gpu in &output.gpus {
        if gpu.max_errors > 0 {
            verdict.fail_with(format!(
                "GPU {}: {} computation error(s) during the run (threshold: 0)",
                gpu.index, gpu.max_errors
            ));
        }
        if gpu.died {
            verdict.fail_with(format!("GPU {}: its gpu_burn worker DIED", gpu.index));
        }
        if let Some(temperature) = gpu.max_temperature_c
            && temperature >= thresholds.gpu.temperature_warn_c
        {
            verdict.warn(format!(
                "GPU {}: temperature reached {temperature} °C >= {} °C",
                gpu.index, thresholds.gpu.temperature_warn_c
            ));
        }
    }
    if !output.finished {
        verdict.fail_with(format!(
            "gpu_burn did not finish: no final per-GPU result (last progress {}%)",
            output
                .last_percent
                .map_or_else(|| "none".to_string(), |percent| percent.to_string())
        ));
    } else if let Some(tested) = output.tested_gpus
        && usize::try_from(tested).is_ok_and(|tested| tested != output.results.len())
    {
        verdict.fail_with(format!(
            "gpu_burn tested {tested} GPU(s) but printed {} result(s)",
            output.results.len()
        ));
    }
    if verdict.status == Status::Pass {
        verdict.add(
            Status::Pass,
            format!(
                "{} GPU(s) OK after {} progress sample(s)",
                output.results.len(),
                output.progress_samples
            ),
        );
    }
    verdict
}

/// Parses and judges `gpu_burn` output.
pub fn report(input: &[u8], thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let output = parse(input)?;
    let verdict = verdict(&output, thresholds);
    ToolReport::new(Tool::GpuBurn, &output, verdict)
}
