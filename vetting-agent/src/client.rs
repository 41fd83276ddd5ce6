//! The typed HTTP client of the agent API: one method per endpoint of
//! [`vetting_probes::protocol::Endpoint`] (URLs built from its routes),
//! JSON bodies, `Authorization: Bearer`, a
//! timeout on every request, and errors that say whether a retry can help.
//!
//! Retryable: the orchestrator could not be reached (connect error,
//! timeout, connection closed), answered 5xx, 408 or 429, or answered 409
//! without a position (a concurrent update on its side). Final: any other
//! 4xx, with the server's [`ErrorBody`] message; a 409 that carries the
//! run's position (a result for a stage that is not the current one).

use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
pub use vetting_probes::protocol::Endpoint;
use vetting_probes::protocol::{
    ArtifactQuery, BatchAck, ClaimRequest, ClaimResponse, ErrorBody, HeartbeatRequest,
    HeartbeatResponse, HelloRequest, LogBatch, ResultResponse, RunPosition, SensorBatch,
    StageResult, StoredArtifact,
};

/// Why a request did not get a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: connect error, timeout, connection closed. Retryable.
    #[error("{endpoint}: the orchestrator could not be reached: {message}")]
    Unreachable { endpoint: Endpoint, message: String },
    /// The orchestrator answered with a status that a retry may fix
    /// (5xx, 408, 429, 409 without a position).
    #[error("{endpoint}: the orchestrator answered {status}: {message}")]
    Unavailable {
        endpoint: Endpoint,
        status: u16,
        message: String,
    },
    /// The orchestrator refused the request; a retry gets the same answer.
    #[error("{endpoint}: the orchestrator refused the request ({status}): {message}")]
    Refused {
        endpoint: Endpoint,
        status: u16,
        message: String,
        /// The run's position, on a 409 for a stage that is not current.
        position: Option<RunPosition>,
    },
    /// A success status with a body that is not the expected JSON.
    /// Retryable (a proxy or a half-restarted server may answer that).
    #[error("{endpoint}: the answer is not the expected JSON: {message}")]
    BadAnswer { endpoint: Endpoint, message: String },
    /// The URL could not be built (a bad base URL or run id). Final.
    #[error("bad orchestrator URL `{url}`: {message}")]
    BadUrl { url: String, message: String },
}

impl ClientError {
    /// Whether sending the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. }
                | ClientError::Unavailable { .. }
                | ClientError::BadAnswer { .. }
        )
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Unavailable { status, .. } | ClientError::Refused { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// The run's position carried by a 409.
    pub fn position(&self) -> Option<&RunPosition> {
        match self {
            ClientError::Refused { position, .. } => position.as_ref(),
            _ => None,
        }
    }
}

/// Classifies a non-success answer from its status and body.
pub fn classify(endpoint: Endpoint, status: u16, body: &[u8]) -> ClientError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let message = match &parsed {
        Some(error) => error.error.clone(),
        None => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                StatusCode::from_u16(status)
                    .ok()
                    .and_then(|code| code.canonical_reason())
                    .unwrap_or("no message")
                    .to_string()
            } else {
                text.chars().take(500).collect()
            }
        }
    };
    let position = parsed.and_then(|error| error.position);
    let retryable =
        status >= 500 || status == 408 || status == 429 || (status == 409 && position.is_none());
    if retryable {
        ClientError::Unavailable {
            endpoint,
            status,
            message,
        }
    } else {
        ClientError::Refused {
            endpoint,
            status,
            message,
            position,
        }
    }
}

/// The agent API client of one run. `Debug` leaves the token out.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    run_id: String,
    token: String,
    timeout: Duration,
}

/// Bytes per second an artifact upload is granted beyond the base timeout
/// (a slow link still gets a large dump through).
const ARTIFACT_MIN_BYTES_PER_SEC: u64 = 256 * 1024;

impl std::fmt::Debug for Client {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("run_id", &self.run_id)
            .field("token", &crate::params::REDACTED)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `base_url` (e.g. `http://10.0.0.1:8080`), `run_id` and
    /// its bearer `token`; every request is bounded by `timeout`.
    pub fn new(
        base_url: &str,
        run_id: &str,
        token: &str,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let bad_url = |message: String| ClientError::BadUrl {
            url: base_url.to_string(),
            message,
        };
        let mut base = Url::parse(base_url).map_err(|error| bad_url(error.to_string()))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(bad_url("not an http(s) URL".into()));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("vetting-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| bad_url(format!("cannot build the HTTP client: {error}")))?;
        Ok(Client {
            http,
            base,
            run_id: run_id.to_string(),
            token: token.to_string(),
            timeout,
        })
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The endpoint's path ([`Endpoint::path_segments`]) under the base
    /// URL, the run id as one path segment.
    fn url(&self, endpoint: Endpoint) -> Result<Url, ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::BadUrl {
                url: self.base.to_string(),
                message: "not a base URL".into(),
            })?
            .pop_if_empty()
            .extend(endpoint.path_segments(&self.run_id));
        Ok(url)
    }

    async fn post_json<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        body: &B,
    ) -> Result<R, ClientError> {
        let request = self
            .http
            .post(self.url(endpoint)?)
            .bearer_auth(&self.token)
            .timeout(self.timeout)
            .json(body);
        self.send(endpoint, request).await
    }

    async fn send<R: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        request: reqwest::RequestBuilder,
    ) -> Result<R, ClientError> {
        let unreachable = |error: reqwest::Error| ClientError::Unreachable {
            endpoint,
            message: error_chain(&error),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(classify(endpoint, status.as_u16(), &body));
        }
        serde_json::from_slice(&body).map_err(|error| ClientError::BadAnswer {
            endpoint,
            message: error.to_string(),
        })
    }

    /// `POST hello`: the agent booted; answers the run's position.
    pub async fn hello(&self, request: &HelloRequest) -> Result<RunPosition, ClientError> {
        self.post_json(Endpoint::Hello, request).await
    }

    /// `POST claim`: the stage plan, parameters and thresholds.
    pub async fn claim(&self, request: &ClaimRequest) -> Result<ClaimResponse, ClientError> {
        self.post_json(Endpoint::Claim, request).await
    }

    /// `POST heartbeat`: liveness; answers the control command.
    pub async fn heartbeat(
        &self,
        request: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ClientError> {
        self.post_json(Endpoint::Heartbeat, request).await
    }

    /// `POST log`: a batch of log lines.
    pub async fn log(&self, batch: &LogBatch) -> Result<BatchAck, ClientError> {
        self.post_json(Endpoint::Log, batch).await
    }

    /// `POST sensor`: a batch of sensor samples.
    pub async fn sensor(&self, batch: &SensorBatch) -> Result<BatchAck, ClientError> {
        self.post_json(Endpoint::Sensor, batch).await
    }

    /// `POST result`: the stage is done; answers where the run goes next.
    pub async fn result(&self, result: &StageResult) -> Result<ResultResponse, ClientError> {
        self.post_json(Endpoint::Result, result).await
    }

    /// `POST artifact`: a raw tool output, as the request body, described
    /// by `upload` in the query. Answers what the orchestrator stored.
    pub async fn artifact(
        &self,
        upload: &ArtifactQuery,
        body: Vec<u8>,
    ) -> Result<StoredArtifact, ClientError> {
        let request = self.artifact_request(upload, body)?;
        self.send(Endpoint::Artifact, request).await
    }

    fn artifact_request(
        &self,
        upload: &ArtifactQuery,
        body: Vec<u8>,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let transfer = Duration::from_secs(body.len() as u64 / ARTIFACT_MIN_BYTES_PER_SEC);
        Ok(self
            .http
            .post(self.url(Endpoint::Artifact)?)
            .query(upload)
            .bearer_auth(&self.token)
            .timeout(self.timeout + transfer)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body))
    }
}

/// An error and its sources on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Exponential backoff: starts at `initial`, doubles, capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The agent's usual backoff: 100 ms doubling up to 5 s.
    pub fn standard() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// The delay before the next try (and doubles the one after).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vetting_probes::protocol::Stage;

    #[test]
    fn debug_never_shows_the_token() {
        let secret = "run-token-a1b2c3.signature-d4e5f6";
        let client =
            Client::new("http://127.0.0.1:9/", "r1", secret, Duration::from_secs(5)).unwrap();
        let shown = format!("{client:?} {client:#?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("r1"),
            "{shown}"
        );
    }

    #[test]
    fn statuses_are_classified_by_whether_a_retry_helps() {
        for status in [500, 502, 503, 504, 408, 429] {
            assert!(
                classify(Endpoint::Log, status, b"").is_retryable(),
                "{status}"
            );
        }
        let busy = classify(Endpoint::Log, 409, br#"{"error":"concurrent update"}"#);
        assert!(busy.is_retryable());
        let refused = classify(
            Endpoint::Result,
            409,
            br#"{"error":"not the current stage","position":{"state":"Network","current":{"stage":"Network","attempt":1}}}"#,
        );
        assert!(!refused.is_retryable());
        assert_eq!(
            refused.position().and_then(|p| p.current).map(|c| c.stage),
            Some(Stage::Network)
        );
        assert!(refused.to_string().contains("not the current stage"));
        let unauthorized = classify(Endpoint::Log, 401, br#"{"error":"unauthorized"}"#);
        assert!(!unauthorized.is_retryable());
        assert_eq!(unauthorized.status(), Some(401));
        let plain = classify(Endpoint::Log, 413, b"");
        assert!(plain.to_string().contains("Payload Too Large"), "{plain}");
    }

    #[test]
    fn urls_put_the_run_id_in_one_segment() {
        let client = Client::new(
            "http://127.0.0.1:9/prefix",
            "run/1",
            "t",
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            client.url(Endpoint::Heartbeat).unwrap().as_str(),
            "http://127.0.0.1:9/prefix/api/v1/runs/run%2F1/heartbeat"
        );
        let client = Client::new("http://h:1/", "r", "t", Duration::from_secs(1)).unwrap();
        assert_eq!(
            client.url(Endpoint::Log).unwrap().as_str(),
            "http://h:1/api/v1/runs/r/log"
        );
        assert!(Client::new("ftp://h", "r", "t", Duration::from_secs(1)).is_err());
        // every endpoint's URL is the protocol's route, the run id filled in
        for endpoint in Endpoint::ALL {
            let route = endpoint.route().replace("{run_id}", "r");
            assert_eq!(
                client.url(endpoint).unwrap().as_str(),
                format!("http://h:1/api/v1{route}"),
            );
        }
    }

    #[test]
    fn the_artifact_query_is_the_protocol_type() {
        use vetting_probes::protocol::{Stage, StageRef};
        let client = Client::new("http://h:1/", "r", "t", Duration::from_secs(1)).unwrap();
        let upload = ArtifactQuery::for_stage(
            "smartctl-sda.json",
            Some("smartctl".into()),
            StageRef {
                stage: Stage::Smart,
                attempt: 2,
            },
            Some("sda disk".into()),
        );
        let request = client
            .artifact_request(&upload, b"{}".to_vec())
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            request.url().as_str(),
            "http://h:1/api/v1/runs/r/artifact?name=smartctl-sda.json&tool=smartctl&stage=SMART&attempt=2&subject=sda+disk"
        );
        let bare = ArtifactQuery {
            name: "a.txt".into(),
            ..Default::default()
        };
        let request = client
            .artifact_request(&bare, Vec::new())
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(request.url().query(), Some("name=a.txt"));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<u128> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.next_delay().as_millis(), 100);
    }
}
