//! `GET /files/dl/{token}` (URL mode, decision 1): the version the token was issued for, streamed
//! from the blob store (never whole in memory), from `Range: bytes=N-` (206 with
//! `Content-Range`) or whole (200). The token is spent by the request, valid or not; the file
//! must still hold the version; when this process issued the token, the session that asked for
//! it must still be live (sessions are per process: a token issued before a restart or by
//! another node is honoured on its own, single use and 60 s); the download takes a transfer slot
//! of the session and of the app for as long as it runs, and its bytes count against the
//! identity's daily quota (a spent quota cuts the body short).

use super::catalog::{self, Served, Source};
use super::quota::{Charge, Holder};
use super::slots::Slot;
use crate::extract::ApiPath;
use crate::live::session::LiveSession;
use crate::{ApiError, AppState};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Bytes read from the store per body chunk.
const READ_BYTES: usize = 256 * 1024;

/// What a `Range` header asks for, against a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Wanted {
    Whole,
    /// `[start, end]` inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// `bytes=N-` and `bytes=N-M` (one range); anything else unreadable is ignored (the whole file,
/// as HTTP allows); a start at or past the end is unsatisfiable (416).
pub fn wanted(range: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else { return Wanted::Whole };
    let Some((start, end)) = spec.split_once('-') else { return Wanted::Whole };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Ok(start) = start.trim().parse::<u64>() else { return Wanted::Whole };
    let end = match end.trim() {
        "" => u64::MAX,
        end => match end.parse::<u64>() {
            Ok(end) if end >= start => end,
            _ => return Wanted::Whole,
        },
    };
    if start >= size {
        return Wanted::Unsatisfiable;
    }
    Wanted::Part(start, end.min(size - 1))
}

pub async fn download(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let live = state.live.clone();
    let gone = || ApiError::NotFound("This download URL is unknown, used or expired".into());
    let redeemed = state.files.tokens.redeem(&token, state.commands.now()).await.map_err(|error| {
        tracing::warn!(%error, "a download token could not be redeemed");
        ApiError::Unavailable("The file store is unavailable".into())
    })?;
    let redeemed = redeemed.ok_or_else(gone)?;
    let grant = redeemed.grant;
    let session = if redeemed.issued_here {
        Some(live.registry.get(grant.session_id).filter(|s| !s.is_ended()).ok_or_else(gone)?)
    } else {
        None
    };
    let file = grant.file;
    let still_there = state
        .hot
        .file(file.app_id, &file.name)
        .is_some_and(|f| f.versions().any(|v| v.version == file.version && v.storage_key == file.storage_key));
    if !still_there {
        return Err(ApiError::NotFound("The file of this download URL no longer exists".into()));
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match wanted(range, file.size) {
        Wanted::Whole => (StatusCode::OK, 0, file.size.saturating_sub(1)),
        Wanted::Part(start, end) => (StatusCode::PARTIAL_CONTENT, start, end),
        Wanted::Unsatisfiable => {
            let mut refused = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{}", file.size)) {
                refused.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(refused);
        }
    };
    let length = if file.size == 0 { 0 } else { end - start + 1 };
    let busy = || ApiError::Unavailable("too many file transfers running; retry later".into());
    let slot = live.files.slots.take(file.app_id).ok_or_else(busy)?;
    if let Some(session) = &session {
        let mut files = session.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if files.running() >= live.files.config.max_per_session {
            return Err(busy());
        }
        files.downloads += 1;
    }
    // From here on, dropping `running` (an error, the body's end, a closed connection) gives
    // both slots back.
    let running = Running { session, state: state.clone(), file: file.clone(), start, sent: 0, length, _slot: slot };
    let reader = Source::open(&state, &file, start).await.map_err(|error| {
        tracing::warn!(file = %file.name, version = file.version, %error, "file open failed");
        ApiError::Internal
    })?;
    let commands = state.commands.clone();
    let meter = state.files.quota.meter(
        Holder::new(file.app_id, &grant.identity),
        length,
        Arc::new(move || commands.now().timestamp()),
    );
    let body =
        futures::stream::unfold((reader, running, meter), move |(mut reader, mut running, mut meter)| async move {
            let left = running.length - running.sent;
            if left == 0 {
                return None;
            }
            let want = usize::try_from(left).map_or(READ_BYTES, |left| left.min(READ_BYTES));
            let refusal = match meter.charge(want as u64).await {
                Charge::Granted => None,
                Charge::Spent => Some("the daily file quota of this identity is spent"),
                Charge::Failed => Some("the daily file quota could not be read"),
            };
            if let Some(refusal) = refusal {
                return Some((Err(std::io::Error::other(refusal)), (reader, running.finished(), meter)));
            }
            match reader.read_into(vec![0u8; want], 0).await.map(Bytes::from) {
                Ok(chunk) => {
                    running.sent += chunk.len() as u64;
                    Some((Ok(chunk), (reader, running, meter)))
                }
                Err(error) => Some((Err(error), (reader, running.finished(), meter))),
            }
        });
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{}", file.size)) {
            headers.insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

/// One running download: gives back the session's and the app's slot and records the transfer
/// when the body ends, is cut short, or is dropped with the connection.
struct Running {
    /// The session that asked for the URL, when it lives in this process.
    session: Option<Arc<LiveSession>>,
    state: AppState,
    file: Served,
    start: u64,
    sent: u64,
    length: u64,
    _slot: Slot,
}

impl Running {
    /// Ends the body after the error being yielded: nothing more is sent.
    fn finished(mut self) -> Self {
        self.length = self.sent;
        self
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(session) = &self.session {
            let mut files = session.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            files.downloads = files.downloads.saturating_sub(1);
        }
        // Completed: the client got the file up to its end.
        let completed = self.start + self.sent == self.file.size && self.sent == self.length;
        let (state, file, sent) = (self.state.clone(), self.file.clone(), self.sent);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { catalog::record(&state, &file, sent, completed).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(wanted(None, 10), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=4-"), 10), Wanted::Part(4, 9));
        assert_eq!(wanted(Some("bytes=4-6"), 10), Wanted::Part(4, 6));
        assert_eq!(wanted(Some("bytes=4-600"), 10), Wanted::Part(4, 9));
        assert_eq!(wanted(Some("bytes=10-"), 10), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=0-"), 0), Wanted::Unsatisfiable);
        for ignored in ["bytes=-5", "bytes=6-4", "items=1-", "bytes=1-2,4-5", "bytes=x-"] {
            assert_eq!(wanted(Some(ignored), 10), Wanted::Whole, "{ignored}");
        }
    }
}
