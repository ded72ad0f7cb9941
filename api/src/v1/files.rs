//! An app's protected files (`/v1/apps/{appId}/files`): upload a version as a streamed body,
//! list, read (metadata, versions, delivery counters), set the access policy, delete. Scopes
//! `read:files` / `write:files`.
//!
//! An upload is never held in memory: the body goes chunk by chunk into the blob store, which
//! computes its size and SHA-256 as it passes and refuses it past `LICENSD_FILE_MAX_BYTES`
//! (413). Only a complete upload is recorded (`FileVersionUploaded`); a refused or interrupted
//! one leaves no version and no stored bytes. Uploads and deletions go through the files
//! runtime's GC guard (`crate::files::gc`), so a deletion never removes bytes an upload in
//! flight has just stored.

use super::{iso, owned_app, visible};
use crate::extract::{ApiJson, ApiPath, Caller};
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use futures::StreamExt;
use licensd_blobs::{BlobError, ByteStream};
use licensd_domain::app::App;
use licensd_domain::file::{check_file_name, File, FilePolicy, FileVersion};
use licensd_projections::FileCounts;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Whether a request is an upload, whose body the edge must leave unread (it is streamed to
/// the blob store by the handler, not buffered under the small body limit).
pub(crate) fn is_upload(method: &axum::http::Method, path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    method == axum::http::Method::PUT && matches!(segments.as_slice(), ["v1", "apps", _, "files", _])
}

fn version_json(version: &FileVersion) -> Value {
    json!({
        "version": version.version,
        "size": version.size,
        "sha256": version.sha256,
        "uploadedAt": iso(version.uploaded_at),
    })
}

fn file_json(file: &File, counts: FileCounts) -> Value {
    json!({
        "name": file.name,
        "appId": file.app_id.to_string(),
        "version": file.current.version,
        "size": file.current.size,
        "sha256": file.current.sha256,
        "uploadedAt": iso(file.current.uploaded_at),
        "policy": file.policy,
        "transferCount": counts.transfer_count,
        "bytesServed": counts.bytes_served,
        "lastTransferredAt": counts.last_transferred_at.map(iso),
    })
}

fn detailed_json(file: &File, counts: FileCounts) -> Value {
    let mut shown = file_json(file, counts);
    shown["versions"] = file.versions().map(version_json).collect();
    shown
}

/// The app's live file `name`, or 404 (a name that is not a valid file name is not found either).
fn owned_file(state: &AppState, app: &App, name: &str) -> Result<Arc<File>, ApiError> {
    state.hot.file(app.app_id, name).ok_or_else(|| ApiError::NotFound("The file doesn't exist".into()))
}

fn checked_name(name: &str) -> Result<(), ApiError> {
    check_file_name(name).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn blob_error(e: BlobError) -> ApiError {
    match e {
        BlobError::TooLarge { .. } => ApiError::PayloadTooLarge,
        BlobError::Body(_) => ApiError::BadRequest("The request body could not be read".into()),
        BlobError::InvalidKey | BlobError::NotFound | BlobError::BadOffset { .. } => {
            tracing::error!(error = %e, "the blob store refused its own key");
            ApiError::Internal
        }
        BlobError::Io(_) | BlobError::Backend(_) => {
            tracing::error!(error = %e, "the blob store failed");
            ApiError::Unavailable("The file store is unavailable".into())
        }
    }
}

/// The request body as a stream that fails when no byte arrived for the body read timeout
/// (a stalled client holds nothing past it, as for every other body).
fn body_stream(body: Body, idle: std::time::Duration) -> ByteStream {
    futures::stream::unfold(Some(body.into_data_stream()), move |data| async move {
        let mut data = data?;
        match tokio::time::timeout(idle, data.next()).await {
            Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(data))),
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e)), None)),
            Ok(None) => None,
            Err(_) => Some((Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the body stalled")), None)),
        }
    })
    .boxed()
}

/// Debug builds only, for tests that need an upload held between storing its bytes and
/// recording its version (the window a deletion must not remove those bytes in): with
/// `LICENSD_TEST_UPLOAD_GATE_DIR` set, the upload of `name` writes `<dir>/<name>.stored` and
/// waits until `<dir>/<name>.go` exists. Release builds have no such variable.
#[cfg(debug_assertions)]
async fn test_gate(name: &str) {
    let Some(dir) = std::env::var_os("LICENSD_TEST_UPLOAD_GATE_DIR").map(std::path::PathBuf::from) else { return };
    let _ = tokio::fs::write(dir.join(format!("{name}.stored")), b"").await;
    while tokio::fs::metadata(dir.join(format!("{name}.go"))).await.is_err() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// `PUT /v1/apps/{appId}/files/{name}`: the body is the file's new content (any media type).
/// 201 with the file; 400 for a bad name; 413 past the size limit (nothing is stored).
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app_id, name)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    checked_name(&name)?;
    let max_bytes = state.files.config.max_bytes;
    let announced =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|length| length > max_bytes) {
        return Err(ApiError::PayloadTooLarge);
    }
    let blobs = state.files.blobs()?.clone();
    // Registered before any byte is stored: deletions of the app's bytes wait until this
    // upload's version is in the model (or it failed).
    let mut in_flight = state.files.gc.upload_started(app.app_id, blobs.clone()).await?;
    let namespace = app.app_id.to_string();
    let stored = blobs
        .put(&namespace, body_stream(body, state.config.body_read_timeout), max_bytes)
        .await
        .map_err(blob_error)?;
    #[cfg(debug_assertions)]
    test_gate(&name).await;
    if !in_flight.still_registered() {
        // Its renewals did not reach the database: another node may have removed these bytes.
        return Err(ApiError::Unavailable("the upload could not be kept registered; send it again".into()));
    }
    // Recorded in a task of its own: a client that goes away now cannot cut the recording off
    // between the commit and the guard learning its position.
    let recording = {
        let (state, caller, name, app_id) = (state.clone(), caller.clone(), name.clone(), app.app_id);
        tokio::spawn(async move {
            let upload = (stored.size, stored.sha256, stored.key);
            let executed =
                state.commands.record_file_upload(caller.account_id, app_id, &name, upload, &caller.actor).await;
            if let Ok(executed) = &executed {
                in_flight.recorded(executed.position());
            }
            executed
        })
    };
    let executed = recording.await.map_err(|_| ApiError::Internal)??;
    visible(&state, executed.position()).await;
    let file = owned_file(&state, &app, &name)?;
    let counts = state.files.counters.of_file(app.app_id, &name).await?;
    Ok((StatusCode::CREATED, Json(detailed_json(&file, counts))))
}

/// `GET /v1/apps/{appId}/files`: every live file with its current version and counters, by name.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let mut counters = state.files.counters.of_app(app.app_id).await?;
    let files: Vec<Value> = state
        .hot
        .files_of(app.app_id)
        .iter()
        .map(|file| file_json(file, counters.remove(&file.name).unwrap_or_default()))
        .collect();
    Ok(Json(json!({ "files": files })))
}

/// `GET /v1/apps/{appId}/files/{name}`: metadata, every version, counters.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app_id, name)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    detailed(&state, &app, &name).await
}

/// A file's metadata, versions and counters, as `GET` and `PATCH` answer them.
async fn detailed(state: &AppState, app: &App, name: &str) -> Result<Json<Value>, ApiError> {
    let file = owned_file(state, app, name)?;
    let counts = state.files.counters.of_file(app.app_id, name).await?;
    Ok(Json(detailed_json(&file, counts)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateFile {
    policy: PolicyBody,
}

/// The policy as a request may state it: exactly the fields of its kind, nothing else (the
/// domain's `FilePolicy` reads events leniently; a request naming a field no kind has is a
/// mistake worth a 400). Struct variants, because serde checks unknown fields on those only.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
enum PolicyBody {
    AnyAuthorized {},
    Levels { levels: Vec<String> },
    Public {},
}

impl From<PolicyBody> for FilePolicy {
    fn from(body: PolicyBody) -> Self {
        match body {
            PolicyBody::AnyAuthorized {} => FilePolicy::AnyAuthorized,
            PolicyBody::Levels { levels } => FilePolicy::Levels { levels },
            PolicyBody::Public {} => FilePolicy::Public,
        }
    }
}

/// `PATCH /v1/apps/{appId}/files/{name}`: sets the access policy.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app_id, name)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<UpdateFile>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    owned_file(&state, &app, &name)?;
    let policy = FilePolicy::from(body.policy);
    if let FilePolicy::Levels { levels } = &policy {
        let max = state.config.live_model.max_license_levels;
        if levels.len() > max {
            return Err(ApiError::BadRequest(format!("at most {max} levels")));
        }
    }
    let executed = state.commands.set_file_policy(caller.account_id, app.app_id, &name, policy, &caller.actor).await?;
    visible(&state, executed.position()).await;
    detailed(&state, &app, &name).await
}

/// `DELETE /v1/apps/{appId}/files/{name}`: the file and every version go; bytes no other file
/// of the app shares are removed from the blob store, and the counters are dropped.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app_id, name)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let app = owned_app(&state, &caller, &app_id)?;
    let file = owned_file(&state, &app, &name)?;
    let executed = state.commands.delete_file(caller.account_id, app.app_id, &name, &caller.actor).await?;
    let blobs = state.files.blobs()?.clone();
    let keys: Vec<String> = file.versions().map(|v| v.storage_key.clone()).collect();
    let position = executed.position().unwrap_or_else(|| state.hot.position());
    // Durable before anything is removed: a process that ends now leaves them to the sweep.
    state.files.gc.pending(app.app_id, keys, position).await?;
    if visible(&state, executed.position()).await {
        state.files.gc.collect(app.app_id, blobs.as_ref()).await?;
    } else {
        // Until the model shows the deletion it cannot tell which bytes are shared: collect
        // once it does.
        let (gc, app_id) = (state.files.gc.clone(), app.app_id);
        tokio::spawn(async move { gc.collect_after(position, app_id, blobs).await });
    }
    state.files.counters.forget(app.app_id, &name).await?;
    Ok(Json(json!({ "ok": true })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind takes its own fields and no other; the domain's policy comes out.
    #[test]
    fn a_policy_body_takes_exactly_the_fields_of_its_kind() {
        let parse = |text: &str| serde_json::from_str::<UpdateFile>(text).map(|b| FilePolicy::from(b.policy));
        assert_eq!(parse(r#"{"policy":{"kind":"public"}}"#).unwrap(), FilePolicy::Public);
        assert_eq!(parse(r#"{"policy":{"kind":"anyAuthorized"}}"#).unwrap(), FilePolicy::AnyAuthorized);
        assert_eq!(
            parse(r#"{"policy":{"kind":"levels","levels":["pro"]}}"#).unwrap(),
            FilePolicy::Levels { levels: vec!["pro".into()] }
        );
        assert!(parse(r#"{"policy":{"kind":"public","extra":1}}"#).is_err());
        assert!(parse(r#"{"policy":{"kind":"anyAuthorized","levels":[]}}"#).is_err());
        assert!(parse(r#"{"policy":{"kind":"levels","levels":["pro"],"x":null}}"#).is_err());
        assert!(parse(r#"{"policy":{"kind":"levels"}}"#).is_err());
    }
}
