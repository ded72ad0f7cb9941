//! Packets 12–14: the session's value store (§14.12).

use super::{status, Ctx, Reply, OK};
use crate::live::envelope::{response, string_field, Close, PacketId};
use crate::live::store::StoreRefusal;
use serde_json::{Map, Value};
use std::time::Instant;

const NOT_FOUND: u16 = 700;
const OUT_OF_MEMORY: u16 = 701;
const OUT_OF_ENTRIES: u16 = 702;
const MAX_KEY_CHARS: usize = 64;

fn key(body: &Map<String, Value>) -> Result<&str, Close> {
    let key = string_field(body, "key")?;
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
        return Err(Close::InvalidBody);
    }
    Ok(key)
}

pub fn set(ctx: &Ctx<'_>, id: PacketId, body: &Map<String, Value>) -> Result<Reply, Close> {
    let key = key(body)?;
    let value = string_field(body, "value")?;
    let ttl = match body.get("ttl") {
        None | Some(Value::Null) => 0,
        Some(ttl) => ttl.as_i64().ok_or(Close::InvalidBody)?,
    };
    let limits = (ctx.live.config.store_max_entries, ctx.live.config.store_max_bytes);
    let set = ctx.session.state().values.set(key, value, ttl, limits, Instant::now());
    Ok(status(
        id,
        match set {
            Ok(()) => OK,
            Err(StoreRefusal::OutOfMemory) => OUT_OF_MEMORY,
            Err(StoreRefusal::OutOfEntries) => OUT_OF_ENTRIES,
        },
    ))
}

pub fn get(ctx: &Ctx<'_>, id: PacketId, body: &Map<String, Value>) -> Result<Reply, Close> {
    let key = key(body)?;
    let value = ctx.session.state().values.get(key, Instant::now()).map(str::to_string);
    Ok(match value {
        Some(value) => Reply::Answer(response(id, OK, Map::from_iter([("value".to_string(), Value::from(value))]))),
        None => status(id, NOT_FOUND),
    })
}

pub fn delete(ctx: &Ctx<'_>, id: PacketId, body: &Map<String, Value>) -> Result<Reply, Close> {
    let key = key(body)?;
    let deleted = ctx.session.state().values.delete(key, Instant::now());
    Ok(status(id, if deleted { OK } else { NOT_FOUND }))
}
