//! The join token: base64url of JSON `{v, scope, fp, api, secret}` — the CA fingerprint the joiner
//! pins, the API addresses of members to try, and a one-time secret. The cluster stores only
//! the SHA-256 of the secret, so the replicated state (and its snapshots) never holds a usable
//! token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinToken {
    pub v: u32,
    /// The cluster's scope (the joiner's certificate names it).
    pub scope: String,
    /// Hex SHA-256 of the cluster CA certificate (DER).
    pub fp: String,
    /// REST API addresses (`host:port`) of members at the time the token was made.
    pub api: Vec<String>,
    /// base64url of 32 random bytes.
    pub secret: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error(
        "the join token is not valid base64url: copy it whole from `pgha init` or `pgha ctl token create`"
    )]
    Encoding,
    #[error("the join token is malformed ({0}): copy it whole from `pgha init` or `pgha ctl token create`")]
    Malformed(String),
    #[error("the join token has version {0}; this pgha understands version 1")]
    Version(u32),
}

impl JoinToken {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("tokens serialize"))
    }

    pub fn decode(text: &str) -> Result<JoinToken, TokenError> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| TokenError::Encoding)?;
        let t: JoinToken =
            serde_json::from_slice(&bytes).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if t.v != 1 {
            return Err(TokenError::Version(t.v));
        }
        if t.api.is_empty() || t.fp.len() != 64 || t.secret.is_empty() {
            return Err(TokenError::Malformed("missing fingerprint, address or secret".into()));
        }
        Ok(t)
    }
}

/// Makes a fresh secret: base64url of 32 bytes from the OS RNG (ring).
pub fn new_secret() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut b).expect("the OS random source works");
    URL_SAFE_NO_PAD.encode(b)
}

/// What the cluster stores: hex SHA-256 of the secret.
pub fn secret_hash(secret: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_say_why() {
        let t = JoinToken {
            v: 1,
            scope: "s".into(),
            fp: "a".repeat(64),
            api: vec!["127.0.0.1:8008".into()],
            secret: new_secret(),
        };
        assert_eq!(JoinToken::decode(&t.encode()).unwrap(), t);
        assert_eq!(JoinToken::decode("%%%"), Err(TokenError::Encoding));
        assert!(matches!(JoinToken::decode(&URL_SAFE_NO_PAD.encode(b"{}")), Err(TokenError::Malformed(_))));
        let v2 = JoinToken { v: 2, ..t.clone() };
        assert_eq!(JoinToken::decode(&v2.encode()), Err(TokenError::Version(2)));
        let truncated = &t.encode()[..20];
        assert!(JoinToken::decode(truncated).is_err());
    }

    #[test]
    fn secrets_are_unique_and_hashed() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(secret_hash(&a).len(), 64);
        assert_ne!(secret_hash(&a), secret_hash(&b));
    }
}
