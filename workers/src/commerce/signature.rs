//! Provider webhook signatures, checked over the raw request body.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is missing or malformed")]
    Malformed,
    #[error("the signature timestamp is outside the tolerance")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
}

fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Stripe's `Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]`: HMAC-SHA256 of `"<t>.<body>"` with
/// the endpoint's `whsec_` secret; any `v1` may match (Stripe sends several while rolling secrets).
pub fn verify_stripe(
    header: &str,
    body: &[u8],
    secret: &str,
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", signature)) => candidates.push(signature),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let expected = hmac_hex(secret, &[timestamp.to_string().as_bytes(), b".", body]);
    if !candidates.iter().any(|c| same(c, &expected)) {
        return Err(SignatureError::Mismatch);
    }
    // Checked: a signed timestamp near i64::MIN or MAX must be stale, not an overflow (which
    // would panic in a debug build and, wrapped in a release build, pass as fresh).
    let age = now_unix.checked_sub(timestamp).map(i64::unsigned_abs);
    if age.is_none_or(|age| age > tolerance_secs.unsigned_abs()) {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

/// Lemon Squeezy's `X-Signature`: hex HMAC-SHA256 of the body with the webhook's signing secret.
pub fn verify_lemon(header: &str, body: &[u8], secret: &str) -> Result<(), SignatureError> {
    let header = header.trim();
    if header.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if same(&header.to_ascii_lowercase(), &hmac_hex(secret, &[body])) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Signs like Stripe does (tests and tooling that stand in for the provider).
pub fn stripe_signature_header(body: &[u8], secret: &str, timestamp: i64) -> String {
    format!("t={timestamp},v1={}", hmac_hex(secret, &[timestamp.to_string().as_bytes(), b".", body]))
}

/// Signs like Lemon Squeezy does.
pub fn lemon_signature_header(body: &[u8], secret: &str) -> String {
    hmac_hex(secret, &[body])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_accepts_its_own_scheme_and_refuses_tampering_and_old_timestamps() {
        let body = br#"{"id":"evt_1"}"#;
        let header = stripe_signature_header(body, "whsec_abc", 1_000);
        assert_eq!(verify_stripe(&header, body, "whsec_abc", 1_100, 300), Ok(()));
        assert_eq!(verify_stripe(&header, b"{}", "whsec_abc", 1_100, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify_stripe(&header, body, "whsec_other", 1_100, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify_stripe(&header, body, "whsec_abc", 1_400, 300), Err(SignatureError::Stale));
        assert_eq!(verify_stripe("v1=00", body, "whsec_abc", 1_000, 300), Err(SignatureError::Malformed));
        let rolled = format!("t=1000,v1={},{}", "0".repeat(64), header.split(',').nth(1).unwrap());
        assert_eq!(verify_stripe(&rolled, body, "whsec_abc", 1_000, 300), Ok(()));
    }

    /// Found by the `provider_webhook` fuzz target: `now - t` overflowed for extreme timestamps.
    #[test]
    fn extreme_signed_timestamps_are_stale_not_an_overflow() {
        let body = b"{}";
        for t in [i64::MIN, i64::MIN + 1_000, i64::MAX] {
            let header = stripe_signature_header(body, "whsec_abc", t);
            assert_eq!(verify_stripe(&header, body, "whsec_abc", 1_000, 300), Err(SignatureError::Stale), "t={t}");
        }
    }

    #[test]
    fn lemon_checks_the_body_hmac() {
        let body = br#"{"meta":{}}"#;
        let header = lemon_signature_header(body, "secret");
        assert_eq!(verify_lemon(&header, body, "secret"), Ok(()));
        assert_eq!(verify_lemon(&header, b"{}", "secret"), Err(SignatureError::Mismatch));
        assert_eq!(verify_lemon("", body, "secret"), Err(SignatureError::Malformed));
    }
}
