//! `licensd backup` and `licensd restore` for a SQLite deployment (Postgres: `pg_dump`, see
//! README "Operations").
//!
//! A backup is a folder: `licensd.db` and `licensd-read.db` copied while the server runs (see
//! `licensd_store::backup_sqlite`), the master key file when the key lives in the data folder,
//! and `backup.json` with the copied log's last position, event count and ordered digest, which
//! `restore` checks before it puts anything in place.

use crate::config::Config;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const MANIFEST: &str = "backup.json";
const KEY_FILE: &str = "master.key";

fn postgres_refused(what: &str) -> anyhow::Result<()> {
    bail!(
        "licensd {what} covers SQLite deployments; with Postgres use pg_dump / pg_restore on the database and keep \
         LICENSD_MASTER_KEY beside it (README \"Operations\")"
    )
}

/// SHA-256 over the log's events in order, every column of each; with the last position and count.
async fn log_digest(log_file: &Path) -> anyhow::Result<(i64, u64, String)> {
    let mut hasher = Sha256::new();
    let (head, events) = licensd_store::sqlite_event_lines(log_file, |line| {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    })
    .await
    .with_context(|| format!("cannot read the events of {}", log_file.display()))?;
    Ok((head, events, hex::encode(hasher.finalize())))
}

/// Where the master key comes from: copied into the backup only when it is the data folder's
/// own file (a key given in the environment or a mounted file is the operator's to keep).
fn data_dir_key(config: &Config) -> Option<PathBuf> {
    let path = config.data_dir.join(KEY_FILE);
    (config.master_key.is_none() && config.master_key_file.is_none() && path.exists()).then_some(path)
}

pub async fn backup(config: &Config, to: &Path) -> anyhow::Result<()> {
    if config.is_postgres() {
        return postgres_refused("backup");
    }
    let log_file = licensd_store::sqlite_log_file(&config.database_url())?;
    if !log_file.exists() {
        bail!("no database at {} to back up", log_file.display());
    }
    if to.exists() && std::fs::read_dir(to).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty: back up into a new folder", to.display());
    }
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    licensd_store::backup_sqlite(&log_file, to).await.context("cannot copy the database")?;
    let copied_log = to.join(log_file.file_name().context("the database path has no file name")?);
    let (head, events, digest) = log_digest(&copied_log).await?;
    let key = match data_dir_key(config) {
        Some(path) => {
            copy_private(&path, &to.join(KEY_FILE))?;
            "included (master.key): keep this backup as secret as the key itself"
        }
        None => "not included (it comes from LICENSD_MASTER_KEY or LICENSD_MASTER_KEY_FILE): restore needs that key",
    };
    let manifest = json!({
        "format": 1,
        "licensdVersion": env!("CARGO_PKG_VERSION"),
        "createdAt": chrono::Utc::now().to_rfc3339(),
        "logFile": copied_log.file_name().map(|n| n.to_string_lossy().into_owned()),
        "head": head,
        "events": events,
        "eventsSha256": digest,
        "masterKey": key,
    });
    std::fs::write(to.join(MANIFEST), serde_json::to_string_pretty(&manifest)?)
        .with_context(|| format!("cannot write {}", to.join(MANIFEST).display()))?;
    println!("{}", serde_json::to_string_pretty(&json!({ "backup": to.display().to_string(), "manifest": manifest }))?);
    Ok(())
}

pub async fn restore(config: &Config, from: &Path) -> anyhow::Result<()> {
    if config.is_postgres() {
        return postgres_refused("restore");
    }
    let manifest: Value = std::fs::read_to_string(from.join(MANIFEST))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .with_context(|| format!("{} is not a licensd backup (no readable {MANIFEST})", from.display()))?;
    let log_file = licensd_store::sqlite_log_file(&config.database_url())?;
    let name = log_file.file_name().context("the database path has no file name")?;
    if manifest["logFile"].as_str() != Some(&*name.to_string_lossy()) {
        bail!("the backup's log file is {} but this deployment's is {}", manifest["logFile"], name.to_string_lossy());
    }
    // Held until the restored database was opened: a server starting meanwhile would create an
    // empty database under the files being copied in.
    let _data_lock = crate::data_lock::hold_for_offline(config, None, "restore").await?;
    let files = licensd_store::sqlite_files(&log_file);
    if let Some(existing) = files.iter().find(|f| f.exists()) {
        bail!("{} exists: restore into a fresh data folder (nothing was changed)", existing.display());
    }
    let backup_key = from.join(KEY_FILE);
    let key_configured = config.master_key.is_some() || config.master_key_file.is_some();
    if !key_configured && !backup_key.exists() {
        bail!(
            "the backup holds no master key: set LICENSD_MASTER_KEY or LICENSD_MASTER_KEY_FILE to the backed-up \
             deployment's key (nothing was changed)"
        );
    }
    // Checked on the backup itself before anything is put in place.
    let (head, events, digest) = log_digest(&from.join(name)).await?;
    if manifest["eventsSha256"].as_str() != Some(digest.as_str()) || manifest["events"].as_u64() != Some(events) {
        bail!("the backup's log does not match its manifest (damaged or altered): nothing was restored");
    }
    let folder = log_file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder).with_context(|| format!("cannot create {}", folder.display()))?;
    for target in &files {
        let source = from.join(target.file_name().context("no file name")?);
        std::fs::copy(&source, target)
            .with_context(|| format!("cannot copy {} to {}", source.display(), target.display()))?;
    }
    let key_target = config.data_dir.join(KEY_FILE);
    if !key_configured {
        copy_private(&backup_key, &key_target)?;
    }
    // Opens the restored database as a start would: the master key check and the migrations. A
    // refusal (the wrong key) takes the copied files away again.
    match crate::services::Services::open(config).await {
        Ok(services) => services.shutdown(None).await,
        Err(e) => {
            for file in files.iter().chain((!key_configured).then_some(&key_target)) {
                let _ = std::fs::remove_file(file);
            }
            return Err(e.context("the restored database does not open: the copied files were removed again"));
        }
    }
    let report = json!({
        "restored": folder.display().to_string(),
        "head": head,
        "events": events,
        "eventsSha256": digest,
        "matchesBackup": true,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Copies a key file, readable by its owner only.
fn copy_private(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", to.display()))?;
    }
    Ok(())
}
