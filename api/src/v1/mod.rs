//! The Developer API: apps, their settings and keys; licenses, their actions, variables and files.

mod account;
mod app_settings;
mod apps;
mod commerce;
mod csv;
mod files;
mod history_words;
mod idempotency;
mod ledgers;
mod license_list;
mod licenses;
mod model_limits;
mod overview;
mod paging;
mod schemas;
mod signing_keys;
mod spec;
mod users;
mod webhooks;

use crate::{ApiError, AppState};
pub(crate) use app_settings::owned_app;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
pub(crate) use commerce::forget_customer;
pub(crate) use files::is_upload as is_file_upload;
use licensd_domain::app::{App, AppState as AppStream};
use licensd_domain::license::{License, LicenseState};
use licensd_domain::{AppId, LicenseKey, StreamCategory};
use licensd_store::Position;
pub use model_limits::LiveModelLimits;

/// The Developer API's routes and `GET /v1/openapi.json`, from one table of operations; every
/// write honours an `Idempotency-Key`.
pub fn routes(state: &AppState) -> Router<AppState> {
    let limits = &state.config.live_model;
    let operations = spec::operations(limits);
    let document = std::sync::Arc::new(spec::document(&operations, limits, state.config.export_max_rows));
    // Per operation, so a method the path does not offer is a plain 405 and claims no key.
    let guard = axum::middleware::from_fn_with_state(state.clone(), idempotency::guard);
    spec::router(&operations, |route| route.route_layer(guard.clone()))
        .route("/websocket/server", get(crate::live::balancer))
        .route("/openapi.json", get(move || async move { axum::Json((*document).clone()) }))
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

/// Rows one CSV export answers: `limit` 1–`LICENSD_EXPORT_MAX_ROWS`, default all of them.
pub(crate) fn export_size(state: &AppState, limit: Option<&str>) -> Result<i64, ApiError> {
    let most = state.config.export_max_rows;
    match limit.map(str::parse::<i64>) {
        None => Ok(most),
        Some(Ok(n)) if (1..=most).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::BadRequest(format!("limit must be between 1 and {most}"))),
    }
}

/// A write is acknowledged once the read models show it, so the caller's next read does; `None`
/// (a command that changed nothing) has nothing to wait for. The write is durable already, so a
/// model still behind after `LICENSD_READ_YOUR_WRITES_TIMEOUT_MS` never fails the request: the
/// answer is then built from the event stream itself (`false`, see [`current_app`]).
pub(crate) async fn visible(state: &AppState, position: impl Into<Option<Position>>) -> bool {
    let Some(position) = position.into() else { return true };
    match state.hot.wait_for(position, state.config.read_your_writes_timeout).await {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "answering a committed write before the read model shows it");
            false
        }
    }
}

/// The app after a write: from the read model when it shows the write, else folded from its stream.
pub(crate) async fn current_app(state: &AppState, shown: bool, app_id: AppId) -> Result<Option<App>, ApiError> {
    if shown {
        return Ok(state.hot.app(app_id).map(|app| App::clone(&app)));
    }
    let (app, _) = state.commands.load::<AppStream>(&StreamCategory::App.stream_id(app_id)).await?;
    Ok(app.0)
}

/// The license after a write, like [`current_app`].
pub(crate) async fn current_license(
    state: &AppState,
    shown: bool,
    key: &LicenseKey,
) -> Result<Option<License>, ApiError> {
    if shown {
        return Ok(state.hot.license(key));
    }
    match state.commands.load::<LicenseState>(&StreamCategory::License.stream_id(key)).await?.0 {
        LicenseState::Live(license) => Ok(Some(license)),
        LicenseState::Missing | LicenseState::Deleted => Ok(None),
    }
}
