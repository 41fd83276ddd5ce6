//! Whole runs with real processes over real sockets on loopback: `vetting
//! serve` and a real `vetting-agent` process, loop devices as disks, real
//! stress-ng, badblocks/fio and iperf3. Needs root (loop devices); the test
//! command runs as root.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use vetting_core::clock::SystemClock;
use vetting_core::config::Config;
use vetting_core::machine::RunState;
use vetting_core::model::{Actor, NewHost};
use vetting_core::orchestrator::Orchestrator;

pub const VETTING: &str = env!("CARGO_BIN_EXE_vetting");
const KEY: &str = "0f0e0d0c0b0a09080706050403020100f0e0d0c0b0a090807060504030201000";

/// Whole runs share the machine's loop devices and CPU: one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn agent_binary() -> PathBuf {
    let path = PathBuf::from(VETTING).with_file_name("vetting-agent");
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo test --workspace builds it)",
        path.display()
    );
    path
}

/// A loop device over a file, detached on drop.
pub struct LoopDevice {
    pub device: String,
    pub file: PathBuf,
}

impl LoopDevice {
    pub fn new(file: &Path, size: u64, fill: impl Fn(&mut std::fs::File)) -> LoopDevice {
        let mut handle = std::fs::File::create(file).unwrap();
        handle.set_len(size).unwrap();
        fill(&mut handle);
        handle.sync_all().unwrap();
        drop(handle);
        LoopDevice::attach(file, &[])
    }

    pub fn attach(file: &Path, extra: &[&str]) -> LoopDevice {
        let output = Command::new("losetup")
            .args(["-f", "--show"])
            .args(extra)
            .arg(file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        LoopDevice {
            device: String::from_utf8_lossy(&output.stdout).trim().to_string(),
            file: file.to_path_buf(),
        }
    }

    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(std::fs::read(&self.file).unwrap()))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// Fills a file with a repeating known pattern.
pub fn known_pattern(file: &mut std::fs::File) {
    let size = file.metadata().unwrap().len() as usize;
    let pattern = b"vetting: this disk must never be written. ";
    let mut buffer = Vec::with_capacity(size);
    while buffer.len() < size {
        buffer.extend_from_slice(pattern);
    }
    buffer.truncate(size);
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0)).unwrap();
    file.write_all(&buffer).unwrap();
}

/// Random bytes without any signature.
pub fn random_data(file: &mut std::fs::File) {
    let size = file.metadata().unwrap().len() as usize;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buffer = Vec::with_capacity(size);
    while buffer.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        buffer.extend_from_slice(&state.to_le_bytes());
    }
    buffer.truncate(size);
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0)).unwrap();
    file.write_all(&buffer).unwrap();
}

/// A GPT written by the real sfdisk.
pub fn gpt(device: &str) {
    let mut child = Command::new("sfdisk")
        .args(["--quiet", device])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\n,,L\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// The orchestrator in its own process (`vetting serve`), restartable on
/// the same database and port.
pub struct Server {
    pub child: Option<Child>,
    pub config_file: PathBuf,
    pub dir: PathBuf,
    pub port: u16,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) {
        let child = Command::new(VETTING)
            .args(["--config", self.config_file.to_str().unwrap(), "serve"])
            .current_dir(&self.dir)
            .env("VETTING_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "vetting serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A test environment: a data folder, a config, a server, and a library
/// handle on the same database for setting up hosts and reading results.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub server: Server,
    /// The port of the orchestrator's iperf3 server.
    pub iperf_port: u16,
    pub orchestrator: Orchestrator,
}

pub async fn env(extra_config: &str) -> Env {
    env_with(3, extra_config).await
}

pub async fn env_with(stress_secs: u64, extra_config: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let iperf_port = free_port();
    let config_file = dir.path().join("vetting.yaml");
    let text = format!(
        "data_dir: {data}\nlisten: 127.0.0.1:{port}\nsecret_key: \"{KEY}\"\n\
         dispatcher:\n  interval_ms: 100\n\
         deadlines:\n  heartbeat_silence_secs: 30\n\
         iperf:\n  port: {iperf_port}\n\
         stages:\n  cpu_stress:\n    duration_secs: {stress_secs}\n    memory_share: 0.02\n  network:\n    duration_secs: 1\n  smart:\n    run_short_self_test: false\n  storage:\n    max_secs_per_disk: 120\n    ssd_verify_share: 0.5\n    wipe_probe_samples: 64\n\
         {extra_config}",
        data = dir.path().join("data").display()
    );
    std::fs::write(&config_file, text).unwrap();
    let config = Config::load(Some(&config_file)).unwrap();
    let orchestrator = Orchestrator::open(config, Arc::new(SystemClock))
        .await
        .unwrap()
        .with_bcrypt_cost(4);
    let mut server = Server {
        child: None,
        config_file,
        dir: dir.path().to_path_buf(),
        port,
    };
    server.start();
    Env {
        dir,
        server,
        iperf_port,
        orchestrator,
    }
}

impl Env {
    /// Registers a host expecting one disk of `disk_bytes` and starts a run.
    pub async fn start_run(&self, name: &str, disk_bytes: Option<u64>) -> String {
        let actor = Actor::operator("tester");
        let spec = match disk_bytes {
            Some(bytes) => format!(
                "schema_version: 1\ndisks:\n  devices:\n    - size_bytes: {bytes}\n      count: 1\n"
            ),
            None => "schema_version: 1\n".to_string(),
        };
        self.orchestrator
            .operator()
            .put_spec_profile(name, &spec, &actor)
            .await
            .unwrap();
        let index = name
            .bytes()
            .fold(0u32, |acc, b| acc.wrapping_mul(31).wrapping_add(b as u32));
        let host = self
            .orchestrator
            .operator()
            .register_host(
                NewHost {
                    name: name.to_string(),
                    macs: vec![format!(
                        "02:00:{:02x}:{:02x}:{:02x}:{:02x}",
                        (index >> 24) & 0xff,
                        (index >> 16) & 0xff,
                        (index >> 8) & 0xff,
                        index & 0xff
                    )],
                    spec_profile: Some(name.to_string()),
                    ..Default::default()
                },
                &actor,
            )
            .await
            .unwrap();
        let run = self
            .orchestrator
            .operator()
            .start_run(host.id, &actor)
            .await
            .unwrap();
        self.wait_for(&run.id, |state| state == RunState::Booting, 30)
            .await;
        run.id
    }

    /// Starts a real agent process for the run.
    pub async fn agent(&self, run_id: &str, disks: &[&str]) -> Child {
        self.agent_with(run_id, disks, &[]).await
    }

    /// Starts a real agent process for the run, with more arguments.
    pub async fn agent_with(&self, run_id: &str, disks: &[&str], arguments: &[&str]) -> Child {
        let filter: Vec<&str> = disks
            .iter()
            .map(|d| d.trim_start_matches("/dev/"))
            .collect();
        let token = self.orchestrator.agent().token_for(run_id).await.unwrap();
        let work = self.dir.path().join(format!("agent-{run_id}"));
        std::fs::create_dir_all(&work).unwrap();
        Command::new(agent_binary())
            .arg("run")
            .args(["--url", &self.server.url()])
            .args(["--run", run_id])
            .args(["--token", &token])
            .arg("--local")
            .arg("--allow-loop-devices")
            .args(["--disk-filter", &filter.join(",")])
            .args(["--work-dir", work.to_str().unwrap()])
            .args(arguments)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.join("agent.log")).unwrap())
            .spawn()
            .unwrap()
    }

    pub async fn wait_for(
        &self,
        run_id: &str,
        done: impl Fn(RunState) -> bool,
        secs: u64,
    ) -> RunState {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let state = self
                .orchestrator
                .operator()
                .get_run(run_id)
                .await
                .unwrap()
                .state;
            if done(state) {
                return state;
            }
            if Instant::now() > deadline {
                let agent_log = std::fs::read_to_string(
                    self.dir
                        .path()
                        .join(format!("agent-{run_id}"))
                        .join("agent.log"),
                )
                .unwrap_or_default();
                let tail: String = agent_log
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!("run {run_id} still in {state} after {secs} s; agent log tail:\n{tail}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stage_outcomes(&self, run_id: &str) -> Vec<(String, u32, String, Option<String>)> {
        self.orchestrator
            .operator()
            .stages(run_id)
            .await
            .unwrap()
            .into_iter()
            .map(|stage| (stage.stage, stage.attempt, stage.outcome, stage.reason))
            .collect()
    }
}

pub fn wait_exit(child: &mut Child, secs: u64) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_run_completes_and_never_writes_the_unexpected_disk() {
    if !vetting_testkit::prerequisite(vetting_testkit::loop_devices()) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let env = env("").await;
    let expected = LoopDevice::new(&env.dir.path().join("expected.img"), 33 * MIB, |_| {});
    let unexpected = LoopDevice::new(
        &env.dir.path().join("unexpected.img"),
        35 * MIB,
        known_pattern,
    );
    let before = unexpected.sha256();
    let run_id = env.start_run("whole-run", Some(33 * MIB)).await;
    let mut agent = env
        .agent(&run_id, &[&expected.device, &unexpected.device])
        .await;
    let state = env
        .wait_for(
            &run_id,
            |s| s.is_terminal() || s == RunState::FailedHolding,
            300,
        )
        .await;
    let outcomes = env.stage_outcomes(&run_id).await;
    assert_eq!(state, RunState::Completed, "{outcomes:#?}");
    // the agent hears `shutdown` and exits
    assert!(wait_exit(&mut agent, 60).is_some_and(|status| status.success()));
    // SMART, GPU and PSU cannot apply here: skipped with their reasons
    for stage in ["SMART", "GPU", "PSU"] {
        let (_, _, outcome, reason) = outcomes.iter().find(|o| o.0 == stage).unwrap();
        assert_eq!(outcome, "skipped", "{stage}: {outcomes:#?}");
        assert!(
            reason.as_deref().is_some_and(|r| !r.is_empty()),
            "{stage} has no reason"
        );
    }
    for stage in [
        "InventoryCheck",
        "SpecValidate",
        "CPUStress",
        "Storage",
        "Network",
    ] {
        let (_, _, outcome, _) = outcomes.iter().find(|o| o.0 == stage).unwrap();
        assert!(
            outcome == "passed" || outcome == "warned",
            "{stage}: {outcomes:#?}"
        );
    }
    // the unexpected disk was never written
    assert_eq!(unexpected.sha256(), before, "the unexpected disk changed");
    // both reports are there
    let reports = env.dir.path().join("data/reports");
    assert!(reports.join(format!("{run_id}.json")).exists());
    assert!(reports.join(format!("{run_id}.html")).exists());
    drop(expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wipe_probe_holds_and_an_override_completes_the_run() {
    if !vetting_testkit::prerequisite(vetting_testkit::loop_devices()) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let env = env("").await;
    for (name, size, kind) in [
        ("gpt-disk", 37 * MIB, "wipe_signatures"),
        ("data-disk", 39 * MIB, "unexpected_data"),
    ] {
        let file = env.dir.path().join(format!("{name}.img"));
        let disk = if kind == "wipe_signatures" {
            let disk = LoopDevice::new(&file, size, |_| {});
            gpt(&disk.device);
            disk
        } else {
            LoopDevice::new(&file, size, random_data)
        };
        let run_id = env.start_run(name, Some(size)).await;
        let mut agent = env.agent(&run_id, &[&disk.device]).await;
        let state = env
            .wait_for(
                &run_id,
                |s| s.is_terminal() || s == RunState::FailedHolding,
                300,
            )
            .await;
        assert_eq!(
            state,
            RunState::FailedHolding,
            "{name}: {:#?}",
            env.stage_outcomes(&run_id).await
        );
        let run = env.orchestrator.operator().get_run(&run_id).await.unwrap();
        assert_eq!(run.hold_reason.unwrap().as_str(), kind, "{name}");
        let reason = run.failure_reason.clone().unwrap_or_default();
        assert!(
            reason.contains(&disk.device) || reason.contains(kind) || reason.contains("gpt"),
            "{name}: {reason}"
        );
        // the hold lists what the probe found, each with a stable id
        let findings = env
            .orchestrator
            .operator()
            .held_findings(&run_id)
            .await
            .unwrap();
        assert!(!findings.is_empty(), "{name}: the hold lists no findings");
        assert!(
            findings
                .iter()
                .any(|finding| finding.id.contains(kind_of_finding(kind))),
            "{name}: {findings:#?}"
        );
        let ids: Vec<String> = findings.iter().map(|finding| finding.id.clone()).collect();
        // an id that is not the hold's is refused, and changes nothing
        let refused = env
            .orchestrator
            .operator()
            .override_wipe(
                &run_id,
                &Actor::operator("carol"),
                vec!["serial:NOT-THIS-DISK/gpt@0x200".into()],
            )
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("does not list"),
            "{name}: {refused}"
        );
        assert_eq!(
            env.orchestrator
                .operator()
                .get_run(&run_id)
                .await
                .unwrap()
                .version,
            run.version,
            "{name}"
        );
        // the override is recorded, Storage runs again as attempt 2
        env.orchestrator
            .operator()
            .override_wipe(&run_id, &Actor::operator("carol"), ids.clone())
            .await
            .unwrap();
        let state = env
            .wait_for(
                &run_id,
                |s| s.is_terminal() || s == RunState::FailedHolding,
                300,
            )
            .await;
        let outcomes = env.stage_outcomes(&run_id).await;
        assert_eq!(state, RunState::Completed, "{name}: {outcomes:#?}");
        let storage: Vec<_> = outcomes.iter().filter(|o| o.0 == "Storage").collect();
        assert_eq!(storage.len(), 2, "{outcomes:#?}");
        assert_eq!(storage[0].2, "held");
        assert_eq!(storage[1].1, 2);
        assert!(
            storage[1].2 == "passed" || storage[1].2 == "warned",
            "{outcomes:#?}"
        );
        let audit = env
            .orchestrator
            .operator()
            .audit_log(Some(&run_id))
            .await
            .unwrap();
        let record = audit.iter().find(|r| r.action == "override_wipe").unwrap();
        assert_eq!(record.actor, "operator:carol");
        assert_eq!(
            record.acknowledged.as_deref(),
            Some(ids.join(", ").as_str())
        );
        assert!(wait_exit(&mut agent, 60).is_some());
    }
}

/// The finding kind a hold reason's disk shows (`gpt` for the partition
/// table, `unexpected_data` for random data).
fn kind_of_finding(hold_reason: &str) -> &'static str {
    if hold_reason == "wipe_signatures" {
        "/gpt@"
    } else {
        "/unexpected_data@"
    }
}

/// A child process killed (and reaped) on drop, so a failed assertion
/// leaves no agent behind holding a loop device open.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Waits for `done` to hold, polling, at most `secs`; whether it did.
pub fn wait_until(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_mounted(mount: &Path) -> bool {
    let mount = mount.display().to_string();
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split_whitespace().nth(1) == Some(mount.as_str()))
}

/// A disk with failing sectors: a loop device (direct I/O) over
/// `disk.img` of `scripts/testing/faulty_fs.py`, a FUSE filesystem that
/// answers EIO to any read or write touching the bad ranges. Dropping it
/// tears down in the only order that cannot hang or leave strays: detach
/// the loop device and wait until the kernel has let go of the file, then
/// unmount (which ends the FUSE process), then reap the FUSE process.
struct FaultyDisk {
    fuse: Child,
    mount: PathBuf,
    device: String,
}

impl FaultyDisk {
    fn new(dir: &Path, size: u64, bad: &[(u64, u64)]) -> FaultyDisk {
        let backing = dir.join("backing.img");
        std::fs::File::create(&backing)
            .unwrap()
            .set_len(size)
            .unwrap();
        let mount = dir.join("faulty");
        std::fs::create_dir_all(&mount).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/testing/faulty_fs.py");
        let bad: Vec<String> = bad
            .iter()
            .map(|(offset, length)| format!("{offset}:{length}"))
            .collect();
        let fuse = Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(&mount)
            .args(["-f", "-o", "allow_other"])
            .env("FAULTY_BACKING", &backing)
            .env("FAULTY_BAD", bad.join(","))
            .stdin(Stdio::null())
            // not the test's own output: a FUSE process that outlived the
            // test would keep the caller's pipe open
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("faulty_fs.log")).unwrap())
            .spawn()
            .unwrap();
        let mut disk = FaultyDisk {
            fuse,
            mount,
            device: String::new(),
        };
        assert!(
            wait_until(20, || is_mounted(&disk.mount)),
            "the FUSE filesystem did not mount"
        );
        let output = Command::new("losetup")
            .args(["-f", "--show", "--direct-io=on"])
            .arg(disk.mount.join("disk.img"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        disk.device = String::from_utf8_lossy(&output.stdout).trim().to_string();
        disk
    }

    fn loop_name(&self) -> &str {
        self.device.trim_start_matches("/dev/")
    }
}

impl Drop for FaultyDisk {
    fn drop(&mut self) {
        if !self.device.is_empty() {
            let _ = Command::new("losetup").args(["-d", &self.device]).status();
            // `losetup -d` only marks a device still open for autoclear;
            // the file is let go once the last opener closes it
            let backing = format!("/sys/block/{}/loop/backing_file", self.loop_name());
            if !wait_until(30, || !Path::new(&backing).exists()) {
                eprintln!("{} is still attached", self.device);
            }
        }
        if is_mounted(&self.mount) {
            let unmounted = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mount)
                .status()
                .is_ok_and(|status| status.success());
            if !unmounted {
                // busy: detach it lazily; it goes when the last user does
                let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
            }
        }
        // the FUSE process ends when its filesystem is unmounted
        let exited = wait_until(10, || matches!(self.fuse.try_wait(), Ok(Some(_))));
        if !exited {
            let _ = self.fuse.kill();
        }
        let _ = self.fuse.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_sectors_fail_storage_and_cannot_be_overridden() {
    if !vetting_testkit::prerequisite(vetting_testkit::all_of([
        vetting_testkit::loop_devices(),
        vetting_testkit::file("/dev/fuse", "FUSE"),
        vetting_testkit::file("/usr/bin/python3", "python3 (with python3-fuse)"),
    ])) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let size = 41 * MIB;
    // 4 MiB: inside what the surface test writes (fio verifies half the
    // disk here; badblocks all of it), between two blocks the wipe probe
    // samples. 512 KiB: inside the first MiB, which the wipe probe reads.
    for (name, bad_offset, found_by) in [
        ("bad-sectors-surface", 4 * MIB, "surface test"),
        ("bad-sectors-probe", 512 * 1024, "wipe probe"),
    ] {
        let env = env("").await;
        let disk = FaultyDisk::new(env.dir.path(), size, &[(bad_offset, 4096)]);
        let run_id = env.start_run(name, Some(size)).await;
        let mut agent = KillOnDrop(env.agent(&run_id, &[&disk.device]).await);
        let state = env
            .wait_for(
                &run_id,
                |s| s.is_terminal() || s == RunState::FailedHolding,
                300,
            )
            .await;
        let outcomes = env.stage_outcomes(&run_id).await;
        assert_eq!(state, RunState::FailedHolding, "{name}: {outcomes:#?}");
        let run = env.orchestrator.operator().get_run(&run_id).await.unwrap();
        assert_eq!(run.hold_reason.unwrap().as_str(), "failure", "{name}");
        let storage: Vec<_> = outcomes.iter().filter(|o| o.0 == "Storage").collect();
        assert_eq!(storage.len(), 1, "{name}: {outcomes:#?}");
        assert_eq!(storage[0].2, "failed", "{name}: {outcomes:#?}");
        // the reason names the bad block (4 KiB blocks)
        let reason = storage[0].3.clone().unwrap_or_default();
        eprintln!("{name}: Storage failed: {reason}");
        let bad_block = (bad_offset / 4096).to_string();
        assert!(
            reason
                .split(|c: char| !c.is_ascii_digit())
                .any(|number| number == bad_block),
            "{name}: the {found_by} does not name bad block {bad_block}: {reason}"
        );
        // a bad-block failure cannot be overridden, and the refusal
        // changes nothing
        let refused = env
            .orchestrator
            .operator()
            .override_wipe(
                &run_id,
                &Actor::operator("dave"),
                vec!["wipe anyway".into()],
            )
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("cannot be overridden"),
            "{name}: {refused}"
        );
        let after = env.orchestrator.operator().get_run(&run_id).await.unwrap();
        assert_eq!(after.state, RunState::FailedHolding, "{name}");
        assert_eq!(after.version, run.version, "{name}");
        assert_eq!(env.stage_outcomes(&run_id).await, outcomes, "{name}");
        env.orchestrator
            .operator()
            .release(&run_id, &Actor::operator("dave"), None)
            .await
            .unwrap();
        assert!(
            wait_exit(&mut agent.0, 60).is_some(),
            "{name}: the agent did not exit after the release"
        );
        drop(agent);
        drop(disk);
        assert!(
            !is_mounted(&env.dir.path().join("faulty")),
            "{name}: still mounted"
        );
    }
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
        else {
            continue;
        };
        if pid == std::process::id().to_string() {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) && !text.contains("vetting-agent") {
                found.push(format!("{pid}: {text}"));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_stress_shuts_the_agent_down_and_leaves_no_tool() {
    if !vetting_testkit::prerequisite(vetting_testkit::loop_devices()) {
        return;
    }
    let _serial = SERIAL.lock().await;
    // a long stress stage, so the cancel lands in it
    let env = env_with(120, "").await;
    let run_id = env.start_run("cancel-in-stress", None).await;
    let mut agent = env.agent(&run_id, &["none"]).await;
    env.wait_for(
        &run_id,
        |s| s == RunState::CPUStress || s.is_terminal(),
        120,
    )
    .await;
    let work = env.dir.path().join(format!("agent-{run_id}"));
    let needle = "stress-ng";
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_mentioning(needle).is_empty() {
        assert!(Instant::now() < deadline, "stress-ng never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    env.orchestrator
        .operator()
        .cancel(&run_id, &Actor::operator("erin"), Some("wrong rack".into()))
        .await
        .unwrap();
    let status = wait_exit(&mut agent, 60);
    assert!(status.is_some(), "the agent did not shut down after cancel");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_mentioning(needle);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "tools left running: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        env.orchestrator
            .operator()
            .get_run(&run_id)
            .await
            .unwrap()
            .state,
        RunState::Cancelled
    );
    let _ = work;
}

/// What the agent says it emitted, from its last summary line
/// (`emitted N log lines and M sensor samples`).
fn agent_emitted(log: &str) -> Option<(u64, u64)> {
    let line = log.lines().rev().find(|line| line.contains("emitted "))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let index = words.iter().position(|w| *w == "emitted")?;
    let lines = words.get(index + 1)?.parse().ok()?;
    let samples_index = words.iter().position(|w| *w == "and")?;
    let samples = words.get(samples_index + 1)?.parse().ok()?;
    Some((lines, samples))
}

/// A sysfs root for the agent: the real `/sys` through symlinks, but for
/// `class/hwmon`, which holds one coretemp chip (a package and two cores)
/// and a fan, so that the thermal sidecar has readings to send.
fn sys_root_with_sensors(folder: &Path) -> PathBuf {
    let root = folder.join("sys");
    let class = root.join("class");
    std::fs::create_dir_all(&class).unwrap();
    for (real, fake) in [("/sys", &root), ("/sys/class", &class)] {
        for entry in std::fs::read_dir(real).unwrap() {
            let name = entry.unwrap().file_name();
            if name != "class" && name != "hwmon" {
                std::os::unix::fs::symlink(Path::new(real).join(&name), fake.join(&name)).unwrap();
            }
        }
    }
    let chip = class.join("hwmon/hwmon0");
    std::fs::create_dir_all(&chip).unwrap();
    std::fs::write(chip.join("name"), "coretemp\n").unwrap();
    for (n, label, millidegrees) in [
        (1, "Package id 0", 47_000),
        (2, "Core 0", 45_000),
        (3, "Core 1", 46_000),
    ] {
        for (file, text) in [
            ("label", label.to_string()),
            ("input", millidegrees.to_string()),
            ("max", "90000".into()),
            ("crit", "100000".into()),
        ] {
            std::fs::write(chip.join(format!("temp{n}_{file}")), format!("{text}\n")).unwrap();
        }
    }
    let fans = class.join("hwmon/hwmon1");
    std::fs::create_dir_all(&fans).unwrap();
    std::fs::write(fans.join("name"), "nct6775\n").unwrap();
    std::fs::write(fans.join("fan1_input"), "1500\n").unwrap();
    root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_orchestrator_loses_and_duplicates_nothing() {
    if !vetting_testkit::prerequisite(vetting_testkit::loop_devices()) {
        return;
    }
    sigkilled_orchestrator("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_orchestrator_loses_and_duplicates_nothing_on_postgresql() {
    if !vetting_testkit::prerequisite(vetting_testkit::loop_devices()) {
        return;
    }
    // a database of its own on the test server (vetting-core's helper)
    let Some(database) = crate::support::postgres_db().await else {
        return;
    };
    sigkilled_orchestrator(&format!("database_url: \"{}\"\n", database.url)).await;
}

/// The crash test on the database `extra_config` names (SQLite without).
async fn sigkilled_orchestrator(extra_config: &str) {
    let _serial = SERIAL.lock().await;
    let mut env = env_with(8, extra_config).await;
    let disk = LoopDevice::new(&env.dir.path().join("crash.img"), 43 * MIB, |_| {});
    let run_id = env.start_run("crash-safety", Some(43 * MIB)).await;
    let sys_root = sys_root_with_sensors(env.dir.path());
    let mut agent = KillOnDrop(
        env.agent_with(
            &run_id,
            &[&disk.device],
            &["--sys-root", sys_root.to_str().unwrap()],
        )
        .await,
    );
    // kill the orchestrator at pseudo-random moments and restart it on the
    // same database and port: three times before Storage (log lines,
    // sensor readings and results on the wire; the 8 s stress stage leaves
    // room for all three), once while the agent's iperf3 client is
    // measuring against the orchestrator's iperf3 server (which dies with
    // it), then until the run ends. A new seed each run, printed;
    // VETTING_TEST_SEED=N replays one.
    let mut seed: u64 = std::env::var("VETTING_TEST_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        .max(1);
    eprintln!("crash-safety: VETTING_TEST_SEED={seed}");
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let ended = |state: RunState| state.is_terminal() || state == RunState::FailedHolding;
    let mut kills = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300 + next() % 1500)).await;
        let state = env
            .orchestrator
            .operator()
            .get_run(&run_id)
            .await
            .unwrap()
            .state;
        if ended(state) || state >= RunState::Storage {
            break;
        }
        env.server.kill();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(200 + next() % 600)).await;
        env.server.start();
    }
    // during a measurement of the Network stage: the upload or the
    // download (`-R`), 1 s each
    let client = format!("iperf3 -J -c 127.0.0.1 -p {} ", env.iperf_port);
    let download = next() % 2 == 0;
    let mut killed_in_network = false;
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        let state = env
            .orchestrator
            .operator()
            .get_run(&run_id)
            .await
            .unwrap()
            .state;
        if ended(state) || state > RunState::Network {
            break;
        }
        let measuring = processes_mentioning(&client)
            .iter()
            .any(|line| line.contains(" -R") == download);
        if measuring {
            // within the measurement: iperf3 -t 1 sends for a second
            tokio::time::sleep(Duration::from_millis(next() % 900)).await;
            env.server.kill();
            kills += 1;
            killed_in_network = true;
            tokio::time::sleep(Duration::from_millis(200 + next() % 600)).await;
            env.server.start();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        killed_in_network,
        "the run left the Network stage before it could be killed there: {:#?}",
        env.stage_outcomes(&run_id).await
    );
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(100 + next() % 1000)).await;
        let state = env
            .orchestrator
            .operator()
            .get_run(&run_id)
            .await
            .unwrap()
            .state;
        if ended(state) {
            break;
        }
        env.server.kill();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(200 + next() % 600)).await;
        env.server.start();
    }
    assert!(
        kills >= 3,
        "the run ended before the orchestrator was killed enough ({kills})"
    );
    let state = env
        .wait_for(
            &run_id,
            |s| s.is_terminal() || s == RunState::FailedHolding,
            400,
        )
        .await;
    assert_eq!(
        state,
        RunState::Completed,
        "{:#?}",
        env.stage_outcomes(&run_id).await
    );
    assert!(wait_exit(&mut agent.0, 60).is_some());
    let run = env.orchestrator.operator().get_run(&run_id).await.unwrap();

    // every log line exactly once, no gap
    let lines = vetting_core::runlogs::read_run(&env.dir.path().join("data"), &run_id).unwrap();
    let seqs: Vec<u64> = lines.iter().map(|line| line.seq).collect();
    let expected: Vec<u64> = (0..run.next_log_seq as u64).collect();
    assert_eq!(seqs, expected, "log lines lost or duplicated");
    // every reading exactly once, no gap
    let readings = env
        .orchestrator
        .operator()
        .sensor_sequence_numbers(&run_id)
        .await
        .unwrap();
    let expected: Vec<i64> = (0..run.next_sensor_seq).collect();
    assert_eq!(readings, expected, "readings lost or duplicated");
    // the sensor tree's readings flowed (the comparison below is not of two
    // empty sets): the stress stage alone reads it every second for 8 s
    assert!(
        readings.len() >= 8,
        "only {} readings were stored",
        readings.len()
    );
    // and it is everything the agent emitted
    let agent_log = std::fs::read_to_string(
        env.dir
            .path()
            .join(format!("agent-{run_id}"))
            .join("agent.log"),
    )
    .unwrap();
    // the interrupted measurement was tried again, not failed
    assert!(
        agent_log
            .lines()
            .any(|line| line.contains("iperf3: ") && line.contains("trying again")),
        "no iperf3 measurement was interrupted and tried again"
    );
    let (emitted_lines, emitted_samples) =
        agent_emitted(&agent_log).expect("the agent's summary line");
    let tail: Vec<&str> = agent_log.lines().rev().take(40).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    let tail = tail.join("\n");
    assert_eq!(
        (emitted_lines, emitted_samples),
        (run.next_log_seq as u64, run.next_sensor_seq as u64),
        "(log lines, readings) the agent emitted vs those stored; agent log tail:\n{tail}"
    );
    assert!(emitted_lines > 0);
    assert!(emitted_samples > 0);
}

#[test]
fn vetting_demo_completes_with_both_reports() {
    if !vetting_testkit::prerequisite(vetting_testkit::loop_devices()) {
        return;
    }
    let _serial = SERIAL.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(VETTING)
        .args(["demo", "--stress-secs", "3", "--timeout-secs", "300"])
        .current_dir(dir.path())
        .env_remove("VETTING_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("final state: Completed"), "{stdout}");
    for label in ["report (HTML): ", "report (JSON): "] {
        let path = stdout
            .lines()
            .find_map(|line| line.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label} in {stdout}"));
        let path = dir.path().join(path);
        assert!(path.exists(), "{} is missing", path.display());
    }
}
