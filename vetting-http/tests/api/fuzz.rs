//! A property test over the agent endpoints, against the real router:
//! random JSON shapes (and bytes), random path segments, random methods and
//! headers, and tokens that are missing, forged, of another run or valid.
//! Never a 500; and a request without a valid token changes nothing: every
//! table (each row, quoted) and every file of the data folder (path, size,
//! content) are fingerprinted before and after.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Which token a request carries.
#[derive(Debug, Clone)]
enum TokenChoice {
    None,
    /// Not `Bearer `, or garbage after it.
    Garbage(String),
    /// The right run's token with one character changed.
    Forged(usize),
    /// Another run's token.
    OtherRuns,
    /// The run's own token (may change things; never a 500).
    Valid,
}

#[derive(Debug, Clone)]
enum PathChoice {
    /// `/api/v1/runs/{run}/{endpoint}` of a known run.
    Known { run: usize, endpoint: usize },
    /// A random run segment and endpoint segment (percent-encoded bytes).
    Random { run: Vec<u8>, endpoint: Vec<u8> },
    /// Random segments after `/api/v1/`.
    Segments(Vec<Vec<u8>>),
}

#[derive(Debug, Clone)]
struct Case {
    method: &'static str,
    path: PathChoice,
    query: Option<Vec<u8>>,
    token: TokenChoice,
    content_type: Option<String>,
    extra_header: Option<(String, String)>,
    body: Vec<u8>,
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        "[ -~]{0,12}".prop_map(Value::String),
        // names the agent API uses, so shapes come near the real ones
        prop::sample::select(vec![
            "protocol_version",
            "agent_version",
            "stage",
            "attempt",
            "outcome",
            "verdict",
            "lines",
            "readings",
            "seq",
            "status",
            "Storage",
            "passed",
        ])
        .prop_map(|name| Value::String(name.to_string())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "protocol_version",
                        "agent_version",
                        "stage",
                        "attempt",
                        "outcome",
                        "verdict",
                        "lines",
                        "readings",
                        "seq",
                        "status",
                        "reasons",
                        "x",
                    ]),
                    inner
                ),
                0..6
            )
            .prop_map(|fields| Value::Object(
                fields
                    .into_iter()
                    .map(|(key, value)| (key.to_string(), value))
                    .collect()
            )),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => json_value().prop_map(|value| value.to_string().into_bytes()),
        2 => Just(json!({"protocol_version": 1, "agent_version": "t"}).to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => Just(Vec::new()),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let segment = prop::collection::vec(any::<u8>(), 0..12);
    let path = prop_oneof![
        12 => (0..2usize, 0..crate::served_endpoints().len()).prop_map(|(run, endpoint)| PathChoice::Known { run, endpoint }),
        2 => (segment.clone(), segment.clone()).prop_map(|(run, endpoint)| PathChoice::Random { run, endpoint }),
        1 => prop::collection::vec(segment, 0..5).prop_map(PathChoice::Segments),
    ];
    let token = prop_oneof![
        2 => Just(TokenChoice::None),
        2 => "[ -~]{0,40}".prop_map(TokenChoice::Garbage),
        3 => (0..200usize).prop_map(TokenChoice::Forged),
        2 => Just(TokenChoice::OtherRuns),
        3 => Just(TokenChoice::Valid),
    ];
    let method = prop_oneof![
        12 => Just("POST"),
        1 => Just("GET"),
        1 => Just("PUT"),
        1 => Just("DELETE"),
    ];
    let content_type = prop::option::weighted(
        0.9,
        prop::sample::select(vec![
            "application/json".to_string(),
            "application/json".to_string(),
            "application/json".to_string(),
            "application/json; charset=utf-8".to_string(),
            "text/plain".to_string(),
            "application/octet-stream".to_string(),
            "".to_string(),
        ]),
    );
    let extra_header = prop::option::of((
        "x-[a-z-]{1,10}|content-encoding|expect|transfer-encoding",
        "[ -~]{0,20}",
    ));
    let query = prop::option::of(prop::collection::vec(any::<u8>(), 0..24));
    (
        method,
        path,
        query,
        token,
        content_type,
        extra_header,
        body(),
    )
        .prop_map(
            |(method, path, query, token, content_type, extra_header, body)| Case {
                method,
                path,
                query,
                token,
                content_type,
                extra_header,
                body,
            },
        )
}

/// Bytes as one percent-encoded path segment or query.
fn encoded(bytes: &[u8], keep: &[u8]) -> String {
    let mut text = String::new();
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) || keep.contains(&byte) {
            text.push(byte as char);
        } else {
            text.push_str(&format!("%{byte:02X}"));
        }
    }
    text
}

struct World {
    harness: crate::Harness,
    runs: Vec<(String, String)>,
}

impl World {
    /// The request of `case`, and whether it carries its run's valid token.
    fn request(&self, case: &Case) -> Option<(Request<Body>, bool)> {
        let (run_index, mut path) = match &case.path {
            PathChoice::Known { run, endpoint } => (
                Some(*run),
                format!(
                    "/api/v1/runs/{}/{}",
                    self.runs[*run].0,
                    crate::served_endpoints()[*endpoint]
                ),
            ),
            PathChoice::Random { run, endpoint } => (
                None,
                format!(
                    "/api/v1/runs/{}/{}",
                    encoded(run, b""),
                    encoded(endpoint, b"")
                ),
            ),
            PathChoice::Segments(segments) => (
                None,
                segments
                    .iter()
                    .fold("/api/v1".to_string(), |path, segment| {
                        format!("{path}/{}", encoded(segment, b""))
                    }),
            ),
        };
        if let Some(query) = &case.query {
            path.push('?');
            path.push_str(&encoded(query, b"=&"));
        }
        let own = run_index.unwrap_or(0);
        let (authorization, valid) = match &case.token {
            TokenChoice::None => (None, false),
            TokenChoice::Garbage(text) => (Some(text.clone()), false),
            TokenChoice::Forged(position) => {
                let mut token = self.runs[own].1.clone().into_bytes();
                let at = position % token.len();
                token[at] = if token[at] == b'A' { b'B' } else { b'A' };
                (
                    Some(format!("Bearer {}", String::from_utf8(token).ok()?)),
                    false,
                )
            }
            TokenChoice::OtherRuns => (Some(format!("Bearer {}", self.runs[1 - own].1)), false),
            TokenChoice::Valid => (
                Some(format!("Bearer {}", self.runs[own].1)),
                run_index.is_some(),
            ),
        };
        let mut builder = Request::builder().method(case.method).uri(path);
        if let Some(authorization) = authorization {
            builder = builder.header("authorization", authorization);
        }
        if let Some(content_type) = &case.content_type {
            builder = builder.header("content-type", content_type);
        }
        if let Some((name, value)) = &case.extra_header {
            builder = builder.header(name, value);
        }
        let mut request = builder.body(Body::from(case.body.clone())).ok()?;
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        Some((request, valid))
    }

    /// Every table's rows and every file of the data folder.
    async fn fingerprint(&self) -> String {
        self.harness.fingerprint().await
    }
}

#[test]
fn agent_endpoints_never_500_and_change_nothing_without_a_valid_token() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let world = runtime.block_on(async {
        let harness = crate::harness().await;
        let runs = vec![
            crate::booting_run(&harness, 1).await,
            crate::booting_run(&harness, 2).await,
        ];
        World { harness, runs }
    });
    let router = vetting_http::router(vetting_http::AppState::new(
        world.harness.orchestrator.clone(),
    ));
    // the fingerprint is not blind: a valid hello (a transition, an audit
    // record) changes it
    let blank = runtime.block_on(world.fingerprint());
    let (run, token) = &world.runs[0];
    let hello = Request::builder()
        .method("POST")
        .uri(format!("/api/v1/runs/{run}/hello"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"protocol_version": 1, "agent_version": "t"}).to_string(),
        ))
        .unwrap();
    let response = runtime.block_on(router.clone().oneshot(hello)).unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let before = std::cell::RefCell::new(runtime.block_on(world.fingerprint()));
    assert_ne!(
        *before.borrow(),
        blank,
        "the fingerprint missed a valid hello"
    );
    let statuses = std::cell::RefCell::new(BTreeMap::new());
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&case(), |case| {
        let Some((request, valid)) = world.request(&case) else {
            return Ok(());
        };
        let (status, body) = runtime.block_on(async {
            let response = router.clone().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, body)
        });
        let text = String::from_utf8_lossy(&body);
        if status >= 500 {
            return Err(TestCaseError::fail(format!("{status}: {text}")));
        }
        if status >= 400
            && serde_json::from_slice::<Value>(&body)
                .map_or(true, |body| !body["error"].is_string())
        {
            return Err(TestCaseError::fail(format!(
                "{status} is not a JSON error: {text:?}"
            )));
        }
        *statuses.borrow_mut().entry(status).or_insert(0usize) += 1;
        let after = runtime.block_on(world.fingerprint());
        if valid {
            *before.borrow_mut() = after;
        } else if after != *before.borrow() {
            return Err(TestCaseError::fail(format!(
                "a request without a valid token ({status}: {text}) changed what is stored"
            )));
        }
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    let statuses = statuses.into_inner();
    eprintln!("statuses: {statuses:?}");
    // some cases reach past the token check
    assert!(
        statuses
            .keys()
            .any(|status| [200, 400, 409, 413, 422].contains(status)),
        "{statuses:?}"
    );
}
