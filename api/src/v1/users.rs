//! An app's end users (`/v1/apps/{appId}/users`): list (cursor pages, search by exact login),
//! create, read, change (levels, comment, blacklist, password reset, license requirement,
//! unlink a license) and delete. Scopes `read:users` / `write:users`. Logins and comments are
//! read from the sealed vault for the answer; they are never in an event or a log line.

use super::{iso, owned_app, visible};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use licensd_commands::app_users::{login_digest, NewAppUser, COMMENT_FIELD, LOGIN_FIELD};
use licensd_domain::app::App;
use licensd_domain::app_user::{check_comment, normalize_login, AppUser, AppUserCommand, AppUserId, AppUserStatus};
use licensd_domain::LicenseKey;
use serde::Deserialize;
use serde_json::{json, Value};

/// The user of the caller's app, or 404 (another app's or account's user is not found either).
fn owned_user(state: &AppState, app: &App, user_id: &str) -> Result<AppUser, ApiError> {
    let not_found = || ApiError::NotFound("The user doesn't exist".into());
    let user_id: AppUserId = user_id.parse().map_err(|_| not_found())?;
    state.hot.app_user(user_id).filter(|u| u.app_id == app.app_id).ok_or_else(not_found)
}

async fn user_json(state: &AppState, user: &AppUser) -> Result<Value, ApiError> {
    let commands = &state.commands;
    let login = commands.app_user_field(user.user_id, LOGIN_FIELD).await?;
    let comment = commands.app_user_field(user.user_id, COMMENT_FIELD).await?;
    let licenses: Vec<String> = state.hot.licenses_of_user(user.user_id).iter().map(|l| l.key.to_string()).collect();
    Ok(json!({
        "userId": user.user_id.to_string(),
        "appId": user.app_id.to_string(),
        "login": login,
        "comment": comment,
        "levels": user.levels,
        "status": match user.status { AppUserStatus::Active => "active", AppUserStatus::Blacklisted => "blacklisted" },
        "licenseRequired": user.license_required,
        "licenses": licenses,
        "createdAt": iso(user.created_at),
    }))
}

/// Checks levels against the configured count (each level's shape is the domain's rule).
fn check_level_count(state: &AppState, levels: &[String]) -> Result<(), ApiError> {
    let max = state.config.live_model.max_license_levels;
    if levels.len() > max {
        return Err(ApiError::BadRequest(format!("at most {max} levels")));
    }
    Ok(())
}

fn check_password(state: &AppState, password: &str) -> Result<(), ApiError> {
    let allowed = &state.app_users.config.password_chars;
    if !allowed.contains(&password.chars().count()) {
        return Err(ApiError::BadRequest(format!(
            "password must be {} to {} characters",
            allowed.start(),
            allowed.end()
        )));
    }
    Ok(())
}

fn normalized(login: &str, email: bool) -> Result<String, ApiError> {
    normalize_login(login, email).map_err(|problem| {
        ApiError::BadRequest(format!(
            "login must be 4 to 320 characters without control characters{} ({problem:?})",
            if email { ", in the form name@domain.tld" } else { "" }
        ))
    })
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
    search: Option<String>,
}

#[derive(serde::Serialize, Deserialize)]
struct Cursor {
    c: chrono::DateTime<chrono::Utc>,
    u: AppUserId,
}

/// `GET /v1/apps/{appId}/users?limit=&cursor=&search=`: oldest first; `search` finds the user
/// with exactly that login (logins are sealed, so there is no substring search).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let limit = super::page_size(query.limit.as_deref())? as usize;
    let bad_cursor = || ApiError::BadRequest("cursor is not one this API returned".into());
    let after = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(text) => {
            let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad_cursor())?;
            Some(serde_json::from_slice::<Cursor>(&bytes).map_err(|_| bad_cursor())?)
        }
        None => None,
    };
    let users = match query.search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(search) => {
            let found = normalize_login(search, false).ok().and_then(|login| {
                state.hot.app_user_by_login(&login_digest(state.commands.master_key(), app.app_id, &login))
            });
            found.into_iter().filter(|u| u.app_id == app.app_id).collect()
        }
        None => state.hot.app_users_of(app.app_id),
    };
    let rest = users.into_iter().filter(|u| after.as_ref().is_none_or(|a| (u.created_at, u.user_id) > (a.c, a.u)));
    let page: Vec<AppUser> = rest.take(limit + 1).collect();
    let more = page.len() > limit;
    let mut shown = Vec::with_capacity(limit);
    for user in page.iter().take(limit) {
        shown.push(user_json(&state, user).await?);
    }
    let cursor = match (more, page.get(limit.saturating_sub(1))) {
        (true, Some(last)) => {
            let cursor = Cursor { c: last.created_at, u: last.user_id };
            Some(URL_SAFE_NO_PAD.encode(serde_json::to_vec(&cursor).unwrap_or_default()))
        }
        _ => None,
    };
    Ok(Json(json!({ "users": shown, "cursor": cursor })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUser {
    login: String,
    password: String,
    comment: Option<String>,
    #[serde(default)]
    levels: Vec<String>,
    license_required: Option<bool>,
    /// `email`: the login must be an address (Blazeauth `credentials_type` 1).
    #[serde(default)]
    email_login: bool,
}

/// `POST /v1/apps/{appId}/users`: 201 with the user; 409 when the login is taken.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let normalized_login = normalized(&body.login, body.email_login)?;
    check_password(&state, &body.password)?;
    check_level_count(&state, &body.levels)?;
    let comment = body.comment.as_deref().map(check_comment).transpose()?.flatten().map(str::to_string);
    if let Some(max) = state.app_users.config.max_users_per_app {
        if state.hot.app_users_of(app.app_id).len() >= max {
            return Err(ApiError::Conflict(format!("the app has its most users ({max})")));
        }
    }
    let new = NewAppUser {
        app_id: app.app_id,
        account_id: app.account_id,
        login: body.login.trim().to_string(),
        normalized_login,
        password: body.password,
        comment,
        levels: body.levels,
        license_required: body.license_required.unwrap_or(app.settings.user_license_required),
        license: None,
    };
    let cost = state.app_users.config.password_cost;
    let (user_id, position) = state.commands.create_app_user(new, &cost, &caller.actor).await?;
    visible(&state, position).await;
    let user = state.hot.app_user(user_id).ok_or(ApiError::Internal)?;
    Ok((StatusCode::CREATED, Json(user_json(&state, &user).await?)))
}

/// `GET /v1/apps/{appId}/users/{userId}`.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app_id, user_id)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let user = owned_user(&state, &app, &user_id)?;
    let mut shown = user_json(&state, &user).await?;
    shown["liveSessions"] = json!(state.live.sessions_of_user(user.user_id));
    Ok(Json(shown))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateUser {
    levels: Option<Vec<String>>,
    /// `null` removes the comment.
    #[serde(default, deserialize_with = "present")]
    comment: Option<Option<String>>,
    status: Option<String>,
    password: Option<String>,
    license_required: Option<bool>,
    unlink_license: Option<String>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PATCH /v1/apps/{appId}/users/{userId}`: every field given is applied (all checked first).
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app_id, user_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let user = owned_user(&state, &app, &user_id)?;
    let status = match body.status.as_deref() {
        None => None,
        Some("active") => Some(AppUserCommand::Unblacklist),
        Some("blacklisted") => Some(AppUserCommand::Blacklist),
        Some(_) => return Err(ApiError::BadRequest("status must be \"active\" or \"blacklisted\"".into())),
    };
    if let Some(levels) = &body.levels {
        check_level_count(&state, levels)?;
    }
    if let Some(password) = &body.password {
        check_password(&state, password)?;
    }
    let comment = match &body.comment {
        Some(Some(text)) => Some(check_comment(text)?.map(str::to_string)),
        Some(None) => Some(None),
        None => None,
    };
    let unlink = match &body.unlink_license {
        Some(text) => {
            // A text that is no license key cannot be linked either: the same 404 as any other
            // license this user does not hold (the document's pattern is the shape, not the alphabet).
            let linked = LicenseKey::parse(text)
                .ok()
                .filter(|key| state.hot.licenses_of_user(user.user_id).iter().any(|l| &l.key == key));
            let Some(key) = linked else {
                return Err(ApiError::NotFound("The license is not linked to this user".into()));
            };
            Some(key)
        }
        None => None,
    };
    let (commands, actor, account) = (&state.commands, &caller.actor, caller.account_id);
    let mut last = None;
    let mut run = |executed: licensd_commands::Executed<_>| last = executed.position().or(last);
    if let Some(levels) = body.levels {
        run(commands.app_user_command(account, user.user_id, AppUserCommand::SetLevels(levels), vec![], actor).await?);
    }
    if let Some(required) = body.license_required {
        let command = AppUserCommand::SetLicenseRequired(required);
        run(commands.app_user_command(account, user.user_id, command, vec![], actor).await?);
    }
    if let Some(comment) = comment {
        commands.set_app_user_comment(account, user.user_id, comment.as_deref(), actor).await?;
    }
    if let Some(password) = &body.password {
        let cost = state.app_users.config.password_cost;
        commands.set_app_user_password(account, user.user_id, password, &cost, actor).await?;
    }
    if let Some(key) = unlink {
        commands.unlink_license_from_user(account, user.user_id, &key, actor).await?;
    }
    if let Some(command) = status {
        run(commands.app_user_command(account, user.user_id, command, vec![], actor).await?);
    }
    // The writes without a position of their own (comment, password, unlink) are ordered before
    // the last one, or wait for the model to catch up with the log's end.
    visible(&state, last).await;
    if last.is_none() {
        let _ = state.refresh().await;
    }
    let user = state.hot.app_user(user.user_id).ok_or(ApiError::Internal)?;
    Ok(Json(user_json(&state, &user).await?))
}

/// `DELETE /v1/apps/{appId}/users/{userId}`: the user's sessions get event 303; their licenses
/// are unlinked, their login is free again, and their login, comment and verifier are erased.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app_id, user_id)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let user = owned_user(&state, &app, &user_id)?;
    let linked: Vec<LicenseKey> = state.hot.licenses_of_user(user.user_id).into_iter().map(|l| l.key).collect();
    state.commands.delete_app_user(caller.account_id, user.user_id, &linked, &caller.actor).await?;
    let _ = state.refresh().await;
    Ok(Json(json!({ "ok": true })))
}

/// GDPR erasure of the app's users whose login is one of `logins` (as given; each is looked up
/// normalized): each is deleted like `DELETE` does (login, comment and verifier erased, login
/// freed, licenses unlinked) and the softlock row of the login goes too. Client IPs are never
/// stored with a user (softlock and quota rows hold keyed digests of app and IP only). Returns
/// how many users were erased.
pub(crate) async fn forget<'a>(
    state: &AppState,
    caller: &Caller,
    app: &App,
    logins: impl IntoIterator<Item = Option<&'a str>>,
) -> Result<u64, ApiError> {
    let mut erased = 0;
    for login in logins.into_iter().flatten() {
        let Ok(normalized) = normalize_login(login, false) else { continue };
        let digest = login_digest(state.commands.master_key(), app.app_id, &normalized);
        let Some(user) = state.hot.app_user_by_login(&digest).filter(|u| u.app_id == app.app_id) else { continue };
        let linked: Vec<LicenseKey> = state.hot.licenses_of_user(user.user_id).into_iter().map(|l| l.key).collect();
        state.commands.delete_app_user(caller.account_id, user.user_id, &linked, &caller.actor).await?;
        state.app_users.forget_login(&digest).await?;
        erased += 1;
    }
    if erased > 0 {
        let _ = state.refresh().await;
    }
    Ok(erased)
}
