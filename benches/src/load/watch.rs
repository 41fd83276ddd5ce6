//! `runs watch` under load: during the hosts scenario, `watchers` real
//! `vetting --json --server URL runs watch RUN` processes (the CLI as an
//! operator runs it, over the server's events stream) follow as many of
//! the seeded runs; at the end every transition stored for a watched run
//! is looked for in its watcher's output. The target: no transition
//! missed (and none twice) while the agents' p99 stays under 50 ms.
//!
//! `cargo build --release -p vetting-cli -p vetting-benches && target/release/vetting-load watch
//! --hosts 1000 --watchers 50`. The `vetting` binary is the one built
//! beside this one. The watchers inherit this process's core,
//! so they load the generator's core, not the server's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use vetting_core::orchestrator::Orchestrator;

use super::server::SeededRun;

/// The watcher processes of one scenario.
#[derive(Debug)]
pub struct Watchers {
    binary: PathBuf,
    dir: PathBuf,
    count: usize,
    watching: Vec<Watcher>,
}

#[derive(Debug)]
struct Watcher {
    run_id: String,
    child: Child,
    output: PathBuf,
    /// The exit code, when it ended by itself (its verdict).
    exit: Option<i32>,
}

/// What the watchers saw against what is stored.
#[derive(Debug, Clone, Default)]
pub struct WatchCheck {
    pub watchers: usize,
    /// Watchers that ended by themselves with a verdict (0 or 1).
    pub ended_with_verdict: usize,
    pub transitions_stored: usize,
    pub transitions_seen: usize,
    /// Stored transitions a watcher did not print: for a watcher that
    /// ended by itself every one of its run's, for one stopped at the end
    /// those up to the last it printed.
    pub missed: usize,
    pub duplicated: usize,
    /// Lines of output that are not the documented JSON.
    pub unreadable_lines: usize,
    pub errors: Vec<String>,
}

impl WatchCheck {
    pub fn held(&self) -> bool {
        self.watchers > 0
            && self.missed == 0
            && self.duplicated == 0
            && self.unreadable_lines == 0
            && self.errors.is_empty()
    }
}

impl Watchers {
    /// `count` watchers (none started yet), their output under `dir`.
    pub fn new(count: usize, dir: &Path) -> anyhow::Result<Watchers> {
        let binary = std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("vetting");
        if !binary.exists() {
            bail!(
                "{} is missing: build it beside vetting-load (cargo build --release -p vetting-cli)",
                binary.display()
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Watchers {
            binary,
            dir: dir.to_path_buf(),
            count,
            watching: Vec::new(),
        })
    }

    /// Starts one watcher per run for the first `count` runs, against the
    /// server at `url` holding `data_dir` (its local admin token, as the
    /// server published it).
    pub fn start(&mut self, url: &str, data_dir: &Path, runs: &[SeededRun]) -> anyhow::Result<()> {
        let found = vetting_http::api::discover(data_dir)
            .context("reading the server's discovery files")?
            .context("the server published no discovery files")?;
        for run in runs.iter().take(self.count) {
            let output = self.dir.join(format!("watch-{}.jsonl", run.run_id));
            let child = Command::new(&self.binary)
                .args(["--json", "--server", url, "runs", "watch", &run.run_id])
                .env("VETTING_TOKEN", &found.token)
                .env("VETTING_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::from(
                    std::fs::File::create(&output)
                        .with_context(|| format!("creating {}", output.display()))?,
                ))
                .stderr(Stdio::from(
                    std::fs::File::create(output.with_extension("stderr"))
                        .with_context(|| format!("creating {}", output.display()))?,
                ))
                .spawn()
                .with_context(|| format!("starting {}", self.binary.display()))?;
            self.watching.push(Watcher {
                run_id: run.run_id.clone(),
                child,
                output,
                exit: None,
            });
        }
        Ok(())
    }

    /// Waits at most `grace` for the watchers to end by themselves (their
    /// runs settle), then stops the rest.
    pub fn finish(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        loop {
            let mut running = 0;
            for watcher in &mut self.watching {
                if watcher.exit.is_none() {
                    match watcher.child.try_wait() {
                        Ok(Some(status)) => watcher.exit = Some(status.code().unwrap_or(-1)),
                        Ok(None) => running += 1,
                        Err(_) => watcher.exit = Some(-1),
                    }
                }
            }
            if running == 0 || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for watcher in &mut self.watching {
            if watcher.exit.is_none() {
                let _ = watcher.child.kill();
                let _ = watcher.child.wait();
            }
        }
    }

    /// Every stored transition of each watched run against what its
    /// watcher printed.
    pub async fn check(&self, store: &Orchestrator) -> anyhow::Result<WatchCheck> {
        let mut check = WatchCheck {
            watchers: self.watching.len(),
            ..WatchCheck::default()
        };
        for watcher in &self.watching {
            let text = std::fs::read_to_string(&watcher.output)
                .with_context(|| format!("reading {}", watcher.output.display()))?;
            let mut seen = Vec::new();
            for line in text.lines() {
                let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
                    check.unreadable_lines += 1;
                    continue;
                };
                if value["type"] == "transition" {
                    match value["transition"]["id"].as_i64() {
                        Some(id) if value["run"] == watcher.run_id.as_str() => seen.push(id),
                        _ => check.unreadable_lines += 1,
                    }
                }
            }
            let unique: BTreeSet<i64> = seen.iter().copied().collect();
            check.duplicated += seen.len() - unique.len();
            check.transitions_seen += unique.len();
            let stored: Vec<i64> = store
                .operator()
                .transitions(Some(&watcher.run_id))
                .await?
                .into_iter()
                .map(|transition| transition.id)
                .collect();
            check.transitions_stored += stored.len();
            let ended = matches!(watcher.exit, Some(0 | 1));
            if ended {
                check.ended_with_verdict += 1;
            } else if let Some(code) = watcher.exit {
                let stderr = std::fs::read_to_string(watcher.output.with_extension("stderr"))
                    .unwrap_or_default();
                check.errors.push(format!(
                    "watcher of {} exited {code}: {}",
                    watcher.run_id,
                    stderr.trim()
                ));
            }
            let last_seen = unique.iter().next_back().copied().unwrap_or(0);
            check.missed += stored
                .iter()
                .filter(|id| !unique.contains(id) && (ended || **id <= last_seen))
                .count();
        }
        Ok(check)
    }
}

/// Prints a [`WatchCheck`].
pub fn print_check(check: &WatchCheck) {
    println!(
        "  runs watch: {} watchers (`vetting --json --server URL runs watch RUN`), {} ended with their run's verdict",
        check.watchers, check.ended_with_verdict
    );
    println!(
        "    transitions stored {}, seen {}, missed {}, duplicated {}, unreadable lines {}   [target: none missed]",
        check.transitions_stored,
        check.transitions_seen,
        check.missed,
        check.duplicated,
        check.unreadable_lines
    );
    for error in &check.errors {
        println!("    {error}");
    }
    println!("    → {}", if check.held() { "held" } else { "NOT held" });
}
