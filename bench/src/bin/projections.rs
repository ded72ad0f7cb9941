//! `cargo run --release -p licensd-bench --bin projections [EVENTS] [POSTGRES_URL]`: how fast the
//! SQL read models catch up a large log, as a ratio to reading the same events raw (`read_all`)
//! in the same run. Seeds a fresh database (SQLite with `synchronous=full`; Postgres too when a
//! URL is given) with licenses validated several times each (the log's usual mix), then measures:
//! - raw `read_all` of every event, pages of 1000 (the baseline);
//! - one runner per projection, one after the other (each reads and decodes the whole log, as
//!   before the shared reader);
//! - the shared runner (each page read and decoded once, one transaction per page);
//! - decoding every payload from its stored text, against through a `serde_json::Value` first.
//!
//! Prints JSON.

use licensd_domain::license::LicenseEvent;
use licensd_domain::{AccountId, AnyEvent, AppId, DomainEvent, LicenseKey, StreamCategory};
use licensd_projections::{all_sql_projections, SqlRunner, TailConfig};
use licensd_store::{AppendRequest, EventStore, ExpectedVersion, NewEvent, Position, Store, StoreOptions};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::time::Instant;

/// Validations per license: a billed validation is the log's most frequent event.
const VALIDATIONS: usize = 9;

fn new_event(event: &impl DomainEvent) -> NewEvent {
    licensd_commands::new_event(event, uuid::Uuid::now_v7(), json!({ "actor": "client", "account_id": "bench" }))
}

/// `licenses` streams of one creation and [`VALIDATIONS`] billed validations each.
async fn seed(store: &Store, licenses: usize) -> anyhow::Result<()> {
    let (app_id, account_id) = (AppId::new(), AccountId::new());
    let mut batch = Vec::new();
    for n in 0..licenses {
        // A key takes 5 bits of each byte: spread the number over them, so keys never repeat.
        let bytes: [u8; 16] = std::array::from_fn(|i| ((n as u64) >> (5 * i as u32).min(63)) as u8 & 31);
        let key = LicenseKey::from_random(bytes);
        let now = chrono::Utc::now();
        let mut events = vec![new_event(&LicenseEvent::LicenseCreated {
            key: key.clone(),
            app_id,
            account_id,
            expires_at: None,
            max_hwid_slots: 2,
            label: None,
            created_at: now,
        })];
        for v in 0..VALIDATIONS {
            let billed = LicenseEvent::ValidationBilled {
                account_id,
                credits: 1,
                nonce: Some(format!("{n}-{v}")),
                hwid: None,
                at: now,
            };
            events.push(new_event(&billed));
        }
        batch.push(AppendRequest::new(StreamCategory::License.stream_id(&key), ExpectedVersion::NoStream, events));
        if batch.len() == 256 || n + 1 == licenses {
            for result in store.append_batch(std::mem::take(&mut batch)).await? {
                result?;
            }
        }
    }
    Ok(())
}

async fn read_everything(store: &Store) -> anyhow::Result<u64> {
    let (mut position, mut count) = (Position::START, 0);
    loop {
        let page = store.read_all(position, 1000).await?;
        let Some(last) = page.last() else { return Ok(count) };
        position = last.position;
        count += page.len() as u64;
    }
}

async fn reset_all(store: &Store) -> anyhow::Result<()> {
    for p in all_sql_projections() {
        store.reset_projection(p.name(), p.version(), p.tables()).await?;
    }
    Ok(())
}

/// Events per second of `work`, which handles `events` events.
async fn rate<F: std::future::Future<Output = anyhow::Result<()>>>(events: u64, work: F) -> anyhow::Result<f64> {
    let started = Instant::now();
    work.await?;
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// Decodes every payload from its text, then through a `Value` first (the path before `RawValue`).
fn decode_rates(events: &[licensd_store::RecordedEvent]) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    for e in events {
        AnyEvent::decode(&e.stream_id, &e.event_type, e.schema_version, &e.payload)?;
    }
    let typed = events.len() as f64 / started.elapsed().as_secs_f64();
    fn via_value<E: DeserializeOwned>(text: &str) -> anyhow::Result<E> {
        let tree: Value = serde_json::from_str(text)?;
        Ok(E::deserialize(&tree)?)
    }
    let started = Instant::now();
    for e in events {
        via_value::<LicenseEvent>(e.payload.get())?;
    }
    let through_value = events.len() as f64 / started.elapsed().as_secs_f64();
    Ok((typed, through_value))
}

async fn measure(url: &str, licenses: usize) -> anyhow::Result<Value> {
    let store = Store::connect(url, &StoreOptions::durable()).await?;
    store.migrate().await?;
    seed(&store, licenses).await?;
    let events = read_everything(&store).await?;
    let config = TailConfig::default();

    let raw = rate(events, async { read_everything(&store).await.map(drop) }).await?;
    reset_all(&store).await?;
    let separate = rate(events, async {
        for p in all_sql_projections() {
            SqlRunner::new(store.clone(), p, config).catch_up().await?;
        }
        Ok(())
    })
    .await?;
    reset_all(&store).await?;
    let shared = rate(events, async {
        SqlRunner::shared(store.clone(), all_sql_projections(), config).catch_up().await?;
        Ok(())
    })
    .await?;
    let mut all = Vec::new();
    let mut position = Position::START;
    while let Some(last) = store.read_all(position, 10_000).await.map(|page| {
        let last = page.last().map(|e| e.position);
        all.extend(page);
        last
    })? {
        position = last;
    }
    let (typed, through_value) = decode_rates(&all)?;
    store.close().await;
    let pct = |x: f64| (x / raw * 1000.0).round() / 10.0;
    Ok(json!({
        "backend": store.backend(),
        "events": events,
        "rawReadAllEventsPerSecond": raw.round(),
        "separateRunnersEventsPerSecond": separate.round(),
        "separateRunnersPercentOfRaw": pct(separate),
        "sharedRunnerEventsPerSecond": shared.round(),
        "sharedRunnerPercentOfRaw": pct(shared),
        "sharedOverSeparate": (shared / separate * 100.0).round() / 100.0,
        "decodeFromTextEventsPerSecond": typed.round(),
        "decodeThroughValueEventsPerSecond": through_value.round(),
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200_000);
    let licenses = (events / (VALIDATIONS + 1)).max(1);
    let dir = std::env::temp_dir().join(format!("licensd-projections-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let mut results = vec![measure(&format!("sqlite://{}", dir.join("licensd.db").display()), licenses).await?];
    std::fs::remove_dir_all(&dir)?;
    if let Some(url) = args.next() {
        results.push(measure(&url, licenses).await?);
    }
    println!("{}", serde_json::to_string_pretty(&json!({ "projections": results }))?);
    Ok(())
}
