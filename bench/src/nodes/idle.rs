//! What an idle cluster costs Postgres, and the part of it that is the Kafka probe: each node
//! asks the broker every `LICENSD_KAFKA_PROBE_MS` and, while it answers, reads the relay's
//! checkpoint and the oldest event after it from Postgres (the relay-stall check). Measured as
//! the database's committed transactions (`pg_stat_database.xact_commit`, no extension needed)
//! and the CPU of its Postgres backends over an idle window, with the probe at its default and
//! then at ten times the interval (the nodes restarted): the difference is the probe's.

use crate::deployment::{self, Server};
use crate::live::{clock_ticks_per_second, cpu_ticks};
use serde::Serialize;
use std::time::{Duration, Instant};

/// The product's default probe interval, and the slow one compared with it.
pub const DEFAULT_PROBE_MS: u64 = 1000;
pub const SLOW_PROBE_MS: u64 = 10 * DEFAULT_PROBE_MS;

#[derive(Debug, Clone, Serialize)]
pub struct Idle {
    pub probe_ms: u64,
    pub seconds: f64,
    /// Transactions committed in the nodes' database per second.
    pub transactions_per_second: f64,
    /// CPU (user + system) of the database's Postgres backends, % of one core.
    pub postgres_cpu_percent: f64,
    /// CPU of all the nodes together, % of one core.
    pub nodes_cpu_percent: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeCost {
    pub nodes: usize,
    pub default: Idle,
    pub slow: Idle,
    /// Δ transactions ÷ Δ probes (the probes one node makes per second, times the nodes).
    pub transactions_per_probe: f64,
    /// Δ Postgres backend CPU ÷ Δ probes, µs.
    pub postgres_cpu_us_per_probe: f64,
}

impl ProbeCost {
    pub fn of(nodes: usize, default: Idle, slow: Idle) -> Self {
        let probes_per_second =
            nodes as f64 * (1000.0 / default.probe_ms as f64 - 1000.0 / slow.probe_ms as f64).max(1e-9);
        let transactions_per_probe =
            (default.transactions_per_second - slow.transactions_per_second) / probes_per_second;
        let cpu_seconds_per_second = (default.postgres_cpu_percent - slow.postgres_cpu_percent) / 100.0;
        let postgres_cpu_us_per_probe = 1e6 * cpu_seconds_per_second / probes_per_second;
        Self { nodes, default, slow, transactions_per_probe, postgres_cpu_us_per_probe }
    }
}

/// Measures `servers` (idle) for `window`; `admin_url` reaches the statistics of `database`.
pub async fn measure(
    servers: &[Server],
    admin_url: &str,
    database: &str,
    probe_ms: u64,
    window: Duration,
) -> anyhow::Result<Idle> {
    let commits = || -> anyhow::Result<f64> {
        let sql = format!("SELECT xact_commit FROM pg_stat_database WHERE datname = '{database}'");
        Ok(deployment::query(admin_url, &sql)?.parse()?)
    };
    let pids = deployment::query(admin_url, &format!("SELECT pid FROM pg_stat_activity WHERE datname = '{database}'"))?;
    let backends: Vec<u32> = pids.lines().filter_map(|p| p.trim().parse().ok()).collect();
    let ticks = |pids: &mut dyn Iterator<Item = u32>| pids.map(cpu_ticks).sum::<u64>();
    let (commits_before, postgres_before) = (commits()?, ticks(&mut backends.iter().copied()));
    let nodes_before = ticks(&mut servers.iter().map(Server::pid));
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let seconds = started.elapsed().as_secs_f64();
    let postgres = ticks(&mut backends.iter().copied()).saturating_sub(postgres_before);
    let nodes = ticks(&mut servers.iter().map(Server::pid)).saturating_sub(nodes_before);
    let percent = |ticks: u64| 100.0 * ticks as f64 / clock_ticks_per_second() / seconds;
    Ok(Idle {
        probe_ms,
        seconds,
        transactions_per_second: (commits()? - commits_before) / seconds,
        postgres_cpu_percent: percent(postgres),
        nodes_cpu_percent: percent(nodes),
    })
}
