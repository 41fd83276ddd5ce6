//! Each role's refusals: 403 naming the role needed, and nothing changed;
//! a missing, wrong or revoked token is 401 without saying why, and no
//! header can stand in for a token.

use super::*;

#[tokio::test]
async fn roles_refuse_what_they_do_not_allow_and_change_nothing() {
    let h = harness().await;
    h.register(1).await;
    let viewer = h.token("eyes", "viewer").await;
    let operator = h.token("ops", "operator").await;
    let before = h.fingerprint().await;

    let start = h
        .post("/api/v1/runs", &viewer, json!({"hosts": ["h1"]}))
        .await;
    assert_eq!(start.status, 403, "{start:?}");
    let message = start.body["error"].as_str().unwrap();
    assert!(
        message.contains("operator"),
        "names the role needed: {message}"
    );

    for (method, path, body) in [
        (
            "POST",
            "/api/v1/hosts",
            json!({"name": "x", "macs": ["52:54:00:00:09:09"]}),
        ),
        (
            "POST",
            "/api/v1/tokens",
            json!({"name": "mine", "role": "admin"}),
        ),
        ("POST", "/api/v1/dispatch/pause", json!({})),
        ("PATCH", "/api/v1/hosts/h1", json!({"serial": "S"})),
    ] {
        for token in [&viewer, &operator] {
            let answer = h
                .call(method, path, Some(token), Body::Json(body.clone()))
                .await;
            assert_eq!(answer.status, 403, "{method} {path}: {answer:?}");
            assert!(answer.body["error"].as_str().unwrap().contains("admin"));
        }
    }
    for path in ["/api/v1/hosts/h1", "/api/v1/tokens/ops"] {
        let answer = h.call("DELETE", path, Some(&operator), Body::None).await;
        assert_eq!(answer.status, 403, "{path}: {answer:?}");
    }
    let tokens = h.get("/api/v1/tokens", &operator).await;
    assert_eq!(tokens.status, 403, "tokens are an admin's: {tokens:?}");
    assert_eq!(h.fingerprint().await, before, "a refusal changes nothing");
    // what a viewer may do
    assert_eq!(h.get("/api/v1/hosts", &viewer).await.status, 200);
    assert_eq!(h.get("/api/v1/runs", &viewer).await.status, 200);
    h.shutdown().await;
}

#[tokio::test]
async fn a_missing_wrong_or_revoked_token_is_401_without_a_reason() {
    let h = harness().await;
    h.register(1).await;
    let operator = h.token("ops", "operator").await;
    let revoked = h.token("gone", "admin").await;
    assert_eq!(
        h.call("DELETE", "/api/v1/tokens/gone", Some(&h.admin), Body::None)
            .await
            .status,
        200
    );
    let before = h.fingerprint().await;
    let mut wrong_secret = operator.clone();
    wrong_secret.pop();
    wrong_secret.push(if operator.ends_with('A') { 'B' } else { 'A' });
    let run_token = format!("vt1.{}.AAAA", uuid_like());
    for token in [
        Some(revoked.as_str()),
        Some(wrong_secret.as_str()),
        Some("vtk1.ops.nonsense"),
        Some("not a token"),
        Some(run_token.as_str()),
        None,
    ] {
        for (method, path) in [("GET", "/api/v1/runs"), ("POST", "/api/v1/runs")] {
            let answer = h
                .call(method, path, token, Body::Json(json!({"hosts": ["h1"]})))
                .await;
            assert_eq!(answer.status, 401, "{token:?} {method} {path}: {answer:?}");
            assert_eq!(answer.body, json!({"error": "unauthorized"}));
        }
    }
    // a request extension cannot come from the network: headers named like
    // one are only headers
    for header in ["trusted", "x-trusted", "x-vetting-trusted", "principal"] {
        let answer = h
            .client
            .post(format!("{}/api/v1/runs", h.url))
            .header(header, "admin")
            .header("content-type", "application/json")
            .body(json!({"hosts": ["h1"]}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401, "{header}");
    }
    let basic = h
        .client
        .get(format!("{}/api/v1/runs", h.url))
        .basic_auth("admin", Some("admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    assert_eq!(
        h.fingerprint().await,
        before,
        "nothing changed, no run started"
    );
    h.shutdown().await;
}

fn uuid_like() -> &'static str {
    "00000000-0000-4000-8000-000000000000"
}
