//! Notifications: the public extension point that tells people when a run
//! needs them (a stage failed, the hardware is not what was expected, a host
//! is held for an operator, a run completed, a host went silent).
//!
//! A [`Notifier`] delivers one [`Notification`] somewhere (a chat webhook,
//! mail, a pager). [`Notifiers`] is the registry the orchestrator holds
//! ([`crate::orchestrator::Orchestrator::notifiers`]): each target has a
//! name and a [`Route`] (which kinds, from which severity up), and
//! [`Notifiers::notify`] hands a notification to every target whose route
//! matches, each in a tokio task of its own, bounded by
//! [`NOTIFY_TIMEOUT`]. The caller never waits for a delivery: a hanging or
//! failing target cannot delay a transition, and a failure is logged with
//! the target's name and the reason (the others still get theirs).
//!
//! # Adding a notifier
//!
//! Implement [`Notifier`]: `name` is a short word for logs, `send` delivers
//! one notification and returns a [`NotifyError`] when it could not (the
//! registry logs it; nothing retries, so a notifier that wants retries does
//! them inside `send`, within the timeout). Then register it, in an
//! embedding program through `vetting_http::Server`'s builder or directly:
//!
//! ```
//! use std::sync::Arc;
//! use vetting_core::notify::{
//!     Notification, NotificationKind, Notifier, Notifiers, NotifyError, Route, Severity,
//! };
//!
//! /// Writes each notification to stderr.
//! struct Stderr;
//!
//! #[async_trait::async_trait]
//! impl Notifier for Stderr {
//!     fn name(&self) -> &str {
//!         "stderr"
//!     }
//!     async fn send(&self, notification: &Notification) -> Result<(), NotifyError> {
//!         eprintln!("{notification}");
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let notifiers = Notifiers::new();
//! // failures and lost hosts only: warnings and worse
//! notifiers.add(
//!     "on-call",
//!     Arc::new(Stderr),
//!     Route::all().min_severity(Severity::Warning),
//! );
//! let notification = Notification::new(NotificationKind::StageFailed, "run-1", 7, 0)
//!     .stage("SMART")
//!     .reason("reallocated sectors over the threshold");
//! let deliveries = notifiers.notify(notification);
//! assert_eq!(deliveries.len(), 1);
//! # for delivery in deliveries { delivery.wait().await; }
//! # }
//! ```

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long one target gets for one notification.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// What happened: the kinds are the state machine's
/// ([`crate::machine::Effect::Notify`] names one per row of the table).
pub use crate::machine::NotificationKind;

impl NotificationKind {
    /// How much this kind matters unless the sender says otherwise: a
    /// completed run is news, a mismatch or a hold wants an operator, a
    /// failed stage or a lost host means broken hardware or a stuck run.
    pub fn default_severity(self) -> Severity {
        match self {
            NotificationKind::RunCompleted => Severity::Info,
            NotificationKind::SpecMismatch | NotificationKind::HoldingOpened => Severity::Warning,
            NotificationKind::StageFailed | NotificationKind::HostLost => Severity::Critical,
        }
    }
}

/// How much a notification matters, ordered: `Info < Warning < Critical`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    #[default]
    Info,
    Warning,
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        })
    }
}

/// One thing to tell people about a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub kind: NotificationKind,
    pub severity: Severity,
    pub run_id: String,
    pub host_id: i64,
    pub host_name: Option<String>,
    /// The stage concerned, where there is one.
    pub stage: Option<String>,
    /// Why (the failure reason, the hold reason, the differences).
    pub reason: Option<String>,
    /// When it happened (milliseconds since the Unix epoch).
    pub at_ms: i64,
    /// The transition that caused it, where one did.
    pub transition_id: Option<i64>,
}

impl Notification {
    /// A notification of `kind` with the kind's default severity.
    pub fn new(
        kind: NotificationKind,
        run_id: impl Into<String>,
        host_id: i64,
        at_ms: i64,
    ) -> Self {
        Notification {
            kind,
            severity: kind.default_severity(),
            run_id: run_id.into(),
            host_id,
            host_name: None,
            stage: None,
            reason: None,
            at_ms,
            transition_id: None,
        }
    }

    /// With another severity than the kind's default.
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    pub fn host_name(mut self, name: impl Into<String>) -> Self {
        self.host_name = Some(name.into());
        self
    }

    pub fn stage(mut self, stage: impl Into<String>) -> Self {
        self.stage = Some(stage.into());
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn transition_id(mut self, id: i64) -> Self {
        self.transition_id = Some(id);
        self
    }
}

/// `[critical] stage_failed: run r (host h), stage SMART: reason`.
impl fmt::Display for Notification {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "[{}] {}: run {} (host {})",
            self.severity,
            self.kind,
            self.run_id,
            match &self.host_name {
                Some(name) => name.clone(),
                None => format!("#{}", self.host_id),
            }
        )?;
        if let Some(stage) = &self.stage {
            write!(formatter, ", stage {stage}")?;
        }
        if let Some(reason) = &self.reason {
            write!(formatter, ": {reason}")?;
        }
        Ok(())
    }
}

/// Why a notifier could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The receiver could not be reached (connection, DNS, TLS).
    #[error("cannot reach {target}")]
    Unreachable {
        /// Where it was going (no secrets: no tokens or passwords).
        target: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The receiver answered and refused it.
    #[error("{target} refused the notification ({status}): {message}")]
    Refused {
        target: String,
        /// The receiver's status (HTTP status, SMTP reply code).
        status: u16,
        /// The receiver's own message.
        message: String,
    },
    /// The notifier's settings cannot work.
    #[error("invalid notifier settings: {0}")]
    InvalidSettings(String),
    /// Anything else, said in words.
    #[error("{0}")]
    Other(String),
}

/// A way to deliver notifications. Implementations must be cheap to call
/// concurrently: the registry may run several `send`s of one notifier at
/// once, each bounded by [`NOTIFY_TIMEOUT`] (past it the send is dropped).
#[async_trait::async_trait]
pub trait Notifier: Send + Sync {
    /// A short name for logs (`ntfy`, `discord`, `smtp`, ...).
    fn name(&self) -> &str;

    /// Delivers one notification. An error is logged with the target's
    /// name; nothing retries it.
    async fn send(&self, notification: &Notification) -> Result<(), NotifyError>;
}

/// Which notifications a target gets: those of its kinds whose severity is
/// at least `min_severity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub kinds: Vec<NotificationKind>,
    pub min_severity: Severity,
}

impl Route {
    /// Every kind, every severity.
    pub fn all() -> Self {
        Route {
            kinds: NotificationKind::ALL.to_vec(),
            min_severity: Severity::Info,
        }
    }

    /// Only these kinds, every severity.
    pub fn kinds(kinds: impl IntoIterator<Item = NotificationKind>) -> Self {
        Route {
            kinds: kinds.into_iter().collect(),
            min_severity: Severity::Info,
        }
    }

    /// Only from this severity up.
    pub fn min_severity(mut self, severity: Severity) -> Self {
        self.min_severity = severity;
        self
    }

    /// Whether `notification` goes this way.
    pub fn matches(&self, notification: &Notification) -> bool {
        notification.severity >= self.min_severity && self.kinds.contains(&notification.kind)
    }
}

impl Default for Route {
    fn default() -> Self {
        Route::all()
    }
}

/// One registered target.
#[derive(Clone)]
struct Target {
    name: String,
    notifier: Arc<dyn Notifier>,
    route: Route,
}

/// How one delivery ended.
#[derive(Debug)]
pub enum DeliveryOutcome {
    Delivered,
    Failed(NotifyError),
    /// `send` did not finish within the timeout and was dropped.
    TimedOut(Duration),
    /// The task was cancelled (the runtime shut down).
    Cancelled,
}

/// A delivery in flight: dropping it does not stop it. Callers do not wait
/// for it ([`Notifiers::notify`] is fire-and-forget); tests and tools may.
#[derive(Debug)]
pub struct Delivery {
    /// The target's name.
    pub target: String,
    task: tokio::task::JoinHandle<DeliveryOutcome>,
}

impl Delivery {
    /// Waits for the delivery to end (within the timeout).
    pub async fn wait(self) -> DeliveryOutcome {
        self.task.await.unwrap_or(DeliveryOutcome::Cancelled)
    }

    /// Whether it has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// The registry of notification targets. Clones share the targets, so a
/// target added through one clone is seen by all (the orchestrator holds
/// one; embedding code adds to it).
#[derive(Clone)]
pub struct Notifiers {
    targets: Arc<RwLock<Vec<Target>>>,
    timeout: Duration,
}

impl Default for Notifiers {
    fn default() -> Self {
        Notifiers {
            targets: Arc::default(),
            timeout: NOTIFY_TIMEOUT,
        }
    }
}

impl fmt::Debug for Notifiers {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Notifiers")
            .field("targets", &self.names())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Notifiers {
    /// No targets, the [`NOTIFY_TIMEOUT`].
    pub fn new() -> Self {
        Self::default()
    }

    /// With another per-delivery timeout than [`NOTIFY_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds a target: `notifier` gets what `route` lets through. `name`
    /// names it in logs (several targets may share one notifier type).
    pub fn add(&self, name: impl Into<String>, notifier: Arc<dyn Notifier>, route: Route) {
        let target = Target {
            name: name.into(),
            notifier,
            route,
        };
        self.write().push(target);
    }

    /// Adds every target of `other` (its timeout is not taken).
    pub fn extend_from(&self, other: &Notifiers) {
        if Arc::ptr_eq(&self.targets, &other.targets) {
            return;
        }
        let added = other.read().clone();
        self.write().extend(added);
    }

    /// The names of the targets, in the order they were added.
    pub fn names(&self) -> Vec<String> {
        self.read()
            .iter()
            .map(|target| target.name.clone())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Hands `notification` to every target whose route matches, each in a
    /// task of its own, and returns at once: the caller never waits for a
    /// delivery. Failures and timeouts are logged with the target and the
    /// reason. Outside a tokio runtime nothing is sent (logged).
    pub fn notify(&self, notification: Notification) -> Vec<Delivery> {
        let targets: Vec<Target> = self
            .read()
            .iter()
            .filter(|target| target.route.matches(&notification))
            .cloned()
            .collect();
        if targets.is_empty() {
            return Vec::new();
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(
                kind = %notification.kind,
                run = %notification.run_id,
                "notification not sent: no tokio runtime"
            );
            return Vec::new();
        };
        let notification = Arc::new(notification);
        targets
            .into_iter()
            .map(|target| {
                let name = target.name.clone();
                let notification = notification.clone();
                let timeout = self.timeout;
                let task =
                    runtime.spawn(async move { deliver(target, &notification, timeout).await });
                Delivery { target: name, task }
            })
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Target>> {
        self.targets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Target>> {
        self.targets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One target's delivery, logged.
async fn deliver(
    target: Target,
    notification: &Notification,
    timeout: Duration,
) -> DeliveryOutcome {
    let outcome = match tokio::time::timeout(timeout, target.notifier.send(notification)).await {
        Ok(Ok(())) => DeliveryOutcome::Delivered,
        Ok(Err(error)) => DeliveryOutcome::Failed(error),
        Err(_) => DeliveryOutcome::TimedOut(timeout),
    };
    let failure = match &outcome {
        DeliveryOutcome::Delivered | DeliveryOutcome::Cancelled => None,
        DeliveryOutcome::Failed(error) => Some(crate::error::chain(error)),
        DeliveryOutcome::TimedOut(timeout) => {
            Some(format!("no answer within {} s", timeout.as_secs_f64()))
        }
    };
    match failure {
        None => tracing::debug!(
            target_name = %target.name,
            kind = %notification.kind,
            run = %notification.run_id,
            "notification: {outcome:?}"
        ),
        Some(reason) => tracing::warn!(
            target_name = %target.name,
            notifier = target.notifier.name(),
            kind = %notification.kind,
            run = %notification.run_id,
            "notification to `{}` failed: {reason}",
            target.name
        ),
    }
    outcome
}

#[cfg(test)]
mod tests;
