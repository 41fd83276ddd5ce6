//! Bad input gets the documented status and a message naming what was
//! wrong, and nothing stored changes (every table row and data file).

use super::*;

#[tokio::test]
async fn bad_input_is_refused_by_name_and_changes_nothing() {
    let h = harness().await;
    let admin = h.admin.clone();
    let operator = h.token("ops", "operator").await;
    let taken = h.register(1).await;
    h.register(2).await;
    let run = h
        .orchestrator
        .operator()
        .start_run(taken.id, &Actor::operator("test"))
        .await
        .unwrap();
    h.wait_for(&run.id, RunState::Booting).await;
    // a token's first use is written once; the admin's too
    assert_eq!(h.get("/api/v1/dispatch", &admin).await.status, 200);
    let before = h.fingerprint().await;

    let json_cases: Vec<(&str, String, &str, Value, u16, &str)> = vec![
        (
            "POST",
            "/api/v1/hosts".into(),
            "admin",
            json!({"name": "new", "macs": ["52:54:00:zz:00:01"]}),
            422,
            "not a MAC address",
        ),
        (
            "POST",
            "/api/v1/hosts".into(),
            "admin",
            json!({"name": "new", "macs": [taken.macs[0].to_string()]}),
            409,
            "already belongs to host `h1`",
        ),
        (
            "POST",
            "/api/v1/hosts".into(),
            "admin",
            json!({"name": "h2", "macs": ["52:54:00:00:77:01"]}),
            422,
            "exists",
        ),
        (
            "POST",
            "/api/v1/hosts".into(),
            "admin",
            json!({"name": "new", "macs": ["52:54:00:00:77:01"], "colour": "red"}),
            422,
            "unknown field `colour`",
        ),
        (
            "POST",
            "/api/v1/hosts".into(),
            "admin",
            json!({"name": "new"}),
            422,
            "missing field `macs`",
        ),
        (
            "PATCH",
            "/api/v1/hosts/nobody".into(),
            "admin",
            json!({"serial": "S"}),
            404,
            "nobody",
        ),
        (
            "PATCH",
            "/api/v1/hosts/h2".into(),
            "admin",
            json!({"add_macs": [taken.macs[0].to_string()]}),
            409,
            "already belongs",
        ),
        (
            "POST",
            "/api/v1/runs".into(),
            "operator",
            json!({"hosts": ["h2", "nobody"]}),
            404,
            "nobody",
        ),
        (
            "POST",
            "/api/v1/runs".into(),
            "operator",
            json!({}),
            400,
            "name at least one host",
        ),
        (
            "POST",
            format!("/api/v1/runs/{}/override-wipe", run.id),
            "operator",
            json!({"acknowledge": ["serial:X/gpt@0x200"]}),
            409,
            "",
        ),
        (
            "POST",
            format!("/api/v1/runs/{}/override-wipe", run.id),
            "operator",
            json!({"acknowledge": []}),
            422,
            "acknowledges",
        ),
        (
            "POST",
            format!("/api/v1/runs/{}/retry-stage", run.id),
            "operator",
            json!({"stage": "Dancing"}),
            422,
            "unknown variant",
        ),
        (
            "POST",
            format!("/api/v1/runs/{}/retry-stage", run.id),
            "operator",
            json!({"stage": "Storage"}),
            409,
            "",
        ),
        (
            "POST",
            format!("/api/v1/runs/{}/release", run.id),
            "operator",
            json!({}),
            409,
            "",
        ),
        (
            "POST",
            format!("/api/v1/runs/{}/cancel", run.id),
            "operator",
            json!({"acknowledge": 7}),
            422,
            "invalid type",
        ),
        (
            "POST",
            "/api/v1/runs/no-such-run/cancel".into(),
            "operator",
            json!({}),
            404,
            "no-such-run",
        ),
        (
            "POST",
            "/api/v1/tokens".into(),
            "admin",
            json!({"name": "t", "role": "root"}),
            422,
            "unknown variant `root`",
        ),
        (
            "POST",
            "/api/v1/tokens".into(),
            "admin",
            json!({"name": "bad name/..", "role": "viewer"}),
            422,
            "",
        ),
        (
            "DELETE",
            "/api/v1/tokens/nobody".into(),
            "admin",
            Value::Null,
            404,
            "nobody",
        ),
    ];
    for (method, path, role, body, status, says) in json_cases {
        let token = if role == "admin" { &admin } else { &operator };
        let body = if body.is_null() {
            Body::None
        } else {
            Body::Json(body)
        };
        let answer = h.call(method, &path, Some(token), body).await;
        assert_eq!(answer.status, status, "{method} {path}: {answer:?}");
        let message = answer.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer:?}"));
        assert!(
            message.contains(says),
            "{method} {path}: `{message}` should say `{says}`"
        );
    }

    // CSV: one bad row among good ones, nothing imported, the line named
    let import = h
        .call(
            "POST",
            "/api/v1/hosts/import",
            Some(&admin),
            Body::Text(
                "text/csv",
                "name,macs,serial,profile,power\nok-1,52:54:00:00:66:01,,,\nbad,52:54:00:00:66:zz,,,\nok-2,52:54:00:00:66:03,,,\n".into(),
            ),
        )
        .await;
    assert_eq!(import.status, 422, "{import:?}");
    let rows = import.body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["line"], 3);

    // a spec with a wrong type: the field and the line named
    for path in ["/api/v1/profiles/r640", "/api/v1/profiles/check"] {
        let method = if path.ends_with("check") {
            "POST"
        } else {
            "PUT"
        };
        let answer = h
            .call(
                method,
                path,
                Some(&admin),
                Body::Text(
                    "application/yaml",
                    "schema_version: 1\nmemory:\n  total_gib: lots\n".into(),
                ),
            )
            .await;
        assert_eq!(answer.status, 422, "{path}: {answer:?}");
        let message = answer.body["error"].as_str().unwrap();
        assert!(
            message.contains("total_gib") || message.contains("memory"),
            "{message}"
        );
        assert!(message.contains("line 3"), "{message}");
    }
    let not_utf8 = h
        .client
        .put(format!("{}/api/v1/profiles/x", h.url))
        .bearer_auth(&admin)
        .body(vec![0xff, 0xfe, 0x00])
        .send()
        .await
        .unwrap();
    assert_eq!(not_utf8.status(), 400);

    // queries: never a path, never a surprise
    for (path, status) in [
        (
            format!("/api/v1/runs/{}/logs?stage=../../../etc/passwd", run.id),
            400,
        ),
        (
            format!("/api/v1/runs/{}/logs?stage=Storage/../../x", run.id),
            400,
        ),
        (format!("/api/v1/runs/{}/logs?after=-1", run.id), 400),
        ("/api/v1/runs/..%2F..%2Fsecret.key/logs".to_string(), 404),
        ("/api/v1/runs/..%2F..%2Fsecret.key/report".to_string(), 404),
        (format!("/api/v1/runs/{}/report?format=pdf", run.id), 400),
        ("/api/v1/hosts/nobody".to_string(), 404),
        ("/api/v1/profiles/nobody".to_string(), 404),
        ("/api/v1/hosts?limit=many".to_string(), 400),
    ] {
        let answer = h.get(&path, &operator).await;
        assert_eq!(answer.status, status, "{path}: {answer:?}");
        assert!(answer.body["error"].is_string(), "{path}: {answer:?}");
    }

    // bodies: malformed, the wrong type, too large
    let malformed = h
        .call(
            "POST",
            "/api/v1/hosts",
            Some(&admin),
            Body::Text("application/json", "{\"name\":".into()),
        )
        .await;
    assert_eq!(malformed.status, 400, "{malformed:?}");
    let not_json = h
        .call(
            "POST",
            "/api/v1/hosts",
            Some(&admin),
            Body::Text("text/plain", "{}".into()),
        )
        .await;
    assert_eq!(not_json.status, 415, "{not_json:?}");
    let huge = format!(
        "{{\"name\": \"big\", \"macs\": [\"52:54:00:00:55:01\"], \"serial\": \"{}\"}}",
        "x".repeat(vetting_http::api::JSON_LIMIT + 1)
    );
    let too_large = h
        .call(
            "POST",
            "/api/v1/hosts",
            Some(&admin),
            Body::Text("application/json", huge),
        )
        .await;
    assert_eq!(too_large.status, 413, "{}", too_large.status);
    assert!(too_large.body["error"].is_string());
    let wrong_method = h
        .call("PUT", "/api/v1/runs", Some(&admin), Body::None)
        .await;
    assert_eq!(wrong_method.status, 405);
    assert!(wrong_method.body["error"].is_string());

    assert_eq!(h.fingerprint().await, before, "nothing stored changed");
    h.shutdown().await;
}
