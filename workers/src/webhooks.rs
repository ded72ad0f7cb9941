//! Webhook delivery: signed POSTs of the rows the `webhook_outbox` projection queues, retried
//! with exponential backoff, many at a time so one slow receiver cannot hold up the rest.

use crate::destinations::{DestinationPolicy, GuardedResolver};
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use licensd_commands::Commands;
use licensd_domain::Sealed;
use licensd_store::{SqlValue, Statement, Store, StoreError};
use sha2::Sha256;
use std::time::Duration;
use tokio::sync::watch;

/// `sha256=` + hex HMAC-SHA256 of the raw body, as receivers verify it.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Per-request timeout (the documented 10 s).
    pub timeout: Duration,
    /// Attempts before a delivery is marked failed.
    pub max_attempts: u32,
    /// Wait after the first failure; doubles after each further one (capped at an hour).
    pub retry_base: Duration,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Deliveries in flight at once to any one webhook.
    pub per_webhook: usize,
    /// How often due deliveries are looked for.
    pub poll: Duration,
    pub destinations: DestinationPolicy,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            retry_base: Duration::from_secs(5),
            concurrency: 16,
            per_webhook: 4,
            poll: Duration::from_millis(250),
            destinations: DestinationPolicy::default(),
        }
    }
}

/// Signs and POSTs one webhook body, only to destinations the policy allows.
#[derive(Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    policy: DestinationPolicy,
}

impl WebhookSender {
    pub fn new(timeout: Duration, policy: DestinationPolicy) -> Result<Self, crate::outbound::ClientError> {
        let builder = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("licensd/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(std::sync::Arc::new(GuardedResolver(policy)));
        Ok(Self { client: crate::outbound::client("webhooks", builder)?, policy })
    }

    /// The receiver's status code, or why there was none.
    pub async fn send(&self, url: &str, event: &str, timestamp: &str, body: &str, secret: &str) -> Result<u16, String> {
        self.policy.check_url(url)?;
        let response = self
            .client
            .post(url)
            .header("Content-Type", "application/json")
            .header("X-AuthForge-Event", event)
            .header("X-AuthForge-Timestamp", timestamp)
            .header("X-AuthForge-Signature", signature(secret, body.as_bytes()))
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| if e.is_timeout() { "timeout".to_string() } else { format!("connection failed: {e}") })?;
        Ok(response.status().as_u16())
    }
}

fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

struct Due {
    delivery_id: String,
    webhook_id: String,
    event: String,
    body: String,
    timestamp: String,
    attempts: u32,
    url: String,
    secret: Sealed,
}

/// Due deliveries, oldest first, at most `$3` per webhook: a receiver that hangs holds at most
/// that many of the dispatcher's slots, so the others keep being served. A license's deliveries
/// to one webhook go in log order, one at a time: one is due only when no earlier delivery of the
/// same license to that webhook is still pending (in flight, or waiting for its retry). One that
/// gave up (`failed`) no longer holds the others.
const DUE: &str = "SELECT d.delivery_id, d.webhook_id, d.event, d.body, d.created_at, CAST(d.attempts AS TEXT), w.url,
        w.secret
     FROM (SELECT delivery_id, webhook_id, event, body, created_at, attempts, next_attempt_at,
                  ROW_NUMBER() OVER (PARTITION BY webhook_id ORDER BY next_attempt_at) AS rank
           FROM webhook_deliveries p
           WHERE status = 'pending' AND next_attempt_at <= $1
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e
                             WHERE e.webhook_id = p.webhook_id AND e.subject = p.subject AND e.status = 'pending'
                               AND (e.pos_tx < p.pos_tx OR (e.pos_tx = p.pos_tx AND e.pos_seq < p.pos_seq)))) d
     JOIN wh_webhooks w ON w.webhook_id = d.webhook_id
     WHERE d.rank <= $3 AND w.enabled = 1
     ORDER BY d.next_attempt_at LIMIT $2";

const RECORD: &str = "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, last_attempt_at = $2,
        last_status = $3, last_error = $4, next_attempt_at = $5
     WHERE delivery_id = $6";

pub struct Dispatcher {
    store: Store,
    commands: Commands,
    sender: WebhookSender,
    config: WebhookConfig,
}

impl Dispatcher {
    pub fn new(store: Store, commands: Commands, config: WebhookConfig) -> Result<Self, crate::outbound::ClientError> {
        Ok(Self { sender: WebhookSender::new(config.timeout, config.destinations)?, store, commands, config })
    }

    async fn due(&self, now: DateTime<Utc>) -> Result<Vec<Due>, StoreError> {
        let args = [
            iso(now).into(),
            SqlValue::from(self.config.concurrency as i64),
            SqlValue::from(self.config.per_webhook as i64),
        ];
        let rows = self.store.query_rows(DUE, &args).await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let mut cols = row.into_iter().map(Option::unwrap_or_default);
                Some(Due {
                    delivery_id: cols.next()?,
                    webhook_id: cols.next()?,
                    event: cols.next()?,
                    body: cols.next()?,
                    timestamp: cols.next()?,
                    attempts: cols.next()?.parse().ok()?,
                    url: cols.next()?,
                    secret: Sealed(cols.next()?),
                })
            })
            .collect())
    }

    /// Attempts one delivery and records the outcome.
    async fn deliver(&self, due: Due) -> Result<(), StoreError> {
        let outcome = match self.commands.open_webhook_secret(&due.webhook_id, &due.secret) {
            Ok(secret) => self.sender.send(&due.url, &due.event, &due.timestamp, &due.body, &secret).await,
            Err(e) => Err(format!("cannot open the webhook secret: {e}")),
        };
        let now = Utc::now();
        let attempts = due.attempts + 1;
        let (status, code, error, next) = match outcome {
            Ok(code) if (200..300).contains(&code) => ("delivered", Some(code), None, now),
            failure => {
                let (code, error) = match failure {
                    Ok(code) => (Some(code), format!("receiver answered {code}")),
                    Err(error) => (None, error),
                };
                let backoff = self.config.retry_base.saturating_mul(1 << attempts.saturating_sub(1).min(20));
                let backoff = chrono::Duration::from_std(backoff.min(Duration::from_secs(3600))).unwrap_or_default();
                let status = if attempts >= self.config.max_attempts { "failed" } else { "pending" };
                (status, code, Some(error), now + backoff)
            }
        };
        let counters = &crate::metrics::COUNTERS;
        crate::metrics::count(match status {
            "delivered" => &counters.webhook_delivered,
            "failed" => &counters.webhook_gave_up,
            _ => &counters.webhook_attempt_failed,
        });
        tracing::debug!(delivery = due.delivery_id, status, attempts, "webhook attempt");
        let record = Statement::new(
            RECORD,
            [
                status.into(),
                iso(now).into(),
                SqlValue::Int(code.map(i64::from)),
                SqlValue::Text(error),
                iso(next).into(),
                due.delivery_id.into(),
            ],
        );
        self.store.execute_read_models(&[record]).await.map(drop)
    }

    /// Delivers whatever is due until `stop`, keeping up to `concurrency` attempts in flight:
    /// each finished attempt frees its slot at once, so a receiver that hangs until the timeout
    /// delays no one else's deliveries. In-flight attempts finish (bounded by the timeout) on stop.
    pub async fn run(self: std::sync::Arc<Self>, mut stop: watch::Receiver<bool>) {
        let this = self;
        let mut in_flight = tokio::task::JoinSet::new();
        // The delivery each running attempt is for (by task id, so even a panicked one is freed).
        let mut busy = std::collections::HashMap::new();
        while !*stop.borrow() {
            if in_flight.len() < this.config.concurrency {
                match this.due(Utc::now()).await {
                    Ok(due) => {
                        for due in due {
                            if in_flight.len() >= this.config.concurrency {
                                break;
                            }
                            if busy.values().any(|id| *id == due.delivery_id) {
                                continue;
                            }
                            let id = due.delivery_id.clone();
                            let dispatcher = this.clone();
                            busy.insert(in_flight.spawn(async move { dispatcher.deliver(due).await }).id(), id);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read due webhook deliveries"),
                }
            }
            tokio::select! {
                Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => record_done(&mut busy, done),
                _ = tokio::time::sleep(this.config.poll) => {}
                _ = stop.changed() => {}
            }
        }
        while let Some(done) = in_flight.join_next_with_id().await {
            record_done(&mut busy, done);
        }
    }
}

fn record_done(
    busy: &mut std::collections::HashMap<tokio::task::Id, String>,
    done: Result<(tokio::task::Id, Result<(), StoreError>), tokio::task::JoinError>,
) {
    let (task, result) = match done {
        Ok((task, result)) => (task, result.map_err(|e| format!("cannot record a webhook attempt: {e}"))),
        Err(e) => (e.id(), Err(format!("a webhook attempt ended abnormally: {e}"))),
    };
    busy.remove(&task);
    if let Err(e) = result {
        tracing::warn!(error = %e, "webhook attempt not recorded; it stays due");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hex_hmac_sha256_of_the_raw_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
