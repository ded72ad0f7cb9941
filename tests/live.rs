//! Live sessions (the Blazeauth WebSocket protocol) against the real binary, with a real
//! WebSocket client library (tokio-tungstenite).

#[path = "live/client.rs"]
mod client;
mod common;

use client::{closes_with, live_env as env, live_merchant as merchant, Frame, Ws};
use common::{on_both_backends, Deployment, Merchant, Server, TempDir, RELAXED_LIMITS};
use serde_json::{json, Value};
use std::time::Duration;

fn balance(server: &Server, merchant: &Merchant) -> i64 {
    let (status, credits) = server.get(&merchant.api_key, "/v1/credits");
    assert_eq!(status, 200, "{credits}");
    credits["balance"].as_i64().unwrap()
}

#[test]
fn initialize_follows_the_documented_order_and_protocol_errors_close() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start_with(&env(&[("LICENSD_LIVE_INIT_TIMEOUT_SECS", "2")]));
    let (_merchant, key) = merchant(&deployment, &server, "init@example.com");
    let rt = client::runtime();
    let base = &server.base;

    let (status, balancer) = server.get("", "/v1/websocket/server");
    assert_eq!(status, 200, "{balancer}");
    assert_eq!(balancer["endpoint"], json!(client::endpoint(base)));
    assert_eq!(balancer["location"], json!("licensd"));

    // Any packet before Initialize: 4200.
    let mut ws = Ws::connect(&rt, base);
    assert_eq!(ws.resume_id.len(), 43, "32 random bytes, base64url");
    ws.send(json!({"type": 10, "id": 1}));
    assert_eq!(closes_with(&mut ws, 4200), "connection is not initialized");

    // Key length first (2), then unknown app (600); the fourth consecutive failure closes 4205.
    let mut ws = Ws::connect(&rt, base);
    let init = |ws: &mut Ws, id: u64, key: &str, client: &str| {
        ws.call(json!({"type": 0, "id": id, "websocket_api_key": key, "client_id": client}))
    };
    assert_eq!(init(&mut ws, 1, "short", "ab")["status"], 2);
    assert_eq!(init(&mut ws, 2, "BA0000000000000000000", "client-1")["status"], 600);
    assert_eq!(init(&mut ws, 3, "BA0000000000000000000", "client-1")["status"], 600);
    ws.send(json!({"type": 0, "id": 4, "websocket_api_key": "BA0000000000000000000", "client_id": "client-1"}));
    assert_eq!(closes_with(&mut ws, 4205), "failed to initialize session");

    // client_id bounds, then success (unknown fields such as the SDK's protocol version ignored).
    let mut ws = Ws::connect(&rt, base);
    assert_eq!(init(&mut ws, 11, &key, "abc")["status"], 500);
    assert_eq!(init(&mut ws, 12, &key, &"c".repeat(65))["status"], 501);
    let ok = ws.init(&key, "machine-1");
    assert_eq!(
        (ok["status"].clone(), ok["app_name"].clone(), ok["app_version"].clone()),
        (json!(1), json!("Live app"), json!(""))
    );
    assert_eq!(init(&mut ws, 5, &key, "machine-1")["status"], 4, "already initialized");
    // A string id is echoed as a string; the largest allowed id works.
    let answer = ws.call(json!({"type": 10, "id": "18446744073709551614"}));
    assert_eq!((answer["id"].clone(), answer["online_users_count"].clone()), (json!("18446744073709551614"), json!(1)));
    // Files (tests/live_files.rs has the rest): an unknown file is 300, nothing running is 305.
    assert_eq!(ws.call(json!({"type": 9, "id": 109, "filename": "none.dll"}))["status"], 300);
    assert_eq!(ws.call(json!({"type": 8, "id": 108, "filename": "none.dll"}))["status"], 305);
    // Get current account without signing in by credentials (tests/app_users.rs has the rest).
    assert_eq!(ws.call(json!({"type": 16, "id": 116}))["status"], 3);

    // Hostile frames: each gets its documented close and nothing else.
    let initialized = |rt| {
        let mut ws = Ws::connect(rt, base);
        assert_eq!(ws.init(&key, "machine-1")["status"], 1);
        ws
    };
    let cases: Vec<(tokio_tungstenite::tungstenite::Message, u16)> = vec![
        (tokio_tungstenite::tungstenite::Message::Binary(vec![1, 2, 3].into()), 4304),
        (json!({"type": 99, "id": 1}).to_string().into(), 4301),
        (json!({"type": 10, "id": 18446744073709551615u64}).to_string().into(), 4300),
        (json!({"type": 10}).to_string().into(), 4300),
        ("{not json".to_string().into(), 4300),
        (format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into(), 4300),
        (format!("{{\"type\":11,\"id\":7,\"name\":\"{}\"}}", "x".repeat(40_000)).into(), 4302),
        (json!({"type": 11, "id": 7, "name": 5}).to_string().into(), 4302),
        (json!({"type": 17, "id": 7, "subscribed": "yes"}).to_string().into(), 4302),
    ];
    for (message, code) in cases {
        let mut ws = initialized(&rt);
        ws.send_message(message);
        closes_with(&mut ws, code);
    }

    // No Initialize within the deadline: 4202.
    let mut ws = Ws::connect(&rt, base);
    assert_eq!(closes_with(&mut ws, 4202), "session wasn't initialized in 15 seconds after connection");

    // The server still serves others, and /metrics reports live sessions.
    let mut ws = initialized(&rt);
    assert_eq!(ws.call(json!({"type": 17, "id": 2, "subscribed": true}))["status"], 1);
    let (_, metrics) = server.get_text("/metrics");
    assert!(metrics.contains("licensd_live_sessions "), "{metrics}");
    assert!(metrics.contains("licensd_live_push_latency_ms_bucket"), "{metrics}");
}

#[test]
fn authorize_by_license_binds_a_slot_bills_once_and_gates_protected_packets() {
    on_both_backends(&env(&[]), |deployment, server| {
        let (m, key) = merchant(deployment, server, "authorize@example.com");
        m.put(server, &format!("/v1/apps/{}/variables", m.app_id), json!({"motd": "hello", "limit": 5}));
        let license = m.license(server, json!({ "maxHwidSlots": 1, "label": "order 7" }));
        let rt = client::runtime();
        let mut ws = Ws::connect(&rt, &server.base);
        assert_eq!(ws.init(&key, "machine-1")["status"], 1);

        assert_eq!(ws.call(json!({"type": 11, "id": 2, "name": "motd"}))["status"], 3, "auth required");
        assert_eq!(ws.call(json!({"type": 11, "id": 3, "name": "mo"}))["status"], 401);
        assert_eq!(ws.call(json!({"type": 15, "id": 4}))["status"], 3);
        assert_eq!(ws.call(json!({"type": 5, "id": 5}))["status"], 3, "logout while not authorized");
        assert_eq!(ws.call(json!({"type": 2, "id": 6, "license": "short"}))["status"], 101);
        assert_eq!(ws.call(json!({"type": 2, "id": 7, "license": "x".repeat(65)}))["status"], 102);
        assert_eq!(ws.call(json!({"type": 2, "id": 8, "license": "AAAA-BBBB-CCCC-DDDD"}))["status"], 100);
        assert_eq!(balance(server, &m), 100, "refusals bill nothing");

        let ok = ws.call(json!({"type": 2, "id": 9, "license": license}));
        assert_eq!(ok["status"], 1, "{ok}");
        assert_eq!(
            (ok["license"].clone(), ok["levels"].clone(), ok["comment"].clone()),
            (json!(license), json!([]), json!("order 7"))
        );
        assert_eq!(ok["ip_address"], "127.0.0.1");
        assert!(ok.get("time_left").is_none(), "a lifetime license has no time_left: {ok}");
        assert_eq!(balance(server, &m), 99, "one credit per successful authorize");
        assert_eq!(ws.call(json!({"type": 2, "id": 10, "license": license}))["status"], 7);
        let (_, got) = server.get(&m.api_key, &format!("/v1/licenses/{license}"));
        assert_eq!(got["hwidList"], json!(["machine-1"]), "the client_id took an HWID slot");

        assert_eq!(ws.call(json!({"type": 11, "id": 11, "name": "motd"}))["content"], "hello");
        assert_eq!(ws.call(json!({"type": 11, "id": 12, "name": "limit"}))["content"], "5", "values are strings");
        assert_eq!(ws.call(json!({"type": 11, "id": 13, "name": "nope"}))["status"], 400);
        let current = ws.call(json!({"type": 15, "id": 14}));
        assert_eq!((current["status"].clone(), current["license"].clone()), (json!(1), json!(license)));

        // Another machine on the one-slot license: 502, with the license payload, and no bill.
        let mut other = Ws::connect(&rt, &server.base);
        assert_eq!(other.init(&key, "machine-2")["status"], 1);
        let mismatch = other.call(json!({"type": 2, "id": 2, "license": license}));
        assert_eq!((mismatch["status"].clone(), mismatch["license"].clone()), (json!(502), json!(license)));
        assert_eq!(balance(server, &m), 99);

        assert_eq!(ws.call(json!({"type": 5, "id": 15}))["status"], 1);
        assert_eq!(ws.call(json!({"type": 15, "id": 16}))["status"], 3, "logged out");
        assert_eq!(ws.call(json!({"type": 11, "id": 17, "name": "motd"}))["status"], 3);

        // Revocation through the Developer API reaches a subscribed session: event 201, then the
        // authorization is gone (packet 15 answers 3), and authorizing again is 105.
        assert_eq!(ws.call(json!({"type": 2, "id": 18, "license": license}))["status"], 1);
        assert_eq!(ws.call(json!({"type": 17, "id": 19, "subscribed": true}))["status"], 1);
        m.put(server, &format!("/v1/licenses/{license}"), json!({"action": "revoke"}));
        let event = ws.recv();
        assert_eq!(event, json!({"id": 18446744073709551615u64, "event_type": 201}));
        assert_eq!(ws.call(json!({"type": 15, "id": 20}))["status"], 3);
        let revoked = ws.call(json!({"type": 2, "id": 21, "license": license}));
        assert_eq!((revoked["status"].clone(), revoked["license"].clone()), (json!(105), json!(license)));
        // Re-activated: the license authorizes again (the revocation cleared the seat, so the
        // event 202 goes to sessions still authorized with it: none here).
        m.put(server, &format!("/v1/licenses/{license}"), json!({"action": "activate"}));
        assert_eq!(ws.call(json!({"type": 2, "id": 22, "license": license}))["status"], 1);
        m.put(server, &format!("/v1/licenses/{license}"), json!({"action": "reset-hwid"}));
        assert_eq!(ws.recv()["event_type"], json!(200), "client id reset");
    });
}

#[test]
fn session_values_and_panel_actions() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server =
        deployment.start_with(&env(&[("LICENSD_LIVE_STORE_MAX_ENTRIES", "2"), ("LICENSD_LIVE_STORE_MAX_BYTES", "10")]));
    let (m, key) = merchant(&deployment, &server, "values@example.com");
    let rt = client::runtime();
    let mut ws = Ws::connect(&rt, &server.base);
    assert_eq!(ws.init(&key, "machine-1")["status"], 1);
    let set = |ws: &mut Ws, id: u64, k: &str, v: &str, ttl: i64| {
        ws.call(json!({"type": 12, "id": id, "key": k, "value": v, "ttl": ttl}))["status"].clone()
    };
    assert_eq!(set(&mut ws, 2, "a", "12345", 0), 1);
    assert_eq!(set(&mut ws, 3, "a", "1234567890", 0), 1, "an overwrite frees the old bytes");
    assert_eq!(set(&mut ws, 4, "b", "x", 0), 701);
    assert_eq!(set(&mut ws, 5, "a", "1", 0), 1);
    assert_eq!(set(&mut ws, 6, "b", "2", 1), 1);
    assert_eq!(set(&mut ws, 7, "c", "3", 0), 702);
    assert_eq!(ws.call(json!({"type": 13, "id": 8, "key": "a"}))["value"], "1");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(ws.call(json!({"type": 13, "id": 9, "key": "b"}))["status"], 700, "expired");
    assert_eq!(ws.call(json!({"type": 14, "id": 10, "key": "a"}))["status"], 1);
    assert_eq!(ws.call(json!({"type": 14, "id": 11, "key": "a"}))["status"], 700);
    ws.send(json!({"type": 12, "id": 12, "key": "", "value": "v"}));
    closes_with(&mut ws, 4302);

    // The merchant lists the app's sessions and kicks one: event 1, then close 4100.
    let mut ws = Ws::connect(&rt, &server.base);
    assert_eq!(ws.init(&key, "machine-9")["status"], 1);
    assert_eq!(ws.call(json!({"type": 17, "id": 2, "subscribed": true}))["status"], 1);
    let (status, listed) = server.get(&m.api_key, &format!("/v1/apps/{}/sessions", m.app_id));
    assert_eq!(status, 200, "{listed}");
    let sessions = listed["sessions"].as_array().unwrap();
    let mine = sessions.iter().find(|s| s["clientId"] == "machine-9").expect("listed");
    assert_eq!((mine["ip"].clone(), mine["license"].clone()), (json!("127.0.0.1"), Value::Null));
    let (other_key, _) = deployment.merchant(&server, "other@example.com");
    let path = format!("/v1/apps/{}/sessions/{}", m.app_id, mine["sessionId"].as_str().unwrap());
    assert_eq!(server.send("DELETE", &other_key, &path, None).0, 403, "not their app");
    assert_eq!(server.send("DELETE", &m.api_key, &path, None).0, 200);
    assert_eq!(ws.recv(), json!({"id": 18446744073709551615u64, "event_type": 1}));
    assert_eq!(closes_with(&mut ws, 4100), "disconnected from panel");
    assert_eq!(server.send("DELETE", &m.api_key, &path, None).0, 404, "gone");

    // Blacklist (type 6): status 1, then close 4203; the client id can no longer initialize.
    let mut ws = Ws::connect(&rt, &server.base);
    assert_eq!(ws.init(&key, "machine-7")["status"], 1);
    assert_eq!(ws.call(json!({"type": 6, "id": 2, "comment": "tampered"}))["status"], 1);
    assert_eq!(closes_with(&mut ws, 4203), "session was blacklisted");
    let mut ws = Ws::connect(&rt, &server.base);
    assert_eq!(ws.init(&key, "machine-7")["status"], 503);
    assert_eq!(closes_with(&mut ws, 4204), "external ID is blacklisted");

    // Disabling the app: event 101 to subscribed sessions, then close 4101 for every session.
    let mut subscribed = Ws::connect(&rt, &server.base);
    assert_eq!(subscribed.init(&key, "machine-1")["status"], 1);
    assert_eq!(subscribed.call(json!({"type": 17, "id": 2, "subscribed": true}))["status"], 1);
    let mut quiet = Ws::connect(&rt, &server.base);
    assert_eq!(quiet.init(&key, "machine-2")["status"], 1);
    m.put(&server, &format!("/v1/apps/{}", m.app_id), json!({"disabled": true}));
    assert_eq!(subscribed.recv()["event_type"], 101);
    assert_eq!(closes_with(&mut subscribed, 4101), "application paused");
    assert_eq!(closes_with(&mut quiet, 4101), "application paused");
    let mut ws = Ws::connect(&rt, &server.base);
    assert_eq!(ws.init(&key, "machine-1")["status"], 601);

    // Suspending the owner's account ends the sessions of its apps the same way.
    m.put(&server, &format!("/v1/apps/{}", m.app_id), json!({"disabled": false}));
    let mut ws = Ws::connect(&rt, &server.base);
    assert_eq!(ws.init(&key, "machine-1")["status"], 1);
    deployment.cli(&["account", "suspend", "--account", &m.account_id]);
    assert_eq!(closes_with(&mut ws, 4101), "application paused");
}

#[test]
fn releasing_a_machine_ends_its_sessions_and_no_other() {
    on_both_backends(&env(&[]), |deployment, server| {
        let (m, ws_key) = merchant(deployment, server, "release-live@example.com");
        let license = m.license(server, json!({ "maxHwidSlots": 2 }));
        let rt = client::runtime();
        let authorized = |client_id: &str, subscribe: bool| {
            let mut ws = Ws::connect(&rt, &server.base);
            assert_eq!(ws.init(&ws_key, client_id)["status"], 1);
            if subscribe {
                assert_eq!(ws.call(json!({"type": 17, "id": 2, "subscribed": true}))["status"], 1);
            }
            let answer = ws.call(json!({"type": 2, "id": 3, "license": license}));
            assert_eq!(answer["status"], 1, "{answer}");
            ws
        };
        let mut subscribed = authorized("machine-1", true);
        let mut quiet = authorized("machine-1", false);
        let mut other = authorized("machine-2", true);

        let path = format!("/v1/licenses/{license}/machines/machine-1");
        let (status, released) = server.send("DELETE", &m.api_key, &path, None);
        assert_eq!(status, 200, "{released}");
        // Event 200 (the binding was reset), event 1 (the panel disconnected it), close 4100.
        assert_eq!(subscribed.recv(), json!({"id": 18446744073709551615u64, "event_type": 200}));
        assert_eq!(subscribed.recv(), json!({"id": 18446744073709551615u64, "event_type": 1}));
        assert_eq!(closes_with(&mut subscribed, 4100), "disconnected from panel");
        assert_eq!(closes_with(&mut quiet, 4100), "disconnected from panel");
        // The other machine's session goes on, and heard nothing.
        assert_eq!(other.call(json!({"type": 15, "id": 4}))["status"], 1, "still authorized");
        let (_, listed) = server.get(&m.api_key, &format!("/v1/apps/{}/sessions", m.app_id));
        let clients: Vec<&str> =
            listed["sessions"].as_array().unwrap().iter().map(|s| s["clientId"].as_str().unwrap()).collect();
        assert_eq!(clients, ["machine-2"], "{listed}");
        // The released machine may come back: it binds the freed slot again.
        let mut back = authorized("machine-1", false);
        assert_eq!(back.call(json!({"type": 15, "id": 4}))["status"], 1);
    });
}

#[test]
fn expiry_is_pushed_by_the_timer() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start_with(&env(&[]));
    let (m, key) = merchant(&deployment, &server, "expiry@example.com");
    let expires_at = chrono::Utc::now() + chrono::Duration::seconds(3);
    let license = m.license(&server, json!({ "expiresAt": expires_at.to_rfc3339() }));
    let rt = client::runtime();
    let mut ws = Ws::connect(&rt, &server.base);
    assert_eq!(ws.init(&key, "machine-1")["status"], 1);
    assert_eq!(ws.call(json!({"type": 17, "id": 2, "subscribed": true}))["status"], 1);
    let ok = ws.call(json!({"type": 2, "id": 3, "license": license}));
    assert_eq!(ok["status"], 1, "{ok}");
    let left = ok["time_left"].as_i64().expect("remaining seconds");
    assert!((0..=3).contains(&left), "{ok}");
    assert_eq!(ok["expires_at"], json!(expires_at.timestamp()));
    // Nothing is sent: the timer pushes event 2 when the license runs out.
    assert_eq!(ws.recv(), json!({"id": 18446744073709551615u64, "event_type": 2}));
    let current = ws.call(json!({"type": 15, "id": 4}));
    assert_eq!((current["status"].clone(), current["license"].clone()), (json!(103), json!(license)));
    assert_eq!(ws.call(json!({"type": 11, "id": 5, "name": "anything"}))["status"], 400);
}

#[test]
fn resume_redelivers_a_lost_answer_without_billing_twice() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start_with(&env(&[]));
    let (m, key) = merchant(&deployment, &server, "resume@example.com");
    let license = m.license(&server, json!({}));
    let rt = client::runtime();
    let mut ws = Ws::connect(&rt, &server.base);
    assert_eq!(ws.init(&key, "machine-1")["status"], 1);
    assert_eq!(ws.call(json!({"type": 12, "id": 2, "key": "k", "value": "v"}))["status"], 1);
    let resume_id = ws.resume_id.clone();
    // The authorize goes out, and the connection dies before its answer is read.
    ws.send(json!({"type": 2, "id": 3, "license": license}));
    ws.drop_connection();
    std::thread::sleep(Duration::from_millis(300));

    let mut ws = Ws::resume(&rt, &server.base, Some(&resume_id)).expect("resumed");
    assert_ne!(ws.resume_id, resume_id, "rotated on every accept");
    ws.send(json!({"type": 2, "id": 3, "license": license}));
    let answer = ws.recv();
    assert_eq!((answer["id"].clone(), answer["status"].clone()), (json!(3), json!(1)), "{answer}");
    // The queued original and the cached resend may both arrive; both say the same.
    let next = ws.call(json!({"type": 13, "id": 4, "key": "k"}));
    let next = if next["id"] == 3 { ws.recv() } else { next };
    assert_eq!(next["value"], "v", "the store survived the resume");
    assert_eq!(ws.call(json!({"type": 15, "id": 5}))["status"], 1, "still authorized");
    assert_eq!(balance(&server, &m), 99, "the authorize ran once");

    // A resume while the previous socket is still open takes over: the old one is dropped
    // silently and the session goes on on the new one.
    let mut old = ws;
    let mut ws = Ws::resume(&rt, &server.base, Some(&old.resume_id)).expect("taken over");
    assert!(old.ends_silently(), "no close frame for a taken-over socket");
    assert_eq!(ws.call(json!({"type": 15, "id": 6}))["status"], 1, "still authorized after the take-over");
    assert_eq!(ws.call(json!({"type": 10, "id": 7}))["online_users_count"], 1);

    // The old id is spent; a client close 1000 ends the session for good.
    let mut stale = Ws::resume(&rt, &server.base, Some(&resume_id)).expect("accepted");
    assert_eq!(closes_with(&mut stale, 4401), "resume ID was not found or it is expired");
    let latest = ws.resume_id.clone();
    ws.close_normally();
    std::thread::sleep(Duration::from_millis(300));
    let mut ended = Ws::resume(&rt, &server.base, Some(&latest)).expect("accepted");
    closes_with(&mut ended, 4401);
}

#[test]
fn fifty_sessions_racing_for_five_seats_get_exactly_five() {
    on_both_backends(&env(&[]), |deployment, server| {
        let (m, key) = merchant(deployment, server, "seats@example.com");
        let license = m.license(server, json!({ "maxHwidSlots": 16, "maxSessions": 5 }));
        let rt = client::runtime();
        let base = server.base.clone();
        let statuses: Vec<u64> = rt.block_on(async {
            let racers = (0..50).map(|i| {
                let (base, key, license) = (base.clone(), key.clone(), license.clone());
                async move {
                    let (mut ws, _) = client::open(&base, None).await.expect("upgrade");
                    let send = |v: Value| tokio_tungstenite::tungstenite::Message::Text(v.to_string().into());
                    use futures::SinkExt;
                    // Sixteen machines share the license's slots; all race for its five seats.
                    let client_id = format!("machine-{}", i % 16);
                    ws.send(send(json!({"type": 0, "id": 1, "websocket_api_key": key, "client_id": client_id})))
                        .await
                        .unwrap();
                    let Frame::Json(init) = client::next(&mut ws).await else { panic!("closed") };
                    assert_eq!(init["status"], 1, "{init}");
                    ws.send(send(json!({"type": 2, "id": 2, "license": license}))).await.unwrap();
                    let Frame::Json(answer) = client::next(&mut ws).await else { panic!("closed") };
                    (answer["status"].as_u64().unwrap(), ws)
                }
            });
            let results = futures::future::join_all(racers).await;
            results
                .into_iter()
                .map(|(status, ws)| {
                    std::mem::forget(ws);
                    status
                })
                .collect()
        });
        assert_eq!(statuses.iter().filter(|s| **s == 1).count(), 5, "{statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 602).count(), 45, "{statuses:?}");
        assert_eq!(balance(server, &m), 95, "only the five seated sessions were billed");
    });
}

#[test]
fn a_session_and_the_rust_sdk_share_one_license() {
    use authforge::{AuthForgeClient, AuthForgeConfig};
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start_with(&env(&[]));
    let (m, key) = merchant(&deployment, &server, "sdk@example.com");
    let license = m.license(&server, json!({ "maxHwidSlots": 2 }));
    let rt = client::runtime();
    let mut ws = Ws::connect(&rt, &server.base);
    assert_eq!(ws.init(&key, "live-machine")["status"], 1);
    assert_eq!(ws.call(json!({"type": 2, "id": 2, "license": license}))["status"], 1);
    let sdk = AuthForgeClient::new(AuthForgeConfig {
        app_id: m.app_id.clone(),
        app_secret: m.app_secret.clone(),
        public_key: m.public_key.clone(),
        api_base_url: server.base.clone(),
        hwid_override: Some("sdk-machine".to_string()),
        ..Default::default()
    });
    sdk.login(&license).expect("the SDK logs in on the second slot");
    assert_eq!(ws.call(json!({"type": 15, "id": 3}))["status"], 1);
    let mut third = Ws::connect(&rt, &server.base);
    assert_eq!(third.init(&key, "third-machine")["status"], 1);
    assert_eq!(third.call(json!({"type": 2, "id": 2, "license": license}))["status"], 502, "both slots taken");
    assert_eq!(balance(&server, &m), 98, "one bill each: the session's authorize and the SDK's validate");
}

#[test]
fn floods_close_4201_and_block_the_ip() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let mut env = RELAXED_LIMITS.to_vec();
    env.extend([("LICENSD_LIVE_SESSION_ACTIONS_PER_MINUTE", "5"), ("LICENSD_LIVE_IP_ACTIONS_PER_MINUTE", "10")]);
    let server = deployment.start_with(&env);
    let (_m, key) = merchant(&deployment, &server, "flood@example.com");
    let rt = client::runtime();
    let mut ws = Ws::connect(&rt, &server.base);
    assert_eq!(ws.init(&key, "machine-1")["status"], 1);
    for id in 2..=5 {
        assert_eq!(ws.call(json!({"type": 10, "id": id}))["status"], 1);
    }
    // The sixth action is answered, then the session is closed for its rate.
    assert_eq!(ws.call(json!({"type": 10, "id": 6}))["status"], 1);
    assert_eq!(closes_with(&mut ws, 4201), "rate limit hit");
    // The same client initializing again during its backoff.
    let mut ws = Ws::connect(&rt, &server.base);
    let reason = closes_with_after_init(&mut ws, &key, "machine-1");
    assert!(reason.starts_with("rate limited, ") && reason.ends_with(" seconds left"), "{reason}");
    // Other clients from the IP until the IP's own limit is crossed; then upgrades get 429.
    let mut ws = Ws::connect(&rt, &server.base);
    assert_eq!(ws.init(&key, "machine-2")["status"], 1);
    let mut crossed = false;
    for id in 2..=5 {
        match ws.next_after(json!({"type": 10, "id": id})) {
            Frame::Json(_) => {}
            Frame::Closed(code, _) => {
                assert_eq!(code, 4201);
                crossed = true;
                break;
            }
        }
    }
    assert!(crossed, "the IP's eleventh action crossed its limit");
    let (status, retry_after) = Ws::resume(&rt, &server.base, None).err().expect("refused while blocked");
    assert_eq!(status, 429);
    assert!(retry_after.unwrap().parse::<u64>().unwrap() > 0);
}

fn closes_with_after_init(ws: &mut Ws, key: &str, client_id: &str) -> String {
    ws.send(json!({"type": 0, "id": 1, "websocket_api_key": key, "client_id": client_id}));
    closes_with(ws, 4201)
}

trait NextAfter {
    fn next_after(&mut self, packet: Value) -> Frame;
}

impl NextAfter for Ws {
    fn next_after(&mut self, packet: Value) -> Frame {
        self.send(packet);
        self.next()
    }
}

#[test]
fn the_merchants_settings_reach_live_sessions() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start_with(&env(&[]));
    let (m, key) = merchant(&deployment, &server, "settings@example.com");
    let app = format!("/v1/apps/{}", m.app_id);
    m.put(&server, &format!("{app}/variables"), json!({"motd": "hello", "secret": "s3"}));
    m.put(&server, &format!("{app}/variable-access"), json!({"motd": "auth_not_required"}));
    m.put(&server, &format!("{app}/settings"), json!({"liveSessionQuota": 1}));
    m.put(&server, &app, json!({"version": "2.1.0"}));
    let first = m.license(&server, json!({ "levels": ["pro", "beta"], "maxSessions": 1, "maxHwidSlots": 4 }));
    let second = m.license(&server, json!({}));
    let rt = client::runtime();

    let mut ws = Ws::connect(&rt, &server.base);
    let init = ws.init(&key, "machine-1");
    assert_eq!((init["status"].clone(), init["app_version"].clone()), (json!(1), json!("2.1.0")));
    assert_eq!(ws.call(json!({"type": 11, "id": 2, "name": "motd"}))["content"], "hello", "auth_not_required");
    assert_eq!(ws.call(json!({"type": 11, "id": 3, "name": "secret"}))["status"], 3, "auth_required");
    let ok = ws.call(json!({"type": 2, "id": 4, "license": first}));
    assert_eq!((ok["status"].clone(), ok["levels"].clone()), (json!(1), json!(["pro", "beta"])));
    assert_eq!(ws.call(json!({"type": 11, "id": 5, "name": "secret"}))["content"], "s3");
    assert_eq!(ws.call(json!({"type": 17, "id": 6, "subscribed": true}))["status"], 1);

    // The app's quota (1 authorized session) is full: 602 at initialize and at authorize.
    let mut other = Ws::connect(&rt, &server.base);
    assert_eq!(other.init(&key, "machine-2")["status"], 602);
    m.put(&server, &format!("{app}/settings"), json!({"liveSessionQuota": 5}));
    let init = json!({"type": 0, "id": 2, "websocket_api_key": key, "client_id": "machine-2"});
    assert_eq!(other.call(init)["status"], 1);
    let seat = other.call(json!({"type": 2, "id": 3, "license": first}));
    assert_eq!((seat["status"].clone(), seat["license"].clone()), (json!(602), json!(first)), "maxSessions 1");
    m.put(&server, &format!("{app}/settings"), json!({"liveSessionQuota": 1}));
    assert_eq!(other.call(json!({"type": 2, "id": 4, "license": second}))["status"], 602, "the app's quota");
    assert_eq!(balance(&server, &m), 99, "refused seats bill nothing");

    // A version change is pushed to subscribed sessions.
    m.put(&server, &app, json!({"version": "2.2.0"}));
    let event = ws.recv();
    assert_eq!(event, json!({"id": 18446744073709551615u64, "event_type": 102, "content": {"version": "2.2.0"}}));

    // The seat frees the moment its session ends.
    ws.close_normally();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(other.call(json!({"type": 2, "id": 5, "license": first}))["status"], 1);
}

/// The README's client (Python `websockets`) runs as printed against a real server.
#[test]
fn the_readme_python_client_runs() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start_with(&env(&[]));
    let (m, key) = merchant(&deployment, &server, "python@example.com");
    m.put(&server, &format!("/v1/apps/{}/variables", m.app_id), json!({"motd": "hello"}));
    let license = m.license(&server, json!({ "levels": ["pro"] }));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/live/example.py");
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(readme.contains(&std::fs::read_to_string(&script).unwrap()), "the README shows the tested script");
    let output = std::process::Command::new(common::python_venv())
        .arg(&script)
        .args([&server.base, &key, &license])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("authorized: {license} levels ['pro']")), "{stdout}");
    assert!(stdout.contains("variable motd: hello") && stdout.contains("session value theme: dark"), "{stdout}");
    assert_eq!(balance(&server, &m), 99);
}

#[test]
fn upgraded_sockets_leave_the_http_limits_and_have_their_own_cap() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start_with(&env(&[
        ("LICENSD_MAX_CONNECTIONS", "2"),
        ("LICENSD_IDLE_TIMEOUT_MS", "300"),
        ("LICENSD_LIVE_MAX_SESSIONS", "3"),
    ]));
    let (_m, key) = merchant(&deployment, &server, "cap@example.com");
    let rt = client::runtime();
    let mut sessions: Vec<Ws> = (0..3)
        .map(|i| {
            let mut ws = Ws::connect(&rt, &server.base);
            assert_eq!(ws.init(&key, &format!("machine-{i}"))["status"], 1);
            ws
        })
        .collect();
    // Quiet for longer than the HTTP idle timeout, and more sockets than HTTP connection slots:
    // every session still answers, and plain HTTP is still served.
    std::thread::sleep(Duration::from_millis(800));
    for ws in &mut sessions {
        assert_eq!(ws.call(json!({"type": 10, "id": 2}))["online_users_count"], 3);
    }
    assert_eq!(server.get_text("/healthz").0, 200);
    let (status, _) = Ws::resume(&rt, &server.base, None).err().expect("over LICENSD_LIVE_MAX_SESSIONS");
    assert_eq!(status, 503);
    sessions.pop().unwrap().close_normally();
    std::thread::sleep(Duration::from_millis(300));
    let mut ws = Ws::connect(&rt, &server.base);
    assert_eq!(ws.init(&key, "machine-9")["status"], 1);
}

#[test]
fn an_extension_rearms_the_expiry_timer() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start_with(&env(&[]));
    let (m, key) = merchant(&deployment, &server, "extend@example.com");
    let license =
        m.license(&server, json!({ "expiresAt": (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339() }));
    let rt = client::runtime();
    let mut ws = Ws::connect(&rt, &server.base);
    assert_eq!(ws.init(&key, "machine-1")["status"], 1);
    assert_eq!(ws.call(json!({"type": 17, "id": 2, "subscribed": true}))["status"], 1);
    assert_eq!(ws.call(json!({"type": 2, "id": 3, "license": license}))["status"], 1);
    let later = chrono::Utc::now() + chrono::Duration::seconds(5);
    m.put(&server, &format!("/v1/licenses/{license}"), json!({"action": "extend", "expiresAt": later.to_rfc3339()}));
    // Past the first expiry: no event 2 came for it (the answer is the next frame), and the
    // license is current again.
    std::thread::sleep(Duration::from_millis(2500));
    let current = ws.call(json!({"type": 15, "id": 4}));
    assert_eq!((current["status"].clone(), current["expires_at"].clone()), (json!(1), json!(later.timestamp())));
    assert_eq!(ws.recv()["event_type"], 2, "pushed at the new expiry");
    assert_eq!(ws.call(json!({"type": 15, "id": 5}))["status"], 103);
}

#[test]
fn a_seat_frees_when_its_resume_window_lapses() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start_with(&env(&[("LICENSD_LIVE_RESUME_WINDOW_SECS", "1")]));
    let (m, key) = merchant(&deployment, &server, "lapse@example.com");
    let license = m.license(&server, json!({ "maxSessions": 1, "maxHwidSlots": 2 }));
    let rt = client::runtime();
    let mut first = Ws::connect(&rt, &server.base);
    assert_eq!(first.init(&key, "machine-1")["status"], 1);
    assert_eq!(first.call(json!({"type": 2, "id": 2, "license": license}))["status"], 1);
    let resume_id = first.resume_id.clone();
    first.drop_connection();
    let mut second = Ws::connect(&rt, &server.base);
    assert_eq!(second.init(&key, "machine-2")["status"], 1);
    assert_eq!(second.call(json!({"type": 2, "id": 2, "license": license}))["status"], 602, "held for a resume");
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(second.call(json!({"type": 2, "id": 3, "license": license}))["status"], 1, "freed after the window");
    let mut late = Ws::resume(&rt, &server.base, Some(&resume_id)).expect("accepted");
    closes_with(&mut late, 4401);
}

#[test]
fn after_a_sigkill_clients_reconnect_and_nothing_acknowledged_is_lost() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start_with(&env(&[]));
    let (m, key) = merchant(&deployment, &server, "kill@example.com");
    let license = m.license(&server, json!({ "maxHwidSlots": 1 }));
    let rt = client::runtime();
    let mut ws = Ws::connect(&rt, &server.base);
    assert_eq!(ws.init(&key, "machine-1")["status"], 1);
    assert_eq!(ws.call(json!({"type": 2, "id": 2, "license": license}))["status"], 1, "acknowledged");
    let resume_id = ws.resume_id.clone();
    server.kill();
    drop(ws);

    let server = deployment.start_with(&env(&[]));
    // Sessions lived in the dead process: the resume id is unknown, the client starts afresh.
    let mut stale = Ws::resume(&rt, &server.base, Some(&resume_id)).expect("accepted");
    closes_with(&mut stale, 4401);
    let mut ws = Ws::connect(&rt, &server.base);
    assert_eq!(ws.init(&key, "machine-1")["status"], 1);
    // The acknowledged authorize is durable: its bill and its HWID binding survived.
    assert_eq!(balance(&server, &m), 99);
    let (_, got) = server.get(&m.api_key, &format!("/v1/licenses/{license}"));
    assert_eq!(got["hwidList"], json!(["machine-1"]));
    assert_eq!(ws.call(json!({"type": 2, "id": 2, "license": license}))["status"], 1, "the bound machine");
    let mut other = Ws::connect(&rt, &server.base);
    assert_eq!(other.init(&key, "machine-2")["status"], 1);
    assert_eq!(other.call(json!({"type": 2, "id": 2, "license": license}))["status"], 502, "the slot stayed taken");
}

#[test]
fn only_initialized_sessions_are_kept_for_a_resume() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start_with(&env(&[]));
    let rt = client::runtime();
    let ids: Vec<String> = (0..20)
        .map(|_| {
            let ws = Ws::connect(&rt, &server.base);
            let id = ws.resume_id.clone();
            ws.drop_connection();
            id
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (_, metrics) = server.get_text("/metrics");
    assert!(metrics.contains("\nlicensd_live_sessions 0\n"), "{metrics}");
    let mut ws = Ws::resume(&rt, &server.base, Some(&ids[0])).expect("accepted");
    closes_with(&mut ws, 4401);
}
