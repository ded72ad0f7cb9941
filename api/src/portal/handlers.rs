//! Portal endpoints and page.

use super::Portal;
use crate::auth::ClientIp;
use crate::extract::ApiJson;
use crate::signed::same;
use crate::web::page as html_page;
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use licensd_commands::{Actor, CommandError};
use licensd_domain::license::{License, LicenseCommand, LicenseStatus};
use licensd_domain::portal::{evaluate_reset, PortalPolicy, ResetRefusal};
use licensd_domain::{DomainError, LicenseKey, StreamCategory};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const GENERIC_ANSWER: &str = "If the license key and email match, a sign-in code is on its way.";

pub async fn page() -> Response {
    html_page(StatusCode::OK, include_str!("../../assets/portal.html"), &[])
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeBody {
    license_key: String,
    email: String,
}

/// `POST /portal/challenges`: always the same answer; the code goes out only on a match.
pub async fn challenge(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<ChallengeBody>,
) -> Result<Json<Value>, ApiError> {
    if body.license_key.len() > 64 || body.email.len() > 254 {
        return Err(ApiError::BadRequest("licenseKey or email is too long".into()));
    }
    let portal = &state.portal;
    let key_text = body.license_key.trim().to_ascii_uppercase();
    if portal.per_ip.check(&ip.limit_key()).is_none() || portal.per_key.check(&key_text).is_none() {
        return Err(ApiError::RateLimited);
    }
    let request_id = uuid::Uuid::new_v4();
    let challenge_id = match LicenseKey::parse(&key_text) {
        Ok(key) => {
            let (id, code) = portal.challenges.open(&key).await?;
            tokio::spawn(deliver(state.clone(), request_id, id.clone(), key, body.email, code));
            id
        }
        // Same shape for a key that cannot exist: a fresh id that no code completes.
        Err(_) => uuid::Uuid::new_v4().simple().to_string(),
    };
    tracing::info!(%request_id, "portal.challenge requested");
    Ok(Json(json!({ "ok": true, "challengeId": challenge_id, "message": GENERIC_ANSWER, "requestId": request_id })))
}

async fn find_license(state: &AppState, key: &LicenseKey) -> Option<License> {
    state.lookup(|hot| hot.license(key)).await.ok().flatten()
}

async fn license_email(state: &AppState, key: &LicenseKey) -> Result<Option<String>, CommandError> {
    state.commands.pii().get(&StreamCategory::License.stream_id(key), "email").await
}

/// Looks the license up and, when the email matches, sends the code (after the response).
async fn deliver(state: AppState, request_id: uuid::Uuid, id: String, key: LicenseKey, email: String, code: String) {
    let Ok(given) = licensd_commands::normalize_email(&email) else {
        return tracing::info!(%request_id, "portal.challenge not sent");
    };
    let on_file = match find_license(&state, &key).await {
        Some(_) => license_email(&state, &key).await.ok().flatten(),
        None => None,
    };
    if !on_file.is_some_and(|on_file| same(&on_file, &given)) {
        return tracing::info!(%request_id, "portal.challenge not sent");
    }
    let Some(mailer) = state.portal.config.mailer.clone() else {
        return tracing::warn!(%request_id, "portal.challenge matched but no SMTP server is configured");
    };
    if let Err(e) = state.portal.challenges.mark_matched(&id).await {
        return tracing::warn!(%request_id, error = %e, "portal.challenge matched but could not be recorded");
    }
    let minutes = state.portal.config.challenge_ttl.as_secs().div_ceil(60);
    let body = format!(
        "Your license portal sign-in code is:\n\n    {code}\n\nIt expires in {minutes} minutes and works once.\n\
         If you did not ask for it, ignore this message.\n"
    );
    match mailer.send_text(&given, "Your license portal sign-in code", body).await {
        Ok(()) => tracing::info!(%request_id, "portal.challenge code sent"),
        Err(e) => tracing::warn!(%request_id, error = %e, "portal.challenge code could not be sent"),
    }
}

#[derive(Serialize, Deserialize)]
struct Claims {
    /// License key.
    k: String,
    /// App.
    a: String,
    /// MAC of the email signed in with: a changed or removed email ends the session.
    m: String,
    /// Expiry, Unix seconds.
    e: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionBody {
    challenge_id: String,
    code: String,
}

fn invalid_code() -> ApiError {
    ApiError::Unauthorized("invalid_code", "The code is wrong or has expired. Request a new one.".into())
}

fn invalid_session() -> ApiError {
    ApiError::Unauthorized("invalid_session", "Sign in again.".into())
}

/// `POST /portal/sessions`: exchanges a code for an HMAC-signed session token.
pub async fn session(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<SessionBody>,
) -> Result<Json<Value>, ApiError> {
    let portal = &state.portal;
    if portal.code_checks.check(&ip.limit_key()).is_none() {
        return Err(ApiError::RateLimited);
    }
    let key = portal.challenges.complete(&body.challenge_id, &body.code).await?.ok_or_else(invalid_code)?;
    let license = find_license(&state, &key).await.ok_or_else(invalid_code)?;
    let email = license_email(&state, &key).await?.ok_or_else(invalid_code)?;
    let expires = state.commands.now() + chrono::Duration::from_std(portal.config.session_ttl).unwrap_or_default();
    let claims = Claims {
        k: key.to_string(),
        a: license.app_id.to_string(),
        m: email_tag(portal, &email),
        e: expires.timestamp(),
    };
    tracing::info!(request_id = %uuid::Uuid::new_v4(), "portal.session signed in");
    Ok(Json(json!({ "token": portal.sessions.sign(&claims), "expiresAt": crate::v1::iso(expires) })))
}

fn email_tag(portal: &Portal, email: &str) -> String {
    portal.sessions.tag(format!("email:{email}").as_bytes())
}

/// The license of a live portal session, with its email.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<(License, String), ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(invalid_session)?;
    let claims: Claims = state.portal.sessions.verify(token.trim()).ok_or_else(invalid_session)?;
    if claims.e <= state.commands.now().timestamp() {
        return Err(invalid_session());
    }
    let key = LicenseKey::parse(&claims.k).map_err(|_| invalid_session())?;
    let license = find_license(state, &key).await.ok_or_else(invalid_session)?;
    let email = license_email(state, &key).await?.ok_or_else(invalid_session)?;
    if license.app_id.to_string() != claims.a || !same(&email_tag(&state.portal, &email), &claims.m) {
        return Err(invalid_session());
    }
    Ok((license, email))
}

fn policy_of(state: &AppState, license: &License) -> PortalPolicy {
    state.hot.app(license.app_id).map(|app| app.settings.portal.clone()).unwrap_or_default()
}

/// `ABCD-••••-••••-WXYZ`: enough to recognise, not enough to copy.
fn masked(key: &LicenseKey) -> String {
    let text = key.to_string();
    let groups: Vec<&str> = text.split('-').collect();
    match groups.as_slice() {
        [first, middle @ .., last] if !middle.is_empty() => {
            let hidden = middle.iter().map(|g| "•".repeat(g.chars().count())).collect::<Vec<_>>().join("-");
            format!("{first}-{hidden}-{last}")
        }
        _ => text,
    }
}

fn reset_json(policy: &PortalPolicy, license: &License, now: DateTime<Utc>) -> Value {
    let window_start = now - chrono::Duration::days(i64::from(policy.reset_window_days));
    let used = license.extras.portal_resets.iter().filter(|at| **at > window_start).count();
    let decision = evaluate_reset(policy, &license.extras.portal_resets, license.hwids.len(), now);
    let refusal = decision.err();
    json!({
        "allowed": refusal.is_none(),
        "refusal": refusal,
        "explanation": refusal.map(|r| r.explanation()),
        "used": used,
        "limit": policy.reset_limit,
        "windowDays": policy.reset_window_days,
        "cooldownHours": policy.cooldown_hours,
        "history": license.extras.portal_resets.iter().rev().map(|at| crate::v1::iso(*at)).collect::<Vec<_>>(),
    })
}

fn me_json(state: &AppState, license: &License, email: &str) -> Value {
    let now = state.commands.now();
    let policy = policy_of(state, license);
    json!({
        "license": {
            "licenseKey": masked(&license.key),
            "status": match license.status { LicenseStatus::Active => "active", LicenseStatus::Revoked => "revoked" },
            "expiresAt": license.expires_at.map(crate::v1::iso),
            "expired": license.is_expired(now),
            "email": email,
            "hwids": license.hwids,
            "maxHwidSlots": license.max_hwid_slots,
            "slotsLeft": usize::from(license.max_hwid_slots).saturating_sub(license.hwids.len()),
        },
        "reset": reset_json(&policy, license, now),
        "support": { "url": policy.support_url, "email": policy.support_email },
        "branding": { "displayName": policy.display_name(), "accentColor": policy.accent_color },
    })
}

/// `GET /portal/me`: the signed-in license, its policy state and the app's branding.
pub async fn me(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let (license, email) = signed_in(&state, &headers).await?;
    Ok(Json(me_json(&state, &license, &email)))
}

/// `POST /portal/reset`: clears the bound machines if the policy allows it now.
pub async fn reset(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (license, email) = signed_in(&state, &headers).await?;
    let policy = policy_of(&state, &license);
    let request_id = uuid::Uuid::new_v4();
    let command = LicenseCommand::PortalReset { policy: policy.clone() };
    match state.commands.license_command(license.account_id, &license.key, command, &Actor::PortalUser).await {
        Ok(executed) => {
            tracing::info!(%request_id, "portal.reset done");
            let shown = crate::v1::visible(&state, executed.position()).await;
            let license = crate::v1::current_license(&state, shown, &license.key).await?.ok_or(ApiError::Internal)?;
            Ok(Json(json!({ "ok": true, "me": me_json(&state, &license, &email) })).into_response())
        }
        Err(CommandError::Domain(DomainError::PortalResetRefused(refusal))) => {
            tracing::info!(%request_id, "portal.reset refused by policy");
            Ok(refused(&policy, refusal))
        }
        Err(e) => Err(e.into()),
    }
}

fn refused(policy: &PortalPolicy, refusal: ResetRefusal) -> Response {
    let body = json!({
        "error": "reset_refused",
        "message": refusal.explanation(),
        "refusal": refusal,
        "supportUrl": policy.support_url,
        "supportEmail": policy.support_email,
    });
    (StatusCode::CONFLICT, Json(body)).into_response()
}
