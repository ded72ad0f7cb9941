use super::app_settings::{change, owned_app};
use super::{current_app, iso, visible};
use crate::extract::{ApiJson, ApiPath, Caller};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use licensd_domain::app::{App, AppCommand, AppState as AppStream};
use licensd_domain::Aggregate;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
pub struct CreateApp {
    name: String,
}

/// `POST /v1/apps`: the secret and the WebSocket API key are in this response and nowhere else, ever.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateApp>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let actor = caller.actor.clone();
    let created = state.commands.create_app(caller.account_id, &body.name, &actor).await?;
    let shown = visible(&state, created.result.position).await;
    let app = current_app(&state, shown, created.app_id).await?.ok_or(ApiError::Internal)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "appId": created.app_id,
            "name": app.name,
            "appSecret": created.app_secret,
            "publicKey": created.public_key,
            "keyId": created.key_id,
            "websocketApiKey": created.websocket_api_key,
            "createdAt": iso(app.created_at),
        })),
    ))
}

fn app_json(app: &App) -> Value {
    json!({
        "appId": app.app_id,
        "name": app.name,
        "disabled": app.disabled,
        "publicKeys": app.signing_keys.iter().rev()
            .map(|k| json!({ "keyId": k.key_id, "publicKey": k.public_key }))
            .collect::<Vec<_>>(),
        "settings": super::app_settings::settings_json(&app.settings),
        "version": app.version,
        // Whether live sessions can initialize (apps made before them have no key until rotated).
        "hasWebsocketApiKey": app.websocket_key.is_some(),
        "createdAt": iso(app.created_at),
    })
}

/// `GET /v1/apps`: the caller's apps, oldest first, without secrets.
pub async fn list(State(state): State<AppState>, caller: Caller) -> Json<Value> {
    let mut apps = state.hot.apps_of(caller.account_id);
    apps.sort_by_key(|a| (a.created_at, a.app_id));
    Json(json!({ "apps": apps.iter().map(app_json).collect::<Vec<_>>() }))
}

/// `GET /v1/apps/{appId}`.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(app_json(&owned_app(&state, &caller, &app_id)?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateApp {
    name: Option<String>,
    disabled: Option<bool>,
    version: Option<String>,
}

/// `PUT /v1/apps/{appId}`: rename, disable (every auth call then answers `app_disabled`), enable,
/// set the version live sessions are told. Every field is checked before anything changes.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateApp>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let max_chars = state.config.live_model.max_app_version_chars;
    let mut commands = Vec::new();
    commands.extend(body.name.map(|name| AppCommand::Rename { name }));
    commands.extend(body.version.map(|version| AppCommand::SetVersion { version, max_chars }));
    commands.extend(body.disabled.map(|off| if off { AppCommand::Disable } else { AppCommand::Enable }));
    // Each is a separate append: checked against the app first, so a bad field changes nothing.
    for command in &commands {
        AppStream(Some(app.clone())).decide(command.clone(), state.commands.now())?;
    }
    let mut app = app;
    for command in commands {
        app = change(&state, &caller, &app, command).await?;
    }
    Ok(Json(app_json(&app)))
}

/// `POST /v1/apps/{appId}/websocket-key`: a new WebSocket API key, shown in this response only;
/// the previous key stops finding the app as soon as this answers.
pub async fn rotate_websocket_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let actor = caller.actor.clone();
    let (key, executed) = state.commands.rotate_websocket_key(caller.account_id, app.app_id, &actor).await?;
    // Answered only once the read model shows it: from then on the old key finds nothing.
    if !visible(&state, executed.position()).await {
        tracing::warn!(app_id = %app.app_id, "WebSocket key rotated; the read model has not applied it yet");
    }
    Ok(Json(json!({ "appId": app.app_id, "websocketApiKey": key })))
}
