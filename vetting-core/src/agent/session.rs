//! Hello, claim and the plan: the agent's session with its run, and what
//! a heartbeat is answered.
use sea_orm::EntityTrait;
use vetting_probes::protocol::{
    ClaimResponse, Endpoint, HelloRequest, PROTOCOL_VERSION, Stage, StageParams, StageRef,
};

use super::auth::*;
use crate::agent::Agent;
use crate::error::{OrchestratorError, Result, db, internal};
use crate::machine::{Event, RunState};
use crate::model::{Actor, CorruptRow, Run};
use crate::runs::EventContext;
use crate::store::audit;
use crate::store::entities::run;
use crate::tokens::{self};
use vetting_probes::protocol::{Command, RunPosition};

impl Agent {
    /// The run token, derived from the stored nonce and the secret key.
    pub async fn token_for(&self, run_id: &str) -> Result<String> {
        let model = crate::store::by_key(
            run::Entity::find_by_id(run_id.to_string()),
            self.core.conn(),
        )
        .await
        .map_err(db("reading a run"))?
        .ok_or_else(|| OrchestratorError::RunNotFound(run_id.to_string()))?;
        let nonce = hex::decode(&model.token_nonce).map_err(|_| CorruptRow {
            run_id: run_id.to_string(),
            field: "token_nonce",
            value: model.token_nonce.clone(),
        })?;
        Ok(tokens::derive_token(&self.core.inner.key, run_id, &nonce))
    }

    /// The agent booted: the boot script now exits to disk.
    pub(crate) async fn hello(&self, run: &Run) -> Result<Run> {
        if run.state == RunState::Booting && run.hello_at_ms.is_none() {
            return self.while_booting(run, Event::Hello).await;
        }
        self.core.run(&run.id).await
    }

    /// Applies the agent's `event` to a run still in `Booting` (another
    /// request may have moved it on) and reads the run back.
    async fn while_booting(&self, run: &Run, event: Event) -> Result<Run> {
        self.core
            .runs()
            .apply_unless_moved(
                &run.id,
                event,
                EventContext {
                    actor: Some(Actor::agent()),
                    expected_state: Some(RunState::Booting),
                    ..Default::default()
                },
            )
            .await?;
        self.core.run(&run.id).await
    }

    /// Records that `run`'s boot script, token included, went to `peer`
    /// (an audit record `boot_script`): the agent's hello is compared with
    /// it (`Agent::check_hello_address`).
    pub async fn record_boot_script_fetch(
        &self,
        run: &Run,
        peer: std::net::IpAddr,
        mac: &str,
    ) -> Result<()> {
        let txn = self.core.begin_write("recording a boot script").await?;
        audit::record(
            &txn,
            self.core.now_ms(),
            audit::Entry::new(&Actor::orchestrator(), BOOT_SCRIPT_AUDIT)
                .run(&run.id)
                .host(run.host_id)
                .detail(serde_json::json!({"peer": plain_address(peer).to_string(), "mac": mac})),
        )
        .await?;
        txn.commit().await.map_err(db("recording a boot script"))?;
        Ok(())
    }

    /// The agent's first hello came from `hello_peer`. Where the boot
    /// script went to another address, or to more than this one, a warning
    /// goes to the run's log and an audit record `hello_address_mismatch`
    /// names them all: whoever fetched the token first can say hello and
    /// close the real host's boot window. The hello stands (the token is
    /// the gate); nothing is said when no fetch was recorded.
    pub(crate) async fn check_hello_address(
        &self,
        run: &Run,
        hello_peer: std::net::IpAddr,
    ) -> Result<()> {
        let hello = plain_address(hello_peer).to_string();
        let fetched: std::collections::BTreeSet<String> = self
            .core
            .operator()
            .audit_log(Some(&run.id))
            .await?
            .into_iter()
            .filter(|record| record.action == BOOT_SCRIPT_AUDIT)
            .filter_map(|record| {
                let detail: serde_json::Value =
                    serde_json::from_str(record.detail.as_deref()?).ok()?;
                Some(detail.get("peer")?.as_str()?.to_string())
            })
            .collect();
        if fetched.is_empty() || fetched.iter().all(|peer| *peer == hello) {
            return Ok(());
        }
        let fetched: Vec<String> = fetched.into_iter().collect();
        let text = format!(
            "agent hello from {hello}, but the boot script with the run's token was fetched by {}",
            fetched.join(", ")
        );
        tracing::warn!(run = %run.id, "{text}");
        let now = self.core.now_ms();
        crate::runlogs::oplog::append(
            &self.core.config().data_dir,
            self.core.hub(),
            &run.id,
            now,
            "warn",
            &text,
        );
        let txn = self
            .core
            .begin_write("recording a hello address mismatch")
            .await?;
        audit::record(
            &txn,
            now,
            audit::Entry::new(&Actor::orchestrator(), "hello_address_mismatch")
                .run(&run.id)
                .host(run.host_id)
                .detail(serde_json::json!({"hello": hello, "boot_script_fetched_by": fetched})),
        )
        .await?;
        txn.commit()
            .await
            .map_err(db("recording a hello address mismatch"))?;
        Ok(())
    }

    /// The agent claims the run: bcrypt is checked here, once per run.
    pub(crate) async fn claim(&self, run: &Run, token: &str) -> Result<Run> {
        if run.claimed_at_ms.is_none() {
            let model =
                crate::store::by_key(run::Entity::find_by_id(run.id.clone()), self.core.conn())
                    .await
                    .map_err(db("reading a run"))?
                    .ok_or_else(|| OrchestratorError::RunNotFound(run.id.clone()))?;
            let token = token.to_string();
            let hash = model.token_hash.clone();
            let scheme = tokens::HashScheme::from_stored(model.token_hash_scheme.as_deref())
                .ok_or(OrchestratorError::Unauthorized(
                    tokens::TokenError::HashMismatch,
                ))?;
            tokio::task::spawn_blocking(move || tokens::verify_bcrypt(&token, &hash, scheme))
                .await
                .map_err(|error| OrchestratorError::BadRequest(error.to_string()))?
                .map_err(OrchestratorError::Unauthorized)?;
        }
        if run.state == RunState::Booting {
            return self.while_booting(run, Event::Claim).await;
        }
        self.core.run(&run.id).await
    }

    /// `hello` with the agent's request: an agent that speaks another
    /// protocol version is refused (`ProtocolMismatch`) before anything
    /// about the run changes (no hello recorded, the boot window stays
    /// open, the token keeps working), then [`Agent::agent_hello`].
    pub async fn hello_request(
        &self,
        request: &AuthenticatedRun,
        hello: &HelloRequest,
    ) -> Result<Run> {
        check_protocol_version(hello.protocol_version)?;
        self.agent_hello(request).await
    }

    /// `hello`: the agent booted. The first hello's address is compared
    /// with where the boot script went (`Agent::check_hello_address`,
    /// which only reports: the hello stands). The protocol version is
    /// the caller's to check ([`Agent::hello_request`] does).
    pub async fn agent_hello(&self, request: &AuthenticatedRun) -> Result<Run> {
        let run = request.row(Endpoint::Hello)?;
        let first = run.hello_at_ms.is_none();
        let run = self.hello(run).await?;
        if first
            && let Some(peer) = request.peer
            && let Err(error) = self.check_hello_address(&run, peer).await
        {
            tracing::error!(run = %run.id, "checking the hello's address: {error}");
        }
        Ok(run)
    }

    /// `claim`: the stage plan and its parameters. bcrypt is checked once.
    pub async fn agent_claim(&self, request: &AuthenticatedRun) -> Result<ClaimResponse> {
        let run = request.row(Endpoint::Claim)?;
        let token = request
            .claim_token
            .as_deref()
            .ok_or_else(|| internal("a claim was authenticated without its token"))?;
        let run = self.claim(run, token).await?;
        if !run.state.agent_is_active() && run.state != RunState::FailedHolding {
            return Err(OrchestratorError::InvalidTransition {
                run_id: run.id.clone(),
                source: crate::machine::InvalidTransition {
                    state: run.state,
                    event: Event::Claim,
                },
            });
        }
        let params = self.stage_params(&run).await?;
        Ok(ClaimResponse {
            run_id: run.id.clone(),
            position: position_of(&run),
            stages: Stage::ALL.to_vec(),
            params,
            thresholds: self.core.config().thresholds.clone(),
            heartbeat_interval_secs: (self.core.config().deadlines.heartbeat_silence_secs / 6)
                .max(1),
            slow_heartbeat_interval_secs: (self.core.config().deadlines.heartbeat_silence_secs / 3)
                .max(1),
            next_log_seq: run.next_log_seq.max(0) as u64,
            next_sensor_seq: run.next_sensor_seq.max(0) as u64,
        })
    }

    /// The parameters handed to the agent: config, plus what the host's
    /// spec expects (the device allowlist), plus the iperf3 server.
    pub(crate) async fn stage_params(&self, run: &Run) -> Result<StageParams> {
        let mut params = self.core.config().stages.clone();
        let host = self.core.host(run.host_id).await?;
        if let Some(spec) = self
            .core
            .operator()
            .host_spec(&host)
            .await
            .map_err(internal)?
        {
            params.storage.expected_disks = crate::spec::expected_disks(&spec);
            params.expected = crate::spec::expected_parts(&spec);
        } else {
            params.storage.expected_disks = Vec::new();
        }
        params.storage.override_wipe = run.override_flags.iter().any(|f| f == "override_wipe");
        params.storage.acknowledged_findings = if params.storage.override_wipe {
            run.acknowledged_findings.clone()
        } else {
            Vec::new()
        };
        let bind = self
            .core
            .config()
            .iperf
            .bind
            .unwrap_or_else(|| self.core.config().listen.ip());
        if let Some(port) = self
            .core
            .iperf()
            .ensure(&self.core.config().iperf, bind)
            .await
        {
            params.network.iperf_host = Some(self.public_host());
            params.network.iperf_port = Some(port);
        }
        Ok(params)
    }

    /// The host part of `public_url` (what the agent connects to).
    pub fn public_host(&self) -> String {
        let url = self.core.config().public_url();
        let rest = url.split("://").nth(1).unwrap_or(&url);
        let authority = rest.split('/').next().unwrap_or(rest);
        if let Some(stripped) = authority.strip_prefix('[') {
            return stripped.split(']').next().unwrap_or(stripped).to_string();
        }
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host)
            .to_string()
    }
}

/// Refuses an agent that speaks another protocol version than
/// [`PROTOCOL_VERSION`] (hello and claim carry it): a clear error naming
/// both, never a half-served run.
pub fn check_protocol_version(agent: u32) -> Result<()> {
    if agent == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(OrchestratorError::ProtocolMismatch {
            agent,
            server: PROTOCOL_VERSION,
        })
    }
}

/// What the heartbeat answers in each state.
pub fn command_for(run: &Run, agent_current: Option<StageRef>) -> Command {
    match run.state {
        RunState::Completed | RunState::Released | RunState::Cancelled | RunState::Failed => {
            Command::Shutdown
        }
        RunState::FailedHolding => Command::Abort,
        state if state.stage().is_some() => {
            if run.current.is_some() && agent_current != run.current {
                Command::RetryStage
            } else {
                Command::Continue
            }
        }
        _ => Command::Continue,
    }
}

/// The position the agent is told.
pub fn position_of(run: &Run) -> RunPosition {
    RunPosition {
        state: run.state.as_str().to_string(),
        current: run.current,
    }
}

/// The audit action of a boot script handed out.
const BOOT_SCRIPT_AUDIT: &str = "boot_script";

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) as plain IPv4.
pub fn plain_address(address: std::net::IpAddr) -> std::net::IpAddr {
    match address {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, std::net::IpAddr::V4),
        v4 => v4,
    }
}
