//! Opening the pieces every command needs: the store, the master key, the writer.

use crate::config::Config;
use anyhow::{bail, Context};
use licensd_commands::{Commands, MasterKey, MasterKeySource, Writer, WriterConfig};
use licensd_domain::SystemClock;
use licensd_store::{redact_url, Store, StoreOptions};
use licensd_workers::Workers;
use std::sync::Arc;
use tokio::task::JoinHandle;

pub struct Services {
    pub store: Store,
    pub commands: Commands,
    writer_task: JoinHandle<()>,
}

pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let url = config.database_url();
    if !config.is_postgres() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create the data folder {}", config.data_dir.display()))?;
        ensure_writable(&config.data_dir)?;
    }
    let options = StoreOptions {
        max_connections: config.db_max_connections,
        sqlite_synchronous_full: !config.sqlite_synchronous.eq_ignore_ascii_case("normal"),
        commit_settle: std::time::Duration::from_millis(config.commit_settle_ms),
    };
    let store = Store::connect(&url, &options).await.with_context(|| format!("cannot open {}", redact_url(&url)))?;
    store.migrate().await.context("database migration failed")?;
    tracing::info!(backend = store.backend(), database = %redact_url(&url), "database ready");
    Ok(store)
}

/// SQLite keeps its database, WAL and master key in the data folder: say so plainly when the
/// folder cannot be written (a read-only mount, a full disk, wrong owner) instead of SQLite's
/// "unable to open database file".
fn ensure_writable(dir: &std::path::Path) -> anyhow::Result<()> {
    let probe = dir.join(".licensd-write-check");
    std::fs::write(&probe, b"ok")
        .and_then(|()| std::fs::remove_file(&probe))
        .with_context(|| format!("the data folder {} is not writable (read-only or full?)", dir.display()))
}

fn master_key(config: &Config) -> anyhow::Result<MasterKey> {
    if let Some(text) = &config.master_key {
        return MasterKey::parse(text).context("LICENSD_MASTER_KEY is invalid");
    }
    if config.is_postgres() {
        bail!("LICENSD_MASTER_KEY is required with Postgres (generate one with: openssl rand -hex 32)");
    }
    let (key, source) = MasterKey::load_or_generate(&config.data_dir)?;
    if let MasterKeySource::Generated(path) = source {
        tracing::warn!(
            path = %path.display(),
            "generated a new master key; back it up: without it the sealed secrets in this database cannot be opened"
        );
    }
    Ok(key)
}

impl Services {
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let store = open_store(config).await?;
        let key = master_key(config)?;
        let writer_config = WriterConfig { queue_capacity: config.write_queue, max_batch: config.write_batch };
        let (writer, writer_task) = Writer::spawn(store.clone(), writer_config);
        let commands = Commands::new(store.clone(), writer, Arc::new(SystemClock), key);
        Ok(Self { store, commands, writer_task })
    }

    /// Commits everything queued, lets the workers finish their step, then closes the database.
    pub async fn shutdown(self, workers: Option<Workers>) {
        self.commands.writer().close();
        if let Err(e) = self.writer_task.await {
            tracing::error!(error = %e, "writer ended abnormally");
        }
        if let Some(workers) = workers {
            workers.stop().await;
        }
        self.store.close().await;
    }
}
