//! Public auth failures: `{"status":"failed","error":code}` with the documented HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use licensd_domain::DomainError;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    BadRequest,
    MalformedRequest,
    PayloadTooLarge,
    InvalidApp,
    InvalidKey,
    SessionExpired,
    ReplayDetected,
    Blocked,
    AppDisabled,
    HwidMismatch,
    RevokeRequiresSession,
    Expired,
    Revoked,
    RateLimited,
    NoCredits,
    AppBurnCapReached,
    OfflineActivationDisabled,
    OfflineActivationLimitReached,
    OfflineActivationRequiresPerpetual,
    SystemError,
    /// The nonce cap (`LICENSD_NONCE_CAP`) is reached: a new nonce cannot be remembered, and
    /// accepting it unremembered would open a replay.
    NonceCapacityReached,
    MethodNotAllowed,
    UnsupportedMediaType,
    /// The license is an app user's (issue 17): it is used by signing in as them over a live
    /// session, not by its key.
    LicenseLinkedToUser,
}

impl AuthError {
    pub fn code(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::MalformedRequest => "malformed_request",
            Self::PayloadTooLarge => "payload_too_large",
            Self::InvalidApp => "invalid_app",
            Self::InvalidKey => "invalid_key",
            Self::SessionExpired => "session_expired",
            Self::ReplayDetected => "replay_detected",
            Self::Blocked => "blocked",
            Self::AppDisabled => "app_disabled",
            Self::HwidMismatch => "hwid_mismatch",
            Self::RevokeRequiresSession => "revoke_requires_session",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::RateLimited => "rate_limited",
            Self::NoCredits => "no_credits",
            Self::AppBurnCapReached => "app_burn_cap_reached",
            Self::OfflineActivationDisabled => "offline_activation_disabled",
            Self::OfflineActivationLimitReached => "offline_activation_limit_reached",
            Self::OfflineActivationRequiresPerpetual => "offline_activation_requires_perpetual",
            Self::SystemError => "system_error",
            Self::NonceCapacityReached => "nonce_capacity_reached",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::LicenseLinkedToUser => "license_linked_to_user",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest | Self::MalformedRequest => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidApp | Self::InvalidKey | Self::SessionExpired | Self::ReplayDetected => {
                StatusCode::UNAUTHORIZED
            }
            Self::Blocked
            | Self::AppDisabled
            | Self::HwidMismatch
            | Self::RevokeRequiresSession
            | Self::OfflineActivationDisabled
            | Self::OfflineActivationLimitReached
            | Self::LicenseLinkedToUser => StatusCode::FORBIDDEN,
            Self::OfflineActivationRequiresPerpetual => StatusCode::CONFLICT,
            Self::Expired | Self::Revoked => StatusCode::GONE,
            Self::RateLimited | Self::NoCredits | Self::AppBurnCapReached => StatusCode::TOO_MANY_REQUESTS,
            Self::SystemError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NonceCapacityReached => StatusCode::SERVICE_UNAVAILABLE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    /// The documented error for a status that a layer below the handlers chose.
    pub fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::TOO_MANY_REQUESTS => Self::RateLimited,
            s if s.is_server_error() => Self::SystemError,
            _ => Self::BadRequest,
        }
    }
}

/// Why an auth request was refused: a code, and for `bad_request` the fields at fault.
#[derive(Debug)]
pub struct Refusal {
    error: AuthError,
    details: Vec<Value>,
}

impl Refusal {
    pub fn with_details(error: AuthError, details: Vec<Value>) -> Self {
        Self { error, details }
    }
}

impl From<AuthError> for Refusal {
    fn from(error: AuthError) -> Self {
        Self { error, details: Vec::new() }
    }
}

impl From<DomainError> for Refusal {
    fn from(e: DomainError) -> Self {
        AuthError::from(e).into()
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        if self.details.is_empty() {
            return self.error.into_response();
        }
        let body = json!({ "status": "failed", "error": self.error.code(), "details": self.details });
        (self.error.status(), axum::Json(body)).into_response()
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        (self.status(), axum::Json(json!({ "status": "failed", "error": self.code() }))).into_response()
    }
}

/// The domain's refusals, as the SDKs know them.
impl From<DomainError> for AuthError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::LicenseRevoked => Self::Revoked,
            DomainError::LicenseExpired => Self::Expired,
            DomainError::HwidSlotsFull => Self::HwidMismatch,
            DomainError::InvalidHwid { .. } => Self::BadRequest,
            DomainError::NotFound(_) | DomainError::LicenseDeleted | DomainError::InvalidLicenseKey => Self::InvalidKey,
            DomainError::AppDisabled => Self::AppDisabled,
            // The app's self-ban capacity is spent: a documented, retryable refusal, never a 500.
            DomainError::SelfBanLimitReached => Self::RateLimited,
            DomainError::OfflineActivationDisabled => Self::OfflineActivationDisabled,
            DomainError::OfflineActivationLimitReached => Self::OfflineActivationLimitReached,
            DomainError::OfflineActivationRequiresPerpetual => Self::OfflineActivationRequiresPerpetual,
            DomainError::LicenseLinkedToUser => Self::LicenseLinkedToUser,
            other => {
                tracing::error!(error = %other, "unexpected domain refusal on the auth path");
                Self::SystemError
            }
        }
    }
}

/// A command's failure on the auth path: a value the database refuses is the request's fault;
/// any other failure is ours.
impl From<licensd_commands::CommandError> for AuthError {
    fn from(e: licensd_commands::CommandError) -> Self {
        use licensd_commands::CommandError;
        match e {
            CommandError::Domain(d) => d.into(),
            CommandError::Store(licensd_store::StoreError::InvalidData(detail)) => {
                tracing::warn!(%detail, "the database refused a value of an auth request");
                Self::BadRequest
            }
            other => {
                tracing::warn!(error = %other, "auth command failed");
                Self::SystemError
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AuthError;
    use licensd_commands::CommandError;
    use licensd_store::StoreError;

    #[test]
    fn a_refused_value_is_bad_request_and_an_outage_a_system_error() {
        let refused = CommandError::Store(StoreError::InvalidData("0x00".into()));
        assert_eq!(AuthError::from(refused), AuthError::BadRequest);
        let unknown = CommandError::Store(StoreError::CommitUnknown("lost".into()));
        assert_eq!(AuthError::from(unknown), AuthError::SystemError);
        assert_eq!(AuthError::from(CommandError::Overloaded), AuthError::SystemError);
    }
}
