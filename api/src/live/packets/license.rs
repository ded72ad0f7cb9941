//! Packets 2 (authorize by license), 5 (logout) and 15 (get current license).
//!
//! Authorize maps onto licensd's own validation: the session's `client_id` takes one of the
//! license's HWID slots exactly as an SDK's hwid does (slots full and not bound → 502), one credit
//! is billed per successful authorize (as one `/auth/validate`), the app's security lists apply
//! to the client id and the IP, a revoked license is 105 and an expired one 103. Floating seats
//! (`maxSessions`) and the app's live-session quota are both 602, decided in the registry.

use super::{answer, status, Ctx, Reply, INTERNAL_ERROR, NOT_AUTHORIZED, OK};
use super::{
    ALREADY_AUTHORIZED, APP_PAUSED, CLIENT_ID_BLACKLISTED, CLIENT_ID_MISMATCH, LICENSE_BLACKLISTED, LICENSE_NOT_FOUND,
    LICENSE_TOO_LONG, LICENSE_TOO_SHORT, SESSIONS_QUOTA,
};
use crate::auth::AuthError;
use crate::live::envelope::{response, string_field, Close, PacketId};
use crate::live::model;
use crate::live::session::Authorized;
use licensd_domain::license::{License, LicenseStatus};
use licensd_domain::LicenseKey;
use serde_json::{Map, Value};

pub const LICENSE_EXPIRED: u16 = 103;
const LICENSE_CHARS: std::ops::RangeInclusive<usize> = 6..=64;

pub async fn authorize(ctx: &Ctx<'_>, id: PacketId, body: &Map<String, Value>) -> Result<Reply, Close> {
    let presented = string_field(body, "license")?;
    let (init, authorized) = {
        let state = ctx.session.state();
        (state.init.clone(), state.is_authorized_any())
    };
    let Some(init) = init else { return Err(Close::NotInitialized) };
    if authorized {
        return Ok(status(id, ALREADY_AUTHORIZED));
    }
    let length = presented.chars().count();
    if length < *LICENSE_CHARS.start() {
        return Ok(status(id, LICENSE_TOO_SHORT));
    }
    if length > *LICENSE_CHARS.end() {
        return Ok(status(id, LICENSE_TOO_LONG));
    }
    let state = ctx.state;
    let Some(app) = state.hot.app(init.app_id) else { return Ok(status(id, INTERNAL_ERROR)) };
    if crate::auth::ensure_enabled(state, &app).is_err() {
        return Ok(status(id, APP_PAUSED));
    }
    let ip = ctx.session.ip;
    if !app.lists.allows(Some(ip), &init.client_id) {
        return Ok(Reply::AnswerThenClose(response(id, CLIENT_ID_BLACKLISTED, Map::new()), Close::ClientIdBlacklisted));
    }
    let found =
        LicenseKey::parse(presented).ok().and_then(|key| state.hot.license(&key)).filter(|l| l.app_id == app.app_id);
    let Some(license) = found else { return Ok(status(id, LICENSE_NOT_FOUND)) };
    let now = state.commands.now();
    let refused = |code: u16, license: &License| Ok(answer(id, code, identity(license, ip, now)));
    // A license linked to an app user is theirs: it is used by signing in as them (§14.15).
    if license.extras.linked_user.is_some() {
        return refused(super::account::LICENSE_ALREADY_LINKED, &license);
    }
    if license.status == LicenseStatus::Revoked {
        return refused(LICENSE_BLACKLISTED, &license);
    }
    if license.is_expired(now) {
        return refused(LICENSE_EXPIRED, &license);
    }
    let registry = &ctx.live.registry;
    let quota = model::live_session_quota(&app);
    if registry.take_seat(ctx.session.id, app.app_id, &license.key, model::max_sessions(&license), quota).is_err() {
        return refused(SESSIONS_QUOTA, &license);
    }
    let bound = crate::auth::authenticate_and_bill(state, &app, &license.key, &init.client_id, None).await;
    let license = match bound {
        Ok(license) => license,
        Err(error) => {
            registry.release_seat(ctx.session.id, app.app_id, &license.key);
            return match error {
                AuthError::Revoked => refused(LICENSE_BLACKLISTED, &license),
                AuthError::Expired => refused(LICENSE_EXPIRED, &license),
                AuthError::HwidMismatch => refused(CLIENT_ID_MISMATCH, &license),
                // Linked to a user after the check above: the license aggregate refused it.
                AuthError::LicenseLinkedToUser => refused(super::account::LICENSE_ALREADY_LINKED, &license),
                AuthError::InvalidKey => Ok(status(id, LICENSE_NOT_FOUND)),
                AuthError::AppDisabled => Ok(status(id, APP_PAUSED)),
                // Out of credits or over a burn cap: the merchant's account, not the client, is at
                // fault; the protocol has no closer status than an internal error.
                _ => Ok(status(id, INTERNAL_ERROR)),
            };
        }
    };
    let generation = ctx.live.next_generation();
    ctx.session.state().auth = Some(Authorized { key: license.key.clone(), generation });
    // A revocation applied between the commit and the line above found no session to clear:
    // look again now that the session is registered as authorized.
    if state.hot.license(&license.key).is_none_or(|l| l.status == LicenseStatus::Revoked) {
        ctx.live.clear_authorization(ctx.session);
        return refused(LICENSE_BLACKLISTED, &license);
    }
    ctx.live.arm_expiry(ctx.session, generation, license.expires_at);
    Ok(answer(id, OK, identity(&license, ip, now)))
}

pub fn logout(ctx: &Ctx<'_>, id: PacketId) -> Result<Reply, Close> {
    let cleared = ctx.live.clear_authorization(ctx.session);
    Ok(status(id, if cleared { OK } else { NOT_AUTHORIZED }))
}

/// Packet 15: the authorized license as it is now; 103 (with the payload) once expired; 3 when
/// not authorized by license, or the license was deleted or revoked meanwhile.
pub fn current(ctx: &Ctx<'_>, id: PacketId) -> Result<Reply, Close> {
    let Some(license) = ctx.live.authorized_license(ctx.state, ctx.session) else {
        return Ok(status(id, NOT_AUTHORIZED));
    };
    let now = ctx.state.commands.now();
    let code = if license.is_expired(now) { LICENSE_EXPIRED } else { OK };
    Ok(answer(id, code, identity(&license, ctx.session.ip, now)))
}

/// The identity fields of packets 2 and 15: `time_left` in remaining seconds (§14.6), left out
/// for a lifetime or expired license; `expires_at` (Unix seconds) beside it when there is one.
pub fn identity(license: &License, ip: std::net::IpAddr, now: chrono::DateTime<chrono::Utc>) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("license".into(), Value::from(license.key.to_string()));
    fields.insert("levels".into(), Value::from(model::levels(license)));
    fields.insert("comment".into(), Value::from(license.label.clone().unwrap_or_default()));
    fields.insert("ip_address".into(), Value::from(ip.to_canonical().to_string()));
    if let Some(expires_at) = license.expires_at {
        let left = (expires_at - now).num_seconds();
        if left > 0 {
            fields.insert("time_left".into(), Value::from(left));
        }
        fields.insert("expires_at".into(), Value::from(expires_at.timestamp()));
    }
    fields
}
