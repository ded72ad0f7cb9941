//! The deployment's master key: seals secrets and personal data with XChaCha20-Poly1305.
//! A sealed value is `v1.` + base64(nonce ‖ ciphertext) when sealed under the original key (key
//! id 0), `v2.<id>.` + base64(nonce ‖ ciphertext) under a key a rotation introduced; its purpose
//! string is bound in as associated data, so a ciphertext cannot be moved to another field or
//! subject.
//!
//! A `MasterKey` is a keyring (see [`crate::keyring`]): the newest key seals, every older key
//! only opens, and the keys derived for digests come from key 0 forever, because those digests
//! live in stream ids and rows that a rotation cannot rewrite. The keys that sign short-lived
//! tokens (SDK sessions, dashboard and portal sessions, CSRF) come from key 0 too, until a
//! rotation with `--sign-everyone-out` moves them to its new key (every token issued before then
//! stops verifying).

use crate::CommandError;
use base64::{engine::general_purpose::STANDARD, Engine};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use licensd_domain::Sealed;
use rand::RngCore;
use std::path::Path;

/// Values sealed under key 0 (every value sealed before rotations existed).
const PREFIX_KEY0: &str = "v1.";
/// Values sealed under a later key: `v2.<key id>.`.
const PREFIX_KEYED: &str = "v2.";
pub(crate) const NONCE_LEN: usize = 24;

/// One key of the ring and its id.
#[derive(Clone)]
pub(crate) struct RingKey {
    pub(crate) id: u32,
    pub(crate) raw: [u8; 32],
    cipher: XChaCha20Poly1305,
}

impl RingKey {
    pub(crate) fn new(id: u32, raw: [u8; 32]) -> Self {
        Self { id, raw, cipher: XChaCha20Poly1305::new(&raw.into()) }
    }
}

#[derive(Clone)]
pub struct MasterKey {
    /// Seals; opens what it sealed.
    current: RingKey,
    /// Open only: values sealed before the last rotation (inside immutable events).
    older: std::sync::Arc<Vec<RingKey>>,
    /// Key 0's bytes: the root every derived key (digests, entropy) comes from.
    root: [u8; 32],
    /// The root of the keys that sign tokens ([`MasterKey::derive_token`]): key 0's bytes, or
    /// the key a rotation that signed everyone out introduced.
    tokens: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Where the master key came from, so start-up can say so once in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    Environment,
    File(std::path::PathBuf),
    Generated(std::path::PathBuf),
}

impl MasterKey {
    /// 32 bytes, given as 64 hex characters or standard base64.
    pub fn parse(text: &str) -> Result<Self, CommandError> {
        let text = text.trim();
        let bytes =
            hex::decode(text).ok().or_else(|| STANDARD.decode(text).ok()).filter(|b| b.len() == 32).ok_or_else(
                || CommandError::Crypto("a master key is 32 bytes as 64 hex characters or base64".into()),
            )?;
        let raw: [u8; 32] = bytes.try_into().map_err(|_| CommandError::Crypto("a master key is 32 bytes".into()))?;
        Ok(Self { current: RingKey::new(0, raw), older: Default::default(), root: raw, tokens: raw })
    }

    /// The id of the key that seals.
    pub fn key_id(&self) -> u32 {
        self.current.id
    }

    /// Whether both seal with the same key (compared in constant time).
    pub fn same_sealing_key(&self, other: &MasterKey) -> bool {
        self.current.raw.iter().zip(other.current.raw.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// The given key as key `id` of a ring whose older keys are `older`: what [`crate::keyring`]
    /// builds from the database's keyring rows. `root` is key 0's bytes (found among `older`
    /// when not given: rings written before older keys could be forgotten); `tokens` the token
    /// root (the derivation root when not given).
    pub(crate) fn ring(
        current: [u8; 32],
        id: u32,
        older: Vec<RingKey>,
        root: Option<[u8; 32]>,
        tokens: Option<[u8; 32]>,
    ) -> Result<Self, CommandError> {
        let root = match (id, root) {
            (0, _) => current,
            (_, Some(root)) => root,
            _ => older.iter().find(|k| k.id == 0).map(|k| k.raw).ok_or_else(|| {
                CommandError::Crypto("the keyring lacks key 0, which every derived key comes from".into())
            })?,
        };
        let tokens = tokens.unwrap_or(root);
        Ok(Self { current: RingKey::new(id, current), older: std::sync::Arc::new(older), root, tokens })
    }

    /// The same ring without its older keys: it opens only what the sealing key sealed (derived
    /// and token keys unchanged).
    pub(crate) fn without_older_keys(&self) -> Self {
        Self { older: Default::default(), ..self.clone() }
    }

    pub(crate) fn root_raw(&self) -> [u8; 32] {
        self.root
    }

    pub(crate) fn tokens_raw(&self) -> [u8; 32] {
        self.tokens
    }

    /// Whether token keys derive from the sealing key (a rotation signed everyone out, or key 0
    /// alone).
    pub fn tokens_from_sealing_key(&self) -> bool {
        self.tokens.iter().zip(self.current.raw.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// Only the key that seals, as key `id` (no older keys): to open the keyring row sealed under it.
    pub(crate) fn single(&self, id: u32) -> Self {
        Self { current: RingKey::new(id, self.current.raw), older: Default::default(), ..self.clone() }
    }

    pub(crate) fn current_raw(&self) -> [u8; 32] {
        self.current.raw
    }

    /// How every value sealed by this ring starts: `v1.` under key 0, `v2.<id>.` after.
    pub fn sealing_prefix(&self) -> String {
        match self.current.id {
            0 => PREFIX_KEY0.to_string(),
            id => format!("{PREFIX_KEYED}{id}."),
        }
    }

    /// Every key of the ring, oldest first, the sealing one last.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &RingKey> {
        self.older.iter().chain(std::iter::once(&self.current))
    }

    /// The id of the key a sealed value names, if it is one of ours at all.
    pub fn sealed_key_id(text: &str) -> Option<u32> {
        if text.starts_with(PREFIX_KEY0) {
            return Some(0);
        }
        let (id, _) = text.strip_prefix(PREFIX_KEYED)?.split_once('.')?;
        id.parse().ok()
    }

    /// A key for another purpose (e.g. session-token MACs), derived so it never equals the master key.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        derive_from(&self.root, label)
    }

    /// A key that signs short-lived tokens (sessions, CSRF, one-time codes): derived from the
    /// token root, which a rotation may move to its new key to sign everyone out.
    pub fn derive_token(&self, label: &str) -> [u8; 32] {
        derive_from(&self.tokens, label)
    }

    /// HMAC-SHA256 of `input` under the key derived for `label`: a digest only this deployment
    /// can compute, for finding a secret or an identifier without storing it.
    pub fn keyed_digest(&self, label: &str, input: &str) -> [u8; 32] {
        keyed_digest(&self.derive(label), input)
    }

    /// Reads `<dir>/master.key`, generating it (mode 0600) on first use.
    pub fn load_or_generate(dir: &Path) -> Result<(Self, MasterKeySource), CommandError> {
        Self::load_or_generate_file(&dir.join("master.key"))
    }

    /// Reads the key file at `path`, generating it (mode 0600, and its folder) on first use.
    pub fn load_or_generate_file(path: &Path) -> Result<(Self, MasterKeySource), CommandError> {
        let io = |e: std::io::Error| CommandError::Crypto(format!("{}: {e}", path.display()));
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(io)?;
            return Ok((Self::parse(&text)?, MasterKeySource::File(path.to_path_buf())));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        write_private(path, &hex::encode(bytes)).map_err(io)?;
        Ok((Self::parse(&hex::encode(bytes))?, MasterKeySource::Generated(path.to_path_buf())))
    }

    pub fn seal(&self, plaintext: &[u8], purpose: &str) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        self.seal_with_nonce(plaintext, purpose, nonce)
    }

    /// Seals with a nonce drawn from a command's [`Entropy`](crate::Entropy). A keyed re-run
    /// reuses a nonce only with the same plaintext and purpose, which reveals nothing new.
    pub fn seal_with_nonce(&self, plaintext: &[u8], purpose: &str, nonce: [u8; NONCE_LEN]) -> Sealed {
        let ciphertext = self
            .current
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: purpose.as_bytes() })
            .unwrap_or_default(); // encryption of an in-memory buffer cannot fail
        let mut blob = nonce.to_vec();
        blob.extend(ciphertext);
        Sealed(format!("{}{}", self.sealing_prefix(), STANDARD.encode(blob)))
    }

    /// Opens a value sealed under any key of the ring: the key its prefix names.
    pub fn open(&self, sealed: &Sealed, purpose: &str) -> Result<Vec<u8>, CommandError> {
        let fail = || CommandError::Crypto(format!("cannot open sealed {purpose}"));
        let id = Self::sealed_key_id(&sealed.0).ok_or_else(fail)?;
        let key = self.keys().find(|k| k.id == id).ok_or_else(fail)?;
        let encoded = match id {
            0 => sealed.0.strip_prefix(PREFIX_KEY0),
            _ => sealed.0.strip_prefix(PREFIX_KEYED).and_then(|rest| rest.split_once('.')).map(|(_, b)| b),
        };
        let blob = encoded.and_then(|b| STANDARD.decode(b).ok()).ok_or_else(fail)?;
        if blob.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        key.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: purpose.as_bytes() })
            .map_err(|_| fail())
    }

    pub fn open_string(&self, sealed: &Sealed, purpose: &str) -> Result<String, CommandError> {
        String::from_utf8(self.open(sealed, purpose)?)
            .map_err(|_| CommandError::Crypto(format!("sealed {purpose} is not text")))
    }
}

fn derive_from(root: &[u8; 32], label: &str) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(root).expect("HMAC takes any key length");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 of `input` under `key` (a key from [`MasterKey::derive`]).
pub(crate) fn keyed_digest(key: &[u8; 32], input: &str) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(input.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::parse(&"11".repeat(32)).unwrap()
    }

    #[test]
    fn sealed_values_open_only_for_their_purpose_and_key() {
        let sealed = key().seal(b"app secret", "app-secret:1");
        assert!(!sealed.0.contains("app secret"));
        assert_eq!(key().open(&sealed, "app-secret:1").unwrap(), b"app secret");
        assert!(key().open(&sealed, "app-secret:2").is_err());
        assert!(MasterKey::parse(&"22".repeat(32)).unwrap().open(&sealed, "app-secret:1").is_err());
        assert!(key().open(&Sealed("v1.garbage".into()), "x").is_err());
    }

    #[test]
    fn a_ring_seals_under_its_newest_key_and_opens_under_every_key() {
        let old = key();
        let sealed_before = old.seal(b"secret", "p");
        let ring = MasterKey::ring([0x22; 32], 1, vec![RingKey::new(0, [0x11; 32])], None, None).unwrap();
        let sealed_after = ring.seal(b"secret", "p");
        assert!(sealed_after.0.starts_with("v2.1."), "{}", sealed_after.0);
        assert_eq!(MasterKey::sealed_key_id(&sealed_after.0), Some(1));
        assert_eq!(MasterKey::sealed_key_id(&sealed_before.0), Some(0));
        assert_eq!(ring.open(&sealed_before, "p").unwrap(), b"secret");
        assert_eq!(ring.open(&sealed_after, "p").unwrap(), b"secret");
        assert!(old.open(&sealed_after, "p").is_err(), "the old key alone opens what the new one sealed");
        assert!(ring.open(&sealed_after, "q").is_err(), "another purpose");
        assert_eq!(ring.derive("label"), old.derive("label"), "derived keys come from key 0");
        assert_eq!(ring.derive_token("label"), old.derive_token("label"), "token keys too, unless moved");
        assert!(MasterKey::ring([0x22; 32], 1, vec![], None, None).is_err(), "a ring without key 0");
        let forgetful = MasterKey::ring([0x22; 32], 1, vec![], Some([0x11; 32]), Some([0x22; 32])).unwrap();
        assert!(forgetful.open(&sealed_before, "p").is_err(), "the forgotten key 0 opens nothing");
        assert_eq!(forgetful.open(&sealed_after, "p").unwrap(), b"secret");
        assert_eq!(forgetful.derive("label"), old.derive("label"), "digests keep their root");
        assert_ne!(forgetful.derive_token("label"), old.derive_token("label"), "token keys moved");
    }

    #[test]
    fn the_same_plaintext_seals_differently_each_time() {
        assert_ne!(key().seal(b"x", "p"), key().seal(b"x", "p"));
    }

    #[test]
    fn keys_must_be_32_bytes() {
        assert!(MasterKey::parse("abcd").is_err());
        assert!(MasterKey::parse(&STANDARD.encode([7u8; 32])).is_ok());
    }

    #[test]
    fn a_generated_key_is_reused_on_the_next_start() {
        let dir = std::env::temp_dir().join(format!("licensd-key-{}", uuid::Uuid::new_v4().simple()));
        let (first, source) = MasterKey::load_or_generate(&dir).unwrap();
        assert!(matches!(source, MasterKeySource::Generated(_)));
        let (second, source) = MasterKey::load_or_generate(&dir).unwrap();
        assert!(matches!(source, MasterKeySource::File(_)));
        assert_eq!(second.open(&first.seal(b"x", "p"), "p").unwrap(), b"x");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
