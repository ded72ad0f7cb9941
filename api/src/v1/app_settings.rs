//! App-scoped settings: variables, security lists, switches and limits.

use super::{current_app, visible};
use crate::extract::{ApiJson, ApiPath, Caller};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::Json;
use licensd_domain::app::{App, AppCommand, AppSettings};
use licensd_domain::{AccessLists, AppId, ListName, SecurityListsUpdate, VariableAccess, VariableAccessMap, Variables};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The caller's app, or 404/403.
pub(crate) fn owned_app(state: &AppState, caller: &Caller, app_id: &str) -> Result<App, ApiError> {
    let not_found = || ApiError::NotFound("The app doesn't exist".into());
    let app_id: AppId = app_id.parse().map_err(|_| not_found())?;
    let app = state.hot.app(app_id).ok_or_else(not_found)?;
    if app.account_id != caller.account_id {
        return Err(ApiError::Forbidden("The app doesn't belong to your account".into()));
    }
    Ok(App::clone(&app))
}

/// Runs an app command for the caller and returns the app as the read model then shows it.
pub(crate) async fn change(state: &AppState, caller: &Caller, app: &App, command: AppCommand) -> Result<App, ApiError> {
    let actor = caller.actor.clone();
    let executed = state.commands.app_command(caller.account_id, app.app_id, command, &actor).await?;
    let shown = visible(state, executed.position()).await;
    current_app(state, shown, app.app_id).await?.ok_or(ApiError::Internal)
}

/// The lists as enforced: each blacklist shows the self-ban entries after the merchant's own,
/// and `blacklistComments` the comments self-bans came with (`hwid`/`ip` → entry → comment).
fn security_json(lists: &AccessLists) -> Json<Value> {
    let mut shown = serde_json::to_value(lists.effective()).unwrap_or_default();
    let comments = &lists.self_ban_comments;
    shown["blacklistComments"] = json!({ "hwid": comments.hwid, "ip": comments.ip });
    Json(shown)
}

pub async fn get_variables(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    Ok(Json(Value::Object(app.variables.as_map().clone())))
}

/// `PUT /v1/apps/{appId}/variables`: the body replaces every app variable.
pub async fn put_variables(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let app = change(&state, &caller, &app, AppCommand::SetVariables(Variables::new(body)?)).await?;
    Ok(Json(Value::Object(app.variables.as_map().clone())))
}

/// Every app variable's access strategy, and the names given one that are not variables (yet).
fn variable_access_json(app: &App) -> Json<Value> {
    let mut shown: Map<String, Value> = app
        .variables
        .as_map()
        .keys()
        .map(|name| (name.clone(), json!(app.variable_access(name).wire_name())))
        .collect();
    for (name, access) in app.variable_access.explicit() {
        shown.insert(name.to_string(), json!(access.wire_name()));
    }
    Json(Value::Object(shown))
}

/// `GET /v1/apps/{appId}/variable-access`: who may read each app variable over a live session.
pub async fn get_variable_access(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(variable_access_json(&owned_app(&state, &caller, &app_id)?))
}

/// `PUT /v1/apps/{appId}/variable-access`: `{"<name>": "auth_required" | "auth_not_required"}`
/// replaces every strategy; names left out are `auth_required`. A separate resource, so the
/// variables themselves (and what the SDKs receive) keep their shape.
pub async fn put_variable_access(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let mut entries = std::collections::BTreeMap::new();
    for (name, access) in body {
        let access = access.as_str().and_then(VariableAccess::from_wire).ok_or_else(|| {
            ApiError::BadRequest(format!("the access of '{name}' must be \"auth_required\" or \"auth_not_required\""))
        })?;
        entries.insert(name, access);
    }
    let access = VariableAccessMap::new(entries)?;
    let app = change(&state, &caller, &app, AppCommand::SetVariableAccess(access)).await?;
    Ok(variable_access_json(&app))
}

pub async fn get_security(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(security_json(&owned_app(&state, &caller, &app_id)?.lists))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityUpdate {
    hwid_blacklist: Option<Vec<String>>,
    hwid_whitelist: Option<Vec<String>>,
    ip_blacklist: Option<Vec<String>>,
    ip_whitelist: Option<Vec<String>>,
    /// Read-only (what a `GET` shows): accepted so a `GET` can be sent back, and ignored.
    #[serde(default, rename = "blacklistComments")]
    _blacklist_comments: Option<serde::de::IgnoredAny>,
}

/// `PUT /v1/apps/{appId}/security`: each list given is set to exactly its entries; omitted
/// lists stay as they are. The app aggregate turns it into add/remove deltas against the lists
/// as they are when it is decided, so entries added concurrently by others (a self-ban, another
/// edit) are not undone by an edit built from an older read. Self-ban entries are removed only
/// by naming them (`DELETE .../security/blacklist`).
pub async fn put_security(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
    ApiJson(body): ApiJson<SecurityUpdate>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let update = SecurityListsUpdate {
        hwid_blacklist: body.hwid_blacklist,
        hwid_whitelist: body.hwid_whitelist,
        ip_blacklist: body.ip_blacklist,
        ip_whitelist: body.ip_whitelist,
    };
    let app = change(&state, &caller, &app, AppCommand::SetSecurityLists(update)).await?;
    Ok(security_json(&app.lists))
}

pub async fn get_settings(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    Ok(Json(settings_json(&app.settings)))
}

/// Applies the fields present in `body` to `settings`: a cap of `null` removes it.
fn merge_settings(mut settings: AppSettings, body: &Map<String, Value>) -> Result<AppSettings, ApiError> {
    let bad = |m: &str| Err(ApiError::BadRequest(m.to_string()));
    for (field, value) in body {
        match (field.as_str(), value) {
            ("offlineActivation", Value::Bool(on)) => settings.offline_activation = *on,
            ("offlineActivation", _) => return bad("offlineActivation must be a boolean"),
            ("hourlyBurnCap" | "dailyBurnCap", value) => {
                let cap = match value {
                    Value::Null => None,
                    Value::Number(n) if n.as_u64().is_some() => n.as_u64(),
                    _ => return bad("burn caps must be null or a non-negative integer"),
                };
                if field == "hourlyBurnCap" {
                    settings.hourly_burn_cap = cap;
                } else {
                    settings.daily_burn_cap = cap;
                }
            }
            ("commerceEmailsDisabled", Value::Bool(off)) => settings.commerce_emails_disabled = *off,
            ("userSignupClosed", Value::Bool(closed)) => settings.user_signup_closed = *closed,
            ("userLicenseRequired", Value::Bool(required)) => settings.user_license_required = *required,
            ("fileDownloadUrl", Value::Bool(url)) => settings.file_download_url = *url,
            ("fileDownloadUrl", _) => return bad("fileDownloadUrl must be a boolean"),
            ("commerceEmailsDisabled", _) => return bad("commerceEmailsDisabled must be a boolean"),
            ("userSignupClosed" | "userLicenseRequired", _) => return bad("app-user switches must be booleans"),
            ("supportContact", Value::Null) => settings.support_contact = None,
            ("supportContact", Value::String(contact)) if contact.chars().count() <= 200 => {
                settings.support_contact = Some(contact.trim().to_string()).filter(|c| !c.is_empty());
            }
            ("supportContact", _) => return bad("supportContact must be null or at most 200 characters"),
            ("liveSessionQuota", Value::Null) => settings.live_session_quota = None,
            ("liveSessionQuota", Value::Number(n))
                if n.as_u64().is_some_and(|q| (1..=u64::from(u32::MAX)).contains(&q)) =>
            {
                settings.live_session_quota = n.as_u64().and_then(|q| u32::try_from(q).ok());
            }
            ("liveSessionQuota", _) => {
                return bad("liveSessionQuota must be null (no limit) or an integer from 1 to 4294967295")
            }
            (other, _) => {
                return Err(ApiError::BadRequest(format!(
                    "unknown setting '{other}': use offlineActivation, hourlyBurnCap, dailyBurnCap, \
                     commerceEmailsDisabled, supportContact, liveSessionQuota, userSignupClosed, \
                     userLicenseRequired or fileDownloadUrl"
                )))
            }
        }
    }
    Ok(settings)
}

/// `PUT /v1/apps/{appId}/settings` (beyond the docs): offline activation opt-in and burn caps;
/// omitted fields stay as they are.
pub async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let settings = merge_settings(app.settings.clone(), &body)?;
    let app = change(&state, &caller, &app, AppCommand::SetSettings(settings)).await?;
    Ok(Json(settings_json(&app.settings)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListEntry {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

/// Adds or removes one entry of the list named by `list` and the entry's type: a delta decided
/// by the app aggregate against its current lists, so concurrent edits all take effect.
async fn edit_list(
    state: &AppState,
    caller: &Caller,
    app_id: &str,
    list: &str,
    entry: ListEntry,
    add: bool,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(state, caller, app_id)?;
    let list = ListName::from_api(list, &entry.kind).ok_or_else(|| {
        ApiError::BadRequest("the list must be 'blacklist' or 'whitelist' and type 'hwid' or 'ip'".into())
    })?;
    let command = if add {
        AppCommand::AddListEntry { list, entry: entry.value }
    } else {
        AppCommand::RemoveListEntry { list, entry: entry.value }
    };
    change(state, caller, &app, command).await?;
    Ok(Json(json!({ "ok": true })))
}

/// `POST /v1/apps/{appId}/security/{blacklist|whitelist}` with `{"type": "hwid"|"ip", "value": ...}`.
pub async fn add_entry(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app_id, list)): ApiPath<(String, String)>,
    ApiJson(entry): ApiJson<ListEntry>,
) -> Result<Json<Value>, ApiError> {
    edit_list(&state, &caller, &app_id, &list, entry, true).await
}

/// `DELETE /v1/apps/{appId}/security/{blacklist|whitelist}` with the same body.
pub async fn remove_entry(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app_id, list)): ApiPath<(String, String)>,
    ApiJson(entry): ApiJson<ListEntry>,
) -> Result<Json<Value>, ApiError> {
    edit_list(&state, &caller, &app_id, &list, entry, false).await
}

/// `DELETE /v1/apps/{appId}/security/{blacklist|whitelist}/{hwid|ip}/{value}` (beyond the docs):
/// the same removal with the entry in the path, for clients that cannot send a DELETE body.
pub async fn remove_entry_named(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app_id, list, kind, value)): ApiPath<(String, String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    edit_list(&state, &caller, &app_id, &list, ListEntry { kind, value }, false).await
}

/// `POST /v1/apps/{appId}/secret` (beyond the docs): a new app secret, shown in this response only.
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let (secret, sealed) = state.commands.new_app_secret(app.app_id);
    change(&state, &caller, &app, AppCommand::RotateSecret { secret: sealed }).await?;
    Ok(Json(json!({ "appId": app.app_id, "appSecret": secret })))
}

/// Settings on the wire; the portal policy has its own resource (`/apps/{appId}/portal`).
pub(crate) fn settings_json(settings: &AppSettings) -> Value {
    let mut value = serde_json::to_value(settings).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        fields.remove("portal");
    }
    value
}

/// The portal policy on the wire, with the buyer-email switch of commerce fulfilment beside it.
fn portal_json(settings: &AppSettings) -> Json<Value> {
    let mut policy = serde_json::to_value(&settings.portal).unwrap_or_default();
    if let Some(fields) = policy.as_object_mut() {
        fields.insert("emailBuyers".into(), Value::Bool(!settings.commerce_emails_disabled));
    }
    Json(policy)
}

pub async fn get_portal(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(portal_json(&owned_app(&state, &caller, &app_id)?.settings))
}

/// `PUT /v1/apps/{appId}/portal`: the fields given replace the app's portal policy fields.
pub async fn put_portal(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
    ApiJson(mut body): ApiJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let mut settings = app.settings.clone();
    match body.remove("emailBuyers") {
        Some(Value::Bool(on)) => settings.commerce_emails_disabled = !on,
        Some(_) => return Err(ApiError::BadRequest("emailBuyers must be a boolean".into())),
        None => {}
    }
    let mut merged = serde_json::to_value(&settings.portal).unwrap_or_default();
    if let Some(fields) = merged.as_object_mut() {
        for (field, value) in body {
            if !fields.contains_key(&field) {
                return Err(ApiError::BadRequest(format!(
                    "unknown field '{field}': use resetLimit, resetWindowDays, cooldownHours, supportUrl, \
                     supportEmail, displayName, accentColor or emailBuyers"
                )));
            }
            fields.insert(field, value);
        }
    }
    let policy: licensd_domain::portal::PortalPolicy =
        serde_json::from_value(merged).map_err(|e| ApiError::BadRequest(format!("invalid portal policy: {e}")))?;
    settings.portal = policy.validated()?;
    let app = change(&state, &caller, &app, AppCommand::SetSettings(settings)).await?;
    Ok(portal_json(&app.settings))
}
