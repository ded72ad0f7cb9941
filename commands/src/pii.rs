//! Personal data (emails, provider customer ids) kept outside the event log, sealed with the
//! master key, so erasure is a delete and a rebuild cannot resurrect it.

use crate::{CommandError, MasterKey};
use licensd_domain::Sealed;
use licensd_store::{PiiRow, SqlValue, Statement, Store, UPSERT_PII};

/// What a vault value is sealed for: its subject and field, so it cannot be moved to another.
pub(crate) fn purpose(subject: &str, field: &str) -> String {
    format!("pii:{subject}:{field}")
}

#[derive(Clone, Debug)]
pub struct PiiVault {
    store: Store,
    key: MasterKey,
}

impl PiiVault {
    pub fn new(store: Store, key: MasterKey) -> Self {
        Self { store, key }
    }

    fn purpose(subject: &str, field: &str) -> String {
        purpose(subject, field)
    }

    /// A field sealed for writing in the same transaction as the events that refer to it
    /// ([`licensd_store::AppendRequest::with_pii`]): an append that fails leaves no orphan.
    pub fn row(&self, subject: &str, field: &str, value: &str) -> PiiRow {
        let sealed = self.key.seal(value.as_bytes(), &Self::purpose(subject, field));
        PiiRow { subject: subject.into(), field: field.into(), sealed: sealed.0 }
    }

    /// Writes a field on its own, for personal data that no event refers to.
    pub async fn put(&self, subject: &str, field: &str, value: &str) -> Result<(), CommandError> {
        let PiiRow { subject, field, sealed } = self.row(subject, field, value);
        let upsert = Statement::new(UPSERT_PII, [subject.into(), field.into(), SqlValue::from(sealed)]);
        self.store.execute(&[upsert]).await?;
        Ok(())
    }

    pub async fn get(&self, subject: &str, field: &str) -> Result<Option<String>, CommandError> {
        let rows = self
            .store
            .query_text("SELECT value FROM pii WHERE subject = $1 AND field = $2", &[subject.into(), field.into()])
            .await?;
        match rows.into_iter().flatten().next() {
            Some(sealed) => Ok(Some(self.key.open_string(&Sealed(sealed), &Self::purpose(subject, field))?)),
            None => Ok(None),
        }
    }

    /// Whether this vault's key opens a value the database already holds (true when it holds
    /// none): a copied database without its key, or the wrong key, fails here instead of on the
    /// first request that needs a secret.
    pub async fn key_opens_stored_values(&self) -> Result<bool, CommandError> {
        let rows = self.store.query_rows("SELECT subject, field, value FROM pii LIMIT 1", &[]).await?;
        let Some([Some(subject), Some(field), Some(sealed)]) = rows.first().map(Vec::as_slice) else {
            return Ok(true);
        };
        Ok(self.key.open(&Sealed(sealed.clone()), &Self::purpose(subject, field)).is_ok())
    }

    /// Deletes one field of a subject; returns whether it was there.
    pub async fn remove(&self, subject: &str, field: &str) -> Result<bool, CommandError> {
        let delete =
            Statement::new("DELETE FROM pii WHERE subject = $1 AND field = $2", [subject.into(), field.into()]);
        Ok(self.store.execute(&[delete]).await? > 0)
    }

    /// Deletes every field of a subject; returns how many were removed.
    pub async fn erase(&self, subject: &str) -> Result<u64, CommandError> {
        Ok(self.store.execute(&[Statement::new("DELETE FROM pii WHERE subject = $1", [subject.into()])]).await?)
    }
}

/// The keyed index of a buyer's email (HMAC-SHA256 of the normalized address under a key derived
/// from the master key): license events carry it so the license listing can filter by email
/// without reading the vault, and it tells nothing to whoever lacks the master key. `None` for
/// text that is no address.
pub fn buyer_email_digest(key: &MasterKey, email: &str) -> Option<String> {
    let email = crate::normalize_email(email).ok()?;
    Some(hex::encode(key.keyed_digest("license-buyer-email", &email)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buyer_email_digests_match_normalized_addresses_only() {
        let key = MasterKey::parse(&"11".repeat(32)).unwrap();
        let ann = buyer_email_digest(&key, "ann@example.com").unwrap();
        assert_eq!(buyer_email_digest(&key, "  Ann@Example.COM ").as_deref(), Some(ann.as_str()));
        assert_ne!(buyer_email_digest(&key, "bob@example.com").as_deref(), Some(ann.as_str()));
        let other = MasterKey::parse(&"22".repeat(32)).unwrap();
        assert_ne!(buyer_email_digest(&other, "ann@example.com").as_deref(), Some(ann.as_str()));
        assert_eq!(buyer_email_digest(&key, "not an address"), None);
    }
}
