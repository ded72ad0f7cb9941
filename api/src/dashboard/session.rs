//! Dashboard sessions: a signed cookie (`HttpOnly`, `SameSite=Strict`, `Secure` unless turned
//! off for plain-HTTP development), a CSRF token derived from it, and brute-force lockout.

use crate::auth::limits::RateLimiter;
use crate::signed::{same, Signer};
use axum::http::HeaderValue;
use chrono::{DateTime, Utc};
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
    /// Failed sign-ins per email inside `lockout` before the email is locked for `lockout`.
    pub max_failures: u32,
    pub lockout: Duration,
    /// Sign-in attempts per client IP per `lockout`.
    pub attempts_per_ip: u32,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookie: true,
            max_failures: 5,
            lockout: Duration::from_secs(15 * 60),
            attempts_per_ip: 30,
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
    failures: moka::sync::Cache<String, u32>,
    per_ip: RateLimiter,
    /// Verified when the email is unknown, so a miss costs what a wrong password costs.
    decoy_verifier: String,
}

impl DashboardAuth {
    pub fn new(master_key: &licensd_commands::MasterKey, config: DashboardConfig) -> Self {
        Self {
            sessions: Signer::new(master_key.derive("dashboard-session")),
            csrf: Signer::new(master_key.derive("dashboard-csrf")),
            failures: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(config.lockout).build(),
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

    pub fn locked(&self, email_digest: &str) -> bool {
        self.failures.get(email_digest).is_some_and(|n| n >= self.config.max_failures)
    }

    pub fn record_failure(&self, email_digest: &str) {
        let count = self.failures.get(email_digest).unwrap_or(0) + 1;
        self.failures.insert(email_digest.to_string(), count);
    }

    pub fn clear_failures(&self, email_digest: &str) {
        self.failures.invalidate(email_digest);
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

    fn auth() -> DashboardAuth {
        let key = licensd_commands::MasterKey::parse(&"22".repeat(32)).unwrap();
        DashboardAuth::new(&key, DashboardConfig { max_failures: 2, ..Default::default() })
    }

    #[test]
    fn sessions_end_at_expiry_and_with_a_new_password() {
        let auth = auth();
        let account = AccountId::new();
        let now = Utc::now();
        let token = auth.issue(account, 1, now);
        assert_eq!(auth.verify(&token, now, |_| Some(1)), Some(account));
        assert_eq!(auth.verify(&token, now, |_| Some(2)), None);
        assert_eq!(auth.verify(&token, now + chrono::Duration::hours(13), |_| Some(1)), None);
        assert!(auth.csrf_ok(&token, Some(&auth.csrf_token(&token))));
        assert!(!auth.csrf_ok(&token, Some("guess")) && !auth.csrf_ok(&token, None));
    }

    #[test]
    fn repeated_failures_lock_the_email() {
        let auth = auth();
        auth.record_failure("d");
        assert!(!auth.locked("d"));
        auth.record_failure("d");
        assert!(auth.locked("d") && !auth.locked("other"));
        auth.clear_failures("d");
        assert!(!auth.locked("d"));
    }
}
