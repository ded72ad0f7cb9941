use super::{timestamp, SqlProjection};
use licensd_domain::commerce::CommerceEvent;
use licensd_domain::license::LicenseEvent;
use licensd_domain::AnyEvent;
use licensd_store::{RecordedEvent, SqlValue, Statement};

/// The commerce ledger as rows (the event browser, and the worker's queue of pending entries),
/// plus the provider references of fulfilled licenses.
pub struct CommerceLedger;

/// The serde name of a reason enum (`no_mapping_for_price`, ...).
fn tag(value: &impl serde::Serialize) -> SqlValue {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).into()
}

fn ledger_statement(event: &CommerceEvent, stream_id: &str, at: String) -> Statement {
    use CommerceEvent as E;
    match event {
        E::CommerceEventReceived {
            connection_id, account_id, provider, external_id, event_type, received_at, ..
        } => Statement::new(
            "INSERT INTO rm_commerce_events (stream_id, account_id, connection_id, provider, external_id, event_type,
                status, attempts, retry_count, license_keys, redacted, received_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, 0, ',', 0, $7, $8)
             ON CONFLICT (stream_id) DO NOTHING",
            [
                stream_id.into(),
                account_id.to_string().into(),
                connection_id.to_string().into(),
                provider.as_str().into(),
                external_id.clone().into(),
                event_type.clone().into(),
                timestamp(*received_at).into(),
                at.into(),
            ],
        ),
        E::CommerceProcessingStarted { attempt, .. } => Statement::new(
            "UPDATE rm_commerce_events SET attempts = $1, updated_at = $2 WHERE stream_id = $3",
            [i64::from(*attempt).into(), at.into(), stream_id.into()],
        ),
        E::CommerceEventProcessed { licenses, .. } => {
            let keys: String = licenses.iter().map(|k| format!("{k},")).collect();
            Statement::new(
                "UPDATE rm_commerce_events SET status = 'processed', reason = NULL, error = NULL, retry_at = NULL,
                    license_keys = $1, updated_at = $2 WHERE stream_id = $3",
                [format!(",{keys}").into(), at.into(), stream_id.into()],
            )
        }
        E::CommerceEventSkipped { reason, .. } => Statement::new(
            "UPDATE rm_commerce_events SET status = 'skipped', reason = $1, error = NULL, retry_at = NULL,
                updated_at = $2 WHERE stream_id = $3",
            [tag(reason), at.into(), stream_id.into()],
        ),
        E::CommerceEventFailed { error, retry_at, .. } => Statement::new(
            "UPDATE rm_commerce_events SET status = 'failed', reason = NULL, error = $1, retry_at = $2,
                retry_count = retry_count + 1, updated_at = $3 WHERE stream_id = $4",
            [error.clone().into(), timestamp(*retry_at).into(), at.into(), stream_id.into()],
        ),
        E::CommerceEventHeld { reason, error, .. } => Statement::new(
            "UPDATE rm_commerce_events SET status = 'held', reason = $1, error = $2, retry_at = NULL,
                updated_at = $3 WHERE stream_id = $4",
            [tag(reason), error.clone().into(), at.into(), stream_id.into()],
        ),
        E::CommerceReplayRequested { .. } => Statement::new(
            "UPDATE rm_commerce_events SET status = 'pending', reason = NULL, error = NULL, retry_at = NULL,
                attempts = 0, retry_count = 0, updated_at = $1 WHERE stream_id = $2",
            [at.into(), stream_id.into()],
        ),
        E::CommerceEventRedacted { .. } => Statement::new(
            "UPDATE rm_commerce_events SET redacted = 1, updated_at = $1 WHERE stream_id = $2",
            [at.into(), stream_id.into()],
        ),
    }
}

fn link_statements(event: &LicenseEvent, key: &str) -> Vec<Statement> {
    match event {
        LicenseEvent::CommerceLinked { account_id, app_id, provider, mapping_id, refs, .. } => refs
            .iter()
            .map(|reference| {
                Statement::new(
                    "INSERT INTO rm_commerce_links (account_id, provider, ref, license_key, app_id, mapping_id)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    [
                        account_id.to_string().into(),
                        provider.as_str().into(),
                        reference.clone().into(),
                        key.into(),
                        app_id.to_string().into(),
                        mapping_id.to_string().into(),
                    ],
                )
            })
            .collect(),
        LicenseEvent::CommerceUnlinked { .. } | LicenseEvent::LicenseDeleted { .. } => {
            vec![Statement::new("DELETE FROM rm_commerce_links WHERE license_key = $1", [key.into()])]
        }
        _ => vec![],
    }
}

impl SqlProjection for CommerceLedger {
    fn name(&self) -> &'static str {
        "commerce_ledger"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_commerce_events", "rm_commerce_links"]
    }

    fn statements(&self, event: &RecordedEvent, decoded: &AnyEvent) -> Vec<Statement> {
        let at = timestamp(event.recorded_at);
        match decoded {
            AnyEvent::Commerce(e) => vec![ledger_statement(e, &event.stream_id, at)],
            AnyEvent::License(e) => {
                let key = event.stream_id.split_once('-').map_or("", |(_, key)| key);
                link_statements(e, key)
            }
            _ => vec![],
        }
    }

    fn canonical_queries(&self) -> &'static [&'static str] {
        &[
            "SELECT stream_id || '|' || account_id || '|' || connection_id || '|' || provider || '|' || external_id
                || '|' || event_type || '|' || status || '|' || COALESCE(reason, '~') || '|' || COALESCE(error, '~')
                || '|' || CAST(attempts AS TEXT) || '|' || CAST(retry_count AS TEXT) || '|'
                || COALESCE(retry_at, '~') || '|' || license_keys || '|' || CAST(redacted AS TEXT) || '|'
                || received_at || '|' || updated_at
             FROM rm_commerce_events ORDER BY stream_id",
            "SELECT account_id || '|' || provider || '|' || ref || '|' || license_key || '|' || app_id || '|'
                || mapping_id
             FROM rm_commerce_links ORDER BY account_id, provider, ref, license_key",
        ]
    }
}
