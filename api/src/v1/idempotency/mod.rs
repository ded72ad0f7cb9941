//! `Idempotency-Key` on Developer API writes, with Stripe's semantics: the first answer to a
//! key is kept (per account, for `LICENSD_IDEMPOTENCY_TTL_SECS`) and replayed to a retry of the
//! same request; the key reused for another method, path or body is a 409 `conflict`, and so is a
//! retry that arrives while the first request is still running (it is not queued behind it).
//!
//! The request runs inside an [`Entropy`] derived from (account, key, request hash): every event
//! id, generated id and secret of its command is a function of the request. A claim abandoned
//! unanswered (its process died after the commit, or it is older than the lease) is resumed by a
//! retry: the command re-runs, produces the same events under the same ids, the store answers
//! "already appended", and the answer is rebuilt from what the first run committed.

mod records;

pub use records::SEALED_ANSWERS;

use crate::extract::Caller;
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use licensd_commands::Entropy;
use records::{Answer, Claim, Records};
use sha2::{Digest, Sha256};

pub const KEY_HEADER: &str = "idempotency-key";
/// Set to `true` on a replayed answer.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
pub const MAX_KEY_CHARS: usize = 255;

/// The middleware in front of every Developer API route.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match once(state, request, next).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

fn is_write(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

async fn once(state: AppState, request: Request, next: Next) -> Result<Response, ApiError> {
    let Some(key) = request.headers().get(KEY_HEADER).filter(|_| is_write(request.method())) else {
        return Ok(next.run(request).await);
    };
    let key = key.to_str().ok().filter(|k| valid_key(k)).map(str::to_string).ok_or_else(|| {
        ApiError::BadRequest(format!("Idempotency-Key must be 1 to {MAX_KEY_CHARS} visible ASCII characters"))
    })?;
    let (mut parts, body) = request.into_parts();
    // Keys belong to the account; the handler reuses this caller rather than authenticating again.
    let caller = Caller::from_request_parts(&mut parts, &state).await?;
    parts.extensions.insert(caller.clone());
    let body = axum::body::to_bytes(body, state.config.max_body_bytes).await.map_err(|_| ApiError::PayloadTooLarge)?;
    let hash = request_hash(&parts.method, parts.uri.path_and_query().map_or("", |p| p.as_str()), &body);

    let records = Records::new(
        state.commands.store().clone(),
        state.commands.master_key().clone(),
        state.config.idempotency_ttl,
        state.config.idempotency_lease,
    );
    let account = caller.account_id;
    let now_ms = state.commands.now().timestamp_millis();
    let received_ms = match records.claim(account, &key, &hash, now_ms).await? {
        Claim::Fresh => now_ms,
        Claim::Resumed { claimed_at_ms } => {
            tracing::info!("re-running an idempotent request whose first run left no answer");
            claimed_at_ms
        }
        Claim::Taken { request_hash, .. } if request_hash != hash => {
            return Err(ApiError::Conflict("This Idempotency-Key was used for another request".into()));
        }
        Claim::Taken { answer: Some(answer), .. } => return Ok(replay(answer)),
        Claim::Taken { answer: None, .. } => {
            return Err(ApiError::Conflict("A request with this Idempotency-Key is still in progress".into()));
        }
    };

    let received = chrono::DateTime::from_timestamp_millis(received_ms).unwrap_or_else(|| state.commands.now());
    let entropy = Entropy::keyed(state.commands.master_key(), account, &key, &hash, received);
    let response = entropy.scope(next.run(Request::from_parts(parts, Body::from(body)))).await;
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let kept = match String::from_utf8(body.to_vec()) {
        // Overload and infrastructure failures are not the request's answer: a retry runs again.
        Ok(text) if keeps(parts.status) => {
            let content_type =
                parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
            records.complete(account, &key, &Answer { status: parts.status.as_u16(), content_type, body: text }).await
        }
        _ => records.release(account, &key).await,
    };
    if let Err(e) = kept {
        // The request itself is done; the key stays claimed (409 to a retry) until it expires.
        tracing::warn!(error = %e, "could not keep the answer of an idempotent request");
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}

/// 1 to 255 visible ASCII characters (no spaces), as the document's `^[!-~]+$` says.
fn valid_key(key: &str) -> bool {
    (1..=MAX_KEY_CHARS).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Which answers are final: everything but 429 and 5xx (nothing, or not surely, committed).
fn keeps(status: StatusCode) -> bool {
    status != StatusCode::TOO_MANY_REQUESTS && !status.is_server_error()
}

fn request_hash(method: &Method, path_and_query: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    for part in [method.as_str().as_bytes(), b"\n", path_and_query.as_bytes(), b"\n", body] {
        hash.update(part);
    }
    hex::encode(hash.finalize())
}

fn replay(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    if let Some(content_type) = answer.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::CONTENT_TYPE, content_type);
    }
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_tells_method_path_and_body_apart() {
        let base = request_hash(&Method::POST, "/v1/licenses", b"{}");
        assert_eq!(base, request_hash(&Method::POST, "/v1/licenses", b"{}"));
        assert_ne!(base, request_hash(&Method::PUT, "/v1/licenses", b"{}"));
        assert_ne!(base, request_hash(&Method::POST, "/v1/apps", b"{}"));
        assert_ne!(base, request_hash(&Method::POST, "/v1/licenses", b"{ }"));
    }

    #[test]
    fn keys_are_visible_ascii_up_to_255_characters() {
        assert!(valid_key("order-1234") && valid_key(&"k".repeat(255)) && valid_key("~!"));
        assert!(!valid_key("") && !valid_key(&"k".repeat(256)) && !valid_key("a b") && !valid_key("é"));
    }

    #[test]
    fn only_final_answers_are_kept() {
        assert!(keeps(StatusCode::CREATED) && keeps(StatusCode::BAD_REQUEST) && keeps(StatusCode::CONFLICT));
        assert!(!keeps(StatusCode::TOO_MANY_REQUESTS) && !keeps(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!keeps(StatusCode::INTERNAL_SERVER_ERROR));
    }
}
