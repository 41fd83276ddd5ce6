//! The boot chain's HTTP side: `/ipxe/{mac}` (the iPXE script a host boots
//! with) and `/boot/{file}` (the live image's kernel and initrd, with range
//! requests). What a MAC gets is decided in `vetting_core::boot`.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tower_http::services::ServeDir;
use vetting_core::boot::{IpxeAnswer, IpxeRequest, ipxe_answer};
use vetting_core::pxe::{Firmware, MacAddress};

use crate::AppState;
use crate::error::ApiError;

/// `/ipxe/{mac}` and `/boot/` (served from `boot_dir`).
pub fn routes(boot_dir: std::path::PathBuf) -> Router<AppState> {
    Router::new()
        .route("/ipxe/{mac}", get(ipxe))
        .nest_service("/boot", ServeDir::new(boot_dir))
}

#[derive(Debug, Deserialize)]
struct IpxeQuery {
    platform: Option<String>,
}

fn script(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn ipxe(
    State(state): State<AppState>,
    Path(mac): Path<String>,
    Query(query): Query<IpxeQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    let mac: MacAddress = mac
        .parse()
        .map_err(|error| ApiError::bad_request(format!("/ipxe/{{mac}}: {error}")))?;
    let firmware = query
        .platform
        .as_deref()
        .and_then(Firmware::from_ipxe_platform);
    let Some(ConnectInfo(peer)) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .copied()
    else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the server does not know the client's address",
        ));
    };
    let answer = ipxe_answer(
        &state.orchestrator,
        state.leases.as_deref(),
        &state.boot_log,
        IpxeRequest {
            mac,
            firmware,
            peer: peer.ip(),
        },
    )
    .await?;
    Ok(match answer {
        IpxeAnswer::Boot { script: body, .. } => script(StatusCode::OK, body),
        IpxeAnswer::Exit { script: body, .. } => script(StatusCode::OK, body),
        IpxeAnswer::Refused { script: body, .. } => script(StatusCode::FORBIDDEN, body),
    })
}
