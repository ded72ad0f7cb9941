//! The whole benchmark: floor and endpoints on SQLite and Postgres, overload and recovery, and
//! the 1M-license scale run (rebuild, start-up, memory). Results go to BENCHMARKS.md.

use crate::append::AppendFigures;
use crate::deployment::{postgres_reachable, Backend, Deployment, Server};
use crate::fixture;
use crate::load::{self, LoadSpec, Mode, Report, Target, Workload};
use crate::protocol::{AppCredentials, Call};
use crate::sweep::{self, Sweep};
use anyhow::Context;
use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct SuiteOptions {
    pub licensd: PathBuf,
    pub postgres_url: String,
    pub licenses: usize,
    pub machines_per_license: usize,
    pub concurrency: usize,
    /// Clients of the second closed loop (0 skips it).
    pub wide_concurrency: usize,
    /// Length of each open-loop sweep step (zero skips the sweeps).
    pub sweep_step: Duration,
    pub warmup: Duration,
    pub duration: Duration,
    pub scale_licenses: usize,
    /// Events of the raw-append run per backend (0 skips it).
    pub append_events: usize,
    pub backends: Vec<Backend>,
    /// Run the live-session part (`crate::live`) with its defaults.
    pub live: bool,
    /// Run the app-users part (`crate::users`) with its defaults.
    pub users: bool,
}

/// The floor's and licensd's figures for one endpoint on one backend.
#[derive(Debug, Serialize)]
pub struct EndpointResult {
    pub backend: &'static str,
    pub floor: Report,
    /// Validate only: the floor plus one durable append per request on the same backend.
    pub durable_floor: Option<Report>,
    pub licensd: Report,
}

/// The open-loop sweeps of one endpoint on one backend: the floor's and licensd's.
#[derive(Debug, Serialize)]
pub struct SweepPair {
    pub backend: &'static str,
    pub floor: Sweep,
    pub licensd: Sweep,
}

#[derive(Debug, Serialize)]
pub struct Degradation {
    pub sustainable: f64,
    pub overload: Report,
    pub recovery: Report,
    pub rss_before: u64,
    pub rss_peak: u64,
    pub rss_after: u64,
}

#[derive(Debug, Serialize)]
pub struct Scale {
    pub licenses: usize,
    pub seed_seconds: f64,
    pub events: u64,
    pub rebuild_events_per_second: f64,
    pub startup_seconds: f64,
    pub rss_empty: u64,
    pub rss_loaded: u64,
    pub heap: Value,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub endpoints: Vec<EndpointResult>,
    /// The closed loop with `wide_concurrency` clients.
    pub wide: Vec<EndpointResult>,
    pub sweeps: Vec<SweepPair>,
    pub appends: Vec<AppendFigures>,
    pub degradation: Option<Degradation>,
    pub scale: Option<Scale>,
    pub live: Option<crate::live::LiveResults>,
    pub users: Option<crate::users::UsersResults>,
    /// Start-up with and without a snapshot (`licensd-bench startup`'s figures).
    pub startup: Option<Value>,
    pub skipped: Vec<String>,
}

/// Rate limits out of the way: the benchmark measures the work, not the limiter's refusals.
fn unlimited() -> Vec<(&'static str, String)> {
    let many = "1000000000".to_string();
    vec![
        ("LICENSD_VALIDATE_PER_IP", many.clone()),
        ("LICENSD_VALIDATE_PER_KEY", many.clone()),
        ("LICENSD_HEARTBEAT_PER_KEY", many.clone()),
        ("LICENSD_API_BURST", many.clone()),
        ("LICENSD_API_PER_SECOND", many),
    ]
}

const CREDITS: u64 = 1_000_000_000_000;

/// Requests per transaction in the raw-append run (licensd's default `LICENSD_WRITE_BATCH`).
pub const APPEND_BATCH: usize = 256;

pub async fn run(options: &SuiteOptions) -> anyhow::Result<Results> {
    let floor = Server::floor(None)?;
    let mut results = Results {
        endpoints: Vec::new(),
        wide: Vec::new(),
        sweeps: Vec::new(),
        appends: Vec::new(),
        degradation: None,
        scale: None,
        startup: None,
        live: None,
        users: None,
        skipped: Vec::new(),
    };
    for &backend in &options.backends {
        if backend == Backend::Postgres && !postgres_reachable(&options.postgres_url) {
            results.skipped.push(format!("Postgres: nothing answers at {}", options.postgres_url));
            continue;
        }
        if options.append_events > 0 {
            eprintln!(
                "== {}: raw appends ({} events, batches of {APPEND_BATCH})",
                backend.name(),
                options.append_events
            );
            let log = Deployment::create(backend, &options.licensd, &options.postgres_url, "append")?;
            let figures =
                crate::append::run(log.database_url(), backend.name(), options.append_events, APPEND_BATCH).await?;
            eprintln!(
                "   plain INSERT loop {:>8.0} events/s | writer {:>8.0} events/s ({:.0} %, mean batch {:.0})",
                figures.plain_events_per_second,
                figures.writer_events_per_second,
                100.0 * figures.ratio(),
                figures.writer_mean_batch
            );
            results.appends.push(figures);
        }
        eprintln!("== {}: endpoints", backend.name());
        let deployment = Deployment::create(backend, &options.licensd, &options.postgres_url, "auth")?;
        let server = deployment.start(&unlimited())?;
        let target = prepare(&deployment, &server, options).await?;
        let floor_target = Target { base_url: floor.base_url.clone(), app: floor_app(), ..target.clone() };
        let durable_log = Deployment::create(backend, &options.licensd, &options.postgres_url, "floor")?;
        let durable = Server::floor(Some(durable_log.database_url()))?;
        let durable_target = Target { base_url: durable.base_url.clone(), ..floor_target.clone() };
        let mut validate_rate = 0.0;
        let workloads =
            [Workload::Only(Call::Heartbeat), Workload::Only(Call::Validate), Workload::Mix { validate_percent: 10 }];
        for workload in workloads {
            let spec = LoadSpec::closed(workload, options.concurrency, options.warmup, options.duration);
            let floor_report = load::run(&floor_target, spec).await?;
            let durable_floor = match workload {
                Workload::Only(Call::Validate) => Some(load::run(&durable_target, spec).await?),
                _ => None,
            };
            let licensd_report = load::run(&target, spec).await?;
            eprintln!(
                "   {:9} floor {:>7.0}/s p99 {:>6} µs | licensd {:>7.0}/s p99 {:>6} µs",
                workload.name(),
                floor_report.throughput,
                floor_report.latency_verified.p99,
                licensd_report.throughput,
                licensd_report.latency_verified.p99
            );
            if workload == Workload::Only(Call::Validate) {
                validate_rate = licensd_report.throughput;
            }
            results.endpoints.push(EndpointResult {
                backend: backend.name(),
                floor: floor_report,
                durable_floor,
                licensd: licensd_report,
            });
        }
        more_load(&mut results, backend, &floor_target, &target, options).await?;
        if backend == Backend::Sqlite && validate_rate > 0.0 {
            eprintln!("== {}: overload at twice the sustainable validate rate, then recovery", backend.name());
            results.degradation = Some(degradation(&server, &target, validate_rate, options).await?);
        }
        server.stop();
        durable.stop();
    }
    if options.scale_licenses > 0 {
        results.scale = Some(scale(options).await?);
        results.startup = Some(crate::startup::run(&options.licensd, crate::startup::StartupSize::SMALL).await?);
    }
    if options.live {
        let live = crate::live::LiveOptions { licensd: options.licensd.clone(), ..Default::default() };
        results.live = Some(crate::live::run(&live).await?);
    }
    if options.users {
        let users = crate::users::UsersOptions { licensd: options.licensd.clone(), ..Default::default() };
        results.users = Some(crate::users::run(&users).await?);
    }
    floor.stop();
    Ok(results)
}

/// Validate and heartbeat in a closed loop with `wide_concurrency` clients, then swept in an
/// open loop from below to above the closed loop's throughput (see [`sweep`]).
async fn more_load(
    results: &mut Results,
    backend: Backend,
    floor: &Target,
    licensd: &Target,
    options: &SuiteOptions,
) -> anyhow::Result<()> {
    for call in [Call::Heartbeat, Call::Validate] {
        let workload = Workload::Only(call);
        if options.wide_concurrency > 0 {
            let spec = LoadSpec::closed(workload, options.wide_concurrency, options.warmup, options.duration);
            let (floor_report, licensd_report) = (load::run(floor, spec).await?, load::run(licensd, spec).await?);
            eprintln!(
                "   {:9} {} clients: floor {:>7.0}/s p99 {:>6} µs | licensd {:>7.0}/s p99 {:>6} µs",
                call.name(),
                options.wide_concurrency,
                floor_report.throughput,
                floor_report.latency_verified.p99,
                licensd_report.throughput,
                licensd_report.latency_verified.p99
            );
            let row = EndpointResult {
                backend: backend.name(),
                floor: floor_report,
                durable_floor: None,
                licensd: licensd_report,
            };
            results.wide.push(row);
        }
        let closed = results.endpoints.iter().find(|r| r.backend == backend.name() && r.licensd.call == call.name());
        if let (Some(closed), false) = (closed, options.sweep_step.is_zero()) {
            let (floor_reference, licensd_reference) = (closed.floor.throughput, closed.licensd.throughput);
            eprintln!("   {} open-loop sweep, floor", call.name());
            let floor = sweep::run(floor, workload, floor_reference, options.sweep_step).await?;
            eprintln!("   {} open-loop sweep, licensd", call.name());
            let licensd = sweep::run(licensd, workload, licensd_reference, options.sweep_step).await?;
            results.sweeps.push(SweepPair { backend: backend.name(), floor, licensd });
        }
    }
    Ok(())
}

/// Only the overload-and-recovery run (SQLite): the sustainable rate from a closed loop of
/// validations first, as the suite takes it.
pub async fn overload(options: &SuiteOptions) -> anyhow::Result<Degradation> {
    let deployment = Deployment::create(Backend::Sqlite, &options.licensd, &options.postgres_url, "overload")?;
    let server = deployment.start(&unlimited())?;
    let target = prepare(&deployment, &server, options).await?;
    let spec = LoadSpec::closed(Workload::Only(Call::Validate), options.concurrency, options.warmup, options.duration);
    let sustainable = load::run(&target, spec).await?.throughput;
    eprintln!("   sustainable (closed loop of {}): {sustainable:.0} validations/s", options.concurrency);
    let figures = degradation(&server, &target, sustainable, options).await;
    server.stop();
    figures
}

/// A merchant, licenses and machines, every machine logged in once (its slot bound).
async fn prepare(deployment: &Deployment, server: &Server, options: &SuiteOptions) -> anyhow::Result<Target> {
    let merchant = fixture::merchant(deployment, &server.base_url, CREDITS).await?;
    let slots = u8::try_from(options.machines_per_license).context("at most 16 machines per license")?;
    let keys = fixture::licenses(&server.base_url, &merchant, options.licenses, slots, 4).await?;
    let target = Target {
        base_url: server.base_url.clone(),
        app: merchant.app,
        machines: Arc::new(fixture::machines(&keys, options.machines_per_license)),
    };
    let machines = load::log_in_all(&target, 16).await?;
    Ok(Target { machines: Arc::new(machines), ..target })
}

pub(crate) fn floor_app() -> AppCredentials {
    use base64::Engine;
    let public = crate::floor::signing_key().verifying_key();
    let public = base64::engine::general_purpose::STANDARD.encode(public.as_bytes());
    AppCredentials::new(&uuid::Uuid::nil().to_string(), "floor-secret", &public).expect("floor key")
}

/// Open loop at twice `sustainable` validations per second, then at half of it.
async fn degradation(
    server: &Server,
    target: &Target,
    sustainable: f64,
    options: &SuiteOptions,
) -> anyhow::Result<Degradation> {
    let rss_before = server.rss_bytes();
    let peak = Arc::new(AtomicU64::new(rss_before));
    let stop = Arc::new(AtomicBool::new(false));
    let pid = server.pid();
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(crate::deployment::rss_of(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let phase = |rate: f64, warmup| LoadSpec {
        workload: Workload::Only(Call::Validate),
        mode: Mode::Open { rate, max_outstanding: 8192 },
        warmup,
        duration: options.duration,
        timeout: Duration::from_secs(10),
    };
    let overload = load::run(target, phase(2.0 * sustainable, Duration::from_secs(1))).await?;
    let recovery = load::run(target, phase(0.5 * sustainable, Duration::from_secs(1))).await?;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    Ok(Degradation {
        sustainable,
        overload,
        recovery,
        rss_before,
        rss_peak: peak.load(Ordering::Relaxed),
        rss_after: server.rss_bytes(),
    })
}

/// Seeds `scale_licenses` licenses through the API, then measures the hot-model rebuild,
/// start-up and memory with all of them.
async fn scale(options: &SuiteOptions) -> anyhow::Result<Scale> {
    let licenses = options.scale_licenses;
    eprintln!("== SQLite: {licenses} licenses (seeding through the Developer API)");
    let deployment = Deployment::create(Backend::Sqlite, &options.licensd, &options.postgres_url, "scale")?;
    let server = deployment.start(&unlimited())?;
    let merchant = fixture::merchant(&deployment, &server.base_url, CREDITS).await?;
    let rss_empty = server.rss_bytes();
    let seeding = Instant::now();
    fixture::licenses(&server.base_url, &merchant, licenses, 2, 8).await?;
    let seed_seconds = seeding.elapsed().as_secs_f64();
    server.stop();

    eprintln!("   rebuild");
    let rebuilt = deployment.cli(&["rebuild", "--projection", "hot"])?;
    let hot = &rebuilt["rebuilt"][0];
    eprintln!("   start-up");
    let server = deployment.start(&unlimited())?;
    let startup_seconds = server.startup.as_secs_f64();
    let rss_loaded = crate::startup::settled_rss(&server);
    server.stop();
    eprintln!("   heap of the read model");
    let heap = hot_model_heap(&deployment)?;
    Ok(Scale {
        licenses,
        seed_seconds,
        events: hot["events"].as_u64().unwrap_or(0),
        rebuild_events_per_second: hot["eventsPerSecond"].as_f64().unwrap_or(0.0),
        startup_seconds,
        rss_empty,
        rss_loaded,
        heap,
    })
}

/// Runs `licensd-bench-heap` (a binary with a counting allocator) on the deployment's log.
fn hot_model_heap(deployment: &Deployment) -> anyhow::Result<Value> {
    let bin = std::env::current_exe()?.with_file_name("licensd-bench-heap");
    let output = std::process::Command::new(&bin)
        .arg(deployment.database_url())
        .output()
        .with_context(|| format!("cannot run {} (built with the suite unless --licensd is given)", bin.display()))?;
    anyhow::ensure!(output.status.success(), "{} failed: {}", bin.display(), String::from_utf8_lossy(&output.stderr));
    Ok(serde_json::from_slice(&output.stdout)?)
}
