//! Who is calling the operator API: the bearer API token, checked by
//! core (`Operator::authenticate_api_token`), or the [`Trusted`] principal
//! of an in-process caller (the CLI on the local database); then the
//! route's role. An extractor, taken from the headers before any body.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use vetting_core::error::OrchestratorError;
use vetting_core::model::Actor;
use vetting_core::operator::{Principal, Role};

use crate::AppState;
use crate::error::ApiError;

/// The principal of a request made in-process (the CLI calling
/// [`super::router`] through `tower::ServiceExt::oneshot`): a request
/// extension, which nothing from the network can set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trusted(pub Principal);

/// The role a route needs.
pub trait NeedsRole {
    const ROLE: Role;
}

/// Every `GET`.
#[derive(Debug)]
pub struct ViewerRole;
/// Run actions: start, cancel, override, release, retry a stage.
#[derive(Debug)]
pub struct OperatorRole;
/// Hosts, profiles, tokens, dispatch.
#[derive(Debug)]
pub struct AdminRole;

impl NeedsRole for ViewerRole {
    const ROLE: Role = Role::Viewer;
}
impl NeedsRole for OperatorRole {
    const ROLE: Role = Role::Operator;
}
impl NeedsRole for AdminRole {
    const ROLE: Role = Role::Admin;
}

/// An authenticated caller whose role allows the route's `R`.
#[derive(Debug)]
pub struct Caller<R> {
    pub principal: Principal,
    role: PhantomData<R>,
}

impl<R> Caller<R> {
    /// Who the audit names.
    pub fn actor(&self) -> Actor {
        self.principal.actor()
    }
}

pub type Viewer = Caller<ViewerRole>;
pub type Operator = Caller<OperatorRole>;
pub type Admin = Caller<AdminRole>;

impl<R: NeedsRole> FromRequestParts<AppState> for Caller<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = match parts.extensions.get::<Trusted>() {
            Some(Trusted(principal)) => principal.clone(),
            None => {
                let token = crate::agent::bearer(&parts.headers)?.to_string();
                match state
                    .orchestrator
                    .operator()
                    .authenticate_api_token(&token)
                    .await
                {
                    Ok(principal) => principal,
                    Err(OrchestratorError::BadCredentials | OrchestratorError::Unauthorized(_)) => {
                        return Err(ApiError::unauthorized());
                    }
                    Err(other) => return Err(other.into()),
                }
            }
        };
        if !principal.role.allows(R::ROLE) {
            return Err(OrchestratorError::Forbidden {
                action: format!("{} {}", parts.method, parts.uri.path()),
                needed: R::ROLE,
                role: principal.role,
            }
            .into());
        }
        Ok(Caller {
            principal,
            role: PhantomData,
        })
    }
}
