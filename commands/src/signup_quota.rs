//! The per-IP quota of sign-ups without a license (Blazeauth: 3 per IP per 24 h, status 5 with
//! `retry_after`), kept in the database so a restart does not reset it.
//!
//! Each subject (a keyed digest of app and IP, never the address) has `limit` slot rows; a
//! sign-up takes a slot whose last use is older than the window with one atomic upsert, so
//! concurrent sign-ups from one IP cannot take more slots than there are.

use crate::CommandError;
use chrono::{DateTime, Utc};
use licensd_store::{Statement, Store};
use std::time::Duration;

/// $1 subject, $2 slot, $3 now (ms), $4 window (ms). Returns a row only when the slot was taken.
const TAKE: &str = "INSERT INTO app_user_signups (subject, slot, used_at) VALUES ($1, $2, $3)
     ON CONFLICT (subject, slot) DO UPDATE SET used_at = $3
     WHERE app_user_signups.used_at + $4 <= $3
     RETURNING CAST(slot AS TEXT)";

/// Gives a slot back (the sign-up it was taken for failed). $1 subject, $2 slot, $3 used_at.
const GIVE_BACK: &str = "DELETE FROM app_user_signups WHERE subject = $1 AND slot = $2 AND used_at = $3";

/// $1 subject.
const OLDEST: &str = "SELECT CAST(MIN(used_at) AS TEXT) FROM app_user_signups WHERE subject = $1";

/// Rows whose use has aged out. $1 now (ms) minus the window.
const PRUNE: &str = "DELETE FROM app_user_signups WHERE used_at <= $1";

#[derive(Debug, Clone)]
pub struct SignupQuota {
    store: Store,
    limit: u32,
    window: Duration,
}

/// A slot held for one sign-up; give it back if the sign-up fails.
#[derive(Debug, Clone)]
pub struct Slot {
    subject: String,
    slot: i64,
    used_at: i64,
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 4)
}

impl SignupQuota {
    pub fn new(store: Store, limit: u32, window: Duration) -> Self {
        Self { store, limit, window }
    }

    /// Takes a slot for `subject`, or says in how many seconds the oldest one frees up.
    pub async fn take(&self, subject: &str, now: DateTime<Utc>) -> Result<Result<Slot, u64>, CommandError> {
        let now_ms = now.timestamp_millis();
        let window = millis(self.window);
        for slot in 0..i64::from(self.limit) {
            let take = Statement::new(TAKE, [subject.into(), slot.into(), now_ms.into(), window.into()]);
            if !self.store.execute_single(&take).await?.is_empty() {
                return Ok(Ok(Slot { subject: subject.to_string(), slot, used_at: now_ms }));
            }
        }
        let oldest = self.store.query_text(OLDEST, &[subject.into()]).await?;
        let oldest: i64 = oldest.into_iter().flatten().next().and_then(|t| t.parse().ok()).unwrap_or(now_ms);
        let wait_ms = (oldest + window - now_ms).max(0);
        Ok(Err(u64::try_from((wait_ms + 999) / 1000).unwrap_or(0).max(1)))
    }

    pub async fn give_back(&self, slot: Slot) -> Result<(), CommandError> {
        let give = Statement::new(GIVE_BACK, [slot.subject.into(), slot.slot.into(), slot.used_at.into()]);
        self.store.execute(&[give]).await?;
        Ok(())
    }

    /// Deletes uses older than the window; returns how many.
    pub async fn prune(&self, now: DateTime<Utc>) -> Result<u64, CommandError> {
        let before = now.timestamp_millis() - millis(self.window);
        Ok(self.store.execute(&[Statement::new(PRUNE, [before.into()])]).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use licensd_store::testing::on_both_backends;

    async fn three_a_day_then_retry_after(store: Store) {
        let quota = SignupQuota::new(store, 3, Duration::from_secs(86_400));
        let at = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let first = quota.take("ip", at(0)).await.unwrap().unwrap();
        quota.take("ip", at(10)).await.unwrap().unwrap();
        quota.take("ip", at(20)).await.unwrap().unwrap();
        assert_eq!(quota.take("ip", at(30)).await.unwrap().unwrap_err(), 86_370, "until the oldest ages out");
        assert!(quota.take("other", at(30)).await.unwrap().is_ok(), "per subject");
        quota.give_back(first).await.unwrap();
        assert!(quota.take("ip", at(31)).await.unwrap().is_ok(), "a failed sign-up gives its slot back");
        assert!(quota.take("ip", at(32)).await.unwrap().is_err());
        assert!(quota.take("ip", at(86_410)).await.unwrap().is_ok(), "a day later the slot is free");
    }

    async fn concurrent_sign_ups_take_at_most_the_limit(store: Store) {
        let quota = SignupQuota::new(store, 3, Duration::from_secs(86_400));
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let tries: Vec<_> = (0..20)
            .map(|_| {
                let quota = quota.clone();
                tokio::spawn(async move { quota.take("burst", now).await.unwrap().is_ok() })
            })
            .collect();
        let mut taken = 0;
        for attempt in tries {
            taken += usize::from(attempt.await.unwrap());
        }
        assert_eq!(taken, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn signup_quota_allows_three_a_day_then_says_when() {
        on_both_backends(three_a_day_then_retry_after).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn signup_quota_holds_under_a_concurrent_burst() {
        on_both_backends(concurrent_sign_ups_take_at_most_the_limit).await;
    }
}
