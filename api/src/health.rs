use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

pub fn routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/metrics", get(crate::metrics::render))
}

/// 200 while the database answers; 503 otherwise (reads from memory may still be served).
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.commands.store();
    let database = store.ping().await;
    let status = if database.is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if database.is_ok() { "ok" } else { "unavailable" },
        "backend": store.backend(),
        "database": database.map_or_else(|e| e.to_string(), |_| "ok".into()),
        "readModelPosition": state.hot.position().to_string(),
        "licenses": state.hot.license_count(),
    });
    (status, Json(body))
}
