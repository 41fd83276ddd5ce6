//! `runs watch` seen as a person sees it: under a pseudo-terminal (tmux,
//! 120×40), the screen captured mid-run and at the end shows the current
//! stage with its attempt and elapsed time and the tail of its log.

use std::process::Command;

use crate::cli_support::{Target, vetting, wait_for_discovery};
use crate::whole_run::{KillOnDrop, LoopDevice, MIB, SERIAL, VETTING, env_with, wait_until};

/// A tmux server of the test's own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket, "-f", "/dev/null"]);
        command
    }

    fn capture(&self) -> String {
        let output = self
            .command()
            .args(["capture-pane", "-p", "-t", "watch"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// The log lines the screen shows under `log of STAGE#N:`, without their
/// time.
fn tail_on(screen: &str) -> Vec<String> {
    screen
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("log of "))
        .skip(1)
        .take_while(|line| line.starts_with("    "))
        .map(|line| {
            let line = line.trim_start();
            // `18:40:00Z [stage] text`: drop the time
            line.split_once(' ')
                .map_or(line, |(_, rest)| rest)
                .trim()
                .to_string()
        })
        .filter(|line| !line.is_empty())
        .collect()
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_watch_on_a_terminal_shows_the_current_stage_and_its_log() {
    if !vetting_testkit::prerequisite(vetting_testkit::all_of([
        vetting_testkit::loop_devices(),
        vetting_testkit::program("tmux"),
    ])) {
        return;
    }
    let _serial = SERIAL.lock().await;
    // 8 s of stress: a stage long enough to be seen running
    let env = env_with(8, "").await;
    let dir = env.dir.path().to_path_buf();
    let config = env.server.config_file.clone();
    wait_for_discovery(&dir.join("data"), env.server.child.as_ref().unwrap().id());
    let disk = LoopDevice::new(&dir.join("screen.img"), 33 * MIB, |_| {});
    std::fs::write(
        dir.join("spec.yaml"),
        format!(
            "schema_version: 1\ndisks:\n  devices:\n    - size_bytes: {}\n      count: 1\n",
            33 * MIB
        ),
    )
    .unwrap();
    let local = Target::Local;
    vetting(
        &dir,
        &config,
        &local,
        &["profiles", "add", "screen", "spec.yaml"],
    )
    .expect_code(0, "profiles add");
    vetting(
        &dir,
        &config,
        &local,
        &[
            "hosts",
            "add",
            "--name",
            "screen-1",
            "--mac",
            "02:00:00:00:33:01",
            "--profile",
            "screen",
        ],
    )
    .expect_code(0, "hosts add");
    let run_id = vetting(&dir, &config, &local, &["runs", "start", "screen-1"])
        .expect_code(0, "runs start")
        .stdout
        .trim()
        .to_string();
    assert!(wait_until(60, || {
        vetting(&dir, &config, &local, &["runs", "show", &run_id])
            .stdout
            .contains("Booting")
    }));
    let _agent = KillOnDrop(env.agent(&run_id, &[&disk.device]).await);

    let tmux = Tmux {
        socket: format!("vetting-test-{}", std::process::id()),
    };
    let shell = format!(
        "cd {dir} && VETTING_LOG=warn {vetting} --config {config} runs watch {run_id}; \
         echo \"watch exited $?\"; exec sleep 3600",
        dir = shell_quote(&dir.display().to_string()),
        vetting = shell_quote(VETTING),
        config = shell_quote(&config.display().to_string()),
    );
    let started = tmux
        .command()
        .args([
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "40",
            "-s",
            "watch",
            &shell,
        ])
        .status()
        .unwrap();
    assert!(started.success());

    // mid-run: a stage running, with its log tail
    let mut screen = String::new();
    let seen = wait_until(240, || {
        screen = tmux.capture();
        screen.contains("[>>]") && !tail_on(&screen).is_empty()
    });
    assert!(
        seen,
        "no current stage with a log tail on screen:\n{screen}"
    );
    let running = screen
        .lines()
        .find(|line| line.contains("[>>]"))
        .unwrap()
        .to_string();
    assert!(
        running.contains("running") && running.contains("attempt 1"),
        "{screen}"
    );
    let stage = running.split_whitespace().nth(1).unwrap().to_string();
    assert!(
        screen.contains(&format!("log of {stage}#1:")),
        "the tail is not the current stage's:\n{screen}"
    );
    assert!(
        screen.contains(&format!("run {run_id}  host screen-1")),
        "{screen}"
    );
    // the tail's lines are the stage's log as stored
    let stored = vetting(
        &dir,
        &config,
        &local,
        &["runs", "logs", &run_id, "--stage", &stage],
    )
    .expect_code(0, "runs logs")
    .stdout;
    for line in tail_on(&screen) {
        let text = line.trim_end_matches('…');
        assert!(
            stored.contains(text),
            "`{line}` is not in the {stage} log:\n{stored}"
        );
    }

    // the end: the verdict under the last screen, exit 0
    let mut last = String::new();
    assert!(
        wait_until(300, || {
            last = tmux.capture();
            last.contains("watch exited")
        }),
        "runs watch did not end:\n{last}"
    );
    assert!(last.contains("watch exited 0"), "{last}");
    assert!(
        last.contains(&format!("run {run_id} (screen-1): Completed")),
        "{last}"
    );
    for stage in [
        "InventoryCheck",
        "SpecValidate",
        "CPUStress",
        "Storage",
        "Network",
    ] {
        assert!(
            last.lines()
                .any(|line| line.contains(stage)
                    && (line.contains("[ok]") || line.contains("[warn]"))),
            "{stage} not shown passed:\n{last}"
        );
    }
    assert!(
        last.lines()
            .any(|line| line.contains("GPU") && line.contains("[skip]")),
        "{last}"
    );
    drop(disk);
}
