//! Packets 1 (create account), 3 (authorize by credentials), 4 (link license to account) and
//! 16 (get current account): licensd's app users over a live session.
//!
//! Sign-in does the same work whatever the login: the attempt is counted on the login and on the
//! client IP (persisted softlocks) before anything is verified, a verifier is read from the vault
//! for an unknown login too (of a random id), and Argon2id runs against a dummy verifier of the
//! same cost; unknown login and wrong password are both 200. The user's state (blacklisted) is
//! only told to whoever knows the password.

use super::{answer, status, Ctx, Reply, INTERNAL_ERROR, NOT_AUTHORIZED, OK};
use super::{
    ALREADY_AUTHORIZED, APP_PAUSED, CLIENT_ID_BLACKLISTED, CLIENT_ID_MISMATCH, LICENSE_BLACKLISTED, LICENSE_NOT_FOUND,
    LICENSE_TOO_LONG, LICENSE_TOO_SHORT, SESSIONS_QUOTA,
};
use crate::live::envelope::{optional_string, response, string_field, Close, PacketId};
use crate::live::session::{AccountAuthorized, Initialized};
use crate::live::{model, users};
use licensd_commands::app_users::{login_digest, NewAppUser, COMMENT_FIELD, LOGIN_FIELD};
use licensd_commands::CommandError;
use licensd_domain::app::App;
use licensd_domain::app_user::{check_comment, normalize_login, AppUser, AppUserId, AppUserStatus, LoginProblem};
use licensd_domain::license::LicenseStatus;
use licensd_domain::{DomainError, LicenseKey};
use serde_json::{Map, Value};
use std::sync::Arc;

const TOO_MANY_REQUESTS: u16 = 5;
pub const LICENSE_ALREADY_LINKED: u16 = 106;
const LICENSE_ALREADY_ACTIVATED: u16 = 107;
const USER_NOT_FOUND: u16 = 200;
const USER_BLACKLISTED: u16 = 201;
const USER_EXISTS: u16 = 202;
const NO_VALID_LICENSES: u16 = 203;
const REQUIRES_LICENSE: u16 = 204;
const LOGIN_TOO_SHORT: u16 = 205;
const LOGIN_TOO_LONG: u16 = 206;
const PASSWORD_TOO_SHORT: u16 = 207;
const PASSWORD_TOO_LONG: u16 = 208;
const INVALID_EMAIL: u16 = 209;
const ACCOUNTS_QUOTA: u16 = 603;
const LICENSE_CHARS: std::ops::RangeInclusive<usize> = 6..=64;

/// A checked login and password.
struct Credentials<'a> {
    /// As typed, trimmed: what the vault keeps and the user sees.
    login: String,
    normalized: String,
    password: &'a str,
}

/// The login, password and `credentials_type` fields: a protocol error closes (4302), a rule
/// broken is its status.
fn credentials<'a>(ctx: &Ctx<'_>, body: &'a Map<String, Value>) -> Result<Result<Credentials<'a>, u16>, Close> {
    let login = string_field(body, "login")?;
    let password = string_field(body, "password")?;
    let email = match body.get("credentials_type") {
        None | Some(Value::Null) => false,
        Some(kind) => match kind.as_u64() {
            Some(0) => false,
            Some(1) => true,
            _ => return Err(Close::InvalidBody),
        },
    };
    let normalized = match normalize_login(login, email) {
        Ok(normalized) => normalized,
        Err(LoginProblem::TooShort) => return Ok(Err(LOGIN_TOO_SHORT)),
        Err(LoginProblem::TooLong) => return Ok(Err(LOGIN_TOO_LONG)),
        Err(LoginProblem::NotAnEmail) => return Ok(Err(INVALID_EMAIL)),
        Err(LoginProblem::ControlCharacters) => return Err(Close::InvalidBody),
    };
    let chars = password.chars().count();
    let allowed = &ctx.state.app_users.config.password_chars;
    if chars < *allowed.start() {
        return Ok(Err(PASSWORD_TOO_SHORT));
    }
    if chars > *allowed.end() {
        return Ok(Err(PASSWORD_TOO_LONG));
    }
    Ok(Ok(Credentials { login: login.trim().to_string(), normalized, password }))
}

/// The optional `license` field: absent or empty is none; a length out of 6–64 is its status.
fn license_field(body: &Map<String, Value>) -> Result<Result<Option<&str>, u16>, Close> {
    let Some(text) = optional_string(body, "license")?.filter(|t| !t.is_empty()) else { return Ok(Ok(None)) };
    let length = text.chars().count();
    if length < *LICENSE_CHARS.start() {
        return Ok(Err(LICENSE_TOO_SHORT));
    }
    if length > *LICENSE_CHARS.end() {
        return Ok(Err(LICENSE_TOO_LONG));
    }
    Ok(Ok(Some(text)))
}

/// The session's app, if it may serve this client: paused → 601, client id or IP on the app's
/// blacklist → 503 then close 4204.
fn serving_app(ctx: &Ctx<'_>, id: PacketId, init: &Initialized) -> Result<Arc<App>, Reply> {
    let state = ctx.state;
    let Some(app) = state.hot.app(init.app_id) else { return Err(status(id, INTERNAL_ERROR)) };
    if crate::auth::ensure_enabled(state, &app).is_err() {
        return Err(status(id, APP_PAUSED));
    }
    if !app.lists.allows(Some(ctx.session.ip), &init.client_id) {
        return Err(Reply::AnswerThenClose(
            response(id, CLIENT_ID_BLACKLISTED, Map::new()),
            Close::ClientIdBlacklisted,
        ));
    }
    Ok(app)
}

/// A command's refusal as a status of these packets.
fn refusal(error: &CommandError) -> u16 {
    match error {
        CommandError::Domain(DomainError::AlreadyExists(_)) => USER_EXISTS,
        CommandError::Domain(DomainError::LicenseLinkedToOtherUser) => LICENSE_ALREADY_LINKED,
        CommandError::Domain(DomainError::LicenseAlreadyActivated | DomainError::HwidSlotsFull) => {
            LICENSE_ALREADY_ACTIVATED
        }
        CommandError::Domain(DomainError::LicenseRevoked) => LICENSE_BLACKLISTED,
        CommandError::Domain(DomainError::NotFound(_) | DomainError::LicenseDeleted) => LICENSE_NOT_FOUND,
        _ => INTERNAL_ERROR,
    }
}

/// The license `text` names in the app, checked as far as the model can before the license
/// aggregate decides: unknown → 100, revoked → 105, linked to a user → 106, activated on
/// another machine → 107.
fn linkable(ctx: &Ctx<'_>, app: &App, text: &str, client_id: &str) -> Result<LicenseKey, u16> {
    let license = LicenseKey::parse(text)
        .ok()
        .and_then(|key| ctx.state.hot.license(&key))
        .filter(|l| l.app_id == app.app_id)
        .ok_or(LICENSE_NOT_FOUND)?;
    if license.extras.linked_user.is_some() {
        return Err(LICENSE_ALREADY_LINKED);
    }
    if license.status == LicenseStatus::Revoked {
        return Err(LICENSE_BLACKLISTED);
    }
    if !license.hwids.is_empty() && !license.hwids.iter().any(|h| h == client_id) {
        return Err(LICENSE_ALREADY_ACTIVATED);
    }
    Ok(license.key)
}

fn retry_after(id: PacketId, seconds: u64) -> Reply {
    answer(id, TOO_MANY_REQUESTS, Map::from_iter([("retry_after".to_string(), Value::from(seconds))]))
}

/// Packet 1.
pub async fn create(ctx: &Ctx<'_>, id: PacketId, body: &Map<String, Value>) -> Result<Reply, Close> {
    let comment = optional_string(body, "comment")?;
    let comment = match comment.map(check_comment).transpose() {
        Ok(comment) => comment.flatten().map(str::to_string),
        Err(_) => return Err(Close::InvalidBody),
    };
    let creds = match credentials(ctx, body)? {
        Ok(creds) => creds,
        Err(code) => return Ok(status(id, code)),
    };
    let license = match license_field(body)? {
        Ok(license) => license,
        Err(code) => return Ok(status(id, code)),
    };
    let Some(init) = ctx.session.state().init.clone() else { return Err(Close::NotInitialized) };
    let app = match serving_app(ctx, id, &init) {
        Ok(app) => app,
        Err(reply) => return Ok(reply),
    };
    let state = ctx.state;
    let config = &state.app_users.config;
    let full = config.max_users_per_app.is_some_and(|max| state.hot.app_users_of(app.app_id).len() >= max);
    if app.settings.user_signup_closed || full {
        return Ok(status(id, ACCOUNTS_QUOTA));
    }
    if app.settings.user_license_required && license.is_none() {
        return Ok(status(id, REQUIRES_LICENSE));
    }
    let key = match license.map(|text| linkable(ctx, &app, text, &init.client_id)).transpose() {
        Ok(key) => key,
        Err(code) => return Ok(status(id, code)),
    };
    // The documented quota counts sign-ups without a license only.
    let slot = match key {
        Some(_) => None,
        None => match state.app_users.take_signup(&state.commands, app.app_id, ctx.session.ip).await {
            Ok(Ok(slot)) => Some(slot),
            Ok(Err(seconds)) => return Ok(retry_after(id, seconds)),
            Err(_) => return Ok(status(id, INTERNAL_ERROR)),
        },
    };
    let new = NewAppUser {
        app_id: app.app_id,
        account_id: app.account_id,
        login: creds.login,
        normalized_login: creds.normalized,
        password: creds.password.to_string(),
        comment,
        levels: Vec::new(),
        license_required: app.settings.user_license_required,
        license: key.map(|key| (key, Some(init.client_id.clone()))),
    };
    let actor = licensd_commands::Actor::Client;
    match state.commands.create_app_user(new, &config.password_cost, &actor).await {
        Ok((_, position)) => {
            // Sign-in finds users in the in-memory model: the answer waits until the model shows
            // the new user (read-your-writes, as the Developer API's writes do), so a sign-in
            // sent right after it finds them.
            crate::v1::visible(state, position).await;
            Ok(status(id, OK))
        }
        Err(error) => {
            if let Some(slot) = slot {
                state.app_users.give_back(slot).await;
            }
            Ok(status(id, refusal(&error)))
        }
    }
}

/// Packet 3.
pub async fn authorize(ctx: &Ctx<'_>, id: PacketId, body: &Map<String, Value>) -> Result<Reply, Close> {
    let creds = match credentials(ctx, body)? {
        Ok(creds) => creds,
        Err(code) => return Ok(status(id, code)),
    };
    let license = match license_field(body)? {
        Ok(license) => license,
        Err(code) => return Ok(status(id, code)),
    };
    let (init, authorized) = {
        let state = ctx.session.state();
        (state.init.clone(), state.is_authorized_any())
    };
    let Some(init) = init else { return Err(Close::NotInitialized) };
    if authorized {
        return Ok(status(id, ALREADY_AUTHORIZED));
    }
    let app = match serving_app(ctx, id, &init) {
        Ok(app) => app,
        Err(reply) => return Ok(reply),
    };
    let state = ctx.state;
    let runtime = &state.app_users;
    let digest = login_digest(state.commands.master_key(), app.app_id, &creds.normalized);
    match runtime.sign_in_gate(&state.commands, app.app_id, ctx.session.ip, &digest).await {
        Ok(crate::app_users::SignInGate::Verify) => {}
        Ok(crate::app_users::SignInGate::Locked(seconds)) => return Ok(retry_after(id, seconds)),
        Err(_) => return Ok(status(id, INTERNAL_ERROR)),
    }
    let user = state.hot.app_user_by_login(&digest).filter(|u| u.app_id == app.app_id);
    // The vault is read for an unknown login too, so both take the same path.
    let subject = user.as_ref().map_or_else(AppUserId::new, |u| u.user_id);
    let Ok(verifier) = state.commands.app_user_verifier(subject).await else {
        return Ok(status(id, INTERNAL_ERROR));
    };
    let verifier = verifier.filter(|_| user.is_some());
    let verified = runtime.verify(creds.password.to_string(), verifier).await;
    let Some(user) = user.filter(|_| verified) else { return Ok(status(id, USER_NOT_FOUND)) };
    if runtime.signed_in(&state.commands, app.app_id, ctx.session.ip, &digest).await.is_err() {
        return Ok(status(id, INTERNAL_ERROR));
    }
    if user.status == AppUserStatus::Blacklisted {
        return Ok(status(id, USER_BLACKLISTED));
    }
    if let Some(text) = license {
        if let Err(code) = link(ctx, &app, &user, text, &init).await {
            return Ok(status(id, code));
        }
    }
    if let Err(code) = bind_machine(ctx, &user, &init.client_id).await {
        return Ok(status(id, code));
    }
    sign_in(ctx, id, &init, &app, user).await
}

/// Signing in activates the user's valid linked licenses on the session's machine the way
/// authorize by license does (§3 type 2: the client id takes a free slot of each, or is bound
/// already); the license aggregate decides each. A license whose slots hold other machines
/// does not count for this session; when the user holds valid licenses and none of them takes
/// this machine, the sign-in is refused with 502 as packet 2 refuses one such license. A user
/// without a valid license signs in from anywhere (203 decides whether they may).
async fn bind_machine(ctx: &Ctx<'_>, user: &AppUser, client_id: &str) -> Result<(), u16> {
    let state = ctx.state;
    let now = state.commands.now();
    let valid: Vec<_> =
        state.hot.licenses_of_user(user.user_id).into_iter().filter(|l| users::is_valid(l, now)).collect();
    let (mut covered, mut last) = (valid.is_empty(), None);
    for license in valid {
        // Bound already (the usual sign-in): nothing to decide, nothing to write.
        if license.hwids.iter().any(|h| h == client_id) {
            covered = true;
            continue;
        }
        let actor = licensd_commands::Actor::Client;
        match state.commands.authenticate_user_license(user.user_id, &license.key, client_id.to_string(), &actor).await
        {
            Ok(position) => {
                covered = true;
                last = position.or(last);
            }
            // Full of other machines, or changed meanwhile (expired, revoked, unlinked,
            // deleted): it does not cover this session.
            Err(CommandError::Domain(
                DomainError::HwidSlotsFull
                | DomainError::LicenseExpired
                | DomainError::LicenseRevoked
                | DomainError::LicenseLinkedToOtherUser
                | DomainError::NotFound(_)
                | DomainError::LicenseDeleted,
            )) => {}
            Err(error) => {
                tracing::warn!(user_id = %user.user_id, error = %error, "cannot bind a signed-in user's license");
                return Err(INTERNAL_ERROR);
            }
        }
    }
    // The coverage is read from the model next: it must show the new bindings.
    crate::v1::visible(state, last).await;
    if covered {
        Ok(())
    } else {
        Err(CLIENT_ID_MISMATCH)
    }
}

/// Authorizes the session as `user` (who proved the password): 203 without a needed license,
/// 602 over the app's quota; then the identity.
async fn sign_in(ctx: &Ctx<'_>, id: PacketId, init: &Initialized, app: &App, user: AppUser) -> Result<Reply, Close> {
    let state = ctx.state;
    let now = state.commands.now();
    let coverage = users::coverage(state, &user, &init.client_id, now);
    let Ok(fields) = identity_of(ctx, &user, &coverage).await else { return Ok(status(id, INTERNAL_ERROR)) };
    if !coverage.valid {
        return Ok(answer(id, NO_VALID_LICENSES, fields));
    }
    let registry = &ctx.live.registry;
    let quota = model::live_session_quota(app);
    if registry.take_user_seat(ctx.session.id, init.app_id, user.user_id, quota).is_err() {
        return Ok(status(id, SESSIONS_QUOTA));
    }
    let generation = ctx.live.next_generation();
    ctx.session.state().account = Some(AccountAuthorized { user_id: user.user_id, generation });
    // A blacklisting, deletion or password change applied while the password was checked found
    // no session to clear: look again now that the session is registered.
    let current = state.hot.app_user(user.user_id);
    let changed = current
        .as_ref()
        .is_none_or(|u| u.status != AppUserStatus::Active || u.password_generation != user.password_generation);
    if changed {
        ctx.live.clear_authorization(ctx.session);
        let code = if current.is_some_and(|u| u.status == AppUserStatus::Blacklisted) {
            USER_BLACKLISTED
        } else {
            USER_NOT_FOUND
        };
        return Ok(status(id, code));
    }
    if user.license_required {
        ctx.live.arm_expiry(ctx.session, generation, coverage.expires_at);
    }
    Ok(answer(id, OK, fields))
}

/// The identity fields, with the login and comment from the vault.
async fn identity_of(ctx: &Ctx<'_>, user: &AppUser, coverage: &users::Coverage) -> Result<Map<String, Value>, ()> {
    let commands = &ctx.state.commands;
    let login = commands.app_user_field(user.user_id, LOGIN_FIELD).await.map_err(drop)?.unwrap_or_default();
    let comment = commands.app_user_field(user.user_id, COMMENT_FIELD).await.map_err(drop)?;
    Ok(users::identity(user, coverage, login, comment, ctx.session.ip, ctx.state.commands.now()))
}

/// Links the license `text` to `user`, binding the session's client id, and waits until the
/// model shows it (so the next packet sees the license).
async fn link(ctx: &Ctx<'_>, app: &App, user: &AppUser, text: &str, init: &Initialized) -> Result<(), u16> {
    let key = linkable_for(ctx, app, user, text, &init.client_id)?;
    let actor = licensd_commands::Actor::Client;
    let commands = &ctx.state.commands;
    let linked = commands.link_license_to_user(app.app_id, user.user_id, &key, Some(init.client_id.clone()), &actor);
    let position = linked.await.map_err(|e| refusal(&e))?;
    crate::v1::visible(ctx.state, position).await;
    Ok(())
}

/// [`linkable`], except that a license already linked to this very user links again (a no-op).
fn linkable_for(ctx: &Ctx<'_>, app: &App, user: &AppUser, text: &str, client_id: &str) -> Result<LicenseKey, u16> {
    let mine = LicenseKey::parse(text)
        .ok()
        .and_then(|key| ctx.state.hot.license(&key))
        .filter(|l| l.app_id == app.app_id && l.extras.linked_user == Some(user.user_id));
    match mine {
        Some(license) => Ok(license.key),
        None => linkable(ctx, app, text, client_id),
    }
}

/// Packet 4: authorized by credentials only (else 3).
pub async fn link_license(ctx: &Ctx<'_>, id: PacketId, body: &Map<String, Value>) -> Result<Reply, Close> {
    let text = string_field(body, "license")?;
    let (init, account) = {
        let state = ctx.session.state();
        (state.init.clone(), state.account.clone())
    };
    let Some(init) = init else { return Err(Close::NotInitialized) };
    let length = text.chars().count();
    if length < *LICENSE_CHARS.start() {
        return Ok(status(id, LICENSE_TOO_SHORT));
    }
    if length > *LICENSE_CHARS.end() {
        return Ok(status(id, LICENSE_TOO_LONG));
    }
    let Some(account) = account else { return Ok(status(id, NOT_AUTHORIZED)) };
    let Some(user) = ctx.live.authorized_user(ctx.state, ctx.session) else { return Ok(status(id, NOT_AUTHORIZED)) };
    let Some(app) = ctx.state.hot.app(init.app_id) else { return Ok(status(id, INTERNAL_ERROR)) };
    if let Err(code) = link(ctx, &app, &user, text, &init).await {
        return Ok(status(id, code));
    }
    // The coverage may have grown: the expiry timer follows the best license now.
    if user.license_required {
        let coverage = users::coverage(ctx.state, &user, &init.client_id, ctx.state.commands.now());
        let generation = ctx.live.next_generation();
        match ctx.session.state().account.as_mut() {
            Some(current) if current.generation == account.generation => current.generation = generation,
            _ => return Ok(status(id, OK)),
        }
        ctx.session.timers.notify_waiters();
        ctx.live.arm_expiry(ctx.session, generation, coverage.expires_at);
    }
    Ok(status(id, OK))
}

/// Packet 16: the user as they are now; 203 (with the payload) without a needed valid license;
/// 3 when not authorized by credentials, or the user was deleted or blacklisted meanwhile.
pub async fn current(ctx: &Ctx<'_>, id: PacketId) -> Result<Reply, Close> {
    let Some(user) = ctx.live.authorized_user(ctx.state, ctx.session) else { return Ok(status(id, NOT_AUTHORIZED)) };
    let client_id = ctx.session.state().init.as_ref().map(|i| i.client_id.clone()).unwrap_or_default();
    let coverage = users::coverage(ctx.state, &user, &client_id, ctx.state.commands.now());
    let Ok(fields) = identity_of(ctx, &user, &coverage).await else { return Ok(status(id, INTERNAL_ERROR)) };
    Ok(answer(id, if coverage.valid { OK } else { NO_VALID_LICENSES }, fields))
}
