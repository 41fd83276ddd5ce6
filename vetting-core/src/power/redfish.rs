//! Redfish power control over HTTP(S) with reqwest (rustls).
//!
//! 1. Authenticate: a session (`POST` to the session collection named by the
//!    service root, then `X-Auth-Token`; the session is deleted at the end)
//!    or HTTP basic auth.
//! 2. Find the system: `system_id` when set, else the only member of
//!    `/redfish/v1/Systems` (several members without `system_id` is an error).
//! 3. `PATCH` the system's `Boot` to `BootSourceOverrideTarget: Pxe`,
//!    `BootSourceOverrideEnabled: Once`, with `If-Match` when the BMC gave an
//!    ETag (one retry on 412 with a fresh ETag).
//! 4. `POST ComputerSystem.Reset` with a ResetType the system allows
//!    (`ResetType@Redfish.AllowableValues` or its `@Redfish.ActionInfo`):
//!    `On`/`ForceOn` when off, `ForceRestart`/`PowerCycle`/`GracefulRestart`
//!    when on.
//! 5. A `202 Accepted` is followed through its task monitor until the task
//!    ends, within `task_timeout_seconds`.
//!
//! A BMC's refusal fails with the BMC's own words: `error.message` and each
//! `@Message.ExtendedInfo` message.

use std::time::Duration;

use reqwest::{Method, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::secret::{EncryptedSecret, SecretString};
use super::{PowerDriver, PowerError, PowerLog, PowerLogLevel, PowerOutcome, PowerState};

/// How the driver authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedfishAuth {
    /// A Redfish session (`X-Auth-Token`), deleted when done.
    #[default]
    Session,
    /// HTTP basic auth on every request.
    Basic,
}

/// The boot mode to ask for with the override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedfishBootMode {
    /// `BootSourceOverrideMode: UEFI`.
    Uefi,
    /// `BootSourceOverrideMode: Legacy`.
    Legacy,
}

/// Settings of the Redfish driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedfishSettings {
    /// The BMC's base URL, e.g. `https://10.0.0.5` (no `/redfish/v1`).
    pub base_url: String,
    /// The BMC user.
    pub username: String,
    /// The BMC password, encrypted with the orchestrator's secret key.
    pub password: EncryptedSecret,
    /// Session (default) or basic auth.
    #[serde(default)]
    pub auth: RedfishAuth,
    /// Verify the BMC's TLS certificate (most BMCs ship a self-signed one;
    /// turning this off trusts the network path to the BMC).
    #[serde(default = "default_verify_tls")]
    pub verify_tls: bool,
    /// Which system (its id, or its `@odata.id` path) when the BMC manages
    /// several.
    #[serde(default)]
    pub system_id: Option<String>,
    /// Ask for this boot mode with the override; by default the system's
    /// own mode is kept.
    #[serde(default)]
    pub boot_mode: Option<RedfishBootMode>,
    /// How long one request may take.
    #[serde(default = "default_request_timeout_seconds")]
    pub request_timeout_seconds: u64,
    /// How long a BMC task (202 Accepted) may run.
    #[serde(default = "default_task_timeout_seconds")]
    pub task_timeout_seconds: u64,
    /// The pause between task monitor polls, in milliseconds.
    #[serde(default = "default_task_poll_interval_ms")]
    pub task_poll_interval_ms: u64,
}

fn default_verify_tls() -> bool {
    true
}
fn default_request_timeout_seconds() -> u64 {
    60
}
fn default_task_timeout_seconds() -> u64 {
    600
}
fn default_task_poll_interval_ms() -> u64 {
    2_000
}

impl RedfishSettings {
    /// Settings with the defaults for a BMC.
    pub fn new(
        base_url: impl Into<String>,
        username: impl Into<String>,
        password: EncryptedSecret,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            username: username.into(),
            password,
            auth: RedfishAuth::default(),
            verify_tls: default_verify_tls(),
            system_id: None,
            boot_mode: None,
            request_timeout_seconds: default_request_timeout_seconds(),
            task_timeout_seconds: default_task_timeout_seconds(),
            task_poll_interval_ms: default_task_poll_interval_ms(),
        }
    }
}

/// ResetType values for a system that is off, best first.
pub const RESET_TYPES_WHEN_OFF: &[&str] = &["On", "ForceOn"];
/// ResetType values for a system that is on, best first.
pub const RESET_TYPES_WHEN_ON: &[&str] = &["ForceRestart", "PowerCycle", "GracefulRestart"];

/// The first of `preferred` that `allowed` contains; with no list from the
/// BMC, the first preferred.
pub fn choose_reset_type(preferred: &[&str], allowed: Option<&[String]>) -> Option<String> {
    match allowed {
        None => preferred.first().map(|reset_type| (*reset_type).to_owned()),
        Some(allowed) => preferred
            .iter()
            .find(|reset_type| allowed.iter().any(|value| value == *reset_type))
            .map(|reset_type| (*reset_type).to_owned()),
    }
}

/// The BMC's own words from an error body: `error.message` and every
/// `@Message.ExtendedInfo[].Message` (or its `MessageId`), else the raw body.
pub fn bmc_error_message(body: &str) -> String {
    let Ok(document) = serde_json::from_str::<Value>(body) else {
        let trimmed = body.trim();
        return if trimmed.is_empty() {
            "(no message)".to_owned()
        } else {
            trimmed.chars().take(500).collect()
        };
    };
    let error = document.get("error").unwrap_or(&document);
    let mut parts: Vec<String> = Vec::new();
    if let Some(message) = error.get("message").and_then(Value::as_str) {
        parts.push(message.to_owned());
    }
    for info in extended_info(error)
        .into_iter()
        .chain(extended_info(&document))
    {
        let text = info
            .get("Message")
            .and_then(Value::as_str)
            .or_else(|| info.get("MessageId").and_then(Value::as_str));
        if let Some(text) = text
            && !parts.iter().any(|part| part == text)
        {
            parts.push(text.to_owned());
        }
    }
    if parts.is_empty() {
        body.chars().take(500).collect()
    } else {
        parts.join("; ")
    }
}

fn extended_info(value: &Value) -> Vec<&Value> {
    value
        .get("@Message.ExtendedInfo")
        .and_then(Value::as_array)
        .map(|infos| infos.iter().collect())
        .unwrap_or_default()
}

fn odata_id(value: &Value) -> Option<&str> {
    value.get("@odata.id").and_then(Value::as_str)
}

fn string_list(value: Option<&Value>) -> Option<Vec<String>> {
    value.and_then(Value::as_array).map(|values| {
        values
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    })
}

/// How requests are authenticated once logged in.
enum Credentials {
    Basic,
    Session {
        token: String,
        location: Option<String>,
    },
}

/// Drives a BMC over Redfish.
#[derive(Debug, Clone)]
pub struct RedfishDriver {
    settings: RedfishSettings,
    password: SecretString,
    client: reqwest::Client,
    base_url: String,
}

impl RedfishDriver {
    /// The driver for these settings; decrypts the password with `secret_key`.
    pub fn new(settings: RedfishSettings, secret_key: &[u8; 32]) -> Result<Self, PowerError> {
        let base_url = settings.base_url.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base_url).map_err(|error| {
            PowerError::InvalidSettings(format!("redfish base_url {base_url:?}: {error}"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(PowerError::InvalidSettings(format!(
                "redfish base_url {base_url:?} must be http:// or https://"
            )));
        }
        let password = settings.password.decrypt(secret_key)?;
        let request_timeout = Duration::from_secs(settings.request_timeout_seconds.max(1));
        let client = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(30)))
            .danger_accept_invalid_certs(!settings.verify_tls)
            .danger_accept_invalid_hostnames(!settings.verify_tls)
            .build()
            .map_err(|error| {
                PowerError::InvalidSettings(format!("redfish HTTP client: {error}"))
            })?;
        Ok(Self {
            settings,
            password,
            client,
            base_url,
        })
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_owned()
        } else {
            format!("{}/{}", self.base_url, path_or_url.trim_start_matches('/'))
        }
    }

    /// Sends a request; a non-success status becomes [`PowerError::Bmc`]
    /// with the BMC's message.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
        credentials: Option<&Credentials>,
        log: &dyn PowerLog,
    ) -> Result<reqwest::Response, PowerError> {
        let request_name = format!("{method} {path}");
        log.record(PowerLogLevel::Info, &format!("redfish: {request_name}"));
        let mut request = self
            .client
            .request(method, self.url(path))
            .header(header::ACCEPT, "application/json");
        request = match credentials {
            Some(Credentials::Basic) => {
                request.basic_auth(&self.settings.username, Some(self.password.expose()))
            }
            Some(Credentials::Session { token, .. }) => request.header("X-Auth-Token", token),
            None => request,
        };
        if let Some(etag) = if_match {
            request = request.header(header::IF_MATCH, etag);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|source| PowerError::Http {
            request: request_name.clone(),
            source,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let error = PowerError::Bmc {
            request: request_name,
            status: status.as_u16(),
            message: bmc_error_message(&text),
        };
        log.record(PowerLogLevel::Error, &error.to_string());
        Err(error)
    }

    async fn get_json(
        &self,
        path: &str,
        credentials: Option<&Credentials>,
        log: &dyn PowerLog,
    ) -> Result<(Value, Option<String>), PowerError> {
        let response = self
            .send(Method::GET, path, None, None, credentials, log)
            .await?;
        let etag = response
            .headers()
            .get(header::ETAG)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let document: Value = response.json().await.map_err(|source| PowerError::Http {
            request: format!("GET {path}"),
            source,
        })?;
        let etag = etag.or_else(|| {
            document
                .get("@odata.etag")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        Ok((document, etag))
    }

    async fn log_in(
        &self,
        service_root: &Value,
        log: &dyn PowerLog,
    ) -> Result<Credentials, PowerError> {
        if self.settings.auth == RedfishAuth::Basic {
            return Ok(Credentials::Basic);
        }
        let sessions_path = service_root
            .get("Links")
            .and_then(|links| links.get("Sessions"))
            .and_then(odata_id)
            .unwrap_or("/redfish/v1/SessionService/Sessions")
            .to_owned();
        let body = json!({"UserName": self.settings.username, "Password": self.password.expose()});
        let response = self
            .send(Method::POST, &sessions_path, Some(&body), None, None, log)
            .await?;
        let header_text = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let token = header_text("X-Auth-Token").ok_or_else(|| PowerError::UnexpectedAnswer {
            what: format!("POST {sessions_path}"),
            detail: "the session was created without an X-Auth-Token header".to_owned(),
        })?;
        let location = header_text("Location");
        log.record(PowerLogLevel::Info, "redfish: session opened");
        Ok(Credentials::Session { token, location })
    }

    async fn log_out(&self, credentials: &Credentials, log: &dyn PowerLog) {
        if let Credentials::Session {
            location: Some(location),
            ..
        } = credentials
            && let Err(error) = self
                .send(Method::DELETE, location, None, None, Some(credentials), log)
                .await
        {
            log.record(
                PowerLogLevel::Warn,
                &format!("redfish: could not close the session: {error}"),
            );
        }
    }

    async fn system_path(
        &self,
        service_root: &Value,
        credentials: &Credentials,
        log: &dyn PowerLog,
    ) -> Result<String, PowerError> {
        let systems_path = service_root
            .get("Systems")
            .and_then(odata_id)
            .unwrap_or("/redfish/v1/Systems")
            .trim_end_matches('/')
            .to_owned();
        if let Some(system_id) = &self.settings.system_id {
            return Ok(if system_id.starts_with('/') {
                system_id.clone()
            } else {
                format!("{systems_path}/{system_id}")
            });
        }
        let (collection, _) = self.get_json(&systems_path, Some(credentials), log).await?;
        let members: Vec<String> = collection
            .get("Members")
            .and_then(Value::as_array)
            .map(|members| {
                members
                    .iter()
                    .filter_map(odata_id)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        match members.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(PowerError::UnexpectedAnswer {
                what: format!("GET {systems_path}"),
                detail: "the BMC lists no systems".to_owned(),
            }),
            several => Err(PowerError::AmbiguousSystem {
                count: several.len(),
                members: several.join(", "),
            }),
        }
    }

    /// Follows a 202's task monitor until the task ends.
    async fn follow_task(
        &self,
        response: reqwest::Response,
        request: &str,
        credentials: &Credentials,
        log: &dyn PowerLog,
    ) -> Result<(), PowerError> {
        if response.status() != StatusCode::ACCEPTED {
            return Ok(());
        }
        let Some(monitor) = response
            .headers()
            .get(header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
        else {
            log.record(
                PowerLogLevel::Warn,
                &format!("redfish: {request} accepted without a task monitor"),
            );
            return Ok(());
        };
        log.record(
            PowerLogLevel::Info,
            &format!("redfish: {request} accepted; following task {monitor}"),
        );
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(self.settings.task_timeout_seconds.max(1));
        let poll_interval = Duration::from_millis(self.settings.task_poll_interval_ms.max(10));
        loop {
            let polled = self
                .send(Method::GET, &monitor, None, None, Some(credentials), log)
                .await?;
            let status = polled.status();
            let document: Value = polled.json().await.unwrap_or(Value::Null);
            let task_state = document
                .get("TaskState")
                .and_then(Value::as_str)
                .map(str::to_owned);
            match task_state.as_deref() {
                Some("Completed") => return Ok(()),
                Some(state @ ("Exception" | "Killed" | "Cancelled" | "Interrupted")) => {
                    let message = document
                        .get("Messages")
                        .and_then(Value::as_array)
                        .map(|messages| {
                            messages
                                .iter()
                                .filter_map(|message| {
                                    message.get("Message").and_then(Value::as_str)
                                })
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                        .filter(|text| !text.is_empty())
                        .unwrap_or_else(|| bmc_error_message(&document.to_string()));
                    return Err(PowerError::TaskFailed {
                        request: request.to_owned(),
                        state: state.to_owned(),
                        message,
                    });
                }
                _ if status != StatusCode::ACCEPTED && task_state.is_none() => return Ok(()),
                _ => {}
            }
            if tokio::time::Instant::now() + poll_interval > deadline {
                return Err(PowerError::Timeout {
                    what: format!("the BMC's task for {request}"),
                    seconds: self.settings.task_timeout_seconds,
                });
            }
            tokio::time::sleep(poll_interval).await;
        }
    }

    async fn reset_type_allowed_values(
        &self,
        reset_action: &Value,
        credentials: &Credentials,
        log: &dyn PowerLog,
    ) -> Result<Option<Vec<String>>, PowerError> {
        if let Some(allowed) = string_list(reset_action.get("ResetType@Redfish.AllowableValues")) {
            return Ok(Some(allowed));
        }
        let Some(action_info) = reset_action
            .get("@Redfish.ActionInfo")
            .and_then(Value::as_str)
        else {
            return Ok(None);
        };
        let (info, _) = self.get_json(action_info, Some(credentials), log).await?;
        Ok(info
            .get("Parameters")
            .and_then(Value::as_array)
            .and_then(|parameters| {
                parameters.iter().find(|parameter| {
                    parameter.get("Name").and_then(Value::as_str) == Some("ResetType")
                })
            })
            .and_then(|parameter| string_list(parameter.get("AllowableValues"))))
    }

    async fn set_boot_override(
        &self,
        system_path: &str,
        system: &Value,
        etag: Option<String>,
        credentials: &Credentials,
        log: &dyn PowerLog,
    ) -> Result<(), PowerError> {
        let boot = system.get("Boot").unwrap_or(&Value::Null);
        if let Some(targets) =
            string_list(boot.get("BootSourceOverrideTarget@Redfish.AllowableValues"))
            && !targets.iter().any(|target| target == "Pxe")
        {
            return Err(PowerError::UnexpectedAnswer {
                what: format!("GET {system_path}"),
                detail: format!(
                    "the system cannot boot from PXE (allowed targets: {})",
                    targets.join(", ")
                ),
            });
        }
        let mut boot_patch = json!({
            "BootSourceOverrideTarget": "Pxe",
            "BootSourceOverrideEnabled": "Once",
        });
        if let Some(mode) = self.settings.boot_mode {
            boot_patch["BootSourceOverrideMode"] = json!(match mode {
                RedfishBootMode::Uefi => "UEFI",
                RedfishBootMode::Legacy => "Legacy",
            });
        }
        let body = json!({ "Boot": boot_patch });
        let request = format!("PATCH {system_path}");
        let response = match self
            .send(
                Method::PATCH,
                system_path,
                Some(&body),
                etag.as_deref(),
                Some(credentials),
                log,
            )
            .await
        {
            Err(PowerError::Bmc { status: 412, .. }) if etag.is_some() => {
                log.record(
                    PowerLogLevel::Warn,
                    "redfish: ETag was stale; reading the system again",
                );
                let (_, fresh_etag) = self.get_json(system_path, Some(credentials), log).await?;
                self.send(
                    Method::PATCH,
                    system_path,
                    Some(&body),
                    fresh_etag.as_deref(),
                    Some(credentials),
                    log,
                )
                .await?
            }
            other => other?,
        };
        self.follow_task(response, &request, credentials, log)
            .await?;
        log.record(
            PowerLogLevel::Info,
            "redfish: boot override set to Pxe, once",
        );
        Ok(())
    }

    async fn power_on_with(
        &self,
        service_root: &Value,
        credentials: &Credentials,
        log: &dyn PowerLog,
    ) -> Result<PowerOutcome, PowerError> {
        let system_path = self.system_path(service_root, credentials, log).await?;
        let (system, etag) = self.get_json(&system_path, Some(credentials), log).await?;
        let power_state = match system.get("PowerState").and_then(Value::as_str) {
            Some("On") => PowerState::On,
            Some("Off") => PowerState::Off,
            Some(other) => PowerState::Other(other.to_owned()),
            None => PowerState::Other("unknown".to_owned()),
        };
        log.record(
            PowerLogLevel::Info,
            &format!("redfish: {system_path} power state is {power_state}"),
        );
        let reset_action = system
            .get("Actions")
            .and_then(|actions| actions.get("#ComputerSystem.Reset"))
            .cloned()
            .unwrap_or(Value::Null);
        let reset_target = reset_action
            .get("target")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{system_path}/Actions/ComputerSystem.Reset"));
        let allowed = self
            .reset_type_allowed_values(&reset_action, credentials, log)
            .await?;
        let is_on = matches!(&power_state, PowerState::On)
            || matches!(&power_state, PowerState::Other(state) if state == "PoweringOn");
        let preferred = if is_on {
            RESET_TYPES_WHEN_ON
        } else {
            RESET_TYPES_WHEN_OFF
        };
        let reset_type = choose_reset_type(preferred, allowed.as_deref()).ok_or_else(|| {
            PowerError::ResetTypeNotAllowed {
                wanted: preferred.join(", "),
                allowed: allowed.as_deref().unwrap_or_default().join(", "),
            }
        })?;

        self.set_boot_override(&system_path, &system, etag, credentials, log)
            .await?;

        let request = format!("POST {reset_target}");
        let response = self
            .send(
                Method::POST,
                &reset_target,
                Some(&json!({ "ResetType": reset_type })),
                None,
                Some(credentials),
                log,
            )
            .await?;
        self.follow_task(response, &request, credentials, log)
            .await?;
        log.record(
            PowerLogLevel::Info,
            &format!("redfish: reset {reset_type} accepted"),
        );
        Ok(if is_on {
            PowerOutcome::Restarted { action: reset_type }
        } else {
            PowerOutcome::PoweredOn { action: reset_type }
        })
    }
}

#[async_trait::async_trait]
impl PowerDriver for RedfishDriver {
    fn name(&self) -> &str {
        "redfish"
    }

    async fn power_on_for_pxe(&self, log: &dyn PowerLog) -> Result<PowerOutcome, PowerError> {
        // The service root is readable without authentication by the
        // standard; with basic auth it is sent anyway, for BMCs that want it.
        let basic = Credentials::Basic;
        let root_credentials = (self.settings.auth == RedfishAuth::Basic).then_some(&basic);
        let service_root = match self.get_json("/redfish/v1/", root_credentials, log).await {
            Ok((service_root, _)) => service_root,
            // Some BMCs want credentials even for the service root: go on
            // with the standard paths.
            Err(PowerError::Bmc {
                status: 401 | 403, ..
            }) if root_credentials.is_none() => {
                log.record(
                    PowerLogLevel::Warn,
                    "redfish: the service root needs credentials; using the standard paths",
                );
                Value::Null
            }
            Err(error) => return Err(error),
        };
        let credentials = self.log_in(&service_root, log).await?;
        let result = self.power_on_with(&service_root, &credentials, log).await;
        self.log_out(&credentials, log).await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_type_is_one_the_bmc_allows() {
        let allowed: Vec<String> = ["On", "ForceOff", "PowerCycle"]
            .iter()
            .map(|value| (*value).to_owned())
            .collect();
        assert_eq!(
            choose_reset_type(RESET_TYPES_WHEN_OFF, Some(&allowed)),
            Some("On".to_owned())
        );
        assert_eq!(
            choose_reset_type(RESET_TYPES_WHEN_ON, Some(&allowed)),
            Some("PowerCycle".to_owned())
        );
        assert_eq!(
            choose_reset_type(RESET_TYPES_WHEN_ON, None),
            Some("ForceRestart".to_owned())
        );
        let only_off = vec!["ForceOff".to_owned()];
        assert_eq!(
            choose_reset_type(RESET_TYPES_WHEN_OFF, Some(&only_off)),
            None
        );
    }

    #[test]
    fn bmc_messages_are_read_from_error_bodies() {
        // Shaped like a DMTF Base registry error for a stale ETag.
        let body = r#"{"error":{"@Message.ExtendedInfo":[{"Message":"The resource has changed since the client last retrieved it.","MessageId":"Base.1.12.PreconditionFailed"}],"code":"Base.1.12.GeneralError","message":"A general error has occurred. See ExtendedInfo for more information."}}"#;
        assert_eq!(
            bmc_error_message(body),
            "A general error has occurred. See ExtendedInfo for more information.; The resource has changed since the client last retrieved it."
        );
        let only_id = r#"{"error":{"@Message.ExtendedInfo":[{"MessageId":"Base.1.0.ActionParameterNotSupported"}]}}"#;
        assert_eq!(
            bmc_error_message(only_id),
            "Base.1.0.ActionParameterNotSupported"
        );
        assert_eq!(bmc_error_message("Bad Gateway"), "Bad Gateway");
        assert_eq!(bmc_error_message(""), "(no message)");
    }
}
