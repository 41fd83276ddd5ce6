//! Every error of `/api/v1` is JSON (`ErrorBody`): an unknown path (404),
//! a wrong method (405), a bad path segment or query (400), not axum's
//! plain text.

use serde_json::Value;
use vetting_probes::protocol::Endpoint;

/// Status, content type and the parsed JSON body (a panic if not JSON).
async fn json_error(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.text().await.unwrap();
    assert_eq!(content_type, "application/json", "{status}: {text:?}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text:?}"));
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| !error.is_empty()),
        "{body}"
    );
    (status, body)
}

#[tokio::test]
async fn api_errors_are_json() {
    let harness = crate::harness().await;
    let (run, token) = crate::booting_run(&harness, 1).await;
    let url = &harness.url;
    let client = &harness.client;

    for path in [
        "/api/v1/nope",
        "/api/v1",
        "/api/v1/",
        "/api/v2/runs",
        &format!("/api/v1/runs/{run}/nope"),
        &format!("/api/v1/runs/{run}/hello/extra"),
    ] {
        let response = client.post(format!("{url}{path}")).send().await.unwrap();
        let (status, body) = json_error(response).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    // `/api/v1/runs` is the operator API's now: without a token, 401
    let response = client
        .post(format!("{url}/api/v1/runs"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_error(response).await;
    assert_eq!(status, 401, "{body}");

    for endpoint in crate::served_endpoints() {
        let response = client
            .get(format!("{url}/api/v1/runs/{run}/{endpoint}"))
            .send()
            .await
            .unwrap();
        let (status, body) = json_error(response).await;
        assert_eq!(status, 405, "{endpoint}: {body}");
    }

    // the router mounts exactly the protocol's list: every served endpoint
    // answers its method (401 here: no token), one not served yet and a
    // name not in the list are unknown paths
    for endpoint in Endpoint::ALL {
        let path = endpoint.path_segments(&run).collect::<Vec<_>>().join("/");
        let method = reqwest::Method::from_bytes(endpoint.method().as_str().as_bytes()).unwrap();
        let response = client
            .request(method, format!("{url}/{path}"))
            .send()
            .await
            .unwrap();
        let (status, body) = json_error(response).await;
        if endpoint.is_served() {
            assert_eq!(status, 401, "{endpoint}: {body}");
        } else {
            assert_eq!(status, 404, "{endpoint}: {body}");
        }
    }
    let response = client
        .post(format!("{url}/api/v1/runs/{run}/status"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_error(response).await;
    assert_eq!(status, 404, "{body}");

    // a run id that is not UTF-8 once decoded
    let response = client
        .post(format!("{url}/api/v1/runs/%FF%FE/hello"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (status, body) = json_error(response).await;
    assert_eq!(status, 400, "{body}");

    // queries of the wrong shape
    for query in [
        "name=a.txt&attempt=many",
        "name=a.txt&unknown=1",
        "attempt=1",
        "name=a.txt&stage=Nope",
    ] {
        let response = client
            .post(format!("{url}/api/v1/runs/{run}/artifact?{query}"))
            .bearer_auth(&token)
            .body("x")
            .send()
            .await
            .unwrap();
        let (status, body) = json_error(response).await;
        assert_eq!(status, 400, "{query}: {body}");
    }
}

/// An agent of another protocol version is told so at hello and claim,
/// with 426 (which it does not retry), and the run does not change.
#[tokio::test]
async fn another_protocol_version_is_426_and_changes_nothing() {
    let harness = crate::harness().await;
    let (run, token) = crate::booting_run(&harness, 1).await;
    let before = harness.fingerprint().await;
    for endpoint in ["hello", "claim"] {
        let (status, body) = harness
            .post(
                &run,
                endpoint,
                Some(&token),
                serde_json::json!({"protocol_version": 0, "agent_version": "old"}),
            )
            .await;
        assert_eq!(status, 426, "{endpoint}: {body}");
        let message = body["error"].as_str().unwrap();
        assert!(message.contains("protocol version 0"), "{message}");
    }
    assert_eq!(harness.fingerprint().await, before);
}
