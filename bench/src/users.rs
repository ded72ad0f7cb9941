//! App users (issue 17's benchmark), against the real binary on SQLite:
//!
//! - **Argon2**: one verification at licensd's default cost, timed in this process with the
//!   crate and parameters licensd uses (the server's verify is this call on its blocking pool);
//! - **sign-ins**: a closed loop of sessions, each signing in (packet 3, right password) and out
//!   (packet 5) as a user of its own: sign-ins per second and their latency;
//! - **flood**: `/auth/validate` of other licenses in a closed loop, its p99 without and then with
//!   a flood of wrong passwords for one user running beside it (ratio of the two, same run),
//!   once with the default softlocks and once with them lifted (every guess pays Argon2: the
//!   worst case, bounded only by `LICENSD_APP_USER_MAX_CONCURRENT_VERIFIES`).

use crate::deployment::{Backend, Deployment, Server};
use crate::fixture::{self, Merchant};
use crate::live::client;
use crate::load::{self, LoadSpec, Target, Workload};
use crate::protocol::Call;
use crate::stats::{micros, Percentiles};
use anyhow::Context;
use licensd_commands::app_users::{verify_user_password, PasswordCost};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct UsersOptions {
    pub licensd: PathBuf,
    /// Timed Argon2 verifications.
    pub argon2_runs: usize,
    /// Sessions of the sign-in loop (each its own user).
    pub sign_in_concurrency: usize,
    /// Closed-loop clients of `/auth/validate`.
    pub validate_concurrency: usize,
    /// Sessions sending wrong passwords for the one user.
    pub flood_sessions: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

impl Default for UsersOptions {
    fn default() -> Self {
        Self {
            licensd: PathBuf::new(),
            argon2_runs: 30,
            sign_in_concurrency: 8,
            validate_concurrency: 16,
            flood_sessions: 8,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Argon2Figures {
    pub memory_kib: u32,
    pub iterations: u32,
    pub runs: usize,
    /// One verification, µs.
    pub verify: Percentiles,
    pub min_us: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SignIns {
    pub sessions: usize,
    pub seconds: f64,
    pub sign_ins: usize,
    pub per_second: f64,
    /// Packet 3 sent → its answer, µs.
    pub latency: Percentiles,
    pub failures: u64,
    pub first_failure: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Validations {
    pub per_second: f64,
    pub latency: Percentiles,
    pub not_verified: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Flood {
    /// `defaults` (softlocks as shipped) or `lifted` (every guess verified).
    pub lockouts: String,
    pub baseline: Validations,
    pub flooded: Validations,
    /// p99 with the flood ÷ p99 without it.
    pub p99_ratio: f64,
    pub flood_sessions: usize,
    pub flood_attempts: u64,
    pub flood_per_second: f64,
    /// Answers of the flood by status: 200 checked (wrong password), 5 refused by a softlock.
    pub flood_outcomes: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UsersResults {
    pub argon2: Argon2Figures,
    pub sign_ins: SignIns,
    pub floods: Vec<Flood>,
}

const CREDITS: u64 = 1_000_000_000_000;
const PASSWORD: &str = "correct horse battery";

fn server_env(lift_lockouts: bool) -> Vec<(&'static str, String)> {
    let many = "1000000000".to_string();
    let mut env = crate::live::limits_lifted();
    if lift_lockouts {
        env.push(("LICENSD_APP_USER_LOCKOUT_FAILURES", many.clone()));
        env.push(("LICENSD_APP_USER_IP_LOCKOUT_FAILURES", many));
    }
    env
}

pub async fn run(options: &UsersOptions) -> anyhow::Result<UsersResults> {
    eprintln!("== users: Argon2 verify time ({} runs)", options.argon2_runs);
    let argon2 = argon2_figures(options.argon2_runs).await?;
    eprintln!("   verify p50 {} µs, min {} µs", argon2.verify.p50, argon2.min_us);
    let mut floods = Vec::new();
    let mut sign_ins = None;
    for lift in [false, true] {
        let deployment = Deployment::create(Backend::Sqlite, &options.licensd, "", "users")?;
        let server = deployment.start(&server_env(lift))?;
        let outcome = on_server(&deployment, &server, options, lift, sign_ins.is_none()).await;
        server.stop();
        let (flood, signs) = outcome?;
        floods.push(flood);
        sign_ins = sign_ins.or(signs);
    }
    Ok(UsersResults { argon2, sign_ins: sign_ins.context("no sign-in run")?, floods })
}

async fn argon2_figures(runs: usize) -> anyhow::Result<Argon2Figures> {
    let cost = PasswordCost::default();
    let samples = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u64>> {
        let verifier = cost.hash(PASSWORD).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs.max(1) {
            let started = Instant::now();
            anyhow::ensure!(verify_user_password(&cost, PASSWORD, Some(&verifier)), "the verifier did not verify");
            samples.push(micros(started.elapsed()));
        }
        Ok(samples)
    })
    .await??;
    let mut samples = samples;
    let min_us = samples.iter().copied().min().unwrap_or(0);
    Ok(Argon2Figures {
        memory_kib: cost.memory_kib,
        iterations: cost.iterations,
        runs: samples.len(),
        verify: Percentiles::of(&mut samples),
        min_us,
    })
}

struct Setup {
    addr: SocketAddr,
    ws_key: String,
    target: Target,
}

async fn setup(deployment: &Deployment, server: &Server, users: usize) -> anyhow::Result<Setup> {
    let merchant: Merchant = fixture::merchant(deployment, &server.base_url, CREDITS).await?;
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let request = http.post(format!("{}{path}", server.base_url)).bearer_auth(&merchant.api_key).json(&body);
        async move {
            let answer = request.send().await?;
            let status = answer.status();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            anyhow::ensure!(status.is_success(), "POST answered {status}: {body}");
            Ok::<Value, anyhow::Error>(body)
        }
    };
    let app_id = merchant.app.app_id.clone();
    let ws_key = post(format!("/v1/apps/{app_id}/websocket-key"), json!({})).await?;
    let ws_key = ws_key["websocketApiKey"].as_str().context("no websocketApiKey")?.to_string();
    // The flood's victim, and one user per sign-in session.
    for n in 0..=users {
        post(format!("/v1/apps/{app_id}/users"), json!({"login": login(n), "password": PASSWORD})).await?;
    }
    let keys = fixture::licenses(&server.base_url, &merchant, 1000, 2, 4).await?;
    let target = Target {
        base_url: server.base_url.clone(),
        app: merchant.app.clone(),
        machines: Arc::new(fixture::machines(&keys, 2)),
    };
    let target = Target { machines: Arc::new(load::log_in_all(&target, 16).await?), ..target };
    let addr: SocketAddr = server.base_url.trim_start_matches("http://").parse()?;
    Ok(Setup { addr, ws_key, target })
}

/// User 0 is the flood's victim; users 1.. sign in.
fn login(n: usize) -> String {
    format!("bench.user.{n}")
}

async fn on_server(
    deployment: &Deployment,
    server: &Server,
    options: &UsersOptions,
    lift: bool,
    measure_sign_ins: bool,
) -> anyhow::Result<(Flood, Option<SignIns>)> {
    let setup = setup(deployment, server, options.sign_in_concurrency).await?;
    let sign_ins = if measure_sign_ins {
        eprintln!("== users: sign-ins, {} sessions", options.sign_in_concurrency);
        let run = sign_in_loop(&setup, options).await?;
        eprintln!("   {:.1} sign-ins/s, p50 {} µs, p99 {} µs", run.per_second, run.latency.p50, run.latency.p99);
        Some(run)
    } else {
        None
    };
    let lockouts = if lift { "lifted" } else { "defaults" };
    eprintln!("== users: validations without, then with a wrong-password flood (softlocks {lockouts})");
    let baseline = validations(&setup, options).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut flooders = Vec::new();
    for n in 0..options.flood_sessions {
        let mut stream = client::open(
            setup.addr,
            localhost(),
            client::Opening {
                ws_key: &setup.ws_key,
                client_id: &format!("flood-{n}"),
                license: None,
                subscribe: false,
            },
        )
        .await?;
        let (stop, outcomes) = (stop.clone(), outcomes.clone());
        flooders.push(tokio::spawn(async move {
            let mut id = 10u64;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let guess = json!({"type": 3, "id": id, "login": login(0), "password": "wrong password", "credentials_type": 0});
                let outcome = match client::call(&mut stream, guess).await {
                    Ok(answer) => answer["status"].to_string(),
                    Err(_) => "error".to_string(),
                };
                let mut tally = outcomes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                *tally.entry(outcome.clone()).or_default() += 1;
                if outcome == "error" {
                    break;
                }
            }
        }));
    }
    let flood_started = Instant::now();
    let flooded = validations(&setup, options).await?;
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        let _ = flooder.await;
    }
    let flood_seconds = flood_started.elapsed().as_secs_f64();
    let flood_outcomes = outcomes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let flood_attempts: u64 = flood_outcomes.values().sum();
    let flood = Flood {
        lockouts: lockouts.to_string(),
        p99_ratio: flooded.latency.p99 as f64 / baseline.latency.p99.max(1) as f64,
        baseline,
        flooded,
        flood_sessions: options.flood_sessions,
        flood_attempts,
        flood_per_second: flood_attempts as f64 / flood_seconds,
        flood_outcomes,
    };
    eprintln!(
        "   validate p99 {} µs → {} µs with the flood ({:.2}×); flood {:.0} guesses/s {:?}",
        flood.baseline.latency.p99,
        flood.flooded.latency.p99,
        flood.p99_ratio,
        flood.flood_per_second,
        flood.flood_outcomes
    );
    Ok((flood, sign_ins))
}

fn localhost() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

async fn validations(setup: &Setup, options: &UsersOptions) -> anyhow::Result<Validations> {
    let spec = LoadSpec::closed(
        Workload::Only(Call::Validate),
        options.validate_concurrency,
        options.warmup,
        options.duration,
    );
    let report = load::run(&setup.target, spec).await?;
    Ok(Validations {
        per_second: report.throughput,
        latency: report.latency_verified,
        not_verified: report.sent.saturating_sub(report.verified),
    })
}

/// Each session signs in and out as its own user until the time is up; only answers of the
/// timed part count.
async fn sign_in_loop(setup: &Setup, options: &UsersOptions) -> anyhow::Result<SignIns> {
    let started = Instant::now();
    let timed_from = started + options.warmup;
    let until = timed_from + options.duration;
    let mut tasks = Vec::new();
    for n in 1..=options.sign_in_concurrency {
        let opening = client::Opening {
            ws_key: &setup.ws_key,
            client_id: &format!("signer-{n}"),
            license: None,
            subscribe: false,
        };
        let mut stream = client::open(setup.addr, localhost(), opening).await?;
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut failures, mut first_failure) = (Vec::new(), 0u64, None);
            let mut id = 10u64;
            while Instant::now() < until {
                id += 2;
                let packet =
                    json!({"type": 3, "id": id, "login": login(n), "password": PASSWORD, "credentials_type": 0});
                let sent = Instant::now();
                let answer = client::call(&mut stream, packet).await;
                let took = micros(sent.elapsed());
                let ok = matches!(&answer, Ok(a) if a["status"] == 1);
                if sent >= timed_from && sent < until {
                    if ok {
                        latencies.push(took);
                    } else {
                        failures += 1;
                        first_failure.get_or_insert_with(|| format!("{answer:?}"));
                    }
                }
                if !ok {
                    break;
                }
                if client::call(&mut stream, json!({"type": 5, "id": id + 1})).await.is_err() {
                    break;
                }
            }
            (latencies, failures, first_failure)
        }));
    }
    let (mut latencies, mut failures, mut first_failure) = (Vec::new(), 0, None);
    for task in tasks {
        let (l, f, first) = task.await?;
        latencies.extend(l);
        failures += f;
        first_failure = first_failure.or(first);
    }
    let seconds = options.duration.as_secs_f64();
    Ok(SignIns {
        sessions: options.sign_in_concurrency,
        seconds,
        sign_ins: latencies.len(),
        per_second: latencies.len() as f64 / seconds,
        latency: Percentiles::of(&mut latencies),
        failures,
        first_failure,
    })
}

pub mod report {
    //! The "App users" section of BENCHMARKS.md.

    use super::UsersResults;
    use crate::stats::human_micros;
    use std::fmt::Write;

    pub const HEADING: &str = "## App users (sign-in, Argon2id, wrong-password flood; SQLite)";

    pub fn section(r: &UsersResults) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "{HEADING}\n");
        let _ = writeln!(
            md,
            "The release binary on SQLite; clients are real WebSocket sessions and the SDK's HTTP calls on the \
             same two cores as the server. Sign-in throughput is bounded by Argon2id by design.\n"
        );
        let a = &r.argon2;
        let _ = writeln!(md, "| measure | figure |");
        let _ = writeln!(md, "|---|---|");
        let _ = writeln!(
            md,
            "| one Argon2id verification ({} KiB, {} passes, 1 lane), {} runs | p50 {}, min {}, p99 {} |",
            a.memory_kib,
            a.iterations,
            a.runs,
            human_micros(a.verify.p50),
            human_micros(a.min_us),
            human_micros(a.verify.p99)
        );
        let s = &r.sign_ins;
        let _ = writeln!(
            md,
            "| sign-ins (packet 3, right password, then logout), {} sessions for {:.0} s | **{:.1}/s**, p50 {}, p99 {} ({} failures) |",
            s.sessions,
            s.seconds,
            s.per_second,
            human_micros(s.latency.p50),
            human_micros(s.latency.p99),
            s.failures
        );
        for f in &r.floods {
            let _ = writeln!(
                md,
                "| `/auth/validate` of other licenses, p99 without → with {} sessions guessing one user's password (softlocks {}) | {} → {} (**{:.2}×**); {:.0} → {:.0} validations/s; flood {:.0} guesses/s, answers {} |",
                f.flood_sessions,
                f.lockouts,
                human_micros(f.baseline.latency.p99),
                human_micros(f.flooded.latency.p99),
                f.p99_ratio,
                f.baseline.per_second,
                f.flooded.per_second,
                f.flood_per_second,
                f.flood_outcomes.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
            );
        }
        md.push('\n');
        md
    }

    /// Replaces the section in `markdown` (or appends it).
    pub fn replace_section(markdown: &str, section: &str) -> String {
        // Before the live-session section, where the suite writes it.
        crate::report::replace_section(markdown, HEADING, section, Some(crate::live::report::HEADING))
    }
}
