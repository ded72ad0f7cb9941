//! Open-loop sweeps: the same server is offered increasing request rates, a few seconds each,
//! until the 99th percentile passes a bound (50 ms). The highest rate it held (p99 within the
//! bound, nearly every answer a verified success, nothing left unsent) is its capacity at that
//! latency: closed-loop throughput says what a server does when clients wait for it, this says
//! what it sustains when they do not.

use crate::load::{self, LoadSpec, Mode, Report, Target, Workload};
use serde::Serialize;
use std::time::Duration;

/// The latency a held rate must keep its 99th percentile under.
pub const P99_BOUND: Duration = Duration::from_millis(50);
/// Each step's rate as a share of the reference (the closed-loop throughput): coarse, so a
/// sweep takes about a minute; the last steps go past the reference, where an open loop can
/// still be held when the closed loop's clients were too few to saturate.
const STEPS: [f64; 9] = [0.4, 0.55, 0.7, 0.85, 1.0, 1.15, 1.3, 1.5, 1.75];
/// Shares tried, highest first, when even the first step was not held (a loaded machine): a
/// held rate found lower down is a figure; a sweep that holds nothing says nothing.
const LOWER_STEPS: [f64; 3] = [0.2, 0.1, 0.05];
/// Verified answers a held rate must get, of those sent.
const HELD_SHARE: f64 = 0.99;

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub rate: f64,
    pub held: bool,
    pub report: Report,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    pub call: String,
    /// The closed-loop throughput the steps are shares of.
    pub reference: f64,
    pub steps: Vec<Step>,
    /// The highest rate held (0 when none was).
    pub held_rate: f64,
}

/// Whether `report` held its offered rate within the bound.
fn held(report: &Report) -> bool {
    let answered = report.verified as f64 >= HELD_SHARE * report.sent.max(1) as f64;
    answered && report.not_sent == 0 && report.latency_all.p99 <= P99_BOUND.as_micros() as u64
}

/// Offers `workload` at rising shares of `reference` req/s, `seconds` each, until a step is not
/// held. Requests time out at twice the bound's hundredfold (a stalled step ends, not hangs).
pub async fn run(target: &Target, workload: Workload, reference: f64, step: Duration) -> anyhow::Result<Sweep> {
    let mut steps = Vec::new();
    let mut held_rate: f64 = 0.0;
    for share in STEPS {
        let step = offer(target, workload, (reference * share).round().max(1.0), step).await?;
        let ok = step.held;
        if ok {
            held_rate = held_rate.max(step.rate);
        }
        steps.push(step);
        if !ok {
            break;
        }
    }
    if held_rate == 0.0 {
        for share in LOWER_STEPS {
            let step = offer(target, workload, (reference * share).round().max(1.0), step).await?;
            let ok = step.held;
            if ok {
                held_rate = step.rate;
            }
            steps.push(step);
            if ok {
                break;
            }
        }
    }
    Ok(Sweep { call: workload.name(), reference, steps, held_rate })
}

/// One step: `rate` req/s for `duration` after a second's warm-up.
async fn offer(target: &Target, workload: Workload, rate: f64, duration: Duration) -> anyhow::Result<Step> {
    let spec = LoadSpec {
        workload,
        mode: Mode::Open { rate, max_outstanding: 8192 },
        warmup: Duration::from_secs(1),
        duration,
        timeout: Duration::from_secs(10),
    };
    let report = load::run(target, spec).await?;
    let ok = held(&report);
    eprintln!(
        "     {:>7.0} req/s: p99 {:>7} µs, {} of {} verified{}",
        rate,
        report.latency_all.p99,
        report.verified,
        report.sent,
        if ok { "" } else { " (not held)" }
    );
    Ok(Step { rate, held: ok, report })
}
