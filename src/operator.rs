//! Operator commands: each prints one JSON document on stdout.

use crate::config::Config;
use crate::services::{open_store, Services};
use anyhow::{bail, Context};
use clap::Subcommand;
use licensd_commands::Actor;
use licensd_domain::account::AccountCommand as DomainAccountCommand;
use licensd_domain::AccountId;
use licensd_projections::{
    all_sql_projections, load_snapshot, rebuild_sql, sql_projection_hash, HotModel, HotRunner, SqlProjection,
    SqlRunner, TailConfig,
};
use licensd_store::{EventStore, Position, Store};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

#[derive(Subcommand)]
pub enum AccountCommand {
    /// Every merchant account: id, email, suspended, balance, API keys, dashboard login; prints JSON.
    List,
    /// Create a merchant account; prints its id and a Developer API key (shown once).
    Create {
        /// The merchant's email (one account per email, compared normalized).
        #[arg(long)]
        email: String,
    },
    /// Suspend an account: its apps answer `app_disabled` and its API keys are refused.
    Suspend {
        /// The account's id (a UUID, as `account create` and `account list` print it).
        #[arg(long)]
        account: String,
    },
    /// Lift a suspension.
    Reinstate {
        /// The account's id (a UUID, as `account create` and `account list` print it).
        #[arg(long)]
        account: String,
    },
    /// Set the merchant's dashboard password (read from the first line of stdin, so it stays out
    /// of the process list and shell history); ends their open dashboard sessions.
    SetPassword {
        /// The account's id (a UUID, as `account create` and `account list` print it).
        #[arg(long)]
        account: String,
    },
}

#[derive(Subcommand)]
pub enum CreditsCommand {
    /// Add credits to an account; prints the new balance.
    Grant {
        /// The account's id (a UUID, as `account create` and `account list` print it).
        #[arg(long)]
        account: String,
        /// Credits to add.
        #[arg(long)]
        amount: u64,
        /// Why, kept in the credit ledger and the audit log.
        #[arg(long, default_value = "operator grant")]
        reason: String,
    },
}

fn print(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    print(&json!({ "migrated": true, "backend": store.backend() }));
    store.close().await;
    Ok(())
}

/// Writes a new master key file unless one exists (then it is only checked): a deployment keeps
/// one key for its lifetime instead of a new random one per start.
pub fn init_master_key(config: &Config) -> anyhow::Result<()> {
    if config.master_key.is_some() {
        bail!("LICENSD_MASTER_KEY is set: that key is used and no file is needed; unset it to write a key file");
    }
    let path = config.master_key_file.clone().unwrap_or_else(|| config.data_dir.join("master.key"));
    let (_, source) = licensd_commands::MasterKey::load_or_generate_file(&path)
        .with_context(|| format!("cannot read or write the master key file {}", path.display()))?;
    let created = matches!(source, licensd_commands::MasterKeySource::Generated(_));
    let note = if created { "new key written: back it up" } else { "a valid key is already there: left as it is" };
    print(&json!({ "path": path.display().to_string(), "created": created, "note": note }));
    Ok(())
}

pub async fn account(config: &Config, command: AccountCommand) -> anyhow::Result<()> {
    let (account, change, suspended) = match command {
        AccountCommand::List => return list_accounts(config).await,
        AccountCommand::Create { email } => return create_account(config, &email).await,
        AccountCommand::SetPassword { account } => return set_password(config, &account).await,
        AccountCommand::Suspend { account } => (account, DomainAccountCommand::Suspend, true),
        AccountCommand::Reinstate { account } => (account, DomainAccountCommand::Reinstate, false),
    };
    let account_id: AccountId = account.parse().context("--account must be an account id (UUID)")?;
    let services = Services::open(config).await?;
    let result = services.commands.account_command(account_id, change, &Actor::Operator).await;
    services.shutdown(None).await;
    result.context("cannot change the account")?;
    print(&json!({ "accountId": account_id, "suspended": suspended }));
    Ok(())
}

/// Reads the accounts from a fresh replay of the log (the server's own model is in its process),
/// and each email from the sealed PII table.
async fn list_accounts(config: &Config) -> anyhow::Result<()> {
    let services = Services::open(config).await?;
    let listed = async {
        let (model, _) = replay_hot(config, &services.store).await?;
        let mut accounts = Vec::new();
        for (account_id, view) in model.accounts() {
            let stream = licensd_domain::StreamCategory::Account.stream_id(account_id);
            let email =
                services.commands.pii().get(&stream, "email").await.context("cannot read an account's email")?;
            accounts.push(json!({
                "accountId": account_id,
                "email": email,
                "suspended": view.suspended,
                "balance": view.balance,
                "apiKeys": view.api_keys.len(),
                "dashboardLogin": view.login_generation > 0,
            }));
        }
        anyhow::Ok(accounts)
    }
    .await;
    services.shutdown(None).await;
    print(&json!({ "accounts": listed? }));
    Ok(())
}

async fn set_password(config: &Config, account: &str) -> anyhow::Result<()> {
    let account_id: AccountId = account.parse().context("--account must be an account id (UUID)")?;
    let mut password = String::new();
    std::io::stdin().read_line(&mut password).context("cannot read the password from stdin")?;
    let password = password.trim_end_matches(['\r', '\n']);
    let services = Services::open(config).await?;
    let result = services.commands.set_dashboard_password(account_id, password, &Actor::Operator).await;
    services.shutdown(None).await;
    result.context("cannot set the password")?;
    print(&json!({ "accountId": account_id, "dashboardLogin": true }));
    Ok(())
}

async fn create_account(config: &Config, email: &str) -> anyhow::Result<()> {
    let services = Services::open(config).await?;
    let result = services.commands.create_account(email, &Actor::Operator).await;
    services.shutdown(None).await;
    let created = result.context("cannot create the account")?;
    print(&json!({
        "accountId": created.account_id,
        "apiKeyId": created.key_id,
        "apiKey": created.api_key,
        "note": "the API key is shown only this once; store it safely",
    }));
    Ok(())
}

pub async fn credits(config: &Config, command: CreditsCommand) -> anyhow::Result<()> {
    let CreditsCommand::Grant { account, amount, reason } = command;
    let account_id: AccountId = account.parse().context("--account must be an account id (UUID)")?;
    let services = Services::open(config).await?;
    let grant = DomainAccountCommand::GrantCredits { amount, reason };
    let result = services.commands.account_command(account_id, grant, &Actor::Operator).await;
    let balance = match result {
        Ok(_) => ledger_balance(config, &services.store, account_id).await,
        Err(e) => Err(anyhow::Error::new(e).context("cannot grant credits")),
    };
    services.shutdown(None).await;
    print(&json!({ "accountId": account_id, "granted": amount, "balance": balance? }));
    Ok(())
}

/// The account's balance per the credit ledger, brought up to date first.
async fn ledger_balance(config: &Config, store: &Store, account_id: AccountId) -> anyhow::Result<i64> {
    settle(config, store).await?;
    let ledger = all_sql_projections().into_iter().find(|p| p.name() == "credit_ledger").context("no ledger")?;
    SqlRunner::new(store.clone(), ledger, TailConfig::default()).catch_up().await?;
    let sum = store
        .query_text(
            "SELECT CAST(COALESCE(SUM(delta), 0) AS TEXT) FROM rm_credit_ledger WHERE account_id = $1",
            &[account_id.to_string().into()],
        )
        .await?;
    Ok(sum.into_iter().flatten().next().unwrap_or_default().parse()?)
}

/// Waits until everything committed so far is readable by the log's readers. On Postgres a
/// reader only takes the events of transactions older than the oldest one still running anywhere
/// in the cluster (see the store): right after an earlier command's commit, another session (a
/// server, another database's client) can still hold that horizon below it, and a replay would
/// silently leave the newest events out (`account list` printing fewer accounts than exist).
async fn settle(config: &Config, store: &Store) -> anyhow::Result<()> {
    let timeout = std::time::Duration::from_millis(config.read_settle_ms);
    if !store.settle(timeout).await? {
        bail!(
            "transactions started elsewhere on the Postgres server are still running after {} ms \
             (LICENSD_READ_SETTLE_MS), so the newest events cannot be read in order yet; try again",
            config.read_settle_ms
        );
    }
    Ok(())
}

/// Replays the whole log, up to what was committed when called, into a fresh in-memory model.
async fn replay_hot(config: &Config, store: &Store) -> anyhow::Result<(Arc<HotModel>, u64)> {
    settle(config, store).await?;
    let mut model = HotModel::default();
    if let Some(licenses) = licensd_projections::license_streams(store).await? {
        model.reserve_licenses(licenses);
    }
    let model = Arc::new(model);
    let events = HotRunner::new(store.clone(), model.clone(), TailConfig::default()).catch_up().await?;
    Ok((model, events))
}

/// Loads the snapshot (if there is a usable one), replays the log after it, and tells whether
/// that model equals the full replay's (`hash`).
async fn snapshot_check(config: &Config, store: &Store, hash: &str) -> anyhow::Result<Value> {
    let Some(path) = config.snapshot_path() else { return Ok(json!({ "used": false, "reason": "snapshots are off" })) };
    let Some(model) = load_snapshot(store, &path, HotModel::default).await else {
        return Ok(json!({ "used": false, "reason": "no usable snapshot", "path": path.display().to_string() }));
    };
    let model = Arc::new(model);
    let position = model.position();
    let tail = HotRunner::new(store.clone(), model.clone(), TailConfig::default()).catch_up().await?;
    let snapshot_hash = model.digest()?;
    Ok(json!({
        "used": true, "path": path.display().to_string(), "position": position.to_string(), "tailEvents": tail,
        "hash": snapshot_hash, "matchesReplay": snapshot_hash == hash,
    }))
}

fn selected(name: Option<&str>) -> anyhow::Result<(bool, Vec<Arc<dyn SqlProjection>>)> {
    let sql = all_sql_projections();
    match name {
        None => Ok((true, sql)),
        Some("hot") => Ok((true, vec![])),
        Some(name) => {
            let chosen: Vec<_> = sql.into_iter().filter(|p| p.name() == name).collect();
            if chosen.is_empty() {
                let known: Vec<_> = all_sql_projections().iter().map(|p| p.name()).collect();
                bail!("unknown projection '{name}'; known: hot, {}", known.join(", "));
            }
            Ok((false, chosen))
        }
    }
}

pub async fn rebuild(config: &Config, name: Option<&str>) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let (hot, sql) = selected(name)?;
    settle(config, &store).await?;
    let mut report = Vec::new();
    let rate = |events: u64, started: Instant| events as f64 / started.elapsed().as_secs_f64().max(1e-9);
    if hot {
        let started = Instant::now();
        let (model, events) = replay_hot(config, &store).await?;
        let seconds = started.elapsed().as_secs_f64();
        let hashed = Instant::now();
        let hash = model.digest()?;
        // Timed apart: `seconds` (and the rate) is the replay alone.
        let digest_seconds = hashed.elapsed().as_secs_f64();
        let snapshot = snapshot_check(config, &store, &hash).await?;
        report.push(json!({
            "projection": "hot", "events": events, "seconds": seconds,
            "eventsPerSecond": (events as f64 / seconds.max(1e-9)).round(), "hash": hash,
            "digestSeconds": digest_seconds, "snapshot": snapshot,
        }));
    }
    for projection in sql {
        let started = Instant::now();
        let events = rebuild_sql(&store, projection.clone()).await?;
        report.push(json!({
            "projection": projection.name(), "events": events, "seconds": started.elapsed().as_secs_f64(),
            "eventsPerSecond": rate(events, started).round(),
            "hash": sql_projection_hash(&store, projection.as_ref()).await?,
        }));
    }
    store.close().await;
    print(&json!({ "rebuilt": report }));
    Ok(())
}

pub async fn projections(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let head = last_position(&store).await?;
    let (model, _) = replay_hot(config, &store).await?;
    let mut report = vec![json!({ "projection": "hot", "inMemory": true, "caughtUp": true, "hash": model.digest()? })];
    for projection in all_sql_projections() {
        let checkpoint = store.load_checkpoint(projection.name()).await?;
        let position = checkpoint.map(|c| c.position).unwrap_or(Position::START);
        report.push(json!({
            "projection": projection.name(),
            "version": projection.version(),
            "position": position.to_string(),
            "caughtUp": checkpoint.is_some_and(|c| c.version == projection.version()) && position >= head,
            "hash": sql_projection_hash(&store, projection.as_ref()).await?,
        }));
    }
    store.close().await;
    print(&json!({ "head": head.to_string(), "projections": report }));
    Ok(())
}

/// The position of the last readable event.
async fn last_position(store: &Store) -> anyhow::Result<Position> {
    let mut position = Position::START;
    loop {
        let page = store.read_all(position, 10_000).await?;
        match page.last() {
            Some(last) => position = last.position,
            None => return Ok(position),
        }
    }
}
