//! API tokens: created with a role, shown once, stored hashed, revoked by
//! name; every operator API request is authenticated through them.

use crate::error::Result;
use crate::model::Actor;

use super::{ApiToken, CreatedToken, Operator, Principal, Role};

impl Operator {
    /// Creates a token named `name` (1 to 64 of `[A-Za-z0-9._-]`, unique
    /// among tokens not revoked) with `role`. The secret is returned once
    /// and stored only as a hash. Audited.
    pub async fn create_api_token(
        &self,
        name: &str,
        role: Role,
        actor: &Actor,
    ) -> Result<CreatedToken> {
        let _ = (name, role, actor);
        todo!("issue 11: api tokens")
    }

    /// Tokens, revoked ones included, by name.
    pub async fn list_api_tokens(&self) -> Result<Vec<ApiToken>> {
        todo!("issue 11: api tokens")
    }

    /// Revokes the token named `name`: it stops working at once. Audited.
    pub async fn revoke_api_token(&self, name: &str, actor: &Actor) -> Result<ApiToken> {
        let _ = (name, actor);
        todo!("issue 11: api tokens")
    }

    /// Who `secret` (a whole `vtk1.` token) is: `BadCredentials` for a
    /// malformed, unknown, wrong or revoked one, without saying which.
    /// Records `last_used_at_ms` (at most once a minute per token).
    pub async fn authenticate_api_token(&self, secret: &str) -> Result<Principal> {
        let _ = secret;
        todo!("issue 11: api tokens")
    }
}
