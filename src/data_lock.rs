//! Keeps commands that must not run beside a server (rotate-master-key, restore) from doing so.
//!
//! SQLite: a server holds an exclusive lock (`flock`) on `<data dir>/licensd.lock` while it
//! runs; the kernel drops it when the process ends, however it ends, so a crash never leaves a
//! stale lock behind. Those commands take the same lock or refuse. Postgres has many nodes on
//! many machines: a live node holds (and renews) lease rows, so the commands refuse while any
//! lease is unexpired (a node stopped cleanly releases its leases; one killed lets them expire
//! after `LICENSD_LEASE_TTL_MS`).

use crate::config::Config;
use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::PathBuf;

const LOCK_FILE: &str = "licensd.lock";

/// Held for as long as it lives (dropping it unlocks); `None` inside on Postgres (nothing to hold).
pub struct DataLock(#[allow(dead_code)] Option<Flock<File>>);

fn lock_path(config: &Config) -> PathBuf {
    config.data_dir.join(LOCK_FILE)
}

/// Takes the SQLite data folder's lock, creating the folder and the file if needed; `Ok(None)`
/// when another process holds it.
fn try_take(config: &Config) -> anyhow::Result<Option<Flock<File>>> {
    let path = lock_path(config);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data folder {}", config.data_dir.display()))?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => Ok(Some(locked)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

/// The server's lock for its lifetime: refused while another server (or a rotation or restore)
/// uses the same SQLite data folder.
pub fn hold_for_server(config: &Config) -> anyhow::Result<DataLock> {
    if config.is_postgres() {
        return Ok(DataLock(None));
    }
    match try_take(config)? {
        Some(file) => Ok(DataLock(Some(file))),
        None => bail!(
            "another licensd process (a server, rotate-master-key or restore) is using the data folder {} \
             (it holds {}); refusing to start",
            config.data_dir.display(),
            lock_path(config).display()
        ),
    }
}

/// The lock for `command`, which must not run while any server does: SQLite, the data folder's
/// lock; Postgres, no unexpired lease row.
pub async fn hold_for_offline(
    config: &Config,
    store: Option<&licensd_store::Store>,
    command: &str,
) -> anyhow::Result<DataLock> {
    if !config.is_postgres() {
        return match try_take(config)? {
            Some(file) => Ok(DataLock(Some(file))),
            None => bail!(
                "a licensd server is running on the data folder {} (it holds {}): stop it, then run {command} \
                 again; nothing was changed",
                config.data_dir.display(),
                lock_path(config).display()
            ),
        };
    }
    let Some(store) = store else { return Ok(DataLock(None)) };
    let holders = store.lease_holders().await.context("cannot read the nodes' leases")?;
    let alive: Vec<String> = holders
        .iter()
        .filter(|(_, _, remaining_ms)| *remaining_ms > 0)
        .map(|(role, holder, remaining_ms)| format!("{holder} holds {role} for {remaining_ms} ms more"))
        .collect();
    if !alive.is_empty() {
        bail!(
            "licensd nodes are running on this database ({}): stop every node, then run {command} again (a node \
             killed without a clean stop keeps its leases until they expire, at most LICENSD_LEASE_TTL_MS); \
             nothing was changed",
            alive.join("; ")
        );
    }
    Ok(DataLock(None))
}
