//! `GET /v1/licenses` and `GET /v1/licenses.csv`: an app's licenses from the SQL read model,
//! filtered, sorted and paged by cursor (see [`super::paging`]).

use super::app_settings::owned_app;
use super::csv::{self, Cell};
use super::licenses::license_json;
use super::paging::{text, Filters, KeyColumn, Listing, PageRequest};
use crate::extract::{ApiQuery, Caller};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use licensd_domain::LicenseKey;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    app_id: Option<String>,
    /// Part of a key or label, any case.
    search: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    order: Option<String>,
    /// `created` (default), `expires` or `key`.
    sort: Option<String>,
    /// `active`, `expired` or `revoked`.
    status: Option<String>,
    /// The exact label.
    label: Option<String>,
    /// The buyer's email, matched exactly after normalization (by its keyed index).
    email: Option<String>,
    expires_after: Option<String>,
    expires_before: Option<String>,
}

const BY_CREATED: &[KeyColumn] = &[text("created_at"), text("license_key")];
/// Licenses without an expiry sort after every dated one (as if they expired last).
const BY_EXPIRY: &[KeyColumn] = &[text("COALESCE(expires_at, '9999-12-31T23:59:59.999Z')"), text("license_key")];
const BY_KEY: &[KeyColumn] = &[text("license_key")];
const MAX_TEXT_FILTER: usize = 100;

/// Read-model timestamps: ISO 8601 UTC with milliseconds, so text order is time order.
fn stored(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn date_time(name: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| ApiError::BadRequest(format!("{name} must be an ISO 8601 date-time such as 2026-12-31T23:59:59Z")))
}

fn short(name: &str, text: &str) -> Result<(), ApiError> {
    if text.chars().count() > MAX_TEXT_FILTER {
        return Err(ApiError::BadRequest(format!("{name} must be at most {MAX_TEXT_FILTER} characters")));
    }
    Ok(())
}

/// The listing and page the query asks for; `limit` is checked by the caller (JSON and CSV differ).
async fn listing(
    state: &AppState,
    caller: &Caller,
    query: &ListQuery,
    limit: i64,
) -> Result<(Listing<'static>, PageRequest), ApiError> {
    let app_id = query.app_id.as_deref().ok_or_else(|| ApiError::BadRequest("appId is required".into()))?;
    let app = owned_app(state, caller, app_id)?;
    let (sort, key) = match query.sort.as_deref() {
        None | Some("created") => ("created", BY_CREATED),
        Some("expires") => ("expires", BY_EXPIRY),
        Some("key") => ("key", BY_KEY),
        Some(_) => return Err(ApiError::BadRequest("sort must be created, expires or key".into())),
    };
    let request =
        PageRequest::new(&format!("licenses:{sort}"), limit, query.order.as_deref(), query.cursor.as_deref())?;
    let mut filters = Filters::default();
    let app = filters.bind(app.app_id.to_string());
    filters.require(format!("app_id = {app}"));
    if let Some(search) = query.search.as_deref().filter(|s| !s.trim().is_empty()) {
        short("search", search)?;
        // LIKE wildcards in the search text match themselves only approximately; harmless for a filter.
        let pattern = filters.bind(format!("%{}%", search.trim().to_uppercase()));
        filters.require(format!("(UPPER(license_key) LIKE {pattern} OR UPPER(COALESCE(label, '')) LIKE {pattern})"));
    }
    if let Some(label) = query.label.as_deref() {
        short("label", label)?;
        let label = filters.bind(label.to_string());
        filters.require(format!("label = {label}"));
    }
    if let Some(email) = query.email.as_deref().filter(|e| !e.trim().is_empty()) {
        let digest = licensd_commands::buyer_email_digest(state.commands.master_key(), email)
            .ok_or_else(|| ApiError::BadRequest("email is not a valid address".into()))?;
        let digest = filters.bind(digest);
        filters.require(format!("email_digest = {digest}"));
    }
    let now = state.commands.now();
    match query.status.as_deref() {
        None => {}
        Some("revoked") => filters.require("status = 'revoked'".into()),
        Some(status @ ("active" | "expired")) => {
            let now = filters.bind(stored(now));
            filters.require("status = 'active'".into());
            filters.require(if status == "active" {
                format!("(expires_at IS NULL OR expires_at > {now})")
            } else {
                format!("expires_at <= {now}")
            });
        }
        Some(_) => return Err(ApiError::BadRequest("status must be active, expired or revoked".into())),
    }
    if let Some(after) = query.expires_after.as_deref() {
        let after = filters.bind(stored(date_time("expiresAfter", after)?));
        filters.require(format!("expires_at >= {after}"));
    }
    if let Some(before) = query.expires_before.as_deref() {
        let before = filters.bind(stored(date_time("expiresBefore", before)?));
        filters.require(format!("expires_at < {before}"));
    }
    // The listing reads the SQL read model; bring it up to date so a write just made shows.
    state.refresh_sql(std::sync::Arc::new(licensd_projections::sql::Licenses)).await?;
    let listing = Listing { columns: "license_key", from: "rm_licenses", key, filters, count: true };
    Ok((listing, request))
}

/// `GET /v1/licenses`: newest first by default; `total` counts every match.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = super::page_size(query.limit.as_deref())?;
    let (listing, request) = listing(&state, &caller, &query, limit).await?;
    let page = listing.fetch(&state, &request).await?;
    let licenses: Vec<Value> = page
        .rows
        .iter()
        .filter_map(|r| LicenseKey::parse(r.first()?.as_deref()?).ok())
        .filter_map(|key| state.hot.license(&key))
        .map(|l| license_json(&l))
        .collect();
    Ok(Json(json!({ "licenses": licenses, "cursor": page.cursor, "total": page.total })))
}

/// `GET /v1/licenses.csv`: the same filters, up to `LICENSD_EXPORT_MAX_ROWS` rows a request.
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = super::export_size(&state, query.limit.as_deref())?;
    let (listing, request) = listing(&state, &caller, &query, limit).await?;
    let page = listing.fetch(&state, &request).await?;
    let now = state.commands.now();
    let licenses: Vec<_> = page
        .rows
        .iter()
        .filter_map(|r| LicenseKey::parse(r.first()?.as_deref()?).ok())
        .filter_map(|key| state.hot.license(&key))
        .collect();
    let rows = licenses.iter().map(|l| {
        let status = match l.status {
            licensd_domain::license::LicenseStatus::Revoked => "revoked",
            _ if l.expires_at.is_some_and(|at| at <= now) => "expired",
            _ => "active",
        };
        vec![
            Cell::text(l.key.to_string()),
            Cell::text(l.app_id.to_string()),
            Cell::text(status),
            Cell::Text(l.label.clone()),
            Cell::Text(l.expires_at.map(super::iso)),
            Cell::Number(Some(i64::from(l.max_hwid_slots))),
            Cell::Number(Some(l.hwids.len() as i64)),
            Cell::text(l.extras.levels.join(";")),
            Cell::Number(l.extras.max_sessions.map(i64::from)),
            Cell::text(super::iso(l.created_at)),
        ]
    });
    let header = [
        "licenseKey",
        "appId",
        "status",
        "label",
        "expiresAt",
        "maxHwidSlots",
        "hwidCount",
        "levels",
        "maxSessions",
        "createdAt",
    ];
    Ok(csv::response("licenses.csv", csv::document(&header, rows), page.cursor))
}
