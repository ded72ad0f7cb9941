//! Commands keep folded aggregates and fold only the events appended since, yet decide on the
//! stream's latest state: another node's append is seen, and an append still checks the version
//! it read. Runs on SQLite and on Postgres (`LICENSD_TEST_POSTGRES_URL`).

use licensd_commands::{Actor, CommandError, Commands, MasterKey, NewLicense, Writer, WriterConfig};
use licensd_domain::license::{LicenseCommand, LicenseEvent, LicenseState, LicenseStatus};
use licensd_domain::{AccountId, DomainError, LicenseKey, StreamCategory, SystemClock};
use licensd_store::testing::TempDatabase;
use licensd_store::Store;
use std::sync::Arc;

fn node(store: &Store, folded_streams: u64) -> (Commands, tokio::task::JoinHandle<()>) {
    let (writer, task) = Writer::spawn(store.clone(), WriterConfig::default());
    let key = MasterKey::parse(&"ab".repeat(32)).unwrap();
    (Commands::with_folded_streams(store.clone(), writer, Arc::new(SystemClock), key, folded_streams), task)
}

async fn license(commands: &Commands) -> (AccountId, LicenseKey) {
    let op = Actor::Operator;
    let account = commands.create_account("folded@example.com", &op).await.unwrap().account_id;
    let app = commands.create_app(account, "Folded", &op).await.unwrap().app_id;
    let spec = NewLicense {
        app_id: app,
        expires_at: None,
        max_hwid_slots: 2,
        label: None,
        levels: Vec::new(),
        max_sessions: None,
    };
    let created = commands.create_licenses(account, spec, 1, &op).await.unwrap();
    (account, created[0].0.clone())
}

async fn decisions_see_every_node(store: Store) {
    let (a, _a_task) = node(&store, 16);
    let (b, _b_task) = node(&store, 16);
    let op = Actor::Operator;
    let (account, key) = license(&a).await;
    let stream = StreamCategory::License.stream_id(&key);
    for n in 0..50 {
        let bill = LicenseCommand::BillValidation { nonce: Some(format!("n{n}")), hwid: None };
        a.license_command(account, &key, bill, &op).await.unwrap();
    }
    let (state, version) = a.load::<LicenseState>(&stream).await.unwrap();
    assert_eq!(version, 51);
    let LicenseState::Live(live) = state else { panic!("live") };
    assert_eq!(live.status, LicenseStatus::Active);

    // Another node revokes: the first node's next decision starts from the revocation.
    b.license_command(account, &key, LicenseCommand::Revoke, &op).await.unwrap();
    let activated = a.license_command(account, &key, LicenseCommand::Activate, &op).await.unwrap();
    assert!(
        matches!(activated.events.as_slice(), [LicenseEvent::LicenseActivated { .. }]),
        "decided on the revoked license, not on a kept copy: {:?}",
        activated.events
    );
    let (state, version) = a.load::<LicenseState>(&stream).await.unwrap();
    assert_eq!(version, 53);
    assert!(matches!(state, LicenseState::Live(l) if l.status == LicenseStatus::Active));
    // The kept fold and a fold from the first event agree.
    let (uncached, _u_task) = node(&store, 0);
    assert_eq!(uncached.load::<LicenseState>(&stream).await.unwrap(), a.load::<LicenseState>(&stream).await.unwrap());

    // A deletion on the other node is seen by the node that kept the license.
    let deleted = b.license_command(account, &key, LicenseCommand::Delete, &op).await.unwrap();
    assert!(!deleted.events.is_empty());
    let again = a.license_command(account, &key, LicenseCommand::Revoke, &op).await;
    assert!(
        matches!(again, Err(CommandError::Domain(DomainError::LicenseDeleted))),
        "the deletion on the other node is seen: {again:?}"
    );
}

#[tokio::test]
async fn sqlite_decisions_see_every_node() {
    let db = TempDatabase::sqlite();
    decisions_see_every_node(db.open().await).await;
}

#[tokio::test]
async fn postgres_decisions_see_every_node() {
    let Some(db) = TempDatabase::postgres().await else { return };
    decisions_see_every_node(db.open().await).await;
}

/// Two nodes bind machines on one license at once while readers load it in a loop: every load
/// pairs a state with its own version (one bound machine per event after the creation), and in
/// the end both nodes' kept folds hold every machine whose command succeeded, as a fold from the
/// first event does.
async fn concurrent_commands_never_lose_an_event_from_the_fold(store: Store) {
    let (a, _a_task) = node(&store, 16);
    let (b, _b_task) = node(&store, 16);
    let op = Actor::Operator;
    let (account, _) = license(&a).await;
    let key = {
        let app = a.create_app(account, "Folded, many slots", &op).await.unwrap().app_id;
        let spec = NewLicense {
            app_id: app,
            expires_at: None,
            max_hwid_slots: 16,
            label: None,
            levels: Vec::new(),
            max_sessions: None,
        };
        a.create_licenses(account, spec, 1, &op).await.unwrap().remove(0).0
    };
    let stream = StreamCategory::License.stream_id(&key);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for node in [a.clone(), b.clone()] {
        let (stream, done) = (stream.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut last = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let (state, version) = node.load::<LicenseState>(&stream).await.unwrap();
                let LicenseState::Live(live) = state else { panic!("live") };
                assert_eq!(live.hwids.len() as u64, version - 1, "a fold paired with another version");
                assert!(version >= last, "a node's view went back from {last} to {version}");
                last = version;
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut writers = Vec::new();
    for n in 0..12 {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        let key = key.clone();
        writers.push(tokio::spawn(async move {
            let bind = LicenseCommand::Authenticate { hwid: format!("machine-{n}") };
            // Contention (five lost races in a row) is an answer, not a loss: try again.
            loop {
                match node.license_command(account, &key, bind.clone(), &Actor::Operator).await {
                    Err(CommandError::Contention) => continue,
                    other => return other.map(|done| done.events.len()),
                }
            }
        }));
    }
    for writer in writers {
        assert_eq!(writer.await.unwrap().unwrap(), 1, "one binding event per machine");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    let (uncached, _u_task) = node(&store, 0);
    let full = uncached.load::<LicenseState>(&stream).await.unwrap();
    assert_eq!(full.1, 13);
    let LicenseState::Live(live) = &full.0 else { panic!("live") };
    let mut bound = live.hwids.clone();
    bound.sort();
    let mut expected: Vec<String> = (0..12).map(|n| format!("machine-{n}")).collect();
    expected.sort();
    assert_eq!(bound, expected);
    assert_eq!(a.load::<LicenseState>(&stream).await.unwrap(), full, "node a kept every event");
    assert_eq!(b.load::<LicenseState>(&stream).await.unwrap(), full, "node b kept every event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_commands_never_lose_an_event_from_the_fold() {
    let db = TempDatabase::sqlite();
    concurrent_commands_never_lose_an_event_from_the_fold(db.open().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_commands_never_lose_an_event_from_the_fold() {
    let Some(db) = TempDatabase::postgres().await else { return };
    concurrent_commands_never_lose_an_event_from_the_fold(db.open().await).await;
}
