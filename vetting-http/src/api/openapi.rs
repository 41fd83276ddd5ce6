//! The OpenAPI 3.1 document of the operator API, generated from the
//! handlers' annotations (utoipa), served at `/api/v1/openapi.json` and
//! committed as `docs/openapi.json` (a test compares them).

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use super::{dispatch, events, hosts, metrics, profiles, runs, tokens};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "vetting operator API",
        version = "1",
        description = "What the `vetting` CLI, automation and the web UI call (docs/operator-api.md). \
            Authenticate with `Authorization: Bearer vtk1.NAME.SECRET`; roles viewer < operator < admin.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        hosts::list, hosts::create, hosts::import, hosts::get, hosts::edit, hosts::remove,
        profiles::list, profiles::get, profiles::put, profiles::remove, profiles::check,
        runs::start, runs::list, runs::get, runs::logs, runs::cancel, runs::release,
        runs::override_wipe, runs::retry_stage, runs::report,
        tokens::list, tokens::create, tokens::revoke,
        dispatch::status, dispatch::pause, dispatch::resume,
        events::events, openapi_json, metrics::metrics,
    ),
    modifiers(&BearerToken),
    tags(
        (name = "hosts", description = "the host registry"),
        (name = "profiles", description = "spec profiles"),
        (name = "runs", description = "runs and the operator's actions on them"),
        (name = "tokens", description = "API tokens"),
        (name = "dispatch", description = "pausing the dispatcher"),
        (name = "events", description = "the events stream (SSE)"),
        (name = "metrics", description = "Prometheus metrics"),
        (name = "meta", description = "this document"),
    )
)]
struct ApiDoc;

struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document as served and committed: pretty JSON and a newline.
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    text.push('\n');
    text
}

#[utoipa::path(get, path = "/api/v1/openapi.json", operation_id = "openapi", tag = "meta",
    responses((status = 200, description = "this document", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}
