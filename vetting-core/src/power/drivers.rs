//! Which driver powers a host: the [`PowerDrivers`] extension point and its
//! default, the drivers of each host's stored settings.

use crate::model::Host;
use crate::orchestrator::Orchestrator;

use super::{ManualDriver, ManualSettings, PowerDriver, PowerError, PowerSettings};

/// Picks the power driver of a host: a public extension point. The default,
/// [`StoredPowerSettings`], reads the host's stored [`PowerSettings`]; an
/// embedding program gives its own (through `vetting_http::Server::power`
/// or [`crate::runs::Dispatcher::new`]) to add drivers of its own ([`PowerDriver`] is an
/// open trait; [`crate::power`] says how to write one) or to choose them
/// by something else than the stored settings. It can fall back to
/// [`StoredPowerSettings`] for the hosts it does not handle.
///
/// ```
/// use vetting_core::power::{PowerDrivers, StoredPowerSettings};
/// use vetting_core::model::Host;
/// use vetting_core::power::{ManualDriver, ManualSettings, PowerDriver, PowerError};
///
/// /// Hosts named `lab-*` are powered on by hand; the rest as stored.
/// #[derive(Debug)]
/// struct LabOrStored {
///     stored: StoredPowerSettings,
/// }
///
/// impl PowerDrivers for LabOrStored {
///     fn driver_for(&self, host: &Host) -> Result<Box<dyn PowerDriver>, PowerError> {
///         if host.name.starts_with("lab-") {
///             let note = Some("lab bench: press the button".to_string());
///             return Ok(Box::new(ManualDriver::new(ManualSettings { note })));
///         }
///         self.stored.driver_for(host)
///     }
/// }
/// # let _ = LabOrStored { stored: StoredPowerSettings::new([0; 32]) };
/// ```
pub trait PowerDrivers: Send + Sync + std::fmt::Debug {
    /// The driver for `host`, called each time the run of `host` needs its
    /// power action (again on a retry). It must not block (build the
    /// driver; the driver does the I/O). An error counts as the driver's
    /// would (a final one fails the run with its message, the rest are
    /// retried): use [`PowerError::InvalidSettings`] for a host this
    /// cannot power.
    fn driver_for(&self, host: &Host) -> Result<Box<dyn PowerDriver>, PowerError>;
}

/// The drivers of [`crate::power`], chosen by each host's stored settings;
/// a host without settings is powered on by hand (`manual`).
#[derive(Clone)]
pub struct StoredPowerSettings {
    key: [u8; 32],
}

impl std::fmt::Debug for StoredPowerSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("StoredPowerSettings")
    }
}

impl StoredPowerSettings {
    /// `key` decrypts the stored BMC passwords (the orchestrator's secret key).
    pub fn new(key: [u8; 32]) -> Self {
        StoredPowerSettings { key }
    }

    /// The settings of the orchestrator's own secret key.
    pub fn of(orchestrator: &Orchestrator) -> Self {
        Self::new(*orchestrator.key().bytes())
    }
}

impl PowerDrivers for StoredPowerSettings {
    fn driver_for(&self, host: &Host) -> Result<Box<dyn PowerDriver>, PowerError> {
        match &host.power {
            None | Some(serde_json::Value::Null) => {
                Ok(Box::new(ManualDriver::new(ManualSettings::default())))
            }
            Some(value) => {
                let settings: PowerSettings =
                    serde_json::from_value(value.clone()).map_err(|error| {
                        PowerError::InvalidSettings(format!(
                            "host `{}`: stored power settings: {error}",
                            host.name
                        ))
                    })?;
                super::driver(&settings, &self.key)
            }
        }
    }
}
