//! The auth hot path's read model: everything `/auth/*` needs, in memory, no SQL on a request.
//! State changes reuse the domain's own `evolve`, so the read model cannot drift from the rules.

use crate::digest::ModelDigest;
use crate::nonces::{Nonces, DEFAULT_NONCE_CAP};
use crate::ProjectionError;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use licensd_domain::account::AccountEvent;
use licensd_domain::app::{App, AppState};
use licensd_domain::commerce::Connection;
use licensd_domain::license::{License, LicenseEvent, LicenseState};
use licensd_domain::{AccountId, Aggregate, AnyEvent, ApiKeyId, AppId, LicenseKey, StreamCategory};
use licensd_store::{LogEvent, Position, RecordedEvent};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountView {
    pub exists: bool,
    pub suspended: bool,
    /// Granted minus debited minus billed, counting the hot path's own bills at once.
    pub balance: i64,
    pub low_balance_threshold: Option<u64>,
    pub api_keys: Vec<ApiKeyId>,
    /// Times dashboard credentials were set (0: never); dashboard sessions carry it.
    pub login_generation: u32,
}

/// A merchant's dashboard credentials, found by the keyed digest of their email.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardLogin {
    pub account_id: AccountId,
    /// Only from events written before verifiers moved to the sealed table (see `DashboardLoginSet`).
    pub password_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyView {
    pub key_id: ApiKeyId,
    pub account_id: AccountId,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Remembered nonces outlive a restart by this much at least (they are rebuilt from the log).
pub const DEFAULT_NONCE_WINDOW: Duration = Duration::from_secs(3600);

/// A license with its stream version, boxed: the map's table is sized in powers of two, so
/// licenses stored inline would pay for its empty slots too (see BENCHMARKS.md, memory).
pub(crate) type LicenseEntry = Box<(License, u64)>;

/// What [`HotModel::apply_after`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chained {
    Applied,
    /// At or before the model's position: applied before (a duplicate).
    AlreadyApplied,
    /// The event before it is not applied yet: it must wait, or the gap be read from the log.
    NotNext,
}

pub struct HotModel {
    /// Each license with its stream version, so the hot path appends with `Exact(version)`.
    pub(crate) licenses: DashMap<LicenseKey, LicenseEntry>,
    /// Shared: a request holds its app without copying it (an event replaces the `Arc`).
    pub(crate) apps: DashMap<AppId, Arc<App>>,
    pub(crate) accounts: DashMap<AccountId, AccountView>,
    /// By SHA-256 (hex) of the full key.
    pub(crate) api_keys: DashMap<String, ApiKeyView>,
    /// Nonces of successful validations in the replay window (fixed-size keys, capped).
    pub(crate) nonces: Nonces,
    /// Credits each app burned, per minute, for the rolling burn caps (last 24 h).
    pub(crate) burn: DashMap<AppId, VecDeque<(i64, u64)>>,
    /// Commerce connections by id (the id is in the provider's webhook URL).
    pub(crate) connections: DashMap<uuid::Uuid, (AccountId, Connection)>,
    /// Dashboard logins by email digest.
    pub(crate) logins: DashMap<String, DashboardLogin>,
    /// Credits of bills decided but not yet recorded, by account and by app (see [`CreditHold`]).
    pub(crate) held_by_account: DashMap<AccountId, u64>,
    pub(crate) held_by_app: DashMap<AppId, u64>,
    pub(crate) position: watch::Sender<Position>,
    /// One event is applied at a time, so two readers of the log never apply one twice.
    pub(crate) applying: std::sync::Mutex<()>,
    /// Shared by the hot path's own appends ([`Self::record_append`]), taken alone while a
    /// snapshot is captured: a license and the balance its bills were counted in are then
    /// captured together (see `snapshot.rs`).
    pub(crate) capturing: std::sync::RwLock<()>,
    /// The last event applied, so a snapshot can prove it belongs to the log it is loaded with.
    pub(crate) last_applied: std::sync::Mutex<Option<LastApplied>>,
    /// Events applied since the model was made (snapshots are written every so many).
    pub(crate) applied_events: std::sync::atomic::AtomicU64,
    /// Told about each event once it is applied (live sessions push from here, not by polling).
    pub(crate) listener: std::sync::OnceLock<Arc<dyn AppliedListener>>,
    /// Apps by the keyed digest of their current WebSocket API key.
    pub(crate) websocket_keys: DashMap<String, AppId>,
    /// Computes that digest from a presented key (it needs the deployment's key, which the
    /// model does not hold); until one is installed, no key finds an app.
    pub(crate) websocket_key_digest: std::sync::OnceLock<KeyDigest>,
    /// End users of apps (see `users.rs`).
    pub(crate) users: crate::users::Users,
    /// Protected files of apps (see `files.rs`).
    pub(crate) files: crate::files::Files,
}

/// Which event of the log the model applied last: a snapshot names it, and is used only with a
/// log holding that event at that place (not with another database, or an older backup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastApplied {
    pub event_id: uuid::Uuid,
    pub stream_id: String,
    pub version: u64,
}

/// Turns a presented WebSocket API key into the keyed digest its app is found by (installed
/// from the command side, which holds the deployment's key: see `Commands::websocket_key_digest`).
pub type KeyDigest = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// One event of the log, just applied to the model: what a listener is told.
#[derive(Debug)]
pub struct Applied<'a> {
    pub position: Position,
    /// `license-<KEY>`, `app-<uuid>`, ...
    pub stream_id: &'a str,
    /// The id part of `stream_id`.
    pub id: &'a str,
    pub event: &'a AnyEvent,
    /// When the event committed: push latency is measured from here.
    pub recorded_at: chrono::DateTime<chrono::Utc>,
}

/// Receives every event the model applies, in log order, exactly once per model, after the
/// model shows it. Called while the model's apply lock is held: implementations must only
/// hand the event on (enqueue, notify), never block or call back into a slow path.
pub trait AppliedListener: Send + Sync {
    fn applied(&self, model: &HotModel, applied: &Applied<'_>);
}

impl std::fmt::Debug for HotModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotModel").field("licenses", &self.licenses.len()).field("position", &self.position()).finish()
    }
}

/// How many license streams the log holds, for [`HotModel::reserve_licenses`] before a replay
/// from the start: each stream's first event, counted on the (stream, version) index without
/// reading the events. SQLite only (its text order is bytewise, so the range holds exactly the
/// license streams); on Postgres a range on the index follows the database's collation, which
/// need not be bytewise, so there is no count (`None`) and the map grows as before.
pub async fn license_streams(store: &licensd_store::Store) -> Result<Option<usize>, ProjectionError> {
    if store.backend() != "sqlite" {
        return Ok(None);
    }
    let sql = "SELECT CAST(COUNT(*) AS TEXT) FROM events \
               WHERE stream_id >= 'license-' AND stream_id < 'license.' AND version = 1";
    let count = store.query_text(sql, &[]).await?;
    Ok(count.into_iter().flatten().next().and_then(|n| n.parse().ok()))
}

impl Default for HotModel {
    fn default() -> Self {
        Self::with_nonce_window(DEFAULT_NONCE_WINDOW)
    }
}

const MINUTES_PER_DAY: i64 = 24 * 60;

/// Why credits could not be held for a bill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditRefusal {
    NoCredits,
    BurnCapReached,
}

/// Credits set aside for a bill between deciding it and recording its append; see
/// [`HotModel::hold_credits`]. Dropping it gives the credits back.
#[must_use = "a hold is given back when dropped"]
pub struct CreditHold<'a> {
    model: &'a HotModel,
    account_id: AccountId,
    app_id: AppId,
    credits: u64,
}

impl std::fmt::Debug for CreditHold<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreditHold").field("account_id", &self.account_id).field("credits", &self.credits).finish()
    }
}

impl Drop for CreditHold<'_> {
    fn drop(&mut self) {
        self.model.release(self.account_id, self.app_id, self.credits);
    }
}

/// The account, credits and time of a billing event.
fn billed(event: &LicenseEvent) -> Option<(AccountId, u64, chrono::DateTime<chrono::Utc>)> {
    match event {
        LicenseEvent::ValidationBilled { account_id, credits, at, .. }
        | LicenseEvent::HeartbeatBilled { account_id, credits, at, .. }
        | LicenseEvent::OfflineActivated { account_id, credits, at, .. }
        | LicenseEvent::OfflineFileMinted { account_id, credits, at, .. } => {
            Some((*account_id, u64::from(*credits), *at))
        }
        _ => None,
    }
}

/// An allocation-free stand-in, so a license can be moved out of its map slot for `evolve`
/// while the slot stays locked; it is overwritten before the lock is released.
fn vacated(license: &License) -> License {
    License {
        key: license.key.clone(),
        app_id: license.app_id,
        account_id: license.account_id,
        status: license.status,
        expires_at: None,
        max_hwid_slots: 0,
        hwids: Vec::new(),
        label: None,
        variables: Default::default(),
        created_at: license.created_at,
        extras: Default::default(),
    }
}

impl HotModel {
    pub fn with_nonce_window(nonce_window: Duration) -> Self {
        Self::with_nonce_limits(nonce_window, DEFAULT_NONCE_CAP)
    }

    /// A model remembering nonces for `nonce_window`, at most `nonce_cap` of them (see [`Nonces`]).
    pub fn with_nonce_limits(nonce_window: Duration, nonce_cap: usize) -> Self {
        Self {
            licenses: DashMap::new(),
            apps: DashMap::new(),
            accounts: DashMap::new(),
            api_keys: DashMap::new(),
            nonces: Nonces::new(nonce_window, nonce_cap),
            burn: DashMap::new(),
            connections: DashMap::new(),
            logins: DashMap::new(),
            held_by_account: DashMap::new(),
            held_by_app: DashMap::new(),
            position: watch::channel(Position::START).0,
            applying: std::sync::Mutex::new(()),
            capturing: std::sync::RwLock::new(()),
            last_applied: std::sync::Mutex::new(None),
            applied_events: std::sync::atomic::AtomicU64::new(0),
            listener: std::sync::OnceLock::new(),
            websocket_keys: DashMap::new(),
            websocket_key_digest: std::sync::OnceLock::new(),
            users: Default::default(),
            files: Default::default(),
        }
    }

    /// Sizes the license map for `licenses` before a replay or a snapshot fills it, so its
    /// table is allocated once instead of doubling (and faulting in fresh pages) about twenty
    /// times on the way to a million licenses. Only on an empty model (the map is replaced).
    pub fn reserve_licenses(&mut self, licenses: usize) {
        if self.licenses.is_empty() {
            self.licenses = DashMap::with_capacity(licenses);
        }
    }

    /// Installs how presented WebSocket API keys are digested; a second call is refused and
    /// returns false.
    pub fn set_websocket_key_digest(&self, digest: KeyDigest) -> bool {
        self.websocket_key_digest.set(digest).is_ok()
    }

    /// The app whose current WebSocket API key is `presented`: found by the key's digest, then
    /// confirmed against the app's own digest in constant time, so a rotated-out key (whose
    /// index entry may still be on its way out) never matches. Malformed keys find nothing.
    pub fn app_by_websocket_key(&self, presented: &str) -> Option<Arc<App>> {
        if !licensd_domain::app::is_websocket_key_shaped(presented) {
            return None;
        }
        let digest = (self.websocket_key_digest.get()?)(presented);
        let app_id = *self.websocket_keys.get(&digest)?;
        let app = self.app(app_id)?;
        let current = app.websocket_key.as_ref()?;
        let same = current.digest.len() == digest.len()
            && bool::from(subtle::ConstantTimeEq::ct_eq(current.digest.as_bytes(), digest.as_bytes()));
        same.then_some(app)
    }

    /// Installs the one listener (live sessions); a second call is refused and returns false.
    pub fn set_listener(&self, listener: Arc<dyn AppliedListener>) -> bool {
        self.listener.set(listener).is_ok()
    }

    pub fn license(&self, key: &LicenseKey) -> Option<License> {
        self.licenses.get(key).map(|l| l.0.clone())
    }

    /// Runs `f` on the license and its stream version, borrowed under the lock of its entry
    /// (nothing is copied). `f` must not write to the model's licenses (that would wait for the
    /// lock it runs under); reading other parts of the model is fine.
    pub fn with_license<R>(&self, key: &LicenseKey, f: impl FnOnce(&License, u64) -> R) -> Option<R> {
        self.licenses.get(key).map(|entry| {
            let (license, version) = &**entry;
            f(license, *version)
        })
    }

    /// The license and the version of its stream.
    pub fn license_versioned(&self, key: &LicenseKey) -> Option<(License, u64)> {
        self.licenses.get(key).map(|entry| {
            let (license, version) = &**entry;
            (license.clone(), *version)
        })
    }

    /// Whether a successful validation of this app already used `nonce` in the replay window.
    pub fn nonce_seen(&self, app_id: AppId, nonce: &str) -> bool {
        self.nonces.contains(app_id, nonce)
    }

    /// Whether the nonce cap is reached: validations with a new nonce must then be refused.
    pub fn nonces_full(&self) -> bool {
        self.nonces.full()
    }

    /// How many nonces are remembered.
    pub fn nonce_count(&self) -> usize {
        self.nonces.len()
    }

    /// Credits the app burned in the last `minutes` minutes up to `now`.
    pub fn burned(&self, app_id: AppId, now: chrono::DateTime<chrono::Utc>, minutes: i64) -> u64 {
        let since = now.timestamp() / 60 - minutes;
        self.burn.get(&app_id).map_or(0, |b| b.iter().filter(|(m, _)| *m > since).map(|(_, c)| c).sum())
    }

    /// The app, shared with the model (a later event about it replaces the model's `Arc`, so
    /// this one stays as it was read).
    pub fn app(&self, app_id: AppId) -> Option<Arc<App>> {
        self.apps.get(&app_id).map(|a| Arc::clone(&a))
    }

    /// The account's apps (a scan: apps are few next to licenses).
    pub fn apps_of(&self, account_id: AccountId) -> Vec<App> {
        self.apps.iter().filter(|a| a.account_id == account_id).map(|a| App::clone(&a)).collect()
    }

    pub fn account(&self, account_id: AccountId) -> Option<AccountView> {
        self.accounts.get(&account_id).filter(|a| a.exists).map(|a| a.clone())
    }

    /// Every existing account, ordered by id (for the operator's `account list`).
    pub fn accounts(&self) -> Vec<(AccountId, AccountView)> {
        let mut accounts: Vec<_> =
            self.accounts.iter().filter(|a| a.exists).map(|a| (*a.key(), a.value().clone())).collect();
        accounts.sort_by_key(|(id, _)| *id);
        accounts
    }

    /// Whether the account is suspended (`None`: no such account), without copying its view.
    pub fn account_suspended(&self, account_id: AccountId) -> Option<bool> {
        self.accounts.get(&account_id).filter(|a| a.exists).map(|a| a.suspended)
    }

    pub fn api_key(&self, key_hash: &str) -> Option<ApiKeyView> {
        self.api_keys.get(key_hash).map(|k| k.clone())
    }

    /// The account's live API keys, oldest first.
    /// A commerce connection and the account that owns it.
    pub fn connection(&self, connection_id: uuid::Uuid) -> Option<(AccountId, Connection)> {
        self.connections.get(&connection_id).map(|c| c.clone())
    }

    pub fn connections_of(&self, account_id: AccountId) -> Vec<Connection> {
        let mut found: Vec<_> =
            self.connections.iter().filter(|c| c.0 == account_id).map(|c| c.value().1.clone()).collect();
        found.sort_by_key(|c| c.provider.as_str());
        found
    }

    pub fn dashboard_login(&self, email_digest: &str) -> Option<DashboardLogin> {
        self.logins.get(email_digest).map(|l| l.clone())
    }

    pub fn api_keys_of(&self, account_id: AccountId) -> Vec<ApiKeyView> {
        let mut keys: Vec<_> = self.api_keys.iter().filter(|k| k.account_id == account_id).map(|k| k.clone()).collect();
        keys.sort_by_key(|k| (k.created_at, k.key_id));
        keys
    }

    pub fn license_count(&self) -> usize {
        self.licenses.len()
    }

    pub fn app_count(&self) -> usize {
        self.apps.len()
    }

    /// Events applied since the model was made (a restored snapshot's not counted).
    pub fn applied_events(&self) -> u64 {
        self.applied_events.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn position(&self) -> Position {
        *self.position.borrow()
    }

    /// Waits until every event up to `position` is applied (read-your-writes after a command).
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> Result<(), ProjectionError> {
        let mut seen = self.position.subscribe();
        let reached = tokio::time::timeout(timeout, seen.wait_for(|p| *p >= position)).await.is_ok_and(|r| r.is_ok());
        if reached {
            Ok(())
        } else {
            Err(ProjectionError::Timeout(position))
        }
    }

    /// Applies one event of the log, read in log order. An event at or before the model's
    /// position was applied already (the background tail and an on-demand catch-up may read
    /// the same events) and changes nothing.
    pub fn apply(&self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let decoded = AnyEvent::decode(&event.stream_id, &event.event_type, event.schema_version, &event.payload)
            .map_err(|source| ProjectionError::Decode { position: event.position, source })?;
        self.apply_decoded([(event.as_log_event(), decoded.as_ref())]);
        Ok(())
    }

    /// Applies events of the log already decoded (`None`: a type this version does not know),
    /// in log order, as [`Self::apply`] does one by one; the apply lock is taken once for all
    /// of them, so a reader that decoded a page elsewhere applies it without paying per event.
    pub fn apply_decoded<'a>(&self, events: impl IntoIterator<Item = (LogEvent<'a>, Option<&'a AnyEvent>)>) {
        let _applying = self.applying.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut last: Option<LogEvent<'a>> = None;
        let mut applied = 0;
        // Only this thread moves the position while the apply lock is held.
        let mut at = self.position();
        for (event, decoded) in events {
            if event.position <= at {
                continue;
            }
            self.apply_one(&event, decoded);
            at = event.position;
            // Moved per event while anyone may look mid-page (a `wait_for` waiting, a listener),
            // so a waiter never waits for the rest of a page; otherwise once per page (a replay
            // with nobody watching skipped a lock and a wake-up per event). A waiter arriving
            // after this check reads the position, waits, and is woken at the page's end.
            if self.position.receiver_count() > 0 || self.listener.get().is_some() {
                self.advance(at);
            }
            last = Some(event);
            applied += 1;
        }
        if let Some(last) = last {
            self.advance(at);
            // Read only under the apply lock (by snapshots), so noting the page's last is enough.
            self.remember_last(&last);
            self.applied_events.fetch_add(applied, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Applies one event only if the model's position is `prev`, the event just before it in log
    /// order (the Kafka relay chains its messages so). Checked under the apply lock, so the
    /// Postgres tail applying at the same time can neither make this skip an event nor repeat one.
    pub fn apply_after(&self, prev: Position, event: &RecordedEvent, decoded: Option<&AnyEvent>) -> Chained {
        let _applying = self.applying.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = self.position();
        if event.position <= at {
            return Chained::AlreadyApplied;
        }
        if at != prev {
            return Chained::NotNext;
        }
        let event = event.as_log_event();
        self.apply_one(&event, decoded);
        self.advance(event.position);
        self.remember_last(&event);
        self.applied_events.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Chained::Applied
    }

    /// One event after the model's position; the caller holds the apply lock and moves the
    /// position after it.
    fn apply_one(&self, event: &LogEvent<'_>, decoded: Option<&AnyEvent>) {
        let id = StreamCategory::parse(event.stream_id).map(|(_, id)| id).unwrap_or_default();
        if decoded.is_none() {
            // Written by a later version: skipped (and counted) rather than stopping the model.
            crate::status::skipped(crate::runner::HOT, 1);
        }
        match decoded {
            Some(AnyEvent::License(e)) => {
                // Only links, unlinks and deletions concern the user index; every other license
                // event (a validation's bill among them) pays nothing for it.
                let concerns_users = matches!(
                    e,
                    LicenseEvent::LicenseLinkedToUser { .. }
                        | LicenseEvent::LicenseUnlinkedFromUser { .. }
                        | LicenseEvent::LicenseDeleted { .. }
                );
                let key = concerns_users.then(|| LicenseKey::parse(id).ok()).flatten();
                // A deletion unlinks the user the license was linked to: read before it goes,
                // borrowed (not a copy of the license).
                let holder = key.as_ref().and_then(|k| self.with_license(k, |l, _| l.extras.linked_user)).flatten();
                self.apply_license(id, event.version, e);
                if let Some(key) = key {
                    self.users.apply_license(&key, holder, e);
                }
            }
            Some(AnyEvent::App(e)) => self.apply_app(id, e),
            Some(AnyEvent::Account(e)) => self.apply_account(id, e),
            Some(AnyEvent::AppUser(e)) => self.users.apply_user(id, e),
            Some(AnyEvent::File(e)) => self.files.apply(e),
            Some(AnyEvent::Commerce(_) | AnyEvent::EmailReservation(_) | AnyEvent::AppUserLogin(_)) | None => {}
        }
        if let (Some(listener), Some(decoded)) = (self.listener.get(), decoded) {
            let applied = Applied {
                position: event.position,
                stream_id: event.stream_id,
                id,
                event: decoded,
                recorded_at: event.recorded_at,
            };
            listener.applied(self, &applied);
        }
    }

    /// Moves the position forward to `to` (never back), waking whoever waits for it.
    fn advance(&self, to: Position) {
        self.position.send_if_modified(|p| {
            let advanced = to > *p;
            if advanced {
                *p = to;
            }
            advanced
        });
    }

    /// Notes the event as the last applied, reusing the stream id's buffer (no allocation per event).
    fn remember_last(&self, event: &LogEvent<'_>) {
        let mut last = self.last_applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match last.as_mut() {
            Some(last) => {
                last.event_id = event.event_id;
                last.stream_id.clear();
                last.stream_id.push_str(event.stream_id);
                last.version = event.version;
            }
            None => {
                let (event_id, stream_id, version) = (event.event_id, event.stream_id.to_string(), event.version);
                *last = Some(LastApplied { event_id, stream_id, version });
            }
        }
    }

    fn apply_license(&self, id: &str, version: u64, event: &LicenseEvent) {
        let Ok(key) = LicenseKey::parse(id) else { return };
        // Under the entry's lock, so a concurrent `record_append` or reader never sees the
        // license missing or moving backwards, and a bill is counted by exactly one of them.
        match self.licenses.entry(key) {
            // The entry shows this event already: the hot path recorded its own append at once
            // and counted its bills then.
            Entry::Occupied(slot) if slot.get().1 >= version => self.remember_nonce(slot.get().0.app_id, event),
            Entry::Occupied(mut slot) => {
                let app_id = slot.get().0.app_id;
                self.count_bill(Some(app_id), event, None);
                self.remember_nonce(app_id, event);
                let entry = slot.get_mut();
                let stand_in = vacated(&entry.0);
                let current = std::mem::replace(&mut entry.0, stand_in);
                match LicenseState::Live(current).evolve(event) {
                    LicenseState::Live(license) => **entry = (license, version),
                    _ => drop(slot.remove()),
                }
            }
            Entry::Vacant(slot) => {
                self.count_bill(None, event, None);
                if let LicenseState::Live(license) = LicenseState::Missing.evolve(event) {
                    slot.insert(Box::new((license, version)));
                }
            }
        }
    }

    /// Debits the balance (and the app's burn) by the credits `event` bills, if it is a bill,
    /// and gives back as much of `hold` under the same lock of the account, so those credits
    /// are never counted twice (spent and held) by a concurrent `hold_credits`.
    fn count_bill(&self, app_id: Option<AppId>, event: &LicenseEvent, hold: Option<&mut CreditHold<'_>>) {
        let Some((account_id, credits, at)) = billed(event) else { return };
        let mut account = self.accounts.entry(account_id).or_default();
        account.balance -= credits as i64;
        if let Some(app_id) = app_id {
            self.record_burn(app_id, at, credits);
        }
        if let Some(hold) = hold.filter(|h| h.account_id == account_id) {
            let released = credits.min(hold.credits);
            hold.credits -= released;
            self.release_locked(account_id, hold.app_id, released);
        }
        drop(account);
    }

    /// Whether the account can pay `credits` (its balance less what other requests hold) and
    /// the app stays under its burn caps (counting what its requests hold).
    pub fn check_credits(
        &self,
        account_id: AccountId,
        app_id: AppId,
        credits: u64,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), CreditRefusal> {
        let caps = self.apps.get(&app_id).map(|a| (a.settings.hourly_burn_cap, a.settings.daily_burn_cap));
        let balance = self.accounts.get(&account_id).filter(|a| a.exists).map_or(0, |a| a.balance);
        self.check_locked(account_id, app_id, balance, caps, credits, now)
    }

    /// The check of [`Self::check_credits`], for a caller that read the balance (and holds the
    /// account's lock when it is about to hold credits).
    fn check_locked(
        &self,
        account_id: AccountId,
        app_id: AppId,
        balance: i64,
        caps: Option<(Option<u64>, Option<u64>)>,
        credits: u64,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), CreditRefusal> {
        let held = self.held_by_account.get(&account_id).map_or(0, |h| *h);
        if balance - (held as i64) < credits as i64 {
            return Err(CreditRefusal::NoCredits);
        }
        let app_held = self.held_by_app.get(&app_id).map_or(0, |h| *h);
        let (hourly, daily) = caps.unwrap_or_default();
        for (cap, minutes) in [(hourly, 60), (daily, MINUTES_PER_DAY)] {
            if cap.is_some_and(|cap| self.burned(app_id, now, minutes) + app_held + credits > cap) {
                return Err(CreditRefusal::BurnCapReached);
            }
        }
        Ok(())
    }

    /// Holds `credits` of the account for a bill about to be appended, if [`Self::check_credits`]
    /// allows them. Checking and holding happen under the account's lock, so concurrent requests
    /// (even for different licenses) cannot together spend more than the balance or the caps
    /// while the tail lags. The hold is given back when dropped (a failed append), or when
    /// [`Self::record_append`] has counted its bills.
    pub fn hold_credits(
        &self,
        account_id: AccountId,
        app_id: AppId,
        credits: u64,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<CreditHold<'_>, CreditRefusal> {
        if credits > 0 {
            let caps = self.apps.get(&app_id).map(|a| (a.settings.hourly_burn_cap, a.settings.daily_burn_cap));
            let account = self.accounts.get_mut(&account_id).filter(|a| a.exists).ok_or(CreditRefusal::NoCredits)?;
            self.check_locked(account_id, app_id, account.balance, caps, credits, now)?;
            *self.held_by_account.entry(account_id).or_default() += credits;
            *self.held_by_app.entry(app_id).or_default() += credits;
        }
        Ok(CreditHold { model: self, account_id, app_id, credits })
    }

    /// Holds what `events` about `license` bill (see [`Self::hold_credits`]).
    pub fn hold_bills(
        &self,
        license: &License,
        events: &[LicenseEvent],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<CreditHold<'_>, CreditRefusal> {
        let credits = events.iter().filter_map(billed).map(|(_, credits, _)| credits).sum();
        self.hold_credits(license.account_id, license.app_id, credits, now)
    }

    fn release(&self, account_id: AccountId, app_id: AppId, credits: u64) {
        if credits > 0 {
            // Under the account's lock, like the check in `hold_credits`.
            let account = self.accounts.get_mut(&account_id);
            self.release_locked(account_id, app_id, credits);
            drop(account);
        }
    }

    /// Gives back held credits; the caller holds the account's lock.
    fn release_locked(&self, account_id: AccountId, app_id: AppId, credits: u64) {
        if let Some(mut held) = self.held_by_account.get_mut(&account_id) {
            *held = held.saturating_sub(credits);
        }
        if let Some(mut held) = self.held_by_app.get_mut(&app_id) {
            *held = held.saturating_sub(credits);
        }
    }

    /// Records an append the caller just committed (`appended`, ending at stream `version`) and
    /// its outcome `after`, before the tail reads it back from the log: the next decision about
    /// the license starts from it, and the balance and burn show its bills at once. The entry
    /// only moves forward, and only events it did not show yet are counted, so the tail (which
    /// skips what the entry shows) never counts a bill twice. A license the tail deleted
    /// meanwhile stays deleted. The hold is released as its bills are counted; what the tail
    /// counted first is released at the end.
    pub fn record_append(&self, after: License, version: u64, appended: &[LicenseEvent], mut hold: CreditHold<'_>) {
        let first = (version + 1).saturating_sub(appended.len() as u64);
        let _not_capturing = self.capturing.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Entry::Occupied(mut slot) = self.licenses.entry(after.key.clone()) {
            let shown = slot.get().1;
            if shown < version {
                let app_id = slot.get().0.app_id;
                for (event, event_version) in appended.iter().zip(first..) {
                    if event_version > shown {
                        self.count_bill(Some(app_id), event, Some(&mut hold));
                        self.remember_nonce(app_id, event);
                    }
                }
                **slot.get_mut() = (after, version);
            }
        }
        drop(hold);
    }

    /// Remembers a nonce used by a committed validation at once (the tail adds it again).
    pub fn record_nonce(&self, app_id: AppId, nonce: &str) {
        self.nonces.insert(app_id, nonce, chrono::Utc::now());
    }

    fn remember_nonce(&self, app_id: AppId, event: &LicenseEvent) {
        let LicenseEvent::ValidationBilled { nonce: Some(nonce), at, .. } = event else { return };
        // A nonce already out of the window is not kept: replaying an old log stays small.
        self.nonces.insert(app_id, nonce, *at);
    }

    fn record_burn(&self, app_id: AppId, at: chrono::DateTime<chrono::Utc>, credits: u64) {
        let minute = at.timestamp() / 60;
        let mut buckets = self.burn.entry(app_id).or_default();
        // Bills do not always come in minute order (this node's own are recorded ahead of the
        // log, other nodes' arrive in log order): each goes to its minute's bucket, kept sorted,
        // so the buckets are the same whatever the order, as a replay of the log makes them.
        match buckets.iter().rposition(|(m, _)| *m <= minute) {
            Some(i) if buckets[i].0 == minute => buckets[i].1 += credits,
            Some(i) => buckets.insert(i + 1, (minute, credits)),
            None => buckets.push_front((minute, credits)),
        }
        while buckets.front().is_some_and(|(m, _)| *m <= minute - MINUTES_PER_DAY) {
            buckets.pop_front();
        }
    }

    fn apply_app(&self, id: &str, event: &licensd_domain::app::AppEvent) {
        let Ok(app_id) = id.parse::<AppId>() else { return };
        let new_digest = match event {
            licensd_domain::app::AppEvent::WebsocketKeySet { websocket_key, .. } => {
                // Indexed before the app shows it, and the old digest removed only after: a
                // lookup of the current key always finds the app (see `app_by_websocket_key`).
                self.websocket_keys.insert(websocket_key.digest.clone(), app_id);
                Some(websocket_key.digest.as_str())
            }
            _ => None,
        };
        let mut old_digest = None;
        // Evolved under the entry's lock: a reader waits for the new app instead of finding
        // none (which SDKs take as `invalid_app`, final).
        match self.apps.entry(app_id) {
            Entry::Occupied(mut slot) => {
                if new_digest.is_some() {
                    old_digest = slot.get().websocket_key.as_ref().map(|k| k.digest.clone());
                }
                match AppState(Some(App::clone(slot.get()))).evolve(event).0 {
                    Some(app) => *slot.get_mut() = Arc::new(app),
                    None => drop(slot.remove()),
                }
            }
            Entry::Vacant(slot) => {
                if let Some(app) = AppState(None).evolve(event).0 {
                    slot.insert(Arc::new(app));
                }
            }
        }
        if let Some(old) = old_digest.filter(|old| Some(old.as_str()) != new_digest) {
            self.websocket_keys.remove_if(&old, |_, owner| *owner == app_id);
        }
    }

    fn apply_account(&self, id: &str, event: &AccountEvent) {
        let Ok(account_id) = id.parse::<AccountId>() else { return };
        let mut account = self.accounts.entry(account_id).or_default();
        match event {
            AccountEvent::AccountCreated { .. } => account.exists = true,
            AccountEvent::ApiKeyIssued { key_id, key_hash, prefix, scopes, at } => {
                account.api_keys.push(*key_id);
                let (prefix, scopes) = (prefix.clone(), scopes.clone());
                let view = ApiKeyView { key_id: *key_id, account_id, prefix, scopes, created_at: *at };
                self.api_keys.insert(key_hash.clone(), view);
            }
            AccountEvent::ApiKeyRevoked { key_id, .. } => {
                account.api_keys.retain(|k| k != key_id);
                self.api_keys.retain(|_, view| view.key_id != *key_id);
            }
            AccountEvent::CreditsGranted { amount, .. } => account.balance += *amount as i64,
            AccountEvent::CreditsDebited { amount, .. } => account.balance -= *amount as i64,
            AccountEvent::AccountSuspended { .. } => account.suspended = true,
            AccountEvent::AccountReinstated { .. } => account.suspended = false,
            AccountEvent::LowBalanceAlertSet { threshold, .. } => account.low_balance_threshold = *threshold,
            // The alert's progress is the account aggregate's and its worker's business.
            AccountEvent::LowBalanceAlertRaised { .. }
            | AccountEvent::LowBalanceAlertMailed { .. }
            | AccountEvent::LowBalanceAlertRearmed { .. } => {}
            AccountEvent::CommerceConnected { connection, .. } => {
                // Insert before removing the one it replaces: a reconnection under the same id
                // must never look disconnected in between.
                let id = connection.connection_id;
                self.connections.insert(id, (account_id, connection.clone()));
                self.connections.retain(|other, (owner, c)| {
                    *other == id || !(*owner == account_id && c.provider == connection.provider)
                });
            }
            AccountEvent::CommerceDisconnected { provider, .. } => {
                self.connections.retain(|_, (owner, c)| !(*owner == account_id && c.provider == *provider));
            }
            AccountEvent::CommerceResealed { connection, .. } => {
                if let Some(mut entry) = self.connections.get_mut(&connection.connection_id) {
                    if entry.0 == account_id {
                        entry.1 = connection.clone();
                    }
                }
            }
            AccountEvent::DashboardLoginSet { email_digest, password_hash, .. } => {
                account.login_generation += 1;
                // Insert before removing the old email's entry, so the same email never vanishes.
                let login = DashboardLogin { account_id, password_hash: password_hash.clone() };
                self.logins.insert(email_digest.clone(), login);
                self.logins.retain(|digest, login| digest == email_digest || login.account_id != account_id);
            }
        }
    }

    /// A digest of the whole model at one instant, independent of insertion order: equal
    /// digests mean equal models (used to prove that a rebuild from zero matches live
    /// processing and a snapshot). See `digest.rs` for the construction.
    pub fn digest(&self) -> Result<String, serde_json::Error> {
        // As a snapshot does: no event applied and no own append recorded while it is read.
        let _applying = self.applying.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _recording = self.capturing.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut digest = ModelDigest::new();
        digest
            .map("licenses", &self.licenses)?
            .shared_map("apps", &self.apps)?
            .map("accounts", &self.accounts)?
            .map("api_keys", &self.api_keys)?
            .map("burn", &self.burn)?
            .map("connections", &self.connections)?
            .map("logins", &self.logins)?
            .section("nonces", &self.nonces.live_keys())
            .map("app_users", &self.users.by_id)?
            .map("user_logins", &self.users.by_login)?
            .map("user_licenses", &self.users.licenses)?
            .shared_map("files", &self.files.by_name)?;
        Ok(digest.finish())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::Utc;
    use licensd_domain::{DomainEvent, EventData};

    /// An event as the log would hand it back (also used by the other modules' tests).
    pub(crate) fn recorded(seq: i64, stream_id: String, version: u64, event: &impl DomainEvent) -> RecordedEvent {
        let data = EventData::encode(event);
        RecordedEvent {
            position: Position { tx: 0, seq },
            event_id: uuid::Uuid::now_v7(),
            stream_id,
            version,
            event_type: data.event_type.to_string(),
            schema_version: data.schema_version,
            payload: licensd_store::raw_json(&data.payload),
            metadata: licensd_store::raw_json(&serde_json::json!({})),
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn an_append_recorded_ahead_is_applied_once_and_still_billed() {
        let model = HotModel::default();
        let (account_id, app_id, now) = (AccountId::new(), AppId::new(), Utc::now());
        let key = LicenseKey::from_random([7; 16]);
        let account = StreamCategory::Account.stream_id(account_id);
        let stream = StreamCategory::License.stream_id(&key);
        model
            .apply(&recorded(1, account.clone(), 1, &AccountEvent::AccountCreated { account_id, created_at: now }))
            .unwrap();
        let grant = AccountEvent::CreditsGranted { amount: 10, reason: "t".into(), at: now };
        model.apply(&recorded(2, account, 2, &grant)).unwrap();
        let created = LicenseEvent::LicenseCreated {
            key: key.clone(),
            app_id,
            account_id,
            expires_at: None,
            max_hwid_slots: 2,
            label: None,
            created_at: now,
        };
        model.apply(&recorded(3, stream.clone(), 1, &created)).unwrap();

        // The hot path commits a binding and a bill, and records the outcome at once.
        let bound = LicenseEvent::HwidBound { hwid: "hw".into(), at: now };
        let billed =
            LicenseEvent::ValidationBilled { account_id, credits: 1, nonce: Some("n".into()), hwid: None, at: now };
        let ahead =
            [&bound, &billed].into_iter().fold(LicenseState::Live(model.license(&key).unwrap()), |s, e| s.evolve(e));
        let LicenseState::Live(ahead) = ahead else { panic!("live") };
        let hold = model.hold_bills(&ahead, std::slice::from_ref(&billed), now).unwrap();
        model.record_append(ahead.clone(), 3, &[bound.clone(), billed.clone()], hold);
        assert_eq!(model.account(account_id).unwrap().balance, 9, "the bill shows at once");
        assert_eq!(model.license_versioned(&key), Some((ahead.clone(), 3)));
        assert!(model.license(&key).unwrap().hwids.capacity() == 1, "no spare slots kept in memory");

        // A snapshot taken now, ahead of the tail, restores to the same model.
        let (bytes, _) = model.snapshot_bytes().unwrap();
        let mut restored = HotModel::default();
        restored.restore_snapshot(&bytes).unwrap();
        assert_eq!(restored.digest().unwrap(), model.digest().unwrap());

        // The tail reads both back: the license is not bound twice, the bill is counted once.
        let (bound, billed) = (recorded(4, stream.clone(), 2, &bound), recorded(5, stream, 3, &billed));
        for event in [&bound, &billed, &billed, &bound] {
            model.apply(event).unwrap();
            restored.apply(event).unwrap();
        }
        assert_eq!(restored.digest().unwrap(), model.digest().unwrap(), "snapshot + tail = live");
        assert_eq!(restored.account(account_id).unwrap().balance, 9, "the bill counted once after a restore");
        assert!(restored.nonce_seen(app_id, "n"));
        assert_eq!(model.license_versioned(&key), Some((ahead, 3)));
        assert_eq!(model.account(account_id).unwrap().balance, 9);
        assert!(model.nonce_seen(app_id, "n"));
        // An older outcome never overwrites a newer one.
        let mut stale = model.license(&key).unwrap();
        stale.hwids.clear();
        model.record_append(stale, 2, &[], model.hold_credits(account_id, app_id, 0, now).unwrap());
        assert_eq!(model.license(&key).unwrap().hwids, vec!["hw".to_string()]);
    }

    /// The Postgres tail (pages) and the Kafka follower (one chained event at a time) apply the
    /// same events at once: each is applied exactly once, whichever gets there first.
    #[test]
    fn the_tail_and_the_chained_follower_racing_apply_each_event_once() {
        let model = Arc::new(HotModel::default());
        let (account_id, now) = (AccountId::new(), Utc::now());
        let account = StreamCategory::Account.stream_id(account_id);
        let mut events =
            vec![recorded(1, account.clone(), 1, &AccountEvent::AccountCreated { account_id, created_at: now })];
        let grants = 2000;
        for i in 0..grants {
            let grant = AccountEvent::CreditsGranted { amount: 1, reason: "t".into(), at: now };
            events.push(recorded(i + 2, account.clone(), i as u64 + 2, &grant));
        }
        let decode =
            |e: &RecordedEvent| AnyEvent::decode(&e.stream_id, &e.event_type, e.schema_version, &e.payload).unwrap();
        let decoded: Arc<Vec<Option<AnyEvent>>> = Arc::new(events.iter().map(decode).collect());
        let events = Arc::new(events);
        let tail = {
            let (model, events, decoded) = (model.clone(), events.clone(), decoded.clone());
            std::thread::spawn(move || {
                for (page, decoded) in events.chunks(7).zip(decoded.chunks(7)) {
                    model.apply_decoded(
                        page.iter().map(RecordedEvent::as_log_event).zip(decoded.iter().map(Option::as_ref)),
                    );
                    std::thread::yield_now();
                }
            })
        };
        let mut prev = Position::START;
        let (mut applied, mut waited) = (0, 0u64);
        for (event, decoded) in events.iter().zip(decoded.iter()) {
            loop {
                match model.apply_after(prev, event, decoded.as_ref()) {
                    Chained::Applied => applied += 1,
                    Chained::AlreadyApplied => {}
                    Chained::NotNext => {
                        waited += 1;
                        std::thread::yield_now();
                        continue;
                    }
                }
                break;
            }
            prev = event.position;
        }
        tail.join().unwrap();
        assert_eq!(model.account(account_id).unwrap().balance, grants, "every grant counted once");
        assert_eq!(model.applied_events(), events.len() as u64, "no event applied twice");
        assert_eq!(model.position(), events.last().unwrap().position);
        assert!(applied <= events.len(), "{applied} applied by the follower, {waited} waits");
        // A chained event whose predecessor is missing waits; one already applied is a duplicate.
        let later = recorded(
            grants + 10,
            account,
            grants as u64 + 10,
            &AccountEvent::CreditsGranted { amount: 1, reason: "t".into(), at: now },
        );
        let gap = Position { tx: 0, seq: grants + 5 };
        assert_eq!(model.apply_after(gap, &later, decode(&later).as_ref()), Chained::NotNext);
        assert_eq!(model.apply_after(Position::START, &events[3], decoded[3].as_ref()), Chained::AlreadyApplied);
        assert_eq!(model.account(account_id).unwrap().balance, grants);
    }

    /// Licenses created in `order`, one stream each (`slots` picks each one's HWID slots).
    fn model_of(keys: &[LicenseKey], order: impl Iterator<Item = usize>, slots: impl Fn(usize) -> u8) -> HotModel {
        let (model, now) = (HotModel::default(), chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap());
        let (account_id, app_id) = (AccountId(uuid::Uuid::from_u128(1)), AppId(uuid::Uuid::from_u128(2)));
        let account = StreamCategory::Account.stream_id(account_id);
        model.apply(&recorded(1, account, 1, &AccountEvent::AccountCreated { account_id, created_at: now })).unwrap();
        for (seq, n) in order.enumerate() {
            let created = LicenseEvent::LicenseCreated {
                key: keys[n].clone(),
                app_id,
                account_id,
                expires_at: None,
                max_hwid_slots: slots(n),
                label: Some(format!("license {n}")),
                created_at: now,
            };
            model.apply(&recorded(seq as i64 + 2, StreamCategory::License.stream_id(&keys[n]), 1, &created)).unwrap();
        }
        model
    }

    /// The content hash covers every field of every entry and not the order entries arrived
    /// in, both below and above the size from which a map is hashed on several threads.
    #[test]
    fn the_content_hash_is_the_content_not_the_insertion_order() {
        for count in [5, 20_000] {
            // Five bits of `n` per character (a key keeps five bits of each byte).
            let key = |n: usize| LicenseKey::from_random(std::array::from_fn(|i| (n >> (5 * i.min(12))) as u8 & 31));
            let keys: Vec<_> = (0..count).map(key).collect();
            let in_order = model_of(&keys, 0..count, |_| 2);
            let reversed = model_of(&keys, (0..count).rev(), |_| 2);
            assert_eq!(in_order.licenses.len(), count);
            assert_eq!(reversed.digest().unwrap(), in_order.digest().unwrap(), "{count}: same content");
            let one_differs = model_of(&keys, 0..count, |n| if n == count / 2 { 3 } else { 2 });
            assert_ne!(one_differs.digest().unwrap(), in_order.digest().unwrap(), "{count}: one field of one license");
            let one_missing = model_of(&keys, 1..count, |_| 2);
            assert_ne!(one_missing.digest().unwrap(), in_order.digest().unwrap(), "{count}: one license fewer");
        }
    }

    /// Two models given the same app events hash alike, though a security list holds its
    /// entries in a hash set too, iterated in a different order in each model.
    #[test]
    fn equal_security_lists_hash_alike() {
        use licensd_domain::app::{AppCommand, AppEvent, SigningKey};
        use licensd_domain::{Sealed, SecurityListsUpdate};
        let (account_id, app_id, now) = (AccountId::new(), AppId::new(), Utc::now());
        let signing_key =
            SigningKey { key_id: "k1".into(), public_key: "AAAA".into(), private_key: Sealed("sealed".into()) };
        let created = AppEvent::AppCreated {
            app_id,
            account_id,
            name: "lists".into(),
            secret: Sealed("sealed".into()),
            signing_key,
            created_at: now,
        };
        let hwids = (0..40).map(|n| format!("hwid-{n}")).collect();
        let update = SecurityListsUpdate { hwid_blacklist: Some(hwids), ..Default::default() };
        let mut events = vec![created.clone()];
        events.extend(AppState::fold(&events).decide(AppCommand::SetSecurityLists(update), now).unwrap());
        let stream = StreamCategory::App.stream_id(app_id);
        let model_of = || {
            let model = HotModel::default();
            for (n, event) in events.iter().enumerate() {
                model.apply(&recorded(n as i64 + 1, stream.clone(), n as u64 + 1, event)).unwrap();
            }
            model
        };
        let (one, other) = (model_of(), model_of());
        assert_eq!(one.app(app_id).unwrap().lists.effective().hwid_blacklist.len(), 40);
        assert_eq!(one.digest().unwrap(), other.digest().unwrap());
    }

    /// Bills applied out of minute order (own ones recorded ahead, other nodes' from the log)
    /// leave the same burn buckets, and so the same content hash, as in order.
    #[test]
    fn burn_buckets_do_not_depend_on_the_order_bills_arrive_in() {
        let app_id = AppId::new();
        let minute = |m: i64| chrono::DateTime::from_timestamp(m * 60 + 7, 0).unwrap();
        let (in_order, shuffled) = (HotModel::default(), HotModel::default());
        for m in [27, 27, 28, 28, 30] {
            in_order.record_burn(app_id, minute(m), 1);
        }
        for m in [28, 27, 30, 27, 28] {
            shuffled.record_burn(app_id, minute(m), 1);
        }
        let buckets = |model: &HotModel| model.burn.get(&app_id).unwrap().iter().copied().collect::<Vec<_>>();
        assert_eq!(buckets(&in_order), vec![(27, 2), (28, 2), (30, 1)]);
        assert_eq!(buckets(&shuffled), buckets(&in_order));
        assert_eq!(shuffled.digest().unwrap(), in_order.digest().unwrap());
    }
}
