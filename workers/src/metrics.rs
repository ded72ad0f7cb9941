//! The workers' counters for `/metrics`: process-wide, as there is one set of workers per process.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct WorkerCounters {
    pub webhook_delivered: AtomicU64,
    pub webhook_attempt_failed: AtomicU64,
    pub webhook_gave_up: AtomicU64,
    pub commerce_processed: AtomicU64,
    pub commerce_skipped: AtomicU64,
    pub commerce_transient: AtomicU64,
    pub commerce_failed: AtomicU64,
}

pub static COUNTERS: WorkerCounters = WorkerCounters {
    webhook_delivered: AtomicU64::new(0),
    webhook_attempt_failed: AtomicU64::new(0),
    webhook_gave_up: AtomicU64::new(0),
    commerce_processed: AtomicU64::new(0),
    commerce_skipped: AtomicU64::new(0),
    commerce_transient: AtomicU64::new(0),
    commerce_failed: AtomicU64::new(0),
};

pub(crate) fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The Prometheus text of the workers' counters.
pub fn render(out: &mut String) {
    let c = &COUNTERS;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP licensd_webhook_attempts_total Webhook delivery attempts by outcome (delivered: a 2xx; failed: anything else, retried later; gave_up: the last allowed attempt failed).\n# TYPE licensd_webhook_attempts_total counter"
    );
    for (outcome, value) in
        [("delivered", &c.webhook_delivered), ("failed", &c.webhook_attempt_failed), ("gave_up", &c.webhook_gave_up)]
    {
        let _ = writeln!(out, "licensd_webhook_attempts_total{{outcome=\"{outcome}\"}} {}", load(value));
    }
    let _ = writeln!(
        out,
        "# HELP licensd_commerce_events_total Store events (Stripe, Lemon Squeezy) worked by outcome (processed, skipped, transient: retried once later, failed).\n# TYPE licensd_commerce_events_total counter"
    );
    for (outcome, value) in [
        ("processed", &c.commerce_processed),
        ("skipped", &c.commerce_skipped),
        ("transient", &c.commerce_transient),
        ("failed", &c.commerce_failed),
    ] {
        let _ = writeln!(out, "licensd_commerce_events_total{{outcome=\"{outcome}\"}} {}", load(value));
    }
}
