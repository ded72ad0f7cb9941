//! Several licensd nodes on one Postgres database (issue 19, without Kafka): three real
//! processes share one database; revocations reach live sessions on other nodes, each
//! single-owner role runs on exactly one node and moves when its owner is SIGKILLed, webhooks go
//! out once per (event, webhook), portal challenges and dashboard lockouts hold whichever node a
//! request lands on. Skipped when `LICENSD_TEST_POSTGRES_URL` is unset, like every Postgres test.
//! The trusted-proxy test needs no database of its own kind and runs on SQLite. The Kafka tests
//! also need a Kafka-protocol broker (`LICENSD_TEST_KAFKA_BROKER_BIN`, the tansu binary that
//! `.ci/tansu` builds): skipped without it, failed without it when `CI` is set.

#[path = "live/client.rs"]
#[allow(dead_code)] // the parts the live tests use and these do not
mod client;
mod common;

use client::{live_env, live_merchant, Ws};
use common::{temp_postgres, Deployment, Server, TempDir};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Short leases so ownership moves within a test's patience, and a quick log poll.
const CLUSTER: &[(&str, &str)] = &[
    ("LICENSD_LEASE_TTL_MS", "1500"),
    ("LICENSD_LEASE_RENEW_MS", "500"),
    ("LICENSD_LOG_POLL_MS", "100"),
    ("LICENSD_WEBHOOK_RETRY_BASE_MS", "100"),
    ("LICENSD_WEBHOOK_TIMEOUT_MS", "3000"),
];

/// Three nodes' folders on one database (each node keeps its own snapshot).
struct Cluster {
    _dirs: Vec<TempDir>,
    nodes: Vec<Deployment>,
    _database: licensd_store::testing::TempDatabase,
}

impl Cluster {
    fn new() -> Option<Self> {
        let Some(database) = temp_postgres() else {
            eprintln!("skipped: LICENSD_TEST_POSTGRES_URL is unset");
            return None;
        };
        let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new()).collect();
        let nodes = dirs.iter().map(|d| Deployment::postgres(&d.0, &database.url)).collect();
        Some(Self { _dirs: dirs, nodes, _database: database })
    }

    fn start(&self, node: usize, name: &str) -> Server {
        self.start_with(node, name, &[])
    }

    fn start_with(&self, node: usize, name: &str, extra: &[(&str, &str)]) -> Server {
        let mut env = live_env(CLUSTER);
        env.push(("LICENSD_NODE_ID", name));
        env.extend_from_slice(extra);
        self.nodes[node].start_with(&env)
    }
}

fn healthz(server: &Server) -> Value {
    let (status, body) = server.get_text("/healthz");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The roles `server` holds now.
fn roles(server: &Server) -> Vec<String> {
    let health = healthz(server);
    let roles = health["roles"].as_object().cloned().unwrap_or_default();
    let mut held: Vec<String> = roles.into_iter().filter(|(_, held)| *held == json!(true)).map(|(r, _)| r).collect();
    held.sort();
    held
}

const ALL_ROLES: [&str; 3] = ["commerce", "sql-projections", "webhooks"];

/// Waits until, among `servers`, every role is held by exactly one; returns each role's holder index.
fn owners(servers: &[&Server], within: Duration) -> HashMap<String, usize> {
    let deadline = Instant::now() + within;
    loop {
        let held: Vec<Vec<String>> = servers.iter().map(|s| roles(s)).collect();
        let mut owners = HashMap::new();
        let mut exact = true;
        for role in ALL_ROLES {
            let holders: Vec<usize> = (0..servers.len()).filter(|i| held[*i].iter().any(|r| r == role)).collect();
            match holders.as_slice() {
                [one] => drop(owners.insert(role.to_string(), *one)),
                _ => exact = false,
            }
        }
        if exact {
            return owners;
        }
        assert!(Instant::now() < deadline, "roles not held exactly once within {within:?}: {held:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn validate(server: &Server, app_id: &str, secret: &str, key: &str, hwid: &str) -> (u16, Value) {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    server.auth(
        "/auth/validate",
        &json!({ "appId": app_id, "appSecret": secret, "licenseKey": key, "hwid": hwid, "nonce": nonce }),
    )
}

/// A WebSocket session on `server`, initialized once the node has learned of the app made on
/// another node, which takes up to its log poll (it answers 600 until then).
fn initialized(rt: &Arc<tokio::runtime::Runtime>, server: &Server, ws_key: &str, client_id: &str) -> Ws {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut ws = Ws::connect(rt, &server.base);
        let status = ws.init(ws_key, client_id)["status"].clone();
        if status == 1 {
            return ws;
        }
        assert!(status == 600 && Instant::now() < deadline, "initialize on {}: {status}", server.base);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_revocation_on_node_b_reaches_a_live_session_on_node_c_within_the_deadline() {
    let Some(cluster) = Cluster::new() else { return };
    let a = cluster.start(0, "node-a");
    let b = cluster.start(1, "node-b");
    let c = cluster.start(2, "node-c");
    owners(&[&a, &b, &c], Duration::from_secs(10));
    let (m, ws_key) = live_merchant(&cluster.nodes[0], &a, "multi-live@example.com");
    let license = m.license(&a, json!({}));
    assert_eq!(validate(&a, &m.app_id, &m.app_secret, &license, "machine-1").0, 200, "SDK validation on node A");
    // C learns of the license within its log poll (its session answered 100, unknown, before).
    activated_on(&c, &m, &license);

    let rt = client::runtime();
    let mut delays = Vec::new();
    let mut ws = initialized(&rt, &c, &ws_key, "machine-1");
    for round in 0..5u64 {
        let authorized = ws.call(json!({"type": 2, "id": 10 + round * 3, "license": license}));
        assert_eq!(authorized["status"], 1, "node C authorizes the license: {authorized}");
        if round == 0 {
            assert_eq!(ws.call(json!({"type": 17, "id": 1000, "subscribed": true}))["status"], 1);
        }
        let started = Instant::now();
        m.put(&b, &format!("/v1/licenses/{license}"), json!({"action": "revoke"}));
        let event = ws.recv();
        let delay = started.elapsed();
        assert_eq!(event, json!({"id": 18446744073709551615u64, "event_type": 201}), "the revocation push");
        assert!(delay < Duration::from_secs(2), "revocation on B reached a session on C after {delay:?}");
        delays.push(delay);
        let refused = ws.call(json!({"type": 2, "id": 11 + round * 3, "license": license}));
        assert_eq!(refused["status"], 105, "revoked on C too: {refused}");
        m.put(&b, &format!("/v1/licenses/{license}"), json!({"action": "activate"}));
        // Node C sees the re-activation before the next round authorizes.
        let deadline = Instant::now() + Duration::from_secs(5);
        while validate(&c, &m.app_id, &m.app_secret, &license, "machine-1").0 != 200 {
            assert!(Instant::now() < deadline, "the re-activation on B never reached C");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    delays.sort();
    eprintln!("revocation on node B -> push on node C (Write API answer included), 5 rounds: {delays:?}");
}

/// A webhook receiver answering 200 (or hanging, while `hang` is set), one thread per
/// connection; records the `license.created` keys it got.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<String>>>,
    hang: Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let hang = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (log, hanging) = (got.clone(), hang.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, hanging) = (log.clone(), hanging.clone());
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut length = 0;
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 0 && !line.trim().is_empty() {
                        if let Some((name, value)) = line.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                        line.clear();
                    }
                    let mut body = vec![0; length];
                    let _ = reader.read_exact(&mut body);
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    if let Some(key) = body["data"]["licenseKey"].as_str() {
                        log.lock().unwrap().push(key.to_string());
                    }
                    if hanging.load(std::sync::atomic::Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_secs(30));
                        return;
                    }
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                });
            }
        });
        Self { url, got, hang }
    }

    fn count(&self, key: &str) -> usize {
        self.got.lock().unwrap().iter().filter(|k| *k == key).count()
    }

    fn wait_for(&self, key: &str, times: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.count(key) < times {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }
}

#[test]
fn webhooks_go_out_once_with_three_nodes_and_roles_move_when_their_owner_is_sigkilled() {
    let Some(cluster) = Cluster::new() else { return };
    // A starts alone and takes every role; B and C find them held.
    let a = cluster.start(0, "node-a");
    owners(&[&a], Duration::from_secs(10));
    let b = cluster.start(1, "node-b");
    let c = cluster.start(2, "node-c");
    let owned = owners(&[&a, &b, &c], Duration::from_secs(10));
    assert!(owned.values().all(|owner| *owner == 0), "node A keeps what it holds: {owned:?}");
    let metrics = a.get_text("/metrics").1;
    assert!(metrics.contains("licensd_lease_held{role=\"webhooks\"} 1"), "{metrics}");
    assert!(b.get_text("/metrics").1.contains("licensd_lease_held{role=\"webhooks\"} 0"));
    assert_eq!(healthz(&b)["node"], "node-b");

    let m = cluster.nodes[0].merchant_with_credits(&a, "multi-hooks@example.com", 0);
    let receiver = Receiver::start();
    let (status, created) = a.post(
        &m.api_key,
        &format!("/v1/apps/{}/webhooks", m.app_id),
        &json!({ "url": receiver.url, "events": ["license.created"] }),
    );
    assert_eq!(status, 201, "{created}");
    let servers = [&a, &b, &c];
    let keys: Vec<String> = (0..12).map(|i| m.license(servers[i % 3], json!({}))).collect();
    for key in &keys {
        assert!(receiver.wait_for(key, 1, Duration::from_secs(20)), "license.created for {key} delivered");
    }
    // Long enough for any second node's dispatcher to have sent a duplicate.
    std::thread::sleep(Duration::from_secs(2));
    for key in &keys {
        assert_eq!(receiver.count(key), 1, "{key}: exactly once with three nodes");
    }

    // The dispatcher's owner is SIGKILLed while a delivery is in flight: a survivor takes the
    // roles over and the delivery still happens (at least once).
    receiver.hang.store(true, std::sync::atomic::Ordering::SeqCst);
    let key = m.license(&b, json!({}));
    assert!(receiver.wait_for(&key, 1, Duration::from_secs(20)), "the first attempt reached the receiver");
    let killed = Instant::now();
    a.kill();
    receiver.hang.store(false, std::sync::atomic::Ordering::SeqCst);
    let moved = owners(&[&b, &c], Duration::from_secs(10));
    let handover = killed.elapsed();
    assert!(receiver.wait_for(&key, 2, Duration::from_secs(20)), "delivered again by a survivor");
    eprintln!("roles moved to survivors {moved:?} {handover:?} after the SIGKILL (lease 1.5 s, renew 0.5 s)");
    assert!(handover < Duration::from_secs(5), "ownership moved after {handover:?}");

    // The survivors' SQL read models keep following the log (their owner is one of them).
    let later = m.license(&c, json!({}));
    assert!(receiver.wait_for(&later, 1, Duration::from_secs(20)), "new events are queued and delivered");
    let deadline = Instant::now() + Duration::from_secs(10);
    let survivor = if moved["sql-projections"] == 0 { &b } else { &c };
    loop {
        let projections = healthz(survivor)["projections"].as_array().cloned().unwrap_or_default();
        let sql: Vec<&Value> = projections.iter().filter(|p| p["name"] != "hot").collect();
        if sql.len() >= 3 && sql.iter().all(|p| p["lagSeconds"] == 0 && p["stuck"] == false) {
            break;
        }
        assert!(Instant::now() < deadline, "the new owner's read models did not catch up: {projections:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A minimal SMTP server: accepts every message and keeps its text.
fn mail_sink() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let messages = Arc::new(Mutex::new(Vec::new()));
    let kept = messages.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let _ = out.write_all(b"220 sink\r\n");
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    let command = line.trim_end().to_ascii_uppercase();
                    let reply: &[u8] = if command.starts_with("DATA") {
                        let _ = out.write_all(b"354 go on\r\n");
                        let mut message = String::new();
                        loop {
                            line.clear();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim_end() == "." {
                                break;
                            }
                            message.push_str(&line);
                        }
                        kept.lock().unwrap().push(message);
                        b"250 kept\r\n"
                    } else if command.starts_with("QUIT") {
                        let _ = out.write_all(b"221 bye\r\n");
                        return;
                    } else {
                        b"250 ok\r\n"
                    };
                    let _ = out.write_all(reply);
                    line.clear();
                }
            });
        }
    });
    (port, messages)
}

fn code_in(messages: &Mutex<Vec<String>>, seen: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let codes: Vec<String> = messages
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| m.lines().map(str::trim).find(|l| l.len() == 6 && l.chars().all(|c| c.is_ascii_digit())))
            .map(String::from)
            .collect();
        if codes.len() > seen {
            return codes[seen].clone();
        }
        assert!(Instant::now() < deadline, "no sign-in code was mailed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn dashboard_sign_in(base: &str, email: &str, password: &str) -> u16 {
    let client = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let form = [("email", email), ("password", password)];
    client.post(format!("{base}/dashboard/login")).form(&form).send().unwrap().status().as_u16()
}

#[test]
fn portal_sign_in_and_dashboard_lockouts_hold_across_nodes() {
    let Some(cluster) = Cluster::new() else { return };
    let (port, mail) = mail_sink();
    let smtp = format!("smtp://127.0.0.1:{port}");
    let mut env = live_env(CLUSTER);
    env.extend([
        ("LICENSD_SMTP_URL", smtp.as_str()),
        ("LICENSD_DASHBOARD_MAX_FAILURES", "3"),
        ("LICENSD_DASHBOARD_LOCKOUT_SECS", "600"),
    ]);
    let nodes: Vec<Server> = cluster.nodes.iter().map(|n| n.start_with(&env)).collect();
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let m = cluster.nodes[0].merchant_with_credits(a, "multi-portal@example.com", 0);
    let key = m.license(a, json!({}));
    m.put(a, &format!("/v1/licenses/{key}/email"), json!({ "email": "buyer@example.com" }));

    // The code is asked for on A and entered on B: B signs in.
    let ask = |server: &Server| {
        let (status, answer) =
            server.auth("/portal/challenges", &json!({ "licenseKey": key, "email": "buyer@example.com" }));
        assert_eq!(status, 200, "{answer}");
        answer["challengeId"].as_str().unwrap().to_string()
    };
    let enter = |server: &Server, challenge: &str, code: &str| {
        server.auth("/portal/sessions", &json!({ "challengeId": challenge, "code": code }))
    };
    let challenge = ask(a);
    let code = code_in(&mail, 0);
    let (status, session) = enter(b, &challenge, &code);
    assert_eq!(status, 200, "a code asked for on A works on B: {session}");
    assert!(session["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(enter(c, &challenge, &code).0, 401, "single use across nodes");

    // Wrong guesses spread over the nodes count together: after five, the right code is refused.
    let challenge = ask(c);
    let code = code_in(&mail, 1);
    let wrong = if code == "000000" { "000001" } else { "000000" };
    for (i, server) in [a, b, c, a, b].into_iter().enumerate() {
        assert_eq!(enter(server, &challenge, wrong).0, 401, "wrong guess {i}");
    }
    assert_eq!(enter(c, &challenge, &code).0, 401, "spent after five wrong guesses on three nodes");

    // Dashboard: three wrong passwords spread over A, B and C lock the email on every node.
    let account = cluster.nodes[0].cli(&["account", "create", "--email", "multi-dash@example.com"]);
    let id = account["accountId"].as_str().unwrap();
    cluster.nodes[0].cli_with_input(&["account", "set-password", "--account", id], "a long dashboard password\n");
    std::thread::sleep(Duration::from_millis(500)); // every node's model has read the new login
    for server in [a, b, c] {
        assert_eq!(dashboard_sign_in(&server.base, "multi-dash@example.com", "wrong password here"), 401);
    }
    for server in [a, b, c] {
        let status = dashboard_sign_in(&server.base, "multi-dash@example.com", "a long dashboard password");
        assert_eq!(status, 429, "locked on {} after failures on three nodes", server.base);
    }
}

#[test]
fn the_overview_counts_live_sessions_and_heartbeats_of_every_node() {
    let Some(cluster) = Cluster::new() else { return };
    let mut env = live_env(CLUSTER);
    env.push(("LICENSD_PRESENCE_FLUSH_MS", "200"));
    let start = |node: usize, name: &str| {
        let mut env = env.clone();
        env.push(("LICENSD_NODE_ID", name));
        cluster.nodes[node].start_with(&env)
    };
    let a = start(0, "node-a");
    let b = start(1, "node-b");
    let (m, ws_key) = live_merchant(&cluster.nodes[0], &a, "multi-overview@example.com");
    let license = m.license(&a, json!({}));
    let live_sessions = |server: &Server| {
        let (status, overview) = server.get(&m.api_key, &format!("/v1/overview?appId={}&days=1", m.app_id));
        assert_eq!(status, 200, "{overview}");
        overview["liveSessions"].as_i64().unwrap()
    };
    let until = |what: &str, check: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // Two sessions on B, one on A: each node's overview counts all three.
    let rt = client::runtime();
    let mut held = Vec::new();
    for (server, client_id) in [(&b, "machine-1"), (&b, "machine-2"), (&a, "machine-3")] {
        held.push(initialized(&rt, server, &ws_key, client_id));
    }
    until("A counts B's sessions", &|| live_sessions(&a) == 3);
    until("B counts A's session", &|| live_sessions(&b) == 3);

    // A heartbeat served by B shows as the machine's last seen on A.
    let (status, answer) = validate(&a, &m.app_id, &m.app_secret, &license, "machine-9");
    assert_eq!(status, 200, "validation on A: {answer}");
    let token = {
        use base64::Engine;
        let payload = base64::engine::general_purpose::STANDARD.decode(answer["payload"].as_str().unwrap()).unwrap();
        serde_json::from_slice::<Value>(&payload).unwrap()["sessionToken"].as_str().unwrap().to_string()
    };
    let seen = |server: &Server| {
        let (_, page) = server.get(&m.api_key, &format!("/v1/licenses/{license}"));
        page["machines"][0]["lastSeenAt"].as_str().unwrap_or_default().to_string()
    };
    until("A shows the validation", &|| !seen(&a).is_empty());
    let validated = seen(&a);
    std::thread::sleep(Duration::from_millis(20));
    // B learns of the session made on A within its log poll: until then it refuses the token
    // (403). Each try has a nonce of its own, as a nonce is good for one heartbeat.
    let tries = std::sync::atomic::AtomicU64::new(0);
    until("B accepts a heartbeat of the session made on A", &|| {
        let nonce = format!("{:032x}", tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let beat = json!({ "appId": m.app_id, "sessionToken": token, "hwid": "machine-9", "nonce": nonce });
        b.auth("/auth/heartbeat", &beat).0 == 200
    });
    until("A shows B's heartbeat", &|| seen(&a) > validated);

    // A node that stops counts for nothing once its rows are stale (three flush intervals).
    drop(b);
    until("B's sessions leave A's count", &|| live_sessions(&a) == 1);
    drop(held);
}

/// Trusted proxies: behind one, each forwarded client has its own per-IP budget and the access
/// log names it; from an untrusted peer the same header is ignored. (SQLite: no shared state.)
#[test]
fn the_client_ip_comes_from_a_trusted_proxy_and_never_from_an_untrusted_peer() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let log = dir.0.join("trusted.log");
    let limits = [("LICENSD_VALIDATE_PER_IP", "2"), ("LICENSD_VALIDATE_PER_KEY", "1000")];
    let mut trusted_env = limits.to_vec();
    trusted_env.extend([("LICENSD_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1/32, ::1"), ("LICENSD_LOG", "info")]);
    let trusted = deployment.start_logging_to(&trusted_env, Some(&log));
    let m = deployment.merchant_with_credits(&trusted, "proxy@example.com", 1000);
    let key = m.license(&trusted, json!({}));
    let client = reqwest::blocking::Client::new();
    let call = |server: &Server, headers: &[(&str, &str)]| {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let mut request = client.post(format!("{}/auth/validate", server.base)).json(&json!({
            "appId": m.app_id, "appSecret": m.app_secret, "licenseKey": key, "hwid": "machine", "nonce": nonce
        }));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().unwrap().status().as_u16()
    };
    // Behind the proxy: three clients, two calls each, all within their own budget of 2.
    for client_ip in ["198.51.100.7", "198.51.100.8", "2001:db8::9"] {
        for _ in 0..2 {
            let forwarded = format!("6.6.6.6, {client_ip}, 10.1.2.3");
            assert_eq!(call(&trusted, &[("x-forwarded-for", &forwarded)]), 200, "{client_ip}");
        }
    }
    assert_eq!(call(&trusted, &[("forwarded", "for=\"[2001:db8::9]:4711\"")]), 429, "Forwarded: the same client");
    assert_eq!(call(&trusted, &[("x-forwarded-for", "198.51.100.7")]), 429, "its budget is spent");
    // Hostile headers from the trusted peer fall back to the last trusted hop (the peer itself).
    for hostile in ["unknown", "1.2.3.4:99999", "[::1", "\"oops\"", &"9.9.9.9,".repeat(2000)] {
        let status = call(&trusted, &[("x-forwarded-for", hostile)]);
        assert!(status == 200 || status == 429, "{status} for a hostile header");
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("198.51.100.7"), "the access log names the forwarded client");
    assert!(!text.contains("6.6.6.6"), "never the spoofed leftmost hop");
    trusted.terminate();

    // No trusted proxies: a spoofed header changes nothing; the third call is refused.
    let plain = deployment.start_with(&limits);
    let spoofed: Vec<u16> = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        .iter()
        .map(|ip| call(&plain, &[("x-forwarded-for", ip), ("forwarded", &format!("for={ip}"))]))
        .collect();
    assert_eq!(spoofed, [200, 200, 429], "an untrusted peer cannot pick its address");
}

/// Bad cluster settings stop the start with a message naming them, before the data folder's
/// database is created. (A value outside an option's range is refused by the command line
/// parser, whose message names the option's flag.)
#[test]
fn bad_cluster_settings_stop_the_start_before_anything_is_created() {
    let dir = TempDir::new();
    let cases = [
        ("LICENSD_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("LICENSD_TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal"),
        ("LICENSD_LEASE_RENEW_MS", "6000"),
        ("LICENSD_LEASE_RENEW_MS", "0"),
        ("LICENSD_NODE_ID", " "),
        // Kafka needs several nodes, so Postgres; and an option name must name one.
        ("LICENSD_KAFKA_BROKERS", "127.0.0.1:9"),
        ("LICENSD_KAFKA_OPTION_SSL__CA", "x"),
        // Past the 32-bit milliseconds Postgres takes.
        ("LICENSD_PG_IDLE_IN_TRANSACTION_MS", "2147483648"),
        ("LICENSD_PG_IDLE_IN_TRANSACTION_MS", "-1"),
    ];
    for (name, value) in cases {
        let flag = format!("--{}", name.trim_start_matches("LICENSD_").to_lowercase().replace('_', "-"));
        let mut child = std::process::Command::new(common::BIN)
            .arg("serve")
            .env("LICENSD_DATA_DIR", &dir.0)
            .env("LICENSD_LISTEN", "127.0.0.1:0")
            .env(name, value)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{name}={value:?}: the server started");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        assert!(!status.success(), "{name}={value:?}");
        assert!(stderr.contains(name) || stderr.contains(&flag), "{name}={value:?}: {stderr}");
        assert!(!dir.0.join("licensd.db").exists(), "{name}={value:?}: no database was created");
    }
}

/// A real Kafka-protocol broker process (tansu, on its SQLite storage engine in a folder of its
/// own) on a free port; stopped and started again on the same port and storage.
struct Broker {
    bin: std::path::PathBuf,
    dir: TempDir,
    port: u16,
    child: Option<std::process::Child>,
}

/// The topic the Kafka tests use, with three partitions so that events of different streams
/// arrive out of log order.
const TOPIC: &str = "licensd-test-events";

impl Broker {
    fn start() -> Option<Self> {
        let broker = Self::fresh()?;
        broker.create_topic();
        Some(broker)
    }

    /// A broker that has no topic yet.
    fn fresh() -> Option<Self> {
        let bin = common::kafka_broker_bin()?;
        let mut broker = Self { bin, dir: TempDir::new(), port: common::free_port(), child: None };
        broker.resume();
        Some(broker)
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker process and waits until its port accepts connections.
    fn resume(&mut self) {
        let url = format!("tcp://{}", self.address());
        let child = std::process::Command::new(&self.bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir.0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the broker");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(self.address()).is_err() {
            assert!(Instant::now() < deadline, "the broker did not listen on {}", self.address());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the broker stops answering at once.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The topic's partition count as the broker reports it (0: no such topic).
    fn partitions(&self) -> usize {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", self.address()).create().unwrap();
        let metadata = consumer.fetch_metadata(Some(TOPIC), Duration::from_secs(10)).expect("the broker answers");
        metadata
            .topics()
            .iter()
            .filter(|t| t.name() == TOPIC && t.error().is_none())
            .map(|t| t.partitions().len())
            .sum()
    }

    /// The broker does not create topics by itself: created here with the admin API.
    fn create_topic(&self) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        use rdkafka::types::RDKafkaErrorCode;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let admin: AdminClient<DefaultClientContext> =
            rdkafka::ClientConfig::new().set("bootstrap.servers", self.address()).create().unwrap();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let created =
                rt.block_on(admin.create_topics(&[NewTopic::new(TOPIC, 3, TopicReplication::Fixed(1))], &options));
            match created.as_ref().map(|results| results.as_slice()) {
                Ok([Ok(_)]) | Ok([Err((_, RDKafkaErrorCode::TopicAlreadyExists))]) => return,
                other => assert!(Instant::now() < deadline, "cannot create the topic: {other:?}"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Kafka on every node; Postgres polling made slow (a minute), so whatever reaches a node from
/// another within seconds came through Kafka (or, in fallback, the follower's own log reads).
fn kafka_env(broker: &Broker) -> Vec<(&'static str, String)> {
    vec![
        ("LICENSD_KAFKA_BROKERS", broker.address()),
        ("LICENSD_KAFKA_TOPIC", TOPIC.to_string()),
        ("LICENSD_LOG_POLL_MS", "60000".to_string()),
        ("LICENSD_KAFKA_PROBE_MS", "300".to_string()),
        ("LICENSD_KAFKA_FALLBACK_POLL_MS", "200".to_string()),
    ]
}

fn start_kafka_nodes(cluster: &Cluster, broker: &Broker) -> Vec<Server> {
    start_kafka_nodes_with(cluster, broker, &[])
}

/// Nodes A, B and C with [`kafka_env`] and `extra` settings after it.
fn start_kafka_nodes_with(cluster: &Cluster, broker: &Broker, extra: &[(&'static str, &str)]) -> Vec<Server> {
    let mut env = kafka_env(broker);
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ["node-a", "node-b", "node-c"].iter().enumerate().map(|(i, name)| cluster.start_with(i, name, &env)).collect()
}

/// Waits until every one of `servers` says it follows `source` in `/healthz`.
fn wait_for_source(servers: &[&Server], source: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let sources: Vec<Value> = servers.iter().map(|s| healthz(s)["logSource"].clone()).collect();
        if sources.iter().all(|s| s == source) {
            return;
        }
        assert!(Instant::now() < deadline, "not all nodes follow {source} within {within:?}: {sources:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until every one of `servers` has read the log up to the same position; returns it.
fn converged(servers: &[&Server], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let positions: Vec<Value> = servers.iter().map(|s| healthz(s)["readModelPosition"].clone()).collect();
        if positions.windows(2).all(|w| w[0] == w[1]) {
            return positions[0].as_str().unwrap_or_default().to_string();
        }
        assert!(Instant::now() < deadline, "the nodes' models did not converge: {positions:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metric(server: &Server, name: &str) -> f64 {
    let text = server.get_text("/metrics").1;
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

/// The node whose `/healthz` says it runs the Kafka relay, waiting until exactly one does.
fn relay_owner(servers: &[&Server], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let holders: Vec<usize> =
            (0..servers.len()).filter(|i| roles(servers[*i]).iter().any(|r| r == "kafka-relay")).collect();
        if let [one] = holders.as_slice() {
            return *one;
        }
        assert!(Instant::now() < deadline, "the relay is not held by exactly one node: {holders:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// After a clean stop, the snapshot a node wrote (its model, applied from Kafka and the log)
/// equals a replay of the whole log: nothing missed, nothing applied twice.
fn assert_model_matches_a_rebuild(deployment: &Deployment, node: &str) {
    let rebuilt = deployment.cli(&["rebuild", "--projection", "hot"]);
    let snapshot = &rebuilt["rebuilt"][0]["snapshot"];
    assert_eq!(snapshot["matchesReplay"], json!(true), "{node}: its model equals a rebuild: {rebuilt}");
}

/// One revocation on `on`, pushed to the live session `ws` (subscribed) on another node within
/// the deadline; then the license is activated again and `seen_by` validates it.
fn revocation_is_pushed(m: &common::Merchant, license: &str, on: &Server, ws: &mut Ws, round: u64) -> Duration {
    let authorized = ws.call(json!({"type": 2, "id": 10 + round * 3, "license": license}));
    assert_eq!(authorized["status"], 1, "the session's node authorizes the license: {authorized}");
    let started = Instant::now();
    m.put(on, &format!("/v1/licenses/{license}"), json!({"action": "revoke"}));
    let event = ws.recv();
    let delay = started.elapsed();
    assert_eq!(event, json!({"id": 18446744073709551615u64, "event_type": 201}), "the revocation push");
    // The bound is the product's, with room for the machine: the delay includes the Developer
    // API's answer on `on`, whose read-your-writes wait goes through the relay, so two trips
    // through Kafka, each at most a relay poll (50 ms) plus a gap wait (500 ms) beyond the
    // broker's own fetch wait (50 ms): about 1.2 s. Three nodes, a broker and Postgres on two
    // loaded cores have taken 2.75 s for it (in the whole suite), which sets 5 s; a push that
    // fell back to the node's own minute-long log poll would still fail it.
    assert!(delay < Duration::from_secs(5), "the push came after {delay:?}");
    m.put(on, &format!("/v1/licenses/{license}"), json!({"action": "activate"}));
    delay
}

fn activated_on(server: &Server, m: &common::Merchant, license: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while validate(server, &m.app_id, &m.app_secret, license, "machine-1").0 != 200 {
        assert!(Instant::now() < deadline, "the re-activation never reached {}", server.base);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A merchant with 100 credits and one app, and the app's WebSocket API key. The account is
/// made by the operator CLI, whose commit reaches a node through the relay, not as the node's own
/// write: the app is created once `server` knows the account's API key.
fn kafka_merchant(deployment: &Deployment, server: &Server, email: &str) -> (common::Merchant, String) {
    let account = deployment.cli(&["account", "create", "--email", email]);
    let api_key = account["apiKey"].as_str().unwrap().to_string();
    let account_id = account["accountId"].as_str().unwrap().to_string();
    deployment.cli(&["credits", "grant", "--account", &account_id, "--amount", "100"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.get(&api_key, "/v1/apps").0 == 401 {
        assert!(Instant::now() < deadline, "the account made by the CLI never reached {}", server.base);
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, app) = server.post(&api_key, "/v1/apps", &json!({ "name": "Kafka app" }));
    assert_eq!(status, 201, "{app}");
    let text = |field: &str| app[field].as_str().unwrap().to_string();
    let merchant = common::Merchant {
        account_id,
        api_key,
        app_id: text("appId"),
        app_secret: text("appSecret"),
        public_key: text("publicKey"),
    };
    (merchant, text("websocketApiKey"))
}

#[test]
fn with_kafka_a_revocation_on_node_b_is_pushed_on_node_c_while_postgres_polling_is_slow() {
    let Some(broker) = Broker::start() else { return };
    let Some(cluster) = Cluster::new() else { return };
    let nodes = start_kafka_nodes(&cluster, &broker);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    wait_for_source(&[a, b, c], "kafka", Duration::from_secs(30));
    relay_owner(&[a, b, c], Duration::from_secs(10));
    let (m, ws_key) = kafka_merchant(&cluster.nodes[0], a, "kafka-live@example.com");
    let license = m.license(a, json!({}));
    assert_eq!(validate(a, &m.app_id, &m.app_secret, &license, "machine-1").0, 200, "SDK validation on node A");
    converged(&[a, b, c], Duration::from_secs(10));

    let rt = client::runtime();
    let mut ws = Ws::connect(&rt, &c.base);
    assert_eq!(ws.init(&ws_key, "machine-1")["status"], 1, "node C knows the app created on node A");
    assert_eq!(ws.call(json!({"type": 17, "id": 1000, "subscribed": true}))["status"], 1);
    let mut delays = Vec::new();
    for round in 0..5 {
        delays.push(revocation_is_pushed(&m, &license, b, &mut ws, round));
        activated_on(c, &m, &license);
    }
    delays.sort();
    eprintln!("with Kafka: revocation on node B -> push on node C, 5 rounds: {delays:?}");
    assert!(metric(c, "licensd_kafka_events_applied_total") > 0.0, "node C applied events from Kafka");
    assert_eq!(metric(c, "licensd_log_source{source=\"kafka\"}"), 1.0);
    let relay = relay_owner(&[a, b, c], Duration::from_secs(1));
    assert!(metric(&nodes[relay], "licensd_kafka_relay_published_total") > 0.0);
    for (i, node) in nodes.into_iter().enumerate() {
        node.terminate();
        assert_model_matches_a_rebuild(&cluster.nodes[i], ["node-a", "node-b", "node-c"][i]);
    }
}

#[test]
fn a_fresh_broker_without_the_topic_gets_it_from_the_nodes_which_then_follow_kafka() {
    let Some(broker) = Broker::fresh() else { return };
    let Some(cluster) = Cluster::new() else { return };
    assert_eq!(broker.partitions(), 0, "the broker starts without the topic");
    // Every node creates the topic as soon as it sees it missing, so the three race for it; the
    // replication is left at its default, the broker's own.
    let nodes = start_kafka_nodes_with(&cluster, &broker, &[("LICENSD_KAFKA_PARTITIONS", "4")]);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    wait_for_source(&[a, b, c], "kafka", Duration::from_secs(60));
    assert_eq!(broker.partitions(), 4, "the topic has LICENSD_KAFKA_PARTITIONS partitions");
    relay_owner(&[a, b, c], Duration::from_secs(10));
    let (m, _) = kafka_merchant(&cluster.nodes[0], a, "kafka-fresh@example.com");
    let license = m.license(a, json!({}));
    // The log poll takes a minute: the license reaches C within seconds only through Kafka.
    activated_on(c, &m, &license);
    assert!(metric(c, "licensd_kafka_events_applied_total") > 0.0, "node C applied events from Kafka");
}

#[test]
fn a_relay_that_stops_publishing_while_the_broker_answers_sends_the_others_to_postgres() {
    let Some(broker) = Broker::start() else { return };
    let Some(cluster) = Cluster::new() else { return };
    // The frozen relay keeps its lease for the whole test: only the stall bound can notice it.
    // Frozen inside one of its transactions, its node would hold back every node's log reads
    // (they stop below the cluster's oldest open transaction) until the server ends that
    // transaction: 2 s here rather than the default 10 s, to leave the deadlines below room.
    let extra = [
        ("LICENSD_LEASE_TTL_MS", "120000"),
        ("LICENSD_KAFKA_RELAY_STALL_MS", "1500"),
        ("LICENSD_PG_IDLE_IN_TRANSACTION_MS", "2000"),
    ];
    let nodes = start_kafka_nodes_with(&cluster, &broker, &extra);
    let all: Vec<&Server> = nodes.iter().collect();
    wait_for_source(&all, "kafka", Duration::from_secs(30));
    let owner = relay_owner(&all, Duration::from_secs(10));
    let (writer, reader) = match owner {
        0 => (&nodes[1], &nodes[2]),
        1 => (&nodes[0], &nodes[2]),
        _ => (&nodes[0], &nodes[1]),
    };
    let (m, _) = kafka_merchant(&cluster.nodes[0], writer, "kafka-stall@example.com");
    let signal = |name: &str| {
        let status = std::process::Command::new("kill").args([name, &nodes[owner].pid().to_string()]).status();
        assert!(status.unwrap().success(), "kill {name}");
    };
    signal("-STOP");
    let license = m.license(writer, json!({}));
    // The broker answers, but nothing reaches it: the reader says so and reads the log (the
    // model's own log poll takes a minute, so the license arrives through the fallback).
    wait_for_source(&[writer, reader], "postgres-fallback", Duration::from_secs(20));
    activated_on(reader, &m, &license);
    signal("-CONT");
    wait_for_source(&all, "kafka", Duration::from_secs(30));
    let later = m.license(writer, json!({}));
    activated_on(reader, &m, &later);
}

/// The nodes still running.
fn running(nodes: &[Option<Server>]) -> Vec<&Server> {
    nodes.iter().flatten().collect()
}

#[test]
fn the_kafka_relay_moves_when_its_owner_is_sigkilled_and_nothing_is_missed() {
    let Some(broker) = Broker::start() else { return };
    let Some(cluster) = Cluster::new() else { return };
    let mut nodes: Vec<Option<Server>> = start_kafka_nodes(&cluster, &broker).into_iter().map(Some).collect();
    wait_for_source(&running(&nodes), "kafka", Duration::from_secs(30));
    let owner = relay_owner(&running(&nodes), Duration::from_secs(10));
    let (m, _) = kafka_merchant(&cluster.nodes[0], running(&nodes)[0], "kafka-relay@example.com");
    let survivors: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    // Licenses written on the survivors before and while the relay's owner dies.
    let mut keys = Vec::new();
    for i in 0..6 {
        keys.push(m.license(nodes[survivors[i % 2]].as_ref().unwrap(), json!({})));
    }
    let killed = Instant::now();
    nodes[owner].take().unwrap().kill();
    for i in 0..6 {
        keys.push(m.license(nodes[survivors[i % 2]].as_ref().unwrap(), json!({})));
    }
    let new_owner = relay_owner(&running(&nodes), Duration::from_secs(10));
    let moved_to = survivors[new_owner];
    eprintln!("the relay moved to node {moved_to} {:?} after its owner was SIGKILLed", killed.elapsed());
    // Every license reaches both survivors (each wrote half of them; the rest came by Kafka).
    converged(&running(&nodes), Duration::from_secs(20));
    for &i in &survivors {
        let server = nodes[i].as_ref().unwrap();
        for key in &keys {
            assert_eq!(validate(server, &m.app_id, &m.app_secret, key, "machine-1").0, 200, "{key} on node {i}");
        }
    }
    for i in survivors {
        nodes[i].take().unwrap().terminate();
        assert_model_matches_a_rebuild(&cluster.nodes[i], &format!("node {i}"));
    }
}

#[test]
fn the_broker_stopped_under_load_sends_nodes_to_postgres_and_back_to_kafka_with_nothing_missed() {
    let Some(mut broker) = Broker::start() else { return };
    let Some(cluster) = Cluster::new() else { return };
    let nodes = start_kafka_nodes(&cluster, &broker);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    wait_for_source(&[a, b, c], "kafka", Duration::from_secs(30));
    let (m, ws_key) = kafka_merchant(&cluster.nodes[0], a, "kafka-outage@example.com");
    let license = m.license(a, json!({}));
    let rt = client::runtime();
    converged(&[a, b, c], Duration::from_secs(10));
    let mut ws = Ws::connect(&rt, &c.base);
    assert_eq!(ws.init(&ws_key, "machine-1")["status"], 1);
    assert_eq!(ws.call(json!({"type": 17, "id": 1000, "subscribed": true}))["status"], 1);

    // Load: licenses created on A and B all along, until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let written = Arc::new(Mutex::new(Vec::new()));
    let load = {
        let (stop, written) = (stop.clone(), written.clone());
        let bases = [a.base.clone(), b.base.clone()];
        let api_key = m.api_key.clone();
        let app_id = m.app_id.clone();
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let response = client
                    .post(format!("{}/v1/licenses", bases[i % 2]))
                    .bearer_auth(&api_key)
                    .json(&json!({ "appId": app_id }))
                    .send();
                if let Ok(response) = response {
                    if response.status().as_u16() == 201 {
                        let body: Value = response.json().unwrap_or(Value::Null);
                        if let Some(key) = body["licenses"][0]["licenseKey"].as_str() {
                            written.lock().unwrap().push(key.to_string());
                        }
                    }
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let before_outage = written.lock().unwrap().len();
    broker.stop();
    wait_for_source(&[a, b, c], "postgres-fallback", Duration::from_secs(15));
    assert_eq!(metric(c, "licensd_log_source{source=\"postgres-fallback\"}"), 1.0);
    // Pushes still arrive while Kafka is down: the follower reads the log itself.
    revocation_is_pushed(&m, &license, b, &mut ws, 0);
    activated_on(c, &m, &license);
    std::thread::sleep(Duration::from_secs(1));
    let during_outage = written.lock().unwrap().len() - before_outage;
    broker.resume();
    wait_for_source(&[a, b, c], "kafka", Duration::from_secs(60));
    // The load goes on until some licenses were written with Kafka back.
    let back = written.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while written.lock().unwrap().len() < back + 3 {
        assert!(Instant::now() < deadline, "no writes went through after the broker came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    load.join().unwrap();
    let written = written.lock().unwrap().clone();
    assert!(
        during_outage > 0 && written.len() > before_outage + during_outage,
        "written before, during, after the outage"
    );
    eprintln!("the load wrote {} licenses, {during_outage} of them while the broker was down", written.len());
    // Back on Kafka, a push still arrives within the deadline.
    revocation_is_pushed(&m, &license, b, &mut ws, 1);
    converged(&[a, b, c], Duration::from_secs(20));
    for key in written.iter().rev().take(10) {
        assert_eq!(validate(c, &m.app_id, &m.app_secret, key, "machine-1").0, 200, "{key} on node C");
    }
    drop(ws);
    for (i, node) in nodes.into_iter().enumerate() {
        node.terminate();
        assert_model_matches_a_rebuild(&cluster.nodes[i], ["node-a", "node-b", "node-c"][i]);
    }
}

/// With the broker down, a node reads the log every `LICENSD_KAFKA_FALLBACK_POLL_MS`, not once per
/// probe: each probe waits up to `LICENSD_KAFKA_PROBE_MS` for a broker that does not answer, and
/// the log reads must go on meanwhile (the nodes benchmark found pushes on the fallback taking a
/// probe's wait, 1 s at the default, instead of the fallback poll's 250 ms).
#[test]
fn with_the_broker_down_the_log_is_read_at_the_fallback_poll_not_once_per_probe() {
    let Some(mut broker) = Broker::start() else { return };
    let Some(cluster) = Cluster::new() else { return };
    let mut env = kafka_env(&broker);
    env.retain(|(name, _)| *name != "LICENSD_KAFKA_PROBE_MS");
    env.push(("LICENSD_KAFKA_PROBE_MS", "6000".to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = cluster.start_with(0, "node-a", &env);
    let c = cluster.start_with(2, "node-c", &env);
    wait_for_source(&[&a, &c], "kafka", Duration::from_secs(30));
    let (m, ws_key) = kafka_merchant(&cluster.nodes[0], &a, "kafka-fallback-pace@example.com");
    let license = m.license(&a, json!({}));
    converged(&[&a, &c], Duration::from_secs(10));
    let rt = client::runtime();
    let mut ws = Ws::connect(&rt, &c.base);
    assert_eq!(ws.init(&ws_key, "machine-1")["status"], 1);
    assert_eq!(ws.call(json!({"type": 17, "id": 1000, "subscribed": true}))["status"], 1);
    broker.stop();
    wait_for_source(&[&a, &c], "postgres-fallback", Duration::from_secs(30));
    let mut delays = Vec::new();
    for round in 0..4 {
        delays.push(revocation_is_pushed(&m, &license, &a, &mut ws, round));
        activated_on(&c, &m, &license);
    }
    delays.sort();
    eprintln!("broker down, probe 6 s, fallback poll 200 ms: revocation on A -> push on C: {delays:?}");
    // Two fallback polls and the machine's slack; a read once per probe takes up to 6 s.
    assert!(delays[3] < Duration::from_secs(2), "pushes on the fallback waited for the probe: {delays:?}");
}

/// An outage longer than the relay's `message.timeout.ms` times its in-flight messages out:
/// librdkafka's idempotent producer then cannot go on (the nodes benchmark saw "Unknown broker
/// error" for every message once the broker was back, and every node stayed on the fallback).
/// The relay builds a new producer and publishes again from its checkpoint.
#[test]
fn after_a_broker_outage_longer_than_the_message_timeout_the_relay_publishes_again() {
    let Some(mut broker) = Broker::start() else { return };
    let Some(cluster) = Cluster::new() else { return };
    let nodes = start_kafka_nodes_with(&cluster, &broker, &[("LICENSD_KAFKA_OPTION_MESSAGE_TIMEOUT_MS", "2000")]);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    wait_for_source(&[a, b, c], "kafka", Duration::from_secs(30));
    let relay = relay_owner(&[a, b, c], Duration::from_secs(10));
    let (m, ws_key) = kafka_merchant(&cluster.nodes[0], a, "kafka-long-outage@example.com");
    let license = m.license(a, json!({}));
    converged(&[a, b, c], Duration::from_secs(10));

    broker.stop();
    // Writes all along the outage, which lasts three message timeouts: the relay's messages
    // for them wait for the broker and time out.
    let mut keys = Vec::new();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(6) {
        keys.push(m.license([a, b][keys.len() % 2], json!({})));
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_for_source(&[a, b, c], "postgres-fallback", Duration::from_secs(15));
    let published = metric(&nodes[relay], "licensd_kafka_relay_published_total");
    broker.resume();
    wait_for_source(&[a, b, c], "kafka", Duration::from_secs(60));
    keys.push(m.license(a, json!({})));
    converged(&[a, b, c], Duration::from_secs(20));
    assert!(
        metric(&nodes[relay], "licensd_kafka_relay_published_total") > published,
        "the relay published again after the outage"
    );
    // A revocation made now reaches node C's live session through Kafka (the log poll takes a
    // minute and C follows Kafka).
    let rt = client::runtime();
    let mut ws = Ws::connect(&rt, &c.base);
    assert_eq!(ws.init(&ws_key, "machine-1")["status"], 1);
    assert_eq!(ws.call(json!({"type": 17, "id": 1000, "subscribed": true}))["status"], 1);
    revocation_is_pushed(&m, &license, b, &mut ws, 0);
    assert_eq!(metric(c, "licensd_log_source{source=\"kafka\"}"), 1.0, "node C still follows Kafka");
    activated_on(c, &m, &license);
    for key in &keys {
        assert_eq!(validate(c, &m.app_id, &m.app_secret, key, "machine-1").0, 200, "{key} on node C");
    }
    drop(ws);
    for (i, node) in nodes.into_iter().enumerate() {
        node.terminate();
        assert_model_matches_a_rebuild(&cluster.nodes[i], ["node-a", "node-b", "node-c"][i]);
    }
}
