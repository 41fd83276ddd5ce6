//! Every operator route once, as the admin and an operator would call it.

use super::*;

#[tokio::test]
async fn every_route_answers_as_documented() {
    let h = harness().await;
    let admin = h.admin.clone();
    let operator = h.token("ops", "operator").await;
    let viewer = h.token("eyes", "viewer").await;

    // profiles
    let put = h
        .call(
            "PUT",
            "/api/v1/profiles/r640",
            Some(&admin),
            Body::Text("application/yaml", SPEC.into()),
        )
        .await;
    assert_eq!(put.status, 200, "{put:?}");
    assert_eq!(put.body["name"], "r640");
    assert_eq!(put.body["text"], SPEC);
    let check = h
        .call(
            "POST",
            "/api/v1/profiles/check",
            Some(&viewer),
            Body::Text("application/yaml", SPEC.into()),
        )
        .await;
    assert_eq!(check.body, json!({"valid": true}));
    let profiles = h.get("/api/v1/profiles", &viewer).await;
    assert_eq!(profiles.body.as_array().unwrap().len(), 1);
    assert_eq!(
        h.get("/api/v1/profiles/r640", &viewer).await.body["name"],
        "r640"
    );

    // hosts
    let created = h
        .post(
            "/api/v1/hosts",
            &admin,
            json!({"name": "web-1", "macs": ["52:54:00:00:00:01"], "spec_profile": "r640"}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["macs"], json!(["52:54:00:00:00:01"]));
    let imported = h
        .call(
            "POST",
            "/api/v1/hosts/import",
            Some(&admin),
            Body::Text(
                "text/csv",
                "name,macs,serial,profile,power\nweb-2,52:54:00:00:00:02,S2,,\nweb-3,52:54:00:00:00:03;52:54:00:00:00:33,,r640,\n"
                    .into(),
            ),
        )
        .await;
    assert_eq!(imported.status, 201, "{imported:?}");
    assert_eq!(imported.body.as_array().unwrap().len(), 2);
    let page = h.get("/api/v1/hosts?limit=2", &viewer).await;
    assert_eq!(page.status, 200, "{page:?}");
    let names: Vec<&str> = page.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|host| host["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-1", "web-2"]);
    let rest = h
        .get(
            &format!(
                "/api/v1/hosts?limit=2&before={}",
                page.body["next"].as_str().unwrap()
            ),
            &viewer,
        )
        .await;
    assert_eq!(rest.body["items"][0]["name"], "web-3");
    assert_eq!(rest.body["next"], Value::Null);
    let edited = h
        .call(
            "PATCH",
            "/api/v1/hosts/web-2",
            Some(&admin),
            Body::Json(json!({"serial": "S2-new"})),
        )
        .await;
    assert_eq!(edited.status, 200, "{edited:?}");
    assert_eq!(edited.body["serial"], "S2-new");

    // runs
    let started = h
        .post(
            "/api/v1/runs",
            &operator,
            json!({"hosts": ["web-1", "web-2"]}),
        )
        .await;
    assert_eq!(started.status, 200, "{started:?}");
    let started = started.body["started"].as_array().unwrap().clone();
    assert_eq!(started.len(), 2);
    assert_eq!(started[0]["host"], "web-1");
    let run_id = started[0]["run"]["id"].as_str().unwrap().to_string();
    let other_run = started[1]["run"]["id"].as_str().unwrap().to_string();
    h.wait_for(&run_id, RunState::Booting).await;
    let detail = h.get("/api/v1/hosts/web-1", &viewer).await;
    assert_eq!(detail.status, 200, "{detail:?}");
    assert_eq!(detail.body["active_run"]["id"], run_id.as_str());
    assert_eq!(detail.body["recent_runs"][0]["id"], run_id.as_str());
    let runs = h.get("/api/v1/runs?host=web-1", &viewer).await;
    assert_eq!(runs.status, 200, "{runs:?}");
    assert_eq!(runs.body["items"][0]["id"], run_id.as_str());
    assert_eq!(runs.body["items"][0]["host_name"], "web-1");
    let run = h.get(&format!("/api/v1/runs/{run_id}"), &viewer).await;
    assert_eq!(run.status, 200, "{run:?}");
    assert_eq!(run.body["run"]["host_name"], "web-1");
    assert_eq!(run.body["host"]["name"], "web-1");
    assert_eq!(run.body["run"]["state"], "Booting");
    let steps: Vec<&str> = run.body["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["to"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["Queued", "WaitingWoL", "Booting"]);
    assert_eq!(run.body["held_findings"], json!([]));
    let logs = h.get(&format!("/api/v1/runs/{run_id}/logs"), &viewer).await;
    assert_eq!(logs.status, 200, "{logs:?}");
    assert_eq!(logs.body["lines"], json!([]));
    // the power action is the orchestrator's own line
    assert!(
        !logs.body["orchestrator"].as_array().unwrap().is_empty(),
        "{logs:?}"
    );
    let storage = h
        .get(
            &format!("/api/v1/runs/{run_id}/logs?stage=Storage&after=3"),
            &viewer,
        )
        .await;
    assert_eq!(storage.body["next"], 3);
    assert_eq!(storage.body["orchestrator"], json!([]));
    let held = h
        .post(
            &format!("/api/v1/runs/{run_id}/retry-stage"),
            &operator,
            json!({"stage": "Storage"}),
        )
        .await;
    assert_eq!(held.status, 409, "not held: {held:?}");
    let override_wipe = h
        .post(
            &format!("/api/v1/runs/{run_id}/override-wipe"),
            &operator,
            json!({"acknowledge": ["serial:X/gpt@0x200"]}),
        )
        .await;
    assert_eq!(override_wipe.status, 409, "not held: {override_wipe:?}");
    let release = h
        .call(
            "POST",
            &format!("/api/v1/runs/{run_id}/release"),
            Some(&operator),
            Body::None,
        )
        .await;
    assert_eq!(release.status, 409, "not held: {release:?}");
    let cancelled = h
        .post(
            &format!("/api/v1/runs/{run_id}/cancel"),
            &operator,
            json!({"acknowledge": "bench test"}),
        )
        .await;
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    assert_eq!(cancelled.body["state"], "Cancelled");
    assert_eq!(cancelled.body["event"], "cancel");
    let audit = h
        .orchestrator
        .operator()
        .audit_log(Some(&run_id))
        .await
        .unwrap();
    assert!(
        audit.iter().any(|record| record.actor == "token:ops"),
        "the audit names the token: {audit:?}"
    );
    let report = h
        .get(&format!("/api/v1/runs/{run_id}/report"), &viewer)
        .await;
    assert_eq!(report.status, 200, "{report:?}");
    assert_eq!(report.body["run"]["id"], run_id.as_str());
    let html = h
        .get(
            &format!("/api/v1/runs/{run_id}/report?format=html"),
            &viewer,
        )
        .await;
    assert_eq!(html.status, 200);
    assert!(html.content_type.starts_with("text/html"), "{html:?}");
    assert!(html.text.contains(&run_id));
    let ocp = h
        .get(&format!("/api/v1/runs/{run_id}/report?format=ocp"), &viewer)
        .await;
    assert_eq!(ocp.status, 200, "{ocp:?}");
    assert_eq!(ocp.content_type, "application/x-ndjson");
    let first: Value = serde_json::from_str(ocp.text.lines().next().unwrap()).unwrap();
    assert!(first.get("schemaVersion").is_some(), "{first}");
    h.post(
        &format!("/api/v1/runs/{other_run}/cancel"),
        &operator,
        json!({}),
    )
    .await;

    // dispatch
    let paused = h.post("/api/v1/dispatch/pause", &admin, json!({})).await;
    assert_eq!(paused.status, 200, "{paused:?}");
    assert_eq!(paused.body["paused"], true);
    assert_eq!(
        h.get("/api/v1/dispatch", &viewer).await.body["paused"],
        true
    );
    let resumed = h.post("/api/v1/dispatch/resume", &admin, json!({})).await;
    assert_eq!(resumed.body["paused"], false);

    // tokens
    let tokens = h.get("/api/v1/tokens", &admin).await;
    let names: Vec<&str> = tokens
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|token| token["name"].as_str().unwrap())
        .collect();
    for name in ["ops", "eyes"] {
        assert!(names.contains(&name), "{names:?}");
    }
    assert!(
        names.iter().any(|name| name.starts_with("local-cli.")),
        "{names:?}"
    );
    assert!(
        !tokens.text.contains(&viewer),
        "a secret is never listed again"
    );
    let revoked = h
        .call("DELETE", "/api/v1/tokens/eyes", Some(&admin), Body::None)
        .await;
    assert_eq!(revoked.status, 200, "{revoked:?}");
    assert!(revoked.body["revoked_at_ms"].is_i64());

    // removals
    let removed = h
        .call("DELETE", "/api/v1/hosts/web-3", Some(&admin), Body::None)
        .await;
    assert_eq!(removed.status, 204, "{removed:?}");
    let gone = h.get("/api/v1/hosts/web-3", &admin).await;
    assert_eq!(gone.status, 404, "{gone:?}");
    assert_eq!(
        h.call(
            "DELETE",
            "/api/v1/hosts/web-1",
            Some(&admin),
            Body::Json(json!({}))
        )
        .await
        .status,
        204
    );
    h.call(
        "PATCH",
        "/api/v1/hosts/web-2",
        Some(&admin),
        Body::Json(json!({"spec_profile": ""})),
    )
    .await;
    let profile_gone = h
        .call("DELETE", "/api/v1/profiles/r640", Some(&admin), Body::None)
        .await;
    assert_eq!(profile_gone.status, 204, "{profile_gone:?}");
    assert_eq!(h.get("/api/v1/profiles/r640", &admin).await.status, 404);

    // the document and the metrics need no token
    let document = h
        .call("GET", "/api/v1/openapi.json", None, Body::None)
        .await;
    assert_eq!(document.status, 200);
    assert_eq!(document.body["openapi"], "3.1.0");
    let metrics = h.call("GET", "/metrics", None, Body::None).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text.contains("vetting_runs{state=\"Cancelled\"} 2"),
        "{}",
        metrics.text
    );
    h.shutdown().await;
}

/// The CLI on the local database calls the router in-process with a
/// trusted principal; the same request without it is refused.
#[tokio::test]
async fn the_in_process_router_takes_a_trusted_principal_and_nothing_else() {
    use tower::ServiceExt;
    use vetting_core::operator::{Principal, Role};
    let dir = tempfile::tempdir().unwrap();
    let orchestrator = Orchestrator::open(
        loopback_config(dir.path()),
        Arc::new(vetting_core::clock::SystemClock),
    )
    .await
    .unwrap();
    let router = vetting_http::api::router(orchestrator);
    let request = |trusted: Option<Role>| {
        let mut request = axum::http::Request::builder()
            .method("POST")
            .uri("/api/v1/hosts")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(
                json!({"name": "cli-1", "macs": ["52:54:00:00:01:01"]}).to_string(),
            ))
            .unwrap();
        if let Some(role) = trusted {
            request
                .extensions_mut()
                .insert(vetting_http::api::Trusted(Principal {
                    name: "local:root".into(),
                    role,
                }));
        }
        request
    };
    let refused = router.clone().oneshot(request(None)).await.unwrap();
    assert_eq!(refused.status(), 401);
    let viewer = router
        .clone()
        .oneshot(request(Some(Role::Viewer)))
        .await
        .unwrap();
    assert_eq!(viewer.status(), 403);
    let admin = router
        .clone()
        .oneshot(request(Some(Role::Admin)))
        .await
        .unwrap();
    assert_eq!(admin.status(), 201);
    let unknown = router
        .oneshot(
            axum::http::Request::builder()
                .uri("/api/v1/nowhere")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}
