//! The manual power driver: the operator powers the host on, and the run's
//! log says so.

use serde::{Deserialize, Serialize};

use super::{PowerDriver, PowerError, PowerLog, PowerLogLevel, PowerOutcome};

/// Settings of the manual driver.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualSettings {
    /// A note for the operator (where the host is, which button).
    #[serde(default)]
    pub note: Option<String>,
}

/// Asks the operator to power the host on.
#[derive(Debug, Clone)]
pub struct ManualDriver {
    settings: ManualSettings,
}

impl ManualDriver {
    /// The driver for these settings.
    pub fn new(settings: ManualSettings) -> Self {
        Self { settings }
    }
}

#[async_trait::async_trait]
impl PowerDriver for ManualDriver {
    fn name(&self) -> &str {
        "manual"
    }

    async fn power_on_for_pxe(&self, log: &dyn PowerLog) -> Result<PowerOutcome, PowerError> {
        let message = match &self.settings.note {
            Some(note) => {
                format!("power the host on by hand and let it boot from the network ({note})")
            }
            None => "power the host on by hand and let it boot from the network".to_owned(),
        };
        log.record(PowerLogLevel::Warn, &message);
        Ok(PowerOutcome::ManualActionRequired {
            note: self.settings.note.clone(),
        })
    }
}
