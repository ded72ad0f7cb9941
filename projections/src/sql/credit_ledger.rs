use super::multi_row::MultiRow;
use super::{timestamp, PaceProjector, SqlProjection};
use licensd_domain::account::AccountEvent;
use licensd_domain::license::LicenseEvent;
use licensd_domain::AnyEvent;
use licensd_store::{RecordedEvent, SqlValue, Statement};

/// `rm_credit_ledger`: every grant, debit and billed auth call, per account, in log order.
pub struct CreditLedger;

/// One ledger row per event; a replayed event's row is already there.
static INSERT_ROWS: MultiRow = MultiRow::new(
    "INSERT INTO rm_credit_ledger (pos_tx, pos_seq, account_id, delta, kind, reason, license_key, at) VALUES",
    8,
    "ON CONFLICT (pos_tx, pos_seq) DO NOTHING",
);

/// The ledger row of one event, if it moves credits.
fn row(event: &RecordedEvent, decoded: &AnyEvent) -> Option<[SqlValue; 8]> {
    let stream_key = event.stream_id.split_once('-').map(|(_, id)| id.to_string());
    let (account_id, delta, kind, reason, license_key) = match decoded {
        AnyEvent::Account(AccountEvent::CreditsGranted { amount, reason, .. }) => {
            (stream_key, *amount as i64, "grant", reason.clone(), None)
        }
        AnyEvent::Account(AccountEvent::CreditsDebited { amount, reason, .. }) => {
            (stream_key, -(*amount as i64), "debit", reason.clone(), None)
        }
        AnyEvent::License(LicenseEvent::ValidationBilled { account_id, credits, .. }) => {
            (Some(account_id.to_string()), -i64::from(*credits), "validation", String::new(), stream_key)
        }
        AnyEvent::License(LicenseEvent::HeartbeatBilled { account_id, credits, heartbeats, .. }) => {
            let reason = format!("{heartbeats} heartbeats");
            (Some(account_id.to_string()), -i64::from(*credits), "heartbeat", reason, stream_key)
        }
        AnyEvent::License(LicenseEvent::OfflineActivated { account_id, credits, .. }) => {
            (Some(account_id.to_string()), -i64::from(*credits), "offline_activation", String::new(), stream_key)
        }
        AnyEvent::License(LicenseEvent::OfflineFileMinted { account_id, credits, .. }) => {
            (Some(account_id.to_string()), -i64::from(*credits), "offline_mint", String::new(), stream_key)
        }
        _ => return None,
    };
    Some([
        event.position.tx.into(),
        event.position.seq.into(),
        SqlValue::from(account_id),
        delta.into(),
        kind.into(),
        reason.into(),
        license_key.into(),
        timestamp(event.recorded_at).into(),
    ])
}

/// One pace of the ledger: its rows in a few multi-row statements (rows of different events
/// never touch each other, so they all wait for the end of the pace).
#[derive(Default)]
struct LedgerPace {
    values: Vec<SqlValue>,
}

impl PaceProjector for LedgerPace {
    fn statements(&mut self, event: &RecordedEvent, decoded: &AnyEvent) -> Vec<Statement> {
        self.values.extend(row(event, decoded).into_iter().flatten());
        Vec::new()
    }

    fn finish(&mut self) -> Vec<Statement> {
        INSERT_ROWS.statements(std::mem::take(&mut self.values))
    }
}

impl SqlProjection for CreditLedger {
    fn name(&self) -> &'static str {
        "credit_ledger"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_credit_ledger"]
    }

    fn statements(&self, event: &RecordedEvent, decoded: &AnyEvent) -> Vec<Statement> {
        row(event, decoded).map_or_else(Vec::new, |row| INSERT_ROWS.statements(row.into()))
    }

    fn pace(&self, _state: &[Vec<Option<String>>]) -> Option<Box<dyn PaceProjector + '_>> {
        Some(Box::<LedgerPace>::default())
    }

    fn canonical_queries(&self) -> &'static [&'static str] {
        &["SELECT account_id || '|' || CAST(delta AS TEXT) || '|' || kind || '|' || reason || '|' ||
              COALESCE(license_key, '~') || '|' || at
           FROM rm_credit_ledger ORDER BY pos_tx, pos_seq"]
    }
}
