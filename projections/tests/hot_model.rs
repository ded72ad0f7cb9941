//! The in-memory model under concurrency: readers never see an entry vanish while events for
//! it are applied, a deleted license never comes back, and bills recorded ahead of the log
//! count once and cannot overdraw.

use chrono::Utc;
use licensd_domain::account::AccountEvent;
use licensd_domain::app::{AppEvent, SigningKey, WebsocketKey};
use licensd_domain::commerce::{Connection, Provider};
use licensd_domain::license::{LicenseEvent, LicenseState};
use licensd_domain::{
    AccountId, Aggregate, ApiKeyId, AppId, DomainEvent, EventData, LicenseKey, Sealed, SecurityLists,
};
use licensd_domain::{StreamCategory, Variables};
use licensd_projections::{CreditRefusal, HotModel};
use licensd_store::{Position, RecordedEvent};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Feeds events to a model in log order, as the tail does.
struct Log {
    model: Arc<HotModel>,
    seq: i64,
    versions: std::collections::HashMap<String, u64>,
}

impl Log {
    fn new(model: Arc<HotModel>) -> Self {
        Self { model, seq: 0, versions: Default::default() }
    }

    fn apply(&mut self, stream_id: &str, event: &impl DomainEvent) -> u64 {
        self.seq += 1;
        let version = self.versions.entry(stream_id.to_string()).or_default();
        *version += 1;
        let data = EventData::encode(event);
        let recorded = RecordedEvent {
            position: Position { tx: 0, seq: self.seq },
            event_id: uuid::Uuid::now_v7(),
            stream_id: stream_id.to_string(),
            version: *version,
            event_type: data.event_type.to_string(),
            schema_version: data.schema_version,
            payload: licensd_store::raw_json(&data.payload),
            metadata: licensd_store::raw_json(&serde_json::json!({})),
            recorded_at: Utc::now(),
        };
        self.model.apply(&recorded).expect("applies");
        *version
    }
}

struct Fixture {
    account_id: AccountId,
    app_id: AppId,
    key: LicenseKey,
    key_hash: String,
    connection: Connection,
    email_digest: String,
}

impl Fixture {
    fn account(&self) -> String {
        StreamCategory::Account.stream_id(self.account_id)
    }
    fn app(&self) -> String {
        StreamCategory::App.stream_id(self.app_id)
    }
    fn license(&self) -> String {
        StreamCategory::License.stream_id(&self.key)
    }
}

/// An account with credits, an API key, a commerce connection and a dashboard login; an app;
/// a license of that app.
fn populated(log: &mut Log, credits: u64) -> Fixture {
    let now = Utc::now();
    let f = Fixture {
        account_id: AccountId::new(),
        app_id: AppId::new(),
        key: LicenseKey::from_random([9; 16]),
        key_hash: "ab".repeat(32),
        connection: Connection {
            connection_id: uuid::Uuid::new_v4(),
            provider: Provider::Stripe,
            signing_secret: Sealed("whsec".into()),
            api_key: None,
        },
        email_digest: "cd".repeat(32),
    };
    let account_id = f.account_id;
    log.apply(&f.account(), &AccountEvent::AccountCreated { account_id, created_at: now });
    log.apply(&f.account(), &AccountEvent::CreditsGranted { amount: credits, reason: "t".into(), at: now });
    let (key_hash, prefix, scopes) = (f.key_hash.clone(), "lk_".to_string(), vec!["*".to_string()]);
    log.apply(&f.account(), &AccountEvent::ApiKeyIssued { key_id: ApiKeyId::new(), key_hash, prefix, scopes, at: now });
    log.apply(&f.account(), &AccountEvent::CommerceConnected { connection: f.connection.clone(), at: now });
    let (email_digest, password_hash) = (f.email_digest.clone(), "$argon2id$x".to_string());
    log.apply(
        &f.account(),
        &AccountEvent::DashboardLoginSet { email_digest, password_hash: Some(password_hash), at: now },
    );
    let signing_key = SigningKey { key_id: "k1".into(), public_key: "pk".into(), private_key: Sealed("sealed".into()) };
    let (app_id, name, secret) = (f.app_id, "App".to_string(), Sealed("s".into()));
    log.apply(&f.app(), &AppEvent::AppCreated { app_id, account_id, name, secret, signing_key, created_at: now });
    let created = LicenseEvent::LicenseCreated {
        key: f.key.clone(),
        app_id,
        account_id,
        expires_at: None,
        max_hwid_slots: 2,
        label: None,
        created_at: now,
    };
    log.apply(&f.license(), &created);
    f
}

/// Every map the model holds, looked up the way the API looks it up: `None` is a vanished entry.
fn missing(model: &HotModel, f: &Fixture) -> Vec<&'static str> {
    let mut gone = Vec::new();
    if model.app(f.app_id).is_none() {
        gone.push("app");
    }
    if model.license(&f.key).is_none() {
        gone.push("license");
    }
    if model.account(f.account_id).is_none() {
        gone.push("account");
    }
    if model.api_key(&f.key_hash).is_none() {
        gone.push("api key");
    }
    if model.connection(f.connection.connection_id).is_none() {
        gone.push("connection");
    }
    if model.dashboard_login(&f.email_digest).is_none() {
        gone.push("login");
    }
    gone
}

#[test]
fn no_reader_ever_sees_an_entry_vanish_while_its_events_apply() {
    let model = Arc::new(HotModel::default());
    let mut log = Log::new(model.clone());
    let f = populated(&mut log, 10);
    assert_eq!(missing(&model, &f), Vec::<&str>::new());

    let done = Arc::new(AtomicBool::new(false));
    let (lookups, misses) = (Arc::new(AtomicU64::new(0)), Arc::new(std::sync::Mutex::new(Vec::new())));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (model, done, lookups, misses) = (model.clone(), done.clone(), lookups.clone(), misses.clone());
            let f = Fixture { ..clone_fixture(&f) };
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let gone = missing(&model, &f);
                    lookups.fetch_add(1, Ordering::Relaxed);
                    if !gone.is_empty() {
                        misses.lock().unwrap().extend(gone);
                    }
                }
            })
        })
        .collect();

    // The writer changes every entry the readers look up, as a busy deployment would: self-bans
    // on the app, bindings on the license, grants, new API keys, provider re-keys, new passwords.
    let now = Utc::now();
    for round in 0..3000u32 {
        let lists = SecurityLists { hwid_blacklist: vec![format!("hw-{round}")], ..Default::default() };
        log.apply(&f.app(), &AppEvent::SecurityListsChanged { lists, at: now });
        let vars = Variables::new(serde_json::json!({ "round": round }).as_object().unwrap().clone()).unwrap();
        log.apply(&f.license(), &LicenseEvent::VariablesSet { variables: vars, at: now });
        log.apply(&f.account(), &AccountEvent::CreditsGranted { amount: 1, reason: "t".into(), at: now });
        let (key_hash, prefix, scopes) = (format!("{round:064x}"), "lk_".to_string(), vec![]);
        let issued = AccountEvent::ApiKeyIssued { key_id: ApiKeyId::new(), key_hash, prefix, scopes, at: now };
        log.apply(&f.account(), &issued);
        log.apply(&f.account(), &AccountEvent::CommerceConnected { connection: f.connection.clone(), at: now });
        let (email_digest, password_hash) = (f.email_digest.clone(), format!("$argon2id${round}"));
        log.apply(
            &f.account(),
            &AccountEvent::DashboardLoginSet { email_digest, password_hash: Some(password_hash), at: now },
        );
    }
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }
    let misses = misses.lock().unwrap();
    let lookups = lookups.load(Ordering::Relaxed);
    assert!(lookups > 0, "the readers ran");
    eprintln!("{lookups} lookups during 18000 events, {} found an entry missing", misses.len());
    assert!(misses.is_empty(), "{} of {lookups} lookups found an entry missing: {:?}", misses.len(), dedup(&misses));
    assert_eq!(
        model.app(f.app_id).unwrap().lists.hwid_blacklist.entries(),
        ["hw-2999".to_string()],
        "the writes landed"
    );
    assert_eq!(model.connections_of(f.account_id).len(), 1, "a re-key replaces the connection");
}

fn dedup(names: &[&'static str]) -> Vec<&'static str> {
    let mut names = names.to_vec();
    names.sort_unstable();
    names.dedup();
    names
}

fn clone_fixture(f: &Fixture) -> Fixture {
    Fixture {
        account_id: f.account_id,
        app_id: f.app_id,
        key: f.key.clone(),
        key_hash: f.key_hash.clone(),
        connection: f.connection.clone(),
        email_digest: f.email_digest.clone(),
    }
}

#[test]
fn a_deleted_license_never_comes_back_from_an_append_recorded_late() {
    let model = Arc::new(HotModel::default());
    let mut log = Log::new(model.clone());
    let f = populated(&mut log, 10);
    let now = Utc::now();

    // The hot path decides a binding and a bill and commits them at versions 2 and 3 ...
    let (license, version) = model.license_versioned(&f.key).unwrap();
    let appended = vec![
        LicenseEvent::HwidBound { hwid: "hw".into(), at: now },
        LicenseEvent::ValidationBilled {
            account_id: f.account_id,
            credits: 1,
            nonce: Some("n".into()),
            hwid: None,
            at: now,
        },
    ];
    let LicenseState::Live(after) = appended.iter().fold(LicenseState::Live(license), LicenseState::evolve) else {
        panic!("live")
    };
    // ... but before it records them, the tail applies them and a delete committed right after.
    for event in &appended {
        log.apply(&f.license(), event);
    }
    log.apply(&f.license(), &LicenseEvent::LicenseDeleted { at: now });
    assert!(model.license(&f.key).is_none(), "the tail deleted it");

    let hold = model.hold_bills(&after, &appended, now).unwrap();
    model.record_append(after, version + 2, &appended, hold);
    assert_eq!(model.license(&f.key), None, "a late record brought a deleted license back");
    assert_eq!(model.account(f.account_id).unwrap().balance, 9, "the bill counted once");
}

/// One validation the way `hotpath::commit` makes it: decide, hold the bill, append (at the
/// next version of the license's stream), record. The tail is paused: nothing here calls
/// `HotModel::apply`.
fn validate_ahead(model: &HotModel, key: &LicenseKey, nonce: &str) -> bool {
    let now = Utc::now();
    let (license, version) = model.license_versioned(key).unwrap();
    let bill = LicenseEvent::ValidationBilled {
        account_id: license.account_id,
        credits: 1,
        nonce: Some(nonce.into()),
        hwid: None,
        at: now,
    };
    let Ok(hold) = model.hold_bills(&license, std::slice::from_ref(&bill), now) else { return false };
    std::thread::yield_now();
    let LicenseState::Live(after) = LicenseState::Live(license).evolve(&bill) else { panic!("live") };
    model.record_append(after, version + 1, &[bill], hold);
    true
}

#[test]
fn concurrent_billed_validations_cannot_overdraw_while_the_tail_is_paused() {
    let model = Arc::new(HotModel::default());
    let mut log = Log::new(model.clone());
    let f = populated(&mut log, 5);
    // One license per validation, as on the wire: the hot path's per-license lock serialises
    // nothing between them.
    let keys: Vec<LicenseKey> = (0..20u8)
        .map(|i| {
            let key = LicenseKey::from_random([i; 16]);
            let created = LicenseEvent::LicenseCreated {
                key: key.clone(),
                app_id: f.app_id,
                account_id: f.account_id,
                expires_at: None,
                max_hwid_slots: 1,
                label: None,
                created_at: Utc::now(),
            };
            log.apply(&StreamCategory::License.stream_id(&key), &created);
            key
        })
        .collect();
    let start = std::sync::Barrier::new(keys.len());
    let succeeded = std::thread::scope(|scope| {
        let threads: Vec<_> = keys
            .iter()
            .map(|key| {
                let (model, start) = (&model, &start);
                scope.spawn(move || {
                    start.wait();
                    validate_ahead(model, key, key.as_str())
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).filter(|ok| *ok).count()
    });
    assert_eq!(succeeded, 5, "exactly the balance is spent");
    assert_eq!(model.account(f.account_id).unwrap().balance, 0);
    assert_eq!(model.check_credits(f.account_id, f.app_id, 1, Utc::now()), Err(CreditRefusal::NoCredits));
    assert_eq!(model.burned(f.app_id, Utc::now(), 60), 5, "the burn shows the bills at once");
}

#[test]
fn a_bill_recorded_ahead_and_applied_by_the_tail_counts_once_in_either_order() {
    for tail_first in [false, true] {
        let model = Arc::new(HotModel::default());
        let mut log = Log::new(model.clone());
        let f = populated(&mut log, 10);
        let now = Utc::now();
        let (license, version) = model.license_versioned(&f.key).unwrap();
        let bill = LicenseEvent::ValidationBilled {
            account_id: f.account_id,
            credits: 3,
            nonce: Some("n".into()),
            hwid: None,
            at: now,
        };
        let hold = model.hold_bills(&license, std::slice::from_ref(&bill), now).unwrap();
        assert_eq!(model.check_credits(f.account_id, f.app_id, 8, now), Err(CreditRefusal::NoCredits), "held");
        let LicenseState::Live(after) = LicenseState::Live(license).evolve(&bill) else { panic!("live") };
        if tail_first {
            log.apply(&f.license(), &bill);
            model.record_append(after, version + 1, std::slice::from_ref(&bill), hold);
        } else {
            model.record_append(after, version + 1, std::slice::from_ref(&bill), hold);
            log.apply(&f.license(), &bill);
        }
        assert_eq!(model.account(f.account_id).unwrap().balance, 7, "tail first: {tail_first}");
        assert_eq!(model.burned(f.app_id, now, 60), 3, "tail first: {tail_first}");
        assert_eq!(model.check_credits(f.account_id, f.app_id, 7, now), Ok(()), "the hold is given back");
    }
}

#[test]
fn a_failed_append_gives_its_hold_back() {
    let model = Arc::new(HotModel::default());
    let mut log = Log::new(model.clone());
    let f = populated(&mut log, 2);
    let now = Utc::now();
    let hold = model.hold_credits(f.account_id, f.app_id, 2, now).unwrap();
    assert_eq!(model.hold_credits(f.account_id, f.app_id, 1, now).unwrap_err(), CreditRefusal::NoCredits);
    drop(hold);
    assert!(model.hold_credits(f.account_id, f.app_id, 2, now).is_ok());
}

/// Records what it is told, and whether the model already showed the license's revocation.
#[derive(Default)]
struct Recorder {
    seen: std::sync::Mutex<Vec<(i64, String)>>,
    revoked_visible: AtomicBool,
}

impl licensd_projections::AppliedListener for Recorder {
    fn applied(&self, model: &HotModel, applied: &licensd_projections::Applied<'_>) {
        self.seen.lock().unwrap().push((applied.position.seq, applied.stream_id.to_string()));
        if let licensd_domain::AnyEvent::License(LicenseEvent::LicenseRevoked { .. }) = applied.event {
            let key = LicenseKey::parse(applied.id).expect("license id");
            let revoked =
                model.license(&key).is_some_and(|l| l.status == licensd_domain::license::LicenseStatus::Revoked);
            self.revoked_visible.store(revoked, Ordering::SeqCst);
        }
    }
}

#[test]
fn the_listener_hears_each_event_once_in_log_order_after_the_model_shows_it() {
    let model = Arc::new(HotModel::default());
    let recorder = Arc::new(Recorder::default());
    assert!(model.set_listener(recorder.clone()));
    assert!(!model.set_listener(Arc::new(Recorder::default())), "a second listener is refused");
    let mut log = Log::new(model.clone());
    let f = populated(&mut log, 10);
    log.apply(&f.license(), &LicenseEvent::LicenseRevoked { at: Utc::now() });
    // A second reader re-applying the same positions (the tail and an on-demand catch-up) is not heard again.
    let replayed = RecordedEvent {
        position: Position { tx: 0, seq: 3 },
        event_id: uuid::Uuid::now_v7(),
        stream_id: f.account(),
        version: 3,
        event_type: "CreditsGranted".into(),
        schema_version: 1,
        payload: licensd_store::raw_json(
            &serde_json::json!({"type": "CreditsGranted", "amount": 1, "reason": "t", "at": Utc::now()}),
        ),
        metadata: licensd_store::raw_json(&serde_json::json!({})),
        recorded_at: Utc::now(),
    };
    model.apply(&replayed).expect("applies");
    let seen = recorder.seen.lock().unwrap().clone();
    let positions: Vec<i64> = seen.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(positions, (1..=log.seq).collect::<Vec<_>>(), "each event once, in order");
    assert_eq!(seen.last().map(|(_, s)| s.clone()), Some(f.license()));
    assert!(recorder.revoked_visible.load(Ordering::SeqCst), "the model shows the event before the listener hears it");
}

/// The model's WebSocket key digest, as the server installs it (keyed by the master key).
fn install_digest(model: &HotModel) -> impl Fn(&str) -> String + Clone {
    let master = licensd_commands::MasterKey::parse(&"42".repeat(32)).unwrap();
    let digest = move |key: &str| hex::encode(master.keyed_digest("websocket-api-key", key));
    assert!(model.set_websocket_key_digest(Arc::new(digest.clone())));
    digest
}

/// The `n`-th key of a test: `BA` + 19 of `[0-9A-Z]`.
fn ws_key(n: u32) -> String {
    format!("BA{n:019}")
}

fn set_ws_key(log: &mut Log, f: &Fixture, digest: &impl Fn(&str) -> String, key: &str) {
    let websocket_key = WebsocketKey { sealed: Sealed(format!("sealed {key}")), digest: digest(key) };
    log.apply(&f.app(), &AppEvent::WebsocketKeySet { websocket_key, at: Utc::now() });
}

#[test]
fn an_app_is_found_by_its_current_websocket_key_only() {
    let model = Arc::new(HotModel::default());
    let mut log = Log::new(model.clone());
    let f = populated(&mut log, 10);
    set_ws_key(&mut log, &f, &|k: &str| format!("unkeyed {k}"), &ws_key(1));
    assert_eq!(model.app_by_websocket_key(&ws_key(1)), None, "no digest installed: nothing is found");

    let model = Arc::new(HotModel::default());
    let digest = install_digest(&model);
    assert!(!model.set_websocket_key_digest(Arc::new(digest.clone())), "installed once");
    let mut log = Log::new(model.clone());
    let f = populated(&mut log, 10);
    assert_eq!(model.app_by_websocket_key(&ws_key(1)), None, "an app created before keys has none");
    set_ws_key(&mut log, &f, &digest, &ws_key(1));
    assert_eq!(model.app_by_websocket_key(&ws_key(1)).map(|a| a.app_id), Some(f.app_id));
    for wrong in [ws_key(2), "BA000000000000000000Z".into(), "XX0000000000000000001".into(), ws_key(1).to_lowercase()] {
        assert_eq!(wrong.len(), 21);
        assert_eq!(model.app_by_websocket_key(&wrong), None, "{wrong}");
    }
    for malformed in ["", "BA", &ws_key(1)[..20], &format!("{}0", ws_key(1))] {
        assert_eq!(model.app_by_websocket_key(malformed), None, "{malformed:?}");
    }

    set_ws_key(&mut log, &f, &digest, &ws_key(2));
    assert_eq!(model.app_by_websocket_key(&ws_key(1)), None, "the rotated-out key stops at once");
    assert_eq!(model.app_by_websocket_key(&ws_key(2)).map(|a| a.app_id), Some(f.app_id));
    log.apply(&f.app(), &AppEvent::AppDisabled { at: Utc::now() });
    assert!(model.app_by_websocket_key(&ws_key(2)).is_some_and(|a| a.disabled), "the caller decides on disabled");
}

#[test]
fn rotations_while_readers_look_up_never_lose_the_current_key() {
    let model = Arc::new(HotModel::default());
    let digest = install_digest(&model);
    let mut log = Log::new(model.clone());
    let f = populated(&mut log, 10);
    set_ws_key(&mut log, &f, &digest, &ws_key(0));
    // The last key whose rotation has been applied completely; the next one may be in progress.
    let applied = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (checked, lost) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (model, applied, done) = (model.clone(), applied.clone(), done.clone());
            let (checked, lost, app_id) = (checked.clone(), lost.clone(), f.app_id);
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let current = applied.load(Ordering::SeqCst) as u32;
                    let found = |n: u32| model.app_by_websocket_key(&ws_key(n)).is_some_and(|a| a.app_id == app_id);
                    // While only the next rotation can be under way, the current key or the
                    // next one resolves; with none under way, the current one does.
                    let either = found(current) || found(current + 1);
                    if applied.load(Ordering::SeqCst) as u32 == current {
                        checked.fetch_add(1, Ordering::Relaxed);
                        if !either {
                            lost.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for n in 1..=3000 {
        set_ws_key(&mut log, &f, &digest, &ws_key(n));
        applied.store(u64::from(n), Ordering::SeqCst);
    }
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }
    let (checked, lost) = (checked.load(Ordering::Relaxed), lost.load(Ordering::Relaxed));
    assert!(checked > 0, "the readers ran");
    assert_eq!(lost, 0, "{lost} of {checked} lookups found no app for the current key");
    assert_eq!(model.app_by_websocket_key(&ws_key(2999)), None);
    assert_eq!(model.app_by_websocket_key(&ws_key(3000)).map(|a| a.app_id), Some(f.app_id));
}
