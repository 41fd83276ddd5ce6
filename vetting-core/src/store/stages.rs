//! The stages table: a run's stage attempts, opened and closed by the runs
//! driver inside its transaction, and read.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};

use crate::error::{Result, db};
use crate::machine::RunState;
use crate::model::StageRecord;
use crate::store::entities::stage;

pub async fn list(conn: &impl ConnectionTrait, run_id: &str) -> Result<Vec<StageRecord>> {
    Ok(stage::Entity::find()
        .filter(stage::Column::RunId.eq(run_id))
        .order_by_asc(stage::Column::StartedAtMs)
        .all(conn)
        .await
        .map_err(db("reading stages"))?
        .into_iter()
        .map(|model| StageRecord {
            run_id: model.run_id,
            stage: model.stage,
            attempt: model.attempt.max(0) as u32,
            outcome: model.outcome,
            reason: model.reason,
            started_at_ms: model.started_at_ms,
            finished_at_ms: model.finished_at_ms,
        })
        .collect())
}

/// What a closing stage row records beside its outcome.
#[derive(Debug, Clone, Default)]
pub struct Closing {
    pub reason: Option<String>,
    /// JSON of the orchestrator's verdict.
    pub verdict: Option<String>,
    /// JSON of the agent's verdict.
    pub agent_verdict: Option<String>,
    /// JSON of the wipe probe's findings.
    pub wipe_findings: Option<String>,
}

/// Opens the row of a stage attempt.
pub async fn open(
    conn: &impl ConnectionTrait,
    run_id: &str,
    stage_name: &str,
    attempt: u32,
    now: crate::clock::Millis,
) -> std::result::Result<(), sea_orm::DbErr> {
    stage::ActiveModel {
        run_id: Set(run_id.to_string()),
        stage: Set(stage_name.to_string()),
        attempt: Set(attempt as i32),
        outcome: Set("running".into()),
        reason: Set(None),
        started_at_ms: Set(now),
        finished_at_ms: Set(None),
        agent_verdict: Set(None),
        verdict: Set(None),
        response: Set(None),
        wipe_findings: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// Closes the open row of an agent stage attempt with `outcome`.
pub async fn close(
    conn: &impl ConnectionTrait,
    run_id: &str,
    attempt: vetting_probes::protocol::StageRef,
    outcome: &str,
    closing: Closing,
    now: crate::clock::Millis,
) -> std::result::Result<(), sea_orm::DbErr> {
    stage::Entity::update_many()
        .col_expr(stage::Column::Outcome, Expr::value(outcome))
        .col_expr(stage::Column::Reason, Expr::value(closing.reason))
        .col_expr(stage::Column::FinishedAtMs, Expr::value(now))
        .col_expr(stage::Column::Verdict, Expr::value(closing.verdict))
        .col_expr(
            stage::Column::AgentVerdict,
            Expr::value(closing.agent_verdict),
        )
        .col_expr(
            stage::Column::WipeFindings,
            Expr::value(closing.wipe_findings),
        )
        .filter(stage::Column::RunId.eq(run_id))
        .filter(stage::Column::Stage.eq(attempt.stage.as_str()))
        .filter(stage::Column::Attempt.eq(attempt.attempt as i32))
        .filter(stage::Column::FinishedAtMs.is_null())
        .exec(conn)
        .await?;
    Ok(())
}

/// Closes the open row of SpecValidate with `outcome`.
pub async fn close_spec_validate(
    conn: &impl ConnectionTrait,
    run_id: &str,
    outcome: &str,
    reason: Option<String>,
    now: crate::clock::Millis,
) -> std::result::Result<(), sea_orm::DbErr> {
    stage::Entity::update_many()
        .col_expr(stage::Column::Outcome, Expr::value(outcome))
        .col_expr(stage::Column::Reason, Expr::value(reason))
        .col_expr(stage::Column::FinishedAtMs, Expr::value(now))
        .filter(stage::Column::RunId.eq(run_id))
        .filter(stage::Column::Stage.eq(RunState::SpecValidate.as_str()))
        .filter(stage::Column::FinishedAtMs.is_null())
        .exec(conn)
        .await?;
    Ok(())
}

/// How many attempts of `stage_name` a run has had.
pub async fn attempts(
    conn: &impl ConnectionTrait,
    run_id: &str,
    stage_name: &str,
) -> std::result::Result<u64, sea_orm::DbErr> {
    stage::Entity::find()
        .filter(stage::Column::RunId.eq(run_id))
        .filter(stage::Column::Stage.eq(stage_name))
        .count(conn)
        .await
}

/// The outcomes that count as a failed stage attempt (`/metrics`).
pub const FAILED_OUTCOMES: [&str; 2] = ["failed", "timed_out"];

/// Failed stage attempts per stage name, all time (one `GROUP BY` over
/// the index `stages_outcome`).
pub async fn failures_by_stage(
    conn: &impl ConnectionTrait,
) -> std::result::Result<Vec<(String, i64)>, sea_orm::DbErr> {
    stage::Entity::find()
        .select_only()
        .column(stage::Column::Stage)
        .column_as(stage::Column::Stage.count(), "count")
        .filter(stage::Column::Outcome.is_in(FAILED_OUTCOMES))
        .group_by(stage::Column::Stage)
        .order_by_asc(stage::Column::Stage)
        .into_tuple::<(String, i64)>()
        .all(conn)
        .await
}
