//! `POST /auth/selfban`: a tampered client bans itself. With a session token it may also revoke
//! its license; without one (app secret + license key + nonce) it may only blacklist. Refusals
//! follow the docs' table: `replay_detected`, `revoked`, `expired`, `app_disabled`, ...; the
//! entries go to the app's self-ban lists, which have their own cap (`rate_limited` when full).

use super::body::{Fields, RawBody};
use super::token::hwid_digest;
use super::{authenticate_app, ensure_enabled, AuthError, ClientIp, Refusal};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use licensd_commands::{Actor, CommandError};
use licensd_domain::app::{App, AppCommand};
use licensd_domain::license::{LicenseCommand, LicenseStatus};
use licensd_domain::{LicenseKey, MAX_HWID_LEN};
use serde_json::json;

pub async fn selfban(State(state): State<AppState>, ip: ClientIp, RawBody(body): RawBody) -> Response {
    run(&state, ip, &body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn run(state: &AppState, ip: ClientIp, body: &Bytes) -> Result<Response, Refusal> {
    let mut fields = Fields::parse(body)?;
    let app_id = fields.string("appId");
    let hwid = fields.string("hwid");
    let with_session = fields.has("sessionToken");
    // The documented defaults: revoke post-session only (a pre-session revoke is refused).
    let revoke = fields.bool_or("revokeLicense", with_session);
    let ban_hwid = fields.bool_or("blacklistHwid", true);
    let ban_ip = fields.bool_or("blacklistIp", true);
    let (token, secret, key, nonce) = if with_session {
        // The SDKs send no nonce after a session; one that is sent is held to the replay rule.
        let nonce = fields.has("nonce").then(|| fields.string("nonce"));
        (fields.string("sessionToken"), String::new(), String::new(), nonce)
    } else {
        (String::new(), fields.string("appSecret"), fields.string("licenseKey"), Some(fields.string("nonce")))
    };
    fields.check()?;
    if hwid.chars().count() > MAX_HWID_LEN {
        let details = vec![json!({ "field": "hwid", "issue": format!("must be at most {MAX_HWID_LEN} characters") })];
        return Err(Refusal::with_details(AuthError::BadRequest, details));
    }

    let auth = &state.auth;
    auth.selfban_ip.check_ip(ip.0).ok_or(AuthError::RateLimited)?;
    let now = state.commands.now();
    let (app, key) = if with_session {
        let claims = auth.tokens.open(&token).ok_or(AuthError::SessionExpired)?;
        if claims.exp <= now.timestamp() || claims.app != app_id || claims.hw != hwid_digest(&hwid) {
            return Err(AuthError::SessionExpired.into());
        }
        let app = app_id.parse().ok().and_then(|id| state.hot.app(id)).ok_or(AuthError::InvalidApp)?;
        (app, LicenseKey::parse(&claims.lic).map_err(|_| AuthError::SessionExpired)?)
    } else {
        // The app first: a caller without its credentials must not spend a key's budget.
        let app = authenticate_app(state, &app_id, &secret)?;
        auth.selfban_key.check_folded(&key).ok_or(AuthError::RateLimited)?;
        if revoke {
            return Err(AuthError::RevokeRequiresSession.into());
        }
        (app, LicenseKey::parse(&key).map_err(|_| AuthError::InvalidKey)?)
    };
    ensure_enabled(state, &app)?;
    let license = state.hot.license(&key).filter(|l| l.app_id == app.app_id).ok_or(AuthError::InvalidKey)?;
    if nonce.as_ref().is_some_and(|n| state.hot.nonce_seen(app.app_id, n)) {
        return Err(AuthError::ReplayDetected.into());
    }
    if nonce.is_some() && state.hot.nonces_full() {
        return Err(AuthError::NonceCapacityReached.into());
    }
    if license.status == LicenseStatus::Revoked {
        return Err(AuthError::Revoked.into());
    }
    if license.is_expired(now) {
        return Err(AuthError::Expired.into());
    }

    let ban = AppCommand::SelfBan {
        hwid: ban_hwid.then(|| hwid.clone()),
        ip: ban_ip.then_some(ip.0).flatten().map(|ip| ip.to_canonical().to_string()),
        max_entries: auth.config.selfban_max_entries,
        comment: None,
    };
    let outcome = apply(state, &app, ban, revoke.then_some((key, license.account_id))).await;
    if let Some(nonce) = &nonce {
        // Whatever the outcome, the request was authenticated and acted on: its nonce is spent.
        state.hot.record_nonce(app.app_id, nonce);
    }
    outcome?;
    Ok(Json(json!({ "status": "success" })).into_response())
}

/// Appends the ban (and the revocation) and waits until the next heartbeat will see them.
pub(crate) async fn apply(
    state: &AppState,
    app: &App,
    ban: AppCommand,
    revoke: Option<(LicenseKey, licensd_domain::AccountId)>,
) -> Result<(), AuthError> {
    let failed = |e: CommandError| match e {
        CommandError::Domain(refusal) => AuthError::from(refusal),
        e => {
            tracing::warn!(error = %e, "self-ban could not be recorded");
            AuthError::SystemError
        }
    };
    let mut positions = Vec::new();
    // The revocation first: a self-ban list at its cap must not keep a license usable.
    if let Some((key, account_id)) = revoke {
        let revoked = state
            .commands
            .license_command(account_id, &key, LicenseCommand::Revoke, &Actor::Client)
            .await
            .map_err(failed)?;
        positions.extend(revoked.result.map(|r| r.position));
    }
    let banned = state.commands.app_command(app.account_id, app.app_id, ban, &Actor::Client).await.map_err(failed);
    if let Ok(banned) = &banned {
        positions.extend(banned.result.map(|r| r.position));
    }
    if let Some(last) = positions.into_iter().max() {
        state.hot.wait_for(last, state.config.read_your_writes_timeout).await.map_err(|_| AuthError::SystemError)?;
    }
    banned.map(|_| ())
}
