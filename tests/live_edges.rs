//! Live sessions at their edges, against the real binary with a real WebSocket client library
//! (tokio-tungstenite): a shutdown closes every socket with 1000, every oversized frame gets its
//! documented close, the blacklist packet's comment is kept, `wss://` over the native TLS
//! listener, an event caught mid-write by a broken connection survives into the resumed session,
//! and a client that stops reading is dropped (resumable) instead of holding its socket forever.

#[path = "live/client.rs"]
#[allow(dead_code)] // the shared client has more than these scenarios use
mod client;
mod common;

use client::{closes_with, live_env as env, live_merchant as merchant, Frame, Stream, Ws};
use common::{on_both_backends, self_signed_certificate, Deployment, Merchant, Server, TempDir};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

/// The app's live sessions as the Developer API lists them.
fn sessions(server: &Server, m: &Merchant) -> Vec<Value> {
    let (status, listed) = server.get(&m.api_key, &format!("/v1/apps/{}/sessions", m.app_id));
    assert_eq!(status, 200, "{listed}");
    listed["sessions"].as_array().unwrap().clone()
}

/// Waits (at most 30 s) until the Developer API shows the session of `client_id` in `connected`.
fn wait_until_connected_is(server: &Server, m: &Merchant, client_id: &str, connected: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = sessions(server, m);
        let mine = listed.iter().find(|s| s["clientId"] == client_id).expect("the session is listed");
        if mine["connected"] == json!(connected) {
            return;
        }
        assert!(Instant::now() < deadline, "the session never showed connected = {connected}: {mine}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_shutdown_closes_every_live_socket_with_1000() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start_with(&env(&[]));
    let (m, key) = merchant(&deployment, &server, "shutdown@example.com");
    let license = m.license(&server, json!({}));
    let rt = client::runtime();
    // One socket in each state: not initialized, initialized, authorized and subscribed.
    let mut fresh = Ws::connect(&rt, &server.base);
    let mut initialized = Ws::connect(&rt, &server.base);
    assert_eq!(initialized.init(&key, "machine-1")["status"], 1);
    let mut authorized = Ws::connect(&rt, &server.base);
    assert_eq!(authorized.init(&key, "machine-2")["status"], 1);
    assert_eq!(authorized.call(json!({"type": 17, "id": 2, "subscribed": true}))["status"], 1);
    assert_eq!(authorized.call(json!({"type": 2, "id": 3, "license": license}))["status"], 1);
    // And a crowd of initialized ones, so the shutdown's sweep meets many at once.
    let mut crowd: Vec<Ws> = (0..20)
        .map(|i| {
            let mut ws = Ws::connect(&rt, &server.base);
            assert_eq!(ws.init(&key, &format!("crowd-{i}"))["status"], 1);
            ws
        })
        .collect();

    // SIGTERM; the server exits cleanly (asserted by `terminate`), and every socket got the
    // documented "normal server shutdown" close first.
    server.terminate();
    for ws in [&mut fresh, &mut initialized, &mut authorized].into_iter().chain(crowd.iter_mut()) {
        assert_eq!(ws.closed(), (1000, String::new()));
    }
}

/// Sends a message the server may refuse before it has read all of it: a write error (the
/// server closed and reset the connection mid-frame) is not a failure here.
fn send_oversized(rt: &tokio::runtime::Runtime, stream: &mut Stream, message: Message) {
    let _ = rt.block_on(stream.send(message));
}

#[test]
fn every_oversized_frame_gets_the_documented_close() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start_with(&env(&[("LICENSD_LIVE_MAX_FRAME_BYTES", "1024")]));
    let (_m, key) = merchant(&deployment, &server, "oversized@example.com");
    let rt = client::runtime();
    let packet = |bytes: usize| {
        let shell = json!({"type": 11, "id": 7, "name": ""}).to_string();
        let text = json!({"type": 11, "id": 7, "name": "x".repeat(bytes - shell.len())}).to_string();
        assert_eq!(text.len(), bytes);
        text
    };
    // Exactly at the limit: answered (no such variable).
    let mut ws = Ws::connect(&rt, &server.base);
    assert_eq!(ws.init(&key, "machine-1")["status"], 1);
    assert_eq!(ws.call(serde_json::from_str(&packet(1024)).unwrap())["status"], 400);

    // Just over 1x, just over 2x, far over, and a binary frame over the limit: each closes with
    // 4302 "invalid request body" and ends the session (a server close: not resumable).
    for (message, what) in [
        (Message::Text(packet(1025).into()), "1x + 1"),
        (Message::Text(packet(2049).into()), "2x + 1"),
        (Message::Text(packet(200_000).into()), "far over"),
        (Message::Binary(vec![7u8; 5000].into()), "binary over"),
    ] {
        let (mut stream, resume_id) = rt.block_on(client::open(&server.base, None)).expect("upgrade");
        rt.block_on(stream.send(Message::Text(
            json!({"type": 0, "id": 1, "websocket_api_key": key, "client_id": "machine-1"}).to_string().into(),
        )))
        .unwrap();
        let Frame::Json(init) = rt.block_on(client::next(&mut stream)) else { panic!("closed at init") };
        assert_eq!(init["status"], 1);
        send_oversized(&rt, &mut stream, message);
        match rt.block_on(client::next(&mut stream)) {
            Frame::Closed(code, reason) => {
                assert_eq!((code, reason.as_str()), (4302, "invalid request body"), "{what}")
            }
            Frame::Json(v) => panic!("{what}: expected a close, got {v}"),
        }
        let mut again = Ws::resume(&rt, &server.base, Some(&resume_id)).expect("accepted");
        closes_with(&mut again, 4401);
    }
    // The server still serves.
    let mut ws = Ws::connect(&rt, &server.base);
    assert_eq!(ws.init(&key, "machine-2")["status"], 1);
}

#[test]
fn the_blacklist_comment_is_kept_with_the_entry() {
    on_both_backends(&env(&[]), |deployment, server| {
        let (m, key) = merchant(deployment, server, "comment@example.com");
        let rt = client::runtime();
        let security = format!("/v1/apps/{}/security", m.app_id);

        // Refused comments (too long; a NUL, which Postgres cannot store; a control character)
        // close 4302 and record nothing.
        for comment in ["c".repeat(257), "nul \u{0} byte".to_string(), "bell \u{7}".to_string()] {
            let mut ws = Ws::connect(&rt, &server.base);
            assert_eq!(ws.init(&key, "machine-0")["status"], 1);
            ws.send(json!({"type": 6, "id": 2, "comment": comment}));
            closes_with(&mut ws, 4302);
        }
        let (_, lists) = server.get(&m.api_key, &security);
        assert_eq!(lists["hwidBlacklist"], json!([]), "{lists}");

        let comment = "debugger attached — ünïcode, 256 chars max";
        let mut ws = Ws::connect(&rt, &server.base);
        assert_eq!(ws.init(&key, "machine-7")["status"], 1);
        assert_eq!(ws.call(json!({"type": 6, "id": 2, "comment": comment}))["status"], 1);
        closes_with(&mut ws, 4203);
        // Without a comment (the SDK leaves an empty one out): listed, without a comment.
        let mut ws = Ws::connect(&rt, &server.base);
        assert_eq!(ws.init(&key, "machine-8")["status"], 1);
        assert_eq!(ws.call(json!({"type": 6, "id": 2, "comment": ""}))["status"], 1);
        closes_with(&mut ws, 4203);

        let (status, lists) = server.get(&m.api_key, &security);
        assert_eq!(status, 200, "{lists}");
        assert_eq!(lists["hwidBlacklist"], json!(["machine-7", "machine-8"]), "{lists}");
        assert_eq!(lists["blacklistComments"], json!({"hwid": {"machine-7": comment}, "ip": {}}), "{lists}");
        // What a GET shows can be PUT back as it is (the comments are read-only there).
        let (status, put) = server.send("PUT", &m.api_key, &security, Some(&lists));
        assert_eq!((status, put["blacklistComments"].clone()), (200, lists["blacklistComments"].clone()), "{put}");

        // Lifting the self-ban drops its comment with it.
        let (status, _) = server.send(
            "DELETE",
            &m.api_key,
            &format!("{security}/blacklist"),
            Some(&json!({"type": "hwid", "value": "machine-8"})),
        );
        assert_eq!(status, 200);
        let (_, lists) = server.get(&m.api_key, &security);
        assert_eq!(lists["hwidBlacklist"], json!(["machine-7"]), "{lists}");
        assert_eq!(lists["blacklistComments"]["hwid"], json!({"machine-7": comment}));
    });
}

#[test]
fn the_blacklist_comment_is_in_the_event_log() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let no_snapshots = env(&[("LICENSD_SNAPSHOTS", "false")]);
    let server = deployment.start_with(&no_snapshots);
    let (m, key) = merchant(&deployment, &server, "logged@example.com");
    let rt = client::runtime();
    let mut ws = Ws::connect(&rt, &server.base);
    assert_eq!(ws.init(&key, "machine-7")["status"], 1);
    assert_eq!(ws.call(json!({"type": 6, "id": 2, "comment": "patched binary"}))["status"], 1);
    closes_with(&mut ws, 4203);
    server.terminate();
    // A start without a snapshot replays the log: the comment comes back from the event.
    let server = deployment.start_with(&no_snapshots);
    let (_, lists) = server.get(&m.api_key, &format!("/v1/apps/{}/security", m.app_id));
    assert_eq!(lists["blacklistComments"]["hwid"], json!({"machine-7": "patched binary"}), "{lists}");
}

#[test]
fn wss_over_the_native_tls_listener() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls;

    let dir = TempDir::new();
    let (cert, tls_key) = self_signed_certificate(&dir.0);
    let deployment = Deployment::sqlite(&dir.0);
    let (cert_path, key_path) = (cert.to_str().unwrap(), tls_key.to_str().unwrap());
    let server = deployment.start_with(&env(&[("LICENSD_TLS_CERT", cert_path), ("LICENSD_TLS_KEY", key_path)]));
    let addr = server.base.trim_start_matches("http://").to_string();
    let https = format!("https://{addr}");
    // Set up through the operator and the HTTPS Developer API (reqwest trusting the test cert).
    let account = deployment.cli(&["account", "create", "--email", "tls@example.com"]);
    let api_key = account["apiKey"].as_str().unwrap().to_string();
    deployment.cli(&["credits", "grant", "--account", account["accountId"].as_str().unwrap(), "--amount", "10"]);
    let pem = std::fs::read(&cert).unwrap();
    let http = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let app: Value = http
        .post(format!("{https}/v1/apps"))
        .bearer_auth(&api_key)
        .json(&json!({"name": "TLS"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let ws_key = app["websocketApiKey"].as_str().unwrap().to_string();
    let created: Value = http
        .post(format!("{https}/v1/licenses"))
        .bearer_auth(&api_key)
        .json(&json!({"appId": app["appId"]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let license = created["licenses"][0]["licenseKey"].as_str().unwrap().to_string();
    // The balancer names the wss:// endpoint of this listener.
    let balancer: Value = http.get(format!("{https}/v1/websocket/server")).send().unwrap().json().unwrap();
    assert_eq!(balancer["endpoint"], json!(format!("wss://{addr}/ws")));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(&pem).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let rt = client::runtime();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap().to_owned();
        let tls = connector.connect(name, tcp).await.expect("TLS handshake with the test certificate");
        let request = balancer["endpoint"].as_str().unwrap().into_client_request().unwrap();
        let (mut ws, response) = tokio_tungstenite::client_async(request, tls).await.expect("wss upgrade");
        assert!(response.headers().get("resume-id").is_some());
        let init =
            tls_call(&mut ws, json!({"type": 0, "id": 1, "websocket_api_key": ws_key, "client_id": "tls-machine"}))
                .await;
        assert_eq!((init["status"].clone(), init["app_name"].clone()), (json!(1), json!("TLS")), "{init}");
        let auth = tls_call(&mut ws, json!({"type": 2, "id": 2, "license": license})).await;
        assert_eq!((auth["status"].clone(), auth["license"].clone()), (json!(1), json!(license)), "{auth}");
        assert_eq!(tls_call(&mut ws, json!({"type": 15, "id": 3})).await["status"], 1);
    });
}

/// Sends a packet over any WebSocket stream and returns the next text frame.
async fn tls_call<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, packet: Value) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::Text(packet.to_string().into())).await.unwrap();
    loop {
        match ws.next().await.expect("open").expect("frame") {
            Message::Text(text) => return serde_json::from_str::<Value>(text.as_str()).unwrap(),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => continue,
        }
    }
}

/// A session on a socket whose receive buffer is tiny and which reads nothing until told, so
/// the server's writes to it block; `reset` breaks the TCP connection (an RST, no close frame).
struct StalledClient {
    stream: Stream,
    resume_id: String,
}

impl StalledClient {
    async fn open(base: &str) -> Self {
        let addr = base.trim_start_matches("http://").parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let request = client::endpoint(base).into_client_request().unwrap();
        let (stream, response) =
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp)).await.expect("upgrade");
        let resume_id = response.headers().get("resume-id").unwrap().to_str().unwrap().to_string();
        Self { stream, resume_id }
    }

    async fn call(&mut self, packet: Value) -> Value {
        self.stream.send(Message::Text(packet.to_string().into())).await.unwrap();
        let Frame::Json(answer) = client::next(&mut self.stream).await else { panic!("closed") };
        answer
    }

    /// Waits until the server started writing something this client has not read.
    async fn wait_for_unread_bytes(&self) {
        let MaybeTlsStream::Plain(tcp) = self.stream.get_ref() else { unreachable!() };
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(30), tcp.peek(&mut byte)).await.expect("bytes within 30 s").unwrap();
    }

    fn reset(self) {
        let MaybeTlsStream::Plain(tcp) = self.stream.get_ref() else { unreachable!() };
        tcp.set_zero_linger().unwrap();
        drop(self);
    }
}

/// An app version of `bytes` characters: its event (102) is far larger than every socket buffer
/// between the server and a stalled client, so writing it blocks half-way.
fn huge_version(tag: char, bytes: usize) -> String {
    std::iter::once(tag).chain(std::iter::repeat_n('9', bytes - 1)).collect()
}

const HUGE: usize = 6 * 1024 * 1024;
const HUGE_ENV: &[(&str, &str)] =
    &[("LICENSD_MAX_APP_VERSION_CHARS", "7000000"), ("LICENSD_MAX_BODY_BYTES", "8000000")];

fn expect_version_event(frame: Frame, version: &str) {
    let Frame::Json(event) = frame else { panic!("expected the version event, got {frame:?}") };
    assert_eq!(event["event_type"], 102);
    assert!(event["content"]["version"] == version, "a different or cut version");
}

#[test]
fn an_event_cut_off_by_a_broken_connection_arrives_after_the_resume() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start_with(&env(HUGE_ENV));
    let (m, key) = merchant(&deployment, &server, "midwrite@example.com");
    let rt = client::runtime();
    let mut stalled = rt.block_on(StalledClient::open(&server.base));
    let init = json!({"type": 0, "id": 1, "websocket_api_key": key, "client_id": "machine-1"});
    assert_eq!(rt.block_on(stalled.call(init))["status"], 1);
    assert_eq!(rt.block_on(stalled.call(json!({"type": 17, "id": 2, "subscribed": true})))["status"], 1);
    let resume_id = stalled.resume_id.clone();

    let version = huge_version('a', HUGE);
    m.put(&server, &format!("/v1/apps/{}", m.app_id), json!({ "version": version }));
    // The event is being written; the connection breaks under it.
    rt.block_on(stalled.wait_for_unread_bytes());
    stalled.reset();
    wait_until_connected_is(&server, &m, "machine-1", false);

    let (mut stream, _) = rt.block_on(client::open(&server.base, Some(&resume_id))).expect("resumed");
    expect_version_event(rt.block_on(client::next(&mut stream)), &version);
}

#[test]
fn a_client_that_stops_reading_is_dropped_and_can_resume() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let mut extra = HUGE_ENV.to_vec();
    // Pings cannot end this socket within the test (the client answers none: it reads nothing);
    // only the write deadline can.
    extra.push(("LICENSD_LIVE_WRITE_TIMEOUT_SECS", "1"));
    let server = deployment.start_with(&env(&extra));
    let (m, key) = merchant(&deployment, &server, "stalled@example.com");
    let rt = client::runtime();
    let mut stalled = rt.block_on(StalledClient::open(&server.base));
    let init = json!({"type": 0, "id": 1, "websocket_api_key": key, "client_id": "machine-1"});
    assert_eq!(rt.block_on(stalled.call(init))["status"], 1);
    assert_eq!(rt.block_on(stalled.call(json!({"type": 17, "id": 2, "subscribed": true})))["status"], 1);
    let resume_id = stalled.resume_id.clone();

    let version = huge_version('b', HUGE);
    m.put(&server, &format!("/v1/apps/{}", m.app_id), json!({ "version": version }));
    rt.block_on(stalled.wait_for_unread_bytes());
    // The client reads nothing more: the blocked write has a deadline, after which the server
    // treats the socket as a network drop (no close frame, the session kept for a resume).
    wait_until_connected_is(&server, &m, "machine-1", false);
    let (mut stream, _) = rt.block_on(client::open(&server.base, Some(&resume_id))).expect("resumed");
    expect_version_event(rt.block_on(client::next(&mut stream)), &version);
    drop(stalled);
}

#[test]
fn a_client_that_answers_no_pings_is_dropped_and_can_resume() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment
        .start_with(&env(&[("LICENSD_LIVE_PING_INTERVAL_SECS", "1"), ("LICENSD_LIVE_PONG_TIMEOUT_SECS", "2")]));
    let (m, key) = merchant(&deployment, &server, "quiet@example.com");
    let license = m.license(&server, json!({}));
    let rt = client::runtime();
    // Initialized and authorized, then silent: the client reads nothing, so it answers no ping.
    let mut quiet = rt.block_on(StalledClient::open(&server.base));
    let init = json!({"type": 0, "id": 1, "websocket_api_key": key, "client_id": "machine-1"});
    assert_eq!(rt.block_on(quiet.call(init))["status"], 1);
    assert_eq!(rt.block_on(quiet.call(json!({"type": 2, "id": 2, "license": license})))["status"], 1);
    let resume_id = quiet.resume_id.clone();
    wait_until_connected_is(&server, &m, "machine-1", false);
    // A network drop, not a server close: the session (and its authorization) resumes.
    let mut ws = Ws::resume(&rt, &server.base, Some(&resume_id)).expect("resumed");
    assert_eq!(ws.call(json!({"type": 15, "id": 3}))["status"], 1);
    drop(quiet);
}
