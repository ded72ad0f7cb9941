//! Dashboard sessions: a signed cookie (`HttpOnly`, `SameSite=Strict`, `Secure` unless turned
//! off for plain-HTTP development), a CSRF token derived from it, and brute-force lockout (kept
//! in the database: `licensd_commands::lockout`).

use crate::auth::limits::RateLimiter;
use crate::signed::{same, Signer};
use axum::http::HeaderValue;
use chrono::{DateTime, Utc};
use licensd_commands::lockout::{Lockout, LockoutPolicy};
use licensd_domain::AccountId;
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const COOKIE: &str = "licensd_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Debug, Clone)]
pub struct DashboardConfig {
    pub session_ttl: Duration,
    /// Mark the cookie `Secure` (browsers then send it only over HTTPS, or to localhost).
    pub secure_cookie: bool,
    /// Sign-ins checked per email (inside `failure_window`) before the email is locked.
    pub max_failures: u32,
    /// The first lock's length; each further lock of the email doubles it, up to `max_lockout`.
    pub lockout: Duration,
    /// Sign-in attempts per client IP per `lockout`.
    pub attempts_per_ip: u32,
    /// How long a failure counts towards a lock.
    pub failure_window: Duration,
    pub max_lockout: Duration,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookie: true,
            max_failures: 5,
            lockout: Duration::from_secs(15 * 60),
            attempts_per_ip: 30,
            failure_window: Duration::from_secs(15 * 60),
            max_lockout: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Claims {
    /// Account.
    a: AccountId,
    /// Credential generation: a new password ends older sessions.
    g: u32,
    /// Expiry, Unix seconds.
    e: i64,
}

pub struct DashboardAuth {
    sessions: Signer,
    csrf: Signer,
    pub config: DashboardConfig,
    /// Counts every attempt per email digest before the password is checked.
    pub lockout: Lockout,
    per_ip: RateLimiter,
    /// Verified when the email is unknown, so a miss costs what a wrong password costs.
    decoy_verifier: String,
}

impl DashboardAuth {
    pub fn new(master_key: &licensd_commands::MasterKey, store: licensd_store::Store, config: DashboardConfig) -> Self {
        let policy = LockoutPolicy {
            max_failures: config.max_failures.max(1),
            window: config.failure_window,
            base: config.lockout,
            max: config.max_lockout.max(config.lockout),
        };
        Self {
            sessions: Signer::new(master_key.derive_token("dashboard-session")),
            csrf: Signer::new(master_key.derive_token("dashboard-csrf")),
            lockout: Lockout::new(store, policy),
            per_ip: RateLimiter::new(config.attempts_per_ip.max(1), config.lockout),
            decoy_verifier: licensd_commands::password::hash_password("decoy password, never matches")
                .unwrap_or_default(),
            config,
        }
    }

    pub fn issue(&self, account_id: AccountId, generation: u32, now: DateTime<Utc>) -> String {
        let expires = now + chrono::Duration::from_std(self.config.session_ttl).unwrap_or_default();
        self.sessions.sign(&Claims { a: account_id, g: generation, e: expires.timestamp() })
    }

    /// The account of a live session token whose credential generation is still `generation_of`.
    pub fn verify(
        &self,
        token: &str,
        now: DateTime<Utc>,
        generation_of: impl Fn(AccountId) -> Option<u32>,
    ) -> Option<AccountId> {
        let claims: Claims = self.sessions.verify(token)?;
        (claims.e > now.timestamp() && generation_of(claims.a) == Some(claims.g)).then_some(claims.a)
    }

    pub fn csrf_token(&self, session: &str) -> String {
        self.csrf.tag(session.as_bytes())
    }

    pub fn csrf_ok(&self, session: &str, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| same(p, &self.csrf_token(session)))
    }

    pub fn set_cookie(&self, token: &str) -> HeaderValue {
        let secure = if self.config.secure_cookie { "; Secure" } else { "" };
        let max_age = self.config.session_ttl.as_secs();
        HeaderValue::from_str(&format!(
            "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
        ))
        .unwrap_or(HeaderValue::from_static(""))
    }

    pub fn clear_cookie(&self) -> HeaderValue {
        HeaderValue::from_static("licensd_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }

    pub fn allow_ip(&self, ip: &str) -> bool {
        self.per_ip.check(ip).is_some()
    }

    pub fn decoy_verifier(&self) -> &str {
        &self.decoy_verifier
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn auth() -> DashboardAuth {
        let key = licensd_commands::MasterKey::parse(&"22".repeat(32)).unwrap();
        let path = std::env::temp_dir().join(format!("licensd-session-{}.db", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", path.display());
        let store = licensd_store::Store::connect(&url, &licensd_store::StoreOptions::durable()).await.unwrap();
        DashboardAuth::new(&key, store, DashboardConfig::default())
    }

    #[tokio::test]
    async fn sessions_end_at_expiry_and_with_a_new_password() {
        let auth = auth().await;
        let account = AccountId::new();
        let now = Utc::now();
        let token = auth.issue(account, 1, now);
        assert_eq!(auth.verify(&token, now, |_| Some(1)), Some(account));
        assert_eq!(auth.verify(&token, now, |_| Some(2)), None);
        assert_eq!(auth.verify(&token, now + chrono::Duration::hours(13), |_| Some(1)), None);
        assert!(auth.csrf_ok(&token, Some(&auth.csrf_token(&token))));
        assert!(!auth.csrf_ok(&token, Some("guess")) && !auth.csrf_ok(&token, None));
    }
}
