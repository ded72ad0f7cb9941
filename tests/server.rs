//! The real binary on a real socket: health, metrics, operator commands, the first Developer
//! API routes, tenant isolation, secrets at rest and graceful shutdown.

mod common;

use common::{caught_up_hashes, Deployment, TempDir};

use serde_json::json;

#[test]
fn serves_health_metrics_and_the_developer_api() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start();

    let (status, health) = server.get("", "/healthz");
    assert_eq!((status, health["status"].as_str(), health["backend"].as_str()), (200, Some("ok"), Some("sqlite")));

    let (api_key, app_id) = deployment.merchant(&server, "owner@example.com");
    let body = json!({ "appId": app_id, "quantity": 3, "maxHwidSlots": 2, "label": "order 42",
                       "expiresAt": "2099-12-31T23:59:59Z" });
    let (status, created) = server.post(&api_key, "/v1/licenses", &body);
    assert_eq!(status, 201, "{created}");
    let licenses = created["licenses"].as_array().unwrap();
    assert_eq!(licenses.len(), 3);
    let key = licenses[0]["licenseKey"].as_str().unwrap();
    assert!(key.len() == 19 && key.chars().all(|c| c == '-' || "ABCDEFGHJKLMNPQRSTUVWXYZ23456789".contains(c)));

    let (status, license) = server.get(&api_key, &format!("/v1/licenses/{key}"));
    assert_eq!(status, 200);
    assert_eq!(license["label"], "order 42");
    assert_eq!(license["maxHwidSlots"], 2);
    assert_eq!(license["expiresAt"], "2099-12-31T23:59:59.000Z");
    assert_eq!(license["status"], "active");

    let (_, metrics) = server.get_text("/metrics");
    assert!(metrics.contains("# TYPE licensd_events_appended_total counter"));
    let licenses_gauge = metrics.lines().find(|l| l.starts_with("licensd_licenses ")).unwrap();
    assert_eq!(licenses_gauge, "licensd_licenses 3");
    server.terminate();
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start();
    let (api_key, app_id) = deployment.merchant(&server, "strict@example.com");

    let cases = [
        (json!({ "appId": app_id, "quantity": 0 }), "quantity"),
        (json!({ "appId": app_id, "quantity": 101 }), "quantity"),
        (json!({ "appId": app_id, "maxHwidSlots": 17 }), "maxHwidSlots"),
        (json!({ "appId": app_id, "label": "x".repeat(129) }), "label"),
        (json!({ "appId": app_id, "expiresAt": "tomorrow" }), "expiresAt"),
        (json!({ "appId": app_id, "expiresAt": "2001-01-01T00:00:00Z" }), "future"),
        (json!({ "appId": "not-a-uuid" }), "appId"),
        (json!({ "quantity": 1 }), "appId"),
    ];
    for (body, mentions) in cases {
        let (status, error) = server.post(&api_key, "/v1/licenses", &body);
        assert_eq!((status, error["error"].as_str()), (400, Some("bad_request")), "{body}: {error}");
        assert!(error["message"].as_str().unwrap().contains(mentions), "{body}: {error}");
    }
    let (status, error) = server.post("af_live_0000", "/v1/licenses", &json!({ "appId": app_id }));
    assert_eq!((status, error["error"].as_str()), (401, Some("invalid_api_key")));
    let huge = json!({ "appId": app_id, "label": "x".repeat(100_000) });
    let (status, error) = server.post(&api_key, "/v1/licenses", &huge);
    assert_eq!((status, error["error"].as_str()), (413, Some("payload_too_large")));

    let (_, metrics) = server.get_text("/metrics");
    assert!(metrics.contains("licensd_licenses 0"), "no license was created by a bad request");
    server.terminate();
}

#[test]
fn one_account_cannot_reach_another_accounts_resources() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start();
    let (key_a, app_a) = deployment.merchant(&server, "a@example.com");
    let (key_b, _) = deployment.merchant(&server, "b@example.com");
    let (_, created) = server.post(&key_a, "/v1/licenses", &json!({ "appId": app_a }));
    let license_a = created["licenses"][0]["licenseKey"].as_str().unwrap().to_string();

    let (status, error) = server.get(&key_b, &format!("/v1/licenses/{license_a}"));
    assert_eq!((status, error["error"].as_str()), (403, Some("forbidden")));
    let (status, error) = server.post(&key_b, "/v1/licenses", &json!({ "appId": app_a }));
    assert_eq!((status, error["error"].as_str()), (403, Some("forbidden")));
    let (_, apps_b) = server.get(&key_b, "/v1/apps");
    assert!(apps_b["apps"].as_array().unwrap().iter().all(|a| a["appId"] != app_a.as_str()));
    let (_, metrics) = server.get_text("/metrics");
    assert!(metrics.contains("licensd_licenses 1"), "B created nothing in A's app");
    server.terminate();
}

#[test]
fn secrets_and_personal_data_are_sealed_at_rest() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start();
    let account = deployment.cli(&["account", "create", "--email", "private.person@example.com"]);
    let api_key = account["apiKey"].as_str().unwrap();
    let (_, app) = server.post(api_key, "/v1/apps", &json!({ "name": "Sealed" }));
    let app_secret = app["appSecret"].as_str().unwrap().to_string();
    let websocket_key = app["websocketApiKey"].as_str().unwrap().to_string();
    server.terminate();

    assert!(dir.0.join("master.key").exists(), "the embedded mode generated its master key");
    let stored = dir.sqlite_files();
    assert!(stored.contains("AppCreated"), "the check reads the real database files");
    for secret in [app_secret.as_str(), websocket_key.as_str(), "private.person@example.com", api_key] {
        assert!(!stored.contains(secret), "{secret} is stored in clear");
    }
}

#[test]
fn postgres_needs_an_explicit_master_key() {
    let Some(db) = common::temp_postgres() else { return };
    let dir = TempDir::new();
    let mut deployment = Deployment::postgres(&dir.0, &db.url);
    deployment.master_key = None;
    let error = deployment.cli_fails(&["account", "create", "--email", "x@example.com"]);
    assert!(error.contains("LICENSD_MASTER_KEY is required"), "{error}");
}

#[test]
fn credits_grant_reports_the_ledger_balance_and_rebuild_reproduces_it() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let account = deployment.cli(&["account", "create", "--email", "credits@example.com"]);
    let id = account["accountId"].as_str().unwrap();
    assert_eq!(deployment.cli(&["credits", "grant", "--account", id, "--amount", "700"])["balance"], 700);
    assert_eq!(deployment.cli(&["credits", "grant", "--account", id, "--amount", "50"])["balance"], 750);
    let error = deployment.cli_fails(&["credits", "grant", "--account", id, "--amount", "0"]);
    assert!(error.contains("credit amount must be positive"), "{error}");
    // Without a server only the ledger was projected (by `credits grant`, incrementally).
    let ledger = |hashes: Vec<(String, String, bool)>| hashes.into_iter().find(|(name, ..)| name == "credit_ledger");
    let (_, live_hash, caught_up) = ledger(common::projection_hashes(&deployment)).unwrap();
    assert!(caught_up);
    let rebuilt = deployment.cli(&["rebuild"]);
    assert_eq!(rebuilt["rebuilt"].as_array().unwrap().len(), 8, "hot and seven SQL projections");
    let after = caught_up_hashes(&deployment);
    assert!(after.contains(&("credit_ledger".to_string(), live_hash)));
}
