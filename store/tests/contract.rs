//! The event-store contract: every test runs on SQLite and on Postgres
//! (`LICENSD_TEST_POSTGRES_URL`; CI sets it, so Postgres is never skipped there).
//!
//! Batch isolation is part of the contract: within one `append_batch`, a request that fails (a
//! version conflict, a duplicate event id, a value the database refuses) fails alone, and its
//! personal data with it; every other request commits.

use licensd_store::testing::TempDatabase;
use licensd_store::{
    AppendRequest, EventStore, ExpectedVersion, NewEvent, PiiRow, Position, PostgresStore, Store, StoreError,
    StreamPage,
};
use serde_json::json;
use uuid::Uuid;

fn event(n: i64) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "Tested".into(),
        schema_version: 1,
        payload: json!({ "n": n, "text": "héllo / + \"quoted\"" }),
        metadata: json!({ "actor": "test" }),
    }
}

fn request(stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest::new(stream, expected, events)
}

fn pii(subject: &str, field: &str, sealed: &str) -> PiiRow {
    PiiRow { subject: subject.into(), field: field.into(), sealed: sealed.into() }
}

async fn pii_of(store: &Store, subject: &str) -> Vec<Option<String>> {
    store.query_text("SELECT value FROM pii WHERE subject = $1 ORDER BY field", &[subject.into()]).await.unwrap()
}

/// Pages through the global order until `expected` events were seen. On Postgres visibility
/// waits for every older transaction on the server (other tests' too), so it may take a moment.
async fn read_everything(store: &Store, expected: usize) -> Vec<licensd_store::RecordedEvent> {
    let mut all = Vec::new();
    let mut after = Position::START;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while all.len() < expected && std::time::Instant::now() < deadline {
        let page = store.read_all(after, 3).await.unwrap();
        match page.last() {
            Some(last) => after = last.position,
            None => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
        all.extend(page);
    }
    all
}

/// Declares one test per backend for each contract function.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() {
                let db = super::TempDatabase::sqlite();
                super::$name(&db.open().await).await;
            })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() {
                let Some(db) = super::TempDatabase::postgres().await else { return };
                super::$name(&db.open().await).await;
            })*
        }
    };
}

contract!(
    appends_and_reads_back_a_stream,
    no_stream_conflicts_once_the_stream_exists,
    exact_version_conflict_reports_the_actual_version,
    any_appends_at_the_end,
    retried_append_is_idempotent,
    duplicate_event_id_elsewhere_is_refused,
    a_failing_request_leaves_the_rest_of_its_batch_intact,
    a_batch_without_obstacles_is_appended_in_one_statement,
    read_all_pages_through_every_stream_in_commit_order,
    racing_writers_with_the_same_expectation_have_one_winner,
    empty_appends_are_refused,
    a_refused_value_fails_only_its_own_request,
    a_refused_value_fails_only_its_own_request_when_appended_one_by_one,
    personal_data_is_written_with_its_events_or_not_at_all,
    a_rerun_batch_across_streams_is_recognised_after_the_streams_moved_on,
    a_stream_is_read_a_page_at_a_time_in_either_direction,
    the_whole_log_reader_gives_what_read_all_gives,
    the_whole_log_reader_starts_after_the_position_given,
    the_whole_log_reader_stops_once_its_receiver_is_gone,
    a_log_page_gives_what_read_all_gives,
);

async fn appends_and_reads_back_a_stream(store: &Store) {
    let events = vec![event(1), event(2), event(3)];
    let result = store.append(request("t-1", ExpectedVersion::NoStream, events.clone())).await.unwrap();
    assert_eq!(result.version, 3);
    assert!(!result.idempotent);
    let read = store.read_stream("t-1", 1).await.unwrap();
    assert_eq!(read.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2, 3]);
    for (stored, sent) in read.iter().zip(&events) {
        assert_eq!(stored.event_id, sent.event_id);
        assert_eq!(stored.payload_json(), sent.payload);
        assert_eq!(stored.metadata_json(), sent.metadata);
        assert_eq!(stored.event_type, "Tested");
    }
    assert_eq!(read.last().unwrap().position, result.position);
    assert_eq!(store.read_stream("t-1", 3).await.unwrap().len(), 1);
    assert!(store.read_stream("t-missing", 1).await.unwrap().is_empty());
}

async fn no_stream_conflicts_once_the_stream_exists(store: &Store) {
    store.append(request("t-2", ExpectedVersion::NoStream, vec![event(1)])).await.unwrap();
    let err = store.append(request("t-2", ExpectedVersion::NoStream, vec![event(2)])).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongExpectedVersion { actual: 1, .. }), "{err:?}");
    assert_eq!(store.read_stream("t-2", 1).await.unwrap().len(), 1, "nothing was added");
}

async fn exact_version_conflict_reports_the_actual_version(store: &Store) {
    store.append(request("t-3", ExpectedVersion::NoStream, vec![event(1), event(2)])).await.unwrap();
    let err = store.append(request("t-3", ExpectedVersion::Exact(1), vec![event(3)])).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongExpectedVersion { actual: 2, .. }), "{err:?}");
    let ok = store.append(request("t-3", ExpectedVersion::Exact(2), vec![event(3)])).await.unwrap();
    assert_eq!(ok.version, 3);
    let err = store.append(request("t-none", ExpectedVersion::Exact(1), vec![event(1)])).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongExpectedVersion { actual: 0, .. }), "{err:?}");
}

async fn any_appends_at_the_end(store: &Store) {
    assert_eq!(store.append(request("t-4", ExpectedVersion::Any, vec![event(1)])).await.unwrap().version, 1);
    assert_eq!(store.append(request("t-4", ExpectedVersion::Any, vec![event(2)])).await.unwrap().version, 2);
}

async fn retried_append_is_idempotent(store: &Store) {
    let events = vec![event(1), event(2)];
    let first = store.append(request("t-5", ExpectedVersion::NoStream, events.clone())).await.unwrap();
    // The same request again (a client retry after a lost acknowledgement) writes nothing.
    let again = store.append(request("t-5", ExpectedVersion::NoStream, events.clone())).await.unwrap();
    assert!(again.idempotent);
    assert_eq!((again.version, again.position), (first.version, first.position));
    let again_any = store.append(request("t-5", ExpectedVersion::Any, events)).await.unwrap();
    assert!(again_any.idempotent);
    assert_eq!(store.read_stream("t-5", 1).await.unwrap().len(), 2);
}

async fn duplicate_event_id_elsewhere_is_refused(store: &Store) {
    let shared = event(1);
    store.append(request("t-6a", ExpectedVersion::NoStream, vec![shared.clone()])).await.unwrap();
    let err = store.append(request("t-6b", ExpectedVersion::NoStream, vec![shared.clone()])).await.unwrap_err();
    assert!(matches!(err, StoreError::DuplicateEventId { event_id } if event_id == shared.event_id), "{err:?}");
    // Partly stored: the first event is known, the second is new.
    let err = store.append(request("t-6a", ExpectedVersion::Any, vec![shared, event(2)])).await.unwrap_err();
    assert!(matches!(err, StoreError::DuplicateEventId { .. }), "{err:?}");
    // Two events with one id in a single request.
    let twin = event(3);
    let err = store.append(request("t-6c", ExpectedVersion::NoStream, vec![twin.clone(), twin])).await.unwrap_err();
    assert!(matches!(err, StoreError::DuplicateEventId { .. }), "{err:?}");
    assert!(store.read_stream("t-6b", 1).await.unwrap().is_empty());
    assert!(store.read_stream("t-6c", 1).await.unwrap().is_empty());
    assert_eq!(store.read_stream("t-6a", 1).await.unwrap().len(), 1);
}

async fn a_failing_request_leaves_the_rest_of_its_batch_intact(store: &Store) {
    store.append(request("t-7b", ExpectedVersion::NoStream, vec![event(0)])).await.unwrap();
    let results = store
        .append_batch(vec![
            request("t-7a", ExpectedVersion::NoStream, vec![event(1)]),
            request("t-7b", ExpectedVersion::NoStream, vec![event(2)]),
            request("t-7c", ExpectedVersion::NoStream, vec![event(3), event(4)]),
        ])
        .await
        .unwrap();
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(StoreError::WrongExpectedVersion { .. })));
    assert_eq!(results[2].as_ref().unwrap().version, 2);
    assert_eq!(store.read_stream("t-7a", 1).await.unwrap().len(), 1);
    assert_eq!(store.read_stream("t-7b", 1).await.unwrap().len(), 1);
    assert_eq!(store.read_stream("t-7c", 1).await.unwrap().len(), 2);
}

/// The usual batch (expectations that hold, several requests on one stream among them) is
/// appended in one statement, with each request's version and the batch's order of positions.
async fn a_batch_without_obstacles_is_appended_in_one_statement(store: &Store) {
    use std::sync::atomic::Ordering::Relaxed;
    store.append(request("t-13a", ExpectedVersion::NoStream, vec![event(0), event(1)])).await.unwrap();
    let paths = store.append_paths();
    let (together, one_by_one) = (paths.together.load(Relaxed), paths.one_by_one.load(Relaxed));
    let sent = vec![
        request("t-13a", ExpectedVersion::Exact(2), vec![event(2)]),
        request("t-13b", ExpectedVersion::NoStream, vec![event(3), event(4)]),
        request("t-13a", ExpectedVersion::Exact(3), vec![event(5), event(6)]),
        request("t-13b", ExpectedVersion::Any, vec![event(7)]),
        request("t-13c", ExpectedVersion::Any, vec![event(8)]),
    ];
    let results: Vec<_> = store.append_batch(sent.clone()).await.unwrap().into_iter().map(Result::unwrap).collect();
    assert_eq!(results.iter().map(|r| r.version).collect::<Vec<_>>(), [3, 2, 5, 3, 1]);
    assert!(results.windows(2).all(|w| w[0].position < w[1].position), "{results:?}");
    assert_eq!((paths.together.load(Relaxed), paths.one_by_one.load(Relaxed)), (together + 1, one_by_one));
    let a = store.read_stream("t-13a", 1).await.unwrap();
    let ids: Vec<_> = [&sent[0], &sent[2]].iter().flat_map(|r| r.events.iter().map(|e| e.event_id)).collect();
    assert_eq!(a.iter().skip(2).map(|e| e.event_id).collect::<Vec<_>>(), ids);
    assert_eq!(a.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(a[3].payload_json(), sent[2].events[0].payload, "the payload reads back as sent");
    // One failed expectation sends the whole batch the slow way, and only that request fails.
    let results = store
        .append_batch(vec![
            request("t-13c", ExpectedVersion::Exact(1), vec![event(9)]),
            request("t-13b", ExpectedVersion::Exact(2), vec![event(10)]),
        ])
        .await
        .unwrap();
    assert_eq!(results[0].as_ref().unwrap().version, 2);
    assert!(matches!(results[1], Err(StoreError::WrongExpectedVersion { actual: 3, .. })), "{:?}", results[1]);
    assert_eq!(paths.one_by_one.load(Relaxed), one_by_one + 1);
}

async fn read_all_pages_through_every_stream_in_commit_order(store: &Store) {
    let mut sent = Vec::new();
    for i in 0..7 {
        let e = event(i);
        sent.push(e.event_id);
        store.append(request(&format!("t-8-{}", i % 3), ExpectedVersion::Any, vec![e])).await.unwrap();
    }
    let all = read_everything(store, sent.len()).await;
    assert_eq!(all.iter().map(|e| e.event_id).collect::<Vec<_>>(), sent);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
}

async fn racing_writers_with_the_same_expectation_have_one_winner(store: &Store) {
    store.append(request("t-9", ExpectedVersion::NoStream, vec![event(0)])).await.unwrap();
    let racers = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.append(request("t-9", ExpectedVersion::Exact(1), vec![event(i)])).await })
    });
    let mut wins = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::WrongExpectedVersion { .. }) => {}
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.read_stream("t-9", 1).await.unwrap().len(), 2);
}

async fn empty_appends_are_refused(store: &Store) {
    let err = store.append(request("t-10", ExpectedVersion::Any, vec![])).await.unwrap_err();
    assert!(matches!(err, StoreError::Config(_)));
}

/// A request carrying NUL: in its stream id (both backends refuse it), in a JSON string of its
/// payload or metadata (Postgres' jsonb refuses it; SQLite stores it escaped and reads it back).
fn nul_requests() -> Vec<AppendRequest> {
    let mut in_payload = event(2);
    in_payload.payload = json!({ "hwid": "a\u{0}b" });
    let mut in_metadata = event(3);
    in_metadata.metadata = json!({ "actor": "x\u{0}" });
    vec![
        request("t-11-ok-a", ExpectedVersion::NoStream, vec![event(1)]),
        request("t-11-\u{0}", ExpectedVersion::NoStream, vec![event(1)]),
        request("t-11-payload", ExpectedVersion::NoStream, vec![in_payload]),
        request("t-11-metadata", ExpectedVersion::Any, vec![in_metadata]),
        request("t-11-ok-b", ExpectedVersion::NoStream, vec![event(4), event(5)]).with_pii(vec![pii(
            "t-11-ok-b",
            "email",
            "sealed-b",
        )]),
    ]
}

/// Checks a batch's answers to [`nul_requests`]: only the refused requests fail, each with a data
/// error and nothing stored, and every other request (and its personal data) commits.
async fn only_refused_values_failed(
    store: &Store,
    sent: &[AppendRequest],
    results: &[Result<licensd_store::AppendResult, StoreError>],
) {
    assert_eq!(results.len(), sent.len());
    assert_eq!(results[0].as_ref().unwrap().version, 1, "{:?}", results[0]);
    assert!(matches!(results[1], Err(StoreError::InvalidData(_))), "NUL in a stream id: {:?}", results[1]);
    for (request, result) in sent.iter().zip(results).skip(2).take(2) {
        let stored = store.read_stream(&request.stream_id, 1).await.unwrap();
        match (store.backend(), result) {
            ("postgres", Err(StoreError::InvalidData(_))) => assert!(stored.is_empty(), "{}", request.stream_id),
            ("sqlite", Ok(_)) => {
                assert_eq!(stored.len(), 1);
                assert_eq!(stored[0].payload_json(), request.events[0].payload, "read back intact");
                assert_eq!(stored[0].metadata_json(), request.events[0].metadata, "read back intact");
            }
            (backend, other) => panic!("{backend}: NUL in {}: {other:?}", request.stream_id),
        }
    }
    assert_eq!(results[4].as_ref().unwrap().version, 2, "{:?}", results[4]);
    assert_eq!(store.read_stream("t-11-ok-a", 1).await.unwrap().len(), 1);
    assert_eq!(store.read_stream("t-11-ok-b", 1).await.unwrap().len(), 2);
    assert_eq!(pii_of(store, "t-11-ok-b").await, [Some("sealed-b".to_string())]);
}

async fn a_refused_value_fails_only_its_own_request(store: &Store) {
    let sent = nul_requests();
    let results = store.append_batch(sent.clone()).await.expect("the batch as a whole commits");
    only_refused_values_failed(store, &sent, &results).await;
}

/// The same, when the batch takes the one-at-a-time path anyway (a version conflict in it).
async fn a_refused_value_fails_only_its_own_request_when_appended_one_by_one(store: &Store) {
    store.append(request("t-11-conflict", ExpectedVersion::NoStream, vec![event(0)])).await.unwrap();
    let mut sent = nul_requests();
    sent.push(request("t-11-conflict", ExpectedVersion::NoStream, vec![event(9)]));
    let results = store.append_batch(sent.clone()).await.expect("the batch as a whole commits");
    assert!(matches!(results[5], Err(StoreError::WrongExpectedVersion { actual: 1, .. })), "{:?}", results[5]);
    only_refused_values_failed(store, &sent[..5], &results[..5]).await;
}

async fn personal_data_is_written_with_its_events_or_not_at_all(store: &Store) {
    store.append(request("t-12", ExpectedVersion::NoStream, vec![event(0)])).await.unwrap();
    // A lost race: the append fails, and so does the write of its personal data.
    let conflicting =
        request("t-12", ExpectedVersion::NoStream, vec![event(1)]).with_pii(vec![pii("t-12", "email", "sealed-1")]);
    let err = store.append(conflicting).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongExpectedVersion { .. }), "{err:?}");
    assert!(pii_of(store, "t-12").await.is_empty(), "no orphan personal data");
    // In a batch with others: the failing request's personal data is rolled back alone.
    let results = store
        .append_batch(vec![
            request("t-12", ExpectedVersion::Exact(5), vec![event(2)]).with_pii(vec![pii("t-12", "email", "x")]),
            request("t-12b", ExpectedVersion::NoStream, vec![event(3)])
                .with_pii(vec![pii("t-12b", "customer_id", "c"), pii("t-12b", "email", "e")]),
        ])
        .await
        .unwrap();
    assert!(results[0].is_err() && results[1].is_ok(), "{results:?}");
    assert!(pii_of(store, "t-12").await.is_empty());
    assert_eq!(pii_of(store, "t-12b").await, [Some("c".to_string()), Some("e".to_string())]);
    // A later append replaces a field's value.
    let replace =
        request("t-12b", ExpectedVersion::Exact(1), vec![event(4)]).with_pii(vec![pii("t-12b", "email", "f")]);
    store.append(replace).await.unwrap();
    assert_eq!(pii_of(store, "t-12b").await, [Some("c".to_string()), Some("f".to_string())]);
}

/// Two Postgres transactions commit in the opposite order of their positions: the global reader
/// must not see either until both are settled, then both, in order, exactly once.
#[tokio::test]
async fn postgres_out_of_order_commits_are_seen_in_order_exactly_once() {
    let Some(db) = TempDatabase::postgres().await else { return };
    let Store::Postgres(pg) = db.open().await else { unreachable!("a Postgres URL opens a Postgres store") };
    let store = Store::Postgres(pg.clone());

    // A takes its transaction id first but inserts last; B inserts first and commits first.
    let mut a = pg.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut *a).await.unwrap();
    let mut b = pg.pool().begin().await.unwrap();
    let b_event = event(2);
    PostgresStore::append_in(&mut b, vec![request("t-b", ExpectedVersion::NoStream, vec![b_event.clone()])])
        .await
        .unwrap();
    let a_event = event(1);
    PostgresStore::append_in(&mut a, vec![request("t-a", ExpectedVersion::NoStream, vec![a_event.clone()])])
        .await
        .unwrap();
    b.commit().await.unwrap();

    // B is committed, but A (older) is still running: a naive reader would now pass B's position.
    assert!(store.read_all(Position::START, 100).await.unwrap().is_empty(), "nothing is safe to read yet");
    assert!(store.read_log_page(Position::START, 100).await.unwrap().is_empty(), "nor as a page");

    a.commit().await.unwrap();
    let seen = read_everything(&store, 2).await;
    let ids: Vec<_> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, [a_event.event_id, b_event.event_id], "ordered by transaction, each once");
    assert!(seen[0].position.seq > seen[1].position.seq, "A's sequence number is the later one");
    let after_last = store.read_all(seen[1].position, 100).await.unwrap();
    assert!(after_last.is_empty());
}

/// What a keyed command re-run after a crash sends: the same events under the same ids, at the
/// versions it decided on, while its streams have moved on since. Every request of the batch
/// is "already appended" at its original positions, and nothing is written twice.
async fn a_rerun_batch_across_streams_is_recognised_after_the_streams_moved_on(store: &Store) {
    let (a, b) = (vec![event(1), event(2)], vec![event(3)]);
    let batch = || {
        vec![
            request("t-rerun-a", ExpectedVersion::NoStream, a.clone()),
            request("t-rerun-b", ExpectedVersion::NoStream, b.clone()),
        ]
    };
    let first: Vec<_> = store.append_batch(batch()).await.unwrap().into_iter().map(Result::unwrap).collect();
    store.append(request("t-rerun-a", ExpectedVersion::Exact(2), vec![event(4)])).await.unwrap();
    store.append(request("t-rerun-b", ExpectedVersion::Exact(1), vec![event(5)])).await.unwrap();
    let again: Vec<_> = store.append_batch(batch()).await.unwrap().into_iter().map(Result::unwrap).collect();
    for (again, first) in again.iter().zip(&first) {
        assert!(again.idempotent, "{again:?}");
        assert_eq!((again.version, again.position), (first.version, first.position));
    }
    assert_eq!(store.read_stream("t-rerun-a", 1).await.unwrap().len(), 3);
    assert_eq!(store.read_stream("t-rerun-b", 1).await.unwrap().len(), 2);
}

async fn a_stream_is_read_a_page_at_a_time_in_either_direction(store: &Store) {
    let events: Vec<_> = (1..=7).map(event).collect();
    store.append(request("paged-1", ExpectedVersion::NoStream, events)).await.unwrap();
    store.append(request("paged-2", ExpectedVersion::NoStream, vec![event(8)])).await.unwrap();
    let versions = |page: StreamPage| async move {
        let read = store.read_stream_page("paged-1", page).await.unwrap();
        assert!(read.iter().all(|e| e.stream_id == "paged-1"), "only the stream asked for");
        read.iter().map(|e| e.version).collect::<Vec<_>>()
    };
    let forwards = |from, limit| StreamPage { from, backwards: false, limit };
    let backwards = |from, limit| StreamPage { from, backwards: true, limit };
    assert_eq!(versions(forwards(None, 3)).await, [1, 2, 3]);
    assert_eq!(versions(forwards(Some(3), 3)).await, [4, 5, 6]);
    assert_eq!(versions(forwards(Some(6), 3)).await, [7]);
    assert_eq!(versions(forwards(Some(7), 3)).await, Vec::<u64>::new());
    assert_eq!(versions(backwards(None, 3)).await, [7, 6, 5]);
    assert_eq!(versions(backwards(Some(5), 3)).await, [4, 3, 2]);
    assert_eq!(versions(backwards(Some(2), 3)).await, [1]);
    assert_eq!(versions(backwards(Some(1), 3)).await, Vec::<u64>::new());
    assert_eq!(versions(forwards(None, 0)).await, Vec::<u64>::new());
    assert_eq!(versions(forwards(Some(u64::MAX), 3)).await, Vec::<u64>::new(), "a bound past any version");
    let missing = store.read_stream_page("paged-missing", forwards(None, 3)).await.unwrap();
    assert!(missing.is_empty());
}

/// Reads the log after `after` with [`Store::scan_log`] in pages of `batch`; returns each
/// page's events as (position, event id, stream, version, type, schema, payload text, recorded
/// at), page by page.
type Scanned = (Position, Uuid, String, u64, String, i32, String, chrono::DateTime<chrono::Utc>);

async fn scan(store: &Store, after: Position, batch: usize) -> Vec<Vec<Scanned>> {
    let (mut pages, reader) = store.scan_log(after, batch, |page| {
        page.events()
            .map(|e| {
                let owned = (e.stream_id.to_string(), e.event_type.to_string(), e.payload.to_string());
                (e.position, e.event_id, owned.0, e.version, owned.1, e.schema_version, owned.2, e.recorded_at)
            })
            .collect::<Vec<_>>()
    });
    let mut all = Vec::new();
    while let Some(page) = pages.recv().await {
        all.push(page);
    }
    reader.await.unwrap().unwrap();
    all
}

fn as_scanned(e: &licensd_store::RecordedEvent) -> Scanned {
    let text = (e.stream_id.clone(), e.event_type.clone(), e.payload.get().to_string());
    (e.position, e.event_id, text.0, e.version, text.1, e.schema_version, text.2, e.recorded_at)
}

/// Events with text the reader must hand over byte for byte: escapes, non-ASCII, an emoji, a
/// long payload, and a stream id with a quote in it.
async fn append_varied(store: &Store) -> Vec<licensd_store::RecordedEvent> {
    let long = "x".repeat(70_000);
    for i in 0..9 {
        let mut e = event(i);
        if i == 4 {
            e.payload = json!({ "n": i, "long": long, "emoji": "🦀", "escaped": "tab\tnewline\n\u{1}" });
        }
        let stream = format!("scan-{}-o'neil", i % 4);
        store.append(request(&stream, ExpectedVersion::Any, vec![e])).await.unwrap();
    }
    read_everything(store, 9).await
}

async fn the_whole_log_reader_gives_what_read_all_gives(store: &Store) {
    let read = append_varied(store).await;
    assert_eq!(read.len(), 9);
    let pages = scan(store, Position::START, 4).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 1], "pages of at most 4, in order");
    let scanned: Vec<Scanned> = pages.into_iter().flatten().collect();
    assert_eq!(scanned, read.iter().map(as_scanned).collect::<Vec<_>>());
    assert!(scanned[4].6.contains("🦀") && scanned[4].6.len() > 70_000, "the long payload whole");
}

async fn the_whole_log_reader_starts_after_the_position_given(store: &Store) {
    let read = append_varied(store).await;
    let after = read[5].position;
    let scanned: Vec<Scanned> = scan(store, after, 100).await.into_iter().flatten().collect();
    assert_eq!(scanned, read[6..].iter().map(as_scanned).collect::<Vec<_>>());
    let at_the_end = scan(store, read[8].position, 100).await;
    assert!(at_the_end.is_empty(), "nothing after the last event: {at_the_end:?}");
}

async fn the_whole_log_reader_stops_once_its_receiver_is_gone(store: &Store) {
    append_varied(store).await;
    let (pages, reader) = store.scan_log(Position::START, 1, |page| page.len());
    drop(pages);
    // Nine pages of one; with nobody receiving, the reader stops at the first it cannot hand on.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), reader).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
}

/// The tail's page reader: the same events as `read_all` (less the metadata), byte for byte,
/// after any position, at most `limit` at a time.
async fn a_log_page_gives_what_read_all_gives(store: &Store) {
    let read = append_varied(store).await;
    assert_eq!(read.len(), 9);
    let mut paged = Vec::new();
    let mut after = Position::START;
    loop {
        let page = store.read_log_page(after, 4).await.unwrap();
        let Some(last) = page.last_position() else { break };
        assert!(page.len() <= 4, "at most the limit: {}", page.len());
        paged.extend(page.events().map(|e| {
            let owned = (e.stream_id.to_string(), e.event_type.to_string(), e.payload.to_string());
            (e.position, e.event_id, owned.0, e.version, owned.1, e.schema_version, owned.2, e.recorded_at)
        }));
        after = last;
    }
    assert_eq!(paged, read.iter().map(as_scanned).collect::<Vec<Scanned>>());
    assert!(paged[4].6.contains("🦀") && paged[4].6.len() > 70_000, "the long payload whole");
    let from_the_sixth = store.read_log_page(read[5].position, 100).await.unwrap();
    let ids: Vec<Uuid> = from_the_sixth.events().map(|e| e.event_id).collect();
    assert_eq!(ids, read[6..].iter().map(|e| e.event_id).collect::<Vec<_>>());
    assert!(store.read_log_page(read[8].position, 100).await.unwrap().is_empty(), "nothing after the last");
    assert!(store.read_log_page(Position::START, 0).await.unwrap().is_empty(), "a limit of zero");
}

/// A process frozen between `BEGIN` and `COMMIT` (a paused VM, a SIGSTOP) holds back every
/// Postgres reader in the cluster, as readers stop below the oldest open transaction. Without a
/// bound that lasts as long as the freeze; with `idle_in_transaction` the server ends the frozen
/// transaction (nothing of it was acknowledged) and what others committed becomes readable.
#[tokio::test]
async fn a_frozen_writer_holds_back_the_log_only_for_its_idle_bound() {
    use licensd_store::StoreOptions;
    use std::time::Duration;
    let Some(db) = TempDatabase::postgres().await else { return };
    let store = db.open().await;
    let frozen_with = |bound: Duration| {
        let url = db.url.clone();
        async move {
            let options = StoreOptions { idle_in_transaction: bound, ..StoreOptions::durable() };
            let Store::Postgres(pg) = Store::connect(&url, &options).await.unwrap() else { unreachable!() };
            let mut tx = pg.pool().begin().await.unwrap();
            let frozen = request(&format!("t-frozen-{}", bound.as_millis()), ExpectedVersion::NoStream, vec![event(0)]);
            PostgresStore::append_in(&mut tx, vec![frozen]).await.unwrap().pop().unwrap().unwrap();
            (pg, tx)
        }
    };

    // Unbounded: a second of waiting reads nothing past the frozen transaction.
    let (_pg, tx) = frozen_with(Duration::ZERO).await;
    let held = event(1);
    store.append(request("t-held", ExpectedVersion::NoStream, vec![held.clone()])).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(store.read_all(Position::START, 10).await.unwrap().is_empty(), "held back while frozen");
    tx.rollback().await.unwrap();
    let seen = read_everything(&store, 1).await;
    assert_eq!(seen.iter().map(|e| e.event_id).collect::<Vec<_>>(), [held.event_id]);

    // Bounded: the server ends the frozen transaction, and the later append is read.
    let (_pg, _tx) = frozen_with(Duration::from_millis(300)).await;
    let later = event(2);
    let appended = store.append(request("t-later", ExpectedVersion::NoStream, vec![later.clone()])).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut read = Vec::new();
    while read.is_empty() && std::time::Instant::now() < deadline {
        read = store.read_all(seen[0].position, 10).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ids: Vec<Uuid> = read.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, [later.event_id], "the later append, and nothing of the frozen transaction");
    assert_eq!(read[0].position, appended.position);
}
