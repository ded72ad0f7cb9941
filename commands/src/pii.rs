//! Personal data (emails, provider customer ids) kept outside the event log, sealed with the
//! master key, so erasure is a delete and a rebuild cannot resurrect it.

use crate::{CommandError, MasterKey};
use licensd_domain::Sealed;
use licensd_store::{PiiRow, SqlValue, Statement, Store, UPSERT_PII};

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
        format!("pii:{subject}:{field}")
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

    /// Deletes every field of a subject; returns how many were removed.
    pub async fn erase(&self, subject: &str) -> Result<u64, CommandError> {
        Ok(self.store.execute(&[Statement::new("DELETE FROM pii WHERE subject = $1", [subject.into()])]).await?)
    }
}
