//! The public auth contract byte by byte, with a plain HTTP client: envelopes and signatures,
//! error bodies, replay protection across restarts, rate limits, tokens, TTLs and billing.

mod common;

use base64::{engine::general_purpose, Engine};
use common::{Merchant, World};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde_json::{json, Value};

const RELAXED: &[(&str, &str)] =
    &[("LICENSD_VALIDATE_PER_KEY", "1000"), ("LICENSD_VALIDATE_PER_IP", "1000"), ("LICENSD_HEARTBEAT_PER_KEY", "1000")];

fn validate_body(m: &Merchant, key: &str, hwid: &str, nonce: &str) -> Value {
    json!({ "appId": m.app_id, "appSecret": m.app_secret, "licenseKey": key, "hwid": hwid, "nonce": nonce })
}

fn nonce(n: u32) -> String {
    format!("{n:032x}")
}

/// Checks the signature and returns the decoded payload.
fn verified_payload(m: &Merchant, envelope: &Value) -> Value {
    assert_eq!(envelope["status"], "ok", "{envelope}");
    let payload = envelope["payload"].as_str().unwrap();
    let signature = general_purpose::STANDARD.decode(envelope["signature"].as_str().unwrap()).unwrap();
    let key: [u8; 32] = general_purpose::STANDARD.decode(&m.public_key).unwrap().try_into().unwrap();
    let key = VerifyingKey::from_bytes(&key).unwrap();
    key.verify(payload.as_bytes(), &Signature::from_slice(&signature).unwrap())
        .expect("signature over the base64 text");
    serde_json::from_slice(&general_purpose::STANDARD.decode(payload).unwrap()).unwrap()
}

fn token_claims(token: &str) -> Value {
    let body = token.split('.').next().unwrap();
    serde_json::from_slice(&general_purpose::URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap()
}

#[test]
fn validate_answers_a_signed_payload_in_the_sdk_field_order() {
    let w = World::new(RELAXED, 100);
    let key = w.merchant.license(w.server(), json!({ "label": "L" }));
    let mut body = validate_body(&w.merchant, &key, "hw", &nonce(1));
    body["ttlSeconds"] = json!(5);
    let response =
        reqwest::blocking::Client::new().post(format!("{}/auth/validate", w.server().base)).json(&body).send().unwrap();
    assert_eq!(response.status(), 200);
    let remaining: u32 = response.headers()["X-RateLimit-Remaining"].to_str().unwrap().parse().unwrap();
    assert!(remaining < 1000);
    let envelope: Value = response.json().unwrap();
    let raw_payload =
        String::from_utf8(general_purpose::STANDARD.decode(envelope["payload"].as_str().unwrap()).unwrap()).unwrap();
    let payload = verified_payload(&w.merchant, &envelope);
    assert!(raw_payload.starts_with(r#"{"sessionToken":"#), "{raw_payload}");
    assert!(raw_payload.find(r#""nonce""#).unwrap() < raw_payload.find(r#""appVariables""#).unwrap());
    assert!(raw_payload.contains(r#""licenseExpiresAt":null"#), "explicit null for lifetime licenses");
    assert!(!raw_payload.contains("\\u"), "no \\u escapes");
    assert_eq!(payload["nonce"], nonce(1));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expires = payload["expiresIn"].as_u64().unwrap();
    assert!((now + 3590..=now + 3610).contains(&expires), "a 5 s TTL is clamped up to an hour");
    assert_eq!(token_claims(payload["sessionToken"].as_str().unwrap())["exp"].as_u64(), Some(expires));
    assert_eq!((payload["maxHwidSlots"].as_u64(), payload["hwidCount"].as_u64()), (Some(1), Some(1)));
    assert_eq!(envelope["keyId"].as_str().map(|k| !k.is_empty()), Some(true));

    body["nonce"] = json!(nonce(2));
    body["ttlSeconds"] = json!(100_000_000);
    let (_, envelope) = w.server().auth("/auth/validate", &body);
    let expires = verified_payload(&w.merchant, &envelope)["expiresIn"].as_u64().unwrap();
    assert!(expires <= now + 604_800 + 10, "clamped down to seven days");
}

#[test]
fn bad_bodies_get_documented_errors_and_change_nothing() {
    let w = World::new(RELAXED, 100);
    // No pooled connections: after refusing an oversized body the server closes the connection,
    // and a reused one would fail the next request.
    let client = reqwest::blocking::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let post = |body: String| {
        // The server answers 413 once the limit is read and closes; a client still uploading can
        // see that close before the answer (a TCP race, not a server fault), so it tries again.
        let mut tries = 0;
        let r = loop {
            tries += 1;
            let sent = client
                .post(format!("{}/auth/validate", w.server().base))
                .header("content-type", "application/json")
                .body(body.clone())
                .send();
            match sent {
                Ok(r) => break r,
                Err(e) if tries < 5 => eprintln!("transport error, retrying: {e}"),
                Err(e) => panic!("{e}"),
            }
        };
        (r.status().as_u16(), r.json::<Value>().unwrap_or(Value::Null))
    };
    let (status, error) = post("{not json".into());
    assert_eq!((status, error), (400, json!({"status": "failed", "error": "malformed_request"})));
    let (status, error) = post(r#"{"appId": 5, "hwid": ""}"#.into());
    assert_eq!((status, error["error"].as_str()), (400, Some("bad_request")));
    let fields: Vec<&str> = error["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["appId", "appSecret", "licenseKey", "hwid", "nonce"]);
    let (status, error) = post(format!(r#"{{"appId": "{}"}}"#, "x".repeat(200_000)));
    assert_eq!((status, error["error"].as_str()), (413, Some("payload_too_large")));
    let (status, error) = post(r#"[1, 2]"#.into());
    assert_eq!((status, error["error"].as_str()), (400, Some("bad_request")));
}

#[test]
fn a_replayed_nonce_is_refused_even_after_a_restart() {
    let w = World::new(RELAXED, 100);
    let key = w.merchant.license(w.server(), json!({}));
    let body = validate_body(&w.merchant, &key, "hw", &nonce(7));
    assert_eq!(w.server().auth("/auth/validate", &body).0, 200);
    let (status, error) = w.server().auth("/auth/validate", &body);
    assert_eq!((status, error), (401, json!({"status": "failed", "error": "replay_detected"})));

    let mut w = w;
    w.server.take().unwrap().kill();
    let restarted = w.deployment.start_with(RELAXED);
    let (status, error) = restarted.auth("/auth/validate", &body);
    assert_eq!((status, error["error"].as_str()), (401, Some("replay_detected")), "remembered across restarts");
    assert_eq!(restarted.auth("/auth/validate", &validate_body(&w.merchant, &key, "hw", &nonce(8))).0, 200);
}

#[test]
fn documented_rate_limits_apply_per_license_key() {
    let w = World::new(&[], 100);
    let key = w.merchant.license(w.server(), json!({}));
    for n in 0..5 {
        let (status, _) = w.server().auth("/auth/validate", &validate_body(&w.merchant, &key, "hw", &nonce(n)));
        assert_eq!(status, 200, "request {n} is within 5/min per key");
    }
    let (status, error) = w.server().auth("/auth/validate", &validate_body(&w.merchant, &key, "hw", &nonce(99)));
    assert_eq!((status, error), (429, json!({"status": "failed", "error": "rate_limited"})));
    let other = w.merchant.license(w.server(), json!({}));
    assert_eq!(w.server().auth("/auth/validate", &validate_body(&w.merchant, &other, "hw", &nonce(100))).0, 200);
}

#[test]
fn heartbeats_refresh_check_the_license_and_bill_every_tenth() {
    let w = World::new(RELAXED, 100);
    let key = w.merchant.license(w.server(), json!({ "maxHwidSlots": 2 }));
    let mut body = validate_body(&w.merchant, &key, "hw", &nonce(1));
    body["ttlSeconds"] = json!(7200);
    let (_, envelope) = w.server().auth("/auth/validate", &body);
    let mut token = verified_payload(&w.merchant, &envelope)["sessionToken"].as_str().unwrap().to_string();
    let beat = |token: &str, hwid: &str, n: u32| {
        w.server().auth(
            "/auth/heartbeat",
            &json!({ "appId": w.merchant.app_id, "sessionToken": token, "hwid": hwid, "nonce": nonce(n) }),
        )
    };
    for n in 0..10 {
        let (status, envelope) = beat(&token, "hw", n);
        assert_eq!(status, 200, "{envelope}");
        let payload = verified_payload(&w.merchant, &envelope);
        assert_eq!(payload["nonce"], nonce(n), "the nonce is echoed");
        assert_eq!(token_claims(payload["sessionToken"].as_str().unwrap())["ttl"], 7200, "the TTL is remembered");
        token = payload["sessionToken"].as_str().unwrap().to_string();
    }
    // 100 granted, 1 validation, 10 heartbeats = 1 credit; granting 1 more reports the ledger.
    let grant = w.deployment.cli(&["credits", "grant", "--account", &w.merchant.account_id, "--amount", "1"]);
    assert_eq!(grant["balance"], 99, "{grant}");

    let (status, error) = beat(&token, "another-machine", 50);
    assert_eq!((status, error["error"].as_str()), (403, Some("hwid_mismatch")), "a token is bound to its machine");
    let mut forged = token.clone();
    forged.insert(3, 'x');
    assert_eq!(beat(&forged, "hw", 51).1["error"], "session_expired");
    w.merchant.put(w.server(), &format!("/v1/licenses/{key}"), json!({ "action": "reset-hwid" }));
    assert_eq!(beat(&token, "hw", 52).1["error"], "hwid_mismatch", "a reset unbinds the machine");
    let (status, _) = w.server().auth("/auth/validate", &validate_body(&w.merchant, &key, "hw", &nonce(60)));
    assert_eq!(status, 200);
    w.merchant.put(w.server(), &format!("/v1/apps/{}/security", w.merchant.app_id), json!({ "hwidBlacklist": ["hw"] }));
    assert_eq!(beat(&token, "hw", 53).1["error"], "blocked");

    let (_, metrics) = w.server().get_text("/metrics");
    assert!(
        metrics.contains("\nlicensd_hot_path_sql_reads_total 0\n"),
        "validate and heartbeat read no SQL:\n{metrics}"
    );
}

#[test]
fn burn_caps_and_disabled_apps_stop_authentication() {
    let w = World::new(RELAXED, 100);
    let key = w.merchant.license(w.server(), json!({ "maxHwidSlots": 5 }));
    let app = format!("/v1/apps/{}", w.merchant.app_id);
    w.merchant.put(w.server(), &format!("{app}/settings"), json!({ "hourlyBurnCap": 2 }));
    for n in 0..2 {
        assert_eq!(w.server().auth("/auth/validate", &validate_body(&w.merchant, &key, "hw", &nonce(n))).0, 200);
    }
    let (status, error) = w.server().auth("/auth/validate", &validate_body(&w.merchant, &key, "hw", &nonce(3)));
    assert_eq!((status, error["error"].as_str()), (429, Some("app_burn_cap_reached")));
    w.merchant.put(w.server(), &format!("{app}/settings"), json!({ "hourlyBurnCap": null, "dailyBurnCap": 10 }));
    assert_eq!(w.server().auth("/auth/validate", &validate_body(&w.merchant, &key, "hw", &nonce(4))).0, 200);

    w.merchant.put(w.server(), &app, json!({ "disabled": true }));
    let (status, error) = w.server().auth("/auth/validate", &validate_body(&w.merchant, &key, "hw", &nonce(5)));
    assert_eq!((status, error["error"].as_str()), (403, Some("app_disabled")));
    w.merchant.put(w.server(), &app, json!({ "disabled": false }));
    assert_eq!(w.server().auth("/auth/validate", &validate_body(&w.merchant, &key, "hw", &nonce(6))).0, 200);

    // A suspended account (set by another process: the server follows the log within a poll).
    w.deployment.cli(&["account", "suspend", "--account", &w.merchant.account_id]);
    let answer =
        eventually(|n| w.server().auth("/auth/validate", &validate_body(&w.merchant, &key, "hw", &nonce(n))), 403);
    assert_eq!(answer["error"], "app_disabled");
    assert_eq!(w.server().get(&w.merchant.api_key, &app).0, 403, "its API keys are refused too");
    w.deployment.cli(&["account", "reinstate", "--account", &w.merchant.account_id]);
    eventually(|n| w.server().auth("/auth/validate", &validate_body(&w.merchant, &key, "hw", &nonce(n))), 200);
}

/// Repeats `call` (with a fresh counter for nonces) until it answers `status`, for up to 5 s.
fn eventually(call: impl Fn(u32) -> (u16, Value), status: u16) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut n = 1000;
    loop {
        let (got, body) = call(n);
        if got == status || std::time::Instant::now() > deadline {
            assert_eq!(got, status, "{body}");
            return body;
        }
        n += 1;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
