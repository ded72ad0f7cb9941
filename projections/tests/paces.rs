//! A read model's pace (its statements for a whole page of the log at once: sums, multi-row
//! writes) must leave exactly the rows its per-event statements leave, on SQLite and Postgres.
//! - The usage roll-up: across a license created twice (moved to another app half-way through
//!   the pace), zero counts, counts without validations, two licenses of one app, and more
//!   licenses than one statement takes.
//! - The credit ledger: grants, debits and billed calls, more than one statement takes.
//! - The machines: logins of bound machines, of a machine not bound (yet, or any more), and a
//!   machine released and bound again after a login, which must keep its new binding's time.

use licensd_domain::account::AccountEvent;
use licensd_domain::license::LicenseEvent;
use licensd_domain::{AccountId, AnyEvent, AppId, DomainEvent, LicenseKey, StreamCategory};
use licensd_projections::sql::{CreditLedger, LicenseMachines, UsageRollup};
use licensd_projections::SqlProjection;
use licensd_store::testing::on_both_backends;
use licensd_store::{AppendRequest, EventStore, ExpectedVersion, NewEvent, Position, ProjectionMove, Statement, Store};

fn new_event(event: &impl DomainEvent) -> NewEvent {
    licensd_commands::new_event(event, uuid::Uuid::now_v7(), serde_json::json!({}))
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn created(key: &LicenseKey, app_id: AppId, account_id: AccountId) -> LicenseEvent {
    LicenseEvent::LicenseCreated {
        key: key.clone(),
        app_id,
        account_id,
        expires_at: None,
        max_hwid_slots: 2,
        label: None,
        created_at: now(),
    }
}

fn validated(account_id: AccountId, credits: u32) -> LicenseEvent {
    LicenseEvent::ValidationBilled { account_id, credits, nonce: None, hwid: None, at: now() }
}

fn logged_in(account_id: AccountId, hwid: &str) -> LicenseEvent {
    LicenseEvent::ValidationBilled { account_id, credits: 1, nonce: None, hwid: Some(hwid.into()), at: now() }
}

fn bound(hwid: &str) -> LicenseEvent {
    LicenseEvent::HwidBound { hwid: hwid.into(), at: now() }
}

fn released(hwid: &str) -> LicenseEvent {
    LicenseEvent::HwidReleased { hwid: hwid.into(), at: now() }
}

fn beat(account_id: AccountId, heartbeats: u32, credits: u32) -> LicenseEvent {
    LicenseEvent::HeartbeatBilled { account_id, heartbeats, credits, at: now() }
}

fn key(n: u32) -> LicenseKey {
    // Five bits of each byte make the key.
    let mut random = [0u8; 16];
    for (digit, byte) in random.iter_mut().take(7).enumerate() {
        *byte = (n >> (5 * digit)) as u8 & 31;
    }
    LicenseKey::from_random(random)
}

/// One stream's events, appended as one request, in order; the position of the last.
async fn append(store: &Store, stream_id: String, events: Vec<NewEvent>) -> Position {
    let request = AppendRequest::new(stream_id, ExpectedVersion::Any, events);
    store.append(request).await.expect("append").position
}

async fn append_license(store: &Store, key: &LicenseKey, events: &[LicenseEvent]) -> Position {
    append(store, StreamCategory::License.stream_id(key), events.iter().map(new_event).collect()).await
}

async fn canonical_rows(store: &Store, projection: &dyn SqlProjection) -> Vec<Option<String>> {
    let mut rows = Vec::new();
    for query in projection.canonical_queries() {
        rows.extend(store.query_text(query, &[]).await.expect("canonical rows"));
    }
    rows
}

/// Commits `statements` as one pace of `projection` from a fresh start; its canonical rows.
async fn rows_of(store: &Store, projection: &dyn SqlProjection, statements: Vec<Statement>) -> Vec<Option<String>> {
    let p = projection;
    store.reset_projection(p.name(), p.version(), p.tables()).await.expect("reset");
    let to = Position { tx: 1, seq: 1 };
    let m = ProjectionMove { name: p.name(), version: p.version(), from: Position::START, to, statements };
    assert_eq!(store.commit_projections(&[m]).await.expect("commit"), [true]);
    canonical_rows(store, p).await
}

/// Every event appended. A read of the log's end holds back commits a moment (Postgres's until
/// no earlier position can still commit, SQLite's until their sync is done), so this reads until
/// the last append's events are there.
async fn whole_log(store: &Store, last: Position) -> Vec<licensd_store::RecordedEvent> {
    for _ in 0..500 {
        let events = store.read_all(Position::START, 100_000).await.expect("read");
        if events.last().is_some_and(|e| e.position >= last) {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the log's events up to {last:?} are not readable after 5 s");
}

/// The whole log (up to `last`) projected by `projection` one event at a time, then in one pace:
/// both leave the same rows. Returns those rows and how many statements each way took.
async fn paced_and_one_by_one(
    store: &Store,
    projection: &dyn SqlProjection,
    last: Position,
) -> (Vec<Option<String>>, usize, usize) {
    let events = whole_log(store, last).await;
    let decoded: Vec<AnyEvent> = events
        .iter()
        .map(|e| AnyEvent::decode(&e.stream_id, &e.event_type, e.schema_version, &e.payload).unwrap().unwrap())
        .collect();
    let one_by_one: Vec<Statement> =
        events.iter().zip(&decoded).flat_map(|(e, d)| projection.statements(e, d)).collect();
    let mut pace = projection.pace(&[]).unwrap_or_else(|| panic!("{} projects a pace at once", projection.name()));
    let mut paced: Vec<Statement> = events.iter().zip(&decoded).flat_map(|(e, d)| pace.statements(e, d)).collect();
    paced.extend(pace.finish());
    let (paced_count, one_by_one_count) = (paced.len(), one_by_one.len());

    let expected = rows_of(store, projection, one_by_one).await;
    assert_eq!(rows_of(store, projection, paced).await, expected, "{}: the pace's rows", projection.name());
    (expected, paced_count, one_by_one_count)
}

async fn roll_up_pace_gives_the_rows_of_its_events_one_by_one(store: Store) {
    let (app, other_app, account) = (AppId::new(), AppId::new(), AccountId::new());
    let (k1, k2) = (key(1), key(2));
    append_license(&store, &k1, &[created(&k1, app, account), validated(account, 1), validated(account, 2)]).await;
    append_license(&store, &k2, &[created(&k2, app, account), beat(account, 10, 1), beat(account, 0, 0)]).await;
    append_license(&store, &k1, &[validated(account, 1), beat(account, 5, 0)]).await;
    // Created again under another app: what follows counts there, what came before stays.
    append_license(&store, &k1, &[created(&k1, other_app, account), validated(account, 3)]).await;
    append_license(&store, &k2, &[validated(account, 1)]).await;
    // More licenses of one app and day than one statement takes (each validated twice).
    let many: Vec<LicenseKey> = (100..400).map(key).collect();
    for k in &many {
        append_license(&store, k, &[created(k, other_app, account)]).await;
    }
    let mut last = Position::START;
    for k in many.iter().chain(&many) {
        last = append_license(&store, k, &[validated(account, 1)]).await;
    }

    let (rows, paced, one_by_one) = paced_and_one_by_one(&store, &UsageRollup, last).await;
    // The app's day holds both licenses' counts from before the move; the other app's the rest.
    assert!(rows.iter().flatten().any(|row| row.starts_with(&format!("{other_app}|"))), "{rows:?}");
    assert!(rows.iter().flatten().any(|row| row.contains("|601|")), "the other app's 601 validations: {rows:?}");
    // 300 creations each register on their own; the 600 validations after them are a few.
    assert!(paced < 300 + 20, "{paced} statements in the pace, {one_by_one} one by one");
}

#[tokio::test]
async fn the_roll_up_pace_gives_the_rows_of_its_events_one_by_one() {
    on_both_backends(roll_up_pace_gives_the_rows_of_its_events_one_by_one).await;
}

async fn ledger_pace_gives_the_rows_of_its_events_one_by_one(store: Store) {
    let account = AccountId::new();
    let grant = AccountEvent::CreditsGranted { amount: 5000, reason: "top-up".into(), at: now() };
    let debit = AccountEvent::CreditsDebited { amount: 7, reason: "refund".into(), at: now() };
    append(&store, StreamCategory::Account.stream_id(account), vec![new_event(&grant), new_event(&debit)]).await;
    let mut last = Position::START;
    for n in 0..300 {
        let k = key(n);
        last = append_license(&store, &k, &[validated(account, 1), beat(account, 10, 1), validated(account, 2)]).await;
    }

    let (rows, paced, one_by_one) = paced_and_one_by_one(&store, &CreditLedger, last).await;
    assert_eq!(rows.len(), 902, "every movement once");
    assert_eq!(one_by_one, 902);
    assert_eq!(paced, 6, "statements for 902 rows (256 + 256 + 256 + 128 + 4 + 2)");
}

#[tokio::test]
async fn the_ledger_pace_gives_the_rows_of_its_events_one_by_one() {
    on_both_backends(ledger_pace_gives_the_rows_of_its_events_one_by_one).await;
}

async fn machines_pace_gives_the_rows_of_its_events_one_by_one(store: Store) {
    let (app, account) = (AppId::new(), AccountId::new());
    let k = key(1);
    // Each append is a later millisecond (the rows keep times to the millisecond).
    let later = || tokio::time::sleep(std::time::Duration::from_millis(3));
    append_license(&store, &k, &[created(&k, app, account), logged_in(account, "not-yet"), bound("a")]).await;
    later().await;
    append_license(&store, &k, &[logged_in(account, "a"), logged_in(account, "a"), bound("not-yet")]).await;
    later().await;
    append_license(&store, &k, &[logged_in(account, "a"), logged_in(account, "not-yet")]).await;
    later().await;
    // Released and bound again after a login: the new binding's time is its last login.
    append_license(&store, &k, &[released("a"), logged_in(account, "a")]).await;
    later().await;
    append_license(&store, &k, &[bound("a")]).await;
    // More machines than one statement takes, each logging in three times.
    let many: Vec<LicenseKey> = (100..250).map(key).collect();
    for other in &many {
        append_license(&store, other, &[created(other, app, account), bound("x"), bound("y")]).await;
    }
    later().await;
    let mut last = Position::START;
    for _ in 0..3 {
        for other in &many {
            last = append_license(&store, other, &[logged_in(account, "x"), logged_in(account, "y")]).await;
        }
    }

    let (rows, paced, one_by_one) = paced_and_one_by_one(&store, &LicenseMachines, last).await;
    assert_eq!(rows.len(), 2 + 300, "{rows:?}");
    let a = rows.iter().flatten().find(|row| row.contains("|a|")).expect("machine a");
    let fields: Vec<&str> = a.split('|').collect();
    assert_eq!(fields[2], fields[3], "machine a's last login is its new binding: {a}");
    assert!(
        rows.iter().flatten().filter(|row| row.contains("|x|") || row.contains("|y|")).all(|row| {
            let fields: Vec<&str> = row.split('|').collect();
            fields[3] > fields[2]
        }),
        "the logins after binding count"
    );
    // 300 bindings on their own, and 900 logins as a few updates.
    assert!(paced < 300 + 20, "{paced} statements in the pace, {one_by_one} one by one");
}

#[tokio::test]
async fn the_machines_pace_gives_the_rows_of_its_events_one_by_one() {
    on_both_backends(machines_pace_gives_the_rows_of_its_events_one_by_one).await;
}
