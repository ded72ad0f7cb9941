//! Packet 0, Initialize, with the order of checks of §14.4: key length (2), already initialized
//! (4), client_id length (500/501), app lookup (600/601), client_id blacklisted (503 + close
//! 4204), app live-session quota (602). The fourth consecutive failure to resolve the app (2 or
//! 600) closes 4205 without a reply. Unknown fields (the SDK's protocol version) are ignored.

use super::{answer, status, Ctx, Reply, OK};
use super::{APP_PAUSED, CLIENT_ID_BLACKLISTED, SESSIONS_QUOTA};
use crate::live::envelope::{response, string_field, Close, PacketId};
use crate::live::model;
use crate::live::session::Initialized;
use serde_json::{Map, Value};
use std::time::Instant;

const INVALID_API_KEY: u16 = 2;
const ALREADY_INITIALIZED: u16 = 4;
const CLIENT_ID_TOO_SHORT: u16 = 500;
const CLIENT_ID_TOO_LONG: u16 = 501;
const APP_NOT_FOUND: u16 = 600;
const CLIENT_ID_CHARS: std::ops::RangeInclusive<usize> = 4..=64;
/// Consecutive app-resolution failures answered before the session is closed (4205).
const RESOLUTION_FAILURES_ANSWERED: u8 = 3;

pub fn initialize(ctx: &Ctx<'_>, id: PacketId, body: &Map<String, Value>) -> Result<Reply, Close> {
    let key = string_field(body, "websocket_api_key")?;
    let client_id = string_field(body, "client_id")?;
    let (live, session) = (ctx.live, ctx.session);
    let now = Instant::now();
    if let Some(left) = live.ip_limits.blocked(session.ip, now) {
        return Err(Close::RateLimited(left));
    }
    if let Some(left) = live.ip_limits.backoff_left(session.ip, client_id, now) {
        return Err(Close::RateLimited(left));
    }
    let mut state = session.state();
    let unresolved = |failures: &mut u8, code: u16| {
        *failures = failures.saturating_add(1);
        if *failures > RESOLUTION_FAILURES_ANSWERED {
            Err(Close::InitFailed)
        } else {
            Ok(status(id, code))
        }
    };
    if key.chars().count() != licensd_domain::app::WEBSOCKET_KEY_LEN {
        return unresolved(&mut state.failed_inits, INVALID_API_KEY);
    }
    if state.init.is_some() {
        return Ok(status(id, ALREADY_INITIALIZED));
    }
    let length = client_id.chars().count();
    if length < *CLIENT_ID_CHARS.start() {
        return Ok(status(id, CLIENT_ID_TOO_SHORT));
    }
    if length > *CLIENT_ID_CHARS.end() {
        return Ok(status(id, CLIENT_ID_TOO_LONG));
    }
    let Some(app) = model::app_by_websocket_key(&ctx.state.hot, key) else {
        return unresolved(&mut state.failed_inits, APP_NOT_FOUND);
    };
    state.failed_inits = 0;
    if crate::auth::ensure_enabled(ctx.state, &app).is_err() {
        return Ok(status(id, APP_PAUSED));
    }
    if !app.lists.allows(Some(session.ip), client_id) {
        return Ok(Reply::AnswerThenClose(response(id, CLIENT_ID_BLACKLISTED, Map::new()), Close::ClientIdBlacklisted));
    }
    if model::live_session_quota(&app)
        .is_some_and(|quota| live.registry.authorized_on_app(app.app_id) >= quota as usize)
    {
        return Ok(status(id, SESSIONS_QUOTA));
    }
    state.init = Some(Initialized { app_id: app.app_id, client_id: client_id.to_string() });
    drop(state);
    live.registry.initialized(session, app.app_id);
    let fields = Map::from_iter([
        ("app_name".to_string(), Value::from(app.name.clone())),
        ("app_version".to_string(), Value::from(model::app_version(&app))),
    ]);
    Ok(answer(id, OK, fields))
}
