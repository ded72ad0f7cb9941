//! Per-minute request limits (per IP, per license key), kept in memory. A sliding window
//! estimated from the current and previous fixed windows: smooth at window edges, O(1) state.
//!
//! Buckets are keyed by a fixed-size [`LimitKey`] built on the stack, so counting a request
//! allocates nothing (only a new bucket does, inside the map).

use dashmap::DashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Window {
    index: u64,
    current: u32,
    previous: u32,
}

/// Bytes of a key kept as they are; longer keys (never a valid license key or IP) are hashed.
const INLINE: usize = 30;

/// What a limit counts by: up to [`INLINE`] bytes of text or an IP address, kept inline; a
/// longer text by a keyed 128-bit digest of it (a collision would need two such texts to
/// collide under the limiter's own random key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct LimitKey {
    /// 0..=INLINE: text of that length; `IP`: an address; `DIGEST`: a hashed long text.
    kind: u8,
    bytes: [u8; INLINE],
}

const IP: u8 = u8::MAX;
const DIGEST: u8 = u8::MAX - 1;
const UNKNOWN_IP: &str = "unknown";

#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    epoch: Instant,
    buckets: DashMap<LimitKey, Window>,
    /// Keys the digest of long texts (see [`LimitKey`]).
    hasher: std::collections::hash_map::RandomState,
    checks: AtomicU64,
}

/// Entries untouched for two windows are swept after this many checks.
const SWEEP_EVERY: u64 = 4096;

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            epoch: Instant::now(),
            buckets: DashMap::new(),
            hasher: Default::default(),
            checks: AtomicU64::new(0),
        }
    }

    /// Counts a request for `key` and returns how many remain; `None` when over the limit (and
    /// then it is not counted).
    pub fn check(&self, key: &str) -> Option<u32> {
        self.count(self.text_key(key, false))
    }

    /// [`Self::check`] with ASCII letters of `key` folded to upper case (license keys).
    pub fn check_folded(&self, key: &str) -> Option<u32> {
        self.count(self.text_key(key, true))
    }

    /// [`Self::check`] by client address; all requests without one share a bucket.
    pub fn check_ip(&self, ip: Option<IpAddr>) -> Option<u32> {
        let key = match ip {
            Some(ip) => {
                let mut bytes = [0u8; INLINE];
                match ip {
                    IpAddr::V4(v4) => {
                        bytes[0] = 4;
                        bytes[1..5].copy_from_slice(&v4.octets());
                    }
                    IpAddr::V6(v6) => {
                        bytes[0] = 6;
                        bytes[1..17].copy_from_slice(&v6.octets());
                    }
                }
                LimitKey { kind: IP, bytes }
            }
            None => self.text_key(UNKNOWN_IP, false),
        };
        self.count(key)
    }

    fn text_key(&self, text: &str, fold: bool) -> LimitKey {
        let mut bytes = [0u8; INLINE];
        if text.len() <= INLINE {
            for (slot, b) in bytes.iter_mut().zip(text.as_bytes()) {
                *slot = if fold { b.to_ascii_uppercase() } else { *b };
            }
            return LimitKey { kind: text.len() as u8, bytes };
        }
        // Two independent 64-bit halves of the keyed hash of the (folded) text.
        for (half, salt) in [(0usize, 0u8), (8, 1)] {
            let mut hasher = self.hasher.build_hasher();
            std::hash::Hasher::write_u8(&mut hasher, salt);
            for b in text.as_bytes() {
                std::hash::Hasher::write_u8(&mut hasher, if fold { b.to_ascii_uppercase() } else { *b });
            }
            let digest = std::hash::Hasher::finish(&hasher);
            bytes[half..half + 8].copy_from_slice(&digest.to_le_bytes());
        }
        LimitKey { kind: DIGEST, bytes }
    }

    fn count(&self, key: LimitKey) -> Option<u32> {
        let elapsed = self.epoch.elapsed();
        let window_ms = self.window.as_millis().max(1) as u64;
        let index = elapsed.as_millis() as u64 / window_ms;
        let into_window = (elapsed.as_millis() as u64 % window_ms) as f64 / window_ms as f64;
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.buckets.retain(|_, w| w.index + 1 >= index);
        }
        let mut entry = self.buckets.entry(key).or_insert(Window { index, current: 0, previous: 0 });
        let w = entry.value_mut();
        if w.index != index {
            w.previous = if w.index + 1 == index { w.current } else { 0 };
            w.current = 0;
            w.index = index;
        }
        let estimate = f64::from(w.previous) * (1.0 - into_window) + f64::from(w.current);
        if estimate + 1.0 > f64::from(self.limit) {
            return None;
        }
        w.current += 1;
        Some((f64::from(self.limit) - estimate - 1.0).floor().max(0.0) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_limit_then_refuses_per_key() {
        let limiter = RateLimiter::new(3, Duration::from_secs(60));
        assert_eq!(limiter.check("a"), Some(2));
        assert_eq!(limiter.check("a"), Some(1));
        assert_eq!(limiter.check("a"), Some(0));
        assert_eq!(limiter.check("a"), None);
        assert_eq!(limiter.check("b"), Some(2), "keys are independent");
    }

    #[test]
    fn a_new_window_frees_capacity() {
        let limiter = RateLimiter::new(2, Duration::from_millis(50));
        assert!(limiter.check("a").is_some() && limiter.check("a").is_some());
        assert!(limiter.check("a").is_none());
        std::thread::sleep(Duration::from_millis(120));
        assert!(limiter.check("a").is_some());
    }

    #[test]
    fn keys_are_told_apart_without_their_text() {
        let limiter = RateLimiter::new(1, Duration::from_secs(60));
        let long = "k".repeat(INLINE + 1);
        let longer = "k".repeat(INLINE + 2);
        for key in ["", "a", "A", &"k".repeat(INLINE), &long, &longer] {
            assert_eq!(limiter.check(key), Some(0), "{key:?} has its own bucket");
        }
        assert_eq!(limiter.check(&long), None, "a long key is counted by its digest");
        assert_eq!(limiter.check_folded("a"), None, "folded to the bucket of \"A\"");
        assert_eq!(limiter.check_folded(&long.to_uppercase()), Some(0), "folded long keys differ from unfolded");
        assert_eq!(limiter.check_folded(&long), None, "and fold alike");
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(limiter.check_ip(Some(v4)), Some(0));
        assert_eq!(limiter.check_ip(Some(mapped)), Some(0), "an IPv6 address is not its IPv4 look-alike");
        assert_eq!(limiter.check_ip(Some(v4)), None);
        assert_eq!(limiter.check("10.0.0.1"), Some(0), "an address is not the text of it");
        assert_eq!(limiter.check_ip(None), Some(0));
        assert_eq!(limiter.check_ip(None), None, "requests without an address share one bucket");
    }

    #[test]
    fn concurrent_checks_never_count_past_the_limit() {
        let limiter = std::sync::Arc::new(RateLimiter::new(1000, Duration::from_secs(3600)));
        let allowed: u32 = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    let limiter = limiter.clone();
                    s.spawn(move || (0..500).filter(|_| limiter.check_folded("abcd-efgh").is_some()).count() as u32)
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(allowed, 1000, "exactly the limit is let through across threads");
        assert_eq!(limiter.check("ABCD-EFGH"), None);
    }
}
