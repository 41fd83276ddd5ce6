//! Latency records per endpoint, and their summary over a time window:
//! requests per second, p50/p99/max, failures.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One request: when it started (since the recorder's origin), how long it
/// took, and whether it got a usable answer.
#[derive(Debug, Clone, Copy)]
struct Sample {
    started_ms: u32,
    latency_us: u32,
    ok: bool,
}

/// Every request of a run of the harness, by endpoint name.
#[derive(Debug)]
pub struct Recorder {
    origin: Instant,
    samples: Mutex<BTreeMap<&'static str, Vec<Sample>>>,
    failures: Mutex<BTreeMap<String, u64>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            origin: Instant::now(),
            samples: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// Records one request that started at `started` and ended now.
    pub fn record(&self, endpoint: &'static str, started: Instant, failure: Option<String>) {
        let latency = started.elapsed();
        let sample = Sample {
            started_ms: started.saturating_duration_since(self.origin).as_millis() as u32,
            latency_us: latency.as_micros().min(u32::MAX as u128) as u32,
            ok: failure.is_none(),
        };
        self.samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(endpoint)
            .or_default()
            .push(sample);
        if let Some(failure) = failure {
            // keep the kind of failure, not each message
            let kind: String = failure.chars().take(120).collect();
            *self
                .failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(format!("{endpoint}: {kind}"))
                .or_default() += 1;
        }
    }

    /// The kinds of failures seen, with counts.
    pub fn failures(&self) -> BTreeMap<String, u64> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The summary of the requests that started in `[from, to)`.
    pub fn summary(&self, from: Instant, to: Instant) -> Vec<EndpointSummary> {
        let from_ms = from.saturating_duration_since(self.origin).as_millis() as u32;
        let to_ms = to.saturating_duration_since(self.origin).as_millis() as u32;
        let seconds = to.saturating_duration_since(from).as_secs_f64().max(1e-9);
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        samples
            .iter()
            .map(|(endpoint, samples)| {
                let window: Vec<&Sample> = samples
                    .iter()
                    .filter(|s| s.started_ms >= from_ms && s.started_ms < to_ms)
                    .collect();
                summarize(endpoint, &window, seconds)
            })
            .filter(|summary| summary.requests > 0)
            .collect()
    }

    /// Per second of `[from, to)`: (requests started, failures, max latency).
    pub fn per_second(&self, endpoint: &str, from: Instant, to: Instant) -> Vec<(u64, u64, u32)> {
        let from_ms = from.saturating_duration_since(self.origin).as_millis() as u32;
        let seconds = to.saturating_duration_since(from).as_secs() as usize;
        let mut out = vec![(0u64, 0u64, 0u32); seconds];
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(samples) = samples.get(endpoint) {
            for sample in samples {
                if sample.started_ms < from_ms {
                    continue;
                }
                let second = ((sample.started_ms - from_ms) / 1000) as usize;
                if let Some(slot) = out.get_mut(second) {
                    slot.0 += 1;
                    if !sample.ok {
                        slot.1 += 1;
                    }
                    slot.2 = slot.2.max(sample.latency_us);
                }
            }
        }
        out
    }
}

/// One endpoint over a window.
#[derive(Debug, Clone)]
pub struct EndpointSummary {
    pub endpoint: &'static str,
    pub requests: u64,
    pub failures: u64,
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

fn summarize(endpoint: &'static str, window: &[&Sample], seconds: f64) -> EndpointSummary {
    let mut latencies: Vec<u32> = window.iter().map(|s| s.latency_us).collect();
    latencies.sort_unstable();
    let at = |q: f64| -> Duration {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        Duration::from_micros(u64::from(latencies[index]))
    };
    EndpointSummary {
        endpoint,
        requests: window.len() as u64,
        failures: window.iter().filter(|s| !s.ok).count() as u64,
        per_second: window.len() as f64 / seconds,
        p50: at(0.50),
        p99: at(0.99),
        max: latencies
            .last()
            .map_or(Duration::ZERO, |&us| Duration::from_micros(u64::from(us))),
    }
}

/// Milliseconds with two decimals.
pub fn ms(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1000.0)
}

/// Prints a table of endpoint summaries.
pub fn print_table(summaries: &[EndpointSummary]) {
    println!(
        "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "endpoint", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "failed"
    );
    for s in summaries {
        println!(
            "  {:<10} {:>9} {:>9.1} {:>9} {:>9} {:>9} {:>8}",
            s.endpoint,
            s.requests,
            s.per_second,
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            s.failures
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_over_a_window() {
        let recorder = Recorder::new();
        let start = recorder.origin();
        for _ in 0..100 {
            recorder.record("heartbeat", Instant::now(), None);
        }
        recorder.record("heartbeat", Instant::now(), Some("boom".into()));
        let summary = recorder.summary(start, Instant::now() + Duration::from_secs(1));
        assert_eq!(summary.len(), 1);
        assert_eq!(summary[0].requests, 101);
        assert_eq!(summary[0].failures, 1);
        assert!(summary[0].p50 <= summary[0].p99 && summary[0].p99 <= summary[0].max);
        assert_eq!(recorder.failures().len(), 1);
    }
}
