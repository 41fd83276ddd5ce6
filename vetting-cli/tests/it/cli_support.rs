//! What the tests of the `vetting` subcommands share: running the binary
//! (never a library call in between) and a fingerprint of the database.

use std::path::Path;
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};
use vetting_core::orchestrator::Orchestrator;

use crate::whole_run::{VETTING, wait_until};

/// What one `vetting` command did.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Panics with everything when the exit code is not `code`.
    pub fn expect_code(self, code: i32, what: &str) -> Outcome {
        assert_eq!(
            self.code, code,
            "{what}: exit {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Where the commands go: the local data folder (in-process, or the
/// server that holds it), or a server named with `--server` and a token.
#[derive(Debug, Clone)]
pub enum Target {
    Local,
    Server { url: String, token: Option<String> },
}

/// Runs `vetting --config CONFIG ARGS...` in `dir`, with nothing of the
/// caller's VETTING_* environment.
pub fn vetting(dir: &Path, config: &Path, target: &Target, args: &[&str]) -> Outcome {
    let mut command = Command::new(VETTING);
    command
        .current_dir(dir)
        .arg("--config")
        .arg(config)
        .env_remove("VETTING_SERVER")
        .env_remove("VETTING_TOKEN")
        .env("VETTING_LOG", "warn")
        .env("USER", "tester")
        .stdin(Stdio::null());
    if let Target::Server { url, token } = target {
        command.args(["--server", url]);
        if let Some(token) = token {
            command.env("VETTING_TOKEN", token);
        }
    }
    let output = command.args(args).output().unwrap();
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `vetting ... ARGS` as a child process, its stdout into `stdout` (a
/// file: a whole run's log is more than a pipe holds).
pub fn spawn_vetting(
    dir: &Path,
    config: &Path,
    target: &Target,
    args: &[&str],
    stdout: &Path,
) -> std::process::Child {
    let mut command = Command::new(VETTING);
    command
        .current_dir(dir)
        .arg("--config")
        .arg(config)
        .env_remove("VETTING_SERVER")
        .env_remove("VETTING_TOKEN")
        .env("VETTING_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(stdout).unwrap())
        .stderr(std::fs::File::create(stdout.with_extension("stderr")).unwrap());
    if let Target::Server { url, token } = target {
        command.args(["--server", url]);
        if let Some(token) = token {
            command.env("VETTING_TOKEN", token);
        }
    }
    command.args(args).spawn().unwrap()
}

/// Every row of every table of the (SQLite) database, hashed. A token's
/// `last_used_at_ms` is left out: using a token records when (the API's
/// documented bookkeeping, at most once a minute), which is not a change
/// a refused command made.
pub async fn fingerprint(orchestrator: &Orchestrator) -> String {
    let out = vetting_testkit::sqlite_rows(orchestrator.store().db(), |table, column| {
        table == "api_tokens" && column == "last_used_at_ms"
    })
    .await;
    hex::encode(Sha256::digest(out.as_bytes())) + "\n" + &out
}

/// Waits until the `vetting serve` process `pid` has published its
/// discovery files in `data_dir` (the CLI finds it through them; files
/// of an earlier, killed server do not count).
pub fn wait_for_discovery(data_dir: &Path, pid: u32) {
    assert!(
        wait_until(30, || {
            let info: Option<serde_json::Value> =
                std::fs::read_to_string(data_dir.join("serve.json"))
                    .ok()
                    .and_then(|text| serde_json::from_str(&text).ok());
            info.is_some_and(|info| info["pid"] == pid) && data_dir.join("cli-admin.token").exists()
        }),
        "vetting serve (pid {pid}) published no discovery files in {}",
        data_dir.display()
    );
}
