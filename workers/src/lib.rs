//! Background workers, started together and stopped together on shutdown.

pub mod commerce;
pub mod destinations;
pub mod email_index;
pub mod kafka;
pub mod low_balance;
pub mod metrics;
pub mod outbound;
pub mod ownership;
pub mod webhooks;

use licensd_commands::Commands;
use licensd_projections::{all_sql_projections, HotModel, HotRunner, SqlRunner, TailConfig};
use ownership::{gated, Held, LeaseConfig};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webhooks::{Dispatcher, WebhookConfig};

/// The running workers; [`Workers::stop`] lets each finish its current step.
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    store: licensd_store::Store,
    leases: LeaseConfig,
    roles: Vec<&'static str>,
}

impl Workers {
    /// Tails the log into the in-memory model and every SQL projection (`commits`, the writer's
    /// commit signal, wakes them early; `tails` configures the two kinds), keeps the database
    /// (SQLite's WAL checkpoint) and delivers webhooks. The SQL projections, the webhook
    /// dispatcher and commerce fulfilment run only while this node holds their lease (`leases`).
    /// With `kafka`, the Kafka relay is one more such role, and a follower feeds the in-memory
    /// model from the topic besides its own tail.
    #[allow(clippy::too_many_arguments)] // each is one independent part's settings
    pub fn start(
        commands: &Commands,
        hot: Arc<HotModel>,
        commits: watch::Receiver<u64>,
        (hot_tail, sql_tail): (TailConfig, TailConfig),
        webhooks: WebhookConfig,
        commerce: commerce::CommerceConfig,
        leases: LeaseConfig,
        kafka: Option<kafka::KafkaConfig>,
    ) -> Result<Self, StartError> {
        let store = commands.store();
        // The outbound clients first: a failure stops the start before any task runs.
        let dispatcher = Arc::new(Dispatcher::new(store.clone(), commands.clone(), webhooks)?);
        // Without SMTP there is nobody to alert: the alert's state stays in `GET /v1/credits`.
        let alerts = commerce.mailer.clone().map(|mailer| (mailer, commerce.low_balance_poll));
        let fulfilment = Arc::new(commerce::CommerceWorker::new(commands.clone(), hot.clone(), commerce)?);
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let hot_runner = HotRunner::new(store.clone(), hot.clone(), hot_tail);
        tasks.push(("hot", tokio::spawn(hot_runner.run(commits.clone(), stopped.clone()))));
        tasks.push(("maintenance", tokio::spawn(maintain(store.clone(), stopped.clone()))));
        let mut roles = ownership::ROLES.to_vec();
        if kafka.is_some() {
            roles.push(ownership::KAFKA_RELAY);
        }
        let held = Held::of(&roles);
        if let Some(config) = kafka {
            let relay = Arc::new(kafka::relay::Relay::new(store.clone(), config.clone())?);
            let wake = commits.clone();
            let relaying =
                gated(ownership::KAFKA_RELAY, held.role(ownership::KAFKA_RELAY), stopped.clone(), move |stop| {
                    relay.clone().run(wake.clone(), stop)
                });
            tasks.push((ownership::KAFKA_RELAY, tokio::spawn(relaying)));
            let log = HotRunner::new(store.clone(), hot.clone(), hot_tail);
            let follower = kafka::follower::Follower::new(config, hot.clone(), log, store.clone());
            tasks.push(("kafka follower", tokio::spawn(follower.run(stopped.clone()))));
        }
        // One reader for every SQL read model: each event read and decoded once per pace.
        let sql_runner = SqlRunner::shared(store.clone(), all_sql_projections(), sql_tail);
        let sql =
            gated(ownership::SQL_PROJECTIONS, held.role(ownership::SQL_PROJECTIONS), stopped.clone(), move |stop| {
                sql_runner.clone().run(commits.clone(), stop)
            });
        tasks.push((ownership::SQL_PROJECTIONS, tokio::spawn(sql)));
        let webhooks = gated(ownership::WEBHOOKS, held.role(ownership::WEBHOOKS), stopped.clone(), move |stop| {
            dispatcher.clone().run(stop)
        });
        tasks.push((ownership::WEBHOOKS, tokio::spawn(webhooks)));
        let fulfil = gated(ownership::COMMERCE, held.role(ownership::COMMERCE), stopped.clone(), move |stop| {
            fulfilment.clone().run(stop)
        });
        tasks.push((ownership::COMMERCE, tokio::spawn(fulfil)));
        if let Some((mailer, poll)) = alerts {
            // One node mails (the commerce role's owner), so several nodes send one alert.
            let (commands, hot) = (commands.clone(), hot.clone());
            let alerts = gated(ownership::COMMERCE, held.role(ownership::COMMERCE), stopped.clone(), move |stop| {
                low_balance::LowBalanceWorker::new(commands.clone(), hot.clone(), mailer.clone(), poll).run(stop)
            });
            tasks.push(("low-balance alerts", tokio::spawn(alerts)));
        }
        tasks.push(("leases", tokio::spawn(ownership::keep(store.clone(), leases.clone(), held, stopped))));
        Ok(Self { stop, tasks, store: store.clone(), leases, roles })
    }

    /// Stops every worker (each finishes its step), then gives up this node's leases so another
    /// node takes the roles over at once.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for (name, task) in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(worker = name, error = %e, "worker ended abnormally");
            }
        }
        ownership::release(&self.store, &self.leases, &self.roles).await;
    }
}

/// Why the workers did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Outbound(#[from] outbound::ClientError),
    #[error("cannot create the Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// Database upkeep every second until `stop`.
async fn maintain(store: licensd_store::Store, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if let Err(e) = store.maintain().await {
            tracing::warn!(error = %e, "database maintenance failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
    }
}
