//! The commerce process manager: turns pending ledger entries into license commands.
//!
//! Its queue is the `commerce_ledger` read model (pending entries, and failed ones whose retry is
//! due); the ledger stream itself is the source of truth. Each attempt claims the entry with an
//! exact-version append, so two workers never record two outcomes; license streams are
//! deterministic and once-only markers guard extensions and revocations, so a crash, a retry or a
//! replay can never mint a second license or extend twice.

use super::mailer::{Delivery, Mailer};
use super::provider_api::{ProviderApi, ProviderError};
use licensd_commands::{Actor, CommandError, Commands};
use licensd_domain::app::App;
use licensd_domain::commerce::{
    CommerceAction, CommerceEvent, LedgerCommand, LedgerEntry, LedgerState, LedgerStatus, LineItem, MappingKind,
    Outcome, ProductMapping, Provider, SkipReason, MAX_QUANTITY,
};
use licensd_domain::license::{LicenseCommand, LicenseState};
use licensd_domain::{AccountId, Aggregate, AppId, DomainError, LicenseKey, StreamCategory};
use licensd_projections::{CommerceLedger, HotModel, SqlRunner, TailConfig};
use licensd_store::{EventStore, ExpectedVersion, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct CommerceConfig {
    pub stripe_api_base: String,
    pub lemon_api_base: String,
    /// Wait before the one automatic retry of a transient failure.
    pub retry_delay: Duration,
    pub poll: Duration,
    pub mailer: Option<Mailer>,
    /// How often the low-balance alert worker compares balances with thresholds (it mails
    /// through `mailer`).
    pub low_balance_poll: Duration,
}

impl Default for CommerceConfig {
    fn default() -> Self {
        Self {
            stripe_api_base: "https://api.stripe.com".into(),
            lemon_api_base: "https://api.lemonsqueezy.com".into(),
            retry_delay: Duration::from_secs(60),
            poll: Duration::from_millis(250),
            mailer: None,
            low_balance_poll: Duration::from_secs(1),
        }
    }
}

/// Entries taken per look at the queue.
const BATCH: i64 = 32;

pub struct CommerceWorker {
    commands: Commands,
    hot: Arc<HotModel>,
    ledger: SqlRunner,
    api: ProviderApi,
    config: CommerceConfig,
}

/// What one fulfilment produced: the outcome, and licenses minted for the first time.
struct Fulfilment {
    outcome: Outcome,
    created: Vec<(AppId, LicenseKey)>,
}

impl From<Outcome> for Fulfilment {
    fn from(outcome: Outcome) -> Self {
        Self { outcome, created: vec![] }
    }
}

fn skipped(reason: SkipReason) -> Fulfilment {
    Outcome::Skipped(reason).into()
}

/// Errors of our own stack during fulfilment: transient ones get the automatic retry.
fn failure(e: CommandError) -> Fulfilment {
    if e.is_unavailable() {
        Outcome::Transient(e.to_string()).into()
    } else {
        Outcome::NonTransient(e.to_string()).into()
    }
}

impl CommerceWorker {
    pub fn new(
        commands: Commands,
        hot: Arc<HotModel>,
        config: CommerceConfig,
    ) -> Result<Self, crate::outbound::ClientError> {
        let ledger = SqlRunner::new(commands.store().clone(), Arc::new(CommerceLedger), TailConfig::default());
        let api = ProviderApi::new(&config.stripe_api_base, &config.lemon_api_base)?;
        Ok(Self { commands, hot, ledger, api, config })
    }

    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            match self.due().await {
                Ok(due) if !due.is_empty() => {
                    for stream in due {
                        if let Err(e) = self.work(&stream).await {
                            tracing::warn!(stream = %stream, error = %e, "commerce entry not processed");
                        }
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the commerce queue"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll) => {}
                _ = stop.changed() => {}
            }
        }
    }

    async fn due(&self) -> Result<Vec<String>, CommandError> {
        self.ledger.catch_up().await.map_err(|e| CommandError::Crypto(e.to_string()))?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let rows = self
            .commands
            .store()
            .query_text(
                "SELECT stream_id FROM rm_commerce_events
                 WHERE status = 'pending' OR (status = 'failed' AND retry_at <= $1)
                 ORDER BY received_at, stream_id LIMIT $2",
                &[now.into(), BATCH.into()],
            )
            .await?;
        Ok(rows.into_iter().flatten().collect())
    }

    /// One attempt at one entry: claim, fulfil, record.
    async fn work(&self, stream: &str) -> Result<(), CommandError> {
        let recorded = self.commands.store().read_stream(stream, 1).await?;
        let Some(last) = recorded.last() else { return Ok(()) };
        let (version, position) = (last.version, last.position);
        let state = LedgerState::fold(&recorded_events(&recorded)?);
        let Some(entry) = state.0.clone() else { return Ok(()) };
        if entry.status == LedgerStatus::Failed && !self.retry_due(stream).await? {
            return Ok(());
        }
        let claim = match state.decide(LedgerCommand::Start, self.commands.now()) {
            Ok(events) => events,
            Err(DomainError::LedgerNotWorkable) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let account = Some(entry.account_id);
        let claimed = self.commands.append(stream, ExpectedVersion::Exact(version), &claim, &Actor::System, account);
        match claimed.await {
            Ok(_) => {}
            Err(CommandError::Store(StoreError::WrongExpectedVersion { .. })) => return Ok(()),
            Err(e) => return Err(e),
        }
        let state = claim.iter().fold(state, |state, event| state.evolve(event));
        if state.0.as_ref().is_some_and(|e| e.status == LedgerStatus::Held) {
            return Ok(()); // the claim itself held it: earlier attempts never finished
        }
        // The mappings and apps this entry needs were written before it; let the model see them.
        let _ = self.hot.wait_for(position, Duration::from_secs(5)).await;
        let fulfilment = self.fulfil(stream, &entry).await;
        let retry_at = self.commands.now()
            + chrono::Duration::from_std(self.config.retry_delay).unwrap_or(chrono::Duration::seconds(60));
        let counters = &crate::metrics::COUNTERS;
        crate::metrics::count(match &fulfilment.outcome {
            Outcome::Processed(_) => &counters.commerce_processed,
            Outcome::Skipped(_) => &counters.commerce_skipped,
            Outcome::Transient(_) => &counters.commerce_transient,
            Outcome::NonTransient(_) => &counters.commerce_failed,
        });
        let record = LedgerCommand::Record { outcome: fulfilment.outcome.clone(), retry_at };
        let outcome = state.decide(record, self.commands.now())?;
        self.commands.append(stream, ExpectedVersion::Exact(version + 1), &outcome, &Actor::System, account).await?;
        if let Outcome::Processed(_) = fulfilment.outcome {
            self.email_buyer(stream, &fulfilment.created).await;
        }
        Ok(())
    }

    async fn retry_due(&self, stream: &str) -> Result<bool, CommandError> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let rows = self
            .commands
            .store()
            .query_text(
                "SELECT stream_id FROM rm_commerce_events WHERE stream_id = $1 AND retry_at <= $2",
                &[stream.into(), now.into()],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn fulfil(&self, stream: &str, entry: &LedgerEntry) -> Fulfilment {
        let result = match entry.normalized.action {
            CommerceAction::Unmapped => Ok(skipped(SkipReason::UnmappedEventType)),
            CommerceAction::Ignore => Ok(Outcome::Processed(vec![]).into()),
            CommerceAction::Purchase => self.purchase(stream, entry).await,
            CommerceAction::Renewal => self.renew(stream, entry).await,
            CommerceAction::Revoke => self.revoke(stream, entry).await,
        };
        result.unwrap_or_else(failure)
    }

    /// The line items, from the event or (when the provider left them out) from its API.
    async fn line_items(&self, entry: &LedgerEntry) -> Result<Vec<LineItem>, Fulfilment> {
        if let Some(items) = &entry.normalized.line_items {
            return Ok(items.clone());
        }
        let connection = self.hot.connection(entry.connection_id).map(|(_, c)| c);
        let Some(sealed) = connection.and_then(|c| c.api_key) else {
            return Err(skipped(SkipReason::ApiKeyRequiredForLineItems));
        };
        let key = self
            .commands
            .master_key()
            .open_string(&sealed, &connection_key_purpose(entry.connection_id))
            .map_err(|e| Fulfilment::from(Outcome::NonTransient(e.to_string())))?;
        let object = entry.normalized.object_id.as_deref().unwrap_or_default();
        let fetched = match entry.provider {
            Provider::Stripe => self.api.stripe_line_items(&key, object).await,
            Provider::Lemon => self.api.lemon_order_items(&key, object).await,
        };
        match fetched {
            Ok(items) if items.is_empty() => Err(skipped(SkipReason::LineItemsNotFound)),
            Ok(items) => Ok(items),
            Err(ProviderError::Transient(e)) => Err(Outcome::Transient(e).into()),
            Err(ProviderError::Permanent(e)) => Err(Outcome::NonTransient(e).into()),
        }
    }

    /// The one app mapping `item`'s price: `Err` with the skip reason when none or several apps do.
    fn mapping_for(
        &self,
        apps: &[App],
        provider: Provider,
        item: &LineItem,
    ) -> Option<Result<(App, ProductMapping), SkipReason>> {
        let mut found = apps.iter().filter_map(|app| {
            let mapping = app.mappings.iter().find(|m| m.provider == provider && m.price_id == item.price_id)?;
            Some((app.clone(), mapping.clone()))
        });
        let first = found.next()?;
        Some(if found.next().is_some() { Err(SkipReason::AmbiguousMappingMultipleApps) } else { Ok(first) })
    }

    async fn purchase(&self, stream: &str, entry: &LedgerEntry) -> Result<Fulfilment, CommandError> {
        let items = match self.line_items(entry).await {
            Ok(items) => items,
            Err(fulfilment) => return Ok(fulfilment),
        };
        let apps = self.hot.apps_of(entry.account_id);
        let mut resolved = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match self.mapping_for(&apps, entry.provider, item) {
                Some(Ok((app, mapping))) => resolved.push((index, item, app, mapping)),
                Some(Err(reason)) => return Ok(skipped(reason)),
                None => {}
            }
        }
        if resolved.is_empty() {
            return Ok(skipped(SkipReason::NoMappingForPrice));
        }
        let refs = self.purchase_refs(stream, entry).await?;
        let (mut touched, mut created) = (Vec::new(), Vec::new());
        for (index, item, app, mapping) in resolved {
            match mapping.kind {
                MappingKind::OneTime | MappingKind::Subscription => {
                    let units = if mapping.respect_quantity { item.quantity.min(MAX_QUANTITY) } else { 1 };
                    for unit in 0..units {
                        let key = self.commands.fulfilment_key(stream, index, unit);
                        if self.create_license(stream, entry, &app, &mapping, &key, &refs).await? {
                            created.push((app.app_id, key.clone()));
                        }
                        touched.push(key);
                    }
                }
                MappingKind::AddOn | MappingKind::Revocation => {
                    let customer = refs.iter().find(|r| r.starts_with("cus:")).cloned();
                    let keys = match customer {
                        Some(customer) => self.linked(entry, &[customer], Some(app.app_id)).await?,
                        None => vec![],
                    };
                    if keys.is_empty() {
                        let reason = if mapping.kind == MappingKind::AddOn {
                            SkipReason::NoLicenseToExtend
                        } else {
                            SkipReason::NoLicenseToRevoke
                        };
                        return Ok(skipped(reason));
                    }
                    for (key, _) in keys {
                        let command = if mapping.kind == MappingKind::AddOn {
                            self.extension(&key, mapping.days).await?
                        } else {
                            LicenseCommand::Revoke
                        };
                        self.apply(stream, entry, mapping.mapping_id, &key, command, &refs).await?;
                        touched.push(key);
                    }
                }
            }
        }
        Ok(Fulfilment { outcome: Outcome::Processed(touched), created })
    }

    /// References a purchase leaves on its licenses: subscription, payments, customer digest.
    async fn purchase_refs(&self, stream: &str, entry: &LedgerEntry) -> Result<Vec<String>, CommandError> {
        let normalized = &entry.normalized;
        let mut refs: Vec<String> = normalized.subscription_id.iter().map(|s| format!("sub:{s}")).collect();
        refs.extend(normalized.payment_refs.iter().map(|p| format!("pay:{p}")));
        if let Some(customer) = self.commands.pii().get(stream, "customer_id").await? {
            refs.push(self.commands.customer_ref(entry.provider, &customer));
        }
        Ok(refs)
    }

    /// Mints one license (once: its stream id is deterministic) with the buyer's data attached.
    async fn create_license(
        &self,
        stream: &str,
        entry: &LedgerEntry,
        app: &App,
        mapping: &ProductMapping,
        key: &LicenseKey,
        refs: &[String],
    ) -> Result<bool, CommandError> {
        let now = self.commands.now();
        let create = LicenseCommand::Create {
            key: key.clone(),
            app_id: app.app_id,
            account_id: entry.account_id,
            expires_at: mapping.days.map(|days| now + chrono::Duration::days(i64::from(days))),
            max_hwid_slots: mapping.hwid_slots,
            label: mapping.label.clone(),
            levels: Vec::new(),
            max_sessions: None,
        };
        let mut events = LicenseState::default().decide(create, now)?;
        let mut follow_ups = vec![];
        if !mapping.variables.is_empty() {
            follow_ups.push(LicenseCommand::SetVariables(mapping.variables.clone()));
        }
        let subject = StreamCategory::License.stream_id(key);
        let mut pii = Vec::new();
        for field in ["email", "customer_id"] {
            if let Some(value) = self.commands.pii().get(stream, field).await? {
                if field == "email" {
                    // The buyer's email is findable in the license listing by its keyed index.
                    let email_digest = licensd_commands::buyer_email_digest(self.commands.master_key(), &value);
                    if email_digest.is_some() {
                        follow_ups.push(LicenseCommand::RecordBuyerEmail { email_digest });
                    }
                }
                pii.push(self.commands.pii().row(&subject, field, &value));
            }
        }
        let mut link_refs = refs.to_vec();
        link_refs.push(marker(stream));
        follow_ups.push(LicenseCommand::LinkCommerce {
            provider: entry.provider,
            mapping_id: mapping.mapping_id,
            refs: link_refs,
        });
        for command in follow_ups {
            let decided = LicenseState::fold(&events).decide(command, now)?;
            events.extend(decided);
        }
        let account = Some(entry.account_id);
        let appended =
            self.commands.append_with_pii(&subject, ExpectedVersion::NoStream, &events, &Actor::System, account, pii);
        match appended.await {
            Ok(_) => Ok(true),
            Err(CommandError::Store(StoreError::WrongExpectedVersion { .. })) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Licenses of the account linked to any of `refs` (optionally in one app), with their mapping.
    async fn linked(
        &self,
        entry: &LedgerEntry,
        refs: &[String],
        app: Option<AppId>,
    ) -> Result<Vec<(LicenseKey, String)>, CommandError> {
        // The links are read model rows: bring them up to date with everything fulfilled so far.
        self.ledger.catch_up().await.map_err(|e| CommandError::Crypto(e.to_string()))?;
        let mut found: Vec<(LicenseKey, String)> = Vec::new();
        for reference in refs {
            let rows = self
                .commands
                .store()
                .query_rows(
                    "SELECT license_key, mapping_id, app_id FROM rm_commerce_links
                     WHERE account_id = $1 AND provider = $2 AND ref = $3 ORDER BY license_key",
                    &[entry.account_id.to_string().into(), entry.provider.as_str().into(), reference.clone().into()],
                )
                .await?;
            for row in rows {
                let (Some(key), Some(mapping), Some(app_id)) = (&row[0], &row[1], &row[2]) else { continue };
                let in_app = app.is_none_or(|a| a.to_string() == *app_id);
                if let (true, Ok(key)) = (in_app, LicenseKey::parse(key)) {
                    if !found.iter().any(|(k, _)| *k == key) {
                        found.push((key, mapping.clone()));
                    }
                }
            }
        }
        Ok(found)
    }

    /// The mapping a license was created from, if it still exists.
    fn mapping(&self, account_id: AccountId, mapping_id: &str) -> Option<ProductMapping> {
        self.hot
            .apps_of(account_id)
            .into_iter()
            .flat_map(|app| app.mappings)
            .find(|m| m.mapping_id.to_string() == mapping_id)
    }

    async fn extension(&self, key: &LicenseKey, days: Option<u32>) -> Result<LicenseCommand, CommandError> {
        let (state, _) = self.commands.load::<LicenseState>(&StreamCategory::License.stream_id(key)).await?;
        let now = self.commands.now();
        let current = match state {
            LicenseState::Live(license) => license.expires_at,
            _ => None,
        };
        let Some(days) = days else { return Ok(LicenseCommand::Extend { expires_at: None }) };
        let from = current.filter(|at| *at > now).unwrap_or(now);
        Ok(LicenseCommand::Extend { expires_at: Some(from + chrono::Duration::days(i64::from(days))) })
    }

    async fn apply(
        &self,
        stream: &str,
        entry: &LedgerEntry,
        mapping_id: uuid::Uuid,
        key: &LicenseKey,
        command: LicenseCommand,
        refs: &[String],
    ) -> Result<bool, CommandError> {
        let mut link_refs = refs.to_vec();
        link_refs.push(marker(stream));
        let link = LicenseCommand::LinkCommerce { provider: entry.provider, mapping_id, refs: link_refs };
        self.commands.apply_once(key, &marker(stream), command, link).await
    }

    /// The licenses a renewal or cancellation is about: by subscription, else by payment, else
    /// (providers that never name the subscription at purchase) by customer.
    async fn targets(&self, stream: &str, entry: &LedgerEntry) -> Result<Vec<(LicenseKey, String)>, CommandError> {
        let normalized = &entry.normalized;
        let by_subscription: Vec<String> = normalized.subscription_id.iter().map(|s| format!("sub:{s}")).collect();
        let by_payment: Vec<String> = normalized.payment_refs.iter().map(|p| format!("pay:{p}")).collect();
        for refs in [by_subscription, by_payment] {
            let found = self.linked(entry, &refs, None).await?;
            if !found.is_empty() {
                return Ok(found);
            }
        }
        if normalized.subscription_id.is_none() {
            return Ok(vec![]);
        }
        let Some(customer) = self.commands.pii().get(stream, "customer_id").await? else { return Ok(vec![]) };
        let customer = self.commands.customer_ref(entry.provider, &customer);
        let found = self.linked(entry, &[customer], None).await?;
        Ok(found
            .into_iter()
            .filter(|(_, mapping)| {
                self.mapping(entry.account_id, mapping).is_some_and(|m| m.kind == MappingKind::Subscription)
            })
            .collect())
    }

    async fn renew(&self, stream: &str, entry: &LedgerEntry) -> Result<Fulfilment, CommandError> {
        let mut touched = Vec::new();
        let payments: Vec<String> = entry.normalized.payment_refs.iter().map(|p| format!("pay:{p}")).collect();
        for (key, mapping_id) in self.targets(stream, entry).await? {
            // One-time mappings are never extended by renewals.
            let Some(mapping) = self.mapping(entry.account_id, &mapping_id) else { continue };
            if mapping.kind != MappingKind::Subscription {
                continue;
            }
            let extension = self.extension(&key, mapping.days).await?;
            self.apply(stream, entry, mapping.mapping_id, &key, extension, &payments).await?;
            touched.push(key);
        }
        if touched.is_empty() {
            return Ok(skipped(SkipReason::NoLicenseToExtend));
        }
        Ok(Outcome::Processed(touched).into())
    }

    async fn revoke(&self, stream: &str, entry: &LedgerEntry) -> Result<Fulfilment, CommandError> {
        let targets = self.targets(stream, entry).await?;
        if targets.is_empty() {
            return Ok(skipped(SkipReason::NoLicenseToRevoke));
        }
        let mut touched = Vec::new();
        for (key, mapping_id) in targets {
            let mapping_id = mapping_id.parse().unwrap_or_default();
            self.apply(stream, entry, mapping_id, &key, LicenseCommand::Revoke, &[]).await?;
            touched.push(key);
        }
        Ok(Outcome::Processed(touched).into())
    }

    /// Best-effort delivery of newly minted keys; failures are logged without the address.
    async fn email_buyer(&self, stream: &str, created: &[(AppId, LicenseKey)]) {
        let Some(mailer) = &self.config.mailer else { return };
        let Some((app_id, _)) = created.first() else { return };
        let Some(app) = self.hot.app(*app_id) else { return };
        if app.settings.commerce_emails_disabled {
            return;
        }
        let to = match self.commands.pii().get(stream, "email").await {
            Ok(Some(to)) => to,
            Ok(None) => return,
            Err(e) => return tracing::warn!(error = %e, "cannot read the buyer's address"),
        };
        let keys: Vec<String> = created.iter().map(|(_, k)| k.to_string()).collect();
        let delivery = Delivery {
            to: &to,
            app_name: &app.name,
            keys: &keys,
            support_contact: app.settings.support_contact.as_deref(),
        };
        match mailer.send(&delivery).await {
            Ok(()) => tracing::info!(stream = %stream, licenses = keys.len(), "buyer email sent"),
            Err(e) => tracing::warn!(stream = %stream, error = %e, "buyer email not sent"),
        }
    }
}

/// The once-only marker a ledger entry leaves on every license it changes.
fn marker(stream: &str) -> String {
    format!("ev:{stream}")
}

/// Kept where the connection's secrets are sealed (a key rotation re-seals them there too).
pub use licensd_commands::commerce::{connection_key_purpose, connection_secret_purpose};

fn recorded_events(recorded: &[licensd_store::RecordedEvent]) -> Result<Vec<CommerceEvent>, CommandError> {
    recorded
        .iter()
        .map(|e| licensd_domain::decode_event(&e.event_type, e.schema_version, &e.payload).map_err(Into::into))
        .collect()
}
