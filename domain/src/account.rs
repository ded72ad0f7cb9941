//! The account aggregate: one stream per merchant (`account-<uuid>`): API keys, credits, suspension.
//!
//! The merchant's email is personal data and lives in the PII vault, never in these events.

use crate::{AccountId, Aggregate, ApiKeyId, DomainError, StreamCategory};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

crate::typed_decode::event_enum! {
    category = StreamCategory::Account;
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    pub enum AccountEvent {
        AccountCreated {
            account_id: AccountId,
            created_at: DateTime<Utc>,
        },
        ApiKeyIssued {
            key_id: ApiKeyId,
            /// SHA-256 (hex) of the full key; the key itself is shown once and never stored.
            key_hash: String,
            /// The first characters of the key, so a merchant can tell keys apart.
            prefix: String,
            scopes: Vec<String>,
            at: DateTime<Utc>,
        },
        ApiKeyRevoked {
            key_id: ApiKeyId,
            at: DateTime<Utc>,
        },
        CreditsGranted {
            amount: u64,
            reason: String,
            at: DateTime<Utc>,
        },
        CreditsDebited {
            amount: u64,
            reason: String,
            at: DateTime<Utc>,
        },
        AccountSuspended {
            at: DateTime<Utc>,
        },
        AccountReinstated {
            at: DateTime<Utc>,
        },
        /// Alert when the balance falls below `threshold` credits; `None` turns the alert off.
        LowBalanceAlertSet {
            threshold: Option<u64>,
            at: DateTime<Utc>,
        },
        /// The balance was seen under the threshold while the alert was armed: the alert is due
        /// (once per crossing; the email follows).
        LowBalanceAlertRaised {
            balance: i64,
            threshold: u64,
            at: DateTime<Utc>,
        },
        /// The merchant was emailed about the raised alert.
        LowBalanceAlertMailed {
            at: DateTime<Utc>,
        },
        /// The balance was seen at or above the threshold again (or the alert was turned off): the
        /// next fall under it raises the alert again.
        LowBalanceAlertRearmed {
            balance: i64,
            at: DateTime<Utc>,
        },
        /// Connects (or, same provider, re-keys) a payment provider; the connection id, and so the
        /// webhook URL, survives a re-key.
        CommerceConnected {
            connection: crate::commerce::Connection,
            at: DateTime<Utc>,
        },
        CommerceDisconnected {
            provider: crate::commerce::Provider,
            at: DateTime<Utc>,
        },
        /// A master-key rotation sealed a connection's secrets anew: same connection, same values,
        /// new ciphertexts.
        CommerceResealed {
            connection: crate::commerce::Connection,
            at: DateTime<Utc>,
        },
        /// Dashboard sign-in: a keyed digest of the merchant's email (the address stays in the PII
        /// vault); a password was set, and ends every older session. The Argon2id verifier is sealed
        /// in a deletable table, never here: `password_hash` is only read from events written before
        /// that (the log cannot be rewritten) and is never written again.
        DashboardLoginSet {
            email_digest: String,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            password_hash: Option<String>,
            at: DateTime<Utc>,
        },
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub account_id: AccountId,
    pub suspended: bool,
    pub low_balance_threshold: Option<u64>,
    #[serde(default)]
    pub low_balance_alert: LowBalanceAlert,
    /// Ids of keys that are issued and not revoked.
    pub live_keys: Vec<ApiKeyId>,
    pub connections: Vec<crate::commerce::Connection>,
}

/// Where the low-balance alert stands: armed until the balance is seen under the threshold,
/// then raised (an email is due), then mailed; re-armed once the balance is seen at or above
/// the threshold again, or the threshold changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LowBalanceAlert {
    #[default]
    Armed,
    Raised,
    Mailed,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountState(pub Option<Account>);

#[derive(Debug, Clone, PartialEq)]
pub enum AccountCommand {
    Create {
        account_id: AccountId,
    },
    IssueApiKey {
        key_id: ApiKeyId,
        key_hash: String,
        prefix: String,
        scopes: Vec<String>,
    },
    RevokeApiKey {
        key_id: ApiKeyId,
    },
    GrantCredits {
        amount: u64,
        reason: String,
    },
    DebitCredits {
        amount: u64,
        reason: String,
    },
    Suspend,
    Reinstate,
    SetLowBalanceAlert {
        threshold: Option<u64>,
    },
    /// The balance as the alert worker saw it: raises an armed alert when it is under the
    /// threshold, re-arms a raised or mailed one when it is not (nothing otherwise).
    ObserveBalance {
        balance: i64,
    },
    /// The alert's email went out (only a raised alert records it).
    RecordLowBalanceMail,
    /// Keeps the existing connection id for a provider already connected.
    Connect(crate::commerce::Connection),
    Disconnect {
        provider: crate::commerce::Provider,
    },
    /// Records a connection's secrets sealed anew by a master-key rotation (nothing when the
    /// connection is gone; the rotation runs with every server stopped, so nothing re-keys it meanwhile).
    Reseal(crate::commerce::Connection),
    /// Records a new dashboard password (its verifier is sealed outside the log first).
    SetDashboardLogin {
        email_digest: String,
    },
}

impl Aggregate for AccountState {
    type Event = AccountEvent;
    type Command = AccountCommand;

    fn evolve(self, event: &AccountEvent) -> Self {
        use AccountEvent as E;
        if let E::AccountCreated { account_id, .. } = event {
            return Self(Some(Account {
                account_id: *account_id,
                suspended: false,
                low_balance_threshold: None,
                low_balance_alert: LowBalanceAlert::Armed,
                live_keys: vec![],
                connections: vec![],
            }));
        }
        let Some(mut account) = self.0 else { return self };
        match event {
            E::ApiKeyIssued { key_id, .. } => account.live_keys.push(*key_id),
            E::ApiKeyRevoked { key_id, .. } => account.live_keys.retain(|k| k != key_id),
            E::AccountSuspended { .. } => account.suspended = true,
            E::AccountReinstated { .. } => account.suspended = false,
            E::LowBalanceAlertSet { threshold, .. } => {
                // A new threshold is a new alert.
                account.low_balance_threshold = *threshold;
                account.low_balance_alert = LowBalanceAlert::Armed;
            }
            E::LowBalanceAlertRaised { .. } => account.low_balance_alert = LowBalanceAlert::Raised,
            E::LowBalanceAlertMailed { .. } => account.low_balance_alert = LowBalanceAlert::Mailed,
            E::LowBalanceAlertRearmed { .. } => account.low_balance_alert = LowBalanceAlert::Armed,
            E::CommerceConnected { connection, .. } => {
                account.connections.retain(|c| c.provider != connection.provider);
                account.connections.push(connection.clone());
            }
            E::CommerceDisconnected { provider, .. } => account.connections.retain(|c| c.provider != *provider),
            E::CommerceResealed { connection, .. } => {
                if let Some(c) = account.connections.iter_mut().find(|c| c.connection_id == connection.connection_id) {
                    *c = connection.clone();
                }
            }
            E::AccountCreated { .. }
            | E::CreditsGranted { .. }
            | E::CreditsDebited { .. }
            | E::DashboardLoginSet { .. } => {}
        }
        Self(Some(account))
    }

    fn decide(&self, command: AccountCommand, now: DateTime<Utc>) -> Result<Vec<AccountEvent>, DomainError> {
        use AccountCommand as C;
        use AccountEvent as E;
        let at = now;
        let (account, command) = match (&self.0, command) {
            (None, C::Create { account_id }) => return Ok(vec![E::AccountCreated { account_id, created_at: now }]),
            (None, _) => return Err(DomainError::NotFound("account")),
            (Some(account), command) => (account, command),
        };
        let events = match command {
            C::Create { .. } => return Err(DomainError::AlreadyExists("account")),
            C::IssueApiKey { key_id, key_hash, prefix, scopes } => {
                vec![E::ApiKeyIssued { key_id, key_hash, prefix, scopes, at }]
            }
            C::RevokeApiKey { key_id } if account.live_keys.contains(&key_id) => vec![E::ApiKeyRevoked { key_id, at }],
            C::RevokeApiKey { .. } => return Err(DomainError::NotFound("API key")),
            C::GrantCredits { amount, .. } | C::DebitCredits { amount, .. } if amount == 0 => {
                return Err(DomainError::InvalidCreditAmount)
            }
            C::GrantCredits { amount, reason } => vec![E::CreditsGranted { amount, reason, at }],
            C::DebitCredits { amount, reason } => vec![E::CreditsDebited { amount, reason, at }],
            C::Suspend if account.suspended => vec![],
            C::Suspend => vec![E::AccountSuspended { at }],
            C::Reinstate if !account.suspended => vec![],
            C::Reinstate => vec![E::AccountReinstated { at }],
            C::SetLowBalanceAlert { threshold } if threshold == account.low_balance_threshold => vec![],
            C::SetLowBalanceAlert { threshold } => vec![E::LowBalanceAlertSet { threshold, at }],
            C::ObserveBalance { balance } => {
                let below = account.low_balance_threshold.filter(|t| balance < i64::try_from(*t).unwrap_or(i64::MAX));
                match (below, account.low_balance_alert) {
                    (Some(threshold), LowBalanceAlert::Armed) => {
                        vec![E::LowBalanceAlertRaised { balance, threshold, at }]
                    }
                    (None, LowBalanceAlert::Raised | LowBalanceAlert::Mailed) => {
                        vec![E::LowBalanceAlertRearmed { balance, at }]
                    }
                    _ => vec![],
                }
            }
            C::RecordLowBalanceMail if account.low_balance_alert == LowBalanceAlert::Raised => {
                vec![E::LowBalanceAlertMailed { at }]
            }
            C::RecordLowBalanceMail => vec![],
            C::Connect(mut connection) => {
                if let Some(existing) = account.connections.iter().find(|c| c.provider == connection.provider) {
                    connection.connection_id = existing.connection_id;
                }
                vec![E::CommerceConnected { connection, at }]
            }
            C::Disconnect { provider } => {
                if !account.connections.iter().any(|c| c.provider == provider) {
                    return Err(DomainError::NotFound("connection"));
                }
                vec![E::CommerceDisconnected { provider, at }]
            }
            C::Reseal(connection) => {
                let same = |c: &&crate::commerce::Connection| {
                    c.connection_id == connection.connection_id && c.provider == connection.provider
                };
                match account.connections.iter().find(same) {
                    Some(current) if *current != connection => vec![E::CommerceResealed { connection, at }],
                    _ => vec![],
                }
            }
            C::SetDashboardLogin { email_digest } => {
                vec![E::DashboardLoginSet { email_digest, password_hash: None, at }]
            }
        };
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DomainEvent;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn created() -> Vec<AccountEvent> {
        vec![AccountEvent::AccountCreated { account_id: AccountId(uuid::Uuid::nil()), created_at: now() }]
    }

    #[test]
    fn a_resealed_connection_replaces_only_the_connection_it_names() {
        use crate::commerce::{Connection, Provider};
        use crate::Sealed;
        let connection = |id: u128, provider, secret: &str| Connection {
            connection_id: uuid::Uuid::from_u128(id),
            provider,
            signing_secret: Sealed(secret.into()),
            api_key: None,
        };
        let mut events = created();
        let connect = AccountCommand::Connect(connection(1, Provider::Lemon, "old"));
        events.extend(AccountState::fold(&events).decide(connect, now()).unwrap());
        let state = AccountState::fold(&events);
        let reseal = |c| state.decide(AccountCommand::Reseal(c), now()).unwrap();
        assert_eq!(reseal(connection(2, Provider::Lemon, "new")), vec![], "another connection id");
        assert_eq!(reseal(connection(1, Provider::Stripe, "new")), vec![], "another provider");
        assert_eq!(reseal(connection(1, Provider::Lemon, "old")), vec![], "nothing changed");
        let resealed = reseal(connection(1, Provider::Lemon, "new"));
        let account = state.clone().evolve(&resealed[0]).0.unwrap();
        assert_eq!(account.connections, vec![connection(1, Provider::Lemon, "new")]);
    }

    #[test]
    fn credits_must_be_positive() {
        let state = AccountState::fold(&created());
        let grant = |amount| AccountCommand::GrantCredits { amount, reason: "test".into() };
        assert_eq!(state.decide(grant(0), now()), Err(DomainError::InvalidCreditAmount));
        assert!(matches!(
            &state.decide(grant(5), now()).unwrap()[..],
            [AccountEvent::CreditsGranted { amount: 5, .. }]
        ));
    }

    #[test]
    fn only_live_keys_can_be_revoked() {
        let mut events = created();
        let key_id = ApiKeyId(uuid::Uuid::nil());
        let issue =
            AccountCommand::IssueApiKey { key_id, key_hash: "h".into(), prefix: "af_live_ab".into(), scopes: vec![] };
        events.extend(AccountState::fold(&events).decide(issue, now()).unwrap());
        let revoke = AccountCommand::RevokeApiKey { key_id };
        events.extend(AccountState::fold(&events).decide(revoke.clone(), now()).unwrap());
        assert_eq!(AccountState::fold(&events).decide(revoke, now()), Err(DomainError::NotFound("API key")));
    }

    #[test]
    fn login_events_carry_no_verifier_and_old_ones_still_decode() {
        let state = AccountState::fold(&created());
        let set = AccountCommand::SetDashboardLogin { email_digest: "d".into() };
        let events = state.decide(set, now()).unwrap();
        let payload = serde_json::to_value(&events[0]).unwrap();
        assert!(payload.get("password_hash").is_none(), "{payload}");
        let old = serde_json::json!({
            "type": "DashboardLoginSet", "email_digest": "d", "password_hash": "$argon2id$v=19$x",
            "at": "2026-01-01T00:00:00Z",
        });
        let decoded: AccountEvent = serde_json::from_value(old).unwrap();
        assert!(matches!(decoded, AccountEvent::DashboardLoginSet { password_hash: Some(_), .. }));
    }

    #[test]
    fn commands_need_an_existing_account() {
        let grant = AccountCommand::GrantCredits { amount: 1, reason: "x".into() };
        assert_eq!(AccountState::default().decide(grant, now()), Err(DomainError::NotFound("account")));
        let create = AccountCommand::Create { account_id: AccountId(uuid::Uuid::nil()) };
        assert_eq!(AccountState::fold(&created()).decide(create, now()), Err(DomainError::AlreadyExists("account")));
    }

    #[test]
    fn the_low_balance_alert_is_raised_once_per_crossing() {
        let mut events = created();
        let mut run = |command| {
            let new = AccountState::fold(&events).decide(command, now()).unwrap();
            events.extend(new.clone());
            new.iter().map(|e| e.event_type()).collect::<Vec<_>>()
        };
        let observe = |balance| AccountCommand::ObserveBalance { balance };
        assert!(run(observe(5)).is_empty(), "no threshold, no alert");
        run(AccountCommand::SetLowBalanceAlert { threshold: Some(100) });
        assert!(run(observe(100)).is_empty(), "at the threshold is not under it");
        assert_eq!(run(observe(99)), ["LowBalanceAlertRaised"]);
        assert!(run(observe(50)).is_empty(), "still the same crossing");
        assert_eq!(run(AccountCommand::RecordLowBalanceMail), ["LowBalanceAlertMailed"]);
        assert!(run(AccountCommand::RecordLowBalanceMail).is_empty(), "mailed once");
        assert!(run(observe(10)).is_empty());
        assert_eq!(run(observe(100)), ["LowBalanceAlertRearmed"]);
        assert!(run(observe(150)).is_empty());
        assert_eq!(run(observe(-3)), ["LowBalanceAlertRaised"], "the next fall raises it again");
        run(AccountCommand::SetLowBalanceAlert { threshold: Some(u64::MAX) });
        assert_eq!(run(observe(i64::MAX - 1)), ["LowBalanceAlertRaised"], "a new threshold re-arms; no overflow");
    }
}
