//! The load generator. Closed loop: a fixed number of clients, each sending its next request
//! when the last one is answered (throughput at saturation). Open loop: requests leave on a
//! fixed schedule whatever the server does, and latency counts from the scheduled moment, so a
//! stalled server cannot hide its queue (no coordinated omission).
//!
//! Every answer is kept and checked after the timed window (signature, nonce, token): checking
//! Ed25519 signatures costs more than making them, and on a small machine the generator would
//! otherwise take CPU from the server it measures. An answer that fails the check counts as a
//! failure, never as throughput.

use crate::protocol::{error_code, nonce, request_body, verify_success, AppCredentials, Call, Machine};
use crate::stats::{micros, Percentiles};
use axum::body::Bytes;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the load goes and as whom.
#[derive(Clone)]
pub struct Target {
    pub base_url: String,
    pub app: AppCredentials,
    pub machines: Arc<Vec<Machine>>,
}

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Closed { concurrency: usize },
    Open { rate: f64, max_outstanding: usize },
}

impl Mode {
    pub fn describe(&self) -> String {
        match self {
            Mode::Closed { concurrency } => format!("closed loop, {concurrency} clients"),
            Mode::Open { rate, .. } => format!("open loop, {rate:.0} req/s"),
        }
    }
}

/// What the requests are: one endpoint, or SDK-like traffic mixing logins into heartbeats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    Only(Call),
    Mix { validate_percent: u32 },
}

impl Workload {
    pub fn name(&self) -> String {
        match self {
            Workload::Only(call) => call.name().to_string(),
            Workload::Mix { validate_percent } => format!("mix: {validate_percent} % validate, heartbeat otherwise"),
        }
    }

    fn pick(&self) -> Call {
        match *self {
            Workload::Only(call) => call,
            Workload::Mix { validate_percent } if rand::random::<u32>() % 100 < validate_percent => Call::Validate,
            Workload::Mix { .. } => Call::Heartbeat,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct LoadSpec {
    pub workload: Workload,
    pub mode: Mode,
    /// Sent but not counted: connections open, caches warm.
    pub warmup: Duration,
    pub duration: Duration,
    pub timeout: Duration,
}

impl LoadSpec {
    /// The closed loop most runs use: `workload` from `concurrency` clients, each request given
    /// ten seconds before it counts as a timeout.
    pub fn closed(workload: Workload, concurrency: usize, warmup: Duration, duration: Duration) -> Self {
        Self { workload, mode: Mode::Closed { concurrency }, warmup, duration, timeout: Duration::from_secs(10) }
    }
}

/// What one run measured. Latencies in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub call: String,
    pub mode: String,
    pub seconds: f64,
    pub sent: u64,
    /// Answers that passed every SDK check.
    pub verified: u64,
    /// 2xx answers that failed a check (bad signature, wrong nonce, ...).
    pub failed_checks: u64,
    /// Every outcome: `200`, `429 rate_limited`, `503 system_error`, `timeout`, `transport`.
    pub outcomes: BTreeMap<String, u64>,
    /// Verified answers per second.
    pub throughput: f64,
    pub latency_verified: Percentiles,
    pub latency_all: Percentiles,
    /// Latency of answers that were not verified successes (sheds, errors).
    pub latency_refused: Percentiles,
    /// Open loop only: scheduled requests not sent because too many were outstanding.
    pub not_sent: u64,
    pub first_failure: Option<String>,
}

struct Sample {
    started: Instant,
    latency: Duration,
    outcome: Result<(u16, Bytes), &'static str>,
    nonce: String,
}

/// Runs one load phase against `target`.
pub async fn run(target: &Target, spec: LoadSpec) -> anyhow::Result<Report> {
    anyhow::ensure!(!target.machines.is_empty(), "no machines to send as");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .tcp_nodelay(true)
        .timeout(spec.timeout)
        .build()?;
    let samples = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let measured_from = start + spec.warmup;
    let end = measured_from + spec.duration;
    let not_sent = match spec.mode {
        Mode::Closed { concurrency } => {
            closed_loop(&client, target, spec.workload, concurrency, end, &samples).await;
            0
        }
        Mode::Open { rate, max_outstanding } => {
            open_loop(&client, target, spec.workload, rate, max_outstanding, measured_from, end, &samples).await
        }
    };
    let samples = std::mem::take(&mut *samples.lock().expect("samples lock"));
    let measured: Vec<Sample> = samples.into_iter().filter(|s| s.started >= measured_from).collect();
    Ok(summarize(spec, &target.app, measured, not_sent))
}

async fn closed_loop(
    client: &reqwest::Client,
    target: &Target,
    workload: Workload,
    concurrency: usize,
    end: Instant,
    samples: &Arc<Mutex<Vec<Sample>>>,
) {
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency.max(1) {
        let (client, target, samples) = (client.clone(), target.clone(), samples.clone());
        workers.spawn(async move {
            let mut mine = Vec::new();
            let mut next = worker;
            while Instant::now() < end {
                let machine = &target.machines[next % target.machines.len()];
                next += concurrency;
                let started = Instant::now();
                if let Some(sample) = send(&client, &target, workload.pick(), machine, started).await {
                    mine.push(sample);
                }
            }
            samples.lock().expect("samples lock").extend(mine);
        });
    }
    while workers.join_next().await.is_some() {}
}

#[allow(clippy::too_many_arguments)]
async fn open_loop(
    client: &reqwest::Client,
    target: &Target,
    workload: Workload,
    rate: f64,
    max_outstanding: usize,
    measured_from: Instant,
    end: Instant,
    samples: &Arc<Mutex<Vec<Sample>>>,
) -> u64 {
    let start = Instant::now();
    let outstanding = Arc::new(AtomicUsize::new(0));
    let not_sent = AtomicU64::new(0);
    let mut issued: u64 = 0;
    let mut tasks = tokio::task::JoinSet::new();
    while Instant::now() < end {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while issued < due {
            let scheduled = start + Duration::from_secs_f64(issued as f64 / rate);
            let machine = target.machines[issued as usize % target.machines.len()].clone();
            issued += 1;
            if outstanding.load(Ordering::Relaxed) >= max_outstanding {
                if scheduled >= measured_from {
                    not_sent.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            outstanding.fetch_add(1, Ordering::Relaxed);
            let (client, target, samples, outstanding) =
                (client.clone(), target.clone(), samples.clone(), outstanding.clone());
            tasks.spawn(async move {
                if let Some(sample) = send(&client, &target, workload.pick(), &machine, scheduled).await {
                    samples.lock().expect("samples lock").push(sample);
                }
                outstanding.fetch_sub(1, Ordering::Relaxed);
            });
        }
        // Reap finished tasks so the set does not grow with the run.
        while tasks.try_join_next().is_some() {}
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while tasks.join_next().await.is_some() {}
    not_sent.into_inner()
}

/// One request; latency counts from `started` (the scheduled moment in open loop).
async fn send(
    client: &reqwest::Client,
    target: &Target,
    call: Call,
    machine: &Machine,
    started: Instant,
) -> Option<Sample> {
    let nonce = nonce();
    let body = request_body(call, &target.app, machine, &nonce)?;
    let answer = client
        .post(format!("{}{}", target.base_url, call.path()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let outcome = match answer {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(bytes) => Ok((status, bytes)),
                Err(e) if e.is_timeout() => Err("timeout"),
                Err(_) => Err("transport"),
            }
        }
        Err(e) if e.is_timeout() => Err("timeout"),
        Err(_) => Err("transport"),
    };
    Some(Sample { started, latency: started.elapsed(), outcome, nonce })
}

/// Checks every answer (on all cores, after the timed window) and summarizes.
fn summarize(spec: LoadSpec, app: &AppCredentials, samples: Vec<Sample>, not_sent: u64) -> Report {
    let checks = verify_all(&samples, app);
    let mut outcomes = BTreeMap::new();
    let (mut verified, mut refused, mut all) = (Vec::new(), Vec::new(), Vec::new());
    let mut failed_checks = 0;
    let mut first_failure = None;
    for (sample, check) in samples.iter().zip(checks) {
        let us = micros(sample.latency);
        all.push(us);
        let label = match (&sample.outcome, check) {
            (Ok((status, _)), Some(Ok(()))) => {
                verified.push(us);
                status.to_string()
            }
            (Ok((status, _)), Some(Err(why))) => {
                failed_checks += 1;
                first_failure.get_or_insert_with(|| format!("{status}: {why}"));
                refused.push(us);
                format!("{status} failed check")
            }
            (Ok((status, body)), None) => {
                refused.push(us);
                format!("{status} {}", error_code(body))
            }
            (Err(kind), _) => {
                refused.push(us);
                first_failure.get_or_insert_with(|| kind.to_string());
                kind.to_string()
            }
        };
        *outcomes.entry(label).or_insert(0) += 1;
    }
    let seconds = spec.duration.as_secs_f64();
    Report {
        call: spec.workload.name(),
        mode: spec.mode.describe(),
        seconds,
        sent: samples.len() as u64,
        verified: verified.len() as u64,
        failed_checks,
        outcomes,
        throughput: verified.len() as f64 / seconds,
        latency_verified: Percentiles::of(&mut verified),
        latency_all: Percentiles::of(&mut all),
        latency_refused: Percentiles::of(&mut refused),
        not_sent,
        first_failure,
    }
}

/// `Some(check)` for each 2xx answer, `None` for the rest.
fn verify_all(samples: &[Sample], app: &AppCredentials) -> Vec<Option<Result<(), String>>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = samples.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = samples
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|s| match &s.outcome {
                            Ok((200..=299, body)) => Some(verify_success(body, &s.nonce, &app.public_key).map(drop)),
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("verifier thread")).collect()
    })
}

/// Validates every machine once (binding it to its slot) and keeps the session each gets, as
/// the SDK's login does. Fails unless every machine got a verified session.
pub async fn log_in_all(target: &Target, concurrency: usize) -> anyhow::Result<Vec<Machine>> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(usize::MAX).tcp_nodelay(true).build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, target, next) = (client.clone(), target.clone(), next.clone());
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(machine) = target.machines.get(index) else { return Ok::<_, anyhow::Error>(done) };
                let nonce = nonce();
                let body = request_body(Call::Validate, &target.app, machine, &nonce).expect("validate body");
                let url = format!("{}{}", target.base_url, Call::Validate.path());
                let answer = client.post(url).header("content-type", "application/json").body(body).send().await?;
                let bytes = answer.bytes().await?;
                let token = verify_success(&bytes, &nonce, &target.app.public_key).map_err(|why| {
                    anyhow::anyhow!(
                        "login of {} failed: {why}: {}",
                        machine.license_key,
                        String::from_utf8_lossy(&bytes)
                    )
                })?;
                done.push((index, Machine { session_token: Some(token), ..machine.clone() }));
            }
        });
    }
    let mut machines = Vec::new();
    while let Some(joined) = workers.join_next().await {
        machines.extend(joined??);
    }
    machines.sort_by_key(|(index, _)| *index);
    Ok(machines.into_iter().map(|(_, m)| m).collect())
}
