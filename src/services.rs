//! Opening the pieces every command needs: the store, the master key, the writer.

use crate::config::Config;
use anyhow::{bail, Context};
use licensd_commands::{keyring, Commands, MasterKey, MasterKeySource, Writer, WriterConfig};
use licensd_domain::SystemClock;
use licensd_store::{redact_url, Store, StoreOptions};
use licensd_workers::Workers;
use std::sync::Arc;
use tokio::task::JoinHandle;

pub struct Services {
    pub store: Store,
    pub commands: Commands,
    /// Taken by [`Services::close_writer`].
    writer_task: Option<JoinHandle<()>>,
}

pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    prepare_data_dir(config)?;
    let store = connect(config).await?;
    migrate(config, &store).await?;
    Ok(store)
}

pub(crate) fn prepare_data_dir(config: &Config) -> anyhow::Result<()> {
    if !config.is_postgres() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create the data folder {}", config.data_dir.display()))?;
        ensure_writable(&config.data_dir)?;
    }
    Ok(())
}

pub(crate) async fn connect(config: &Config) -> anyhow::Result<Store> {
    let url = config.database_url();
    let options = StoreOptions {
        max_connections: config.db_max_connections,
        sqlite_synchronous_full: !config.sqlite_synchronous.eq_ignore_ascii_case("normal"),
        commit_settle: std::time::Duration::from_millis(config.commit_settle_ms),
        idle_in_transaction: std::time::Duration::from_millis(config.pg_idle_in_transaction_ms),
    };
    Store::connect(&url, &options).await.with_context(|| format!("cannot open {}", redact_url(&url)))
}

pub(crate) async fn migrate(config: &Config, store: &Store) -> anyhow::Result<()> {
    store.migrate().await.context("database migration failed")?;
    tracing::info!(backend = store.backend(), database = %redact_url(&config.database_url()), "database ready");
    Ok(())
}

/// The ring the configured key opens, refusing a key that cannot open the sealed values the
/// database already holds (a database copied without its key, the wrong key, or a key a
/// rotation replaced): running on would fail every request needing a secret and seal new values
/// under a key the old ones do not share. Runs before migrations, so a refused start leaves the
/// database as it was.
pub(crate) async fn open_keyring(config: &Config, store: &Store, key: &MasterKey) -> anyhow::Result<MasterKey> {
    let Some(ring) = keyring::open_ring(store, key).await.context("cannot read the master keyring")? else {
        let newest = keyring::newest_key_id(store).await.unwrap_or_default();
        bail!(
            "the master key is not this database's current key: `licensd rotate-master-key` moved it to key \
             {newest}, which this key does not open (an older key, or another deployment's); set \
             LICENSD_MASTER_KEY or LICENSD_MASTER_KEY_FILE to the newest key file the rotation wrote \
             (a rotation cut short is finished by running it again with its --new-key-file). Refusing to \
             start; nothing was changed"
        );
    };
    check_master_key(config, store, &ring).await?;
    Ok(ring)
}

async fn check_master_key(config: &Config, store: &Store, key: &MasterKey) -> anyhow::Result<()> {
    let probe = match store.backend() {
        "postgres" => "SELECT CAST(to_regclass('pii') AS TEXT)",
        _ => "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'pii'",
    };
    let vault_exists = store.query_text(probe, &[]).await?.into_iter().flatten().next().is_some();
    if !vault_exists {
        return Ok(()); // a new database: nothing sealed yet
    }
    let vault = licensd_commands::PiiVault::new(store.clone(), key.clone());
    if !vault.key_opens_stored_values().await.context("cannot read the sealed values to check the master key")? {
        bail!(
            "the master key cannot open the sealed values already in this database (a database copied \
             without its key, or the wrong key); set LICENSD_MASTER_KEY, or {}, to the key this \
             database was created with. Refusing to start; nothing was changed",
            config.data_dir.join("master.key").display()
        );
    }
    Ok(())
}

/// SQLite keeps its database, WAL and master key in the data folder: say so plainly when the
/// folder cannot be written (a read-only mount, a full disk, wrong owner) instead of SQLite's
/// "unable to open database file". Each probe has a name of its own (process and call): servers
/// and operator commands may start at once on one folder, and a shared name let one remove
/// another's file before that one did.
fn ensure_writable(dir: &std::path::Path) -> anyhow::Result<()> {
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".licensd-write-check-{}-{call}", std::process::id()));
    std::fs::write(&probe, b"ok")
        .and_then(|()| std::fs::remove_file(&probe))
        .with_context(|| format!("the data folder {} is not writable (read-only or full?)", dir.display()))
}

pub(crate) fn master_key(config: &Config) -> anyhow::Result<MasterKey> {
    if let Some(text) = &config.master_key {
        return MasterKey::parse(text).context("LICENSD_MASTER_KEY is invalid");
    }
    if let Some(path) = &config.master_key_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read LICENSD_MASTER_KEY_FILE {}", path.display()))?;
        return MasterKey::parse(&text)
            .with_context(|| format!("LICENSD_MASTER_KEY_FILE {} is invalid", path.display()));
    }
    if config.is_postgres() {
        bail!(
            "LICENSD_MASTER_KEY is required with Postgres (or LICENSD_MASTER_KEY_FILE naming a file that holds \
             it; generate one with: LICENSD_MASTER_KEY_FILE=PATH licensd init-master-key, or openssl rand -hex 32)"
        );
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
        prepare_data_dir(config)?;
        // Settings first: a bad key stops the start before the database is created or migrated.
        let key = master_key(config)?;
        let store = connect(config).await?;
        let key = match open_keyring(config, &store, &key).await {
            Ok(ring) => ring,
            Err(e) => {
                store.close().await;
                return Err(e);
            }
        };
        migrate(config, &store).await?;
        Ok(Self::with_key(config, store, key))
    }

    /// The services over an open, migrated store, sealing with `key` (a ring already opened).
    pub fn with_key(config: &Config, store: Store, key: MasterKey) -> Self {
        let writer_config = WriterConfig {
            queue_capacity: config.write_queue,
            max_batch: config.write_batch,
            pipeline: config.write_pipeline,
        };
        let (writer, writer_task) = Writer::spawn(store.clone(), writer_config);
        let clock = Arc::new(SystemClock);
        let commands = Commands::with_folded_streams(store.clone(), writer, clock, key, config.folded_streams);
        Self { store, commands, writer_task: Some(writer_task) }
    }

    /// Commits everything queued and stops the writer: every acknowledged write is then in the log.
    pub async fn close_writer(&mut self) {
        self.commands.writer().close();
        if let Some(task) = self.writer_task.take() {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "writer ended abnormally");
            }
        }
    }

    /// Commits everything queued, lets the workers finish their step, then closes the database.
    pub async fn shutdown(mut self, workers: Option<Workers>) {
        self.close_writer().await;
        if let Some(workers) = workers {
            workers.stop().await;
        }
        self.store.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::ensure_writable;

    /// Operator commands and a server may start at once on one data folder (the e2e test
    /// `two_accounts_cannot_share_an_email_even_when_created_at_once` runs four): one's probe
    /// must never be another's, or its removal finds the file gone and it reports the folder
    /// as not writable.
    #[test]
    fn probes_running_at_once_on_one_folder_all_succeed() {
        let dir = std::env::temp_dir().join(format!("licensd-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::thread::scope(|scope| {
            let probes: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        (0..200).map(|_| ensure_writable(&dir).map_err(|e| format!("{e:#}"))).collect::<Vec<_>>()
                    })
                })
                .collect();
            for probe in probes {
                for outcome in probe.join().unwrap() {
                    assert!(outcome.is_ok(), "{outcome:?}");
                }
            }
        });
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "no probe is left behind");
        std::fs::remove_dir(&dir).unwrap();
    }
}
