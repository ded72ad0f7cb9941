//! Command handlers: load a stream, decide, append with the version that was read.

use crate::folded::{Folded, DEFAULT_FOLDED_STREAMS};
use crate::{Actor, CommandError, Entropy, MasterKey, PiiVault, WriterHandle};
use base64::{engine::general_purpose::STANDARD, Engine};
use chrono::{DateTime, Utc};
use licensd_domain::account::{AccountCommand, AccountState};
use licensd_domain::app::{AppCommand, AppState, SigningKey, Webhook};
use licensd_domain::license::{LicenseCommand, LicenseState};
use licensd_domain::{
    decode_event, AccountId, Aggregate, ApiKeyId, AppId, Clock, DomainError, DomainEvent, LicenseKey, StreamCategory,
};
use licensd_store::{
    AppendRequest, AppendResult, EventStore, ExpectedVersion, PiiRow, RecordedEvent, Store, StoreError,
};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use uuid::Uuid;

/// Attempts of one command when another writer keeps changing its stream.
const CONFLICT_RETRIES: usize = 5;
/// Attempts to find an unused license key (80 random bits: a collision is already rare).
const KEY_ATTEMPTS: usize = 5;
pub const API_KEY_PREFIX: &str = "af_live_";

/// The events a command produced and where they landed (`None` when it changed nothing).
#[derive(Debug, Clone)]
pub struct Executed<E> {
    pub events: Vec<E>,
    pub result: Option<AppendResult>,
}

impl<E> Executed<E> {
    /// Where the command's last event landed, if it appended anything.
    pub fn position(&self) -> Option<licensd_store::Position> {
        self.result.map(|r| r.position)
    }
}

#[derive(Debug, Clone)]
pub struct AccountCreated {
    pub account_id: AccountId,
    pub key_id: ApiKeyId,
    /// The Developer API key in clear: shown once, stored only as a hash.
    pub api_key: String,
    pub result: AppendResult,
}

#[derive(Debug, Clone)]
pub struct AppCreated {
    pub app_id: AppId,
    /// The app secret in clear: shown once.
    pub app_secret: String,
    pub key_id: String,
    pub public_key: String,
    /// The WebSocket API key in clear: shown once.
    pub websocket_api_key: String,
    pub result: AppendResult,
}

#[derive(Debug, Clone)]
pub struct NewLicense {
    pub app_id: AppId,
    pub expires_at: Option<DateTime<Utc>>,
    pub max_hwid_slots: u8,
    pub label: Option<String>,
    pub levels: Vec<String>,
    pub max_sessions: Option<u32>,
}

#[derive(Clone)]
pub struct Commands {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    writer: WriterHandle,
    clock: Arc<dyn Clock>,
    key: MasterKey,
    pii: PiiVault,
    /// App commands of this process queue per app (striped by app id) instead of racing: many
    /// concurrent list edits or self-bans on one app would otherwise exhaust the conflict retries.
    app_stripes: Vec<tokio::sync::Mutex<()>>,
    /// Recently folded aggregates (see [`Folded`]).
    folded: Folded,
}

/// Stripes of [`Inner::app_stripes`]: apps sharing one only queue behind each other.
const APP_STRIPES: usize = 64;

pub fn api_key_hash(api_key: &str) -> String {
    hex::encode(Sha256::digest(api_key.as_bytes()))
}

fn decode_all<A: Aggregate>(recorded: &[RecordedEvent]) -> Result<Vec<A::Event>, DomainError> {
    recorded.iter().map(|e| decode_event::<A::Event>(&e.event_type, e.schema_version, &e.payload)).collect()
}

pub(crate) fn app_secret_purpose(app_id: AppId) -> String {
    format!("app-secret:{app_id}")
}

pub(crate) fn webhook_secret_purpose(webhook_id: &str) -> String {
    format!("webhook-secret:{webhook_id}")
}

pub(crate) fn signing_key_purpose(app_id: AppId, key_id: &str) -> String {
    format!("signing-key:{app_id}:{key_id}")
}

impl Commands {
    pub fn new(store: Store, writer: WriterHandle, clock: Arc<dyn Clock>, key: MasterKey) -> Self {
        Self::with_folded_streams(store, writer, clock, key, DEFAULT_FOLDED_STREAMS)
    }

    /// Commands keeping up to `folded_streams` folded aggregates (0: fold every stream from its
    /// first event on every load).
    pub fn with_folded_streams(
        store: Store,
        writer: WriterHandle,
        clock: Arc<dyn Clock>,
        key: MasterKey,
        folded_streams: u64,
    ) -> Self {
        let pii = PiiVault::new(store.clone(), key.clone());
        let app_stripes = (0..APP_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect();
        let folded = Folded::new(folded_streams);
        Self { inner: Arc::new(Inner { store, writer, clock, key, pii, app_stripes, folded }) }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn writer(&self) -> &WriterHandle {
        &self.inner.writer
    }

    pub fn pii(&self) -> &PiiVault {
        &self.inner.pii
    }

    pub fn master_key(&self) -> &MasterKey {
        &self.inner.key
    }

    /// The clock; inside a keyed request, the time it was first received, so a re-run after a
    /// crash decides at the same instant and writes the same timestamps.
    pub fn now(&self) -> DateTime<Utc> {
        Entropy::current().time().unwrap_or_else(|| self.inner.clock.now())
    }

    /// Folds a stream into its aggregate state; returns it with the stream's version. Only the
    /// events after a fold kept from an earlier load are read and folded.
    pub async fn load<A>(&self, stream_id: &str) -> Result<(A, u64), CommandError>
    where
        A: Aggregate + Clone + Send + Sync + 'static,
    {
        let (state, from) = self.inner.folded.get::<A>(stream_id).unwrap_or_default();
        let recorded = self.inner.store.read_stream(stream_id, from + 1).await?;
        let Some(version) = recorded.last().map(|e| e.version) else { return Ok((state, from)) };
        let state = decode_all::<A>(&recorded)?.iter().fold(state, |s, e| s.evolve(e));
        self.inner.folded.put(stream_id, state.clone(), version);
        Ok((state, version))
    }

    /// The state a command decides on. A keyed re-run whose first run's events committed is
    /// decided against the state before them (its append then meets the same event ids and the
    /// store answers "already appended"); that rare case folds the stream up to them.
    async fn load_for<A>(&self, stream_id: &str, entropy: &Entropy) -> Result<(A, u64), CommandError>
    where
        A: Aggregate + Clone + Send + Sync + 'static,
    {
        let committed = match entropy.is_keyed() {
            true => self.version_of(stream_id, entropy.event_id(0)).await?,
            false => None,
        };
        let Some(committed) = committed else { return self.load::<A>(stream_id).await };
        let recorded = self.inner.store.read_stream(stream_id, 1).await?;
        let prior: Vec<RecordedEvent> = recorded.into_iter().take_while(|e| e.version < committed).collect();
        let version = prior.last().map_or(0, |e| e.version);
        Ok((A::fold(&decode_all::<A>(&prior)?), version))
    }

    /// The version at which `event_id` sits in `stream_id`, if it was appended there.
    async fn version_of(&self, stream_id: &str, event_id: Uuid) -> Result<Option<u64>, CommandError> {
        let sql = match self.inner.store.backend() {
            "postgres" => {
                "SELECT CAST(version AS TEXT) FROM events WHERE event_id = CAST($1 AS UUID) AND stream_id = $2"
            }
            _ => "SELECT CAST(version AS TEXT) FROM events WHERE event_id = $1 AND stream_id = $2",
        };
        let args = [event_id.to_string().into(), stream_id.to_string().into()];
        let found = self.inner.store.query_text(sql, &args).await?;
        Ok(found.into_iter().flatten().next().and_then(|v| v.parse().ok()))
    }

    /// Runs `command` against the stream: `guard` vets the loaded state (tenancy), the domain
    /// decides, and the events are appended at the version read. Lost races are re-decided.
    pub async fn execute<A>(
        &self,
        stream_id: &str,
        command: A::Command,
        actor: &Actor,
        account_id: Option<AccountId>,
        guard: impl Fn(&A) -> Result<(), CommandError>,
    ) -> Result<Executed<A::Event>, CommandError>
    where
        A: Aggregate + Clone + Send + Sync + 'static,
        A::Command: Clone,
    {
        self.execute_with_pii(stream_id, command, actor, account_id, guard, Vec::new()).await
    }

    /// [`Self::execute`], writing `pii` (sealed by [`PiiVault::row`]) in the transaction of the
    /// events it decides: the personal data is stored only if the action is, and never without it.
    pub async fn execute_with_pii<A>(
        &self,
        stream_id: &str,
        command: A::Command,
        actor: &Actor,
        account_id: Option<AccountId>,
        guard: impl Fn(&A) -> Result<(), CommandError>,
        pii: Vec<PiiRow>,
    ) -> Result<Executed<A::Event>, CommandError>
    where
        A: Aggregate + Clone + Send + Sync + 'static,
        A::Command: Clone,
    {
        let entropy = Entropy::next_step();
        for _ in 0..CONFLICT_RETRIES {
            let (state, version) = self.load_for::<A>(stream_id, &entropy).await?;
            guard(&state)?;
            let events = state.decide(command.clone(), self.now())?;
            if events.is_empty() {
                return Ok(Executed { events, result: None });
            }
            let expected = if version == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version) };
            match self.append_with(&entropy, stream_id, expected, &events, actor, account_id, pii.clone()).await {
                Ok(result) if result.idempotent => {
                    // What the first run committed (its timestamps), not this run's re-decision.
                    let events = self.committed_events::<A>(stream_id, &entropy, events.len()).await?;
                    return Ok(Executed { events, result: Some(result) });
                }
                Ok(result) => return Ok(Executed { events, result: Some(result) }),
                Err(CommandError::Store(StoreError::WrongExpectedVersion { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(CommandError::Contention)
    }

    /// The events of `stream_id` a keyed command appended: those carrying its first `count` ids.
    async fn committed_events<A: Aggregate>(
        &self,
        stream_id: &str,
        entropy: &Entropy,
        count: usize,
    ) -> Result<Vec<A::Event>, CommandError> {
        let ids: Vec<Uuid> = (0..count).map(|n| entropy.event_id(n)).collect();
        let recorded = self.inner.store.read_stream(stream_id, 1).await?;
        let ours: Vec<RecordedEvent> = recorded.into_iter().filter(|e| ids.contains(&e.event_id)).collect();
        Ok(decode_all::<A>(&ours)?)
    }

    /// Appends already-decided events (the auth hot path decides against the in-memory model).
    pub async fn append<E: DomainEvent>(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[E],
        actor: &Actor,
        account_id: Option<AccountId>,
    ) -> Result<AppendResult, CommandError> {
        self.append_with_pii(stream_id, expected, events, actor, account_id, Vec::new()).await
    }

    /// [`Self::append`], writing the personal data the events refer to (sealed by
    /// [`PiiVault::row`]) in the same transaction: both are stored, or neither.
    pub async fn append_with_pii<E: DomainEvent>(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[E],
        actor: &Actor,
        account_id: Option<AccountId>,
        pii: Vec<PiiRow>,
    ) -> Result<AppendResult, CommandError> {
        self.append_with(&Entropy::next_step(), stream_id, expected, events, actor, account_id, pii).await
    }

    /// Appends with event ids drawn from `entropy` (derived ones on a keyed request).
    #[allow(clippy::too_many_arguments)] // the append's parts, each used once
    async fn append_with<E: DomainEvent>(
        &self,
        entropy: &Entropy,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[E],
        actor: &Actor,
        account_id: Option<AccountId>,
        pii: Vec<PiiRow>,
    ) -> Result<AppendResult, CommandError> {
        let metadata = actor.metadata(account_id);
        let events = events
            .iter()
            .enumerate()
            .map(|(n, event)| crate::new_event(event, entropy.event_id(n), metadata.clone()))
            .collect();
        let append = self.inner.writer.append(AppendRequest::new(stream_id, expected, events).with_pii(pii));
        // Queued for the group commit and waiting for it: the request's share of the write.
        tracing::Instrument::instrument(append, licensd_store::trace::step("store.append")).await
    }

    /// A merchant account with its first Developer API key (all scopes); refused when another
    /// account already has the email.
    pub async fn create_account(&self, email: &str, actor: &Actor) -> Result<AccountCreated, CommandError> {
        let email = normalize_email(email)?;
        let entropy = Entropy::next_step();
        let account_id = AccountId(entropy.uuid("account-id"));
        self.reserve_email(&email, account_id, actor).await?;
        let created = self.create_reserved_account(&email, account_id, &entropy, actor).await;
        if created.is_err() {
            self.release_email(&email, account_id, actor).await;
        }
        created
    }

    async fn create_reserved_account(
        &self,
        email: &str,
        account_id: AccountId,
        entropy: &Entropy,
        actor: &Actor,
    ) -> Result<AccountCreated, CommandError> {
        let stream = StreamCategory::Account.stream_id(account_id);
        let pii = vec![self.inner.pii.row(&stream, "email", email)];
        let (api_key, key_id, issue) = new_api_key(&entropy.fork("api-key"), vec!["*".into()]);
        let created = AccountState::default().decide(AccountCommand::Create { account_id }, self.now())?;
        let state = AccountState::fold(&created);
        let issued = state.decide(issue, self.now())?;
        let events: Vec<_> = created.into_iter().chain(issued).collect();
        let result =
            self.append_with_pii(&stream, ExpectedVersion::NoStream, &events, actor, Some(account_id), pii).await?;
        Ok(AccountCreated { account_id, key_id, api_key, result })
    }

    /// Issues another API key; returns its id and the key in clear (shown once).
    pub async fn issue_api_key(
        &self,
        account_id: AccountId,
        scopes: Vec<String>,
        actor: &Actor,
    ) -> Result<(ApiKeyId, String, AppendResult), CommandError> {
        let (api_key, key_id, command) = new_api_key(&Entropy::next_step(), scopes);
        let stream = StreamCategory::Account.stream_id(account_id);
        let executed = self.execute::<AccountState>(&stream, command, actor, Some(account_id), |_| Ok(())).await?;
        let result = executed.result.ok_or(CommandError::Domain(DomainError::AlreadyExists("API key")))?;
        Ok((key_id, api_key, result))
    }

    pub async fn account_command(
        &self,
        account_id: AccountId,
        command: AccountCommand,
        actor: &Actor,
    ) -> Result<Executed<licensd_domain::account::AccountEvent>, CommandError> {
        let stream = StreamCategory::Account.stream_id(account_id);
        self.execute::<AccountState>(&stream, command, actor, Some(account_id), |_| Ok(())).await
    }

    /// An app with a fresh secret and Ed25519 signing key (both sealed in its events).
    pub async fn create_app(
        &self,
        account_id: AccountId,
        name: &str,
        actor: &Actor,
    ) -> Result<AppCreated, CommandError> {
        let (account, _) = self.load::<AccountState>(&StreamCategory::Account.stream_id(account_id)).await?;
        if account.0.is_none() {
            return Err(DomainError::NotFound("account").into());
        }
        let app_id = AppId(Entropy::next_step().uuid("app-id"));
        let (app_secret, secret) = self.new_app_secret(app_id);
        let signing_key = self.new_signing_key(app_id);
        let (key_id, public_key) = (signing_key.key_id.clone(), signing_key.public_key.clone());
        let (websocket_api_key, websocket_key) = self.new_websocket_key(app_id);
        let name = name.to_string();
        let websocket_key = Some(websocket_key);
        let command = AppCommand::Create { app_id, account_id, name, secret, signing_key, websocket_key };
        let stream = StreamCategory::App.stream_id(app_id);
        let executed = self.execute::<AppState>(&stream, command, actor, Some(account_id), |_| Ok(())).await?;
        let result = executed.result.ok_or(CommandError::Domain(DomainError::AlreadyExists("app")))?;
        Ok(AppCreated { app_id, app_secret, key_id, public_key, websocket_api_key, result })
    }

    /// A fresh app secret (a UUID, as the SDKs expect): in clear and sealed.
    pub fn new_app_secret(&self, app_id: AppId) -> (String, licensd_domain::Sealed) {
        let entropy = Entropy::next_step();
        let secret = entropy.uuid("app-secret").to_string();
        let sealed =
            self.inner.key.seal_with_nonce(secret.as_bytes(), &app_secret_purpose(app_id), entropy.bytes("nonce"));
        (secret, sealed)
    }

    /// A fresh Ed25519 key for the app, its private half sealed.
    pub fn new_signing_key(&self, app_id: AppId) -> SigningKey {
        let entropy = Entropy::next_step();
        let key = ed25519_dalek::SigningKey::from_bytes(&entropy.bytes::<32>("signing-key"));
        let key_id = format!("k{}", hex::encode(entropy.bytes::<6>("key-id")));
        let purpose = signing_key_purpose(app_id, &key_id);
        let private_key = self.inner.key.seal_with_nonce(key.as_bytes(), &purpose, entropy.bytes("nonce"));
        SigningKey { public_key: STANDARD.encode(key.verifying_key().as_bytes()), private_key, key_id }
    }

    /// A webhook with a fresh `whsec_` signing secret; returns the secret in clear (shown once).
    pub async fn create_webhook(
        &self,
        account_id: AccountId,
        app_id: AppId,
        url: String,
        events: Vec<String>,
        enabled: bool,
        actor: &Actor,
    ) -> Result<(Webhook, String, AppendResult), CommandError> {
        let entropy = Entropy::next_step();
        let webhook_id = format!("wh_{}", hex::encode(entropy.bytes::<6>("webhook-id")));
        let secret = format!("whsec_{}", hex::encode(entropy.bytes::<16>("webhook-secret")));
        let purpose = webhook_secret_purpose(&webhook_id);
        let sealed = self.inner.key.seal_with_nonce(secret.as_bytes(), &purpose, entropy.bytes("nonce"));
        let webhook = Webhook { webhook_id, url, events, enabled, secret: sealed, created_at: self.now() };
        let executed = self.app_command(account_id, app_id, AppCommand::CreateWebhook(webhook), actor).await?;
        let result = executed.result.ok_or(CommandError::Domain(DomainError::AlreadyExists("webhook")))?;
        // The webhook as committed (on a keyed re-run, with the first run's timestamp).
        let webhook = executed
            .events
            .into_iter()
            .find_map(|event| match event {
                licensd_domain::app::AppEvent::WebhookCreated { webhook, .. } => Some(webhook),
                _ => None,
            })
            .ok_or_else(|| StoreError::Corrupt("a created webhook without its event".into()))?;
        Ok((webhook, secret, result))
    }

    pub fn open_webhook_secret(
        &self,
        webhook_id: &str,
        sealed: &licensd_domain::Sealed,
    ) -> Result<String, CommandError> {
        self.inner.key.open_string(sealed, &webhook_secret_purpose(webhook_id))
    }

    /// Opens an app's sealed secret (for constant-time comparison by the auth endpoints).
    pub fn open_app_secret(&self, app_id: AppId, sealed: &licensd_domain::Sealed) -> Result<String, CommandError> {
        self.inner.key.open_string(sealed, &app_secret_purpose(app_id))
    }

    /// Opens an app's sealed Ed25519 private key.
    pub fn open_signing_key(&self, app_id: AppId, key: &SigningKey) -> Result<ed25519_dalek::SigningKey, CommandError> {
        let bytes = self.inner.key.open(&key.private_key, &signing_key_purpose(app_id, &key.key_id))?;
        let bytes: [u8; 32] =
            bytes.try_into().map_err(|_| CommandError::Crypto("signing key is not 32 bytes".into()))?;
        Ok(ed25519_dalek::SigningKey::from_bytes(&bytes))
    }

    /// Runs an app command for the account that owns the app.
    pub async fn app_command(
        &self,
        account_id: AccountId,
        app_id: AppId,
        command: AppCommand,
        actor: &Actor,
    ) -> Result<Executed<licensd_domain::app::AppEvent>, CommandError> {
        let stream = StreamCategory::App.stream_id(app_id);
        let stripe = app_id.0.as_u128() as usize % APP_STRIPES;
        let _queued = self.inner.app_stripes[stripe].lock().await;
        self.execute::<AppState>(&stream, command, actor, Some(account_id), |state| app_owned_by(state, account_id))
            .await
    }

    /// Creates `quantity` licenses for an app the account owns, on fresh random keys.
    pub async fn create_licenses(
        &self,
        account_id: AccountId,
        spec: NewLicense,
        quantity: usize,
        actor: &Actor,
    ) -> Result<Vec<(LicenseKey, AppendResult)>, CommandError> {
        let (app, _) = self.load::<AppState>(&StreamCategory::App.stream_id(spec.app_id)).await?;
        app_owned_by(&app, account_id)?;
        let batch = Entropy::next_step();
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..quantity {
            let (commands, spec, actor) = (self.clone(), spec.clone(), actor.clone());
            // Each license draws from its own fork: the same on a re-run, whatever the scheduling.
            let entropy = batch.fork(&format!("license:{index}"));
            let create = entropy.scope(async move { (index, commands.create_license(account_id, spec, &actor).await) });
            // Inside the request's trace span (if any), so its steps show under the request.
            tasks.spawn(tracing::Instrument::instrument(create, tracing::Span::current()));
        }
        let mut created = vec![None; quantity];
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((index, Ok(license))) => created[index] = Some(license),
                Ok((_, Err(e))) => first_error = first_error.or(Some(e)),
                Err(join) => first_error = first_error.or(Some(CommandError::Crypto(join.to_string()))),
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(created.into_iter().flatten().collect()),
        }
    }

    async fn create_license(
        &self,
        account_id: AccountId,
        spec: NewLicense,
        actor: &Actor,
    ) -> Result<(LicenseKey, AppendResult), CommandError> {
        for _ in 0..KEY_ATTEMPTS {
            let key = LicenseKey::from_random(Entropy::next_step().bytes("license-key"));
            let command = LicenseCommand::Create {
                key: key.clone(),
                app_id: spec.app_id,
                account_id,
                expires_at: spec.expires_at,
                max_hwid_slots: spec.max_hwid_slots,
                label: spec.label.clone(),
                levels: spec.levels.clone(),
                max_sessions: spec.max_sessions,
            };
            let stream = StreamCategory::License.stream_id(&key);
            match self.execute::<LicenseState>(&stream, command, actor, Some(account_id), |_| Ok(())).await {
                Ok(Executed { result: Some(result), .. }) => return Ok((key, result)),
                Ok(_) | Err(CommandError::Domain(DomainError::AlreadyExists(_) | DomainError::LicenseDeleted)) => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
        Err(CommandError::Contention)
    }

    /// Runs a license command for the account that owns the license.
    pub async fn license_command(
        &self,
        account_id: AccountId,
        key: &LicenseKey,
        command: LicenseCommand,
        actor: &Actor,
    ) -> Result<Executed<licensd_domain::license::LicenseEvent>, CommandError> {
        self.license_command_with_pii(account_id, key, command, actor, Vec::new()).await
    }

    /// [`Self::license_command`], storing the personal data it records in the same transaction.
    pub async fn license_command_with_pii(
        &self,
        account_id: AccountId,
        key: &LicenseKey,
        command: LicenseCommand,
        actor: &Actor,
        pii: Vec<PiiRow>,
    ) -> Result<Executed<licensd_domain::license::LicenseEvent>, CommandError> {
        let stream = StreamCategory::License.stream_id(key);
        let guard = |state: &LicenseState| match state {
            LicenseState::Live(license) if license.account_id != account_id => Err(CommandError::Forbidden("license")),
            _ => Ok(()),
        };
        self.execute_with_pii::<LicenseState>(&stream, command, actor, Some(account_id), guard, pii).await
    }
}

fn app_owned_by(state: &AppState, account_id: AccountId) -> Result<(), CommandError> {
    match &state.0 {
        None => Err(DomainError::NotFound("app").into()),
        Some(app) if app.account_id != account_id => Err(CommandError::Forbidden("app")),
        Some(_) => Ok(()),
    }
}

fn new_api_key(entropy: &Entropy, scopes: Vec<String>) -> (String, ApiKeyId, AccountCommand) {
    let api_key = format!("{API_KEY_PREFIX}{}", hex::encode(entropy.bytes::<20>("api-key")));
    let key_id = ApiKeyId(entropy.uuid("key-id"));
    let command = AccountCommand::IssueApiKey {
        key_id,
        key_hash: api_key_hash(&api_key),
        prefix: api_key[..API_KEY_PREFIX.len() + 4].to_string(),
        scopes,
    };
    (api_key, key_id, command)
}

/// A plausible address: one `@`, something on both sides, a dot in the domain, ≤254 characters.
pub fn normalize_email(email: &str) -> Result<String, CommandError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && email.matches('@').count() == 1
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(email)
    } else {
        Err(CommandError::Domain(DomainError::InvalidName))
    }
}
