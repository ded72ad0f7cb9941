//! One account per email, decided by the event store itself: an account's creation first appends
//! a reservation to a stream named by the keyed digest of its normalized email, expecting that
//! stream not to exist (or to end in a release). Of concurrent creations with one address exactly
//! one append wins; a check-then-insert could let both through.
//!
//! The stream's category (`email`) is unknown to `StreamCategory`, so every projection skips it;
//! the payloads name only the account, and the digest reveals nothing without the master key.

use crate::{Actor, CommandError};
use licensd_domain::{AccountId, DomainError};
use licensd_store::{AppendRequest, EventStore, ExpectedVersion, NewEvent, StoreError};
use serde_json::json;
use uuid::Uuid;

const RESERVED: &str = "AccountEmailReserved";
const RELEASED: &str = "AccountEmailReleased";

fn stream(email_digest: &str) -> String {
    format!("email-{email_digest}")
}

impl crate::Commands {
    /// Reserves the email (already normalized) for `account_id`; refused when another account
    /// holds it.
    pub(crate) async fn reserve_email(
        &self,
        email: &str,
        account_id: AccountId,
        actor: &Actor,
    ) -> Result<(), CommandError> {
        let taken = || CommandError::Domain(DomainError::AlreadyExists("account for this email"));
        let stream = stream(&crate::password::email_digest(self.master_key(), email)?);
        let recorded = self.store().read_stream(&stream, 1).await?;
        let expected = match recorded.last() {
            None => ExpectedVersion::NoStream,
            Some(last) if last.event_type == RELEASED => ExpectedVersion::Exact(last.version),
            Some(_) => return Err(taken()),
        };
        match self.append_marker(&stream, expected, RESERVED, account_id, actor).await {
            Err(CommandError::Store(StoreError::WrongExpectedVersion { .. })) => Err(taken()),
            other => other,
        }
    }

    /// Gives the email back after the account it was reserved for could not be created.
    pub(crate) async fn release_email(&self, email: &str, account_id: AccountId, actor: &Actor) {
        let Ok(digest) = crate::password::email_digest(self.master_key(), email) else { return };
        let stream = stream(&digest);
        let released = match self.store().read_stream(&stream, 1).await {
            Ok(recorded) => match recorded.last() {
                Some(last) if last.event_type == RESERVED => {
                    let expected = ExpectedVersion::Exact(last.version);
                    self.append_marker(&stream, expected, RELEASED, account_id, actor).await
                }
                _ => Ok(()),
            },
            Err(e) => Err(e.into()),
        };
        if let Err(e) = released {
            tracing::error!(%account_id, error = %e, "cannot release the email of an account that was not created");
        }
    }

    async fn append_marker(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        event_type: &str,
        account_id: AccountId,
        actor: &Actor,
    ) -> Result<(), CommandError> {
        let event = NewEvent {
            event_id: Uuid::now_v7(),
            event_type: event_type.to_string(),
            schema_version: 1,
            payload: json!({ "type": event_type, "account_id": account_id, "at": self.now() }),
            metadata: actor.metadata(Some(account_id)),
        };
        let request = AppendRequest::new(stream, expected, vec![event]);
        self.writer().append(request).await.map(drop)
    }
}
