//! Opened app secrets and signing keys, cached by their sealed form: opening costs a decryption
//! and a key expansion, far too much to repeat per request, and a rotation seals anew, so a
//! stale entry is simply never asked for again.

use super::AuthError;
use licensd_commands::{CommandError, Commands};
use licensd_domain::app::App;
use licensd_domain::Sealed;
use std::sync::Arc;

pub struct Keyring {
    commands: Commands,
    secrets: moka::sync::Cache<String, Arc<String>>,
    signers: moka::sync::Cache<String, Arc<ed25519_dalek::SigningKey>>,
}

const CACHED: u64 = 100_000;

impl Keyring {
    pub fn new(commands: Commands) -> Self {
        Self { commands, secrets: moka::sync::Cache::new(CACHED), signers: moka::sync::Cache::new(CACHED) }
    }

    /// Compares a presented app secret with the app's, in constant time.
    pub fn secret_matches(&self, app: &App, presented: &str) -> Result<bool, AuthError> {
        use subtle::ConstantTimeEq;
        let secret = opened(&self.secrets, &app.secret, || self.commands.open_app_secret(app.app_id, &app.secret))?;
        Ok(secret.as_bytes().ct_eq(presented.as_bytes()).into())
    }

    /// The app's active signing key and its id.
    pub fn signer(&self, app: &App) -> Result<(Arc<ed25519_dalek::SigningKey>, String), AuthError> {
        let key = app.active_signing_key().ok_or(AuthError::SystemError)?;
        let signer = opened(&self.signers, &key.private_key, || self.commands.open_signing_key(app.app_id, key))?;
        Ok((signer, key.key_id.clone()))
    }
}

/// The cached opening of `sealed`, opening (and caching) it on a miss.
fn opened<T: Send + Sync + 'static>(
    cache: &moka::sync::Cache<String, Arc<T>>,
    sealed: &Sealed,
    open: impl FnOnce() -> Result<T, CommandError>,
) -> Result<Arc<T>, AuthError> {
    if let Some(value) = cache.get(&sealed.0) {
        return Ok(value);
    }
    let value = Arc::new(open().map_err(|e| {
        tracing::error!(error = %e, "cannot open a sealed secret");
        AuthError::SystemError
    })?);
    cache.insert(sealed.0.clone(), value.clone());
    Ok(value)
}
