//! The background reconcilers: dispatch queued runs into free slots, send
//! the power action of dispatched runs, fire deadlines, resolve the
//! orchestrator-owned states a restart left behind, and keep the iperf3
//! server up while runs are in flight. Each pass is idempotent and
//! compare-and-set, so any number of orchestrator processes may run them
//! against one database; they run on a timer and when poked.
//!
//! Power actions run in tasks of their own (a BMC may take minutes to
//! answer; deadlines must not wait for it). Each action and its outcome goes
//! to the run's log ([`crate::runlogs::oplog`]). A failed action is tried again
//! after `power.retry_secs`, up to `power.attempts` times, then the run fails
//! with the last error's message (`PowerFailed`); an error that a retry
//! cannot fix (settings that cannot work, a BMC that refuses the request)
//! fails the run at once. The power deadline bounds all of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::OrchestratorError;
use crate::machine::{Event, RunState};
use crate::model::{Actor, Run};
use crate::orchestrator::Orchestrator;
use crate::power::{self, PowerDrivers, PowerError, PowerLog, PowerLogLevel, PowerOutcome};
use crate::runs::EventContext;

/// Whether trying again may help.
fn retryable(error: &PowerError) -> bool {
    match error {
        PowerError::InvalidSettings(_)
        | PowerError::Secret(_)
        | PowerError::ResetTypeNotAllowed { .. }
        | PowerError::AmbiguousSystem { .. } => false,
        PowerError::Bmc { status, .. } => *status >= 500 || *status == 408 || *status == 429,
        _ => true,
    }
}

/// The state of one run's power action.
#[derive(Debug, Clone, Default)]
struct PowerAttempt {
    version: i64,
    failures: u32,
    in_flight: bool,
    next_try_ms: i64,
}

/// The run's log as a [`PowerLog`].
struct RunPowerLog {
    orchestrator: Orchestrator,
    run_id: String,
    host: String,
}

impl PowerLog for RunPowerLog {
    fn record(&self, level: PowerLogLevel, message: &str) {
        match level {
            PowerLogLevel::Info => {
                tracing::info!(run = %self.run_id, host = %self.host, "{message}");
            }
            PowerLogLevel::Warn => {
                tracing::warn!(run = %self.run_id, host = %self.host, "{message}");
            }
            PowerLogLevel::Error => {
                tracing::error!(run = %self.run_id, host = %self.host, "{message}");
            }
        }
        crate::runlogs::oplog::append(
            &self.orchestrator.config().data_dir,
            self.orchestrator.hub(),
            &self.run_id,
            self.orchestrator.now_ms(),
            &level.to_string(),
            message,
        );
    }
}

/// The runs whose dispatch asked for a power action (the `PowerOn`
/// effect), waiting for the dispatcher to start it. The reconcilers' scan
/// of `WaitingWoL` runs is left with retries and with runs a restart
/// interrupted.
#[derive(Debug, Default)]
pub(crate) struct PowerRequests(Mutex<Vec<String>>);

impl PowerRequests {
    pub(crate) fn request(&self, run_id: &str) {
        self.lock().push(run_id.to_string());
    }

    pub(crate) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The reconcilers of one orchestrator process.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    orchestrator: Orchestrator,
    drivers: Arc<dyn PowerDrivers>,
    power: Arc<Mutex<HashMap<String, PowerAttempt>>>,
}

impl Dispatcher {
    pub fn new(orchestrator: Orchestrator, drivers: Arc<dyn PowerDrivers>) -> Self {
        Dispatcher {
            orchestrator,
            drivers,
            power: Arc::default(),
        }
    }

    /// One pass of every reconciler. Returns how many transitions it made
    /// (power actions it started finish later, in their own tasks).
    pub async fn reconcile_once(&self) -> Result<usize, OrchestratorError> {
        let orchestrator = &self.orchestrator;
        let mut moved = 0;
        moved += orchestrator.runs().fire_deadlines().await?.len();
        moved += orchestrator.runs().dispatch().await?.len();
        // only the runs a reconciler acts on: a pass costs the same with a
        // history of ten runs or of ten thousand
        let runs = orchestrator
            .runs()
            .runs_in_states(&[
                RunState::SpecValidate,
                RunState::Reporting,
                RunState::WaitingWoL,
            ])
            .await?;
        // orchestrator-owned states left behind by a restart
        for run in &runs {
            if matches!(run.state, RunState::SpecValidate | RunState::Reporting)
                && !orchestrator.runs().resolution_pending(&run.id)
            {
                orchestrator.runs().resolve_owned_states(&run.id).await?;
                moved += 1;
            }
        }
        // the iperf3 server runs only while some run is in flight
        if orchestrator.runs().any_run_holds_a_slot().await? {
            let config = orchestrator.config();
            let bind = config.iperf.bind.unwrap_or_else(|| config.listen.ip());
            orchestrator.iperf().ensure(&config.iperf, bind).await;
        } else {
            orchestrator.iperf().stop().await;
        }
        // the power actions the committed dispatches asked for, then the
        // ones to retry and those a restart interrupted
        let mut waiting = Vec::new();
        for run_id in orchestrator.runs().take_power_requests() {
            let run = orchestrator.run(&run_id).await?;
            if run.state == RunState::WaitingWoL {
                waiting.push(run);
            }
        }
        waiting.extend(
            runs.into_iter()
                .filter(|run| run.state == RunState::WaitingWoL),
        );
        self.start_power_actions(&waiting);
        Ok(moved)
    }

    /// Starts the power action of each run in `WaitingWoL` that has none
    /// in flight and is not waiting to retry, each in a task of its own;
    /// forgets the attempts of runs that left `WaitingWoL`.
    fn start_power_actions(&self, waiting: &[Run]) {
        let now = self.orchestrator.now_ms();
        let mut to_start = Vec::new();
        {
            let mut power = self.lock_power();
            power.retain(|run_id, _| waiting.iter().any(|run| &run.id == run_id));
            for run in waiting {
                let attempt = power.entry(run.id.clone()).or_default();
                if attempt.version != run.version {
                    *attempt = PowerAttempt {
                        version: run.version,
                        ..Default::default()
                    };
                }
                if attempt.in_flight || now < attempt.next_try_ms {
                    continue;
                }
                attempt.in_flight = true;
                to_start.push(run.clone());
            }
        }
        for run in to_start {
            let dispatcher = self.clone();
            tokio::spawn(async move {
                dispatcher.power_on(run).await;
            });
        }
    }

    fn lock_power(&self) -> std::sync::MutexGuard<'_, HashMap<String, PowerAttempt>> {
        self.power
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs one power action for a run in `WaitingWoL` and applies its
    /// outcome.
    async fn power_on(&self, run: Run) {
        let outcome = self.try_power_on(&run).await;
        let config = self.orchestrator.config();
        let (event, reason) = match outcome {
            Ok(outcome) => (Event::PowerOnSent, outcome.to_string()),
            Err((error, message)) => {
                let retry = {
                    let mut power = self.lock_power();
                    let attempt = power.entry(run.id.clone()).or_default();
                    attempt.failures += 1;
                    let retry = retryable(&error) && attempt.failures < config.power.attempts;
                    if retry {
                        // a final failure stays in flight until PowerFailed
                        // is applied, or a reconciler pass in between would
                        // try the BMC again
                        attempt.in_flight = false;
                        attempt.next_try_ms =
                            self.orchestrator.now_ms() + config.power.retry_secs as i64 * 1000;
                    }
                    retry.then_some(attempt.failures)
                };
                if let Some(failures) = retry {
                    let line = format!(
                        "power action failed (attempt {failures} of {}); trying again in {} s",
                        config.power.attempts, config.power.retry_secs
                    );
                    self.power_log(&run).record(PowerLogLevel::Warn, &line);
                    return;
                }
                (Event::PowerFailed, message)
            }
        };
        let recorded = self
            .orchestrator
            .runs()
            .apply_unless_moved(
                &run.id,
                event,
                EventContext {
                    actor: Some(Actor("power".into())),
                    expected_state: Some(RunState::WaitingWoL),
                    reason: Some(reason),
                    ..Default::default()
                },
            )
            .await;
        // once the outcome is recorded (or the run moved on), the attempt
        // stays in flight until a pass sees the run gone from WaitingWoL: a
        // pass that read the run before the outcome committed must not
        // power the host a second time
        if let Err(error) = recorded {
            tracing::error!(run = %run.id, "cannot record the power outcome: {error:#}");
            if let Some(attempt) = self.lock_power().get_mut(&run.id) {
                attempt.in_flight = false;
                attempt.next_try_ms =
                    self.orchestrator.now_ms() + config.power.retry_secs as i64 * 1000;
            }
        }
        self.orchestrator.poke();
    }

    fn power_log(&self, run: &Run) -> RunPowerLog {
        RunPowerLog {
            orchestrator: self.orchestrator.clone(),
            run_id: run.id.clone(),
            host: run.host_id.to_string(),
        }
    }

    /// The driver's outcome, or the error with the message for the run.
    async fn try_power_on(&self, run: &Run) -> Result<PowerOutcome, (PowerError, String)> {
        let host = match self.orchestrator.host(run.host_id).await {
            Ok(host) => host,
            Err(error) => {
                let message = format!("cannot read the host: {error}");
                return Err((PowerError::InvalidSettings(message.clone()), message));
            }
        };
        let log = RunPowerLog {
            orchestrator: self.orchestrator.clone(),
            run_id: run.id.clone(),
            host: host.name.clone(),
        };
        let driver = match self.drivers.driver_for(&host) {
            Ok(driver) => driver,
            Err(error) => {
                let message = format!("power: {error}");
                log.record(PowerLogLevel::Error, &message);
                return Err((error, message));
            }
        };
        power::power_on_for_pxe_logged(driver.as_ref(), &log)
            .await
            .map_err(|error| {
                let message = error_chain(driver.name(), &error);
                (error, message)
            })
    }
}

/// `power (driver): error: cause: cause`, as the run's failure reason.
fn error_chain(driver: &str, error: &PowerError) -> String {
    format!("power ({driver}): {}", crate::error::chain(error))
}

/// Runs the reconcilers until `shutdown` is set.
pub async fn run_reconcilers(dispatcher: Dispatcher, shutdown: tokio::sync::watch::Receiver<bool>) {
    let orchestrator = dispatcher.orchestrator.clone();
    let interval = Duration::from_millis(orchestrator.config().dispatcher.interval_ms.max(10));
    loop {
        if *shutdown.borrow() {
            return;
        }
        if let Err(error) = dispatcher.reconcile_once().await {
            tracing::error!("reconciler pass failed: {error:#}");
        }
        orchestrator.wait_for_poke(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_final_and_unreachable_bmcs_are_retried() {
        assert!(!retryable(&PowerError::Bmc {
            request: "POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset".into(),
            status: 400,
            message: "ResetType Foo is not supported".into(),
        }));
        assert!(retryable(&PowerError::Bmc {
            request: "GET /redfish/v1/Systems".into(),
            status: 503,
            message: "busy".into(),
        }));
        assert!(!retryable(&PowerError::InvalidSettings("x".into())));
        assert!(retryable(&PowerError::Timeout {
            what: "ipmitool".into(),
            seconds: 30
        }));
    }
}
