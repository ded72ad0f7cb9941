//! Traffic limits of live sessions (websocket.md §14.9): a token bucket per session (JSON packets
//! and client pings count), a per-minute count per IP that blocks the IP for a while when crossed,
//! and a backoff per client IP + client_id after a session was closed for its rate.

use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A session's budget: `per_minute` actions as a burst, refilled at `per_minute` per minute.
#[derive(Debug)]
pub struct SessionBucket {
    tokens: f64,
    last: Instant,
}

impl SessionBucket {
    pub fn new(per_minute: u32, now: Instant) -> Self {
        Self { tokens: f64::from(per_minute), last: now }
    }

    /// Spends one action; `false` when the budget is exhausted.
    pub fn take(&mut self, per_minute: u32, now: Instant) -> bool {
        let capacity = f64::from(per_minute);
        let refill = now.duration_since(self.last).as_secs_f64() * capacity / 60.0;
        self.tokens = (self.tokens + refill).min(capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct IpWindow {
    started: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

/// Entries untouched for a while are swept after this many counts.
const SWEEP_EVERY: u64 = 4096;

pub struct IpLimits {
    per_minute: u32,
    block: Duration,
    backoff: Duration,
    windows: DashMap<IpAddr, IpWindow>,
    backoffs: DashMap<(IpAddr, String), Instant>,
    counted: AtomicU64,
}

impl IpLimits {
    pub fn new(per_minute: u32, block: Duration, backoff: Duration) -> Self {
        Self {
            per_minute,
            block,
            backoff,
            windows: DashMap::new(),
            backoffs: DashMap::new(),
            counted: AtomicU64::new(0),
        }
    }

    /// Counts one action from `ip`; `false` when this action crossed the limit (the IP is now
    /// blocked for the block time).
    pub fn count(&self, ip: IpAddr, now: Instant) -> bool {
        if self.counted.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep(now);
        }
        let mut window = self.windows.entry(ip).or_insert(IpWindow { started: now, count: 0, blocked_until: None });
        if now.duration_since(window.started) >= Duration::from_secs(60) {
            window.started = now;
            window.count = 0;
        }
        window.count = window.count.saturating_add(1);
        if window.count > self.per_minute && window.blocked_until.is_none_or(|until| until <= now) {
            window.blocked_until = Some(now + self.block);
            return false;
        }
        true
    }

    /// Whole seconds left of `ip`'s block, if it is blocked.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let until = self.windows.get(&ip)?.blocked_until?;
        seconds_left(until, now)
    }

    /// Starts the backoff of a client that was closed for its rate.
    pub fn start_backoff(&self, ip: IpAddr, client_id: &str, now: Instant) {
        self.backoffs.insert((ip, client_id.to_string()), now + self.backoff);
    }

    /// Whole seconds left of the backoff of `client_id` from `ip`, if one is running.
    pub fn backoff_left(&self, ip: IpAddr, client_id: &str, now: Instant) -> Option<u64> {
        let until = *self.backoffs.get(&(ip, client_id.to_string()))?;
        seconds_left(until, now)
    }

    fn sweep(&self, now: Instant) {
        let stale = Duration::from_secs(60);
        self.windows
            .retain(|_, w| now.duration_since(w.started) < stale || w.blocked_until.is_some_and(|until| until > now));
        self.backoffs.retain(|_, until| *until > now);
    }
}

fn seconds_left(until: Instant, now: Instant) -> Option<u64> {
    let left = until.checked_duration_since(now).filter(|d| !d.is_zero())?;
    Some(left.as_secs() + u64::from(left.subsec_nanos() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_bucket_refills_over_the_minute() {
        let now = Instant::now();
        let mut bucket = SessionBucket::new(3, now);
        assert!((0..3).all(|_| bucket.take(3, now)));
        assert!(!bucket.take(3, now));
        assert!(bucket.take(3, now + Duration::from_secs(20)), "one action back after a third of a minute");
    }

    #[test]
    fn crossing_the_ip_limit_blocks_the_ip_and_backoffs_expire() {
        let now = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let limits = IpLimits::new(2, Duration::from_secs(300), Duration::from_secs(60));
        assert!(limits.count(ip, now) && limits.count(ip, now));
        assert!(!limits.count(ip, now), "the third action crosses");
        assert_eq!(limits.blocked(ip, now), Some(300));
        assert_eq!(limits.blocked("10.0.0.2".parse().unwrap(), now), None);
        limits.start_backoff(ip, "client", now);
        assert_eq!(limits.backoff_left(ip, "client", now + Duration::from_millis(500)), Some(60));
        assert_eq!(limits.backoff_left(ip, "client", now + Duration::from_secs(61)), None);
    }
}
