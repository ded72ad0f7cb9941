//! Background workers, started together and stopped together on shutdown.

pub mod commerce;
pub mod destinations;
pub mod low_balance;
pub mod metrics;
pub mod outbound;
pub mod webhooks;

use licensd_commands::Commands;
use licensd_projections::{all_sql_projections, HotModel, HotRunner, SqlRunner, TailConfig};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webhooks::{Dispatcher, WebhookConfig};

/// The running workers; [`Workers::stop`] lets each finish its current step.
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Workers {
    /// Tails the log into the in-memory model and every SQL projection (`commits`, the writer's
    /// commit signal, wakes them early; `tails` configures the two kinds), keeps the database
    /// (SQLite's WAL checkpoint) and delivers webhooks.
    pub fn start(
        commands: &Commands,
        hot: Arc<HotModel>,
        commits: watch::Receiver<u64>,
        (hot_tail, sql_tail): (TailConfig, TailConfig),
        webhooks: WebhookConfig,
        commerce: commerce::CommerceConfig,
    ) -> Result<Self, outbound::ClientError> {
        let store = commands.store();
        // The outbound clients first: a failure stops the start before any task runs.
        let dispatcher = Dispatcher::new(store.clone(), commands.clone(), webhooks)?;
        // Without SMTP there is nobody to alert: the alert's state stays in `GET /v1/credits`.
        let alerts = commerce.mailer.clone().map(|mailer| {
            low_balance::LowBalanceWorker::new(commands.clone(), hot.clone(), mailer, commerce.low_balance_poll)
        });
        let fulfilment = commerce::CommerceWorker::new(commands.clone(), hot.clone(), commerce)?;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let hot_runner = HotRunner::new(store.clone(), hot.clone(), hot_tail);
        tasks.push(("hot", tokio::spawn(hot_runner.run(commits.clone(), stopped.clone()))));
        // One reader for every SQL read model: each event read and decoded once per pace.
        let sql_runner = SqlRunner::shared(store.clone(), all_sql_projections(), sql_tail);
        tasks.push((sql_runner.name(), tokio::spawn(sql_runner.run(commits.clone(), stopped.clone()))));
        tasks.push(("maintenance", tokio::spawn(maintain(store.clone(), stopped.clone()))));
        tasks.push(("webhooks", tokio::spawn(dispatcher.run(stopped.clone()))));
        tasks.push(("commerce", tokio::spawn(fulfilment.run(stopped.clone()))));
        if let Some(alerts) = alerts {
            tasks.push(("low-balance alerts", tokio::spawn(alerts.run(stopped.clone()))));
        }
        Ok(Self { stop, tasks })
    }

    pub async fn stop(self) {
        self.stop.send_replace(true);
        for (name, task) in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(worker = name, error = %e, "worker ended abnormally");
            }
        }
    }
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
