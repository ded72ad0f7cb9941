//! A lock-free histogram for Prometheus: fixed bucket bounds, one atomic counter per bucket.
//!
//! Observations from many tasks at once only `fetch_add`; a scrape reads the counters without
//! stopping them (a scrape racing an observation may see its count before its sum, which
//! Prometheus tolerates: both only grow).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Request and commit durations, in seconds.
pub const SECONDS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Sizes (events per group-commit batch), powers of two up to the largest batch setting.
pub const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last counts those above every bound.
    buckets: Box<[AtomicU64]>,
    /// The sum, in millionths of the unit (seconds: microseconds).
    sum_millionths: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self { bounds, buckets, sum_millionths: AtomicU64::new(0) }
    }

    pub fn observe(&self, value: f64) {
        let value = if value.is_finite() { value.max(0.0) } else { 0.0 };
        let bucket = self.bounds.iter().position(|bound| value <= *bound).unwrap_or(self.bounds.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_millionths.fetch_add((value * 1e6).round() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `_bucket`, `_sum` and `_count` lines of `name`; `labels` are written inside the braces
    /// before `le` (e.g. `route="/healthz",class="2xx"`, or empty).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(self.buckets.iter()) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_millionths.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {sum}\n{name}_count{braces} {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn buckets_are_cumulative_and_the_last_is_everything() {
        let h = Histogram::new(SIZES);
        for v in [1.0, 3.0, 3.0, 300.0, 5000.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"4\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"512\"} 4\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 5\n"), "{out}");
        assert!(out.contains("x_sum 5307\nx_count 5\n"), "{out}");
        let mut labelled = String::new();
        h.render(&mut labelled, "x", "route=\"/a\"");
        assert!(labelled.contains("x_bucket{route=\"/a\",le=\"+Inf\"} 5\n"), "{labelled}");
        assert!(labelled.contains("x_count{route=\"/a\"} 5\n"), "{labelled}");
    }

    #[test]
    fn concurrent_observations_are_all_counted() {
        let h = Arc::new(Histogram::new(SECONDS));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u32 {
                        h.observe(f64::from((i + t) % 7) * 0.001);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(h.count(), 80_000);
    }
}
