//! The agent library and `vetting-agent run` against a small fake
//! orchestrator (a hand-written HTTP/1.1 responder on loopback that records
//! every request and answers protocol JSON), and the Storage stage's safety
//! gates against real loop devices with real wipefs, blkid, badblocks and
//! fio. Needs root (loop devices) and stress-ng, iperf3, badblocks, fio,
//! wipefs, blkid, sfdisk and losetup.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vetting_agent::client::Client;
use vetting_agent::outbox::{LogSink, Outbox, SensorSink, run_flusher};
use vetting_agent::params::{AgentConfig, DiskSelection, SurfaceTest};
use vetting_agent::run_loop::{self, RunEnd};
use vetting_agent::stages::{self, CancelToken, LocalSettings, StageContext, StageReport};
use vetting_probes::inventory::{Disk, Inventory};
use vetting_probes::protocol::{
    ArtifactRef, BatchAck, ClaimResponse, Command, ErrorBody, ExpectedDisk, HeartbeatRequest,
    HeartbeatResponse, LogBatch, LogLine, LogStream, Outcome, ResultResponse, RunPosition,
    SensorBatch, Stage, StageParams, StageRef, StageResult, StorageParams, StoredArtifact,
};
use vetting_probes::{Status, Thresholds, Verdict};

// ---------------------------------------------------------------------------
// A fake orchestrator: one request per connection, `Connection: close`.
// It records every request; the test body asserts on them. A handler that
// panics (a body that is not the expected JSON) answers 500 and is recorded
// as a failure, which fails the test when the fake is dropped: a panic in
// the connection's task alone would only drop the connection, and the agent
// would retry it.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct HttpRequest {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl HttpRequest {
    /// The last path segment (`hello`, `log`, ...).
    fn endpoint(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }

    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "{} body is not the expected JSON ({error}): {}",
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn query_value(&self, key: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name == key).then(|| value.to_string())
        })
    }
}

enum Reply {
    Json(u16, String),
    /// Close the connection without answering.
    Close,
}

fn ok<T: serde::Serialize>(value: &T) -> Reply {
    Reply::Json(200, serde_json::to_string(value).unwrap())
}

type Handler = Arc<dyn Fn(&HttpRequest) -> Reply + Send + Sync>;

struct FakeOrchestrator {
    url: String,
    requests: Arc<Mutex<Vec<HttpRequest>>>,
    handler_failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeOrchestrator {
    fn drop(&mut self) {
        self.task.abort();
        let failures = self.handler_failures.lock().unwrap().clone();
        if failures.is_empty() {
            return;
        }
        if std::thread::panicking() {
            eprintln!("the fake orchestrator's handler failed: {failures:#?}");
        } else {
            panic!("the fake orchestrator's handler failed: {failures:#?}");
        }
    }
}

impl FakeOrchestrator {
    async fn start(handler: Handler) -> FakeOrchestrator {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler_failures = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        let failures = Arc::clone(&handler_failures);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = Arc::clone(&handler);
                let recorded = Arc::clone(&recorded);
                let failures = Arc::clone(&failures);
                tokio::spawn(async move {
                    serve_connection(stream, handler, recorded, failures).await;
                });
            }
        });
        FakeOrchestrator {
            url,
            requests,
            handler_failures,
            task,
        }
    }

    fn requests(&self) -> Vec<HttpRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// What the handler panicked on so far: `METHOD PATH: message`.
    fn handler_failures(&self) -> Vec<String> {
        self.handler_failures.lock().unwrap().clone()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

async fn read_request(stream: &mut TcpStream) -> Option<HttpRequest> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(position) = find(&buffer, b"\r\n\r\n") {
            break position;
        }
        let count = stream.read(&mut chunk).await.ok()?;
        if count == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..count]);
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let target = request_line.next()?.to_string();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_string(), query.to_string()),
        None => (target, String::new()),
    };
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[header_end + 4..].to_vec();
    while body.len() < length {
        let count = stream.read(&mut chunk).await.ok()?;
        if count == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..count]);
    }
    body.truncate(length);
    Some(HttpRequest {
        method,
        path,
        query,
        headers,
        body,
    })
}

async fn serve_connection(
    mut stream: TcpStream,
    handler: Handler,
    recorded: Arc<Mutex<Vec<HttpRequest>>>,
    failures: Arc<Mutex<Vec<String>>>,
) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    recorded.lock().unwrap().push(request.clone());
    let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&request)))
        .unwrap_or_else(|payload| {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_else(|| "a panic without a message".into());
            failures
                .lock()
                .unwrap()
                .push(format!("{} {}: {message}", request.method, request.path));
            Reply::Json(
                500,
                r#"{"error":"the fake orchestrator's handler failed"}"#.into(),
            )
        });
    match reply {
        Reply::Close => {}
        Reply::Json(status, body) => {
            let response = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    }
}

/// Stores items exactly once by sequence number, as the orchestrator does:
/// older items are retries, a gap stops the batch.
#[derive(Debug)]
struct SeqStore<T> {
    next: u64,
    items: Vec<T>,
}

impl<T> Default for SeqStore<T> {
    fn default() -> Self {
        SeqStore {
            next: 0,
            items: Vec::new(),
        }
    }
}

impl<T> SeqStore<T> {
    fn apply(&mut self, batch: Vec<T>, seq: impl Fn(&T) -> u64) -> BatchAck {
        let mut stored = 0;
        for item in batch {
            let item_seq = seq(&item);
            if item_seq < self.next {
                continue;
            }
            if item_seq != self.next {
                break;
            }
            self.items.push(item);
            self.next += 1;
            stored += 1;
        }
        BatchAck {
            next_seq: self.next,
            stored,
        }
    }
}

fn position(state: &str, current: Option<(Stage, u32)>) -> RunPosition {
    RunPosition {
        state: state.to_string(),
        current: current.map(|(stage, attempt)| StageRef { stage, attempt }),
    }
}

fn claim_response(position: RunPosition, params: StageParams) -> ClaimResponse {
    ClaimResponse {
        run_id: "r".into(),
        position,
        stages: Stage::ALL.to_vec(),
        params,
        thresholds: Thresholds::default(),
        heartbeat_interval_secs: 1,
        slow_heartbeat_interval_secs: 1,
        next_log_seq: 0,
        next_sensor_seq: 0,
    }
}

/// Polls `condition` every 20 ms until it holds or `limit` passes.
async fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// The outbox across an outage
// ---------------------------------------------------------------------------

#[derive(Default)]
struct OutageState {
    down: bool,
    refused_with_503: u32,
    refused_by_closing: u32,
    log: SeqStore<LogLine>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_log_line_arrives_exactly_once_across_an_outage() {
    let state = Arc::new(Mutex::new(OutageState {
        down: true,
        ..OutageState::default()
    }));
    let handler: Handler = {
        let state = Arc::clone(&state);
        Arc::new(move |request| {
            let mut state = state.lock().unwrap();
            if state.down {
                // alternate the two kinds of outage
                if (state.refused_with_503 + state.refused_by_closing).is_multiple_of(2) {
                    state.refused_with_503 += 1;
                    return Reply::Json(503, r#"{"error":"restarting"}"#.into());
                }
                state.refused_by_closing += 1;
                return Reply::Close;
            }
            let batch: LogBatch = request.json();
            ok(&state.log.apply(batch.lines, |line| line.seq))
        })
    };
    let server = FakeOrchestrator::start(handler).await;
    let client = Client::new(&server.url, "run-7", "secret-token", Duration::from_secs(5)).unwrap();
    let capacity = 100;
    let outbox: Outbox<LogLine> = Outbox::new(0, capacity);
    let flusher = tokio::spawn(run_flusher(outbox.clone(), "log", move |lines| {
        let client = client.clone();
        async move { client.log(&LogBatch { lines }).await }
    }));

    // a thread producing lines (a tool's output) and async agent messages
    let thread_lines = 1500usize;
    let producer = {
        let sink = LogSink::new(outbox.clone(), None);
        std::thread::spawn(move || {
            for index in 0..thread_lines {
                sink.emit_blocking(LogStream::Stdout, &format!("tool line {index}"));
            }
        })
    };
    let agent_sink = LogSink::new(outbox.clone(), None);
    let async_lines = 300usize;
    let async_producer = tokio::spawn(async move {
        for index in 0..async_lines {
            agent_sink
                .emit(LogStream::Agent, &format!("agent line {index}"))
                .await;
        }
    });

    // While the orchestrator is down the queue fills up and the producer
    // blocks instead of dropping lines.
    wait_for(
        "the outbox to fill during the outage",
        Duration::from_secs(30),
        || outbox.len() == capacity,
    )
    .await;
    wait_for("both kinds of refusal", Duration::from_secs(30), || {
        let state = state.lock().unwrap();
        state.refused_with_503 >= 2 && state.refused_by_closing >= 2
    })
    .await;
    assert!(!producer.is_finished(), "the producer should be blocked");
    assert_eq!(
        outbox.len(),
        capacity,
        "never more than the capacity queued"
    );
    assert_eq!(state.lock().unwrap().log.next, 0);

    state.lock().unwrap().down = false;
    let total = (thread_lines + async_lines) as u64;
    wait_for("every line to be stored", Duration::from_secs(60), || {
        state.lock().unwrap().log.next == total
    })
    .await;
    producer.join().unwrap();
    async_producer.await.unwrap();
    assert!(outbox.drained(Some(Duration::from_secs(10))).await);
    flusher.abort();

    let state = state.lock().unwrap();
    let stored = &state.log.items;
    assert_eq!(stored.len() as u64, total);
    // exactly once and in order: the sequence numbers are 0..total
    for (index, line) in stored.iter().enumerate() {
        assert_eq!(line.seq, index as u64);
    }
    // each producer's lines arrived in the order they were produced
    let tool: Vec<&str> = stored
        .iter()
        .filter(|line| line.stream == LogStream::Stdout)
        .map(|line| line.text.as_str())
        .collect();
    let expected_tool: Vec<String> = (0..thread_lines)
        .map(|i| format!("tool line {i}"))
        .collect();
    assert_eq!(tool, expected_tool);
    let agent: Vec<&str> = stored
        .iter()
        .filter(|line| line.stream == LogStream::Agent)
        .map(|line| line.text.as_str())
        .collect();
    let expected_agent: Vec<String> = (0..async_lines)
        .map(|i| format!("agent line {i}"))
        .collect();
    assert_eq!(agent, expected_agent);
    assert_eq!(outbox.given_up(), 0);
    // every request, refused or not, carried the run's token to its log
    let requests = server.requests();
    assert!(requests.len() as u32 > state.refused_with_503 + state.refused_by_closing);
    for request in &requests {
        assert_eq!(
            request.headers.get("authorization").map(String::as_str),
            Some("Bearer secret-token"),
            "{request:?}"
        );
        assert_eq!(request.path, "/api/v1/runs/run-7/log");
    }
    assert_eq!(server.handler_failures(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// Abort, the slow heartbeat, and shutdown in local mode (the real binary)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Continue,
    Abort,
    Shutdown,
}

struct AbortState {
    mode: Mode,
    heartbeats: Vec<(Instant, HeartbeatRequest)>,
    log: SeqStore<LogLine>,
    results: Vec<StageResult>,
}

/// (pid, ppid, pgid, command name) of every process.
fn processes() -> Vec<(i32, i32, i32, String)> {
    let mut list = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return list;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        if fields.len() < 3 {
            continue;
        }
        let (Ok(ppid), Ok(pgid)) = (fields[1].parse(), fields[2].parse()) else {
            continue;
        };
        if fields[0] == "Z" {
            continue;
        }
        list.push((pid, ppid, pgid, name));
    }
    list
}

fn descendants(root: i32) -> Vec<(i32, i32, i32, String)> {
    let all = processes();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for process in all.iter().filter(|process| process.1 == parent) {
            frontier.push(process.0);
            found.push(process.clone());
        }
    }
    found
}

fn agent_binary() -> &'static str {
    env!("CARGO_BIN_EXE_vetting-agent")
}

/// Kills the agent if a test fails before it exits.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_kills_the_tool_group_heartbeats_slowly_and_shutdown_exits_0() {
    let state = Arc::new(Mutex::new(AbortState {
        mode: Mode::Continue,
        heartbeats: Vec::new(),
        log: SeqStore::default(),
        results: Vec::new(),
    }));
    let stress = StageRef {
        stage: Stage::CpuStress,
        attempt: 1,
    };
    let handler: Handler = {
        let state = Arc::clone(&state);
        Arc::new(move |request| {
            let mut state = state.lock().unwrap();
            let running = position("CPUStress", Some((Stage::CpuStress, 1)));
            match request.endpoint() {
                "hello" => ok(&running),
                "claim" => {
                    let mut params = StageParams::default();
                    params.cpu_stress.duration_secs = 600;
                    params.cpu_stress.memory_share = 0.01;
                    let mut claim = claim_response(running, params);
                    claim.heartbeat_interval_secs = 1;
                    claim.slow_heartbeat_interval_secs = 1;
                    ok(&claim)
                }
                "heartbeat" => {
                    let heartbeat: HeartbeatRequest = request.json();
                    state.heartbeats.push((Instant::now(), heartbeat));
                    let (cmd, position) = match state.mode {
                        Mode::Continue => (Command::Continue, running),
                        Mode::Abort => (
                            Command::Abort,
                            position("FailedHolding", Some((Stage::CpuStress, 1))),
                        ),
                        Mode::Shutdown => (Command::Shutdown, position("Released", None)),
                    };
                    ok(&HeartbeatResponse {
                        cmd,
                        position,
                        override_flags: Vec::new(),
                        acknowledged_findings: Vec::new(),
                    })
                }
                "log" => {
                    let batch: LogBatch = request.json();
                    ok(&state.log.apply(batch.lines, |line| line.seq))
                }
                "sensor" => {
                    let batch: SensorBatch = request.json();
                    let next = batch.samples.last().map_or(0, |s| s.seq + 1);
                    ok(&BatchAck {
                        next_seq: next,
                        stored: batch.samples.len() as u64,
                    })
                }
                "result" => {
                    state.results.push(request.json());
                    Reply::Json(
                        409,
                        serde_json::to_string(&ErrorBody {
                            error: "not expected".into(),
                            position: Some(position("FailedHolding", None)),
                        })
                        .unwrap(),
                    )
                }
                _ => Reply::Json(404, r#"{"error":"no such endpoint"}"#.into()),
            }
        })
    };
    let server = FakeOrchestrator::start(handler).await;
    let work = tempfile::tempdir().unwrap();
    let child = Process::new(agent_binary())
        .args([
            "run",
            "--url",
            &server.url,
            "--run",
            "r-abort",
            "--token",
            "t",
        ])
        .arg("--local")
        .arg("--work-dir")
        .arg(work.path())
        .arg("--cmdline-file")
        .arg("/nonexistent")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut agent = AgentProcess(child);
    let agent_pid = agent.0.id() as i32;

    // stress-ng runs in its own process group, below the agent
    let mut tool_group = 0;
    wait_for(
        "stress-ng to run under the agent",
        Duration::from_secs(60),
        || match descendants(agent_pid)
            .into_iter()
            .find(|process| process.3.starts_with("stress-ng"))
        {
            Some(process) => {
                tool_group = process.2;
                true
            }
            None => false,
        },
    )
    .await;
    assert_ne!(
        tool_group, agent_pid,
        "the tool has a process group of its own"
    );
    wait_for(
        "the group to have its workers",
        Duration::from_secs(30),
        || processes().iter().filter(|p| p.2 == tool_group).count() >= 2,
    )
    .await;
    // its output is streamed while it runs
    wait_for(
        "stress-ng output in the log",
        Duration::from_secs(30),
        || {
            state.lock().unwrap().log.items.iter().any(|line| {
                line.stream != LogStream::Agent
                    && line.text.contains("stress-ng")
                    && line.stage == Some(stress)
            })
        },
    )
    .await;
    assert!(
        state
            .lock()
            .unwrap()
            .heartbeats
            .iter()
            .any(|(_, heartbeat)| heartbeat.current == Some(stress))
    );

    state.lock().unwrap().mode = Mode::Abort;
    let aborted_at = Instant::now();
    wait_for(
        "every process of the tool's group to be gone",
        Duration::from_secs(30),
        || processes().iter().all(|process| process.2 != tool_group),
    )
    .await;
    // The agent stays up and keeps heartbeating, reporting no stage.
    wait_for(
        "slow heartbeats after the abort",
        Duration::from_secs(30),
        || {
            state
                .lock()
                .unwrap()
                .heartbeats
                .iter()
                .filter(|(at, heartbeat)| *at > aborted_at && heartbeat.current.is_none())
                .count()
                >= 3
        },
    )
    .await;
    assert!(
        agent.0.try_wait().unwrap().is_none(),
        "the agent must stay up while held"
    );
    assert!(
        state
            .lock()
            .unwrap()
            .log
            .items
            .iter()
            .any(|line| line.text.contains("holding")),
        "the hold is logged"
    );
    assert!(
        state.lock().unwrap().results.is_empty(),
        "an aborted stage posts no result"
    );

    state.lock().unwrap().mode = Mode::Shutdown;
    let mut exit = None;
    wait_for(
        "the agent to exit on shutdown",
        Duration::from_secs(30),
        || {
            exit = agent.0.try_wait().unwrap();
            exit.is_some()
        },
    )
    .await;
    assert!(
        exit.unwrap().success(),
        "local mode exits 0 on shutdown: {exit:?}"
    );
    // the log lines are numbered without gaps
    let state = state.lock().unwrap();
    for (index, line) in state.log.items.iter().enumerate() {
        assert_eq!(line.seq, index as u64);
    }
    assert_eq!(server.handler_failures(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// A run through the library: positions, artifacts before results, 409
// ---------------------------------------------------------------------------

struct RunState {
    log: SeqStore<LogLine>,
    sensors: SeqStore<vetting_probes::protocol::SensorSample>,
    results: Vec<StageResult>,
    gpu_conflicts: u32,
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Iperf3Server(Child);

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The stage after `stage` in this test's plan (GPU's result gets a 409).
fn next_after(stage: Stage) -> Option<Stage> {
    match stage {
        Stage::InventoryCheck => Some(Stage::Smart),
        Stage::Smart => Some(Stage::CpuStress),
        Stage::CpuStress => Some(Stage::Storage),
        Stage::Storage => Some(Stage::Network),
        Stage::Network => Some(Stage::Gpu),
        Stage::Gpu => Some(Stage::Psu),
        Stage::Psu => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_run_follows_positions_uploads_artifacts_first_and_obeys_a_409() {
    let port = free_port();
    let iperf = Iperf3Server(
        Process::new("iperf3")
            .args(["-s", "-B", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 must be installed"),
    );
    wait_for("the iperf3 server", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let disk = LoopDevice::new(25 * MIB, zeroed);
    let expected_disk = by_size(&disk, 1);

    let state = Arc::new(Mutex::new(RunState {
        log: SeqStore::default(),
        sensors: SeqStore::default(),
        results: Vec::new(),
        gpu_conflicts: 0,
    }));
    let first = position("InventoryCheck", Some((Stage::InventoryCheck, 1)));
    let handler: Handler = {
        let state = Arc::clone(&state);
        Arc::new(move |request| {
            let mut state = state.lock().unwrap();
            match request.endpoint() {
                "hello" => ok(&first),
                "claim" => {
                    let mut params = StageParams::default();
                    params.smart.run_short_self_test = true;
                    params.cpu_stress.duration_secs = 2;
                    params.cpu_stress.memory_share = 0.01;
                    params.storage.expected_disks = vec![expected_disk.clone()];
                    params.storage.max_secs_per_disk = 300;
                    params.network.iperf_host = Some("127.0.0.1".into());
                    params.network.iperf_port = Some(port);
                    params.network.duration_secs = 1;
                    ok(&claim_response(first.clone(), params))
                }
                "heartbeat" => {
                    let heartbeat: HeartbeatRequest = request.json();
                    ok(&HeartbeatResponse {
                        cmd: Command::Continue,
                        position: RunPosition {
                            state: heartbeat.current.map_or("InventoryCheck".to_string(), |c| {
                                c.stage.as_str().to_string()
                            }),
                            current: heartbeat.current,
                        },
                        override_flags: Vec::new(),
                        acknowledged_findings: Vec::new(),
                    })
                }
                "log" => {
                    let batch: LogBatch = request.json();
                    ok(&state.log.apply(batch.lines, |line| line.seq))
                }
                "sensor" => {
                    let batch: SensorBatch = request.json();
                    ok(&state.sensors.apply(batch.samples, |sample| sample.seq))
                }
                "artifact" => ok(&StoredArtifact {
                    name: request.query_value("name").unwrap_or_default(),
                    size_bytes: request.body.len() as u64,
                    sha256: Sha256::digest(&request.body)
                        .iter()
                        .map(|byte| format!("{byte:02x}"))
                        .collect(),
                }),
                "result" => {
                    let result: StageResult = request.json();
                    state.results.push(result.clone());
                    if result.stage == Stage::Gpu {
                        // the orchestrator moved on meanwhile: 409 with its position
                        state.gpu_conflicts += 1;
                        return Reply::Json(
                            409,
                            serde_json::to_string(&ErrorBody {
                                error: "GPU attempt 1 is not the current stage".into(),
                                position: Some(position("PSU", Some((Stage::Psu, 1)))),
                            })
                            .unwrap(),
                        );
                    }
                    let (next, cmd) = match next_after(result.stage) {
                        Some(stage) => (
                            position(stage.as_str(), Some((stage, 1))),
                            Command::Continue,
                        ),
                        None => (position("Completed", None), Command::Shutdown),
                    };
                    ok(&ResultResponse {
                        position: next,
                        verdict: result.verdict.clone(),
                        cmd,
                    })
                }
                _ => Reply::Json(404, r#"{"error":"no such endpoint"}"#.into()),
            }
        })
    };
    let server = FakeOrchestrator::start(handler).await;
    let work = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::local(&server.url, "r-run", "tok");
    config.work_dir = work.path().to_path_buf();
    config.disks = DiskSelection {
        allow_loop_devices: true,
        filter: vec![disk.name.clone()],
        surface_test: SurfaceTest::Auto,
    };
    // no IPMI device node here: point /dev at an empty folder
    let empty_dev = tempfile::tempdir().unwrap();
    config.dev_root = empty_dev.path().to_path_buf();
    let end = tokio::time::timeout(Duration::from_secs(300), run_loop::run(config))
        .await
        .expect("the run ends")
        .expect("the run loop runs");
    assert_eq!(end, RunEnd::Shutdown);
    drop(iperf);

    let state = state.lock().unwrap();
    let stages: Vec<Stage> = state.results.iter().map(|r| r.stage).collect();
    assert_eq!(
        stages,
        vec![
            Stage::InventoryCheck,
            Stage::Smart,
            Stage::CpuStress,
            Stage::Storage,
            Stage::Network,
            Stage::Gpu,
            Stage::Psu
        ]
    );
    let result = |stage: Stage| state.results.iter().find(|r| r.stage == stage).unwrap();
    let describe = |r: &StageResult| format!("{:?}: {}", r.outcome, reasons(&r.verdict));

    // InventoryCheck: the inventory, with the loop device listed as a disk
    let inventory = result(Stage::InventoryCheck);
    assert_eq!(
        inventory.outcome,
        Outcome::Passed,
        "{}",
        describe(inventory)
    );
    let listed: Inventory = serde_json::from_value(inventory.inventory.clone().unwrap()).unwrap();
    assert!(listed.cpus.threads > 0);
    assert!(
        listed
            .disks
            .iter()
            .any(|d| d.name == disk.name && d.transport.as_deref() == Some("loop"))
    );
    assert!(
        inventory
            .artifacts
            .iter()
            .any(|a| a.name == "inventory.json")
    );

    // SMART: nothing SMART-capable in this VM
    let smart = result(Stage::Smart);
    assert_eq!(smart.outcome, Outcome::Skipped, "{}", describe(smart));
    assert!(reasons(&smart.verdict).contains("no SMART-capable devices"));

    // CPUStress: real stress-ng, its YAML report judged
    let stress = result(Stage::CpuStress);
    assert_eq!(stress.outcome, Outcome::Passed, "{}", describe(stress));
    assert!(
        stress
            .artifacts
            .iter()
            .any(|a| a.name == "stress-ng.yaml" && a.tool.as_deref() == Some("stress-ng"))
    );
    // the evidence of the agent's own rules, for the orchestrator to re-judge
    for (name, tool) in [
        ("thermal-sidecar.json", "thermal-sidecar"),
        ("edac.json", "edac"),
        ("cpu-throttle.json", "cpu-throttle"),
    ] {
        assert!(
            stress
                .artifacts
                .iter()
                .any(|a| a.name == name && a.tool.as_deref() == Some(tool)),
            "{name}: {:?}",
            stress.artifacts
        );
    }
    assert!(
        stress
            .measurements
            .iter()
            .any(|m| m.name == "stress.cpu.bogo_ops_per_sec" && m.value > 0.0)
    );

    // Storage: the expected loop device, wipe-probed and surface-tested
    let storage = result(Stage::Storage);
    assert_eq!(storage.outcome, Outcome::Passed, "{}", describe(storage));
    let storage_artifacts: Vec<&str> = storage.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert!(storage_artifacts.contains(&format!("wipefs-{}.json", disk.name).as_str()));
    assert!(storage_artifacts.contains(&format!("badblocks-{}.txt", disk.name).as_str()));

    // Network: both directions against the real iperf3 server
    let network = result(Stage::Network);
    assert!(
        matches!(network.outcome, Outcome::Passed | Outcome::Warned),
        "{}",
        describe(network)
    );
    assert!(
        network
            .measurements
            .iter()
            .any(|m| m.name == "network.upload_bps" && m.value > 0.0)
    );
    assert!(
        network
            .measurements
            .iter()
            .any(|m| m.name == "network.download_bps" && m.value > 0.0)
    );
    let names: Vec<(&str, Option<&str>)> = network
        .artifacts
        .iter()
        .map(|a| (a.name.as_str(), a.tool.as_deref()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("iperf3-upload.json", Some("iperf3")),
            ("iperf3-download.json", Some("iperf3")),
            // the counters of the interface towards the orchestrator
            ("net-counters-lo.json", Some("net-counters")),
        ]
    );

    // GPU and PSU skip with their reasons; the GPU result's 409 sent the
    // agent on to the position it carried
    assert_eq!(state.gpu_conflicts, 1);
    let gpu = result(Stage::Gpu);
    assert_eq!(gpu.outcome, Outcome::Skipped);
    assert!(
        reasons(&gpu.verdict).contains("no NVIDIA GPU or driver"),
        "{}",
        describe(gpu)
    );
    let psu = result(Stage::Psu);
    assert_eq!(psu.outcome, Outcome::Skipped);
    assert!(
        reasons(&psu.verdict).contains("no BMC"),
        "{}",
        describe(psu)
    );

    // Every artifact a result names was uploaded (raw, for that stage and
    // attempt) before the result was posted; every log line was stored
    // before each result.
    let requests = server.requests();
    for (result_number, result) in state.results.iter().enumerate() {
        let result_index = requests
            .iter()
            .enumerate()
            .filter(|(_, r)| r.endpoint() == "result")
            .nth(result_number)
            .map(|(index, _)| index)
            .unwrap();
        for artifact in &result.artifacts {
            let upload = requests
                .iter()
                .position(|r| {
                    r.endpoint() == "artifact"
                        && r.query_value("name").as_deref() == Some(artifact.name.as_str())
                        && r.query_value("stage").as_deref() == Some(result.stage.as_str())
                        && r.query_value("attempt").as_deref() == Some("1")
                        && r.headers.get("content-type").map(String::as_str)
                            == Some("application/octet-stream")
                })
                .unwrap_or_else(|| panic!("{} was not uploaded", artifact.name));
            assert!(
                upload < result_index,
                "{} uploaded after its result",
                artifact.name
            );
        }
        let stage_lines_after = requests[result_index..]
            .iter()
            .filter(|r| r.endpoint() == "log")
            .flat_map(|r| r.json::<LogBatch>().lines)
            .filter(|line| line.stage.is_some_and(|s| s.stage == result.stage))
            .count();
        assert_eq!(
            stage_lines_after, 0,
            "{} log lines sent after its result",
            result.stage
        );
    }
    let upload = requests
        .iter()
        .find(|r| {
            r.endpoint() == "artifact"
                && r.query_value("name").as_deref() == Some("iperf3-upload.json")
        })
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&upload.body).unwrap();
    assert!(body.get("end").is_some(), "the raw iperf3 JSON is the body");
    assert!(requests.iter().all(|r| r.method == "POST"));
    for (index, line) in state.log.items.iter().enumerate() {
        assert_eq!(line.seq, index as u64);
    }
    assert!(
        state
            .log
            .items
            .iter()
            .any(|line| line.stage.is_some_and(|s| s.stage == Stage::Network)
                && line.text.starts_with("$ iperf3")),
        "the command lines are logged"
    );
    assert!(
        state
            .log
            .items
            .iter()
            .any(|line| line.stream == LogStream::Stderr
                && line.stage.is_some_and(|s| s.stage == Stage::CpuStress)),
        "tool output is logged"
    );
    assert_eq!(server.handler_failures(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// Storage safety gates on real loop devices
// ---------------------------------------------------------------------------

const MIB: u64 = 1024 * 1024;

/// A loop device over a file in a temp folder, detached on drop.
struct LoopDevice {
    device: PathBuf,
    name: String,
    _dir: tempfile::TempDir,
}

impl LoopDevice {
    fn new(size: u64, fill: impl FnOnce(&Path)) -> LoopDevice {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.img");
        std::fs::File::create(&file).unwrap().set_len(size).unwrap();
        fill(&file);
        let output = Process::new("losetup")
            .args(["-f", "--show"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let device = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
        let name = device.file_name().unwrap().to_string_lossy().into_owned();
        LoopDevice {
            device,
            name,
            _dir: dir,
        }
    }

    fn sha256(&self) -> String {
        let bytes = std::fs::read(&self.device).unwrap();
        format!("{:x}", Sha256::digest(bytes))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Process::new("losetup").arg("-d").arg(&self.device).status();
    }
}

fn with_gpt(file: &Path) {
    let mut sfdisk = Process::new("sfdisk")
        .arg("-q")
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\n,\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
}

fn with_random_data(file: &Path) {
    let size = std::fs::metadata(file).unwrap().len();
    let status = Process::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", file.display()))
        .arg("bs=1M")
        .arg(format!("count={}", size / MIB))
        .arg("conv=notrunc")
        .arg("status=none")
        .status()
        .unwrap();
    assert!(status.success());
}

fn with_pattern(file: &Path) {
    let size = std::fs::metadata(file).unwrap().len() as usize;
    let pattern: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    std::fs::write(file, pattern).unwrap();
}

fn zeroed(_: &Path) {}

struct StorageRun {
    report: StageReport,
    log: Vec<String>,
}

fn run_storage(
    devices: &[&LoopDevice],
    expected: Vec<ExpectedDisk>,
    override_wipe: bool,
    surface_test: SurfaceTest,
) -> StorageRun {
    run_storage_with(StorageSetup {
        acknowledged: override_wipe.then(Vec::new),
        surface_test,
        ..StorageSetup::new(devices, expected)
    })
}

/// What a Storage attempt runs with.
struct StorageSetup<'a> {
    devices: &'a [&'a LoopDevice],
    expected: Vec<ExpectedDisk>,
    /// `Some`: an attempt after an override that acknowledged these ids.
    acknowledged: Option<Vec<String>>,
    surface_test: SurfaceTest,
    /// A sysfs tree of the test's ([`FakeSysfs`]); else the real `/sys`.
    sys_root: Option<PathBuf>,
    /// The disks of the InventoryCheck snapshot (loop devices are added
    /// from sysfs when it does not name them).
    inventory: Vec<Disk>,
}

impl<'a> StorageSetup<'a> {
    fn new(devices: &'a [&'a LoopDevice], expected: Vec<ExpectedDisk>) -> Self {
        StorageSetup {
            devices,
            expected,
            acknowledged: None,
            surface_test: SurfaceTest::Auto,
            sys_root: None,
            inventory: Vec::new(),
        }
    }
}

fn run_storage_with(setup: StorageSetup) -> StorageRun {
    let StorageSetup {
        devices,
        expected,
        acknowledged,
        surface_test,
        sys_root,
        inventory,
    } = setup;
    let override_wipe = acknowledged.is_some();
    let work = tempfile::tempdir().unwrap();
    let outbox = Outbox::new(0, 1_000_000);
    let stage = StageRef {
        stage: Stage::Storage,
        attempt: if override_wipe { 2 } else { 1 },
    };
    let mut snapshot = Inventory::empty(chrono::Utc::now());
    snapshot.disks = inventory;
    let context = StageContext {
        stage,
        params: StageParams {
            storage: StorageParams {
                expected_disks: expected,
                max_secs_per_disk: 300,
                ssd_verify_share: 0.5,
                wipe_probe_samples: 64,
                override_wipe,
                acknowledged_findings: acknowledged.unwrap_or_default(),
            },
            ..StageParams::default()
        },
        thresholds: Thresholds::default(),
        local: LocalSettings {
            work_dir: work.path().to_path_buf(),
            disks: DiskSelection {
                allow_loop_devices: true,
                filter: devices.iter().map(|device| device.name.clone()).collect(),
                surface_test,
            },
            sys_root: sys_root.unwrap_or_else(|| PathBuf::from("/sys")),
            ..LocalSettings::default()
        },
        log: LogSink::new(outbox.clone(), Some(stage)),
        sensors: SensorSink::new(Outbox::new(0, 1000), Some(stage)),
        cancel: CancelToken::new(),
        // no real disk of this machine is considered: only the loop devices
        inventory: Some(snapshot),
    };
    let report = stages::run_stage(&context).expect("not cancelled");
    let log = outbox
        .peek_batch(usize::MAX, usize::MAX)
        .into_iter()
        .map(|line| line.text)
        .collect();
    StorageRun { report, log }
}

fn by_size(device: &LoopDevice, count: u32) -> ExpectedDisk {
    let sectors: u64 = std::fs::read_to_string(format!("/sys/block/{}/size", device.name))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    ExpectedDisk {
        size_bytes: Some(sectors * 512),
        count: Some(count),
        ..ExpectedDisk::default()
    }
}

fn reasons(verdict: &Verdict) -> String {
    verdict
        .reasons
        .iter()
        .map(|reason| format!("[{}] {}", reason.status, reason.message))
        .collect::<Vec<_>>()
        .join("\n")
}

fn artifact_names(report: &StageReport) -> Vec<(String, Option<String>)> {
    report
        .artifacts
        .iter()
        .map(|artifact| {
            let reference: ArtifactRef = artifact.reference();
            (reference.name, reference.tool)
        })
        .collect()
}

#[test]
fn a_partition_table_holds_the_run_and_nothing_is_written() {
    let disk = LoopDevice::new(21 * MIB, with_gpt);
    let before = disk.sha256();
    let run = run_storage(&[&disk], vec![by_size(&disk, 1)], false, SurfaceTest::Auto);
    assert_eq!(
        run.report.outcome,
        Outcome::Held,
        "{}",
        reasons(&run.report.verdict)
    );
    assert_eq!(run.report.hold_reason.as_deref(), Some("wipe_signatures"));
    let text = reasons(&run.report.verdict);
    assert!(text.contains("gpt") && text.contains(&disk.name), "{text}");
    assert!(text.contains("offset 0x200"), "{text}");
    assert_eq!(disk.sha256(), before, "the held disk was written");
    let names = artifact_names(&run.report);
    assert!(names.contains(&(format!("wipefs-{}.json", disk.name), Some("wipefs".into()))));
    assert!(!names.iter().any(|(name, _)| name.starts_with("badblocks")));
}

#[test]
fn data_without_a_signature_holds_and_the_override_runs_the_surface_test() {
    let disk = LoopDevice::new(22 * MIB, with_random_data);
    let before = disk.sha256();
    let expected = vec![by_size(&disk, 1)];
    let held = run_storage(&[&disk], expected.clone(), false, SurfaceTest::Auto);
    assert_eq!(
        held.report.outcome,
        Outcome::Held,
        "{}",
        reasons(&held.report.verdict)
    );
    assert_eq!(held.report.hold_reason.as_deref(), Some("unexpected_data"));
    assert!(reasons(&held.report.verdict).contains("hold data without a known signature"));
    assert_eq!(disk.sha256(), before, "the held disk was written");

    // the operator acknowledged: the surface test runs (badblocks here:
    // a loop device reports rotational=1)
    let overridden = run_storage_with(StorageSetup {
        acknowledged: Some(finding_ids(&held.report)),
        ..StorageSetup::new(&[&disk], expected)
    });
    let text = reasons(&overridden.report.verdict);
    assert_eq!(overridden.report.outcome, Outcome::Passed, "{text}");
    assert!(text.contains("override_wipe acknowledged"), "{text}");
    assert!(
        overridden.log.iter().any(
            |line| line.contains("surface test with badblocks") && line.contains("loop device")
        ),
        "the choice is logged: {:#?}",
        overridden.log
    );
    assert!(artifact_names(&overridden.report).contains(&(
        format!("badblocks-{}.txt", disk.name),
        Some("badblocks".into())
    )));
    assert_ne!(disk.sha256(), before, "badblocks -w rewrote the disk");
    // badblocks' output was streamed to the log as it ran
    assert!(
        overridden
            .log
            .iter()
            .any(|line| line.contains("Pass completed"))
    );
}

#[test]
fn only_the_expected_disk_is_written_and_an_unexpected_one_keeps_its_data() {
    let target = LoopDevice::new(23 * MIB, zeroed);
    let stranger = LoopDevice::new(19 * MIB, with_pattern);
    let stranger_before = stranger.sha256();
    let run = run_storage(
        &[&target, &stranger],
        vec![by_size(&target, 1)],
        false,
        SurfaceTest::Auto,
    );
    let text = reasons(&run.report.verdict);
    assert_eq!(run.report.outcome, Outcome::Passed, "{text}");
    assert!(
        text.contains(&format!("{}: surface test passed", target.name)),
        "{text}"
    );
    assert!(
        text.contains(&stranger.name) && text.contains("unexpected"),
        "the unexpected disk is reported: {text}"
    );
    assert_eq!(
        stranger.sha256(),
        stranger_before,
        "the unexpected disk was written"
    );
    let names = artifact_names(&run.report);
    assert!(names.contains(&(
        format!("badblocks-{}.txt", target.name),
        Some("badblocks".into())
    )));
    assert!(!names.iter().any(|(name, _)| name.contains(&stranger.name)));
}

#[test]
fn fio_verifies_a_share_of_the_disk() {
    let target = LoopDevice::new(24 * MIB, zeroed);
    let run = run_storage(
        &[&target],
        vec![by_size(&target, 1)],
        false,
        SurfaceTest::Fio,
    );
    let text = reasons(&run.report.verdict);
    assert_eq!(run.report.outcome, Outcome::Passed, "{text}");
    assert!(
        artifact_names(&run.report)
            .contains(&(format!("fio-{}.json", target.name), Some("fio".into())))
    );
    let verified = run
        .report
        .measurements
        .iter()
        .find(|m| m.name == format!("storage.{}.fio_verified_bytes", target.name))
        .unwrap();
    assert_eq!(verified.value, (12 * MIB) as f64);
}

#[test]
fn a_wrong_count_refuses_every_matching_disk() {
    let first = LoopDevice::new(18 * MIB, with_pattern);
    let second = LoopDevice::new(18 * MIB, with_pattern);
    let before = (first.sha256(), second.sha256());
    let run = run_storage(
        &[&first, &second],
        vec![by_size(&first, 1)],
        false,
        SurfaceTest::Auto,
    );
    let text = reasons(&run.report.verdict);
    assert_eq!(run.report.outcome, Outcome::Failed, "{text}");
    assert!(
        text.contains("expected 1") && text.contains("found 2"),
        "{text}"
    );
    assert_eq!((first.sha256(), second.sha256()), before);
    assert!(run.report.artifacts.is_empty(), "not even probed");
}

#[test]
fn no_expected_disks_skip_the_stage() {
    let disk = LoopDevice::new(17 * MIB, with_pattern);
    let before = disk.sha256();
    let run = run_storage(&[&disk], Vec::new(), false, SurfaceTest::Auto);
    assert_eq!(run.report.outcome, Outcome::Skipped);
    assert_eq!(run.report.verdict.status, Status::Skip);
    assert!(reasons(&run.report.verdict).contains("no expected disks"));
    assert_eq!(disk.sha256(), before);
}

#[test]
fn a_removable_disk_from_the_inventory_is_never_a_candidate() {
    let size = 960_197_124_096;
    let fixed = Disk {
        name: "sda".into(),
        model: Some("MZ7LH960HAJR".into()),
        serial: Some("S1".into()),
        size_bytes: size,
        transport: Some("sata".into()),
        ..Disk::default()
    };
    let usb = Disk {
        name: "sdb".into(),
        model: Some("MZ7LH960HAJR".into()),
        serial: Some("S2".into()),
        size_bytes: size,
        transport: Some("usb".into()),
        removable: true,
        ..Disk::default()
    };
    let mut inventory = Inventory::empty(chrono::Utc::now());
    inventory.disks = vec![fixed, usb];
    let expected = ExpectedDisk {
        model: Some("MZ7LH960*".into()),
        size_bytes: Some(960_000_000_000),
        count: Some(1),
        ..ExpectedDisk::default()
    };
    let decision = stages::allowlist::decide(&inventory.disks, &[expected]);
    let candidates: Vec<&str> = decision
        .candidates
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(candidates, vec!["sda"]);
    assert!(decision.problems.is_empty(), "{:?}", decision.problems);
    let refused: BTreeMap<&str, &str> = decision
        .refused
        .iter()
        .map(|r| (r.disk.name.as_str(), r.reason.as_str()))
        .collect();
    assert!(refused["sdb"].contains("removable"));
    // named by serial, it is still not written, and the stage fails
    let by_serial = stages::allowlist::decide(
        &inventory.disks,
        &[ExpectedDisk {
            serial: Some("S2".into()),
            ..ExpectedDisk::default()
        }],
    );
    assert!(by_serial.candidates.is_empty());
    assert!(!by_serial.problems.is_empty());
}

// ---------------------------------------------------------------------------
// Transports, identity at write time and acknowledged findings
// ---------------------------------------------------------------------------

/// Every byte 0xff: clean for the wipe probe (uniform blocks), and
/// changed by any surface test (badblocks -w ends on a pattern of zeros),
/// so the device's hash tells whether it was written.
fn ones(file: &Path) {
    let size = std::fs::metadata(file).unwrap().len() as usize;
    std::fs::write(file, vec![0xffu8; size]).unwrap();
}

/// The ids of a held report's findings.
fn finding_ids(report: &StageReport) -> Vec<String> {
    report
        .wipe_findings
        .iter()
        .map(|finding| finding.id.clone())
        .collect()
}

/// Where a disk sits in a sysfs tree, which gives its transport.
const ON_USB: &str = "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0";
const ON_MMC: &str = "platform/fe320000.sdhci/mmc_host/mmc0/mmc0:0001";
const ON_SATA: &str = "pci0000:00/0000:00:17.0/ata3/host2/target2:0:0/2:0:0:0";
const ON_NOTHING_KNOWN: &str = "platform/some-bus/dev0";

/// A sysfs tree that describes a real loop device as another disk:
/// `block/loopN` links to `devices/PLACE/block/loopN`, which has the real
/// device's `dev`, `size` and `loop/backing_file`, the `removable` flag
/// given, and a `device` link to `devices/PLACE` holding a model and, when
/// given, a serial. Writes still go to the real `/dev/loopN`.
struct FakeSysfs {
    root: tempfile::TempDir,
}

impl FakeSysfs {
    fn new() -> FakeSysfs {
        FakeSysfs {
            root: tempfile::tempdir().unwrap(),
        }
    }

    fn describe(
        &self,
        device: &LoopDevice,
        place: &str,
        serial: Option<&str>,
        removable: bool,
    ) -> &Self {
        let real = PathBuf::from("/sys/block").join(&device.name);
        let parent = self.root.path().join("devices").join(place);
        let block = parent.join("block").join(&device.name);
        std::fs::create_dir_all(block.join("loop")).unwrap();
        std::fs::create_dir_all(block.join("queue")).unwrap();
        for file in ["dev", "size", "loop/backing_file"] {
            std::fs::copy(real.join(file), block.join(file)).unwrap();
        }
        std::fs::write(block.join("queue/rotational"), "1\n").unwrap();
        std::fs::write(
            block.join("removable"),
            if removable { "1\n" } else { "0\n" },
        )
        .unwrap();
        std::fs::write(parent.join("model"), "TEST DISK 1000\n").unwrap();
        if let Some(serial) = serial {
            std::fs::write(parent.join("serial"), format!("{serial}\n")).unwrap();
        }
        std::os::unix::fs::symlink(&parent, block.join("device")).unwrap();
        let listed = self.root.path().join("block");
        std::fs::create_dir_all(&listed).unwrap();
        std::os::unix::fs::symlink(&block, listed.join(&device.name)).unwrap();
        self
    }

    fn path(&self) -> PathBuf {
        self.root.path().to_path_buf()
    }
}

fn by_serial(serial: &str) -> ExpectedDisk {
    ExpectedDisk {
        serial: Some(serial.into()),
        ..ExpectedDisk::default()
    }
}

/// A Storage run over one loop device that `sysfs` describes, with `expected`.
fn run_described(disk: &LoopDevice, sysfs: &FakeSysfs, expected: Vec<ExpectedDisk>) -> StorageRun {
    run_storage_with(StorageSetup {
        sys_root: Some(sysfs.path()),
        ..StorageSetup::new(&[disk], expected)
    })
}

#[test]
fn usb_and_mmc_disks_are_never_written_even_when_named_and_not_removable() {
    for (place, why) in [(ON_USB, "on USB"), (ON_MMC, "an MMC/SD card")] {
        let disk = LoopDevice::new(16 * MIB, ones);
        let before = disk.sha256();
        let sysfs = FakeSysfs::new();
        sysfs.describe(&disk, place, Some("PLUGGED-1"), false);
        for expected in [by_serial("PLUGGED-1"), by_size(&disk, 1)] {
            let run = run_described(&disk, &sysfs, vec![expected.clone()]);
            let text = reasons(&run.report.verdict);
            assert_eq!(run.report.outcome, Outcome::Failed, "{why}: {text}");
            assert!(
                text.contains(&disk.name) && text.contains(why),
                "{why}, {expected:?}: {text}"
            );
            assert!(run.report.artifacts.is_empty(), "{why}: not even probed");
            assert_eq!(disk.sha256(), before, "{why}: the disk was written");
        }
    }
}

#[test]
fn a_removable_disk_alone_is_never_written() {
    let disk = LoopDevice::new(16 * MIB, ones);
    let before = disk.sha256();
    let sysfs = FakeSysfs::new();
    sysfs.describe(&disk, ON_SATA, Some("CARD-1"), true);
    let run = run_described(&disk, &sysfs, vec![by_serial("CARD-1")]);
    let text = reasons(&run.report.verdict);
    assert_eq!(run.report.outcome, Outcome::Failed, "{text}");
    assert!(text.contains("removable"), "{text}");
    assert_eq!(disk.sha256(), before, "the removable disk was written");
}

#[test]
fn an_unknown_transport_is_written_only_when_named_by_serial() {
    let disk = LoopDevice::new(16 * MIB, ones);
    let before = disk.sha256();
    let sysfs = FakeSysfs::new();
    sysfs.describe(&disk, ON_NOTHING_KNOWN, Some("ODD-1"), false);
    let by_model_and_size = ExpectedDisk {
        model: Some("TEST DISK*".into()),
        ..by_size(&disk, 1)
    };
    let refused = run_described(&disk, &sysfs, vec![by_model_and_size]);
    let text = reasons(&refused.report.verdict);
    assert_eq!(refused.report.outcome, Outcome::Failed, "{text}");
    assert!(text.contains("transport unknown"), "{text}");
    assert_eq!(
        disk.sha256(),
        before,
        "written although named by model and size"
    );

    let named = run_described(&disk, &sysfs, vec![by_serial("ODD-1")]);
    let text = reasons(&named.report.verdict);
    assert_eq!(named.report.outcome, Outcome::Passed, "{text}");
    assert_ne!(disk.sha256(), before, "named by serial, it is tested");
}

#[test]
fn a_disk_swapped_since_the_inventory_is_never_written() {
    let disk = LoopDevice::new(16 * MIB, ones);
    let before = disk.sha256();
    // the inventory saw serial ORIGINAL under this name; the disk there now
    // is another one
    let sysfs = FakeSysfs::new();
    sysfs.describe(&disk, ON_SATA, Some("SWAPPED-IN"), false);
    let snapshot = Disk {
        name: disk.name.clone(),
        model: Some("TEST DISK 1000".into()),
        serial: Some("ORIGINAL".into()),
        size_bytes: by_size(&disk, 1).size_bytes.unwrap(),
        transport: Some("sata".into()),
        rotational: Some(true),
        ..Disk::default()
    };
    let run = run_storage_with(StorageSetup {
        sys_root: Some(sysfs.path()),
        inventory: vec![snapshot.clone()],
        ..StorageSetup::new(&[&disk], vec![by_serial("ORIGINAL")])
    });
    let text = reasons(&run.report.verdict);
    assert_eq!(run.report.outcome, Outcome::Failed, "{text}");
    assert!(
        text.contains("not the allowlisted disk") && text.contains("ORIGINAL → SWAPPED-IN"),
        "{text}"
    );
    assert!(run.report.artifacts.is_empty(), "not even probed: {text}");
    assert_eq!(disk.sha256(), before, "the swapped-in disk was written");

    // the same disk still there is tested
    let same = FakeSysfs::new();
    same.describe(&disk, ON_SATA, Some("ORIGINAL"), false);
    let run = run_storage_with(StorageSetup {
        sys_root: Some(same.path()),
        inventory: vec![snapshot],
        ..StorageSetup::new(&[&disk], vec![by_serial("ORIGINAL")])
    });
    let text = reasons(&run.report.verdict);
    assert_eq!(run.report.outcome, Outcome::Passed, "{text}");
    assert_ne!(disk.sha256(), before);
}

#[test]
fn an_override_writes_only_what_it_acknowledged() {
    let table = LoopDevice::new(25 * MIB, with_gpt);
    let data = LoopDevice::new(26 * MIB, with_random_data);
    let before = (table.sha256(), data.sha256());
    let expected = vec![by_size(&table, 1), by_size(&data, 1)];
    let held = run_storage_with(StorageSetup::new(&[&table, &data], expected.clone()));
    assert_eq!(held.report.outcome, Outcome::Held);
    assert_eq!(held.report.hold_reason.as_deref(), Some("wipe_signatures"));
    let ids = finding_ids(&held.report);
    // the held verdict names every finding by its id (what the operator
    // acknowledges)
    let held_text = reasons(&held.report.verdict);
    for id in &ids {
        assert!(
            held_text.contains(&format!("(finding {id})")),
            "{held_text}"
        );
    }
    let of = |disk: &LoopDevice| -> Vec<String> {
        held.report
            .wipe_findings
            .iter()
            .filter(|finding| finding.disk == disk.name)
            .map(|finding| finding.id.clone())
            .collect()
    };
    let (table_ids, data_ids) = (of(&table), of(&data));
    assert!(
        table_ids.iter().any(|id| id.contains("/gpt@0x200")),
        "{ids:?}"
    );
    assert!(
        data_ids.iter().all(|id| id.contains("/unexpected_data@0x")) && data_ids.len() == 1,
        "{ids:?}"
    );
    // the same disks give the same ids on the next attempt
    let again = run_storage_with(StorageSetup::new(&[&table, &data], expected.clone()));
    assert_eq!(finding_ids(&again.report), ids);

    // only the partition table acknowledged: the stage holds again and
    // neither disk is written
    let partial = run_storage_with(StorageSetup {
        acknowledged: Some(table_ids.clone()),
        ..StorageSetup::new(&[&table, &data], expected.clone())
    });
    let text = reasons(&partial.report.verdict);
    assert_eq!(partial.report.outcome, Outcome::Held, "{text}");
    assert_eq!(
        partial.report.hold_reason.as_deref(),
        Some("unexpected_data")
    );
    assert!(
        text.contains("not acknowledged by the override") && text.contains(&data_ids[0]),
        "{text}"
    );
    assert_eq!(
        (table.sha256(), data.sha256()),
        before,
        "written without acknowledgement"
    );
    // a blanket override (no ids) acknowledges nothing
    let blanket = run_storage(&[&table, &data], expected.clone(), true, SurfaceTest::Auto);
    assert_eq!(blanket.report.outcome, Outcome::Held);
    assert_eq!((table.sha256(), data.sha256()), before);

    // everything acknowledged: both are tested
    let full = run_storage_with(StorageSetup {
        acknowledged: Some(ids.clone()),
        ..StorageSetup::new(&[&table, &data], expected)
    });
    let text = reasons(&full.report.verdict);
    assert_eq!(full.report.outcome, Outcome::Passed, "{text}");
    assert!(text.contains("override_wipe acknowledged"), "{text}");
    assert_ne!(table.sha256(), before.0);
    assert_ne!(data.sha256(), before.1);
}

#[test]
fn a_signature_that_appeared_after_the_override_holds_again() {
    let disk = LoopDevice::new(27 * MIB, with_random_data);
    let expected = vec![by_size(&disk, 1)];
    let held = run_storage_with(StorageSetup::new(&[&disk], expected.clone()));
    assert_eq!(held.report.hold_reason.as_deref(), Some("unexpected_data"));
    let acknowledged = finding_ids(&held.report);
    // a partition table is written after the operator looked
    let mut sfdisk = Process::new("sfdisk")
        .arg("-q")
        .arg(&disk.device)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\n,\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let before = disk.sha256();
    let run = run_storage_with(StorageSetup {
        acknowledged: Some(acknowledged),
        ..StorageSetup::new(&[&disk], expected)
    });
    let text = reasons(&run.report.verdict);
    assert_eq!(run.report.outcome, Outcome::Held, "{text}");
    assert_eq!(run.report.hold_reason.as_deref(), Some("wipe_signatures"));
    assert!(text.contains("/gpt@0x200"), "{text}");
    assert_eq!(
        disk.sha256(),
        before,
        "the new signature was not acknowledged"
    );
}

#[test]
fn the_tools_get_the_by_id_link_that_names_the_disk() {
    let disk = LoopDevice::new(16 * MIB, ones);
    let other = LoopDevice::new(17 * MIB, ones);
    let sysfs = FakeSysfs::new();
    sysfs.describe(&disk, ON_SATA, Some("S1-BYID"), false);
    // a /dev with udev's links: one names the serial but is another
    // device, one names it and is this one
    let dev = tempfile::tempdir().unwrap();
    let by_id = dev.path().join("disk/by-id");
    std::fs::create_dir_all(&by_id).unwrap();
    std::os::unix::fs::symlink(&disk.device, dev.path().join(&disk.name)).unwrap();
    std::os::unix::fs::symlink(&other.device, by_id.join("ata-A_DECOY_S1-BYID")).unwrap();
    std::os::unix::fs::symlink(&disk.device, by_id.join("ata-TEST_DISK_S1-BYID")).unwrap();
    let allowlisted = stages::storage::visible_disks(&StageContext {
        stage: StageRef {
            stage: Stage::Storage,
            attempt: 1,
        },
        params: StageParams::default(),
        thresholds: Thresholds::default(),
        local: LocalSettings {
            disks: DiskSelection {
                allow_loop_devices: true,
                filter: vec![disk.name.clone()],
                surface_test: SurfaceTest::Auto,
            },
            sys_root: sysfs.path(),
            dev_root: dev.path().to_path_buf(),
            ..LocalSettings::default()
        },
        log: LogSink::new(Outbox::new(0, 1000), None),
        sensors: SensorSink::new(Outbox::new(0, 1000), None),
        cancel: CancelToken::new(),
        inventory: Some(Inventory::empty(chrono::Utc::now())),
    });
    assert_eq!(allowlisted.len(), 1, "{allowlisted:?}");
    assert_eq!(allowlisted[0].serial.as_deref(), Some("S1-BYID"));
    assert_eq!(allowlisted[0].transport.as_deref(), Some("sata"));
    let pinned = stages::identity::pin(&allowlisted[0], &sysfs.path(), dev.path()).unwrap();
    assert_eq!(pinned.path, by_id.join("ata-TEST_DISK_S1-BYID"));
    // the name now leads to another device: refused
    std::fs::remove_file(dev.path().join(&disk.name)).unwrap();
    std::os::unix::fs::symlink(&other.device, dev.path().join(&disk.name)).unwrap();
    let error = stages::identity::pin(&allowlisted[0], &sysfs.path(), dev.path()).unwrap_err();
    assert!(error.to_string().contains("but sysfs lists"), "{error}");
}
