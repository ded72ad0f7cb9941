//! The floor: the least any server speaking this protocol must do per request, measured with the
//! same HTTP stack and runtime as licensd. It parses the same request body, builds a payload of
//! the same shape and size, and Ed25519-signs it, with no storage, no lookups and no checks. A
//! real endpoint's figures are reported as a ratio to it, measured minutes apart on one machine.
//!
//! The **durable floor** adds one thing: before answering, it appends one event per request
//! to a real database through licensd's own group-commit writer. It is the most a server can
//! do on this machine and disk when every answer waits for a durable write, as a billed
//! validation does.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{SecondsFormat, Utc};
use ed25519_dalek::{Signer, SigningKey};
use licensd_commands::{Writer, WriterConfig, WriterHandle};
use licensd_store::{AppendRequest, ExpectedVersion, NewEvent, Store, StoreOptions};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The signing key the floor uses (fixed: the floor has no secrets to protect).
pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[0x5a; 32])
}

struct Floor {
    key: SigningKey,
    /// The durable floor's writer.
    log: Option<WriterHandle>,
    /// A token as long as licensd's: the floor mints none, but sends as many bytes.
    token: String,
    empty: Map<String, Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    session_token: &'a str,
    expires_in: i64,
    nonce: &'a str,
    timestamp: String,
    request_id: String,
    session_expires_at: String,
    license_expires_at: Option<String>,
    max_hwid_slots: u8,
    hwid_count: usize,
    app_variables: &'a Map<String, Value>,
    license_variables: &'a Map<String, Value>,
}

pub fn router(log: Option<WriterHandle>) -> Router {
    let claims = json!({ "exp": 1_900_000_000u64, "expiresIn": 1_900_000_000u64, "app": uuid::Uuid::nil(),
        "lic": "ABCD-EFGH-JKLM-NPQR", "hw": "0".repeat(43), "ttl": 86_400, "iat": 1_899_913_600u64 });
    let token = format!("{}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()), URL_SAFE_NO_PAD.encode([0u8; 32]));
    let floor = Arc::new(Floor { key: signing_key(), log, token, empty: Map::new() });
    let handler = move |body: Bytes| {
        let floor = floor.clone();
        async move { answer(&floor, &body).await }
    };
    Router::new().route("/auth/validate", post(handler.clone())).route("/auth/heartbeat", post(handler))
}

async fn answer(floor: &Floor, body: &Bytes) -> Response {
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
        return (StatusCode::BAD_REQUEST, Json(json!({ "status": "failed", "error": "malformed_request" })))
            .into_response();
    };
    let Some(nonce) = request.get("nonce").and_then(Value::as_str) else {
        return (StatusCode::BAD_REQUEST, Json(json!({ "status": "failed", "error": "bad_request" }))).into_response();
    };
    if let Some(log) = &floor.log {
        let event = NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: "FloorRequestServed".into(),
            schema_version: 1,
            payload: json!({ "nonce": nonce }),
            metadata: json!({ "actor": "floor" }),
        };
        // One stream per license (or machine), as licensd keeps: the same index locality.
        let owner =
            ["licenseKey", "hwid"].iter().find_map(|f| request.get(*f).and_then(Value::as_str)).unwrap_or(nonce);
        let append = AppendRequest::new(format!("floor-{owner}"), ExpectedVersion::Any, vec![event]);
        if log.append(append).await.is_err() {
            return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "status": "failed", "error": "system_error" })))
                .into_response();
        }
    }
    let now = Utc::now();
    let expires = now.timestamp() + 86_400;
    let iso = |at: chrono::DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::Millis, true);
    let payload = Payload {
        session_token: &floor.token,
        expires_in: expires,
        nonce,
        timestamp: iso(now),
        request_id: uuid::Uuid::now_v7().to_string(),
        session_expires_at: chrono::DateTime::from_timestamp(expires, 0).map(iso).unwrap_or_default(),
        license_expires_at: None,
        max_hwid_slots: 2,
        hwid_count: 1,
        app_variables: &floor.empty,
        license_variables: &floor.empty,
    };
    let encoded = STANDARD.encode(serde_json::to_vec(&payload).unwrap_or_default());
    let signature = STANDARD.encode(floor.key.sign(encoded.as_bytes()).to_bytes());
    Json(json!({ "status": "ok", "payload": encoded, "signature": signature, "keyId": "floor" })).into_response()
}

/// Serves the floor on `listener` until the process ends; with `durable_url`, the durable floor
/// on that database (SQLite with `synchronous=full`, or Postgres).
pub async fn serve(listener: tokio::net::TcpListener, durable_url: Option<&str>) -> anyhow::Result<()> {
    let log = match durable_url {
        Some(url) => {
            let store = Store::connect(url, &StoreOptions::durable()).await?;
            store.migrate().await?;
            // licensd's own setting, so a deeper or shallower pipeline can be tried here first.
            let pipeline = std::env::var("LICENSD_WRITE_PIPELINE").ok().and_then(|p| p.parse().ok());
            let config =
                WriterConfig { pipeline: pipeline.unwrap_or(WriterConfig::default().pipeline), ..Default::default() };
            Some(Writer::spawn(store, config).0)
        }
        None => None,
    };
    // Nagle's algorithm off, as licensd's listener has it: the two differ only in what they do.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    Ok(axum::serve(listener, router(log)).await?)
}
