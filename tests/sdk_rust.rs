//! The official AuthForge Rust SDK (crate `authforge` 2.0) against the real licensd binary.

mod common;

use authforge::{AuthForgeClient, AuthForgeConfig, AuthForgeError};
use common::{TempDir, World};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Limits high enough that the scenarios, not the rate limiter, decide the outcomes.
const RELAXED: &[(&str, &str)] = &[
    ("LICENSD_VALIDATE_PER_IP", "10000"),
    ("LICENSD_VALIDATE_PER_KEY", "10000"),
    ("LICENSD_HEARTBEAT_PER_KEY", "10000"),
    ("LICENSD_SELFBAN_PER_IP", "10000"),
    ("LICENSD_SELFBAN_PER_KEY", "10000"),
];

fn config(w: &World, hwid: &str) -> AuthForgeConfig {
    AuthForgeConfig {
        app_id: w.merchant.app_id.clone(),
        app_secret: w.merchant.app_secret.clone(),
        public_key: w.merchant.public_key.clone(),
        api_base_url: w.server().base.clone(),
        hwid_override: Some(hwid.to_string()),
        session_ttl_seconds: Some(7200),
        ..Default::default()
    }
}

fn client(w: &World, hwid: &str) -> AuthForgeClient {
    AuthForgeClient::new(config(w, hwid))
}

fn code(result: Result<impl std::fmt::Debug, AuthForgeError>) -> String {
    result.expect_err("the call should fail").code().to_string()
}

#[test]
fn login_returns_a_verified_session_with_variables() {
    let w = World::new(RELAXED, 100);
    w.merchant.put(
        w.server(),
        &format!("/v1/apps/{}/variables", w.merchant.app_id),
        json!({"motd": "hi", "beta": true}),
    );
    let key = w.merchant.license(w.server(), json!({ "maxHwidSlots": 3, "label": "order 7" }));
    w.merchant.put(w.server(), &format!("/v1/licenses/{key}/variables"), json!({"plan": "pro", "seats": 5}));

    let sdk = client(&w, "machine-1");
    let login = sdk.login(&key).expect("login");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!((now + 7190..=now + 7210).contains(&login.expires_in), "TTL honoured: {}", login.expires_in);
    assert_eq!((login.max_hwid_slots, login.hwid_count), (Some(3), Some(1)));
    assert_eq!(login.license_label.as_deref(), Some("order 7"));
    assert_eq!(login.license_expires_at, None, "a lifetime license");
    assert_eq!(sdk.get_app_variables().unwrap()["motd"], json!("hi"));
    assert_eq!(sdk.get_license_variables().unwrap()["seats"], json!(5));
    assert!(sdk.is_authenticated());
    sdk.validate_license(&key).expect("validate again from the same machine");

    let (_, license) = w.server().get(&w.merchant.api_key, &format!("/v1/licenses/{key}"));
    assert_eq!(license["hwidList"], json!(["machine-1"]), "the machine is bound");
}

#[test]
fn unknown_keys_secrets_and_apps_are_refused() {
    let w = World::new(RELAXED, 100);
    assert_eq!(code(client(&w, "m").login("AAAA-BBBB-CCCC-DDDD")), "invalid_key");
    let mut wrong_secret = config(&w, "m");
    wrong_secret.app_secret = "00000000-0000-0000-0000-000000000000".into();
    let key = w.merchant.license(w.server(), json!({}));
    assert_eq!(code(AuthForgeClient::new(wrong_secret).login(&key)), "invalid_app");
}

#[test]
fn hwid_slots_fill_up_and_a_reset_frees_them() {
    let w = World::new(RELAXED, 100);
    let key = w.merchant.license(w.server(), json!({ "maxHwidSlots": 2 }));
    client(&w, "a").login(&key).expect("first machine");
    client(&w, "b").login(&key).expect("second machine");
    assert_eq!(code(client(&w, "c").login(&key)), "hwid_mismatch");
    w.merchant.put(w.server(), &format!("/v1/licenses/{key}"), json!({ "action": "reset-hwid" }));
    client(&w, "c").login(&key).expect("a reset frees the slots");
}

#[test]
fn expiry_is_enforced_and_extension_restores_access() {
    let w = World::new(RELAXED, 100);
    let soon = chrono_like_iso(2);
    let key = w.merchant.license(w.server(), json!({ "expiresAt": soon }));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(code(client(&w, "m").login(&key)), "expired");
    w.merchant.put(
        w.server(),
        &format!("/v1/licenses/{key}"),
        json!({ "action": "extend", "expiresAt": chrono_like_iso(3600) }),
    );
    let login = client(&w, "m").login(&key).expect("extended");
    assert!(login.license_expires_at.is_some());
}

/// An ISO-8601 UTC time `seconds` from now.
fn chrono_like_iso(seconds: u64) -> String {
    let at = std::time::SystemTime::now() + Duration::from_secs(seconds);
    let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm), to avoid a date crate in tests.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[test]
fn blacklisted_machines_and_addresses_are_blocked() {
    let w = World::new(RELAXED, 100);
    let key = w.merchant.license(w.server(), json!({ "maxHwidSlots": 4 }));
    let security = format!("/v1/apps/{}/security", w.merchant.app_id);
    w.merchant.put(w.server(), &security, json!({ "hwidBlacklist": ["pirate"] }));
    assert_eq!(code(client(&w, "pirate").login(&key)), "blocked");
    client(&w, "honest").login(&key).expect("other machines pass");
    w.merchant.put(w.server(), &security, json!({ "ipBlacklist": ["127.0.0.0/8"] }));
    assert_eq!(code(client(&w, "honest").login(&key)), "blocked");
    w.merchant.put(w.server(), &security, json!({ "ipBlacklist": [], "hwidWhitelist": ["vip"] }));
    assert_eq!(code(client(&w, "honest").login(&key)), "blocked");
    client(&w, "vip").login(&key).expect("whitelisted machine");
}

#[test]
fn online_heartbeats_refresh_the_session_and_see_a_revocation() {
    let w = World::new(RELAXED, 100);
    let key = w.merchant.license(w.server(), json!({}));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = failures.clone();
    let mut cfg = config(&w, "hb");
    cfg.online_heartbeat = true;
    cfg.heartbeat_interval = 10; // the SDK's minimum
    cfg.on_heartbeat_failure =
        Some(Box::new(move |e: &AuthForgeError| seen.lock().unwrap().push(e.code().to_string())));
    let sdk = AuthForgeClient::new(cfg);
    let first = sdk.login(&key).expect("login");

    // Wait for at least one heartbeat: the session data then carries a later expiry.
    let deadline = Instant::now() + Duration::from_secs(30);
    let refreshed = loop {
        let expires = sdk.get_session_data().and_then(|d| d["expiresIn"].as_u64()).unwrap_or(0);
        if expires > first.expires_in || Instant::now() > deadline {
            break expires;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(refreshed > first.expires_in, "a heartbeat minted a fresh session");
    assert!(failures.lock().unwrap().is_empty());

    w.merchant.put(w.server(), &format!("/v1/licenses/{key}"), json!({ "action": "revoke" }));
    let deadline = Instant::now() + Duration::from_secs(30);
    while failures.lock().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(failures.lock().unwrap().first().map(String::as_str), Some("revoked"));
    assert!(!sdk.is_authenticated(), "a definitive failure ends the session");
}

#[test]
fn self_ban_before_and_after_a_session() {
    let w = World::new(RELAXED, 100);
    let key = w.merchant.license(w.server(), json!({ "maxHwidSlots": 4 }));

    // Pre-session: app secret + license key; may blacklist but never revoke.
    let cracked = client(&w, "cracked-box");
    cracked.self_ban(Some(&key), None, false, true, false).expect("pre-session self-ban");
    assert_eq!(code(client(&w, "cracked-box").login(&key)), "blocked");
    let raw = json!({ "appId": w.merchant.app_id, "appSecret": w.merchant.app_secret, "licenseKey": key,
                      "hwid": "x", "nonce": "0123456789abcdef0123456789abcdef", "revokeLicense": true,
                      "blacklistHwid": false, "blacklistIp": false });
    let (status, answer) = w.server().auth("/auth/selfban", &raw);
    assert_eq!((status, answer["error"].as_str()), (403, Some("revoke_requires_session")));

    // Post-session: the stored token authorises revoking the license too.
    let tampered = client(&w, "tampered-box");
    tampered.login(&key).expect("login");
    tampered.self_ban(None, None, true, true, false).expect("post-session self-ban");
    let (_, license) = w.server().get(&w.merchant.api_key, &format!("/v1/licenses/{key}"));
    assert_eq!(license["status"], "revoked");
    let (_, security) = w.server().get(&w.merchant.api_key, &format!("/v1/apps/{}/security", w.merchant.app_id));
    assert_eq!(security["hwidBlacklist"], json!(["cracked-box", "tampered-box"]));
    assert_eq!(security["ipBlacklist"], json!([]), "the IP was not asked to be banned");
}

#[test]
fn offline_activation_then_login_from_file() {
    let w = World::new(RELAXED, 100);
    let settings = format!("/v1/apps/{}/settings", w.merchant.app_id);
    let key = w.merchant.license(w.server(), json!({ "maxHwidSlots": 1, "label": "air-gapped" }));
    let dir = TempDir::new();
    let path = dir.0.join("license.authforge");

    assert_eq!(code(client(&w, "box").activate_offline(&key, Some(&path))), "offline_activation_disabled");
    w.merchant.put(w.server(), &settings, json!({ "offlineActivation": true }));
    client(&w, "box").activate_offline(&key, Some(&path)).expect("activation");
    let first = std::fs::read_to_string(&path).unwrap();
    client(&w, "box").activate_offline(&key, Some(&path)).expect("the same machine again");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first, "a replay returns the byte-identical file");
    assert_eq!(code(client(&w, "other-box").activate_offline(&key, None)), "offline_activation_limit_reached");

    // Offline-only client: no app secret, no network.
    let mut offline = config(&w, "box");
    offline.app_secret = String::new();
    offline.api_base_url = "http://127.0.0.1:9".into();
    let sdk = AuthForgeClient::new(offline);
    let file = sdk.login_from_file(path.to_str().unwrap()).expect("the file verifies");
    assert!(sdk.is_authenticated());
    assert!(format!("{file:?}").contains(&key));
    let mut elsewhere = config(&w, "another-machine");
    elsewhere.app_secret = String::new();
    assert!(AuthForgeClient::new(elsewhere).login_from_file(path.to_str().unwrap()).is_err(), "bound to its machine");

    let expiring = w.merchant.license(w.server(), json!({ "expiresAt": chrono_like_iso(86_400) }));
    assert_eq!(code(client(&w, "box").activate_offline(&expiring, None)), "offline_activation_requires_perpetual");
}

#[test]
fn operators_mint_files_from_activation_requests() {
    let w = World::new(RELAXED, 100);
    let key = w.merchant.license(w.server(), json!({}));
    let customer = client(&w, "air-gapped-box");
    let request = customer.create_activation_request(Default::default());
    let (status, minted) = w.server().post(
        &w.merchant.api_key,
        &format!("/v1/licenses/{key}/offline-files"),
        &json!({ "activationRequest": format!("Please activate:\n{request}\nThanks!") }),
    );
    assert_eq!(status, 201, "{minted}");
    let mut offline = config(&w, "air-gapped-box");
    offline.app_secret = String::new();
    AuthForgeClient::new(offline).login_from_file(minted["file"].as_str().unwrap()).expect("minted file verifies");

    let damaged = request.replace("Checksum: ", "Checksum: 0");
    let (status, error) = w.server().post(
        &w.merchant.api_key,
        &format!("/v1/licenses/{key}/offline-files"),
        &json!({ "activationRequest": damaged }),
    );
    assert_eq!((status, error["error"].as_str()), (400, Some("bad_request")), "{error}");
}

#[test]
fn signing_key_rotation_with_a_two_key_trust_list() {
    let w = World::new(RELAXED, 100);
    let key = w.merchant.license(w.server(), json!({ "maxHwidSlots": 3 }));
    let old_key = w.merchant.public_key.clone();
    client(&w, "m1").login(&key).expect("old key signs");

    let keys = format!("/v1/apps/{}/signing-keys", w.merchant.app_id);
    // Step one: the new key is published but does not sign, so old-key-only clients keep working.
    let (status, added) = w.server().post(&w.merchant.api_key, &keys, &json!({}));
    assert_eq!(status, 201, "{added}");
    let (new, old) = (&added["signingKeys"][0], &added["signingKeys"][1]);
    assert_eq!((new["state"].as_str(), old["state"].as_str()), (Some("verifying"), Some("signing")));
    let new_key = new["publicKey"].as_str().unwrap().to_string();
    assert_ne!(new_key, old_key);
    client(&w, "m1").login(&key).expect("the old key still signs until the new one is promoted");

    // Step two: promoted, the new key signs; clients trusting both keep working.
    let promote = format!("{keys}/{}/promote", new["keyId"].as_str().unwrap());
    let (status, promoted) = w.server().post(&w.merchant.api_key, &promote, &json!({}));
    assert_eq!((status, promoted["signingKeys"][0]["state"].as_str()), (200, Some("signing")), "{promoted}");
    assert_eq!(code(client(&w, "m1").login(&key)), "signature_mismatch", "old-key-only clients reject new signatures");
    let mut both = config(&w, "m1");
    both.public_key = String::new();
    both.public_keys = vec![new_key, old_key];
    AuthForgeClient::new(both).login(&key).expect("a client trusting both keys keeps working");

    // Retiring: the old key goes; the signer cannot.
    let retire =
        |id: &Value| w.server().send("DELETE", &w.merchant.api_key, &format!("{keys}/{}", id.as_str().unwrap()), None);
    assert_eq!(retire(&new["keyId"]).0, 409, "the signing key is never retired");
    let (status, listed) = retire(&old["keyId"]);
    assert_eq!((status, listed["signingKeys"][1]["state"].as_str()), (200, Some("retired")), "{listed}");
    assert_eq!(w.server().get(&w.merchant.api_key, &keys).1, listed);
}

#[test]
fn no_credits_refuses_logins_and_bills_nothing() {
    let w = World::new(RELAXED, 0);
    let key = w.merchant.license(w.server(), json!({}));
    assert_eq!(code(client(&w, "m").login(&key)), "no_credits");
    let (_, license) = w.server().get(&w.merchant.api_key, &format!("/v1/licenses/{key}"));
    assert_eq!(license["hwidList"], json!([]), "a refused login binds nothing");
}

#[test]
fn fifty_machines_racing_for_one_slot_bind_exactly_one() {
    let w = World::new(RELAXED, 1000);
    let key = w.merchant.license(w.server(), json!({ "maxHwidSlots": 1 }));
    let racers: Vec<_> = (0..50)
        .map(|i| {
            let (base, app_id, secret, key) =
                (w.server().base.clone(), w.merchant.app_id.clone(), w.merchant.app_secret.clone(), key.clone());
            std::thread::spawn(move || {
                let body = json!({ "appId": app_id, "appSecret": secret, "licenseKey": key,
                                   "hwid": format!("racer-{i}"), "nonce": format!("{i:032x}") });
                let response =
                    reqwest::blocking::Client::new().post(format!("{base}/auth/validate")).json(&body).send();
                let response = response.expect("validate");
                let status = response.status().as_u16();
                (status, response.json::<Value>().unwrap())
            })
        })
        .collect();
    let outcomes: Vec<(u16, Value)> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    let winners = outcomes.iter().filter(|(s, _)| *s == 200).count();
    let mismatches = outcomes.iter().filter(|(s, b)| *s == 403 && b["error"] == "hwid_mismatch").count();
    assert_eq!((winners, mismatches), (1, 49), "{outcomes:?}");
    let (_, license) = w.server().get(&w.merchant.api_key, &format!("/v1/licenses/{key}"));
    assert_eq!(license["hwidList"].as_array().unwrap().len(), 1);
}
