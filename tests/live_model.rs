//! The Developer API side of live sessions, on the real binary: apps' WebSocket API keys (shown
//! once, rotated), versions, the session quota and variable access strategies; licenses' levels
//! and floating seats. Every change survives a restart (the read models are rebuilt from the log)
//! on SQLite and Postgres, and bad input is refused with a 400 that changes nothing.

mod common;

use common::{each_backend, Deployment, Merchant, Server, TempDir, RELAXED_LIMITS};
use serde_json::{json, Value};

fn is_websocket_key(key: &str) -> bool {
    key.len() == 21 && key.starts_with("BA") && key[2..].bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// What GET shows of the app, its settings, variables and variable access, and one license:
/// compared before and after a refused request, and across a restart.
fn snapshot(server: &Server, merchant: &Merchant, key: &str) -> Value {
    let app = format!("/v1/apps/{}", merchant.app_id);
    let get = |path: &str| {
        let (status, body) = server.get(&merchant.api_key, path);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    };
    json!({
        "app": get(&app),
        "settings": get(&format!("{app}/settings")),
        "variables": get(&format!("{app}/variables")),
        "access": get(&format!("{app}/variable-access")),
        "license": get(&format!("/v1/licenses/{key}")),
    })
}

fn refused(server: &Server, merchant: &Merchant, method: &str, path: &str, body: Value) -> String {
    let (status, error) = server.send(method, &merchant.api_key, path, Some(&body));
    assert_eq!((status, error["error"].as_str()), (400, Some("bad_request")), "{method} {path} {body}: {error}");
    error["message"].as_str().unwrap_or_default().to_string()
}

#[test]
fn the_websocket_key_is_shown_once_rotates_and_survives_a_restart() {
    each_backend(|deployment: &Deployment| {
        let server = deployment.start_with(RELAXED_LIMITS);
        let (api_key, _) = deployment.merchant(&server, "keys@example.com");
        let (status, created) = server.post(&api_key, "/v1/apps", &json!({ "name": "Live" }));
        assert_eq!(status, 201, "{created}");
        let first = created["websocketApiKey"].as_str().unwrap().to_string();
        assert!(is_websocket_key(&first), "{first}");
        let app_id = created["appId"].as_str().unwrap().to_string();
        let (_, other) = server.post(&api_key, "/v1/apps", &json!({ "name": "Other" }));
        assert_ne!(other["websocketApiKey"], created["websocketApiKey"], "each app has its own key");

        let app_path = format!("/v1/apps/{app_id}");
        let shown = |server: &Server| {
            let (_, app) = server.get(&api_key, &app_path);
            let (_, list) = server.get(&api_key, "/v1/apps");
            assert_eq!(app["hasWebsocketApiKey"], true, "{app}");
            format!("{app}{list}")
        };
        assert!(!shown(&server).contains(&first), "GET never shows the key");

        let (status, rotated) = server.post(&api_key, &format!("{app_path}/websocket-key"), &json!({}));
        assert_eq!(status, 200, "{rotated}");
        let second = rotated["websocketApiKey"].as_str().unwrap().to_string();
        assert!(is_websocket_key(&second) && second != first, "{second}");
        assert_eq!(rotated["appId"].as_str(), Some(app_id.as_str()));
        let answers = shown(&server);
        assert!(!answers.contains(&first) && !answers.contains(&second), "GET never shows a key");

        let (stranger, _) = deployment.merchant(&server, "stranger@example.com");
        let (status, _) = server.post(&stranger, &format!("{app_path}/websocket-key"), &json!({}));
        assert_eq!(status, 403, "another account cannot rotate the key");
        let missing = format!("/v1/apps/{}/websocket-key", uuid::Uuid::new_v4());
        assert_eq!(server.post(&api_key, &missing, &json!({})).0, 404);

        server.terminate();
        let server = deployment.start_with(RELAXED_LIMITS);
        let answers = shown(&server);
        assert!(!answers.contains(&first) && !answers.contains(&second), "nor after a restart");
    });
}

#[test]
fn live_session_fields_are_set_read_refused_when_bad_and_survive_a_restart() {
    each_backend(|deployment: &Deployment| {
        let server = deployment.start_with(RELAXED_LIMITS);
        let m = deployment.merchant_with_credits(&server, "fields@example.com", 10);
        let app = format!("/v1/apps/{}", m.app_id);
        let (status, created) = server.post(
            &m.api_key,
            "/v1/licenses",
            &json!({ "appId": m.app_id, "levels": ["pro", "beta", "pro"], "maxSessions": 3 }),
        );
        assert_eq!(status, 201, "{created}");
        let license = &created["licenses"][0];
        assert_eq!((&license["levels"], &license["maxSessions"]), (&json!(["pro", "beta"]), &json!(3)));
        let key = license["licenseKey"].as_str().unwrap().to_string();
        let plain = m.license(&server, json!({}));
        let (_, shown) = server.get(&m.api_key, &format!("/v1/licenses/{plain}"));
        assert_eq!((&shown["levels"], &shown["maxSessions"]), (&json!([]), &Value::Null), "defaults");

        // Version, quota, variables and their access.
        let (_, fresh) = server.get(&m.api_key, &app);
        assert_eq!(fresh["version"], "", "empty until set");
        let updated = m.put(&server, &app, json!({ "version": " 2.1.0 " }));
        assert_eq!(updated["version"], "2.1.0", "trimmed");
        let settings = m.put(&server, &format!("{app}/settings"), json!({ "liveSessionQuota": 25 }));
        assert_eq!(settings["liveSessionQuota"], 25);
        m.put(&server, &format!("{app}/variables"), json!({ "motd": "hello", "secret": "s3" }));
        let (_, access) = server.get(&m.api_key, &format!("{app}/variable-access"));
        assert_eq!(access, json!({ "motd": "auth_required", "secret": "auth_required" }), "the default");
        let access = m.put(&server, &format!("{app}/variable-access"), json!({ "motd": "auth_not_required" }));
        assert_eq!(access, json!({ "motd": "auth_not_required", "secret": "auth_required" }));
        let (_, variables) = server.get(&m.api_key, &format!("{app}/variables"));
        assert_eq!(variables, json!({ "motd": "hello", "secret": "s3" }), "the variables keep their shape");

        // Levels and seats by update: set together, `null` removes the limit.
        let path = format!("/v1/licenses/{key}");
        let answer = m.put(&server, &path, json!({ "levels": ["gold"], "maxSessions": null }));
        assert_eq!((&answer["license"]["levels"], &answer["license"]["maxSessions"]), (&json!(["gold"]), &Value::Null));
        let answer = m.put(&server, &path, json!({ "maxSessions": 2 }));
        assert_eq!((&answer["license"]["levels"], &answer["license"]["maxSessions"]), (&json!(["gold"]), &json!(2)));
        let (_, history) = server.get(&m.api_key, &format!("{path}/events"));
        let types: Vec<&str> =
            history["events"].as_array().unwrap().iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(types.iter().filter(|t| **t == "LicenseLevelsSet").count(), 2, "{types:?}");
        assert_eq!(types.iter().filter(|t| **t == "LicenseMaxSessionsSet").count(), 3, "{types:?}");
        let (_, page) = server.get(&m.api_key, &format!("/v1/licenses?appId={}", m.app_id));
        let listed = page["licenses"].as_array().unwrap().iter().find(|l| l["licenseKey"] == key.as_str()).cloned();
        assert_eq!(listed.map(|l| (l["levels"].clone(), l["maxSessions"].clone())), Some((json!(["gold"]), json!(2))));

        // Bad input: a clear 400, and nothing changes.
        let before = snapshot(&server, &m, &key);
        let seventeen: Vec<String> = (0..17).map(|i| format!("l{i}")).collect();
        for body in [
            json!({ "levels": seventeen }),
            json!({ "levels": [""] }),
            json!({ "levels": ["ok", "x".repeat(17)] }),
            json!({ "levels": ["tab\there"] }),
            json!({ "levels": "pro" }),
            json!({ "maxSessions": 0 }),
            json!({ "maxSessions": 10_001 }),
            json!({ "maxSessions": -1 }),
            json!({ "maxSessions": "3" }),
            json!({ "levels": ["fine"], "maxSessions": 0 }),
            json!({ "action": "revoke", "levels": ["fine"] }),
            json!({}),
        ] {
            refused(&server, &m, "PUT", &path, body);
        }
        for body in [
            json!({ "appId": m.app_id, "levels": ["x".repeat(17)] }),
            json!({ "appId": m.app_id, "maxSessions": 0 }),
            json!({ "appId": m.app_id, "levels": seventeen }),
        ] {
            refused(&server, &m, "POST", "/v1/licenses", body);
        }
        for body in [
            json!({ "version": "v".repeat(33) }),
            json!({ "version": "1.0\n" }),
            json!({ "version": 2 }),
            json!({ "name": "Renamed", "version": "v".repeat(33) }),
        ] {
            refused(&server, &m, "PUT", &app, body);
        }
        for body in
            [json!({ "liveSessionQuota": 0 }), json!({ "liveSessionQuota": -5 }), json!({ "liveSessionQuota": "9" })]
        {
            refused(&server, &m, "PUT", &format!("{app}/settings"), body);
        }
        for body in [json!({ "motd": "public" }), json!({ "motd": true }), json!({ "k".repeat(65): "auth_required" })] {
            refused(&server, &m, "PUT", &format!("{app}/variable-access"), body);
        }
        assert_eq!(snapshot(&server, &m, &key), before, "a refused request changed something");
        let (_, licenses) = server.get(&m.api_key, &format!("/v1/licenses?appId={}", m.app_id));
        assert_eq!(licenses["licenses"].as_array().unwrap().len(), 2, "no license was created");

        // Everything is rebuilt from the log on the next start.
        server.terminate();
        let server = deployment.start_with(RELAXED_LIMITS);
        assert_eq!(snapshot(&server, &m, &key), before, "the restart lost a change");
        let quota = m.put(&server, &format!("{app}/settings"), json!({ "liveSessionQuota": null }));
        assert_eq!(quota["liveSessionQuota"], Value::Null, "null removes the quota");
    });
}

#[test]
fn the_limits_are_configurable() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let limits = [
        ("LICENSD_MAX_APP_VERSION_CHARS", "5"),
        ("LICENSD_MAX_LICENSE_LEVELS", "2"),
        ("LICENSD_MAX_LICENSE_SESSIONS", "4"),
    ];
    let server = deployment.start_with(&[RELAXED_LIMITS, &limits].concat());
    let m = deployment.merchant_with_credits(&server, "limits@example.com", 0);
    let app = format!("/v1/apps/{}", m.app_id);
    assert!(refused(&server, &m, "PUT", &app, json!({ "version": "1.2.3.4" })).contains("at most 5"));
    assert_eq!(m.put(&server, &app, json!({ "version": "1.2.3" }))["version"], "1.2.3");
    let create = |body: Value| server.post(&m.api_key, "/v1/licenses", &body).0;
    assert_eq!(create(json!({ "appId": m.app_id, "levels": ["a", "b", "c"] })), 400);
    assert_eq!(create(json!({ "appId": m.app_id, "maxSessions": 5 })), 400);
    assert_eq!(create(json!({ "appId": m.app_id, "levels": ["a", "b"], "maxSessions": 4 })), 201);
    let (_, document) = server.get(&m.api_key, "/v1/openapi.json");
    let schema = &document["components"]["schemas"]["LicenseCreate"]["properties"];
    assert_eq!(
        (&schema["levels"]["maxItems"], &schema["maxSessions"]["maximum"]),
        (&json!(2), &json!(4)),
        "documented"
    );
}

#[test]
fn websocket_keys_are_never_logged_or_stored_in_clear() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let log = dir.0.join("server.log");
    let server = deployment.start_logging_to(&[RELAXED_LIMITS, &[("LICENSD_LOG", "debug")]].concat(), Some(&log));
    let (api_key, app_id) = deployment.merchant(&server, "sealed@example.com");
    // Under an Idempotency-Key, so the answer (with the key) is kept for replay too.
    let rotate = || {
        let response = reqwest::blocking::Client::new()
            .post(format!("{}/v1/apps/{app_id}/websocket-key", server.base))
            .bearer_auth(&api_key)
            .header("Idempotency-Key", "rotate-once")
            .json(&json!({}))
            .send()
            .unwrap();
        let replayed = response.headers().contains_key("idempotent-replayed");
        (response.status().as_u16(), replayed, response.json::<Value>().unwrap())
    };
    let (status, replayed, rotated) = rotate();
    assert_eq!((status, replayed), (200, false), "{rotated}");
    assert_eq!(rotate(), (200, true, rotated.clone()), "a retry gets the kept answer");
    let key = rotated["websocketApiKey"].as_str().unwrap().to_string();
    server.terminate();

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("DEBUG") || logged.contains("debug"), "the log was written at debug level");
    assert!(!logged.contains(&key), "the key is in the log");
    let stored = dir.sqlite_files();
    assert!(stored.contains("WebsocketKeySet"), "the check reads the real database files");
    assert!(!stored.contains(&key), "the key is stored in clear");
}
