//! Security lists decided inside the app aggregate, self-ban refusals, and the auth limits that
//! apply only where the docs put them. Against the real binary, on SQLite and (when
//! `LICENSD_TEST_POSTGRES_URL` is set) Postgres where the store decides the outcome.

mod common;

use common::{temp_postgres, Deployment, Merchant, Server, TempDir};
use licensd_store::EventStore;
use serde_json::{json, Value};

/// Limits out of the way, so a test meets only the limit it is about.
const RELAXED: &[(&str, &str)] = &[
    ("LICENSD_VALIDATE_PER_KEY", "1000"),
    ("LICENSD_VALIDATE_PER_IP", "1000"),
    ("LICENSD_SELFBAN_PER_IP", "1000"),
    ("LICENSD_SELFBAN_PER_KEY", "1000"),
    ("LICENSD_API_BURST", "100000"),
    ("LICENSD_API_PER_SECOND", "100000"),
];

struct Setup {
    _dir: TempDir,
    deployment: Deployment,
    server: Server,
    m: Merchant,
}

/// Runs `test` on SQLite, then on a throwaway Postgres database when one is configured.
fn on_each_backend(env: &[(&str, &str)], test: impl Fn(&Setup)) {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    run_on(dir, deployment, env, &test);
    if let Some(database) = temp_postgres() {
        let dir = TempDir::new();
        let deployment = Deployment::postgres(&dir.0, &database.url);
        run_on(dir, deployment, env, &test);
    }
}

fn run_on(dir: TempDir, deployment: Deployment, env: &[(&str, &str)], test: &impl Fn(&Setup)) {
    let server = deployment.start_with(env);
    let m = merchant(&deployment, &server);
    test(&Setup { _dir: dir, deployment, server, m });
}

/// An account with credits and one app. The account is created by the CLI (another process);
/// the server finds its API key on the first miss (see `tests/visibility.rs`).
fn merchant(deployment: &Deployment, server: &Server) -> Merchant {
    deployment.merchant_with_credits(server, "lists@example.com", 1000)
}

fn sqlite(env: &[(&str, &str)]) -> Setup {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start_with(env);
    let m = merchant(&deployment, &server);
    Setup { _dir: dir, deployment, server, m }
}

fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn validate(s: &Setup, key: &str, hwid: &str) -> (u16, Value) {
    let body =
        json!({ "appId": s.m.app_id, "appSecret": s.m.app_secret, "licenseKey": key, "hwid": hwid, "nonce": nonce() });
    s.server.auth("/auth/validate", &body)
}

fn session_token(answer: &Value) -> String {
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD.decode(answer["payload"].as_str().unwrap()).unwrap();
    let payload: Value = serde_json::from_slice(&payload).unwrap();
    payload["sessionToken"].as_str().unwrap().to_string()
}

/// A pre-session self-ban that blacklists the HWID only (the IP would block the test client).
fn pre_session_ban(s: &Setup, key: &str, hwid: &str, nonce: &str) -> (u16, Value) {
    let body = json!({
        "appId": s.m.app_id, "appSecret": s.m.app_secret, "licenseKey": key, "hwid": hwid, "nonce": nonce,
        "revokeLicense": false, "blacklistHwid": true, "blacklistIp": false,
    });
    s.server.auth("/auth/selfban", &body)
}

fn lists(s: &Setup) -> Value {
    let (status, lists) = s.server.get(&s.m.api_key, &format!("/v1/apps/{}/security", s.m.app_id));
    assert_eq!(status, 200, "{lists}");
    lists
}

fn listed(lists: &Value, list: &str) -> Vec<String> {
    lists[list].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// The app stream's events as stored: `(type, payload)`, oldest first.
fn app_events(s: &Setup) -> Vec<(String, Value)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let options = licensd_store::StoreOptions::durable();
        let store = licensd_store::Store::connect(&s.deployment.database_url, &options).await.unwrap();
        let stream = format!("app-{}", s.m.app_id);
        let events = store.read_stream(&stream, 1).await.unwrap();
        events.into_iter().map(|e| (e.event_type.clone(), e.payload_json())).collect()
    })
}

#[test]
fn concurrent_list_additions_all_survive() {
    on_each_backend(RELAXED, |s| {
        let path = format!("/v1/apps/{}/security/blacklist", s.m.app_id);
        std::thread::scope(|scope| {
            for writer in 0..4 {
                let path = &path;
                scope.spawn(move || {
                    for n in 0..6 {
                        let entry = json!({ "type": "hwid", "value": format!("machine-{writer}-{n}") });
                        let (status, answer) = s.server.post(&s.m.api_key, path, &entry);
                        assert_eq!(status, 200, "{answer}");
                    }
                });
            }
        });
        let mut blacklist = listed(&lists(s), "hwidBlacklist");
        blacklist.sort();
        assert_eq!(blacklist.len(), 24, "every concurrent addition is kept: {blacklist:?}");
    });
}

#[test]
fn a_merchant_edit_made_from_an_older_read_does_not_undo_a_self_ban() {
    on_each_backend(RELAXED, |s| {
        let key = s.m.license(&s.server, json!({}));
        let before = lists(s);
        assert_eq!(pre_session_ban(s, &key, "tampered-machine", &nonce()).0, 200);

        // The merchant's edit was built from the read taken before the self-ban.
        let mut edited = listed(&before, "hwidBlacklist");
        edited.push("merchant-entry".into());
        s.m.put(&s.server, &format!("/v1/apps/{}/security", s.m.app_id), json!({ "hwidBlacklist": edited }));
        let add = json!({ "type": "ip", "value": "198.51.100.7" });
        assert_eq!(s.server.post(&s.m.api_key, &format!("/v1/apps/{}/security/blacklist", s.m.app_id), &add).0, 200);

        let now = lists(s);
        let blacklist = listed(&now, "hwidBlacklist");
        assert!(blacklist.contains(&"tampered-machine".to_string()), "the self-ban survived: {now}");
        assert!(blacklist.contains(&"merchant-entry".to_string()), "{now}");
        assert_eq!(validate(s, &key, "tampered-machine"), (403, json!({"status": "failed", "error": "blocked"})));

        // Removing the entry by name is how the merchant lifts a self-ban.
        let entry = json!({ "type": "hwid", "value": "tampered-machine" });
        let (status, _) =
            s.server.send("DELETE", &s.m.api_key, &format!("/v1/apps/{}/security/blacklist", s.m.app_id), Some(&entry));
        assert_eq!(status, 200);
        // The same removal with the entry in the path (a range's '/' percent-encoded).
        let path = format!("/v1/apps/{}/security/blacklist/ip/198.51.100.0%2F24", s.m.app_id);
        let range = json!({ "type": "ip", "value": "198.51.100.0/24" });
        assert_eq!(s.server.post(&s.m.api_key, &format!("/v1/apps/{}/security/blacklist", s.m.app_id), &range).0, 200);
        assert!(listed(&lists(s), "ipBlacklist").contains(&"198.51.100.0/24".to_string()));
        assert_eq!(s.server.send("DELETE", &s.m.api_key, &path, None).0, 200);
        assert!(!listed(&lists(s), "ipBlacklist").contains(&"198.51.100.0/24".to_string()), "removed by path");
        assert_eq!(validate(s, &key, "tampered-machine").0, 200, "the lifted self-ban no longer blocks");
    });
}

#[test]
fn a_self_ban_appends_one_small_delta_event() {
    on_each_backend(RELAXED, |s| {
        let key = s.m.license(&s.server, json!({}));
        let many: Vec<String> = (0..300).map(|i| format!("merchant-machine-{i:04}")).collect();
        s.m.put(&s.server, &format!("/v1/apps/{}/security", s.m.app_id), json!({ "hwidBlacklist": many }));
        let before = app_events(s).len();
        assert_eq!(pre_session_ban(s, &key, "tampered-machine", &nonce()).0, 200);

        let events = app_events(s);
        assert_eq!(events.len(), before + 1, "one event per self-ban");
        let (event_type, payload) = events.last().unwrap();
        let size = payload.to_string().len();
        assert!(size < 400, "the self-ban event carries the new entry, not the lists ({size} bytes): {event_type}");
        assert!(payload.to_string().contains("tampered-machine"), "{payload}");
        assert!(!payload.to_string().contains("merchant-machine-0001"), "{payload}");
        assert_eq!(listed(&lists(s), "hwidBlacklist").len(), 301);
    });
}

#[test]
fn self_bans_have_their_own_cap_and_leave_the_merchant_lists_usable() {
    let mut env = RELAXED.to_vec();
    env.push(("LICENSD_SELFBAN_MAX_ENTRIES", "3"));
    on_each_backend(&env, |s| {
        let key = s.m.license(&s.server, json!({}));
        for n in 0..3 {
            assert_eq!(pre_session_ban(s, &key, &format!("fake-{n}"), &nonce()).0, 200);
        }
        let (status, refusal) = pre_session_ban(s, &key, "fake-4", &nonce());
        assert_eq!((status, refusal), (429, json!({"status": "failed", "error": "rate_limited"})));
        assert_eq!(pre_session_ban(s, &key, "fake-1", &nonce()).0, 200, "an entry already banned is no new entry");

        let path = format!("/v1/apps/{}/security/blacklist", s.m.app_id);
        let own = json!({ "type": "hwid", "value": "merchant-own" });
        assert_eq!(s.server.post(&s.m.api_key, &path, &own).0, 200, "the merchant's lists are unaffected");
        let blacklist = listed(&lists(s), "hwidBlacklist");
        assert_eq!(blacklist.len(), 4, "{blacklist:?}");
        assert!(!blacklist.contains(&"fake-4".to_string()));
    });
}

#[test]
fn self_ban_refuses_what_the_docs_say_it_refuses() {
    let s = sqlite(RELAXED);
    let key = s.m.license(&s.server, json!({}));

    let used = nonce();
    assert_eq!(pre_session_ban(&s, &key, "replayer", &used).0, 200);
    let (status, refusal) = pre_session_ban(&s, &key, "replayer-2", &used);
    assert_eq!((status, refusal), (401, json!({"status": "failed", "error": "replay_detected"})), "pre-session");
    assert!(!listed(&lists(&s), "hwidBlacklist").contains(&"replayer-2".to_string()), "a refusal changes nothing");

    let (status, session) = validate(&s, &key, "with-session");
    assert_eq!(status, 200, "{session}");
    let post_session = |nonce: &str| {
        let body = json!({
            "appId": s.m.app_id, "sessionToken": session_token(&session), "hwid": "with-session", "nonce": nonce,
            "revokeLicense": false, "blacklistHwid": true, "blacklistIp": false,
        });
        s.server.auth("/auth/selfban", &body)
    };
    let (status, refusal) = post_session(&used);
    assert_eq!((status, refusal), (401, json!({"status": "failed", "error": "replay_detected"})), "post-session");

    let long_hwid = "h".repeat(256);
    let long_key = s.m.license(&s.server, json!({}));
    assert_eq!(validate(&s, &long_key, &long_hwid).0, 200, "validate accepts a 256-character HWID");
    let (status, answer) = pre_session_ban(&s, &long_key, &long_hwid, &nonce());
    assert_eq!((status, answer), (200, json!({"status": "success"})), "the same HWID can be self-banned");
    assert!(listed(&lists(&s), "hwidBlacklist").contains(&long_hwid));

    let revoked = s.m.license(&s.server, json!({}));
    s.m.put(&s.server, &format!("/v1/licenses/{revoked}"), json!({ "action": "revoke" }));
    let (status, refusal) = pre_session_ban(&s, &revoked, "on-revoked", &nonce());
    assert_eq!((status, refusal), (410, json!({"status": "failed", "error": "revoked"})));

    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let expiring = s.m.license(&s.server, json!({ "expiresAt": soon }));
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (status, refusal) = pre_session_ban(&s, &expiring, "on-expired", &nonce());
    assert_eq!((status, refusal), (410, json!({"status": "failed", "error": "expired"})));
    let blacklist = listed(&lists(&s), "hwidBlacklist");
    assert!(!blacklist.iter().any(|e| e.starts_with("on-")), "refused self-bans list nothing: {blacklist:?}");
}

#[test]
fn heartbeats_are_not_limited_per_key_unless_configured() {
    let heartbeat = |s: &Setup, token: &str| {
        let body = json!({ "appId": s.m.app_id, "sessionToken": token, "hwid": "hb-machine", "nonce": nonce() });
        s.server.auth("/auth/heartbeat", &body)
    };
    let s = sqlite(RELAXED);
    let key = s.m.license(&s.server, json!({}));
    let (status, answer) = validate(&s, &key, "hb-machine");
    assert_eq!(status, 200, "{answer}");
    let token = session_token(&answer);
    for n in 0..200 {
        let (status, answer) = heartbeat(&s, &token);
        assert_eq!(status, 200, "heartbeat {n}: {answer}");
    }

    let mut env = RELAXED.to_vec();
    env.push(("LICENSD_HEARTBEAT_PER_KEY", "3"));
    let s = sqlite(&env);
    let key = s.m.license(&s.server, json!({}));
    let token = session_token(&validate(&s, &key, "hb-machine").1);
    for _ in 0..3 {
        assert_eq!(heartbeat(&s, &token).0, 200);
    }
    assert_eq!(heartbeat(&s, &token), (429, json!({"status": "failed", "error": "rate_limited"})), "opted in");
}

#[test]
fn wrong_app_credentials_do_not_spend_a_keys_validate_budget() {
    let s = sqlite(&[]);
    let key = s.m.license(&s.server, json!({}));
    for _ in 0..8 {
        let body =
            json!({ "appId": s.m.app_id, "appSecret": "wrong", "licenseKey": key, "hwid": "h", "nonce": nonce() });
        assert_eq!(s.server.auth("/auth/validate", &body), (401, json!({"status": "failed", "error": "invalid_app"})));
    }
    let (status, answer) = validate(&s, &key, "h");
    assert_eq!(status, 200, "the owner's validation still has its budget: {answer}");

    for _ in 0..5 {
        let body = json!({
            "appId": s.m.app_id, "appSecret": "wrong", "licenseKey": key, "hwid": "h", "nonce": nonce(),
            "revokeLicense": false, "blacklistHwid": true, "blacklistIp": false,
        });
        assert_eq!(s.server.auth("/auth/selfban", &body).0, 401);
    }
    assert_eq!(pre_session_ban(&s, &key, "h2", &nonce()).0, 200, "nor a key's self-ban budget");
}
