//! Network namespaces for tests, processes in them, and waiting on
//! conditions. Shared by the PXE and power tests of vetting-core and the
//! `/ipxe` tests of vetting-http (through `#[path]`).
#![allow(dead_code)]
use std::future::Future;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Whether namespaces can be made here (`vetting_testkit::prerequisite`:
/// skipped visibly, or a failure under `VETTING_REQUIRE_ALL=1`). Also sends
/// `tracing` output (dnsmasq's log among it) to the test's output.
pub fn netns_available() -> bool {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("vetting=debug")),
        )
        .try_init();
    if !vetting_testkit::prerequisite(vetting_testkit::root()) {
        return false;
    }
    let missing = match Command::new("ip").args(["netns", "list"]).output() {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!(
            "network namespaces (`ip netns` does not work here: {})",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => Some(format!("iproute2 `ip` ({error})")),
    };
    vetting_testkit::prerequisite(missing)
}

/// Runs a command to completion; panics with its stderr when it fails.
pub fn run(program: &str, arguments: &[&str]) -> String {
    let output = Command::new(program)
        .args(arguments)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        arguments.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A network namespace, deleted on drop.
pub struct Namespace {
    pub name: String,
}

impl Namespace {
    /// A new namespace with its loopback up; `label` keeps names readable.
    pub fn new(label: &str) -> Self {
        let name = format!(
            "vt{}-{}-{label}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::SeqCst)
        );
        run("ip", &["netns", "add", &name]);
        let namespace = Self { name };
        namespace.ip(&["link", "set", "lo", "up"]);
        namespace
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, arguments: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(arguments);
        run("ip", &all);
    }

    /// A command run inside this namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .arg(program)
            .kill_on_drop(true);
        command
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A LAN: the orchestrator's namespace with bridge `br0`
/// (10.66.0.1/24, fd66::1/64) and member namespaces plugged into it.
pub struct Lan {
    pub members: Vec<Namespace>,
    pub orchestrator: Namespace,
}

impl Lan {
    pub fn new() -> Self {
        let orchestrator = Namespace::new("orch");
        orchestrator.ip(&["link", "add", "br0", "type", "bridge"]);
        orchestrator.ip(&["addr", "add", "10.66.0.1/24", "dev", "br0"]);
        orchestrator.ip(&["addr", "add", "fd66::1/64", "dev", "br0", "nodad"]);
        orchestrator.ip(&["link", "set", "br0", "up"]);
        Self {
            members: Vec::new(),
            orchestrator,
        }
    }

    /// A member namespace whose interface `lan0` (with this MAC and
    /// address, if given) is plugged into `br0`. Returns its index.
    pub fn add_member(&mut self, label: &str, mac: Option<&str>, address: Option<&str>) -> usize {
        let member = Namespace::new(label);
        let port = format!("port{}", self.members.len());
        run(
            "ip",
            &[
                "link",
                "add",
                &port,
                "netns",
                &self.orchestrator.name,
                "type",
                "veth",
                "peer",
                "name",
                "lan0",
                "netns",
                &member.name,
            ],
        );
        self.orchestrator
            .ip(&["link", "set", &port, "master", "br0", "up"]);
        if let Some(mac) = mac {
            member.ip(&["link", "set", "lan0", "address", mac]);
        }
        if let Some(address) = address {
            member.ip(&["addr", "add", address, "dev", "lan0"]);
        }
        member.ip(&["link", "set", "lan0", "up"]);
        self.members.push(member);
        self.members.len() - 1
    }

    /// A tap device on `br0` for a VM.
    pub fn add_tap(&self, name: &str) {
        self.orchestrator
            .ip(&["tuntap", "add", name, "mode", "tap"]);
        self.orchestrator
            .ip(&["link", "set", name, "master", "br0", "up"]);
    }
}

/// Runs `body` on a thread inside the namespace: sockets it creates and
/// processes it starts (and threads it spawns) live in that namespace.
pub fn in_netns<T: Send + 'static>(
    namespace: &str,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let path = Path::new("/run/netns").join(namespace);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        body()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Runs a future on a current-thread tokio runtime inside the namespace.
pub fn block_on_in_netns<F, Fut>(namespace: &str, make_future: F) -> Fut::Output
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future,
    Fut::Output: Send + 'static,
{
    in_netns(namespace, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(make_future())
    })
}

/// Polls `condition` every 100 ms until it holds; panics after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
