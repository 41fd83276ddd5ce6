//! Two orchestrator processes, each with its own connection pool, race the
//! same runs through the same transitions behind a barrier: exactly one
//! wins each, and the most runs ever in flight, replayed from the persisted
//! transition log, never exceeds the cap. On SQLite and on PostgreSQL.
//!
//! The worker is this same test binary re-run with `race_worker` and
//! environment variables saying what to do.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vetting_core::clock::ManualClock;
use vetting_core::config::Config;
use vetting_core::error::OrchestratorError;
use vetting_core::machine::{Event, RunState};
use vetting_core::runs::EventContext;

use crate::support::{T0, TestDb, config_for, host, open, operator, postgres_db, sqlite_db};

const RUNS: u32 = 100;
const CAP: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_race_and_exactly_one_wins_each_transition_sqlite() {
    race(sqlite_db()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_race_and_exactly_one_wins_each_transition_postgres() {
    if let Some(db) = postgres_db().await {
        race(db).await;
    }
}

fn race_config(db: &TestDb) -> Config {
    let mut config = config_for(db);
    config.dispatcher.max_in_flight = CAP;
    config
}

async fn race(db: TestDb) {
    let clock = ManualClock::new(T0);
    let config = race_config(&db);
    let orchestrator = open(config.clone(), &clock).await;
    let mut run_ids = Vec::new();
    for index in 0..RUNS {
        let host_id = host(&orchestrator, index).await;
        run_ids.push(
            orchestrator
                .operator()
                .create_run(host_id, &operator())
                .await
                .unwrap()
                .id,
        );
    }
    drop(orchestrator);
    let work = db.dir.path().join("race");
    std::fs::create_dir_all(&work).unwrap();
    let go = work.join("go");
    let mut children = Vec::new();
    for worker in 0..2 {
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "concurrency::race_worker",
                "--include-ignored",
                "--nocapture",
            ])
            .env("VETTING_RACE_URL", &db.url)
            .env("VETTING_RACE_DATA", db.dir.path())
            .env("VETTING_RACE_GO", &go)
            .env(
                "VETTING_RACE_OUT",
                work.join(format!("worker-{worker}.txt")),
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        children.push(child);
    }
    // the barrier: both workers are connected and waiting for `go`
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(0..2).all(|worker| work.join(format!("worker-{worker}.txt.ready")).exists()) {
        assert!(Instant::now() < deadline, "workers did not get ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(&go, "go").unwrap();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "worker failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // every win each worker reported
    let mut wins: HashMap<(String, String, String), u32> = HashMap::new();
    let mut total_wins = 0;
    for worker in 0..2 {
        let text = std::fs::read_to_string(work.join(format!("worker-{worker}.txt"))).unwrap();
        for line in text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            *wins
                .entry((parts[0].into(), parts[1].into(), parts[2].into()))
                .or_default() += 1;
            total_wins += 1;
        }
    }
    assert!(
        wins.values().all(|count| *count == 1),
        "a transition was won twice"
    );

    let orchestrator = open(config, &clock).await;
    let log = orchestrator.operator().transitions(None).await.unwrap();
    // exactly one row per (run, from, event), and it matches the wins
    let mut seen = HashSet::new();
    for record in &log {
        assert!(
            seen.insert((
                record.run_id.clone(),
                record.from.clone(),
                record.event.clone()
            )),
            "{} took {} -> {} twice",
            record.run_id,
            record.from,
            record.event
        );
    }
    assert_eq!(log.len(), total_wins, "{}: log vs wins", db.name);
    // every run went all the way
    for run_id in &run_ids {
        let run = orchestrator.operator().get_run(run_id).await.unwrap();
        assert_eq!(run.state, RunState::Cancelled, "{}: {run_id}", db.name);
        let path: Vec<&str> = log
            .iter()
            .filter(|record| &record.run_id == run_id)
            .map(|record| record.to.as_str())
            .collect();
        assert_eq!(path, ["Queued", "WaitingWoL", "Booting", "Cancelled"]);
    }
    // replay the log in commit order: runs in slot-holding states
    let mut in_flight = HashSet::new();
    let mut most = 0;
    for record in &log {
        let to = RunState::parse(&record.to).unwrap();
        if to.holds_slot() {
            in_flight.insert(record.run_id.clone());
        } else {
            in_flight.remove(&record.run_id);
        }
        most = most.max(in_flight.len());
    }
    assert!(most <= CAP as usize, "{}: {most} runs in flight", db.name);
    assert_eq!(
        most, CAP as usize,
        "{}: the race never filled the slots",
        db.name
    );
    eprintln!(
        "{}: {} transitions, at most {most} in flight",
        db.name,
        log.len()
    );
}

/// One racing process (run by `race` above; ignored when run directly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by the race tests"]
async fn race_worker() {
    let Ok(url) = std::env::var("VETTING_RACE_URL") else {
        return;
    };
    let data = PathBuf::from(std::env::var("VETTING_RACE_DATA").unwrap());
    let go = PathBuf::from(std::env::var("VETTING_RACE_GO").unwrap());
    let out = PathBuf::from(std::env::var("VETTING_RACE_OUT").unwrap());
    let db = TestDb {
        url,
        name: "worker",
        dir: tempfile::tempdir_in(&data).unwrap(),
    };
    let mut config = race_config(&db);
    config.data_dir = data;
    let clock = ManualClock::new(T0);
    let orchestrator = open(config, &clock).await;
    let run_ids: Vec<String> = orchestrator
        .operator()
        .list_runs(None)
        .await
        .unwrap()
        .into_iter()
        .map(|run| run.id)
        .collect();
    std::fs::write(out.with_extension("txt.ready"), "").unwrap();
    while !go.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut wins = String::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        assert!(Instant::now() < deadline, "the race did not finish");
        let mut all_done = true;
        for run_id in &run_ids {
            let run = orchestrator.operator().get_run(run_id).await.unwrap();
            let event = match run.state {
                RunState::Registered => Event::Enqueue,
                RunState::Queued => Event::Dispatch,
                RunState::WaitingWoL => Event::PowerOnSent,
                RunState::Booting => Event::Cancel,
                _ => continue,
            };
            all_done = false;
            let result = orchestrator
                .runs()
                .apply(
                    run_id,
                    event,
                    EventContext {
                        expected_version: Some(run.version),
                        actor: Some(operator()),
                        ..Default::default()
                    },
                )
                .await;
            match result {
                Ok(applied) => {
                    wins.push_str(&format!("{run_id} {} {event}\n", applied.from));
                }
                Err(OrchestratorError::Conflict { .. })
                | Err(OrchestratorError::InvalidTransition { .. })
                | Err(OrchestratorError::NoSlotFree { .. }) => {}
                Err(error) => panic!("{error:#?}"),
            }
        }
        if all_done {
            break;
        }
    }
    std::fs::write(&out, wins).unwrap();
}
