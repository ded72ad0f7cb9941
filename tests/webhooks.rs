//! Webhooks end to end: a real HTTP receiver verifies every signature as the docs' snippet does;
//! failures are retried with backoff; a kill mid-delivery still delivers after the restart.

mod common;

use common::{each_backend, World};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FAST_RETRIES: &[(&str, &str)] = &[
    ("LICENSD_WEBHOOK_ALLOW_HTTP_LOOPBACK", "true"),
    ("LICENSD_WEBHOOK_RETRY_BASE_MS", "100"),
    ("LICENSD_VALIDATE_PER_KEY", "1000"),
];

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    event: String,
    body: Value,
    signature_valid: bool,
}

/// A webhook receiver on 127.0.0.1 answering with the scripted statuses, then 200. A status of
/// 0 means "hang for two seconds, then drop the connection".
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(secret: Arc<Mutex<String>>, mut script: Vec<u16>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        script.reverse();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = std::collections::HashMap::new();
                let mut line = String::new();
                let _ = reader.read_line(&mut line); // request line
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
                    }
                }
                let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let signature_valid = verify(&secret.lock().unwrap(), &headers, &body);
                let event = headers.get("x-authforge-event").cloned().unwrap_or_default();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                log.lock().unwrap().push(Received { event, body, signature_valid });
                let status = script.pop().unwrap_or(200);
                if status == 0 {
                    std::thread::sleep(Duration::from_secs(2));
                    continue;
                }
                let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        Self { url, received }
    }

    fn wait_for(&self, count: usize, what: impl Fn(&Received) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let matching: Vec<_> = self.received.lock().unwrap().iter().filter(|r| what(r)).cloned().collect();
            if matching.len() >= count || Instant::now() > deadline {
                return matching;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The docs' verification: hex HMAC-SHA256 of the raw body, constant-time compare, fresh timestamp.
fn verify(secret: &str, headers: &std::collections::HashMap<String, String>, body: &[u8]) -> bool {
    let header = headers.get("x-authforge-signature").cloned().unwrap_or_default();
    let Some(signature) = header.strip_prefix("sha256=") else { return false };
    let Ok(signature) = hex::decode(signature) else { return false };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let fresh = headers.get("x-authforge-timestamp").is_some_and(|t| !t.is_empty());
    fresh && mac.verify_slice(&signature).is_ok()
}

trait Hooks {
    fn hooks(&self) -> String;
    fn subscribe(&self, receiver: &Receiver, secret: &Arc<Mutex<String>>, events: &[&str]) -> String;
}

impl Hooks for World {
    fn hooks(&self) -> String {
        format!("/v1/apps/{}/webhooks", self.merchant.app_id)
    }

    /// Registers a webhook for `events` at the receiver and hands the receiver its secret.
    fn subscribe(&self, receiver: &Receiver, secret: &Arc<Mutex<String>>, events: &[&str]) -> String {
        let (status, created) = self.server().post(
            &self.merchant.api_key,
            &self.hooks(),
            &json!({ "url": receiver.url, "events": events }),
        );
        assert_eq!(status, 201, "{created}");
        assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
        *secret.lock().unwrap() = created["secret"].as_str().unwrap().to_string();
        created["webhookId"].as_str().unwrap().to_string()
    }
}

/// A receiver answering `script` (see [`Receiver::start`]), subscribed to `events` of the
/// merchant's app and verifying with the webhook's secret.
fn subscribed(server: &common::Server, merchant: &common::Merchant, events: &[&str], script: Vec<u16>) -> Receiver {
    let secret = Arc::new(Mutex::new(String::new()));
    let receiver = Receiver::start(secret.clone(), script);
    let hooks = format!("/v1/apps/{}/webhooks", merchant.app_id);
    let (status, created) = server.post(&merchant.api_key, &hooks, &json!({ "url": receiver.url, "events": events }));
    assert_eq!(status, 201, "{created}");
    *secret.lock().unwrap() = created["secret"].as_str().unwrap().to_string();
    receiver
}

#[test]
fn license_events_arrive_signed_and_the_api_manages_webhooks() {
    let w = World::new(FAST_RETRIES, 100);
    let secret = Arc::new(Mutex::new(String::new()));
    let receiver = Receiver::start(secret.clone(), vec![]);
    let events = ["license.created", "license.revoked", "license.validated", "license.hwid_bound"];
    let webhook = w.subscribe(&receiver, &secret, &events);

    let key = w.merchant.license(w.server(), json!({}));
    let validate = json!({ "appId": w.merchant.app_id, "appSecret": w.merchant.app_secret, "licenseKey": key,
                           "hwid": "machine-9", "nonce": "00000000000000000000000000000001" });
    assert_eq!(w.server().auth("/auth/validate", &validate).0, 200);
    w.merchant.put(w.server(), &format!("/v1/licenses/{key}"), json!({ "action": "revoke" }));

    let got = receiver.wait_for(4, |r| r.body["data"]["licenseKey"] == key.as_str());
    // Deliveries of one moment go out concurrently: compare as a set.
    let mut names: Vec<&str> = got.iter().map(|r| r.event.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["license.created", "license.hwid_bound", "license.revoked", "license.validated"]);
    assert!(got.iter().all(|r| r.signature_valid), "every delivery verifies");
    let by_event = |name: &str| got.iter().find(|r| r.event == name).unwrap().body["data"].clone();
    assert_eq!(by_event("license.hwid_bound")["hwid"], "machine-9");
    assert_eq!(by_event("license.validated")["hwid"], "machine-9", "the machine that logged in");
    assert_eq!(by_event("license.revoked")["status"], "revoked");
    assert_eq!(by_event("license.created")["appId"], w.merchant.app_id.as_str());

    let (_, listed) = w.server().get(&w.merchant.api_key, &w.hooks());
    let listed = &listed["webhooks"][0];
    assert_eq!(
        (listed["webhookId"].as_str(), listed["lastDeliveryStatus"].as_u64()),
        (Some(webhook.as_str()), Some(200))
    );
    assert!(listed.get("secret").is_none(), "lists never show the secret");

    let (_, tested) = w.server().post(&w.merchant.api_key, &format!("{}/{webhook}/test", w.hooks()), &json!({}));
    assert_eq!(tested, json!({ "ok": true, "status": 200 }));
    assert!(receiver.wait_for(1, |r| r.event == "test.ping")[0].signature_valid);

    // Unsubscribed events are not sent; a disabled webhook receives nothing.
    let (status, _) = w.server().send(
        "PUT",
        &w.merchant.api_key,
        &format!("{}/{webhook}", w.hooks()),
        Some(&json!({ "enabled": false })),
    );
    assert_eq!(status, 200);
    let quiet = w.merchant.license(w.server(), json!({}));
    std::thread::sleep(Duration::from_millis(800));
    assert!(receiver.wait_for(1, |r| r.body["data"]["licenseKey"] == quiet.as_str()).is_empty());
    // Nor a test: the documented refusal instead of a ping.
    let (status, refused) = w.server().post(&w.merchant.api_key, &format!("{}/{webhook}/test", w.hooks()), &json!({}));
    assert_eq!((status, refused["error"].as_str()), (409, Some("conflict")), "{refused}");
    std::thread::sleep(Duration::from_millis(300));
    let pings = receiver.received.lock().unwrap().iter().filter(|r| r.event == "test.ping").count();
    assert_eq!(pings, 1, "no second ping");
}

#[test]
fn webhook_requests_are_validated() {
    let w = World::new(FAST_RETRIES, 100);
    let cases = [
        (json!({ "url": "http://example.com/hook", "events": ["license.created"] }), "https"),
        (json!({ "url": "https://example.com/hook", "events": [] }), "at least one"),
        (json!({ "url": "https://example.com/hook", "events": ["license.exploded"] }), "unknown event"),
        (json!({ "url": "https://example.com/hook" }), "events"),
        (json!({ "url": "https://169.254.169.254/latest", "events": ["license.created"] }), "not allowed"),
        (json!({ "url": "https://10.0.0.7/hook", "events": ["license.created"] }), "not allowed"),
    ];
    for (body, mentions) in cases {
        let (status, error) = w.server().post(&w.merchant.api_key, &w.hooks(), &body);
        assert_eq!(status, 400, "{body}");
        assert!(error["message"].as_str().unwrap().contains(mentions), "{error}");
    }
    for i in 0..5 {
        let body = json!({ "url": format!("https://example.com/{i}"), "events": ["license.created"] });
        assert_eq!(w.server().post(&w.merchant.api_key, &w.hooks(), &body).0, 201);
    }
    let sixth = json!({ "url": "https://example.com/6", "events": ["license.created"] });
    let (status, error) = w.server().post(&w.merchant.api_key, &w.hooks(), &sixth);
    assert_eq!(status, 400, "{error}");

    // Another account cannot see or touch them.
    let other = w.deployment.merchant_with_credits(w.server(), "other@example.com", 0);
    assert_eq!(w.server().get(&other.api_key, &w.hooks()).0, 403);
    assert_eq!(w.server().post(&other.api_key, &w.hooks(), &sixth).0, 403);
}

/// A license's deliveries to one webhook go in log order: while its `license.created` fails and
/// waits for its retries, the `license.validated` after it is held back.
#[test]
fn a_failing_delivery_holds_the_later_ones_of_the_same_license() {
    each_backend(|deployment| {
        let server = deployment.start_with(FAST_RETRIES);
        let merchant = deployment.merchant_with_credits(&server, "order@example.com", 100);
        let receiver = subscribed(&server, &merchant, &["license.created", "license.validated"], vec![500, 503, 500]);

        let key = merchant.license(&server, json!({}));
        let validate = json!({ "appId": merchant.app_id, "appSecret": merchant.app_secret, "licenseKey": key,
                               "hwid": "machine-3", "nonce": "00000000000000000000000000000003" });
        assert_eq!(server.auth("/auth/validate", &validate).0, 200);

        let got = receiver.wait_for(5, |r| r.body["data"]["licenseKey"] == key.as_str());
        let order: Vec<&str> = got.iter().map(|r| r.event.as_str()).collect();
        assert_eq!(
            order,
            ["license.created", "license.created", "license.created", "license.created", "license.validated"],
            "three failed attempts and the success of license.created, then license.validated"
        );
        assert!(got.iter().all(|r| r.signature_valid));
    });
}

#[test]
fn releasing_one_machine_fires_hwid_reset_naming_it_and_a_full_reset_names_none() {
    each_backend(|deployment| {
        let server = deployment.start_with(FAST_RETRIES);
        let merchant = deployment.merchant_with_credits(&server, "release@example.com", 100);
        let receiver = subscribed(&server, &merchant, &["license.hwid_reset"], vec![]);

        let key = merchant.license(&server, json!({ "maxHwidSlots": 2 }));
        for (n, hwid) in ["machine-1", "machine-2"].into_iter().enumerate() {
            let validate = json!({ "appId": merchant.app_id, "appSecret": merchant.app_secret, "licenseKey": key,
                                   "hwid": hwid, "nonce": format!("{:032x}", n + 1) });
            assert_eq!(server.auth("/auth/validate", &validate).0, 200);
        }
        let path = format!("/v1/licenses/{key}/machines/machine-2");
        assert_eq!(server.send("DELETE", &merchant.api_key, &path, None).0, 200);
        let got = receiver.wait_for(1, |r| r.body["data"]["licenseKey"] == key.as_str());
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].event, "license.hwid_reset");
        assert!(got[0].signature_valid);
        assert_eq!(got[0].body["data"]["hwid"], "machine-2", "the released machine is named");
        assert_eq!(got[0].body["data"]["status"], "active");

        merchant.put(&server, &format!("/v1/licenses/{key}"), json!({ "action": "reset-hwid" }));
        let got = receiver.wait_for(2, |r| r.body["data"]["licenseKey"] == key.as_str());
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[1].body["data"]["hwid"], Value::Null, "a full reset names no machine");
    });
}

#[test]
fn a_receiver_failing_three_times_still_gets_the_event() {
    let w = World::new(FAST_RETRIES, 100);
    let secret = Arc::new(Mutex::new(String::new()));
    let receiver = Receiver::start(secret.clone(), vec![500, 503, 500]);
    let webhook = w.subscribe(&receiver, &secret, &["license.created"]);
    let key = w.merchant.license(w.server(), json!({}));
    let got = receiver.wait_for(4, |r| r.body["data"]["licenseKey"] == key.as_str());
    assert_eq!(got.len(), 4, "three failures, then success");
    assert!(got.iter().all(|r| r.signature_valid && r.body == got[0].body), "the same signed body each time");

    let log = format!("{}/{webhook}/deliveries", w.hooks());
    // The receiver saw the fourth request before licensd recorded its outcome: poll the log.
    let deadline = Instant::now() + Duration::from_secs(10);
    let delivery = loop {
        let (_, deliveries) = w.server().get(&w.merchant.api_key, &log);
        let delivery = deliveries["deliveries"][0].clone();
        if delivery["status"] == "delivered" || Instant::now() > deadline {
            break delivery;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let outcome = (delivery["status"].as_str(), delivery["attempts"].as_u64(), delivery["lastStatus"].as_u64());
    assert_eq!(outcome, (Some("delivered"), Some(4), Some(200)));

    let redeliver = format!("{log}/{}/redeliver", delivery["deliveryId"].as_str().unwrap());
    assert_eq!(w.server().post(&w.merchant.api_key, &redeliver, &json!({})).0, 200);
    assert_eq!(receiver.wait_for(5, |r| r.body["data"]["licenseKey"] == key.as_str()).len(), 5, "redelivered");
}

#[test]
fn a_delivery_interrupted_by_a_kill_completes_after_the_restart() {
    let mut w = World::new(FAST_RETRIES, 100);
    let secret = Arc::new(Mutex::new(String::new()));
    let receiver = Receiver::start(secret.clone(), vec![0]); // the first attempt hangs
    w.subscribe(&receiver, &secret, &["license.created"]);
    let key = w.merchant.license(w.server(), json!({}));
    assert_eq!(receiver.wait_for(1, |_| true).len(), 1, "the first attempt reached the receiver");
    w.server.take().unwrap().kill();
    w.server = Some(w.deployment.start_with(FAST_RETRIES));
    let got = receiver.wait_for(2, |r| r.body["data"]["licenseKey"] == key.as_str());
    assert_eq!(got.len(), 2, "delivered again after the restart (at least once)");
    assert!(got[1].signature_valid);
}

/// How a hostile receiver treats each connection.
#[derive(Clone, Copy)]
enum Hostile {
    /// Accepts and never answers (the delivery times out).
    Hang,
    /// Closes at once without reading the request: the kernel resets the connection.
    Reset,
    /// Answers 500, every time.
    Fail,
}

/// A receiver that misbehaves on every connection; counts the connections it got.
fn hostile_receiver(behaviour: Hostile) -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let count = Arc::new(Mutex::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            *seen.lock().unwrap() += 1;
            match behaviour {
                Hostile::Hang => held.push(stream),
                Hostile::Reset => {
                    std::thread::sleep(Duration::from_millis(20)); // let the request arrive unread
                    drop(stream);
                }
                Hostile::Fail => {
                    let mut stream = stream;
                    let mut request = [0u8; 65536];
                    let _ = stream.read(&mut request);
                    let _ = stream.write_all(b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                }
            }
        }
    });
    (url, count)
}

/// Receivers that hang, reset and fail for ever next to a healthy one: the healthy one gets
/// every event promptly, each hostile one gets exactly `max attempts` per event and no more, and
/// the delivery log records each failure as what it was.
#[test]
fn hanging_resetting_and_failing_receivers_starve_no_one_and_are_retried_a_bounded_number_of_times() {
    const ATTEMPTS: usize = 3;
    const EVENTS: usize = 8;
    let env = [
        ("LICENSD_WEBHOOK_ALLOW_HTTP_LOOPBACK", "true"),
        ("LICENSD_WEBHOOK_RETRY_BASE_MS", "100"),
        ("LICENSD_WEBHOOK_MAX_ATTEMPTS", "3"),
        ("LICENSD_WEBHOOK_TIMEOUT_MS", "3000"),
    ];
    let w = World::new(&env, 100);
    let mut hostile = Vec::new();
    for (behaviour, name) in [(Hostile::Hang, "hang"), (Hostile::Reset, "reset"), (Hostile::Fail, "fail")] {
        let (url, count) = hostile_receiver(behaviour);
        let (status, created) =
            w.server().post(&w.merchant.api_key, &w.hooks(), &json!({ "url": url, "events": ["license.created"] }));
        assert_eq!(status, 201, "{created}");
        hostile.push((name, created["webhookId"].as_str().unwrap().to_string(), count));
    }
    let secret = Arc::new(Mutex::new(String::new()));
    let healthy = Receiver::start(secret.clone(), vec![]);
    w.subscribe(&healthy, &secret, &["license.created"]);

    let started = Instant::now();
    for _ in 0..EVENTS {
        w.merchant.license(w.server(), json!({}));
    }
    let got = healthy.wait_for(EVENTS, |r| r.event == "license.created" && r.signature_valid);
    let healthy_took = started.elapsed();
    assert_eq!(got.len(), EVENTS, "the healthy receiver got every event while the others misbehaved");
    // Not merely eventually: before any hanging attempt had even timed out.
    let (_, hanging) = w.server().get(&w.merchant.api_key, &format!("{}/{}/deliveries", w.hooks(), hostile[0].1));
    let finished = hanging["deliveries"].as_array().unwrap().iter().filter(|d| d["attempts"] != 0).count();
    assert_eq!(finished, 0, "the healthy receiver waited for hanging deliveries: {hanging}");

    let deadline = Instant::now() + Duration::from_secs(90);
    for (name, webhook, count) in &hostile {
        let log = format!("{}/{webhook}/deliveries?limit=100", w.hooks());
        let deliveries = loop {
            let (_, answer) = w.server().get(&w.merchant.api_key, &log);
            let deliveries = answer["deliveries"].as_array().cloned().unwrap_or_default();
            let settled = deliveries.len() == EVENTS && deliveries.iter().all(|d| d["status"] == "failed");
            if settled || Instant::now() > deadline {
                break deliveries;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(deliveries.len(), EVENTS, "{name}: one delivery per event");
        for delivery in &deliveries {
            assert_eq!(delivery["status"], "failed", "{name}: {delivery}");
            assert_eq!(delivery["attempts"], ATTEMPTS, "{name}: {delivery}");
            let error = delivery["lastError"].as_str().unwrap_or_default().to_string();
            let truthful = match *name {
                "hang" => error == "timeout",
                "reset" => error.starts_with("connection failed"),
                _ => delivery["lastStatus"] == 500 && error.contains("500"),
            };
            assert!(truthful, "{name}: the log says {delivery}");
        }
        std::thread::sleep(Duration::from_millis(500)); // nothing more arrives once failed
        assert_eq!(*count.lock().unwrap(), EVENTS * ATTEMPTS, "{name}: exactly {ATTEMPTS} attempts per event");
    }
    eprintln!(
        "healthy receiver: {EVENTS} events in {:.2} s beside hanging, resetting and failing receivers \
         ({} attempts each, all recorded as failed)",
        healthy_took.as_secs_f64(),
        EVENTS * ATTEMPTS
    );
}
