//! The operator service of issue 11, on SQLite and PostgreSQL: the list
//! pages (and that their queries read indexes), API tokens, the
//! dispatcher's pause across processes, metrics, hosts by name, edits
//! and CSV imports, stage retries through the real driver, and the
//! protocol version at hello. Each refusal is shown to change nothing.

use sea_orm::{ConnectionTrait, DatabaseBackend, QueryTrait, Statement};
use vetting_core::clock::ManualClock;
use vetting_core::error::OrchestratorError;
use vetting_core::events::HubEvent;
use vetting_core::machine::{Event, HoldReason, RunState, Stage};
use vetting_core::model::{Actor, NewHost};
use vetting_core::operator::{HostEdit, PageRequest, Role, RunFilter};
use vetting_core::orchestrator::Orchestrator;
use vetting_core::runs::EventContext;
use vetting_core::store::runs::RunsAfter;
use vetting_probes::protocol::{Endpoint, HelloRequest};

use crate::runs::{agent, booted_run, run_until, step};
use crate::support::{T0, config_for, host, open, operator, test_dbs};

fn page(limit: u32, before: Option<String>) -> PageRequest {
    PageRequest {
        limit: Some(limit),
        before,
    }
}

/// Every run of a filter, page by page (`limit` each), in page order.
async fn walk_runs(orchestrator: &Orchestrator, filter: RunFilter, limit: u32) -> Vec<String> {
    let mut seen = Vec::new();
    let mut before = None;
    for _ in 0..100 {
        let got = orchestrator
            .operator()
            .list_runs_page(filter.clone(), page(limit, before))
            .await
            .unwrap();
        assert!(got.items.len() <= limit as usize);
        seen.extend(got.items.into_iter().map(|run| run.id));
        match got.next {
            Some(next) => before = Some(next),
            None => return seen,
        }
    }
    panic!("the pages never ended");
}

#[tokio::test]
async fn run_and_host_pages_walk_newest_first_and_refuse_bad_cursors_and_limits() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        let mut hosts = Vec::new();
        for index in 0..5 {
            hosts.push(host(&orchestrator, index).await);
        }
        // two runs per host (the first cancelled), several in the same
        // millisecond: the id breaks the tie
        for (round, host_id) in hosts.iter().enumerate() {
            let run = orchestrator
                .operator()
                .create_run(*host_id, &operator())
                .await
                .unwrap();
            orchestrator
                .operator()
                .cancel(&run.id, &operator(), None)
                .await
                .unwrap();
            if round % 2 == 0 {
                clock.advance_ms(1);
            }
        }
        for host_id in &hosts {
            orchestrator
                .operator()
                .create_run(*host_id, &operator())
                .await
                .unwrap();
        }
        let all = orchestrator.operator().list_runs(None).await.unwrap();
        assert_eq!(all.len(), 10);
        let expected: Vec<String> = all.iter().map(|run| run.id.clone()).collect();
        for limit in [1, 3, 4, 10, 50] {
            assert_eq!(
                walk_runs(&orchestrator, RunFilter::default(), limit).await,
                expected,
                "{}: limit {limit}",
                db.name
            );
        }
        let cancelled: Vec<String> = all
            .iter()
            .filter(|run| run.state == RunState::Cancelled)
            .map(|run| run.id.clone())
            .collect();
        let by_state = RunFilter {
            state: Some(RunState::Cancelled),
            host_id: None,
        };
        assert_eq!(walk_runs(&orchestrator, by_state, 2).await, cancelled);
        let of_host: Vec<String> = orchestrator
            .operator()
            .list_runs(Some(hosts[2]))
            .await
            .unwrap()
            .into_iter()
            .map(|run| run.id)
            .collect();
        assert_eq!(of_host.len(), 2);
        let by_host = RunFilter {
            state: None,
            host_id: Some(hosts[2]),
        };
        assert_eq!(walk_runs(&orchestrator, by_host, 1).await, of_host);
        // the default limit is 50, more than 1000 is refused, 0 too
        let default = orchestrator
            .operator()
            .list_runs_page(RunFilter::default(), PageRequest::default())
            .await
            .unwrap();
        assert_eq!((default.items.len(), default.next), (10, None));
        for limit in [0, 1001] {
            let error = orchestrator
                .operator()
                .list_runs_page(RunFilter::default(), page(limit, None))
                .await
                .unwrap_err();
            assert!(matches!(error, OrchestratorError::BadRequest(_)), "{error}");
            assert!(error.to_string().contains("limit"), "{error}");
        }
        for cursor in ["not base64!", "bm9jb2xvbg", "eDox"] {
            let error = orchestrator
                .operator()
                .list_runs_page(RunFilter::default(), page(5, Some(cursor.into())))
                .await
                .unwrap_err();
            assert!(matches!(error, OrchestratorError::BadRequest(_)), "{error}");
            assert!(error.to_string().contains(cursor), "{error}");
        }
        // hosts by name, the removed ones only when asked for
        orchestrator
            .operator()
            .remove_host(hosts[0], &operator())
            .await
            .unwrap_err(); // it has a run in Registered
        let spare = host(&orchestrator, 9).await;
        orchestrator
            .operator()
            .remove_host(spare, &operator())
            .await
            .unwrap();
        let mut names = Vec::new();
        let mut before = None;
        loop {
            let got = orchestrator
                .operator()
                .list_hosts_page(false, page(2, before))
                .await
                .unwrap();
            for host in &got.items {
                assert_eq!(host.macs.len(), 1, "{}: the page's MACs", db.name);
            }
            names.extend(got.items.into_iter().map(|host| host.name));
            match got.next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        assert_eq!(names, ["host-0", "host-1", "host-2", "host-3", "host-4"]);
        let with_removed = orchestrator
            .operator()
            .list_hosts_page(true, page(10, None))
            .await
            .unwrap();
        assert_eq!(with_removed.items.len(), 6);
        assert!(
            orchestrator
                .operator()
                .list_hosts_page(false, page(2, Some("%%".into())))
                .await
                .is_err()
        );
    }
}

/// The plan SQLite makes for `statement`, one line per step.
async fn plan(orchestrator: &Orchestrator, statement: Statement) -> Vec<String> {
    let explained = Statement::from_sql_and_values(
        DatabaseBackend::Sqlite,
        format!("EXPLAIN QUERY PLAN {}", statement.sql),
        statement.values.map(|values| values.0).unwrap_or_default(),
    );
    orchestrator
        .store()
        .db()
        .query_all_raw(explained)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.try_get::<String>("", "detail").unwrap())
        .collect()
}

#[tokio::test]
async fn the_list_pages_read_indexes_never_whole_tables() {
    let db = crate::support::sqlite_db();
    let clock = ManualClock::new(T0);
    let orchestrator = open(config_for(&db), &clock).await;
    let after = RunsAfter {
        created_at_ms: T0,
        id: "7f0c".into(),
    };
    use vetting_core::store::{hosts, runs};
    let mut statements = Vec::new();
    for state in [None, Some(RunState::Queued)] {
        for host_id in [None, Some(3)] {
            for cursor in [None, Some(&after)] {
                statements.push((
                    format!("runs state {state:?} host {host_id:?} after {cursor:?}"),
                    runs::page_select(state, host_id, cursor, 101).build(DatabaseBackend::Sqlite),
                ));
            }
        }
    }
    for include_removed in [false, true] {
        for cursor in [None, Some("host-7")] {
            statements.push((
                format!("hosts removed {include_removed} after {cursor:?}"),
                hosts::page_select(include_removed, cursor, 101).build(DatabaseBackend::Sqlite),
            ));
        }
    }
    statements.push((
        "a page's MACs".into(),
        hosts::macs_select(vec![1, 2, 3]).build(DatabaseBackend::Sqlite),
    ));
    for (what, statement) in statements {
        let steps = plan(&orchestrator, statement).await;
        assert!(!steps.is_empty(), "{what}");
        for step in &steps {
            // a scan in index order (stopped by the LIMIT) is fine; a
            // table scan or a sort of the whole result is not
            let whole_table = ["SCAN runs", "SCAN hosts", "SCAN host_macs"]
                .iter()
                .any(|scan| {
                    step == scan || step.starts_with(&format!("{scan} ")) && !step.contains("USING")
                });
            assert!(!whole_table, "{what}: {steps:?}");
            assert!(!step.contains("TEMP B-TREE"), "{what}: {steps:?}");
        }
        assert!(
            steps.iter().any(|step| step.contains("INDEX")),
            "{what}: {steps:?}"
        );
    }
}

fn admin() -> Actor {
    Actor::operator("root")
}

#[tokio::test]
async fn api_tokens_are_shown_once_stored_hashed_and_revoked_at_once_in_every_process() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let first = open(config_for(&db), &clock).await;
        let second = open(config_for(&db), &clock).await;
        let created = first
            .operator()
            .create_api_token("ci.bot-1", Role::Operator, &admin())
            .await
            .unwrap();
        assert!(
            created.secret.starts_with("vtk1.ci.bot-1."),
            "{}",
            created.secret
        );
        assert_eq!(created.token.role, Role::Operator);
        assert_eq!(created.token.created_by, admin().as_str());
        // the database keeps neither the secret nor its SHA-256: a keyed
        // digest, which a dump alone cannot check a guess against
        let stored: Vec<String> = first
            .store()
            .db()
            .query_all_raw(Statement::from_string(
                first.store().backend(),
                "SELECT token_hash FROM api_tokens",
            ))
            .await
            .unwrap()
            .into_iter()
            .map(|row| row.try_get::<String>("", "token_hash").unwrap())
            .collect();
        assert_eq!(stored.len(), 1);
        let secret_part = created.secret.rsplit('.').next().unwrap();
        assert!(!stored[0].contains(secret_part));
        let plain = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            created.secret.as_bytes(),
        ));
        assert!(!stored[0].contains(&plain), "{}", stored[0]);
        assert!(stored[0].starts_with("hmac-sha256:"), "{}", stored[0]);

        let who = second
            .operator()
            .authenticate_api_token(&created.secret)
            .await
            .unwrap();
        assert_eq!(who.name, "token:ci.bot-1");
        assert_eq!(who.role, Role::Operator);
        assert_eq!(who.actor().as_str(), "token:ci.bot-1");
        let listed = first.operator().list_api_tokens().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].last_used_at_ms, Some(T0), "{}", db.name);

        // wrong, unknown and malformed tokens are all BadCredentials
        let mut wrong = created.secret.clone().into_bytes();
        let last = wrong.len() - 3;
        wrong[last] = if wrong[last] == b'A' { b'B' } else { b'A' };
        let wrong = String::from_utf8(wrong).unwrap();
        let unknown = created.secret.replace("ci.bot-1", "nobody");
        for bad in [
            wrong.as_str(),
            unknown.as_str(),
            "vtk1.ci.bot-1.short",
            "Bearer x",
            "",
        ] {
            let error = second
                .operator()
                .authenticate_api_token(bad)
                .await
                .unwrap_err();
            assert!(
                matches!(error, OrchestratorError::BadCredentials),
                "{bad}: {error}"
            );
        }
        // a name is unique among live tokens; names are checked
        let error = first
            .operator()
            .create_api_token("ci.bot-1", Role::Admin, &admin())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("ci.bot-1"), "{error}");
        for bad in ["", "with space", "slash/no", &"x".repeat(65)] {
            assert!(
                first
                    .operator()
                    .create_api_token(bad, Role::Viewer, &admin())
                    .await
                    .is_err(),
                "{bad}"
            );
        }
        assert_eq!(first.operator().list_api_tokens().await.unwrap().len(), 1);

        // `second` verified it and keeps the verification; revoking in
        // `first` stops it in `second` at once
        second
            .operator()
            .authenticate_api_token(&created.secret)
            .await
            .unwrap();
        let revoked = first
            .operator()
            .revoke_api_token("ci.bot-1", &admin())
            .await
            .unwrap();
        assert_eq!(revoked.revoked_at_ms, Some(T0));
        for orchestrator in [&first, &second] {
            let error = orchestrator
                .operator()
                .authenticate_api_token(&created.secret)
                .await
                .unwrap_err();
            assert!(
                matches!(error, OrchestratorError::BadCredentials),
                "{error}"
            );
        }
        let error = first
            .operator()
            .revoke_api_token("ci.bot-1", &admin())
            .await
            .unwrap_err();
        assert!(
            matches!(error, OrchestratorError::ApiTokenNotFound(_)),
            "{error}"
        );
        // the name can be used again; the old secret stays dead
        let again = first
            .operator()
            .create_api_token("ci.bot-1", Role::Viewer, &admin())
            .await
            .unwrap();
        assert_ne!(again.secret, created.secret);
        assert!(
            second
                .operator()
                .authenticate_api_token(&created.secret)
                .await
                .is_err()
        );
        assert_eq!(
            second
                .operator()
                .authenticate_api_token(&again.secret)
                .await
                .unwrap()
                .role,
            Role::Viewer
        );
        let audit: Vec<String> = first
            .operator()
            .audit_log(None)
            .await
            .unwrap()
            .into_iter()
            .map(|record| record.action)
            .filter(|action| action.contains("api_token"))
            .collect();
        assert_eq!(
            audit,
            ["create_api_token", "revoke_api_token", "create_api_token"],
            "{}",
            db.name
        );
    }
}

#[tokio::test]
async fn a_token_is_checked_against_its_stored_digest_at_every_request() {
    let db = crate::support::sqlite_db();
    let clock = ManualClock::new(T0);
    let orchestrator = open(config_for(&db), &clock).await;
    let created = orchestrator
        .operator()
        .create_api_token("ops", Role::Admin, &admin())
        .await
        .unwrap();
    orchestrator
        .operator()
        .authenticate_api_token(&created.secret)
        .await
        .unwrap();
    // the digest of another token put in its place: refused at the next
    // request, nothing kept in memory answers for the row
    let other = orchestrator
        .operator()
        .create_api_token("other", Role::Admin, &admin())
        .await
        .unwrap();
    orchestrator
        .store()
        .db()
        .execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Sqlite,
            "UPDATE api_tokens SET token_hash = (SELECT token_hash FROM api_tokens WHERE name = 'other') WHERE name = ?",
            ["ops".into()],
        ))
        .await
        .unwrap();
    let error = orchestrator
        .operator()
        .authenticate_api_token(&created.secret)
        .await
        .unwrap_err();
    assert!(
        matches!(error, OrchestratorError::BadCredentials),
        "{error}"
    );
    orchestrator
        .operator()
        .authenticate_api_token(&other.secret)
        .await
        .unwrap();
    // a secret of the right shape for a known name, one character off
    let mut wrong = other.secret.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    assert!(matches!(
        orchestrator.operator().authenticate_api_token(&wrong).await,
        Err(OrchestratorError::BadCredentials)
    ));
}

#[tokio::test]
async fn a_paused_dispatcher_starts_no_run_in_any_process_and_keeps_the_pause_over_a_restart() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let first = open(config_for(&db), &clock).await;
        let second = open(config_for(&db), &clock).await;
        // a run in flight before the pause goes on
        let in_flight = booted_run(&first, 1).await;
        let status = first.operator().pause_dispatch(&admin()).await.unwrap();
        assert!(status.paused);
        assert_eq!(status.paused_by.as_deref(), Some(admin().as_str()));
        assert_eq!(status.paused_at_ms, Some(T0));
        assert_eq!(status.slots_in_use, 1);
        // idempotent: the first pause's who and when stay
        clock.advance_secs(5);
        let again = second.operator().pause_dispatch(&operator()).await.unwrap();
        assert_eq!(again.paused_at_ms, Some(T0));
        assert_eq!(again.paused_by.as_deref(), Some(admin().as_str()));

        let host_id = host(&second, 2).await;
        let queued = second
            .operator()
            .start_run(host_id, &operator())
            .await
            .unwrap();
        assert_eq!(queued.state, RunState::Queued);
        for orchestrator in [&first, &second] {
            assert!(orchestrator.runs().dispatch().await.unwrap().is_empty());
        }
        // the check is inside the dispatch's transaction too
        let error = first
            .runs()
            .apply(
                &queued.id,
                Event::Dispatch,
                EventContext {
                    expected_state: Some(RunState::Queued),
                    ..agent()
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, OrchestratorError::DispatchPaused),
            "{error}"
        );
        let still = second.operator().get_run(&queued.id).await.unwrap();
        assert_eq!(
            (still.state, still.version),
            (RunState::Queued, queued.version)
        );
        let status = second.operator().dispatch_status().await.unwrap();
        assert_eq!((status.paused, status.queued), (true, 1), "{}", db.name);
        // runs in flight make their own transitions
        assert_eq!(
            step(&first, &in_flight, Event::Hello).await,
            RunState::Booting
        );
        assert_eq!(
            step(&second, &in_flight, Event::Claim).await,
            RunState::InventoryCheck
        );

        // a restart keeps the pause
        drop(first);
        let reopened = open(config_for(&db), &clock).await;
        assert!(reopened.operator().dispatch_status().await.unwrap().paused);
        assert!(reopened.runs().dispatch().await.unwrap().is_empty());

        let resumed = second.operator().resume_dispatch(&admin()).await.unwrap();
        assert!(!resumed.paused);
        assert_eq!((resumed.paused_by, resumed.paused_at_ms), (None, None));
        assert_eq!(
            reopened.runs().dispatch().await.unwrap(),
            vec![queued.id.clone()],
            "{}",
            db.name
        );
        let actions: Vec<String> = second
            .operator()
            .audit_log(None)
            .await
            .unwrap()
            .into_iter()
            .map(|record| record.action)
            .filter(|action| action.ends_with("_dispatch"))
            .collect();
        assert_eq!(
            actions,
            ["pause_dispatch", "pause_dispatch", "resume_dispatch"]
        );
    }
}

#[tokio::test]
async fn run_metrics_count_every_state_the_queue_slots_and_failed_stages() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let mut config = config_for(&db);
        config.dispatcher.max_in_flight = 2;
        let orchestrator = open(config, &clock).await;
        let failing = booted_run(&orchestrator, 1).await;
        run_until(&orchestrator, &failing, RunState::Smart).await;
        step(&orchestrator, &failing, Event::StageFailed).await;
        let _testing = booted_run(&orchestrator, 2).await;
        let mut queued = Vec::new();
        for index in 3..5 {
            let host_id = host(&orchestrator, index).await;
            queued.push(
                orchestrator
                    .operator()
                    .start_run(host_id, &operator())
                    .await
                    .unwrap(),
            );
        }
        orchestrator.runs().dispatch().await.unwrap();
        let metrics = orchestrator.operator().run_metrics().await.unwrap();
        assert_eq!(metrics.runs_by_state.len(), RunState::ALL.len());
        let count = |state: RunState| {
            metrics
                .runs_by_state
                .iter()
                .find(|(s, _)| *s == state)
                .unwrap()
                .1
        };
        assert_eq!(count(RunState::FailedHolding), 1, "{}", db.name);
        assert_eq!(count(RunState::Booting), 1);
        // the held run freed its slot: one of the queued took it
        assert_eq!(count(RunState::WaitingWoL), 1);
        assert_eq!(count(RunState::Queued), 1);
        assert_eq!(count(RunState::Completed), 0);
        assert_eq!(metrics.queued, 1);
        assert_eq!((metrics.slots_total, metrics.slots_in_use), (2, 2));
        assert_eq!(metrics.stage_failures, vec![("SMART".to_string(), 1)]);
    }
}

async fn register(orchestrator: &Orchestrator, name: &str, macs: &[&str]) -> i64 {
    orchestrator
        .operator()
        .register_host(
            NewHost {
                name: name.into(),
                macs: macs.iter().map(|mac| mac.to_string()).collect(),
                ..Default::default()
            },
            &admin(),
        )
        .await
        .unwrap()
        .id
}

/// Everything an import or edit could change, to compare before and after
/// a refusal.
async fn fingerprint(orchestrator: &Orchestrator) -> String {
    let hosts = orchestrator.operator().list_hosts(true).await.unwrap();
    let audit = orchestrator.operator().audit_log(None).await.unwrap();
    format!("{hosts:?} {}", audit.len())
}

#[tokio::test]
async fn hosts_are_found_by_name_and_edited_with_the_checks_of_registering() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        orchestrator
            .operator()
            .put_spec_profile("dl380", "schema_version: 1\n", &admin())
            .await
            .unwrap();
        let edited = register(&orchestrator, "rack1-u01", &["02:00:00:00:01:01"]).await;
        let other = register(&orchestrator, "rack1-u02", &["02:00:00:00:01:02"]).await;
        let found = orchestrator
            .operator()
            .host_by_name("rack1-u01")
            .await
            .unwrap();
        assert_eq!(found.id, edited);
        let error = orchestrator
            .operator()
            .host_by_name("rack9-u99")
            .await
            .unwrap_err();
        assert!(
            matches!(error, OrchestratorError::HostNotFound(_)),
            "{error}"
        );
        assert!(error.to_string().contains("rack9-u99"), "{error}");

        let mut events = orchestrator.hub().subscribe();
        let before = fingerprint(&orchestrator).await;
        let refused: Vec<(HostEdit, &str)> = vec![
            (
                HostEdit {
                    add_macs: vec!["02:00:00:00:01:02".into()],
                    ..Default::default()
                },
                "rack1-u02",
            ),
            (
                HostEdit {
                    add_macs: vec!["02:00:00:00:01:zz".into()],
                    ..Default::default()
                },
                "zz",
            ),
            (
                HostEdit {
                    remove_macs: vec!["02:00:00:00:01:01".into()],
                    ..Default::default()
                },
                "at least one MAC",
            ),
            (
                HostEdit {
                    remove_macs: vec!["02:00:00:00:01:02".into()],
                    ..Default::default()
                },
                "not this host's",
            ),
            (
                HostEdit {
                    rename: Some("rack1-u02".into()),
                    ..Default::default()
                },
                "rack1-u02",
            ),
            (
                HostEdit {
                    spec_profile: Some("dl38O".into()),
                    ..Default::default()
                },
                "dl38O",
            ),
            (
                HostEdit {
                    power: Some(serde_json::json!({"driver": "ipmi"})),
                    ..Default::default()
                },
                "power",
            ),
            (
                HostEdit {
                    power: Some(serde_json::json!("telnet")),
                    ..Default::default()
                },
                "telnet",
            ),
            (
                HostEdit {
                    rename: Some("\u{7}".into()),
                    ..Default::default()
                },
                "printable",
            ),
        ];
        for (edit, says) in refused {
            let error = orchestrator
                .operator()
                .edit_host(edited, edit.clone(), &admin())
                .await
                .unwrap_err();
            assert!(error.to_string().contains(says), "{edit:?}: {error}");
        }
        assert_eq!(fingerprint(&orchestrator).await, before, "{}", db.name);

        let changed = orchestrator
            .operator()
            .edit_host(
                edited,
                HostEdit {
                    rename: Some("rack1-u01b".into()),
                    add_macs: vec!["02-00-00-00-01-0A".into()],
                    remove_macs: vec!["02:00:00:00:01:01".into()],
                    serial: Some("CZ123".into()),
                    spec_profile: Some("dl380".into()),
                    power: Some(serde_json::json!("wol")),
                },
                &admin(),
            )
            .await
            .unwrap();
        assert_eq!(changed.name, "rack1-u01b");
        assert_eq!(
            changed.macs.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
            ["02:00:00:00:01:0a"]
        );
        assert_eq!(changed.serial.as_deref(), Some("CZ123"));
        assert_eq!(changed.spec_profile.as_deref(), Some("dl380"));
        assert_eq!(
            changed.power,
            Some(serde_json::json!({"driver": "wol", "mac": "02:00:00:00:01:0a"}))
        );
        let mut hosts_changed = false;
        while let Ok(event) = events.try_recv() {
            hosts_changed |= matches!(event, HubEvent::HostsChanged);
        }
        assert!(hosts_changed, "a MAC change reaches the DHCP allowlist");
        // the freed MAC is free: another host may take it
        orchestrator
            .operator()
            .edit_host(
                other,
                HostEdit {
                    add_macs: vec!["02:00:00:00:01:01".into()],
                    ..Default::default()
                },
                &admin(),
            )
            .await
            .unwrap();
        // empty text clears, null clears the power
        let cleared = orchestrator
            .operator()
            .edit_host(
                edited,
                HostEdit {
                    serial: Some(String::new()),
                    spec_profile: Some(String::new()),
                    power: Some(serde_json::Value::Null),
                    ..Default::default()
                },
                &admin(),
            )
            .await
            .unwrap();
        assert_eq!(
            (cleared.serial, cleared.spec_profile, cleared.power),
            (None, None, None)
        );
        let audit = orchestrator.operator().audit_log(None).await.unwrap();
        let edit = audit.iter().find(|r| r.action == "edit_host").unwrap();
        let detail: serde_json::Value =
            serde_json::from_str(edit.detail.as_deref().unwrap()).unwrap();
        assert_eq!(detail["name"]["to"], "rack1-u01b");
        assert_eq!(
            detail["added_macs"],
            serde_json::json!(["02:00:00:00:01:0a"])
        );

        // while a run is in flight its MACs stay; the rest may change
        let run = orchestrator
            .operator()
            .start_run(edited, &operator())
            .await
            .unwrap();
        let error = orchestrator
            .operator()
            .edit_host(
                edited,
                HostEdit {
                    add_macs: vec!["02:00:00:00:01:0b".into()],
                    ..Default::default()
                },
                &admin(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&error, OrchestratorError::HostBusy { run_id, .. } if *run_id == run.id),
            "{error}"
        );
        orchestrator
            .operator()
            .edit_host(
                edited,
                HostEdit {
                    serial: Some("CZ999".into()),
                    ..Default::default()
                },
                &admin(),
            )
            .await
            .unwrap();
        // a removed host is not found by name and cannot be edited
        orchestrator
            .operator()
            .remove_host(other, &admin())
            .await
            .unwrap();
        assert!(
            orchestrator
                .operator()
                .host_by_name("rack1-u02")
                .await
                .is_err()
        );
        let error = orchestrator
            .operator()
            .edit_host(other, HostEdit::default(), &admin())
            .await
            .unwrap_err();
        assert!(
            matches!(error, OrchestratorError::HostNotFound(_)),
            "{error}"
        );
    }
}

const GOOD_ROWS: &str = "rack2-u01,02:00:00:00:02:01,SER1,dl380,wol
rack2-u02,02:00:00:00:02:02 02:00:00:00:02:12,,,manual
rack2-u03,02:00:00:00:02:03;02:00:00:00:02:13,SER3,,\"{\"\"driver\"\": \"\"manual\"\", \"\"note\"\": \"\"row C\"\"}\"
";

#[tokio::test]
async fn an_import_with_any_bad_row_names_each_and_writes_nothing() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        orchestrator
            .operator()
            .put_spec_profile("dl380", "schema_version: 1\n", &admin())
            .await
            .unwrap();
        register(&orchestrator, "rack1-u01", &["02:00:00:00:01:01"]).await;
        let before = fingerprint(&orchestrator).await;
        let header = "name,macs,serial,profile,power\n";
        let bad = format!(
            "{header}{GOOD_ROWS}\
             rack2-u04,02:00:00:00:02:zz,,,\n\
             rack2-u01,02:00:00:00:02:05,,,\n\
             rack2-u06,02:00:00:00:02:01,,,\n\
             rack2-u07,02:00:00:00:01:01,,,\n\
             rack1-u01,02:00:00:00:02:08,,,\n\
             rack2-u09,02:00:00:00:02:09,,dl38O,\n\
             rack2-u10,02:00:00:00:02:10,,\n\
             rack2-u11,02:00:00:00:02:11,,,ipmi\n\
             rack2-u14,,,,\n"
        );
        let error = orchestrator
            .operator()
            .import_hosts_csv(&bad, &admin())
            .await
            .unwrap_err();
        let OrchestratorError::ImportRejected { rows } = &error else {
            panic!("{error}");
        };
        let lines: Vec<usize> = rows.iter().map(|row| row.line).collect();
        assert_eq!(
            lines,
            [5, 6, 7, 8, 9, 10, 11, 12, 13],
            "{}: {rows:?}",
            db.name
        );
        let says = [
            "zz",
            "also on line 2",
            "MAC 02:00:00:00:02:01 is also on line 2",
            "already belongs to host `rack1-u01`",
            "a host named `rack1-u01` exists",
            "`dl38O` does not exist",
            "4 columns",
            "ipmi",
            "at least one MAC",
        ];
        for (row, says) in rows.iter().zip(says) {
            assert!(
                row.message.contains(says),
                "line {}: {}",
                row.line,
                row.message
            );
        }
        assert!(error.to_string().contains("line 5:"), "{error}");
        assert_eq!(fingerprint(&orchestrator).await, before, "{}", db.name);
        // a wrong header, an empty file
        for text in [
            "name,mac\nx,02:00:00:00:02:01\n",
            "name,macs,serial,profile,power\n",
        ] {
            let error = orchestrator
                .operator()
                .import_hosts_csv(text, &admin())
                .await
                .unwrap_err();
            let OrchestratorError::ImportRejected { rows } = &error else {
                panic!("{error}");
            };
            assert_eq!(rows[0].line, 1, "{rows:?}");
        }
        assert_eq!(fingerprint(&orchestrator).await, before);

        let imported = orchestrator
            .operator()
            .import_hosts_csv(&format!("{header}{GOOD_ROWS}"), &admin())
            .await
            .unwrap();
        let names: Vec<&str> = imported.iter().map(|host| host.name.as_str()).collect();
        assert_eq!(names, ["rack2-u01", "rack2-u02", "rack2-u03"]);
        let second = orchestrator
            .operator()
            .host_by_name("rack2-u02")
            .await
            .unwrap();
        assert_eq!(second.macs.len(), 2);
        assert_eq!(second.power, Some(serde_json::json!({"driver": "manual"})));
        let first = orchestrator
            .operator()
            .host_by_name("rack2-u01")
            .await
            .unwrap();
        assert_eq!(first.spec_profile.as_deref(), Some("dl380"));
        assert_eq!(first.serial.as_deref(), Some("SER1"));
        assert_eq!(
            first.power,
            Some(serde_json::json!({"driver": "wol", "mac": "02:00:00:00:02:01"}))
        );
        let third = orchestrator
            .operator()
            .host_by_name("rack2-u03")
            .await
            .unwrap();
        assert_eq!(third.power.unwrap()["note"], "row C");
        let registered = orchestrator
            .operator()
            .audit_log(None)
            .await
            .unwrap()
            .into_iter()
            .filter(|record| record.action == "register_host")
            .count();
        assert_eq!(registered, 4, "one audit record per imported host");
        // the same file again: every row is a duplicate now
        let error = orchestrator
            .operator()
            .import_hosts_csv(&format!("{header}{GOOD_ROWS}"), &admin())
            .await
            .unwrap_err();
        assert!(matches!(&error, OrchestratorError::ImportRejected { rows } if rows.len() == 3));
    }
}

/// Fails the run's current stage (the hold opens: `hold_on_failure`).
async fn fail(orchestrator: &Orchestrator, run_id: &str) {
    let applied = orchestrator
        .runs()
        .apply(
            run_id,
            Event::StageFailed,
            EventContext {
                reason: Some("badblocks: 3 bad blocks on sdb".into()),
                ..agent()
            },
        )
        .await
        .unwrap();
    assert_eq!(applied.state, RunState::FailedHolding);
}

#[tokio::test]
async fn a_failed_stage_is_retried_as_a_new_attempt_and_the_run_goes_on() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let mut config = config_for(&db);
        config.dispatcher.max_in_flight = 1;
        let orchestrator = open(config, &clock).await;
        let run_id = booted_run(&orchestrator, 1).await;
        run_until(&orchestrator, &run_id, RunState::Storage).await;
        // refused while the run is testing
        let error = orchestrator
            .operator()
            .retry_stage(&run_id, Stage::Storage, &operator())
            .await
            .unwrap_err();
        assert!(
            matches!(error, OrchestratorError::InvalidTransition { .. }),
            "{error}"
        );
        fail(&orchestrator, &run_id).await;
        let held = orchestrator.operator().get_run(&run_id).await.unwrap();
        assert_eq!(held.hold_reason, Some(HoldReason::Failure));
        // not a stage after the one that failed
        let error = orchestrator
            .operator()
            .retry_stage(&run_id, Stage::Network, &operator())
            .await
            .unwrap_err();
        assert!(matches!(error, OrchestratorError::BadRequest(_)), "{error}");
        assert!(
            error.to_string().contains("Network comes after Storage"),
            "{error}"
        );
        // not while another run holds the only slot
        let blocking = booted_run(&orchestrator, 2).await;
        let error = orchestrator
            .operator()
            .retry_stage(&run_id, Stage::Storage, &operator())
            .await
            .unwrap_err();
        assert!(
            matches!(error, OrchestratorError::NoSlotFree { .. }),
            "{error}"
        );
        let unchanged = orchestrator.operator().get_run(&run_id).await.unwrap();
        assert_eq!(unchanged.version, held.version, "{}", db.name);
        orchestrator
            .operator()
            .cancel(&blocking, &operator(), None)
            .await
            .unwrap();

        let applied = orchestrator
            .operator()
            .retry_stage(&run_id, Stage::Storage, &operator())
            .await
            .unwrap();
        assert_eq!(
            (applied.from, applied.to),
            (RunState::FailedHolding, RunState::Storage)
        );
        let retried = orchestrator.operator().get_run(&run_id).await.unwrap();
        assert_eq!(retried.current.unwrap().attempt, 2, "{}", db.name);
        assert_eq!(retried.hold_reason, None);
        assert!(retried.override_flags.is_empty());
        assert_eq!(
            orchestrator.runs().slots_in_use().await.unwrap(),
            vec![run_id.clone()]
        );
        // the agent, which held at attempt 1, is told to retry the stage
        assert_eq!(
            vetting_core::agent::command_for(&retried, held.current),
            vetting_probes::protocol::Command::RetryStage
        );
        let storage: Vec<_> = orchestrator
            .operator()
            .stages(&run_id)
            .await
            .unwrap()
            .into_iter()
            .filter(|stage| stage.stage == "Storage")
            .collect();
        assert_eq!(storage.len(), 2);
        assert_eq!(
            (storage[0].attempt, storage[0].outcome.as_str()),
            (1, "failed")
        );
        assert_eq!(
            (storage[1].attempt, storage[1].outcome.as_str()),
            (2, "running")
        );
        let record = orchestrator
            .operator()
            .audit_log(Some(&run_id))
            .await
            .unwrap()
            .into_iter()
            .find(|record| record.action == "retry_stage")
            .unwrap();
        assert_eq!(record.actor, operator().as_str());
        let detail: serde_json::Value =
            serde_json::from_str(record.detail.as_deref().unwrap()).unwrap();
        assert_eq!(detail["stage"], "Storage");
        // the run proceeds from the retried stage
        assert_eq!(
            step(&orchestrator, &run_id, Event::StagePassed).await,
            RunState::Network
        );
        // fails again in Network: an earlier stage may be retried too
        fail(&orchestrator, &run_id).await;
        orchestrator
            .operator()
            .retry_stage(&run_id, Stage::Smart, &operator())
            .await
            .unwrap();
        let smart = orchestrator.operator().get_run(&run_id).await.unwrap();
        assert_eq!(
            (smart.state, smart.current.unwrap().attempt),
            (RunState::Smart, 2)
        );

        // a wipe hold is overridden, not retried
        orchestrator
            .operator()
            .cancel(&run_id, &operator(), None)
            .await
            .unwrap();
        let wiped = booted_run(&orchestrator, 3).await;
        run_until(&orchestrator, &wiped, RunState::Storage).await;
        orchestrator
            .runs()
            .apply(
                &wiped,
                Event::StageHeld,
                EventContext {
                    hold_reason: Some(HoldReason::WipeSignatures),
                    ..agent()
                },
            )
            .await
            .unwrap();
        let error = orchestrator
            .operator()
            .retry_stage(&wiped, Stage::Storage, &operator())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("override"), "{error}");
        // a run that ended cannot be retried
        let error = orchestrator
            .operator()
            .retry_stage(&run_id, Stage::Smart, &operator())
            .await
            .unwrap_err();
        assert!(
            matches!(error, OrchestratorError::InvalidTransition { .. }),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_completed_run_cannot_retry_a_stage() {
    let db = crate::support::sqlite_db();
    let clock = ManualClock::new(T0);
    let orchestrator = open(config_for(&db), &clock).await;
    let run_id = booted_run(&orchestrator, 1).await;
    run_until(&orchestrator, &run_id, RunState::Psu).await;
    let mut events = orchestrator.hub().subscribe();
    step(&orchestrator, &run_id, Event::StagePassed).await;
    // the report worker moves Reporting on to Completed (announced)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut run = orchestrator.operator().get_run(&run_id).await.unwrap();
    while run.state != RunState::Completed && std::time::Instant::now() < deadline {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), events.recv()).await;
        run = orchestrator.operator().get_run(&run_id).await.unwrap();
    }
    assert_eq!(run.state, RunState::Completed);
    let error = orchestrator
        .operator()
        .retry_stage(&run_id, Stage::Psu, &operator())
        .await
        .unwrap_err();
    assert!(
        matches!(error, OrchestratorError::InvalidTransition { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("Completed"), "{error}");
    assert_eq!(
        orchestrator
            .operator()
            .get_run(&run_id)
            .await
            .unwrap()
            .version,
        run.version
    );
}

#[tokio::test]
async fn an_agent_speaking_another_protocol_version_is_refused_at_hello_and_nothing_changes() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        let run_id = booted_run(&orchestrator, 1).await;
        let before = orchestrator.operator().get_run(&run_id).await.unwrap();
        let token = orchestrator.agent().token_for(&run_id).await.unwrap();
        let hello = |protocol_version| HelloRequest {
            protocol_version,
            agent_version: "t".into(),
            addresses: Vec::new(),
            boot_id: None,
        };
        let request = orchestrator
            .agent()
            .authenticate(Endpoint::Hello, &run_id, &token, None)
            .await
            .unwrap();
        let error = orchestrator
            .agent()
            .hello_request(&request, &hello(2))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                OrchestratorError::ProtocolMismatch {
                    agent: 2,
                    server: 1
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("version 2"), "{error}");
        let after = orchestrator.operator().get_run(&run_id).await.unwrap();
        assert_eq!(after.version, before.version, "{}", db.name);
        assert_eq!(after.hello_at_ms, None);
        assert_eq!(
            orchestrator
                .operator()
                .transitions(Some(&run_id))
                .await
                .unwrap()
                .len(),
            3
        );
        // the token still works: the right agent says hello
        let request = orchestrator
            .agent()
            .authenticate(Endpoint::Hello, &run_id, &token, None)
            .await
            .unwrap();
        let run = orchestrator
            .agent()
            .hello_request(&request, &hello(vetting_probes::protocol::PROTOCOL_VERSION))
            .await
            .unwrap();
        assert_eq!(run.hello_at_ms, Some(T0));
    }
}

/// A BMC password given in plain text (`password_plaintext`) is stored
/// only encrypted with the secret key, whether the host is registered,
/// edited or imported; the plain text is in no table.
#[tokio::test]
async fn a_plain_text_bmc_password_is_stored_only_encrypted() {
    let db = crate::support::sqlite_db();
    let clock = ManualClock::new(T0);
    let orchestrator = open(config_for(&db), &clock).await;
    let operator = orchestrator.operator();
    let ipmi = |password: &str| {
        serde_json::json!({
            "driver": "ipmi", "host": "127.0.0.1", "username": "admin",
            "password_plaintext": password,
        })
    };
    let registered = operator
        .register_host(
            NewHost {
                name: "bmc-1".into(),
                macs: vec!["52:54:00:00:10:01".into()],
                power: Some(ipmi("first-secret")),
                ..Default::default()
            },
            &admin(),
        )
        .await
        .unwrap();
    let edited = operator
        .edit_host(
            registered.id,
            HostEdit {
                power: Some(ipmi("second-secret")),
                ..Default::default()
            },
            &admin(),
        )
        .await
        .unwrap();
    let cell = ipmi("third-secret").to_string().replace('"', "\"\"");
    let imported = operator
        .import_hosts_csv(
            &format!("name,macs,serial,profile,power\nbmc-2,52:54:00:00:10:02,,,\"{cell}\"\n"),
            &admin(),
        )
        .await
        .unwrap();
    let key = orchestrator.key().bytes();
    for (host, plain) in [(&edited, "second-secret"), (&imported[0], "third-secret")] {
        let power = host.power.clone().unwrap();
        assert!(power.get("password_plaintext").is_none(), "{power}");
        let settings: vetting_core::power::PowerSettings = serde_json::from_value(power).unwrap();
        let vetting_core::power::PowerSettings::Ipmi(ipmi) = settings else {
            panic!("not IPMI: {settings:?}");
        };
        assert_eq!(ipmi.password.decrypt(key).unwrap().expose(), plain);
    }
    // no table holds any of the three in plain text
    // the database file and its write-ahead log, byte for byte
    let mut dump = String::new();
    for file in ["vetting.db", "vetting.db-wal"] {
        if let Ok(bytes) = std::fs::read(db.dir.path().join(file)) {
            dump.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    assert!(dump.contains("bmc-2"), "the dump is not the database");
    for plain in ["first-secret", "second-secret", "third-secret"] {
        assert!(!dump.contains(plain), "{plain} is stored in plain text");
    }
    // both forms at once are refused, naming the field
    let error = operator
        .edit_host(
            registered.id,
            HostEdit {
                power: Some(serde_json::json!({
                    "driver": "ipmi", "host": "127.0.0.1", "username": "admin",
                    "password": "v1:AAAA", "password_plaintext": "x",
                })),
                ..Default::default()
            },
            &admin(),
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("password_plaintext"), "{error}");
}
