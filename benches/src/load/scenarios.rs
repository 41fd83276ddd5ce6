//! The scenarios of `vetting-load`: each starts the server process(es),
//! drives them from this process, reads the server's CPU time and memory
//! from `/proc`, and prints what it measured. Targets are shown next to
//! the figures, never asserted.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sea_orm::ConnectionTrait;
use vetting_agent::client::Client;
use vetting_core::clock::SystemClock;
use vetting_core::orchestrator::Orchestrator;

use super::agents::{self, AgentReport, Phases, Traffic};
use super::procfs;
use super::server::{Seeded, harness_config};
use super::stats::{self, EndpointSummary, Recorder};
use super::verify::{self, Integrity};

/// What every scenario needs to know.
#[derive(Debug, Clone)]
pub struct Harness {
    pub server_cpu: usize,
    pub load_cpu: usize,
    /// A PostgreSQL admin URL (a fresh database per server), or SQLite.
    pub postgres: Option<String>,
    pub bcrypt_cost: u32,
    /// Where the data folders go.
    pub work_dir: PathBuf,
    pub keep: bool,
}

impl Harness {
    pub fn database_name(&self) -> &'static str {
        if self.postgres.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    }
}

/// A server process of the harness.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pub pid: u32,
    pub url: String,
    pub seeded: Option<Seeded>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
}

impl ServerProcess {
    fn spawn(mut command: Command, log: &Path) -> anyhow::Result<(Child, String)> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .context("starting the server process")?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("READY ") {
                        return Ok((child, url.trim().to_string()));
                    }
                }
                Some(Err(error)) => return Err(error).context("reading the server's stdout"),
                None => {
                    let _ = child.wait();
                    let tail = std::fs::read_to_string(log).unwrap_or_default();
                    let tail: String = tail
                        .lines()
                        .rev()
                        .take(20)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    bail!("the server process ended before it was ready:\n{tail}");
                }
            }
        }
    }

    /// The orchestrator with `hosts` seeded runs, in a new data folder.
    pub async fn orchestrator(harness: &Harness, hosts: usize) -> anyhow::Result<ServerProcess> {
        let data_dir = harness
            .work_dir
            .join(format!("server-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let database_url = match &harness.postgres {
            Some(admin) => Some(fresh_postgres_database(admin).await?),
            None => None,
        };
        let seeded_file = data_dir.join("seeded.json");
        let mut command = Command::new(std::env::current_exe().context("locating this binary")?);
        command
            .arg("serve")
            .args(["--cpu", &harness.server_cpu.to_string()])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--hosts", &hosts.to_string()])
            .args(["--bcrypt-cost", &harness.bcrypt_cost.to_string()])
            .arg("--seeded-file")
            .arg(&seeded_file);
        if let Some(url) = &database_url {
            command.args(["--database-url", url]);
        }
        let (child, url) = ServerProcess::spawn(command, &data_dir.join("server.log"))?;
        let text = std::fs::read_to_string(&seeded_file)
            .with_context(|| format!("reading {}", seeded_file.display()))?;
        let seeded: Seeded = serde_json::from_str(&text).context("parsing the seeded runs")?;
        Ok(ServerProcess {
            pid: child.id(),
            child,
            url,
            seeded: Some(seeded),
            data_dir: Some(data_dir),
            database_url,
        })
    }

    /// The bare axum baseline.
    pub fn bare(harness: &Harness) -> anyhow::Result<ServerProcess> {
        let mut command = Command::new(std::env::current_exe().context("locating this binary")?);
        command
            .arg("bare")
            .args(["--cpu", &harness.server_cpu.to_string()]);
        let log = harness
            .work_dir
            .join(format!("bare-{}-{}.log", std::process::id(), unique()));
        let (child, url) = ServerProcess::spawn(command, &log)?;
        Ok(ServerProcess {
            pid: child.id(),
            child,
            url,
            seeded: None,
            data_dir: None,
            database_url: None,
        })
    }

    pub fn cpu_micros(&self) -> u64 {
        procfs::cpu_micros(self.pid).unwrap_or(0)
    }

    pub fn peak_rss_kib(&self) -> u64 {
        procfs::status_kib(self.pid, "VmHWM").unwrap_or(0)
    }

    pub fn rss_kib(&self) -> u64 {
        procfs::status_kib(self.pid, "VmRSS").unwrap_or(0)
    }

    /// SIGTERM, then waits (SIGKILL after 20 s).
    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Removes the data folder (unless kept).
    pub fn clean_up(&self, harness: &Harness) {
        if !harness.keep
            && let Some(dir) = &self.data_dir
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// The orchestrator over the same store, for counting what it holds
    /// (after the server stopped).
    pub async fn open_store(&self, hosts: usize) -> anyhow::Result<Orchestrator> {
        let data_dir = self.data_dir.clone().context("not an orchestrator")?;
        let config = harness_config(data_dir, self.database_url.clone(), hosts);
        Orchestrator::open(config, Arc::new(SystemClock))
            .await
            .context("opening the store to count what it holds")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn unique() -> u64 {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    (nanos << 8) | (COUNTER.fetch_add(1, Ordering::SeqCst) as u64 & 0xff)
}

async fn fresh_postgres_database(admin: &str) -> anyhow::Result<String> {
    let name = format!("vetting_load_{}", unique());
    let connection = sea_orm::Database::connect(admin)
        .await
        .context("connecting to PostgreSQL")?;
    connection
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .context("creating the database")?;
    let _ = connection.close().await;
    let base = admin
        .rsplit_once('/')
        .map_or(admin, |(base, _)| base)
        .to_string();
    Ok(format!("{base}/{name}"))
}

/// The PostgreSQL server processes (postmaster and backends), so they can
/// be pinned to the server core and their CPU counted.
pub fn postgres_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "postgres")
        })
        .collect()
}

/// Pins every PostgreSQL process to `cpu` (new backends inherit the
/// postmaster's affinity).
pub fn pin_postgres(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_err() {
        return;
    }
    for pid in postgres_pids() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(pid as i32), &set);
    }
}

/// CPU time of every PostgreSQL process alive now, in µs (backends that
/// exited in between are not counted: the harness keeps its connections).
pub fn postgres_cpu_micros() -> u64 {
    postgres_pids()
        .into_iter()
        .map(|pid| procfs::cpu_micros(pid).unwrap_or(0))
        .sum()
}

// ---------------------------------------------------------------- idle

/// Idle memory: the orchestrator with no host, after `settle`.
pub async fn idle(harness: &Harness, settle: Duration) -> anyhow::Result<(u64, u64)> {
    let mut server = ServerProcess::orchestrator(harness, 0).await?;
    tokio::time::sleep(settle).await;
    let rss = server.rss_kib();
    let hwm = server.peak_rss_kib();
    server.stop();
    server.clean_up(harness);
    println!(
        "idle orchestrator ({}): RSS {:.1} MiB, peak {:.1} MiB after {} s   [target: < 30 MB]",
        harness.database_name(),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        settle.as_secs()
    );
    Ok((rss, hwm))
}

// ---------------------------------------------------------- heartbeats

/// One closed-loop heartbeat measurement.
#[derive(Debug, Clone)]
pub struct Throughput {
    pub summary: EndpointSummary,
    pub cpu_us_per_request: f64,
    pub db_cpu_us_per_request: f64,
}

async fn closed_loop(
    server: &ServerProcess,
    runs: Vec<(String, String)>,
    warmup: Duration,
    duration: Duration,
    postgres: bool,
) -> anyhow::Result<Throughput> {
    let recorder = Arc::new(Recorder::new());
    let until = Instant::now() + warmup + duration;
    let mut tasks = Vec::new();
    for (run_id, token) in runs {
        let client = Client::new(&server.url, &run_id, &token, Duration::from_secs(30))?;
        tasks.push(tokio::spawn(agents::heartbeat_loop(
            client,
            recorder.clone(),
            until,
        )));
    }
    tokio::time::sleep(warmup).await;
    let from = Instant::now();
    let cpu_before = server.cpu_micros();
    let db_before = if postgres { postgres_cpu_micros() } else { 0 };
    tokio::time::sleep(duration).await;
    let to = Instant::now();
    let cpu_after = server.cpu_micros();
    let db_after = if postgres { postgres_cpu_micros() } else { 0 };
    for task in tasks {
        let _ = task.await;
    }
    let summary = recorder
        .summary(from, to)
        .into_iter()
        .find(|s| s.endpoint == "heartbeat")
        .context("no heartbeat was answered")?;
    let requests = summary.requests.max(1) as f64;
    for (failure, count) in recorder.failures() {
        println!("    failures: {count} × {failure}");
    }
    Ok(Throughput {
        cpu_us_per_request: cpu_after.saturating_sub(cpu_before) as f64 / requests,
        db_cpu_us_per_request: db_after.saturating_sub(db_before) as f64 / requests,
        summary,
    })
}

/// Authenticated heartbeats at `concurrency`, then the bare axum baseline
/// with the same client and pinning.
pub async fn heartbeats(
    harness: &Harness,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<(Throughput, Throughput)> {
    let warmup = Duration::from_secs(2);
    let mut server = ServerProcess::orchestrator(harness, concurrency).await?;
    if harness.postgres.is_some() {
        pin_postgres(harness.server_cpu);
    }
    let runs: Vec<(String, String)> = server
        .seeded
        .as_ref()
        .map(|s| {
            s.runs
                .iter()
                .map(|r| (r.run_id.clone(), r.token.clone()))
                .collect()
        })
        .unwrap_or_default();
    let ours = closed_loop(
        &server,
        runs.clone(),
        warmup,
        duration,
        harness.postgres.is_some(),
    )
    .await?;
    server.stop();
    server.clean_up(harness);

    let mut bare = ServerProcess::bare(harness)?;
    let baseline = closed_loop(&bare, runs, warmup, duration, false).await?;
    bare.stop();

    println!(
        "authenticated heartbeats, concurrency {concurrency}, {} s ({}):",
        duration.as_secs(),
        harness.database_name()
    );
    println!(
        "  {:<22} {:>9} {:>8} {:>8} {:>8} {:>10} {:>8}",
        "server", "req/s", "p50 ms", "p99 ms", "max ms", "CPU µs/req", "failed"
    );
    for (name, t) in [("vetting", &ours), ("bare axum (baseline)", &baseline)] {
        println!(
            "  {:<22} {:>9.0} {:>8} {:>8} {:>8} {:>10.0} {:>8}",
            name,
            t.summary.per_second,
            stats::ms(t.summary.p50),
            stats::ms(t.summary.p99),
            stats::ms(t.summary.max),
            t.cpu_us_per_request,
            t.summary.failures
        );
    }
    if harness.postgres.is_some() {
        println!(
            "  PostgreSQL CPU: {:.0} µs per heartbeat (on the server core, not in the figure above)",
            ours.db_cpu_us_per_request
        );
    }
    println!(
        "  ratio to baseline: {:.2}   [targets: >= 2500 req/s, p99 < 50 ms, < 400 µs CPU, ratio >= 0.5]",
        ours.summary.per_second / baseline.summary.per_second.max(1e-9)
    );
    Ok((ours, baseline))
}

// --------------------------------------------------------------- hosts

/// What a run of N simulated hosts measured.
#[derive(Debug, Clone)]
pub struct HostsRun {
    pub hosts: usize,
    pub claimed: usize,
    pub claim_phase: Duration,
    pub claim: Option<EndpointSummary>,
    pub hello: Option<EndpointSummary>,
    pub window: Duration,
    pub endpoints: Vec<EndpointSummary>,
    pub cpu_us_per_request: f64,
    pub db_cpu_us_per_request: f64,
    pub server_cpu_share: f64,
    pub peak_rss_kib: u64,
    pub rss_before_kib: u64,
    pub integrity: Integrity,
    pub completed_runs: usize,
    pub failures: Vec<(String, u64)>,
    /// Per second of the window: (requests started on the log endpoint,
    /// max latency in µs of any agent endpoint).
    pub timeline: Vec<(u64, u32)>,
}

impl HostsRun {
    /// The worst p99 of the agent endpoints the target names (claim and
    /// hello apart).
    pub fn worst_p99(&self) -> Duration {
        self.endpoints
            .iter()
            .map(|s| s.p99)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    pub fn failed_requests(&self) -> u64 {
        self.endpoints.iter().map(|s| s.failures).sum()
    }

    /// Whether it held: every agent claimed, p99 under 50 ms on every
    /// agent endpoint, nothing failed, lost or duplicated.
    pub fn held(&self) -> bool {
        self.claimed == self.hosts
            && self.worst_p99() < Duration::from_millis(50)
            && self.failed_requests() == 0
            && self.integrity.log_lines.clean()
            && self.integrity.readings.clean()
            && self.integrity.log_lines.unacknowledged == 0
            && self.integrity.readings.unacknowledged == 0
    }
}

/// N simulated hosts with the realistic traffic for `duration`.
pub async fn hosts(
    harness: &Harness,
    hosts: usize,
    duration: Duration,
    traffic: &Traffic,
) -> anyhow::Result<HostsRun> {
    Ok(hosts_watched(harness, hosts, duration, traffic, None)
        .await?
        .0)
}

/// [`hosts`], with `runs watch` processes following some of the runs
/// from the start of the window (`super::watch`).
pub async fn hosts_watched(
    harness: &Harness,
    hosts: usize,
    duration: Duration,
    traffic: &Traffic,
    mut watchers: Option<&mut super::watch::Watchers>,
) -> anyhow::Result<(HostsRun, Option<super::watch::WatchCheck>)> {
    let mut server = ServerProcess::orchestrator(harness, hosts).await?;
    if harness.postgres.is_some() {
        pin_postgres(harness.server_cpu);
    }
    let seeded = server.seeded.clone().context("no seeded runs")?;
    let rss_before_kib = server.rss_kib();
    let recorder = Arc::new(Recorder::new());
    let claimed = Arc::new(AtomicUsize::new(0));
    let (start_sender, start) = tokio::sync::watch::channel(false);
    let stop_at = Arc::new(std::sync::Mutex::new(None));
    let phases = Phases {
        claimed: claimed.clone(),
        start,
        stop_at: stop_at.clone(),
    };
    let claim_started = Instant::now();
    let mut tasks = Vec::new();
    for (index, run) in seeded.runs.iter().enumerate() {
        tasks.push(tokio::spawn(agents::run_agent(
            index,
            seeded.url.clone(),
            run.clone(),
            traffic.clone(),
            recorder.clone(),
            phases.clone(),
        )));
    }
    while claimed.load(Ordering::SeqCst) < hosts {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let claim_phase = claim_started.elapsed();
    let claim_end = Instant::now();
    let from = Instant::now();
    let to = from + duration;
    *stop_at
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(to);
    let cpu_before = server.cpu_micros();
    let postgres = harness.postgres.is_some();
    let db_before = if postgres { postgres_cpu_micros() } else { 0 };
    if let Some(watchers) = watchers.as_mut() {
        let data_dir = server.data_dir.clone().context("no data folder")?;
        watchers.start(&seeded.url, &data_dir, &seeded.runs)?;
    }
    start_sender.send_replace(true);
    tokio::time::sleep_until(to.into()).await;
    let cpu_after = server.cpu_micros();
    let db_after = if postgres { postgres_cpu_micros() } else { 0 };
    let mut reports: Vec<AgentReport> = Vec::with_capacity(hosts);
    for task in tasks {
        reports.push(task.await.unwrap_or_default());
    }
    if let Some(watchers) = watchers.as_mut() {
        // the runs that settled in the window end their watchers
        watchers.finish(Duration::from_secs(30));
    }
    let peak_rss_kib = server.peak_rss_kib();
    server.stop();

    let all = recorder.summary(from, to);
    let mut timeline: Vec<(u64, u32)> = recorder
        .per_second("log", from, to)
        .into_iter()
        .map(|(requests, _, max)| (requests, max))
        .collect();
    for endpoint in ["heartbeat", "sensor", "artifact", "result"] {
        for (second, (_, _, max)) in recorder
            .per_second(endpoint, from, to)
            .into_iter()
            .enumerate()
        {
            if let Some(slot) = timeline.get_mut(second) {
                slot.1 = slot.1.max(max);
            }
        }
    }
    let before = recorder.summary(claim_started, claim_end + Duration::from_millis(1));
    let endpoints: Vec<EndpointSummary> = all
        .into_iter()
        .filter(|s| !matches!(s.endpoint, "claim" | "hello"))
        .collect();
    let requests: u64 = endpoints.iter().map(|s| s.requests).sum();
    let store = server.open_store(hosts).await?;
    let integrity = verify::check(&store, &reports).await?;
    let watched = match watchers {
        Some(watchers) => Some(watchers.check(&store).await?),
        None => None,
    };
    drop(store);
    server.clean_up(harness);
    let run = HostsRun {
        hosts,
        claimed: reports.iter().filter(|r| r.claimed).count(),
        claim_phase,
        claim: before.iter().find(|s| s.endpoint == "claim").cloned(),
        hello: before.iter().find(|s| s.endpoint == "hello").cloned(),
        window: duration,
        cpu_us_per_request: cpu_after.saturating_sub(cpu_before) as f64 / requests.max(1) as f64,
        db_cpu_us_per_request: db_after.saturating_sub(db_before) as f64 / requests.max(1) as f64,
        server_cpu_share: cpu_after.saturating_sub(cpu_before) as f64
            / duration.as_micros().max(1) as f64,
        endpoints,
        peak_rss_kib,
        rss_before_kib,
        integrity,
        completed_runs: reports
            .iter()
            .filter(|r| r.final_state == "Completed")
            .count(),
        failures: recorder.failures().into_iter().collect(),
        timeline,
    };
    Ok((run, watched))
}

/// Prints a [`HostsRun`].
pub fn print_hosts(harness: &Harness, run: &HostsRun) {
    println!(
        "{} simulated hosts, {} s window ({}; bcrypt cost {}):",
        run.hosts,
        run.window.as_secs(),
        harness.database_name(),
        harness.bcrypt_cost
    );
    println!(
        "  claim phase: {} of {} agents claimed in {:.1} s",
        run.claimed,
        run.hosts,
        run.claim_phase.as_secs_f64()
    );
    let mut before = Vec::new();
    before.extend(run.hello.clone());
    before.extend(run.claim.clone());
    stats::print_table(&before);
    println!("  steady state:");
    stats::print_table(&run.endpoints);
    // where the tail comes from: the slowest seconds of the window
    let mut slowest: Vec<(usize, u64, u32)> = run
        .timeline
        .iter()
        .enumerate()
        .map(|(second, (requests, max))| (second, *requests, *max))
        .collect();
    slowest.sort_by_key(|(_, _, max)| std::cmp::Reverse(*max));
    let slowest: Vec<String> = slowest
        .iter()
        .take(5)
        .map(|(second, requests, max)| {
            format!(
                "{second} s: max {:.0} ms ({requests} log requests)",
                *max as f64 / 1000.0
            )
        })
        .collect();
    println!("  slowest seconds of the window: {}", slowest.join("; "));
    let line: Vec<String> = run
        .timeline
        .iter()
        .map(|(_, max)| format!("{:.0}", *max as f64 / 1000.0))
        .collect();
    println!("  max latency (ms) per second: {}", line.join(" "));
    let seconds = run.window.as_secs_f64().max(1e-9);
    println!(
        "  server CPU: {:.0} µs per request ({:.0} % of its core){}",
        run.cpu_us_per_request,
        run.server_cpu_share * 100.0,
        if harness.postgres.is_some() {
            format!(
                "; PostgreSQL: {:.0} µs per request",
                run.db_cpu_us_per_request
            )
        } else {
            String::new()
        }
    );
    let logs = &run.integrity.log_lines;
    let readings = &run.integrity.readings;
    println!(
        "  persisted: {:.0} log lines/s, {:.0} readings/s (stored over the window and the drain)",
        logs.stored as f64 / seconds,
        readings.stored as f64 / seconds
    );
    println!(
        "  log lines: sent {}, stored {}, lost {}, duplicated {}, unexpected {}, unacknowledged {}",
        logs.sent, logs.stored, logs.lost, logs.duplicated, logs.unexpected, logs.unacknowledged
    );
    println!(
        "  readings:  sent {}, stored {}, lost {}, duplicated {}, unexpected {}, unacknowledged {}",
        readings.sent,
        readings.stored,
        readings.lost,
        readings.duplicated,
        readings.unexpected,
        readings.unacknowledged
    );
    println!(
        "  server RSS: {:.1} MiB after seeding, peak {:.1} MiB   [target: < 200 MB]",
        run.rss_before_kib as f64 / 1024.0,
        run.peak_rss_kib as f64 / 1024.0
    );
    println!(
        "  runs through all their stages in the window: {}",
        run.completed_runs
    );
    for (failure, count) in &run.failures {
        println!("  failures: {count} × {failure}");
    }
    println!(
        "  worst p99 (heartbeat, log, sensor, artifact, result): {} ms → {}",
        stats::ms(run.worst_p99()),
        if run.held() { "held" } else { "NOT held" }
    );
}

// --------------------------------------------------------------- sweep

/// Raises N by `step` from `from` until a step does not hold; reports the
/// largest N held.
pub async fn sweep(
    harness: &Harness,
    from: usize,
    step: usize,
    max: usize,
    duration: Duration,
    traffic: &Traffic,
) -> anyhow::Result<Option<usize>> {
    let mut held = None;
    let mut hosts_now = from.max(1);
    let mut lines = Vec::new();
    while hosts_now <= max {
        let run = hosts(harness, hosts_now, duration, traffic).await?;
        print_hosts(harness, &run);
        lines.push(format!(
            "  {:>6} hosts: worst p99 {:>8} ms, {:>6.0} req/s, {:>4.0} µs CPU/req, peak RSS {:>6.1} MiB, failed {}, lost {}/{}, dup {}/{} → {}",
            hosts_now,
            stats::ms(run.worst_p99()),
            run.endpoints.iter().map(|s| s.per_second).sum::<f64>(),
            run.cpu_us_per_request,
            run.peak_rss_kib as f64 / 1024.0,
            run.failed_requests(),
            run.integrity.log_lines.lost,
            run.integrity.readings.lost,
            run.integrity.log_lines.duplicated,
            run.integrity.readings.duplicated,
            if run.held() { "held" } else { "not held" }
        ));
        if !run.held() {
            break;
        }
        held = Some(hosts_now);
        hosts_now += step.max(1);
    }
    println!("sweep ({}):", harness.database_name());
    for line in lines {
        println!("{line}");
    }
    match held {
        Some(n) => println!("  largest N held: {n}"),
        None => println!("  no N held"),
    }
    Ok(held)
}

// --------------------------------------------------------------- burst

/// A burst of heartbeats at twice `rate` for `burst`, between two spells
/// at `rate`; prints each second after the burst and how long recovery
/// took.
/// One client per seeded run, with the burst's 5 s timeout.
fn heartbeat_clients(url: &str, runs: &[(String, String)]) -> anyhow::Result<Vec<Client>> {
    runs.iter()
        .map(|(run_id, token)| Ok(Client::new(url, run_id, token, Duration::from_secs(5))?))
        .collect()
}

pub async fn burst(
    harness: &Harness,
    rate: Option<f64>,
    burst: Duration,
    agents_count: usize,
) -> anyhow::Result<Option<u64>> {
    let mut server = ServerProcess::orchestrator(harness, agents_count).await?;
    if harness.postgres.is_some() {
        pin_postgres(harness.server_cpu);
    }
    let runs: Vec<(String, String)> = server
        .seeded
        .as_ref()
        .map(|s| {
            s.runs
                .iter()
                .map(|r| (r.run_id.clone(), r.token.clone()))
                .collect()
        })
        .unwrap_or_default();
    let rate = match rate {
        Some(rate) => rate,
        None => {
            let measured = closed_loop(
                &server,
                runs.clone(),
                Duration::from_secs(1),
                Duration::from_secs(10),
                false,
            )
            .await?;
            // sustainable means sustained in open loop, by the server and
            // by this load generator alike: 80 % of the closed-loop figure,
            // lowered by a fifth until 5 s at it (after a second to open
            // the connections) see no failure and a p99 under 50 ms
            let mut rate = measured.summary.per_second * 0.8;
            for _ in 0..6 {
                let probe_clients = heartbeat_clients(&server.url, &runs)?;
                let probe = Arc::new(Recorder::new());
                let probe_start = Instant::now();
                agents::open_loop_heartbeats(
                    probe_clients,
                    probe.clone(),
                    vec![(rate, Duration::from_secs(6))],
                    4096,
                )
                .await;
                // the first second opens the connections
                let held = probe
                    .summary(probe_start + Duration::from_secs(1), Instant::now())
                    .iter()
                    .all(|s| s.failures == 0 && s.p99 < Duration::from_millis(50));
                if held {
                    break;
                }
                println!(
                    "  {rate:.0} heartbeats/s not sustained in open loop; trying a fifth less"
                );
                rate *= 0.8;
            }
            rate
        }
    };
    let clients = heartbeat_clients(&server.url, &runs)?;
    let recorder = Arc::new(Recorder::new());
    let before = Duration::from_secs(10);
    let after = Duration::from_secs(30);
    let start = Instant::now();
    agents::open_loop_heartbeats(
        clients,
        recorder.clone(),
        vec![(rate, before), (2.0 * rate, burst), (rate, after)],
        4096,
    )
    .await;
    let peak = server.peak_rss_kib();
    server.stop();
    server.clean_up(harness);
    let burst_end = start + before + burst;
    let seconds = recorder.per_second("heartbeat", burst_end, burst_end + after);
    // (the first second opens the connections)
    let steady = recorder.summary(start + Duration::from_secs(1), start + before);
    let during = recorder.summary(start + before, burst_end);
    println!(
        "burst ({}): {:.0} heartbeats/s (sustainable), then {:.0}/s for {} s, then {:.0}/s again; {} agents, client timeout 5 s",
        harness.database_name(),
        rate,
        2.0 * rate,
        burst.as_secs(),
        rate,
        agents_count
    );
    println!("  before the burst:");
    stats::print_table(&steady);
    println!("  during the burst:");
    stats::print_table(&during);
    println!("  each second after the burst ended: requests, failed, max latency ms");
    let mut recovered_at = None;
    for (second, (requests, failed, max_us)) in seconds.iter().enumerate() {
        println!(
            "    +{:>2} s: {:>6} {:>6} {:>9.1}",
            second + 1,
            requests,
            failed,
            *max_us as f64 / 1000.0
        );
        if *failed > 0 {
            recovered_at = None;
        } else if recovered_at.is_none() {
            recovered_at = Some(second as u64);
        }
    }
    for (failure, count) in recorder.failures() {
        println!("  failures: {count} × {failure}");
    }
    println!("  server peak RSS: {:.1} MiB", peak as f64 / 1024.0);
    match recovered_at {
        Some(s) => println!(
            "  every request succeeds again from {s} s after the burst   [target: within 10 s]"
        ),
        None => println!("  requests still fail at the end   [target: recovered within 10 s]"),
    }
    Ok(recovered_at)
}

/// The machine, for the record.
pub fn describe_machine(harness: &Harness) {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let debian = std::fs::read_to_string("/etc/debian_version")
        .map(|v| format!("Debian {}", v.trim()))
        .unwrap_or_else(|_| "unknown OS".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    println!(
        "machine: {} CPUs ({model}), {debian}, Linux {kernel}; server pinned to CPU {}, load generator to CPU {}; {}",
        super::pin::available_cpus_total(),
        harness.server_cpu,
        harness.load_cpu,
        harness.database_name()
    );
}
