use super::{current_license, iso, visible};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use licensd_commands::offline::{parse_activation_request, HwidBinding, MAX_REQUEST_HWID_CHARS};
use licensd_commands::NewLicense;
use licensd_domain::license::{
    License, LicenseCommand, LicenseStatus, MAX_HWID_SLOTS, MIN_HWID_SLOTS, OFFLINE_MINT_CREDITS,
};
use licensd_domain::{AppId, LicenseKey, Variables};
use serde::Deserialize;
use serde_json::{json, Map, Value};

const MAX_QUANTITY: i64 = 100;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateLicenses {
    app_id: String,
    quantity: Option<i64>,
    expires_at: Option<String>,
    max_hwid_slots: Option<i64>,
    label: Option<String>,
    levels: Option<Vec<String>>,
    max_sessions: Option<i64>,
    /// The buyer's email, set on every license created (as `PUT /v1/licenses/{key}/email`).
    email: Option<String>,
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn present<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A license's live-session fields as given: absent (`None`) fields stay as they are.
struct LiveFields {
    levels: Option<Vec<String>>,
    /// `Some(None)`: no limit.
    max_sessions: Option<Option<u32>>,
}

/// Checks `levels` and `maxSessions` against the deployment's limits (the domain checks each
/// level's length and refuses 0 seats).
fn checked_live_fields(
    state: &AppState,
    levels: Option<Vec<String>>,
    max_sessions: Option<Option<i64>>,
) -> Result<LiveFields, ApiError> {
    let limits = &state.config.live_model;
    if levels.as_ref().is_some_and(|l| l.len() > limits.max_license_levels) {
        return Err(ApiError::BadRequest(format!("a license has at most {} levels", limits.max_license_levels)));
    }
    let most = limits.max_license_sessions;
    let seats = |n: i64| match u32::try_from(n) {
        Ok(n) if (1..=most).contains(&n) => Ok(n),
        _ => Err(ApiError::BadRequest(format!("maxSessions must be null (no limit) or between 1 and {most}"))),
    };
    let max_sessions = max_sessions.map(|m| m.map(seats).transpose()).transpose()?;
    Ok(LiveFields { levels, max_sessions })
}

pub(crate) fn license_json(license: &License) -> Value {
    json!({
        "licenseKey": license.key,
        "appId": license.app_id,
        "status": match license.status { LicenseStatus::Active => "active", LicenseStatus::Revoked => "revoked" },
        "expiresAt": license.expires_at.map(iso),
        "maxHwidSlots": license.max_hwid_slots,
        "hwidList": license.hwids,
        "hwid": license.hwids.first(),
        "label": license.label,
        "levels": license.extras.levels,
        "maxSessions": license.extras.max_sessions,
        "createdAt": iso(license.created_at),
    })
}

fn parse_expiry(text: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(t.trim()).map(|at| at.with_timezone(&Utc)).map_err(|_| {
            ApiError::BadRequest("expiresAt must be an ISO 8601 date-time such as 2026-12-31T23:59:59Z".into())
        })
    })
    .transpose()
}

/// `POST /v1/licenses`: 1–100 licenses for one of the caller's apps.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateLicenses>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let app_id: AppId = body.app_id.parse().map_err(|_| ApiError::BadRequest("appId must be a UUID".into()))?;
    let quantity = body.quantity.unwrap_or(1);
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        return Err(ApiError::BadRequest(format!("quantity must be between 1 and {MAX_QUANTITY}")));
    }
    let slots = body.max_hwid_slots.unwrap_or(1);
    if !(i64::from(MIN_HWID_SLOTS)..=i64::from(MAX_HWID_SLOTS)).contains(&slots) {
        return Err(ApiError::BadRequest(format!(
            "maxHwidSlots must be between {MIN_HWID_SLOTS} and {MAX_HWID_SLOTS}"
        )));
    }
    let LiveFields { levels, max_sessions } = checked_live_fields(&state, body.levels, body.max_sessions.map(Some))?;
    // Checked before anything is created: a bad address changes nothing.
    let email = body.email.filter(|e| !e.is_empty()).map(|e| buyer_email(&e)).transpose()?;
    let spec = NewLicense {
        app_id,
        expires_at: parse_expiry(body.expires_at.as_deref())?,
        max_hwid_slots: slots as u8,
        label: body.label,
        levels: levels.unwrap_or_default(),
        max_sessions: max_sessions.flatten(),
    };
    let actor = caller.actor.clone();
    let created = state.commands.create_licenses(caller.account_id, spec, quantity as usize, &actor).await?;
    let mut last = created.iter().map(|(_, r)| r.position).max();
    if let Some(email) = &email {
        for (key, _) in &created {
            let recorded = record_buyer_email(&state, &caller, key, Some(email)).await?;
            last = last.max(recorded);
        }
    }
    let shown = visible(&state, last).await;
    let mut licenses = Vec::with_capacity(created.len());
    for (key, _) in &created {
        let license = current_license(&state, shown, key).await?.ok_or(ApiError::Internal)?;
        licenses.push(license_json(&license));
    }
    Ok((StatusCode::CREATED, Json(json!({ "licenses": licenses }))))
}

/// `GET /v1/licenses/{key}`.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::NotFound("License key doesn't exist".into());
    let key = LicenseKey::parse(&key).map_err(|_| not_found())?;
    let license = state.hot.license(&key).ok_or_else(not_found)?;
    if license.account_id != caller.account_id {
        return Err(ApiError::Forbidden("The license's app doesn't belong to your account".into()));
    }
    let subject = licensd_domain::StreamCategory::License.stream_id(&license.key);
    let email = state.commands.pii().get(&subject, "email").await?;
    let mut answer = license_json(&license);
    answer["email"] = json!(email);
    answer["machines"] = Value::Array(machines(&state, &license).await?);
    Ok(Json(answer))
}

/// The license's bound machines, in binding order, each with when it was bound and when it was
/// last seen: its last validation (the `license_machines` read model; `null` while it has not
/// caught up) or its last heartbeat since it was bound (written by every node's presence flusher,
/// or still noted in this node's memory), whichever is later.
async fn machines(state: &AppState, license: &License) -> Result<Vec<Value>, ApiError> {
    // The license itself comes from memory, so a catch-up that cannot write (a full disk, a
    // read-only database) must not fail the answer: the times are then the read model's as it is.
    if let Err(e) = state.refresh_sql(std::sync::Arc::new(licensd_projections::sql::LicenseMachines)).await {
        tracing::warn!(error = %e, "license machines read model not caught up; answering with it as it is");
    }
    let rows = state
        .commands
        .store()
        .query_rows(
            // A heartbeat before the machine's latest binding belongs to an earlier binding.
            "SELECT m.hwid, m.bound_at, m.last_seen_at, h.last_seen_at FROM rm_license_machines m
             LEFT JOIN machine_heartbeats h
                ON h.license_key = m.license_key AND h.hwid = m.hwid AND h.last_seen_at >= m.bound_at
             WHERE m.license_key = $1",
            &[license.key.to_string().into()],
        )
        .await?;
    let column = |hwid: &str, i: usize| rows.iter().find(|r| r[0].as_deref() == Some(hwid)).and_then(|r| r[i].clone());
    Ok(license
        .hwids
        .iter()
        .map(|hwid| {
            let bound_at = column(hwid, 1);
            let pending = state.presence.pending(&license.key, hwid).map(super::iso);
            let pending = pending.filter(|at| bound_at.as_ref().is_some_and(|bound| at >= bound));
            // Every time is RFC 3339 UTC with milliseconds: the latest is the greatest text.
            let last_seen = [column(hwid, 2), column(hwid, 3), pending].into_iter().flatten().max();
            json!({ "hwid": hwid, "boundAt": bound_at, "lastSeenAt": last_seen })
        })
        .collect())
}

/// `DELETE /v1/licenses/{key}/machines/{hwid}`: frees one bound machine's slot (404 when the
/// machine is not bound); the other machines stay bound.
pub async fn release_machine(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((key, hwid)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let license = owned_license(&state, &caller, &key)?;
    let command = LicenseCommand::ReleaseHwid { hwid };
    let license = change(&state, &caller, &license, command).await?.ok_or(ApiError::Internal)?;
    Ok(Json(json!({ "ok": true, "license": license_json(&license) })))
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    /// `full` adds each event's raw data (nonces and internal ids included).
    detail: Option<String>,
    /// With `limit` or `cursor` the history is paged (and the answer has a `cursor`); without
    /// either, every event comes in one answer, as before paging existed.
    limit: Option<String>,
    cursor: Option<String>,
    /// `asc` (oldest first, the default here: the order the history always had) or `desc`.
    order: Option<String>,
}

/// `GET /v1/licenses/{key}/events`: the events of the license (the audit trail of one key:
/// creation, bindings, resets, billing, portal resets, commerce links), each with its name and
/// actor in words and a one-line summary; `?detail=full` adds the data as recorded. Paged by
/// version when `limit` or `cursor` is given; a page reads only its own events from the store.
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    use super::history_words::{actor_name, event_name, summary};
    let full = match query.detail.as_deref() {
        None | Some("summary") => false,
        Some("full") => true,
        Some(_) => return Err(ApiError::BadRequest("detail must be summary or full".into())),
    };
    let paged = query.limit.is_some() || query.cursor.is_some();
    let limit = if paged { super::page_size(query.limit.as_deref())? } else { i64::MAX };
    let order = Some(query.order.as_deref().unwrap_or("asc"));
    let request = super::paging::PageRequest::new("history", limit, order, query.cursor.as_deref())?;
    use licensd_store::EventStore;
    let license = owned_license(&state, &caller, &key)?;
    let stream = licensd_domain::StreamCategory::License.stream_id(&license.key);
    let version = |e: &licensd_store::RecordedEvent| i64::try_from(e.version).unwrap_or(i64::MAX);
    let (events, cursor) = if paged {
        // Only the page (and one event more) is read, however long the stream.
        let read = state.commands.store().read_stream_page(&stream, request.stream_page()?).await?;
        request.page_read(read, version)?
    } else {
        request.page_of(state.commands.store().read_stream(&stream, 0).await?, version)?
    };
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| {
            let actor = e.metadata_fields().actor.as_deref().unwrap_or("unknown").to_string();
            let data: Value = serde_json::from_str(e.payload.get()).unwrap_or(Value::Null);
            let mut event = json!({
                "version": e.version,
                "type": e.event_type,
                "name": event_name(&e.event_type),
                "at": iso(e.recorded_at),
                "actor": actor,
                "actorName": actor_name(&state, caller.account_id, &actor, &data),
                "summary": summary(&e.event_type, &data),
            });
            if full {
                event["data"] = data;
            }
            event
        })
        .collect();
    if paged {
        return Ok(Json(json!({ "events": events, "cursor": cursor })));
    }
    Ok(Json(json!({ "events": events })))
}

/// The caller's license, or 404/403.
fn owned_license(state: &AppState, caller: &Caller, key: &str) -> Result<License, ApiError> {
    let not_found = || ApiError::NotFound("License key doesn't exist".into());
    let key = LicenseKey::parse(key).map_err(|_| not_found())?;
    let license = state.hot.license(&key).ok_or_else(not_found)?;
    if license.account_id != caller.account_id {
        return Err(ApiError::Forbidden("The license's app doesn't belong to your account".into()));
    }
    Ok(license)
}

/// Runs a license command for the caller and returns the license once the read model shows it.
async fn change(
    state: &AppState,
    caller: &Caller,
    license: &License,
    command: LicenseCommand,
) -> Result<Option<License>, ApiError> {
    let actor = caller.actor.clone();
    let executed = state.commands.license_command(caller.account_id, &license.key, command, &actor).await?;
    let shown = visible(state, executed.position()).await;
    current_license(state, shown, &license.key).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Update {
    action: Option<String>,
    expires_at: Option<String>,
    levels: Option<Vec<String>>,
    /// `null` removes the limit.
    #[serde(default, deserialize_with = "present")]
    max_sessions: Option<Option<i64>>,
}

/// `PUT /v1/licenses/{key}`: `revoke`, `activate`, `extend` (with `expiresAt`) or `reset-hwid`;
/// or, without an action, `levels` and/or `maxSessions` (set together, or neither).
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiJson(body): ApiJson<Update>,
) -> Result<Json<Value>, ApiError> {
    let license = owned_license(&state, &caller, &key)?;
    let configures = body.levels.is_some() || body.max_sessions.is_some();
    let command = match body.action.as_deref() {
        None if configures => {
            let LiveFields { levels, max_sessions } = checked_live_fields(&state, body.levels, body.max_sessions)?;
            LicenseCommand::Configure { levels, max_sessions }
        }
        None => return Err(ApiError::BadRequest("send an action, or levels and/or maxSessions".into())),
        Some(_) if configures => {
            return Err(ApiError::BadRequest(
                "levels and maxSessions are set without an action (send them in a request of their own)".into(),
            ))
        }
        Some(action) => match action {
            "revoke" => LicenseCommand::Revoke,
            "activate" => LicenseCommand::Activate,
            "reset-hwid" => LicenseCommand::ResetHwid,
            "extend" => {
                let expires_at = parse_expiry(body.expires_at.as_deref())?
                    .ok_or_else(|| ApiError::BadRequest("extend needs expiresAt".into()))?;
                LicenseCommand::Extend { expires_at: Some(expires_at) }
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown action '{other}': use revoke, activate, extend or reset-hwid"
                )))
            }
        },
    };
    let license = change(&state, &caller, &license, command).await?.ok_or(ApiError::Internal)?;
    Ok(Json(json!({ "ok": true, "license": license_json(&license) })))
}

/// `DELETE /v1/licenses/{key}`.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let license = owned_license(&state, &caller, &key)?;
    change(&state, &caller, &license, LicenseCommand::Delete).await?;
    Ok(Json(json!({ "ok": true })))
}

pub async fn get_variables(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let license = owned_license(&state, &caller, &key)?;
    Ok(Json(Value::Object(license.variables.as_map().clone())))
}

/// `PUT /v1/licenses/{key}/variables`: the body replaces every license variable.
pub async fn put_variables(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let license = owned_license(&state, &caller, &key)?;
    let command = LicenseCommand::SetVariables(Variables::new(body)?);
    let license = change(&state, &caller, &license, command).await?.ok_or(ApiError::Internal)?;
    Ok(Json(Value::Object(license.variables.as_map().clone())))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MintFile {
    /// The machine to bind, as the customer's SDK reports it.
    hwid: Option<String>,
    /// Or the customer's `.authforge-request` text (air-gapped machines).
    activation_request: Option<String>,
    /// Or explicitly any machine.
    #[serde(default)]
    any_machine: bool,
}

/// `POST /v1/licenses/{key}/offline-files`: the merchant mints a lifetime `.authforge` file.
pub async fn mint_offline_file(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiJson(body): ApiJson<MintFile>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let license = owned_license(&state, &caller, &key)?;
    let app = state.hot.app(license.app_id).ok_or(ApiError::Internal)?;
    let hwid = match (body.hwid, body.activation_request, body.any_machine) {
        (Some(hwid), None, false) if !hwid.trim().is_empty() && hwid.chars().count() <= MAX_REQUEST_HWID_CHARS => {
            Some(hwid.trim().to_string())
        }
        (None, Some(request), false) => {
            let request = parse_activation_request(&request).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            if request.app_id != app.app_id.to_string() {
                return Err(ApiError::BadRequest("the activation request is for another app".into()));
            }
            Some(request.hwid)
        }
        (None, None, true) => None,
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of hwid (1-256 characters), activationRequest or anyMachine: true".into(),
            ))
        }
    };
    let balance = state.hot.account(caller.account_id).map_or(0, |a| a.balance);
    if balance < i64::from(OFFLINE_MINT_CREDITS) {
        return Err(ApiError::NoCredits);
    }
    let jti = licensd_commands::Entropy::next_step().uuid("jti").to_string();
    let binding = match &hwid {
        Some(hwid) => HwidBinding::Bound { hwids: vec![hwid.clone()] },
        None => HwidBinding::Any,
    };
    let file = crate::auth::license_file(&state, &app, &license, binding, &jti, state.commands.now())
        .map_err(|_| ApiError::Internal)?;
    change(&state, &caller, &license, LicenseCommand::RecordMintedFile { hwid, jti: jti.clone() }).await?;
    let file_name = format!("{}.authforge", license.key);
    Ok((StatusCode::CREATED, Json(json!({ "file": file, "fileName": file_name, "jti": jti }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailBody {
    email: Option<String>,
}

/// `PUT /v1/licenses/{key}/email`: the buyer's email (personal data: sealed in the PII vault,
/// never in events); `null` or `""` removes it.
pub async fn put_email(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiJson(body): ApiJson<EmailBody>,
) -> Result<Json<Value>, ApiError> {
    let license = owned_license(&state, &caller, &key)?;
    let email = body.email.filter(|e| !e.is_empty()).map(|e| buyer_email(&e)).transpose()?;
    let recorded = record_buyer_email(&state, &caller, &license.key, email.as_deref()).await?;
    // Read your writes: the listing's email filter (caught up on demand) shows the change.
    visible(&state, recorded).await;
    Ok(Json(json!({ "ok": true, "email": email })))
}

/// The buyer email as stored (normalized), or the documented refusal.
fn buyer_email(text: &str) -> Result<String, ApiError> {
    licensd_commands::normalize_email(text).map_err(|_| ApiError::BadRequest("email is not a valid address".into()))
}

/// Sets (a normalized address) or removes (`None`) a license's buyer email; where the audit
/// event landed, if one was appended.
async fn record_buyer_email(
    state: &AppState,
    caller: &Caller,
    key: &LicenseKey,
    email: Option<&str>,
) -> Result<Option<licensd_store::Position>, ApiError> {
    let subject = licensd_domain::StreamCategory::License.stream_id(key);
    let vault = state.commands.pii();
    let pii = match email {
        // Sealed and stored in the transaction of the event below: both or neither.
        Some(email) => vec![vault.row(&subject, "email", email)],
        None => {
            // Only the email: a purchase's customer id under the same subject stays (erasure of
            // a buyer is `customers/forget`). Erased first: a failed audit event must never
            // leave the address behind; the caller's retry records the removal.
            vault.remove(&subject, "email").await?;
            Vec::new()
        }
    };
    // The change is an action on the license: audited by an event that holds no address.
    // The keyed index the listing's `email` filter matches (the address itself stays in the vault).
    let email_digest = email
        .map(|email| licensd_commands::buyer_email_digest(state.commands.master_key(), email))
        .map(|digest| digest.ok_or_else(|| ApiError::BadRequest("email is not a valid address".into())))
        .transpose()?;
    let record = licensd_domain::license::LicenseCommand::RecordBuyerEmail { email_digest };
    let executed = state.commands.license_command_with_pii(caller.account_id, key, record, &caller.actor, pii).await?;
    Ok(executed.position())
}
