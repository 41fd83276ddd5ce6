//! API tokens: created with a role, shown once, stored hashed, revoked by
//! name; every operator API request is authenticated through them.
//!
//! A token is `vtk1.NAME.SECRET` (SECRET: 32 random bytes, base64url).
//! The database keeps a bcrypt hash of the SHA-256 of the whole token
//! (`tokens::HashScheme::Sha256Bcrypt`, as run tokens). A verification is
//! kept in memory for [`VERIFIED_FOR_MS`], keyed by the token's SHA-256,
//! so bcrypt runs once per token and minute, not per request; every
//! request still reads the token's row by id (one primary-key lookup),
//! so a revocation takes effect at once in every process sharing the
//! database, this one or another.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::clock::Millis;
use crate::error::{OrchestratorError, Result, db, internal};
use crate::model::Actor;
use crate::store::audit;
use crate::store::entities::api_token;
use crate::tokens::{self, HashScheme};

use super::{ApiToken, CreatedToken, Operator, Principal, Role};

/// The prefix of an API token.
pub const API_TOKEN_PREFIX: &str = "vtk1.";
/// How long a verification is kept (the row is still read per request).
pub const VERIFIED_FOR_MS: Millis = 60_000;
/// `last_used_at_ms` is written at most this often per token.
const TOUCH_EVERY_MS: Millis = 60_000;
/// The most verifications kept; past it the map starts over.
const VERIFIED_KEPT: usize = 4096;
const SECRET_LEN: usize = 32;

/// Verified tokens by the SHA-256 of the whole token.
#[derive(Debug, Default)]
pub(crate) struct VerifiedTokens(Mutex<HashMap<[u8; 32], Verified>>);

#[derive(Debug, Clone)]
struct Verified {
    token_id: i64,
    name: String,
    role: Role,
    verified_at_ms: Millis,
}

impl VerifiedTokens {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Verified>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, digest: &[u8; 32], now: Millis) -> Option<Verified> {
        let mut map = self.map();
        match map.get(digest) {
            Some(found) if now.saturating_sub(found.verified_at_ms) < VERIFIED_FOR_MS => {
                Some(found.clone())
            }
            Some(_) => {
                map.remove(digest);
                None
            }
            None => None,
        }
    }

    fn put(&self, digest: [u8; 32], verified: Verified) {
        let mut map = self.map();
        if map.len() >= VERIFIED_KEPT {
            map.clear();
        }
        map.insert(digest, verified);
    }

    fn forget_token(&self, token_id: i64) {
        self.map()
            .retain(|_, verified| verified.token_id != token_id);
    }
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

/// A bcrypt hash nothing matches, verified against for an unknown name so
/// that the answer takes as long as for a known one.
fn decoy_hash(cost: u32) -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        tokens::hash_token("vtk1.decoy.decoy", HashScheme::Sha256Bcrypt, cost).unwrap_or_default()
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
        let cost = self.core.inner.bcrypt_cost;
        let hashed = secret.clone();
        let token_hash = tokio::task::spawn_blocking(move || {
            tokens::hash_token(&hashed, HashScheme::Sha256Bcrypt, cost)
        })
        .await
        .map_err(internal)?
        .map_err(OrchestratorError::Unauthorized)?;
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
        self.core.inner.api_tokens.forget_token(found.id);
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
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let now = self.core.now_ms();
        let cache = &self.core.inner.api_tokens;
        if let Some(verified) = cache.get(&digest, now) {
            // the row says whether it was revoked since (by any process)
            let row = crate::store::api_tokens::by_id(self.core.conn(), verified.token_id)
                .await
                .map_err(db("reading an API token"))?;
            match row {
                Some(row) if row.revoked_at_ms.is_none() => {
                    self.touch_api_token(&row, now).await;
                    return Ok(Principal {
                        name: format!("token:{}", verified.name),
                        role: verified.role,
                    });
                }
                _ => {
                    cache.forget_token(verified.token_id);
                    return Err(OrchestratorError::BadCredentials);
                }
            }
        }
        let row = crate::store::api_tokens::live_by_name(self.core.conn(), name)
            .await
            .map_err(db("reading an API token"))?;
        let cost = self.core.inner.bcrypt_cost;
        let (hash, known) = match &row {
            Some(row) => (row.token_hash.clone(), true),
            None => (decoy_hash(cost).to_string(), false),
        };
        let candidate = secret.to_string();
        let matches = tokio::task::spawn_blocking(move || {
            tokens::verify_bcrypt(&candidate, &hash, HashScheme::Sha256Bcrypt).is_ok()
        })
        .await
        .map_err(internal)?;
        let Some(row) = row.filter(|_| matches && known) else {
            return Err(OrchestratorError::BadCredentials);
        };
        let role = Role::parse(&row.role).ok_or(OrchestratorError::BadCredentials)?;
        cache.put(
            digest,
            Verified {
                token_id: row.id,
                name: row.name.clone(),
                role,
                verified_at_ms: now,
            },
        );
        self.touch_api_token(&row, now).await;
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
