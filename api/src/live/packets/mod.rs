//! Packet handlers, one module per group (websocket.md §3). Each returns what to send back: a
//! response, a response then a close, or a close alone (protocol errors carry no response).

mod account;
mod files;
mod init;
mod license;
mod misc;
mod values;

use super::envelope::{response, Close, Packet, PacketId};
use super::session::LiveSession;
use super::Live;
use crate::AppState;
use serde_json::{Map, Value};
use std::sync::Arc;

/// What a packet produced.
#[derive(Debug)]
pub enum Reply {
    Answer(String),
    AnswerThenClose(String, Close),
    Close(Close),
    /// The handler queued what the client gets itself (a stream's frames, or packet 8's answer
    /// ahead of the stream's terminal frame); the answer, if any, is kept for resends.
    Delivered(Option<String>),
}

pub struct Ctx<'a> {
    pub state: &'a AppState,
    pub live: &'a Arc<Live>,
    pub session: &'a Arc<LiveSession>,
}

/// Runs one packet. Every packet but Initialize needs an initialized session (else 4200).
pub async fn handle(ctx: &Ctx<'_>, packet: Packet) -> Reply {
    let Packet { id, kind, body } = packet;
    if kind != 0 && ctx.session.state().init.is_none() {
        return Reply::Close(Close::NotInitialized);
    }
    let outcome = match kind {
        0 => init::initialize(ctx, id, &body),
        1 => account::create(ctx, id, &body).await,
        2 => license::authorize(ctx, id, &body).await,
        3 => account::authorize(ctx, id, &body).await,
        4 => account::link_license(ctx, id, &body).await,
        5 => license::logout(ctx, id),
        6 => misc::blacklist(ctx, id, &body).await,
        7 => files::transfer(ctx, id, &body).await,
        8 => files::stop(ctx, id, &body),
        9 => files::metadata(ctx, id, &body).await,
        10 => misc::online_users(ctx, id),
        11 => misc::variable(ctx, id, &body),
        12 => values::set(ctx, id, &body),
        13 => values::get(ctx, id, &body),
        14 => values::delete(ctx, id, &body),
        15 => license::current(ctx, id),
        16 => account::current(ctx, id).await,
        17 => misc::subscription(ctx, id, &body),
        _ => Err(Close::UnknownType),
    };
    outcome.unwrap_or_else(Reply::Close)
}

pub const OK: u16 = 1;
pub const NOT_AUTHORIZED: u16 = 3;
pub const INTERNAL_ERROR: u16 = 6;
// Statuses more than one packet answers (§4).
pub const ALREADY_AUTHORIZED: u16 = 7;
pub const LICENSE_NOT_FOUND: u16 = 100;
pub const LICENSE_TOO_SHORT: u16 = 101;
pub const LICENSE_TOO_LONG: u16 = 102;
pub const LICENSE_BLACKLISTED: u16 = 105;
/// A license bound to other machines (packet 2; packet 3 when none of the user's licenses takes it).
pub const CLIENT_ID_MISMATCH: u16 = 502;
pub const CLIENT_ID_BLACKLISTED: u16 = 503;
pub const APP_PAUSED: u16 = 601;
pub const SESSIONS_QUOTA: u16 = 602;

/// A response with status only.
pub fn status(id: PacketId, status: u16) -> Reply {
    Reply::Answer(response(id, status, Map::new()))
}

/// A response with fields.
pub fn answer(id: PacketId, status: u16, fields: Map<String, Value>) -> Reply {
    Reply::Answer(response(id, status, fields))
}
