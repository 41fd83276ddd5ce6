//! The OpenAPI document: served equal to the committed `docs/openapi.json`
//! byte for byte, valid OpenAPI 3.1, and naming every route of
//! `docs/operator-api.md`.

use super::*;

fn committed_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
}

#[tokio::test]
async fn the_served_document_is_the_committed_one() {
    let h = harness().await;
    let served = h
        .call("GET", "/api/v1/openapi.json", None, Body::None)
        .await;
    assert_eq!(served.status, 200);
    assert_eq!(served.text, vetting_http::api::openapi_document());
    let path = committed_path();
    if std::env::var("VETTING_UPDATE_OPENAPI").is_ok_and(|value| value == "1") {
        std::fs::write(&path, &served.text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == served.text,
        "docs/openapi.json differs from the served document: run \
         `VETTING_UPDATE_OPENAPI=1 cargo test -p vetting-http --test operator_api -- openapi` \
         and commit docs/openapi.json"
    );
    h.shutdown().await;
}

#[test]
fn the_document_validates_as_openapi_3_1() {
    if !vetting_testkit::prerequisite(python_validator()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, vetting_http::api::openapi_document()).unwrap();
    let output = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator", "--schema", "3.1.0"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let document: Value = serde_json::from_str(&vetting_http::api::openapi_document()).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
}

/// The validator's Python module (scripts/install-deps.sh installs it).
fn python_validator() -> Option<String> {
    vetting_testkit::program("python3")?;
    let found = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .is_ok_and(|output| output.status.success());
    (!found).then(|| {
        "the Python module openapi_spec_validator (pip install openapi-spec-validator)".to_string()
    })
}

#[test]
fn every_documented_route_is_in_the_document() {
    let table = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operator-api.md"),
    )
    .unwrap();
    let document: Value = serde_json::from_str(&vetting_http::api::openapi_document()).unwrap();
    let paths = document["paths"].as_object().unwrap();
    let mut checked = 0;
    for line in table.lines() {
        // | `GET /api/v1/hosts?limit&before` | viewer | ...
        let Some(cell) = line.strip_prefix("| `") else {
            continue;
        };
        let Some((route, _)) = cell.split_once('`') else {
            continue;
        };
        let Some((methods, path)) = route.split_once(' ') else {
            continue;
        };
        if !path.starts_with('/') {
            continue;
        }
        let path = path.split('?').next().unwrap();
        // `POST /api/v1/dispatch/pause`, `/resume`
        let mut routes = vec![path.to_string()];
        let first_cell = line.trim_start_matches('|').split('|').next().unwrap();
        if let Some(rest) = first_cell.split("`, `").nth(1) {
            let extra = rest.split('`').next().unwrap();
            let parent = path.rsplit_once('/').unwrap().0;
            routes.push(format!("{parent}{extra}"));
        }
        for route in routes {
            // the table writes `{id}`, the router `{run_id}`
            let route = route.replace("/runs/{id}", "/runs/{run_id}");
            let item = paths
                .get(&route)
                .unwrap_or_else(|| panic!("{route} is not in the OpenAPI document"));
            let method = methods.to_ascii_lowercase();
            assert!(
                item.get(&method).is_some(),
                "{methods} {route} is not documented"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 29,
        "only {checked} routes found in docs/operator-api.md"
    );
}
