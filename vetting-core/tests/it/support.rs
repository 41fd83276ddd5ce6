//! Test databases: a SQLite file per test, and a fresh database per test on
//! the throwaway PostgreSQL server that `scripts/test.sh` starts
//! (`VETTING_TEST_POSTGRES_URL`). With `VETTING_REQUIRE_POSTGRES=1` (the
//! test command sets it) a missing server is an error, not a skip.

use std::sync::Arc;

use sea_orm::{ConnectionTrait, Database};
use vetting_core::clock::{Clock, ManualClock};
use vetting_core::config::{Config, Secret};
use vetting_core::model::{Actor, NewHost};
use vetting_core::orchestrator::Orchestrator;

/// One database for one test.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    pub name: &'static str,
    pub dir: tempfile::TempDir,
}

/// SQLite always, PostgreSQL when configured.
pub async fn test_dbs() -> Vec<TestDb> {
    let mut dbs = vec![sqlite_db()];
    if let Some(pg) = postgres_db().await {
        dbs.push(pg);
    }
    dbs
}

pub fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    TestDb {
        url: format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("vetting.db").display()
        ),
        name: "sqlite",
        dir,
    }
}

pub async fn postgres_db() -> Option<TestDb> {
    let Ok(admin) = std::env::var("VETTING_TEST_POSTGRES_URL") else {
        if std::env::var("VETTING_REQUIRE_POSTGRES").is_ok_and(|value| value == "1") {
            panic!("VETTING_REQUIRE_POSTGRES=1 but VETTING_TEST_POSTGRES_URL is not set");
        }
        // the SQLite half runs; the PostgreSQL half is skipped visibly
        vetting_testkit::prerequisite(Some(
            "PostgreSQL (VETTING_TEST_POSTGRES_URL is not set: SQLite only)".into(),
        ));
        return None;
    };
    let name = format!("vt_{}", uuid::Uuid::new_v4().simple());
    let connection = Database::connect(&admin).await.unwrap();
    connection
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    connection.close().await.ok();
    let base = admin.rsplit_once('/').unwrap().0;
    Some(TestDb {
        url: format!("{base}/{name}"),
        name: "postgres",
        dir: tempfile::tempdir().unwrap(),
    })
}

/// A fixed key, so several processes share tokens.
pub const TEST_KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

pub fn config_for(db: &TestDb) -> Config {
    Config {
        data_dir: db.dir.path().to_path_buf(),
        database_url: Some(Secret(db.url.clone())),
        secret_key: Some(Secret(TEST_KEY_HEX.into())),
        ..Config::default()
    }
}

pub async fn open(config: Config, clock: &ManualClock) -> Orchestrator {
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    Orchestrator::open(config, clock)
        .await
        .unwrap()
        .with_bcrypt_cost(4)
}

pub fn operator() -> Actor {
    Actor::operator("alice")
}

pub async fn host(orchestrator: &Orchestrator, index: u32) -> i64 {
    orchestrator
        .operator()
        .register_host(
            NewHost {
                name: format!("host-{index}"),
                macs: vec![format!(
                    "52:54:00:00:{:02x}:{:02x}",
                    index / 256,
                    index % 256
                )],
                ..Default::default()
            },
            &operator(),
        )
        .await
        .unwrap()
        .id
}

pub const T0: i64 = 1_800_000_000_000;
