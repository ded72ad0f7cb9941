//! The HTTP side: `GET /ws` (the upgrade, with `Resume-Id`), the self-hosted balancer answer
//! `GET /v1/websocket/server`, and the Developer API's `GET /v1/apps/{appId}/sessions` and
//! `DELETE /v1/apps/{appId}/sessions/{sessionId}`.

use super::envelope::Close;
use super::session::LiveSession;
use crate::auth::ClientIp;
use crate::extract::{ApiPath, Caller};
use crate::{ApiError, AppState};
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

const RESUME_ID: &str = "resume-id";
/// Bytes of frames fed without a flush that the library keeps before writing them out: enough
/// for a closing batch (panel events and the close, a few hundred bytes) to leave in one write.
const WRITE_BATCH_BYTES: usize = 4096;

pub fn routes() -> Router<AppState> {
    Router::new().route("/ws", get(upgrade)).route("/files/dl/{token}", get(super::files::download::download))
}

async fn upgrade(State(state): State<AppState>, ip: ClientIp, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let live = state.live.clone();
    let ip = ip.0.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).to_canonical();
    if let Some(left) = live.ip_limits.blocked(ip, Instant::now()) {
        let mut refused = ApiError::RateLimited.into_response();
        refused.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(left));
        return refused;
    }
    if live.is_shutting_down() {
        return ApiError::Unavailable("the server is shutting down; retry later".into()).into_response();
    }
    if live.sockets.load(Ordering::Relaxed) >= live.config.max_sessions {
        return ApiError::Unavailable("too many live sessions; retry later".into()).into_response();
    }
    // The library's default buffers are 128 KiB each per socket; packets are small, and an idle
    // session should cost kilobytes (the read buffer still grows for a larger frame). Every write
    // flushes at once, except a closing batch, whose frames gather (up to WRITE_BATCH_BYTES)
    // until the close flushes them in one write (connection::write_closing).
    let ws = ws
        // Frames and messages over the limit are refused by the library before it buffers them,
        // and the socket closes them with 4302 (a fragmented message counts whole).
        .max_frame_size(live.config.max_frame_bytes)
        .max_message_size(live.config.max_frame_bytes)
        .read_buffer_size(live.config.read_buffer_bytes)
        .write_buffer_size(WRITE_BATCH_BYTES);
    let presented = headers.get(RESUME_ID).map(|v| v.to_str().unwrap_or_default().to_string());
    let session = match presented {
        None => {
            let session = Arc::new(LiveSession::new(ip, live.config.session_actions_per_minute));
            live.registry.insert(session.clone());
            Some(session)
        }
        Some(presented) => live.registry.by_resume_id(&presented),
    };
    let Some(session) = session else {
        // Unknown or expired: accepted, then closed 4401 (§14.13).
        let mut response = ws.on_upgrade(|mut socket| async move {
            let close = Close::ResumeNotFound;
            let frame = CloseFrame { code: close.code(), reason: close.reason().into() };
            let _ = socket.send(Message::Close(Some(frame))).await;
        });
        // Every accept carries a Resume-Id; this one names nothing (the socket is closing).
        insert_resume_id(&mut response, &super::registry::random_resume_id());
        return response;
    };
    // Where the client reached this server: the default base of its file download URLs.
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        let scheme = if live.config.tls { "https" } else { "http" };
        session.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner).base_url =
            Some(format!("{scheme}://{host}"));
    }
    let resume_id = live.registry.rotate_resume_id(&session);
    let mut response =
        ws.on_upgrade(move |socket| super::connection::serve(state.clone(), live.clone(), socket, session));
    insert_resume_id(&mut response, &resume_id);
    response
}

fn insert_resume_id(response: &mut Response, resume_id: &str) {
    if let Ok(value) = HeaderValue::from_str(resume_id) {
        response.headers_mut().insert(RESUME_ID, value);
    }
}

/// `GET /v1/websocket/server`: this server is its own balancer (§14.20).
pub async fn balancer(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let config = &state.live.config;
    let endpoint = config.public_endpoint.clone().or_else(|| {
        let host = headers.get(header::HOST)?.to_str().ok()?;
        let scheme = if config.tls { "wss" } else { "ws" };
        Some(format!("{scheme}://{host}/ws"))
    });
    match endpoint {
        Some(endpoint) => Json(json!({ "endpoint": endpoint, "location": config.location })).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error_message": "no servers are currently available", "error_code": 100 })),
        )
            .into_response(),
    }
}

/// `GET /v1/apps/{appId}/sessions`: the app's live sessions (connected, or resumable).
pub async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let app = crate::v1::owned_app(&state, &caller, &app_id)?;
    let sessions: Vec<Value> = state
        .live
        .registry
        .of_app(app.app_id)
        .iter()
        .filter(|s| !s.is_ended())
        .map(|session| {
            let (client_id, license, user) = {
                let st = session.state();
                let client_id = st.init.as_ref().map(|i| i.client_id.clone());
                (
                    client_id,
                    st.auth.as_ref().map(|a| a.key.to_string()),
                    st.account.as_ref().map(|a| a.user_id.to_string()),
                )
            };
            json!({
                "sessionId": session.id.to_string(),
                "clientId": client_id,
                "license": license,
                "userId": user,
                "ip": session.ip.to_string(),
                "connected": session.is_attached(),
                "connectedAt": crate::v1::iso(session.connected_at),
                "lastActivityAt": crate::v1::iso(session.last_activity()),
            })
        })
        .collect();
    Ok(Json(json!({ "sessions": sessions })))
}

/// `DELETE /v1/apps/{appId}/sessions/{sessionId}`: event 1, then close 4100.
pub async fn kick_session(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app_id, session_id)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let app = crate::v1::owned_app(&state, &caller, &app_id)?;
    let not_found = || ApiError::NotFound("No such live session".into());
    let id = session_id.parse().map_err(|_| not_found())?;
    let session = state.live.registry.get(id).ok_or_else(not_found)?;
    if session.state().init.as_ref().map(|i| i.app_id) != Some(app.app_id) || session.is_ended() {
        return Err(not_found());
    }
    super::push::kick(&state.live, &session);
    Ok(Json(json!({ "ok": true })))
}
