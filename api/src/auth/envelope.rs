//! The signed success envelope: `payload` is standard padded base64 of the JSON below (fields
//! in this order: scalars before the variable maps, as the C++ SDK's parser needs), and
//! `signature` is Ed25519 over that base64 text.

use axum::Json;
use base64::{engine::general_purpose::STANDARD, Engine};
use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;
use serde_json::{json, Map, Value};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionPayload<'a> {
    pub session_token: String,
    pub expires_in: i64,
    pub nonce: &'a str,
    pub timestamp: String,
    pub request_id: String,
    pub session_expires_at: String,
    /// An explicit `null` means a lifetime license.
    pub license_expires_at: Option<String>,
    pub max_hwid_slots: u8,
    pub hwid_count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_label: Option<&'a str>,
    pub app_variables: &'a Map<String, Value>,
    pub license_variables: &'a Map<String, Value>,
}

pub fn signed(payload: &impl Serialize, signer: &SigningKey, key_id: &str) -> Json<Value> {
    let _signing = licensd_store::trace::step("sign").entered();
    let body = STANDARD.encode(serde_json::to_vec(payload).unwrap_or_default());
    let signature = STANDARD.encode(signer.sign(body.as_bytes()).to_bytes());
    Json(json!({ "status": "ok", "payload": body, "signature": signature, "keyId": key_id }))
}
