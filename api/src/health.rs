use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use licensd_projections::status::ProjectionStatus;
use serde_json::{json, Value};
use std::time::Duration;

pub fn routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/metrics", get(crate::metrics::render))
}

/// 200 while the database answers and no read model has been stuck on an event for longer than
/// `LICENSD_PROJECTION_STUCK_SECS`; 503 otherwise (reads from memory may still be served).
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.commands.store();
    let database = store.ping().await;
    let statuses = licensd_projections::status::statuses();
    let stuck: Vec<&str> =
        statuses.iter().filter(|s| is_stuck(s, state.config.projection_stuck)).map(|s| s.name).collect();
    let healthy = database.is_ok() && stuck.is_empty();
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "backend": store.backend(),
        "database": database.map_or_else(|e| e.to_string(), |_| "ok".into()),
        "readModelPosition": state.hot.position().to_string(),
        "licenses": state.hot.license_count(),
        "projections": statuses.iter().map(|s| report(s, state.config.projection_stuck)).collect::<Vec<_>>(),
        "stuckProjections": stuck,
        "node": state.config.node,
        // The single-owner roles (SQL read models, webhook dispatcher, commerce) and whether
        // this node runs each now; with several nodes exactly one holds each.
        // Where this node's in-memory model takes other nodes' events from: `kafka`,
        // `postgres-fallback` (Kafka configured but unreachable) or `postgres` (no Kafka).
        "logSource": licensd_workers::kafka::source().name(),
        "roles": licensd_store::leases_held().into_iter().map(|(role, held)| (role.to_string(), Value::Bool(held))).collect::<serde_json::Map<_, _>>(),
    });
    (status, Json(body))
}

fn is_stuck(status: &ProjectionStatus, threshold: Duration) -> bool {
    status.failing.as_ref().is_some_and(|f| f.since.elapsed() >= threshold)
}

/// One read model: its position, its lag (seconds since it last reached the end of the log; 0
/// while it is there), what it skipped, and the error stopping it.
fn report(status: &ProjectionStatus, threshold: Duration) -> Value {
    let lag = match (&status.failing, status.caught_up_at) {
        (None, Some(_)) => 0,
        (_, Some(at)) => at.elapsed().as_secs(),
        (_, None) => 0,
    };
    json!({
        "name": status.name,
        "position": status.position.to_string(),
        "lagSeconds": lag,
        "skippedEvents": status.skipped,
        "stuck": is_stuck(status, threshold),
        "error": status.failing.as_ref().map(|f| json!({
            "message": f.message,
            "failingForSeconds": f.since.elapsed().as_secs(),
        })),
    })
}
