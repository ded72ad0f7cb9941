//! The merchant dashboard: email + password sign-in, then one page whose script drives the
//! Developer API with the session cookie (see `Caller`), so every dashboard action is exactly
//! the API's action, with its validation, scopes table and audit trail.

mod login;
pub mod session;

use crate::web::{cookie, page};
use crate::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

pub use session::{DashboardAuth, DashboardConfig};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(shell))
        .route("/login", get(login::form).post(login::sign_in))
        .route("/logout", post(login::sign_out))
}

/// The signed-in account's session token, if the cookie holds a live one.
pub(crate) fn session(state: &AppState, headers: &HeaderMap) -> Option<(String, licensd_domain::AccountId)> {
    let token = cookie(headers, session::COOKIE)?;
    let account = state.dashboard.verify(token, state.commands.now(), |account| {
        state.hot.account(account).filter(|a| a.exists && !a.suspended).map(|a| a.login_generation)
    })?;
    Some((token.to_string(), account))
}

#[derive(serde::Deserialize)]
struct ShellQuery {
    #[serde(rename = "signed-in")]
    signed_in: Option<String>,
}

async fn shell(State(state): State<AppState>, headers: HeaderMap, Query(query): Query<ShellQuery>) -> Response {
    match session(&state, &headers) {
        Some((token, account)) => page(
            StatusCode::OK,
            include_str!("../../assets/dashboard.html"),
            &[("csrf", &state.dashboard.csrf_token(&token)), ("account", &account.to_string())],
        ),
        // Sent here by a successful sign-in, yet no cookie came with the request.
        None if query.signed_in.is_some() => Redirect::to(login::COOKIE_DROPPED).into_response(),
        None => Redirect::to("/dashboard/login").into_response(),
    }
}
