//! HMAC-SHA256 signed tokens for browser sessions (dashboard and portal): `<claims>.<mac>`, both
//! base64url. Stateless on purpose: nothing to store, and a key rotation ends every session.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::Serialize;

type HmacSha256 = Hmac<sha2::Sha256>;

#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
}

impl Signer {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    pub fn sign<T: Serialize>(&self, claims: &T) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        format!("{body}.{}", self.tag(body.as_bytes()))
    }

    /// The claims of a token this signer made; `None` for anything else (checked in constant time).
    pub fn verify<T: DeserializeOwned>(&self, token: &str) -> Option<T> {
        let (body, tag) = token.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.verify_slice(&tag).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
    }

    /// A MAC of `data`, base64url.
    pub fn tag(&self, data: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(data);
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

/// Equality of two strings that takes the same time wherever they differ.
pub fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_under_their_key_and_unaltered() {
        let signer = Signer::new([7; 32]);
        let token = signer.sign(&("ann", 42));
        assert_eq!(signer.verify::<(String, u32)>(&token), Some(("ann".into(), 42)));
        assert_eq!(Signer::new([8; 32]).verify::<(String, u32)>(&token), None);
        let (body, tag) = token.split_once('.').unwrap();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(br#"["ann",43]"#));
        assert_eq!(signer.verify::<(String, u32)>(&forged), None);
        assert_eq!(signer.verify::<(String, u32)>(body), None);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
