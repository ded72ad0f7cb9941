//! The app aggregate: one stream per app (`app-<uuid>`): credentials, variables, security lists.

use crate::commerce::ProductMapping;
use crate::security::{AccessLists, ListName, SecurityListsUpdate, MAX_HWID_LEN, MAX_LIST_ENTRIES};
pub use crate::variables::VariableAccess;
use crate::{
    AccountId, Aggregate, AppId, DomainError, Sealed, SecurityLists, StreamCategory, VariableAccessMap, Variables,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

pub const MAX_APP_NAME_CHARS: usize = 100;

/// Longest comment a self-ban keeps (the live blacklist packet's `comment`, websocket.md
/// section 14.16).
pub const MAX_SELF_BAN_COMMENT_CHARS: usize = 256;

/// Characters of a WebSocket API key (Blazeauth's initialize packet takes exactly 21).
pub const WEBSOCKET_KEY_LEN: usize = 21;
/// What every WebSocket API key starts with; the rest is drawn from [`WEBSOCKET_KEY_ALPHABET`].
pub const WEBSOCKET_KEY_PREFIX: &str = "BA";
pub const WEBSOCKET_KEY_ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Whether `key` has the shape of a WebSocket API key (`BA` + 19 of `[0-9A-Z]`).
pub fn is_websocket_key_shaped(key: &str) -> bool {
    key.len() == WEBSOCKET_KEY_LEN
        && key.starts_with(WEBSOCKET_KEY_PREFIX)
        && key.bytes().skip(WEBSOCKET_KEY_PREFIX.len()).all(|b| WEBSOCKET_KEY_ALPHABET.contains(&b))
}

/// An app's WebSocket API key as stored: never in clear. The live-session server finds the app
/// by `digest` (a keyed digest of the presented key: without the deployment's key, the log
/// does not let anyone test guesses) and confirms it in constant time.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebsocketKey {
    /// The 21-character key, sealed with the master key.
    pub sealed: Sealed,
    /// Keyed digest of the key, lowercase hex.
    pub digest: String,
}

impl std::fmt::Debug for WebsocketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The digest is no secret, but a log line has no use for it either.
        f.write_str("WebsocketKey(..)")
    }
}

/// An Ed25519 signing key: the public half in clear, the private half sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    pub key_id: String,
    /// Raw 32-byte public key, standard base64.
    pub public_key: String,
    pub private_key: Sealed,
}

/// An app's sealed values re-sealed under a new master key, each replacing the value it names.
/// Absent or empty parts are unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResealedSecrets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Sealed>,
    /// Private signing keys by key id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signing_keys: BTreeMap<String, Sealed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket_key: Option<Sealed>,
    /// Webhook signing secrets by webhook id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub webhooks: BTreeMap<String, Sealed>,
}

impl ResealedSecrets {
    pub fn is_empty(&self) -> bool {
        self.secret.is_none()
            && self.signing_keys.is_empty()
            && self.websocket_key.is_none()
            && self.webhooks.is_empty()
    }

    /// Only the entries naming something the app holds: a key or webhook removed meanwhile is
    /// not brought back by a rotation that read the app before.
    fn kept_for(mut self, app: &App) -> Self {
        self.signing_keys.retain(|id, _| app.signing_keys.iter().any(|k| &k.key_id == id));
        self.webhooks.retain(|id, _| app.webhook(id).is_some());
        if app.websocket_key.is_none() {
            self.websocket_key = None;
        }
        self
    }

    fn apply_to(&self, app: &mut App) {
        if let Some(secret) = &self.secret {
            app.secret = secret.clone();
        }
        for key in &mut app.signing_keys {
            if let Some(sealed) = self.signing_keys.get(&key.key_id) {
                key.private_key = sealed.clone();
            }
        }
        if let (Some(key), Some(sealed)) = (&mut app.websocket_key, &self.websocket_key) {
            key.sealed = sealed.clone();
        }
        for webhook in &mut app.webhooks {
            if let Some(sealed) = self.webhooks.get(&webhook.webhook_id) {
                webhook.secret = sealed.clone();
            }
        }
    }
}

crate::typed_decode::event_enum! {
    category = StreamCategory::App;
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    pub enum AppEvent {
        AppCreated {
            app_id: AppId,
            account_id: AccountId,
            name: String,
            secret: Sealed,
            signing_key: SigningKey,
            created_at: DateTime<Utc>,
        },
        AppRenamed {
            name: String,
            at: DateTime<Utc>,
        },
        AppDisabled {
            at: DateTime<Utc>,
        },
        AppEnabled {
            at: DateTime<Utc>,
        },
        AppSecretRotated {
            secret: Sealed,
            at: DateTime<Utc>,
        },
        /// The new key signs from now on; the previous one stays published for clients that trust both.
        SigningKeyRotated {
            signing_key: SigningKey,
            at: DateTime<Utc>,
        },
        /// Step one of a rotation: the key is published but does not sign yet, so clients holding
        /// only the current key keep working while releases that trust both ship.
        SigningKeyAdded {
            signing_key: SigningKey,
            at: DateTime<Utc>,
        },
        /// Step two: the key signs from now on; the previous signer stays published (verifying only).
        SigningKeyPromoted {
            key_id: String,
            at: DateTime<Utc>,
        },
        /// The key is withdrawn: listed as retired, never signing again.
        SigningKeyRetired {
            key_id: String,
            at: DateTime<Utc>,
        },
        VariablesSet {
            variables: Variables,
            at: DateTime<Utc>,
        },
        /// The whole-list form older versions wrote: it replaces the merchant's lists (kept so
        /// existing logs replay; new changes are written as the deltas below).
        SecurityListsChanged {
            lists: SecurityLists,
            at: DateTime<Utc>,
        },
        /// Entries added to and removed from one of the merchant's lists.
        SecurityListEdited {
            list: ListName,
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            added: Vec<String>,
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            removed: Vec<String>,
            at: DateTime<Utc>,
        },
        /// A tampered client banned its HWID and/or IP (`/auth/selfban`): only the new entries.
        SelfBanned {
            #[serde(default, skip_serializing_if = "Option::is_none")]
            hwid: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            ip: Option<String>,
            /// Why, as the client said (the live blacklist packet's `comment`); events written
            /// before comments were kept have none.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            comment: Option<String>,
            at: DateTime<Utc>,
        },
        /// The merchant removed a self-ban entry from a blacklist.
        SelfBanLifted {
            list: ListName,
            entry: String,
            at: DateTime<Utc>,
        },
        SettingsChanged {
            settings: AppSettings,
            at: DateTime<Utc>,
        },
        WebhookCreated {
            webhook: Webhook,
            at: DateTime<Utc>,
        },
        WebhookUpdated {
            webhook: Webhook,
            at: DateTime<Utc>,
        },
        WebhookDeleted {
            webhook_id: String,
            at: DateTime<Utc>,
        },
        /// Creates or replaces (same id) a commerce product mapping.
        ProductMappingSet {
            mapping: ProductMapping,
            at: DateTime<Utc>,
        },
        ProductMappingDeleted {
            mapping_id: uuid::Uuid,
            at: DateTime<Utc>,
        },
        /// A new WebSocket API key (at creation and on rotation): the previous one stops working.
        WebsocketKeySet {
            websocket_key: WebsocketKey,
            at: DateTime<Utc>,
        },
        /// The version string live sessions are told at initialize (and pushed as event 102).
        AppVersionChanged {
            version: String,
            at: DateTime<Utc>,
        },
        /// Replaces every variable's access strategy; names not listed are `auth_required`.
        VariableAccessSet {
            access: VariableAccessMap,
            at: DateTime<Utc>,
        },
        /// A master-key rotation sealed the app's secrets anew under the new key: the same values,
        /// new ciphertexts, so the old key can be dropped without losing them.
        SecretsResealed {
            resealed: ResealedSecrets,
            at: DateTime<Utc>,
        },
        /// A GDPR erasure ran for this app: counts only, never the customer's identifiers.
        CustomersForgotten {
            licenses_redacted: u64,
            ledger_rows_scanned: u64,
            ledger_rows_redacted: u64,
            /// App users whose account was erased with the customer (login, comment, verifier).
            #[serde(default)]
            users_erased: u64,
            reason: Option<String>,
            at: DateTime<Utc>,
        },
    }
}

/// Most product mappings one app may have.
pub const MAX_MAPPINGS: usize = 200;

/// Most webhooks one app may have.
pub const MAX_WEBHOOKS: usize = 5;
const MAX_WEBHOOK_URL_CHARS: usize = 2048;

/// The license and app-user events a webhook can subscribe to.
pub const WEBHOOK_EVENTS: [&str; 10] = [
    "license.validated",
    "license.created",
    "license.revoked",
    "license.activated",
    "license.hwid_bound",
    "license.hwid_reset",
    "license.deleted",
    "user.created",
    "user.deleted",
    "user.blacklisted",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub webhook_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub enabled: bool,
    /// The signing secret (`whsec_...`), sealed.
    pub secret: Sealed,
    pub created_at: DateTime<Utc>,
}

impl Webhook {
    /// Checks the URL length and the subscriptions (non-empty, known, no duplicates kept).
    /// Whether a URL scheme is acceptable is a deployment decision, made by the caller.
    fn validated(mut self) -> Result<Self, DomainError> {
        let invalid = |why: &str| Err(DomainError::InvalidWebhook(why.to_string()));
        if self.url.is_empty() || self.url.chars().count() > MAX_WEBHOOK_URL_CHARS {
            return invalid("url must be 1 to 2048 characters");
        }
        if self.events.is_empty() {
            return invalid("events must name at least one event");
        }
        if let Some(unknown) = self.events.iter().find(|e| !WEBHOOK_EVENTS.contains(&e.as_str())) {
            return Err(DomainError::InvalidWebhook(format!("unknown event '{unknown}'")));
        }
        let mut seen = std::collections::HashSet::new();
        self.events.retain(|e| seen.insert(e.clone()));
        Ok(self)
    }
}

/// Per-app switches and limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppSettings {
    /// Self-serve offline activation (`POST /auth/offline/activate`) is opt-in.
    pub offline_activation: bool,
    /// Most credits the app may burn in any rolling hour / day; `None` means no cap.
    pub hourly_burn_cap: Option<u64>,
    pub daily_burn_cap: Option<u64>,
    /// Commerce fulfilment: when set, buyers get no email (the merchant uses `license.created`).
    #[serde(default)]
    pub commerce_emails_disabled: bool,
    /// Shown in buyer emails (an address or URL).
    #[serde(default)]
    pub support_contact: Option<String>,
    /// Self-service portal limits and branding.
    #[serde(default)]
    pub portal: crate::portal::PortalPolicy,
    /// Most live sessions authorized at once for the app (Blazeauth status 602); `None`: no limit.
    #[serde(default)]
    pub live_session_quota: Option<u32>,
    /// End users cannot sign up over live sessions (the merchant still creates them).
    #[serde(default)]
    pub user_signup_closed: bool,
    /// A sign-up needs a license (status 204), and signing in needs a valid linked one (203).
    #[serde(default)]
    pub user_license_required: bool,
    /// Live packet 7 answers a single-use download URL (URL mode) instead of streaming the file
    /// over the session (stream mode, the default; websocket.md decision 1).
    #[serde(default)]
    pub file_download_url: bool,
}

/// Serializable so the in-memory model's snapshot carries every field without listing them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    pub app_id: AppId,
    pub account_id: AccountId,
    pub name: String,
    pub disabled: bool,
    pub secret: Sealed,
    /// Oldest first; `signer` names the one that signs.
    pub signing_keys: Vec<SigningKey>,
    /// The key that signs; `None` (apps and snapshots from before two-step rotation): the newest.
    #[serde(default)]
    pub signer: Option<String>,
    /// Keys withdrawn: still listed, never signing again.
    #[serde(default)]
    pub retired_keys: Vec<String>,
    /// When each key was added, by key id (absent for keys added before this was recorded).
    #[serde(default)]
    pub keys_added_at: Vec<(String, DateTime<Utc>)>,
    pub variables: Variables,
    /// Compiled when events are applied; shared, so cloning an app does not copy its lists.
    #[serde(with = "shared")]
    pub lists: Arc<AccessLists>,
    pub settings: AppSettings,
    pub webhooks: Vec<Webhook>,
    pub mappings: Vec<ProductMapping>,
    pub created_at: DateTime<Utc>,
    /// `None` for apps created before live sessions existed, until the key is rotated.
    pub websocket_key: Option<WebsocketKey>,
    /// Told to live sessions at initialize; empty until set.
    pub version: String,
    pub variable_access: VariableAccessMap,
}

impl App {
    /// Who may read the app variable `name` over a live session.
    pub fn variable_access(&self, name: &str) -> VariableAccess {
        self.variable_access.get(name)
    }

    pub fn webhook(&self, webhook_id: &str) -> Option<&Webhook> {
        self.webhooks.iter().find(|w| w.webhook_id == webhook_id)
    }

    /// The key that signs from now on.
    pub fn active_signing_key(&self) -> Option<&SigningKey> {
        let named = self.signer.as_ref().and_then(|id| self.signing_keys.iter().find(|k| &k.key_id == id));
        named.or(self.signing_keys.last())
    }

    /// Where a key stands: signing, verifying only (published, not signing) or retired.
    pub fn signing_key_state(&self, key_id: &str) -> SigningKeyState {
        if self.active_signing_key().is_some_and(|k| k.key_id == key_id) {
            SigningKeyState::Signing
        } else if self.retired_keys.iter().any(|k| k == key_id) {
            SigningKeyState::Retired
        } else {
            SigningKeyState::Verifying
        }
    }

    pub fn signing_key_added_at(&self, key_id: &str) -> Option<DateTime<Utc>> {
        self.keys_added_at.iter().find(|(id, _)| id == key_id).map(|(_, at)| *at)
    }
}

/// See [`App::signing_key_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKeyState {
    Signing,
    Verifying,
    Retired,
}

impl SigningKeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signing => "signing",
            Self::Verifying => "verifying",
            Self::Retired => "retired",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppState(pub Option<App>);

/// Serde for a shared value: written as the value, read back into a new `Arc`.
mod shared {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::sync::Arc;

    pub fn serialize<T: Serialize, S: Serializer>(value: &Arc<T>, serializer: S) -> Result<S::Ok, S::Error> {
        T::serialize(value, serializer)
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<T>, D::Error> {
        T::deserialize(deserializer).map(Arc::new)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum AppCommand {
    Create {
        app_id: AppId,
        account_id: AccountId,
        name: String,
        secret: Sealed,
        signing_key: SigningKey,
        /// Recorded right after the creation, in the same append.
        websocket_key: Option<WebsocketKey>,
    },
    Rename {
        name: String,
    },
    Disable,
    Enable,
    RotateSecret {
        secret: Sealed,
    },
    RotateSigningKey {
        signing_key: SigningKey,
    },
    /// Publishes a key that does not sign yet.
    AddSigningKey {
        signing_key: SigningKey,
    },
    /// Makes a published, unretired key the signer.
    PromoteSigningKey {
        key_id: String,
    },
    /// Withdraws a key that does not sign.
    RetireSigningKey {
        key_id: String,
    },
    SetVariables(Variables),
    /// Sets the lists given to exactly these entries, as deltas against the current lists.
    SetSecurityLists(SecurityListsUpdate),
    /// Adds one entry to one of the merchant's lists (already listed: nothing changes).
    AddListEntry {
        list: ListName,
        entry: String,
    },
    /// Removes one entry from a list, a self-ban entry included (not listed: nothing changes).
    RemoveListEntry {
        list: ListName,
        entry: String,
    },
    /// Adds self-ban entries to the blacklists; entries already self-banned change nothing.
    /// `max_entries` caps the self-ban entries of the app (the merchant's lists do not count).
    SelfBan {
        hwid: Option<String>,
        ip: Option<String>,
        max_entries: usize,
        /// Kept with the new entries (at most [`MAX_SELF_BAN_COMMENT_CHARS`], no control
        /// characters); an empty one is none.
        comment: Option<String>,
    },
    SetSettings(AppSettings),
    CreateWebhook(Webhook),
    /// Replaces the webhook with the same id (its secret and creation time are kept).
    UpdateWebhook(Webhook),
    DeleteWebhook {
        webhook_id: String,
    },
    SetMapping(ProductMapping),
    DeleteMapping {
        mapping_id: uuid::Uuid,
    },
    /// Replaces the WebSocket API key (the caller generates and seals it).
    SetWebsocketKey(WebsocketKey),
    /// Sets the version string: at most `max_chars` characters, no control characters,
    /// surrounding whitespace dropped; empty clears it.
    SetVersion {
        version: String,
        max_chars: usize,
    },
    SetVariableAccess(VariableAccessMap),
    /// Records secrets sealed anew by a master-key rotation (entries the app no longer has are dropped).
    Reseal(ResealedSecrets),
    RecordForget {
        licenses_redacted: u64,
        ledger_rows_scanned: u64,
        ledger_rows_redacted: u64,
        users_erased: u64,
        reason: Option<String>,
    },
}

impl Aggregate for AppState {
    type Event = AppEvent;
    type Command = AppCommand;

    fn evolve(self, event: &AppEvent) -> Self {
        use AppEvent as E;
        if let E::AppCreated { app_id, account_id, name, secret, signing_key, created_at } = event {
            return Self(Some(App {
                app_id: *app_id,
                account_id: *account_id,
                name: name.clone(),
                disabled: false,
                secret: secret.clone(),
                signing_keys: vec![signing_key.clone()],
                signer: Some(signing_key.key_id.clone()),
                retired_keys: Vec::new(),
                keys_added_at: vec![(signing_key.key_id.clone(), *created_at)],
                variables: Variables::default(),
                lists: Arc::default(),
                settings: AppSettings::default(),
                webhooks: Vec::new(),
                mappings: Vec::new(),
                created_at: *created_at,
                websocket_key: None,
                version: String::new(),
                variable_access: VariableAccessMap::default(),
            }));
        }
        let Some(mut app) = self.0 else { return self };
        match event {
            E::AppCreated { .. } => {}
            E::AppRenamed { name, .. } => app.name = name.clone(),
            E::AppDisabled { .. } => app.disabled = true,
            E::AppEnabled { .. } => app.disabled = false,
            E::AppSecretRotated { secret, .. } => app.secret = secret.clone(),
            E::SigningKeyRotated { signing_key, at } => {
                app.signing_keys.push(signing_key.clone());
                app.keys_added_at.push((signing_key.key_id.clone(), *at));
                app.signer = Some(signing_key.key_id.clone());
            }
            E::SigningKeyAdded { signing_key, at } => {
                // The signer stays as it is: pin it, so an app from before `signer` existed does
                // not switch to the newest key.
                app.signer = app.active_signing_key().map(|k| k.key_id.clone());
                app.signing_keys.push(signing_key.clone());
                app.keys_added_at.push((signing_key.key_id.clone(), *at));
            }
            E::SigningKeyPromoted { key_id, .. } => app.signer = Some(key_id.clone()),
            E::SigningKeyRetired { key_id, .. } => app.retired_keys.push(key_id.clone()),
            E::VariablesSet { variables, .. } => app.variables = variables.clone(),
            E::SecurityListsChanged { lists, .. } => Arc::make_mut(&mut app.lists).replace_merchant_lists(lists),
            E::SecurityListEdited { list, added, removed, .. } => {
                let target = Arc::make_mut(&mut app.lists).list_mut(*list);
                for entry in removed {
                    target.remove(entry);
                }
                for entry in added {
                    target.insert(entry.clone());
                }
            }
            E::SelfBanned { hwid, ip, comment, .. } => {
                let lists = Arc::make_mut(&mut app.lists);
                if let Some(hwid) = hwid {
                    lists.self_banned_hwids.insert(hwid.clone());
                }
                if let Some(ip) = ip {
                    lists.self_banned_ips.insert(ip.clone());
                }
                if let Some(comment) = comment {
                    let comments = &mut lists.self_ban_comments;
                    for (entry, by_entry) in [(hwid, &mut comments.hwid), (ip, &mut comments.ip)] {
                        if let Some(entry) = entry {
                            by_entry.insert(entry.clone(), comment.clone());
                        }
                    }
                }
            }
            E::SelfBanLifted { list, entry, .. } => {
                let lists = Arc::make_mut(&mut app.lists);
                match list {
                    ListName::HwidBlacklist => {
                        lists.self_ban_comments.hwid.remove(entry);
                        lists.self_banned_hwids.remove(entry)
                    }
                    ListName::IpBlacklist => {
                        lists.self_ban_comments.ip.remove(entry);
                        lists.self_banned_ips.remove(entry)
                    }
                    ListName::HwidWhitelist | ListName::IpWhitelist => false,
                };
            }
            E::SettingsChanged { settings, .. } => app.settings = settings.clone(),
            E::WebhookCreated { webhook, .. } => app.webhooks.push(webhook.clone()),
            E::WebhookUpdated { webhook, .. } => {
                if let Some(existing) = app.webhooks.iter_mut().find(|w| w.webhook_id == webhook.webhook_id) {
                    *existing = webhook.clone();
                }
            }
            E::WebhookDeleted { webhook_id, .. } => app.webhooks.retain(|w| &w.webhook_id != webhook_id),
            E::ProductMappingSet { mapping, .. } => {
                match app.mappings.iter_mut().find(|m| m.mapping_id == mapping.mapping_id) {
                    Some(existing) => *existing = mapping.clone(),
                    None => app.mappings.push(mapping.clone()),
                }
            }
            E::ProductMappingDeleted { mapping_id, .. } => app.mappings.retain(|m| &m.mapping_id != mapping_id),
            E::CustomersForgotten { .. } => {}
            E::WebsocketKeySet { websocket_key, .. } => app.websocket_key = Some(websocket_key.clone()),
            E::AppVersionChanged { version, .. } => app.version = version.clone(),
            E::VariableAccessSet { access, .. } => app.variable_access = access.clone(),
            E::SecretsResealed { resealed, .. } => resealed.apply_to(&mut app),
        }
        Self(Some(app))
    }

    fn decide(&self, command: AppCommand, now: DateTime<Utc>) -> Result<Vec<AppEvent>, DomainError> {
        use AppCommand as C;
        use AppEvent as E;
        let at = now;
        let (app, command) = match (&self.0, command) {
            (None, C::Create { app_id, account_id, name, secret, signing_key, websocket_key }) => {
                let name = check_name(name)?;
                let created = E::AppCreated { app_id, account_id, name, secret, signing_key, created_at: now };
                let state = Self::default().evolve(&created);
                let mut events = vec![created];
                if let Some(websocket_key) = websocket_key {
                    events.extend(state.decide(C::SetWebsocketKey(websocket_key), now)?);
                }
                return Ok(events);
            }
            (None, _) => return Err(DomainError::NotFound("app")),
            (Some(app), command) => (app, command),
        };
        let events = match command {
            C::Create { .. } => return Err(DomainError::AlreadyExists("app")),
            C::Rename { name } => {
                let name = check_name(name)?;
                if name == app.name {
                    vec![]
                } else {
                    vec![E::AppRenamed { name, at }]
                }
            }
            C::Disable if app.disabled => vec![],
            C::Disable => vec![E::AppDisabled { at }],
            C::Enable if !app.disabled => vec![],
            C::Enable => vec![E::AppEnabled { at }],
            C::RotateSecret { secret } => vec![E::AppSecretRotated { secret, at }],
            C::RotateSigningKey { signing_key } => {
                if app.signing_keys.iter().any(|k| k.key_id == signing_key.key_id) {
                    return Err(DomainError::AlreadyExists("signing key"));
                }
                vec![E::SigningKeyRotated { signing_key, at }]
            }
            C::AddSigningKey { signing_key } => {
                if app.signing_keys.iter().any(|k| k.key_id == signing_key.key_id) {
                    return Err(DomainError::AlreadyExists("signing key"));
                }
                vec![E::SigningKeyAdded { signing_key, at }]
            }
            C::PromoteSigningKey { key_id } => {
                if !app.signing_keys.iter().any(|k| k.key_id == key_id) {
                    return Err(DomainError::NotFound("signing key"));
                }
                match app.signing_key_state(&key_id) {
                    SigningKeyState::Signing => vec![],
                    SigningKeyState::Retired => return Err(DomainError::SigningKeyRetired),
                    SigningKeyState::Verifying => vec![E::SigningKeyPromoted { key_id, at }],
                }
            }
            C::RetireSigningKey { key_id } => {
                if !app.signing_keys.iter().any(|k| k.key_id == key_id) {
                    return Err(DomainError::NotFound("signing key"));
                }
                match app.signing_key_state(&key_id) {
                    SigningKeyState::Signing => return Err(DomainError::SigningKeyInUse),
                    SigningKeyState::Retired => vec![],
                    SigningKeyState::Verifying => vec![E::SigningKeyRetired { key_id, at }],
                }
            }
            C::SetVariables(variables) => vec![E::VariablesSet { variables, at }],
            C::SetSecurityLists(update) => set_lists(&app.lists, &update, at)?,
            C::AddListEntry { list, entry } => {
                let entry = list.checked_entry(&entry)?;
                let current = app.lists.list(list);
                if current.contains(&entry) {
                    vec![]
                } else if current.len() >= MAX_LIST_ENTRIES {
                    return Err(full(list));
                } else {
                    vec![E::SecurityListEdited { list, added: vec![entry], removed: vec![], at }]
                }
            }
            C::RemoveListEntry { list, entry } => {
                let entry = entry.trim().to_string();
                let listed = app.lists.list(list).contains(&entry);
                let self_banned = app.lists.self_banned(list).is_some_and(|banned| banned.contains(&entry));
                if !listed && !self_banned {
                    // Nothing to remove: a malformed entry is refused as on an add (an entry that is
                    // listed is removable whatever rules it was added under).
                    list.checked_entry(&entry)?;
                }
                let mut events = Vec::new();
                if listed {
                    events.push(E::SecurityListEdited { list, added: vec![], removed: vec![entry.clone()], at });
                }
                if self_banned {
                    events.push(E::SelfBanLifted { list, entry, at });
                }
                events
            }
            C::SelfBan { hwid, ip, max_entries, comment } => {
                if hwid.as_ref().is_some_and(|h| h.is_empty() || h.chars().count() > MAX_HWID_LEN) {
                    return Err(DomainError::InvalidHwid { max: MAX_HWID_LEN });
                }
                let comment = comment.filter(|c| !c.is_empty());
                if comment
                    .as_ref()
                    .is_some_and(|c| c.chars().count() > MAX_SELF_BAN_COMMENT_CHARS || c.chars().any(char::is_control))
                {
                    return Err(DomainError::InvalidSecurityList(format!(
                        "a self-ban comment has at most {MAX_SELF_BAN_COMMENT_CHARS} characters and no control character"
                    )));
                }
                let hwid = hwid.filter(|h| !app.lists.self_banned_hwids.contains(h));
                let ip = ip.filter(|i| !app.lists.self_banned_ips.contains(i));
                let new = usize::from(hwid.is_some()) + usize::from(ip.is_some());
                if new == 0 {
                    vec![]
                } else if app.lists.self_ban_count() + new > max_entries {
                    return Err(DomainError::SelfBanLimitReached);
                } else {
                    vec![E::SelfBanned { hwid, ip, comment, at }]
                }
            }
            C::SetSettings(settings) if settings == app.settings => vec![],
            C::SetSettings(settings) => vec![E::SettingsChanged { settings, at }],
            C::CreateWebhook(webhook) => {
                if app.webhooks.len() >= MAX_WEBHOOKS {
                    return Err(DomainError::InvalidWebhook(format!("an app has at most {MAX_WEBHOOKS} webhooks")));
                }
                if app.webhook(&webhook.webhook_id).is_some() {
                    return Err(DomainError::AlreadyExists("webhook"));
                }
                vec![E::WebhookCreated { webhook: webhook.validated()?, at }]
            }
            C::UpdateWebhook(update) => {
                let current = app.webhook(&update.webhook_id).ok_or(DomainError::NotFound("webhook"))?;
                let webhook = Webhook { secret: current.secret.clone(), created_at: current.created_at, ..update };
                let webhook = webhook.validated()?;
                if &webhook == current {
                    vec![]
                } else {
                    vec![E::WebhookUpdated { webhook, at }]
                }
            }
            C::DeleteWebhook { webhook_id } => {
                app.webhook(&webhook_id).ok_or(DomainError::NotFound("webhook"))?;
                vec![E::WebhookDeleted { webhook_id, at }]
            }
            C::SetMapping(mapping) => {
                let mapping = mapping.validated()?;
                let same_price = |m: &&ProductMapping| {
                    m.mapping_id != mapping.mapping_id
                        && m.provider == mapping.provider
                        && m.price_id == mapping.price_id
                };
                if app.mappings.iter().find(same_price).is_some() {
                    return Err(DomainError::MappingConflict(mapping.price_id));
                }
                match app.mappings.iter().find(|m| m.mapping_id == mapping.mapping_id) {
                    Some(existing) if existing == &mapping => vec![],
                    Some(_) => vec![E::ProductMappingSet { mapping, at }],
                    None if app.mappings.len() >= MAX_MAPPINGS => {
                        return Err(DomainError::InvalidMapping(format!("an app has at most {MAX_MAPPINGS} mappings")))
                    }
                    None => vec![E::ProductMappingSet { mapping, at }],
                }
            }
            C::DeleteMapping { mapping_id } => {
                if !app.mappings.iter().any(|m| m.mapping_id == mapping_id) {
                    return Err(DomainError::NotFound("mapping"));
                }
                vec![E::ProductMappingDeleted { mapping_id, at }]
            }
            C::SetWebsocketKey(websocket_key) => {
                if websocket_key.digest.is_empty() {
                    return Err(DomainError::InvalidWebsocketKey("the key has no lookup digest".into()));
                }
                if app.websocket_key.as_ref().is_some_and(|current| current.digest == websocket_key.digest) {
                    return Err(DomainError::AlreadyExists("WebSocket API key"));
                }
                vec![E::WebsocketKeySet { websocket_key, at }]
            }
            C::SetVersion { version, max_chars } => {
                let version = check_version(version, max_chars)?;
                if version == app.version {
                    vec![]
                } else {
                    vec![E::AppVersionChanged { version, at }]
                }
            }
            C::SetVariableAccess(access) if access == app.variable_access => vec![],
            C::SetVariableAccess(access) => vec![E::VariableAccessSet { access, at }],
            C::Reseal(resealed) => match resealed.kept_for(app) {
                resealed if resealed.is_empty() => vec![],
                resealed => vec![E::SecretsResealed { resealed, at }],
            },
            C::RecordForget { licenses_redacted, ledger_rows_scanned, ledger_rows_redacted, users_erased, reason } => {
                vec![E::CustomersForgotten {
                    licenses_redacted,
                    ledger_rows_scanned,
                    ledger_rows_redacted,
                    users_erased,
                    reason,
                    at,
                }]
            }
        };
        Ok(events)
    }
}

fn full(list: ListName) -> DomainError {
    DomainError::InvalidSecurityList(format!("{} holds more than {MAX_LIST_ENTRIES} entries", list.wire_name()))
}

/// A whole-list update turned into the deltas that make each list given equal to its entries,
/// decided against the lists as they are now (not as the caller last read them).
fn set_lists(
    current: &AccessLists,
    update: &SecurityListsUpdate,
    at: DateTime<Utc>,
) -> Result<Vec<AppEvent>, DomainError> {
    let mut events = Vec::new();
    for list in ListName::ALL {
        let Some(wanted) = update.get(list) else { continue };
        let now = current.list(list);
        // A list read back from GET shows the self-ban entries too: sending it back must not
        // copy them into the merchant's own list (they stay self-ban entries).
        let self_banned = |entry: &String| current.self_banned(list).is_some_and(|b| b.contains(entry));
        let mut seen = std::collections::HashSet::new();
        let mut wanted_entries = Vec::new();
        for entry in wanted {
            let entry = list.checked_entry(entry)?;
            if (now.contains(&entry) || !self_banned(&entry)) && seen.insert(entry.clone()) {
                wanted_entries.push(entry);
            }
        }
        if wanted_entries.len() > MAX_LIST_ENTRIES {
            return Err(full(list));
        }
        let removed: Vec<String> = now.entries().iter().filter(|e| !seen.contains(*e)).cloned().collect();
        let added: Vec<String> = wanted_entries.into_iter().filter(|e| !now.contains(e)).collect();
        if !added.is_empty() || !removed.is_empty() {
            events.push(AppEvent::SecurityListEdited { list, added, removed, at });
        }
    }
    Ok(events)
}

fn check_version(version: String, max_chars: usize) -> Result<String, DomainError> {
    // Checked before trimming: a line break at the end is refused, not silently dropped.
    if version.chars().any(char::is_control) {
        return Err(DomainError::InvalidVersion("control characters are not allowed".into()));
    }
    let version = version.trim().to_string();
    if version.chars().count() > max_chars {
        return Err(DomainError::InvalidVersion(format!("at most {max_chars} characters")));
    }
    Ok(version)
}

fn check_name(name: String) -> Result<String, DomainError> {
    let name = name.trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_APP_NAME_CHARS {
        Err(DomainError::InvalidName)
    } else {
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn key(id: &str) -> SigningKey {
        SigningKey { key_id: id.into(), public_key: "pk".into(), private_key: Sealed("sealed".into()) }
    }

    fn create(name: &str) -> AppCommand {
        AppCommand::Create {
            app_id: AppId(uuid::Uuid::nil()),
            account_id: AccountId(uuid::Uuid::nil()),
            name: name.into(),
            secret: Sealed("s".into()),
            signing_key: key("k1"),
            websocket_key: None,
        }
    }

    fn history() -> Vec<AppEvent> {
        AppState::default().decide(create("My App"), now()).unwrap()
    }

    #[test]
    fn create_trims_and_checks_the_name() {
        assert_eq!(AppState::default().decide(create("   "), now()), Err(DomainError::InvalidName));
        let events = AppState::default().decide(create("  Tool  "), now()).unwrap();
        assert!(matches!(&events[..], [AppEvent::AppCreated { name, .. }] if name == "Tool"));
        assert_eq!(AppState::fold(&events).decide(create("x"), now()), Err(DomainError::AlreadyExists("app")));
    }

    #[test]
    fn rotated_signing_keys_keep_the_previous_one() {
        let mut events = history();
        let state = AppState::fold(&events);
        events.extend(state.decide(AppCommand::RotateSigningKey { signing_key: key("k2") }, now()).unwrap());
        let app = AppState::fold(&events).0.unwrap();
        let ids: Vec<_> = app.signing_keys.iter().map(|k| k.key_id.as_str()).collect();
        assert_eq!(ids, ["k1", "k2"]);
        let again = AppState::fold(&events).decide(AppCommand::RotateSigningKey { signing_key: key("k2") }, now());
        assert_eq!(again, Err(DomainError::AlreadyExists("signing key")));
    }

    #[test]
    fn a_two_step_rotation_publishes_first_then_signs_then_retires_the_old_key() {
        let mut events = history();
        let step = |events: &mut Vec<AppEvent>, command: AppCommand| {
            let decided = AppState::fold(events.iter()).decide(command, now());
            decided.map(|new| events.extend(new))
        };
        step(&mut events, AppCommand::AddSigningKey { signing_key: key("k2") }).unwrap();
        let app = AppState::fold(&events).0.unwrap();
        assert_eq!(app.active_signing_key().map(|k| k.key_id.as_str()), Some("k1"), "added, not signing");
        assert_eq!(app.signing_key_state("k2"), SigningKeyState::Verifying);
        let retire = |id: &str| AppCommand::RetireSigningKey { key_id: id.into() };
        let promote = |id: &str| AppCommand::PromoteSigningKey { key_id: id.into() };
        assert_eq!(step(&mut events, retire("k1")), Err(DomainError::SigningKeyInUse));
        assert_eq!(step(&mut events, promote("nope")), Err(DomainError::NotFound("signing key")));
        step(&mut events, promote("k2")).unwrap();
        let before = events.len();
        step(&mut events, promote("k2")).unwrap();
        assert_eq!(events.len(), before, "promoting the signer again changes nothing");
        step(&mut events, retire("k1")).unwrap();
        let app = AppState::fold(&events).0.unwrap();
        assert_eq!(app.active_signing_key().map(|k| k.key_id.as_str()), Some("k2"));
        assert_eq!(app.signing_key_state("k1"), SigningKeyState::Retired);
        assert_eq!(step(&mut events, promote("k1")), Err(DomainError::SigningKeyRetired));
        assert_eq!(app.signing_key_added_at("k2"), Some(now()));
    }

    #[test]
    fn invalid_security_lists_change_nothing() {
        let state = AppState::fold(&history());
        let bad = SecurityListsUpdate { ip_blacklist: Some(vec!["nope".into()]), ..Default::default() };
        assert!(matches!(
            state.decide(AppCommand::SetSecurityLists(bad), now()),
            Err(DomainError::InvalidSecurityList(_))
        ));
    }

    #[test]
    fn self_bans_add_each_entry_once_up_to_their_own_cap() {
        let mut events = history();
        let ban = |hwid: &str| AppCommand::SelfBan {
            hwid: Some(hwid.into()),
            ip: Some("203.0.113.9".into()),
            max_entries: 3,
            comment: None,
        };
        events.extend(AppState::fold(&events).decide(ban("hw"), now()).unwrap());
        let lists = AppState::fold(&events).0.unwrap().lists;
        assert_eq!((lists.self_banned_hwids.len(), lists.self_banned_ips.len()), (1, 1));
        assert!(!lists.allows(None, "hw"));
        assert_eq!(AppState::fold(&events).decide(ban("hw"), now()), Ok(vec![]));
        events.extend(AppState::fold(&events).decide(ban("hw2"), now()).unwrap());
        assert_eq!(AppState::fold(&events).decide(ban("hw3"), now()), Err(DomainError::SelfBanLimitReached));
        let own = AppCommand::AddListEntry { list: ListName::HwidBlacklist, entry: "merchant".into() };
        assert_eq!(AppState::fold(&events).decide(own, now()).unwrap().len(), 1, "the merchant's lists are apart");
    }

    #[test]
    fn a_self_ban_keeps_its_comment_until_lifted_and_old_events_load_without_one() {
        let old = serde_json::json!({"type": "SelfBanned", "hwid": "old", "at": "2026-01-01T00:00:00Z"});
        let old: AppEvent = serde_json::from_value(old).unwrap();
        assert!(matches!(&old, AppEvent::SelfBanned { comment: None, .. }));
        let mut events = history();
        events.push(old);
        let ban = |comment: &str| AppCommand::SelfBan {
            hwid: Some("hw".into()),
            ip: Some("203.0.113.9".into()),
            max_entries: 10,
            comment: Some(comment.into()),
        };
        for bad in ["x".repeat(MAX_SELF_BAN_COMMENT_CHARS + 1), "nul\u{0}".into(), "line\nbreak".into()] {
            assert!(matches!(
                AppState::fold(&events).decide(ban(&bad), now()),
                Err(DomainError::InvalidSecurityList(_))
            ));
        }
        let banned = AppState::fold(&events).decide(ban("debugger"), now()).unwrap();
        let written = serde_json::to_value(&banned[0]).unwrap();
        assert_eq!(written["comment"], "debugger", "the event carries the comment");
        events.extend(banned);
        let lists = AppState::fold(&events).0.unwrap().lists;
        assert_eq!(lists.self_ban_comments.hwid.get("hw").map(String::as_str), Some("debugger"));
        assert_eq!(lists.self_ban_comments.ip.get("203.0.113.9").map(String::as_str), Some("debugger"));
        assert!(!lists.self_ban_comments.hwid.contains_key("old"));
        let lift = AppCommand::RemoveListEntry { list: ListName::HwidBlacklist, entry: "hw".into() };
        events.extend(AppState::fold(&events).decide(lift, now()).unwrap());
        let lists = AppState::fold(&events).0.unwrap().lists;
        assert!(lists.self_ban_comments.hwid.is_empty());
        assert_eq!(lists.self_ban_comments.ip.len(), 1, "the IP entry keeps its own");
    }

    #[test]
    fn a_whole_list_update_is_decided_as_deltas_against_the_current_lists() {
        let mut events = history();
        let add = |entry: &str| AppCommand::AddListEntry { list: ListName::HwidBlacklist, entry: entry.into() };
        events.extend(AppState::fold(&events).decide(add("a"), now()).unwrap());
        events.extend(AppState::fold(&events).decide(add("b"), now()).unwrap());
        let ban = AppCommand::SelfBan { hwid: Some("tampered".into()), ip: None, max_entries: 10, comment: None };
        events.extend(AppState::fold(&events).decide(ban, now()).unwrap());
        let update = SecurityListsUpdate { hwid_blacklist: Some(vec!["b".into(), "c".into()]), ..Default::default() };
        let edit = AppState::fold(&events).decide(AppCommand::SetSecurityLists(update), now()).unwrap();
        assert!(matches!(&edit[..], [AppEvent::SecurityListEdited { added, removed, .. }]
            if added == &["c".to_string()] && removed == &["a".to_string()]));
        events.extend(edit);
        let shown = AppState::fold(&events).0.unwrap().lists.effective();
        assert_eq!(shown.hwid_blacklist, ["b", "c", "tampered"], "the self-ban survives the whole-list update");
        let round_trip = SecurityListsUpdate { hwid_blacklist: Some(shown.hwid_blacklist), ..Default::default() };
        let unchanged = AppState::fold(&events).decide(AppCommand::SetSecurityLists(round_trip), now());
        assert_eq!(unchanged, Ok(vec![]), "sending back what GET showed copies no self-ban into the merchant's list");
        let lift = AppCommand::RemoveListEntry { list: ListName::HwidBlacklist, entry: "tampered".into() };
        events.extend(AppState::fold(&events).decide(lift, now()).unwrap());
        assert!(AppState::fold(&events).0.unwrap().lists.allows(None, "tampered"));
    }

    #[test]
    fn old_whole_list_events_still_replay() {
        let old = serde_json::json!({ "type": "SecurityListsChanged", "lists": { "hwidBlacklist": ["x"],
            "hwidWhitelist": [], "ipBlacklist": ["10.0.0.0/8"], "ipWhitelist": [] }, "at": "2026-01-01T00:00:00Z" });
        let mut events = history();
        events.push(serde_json::from_value(old).unwrap());
        let app = AppState::fold(&events).0.unwrap();
        assert!(!app.lists.allows(Some("10.1.2.3".parse().unwrap()), "y"));
        assert!(!app.lists.allows(None, "x"));
    }

    fn webhook(id: &str, events: &[&str]) -> Webhook {
        Webhook {
            webhook_id: id.into(),
            url: "https://example.com/hook".into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            enabled: true,
            secret: Sealed("s".into()),
            created_at: now(),
        }
    }

    #[test]
    fn resealed_secrets_replace_only_what_the_app_still_holds() {
        let mut events = history();
        let state = AppState::fold(&events);
        events.extend(state.decide(AppCommand::CreateWebhook(webhook("wh_1", &["license.created"])), now()).unwrap());
        let state = AppState::fold(&events);
        let sealed = |text: &str| Sealed(text.into());
        let resealed = ResealedSecrets {
            secret: Some(sealed("new secret")),
            signing_keys: [("k1".to_string(), sealed("new k1")), ("gone".to_string(), sealed("x"))].into(),
            websocket_key: Some(sealed("no key to reseal")),
            webhooks: [("wh_1".to_string(), sealed("new hook")), ("wh_gone".to_string(), sealed("x"))].into(),
        };
        let decided = state.decide(AppCommand::Reseal(resealed), now()).unwrap();
        let [AppEvent::SecretsResealed { resealed, .. }] = &decided[..] else { panic!("{decided:?}") };
        assert_eq!(resealed.signing_keys.keys().collect::<Vec<_>>(), ["k1"], "a key the app lacks is dropped");
        assert_eq!(resealed.webhooks.keys().collect::<Vec<_>>(), ["wh_1"], "a webhook it lacks too");
        assert_eq!(resealed.websocket_key, None, "the app has no WebSocket key");
        let app = state.evolve(&decided[0]).0.unwrap();
        assert_eq!(app.secret, sealed("new secret"));
        assert_eq!(app.signing_keys[0].private_key, sealed("new k1"));
        assert_eq!(app.webhooks[0].secret, sealed("new hook"));
        let nothing = ResealedSecrets { webhooks: [("wh_gone".to_string(), sealed("x"))].into(), ..Default::default() };
        assert_eq!(
            AppState(Some(app)).decide(AppCommand::Reseal(nothing), now()).unwrap(),
            vec![],
            "nothing to record"
        );
    }

    #[test]
    fn an_app_has_at_most_five_webhooks_with_known_events() {
        let mut events = history();
        for i in 0..MAX_WEBHOOKS {
            let create = AppCommand::CreateWebhook(webhook(&format!("wh_{i}"), &["license.created"]));
            events.extend(AppState::fold(&events).decide(create, now()).unwrap());
        }
        let sixth = AppCommand::CreateWebhook(webhook("wh_x", &["license.created"]));
        assert!(matches!(AppState::fold(&events).decide(sixth, now()), Err(DomainError::InvalidWebhook(_))));
        let state = AppState::fold(&history());
        for bad in [webhook("a", &[]), webhook("b", &["license.exploded"])] {
            assert!(matches!(state.decide(AppCommand::CreateWebhook(bad), now()), Err(DomainError::InvalidWebhook(_))));
        }
    }

    #[test]
    fn updating_a_webhook_keeps_its_secret_and_deleting_removes_it() {
        let mut events = history();
        events.extend(
            AppState::fold(&events)
                .decide(AppCommand::CreateWebhook(webhook("wh", &["license.created"])), now())
                .unwrap(),
        );
        let mut update = webhook("wh", &["license.revoked"]);
        update.secret = Sealed("ignored".into());
        events.extend(AppState::fold(&events).decide(AppCommand::UpdateWebhook(update), now()).unwrap());
        let app = AppState::fold(&events).0.unwrap();
        assert_eq!(
            (app.webhooks[0].events.clone(), app.webhooks[0].secret.clone()),
            (vec!["license.revoked".to_string()], Sealed("s".into()))
        );
        events.extend(
            AppState::fold(&events).decide(AppCommand::DeleteWebhook { webhook_id: "wh".into() }, now()).unwrap(),
        );
        assert!(AppState::fold(&events).0.unwrap().webhooks.is_empty());
        let missing = AppCommand::DeleteWebhook { webhook_id: "wh".into() };
        assert_eq!(AppState::fold(&events).decide(missing, now()), Err(DomainError::NotFound("webhook")));
    }

    #[test]
    fn disable_and_enable_toggle_once() {
        let mut events = history();
        events.extend(AppState::fold(&events).decide(AppCommand::Disable, now()).unwrap());
        assert!(AppState::fold(&events).0.unwrap().disabled);
        assert_eq!(AppState::fold(&events).decide(AppCommand::Disable, now()), Ok(vec![]));
        events.extend(AppState::fold(&events).decide(AppCommand::Enable, now()).unwrap());
        assert!(!AppState::fold(&events).0.unwrap().disabled);
    }

    fn ws_key(digest: &str) -> WebsocketKey {
        WebsocketKey { sealed: Sealed("sealed".into()), digest: digest.into() }
    }

    #[test]
    fn a_new_websocket_key_replaces_the_previous_one() {
        let mut events = history();
        assert_eq!(AppState::fold(&events).0.unwrap().websocket_key, None, "older apps have none");
        events.extend(AppState::fold(&events).decide(AppCommand::SetWebsocketKey(ws_key("d1")), now()).unwrap());
        events.extend(AppState::fold(&events).decide(AppCommand::SetWebsocketKey(ws_key("d2")), now()).unwrap());
        assert_eq!(AppState::fold(&events).0.unwrap().websocket_key, Some(ws_key("d2")));
        let same = AppState::fold(&events).decide(AppCommand::SetWebsocketKey(ws_key("d2")), now());
        assert_eq!(same, Err(DomainError::AlreadyExists("WebSocket API key")));
        let blank = AppState::fold(&events).decide(AppCommand::SetWebsocketKey(ws_key("")), now());
        assert!(matches!(blank, Err(DomainError::InvalidWebsocketKey(_))));
        assert!(!format!("{:?}", ws_key("d1")).contains("d1"), "Debug shows neither half");
    }

    #[test]
    fn websocket_keys_have_the_blazeauth_shape() {
        assert!(is_websocket_key_shaped("BA0123456789ABCDEFGHI"));
        for bad in ["BA0123456789ABCDEFGH", "BA0123456789ABCDEFGHIJ", "XY0123456789ABCDEFGHI", "BA0123456789abcdefghi"]
        {
            assert!(!is_websocket_key_shaped(bad), "{bad}");
        }
    }

    #[test]
    fn the_version_is_trimmed_limited_and_free_of_control_characters() {
        let mut events = history();
        let set = |version: &str| AppCommand::SetVersion { version: version.into(), max_chars: 8 };
        assert_eq!(AppState::fold(&events).0.unwrap().version, "", "empty until set");
        events.extend(AppState::fold(&events).decide(set(" 1.2.3 "), now()).unwrap());
        assert_eq!(AppState::fold(&events).0.unwrap().version, "1.2.3");
        assert_eq!(AppState::fold(&events).decide(set("1.2.3"), now()), Ok(vec![]), "unchanged: no event");
        for bad in ["123456789", "1.2\u{7}", "1\n2", "1.0\n"] {
            assert!(matches!(AppState::fold(&events).decide(set(bad), now()), Err(DomainError::InvalidVersion(_))));
        }
        events.extend(AppState::fold(&events).decide(set(""), now()).unwrap());
        assert_eq!(AppState::fold(&events).0.unwrap().version, "", "an empty version clears it");
    }

    #[test]
    fn variable_access_is_replaced_as_a_whole() {
        let mut events = history();
        assert_eq!(AppState::fold(&events).0.unwrap().variable_access("motd"), VariableAccess::AuthRequired);
        let open = |names: &[&str]| {
            let entries = names.iter().map(|n| (n.to_string(), VariableAccess::AuthNotRequired)).collect();
            AppCommand::SetVariableAccess(VariableAccessMap::new(entries).unwrap())
        };
        events.extend(AppState::fold(&events).decide(open(&["motd"]), now()).unwrap());
        let app = AppState::fold(&events).0.unwrap();
        assert_eq!(app.variable_access("motd"), VariableAccess::AuthNotRequired);
        assert_eq!(app.variable_access("other"), VariableAccess::AuthRequired);
        assert_eq!(AppState::fold(&events).decide(open(&["motd"]), now()), Ok(vec![]));
        events.extend(AppState::fold(&events).decide(open(&[]), now()).unwrap());
        assert_eq!(AppState::fold(&events).0.unwrap().variable_access("motd"), VariableAccess::AuthRequired);
    }

    #[test]
    fn settings_written_before_the_session_quota_still_replay() {
        let old = serde_json::json!({ "type": "SettingsChanged", "settings": { "offlineActivation": true,
            "hourlyBurnCap": null, "dailyBurnCap": null }, "at": "2026-01-01T00:00:00Z" });
        let mut events = history();
        events.push(serde_json::from_value(old).unwrap());
        let app = AppState::fold(&events).0.unwrap();
        assert_eq!((app.settings.offline_activation, app.settings.live_session_quota), (true, None));
    }

    #[test]
    fn commands_on_a_missing_app_are_refused() {
        assert_eq!(AppState::default().decide(AppCommand::Disable, now()), Err(DomainError::NotFound("app")));
    }

    #[test]
    fn removing_a_malformed_entry_that_is_not_listed_is_refused() {
        let state = AppState::fold(&history());
        let garbage = AppCommand::RemoveListEntry { list: ListName::IpBlacklist, entry: "not an address".into() };
        assert!(matches!(state.decide(garbage, now()), Err(DomainError::InvalidSecurityList(_))));
        let unlisted = AppCommand::RemoveListEntry { list: ListName::IpBlacklist, entry: "192.0.2.7".into() };
        assert_eq!(state.decide(unlisted, now()).unwrap(), vec![]);
    }
}
