//! `POST /auth/validate`: authenticate the app, check lists, bind the machine, bill, sign.

use super::body::{Fields, RawBody};
use super::session::Session;
use super::{admit, admitted, ensure_credits, hotpath, AuthError, ClientIp, LicenseRequest, Refusal};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use licensd_domain::app::App;
use licensd_domain::license::License;
use licensd_domain::license::{LicenseCommand, LicenseState};
use licensd_domain::Aggregate;
use licensd_domain::LicenseKey;

pub async fn validate(State(state): State<AppState>, ip: ClientIp, RawBody(body): RawBody) -> Response {
    admitted(&state, async { run(&state, ip, &body).await.unwrap_or_else(IntoResponse::into_response) }).await
}

async fn run(state: &AppState, ip: ClientIp, body: &Bytes) -> Result<Response, Refusal> {
    let mut fields = Fields::parse(body)?;
    let ttl = fields.optional_integer("ttlSeconds");
    let (app, LicenseRequest { key, hwid, nonce }, quota_left) = admit(state, ip, &mut fields)?;
    let auth = &state.auth;
    let now = state.commands.now();

    let license = authenticate_and_bill(state, &app, &key, &hwid, Some(&nonce)).await?;
    state.hot.record_nonce(app.app_id, &nonce);

    let ttl = auth.config.clamp_ttl(ttl);
    let session = Session { app: &app, license: &license, hwid: &hwid, nonce: &nonce, ttl, now };
    let mut response = session.issue(state)?.into_response();
    if let Ok(left) = HeaderValue::from_str(&quota_left.to_string()) {
        response.headers_mut().insert("X-RateLimit-Remaining", left);
    }
    Ok(response)
}

/// One successful login of machine `hwid` on `key`, as `/auth/validate` and a live session's
/// authorize-by-license both do it: the license must be the app's, live and unexpired; the machine
/// takes a free HWID slot if it has none (slots full → `HwidMismatch`); one credit is billed. With
/// the license's lock held, so concurrent logins see each other's bindings. `nonce`, when given, is
/// refused if already seen (the caller records it after success).
pub(crate) async fn authenticate_and_bill(
    state: &AppState,
    app: &App,
    key: &LicenseKey,
    hwid: &str,
    nonce: Option<&str>,
) -> Result<License, AuthError> {
    let now = state.commands.now();
    let _serialised = state.auth.locks.lock(key).await;
    hotpath::commit(state, key, |license| {
        if license.app_id != app.app_id {
            return Err(AuthError::InvalidKey);
        }
        if nonce.is_some_and(|n| state.hot.nonce_seen(app.app_id, n)) {
            return Err(AuthError::ReplayDetected);
        }
        if nonce.is_some() && state.hot.nonces_full() {
            return Err(AuthError::NonceCapacityReached);
        }
        let mut events = license.decide(LicenseCommand::Authenticate { hwid: hwid.to_string() }, now)?;
        ensure_credits(state, app, 1, now)?;
        let bill = LicenseCommand::BillValidation { nonce: nonce.map(str::to_string), hwid: Some(hwid.to_string()) };
        if events.is_empty() {
            // The machine was bound already (the usual case): billed against the license as it is.
            return Ok(license.decide(bill, now)?);
        }
        let bound = events.iter().fold(LicenseState::Live(license.clone()), LicenseState::evolve);
        events.extend(bound.decide(bill, now)?);
        Ok(events)
    })
    .await
}
