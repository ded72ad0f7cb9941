//! Hostile input at the edges of the real binary: control characters in every kind of field,
//! scope escalation, undocumented error bodies, idle and slow sockets, proxy variables.

mod common;

use common::{Deployment, Merchant, Server, TempDir};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::RELAXED_LIMITS as RELAXED;

const STRIPE_SECRET: &str = "whsec_edges_test";

fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn validate_body(m: &Merchant, key: &str, hwid: &str) -> Value {
    json!({ "appId": m.app_id, "appSecret": m.app_secret, "licenseKey": key, "hwid": hwid, "nonce": nonce() })
}

/// A raw HTTP/1.1 request on a fresh connection: (status, body).
fn raw(server: &Server, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn assert_bad_request_naming(what: &str, (status, answer): (u16, Value), field: &str) {
    assert_eq!(status, 400, "{what}: {answer}");
    assert_eq!(answer["error"], "bad_request", "{what}: {answer}");
    assert!(answer.to_string().contains(field), "{what} names '{field}': {answer}");
}

fn control_characters_are_refused_at_every_edge(deployment: &Deployment) {
    let server = deployment.start_with(RELAXED);
    let m = deployment.merchant_with_credits(&server, "nul@example.com", 1000);
    let key = m.license(&server, json!({ "label": "clean" }));
    let connection = m.put(&server, "/v1/commerce/connections/stripe", json!({ "signingSecret": STRIPE_SECRET }));
    let ingress = format!("{}/billing/webhook/stripe/{}", server.base, connection["connectionId"].as_str().unwrap());
    let before = server.written();

    // SDK auth endpoints: the documented body, with a `details` entry naming the field.
    for field in ["nonce", "hwid", "licenseKey", "appId"] {
        let mut body = validate_body(&m, &key, "machine");
        body[field] = Value::from(format!("{}\u{0}x", body[field].as_str().unwrap()));
        let (status, answer) = server.auth("/auth/validate", &body);
        assert_eq!((status, answer["status"].as_str()), (400, Some("failed")), "{field}: {answer}");
        assert_eq!(answer["error"], "bad_request", "{field}: {answer}");
        assert_eq!(answer["details"][0]["field"], field, "{answer}");
    }
    let mut escape = validate_body(&m, &key, "machine\u{1b}[2J");
    escape["nonce"] = Value::from(nonce());
    assert_bad_request_naming("an escape sequence in hwid", server.auth("/auth/validate", &escape), "hwid");
    let heartbeat = json!({ "appId": m.app_id, "sessionToken": "x\u{0}", "hwid": "machine", "nonce": nonce() });
    assert_bad_request_naming("heartbeat", server.auth("/auth/heartbeat", &heartbeat), "sessionToken");

    // Developer API bodies, nested fields, map keys.
    let apps = server.post(&m.api_key, "/v1/apps", &json!({ "name": "evil\u{0}app" }));
    assert_bad_request_naming("app name", apps, "name");
    let licenses = json!({ "appId": m.app_id, "label": "a\u{0}b" });
    assert_bad_request_naming("license label", server.post(&m.api_key, "/v1/licenses", &licenses), "label");
    let variables = format!("/v1/licenses/{key}/variables");
    let value = server.send("PUT", &m.api_key, &variables, Some(&json!({ "motd": "hi\u{0}" })));
    assert_bad_request_naming("variable value", value, "motd");
    let name = server.send("PUT", &m.api_key, &variables, Some(&json!({ "k\u{0}": "v" })));
    assert_bad_request_naming("variable name", name, "k\\\\0");
    let app_variables = format!("/v1/apps/{}/variables", m.app_id);
    let nested = server.send("PUT", &m.api_key, &app_variables, Some(&json!({ "list": ["ok", "\u{7}"] })));
    assert_bad_request_naming("a nested string", nested, "list[1]");
    // Query parameters and path segments.
    let search = server.get(&m.api_key, &format!("/v1/licenses?appId={}&search=a%00b", m.app_id));
    assert_bad_request_naming("search", search, "search");
    assert_bad_request_naming("a path segment", server.get(&m.api_key, "/v1/licenses/AAAA%00"), "path");
    // Portal and dashboard sign-in.
    let portal = json!({ "appId": m.app_id, "licenseKey": key, "email": "a\u{0}@example.com" });
    assert_bad_request_naming("portal", server.auth("/portal/challenges", &portal), "email");
    let form = "email=a%00%40example.com&password=x";
    let (status, _) = raw(
        &server,
        &format!(
            "POST /dashboard/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    );
    assert_eq!(status, 400, "dashboard sign-in");
    // Commerce ingress, correctly signed.
    let object = json!({ "id": "cs_nul", "customer_email": "buyer\u{0}@example.com", "payment_intent": "pi_nul" });
    let event = json!({ "id": "evt_nul", "type": "checkout.session.completed", "data": { "object": object } });
    let event = event.to_string();
    let t = chrono::Utc::now().timestamp();
    let signature = format!("t={t},v1={}", common::hmac_hex(STRIPE_SECRET, format!("{t}.{event}").as_bytes()));
    let response = reqwest::blocking::Client::new()
        .post(&ingress)
        .header("Stripe-Signature", signature)
        .header("Content-Type", "application/json")
        .body(event)
        .send()
        .expect("POST to commerce ingress");
    let status = response.status().as_u16();
    assert_bad_request_naming("commerce ingress", (status, response.json().unwrap_or(Value::Null)), "customer_email");

    // Tab, line feed and carriage return remain fine in free text.
    let fine = server.send("PUT", &m.api_key, &variables, Some(&json!({ "motd": "line 1\r\n\tline 2" })));
    assert_eq!(fine.0, 200, "{}", fine.1);
    let (_, read) = server.get(&m.api_key, &variables);
    assert!(read.to_string().contains("line 1\\r\\n\\tline 2"), "{read}");
    let after = server.written();
    assert_ne!(after, before, "the control write went through");
    // Only that one write: everything refused above changed nothing.
    let (_, license) = server.get(&m.api_key, &format!("/v1/licenses/{key}"));
    assert_eq!(license["label"], "clean", "{license}");
    assert_eq!(license["hwids"].as_array().map_or(0, Vec::len), 0, "no HWID was bound: {license}");
    let (_, listed) = server.get(&m.api_key, "/v1/apps");
    assert!(!listed.to_string().contains("evil"), "{listed}");
    eprintln!("events before {before:?}, after the one allowed write {after:?}");
}

#[test]
fn control_characters_are_refused_at_every_edge_on_sqlite() {
    let dir = TempDir::new();
    control_characters_are_refused_at_every_edge(&Deployment::sqlite(&dir.0));
}

#[test]
fn control_characters_are_refused_at_every_edge_on_postgres() {
    let Some(database) = common::temp_postgres() else {
        eprintln!("LICENSD_TEST_POSTGRES_URL unset: skipped");
        return;
    };
    let dir = TempDir::new();
    control_characters_are_refused_at_every_edge(&Deployment::postgres(&dir.0, &database.url));
}

/// Text that only starts like a web address is refused where a link is stored, and the policy
/// stays as it was: readers of the policy (the portal page, API clients parsing the link) would
/// otherwise fail on it.
#[test]
fn links_that_are_not_web_addresses_are_refused() {
    common::on_both_backends(RELAXED, |deployment, server| {
        let m = deployment.merchant_with_credits(server, "links@example.com", 0);
        let portal = format!("/v1/apps/{}/portal", m.app_id);
        let kept = m.put(server, &portal, json!({ "supportUrl": "help.example.com/tickets" }));
        assert_eq!(kept["supportUrl"], "https://help.example.com/tickets", "{kept}");
        let before = server.written();
        let bad = [
            "https://[",
            "http://[::1",
            "https://[nope]/",
            "https://a b",
            "https://x.example:99999",
            "https://u@x.example",
        ];
        for bad in bad {
            let answer = server.send("PUT", &m.api_key, &portal, Some(&json!({ "supportUrl": bad })));
            assert_bad_request_naming(bad, answer, "supportUrl");
        }
        assert_eq!(server.written(), before, "nothing was written");
        assert_eq!(server.get(&m.api_key, &portal).1, kept, "the policy is unchanged");
        let v6 = m.put(server, &portal, json!({ "supportUrl": "https://[2001:db8::1]:8443/help" }));
        assert_eq!(v6["supportUrl"], "https://[2001:db8::1]:8443/help", "{v6}");
    });
}

#[test]
fn a_key_cannot_mint_a_key_with_more_scopes_than_it_has() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start_with(RELAXED);
    let m = deployment.merchant_with_credits(&server, "scopes@example.com", 0);
    let (status, limited) = server.post(&m.api_key, "/v1/api-keys", &json!({ "scopes": ["write:api_keys"] }));
    assert_eq!(status, 201, "{limited}");
    let limited = limited["apiKey"].as_str().unwrap().to_string();
    let (_, keys_before) = server.get(&m.api_key, "/v1/api-keys");
    for wanted in [json!(["*"]), json!(["write:apps"]), json!(["write:api_keys", "read:licenses"])] {
        let (status, answer) = server.post(&limited, "/v1/api-keys", &json!({ "scopes": wanted }));
        assert_eq!((status, answer["error"].as_str()), (403, Some("forbidden")), "{wanted}: {answer}");
    }
    assert_eq!(server.get(&m.api_key, "/v1/api-keys").1, keys_before, "no key was minted");
    let (status, same) = server.post(&limited, "/v1/api-keys", &json!({ "scopes": ["write:api_keys"] }));
    assert_eq!(status, 201, "its own scopes may be handed on: {same}");
}

#[test]
fn error_bodies_are_the_documented_json() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start_with(RELAXED);
    let m = deployment.merchant_with_credits(&server, "shapes@example.com", 0);
    let json_of = |(status, body): (u16, String)| (status, serde_json::from_str::<Value>(&body).unwrap_or(Value::Null));
    let request = |line: &str, headers: &str, body: &str| {
        json_of(raw(
            &server,
            &format!(
                "{line} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        ))
    };
    let bearer = format!("Authorization: Bearer {}\r\nContent-Type: application/json\r\n", m.api_key);

    let (status, answer) = request("PATCH /v1/apps", &bearer, "{}");
    assert_eq!((status, answer["error"].as_str()), (405, Some("method_not_allowed")), "{answer}");
    assert!(answer["message"].is_string(), "{answer}");
    let (status, answer) = request("GET /auth/validate", "", "");
    assert_eq!(
        (status, answer["status"].as_str(), answer["error"].as_str()),
        (405, Some("failed"), Some("method_not_allowed"))
    );
    let (status, answer) = request("POST /dashboard/login", "Content-Type: application/json\r\n", "{}");
    assert_eq!((status, answer["error"].as_str()), (415, Some("unsupported_media_type")), "{answer}");
    let big = "a".repeat(100 * 1024);
    let billing = format!("POST /billing/webhook/stripe/{}", uuid::Uuid::new_v4());
    let (status, answer) = request(&billing, "", &big);
    assert_eq!((status, answer["error"].as_str()), (413, Some("payload_too_large")), "{answer}");
    let (status, answer) = request("POST /auth/validate", "Content-Type: application/json\r\n", &big);
    assert_eq!(
        (status, answer["status"].as_str(), answer["error"].as_str()),
        (413, Some("failed"), Some("payload_too_large"))
    );
    // An array where the document says object is refused (serde alone would read it by position).
    let (status, answer) = request("POST /v1/apps", &bearer, r#"["Positional app"]"#);
    assert_eq!((status, answer["error"].as_str()), (400, Some("bad_request")), "{answer}");
    assert!(!server.get(&m.api_key, "/v1/apps").1.to_string().contains("Positional"), "no app was created");
    let (status, answer) = request("POST /portal/challenges", "Content-Type: application/json\r\n", "[1,2]");
    assert_eq!((status, answer["error"].as_str()), (400, Some("bad_request")), "{answer}");
}

/// 200 connected sockets that never send a byte, against a limit of 64 connections: SDK
/// validations still succeed, because the connection idle the longest makes way.
#[test]
fn idle_sockets_do_not_starve_sdk_validations() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let mut env = RELAXED.to_vec();
    env.extend([("LICENSD_MAX_CONNECTIONS", "64"), ("LICENSD_HEADER_READ_TIMEOUT_MS", "600000")]);
    env.push(("LICENSD_IDLE_TIMEOUT_MS", "600000"));
    let server = deployment.start_with(&env);
    let m = deployment.merchant_with_credits(&server, "idle@example.com", 1000);
    let key = m.license(&server, json!({}));
    let addr = server.base.trim_start_matches("http://").to_string();
    let idle: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(&addr).expect("connect")).collect();
    // Idle means quiet for a while: a socket that connected moments ago may have its request on
    // the way, and closing it would reset that client (the server waits half a second).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    for round in 0..10 {
        let (status, answer) = server.auth("/auth/validate", &validate_body(&m, &key, "machine"));
        assert_eq!(status, 200, "validation {round} with 200 idle sockets open: {answer}");
        assert_eq!(answer["status"], "ok", "{answer}");
    }
    let closed = idle
        .into_iter()
        .filter(|mut socket| {
            socket.set_nonblocking(true).unwrap();
            !matches!(socket.read(&mut [0; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    eprintln!(
        "10 validations served with 200 idle sockets against 64 slots; {closed} idle sockets closed by the server"
    );
    // The client keeps its connection alive, so one idle socket making way serves all ten.
    assert!(closed >= 1, "an idle connection made way for the validations ({closed} closed)");
}

/// A client trickling headers (one every 200 ms, never finishing) is disconnected once the
/// header read timeout passes, and one trickling a body gets a JSON 400.
#[test]
fn slow_headers_and_bodies_are_cut_off() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server =
        deployment.start_with(&[("LICENSD_HEADER_READ_TIMEOUT_MS", "1500"), ("LICENSD_BODY_READ_TIMEOUT_MS", "1500")]);
    let addr = server.base.trim_start_matches("http://").to_string();

    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n").unwrap();
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut closed = false;
    let mut answer = Vec::new();
    while Instant::now() < give_up && !closed {
        if slow.write_all(b"X-Slow: a\r\n").is_err() {
            closed = true;
        }
        let mut buf = [0; 1024];
        match slow.read(&mut buf) {
            Ok(0) => closed = true,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => closed = true,
        }
    }
    assert!(closed, "a connection trickling headers for 60 s is still open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains(" 200 "), "the trickled request was not served: {answer}");

    let mut body = TcpStream::connect(&addr).unwrap();
    body.write_all(b"POST /auth/validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{").unwrap();
    body.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut answer = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(60);
    while Instant::now() < give_up {
        let _ = body.write_all(b" ");
        let mut buf = [0; 1024];
        match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "a trickled body is refused: {answer}");
    assert!(answer.contains(r#""status":"failed""#), "in the SDK's shape: {answer}");
    assert_eq!(server.get_text("/healthz").0, 200, "the server still serves");
}

/// Proxy variables pointing at a dead port: the webhook test ping still reaches the receiver
/// directly (a proxied client would fail to connect).
#[test]
fn outbound_http_ignores_proxy_variables() {
    let receiver = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let receiver_addr = receiver.local_addr().unwrap();
    let (seen_tx, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for mut stream in receiver.incoming().flatten() {
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let _ = seen_tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let mut env = RELAXED.to_vec();
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
        env.push((name, &dead));
    }
    env.push(("NO_PROXY", ""));
    let server = deployment.start_with(&env);
    let m = deployment.merchant_with_credits(&server, "proxy@example.com", 0);
    let url = format!("http://{receiver_addr}/hook");
    let (status, webhook) = server.post(
        &m.api_key,
        &format!("/v1/apps/{}/webhooks", m.app_id),
        &json!({ "url": url, "events": ["license.created"] }),
    );
    assert_eq!(status, 201, "{webhook}");
    let id = webhook["webhookId"].as_str().or(webhook["id"].as_str()).unwrap().to_string();
    let (status, ping) = server.post(&m.api_key, &format!("/v1/apps/{}/webhooks/{id}/test", m.app_id), &json!({}));
    assert_eq!(status, 200, "{ping}");
    assert_eq!(ping["ok"], true, "delivered directly, not through the dead proxy: {ping}");
    let request = seen.recv_timeout(Duration::from_secs(30)).expect("the receiver got the ping");
    assert!(request.starts_with("POST /hook "), "{request}");
}
