//! The HTTP surface: `/healthz`, `/metrics` and the Developer API (`/v1`). Handlers issue
//! commands and read from projections; errors become responses in one place ([`ApiError`]).

pub mod app_users;
pub mod auth;
mod billing;
pub mod client_ip;
mod control_chars;
pub mod dashboard;
mod edge;
mod error;
mod extract;
pub mod files;
mod health;
mod limits;
pub mod listener;
pub mod live;
mod metrics;
pub mod portal;
pub mod presence;
pub mod server;
mod signed;
mod state;
mod v1;
mod web;

pub use auth::AuthConfig;
pub use error::ApiError;
pub use listener::{plain_listener, tls_config, PeerAddr, TlsListener};
pub use metrics::Metrics;
pub use server::{serve, ConnectionLimits};
pub use state::{ApiConfig, AppState};
pub use v1::{LiveModelLimits, SEALED_IDEMPOTENT_ANSWERS};

use axum::extract::DefaultBodyLimit;
use axum::Router;

/// The whole router, ready to serve.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .merge(health::routes())
        .nest("/v1", v1::routes(&state))
        .nest("/auth", auth::routes())
        .nest("/billing", billing::routes())
        .nest("/portal", portal::routes())
        .nest("/dashboard", dashboard::routes())
        .merge(web::routes())
        .merge(live::routes())
        // The documented (dashboard) path of GDPR erasure; the same operation as under /v1.
        .route("/apps/{app_id}/customers/forget", axum::routing::post(v1::forget_customer))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), metrics::carry_route))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(axum::middleware::from_fn(edge::refuse_control_characters))
        .layer(axum::middleware::from_fn_with_state(state.clone(), edge::read_body_in_time))
        .layer(axum::middleware::from_fn(edge::documented_errors))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::count_requests))
        .layer(axum::middleware::from_fn_with_state(state.clone(), client_ip::resolve))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
