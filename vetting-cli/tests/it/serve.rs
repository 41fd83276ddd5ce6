//! `vetting serve`, `config check` and `db migrate`: serve in an empty folder
//! with no config answers `/healthz`; a config with a bad key or value fails
//! naming it; `db migrate` creates the schema.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VETTING: &str = env!("CARGO_BIN_EXE_vetting");

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `vetting serve` and returns it with the URL it printed.
fn serve(dir: &std::path::Path, extra: &[&str]) -> (Server, String) {
    let mut child = Command::new(VETTING)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .current_dir(dir)
        .env_remove("VETTING_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().unwrap().unwrap();
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    (Server(child), url)
}

#[tokio::test]
async fn serve_in_an_empty_folder_answers_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = serve(dir.path(), &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        match reqwest::get(format!("{url}/healthz")).await {
            Ok(response) if response.status().is_success() => break response.text().await.unwrap(),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("no /healthz: {other:?}"),
        }
    };
    assert_eq!(body.trim(), "ok");
    // the embedded default: ./data with the database and the secret key
    assert!(dir.path().join("data/vetting.db").exists());
    let key = dir.path().join("data/secret.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn a_bad_config_key_or_value_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vetting.yaml");
    for (text, key) in [
        (
            "dispatcher:\n  max_in_flite: 2\n",
            "dispatcher.max_in_flite",
        ),
        ("deadlines:\n  boot_secs: soon\n", "deadlines.boot_secs"),
        ("listen: not-an-address\n", "listen"),
        ("pxe:\n  enabled: true\n", "pxe.interface"),
        (
            "pxe:\n  enabled: true\n  interface: br0\n  dhcp:\n    mode: sideways\n",
            "pxe",
        ),
        ("boot:\n  kernel: ../../etc/passwd\n", "boot.kernel"),
    ] {
        std::fs::write(&file, text).unwrap();
        for args in [
            vec!["config", "check", file.to_str().unwrap()],
            vec!["--config", file.to_str().unwrap(), "serve"],
        ] {
            let output = Command::new(VETTING)
                .args(&args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(!output.status.success(), "{args:?} with {text:?} succeeded");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains(key), "{args:?}: {stderr}");
            assert!(stderr.contains("vetting.yaml"), "{args:?}: {stderr}");
        }
    }
    std::fs::write(&file, "dispatcher:\n  max_in_flight: 5\n").unwrap();
    let output = Command::new(VETTING)
        .args(["config", "check", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("max_in_flight: 5"));
}

#[test]
fn db_migrate_creates_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(VETTING)
        .args(["db", "migrate"])
        .current_dir(dir.path())
        .env_remove("VETTING_CONFIG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("schema version"));
    assert!(dir.path().join("data/vetting.db").exists());
}

/// A network namespace with bridge `br0` at 10.66.0.1/24, deleted on drop.
struct LanNamespace(String);

impl LanNamespace {
    fn new() -> Option<Self> {
        let name = format!("vtserve{}", std::process::id());
        let missing = match Command::new("ip").args(["netns", "add", &name]).output() {
            Ok(output) if output.status.success() => None,
            Ok(output) => Some(format!(
                "network namespaces (`ip netns add` failed: {})",
                String::from_utf8_lossy(&output.stderr).trim()
            )),
            Err(error) => Some(format!("iproute2 `ip` ({error})")),
        };
        if !vetting_testkit::prerequisite(missing) {
            return None;
        }
        let namespace = LanNamespace(name);
        for arguments in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "add", "br0", "type", "bridge"],
            vec!["addr", "add", "10.66.0.1/24", "dev", "br0"],
            vec!["link", "set", "br0", "up"],
        ] {
            let status = Command::new("ip")
                .args(["-n", &namespace.0])
                .args(&arguments)
                .status()
                .unwrap();
            assert!(status.success(), "ip {arguments:?}");
        }
        Some(namespace)
    }
}

impl Drop for LanNamespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The children of `pid` named `name`.
fn children_named(pid: u32, name: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let comm = head.split_once(" (").map(|(_, comm)| comm).unwrap_or("");
        let parent = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if comm == name && parent == Some(pid) {
            found.push(child);
        }
    }
    found
}

fn process_is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // a zombie waiting for its (dead) parent's reaper is gone too
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[test]
fn serve_with_pxe_enabled_runs_dnsmasq_serves_ipxe_and_dies_with_it() {
    if !vetting_testkit::prerequisite(vetting_testkit::root()) {
        return;
    }
    let Some(namespace) = LanNamespace::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vetting.yaml");
    std::fs::write(
        &file,
        "listen: 10.66.0.1:8080\n\
         public_url: http://10.66.0.1:8080\n\
         iperf:\n  enabled: false\n\
         pxe:\n  enabled: true\n  interface: br0\n  dhcp:\n    mode: proxy\n    subnet: 10.66.0.0\n",
    )
    .unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &namespace.0, VETTING, "--config"])
        .arg(&file)
        .arg("serve")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        printed.push(line.clone());
        if line.contains("http://") {
            break;
        }
    }
    let mut server = Server(child);
    assert!(
        printed
            .iter()
            .any(|line| line.contains("serving PXE (dnsmasq) on br0")),
        "{printed:?}"
    );
    // `ip netns exec` execs vetting: the child's pid is the orchestrator's
    let orchestrator = server.0.id();
    let dnsmasq = children_named(orchestrator, "dnsmasq");
    assert_eq!(dnsmasq.len(), 1, "one dnsmasq under the orchestrator");
    let config = std::fs::read_to_string(dir.path().join("data/pxe/dnsmasq.conf")).unwrap();
    assert!(
        config.contains("interface=br0") && config.contains("proxy"),
        "{config}"
    );

    // /ipxe is served with the client's address: an unknown MAC exits
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            &namespace.0,
            "curl",
            "-s",
            "--max-time",
            "10",
            "http://10.66.0.1:8080/ipxe/52:54:00:12:34:56?platform=efi",
        ])
        .output()
        .unwrap();
    let script = String::from_utf8_lossy(&output.stdout);
    assert!(
        script.starts_with("#!ipxe") && script.contains("\nexit 1\n"),
        "{script}"
    );

    // SIGKILL the orchestrator: dnsmasq goes with it
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dnsmasq.iter().all(|pid| process_is_gone(*pid)) {
        assert!(
            Instant::now() < deadline,
            "dnsmasq {dnsmasq:?} outlived the orchestrator"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
