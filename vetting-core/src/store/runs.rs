//! The runs table: typed reads of runs (the compare-and-set write is the
//! runs driver's, in its transaction).

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::error::{OrchestratorError, Result, db};
use crate::machine::RunState;
use crate::model::Run;
use crate::store::entities::run;

pub async fn get(conn: &impl ConnectionTrait, run_id: &str) -> Result<Run> {
    let model = crate::store::by_key(run::Entity::find_by_id(run_id.to_string()), conn)
        .await
        .map_err(db("reading a run"))?
        .ok_or_else(|| OrchestratorError::RunNotFound(run_id.to_string()))?;
    Ok(Run::from_entity(model)?)
}

/// Runs, newest first.
pub async fn list(conn: &impl ConnectionTrait, host_id: Option<i64>) -> Result<Vec<Run>> {
    let mut query = run::Entity::find()
        .order_by_desc(run::Column::CreatedAtMs)
        .order_by_desc(run::Column::Id);
    if let Some(host_id) = host_id {
        query = query.filter(run::Column::HostId.eq(host_id));
    }
    query
        .all(conn)
        .await
        .map_err(db("listing runs"))?
        .into_iter()
        .map(|model| Run::from_entity(model).map_err(OrchestratorError::from))
        .collect()
}

/// Runs in any of `states`, oldest first (the reconcilers' view: the
/// few runs that need them, not the whole history).
pub async fn in_states(conn: &impl ConnectionTrait, states: &[RunState]) -> Result<Vec<Run>> {
    run::Entity::find()
        .filter(run::Column::State.is_in(states.iter().map(|state| state.as_str())))
        .order_by_asc(run::Column::CreatedAtMs)
        .order_by_asc(run::Column::Id)
        .all(conn)
        .await
        .map_err(db("listing runs by state"))?
        .into_iter()
        .map(|model| Run::from_entity(model).map_err(OrchestratorError::from))
        .collect()
}

/// Whether some run holds a dispatcher slot.
pub async fn any_holding_a_slot(conn: &impl ConnectionTrait) -> Result<bool> {
    let slot_states = RunState::ALL
        .iter()
        .filter(|state| state.holds_slot())
        .map(|state| state.as_str());
    let found = run::Entity::find()
        .select_only()
        .column(run::Column::Id)
        .filter(run::Column::State.is_in(slot_states))
        .into_tuple::<String>()
        .one(conn)
        .await
        .map_err(db("looking for runs in flight"))?;
    Ok(found.is_some())
}

/// The rows of `run_ids` (those that exist), as stored: the writer reads
/// them once per group and tells a corrupt row apart itself.
pub async fn rows_by_ids(
    conn: &impl ConnectionTrait,
    run_ids: Vec<&str>,
) -> std::result::Result<Vec<run::Model>, sea_orm::DbErr> {
    if run_ids.is_empty() {
        return Ok(Vec::new());
    }
    run::Entity::find()
        .filter(run::Column::Id.is_in(run_ids))
        .all(conn)
        .await
}

/// Every heartbeat of a writer group in two statements: liveness, and the
/// silence deadline of the runs whose agent is expected to talk.
pub async fn record_heartbeats(
    conn: &impl ConnectionTrait,
    run_ids: Vec<String>,
    now: crate::clock::Millis,
    silence_ms: i64,
) -> std::result::Result<(), sea_orm::DbErr> {
    if run_ids.is_empty() {
        return Ok(());
    }
    run::Entity::update_many()
        .col_expr(run::Column::LastHeartbeatMs, Expr::value(now))
        .filter(run::Column::Id.is_in(run_ids.iter().map(String::as_str)))
        .exec(conn)
        .await?;
    let listening = RunState::ALL
        .into_iter()
        .filter(|state| state.agent_is_active() || *state == RunState::Booting)
        .map(RunState::as_str);
    run::Entity::update_many()
        .col_expr(
            run::Column::HeartbeatDeadlineMs,
            Expr::value(now.saturating_add(silence_ms)),
        )
        .filter(run::Column::Id.is_in(run_ids.iter().map(String::as_str)))
        .filter(run::Column::State.is_in(listening))
        .exec(conn)
        .await?;
    Ok(())
}

/// The compare-and-set of a transition: the run row becomes `next` (and
/// `version + 1`) only if it is still at the version and state `run` was
/// read with. Whether it was.
pub async fn compare_and_set(
    conn: &impl ConnectionTrait,
    run: &Run,
    next: &crate::machine::RunUpdate,
    acknowledged_json: Option<String>,
    now: crate::clock::Millis,
) -> std::result::Result<bool, sea_orm::DbErr> {
    let updated = run::Entity::update_many()
        .col_expr(run::Column::State, Expr::value(next.state.as_str()))
        .col_expr(run::Column::Version, Expr::value(run.version + 1))
        .col_expr(
            run::Column::HoldReason,
            Expr::value(next.hold_reason.map(|r| r.as_str().to_string())),
        )
        .col_expr(
            run::Column::FailureReason,
            Expr::value(next.failure_reason.clone()),
        )
        .col_expr(
            run::Column::CurrentStage,
            Expr::value(next.current.map(|c| c.stage.as_str().to_string())),
        )
        .col_expr(
            run::Column::CurrentAttempt,
            Expr::value(next.current.map(|c| c.attempt as i32)),
        )
        .col_expr(
            run::Column::StateDeadlineMs,
            Expr::value(next.state_deadline_ms),
        )
        .col_expr(
            run::Column::HeartbeatDeadlineMs,
            Expr::value(next.heartbeat_deadline_ms),
        )
        .col_expr(
            run::Column::OverrideFlags,
            Expr::value(if next.override_flags.is_empty() {
                None
            } else {
                Some(next.override_flags.join(","))
            }),
        )
        .col_expr(
            run::Column::AcknowledgedFindings,
            Expr::value(acknowledged_json),
        )
        .col_expr(run::Column::QueuedAtMs, Expr::value(next.queued_at_ms))
        .col_expr(run::Column::HelloAtMs, Expr::value(next.hello_at_ms))
        .col_expr(run::Column::ClaimedAtMs, Expr::value(next.claimed_at_ms))
        .col_expr(run::Column::EndedAtMs, Expr::value(next.ended_at_ms))
        .col_expr(run::Column::UpdatedAtMs, Expr::value(now))
        .filter(run::Column::Id.eq(run.id.as_str()))
        .filter(run::Column::Version.eq(run.version))
        .filter(run::Column::State.eq(run.state.as_str()))
        .exec(conn)
        .await?;
    Ok(updated.rows_affected == 1)
}

/// Where a page of runs starts: after the run created at `created_at_ms`
/// with id `id` (newest first, so "after" is older).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunsAfter {
    pub created_at_ms: i64,
    pub id: String,
}

/// The select of one page of runs, newest first by `(created_at_ms, id)`,
/// filtered by state and host, starting after `after`, `limit` rows. The
/// one definition of the page's query: the page runs it, and the index
/// test explains it (`EXPLAIN QUERY PLAN`): each filter has its index
/// (`runs_created`, `runs_state_created`, `runs_host_created`, migration 7).
pub fn page_select(
    state: Option<RunState>,
    host_id: Option<i64>,
    after: Option<&RunsAfter>,
    limit: u64,
) -> sea_orm::Select<run::Entity> {
    let mut query = run::Entity::find();
    if let Some(state) = state {
        query = query.filter(run::Column::State.eq(state.as_str()));
    }
    if let Some(host_id) = host_id {
        query = query.filter(run::Column::HostId.eq(host_id));
    }
    if let Some(after) = after {
        use sea_orm::sea_query::ExprTrait;
        query = query.filter(
            Expr::tuple([
                Expr::col((run::Entity, run::Column::CreatedAtMs)),
                Expr::col((run::Entity, run::Column::Id)),
            ])
            .lt(Expr::tuple([
                Expr::value(after.created_at_ms),
                Expr::value(after.id.clone()),
            ])),
        );
    }
    query
        .order_by_desc(run::Column::CreatedAtMs)
        .order_by_desc(run::Column::Id)
        .limit(limit)
}

/// One page of runs (see [`page_select`]) and whether more follow.
pub async fn page(
    conn: &impl ConnectionTrait,
    state: Option<RunState>,
    host_id: Option<i64>,
    after: Option<&RunsAfter>,
    limit: u64,
) -> Result<(Vec<Run>, bool)> {
    let mut rows = page_select(state, host_id, after, limit + 1)
        .all(conn)
        .await
        .map_err(db("listing a page of runs"))?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let runs = rows
        .into_iter()
        .map(|model| Run::from_entity(model).map_err(OrchestratorError::from))
        .collect::<Result<Vec<Run>>>()?;
    Ok((runs, more))
}

/// How many runs are in each state (the states that have any).
pub async fn count_by_state(conn: &impl ConnectionTrait) -> Result<Vec<(String, i64)>> {
    run::Entity::find()
        .select_only()
        .column(run::Column::State)
        .column_as(run::Column::Id.count(), "count")
        .group_by(run::Column::State)
        .into_tuple::<(String, i64)>()
        .all(conn)
        .await
        .map_err(db("counting runs by state"))
}

/// How many runs are in `state` (index `runs_state_created`).
pub async fn count_in_state(conn: &impl ConnectionTrait, state: RunState) -> Result<u64> {
    use sea_orm::PaginatorTrait;
    run::Entity::find()
        .filter(run::Column::State.eq(state.as_str()))
        .count(conn)
        .await
        .map_err(db("counting runs in a state"))
}
