//! BMC passwords encrypted at rest with the orchestrator's secret key.
//!
//! ChaCha20-Poly1305 with a random 96-bit nonce per encryption, under a key
//! derived from the orchestrator's 32-byte secret key for this purpose only
//! (HMAC-SHA256 of a fixed label), so the secret key itself is used for
//! nothing but token MACs. Stored as text: `v1:` then base64 of nonce ‖
//! ciphertext ‖ tag. A database dump alone reveals no password; a restart
//! (same key) can still read them.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::Sha256;

const FORMAT_PREFIX: &str = "v1:";
const NONCE_LENGTH: usize = 12;
const TAG_LENGTH: usize = 16;
const KEY_DERIVATION_LABEL: &[u8] = b"vetting: BMC password encryption v1";
const ASSOCIATED_DATA: &[u8] = b"vetting-bmc-password";

/// Why a stored secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The stored text is not in the `v1:BASE64` format.
    #[error("stored secret is not in the v1:BASE64 format")]
    Malformed,
    /// Decryption failed: another key, or the text was altered.
    #[error(
        "stored secret cannot be decrypted with this orchestrator's secret key (another key, or altered text)"
    )]
    WrongKeyOrTampered,
    /// The decrypted bytes are not UTF-8.
    #[error("decrypted secret is not UTF-8 text")]
    NotText,
    /// Encryption failed (only possible for absurdly long input).
    #[error("secret could not be encrypted")]
    EncryptionFailed,
}

/// A password in the clear, kept out of `Debug` output and logs.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a password.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The password itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SecretString(<redacted>)")
    }
}

/// A secret encrypted with the orchestrator's key, as stored (in the host's
/// power settings JSON).
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EncryptedSecret(String);

fn purpose_key(secret_key: &[u8; 32]) -> Key {
    // HMAC accepts keys of any length, so this cannot fail; fall back to the
    // raw key rather than panic if it ever did.
    match <Hmac<Sha256> as Mac>::new_from_slice(secret_key) {
        Ok(mut mac) => {
            mac.update(KEY_DERIVATION_LABEL);
            let derived = mac.finalize().into_bytes();
            *Key::from_slice(&derived)
        }
        Err(_) => *Key::from_slice(secret_key),
    }
}

impl EncryptedSecret {
    /// Encrypts `plaintext` under `secret_key` with a fresh random nonce.
    pub fn encrypt(plaintext: &str, secret_key: &[u8; 32]) -> Result<Self, SecretError> {
        let cipher = ChaCha20Poly1305::new(&purpose_key(secret_key));
        let nonce_bytes: [u8; NONCE_LENGTH] = rand::random();
        let nonce = Nonce::from_slice(&nonce_bytes);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: ASSOCIATED_DATA,
        };
        let ciphertext = cipher
            .encrypt(nonce, payload)
            .map_err(|_| SecretError::EncryptionFailed)?;
        let mut stored = Vec::with_capacity(NONCE_LENGTH + ciphertext.len());
        stored.extend_from_slice(&nonce_bytes);
        stored.extend_from_slice(&ciphertext);
        Ok(Self(format!("{FORMAT_PREFIX}{}", BASE64.encode(stored))))
    }

    /// Decrypts with `secret_key`.
    pub fn decrypt(&self, secret_key: &[u8; 32]) -> Result<SecretString, SecretError> {
        let encoded = self
            .0
            .strip_prefix(FORMAT_PREFIX)
            .ok_or(SecretError::Malformed)?;
        let stored = BASE64.decode(encoded).map_err(|_| SecretError::Malformed)?;
        if stored.len() < NONCE_LENGTH + TAG_LENGTH {
            return Err(SecretError::Malformed);
        }
        let (nonce_bytes, ciphertext) = stored.split_at(NONCE_LENGTH);
        let cipher = ChaCha20Poly1305::new(&purpose_key(secret_key));
        let plaintext = cipher
            .decrypt(
                Nonce::from_slice(nonce_bytes),
                Payload {
                    msg: ciphertext,
                    aad: ASSOCIATED_DATA,
                },
            )
            .map_err(|_| SecretError::WrongKeyOrTampered)?;
        String::from_utf8(plaintext)
            .map(SecretString)
            .map_err(|_| SecretError::NotText)
    }

    /// Takes stored text, checking its format (not its key).
    pub fn from_stored_text(text: &str) -> Result<Self, SecretError> {
        let encoded = text
            .strip_prefix(FORMAT_PREFIX)
            .ok_or(SecretError::Malformed)?;
        let stored = BASE64.decode(encoded).map_err(|_| SecretError::Malformed)?;
        if stored.len() < NONCE_LENGTH + TAG_LENGTH {
            return Err(SecretError::Malformed);
        }
        Ok(Self(text.to_owned()))
    }

    /// The text to store.
    pub fn as_stored_text(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EncryptedSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("EncryptedSecret(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for EncryptedSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_stored_text(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn round_trip_with_random_nonces() {
        let first = EncryptedSecret::encrypt("s3cret pässword", &KEY).expect("encrypt");
        let second = EncryptedSecret::encrypt("s3cret pässword", &KEY).expect("encrypt");
        assert_ne!(first, second, "each encryption has its own nonce");
        assert!(!first.as_stored_text().contains("s3cret"));
        assert_eq!(
            first.decrypt(&KEY).expect("decrypt").expose(),
            "s3cret pässword"
        );
        assert_eq!(
            second.decrypt(&KEY).expect("decrypt").expose(),
            "s3cret pässword"
        );
    }

    #[test]
    fn wrong_key_and_tampering_are_refused() {
        let secret = EncryptedSecret::encrypt("hunter2", &KEY).expect("encrypt");
        assert_eq!(
            secret.decrypt(&[8; 32]),
            Err(SecretError::WrongKeyOrTampered)
        );
        let mut bytes = BASE64
            .decode(secret.as_stored_text().trim_start_matches(FORMAT_PREFIX))
            .expect("base64");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = EncryptedSecret::from_stored_text(&format!("v1:{}", BASE64.encode(bytes)))
            .expect("format");
        assert_eq!(tampered.decrypt(&KEY), Err(SecretError::WrongKeyOrTampered));
        assert_eq!(
            EncryptedSecret::from_stored_text("hunter2"),
            Err(SecretError::Malformed)
        );
        assert_eq!(
            EncryptedSecret::from_stored_text("v1:AAAA"),
            Err(SecretError::Malformed)
        );
    }

    #[test]
    fn debug_and_json_never_show_the_password() {
        let secret = EncryptedSecret::encrypt("hunter2", &KEY).expect("encrypt");
        assert_eq!(format!("{secret:?}"), "EncryptedSecret(<redacted>)");
        let plain = secret.decrypt(&KEY).expect("decrypt");
        assert_eq!(format!("{plain:?}"), "SecretString(<redacted>)");
        let json = serde_json::to_string(&secret).expect("json");
        assert!(!json.contains("hunter2"));
        let back: EncryptedSecret = serde_json::from_str(&json).expect("back");
        assert_eq!(back.decrypt(&KEY).expect("decrypt").expose(), "hunter2");
        assert!(serde_json::from_str::<EncryptedSecret>("\"hunter2\"").is_err());
    }
}
