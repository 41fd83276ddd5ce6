//! Run tokens through the orchestrator: refused when wrong, for another
//! run, or past the grace after the run ended; still valid after a restart;
//! impossible to mint from a database dump without the secret key. And the
//! schema guard: a database newer than the binary is refused.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};
use vetting_core::agent::{AgentWriter, AuthenticatedRun};
use vetting_core::clock::ManualClock;
use vetting_core::config::Config;
use vetting_core::error::OrchestratorError;
use vetting_core::machine::{Event, RunState};
use vetting_core::orchestrator::Orchestrator;
use vetting_core::runs::EventContext;
use vetting_core::store::{Store, StoreError};
use vetting_core::tokens::{self, SecretKey};
use vetting_probes::protocol::{Endpoint, HeartbeatRequest};

use crate::support::{T0, config_for, host, open, operator, test_dbs};

async fn booting(orchestrator: &Orchestrator, index: u32) -> String {
    let host_id = host(orchestrator, index).await;
    let run = orchestrator
        .operator()
        .start_run(host_id, &operator())
        .await
        .unwrap();
    orchestrator.runs().dispatch().await.unwrap();
    orchestrator
        .runs()
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
        let token = orchestrator.agent().token_for(&run).await.unwrap();
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
        let writer = AgentWriter::start(orchestrator.clone());
        for endpoint in served() {
            orchestrator
                .agent()
                .authenticate(endpoint, &run_a, &token_a, None)
                .await
                .unwrap();
        }
        // wrong token, another run's token, at every endpoint
        for endpoint in served() {
            for (run, token) in [
                (&run_a, "vt1.nonsense"),
                (&run_a, token_b.as_str()),
                (&run_a, ""),
            ] {
                let error = orchestrator
                    .agent()
                    .authenticate(endpoint, run, token, None)
                    .await
                    .unwrap_err();
                assert!(
                    matches!(error, OrchestratorError::Unauthorized(_)),
                    "{endpoint}: {error}"
                );
            }
        }
        // claim checks bcrypt once and moves the run
        let claim = orchestrator
            .agent()
            .authenticate(Endpoint::Claim, &run_a, &token_a, None)
            .await
            .unwrap();
        let claimed = orchestrator.agent().agent_claim(&claim).await.unwrap();
        assert_eq!(claimed.position.state, RunState::InventoryCheck.as_str());
        // the run ends: heartbeats work during the grace, nothing else does
        orchestrator
            .operator()
            .cancel(&run_a, &operator(), None)
            .await
            .unwrap();
        let beat = orchestrator
            .agent()
            .authenticate(Endpoint::Heartbeat, &run_a, &token_a, None)
            .await
            .unwrap();
        writer
            .heartbeat(&beat, &HeartbeatRequest::default())
            .await
            .unwrap();
        for endpoint in served().filter(|endpoint| {
            !matches!(
                endpoint,
                Endpoint::Heartbeat | Endpoint::Log | Endpoint::Sensor
            )
        }) {
            assert!(
                matches!(
                    orchestrator
                        .agent()
                        .authenticate(endpoint, &run_a, &token_a, None)
                        .await,
                    Err(OrchestratorError::RunEnded { .. })
                ),
                "{endpoint}"
            );
        }
        clock.advance_secs(orchestrator.config().deadlines.token_grace_secs as i64 + 1);
        let beat = orchestrator
            .agent()
            .authenticate(Endpoint::Heartbeat, &run_a, &token_a, None)
            .await
            .unwrap();
        assert!(matches!(
            writer.heartbeat(&beat, &HeartbeatRequest::default()).await,
            Err(OrchestratorError::RunEnded { .. })
        ));
    }
}

/// The endpoints this build serves.
fn served() -> impl Iterator<Item = Endpoint> {
    Endpoint::ALL
        .into_iter()
        .filter(|endpoint| endpoint.is_served())
}

/// A request authenticated for `endpoint`, whatever it reads.
async fn authenticated(
    orchestrator: &Orchestrator,
    endpoint: Endpoint,
    run_id: &str,
    token: &str,
) -> Result<AuthenticatedRun, OrchestratorError> {
    orchestrator
        .agent()
        .authenticate(endpoint, run_id, token, None)
        .await
}

/// Every row of every table, as `(table, bytes)`: SQLite values hex-encoded
/// by the database and decoded here (so blobs and text alike are compared as
/// bytes), PostgreSQL rows as `row_to_json` text (bytea shows as hex there).
async fn dump_every_table(store: &Store) -> Vec<(String, Vec<u8>)> {
    let backend = store.backend();
    let query = |sql: String| {
        let statement = Statement::from_string(backend, sql);
        async move { store.db().query_all_raw(statement).await.unwrap() }
    };
    let tables: Vec<String> = query(match backend {
        DatabaseBackend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table'".into(),
        _ => "SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema()".into(),
    })
    .await
    .iter()
    .map(|row| row.try_get::<String>("", "name").unwrap())
    .collect();
    let mut dump = Vec::new();
    for table in tables {
        let rows = match backend {
            DatabaseBackend::Sqlite => {
                let columns: Vec<String> =
                    query(format!("SELECT name FROM pragma_table_info('{table}')"))
                        .await
                        .iter()
                        .map(|row| row.try_get::<String>("", "name").unwrap())
                        .collect();
                let row_hex = columns
                    .iter()
                    .map(|column| format!("hex(\"{column}\")"))
                    .collect::<Vec<_>>()
                    .join(" || '00' || ");
                query(format!("SELECT {row_hex} AS row FROM \"{table}\""))
                    .await
                    .iter()
                    .map(|row| hex::decode(row.try_get::<String>("", "row").unwrap()).unwrap())
                    .collect::<Vec<_>>()
            }
            _ => query(format!(
                "SELECT row_to_json(t)::text AS row FROM \"{table}\" t"
            ))
            .await
            .iter()
            .map(|row| row.try_get::<String>("", "row").unwrap().into_bytes())
            .collect(),
        };
        for row in rows {
            dump.push((table.clone(), row));
        }
    }
    dump
}

/// Every file under `folder`, recursively, with its bytes.
fn every_file(folder: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut folders = vec![folder.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else {
                files.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The encodings a secret could be stored in: raw, hex (both cases), base64.
fn encodings(name: &str, secret: &[u8]) -> Vec<(String, Vec<u8>)> {
    vec![
        (format!("{name} (raw)"), secret.to_vec()),
        (format!("{name} (hex)"), hex::encode(secret).into_bytes()),
        (
            format!("{name} (HEX)"),
            hex::encode_upper(secret).into_bytes(),
        ),
        (
            format!("{name} (base64)"),
            STANDARD.encode(secret).into_bytes(),
        ),
        (
            format!("{name} (base64url)"),
            URL_SAFE_NO_PAD.encode(secret).into_bytes(),
        ),
    ]
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
        let token = orchestrator.agent().token_for(&run_id).await.unwrap();
        drop(orchestrator);
        let key_file = db.dir.path().join("secret.key");
        assert!(key_file.exists());
        let reopened = open(config.clone(), &clock).await;
        for endpoint in served() {
            authenticated(&reopened, endpoint, &run_id, &token)
                .await
                .unwrap();
        }
        assert_eq!(reopened.agent().token_for(&run_id).await.unwrap(), token);

        // A dump: every table, and every file under the data folder. The
        // token (whole, or its MAC: the nonce is stored on purpose) is in
        // none of them; the key only in `secret.key`.
        let key_hex = std::fs::read_to_string(&key_file).unwrap();
        let key = hex::decode(key_hex.trim()).unwrap();
        let tail = token.rsplit_once('.').unwrap().1;
        let nonce_and_mac = URL_SAFE_NO_PAD.decode(tail).unwrap();
        let (stored_nonce, mac) = nonce_and_mac.split_at(16);
        assert_eq!(mac.len(), 32);
        // the stored nonce is in the dump: what it reads is what is stored
        let stored_nonce = hex::encode(stored_nonce).into_bytes();
        let mut token_needles = vec![
            ("the token".to_string(), token.clone().into_bytes()),
            (
                "the token's nonce and MAC".to_string(),
                tail.as_bytes().to_vec(),
            ),
        ];
        token_needles.extend(encodings("the token's MAC", mac));
        token_needles.extend(encodings("the token", token.as_bytes()));
        let key_needles = encodings("the secret key", &key);

        let dump = dump_every_table(reopened.store()).await;
        let run_rows: Vec<&Vec<u8>> = dump
            .iter()
            .filter(|(table, row)| table == "runs" && contains(row, run_id.as_bytes()))
            .map(|(_, row)| row)
            .collect();
        assert_eq!(
            run_rows.len(),
            1,
            "{}: the dump holds the run's row",
            db.name
        );
        assert!(
            contains(run_rows[0], &stored_nonce),
            "{}: the nonce",
            db.name
        );
        assert!(dump.iter().any(|(table, _)| table == "hosts"));
        for (table, row) in &dump {
            for (what, needle) in token_needles.iter().chain(&key_needles) {
                assert!(
                    !contains(row, needle),
                    "{}: table {table} holds {what}: {}",
                    db.name,
                    String::from_utf8_lossy(row)
                );
            }
        }
        let files = every_file(db.dir.path());
        assert!(files.iter().any(|(path, _)| path == &key_file));
        if db.name == "sqlite" {
            assert!(
                files.iter().any(|(path, bytes)| {
                    path.to_string_lossy().contains("vetting.db") && contains(bytes, &stored_nonce)
                }),
                "the SQLite database (with the nonce) is among the files"
            );
        }
        for (path, bytes) in &files {
            for (what, needle) in &token_needles {
                assert!(
                    !contains(bytes, needle),
                    "{}: {} holds {what}",
                    db.name,
                    path.display()
                );
            }
            let holds_key = key_needles
                .iter()
                .any(|(_, needle)| contains(bytes, needle));
            assert_eq!(
                holds_key,
                path == &key_file,
                "{}: {} and the secret key",
                db.name,
                path.display()
            );
        }

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
            for endpoint in served() {
                assert!(
                    authenticated(&reopened, endpoint, &run_id, &forged)
                        .await
                        .is_err()
                );
            }
            assert!(
                tokens::verify_bcrypt(&forged, &hash, tokens::HashScheme::Sha256Bcrypt).is_err()
            );
        }
        // a new orchestrator with a different key (key file lost) refuses it
        drop(reopened);
        std::fs::remove_file(&key_file).unwrap();
        let rekeyed = open(config, &clock).await;
        for endpoint in served() {
            assert!(
                authenticated(&rekeyed, endpoint, &run_id, &token)
                    .await
                    .is_err()
            );
        }
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
    use vetting_probes::protocol::{LogBatch, LogLine, LogStream};

    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        let writer = AgentWriter::start(orchestrator.clone());
        let [(run_a, token_a), (_, token_b)] = two_booting_runs(&orchestrator).await;
        let fast = [Endpoint::Log, Endpoint::Sensor, Endpoint::Heartbeat];
        // twice: the first reads the nonce, the second uses the kept one
        for _ in 0..2 {
            for endpoint in fast {
                let checked = authenticated(&orchestrator, endpoint, &run_a, &token_a)
                    .await
                    .unwrap();
                // the fast check reads no row
                assert!(checked.run().is_none(), "{endpoint}");
                for token in ["vt1.nonsense", token_b.as_str(), ""] {
                    assert!(matches!(
                        authenticated(&orchestrator, endpoint, &run_a, token).await,
                        Err(OrchestratorError::Unauthorized(_))
                    ));
                }
            }
        }
        for endpoint in fast {
            assert!(matches!(
                authenticated(&orchestrator, endpoint, "no-such-run", &token_a).await,
                Err(OrchestratorError::Unauthorized(_))
            ));
        }

        let line = |seq| LogLine {
            seq,
            at_ms: T0,
            stage: None,
            stream: LogStream::Agent,
            text: format!("line {seq}"),
        };
        let beat = HeartbeatRequest { current: None };
        let log = authenticated(&orchestrator, Endpoint::Log, &run_a, &token_a)
            .await
            .unwrap();
        let ack = writer
            .log(
                &log,
                LogBatch {
                    lines: vec![line(0)],
                },
            )
            .await
            .unwrap();
        assert_eq!(ack.next_seq, 1);
        // a request checked for one endpoint is refused at another
        assert!(matches!(
            writer.heartbeat(&log, &beat).await,
            Err(OrchestratorError::Internal(_))
        ));
        // the run ends: heartbeats during the grace, nothing else
        orchestrator
            .operator()
            .cancel(&run_a, &operator(), None)
            .await
            .unwrap();
        let heartbeat = authenticated(&orchestrator, Endpoint::Heartbeat, &run_a, &token_a)
            .await
            .unwrap();
        let log = authenticated(&orchestrator, Endpoint::Log, &run_a, &token_a)
            .await
            .unwrap();
        writer.heartbeat(&heartbeat, &beat).await.unwrap();
        assert!(matches!(
            writer
                .log(
                    &log,
                    LogBatch {
                        lines: vec![line(1)],
                    },
                )
                .await,
            Err(OrchestratorError::RunEnded { .. })
        ));
        clock.advance_secs(orchestrator.config().deadlines.token_grace_secs as i64 + 1);
        assert!(matches!(
            writer.heartbeat(&heartbeat, &beat).await,
            Err(OrchestratorError::RunEnded { .. })
        ));
        assert_eq!(
            orchestrator
                .operator()
                .get_run(&run_a)
                .await
                .unwrap()
                .next_log_seq,
            1
        );
    }
}

/// A group of writes that fails as a whole answers each of its writes with
/// the cause itself (here the log file's I/O error, its kind kept), not a
/// message turned back into an error; nothing of the batch is stored.
#[tokio::test]
async fn a_failed_group_of_writes_keeps_its_cause() {
    use vetting_core::agent::AgentWriteFailure;
    use vetting_probes::protocol::{LogBatch, LogLine, LogStream};

    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        let writer = AgentWriter::start(orchestrator.clone());
        let [(run_a, token_a), _] = two_booting_runs(&orchestrator).await;
        // the run's log folder is a file: the append cannot open its log
        let logs = vetting_core::runlogs::run_log_dir(&orchestrator.config().data_dir, &run_a);
        std::fs::create_dir_all(logs.parent().unwrap()).unwrap();
        std::fs::write(&logs, b"not a folder").unwrap();
        let log = authenticated(&orchestrator, Endpoint::Log, &run_a, &token_a)
            .await
            .unwrap();
        let error = writer
            .log(
                &log,
                LogBatch {
                    lines: vec![LogLine {
                        seq: 0,
                        at_ms: T0,
                        stage: None,
                        stream: LogStream::Agent,
                        text: "line 0".into(),
                    }],
                },
            )
            .await
            .unwrap_err();
        let OrchestratorError::AgentWrites(failure) = &error else {
            panic!("{}: {error:?}", db.name);
        };
        let AgentWriteFailure::Io(source) = failure.as_ref() else {
            panic!("{}: {failure:?}", db.name);
        };
        assert_eq!(
            source.kind(),
            std::io::ErrorKind::NotADirectory,
            "{}: {source}",
            db.name
        );
        // the chain is there for the log line of vetting-http
        let cause = std::error::Error::source(&error).unwrap();
        assert!(std::error::Error::source(cause).is_some(), "{error:?}");
        assert_eq!(
            orchestrator
                .operator()
                .get_run(&run_a)
                .await
                .unwrap()
                .next_log_seq,
            0
        );
    }
}
