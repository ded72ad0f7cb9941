//! `POST /auth/selfban`: a tampered client bans itself. With a session token it may also revoke
//! its license; without one (app secret + license key) it may only blacklist.

use super::body::{Fields, RawBody};
use super::token::hwid_digest;
use super::{authenticate_app, AuthError, ClientIp, Refusal};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use licensd_commands::Actor;
use licensd_domain::app::{App, AppCommand};
use licensd_domain::license::LicenseCommand;
use licensd_domain::LicenseKey;
use serde_json::json;

pub async fn selfban(State(state): State<AppState>, ip: ClientIp, RawBody(body): RawBody) -> Response {
    run(&state, ip, &body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn run(state: &AppState, ip: ClientIp, body: &Bytes) -> Result<Response, Refusal> {
    let mut fields = Fields::parse(body)?;
    let app_id = fields.string("appId");
    let hwid = fields.string("hwid");
    let revoke = fields.bool_or("revokeLicense", true);
    let ban_hwid = fields.bool_or("blacklistHwid", true);
    let ban_ip = fields.bool_or("blacklistIp", true);
    let with_session = fields.has("sessionToken");
    let (token, secret, key) = if with_session {
        (fields.string("sessionToken"), String::new(), String::new())
    } else {
        (String::new(), fields.string("appSecret"), fields.string("licenseKey"))
    };
    fields.check()?;

    let auth = &state.auth;
    auth.selfban_ip.check(&ip.limit_key()).ok_or(AuthError::RateLimited)?;
    let now = state.commands.now();
    let (app, key) = if with_session {
        let claims = auth.tokens.open(&token).ok_or(AuthError::SessionExpired)?;
        if claims.exp <= now.timestamp() || claims.app != app_id || claims.hw != hwid_digest(&hwid) {
            return Err(AuthError::SessionExpired.into());
        }
        let app = app_id.parse().ok().and_then(|id| state.hot.app(id)).ok_or(AuthError::InvalidApp)?;
        (app, LicenseKey::parse(&claims.lic).map_err(|_| AuthError::SessionExpired)?)
    } else {
        auth.selfban_key.check(&key.to_ascii_uppercase()).ok_or(AuthError::RateLimited)?;
        let app = authenticate_app(state, &app_id, &secret)?;
        if revoke {
            return Err(AuthError::RevokeRequiresSession.into());
        }
        (app, LicenseKey::parse(&key).map_err(|_| AuthError::InvalidKey)?)
    };
    let license = state.hot.license(&key).filter(|l| l.app_id == app.app_id).ok_or(AuthError::InvalidKey)?;

    let ban = AppCommand::Blacklist {
        hwid: ban_hwid.then(|| hwid.clone()),
        ip: ban_ip.then_some(ip.0).flatten().map(|ip| ip.to_string()),
    };
    apply(state, &app, ban, revoke.then_some((key, license.account_id))).await?;
    Ok(Json(json!({ "status": "success" })).into_response())
}

/// Appends the ban (and the revocation) and waits until the next heartbeat will see them.
async fn apply(
    state: &AppState,
    app: &App,
    ban: AppCommand,
    revoke: Option<(LicenseKey, licensd_domain::AccountId)>,
) -> Result<(), AuthError> {
    let failed = |e| {
        tracing::warn!(error = %e, "self-ban could not be recorded");
        AuthError::SystemError
    };
    let mut positions = Vec::new();
    let banned = state.commands.app_command(app.account_id, app.app_id, ban, &Actor::Client).await.map_err(failed)?;
    positions.extend(banned.result.map(|r| r.position));
    if let Some((key, account_id)) = revoke {
        let revoked = state
            .commands
            .license_command(account_id, &key, LicenseCommand::Revoke, &Actor::Client)
            .await
            .map_err(failed)?;
        positions.extend(revoked.result.map(|r| r.position));
    }
    if let Some(last) = positions.into_iter().max() {
        state.hot.wait_for(last, state.config.read_your_writes_timeout).await.map_err(|_| AuthError::SystemError)?;
    }
    Ok(())
}
