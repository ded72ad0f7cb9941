//! The license aggregate: one stream per key (`license-<KEY>`).

use crate::{AccountId, Aggregate, AppId, DomainError, LicenseKey, StreamCategory, Variables, MAX_HWID_LEN};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

mod extras;
pub use extras::{Extras, LicenseExtras};

pub const MIN_HWID_SLOTS: u8 = 1;
pub const MAX_HWID_SLOTS: u8 = 16;
pub const MAX_LABEL_CHARS: usize = 128;
/// Characters of one license level (Blazeauth's panel: 1–16).
pub const MAX_LEVEL_CHARS: usize = 16;

crate::typed_decode::event_enum! {
    category = StreamCategory::License;
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    pub enum LicenseEvent {
        LicenseCreated {
            key: LicenseKey,
            app_id: AppId,
            account_id: AccountId,
            expires_at: Option<DateTime<Utc>>,
            max_hwid_slots: u8,
            label: Option<String>,
            created_at: DateTime<Utc>,
        },
        LicenseRevoked {
            at: DateTime<Utc>,
        },
        LicenseActivated {
            at: DateTime<Utc>,
        },
        LicenseExtended {
            expires_at: Option<DateTime<Utc>>,
            at: DateTime<Utc>,
        },
        HwidBound {
            hwid: String,
            at: DateTime<Utc>,
        },
        HwidReset {
            at: DateTime<Utc>,
        },
        /// The merchant freed one bound machine's slot (the others stay bound).
        HwidReleased {
            hwid: String,
            at: DateTime<Utc>,
        },
        /// The end user reset their machines in the self-service portal (after `HwidReset`, in the
        /// same append); the policy counts these.
        PortalResetRecorded {
            at: DateTime<Utc>,
        },
        LicenseDeleted {
            at: DateTime<Utc>,
        },
        VariablesSet {
            variables: Variables,
            at: DateTime<Utc>,
        },
        /// A successful validation, billed to the owning account (named so ledgers need no lookup).
        ValidationBilled {
            account_id: AccountId,
            credits: u32,
            /// The request nonce, kept so replay protection survives a restart.
            #[serde(default)]
            nonce: Option<String>,
            /// The machine that logged in (for `license.validated`); absent in events written
            /// before it was recorded.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            hwid: Option<String>,
            at: DateTime<Utc>,
        },
        /// Every 10th successful heartbeat bills one credit.
        HeartbeatBilled {
            account_id: AccountId,
            heartbeats: u32,
            credits: u32,
            at: DateTime<Utc>,
        },
        /// A machine activated the license offline; `file` is kept so the same machine gets the
        /// byte-identical file again.
        OfflineActivated {
            account_id: AccountId,
            hwid: String,
            jti: String,
            file: String,
            credits: u32,
            at: DateTime<Utc>,
        },
        /// Commerce fulfilment tied the license to provider references (`sub:...`, `pay:...`,
        /// `cus:<keyed digest>`), so renewals, refunds and add-ons find it.
        CommerceLinked {
            account_id: AccountId,
            app_id: AppId,
            provider: crate::commerce::Provider,
            mapping_id: uuid::Uuid,
            refs: Vec<String>,
            at: DateTime<Utc>,
        },
        /// GDPR erasure dropped the license's provider references.
        CommerceUnlinked {
            at: DateTime<Utc>,
        },
        /// The merchant minted a license file (Developer API or dashboard).
        OfflineFileMinted {
            account_id: AccountId,
            hwid: Option<String>,
            jti: String,
            credits: u32,
            at: DateTime<Utc>,
        },
        /// The buyer's email was set or replaced. The address is personal data and lives only in
        /// the PII vault; the event records that the change happened, for the audit trail, and the
        /// address's keyed digest (HMAC under a key derived from the master key) that the listing's
        /// `email` filter matches on. Absent in events written before the digest was recorded.
        BuyerEmailSet {
            #[serde(default, skip_serializing_if = "Option::is_none")]
            email_digest: Option<String>,
            at: DateTime<Utc>,
        },
        /// The buyer's email was removed.
        BuyerEmailRemoved {
            at: DateTime<Utc>,
        },
        /// The license's levels (reported to live sessions as their identity) were replaced.
        LicenseLevelsSet {
            levels: Vec<String>,
            at: DateTime<Utc>,
        },
        /// Floating seats: most live sessions authorized by the license at once (`None`: no limit).
        LicenseMaxSessionsSet {
            max_sessions: Option<u32>,
            at: DateTime<Utc>,
        },
        /// The license now belongs to this app user (their levels and expiry come from it).
        LicenseLinkedToUser {
            user_id: crate::app_user::AppUserId,
            at: DateTime<Utc>,
        },
        /// The license no longer belongs to a user (unlinked by the merchant, or the user deleted).
        LicenseUnlinkedFromUser {
            user_id: crate::app_user::AppUserId,
            at: DateTime<Utc>,
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LicenseStatus {
    Active,
    Revoked,
}

/// What a license is after its events, as far as the rules need to know. Serializable so the
/// in-memory model's snapshot carries every field without listing them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct License {
    pub key: LicenseKey,
    pub app_id: AppId,
    pub account_id: AccountId,
    pub status: LicenseStatus,
    pub expires_at: Option<DateTime<Utc>>,
    pub max_hwid_slots: u8,
    pub hwids: Vec<String>,
    pub label: Option<String>,
    pub variables: Variables,
    pub created_at: DateTime<Utc>,
    /// Offline machines, portal resets, live-session settings, a linked user, the buyer
    /// email's index: empty for most licenses, so behind one pointer.
    #[serde(default, skip_serializing_if = "Extras::is_empty")]
    pub extras: Extras,
}

/// The buyer email's index as the license's events record it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuyerEmailIndex {
    /// No email event, or only ones written before the digest was recorded: an address in the
    /// vault (a purchase's, or an older release's) may still need its digest.
    #[default]
    NotIndexed,
    /// The latest email event carries this digest.
    Indexed(String),
    /// The email was removed: nothing to index.
    Removed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfflineMachine {
    pub hwid: String,
    pub jti: String,
    pub file: String,
}

impl License {
    pub fn offline_machine(&self, hwid: &str) -> Option<&OfflineMachine> {
        self.extras.offline_machines.iter().find(|m| m.hwid == hwid)
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

// Boxing `Live` would add an allocation to every fold on the hot path; the state is short-lived.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum LicenseState {
    #[default]
    Missing,
    Live(License),
    Deleted,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LicenseCommand {
    Create {
        key: LicenseKey,
        app_id: AppId,
        account_id: AccountId,
        expires_at: Option<DateTime<Utc>>,
        max_hwid_slots: u8,
        label: Option<String>,
        /// Recorded after the creation, in the same append, when not empty.
        levels: Vec<String>,
        max_sessions: Option<u32>,
    },
    Revoke,
    Activate,
    Extend {
        expires_at: Option<DateTime<Utc>>,
    },
    ResetHwid,
    /// Frees the slot of one bound machine.
    ReleaseHwid {
        hwid: String,
    },
    /// An end user's reset from the portal, allowed only inside the app's policy.
    PortalReset {
        policy: crate::portal::PortalPolicy,
    },
    Delete,
    SetVariables(Variables),
    /// An SDK login from `hwid`: checks status and expiry, binds a free slot if needed.
    Authenticate {
        hwid: String,
    },
    BillValidation {
        nonce: Option<String>,
        hwid: Option<String>,
    },
    BillHeartbeats {
        heartbeats: u32,
    },
    /// Self-serve offline activation of a perpetual license on `hwid` with a prepared file.
    /// The caller checks for a replay (same machine) first and answers with the stored file.
    ActivateOffline {
        hwid: String,
        jti: String,
        file: String,
    },
    /// The merchant mints a file; it binds no seat.
    RecordMintedFile {
        hwid: Option<String>,
        jti: String,
    },
    LinkCommerce {
        provider: crate::commerce::Provider,
        mapping_id: uuid::Uuid,
        refs: Vec<String>,
    },
    UnlinkCommerce,
    /// Records that the buyer's email (kept in the PII vault) was set (with its keyed digest)
    /// or removed (`None`).
    RecordBuyerEmail {
        email_digest: Option<String>,
    },
    /// Backfill: records the digest of the address the vault holds, only while the log has no
    /// digest and no removal (a second node, a rerun, or a change meanwhile make it a no-op).
    IndexBuyerEmail {
        email_digest: String,
    },
    /// Sets the fields given (`max_sessions: Some(None)` removes the limit); what is already so
    /// records nothing. Both changes are decided together, so a bad one changes neither.
    Configure {
        levels: Option<Vec<String>>,
        max_sessions: Option<Option<u32>>,
    },
    /// Links the license to an app user of its app, binding `hwid` (the session's client id)
    /// to a slot as an authorization would. A license linked to another user is refused, as is
    /// one already activated on other machines; linking it again to the same user is a no-op.
    LinkUser {
        user_id: crate::app_user::AppUserId,
        app_id: AppId,
        hwid: Option<String>,
    },
    /// Ends the link to `user_id` (nothing if the license is not linked to them).
    UnlinkUser {
        user_id: crate::app_user::AppUserId,
    },
    /// `user_id` signed in from `hwid`: the license must still be theirs, and it binds the
    /// machine as [`Self::Authenticate`] does (the user's license is used by signing in as them,
    /// so `Authenticate` itself refuses a linked license).
    AuthenticateUser {
        user_id: crate::app_user::AppUserId,
        hwid: String,
    },
}

/// Credits for a self-serve offline activation of a new machine, and for a minted file.
pub const OFFLINE_ACTIVATION_CREDITS: u32 = 2;
pub const OFFLINE_MINT_CREDITS: u32 = 1;

/// Heartbeats per billed credit.
pub const HEARTBEATS_PER_CREDIT: u32 = 10;

impl Aggregate for LicenseState {
    type Event = LicenseEvent;
    type Command = LicenseCommand;

    fn evolve(self, event: &LicenseEvent) -> Self {
        use LicenseEvent as E;
        let mut license = match (self, event) {
            (_, E::LicenseCreated { key, app_id, account_id, expires_at, max_hwid_slots, label, created_at }) => {
                return Self::Live(License {
                    key: key.clone(),
                    app_id: *app_id,
                    account_id: *account_id,
                    status: LicenseStatus::Active,
                    expires_at: *expires_at,
                    max_hwid_slots: *max_hwid_slots,
                    hwids: Vec::new(),
                    label: label.clone(),
                    variables: Variables::default(),
                    created_at: *created_at,
                    extras: Extras::default(),
                })
            }
            (_, E::LicenseDeleted { .. }) => return Self::Deleted,
            (Self::Live(license), _) => license,
            (other, _) => return other,
        };
        match event {
            E::LicenseRevoked { .. } => license.status = LicenseStatus::Revoked,
            E::LicenseActivated { .. } => license.status = LicenseStatus::Active,
            E::LicenseExtended { expires_at, .. } => license.expires_at = *expires_at,
            E::HwidBound { hwid, .. } => {
                // Exactly one more: a million licenses in memory each keep this vector.
                license.hwids.reserve_exact(1);
                license.hwids.push(hwid.clone());
            }
            E::HwidReset { .. } => license.hwids.clear(),
            E::HwidReleased { hwid, .. } => license.hwids.retain(|bound| bound != hwid),
            E::PortalResetRecorded { at } => license.extras.portal_resets.push(*at),
            E::VariablesSet { variables, .. } => license.variables = variables.clone(),
            E::LicenseLevelsSet { levels, .. } => license.extras.levels = levels.clone(),
            E::LicenseMaxSessionsSet { max_sessions, .. } => license.extras.max_sessions = *max_sessions,
            E::LicenseLinkedToUser { user_id, .. } => license.extras.linked_user = Some(*user_id),
            E::LicenseUnlinkedFromUser { .. } => license.extras.linked_user = None,
            E::OfflineActivated { hwid, jti, file, .. } => license.extras.offline_machines.push(OfflineMachine {
                hwid: hwid.clone(),
                jti: jti.clone(),
                file: file.clone(),
            }),
            E::LicenseCreated { .. }
            | E::LicenseDeleted { .. }
            | E::ValidationBilled { .. }
            | E::HeartbeatBilled { .. }
            | E::OfflineFileMinted { .. }
            | E::CommerceLinked { .. }
            | E::CommerceUnlinked { .. }
            | E::BuyerEmailSet { email_digest: None, .. } => {}
            E::BuyerEmailSet { email_digest: Some(digest), .. } => {
                license.extras.buyer_email = BuyerEmailIndex::Indexed(digest.clone())
            }
            E::BuyerEmailRemoved { .. } => license.extras.buyer_email = BuyerEmailIndex::Removed,
        }
        license.extras.compact();
        Self::Live(license)
    }

    fn decide(&self, command: LicenseCommand, now: DateTime<Utc>) -> Result<Vec<LicenseEvent>, DomainError> {
        use LicenseCommand as C;
        use LicenseEvent as E;
        if let C::Create { key, app_id, account_id, expires_at, max_hwid_slots, label, levels, max_sessions } = command
        {
            if *self != Self::Missing {
                return Err(DomainError::AlreadyExists("license"));
            }
            check_slots(max_hwid_slots)?;
            check_expiry(expires_at, now)?;
            let label = normalize_label(label)?;
            let levels = check_levels(levels)?;
            check_max_sessions(max_sessions)?;
            let mut events =
                vec![E::LicenseCreated { key, app_id, account_id, expires_at, max_hwid_slots, label, created_at: now }];
            if !levels.is_empty() {
                events.push(E::LicenseLevelsSet { levels, at: now });
            }
            if max_sessions.is_some() {
                events.push(E::LicenseMaxSessionsSet { max_sessions, at: now });
            }
            return Ok(events);
        }
        match self {
            Self::Live(license) => license.decide(command, now),
            Self::Missing => Err(DomainError::NotFound("license")),
            Self::Deleted => Err(DomainError::LicenseDeleted),
        }
    }
}

impl License {
    /// Decides `command` against this live license. The same rules as [`LicenseState::decide`]
    /// (which calls it), for callers that hold the license borrowed (the auth hot path decides
    /// under the model's lock of the entry instead of copying the license first).
    pub fn decide(&self, command: LicenseCommand, now: DateTime<Utc>) -> Result<Vec<LicenseEvent>, DomainError> {
        use LicenseCommand as C;
        use LicenseEvent as E;
        let license = self;
        let at = now;
        let events = match command {
            C::Create { .. } => return Err(DomainError::AlreadyExists("license")),
            C::Revoke if license.status == LicenseStatus::Revoked => vec![],
            C::Revoke => vec![E::LicenseRevoked { at }],
            C::Activate if license.status == LicenseStatus::Active => vec![],
            C::Activate => vec![E::LicenseActivated { at }],
            C::Extend { expires_at } => {
                check_expiry(expires_at, now)?;
                vec![E::LicenseExtended { expires_at, at }]
            }
            C::ResetHwid if license.hwids.is_empty() => vec![],
            C::ResetHwid => vec![E::HwidReset { at }],
            C::ReleaseHwid { hwid } if license.hwids.contains(&hwid) => vec![E::HwidReleased { hwid, at }],
            C::ReleaseHwid { .. } => return Err(DomainError::NotFound("machine")),
            C::PortalReset { policy } => {
                crate::portal::evaluate_reset(&policy, &license.extras.portal_resets, license.hwids.len(), now)
                    .map_err(DomainError::PortalResetRefused)?;
                vec![E::HwidReset { at }, E::PortalResetRecorded { at }]
            }
            C::Delete => vec![E::LicenseDeleted { at }],
            C::SetVariables(variables) => vec![E::VariablesSet { variables, at }],
            C::Authenticate { .. } | C::ActivateOffline { .. } if license.extras.linked_user.is_some() => {
                return Err(DomainError::LicenseLinkedToUser)
            }
            C::Authenticate { hwid } => authenticate(license, hwid, now)?,
            C::AuthenticateUser { user_id, hwid } => match license.extras.linked_user {
                Some(holder) if holder == user_id => authenticate(license, hwid, now)?,
                Some(_) => return Err(DomainError::LicenseLinkedToOtherUser),
                None => return Err(DomainError::NotFound("license")),
            },
            C::BillValidation { nonce, hwid } => {
                vec![E::ValidationBilled { account_id: license.account_id, credits: 1, nonce, hwid, at }]
            }
            C::ActivateOffline { hwid, jti, file } => activate_offline(license, hwid, jti, file, now)?,
            C::RecordMintedFile { hwid, jti } => {
                vec![E::OfflineFileMinted {
                    account_id: license.account_id,
                    hwid,
                    jti,
                    credits: OFFLINE_MINT_CREDITS,
                    at,
                }]
            }
            C::LinkCommerce { refs, .. } if refs.is_empty() => vec![],
            C::LinkCommerce { provider, mapping_id, refs } => vec![E::CommerceLinked {
                account_id: license.account_id,
                app_id: license.app_id,
                provider,
                mapping_id,
                refs,
                at,
            }],
            C::UnlinkCommerce => vec![E::CommerceUnlinked { at }],
            C::RecordBuyerEmail { email_digest: Some(digest) } => {
                vec![E::BuyerEmailSet { email_digest: Some(digest), at }]
            }
            C::RecordBuyerEmail { email_digest: None } => vec![E::BuyerEmailRemoved { at }],
            C::IndexBuyerEmail { email_digest } => match license.extras.buyer_email {
                BuyerEmailIndex::NotIndexed => vec![E::BuyerEmailSet { email_digest: Some(email_digest), at }],
                BuyerEmailIndex::Indexed(_) | BuyerEmailIndex::Removed => vec![],
            },
            C::Configure { levels, max_sessions } => configure(license, levels, max_sessions, at)?,
            C::LinkUser { user_id, app_id, hwid } => link_user(license, user_id, app_id, hwid, now)?,
            C::UnlinkUser { user_id } if license.extras.linked_user == Some(user_id) => {
                vec![E::LicenseUnlinkedFromUser { user_id, at }]
            }
            C::UnlinkUser { .. } => vec![],
            C::BillHeartbeats { heartbeats } => {
                let credits = heartbeats / HEARTBEATS_PER_CREDIT;
                if credits == 0 {
                    vec![]
                } else {
                    let heartbeats = credits * HEARTBEATS_PER_CREDIT;
                    vec![E::HeartbeatBilled { account_id: license.account_id, heartbeats, credits, at }]
                }
            }
        };
        Ok(events)
    }
}

fn link_user(
    license: &License,
    user_id: crate::app_user::AppUserId,
    app_id: AppId,
    hwid: Option<String>,
    now: DateTime<Utc>,
) -> Result<Vec<LicenseEvent>, DomainError> {
    if license.app_id != app_id {
        return Err(DomainError::NotFound("license"));
    }
    match license.extras.linked_user {
        Some(holder) if holder == user_id => return Ok(vec![]),
        Some(_) => return Err(DomainError::LicenseLinkedToOtherUser),
        None => {}
    }
    if license.status == LicenseStatus::Revoked {
        return Err(DomainError::LicenseRevoked);
    }
    let mut events = Vec::new();
    if let Some(hwid) = hwid {
        if !license.hwids.is_empty() && !license.hwids.contains(&hwid) {
            return Err(DomainError::LicenseAlreadyActivated);
        }
        // An expired license may still be linked (an extension makes it count again); only a
        // valid one binds the machine, as an authorization would.
        if !license.is_expired(now) {
            events = authenticate(license, hwid, now)?;
        }
    } else if !license.hwids.is_empty() {
        return Err(DomainError::LicenseAlreadyActivated);
    }
    events.push(LicenseEvent::LicenseLinkedToUser { user_id, at: now });
    Ok(events)
}

fn authenticate(license: &License, hwid: String, now: DateTime<Utc>) -> Result<Vec<LicenseEvent>, DomainError> {
    if hwid.is_empty() || hwid.chars().count() > MAX_HWID_LEN {
        return Err(DomainError::InvalidHwid { max: MAX_HWID_LEN });
    }
    if license.status == LicenseStatus::Revoked {
        return Err(DomainError::LicenseRevoked);
    }
    if license.is_expired(now) {
        return Err(DomainError::LicenseExpired);
    }
    if license.hwids.contains(&hwid) {
        return Ok(vec![]);
    }
    if license.hwids.len() >= usize::from(license.max_hwid_slots) {
        return Err(DomainError::HwidSlotsFull);
    }
    Ok(vec![LicenseEvent::HwidBound { hwid, at: now }])
}

/// Perpetual licenses only; at most `max_hwid_slots` machines ever; the machine also needs
/// (or already has) an HWID slot.
fn activate_offline(
    license: &License,
    hwid: String,
    jti: String,
    file: String,
    now: DateTime<Utc>,
) -> Result<Vec<LicenseEvent>, DomainError> {
    if license.expires_at.is_some() {
        // An expiring license is refused as such; an expired one says so first.
        authenticate(license, hwid, now)?;
        return Err(DomainError::OfflineActivationRequiresPerpetual);
    }
    if license.extras.offline_machines.len() >= usize::from(license.max_hwid_slots) {
        return Err(DomainError::OfflineActivationLimitReached);
    }
    let mut events = authenticate(license, hwid.clone(), now)?;
    let (account_id, credits) = (license.account_id, OFFLINE_ACTIVATION_CREDITS);
    events.push(LicenseEvent::OfflineActivated { account_id, hwid, jti, file, credits, at: now });
    Ok(events)
}

fn configure(
    license: &License,
    levels: Option<Vec<String>>,
    max_sessions: Option<Option<u32>>,
    at: DateTime<Utc>,
) -> Result<Vec<LicenseEvent>, DomainError> {
    let levels = levels.map(check_levels).transpose()?;
    if let Some(max_sessions) = max_sessions {
        check_max_sessions(max_sessions)?;
    }
    let mut events = Vec::new();
    if let Some(levels) = levels.filter(|l| *l != license.extras.levels) {
        events.push(LicenseEvent::LicenseLevelsSet { levels, at });
    }
    if let Some(max_sessions) = max_sessions.filter(|m| *m != license.extras.max_sessions) {
        events.push(LicenseEvent::LicenseMaxSessionsSet { max_sessions, at });
    }
    Ok(events)
}

/// Each level 1–16 characters without control characters; repeats are kept once, in order.
/// How many levels a license may have is the API's limit (it is configurable).
pub(crate) fn check_levels(levels: Vec<String>) -> Result<Vec<String>, DomainError> {
    let mut seen = std::collections::HashSet::new();
    let mut kept = Vec::with_capacity(levels.len());
    for level in levels {
        if level.is_empty() || level.chars().count() > MAX_LEVEL_CHARS {
            return Err(DomainError::InvalidLevels(format!("each level must be 1 to {MAX_LEVEL_CHARS} characters")));
        }
        if level.chars().any(char::is_control) {
            return Err(DomainError::InvalidLevels("a level cannot hold control characters".into()));
        }
        if seen.insert(level.clone()) {
            kept.push(level);
        }
    }
    Ok(kept)
}

fn check_max_sessions(max_sessions: Option<u32>) -> Result<(), DomainError> {
    match max_sessions {
        Some(0) => Err(DomainError::InvalidMaxSessions),
        _ => Ok(()),
    }
}

fn check_slots(slots: u8) -> Result<(), DomainError> {
    if (MIN_HWID_SLOTS..=MAX_HWID_SLOTS).contains(&slots) {
        Ok(())
    } else {
        Err(DomainError::InvalidHwidSlots)
    }
}

fn check_expiry(expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<(), DomainError> {
    match expires_at {
        Some(at) if at <= now => Err(DomainError::ExpiryInPast),
        _ => Ok(()),
    }
}

/// Blank labels are stored as none; longer than 128 characters is refused.
fn normalize_label(label: Option<String>) -> Result<Option<String>, DomainError> {
    match label {
        Some(l) if l.chars().count() > MAX_LABEL_CHARS => Err(DomainError::LabelTooLong),
        Some(l) if l.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
    }

    fn key() -> LicenseKey {
        LicenseKey::parse("A3K9-BFWX-7NP2-QHDT").unwrap()
    }

    fn created(slots: u8, expires_at: Option<DateTime<Utc>>) -> LicenseEvent {
        LicenseEvent::LicenseCreated {
            key: key(),
            app_id: AppId(uuid::Uuid::nil()),
            account_id: AccountId(uuid::Uuid::nil()),
            expires_at,
            max_hwid_slots: slots,
            label: None,
            created_at: now(),
        }
    }

    /// given `history`, when `command` at `now()`, then the result.
    fn given_when(history: &[LicenseEvent], command: LicenseCommand) -> Result<Vec<LicenseEvent>, DomainError> {
        LicenseState::fold(history).decide(command, now())
    }

    #[test]
    fn the_email_backfill_records_a_digest_once_and_never_over_a_newer_one_or_a_removal() {
        let index = |digest: &str| LicenseCommand::IndexBuyerEmail { email_digest: digest.into() };
        let set =
            |digest: Option<&str>| LicenseEvent::BuyerEmailSet { email_digest: digest.map(Into::into), at: now() };
        // Never indexed: a license from a purchase, or one whose set event predates the digest.
        for history in [vec![created(1, None)], vec![created(1, None), set(None)]] {
            assert_eq!(given_when(&history, index("aa")).unwrap(), vec![set(Some("aa"))]);
        }
        let indexed = vec![created(1, None), set(None), set(Some("aa"))];
        assert_eq!(given_when(&indexed, index("aa")).unwrap(), vec![], "a second node: nothing");
        let changed = vec![created(1, None), set(Some("bb"))];
        assert_eq!(given_when(&changed, index("aa")).unwrap(), vec![], "a newer address wins");
        let removed = vec![created(1, None), set(None), LicenseEvent::BuyerEmailRemoved { at: now() }];
        assert_eq!(given_when(&removed, index("aa")).unwrap(), vec![], "a removal stays");
    }

    fn bind(hwid: &str) -> LicenseCommand {
        LicenseCommand::Authenticate { hwid: hwid.into() }
    }

    #[test]
    fn create_records_the_license_once() {
        let cmd = LicenseCommand::Create {
            key: key(),
            app_id: AppId(uuid::Uuid::nil()),
            account_id: AccountId(uuid::Uuid::nil()),
            expires_at: None,
            max_hwid_slots: 2,
            label: Some("order #1".into()),
            levels: vec![],
            max_sessions: None,
        };
        let events = given_when(&[], cmd.clone()).unwrap();
        assert!(matches!(&events[..], [LicenseEvent::LicenseCreated { max_hwid_slots: 2, .. }]));
        assert_eq!(given_when(&events, cmd), Err(DomainError::AlreadyExists("license")));
    }

    #[test]
    fn create_enforces_slot_label_and_expiry_limits() {
        let base = |slots, label: Option<String>, expires_at| LicenseCommand::Create {
            key: key(),
            app_id: AppId(uuid::Uuid::nil()),
            account_id: AccountId(uuid::Uuid::nil()),
            expires_at,
            max_hwid_slots: slots,
            label,
            levels: vec![],
            max_sessions: None,
        };
        assert_eq!(given_when(&[], base(0, None, None)), Err(DomainError::InvalidHwidSlots));
        assert_eq!(given_when(&[], base(17, None, None)), Err(DomainError::InvalidHwidSlots));
        assert_eq!(given_when(&[], base(1, Some("x".repeat(129)), None)), Err(DomainError::LabelTooLong));
        let past = now() - chrono::Duration::seconds(1);
        assert_eq!(given_when(&[], base(1, None, Some(past))), Err(DomainError::ExpiryInPast));
        assert!(given_when(&[], base(16, Some("x".repeat(128)), None)).is_ok());
    }

    #[test]
    fn releasing_one_machine_frees_its_slot_and_keeps_the_others() {
        let bound = |hwid: &str| LicenseEvent::HwidBound { hwid: hwid.into(), at: now() };
        let history = vec![created(2, None), bound("hw-1"), bound("hw-2")];
        assert_eq!(given_when(&history, bind("hw-3")), Err(DomainError::HwidSlotsFull));
        let release = |hwid: &str| LicenseCommand::ReleaseHwid { hwid: hwid.into() };
        assert_eq!(given_when(&history, release("hw-9")), Err(DomainError::NotFound("machine")));
        let released = given_when(&history, release("hw-1")).unwrap();
        let history: Vec<_> = history.into_iter().chain(released).collect();
        let LicenseState::Live(license) = LicenseState::fold(&history) else { panic!("live") };
        assert_eq!(license.hwids, ["hw-2"]);
        assert!(matches!(&given_when(&history, bind("hw-3")).unwrap()[..], [LicenseEvent::HwidBound { .. }]));
    }

    #[test]
    fn authenticate_binds_free_slots_then_refuses_new_machines() {
        let history = vec![created(2, None)];
        let first = given_when(&history, bind("hw-1")).unwrap();
        assert!(matches!(&first[..], [LicenseEvent::HwidBound { hwid, .. }] if hwid == "hw-1"));
        let history: Vec<_> = history.into_iter().chain(first).collect();
        assert_eq!(given_when(&history, bind("hw-1")), Ok(vec![]), "a bound machine binds nothing new");
        let second = given_when(&history, bind("hw-2")).unwrap();
        let history: Vec<_> = history.into_iter().chain(second).collect();
        assert_eq!(given_when(&history, bind("hw-3")), Err(DomainError::HwidSlotsFull));
    }

    #[test]
    fn reset_frees_every_slot() {
        let history = vec![created(1, None), LicenseEvent::HwidBound { hwid: "hw-1".into(), at: now() }];
        assert_eq!(given_when(&history, bind("hw-2")), Err(DomainError::HwidSlotsFull));
        let reset = given_when(&history, LicenseCommand::ResetHwid).unwrap();
        let history: Vec<_> = history.into_iter().chain(reset).collect();
        assert!(given_when(&history, bind("hw-2")).is_ok());
        assert_eq!(given_when(&[created(1, None)], LicenseCommand::ResetHwid), Ok(vec![]));
    }

    #[test]
    fn revoked_and_expired_licenses_refuse_authentication() {
        let revoked = vec![created(1, None), LicenseEvent::LicenseRevoked { at: now() }];
        assert_eq!(given_when(&revoked, bind("hw")), Err(DomainError::LicenseRevoked));
        let reactivated: Vec<_> =
            revoked.iter().cloned().chain([LicenseEvent::LicenseActivated { at: now() }]).collect();
        assert!(given_when(&reactivated, bind("hw")).is_ok());

        let expired = vec![created(1, Some(now()))];
        assert_eq!(given_when(&expired, bind("hw")), Err(DomainError::LicenseExpired));
        let later = now() + chrono::Duration::days(30);
        let extended = given_when(&expired, LicenseCommand::Extend { expires_at: Some(later) }).unwrap();
        let history: Vec<_> = expired.into_iter().chain(extended).collect();
        assert!(given_when(&history, bind("hw")).is_ok());
    }

    #[test]
    fn revoke_and_activate_are_idempotent() {
        let revoked = vec![created(1, None), LicenseEvent::LicenseRevoked { at: now() }];
        assert_eq!(given_when(&revoked, LicenseCommand::Revoke), Ok(vec![]));
        assert_eq!(given_when(&[created(1, None)], LicenseCommand::Activate), Ok(vec![]));
    }

    #[test]
    fn deleted_and_missing_licenses_refuse_every_command() {
        let deleted = vec![created(1, None), LicenseEvent::LicenseDeleted { at: now() }];
        assert_eq!(given_when(&deleted, LicenseCommand::Revoke), Err(DomainError::LicenseDeleted));
        assert_eq!(given_when(&[], bind("hw")), Err(DomainError::NotFound("license")));
    }

    #[test]
    fn heartbeats_bill_one_credit_per_ten() {
        let history = vec![created(1, None)];
        assert_eq!(given_when(&history, LicenseCommand::BillHeartbeats { heartbeats: 9 }), Ok(vec![]));
        let billed = given_when(&history, LicenseCommand::BillHeartbeats { heartbeats: 25 }).unwrap();
        assert!(matches!(&billed[..], [LicenseEvent::HeartbeatBilled { heartbeats: 20, credits: 2, .. }]));
    }

    fn activate(hwid: &str) -> LicenseCommand {
        LicenseCommand::ActivateOffline { hwid: hwid.into(), jti: format!("jti-{hwid}"), file: format!("file-{hwid}") }
    }

    #[test]
    fn offline_activation_needs_a_perpetual_license() {
        let expiring = vec![created(2, Some(now() + chrono::Duration::days(1)))];
        assert_eq!(given_when(&expiring, activate("m1")), Err(DomainError::OfflineActivationRequiresPerpetual));
        let expired = vec![created(2, Some(now()))];
        assert_eq!(given_when(&expired, activate("m1")), Err(DomainError::LicenseExpired));
    }

    #[test]
    fn offline_machines_are_limited_for_ever_and_bind_a_slot() {
        let mut history = vec![created(1, None)];
        let first = given_when(&history, activate("m1")).unwrap();
        assert!(matches!(
            &first[..],
            [LicenseEvent::HwidBound { .. }, LicenseEvent::OfflineActivated { credits: 2, .. }]
        ));
        history.extend(first);
        let LicenseState::Live(license) = LicenseState::fold(&history) else { panic!("the license is live") };
        assert_eq!(license.offline_machine("m1").map(|m| m.file.as_str()), Some("file-m1"));
        history.extend(given_when(&history, LicenseCommand::ResetHwid).unwrap());
        assert_eq!(given_when(&history, activate("m2")), Err(DomainError::OfflineActivationLimitReached));
    }

    #[test]
    fn a_full_license_refuses_a_new_offline_machine() {
        let history = vec![
            created(2, None),
            LicenseEvent::HwidBound { hwid: "a".into(), at: now() },
            LicenseEvent::HwidBound { hwid: "b".into(), at: now() },
        ];
        assert_eq!(given_when(&history, activate("m1")), Err(DomainError::HwidSlotsFull));
    }

    fn create_with(levels: &[&str], max_sessions: Option<u32>) -> LicenseCommand {
        LicenseCommand::Create {
            key: key(),
            app_id: AppId(uuid::Uuid::nil()),
            account_id: AccountId(uuid::Uuid::nil()),
            expires_at: None,
            max_hwid_slots: 1,
            label: None,
            levels: levels.iter().map(|l| l.to_string()).collect(),
            max_sessions,
        }
    }

    fn live(history: &[LicenseEvent]) -> License {
        let LicenseState::Live(license) = LicenseState::fold(history) else { panic!("the license is live") };
        license
    }

    #[test]
    fn levels_and_seats_are_recorded_with_the_creation() {
        let plain = given_when(&[], create_with(&[], None)).unwrap();
        assert_eq!(plain.len(), 1, "nothing extra for a license without levels or seats");
        assert_eq!((live(&plain).extras.levels.len(), live(&plain).extras.max_sessions), (0, None));
        let events = given_when(&[], create_with(&["pro", "beta", "pro"], Some(3))).unwrap();
        assert!(matches!(
            &events[..],
            [
                LicenseEvent::LicenseCreated { .. },
                LicenseEvent::LicenseLevelsSet { .. },
                LicenseEvent::LicenseMaxSessionsSet { max_sessions: Some(3), .. }
            ]
        ));
        assert_eq!(live(&events).extras.levels, ["pro", "beta"], "a repeated level is kept once, in order");
        assert_eq!(live(&events).extras.max_sessions, Some(3));
    }

    #[test]
    fn bad_levels_or_seats_refuse_the_whole_command() {
        let long = "x".repeat(17);
        for bad in [vec![""], vec!["ok", long.as_str()], vec!["a\u{0}b"]] {
            assert!(matches!(given_when(&[], create_with(&bad, None)), Err(DomainError::InvalidLevels(_))));
        }
        assert_eq!(given_when(&[], create_with(&[], Some(0))), Err(DomainError::InvalidMaxSessions));
        let history = given_when(&[], create_with(&["pro"], Some(2))).unwrap();
        let both = LicenseCommand::Configure { levels: Some(vec!["gold".into()]), max_sessions: Some(Some(0)) };
        assert_eq!(given_when(&history, both), Err(DomainError::InvalidMaxSessions), "neither is set");
        assert!(given_when(&[], create_with(&[&"x".repeat(16)], Some(1))).is_ok());
    }

    #[test]
    fn configure_records_only_what_changes() {
        let mut history = given_when(&[], create_with(&["pro"], Some(2))).unwrap();
        let same = LicenseCommand::Configure { levels: Some(vec!["pro".into()]), max_sessions: Some(Some(2)) };
        assert_eq!(given_when(&history, same), Ok(vec![]));
        let unlimit = LicenseCommand::Configure { levels: None, max_sessions: Some(None) };
        history.extend(given_when(&history, unlimit).unwrap());
        assert_eq!(
            (live(&history).extras.levels.clone(), live(&history).extras.max_sessions),
            (vec!["pro".to_string()], None)
        );
        let clear = LicenseCommand::Configure { levels: Some(vec![]), max_sessions: None };
        history.extend(given_when(&history, clear).unwrap());
        assert!(live(&history).extras.levels.is_empty());
    }

    #[test]
    fn a_license_is_linked_to_one_user_at_most() {
        use crate::app_user::AppUserId;
        let (ann, bob) = (AppUserId::new(), AppUserId::new());
        let app_id = AppId(uuid::Uuid::nil());
        let link = |user_id, hwid: &str| LicenseCommand::LinkUser { user_id, app_id, hwid: Some(hwid.into()) };
        let mut history = vec![created(2, None)];
        let linked = given_when(&history, link(ann, "pc-1")).unwrap();
        assert!(matches!(&linked[..], [LicenseEvent::HwidBound { .. }, LicenseEvent::LicenseLinkedToUser { .. }]));
        history.extend(linked);
        assert_eq!(live(&history).extras.linked_user, Some(ann));
        assert_eq!(given_when(&history, link(ann, "pc-1")), Ok(vec![]), "linking again changes nothing");
        assert_eq!(given_when(&history, link(bob, "pc-1")), Err(DomainError::LicenseLinkedToOtherUser));
        let other_app = LicenseCommand::LinkUser { user_id: bob, app_id: AppId::new(), hwid: None };
        assert_eq!(given_when(&history, other_app), Err(DomainError::NotFound("license")));
        history.extend(given_when(&history, LicenseCommand::UnlinkUser { user_id: bob }).unwrap());
        assert_eq!(live(&history).extras.linked_user, Some(ann), "only the holder's link ends");
        history.extend(given_when(&history, LicenseCommand::UnlinkUser { user_id: ann }).unwrap());
        assert_eq!(live(&history).extras.linked_user, None);
        assert_eq!(given_when(&history, link(bob, "pc-2")), Err(DomainError::LicenseAlreadyActivated));
        assert!(given_when(&history, link(bob, "pc-1")).is_ok(), "the machine it is activated on may link it");
    }

    #[test]
    fn a_linked_license_binds_machines_only_for_its_user() {
        use crate::app_user::AppUserId;
        let (ann, bob) = (AppUserId::new(), AppUserId::new());
        let app_id = AppId(uuid::Uuid::nil());
        let signed_in = |user_id, hwid: &str| LicenseCommand::AuthenticateUser { user_id, hwid: hwid.into() };
        let mut history = vec![created(2, None)];
        assert_eq!(given_when(&history, signed_in(ann, "pc-1")), Err(DomainError::NotFound("license")), "not hers");
        history.extend(given_when(&history, LicenseCommand::LinkUser { user_id: ann, app_id, hwid: None }).unwrap());
        assert_eq!(given_when(&history, bind("pc-1")), Err(DomainError::LicenseLinkedToUser), "no key login");
        let refused = given_when(
            &history,
            LicenseCommand::ActivateOffline { hwid: "pc-1".into(), jti: "j".into(), file: "f".into() },
        );
        assert_eq!(refused, Err(DomainError::LicenseLinkedToUser));
        assert_eq!(given_when(&history, signed_in(bob, "pc-1")), Err(DomainError::LicenseLinkedToOtherUser));
        let first = given_when(&history, signed_in(ann, "pc-1")).unwrap();
        assert!(matches!(&first[..], [LicenseEvent::HwidBound { hwid, .. }] if hwid == "pc-1"));
        history.extend(first);
        assert_eq!(given_when(&history, signed_in(ann, "pc-1")), Ok(vec![]), "bound already");
        history.extend(given_when(&history, signed_in(ann, "pc-2")).unwrap());
        assert_eq!(given_when(&history, signed_in(ann, "pc-3")), Err(DomainError::HwidSlotsFull), "two slots");
    }

    #[test]
    fn oversized_hwids_are_refused() {
        let history = vec![created(1, None)];
        assert!(matches!(given_when(&history, bind(&"h".repeat(257))), Err(DomainError::InvalidHwid { .. })));
        assert!(matches!(given_when(&history, bind("")), Err(DomainError::InvalidHwid { .. })));
    }
}
