use super::{timestamp, SqlProjection};
use licensd_domain::account::AccountEvent;
use licensd_domain::license::LicenseEvent;
use licensd_domain::AnyEvent;
use licensd_store::{RecordedEvent, SqlValue, Statement};

/// `rm_credit_ledger`: every grant, debit and billed auth call, per account, in log order.
pub struct CreditLedger;

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
            _ => return vec![],
        };
        vec![Statement::new(
            "INSERT INTO rm_credit_ledger (pos_tx, pos_seq, account_id, delta, kind, reason, license_key, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (pos_tx, pos_seq) DO NOTHING",
            [
                event.position.tx.into(),
                event.position.seq.into(),
                SqlValue::from(account_id),
                delta.into(),
                kind.into(),
                reason.into(),
                license_key.into(),
                timestamp(event.recorded_at).into(),
            ],
        )]
    }

    fn canonical_queries(&self) -> &'static [&'static str] {
        &["SELECT account_id || '|' || CAST(delta AS TEXT) || '|' || kind || '|' || reason || '|' ||
              COALESCE(license_key, '~') || '|' || at
           FROM rm_credit_ledger ORDER BY pos_tx, pos_seq"]
    }
}
