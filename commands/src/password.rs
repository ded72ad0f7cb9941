//! Merchant dashboard credentials: Argon2id password verifiers and the keyed email digest that
//! finds an account at sign-in without putting the address into the event log.

use crate::{normalize_email, CommandError, MasterKey};
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The vault field holding an account's sealed Argon2id verifier.
const VERIFIER_FIELD: &str = "dashboard_password";

/// An Argon2id PHC string (parameters and salt inside), for a password of acceptable length.
pub fn hash_password(password: &str) -> Result<String, CommandError> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(CommandError::Invalid(format!(
            "a password needs {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| CommandError::Crypto(format!("cannot hash the password: {e}")))
}

/// Constant-time check of `password` against a stored verifier; a malformed verifier never matches.
pub fn verify_password(password: &str, verifier: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    PasswordHash::new(verifier).is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// Keyed digest of a normalized email: equal addresses give equal digests under one deployment's
/// master key, and the digest reveals nothing without it.
pub fn email_digest(key: &MasterKey, email: &str) -> Result<String, CommandError> {
    use hmac::{Hmac, Mac};
    let email = normalize_email(email)?;
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key.derive("merchant-email")).expect("HMAC takes any key length");
    mac.update(email.as_bytes());
    Ok(hex::encode(mac.finalize().into_bytes()))
}

impl crate::Commands {
    /// Sets (or replaces) the merchant's dashboard password; their sign-in email is the one the
    /// account was created with.
    pub async fn set_dashboard_password(
        &self,
        account_id: licensd_domain::AccountId,
        password: &str,
        actor: &crate::Actor,
    ) -> Result<(), CommandError> {
        let stream = licensd_domain::StreamCategory::Account.stream_id(account_id);
        let email =
            self.pii().get(&stream, "email").await?.ok_or(CommandError::Invalid(
                "the account has no email on file (erased?); create a new account".into(),
            ))?;
        let email_digest = email_digest(self.master_key(), &email)?;
        let password_hash = tokio::task::spawn_blocking({
            let password = password.to_string();
            move || hash_password(&password)
        })
        .await
        .map_err(|e| CommandError::Crypto(e.to_string()))??;
        // The verifier is sealed in the deletable vault; the event only records that a password
        // was set (it ends older sessions and is the audit trail).
        let verifier = vec![self.pii().row(&stream, VERIFIER_FIELD, &password_hash)];
        let command = licensd_domain::account::AccountCommand::SetDashboardLogin { email_digest };
        self.execute_with_pii::<licensd_domain::account::AccountState>(
            &stream,
            command,
            actor,
            Some(account_id),
            |_| Ok(()),
            verifier,
        )
        .await
        .map(drop)
    }

    /// The account's sealed dashboard password verifier, if one was set since verifiers left
    /// the event log.
    pub async fn dashboard_verifier(
        &self,
        account_id: licensd_domain::AccountId,
    ) -> Result<Option<String>, CommandError> {
        let stream = licensd_domain::StreamCategory::Account.stream_id(account_id);
        self.pii().get(&stream, VERIFIER_FIELD).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_accepts_only_the_password() {
        let verifier = hash_password("correct horse battery").unwrap();
        assert!(verifier.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &verifier));
        assert!(!verify_password("correct horse batterY", &verifier));
        assert!(!verify_password("correct horse battery", "not a verifier"));
        assert!(hash_password("short").is_err());
    }

    #[test]
    fn digest_normalizes_the_address() {
        let key = MasterKey::parse(&"11".repeat(32)).unwrap();
        assert_eq!(email_digest(&key, " Ann@Example.com").unwrap(), email_digest(&key, "ann@example.com").unwrap());
        assert_ne!(email_digest(&key, "ann@example.com").unwrap(), email_digest(&key, "bob@example.com").unwrap());
    }
}
