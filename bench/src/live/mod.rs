//! Live sessions under load (issue 16's benchmark), against the real release binary on SQLite:
//!
//! - **held**: N initialized, authorized and subscribed sessions; the server's resident memory
//!   per session (VmRSS after − before, ÷ N) and its CPU while they idle;
//! - **revocation**: one license revoked through the Developer API → its session's event 201;
//! - **fan-out**: one app-wide event to F subscribed sessions, time to the last frame;
//! - **throughput**: initialize + authorize per second (closed loop) next to HTTP
//!   `/auth/validate` of the same run.
//!
//! "Commit" on the client side is the moment the Developer API request is sent: the event
//! commits later than that, so client figures are upper bounds. The server's own histogram
//! (`licensd_live_push_latency_ms`, event commit → frame written) is reported beside them.

pub(crate) mod client;
pub mod hold;
pub mod report;

use crate::deployment::{Backend, Deployment, Server};
use crate::fixture::{self, Merchant};
use crate::load::{self, LoadSpec, Target, Workload};
use crate::protocol::{AppCredentials, Call, Machine};
use crate::stats::{micros, Percentiles};
use anyhow::Context;
use client::{Opening, Tally};
use serde::Serialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Targets of issue 16.
pub const TARGET_BYTES_PER_SESSION: f64 = 8.0 * 1024.0;
pub const TARGET_FANOUT_P99_MS: f64 = 250.0;
pub const TARGET_REVOCATION_P99_MS: f64 = 10.0;
/// The issue's session count; this machine's open-file limit may not allow it (see `FdLimits`).
pub const ISSUE_SESSIONS: usize = 50_000;

/// File descriptors the server needs besides the sessions (listener, database, the
/// benchmark's HTTP connections).
const SERVER_FD_RESERVE: usize = 500;
/// ... and each client process besides its sockets.
const CLIENT_FD_RESERVE: usize = 200;

#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub licensd: PathBuf,
    /// Sessions to hold; `None`: as many as the open-file limits allow.
    pub sessions: Option<usize>,
    /// Subscribed sessions of the fan-out (0 skips it).
    pub fanout: usize,
    /// Version changes (event 102) timed over the fan-out sessions, before the one disable.
    pub fanout_repeats: usize,
    /// Single revocations timed (0 skips them).
    pub revocations: usize,
    /// 127.0.0.x source addresses the clients spread over.
    pub sources: usize,
    /// Sessions each client process opens at once.
    pub open_concurrency: usize,
    /// Closed-loop clients of the throughput comparison (0 skips it).
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// How long the held sessions idle while the server's CPU is measured.
    pub idle: Duration,
}

impl Default for LiveOptions {
    fn default() -> Self {
        Self {
            licensd: PathBuf::new(),
            sessions: None,
            fanout: 10_000,
            fanout_repeats: 20,
            revocations: 200,
            sources: 8,
            open_concurrency: 64,
            concurrency: 32,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(10),
            idle: Duration::from_secs(10),
        }
    }
}

/// `Max open files` of a process: what bounds the sessions one process can hold.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FdLimits {
    pub server_soft: u64,
    pub server_hard: u64,
    pub client_soft: u64,
    pub client_hard: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Held {
    pub requested: usize,
    /// Sessions opened (initialized, authorized, subscribed).
    pub sessions: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub client_processes: usize,
    pub source_addresses: usize,
    pub open_seconds: f64,
    /// The server's count of authorized sessions once all were open.
    pub server_authorized: u64,
    pub rss_before: u64,
    pub rss_after: u64,
    pub bytes_per_session: f64,
    pub idle_seconds: f64,
    /// Server CPU (user + system) while the sessions idled, % of one core.
    pub idle_cpu_percent: f64,
}

/// The server's push-latency histogram over a phase (differences of its cumulative buckets).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerPushes {
    /// `(bound ms, frames written within it)`, cumulative.
    pub buckets: Vec<(u64, u64)>,
    pub count: u64,
    /// Smallest bucket bound holding 99 % of the frames (`None`: beyond the last bound).
    pub p99_at_most_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Revocation {
    pub repetitions: usize,
    /// Request sent → event 201 received, µs.
    pub client: Percentiles,
    /// Request sent → the Developer API's answer, µs (for comparison).
    pub api_answer: Percentiles,
    pub server: ServerPushes,
    /// Sessions held meanwhile (the registry was that large).
    pub held_meanwhile: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Fanout {
    pub sessions: usize,
    pub repetitions: usize,
    /// Version change (event 102): request sent → last session's frame received, µs.
    pub version_last_frame: Percentiles,
    /// The one disable: request sent → last event 101 and last close 4101 received, µs.
    pub disable_last_event: u64,
    pub disable_last_close: u64,
    pub disable_events: u64,
    pub disable_closes: u64,
    pub server: ServerPushes,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub concurrency: usize,
    pub seconds: f64,
    /// Connect + initialize + authorize + close, per second.
    pub sessions_per_second: f64,
    /// Connect → authorized, µs.
    pub session_latency: Percentiles,
    pub failures: u64,
    pub first_failure: Option<String>,
    pub validate_per_second: f64,
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LiveResults {
    pub limits: FdLimits,
    pub held: Option<Held>,
    pub revocation: Option<Revocation>,
    pub fanout: Option<Fanout>,
    pub throughput: Option<Throughput>,
    pub notes: Vec<String>,
}

pub(crate) const CREDITS: u64 = 1_000_000_000_000;

/// Every request and action limit lifted: a benchmark measures the work, not the limiter.
pub(crate) fn limits_lifted() -> Vec<(&'static str, String)> {
    [
        "LICENSD_VALIDATE_PER_IP",
        "LICENSD_VALIDATE_PER_KEY",
        "LICENSD_HEARTBEAT_PER_KEY",
        "LICENSD_API_BURST",
        "LICENSD_API_PER_SECOND",
        "LICENSD_LIVE_SESSION_ACTIONS_PER_MINUTE",
        "LICENSD_LIVE_IP_ACTIONS_PER_MINUTE",
    ]
    .into_iter()
    .map(|name| (name, "1000000000".to_string()))
    .collect()
}

fn server_env(max_sessions: usize) -> Vec<(&'static str, String)> {
    let mut env = limits_lifted();
    env.push(("LICENSD_LIVE_MAX_SESSIONS", max_sessions.to_string()));
    env
}

pub async fn run(options: &LiveOptions) -> anyhow::Result<LiveResults> {
    let client_limits = open_file_limits("self");
    let deployment = Deployment::create(Backend::Sqlite, &options.licensd, "", "live")?;
    let requested = options.sessions.unwrap_or(ISSUE_SESSIONS);
    let max_sessions = requested + options.revocations + options.fanout + 1000;
    let server = deployment.start(&server_env(max_sessions))?;
    let server_limits = open_file_limits(&server.pid().to_string());
    let limits = FdLimits {
        server_soft: server_limits.0,
        server_hard: server_limits.1,
        client_soft: client_limits.0,
        client_hard: client_limits.1,
    };
    let mut notes = Vec::new();
    let allowed = (limits.server_soft as usize).saturating_sub(SERVER_FD_RESERVE + options.revocations);
    let sessions = match options.sessions {
        None => allowed.min(ISSUE_SESSIONS),
        Some(n) if n > allowed => {
            notes.push(format!(
                "{n} sessions asked for, {allowed} held: the server's open-file limit is {} (hard {}), \
                 and one process cannot hold more sockets than that",
                limits.server_soft, limits.server_hard
            ));
            allowed
        }
        Some(n) => n,
    };
    if sessions < ISSUE_SESSIONS && options.sessions.is_none() {
        notes.push(format!(
            "the issue asks for {ISSUE_SESSIONS} sessions; the server's open-file limit here is {} \
             (hard {}, not raisable), so {sessions} were held",
            limits.server_soft, limits.server_hard
        ));
    }
    let addr: SocketAddr = server.base_url.trim_start_matches("http://").parse()?;
    let merchant = fixture::merchant(&deployment, &server.base_url, CREDITS).await?;
    let api = Api::new(&server.base_url, &merchant.api_key)?;

    let throughput = if options.concurrency > 0 {
        eprintln!("== live: initialize + authorize throughput next to /auth/validate");
        Some(throughput(&api, &server, addr, &merchant, options).await?)
    } else {
        None
    };

    let (app, ws_key) = api.create_app("Held sessions").await?;
    let held_merchant = Merchant { api_key: merchant.api_key.clone(), app };
    let keys = fixture::licenses(&server.base_url, &held_merchant, sessions + options.revocations, 1, 8).await?;
    eprintln!("== live: holding {sessions} sessions");
    let (held, holders) = hold_sessions(&server, &api, addr, &ws_key, &keys[..sessions], requested, options).await?;
    let revocation = if options.revocations > 0 {
        eprintln!("== live: {} single revocations", options.revocations);
        Some(revocations(&api, &api, addr, &ws_key, &keys[sessions..], held.sessions, options.sources).await?)
    } else {
        None
    };
    for holder in holders {
        holder.release()?;
    }
    api.wait_for_sessions(0).await?;

    let fanout = if options.fanout > 0 {
        eprintln!("== live: fan-out to {} sessions", options.fanout);
        Some(fanout(&api, addr, options).await?)
    } else {
        None
    };
    server.stop();
    Ok(LiveResults { limits, held: Some(held), revocation, fanout, throughput, notes })
}

/// The Developer API, as the benchmark's merchant.
pub(crate) struct Api {
    http: reqwest::Client,
    pub(crate) base: String,
    key: String,
}

impl Api {
    pub(crate) fn new(base: &str, key: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().pool_max_idle_per_host(usize::MAX).tcp_nodelay(true).build()?;
        Ok(Self { http, base: base.to_string(), key: key.to_string() })
    }

    /// The same merchant on another server (another node of the same database).
    pub(crate) fn on(&self, base: &str) -> Self {
        Self { http: self.http.clone(), base: base.to_string(), key: self.key.clone() }
    }

    pub(crate) async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let answer = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await?;
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{method} {path} answered {status}: {body}");
        Ok(body)
    }

    /// A new app: its credentials and its WebSocket API key.
    pub(crate) async fn create_app(&self, name: &str) -> anyhow::Result<(AppCredentials, String)> {
        let app = self.send(reqwest::Method::POST, "/v1/apps", json!({ "name": name })).await?;
        let text = |f: &str| app[f].as_str().map(str::to_string).with_context(|| format!("no {f} in {app}"));
        Ok((AppCredentials::new(&text("appId")?, &text("appSecret")?, &text("publicKey")?)?, text("websocketApiKey")?))
    }

    pub(crate) async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self.http.get(format!("{}/metrics", self.base)).send().await?.error_for_status()?.text().await?)
    }

    /// Waits (up to a minute) until the server holds at most `at_most` live sessions.
    async fn wait_for_sessions(&self, at_most: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let held = metric(&self.metrics().await?, "licensd_live_sessions").unwrap_or(0.0) as u64;
            if held <= at_most {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "the server still holds {held} live sessions after a minute");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `(soft, hard)` open-file limit of `/proc/<pid>` (`self` for this process).
fn open_file_limits(pid: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let line = text.lines().find(|l| l.starts_with("Max open files")).unwrap_or_default();
    let mut numbers = line["Max open files".len().min(line.len())..].split_whitespace().map(|n| {
        if n == "unlimited" {
            u64::MAX
        } else {
            n.parse().unwrap_or(0)
        }
    });
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

/// A plain (label-less) metric's value.
pub(crate) fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `(bound, cumulative count)` of the push-latency histogram, and its count.
fn push_histogram(text: &str) -> (Vec<(u64, u64)>, u64) {
    let buckets = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("licensd_live_push_latency_ms_bucket{le=\"")?;
            let (bound, count) = rest.split_once("\"} ")?;
            Some((bound.parse().ok()?, count.trim().parse().ok()?))
        })
        .collect();
    (buckets, metric(text, "licensd_live_push_latency_ms_count").unwrap_or(0.0) as u64)
}

/// The histogram of the frames written between two scrapes.
fn pushes_between(before: &str, after: &str) -> ServerPushes {
    let ((b0, c0), (b1, c1)) = (push_histogram(before), push_histogram(after));
    let buckets: Vec<(u64, u64)> =
        b1.iter().map(|(bound, n)| (*bound, n - b0.iter().find(|(b, _)| b == bound).map_or(0, |(_, n)| *n))).collect();
    let count = c1.saturating_sub(c0);
    let needed = (count as f64 * 0.99).ceil() as u64;
    let p99_at_most_ms = buckets.iter().find(|(_, n)| *n >= needed && count > 0).map(|(b, _)| *b);
    ServerPushes { buckets, count, p99_at_most_ms }
}

/// user + system CPU time of `pid`, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields count from after its closing parenthesis.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

pub(crate) fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Opens `sessions` sessions in child processes and measures memory and idle CPU.
async fn hold_sessions(
    server: &Server,
    api: &Api,
    addr: SocketAddr,
    ws_key: &str,
    keys: &[String],
    requested: usize,
    options: &LiveOptions,
) -> anyhow::Result<(Held, Vec<hold::Holder>)> {
    let sessions = keys.len();
    let keys_file = std::env::temp_dir().join(format!("licensd-bench-{}-held-keys", std::process::id()));
    hold::write_keys(&keys_file, keys)?;
    let per_process = (open_file_limits("self").0 as usize).saturating_sub(CLIENT_FD_RESERVE).max(1);
    settle().await;
    let rss_before = server.rss_bytes();
    let started = Instant::now();
    let mut holders = Vec::new();
    let mut first = 0;
    while first < sessions {
        let count = per_process.min(sessions - first);
        let share = hold::Share {
            server: addr,
            ws_key: ws_key.to_string(),
            keys: keys_file.clone(),
            first,
            count,
            sources: options.sources,
            concurrency: options.open_concurrency,
        };
        holders.push(hold::Holder::start(&share)?);
        first += count;
    }
    let (mut held, mut failed, mut first_error) = (0, 0, None);
    for holder in &mut holders {
        let opened = holder.opened()?;
        held += opened.held;
        failed += opened.failed;
        first_error = first_error.or(opened.first_error);
    }
    let open_seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&keys_file);
    eprintln!("   {held} open in {open_seconds:.1} s ({failed} failed)");
    settle().await;
    let rss_after = server.rss_bytes();
    let server_authorized = metric(&api.metrics().await?, "licensd_live_authorized_sessions").unwrap_or(0.0) as u64;
    let ticks = cpu_ticks(server.pid());
    let idle_started = Instant::now();
    tokio::time::sleep(options.idle).await;
    let idle_seconds = idle_started.elapsed().as_secs_f64();
    let used = (cpu_ticks(server.pid()) - ticks) as f64 / clock_ticks_per_second();
    let bytes_per_session = rss_after.saturating_sub(rss_before) as f64 / held.max(1) as f64;
    eprintln!(
        "   {:.0} bytes per session (RSS {} → {} MiB); idle CPU {:.2} %",
        bytes_per_session,
        rss_before >> 20,
        rss_after >> 20,
        100.0 * used / idle_seconds
    );
    let held = Held {
        requested,
        sessions: held,
        failed,
        first_error,
        client_processes: holders.len(),
        source_addresses: options.sources,
        open_seconds,
        server_authorized,
        rss_before,
        rss_after,
        bytes_per_session,
        idle_seconds,
        idle_cpu_percent: 100.0 * used / idle_seconds,
    };
    Ok((held, holders))
}

/// Lets the server finish what it was doing (appends, allocator) before a memory reading.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(3)).await;
}

/// One subscribed session per key on the server at `addr` (whose Developer API is
/// `sessions_on`, for its push histogram); each key revoked in turn through `api` (the same
/// server, or another node of its database), timed to its event 201.
pub(crate) async fn revocations(
    api: &Api,
    sessions_on: &Api,
    addr: SocketAddr,
    ws_key: &str,
    keys: &[String],
    held_meanwhile: usize,
    sources: usize,
) -> anyhow::Result<Revocation> {
    let before = sessions_on.metrics().await?;
    let (mut frames, mut answers) = (Vec::new(), Vec::new());
    // Each session is opened just before its revocation: a session this client is not reading
    // answers no pings, and the server would close it if the revocations before it took longer
    // than a ping interval (they do on the Postgres fallback of the nodes benchmark).
    for (i, key) in keys.iter().enumerate() {
        let client_id = format!("revoked-{key}");
        let opening = Opening { ws_key, client_id: &client_id, license: Some(key), subscribe: true };
        let mut stream = client::open(addr, client::source(i, sources), opening).await?;
        let stream = &mut stream;
        let sent = Instant::now();
        let revoke = async {
            let answered =
                api.send(reqwest::Method::PUT, &format!("/v1/licenses/{key}"), json!({"action": "revoke"})).await;
            answered.map(|_| sent.elapsed())
        };
        let event = async {
            let event = tokio::time::timeout(Duration::from_secs(30), client::next_event(stream)).await;
            (event, sent.elapsed())
        };
        let (answered, (event, received)) = tokio::join!(revoke, event);
        answers.push(micros(answered?));
        match event {
            Ok(Some(201)) => frames.push(micros(received)),
            other => anyhow::bail!("revoking {key}: expected event 201, got {other:?}"),
        }
        client::close(stream).await;
    }
    // The server counts a push just after writing its frame: the last one may not be counted
    // yet when its frame has arrived here.
    let deadline = Instant::now() + Duration::from_secs(2);
    let server = loop {
        let server = pushes_between(&before, &sessions_on.metrics().await?);
        if server.count >= frames.len() as u64 || Instant::now() > deadline {
            break server;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let revocation = Revocation {
        repetitions: frames.len(),
        client: Percentiles::of(&mut frames),
        api_answer: Percentiles::of(&mut answers),
        server,
        held_meanwhile,
    };
    eprintln!(
        "   request → event 201: p50 {} µs, p99 {} µs; server commit → write p99 ≤ {:?} ms",
        revocation.client.p50, revocation.client.p99, revocation.server.p99_at_most_ms
    );
    Ok(revocation)
}

/// `count` initialized, subscribed sessions on `ws_key`'s app, held by this process.
async fn open_held(
    addr: SocketAddr,
    ws_key: &str,
    count: usize,
    options: &LiveOptions,
    tally: &Arc<Tally>,
    base: Instant,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let next = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..options.open_concurrency.max(1) {
        let (next, held, tally, stop, ws_key) =
            (next.clone(), held.clone(), tally.clone(), stop.clone(), ws_key.to_string());
        let sources = options.sources;
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                let client_id = format!("fanout-{i:07}");
                let opening = Opening { ws_key: &ws_key, client_id: &client_id, license: None, subscribe: true };
                let stream = client::open(addr, client::source(i, sources), opening).await?;
                held.lock().expect("held").push(client::hold(stream, tally.clone(), base, stop.clone()));
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined??;
    }
    let tasks = std::mem::take(&mut *held.lock().expect("held"));
    Ok(tasks)
}

/// Waits until `counter` reaches `target` (30 s at most).
async fn wait_count(counter: &std::sync::atomic::AtomicU64, target: u64, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter.load(Ordering::SeqCst) < target {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what}: {} of {target} sessions got it within 30 s",
            counter.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Version changes (event 102) to every subscribed session of one app, `fanout_repeats`
/// times, then the app disabled once (event 101, then close 4101).
async fn fanout(api: &Api, addr: SocketAddr, options: &LiveOptions) -> anyhow::Result<Fanout> {
    let (app, ws_key) = api.create_app("Fan-out").await?;
    let tally = Arc::new(Tally::default());
    let base = Instant::now();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tasks = open_held(addr, &ws_key, options.fanout, options, &tally, base, &stopped).await?;
    let sessions = tasks.len() as u64;
    settle().await;
    let path = format!("/v1/apps/{}", app.app_id);
    let before = api.metrics().await?;
    let nanos = |since: Instant| since.duration_since(base).as_nanos() as u64;
    let mut last_frames = Vec::new();
    for repetition in 0..options.fanout_repeats {
        tally.reset();
        let sent = nanos(Instant::now());
        api.send(reqwest::Method::PUT, &path, json!({ "version": format!("bench-{repetition}") })).await?;
        wait_count(&tally.events, sessions, "event 102").await?;
        last_frames.push((tally.last_event_ns.load(Ordering::SeqCst).saturating_sub(sent)) / 1000);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tally.reset();
    let sent = nanos(Instant::now());
    api.send(reqwest::Method::PUT, &path, json!({ "disabled": true })).await?;
    wait_count(&tally.events, sessions, "event 101").await?;
    wait_count(&tally.closes, sessions, "close 4101").await?;
    let server = pushes_between(&before, &api.metrics().await?);
    let fanout = Fanout {
        sessions: sessions as usize,
        repetitions: last_frames.len(),
        version_last_frame: Percentiles::of(&mut last_frames),
        disable_last_event: tally.last_event_ns.load(Ordering::SeqCst).saturating_sub(sent) / 1000,
        disable_last_close: tally.last_close_ns.load(Ordering::SeqCst).saturating_sub(sent) / 1000,
        disable_events: tally.events.load(Ordering::SeqCst),
        disable_closes: tally.closes.load(Ordering::SeqCst),
        server,
    };
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    eprintln!(
        "   version change → last of {} frames: p50 {} µs, p99 {} µs; disable → last close {} µs",
        fanout.sessions, fanout.version_last_frame.p50, fanout.version_last_frame.p99, fanout.disable_last_close
    );
    Ok(fanout)
}

/// Closed loops of `concurrency` clients: HTTP validate, then sessions that connect, initialize,
/// authorize and close, with the same licenses and machines (the client id is the machine's
/// hwid, bound to its slot by the login before).
async fn throughput(
    api: &Api,
    server: &Server,
    addr: SocketAddr,
    merchant: &Merchant,
    options: &LiveOptions,
) -> anyhow::Result<Throughput> {
    let ws_key =
        api.send(reqwest::Method::POST, &format!("/v1/apps/{}/websocket-key", merchant.app.app_id), json!({})).await?;
    let ws_key = ws_key["websocketApiKey"].as_str().context("no websocketApiKey")?.to_string();
    let keys = fixture::licenses(&server.base_url, merchant, 1000, 2, 4).await?;
    let target = Target {
        base_url: server.base_url.clone(),
        app: merchant.app.clone(),
        machines: Arc::new(fixture::machines(&keys, 2)),
    };
    let machines = Arc::new(load::log_in_all(&target, 16).await?);
    let target = Target { machines: machines.clone(), ..target };
    let spec = LoadSpec::closed(Workload::Only(Call::Validate), options.concurrency, options.warmup, options.duration);
    let validate = load::run(&target, spec).await?;
    let sessions = sessions_closed_loop(addr, &ws_key, &machines, options).await;
    let seconds = options.duration.as_secs_f64();
    let mut latencies = sessions.latencies;
    let sessions_per_second = latencies.len() as f64 / seconds;
    let result = Throughput {
        concurrency: options.concurrency,
        seconds,
        sessions_per_second,
        session_latency: Percentiles::of(&mut latencies),
        failures: sessions.failures,
        first_failure: sessions.first_failure,
        validate_per_second: validate.throughput,
        ratio: sessions_per_second / validate.throughput.max(1e-9),
    };
    eprintln!(
        "   validate {:.0}/s | sessions {:.0}/s ({:.2}×), {} failures",
        result.validate_per_second, result.sessions_per_second, result.ratio, result.failures
    );
    Ok(result)
}

struct SessionsRun {
    latencies: Vec<u64>,
    failures: u64,
    first_failure: Option<String>,
}

async fn sessions_closed_loop(
    addr: SocketAddr,
    ws_key: &str,
    machines: &Arc<Vec<Machine>>,
    options: &LiveOptions,
) -> SessionsRun {
    let measured_from = Instant::now() + options.warmup;
    let end = measured_from + options.duration;
    let mut workers = tokio::task::JoinSet::new();
    let concurrency = options.concurrency.max(1);
    for worker in 0..concurrency {
        let (machines, ws_key, sources) = (machines.clone(), ws_key.to_string(), options.sources);
        workers.spawn(async move {
            let mut run = SessionsRun { latencies: Vec::new(), failures: 0, first_failure: None };
            let mut next = worker;
            while Instant::now() < end {
                let machine = &machines[next % machines.len()];
                next += concurrency;
                let started = Instant::now();
                let opening = Opening {
                    ws_key: &ws_key,
                    client_id: &machine.hwid,
                    license: Some(&machine.license_key),
                    subscribe: false,
                };
                let opened = client::open(addr, client::source(next, sources), opening).await;
                let latency = micros(started.elapsed());
                let counted = started >= measured_from && Instant::now() <= end;
                match opened {
                    Ok(mut stream) => {
                        client::close(&mut stream).await;
                        if counted {
                            run.latencies.push(latency);
                        }
                    }
                    Err(e) => {
                        run.failures += u64::from(counted);
                        run.first_failure.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            run
        });
    }
    let mut all = SessionsRun { latencies: Vec::new(), failures: 0, first_failure: None };
    while let Some(Ok(run)) = workers.join_next().await {
        all.latencies.extend(run.latencies);
        all.failures += run.failures;
        all.first_failure = all.first_failure.or(run.first_failure);
    }
    all
}
