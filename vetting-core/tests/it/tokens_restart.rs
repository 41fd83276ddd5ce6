//! Run tokens through the orchestrator: refused when wrong, for another
//! run, or past the grace after the run ended; still valid after a restart;
//! impossible to mint from a database dump without the secret key. And the
//! schema guard: a database newer than the binary is refused.

use sea_orm::ConnectionTrait;
use vetting_core::clock::ManualClock;
use vetting_core::config::Config;
use vetting_core::orchestrator::{EventContext, Orchestrator, OrchestratorError};
use vetting_core::state_machine::{Event, RunState};
use vetting_core::store::{Store, StoreError};
use vetting_core::tokens::{self, SecretKey};

use crate::support::{T0, config_for, host, open, operator, test_dbs};

async fn booting(orchestrator: &Orchestrator, index: u32) -> String {
    let host_id = host(orchestrator, index).await;
    let run = orchestrator.start_run(host_id, &operator()).await.unwrap();
    orchestrator.dispatch().await.unwrap();
    orchestrator
        .apply(&run.id, Event::PowerOnSent, EventContext::default())
        .await
        .unwrap();
    run.id
}

/// Two runs waiting for their agent, with their tokens.
async fn two_booting_runs(orchestrator: &Orchestrator) -> [(String, String); 2] {
    let mut runs = Vec::new();
    for index in [1, 2] {
        let run = booting(orchestrator, index).await;
        let token = orchestrator.token_for(&run).await.unwrap();
        runs.push((run, token));
    }
    [runs.remove(0), runs.remove(0)]
}

#[tokio::test]
async fn tokens_are_refused_when_wrong_foreign_or_expired() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        let [(run_a, token_a), (_, token_b)] = two_booting_runs(&orchestrator).await;
        orchestrator
            .authenticate(&run_a, &token_a, false)
            .await
            .unwrap();
        // wrong token, another run's token
        for (run, token) in [
            (&run_a, "vt1.nonsense"),
            (&run_a, token_b.as_str()),
            (&run_a, ""),
        ] {
            let error = orchestrator
                .authenticate(run, token, false)
                .await
                .unwrap_err();
            assert!(
                matches!(error, OrchestratorError::Unauthorized(_)),
                "{error}"
            );
        }
        // claim checks bcrypt once and moves the run
        let run = orchestrator.get_run(&run_a).await.unwrap();
        let claimed = orchestrator.claim(&run, &token_a).await.unwrap();
        assert_eq!(claimed.state, RunState::InventoryCheck);
        // the run ends: heartbeats work during the grace, nothing else does
        orchestrator
            .cancel(&run_a, &operator(), None)
            .await
            .unwrap();
        orchestrator
            .authenticate(&run_a, &token_a, true)
            .await
            .unwrap();
        assert!(matches!(
            orchestrator.authenticate(&run_a, &token_a, false).await,
            Err(OrchestratorError::RunEnded { .. })
        ));
        clock.advance_secs(orchestrator.config().deadlines.token_grace_secs as i64 + 1);
        assert!(matches!(
            orchestrator.authenticate(&run_a, &token_a, true).await,
            Err(OrchestratorError::RunEnded { .. })
        ));
    }
}

#[tokio::test]
async fn a_token_survives_a_restart_and_a_dump_cannot_mint_one() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        // no key in config: the orchestrator creates `secret.key`
        let config = Config {
            secret_key: None,
            ..config_for(&db)
        };
        let orchestrator = open(config.clone(), &clock).await;
        let run_id = booting(&orchestrator, 1).await;
        let token = orchestrator.token_for(&run_id).await.unwrap();
        drop(orchestrator);
        let key_file = db.dir.path().join("secret.key");
        assert!(key_file.exists());
        let reopened = open(config.clone(), &clock).await;
        reopened.authenticate(&run_id, &token, false).await.unwrap();
        assert_eq!(reopened.token_for(&run_id).await.unwrap(), token);

        // Everything the database holds about the token, read as a dump would.
        let row = reopened
            .store()
            .db()
            .query_one_raw(sea_orm::Statement::from_string(
                reopened.store().backend(),
                format!("SELECT token_nonce, token_hash FROM runs WHERE id = '{run_id}'"),
            ))
            .await
            .unwrap()
            .unwrap();
        let nonce: String = row.try_get("", "token_nonce").unwrap();
        let hash: String = row.try_get("", "token_hash").unwrap();
        // the dump does not contain the token
        assert!(!hash.contains(&token) && !nonce.contains(&token));
        // without the key, the best forgery (any other key) is refused
        for guess in [SecretKey::from_bytes([0; 32]), SecretKey::generate()] {
            let forged = tokens::derive_token(&guess, &run_id, &hex::decode(&nonce).unwrap());
            assert!(
                reopened
                    .authenticate(&run_id, &forged, false)
                    .await
                    .is_err()
            );
            assert!(
                tokens::verify_bcrypt(&forged, &hash, tokens::HashScheme::Sha256Bcrypt).is_err()
            );
        }
        // a new orchestrator with a different key (key file lost) refuses it
        drop(reopened);
        std::fs::remove_file(&key_file).unwrap();
        let rekeyed = open(config, &clock).await;
        assert!(rekeyed.authenticate(&run_id, &token, false).await.is_err());
    }
}

#[tokio::test]
async fn a_database_newer_than_the_binary_is_refused() {
    for db in test_dbs().await {
        let store = Store::open(&db.url).await.unwrap();
        let version = store.schema_version().await.unwrap();
        assert_eq!(version, vetting_core::store::migrations::latest_version());
        // migrating again is a no-op
        assert!(store.migrate().await.unwrap().is_empty());
        store
            .db()
            .execute_unprepared(&format!(
                "INSERT INTO vetting_schema (version, name, applied_at_ms) VALUES ({}, 'from the future', 0)",
                version + 1
            ))
            .await
            .unwrap();
        let error = Store::open(&db.url).await.unwrap_err();
        assert!(
            matches!(error, StoreError::SchemaTooNew { found, known } if found == version + 1 && known == version),
            "{error}"
        );
        assert!(error.to_string().contains("newer than this binary"));
    }
}

/// Log, sensor and heartbeat check the token against the nonce kept in
/// memory and leave "has the run ended" to the writer, on the row it reads
/// for the group: the same refusals as the full check.
#[tokio::test]
async fn the_fast_token_check_and_the_writer_refuse_like_the_full_check() {
    use vetting_probes::protocol::{HeartbeatRequest, LogBatch, LogLine, LogStream};

    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        let [(run_a, token_a), (_, token_b)] = two_booting_runs(&orchestrator).await;
        // twice: the first reads the nonce, the second uses the kept one
        for _ in 0..2 {
            orchestrator
                .check_agent_token(&run_a, &token_a)
                .await
                .unwrap();
            for token in ["vt1.nonsense", token_b.as_str(), ""] {
                assert!(matches!(
                    orchestrator.check_agent_token(&run_a, token).await,
                    Err(OrchestratorError::Unauthorized(_))
                ));
            }
        }
        assert!(matches!(
            orchestrator
                .check_agent_token("no-such-run", &token_a)
                .await,
            Err(OrchestratorError::Unauthorized(_))
        ));

        let line = |seq| LogLine {
            seq,
            at_ms: T0,
            stage: None,
            stream: LogStream::Agent,
            text: format!("line {seq}"),
        };
        let beat = HeartbeatRequest {
            current: None,
            status: None,
        };
        let run = orchestrator.get_run(&run_a).await.unwrap();
        let ack = orchestrator
            .agent_log(
                &run,
                LogBatch {
                    lines: vec![line(0)],
                },
            )
            .await
            .unwrap();
        assert_eq!(ack.next_seq, 1);
        // the run ends: heartbeats during the grace, nothing else
        orchestrator
            .cancel(&run_a, &operator(), None)
            .await
            .unwrap();
        orchestrator
            .check_agent_token(&run_a, &token_a)
            .await
            .unwrap();
        orchestrator.agent_heartbeat(&run, &beat).await.unwrap();
        assert!(matches!(
            orchestrator
                .agent_log(
                    &run,
                    LogBatch {
                        lines: vec![line(1)],
                    },
                )
                .await,
            Err(OrchestratorError::RunEnded { .. })
        ));
        clock.advance_secs(orchestrator.config().deadlines.token_grace_secs as i64 + 1);
        assert!(matches!(
            orchestrator.agent_heartbeat(&run, &beat).await,
            Err(OrchestratorError::RunEnded { .. })
        ));
        assert_eq!(orchestrator.get_run(&run_a).await.unwrap().next_log_seq, 1);
    }
}
