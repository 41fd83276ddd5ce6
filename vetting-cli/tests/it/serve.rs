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
