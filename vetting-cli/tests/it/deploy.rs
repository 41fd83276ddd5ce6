//! `deploy/`: the example config lists every key of the config with its
//! default and `vetting config check` accepts it; the systemd unit passes
//! `systemd-analyze verify` and keeps its hardening; `install.sh` stages
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
