//! Power control: how the orchestrator gets a host to PXE boot.
//!
//! [`PowerDriver`] is an open trait (an embedding program can add its own
//! driver); four come with vetting, chosen per host by its stored
//! [`PowerSettings`] through [`driver`]:
//!
//! - [`wol`]: Wake-on-LAN magic packets;
//! - [`ipmi`]: `ipmitool -I lanplus` (boot device PXE once, then on or cycle);
//! - [`redfish`]: the Redfish API over HTTPS (one-time boot override, reset);
//! - [`manual`]: the operator powers the host on.
//!
//! Every action and its outcome goes to the run's log through [`PowerLog`].
//! BMC passwords are stored encrypted ([`secret::EncryptedSecret`]).
//!
//! # Adding a driver
//!
//! A driver is a public extension point: implement [`PowerDriver`] and give
//! the dispatcher a [`crate::power::PowerDrivers`] that picks it per
//! host (`vetting_http::Server::power`, or
//! [`crate::runs::Dispatcher::new`]); the stored-settings default
//! ([`crate::power::StoredPowerSettings`]) keeps serving the four
//! drivers here.
//!
//! - [`PowerDriver::name`]: a short word for the run's log (`ipmi`).
//! - [`PowerDriver::power_on_for_pxe`]: get the host to boot from the
//!   network once, whether it was off (power on) or on (restart), then
//!   return what was done as a [`PowerOutcome`]. Return once the BMC has
//!   taken the request; do not wait for the host to boot (the boot
//!   deadline and the agent's hello tell that). Bound every call to the
//!   outside with a timeout ([`PowerError::Timeout`]): the power deadline
//!   of the run bounds the whole action. Write what you do to `log` (the
//!   run's log, which operators read), never a secret. It may be called
//!   again for the same run after an error, and for a host already on:
//!   it must be safe to repeat.
//!
//! Errors: the dispatcher tries a failed action again after
//! `power.retry_secs`, up to `power.attempts` times, then fails the run
//! with the error's message and causes. An error that no retry can fix
//! fails the run at once: [`PowerError::InvalidSettings`],
//! [`PowerError::Secret`], [`PowerError::ResetTypeNotAllowed`],
//! [`PowerError::AmbiguousSystem`], and [`PowerError::Bmc`] with a 4xx
//! status other than 408 and 429. Every other error (a timeout, an
//! unreachable BMC, a tool that failed, a 5xx) is retried, so report
//! "cannot work" as `InvalidSettings` and "the BMC said no" as `Bmc`.
//!
//! ```
//! use vetting_core::power::{
//!     CollectedPowerLog, PowerDriver, PowerError, PowerLog, PowerLogLevel, PowerOutcome,
//!     power_on_for_pxe_logged,
//! };
//!
//! /// A rack controller reached by some in-house API.
//! struct RackController {
//!     slot: u32,
//! }
//!
//! #[async_trait::async_trait]
//! impl PowerDriver for RackController {
//!     fn name(&self) -> &str {
//!         "rack-controller"
//!     }
//!
//!     async fn power_on_for_pxe(&self, log: &dyn PowerLog) -> Result<PowerOutcome, PowerError> {
//!         if self.slot == 0 {
//!             // no retry fixes this: the run fails at once
//!             return Err(PowerError::InvalidSettings("slot 0 does not exist".into()));
//!         }
//!         log.record(PowerLogLevel::Info, &format!("slot {}: network boot once, power on", self.slot));
//!         // ... the in-house API call, under a timeout ...
//!         Ok(PowerOutcome::PoweredOn { action: format!("slot {} on", self.slot) })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let log = CollectedPowerLog::new();
//! let outcome = power_on_for_pxe_logged(&RackController { slot: 7 }, &log).await;
//! assert!(matches!(outcome, Ok(PowerOutcome::PoweredOn { .. })));
//! assert!(log.text().contains("slot 7: network boot once"));
//! let refused = power_on_for_pxe_logged(&RackController { slot: 0 }, &log).await;
//! assert!(matches!(refused, Err(PowerError::InvalidSettings(_))));
//! # }
//! ```

pub mod drivers;
pub mod ipmi;
pub mod manual;
pub mod redfish;
pub mod secret;
pub mod wol;

pub use drivers::{PowerDrivers, StoredPowerSettings};

use std::fmt;
use std::net::SocketAddrV4;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

pub use ipmi::{IpmiDriver, IpmiInterface, IpmiRestart, IpmiSettings};
pub use manual::{ManualDriver, ManualSettings};
pub use redfish::{RedfishAuth, RedfishBootMode, RedfishDriver, RedfishSettings};
pub use secret::{EncryptedSecret, SecretError, SecretString};
pub use wol::{SecureOnPassword, WolDriver, WolSettings, magic_packet};

/// How much a power log entry matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerLogLevel {
    /// An action taken or a state read.
    Info,
    /// Something odd that did not stop the action.
    Warn,
    /// The action failed.
    Error,
}

impl fmt::Display for PowerLogLevel {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        })
    }
}

/// Where a driver writes what it does: the run's log. Never given secrets.
pub trait PowerLog: Send + Sync {
    /// Records one line.
    fn record(&self, level: PowerLogLevel, message: &str);
}

impl<F> PowerLog for F
where
    F: Fn(PowerLogLevel, &str) + Send + Sync,
{
    fn record(&self, level: PowerLogLevel, message: &str) {
        self(level, message);
    }
}

/// A [`PowerLog`] that keeps the lines in memory (and mirrors them to
/// `tracing`).
#[derive(Debug, Default)]
pub struct CollectedPowerLog {
    entries: Mutex<Vec<(PowerLogLevel, String)>>,
}

impl CollectedPowerLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The lines recorded so far.
    pub fn entries(&self) -> Vec<(PowerLogLevel, String)> {
        self.entries
            .lock()
            .map(|entries| entries.clone())
            .unwrap_or_default()
    }

    /// The messages recorded so far, one string.
    pub fn text(&self) -> String {
        self.entries()
            .into_iter()
            .map(|(level, message)| format!("{level}: {message}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl PowerLog for CollectedPowerLog {
    fn record(&self, level: PowerLogLevel, message: &str) {
        TracingPowerLog.record(level, message);
        if let Ok(mut entries) = self.entries.lock() {
            entries.push((level, message.to_owned()));
        }
    }
}

/// A [`PowerLog`] that writes to `tracing` only.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingPowerLog;

impl PowerLog for TracingPowerLog {
    fn record(&self, level: PowerLogLevel, message: &str) {
        match level {
            PowerLogLevel::Info => tracing::info!(target: "vetting::power", "{message}"),
            PowerLogLevel::Warn => tracing::warn!(target: "vetting::power", "{message}"),
            PowerLogLevel::Error => tracing::error!(target: "vetting::power", "{message}"),
        }
    }
}

/// A host's power state as its BMC reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerState {
    /// Running.
    On,
    /// Off (or in standby).
    Off,
    /// Something else (e.g. Redfish `PoweringOn`), as reported.
    Other(String),
}

impl fmt::Display for PowerState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::On => formatter.write_str("on"),
            Self::Off => formatter.write_str("off"),
            Self::Other(state) => formatter.write_str(state),
        }
    }
}

/// What a driver did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerOutcome {
    /// Magic packets were sent (nothing confirms the host woke).
    WakeOnLanSent {
        /// How many packets.
        packets: u32,
        /// Where to.
        destination: SocketAddrV4,
    },
    /// The host was off and was powered on, with a one-time PXE boot set.
    PoweredOn {
        /// The command or ResetType used.
        action: String,
    },
    /// The host was on and was restarted, with a one-time PXE boot set.
    Restarted {
        /// The command or ResetType used.
        action: String,
    },
    /// Nothing was done: the operator must power the host on.
    ManualActionRequired {
        /// The note for the operator, if any.
        note: Option<String>,
    },
}

impl fmt::Display for PowerOutcome {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WakeOnLanSent {
                packets,
                destination,
            } => {
                write!(
                    formatter,
                    "sent {packets} Wake-on-LAN packet(s) to {destination}"
                )
            }
            Self::PoweredOn { action } => write!(
                formatter,
                "host was off; powered on with PXE boot once ({action})"
            ),
            Self::Restarted { action } => write!(
                formatter,
                "host was on; restarted with PXE boot once ({action})"
            ),
            Self::ManualActionRequired { note: Some(note) } => {
                write!(formatter, "power the host on by hand: {note}")
            }
            Self::ManualActionRequired { note: None } => {
                formatter.write_str("power the host on by hand")
            }
        }
    }
}

/// Why a power action failed. Errors from a BMC carry the BMC's own message.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    /// The settings cannot work.
    #[error("invalid power settings: {0}")]
    InvalidSettings(String),
    /// The stored BMC password cannot be read.
    #[error("cannot read the stored BMC password")]
    Secret(#[from] SecretError),
    /// The Wake-on-LAN packet could not be sent.
    #[error("cannot send the Wake-on-LAN packet to {destination}")]
    WakeOnLan {
        /// Where it was going.
        destination: SocketAddrV4,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A tool could not be started.
    #[error("cannot run {command}")]
    ToolNotRun {
        /// The command line (no secrets).
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A tool ran and failed.
    #[error("{command} failed ({status}): {stderr}")]
    ToolFailed {
        /// The command line (no secrets).
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr (or stdout when stderr was empty).
        stderr: String,
    },
    /// Something took longer than its timeout.
    #[error("{what} did not finish within {seconds} s")]
    Timeout {
        /// What.
        what: String,
        /// The timeout.
        seconds: u64,
    },
    /// An answer that could not be understood.
    #[error("unexpected answer from {what}: {detail}")]
    UnexpectedAnswer {
        /// Who answered.
        what: String,
        /// What was wrong with it.
        detail: String,
    },
    /// The BMC refused a request; `message` is the BMC's own.
    #[error("the BMC refused {request} (HTTP {status}): {message}")]
    Bmc {
        /// Method and path.
        request: String,
        /// The HTTP status.
        status: u16,
        /// The BMC's message (`error.message` and `@Message.ExtendedInfo`).
        message: String,
    },
    /// The BMC could not be reached.
    #[error("cannot reach the BMC for {request}")]
    Http {
        /// Method and path.
        request: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// None of the ResetType values that would do is allowed by the BMC.
    #[error("the BMC allows none of the resets {wanted} (it allows: {allowed})")]
    ResetTypeNotAllowed {
        /// What would have done.
        wanted: String,
        /// What the BMC allows.
        allowed: String,
    },
    /// A BMC task ended badly.
    #[error("the BMC's task for {request} ended {state}: {message}")]
    TaskFailed {
        /// Method and path.
        request: String,
        /// Its TaskState.
        state: String,
        /// Its messages.
        message: String,
    },
    /// The BMC manages several systems and the settings do not say which.
    #[error("the BMC manages {count} systems ({members}); set system_id to pick one")]
    AmbiguousSystem {
        /// How many.
        count: usize,
        /// Their ids.
        members: String,
    },
}

/// A way to power a host on so that it boots from the network once; see
/// [the module documentation](self#adding-a-driver) for how to add one.
///
/// Implementations write every action and its outcome to `log`.
#[async_trait::async_trait]
pub trait PowerDriver: Send + Sync {
    /// A short name for logs (`wol`, `ipmi`, `redfish`, `manual`).
    fn name(&self) -> &str;

    /// Powers the host on (or restarts it) with a one-time network boot
    /// where the method allows, and returns once the request is taken (not
    /// once the host has booted). Safe to call again: after an error the
    /// dispatcher retries it, unless the error is final (see the module
    /// documentation). Every outside call is bounded by a timeout.
    async fn power_on_for_pxe(&self, log: &dyn PowerLog) -> Result<PowerOutcome, PowerError>;
}

/// A host's power settings, stored as JSON with the host
/// (`{"driver": "ipmi", "host": ..., ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "driver", rename_all = "snake_case")]
pub enum PowerSettings {
    /// Wake-on-LAN.
    Wol(WolSettings),
    /// IPMI over LAN through ipmitool.
    Ipmi(IpmiSettings),
    /// Redfish.
    Redfish(RedfishSettings),
    /// The operator powers the host on.
    Manual(ManualSettings),
}

impl PowerSettings {
    /// The driver's short name.
    pub fn driver_name(&self) -> &'static str {
        match self {
            Self::Wol(_) => "wol",
            Self::Ipmi(_) => "ipmi",
            Self::Redfish(_) => "redfish",
            Self::Manual(_) => "manual",
        }
    }
}

/// The driver for a host's settings. `secret_key` is the orchestrator's
/// secret key, which decrypts the stored BMC password.
pub fn driver(
    settings: &PowerSettings,
    secret_key: &[u8; 32],
) -> Result<Box<dyn PowerDriver>, PowerError> {
    Ok(match settings {
        PowerSettings::Wol(wol) => Box::new(WolDriver::new(wol.clone())?),
        PowerSettings::Ipmi(ipmi) => Box::new(IpmiDriver::new(ipmi.clone(), secret_key)?),
        PowerSettings::Redfish(redfish) => {
            Box::new(RedfishDriver::new(redfish.clone(), secret_key)?)
        }
        PowerSettings::Manual(manual) => Box::new(ManualDriver::new(manual.clone())),
    })
}

/// Runs a driver and records the start, the outcome or the error in `log`:
/// the one call the dispatcher needs.
pub async fn power_on_for_pxe_logged(
    driver: &dyn PowerDriver,
    log: &dyn PowerLog,
) -> Result<PowerOutcome, PowerError> {
    log.record(
        PowerLogLevel::Info,
        &format!("power ({}): starting", driver.name()),
    );
    match driver.power_on_for_pxe(log).await {
        Ok(outcome) => {
            log.record(
                PowerLogLevel::Info,
                &format!("power ({}): {outcome}", driver.name()),
            );
            Ok(outcome)
        }
        Err(error) => {
            let message = format!(
                "power ({}): failed: {}",
                driver.name(),
                crate::error::chain(&error)
            );
            log.record(PowerLogLevel::Error, &message);
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_as_tagged_json() {
        let key = [3u8; 32];
        let settings = PowerSettings::Ipmi(IpmiSettings::new(
            "10.0.0.5",
            "admin",
            EncryptedSecret::encrypt("pw", &key).expect("encrypt"),
        ));
        let json = serde_json::to_value(&settings).expect("json");
        assert_eq!(json["driver"], "ipmi");
        assert_eq!(json["port"], 623);
        let back: PowerSettings = serde_json::from_value(json).expect("back");
        assert_eq!(back, settings);

        let wol: PowerSettings =
            serde_json::from_str(r#"{"driver":"wol","mac":"52-54-00-12-34-56"}"#).expect("wol");
        let PowerSettings::Wol(wol) = wol else {
            panic!("not wol")
        };
        assert_eq!(wol.port, 9);
        assert_eq!(wol.broadcast.to_string(), "255.255.255.255");

        let manual: PowerSettings = serde_json::from_str(r#"{"driver":"manual"}"#).expect("manual");
        assert_eq!(manual.driver_name(), "manual");
        assert!(
            serde_json::from_str::<PowerSettings>(
                r#"{"driver":"ipmi","host":"x","username":"u","password":"plain"}"#
            )
            .is_err()
        );
        assert!(serde_json::from_str::<PowerSettings>(r#"{"driver":"manual","nope":1}"#).is_err());
    }

    #[test]
    fn outcome_reads_well_in_a_log() {
        let outcome = PowerOutcome::ManualActionRequired {
            note: Some("rack 4, top".to_owned()),
        };
        assert_eq!(
            outcome.to_string(),
            "power the host on by hand: rack 4, top"
        );
    }
}
