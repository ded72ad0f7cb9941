//! The hot-model rebuild on its own: seeds a SQLite log shaped like the suite's 1M-license run
//! (one account, one app, then one `LicenseCreated` per license, each in its own stream, with
//! the metadata the Developer API writes), optionally with billing events per license, and times
//! `licensd rebuild --projection hot` on it a few times. The log can be kept in a folder and
//! reused, so two builds of licensd are timed on the very same file.

use crate::deployment::MASTER_KEY;
use licensd_domain::account::AccountEvent;
use licensd_domain::app::{AppEvent, SigningKey};
use licensd_domain::license::LicenseEvent;
use licensd_domain::{AccountId, AppId, DomainEvent, LicenseKey, Sealed, StreamCategory};
use licensd_store::{AppendRequest, EventStore, ExpectedVersion, NewEvent, Store, StoreOptions};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct RebuildSpec {
    pub licensd: PathBuf,
    /// Where the log lives; seeded only if it holds no `licensd.db` yet.
    pub data_dir: PathBuf,
    pub licenses: usize,
    /// Billing events per license after its creation (the suite's run has none).
    pub bills_per_license: usize,
    pub runs: usize,
}

fn new_event(event: &impl DomainEvent, metadata: &Value) -> NewEvent {
    licensd_commands::new_event(event, uuid::Uuid::now_v7(), metadata.clone())
}

async fn append_all(store: &Store, requests: &mut Vec<AppendRequest>) -> anyhow::Result<()> {
    for result in store.append_batch(std::mem::take(requests)).await? {
        result?;
    }
    Ok(())
}

/// Seeds the log; returns how many events it wrote.
async fn seed(store: &Store, licenses: usize, bills_per_license: usize) -> anyhow::Result<u64> {
    let now = chrono::Utc::now();
    let (account_id, app_id) = (AccountId::new(), AppId::new());
    // What the Developer API writes for a merchant's own request.
    let metadata = json!({ "actor": format!("api:{}", uuid::Uuid::now_v7()), "account_id": account_id.to_string() });
    let opening = vec![
        new_event(&AccountEvent::AccountCreated { account_id, created_at: now }, &metadata),
        new_event(&AccountEvent::CreditsGranted { amount: u64::MAX / 4, reason: "bench".into(), at: now }, &metadata),
    ];
    let signing_key = SigningKey {
        key_id: "k1".into(),
        public_key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
        private_key: Sealed("bench".into()),
    };
    let app = AppEvent::AppCreated {
        app_id,
        account_id,
        name: "Rebuild bench".into(),
        secret: Sealed("bench".into()),
        signing_key,
        created_at: now,
    };
    let mut requests = vec![
        AppendRequest::new(StreamCategory::Account.stream_id(account_id), ExpectedVersion::Any, opening),
        AppendRequest::new(
            StreamCategory::App.stream_id(app_id),
            ExpectedVersion::Any,
            vec![new_event(&app, &metadata)],
        ),
    ];
    let mut written = 3;
    // Old enough that replaying them remembers no nonce (only the billing is folded).
    let billed_at = now - chrono::Duration::days(2);
    for n in 0..licenses {
        let key = LicenseKey::from_random(rand::random());
        let created = LicenseEvent::LicenseCreated {
            key: key.clone(),
            app_id,
            account_id,
            expires_at: None,
            max_hwid_slots: 2,
            label: None,
            created_at: now,
        };
        let mut events = vec![new_event(&created, &metadata)];
        events.extend((0..bills_per_license).map(|b| {
            let bill = LicenseEvent::ValidationBilled {
                account_id,
                credits: 1,
                nonce: Some(format!("{n}-{b}")),
                hwid: None,
                at: billed_at,
            };
            new_event(&bill, &metadata)
        }));
        written += events.len() as u64;
        requests.push(AppendRequest::new(StreamCategory::License.stream_id(&key), ExpectedVersion::Any, events));
        if requests.len() == 2000 {
            append_all(store, &mut requests).await?;
        }
    }
    append_all(store, &mut requests).await?;
    Ok(written)
}

fn licensd(spec: &RebuildSpec, database_url: &str, args: &[&str]) -> anyhow::Result<Value> {
    let output = Command::new(&spec.licensd)
        .args(args)
        .env("LICENSD_DATA_DIR", &spec.data_dir)
        .env("LICENSD_DATABASE_URL", database_url)
        .env("LICENSD_MASTER_KEY", MASTER_KEY)
        .env("LICENSD_LOG", "warn")
        .output()?;
    anyhow::ensure!(output.status.success(), "licensd {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// Seeds (if needed) and times the rebuild `spec.runs` times; prints and returns the figures.
pub async fn run(spec: &RebuildSpec) -> anyhow::Result<Value> {
    std::fs::create_dir_all(&spec.data_dir)?;
    let database_url = format!("sqlite://{}", spec.data_dir.join("licensd.db").display());
    let seeded = if Path::new(&spec.data_dir.join("licensd.db")).exists() {
        None
    } else {
        licensd(spec, &database_url, &["migrate"])?;
        let options = StoreOptions { max_connections: 2, sqlite_synchronous_full: false, ..StoreOptions::default() };
        let store = Store::connect(&database_url, &options).await?;
        let started = Instant::now();
        let events = seed(&store, spec.licenses, spec.bills_per_license).await?;
        store.close().await;
        eprintln!("   seeded {events} events in {:.1} s", started.elapsed().as_secs_f64());
        Some(events)
    };
    let (mut rates, mut walls) = (Vec::new(), Vec::new());
    let mut report = Value::Null;
    for _ in 0..spec.runs.max(1) {
        let started = Instant::now();
        report = licensd(spec, &database_url, &["rebuild", "--projection", "hot"])?;
        // The whole command (start, replay, content hash, snapshot check): the replay's rate
        // alone leaves the hash out.
        let wall = started.elapsed().as_secs_f64();
        let hot = &report["rebuilt"][0];
        let rate = hot["eventsPerSecond"].as_f64().unwrap_or(0.0);
        let digest = hot["digestSeconds"].as_f64().map_or("not reported".into(), |s| format!("{s:.2} s"));
        eprintln!(
            "   {} events in {:.2} s: {rate:.0} events/s; content hash {digest}; whole command {wall:.2} s",
            hot["events"],
            hot["seconds"].as_f64().unwrap_or(0.0)
        );
        rates.push(rate);
        walls.push(wall);
    }
    walls.sort_by(f64::total_cmp);
    rates.sort_by(f64::total_cmp);
    let hot = &report["rebuilt"][0];
    Ok(json!({
        "events": hot["events"],
        "seededNow": seeded.is_some(),
        "eventsPerSecondRuns": rates,
        "eventsPerSecondMedian": rates[rates.len() / 2],
        "commandSecondsRuns": walls,
        "hash": hot["hash"],
    }))
}
