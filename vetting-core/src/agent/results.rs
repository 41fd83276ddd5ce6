//! Stage results: checked and re-judged outside the writer (writing
//! nothing), then the inventory, measurements and transition in one
//! transaction; a repeat gets the same answer.

use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use vetting_probes::protocol::{
    MAX_FINDING_ID_LEN, Outcome, ResultResponse, Stage, StageRef, StageResult, WipeFinding,
};
use vetting_probes::{Status, Verdict};

use crate::agent::Agent;
use crate::agent::evidence;
use crate::agent::{command_for, position_of};
use crate::error::{OrchestratorError, Result, db, internal};
use crate::machine::{Effect, Event, HoldReason, state_of};
use crate::model::{Actor, Run};
use crate::runs::EventContext;
use crate::store::entities::{artifact, component, inventory, measurement, stage};

/// The most measurements one result carries.
pub const MAX_MEASUREMENTS: usize = 100_000;

/// The most reasons an agent's verdict carries.
pub const MAX_VERDICT_REASONS: usize = 4096;

/// Rows per insert of a result's measurements (9 values each: far below
/// the bound-variable limits of SQLite and PostgreSQL).
pub(crate) const MEASUREMENT_CHUNK: usize = 500;

/// How many results re-judge their evidence at once.
pub(crate) static REJUDGE_PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// A result, checked: what its commit writes.
pub(crate) enum Prepared {
    /// A repeat of a result already taken: its stored answer.
    Repeat(ResultResponse),
    New(Box<PreparedResult>),
}

pub(crate) struct PreparedResult {
    /// The run as read when the result was checked (its version is
    /// compare-and-set at the commit).
    run: Run,
    reference: StageRef,
    outcome: Outcome,
    verdict: Verdict,
    agent_verdict: Verdict,
    hold_reason: Option<HoldReason>,
    /// For a held Storage result: the wipe probe's findings, checked.
    wipe_findings: Option<Vec<WipeFinding>>,
    data: StageData,
}

/// What a stage result stores beside its transition, in the transition's
/// transaction (see `write_stage_data`).
#[derive(Debug, Clone)]
pub struct StageData {
    pub stage: StageRef,
    pub inventory: Option<InventoryRows>,
    pub measurements: Vec<vetting_probes::protocol::Measurement>,
}

/// An InventoryCheck's inventory and its components, checked.
#[derive(Debug, Clone)]
pub struct InventoryRows {
    pub attempt: u32,
    pub json: String,
    pub components: Vec<(String, String, String)>,
}

/// Writes a result's inventory and summary measurements inside the
/// transaction of its transition (a repeated write replaces them).
pub(crate) async fn write_stage_data<C: sea_orm::ConnectionTrait>(
    txn: &C,
    run_id: &str,
    data: &StageData,
    now_ms: i64,
) -> std::result::Result<(), sea_orm::DbErr> {
    if let Some(rows) = &data.inventory {
        inventory::Entity::delete_many()
            .filter(inventory::Column::RunId.eq(run_id))
            .filter(inventory::Column::Attempt.eq(rows.attempt as i32))
            .exec(txn)
            .await?;
        inventory::ActiveModel {
            run_id: Set(run_id.to_string()),
            attempt: Set(rows.attempt as i32),
            inventory: Set(rows.json.clone()),
            created_at_ms: Set(now_ms),
        }
        .insert(txn)
        .await?;
        component::Entity::delete_many()
            .filter(component::Column::RunId.eq(run_id))
            .exec(txn)
            .await?;
        for chunk in rows.components.chunks(MEASUREMENT_CHUNK) {
            component::Entity::insert_many(chunk.iter().map(|(kind, identity, summary)| {
                component::ActiveModel {
                    run_id: Set(run_id.to_string()),
                    kind: Set(kind.clone()),
                    identity: Set(identity.clone()),
                    summary: Set(summary.clone()),
                    ..Default::default()
                }
            }))
            .exec(txn)
            .await?;
        }
    }
    if data.measurements.is_empty() {
        return Ok(());
    }
    measurement::Entity::delete_many()
        .filter(measurement::Column::RunId.eq(run_id))
        .filter(measurement::Column::Stage.eq(data.stage.stage.as_str()))
        .filter(measurement::Column::Attempt.eq(data.stage.attempt as i32))
        .filter(measurement::Column::Seq.is_null())
        .exec(txn)
        .await?;
    for chunk in data.measurements.chunks(MEASUREMENT_CHUNK) {
        measurement::Entity::insert_many(chunk.iter().map(|m| measurement::ActiveModel {
            run_id: Set(run_id.to_string()),
            stage: Set(Some(data.stage.stage.as_str().to_string())),
            attempt: Set(Some(data.stage.attempt as i32)),
            seq: Set(None),
            name: Set(m.name.clone()),
            value: Set(m.value),
            unit: Set(m.unit.clone()),
            at_ms: Set(now_ms),
            ..Default::default()
        }))
        .exec(txn)
        .await?;
    }
    Ok(())
}

/// Refuses (409, with the run's position) anything for a stage attempt
/// that is not the run's current one.
pub(crate) fn check_current(run: &Run, reference: StageRef) -> Result<()> {
    if run.current == Some(reference) && run.state == state_of(reference.stage) {
        return Ok(());
    }
    Err(OrchestratorError::NotCurrentStage {
        run_id: run.id.clone(),
        state: run.state,
        stage: reference.stage.as_str().to_string(),
        attempt: reference.attempt,
        position: position_of(run),
    })
}

/// The reason recorded on the stage: the messages that decided it.
pub(crate) fn summarize(verdict: &Verdict, outcome: Outcome) -> Option<String> {
    let wanted = match outcome {
        Outcome::Failed => Status::Fail,
        Outcome::Held => Status::Fail,
        Outcome::Skipped => Status::Skip,
        Outcome::Warned => Status::Warn,
        Outcome::Passed => return None,
    };
    let mut messages: Vec<&str> = verdict.messages(wanted).collect();
    if messages.is_empty() && outcome == Outcome::Held {
        messages = verdict.messages(Status::Warn).collect();
    }
    if messages.is_empty() {
        messages = verdict
            .reasons
            .iter()
            .map(|reason| reason.message.as_str())
            .collect();
    }
    if messages.is_empty() {
        None
    } else {
        Some(messages.join("; "))
    }
}

/// The identities of an inventory's components, for history across runs.
pub(crate) fn components_of(
    inventory: &vetting_probes::inventory::Inventory,
) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let value = match serde_json::to_value(inventory) {
        Ok(value) => value,
        Err(_) => return out,
    };
    let pick = |item: &serde_json::Value, keys: &[&str]| -> Option<String> {
        keys.iter().find_map(|key| {
            item.get(*key)
                .and_then(|v| v.as_str())
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().to_string())
        })
    };
    if let Some(system) = value.get("system")
        && let Some(identity) = pick(system, &["serial", "uuid"])
    {
        out.push(("system".into(), identity, system.to_string()));
    }
    for (kind, keys) in [
        ("disks", &["wwn", "serial", "name"][..]),
        ("nics", &["mac", "name"][..]),
        ("gpus", &["uuid", "serial", "pci_bus_id"][..]),
        ("pci_devices", &["slot"][..]),
    ] {
        if let Some(items) = value.get(kind).and_then(|v| v.as_array()) {
            for item in items {
                if let Some(identity) = pick(item, keys) {
                    out.push((
                        kind.trim_end_matches('s').to_string(),
                        identity,
                        item.to_string(),
                    ));
                }
            }
        }
    }
    if let Some(dimms) = value
        .get("memory")
        .and_then(|m| m.get("dimms"))
        .and_then(|v| v.as_array())
    {
        for dimm in dimms {
            if let Some(identity) = pick(dimm, &["serial", "slot"]) {
                out.push(("dimm".into(), identity, dimm.to_string()));
            }
        }
    }
    out
}

/// At most this many wipe-probe findings in one result.
pub const MAX_WIPE_FINDINGS: usize = 4096;

/// The wipe-probe findings of a result, checked (the agent is not
/// trusted): only Storage results carry them, a held one must (an override
/// names ids among them), and each has a unique printable id of at most
/// [`MAX_FINDING_ID_LEN`] characters and bounded texts. `Some` when there
/// are findings to record on the stage row. Called by
/// [`Orchestrator::agent_result`] before anything is stored; the findings
/// go into the `StageHeld` event's context.
pub(crate) fn checked_wipe_findings(result: &StageResult) -> Result<Option<Vec<WipeFinding>>> {
    let bad = |message: String| Err(OrchestratorError::BadRequest(message));
    let findings = &result.wipe_findings;
    if result.stage != Stage::Storage {
        if !findings.is_empty() {
            return bad(format!(
                "wipe_findings belong to Storage results, not {}",
                result.stage
            ));
        }
        return Ok(None);
    }
    if result.outcome == Outcome::Held && findings.is_empty() {
        return bad(
            "a held Storage result must list its wipe_findings (the ids an override acknowledges)"
                .into(),
        );
    }
    if findings.len() > MAX_WIPE_FINDINGS {
        return bad(format!(
            "{} wipe_findings: at most {MAX_WIPE_FINDINGS}",
            findings.len()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (index, finding) in findings.iter().enumerate() {
        let id = &finding.id;
        if id.is_empty()
            || id.chars().count() > MAX_FINDING_ID_LEN
            || !id.chars().all(|c| c.is_ascii_graphic())
        {
            return bad(format!(
                "wipe_findings[{index}].id must be 1 to {MAX_FINDING_ID_LEN} printable ASCII characters without spaces"
            ));
        }
        if !seen.insert(id.as_str()) {
            return bad(format!("wipe_findings[{index}].id `{id}` is repeated"));
        }
        for (field, text, limit) in [
            ("disk", &finding.disk, 256),
            ("kind", &finding.kind, 128),
            ("message", &finding.message, 4096),
        ] {
            if text.chars().count() > limit || text.chars().any(char::is_control) {
                return bad(format!(
                    "wipe_findings[{index}].{field} must be at most {limit} characters without control characters"
                ));
            }
        }
    }
    Ok((!findings.is_empty()).then(|| findings.clone()))
}

impl Agent {
    /// The checks and the re-judging of a result, without writing
    /// anything: a refused result (4xx) leaves every table and file as it
    /// was. Reads only; on SQLite this runs outside the writer, so the
    /// re-judging of large outputs never holds other runs' writes.
    pub(crate) async fn prepare_result(&self, run: &Run, result: StageResult) -> Result<Prepared> {
        let run = self.core.run(&run.id).await?;
        if result.attempt > i32::MAX as u32 {
            return Err(OrchestratorError::BadRequest(format!(
                "attempt {} is out of range",
                result.attempt
            )));
        }
        let reference = StageRef {
            stage: result.stage,
            attempt: result.attempt,
        };
        if let Err(not_current) = check_current(&run, reference) {
            // a repeat of a result already taken?
            if let Some(response) = self.taken_result(&run, reference).await? {
                return Ok(Prepared::Repeat(response));
            }
            return Err(not_current);
        }
        let hold_reason = match (result.outcome, result.hold_reason.as_deref()) {
            // only the wipe probe holds, and only Storage runs it
            (Outcome::Held, _) if result.stage != Stage::Storage => {
                return Err(OrchestratorError::BadRequest(format!(
                    "{} cannot hold the run: only Storage's wipe probe holds",
                    result.stage
                )));
            }
            (Outcome::Held, Some(text)) => match HoldReason::parse(text) {
                Some(reason) if reason.is_wipe_probe() => Some(reason),
                _ => {
                    return Err(OrchestratorError::BadRequest(format!(
                        "hold_reason `{text}` is not wipe_signatures or unexpected_data"
                    )));
                }
            },
            (Outcome::Held, None) => {
                return Err(OrchestratorError::BadRequest(
                    "a held result needs a hold_reason".into(),
                ));
            }
            (_, Some(_)) => {
                return Err(OrchestratorError::BadRequest(
                    "only a held result carries a hold_reason".into(),
                ));
            }
            _ => None,
        };
        let wipe_findings = checked_wipe_findings(&result)?;
        if result.verdict.reasons.len() > MAX_VERDICT_REASONS {
            return Err(OrchestratorError::BadRequest(format!(
                "the verdict has {} reasons; at most {MAX_VERDICT_REASONS} are taken",
                result.verdict.reasons.len()
            )));
        }
        if result.measurements.len() > MAX_MEASUREMENTS {
            return Err(OrchestratorError::BadRequest(format!(
                "the result has {} measurements; at most {MAX_MEASUREMENTS} are taken",
                result.measurements.len()
            )));
        }
        if let Some(bad) = result
            .measurements
            .iter()
            .find(|m| m.name.is_empty() || m.name.len() > 200 || m.unit.len() > 32)
        {
            return Err(OrchestratorError::BadRequest(format!(
                "measurement `{}` needs a name of 1-200 bytes and a unit of at most 32",
                bad.name.chars().take(64).collect::<String>()
            )));
        }
        let inventory = match (&result.inventory, result.stage) {
            (Some(json), Stage::InventoryCheck) => {
                let parsed: vetting_probes::inventory::Inventory =
                    serde_json::from_value(json.clone()).map_err(|error| {
                        OrchestratorError::BadRequest(format!(
                            "the inventory does not parse: {error}"
                        ))
                    })?;
                Some(InventoryRows {
                    attempt: result.attempt,
                    json: json.to_string(),
                    components: components_of(&parsed),
                })
            }
            (Some(_), stage) => {
                return Err(OrchestratorError::BadRequest(format!(
                    "only InventoryCheck carries an inventory, not {stage}"
                )));
            }
            (None, _) => None,
        };

        // the evidence: only through this stage attempt's rows
        let rows = artifact::Entity::find()
            .filter(artifact::Column::RunId.eq(run.id.as_str()))
            .filter(artifact::Column::Stage.eq(result.stage.as_str()))
            .filter(artifact::Column::Attempt.eq(result.attempt as i32))
            .all(self.core.store().db())
            .await
            .map_err(db("reading a stage's artifacts"))?;
        let references = evidence::merge_references(&result.artifacts);
        let cap = if references.len() <= evidence::ARTIFACTS_PER_STAGE {
            evidence::ARTIFACTS_PER_STAGE
        } else {
            evidence::artifact_cap(self.allowlisted_disks(&run).await?)
        };
        evidence::check_references(&references, &rows, result.stage, result.attempt, cap)
            .map_err(|error| OrchestratorError::BadRequest(error.to_string()))?;
        let dir = self.artifacts_dir(&run.id).join(format!(
            "{}-{}",
            result.stage.as_str(),
            result.attempt
        ));
        let (files, unusable) = evidence::evidence_files(&dir, &rows);
        let thresholds = self.core.config().thresholds.clone();
        let stage = result.stage;
        let judged = {
            // a few at a time, on the blocking pool: parsing a large
            // output must not take the runtime's threads
            let _permit = REJUDGE_PERMITS
                .acquire()
                .await
                .map_err(|_| internal("re-judging has stopped"))?;
            tokio::task::spawn_blocking(move || {
                files
                    .iter()
                    .map(|file| evidence::judge_file(file, stage, &thresholds))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(internal)?
        };
        let rejudged = evidence::fold(stage, &judged, &unusable, result.inventory.is_some());

        // the orchestrator's verdict
        let mut verdict = result.verdict.clone();
        verdict.merge(rejudged);
        let outcome = match result.outcome {
            Outcome::Held => Outcome::Held,
            Outcome::Failed => Outcome::Failed,
            agent_outcome => match verdict.status {
                Status::Fail => Outcome::Failed,
                Status::Warn if agent_outcome == Outcome::Passed => Outcome::Warned,
                _ => agent_outcome,
            },
        };
        if outcome != result.outcome {
            tracing::warn!(
                run = %run.id,
                stage = %result.stage,
                agent = ?result.outcome,
                orchestrator = ?outcome,
                "the orchestrator's verdict differs from the agent's"
            );
            verdict.add(
                Status::Pass,
                format!(
                    "the agent reported {:?}; the orchestrator's re-judged verdict is {:?}",
                    result.outcome, outcome
                ),
            );
        }
        Ok(Prepared::New(Box::new(PreparedResult {
            run,
            reference,
            outcome,
            verdict,
            agent_verdict: result.verdict,
            hold_reason,
            wipe_findings,
            data: StageData {
                stage: reference,
                inventory,
                measurements: result
                    .measurements
                    .into_iter()
                    .filter(|m| m.value.is_finite())
                    .collect(),
            },
        })))
    }

    /// The stored answer to a result already taken for `reference`, if any.
    pub(crate) async fn taken_result(
        &self,
        run: &Run,
        reference: StageRef,
    ) -> Result<Option<ResultResponse>> {
        let Some(row) = crate::store::by_key(
            stage::Entity::find_by_id((
                run.id.clone(),
                reference.stage.as_str().to_string(),
                reference.attempt as i32,
            )),
            self.core.store().db(),
        )
        .await
        .map_err(db("reading a stage"))?
        .filter(|row| row.finished_at_ms.is_some()) else {
            return Ok(None);
        };
        if let Some(stored) = row
            .response
            .as_deref()
            .and_then(|text| serde_json::from_str::<ResultResponse>(text).ok())
        {
            return Ok(Some(stored));
        }
        let verdict: Verdict = row
            .verdict
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        Ok(Some(ResultResponse {
            position: position_of(run),
            verdict,
            cmd: command_for(run, run.current),
        }))
    }

    /// How many disks the host's spec allowlists (each may carry its own
    /// artifacts).
    pub(crate) async fn allowlisted_disks(&self, run: &Run) -> Result<usize> {
        let host = self.core.host(run.host_id).await?;
        Ok(
            match self
                .core
                .operator()
                .host_spec(&host)
                .await
                .map_err(internal)?
            {
                Some(spec) => crate::spec::expected_disks(&spec)
                    .iter()
                    .map(|disk| disk.count.unwrap_or(1).clamp(1, 64) as usize)
                    .sum(),
                None => 0,
            },
        )
    }

    /// Writes a checked result: its inventory, measurements and transition
    /// in one transaction (compare-and-set on the run's version as
    /// prepared), then SpecValidate inside this request as the design
    /// wants, then the stored answer.
    pub(crate) async fn commit_result(&self, prepared: PreparedResult) -> Result<ResultResponse> {
        let PreparedResult {
            run,
            reference,
            outcome,
            verdict,
            agent_verdict,
            hold_reason,
            wipe_findings,
            data,
        } = prepared;
        let event = match outcome {
            Outcome::Passed | Outcome::Warned => Event::StagePassed,
            Outcome::Skipped => Event::StageSkipped,
            Outcome::Failed => Event::StageFailed,
            Outcome::Held => Event::StageHeld,
        };
        let reason = summarize(&verdict, outcome);
        let outcome_name = match outcome {
            Outcome::Passed => "passed",
            Outcome::Warned => "warned",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Held => "held",
        };
        let verdict_json = serde_json::to_string(&verdict).map_err(internal)?;
        let agent_verdict_json = serde_json::to_string(&agent_verdict).map_err(internal)?;
        let applied = self
            .core
            .runs()
            .apply(
                &run.id,
                event,
                EventContext {
                    actor: Some(Actor::agent()),
                    expected_version: Some(run.version),
                    hold_reason,
                    reason,
                    outcome: Some(outcome_name.to_string()),
                    verdict_json: Some(verdict_json),
                    agent_verdict_json: Some(agent_verdict_json),
                    stage_data: Some(std::sync::Arc::new(data)),
                    wipe_findings,
                    ..Default::default()
                },
            )
            .await?;
        // SpecValidate resolves inside this request (the reports are
        // written off the request path, by the report worker the
        // transition's effect queued it for)
        if applied.effects.contains(&Effect::ValidateSpec) {
            self.core.runs().resolve_spec_validate(&run.id).await?;
        }
        let run = self.core.run(&run.id).await?;
        let response = ResultResponse {
            position: position_of(&run),
            verdict,
            cmd: command_for(&run, run.current),
        };
        // kept for a repeat of this result (same answer)
        stage::Entity::update_many()
            .col_expr(
                stage::Column::Response,
                Expr::value(serde_json::to_string(&response).map_err(internal)?),
            )
            .filter(stage::Column::RunId.eq(run.id.as_str()))
            .filter(stage::Column::Stage.eq(reference.stage.as_str()))
            .filter(stage::Column::Attempt.eq(reference.attempt as i32))
            .exec(self.core.store().db())
            .await
            .map_err(db("storing a result's answer"))?;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::valid_artifact_name;

    #[test]
    pub(crate) fn wipe_findings_from_an_agent_are_checked() {
        let finding = |id: &str| WipeFinding {
            id: id.into(),
            disk: "sdb".into(),
            kind: "gpt".into(),
            offset: Some(0x200),
            message: "wipe probe: found gpt at offset 0x200 on /dev/sdb".into(),
        };
        let result = |stage: Stage, outcome: Outcome, findings: Vec<WipeFinding>| StageResult {
            stage,
            attempt: 1,
            outcome,
            verdict: Verdict::pass(),
            hold_reason: None,
            artifacts: Vec::new(),
            inventory: None,
            measurements: Vec::new(),
            wipe_findings: findings,
        };
        let good = vec![
            finding("serial:S1/gpt@0x200"),
            finding("serial:S1/PMBR@0x1fe"),
        ];
        assert_eq!(
            checked_wipe_findings(&result(Stage::Storage, Outcome::Held, good.clone())).unwrap(),
            Some(good.clone())
        );
        assert_eq!(
            checked_wipe_findings(&result(Stage::Smart, Outcome::Passed, Vec::new())).unwrap(),
            None
        );
        let refused = |result: StageResult, says: &str| {
            let error = checked_wipe_findings(&result).unwrap_err();
            assert!(
                matches!(&error, OrchestratorError::BadRequest(text) if text.contains(says)),
                "{says}: {error}"
            );
        };
        refused(
            result(Stage::Storage, Outcome::Held, Vec::new()),
            "must list its wipe_findings",
        );
        refused(
            result(Stage::Smart, Outcome::Passed, good.clone()),
            "belong to Storage results",
        );
        let repeated = vec![
            finding("serial:S1/gpt@0x200"),
            finding("serial:S1/gpt@0x200"),
        ];
        refused(result(Stage::Storage, Outcome::Held, repeated), "repeated");
        let long = "x".repeat(MAX_FINDING_ID_LEN + 1);
        for bad_id in ["", "serial:S 1/gpt@0x200", "serial:S1\n/gpt", long.as_str()] {
            refused(
                result(Stage::Storage, Outcome::Held, vec![finding(bad_id)]),
                "printable ASCII",
            );
        }
        let mut noisy = finding("serial:S1/gpt@0x200");
        noisy.message = "line\u{1b}[2J".into();
        refused(
            result(Stage::Storage, Outcome::Held, vec![noisy]),
            "message",
        );
        let many: Vec<WipeFinding> = (0..=MAX_WIPE_FINDINGS)
            .map(|index| finding(&format!("name:sdb/gpt@0x{index:x}")))
            .collect();
        refused(result(Stage::Storage, Outcome::Held, many), "at most");
    }

    #[test]
    pub(crate) fn artifact_names_are_plain_file_names() {
        assert!(valid_artifact_name("smartctl-sda.json"));
        for bad in ["", "../x", "a/b", ".hidden", "a b", &"x".repeat(129)] {
            assert!(!valid_artifact_name(bad), "{bad}");
        }
    }
}
