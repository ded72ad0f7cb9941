//! The Developer API beyond licenses: listing with cursors, API keys and scopes, security list
//! entries, secret rotation, credits, audit log, the per-key rate limit and tenant isolation.

mod common;

use common::World;
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
