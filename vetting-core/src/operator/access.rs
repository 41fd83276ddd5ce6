//! API tokens: created with a role, shown once, stored hashed, revoked by
//! name; every operator API request is authenticated through them.
//!
//! A token is `vtk1.NAME.SECRET` (SECRET: 32 random bytes, base64url).
//! The database keeps `hmac-sha256:HEX`, an HMAC-SHA256 of the whole
//! token under a key derived from the secret key: a database dump alone
//! can neither reveal a token nor check a guess. The secret has 256 bits
//! of entropy, so no slow hash is needed, and checking a token costs one
//! HMAC and one primary-key read: a flood of wrong tokens costs no
//! bcrypt. Every request reads the token's row, so a revocation takes
//! effect at once in every process sharing the database.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::clock::Millis;
use crate::error::{OrchestratorError, Result, db, internal};
use crate::model::Actor;
use crate::store::audit;
use crate::store::entities::api_token;
use crate::tokens;

use super::{ApiToken, CreatedToken, Operator, Principal, Role};

/// The prefix of an API token.
pub const API_TOKEN_PREFIX: &str = "vtk1.";
/// `last_used_at_ms` is written at most this often per token.
const TOUCH_EVERY_MS: Millis = 60_000;
const SECRET_LEN: usize = 32;
/// The stored form's prefix.
const STORED_PREFIX: &str = "hmac-sha256:";

/// What the database keeps of `secret`.
fn stored_digest(key: &tokens::SecretKey, secret: &str) -> String {
    let mac_key = key.derive("api-token");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&mac_key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(secret.as_bytes());
    format!(
        "{STORED_PREFIX}{}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Whether `name` may name a token: 1 to 64 of `[A-Za-z0-9._-]`.
fn check_token_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(OrchestratorError::BadRequest(format!(
            "token name `{}` is not valid: 1 to 64 of A-Z, a-z, 0-9, `.`, `_`, `-`",
            name.chars().take(80).collect::<String>()
        )))
    }
}

/// The name a token claims (before it is checked), if it is well formed.
fn claimed_name(secret: &str) -> Option<&str> {
    let rest = secret.strip_prefix(API_TOKEN_PREFIX)?;
    let (name, body) = rest.rsplit_once('.')?;
    let decoded = URL_SAFE_NO_PAD.decode(body).ok()?;
    (decoded.len() == SECRET_LEN && check_token_name(name).is_ok()).then_some(name)
}

fn listed(model: api_token::Model) -> Result<ApiToken> {
    let role = Role::parse(&model.role).ok_or_else(|| {
        internal(format!(
            "API token `{}` has an unknown stored role `{}`",
            model.name, model.role
        ))
    })?;
    Ok(ApiToken {
        name: model.name,
        role,
        created_at_ms: model.created_at_ms,
        created_by: model.created_by,
        last_used_at_ms: model.last_used_at_ms,
        revoked_at_ms: model.revoked_at_ms,
    })
}

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
        check_token_name(name)?;
        let mut bytes = [0u8; SECRET_LEN];
        rand::rng().fill_bytes(&mut bytes);
        let secret = format!("{API_TOKEN_PREFIX}{name}.{}", URL_SAFE_NO_PAD.encode(bytes));
        let token_hash = stored_digest(&self.core.inner.key, &secret);
        let now = self.core.now_ms();
        let txn = self.core.begin_write("creating an API token").await?;
        if crate::store::api_tokens::live_by_name(&txn, name)
            .await
            .map_err(db("creating an API token"))?
            .is_some()
        {
            return Err(OrchestratorError::BadRequest(format!(
                "an API token named `{name}` exists; revoke it first or pick another name"
            )));
        }
        let model = crate::store::api_tokens::insert(
            &txn,
            name,
            role.as_str(),
            token_hash,
            actor.as_str(),
            now,
        )
        .await
        .map_err(db("creating an API token"))?;
        audit::record(
            &txn,
            now,
            audit::Entry::new(actor, "create_api_token")
                .detail(serde_json::json!({"name": name, "role": role})),
        )
        .await?;
        txn.commit().await.map_err(db("creating an API token"))?;
        Ok(CreatedToken {
            token: listed(model)?,
            secret,
        })
    }

    /// Tokens, revoked ones included, by name.
    pub async fn list_api_tokens(&self) -> Result<Vec<ApiToken>> {
        crate::store::api_tokens::list(self.core.conn())
            .await
            .map_err(db("listing API tokens"))?
            .into_iter()
            .map(listed)
            .collect()
    }

    /// Revokes the token named `name`: it stops working at once. Audited.
    pub async fn revoke_api_token(&self, name: &str, actor: &Actor) -> Result<ApiToken> {
        let now = self.core.now_ms();
        let txn = self.core.begin_write("revoking an API token").await?;
        let found = crate::store::api_tokens::live_by_name(&txn, name)
            .await
            .map_err(db("revoking an API token"))?
            .ok_or_else(|| OrchestratorError::ApiTokenNotFound(name.to_string()))?;
        crate::store::api_tokens::revoke(&txn, found.id, now)
            .await
            .map_err(db("revoking an API token"))?;
        audit::record(
            &txn,
            now,
            audit::Entry::new(actor, "revoke_api_token")
                .detail(serde_json::json!({"name": name, "role": found.role})),
        )
        .await?;
        txn.commit().await.map_err(db("revoking an API token"))?;
        listed(api_token::Model {
            revoked_at_ms: Some(now),
            ..found
        })
    }

    /// Who `secret` (a whole `vtk1.` token) is: `BadCredentials` for a
    /// malformed, unknown, wrong or revoked one, without saying which.
    /// Records `last_used_at_ms` (at most once a minute per token).
    pub async fn authenticate_api_token(&self, secret: &str) -> Result<Principal> {
        let name = claimed_name(secret).ok_or(OrchestratorError::BadCredentials)?;
        let row = crate::store::api_tokens::live_by_name(self.core.conn(), name)
            .await
            .map_err(db("reading an API token"))?
            .ok_or(OrchestratorError::BadCredentials)?;
        let candidate = stored_digest(&self.core.inner.key, secret);
        let matches: bool = candidate.as_bytes().ct_eq(row.token_hash.as_bytes()).into();
        if !matches {
            return Err(OrchestratorError::BadCredentials);
        }
        let role = Role::parse(&row.role).ok_or(OrchestratorError::BadCredentials)?;
        self.touch_api_token(&row, self.core.now_ms()).await;
        Ok(Principal {
            name: format!("token:{}", row.name),
            role,
        })
    }

    /// Writes `last_used_at_ms` when the stored one is a minute old; a
    /// failure is logged, not the request's.
    async fn touch_api_token(&self, row: &api_token::Model, now: Millis) {
        if row
            .last_used_at_ms
            .is_some_and(|used| now.saturating_sub(used) < TOUCH_EVERY_MS)
        {
            return;
        }
        let touched = async {
            let txn = self
                .core
                .begin_write("recording an API token's use")
                .await?;
            crate::store::api_tokens::touch(&txn, row.id, now)
                .await
                .map_err(db("recording an API token's use"))?;
            txn.commit()
                .await
                .map_err(db("recording an API token's use"))
        };
        if let Err(error) = touched.await {
            tracing::warn!(token = %row.name, "recording an API token's use: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_tokens_name_a_token() {
        let body = URL_SAFE_NO_PAD.encode([7u8; 32]);
        assert_eq!(
            claimed_name(&format!("vtk1.ci.bot-1.{body}")),
            Some("ci.bot-1")
        );
        assert_eq!(claimed_name(&format!("vtk1..{body}")), None);
        assert_eq!(claimed_name(&format!("vt1.ci.{body}")), None);
        assert_eq!(claimed_name("vtk1.ci.short"), None);
        assert_eq!(claimed_name(&format!("vtk1.c i.{body}")), None);
        assert!(check_token_name(&"x".repeat(65)).is_err());
    }
}
