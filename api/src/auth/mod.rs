//! The public auth surface the official SDKs call: `/auth/validate`, `/auth/heartbeat`,
//! `/auth/selfban`, `/auth/offline/activate`. Reads come from the in-memory model only; state
//! changes are appended (durably) before the response says so. PROTOCOL.md is the byte contract.

mod activate;
mod body;
mod envelope;
mod error;
mod heartbeat;
mod hotpath;
mod keyring;
pub(crate) mod limits;
mod selfban;
mod session;
pub mod token;
mod validate;

pub(crate) use activate::license_file;
pub use error::{AuthError, Refusal};
pub use limits::RateLimiter;
pub(crate) use selfban::apply as record_self_ban;
pub(crate) use validate::authenticate_and_bill;

use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::routing::post;
use axum::Router;
use dashmap::DashMap;
use licensd_commands::Commands;
use licensd_domain::app::App;
use licensd_domain::LicenseKey;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits and session lifetimes of the auth endpoints. The defaults are the documented ones.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub validate_per_ip: u32,
    pub validate_per_key: u32,
    /// `0` (the default) means heartbeats are not limited per key: the docs say
    /// `/auth/heartbeat` is never rate-limited at the application layer.
    pub heartbeat_per_key: u32,
    pub selfban_per_ip: u32,
    pub selfban_per_key: u32,
    /// Most entries self-bans may add to one app's blacklists (the merchant's lists apart).
    pub selfban_max_entries: usize,
    /// Validations and heartbeats being served at once; beyond it they are shed at once with
    /// 429 `rate_limited` (the SDKs retry those after 2 s and 5 s) instead of queueing.
    pub max_in_flight: usize,
    pub limit_window: Duration,
    pub default_ttl: i64,
    pub min_ttl: i64,
    pub max_ttl: i64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            validate_per_ip: 30,
            validate_per_key: 5,
            heartbeat_per_key: 0,
            selfban_per_ip: 10,
            selfban_per_key: 3,
            selfban_max_entries: 5_000,
            max_in_flight: 256,
            limit_window: Duration::from_secs(60),
            default_ttl: 86_400,
            min_ttl: 3_600,
            max_ttl: 604_800,
        }
    }
}

impl AuthConfig {
    pub fn clamp_ttl(&self, requested: Option<i64>) -> i64 {
        requested.unwrap_or(self.default_ttl).clamp(self.min_ttl, self.max_ttl)
    }
}

/// Everything the auth handlers keep between requests.
pub struct AuthRuntime {
    pub config: AuthConfig,
    validate_ip: RateLimiter,
    validate_key: RateLimiter,
    /// `None` unless an operator opted in to a per-key heartbeat limit.
    heartbeat_key: Option<RateLimiter>,
    selfban_ip: RateLimiter,
    selfban_key: RateLimiter,
    keyring: keyring::Keyring,
    tokens: token::TokenKey,
    locks: hotpath::LicenseLocks,
    /// Successful heartbeats per license since its last billing (lost on restart: at most
    /// nine unbilled heartbeats per license and restart).
    heartbeats: DashMap<LicenseKey, u32>,
    in_flight: Arc<Semaphore>,
    /// Requests shed because `max_in_flight` were being served.
    pub shed: AtomicU64,
}

impl AuthRuntime {
    pub fn new(commands: &Commands, config: AuthConfig) -> Self {
        let limiter = |limit| RateLimiter::new(limit, config.limit_window);
        Self {
            validate_ip: limiter(config.validate_per_ip),
            validate_key: limiter(config.validate_per_key),
            heartbeat_key: (config.heartbeat_per_key > 0).then(|| limiter(config.heartbeat_per_key)),
            selfban_ip: limiter(config.selfban_per_ip),
            selfban_key: limiter(config.selfban_per_key),
            keyring: keyring::Keyring::new(commands.clone()),
            tokens: token::TokenKey::new(commands.master_key().derive_token("licensd session token v1")),
            locks: hotpath::LicenseLocks::new(),
            heartbeats: DashMap::new(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            shed: AtomicU64::new(0),
            config,
        }
    }
}

impl AuthRuntime {
    /// A slot among the requests served at once, or `None` (counted) when all are taken.
    fn admit_request(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.in_flight.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.shed.fetch_add(1, Ordering::Relaxed);
        }
        permit
    }
}

/// Serves `request` if a slot is free; otherwise sheds it at once (overload must not queue).
async fn admitted(
    state: &AppState,
    serve: impl std::future::Future<Output = axum::response::Response>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.auth.admit_request() {
        Some(_slot) => serve.await,
        None => {
            let mut response = AuthError::RateLimited.into_response();
            response.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
            response
        }
    }
}

pub fn routes() -> Router<AppState> {
    let hot = Router::new()
        .route("/validate", post(validate::validate))
        .route("/heartbeat", post(heartbeat::heartbeat))
        .layer(axum::middleware::from_fn(in_hot_path_scope));
    Router::new()
        .merge(hot)
        .route("/selfban", post(selfban::selfban))
        .route("/offline/activate", post(activate::activate))
}

/// Marks validate and heartbeat as hot-path work, so any SQL read they cause is counted.
async fn in_hot_path_scope(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    licensd_store::hot_path_scope(next.run(request)).await
}

/// The caller's address, as resolved at the edge (the socket's peer, or what a trusted proxy
/// says; `None` only for in-process requests in tests).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    pub(crate) fn limit_key(self) -> String {
        self.0.map_or_else(|| "unknown".to_string(), |ip| ip.to_string())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(crate::client_ip::of(&parts.extensions)))
    }
}

/// What validate and offline activation both carry: app credentials, key, machine, nonce.
pub(crate) struct LicenseRequest {
    pub key: LicenseKey,
    pub hwid: String,
    pub nonce: String,
}

/// Admission shared by validate and offline activation, in the documented order: per-IP and
/// per-key limits, app credentials, app enabled, security lists, key format. Returns the app,
/// the request, and the lower of the two remaining rate-limit quotas.
fn admit(
    state: &AppState,
    ip: ClientIp,
    fields: &mut body::Fields,
) -> Result<(Arc<App>, LicenseRequest, u32), Refusal> {
    let app_id = fields.string("appId");
    let secret = fields.string("appSecret");
    let key = fields.string("licenseKey");
    let hwid = fields.string("hwid");
    let nonce = fields.string("nonce");
    fields.check()?;
    let auth = &state.auth;
    let ip_left = auth.validate_ip.check_ip(ip.0).ok_or(AuthError::RateLimited)?;
    // The app first: a caller without the app's credentials must not spend a license's budget.
    let app = authenticate_app(state, &app_id, &secret)?;
    let key_left = auth.validate_key.check_folded(&key).ok_or(AuthError::RateLimited)?;
    ensure_enabled(state, &app)?;
    if !app.lists.allows(ip.0, &hwid) {
        return Err(AuthError::Blocked.into());
    }
    let key = LicenseKey::parse(&key).map_err(|_| AuthError::InvalidKey)?;
    Ok((app, LicenseRequest { key, hwid, nonce }, ip_left.min(key_left)))
}

/// The app, authenticated by id and secret (shared with the model: nothing is copied).
fn authenticate_app(state: &AppState, app_id: &str, secret: &str) -> Result<Arc<App>, AuthError> {
    let app = app_id.parse().ok().and_then(|id| state.hot.app(id)).ok_or(AuthError::InvalidApp)?;
    if !state.auth.keyring.secret_matches(&app, secret)? {
        return Err(AuthError::InvalidApp);
    }
    Ok(app)
}

/// A disabled app, or an app of a suspended account, authenticates nobody.
pub(crate) fn ensure_enabled(state: &AppState, app: &App) -> Result<(), AuthError> {
    let suspended = state.hot.account_suspended(app.account_id).unwrap_or(true);
    if app.disabled || suspended {
        Err(AuthError::AppDisabled)
    } else {
        Ok(())
    }
}

/// The owner has at least `credits` left (less what in-flight requests hold) and the app stays
/// under its burn caps. `hotpath::commit` holds the credits before appending.
fn ensure_credits(
    state: &AppState,
    app: &App,
    credits: u64,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), AuthError> {
    state.hot.check_credits(app.account_id, app.app_id, credits, now).map_err(refused_credits)
}

fn refused_credits(refusal: licensd_projections::CreditRefusal) -> AuthError {
    match refusal {
        licensd_projections::CreditRefusal::NoCredits => AuthError::NoCredits,
        licensd_projections::CreditRefusal::BurnCapReached => AuthError::AppBurnCapReached,
    }
}
