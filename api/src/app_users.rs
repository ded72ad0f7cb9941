//! What end-user accounts need at run time beside the commands: their limits (README
//! "Configuration", `LICENSD_APP_USER_*`), the persisted sign-in softlocks (per user and per
//! client IP) and the persisted per-IP sign-up quota.

use licensd_commands::app_users::PasswordCost;
use licensd_commands::lockout::{Attempt, Lockout, LockoutPolicy};
use licensd_commands::signup_quota::SignupQuota;
use licensd_commands::{CommandError, Commands};
use licensd_domain::AppId;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct AppUsersConfig {
    /// Characters of a password (statuses 207 / 208); the protocol's decision: 6–128.
    pub password_chars: std::ops::RangeInclusive<usize>,
    pub password_cost: PasswordCost,
    /// Sign-ups without a license per client IP and app in `signup_window` (status 5).
    pub signups_per_ip: u32,
    pub signup_window: Duration,
    /// Sign-in softlock of one login.
    pub user_lockout: LockoutPolicy,
    /// Sign-in softlock of one client IP (all logins of the app together).
    pub ip_lockout: LockoutPolicy,
    /// Most users an app may have (status 603 beyond); `None`: no limit.
    pub max_users_per_app: Option<usize>,
    /// Argon2 verifications running at once (each holds its memory cost); more wait their turn,
    /// so a flood of sign-ins cannot take every core or the memory.
    pub max_concurrent_verifies: usize,
}

impl Default for AppUsersConfig {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self {
            password_chars: 6..=128,
            password_cost: PasswordCost::default(),
            signups_per_ip: 3,
            signup_window: Duration::from_secs(24 * 3600),
            user_lockout: LockoutPolicy { max_failures: 5, window: minutes(15), base: minutes(1), max: minutes(60) },
            ip_lockout: LockoutPolicy { max_failures: 30, window: minutes(15), base: minutes(1), max: minutes(60) },
            max_users_per_app: None,
            max_concurrent_verifies: std::thread::available_parallelism().map_or(2, usize::from),
        }
    }
}

pub struct AppUsersRuntime {
    pub config: AppUsersConfig,
    user_lockout: Lockout,
    ip_lockout: Lockout,
    quota: SignupQuota,
    verifies: tokio::sync::Semaphore,
}

/// How a sign-in attempt may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInGate {
    Verify,
    /// Refused unchecked; the seconds until the lock ends.
    Locked(u64),
}

impl AppUsersRuntime {
    pub fn new(commands: &Commands, config: AppUsersConfig) -> Self {
        let store = commands.store().clone();
        Self {
            user_lockout: Lockout::for_app_users(store.clone(), config.user_lockout.clone()),
            ip_lockout: Lockout::for_app_users(store.clone(), config.ip_lockout.clone()),
            quota: SignupQuota::new(store, config.signups_per_ip, config.signup_window),
            verifies: tokio::sync::Semaphore::new(config.max_concurrent_verifies.max(1)),
            config,
        }
    }

    fn user_subject(login_digest: &str) -> String {
        format!("u:{login_digest}")
    }

    /// The IP is personal data: subjects are keyed digests of app and address.
    fn ip_subject(commands: &Commands, app_id: AppId, ip: IpAddr) -> String {
        let digest = commands.master_key().keyed_digest("app-user-ip", &format!("{app_id}\n{}", ip.to_canonical()));
        format!("ip:{}", hex::encode(digest))
    }

    /// Counts a sign-in attempt on the login and on the IP before any verification: whichever
    /// is locked refuses it (an unknown login is counted like a known one).
    pub async fn sign_in_gate(
        &self,
        commands: &Commands,
        app_id: AppId,
        ip: IpAddr,
        login_digest: &str,
    ) -> Result<SignInGate, CommandError> {
        let now = commands.now();
        let by_ip = self.ip_lockout.attempt(&Self::ip_subject(commands, app_id, ip), now).await?;
        let by_user = self.user_lockout.attempt(&Self::user_subject(login_digest), now).await?;
        let until = [by_ip, by_user].into_iter().filter_map(|a| match a {
            Attempt::Locked { until } => Some(until),
            Attempt::Verify => None,
        });
        Ok(match until.max() {
            None => SignInGate::Verify,
            Some(until) => SignInGate::Locked(u64::try_from((until - now).num_seconds().max(1)).unwrap_or(1)),
        })
    }

    /// Checks `password` against `verifier` (a dummy of the same cost when `None`) on the
    /// blocking pool, at most `max_concurrent_verifies` at once.
    pub async fn verify(&self, password: String, verifier: Option<String>) -> bool {
        let Ok(_permit) = self.verifies.acquire().await else { return false };
        let cost = self.config.password_cost;
        let check = move || licensd_commands::app_users::verify_user_password(&cost, &password, verifier.as_deref());
        tokio::task::spawn_blocking(check).await.unwrap_or(false)
    }

    /// A correct password: the login's failures are forgotten; of the IP's, only this attempt is
    /// taken back (so one valid account cannot reset the count of guesses at others from the
    /// same address, and correct sign-ins of many users behind one address never lock it).
    pub async fn signed_in(
        &self,
        commands: &Commands,
        app_id: AppId,
        ip: IpAddr,
        login_digest: &str,
    ) -> Result<(), CommandError> {
        self.forget_login(login_digest).await?;
        self.ip_lockout.forgive_one(&Self::ip_subject(commands, app_id, ip)).await
    }

    /// Drops the login's softlock row (a correct password, or the user's erasure).
    pub async fn forget_login(&self, login_digest: &str) -> Result<(), CommandError> {
        self.user_lockout.succeeded(&Self::user_subject(login_digest)).await
    }

    /// Takes a sign-up slot of the IP, or the seconds until one frees up.
    pub async fn take_signup(
        &self,
        commands: &Commands,
        app_id: AppId,
        ip: IpAddr,
    ) -> Result<Result<licensd_commands::signup_quota::Slot, u64>, CommandError> {
        self.quota.take(&Self::ip_subject(commands, app_id, ip), commands.now()).await
    }

    pub async fn give_back(&self, slot: licensd_commands::signup_quota::Slot) {
        if let Err(e) = self.quota.give_back(slot).await {
            tracing::warn!(error = %e, "cannot give back a sign-up slot");
        }
    }
}
