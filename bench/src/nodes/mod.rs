//! Several licensd nodes on one Postgres database with Kafka as the event bus (issue 19's
//! benchmark), against the release binary and a real Kafka-protocol broker (tansu):
//!
//! - **throughput**: `/auth/validate` in a closed loop of the same client count against 1, 2
//!   and 3 nodes (client i on node i mod N, as a connection-level balancer spreads them), as a
//!   ratio to one node and to the floor and the durable floor of the same run. Every node runs on
//!   the same cores as the others, Postgres, the broker and the load: this shows what each node
//!   costs, not how the design scales over machines (see the written model in BENCHMARKS.md);
//! - **revocation**: a license revoked through the Developer API of node A → event 201 at a
//!   subscribed WebSocket session on node C, first with Kafka (every node's `/healthz` says
//!   `logSource: kafka`), then with the broker stopped and every node on the Postgres fallback.
//!
//! Each node's log poll is raised to a minute, as the README advises with Kafka: what reaches a
//! node from another within seconds came through Kafka or, with the broker down, the fallback.

pub mod idle;
pub mod report;

use crate::deployment::{Backend, Deployment, Server};
use crate::fixture::{self, Merchant};
use crate::kafka::Broker;
use crate::live::{self, Api, Revocation};
use crate::load::{self, LoadSpec, Report, Target, Workload};
use crate::protocol::{AppCredentials, Call, Machine};
use crate::stats::Percentiles;
use anyhow::Context;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const TOPIC: &str = "licensd-bench-events";
const NAMES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// 127.0.0.x source addresses of the revocation sessions.
const SOURCES: usize = 8;
/// Each node's own log poll with Kafka (the tests' value): other nodes' events come by the topic.
const LOG_POLL_MS: &str = "60000";

#[derive(Debug, Clone)]
pub struct NodesOptions {
    pub licensd: PathBuf,
    /// The broker's binary (tansu).
    pub broker: PathBuf,
    /// A database on a server where the user may create databases.
    pub postgres_url: String,
    /// Up to this many nodes (1 to 3).
    pub nodes: usize,
    pub partitions: i32,
    pub licenses: usize,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Timed revocations with Kafka, and as many on the fallback (0 skips both).
    pub revocations: usize,
    /// Idle window of the probe's cost, with the probe at its default and ten times slower
    /// (zero skips it).
    pub idle: Duration,
    /// Measure the floor and the durable floor too (they run this program as a server, which a
    /// test binary is not).
    pub floors: bool,
}

/// One node's share of a throughput step.
#[derive(Debug, Clone, Serialize)]
pub struct NodeLoad {
    pub node: String,
    pub clients: usize,
    pub throughput: f64,
    pub verified: u64,
    pub latency: Percentiles,
    /// Events this node applied from Kafka messages per second over the step (every node
    /// applies every other node's events: the model follows the whole log).
    pub applied_from_kafka_per_second: f64,
}

/// `/auth/validate` against `nodes` nodes at once.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub nodes: usize,
    /// Verified answers per second, all nodes together.
    pub throughput: f64,
    pub sent: u64,
    pub verified: u64,
    pub failed_checks: u64,
    pub outcomes: BTreeMap<String, u64>,
    pub first_failure: Option<String>,
    pub per_node: Vec<NodeLoad>,
    /// ÷ the 1-node step of the same run.
    pub ratio_to_one: f64,
    /// Events the relay published per second over the step (warm-up included).
    pub published_per_second: f64,
}

/// The floors of the same run: no storage, and one durable Postgres append per answer.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Floors {
    pub floor: f64,
    pub durable_floor: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Pushes {
    /// What every node's `/healthz` said while the revocations ran.
    pub log_source: String,
    pub revocation: Revocation,
    /// Events the sessions' node applied from Kafka messages while the revocations ran (it writes
    /// nothing then, so each revocation reaches it by Kafka or by a read of the log).
    pub applied_from_kafka: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodesResults {
    pub cpus: usize,
    pub nodes: usize,
    pub partitions: i32,
    pub concurrency: usize,
    pub seconds: f64,
    pub licenses: usize,
    pub machines: usize,
    /// The nodes' settings that differ from the defaults (limits aside).
    pub settings: Vec<(String, String)>,
    pub floors: Option<Floors>,
    pub steps: Vec<Step>,
    pub kafka: Option<Pushes>,
    pub fallback: Option<Pushes>,
    pub probe: Option<idle::ProbeCost>,
}

/// Kafka on every node, request limits lifted (the work is measured, not the limiter).
fn node_env(broker: &Broker) -> Vec<(&'static str, String)> {
    let mut env = live::limits_lifted();
    env.extend(settings(broker));
    env
}

fn settings(broker: &Broker) -> Vec<(&'static str, String)> {
    vec![
        ("LICENSD_KAFKA_BROKERS", broker.address()),
        ("LICENSD_KAFKA_TOPIC", TOPIC.to_string()),
        ("LICENSD_LOG_POLL_MS", LOG_POLL_MS.to_string()),
    ]
}

pub async fn run(options: &NodesOptions) -> anyhow::Result<NodesResults> {
    anyhow::ensure!((1..=3).contains(&options.nodes), "--nodes is 1, 2 or 3");
    anyhow::ensure!(options.concurrency >= options.nodes, "at least one client per node");
    let mut broker = Broker::start(&options.broker)?;
    broker.create_topic(TOPIC, options.partitions).await?;
    let deployment = Deployment::create(Backend::Postgres, &options.licensd, &options.postgres_url, "nodes")?;
    let env = node_env(&broker);
    eprintln!("== nodes: {} on one Postgres database, broker {}", NAMES[0], broker.address());
    let mut servers = vec![deployment.start_node(NAMES[0], &env)?];
    wait_for_source(&servers, "kafka", Duration::from_secs(60)).await?;
    let first = servers[0].base_url.clone();
    let merchant = fixture::merchant(&deployment, &first, live::CREDITS).await?;
    let keys = fixture::licenses(&first, &merchant, options.licenses, 2, 4).await?;
    let target =
        Target { base_url: first.clone(), app: merchant.app.clone(), machines: Arc::new(fixture::machines(&keys, 2)) };
    let machines = load::log_in_all(&target, 16).await?;
    let floors = if options.floors { Some(floors(&machines, options).await?) } else { None };

    let mut steps: Vec<Step> = Vec::new();
    for n in 1..=options.nodes {
        if n > 1 {
            servers.push(deployment.start_node(NAMES[n - 1], &env)?);
            wait_for_source(&servers, "kafka", Duration::from_secs(60)).await?;
            converged(&servers, Duration::from_secs(60)).await?;
        }
        let one = steps.first().map(|s| s.throughput);
        let step = spread(&servers, &merchant.app, &machines, one, options).await?;
        eprintln!(
            "   {n} node(s): {:.0} validations/s ({:.2}× one node), {} of {} verified",
            step.throughput, step.ratio_to_one, step.verified, step.sent
        );
        steps.push(step);
    }

    let (mut kafka, mut fallback) = (None, None);
    if options.revocations > 0 {
        let api = Api::new(&first, &merchant.api_key)?;
        let last = servers.last().context("no node")?;
        let on_last = api.on(&last.base_url);
        let addr: SocketAddr = last.base_url.trim_start_matches("http://").parse()?;
        let (app, ws_key) = api.create_app("Revocations").await?;
        let revoked = Merchant { api_key: merchant.api_key.clone(), app };
        let count = options.revocations;
        let keys = fixture::licenses(&first, &revoked, 2 * count, 1, 4).await?;
        converged(&servers, Duration::from_secs(60)).await?;
        let last_name = NAMES[servers.len() - 1];
        eprintln!("== nodes: {count} revocations on {} → sessions on {last_name}, through Kafka", NAMES[0]);
        let before = scrape(std::slice::from_ref(last)).await?;
        let through_kafka = live::revocations(&api, &on_last, addr, &ws_key, &keys[..count], 0, SOURCES).await?;
        let applied_from_kafka = applied_since(last, &before).await?;
        kafka = Some(Pushes { log_source: "kafka".into(), revocation: through_kafka, applied_from_kafka });
        broker.stop();
        wait_for_source(&servers, "postgres-fallback", Duration::from_secs(60)).await?;
        eprintln!("== nodes: {count} revocations with the broker stopped (Postgres fallback)");
        let before = scrape(std::slice::from_ref(last)).await?;
        let on_fallback = live::revocations(&api, &on_last, addr, &ws_key, &keys[count..], 0, SOURCES).await?;
        let applied_from_kafka = applied_since(last, &before).await?;
        fallback = Some(Pushes { log_source: "postgres-fallback".into(), revocation: on_fallback, applied_from_kafka });
        broker.resume()?;
    }
    let probe =
        if options.idle.is_zero() { None } else { Some(probe_cost(&deployment, &mut servers, &env, options).await?) };
    for server in servers {
        server.stop();
    }
    Ok(NodesResults {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        nodes: options.nodes,
        partitions: options.partitions,
        concurrency: options.concurrency,
        seconds: options.duration.as_secs_f64(),
        licenses: options.licenses,
        machines: machines.len(),
        settings: settings(&broker).into_iter().skip(1).map(|(k, v)| (k.to_string(), v)).collect(),
        floors,
        steps,
        kafka,
        fallback,
        probe,
    })
}

/// The idle cluster with the probe at its default, then restarted with it ten times slower.
async fn probe_cost(
    deployment: &Deployment,
    servers: &mut Vec<Server>,
    env: &[(&'static str, String)],
    options: &NodesOptions,
) -> anyhow::Result<idle::ProbeCost> {
    let database = deployment.database_name().context("the nodes' database has no name")?.to_string();
    wait_for_source(servers, "kafka", Duration::from_secs(60)).await?;
    converged(servers, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("== nodes: idle for {:?}, the probe at its default, then ten times slower", options.idle);
    let default =
        idle::measure(servers, &options.postgres_url, &database, idle::DEFAULT_PROBE_MS, options.idle).await?;
    let count = servers.len();
    for server in servers.drain(..) {
        server.stop();
    }
    let mut slow_env = env.to_vec();
    slow_env.push(("LICENSD_KAFKA_PROBE_MS", idle::SLOW_PROBE_MS.to_string()));
    for name in &NAMES[..count] {
        servers.push(deployment.start_node(name, &slow_env)?);
    }
    wait_for_source(servers, "kafka", Duration::from_secs(60)).await?;
    converged(servers, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let slow = idle::measure(servers, &options.postgres_url, &database, idle::SLOW_PROBE_MS, options.idle).await?;
    let cost = idle::ProbeCost::of(count, default, slow);
    eprintln!(
        "   {:.1} → {:.1} transactions/s; {:.2} transactions and {:.0} µs of Postgres CPU per probe",
        cost.default.transactions_per_second,
        cost.slow.transactions_per_second,
        cost.transactions_per_probe,
        cost.postgres_cpu_us_per_probe
    );
    Ok(cost)
}

/// Each node's `/metrics`.
async fn scrape(servers: &[Server]) -> anyhow::Result<Vec<String>> {
    let mut texts = Vec::new();
    for server in servers {
        texts.push(reqwest::get(format!("{}/metrics", server.base_url)).await?.error_for_status()?.text().await?);
    }
    Ok(texts)
}

/// Events `server` applied from Kafka since its metrics read `before`.
async fn applied_since(server: &Server, before: &[String]) -> anyhow::Result<f64> {
    let after = scrape(std::slice::from_ref(server)).await?;
    Ok(grown(before, &after, "licensd_kafka_events_applied_total").iter().sum())
}

/// How much a counter grew on each node between two scrapes.
fn grown(before: &[String], after: &[String], name: &str) -> Vec<f64> {
    let value = |text: &String| live::metric(text, name).unwrap_or(0.0);
    before.iter().zip(after).map(|(b, a)| value(a) - value(b)).collect()
}

fn spec(options: &NodesOptions, concurrency: usize) -> LoadSpec {
    LoadSpec::closed(Workload::Only(Call::Validate), concurrency, options.warmup, options.duration)
}

/// The floor and the durable floor (one event appended to a Postgres database of its own per
/// answer) with the same clients and machines, while node A idles.
async fn floors(machines: &[Machine], options: &NodesOptions) -> anyhow::Result<Floors> {
    eprintln!("== nodes: the floor and the durable floor (Postgres)");
    let floor = Server::floor(None)?;
    let app = crate::suite::floor_app();
    let target = Target { base_url: floor.base_url.clone(), app, machines: Arc::new(machines.to_vec()) };
    let plain = load::run(&target, spec(options, options.concurrency)).await?;
    floor.stop();
    let log = Deployment::create(Backend::Postgres, &options.licensd, &options.postgres_url, "floor")?;
    let durable = Server::floor(Some(log.database_url()))?;
    let durable_target = Target { base_url: durable.base_url.clone(), ..target };
    let durable_report = load::run(&durable_target, spec(options, options.concurrency)).await?;
    durable.stop();
    eprintln!("   floor {:.0}/s, durable floor {:.0}/s", plain.throughput, durable_report.throughput);
    Ok(Floors { floor: plain.throughput, durable_floor: durable_report.throughput })
}

/// The closed loop spread over `servers`: client i on node i mod N, each node's clients on a
/// share of the machines of its own, all at once; `one` is the 1-node figure (`None`: this is it).
async fn spread(
    servers: &[Server],
    app: &AppCredentials,
    machines: &[Machine],
    one: Option<f64>,
    options: &NodesOptions,
) -> anyhow::Result<Step> {
    let n = servers.len();
    let share = machines.len() / n;
    let runs = servers.iter().enumerate().map(|(i, server)| {
        let clients = options.concurrency / n + usize::from(i < options.concurrency % n);
        let target = Target {
            base_url: server.base_url.clone(),
            app: app.clone(),
            machines: Arc::new(machines[i * share..(i + 1) * share].to_vec()),
        };
        let spec = spec(options, clients);
        async move { load::run(&target, spec).await.map(|report| (clients, report)) }
    });
    let before = scrape(servers).await?;
    let started = Instant::now();
    let reports: Vec<(usize, Report)> = futures::future::try_join_all(runs).await?;
    let after = scrape(servers).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let applied = grown(&before, &after, "licensd_kafka_events_applied_total");
    let published: f64 = grown(&before, &after, "licensd_kafka_relay_published_total").iter().sum();
    let mut outcomes = BTreeMap::new();
    for (_, report) in &reports {
        for (outcome, count) in &report.outcomes {
            *outcomes.entry(outcome.clone()).or_insert(0) += count;
        }
    }
    let throughput: f64 = reports.iter().map(|(_, r)| r.throughput).sum();
    Ok(Step {
        nodes: n,
        throughput,
        sent: reports.iter().map(|(_, r)| r.sent).sum(),
        verified: reports.iter().map(|(_, r)| r.verified).sum(),
        failed_checks: reports.iter().map(|(_, r)| r.failed_checks).sum(),
        outcomes,
        first_failure: reports.iter().find_map(|(_, r)| r.first_failure.clone()),
        per_node: reports
            .iter()
            .zip(NAMES)
            .zip(applied)
            .map(|(((clients, r), node), applied)| NodeLoad {
                node: node.to_string(),
                clients: *clients,
                throughput: r.throughput,
                verified: r.verified,
                latency: r.latency_verified,
                applied_from_kafka_per_second: applied / elapsed,
            })
            .collect(),
        ratio_to_one: throughput / one.unwrap_or(throughput).max(1e-9),
        published_per_second: published / elapsed,
    })
}

async fn healthz(server: &Server) -> anyhow::Result<Value> {
    let answer = reqwest::get(format!("{}/healthz", server.base_url)).await?;
    Ok(answer.error_for_status()?.json().await?)
}

/// Waits until every node's `/healthz` says it follows `source`.
async fn wait_for_source(servers: &[Server], source: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let mut sources = Vec::new();
        for server in servers {
            sources.push(healthz(server).await?["logSource"].clone());
        }
        if sources.iter().all(|s| s == source) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "not every node follows {source} within {within:?}: {sources:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every node's model has read the log up to the same position.
async fn converged(servers: &[Server], within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let mut positions = Vec::new();
        for server in servers {
            positions.push(healthz(server).await?["readModelPosition"].clone());
        }
        if positions.windows(2).all(|w| w[0] == w[1]) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the nodes' models did not converge: {positions:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
