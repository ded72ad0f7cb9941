//! The Developer API beyond licenses: listing with cursors, API keys and scopes, security list
//! entries, secret rotation, credits, audit log, the per-key rate limit and tenant isolation.

mod common;

use common::{each_backend, on_both_backends, MailSink, TempDir, World};
use serde_json::{json, Value};

#[test]
fn licenses_are_listed_page_by_page_with_opaque_cursors() {
    let w = World::new(&[], 50);
    let mut created: Vec<String> = (0..5).map(|_| w.merchant.license(w.server(), json!({}))).collect();
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    for expected in [2, 2, 1] {
        let mut path = format!("/v1/licenses?appId={}&limit=2", w.merchant.app_id);
        if let Some(c) = cursor.as_str() {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = w.server().get(&w.merchant.api_key, &path);
        assert_eq!(status, 200, "{page}");
        let keys = page["licenses"].as_array().unwrap();
        assert_eq!(keys.len(), expected);
        seen.extend(keys.iter().map(|l| l["licenseKey"].as_str().unwrap().to_string()));
        cursor = page["cursor"].clone();
    }
    assert_eq!(cursor, Value::Null, "the last page has no cursor");
    seen.sort();
    created.sort();
    assert_eq!(seen, created, "every license exactly once");
    for bad in ["limit=0", "limit=201", "limit=x", "cursor=%21%21"] {
        let (status, error) =
            w.server().get(&w.merchant.api_key, &format!("/v1/licenses?appId={}&{bad}", w.merchant.app_id));
        assert_eq!((status, error["error"].as_str()), (400, Some("bad_request")), "{bad}");
    }
    assert_eq!(w.server().get(&w.merchant.api_key, "/v1/licenses").0, 400, "appId is required");
}

#[test]
fn api_keys_carry_scopes_and_revocation_is_immediate() {
    let w = World::new(&[], 50);
    let key = w.merchant.license(w.server(), json!({}));
    let (status, issued) =
        w.server().post(&w.merchant.api_key, "/v1/api-keys", &json!({ "scopes": ["read:licenses"] }));
    assert_eq!(status, 201, "{issued}");
    let reader = issued["apiKey"].as_str().unwrap().to_string();
    assert_eq!(w.server().get(&reader, &format!("/v1/licenses/{key}")).0, 200);
    let (status, error) = w.server().post(&reader, "/v1/licenses", &json!({ "appId": w.merchant.app_id }));
    assert_eq!((status, error["error"].as_str()), (403, Some("forbidden")), "{error}");
    assert!(error["message"].as_str().unwrap().contains("write:licenses"));
    let (_, keys) = w.server().get(&w.merchant.api_key, "/v1/api-keys");
    assert_eq!(keys["apiKeys"].as_array().unwrap().len(), 2);
    assert!(!keys.to_string().contains(&reader), "secrets are never listed");

    let (status, _) = w.server().send(
        "DELETE",
        &w.merchant.api_key,
        &format!("/v1/api-keys/{}", issued["apiKeyId"].as_str().unwrap()),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(w.server().get(&reader, &format!("/v1/licenses/{key}")).0, 401);
    let (status, _) = w.server().post(&w.merchant.api_key, "/v1/api-keys", &json!({ "scopes": ["root"] }));
    assert_eq!(status, 400);
}

#[test]
fn security_entries_secret_rotation_credits_and_audit() {
    let w = World::new(&[], 50);
    let app = format!("/v1/apps/{}", w.merchant.app_id);
    let add = json!({ "type": "ip", "value": "203.0.113.7" });
    assert_eq!(w.server().post(&w.merchant.api_key, &format!("{app}/security/blacklist"), &add).0, 200);
    let (_, lists) = w.server().get(&w.merchant.api_key, &format!("{app}/security"));
    assert_eq!(lists["ipBlacklist"], json!(["203.0.113.7"]));
    assert_eq!(w.server().send("DELETE", &w.merchant.api_key, &format!("{app}/security/blacklist"), Some(&add)).0, 200);
    let (_, lists) = w.server().get(&w.merchant.api_key, &format!("{app}/security"));
    assert_eq!(lists["ipBlacklist"], json!([]));
    let bad = json!({ "type": "ip", "value": "not-an-ip" });
    assert_eq!(w.server().post(&w.merchant.api_key, &format!("{app}/security/whitelist"), &bad).0, 400);

    let key = w.merchant.license(w.server(), json!({}));
    let validate = |secret: &str, nonce: u32| json!({ "appId": w.merchant.app_id, "appSecret": secret, "licenseKey": key, "hwid": "h", "nonce": format!("{nonce:032x}") });
    assert_eq!(w.server().auth("/auth/validate", &validate(&w.merchant.app_secret, 1)).0, 200);
    let (_, rotated) = w.server().post(&w.merchant.api_key, &format!("{app}/secret"), &json!({}));
    let new_secret = rotated["appSecret"].as_str().unwrap();
    assert_eq!(w.server().auth("/auth/validate", &validate(&w.merchant.app_secret, 2)).1["error"], "invalid_app");
    assert_eq!(w.server().auth("/auth/validate", &validate(new_secret, 3)).0, 200);

    let (_, credits) = w.server().get(&w.merchant.api_key, "/v1/credits");
    assert_eq!(credits["balance"], 48, "50 granted, two validations");
    assert_eq!(credits["belowThreshold"], false);
    let (status, credits) = w.server().send(
        "PUT",
        &w.merchant.api_key,
        "/v1/credits/settings",
        Some(&json!({ "lowBalanceThreshold": 100 })),
    );
    assert_eq!(
        (status, credits["lowBalanceThreshold"].as_u64(), credits["belowThreshold"].as_bool()),
        (200, Some(100), Some(true))
    );
    let (status, _) = w.server().send(
        "PUT",
        &w.merchant.api_key,
        "/v1/credits/settings",
        Some(&json!({ "lowBalanceThreshold": -1 })),
    );
    assert_eq!(status, 400);
    let (_, ledger) = w.server().get(&w.merchant.api_key, "/v1/credits/transactions?limit=10");
    let kinds: Vec<&str> =
        ledger["transactions"].as_array().unwrap().iter().map(|t| t["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["validation", "validation", "grant"]);

    let (status, email) = w.server().send(
        "PUT",
        &w.merchant.api_key,
        &format!("/v1/licenses/{key}/email"),
        Some(&json!({ "email": "Buyer@Example.com" })),
    );
    assert_eq!((status, email["email"].as_str()), (200, Some("buyer@example.com")));
    let (status, _) = w.server().send(
        "PUT",
        &w.merchant.api_key,
        &format!("/v1/licenses/{key}/email"),
        Some(&json!({ "email": "nope" })),
    );
    assert_eq!(status, 400);

    let (_, audit) = w.server().get(&w.merchant.api_key, "/v1/audit-log?limit=200");
    let entries = audit["entries"].as_array().unwrap();
    assert!(entries
        .iter()
        .any(|e| e["event"] == "AppSecretRotated" && e["actor"].as_str().unwrap().starts_with("api_key:")));
    assert!(entries.iter().any(|e| e["event"] == "AccountCreated" && e["actor"] == "operator"));
}

#[test]
fn each_key_is_rate_limited_with_the_api_error_shape() {
    let w = World::new(&[("LICENSD_API_BURST", "5"), ("LICENSD_API_PER_SECOND", "1")], 50);
    // Setting the merchant up already spent one token of the burst of five.
    let statuses: Vec<u16> = (0..8).map(|_| w.server().get(&w.merchant.api_key, "/v1/credits").0).collect();
    let allowed = statuses.iter().take_while(|s| **s == 200).count();
    assert!((3..=5).contains(&allowed), "{statuses:?}");
    assert!(statuses[allowed..].iter().all(|s| *s == 429), "{statuses:?}");
    let (status, error) = w.server().get(&w.merchant.api_key, "/v1/credits");
    assert_eq!((status, error["error"].as_str()), (429, Some("rate_limited")));
    let refused = reqwest::blocking::Client::new()
        .get(format!("{}/v1/credits", w.server().base))
        .bearer_auth(&w.merchant.api_key)
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    let retry_after = refused.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(retry_after.as_deref(), Some("1"), "every 429 says when to retry");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(w.server().get(&w.merchant.api_key, "/v1/credits").0, 200, "one request per second is sustained");
}

/// Account B's key against every kind of account A's resources: refused, and nothing changes.
#[test]
fn tenant_isolation_matrix() {
    let w = World::new(&[], 50);
    let a = &w.merchant;
    let b = w.deployment.merchant_with_credits(w.server(), "intruder@example.com", 0);
    let key = a.license(w.server(), json!({}));
    let (_, hook) = w.server().post(
        &a.api_key,
        &format!("/v1/apps/{}/webhooks", a.app_id),
        &json!({ "url": "https://example.com/h", "events": ["license.created"] }),
    );
    let hook = hook["webhookId"].as_str().unwrap().to_string();
    let app = format!("/v1/apps/{}", a.app_id);
    let lic = format!("/v1/licenses/{key}");
    let attempts: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", app.clone(), None),
        ("PUT", app.clone(), Some(json!({ "name": "pwned" }))),
        ("GET", format!("{app}/variables"), None),
        ("PUT", format!("{app}/variables"), Some(json!({ "x": 1 }))),
        ("GET", format!("{app}/security"), None),
        ("PUT", format!("{app}/security"), Some(json!({ "hwidBlacklist": ["x"] }))),
        ("POST", format!("{app}/security/blacklist"), Some(json!({ "type": "hwid", "value": "x" }))),
        ("PUT", format!("{app}/settings"), Some(json!({ "offlineActivation": true }))),
        ("POST", format!("{app}/signing-keys"), None),
        ("POST", format!("{app}/secret"), None),
        ("GET", format!("{app}/webhooks"), None),
        ("PUT", format!("{app}/webhooks/{hook}"), Some(json!({ "enabled": false }))),
        ("DELETE", format!("{app}/webhooks/{hook}"), None),
        ("POST", format!("{app}/webhooks/{hook}/test"), None),
        ("GET", format!("{app}/webhooks/{hook}/deliveries"), None),
        ("GET", format!("/v1/licenses?appId={}", a.app_id), None),
        ("POST", "/v1/licenses".into(), Some(json!({ "appId": a.app_id }))),
        ("GET", lic.clone(), None),
        ("PUT", lic.clone(), Some(json!({ "action": "revoke" }))),
        ("DELETE", lic.clone(), None),
        ("GET", format!("{lic}/variables"), None),
        ("PUT", format!("{lic}/variables"), Some(json!({ "x": 1 }))),
        ("PUT", format!("{lic}/email"), Some(json!({ "email": "x@example.com" }))),
        ("POST", format!("{lic}/offline-files"), Some(json!({ "anyMachine": true }))),
    ];
    let (_, before) = w.server().get(&a.api_key, "/v1/audit-log?limit=200");
    for (method, path, body) in &attempts {
        let (status, answer) = w.server().send(method, &b.api_key, path, body.as_ref());
        assert!(status == 403 || status == 404, "{method} {path} gave {status}: {answer}");
    }
    let (_, after) = w.server().get(&a.api_key, "/v1/audit-log?limit=200");
    assert_eq!(before, after, "nothing of A changed");
    let (_, license) = w.server().get(&a.api_key, &lic);
    assert_eq!(license["status"], "active");
}

#[test]
fn json_arrays_are_refused_where_the_document_says_object() {
    let w = World::new(&[], 0);
    let (status, error) = w.server().post(&w.merchant.api_key, "/v1/apps", &json!(["Array app"]));
    assert_eq!((status, error["error"].as_str()), (400, Some("bad_request")), "{error}");
    let (status, error) = w.server().post(&w.merchant.api_key, "/v1/licenses", &json!([w.merchant.app_id, 3]));
    assert_eq!((status, error["error"].as_str()), (400, Some("bad_request")), "{error}");
    let (_, apps) = w.server().get(&w.merchant.api_key, "/v1/apps");
    assert_eq!(apps["apps"].as_array().unwrap().len(), 1, "nothing was created");
}

/// The `email` field of `POST /v1/licenses` (documented with the portal) sets the buyer email of
/// every license created; a bad address is refused before anything is created.
#[test]
fn licenses_created_with_an_email_carry_it() {
    on_both_backends(&[], |deployment, server| {
        let merchant = deployment.merchant_with_credits(server, "shop@example.com", 10);
        let body = json!({ "appId": merchant.app_id, "quantity": 2, "email": "Buyer@Example.COM" });
        let (status, created) = server.post(&merchant.api_key, "/v1/licenses", &body);
        assert_eq!(status, 201, "{created}");
        for license in created["licenses"].as_array().unwrap() {
            let key = license["licenseKey"].as_str().unwrap();
            let (status, shown) = server.get(&merchant.api_key, &format!("/v1/licenses/{key}"));
            assert_eq!((status, shown["email"].as_str()), (200, Some("buyer@example.com")), "{shown}");
        }
        let listed = |server: &common::Server| {
            let (_, page) = server.get(&merchant.api_key, &format!("/v1/licenses?appId={}", merchant.app_id));
            page["licenses"].as_array().unwrap().len()
        };
        let bad = json!({ "appId": merchant.app_id, "email": "not an address" });
        let (status, refused) = server.post(&merchant.api_key, "/v1/licenses", &bad);
        assert_eq!((status, refused["error"].as_str()), (400, Some("bad_request")), "{refused}");
        assert_eq!(listed(server), 2, "a refused email creates no license");
    });
}

/// The low-balance alert email: one per fall under the threshold, decided by events in the log
/// (so a restart sends nothing again), and again only after the balance was back at or above
/// the threshold. Mailed to a real SMTP server.
#[test]
fn the_low_balance_alert_is_emailed_once_per_crossing() {
    let dir = TempDir::new();
    let mail = MailSink::start(&dir.0);
    let smtp = format!("smtp://127.0.0.1:{}", mail.port);
    let env = [
        ("LICENSD_SMTP_URL", smtp.as_str()),
        ("LICENSD_LOW_BALANCE_CHECK_MS", "100"),
        ("LICENSD_VALIDATE_PER_KEY", "1000"),
        ("LICENSD_VALIDATE_PER_IP", "1000"),
    ];
    // The alerts to one account (each backend's merchant is another account), once there are
    // `count` of them or 20 s have passed (`sent(0)`: as they are now).
    let sent = |account: &str, count: usize| -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let alerts: Vec<String> = mail
                .messages()
                .into_iter()
                .filter(|m| m.contains("credit balance is low") && m.contains(account))
                .collect();
            if alerts.len() >= count || std::time::Instant::now() > deadline {
                return alerts;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let quiet = || std::thread::sleep(std::time::Duration::from_millis(800));
    each_backend(|deployment| {
        let server = deployment.start_with(&env);
        let merchant = deployment.merchant_with_credits(&server, "low.balance@example.com", 5);
        let threshold = json!({ "lowBalanceThreshold": 3 });
        assert_eq!(server.send("PUT", &merchant.api_key, "/v1/credits/settings", Some(&threshold)).0, 200);
        let key = merchant.license(&server, json!({}));
        let sent = |count| sent(&merchant.account_id, count);
        let nonce = std::cell::Cell::new(0u32);
        let validate = |server: &common::Server, times: usize| {
            for _ in 0..times {
                nonce.set(nonce.get() + 1);
                let body = json!({ "appId": merchant.app_id, "appSecret": merchant.app_secret, "licenseKey": key,
                                   "hwid": "machine-1", "nonce": format!("{:032x}", nonce.get()) });
                let (status, answer) = server.auth("/auth/validate", &body);
                assert_eq!(status, 200, "{answer}");
            }
        };
        validate(&server, 2);
        quiet();
        assert_eq!(sent(0).len(), 0, "at the threshold (3) is not under it");
        validate(&server, 1);
        let alerts = sent(1);
        assert_eq!(alerts.len(), 1, "balance 2 is under 3: one alert");
        assert!(
            alerts[0].contains("To: low.balance@example.com") && alerts[0].contains("Balance: 2 credits"),
            "{}",
            alerts[0]
        );
        validate(&server, 1);
        quiet();
        assert_eq!(sent(0).len(), 1, "a further fall is the same crossing");

        // A restart finds the alert mailed in the log.
        server.terminate();
        let server = deployment.start_with(&env);
        quiet();
        assert_eq!(sent(0).len(), 1, "a restart sends nothing again");

        // Back at the threshold re-arms; the next fall alerts again.
        deployment.cli(&["credits", "grant", "--account", &merchant.account_id, "--amount", "2"]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !audit_has(&server, &merchant.api_key, "LowBalanceAlertRearmed") {
            assert!(std::time::Instant::now() < deadline, "the alert was not re-armed");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        validate(&server, 1);
        assert_eq!(sent(2).len(), 2, "the second fall is a second alert");
        let (_, credits) = server.get(&merchant.api_key, "/v1/credits");
        assert_eq!((credits["balance"].as_i64(), credits["belowThreshold"].as_bool()), (Some(2), Some(true)));
    });
}

fn audit_has(server: &common::Server, api_key: &str, event: &str) -> bool {
    let (_, audit) = server.get(api_key, "/v1/audit-log?limit=200");
    audit["entries"].as_array().is_some_and(|entries| entries.iter().any(|e| e["event"] == event))
}
