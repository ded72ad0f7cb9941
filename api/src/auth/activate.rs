//! `POST /auth/offline/activate`: a perpetual license's machine gets a signed lifetime
//! `.authforge` file. The same machine asking again gets the byte-identical file, free.

use super::body::{Fields, RawBody};
use super::{admit, ensure_credits, hotpath, AuthError, ClientIp, LicenseRequest, Refusal};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use licensd_commands::offline::{render_license_file, HwidBinding, LicenseFilePayload};
use licensd_domain::app::App;
use licensd_domain::license::{License, LicenseCommand, LicenseState, LicenseStatus, OFFLINE_ACTIVATION_CREDITS};
use licensd_domain::{Aggregate, LicenseKey};
use serde_json::json;

pub async fn activate(State(state): State<AppState>, ip: ClientIp, RawBody(body): RawBody) -> Response {
    run(&state, ip, &body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn run(state: &AppState, ip: ClientIp, body: &Bytes) -> Result<Response, Refusal> {
    let mut fields = Fields::parse(body)?;
    // The nonce is required but, as the SDKs expect, neither echoed nor checked for replay here.
    let (app, LicenseRequest { key, hwid, .. }, _) = admit(state, ip, &mut fields)?;
    if !app.settings.offline_activation {
        return Err(AuthError::OfflineActivationDisabled.into());
    }
    let auth = &state.auth;
    let now = state.commands.now();

    let _serialised = auth.locks.lock(&key).await;
    let known = state.hot.license(&key).filter(|l| l.app_id == app.app_id).ok_or(AuthError::InvalidKey)?;
    if known.status == LicenseStatus::Revoked {
        return Err(AuthError::Revoked.into());
    }
    if let Some(machine) = known.offline_machine(&hwid) {
        return Ok(answer(StatusCode::OK, &key, &machine.jti, &machine.file, true));
    }
    let jti = uuid::Uuid::new_v4().to_string();
    let binding = HwidBinding::Bound { hwids: vec![hwid.clone()] };
    let file = license_file(state, &app, &known, binding, &jti, now)?;
    hotpath::commit(state, &key, |license| {
        ensure_credits(state, &app, u64::from(OFFLINE_ACTIVATION_CREDITS), now)?;
        let command = LicenseCommand::ActivateOffline { hwid: hwid.clone(), jti: jti.clone(), file: file.clone() };
        Ok(LicenseState::Live(license.clone()).decide(command, now)?)
    })
    .await?;
    Ok(answer(StatusCode::CREATED, &key, &jti, &file, false))
}

fn answer(status: StatusCode, key: &LicenseKey, jti: &str, file: &str, replay: bool) -> Response {
    let body = json!({ "status": "success", "file": file, "fileName": format!("{key}.authforge"), "jti": jti, "replay": replay });
    (status, Json(body)).into_response()
}

/// A lifetime file for the given machines, signed with the app's active key.
pub fn license_file(
    state: &AppState,
    app: &App,
    license: &License,
    hwid: HwidBinding,
    jti: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, AuthError> {
    let iso = |at: chrono::DateTime<chrono::Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (signer, kid) = state.auth.keyring.signer(app)?;
    let payload = LicenseFilePayload {
        v: 1,
        typ: LicenseFilePayload::TYPE,
        app_id: app.app_id.to_string(),
        license_key: license.key.to_string(),
        jti: jti.to_string(),
        kid,
        issued_at: iso(now),
        expires_at: None,
        hwid,
        label: license.label.clone(),
        license_expires_at: license.expires_at.map(iso),
        license_variables: license.variables.as_map().clone(),
        app_variables: app.variables.as_map().clone(),
    };
    Ok(render_license_file(&payload, &signer))
}
