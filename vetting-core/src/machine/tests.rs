//! The table and `decide`, checked against a second, hand-written copy of
//! every row with its effects, and the deadline, hold and outcome rules,
//! without a database.

use std::collections::{HashMap, HashSet};

use vetting_probes::protocol::StageRef;

use super::*;
use crate::config::DeadlinesConfig;
use crate::model::Run;

use Effect as X;
use Event as E;
use NotificationKind as N;
use RunState as S;

// The effects of a whole transition, written out again (hold_on_failure
// off): a failure that frees a slot wakes the dispatcher after its own
// effects.
const NONE: &[Effect] = &[];
const WAKE: &[Effect] = &[X::WakeDispatcher];
const POWER: &[Effect] = &[X::PowerOn];
const SPEC: &[Effect] = &[X::ValidateSpec];
const REPORT_FREE: &[Effect] = &[X::WriteReport, X::WakeDispatcher];
const REPORT: &[Effect] = &[X::WriteReport];
const FAIL: &[Effect] = &[X::Notify(N::StageFailed), X::WriteReport, X::WakeDispatcher];
const LOST: &[Effect] = &[X::Notify(N::HostLost), X::WriteReport, X::WakeDispatcher];
const HOLD: &[Effect] = &[
    X::Notify(N::HoldingOpened),
    X::WriteReport,
    X::WakeDispatcher,
];
const MISMATCH: &[Effect] = &[
    X::Notify(N::SpecMismatch),
    X::WriteReport,
    X::WakeDispatcher,
];
/// The report written in Reporting, again with the final state.
const DONE: &[Effect] = &[X::Notify(N::RunCompleted), X::WriteReport];

/// Every transition an outside event can make, by hand: from, event, the
/// state it ends in (hold_on_failure off) and its effects.
const BY_HAND: &[(RunState, Event, RunState, &[Effect])] = &[
    (S::Registered, E::Enqueue, S::Queued, WAKE),
    (S::Registered, E::Cancel, S::Cancelled, REPORT),
    (S::Queued, E::Dispatch, S::WaitingWoL, POWER),
    (S::Queued, E::Cancel, S::Cancelled, REPORT),
    (S::WaitingWoL, E::PowerOnSent, S::Booting, NONE),
    (S::WaitingWoL, E::PowerTimeout, S::Failed, FAIL),
    (S::WaitingWoL, E::PowerFailed, S::Failed, FAIL),
    (S::WaitingWoL, E::Cancel, S::Cancelled, REPORT_FREE),
    (S::Booting, E::Hello, S::Booting, NONE),
    (S::Booting, E::Claim, S::InventoryCheck, NONE),
    (S::Booting, E::BootTimeout, S::Failed, LOST),
    (S::Booting, E::HeartbeatTimeout, S::Failed, LOST),
    (S::Booting, E::Cancel, S::Cancelled, REPORT_FREE),
    (S::InventoryCheck, E::StagePassed, S::SpecValidate, SPEC),
    (S::InventoryCheck, E::StageSkipped, S::SpecValidate, SPEC),
    (S::InventoryCheck, E::StageFailed, S::Failed, FAIL),
    (S::InventoryCheck, E::StageHeld, S::FailedHolding, HOLD),
    (S::InventoryCheck, E::StageTimeout, S::Failed, FAIL),
    (S::InventoryCheck, E::HeartbeatTimeout, S::Failed, LOST),
    (S::InventoryCheck, E::Cancel, S::Cancelled, REPORT_FREE),
    (S::SpecValidate, E::SpecPassed, S::Smart, NONE),
    (S::SpecValidate, E::SpecFailed, S::Failed, MISMATCH),
    (S::SpecValidate, E::StageTimeout, S::Failed, FAIL),
    (S::SpecValidate, E::Cancel, S::Cancelled, REPORT_FREE),
    (S::Smart, E::StagePassed, S::CPUStress, NONE),
    (S::Smart, E::StageSkipped, S::CPUStress, NONE),
    (S::Smart, E::StageFailed, S::Failed, FAIL),
    (S::Smart, E::StageHeld, S::FailedHolding, HOLD),
    (S::Smart, E::StageTimeout, S::Failed, FAIL),
    (S::Smart, E::HeartbeatTimeout, S::Failed, LOST),
    (S::Smart, E::Cancel, S::Cancelled, REPORT_FREE),
    (S::CPUStress, E::StagePassed, S::Storage, NONE),
    (S::CPUStress, E::StageSkipped, S::Storage, NONE),
    (S::CPUStress, E::StageFailed, S::Failed, FAIL),
    (S::CPUStress, E::StageHeld, S::FailedHolding, HOLD),
    (S::CPUStress, E::StageTimeout, S::Failed, FAIL),
    (S::CPUStress, E::HeartbeatTimeout, S::Failed, LOST),
    (S::CPUStress, E::Cancel, S::Cancelled, REPORT_FREE),
    (S::Storage, E::StagePassed, S::Network, NONE),
    (S::Storage, E::StageSkipped, S::Network, NONE),
    (S::Storage, E::StageFailed, S::Failed, FAIL),
    (S::Storage, E::StageHeld, S::FailedHolding, HOLD),
    (S::Storage, E::StageTimeout, S::Failed, FAIL),
    (S::Storage, E::HeartbeatTimeout, S::Failed, LOST),
    (S::Storage, E::Cancel, S::Cancelled, REPORT_FREE),
    (S::Network, E::StagePassed, S::Gpu, NONE),
    (S::Network, E::StageSkipped, S::Gpu, NONE),
    (S::Network, E::StageFailed, S::Failed, FAIL),
    (S::Network, E::StageHeld, S::FailedHolding, HOLD),
    (S::Network, E::StageTimeout, S::Failed, FAIL),
    (S::Network, E::HeartbeatTimeout, S::Failed, LOST),
    (S::Network, E::Cancel, S::Cancelled, REPORT_FREE),
    (S::Gpu, E::StagePassed, S::Psu, NONE),
    (S::Gpu, E::StageSkipped, S::Psu, NONE),
    (S::Gpu, E::StageFailed, S::Failed, FAIL),
    (S::Gpu, E::StageHeld, S::FailedHolding, HOLD),
    (S::Gpu, E::StageTimeout, S::Failed, FAIL),
    (S::Gpu, E::HeartbeatTimeout, S::Failed, LOST),
    (S::Gpu, E::Cancel, S::Cancelled, REPORT_FREE),
    (S::Psu, E::StagePassed, S::Reporting, REPORT_FREE),
    (S::Psu, E::StageSkipped, S::Reporting, REPORT_FREE),
    (S::Psu, E::StageFailed, S::Failed, FAIL),
    (S::Psu, E::StageHeld, S::FailedHolding, HOLD),
    (S::Psu, E::StageTimeout, S::Failed, FAIL),
    (S::Psu, E::HeartbeatTimeout, S::Failed, LOST),
    (S::Psu, E::Cancel, S::Cancelled, REPORT_FREE),
    (S::Reporting, E::ReportWritten, S::Completed, DONE),
    (S::Reporting, E::Cancel, S::Cancelled, REPORT),
    (S::FailedHolding, E::OverrideWipe, S::Storage, NONE),
    (S::FailedHolding, E::RetryStage, S::Storage, NONE),
    (S::FailedHolding, E::Release, S::Released, REPORT),
    (S::FailedHolding, E::Cancel, S::Cancelled, REPORT),
];

const NOW: i64 = 1_000_000;
const BEFORE: i64 = 777;

/// Distinct deadlines, so that a state given another state's deadline
/// shows.
fn deadlines() -> DeadlinesConfig {
    DeadlinesConfig {
        power_on_secs: 11,
        boot_secs: 22,
        heartbeat_silence_secs: 33,
        token_grace_secs: 600,
        inventory_check_secs: 44,
        spec_validate_secs: 55,
        smart_secs: 66,
        cpu_stress_secs: 77,
        storage_secs: 88,
        network_secs: 99,
        gpu_secs: 111,
        psu_secs: 122,
    }
}

/// A run in `state`, as the driver would read it.
fn run_in(state: RunState, hold_on_failure: bool) -> Run {
    Run {
        id: "run-1".into(),
        host_id: 7,
        state,
        version: 3,
        hold_reason: (state == S::FailedHolding).then_some(HoldReason::WipeSignatures),
        failure_reason: None,
        current: state.stage().map(|stage| StageRef { stage, attempt: 1 }),
        state_deadline_ms: Some(BEFORE),
        heartbeat_deadline_ms: Some(BEFORE),
        last_heartbeat_ms: None,
        claimed_at_ms: None,
        hello_at_ms: None,
        hold_on_failure,
        override_flags: Vec::new(),
        acknowledged_findings: Vec::new(),
        queued_at_ms: None,
        created_at_ms: 1,
        updated_at_ms: 1,
        ended_at_ms: None,
        next_log_seq: 0,
        next_sensor_seq: 0,
        created_by: "test".into(),
    }
}

fn held_ids() -> Vec<String> {
    vec!["SER1:signature:0".to_string()]
}

/// `decide` with the facts an override needs.
fn decide_at(run: &Run, event: Event) -> Result<Transition, Refusal> {
    let held = held_ids();
    let input = Input {
        acknowledged_findings: Some(&held),
        held_finding_ids: &held,
        storage_attempts: 1,
        retry_stage: Some(Stage::Storage),
        failed_in: Some(S::Storage),
        retry_attempts: 1,
        ..Default::default()
    };
    // and a retry the hold after a failure it needs
    let mut run = run.clone();
    if event == E::RetryStage && run.state == S::FailedHolding {
        run.hold_reason = Some(HoldReason::Failure);
    }
    decide(&run, event, &input, &deadlines(), NOW)
}

#[test]
fn every_state_event_pair_matches_the_hand_written_list_with_its_effects() {
    let allowed: HashMap<(RunState, Event), (RunState, &[Effect])> = BY_HAND
        .iter()
        .map(|(from, event, to, effects)| ((*from, *event), (*to, *effects)))
        .collect();
    assert_eq!(allowed.len(), BY_HAND.len(), "duplicate row in BY_HAND");
    let mut checked = 0;
    for state in RunState::ALL {
        for event in Event::ALL {
            checked += 1;
            let run = run_in(state, false);
            match (decide_at(&run, event), allowed.get(&(state, event))) {
                (Ok(transition), Some((to, effects))) => {
                    assert_eq!(transition.run.state, *to, "{state} + {event}");
                    assert_eq!(transition.effects, *effects, "{state} + {event}");
                    assert_eq!(transition.steps.len(), 1, "{state} + {event}");
                    assert_eq!(transition.audit, event.is_operator_action());
                }
                (Err(error), None) => {
                    let message = error.to_string();
                    assert!(message.contains(state.as_str()), "{message}");
                    assert!(message.contains(event.as_str()), "{message}");
                }
                (Ok(transition), None) => panic!(
                    "{state} + {event} -> {} is decided but not by hand",
                    transition.run.state
                ),
                (Err(error), Some((to, _))) => {
                    panic!("{state} + {event} -> {to} is by hand but refused: {error}")
                }
            }
        }
    }
    assert_eq!(checked, RunState::ALL.len() * Event::ALL.len());
    // the table has these rows and the automatic hold, nothing else
    assert_eq!(table().len(), BY_HAND.len() + 1);
}

#[test]
fn a_failure_with_hold_on_failure_opens_the_hold_in_the_same_transition() {
    let mut failures = 0;
    for (from, event, to, effects) in BY_HAND {
        let transition = decide_at(&run_in(*from, true), *event).unwrap();
        if *to != S::Failed {
            assert_eq!(transition.run.state, *to, "{from} + {event}");
            assert_eq!(transition.effects, *effects, "{from} + {event}");
            continue;
        }
        failures += 1;
        assert_eq!(transition.run.state, S::FailedHolding, "{from} + {event}");
        assert_eq!(transition.entered(), S::Failed);
        assert_eq!(
            transition.steps,
            vec![
                Step {
                    from: *from,
                    to: S::Failed,
                    event: *event
                },
                Step {
                    from: S::Failed,
                    to: S::FailedHolding,
                    event: E::HoldOpened
                },
            ]
        );
        assert_eq!(transition.run.hold_reason, Some(HoldReason::Failure));
        assert_eq!(transition.run.ended_at_ms, None, "a held run has not ended");
        // the failure's notice and report, the hold's notice, then the slot
        assert_eq!(
            transition.effects,
            vec![
                effects[0],
                X::WriteReport,
                X::Notify(N::HoldingOpened),
                X::WakeDispatcher
            ],
            "{from} + {event}"
        );
    }
    assert_eq!(failures, 27, "every failing row was checked");
}

#[test]
fn the_automatic_hold_cannot_be_asked_for_from_outside() {
    for hold_on_failure in [true, false] {
        let error = decide_at(&run_in(S::Failed, hold_on_failure), E::HoldOpened).unwrap_err();
        assert!(matches!(error, Refusal::Invalid(_)), "{error}");
    }
    let failed = decide_at(&run_in(S::Smart, false), E::StageFailed).unwrap();
    assert_eq!(failed.run.state, S::Failed);
    assert!(failed.run.state.is_terminal());
    assert_eq!(failed.run.ended_at_ms, Some(NOW));
    assert_eq!(failed.run.hold_reason, None);
}

/// The deadline each state sets, by hand.
fn state_deadline_by_hand(to: RunState, event: Event) -> Option<i64> {
    let s = |secs: i64| Some(NOW + secs * 1000);
    match (to, event) {
        (S::WaitingWoL, _) => s(11),
        (S::Booting, E::Hello) => Some(BEFORE),
        (S::Booting, _) => s(22),
        (S::InventoryCheck, _) => s(44),
        (S::SpecValidate, _) => s(55),
        (S::Smart, _) => s(66),
        (S::CPUStress, _) => s(77),
        (S::Storage, _) => s(88),
        (S::Network, _) => s(99),
        (S::Gpu, _) => s(111),
        (S::Psu, _) => s(122),
        // Queued waits for a slot; Reporting is the report worker's;
        // FailedHolding never releases itself; the rest have ended
        _ => None,
    }
}

#[test]
fn each_state_sets_its_deadline_and_the_heartbeat_deadline() {
    for (from, event, to, _) in BY_HAND {
        let transition = decide_at(&run_in(*from, false), *event).unwrap();
        assert_eq!(
            transition.run.state_deadline_ms,
            state_deadline_by_hand(*to, *event),
            "{from} + {event} -> {to}"
        );
        let heartbeat = match (*to, *event) {
            (_, E::Hello | E::Claim | E::OverrideWipe | E::RetryStage) => Some(NOW + 33_000),
            (S::Booting | S::SpecValidate, _) => Some(BEFORE),
            (state, _) if state.stage().is_some() => Some(BEFORE),
            _ => None,
        };
        assert_eq!(
            transition.run.heartbeat_deadline_ms, heartbeat,
            "{from} + {event} -> {to}"
        );
        assert_eq!(
            transition.run.ended_at_ms,
            to.is_terminal().then_some(NOW),
            "{from} + {event}"
        );
    }
}

#[test]
fn every_active_state_has_a_deadline_event() {
    // no run can hang forever: every state the agent or the power action
    // drives has a timeout row (Queued waits for a slot without one;
    // FailedHolding never releases itself; Reporting is the orchestrator's)
    for state in RunState::ALL {
        if state.is_terminal() || matches!(state, S::Registered | S::Queued | S::FailedHolding) {
            continue;
        }
        let timeouts = [
            E::PowerTimeout,
            E::BootTimeout,
            E::StageTimeout,
            E::HeartbeatTimeout,
        ];
        let has_deadline =
            timeouts.iter().any(|event| lookup(state, *event).is_ok()) || state == S::Reporting;
        assert!(has_deadline, "{state} has no deadline");
    }
}

#[test]
fn stage_rows_close_and_open_with_the_outcome_of_the_event() {
    let passed = decide_at(&run_in(S::Smart, false), E::StagePassed).unwrap();
    assert_eq!(
        passed.stages,
        vec![
            StageOp::Close {
                stage: StageRef {
                    stage: Stage::Smart,
                    attempt: 1
                },
                outcome: "passed".into()
            },
            StageOp::Open {
                stage: StageRef {
                    stage: Stage::CpuStress,
                    attempt: 1
                }
            },
        ]
    );
    assert_eq!(passed.slot, SlotOp::Keep);
    // the caller's outcome wins (a warning passes on as `warned`)
    let warned = decide(
        &run_in(S::Smart, false),
        E::StagePassed,
        &Input {
            outcome: Some("warned"),
            ..Default::default()
        },
        &deadlines(),
        NOW,
    )
    .unwrap();
    assert!(matches!(&warned.stages[0], StageOp::Close { outcome, .. } if outcome == "warned"));
    for (event, outcome) in [
        (E::StageFailed, "failed"),
        (E::StageSkipped, "skipped"),
        (E::StageHeld, "held"),
        (E::StageTimeout, "timed_out"),
        (E::HeartbeatTimeout, "agent_lost"),
        (E::Cancel, "cancelled"),
    ] {
        let transition = decide_at(&run_in(S::Storage, false), event).unwrap();
        assert_eq!(
            transition.stages[0],
            StageOp::Close {
                stage: StageRef {
                    stage: Stage::Storage,
                    attempt: 1
                },
                outcome: outcome.into()
            },
            "{event}"
        );
    }
    // SpecValidate has a row of its own
    let claim = decide_at(&run_in(S::InventoryCheck, false), E::StagePassed).unwrap();
    assert_eq!(claim.stages.last(), Some(&StageOp::OpenSpecValidate));
    assert_eq!(claim.run.current, None);
    for (event, outcome) in [
        (E::SpecPassed, "passed"),
        (E::SpecFailed, "failed"),
        (E::StageTimeout, "timed_out"),
        (E::Cancel, "cancelled"),
    ] {
        let transition = decide_at(&run_in(S::SpecValidate, false), event).unwrap();
        assert!(
            transition.stages.contains(&StageOp::CloseSpecValidate {
                outcome: outcome.into()
            }),
            "{event}: {:?}",
            transition.stages
        );
    }
}

#[test]
fn slots_are_taken_on_dispatch_and_override_and_freed_when_testing_stops() {
    let slot_of = |state, event| decide_at(&run_in(state, false), event).unwrap().slot;
    assert_eq!(slot_of(S::Queued, E::Dispatch), SlotOp::Take);
    assert_eq!(slot_of(S::FailedHolding, E::OverrideWipe), SlotOp::Take);
    assert_eq!(slot_of(S::FailedHolding, E::RetryStage), SlotOp::Take);
    assert_eq!(slot_of(S::Psu, E::StagePassed), SlotOp::Free);
    assert_eq!(slot_of(S::Smart, E::StageHeld), SlotOp::Free);
    assert_eq!(slot_of(S::Booting, E::Cancel), SlotOp::Free);
    assert_eq!(slot_of(S::Queued, E::Cancel), SlotOp::Keep);
    assert_eq!(slot_of(S::Smart, E::StagePassed), SlotOp::Keep);
}

#[test]
fn an_override_reruns_storage_as_the_next_attempt_for_the_acknowledged_findings() {
    let held = held_ids();
    let mut run = run_in(S::FailedHolding, false);
    run.failure_reason = Some("wipe probe found signatures".into());
    let input = Input {
        acknowledged_findings: Some(&held),
        held_finding_ids: &held,
        storage_attempts: 2,
        ..Default::default()
    };
    let transition = decide(&run, E::OverrideWipe, &input, &deadlines(), NOW).unwrap();
    let attempt = StageRef {
        stage: Stage::Storage,
        attempt: 3,
    };
    assert_eq!(transition.run.current, Some(attempt));
    assert_eq!(transition.stages, vec![StageOp::Open { stage: attempt }]);
    assert_eq!(transition.run.override_flags, vec!["override_wipe"]);
    assert_eq!(transition.run.acknowledged_findings, held);
    assert_eq!(transition.run.hold_reason, None);
    assert_eq!(transition.run.failure_reason, None);
    assert!(transition.audit);

    // the flags are armed for that attempt only: the next stage clears them
    let mut storage = run_in(S::Storage, false);
    storage.override_flags = vec!["override_wipe".into()];
    storage.acknowledged_findings = held.clone();
    let passed = decide_at(&storage, E::StagePassed).unwrap();
    assert!(passed.run.override_flags.is_empty());
    assert!(passed.run.acknowledged_findings.is_empty());
    // and a hold again keeps them for the report
    let held_again = decide_at(&storage, E::StageHeld).unwrap();
    assert_eq!(held_again.run.override_flags, vec!["override_wipe"]);
}

#[test]
fn an_override_is_refused_for_other_holds_without_ids_and_for_ids_not_held() {
    let held = held_ids();
    let mut failure_hold = run_in(S::FailedHolding, false);
    failure_hold.hold_reason = Some(HoldReason::Failure);
    let input = Input {
        acknowledged_findings: Some(&held),
        held_finding_ids: &held,
        ..Default::default()
    };
    let error = decide(&failure_hold, E::OverrideWipe, &input, &deadlines(), NOW).unwrap_err();
    assert_eq!(
        error,
        Refusal::NotOverridable {
            reason: Some(HoldReason::Failure)
        }
    );
    assert!(error.to_string().contains("failure"), "{error}");

    let wipe_hold = run_in(S::FailedHolding, false);
    let none = Input {
        acknowledged_findings: Some(&[]),
        held_finding_ids: &held,
        ..Default::default()
    };
    let error = decide(&wipe_hold, E::OverrideWipe, &none, &deadlines(), NOW).unwrap_err();
    assert!(error.to_string().contains("must name"), "{error}");

    let other = vec!["SER2:signature:0".to_string()];
    let unknown = Input {
        acknowledged_findings: Some(&other),
        held_finding_ids: &held,
        ..Default::default()
    };
    let error = decide(&wipe_hold, E::OverrideWipe, &unknown, &deadlines(), NOW).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("`SER2:signature:0`"), "{message}");
    assert!(message.contains("they are: SER1:signature:0"), "{message}");
}

/// `decide` of a retry of `stage` on a run held for `hold`, failed in
/// `failed_in`, the stage having had `attempts` attempts.
fn retry(
    hold: Option<HoldReason>,
    stage: Option<Stage>,
    failed_in: Option<RunState>,
    attempts: u32,
) -> Result<Transition, Refusal> {
    let mut run = run_in(S::FailedHolding, true);
    run.hold_reason = hold;
    run.failure_reason = Some("badblocks: 3 bad blocks".into());
    run.override_flags = vec!["override_wipe".into()];
    run.acknowledged_findings = held_ids();
    let input = Input {
        retry_stage: stage,
        failed_in,
        retry_attempts: attempts,
        ..Default::default()
    };
    decide(&run, E::RetryStage, &input, &deadlines(), NOW)
}

#[test]
fn a_retry_runs_the_named_stage_again_as_its_next_attempt() {
    let failure = Some(HoldReason::Failure);
    let transition = retry(failure, Some(Stage::Smart), Some(S::Storage), 1).unwrap();
    let attempt = StageRef {
        stage: Stage::Smart,
        attempt: 2,
    };
    assert_eq!(transition.run.state, S::Smart);
    assert_eq!(transition.run.current, Some(attempt));
    assert_eq!(transition.stages, vec![StageOp::Open { stage: attempt }]);
    assert_eq!(transition.slot, SlotOp::Take);
    assert_eq!(transition.run.hold_reason, None);
    assert_eq!(transition.run.failure_reason, None);
    assert_eq!(transition.run.state_deadline_ms, Some(NOW + 66_000));
    // an earlier override's acknowledgement is not carried into a retry
    assert!(transition.run.override_flags.is_empty());
    assert!(transition.run.acknowledged_findings.is_empty());
    assert!(transition.audit);
    // the failed stage itself, and InventoryCheck after a spec mismatch
    let same = retry(failure, Some(Stage::Storage), Some(S::Storage), 3).unwrap();
    assert_eq!(same.run.current.unwrap().attempt, 4);
    let inventory = retry(
        failure,
        Some(Stage::InventoryCheck),
        Some(S::SpecValidate),
        1,
    )
    .unwrap();
    assert_eq!(inventory.run.state, S::InventoryCheck);
}

#[test]
fn a_retry_is_refused_for_a_wipe_hold_a_later_stage_and_a_run_that_never_tested() {
    let failure = Some(HoldReason::Failure);
    let refusals = [
        (
            retry(
                Some(HoldReason::WipeSignatures),
                Some(Stage::Storage),
                Some(S::Storage),
                1,
            ),
            "override",
        ),
        (
            retry(None, Some(Stage::Storage), Some(S::Storage), 1),
            "not held",
        ),
        (
            retry(failure, Some(Stage::Network), Some(S::Storage), 1),
            "comes after",
        ),
        (
            retry(failure, Some(Stage::Smart), Some(S::SpecValidate), 1),
            "comes after",
        ),
        (
            retry(failure, Some(Stage::InventoryCheck), Some(S::Booting), 1),
            "before any stage",
        ),
        (retry(failure, None, Some(S::Storage), 1), "name the stage"),
        (retry(failure, Some(Stage::Smart), None, 1), "not recorded"),
    ];
    for (refused, says) in refusals {
        let error = refused.unwrap_err();
        assert!(matches!(error, Refusal::NotRetryable(_)), "{error}");
        assert!(error.to_string().contains(says), "{error} / {says}");
    }
}

#[test]
fn a_failure_records_its_reason_or_names_the_event() {
    let reason = decide(
        &run_in(S::CPUStress, false),
        E::StageFailed,
        &Input {
            reason: Some("EDAC: 3 corrected errors"),
            ..Default::default()
        },
        &deadlines(),
        NOW,
    )
    .unwrap();
    assert_eq!(
        reason.run.failure_reason.as_deref(),
        Some("EDAC: 3 corrected errors")
    );
    let plain = decide_at(&run_in(S::Booting, false), E::BootTimeout).unwrap();
    assert_eq!(
        plain.run.failure_reason.as_deref(),
        Some("boot_timeout in Booting")
    );
    let held = decide(
        &run_in(S::Storage, false),
        E::StageHeld,
        &Input {
            hold_reason: Some(HoldReason::UnexpectedData),
            reason: Some("data on sdb"),
            ..Default::default()
        },
        &deadlines(),
        NOW,
    )
    .unwrap();
    assert_eq!(held.run.hold_reason, Some(HoldReason::UnexpectedData));
    assert_eq!(held.run.failure_reason.as_deref(), Some("data on sdb"));
}

#[test]
fn the_table_has_no_duplicate_pairs_and_terminal_states_no_way_out() {
    let mut seen = HashSet::new();
    for row in table() {
        assert!(seen.insert((row.from, row.event)), "duplicate row {row:?}");
        if row.from.is_terminal() {
            // only the automatic hold of a failure leaves a terminal state
            assert_eq!((row.from, row.event), (S::Failed, E::HoldOpened));
            assert_eq!(row.trigger, Trigger::Automatic(Guard::HoldOnFailure));
        }
    }
}

#[test]
fn cancel_is_allowed_from_every_non_terminal_state() {
    for state in RunState::ALL {
        if !state.is_terminal() {
            let transition = decide_at(&run_in(state, false), E::Cancel).unwrap();
            assert_eq!(transition.run.state, S::Cancelled);
            assert!(transition.effects.contains(&X::WriteReport));
        }
    }
}

#[test]
fn names_round_trip() {
    for state in RunState::ALL {
        assert_eq!(RunState::parse(state.as_str()), Some(state));
    }
    for event in Event::ALL {
        assert_eq!(Event::parse(event.as_str()), Some(event));
    }
    for kind in NotificationKind::ALL {
        assert_eq!(NotificationKind::parse(kind.as_str()), Some(kind));
    }
}
