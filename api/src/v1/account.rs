//! Account-level resources: API keys, credits and the audit log.

use super::{iso, visible};
use crate::extract::{ApiJson, ApiPath, Caller, SCOPES};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use licensd_domain::account::AccountCommand;
use licensd_domain::ApiKeyId;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    scopes: Vec<String>,
}

/// `POST /v1/api-keys`: the key is in this response only.
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewKey>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if body.scopes.is_empty() {
        return Err(ApiError::BadRequest("scopes must name at least one scope (or \"*\")".into()));
    }
    if let Some(unknown) = body.scopes.iter().find(|s| *s != "*" && !SCOPES.contains(&s.as_str())) {
        return Err(ApiError::BadRequest(format!("unknown scope '{unknown}'; known: *, {}", SCOPES.join(", "))));
    }
    // No escalation: a key with `write:api_keys` mints keys with at most its own scopes.
    if let Some(beyond) = body.scopes.iter().find(|s| !caller.holds(s)) {
        return Err(ApiError::Forbidden(format!("This API key cannot grant the '{beyond}' scope it does not hold")));
    }
    let actor = caller.actor.clone();
    let (key_id, api_key, result) =
        state.commands.issue_api_key(caller.account_id, body.scopes.clone(), &actor).await?;
    visible(&state, result.position).await;
    let prefix = &api_key[..licensd_commands::API_KEY_PREFIX.len() + 4];
    let answer = json!({ "apiKeyId": key_id, "apiKey": api_key, "prefix": prefix, "scopes": body.scopes });
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `GET /v1/api-keys`: live keys without their secrets.
pub async fn list_keys(State(state): State<AppState>, caller: Caller) -> Json<Value> {
    let keys: Vec<Value> = state
        .hot
        .api_keys_of(caller.account_id)
        .iter()
        .map(
            |k| json!({ "apiKeyId": k.key_id, "prefix": k.prefix, "scopes": k.scopes, "createdAt": iso(k.created_at) }),
        )
        .collect();
    Json(json!({ "apiKeys": keys }))
}

/// `DELETE /v1/api-keys/{id}`: the key stops working at once.
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let key_id: ApiKeyId = key_id.parse().map_err(|_| ApiError::NotFound("The API key doesn't exist".into()))?;
    let command = AccountCommand::RevokeApiKey { key_id };
    let executed = state.commands.account_command(caller.account_id, command, &caller.actor).await?;
    visible(&state, executed.position()).await;
    Ok(Json(json!({ "ok": true })))
}

fn credits_json(state: &AppState, caller: &Caller) -> Json<Value> {
    let account = state.hot.account(caller.account_id).unwrap_or_default();
    let below = account.low_balance_threshold.is_some_and(|t| account.balance < t as i64);
    Json(json!({
        "balance": account.balance,
        "lowBalanceThreshold": account.low_balance_threshold,
        "belowThreshold": below,
    }))
}

/// `GET /v1/credits`: the balance, and whether it is under the low-balance alert threshold.
pub async fn credits(State(state): State<AppState>, caller: Caller) -> Json<Value> {
    credits_json(&state, &caller)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertSettings {
    low_balance_threshold: Option<u64>,
}

/// `PUT /v1/credits/settings`: the low-balance alert threshold (`null` turns it off).
pub async fn put_credit_settings(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<AlertSettings>,
) -> Result<Json<Value>, ApiError> {
    let command = AccountCommand::SetLowBalanceAlert { threshold: body.low_balance_threshold };
    let executed = state.commands.account_command(caller.account_id, command, &caller.actor).await?;
    visible(&state, executed.position()).await;
    Ok(credits_json(&state, &caller))
}
