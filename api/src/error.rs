//! The Developer API's error shape, `{"error": code, "message": text}`, and the one mapping
//! from lower layers' errors to it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use licensd_commands::CommandError;
use licensd_domain::DomainError;
use licensd_projections::ProjectionError;
use licensd_store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    InvalidApiKey,
    /// A browser session (portal) is missing, expired or wrong: its own code and message.
    Unauthorized(&'static str, String),
    NoCredits,
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    PayloadTooLarge,
    RateLimited,
    /// Our infrastructure is overloaded, shutting down or cannot reach the database.
    Unavailable(String),
    Internal,
    MethodNotAllowed,
    UnsupportedMediaType,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.clone()),
            Self::InvalidApiKey => {
                (StatusCode::UNAUTHORIZED, "invalid_api_key", "Missing, malformed or revoked API key".into())
            }
            Self::Unauthorized(code, m) => (StatusCode::UNAUTHORIZED, code, m.clone()),
            Self::NoCredits => (StatusCode::PAYMENT_REQUIRED, "no_credits", "Insufficient credits".into()),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone()),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m.clone()),
            Self::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            Self::PayloadTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "The request body is too large".into())
            }
            Self::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Too many requests".into()),
            Self::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m.clone()),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "Unexpected server error".into()),
            Self::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "This endpoint does not take this method".into())
            }
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "The request body must be sent as Content-Type: application/json".into(),
            ),
        }
    }
}

impl ApiError {
    /// The documented error for a status that a layer below the handlers chose (a rejection
    /// explained by `message`); statuses without a code of their own are `bad_request`.
    pub fn for_status(status: StatusCode, message: String) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::NotFound("no such endpoint".into()),
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::TOO_MANY_REQUESTS => Self::RateLimited,
            s if s.is_server_error() => Self::Internal,
            _ => Self::BadRequest(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        (status, axum::Json(serde_json::json!({ "error": code, "message": message }))).into_response()
    }
}

/// Public text for store failures; the database's own text is only logged.
const REFUSED_VALUE: &str =
    "A value in the request cannot be stored (for example a NUL character); nothing was changed";
const COMMIT_UNKNOWN: &str = "The database connection was lost while committing, so the outcome is unknown; \
                              retry with the same Idempotency-Key";
const DATABASE_UNAVAILABLE: &str = "The database is unavailable; retry later";

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Domain(d) => d.into(),
            CommandError::Invalid(message) => Self::BadRequest(message),
            CommandError::Forbidden(what) => Self::Forbidden(format!("The {what} doesn't belong to your account")),
            // The database's own text stays in the log: it may quote the refused value.
            CommandError::Store(StoreError::InvalidData(detail)) => {
                tracing::debug!(%detail, "the database refused a value of a request");
                Self::BadRequest(REFUSED_VALUE.into())
            }
            CommandError::Store(StoreError::CommitUnknown(detail)) => {
                tracing::error!(%detail, "commit outcome unknown");
                Self::Unavailable(COMMIT_UNKNOWN.into())
            }
            CommandError::Store(e) if e.is_transient() => {
                tracing::warn!(error = %e, "database unavailable");
                Self::Unavailable(DATABASE_UNAVAILABLE.into())
            }
            e if e.is_unavailable() => Self::Unavailable(e.to_string()),
            CommandError::Store(licensd_store::StoreError::WrongExpectedVersion { .. }) => {
                Self::Conflict("the resource changed concurrently; retry".into())
            }
            e => {
                tracing::error!(error = %e, "command failed");
                Self::Internal
            }
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        use DomainError as D;
        match e {
            D::NotFound(what) => Self::NotFound(format!("The {what} doesn't exist")),
            D::AlreadyExists(_) | D::LicenseDeleted => Self::Conflict(e.to_string()),
            D::LicenseRevoked
            | D::LicenseExpired
            | D::HwidSlotsFull
            | D::AppDisabled
            | D::ApiKeyRevoked
            | D::OfflineActivationDisabled
            | D::OfflineActivationRequiresPerpetual
            | D::OfflineActivationLimitReached
            | D::MappingConflict(_)
            | D::LedgerNotWorkable
            | D::LedgerNotReplayable
            | D::PortalResetRefused(_)
            | D::LicenseLinkedToOtherUser
            | D::LicenseAlreadyActivated
            | D::LicenseLinkedToUser
            | D::SigningKeyInUse
            | D::SigningKeyRetired
            | D::SelfBanLimitReached => Self::Conflict(e.to_string()),
            D::InvalidLicenseKey
            | D::InvalidHwidSlots
            | D::InvalidHwid { .. }
            | D::LabelTooLong
            | D::InvalidName
            | D::ExpiryInPast
            | D::InvalidCreditAmount
            | D::InvalidVariables(_)
            | D::InvalidSecurityList(_)
            | D::InvalidWebhook(_)
            | D::InvalidMapping(_)
            | D::InvalidPortalPolicy(_)
            | D::InvalidVersion(_)
            | D::InvalidWebsocketKey(_)
            | D::InvalidLevels(_)
            | D::InvalidComment(_)
            | D::InvalidFileName(_)
            | D::InvalidMaxSessions => Self::BadRequest(e.to_string()),
            D::UndecodableEvent { .. } => {
                tracing::error!(error = %e, "stored event cannot be decoded");
                Self::Internal
            }
        }
    }
}

impl From<licensd_store::StoreError> for ApiError {
    fn from(e: licensd_store::StoreError) -> Self {
        CommandError::Store(e).into()
    }
}

impl From<ProjectionError> for ApiError {
    fn from(e: ProjectionError) -> Self {
        Self::Unavailable(format!("read model is behind: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::{ApiError, COMMIT_UNKNOWN, DATABASE_UNAVAILABLE, REFUSED_VALUE};
    use axum::http::StatusCode;
    use licensd_commands::CommandError;
    use licensd_store::StoreError;

    fn parts(e: StoreError) -> (StatusCode, &'static str, String) {
        ApiError::from(CommandError::Store(e)).parts()
    }

    #[test]
    fn store_failures_map_to_fixed_text_never_the_database_s() {
        let secret = "invalid byte sequence for encoding \"UTF8\": 0x00 near 'hunter2'";
        let refused = parts(StoreError::InvalidData(secret.into()));
        assert_eq!(refused, (StatusCode::BAD_REQUEST, "bad_request", REFUSED_VALUE.into()));
        let unknown = parts(StoreError::CommitUnknown(secret.into()));
        assert_eq!(unknown, (StatusCode::SERVICE_UNAVAILABLE, "unavailable", COMMIT_UNKNOWN.into()));
        assert!(COMMIT_UNKNOWN.contains("Idempotency-Key"));
        let down = parts(StoreError::Unavailable(secret.into()));
        assert_eq!(down, (StatusCode::SERVICE_UNAVAILABLE, "unavailable", DATABASE_UNAVAILABLE.into()));
    }
}
