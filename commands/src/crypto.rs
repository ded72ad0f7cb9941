//! The deployment's master key: seals secrets and personal data with XChaCha20-Poly1305.
//! A sealed value is `v1.` + base64(nonce ‖ ciphertext); its purpose string is bound in as
//! associated data, so a ciphertext cannot be moved to another field or subject.

use crate::CommandError;
use base64::{engine::general_purpose::STANDARD, Engine};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use licensd_domain::Sealed;
use rand::RngCore;
use std::path::Path;

const PREFIX: &str = "v1.";
pub(crate) const NONCE_LEN: usize = 24;

#[derive(Clone)]
pub struct MasterKey {
    cipher: XChaCha20Poly1305,
    raw: [u8; 32],
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
        Ok(Self { cipher: XChaCha20Poly1305::new(&raw.into()), raw })
    }

    /// A key for another purpose (e.g. session-token MACs), derived so it never equals the master key.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.raw).expect("HMAC takes any key length");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
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
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: purpose.as_bytes() })
            .unwrap_or_default(); // encryption of an in-memory buffer cannot fail
        let mut blob = nonce.to_vec();
        blob.extend(ciphertext);
        Sealed(format!("{PREFIX}{}", STANDARD.encode(blob)))
    }

    pub fn open(&self, sealed: &Sealed, purpose: &str) -> Result<Vec<u8>, CommandError> {
        let fail = || CommandError::Crypto(format!("cannot open sealed {purpose}"));
        let blob = sealed.0.strip_prefix(PREFIX).and_then(|b| STANDARD.decode(b).ok()).ok_or_else(fail)?;
        if blob.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: purpose.as_bytes() })
            .map_err(|_| fail())
    }

    pub fn open_string(&self, sealed: &Sealed, purpose: &str) -> Result<String, CommandError> {
        String::from_utf8(self.open(sealed, purpose)?)
            .map_err(|_| CommandError::Crypto(format!("sealed {purpose} is not text")))
    }
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
