//! Packets 7 (transfer a file, or its download URL in URL mode), 8 (stop a transfer) and 9 (file
//! metadata): websocket.md §3, §8 and decisions 1, 2 and 8.

use super::{answer, status, Ctx, Reply, INTERNAL_ERROR, NOT_AUTHORIZED, OK};
use crate::live::envelope::{response, string_field, Close, PacketId};
use crate::live::files::catalog::{self, Served};
use crate::live::files::quota::{day_of, Holder};
use crate::live::files::tokens::Grant;
use crate::live::files::transfer::{self, Ended, Plan, QUOTA_EXCEEDED};
use crate::live::files::{valid_name, Active, Stop};
use crate::live::session::LiveSession;
use crate::live::{users, Live};
use crate::AppState;
use licensd_domain::AppId;
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio::sync::watch;

/// The packet-specific limit (§4 status 5): too many transfers running for the session or the
/// app, or this file already streaming to the session.
const TOO_MANY: u16 = 5;
const FILE_NOT_FOUND: u16 = 300;
const FILE_INVALID_NAME: u16 = 301;
const INVALID_RESUME_OFFSET: u16 = 303;
const NOT_BEING_TRANSFERRED: u16 = 305;

/// Who is asking: the app, whether the session is authorized now (its license or account
/// still valid), its levels, and the identity its bytes count against.
struct Caller {
    app_id: AppId,
    authorized: bool,
    levels: Vec<String>,
    identity: String,
}

fn caller(ctx: &Ctx<'_>) -> Result<Caller, Close> {
    let Some(init) = ctx.session.state().init.clone() else { return Err(Close::NotInitialized) };
    let (state, live, session) = (ctx.state, ctx.live, ctx.session);
    let now = state.commands.now();
    if let Some(license) = live.authorized_license(state, session).filter(|l| !l.is_expired(now)) {
        let identity = format!("license:{}", license.key);
        return Ok(Caller { app_id: init.app_id, authorized: true, levels: license.extras.levels.clone(), identity });
    }
    if let Some(user) = live.authorized_user(state, session) {
        let coverage = users::coverage(state, &user, &init.client_id, now);
        if coverage.valid {
            let identity = format!("user:{}", user.user_id);
            return Ok(Caller { app_id: init.app_id, authorized: true, levels: coverage.levels, identity });
        }
    }
    let identity = format!("client:{}", init.client_id);
    Ok(Caller { app_id: init.app_id, authorized: false, levels: Vec::new(), identity })
}

/// `resume_at`: absent or null is 0; a negative integer is `None` (303, as the URL page says);
/// anything but an integer is 4302.
fn resume_offset(body: &Map<String, Value>) -> Result<Option<u64>, Close> {
    match body.get("resume_at") {
        None | Some(Value::Null) => Ok(Some(0)),
        Some(Value::Number(n)) if n.is_u64() => Ok(n.as_u64()),
        Some(Value::Number(n)) if n.is_i64() => Ok(None),
        Some(_) => Err(Close::InvalidBody),
    }
}

/// Packet 7. Checks, in order: the name (301), the file (300), its policy (3), `resume_at`
/// (303: negative, ≥ the size when the size is > 0, > 0 on an empty file, or > 0 against
/// another version than the one this session streamed of that name), the daily quota (302),
/// then the concurrency caps (5). Stream mode answers with the stream itself (no text
/// response); URL mode with `presigned_url`, `file_size` and `file_checksum`.
pub async fn transfer(ctx: &Ctx<'_>, id: PacketId, body: &Map<String, Value>) -> Result<Reply, Close> {
    let name = string_field(body, "filename")?;
    let resume_at = resume_offset(body)?;
    if !valid_name(name) {
        return Ok(status(id, FILE_INVALID_NAME));
    }
    let caller = caller(ctx)?;
    let state = ctx.state;
    let Some(app) = state.hot.app(caller.app_id) else { return Ok(status(id, INTERNAL_ERROR)) };
    let Some(file) = catalog::current(state, caller.app_id, name) else { return Ok(status(id, FILE_NOT_FOUND)) };
    if !file.policy.allows(caller.authorized, &caller.levels) {
        return Ok(status(id, NOT_AUTHORIZED));
    }
    let Some(resume_at) = resume_at else { return Ok(status(id, INVALID_RESUME_OFFSET)) };
    let past_end = if file.size == 0 { resume_at > 0 } else { resume_at >= file.size };
    let other_version = resume_at > 0 && files_of(ctx.session).streamed.get(name).is_some_and(|v| *v != file.version);
    if past_end || other_version {
        return Ok(status(id, INVALID_RESUME_OFFSET));
    }
    let delivery = &ctx.live.files;
    let first_chunk = (file.size - resume_at).min(delivery.config.chunk_bytes as u64);
    let day = day_of(state.commands.now().timestamp());
    match state.files.quota.remaining(&Holder::new(caller.app_id, &caller.identity), day).await {
        Ok(left) if left < first_chunk => return Ok(status(id, QUOTA_EXCEEDED)),
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(%error, "the file quota could not be read");
            return Ok(status(id, INTERNAL_ERROR));
        }
    }
    if app.settings.file_download_url {
        Ok(download_url(ctx, id, caller, file).await)
    } else {
        Ok(stream(ctx, id, caller, file, resume_at).await)
    }
}

fn files_of(session: &LiveSession) -> std::sync::MutexGuard<'_, crate::live::files::SessionFiles> {
    session.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// URL mode: a single-use URL bound to this session and this version (stored, so it outlives a
/// restart and works on another node sharing the database).
async fn download_url(ctx: &Ctx<'_>, id: PacketId, caller: Caller, file: Served) -> Reply {
    let delivery = &ctx.live.files;
    let base = {
        let mut files = files_of(ctx.session);
        if files.running() >= delivery.config.max_per_session {
            return status(id, TOO_MANY);
        }
        let Some(base) = delivery.config.public_base_url.clone().or_else(|| files.base_url.clone()) else {
            return status(id, INTERNAL_ERROR);
        };
        files.streamed.insert(file.name.clone(), file.version);
        base
    };
    let now = ctx.state.commands.now();
    let ttl = chrono::Duration::from_std(delivery.config.url_ttl).unwrap_or(chrono::Duration::seconds(60));
    let (size, checksum) = (file.size, file.sha256.clone());
    let grant = Grant { session_id: ctx.session.id, file, identity: caller.identity, expires: now + ttl };
    let token = match ctx.state.files.tokens.issue(grant, now).await {
        Ok(token) => token,
        Err(error) => {
            tracing::warn!(%error, "a download token could not be stored");
            return status(id, INTERNAL_ERROR);
        }
    };
    let fields = Map::from_iter([
        ("presigned_url".to_string(), Value::from(format!("{}/files/dl/{token}", base.trim_end_matches('/')))),
        ("file_size".to_string(), Value::from(size)),
        ("file_checksum".to_string(), Value::from(checksum)),
    ]);
    answer(id, OK, fields)
}

/// Stream mode: registers the transfer under its name and starts it beside the socket's loop,
/// so the session goes on answering packets and pings while it streams.
async fn stream(ctx: &Ctx<'_>, id: PacketId, caller: Caller, file: Served, resume_at: u64) -> Reply {
    let (state, live, session) = (ctx.state, ctx.live, ctx.session);
    let delivery = &live.files;
    let (stop_tx, stop) = watch::channel(None);
    let (slot, serial) = {
        let mut files = files_of(session);
        if files.active.contains_key(&file.name) || files.running() >= delivery.config.max_per_session {
            return status(id, TOO_MANY);
        }
        let Some(slot) = delivery.slots.take(caller.app_id) else { return status(id, TOO_MANY) };
        let serial = files.next_serial();
        files.active.insert(file.name.clone(), Active { stop: stop_tx, serial });
        files.streamed.insert(file.name.clone(), file.version);
        (slot, serial)
    };
    let source = match catalog::Source::open(state, &file, resume_at).await {
        Ok(source) => source,
        Err(error) => {
            tracing::warn!(file = %file.name, version = file.version, %error, "file open failed");
            forget(session, &file.name, serial);
            return status(id, INTERNAL_ERROR);
        }
    };
    let plan = Plan {
        id,
        file,
        resume_at,
        chunk_bytes: delivery.config.chunk_bytes,
        window_chunks: delivery.config.window_chunks,
    };
    let (state, live, session) = (state.clone(), live.clone(), session.clone());
    tokio::spawn(async move {
        let _slot = slot;
        let ended = run(&state, &live, &session, &plan, source, stop, &caller).await;
        forget(&session, &plan.file.name, serial);
        catalog::record(&state, &plan.file, ended.bytes(), matches!(ended, Ended::Completed(_))).await;
    });
    Reply::Delivered(None)
}

async fn run(
    state: &AppState,
    live: &Arc<Live>,
    session: &Arc<LiveSession>,
    plan: &Plan,
    mut source: catalog::Source,
    mut stop: watch::Receiver<Option<Stop>>,
    caller: &Caller,
) -> Ended {
    let commands = state.commands.clone();
    let holder = Holder::new(caller.app_id, &caller.identity);
    let planned = plan.file.size - plan.resume_at;
    let mut meter = state.files.quota.meter(holder, planned, Arc::new(move || commands.now().timestamp()));
    transfer::pump(live, session, plan, &mut source, &mut stop, &mut meter).await
}

/// Drops a transfer's entry, unless a newer transfer of the name took it.
fn forget(session: &LiveSession, name: &str, serial: u64) {
    let mut files = files_of(session);
    if files.active.get(name).is_some_and(|a| a.serial == serial) {
        files.active.remove(name);
    }
}

/// Packet 8: OK (sent before the stream's terminal 304, which follows it), or 305 when no stream
/// of that name runs, and always in URL mode.
pub fn stop(ctx: &Ctx<'_>, id: PacketId, body: &Map<String, Value>) -> Result<Reply, Close> {
    let name = string_field(body, "filename")?;
    let Some(app_id) = ctx.session.state().init.as_ref().map(|i| i.app_id) else { return Err(Close::NotInitialized) };
    let url_mode = ctx.state.hot.app(app_id).is_some_and(|app| app.settings.file_download_url);
    let files = files_of(ctx.session);
    let Some(active) = files.active.get(name).filter(|_| !url_mode) else {
        return Ok(status(id, NOT_BEING_TRANSFERRED));
    };
    // The answer is queued before the transfer can see the stop, so OK comes before the 304.
    let ok = response(id, OK, Map::new());
    ctx.live.deliver(ctx.session, crate::live::session::Out::Text(ok.clone()));
    let _ = active.stop.send(Some(Stop::Requested));
    Ok(Reply::Delivered(Some(ok)))
}

/// Packet 9 (no authorization needed): the current version's checksum and size, with the
/// file's delivery counters.
pub async fn metadata(ctx: &Ctx<'_>, id: PacketId, body: &Map<String, Value>) -> Result<Reply, Close> {
    let name = string_field(body, "filename")?;
    if !valid_name(name) {
        return Ok(status(id, FILE_INVALID_NAME));
    }
    let Some(app_id) = ctx.session.state().init.as_ref().map(|i| i.app_id) else { return Err(Close::NotInitialized) };
    let Some(file) = catalog::current(ctx.state, app_id, name) else { return Ok(status(id, FILE_NOT_FOUND)) };
    let Ok(counters) = catalog::counters(ctx.state, &file).await else { return Ok(status(id, INTERNAL_ERROR)) };
    let fields = Map::from_iter([
        ("checksum".to_string(), Value::from(file.sha256)),
        ("size".to_string(), Value::from(file.size)),
        ("transfer_count".to_string(), Value::from(counters.transfer_count)),
        ("last_transferred_at".to_string(), Value::from(counters.last_transferred_at)),
    ]);
    Ok(answer(id, OK, fields))
}
