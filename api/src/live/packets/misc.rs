//! Packets 6 (blacklist), 10 (online users count), 11 (get variable), 17 (panel subscription).

use super::{answer, status, Ctx, Reply, INTERNAL_ERROR, NOT_AUTHORIZED, OK};
use crate::auth::AuthError;
use crate::live::envelope::{optional_string, response, string_field, Close, PacketId};
use crate::live::model;
use licensd_domain::app::{AppCommand, MAX_SELF_BAN_COMMENT_CHARS};
use serde_json::{Map, Value};

const VARIABLE_NOT_FOUND: u16 = 400;
const VARIABLE_INVALID_NAME: u16 = 401;
const BLACKLISTS_QUOTA: u16 = 604;
const MIN_VARIABLE_NAME: usize = 3;

/// Packet 6: the client bans itself. Its client id goes to the app's self-ban list (the list
/// `/auth/selfban` fills, with the same cap: full → 604, the socket stays open), with the
/// packet's `comment` kept beside the entry; an authorized license is revoked (licensd's
/// blacklisting of a license). Then status 1 and close 4203. A comment over 256 characters or
/// with a control character (U+0000 included, which Postgres cannot store) is 4302.
pub async fn blacklist(ctx: &Ctx<'_>, id: PacketId, body: &Map<String, Value>) -> Result<Reply, Close> {
    let comment = optional_string(body, "comment")?.filter(|c| !c.is_empty());
    if comment.is_some_and(|c| c.chars().count() > MAX_SELF_BAN_COMMENT_CHARS || c.chars().any(char::is_control)) {
        return Err(Close::InvalidBody);
    }
    let (init, license) = {
        let state = ctx.session.state();
        (state.init.clone(), state.auth.as_ref().map(|a| a.key.clone()))
    };
    let Some(init) = init else { return Err(Close::NotInitialized) };
    let state = ctx.state;
    let Some(app) = state.hot.app(init.app_id) else { return Ok(status(id, INTERNAL_ERROR)) };
    let revoke = license.and_then(|key| state.hot.license(&key)).map(|l| (l.key, l.account_id));
    let ban = AppCommand::SelfBan {
        hwid: Some(init.client_id.clone()),
        ip: None,
        max_entries: state.auth.config.selfban_max_entries,
        comment: comment.map(str::to_string),
    };
    match crate::auth::record_self_ban(state, &app, ban, revoke).await {
        Ok(()) => Ok(Reply::AnswerThenClose(response(id, OK, Map::new()), Close::SessionBlacklisted)),
        Err(AuthError::RateLimited) => Ok(status(id, BLACKLISTS_QUOTA)),
        Err(_) => Ok(status(id, INTERNAL_ERROR)),
    }
}

/// Packet 10: the app's initialized sessions with a socket attached, the caller included.
pub fn online_users(ctx: &Ctx<'_>, id: PacketId) -> Result<Reply, Close> {
    let Some(app_id) = ctx.session.state().init.as_ref().map(|i| i.app_id) else { return Err(Close::NotInitialized) };
    let count = ctx.live.registry.online(app_id);
    Ok(answer(id, OK, Map::from_iter([("online_users_count".to_string(), Value::from(count))])))
}

/// Packet 11: an app variable; names shorter than 3 are 401, unknown ones 400, and one that
/// requires authorization is 3 unless the session is authorized (and its license still valid).
pub fn variable(ctx: &Ctx<'_>, id: PacketId, body: &Map<String, Value>) -> Result<Reply, Close> {
    let name = string_field(body, "name")?;
    if name.chars().count() < MIN_VARIABLE_NAME {
        return Ok(status(id, VARIABLE_INVALID_NAME));
    }
    let Some(app_id) = ctx.session.state().init.as_ref().map(|i| i.app_id) else { return Err(Close::NotInitialized) };
    let Some(app) = ctx.state.hot.app(app_id) else { return Ok(status(id, INTERNAL_ERROR)) };
    let Some(value) = app.variables.as_map().get(name) else { return Ok(status(id, VARIABLE_NOT_FOUND)) };
    if model::variable_requires_auth(&app, name) && !ctx.live.is_authorized(ctx.state, ctx.session) {
        return Ok(status(id, NOT_AUTHORIZED));
    }
    let content = match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    Ok(answer(id, OK, Map::from_iter([("content".to_string(), Value::from(content))])))
}

/// Packet 17: idempotent; a new session starts unsubscribed and the choice survives a resume.
pub fn subscription(ctx: &Ctx<'_>, id: PacketId, body: &Map<String, Value>) -> Result<Reply, Close> {
    let subscribed = body.get("subscribed").and_then(Value::as_bool).ok_or(Close::InvalidBody)?;
    ctx.session.state().subscribed = subscribed;
    Ok(status(id, OK))
}
