use super::{timestamp, PaceProjector, SqlProjection};
use licensd_domain::app::{AppEvent, Webhook};
use licensd_domain::app_user::AppUserEvent;
use licensd_domain::license::LicenseEvent;
use licensd_domain::{AnyEvent, AppId};
use licensd_store::{RecordedEvent, SqlValue, Statement};
use std::collections::HashMap;

/// Queues webhook deliveries for license events, to the webhooks subscribed when the event
/// happened. Its checkpoint moves with the queued rows, so no event is skipped or queued twice.
/// A license event no enabled webhook subscribes to queues nothing and costs no statement (most
/// validations: apps without webhooks); the runner's pace keeps the subscriptions in log order.
pub struct WebhookOutbox;

/// The webhooks (`wh_webhooks`) as of the projection's checkpoint, kept current by the webhook
/// events of the pace: which app subscribes to which license event.
#[derive(Debug, Default)]
struct Subscriptions {
    /// By webhook id: its app, its events as stored (`,license.created,license.revoked,`),
    /// and whether it is enabled.
    webhooks: HashMap<String, (String, String, bool)>,
}

impl Subscriptions {
    fn from_rows(rows: &[Vec<Option<String>>]) -> Self {
        let webhooks = rows
            .iter()
            .filter_map(|row| match row.as_slice() {
                [Some(id), Some(app), Some(events), Some(enabled)] => {
                    Some((id.clone(), (app.clone(), events.clone(), enabled != "0")))
                }
                _ => None,
            })
            .collect();
        Self { webhooks }
    }

    /// Whether an enabled webhook (of `app`, when the event names it) subscribes to `event`.
    fn wanted(&self, app: Option<&str>, event: &str) -> bool {
        let tag = format!(",{event},");
        self.webhooks
            .values()
            .any(|(owner, events, enabled)| *enabled && app.is_none_or(|app| app == owner) && events.contains(&tag))
    }

    fn follow(&mut self, app_id: &str, event: &AppEvent) {
        match event {
            AppEvent::WebhookCreated { webhook, .. } | AppEvent::WebhookUpdated { webhook, .. } => {
                let entry = (app_id.to_string(), stored_events(webhook), webhook.enabled);
                self.webhooks.insert(webhook.webhook_id.clone(), entry);
            }
            AppEvent::WebhookDeleted { webhook_id, .. } => {
                self.webhooks.remove(webhook_id.as_str());
            }
            _ => {}
        }
    }
}

/// A webhook's events as `wh_webhooks.events` keeps them: comma-delimited on both sides, so a
/// `LIKE '%,name,%'` matches whole names only.
fn stored_events(webhook: &Webhook) -> String {
    format!(",{},", webhook.events.join(","))
}

/// One pace of the outbox: queues only what a webhook wants at that point of the log.
struct OutboxPace {
    subscriptions: Subscriptions,
}

impl PaceProjector for OutboxPace {
    fn statements(&mut self, event: &RecordedEvent, decoded: &AnyEvent) -> Vec<Statement> {
        if let (AnyEvent::App(app_event), Some((_, app_id))) = (decoded, event.stream_id.split_once('-')) {
            self.subscriptions.follow(app_id, app_event);
        }
        WebhookOutbox::project(event, decoded, |app, name| self.subscriptions.wanted(app, name))
    }
}

/// The webhook event a license event fires, and the HWID it concerns.
fn webhook_event(event: &LicenseEvent) -> Option<(&'static str, Option<&str>)> {
    Some(match event {
        LicenseEvent::LicenseCreated { .. } => ("license.created", None),
        LicenseEvent::ValidationBilled { hwid, .. } => ("license.validated", hwid.as_deref()),
        LicenseEvent::LicenseRevoked { .. } => ("license.revoked", None),
        LicenseEvent::LicenseActivated { .. } => ("license.activated", None),
        LicenseEvent::HwidBound { hwid, .. } => ("license.hwid_bound", Some(hwid.as_str())),
        LicenseEvent::HwidReset { .. } => ("license.hwid_reset", None),
        // One machine's binding cleared: the documented event, naming the machine (a full reset
        // names none). Releases logged before this fired nothing; the projection's version is
        // kept, since a replay would queue every past delivery again.
        LicenseEvent::HwidReleased { hwid, .. } => ("license.hwid_reset", Some(hwid.as_str())),
        LicenseEvent::LicenseDeleted { .. } => ("license.deleted", None),
        _ => return None,
    })
}

/// The webhook event an app-user event fires, and the user's app. Only ids travel: the login
/// and comment are personal data, kept in the vault.
fn user_webhook_event(event: &AppUserEvent) -> Option<(&'static str, AppId)> {
    Some(match event {
        AppUserEvent::AppUserCreated { app_id, .. } => ("user.created", *app_id),
        AppUserEvent::AppUserDeleted { app_id, .. } => ("user.deleted", *app_id),
        AppUserEvent::AppUserBlacklisted { app_id, .. } => ("user.blacklisted", *app_id),
        _ => return None,
    })
}

/// $1 delivery id prefix, $2 event, $3 time, $4 user id, $5 app id.
const QUEUE_USER: &str =
    "INSERT INTO webhook_deliveries (delivery_id, webhook_id, event, body, created_at, status, attempts,
        next_attempt_at)
     SELECT $1 || w.webhook_id, w.webhook_id, $2,
        '{\"event\":\"' || $2 || '\",\"timestamp\":\"' || $3 || '\",\"data\":{\"userId\":\"' || $4
          || '\",\"appId\":\"' || $5 || '\"}}',
        $3, 'pending', 0, $3
     FROM wh_webhooks w
     WHERE w.app_id = $5 AND w.enabled = 1 AND w.events LIKE '%,' || $2 || ',%'
     ON CONFLICT (delivery_id) DO NOTHING";

/// $1 delivery id prefix, $2 event, $3 time, $4 hwid (JSON), $5 license key, $6 and $7 the
/// event's log position (which orders the license's deliveries, see workers/src/webhooks.rs).
const QUEUE: &str =
    "INSERT INTO webhook_deliveries (delivery_id, webhook_id, event, body, created_at, status, attempts,
        next_attempt_at, subject, pos_tx, pos_seq)
     SELECT $1 || w.webhook_id, w.webhook_id, $2,
        '{\"event\":\"' || $2 || '\",\"timestamp\":\"' || $3 || '\",\"data\":{\"licenseKey\":\"' || l.license_key
          || '\",\"appId\":\"' || l.app_id || '\",\"status\":\"' || l.status || '\",\"hwid\":' || $4 || '}}',
        $3, 'pending', 0, $3, $5, $6, $7
     FROM wh_webhooks w JOIN wh_licenses l ON l.app_id = w.app_id
     WHERE l.license_key = $5 AND w.enabled = 1 AND w.events LIKE '%,' || $2 || ',%'
     ON CONFLICT (delivery_id) DO NOTHING";

const UPSERT_WEBHOOK: &str = "INSERT INTO wh_webhooks (webhook_id, app_id, url, events, enabled, secret)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (webhook_id) DO UPDATE SET url = excluded.url, events = excluded.events,
        enabled = excluded.enabled, secret = excluded.secret";

/// A rotation's new ciphertext for a webhook's secret (the app id guards against a stray id).
const RESEAL_WEBHOOK: &str = "UPDATE wh_webhooks SET secret = $1 WHERE webhook_id = $2 AND app_id = $3";

impl WebhookOutbox {
    /// The rows `wh_webhooks` gives [`Subscriptions`].
    const SUBSCRIPTIONS: &'static str =
        "SELECT webhook_id, app_id, events, CAST(enabled AS TEXT) FROM wh_webhooks ORDER BY webhook_id";

    /// The writes for one event; `wanted(app, event)` says whether a delivery may be due (the
    /// queueing statement itself still joins the webhooks as they are at that point).
    fn project(
        event: &RecordedEvent,
        decoded: &AnyEvent,
        wanted: impl Fn(Option<&str>, &str) -> bool,
    ) -> Vec<Statement> {
        let Some((_, id)) = event.stream_id.split_once('-') else { return vec![] };
        match decoded {
            AnyEvent::License(license_event) => Self::license_statements(event, id, license_event, wanted),
            AnyEvent::App(AppEvent::WebhookCreated { webhook, .. } | AppEvent::WebhookUpdated { webhook, .. }) => {
                vec![Statement::new(
                    UPSERT_WEBHOOK,
                    [
                        webhook.webhook_id.as_str().into(),
                        id.into(),
                        webhook.url.as_str().into(),
                        stored_events(webhook).into(),
                        i64::from(webhook.enabled).into(),
                        webhook.secret.0.as_str().into(),
                    ],
                )]
            }
            AnyEvent::App(AppEvent::SecretsResealed { resealed, .. }) => resealed
                .webhooks
                .iter()
                .map(|(webhook_id, secret)| {
                    Statement::new(RESEAL_WEBHOOK, [secret.0.as_str().into(), webhook_id.as_str().into(), id.into()])
                })
                .collect(),
            AnyEvent::AppUser(user_event) => {
                let Some((name, app_id)) = user_webhook_event(user_event) else { return vec![] };
                let app_id = app_id.to_string();
                if !wanted(Some(&app_id), name) {
                    return vec![];
                }
                let delivery_prefix = format!("{}:{}:", event.position.tx, event.position.seq);
                let at = timestamp(event.recorded_at);
                vec![Statement::new(
                    QUEUE_USER,
                    [delivery_prefix.into(), name.into(), at.into(), id.into(), app_id.into()],
                )]
            }
            AnyEvent::App(AppEvent::WebhookDeleted { webhook_id, .. }) => {
                vec![Statement::new("DELETE FROM wh_webhooks WHERE webhook_id = $1", [webhook_id.as_str().into()])]
            }
            _ => vec![],
        }
    }

    fn license_statements(
        event: &RecordedEvent,
        key: &str,
        license_event: &LicenseEvent,
        wanted: impl Fn(Option<&str>, &str) -> bool,
    ) -> Vec<Statement> {
        let mut statements = Vec::new();
        let set_status = |status: &str| {
            Statement::new("UPDATE wh_licenses SET status = $1 WHERE license_key = $2", [status.into(), key.into()])
        };
        let mut app = None;
        match license_event {
            LicenseEvent::LicenseCreated { app_id, .. } => {
                let app_id = app_id.to_string();
                statements.push(Statement::new(
                    "INSERT INTO wh_licenses (license_key, app_id, status) VALUES ($1, $2, 'active')
                     ON CONFLICT (license_key) DO UPDATE SET app_id = excluded.app_id, status = 'active'",
                    [key.into(), app_id.as_str().into()],
                ));
                app = Some(app_id);
            }
            LicenseEvent::LicenseRevoked { .. } => statements.push(set_status("revoked")),
            LicenseEvent::LicenseActivated { .. } => statements.push(set_status("active")),
            LicenseEvent::LicenseDeleted { .. } => statements.push(set_status("deleted")),
            _ => {}
        }
        if let Some((name, hwid)) = webhook_event(license_event).filter(|(name, _)| wanted(app.as_deref(), name)) {
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
                    event.position.tx.into(),
                    event.position.seq.into(),
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

    /// Without the pace's subscriptions: queue every license event and let the join decide.
    fn statements(&self, event: &RecordedEvent, decoded: &AnyEvent) -> Vec<Statement> {
        Self::project(event, decoded, |_, _| true)
    }

    fn state_query(&self) -> Option<&'static str> {
        Some(Self::SUBSCRIPTIONS)
    }

    fn pace(&self, state: &[Vec<Option<String>>]) -> Option<Box<dyn PaceProjector + '_>> {
        Some(Box::new(OutboxPace { subscriptions: Subscriptions::from_rows(state) }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use licensd_domain::{AccountId, AppId, DomainEvent, EventData, LicenseKey, Sealed};
    use licensd_store::{raw_json, Position};

    fn recorded(seq: i64, stream_id: String, event: &impl DomainEvent) -> RecordedEvent {
        let data = EventData::encode(event);
        RecordedEvent {
            position: Position { tx: 0, seq },
            event_id: uuid::Uuid::now_v7(),
            stream_id,
            version: 1,
            event_type: data.event_type.to_string(),
            schema_version: data.schema_version,
            payload: raw_json(&data.payload),
            metadata: raw_json(&serde_json::json!({})),
            recorded_at: chrono::Utc::now(),
        }
    }

    fn queued(statements: &[Statement]) -> usize {
        statements.iter().filter(|s| s.sql == QUEUE).count()
    }

    /// Runs events through one pace of the outbox, as the runner does; the queueing statements
    /// each event produced.
    fn pace(state: &[Vec<Option<String>>], events: &[(String, AnyEvent)]) -> Vec<usize> {
        let mut pace = WebhookOutbox.pace(state).expect("the outbox keeps state");
        let mut out = Vec::new();
        for (seq, (stream, decoded)) in (1..).zip(events) {
            let event = match decoded {
                AnyEvent::License(e) => recorded(seq, stream.clone(), e),
                AnyEvent::App(e) => recorded(seq, stream.clone(), e),
                _ => unreachable!("the test uses license and app events"),
            };
            out.push(queued(&pace.statements(&event, decoded)));
        }
        out
    }

    fn webhook_row(app: &AppId, events: &str, enabled: &str) -> Vec<Vec<Option<String>>> {
        vec![vec![Some("wh_1".into()), Some(app.to_string()), Some(events.into()), Some(enabled.into())]]
    }

    /// Fails on a stateless outbox (before this change every license event queued a statement).
    #[test]
    fn events_no_webhook_subscribes_to_queue_nothing_and_a_webhook_counts_from_its_place_in_the_log() {
        let (app, other_app) = (AppId::new(), AppId::new());
        let license = "license-K1".to_string();
        let billed = AnyEvent::License(LicenseEvent::ValidationBilled {
            account_id: AccountId::new(),
            credits: 1,
            nonce: None,
            hwid: None,
            at: chrono::Utc::now(),
        });
        let revoked = AnyEvent::License(LicenseEvent::LicenseRevoked { at: chrono::Utc::now() });
        let created_elsewhere = AnyEvent::License(LicenseEvent::LicenseCreated {
            key: LicenseKey::from_random([7; 16]),
            app_id: other_app,
            account_id: AccountId::new(),
            expires_at: None,
            max_hwid_slots: 1,
            label: None,
            created_at: chrono::Utc::now(),
        });
        let subscribe = AnyEvent::App(AppEvent::WebhookCreated {
            webhook: Webhook {
                webhook_id: "wh_1".into(),
                url: "https://example.com/hook".into(),
                events: vec!["license.revoked".into()],
                enabled: true,
                secret: Sealed("sealed".into()),
                created_at: chrono::Utc::now(),
            },
            at: chrono::Utc::now(),
        });

        // No webhook anywhere: a validation (the hot path's event) costs no outbox statement.
        assert_eq!(pace(&[], &[(license.clone(), billed.clone())]), [0]);
        // A webhook for revocations and creations: validations still queue nothing, a revocation
        // does, and a license created in another app is not queued for it.
        let state = webhook_row(&app, ",license.revoked,license.created,", "1");
        let events = [(license.clone(), billed.clone()), (license.clone(), revoked.clone())];
        assert_eq!(pace(&state, &events), [0, 1]);
        assert_eq!(pace(&state, &[("license-K2".into(), created_elsewhere)]), [0], "another app's license");
        // Decided in log order: a revocation before the webhook's creation queues nothing, one
        // after it does, within the same pace.
        let events =
            [(license.clone(), revoked.clone()), (format!("app-{app}"), subscribe), (license.clone(), revoked.clone())];
        assert_eq!(pace(&[], &events), [0, 0, 1]);
        // A disabled webhook wants nothing.
        assert_eq!(pace(&webhook_row(&app, ",license.revoked,", "0"), &[(license, revoked)]), [0]);
    }
}
