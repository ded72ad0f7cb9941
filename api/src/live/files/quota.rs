//! The daily byte quota per identity (status 302 FileStorageQuotaExceeded): bytes delivered to
//! one license, app user or (unauthorized, for public files) client id of an app per UTC day.
//! Each charge is decided inside the map's entry lock, so concurrent transfers of one identity
//! never together pass the quota. Kept in memory: a restart or another node starts from zero
//! (README, "Known limits").

use dashmap::DashMap;
use licensd_domain::AppId;
use std::sync::atomic::{AtomicI64, Ordering};

#[derive(Debug, Clone, Copy)]
struct Usage {
    day: i64,
    bytes: u64,
}

pub struct DailyQuota {
    /// 0: no quota.
    limit: u64,
    used: DashMap<(AppId, String), Usage>,
    /// The day the map last dropped other days' entries.
    swept: AtomicI64,
}

/// The UTC day of a Unix time in seconds.
pub fn day_of(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(86_400)
}

impl DailyQuota {
    pub fn new(limit: u64) -> Self {
        Self { limit, used: DashMap::new(), swept: AtomicI64::new(i64::MIN) }
    }

    /// Bytes the identity may still receive today; `u64::MAX` without a quota.
    pub fn remaining(&self, app_id: AppId, identity: &str, day: i64) -> u64 {
        if self.limit == 0 {
            return u64::MAX;
        }
        let used = self.used.get(&(app_id, identity.to_string())).filter(|u| u.day == day).map_or(0, |u| u.bytes);
        self.limit.saturating_sub(used)
    }

    /// Counts `bytes` against today's quota; `false` (nothing counted) when they would pass it.
    pub fn charge(&self, app_id: AppId, identity: &str, bytes: u64, day: i64) -> bool {
        if self.limit == 0 {
            return true;
        }
        self.sweep(day);
        let mut usage = self.used.entry((app_id, identity.to_string())).or_insert(Usage { day, bytes: 0 });
        if usage.day != day {
            *usage = Usage { day, bytes: 0 };
        }
        if usage.bytes.saturating_add(bytes) > self.limit {
            return false;
        }
        usage.bytes += bytes;
        true
    }

    /// Once per day, forgets the identities of earlier days (the map holds today's only).
    fn sweep(&self, day: i64) {
        let last = self.swept.load(Ordering::Acquire);
        if last < day && self.swept.compare_exchange(last, day, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.used.retain(|_, usage| usage.day >= day);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// 8 threads charge 1,000-byte pieces for one identity against a 1,000,000-byte quota, far
    /// more than it holds: exactly 1,000 pieces are granted, and another identity is untouched.
    #[test]
    fn concurrent_charges_of_one_identity_never_pass_the_quota() {
        let quota = Arc::new(DailyQuota::new(1_000_000));
        let app = AppId(uuid::Uuid::new_v4());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let quota = quota.clone();
                std::thread::spawn(move || (0..500).filter(|_| quota.charge(app, "L:key", 1_000, 20_000)).count())
            })
            .collect();
        let granted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(granted, 1_000);
        assert_eq!(quota.remaining(app, "L:key", 20_000), 0);
        assert!(!quota.charge(app, "L:key", 1, 20_000));
        assert_eq!(quota.remaining(app, "L:other", 20_000), 1_000_000);
        // The next day starts from zero, and the sweep forgets yesterday's entries.
        assert!(quota.charge(app, "L:other", 10, 20_001));
        assert_eq!(quota.remaining(app, "L:key", 20_001), 1_000_000);
        assert_eq!(quota.used.len(), 1);
        assert_eq!(DailyQuota::new(0).remaining(app, "x", 1), u64::MAX, "0 is no quota");
    }
}
