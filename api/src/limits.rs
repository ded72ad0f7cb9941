//! Token buckets for the Developer API: a burst allowance refilled at a sustained rate, per key.

use dashmap::DashMap;
use std::time::Instant;

pub struct TokenBuckets {
    burst: f64,
    per_second: f64,
    buckets: DashMap<String, (f64, Instant)>,
}

impl TokenBuckets {
    pub fn new(burst: u32, per_second: u32) -> Self {
        Self { burst: f64::from(burst.max(1)), per_second: f64::from(per_second), buckets: DashMap::new() }
    }

    /// Takes a token for `key` if one is left.
    pub fn allow(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut bucket = self.buckets.entry(key.to_string()).or_insert((self.burst, now));
        let (tokens, last) = *bucket;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.per_second).min(self.burst);
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            true
        } else {
            *bucket = (tokens, now);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_sustained_rate() {
        let buckets = TokenBuckets::new(3, 20);
        assert!((0..3).all(|_| buckets.allow("k")));
        assert!(!buckets.allow("k"));
        assert!(buckets.allow("other"));
        std::thread::sleep(std::time::Duration::from_millis(120));
        assert!(buckets.allow("k"), "refilled at 20/s");
    }
}
