//! One typed config: defaults, then a YAML file, then `VETTING__SECTION__KEY`
//! environment variables. Unknown keys are errors that name the file and the
//! key; secrets are redacted in `Debug`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vetting_probes::Thresholds;

/// A string that never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The whole configuration of an orchestrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the database (embedded default), secret key, logs, artifacts
    /// and reports live.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://...`. Default: SQLite in `data_dir`.
    pub database_url: Option<Secret>,
    /// Where the HTTP server listens.
    pub listen: SocketAddr,
    /// The URL agents and browsers use to reach the orchestrator. Default:
    /// `http://{listen}`.
    pub public_url: Option<String>,
    /// Hex-encoded 32-byte key for run tokens and BMC passwords. Default:
    /// `secret.key` in `data_dir`, created on first start.
    pub secret_key: Option<Secret>,
    pub dispatcher: DispatcherConfig,
    pub deadlines: DeadlinesConfig,
    pub runs: RunsConfig,
    pub stages: vetting_probes::protocol::StageParams,
    pub thresholds: Thresholds,
    /// The iperf3 server for the Network stage.
    pub iperf: crate::iperf::IperfConfig,
    /// dnsmasq (DHCP + TFTP) for the vetting LAN. Off unless enabled.
    pub pxe: PxeConfig,
    /// The live image's kernel and initrd, and how iPXE boots them.
    pub boot: BootConfig,
    /// Power actions (Wake-on-LAN, IPMI, Redfish, manual).
    pub power: PowerConfig,
    /// Connection and read limits of the HTTP server.
    pub http: HttpConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            database_url: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            secret_key: None,
            dispatcher: DispatcherConfig::default(),
            deadlines: DeadlinesConfig::default(),
            runs: RunsConfig::default(),
            stages: vetting_probes::protocol::StageParams::default(),
            thresholds: Thresholds::default(),
            iperf: crate::iperf::IperfConfig::default(),
            pxe: PxeConfig::default(),
            boot: BootConfig::default(),
            power: PowerConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

/// dnsmasq for the vetting LAN. Exactly one orchestrator per LAN enables it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PxeConfig {
    /// DHCP is never served unless this is true.
    pub enabled: bool,
    /// The vetting LAN's interface (required when enabled).
    pub interface: Option<String>,
    /// `{mode: full, range_start, range_end, netmask, lease_seconds,
    /// router_advertisement}` or `{mode: proxy, subnet}` (required when
    /// enabled).
    pub dhcp: Option<crate::pxe::DhcpMode>,
    /// The URL iPXE clients get. Default: `{public_url}/ipxe/${mac}?platform=${platform}`.
    pub boot_url: Option<String>,
    /// dnsmasq's folder (config, hostsfile, leases, TFTP root). Default:
    /// `{data_dir}/pxe`.
    pub state_dir: Option<PathBuf>,
    /// Where the iPXE binaries come from (Debian's `ipxe` package).
    pub ipxe_dir: PathBuf,
    /// The binary UEFI PXE ROMs get: `snp_only` or `full`.
    pub uefi_binary: crate::pxe::UefiIpxeBinary,
    /// The dnsmasq program.
    pub dnsmasq_program: PathBuf,
    /// Log every DHCP exchange.
    pub log_dhcp: bool,
    /// How long full-DHCP mode listens for another DHCP server first.
    pub other_server_probe_seconds: u64,
}

impl Default for PxeConfig {
    fn default() -> Self {
        let settings = crate::pxe::PxeSettings::new(
            "",
            crate::pxe::DhcpMode::Proxy {
                subnet: std::net::Ipv4Addr::UNSPECIFIED,
            },
            "",
            "",
        );
        PxeConfig {
            enabled: false,
            interface: None,
            dhcp: None,
            boot_url: None,
            state_dir: None,
            ipxe_dir: settings.ipxe_dir,
            uefi_binary: settings.uefi_binary,
            dnsmasq_program: settings.dnsmasq_program,
            log_dhcp: false,
            other_server_probe_seconds: settings.other_server_probe_seconds,
        }
    }
}

/// The live image iPXE boots, served by the orchestrator under `/boot/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BootConfig {
    /// The folder holding the kernel and initrd. Default: `{data_dir}/boot`.
    pub dir: Option<PathBuf>,
    /// The kernel's file name in `dir`.
    pub kernel: String,
    /// The initrd's file name in `dir`.
    pub initrd: String,
    /// More kernel parameters, one word each (`quiet`, `vetting.debug=1`).
    pub extra_cmdline: Vec<String>,
    /// How often iPXE tries each download before it reboots.
    pub download_attempts: u32,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            dir: None,
            kernel: "vmlinuz".into(),
            initrd: "initrd.img".into(),
            extra_cmdline: Vec::new(),
            download_attempts: crate::pxe::ipxe::DEFAULT_DOWNLOAD_ATTEMPTS,
        }
    }
}

/// How power actions are tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PowerConfig {
    /// Failed power actions in a row (a BMC error, an unreachable BMC)
    /// after which the run fails with the last error's message. The power
    /// deadline (`deadlines.power_on_secs`) bounds the retries as well.
    pub attempts: u32,
    /// Pause between attempts.
    pub retry_secs: u64,
}

impl Default for PowerConfig {
    fn default() -> Self {
        PowerConfig {
            attempts: 3,
            retry_secs: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatcherConfig {
    /// Most runs between `WaitingWoL` and the end of testing.
    pub max_in_flight: u32,
    /// How often the dispatcher and deadline reconcilers run unpoked.
    pub interval_ms: u64,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            max_in_flight: 3,
            interval_ms: 1000,
        }
    }
}

/// Every active state has a deadline, so no run can hang forever.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadlinesConfig {
    /// From dispatch until the power action was sent.
    pub power_on_secs: u64,
    /// From the power action until the agent's hello and claim.
    pub boot_secs: u64,
    /// Silence after which a run whose agent stopped heartbeating fails.
    pub heartbeat_silence_secs: u64,
    /// How long the run token keeps working for heartbeats after the run
    /// ended, so the agent hears `shutdown`.
    pub token_grace_secs: u64,
    /// Per-stage deadlines.
    pub inventory_check_secs: u64,
    pub spec_validate_secs: u64,
    pub smart_secs: u64,
    pub cpu_stress_secs: u64,
    pub storage_secs: u64,
    pub network_secs: u64,
    pub gpu_secs: u64,
    pub psu_secs: u64,
}

impl DeadlinesConfig {
    /// The deadline of a testing stage.
    pub fn stage_secs(&self, stage: crate::machine::Stage) -> u64 {
        use crate::machine::Stage;
        match stage {
            Stage::InventoryCheck => self.inventory_check_secs,
            Stage::Smart => self.smart_secs,
            Stage::CpuStress => self.cpu_stress_secs,
            Stage::Storage => self.storage_secs,
            Stage::Network => self.network_secs,
            Stage::Gpu => self.gpu_secs,
            Stage::Psu => self.psu_secs,
        }
    }
}

impl Default for DeadlinesConfig {
    fn default() -> Self {
        DeadlinesConfig {
            power_on_secs: 300,
            boot_secs: 900,
            heartbeat_silence_secs: 120,
            token_grace_secs: 600,
            inventory_check_secs: 900,
            spec_validate_secs: 300,
            smart_secs: 4 * 3600,
            cpu_stress_secs: 3 * 3600,
            storage_secs: 48 * 3600,
            network_secs: 1800,
            gpu_secs: 3 * 3600,
            psu_secs: 900,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunsConfig {
    /// On failure, keep the host up for the operator (`FailedHolding`)
    /// instead of ending the run `Failed` and powering it off.
    pub hold_on_failure: bool,
}

impl Default for RunsConfig {
    fn default() -> Self {
        RunsConfig {
            hold_on_failure: true,
        }
    }
}

/// Connection and read limits of the HTTP server: a client that holds a
/// connection without making progress is cut, so slow clients cannot use
/// up the orchestrator's connections or file descriptors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// The whole request head (request line and headers) must arrive
    /// within this many seconds of its first byte.
    pub header_timeout_secs: u64,
    /// A request body must arrive at least this fast (after a grace of
    /// `header_timeout_secs` from its first read); a slower one is cut
    /// (408).
    pub body_min_bytes_per_sec: u64,
    /// A connection waiting for its first or next request is closed after
    /// this many seconds (keep it above clients' pool idle timeouts, 90 s
    /// for reqwest, so they close first). Responses being sent (event streams) are exempt,
    /// unless a write waits this long for a client that does not read.
    pub idle_timeout_secs: u64,
    /// The most connections open at once; past it a connection is answered
    /// 503 and closed at once. Above the 1000-host target, with browsers.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout_secs: 10,
            body_min_bytes_per_sec: 1024,
            idle_timeout_secs: 120,
            max_connections: 4096,
        }
    }
}

/// A config that could not be loaded; the message names the file and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: cannot be read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("config from environment: {message}")]
    Environment { message: String },
    #[error("config: {message}")]
    Value { message: String },
}

impl Config {
    /// Loads defaults, then `file` (YAML) when given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let defaults =
            serde_json::to_value(Config::default()).map_err(|error| ConfigError::Value {
                message: error.to_string(),
            })?;
        let mut merged = defaults;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let from_file: serde_json::Value = if text.trim().is_empty() {
                serde_json::Value::Object(Default::default())
            } else {
                serde_norway::from_str(&text).map_err(|error| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    message: error.to_string(),
                })?
            };
            // Validate the file alone first, so an error names the file.
            check_keys(&from_file, "").map_err(|message| ConfigError::Invalid {
                path: path.to_path_buf(),
                message,
            })?;
            merge(&mut merged, from_file);
            Config::from_value(merged.clone()).map_err(|message| ConfigError::Invalid {
                path: path.to_path_buf(),
                message,
            })?;
        }
        let mut from_env = serde_json::Value::Object(Default::default());
        let mut any_env = false;
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("VETTING__") else {
                continue;
            };
            any_env = true;
            let path: Vec<String> = rest.split("__").map(|part| part.to_lowercase()).collect();
            insert_path(&mut from_env, &path, env_value(&value));
        }
        if any_env {
            check_keys(&from_env, "").map_err(|message| ConfigError::Environment { message })?;
            merge(&mut merged, from_env);
        }
        Config::from_value(merged).map_err(|message| ConfigError::Environment { message })
    }

    fn from_value(value: serde_json::Value) -> Result<Config, String> {
        let config: Config = serde_path_to_error(value)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.dispatcher.max_in_flight == 0 {
            return Err("key `dispatcher.max_in_flight`: must be at least 1".into());
        }
        if let Some(url) = &self.database_url {
            let url = url.expose();
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                return Err(
                    "key `database_url`: must start with sqlite:, postgres:// or postgresql://"
                        .into(),
                );
            }
        }
        if let Some(key) = &self.secret_key {
            let decoded = hex::decode(key.expose().trim())
                .map_err(|_| "key `secret_key`: must be hex".to_string())?;
            if decoded.len() != 32 {
                return Err("key `secret_key`: must be 32 bytes (64 hex digits)".into());
            }
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err("key `public_url`: must start with http:// or https://".into());
        }
        self.pxe_settings()?;
        for word in &self.boot.extra_cmdline {
            if word.is_empty() || word.chars().any(|c| !c.is_ascii_graphic() || c == '$') {
                return Err(format!(
                    "key `boot.extra_cmdline`: `{word}` must be one printable word without `$`"
                ));
            }
        }
        for (key, name) in [
            ("boot.kernel", &self.boot.kernel),
            ("boot.initrd", &self.boot.initrd),
        ] {
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                return Err(format!(
                    "key `{key}`: `{name}` must be a file name in boot.dir, without `/`"
                ));
            }
        }
        if self.http.header_timeout_secs == 0 {
            return Err("key `http.header_timeout_secs`: must be at least 1".into());
        }
        if self.http.idle_timeout_secs == 0 {
            return Err("key `http.idle_timeout_secs`: must be at least 1".into());
        }
        if self.http.body_min_bytes_per_sec == 0 {
            return Err("key `http.body_min_bytes_per_sec`: must be at least 1".into());
        }
        if self.http.max_connections == 0 {
            return Err("key `http.max_connections`: must be at least 1".into());
        }
        if self.power.attempts == 0 {
            return Err("key `power.attempts`: must be at least 1".into());
        }
        let share = self.stages.storage.ssd_verify_share;
        if !(0.0..=1.0).contains(&share) {
            return Err("key `stages.storage.ssd_verify_share`: must be between 0 and 1".into());
        }
        Ok(())
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose().to_string(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("vetting.db").display()
            ),
        }
    }

    /// dnsmasq's settings when PXE is enabled; an error names the missing
    /// or wrong key.
    pub fn pxe_settings(&self) -> Result<Option<crate::pxe::PxeSettings>, String> {
        let pxe = &self.pxe;
        if !pxe.enabled {
            return Ok(None);
        }
        let interface = pxe
            .interface
            .clone()
            .ok_or("key `pxe.interface`: required when `pxe.enabled` is true")?;
        let dhcp = pxe
            .dhcp
            .clone()
            .ok_or("key `pxe.dhcp`: required when `pxe.enabled` is true ({mode: full, ...} or {mode: proxy, subnet})")?;
        let boot_url = pxe
            .boot_url
            .clone()
            .unwrap_or_else(|| crate::pxe::dhcp_boot_url(&self.public_url()));
        let state_dir = pxe
            .state_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("pxe"));
        let mut settings = crate::pxe::PxeSettings::new(interface, dhcp, boot_url, state_dir);
        settings.ipxe_dir = pxe.ipxe_dir.clone();
        settings.uefi_binary = pxe.uefi_binary;
        settings.dnsmasq_program = pxe.dnsmasq_program.clone();
        settings.log_dhcp = pxe.log_dhcp;
        settings.other_server_probe_seconds = pxe.other_server_probe_seconds;
        settings
            .validate()
            .map_err(|message| format!("key `pxe`: {message}"))?;
        Ok(Some(settings))
    }

    /// The folder the live image's kernel and initrd are served from.
    pub fn boot_dir(&self) -> PathBuf {
        self.boot
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("boot"))
    }

    /// The URL agents and browsers use.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen),
        }
    }
}

/// Deserializes with the path of the offending key in the message.
fn serde_path_to_error(value: serde_json::Value) -> Result<Config, String> {
    Config::deserialize(value).map_err(|error| error.to_string())
}

/// Walks a partial config and reports the first key that the config does
/// not have, by its dotted path, or a value of the wrong type.
fn check_keys(value: &serde_json::Value, prefix: &str) -> Result<(), String> {
    let defaults = serde_json::to_value(Config::default()).map_err(|error| error.to_string())?;
    check_against(value, &defaults, prefix)?;
    let mut merged = defaults;
    merge(&mut merged, value.clone());
    Config::deserialize(merged)
        .map(|_| ())
        .map_err(|error| describe_type_error(value, &error.to_string()))
}

fn check_against(
    value: &serde_json::Value,
    reference: &serde_json::Value,
    prefix: &str,
) -> Result<(), String> {
    let serde_json::Value::Object(map) = value else {
        return Ok(());
    };
    let serde_json::Value::Object(known) = reference else {
        // optional sections (null by default) accept any shape here; the
        // typed pass reports a bad one
        return Ok(());
    };
    for (key, inner) in map {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match known.get(key) {
            None => return Err(format!("unknown key `{path}`")),
            Some(reference_inner) => check_against(inner, reference_inner, &path)?,
        }
    }
    Ok(())
}

/// Finds which key a type error is about: serde's message names the
/// expected type; we add the first leaf whose replacement by the default
/// makes the config valid.
fn describe_type_error(value: &serde_json::Value, message: &str) -> String {
    let mut leaves = Vec::new();
    collect_leaves(value, String::new(), &mut leaves);
    // each leaf, then the sections above it (a tagged section such as
    // `pxe.dhcp` is wrong as a whole when its tag is)
    let mut candidates: Vec<String> = leaves.iter().map(|(path, _)| path.clone()).collect();
    for (path, _) in &leaves {
        let mut ancestor = path.as_str();
        while let Some((parent, _)) = ancestor.rsplit_once('.') {
            if !candidates.iter().any(|known| known == parent) {
                candidates.push(parent.to_string());
            }
            ancestor = parent;
        }
    }
    for path in &candidates {
        let mut without = value.clone();
        remove_path(&mut without, path);
        let defaults = match serde_json::to_value(Config::default()) {
            Ok(defaults) => defaults,
            Err(_) => break,
        };
        let mut merged = defaults;
        merge(&mut merged, without);
        if Config::deserialize(merged).is_ok() {
            return format!("key `{path}`: {message}");
        }
    }
    message.to_string()
}

fn collect_leaves(value: &serde_json::Value, prefix: String, out: &mut Vec<(String, ())>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                collect_leaves(inner, path, out);
            }
        }
        _ => out.push((prefix, ())),
    }
}

fn remove_path(value: &mut serde_json::Value, path: &str) {
    let parts: Vec<&str> = path.split('.').collect();
    let mut current = value;
    for (index, part) in parts.iter().enumerate() {
        let serde_json::Value::Object(map) = current else {
            return;
        };
        if index + 1 == parts.len() {
            map.remove(*part);
            return;
        }
        match map.get_mut(*part) {
            Some(next) => current = next,
            None => return,
        }
    }
}

/// Deep-merges `overlay` into `base`.
fn merge(base: &mut serde_json::Value, overlay: serde_json::Value) {
    match (base, overlay) {
        (serde_json::Value::Object(base_map), serde_json::Value::Object(overlay_map)) => {
            for (key, value) in overlay_map {
                match base_map.get_mut(&key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge(existing, value)
                    }
                    _ => {
                        base_map.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

fn insert_path(value: &mut serde_json::Value, path: &[String], leaf: serde_json::Value) {
    let mut current = value;
    for (index, part) in path.iter().enumerate() {
        if !current.is_object() {
            *current = serde_json::Value::Object(Default::default());
        }
        let serde_json::Value::Object(map) = current else {
            return;
        };
        if index + 1 == path.len() {
            map.insert(part.clone(), leaf);
            return;
        }
        current = map
            .entry(part.clone())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
    }
}

/// Environment values are text: numbers and booleans are read as such.
fn env_value(text: &str) -> serde_json::Value {
    if let Ok(number) = text.parse::<u64>() {
        return serde_json::Value::from(number);
    }
    if let Ok(number) = text.parse::<f64>()
        && text.contains('.')
    {
        return serde_json::Value::from(number);
    }
    match text {
        "true" => serde_json::Value::Bool(true),
        "false" => serde_json::Value::Bool(false),
        _ => serde_json::Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn no_file_gives_working_defaults() {
        let config = Config::load_with_env(None, Vec::new()).unwrap();
        assert_eq!(config, Config::default());
        assert!(config.database_url().starts_with("sqlite://"));
        assert_eq!(config.public_url(), "http://127.0.0.1:8080");
    }

    #[test]
    fn file_then_environment() {
        let file = write("dispatcher:\n  max_in_flight: 7\nruns:\n  hold_on_failure: false\n");
        let config = Config::load_with_env(
            Some(file.path()),
            vec![(
                "VETTING__DISPATCHER__MAX_IN_FLIGHT".to_string(),
                "9".to_string(),
            )],
        )
        .unwrap();
        assert_eq!(config.dispatcher.max_in_flight, 9);
        assert!(!config.runs.hold_on_failure);
    }

    #[test]
    fn http_limits_from_file_and_environment_and_zero_refused() {
        let file = write("http:\n  header_timeout_secs: 3\n  max_connections: 100\n");
        let config = Config::load_with_env(
            Some(file.path()),
            vec![(
                "VETTING__HTTP__IDLE_TIMEOUT_SECS".to_string(),
                "7".to_string(),
            )],
        )
        .unwrap();
        assert_eq!(config.http.header_timeout_secs, 3);
        assert_eq!(config.http.max_connections, 100);
        assert_eq!(config.http.idle_timeout_secs, 7);
        assert_eq!(
            config.http.body_min_bytes_per_sec,
            HttpConfig::default().body_min_bytes_per_sec
        );
        let file = write("http:\n  max_connections: 0\n");
        let error = Config::load_with_env(Some(file.path()), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(error.contains("http.max_connections"), "{error}");
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let file = write("dispatcher:\n  max_in_flite: 7\n");
        let error = Config::load_with_env(Some(file.path()), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&file.path().display().to_string()),
            "{error}"
        );
        assert!(error.contains("dispatcher.max_in_flite"), "{error}");
    }

    #[test]
    fn bad_value_names_file_and_key() {
        let file = write("deadlines:\n  boot_secs: soon\n");
        let error = Config::load_with_env(Some(file.path()), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&file.path().display().to_string()),
            "{error}"
        );
        assert!(error.contains("deadlines.boot_secs"), "{error}");
    }

    #[test]
    fn bad_environment_names_the_key() {
        let error = Config::load_with_env(
            None,
            vec![(
                "VETTING__RUNS__HOLD_ON_FAILUR".to_string(),
                "true".to_string(),
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("runs.hold_on_failur"), "{error}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let file = write("dispatcher:\n  max_in_flight: 0\n");
        let error = Config::load_with_env(Some(file.path()), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(error.contains("dispatcher.max_in_flight"), "{error}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let config = Config {
            secret_key: Some(Secret("00".repeat(32))),
            database_url: Some(Secret("postgres://user:hunter2@localhost/db".into())),
            ..Config::default()
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains(&"00".repeat(32)), "{debug}");
    }
}
