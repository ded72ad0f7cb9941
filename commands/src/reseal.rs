//! Re-sealing the secrets that live inside events (app secrets, signing keys, WebSocket keys,
//! webhook secrets, commerce connections) under the ring's sealing key, for a master-key
//! rotation. Events are immutable, so each aggregate records the new ciphertexts in an event
//! of its own (`SecretsResealed`, `CommerceResealed`); folding it replaces the old ones in the
//! model and the read models, and from then on nothing the server uses needs the older keys.
//!
//! Each stream is re-sealed on its own, and only values not yet under the sealing key are
//! touched: a run cut short is finished by running it again.

use crate::commerce::{connection_key_purpose, connection_secret_purpose};
use crate::handlers::{app_secret_purpose, signing_key_purpose, webhook_secret_purpose};
use crate::websocket_key::sealing_purpose as websocket_key_purpose;
use crate::{Actor, CommandError, Commands, MasterKey};
use licensd_domain::account::{AccountCommand, AccountState};
use licensd_domain::app::{AppCommand, AppState, ResealedSecrets};
use licensd_domain::{AccountId, AppId, Sealed, StreamCategory};

/// What a re-sealing pass changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resealed {
    /// Streams that received a re-sealing event.
    pub streams: u64,
    /// Sealed values moved to the sealing key.
    pub values: u64,
}

impl Commands {
    /// The ids of every stream of `category` in the log.
    async fn stream_ids(&self, category: StreamCategory) -> Result<Vec<String>, CommandError> {
        let like = format!("{}-%", category.prefix());
        let sql = "SELECT DISTINCT stream_id FROM events WHERE stream_id LIKE $1 ORDER BY stream_id";
        Ok(self.store().query_text(sql, &[like.into()]).await?.into_iter().flatten().collect())
    }

    /// `sealed` opened and sealed again under the sealing key, if an older key sealed it.
    fn sealed_anew(&self, sealed: &Sealed, purpose: &str) -> Result<Option<Sealed>, CommandError> {
        let key = self.master_key();
        if MasterKey::sealed_key_id(&sealed.0) == Some(key.key_id()) {
            return Ok(None);
        }
        let plain = key.open(sealed, purpose).map_err(|_| {
            CommandError::Crypto(format!("{purpose}: the value opens under no key of the ring, so it cannot move"))
        })?;
        Ok(Some(key.seal(&plain, purpose)))
    }

    /// Moves every app's and every account's sealed values to the sealing key, calling
    /// `progress` after each stream that changed.
    pub async fn reseal_event_secrets(&self, mut progress: impl FnMut(&Resealed)) -> Result<Resealed, CommandError> {
        let mut total = Resealed::default();
        for stream in self.stream_ids(StreamCategory::App).await? {
            let Some(app_id) = StreamCategory::parse(&stream).and_then(|(_, id)| id.parse::<AppId>().ok()) else {
                continue;
            };
            let moved = self.reseal_app(app_id).await?;
            if moved > 0 {
                total.streams += 1;
                total.values += moved;
                progress(&total);
            }
        }
        for stream in self.stream_ids(StreamCategory::Account).await? {
            let Some(account_id) = StreamCategory::parse(&stream).and_then(|(_, id)| id.parse::<AccountId>().ok())
            else {
                continue;
            };
            let moved = self.reseal_connections(account_id).await?;
            if moved > 0 {
                total.streams += 1;
                total.values += moved;
                progress(&total);
            }
        }
        Ok(total)
    }

    /// Re-seals one app's secret, signing keys, WebSocket key and webhook secrets; returns how
    /// many values moved (0: all were under the sealing key already).
    pub async fn reseal_app(&self, app_id: AppId) -> Result<u64, CommandError> {
        let (state, _) = self.load::<AppState>(&StreamCategory::App.stream_id(app_id)).await?;
        let Some(app) = state.0 else { return Ok(0) };
        let mut resealed = ResealedSecrets {
            secret: self.sealed_anew(&app.secret, &app_secret_purpose(app_id))?,
            ..Default::default()
        };
        for key in &app.signing_keys {
            if let Some(sealed) = self.sealed_anew(&key.private_key, &signing_key_purpose(app_id, &key.key_id))? {
                resealed.signing_keys.insert(key.key_id.clone(), sealed);
            }
        }
        if let Some(key) = &app.websocket_key {
            resealed.websocket_key = self.sealed_anew(&key.sealed, &websocket_key_purpose(app_id))?;
        }
        for webhook in &app.webhooks {
            if let Some(sealed) = self.sealed_anew(&webhook.secret, &webhook_secret_purpose(&webhook.webhook_id))? {
                resealed.webhooks.insert(webhook.webhook_id.clone(), sealed);
            }
        }
        let moved = u64::from(resealed.secret.is_some())
            + resealed.signing_keys.len() as u64
            + u64::from(resealed.websocket_key.is_some())
            + resealed.webhooks.len() as u64;
        if moved > 0 {
            self.app_command(app.account_id, app_id, AppCommand::Reseal(resealed), &Actor::Operator).await?;
        }
        Ok(moved)
    }

    /// Re-seals the signing secret and API key of each of the account's commerce connections.
    pub async fn reseal_connections(&self, account_id: AccountId) -> Result<u64, CommandError> {
        let (state, _) = self.load::<AccountState>(&StreamCategory::Account.stream_id(account_id)).await?;
        let Some(account) = state.0 else { return Ok(0) };
        let mut moved = 0;
        for connection in account.connections {
            let id = connection.connection_id;
            let secret = self.sealed_anew(&connection.signing_secret, &connection_secret_purpose(id))?;
            let api_key = match &connection.api_key {
                Some(key) => self.sealed_anew(key, &connection_key_purpose(id))?,
                None => None,
            };
            let count = u64::from(secret.is_some()) + u64::from(api_key.is_some());
            if count == 0 {
                continue;
            }
            let mut anew = connection.clone();
            anew.signing_secret = secret.unwrap_or(connection.signing_secret);
            anew.api_key = api_key.or(connection.api_key);
            self.account_command(account_id, AccountCommand::Reseal(anew), &Actor::Operator).await?;
            moved += count;
        }
        Ok(moved)
    }
}
