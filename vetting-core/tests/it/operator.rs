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
        // the database keeps neither the secret nor its SHA-256
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
        assert!(stored[0].starts_with("$2"), "bcrypt: {}", stored[0]);

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
async fn a_verified_token_is_not_hashed_again_for_a_minute() {
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
    // the stored hash is replaced by one that matches nothing: the kept
    // verification still answers (bcrypt did not run again) ...
    let other = vetting_core::tokens::hash_token(
        "vtk1.ops.other",
        vetting_core::tokens::HashScheme::Sha256Bcrypt,
        4,
    )
    .unwrap();
    orchestrator
        .store()
        .db()
        .execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Sqlite,
            "UPDATE api_tokens SET token_hash = ?",
            [other.into()],
        ))
        .await
        .unwrap();
    clock.advance_secs(59);
    orchestrator
        .operator()
        .authenticate_api_token(&created.secret)
        .await
        .unwrap();
    // ... until it is a minute old: then bcrypt runs, and refuses
    clock.advance_secs(2);
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
