//! Apps' WebSocket API keys: generated here, shown once, stored sealed beside a keyed digest
//! that the live-session server finds the app by.

use crate::{Actor, CommandError, Commands, Entropy, Executed};
use licensd_domain::app::{
    AppCommand, AppEvent, WebsocketKey, WEBSOCKET_KEY_ALPHABET, WEBSOCKET_KEY_LEN, WEBSOCKET_KEY_PREFIX,
};
use licensd_domain::{AccountId, AppId};

/// The label the digest key is derived under (changing it orphans every stored digest).
const DIGEST_LABEL: &str = "websocket-api-key";

pub(crate) fn sealing_purpose(app_id: AppId) -> String {
    format!("websocket-key:{app_id}")
}

/// `BA` + 19 symbols of `[0-9A-Z]` drawn without bias from `entropy` (bytes ≥ 252 are skipped,
/// so each of the 36 symbols is equally likely: about 98 bits in all).
fn generate(entropy: &Entropy) -> String {
    const ALPHABET: u16 = WEBSOCKET_KEY_ALPHABET.len() as u16;
    const UNBIASED_BELOW: u16 = 256 - 256 % ALPHABET;
    let mut key = String::from(WEBSOCKET_KEY_PREFIX);
    for round in 0.. {
        for byte in entropy.bytes::<64>(&format!("websocket-key:{round}")) {
            if key.len() == WEBSOCKET_KEY_LEN {
                return key;
            }
            if u16::from(byte) < UNBIASED_BELOW {
                key.push(char::from(WEBSOCKET_KEY_ALPHABET[usize::from(u16::from(byte) % ALPHABET)]));
            }
        }
    }
    key
}

impl Commands {
    /// The keyed digest a WebSocket API key is stored and found under (lowercase hex).
    pub fn websocket_key_digest(&self, key: &str) -> String {
        hex::encode(self.master_key().keyed_digest(DIGEST_LABEL, key))
    }

    /// [`Self::websocket_key_digest`] as a function that keeps its derived key, for the read
    /// model's lookups (`HotModel::set_websocket_key_digest`).
    pub fn websocket_key_digester(&self) -> impl Fn(&str) -> String + Send + Sync + 'static {
        let key = self.master_key().derive(DIGEST_LABEL);
        move |presented: &str| hex::encode(crate::crypto::keyed_digest(&key, presented))
    }

    /// A fresh key for `app_id`: in clear (to show once) and as stored.
    pub fn new_websocket_key(&self, app_id: AppId) -> (String, WebsocketKey) {
        let entropy = Entropy::next_step();
        let key = generate(&entropy);
        let sealed =
            self.master_key().seal_with_nonce(key.as_bytes(), &sealing_purpose(app_id), entropy.bytes("nonce"));
        let digest = self.websocket_key_digest(&key);
        (key, WebsocketKey { sealed, digest })
    }

    /// Replaces the app's WebSocket API key; the old one stops working as soon as the read
    /// model applies the change. Returns the new key in clear (shown once).
    pub async fn rotate_websocket_key(
        &self,
        account_id: AccountId,
        app_id: AppId,
        actor: &Actor,
    ) -> Result<(String, Executed<AppEvent>), CommandError> {
        let (key, stored) = self.new_websocket_key(app_id);
        let executed = self.app_command(account_id, app_id, AppCommand::SetWebsocketKey(stored), actor).await?;
        Ok((key, executed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_blazeauth_shape_and_differ() {
        let keys: std::collections::HashSet<String> = (0..200).map(|_| generate(&Entropy::os())).collect();
        assert_eq!(keys.len(), 200);
        assert!(keys.iter().all(|k| licensd_domain::app::is_websocket_key_shaped(k)), "{keys:?}");
    }
}
