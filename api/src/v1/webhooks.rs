//! Webhooks of an app: `POST/GET /v1/apps/{appId}/webhooks`, `PUT/DELETE .../{webhookId}`,
//! `POST .../{webhookId}/test`, and (beyond the docs) the delivery log with redelivery.

use super::app_settings::{change, owned_app};
use super::paging::{text, Filters, KeyColumn, Listing, PageRequest};
use super::{iso, visible};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use licensd_domain::app::{App, AppCommand, Webhook};
use licensd_store::Statement;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    url: String,
    events: Vec<String>,
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookUpdate {
    url: Option<String>,
    events: Option<Vec<String>>,
    enabled: Option<bool>,
}

/// `https://` always; `http://` only to a loopback host, and only where the deployment allows it.
/// A literal address the deployment refuses as a destination is refused here too.
fn check_url(state: &AppState, url: &str) -> Result<String, ApiError> {
    let url = url.trim();
    state.config.webhook_destinations.check_url(url).map_err(ApiError::BadRequest)?;
    if let Some(rest) = url.strip_prefix("https://") {
        if !rest.is_empty() {
            return Ok(url.to_string());
        }
    }
    if let Some(rest) = url.strip_prefix("http://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => authority.split(':').next().unwrap_or_default(),
        };
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if loopback && state.config.webhook_allow_http_loopback {
            return Ok(url.to_string());
        }
    }
    Err(ApiError::BadRequest("url must be an https:// URL".into()))
}

fn owned_webhook(app: &App, webhook_id: &str) -> Result<Webhook, ApiError> {
    app.webhook(webhook_id).cloned().ok_or_else(|| ApiError::NotFound("The webhook doesn't exist".into()))
}

fn webhook_json(app: &App, webhook: &Webhook) -> Value {
    json!({
        "webhookId": webhook.webhook_id,
        "appId": app.app_id,
        "url": webhook.url,
        "events": webhook.events,
        "enabled": webhook.enabled,
        "createdAt": iso(webhook.created_at),
    })
}

/// `POST /v1/apps/{appId}/webhooks`: the `secret` is in this response only.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
    ApiJson(body): ApiJson<NewWebhook>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let url = check_url(&state, &body.url)?;
    let actor = caller.actor.clone();
    let enabled = body.enabled.unwrap_or(true);
    let (webhook, secret, result) =
        state.commands.create_webhook(caller.account_id, app.app_id, url, body.events, enabled, &actor).await?;
    visible(&state, result.position).await;
    let mut answer = webhook_json(&app, &webhook);
    answer["secret"] = Value::from(secret);
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `GET /v1/apps/{appId}/webhooks`: without secrets, with the last delivery of each.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let mut webhooks = Vec::new();
    for webhook in &app.webhooks {
        let last = state
            .commands
            .store()
            .query_rows(
                "SELECT last_attempt_at, CAST(last_status AS TEXT) FROM webhook_deliveries
                 WHERE webhook_id = $1 AND last_attempt_at IS NOT NULL ORDER BY last_attempt_at DESC LIMIT 1",
                &[webhook.webhook_id.as_str().into()],
            )
            .await
            .map_err(ApiError::from)?;
        let (at, status) = last.into_iter().next().map(|r| (r[0].clone(), r[1].clone())).unwrap_or_default();
        let mut entry = webhook_json(&app, webhook);
        entry["lastDeliveryAt"] = json!(at);
        entry["lastDeliveryStatus"] = json!(status.and_then(|s| s.parse::<u16>().ok()));
        webhooks.push(entry);
    }
    Ok(Json(json!({ "webhooks": webhooks })))
}

/// `PUT /v1/apps/{appId}/webhooks/{webhookId}`: only the fields given change.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app_id, webhook_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<WebhookUpdate>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let mut webhook = owned_webhook(&app, &webhook_id)?;
    if let Some(url) = body.url {
        webhook.url = check_url(&state, &url)?;
    }
    webhook.events = body.events.unwrap_or(webhook.events);
    webhook.enabled = body.enabled.unwrap_or(webhook.enabled);
    change(&state, &caller, &app, AppCommand::UpdateWebhook(webhook)).await?;
    Ok(Json(json!({ "ok": true })))
}

/// `DELETE /v1/apps/{appId}/webhooks/{webhookId}`.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app_id, webhook_id)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    owned_webhook(&app, &webhook_id)?;
    change(&state, &caller, &app, AppCommand::DeleteWebhook { webhook_id }).await?;
    Ok(Json(json!({ "ok": true })))
}

/// `POST /v1/apps/{appId}/webhooks/{webhookId}/test`: a signed `test.ping`, answered with the
/// receiver's status (`null` and an `error` when it could not be reached).
pub async fn test(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app_id, webhook_id)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let webhook = owned_webhook(&app, &webhook_id)?;
    let secret = state.commands.open_webhook_secret(&webhook.webhook_id, &webhook.secret)?;
    let timestamp = iso(Utc::now());
    let body = json!({
        "event": "test.ping",
        "timestamp": timestamp,
        "data": { "webhookId": webhook.webhook_id, "appId": app.app_id },
    })
    .to_string();
    match state.webhook_sender.send(&webhook.url, "test.ping", &timestamp, &body, &secret).await {
        Ok(status) => Ok(Json(json!({ "ok": (200..300).contains(&status), "status": status }))),
        Err(error) => Ok(Json(json!({ "ok": false, "status": null, "error": error }))),
    }
}

#[derive(Deserialize)]
pub struct DeliveryQuery {
    limit: Option<String>,
    cursor: Option<String>,
    order: Option<String>,
    /// `pending`, `delivered` or `failed`.
    status: Option<String>,
}

/// Deliveries by creation, then by their unique id.
const BY_CREATION: &[KeyColumn] = &[text("created_at"), text("delivery_id")];

/// `GET /v1/apps/{appId}/webhooks/{webhookId}/deliveries`: newest first by default, paged by cursor.
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app_id, webhook_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    owned_webhook(&app, &webhook_id)?;
    let limit = super::page_size(query.limit.as_deref())?;
    let request = PageRequest::new("deliveries", limit, query.order.as_deref(), query.cursor.as_deref())?;
    let mut filters = Filters::default();
    let webhook = filters.bind(webhook_id.clone());
    filters.require(format!("webhook_id = {webhook}"));
    match query.status.as_deref() {
        None => {}
        Some(status @ ("pending" | "delivered" | "failed")) => {
            let status = filters.bind(status.to_string());
            filters.require(format!("status = {status}"));
        }
        Some(_) => return Err(ApiError::BadRequest("status must be pending, delivered or failed".into())),
    }
    let listing = Listing {
        columns: "delivery_id, event, status, CAST(attempts AS TEXT), created_at, last_attempt_at,
                  CAST(last_status AS TEXT), last_error, next_attempt_at",
        from: "webhook_deliveries",
        key: BY_CREATION,
        filters,
        count: true,
    };
    let page = listing.fetch(&state, &request).await?;
    let deliveries: Vec<Value> = page
        .rows
        .into_iter()
        .map(|r| {
            let number = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<u64>().ok());
            json!({
                "deliveryId": r[0], "event": r[1], "status": r[2], "attempts": number(&r[3]),
                "createdAt": r[4], "lastAttemptAt": r[5], "lastStatus": number(&r[6]), "lastError": r[7],
                "nextAttemptAt": if r[2].as_deref() == Some("pending") { r[8].clone() } else { None },
            })
        })
        .collect();
    Ok(Json(json!({ "deliveries": deliveries, "cursor": page.cursor, "total": page.total })))
}

/// `POST .../deliveries/{deliveryId}/redeliver`: queues the delivery again, now.
pub async fn redeliver(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app_id, webhook_id, delivery_id)): ApiPath<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    owned_webhook(&app, &webhook_id)?;
    let requeue = Statement::new(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1 WHERE delivery_id = $2 AND webhook_id = $3",
        [iso(Utc::now()).into(), delivery_id.as_str().into(), webhook_id.as_str().into()],
    );
    match state.commands.store().execute_read_models(&[requeue]).await {
        Ok(0) => Err(ApiError::NotFound("The delivery doesn't exist".into())),
        Ok(_) => Ok(Json(json!({ "ok": true }))),
        Err(e) => Err(e.into()),
    }
}
