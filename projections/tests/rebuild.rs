//! Rebuilding every projection from zero yields the same read models as live processing,
//! on SQLite and on Postgres.

use chrono::Duration;
use licensd_commands::commerce::InboundEvent;
use licensd_commands::{Actor, Commands, MasterKey, NewLicense, Writer, WriterConfig};
use licensd_domain::account::AccountCommand;
use licensd_domain::app::AppCommand;
use licensd_domain::commerce::{CommerceAction, NormalizedEvent, Provider};
use licensd_domain::license::LicenseCommand;
use licensd_domain::{SystemClock, VariableAccess, VariableAccessMap, Variables};
use licensd_projections::{
    all_sql_projections, license_streams, load_snapshot, rebuild_sql, sql_projection_hash, write_snapshot, HotModel,
    HotRunner, SqlRunner, TailConfig,
};
use licensd_store::testing::TempDatabase;
use licensd_store::Store;
use std::sync::Arc;
use tokio::sync::watch;

/// An app's WebSocket API keys: the one it was created with (rotated out) and the current one.
struct WebsocketKeys {
    app_id: licensd_domain::AppId,
    rotated_out: String,
    current: String,
}

/// Merchant activity touching every projection: accounts, credits, apps (with their live-session
/// fields), license lifecycles.
async fn busy_day(commands: &Commands, round: usize) -> Vec<WebsocketKeys> {
    let op = Actor::Operator;
    let mut keys = Vec::new();
    for merchant in 0..3 {
        let account = commands.create_account(&format!("m{merchant}.{round}@example.com"), &op).await.unwrap();
        let id = account.account_id;
        let grant = AccountCommand::GrantCredits { amount: 1000, reason: "top-up".into() };
        commands.account_command(id, grant, &op).await.unwrap();
        let app = commands.create_app(id, &format!("App {merchant}"), &op).await.unwrap();
        if merchant == 0 {
            // One app with a webhook for revocations only: the outbox queues those and nothing else.
            let (url, events) = ("https://example.com/hook".to_string(), vec!["license.revoked".to_string()]);
            commands.create_webhook(id, app.app_id, url, events, true, &op).await.unwrap();
        }
        let (current, _) = commands.rotate_websocket_key(id, app.app_id, &op).await.unwrap();
        keys.push(WebsocketKeys { app_id: app.app_id, rotated_out: app.websocket_api_key.clone(), current });
        let version = AppCommand::SetVersion { version: format!("1.{merchant}"), max_chars: 32 };
        commands.app_command(id, app.app_id, version, &op).await.unwrap();
        let open = [("motd".to_string(), VariableAccess::AuthNotRequired)].into_iter().collect();
        let access = AppCommand::SetVariableAccess(VariableAccessMap::new(open).unwrap());
        commands.app_command(id, app.app_id, access, &op).await.unwrap();
        let spec = NewLicense {
            app_id: app.app_id,
            expires_at: Some(commands.now() + Duration::days(30)),
            max_hwid_slots: 2,
            label: Some(format!("order {merchant}")),
            levels: vec![format!("tier-{merchant}")],
            max_sessions: Some(merchant + 1),
        };
        let licenses = commands.create_licenses(id, spec, 12, &op).await.unwrap();
        for (i, (key, _)) in licenses.iter().enumerate() {
            let run = |command| commands.license_command(id, key, command, &op);
            run(LicenseCommand::Authenticate { hwid: format!("hw-{i}") }).await.unwrap();
            run(LicenseCommand::BillValidation { nonce: Some(format!("n{i}")), hwid: None }).await.unwrap();
            match i % 6 {
                0 => drop(run(LicenseCommand::Revoke).await.unwrap()),
                1 => drop(run(LicenseCommand::ResetHwid).await.unwrap()),
                2 => drop(run(LicenseCommand::Extend { expires_at: None }).await.unwrap()),
                3 => drop(run(LicenseCommand::Delete).await.unwrap()),
                4 => drop(run(LicenseCommand::BillHeartbeats { heartbeats: 20 }).await.unwrap()),
                _ => {
                    let vars = Variables::new(serde_json::json!({"plan": "pro"}).as_object().unwrap().clone());
                    drop(run(LicenseCommand::SetVariables(vars.unwrap())).await.unwrap())
                }
            }
        }
        // Commerce: a ledger entry, and a license linked to a subscription.
        let normalized = NormalizedEvent {
            action: CommerceAction::Purchase,
            object_id: Some(format!("cs_{merchant}")),
            line_items: None,
            subscription_id: Some(format!("sub_{merchant}")),
            payment_refs: vec![],
            amount: Some(licensd_domain::commerce::Amount { minor: 1900 + round as i64, currency: "EUR".into() }),
        };
        let inbound = InboundEvent {
            connection_id: uuid::Uuid::new_v4(),
            account_id: id,
            provider: Provider::Stripe,
            external_id: format!("evt_{merchant}_{round}"),
            event_type: "checkout.session.completed".into(),
            normalized,
            email: None,
            customer_id: None,
        };
        assert!(commands.receive_commerce_event(inbound).await.unwrap());
        let link = LicenseCommand::LinkCommerce {
            provider: Provider::Stripe,
            mapping_id: uuid::Uuid::nil(),
            refs: vec![format!("sub:sub_{merchant}")],
        };
        commands.license_command(id, &licenses[1].0, link, &op).await.unwrap();
        let seats = LicenseCommand::Configure { levels: Some(vec!["gold".into()]), max_sessions: Some(None) };
        commands.license_command(id, &licenses[4].0, seats, &op).await.unwrap();
    }
    keys
}

/// Each app is found by its current WebSocket key only, in a model that digests keys as the
/// server does.
fn assert_found_by_current_keys(model: &HotModel, commands: &Commands, keys: &[WebsocketKeys]) {
    model.set_websocket_key_digest(Arc::new(commands.websocket_key_digester()));
    for key in keys {
        assert_eq!(model.app_by_websocket_key(&key.current).map(|a| a.app_id), Some(key.app_id));
        assert_eq!(model.app_by_websocket_key(&key.rotated_out), None, "a rotated-out key finds nothing");
        let app = model.app(key.app_id).unwrap();
        assert_eq!((app.version.len(), app.variable_access("motd")), (3, VariableAccess::AuthNotRequired));
    }
}

/// On Postgres, events become readable once every older transaction on the server (other
/// tests' too) has finished; wait for that so catch-up sees the whole log.
async fn wait_until_all_visible(store: &Store) {
    let stored = store.query_text("SELECT CAST(COUNT(*) AS TEXT) FROM events", &[]).await.unwrap();
    let stored: usize = stored[0].as_deref().unwrap().parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let probe = HotModel::default();
    let runner = HotRunner::new(store.clone(), Arc::new(probe), TailConfig::default());
    let mut seen = 0;
    while seen < stored as u64 && std::time::Instant::now() < deadline {
        seen += runner.catch_up().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(seen, stored as u64, "every stored event became readable");
}

async fn digests(store: &Store, hot: &HotModel) -> Vec<String> {
    let mut all = vec![hot.digest().unwrap()];
    for projection in all_sql_projections() {
        all.push(sql_projection_hash(store, projection.as_ref()).await.unwrap());
    }
    all
}

async fn rebuild_matches_live(store: Store) {
    let (writer, writer_task) = Writer::spawn(store.clone(), WriterConfig::default());
    let key = MasterKey::parse(&"ab".repeat(32)).unwrap();
    let commands = Commands::new(store.clone(), writer.clone(), Arc::new(SystemClock), key);
    let empty = digests(&store, &HotModel::default()).await;

    // Live: every projection tails the log while the commands run.
    let (stop_tx, stop) = watch::channel(false);
    let live = Arc::new(HotModel::default());
    let config = TailConfig { batch: 7, ..TailConfig::default() }; // small batches: many checkpoints
    let hot = HotRunner::new(store.clone(), live.clone(), config);
    let mut tasks = vec![tokio::spawn(hot.clone().run(writer.subscribe_commits(), stop.clone()))];
    // As served: one shared reader for every SQL model; and, racing it as an on-demand catch-up
    // does, a runner of the outbox alone (checkpoints move compare-and-set: no event twice).
    let shared = SqlRunner::shared(store.clone(), all_sql_projections(), config);
    let outbox = all_sql_projections().into_iter().find(|p| p.name() == "webhook_outbox").unwrap();
    let runners = [shared, SqlRunner::new(store.clone(), outbox, config)];
    for runner in &runners {
        tasks.push(tokio::spawn(runner.clone().run(writer.subscribe_commits(), stop.clone())));
    }
    let keys = busy_day(&commands, 0).await;
    writer.close();
    writer_task.await.unwrap();
    stop_tx.send_replace(true);
    for task in tasks {
        task.await.unwrap();
    }
    wait_until_all_visible(&store).await;
    hot.catch_up().await.unwrap();
    for runner in &runners {
        runner.catch_up().await.unwrap();
    }
    let live_digests = digests(&store, &live).await;
    for (live, empty) in live_digests.iter().zip(&empty) {
        assert_ne!(live, empty, "every read model holds something");
    }
    assert_eq!(live.license_count(), 3 * 12 - 3 * 2, "deleted licenses leave the hot model");
    // Only the subscribed app's revocations were queued (licenses 0 and 6 of merchant 0).
    let queued = store.query_text("SELECT event FROM webhook_deliveries ORDER BY delivery_id", &[]).await.unwrap();
    assert_eq!(queued, vec![Some("license.revoked".to_string()); 2], "outbox rows only for subscribed events");

    // A replay from zero sizes the license map from the log's count of license streams (the
    // deleted ones too); Postgres has none to give.
    let counted = license_streams(&store).await.unwrap();
    assert_eq!(counted, (store.backend() == "sqlite").then_some(3 * 12));

    // From zero: a fresh in-memory model and emptied SQL tables, replayed from the log.
    let replayed = Arc::new(HotModel::default());
    HotRunner::new(store.clone(), replayed.clone(), TailConfig::default()).catch_up().await.unwrap();
    for projection in all_sql_projections() {
        rebuild_sql(&store, projection).await.unwrap();
    }
    assert_eq!(digests(&store, &replayed).await, live_digests);
    assert_found_by_current_keys(&live, &commands, &keys);
    assert_found_by_current_keys(&replayed, &commands, &keys);
}

#[tokio::test]
async fn sqlite_rebuild_matches_live() {
    let db = TempDatabase::sqlite();
    rebuild_matches_live(db.open().await).await;
}

#[tokio::test]
async fn postgres_rebuild_matches_live() {
    let Some(db) = TempDatabase::postgres().await else { return };
    rebuild_matches_live(db.open().await).await;
}

/// A model loaded from a snapshot, with the log after it replayed, equals a replay of the whole
/// log; a damaged snapshot, one written by other code and one of another log are ignored.
async fn snapshot_and_tail_match_full_replay(store: Store, other: Store) {
    let (writer, writer_task) = Writer::spawn(store.clone(), WriterConfig::default());
    let key = MasterKey::parse(&"ab".repeat(32)).unwrap();
    let commands = Commands::new(store.clone(), writer.clone(), Arc::new(SystemClock), key);
    let mut keys = busy_day(&commands, 0).await;
    wait_until_all_visible(&store).await;
    let early = Arc::new(HotModel::default());
    HotRunner::new(store.clone(), early.clone(), TailConfig::default()).catch_up().await.unwrap();
    let folder = std::env::temp_dir().join(format!("licensd-snapshot-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("hot-model.snapshot");
    let written = write_snapshot(&early, &path).unwrap();
    assert_eq!(written.position, early.position());

    let tail_keys = busy_day(&commands, 1).await; // the tail the snapshot does not show
    writer.close();
    writer_task.await.unwrap();
    wait_until_all_visible(&store).await;
    let full = Arc::new(HotModel::default());
    HotRunner::new(store.clone(), full.clone(), TailConfig::default()).catch_up().await.unwrap();

    let restored = Arc::new(load_snapshot(&store, &path, HotModel::default).await.expect("a usable snapshot"));
    assert_eq!(restored.position(), written.position);
    assert_eq!(
        restored.digest().unwrap(),
        early.digest().unwrap(),
        "the snapshot restores the model it was taken from"
    );
    // The WebSocket key index is not in the snapshot: it is rebuilt from the apps it holds.
    assert_found_by_current_keys(&restored, &commands, &keys);
    let tail = HotRunner::new(store.clone(), restored.clone(), TailConfig::default()).catch_up().await.unwrap();
    assert!(tail > 0, "only the tail is replayed");
    assert_eq!(restored.digest().unwrap(), full.digest().unwrap(), "snapshot + tail = full replay");
    keys.extend(tail_keys);
    assert_found_by_current_keys(&restored, &commands, &keys);
    assert_eq!(restored.position(), full.position());

    // Another log (another database, an older backup): ignored.
    assert!(load_snapshot(&other, &path, HotModel::default).await.is_none());
    let bytes = std::fs::read(&path).unwrap();
    // One byte of the body changed: ignored.
    let mut damaged = bytes.clone();
    let last = damaged.len() - 2;
    damaged[last] ^= 0x01;
    std::fs::write(&path, &damaged).unwrap();
    assert!(load_snapshot(&store, &path, HotModel::default).await.is_none());
    // Written by other code: ignored.
    let text = String::from_utf8(bytes).unwrap();
    let other_code = text.replacen(licensd_projections::SNAPSHOT_CODE, &"0".repeat(32), 1);
    assert_ne!(other_code, text);
    std::fs::write(&path, other_code).unwrap();
    assert!(load_snapshot(&store, &path, HotModel::default).await.is_none());
    std::fs::write(&path, b"not a snapshot").unwrap();
    assert!(load_snapshot(&store, &path, HotModel::default).await.is_none());
    std::fs::remove_dir_all(&folder).unwrap();
}

#[tokio::test]
async fn sqlite_snapshot_and_tail_match_full_replay() {
    let (db, other) = (TempDatabase::sqlite(), TempDatabase::sqlite());
    snapshot_and_tail_match_full_replay(db.open().await, other.open().await).await;
}

#[tokio::test]
async fn postgres_snapshot_and_tail_match_full_replay() {
    let Some(db) = TempDatabase::postgres().await else { return };
    let other = TempDatabase::sqlite();
    snapshot_and_tail_match_full_replay(db.open().await, other.open().await).await;
}
