//! IPMI power control through `ipmitool -I lanplus`.
//!
//! Following what BMCs need in practice:
//!
//! - the power state is read first, to choose between `power on` (host off)
//!   and `power cycle` or `power reset` (host on);
//! - the one-time boot device is set right before the power action, since
//!   BMCs drop boot flags 60 s after they are set; UEFI hosts need
//!   `options=efiboot`, or they boot PXE in legacy mode (or not at all);
//! - the password goes through the environment (`-E`, `IPMI_PASSWORD`),
//!   never the command line, where `ps` would show it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use super::secret::{EncryptedSecret, SecretString};
use super::{PowerDriver, PowerError, PowerLog, PowerLogLevel, PowerOutcome, PowerState};

/// The ipmitool interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpmiInterface {
    /// IPMI 2.0 RMCP+ (`-I lanplus`), what current BMCs speak.
    #[default]
    Lanplus,
    /// IPMI 1.5 (`-I lan`), for old BMCs only: it sends weakly protected
    /// credentials.
    Lan,
}

impl IpmiInterface {
    fn argument(self) -> &'static str {
        match self {
            Self::Lanplus => "lanplus",
            Self::Lan => "lan",
        }
    }
}

/// How a host that is already on is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpmiRestart {
    /// `power cycle`: off, then on again (the usual choice).
    #[default]
    Cycle,
    /// `power reset`: a hard reset, for BMCs that refuse a cycle.
    Reset,
}

impl IpmiRestart {
    fn command(self) -> &'static str {
        match self {
            Self::Cycle => "cycle",
            Self::Reset => "reset",
        }
    }
}

/// Settings of the IPMI driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpmiSettings {
    /// The BMC's address or name.
    pub host: String,
    /// The BMC's RMCP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// The BMC user.
    pub username: String,
    /// The BMC password, encrypted with the orchestrator's secret key.
    pub password: EncryptedSecret,
    /// The host boots UEFI: the boot device is set with `options=efiboot`.
    #[serde(default)]
    pub uefi: bool,
    /// `lanplus` (default) or `lan`.
    #[serde(default)]
    pub interface: IpmiInterface,
    /// A fixed cipher suite (`-C`), e.g. 17 or 3; by default ipmitool asks
    /// the BMC which it supports.
    #[serde(default)]
    pub cipher_suite: Option<u8>,
    /// How to restart a host that is on.
    #[serde(default)]
    pub when_on: IpmiRestart,
    /// How long one ipmitool command may take.
    #[serde(default = "default_command_timeout_seconds")]
    pub command_timeout_seconds: u64,
}

fn default_port() -> u16 {
    623
}
fn default_command_timeout_seconds() -> u64 {
    60
}

impl IpmiSettings {
    /// Settings with the defaults for a BMC.
    pub fn new(
        host: impl Into<String>,
        username: impl Into<String>,
        password: EncryptedSecret,
    ) -> Self {
        Self {
            host: host.into(),
            port: default_port(),
            username: username.into(),
            password,
            uefi: false,
            interface: IpmiInterface::default(),
            cipher_suite: None,
            when_on: IpmiRestart::default(),
            command_timeout_seconds: default_command_timeout_seconds(),
        }
    }
}

/// The ipmitool program used unless told otherwise.
pub const IPMITOOL_PROGRAM: &str = "ipmitool";

/// Drives a BMC with ipmitool.
#[derive(Debug, Clone)]
pub struct IpmiDriver {
    settings: IpmiSettings,
    password: SecretString,
    program: PathBuf,
}

fn is_plain_argument(value: &str) -> bool {
    !value.starts_with('-')
        && !value
            .chars()
            .any(|character| character.is_whitespace() || character.is_control())
}

impl IpmiDriver {
    /// The driver for these settings; decrypts the password with `secret_key`.
    pub fn new(settings: IpmiSettings, secret_key: &[u8; 32]) -> Result<Self, PowerError> {
        if settings.host.is_empty() || !is_plain_argument(&settings.host) {
            return Err(PowerError::InvalidSettings(format!(
                "ipmi host {:?} is not a host name or address",
                settings.host
            )));
        }
        if !settings.username.is_empty() && !is_plain_argument(&settings.username) {
            return Err(PowerError::InvalidSettings(format!(
                "ipmi username {:?} must not start with '-' or contain spaces",
                settings.username
            )));
        }
        let password = settings.password.decrypt(secret_key)?;
        Ok(Self {
            settings,
            password,
            program: PathBuf::from(IPMITOOL_PROGRAM),
        })
    }

    /// Uses another ipmitool binary.
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    fn connection_arguments(&self) -> Vec<String> {
        let mut arguments = vec![
            "-I".to_owned(),
            self.settings.interface.argument().to_owned(),
            "-H".to_owned(),
            self.settings.host.clone(),
            "-p".to_owned(),
            self.settings.port.to_string(),
            "-U".to_owned(),
            self.settings.username.clone(),
            "-E".to_owned(),
        ];
        if let Some(cipher_suite) = self.settings.cipher_suite {
            arguments.push("-C".to_owned());
            arguments.push(cipher_suite.to_string());
        }
        arguments
    }

    /// Runs one ipmitool command; returns its stdout.
    async fn run(&self, command_words: &[&str], log: &dyn PowerLog) -> Result<String, PowerError> {
        let mut arguments = self.connection_arguments();
        arguments.extend(command_words.iter().map(|word| (*word).to_owned()));
        let command_line = format!("{} {}", self.program.display(), arguments.join(" "));
        log.record(PowerLogLevel::Info, &format!("running {command_line}"));
        let child = Command::new(&self.program)
            .args(&arguments)
            .env("IPMI_PASSWORD", self.password.expose())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| PowerError::ToolNotRun {
                command: command_line.clone(),
                source,
            })?;
        let timeout = Duration::from_secs(self.settings.command_timeout_seconds.max(1));
        let output = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .map_err(|_| PowerError::Timeout {
                what: command_line.clone(),
                seconds: timeout.as_secs(),
            })?
            .map_err(|source| PowerError::ToolNotRun {
                command: command_line.clone(),
                source,
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if !output.status.success() {
            let error = PowerError::ToolFailed {
                command: command_line,
                status: output.status.to_string(),
                stderr: if stderr.is_empty() { stdout } else { stderr },
            };
            log.record(PowerLogLevel::Error, &error.to_string());
            return Err(error);
        }
        if !stdout.is_empty() {
            log.record(PowerLogLevel::Info, &format!("ipmitool: {stdout}"));
        }
        Ok(stdout)
    }

    /// Reads the chassis power state.
    pub async fn power_state(&self, log: &dyn PowerLog) -> Result<PowerState, PowerError> {
        let answer = self.run(&["power", "status"], log).await?;
        parse_power_status(&answer).ok_or_else(|| PowerError::UnexpectedAnswer {
            what: "ipmitool power status".to_owned(),
            detail: answer,
        })
    }
}

/// Reads `Chassis Power is on|off`.
pub fn parse_power_status(answer: &str) -> Option<PowerState> {
    let lowered = answer.to_ascii_lowercase();
    let state = lowered
        .lines()
        .find_map(|line| line.trim().strip_prefix("chassis power is "))?
        .trim();
    Some(match state {
        "on" => PowerState::On,
        "off" => PowerState::Off,
        other => PowerState::Other(other.to_owned()),
    })
}

#[async_trait::async_trait]
impl PowerDriver for IpmiDriver {
    fn name(&self) -> &str {
        "ipmi"
    }

    async fn power_on_for_pxe(&self, log: &dyn PowerLog) -> Result<PowerOutcome, PowerError> {
        let state = self.power_state(log).await?;
        log.record(PowerLogLevel::Info, &format!("chassis power is {state}"));
        // Boot flags expire 60 s after they are set: set them last.
        let mut boot_device = vec!["chassis", "bootdev", "pxe"];
        if self.settings.uefi {
            boot_device.push("options=efiboot");
        }
        self.run(&boot_device, log).await?;
        let outcome = if state == PowerState::On {
            let restart = self.settings.when_on.command();
            self.run(&["power", restart], log).await?;
            PowerOutcome::Restarted {
                action: format!("power {restart}"),
            }
        } else {
            self.run(&["power", "on"], log).await?;
            PowerOutcome::PoweredOn {
                action: "power on".to_owned(),
            }
        };
        match self.power_state(log).await {
            Ok(after) => log.record(
                PowerLogLevel::Info,
                &format!("chassis power is now {after}"),
            ),
            Err(error) => log.record(
                PowerLogLevel::Warn,
                &format!("could not read the power state back: {error}"),
            ),
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_status_is_parsed() {
        assert_eq!(
            parse_power_status("Chassis Power is on"),
            Some(PowerState::On)
        );
        assert_eq!(
            parse_power_status("Chassis Power is off\n"),
            Some(PowerState::Off)
        );
        assert_eq!(parse_power_status("Error"), None);
    }

    #[test]
    fn password_never_reaches_the_command_line() {
        let key = [1u8; 32];
        let mut settings = IpmiSettings::new(
            "bmc.example",
            "admin",
            EncryptedSecret::encrypt("hunter2", &key).expect("encrypt"),
        );
        settings.cipher_suite = Some(17);
        let driver = IpmiDriver::new(settings, &key).expect("driver");
        let arguments = driver.connection_arguments().join(" ");
        assert_eq!(
            arguments,
            "-I lanplus -H bmc.example -p 623 -U admin -E -C 17"
        );
        assert!(!format!("{driver:?}").contains("hunter2"));
    }

    #[test]
    fn option_like_hosts_are_refused() {
        let key = [1u8; 32];
        let settings = IpmiSettings::new(
            "-R 0",
            "admin",
            EncryptedSecret::encrypt("x", &key).expect("encrypt"),
        );
        assert!(matches!(
            IpmiDriver::new(settings, &key),
            Err(PowerError::InvalidSettings(_))
        ));
    }
}
