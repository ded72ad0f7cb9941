//! What every request and response passes at the edge: URIs carrying control characters are
//! refused before any handler runs, and error responses made below the handlers (axum's own
//! 405, 413, 415 and extractor rejections) leave in the documented JSON shape: the SDK
//! endpoints' `{"status":"failed","error":...}` under `/auth/`, `{"error":...,"message":...}`
//! everywhere else. HTML pages (dashboard, portal) keep theirs.

use crate::auth::{AuthError, Refusal};
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

fn sdk_endpoint(request: &Request) -> bool {
    request.uri().path().starts_with("/auth/")
}

/// Refuses a request whose path or query, once percent-decoded, holds a control character.
pub async fn refuse_control_characters(request: Request, next: Next) -> Response {
    let Some(field) = crate::control_chars::in_uri(request.uri()) else {
        return next.run(request).await;
    };
    if sdk_endpoint(&request) {
        let details = vec![serde_json::json!({ "field": field, "issue": "must not contain control characters" })];
        return Refusal::with_details(AuthError::BadRequest, details).into_response();
    }
    ApiError::BadRequest(format!("{field} must not contain control characters")).into_response()
}

/// Rewrites an error response that is neither JSON nor an HTML page into the documented shape.
pub async fn documented_errors(request: Request, next: Next) -> Response {
    let sdk = sdk_endpoint(&request);
    let response = next.run(request).await;
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let documented = content_type.starts_with("application/json") || content_type.starts_with("text/html");
    if !(status.is_client_error() || status.is_server_error()) || documented {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // The plain text is axum's explanation of a rejection: worth keeping as the message.
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_string();
    let rewritten = if sdk {
        AuthError::for_status(status).into_response()
    } else {
        ApiError::for_status(status, message).into_response()
    };
    // Headers such as `Allow` on a 405 stay; the body's own headers are the new body's.
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let (new_parts, new_body) = rewritten.into_parts();
    parts.status = new_parts.status;
    parts.headers.extend(new_parts.headers);
    Response::from_parts(parts, new_body)
}

/// Reads the whole body (they are all small: at most the body limit) within the body read
/// timeout, so a client trickling a body holds nothing past it.
pub async fn read_body_in_time(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // File uploads are streamed by their handler (with an idle timeout of the same length).
    if crate::v1::is_file_upload(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let sdk = sdk_endpoint(&request);
    let (parts, body) = request.into_parts();
    let limit = state.config.max_body_bytes;
    let refusal = |error: ApiError, auth: AuthError| if sdk { auth.into_response() } else { error.into_response() };
    match tokio::time::timeout(state.config.body_read_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(e)) if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) => {
            refusal(ApiError::PayloadTooLarge, AuthError::PayloadTooLarge)
        }
        Ok(Err(_)) => {
            refusal(ApiError::BadRequest("The request body could not be read".into()), AuthError::MalformedRequest)
        }
        Err(_) => refusal(
            ApiError::BadRequest("The request body was not received in time".into()),
            AuthError::MalformedRequest,
        ),
    }
}
