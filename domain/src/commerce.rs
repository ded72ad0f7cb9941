//! Commerce: provider connections, product mappings and the inbound event ledger.
//!
//! Each inbound provider event is its own stream (`commerce-<provider>-<connection>-<externalId>`):
//! appending its first event with "no stream" is what makes duplicate deliveries harmless. The
//! ledger entry's status is a fold of that stream. Buyer emails and provider customer ids never
//! appear here: they sit in the PII vault under the stream id.

use crate::{Aggregate, DomainError, Sealed, StreamCategory, Variables};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const MAX_PRICE_ID_CHARS: usize = 128;
/// Most licenses one line item may mint when quantity is respected.
pub const MAX_QUANTITY: u32 = 100;
/// Attempts that may start without recording an outcome before the entry is held as `unknown`.
pub const MAX_UNFINISHED_ATTEMPTS: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Stripe,
    Lemon,
}

impl Provider {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::Lemon => "lemon",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Stripe, Self::Lemon].into_iter().find(|p| p.as_str() == text)
    }
}

/// A merchant's credentials for one provider; both secrets sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub connection_id: Uuid,
    pub provider: Provider,
    /// Verifies inbound webhooks (`whsec_...` for Stripe, the chosen secret for Lemon Squeezy).
    pub signing_secret: Sealed,
    /// Reads line items the webhook left out; optional.
    pub api_key: Option<Sealed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MappingKind {
    /// Pay once: `days` blank is perpetual, N is a fixed term; renewals never extend it.
    OneTime,
    /// `days` per billing cycle: created at purchase, extended by renewals, revoked by cancellations.
    Subscription,
    /// Extends the buyer's existing license in the app by `days`.
    AddOn,
    /// Revokes the buyer's licenses in the app.
    Revocation,
}

/// How one provider price (Stripe) or variant (Lemon Squeezy) becomes licenses in one app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductMapping {
    pub mapping_id: Uuid,
    pub provider: Provider,
    pub price_id: String,
    pub product_id: Option<String>,
    pub kind: MappingKind,
    pub days: Option<u32>,
    pub hwid_slots: u8,
    pub label: Option<String>,
    pub variables: Variables,
    pub respect_quantity: bool,
}

impl ProductMapping {
    pub fn validated(self) -> Result<Self, DomainError> {
        let invalid = |why: &str| Err(DomainError::InvalidMapping(why.to_string()));
        if self.price_id.trim().is_empty() || self.price_id.chars().count() > MAX_PRICE_ID_CHARS {
            return invalid("priceId must be 1 to 128 characters");
        }
        if self.product_id.as_ref().is_some_and(|p| p.chars().count() > MAX_PRICE_ID_CHARS) {
            return invalid("productId must be at most 128 characters");
        }
        if !(crate::license::MIN_HWID_SLOTS..=crate::license::MAX_HWID_SLOTS).contains(&self.hwid_slots) {
            return Err(DomainError::InvalidHwidSlots);
        }
        if self.label.as_ref().is_some_and(|l| l.chars().count() > crate::license::MAX_LABEL_CHARS) {
            return Err(DomainError::LabelTooLong);
        }
        match (self.kind, self.days) {
            (_, Some(0)) => invalid("days must be positive"),
            (_, Some(days)) if days > 36_500 => invalid("days must be at most 36500"),
            (MappingKind::Subscription | MappingKind::AddOn, None) => invalid("days is required for this kind"),
            _ => Ok(self),
        }
    }
}

/// What a provider event asks for, once normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommerceAction {
    Purchase,
    Renewal,
    Revoke,
    /// Recorded for the ledger, nothing to do (e.g. a subscription's first invoice, which the
    /// purchase event already fulfils).
    Ignore,
    Unmapped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    pub price_id: String,
    pub product_id: Option<String>,
    pub quantity: u32,
}

/// The provider event reduced to what the worker needs; personal data is left out (the worker
/// finds the buyer's email and customer id in the PII vault under the ledger stream's id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NormalizedEvent {
    pub action: CommerceAction,
    /// The provider object the event is about (checkout session, order, invoice, ...).
    pub object_id: Option<String>,
    /// `None`: the provider left the line items out and they must be fetched.
    pub line_items: Option<Vec<LineItem>>,
    pub subscription_id: Option<String>,
    /// Payment references (payment intent, order id) that later refunds and disputes quote.
    pub payment_refs: Vec<String>,
    /// What the buyer paid, for purchases and renewals whose payload says; absent in events
    /// recorded before amounts were (the overview counts those as of unknown amount, not 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Amount>,
}

/// A sum of money as the provider reported it: in the currency's minor unit (cents for USD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Amount {
    pub minor: i64,
    /// ISO 4217 code, upper case (`USD`).
    pub currency: String,
}

impl Amount {
    /// An amount from a payload's integer and currency code; `None` unless the amount is a
    /// whole number of minor units (≥ 0) and the code three ASCII letters.
    pub fn from_payload(minor: Option<&serde_json::Value>, currency: Option<&str>) -> Option<Self> {
        let minor = minor?.as_i64().filter(|m| *m >= 0)?;
        let currency = currency?.trim();
        (currency.len() == 3 && currency.chars().all(|c| c.is_ascii_alphabetic()))
            .then(|| Self { minor, currency: currency.to_ascii_uppercase() })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    NoMappingForPrice,
    AmbiguousMappingMultipleApps,
    ApiKeyRequiredForLineItems,
    LineItemsNotFound,
    UnmappedEventType,
    NoLicenseToExtend,
    NoLicenseToRevoke,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldReason {
    TransientRetryExhausted,
    NonTransient,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerStatus {
    Pending,
    Processed,
    Skipped,
    Failed,
    Held,
}

impl LedgerStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processed => "processed",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
            Self::Held => "held",
        }
    }
}

crate::typed_decode::event_enum! {
    category = StreamCategory::Commerce;
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    pub enum CommerceEvent {
        CommerceEventReceived {
            connection_id: Uuid,
            account_id: crate::AccountId,
            provider: Provider,
            external_id: String,
            event_type: String,
            normalized: NormalizedEvent,
            received_at: DateTime<Utc>,
        },
        /// The worker claimed the entry; an attempt without an outcome means it crashed mid-way.
        CommerceProcessingStarted {
            attempt: u32,
            at: DateTime<Utc>,
        },
        CommerceEventProcessed {
            licenses: Vec<crate::LicenseKey>,
            at: DateTime<Utc>,
        },
        CommerceEventSkipped {
            reason: SkipReason,
            at: DateTime<Utc>,
        },
        /// A transient error; the worker retries once at `retry_at`.
        CommerceEventFailed {
            error: String,
            retry_at: DateTime<Utc>,
            at: DateTime<Utc>,
        },
        CommerceEventHeld {
            reason: HeldReason,
            error: String,
            at: DateTime<Utc>,
        },
        CommerceReplayRequested {
            at: DateTime<Utc>,
        },
        /// The buyer's personal data was erased; the entry stays for the payment history.
        CommerceEventRedacted {
            at: DateTime<Utc>,
        },
    }
}

/// One ledger entry as the rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    pub account_id: crate::AccountId,
    pub connection_id: Uuid,
    pub provider: Provider,
    pub event_type: String,
    pub normalized: NormalizedEvent,
    pub status: LedgerStatus,
    /// Attempts started since the last replay, and how many of them recorded an outcome.
    pub attempts: u32,
    pub finished: u32,
    /// Transient failures since the last replay.
    pub failures: u32,
    pub redacted: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LedgerState(pub Option<LedgerEntry>);

/// The worker's verdict on one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Processed(Vec<crate::LicenseKey>),
    Skipped(SkipReason),
    Transient(String),
    NonTransient(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum LedgerCommand {
    Receive {
        connection_id: Uuid,
        account_id: crate::AccountId,
        provider: Provider,
        external_id: String,
        event_type: String,
        normalized: NormalizedEvent,
    },
    Start,
    Record {
        outcome: Outcome,
        retry_at: DateTime<Utc>,
    },
    Replay,
    Redact,
}

impl Aggregate for LedgerState {
    type Event = CommerceEvent;
    type Command = LedgerCommand;

    fn evolve(self, event: &CommerceEvent) -> Self {
        use CommerceEvent as E;
        if let E::CommerceEventReceived { connection_id, account_id, provider, event_type, normalized, .. } = event {
            return Self(Some(LedgerEntry {
                account_id: *account_id,
                connection_id: *connection_id,
                provider: *provider,
                event_type: event_type.clone(),
                normalized: normalized.clone(),
                status: LedgerStatus::Pending,
                attempts: 0,
                finished: 0,
                failures: 0,
                redacted: false,
            }));
        }
        let Some(mut entry) = self.0 else { return self };
        match event {
            E::CommerceEventReceived { .. } => {}
            E::CommerceProcessingStarted { attempt, .. } => entry.attempts = *attempt,
            E::CommerceEventProcessed { .. } => finish(&mut entry, LedgerStatus::Processed),
            E::CommerceEventSkipped { .. } => finish(&mut entry, LedgerStatus::Skipped),
            E::CommerceEventFailed { .. } => {
                entry.failures += 1;
                finish(&mut entry, LedgerStatus::Failed);
            }
            E::CommerceEventHeld { .. } => finish(&mut entry, LedgerStatus::Held),
            E::CommerceReplayRequested { .. } => {
                entry.status = LedgerStatus::Pending;
                (entry.attempts, entry.finished, entry.failures) = (0, 0, 0);
            }
            E::CommerceEventRedacted { .. } => entry.redacted = true,
        }
        Self(Some(entry))
    }

    fn decide(&self, command: LedgerCommand, now: DateTime<Utc>) -> Result<Vec<CommerceEvent>, DomainError> {
        use CommerceEvent as E;
        use LedgerCommand as C;
        let at = now;
        let Some(entry) = &self.0 else {
            let C::Receive { connection_id, account_id, provider, external_id, event_type, normalized } = command
            else {
                return Err(DomainError::NotFound("commerce event"));
            };
            return Ok(vec![E::CommerceEventReceived {
                connection_id,
                account_id,
                provider,
                external_id,
                event_type,
                normalized,
                received_at: now,
            }]);
        };
        let workable = matches!(entry.status, LedgerStatus::Pending | LedgerStatus::Failed);
        Ok(match command {
            C::Receive { .. } => return Err(DomainError::AlreadyExists("commerce event")),
            C::Start if !workable => return Err(DomainError::LedgerNotWorkable),
            // Attempts that started and never finished mean the worker died on this entry.
            C::Start if entry.attempts - entry.finished >= MAX_UNFINISHED_ATTEMPTS => {
                vec![E::CommerceEventHeld {
                    reason: HeldReason::Unknown,
                    error: "the worker stopped before recording an outcome".into(),
                    at,
                }]
            }
            C::Start => vec![E::CommerceProcessingStarted { attempt: entry.attempts + 1, at }],
            C::Record { .. } if !workable => return Err(DomainError::LedgerNotWorkable),
            C::Record { outcome, retry_at } => vec![match outcome {
                Outcome::Processed(licenses) => E::CommerceEventProcessed { licenses, at },
                Outcome::Skipped(reason) => E::CommerceEventSkipped { reason, at },
                Outcome::Transient(error) if entry.failures == 0 => E::CommerceEventFailed { error, retry_at, at },
                Outcome::Transient(error) => {
                    E::CommerceEventHeld { reason: HeldReason::TransientRetryExhausted, error, at }
                }
                Outcome::NonTransient(error) => E::CommerceEventHeld { reason: HeldReason::NonTransient, error, at },
            }],
            C::Replay => match entry.status {
                LedgerStatus::Skipped | LedgerStatus::Failed | LedgerStatus::Held => {
                    vec![E::CommerceReplayRequested { at }]
                }
                LedgerStatus::Pending | LedgerStatus::Processed => return Err(DomainError::LedgerNotReplayable),
            },
            C::Redact if entry.redacted => vec![],
            C::Redact => vec![E::CommerceEventRedacted { at }],
        })
    }
}

fn finish(entry: &mut LedgerEntry, status: LedgerStatus) {
    entry.status = status;
    entry.finished = entry.attempts;
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn received() -> Vec<CommerceEvent> {
        let normalized = NormalizedEvent {
            action: CommerceAction::Purchase,
            object_id: Some("cs_1".into()),
            line_items: None,
            subscription_id: None,
            payment_refs: vec![],
            amount: None,
        };
        let receive = LedgerCommand::Receive {
            connection_id: Uuid::nil(),
            account_id: crate::AccountId(Uuid::nil()),
            provider: Provider::Stripe,
            external_id: "evt_1".into(),
            event_type: "checkout.session.completed".into(),
            normalized,
        };
        LedgerState::default().decide(receive, now()).unwrap()
    }

    fn run(events: &mut Vec<CommerceEvent>, command: LedgerCommand) -> Result<(), DomainError> {
        let decided = LedgerState::fold(events.iter()).decide(command, now())?;
        events.extend(decided);
        Ok(())
    }

    fn record(outcome: Outcome) -> LedgerCommand {
        LedgerCommand::Record { outcome, retry_at: now() }
    }

    fn status(events: &[CommerceEvent]) -> LedgerStatus {
        LedgerState::fold(events).0.unwrap().status
    }

    #[test]
    fn a_transient_error_is_retried_once_then_held() {
        let mut events = received();
        run(&mut events, LedgerCommand::Start).unwrap();
        run(&mut events, record(Outcome::Transient("503".into()))).unwrap();
        assert_eq!(status(&events), LedgerStatus::Failed);
        run(&mut events, LedgerCommand::Start).unwrap();
        run(&mut events, record(Outcome::Transient("503".into()))).unwrap();
        assert!(matches!(
            events.last(),
            Some(CommerceEvent::CommerceEventHeld { reason: HeldReason::TransientRetryExhausted, .. })
        ));
    }

    #[test]
    fn attempts_that_never_finish_are_held_as_unknown() {
        let mut events = received();
        run(&mut events, LedgerCommand::Start).unwrap();
        run(&mut events, LedgerCommand::Start).unwrap();
        run(&mut events, LedgerCommand::Start).unwrap();
        assert!(matches!(events.last(), Some(CommerceEvent::CommerceEventHeld { reason: HeldReason::Unknown, .. })));
        assert_eq!(run(&mut events, LedgerCommand::Start), Err(DomainError::LedgerNotWorkable));
    }

    #[test]
    fn only_finished_unsuccessful_entries_can_be_replayed() {
        let mut events = received();
        assert_eq!(run(&mut events, LedgerCommand::Replay), Err(DomainError::LedgerNotReplayable));
        run(&mut events, LedgerCommand::Start).unwrap();
        run(&mut events, record(Outcome::Skipped(SkipReason::NoMappingForPrice))).unwrap();
        run(&mut events, LedgerCommand::Replay).unwrap();
        assert_eq!(status(&events), LedgerStatus::Pending);
        run(&mut events, LedgerCommand::Start).unwrap();
        run(&mut events, record(Outcome::Processed(vec![]))).unwrap();
        assert_eq!(run(&mut events, LedgerCommand::Replay), Err(DomainError::LedgerNotReplayable));
    }

    #[test]
    fn a_duplicate_delivery_is_refused_by_the_aggregate() {
        let events = received();
        let again = LedgerCommand::Receive {
            connection_id: Uuid::nil(),
            account_id: crate::AccountId(Uuid::nil()),
            provider: Provider::Stripe,
            external_id: "evt_1".into(),
            event_type: "checkout.session.completed".into(),
            normalized: LedgerState::fold(&events).0.unwrap().normalized,
        };
        assert_eq!(LedgerState::fold(&events).decide(again, now()), Err(DomainError::AlreadyExists("commerce event")));
    }

    #[test]
    fn mappings_need_days_for_recurring_kinds() {
        let mapping = ProductMapping {
            mapping_id: Uuid::nil(),
            provider: Provider::Stripe,
            price_id: "price_1".into(),
            product_id: None,
            kind: MappingKind::Subscription,
            days: None,
            hwid_slots: 1,
            label: None,
            variables: Variables::default(),
            respect_quantity: true,
        };
        assert!(matches!(mapping.clone().validated(), Err(DomainError::InvalidMapping(_))));
        assert!(ProductMapping { kind: MappingKind::OneTime, ..mapping.clone() }.validated().is_ok());
        assert_eq!(ProductMapping { hwid_slots: 0, ..mapping }.validated(), Err(DomainError::InvalidHwidSlots));
    }
}
