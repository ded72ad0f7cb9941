use super::{timestamp, SqlProjection};
use licensd_domain::license::LicenseEvent;
use licensd_domain::AnyEvent;
use licensd_store::{RecordedEvent, SqlValue, Statement};

/// `rm_licenses`: one row per live license, for listings and dashboards.
pub struct Licenses;

const SET_STATUS: &str = "UPDATE rm_licenses SET status = $1, updated_at = $2 WHERE license_key = $3";

impl SqlProjection for Licenses {
    fn name(&self) -> &'static str {
        "licenses"
    }

    fn version(&self) -> i32 {
        // 2: the buyer email's keyed index (`email_digest`).
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_licenses"]
    }

    fn statements(&self, event: &RecordedEvent, decoded: &AnyEvent) -> Vec<Statement> {
        let AnyEvent::License(license_event) = decoded else { return vec![] };
        let Some((_, key)) = event.stream_id.split_once('-') else { return vec![] };
        let key = SqlValue::from(key);
        let at = SqlValue::from(timestamp(event.recorded_at));
        let statement = match license_event {
            LicenseEvent::LicenseCreated {
                app_id, account_id, expires_at, max_hwid_slots, label, created_at, ..
            } => Statement::new(
                "INSERT INTO rm_licenses (license_key, app_id, account_id, status, expires_at, max_hwid_slots,
                        hwid_count, label, created_at, updated_at)
                     VALUES ($1, $2, $3, 'active', $4, $5, 0, $6, $7, $8)
                     ON CONFLICT (license_key) DO UPDATE SET app_id = excluded.app_id,
                        account_id = excluded.account_id, status = 'active', expires_at = excluded.expires_at,
                        max_hwid_slots = excluded.max_hwid_slots, hwid_count = 0, label = excluded.label,
                        email_digest = NULL, created_at = excluded.created_at, updated_at = excluded.updated_at",
                [
                    key,
                    app_id.to_string().into(),
                    account_id.to_string().into(),
                    expires_at.map(timestamp).into(),
                    i64::from(*max_hwid_slots).into(),
                    label.clone().into(),
                    timestamp(*created_at).into(),
                    at,
                ],
            ),
            LicenseEvent::LicenseRevoked { .. } => Statement::new(SET_STATUS, ["revoked".into(), at, key]),
            LicenseEvent::LicenseActivated { .. } => Statement::new(SET_STATUS, ["active".into(), at, key]),
            LicenseEvent::LicenseExtended { expires_at, .. } => Statement::new(
                "UPDATE rm_licenses SET expires_at = $1, updated_at = $2 WHERE license_key = $3",
                [expires_at.map(timestamp).into(), at, key],
            ),
            LicenseEvent::HwidBound { .. } => Statement::new(
                "UPDATE rm_licenses SET hwid_count = hwid_count + 1, updated_at = $1 WHERE license_key = $2",
                [at, key],
            ),
            LicenseEvent::HwidReleased { .. } => Statement::new(
                "UPDATE rm_licenses SET hwid_count = hwid_count - 1, updated_at = $1 WHERE license_key = $2",
                [at, key],
            ),
            LicenseEvent::HwidReset { .. } => Statement::new(
                "UPDATE rm_licenses SET hwid_count = 0, updated_at = $1 WHERE license_key = $2",
                [at, key],
            ),
            LicenseEvent::VariablesSet { .. }
            | LicenseEvent::LicenseLevelsSet { .. }
            | LicenseEvent::LicenseMaxSessionsSet { .. }
            | LicenseEvent::LicenseLinkedToUser { .. }
            | LicenseEvent::LicenseUnlinkedFromUser { .. } => {
                Statement::new("UPDATE rm_licenses SET updated_at = $1 WHERE license_key = $2", [at, key])
            }
            LicenseEvent::LicenseDeleted { .. } => {
                Statement::new("DELETE FROM rm_licenses WHERE license_key = $1", [key])
            }
            LicenseEvent::ValidationBilled { .. }
            | LicenseEvent::HeartbeatBilled { .. }
            | LicenseEvent::OfflineActivated { .. }
            | LicenseEvent::OfflineFileMinted { .. }
            | LicenseEvent::CommerceLinked { .. }
            | LicenseEvent::CommerceUnlinked { .. }
            | LicenseEvent::PortalResetRecorded { .. } => return vec![],
            // An address set before digests were recorded is not findable (NULL), never the
            // address it replaced.
            LicenseEvent::BuyerEmailSet { email_digest, .. } => Statement::new(
                "UPDATE rm_licenses SET email_digest = $1 WHERE license_key = $2",
                [email_digest.clone().into(), key],
            ),
            LicenseEvent::BuyerEmailRemoved { .. } => {
                Statement::new("UPDATE rm_licenses SET email_digest = NULL WHERE license_key = $1", [key])
            }
        };
        vec![statement]
    }

    fn canonical_queries(&self) -> &'static [&'static str] {
        &["SELECT license_key || '|' || app_id || '|' || account_id || '|' || status || '|' ||
              COALESCE(expires_at, '~') || '|' || CAST(max_hwid_slots AS TEXT) || '|' ||
              CAST(hwid_count AS TEXT) || '|' || COALESCE(label, '~') || '|' || created_at || '|' || updated_at || '|' ||
              COALESCE(email_digest, '~')
           FROM rm_licenses ORDER BY license_key"]
    }
}
