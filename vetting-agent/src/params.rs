//! The parameters of `vetting-agent run`: where the orchestrator is, which
//! run this is and its token, read from the kernel command line
//! (`vetting.url=`, `vetting.run=`, `vetting.token=`), overridden by the
//! environment (`VETTING_URL`, `VETTING_RUN`, `VETTING_TOKEN`) and by flags
//! (`--url`, `--run`, `--token`); plus the local switches (`--local`,
//! `--no-poweroff`, `--work-dir`, `--allow-loop-devices`, `--disk-filter`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use vetting_probes::protocol::{CMDLINE_RUN, CMDLINE_TOKEN, CMDLINE_URL};

/// The default place of the kernel command line.
pub const PROC_CMDLINE: &str = "/proc/cmdline";

/// The flags of `vetting-agent run`. `Debug` leaves the token out.
#[derive(Clone, Args)]
pub struct RunArgs {
    /// The orchestrator's base URL (else `VETTING_URL`, else `vetting.url=`
    /// on the kernel command line).
    #[arg(long, env = "VETTING_URL")]
    pub url: Option<String>,
    /// The run id (else `VETTING_RUN`, else `vetting.run=`).
    #[arg(long, env = "VETTING_RUN")]
    pub run: Option<String>,
    /// The run token (else `VETTING_TOKEN`, else `vetting.token=`).
    #[arg(long, env = "VETTING_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where the kernel command line is read from.
    #[arg(long, default_value = PROC_CMDLINE)]
    pub cmdline_file: PathBuf,
    /// Local use: on `shutdown` exit (status 0) instead of powering off.
    #[arg(long)]
    pub local: bool,
    /// Never power the machine off; exit instead (as `--local`).
    #[arg(long)]
    pub no_poweroff: bool,
    /// A folder for scratch files (tool reports); created when missing.
    /// Default: `vetting-agent-RUN` in the system's temporary folder.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Let loop devices be disks (inventory and Storage candidates): for
    /// tests and `vetting demo`. By default loop, ram and zram devices are
    /// never candidates.
    #[arg(long)]
    pub allow_loop_devices: bool,
    /// Only these disks (kernel names such as `loop3` or `/dev/sdb`; a
    /// trailing `*` matches a prefix) are Storage candidates, and only these
    /// loop devices are listed. Comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    pub disk_filter: Vec<String>,
    /// How disks are surface-tested: `auto` chooses by the kernel's
    /// `rotational` flag (HDD → badblocks, SSD/NVMe → fio verify).
    #[arg(long, value_enum, default_value_t = SurfaceTest::Auto)]
    pub surface_test: SurfaceTest,
    /// The sysfs root (tests point it at a copy).
    #[arg(long, default_value = "/sys")]
    pub sys_root: PathBuf,
    /// The /dev root (for the IPMI device node).
    #[arg(long, default_value = "/dev")]
    pub dev_root: PathBuf,
    /// The limit of each request to the orchestrator, in seconds
    /// (artifact uploads get more, by size).
    #[arg(long, default_value_t = 30)]
    pub request_timeout_secs: u64,
}

/// How a disk's surface is tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum SurfaceTest {
    /// By the kernel's `rotational` flag: rotational (or unknown) →
    /// badblocks, non-rotational → fio verify.
    #[default]
    Auto,
    /// badblocks write-and-verify on every disk.
    Badblocks,
    /// fio verify on a share of every disk.
    Fio,
}

/// Which block devices the agent may look at as disks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskSelection {
    pub allow_loop_devices: bool,
    /// Empty: every disk. Otherwise kernel names or `prefix*` patterns.
    pub filter: Vec<String>,
    pub surface_test: SurfaceTest,
}

impl DiskSelection {
    /// Whether `name` (a kernel name, `/dev/` optional) passes the filter.
    pub fn admits(&self, name: &str) -> bool {
        let name = name.strip_prefix("/dev/").unwrap_or(name);
        self.filter.is_empty()
            || self.filter.iter().any(|pattern| {
                let pattern = pattern.trim();
                let pattern = pattern.strip_prefix("/dev/").unwrap_or(pattern);
                match pattern.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => name == pattern,
                }
            })
    }
}

/// Everything `run` needs, resolved. `Debug` leaves the token out.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The orchestrator's base URL, without a trailing slash.
    pub url: String,
    pub run_id: String,
    pub token: String,
    /// Exit on `shutdown` instead of powering off.
    pub exit_on_shutdown: bool,
    pub work_dir: PathBuf,
    pub disks: DiskSelection,
    pub sys_root: PathBuf,
    pub dev_root: PathBuf,
    pub request_timeout: Duration,
}

/// What `Debug` shows in place of a run token.
pub const REDACTED: &str = "<redacted>";

impl std::fmt::Debug for RunArgs {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RunArgs")
            .field("url", &self.url)
            .field("run", &self.run)
            .field("token", &self.token.as_ref().map(|_| REDACTED))
            .field("cmdline_file", &self.cmdline_file)
            .field("local", &self.local)
            .field("no_poweroff", &self.no_poweroff)
            .field("work_dir", &self.work_dir)
            .field("allow_loop_devices", &self.allow_loop_devices)
            .field("disk_filter", &self.disk_filter)
            .field("surface_test", &self.surface_test)
            .field("sys_root", &self.sys_root)
            .field("dev_root", &self.dev_root)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .finish()
    }
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AgentConfig")
            .field("url", &self.url)
            .field("run_id", &self.run_id)
            .field("token", &REDACTED)
            .field("exit_on_shutdown", &self.exit_on_shutdown)
            .field("work_dir", &self.work_dir)
            .field("disks", &self.disks)
            .field("sys_root", &self.sys_root)
            .field("dev_root", &self.dev_root)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl AgentConfig {
    /// A config for `url`, `run_id` and `token` with every other setting at
    /// its default (local mode, a scratch folder under the temp folder).
    pub fn local(url: &str, run_id: &str, token: &str) -> Self {
        AgentConfig {
            url: url.trim_end_matches('/').to_string(),
            run_id: run_id.to_string(),
            token: token.to_string(),
            exit_on_shutdown: true,
            work_dir: default_work_dir(run_id),
            disks: DiskSelection::default(),
            sys_root: PathBuf::from("/sys"),
            dev_root: PathBuf::from("/dev"),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Why the parameters could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error(
        "no {what}: pass --{flag}, set {env}, or boot with {cmdline}=… on the kernel command line"
    )]
    Missing {
        what: &'static str,
        flag: &'static str,
        env: &'static str,
        cmdline: &'static str,
    },
    #[error("the orchestrator URL `{0}` must start with http:// or https://")]
    BadUrl(String),
}

/// The `key=value` parameters of a kernel command line, in order. Values
/// may be double-quoted (`key="a b"`); everything after a lone `--` belongs
/// to init and is left out.
pub fn parse_cmdline(text: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_quotes = false;
    let mut has_word = false;
    for c in text.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_word = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_word {
                    words.push(std::mem::take(&mut word));
                    has_word = false;
                }
            }
            c => {
                word.push(c);
                has_word = true;
            }
        }
    }
    if has_word {
        words.push(word);
    }
    words
        .into_iter()
        .take_while(|word| word != "--")
        .filter_map(|word| {
            word.split_once('=')
                .map(|(key, value)| (key.to_string(), value.to_string()))
        })
        .collect()
}

/// The last value of `key` on the command line.
fn cmdline_value(parameters: &[(String, String)], key: &str) -> Option<String> {
    parameters
        .iter()
        .rev()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.clone())
        .filter(|value| !value.is_empty())
}

/// Resolves the flags (which clap already merged with the environment)
/// with the kernel command line as the fallback.
pub fn resolve(args: &RunArgs) -> Result<AgentConfig, ParamsError> {
    let cmdline = read_cmdline(&args.cmdline_file);
    let pick = |flag: &Option<String>, key: &str| {
        flag.clone()
            .filter(|value| !value.is_empty())
            .or_else(|| cmdline_value(&cmdline, key))
    };
    let url = pick(&args.url, CMDLINE_URL).ok_or(ParamsError::Missing {
        what: "orchestrator URL",
        flag: "url",
        env: "VETTING_URL",
        cmdline: CMDLINE_URL,
    })?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ParamsError::BadUrl(url));
    }
    let run_id = pick(&args.run, CMDLINE_RUN).ok_or(ParamsError::Missing {
        what: "run id",
        flag: "run",
        env: "VETTING_RUN",
        cmdline: CMDLINE_RUN,
    })?;
    let token = pick(&args.token, CMDLINE_TOKEN).ok_or(ParamsError::Missing {
        what: "run token",
        flag: "token",
        env: "VETTING_TOKEN",
        cmdline: CMDLINE_TOKEN,
    })?;
    Ok(AgentConfig {
        url: url.trim_end_matches('/').to_string(),
        work_dir: args
            .work_dir
            .clone()
            .unwrap_or_else(|| default_work_dir(&run_id)),
        run_id,
        token,
        exit_on_shutdown: args.local || args.no_poweroff,
        disks: DiskSelection {
            allow_loop_devices: args.allow_loop_devices,
            filter: args
                .disk_filter
                .iter()
                .map(|name| name.trim().to_string())
                .filter(|name| !name.is_empty())
                .collect(),
            surface_test: args.surface_test,
        },
        sys_root: args.sys_root.clone(),
        dev_root: args.dev_root.clone(),
        request_timeout: Duration::from_secs(args.request_timeout_secs.max(1)),
    })
}

fn read_cmdline(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .map(|text| parse_cmdline(&text))
        .unwrap_or_default()
}

/// `$TMPDIR/vetting-agent-RUN` (the run id reduced to file-name characters).
fn default_work_dir(run_id: &str) -> PathBuf {
    let safe: String = run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    std::env::temp_dir().join(format!("vetting-agent-{safe}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: RunArgs,
    }

    #[test]
    fn cmdline_parameters_with_quotes_and_init_arguments() {
        let parameters = parse_cmdline(
            "BOOT_IMAGE=/vmlinuz quiet vetting.url=http://10.0.0.1:8080 vetting.run=r1 \
             label=\"a b\" vetting.token=abc.def -- vetting.run=ignored\n",
        );
        assert_eq!(
            cmdline_value(&parameters, CMDLINE_URL).as_deref(),
            Some("http://10.0.0.1:8080")
        );
        assert_eq!(
            cmdline_value(&parameters, CMDLINE_RUN).as_deref(),
            Some("r1")
        );
        assert_eq!(
            cmdline_value(&parameters, CMDLINE_TOKEN).as_deref(),
            Some("abc.def")
        );
        assert_eq!(cmdline_value(&parameters, "label").as_deref(), Some("a b"));
    }

    #[test]
    fn flags_override_the_cmdline() {
        let dir = tempfile::tempdir().unwrap();
        let cmdline = dir.path().join("cmdline");
        std::fs::write(
            &cmdline,
            "vetting.url=http://boot:1/ vetting.run=from-boot vetting.token=t0",
        )
        .unwrap();
        let wrapper = Wrapper::try_parse_from([
            "x",
            "--cmdline-file",
            cmdline.to_str().unwrap(),
            "--run",
            "from-flag",
            "--local",
            "--disk-filter",
            "loop3,/dev/loop4",
        ])
        .unwrap();
        let config = resolve(&wrapper.args).unwrap();
        assert_eq!(config.url, "http://boot:1");
        assert_eq!(config.run_id, "from-flag");
        assert_eq!(config.token, "t0");
        assert!(config.exit_on_shutdown);
        assert!(config.disks.admits("loop3"));
        assert!(config.disks.admits("/dev/loop4"));
        assert!(!config.disks.admits("loop5"));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let secret = "run-token-a1b2c3.signature-d4e5f6";
        let config = AgentConfig::local("http://orchestrator:8080", "r1", secret);
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("r1"),
            "{shown}"
        );
        let wrapper =
            Wrapper::try_parse_from(["x", "--url", "http://x", "--token", secret]).unwrap();
        let shown = format!("{:?}", wrapper.args);
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn missing_parameters_say_where_to_put_them() {
        let wrapper =
            Wrapper::try_parse_from(["x", "--cmdline-file", "/nonexistent", "--url", "http://x"])
                .unwrap();
        let mut args = wrapper.args;
        args.run = None;
        args.token = None;
        let error = resolve(&args).unwrap_err().to_string();
        assert!(error.contains("vetting.run="), "{error}");
    }

    #[test]
    fn prefix_patterns_in_the_disk_filter() {
        let selection = DiskSelection {
            filter: vec!["loop*".into()],
            ..DiskSelection::default()
        };
        assert!(selection.admits("loop12"));
        assert!(!selection.admits("sda"));
        assert!(DiskSelection::default().admits("sda"));
    }
}
