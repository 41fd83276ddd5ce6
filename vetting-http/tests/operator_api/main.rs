//! The operator API (`/api/v1`, `/metrics`) through a real `Server` on
//! loopback: every route, each role's refusals, pages, the events stream
//! and its resume, bad input refused with nothing stored changed, the
//! OpenAPI document, the serve lock and the discovery files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vetting_core::config::Config;
use vetting_core::machine::RunState;
use vetting_core::model::{Actor, Host, NewHost};
use vetting_core::orchestrator::Orchestrator;
use vetting_core::power::{PowerDriver, PowerDrivers, PowerError, PowerLog, PowerOutcome};

mod bad_input;
mod events;
mod logs;
mod metrics;
mod openapi;
mod pages;
mod roles;
mod routes;
mod serve;

/// Power that does nothing (nothing leaves loopback) and says it worked.
#[derive(Debug, Default)]
struct NoPower;

impl PowerDrivers for NoPower {
    fn driver_for(&self, _host: &Host) -> Result<Box<dyn PowerDriver>, PowerError> {
        Ok(Box::new(NoPower))
    }
}

#[async_trait::async_trait]
impl PowerDriver for NoPower {
    fn name(&self) -> &str {
        "none"
    }
    async fn power_on_for_pxe(&self, _log: &dyn PowerLog) -> Result<PowerOutcome, PowerError> {
        Ok(PowerOutcome::PoweredOn {
            action: "nothing (test)".into(),
        })
    }
}

fn loopback_config(dir: &Path) -> Config {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    config.listen = ([127, 0, 0, 1], 0).into();
    config.iperf.enabled = false;
    config.dispatcher.interval_ms = 50;
    config
}

struct Harness {
    url: String,
    server: Option<vetting_http::ServerHandle>,
    orchestrator: Orchestrator,
    dir: tempfile::TempDir,
    client: reqwest::Client,
    /// The server's own admin token, found as the CLI finds it.
    admin: String,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path()).await;
    let found = vetting_http::api::discover(dir.path())
        .unwrap()
        .expect("a running server is discovered");
    Harness {
        url: server.url(),
        orchestrator: server.orchestrator().clone(),
        server: Some(server),
        dir,
        client: reqwest::Client::new(),
        admin: found.token,
    }
}

async fn start_server(dir: &Path) -> vetting_http::ServerHandle {
    vetting_http::Server::new(loopback_config(dir))
        .bcrypt_cost(4)
        .power(Arc::new(NoPower))
        .start()
        .await
        .unwrap()
}

/// An answer: its status and its body (JSON when it parses).
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    text: String,
    content_type: String,
}

enum Body {
    None,
    Json(Value),
    Text(&'static str, String),
}

impl Harness {
    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Body) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request = match body {
            Body::None => request,
            Body::Json(value) => request
                .header("content-type", "application/json")
                .body(value.to_string()),
            Body::Text(content_type, text) => {
                request.header("content-type", content_type).body(text)
            }
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|value| value.to_str().unwrap().to_string())
            .unwrap_or_default();
        let text = response.text().await.unwrap();
        Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
            content_type,
        }
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.call("GET", path, Some(token), Body::None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call("POST", path, Some(token), Body::Json(body)).await
    }

    /// A new API token of `role`, made through the API by the admin.
    async fn token(&self, name: &str, role: &str) -> String {
        let answer = self
            .post(
                "/api/v1/tokens",
                &self.admin,
                json!({"name": name, "role": role}),
            )
            .await;
        assert_eq!(answer.status, 201, "{answer:?}");
        let secret = answer.body["secret"].as_str().unwrap().to_string();
        // used once, so that its `last_used_at_ms` is written before any
        // fingerprint
        assert_eq!(self.get("/api/v1/dispatch", &secret).await.status, 200);
        secret
    }

    async fn register(&self, index: u32) -> Host {
        self.orchestrator
            .operator()
            .register_host(
                NewHost {
                    name: format!("h{index}"),
                    macs: vec![format!(
                        "52:54:00:bb:{:02x}:{:02x}",
                        index / 256,
                        index % 256
                    )],
                    ..Default::default()
                },
                &Actor::operator("test"),
            )
            .await
            .unwrap()
    }

    /// Waits until `run_id` is in `state`.
    async fn wait_for(&self, run_id: &str, state: RunState) {
        let operator = self.orchestrator.operator();
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if operator.get_run(run_id).await.unwrap().state == state {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("run {run_id} never reached {state}"));
    }

    /// Every row of every table, and every file under the data folder
    /// (but the database's own files) with its SHA-256.
    async fn fingerprint(&self) -> String {
        let mut out =
            vetting_testkit::sqlite_rows(self.orchestrator.store().db(), |_, _| false).await;
        let mut files = Vec::new();
        walk(self.dir.path(), &mut files);
        files.sort();
        for file in files {
            let name = file.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("vetting.db") {
                continue;
            }
            out.push_str(&format!(
                "{} {}\n",
                file.display(),
                hex::encode(Sha256::digest(std::fs::read(&file).unwrap()))
            ));
        }
        out
    }

    async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.unwrap();
        }
    }
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, files);
        } else {
            files.push(path);
        }
    }
}

const SPEC: &str = "schema_version: 1\n";
