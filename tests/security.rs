//! Adversaries against the real binary: another tenant on every Developer API operation, forged,
//! expired and borrowed session tokens, a portal probed for key existence, and hostile HTTP
//! (deep nesting, invalid UTF-8, huge and numerous headers). Nothing gets in, nothing changes,
//! and the server keeps serving.

mod common;

use common::{Deployment, Merchant, Server, TempDir};
use licensd_api::auth::token::{hwid_digest, Claims, TokenKey};
use licensd_commands::MasterKey;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::Duration;

use common::RELAXED_LIMITS as RELAXED;

struct Tenants {
    _dir: TempDir,
    deployment: Deployment,
    server: Server,
    a: Merchant,
    b: Merchant,
}

fn tenants() -> Tenants {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start_with(RELAXED);
    let a = deployment.merchant_with_credits(&server, "a@example.com", 1000);
    let b = deployment.merchant_with_credits(&server, "b@example.com", 1000);
    Tenants { _dir: dir, deployment, server, a, b }
}

fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn validate(server: &Server, m: &Merchant, key: &str, hwid: &str) -> (u16, Value) {
    let body =
        json!({ "appId": m.app_id, "appSecret": m.app_secret, "licenseKey": key, "hwid": hwid, "nonce": nonce() });
    server.auth("/auth/validate", &body)
}

fn heartbeat(server: &Server, app_id: &str, token: &str, hwid: &str) -> (u16, Value) {
    let body = json!({ "appId": app_id, "sessionToken": token, "hwid": hwid, "nonce": nonce() });
    server.auth("/auth/heartbeat", &body)
}

fn session_token(answer: &Value) -> String {
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD.decode(answer["payload"].as_str().unwrap()).unwrap();
    serde_json::from_slice::<Value>(&payload).unwrap()["sessionToken"].as_str().unwrap().to_string()
}

/// What `/metrics` says the server holds, to show a refused request changed nothing.
#[test]
fn session_tokens_that_are_forged_expired_or_borrowed_are_refused() {
    let t = tenants();
    let key_a = t.a.license(&t.server, json!({}));
    let (status, answer) = validate(&t.server, &t.a, &key_a, "machine-a");
    assert_eq!(status, 200, "{answer}");
    let token = session_token(&answer);
    assert_eq!(heartbeat(&t.server, &t.a.app_id, &token, "machine-a").0, 200, "the genuine token works");

    let refused = |app: &str, token: &str, hwid: &str| heartbeat(&t.server, app, token, hwid).1["error"].clone();
    // Another app's id with A's token: a token is bound to the app it was issued for.
    assert_eq!(refused(&t.b.app_id, &token, "machine-a"), "session_expired");
    // The same token from another machine.
    assert_eq!(refused(&t.a.app_id, &token, "machine-b"), "hwid_mismatch");
    // Every single-character edit of the token.
    for position in (0..token.len()).step_by(7) {
        let mut forged: Vec<char> = token.chars().collect();
        forged[position] = if forged[position] == 'A' { 'B' } else { 'A' };
        let forged: String = forged.into_iter().collect();
        assert_eq!(refused(&t.a.app_id, &forged, "machine-a"), "session_expired", "edited at {position}");
    }
    assert_eq!(refused(&t.a.app_id, "", "machine-a"), Value::from("bad_request"));
    assert_eq!(refused(&t.a.app_id, "x.y", "machine-a"), "session_expired");

    // Tokens minted with the deployment's real key: expired, and for A's license under B's app.
    let master = MasterKey::load_or_generate(&t.deployment.data_dir).unwrap().0;
    let minter = TokenKey::new(master.derive_token("licensd session token v1"));
    let now = chrono::Utc::now().timestamp();
    let claims = |app: &str, exp: i64| Claims {
        exp,
        expires_in: exp,
        app: app.to_string(),
        lic: key_a.clone(),
        hw: hwid_digest("machine-a"),
        ttl: 3600,
        iat: now - 7200,
    };
    let expired = minter.mint(&claims(&t.a.app_id, now - 1));
    assert_eq!(refused(&t.a.app_id, &expired, "machine-a"), "session_expired");
    let fresh = minter.mint(&claims(&t.a.app_id, now + 600));
    assert_eq!(heartbeat(&t.server, &t.a.app_id, &fresh, "machine-a").0, 200, "the minting key is the server's");
    let cross_app = minter.mint(&claims(&t.b.app_id, now + 600));
    assert_eq!(refused(&t.b.app_id, &cross_app, "machine-a"), "invalid_key", "B's app cannot reach A's license");
    // A key other than the server's signs nothing it accepts.
    let stranger = TokenKey::new([42; 32]).mint(&claims(&t.a.app_id, now + 600));
    assert_eq!(refused(&t.a.app_id, &stranger, "machine-a"), "session_expired");
}

#[test]
fn an_app_cannot_authenticate_another_apps_licenses() {
    let t = tenants();
    let key_a = t.a.license(&t.server, json!({}));
    let before = t.server.written();
    let (status, answer) = validate(&t.server, &t.b, &key_a, "machine");
    assert_eq!((status, answer["error"].as_str()), (401, Some("invalid_key")), "{answer}");
    let mut wrong_secret = t.b.clone();
    wrong_secret.app_id = t.a.app_id.clone();
    let (status, answer) = validate(&t.server, &wrong_secret, &key_a, "machine");
    assert_eq!((status, answer["error"].as_str()), (401, Some("invalid_app")), "B's secret is not A's: {answer}");
    assert_eq!(t.server.written(), before, "no HWID was bound");
}

/// Every Developer API operation in the OpenAPI document, called by tenant B on tenant A's
/// resources: none succeeds, none answers 5xx, no answer mentions anything of A's, and A's
/// resources read the same afterwards.
#[test]
fn another_tenant_gets_nothing_from_any_developer_api_operation() {
    let t = tenants();
    let a = &t.a;
    let key_a = a.license(&t.server, json!({ "label": "secret-label-of-a" }));
    let (status, webhook) = t.server.post(
        &a.api_key,
        &format!("/v1/apps/{}/webhooks", a.app_id),
        &json!({ "url": "http://127.0.0.1:9/hook", "events": ["license.created"] }),
    );
    assert_eq!(status, 201, "{webhook}");
    let webhook_id = webhook["webhookId"].as_str().or(webhook["id"].as_str()).unwrap().to_string();
    let (status, mapping) = t.server.post(
        &a.api_key,
        "/v1/commerce/mappings",
        &json!({ "appId": a.app_id, "provider": "stripe", "priceId": "price_a", "kind": "one_time" }),
    );
    assert_eq!(status, 201, "{mapping}");
    let mapping_id = mapping["mappingId"].as_str().or(mapping["id"].as_str()).unwrap().to_string();
    let (status, user) = t.server.post(
        &a.api_key,
        &format!("/v1/apps/{}/users", a.app_id),
        &json!({ "login": "user-of-a", "password": "a long password of a" }),
    );
    assert_eq!(status, 201, "{user}");
    let user_id = user["userId"].as_str().or(user["id"].as_str()).unwrap().to_string();
    let uploaded = reqwest::blocking::Client::new()
        .put(format!("{}/v1/apps/{}/files/secretfile.bin", t.server.base, a.app_id))
        .bearer_auth(&a.api_key)
        .body("the protected bytes of a")
        .send()
        .expect("upload");
    assert_eq!(uploaded.status().as_u16(), 201);
    let (_, keys) = t.server.get(&a.api_key, "/v1/api-keys");
    let key_id = keys["apiKeys"][0]["apiKeyId"].as_str().or(keys["apiKeys"][0]["id"].as_str()).unwrap().to_string();

    let secrets_of_a = [
        a.app_id.as_str(),
        &key_a,
        &webhook_id,
        &mapping_id,
        &key_id,
        &user_id,
        &a.account_id,
        "secret-label-of-a",
        "secretfile",
    ];
    let snapshot = |server: &Server| {
        let (_, license) = server.get(&a.api_key, &format!("/v1/licenses/{key_a}"));
        let (_, app) = server.get(&a.api_key, &format!("/v1/apps/{}", a.app_id));
        let (_, hooks) = server.get(&a.api_key, &format!("/v1/apps/{}/webhooks", a.app_id));
        let (_, mappings) = server.get(&a.api_key, "/v1/commerce/mappings");
        let (_, keys) = server.get(&a.api_key, "/v1/api-keys");
        let (_, files) = server.get(&a.api_key, &format!("/v1/apps/{}/files", a.app_id));
        (license, app, hooks, mappings, keys, files)
    };
    let before = snapshot(&t.server);

    let (_, spec) = t.server.get(&a.api_key, "/v1/openapi.json");
    let paths = spec["paths"].as_object().expect("paths");
    let (mut tried, mut controls) = (0, 0);
    for (template, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let path = template
                .replace("{app_id}", &a.app_id)
                .replace("{key}", &key_a)
                .replace("{webhook_id}", &webhook_id)
                .replace("{delivery_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{mapping_id}", &mapping_id)
                .replace("{key_id}", &key_id)
                .replace("{user_id}", &user_id)
                .replace("{event_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{list}", "blacklist")
                .replace("{provider}", "stripe")
                .replace("{name}", "secretfile.bin");
            let path = if template == "/v1/licenses" { format!("{path}?appId={}", a.app_id) } else { path };
            // Bodies that would act on A's app or license if ownership were not checked.
            let body = json!({
                "appId": a.app_id, "licenseKey": key_a, "name": "taken", "action": "revoke", "quantity": 1,
                "provider": "stripe", "priceId": "price_b", "kind": "one_time", "type": "hwid", "value": "x",
                "customerEmail": "a-buyer@example.com", "scopes": ["*"], "url": "http://127.0.0.1:9/b",
                "events": ["license.created"], "email": "b@example.com",
            });
            let with_body = matches!(method.as_str(), "post" | "put");
            let (status, answer) =
                t.server.send(&method.to_uppercase(), &t.b.api_key, &path, with_body.then_some(&body));
            tried += 1;
            assert!(status < 500, "{method} {path}: {status} {answer}");
            let text = answer.to_string();
            for secret in secrets_of_a {
                assert!(!text.contains(secret), "{method} {path} showed B something of A's ({secret}): {text}");
            }
            let addresses_a = template.contains("{app_id}") || template.contains("{key}") || template.contains("_id}");
            let acts_on_a = with_body || template == "/v1/licenses";
            if addresses_a || (acts_on_a && !own_scoped(method, template)) {
                assert!(!(200..300).contains(&status), "{method} {path} let B act on A: {status} {answer}");
            }
            // The control: the same read by A succeeds, so B was refused for being B.
            let random_id = template.contains("{delivery_id}") || template.contains("{event_id}");
            if method == "get" && addresses_a && !random_id {
                let (status, answer) = t.server.get(&a.api_key, &path);
                assert_eq!(status, 200, "A reads {path}: {answer}");
                controls += 1;
            }
        }
    }
    assert!(tried >= 50, "the document lists every operation ({tried} tried)");
    assert!(controls >= 8, "A could read its own resources ({controls} checked)");
    assert_eq!(snapshot(&t.server), before, "A's resources are unchanged");
    eprintln!("{tried} Developer API operations tried as another tenant ({controls} reads checked as the owner)");
}

/// Operations on the caller's own account (its keys, credits, connections, ...): B may succeed,
/// on B's own things, and the body's `appId` is not used.
fn own_scoped(method: &str, template: &str) -> bool {
    matches!(
        (method, template),
        ("post", "/v1/apps")
            | ("post", "/v1/api-keys")
            | ("put", "/v1/credits/settings")
            | ("put", "/v1/commerce/connections/{provider}")
            | ("post", "/v1/commerce/events/replay")
    )
}

#[test]
fn the_portal_answers_alike_whether_or_not_a_key_exists() {
    let t = tenants();
    let key = t.a.license(&t.server, json!({}));
    t.a.put(&t.server, &format!("/v1/licenses/{key}/email"), json!({ "email": "owner@example.com" }));
    let ask = |key: &str, email: &str| {
        let (status, mut answer) =
            t.server.auth("/portal/challenges", &json!({ "appId": t.a.app_id, "licenseKey": key, "email": email }));
        let challenge = answer["challengeId"].as_str().unwrap_or_default().to_string();
        for random in ["challengeId", "requestId"] {
            let value = answer[random].as_str().unwrap_or_default();
            assert!(value.len() >= 32, "{random} looks random: {answer}");
            answer[random] = Value::Null;
        }
        (status, answer, challenge)
    };
    let (status, matching, challenge_real) = ask(&key, "owner@example.com");
    assert_eq!(status, 200);
    let unknown_key = "ZZZZ-ZZZZ-ZZZZ-ZZZZ";
    for (probe_key, email) in
        [(key.as_str(), "someone@example.com"), (unknown_key, "owner@example.com"), ("nonsense", "x@y.z")]
    {
        let (status, answer, _) = ask(probe_key, email);
        assert_eq!((status, &answer), (200, &matching), "{probe_key} / {email} answers like a match");
    }
    // A wrong code fails the same way for the real challenge and for one of a key that does not exist.
    let (_, _, challenge_unknown) = ask(unknown_key, "owner@example.com");
    let sign_in =
        |challenge: &str| t.server.auth("/portal/sessions", &json!({ "challengeId": challenge, "code": "000000" }));
    assert_eq!(sign_in(&challenge_real), sign_in(&challenge_unknown));
    assert_eq!(sign_in(&challenge_unknown).0, 401);
}

/// A raw request on a fresh connection; returns the status line's code (`None`: the server
/// closed the connection without answering, which is also a refusal).
fn raw(server: &Server, request: &[u8]) -> Option<u16> {
    let addr = server.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn post_raw(server: &Server, path: &str, extra_headers: &str, body: &[u8]) -> Option<u16> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nConnection: close\r\n\
         Content-Length: {}\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    raw(server, &request)
}

#[test]
fn hostile_http_is_refused_without_harm() {
    let t = tenants();
    let key = t.a.license(&t.server, json!({}));
    let before = t.server.written();
    let bearer = format!("Authorization: Bearer {}\r\n", t.a.api_key);
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
    let nested_field = |depth: usize| {
        format!(r#"{{"appId":"{}","label":{}{}}}"#, t.a.app_id, "[".repeat(depth), "]".repeat(depth)).into_bytes()
    };
    let invalid_utf8 = [br#"{"appId":""#.as_slice(), &[0xff, 0xfe, 0xc3], br#"","quantity":1}"#].concat();
    // Bodies within the size limit get a clear answer, never a dropped connection.
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("/auth/validate", "", nested(20_000)),
        ("/auth/validate", "", nested_field(5_000)),
        ("/auth/validate", "", invalid_utf8.clone()),
        ("/auth/heartbeat", "", nested(20_000)),
        ("/v1/licenses", &bearer, nested_field(5_000)),
        ("/v1/licenses", &bearer, invalid_utf8.clone()),
        ("/v1/licenses", &bearer, nested(20_000)),
        ("/portal/challenges", "", invalid_utf8),
    ];
    for (path, headers, body) in &cases {
        assert_eq!(post_raw(&t.server, path, headers, body), Some(400), "{path} with {} bytes", body.len());
    }
    // Past the limits the server may answer or just close (it stops reading either way); what
    // it must never do is accept.
    let status = post_raw(&t.server, "/auth/validate", "", &vec![b'a'; 10 * 1024 * 1024]);
    assert!(status.is_none_or(|s| s == 413), "a 10 MiB body: {status:?}");
    let huge_header = format!("X-Filler: {}\r\n", "a".repeat(1024 * 1024));
    let status = post_raw(&t.server, "/auth/validate", &huge_header, b"{}");
    assert!(status.is_none_or(|s| s == 431 || s == 400), "a 1 MiB header: {status:?}");
    let many_headers: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let status = post_raw(&t.server, "/auth/validate", &many_headers, b"{}");
    assert!(status.is_none_or(|s| s == 431 || s == 400), "500 headers: {status:?}");
    let invalid_header =
        b"GET /v1/apps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(&t.server, invalid_header), Some(401), "a non-UTF-8 API key is no key");

    assert_eq!(t.server.get_text("/healthz").0, 200, "the server is still serving");
    assert_eq!(t.server.written(), before, "nothing was written");
    let (status, _) = validate(&t.server, &t.a, &key, "machine");
    assert_eq!(status, 200, "and still authenticates");
}
