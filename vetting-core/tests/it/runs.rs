//! Runs walk the state machine through the orchestrator, on SQLite and
//! PostgreSQL: the happy path, a failure at each testing stage, holds,
//! overrides, release, cancel from every non-terminal state, audit records
//! and deadlines (with an injected clock: nothing sleeps).

use vetting_core::agent::AgentWriter;
use vetting_core::clock::ManualClock;
use vetting_core::error::OrchestratorError;
use vetting_core::machine::{Event, HoldReason, RunState, Stage, state_of};
use vetting_core::model::Actor;
use vetting_core::orchestrator::Orchestrator;
use vetting_core::runs::EventContext;
use vetting_probes::protocol::{Endpoint, HeartbeatRequest};

use crate::support::{T0, config_for, host, open, operator, test_dbs};

pub(crate) fn agent() -> EventContext {
    EventContext {
        actor: Some(Actor::agent()),
        ..Default::default()
    }
}

pub(crate) async fn step(orchestrator: &Orchestrator, run_id: &str, event: Event) -> RunState {
    orchestrator
        .runs()
        .apply(run_id, event, agent())
        .await
        .unwrap()
        .to
}

/// Drives a fresh run to `Booting` (queued, dispatched, powered on).
pub(crate) async fn booted_run(orchestrator: &Orchestrator, index: u32) -> String {
    let host_id = host(orchestrator, index).await;
    let run = orchestrator
        .operator()
        .start_run(host_id, &operator())
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(
        orchestrator.runs().dispatch().await.unwrap(),
        vec![run.id.clone()]
    );
    assert_eq!(
        step(orchestrator, &run.id, Event::PowerOnSent).await,
        RunState::Booting
    );
    run.id
}

/// Drives a run from `Booting` into the given testing stage.
pub(crate) async fn run_until(orchestrator: &Orchestrator, run_id: &str, target: RunState) {
    assert_eq!(
        step(orchestrator, run_id, Event::Hello).await,
        RunState::Booting
    );
    assert_eq!(
        step(orchestrator, run_id, Event::Claim).await,
        RunState::InventoryCheck
    );
    let mut state = RunState::InventoryCheck;
    while state != target {
        let event = if state == RunState::SpecValidate {
            Event::SpecPassed
        } else {
            Event::StagePassed
        };
        state = step(orchestrator, run_id, event).await;
    }
}

#[tokio::test]
async fn a_run_walks_from_registered_to_completed() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        let mut events = orchestrator.hub().subscribe();
        let run_id = booted_run(&orchestrator, 1).await;
        run_until(&orchestrator, &run_id, RunState::Psu).await;
        assert_eq!(
            step(&orchestrator, &run_id, Event::StageSkipped).await,
            RunState::Reporting
        );
        // entering Reporting queued the report worker (the transition's
        // effect): it writes the report and applies ReportWritten
        let mut run = orchestrator.operator().get_run(&run_id).await.unwrap();
        for _ in 0..400 {
            if run.state != RunState::Reporting {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            run = orchestrator.operator().get_run(&run_id).await.unwrap();
        }
        assert_eq!(run.state, RunState::Completed, "{}", db.name);
        assert!(run.ended_at_ms.is_some());
        let walked: Vec<String> = orchestrator
            .operator()
            .transitions(Some(&run_id))
            .await
            .unwrap()
            .into_iter()
            .map(|record| record.to)
            .collect();
        assert_eq!(
            walked,
            [
                "Queued",
                "WaitingWoL",
                "Booting",
                "Booting",
                "InventoryCheck",
                "SpecValidate",
                "SMART",
                "CPUStress",
                "Storage",
                "Network",
                "GPU",
                "PSU",
                "Reporting",
                "Completed"
            ],
            "{}",
            db.name
        );
        // every stage has a row, each closed
        let stages = orchestrator.operator().stages(&run_id).await.unwrap();
        assert_eq!(stages.len(), 8, "{}: {stages:?}", db.name);
        assert!(stages.iter().all(|stage| stage.finished_at_ms.is_some()));
        assert!(orchestrator.runs().slots_in_use().await.unwrap().is_empty());
        // the hub announced each transition after it was committed
        let mut announced = 0;
        while let Ok(event) = events.try_recv() {
            if let vetting_core::events::HubEvent::Transition { run_id: id, .. } = event {
                assert_eq!(id, run_id);
                announced += 1;
            }
        }
        assert_eq!(announced, walked.len(), "{}", db.name);
    }
}

#[tokio::test]
async fn a_failure_at_each_testing_stage_holds_then_releases() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        for (index, stage) in Stage::ALL.into_iter().enumerate() {
            let run_id = booted_run(&orchestrator, index as u32 + 10).await;
            run_until(&orchestrator, &run_id, state_of(stage)).await;
            let applied = orchestrator
                .runs()
                .apply(
                    &run_id,
                    Event::StageFailed,
                    EventContext {
                        reason: Some(format!("{stage} failed for the test")),
                        ..agent()
                    },
                )
                .await
                .unwrap();
            assert_eq!(applied.to, RunState::Failed);
            let run = orchestrator.operator().get_run(&run_id).await.unwrap();
            assert_eq!(run.state, RunState::FailedHolding, "{}: {stage}", db.name);
            assert_eq!(run.hold_reason, Some(HoldReason::Failure));
            // the failure log shows Failed, then the hold
            let log = orchestrator
                .operator()
                .transitions(Some(&run_id))
                .await
                .unwrap();
            let tail: Vec<&str> = log.iter().rev().take(2).map(|r| r.to.as_str()).collect();
            assert_eq!(tail, ["FailedHolding", "Failed"]);
            // a held run frees its slot
            assert!(
                !orchestrator
                    .runs()
                    .slots_in_use()
                    .await
                    .unwrap()
                    .contains(&run_id)
            );
            // a failure hold cannot be overridden
            let refused = orchestrator
                .operator()
                .override_wipe(&run_id, &operator(), vec!["I know".into()])
                .await
                .unwrap_err();
            assert!(
                matches!(refused, OrchestratorError::OverrideRefused { .. }),
                "{refused}"
            );
            let released = orchestrator
                .operator()
                .release(&run_id, &operator(), Some("inspected".into()))
                .await
                .unwrap();
            assert_eq!(released.to, RunState::Released);
        }
    }
}

#[tokio::test]
async fn without_hold_on_failure_a_failed_run_ends_failed() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let mut config = config_for(&db);
        config.runs.hold_on_failure = false;
        let orchestrator = open(config, &clock).await;
        let run_id = booted_run(&orchestrator, 1).await;
        run_until(&orchestrator, &run_id, RunState::CPUStress).await;
        step(&orchestrator, &run_id, Event::StageFailed).await;
        let run = orchestrator.operator().get_run(&run_id).await.unwrap();
        assert_eq!(run.state, RunState::Failed);
        assert!(run.state.is_terminal());
        let error = orchestrator
            .operator()
            .release(&run_id, &operator(), None)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("Failed"), "{error}");
        // the agent is told to power off
        assert_eq!(
            vetting_core::agent::command_for(&run, None),
            vetting_probes::protocol::Command::Shutdown
        );
    }
}

#[tokio::test]
async fn a_wipe_hold_is_overridden_and_storage_reruns_as_attempt_two() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        let run_id = booted_run(&orchestrator, 1).await;
        run_until(&orchestrator, &run_id, RunState::Storage).await;
        orchestrator
            .runs()
            .apply(
                &run_id,
                Event::StageHeld,
                EventContext {
                    hold_reason: Some(HoldReason::WipeSignatures),
                    reason: Some("wipe probe: gpt at offset 0x200 on /dev/loop3".into()),
                    wipe_findings: Some(vec![
                        finding(GPT_ON_LOOP3, "gpt", 0x200),
                        finding(PMBR_ON_LOOP3, "PMBR", 0x1fe),
                    ]),
                    ..agent()
                },
            )
            .await
            .unwrap();
        let held = orchestrator.operator().get_run(&run_id).await.unwrap();
        assert_eq!(held.state, RunState::FailedHolding);
        assert_eq!(held.hold_reason, Some(HoldReason::WipeSignatures));
        // an override must name what is acknowledged, and only findings of
        // the hold: a refusal changes nothing
        for ids in [Vec::new(), vec![" ".to_string()]] {
            let error = orchestrator
                .operator()
                .override_wipe(&run_id, &operator(), ids)
                .await
                .unwrap_err();
            assert!(matches!(error, OrchestratorError::BadRequest(_)), "{error}");
        }
        let unknown = "serial:OTHER/gpt@0x200";
        let error = orchestrator
            .operator()
            .override_wipe(
                &run_id,
                &operator(),
                vec![GPT_ON_LOOP3.into(), unknown.into()],
            )
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, OrchestratorError::BadRequest(_)), "{text}");
        assert!(
            text.contains(unknown) && text.contains("does not list") && text.contains(GPT_ON_LOOP3),
            "{text}"
        );
        let unchanged = orchestrator.operator().get_run(&run_id).await.unwrap();
        assert_eq!(unchanged.version, held.version, "{}", db.name);
        assert!(
            orchestrator
                .operator()
                .audit_log(Some(&run_id))
                .await
                .unwrap()
                .iter()
                .all(|r| r.action != "override_wipe")
        );
        orchestrator
            .operator()
            .override_wipe(&run_id, &operator(), vec![GPT_ON_LOOP3.into()])
            .await
            .unwrap();
        let rerun = orchestrator.operator().get_run(&run_id).await.unwrap();
        assert_eq!(rerun.state, RunState::Storage);
        assert_eq!(rerun.current.unwrap().attempt, 2, "{}", db.name);
        assert_eq!(rerun.override_flags, vec!["override_wipe".to_string()]);
        assert_eq!(rerun.acknowledged_findings, vec![GPT_ON_LOOP3.to_string()]);
        assert!(
            orchestrator
                .runs()
                .slots_in_use()
                .await
                .unwrap()
                .contains(&run_id)
        );
        // the agent, still on attempt 1, is told to retry the stage
        assert_eq!(
            vetting_core::agent::command_for(&rerun, held.current),
            vetting_probes::protocol::Command::RetryStage
        );
        let stages = orchestrator.operator().stages(&run_id).await.unwrap();
        let storage: Vec<_> = stages.iter().filter(|s| s.stage == "Storage").collect();
        assert_eq!(storage.len(), 2);
        assert_eq!(storage[0].outcome, "held");
        assert_eq!(storage[1].outcome, "running");
        // attempt 2 fails with bad blocks: not overridable
        orchestrator
            .runs()
            .apply(
                &run_id,
                Event::StageFailed,
                EventContext {
                    reason: Some("badblocks: 3 bad blocks on /dev/loop3".into()),
                    ..agent()
                },
            )
            .await
            .unwrap();
        let error = orchestrator
            .operator()
            .override_wipe(&run_id, &operator(), vec![GPT_ON_LOOP3.into()])
            .await
            .unwrap_err();
        assert!(
            matches!(error, OrchestratorError::OverrideRefused { .. }),
            "{error}"
        );
        // the audit names who acknowledged what
        let audit = orchestrator
            .operator()
            .audit_log(Some(&run_id))
            .await
            .unwrap();
        let override_record = audit.iter().find(|r| r.action == "override_wipe").unwrap();
        assert_eq!(override_record.actor, "operator:alice");
        assert_eq!(override_record.acknowledged.as_deref(), Some(GPT_ON_LOOP3));
        let detail: serde_json::Value =
            serde_json::from_str(override_record.detail.as_deref().unwrap()).unwrap();
        assert_eq!(
            detail["acknowledged_findings"],
            serde_json::json!([GPT_ON_LOOP3])
        );
    }
}

const GPT_ON_LOOP3: &str = "name:loop3/gpt@0x200";
const PMBR_ON_LOOP3: &str = "name:loop3/PMBR@0x1fe";

fn finding(id: &str, kind: &str, offset: u64) -> vetting_probes::protocol::WipeFinding {
    vetting_probes::protocol::WipeFinding {
        id: id.into(),
        disk: "loop3".into(),
        kind: kind.into(),
        offset: Some(offset),
        message: format!("wipe probe: found {kind} at offset 0x{offset:x} on /dev/loop3"),
    }
}

#[tokio::test]
async fn cancel_works_from_every_non_terminal_state_and_is_audited() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let mut config = config_for(&db);
        config.dispatcher.max_in_flight = 50;
        let orchestrator = open(config, &clock).await;
        let mut index = 100;
        for target in RunState::ALL {
            if target.is_terminal() {
                continue;
            }
            index += 1;
            let host_id = host(&orchestrator, index).await;
            let run = orchestrator
                .operator()
                .create_run(host_id, &operator())
                .await
                .unwrap();
            match target {
                RunState::Registered => {}
                RunState::Queued => {
                    step(&orchestrator, &run.id, Event::Enqueue).await;
                }
                RunState::WaitingWoL => {
                    step(&orchestrator, &run.id, Event::Enqueue).await;
                    step(&orchestrator, &run.id, Event::Dispatch).await;
                }
                RunState::FailedHolding => {
                    step(&orchestrator, &run.id, Event::Enqueue).await;
                    step(&orchestrator, &run.id, Event::Dispatch).await;
                    step(&orchestrator, &run.id, Event::PowerOnSent).await;
                    step(&orchestrator, &run.id, Event::BootTimeout).await;
                }
                RunState::Reporting => {
                    step(&orchestrator, &run.id, Event::Enqueue).await;
                    step(&orchestrator, &run.id, Event::Dispatch).await;
                    step(&orchestrator, &run.id, Event::PowerOnSent).await;
                    run_until(&orchestrator, &run.id, RunState::Psu).await;
                    step(&orchestrator, &run.id, Event::StagePassed).await;
                }
                other => {
                    step(&orchestrator, &run.id, Event::Enqueue).await;
                    step(&orchestrator, &run.id, Event::Dispatch).await;
                    step(&orchestrator, &run.id, Event::PowerOnSent).await;
                    if other != RunState::Booting {
                        run_until(&orchestrator, &run.id, other).await;
                    }
                }
            }
            assert_eq!(
                orchestrator
                    .operator()
                    .get_run(&run.id)
                    .await
                    .unwrap()
                    .state,
                target
            );
            let applied = orchestrator
                .operator()
                .cancel(&run.id, &Actor::operator("bob"), Some("wrong rack".into()))
                .await
                .unwrap();
            assert_eq!(
                applied.to,
                RunState::Cancelled,
                "{}: from {target}",
                db.name
            );
            let cancelled = orchestrator.operator().get_run(&run.id).await.unwrap();
            assert!(cancelled.ended_at_ms.is_some());
            assert!(
                !orchestrator
                    .runs()
                    .slots_in_use()
                    .await
                    .unwrap()
                    .contains(&run.id)
            );
            let audit = orchestrator
                .operator()
                .audit_log(Some(&run.id))
                .await
                .unwrap();
            let record = audit.iter().find(|r| r.action == "cancel").unwrap();
            assert_eq!(record.actor, "operator:bob");
            assert_eq!(record.acknowledged.as_deref(), Some("wrong rack"));
            // a second cancel is refused, naming the state and the event
            let error = orchestrator
                .operator()
                .cancel(&run.id, &operator(), None)
                .await
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("Cancelled") && error.contains("cancel"),
                "{error}"
            );
        }
        // every operator action left a record
        let actions: Vec<String> = orchestrator
            .operator()
            .audit_log(None)
            .await
            .unwrap()
            .into_iter()
            .map(|record| record.action)
            .collect();
        for action in ["register_host", "create_run", "enqueue", "cancel"] {
            assert!(
                actions.iter().any(|a| a == action),
                "{action} missing: {actions:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_dispatcher_caps_runs_in_flight_and_serves_first_in_first_out() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        let mut runs = Vec::new();
        for index in 0..5 {
            let host_id = host(&orchestrator, index).await;
            clock.advance_ms(1);
            runs.push(
                orchestrator
                    .operator()
                    .start_run(host_id, &operator())
                    .await
                    .unwrap()
                    .id,
            );
        }
        let first = orchestrator.runs().dispatch().await.unwrap();
        assert_eq!(first, runs[..3].to_vec(), "{}", db.name);
        assert!(orchestrator.runs().dispatch().await.unwrap().is_empty());
        // a held run frees its slot: the next queued run starts
        step(&orchestrator, &runs[0], Event::PowerOnSent).await;
        run_until(&orchestrator, &runs[0], RunState::Storage).await;
        orchestrator
            .runs()
            .apply(
                &runs[0],
                Event::StageHeld,
                EventContext {
                    hold_reason: Some(HoldReason::UnexpectedData),
                    wipe_findings: Some(vec![finding(
                        "name:loop3/unexpected_data@0x0",
                        "unexpected_data",
                        0,
                    )]),
                    ..agent()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            orchestrator.runs().dispatch().await.unwrap(),
            vec![runs[3].clone()]
        );
        // an override needs a slot again: refused while none is free
        let error = orchestrator
            .operator()
            .override_wipe(
                &runs[0],
                &operator(),
                vec!["name:loop3/unexpected_data@0x0".into()],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, OrchestratorError::NoSlotFree { max: 3 }),
            "{error}"
        );
        assert_eq!(
            orchestrator
                .operator()
                .get_run(&runs[0])
                .await
                .unwrap()
                .state,
            RunState::FailedHolding
        );
        orchestrator
            .operator()
            .cancel(&runs[1], &operator(), None)
            .await
            .unwrap();
        assert_eq!(
            orchestrator.runs().dispatch().await.unwrap(),
            vec![runs[4].clone()]
        );
        assert_eq!(orchestrator.runs().slots_in_use().await.unwrap().len(), 3);
    }
}

#[tokio::test]
async fn deadlines_fire_by_the_injected_clock_and_survive_a_restart() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let config = config_for(&db);
        let orchestrator = open(config.clone(), &clock).await;
        let booting = booted_run(&orchestrator, 1).await;
        let testing = booted_run(&orchestrator, 2).await;
        run_until(&orchestrator, &testing, RunState::CPUStress).await;
        // nothing is due yet
        clock.advance_secs(60);
        assert!(
            orchestrator
                .runs()
                .fire_deadlines()
                .await
                .unwrap()
                .is_empty()
        );
        // close the orchestrator and open a new one on the same database
        drop(orchestrator);
        let reopened = open(config, &clock).await;
        assert_eq!(
            reopened.operator().get_run(&booting).await.unwrap().state,
            RunState::Booting
        );
        assert_eq!(
            reopened.operator().get_run(&testing).await.unwrap().state,
            RunState::CPUStress
        );
        assert_eq!(reopened.runs().slots_in_use().await.unwrap().len(), 2);
        // the heartbeat keeps the testing run alive; the booting one has no hello
        let run = reopened.operator().get_run(&testing).await.unwrap();
        clock.advance_secs(100);
        let token = reopened.agent().token_for(&testing).await.unwrap();
        let beat = reopened
            .agent()
            .authenticate(Endpoint::Heartbeat, &testing, &token, None)
            .await
            .unwrap();
        AgentWriter::start(reopened.clone())
            .heartbeat(
                &beat,
                &HeartbeatRequest {
                    current: run.current,
                },
            )
            .await
            .unwrap();
        clock.advance_secs(100);
        let fired = reopened.runs().fire_deadlines().await.unwrap();
        assert_eq!(fired.len(), 0, "{fired:?}");
        // boot deadline (900 s) passes for the booting run
        clock.advance_secs(700);
        let fired = reopened.runs().fire_deadlines().await.unwrap();
        assert_eq!(fired.len(), 2, "{}: {fired:?}", db.name);
        let booting_run = reopened.operator().get_run(&booting).await.unwrap();
        assert_eq!(booting_run.state, RunState::FailedHolding);
        assert!(booting_run.failure_reason.unwrap().contains("did not boot"));
        let testing_run = reopened.operator().get_run(&testing).await.unwrap();
        assert_eq!(testing_run.state, RunState::FailedHolding);
        assert!(testing_run.failure_reason.unwrap().contains("silent"));
        // FailedHolding never releases itself
        clock.advance_secs(100_000);
        assert!(reopened.runs().fire_deadlines().await.unwrap().is_empty());
        assert!(reopened.runs().slots_in_use().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn starting_many_hosts_starts_each_and_names_the_ones_that_cannot() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        let idle = host(&orchestrator, 1).await;
        let busy = host(&orchestrator, 2).await;
        let other = host(&orchestrator, 3).await;
        let running = orchestrator
            .operator()
            .start_run(busy, &operator())
            .await
            .unwrap();
        let started = orchestrator
            .operator()
            .start_runs(&[idle, busy, other, idle, 9999], &operator())
            .await;
        let hosts: Vec<i64> = started.iter().map(|(host, _)| *host).collect();
        assert_eq!(
            hosts,
            vec![idle, busy, other, 9999],
            "{}: once each, in order",
            db.name
        );
        for (host, result) in &started {
            match *host {
                host if host == idle || host == other => {
                    let run = result.as_ref().unwrap();
                    assert_eq!(run.state, RunState::Queued, "{}", db.name);
                    assert_eq!(run.host_id, host);
                }
                host if host == busy => match result {
                    Err(OrchestratorError::HostBusy { run_id, .. }) => {
                        assert_eq!(run_id, &running.id)
                    }
                    other => panic!("{}: {other:?}", db.name),
                },
                _ => assert!(
                    matches!(result, Err(OrchestratorError::HostNotFound(_))),
                    "{}: {result:?}",
                    db.name
                ),
            }
        }
        // each start is its own audited action by the operator
        let audit = orchestrator.operator().audit_log(None).await.unwrap();
        let enqueued = audit
            .iter()
            .filter(|record| record.action == "enqueue" && record.actor.ends_with("alice"))
            .count();
        assert_eq!(enqueued, 3, "{}", db.name);
    }
}

#[tokio::test]
async fn removing_a_host_frees_its_macs_and_keeps_its_history() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        let host_id = host(&orchestrator, 7).await;
        let run = orchestrator
            .operator()
            .start_run(host_id, &operator())
            .await
            .unwrap();
        let busy = orchestrator
            .operator()
            .remove_host(host_id, &operator())
            .await
            .unwrap_err();
        assert!(matches!(busy, OrchestratorError::HostBusy { .. }), "{busy}");
        orchestrator
            .operator()
            .cancel(&run.id, &operator(), None)
            .await
            .unwrap();
        orchestrator
            .operator()
            .remove_host(host_id, &operator())
            .await
            .unwrap();
        // the MAC can be registered again, the old run is still there
        let again = orchestrator
            .operator()
            .register_host(
                vetting_core::model::NewHost {
                    name: "host-7-new".into(),
                    macs: vec!["52-54-00-00-00-07".into()],
                    ..Default::default()
                },
                &operator(),
            )
            .await
            .unwrap();
        assert_eq!(again.macs[0].as_str(), "52:54:00:00:00:07");
        assert_eq!(
            orchestrator
                .operator()
                .list_runs(Some(host_id))
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            orchestrator
                .operator()
                .get_host(host_id)
                .await
                .unwrap()
                .removed_at_ms
                .is_some()
        );
        // a taken MAC is refused, naming it and its host
        let taken = orchestrator
            .operator()
            .register_host(
                vetting_core::model::NewHost {
                    name: "other".into(),
                    macs: vec!["52:54:00:00:00:07".into()],
                    ..Default::default()
                },
                &operator(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            taken.contains("52:54:00:00:00:07") && taken.contains("host-7-new"),
            "{taken}"
        );
        let bad = orchestrator
            .operator()
            .register_host(
                vetting_core::model::NewHost {
                    name: "bad".into(),
                    macs: vec!["52:54:00:zz".into()],
                    ..Default::default()
                },
                &operator(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(bad.contains("52:54:00:zz"), "{bad}");
    }
}

/// The next notification, within 10 s.
async fn next(
    received: &mut tokio::sync::mpsc::UnboundedReceiver<vetting_core::notify::Notification>,
) -> vetting_core::notify::Notification {
    tokio::time::timeout(std::time::Duration::from_secs(10), received.recv())
        .await
        .expect("no notification within 10 s")
        .expect("the notifier is gone")
}

/// A notifier that hands every notification to the test.
struct Collect(tokio::sync::mpsc::UnboundedSender<vetting_core::notify::Notification>);

#[async_trait::async_trait]
impl vetting_core::notify::Notifier for Collect {
    fn name(&self) -> &str {
        "collect"
    }
    async fn send(
        &self,
        notification: &vetting_core::notify::Notification,
    ) -> Result<(), vetting_core::notify::NotifyError> {
        let _ = self.0.send(notification.clone());
        Ok(())
    }
}

#[tokio::test]
async fn committed_transitions_tell_the_notifiers_once_each() {
    use vetting_core::machine::NotificationKind as N;
    use vetting_core::notify::Route;
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
        orchestrator.notifiers().add(
            "collect",
            std::sync::Arc::new(Collect(sender)),
            Route::all(),
        );
        // a failure with hold_on_failure: the failure, then the hold
        let run_id = booted_run(&orchestrator, 40).await;
        run_until(&orchestrator, &run_id, RunState::CPUStress).await;
        orchestrator
            .runs()
            .apply(
                &run_id,
                Event::StageFailed,
                EventContext {
                    reason: Some("EDAC: 3 corrected errors".into()),
                    ..agent()
                },
            )
            .await
            .unwrap();
        // each target delivers in tasks of its own: in any order
        let mut two = [next(&mut received).await, next(&mut received).await];
        two.sort_by_key(|notification| notification.kind);
        let [failed, held] = two;
        assert_eq!(
            (failed.kind, held.kind),
            (N::StageFailed, N::HoldingOpened),
            "{}",
            db.name
        );
        for notification in [&failed, &held] {
            assert_eq!(notification.run_id, run_id);
            assert_eq!(notification.host_name.as_deref(), Some("host-40"));
            assert_eq!(notification.stage.as_deref(), Some("CPUStress"));
            assert_eq!(
                notification.reason.as_deref(),
                Some("EDAC: 3 corrected errors")
            );
        }
        // the id of the transition that opened the hold, as logged
        let log = orchestrator
            .operator()
            .transitions(Some(&run_id))
            .await
            .unwrap();
        let hold = log.iter().rev().find(|t| t.to == "FailedHolding").unwrap();
        assert_eq!(held.transition_id, Some(hold.id));

        // the host lost: no hello in the boot deadline
        let lost = booted_run(&orchestrator, 41).await;
        clock.advance_secs(3600);
        orchestrator.runs().fire_deadlines().await.unwrap();
        let mut two = [next(&mut received).await, next(&mut received).await];
        two.sort_by_key(|notification| notification.kind);
        let kinds: Vec<(N, &str)> = two
            .iter()
            .map(|notification| (notification.kind, notification.run_id.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (N::HoldingOpened, lost.as_str()),
                (N::HostLost, lost.as_str())
            ],
            "{}",
            db.name
        );

        // a completed run
        let done = booted_run(&orchestrator, 42).await;
        run_until(&orchestrator, &done, RunState::Reporting).await;
        let notification = next(&mut received).await;
        assert_eq!(
            (notification.kind, notification.run_id.as_str()),
            (N::RunCompleted, done.as_str()),
            "{}",
            db.name
        );
        // nothing else was sent: each transition notified once
        assert!(
            received.try_recv().is_err(),
            "{}: a notification was repeated",
            db.name
        );
    }
}

#[tokio::test]
async fn an_operator_action_waits_for_another_writer_instead_of_failing_locked() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    // on SQLite a transaction that read first and writes after another
    // connection committed fails at once ("database is locked"): every
    // writing transaction begins IMMEDIATE and waits its turn instead
    let db = crate::support::sqlite_db();
    let clock = ManualClock::new(T0);
    let orchestrator = open(config_for(&db), &clock).await;
    host(&orchestrator, 1).await;
    let other = vetting_core::store::Store::connect(&db.url).await.unwrap();
    for round in 0..5 {
        let writer = other
            .db()
            .begin_with_options(vetting_core::store::WRITE)
            .await
            .unwrap();
        writer
            .execute_unprepared("UPDATE hosts SET serial = serial")
            .await
            .unwrap();
        let registering = {
            let orchestrator = orchestrator.clone();
            tokio::spawn(async move {
                orchestrator
                    .operator()
                    .register_host(
                        vetting_core::model::NewHost {
                            name: format!("busy-{round}"),
                            macs: vec![format!("52:54:00:0b:00:{round:02x}")],
                            ..Default::default()
                        },
                        &operator(),
                    )
                    .await
            })
        };
        // the registration is waiting on the other writer's lock
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        writer.commit().await.unwrap();
        let registered = registering.await.unwrap();
        assert!(registered.is_ok(), "round {round}: {registered:?}");
    }
}
