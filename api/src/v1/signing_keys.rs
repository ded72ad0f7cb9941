//! An app's signing keys, rotated in two steps so no client is cut off: add a key (published,
//! not signing), ship clients that trust it, promote it (it signs; the old one still verifies),
//! then retire the old key. Every step is decided by the app aggregate.

use super::app_settings::{change, owned_app};
use super::iso;
use crate::extract::{ApiPath, Caller};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use licensd_domain::app::{App, AppCommand, SigningKeyState};
use serde_json::{json, Value};

/// Every key of the app, newest first, with where it stands.
fn keys_json(app: &App) -> Json<Value> {
    let keys: Vec<Value> = app
        .signing_keys
        .iter()
        .rev()
        .map(|k| {
            let state = app.signing_key_state(&k.key_id);
            json!({
                "keyId": k.key_id,
                "publicKey": k.public_key,
                "state": state.as_str(),
                "active": state == SigningKeyState::Signing,
                "createdAt": app.signing_key_added_at(&k.key_id).map(iso),
            })
        })
        .collect();
    Json(json!({ "signingKeys": keys }))
}

/// `GET /v1/apps/{appId}/signing-keys`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(keys_json(&owned_app(&state, &caller, &app_id)?))
}

/// `POST /v1/apps/{appId}/signing-keys`: step one, a new key that does not sign yet.
pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let signing_key = state.commands.new_signing_key(app.app_id);
    let app = change(&state, &caller, &app, AppCommand::AddSigningKey { signing_key }).await?;
    Ok((StatusCode::CREATED, keys_json(&app)))
}

/// `POST /v1/apps/{appId}/signing-keys/{keyId}/promote`: step two, the key signs from now on.
pub async fn promote(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app_id, key_id)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let app = change(&state, &caller, &app, AppCommand::PromoteSigningKey { key_id }).await?;
    Ok(keys_json(&app))
}

/// `DELETE /v1/apps/{appId}/signing-keys/{keyId}`: retires a key that does not sign (409 for the signer).
pub async fn retire(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app_id, key_id)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let app = change(&state, &caller, &app, AppCommand::RetireSigningKey { key_id }).await?;
    Ok(keys_json(&app))
}
