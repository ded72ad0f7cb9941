use super::app_settings::{change, owned_app};
use super::{current_app, iso, visible};
use crate::extract::{ApiJson, ApiPath, Caller};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use licensd_domain::app::{App, AppCommand};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
pub struct CreateApp {
    name: String,
}

/// `POST /v1/apps`: the secret is in this response and nowhere else, ever.
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
}

/// `PUT /v1/apps/{appId}`: rename, disable (every auth call then answers `app_disabled`), enable.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateApp>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let mut commands = Vec::new();
    commands.extend(body.name.map(|name| AppCommand::Rename { name }));
    commands.extend(body.disabled.map(|off| if off { AppCommand::Disable } else { AppCommand::Enable }));
    let mut app = app;
    for command in commands {
        app = change(&state, &caller, &app, command).await?;
    }
    Ok(Json(app_json(&app)))
}
