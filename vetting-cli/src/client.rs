//! The CLI's one client of the operator API (`/api/v1`, docs/operator-api.md):
//! over HTTP to a server (`--server URL` with `VETTING_TOKEN`, or the
//! `vetting serve` that holds the local data folder, found through its
//! discovery files), or in-process through the same router on the local
//! database when no server holds it. Local and remote therefore answer
//! alike, exit codes included.

use std::time::Duration;

use serde_json::Value;
use tower::ServiceExt;
use vetting_core::config::Config;
use vetting_core::operator::{Principal, Role};
use vetting_core::orchestrator::Orchestrator;

use vetting_core::error::chain;

use crate::error::{CliResult, Exit, Failure};

pub use reqwest::Method;

/// How long one request to a server may take (not the events stream).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    Empty,
    Json(Value),
    /// Text with its content type (YAML of a profile, CSV of an import).
    Text(&'static str, String),
}

/// An answer of the API, whatever its status.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: bytes::Bytes,
}

impl Answer {
    pub fn json(&self) -> CliResult<Value> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body)
            .map_err(|error| Failure::internal(format!("the server's answer is not JSON: {error}")))
    }

    /// The failure an answer that is not a success stands for: the API's
    /// message (and, for an import, every refused row with its line).
    pub fn failure(&self) -> Failure {
        let exit = Exit::of_status(self.status);
        let parsed: Option<Value> = serde_json::from_slice(&self.body).ok();
        let mut message = parsed
            .as_ref()
            .and_then(|body| body.get("error"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&self.body);
                let text = text.trim();
                if text.is_empty() {
                    format!("the server answered {}", self.status)
                } else {
                    format!("the server answered {}: {text}", self.status)
                }
            });
        if let Some(rows) = parsed
            .as_ref()
            .and_then(|body| body.get("rows"))
            .and_then(Value::as_array)
        {
            for row in rows {
                let line = row.get("line").and_then(Value::as_u64).unwrap_or(0);
                let text = row.get("message").and_then(Value::as_str).unwrap_or("");
                let row = format!("line {line}: {text}");
                // the API's message may list them already
                if !message.contains(&row) {
                    message.push_str(&format!("\n  {row}"));
                }
            }
        }
        Failure::new(exit, message)
    }
}

#[derive(Clone)]
enum Transport {
    Http {
        base: String,
        token: Option<String>,
        http: reqwest::Client,
    },
    /// The operator API's router on the local database, as the local
    /// user with the admin role.
    InProcess { router: axum::Router },
}

/// The operator API, wherever it is.
#[derive(Clone)]
pub struct Client {
    transport: Transport,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.transport {
            Transport::Http { base, .. } => write!(f, "Client(http {base})"),
            Transport::InProcess { .. } => f.write_str("Client(in-process)"),
        }
    }
}

impl Client {
    /// A client of the server at `base` with `token` (`VETTING_TOKEN`).
    pub fn http(base: &str, token: Option<String>) -> CliResult<Client> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Failure::input(format!(
                "--server `{base}` is not an http:// or https:// URL"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|error| Failure::internal(format!("HTTP client: {error}")))?;
        Ok(Client {
            transport: Transport::Http { base, token, http },
        })
    }

    /// The client a command without `--server` uses: the `vetting serve`
    /// that holds the data folder, else the local database in-process.
    pub async fn local(config: Config) -> CliResult<Client> {
        if let Some((url, token)) = discover(&config)? {
            return Client::http(&url, Some(token));
        }
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|error| {
            Failure::unreachable(format!(
                "cannot create the data folder {}: {error}",
                data_dir.display()
            ))
        })?;
        let orchestrator = Orchestrator::open(
            config,
            std::sync::Arc::new(vetting_core::clock::SystemClock),
        )
        .await
        .map_err(|error| {
            Failure::unreachable(format!("cannot open the database: {}", chain(&error)))
        })?;
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        let principal = Principal {
            name: format!("local:{user}"),
            role: Role::Admin,
        };
        Ok(Client {
            transport: Transport::InProcess {
                router: operator_router(orchestrator, principal),
            },
        })
    }

    /// Whether this client talks to a server over HTTP (and so can follow
    /// its events stream).
    pub fn is_remote(&self) -> bool {
        matches!(self.transport, Transport::Http { .. })
    }

    /// Sends a request to `path` (below `/api/v1`, with its query) and
    /// returns the answer whatever its status; only a server that cannot be
    /// reached is an error.
    pub async fn send(&self, method: Method, path: &str, body: Body) -> CliResult<Answer> {
        let (content_type, bytes) = match body {
            Body::Empty => (None, Vec::new()),
            Body::Json(value) => (Some("application/json"), value.to_string().into_bytes()),
            Body::Text(content_type, text) => (Some(content_type), text.into_bytes()),
        };
        match &self.transport {
            Transport::Http { base, token, http } => {
                let mut request = http
                    .request(method, format!("{base}/api/v1{path}"))
                    .timeout(REQUEST_TIMEOUT)
                    .body(bytes);
                if let Some(content_type) = content_type {
                    request = request.header(reqwest::header::CONTENT_TYPE, content_type);
                }
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let response = request.send().await.map_err(|error| {
                    Failure::unreachable(format!("cannot reach {base}: {}", chain(&error)))
                })?;
                let status = response.status().as_u16();
                let body = response.bytes().await.map_err(|error| {
                    Failure::unreachable(format!("{base}: the answer broke off: {}", chain(&error)))
                })?;
                Ok(Answer { status, body })
            }
            Transport::InProcess { router } => {
                let mut request = axum::http::Request::builder()
                    .method(method)
                    .uri(format!("/api/v1{path}"));
                if let Some(content_type) = content_type {
                    request = request.header(axum::http::header::CONTENT_TYPE, content_type);
                }
                let request = request
                    .body(axum::body::Body::from(bytes))
                    .map_err(|error| Failure::input(format!("bad request {path}: {error}")))?;
                // in a task of its own, so that a handler's panic is an
                // internal error (exit 5), as a server's would be a 500
                let response = tokio::spawn(router.clone().oneshot(request))
                    .await
                    .map_err(|error| Failure::internal(format!("the request failed: {error}")))?
                    .map_err(|error| Failure::internal(format!("{error}")))?;
                let status = response.status().as_u16();
                let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .map_err(|error| Failure::internal(format!("reading the answer: {error}")))?;
                Ok(Answer { status, body })
            }
        }
    }

    /// [`Client::send`], with an answer that is not a success turned into
    /// its failure.
    pub async fn call(&self, method: Method, path: &str, body: Body) -> CliResult<Answer> {
        let answer = self.send(method, path, body).await?;
        if (200..300).contains(&answer.status) {
            Ok(answer)
        } else {
            Err(answer.failure())
        }
    }

    pub async fn get_json(&self, path: &str) -> CliResult<Value> {
        self.call(Method::GET, path, Body::Empty).await?.json()
    }

    pub async fn call_json(&self, method: Method, path: &str, body: Body) -> CliResult<Value> {
        self.call(method, path, body).await?.json()
    }

    /// Opens the events stream of `runs` (SSE), resuming after
    /// `last_event_id`. Only over HTTP.
    pub async fn events(
        &self,
        runs: &[String],
        last_event_id: Option<&str>,
    ) -> CliResult<Option<reqwest::Response>> {
        let Transport::Http { base, token, http } = &self.transport else {
            return Ok(None);
        };
        let query: Vec<String> = runs
            .iter()
            .map(|run| format!("run={}", encode(run)))
            .collect();
        let mut request = http
            .get(format!("{base}/api/v1/events?{}", query.join("&")))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.map_err(|error| {
            Failure::unreachable(format!("cannot reach {base}: {}", chain(&error)))
        })?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let body = response.bytes().await.unwrap_or_default();
            return Err(Answer { status, body }.failure());
        }
        Ok(Some(response))
    }
}

/// The operator API's router over `orchestrator`, every request made as
/// `principal`.
fn operator_router(orchestrator: Orchestrator, principal: Principal) -> axum::Router {
    vetting_http::api::router(orchestrator)
        .layer(axum::Extension(vetting_http::api::Trusted(principal)))
}

/// The URL and admin token of the `vetting serve` holding the data folder,
/// if one does.
fn discover(config: &Config) -> CliResult<Option<(String, String)>> {
    let found = vetting_http::api::discover(&config.data_dir).map_err(|error| {
        Failure::unreachable(format!(
            "the data folder {}: {}",
            config.data_dir.display(),
            chain(&error)
        ))
    })?;
    Ok(found.map(|found| (found.url, found.token)))
}

/// A path segment or query value, percent-encoded.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
