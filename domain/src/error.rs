use thiserror::Error;

/// Every rule the domain can refuse. The API layer maps each variant to a wire code in one place.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    #[error("the {0} does not exist")]
    NotFound(&'static str),
    #[error("the {0} already exists")]
    AlreadyExists(&'static str),
    #[error("the license has been deleted")]
    LicenseDeleted,
    #[error("the license is revoked")]
    LicenseRevoked,
    #[error("the license has expired")]
    LicenseExpired,
    #[error("all HWID slots of the license are taken by other machines")]
    HwidSlotsFull,
    #[error("invalid license key format")]
    InvalidLicenseKey,
    #[error("maxHwidSlots must be between 1 and 16")]
    InvalidHwidSlots,
    #[error("HWID must be 1 to {max} characters")]
    InvalidHwid { max: usize },
    #[error("label must be at most 128 characters")]
    LabelTooLong,
    #[error("name must be 1 to 100 characters")]
    InvalidName,
    #[error("expiry must lie in the future")]
    ExpiryInPast,
    #[error("credit amount must be positive")]
    InvalidCreditAmount,
    #[error("invalid variables: {0}")]
    InvalidVariables(String),
    #[error("invalid security list: {0}")]
    InvalidSecurityList(String),
    #[error("the app's self-ban entries reached their limit")]
    SelfBanLimitReached,
    #[error("the app is disabled")]
    AppDisabled,
    #[error("the API key is revoked")]
    ApiKeyRevoked,
    #[error("invalid webhook: {0}")]
    InvalidWebhook(String),
    #[error("offline activation is not enabled for this app")]
    OfflineActivationDisabled,
    #[error("only perpetual licenses can be activated offline")]
    OfflineActivationRequiresPerpetual,
    #[error("every offline activation seat of this license has been used")]
    OfflineActivationLimitReached,
    #[error("invalid product mapping: {0}")]
    InvalidMapping(String),
    #[error("price {0} is already mapped in this app")]
    MappingConflict(String),
    #[error("the signing key signs now: promote another key first")]
    SigningKeyInUse,
    #[error("the signing key is retired and cannot sign again")]
    SigningKeyRetired,
    #[error("the ledger entry is not waiting to be processed")]
    LedgerNotWorkable,
    #[error("only skipped, failed or held ledger entries can be replayed")]
    LedgerNotReplayable,
    #[error("invalid app version: {0}")]
    InvalidVersion(String),
    #[error("invalid WebSocket API key: {0}")]
    InvalidWebsocketKey(String),
    #[error("invalid levels: {0}")]
    InvalidLevels(String),
    #[error("maxSessions must be at least 1 (null removes the limit)")]
    InvalidMaxSessions,
    #[error("invalid portal policy: {0}")]
    InvalidPortalPolicy(String),
    #[error("portal reset refused: {}", .0.explanation())]
    PortalResetRefused(crate::portal::ResetRefusal),
    #[error("a comment must be at most {0} characters, without control characters")]
    InvalidComment(usize),
    #[error("the license is linked to another user")]
    LicenseLinkedToOtherUser,
    #[error("the license is already activated on another machine and cannot be linked to a user")]
    LicenseAlreadyActivated,
    #[error("the license is linked to a user: sign in as that user")]
    LicenseLinkedToUser,
    #[error("invalid file name: {0}")]
    InvalidFileName(String),
    #[error("an event of type {event_type} v{schema_version} could not be decoded: {reason}")]
    UndecodableEvent { event_type: String, schema_version: i32, reason: String },
}
