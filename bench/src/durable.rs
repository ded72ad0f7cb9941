//! The durable floor alone, next to the floor, in alternating rounds: the quickest way to see
//! what a change to the write path does to the ratio the suite reports (the suite runs it once,
//! among many other things, and needs licensd built and provisioned).
//!
//! Both servers are this binary's `floor` command in child processes (their ids are printed, so
//! a profiler can attach); the closed loop validates as made-up machines (the floor checks no
//! license), and every answer is checked as the SDKs do.

use crate::deployment::{Backend, Deployment, Server};
use crate::load::{self, LoadSpec, Report, Target, Workload};
use crate::protocol::Call;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub struct DurableOptions {
    pub backend: Backend,
    pub postgres_url: String,
    pub rounds: usize,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// One round: the floor, then the durable floor, measured back to back.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Round {
    pub floor: f64,
    pub durable: f64,
    pub ratio: f64,
    pub floor_p99_us: u64,
    pub durable_p99_us: u64,
    pub failed: u64,
}

pub async fn run(options: &DurableOptions) -> anyhow::Result<Vec<Round>> {
    // The deployment only names (and for Postgres, creates) the database; no licensd runs.
    let log = Deployment::create(options.backend, Path::new("licensd"), &options.postgres_url, "durable-floor")?;
    let floor = Server::floor(None)?;
    let durable = Server::floor(Some(log.database_url()))?;
    eprintln!("floor pid {}, durable floor pid {} ({})", floor.pid(), durable.pid(), log.database_url());
    let keys: Vec<String> = (0..1000).map(|i| format!("FLOR-{i:04}-ABCD-EFGH")).collect();
    let machines = Arc::new(crate::fixture::machines(&keys, 2));
    let app = crate::suite::floor_app();
    let target =
        |server: &Server| Target { base_url: server.base_url.clone(), app: app.clone(), machines: machines.clone() };
    let spec = LoadSpec::closed(Workload::Only(Call::Validate), options.concurrency, options.warmup, options.duration);
    let mut rounds = Vec::with_capacity(options.rounds);
    for _ in 0..options.rounds {
        let plain = load::run(&target(&floor), spec).await?;
        let written = load::run(&target(&durable), spec).await?;
        let round = Round {
            floor: plain.throughput,
            durable: written.throughput,
            ratio: written.throughput / plain.throughput.max(1e-9),
            floor_p99_us: plain.latency_verified.p99,
            durable_p99_us: written.latency_verified.p99,
            failed: failures(&plain) + failures(&written),
        };
        eprintln!(
            "   floor {:>7.0}/s p99 {:>6} µs | durable floor {:>7.0}/s p99 {:>6} µs | {:.1} %",
            round.floor,
            round.floor_p99_us,
            round.durable,
            round.durable_p99_us,
            100.0 * round.ratio
        );
        rounds.push(round);
    }
    durable.stop();
    floor.stop();
    Ok(rounds)
}

/// Answers that were not a checked success.
fn failures(report: &Report) -> u64 {
    report.sent.saturating_sub(report.verified)
}
