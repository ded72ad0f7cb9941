//! Counters of live sessions for `/metrics`: pushes sent, and the push latency (event commit →
//! frame written) as a histogram.

use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency buckets, in milliseconds (`+Inf` is the count).
pub const LATENCY_BOUNDS_MS: [u64; 10] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000];

#[derive(Debug, Default)]
pub struct LiveMetrics {
    pushes: AtomicU64,
    buckets: [AtomicU64; LATENCY_BOUNDS_MS.len()],
    latency_sum_ms: AtomicU64,
    latency_count: AtomicU64,
}

impl LiveMetrics {
    /// A panel event was written to a socket; `committed` is when its cause committed.
    pub fn pushed(&self, committed: Option<DateTime<Utc>>) {
        self.pushes.fetch_add(1, Ordering::Relaxed);
        let Some(committed) = committed else { return };
        let ms = (Utc::now() - committed).num_milliseconds().max(0) as u64;
        for (bound, bucket) in LATENCY_BOUNDS_MS.iter().zip(&self.buckets) {
            if ms <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_sum_ms.fetch_add(ms, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn pushes(&self) -> u64 {
        self.pushes.load(Ordering::Relaxed)
    }

    /// `(bound ms, cumulative count)` per bucket, then the sum (ms) and the count.
    pub fn latency(&self) -> (Vec<(u64, u64)>, u64, u64) {
        let buckets =
            LATENCY_BOUNDS_MS.iter().zip(&self.buckets).map(|(b, c)| (*b, c.load(Ordering::Relaxed))).collect();
        (buckets, self.latency_sum_ms.load(Ordering::Relaxed), self.latency_count.load(Ordering::Relaxed))
    }
}
