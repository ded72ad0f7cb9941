//! End-user accounts (issue 17) against the real binary, over a real WebSocket client library
//! (tokio-tungstenite) and the Developer API, on SQLite and on Postgres.

#[path = "live/client.rs"]
#[allow(dead_code)] // the scenarios here use part of the shared client
mod client;
mod common;

use client::{live_merchant as merchant, Ws};
use common::{on_both_backends, Deployment, Merchant, Server};
use serde_json::{json, Value};

/// Cheap Argon2 (the tests sign in often), and limits only the scenarios hit.
fn env(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = client::live_env(&[
        ("LICENSD_APP_USER_ARGON2_MEMORY_KIB", "256"),
        ("LICENSD_APP_USER_ARGON2_ITERATIONS", "1"),
        ("LICENSD_APP_USER_IP_LOCKOUT_FAILURES", "1000"),
    ]);
    env.extend_from_slice(extra);
    env
}

fn days(n: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(n)).to_rfc3339()
}

fn session(rt: &std::sync::Arc<tokio::runtime::Runtime>, server: &Server, key: &str, client_id: &str) -> Ws {
    let mut ws = Ws::connect(rt, &server.base);
    assert_eq!(ws.init(key, client_id)["status"], 1);
    ws
}

fn create(ws: &mut Ws, id: u64, login: &str, password: &str, extra: Value) -> Value {
    let mut packet = json!({"type": 1, "id": id, "login": login, "password": password, "credentials_type": 0});
    for (k, v) in extra.as_object().unwrap() {
        packet[k] = v.clone();
    }
    ws.call(packet)
}

fn sign_in(ws: &mut Ws, id: u64, login: &str, password: &str) -> Value {
    ws.call(json!({"type": 3, "id": id, "login": login, "password": password, "credentials_type": 0}))
}

fn user_id(server: &Server, m: &Merchant, login: &str) -> String {
    let (status, found) = server.get(&m.api_key, &format!("/v1/apps/{}/users?search={login}", m.app_id));
    assert_eq!(status, 200, "{found}");
    found["users"][0]["userId"].as_str().unwrap_or_else(|| panic!("no user {login}: {found}")).to_string()
}

fn patch(server: &Server, m: &Merchant, user: &str, body: Value) -> Value {
    let (status, answer) =
        server.send("PATCH", &m.api_key, &format!("/v1/apps/{}/users/{user}", m.app_id), Some(&body));
    assert_eq!(status, 200, "{answer}");
    answer
}

#[test]
fn sign_up_sign_in_statuses_quota_and_linking() {
    on_both_backends(&env(&[("LICENSD_APP_USER_SIGNUPS_PER_IP", "3")]), |deployment, server| {
        let (m, key) = merchant(deployment, server, "users@example.com");
        let rt = client::runtime();
        let mut ws = session(&rt, server, &key, "machine-1");

        // Every documented refusal of packet 1, none of which creates anything.
        assert_eq!(create(&mut ws, 2, "abc", "secret1", json!({}))["status"], 205);
        assert_eq!(create(&mut ws, 3, &"a".repeat(321), "secret1", json!({}))["status"], 206);
        assert_eq!(create(&mut ws, 4, "ann", "secret1", json!({"credentials_type": 1}))["status"], 205);
        assert_eq!(create(&mut ws, 5, "not-an-email", "secret1", json!({"credentials_type": 1}))["status"], 209);
        assert_eq!(create(&mut ws, 6, "ann.b", "12345", json!({}))["status"], 207);
        assert_eq!(create(&mut ws, 7, "ann.b", &"p".repeat(129), json!({}))["status"], 208);
        assert_eq!(create(&mut ws, 8, "ann.b", "secret1", json!({"license": "ABCDE"}))["status"], 101);
        assert_eq!(create(&mut ws, 9, "ann.b", "secret1", json!({"license": "ABCDEF-NOPE"}))["status"], 100);

        // Sign-up, then the same login (any case, any padding) is taken: 202.
        let made = create(&mut ws, 10, "Ann.B", "secret1", json!({"comment": "vip"}));
        assert_eq!(made, json!({"id": 10, "status": 1}));
        assert_eq!(create(&mut ws, 11, " ann.b ", "other-pass", json!({}))["status"], 202);

        // Unknown login and wrong password: the same answer.
        assert_eq!(sign_in(&mut ws, 12, "nobody", "secret1"), json!({"id": 12, "status": 200}));
        assert_eq!(sign_in(&mut ws, 13, "ann.b", "wrong-pass"), json!({"id": 13, "status": 200}));
        assert_eq!(ws.call(json!({"type": 16, "id": 14}))["status"], 3, "not signed in");
        let ok = sign_in(&mut ws, 15, "ANN.B", "secret1");
        assert_eq!(ok["status"], 1, "{ok}");
        assert_eq!(
            (ok["login"].clone(), ok["levels"].clone(), ok["comment"].clone(), ok["license_required"].clone()),
            (json!("Ann.B"), json!([]), json!("vip"), json!(false))
        );
        assert_eq!(ok["ip_address"], "127.0.0.1");
        assert!(ok.get("time_left").is_none(), "no license, no time_left: {ok}");
        assert_eq!(sign_in(&mut ws, 16, "ann.b", "secret1")["status"], 7);
        assert_eq!(ws.call(json!({"type": 16, "id": 17}))["login"], "Ann.B");

        // The per-IP quota of sign-ups without a license: 3, then 5 with retry_after.
        assert_eq!(create(&mut ws, 18, "bob.c", "secret2", json!({}))["status"], 1);
        assert_eq!(create(&mut ws, 19, "cat.d", "secret3", json!({}))["status"], 1);
        let over = create(&mut ws, 20, "dan.e", "secret4", json!({}));
        assert_eq!(over["status"], 5, "{over}");
        let retry = over["retry_after"].as_u64().unwrap();
        assert!(retry > 86_000 && retry <= 86_400, "{over}");

        // Linking: a license with levels and an expiry reaches the user's identity.
        let license = m.license(server, json!({ "expiresAt": days(10), "levels": ["pro"], "maxHwidSlots": 1 }));
        assert_eq!(ws.call(json!({"type": 4, "id": 21, "license": "short"}))["status"], 101);
        assert_eq!(ws.call(json!({"type": 4, "id": 22, "license": "AAAA-BBBB-CCCC-DDDD"}))["status"], 100);
        assert_eq!(ws.call(json!({"type": 4, "id": 23, "license": license}))["status"], 1);
        assert_eq!(ws.call(json!({"type": 4, "id": 24, "license": license}))["status"], 1, "again: no-op");
        let current = ws.call(json!({"type": 16, "id": 25}));
        assert_eq!(current["levels"], json!(["pro"]), "{current}");
        let left = current["time_left"].as_i64().unwrap();
        assert!(left > 9 * 86_400 && left <= 10 * 86_400, "{current}");
        let (_, got) = server.get(&m.api_key, &format!("/v1/licenses/{license}"));
        assert_eq!(got["hwidList"], json!(["machine-1"]), "linking bound the session's client id");

        // The license is the user's: another user cannot link it (106), nor can a license session use it.
        let mut bob = session(&rt, server, &key, "machine-2");
        assert_eq!(bob.call(json!({"type": 4, "id": 2, "license": license}))["status"], 3, "not signed in");
        assert_eq!(sign_in(&mut bob, 3, "bob.c", "secret2")["status"], 1);
        assert_eq!(bob.call(json!({"type": 4, "id": 4, "license": license}))["status"], 106);
        let mut plain = session(&rt, server, &key, "machine-3");
        assert_eq!(plain.call(json!({"type": 2, "id": 2, "license": license}))["status"], 106);
        // A license activated on another machine by license cannot become a user's: 107.
        let used = m.license(server, json!({ "maxHwidSlots": 1 }));
        assert_eq!(plain.call(json!({"type": 2, "id": 3, "license": used}))["status"], 1);
        assert_eq!(bob.call(json!({"type": 4, "id": 5, "license": used}))["status"], 107);

        // Logout, then the Developer API sees the user with their license; tenant isolation.
        assert_eq!(ws.call(json!({"type": 5, "id": 26}))["status"], 1);
        assert_eq!(ws.call(json!({"type": 16, "id": 27}))["status"], 3);
        let ann = user_id(server, &m, "ann.b");
        let (status, detail) = server.get(&m.api_key, &format!("/v1/apps/{}/users/{ann}", m.app_id));
        assert_eq!(status, 200, "{detail}");
        assert_eq!((detail["login"].clone(), detail["licenses"].clone()), (json!("Ann.B"), json!([license])));
        let (other, _) = deployment.merchant(server, "other@example.com");
        let (status, _) = server.get(&other, &format!("/v1/apps/{}/users/{ann}", m.app_id));
        assert_eq!(status, 403, "another account's app");
        let (status, page) = server.get(&m.api_key, &format!("/v1/apps/{}/users?limit=2", m.app_id));
        assert_eq!((status, page["users"].as_array().unwrap().len()), (200, 2), "{page}");
        let cursor = page["cursor"].as_str().unwrap();
        let (_, rest) = server.get(&m.api_key, &format!("/v1/apps/{}/users?limit=2&cursor={cursor}", m.app_id));
        assert_eq!((rest["users"].as_array().unwrap().len(), rest["cursor"].clone()), (1, Value::Null), "{rest}");

        // Protocol errors close: credentials_type outside {0, 1}.
        ws.send(json!({"type": 3, "id": 28, "login": "ann.b", "password": "secret1", "credentials_type": 2}));
        assert_eq!(ws.closed().0, 4302);
    });
}

/// Regression (a sign-in refused under load): packet 1 answered before the in-memory model
/// showed the new user, so a sign-in sent right after its answer could find no such login (200).
/// Each sign-in here is pipelined behind its sign-up, so the server starts it the moment the
/// sign-up is answered; every one must find its user.
#[test]
fn a_sign_in_right_after_sign_up_finds_the_user() {
    on_both_backends(&env(&[("LICENSD_APP_USER_SIGNUPS_PER_IP", "1000")]), |deployment, server| {
        let (_, key) = merchant(deployment, server, "pipelined@example.com");
        let rt = client::runtime();
        for n in 0..40u64 {
            let mut ws = session(&rt, server, &key, &format!("machine-{n}"));
            let login = format!("user.{n}");
            ws.send(json!({"type": 1, "id": 2, "login": login, "password": "secret1", "credentials_type": 0}));
            ws.send(json!({"type": 3, "id": 3, "login": login, "password": "secret1", "credentials_type": 0}));
            assert_eq!(ws.recv(), json!({"id": 2, "status": 1}));
            let signed_in = ws.recv();
            assert_eq!(
                (signed_in["id"].clone(), signed_in["status"].clone()),
                (json!(3), json!(1)),
                "{login}: {signed_in}"
            );
        }
    });
}

/// Signing in activates the user's licenses on the session's machine as packet 2 does: a free
/// slot takes the client id, a license whose slots hold other machines does not count there, and
/// when none of the user's valid licenses takes the machine the sign-in is 502. The key of a
/// linked license does not log in through the SDK endpoint either (`license_linked_to_user`).
#[test]
fn signing_in_binds_the_machine_to_the_users_licenses() {
    on_both_backends(&env(&[]), |deployment, server| {
        let (m, key) = merchant(deployment, server, "machines@example.com");
        let rt = client::runtime();
        let (status, made) = server.post(
            &m.api_key,
            &format!("/v1/apps/{}/users", m.app_id),
            &json!({"login": "ann.b", "password": "secret1"}),
        );
        assert_eq!(status, 201, "{made}");
        let hwids = |license: &str| server.get(&m.api_key, &format!("/v1/licenses/{license}")).1["hwidList"].clone();

        // One slot, taken by machine-1 when it is linked there.
        let single = m.license(server, json!({ "maxHwidSlots": 1, "levels": ["pro"] }));
        let mut first = session(&rt, server, &key, "machine-1");
        assert_eq!(sign_in(&mut first, 2, "ann.b", "secret1")["status"], 1);
        assert_eq!(first.call(json!({"type": 4, "id": 3, "license": single}))["status"], 1);
        assert_eq!(hwids(&single), json!(["machine-1"]));
        // Machine-2: the user's only license is bound elsewhere, so 502, as packet 2 answers.
        let mut second = session(&rt, server, &key, "machine-2");
        assert_eq!(sign_in(&mut second, 2, "ann.b", "secret1"), json!({"id": 2, "status": 502}));
        assert_eq!(second.call(json!({"type": 16, "id": 3}))["status"], 3, "not signed in");
        assert_eq!(hwids(&single), json!(["machine-1"]), "nothing bound by the refusal");

        // A second license with two slots: machine-2 takes its free slot by signing in, and only
        // that license counts there (its levels, not the first one's).
        let double = m.license(server, json!({ "maxHwidSlots": 2, "levels": ["basic"] }));
        assert_eq!(first.call(json!({"type": 4, "id": 4, "license": double}))["status"], 1);
        let ok = sign_in(&mut second, 4, "ann.b", "secret1");
        assert_eq!((ok["status"].clone(), ok["levels"].clone()), (json!(1), json!(["basic"])), "{ok}");
        assert_eq!(hwids(&double), json!(["machine-1", "machine-2"]));
        assert_eq!(hwids(&single), json!(["machine-1"]));
        assert_eq!(first.call(json!({"type": 16, "id": 5}))["levels"], json!(["pro", "basic"]));
        // Signing in again where it is bound writes nothing new and still counts both.
        assert_eq!(first.call(json!({"type": 5, "id": 6}))["status"], 1);
        assert_eq!(sign_in(&mut first, 7, "ann.b", "secret1")["levels"], json!(["pro", "basic"]));

        // Both full now: machine-3 is refused; a reset of the first frees it for machine-3.
        let mut third = session(&rt, server, &key, "machine-3");
        assert_eq!(sign_in(&mut third, 2, "ann.b", "secret1")["status"], 502);
        m.put(server, &format!("/v1/licenses/{single}"), json!({"action": "reset-hwid"}));
        assert_eq!(sign_in(&mut third, 3, "ann.b", "secret1")["levels"], json!(["pro"]));
        assert_eq!(hwids(&single), json!(["machine-3"]));

        // The key of a linked license is the user's: the SDK endpoint refuses it.
        let body = |license: &str, nonce: &str| {
            let app = (&m.app_id, &m.app_secret);
            json!({"appId": app.0, "appSecret": app.1, "licenseKey": license, "hwid": "machine-3", "nonce": nonce})
        };
        let (status, refused) = server.auth("/auth/validate", &body(&single, &"a".repeat(32)));
        assert_eq!((status, refused), (403, json!({"status": "failed", "error": "license_linked_to_user"})));
        let free = m.license(server, json!({}));
        assert_eq!(
            server.auth("/auth/validate", &body(&free, &"b".repeat(32))).0,
            200,
            "an unlinked license validates"
        );
    });
}

#[test]
fn app_rules_license_required_and_closed_sign_up() {
    on_both_backends(&env(&[]), |deployment, server| {
        let (m, key) = merchant(deployment, server, "rules@example.com");
        let rt = client::runtime();
        let mut ws = session(&rt, server, &key, "machine-1");
        let settings = format!("/v1/apps/{}/settings", m.app_id);
        m.put(server, &settings, json!({ "userLicenseRequired": true }));
        assert_eq!(create(&mut ws, 2, "ann.b", "secret1", json!({}))["status"], 204);
        assert_eq!(create(&mut ws, 3, "ann.b", "secret1", json!({"license": ""}))["status"], 204);
        let license = m.license(server, json!({ "expiresAt": days(1) }));
        assert_eq!(create(&mut ws, 4, "ann.b", "secret1", json!({"license": license}))["status"], 1);
        assert_eq!(create(&mut ws, 5, "bob.c", "secret1", json!({"license": license}))["status"], 106);
        assert_eq!(sign_in(&mut ws, 6, "bob.c", "secret1")["status"], 200, "the refused sign-up left no user");
        let ok = sign_in(&mut ws, 7, "ann.b", "secret1");
        assert_eq!((ok["status"].clone(), ok["license_required"].clone()), (json!(1), json!(true)), "{ok}");
        assert!(ok["time_left"].as_i64().unwrap() > 0);
        // Revoked, the license no longer covers the user: 203 with the payload.
        m.put(server, &format!("/v1/licenses/{license}"), json!({"action": "revoke"}));
        let current = ws.call(json!({"type": 16, "id": 8}));
        assert_eq!((current["status"].clone(), current["login"].clone()), (json!(203), json!("ann.b")));
        assert_eq!(ws.call(json!({"type": 5, "id": 9}))["status"], 1);
        assert_eq!(sign_in(&mut ws, 10, "ann.b", "secret1")["status"], 203);

        m.put(server, &settings, json!({ "userSignupClosed": true, "userLicenseRequired": false }));
        assert_eq!(create(&mut ws, 11, "cat.d", "secret1", json!({}))["status"], 603);
        let (status, settings) = server.get(&m.api_key, &settings);
        assert_eq!((status, settings["userSignupClosed"].clone()), (200, json!(true)), "{settings}");
    });
}

#[test]
fn merchant_changes_reach_the_users_sessions() {
    on_both_backends(&env(&[]), |deployment, server| {
        let (m, key) = merchant(deployment, server, "pushes@example.com");
        let rt = client::runtime();
        let mut ws = session(&rt, server, &key, "machine-1");
        let (status, made) = server.post(
            &m.api_key,
            &format!("/v1/apps/{}/users", m.app_id),
            &json!({"login": "ann.b", "password": "secret1", "levels": ["beta"]}),
        );
        assert_eq!(status, 201, "{made}");
        let ann = made["userId"].as_str().unwrap().to_string();
        assert_eq!(ws.call(json!({"type": 17, "id": 2, "subscribed": true}))["status"], 1);
        assert_eq!(sign_in(&mut ws, 3, "ann.b", "secret1")["levels"], json!(["beta"]));

        patch(server, &m, &ann, json!({"levels": ["gold", "beta"]}));
        let event = ws.recv();
        assert_eq!(
            event,
            json!({"id": 18446744073709551615u64, "event_type": 305, "content": {"levels": "[\"gold\",\"beta\"]"}})
        );
        assert_eq!(ws.call(json!({"type": 16, "id": 4}))["levels"], json!(["gold", "beta"]));

        // Blacklisted: event 301, the authorization is gone, and signing in is 201.
        patch(server, &m, &ann, json!({"status": "blacklisted"}));
        assert_eq!(ws.recv(), json!({"id": 18446744073709551615u64, "event_type": 301}));
        assert_eq!(ws.call(json!({"type": 16, "id": 5}))["status"], 3);
        assert_eq!(sign_in(&mut ws, 6, "ann.b", "secret1")["status"], 201);
        assert_eq!(sign_in(&mut ws, 7, "ann.b", "wrong-pass")["status"], 200, "only the password holder learns it");
        patch(server, &m, &ann, json!({"status": "active"}));
        assert_eq!(sign_in(&mut ws, 8, "ann.b", "secret1")["status"], 1);

        // A password reset by the merchant: event 304, signed out; only the new password works.
        patch(server, &m, &ann, json!({"password": "new-secret"}));
        assert_eq!(ws.recv(), json!({"id": 18446744073709551615u64, "event_type": 304}));
        assert_eq!(ws.call(json!({"type": 16, "id": 9}))["status"], 3);
        assert_eq!(sign_in(&mut ws, 10, "ann.b", "secret1")["status"], 200);
        assert_eq!(sign_in(&mut ws, 11, "ann.b", "new-secret")["status"], 1);

        // Deleted: event 303, signed out, the login gone (and free again).
        let (status, _) = server.send("DELETE", &m.api_key, &format!("/v1/apps/{}/users/{ann}", m.app_id), None);
        assert_eq!(status, 200);
        assert_eq!(ws.recv(), json!({"id": 18446744073709551615u64, "event_type": 303}));
        assert_eq!(ws.call(json!({"type": 16, "id": 12}))["status"], 3);
        assert_eq!(sign_in(&mut ws, 13, "ann.b", "new-secret")["status"], 200);
        let (status, _) = server.get(&m.api_key, &format!("/v1/apps/{}/users/{ann}", m.app_id));
        assert_eq!(status, 404);
        assert_eq!(create(&mut ws, 14, "ann.b", "secret1", json!({}))["status"], 1);
    });
}

#[test]
fn a_concurrent_burst_of_guesses_is_checked_at_most_the_lockout_limit() {
    let env = env(&[("LICENSD_APP_USER_LOCKOUT_FAILURES", "5")]);
    common::each_backend(|deployment| {
        let running = deployment.start_with(&env);
        let server = &running;
        let (m, key) = merchant(deployment, server, "burst@example.com");
        let (status, _) = server.post(
            &m.api_key,
            &format!("/v1/apps/{}/users", m.app_id),
            &json!({"login": "ann.b", "password": "secret1"}),
        );
        assert_eq!(status, 201);
        let rt = client::runtime();
        let mut sockets: Vec<Ws> = (0..20).map(|n| session(&rt, server, &key, &format!("machine-{n}"))).collect();
        for (n, ws) in sockets.iter_mut().enumerate() {
            ws.send(json!({"type": 3, "id": 100 + n, "login": "ann.b", "password": "wrong-pass"}));
        }
        let answers: Vec<Value> = sockets.iter_mut().map(|ws| ws.recv()).collect();
        let checked = answers.iter().filter(|a| a["status"] == 200).count();
        let locked: Vec<&Value> = answers.iter().filter(|a| a["status"] == 5).collect();
        assert_eq!((checked, locked.len()), (5, 15), "{answers:?}");
        assert!(locked.iter().all(|a| a["retry_after"].as_u64().is_some_and(|s| s > 0)));
        // Locked now: even the right password is refused unchecked; another login is not locked.
        assert_eq!(sign_in(&mut sockets[0], 200, "ann.b", "secret1")["status"], 5);
        assert_eq!(sign_in(&mut sockets[0], 201, "nobody.x", "secret1")["status"], 200);
        // The lock is in the database: a restart keeps it.
        drop(sockets);
        running.terminate();
        let restarted = deployment.start_with(&env);
        let mut ws = session(&rt, &restarted, &key, "machine-x");
        assert_eq!(sign_in(&mut ws, 2, "ann.b", "secret1")["status"], 5);
    });
}

/// The per-IP softlock counts guesses, not people: correct sign-ins of many users behind one
/// address (an office, a NAT) never lock it, while wrong passwords from it still do.
#[test]
fn correct_sign_ins_behind_one_address_never_lock_it() {
    let env = env(&[("LICENSD_APP_USER_IP_LOCKOUT_FAILURES", "3"), ("LICENSD_APP_USER_SIGNUPS_PER_IP", "100")]);
    on_both_backends(&env, |deployment, server| {
        let (_, key) = merchant(deployment, server, "office@example.com");
        let rt = client::runtime();
        let mut ws = session(&rt, server, &key, "machine-1");
        for n in 0..8u64 {
            let login = format!("staff.{n}");
            assert_eq!(create(&mut ws, 100 + n, &login, "secret1", json!({}))["status"], 1);
        }
        // One guess now and then in between does not add up to a lock either.
        assert_eq!(sign_in(&mut ws, 2, "staff.0", "wrong-pass")["status"], 200);
        for n in 0..8u64 {
            let answer = sign_in(&mut ws, 10 + n * 2, &format!("staff.{n}"), "secret1");
            assert_eq!(answer["status"], 1, "staff.{n}: {answer}");
            assert_eq!(ws.call(json!({"type": 5, "id": 11 + n * 2}))["status"], 1);
        }
        // Guesses still lock the address: the third failure is the last one checked.
        assert_eq!(sign_in(&mut ws, 40, "staff.1", "wrong-pass")["status"], 200);
        assert_eq!(sign_in(&mut ws, 41, "staff.2", "wrong-pass")["status"], 200);
        assert_eq!(sign_in(&mut ws, 42, "staff.3", "secret1")["status"], 5, "locked now, even a right password");
    });
}

/// Unknown login and wrong password cost the same: medians of interleaved runs compared loosely
/// (a factor, not a wall-clock bound), with an Argon2 cost high enough to dominate.
#[test]
fn unknown_login_and_wrong_password_take_comparable_time() {
    let extra = [("LICENSD_APP_USER_ARGON2_MEMORY_KIB", "4096"), ("LICENSD_APP_USER_LOCKOUT_FAILURES", "1000")];
    let dir = common::TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start_with(&env(&extra));
    let (m, key) = merchant(&deployment, &server, "timing@example.com");
    let (status, _) = server.post(
        &m.api_key,
        &format!("/v1/apps/{}/users", m.app_id),
        &json!({"login": "ann.b", "password": "secret1"}),
    );
    assert_eq!(status, 201);
    let rt = client::runtime();
    let mut ws = session(&rt, &server, &key, "machine-1");
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for n in 0..15u64 {
        for (login, times) in [("ann.b", &mut known), ("nobody.x", &mut unknown)] {
            let started = std::time::Instant::now();
            assert_eq!(
                sign_in(&mut ws, n * 2 + 2 + u64::from(login == "nobody.x"), login, "wrong-pass")["status"],
                200
            );
            times.push(started.elapsed());
        }
    }
    let median = |times: &mut Vec<std::time::Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let (known, unknown) = (median(&mut known), median(&mut unknown));
    let ratio = known.as_secs_f64() / unknown.as_secs_f64();
    assert!((0.5..2.0).contains(&ratio), "wrong password {known:?} vs unknown login {unknown:?}");
}

/// GDPR: `forget` erases an app user. Afterwards no table, event or log line holds the login (it
/// never was in plain text anywhere but the sealed vault, and the vault rows are gone), the audit
/// trail counts the erasure, and a rebuild from the log brings nothing back. Webhooks got
/// `user.created`, `user.blacklisted` and `user.deleted` with ids only.
#[test]
fn forget_erases_an_app_user_and_a_rebuild_cannot_bring_it_back() {
    const LOGIN: &str = "Erase.Me.Zq7@example.com";
    let dir = common::TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let log = dir.0.join("server.log");
    let server = deployment.start_logging_to(&[env(&[]), vec![("LICENSD_LOG", "debug")]].concat(), Some(&log));
    let (m, key) = merchant(&deployment, &server, "forget@example.com");
    let (status, hook) = server.post(
        &m.api_key,
        &format!("/v1/apps/{}/webhooks", m.app_id),
        &json!({"url": "http://127.0.0.1:9/hook", "events": ["user.created", "user.blacklisted", "user.deleted"]}),
    );
    assert_eq!(status, 201, "{hook}");
    let rt = client::runtime();
    let mut ws = session(&rt, &server, &key, "machine-1");
    let made = create(&mut ws, 2, LOGIN, "secret1", json!({"credentials_type": 1, "comment": "Zq7 private"}));
    assert_eq!(made["status"], 1, "{made}");
    assert_eq!(sign_in(&mut ws, 3, LOGIN, "secret1")["status"], 1);
    let user = user_id(&server, &m, "erase.me.zq7@example.com");
    patch(&server, &m, &user, json!({"status": "blacklisted"}));

    let (status, forgotten) = server.post(
        &m.api_key,
        &format!("/v1/apps/{}/customers/forget", m.app_id),
        &json!({"customerEmail": LOGIN, "reason": format!("request from {LOGIN}")}),
    );
    assert_eq!(status, 200, "{forgotten}");
    assert_eq!(forgotten["usersErased"], 1, "{forgotten}");
    let (status, _) = server.get(&m.api_key, &format!("/v1/apps/{}/users/{user}", m.app_id));
    assert_eq!(status, 404);
    assert_eq!(sign_in(&mut ws, 4, LOGIN, "secret1")["status"], 200, "the verifier is gone");

    let webhook = hook["webhookId"].as_str().unwrap();
    // The outbox is a read model of its own: it queues the deletion within moments.
    let queued = |event: &str| {
        let path = format!("/v1/apps/{}/webhooks/{webhook}/deliveries", m.app_id);
        (0..100).any(|_| {
            let (_, deliveries) = server.get(&m.api_key, &path);
            let found = deliveries["deliveries"].as_array().is_some_and(|d| d.iter().any(|d| d["event"] == event));
            if !found {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            found
        })
    };
    for event in ["user.created", "user.blacklisted", "user.deleted"] {
        assert!(queued(event), "{event} queued");
    }

    let (_, audit) = server.get(&m.api_key, "/v1/audit-log");
    assert!(audit.to_string().contains("CustomersForgotten"), "{audit}");
    server.terminate();
    let live = common::caught_up_hashes(&deployment);
    let rebuilt = deployment.cli(&["rebuild"]);
    assert_eq!(common::caught_up_hashes(&deployment), live, "a rebuild equals the live read models: {rebuilt}");
    let server = deployment.start_with(&env(&[]));
    let (status, listed) = server.get(&m.api_key, &format!("/v1/apps/{}/users", m.app_id));
    assert_eq!((status, listed["users"].clone()), (200, json!([])), "a rebuild brings no user back");
    server.terminate();

    let needles = [LOGIN.to_string(), LOGIN.to_lowercase(), "Zq7 private".to_string()];
    let stored = dir.sqlite_files();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    for needle in &needles {
        assert!(!stored.contains(needle.as_str()), "a database file holds {needle}");
        assert!(!logged.contains(needle.as_str()), "the log holds {needle}");
    }
}
