//! Simulated agents, built on the agent library itself: its
//! [`Client`](vetting_agent::client::Client) for every request and its
//! [`Outbox`](vetting_agent::outbox::Outbox) and flusher for log lines and
//! sensor readings (sequence numbers, batching, retries), exactly as
//! `vetting-agent run` sends them. Each request is timed into a
//! [`Recorder`].
//!
//! A scripted run: hello, claim, then for each agent stage the claim and
//! the results lead to: a heartbeat every 5 s, each second 20 log lines
//! (in one burst, as a tool prints its progress) and one batch of 10
//! sensor readings; at the end of the stage an artifact upload (200 KiB
//! for the inventory, 16 KiB otherwise), the outboxes drained, and the
//! stage result.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use vetting_agent::client::{Backoff, Client, ClientError};
use vetting_agent::outbox::{DEFAULT_CAPACITY, Outbox, run_flusher};
use vetting_probes::Verdict;
use vetting_probes::protocol::{
    ArtifactQuery, ArtifactRef, ClaimRequest, HeartbeatRequest, HelloRequest, LogBatch, LogLine,
    LogStream, Measurement, Outcome, PROTOCOL_VERSION, RunPosition, SensorBatch, SensorSample,
    Stage, StageRef, StageResult,
};

use super::server::SeededRun;
use super::stats::Recorder;

/// The traffic of one simulated agent.
#[derive(Debug, Clone)]
pub struct Traffic {
    pub heartbeat_every: Duration,
    pub log_lines_per_sec: usize,
    pub readings_per_sec: usize,
    /// Seconds per agent stage, on average (each stage of each agent takes
    /// between half and one and a half of it).
    pub stage_secs: f64,
    pub artifact_bytes: usize,
    pub inventory_artifact_bytes: usize,
    pub request_timeout: Duration,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            heartbeat_every: Duration::from_secs(5),
            log_lines_per_sec: 20,
            readings_per_sec: 10,
            stage_secs: 10.0,
            artifact_bytes: 16 * 1024,
            inventory_artifact_bytes: 200 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// What one agent sent and what the orchestrator acknowledged.
#[derive(Debug, Clone, Default)]
pub struct AgentReport {
    pub run_id: String,
    pub claimed: bool,
    /// Log lines numbered `log_start..log_next` were produced.
    pub log_start: u64,
    pub log_next: u64,
    /// Everything below this was acknowledged.
    pub log_acked: u64,
    pub sensor_start: u64,
    pub sensor_next: u64,
    pub sensor_acked: u64,
    pub stages_done: usize,
    /// The run state of the last answer.
    pub final_state: String,
    pub error: Option<String>,
}

/// A tiny deterministic generator for jitter (no need for a crate).
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Self {
        Jitter(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `[0, 1)`.
    pub fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn failure_of<T>(result: &Result<T, ClientError>) -> Option<String> {
    match result {
        Ok(_) => None,
        Err(error) => Some(match error.status() {
            Some(status) => format!("status {status}"),
            None => match error {
                ClientError::Unreachable { .. } => "unreachable (timeout or connection)".into(),
                other => other.to_string(),
            },
        }),
    }
}

/// Sends one request, timing it into `recorder`.
pub async fn timed<T, Fut>(
    recorder: &Recorder,
    endpoint: &'static str,
    request: Fut,
) -> Result<T, ClientError>
where
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let started = Instant::now();
    let result = request.await;
    recorder.record(endpoint, started, failure_of(&result));
    result
}

/// Sends until an answer that is not retryable (backoff as the agent's),
/// giving up at `give_up`.
async fn timed_retry<T, F, Fut>(
    recorder: &Recorder,
    endpoint: &'static str,
    give_up: Instant,
    mut request: F,
) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut backoff = Backoff::standard();
    loop {
        match timed(recorder, endpoint, request()).await {
            Err(error) if error.is_retryable() && Instant::now() < give_up => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            other => return other,
        }
    }
}

/// The signals shared by all the agents of a scenario.
#[derive(Debug, Clone)]
pub struct Phases {
    /// Counts the agents that have claimed (or given up claiming).
    pub claimed: Arc<AtomicUsize>,
    /// Becomes true when the measured window starts.
    pub start: watch::Receiver<bool>,
    /// When the agents stop producing.
    pub stop_at: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl Phases {
    fn stop_at(&self) -> Option<Instant> {
        *self
            .stop_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stopped(&self) -> bool {
        self.stop_at().is_some_and(|at| Instant::now() >= at)
    }
}

/// One agent's scripted run. Returns what it sent and what was stored.
pub async fn run_agent(
    index: usize,
    url: String,
    seeded: SeededRun,
    traffic: Traffic,
    recorder: Arc<Recorder>,
    mut phases: Phases,
) -> AgentReport {
    let mut report = AgentReport {
        run_id: seeded.run_id.clone(),
        ..Default::default()
    };
    let mut jitter = Jitter::new(index as u64 + 1);
    let client = match Client::new(&url, &seeded.run_id, &seeded.token, traffic.request_timeout) {
        Ok(client) => client,
        Err(error) => {
            report.error = Some(error.to_string());
            phases.claimed.fetch_add(1, Ordering::SeqCst);
            return report;
        }
    };
    let far = Instant::now() + Duration::from_secs(3600);
    let hello = HelloRequest {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "load-harness".into(),
        addresses: vec![format!("eth0/10.1.{}.{}", index / 250, index % 250 + 1)],
        boot_id: None,
    };
    let _ = timed_retry(&recorder, "hello", far, || client.hello(&hello)).await;
    let claim_request = ClaimRequest {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "load-harness".into(),
    };
    let claim = timed_retry(&recorder, "claim", far, || client.claim(&claim_request)).await;
    phases.claimed.fetch_add(1, Ordering::SeqCst);
    let claim = match claim {
        Ok(claim) => claim,
        Err(error) => {
            report.error = Some(format!("claim: {error}"));
            return report;
        }
    };
    report.claimed = true;
    let _ = phases.start.wait_for(|started| *started).await;

    let logs: Outbox<LogLine> = Outbox::new(claim.next_log_seq, DEFAULT_CAPACITY);
    let sensors: Outbox<SensorSample> = Outbox::new(claim.next_sensor_seq, DEFAULT_CAPACITY);
    report.log_start = claim.next_log_seq;
    report.sensor_start = claim.next_sensor_seq;
    let mut background = Vec::new();
    {
        let client = client.clone();
        let recorder = recorder.clone();
        background.push(tokio::spawn(run_flusher(
            logs.clone(),
            "log",
            move |lines| {
                let client = client.clone();
                let recorder = recorder.clone();
                async move { timed(&recorder, "log", client.log(&LogBatch { lines })).await }
            },
        )));
    }
    {
        let client = client.clone();
        let recorder = recorder.clone();
        background.push(tokio::spawn(run_flusher(
            sensors.clone(),
            "sensor",
            move |samples| {
                let client = client.clone();
                let recorder = recorder.clone();
                async move {
                    timed(&recorder, "sensor", client.sensor(&SensorBatch { samples })).await
                }
            },
        )));
    }
    let (current_sender, current) = watch::channel(None::<StageRef>);
    {
        let client = client.clone();
        let recorder = recorder.clone();
        let every = traffic.heartbeat_every;
        let offset = every.mul_f64(jitter.next_unit());
        background.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let request = HeartbeatRequest {
                    current: *current.borrow(),
                };
                let _ = timed(&recorder, "heartbeat", client.heartbeat(&request)).await;
            }
        }));
    }

    let mut position: RunPosition = claim.position.clone();
    let phase = Duration::from_secs(1).mul_f64(jitter.next_unit());
    tokio::time::sleep(phase).await;
    'stages: while let Some(stage) = position
        .current
        .filter(|current| position.state == current.stage.as_str())
    {
        current_sender.send_replace(Some(stage));
        // stages take different times on different machines
        let length = Duration::from_secs_f64(traffic.stage_secs * (0.5 + jitter.next_unit()));
        let stage_end = Instant::now() + length;
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut second = 0u64;
        while Instant::now() < stage_end {
            ticks.tick().await;
            if phases.stopped() {
                break 'stages;
            }
            produce_second(
                &logs,
                &sensors,
                stage,
                second,
                traffic.log_lines_per_sec,
                traffic.readings_per_sec,
            )
            .await;
            second += 1;
        }
        let give_up = phases
            .stop_at()
            .map_or(far, |at| at + Duration::from_secs(60));
        // the stage's raw output
        let bytes = if stage.stage == Stage::InventoryCheck {
            traffic.inventory_artifact_bytes
        } else {
            traffic.artifact_bytes
        };
        let name = format!("{}-output.txt", stage.stage.as_str().to_ascii_lowercase());
        let upload = ArtifactQuery::for_stage(name.clone(), None, stage, None);
        let body = artifact_body(bytes);
        let stored = timed_retry(&recorder, "artifact", give_up, || {
            client.artifact(&upload, body.clone())
        })
        .await;
        let mut artifacts = Vec::new();
        if stored.is_ok() {
            artifacts.push(ArtifactRef {
                name,
                tool: None,
                subject: None,
            });
        }
        // every line of the stage is stored before its result
        let _ = logs.drained(Some(Duration::from_secs(60))).await;
        let _ = sensors.drained(Some(Duration::from_secs(60))).await;
        let result = StageResult {
            stage: stage.stage,
            attempt: stage.attempt,
            outcome: Outcome::Passed,
            verdict: Verdict::pass(),
            hold_reason: None,
            artifacts,
            inventory: (stage.stage == Stage::InventoryCheck).then(|| inventory_of(&seeded.serial)),
            measurements: vec![Measurement {
                name: format!("{}.score", stage.stage.as_str().to_ascii_lowercase()),
                value: 100.0 + index as f64,
                unit: "points".into(),
            }],
            wipe_findings: Vec::new(),
        };
        match timed_retry(&recorder, "result", give_up, || client.result(&result)).await {
            Ok(answer) => {
                report.stages_done += 1;
                position = answer.position;
            }
            Err(error) => match error.position() {
                Some(at) => position = at.clone(),
                None => {
                    report.error = Some(format!("result: {error}"));
                    break;
                }
            },
        }
        if phases.stopped() {
            break;
        }
    }
    report.final_state = position.state.clone();
    // what was produced is sent before the agent goes away
    let _ = logs.drained(Some(Duration::from_secs(60))).await;
    let _ = sensors.drained(Some(Duration::from_secs(60))).await;
    for task in background {
        task.abort();
    }
    report.log_next = logs.next_seq();
    report.log_acked = logs.acked_seq();
    report.sensor_next = sensors.next_seq();
    report.sensor_acked = sensors.acked_seq();
    report
}

async fn produce_second(
    logs: &Outbox<LogLine>,
    sensors: &Outbox<SensorSample>,
    stage: StageRef,
    second: u64,
    lines: usize,
    readings: usize,
) {
    let now = chrono::Utc::now().timestamp_millis();
    for line in 0..lines {
        logs.push(LogLine {
            seq: 0,
            at_ms: now,
            stage: Some(stage),
            stream: LogStream::Stdout,
            text: format!(
                "{} progress: second {second}, line {line}: 4096 blocks checked, 0 errors, rate 512.0 MB/s",
                stage.stage.as_str()
            ),
        })
        .await;
    }
    for reading in 0..readings {
        sensors
            .push(SensorSample {
                seq: 0,
                at_ms: now,
                stage: Some(stage),
                name: format!("coretemp/Core {reading}"),
                value: 40.0 + (second % 20) as f64 + reading as f64 * 0.5,
                unit: "C".into(),
            })
            .await;
    }
}

fn artifact_body(bytes: usize) -> Vec<u8> {
    let line =
        b"Handle 0x0042, DMI type 17, 92 bytes: Memory Device, Size: 32 GB, Speed: 3200 MT/s\n";
    line.iter().copied().cycle().take(bytes).collect()
}

fn inventory_of(serial: &str) -> serde_json::Value {
    let mut inventory = vetting_probes::inventory::Inventory::empty(chrono::Utc::now());
    inventory.system.serial = Some(serial.to_string());
    inventory.system.vendor = Some("Load Harness".into());
    inventory.system.product = Some("Simulated Server".into());
    serde_json::to_value(&inventory).unwrap_or(serde_json::Value::Null)
}

/// A closed loop of heartbeats until `until` (the throughput test).
pub async fn heartbeat_loop(client: Client, recorder: Arc<Recorder>, until: Instant) {
    let request = HeartbeatRequest { current: None };
    while Instant::now() < until {
        let _ = timed(&recorder, "heartbeat", client.heartbeat(&request)).await;
    }
}

/// Open-loop heartbeats: `rate` per second for each `(rate, duration)`
/// phase, spread over `clients`, at most `max_in_flight` waiting (a
/// request that finds none free counts as failed: the load generator
/// could not send it).
pub async fn open_loop_heartbeats(
    clients: Vec<Client>,
    recorder: Arc<Recorder>,
    phases: Vec<(f64, Duration)>,
    max_in_flight: usize,
) {
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let request = HeartbeatRequest { current: None };
    let mut next_client = 0usize;
    for (rate, length) in phases {
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < length {
            let due = (start.elapsed().as_secs_f64() * rate) as u64;
            while sent < due {
                sent += 1;
                let Some(client) = clients.get(next_client % clients.len().max(1)).cloned() else {
                    return;
                };
                next_client += 1;
                match in_flight.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let recorder = recorder.clone();
                        let request = request.clone();
                        tokio::spawn(async move {
                            let _ = timed(&recorder, "heartbeat", client.heartbeat(&request)).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        recorder.record(
                            "heartbeat",
                            Instant::now(),
                            Some("not sent: load generator at its in-flight cap".into()),
                        );
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // let the last requests finish
    let _ = in_flight.acquire_many(max_in_flight as u32).await;
}
