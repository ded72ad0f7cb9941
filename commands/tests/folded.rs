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
        let bill = LicenseCommand::BillValidation { nonce: Some(format!("n{n}")) };
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
