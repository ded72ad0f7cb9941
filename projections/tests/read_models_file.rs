//! On SQLite the read models live in their own file (`licensd-read.db`), written through their own
//! connection: projecting never waits for the event log's write lock, and a data folder from
//! before the split keeps its webhook deliveries and rebuilds everything else from the log.

use licensd_domain::account::AccountEvent;
use licensd_domain::{AccountId, DomainEvent, EventData, StreamCategory};
use licensd_projections::{all_sql_projections, SqlRunner, TailConfig};
use licensd_store::testing::TempDatabase;
use licensd_store::{AppendRequest, EventStore, ExpectedVersion, NewEvent, Store};
use sqlx::Connection;
use std::time::Duration;

fn grant(amount: u64) -> NewEvent {
    let event = AccountEvent::CreditsGranted { amount, reason: "top-up".into(), at: chrono::Utc::now() };
    let data = EventData::encode(&event);
    assert_eq!(data.event_type, event.event_type());
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: data.event_type.into(),
        schema_version: data.schema_version,
        payload: data.payload,
        metadata: serde_json::json!({ "actor": "operator", "account_id": "a" }),
    }
}

async fn ledger_rows(store: &Store) -> usize {
    store.query_text("SELECT CAST(delta AS TEXT) FROM rm_credit_ledger", &[]).await.unwrap().len()
}

#[tokio::test]
async fn projecting_does_not_wait_for_the_event_logs_write_lock() {
    let db = TempDatabase::sqlite();
    let store = db.open().await;
    let stream = StreamCategory::Account.stream_id(AccountId::new());
    store.append(AppendRequest::new(&stream, ExpectedVersion::Any, vec![grant(5), grant(7)])).await.unwrap();

    // Another writer holds the log's write lock (as the event writer does during a batch).
    let mut holder = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();

    let runner = SqlRunner::shared(store.clone(), all_sql_projections(), TailConfig::default());
    let projected = tokio::time::timeout(Duration::from_secs(5), runner.catch_up()).await;
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    assert!(projected.expect("projected while the log was locked").unwrap() >= 2);
    assert_eq!(ledger_rows(&store).await, 2);
    assert!(db.dir().unwrap().join("licensd-read.db").exists(), "the read models' own file");
}

#[tokio::test]
async fn appending_does_not_wait_for_a_projection_commit() {
    let db = TempDatabase::sqlite();
    let store = db.open().await;
    // A pace of the read models holds their file's write lock.
    let read_models = db.dir().unwrap().join("licensd-read.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&read_models);
    let mut projecting = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut projecting).await.unwrap();

    let stream = StreamCategory::Account.stream_id(AccountId::new());
    let append = store.append(AppendRequest::new(&stream, ExpectedVersion::Any, vec![grant(1)]));
    let appended = tokio::time::timeout(Duration::from_secs(5), append).await;
    sqlx::query("ROLLBACK").execute(&mut projecting).await.unwrap();
    appended.expect("appended while the read models were locked").unwrap();
}

#[tokio::test]
async fn a_data_folder_from_before_the_split_keeps_its_deliveries_and_rebuilds_the_rest() {
    let db = TempDatabase::sqlite();
    // The log as the previous version left it: migrations up to 0008, read models in licensd.db,
    // a delivery the worker already made, a projected ledger row and its checkpoint.
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db.dir().unwrap().join("licensd.db"))
            .create_if_missing(true);
        let mut old = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
        let mut migrator = sqlx::migrate::Migrator::new(std::path::Path::new("../migrations/sqlite")).await.unwrap();
        migrator.migrations = migrator.migrations.iter().filter(|m| m.version <= 8).cloned().collect::<Vec<_>>().into();
        migrator.run_direct(&mut old).await.unwrap();
        for sql in [
            "INSERT INTO webhook_deliveries (delivery_id, webhook_id, event, body, created_at, status, attempts,
                next_attempt_at) VALUES ('0:1:wh_1', 'wh_1', 'license.created', '{}', 't', 'delivered', 1, 't')",
            "INSERT INTO rm_credit_ledger (pos_tx, pos_seq, account_id, delta, kind, reason, at)
                VALUES (0, 99, 'stale', 1, 'grant', 'r', 't')",
            "INSERT INTO projection_checkpoints (name, version, tx, seq) VALUES ('credit_ledger', 1, 0, 99)",
        ] {
            sqlx::query(sql).execute(&mut old).await.unwrap();
        }
        old.close().await.unwrap();
    }
    let store = db.open().await;
    let stream = StreamCategory::Account.stream_id(AccountId::new());
    store.append(AppendRequest::new(&stream, ExpectedVersion::Any, vec![grant(5)])).await.unwrap();

    let delivered = store.query_text("SELECT status FROM webhook_deliveries", &[]).await.unwrap();
    assert_eq!(delivered, [Some("delivered".to_string())], "the delivery bookkeeping moved, not lost");
    let tables = "SELECT name FROM main.sqlite_master WHERE name IN ('rm_credit_ledger', 'webhook_deliveries')";
    assert!(store.query_text(tables, &[]).await.unwrap().is_empty(), "the log's file keeps no read model");
    assert!(store.load_checkpoint("credit_ledger").await.unwrap().is_none(), "projections start over");

    SqlRunner::shared(store.clone(), all_sql_projections(), TailConfig::default()).catch_up().await.unwrap();
    assert_eq!(ledger_rows(&store).await, 1, "rebuilt from the log: the stale row is gone, the grant is there");
}
