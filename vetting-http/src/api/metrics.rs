//! `GET /metrics`: Prometheus text. From the database (runs per state,
//! the queue, dispatcher slots, stage failures: `Operator::run_metrics`),
//! the agent API's own counters (requests and latency per endpoint and
//! status class, counted lock-free by a layer on the agent routes only),
//! and the free space of the data folder.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use vetting_probes::protocol::Endpoint;

use crate::AppState;
use crate::error::ApiError;

/// The upper bounds (seconds) of the latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const ENDPOINTS: usize = Endpoint::ALL.len();

/// One endpoint and status class: a count, a latency sum and a histogram.
#[derive(Debug, Default)]
struct Series {
    count: AtomicU64,
    sum_micros: AtomicU64,
    /// Cumulative counts are made at render time; each slot counts the
    /// requests of its bucket alone (the last: above every bound).
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
}

/// The agent API's request counters (lock-free).
#[derive(Debug)]
pub struct AgentMetrics {
    series: Vec<Series>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            series: (0..ENDPOINTS * CLASSES.len())
                .map(|_| Series::default())
                .collect(),
        }
    }
}

impl AgentMetrics {
    fn series(&self, endpoint: Endpoint, status: u16) -> Option<&Series> {
        let endpoint = Endpoint::ALL.iter().position(|e| *e == endpoint)?;
        let class = usize::from(status / 100).checked_sub(1)?;
        if class >= CLASSES.len() {
            return None;
        }
        self.series.get(endpoint * CLASSES.len() + class)
    }

    /// Counts one answered request.
    pub fn record(&self, endpoint: Endpoint, status: u16, seconds: f64) {
        let Some(series) = self.series(endpoint, status) else {
            return;
        };
        series.count.fetch_add(1, Ordering::Relaxed);
        series
            .sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(slot) = series.buckets.get(bucket) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many requests of `endpoint` were answered in `class` (`2xx`).
    pub fn count(&self, endpoint: Endpoint, class: &str) -> u64 {
        let Some(index) = CLASSES.iter().position(|c| *c == class) else {
            return 0;
        };
        let status = (index as u16 + 1) * 100;
        self.series(endpoint, status)
            .map_or(0, |series| series.count.load(Ordering::Relaxed))
    }

    fn render(&self, out: &mut String) {
        out.push_str("# HELP vetting_agent_requests_total Agent API requests answered, by endpoint and status class.\n");
        out.push_str("# TYPE vetting_agent_requests_total counter\n");
        for (endpoint, class, series) in self.each() {
            let _ = writeln!(
                out,
                "vetting_agent_requests_total{{endpoint=\"{}\",class=\"{class}\"}} {}",
                endpoint.as_str(),
                series.count.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP vetting_agent_request_duration_seconds Agent API answer latency.\n");
        out.push_str("# TYPE vetting_agent_request_duration_seconds histogram\n");
        for (endpoint, class, series) in self.each() {
            let labels = format!("endpoint=\"{}\",class=\"{class}\"", endpoint.as_str());
            let mut cumulative = 0;
            for (bound, slot) in LATENCY_BUCKETS.iter().zip(&series.buckets) {
                cumulative += slot.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "vetting_agent_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = series.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "vetting_agent_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "vetting_agent_request_duration_seconds_sum{{{labels}}} {}",
                series.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "vetting_agent_request_duration_seconds_count{{{labels}}} {count}"
            );
        }
    }

    /// Every served endpoint with its classes seen, or its `2xx` (so
    /// each endpoint's series exists from the start).
    fn each(&self) -> impl Iterator<Item = (Endpoint, &'static str, &Series)> {
        Endpoint::ALL
            .into_iter()
            .filter(|endpoint| endpoint.is_served())
            .flat_map(move |endpoint| {
                CLASSES
                    .iter()
                    .enumerate()
                    .filter_map(move |(index, class)| {
                        let series = self.series(endpoint, (index as u16 + 1) * 100)?;
                        let seen = series.count.load(Ordering::Relaxed) > 0;
                        (seen || *class == "2xx").then_some((endpoint, *class, series))
                    })
            })
    }
}

/// The layer of an agent endpoint's route: counts its answers.
pub async fn count_agent_request(endpoint: Endpoint, request: Request, next: Next) -> Response {
    let metrics = request.extensions().get::<Arc<AgentMetrics>>().cloned();
    let started = Instant::now();
    let response = next.run(request).await;
    if let Some(metrics) = metrics {
        metrics.record(
            endpoint,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }
    response
}

/// The free and total bytes of the file system holding `path`.
fn disk_space(path: &std::path::Path) -> Option<(u64, u64)> {
    let stats = nix::sys::statvfs::statvfs(path).ok()?;
    let fragment = stats.fragment_size() as u64;
    Some((
        (stats.blocks_available() as u64).saturating_mul(fragment),
        (stats.blocks() as u64).saturating_mul(fragment),
    ))
}

#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "metrics",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let metrics = state.orchestrator.operator().run_metrics().await?;
    let mut out = String::new();
    out.push_str("# HELP vetting_runs Runs per state.\n# TYPE vetting_runs gauge\n");
    for (run_state, count) in &metrics.runs_by_state {
        let _ = writeln!(
            out,
            "vetting_runs{{state=\"{}\"}} {count}",
            run_state.as_str()
        );
    }
    let _ = writeln!(
        out,
        "# HELP vetting_queue_length Runs waiting for a dispatcher slot.\n# TYPE vetting_queue_length gauge\nvetting_queue_length {}",
        metrics.queued
    );
    let _ = writeln!(
        out,
        "# HELP vetting_dispatcher_slots Dispatcher slots.\n# TYPE vetting_dispatcher_slots gauge\nvetting_dispatcher_slots {}",
        metrics.slots_total
    );
    let _ = writeln!(
        out,
        "# HELP vetting_dispatcher_slots_in_use Dispatcher slots held by runs.\n# TYPE vetting_dispatcher_slots_in_use gauge\nvetting_dispatcher_slots_in_use {}",
        metrics.slots_in_use
    );
    out.push_str("# HELP vetting_stage_failures_total Failed stage attempts, by stage.\n# TYPE vetting_stage_failures_total counter\n");
    for (stage, count) in &metrics.stage_failures {
        let _ = writeln!(
            out,
            "vetting_stage_failures_total{{stage=\"{}\"}} {count}",
            label(stage)
        );
    }
    state.agent_metrics.render(&mut out);
    let data_dir = state.orchestrator.config().data_dir.clone();
    if let Ok(Some((free, total))) =
        tokio::task::spawn_blocking(move || disk_space(&data_dir)).await
    {
        let _ = writeln!(
            out,
            "# HELP vetting_data_dir_free_bytes Free bytes of the data folder's file system.\n# TYPE vetting_data_dir_free_bytes gauge\nvetting_data_dir_free_bytes {free}"
        );
        let _ = writeln!(
            out,
            "# HELP vetting_data_dir_size_bytes Size of the data folder's file system.\n# TYPE vetting_data_dir_size_bytes gauge\nvetting_data_dir_size_bytes {total}"
        );
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

/// A label value with `\`, `"` and newlines escaped.
fn label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
