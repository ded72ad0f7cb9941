//! Request extractors that answer bad input with the Developer API's error shape.

use crate::{ApiError, AppState};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use licensd_domain::AccountId;
use serde::de::DeserializeOwned;

/// `axum::Json` with `bad_request` / `payload_too_large` instead of axum's plain-text rejections.
/// Every body is a JSON object (serde would take an array for a struct, field by position), and
/// no string or key in it holds a control character ([`crate::control_chars`]): the first one
/// found is named in the `bad_request`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(value)) => value,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::PayloadTooLarge)
            }
            Err(rejection) => return Err(ApiError::BadRequest(rejection.body_text())),
        };
        if !value.is_object() {
            return Err(ApiError::BadRequest("The request body must be a JSON object".into()));
        }
        if let Some(field) = crate::control_chars::first_in(&value) {
            return Err(ApiError::BadRequest(format!("'{field}' must not contain control characters")));
        }
        serde_json::from_value(value)
            .map(Self)
            .map_err(|e| ApiError::BadRequest(format!("Failed to deserialize the JSON body into the target type: {e}")))
    }
}

/// `axum::extract::Path`, rejecting with `bad_request` in the API's shape.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// `axum::extract::Query`, rejecting with `bad_request` in the API's shape.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// The caller of a Developer API request: `Authorization: Bearer af_live_...`, or a dashboard
/// session cookie (all scopes; unsafe methods need the session's `X-CSRF-Token`).
#[derive(Debug, Clone)]
pub struct Caller {
    pub account_id: AccountId,
    /// Recorded in the events the request causes.
    pub actor: licensd_commands::Actor,
    /// What the caller may do (`*`: everything; a dashboard session holds every scope).
    pub scopes: Vec<String>,
}

impl Caller {
    /// Whether the caller holds `scope` itself: a key may only hand out what it has.
    pub fn holds(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == "*" || s == scope)
    }
}

/// Every scope a key can hold; `*` stands for all of them.
pub const SCOPES: [&str; 20] = [
    "read:apps",
    "write:apps",
    "read:licenses",
    "write:licenses",
    "read:webhooks",
    "write:webhooks",
    "read:credits",
    "write:credits",
    "read:audit",
    "write:audit",
    "read:api_keys",
    "write:api_keys",
    "read:commerce",
    "write:commerce",
    "read:customers",
    "write:customers",
    "read:users",
    "write:users",
    "read:files",
    "write:files",
];

/// The scope a request needs, from its path under `/v1` and its method: one table for the API.
fn required_scope(method: &axum::http::Method, path: &str) -> String {
    let segments: Vec<&str> = path.trim_start_matches("/v1").trim_start_matches('/').split('/').collect();
    let resource = match segments[0] {
        "apps" if segments.contains(&"webhooks") => "webhooks",
        "apps" if segments.contains(&"customers") => "customers",
        "apps" if segments.get(2) == Some(&"users") => "users",
        "apps" if segments.get(2) == Some(&"files") => "files",
        "apps" => "apps",
        "commerce" => "commerce",
        "licenses" => "licenses",
        "credits" => "credits",
        "audit-log" => "audit",
        _ => "api_keys",
    };
    let access = if method == axum::http::Method::GET || method == axum::http::Method::HEAD { "read" } else { "write" };
    format!("{access}:{resource}")
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Already authenticated (and rate-counted) by the idempotency middleware.
        if let Some(caller) = parts.extensions.get::<Self>() {
            return Ok(caller.clone());
        }
        let Some(authorization) = parts.headers.get(header::AUTHORIZATION) else {
            return dashboard_caller(parts, state);
        };
        let token = Some(authorization)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| t.starts_with(licensd_commands::API_KEY_PREFIX))
            .ok_or(ApiError::InvalidApiKey)?;
        // Keys are looked up by their SHA-256: the secret itself is never compared or stored.
        let hash = licensd_commands::api_key_hash(token);
        let key = state.lookup(|hot| hot.api_key(&hash)).await?.ok_or(ApiError::InvalidApiKey)?;
        let account = state.hot.account(key.account_id).ok_or(ApiError::InvalidApiKey)?;
        if account.suspended {
            return Err(ApiError::Forbidden("The account is suspended".into()));
        }
        if !state.api_limiter.allow(&key.key_id.to_string()) {
            return Err(ApiError::RateLimited);
        }
        let caller = Self {
            account_id: key.account_id,
            actor: licensd_commands::Actor::ApiKey(key.key_id),
            scopes: key.scopes.clone(),
        };
        let scope = required_scope(&parts.method, parts.uri.path());
        if !caller.holds(&scope) {
            return Err(ApiError::Forbidden(format!("This API key lacks the '{scope}' scope")));
        }
        Ok(caller)
    }
}

/// A request from the dashboard page, authenticated by its session cookie.
fn dashboard_caller(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let (token, account_id) = crate::dashboard::session(state, &parts.headers).ok_or(ApiError::InvalidApiKey)?;
    let safe = parts.method == axum::http::Method::GET || parts.method == axum::http::Method::HEAD;
    let presented = parts.headers.get(crate::dashboard::session::CSRF_HEADER).and_then(|v| v.to_str().ok());
    if !safe && (crate::web::cross_site(&parts.headers) || !state.dashboard.csrf_ok(&token, presented)) {
        return Err(ApiError::Forbidden("Missing or wrong X-CSRF-Token for this dashboard session".into()));
    }
    if !state.api_limiter.allow(&format!("dashboard:{account_id}")) {
        return Err(ApiError::RateLimited);
    }
    Ok(Caller { account_id, actor: licensd_commands::Actor::Dashboard(account_id), scopes: vec!["*".into()] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn scopes_follow_resource_and_method() {
        assert_eq!(required_scope(&Method::GET, "/licenses/AAAA"), "read:licenses");
        assert_eq!(required_scope(&Method::PUT, "/v1/licenses/AAAA"), "write:licenses");
        assert_eq!(required_scope(&Method::POST, "/apps/x/webhooks/y/test"), "write:webhooks");
        assert_eq!(required_scope(&Method::GET, "/apps/x/security"), "read:apps");
        assert_eq!(required_scope(&Method::GET, "/v1/apps/x/users"), "read:users");
        assert_eq!(required_scope(&Method::PATCH, "/apps/x/users/u"), "write:users");
        assert_eq!(required_scope(&Method::GET, "/v1/apps/x/files"), "read:files");
        assert_eq!(required_scope(&Method::PUT, "/v1/apps/x/files/client.dll"), "write:files");
        assert_eq!(required_scope(&Method::DELETE, "/api-keys/k"), "write:api_keys");
        assert!(SCOPES.contains(&required_scope(&Method::GET, "/audit-log").as_str()));
    }
}
