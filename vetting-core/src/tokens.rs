//! Run tokens: `run ‖ nonce ‖ HMAC-SHA256(K, run ‖ nonce)`, where K is the
//! orchestrator's secret key (a `secret.key` file, mode 0600, or config),
//! never stored in the database. The database keeps the nonce and a bcrypt
//! hash of the token: a dump alone can neither reveal nor mint a token, and
//! a restart does not invalidate one. Checking a token costs an HMAC and a
//! constant-time comparison; bcrypt is verified once per run, at claim.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of every token, so a token is recognisable in logs (the rest is
/// never logged).
pub const TOKEN_PREFIX: &str = "vt1.";
const NONCE_LEN: usize = 16;
const MAC_LEN: usize = 32;
/// bcrypt cost for the stored hash.
pub const BCRYPT_COST: u32 = 10;

/// The orchestrator's 32-byte secret key.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("secret key file {path}: cannot be read or created")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("secret key {origin}: must be 64 hex digits (32 bytes)")]
    Malformed { origin: String },
    #[error("secret key file {path}: mode {mode:o} lets others read it; expected 0600")]
    TooOpen { path: String, mode: u32 },
}

impl SecretKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(bytes)
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        SecretKey(bytes)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str, origin: &str) -> Result<Self, KeyError> {
        let malformed = || KeyError::Malformed {
            origin: origin.to_string(),
        };
        let bytes = hex::decode(text.trim()).map_err(|_| malformed())?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| malformed())?;
        Ok(SecretKey(bytes))
    }

    /// Reads `path`, or creates it (mode 0600) with a new random key.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyError::TooOpen {
                        path: path.display().to_string(),
                        mode,
                    });
                }
                SecretKey::from_hex(&text, &path.display().to_string())
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = SecretKey::generate();
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                file.write_all(hex::encode(key.0).as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok(key)
            }
            Err(error) => Err(io(error)),
        }
    }

    /// A derived key for another purpose (BMC password encryption), so the
    /// token key is never used for two things.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| {
            // HMAC accepts keys of any length; this branch cannot happen.
            unreachable_hmac()
        });
        mac.update(b"vetting-derive:");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn mac(&self, run_id: &[u8], nonce: &[u8]) -> [u8; MAC_LEN] {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable_hmac());
        mac.update(&(run_id.len() as u32).to_be_bytes());
        mac.update(run_id);
        mac.update(nonce);
        mac.finalize().into_bytes().into()
    }
}

#[allow(clippy::panic)]
fn unreachable_hmac() -> HmacSha256 {
    panic!("HMAC-SHA256 accepts keys of any length")
}

/// A freshly minted token and what the database keeps of it.
#[derive(Debug)]
pub struct IssuedToken {
    /// The token itself: goes on the kernel command line, never stored.
    pub token: String,
    /// Stored: the nonce (hex).
    pub nonce_hex: String,
    /// Stored: bcrypt hash of the token's SHA-256 digest ([`HashScheme::Sha256Bcrypt`]).
    pub bcrypt_hash: String,
    /// Stored: how `bcrypt_hash` was made.
    pub scheme: HashScheme,
}

/// How the stored hash of a token was made. bcrypt reads only the first
/// 72 bytes of its input and a token is longer, so new tokens hash a
/// fixed-length digest of the whole token; runs minted before keep the
/// scheme they were minted with (`runs.token_hash_scheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashScheme {
    /// bcrypt over the token itself (runs minted before migration 4):
    /// only its first 72 bytes count.
    Bcrypt,
    /// bcrypt over the lowercase hex SHA-256 digest of the whole token.
    Sha256Bcrypt,
}

impl HashScheme {
    /// The stored name (`NULL` in the database reads as [`HashScheme::Bcrypt`]).
    pub fn as_str(self) -> &'static str {
        match self {
            HashScheme::Bcrypt => "bcrypt",
            HashScheme::Sha256Bcrypt => "sha256-bcrypt",
        }
    }

    /// The scheme of a stored name; `None` (old rows) is plain bcrypt, and
    /// an unknown name is `None` (refused: never guessed).
    pub fn from_stored(name: Option<&str>) -> Option<HashScheme> {
        match name {
            None | Some("bcrypt") => Some(HashScheme::Bcrypt),
            Some("sha256-bcrypt") => Some(HashScheme::Sha256Bcrypt),
            Some(_) => None,
        }
    }

    /// What bcrypt is given for `token` under this scheme.
    fn bcrypt_input(self, token: &str) -> String {
        match self {
            HashScheme::Bcrypt => token.to_string(),
            HashScheme::Sha256Bcrypt => hex::encode(Sha256::digest(token.as_bytes())),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token belongs to another run")]
    WrongRun,
    #[error("token signature does not match")]
    BadSignature,
    #[error("token has been replaced by a newer one")]
    StaleNonce,
    #[error("token does not match the stored hash")]
    HashMismatch,
    #[error("bcrypt failed: {0}")]
    Bcrypt(String),
}

/// Mints a token for `run_id`.
pub fn issue(key: &SecretKey, run_id: &str) -> Result<IssuedToken, TokenError> {
    issue_with_cost(key, run_id, BCRYPT_COST)
}

/// Mints a token with an explicit bcrypt cost (tests and benches use the
/// minimum to stay fast).
pub fn issue_with_cost(
    key: &SecretKey,
    run_id: &str,
    cost: u32,
) -> Result<IssuedToken, TokenError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let token = encode(key, run_id, &nonce);
    let scheme = HashScheme::Sha256Bcrypt;
    let bcrypt_hash = hash_token(&token, scheme, cost)?;
    Ok(IssuedToken {
        token,
        nonce_hex: hex::encode(nonce),
        bcrypt_hash,
        scheme,
    })
}

/// The stored hash of `token` under `scheme` (what [`verify_bcrypt`]
/// checks): run tokens and the operator's API tokens are hashed alike.
pub fn hash_token(token: &str, scheme: HashScheme, cost: u32) -> Result<String, TokenError> {
    bcrypt::hash(scheme.bcrypt_input(token), cost)
        .map_err(|error| TokenError::Bcrypt(error.to_string()))
}

/// The token of `run_id` for a stored nonce: the orchestrator derives it
/// again when it hands the boot script out (it is never stored).
pub fn derive_token(key: &SecretKey, run_id: &str, nonce: &[u8]) -> String {
    encode(key, run_id, nonce)
}

fn encode(key: &SecretKey, run_id: &str, nonce: &[u8]) -> String {
    let mac = key.mac(run_id.as_bytes(), nonce);
    let mut body = Vec::with_capacity(NONCE_LEN + MAC_LEN);
    body.extend_from_slice(nonce);
    body.extend_from_slice(&mac);
    format!("{TOKEN_PREFIX}{run_id}.{}", URL_SAFE_NO_PAD.encode(body))
}

/// The run id a token claims to be for (before it is checked).
pub fn claimed_run_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (run_id, _) = rest.rsplit_once('.')?;
    Some(run_id)
}

/// The fast check on every request: the token is for `run_id`, was minted
/// with our key, and carries the run's current nonce. Constant-time.
pub fn verify(
    key: &SecretKey,
    run_id: &str,
    stored_nonce_hex: &str,
    token: &str,
) -> Result<(), TokenError> {
    let rest = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(TokenError::Malformed)?;
    let (token_run, body) = rest.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let body = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed)?;
    if body.len() != NONCE_LEN + MAC_LEN {
        return Err(TokenError::Malformed);
    }
    let (nonce, mac) = body.split_at(NONCE_LEN);
    let expected = key.mac(token_run.as_bytes(), nonce);
    if !bool::from(expected.ct_eq(mac)) {
        return Err(TokenError::BadSignature);
    }
    if !bool::from(token_run.as_bytes().ct_eq(run_id.as_bytes())) {
        return Err(TokenError::WrongRun);
    }
    let stored_nonce = hex::decode(stored_nonce_hex).map_err(|_| TokenError::StaleNonce)?;
    if !bool::from(stored_nonce.ct_eq(nonce)) {
        return Err(TokenError::StaleNonce);
    }
    Ok(())
}

/// The once-per-run check at claim: the token matches the stored bcrypt
/// hash, made under `scheme`.
pub fn verify_bcrypt(token: &str, stored_hash: &str, scheme: HashScheme) -> Result<(), TokenError> {
    match bcrypt::verify(scheme.bcrypt_input(token), stored_hash) {
        Ok(true) => Ok(()),
        Ok(false) => Err(TokenError::HashMismatch),
        Err(error) => Err(TokenError::Bcrypt(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_for_its_run_only() {
        let key = SecretKey::generate();
        let issued = issue_with_cost(&key, "run-a", 4).unwrap();
        verify(&key, "run-a", &issued.nonce_hex, &issued.token).unwrap();
        verify_bcrypt(&issued.token, &issued.bcrypt_hash, issued.scheme).unwrap();
        assert_eq!(
            verify(&key, "run-b", &issued.nonce_hex, &issued.token),
            Err(TokenError::WrongRun)
        );
        let other = issue_with_cost(&key, "run-b", 4).unwrap();
        assert_eq!(
            verify(&key, "run-a", &issued.nonce_hex, &other.token),
            Err(TokenError::WrongRun)
        );
    }

    #[test]
    fn tampering_and_other_keys_are_refused() {
        let key = SecretKey::generate();
        let issued = issue_with_cost(&key, "run-a", 4).unwrap();
        let mut tampered = issued.token.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(verify(&key, "run-a", &issued.nonce_hex, &tampered).is_err());
        let other_key = SecretKey::generate();
        assert_eq!(
            verify(&other_key, "run-a", &issued.nonce_hex, &issued.token),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(&key, "run-a", &issued.nonce_hex, "garbage"),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn a_new_nonce_retires_the_old_token() {
        let key = SecretKey::generate();
        let first = issue_with_cost(&key, "run-a", 4).unwrap();
        let second = issue_with_cost(&key, "run-a", 4).unwrap();
        assert_eq!(
            verify(&key, "run-a", &second.nonce_hex, &first.token),
            Err(TokenError::StaleNonce)
        );
    }

    #[test]
    fn without_the_key_a_database_dump_mints_nothing() {
        // The database holds the nonce and the bcrypt hash. Someone with
        // both, but not the key, builds the best token they can: it fails.
        let key = SecretKey::generate();
        let issued = issue_with_cost(&key, "run-a", 4).unwrap();
        let guessed_key = SecretKey::from_bytes([0u8; 32]);
        let nonce = hex::decode(&issued.nonce_hex).unwrap();
        let forged = encode(&guessed_key, "run-a", &nonce);
        assert_eq!(
            verify(&key, "run-a", &issued.nonce_hex, &forged),
            Err(TokenError::BadSignature)
        );
        assert!(verify_bcrypt(&forged, &issued.bcrypt_hash, issued.scheme).is_err());
        assert!(!issued.bcrypt_hash.contains(&issued.token));
    }

    #[test]
    fn key_file_is_created_0600_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let first = SecretKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(first.bytes(), second.bytes());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            SecretKey::load_or_create(&path),
            Err(KeyError::TooOpen { .. })
        ));
    }
    #[test]
    fn bcrypt_alone_refuses_a_token_whose_tail_after_byte_72_differs() {
        // bcrypt reads 72 bytes: over the raw token, a changed tail passes
        let key = SecretKey::from_bytes([9; 32]);
        let issued = issue_with_cost(&key, "run-tail", 4).unwrap();
        assert!(issued.token.len() > 72, "{}", issued.token.len());
        let mut forged = issued.token[..72].to_string();
        forged.push_str(&"x".repeat(issued.token.len() - 72));
        assert_ne!(forged, issued.token);
        assert_eq!(issued.scheme, HashScheme::Sha256Bcrypt);
        assert_eq!(
            verify_bcrypt(&forged, &issued.bcrypt_hash, issued.scheme),
            Err(TokenError::HashMismatch)
        );
        verify_bcrypt(&issued.token, &issued.bcrypt_hash, issued.scheme).unwrap();
        // the old scheme, kept for runs in flight, shows why
        let old_hash = bcrypt::hash(&issued.token, 4).unwrap();
        assert!(verify_bcrypt(&forged, &old_hash, HashScheme::Bcrypt).is_ok());
        verify_bcrypt(&issued.token, &old_hash, HashScheme::Bcrypt).unwrap();
        assert_eq!(HashScheme::from_stored(None), Some(HashScheme::Bcrypt));
        assert_eq!(
            HashScheme::from_stored(Some("sha256-bcrypt")),
            Some(HashScheme::Sha256Bcrypt)
        );
        assert_eq!(HashScheme::from_stored(Some("md5")), None);
    }
}
