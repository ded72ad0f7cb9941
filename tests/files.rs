//! Protected files through the Developer API on the real binary (SQLite and Postgres): a
//! 200 MiB upload streamed both ways (the test generates its body as it is sent; the server
//! never holds it whole), versions, policies, bad names, the size limit, deletion, and a SIGKILL
//! mid-upload that leaves no version and no temporary file behind.

mod common;
#[path = "../blobs/tests/moto/mod.rs"]
mod moto;

use common::{on_both_backends, Deployment, Server, RELAXED_LIMITS};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

/// `len` bytes of a xorshift sequence, produced as they are read; their SHA-256 is kept as
/// they pass (so the test holds none of them).
struct Generated {
    remaining: u64,
    state: u64,
    sha: Arc<Mutex<Sha256>>,
    /// Blocks (until this sender side is dropped) once this many bytes were read.
    stall_after: Option<(u64, std::sync::mpsc::Receiver<()>)>,
    sent: u64,
}

impl Generated {
    fn new(len: u64, seed: u64) -> (Self, Arc<Mutex<Sha256>>) {
        let sha = Arc::new(Mutex::new(Sha256::new()));
        (Self { remaining: len, state: seed | 1, sha: sha.clone(), stall_after: None, sent: 0 }, sha)
    }
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some((after, wait)) = &self.stall_after {
            if self.sent >= *after {
                let _ = wait.recv();
                return Err(std::io::Error::other("stalled upload abandoned"));
            }
        }
        let n = buf.len().min(self.remaining as usize).min(64 * 1024) & !7;
        let n = if n == 0 { buf.len().min(self.remaining as usize) } else { n };
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            chunk.copy_from_slice(&self.state.to_le_bytes()[..chunk.len()]);
        }
        self.sha.lock().unwrap().update(&buf[..n]);
        self.remaining -= n as u64;
        self.sent += n as u64;
        Ok(n)
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(600)).build().unwrap()
}

/// Uploads `body` (streamed, chunked) as the file `name`.
fn upload(server: &Server, api_key: &str, app_id: &str, name: &str, body: reqwest::blocking::Body) -> (u16, Value) {
    let url = format!("{}/v1/apps/{app_id}/files/{name}", server.base);
    match http().put(url).bearer_auth(api_key).body(body).send() {
        Ok(response) => (response.status().as_u16(), response.json().unwrap_or(Value::Null)),
        Err(e) => panic!("upload of {name} failed: {e}"),
    }
}

fn upload_bytes(server: &Server, api_key: &str, app_id: &str, name: &str, bytes: &[u8]) -> (u16, Value) {
    upload(server, api_key, app_id, name, reqwest::blocking::Body::from(bytes.to_vec()))
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Files anywhere under `dir` (the blob store's folders).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn a_200_mib_upload_is_streamed_and_versions_policies_and_deletion_work() {
    on_both_backends(RELAXED_LIMITS, |deployment, server| {
        let (api_key, app_id) = deployment.merchant(server, "files@example.com");
        let files = |path: &str| format!("/v1/apps/{app_id}/files{path}");

        // 200 MiB, generated while sent: the server's peak memory does not grow by the file.
        let rss_before = status_kib(server.pid(), "VmRSS:");
        let (body, sha) = Generated::new(200 * MIB, 42);
        let (status, first) = upload(server, &api_key, &app_id, "model.bin", reqwest::blocking::Body::new(body));
        let sha = hex::encode(std::mem::take(&mut *sha.lock().unwrap()).finalize());
        assert_eq!(status, 201, "{first}");
        let peak = status_kib(server.pid(), "VmHWM:");
        assert!(
            peak < rss_before + 100 * 1024,
            "the server's peak memory grew from {rss_before} KiB to {peak} KiB for a 200 MiB upload"
        );
        assert_eq!((first["version"].as_u64(), first["size"].as_u64()), (Some(1), Some(200 * MIB)));
        assert_eq!(first["sha256"], sha);
        let (status, shown) = server.get(&api_key, &files("/model.bin"));
        assert_eq!(status, 200, "{shown}");
        assert_eq!((shown["size"].as_u64(), shown["sha256"].as_str()), (Some(200 * MIB), Some(sha.as_str())));
        assert_eq!(shown["policy"], json!({ "kind": "anyAuthorized" }));
        assert_eq!((shown["transferCount"].as_u64(), shown["lastTransferredAt"].is_null()), (Some(0), true));
        let blob = deployment.data_dir.join("files").join("blobs").join(&app_id).join(&sha);
        assert_eq!(std::fs::metadata(&blob).map(|m| m.len()).ok(), Some(200 * MIB), "the blob is stored whole");

        // A second version: the current one changes, both are listed.
        let (status, second) = upload_bytes(server, &api_key, &app_id, "model.bin", b"second version");
        assert_eq!(status, 201, "{second}");
        assert_eq!(second["version"], 2);
        assert_eq!(second["sha256"], hex::encode(Sha256::digest(b"second version")));
        let versions: Vec<u64> =
            second["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
        assert_eq!(versions, [1, 2]);

        // Names: `client.dll` and spaces work; others are a documented 400 and store nothing.
        let (status, dll) = upload_bytes(server, &api_key, &app_id, "client.dll", b"MZ");
        assert_eq!((status, dll["name"].as_str()), (201, Some("client.dll")), "{dll}");
        let (status, spaced) = upload_bytes(server, &api_key, &app_id, "my%20file", b"x");
        assert_eq!((status, spaced["name"].as_str()), (201, Some("my file")), "{spaced}");
        for bad in ["abc", "seventeen-chars-x", "bad*name", "%20lead", "two%20%20sp", "n%C3%A4me", "nul%00byte"] {
            let (status, answer) = upload_bytes(server, &api_key, &app_id, bad, b"never stored");
            assert_eq!(status, 400, "{bad}: {answer}");
            assert_eq!(answer["error"], "bad_request", "{bad}: {answer}");
        }
        let (_, list) = server.get(&api_key, &files(""));
        let names: Vec<&str> = list["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["client.dll", "model.bin", "my file"]);

        // Policies: levels, then public; bad ones are refused and change nothing.
        let patch = |body: Value| server.send("PATCH", &api_key, &files("/client.dll"), Some(&body));
        let (status, set) = patch(json!({ "policy": { "kind": "levels", "levels": ["pro", "vip"] } }));
        assert_eq!(status, 200, "{set}");
        assert_eq!(set["policy"], json!({ "kind": "levels", "levels": ["pro", "vip"] }));
        for bad in [
            json!({ "policy": { "kind": "levels", "levels": [] } }),
            json!({ "policy": { "kind": "levels", "levels": ["x".repeat(17)] } }),
            json!({ "policy": { "kind": "everyone" } }),
            json!({ "policy": { "kind": "public" }, "extra": 1 }),
            json!({ "policy": { "kind": "levels", "levels": ["a\u{0}b"] } }),
        ] {
            let (status, answer) = patch(bad.clone());
            assert_eq!(status, 400, "{bad}: {answer}");
        }
        let (_, unchanged) = server.get(&api_key, &files("/client.dll"));
        assert_eq!(unchanged["policy"], set["policy"]);
        let (status, public) = patch(json!({ "policy": { "kind": "public" } }));
        assert_eq!((status, &public["policy"]), (200, &json!({ "kind": "public" })));
        let (status, _) =
            server.send("PATCH", &api_key, &files("/nothere.bin"), Some(&json!({ "policy": { "kind": "public" } })));
        assert_eq!(status, 404);

        // Delete: gone from the API and from the disk; deleting again is a 404.
        let (status, _) = server.send("DELETE", &api_key, &files("/model.bin"), None);
        assert_eq!(status, 200);
        assert_eq!(server.get(&api_key, &files("/model.bin")).0, 404);
        assert!(!blob.exists(), "a deleted file's bytes are removed");
        assert_eq!(server.send("DELETE", &api_key, &files("/model.bin"), None).0, 404);
        // Uploading the name again starts a new file whose versions continue (never reused).
        let (status, again) = upload_bytes(server, &api_key, &app_id, "model.bin", b"reborn");
        assert_eq!((status, again["version"].as_u64()), (201, Some(3)), "{again}");
        assert_eq!(again["versions"].as_array().map(Vec::len), Some(1));
        assert_eq!(again["policy"], json!({ "kind": "anyAuthorized" }));
        let temporaries = files_under(&deployment.data_dir.join("files").join("tmp"));
        assert!(temporaries.is_empty(), "no temporary file is left: {temporaries:?}");
    });
}

/// Deleting a file while another file of the app is being uploaded with the very same bytes:
/// the upload is held (a debug-build gate) after its bytes are in the store and before its
/// version is recorded, the other file is deleted then, and the new version still has its
/// bytes. Bytes of a file deleted meanwhile that nothing else holds go once the upload is
/// recorded; deleting the last file that holds them removes them too.
#[test]
fn deleting_a_file_keeps_the_bytes_an_upload_in_flight_stores() {
    let gate = common::TempDir::new();
    let gate_dir = gate.0.to_string_lossy().to_string();
    let env: Vec<(&str, &str)> =
        RELAXED_LIMITS.iter().copied().chain([("LICENSD_TEST_UPLOAD_GATE_DIR", gate_dir.as_str())]).collect();
    on_both_backends(&env, |deployment, server| {
        for stale in ["second.bin.stored", "second.bin.go"] {
            let _ = std::fs::remove_file(gate.0.join(stale));
        }
        for open in ["first.bin.go", "other.bin.go"] {
            std::fs::write(gate.0.join(open), b"").unwrap();
        }
        let (api_key, app_id) = deployment.merchant(server, "gc@example.com");
        let shared = b"the same bytes under two names".to_vec();
        let (status, first) = upload_bytes(server, &api_key, &app_id, "first.bin", &shared);
        assert_eq!(status, 201, "{first}");
        let (status, other) = upload_bytes(server, &api_key, &app_id, "other.bin", b"bytes of another file");
        assert_eq!(status, 201, "{other}");
        let blobs = deployment.data_dir.join("files").join("blobs").join(&app_id);
        let shared_blob = blobs.join(first["sha256"].as_str().unwrap());
        let other_blob = blobs.join(other["sha256"].as_str().unwrap());

        let uploader = {
            let (base, key, app, bytes) = (server.base.clone(), api_key.clone(), app_id.clone(), shared.clone());
            std::thread::spawn(move || {
                let response =
                    http().put(format!("{base}/v1/apps/{app}/files/second.bin")).bearer_auth(key).body(bytes).send();
                let response = response.expect("the held upload");
                (response.status().as_u16(), response.json::<Value>().unwrap_or(Value::Null))
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !gate.0.join("second.bin.stored").exists() {
            assert!(std::time::Instant::now() < deadline, "the upload never stored its bytes");
            std::thread::sleep(Duration::from_millis(10));
        }
        // The bytes are in the store; the version is not recorded yet.
        for name in ["first.bin", "other.bin"] {
            let (status, answer) = server.send("DELETE", &api_key, &format!("/v1/apps/{app_id}/files/{name}"), None);
            assert_eq!(status, 200, "{name}: {answer}");
        }
        assert!(shared_blob.exists(), "the deletion removed bytes an upload in flight had just stored");
        std::fs::write(gate.0.join("second.bin.go"), b"").unwrap();
        let (status, second) = uploader.join().unwrap();
        assert_eq!(status, 201, "{second}");
        assert_eq!(second["sha256"], first["sha256"]);
        assert_eq!(std::fs::read(&shared_blob).ok(), Some(shared.clone()), "the new version's bytes are whole");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while other_blob.exists() {
            assert!(std::time::Instant::now() < deadline, "bytes no file holds were never removed");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (status, _) = server.send("DELETE", &api_key, &format!("/v1/apps/{app_id}/files/second.bin"), None);
        assert_eq!(status, 200);
        assert!(!shared_blob.exists(), "deleting the last file that holds them removes the bytes");
    });
}

/// Sends an upload over a raw socket: the head (with `Content-Length: announced` or chunked),
/// then `body_len` bytes from another thread for as long as the server reads them; returns the
/// status line the server answered with. A refusal that comes before the body is read whole is
/// seen even though the server stops reading (an HTTP client library fails on the write).
fn raw_upload(server: &Server, api_key: &str, path: &str, announced: Option<u64>, body_len: u64) -> String {
    use std::io::{BufRead, Write};
    let address = server.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let framing = match announced {
        Some(length) => format!("Content-Length: {length}"),
        None => "Transfer-Encoding: chunked".to_string(),
    };
    let head = format!("PUT {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {api_key}\r\n{framing}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let chunked = announced.is_none();
    let sender = std::thread::spawn(move || {
        let chunk = vec![3u8; 64 * 1024];
        let mut sent = 0;
        while sent < body_len {
            let n = (body_len - sent).min(chunk.len() as u64) as usize;
            let framed = if chunked {
                [format!("{n:x}\r\n").into_bytes(), chunk[..n].to_vec(), b"\r\n".to_vec()].concat()
            } else {
                chunk[..n].to_vec()
            };
            if writer.write_all(&framed).is_err() {
                return;
            }
            sent += n as u64;
        }
        if chunked {
            let _ = writer.write_all(b"0\r\n\r\n");
        }
    });
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut status = String::new();
    std::io::BufReader::new(&stream).read_line(&mut status).unwrap();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    status.trim().to_string()
}

#[test]
fn the_size_limit_refuses_an_upload_and_stores_nothing() {
    let env: Vec<(&str, &str)> =
        RELAXED_LIMITS.iter().copied().chain([("LICENSD_FILE_MAX_BYTES", "1048576")]).collect();
    on_both_backends(&env, |deployment, server| {
        let (api_key, app_id) = deployment.merchant(server, "limit@example.com");
        let path = format!("/v1/apps/{app_id}/files/big.bin");
        // Announced too large: refused before the body is read.
        let status = raw_upload(server, &api_key, &path, Some(2 * MIB), 0);
        assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
        // Streamed (no length announced) past the limit: refused once it passes.
        let status = raw_upload(server, &api_key, &path, None, 3 * MIB);
        assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
        // Exactly the limit is fine.
        let (status, answer) = upload_bytes(server, &api_key, &app_id, "fits.bin", &vec![1u8; MIB as usize]);
        assert_eq!(status, 201, "{answer}");
        assert_eq!(server.get(&api_key, &path).0, 404);
        let stored = files_under(&deployment.data_dir.join("files"));
        assert_eq!(stored.len(), 1, "only the file that fits is stored: {stored:?}");
    });
}

/// SIGKILL while an upload streams in: after a restart no version of it is visible, and the
/// temporary file it was written to is gone.
#[test]
fn a_sigkill_mid_upload_leaves_no_version_and_no_temporary_file() {
    common::each_backend(|deployment: &Deployment| {
        let server = deployment.start_with(RELAXED_LIMITS);
        let (api_key, app_id) = deployment.merchant(&server, "crash-files@example.com");
        let (mut body, _) = Generated::new(100 * MIB, 5);
        let (release, stalled) = std::sync::mpsc::channel();
        body.stall_after = Some((20 * MIB, stalled));
        let url = format!("{}/v1/apps/{app_id}/files/partial.bin", server.base);
        let key = api_key.clone();
        let uploader = std::thread::spawn(move || {
            let _ = http().put(url).bearer_auth(key).body(reqwest::blocking::Body::new(body)).send();
        });
        let tmp = deployment.data_dir.join("files").join("tmp");
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let written: u64 =
                files_under(&tmp).iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
            if written >= 10 * MIB {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the upload never reached the disk");
            std::thread::sleep(Duration::from_millis(50));
        }
        server.kill();
        drop(release);
        uploader.join().unwrap();
        assert!(!files_under(&tmp).is_empty(), "the killed upload left its temporary file (the sweep has work)");

        let server = deployment.start_with(RELAXED_LIMITS);
        assert!(files_under(&tmp).is_empty(), "the start-up swept the temporary file: {:?}", files_under(&tmp));
        assert_eq!(server.get(&api_key, &format!("/v1/apps/{app_id}/files/partial.bin")).0, 404);
        let (status, list) = server.get(&api_key, &format!("/v1/apps/{app_id}/files"));
        assert_eq!((status, list["files"].as_array().map(Vec::len)), (200, Some(0)), "{list}");
        let blobs = files_under(&deployment.data_dir.join("files").join("blobs"));
        assert!(blobs.is_empty(), "no partial blob: {blobs:?}");
    });
}

/// With `LICENSD_BLOB_STORE=s3` the upload goes to the bucket (moto's S3 server): the API shows
/// it, the bucket holds exactly its bytes, and deleting the file removes them.
#[test]
fn uploads_go_to_the_s3_compatible_store() {
    let Some(moto) = moto::start() else { return };
    let mut env: Vec<(&str, &str)> = RELAXED_LIMITS.to_vec();
    env.extend(moto.server_env());
    on_both_backends(&env, |deployment, server| {
        let (api_key, app_id) = deployment.merchant(server, "s3@example.com");
        let (body, sha) = Generated::new(12 * MIB + 123, 77);
        let (status, uploaded) = upload(server, &api_key, &app_id, "build.pak", reqwest::blocking::Body::new(body));
        let sha = hex::encode(std::mem::take(&mut *sha.lock().unwrap()).finalize());
        assert_eq!(status, 201, "{uploaded}");
        assert_eq!(
            (uploaded["size"].as_u64(), uploaded["sha256"].as_str()),
            (Some(12 * MIB + 123), Some(sha.as_str()))
        );
        assert!(files_under(&deployment.data_dir.join("files")).is_empty(), "nothing is stored locally");

        let store = licensd_blobs::S3BlobStore::open(&moto.config()).unwrap();
        let key = format!("{app_id}/{sha}");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let read_back = runtime.block_on(async {
            use licensd_blobs::BlobStore;
            use tokio::io::AsyncReadExt;
            let mut reader = store.open(&key, 0).await.unwrap();
            let (mut hasher, mut buf, mut total) = (Sha256::new(), vec![0u8; 1 << 16], 0u64);
            loop {
                let n = reader.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            (total, hex::encode(hasher.finalize()))
        });
        assert_eq!(read_back, (12 * MIB + 123, sha.clone()), "the bucket holds exactly the uploaded bytes");

        let (status, _) = server.send("DELETE", &api_key, &format!("/v1/apps/{app_id}/files/build.pak"), None);
        assert_eq!(status, 200);
        let gone = runtime.block_on(async { licensd_blobs::BlobStore::len(&store, &key).await });
        assert!(matches!(gone, Err(licensd_blobs::BlobError::NotFound)), "{gone:?}");
    });
}

/// Waits (up to 60 s) for `done`, polling.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts an upload of `bytes` as `name` on its own thread (held by the test gate when the
/// server has one); joins to its status and answer.
fn upload_in_background(
    server: &Server,
    api_key: &str,
    app_id: &str,
    name: &str,
    bytes: Vec<u8>,
) -> std::thread::JoinHandle<(u16, Value)> {
    let url = format!("{}/v1/apps/{app_id}/files/{name}", server.base);
    let key = api_key.to_string();
    std::thread::spawn(move || match http().put(url).bearer_auth(key).body(bytes).send() {
        Ok(response) => (response.status().as_u16(), response.json::<Value>().unwrap_or(Value::Null)),
        Err(_) => (0, Value::Null),
    })
}

/// A deletion whose bytes waited behind an upload in flight, when the process ends (SIGKILL)
/// before the upload does: after a restart the sweep removes them (once the dead upload's
/// registration lapsed), and never the bytes a live version names.
#[test]
fn bytes_left_pending_by_a_killed_process_are_swept_after_a_restart() {
    let gate = common::TempDir::new();
    let gate_dir = gate.0.to_string_lossy().to_string();
    let env: Vec<(&str, &str)> = RELAXED_LIMITS
        .iter()
        .copied()
        .chain([
            ("LICENSD_TEST_UPLOAD_GATE_DIR", gate_dir.as_str()),
            ("LICENSD_FILE_UPLOAD_LEASE_SECS", "2"),
            ("LICENSD_FILE_GC_SWEEP_SECS", "1"),
        ])
        .collect();
    common::each_backend(|deployment: &Deployment| {
        for stale in ["held.bin.stored", "held.bin.go"] {
            let _ = std::fs::remove_file(gate.0.join(stale));
        }
        for open in ["doomed.bin.go", "kept.bin.go"] {
            std::fs::write(gate.0.join(open), b"").unwrap();
        }
        let server = deployment.start_with(&env);
        let (api_key, app_id) = deployment.merchant(&server, "sweep@example.com");
        let (status, doomed) = upload_bytes(&server, &api_key, &app_id, "doomed.bin", b"bytes to be deleted");
        assert_eq!(status, 201, "{doomed}");
        let (status, kept) = upload_bytes(&server, &api_key, &app_id, "kept.bin", b"bytes a live file keeps");
        assert_eq!(status, 201, "{kept}");
        let blobs = deployment.data_dir.join("files").join("blobs").join(&app_id);
        let (doomed_blob, kept_blob) =
            (blobs.join(doomed["sha256"].as_str().unwrap()), blobs.join(kept["sha256"].as_str().unwrap()));
        let held = upload_in_background(&server, &api_key, &app_id, "held.bin", b"held at the gate".to_vec());
        eventually("the held upload never stored its bytes", || gate.0.join("held.bin.stored").exists());
        let (status, answer) = server.send("DELETE", &api_key, &format!("/v1/apps/{app_id}/files/doomed.bin"), None);
        assert_eq!(status, 200, "{answer}");
        std::thread::sleep(Duration::from_millis(500));
        assert!(doomed_blob.exists(), "removed while an upload of the app was in flight");
        server.kill();
        let _ = held.join();

        let server = deployment.start_with(&env);
        eventually("the bytes left pending were never swept", || !doomed_blob.exists());
        assert!(kept_blob.exists(), "the sweep removed bytes a live version names");
        let (status, file) = server.get(&api_key, &format!("/v1/apps/{app_id}/files/kept.bin"));
        assert_eq!((status, &file["sha256"]), (200, &kept["sha256"]));
    });
}

/// An upload held after storing its bytes, then the process killed (SIGKILL) before it records
/// the version: nothing names those bytes, not even a pending removal. After a restart the orphan
/// sweep removes them once they are older than the upload lease; the bytes a recorded version
/// names stay. `stored` says whether the deployment's store holds a blob (by app id and SHA-256).
fn unrecorded_bytes_are_swept(extra_env: &[(&str, &str)], stored: impl Fn(&Deployment, &str, &str) -> bool) {
    let gate = common::TempDir::new();
    let gate_dir = gate.0.to_string_lossy().to_string();
    let env: Vec<(&str, &str)> = RELAXED_LIMITS
        .iter()
        .chain(extra_env)
        .copied()
        .chain([
            ("LICENSD_TEST_UPLOAD_GATE_DIR", gate_dir.as_str()),
            ("LICENSD_FILE_UPLOAD_LEASE_SECS", "2"),
            ("LICENSD_FILE_ORPHAN_SWEEP_SECS", "1"),
        ])
        .collect();
    common::each_backend(|deployment: &Deployment| {
        for stale in ["lost.bin.stored", "lost.bin.go"] {
            let _ = std::fs::remove_file(gate.0.join(stale));
        }
        std::fs::write(gate.0.join("kept.bin.go"), b"").unwrap();
        let server = deployment.start_with(&env);
        let (api_key, app_id) = deployment.merchant(&server, "orphans@example.com");
        let (status, kept) = upload_bytes(&server, &api_key, &app_id, "kept.bin", b"bytes a recorded version names");
        assert_eq!(status, 201, "{kept}");
        let kept_sha = kept["sha256"].as_str().unwrap().to_string();
        let lost = b"bytes stored and never recorded".to_vec();
        let lost_sha = hex::encode(Sha256::digest(&lost));
        let held = upload_in_background(&server, &api_key, &app_id, "lost.bin", lost);
        eventually("the held upload never stored its bytes", || gate.0.join("lost.bin.stored").exists());
        assert!(stored(deployment, &app_id, &lost_sha), "the held upload's bytes are in the store");
        server.kill();
        let _ = held.join();

        let server = deployment.start_with(&env);
        eventually("bytes no version names were never swept", || !stored(deployment, &app_id, &lost_sha));
        assert!(stored(deployment, &app_id, &kept_sha), "the sweep removed bytes a recorded version names");
        let (status, file) = server.get(&api_key, &format!("/v1/apps/{app_id}/files/kept.bin"));
        assert_eq!((status, file["sha256"].as_str()), (200, Some(kept_sha.as_str())));
        let (status, _) = server.get(&api_key, &format!("/v1/apps/{app_id}/files/lost.bin"));
        assert_eq!(status, 404, "the killed upload recorded nothing");
    });
}

#[test]
fn bytes_an_upload_never_recorded_are_swept_from_the_local_store() {
    unrecorded_bytes_are_swept(&[], |deployment, app_id, sha| {
        deployment.data_dir.join("files").join("blobs").join(app_id).join(sha).exists()
    });
}

#[test]
fn bytes_an_upload_never_recorded_are_swept_from_the_s3_store() {
    let Some(moto) = moto::start() else { return };
    let store = licensd_blobs::S3BlobStore::open(&moto.config()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    unrecorded_bytes_are_swept(&moto.server_env(), |_, app_id, sha| {
        runtime.block_on(licensd_blobs::BlobStore::len(&store, &format!("{app_id}/{sha}"))).is_ok()
    });
}

/// Two real servers on one Postgres database and one S3 bucket (moto): a file deleted on one
/// node while an upload of the same bytes is in flight on the other keeps them; the deletion's
/// other bytes go once that upload is done, and deleting the new version on the first node
/// removes its bytes. Postgres only (SQLite is one node).
#[test]
fn a_deletion_on_one_node_waits_for_an_upload_on_another() {
    let Some(database) = common::temp_postgres() else {
        eprintln!("skipped: LICENSD_TEST_POSTGRES_URL is unset");
        return;
    };
    let Some(moto) = moto::start() else { return };
    let gate = common::TempDir::new();
    let gate_dir = gate.0.to_string_lossy().to_string();
    let mut env: Vec<(&str, &str)> = RELAXED_LIMITS.to_vec();
    env.extend(moto.server_env());
    env.extend([("LICENSD_LOG_POLL_MS", "100"), ("LICENSD_FILE_GC_SWEEP_SECS", "1")]);
    let dirs = [common::TempDir::new(), common::TempDir::new()];
    let nodes = [Deployment::postgres(&dirs[0].0, &database.url), Deployment::postgres(&dirs[1].0, &database.url)];
    let first = nodes[0].start_with(&env);
    let held_env: Vec<(&str, &str)> =
        env.iter().copied().chain([("LICENSD_TEST_UPLOAD_GATE_DIR", gate_dir.as_str())]).collect();
    let second = nodes[1].start_with(&held_env);
    let (api_key, app_id) = nodes[0].merchant(&first, "two-nodes@example.com");

    let store = licensd_blobs::S3BlobStore::open(&moto.config()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stored = |key: &str| runtime.block_on(licensd_blobs::BlobStore::len(&store, key)).is_ok();

    let shared = b"the same bytes on two nodes".to_vec();
    let (status, one) = upload_bytes(&first, &api_key, &app_id, "one.bin", &shared);
    assert_eq!(status, 201, "{one}");
    let (status, other) = upload_bytes(&first, &api_key, &app_id, "other.bin", b"only the deleted file's");
    assert_eq!(status, 201, "{other}");
    let shared_key = format!("{app_id}/{}", one["sha256"].as_str().unwrap());
    let other_key = format!("{app_id}/{}", other["sha256"].as_str().unwrap());

    // The second node stores the same bytes and is held before recording its version.
    let held = upload_in_background(&second, &api_key, &app_id, "two.bin", shared.clone());
    eventually("the second node's upload never stored its bytes", || gate.0.join("two.bin.stored").exists());
    for name in ["one.bin", "other.bin"] {
        let (status, answer) = first.send("DELETE", &api_key, &format!("/v1/apps/{app_id}/files/{name}"), None);
        assert_eq!(status, 200, "{name}: {answer}");
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(stored(&shared_key), "the first node removed bytes the second node's upload had just stored");
    assert!(stored(&other_key), "removed while an upload of the app was in flight on another node");

    std::fs::write(gate.0.join("two.bin.go"), b"").unwrap();
    let (status, two) = held.join().unwrap();
    assert_eq!((status, &two["sha256"]), (201, &one["sha256"]), "{two}");
    eventually("the deleted file's own bytes were never removed", || !stored(&other_key));
    assert!(stored(&shared_key), "bytes of the new version were removed");

    // The first node learns of the new version from the log, then deleting it removes the bytes.
    eventually("the first node never showed the second node's version", || {
        first.get(&api_key, &format!("/v1/apps/{app_id}/files/two.bin")).0 == 200
    });
    let (status, answer) = first.send("DELETE", &api_key, &format!("/v1/apps/{app_id}/files/two.bin"), None);
    assert_eq!(status, 200, "{answer}");
    eventually("deleting the last file that holds them never removed the bytes", || !stored(&shared_key));
}
