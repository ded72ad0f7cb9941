//! One account per email, decided by the event store itself (see
//! [`licensd_domain::email_reservation`]): the reservation is appended before the account is
//! created and released if the creation fails.

use crate::{Actor, CommandError};
use licensd_domain::email_reservation::EmailReservationEvent;
use licensd_domain::{decode_event, AccountId, DomainError, StreamCategory};
use licensd_store::{EventStore, ExpectedVersion, RecordedEvent, StoreError};

/// The last event of a reservation stream, and the version to append after it.
fn last_of(recorded: &[RecordedEvent]) -> Result<Option<(EmailReservationEvent, u64)>, CommandError> {
    let Some(last) = recorded.last() else { return Ok(None) };
    let event = decode_event::<EmailReservationEvent>(&last.event_type, last.schema_version, &last.payload)?;
    Ok(Some((event, last.version)))
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
        let stream = self.email_stream(email)?;
        let expected = match last_of(&self.store().read_stream(&stream, 1).await?)? {
            None => ExpectedVersion::NoStream,
            Some((last, version)) if !last.holds() => ExpectedVersion::Exact(version),
            // A keyed re-run of this very creation (its account id is derived from the key).
            Some((EmailReservationEvent::AccountEmailReserved { account_id: holder, .. }, _))
                if holder == account_id =>
            {
                return Ok(())
            }
            Some(_) => return Err(taken()),
        };
        let reserved = EmailReservationEvent::AccountEmailReserved { account_id, at: self.now() };
        match self.append(&stream, expected, &[reserved], actor, Some(account_id)).await {
            Err(CommandError::Store(StoreError::WrongExpectedVersion { .. })) => Err(taken()),
            other => other.map(drop),
        }
    }

    /// Gives the email back after the account it was reserved for could not be created.
    pub(crate) async fn release_email(&self, email: &str, account_id: AccountId, actor: &Actor) {
        let released = async {
            let stream = self.email_stream(email)?;
            match last_of(&self.store().read_stream(&stream, 1).await?)? {
                Some((last, version)) if last.holds() => {
                    let released = EmailReservationEvent::AccountEmailReleased { account_id, at: self.now() };
                    let expected = ExpectedVersion::Exact(version);
                    self.append(&stream, expected, &[released], actor, Some(account_id)).await.map(drop)
                }
                _ => Ok(()),
            }
        };
        if let Err(e) = released.await {
            tracing::error!(%account_id, error = %e, "cannot release the email of an account that was not created");
        }
    }

    fn email_stream(&self, email: &str) -> Result<String, CommandError> {
        let digest = crate::password::email_digest(self.master_key(), email)?;
        Ok(StreamCategory::EmailReservation.stream_id(digest))
    }
}
