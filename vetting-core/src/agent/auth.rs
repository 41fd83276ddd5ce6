//! Authentication: one function, told which endpoint it serves, checks
//! the run token before any body is read ([`Agent::authenticate`]); what
//! it returns is the only way into the agent services.
use sea_orm::EntityTrait;
use vetting_probes::protocol::Endpoint;

use crate::agent::Agent;
use crate::error::{OrchestratorError, Result, db, internal};
use crate::model::Run;
use crate::store::entities::run;
use crate::tokens::{self, TokenError};

/// An agent request whose run token checked out for one endpoint. Only
/// [`Agent::authenticate`] makes one, and every agent service
/// (hello, claim, the writer's log, sensor, heartbeat, artifact and
/// result) takes one: there is no way in without the token check.
#[derive(Clone)]
pub struct AuthenticatedRun {
    pub(crate) endpoint: Endpoint,
    pub(crate) run_id: String,
    /// The run's row as authentication read it, for the endpoints that
    /// act on the run's state; log, sensor and heartbeat leave the row to
    /// the writer, which reads it once for a whole group of writes.
    pub(crate) run: Option<Run>,
    /// Where the request came from (the hello's address check).
    pub(crate) peer: Option<std::net::IpAddr>,
    /// Claim only: the token, for its one bcrypt check.
    pub(crate) claim_token: Option<String>,
}

impl std::fmt::Debug for AuthenticatedRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthenticatedRun")
            .field("endpoint", &self.endpoint)
            .field("run_id", &self.run_id)
            .field("state", &self.run.as_ref().map(|run| run.state))
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl AuthenticatedRun {
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The run's row as read when the token was checked, for the
    /// endpoints that read it (all but log, sensor and heartbeat).
    pub fn run(&self) -> Option<&Run> {
        self.run.as_ref()
    }

    /// Refuses use for another endpoint than the one it was checked for:
    /// the rules applied (the run's row read, the grace after the end)
    /// are that endpoint's.
    pub(crate) fn serves(&self, endpoint: Endpoint) -> Result<()> {
        if self.endpoint == endpoint {
            Ok(())
        } else {
            Err(internal(format!(
                "a request authenticated for {} was used for {endpoint}",
                self.endpoint
            )))
        }
    }

    /// The run's row, for an endpoint that reads it at authentication.
    pub(crate) fn row(&self, endpoint: Endpoint) -> Result<&Run> {
        self.serves(endpoint)?;
        self.run
            .as_ref()
            .ok_or_else(|| internal(format!("{endpoint} was authenticated without its run")))
    }
}

/// Whether authenticating `endpoint` reads the run's row. Log, sensor and
/// heartbeat, the hot path, check the token against the nonce kept in
/// memory and leave the row to the writer.
pub(crate) fn reads_run_at_authentication(endpoint: Endpoint) -> bool {
    !matches!(
        endpoint,
        Endpoint::Log | Endpoint::Sensor | Endpoint::Heartbeat
    )
}

/// Whether `endpoint` is still answered during the token grace after the
/// run ended: only the heartbeat, so that the agent hears `shutdown`.
pub(crate) fn answered_after_the_end(endpoint: Endpoint) -> bool {
    matches!(endpoint, Endpoint::Heartbeat)
}

impl Agent {
    /// The one authentication of the agent API, told which endpoint it
    /// serves, called before any body is read. The token is checked by
    /// HMAC and a constant-time comparison against the run's nonce (no
    /// bcrypt; claim checks bcrypt once, later). Then the endpoint's rules:
    /// hello, claim, result, artifact and hold read the run's row and are
    /// refused once the run has ended; log, sensor and heartbeat use the
    /// nonce kept in memory (read once) and leave the row, and whether the
    /// run has ended, to the writer; a heartbeat is answered during the
    /// token grace after the end. `peer` is where the request came from
    /// (the hello's address check). A refusal says only `Unauthorized` or
    /// `RunEnded`, never why the token was wrong.
    pub async fn authenticate(
        &self,
        endpoint: Endpoint,
        run_id: &str,
        token: &str,
        peer: Option<std::net::IpAddr>,
    ) -> Result<AuthenticatedRun> {
        let run = if reads_run_at_authentication(endpoint) {
            let run = Run::from_entity(self.read_verified(run_id, token).await?)?;
            self.refuse_if_ended(&run, endpoint)?;
            Some(run)
        } else {
            match self.core.known_nonce(run_id) {
                Some(nonce) => tokens::verify(self.core.key(), run_id, &nonce, token)
                    .map_err(OrchestratorError::Unauthorized)?,
                None => {
                    self.read_verified(run_id, token).await?;
                }
            }
            None
        };
        Ok(AuthenticatedRun {
            endpoint,
            run_id: run_id.to_string(),
            run,
            peer,
            claim_token: (endpoint == Endpoint::Claim).then(|| token.to_string()),
        })
    }

    /// The run's row, once its token is checked against the row's nonce
    /// (which is then kept in memory).
    pub(crate) async fn read_verified(&self, run_id: &str, token: &str) -> Result<run::Model> {
        let model = crate::store::by_key(
            run::Entity::find_by_id(run_id.to_string()),
            self.core.store().db(),
        )
        .await
        .map_err(db("reading a run"))?
        .ok_or(OrchestratorError::Unauthorized(TokenError::WrongRun))?;
        tokens::verify(self.core.key(), run_id, &model.token_nonce, token)
            .map_err(OrchestratorError::Unauthorized)?;
        self.core.remember_nonce(run_id, &model.token_nonce);
        Ok(model)
    }

    /// Whether a write may go to `run` (as the group read it): it exists
    /// and has not ended.
    pub(crate) fn check_writable(
        &self,
        run: Option<&Run>,
        run_id: &str,
        endpoint: Endpoint,
    ) -> Result<()> {
        let run = run.ok_or_else(|| OrchestratorError::RunNotFound(run_id.to_string()))?;
        self.refuse_if_ended(run, endpoint)
    }

    /// Refuses an agent request for a run that has ended; the endpoints
    /// [`answered_after_the_end`] (the heartbeat) still get through during
    /// the token grace, so the agent hears `shutdown`.
    pub(crate) fn refuse_if_ended(&self, run: &Run, endpoint: Endpoint) -> Result<()> {
        if run.state.is_terminal() {
            let grace_ms = self.core.config().deadlines.token_grace_secs as i64 * 1000;
            let ended = run.ended_at_ms.unwrap_or(run.updated_at_ms);
            if !answered_after_the_end(endpoint) || self.core.now_ms() > ended + grace_ms {
                return Err(OrchestratorError::RunEnded {
                    run_id: run.id.clone(),
                });
            }
        }
        Ok(())
    }
}
