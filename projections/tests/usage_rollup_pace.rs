//! The usage roll-up's pace sums a license's counts of a day into one statement per table; the
//! rows must be exactly those its per-event statements give, on SQLite and Postgres: across a
//! license created twice (moved to another app half-way through the pace), zero counts, counts
//! without validations, and two licenses of one app.

use licensd_domain::license::LicenseEvent;
use licensd_domain::{AccountId, AnyEvent, AppId, DomainEvent, LicenseKey, StreamCategory};
use licensd_projections::sql::UsageRollup;
use licensd_projections::SqlProjection;
use licensd_store::testing::on_both_backends;
use licensd_store::{AppendRequest, EventStore, ExpectedVersion, NewEvent, Position, ProjectionMove, Statement, Store};

fn new_event(event: &impl DomainEvent) -> NewEvent {
    licensd_commands::new_event(event, uuid::Uuid::now_v7(), serde_json::json!({}))
}

fn created(key: &LicenseKey, app_id: AppId, account_id: AccountId) -> LicenseEvent {
    let now = chrono::Utc::now();
    LicenseEvent::LicenseCreated {
        key: key.clone(),
        app_id,
        account_id,
        expires_at: None,
        max_hwid_slots: 1,
        label: None,
        created_at: now,
    }
}

fn validated(account_id: AccountId, credits: u32) -> LicenseEvent {
    LicenseEvent::ValidationBilled { account_id, credits, nonce: None, hwid: None, at: chrono::Utc::now() }
}

fn beat(account_id: AccountId, heartbeats: u32, credits: u32) -> LicenseEvent {
    LicenseEvent::HeartbeatBilled { account_id, heartbeats, credits, at: chrono::Utc::now() }
}

/// One license's events, appended as one request, in order.
async fn append(store: &Store, key: &LicenseKey, events: &[LicenseEvent]) {
    let request = AppendRequest::new(
        StreamCategory::License.stream_id(key),
        ExpectedVersion::Any,
        events.iter().map(new_event).collect(),
    );
    store.append(request).await.expect("append");
}

async fn canonical_rows(store: &Store) -> Vec<Option<String>> {
    let mut rows = Vec::new();
    for query in UsageRollup.canonical_queries() {
        rows.extend(store.query_text(query, &[]).await.expect("canonical rows"));
    }
    rows
}

/// Commits `statements` as one pace of the roll-up from a fresh start; its canonical rows.
async fn rows_of(store: &Store, statements: Vec<Statement>) -> Vec<Option<String>> {
    let p = UsageRollup;
    store.reset_projection(p.name(), p.version(), p.tables()).await.expect("reset");
    let to = Position { tx: 1, seq: 1 };
    let m = ProjectionMove { name: p.name(), version: p.version(), from: Position::START, to, statements };
    assert_eq!(store.commit_projections(&[m]).await.expect("commit"), [true]);
    canonical_rows(store).await
}

async fn pace_gives_the_rows_of_its_events_one_by_one(store: Store) {
    let (app, other_app, account) = (AppId::new(), AppId::new(), AccountId::new());
    let (k1, k2) = (LicenseKey::from_random([1; 16]), LicenseKey::from_random([2; 16]));
    append(&store, &k1, &[created(&k1, app, account), validated(account, 1), validated(account, 2)]).await;
    append(&store, &k2, &[created(&k2, app, account), beat(account, 10, 1), beat(account, 0, 0)]).await;
    append(&store, &k1, &[validated(account, 1), beat(account, 5, 0)]).await;
    // Created again under another app: what follows counts there, what came before stays.
    append(&store, &k1, &[created(&k1, other_app, account), validated(account, 3)]).await;
    append(&store, &k2, &[validated(account, 1)]).await;

    let events = store.read_all(Position::START, 1000).await.expect("read");
    let decoded: Vec<AnyEvent> = events
        .iter()
        .map(|e| AnyEvent::decode(&e.stream_id, &e.event_type, e.schema_version, &e.payload).unwrap().unwrap())
        .collect();
    let one_by_one: Vec<Statement> =
        events.iter().zip(&decoded).flat_map(|(e, d)| UsageRollup.statements(e, d)).collect();
    let mut pace = UsageRollup.pace(&[]).expect("the roll-up sums over a pace");
    let mut summed: Vec<Statement> = events.iter().zip(&decoded).flat_map(|(e, d)| pace.statements(e, d)).collect();
    summed.extend(pace.finish());
    assert!(summed.len() < one_by_one.len(), "{} statements summed, {} one by one", summed.len(), one_by_one.len());

    let expected = rows_of(&store, one_by_one).await;
    // The app's day holds both licenses' counts from before the move; the other app's the rest.
    assert!(expected.iter().flatten().any(|row| row.starts_with(&format!("{other_app}|"))), "{expected:?}");
    assert_eq!(rows_of(&store, summed).await, expected);
}

#[tokio::test]
async fn the_roll_up_pace_gives_the_rows_of_its_events_one_by_one() {
    on_both_backends(pace_gives_the_rows_of_its_events_one_by_one).await;
}
