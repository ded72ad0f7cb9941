//! Sign-in and sign-out forms.

use crate::auth::ClientIp;
use crate::web::{cross_site, page};
use crate::AppState;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use licensd_commands::lockout::Attempt;
use serde::Deserialize;

const LOGIN_PAGE: &str = include_str!("../../assets/login.html");

/// Where a successful sign-in sends the browser: the dashboard, marked, so that arriving there
/// without the cookie is told apart from arriving signed out.
pub(super) const SIGNED_IN: &str = "/dashboard?signed-in=1";

/// The dashboard sends a browser here when it arrived from a successful sign-in without the
/// session cookie: the browser refused to store or send it.
pub(super) const COOKIE_DROPPED: &str = "/dashboard/login?cookie=dropped";

/// Said instead of silently showing the form again: the usual cause is a `Secure` cookie over
/// plain HTTP on a host other than localhost.
const COOKIE_DROPPED_MESSAGE: &str = "You signed in, but your browser did not keep the session cookie. \
    The cookie is marked Secure, so browsers keep it only over HTTPS (or on localhost): serve licensd \
    over TLS (LICENSD_TLS_CERT and LICENSD_TLS_KEY, or a TLS proxy), or, on a trusted network only, \
    start it with LICENSD_COOKIE_SECURE=false. Also check that cookies are allowed for this site.";

#[derive(Deserialize)]
pub struct FormQuery {
    cookie: Option<String>,
}

pub async fn form(State(state): State<AppState>, headers: HeaderMap, Query(query): Query<FormQuery>) -> Response {
    if super::session(&state, &headers).is_some() {
        return Redirect::to("/dashboard").into_response();
    }
    let error = if query.cookie.as_deref() == Some("dropped") { COOKIE_DROPPED_MESSAGE } else { "" };
    page(StatusCode::OK, LOGIN_PAGE, &[("error", error), ("email", "")])
}

#[derive(Deserialize)]
pub struct Credentials {
    email: String,
    password: String,
}

fn refused(status: StatusCode, message: &str, email: &str) -> Response {
    page(status, LOGIN_PAGE, &[("error", message), ("email", email)])
}

/// The database behind the lockout or the verifiers failed: the error goes to the log only.
fn unavailable(error: &licensd_commands::CommandError, email: &str) -> Response {
    tracing::error!(%error, "dashboard sign-in cannot reach its records");
    refused(StatusCode::SERVICE_UNAVAILABLE, "Sign-in is unavailable right now. Try again shortly.", email)
}

pub async fn sign_in(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Form(credentials): Form<Credentials>,
) -> Response {
    if cross_site(&headers) {
        return refused(StatusCode::FORBIDDEN, "Sign in from this site's own page.", "");
    }
    let email = credentials.email.trim();
    let control = crate::control_chars::in_identifier;
    if control(email) || control(&credentials.password) {
        return refused(StatusCode::BAD_REQUEST, "The email or password contains a control character.", "");
    }
    if !state.dashboard.allow_ip(&ip.limit_key()) {
        return refused(StatusCode::TOO_MANY_REQUESTS, "Too many sign-in attempts. Try again later.", email);
    }
    let Ok(digest) = licensd_commands::password::email_digest(state.commands.master_key(), email) else {
        return refused(StatusCode::UNAUTHORIZED, "The email or password is wrong.", email);
    };
    // Counted before the check, atomically and in the database: concurrent guesses beyond the
    // limit are refused without a verification, and a restart does not reset the count.
    let now = state.commands.now();
    match state.dashboard.lockout.attempt(&digest, now).await {
        Ok(Attempt::Verify) => {}
        Ok(Attempt::Locked { until }) => {
            tracing::warn!("dashboard sign-in refused: this email is locked after repeated failures");
            let minutes = (until - now).num_seconds().max(1).unsigned_abs().div_ceil(60);
            let message = format!("Too many failed attempts. This sign-in is locked for {minutes} more minute(s).");
            return refused(StatusCode::TOO_MANY_REQUESTS, &message, email);
        }
        Err(e) => return unavailable(&e, email),
    }
    let login = state.lookup(|hot| hot.dashboard_login(&digest)).await.ok().flatten();
    let verifier = match &login {
        // An event written before verifiers left the log still carries its verifier.
        Some(login) => match login.password_hash.clone() {
            Some(legacy) => Some(legacy),
            None => match state.commands.dashboard_verifier(login.account_id).await {
                Ok(sealed) => sealed,
                Err(e) => return unavailable(&e, email),
            },
        },
        None => None,
    };
    let verifier = verifier.unwrap_or_else(|| state.dashboard.decoy_verifier().to_string());
    let password = credentials.password;
    let matches =
        tokio::task::spawn_blocking(move || licensd_commands::password::verify_password(&password, &verifier))
            .await
            .unwrap_or(false);
    let account = login.filter(|_| matches).and_then(|login| {
        let view = state.hot.account(login.account_id)?;
        (view.exists && !view.suspended).then_some((login.account_id, view.login_generation))
    });
    let Some((account_id, generation)) = account else {
        // Already counted by `attempt`.
        return refused(StatusCode::UNAUTHORIZED, "The email or password is wrong.", email);
    };
    if let Err(e) = state.dashboard.lockout.succeeded(&digest).await {
        tracing::error!(error = %e, "cannot clear the dashboard lockout after a successful sign-in");
    }
    tracing::info!(%account_id, "dashboard sign-in");
    let token = state.dashboard.issue(account_id, generation, state.commands.now());
    let mut response = Redirect::to(SIGNED_IN).into_response();
    response.headers_mut().insert(header::SET_COOKIE, state.dashboard.set_cookie(&token));
    response
}

#[derive(Deserialize)]
pub struct SignOut {
    csrf: String,
}

pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap, Form(form): Form<SignOut>) -> Response {
    match super::session(&state, &headers) {
        Some((token, _)) if state.dashboard.csrf_ok(&token, Some(&form.csrf)) => {
            let mut response = Redirect::to("/dashboard/login").into_response();
            response.headers_mut().insert(header::SET_COOKIE, state.dashboard.clear_cookie());
            response
        }
        Some(_) => (StatusCode::FORBIDDEN, "stale form; reload the page").into_response(),
        None => Redirect::to("/dashboard/login").into_response(),
    }
}
