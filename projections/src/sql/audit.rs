use super::{timestamp, SqlProjection};
use licensd_domain::license::LicenseEvent;
use licensd_domain::AnyEvent;
use licensd_store::{RecordedEvent, SqlValue, Statement};

/// `rm_audit_log`: who changed what and when, from each event's metadata. Billing events are
/// left to the credit ledger (one per auth call would drown the changes people look for).
pub struct AuditLog;

impl SqlProjection for AuditLog {
    fn name(&self) -> &'static str {
        "audit_log"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_audit_log"]
    }

    fn statements(&self, event: &RecordedEvent, decoded: &AnyEvent) -> Vec<Statement> {
        if matches!(
            decoded,
            AnyEvent::License(LicenseEvent::ValidationBilled { .. } | LicenseEvent::HeartbeatBilled { .. })
        ) {
            return vec![];
        }
        let metadata = event.metadata_fields();
        let Some(actor) = metadata.actor else { return vec![] };
        let account_id = metadata.account_id.map(String::from);
        vec![Statement::new(
            "INSERT INTO rm_audit_log (pos_tx, pos_seq, account_id, stream_id, event_type, actor, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (pos_tx, pos_seq) DO NOTHING",
            [
                event.position.tx.into(),
                event.position.seq.into(),
                SqlValue::from(account_id),
                event.stream_id.as_str().into(),
                event.event_type.as_str().into(),
                actor.as_ref().into(),
                timestamp(event.recorded_at).into(),
            ],
        )]
    }

    fn canonical_queries(&self) -> &'static [&'static str] {
        &["SELECT COALESCE(account_id, '~') || '|' || stream_id || '|' || event_type || '|' || actor || '|' || at
           FROM rm_audit_log ORDER BY pos_tx, pos_seq"]
    }
}
