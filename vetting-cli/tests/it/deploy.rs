//! `deploy/`: the example config lists every key of the config with its
//! default and `vetting config check` accepts it; the systemd unit passes
//! `systemd-analyze verify` and keeps its hardening, and its three
//! capabilities are what dnsmasq needs (as `nobody` with only them, in a
//! network namespace, `vetting serve` hands a registered host a lease and
//! the iPXE binary over TFTP; without any one of them it refuses to start,
//! saying which); `install.sh` stages
//! the same files twice without touching an edited config; the Debian
//! package (`scripts/build-deb.sh` over this build's binaries) installs,
//! serves `/healthz` from the installed binary and config, and purges
//! without a trace (`scripts/test-deb.sh`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use vetting_core::config::Config;

const VETTING: &str = env!("CARGO_BIN_EXE_vetting");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn repo(path: &str) -> PathBuf {
    Path::new(ROOT).join(path)
}

/// Every key path of a config tree (`dispatcher.max_in_flight`), with its
/// value; a section is a path too.
fn key_paths(value: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    if let Value::Object(map) = value {
        for (key, inner) in map {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            out.insert(path.clone(), inner.clone());
            key_paths(inner, &path, out);
        }
    }
}

fn paths_of(value: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    key_paths(value, "", &mut out);
    out
}

/// The keys of the config struct missing from `example`, and the keys of
/// `example` the struct does not have.
fn key_differences(example_yaml: &str) -> (Vec<String>, Vec<String>) {
    let example: Value = serde_norway::from_str(example_yaml).unwrap();
    let defaults = serde_json::to_value(Config::default()).unwrap();
    let in_example = paths_of(&example);
    let in_struct = paths_of(&defaults);
    let missing = in_struct
        .keys()
        .filter(|path| !in_example.contains_key(*path))
        .cloned()
        .collect();
    let unknown = in_example
        .keys()
        .filter(|path| !in_struct.contains_key(*path))
        .cloned()
        .collect();
    (missing, unknown)
}

/// The one key the example sets to something else than the default: the
/// package's data folder (the unit's StateDirectory).
const DEPLOYED: [(&str, &str); 1] = [("data_dir", "/var/lib/vetting")];

fn load(text: &str) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, text).unwrap();
    Config::load_with_env(Some(&file), std::iter::empty()).map_err(|error| format!("{error:#}"))
}

#[test]
fn the_example_config_lists_every_key_with_its_default() {
    let text = std::fs::read_to_string(repo("deploy/config.example.yaml")).unwrap();
    let (missing, unknown) = key_differences(&text);
    assert!(
        missing.is_empty(),
        "keys of the config missing from deploy/config.example.yaml: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "keys in deploy/config.example.yaml that the config does not have: {unknown:?}"
    );

    // every value is the default, but the deployed data folder
    let loaded = serde_json::to_value(load(&text).unwrap()).unwrap();
    let mut expected = serde_json::to_value(Config::default()).unwrap();
    for (key, value) in DEPLOYED {
        assert_ne!(
            expected[key], value,
            "{key} is the default: drop it from DEPLOYED"
        );
        expected[key] = value.into();
    }
    let loaded_paths = paths_of(&loaded);
    for (path, value) in paths_of(&expected) {
        assert_eq!(
            loaded_paths.get(&path),
            Some(&value),
            "deploy/config.example.yaml sets `{path}` to something else than its default"
        );
    }
    // every key has a comment above it or is in a commented section
    let mut comment_before = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            comment_before = true;
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        let indent = line.len() - trimmed.len();
        // top-level keys and sections each have their comment
        if indent == 0 {
            assert!(comment_before, "no comment above `{line}`");
        }
        comment_before = false;
    }

    // the checks above find a key taken out, and loading refuses a key
    // the config does not have, naming it
    let without = text.replace("  max_connections: 4096\n", "");
    assert_eq!(key_differences(&without).0, ["http.max_connections"]);
    let misspelt = text.replace("  max_connections: 4096\n", "  max_conections: 4096\n");
    assert_eq!(key_differences(&misspelt).1, ["http.max_conections"]);
    let error = load(&misspelt).unwrap_err();
    assert!(error.contains("http.max_conections"), "{error}");
}

#[test]
fn vetting_config_check_accepts_the_example_config() {
    let output = Command::new(VETTING)
        .args(["config", "check"])
        .arg(repo("deploy/config.example.yaml"))
        .env_remove("VETTING_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("config.example.yaml is valid"), "{stdout}");
    assert!(stdout.contains("/var/lib/vetting"), "{stdout}");
}

/// `Key=value` lines of a unit file, every value of a repeated key.
fn unit_settings(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with('[') || line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once('=').unwrap();
        settings
            .entry(key.to_string())
            .or_default()
            .push(value.to_string());
    }
    settings
}

#[test]
fn the_systemd_unit_verifies_and_keeps_its_hardening() {
    let text = std::fs::read_to_string(repo("deploy/vetting.service")).unwrap();
    let settings = unit_settings(&text);
    let one = |key: &str| -> &str {
        let values = settings
            .get(key)
            .unwrap_or_else(|| panic!("{key} is not set"));
        assert_eq!(values.len(), 1, "{key}: {values:?}");
        &values[0]
    };
    assert_eq!(
        one("ExecStart"),
        "/usr/bin/vetting serve --config /etc/vetting/config.yaml"
    );
    assert_eq!(one("User"), "vetting");
    assert_eq!(one("StateDirectory"), "vetting");
    assert_eq!(one("ReadWritePaths"), "/var/lib/vetting");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("ProtectHome"), "yes");
    assert_eq!(one("PrivateTmp"), "yes");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("SystemCallFilter"), "@system-service");
    // the capabilities dnsmasq needs for DHCP and TFTP, and no more
    let capabilities = "CAP_NET_BIND_SERVICE CAP_NET_RAW CAP_NET_ADMIN";
    assert_eq!(one("CapabilityBoundingSet"), capabilities);
    assert_eq!(one("AmbientCapabilities"), capabilities);
    assert!(one("RestrictAddressFamilies").starts_with("AF_UNIX AF_INET AF_INET6"));

    if !vetting_testkit::prerequisite(vetting_testkit::program("systemd-analyze")) {
        return;
    }
    // verify checks that ExecStart's program exists: this build's binary
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("vetting.service");
    std::fs::write(&unit, text.replace("/usr/bin/vetting", VETTING)).unwrap();
    let verify = |unit: &Path| {
        let output = Command::new("systemd-analyze")
            .arg("verify")
            .arg(unit)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), said)
    };
    let (ok, said) = verify(&unit);
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    // it speaks up about a bad setting (a warning, exit status 0)
    let bad = dir.path().join("bad.service");
    std::fs::write(
        &bad,
        text.replace("/usr/bin/vetting", VETTING)
            .replace("ProtectSystem=strict", "ProtectSystem=stricter"),
    )
    .unwrap();
    let (_, said) = verify(&bad);
    assert!(
        said.contains("bad.service") && said.contains("stricter"),
        "{said}"
    );
}

fn agent_binary() -> PathBuf {
    let path = PathBuf::from(VETTING).with_file_name("vetting-agent");
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo test --workspace builds it)",
        path.display()
    );
    path
}

fn files_under(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let metadata = std::fs::symlink_metadata(&path).unwrap();
            if metadata.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(root).unwrap().display().to_string();
                let content = if relative.starts_with("usr/bin/") {
                    Vec::new()
                } else {
                    std::fs::read(&path).unwrap()
                };
                out.insert(relative, (metadata.permissions().mode() & 0o7777, content));
            }
        }
    }
    out
}

#[test]
fn install_sh_stages_the_same_files_twice_and_keeps_an_edited_config() {
    let bin_dir = agent_binary().parent().unwrap().to_path_buf();
    let stage = tempfile::tempdir().unwrap();
    let install = || {
        let output = Command::new(repo("deploy/install.sh"))
            .env("DESTDIR", stage.path())
            .env("BIN_DIR", &bin_dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    install();
    let first = files_under(stage.path());
    let names: Vec<&str> = first.keys().map(String::as_str).collect();
    for expected in [
        "etc/vetting/config.yaml",
        "lib/systemd/system/vetting.service",
        "usr/bin/vetting",
        "usr/bin/vetting-agent",
        "usr/share/doc/vetting/config.example.yaml",
        "usr/share/doc/vetting/operator-guide.md",
    ] {
        assert!(names.contains(&expected), "{expected} not in {names:?}");
    }
    assert_eq!(first["usr/bin/vetting"].0, 0o755);
    assert_eq!(first["etc/vetting/config.yaml"].0, 0o640);
    assert_eq!(
        first["etc/vetting/config.yaml"].1,
        std::fs::read(repo("deploy/config.example.yaml")).unwrap()
    );

    // again, over an operator's config: the same tree, the config kept
    let config = stage.path().join("etc/vetting/config.yaml");
    std::fs::write(&config, "listen: 10.66.0.1:8080\n").unwrap();
    install();
    let mut second = files_under(stage.path());
    assert_eq!(
        second["etc/vetting/config.yaml"].1,
        b"listen: 10.66.0.1:8080\n"
    );
    second.insert(
        "etc/vetting/config.yaml".into(),
        first["etc/vetting/config.yaml"].clone(),
    );
    assert_eq!(first, second);

    // a missing binary is named, nothing is installed
    let empty = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let output = Command::new(repo("deploy/install.sh"))
        .env("DESTDIR", elsewhere.path())
        .env("BIN_DIR", empty.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("vetting is missing"));
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

#[test]
fn the_debian_package_installs_serves_healthz_and_purges() {
    if !vetting_testkit::prerequisite(vetting_testkit::all_of([
        vetting_testkit::root(),
        vetting_testkit::program("dpkg-deb"),
        vetting_testkit::program("systemd-analyze"),
        vetting_testkit::program("setpriv"),
        vetting_testkit::program("curl"),
        vetting_testkit::program("objdump"),
    ])) {
        return;
    }
    // the package of this build's binaries (a release package takes
    // minutes to build: `scripts/build-deb.sh` alone makes that one)
    let bin_dir = agent_binary().parent().unwrap().to_path_buf();
    let out = tempfile::tempdir().unwrap();
    let built = Command::new(repo("scripts/build-deb.sh"))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let package = String::from_utf8_lossy(&built.stdout).trim().to_string();
    assert!(package.ends_with("_amd64.deb"), "{package}");
    let contents = Command::new("dpkg-deb")
        .args(["--contents", &package])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&contents.stdout);
    for path in [
        "./usr/bin/vetting",
        "./usr/bin/vetting-agent",
        "./lib/systemd/system/vetting.service",
        "./etc/vetting/config.yaml",
        "./usr/share/doc/vetting/copyright",
    ] {
        assert!(listing.contains(path), "{path} not in {listing}");
    }

    let tested = Command::new(repo("scripts/test-deb.sh"))
        .arg(&package)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&tested.stdout),
        String::from_utf8_lossy(&tested.stderr)
    );
    assert!(tested.status.success(), "{said}");
    assert!(said.contains("/healthz: ok"), "{said}");
    assert!(said.contains("test-deb.sh: ok"), "{said}");
    assert!(!Path::new("/usr/bin/vetting").exists());
    assert!(!Path::new("/var/lib/vetting").exists());
}

/// A network namespace, deleted on drop.
struct Namespace(String);

impl Namespace {
    fn new(label: &str) -> Self {
        let name = format!("vtdeploy{}-{label}", std::process::id());
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Namespace(name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(arguments: &[&str]) -> String {
    let output = Command::new("ip").args(arguments).output().unwrap();
    assert!(
        output.status.success(),
        "ip {arguments:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `vetting serve` with PXE on, as `nobody` with only `capabilities`,
/// inside `namespace`; killed on drop.
struct Serve {
    child: std::process::Child,
    stderr: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(namespace: &str, config: &Path, capabilities: &str, stderr: PathBuf) -> Serve {
        let child = Command::new("ip")
            .args(["netns", "exec", namespace, "setpriv"])
            .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups"])
            .arg(format!("--inh-caps=-all,{capabilities}"))
            .arg(format!("--ambient-caps=-all,{capabilities}"))
            .arg(format!("--bounding-set=-all,{capabilities}"))
            .args(["--no-new-privs", "--", VETTING, "--config"])
            .arg(config)
            .arg("serve")
            .current_dir("/")
            .env_remove("VETTING_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Serve { child, stderr }
    }

    /// `Ok(())` once it serves PXE, or its stderr when it exits instead.
    fn serving(&mut self) -> Result<(), String> {
        use std::io::BufRead;
        let stdout = self.child.stdout.take().unwrap();
        // stdout closes when it exits: the lines end
        for line in std::io::BufReader::new(stdout).lines() {
            if line.unwrap().contains("serving PXE (dnsmasq) on lan0") {
                return Ok(());
            }
        }
        let _ = self.child.wait();
        Err(std::fs::read_to_string(&self.stderr).unwrap())
    }
}

fn uid_of(name: &str) -> u32 {
    let output = Command::new("id").args(["-u", name]).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

fn chown_all(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_all(&entry.unwrap().path(), uid);
        }
    }
}

/// The unit's capabilities as setpriv names them: `+net_raw,...`.
fn unit_capabilities() -> Vec<String> {
    let text = std::fs::read_to_string(repo("deploy/vetting.service")).unwrap();
    unit_settings(&text)["AmbientCapabilities"][0]
        .split_whitespace()
        .map(|capability| {
            format!(
                "+{}",
                capability.strip_prefix("CAP_").unwrap().to_lowercase()
            )
        })
        .collect()
}

#[tokio::test]
async fn the_units_capabilities_let_dnsmasq_serve_dhcp_and_tftp_unprivileged_and_each_is_needed() {
    if !vetting_testkit::prerequisite(vetting_testkit::all_of([
        vetting_testkit::root(),
        vetting_testkit::program("dnsmasq"),
        vetting_testkit::program("busybox"),
        vetting_testkit::program("setpriv"),
        vetting_testkit::file("/usr/lib/ipxe/undionly.kpxe", "iPXE (package ipxe)"),
    ])) {
        return;
    }
    let server_side = Namespace::new("srv");
    let host_side = Namespace::new("host");
    ip(&[
        "link",
        "add",
        "lan0",
        "netns",
        &server_side.0,
        "type",
        "veth",
        "peer",
        "name",
        "lan0",
        "netns",
        &host_side.0,
    ]);
    ip(&[
        "-n",
        &server_side.0,
        "addr",
        "add",
        "10.99.0.1/24",
        "dev",
        "lan0",
    ]);
    ip(&["-n", &server_side.0, "link", "set", "lan0", "up"]);
    ip(&["-n", &host_side.0, "link", "set", "lan0", "up"]);
    let link = ip(&["-n", &host_side.0, "-o", "link", "show", "lan0"]);
    let mac = link
        .split_whitespace()
        .skip_while(|word| *word != "link/ether")
        .nth(1)
        .unwrap()
        .to_string();

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "data_dir: {}\nlisten: 10.99.0.1:8080\niperf:\n  enabled: false\npxe:\n  enabled: true\n  \
             interface: lan0\n  other_server_probe_seconds: 1\n  dhcp: {{mode: full, range_start: \
             10.99.0.100, range_end: 10.99.0.150, netmask: 255.255.255.0, lease_seconds: 600}}\n",
            data.display()
        ),
    )
    .unwrap();
    // the host, registered through the library; then the data is nobody's
    {
        let loaded = Config::load_with_env(Some(&config), std::iter::empty()).unwrap();
        let orchestrator = vetting_core::orchestrator::Orchestrator::open(
            loaded,
            std::sync::Arc::new(vetting_core::clock::SystemClock),
        )
        .await
        .unwrap();
        orchestrator
            .operator()
            .register_host(
                vetting_core::model::NewHost {
                    name: "capabilities-host".into(),
                    macs: vec![mac.clone()],
                    ..Default::default()
                },
                &vetting_core::model::Actor::operator("deploy-test"),
            )
            .await
            .unwrap();
    }
    chown_all(&data, uid_of("nobody"));

    let capabilities = unit_capabilities();
    assert_eq!(
        capabilities,
        ["+net_bind_service", "+net_raw", "+net_admin"]
    );
    // each left out: the start fails, saying why
    for (index, left_out) in capabilities.iter().enumerate() {
        let mut fewer = capabilities.clone();
        fewer.remove(index);
        let mut serve = Serve::start(
            &server_side.0,
            &config,
            &fewer.join(","),
            dir.path().join(format!("without-{index}.err")),
        );
        let error = serve
            .serving()
            .expect_err(&format!("vetting served PXE without {left_out}"));
        let expected = match left_out.as_str() {
            // the other-DHCP-server probe binds port 68 first
            "+net_bind_service" => "Permission denied",
            "+net_raw" => "missing required capability NET_RAW",
            _ => "missing required capability NET_ADMIN",
        };
        assert!(error.contains(expected), "without {left_out}: {error}");
    }

    // all three: a lease with the boot file, TFTP, the agent API
    let mut serve = Serve::start(
        &server_side.0,
        &config,
        &capabilities.join(","),
        dir.path().join("serve.err"),
    );
    serve.serving().unwrap();
    let script = dir.path().join("bound.sh");
    let bound = dir.path().join("bound.env");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && env > {}\nexit 0\n",
            bound.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let lease = Command::new("ip")
        .args([
            "netns",
            "exec",
            &host_side.0,
            "busybox",
            "udhcpc",
            "-i",
            "lan0",
        ])
        .args([
            "-f", "-n", "-q", "-T", "1", "-t", "10", "-O", "bootfile", "-s",
        ])
        .arg(&script)
        .output()
        .unwrap();
    let stderr = std::fs::read_to_string(&serve.stderr).unwrap();
    assert!(
        lease.status.success(),
        "no lease: {}\n{stderr}",
        String::from_utf8_lossy(&lease.stderr)
    );
    let variables = std::fs::read_to_string(&bound).unwrap();
    let address = variables
        .lines()
        .find_map(|line| line.strip_prefix("ip="))
        .unwrap()
        .to_string();
    assert!(address.starts_with("10.99.0."), "{variables}");
    assert!(variables.contains("undionly.kpxe"), "{variables}");
    ip(&[
        "-n",
        &host_side.0,
        "addr",
        "add",
        &format!("{address}/24"),
        "dev",
        "lan0",
    ]);
    let fetched = dir.path().join("undionly.kpxe");
    let tftp = Command::new("ip")
        .args(["netns", "exec", &host_side.0, "busybox", "tftp", "-g"])
        .args(["-r", "undionly.kpxe", "-l"])
        .arg(&fetched)
        .arg("10.99.0.1")
        .output()
        .unwrap();
    assert!(
        tftp.status.success(),
        "tftp: {}",
        String::from_utf8_lossy(&tftp.stderr)
    );
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read("/usr/lib/ipxe/undionly.kpxe").unwrap()
    );
    // dnsmasq ran as nobody with exactly those capabilities
    let conf = format!("--conf-file={}", data.join("pxe/dnsmasq.conf").display());
    let status = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let cmdline = std::fs::read(path.join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline
                .split('\0')
                .any(|word| word == conf)
                .then(|| std::fs::read_to_string(path.join("status")).ok())?
        })
        .find(|status| status.contains("Name:\tdnsmasq"))
        .expect("no dnsmasq of this test's server");
    let nobody = format!("Uid:\t{}\t", uid_of("nobody"));
    assert!(status.contains(&nobody), "{status}");
    // NET_BIND_SERVICE (10), NET_ADMIN (12), NET_RAW (13)
    assert!(
        status
            .lines()
            .any(|line| line == "CapEff:\t0000000000003400"),
        "{status}"
    );
}
