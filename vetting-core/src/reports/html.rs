//! The HTML page of a report: the values are formatted here, the page is
//! rendered by minijinja from an embedded template with HTML escaping on,
//! and the sensor charts are inline SVG polylines computed here.

use serde::Serialize;

use super::{Report, ReportError, STAGE_ORDER, Series};
use crate::spec::{format_bytes_binary, format_bytes_decimal};

const TEMPLATE_NAME: &str = "report.html";
const TEMPLATE: &str = include_str!("report.html");

/// Most points drawn per series (longer series are averaged into buckets).
const MAX_POINTS: usize = 400;
/// Most series drawn per chart.
const MAX_SERIES_PER_CHART: usize = 16;

const CHART_WIDTH: f64 = 760.0;
const CHART_HEIGHT: f64 = 240.0;
const MARGIN_LEFT: f64 = 64.0;
const MARGIN_RIGHT: f64 = 12.0;
const MARGIN_TOP: f64 = 12.0;
const MARGIN_BOTTOM: f64 = 28.0;

const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f", "#bcbd22",
];

#[derive(Debug, Serialize)]
struct View {
    title: String,
    host_name: String,
    generated: String,
    run: RunView,
    host: Vec<(String, String)>,
    tiles: Vec<Tile>,
    diffs: Vec<DiffView>,
    diff_counts: DiffCounts,
    inventory: Option<InventoryView>,
    measurements: Vec<MeasurementView>,
    charts: Vec<Chart>,
    artifacts: Vec<ArtifactView>,
    transitions: Vec<TransitionView>,
    audit: Vec<AuditView>,
    notes: Vec<String>,
}

#[derive(Debug, Serialize)]
struct RunView {
    id: String,
    state: String,
    class: &'static str,
    facts: Vec<(String, String)>,
}

#[derive(Debug, Serialize)]
struct Tile {
    stage: String,
    attempt: String,
    outcome: String,
    class: &'static str,
    reason: String,
    started: String,
    duration: String,
    reasons: Vec<ReasonView>,
    agent_status: String,
}

#[derive(Debug, Serialize)]
struct ReasonView {
    status: String,
    class: &'static str,
    message: String,
}

#[derive(Debug, Serialize)]
struct DiffView {
    severity: String,
    class: &'static str,
    path: String,
    expected: String,
    actual: String,
    message: String,
}

#[derive(Debug, Serialize, Default)]
struct DiffCounts {
    critical: usize,
    warning: usize,
    info: usize,
}

#[derive(Debug, Serialize)]
struct InventoryView {
    facts: Vec<(String, String)>,
    disks: Vec<Vec<String>>,
    nics: Vec<Vec<String>>,
    gpus: Vec<Vec<String>>,
    psus: Vec<Vec<String>>,
    missing: Vec<(String, String)>,
}

#[derive(Debug, Serialize)]
struct MeasurementView {
    name: String,
    unit: String,
    count: String,
    min: String,
    max: String,
    avg: String,
}

#[derive(Debug, Serialize)]
struct Chart {
    title: String,
    width: f64,
    height: f64,
    plot_left: f64,
    plot_right: f64,
    plot_top: f64,
    plot_bottom: f64,
    y_ticks: Vec<Tick>,
    x_ticks: Vec<Tick>,
    series: Vec<ChartSeries>,
    omitted: usize,
}

#[derive(Debug, Serialize)]
struct Tick {
    at: f64,
    label: String,
    /// `start`, `middle` or `end`, so the outer labels stay inside.
    anchor: &'static str,
}

#[derive(Debug, Serialize)]
struct ChartSeries {
    name: String,
    color: &'static str,
    points: String,
    last: String,
}

#[derive(Debug, Serialize)]
struct ArtifactView {
    name: String,
    stage: String,
    tool: String,
    size: String,
    sha256: String,
}

#[derive(Debug, Serialize)]
struct TransitionView {
    at: String,
    from: String,
    to: String,
    event: String,
    actor: String,
    detail: String,
}

#[derive(Debug, Serialize)]
struct AuditView {
    at: String,
    actor: String,
    action: String,
    acknowledged: String,
    detail: String,
}

/// Renders the page. Every value goes through minijinja's HTML escaping.
pub(crate) fn render(report: &Report, series: &[Series]) -> Result<String, ReportError> {
    let view = build_view(report, series);
    let mut environment = minijinja::Environment::new();
    environment.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    environment.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    environment
        .add_template(TEMPLATE_NAME, TEMPLATE)
        .map_err(ReportError::Render)?;
    environment
        .get_template(TEMPLATE_NAME)
        .and_then(|template| template.render(&view))
        .map_err(ReportError::Render)
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// `3 h 02 min`, `4 min 05 s`, `12 s`, `350 ms`.
fn duration(ms: i64) -> String {
    if ms < 1000 {
        return format!("{} ms", ms.max(0));
    }
    let seconds = ms / 1000;
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if hours > 0 {
        format!("{hours} h {minutes:02} min")
    } else if minutes > 0 {
        format!("{minutes} min {seconds:02} s")
    } else {
        format!("{seconds} s")
    }
}

/// A reading for people: at most two decimals (one from 100 up), no
/// trailing zeros.
fn number(value: f64) -> String {
    let text = if value == value.trunc() && value.abs() < 1e15 {
        return format!("{value:.0}");
    } else if value.abs() >= 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    };
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn outcome_class(outcome: &str) -> &'static str {
    match outcome {
        "passed" | "pass" | "Completed" => "ok",
        "warned" | "warn" => "warn",
        "failed" | "fail" | "timed_out" | "agent_lost" | "Failed" => "bad",
        "held" | "FailedHolding" => "held",
        "skipped" | "skip" | "cancelled" | "Cancelled" | "Released" => "skip",
        "running" => "running",
        _ => "none",
    }
}

fn severity_class(severity: crate::spec::Severity) -> &'static str {
    match severity {
        crate::spec::Severity::Critical => "bad",
        crate::spec::Severity::Warning => "warn",
        crate::spec::Severity::Info => "info",
    }
}

fn text(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

fn build_view(report: &Report, series: &[Series]) -> View {
    let run = &report.run;
    let mut run_facts = vec![
        (
            "Created".to_string(),
            format!("{} by {}", time(run.created_at_ms), run.created_by),
        ),
        ("Last change".to_string(), time(run.updated_at_ms)),
    ];
    if let Some(ended) = run.ended_at_ms {
        run_facts.push(("Ended".into(), time(ended)));
        run_facts.push(("Took".into(), duration(ended - run.created_at_ms)));
    }
    if let Some(reason) = &run.failure_reason {
        run_facts.push(("Failure".into(), reason.clone()));
    }
    if let Some(reason) = &run.hold_reason {
        run_facts.push(("Held because".into(), reason.clone()));
    }
    if !run.override_flags.is_empty() {
        run_facts.push(("Overrides".into(), run.override_flags.join(", ")));
    }
    let host = &report.host;
    let host_facts = vec![
        ("Name".to_string(), host.name.clone()),
        ("MAC addresses".to_string(), host.macs.join(", ")),
        ("Serial".to_string(), text(&host.serial)),
        ("System UUID".to_string(), text(&host.system_uuid)),
        ("Spec profile".to_string(), text(&host.spec_profile)),
    ];

    let mut tiles = Vec::new();
    for stage in STAGE_ORDER {
        let attempts: Vec<_> = report
            .stages
            .iter()
            .filter(|section| section.stage == stage)
            .collect();
        if attempts.is_empty() {
            tiles.push(Tile {
                stage: stage.to_string(),
                attempt: String::new(),
                outcome: "not run".into(),
                class: "none",
                reason: String::new(),
                started: String::new(),
                duration: String::new(),
                reasons: Vec::new(),
                agent_status: String::new(),
            });
        }
        for section in attempts {
            tiles.push(tile(section));
        }
    }
    for section in &report.stages {
        if !STAGE_ORDER.contains(&section.stage.as_str()) {
            tiles.push(tile(section));
        }
    }

    let mut diff_counts = DiffCounts::default();
    let diffs = report
        .spec_diffs
        .iter()
        .map(|diff| {
            match diff.severity {
                crate::spec::Severity::Critical => diff_counts.critical += 1,
                crate::spec::Severity::Warning => diff_counts.warning += 1,
                crate::spec::Severity::Info => diff_counts.info += 1,
            }
            DiffView {
                severity: diff.severity.as_str().to_string(),
                class: severity_class(diff.severity),
                path: diff.path.clone(),
                expected: text(&diff.expected),
                actual: text(&diff.actual),
                message: diff.message.clone(),
            }
        })
        .collect();

    let inventory = report.inventory.as_ref().map(|inventory| {
        let system = &inventory.system;
        let facts = vec![
            (
                "System".to_string(),
                [text(&system.vendor), text(&system.product)]
                    .join(" ")
                    .trim()
                    .to_string(),
            ),
            ("Serial".to_string(), text(&system.serial)),
            ("UUID".to_string(), text(&system.uuid)),
            ("BIOS".to_string(), text(&system.bios_version)),
            (
                "BMC".to_string(),
                if system.bmc_present {
                    "present"
                } else {
                    "none found"
                }
                .to_string(),
            ),
            (
                "CPU".to_string(),
                format!(
                    "{} · {} socket(s), {} cores, {} threads",
                    text(&inventory.cpu.model),
                    inventory.cpu.sockets,
                    inventory.cpu.cores,
                    inventory.cpu.threads
                ),
            ),
            (
                "Memory".to_string(),
                format!(
                    "{} in {} DIMM(s){}",
                    format_bytes_binary(inventory.memory.total_bytes),
                    inventory.memory.dimm_count,
                    inventory
                        .memory
                        .slots_total
                        .map(|slots| format!(" of {slots} slots"))
                        .unwrap_or_default()
                ),
            ),
            ("Collected".to_string(), inventory.collected_at.clone()),
        ];
        let yes_no = |flag: bool, word: &str| {
            if flag {
                word.to_string()
            } else {
                String::new()
            }
        };
        InventoryView {
            facts,
            disks: inventory
                .disks
                .iter()
                .map(|disk| {
                    vec![
                        disk.name.clone(),
                        text(&disk.model),
                        text(&disk.serial),
                        format_bytes_decimal(disk.size_bytes),
                        text(&disk.transport),
                        match disk.rotational {
                            Some(true) => "HDD".into(),
                            Some(false) => "SSD".into(),
                            None => String::new(),
                        },
                        [
                            yes_no(disk.removable, "removable"),
                            yes_no(disk.is_virtual, "virtual"),
                        ]
                        .into_iter()
                        .filter(|word| !word.is_empty())
                        .collect::<Vec<_>>()
                        .join(", "),
                    ]
                })
                .collect(),
            nics: inventory
                .nics
                .iter()
                .map(|nic| {
                    vec![
                        nic.name.clone(),
                        text(&nic.mac),
                        text(&nic.driver),
                        nic.max_supported_mbps
                            .map(|speed| format!("{speed} Mb/s"))
                            .unwrap_or_default(),
                        format!("{:?}", nic.link).to_lowercase(),
                        nic.speed_mbps
                            .map(|speed| format!("{speed} Mb/s"))
                            .unwrap_or_default(),
                    ]
                })
                .collect(),
            gpus: inventory
                .gpus
                .iter()
                .map(|gpu| {
                    vec![
                        text(&gpu.model),
                        text(&gpu.pci_slot),
                        text(&gpu.serial),
                        text(&gpu.uuid),
                    ]
                })
                .collect(),
            psus: inventory
                .psus
                .iter()
                .map(|psu| {
                    vec![
                        psu.name.clone(),
                        text(&psu.status),
                        psu.watts
                            .map(|watts| format!("{watts} W"))
                            .unwrap_or_default(),
                        text(&psu.model),
                        text(&psu.serial),
                    ]
                })
                .collect(),
            missing: inventory
                .missing
                .iter()
                .map(|missing| (missing.what.clone(), missing.why.clone()))
                .collect(),
        }
    });

    View {
        title: format!("vetting report: {} (run {})", host.name, run.id),
        host_name: host.name.clone(),
        generated: time(report.generated_at_ms),
        run: RunView {
            id: run.id.clone(),
            state: run.state.clone(),
            class: outcome_class(&run.state),
            facts: run_facts,
        },
        host: host_facts,
        tiles,
        diffs,
        diff_counts,
        inventory,
        measurements: report
            .measurements
            .iter()
            .map(|summary| MeasurementView {
                name: summary.name.clone(),
                unit: summary.unit.clone(),
                count: summary.count.to_string(),
                min: number(summary.min),
                max: number(summary.max),
                avg: number(summary.avg),
            })
            .collect(),
        charts: charts(series),
        artifacts: report
            .artifacts
            .iter()
            .map(|artifact| ArtifactView {
                name: artifact.name.clone(),
                stage: match (&artifact.stage, artifact.attempt) {
                    (Some(stage), Some(attempt)) if attempt > 1 => {
                        format!("{stage} (attempt {attempt})")
                    }
                    (Some(stage), _) => stage.clone(),
                    (None, _) => String::new(),
                },
                tool: text(&artifact.tool),
                size: format_bytes_binary(artifact.size_bytes.max(0) as u64),
                sha256: artifact.sha256.clone(),
            })
            .collect(),
        transitions: report
            .transitions
            .iter()
            .map(|record| TransitionView {
                at: time(record.at_ms),
                from: record.from.clone(),
                to: record.to.clone(),
                event: record.event.clone(),
                actor: record.actor.clone(),
                detail: text(&record.detail),
            })
            .collect(),
        audit: report
            .audit
            .iter()
            .map(|record| AuditView {
                at: time(record.at_ms),
                actor: record.actor.clone(),
                action: record.action.clone(),
                acknowledged: text(&record.acknowledged),
                detail: text(&record.detail),
            })
            .collect(),
        notes: report.notes.clone(),
    }
}

fn tile(section: &super::StageSection) -> Tile {
    let verdict: Option<vetting_probes::Verdict> = section
        .verdict
        .as_ref()
        .and_then(|value| serde_json::from_value(value.clone()).ok());
    let agent: Option<vetting_probes::Verdict> = section
        .agent_verdict
        .as_ref()
        .and_then(|value| serde_json::from_value(value.clone()).ok());
    let agent_status = match (&verdict, &agent) {
        (Some(ours), Some(theirs)) if ours.status != theirs.status => {
            format!("the agent said {}", theirs.status)
        }
        _ => String::new(),
    };
    Tile {
        stage: section.stage.clone(),
        attempt: if section.attempt > 1 {
            format!("attempt {}", section.attempt)
        } else {
            String::new()
        },
        outcome: section.outcome.replace('_', " "),
        class: outcome_class(&section.outcome),
        reason: text(&section.reason),
        started: time(section.started_at_ms),
        duration: section.duration_ms.map(duration).unwrap_or_default(),
        reasons: verdict
            .map(|verdict| {
                verdict
                    .reasons
                    .into_iter()
                    .map(|reason| ReasonView {
                        status: reason.status.as_str().to_string(),
                        class: outcome_class(reason.status.as_str()),
                        message: reason.message,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        agent_status,
    }
}

/// Averages a long series into at most `MAX_POINTS` buckets of equal time.
fn downsample(points: &[(i64, f64)]) -> Vec<(i64, f64)> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Vec::new();
    };
    let span = (last.0 - first.0).max(1) as f64;
    let mut buckets: Vec<(i64, f64, usize)> = vec![(0, 0.0, 0); MAX_POINTS];
    for (at, value) in points {
        let index = (((at - first.0) as f64 / span) * (MAX_POINTS - 1) as f64).round() as usize;
        let bucket = &mut buckets[index.min(MAX_POINTS - 1)];
        bucket.0 += at - first.0; // summed offsets, averaged below
        bucket.1 += value;
        bucket.2 += 1;
    }
    buckets
        .into_iter()
        .filter(|bucket| bucket.2 > 0)
        .map(|(offsets, sum, count)| (first.0 + offsets / count as i64, sum / count as f64))
        .collect()
}

/// One chart per unit, each series a polyline over the run's time axis.
fn charts(series: &[Series]) -> Vec<Chart> {
    let mut units: Vec<&str> = series
        .iter()
        .filter(|one| one.points.len() >= 2)
        .map(|one| one.unit.as_str())
        .collect();
    units.sort_unstable();
    units.dedup();
    let plot_left = MARGIN_LEFT;
    let plot_right = CHART_WIDTH - MARGIN_RIGHT;
    let plot_top = MARGIN_TOP;
    let plot_bottom = CHART_HEIGHT - MARGIN_BOTTOM;
    units
        .into_iter()
        .map(|unit| {
            let members: Vec<&Series> = series
                .iter()
                .filter(|one| one.unit == unit && one.points.len() >= 2)
                .collect();
            let omitted = members.len().saturating_sub(MAX_SERIES_PER_CHART);
            let drawn: Vec<(&Series, Vec<(i64, f64)>)> = members
                .into_iter()
                .take(MAX_SERIES_PER_CHART)
                .map(|one| (one, downsample(&one.points)))
                .collect();
            let all = drawn.iter().flat_map(|(_, points)| points.iter());
            let (mut t0, mut t1, mut low, mut high) =
                (i64::MAX, i64::MIN, f64::INFINITY, f64::NEG_INFINITY);
            for (at, value) in all {
                t0 = t0.min(*at);
                t1 = t1.max(*at);
                low = low.min(*value);
                high = high.max(*value);
            }
            if t1 <= t0 {
                t1 = t0 + 1;
            }
            if (high - low).abs() < f64::EPSILON {
                low -= 1.0;
                high += 1.0;
            } else {
                let pad = (high - low) * 0.05;
                low -= pad;
                high += pad;
            }
            let x = |at: i64| {
                plot_left + (at - t0) as f64 / (t1 - t0) as f64 * (plot_right - plot_left)
            };
            let y =
                |value: f64| plot_bottom - (value - low) / (high - low) * (plot_bottom - plot_top);
            let y_ticks = (0..=4)
                .map(|step| {
                    let value = low + (high - low) * step as f64 / 4.0;
                    Tick {
                        at: round1(y(value)),
                        label: number((value * 10.0).round() / 10.0),
                        anchor: "end",
                    }
                })
                .collect();
            let x_ticks = (0..=4)
                .map(|step| {
                    let at = t0 + (t1 - t0) * step / 4;
                    Tick {
                        at: round1(x(at)),
                        label: format!("+{}", clock(at - t0)),
                        anchor: match step {
                            0 => "start",
                            4 => "end",
                            _ => "middle",
                        },
                    }
                })
                .collect();
            let series = drawn
                .iter()
                .enumerate()
                .map(|(index, (one, points))| ChartSeries {
                    name: one.name.clone(),
                    color: PALETTE[index % PALETTE.len()],
                    points: points
                        .iter()
                        .map(|(at, value)| format!("{:.1},{:.1}", x(*at), y(*value)))
                        .collect::<Vec<_>>()
                        .join(" "),
                    last: one
                        .points
                        .last()
                        .map(|(_, value)| number(*value))
                        .unwrap_or_default(),
                })
                .collect();
            Chart {
                title: if unit.is_empty() {
                    "readings".to_string()
                } else {
                    format!("readings in {unit}")
                },
                width: CHART_WIDTH,
                height: CHART_HEIGHT,
                plot_left,
                plot_right,
                plot_top,
                plot_bottom,
                y_ticks,
                x_ticks,
                series,
                omitted,
            }
        })
        .collect()
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// `h:mm:ss` or `m:ss` from milliseconds.
fn clock(ms: i64) -> String {
    let seconds = ms.max(0) / 1000;
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if hours > 0 {
        format!("{hours}:{minutes:02}:{seconds:02}")
    } else {
        format!("{minutes}:{seconds:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_clocks_read_well() {
        assert_eq!(duration(350), "350 ms");
        assert_eq!(duration(12_000), "12 s");
        assert_eq!(duration(245_000), "4 min 05 s");
        assert_eq!(duration(3 * 3_600_000 + 120_000), "3 h 02 min");
        assert_eq!(clock(65_000), "1:05");
        assert_eq!(clock(3_725_000), "1:02:05");
    }

    #[test]
    fn long_series_are_averaged_into_buckets() {
        let points: Vec<(i64, f64)> = (0..10_000).map(|i| (i * 1000, (i % 2) as f64)).collect();
        let reduced = downsample(&points);
        assert!(reduced.len() <= MAX_POINTS);
        assert!(reduced.len() > MAX_POINTS / 2);
        assert!(reduced.iter().all(|(_, value)| (0.0..=1.0).contains(value)));
        let bucket_ms = 10_000 * 1000 / MAX_POINTS as i64;
        assert!(reduced.first().is_some_and(|point| point.0 < bucket_ms));
        assert!(reduced.windows(2).all(|pair| pair[0].0 < pair[1].0));
    }
}
