//! `POST /auth/heartbeat`: re-check the session's license and mint a fresh token with the
//! remembered TTL. No replay check (the docs say so); every 10th success bills one credit.

use super::body::{Fields, RawBody};
use super::session::Session;
use super::token::hwid_digest;
use super::{admitted, ensure_credits, ensure_enabled, hotpath, AuthError, ClientIp, Refusal};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use licensd_domain::license::{LicenseCommand, LicenseStatus, HEARTBEATS_PER_CREDIT};
use licensd_domain::LicenseKey;

pub async fn heartbeat(State(state): State<AppState>, ip: ClientIp, RawBody(body): RawBody) -> Response {
    admitted(&state, async { run(&state, ip, &body).await.unwrap_or_else(IntoResponse::into_response) }).await
}

async fn run(state: &AppState, ip: ClientIp, body: &Bytes) -> Result<Response, Refusal> {
    let mut fields = Fields::parse(body)?;
    let app_id = fields.string("appId");
    let token = fields.string("sessionToken");
    let hwid = fields.string("hwid");
    let nonce = fields.string("nonce");
    fields.check()?;

    let auth = &state.auth;
    let now = state.commands.now();
    let claims = auth.tokens.open(&token).ok_or(AuthError::SessionExpired)?;
    if claims.exp <= now.timestamp() || claims.app != app_id {
        return Err(AuthError::SessionExpired.into());
    }
    if claims.hw != hwid_digest(&hwid) {
        return Err(AuthError::HwidMismatch.into());
    }
    let app = app_id.parse().ok().and_then(|id| state.hot.app(id)).ok_or(AuthError::InvalidApp)?;
    ensure_enabled(state, &app)?;
    let key = LicenseKey::parse(&claims.lic).map_err(|_| AuthError::SessionExpired)?;
    if let Some(limiter) = &auth.heartbeat_key {
        limiter.check(key.as_str()).ok_or(AuthError::RateLimited)?;
    }
    if !app.lists.allows(ip.0, &hwid) {
        return Err(AuthError::Blocked.into());
    }

    let serialised = auth.locks.lock(&key).await;
    let beats = auth.heartbeats.get(&key).map_or(0, |b| *b) + 1;
    let license = hotpath::commit(state, &key, |license| {
        if license.app_id != app.app_id {
            return Err(AuthError::InvalidKey);
        }
        if license.status == LicenseStatus::Revoked {
            return Err(AuthError::Revoked);
        }
        if license.is_expired(now) {
            return Err(AuthError::Expired);
        }
        if !license.hwids.contains(&hwid) {
            return Err(AuthError::HwidMismatch);
        }
        ensure_credits(state, &app, 1, now)?;
        Ok(license.decide(LicenseCommand::BillHeartbeats { heartbeats: beats }, now)?)
    })
    .await?;
    // The machine's last seen moves with every beat, not only the billed ones (see `presence`).
    state.presence.note_heartbeat(&key, &hwid, now);
    auth.heartbeats.insert(key, if beats >= HEARTBEATS_PER_CREDIT { 0 } else { beats });
    // Signing needs nothing the lock protects: other requests for this license go ahead.
    drop(serialised);

    let session = Session { app: &app, license: &license, hwid: &hwid, nonce: &nonce, ttl: claims.ttl, now };
    Ok(session.issue(state)?.into_response())
}
