//! The SDK's side of the wire protocol (PROTOCOL.md): the bodies an official SDK sends to
//! `/auth/validate` and `/auth/heartbeat`, and the checks it makes on every answer. A fast
//! answer that fails these checks is a failure, never a success.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use rand::RngCore;
use serde_json::{json, Value};

/// What the SDK is configured with: app id, secret and the app's public key.
#[derive(Clone, Debug)]
pub struct AppCredentials {
    pub app_id: String,
    pub app_secret: String,
    pub public_key: VerifyingKey,
}

impl AppCredentials {
    pub fn new(app_id: &str, app_secret: &str, public_key_b64: &str) -> anyhow::Result<Self> {
        let raw: [u8; 32] =
            STANDARD.decode(public_key_b64)?.try_into().map_err(|_| anyhow::anyhow!("a public key is 32 bytes"))?;
        Ok(Self {
            app_id: app_id.to_string(),
            app_secret: app_secret.to_string(),
            public_key: VerifyingKey::from_bytes(&raw)?,
        })
    }
}

/// One installation: a license key on a machine, with the session it got from validate.
#[derive(Clone, Debug)]
pub struct Machine {
    pub license_key: String,
    pub hwid: String,
    pub session_token: Option<String>,
}

impl Machine {
    /// A machine with an SDK-style HWID (64 lowercase hex characters).
    pub fn new(license_key: &str) -> Self {
        Self { license_key: license_key.to_string(), hwid: random_hex(32), session_token: None }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Validate,
    Heartbeat,
}

impl Call {
    pub fn path(self) -> &'static str {
        match self {
            Call::Validate => "/auth/validate",
            Call::Heartbeat => "/auth/heartbeat",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Call::Validate => "validate",
            Call::Heartbeat => "heartbeat",
        }
    }
}

/// A fresh nonce as the SDKs make it: 16 random bytes as 32 lowercase hex characters.
pub fn nonce() -> String {
    random_hex(16)
}

fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

/// The request body an SDK sends for `call`. `None` for a heartbeat without a session.
pub fn request_body(call: Call, app: &AppCredentials, machine: &Machine, nonce: &str) -> Option<Vec<u8>> {
    let body = match call {
        Call::Validate => json!({
            "appId": app.app_id, "appSecret": app.app_secret, "licenseKey": machine.license_key,
            "hwid": machine.hwid, "nonce": nonce,
        }),
        Call::Heartbeat => json!({
            "appId": app.app_id, "sessionToken": machine.session_token.as_deref()?,
            "hwid": machine.hwid, "nonce": nonce,
        }),
    };
    serde_json::to_vec(&body).ok()
}

/// Checks a success answer as the SDKs do: envelope, signature over the payload text, the
/// echoed nonce, a session token and an integer `expiresIn`. Returns the session token.
pub fn verify_success(body: &[u8], nonce: &str, key: &VerifyingKey) -> Result<String, String> {
    let envelope: Value = serde_json::from_slice(body).map_err(|_| "answer is not JSON".to_string())?;
    if envelope["status"] != "ok" {
        return Err(format!("status is {}", envelope["status"]));
    }
    let payload = envelope["payload"].as_str().ok_or("no payload")?;
    let signature = envelope["signature"].as_str().ok_or("no signature")?;
    let signature: [u8; 64] = STANDARD
        .decode(signature)
        .map_err(|_| "signature is not padded standard base64")?
        .try_into()
        .map_err(|_| "signature is not 64 bytes")?;
    key.verify(payload.as_bytes(), &Signature::from_bytes(&signature)).map_err(|_| "bad signature")?;
    let decoded = STANDARD.decode(payload).map_err(|_| "payload is not padded standard base64")?;
    let claims: Value = serde_json::from_slice(&decoded).map_err(|_| "payload is not JSON")?;
    if claims["nonce"] != nonce {
        return Err("nonce mismatch".to_string());
    }
    if claims["expiresIn"].as_u64().is_none() {
        return Err("expiresIn is not an unsigned integer".to_string());
    }
    match claims["sessionToken"].as_str() {
        Some(token) if !token.is_empty() => Ok(token.to_string()),
        _ => Err("no session token".to_string()),
    }
}

/// The `error` code of a failure answer (`-` when the body has none).
pub fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| "-".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn answer(key: &SigningKey, claims: Value) -> Vec<u8> {
        let payload = STANDARD.encode(claims.to_string());
        let signature = STANDARD.encode(key.sign(payload.as_bytes()).to_bytes());
        json!({ "status": "ok", "payload": payload, "signature": signature }).to_string().into_bytes()
    }

    #[test]
    fn accepts_a_signed_answer_and_refuses_tampering() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let good = answer(&key, json!({ "nonce": "n1", "sessionToken": "t", "expiresIn": 1_900_000_000u64 }));
        assert_eq!(verify_success(&good, "n1", &key.verifying_key()), Ok("t".to_string()));
        assert_eq!(verify_success(&good, "n2", &key.verifying_key()), Err("nonce mismatch".to_string()));
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert_eq!(verify_success(&good, "n1", &other), Err("bad signature".to_string()));
        let no_expiry = answer(&key, json!({ "nonce": "n1", "sessionToken": "t", "expiresIn": "soon" }));
        assert!(verify_success(&no_expiry, "n1", &key.verifying_key()).is_err());
    }

    #[test]
    fn bodies_carry_the_documented_fields() {
        let app = AppCredentials {
            app_id: "a".into(),
            app_secret: "s".into(),
            public_key: SigningKey::from_bytes(&[1; 32]).verifying_key(),
        };
        let mut machine = Machine::new("ABCD-ABCD-ABCD-ABCD");
        assert_eq!(machine.hwid.len(), 64);
        assert!(request_body(Call::Heartbeat, &app, &machine, "n").is_none(), "no session yet");
        machine.session_token = Some("tok".into());
        let body: Value = serde_json::from_slice(&request_body(Call::Heartbeat, &app, &machine, "n").unwrap()).unwrap();
        assert_eq!(body["sessionToken"], "tok");
        assert!(body.get("appSecret").is_none());
        let body: Value = serde_json::from_slice(&request_body(Call::Validate, &app, &machine, "n").unwrap()).unwrap();
        assert_eq!(body["licenseKey"], "ABCD-ABCD-ABCD-ABCD");
        assert_eq!(nonce().len(), 32);
    }
}
