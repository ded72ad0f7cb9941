//! The account's ledgers, paged by cursor: credit transactions (also as CSV) and the audit log.

use super::csv::{self, Cell};
use super::paging::{int, Filters, KeyColumn, Listing, Page, PageRequest};
use crate::extract::{ApiQuery, Caller};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use licensd_domain::LicenseKey;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Both ledgers are in log order: the position is their unique, insert-ordered key.
const BY_POSITION: &[KeyColumn] = &[int("pos_tx"), int("pos_seq")];
const MAX_TEXT_FILTER: usize = 100;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionQuery {
    limit: Option<String>,
    cursor: Option<String>,
    order: Option<String>,
    /// The exact kind (`validation`, `heartbeat`, `grant`, ...).
    kind: Option<String>,
    license_key: Option<String>,
}

/// The caller's credit movements matching `query`, one page of `limit`.
async fn transaction_page(
    state: &AppState,
    caller: &Caller,
    query: &TransactionQuery,
    limit: i64,
) -> Result<Page, ApiError> {
    let request = PageRequest::new("transactions", limit, query.order.as_deref(), query.cursor.as_deref())?;
    let mut filters = Filters::default();
    let account = filters.bind(caller.account_id.to_string());
    filters.require(format!("account_id = {account}"));
    if let Some(kind) = query.kind.as_deref() {
        if kind.chars().count() > MAX_TEXT_FILTER {
            return Err(ApiError::BadRequest(format!("kind must be at most {MAX_TEXT_FILTER} characters")));
        }
        let kind = filters.bind(kind.to_string());
        filters.require(format!("kind = {kind}"));
    }
    if let Some(key) = query.license_key.as_deref() {
        let key = LicenseKey::parse(key).map_err(|_| ApiError::BadRequest("licenseKey is not a license key".into()))?;
        let key = filters.bind(key.to_string());
        filters.require(format!("license_key = {key}"));
    }
    state.refresh_sql(Arc::new(licensd_projections::sql::CreditLedger)).await?;
    // No total: the ledger holds a row per billed call, so counting would scan it.
    let listing = Listing {
        columns: "CAST(delta AS TEXT), kind, reason, license_key, at",
        from: "rm_credit_ledger",
        key: BY_POSITION,
        filters,
        count: false,
    };
    listing.fetch(state, &request).await
}

fn delta(row: &[Option<String>]) -> Option<i64> {
    row[0].as_deref().and_then(|d| d.parse::<i64>().ok())
}

/// `GET /v1/credits/transactions`: grants, debits and billed calls, newest first by default.
pub async fn transactions(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<TransactionQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = super::page_size(query.limit.as_deref())?;
    let page = transaction_page(&state, &caller, &query, limit).await?;
    let transactions: Vec<Value> = page
        .rows
        .iter()
        .map(|r| json!({ "delta": delta(r), "kind": r[1], "reason": r[2], "licenseKey": r[3], "at": r[4] }))
        .collect();
    Ok(Json(json!({ "transactions": transactions, "cursor": page.cursor })))
}

/// `GET /v1/credits/transactions.csv`: the same rows as CSV, up to `LICENSD_EXPORT_MAX_ROWS`.
pub async fn transactions_export(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<TransactionQuery>,
) -> Result<Response, ApiError> {
    let limit = super::export_size(&state, query.limit.as_deref())?;
    let page = transaction_page(&state, &caller, &query, limit).await?;
    let rows = page.rows.iter().map(|r| {
        vec![
            Cell::Text(r[4].clone()),
            Cell::Number(delta(r)),
            Cell::Text(r[1].clone()),
            Cell::Text(r[2].clone()),
            Cell::Text(r[3].clone()),
        ]
    });
    let body = csv::document(&["at", "delta", "kind", "reason", "licenseKey"], rows);
    Ok(csv::response("transactions.csv", body, page.cursor))
}

/// Who an audit entry's actor is, by kind (the part of `Actor::label` before `:`).
const ACTOR_KINDS: [&str; 6] = ["operator", "api_key", "dashboard", "portal", "client", "system"];

fn actor_kind(actor: &str) -> &str {
    actor.split_once(':').map_or(actor, |(kind, _)| kind)
}

/// `a,b` as known actor kinds, or 400 naming the list.
fn actor_kinds(name: &str, text: &str) -> Result<Vec<&'static str>, ApiError> {
    text.split(',')
        .filter(|k| !k.trim().is_empty())
        .map(|k| {
            ACTOR_KINDS.iter().copied().find(|known| *known == k.trim()).ok_or_else(|| {
                ApiError::BadRequest(format!("{name} takes a comma-separated list of {}", ACTOR_KINDS.join(", ")))
            })
        })
        .collect()
}

/// SQL true when the `actor` column is of one of `kinds`.
fn actor_is_one_of(filters: &mut Filters, kinds: &[&str]) -> String {
    let tests: Vec<String> = kinds
        .iter()
        .map(|kind| {
            let exact = filters.bind(kind.to_string());
            let prefixed = filters.bind(format!("{kind}:%"));
            format!("actor = {exact} OR actor LIKE {prefixed}")
        })
        .collect();
    format!("({})", if tests.is_empty() { "1 = 0".to_string() } else { tests.join(" OR ") })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditQuery {
    limit: Option<String>,
    cursor: Option<String>,
    order: Option<String>,
    /// Only these actor kinds (comma-separated).
    actor_kind: Option<String>,
    /// Not these actor kinds (comma-separated; the dashboard leaves out `client`).
    exclude_actor_kind: Option<String>,
    /// The exact event type, e.g. `LicenseRevoked`.
    action: Option<String>,
}

/// `GET /v1/audit-log`: who changed what, newest first by default.
pub async fn audit_log(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = super::page_size(query.limit.as_deref())?;
    let request = PageRequest::new("audit", limit, query.order.as_deref(), query.cursor.as_deref())?;
    let mut filters = Filters::default();
    let account = filters.bind(caller.account_id.to_string());
    filters.require(format!("account_id = {account}"));
    if let Some(kinds) = query.actor_kind.as_deref() {
        let condition = actor_is_one_of(&mut filters, &actor_kinds("actorKind", kinds)?);
        filters.require(condition);
    }
    if let Some(kinds) = query.exclude_actor_kind.as_deref() {
        let condition = actor_is_one_of(&mut filters, &actor_kinds("excludeActorKind", kinds)?);
        filters.require(format!("NOT {condition}"));
    }
    if let Some(action) = query.action.as_deref() {
        if action.chars().count() > MAX_TEXT_FILTER {
            return Err(ApiError::BadRequest(format!("action must be at most {MAX_TEXT_FILTER} characters")));
        }
        let action = filters.bind(action.to_string());
        filters.require(format!("event_type = {action}"));
    }
    state.refresh_sql(Arc::new(licensd_projections::sql::AuditLog)).await?;
    let listing = Listing {
        columns: "stream_id, event_type, actor, at",
        from: "rm_audit_log",
        key: BY_POSITION,
        filters,
        count: false,
    };
    let page = listing.fetch(&state, &request).await?;
    let entries: Vec<Value> = page
        .rows
        .iter()
        .map(|r| {
            let kind = r[2].as_deref().map(actor_kind);
            json!({ "stream": r[0], "event": r[1], "actor": r[2], "actorKind": kind, "at": r[3] })
        })
        .collect();
    Ok(Json(json!({ "entries": entries, "cursor": page.cursor })))
}
