//! The end-user self-service portal: sign in with license key + email and a 6-digit code sent by
//! email, then see the license and reset bound machines inside the app's policy.
//!
//! The challenge answer never depends on whether the key exists or the email matches: the
//! lookup and the email run after the response, in a task of their own.

mod challenge;
mod handlers;

use crate::auth::limits::RateLimiter;
use crate::signed::Signer;
use crate::AppState;
use axum::routing::{get, post};
use axum::Router;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct PortalConfig {
    /// How long a code can be used.
    pub challenge_ttl: Duration,
    /// Wrong codes before a challenge is spent.
    pub max_guesses: u32,
    pub session_ttl: Duration,
    /// Challenges per client IP, and per license key, per `rate_window`.
    pub challenges_per_ip: u32,
    pub challenges_per_key: u32,
    /// Code checks per client IP per `rate_window`.
    pub sessions_per_ip: u32,
    pub rate_window: Duration,
    /// Sends the codes; without it codes cannot be delivered (logged).
    pub mailer: Option<licensd_workers::commerce::mailer::Mailer>,
}

impl Default for PortalConfig {
    fn default() -> Self {
        Self {
            challenge_ttl: Duration::from_secs(10 * 60),
            max_guesses: 5,
            session_ttl: Duration::from_secs(3600),
            challenges_per_ip: 10,
            challenges_per_key: 5,
            sessions_per_ip: 30,
            rate_window: Duration::from_secs(15 * 60),
            mailer: None,
        }
    }
}

pub struct Portal {
    challenges: challenge::Challenges,
    sessions: Signer,
    per_ip: RateLimiter,
    per_key: RateLimiter,
    code_checks: RateLimiter,
    config: PortalConfig,
}

impl Portal {
    pub fn new(store: licensd_store::Store, master_key: &licensd_commands::MasterKey, config: PortalConfig) -> Self {
        Self {
            challenges: challenge::Challenges::new(
                store,
                master_key.derive_token("portal-code"),
                config.challenge_ttl,
                config.max_guesses,
            ),
            sessions: Signer::new(master_key.derive_token("portal-session")),
            per_ip: RateLimiter::new(config.challenges_per_ip.max(1), config.rate_window),
            per_key: RateLimiter::new(config.challenges_per_key.max(1), config.rate_window),
            code_checks: RateLimiter::new(config.sessions_per_ip.max(1), config.rate_window),
            config,
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(handlers::page))
        .route("/challenges", post(handlers::challenge))
        .route("/sessions", post(handlers::session))
        .route("/me", get(handlers::me))
        .route("/reset", post(handlers::reset))
}
