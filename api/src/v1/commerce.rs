//! Commerce for merchants: provider connections, product mappings, the event ledger browser with
//! Replay, and GDPR erasure of a buyer.

use super::app_settings::{change, owned_app};
use super::paging::{text, Filters, KeyColumn, Listing, Page, PageRequest};
use super::{page_size, visible};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use licensd_commands::Entropy;
use licensd_domain::account::AccountCommand;
use licensd_domain::app::{App, AppCommand};
use licensd_domain::commerce::{Connection, LedgerCommand, LedgerState, MappingKind, ProductMapping, Provider};
use licensd_domain::license::LicenseCommand;
use licensd_domain::{LicenseKey, StreamCategory, Variables};
use licensd_workers::commerce::{connection_key_purpose, connection_secret_purpose};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

const MAX_SECRET_CHARS: usize = 512;

fn provider(text: &str) -> Result<Provider, ApiError> {
    Provider::parse(text).ok_or_else(|| ApiError::NotFound("Unknown provider: use stripe or lemon".into()))
}

fn connection_json(connection: &Connection) -> Value {
    json!({
        "connectionId": connection.connection_id,
        "provider": connection.provider.as_str(),
        "webhookPath": format!("/billing/webhook/{}/{}", connection.provider.as_str(), connection.connection_id),
        "hasApiKey": connection.api_key.is_some(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionBody {
    signing_secret: String,
    #[serde(default)]
    api_key: Option<String>,
}

/// `PUT /v1/commerce/connections/{provider}`: connect, or re-key keeping the webhook URL.
pub async fn put_connection(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(provider_name): ApiPath<String>,
    ApiJson(body): ApiJson<ConnectionBody>,
) -> Result<Json<Value>, ApiError> {
    let provider = provider(&provider_name)?;
    let secret = body.signing_secret.trim();
    if secret.is_empty() || secret.chars().count() > MAX_SECRET_CHARS {
        return Err(ApiError::BadRequest("signingSecret must be 1 to 512 characters".into()));
    }
    let api_key = body.api_key.as_deref().map(str::trim).filter(|k| !k.is_empty());
    if api_key.is_some_and(|k| k.chars().count() > MAX_SECRET_CHARS) {
        return Err(ApiError::BadRequest("apiKey must be at most 512 characters".into()));
    }
    let existing = state.hot.connections_of(caller.account_id).into_iter().find(|c| c.provider == provider);
    let connection_id = existing.map_or_else(|| Entropy::next_step().uuid("connection-id"), |c| c.connection_id);
    let key = state.commands.master_key();
    let connection = Connection {
        connection_id,
        provider,
        signing_secret: key.seal(secret.as_bytes(), &connection_secret_purpose(connection_id)),
        api_key: api_key.map(|k| key.seal(k.as_bytes(), &connection_key_purpose(connection_id))),
    };
    let actor = caller.actor.clone();
    let executed =
        state.commands.account_command(caller.account_id, AccountCommand::Connect(connection.clone()), &actor).await?;
    visible(&state, executed.position()).await;
    // The connection as written: the answer does not depend on the read model having caught up.
    Ok(Json(connection_json(&connection)))
}

pub async fn list_connections(State(state): State<AppState>, caller: Caller) -> Json<Value> {
    let connections: Vec<Value> = state.hot.connections_of(caller.account_id).iter().map(connection_json).collect();
    Json(json!({ "connections": connections }))
}

pub async fn delete_connection(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(provider_name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let provider = provider(&provider_name)?;
    let actor = caller.actor.clone();
    let command = AccountCommand::Disconnect { provider };
    let executed = state.commands.account_command(caller.account_id, command, &actor).await?;
    visible(&state, executed.position()).await;
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MappingBody {
    #[serde(default)]
    app_id: Option<String>,
    provider: String,
    price_id: String,
    #[serde(default)]
    product_id: Option<String>,
    kind: String,
    #[serde(default)]
    days: Option<u32>,
    #[serde(default)]
    hwid_slots: Option<u8>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    variables: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    respect_quantity: Option<bool>,
}

fn mapping_kind(text: &str) -> Result<MappingKind, ApiError> {
    serde_json::from_value(Value::String(text.to_string()))
        .map_err(|_| ApiError::BadRequest("kind must be one_time, subscription, add_on or revocation".into()))
}

fn mapping_from(body: MappingBody, mapping_id: Uuid) -> Result<ProductMapping, ApiError> {
    let provider = Provider::parse(&body.provider)
        .ok_or_else(|| ApiError::BadRequest("provider must be stripe or lemon".into()))?;
    let variables = Variables::new(body.variables.unwrap_or_default())?;
    Ok(ProductMapping {
        mapping_id,
        provider,
        price_id: body.price_id.trim().to_string(),
        product_id: body.product_id.filter(|p| !p.is_empty()),
        kind: mapping_kind(&body.kind)?,
        days: body.days,
        hwid_slots: body.hwid_slots.unwrap_or(1),
        label: body.label.filter(|l| !l.is_empty()),
        variables,
        respect_quantity: body.respect_quantity.unwrap_or(true),
    })
}

fn mapping_json(app: &App, mapping: &ProductMapping) -> Value {
    let mut value = serde_json::to_value(mapping).unwrap_or_default();
    value["appId"] = json!(app.app_id);
    value
}

/// `POST /v1/commerce/mappings`: one price (or variant) to one app's license template.
pub async fn create_mapping(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<MappingBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let app_id = body.app_id.clone().ok_or_else(|| ApiError::BadRequest("appId is required".into()))?;
    let app = owned_app(&state, &caller, &app_id)?;
    let mapping = mapping_from(body, Entropy::next_step().uuid("mapping-id"))?;
    let app = change(&state, &caller, &app, AppCommand::SetMapping(mapping.clone())).await?;
    Ok((StatusCode::CREATED, Json(mapping_json(&app, &mapping))))
}

pub async fn list_mappings(State(state): State<AppState>, caller: Caller) -> Json<Value> {
    let mappings: Vec<Value> = state
        .hot
        .apps_of(caller.account_id)
        .iter()
        .flat_map(|app| app.mappings.iter().map(move |m| mapping_json(app, m)))
        .collect();
    Json(json!({ "mappings": mappings }))
}

/// The caller's app holding mapping `id`.
fn mapping_owner(state: &AppState, caller: &Caller, id: &str) -> Result<(App, Uuid), ApiError> {
    let not_found = || ApiError::NotFound("The mapping doesn't exist".into());
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let app = state
        .hot
        .apps_of(caller.account_id)
        .into_iter()
        .find(|app| app.mappings.iter().any(|m| m.mapping_id == id))
        .ok_or_else(not_found)?;
    Ok((app, id))
}

/// `PUT /v1/commerce/mappings/{mappingId}`: replaces the mapping (it stays in its app).
pub async fn update_mapping(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(mapping_id): ApiPath<String>,
    ApiJson(body): ApiJson<MappingBody>,
) -> Result<Json<Value>, ApiError> {
    let (app, id) = mapping_owner(&state, &caller, &mapping_id)?;
    if body.app_id.as_ref().is_some_and(|a| *a != app.app_id.to_string()) {
        return Err(ApiError::Conflict("a mapping cannot move to another app".into()));
    }
    let mapping = mapping_from(body, id)?;
    let app = change(&state, &caller, &app, AppCommand::SetMapping(mapping.clone())).await?;
    Ok(Json(mapping_json(&app, &mapping)))
}

pub async fn delete_mapping(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(mapping_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let (app, mapping_id) = mapping_owner(&state, &caller, &mapping_id)?;
    change(&state, &caller, &app, AppCommand::DeleteMapping { mapping_id }).await?;
    Ok(Json(json!({ "ok": true })))
}

/// Read as text (the portable row reader decodes every column as text).
const EVENT_COLUMNS: &str = "stream_id, provider, event_type, status, reason, error, CAST(attempts AS TEXT),
    CAST(retry_count AS TEXT), retry_at, license_keys, CAST(redacted AS TEXT), received_at, updated_at, external_id";

fn event_json(row: &[Option<String>]) -> Value {
    let text = |i: usize| row.get(i).cloned().flatten();
    let number = |i: usize| text(i).and_then(|n| n.parse::<i64>().ok()).unwrap_or(0);
    let keys: Vec<String> =
        text(9).unwrap_or_default().split(',').filter(|k| !k.is_empty()).map(str::to_string).collect();
    let id = text(0).unwrap_or_default().trim_start_matches("commerce-").to_string();
    json!({
        "eventId": id, "provider": text(1), "type": text(2), "status": text(3), "reason": text(4),
        "error": text(5), "attempts": number(6), "retryCount": number(7), "retryAt": text(8),
        "licenseKeys": keys, "redacted": number(10) == 1, "receivedAt": text(11), "updatedAt": text(12),
        "externalEventId": text(13),
    })
}

/// Unknown fields are refused (400 naming the field): a misspelt filter on the bulk replay would
/// otherwise match, and replay, everything.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventFilter {
    provider: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    status: Option<String>,
    license_key: Option<String>,
    limit: Option<String>,
}

const STATUSES: [&str; 5] = ["pending", "processed", "skipped", "failed", "held"];

/// `GET /v1/commerce/events`' query: the filter, and the page. Unknown parameters are refused like
/// the bulk replay's unknown fields (a misspelt filter would otherwise list everything).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventQuery {
    provider: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    status: Option<String>,
    license_key: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    order: Option<String>,
}

/// The ledger's sort key: arrival, then the unique stream id.
const BY_ARRIVAL: &[KeyColumn] = &[text("received_at"), text("stream_id")];

/// One page of the caller's ledger rows matching `filter`.
async fn matching_events(
    state: &AppState,
    caller: &Caller,
    filter: &EventFilter,
    request: &PageRequest,
) -> Result<Page, ApiError> {
    if let Some(status) = filter.status.as_deref().filter(|s| !STATUSES.contains(s)) {
        return Err(ApiError::BadRequest(format!("unknown status '{status}'")));
    }
    let provider = filter
        .provider
        .as_deref()
        .map(provider)
        .transpose()
        .map_err(|_| ApiError::BadRequest("provider must be stripe or lemon".into()))?;
    let mut filters = Filters::default();
    let account = filters.bind(caller.account_id.to_string());
    filters.require(format!("account_id = {account}"));
    if let Some(provider) = provider {
        let provider = filters.bind(provider.as_str().to_string());
        filters.require(format!("provider = {provider}"));
    }
    if let Some(event_type) = filter.event_type.as_deref() {
        let event_type = filters.bind(event_type.to_string());
        filters.require(format!("event_type = {event_type}"));
    }
    if let Some(status) = filter.status.as_deref() {
        let status = filters.bind(status.to_string());
        filters.require(format!("status = {status}"));
    }
    if let Some(key) = filter.license_key.as_deref() {
        let key = filters.bind(format!("%,{},%", key.trim().to_uppercase()));
        filters.require(format!("license_keys LIKE {key}"));
    }
    state.refresh_sql(std::sync::Arc::new(licensd_projections::CommerceLedger)).await?;
    let listing = Listing { columns: EVENT_COLUMNS, from: "rm_commerce_events", key: BY_ARRIVAL, filters, count: true };
    listing.fetch(state, request).await
}

/// `GET /v1/commerce/events`: the ledger, filtered by provider, type, status or license key,
/// newest first by default, paged by cursor.
pub async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = page_size(query.limit.as_deref())?;
    let request = PageRequest::new("commerce-events", limit, query.order.as_deref(), query.cursor.as_deref())?;
    let EventQuery { provider, event_type, status, license_key, .. } = query;
    let filter = EventFilter { provider, event_type, status, license_key, limit: None };
    let page = matching_events(&state, &caller, &filter, &request).await?;
    let events: Vec<Value> = page.rows.iter().map(|r| event_json(r)).collect();
    Ok(Json(json!({ "events": events, "cursor": page.cursor, "total": page.total })))
}

/// The caller's ledger stream for a row id, or 404.
async fn owned_event(state: &AppState, caller: &Caller, event_id: &str) -> Result<(String, Value), ApiError> {
    let stream = StreamCategory::Commerce.stream_id(event_id);
    state.refresh_sql(std::sync::Arc::new(licensd_projections::CommerceLedger)).await?;
    let sql = format!("SELECT {EVENT_COLUMNS} FROM rm_commerce_events WHERE stream_id = $1 AND account_id = $2");
    let rows =
        state.commands.store().query_rows(&sql, &[stream.clone().into(), caller.account_id.to_string().into()]).await?;
    let row = rows.first().ok_or_else(|| ApiError::NotFound("The event doesn't exist".into()))?;
    Ok((stream, event_json(row)))
}

pub async fn get_event(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(event_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(owned_event(&state, &caller, &event_id).await?.1))
}

async fn replay_stream(state: &AppState, caller: &Caller, stream: &str) -> Result<(), ApiError> {
    let actor = caller.actor.clone();
    let account = Some(caller.account_id);
    state.commands.execute::<LedgerState>(stream, LedgerCommand::Replay, &actor, account, |_| Ok(())).await?;
    Ok(())
}

/// `POST /v1/commerce/events/{eventId}/replay`: re-runs the stored normalized event (no
/// re-fetch, no re-verification); only skipped, failed and held entries.
pub async fn replay_event(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(event_id): ApiPath<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (stream, _) = owned_event(&state, &caller, &event_id).await?;
    replay_stream(&state, &caller, &stream).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "ok": true, "eventId": event_id, "status": "pending" }))))
}

/// `POST /v1/commerce/events/replay` (beyond the docs): replays every skipped, failed or held
/// entry matching the filter (at most 200 per call).
pub async fn replay_matching(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(filter): ApiJson<EventFilter>,
) -> Result<Json<Value>, ApiError> {
    // A client sending `limit` would expect fewer replays than the fixed 200 it would get.
    if filter.limit.is_some() {
        return Err(ApiError::BadRequest("unknown field `limit`: the bulk replay takes at most 200 per call".into()));
    }
    let newest = PageRequest::new("commerce-events", 200, None, None)?;
    let rows = matching_events(&state, &caller, &filter, &newest).await?.rows;
    let mut replayed = 0;
    for row in rows {
        let status = row.get(3).cloned().flatten().unwrap_or_default();
        if matches!(status.as_str(), "skipped" | "failed" | "held") {
            if let Some(stream) = row.first().cloned().flatten() {
                replay_stream(&state, &caller, &stream).await?;
                replayed += 1;
            }
        }
    }
    Ok(Json(json!({ "ok": true, "replayed": replayed })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForgetBody {
    #[serde(default)]
    customer_email: Option<String>,
    #[serde(default)]
    provider_customer_id: Option<String>,
    /// An app user's login (also looked up by `customerEmail`).
    #[serde(default)]
    user_login: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// Whose personal data an erasure is about.
struct Subject {
    email: Option<String>,
    customer_id: Option<String>,
}

impl Subject {
    /// Whether the vault fields of one record name this subject.
    async fn matches(&self, state: &AppState, record: &str) -> Result<bool, ApiError> {
        let vault = state.commands.pii();
        if let Some(email) = &self.email {
            if vault.get(record, "email").await?.as_deref() == Some(email.as_str()) {
                return Ok(true);
            }
        }
        if let Some(customer) = &self.customer_id {
            if vault.get(record, "customer_id").await?.as_deref() == Some(customer.as_str()) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// `POST /v1/apps/{appId}/customers/forget`: erases a buyer's personal data from the app's
/// licenses (which are revoked) and from the account's commerce ledger (rows kept, redacted).
pub async fn forget_customer(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
    ApiJson(body): ApiJson<ForgetBody>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let email = match body.customer_email.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
        Some(email) => Some(
            licensd_commands::normalize_email(email)
                .map_err(|_| ApiError::BadRequest("customerEmail is not a valid address".into()))?,
        ),
        None => None,
    };
    let customer_id = body.provider_customer_id.map(|c| c.trim().to_string()).filter(|c| !c.is_empty());
    let user_login = body.user_login.as_deref().map(str::trim).filter(|l| !l.is_empty());
    if email.is_none() && customer_id.is_none() && user_login.is_none() {
        return Err(ApiError::BadRequest("give customerEmail, providerCustomerId, userLogin or several".into()));
    }
    let users_erased = super::users::forget(&state, &caller, &app, [email.as_deref(), user_login]).await?;
    let subject = Subject { email, customer_id };
    let actor = caller.actor.clone();
    let vault = state.commands.pii();

    let mut licenses_redacted = 0u64;
    let licenses = state
        .commands
        .store()
        .query_text("SELECT license_key FROM rm_licenses WHERE app_id = $1", &[app.app_id.to_string().into()])
        .await?;
    for key in licenses.into_iter().flatten().filter_map(|k| LicenseKey::parse(&k).ok()) {
        let record = StreamCategory::License.stream_id(&key);
        if !subject.matches(&state, &record).await? {
            continue;
        }
        vault.erase(&record).await?;
        // Removing the email also clears its keyed index from the listing's read model.
        let email_removed = LicenseCommand::RecordBuyerEmail { email_digest: None };
        for command in [LicenseCommand::Revoke, LicenseCommand::UnlinkCommerce, email_removed] {
            state.commands.license_command(caller.account_id, &key, command, &actor).await?;
        }
        licenses_redacted += 1;
    }

    state.refresh_sql(std::sync::Arc::new(licensd_projections::CommerceLedger)).await?;
    let rows = state
        .commands
        .store()
        .query_text(
            "SELECT stream_id FROM rm_commerce_events WHERE account_id = $1",
            &[caller.account_id.to_string().into()],
        )
        .await?;
    let (mut scanned, mut redacted) = (0u64, 0u64);
    for stream in rows.into_iter().flatten() {
        scanned += 1;
        if !subject.matches(&state, &stream).await? {
            continue;
        }
        vault.erase(&stream).await?;
        let account = Some(caller.account_id);
        state.commands.execute::<LedgerState>(&stream, LedgerCommand::Redact, &actor, account, |_| Ok(())).await?;
        redacted += 1;
    }

    // The audit entry carries counts and the reason, never the identifiers themselves.
    let mut reason = body.reason.map(|r| redact_reason(&r, &subject));
    if let Some(login) = user_login {
        let login_only = Subject { email: Some(login.to_string()), customer_id: None };
        reason = reason.map(|r| redact_reason(&r, &login_only));
    }
    let record = AppCommand::RecordForget {
        licenses_redacted,
        ledger_rows_scanned: scanned,
        ledger_rows_redacted: redacted,
        users_erased,
        reason,
    };
    change(&state, &caller, &app, record).await?;
    Ok(Json(json!({
        "ok": true,
        "licensesRedacted": licenses_redacted,
        "ledgerRowsScanned": scanned,
        "ledgerRowsRedacted": redacted,
        "usersErased": users_erased,
    })))
}

/// The reason text with the subject's identifiers cut out (ASCII case-insensitively), at most
/// 200 characters.
fn redact_reason(reason: &str, subject: &Subject) -> String {
    let mut reason = reason.to_string();
    for needle in [&subject.email, &subject.customer_id].into_iter().flatten().filter(|n| !n.is_empty()) {
        let mut cleaned = String::with_capacity(reason.len());
        let mut chars = reason.char_indices();
        while let Some((at, c)) = chars.next() {
            // `get` is None off a character boundary, so no slice can panic on multi-byte text.
            if reason.get(at..at + needle.len()).is_some_and(|s| s.eq_ignore_ascii_case(needle)) {
                cleaned.push_str("[redacted]");
                let end = at + needle.len();
                while chars.clone().next().is_some_and(|(next, _)| next < end) {
                    chars.next();
                }
            } else {
                cleaned.push(c);
            }
        }
        reason = cleaned;
    }
    reason.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_lose_the_identifiers_in_any_case() {
        let subject = Subject { email: Some("alice@example.com".into()), customer_id: Some("cus_9".into()) };
        let cleaned = redact_reason("Ticket 12: ALICE@example.com asked (cus_9) ü", &subject);
        assert_eq!(cleaned, "Ticket 12: [redacted] asked ([redacted]) ü");
        let cleaned = redact_reason("ALICE@EXAMPLE.COM", &subject);
        assert_eq!(cleaned, "[redacted]");
    }
}
