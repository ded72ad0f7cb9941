//! The daily byte quota per identity (status 302 FileStorageQuotaExceeded): bytes delivered to
//! one license, app user or (unauthorized, for public files) client id of an app per UTC day.
//!
//! The counters are rows in the database (`file_quota_usage`, both backends), so a restart or
//! another node sharing the database goes on from the same count. A transfer does not write per
//! chunk: its [`Meter`] leases allowance in blocks (`LICENSD_FILE_QUOTA_LEASE_BYTES`, at most
//! what the transfer still has to send) with one atomic statement that never grants past the
//! quota, spends it chunk by chunk in memory, and gives back what it did not send when it ends.
//! So concurrent transfers of one identity, on any node, never together pass the quota; a crash
//! loses at most the unsent part of each running transfer's lease (counted as used that day).

use licensd_domain::AppId;
use licensd_store::{SqlValue, Statement, Store, StoreError};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// $1 app, $2 identity, $3 day, $4 wanted, $5 limit: grants `min(wanted, limit - used)` (never
/// negative) and returns it; the `SET` expressions read the row as it was.
const LEASE: &str = "INSERT INTO file_quota_usage (app_id, identity, day, used, granted)
     VALUES ($1, $2, $3, CASE WHEN $4 < $5 THEN $4 ELSE $5 END, CASE WHEN $4 < $5 THEN $4 ELSE $5 END)
     ON CONFLICT (app_id, identity, day) DO UPDATE SET
         used = CASE WHEN file_quota_usage.used + $4 <= $5 THEN file_quota_usage.used + $4
                     WHEN file_quota_usage.used < $5 THEN $5
                     ELSE file_quota_usage.used END,
         granted = CASE WHEN file_quota_usage.used + $4 <= $5 THEN $4
                        WHEN file_quota_usage.used < $5 THEN $5 - file_quota_usage.used
                        ELSE 0 END
     RETURNING CAST(granted AS TEXT)";

/// $1 app, $2 identity, $3 day, $4 bytes leased and not sent.
const GIVE_BACK: &str = "UPDATE file_quota_usage
     SET used = CASE WHEN used > $4 THEN used - $4 ELSE 0 END
     WHERE app_id = $1 AND identity = $2 AND day = $3";

const USED: &str = "SELECT CAST(used AS TEXT) FROM file_quota_usage WHERE app_id = $1 AND identity = $2 AND day = $3";

/// Rows of days before $1 (the quota is per day: they decide nothing any more).
const FORGET_BEFORE: &str = "DELETE FROM file_quota_usage WHERE day < $1";

/// Where a meter reads the time, in Unix seconds (the command side's clock).
pub type Now = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The UTC day of a Unix time in seconds.
pub fn day_of(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(86_400)
}

fn int(value: u64) -> SqlValue {
    SqlValue::from(i64::try_from(value).unwrap_or(i64::MAX))
}

/// The persisted quota: one per server.
#[derive(Debug)]
pub struct DailyQuota {
    /// 0: no quota.
    limit: u64,
    /// Allowance a transfer leases at once (at most what it still has to send).
    lease_bytes: u64,
    store: Store,
    /// The day earlier days' rows were last dropped.
    swept: AtomicI64,
}

/// Whose bytes and when: the key of one quota row.
#[derive(Debug, Clone)]
pub struct Holder {
    pub app_id: AppId,
    /// SHA-256 (hex) of the identity: the table holds no license key or client id.
    identity: String,
}

impl Holder {
    pub fn new(app_id: AppId, identity: &str) -> Self {
        Self { app_id, identity: hex::encode(Sha256::digest(identity.as_bytes())) }
    }

    fn key(&self, day: i64) -> [SqlValue; 3] {
        [self.app_id.to_string().into(), self.identity.clone().into(), day.into()]
    }
}

impl DailyQuota {
    pub fn new(store: Store, limit: u64, lease_bytes: u64) -> Self {
        Self { limit, lease_bytes: lease_bytes.max(1), store, swept: AtomicI64::new(i64::MIN) }
    }

    /// Bytes the identity may still receive on `day`; `u64::MAX` without a quota.
    pub async fn remaining(&self, holder: &Holder, day: i64) -> Result<u64, StoreError> {
        if self.limit == 0 {
            return Ok(u64::MAX);
        }
        let used = self.store.query_text(USED, &holder.key(day)).await?;
        let used = used.first().cloned().flatten().and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
        Ok(self.limit.saturating_sub(used))
    }

    /// Grants up to `wanted` bytes of `day`'s quota (fewer when less is left, 0 when none).
    async fn lease(&self, holder: &Holder, day: i64, wanted: u64) -> Result<u64, StoreError> {
        self.sweep(day).await;
        let [app, identity, day] = holder.key(day);
        let statement = Statement::new(LEASE, [app, identity, day, int(wanted), int(self.limit)]);
        let rows = self.store.execute_single(&statement).await?;
        let granted = rows.first().and_then(|row| row.first().cloned().flatten()).and_then(|t| t.parse::<u64>().ok());
        Ok(granted.unwrap_or(0))
    }

    async fn give_back(&self, holder: &Holder, day: i64, bytes: u64) -> Result<(), StoreError> {
        let [app, identity, day] = holder.key(day);
        self.store.execute_single(&Statement::new(GIVE_BACK, [app, identity, day, int(bytes)])).await.map(drop)
    }

    /// Once per day per process, drops earlier days' rows.
    async fn sweep(&self, day: i64) {
        let last = self.swept.load(Ordering::Acquire);
        if last < day && self.swept.compare_exchange(last, day, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            if let Err(error) = self.store.execute_single(&Statement::new(FORGET_BEFORE, [day.into()])).await {
                tracing::warn!(%error, "earlier days' file quota rows not dropped");
            }
        }
    }

    /// A meter for one transfer of `planned` bytes by `holder`; `now` tells the day.
    pub fn meter(self: &Arc<Self>, holder: Holder, planned: u64, now: Now) -> Meter {
        if self.limit == 0 {
            return Meter::unlimited();
        }
        Meter { allowance: 0, source: Some(Source { quota: Arc::clone(self), holder, day: None, planned, now }) }
    }
}

/// The outcome of charging one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    Granted,
    /// The day's quota is spent: the chunk is not sent (302).
    Spent,
    /// The database could not be asked (the transfer ends with an internal error, 6).
    Failed,
}

/// Where a metered transfer's allowance comes from.
struct Source {
    quota: Arc<DailyQuota>,
    holder: Holder,
    /// The day the allowance in hand was leased from.
    day: Option<i64>,
    /// Bytes the transfer has not charged yet (a lease never asks for more).
    planned: u64,
    now: Now,
}

/// One transfer's allowance: spent chunk by chunk in memory, leased from the persisted quota
/// when it runs short, and given back (what is left) when the meter is dropped.
pub struct Meter {
    allowance: u64,
    source: Option<Source>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter").field("allowance", &self.allowance).field("metered", &self.source.is_some()).finish()
    }
}

impl Meter {
    /// No quota: every chunk is granted.
    pub fn unlimited() -> Self {
        Self { allowance: u64::MAX, source: None }
    }

    /// A fixed allowance that is never refilled.
    pub fn fixed(bytes: u64) -> Self {
        Self { allowance: bytes, source: None }
    }

    /// Counts `bytes` against the quota; a refused chunk counts nothing.
    pub async fn charge(&mut self, bytes: u64) -> Charge {
        if let Some(source) = &mut self.source {
            let today = day_of((source.now)());
            if source.day.is_some_and(|day| day != today) {
                // A new day: what is left of yesterday's lease goes back to yesterday.
                let (quota, holder, day) = (source.quota.clone(), source.holder.clone(), source.day);
                if let (Some(day), left @ 1..) = (day, std::mem::take(&mut self.allowance)) {
                    if let Err(error) = quota.give_back(&holder, day, left).await {
                        tracing::warn!(%error, "a file transfer's unused quota was not given back");
                    }
                }
                source.day = None;
            }
        }
        if self.allowance >= bytes {
            self.spend(bytes);
            return Charge::Granted;
        }
        let Some(source) = &mut self.source else { return Charge::Spent };
        let today = day_of((source.now)());
        let need = bytes - self.allowance;
        let wanted = need.max(source.quota.lease_bytes.min(source.planned.saturating_sub(self.allowance)));
        match source.quota.lease(&source.holder, today, wanted).await {
            Ok(granted) => {
                source.day = Some(today);
                self.allowance += granted;
                if self.allowance >= bytes {
                    self.spend(bytes);
                    Charge::Granted
                } else {
                    Charge::Spent
                }
            }
            Err(error) => {
                tracing::warn!(%error, "the file quota could not be leased");
                Charge::Failed
            }
        }
    }

    fn spend(&mut self, bytes: u64) {
        if let Some(source) = &mut self.source {
            self.allowance -= bytes;
            source.planned = source.planned.saturating_sub(bytes);
        } else if self.allowance != u64::MAX {
            self.allowance -= bytes;
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        let Some(source) = self.source.take() else { return };
        let (left, Some(day)) = (self.allowance, source.day) else { return };
        if left == 0 {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            if let Err(error) = source.quota.give_back(&source.holder, day, left).await {
                tracing::warn!(%error, "a file transfer's unused quota was not given back");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use licensd_store::testing::on_both_backends;

    fn clock(seconds: i64) -> Now {
        Arc::new(move || seconds)
    }

    /// 8 tasks meter 1,000-byte chunks for one identity against a 1,000,000-byte quota, far more
    /// than it holds, through two quota objects (two nodes) on one database: exactly 1,000
    /// chunks are granted; what leases held back is given back; another identity is untouched,
    /// and the next day starts from zero.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_meters_of_one_identity_never_pass_the_quota() {
        on_both_backends(|store| async move {
            let nodes = [
                Arc::new(DailyQuota::new(store.clone(), 1_000_000, 64_000)),
                Arc::new(DailyQuota::new(store.clone(), 1_000_000, 64_000)),
            ];
            let app = AppId(uuid::Uuid::new_v4());
            let day = 20_000 * 86_400;
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    let quota = nodes[i % 2].clone();
                    tokio::spawn(async move {
                        let mut meter = quota.meter(Holder::new(app, "license:key"), 500_000, clock(day));
                        let mut granted = 0;
                        for _ in 0..500 {
                            if meter.charge(1_000).await == Charge::Granted {
                                granted += 1;
                            }
                        }
                        granted
                    })
                })
                .collect();
            let mut granted = 0;
            for task in tasks {
                granted += task.await.unwrap();
            }
            assert_eq!(granted, 1_000);
            let holder = Holder::new(app, "license:key");
            let mut left = u64::MAX;
            for _ in 0..100 {
                left = nodes[0].remaining(&holder, 20_000).await.unwrap();
                if left == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            assert_eq!(left, 0);
            let other = Holder::new(app, "license:other");
            assert_eq!(nodes[1].remaining(&other, 20_000).await.unwrap(), 1_000_000);
            assert_eq!(nodes[1].remaining(&holder, 20_001).await.unwrap(), 1_000_000, "the next day starts over");

            // A meter that stops early gives back what it leased and did not send.
            let fresh = Holder::new(app, "user:u1");
            let mut meter = nodes[0].meter(fresh.clone(), 10_000_000, clock(day));
            assert_eq!(meter.charge(1_000).await, Charge::Granted);
            drop(meter);
            let mut left = 0;
            for _ in 0..100 {
                left = nodes[1].remaining(&fresh, 20_000).await.unwrap();
                if left == 999_000 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            assert_eq!(left, 999_000, "the unsent part of the lease came back");
            assert_eq!(Arc::new(DailyQuota::new(store, 0, 1)).remaining(&fresh, 1).await.unwrap(), u64::MAX);
        })
        .await;
    }
}
