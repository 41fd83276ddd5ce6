//! Criterion benchmarks of the operator's list pages on the embedded
//! SQLite default: a database of 100,000 runs over 5,000 hosts (rows
//! inserted directly, in bulk), one page of 100 of `list_runs_page` (no
//! filter, by host, by state) and of `list_hosts_page`, the first page
//! and a deep one. Target: under 100 ms each (the pages read indexes:
//! `vetting-core/tests/it/operator.rs` checks their query plans).
//!
//! `cargo bench -p vetting-benches --bench lists`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use sea_orm::{ConnectionTrait, TransactionTrait};
use vetting_core::clock::SystemClock;
use vetting_core::config::{Config, Secret};
use vetting_core::machine::RunState;
use vetting_core::operator::{PageRequest, RunFilter};
use vetting_core::orchestrator::Orchestrator;

const HOSTS: usize = 5_000;
const RUNS: usize = 100_000;
const PAGE: u32 = 100;
const T0: i64 = 1_800_000_000_000;

/// The states the runs are spread over (most of a history has ended).
const STATES: [RunState; 6] = [
    RunState::Completed,
    RunState::Completed,
    RunState::Completed,
    RunState::Failed,
    RunState::Cancelled,
    RunState::Released,
];

/// Inserts the hosts, their MACs and the runs in a few multi-row
/// statements inside one transaction.
async fn fill(orchestrator: &Orchestrator) {
    let db = orchestrator
        .store()
        .db()
        .begin_with_options(vetting_core::store::WRITE)
        .await
        .unwrap();
    for chunk in (0..HOSTS).collect::<Vec<_>>().chunks(500) {
        let hosts: Vec<String> = chunk
            .iter()
            .map(|i| format!("({}, 'rack{:03}-u{:02}', {T0})", i + 1, i / 40, i % 40))
            .collect();
        db.execute_unprepared(&format!(
            "INSERT INTO hosts (id, name, created_at_ms) VALUES {}",
            hosts.join(",")
        ))
        .await
        .unwrap();
        let macs: Vec<String> = chunk
            .iter()
            .map(|i| format!("('02:00:00:00:{:02x}:{:02x}', {})", i / 256, i % 256, i + 1))
            .collect();
        db.execute_unprepared(&format!(
            "INSERT INTO host_macs (mac, host_id) VALUES {}",
            macs.join(",")
        ))
        .await
        .unwrap();
    }
    for chunk in (0..RUNS).collect::<Vec<_>>().chunks(1000) {
        let runs: Vec<String> = chunk
            .iter()
            .map(|i| {
                let state = STATES[i % STATES.len()].as_str();
                let created = T0 + (*i as i64) * 1000;
                format!(
                    "('{:08x}-0000-4000-8000-{:012x}', {}, '{state}', 3, '00', 'x', TRUE, \
                     {created}, {created}, 0, 0, 'operator:bench')",
                    i,
                    i,
                    i % HOSTS + 1
                )
            })
            .collect();
        db.execute_unprepared(&format!(
            "INSERT INTO runs (id, host_id, state, version, token_nonce, token_hash, \
             hold_on_failure, created_at_ms, updated_at_ms, next_log_seq, next_sensor_seq, \
             created_by) VALUES {}",
            runs.join(",")
        ))
        .await
        .unwrap();
    }
    db.commit().await.unwrap();
}

/// The cursor `pages` pages of 1000 deep (past `pages * 1000` items).
async fn deep_run_cursor(orchestrator: &Orchestrator, filter: &RunFilter, pages: usize) -> String {
    let mut before = None;
    for _ in 0..pages {
        let page = orchestrator
            .operator()
            .list_runs_page(
                filter.clone(),
                PageRequest {
                    limit: Some(1000),
                    before,
                },
            )
            .await
            .unwrap();
        before = page.next;
    }
    before.unwrap()
}

fn lists(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        secret_key: Some(Secret("11".repeat(32))),
        ..Config::default()
    };
    let orchestrator = runtime.block_on(async {
        let orchestrator = Orchestrator::open(config, Arc::new(SystemClock))
            .await
            .unwrap();
        fill(&orchestrator).await;
        orchestrator
    });
    let all = RunFilter::default();
    let by_state = RunFilter {
        state: Some(RunState::Failed),
        host_id: None,
    };
    let by_host = RunFilter {
        state: None,
        host_id: Some(HOSTS as i64 / 2),
    };
    let (deep_all, deep_state, deep_hosts) = runtime.block_on(async {
        let deep_hosts = orchestrator
            .operator()
            .list_hosts_page(
                false,
                PageRequest {
                    limit: Some(1000),
                    before: None,
                },
            )
            .await
            .unwrap();
        let mut before = deep_hosts.next;
        for _ in 0..3 {
            before = orchestrator
                .operator()
                .list_hosts_page(
                    false,
                    PageRequest {
                        limit: Some(1000),
                        before,
                    },
                )
                .await
                .unwrap()
                .next;
        }
        (
            deep_run_cursor(&orchestrator, &all, 80).await,
            deep_run_cursor(&orchestrator, &by_state, 12).await,
            before.unwrap(),
        )
    });
    let page = |before: Option<&String>| PageRequest {
        limit: Some(PAGE),
        before: before.cloned(),
    };
    for (name, filter, before) in [
        ("runs page of 100: first", &all, None),
        ("runs page of 100: 80,000 deep", &all, Some(&deep_all)),
        ("runs page of 100 by state: first", &by_state, None),
        (
            "runs page of 100 by state: 12,000 deep",
            &by_state,
            Some(&deep_state),
        ),
        ("runs page of 100 by host: first", &by_host, None),
    ] {
        let request = page(before);
        let operator = orchestrator.operator();
        c.bench_function(name, |b| {
            b.iter(|| {
                let got = runtime
                    .block_on(operator.list_runs_page(filter.clone(), request.clone()))
                    .unwrap();
                assert!(!got.items.is_empty());
                got
            })
        });
    }
    for (name, before) in [
        ("hosts page of 100: first", None),
        ("hosts page of 100: 4,000 deep", Some(&deep_hosts)),
    ] {
        let request = page(before);
        let operator = orchestrator.operator();
        c.bench_function(name, |b| {
            b.iter(|| {
                let got = runtime
                    .block_on(operator.list_hosts_page(false, request.clone()))
                    .unwrap();
                assert_eq!(got.items.len(), PAGE as usize);
                got
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = lists
}
criterion_main!(benches);
