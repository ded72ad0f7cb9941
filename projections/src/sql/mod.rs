//! SQL read models as pure functions from an event to the statements that project it.

mod audit;
mod commerce_ledger;
mod credit_ledger;
mod license_machines;
mod licenses;
mod multi_row;
mod usage_rollup;
mod webhook_outbox;

use chrono::{DateTime, SecondsFormat, Utc};
use licensd_domain::AnyEvent;
use licensd_store::{RecordedEvent, Statement};
use std::sync::Arc;

pub use audit::AuditLog;
pub use commerce_ledger::CommerceLedger;
pub use credit_ledger::CreditLedger;
pub use license_machines::LicenseMachines;
pub use licenses::Licenses;
pub use usage_rollup::UsageRollup;
pub use webhook_outbox::WebhookOutbox;

/// A persisted read model. Bump `version` when `statements` change meaning: the runner then
/// empties `tables` and replays the log from the start.
pub trait SqlProjection: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn version(&self) -> i32;
    fn tables(&self) -> &'static [&'static str];
    /// The writes that project one event, decided from the event alone.
    fn statements(&self, event: &RecordedEvent, decoded: &AnyEvent) -> Vec<Statement>;
    /// Queries yielding one text column per row in a fixed order: the model's canonical form.
    fn canonical_queries(&self) -> &'static [&'static str];

    /// A query (every column as text) for rows of this model the projection decides from, read
    /// before each pace, as of its checkpoint. `None` (the default): `statements` needs nothing.
    fn state_query(&self) -> Option<&'static str> {
        None
    }

    /// The projector of one pace, seeded with the rows of [`Self::state_query`] and kept current
    /// by the pace's own events (so decisions follow the log order, never a stale copy).
    /// `None` (the default): every event goes through `statements`.
    fn pace(&self, _state: &[Vec<Option<String>>]) -> Option<Box<dyn PaceProjector + '_>> {
        None
    }
}

/// Projects the events of one pace, in log order, with state carried from one to the next.
pub trait PaceProjector: Send {
    fn statements(&mut self, event: &RecordedEvent, decoded: &AnyEvent) -> Vec<Statement>;

    /// The writes still held back at the end of the pace (sums over several events), which
    /// run after every statement of the pace's events.
    fn finish(&mut self) -> Vec<Statement> {
        Vec::new()
    }
}

pub fn all_sql_projections() -> Vec<Arc<dyn SqlProjection>> {
    vec![
        Arc::new(Licenses),
        Arc::new(CreditLedger),
        Arc::new(AuditLog),
        Arc::new(WebhookOutbox),
        Arc::new(CommerceLedger),
        Arc::new(UsageRollup),
        Arc::new(LicenseMachines),
    ]
}

/// Timestamps in read models: RFC 3339, UTC, milliseconds, so text order is time order.
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}
