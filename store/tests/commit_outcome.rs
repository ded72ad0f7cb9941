//! A Postgres connection lost while `COMMIT` is in flight: the store finds out what happened
//! instead of calling the batch failed. A TCP proxy between the store and the server breaks the
//! store's side of the connection at exactly that moment, three ways: after passing `COMMIT` on
//! (the server commits, the acknowledgement is lost), before (the server rolls back), or while
//! keeping the server's session open (the outcome stays unknown). Postgres only
//! (`LICENSD_TEST_POSTGRES_URL`).

use licensd_store::testing::TempDatabase;
use licensd_store::{AppendRequest, EventStore, ExpectedVersion, NewEvent, Store, StoreError, StoreOptions};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// `COMMIT` reaches the server; its answer never reaches the store.
    AckLost,
    /// Both sides are cut before `COMMIT` is passed on: the server rolls back.
    LostBeforeCommit,
    /// The store's side is cut, the server's session stays open mid-transaction.
    ServerKeepsWaiting,
}

/// Passes bytes both ways; the next `COMMIT` after [`Proxy::arm`] meets the fault.
struct Proxy {
    addr: std::net::SocketAddr,
    fault: Arc<Mutex<Option<Fault>>>,
    /// Server connections kept open on purpose ([`Fault::ServerKeepsWaiting`]).
    held: Arc<Mutex<Vec<OwnedWriteHalf>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fault = Arc::new(Mutex::new(None));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (armed, kept) = (fault.clone(), held.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(&upstream).await.unwrap();
                tokio::spawn(relay(client, server, armed.clone(), kept.clone()));
            }
        });
        Self { addr, fault, held }
    }

    fn arm(&self, fault: Fault) {
        *self.fault.lock().unwrap() = Some(fault);
    }

    /// Closes the held server sessions: the server then rolls their transactions back.
    fn release(&self) {
        self.held.lock().unwrap().clear();
    }
}

/// Relays one connection, reading the client's messages (after the untagged startup message:
/// a tag byte, a length, a body) to spot the simple-query `COMMIT`.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    fault: Arc<Mutex<Option<Fault>>>,
    held: Arc<Mutex<Vec<OwnedWriteHalf>>>,
) -> std::io::Result<()> {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let answers = tokio::spawn(async move { tokio::io::copy(&mut from_server, &mut to_client).await });
    let length = from_client.read_u32().await?;
    let mut startup = vec![0; length as usize - 4];
    from_client.read_exact(&mut startup).await?;
    to_server.write_u32(length).await?;
    to_server.write_all(&startup).await?;
    loop {
        let tag = from_client.read_u8().await?;
        let length = from_client.read_u32().await?;
        let mut body = vec![0; length as usize - 4];
        from_client.read_exact(&mut body).await?;
        let fault = if tag == b'Q' && body.starts_with(b"COMMIT") { fault.lock().unwrap().take() } else { None };
        if let Some(fault) = fault {
            // Stop the answers first (dropping the client's side), so none can slip through.
            answers.abort();
            let _ = answers.await;
            match fault {
                Fault::AckLost => {
                    to_server.write_u8(tag).await?;
                    to_server.write_u32(length).await?;
                    to_server.write_all(&body).await?;
                    held.lock().unwrap().push(to_server);
                }
                Fault::LostBeforeCommit => {}
                Fault::ServerKeepsWaiting => held.lock().unwrap().push(to_server),
            }
            return Ok(());
        }
        to_server.write_u8(tag).await?;
        to_server.write_u32(length).await?;
        to_server.write_all(&body).await?;
    }
}

/// A fresh database reached through a proxy; `None` when Postgres is not configured.
async fn proxied() -> Option<(TempDatabase, Proxy, Store)> {
    let db = TempDatabase::postgres().await?;
    let (scheme_user, rest) = db.url.split_once('@').expect("a URL with a user");
    let (server, name) = rest.split_once('/').expect("a URL with a database");
    let proxy = Proxy::start(server.to_string()).await;
    let url = format!("{scheme_user}@{}/{name}?sslmode=disable", proxy.addr);
    let options = StoreOptions { commit_settle: Duration::from_millis(600), ..StoreOptions::durable() };
    let store = Store::connect(&url, &options).await.expect("connect through the proxy");
    store.migrate().await.expect("migrate");
    Some((db, proxy, store))
}

fn batch() -> Vec<AppendRequest> {
    let event = |n: i64| NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "Tested".into(),
        schema_version: 1,
        payload: json!({ "n": n }),
        metadata: json!({}),
    };
    vec![
        AppendRequest::new("c-1", ExpectedVersion::NoStream, vec![event(1)]),
        AppendRequest::new("c-2", ExpectedVersion::NoStream, vec![event(2), event(3)]),
    ]
}

async fn stored(store: &Store) -> usize {
    store.read_stream("c-1", 1).await.unwrap().len() + store.read_stream("c-2", 1).await.unwrap().len()
}

#[tokio::test]
async fn a_commit_whose_acknowledgement_was_lost_is_reported_committed() {
    let Some((_db, proxy, store)) = proxied().await else { return };
    let sent = batch();
    proxy.arm(Fault::AckLost);
    let results = store.append_batch(sent.clone()).await.expect("the committed batch is not reported failed");
    assert_eq!(results.iter().map(|r| r.as_ref().unwrap().version).collect::<Vec<_>>(), [1, 2]);
    assert!(proxy.fault.lock().unwrap().is_none(), "the fault was met");
    assert_eq!(stored(&store).await, 3);
    // A client retrying anyway (same event ids) gets the same answer, nothing written twice.
    let again = store.append_batch(sent).await.unwrap();
    assert!(again.iter().all(|r| r.as_ref().unwrap().idempotent), "{again:?}");
    assert_eq!(stored(&store).await, 3);
}

#[tokio::test]
async fn a_commit_that_never_reached_the_server_is_reported_failed_and_can_be_retried() {
    let Some((_db, proxy, store)) = proxied().await else { return };
    let sent = batch();
    proxy.arm(Fault::LostBeforeCommit);
    let err = store.append_batch(sent.clone()).await.expect_err("nothing was committed");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert_eq!(stored(&store).await, 0);
    let retried = store.append_batch(sent).await.unwrap();
    assert!(retried.iter().all(|r| r.as_ref().is_ok_and(|r| !r.idempotent)), "{retried:?}");
    assert_eq!(stored(&store).await, 3);
}

#[tokio::test]
async fn a_commit_that_cannot_be_settled_is_reported_unknown_never_failed() {
    let Some((_db, proxy, store)) = proxied().await else { return };
    let sent = batch();
    proxy.arm(Fault::ServerKeepsWaiting);
    let err = store.append_batch(sent.clone()).await.expect_err("the outcome is not known");
    assert!(matches!(err, StoreError::CommitUnknown(_)), "{err:?}");
    // Once the server ends the session its transaction is rolled back; the retry then writes.
    proxy.release();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let retried = loop {
        let retried = store.append_batch(sent.clone()).await.unwrap();
        if retried.iter().all(Result::is_ok) || std::time::Instant::now() > deadline {
            break retried;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(retried.iter().all(|r| r.as_ref().is_ok_and(|r| !r.idempotent)), "{retried:?}");
    assert_eq!(stored(&store).await, 3);
}
