//! Session tokens: `b64url(JSON claims) . b64url(HMAC-SHA256(key, first part))`, unpadded.
//! The SDKs read `exp` (and Go `expiresIn`) from the first part; the rest is for licensd's own
//! heartbeat and self-ban checks. Stateless: any unexpired token licensd issued is accepted.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Session end, Unix seconds (equals the payload's `expiresIn`).
    pub exp: i64,
    #[serde(rename = "expiresIn")]
    pub expires_in: i64,
    pub app: String,
    pub lic: String,
    /// A digest of the bound HWID, so a token cannot be used from another machine.
    pub hw: String,
    /// The clamped TTL the client asked for, kept for every refresh.
    pub ttl: i64,
    pub iat: i64,
}

pub fn hwid_digest(hwid: &str) -> String {
    hex::encode(&Sha256::digest(hwid.as_bytes())[..16])
}

/// Same format as the browser sessions' tokens ([`crate::signed::Signer`]), under its own key.
pub struct TokenKey(crate::signed::Signer);

impl TokenKey {
    pub fn new(key: [u8; 32]) -> Self {
        Self(crate::signed::Signer::new(key))
    }

    pub fn mint(&self, claims: &Claims) -> String {
        self.0.sign(claims)
    }

    /// The claims of a token this key minted (the MAC is checked in constant time), expired or not.
    pub fn open(&self, token: &str) -> Option<Claims> {
        self.0.verify(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

    fn claims() -> Claims {
        Claims { exp: 10, expires_in: 10, app: "a".into(), lic: "L".into(), hw: hwid_digest("h"), ttl: 3600, iat: 1 }
    }

    #[test]
    fn minted_tokens_open_and_forgeries_do_not() {
        let key = TokenKey::new([1; 32]);
        let token = key.mint(&claims());
        assert_eq!(key.open(&token), Some(claims()));
        assert!(!token.contains('=') && !token.contains('+') && !token.contains('/'));
        assert_eq!(TokenKey::new([2; 32]).open(&token), None, "another key's token");
        let (body, tag) = token.split_once('.').unwrap();
        let mut forged = claims();
        forged.exp = i64::MAX;
        let forged_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(key.open(&format!("{forged_body}.{tag}")), None, "edited claims");
        assert_eq!(key.open(body), None);
        assert_eq!(key.open("not a token"), None);
    }
}
