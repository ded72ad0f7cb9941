//! `licensd rotate-master-key`: makes a new key the one that seals, re-seals every sealed value
//! under it (the secrets inside events, the PII vault, kept idempotent answers), then drops the
//! older keys from the keyring.
//!
//! Steps, each safe to repeat: (1) the new key is written to its own file (`--new-key-file`)
//! before anything refers to it; (2) keyring row N+1, sealed under the new key and holding every
//! older key, is inserted; from then on only the new key opens the database; (3) each app and
//! account whose secrets are under an older key gets an event carrying them sealed anew, and the
//! mutable tables' rows not yet under the new key are re-sealed in batches; (4) the local
//! snapshot of the in-memory model (it holds the old ciphertexts) is deleted and row N+1 is
//! rewritten without the older keys; (5) the new key file replaces the key file the settings
//! name. A run cut short anywhere is finished by running the command again: the new key file
//! opens the ring written in step 2, and step 3 skips what is done.
//!
//! Every server must be stopped (a running one keeps sealing under the old key): SQLite, the
//! data folder's lock; Postgres, no live lease (see [`crate::data_lock`]).

use crate::config::Config;
use crate::services;
use anyhow::{bail, Context};
use clap::Args;
use licensd_commands::{keyring, MasterKey, MasterKeySource};
use licensd_store::Store;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Args)]
pub struct RotateArgs {
    /// Where the new key is written (mode 0600) before anything refers to it; a run cut short
    /// is finished by running again with the same file. Default: the key file's path + `.new`
    /// (`<data dir>/master.key.new` when the key is given in `LICENSD_MASTER_KEY`).
    #[arg(help_heading = "Key rotation", long, env = "LICENSD_NEW_MASTER_KEY_FILE")]
    pub new_key_file: Option<PathBuf>,

    /// Rows re-sealed per transaction.
    #[arg(help_heading = "Key rotation", long, env = "LICENSD_ROTATE_BATCH", default_value_t = 500)]
    pub batch: usize,

    /// Also move the keys that sign tokens (SDK session tokens, dashboard and portal sessions,
    /// CSRF tokens, portal sign-in codes) to the new key: every one issued before stops
    /// verifying, so everyone signs in again. Use it when the old key may have leaked. Decided
    /// when the new key is added (a resumed run keeps the first run's choice).
    #[arg(help_heading = "Key rotation", long, env = "LICENSD_ROTATE_SIGN_EVERYONE_OUT")]
    pub sign_everyone_out: bool,
}

/// The file the settings read the key from (`None`: the key is in `LICENSD_MASTER_KEY`).
fn key_file(config: &Config) -> Option<PathBuf> {
    match (&config.master_key, &config.master_key_file) {
        (Some(_), _) => None,
        (None, Some(file)) => Some(file.clone()),
        (None, None) => Some(config.data_dir.join("master.key")),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

pub async fn run(config: &Config, args: &RotateArgs) -> anyhow::Result<()> {
    if args.batch == 0 {
        bail!("LICENSD_ROTATE_BATCH must be at least 1");
    }
    services::prepare_data_dir(config)?;
    let given = services::master_key(config)?;
    let key_file = key_file(config);
    let new_path = args
        .new_key_file
        .clone()
        .or_else(|| key_file.as_deref().map(|f| with_suffix(f, ".new")))
        .unwrap_or_else(|| config.data_dir.join("master.key.new"));
    let store = services::connect(config).await?;
    let result = match crate::data_lock::hold_for_offline(config, Some(&store), "rotate-master-key").await {
        Ok(_lock) => rotate(config, args, &store, &given, key_file.as_deref(), &new_path).await,
        Err(e) => Err(e),
    };
    store.close().await;
    println!("{}", serde_json::to_string_pretty(&result?).unwrap_or_default());
    Ok(())
}

async fn rotate(
    config: &Config,
    args: &RotateArgs,
    store: &Store,
    given: &MasterKey,
    key_file: Option<&Path>,
    new_path: &Path,
) -> anyhow::Result<Value> {
    let pending = read_key(new_path)?;
    let resumed = match &pending {
        Some(new) => keyring::open_ring(store, new).await?.filter(|ring| ring.key_id() > 0),
        None => None,
    };
    let (ring, was_resumed) = match resumed {
        // Step 2 is done: the new key opens the newest keyring row (the given key may be the old one).
        Some(ring) => {
            services::migrate(config, store).await?;
            (ring, true)
        }
        None => {
            let ring = services::open_keyring(config, store, given).await?;
            services::migrate(config, store).await?;
            let (new, source) = MasterKey::load_or_generate_file(new_path)
                .with_context(|| format!("cannot write the new key file {}", new_path.display()))?;
            if matches!(source, MasterKeySource::Generated(_)) {
                tracing::info!(path = %new_path.display(), "wrote the new master key");
            }
            if new.same_sealing_key(&ring) {
                bail!("{} holds the current key: remove it to rotate to a fresh key", new_path.display());
            }
            let added = keyring::add_key(store, &ring, &new, args.sign_everyone_out).await;
            (added.context("cannot add the new key to the keyring")?, false)
        }
    };
    let mut resealed = serde_json::Map::new();
    let events = reseal_events(config, store, &ring).await?;
    // The SQL read models (the webhook outbox keeps webhook secrets) take the new ciphertexts
    // now, not when a server next starts.
    licensd_projections::SqlRunner::shared(
        store.clone(),
        licensd_projections::all_sql_projections(),
        Default::default(),
    )
    .catch_up()
    .await
    .context("cannot bring the SQL read models up to the re-sealing events")?;
    resealed.insert("eventStreams".into(), events.streams.into());
    resealed.insert("eventValues".into(), events.values.into());
    for column in [&keyring::PII_VALUES, &licensd_api::SEALED_IDEMPOTENT_ANSWERS] {
        let count = keyring::reseal(store, &ring, column, args.batch, |done| {
            tracing::info!(table = column.name, resealed = done, "re-sealed a batch");
        })
        .await
        .with_context(|| format!("cannot re-seal {}", column.name))?;
        resealed.insert(column.name.to_string(), count.into());
    }
    let snapshot_deleted = match config.snapshot_path().filter(|p| p.exists()) {
        Some(path) => {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot delete the old snapshot {}", path.display()))?;
            true
        }
        None => false,
    };
    let ring = keyring::forget_older_keys(store, &ring).await.context("cannot drop the older keys")?;
    // Nothing the server reads may still need a dropped key: a second pass must find nothing.
    let left = reseal_events(config, store, &ring).await.context("a value still needs an older key")?;
    if left.values > 0 {
        bail!("{} values were still under an older key after re-sealing; run the rotation again", left.values);
    }
    let (key_now_in, note) = install(key_file, new_path)?;
    Ok(json!({
        "keyId": ring.key_id(),
        "resumed": was_resumed,
        "resealed": resealed,
        "olderKeysDropped": true,
        "signedEveryoneOut": ring.tokens_from_sealing_key(),
        "snapshotDeleted": snapshot_deleted,
        "keyFile": key_now_in.display().to_string(),
        "note": note,
    }))
}

/// Step 3 for the secrets inside events: appended through a writer of its own, closed (so
/// every event is committed) before the next step.
async fn reseal_events(config: &Config, store: &Store, ring: &MasterKey) -> anyhow::Result<licensd_commands::Resealed> {
    let mut services = services::Services::with_key(config, store.clone(), ring.clone());
    let result = services
        .commands
        .reseal_event_secrets(|done| {
            tracing::info!(streams = done.streams, values = done.values, "re-sealed the secrets of a stream");
        })
        .await;
    services.close_writer().await;
    result.context("cannot re-seal the secrets held in events")
}

/// A key file's key, if the file exists.
fn read_key(path: &Path) -> anyhow::Result<Option<MasterKey>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    MasterKey::parse(&text).map(Some).with_context(|| format!("{} does not hold a master key", path.display()))
}

/// Step 4: the new key takes the place of the key file the settings name. Returns where the new
/// key now is and what the operator still has to do.
fn install(key_file: Option<&Path>, new_path: &Path) -> anyhow::Result<(PathBuf, String)> {
    let Some(key_file) = key_file.filter(|f| *f != new_path) else {
        let note = format!(
            "rotated; LICENSD_MASTER_KEY still holds the old key, which is refused from now on: set it to the \
             content of {} (or set LICENSD_MASTER_KEY_FILE to that file) before the next start",
            new_path.display()
        );
        return Ok((new_path.to_path_buf(), note));
    };
    match std::fs::rename(new_path, key_file) {
        Ok(()) => {
            if let Some(dir) = key_file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir).and_then(|d| d.sync_all()).ok(); // the rename survives a crash
            }
            let note = "rotated; the key file now holds the new key (the old key is refused from now on, and the \
                        keyring no longer holds it: keep it only with backups taken before this rotation)";
            Ok((key_file.to_path_buf(), note.to_string()))
        }
        Err(e) => {
            let note = format!(
                "rotated, but {} could not replace {} ({e}): set LICENSD_MASTER_KEY_FILE to {} before the next start",
                new_path.display(),
                key_file.display(),
                new_path.display()
            );
            Ok((new_path.to_path_buf(), note))
        }
    }
}
