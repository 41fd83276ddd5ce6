//! Criterion benchmarks of the core's hot functions: the run-token check
//! every agent request makes (target: under 20 µs), and applying one
//! transition (compare-and-set run row + transition log, committed) on the
//! embedded SQLite default.
//!
//! `cargo bench -p vetting-benches --bench core`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use vetting_core::clock::SystemClock;
use vetting_core::config::{Config, Secret};
use vetting_core::machine::{Event, RunState, lookup};
use vetting_core::model::{Actor, NewHost};
use vetting_core::orchestrator::Orchestrator;
use vetting_core::runs::EventContext;
use vetting_core::tokens::{self, SecretKey};

fn token_check(c: &mut Criterion) {
    let key = SecretKey::generate();
    let issued = tokens::issue_with_cost(&key, "3f1c2d9e-0000-4000-8000-000000000001", 4).unwrap();
    c.bench_function("token check (HMAC + constant-time compare)", |b| {
        b.iter(|| {
            tokens::verify(
                &key,
                std::hint::black_box("3f1c2d9e-0000-4000-8000-000000000001"),
                &issued.nonce_hex,
                std::hint::black_box(&issued.token),
            )
            .unwrap()
        })
    });
    c.bench_function("state table lookup", |b| {
        b.iter(|| lookup(std::hint::black_box(RunState::Storage), Event::StagePassed).unwrap())
    });
}

fn apply_transition(c: &mut Criterion) {
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
    let (orchestrator, run_id) = runtime.block_on(async {
        let orchestrator: Orchestrator = Orchestrator::open(config, Arc::new(SystemClock))
            .await
            .unwrap()
            .with_bcrypt_cost(4);
        let actor = Actor::operator("bench");
        let host = orchestrator
            .operator()
            .register_host(
                NewHost {
                    name: "bench".into(),
                    macs: vec!["52:54:00:be:ec:01".into()],
                    ..Default::default()
                },
                &actor,
            )
            .await
            .unwrap();
        let run = orchestrator
            .operator()
            .start_run(host.id, &actor)
            .await
            .unwrap();
        orchestrator.runs().dispatch().await.unwrap();
        orchestrator
            .runs()
            .apply(&run.id, Event::PowerOnSent, EventContext::default())
            .await
            .unwrap();
        (orchestrator, run.id)
    });
    c.bench_function("apply a transition (SQLite, committed)", |b| {
        b.iter(|| {
            runtime
                .block_on(
                    orchestrator
                        .runs()
                        .apply(&run_id, Event::Hello, EventContext::default()),
                )
                .unwrap()
        })
    });
}

criterion_group!(benches, token_check, apply_transition);
criterion_main!(benches);
