//! One merchant account per email. An account's creation first reserves its normalized email on a
//! stream named by a keyed digest of it (`email-<digest>`), appended expecting no stream (or a
//! stream that ends in a release): of concurrent creations with one address exactly one append
//! wins, which a check-then-insert could not promise. The events name only the account; the
//! digest reveals nothing without the master key.

use crate::{AccountId, StreamCategory};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

crate::typed_decode::event_enum! {
    category = StreamCategory::EmailReservation;
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    pub enum EmailReservationEvent {
        /// The email now belongs to this account.
        AccountEmailReserved { account_id: AccountId, at: DateTime<Utc> },
        /// The account it was reserved for could not be created: the email is free again.
        AccountEmailReleased { account_id: AccountId, at: DateTime<Utc> },
    }
}

impl EmailReservationEvent {
    /// Whether a stream whose last event is this one holds the email.
    pub fn holds(&self) -> bool {
        matches!(self, Self::AccountEmailReserved { .. })
    }
}
