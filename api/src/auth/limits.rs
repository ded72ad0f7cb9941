//! Per-minute request limits (per IP, per license key), kept in memory. A sliding window
//! estimated from the current and previous fixed windows: smooth at window edges, O(1) state.

use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Window {
    index: u64,
    current: u32,
    previous: u32,
}

#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    epoch: Instant,
    buckets: DashMap<String, Window>,
    checks: AtomicU64,
}

/// Entries untouched for two windows are swept after this many checks.
const SWEEP_EVERY: u64 = 4096;

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self { limit, window, epoch: Instant::now(), buckets: DashMap::new(), checks: AtomicU64::new(0) }
    }

    /// Counts a request for `key` and returns how many remain; `None` when over the limit (and
    /// then it is not counted).
    pub fn check(&self, key: &str) -> Option<u32> {
        let elapsed = self.epoch.elapsed();
        let window_ms = self.window.as_millis().max(1) as u64;
        let index = elapsed.as_millis() as u64 / window_ms;
        let into_window = (elapsed.as_millis() as u64 % window_ms) as f64 / window_ms as f64;
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.buckets.retain(|_, w| w.index + 1 >= index);
        }
        let mut entry = self.buckets.entry(key.to_string()).or_insert(Window { index, current: 0, previous: 0 });
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
}
