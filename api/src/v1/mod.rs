//! The Developer API: apps, their settings and keys; licenses, their actions, variables and files.

mod account;
mod app_settings;
mod apps;
mod commerce;
mod licenses;
mod schemas;
mod spec;
mod webhooks;

use crate::{ApiError, AppState};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
pub(crate) use commerce::forget_customer;
use licensd_store::Position;

/// The Developer API's routes and `GET /v1/openapi.json`, from one table of operations.
pub fn routes() -> Router<AppState> {
    let operations = spec::operations();
    let document = std::sync::Arc::new(spec::document(&operations));
    spec::router(&operations).route("/openapi.json", get(move || async move { axum::Json((*document).clone()) }))
}

/// Timestamps on the wire: ISO 8601 UTC with milliseconds, as the docs show.
pub(crate) fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Rows per page of a listing: `limit` 1–200, default 50.
pub(crate) fn page_size(limit: Option<&str>) -> Result<i64, ApiError> {
    const MAX_PAGE: i64 = 200;
    match limit.map(str::parse::<i64>) {
        None => Ok(50),
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::BadRequest(format!("limit must be between 1 and {MAX_PAGE}"))),
    }
}

/// A write is acknowledged only once the read models show it, so the caller's next read does.
/// `None` (a command that changed nothing) has nothing to wait for.
pub(crate) async fn visible(state: &AppState, position: impl Into<Option<Position>>) -> Result<(), ApiError> {
    match position.into() {
        Some(position) => Ok(state.hot.wait_for(position, state.config.read_your_writes_timeout).await?),
        None => Ok(()),
    }
}
