//! Commerce ingress: `POST /billing/webhook/{stripe|lemon}/{connectionId}`.
//!
//! Thin on purpose: verify the provider's signature over the raw body, normalize, append the
//! ledger entry with "no stream" (a duplicate delivery is a no-op) and answer 200. Fulfilment
//! happens in the commerce worker.

use crate::{ApiError, AppState};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use licensd_commands::commerce::InboundEvent;
use licensd_domain::commerce::Provider;
use licensd_workers::commerce::{connection_secret_purpose, normalize, signature};
use serde_json::json;
use uuid::Uuid;

pub fn routes() -> Router<AppState> {
    Router::new().route("/webhook/{provider}/{connection_id}", post(receive))
}

fn refused(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": code, "message": message }))).into_response()
}

async fn receive(
    State(state): State<AppState>,
    Path((provider, connection_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let not_found = || refused(StatusCode::NOT_FOUND, "not_found", "No such commerce connection");
    let (Some(provider), Ok(connection_id)) = (Provider::parse(&provider), connection_id.parse::<Uuid>()) else {
        return Ok(not_found());
    };
    let connection = state.lookup(|hot| hot.connection(connection_id)).await?;
    let Some((account_id, connection)) = connection.filter(|(_, c)| c.provider == provider) else {
        return Ok(not_found());
    };
    let secret = state
        .commands
        .master_key()
        .open_string(&connection.signing_secret, &connection_secret_purpose(connection_id))
        .map_err(ApiError::from)?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let verified = match provider {
        Provider::Stripe => signature::verify_stripe(
            header("stripe-signature"),
            &body,
            &secret,
            chrono::Utc::now().timestamp(),
            state.config.stripe_signature_tolerance_secs,
        ),
        Provider::Lemon => signature::verify_lemon(header("x-signature"), &body, &secret),
    };
    if let Err(e) = verified {
        return Ok(refused(StatusCode::BAD_REQUEST, "invalid_signature", &e.to_string()));
    }
    let parsed = serde_json::from_slice::<serde_json::Value>(&body).ok();
    if let Some(field) = parsed.as_ref().and_then(crate::control_chars::first_in) {
        let message = format!("'{field}' must not contain control characters");
        return Ok(refused(StatusCode::BAD_REQUEST, "bad_request", &message));
    }
    let inbound = match normalize::normalize(provider, &body) {
        Ok(inbound) => inbound,
        Err(e) => return Ok(refused(StatusCode::BAD_REQUEST, "bad_request", &e.to_string())),
    };
    let event_type = inbound.event_type.clone();
    let recorded = state
        .commands
        .receive_commerce_event(InboundEvent {
            connection_id,
            account_id,
            provider,
            external_id: inbound.external_id,
            event_type: inbound.event_type,
            normalized: inbound.normalized,
            email: inbound.email,
            customer_id: inbound.customer_id,
        })
        .await?;
    tracing::info!(provider = provider.as_str(), event_type = %event_type, duplicate = !recorded, "commerce event received");
    Ok((StatusCode::OK, Json(json!({ "received": true, "duplicate": !recorded }))).into_response())
}
