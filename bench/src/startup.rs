//! Start-up with and without a snapshot of the in-memory model (SQLite).
//!
//! Seeds a log straight through the store (one account, one app, `licenses` licenses each with
//! a bound machine, then billing events up to `events` in all), and times `licensd serve` to its
//! "listening" line: with snapshots off (a full replay), then from a snapshot left by a clean
//! stop, then again from a snapshot after as many more events were appended and snapshotted
//! (start-up from a snapshot should not grow with the log). Prints the figures and the ratios.

use crate::deployment::{Backend, Deployment};
use licensd_domain::account::AccountEvent;
use licensd_domain::app::{AppEvent, SigningKey};
use licensd_domain::license::LicenseEvent;
use licensd_domain::{AccountId, AppId, DomainEvent, LicenseKey, Sealed, StreamCategory};
use licensd_store::{AppendRequest, EventStore, ExpectedVersion, NewEvent, Store, StoreOptions};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct StartupSize {
    pub licenses: usize,
    /// Events in the log in all (at least two per license).
    pub events: usize,
}

impl StartupSize {
    /// Small enough for CI.
    pub const SMALL: Self = Self { licenses: 100_000, events: 1_000_000 };
    /// The target: 1M licenses, 10M events.
    pub const FULL: Self = Self { licenses: 1_000_000, events: 10_000_000 };
}

fn new_event(event: &impl DomainEvent) -> NewEvent {
    licensd_commands::new_event(event, uuid::Uuid::now_v7(), json!({ "actor": "bench" }))
}

/// Appends `requests` in batches, so seeding takes seconds, not the writer's per-request path.
async fn append_all(store: &Store, requests: Vec<AppendRequest>) -> anyhow::Result<()> {
    let mut requests = requests.into_iter().peekable();
    while requests.peek().is_some() {
        let batch: Vec<_> = requests.by_ref().take(2000).collect();
        for result in store.append_batch(batch).await? {
            result?;
        }
    }
    Ok(())
}

async fn seed(store: &Store, size: StartupSize) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let (account_id, app_id) = (AccountId::new(), AppId::new());
    let account = StreamCategory::Account.stream_id(account_id);
    let opening = vec![
        new_event(&AccountEvent::AccountCreated { account_id, created_at: now }),
        new_event(&AccountEvent::CreditsGranted { amount: u64::MAX / 4, reason: "bench".into(), at: now }),
    ];
    let signing_key = SigningKey {
        key_id: "k1".into(),
        public_key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
        private_key: Sealed("bench".into()),
    };
    let app = AppEvent::AppCreated {
        app_id,
        account_id,
        name: "Startup bench".into(),
        secret: Sealed("bench".into()),
        signing_key,
        created_at: now,
    };
    let app_stream = StreamCategory::App.stream_id(app_id);
    append_all(
        store,
        vec![
            AppendRequest::new(account, ExpectedVersion::Any, opening),
            AppendRequest::new(app_stream, ExpectedVersion::Any, vec![new_event(&app)]),
        ],
    )
    .await?;
    // Billing events beyond creation and binding, spread evenly over the licenses.
    let bills = size.events.saturating_sub(2 * size.licenses);
    let mut requests = Vec::with_capacity(2000);
    for n in 0..size.licenses {
        let key = LicenseKey::from_random(rand::random());
        let mut events = vec![
            new_event(&LicenseEvent::LicenseCreated {
                key: key.clone(),
                app_id,
                account_id,
                expires_at: None,
                max_hwid_slots: 2,
                label: None,
                created_at: now,
            }),
            new_event(&LicenseEvent::HwidBound { hwid: format!("{n:064x}"), at: now }),
        ];
        let share = bills / size.licenses + usize::from(n < bills % size.licenses);
        // Old enough that replaying them remembers no nonce (only the billing is folded).
        let at = now - chrono::Duration::days(2);
        events.extend((0..share).map(|b| {
            new_event(&LicenseEvent::ValidationBilled {
                account_id,
                credits: 1,
                nonce: Some(format!("{n}-{b}")),
                hwid: None,
                at,
            })
        }));
        requests.push(AppendRequest::new(StreamCategory::License.stream_id(&key), ExpectedVersion::Any, events));
        if requests.len() == 2000 {
            append_all(store, std::mem::take(&mut requests)).await?;
        }
    }
    append_all(store, requests).await
}

/// Seeds a deployment, then times start-up without and with a snapshot; returns the figures.
pub async fn run(licensd: &Path, size: StartupSize) -> anyhow::Result<Value> {
    eprintln!("== SQLite: start-up with {} licenses, {} events", size.licenses, size.events);
    let deployment = Deployment::create(Backend::Sqlite, licensd, "", "startup")?;
    deployment.cli(&["migrate"])?;
    let options = StoreOptions { max_connections: 2, sqlite_synchronous_full: false, ..StoreOptions::default() };
    let store = Store::connect(deployment.database_url(), &options).await?;
    // Resident memory is compared with an empty server's (code, runtime, connection caches).
    let empty = deployment.start(&[])?;
    let rss_empty = empty.rss_bytes();
    empty.stop();
    let seeding = Instant::now();
    seed(&store, size).await?;
    let seed_seconds = seeding.elapsed().as_secs_f64();

    // The start-up's own log line tells where the time went (snapshot, tail, events replayed).
    let logged = |extra: Option<(&'static str, String)>| {
        let mut env = vec![("LICENSD_LOG", "warn,licensd=info".to_string())];
        env.extend(extra);
        env
    };
    let replay = deployment.start(&logged(Some(("LICENSD_SNAPSHOTS", "false".to_string()))))?;
    let replay_seconds = replay.startup.as_secs_f64();
    let rss_replay = settled_rss(&replay);
    // The log was written past the server, so its SQL read models start from nothing and work
    // through it in the background: what they hold meanwhile is not the licenses' memory.
    read_models_caught_up(&replay).await?;
    let rss_replay_projected = settled_rss(&replay);
    replay.stop();
    // A clean stop writes the snapshot the next start loads.
    deployment.start(&logged(None))?.stop();
    let snapshot = deployment.start(&logged(None))?;
    let snapshot_seconds = snapshot.startup.as_secs_f64();
    read_models_caught_up(&snapshot).await?;
    let rss_snapshot = settled_rss(&snapshot);
    snapshot.stop();

    // Twice the events (10 % more licenses), snapshotted again: a start-up from the snapshot
    // should not take longer.
    seed(&store, StartupSize { licenses: (size.licenses / 10).max(1), events: size.events }).await?;
    store.close().await;
    deployment.start(&logged(None))?.stop();
    let doubled = deployment.start(&logged(None))?;
    let doubled_seconds = doubled.startup.as_secs_f64();
    doubled.stop();

    let per_license = |rss: u64| rss.saturating_sub(rss_empty) / size.licenses.max(1) as u64;
    let figures = json!({
        "licenses": size.licenses,
        "events": size.events,
        "seedSeconds": seed_seconds,
        "fullReplaySeconds": replay_seconds,
        "replayEventsPerSecond": (size.events as f64 / replay_seconds.max(1e-9)).round(),
        "snapshotSeconds": snapshot_seconds,
        "snapshotSecondsWithTwiceTheEvents": doubled_seconds,
        "replayOverSnapshot": replay_seconds / snapshot_seconds.max(1e-9),
        "twiceTheEventsOverOnce": doubled_seconds / snapshot_seconds.max(1e-9),
        "rssEmptyBytes": rss_empty,
        "rssBytesPerLicenseWhileProjecting": per_license(rss_replay),
        "rssBytesPerLicenseAfterReplay": per_license(rss_replay_projected),
        "rssBytesPerLicenseFromSnapshot": per_license(rss_snapshot),
    });
    eprintln!(
        "   resident memory per license (over an empty server's {} MiB): {} B after a full replay while the SQL \
         read models work through the log, {} B once they are through, {} B from the snapshot",
        rss_empty >> 20,
        per_license(rss_replay),
        per_license(rss_replay_projected),
        per_license(rss_snapshot)
    );
    eprintln!(
        "   full replay {replay_seconds:.2} s | from snapshot {snapshot_seconds:.2} s ({:.1}× faster) | \
         twice the events, from snapshot {doubled_seconds:.2} s",
        replay_seconds / snapshot_seconds.max(1e-9)
    );
    Ok(figures)
}

/// Waits (at most ten minutes) until every read model `/healthz` lists stands at the in-memory
/// model's position, itself at the end of the log.
async fn read_models_caught_up(server: &crate::deployment::Server) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let health: Value = client.get(format!("{}/healthz", server.base_url)).send().await?.json().await?;
        let head = &health["readModelPosition"];
        let projections = health["projections"].as_array().cloned().unwrap_or_default();
        if !projections.is_empty() && projections.iter().all(|p| &p["position"] == head) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the read models did not reach the log's end: {health}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Resident memory once start-up's leftovers had a moment to be returned (the allocator gives
/// freed pages back after a short delay), read twice a second until it stops falling (at most 5 s).
pub fn settled_rss(server: &crate::deployment::Server) -> u64 {
    let mut last = server.rss_bytes();
    for _ in 0..10 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let now = server.rss_bytes();
        if now >= last {
            return now;
        }
        last = now;
    }
    last
}
