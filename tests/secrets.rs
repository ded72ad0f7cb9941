//! Credentials and keys, with the real binary on SQLite and Postgres: the dashboard lockout holds
//! under a burst and across a restart (its escalation is tested in `commands/src/lockout.rs`), password verifiers stay out of the event log, the server
//! refuses a master key that cannot open its database, bad settings stop it before the database
//! is touched, account emails are unique, and a license email change is audited.

mod common;

use common::{each_backend, Deployment, Server, TempDir};
use serde_json::{json, Value};
use std::time::Duration;

const PASSWORD: &str = "a long dashboard password";
const WRONG: &str = "not the password at all";

use common::no_redirect_client as http;

/// One dashboard sign-in form post; returns the status (303 signed in, 401 wrong, 429 locked).
fn sign_in(base: &str, email: &str, password: &str) -> u16 {
    let form = [("email", email), ("password", password)];
    http().post(format!("{base}/dashboard/login")).form(&form).send().expect("sign-in").status().as_u16()
}

/// An account with a dashboard password; returns its id and API key.
fn account_with_password(deployment: &Deployment, email: &str) -> (String, String) {
    let account = deployment.cli(&["account", "create", "--email", email]);
    let id = account["accountId"].as_str().unwrap().to_string();
    deployment.cli_with_input(&["account", "set-password", "--account", &id], &format!("{PASSWORD}\n"));
    (id, account["apiKey"].as_str().unwrap().to_string())
}

#[test]
fn a_burst_of_wrong_passwords_gets_at_most_the_limit_checked_and_the_lock_survives_a_restart() {
    each_backend(|deployment| {
        account_with_password(deployment, "burst@example.com");
        let env = [("LICENSD_DASHBOARD_MAX_FAILURES", "5"), ("LICENSD_DASHBOARD_LOCKOUT_SECS", "600")];
        let server = deployment.start_with(&env);
        let statuses: Vec<u16> = std::thread::scope(|scope| {
            let guesses: Vec<_> =
                (0..20).map(|_| scope.spawn(|| sign_in(&server.base, "burst@example.com", WRONG))).collect();
            guesses.into_iter().map(|g| g.join().unwrap()).collect()
        });
        let checked = statuses.iter().filter(|s| **s == 401).count();
        let locked = statuses.iter().filter(|s| **s == 429).count();
        assert_eq!(checked + locked, 20, "every guess is either checked or refused as locked: {statuses:?}");
        assert!(checked <= 5, "{checked} of 20 concurrent guesses were checked; the limit is 5: {statuses:?}");
        let backend = if deployment.database_url.starts_with("postgres") { "Postgres" } else { "SQLite" };
        eprintln!("burst on {backend}: {checked} of 20 checked, {locked} refused as locked");
        assert_eq!(sign_in(&server.base, "burst@example.com", PASSWORD), 429, "locked even for the right password");
        server.terminate();

        // Another email is not affected (created while the server is down, so its start reads it).
        account_with_password(deployment, "other@example.com");
        let server = deployment.start_with(&env);
        assert_eq!(sign_in(&server.base, "burst@example.com", PASSWORD), 429, "a restart does not lift the lock");
        assert_eq!(sign_in(&server.base, "other@example.com", PASSWORD), 303);
    });
}

/// Every event payload in the log, read straight from the database.
fn event_payloads(deployment: &Deployment) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = licensd_store::Store::connect(&deployment.database_url, &licensd_store::StoreOptions::durable())
            .await
            .unwrap();
        let rows = store.query_text("SELECT CAST(payload AS TEXT) FROM events", &[]).await.unwrap();
        store.close().await;
        rows.into_iter().flatten().collect()
    })
}

#[test]
fn password_verifiers_stay_out_of_the_event_log_and_still_sign_in() {
    each_backend(|deployment| {
        account_with_password(deployment, "sealed@example.com");
        let payloads = event_payloads(deployment);
        assert!(payloads.iter().any(|p| p.contains("DashboardLoginSet") || p.contains("email_digest")));
        let leaked: Vec<_> = payloads.iter().filter(|p| p.contains("$argon2")).collect();
        assert!(leaked.is_empty(), "password verifiers in the event log: {leaked:?}");
        let server = deployment.start();
        assert_eq!(sign_in(&server.base, "sealed@example.com", PASSWORD), 303);
        assert_eq!(sign_in(&server.base, "sealed@example.com", WRONG), 401);
    });
}

/// Appends a `DashboardLoginSet` as written before verifiers left the log (with the Argon2id
/// `password_hash` of `password`), for the account whose newest such event is in the log.
fn append_legacy_login_event(deployment: &Deployment, account_id: &str, password: &str) {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    use licensd_store::EventStore;
    let salt = SaltString::generate(&mut OsRng);
    let hash = argon2::Argon2::default().hash_password(password.as_bytes(), &salt).unwrap().to_string();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = licensd_store::Store::connect(&deployment.database_url, &licensd_store::StoreOptions::durable())
            .await
            .unwrap();
        let stream = format!("account-{account_id}");
        let events = store.read_stream(&stream, 1).await.unwrap();
        let last = events.last().unwrap();
        let digest = events.iter().rev().find(|e| e.event_type == "DashboardLoginSet").unwrap().payload_json()
            ["email_digest"]
            .clone();
        let payload = json!({
            "type": "DashboardLoginSet", "email_digest": digest, "password_hash": hash, "at": "2026-01-01T00:00:00Z",
        });
        let event = licensd_store::NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: "DashboardLoginSet".into(),
            schema_version: 1,
            payload,
            metadata: json!({ "actor": "operator", "account_id": account_id }),
        };
        let expected = licensd_store::ExpectedVersion::Exact(last.version);
        store.append(licensd_store::AppendRequest::new(stream, expected, vec![event])).await.unwrap();
        store.close().await;
    });
}

#[test]
fn a_verifier_in_an_old_event_still_signs_in() {
    each_backend(|deployment| {
        let (account_id, _) = account_with_password(deployment, "legacy@example.com");
        append_legacy_login_event(deployment, &account_id, "the password of an older release");
        let server = deployment.start();
        assert_eq!(sign_in(&server.base, "legacy@example.com", "the password of an older release"), 303);
        assert_eq!(sign_in(&server.base, "legacy@example.com", PASSWORD), 401, "the newest event decides");
        server.kill();
        // A password set afterwards (sealed, no verifier in its event) takes over again.
        deployment.cli_with_input(&["account", "set-password", "--account", &account_id], &format!("{PASSWORD}\n"));
        let server = deployment.start();
        assert_eq!(sign_in(&server.base, "legacy@example.com", PASSWORD), 303);
    });
}

#[test]
fn serve_refuses_a_master_key_that_cannot_open_the_database() {
    each_backend(|deployment| {
        let server = deployment.start();
        deployment.merchant(&server, "keyed@example.com");
        server.terminate();
        let head = deployment.cli(&["projections"])["head"].clone();

        let other = Deployment {
            data_dir: deployment.data_dir.clone(),
            database_url: deployment.database_url.clone(),
            master_key: Some("ef".repeat(32)),
        };
        let refused = other.serve_fails();
        assert!(
            refused.contains("LICENSD_MASTER_KEY") && refused.contains("master.key"),
            "the refusal names the key settings: {refused}"
        );
        assert_eq!(deployment.cli(&["projections"])["head"], head, "the database is untouched");
        let server = deployment.start(); // the right key still starts and serves
        assert_eq!(server.get_text("/healthz").0, 200);
    });
}

#[test]
fn invalid_settings_stop_the_server_before_the_database_is_created() {
    for bad in [("LICENSD_SMTP_URL", "not a url"), ("LICENSD_MASTER_KEY", "abcd")] {
        let dir = TempDir::new();
        let deployment = Deployment::sqlite(&dir.0);
        let mut child = std::process::Command::new(common::BIN)
            .arg("serve")
            .env("LICENSD_DATA_DIR", &deployment.data_dir)
            .env("LICENSD_DATABASE_URL", &deployment.database_url)
            .env("LICENSD_LISTEN", "127.0.0.1:0")
            .env("LICENSD_LOG", "warn")
            .env(bad.0, bad.1)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("licensd serve kept running with {bad:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!status.success(), "{bad:?} must stop the server");
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(stderr.contains(bad.0), "the error names {}: {stderr}", bad.0);
        assert!(!dir.0.join("licensd.db").exists(), "{bad:?}: the database was created before the check");
    }
}

#[test]
fn two_accounts_cannot_share_an_email_even_when_created_at_once() {
    each_backend(|deployment| {
        deployment.cli(&["migrate"]); // so the racing processes below do not all create the schema
        let spellings = ["same@example.com", "Same@Example.com", " same@example.com", "SAME@example.com"];
        let outcomes: Vec<bool> = std::thread::scope(|scope| {
            let creates: Vec<_> = spellings
                .iter()
                .map(|email| {
                    scope.spawn(move || {
                        let mut command = deployment_command(deployment, &["account", "create", "--email", email]);
                        command.output().unwrap()
                    })
                })
                .collect();
            creates
                .into_iter()
                .map(|c| {
                    let output = c.join().unwrap();
                    if !output.status.success() {
                        let stderr = String::from_utf8_lossy(&output.stderr);
                        assert!(stderr.contains("already"), "refused for the right reason: {stderr}");
                    }
                    output.status.success()
                })
                .collect()
        });
        assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 1, "exactly one account per email: {outcomes:?}");
        let refused = deployment.cli_fails(&["account", "create", "--email", "same@EXAMPLE.com"]);
        assert!(refused.contains("already"), "{refused}");
        deployment.cli(&["account", "create", "--email", "different@example.com"]);
    });
}

fn deployment_command(deployment: &Deployment, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(common::BIN);
    command
        .args(args)
        .env("LICENSD_DATA_DIR", &deployment.data_dir)
        .env("LICENSD_DATABASE_URL", &deployment.database_url)
        .env("LICENSD_LOG", "warn")
        .env_remove("LICENSD_MASTER_KEY");
    if let Some(key) = &deployment.master_key {
        command.env("LICENSD_MASTER_KEY", key);
    }
    command
}

#[test]
fn setting_and_clearing_a_license_email_is_audited_without_the_address() {
    each_backend(|deployment| {
        let server = deployment.start();
        let (api_key, app_id) = deployment.merchant(&server, "audit@example.com");
        let (_, created) = server.post(&api_key, "/v1/licenses", &json!({ "appId": app_id }));
        let key = created["licenses"][0]["licenseKey"].as_str().unwrap().to_string();
        let email_path = format!("/v1/licenses/{key}/email");
        let set = server.send("PUT", &api_key, &email_path, Some(&json!({ "email": "buyer@example.com" })));
        assert_eq!(set.0, 200, "{set:?}");
        let cleared = server.send("PUT", &api_key, &email_path, Some(&json!({ "email": null })));
        assert_eq!(cleared.0, 200, "{cleared:?}");
        let history = history_types(&server, &api_key, &key);
        let email_events: Vec<_> = history.iter().filter(|(t, _)| t.contains("Email")).collect();
        assert_eq!(email_events.len(), 2, "one audited event per change: {history:?}");
        assert!(
            history.iter().all(|(_, body)| !body.contains("buyer@example.com")),
            "no address in the log: {history:?}"
        );
        assert!(event_payloads(deployment).iter().all(|p| !p.contains("buyer@")), "no address in the log");
    });
}

#[test]
fn removing_a_license_email_keeps_its_other_personal_data() {
    each_backend(|deployment| {
        let server = deployment.start();
        let (api_key, app_id) = deployment.merchant(&server, "fields@example.com");
        let (_, created) = server.post(&api_key, "/v1/licenses", &json!({ "appId": app_id }));
        let key = created["licenses"][0]["licenseKey"].as_str().unwrap().to_string();
        let email_path = format!("/v1/licenses/{key}/email");
        assert_eq!(server.send("PUT", &api_key, &email_path, Some(&json!({ "email": "b@example.com" }))).0, 200);
        // The provider customer id a purchase leaves next to the email (its sealed value is not
        // opened here; only whether the row survives matters).
        let subject = format!("license-{key}");
        let insert = "INSERT INTO pii (subject, field, value) VALUES ($1, 'customer_id', 'v1.sealed')";
        common::sql(deployment, insert, vec![subject.clone().into()]);
        assert_eq!(server.send("PUT", &api_key, &email_path, Some(&json!({ "email": null }))).0, 200);
        let fields = common::sql(deployment, "SELECT field FROM pii WHERE subject = $1", vec![subject.into()]);
        assert_eq!(fields, vec!["customer_id".to_string()], "only the email is removed");
    });
}

fn history_types(server: &Server, api_key: &str, key: &str) -> Vec<(String, String)> {
    let (status, history) = server.get(api_key, &format!("/v1/licenses/{key}/events"));
    assert_eq!(status, 200, "{history}");
    let events = history["events"].as_array().cloned().unwrap_or_default();
    events.iter().map(|e| (e["type"].as_str().unwrap_or_default().to_string(), e.to_string())).collect::<Vec<_>>()
}

#[test]
fn bulk_replay_refuses_unknown_filter_fields() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let server = deployment.start();
    let (api_key, _) = deployment.merchant(&server, "replay@example.com");
    let (status, answer) = server.post(&api_key, "/v1/commerce/events/replay", &json!({ "stauts": "failed" }));
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("stauts"), "the error names the field: {answer}");
    let (status, answer) = server.post(&api_key, "/v1/commerce/events/replay", &json!({ "limit": "5" }));
    assert_eq!(status, 400, "the replay takes no limit (it would replay up to 200): {answer}");
    let (status, answer) = server.get(&api_key, "/v1/commerce/events?stauts=failed");
    assert_eq!(status, 400, "the listing refuses an unknown filter too: {answer}");
    let (status, answer) = server.post(&api_key, "/v1/commerce/events/replay", &json!({ "status": "failed" }));
    assert_eq!((status, answer["replayed"].clone()), (200, Value::from(0)), "{answer}");
}

/// A browser that drops the session cookie (a `Secure` cookie over plain HTTP on a real hostname)
/// is told why, instead of landing on the sign-in form again without a word.
#[test]
fn a_sign_in_whose_cookie_the_browser_dropped_says_so() {
    each_backend(|deployment| {
        account_with_password(deployment, "cookie@example.com");
        let server = deployment.start();
        let form = [("email", "cookie@example.com"), ("password", PASSWORD)];
        let signed_in = http().post(format!("{}/dashboard/login", server.base)).form(&form).send().expect("sign-in");
        assert_eq!(signed_in.status().as_u16(), 303);
        let next = signed_in.headers()["location"].to_str().unwrap().to_string();
        let cookie = signed_in.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
        let url = format!("{}{next}", server.base);

        // The browser kept the cookie: the dashboard.
        let kept = http().get(&url).header("cookie", &cookie).send().unwrap();
        assert_eq!(kept.status().as_u16(), 200, "signed in with the cookie");

        // The browser dropped it: sent to the sign-in page, which says what happened and what to do.
        let dropped = http().get(&url).send().unwrap();
        assert_eq!(dropped.status().as_u16(), 303);
        let login = dropped.headers()["location"].to_str().unwrap().to_string();
        let (status, page) = server.get_text(&login);
        assert_eq!(status, 200);
        assert!(page.contains("did not keep the session cookie"), "the page says what happened: {page}");
        assert!(page.contains("LICENSD_COOKIE_SECURE=false"), "and what to do");

        // Arriving signed out any other way says nothing about cookies.
        let plain = http().get(format!("{}/dashboard", server.base)).send().unwrap();
        assert_eq!(plain.headers()["location"], "/dashboard/login");
        let (_, page) = server.get_text("/dashboard/login");
        assert!(!page.contains("did not keep the session cookie"));
    });
}
