//! Commerce commands: recording inbound provider events, and the identities fulfilment derives
//! deterministically (so a retry or a replay lands on the same streams instead of new ones).

use crate::{Actor, CommandError, Commands};
use licensd_domain::commerce::{LedgerCommand, LedgerState, NormalizedEvent, Provider};
use licensd_domain::license::{LicenseCommand, LicenseEvent, LicenseState};
use licensd_domain::{decode_event, AccountId, Aggregate, LicenseKey, StreamCategory};
use licensd_store::{EventStore, ExpectedVersion, StoreError};
use uuid::Uuid;

/// Attempts of a once-only license change when the license keeps changing under it.
const APPLY_ATTEMPTS: usize = 5;

/// An inbound event as the ingress verified and normalized it.
pub struct InboundEvent {
    pub connection_id: Uuid,
    pub account_id: AccountId,
    pub provider: Provider,
    pub external_id: String,
    pub event_type: String,
    pub normalized: NormalizedEvent,
    pub email: Option<String>,
    pub customer_id: Option<String>,
}

/// The ledger stream of one inbound event. The connection is part of the id so that one merchant
/// cannot pre-empt another's event id.
pub fn ledger_stream(provider: Provider, connection_id: Uuid, external_id: &str) -> String {
    StreamCategory::Commerce.stream_id(format!("{}-{connection_id}-{external_id}", provider.as_str()))
}

/// The sealing purpose of a connection's API key.
pub fn connection_key_purpose(connection_id: Uuid) -> String {
    format!("commerce-api-key:{connection_id}")
}

/// The sealing purpose of a connection's webhook signing secret.
pub fn connection_secret_purpose(connection_id: Uuid) -> String {
    format!("commerce-signing-secret:{connection_id}")
}

impl Commands {
    fn keyed_digest(&self, label: &str, input: &str) -> [u8; 32] {
        self.master_key().keyed_digest(label, input)
    }

    /// The link a license keeps to its buyer's provider customer id: a keyed digest, so the
    /// id itself stays in the PII vault.
    pub fn customer_ref(&self, provider: Provider, customer_id: &str) -> String {
        let digest = self.keyed_digest("commerce-customer", &format!("{}:{customer_id}", provider.as_str()));
        format!("cus:{}", hex::encode(&digest[..16]))
    }

    /// The key of the `unit`-th license for line item `item` of a ledger entry.
    pub fn fulfilment_key(&self, ledger_stream: &str, item: usize, unit: u32) -> LicenseKey {
        let digest = self.keyed_digest("commerce-license-key", &format!("{ledger_stream}:{item}:{unit}"));
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        LicenseKey::from_random(bytes)
    }

    /// Records an inbound event once: `Ok(false)` for a duplicate delivery (nothing changes).
    /// Personal data goes to the vault in the same transaction, so an acknowledged event always
    /// finds it and a failed one leaves none.
    pub async fn receive_commerce_event(&self, inbound: InboundEvent) -> Result<bool, CommandError> {
        let stream = ledger_stream(inbound.provider, inbound.connection_id, &inbound.external_id);
        let (state, _) = self.load::<LedgerState>(&stream).await?;
        if state.0.is_some() {
            return Ok(false);
        }
        let pii = [("email", &inbound.email), ("customer_id", &inbound.customer_id)]
            .into_iter()
            .filter_map(|(field, value)| value.as_deref().map(|value| self.pii().row(&stream, field, value)))
            .collect();
        let receive = LedgerCommand::Receive {
            connection_id: inbound.connection_id,
            account_id: inbound.account_id,
            provider: inbound.provider,
            external_id: inbound.external_id,
            event_type: inbound.event_type,
            normalized: inbound.normalized,
        };
        let events = LedgerState::default().decide(receive, self.now())?;
        let account = Some(inbound.account_id);
        let appended =
            self.append_with_pii(&stream, ExpectedVersion::NoStream, &events, &Actor::System, account, pii).await;
        match appended {
            Ok(_) => Ok(true),
            Err(CommandError::Store(StoreError::WrongExpectedVersion { .. })) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Applies `command` to a license unless the ledger entry `marker` already did, recording the
    /// marker (with `refs`) in the same append. Returns false when it had already been applied.
    pub async fn apply_once(
        &self,
        key: &LicenseKey,
        marker: &str,
        command: LicenseCommand,
        link: LicenseCommand,
    ) -> Result<bool, CommandError> {
        let stream = StreamCategory::License.stream_id(key);
        for _ in 0..APPLY_ATTEMPTS {
            let recorded = self.store().read_stream(&stream, 1).await?;
            let events = recorded
                .iter()
                .map(|e| decode_event::<LicenseEvent>(&e.event_type, e.schema_version, &e.payload))
                .collect::<Result<Vec<_>, _>>()?;
            let applied = events
                .iter()
                .any(|e| matches!(e, LicenseEvent::CommerceLinked { refs, .. } if refs.iter().any(|r| r == marker)));
            if applied {
                return Ok(false);
            }
            let state = LicenseState::fold(&events);
            let mut decided = state.decide(command.clone(), self.now())?;
            decided.extend(LicenseState::fold(events.iter().chain(&decided)).decide(link.clone(), self.now())?);
            let LicenseState::Live(license) = &state else { return Ok(false) };
            let version = recorded.last().map_or(0, |e| e.version);
            let account = Some(license.account_id);
            match self.append(&stream, ExpectedVersion::Exact(version), &decided, &Actor::System, account).await {
                Ok(_) => return Ok(true),
                Err(CommandError::Store(StoreError::WrongExpectedVersion { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(CommandError::Contention)
    }
}
