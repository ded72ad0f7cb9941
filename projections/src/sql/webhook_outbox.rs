use super::{timestamp, SqlProjection};
use licensd_domain::app::AppEvent;
use licensd_domain::license::LicenseEvent;
use licensd_domain::AnyEvent;
use licensd_store::{RecordedEvent, SqlValue, Statement};

/// Queues webhook deliveries for license events, to the webhooks subscribed when the event
/// happened. Its checkpoint moves with the queued rows, so no event is skipped or queued twice.
pub struct WebhookOutbox;

/// The webhook event a license event fires, and the HWID it concerns.
fn webhook_event(event: &LicenseEvent) -> Option<(&'static str, Option<&str>)> {
    Some(match event {
        LicenseEvent::LicenseCreated { .. } => ("license.created", None),
        LicenseEvent::ValidationBilled { .. } => ("license.validated", None),
        LicenseEvent::LicenseRevoked { .. } => ("license.revoked", None),
        LicenseEvent::LicenseActivated { .. } => ("license.activated", None),
        LicenseEvent::HwidBound { hwid, .. } => ("license.hwid_bound", Some(hwid.as_str())),
        LicenseEvent::HwidReset { .. } => ("license.hwid_reset", None),
        LicenseEvent::LicenseDeleted { .. } => ("license.deleted", None),
        _ => return None,
    })
}

const QUEUE: &str =
    "INSERT INTO webhook_deliveries (delivery_id, webhook_id, event, body, created_at, status, attempts,
        next_attempt_at)
     SELECT $1 || w.webhook_id, w.webhook_id, $2,
        '{\"event\":\"' || $2 || '\",\"timestamp\":\"' || $3 || '\",\"data\":{\"licenseKey\":\"' || l.license_key
          || '\",\"appId\":\"' || l.app_id || '\",\"status\":\"' || l.status || '\",\"hwid\":' || $4 || '}}',
        $3, 'pending', 0, $3
     FROM wh_webhooks w JOIN wh_licenses l ON l.app_id = w.app_id
     WHERE l.license_key = $5 AND w.enabled = 1 AND w.events LIKE '%,' || $2 || ',%'
     ON CONFLICT (delivery_id) DO NOTHING";

const UPSERT_WEBHOOK: &str = "INSERT INTO wh_webhooks (webhook_id, app_id, url, events, enabled, secret)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (webhook_id) DO UPDATE SET url = excluded.url, events = excluded.events,
        enabled = excluded.enabled, secret = excluded.secret";

impl WebhookOutbox {
    fn license_statements(event: &RecordedEvent, key: &str, license_event: &LicenseEvent) -> Vec<Statement> {
        let mut statements = Vec::new();
        let set_status = |status: &str| {
            Statement::new("UPDATE wh_licenses SET status = $1 WHERE license_key = $2", [status.into(), key.into()])
        };
        match license_event {
            LicenseEvent::LicenseCreated { app_id, .. } => statements.push(Statement::new(
                "INSERT INTO wh_licenses (license_key, app_id, status) VALUES ($1, $2, 'active')
                 ON CONFLICT (license_key) DO UPDATE SET app_id = excluded.app_id, status = 'active'",
                [key.into(), app_id.to_string().into()],
            )),
            LicenseEvent::LicenseRevoked { .. } => statements.push(set_status("revoked")),
            LicenseEvent::LicenseActivated { .. } => statements.push(set_status("active")),
            LicenseEvent::LicenseDeleted { .. } => statements.push(set_status("deleted")),
            _ => {}
        }
        if let Some((name, hwid)) = webhook_event(license_event) {
            let hwid = serde_json::to_string(&hwid).unwrap_or_else(|_| "null".into());
            let delivery_prefix = format!("{}:{}:", event.position.tx, event.position.seq);
            statements.push(Statement::new(
                QUEUE,
                [
                    delivery_prefix.into(),
                    name.into(),
                    timestamp(event.recorded_at).into(),
                    SqlValue::from(hwid),
                    key.into(),
                ],
            ));
        }
        statements
    }
}

impl SqlProjection for WebhookOutbox {
    fn name(&self) -> &'static str {
        "webhook_outbox"
    }

    fn version(&self) -> i32 {
        1
    }

    /// `webhook_deliveries` is deliberately not reset: a rebuild must not send anything again.
    fn tables(&self) -> &'static [&'static str] {
        &["wh_webhooks", "wh_licenses"]
    }

    fn statements(&self, event: &RecordedEvent, decoded: &AnyEvent) -> Vec<Statement> {
        let Some((_, id)) = event.stream_id.split_once('-') else { return vec![] };
        match decoded {
            AnyEvent::License(license_event) => Self::license_statements(event, id, license_event),
            AnyEvent::App(AppEvent::WebhookCreated { webhook, .. } | AppEvent::WebhookUpdated { webhook, .. }) => {
                vec![Statement::new(
                    UPSERT_WEBHOOK,
                    [
                        webhook.webhook_id.as_str().into(),
                        id.into(),
                        webhook.url.as_str().into(),
                        format!(",{},", webhook.events.join(",")).into(),
                        i64::from(webhook.enabled).into(),
                        webhook.secret.0.as_str().into(),
                    ],
                )]
            }
            AnyEvent::App(AppEvent::WebhookDeleted { webhook_id, .. }) => {
                vec![Statement::new("DELETE FROM wh_webhooks WHERE webhook_id = $1", [webhook_id.as_str().into()])]
            }
            _ => vec![],
        }
    }

    fn canonical_queries(&self) -> &'static [&'static str] {
        &[
            "SELECT webhook_id || '|' || app_id || '|' || url || '|' || events || '|' || CAST(enabled AS TEXT)
             FROM wh_webhooks ORDER BY webhook_id",
            "SELECT license_key || '|' || app_id || '|' || status FROM wh_licenses ORDER BY license_key",
            "SELECT delivery_id || '|' || webhook_id || '|' || event || '|' || body FROM webhook_deliveries
             ORDER BY delivery_id",
        ]
    }
}
