//! Single-owner roles among several nodes on one database: a keeper takes and renews each role's
//! lease (store/src/leases.rs) and a gate runs the role's worker only while this node holds it,
//! stopping it when the lease is lost and starting it again when it comes back.

use licensd_store::Store;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The SQL read models' shared reader.
pub const SQL_PROJECTIONS: &str = "sql-projections";
/// The webhook dispatcher.
pub const WEBHOOKS: &str = "webhooks";
/// The commerce process manager (fulfilment of provider events).
pub const COMMERCE: &str = "commerce";
/// The Kafka relay (only with `LICENSD_KAFKA_BROKERS`).
pub const KAFKA_RELAY: &str = "kafka-relay";
/// The roles every node tries for; the Kafka relay is added when Kafka is configured.
pub const ROLES: [&str; 3] = [SQL_PROJECTIONS, WEBHOOKS, COMMERCE];

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// This node's name in the lease rows; a node restarted under the same name takes its own
    /// leases back at once.
    pub node: String,
    /// How long a taken or renewed lease lasts: a dead owner's roles move after at most this
    /// plus `renew`.
    pub ttl: Duration,
    /// How often leases are renewed, and free ones tried for; less than `ttl`.
    pub renew: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self { node: "licensd".into(), ttl: Duration::from_secs(6), renew: Duration::from_secs(2) }
    }
}

/// One receiver per role telling whether this node holds it now.
pub struct Held {
    senders: Vec<(&'static str, watch::Sender<bool>)>,
}

impl Held {
    pub fn new() -> Self {
        Self::of(&ROLES)
    }

    /// For exactly `roles`.
    pub fn of(roles: &[&'static str]) -> Self {
        Self { senders: roles.iter().map(|role| (*role, watch::channel(false).0)).collect() }
    }

    pub fn roles(&self) -> Vec<&'static str> {
        self.senders.iter().map(|(role, _)| *role).collect()
    }

    pub fn role(&self, role: &'static str) -> watch::Receiver<bool> {
        let (_, sender) = self.senders.iter().find(|(r, _)| *r == role).expect("a known role");
        sender.subscribe()
    }
}

impl Default for Held {
    fn default() -> Self {
        Self::new()
    }
}

/// Renews (or tries for) every role each `renew` until `stop`. A role whose renewal keeps failing
/// (the database unreachable) is given up once its lease may be about to expire, so the worker
/// stops before a survivor can take the role.
pub async fn keep(store: Store, config: LeaseConfig, held: Held, mut stop: watch::Receiver<bool>) {
    let ttl_ms = config.ttl.as_millis() as i64;
    // When the last successful take or renewal of each role was asked for.
    let mut renewed: Vec<Option<Instant>> = vec![None; held.senders.len()];
    while !*stop.borrow() {
        for ((role, sender), renewed) in held.senders.iter().zip(renewed.iter_mut()) {
            let asked = Instant::now();
            let holds = match store.hold_lease(role, &config.node, ttl_ms).await {
                Ok(true) => {
                    *renewed = Some(asked);
                    true
                }
                Ok(false) => {
                    *renewed = None;
                    false
                }
                Err(e) => {
                    tracing::warn!(role, error = %e, "cannot renew a lease; keeping it while it surely lasts");
                    // The lease was set to last `ttl` from after `asked`; the next check comes
                    // one `renew` later, so stop while that still falls inside it.
                    renewed.is_some_and(|at| at.elapsed() + config.renew < config.ttl)
                }
            };
            licensd_store::set_lease_held(role, holds);
            sender.send_if_modified(|was| {
                if *was != holds {
                    tracing::info!(role, node = %config.node, held = holds, "role ownership changed");
                    *was = holds;
                    return true;
                }
                false
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(config.renew) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Gives up this node's leases (of `roles`) at a clean shutdown (after its workers stopped).
pub async fn release(store: &Store, config: &LeaseConfig, roles: &[&'static str]) {
    for &role in roles {
        licensd_store::set_lease_held(role, false);
    }
    if let Err(e) = store.release_leases(&config.node).await {
        tracing::warn!(error = %e, "cannot release this node's leases; they move when they expire");
    }
}

/// Runs `worker` (given its own stop signal) while `held` is true, until `stop`: stopped (its
/// current step finishes) when the lease is lost, started afresh when it is taken again.
pub async fn gated<F, Fut>(
    role: &'static str,
    mut held: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    worker: F,
) where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        // Each wait drops the value it borrowed before anything else is awaited.
        let owned = async { held.wait_for(|h| *h).await.is_ok() };
        tokio::select! {
            owned = owned => if !owned { return },
            _ = async { drop(stop.wait_for(|s| *s).await) } => return,
        }
        let (stop_worker, worker_stopped) = watch::channel(false);
        let run = worker(worker_stopped);
        tokio::pin!(run);
        let stopping = tokio::select! {
            _ = &mut run => {
                tracing::warn!(role, "worker ended on its own; starting it again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            _ = async { drop(held.wait_for(|h| !*h).await) } => false,
            _ = async { drop(stop.wait_for(|s| *s).await) } => true,
        };
        stop_worker.send_replace(true);
        run.await;
        if stopping {
            return;
        }
        tracing::info!(role, "lease lost; worker stopped");
    }
}
