//! `licensd rotate-master-key` with the real binary on SQLite and Postgres: after a rotation
//! (cut short by SIGKILL, then run again) the server starts with the new key and everything
//! sealed before still works (SDK sessions signed with the app's key, license emails, dashboard
//! sign-in, webhook signatures, commerce webhook signatures, kept idempotent answers), the old key
//! is refused and opens none of the re-sealed vault rows, the keyring no longer holds the old
//! key (the secrets inside events were recorded sealed anew), and a rebuild gives the read models
//! the rotation left. A rotation is refused while a server runs.

mod common;

use authforge::{AuthForgeClient, AuthForgeConfig};
use common::{caught_up_hashes, each_backend, hmac_hex, Deployment, Merchant, Server, BIN, RELAXED_LIMITS};
use licensd_commands::MasterKey;
use licensd_domain::Sealed;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

const PASSWORD: &str = "a long dashboard password";
const LEMON_SECRET: &str = "lemon-signing-secret";

use common::no_redirect_client as http;

/// `licensd rotate-master-key` as the deployment's other commands run, with `env` added.
fn rotate_command(deployment: &Deployment, new_key_file: &std::path::Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["rotate-master-key", "--new-key-file"])
        .arg(new_key_file)
        .env("LICENSD_DATA_DIR", &deployment.data_dir)
        .env("LICENSD_DATABASE_URL", &deployment.database_url)
        .env("LICENSD_LOG", "warn")
        .env_remove("LICENSD_MASTER_KEY")
        .envs(env.iter().copied());
    if let Some(key) = &deployment.master_key {
        command.env("LICENSD_MASTER_KEY", key);
    }
    command
}

/// Starts a rotation re-sealing one row per transaction and SIGKILLs it once the first batch
/// is committed.
fn rotate_and_kill_midway(deployment: &Deployment, new_key_file: &std::path::Path) {
    rotate_and_kill_at(deployment, new_key_file, "re-sealed a batch");
}

/// Starts a rotation and SIGKILLs it at its first log line containing `step`.
fn rotate_and_kill_at(deployment: &Deployment, new_key_file: &std::path::Path, step: &str) {
    let mut child = rotate_command(deployment, new_key_file, &[("LICENSD_LOG", "info"), ("LICENSD_ROTATE_BATCH", "1")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn licensd rotate-master-key");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut seen = String::new();
    loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            panic!("the rotation ended before '{step}': {seen}");
        }
        seen.push_str(&line);
        if line.contains(step) {
            break;
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
}

/// A webhook receiver: 200 when a body's signature verifies under `secret` (set once the
/// webhook is created), 401 otherwise; returns its URL.
fn signature_checking_receiver(secret: Arc<Mutex<String>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut line, mut length, mut signature) = (String::new(), 0usize, String::new());
            let _ = reader.read_line(&mut line);
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap_or_default();
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "x-authforge-signature" => signature = value.trim().to_string(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let valid = signature == format!("sha256={}", hmac_hex(&secret.lock().unwrap(), &body));
            let status = if valid { 200 } else { 401 };
            let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    url
}

/// What is created before the rotation and checked after it.
struct Before {
    merchant: Merchant,
    licenses: Vec<String>,
    webhook: String,
    idempotent_answer: Value,
    lemon_path: String,
}

fn create_data(deployment: &Deployment, server: &Server) -> Before {
    let merchant = deployment.merchant_with_credits(server, "owner@example.com", 1000);
    deployment
        .cli_with_input(&["account", "set-password", "--account", &merchant.account_id], &format!("{PASSWORD}\n"));
    // One vault row per license email: enough rows that a rotation is cut short midway.
    let licenses: Vec<String> = (0..12)
        .map(|i| {
            let key = merchant.license(server, json!({ "maxHwidSlots": 2 }));
            let email = json!({ "email": format!("buyer{i}@example.com") });
            let (status, answer) =
                server.send("PUT", &merchant.api_key, &format!("/v1/licenses/{key}/email"), Some(&email));
            assert_eq!(status, 200, "{answer}");
            key
        })
        .collect();
    for key in &licenses {
        let (status, answer) = server.get(&merchant.api_key, &format!("/v1/licenses/{key}"));
        assert_eq!(status, 200, "{answer}");
        assert!(answer["email"].as_str().is_some_and(|e| e.starts_with("buyer")), "{answer}");
    }
    let secret = Arc::new(Mutex::new(String::new()));
    let url = signature_checking_receiver(secret.clone());
    let (status, hook) = server.post(
        &merchant.api_key,
        &format!("/v1/apps/{}/webhooks", merchant.app_id),
        &json!({ "url": url, "events": ["license.created"] }),
    );
    assert_eq!(status, 201, "{hook}");
    *secret.lock().unwrap() = hook["secret"].as_str().unwrap().to_string();
    let webhook = hook["webhookId"].as_str().unwrap().to_string();
    let idempotent_answer = idempotent_app(server, &merchant);
    let lemon = json!({ "signingSecret": LEMON_SECRET, "apiKey": "lemon-api-key" });
    let (status, connection) = server.send("PUT", &merchant.api_key, "/v1/commerce/connections/lemon", Some(&lemon));
    assert_eq!(status, 200, "{connection}");
    let lemon_path = connection["webhookPath"].as_str().unwrap().to_string();
    Before { merchant, licenses, webhook, idempotent_answer, lemon_path }
}

/// `POST /v1/apps` under a fixed idempotency key: its kept answer holds an app secret, sealed.
fn idempotent_app(server: &Server, merchant: &Merchant) -> Value {
    let response = http()
        .post(format!("{}/v1/apps", server.base))
        .bearer_auth(&merchant.api_key)
        .header("Idempotency-Key", "rotation-test-app")
        .json(&json!({ "name": "kept" }))
        .send()
        .expect("POST /v1/apps");
    assert_eq!(response.status().as_u16(), 201);
    response.json().unwrap()
}

fn check_everything_works(server: &Server, before: &Before) {
    let merchant = &before.merchant;
    let sdk = AuthForgeClient::new(AuthForgeConfig {
        app_id: merchant.app_id.clone(),
        app_secret: merchant.app_secret.clone(),
        public_key: merchant.public_key.clone(),
        api_base_url: server.base.clone(),
        hwid_override: Some("machine-after-rotation".into()),
        ..Default::default()
    });
    sdk.login(&before.licenses[0]).expect("an SDK login verifies the signature made with the app's sealed key");
    for (i, key) in before.licenses.iter().enumerate() {
        let (status, answer) = server.get(&merchant.api_key, &format!("/v1/licenses/{key}"));
        assert_eq!((status, answer["email"].as_str()), (200, Some(format!("buyer{i}@example.com").as_str())));
    }
    let form = [("email", "owner@example.com"), ("password", PASSWORD)];
    let signed_in = http().post(format!("{}/dashboard/login", server.base)).form(&form).send().expect("sign-in");
    assert_eq!(signed_in.status().as_u16(), 303, "the dashboard password verifier opens");
    let test_path = format!("/v1/apps/{}/webhooks/{}/test", merchant.app_id, before.webhook);
    let (_, tested) = server.post(&merchant.api_key, &test_path, &json!({}));
    assert_eq!(tested, json!({ "ok": true, "status": 200 }), "the delivery is signed with the webhook's secret");
    assert_eq!(idempotent_app(server, merchant), before.idempotent_answer, "the kept answer opens");
    // The connection's signing secret opens: a body signed with it passes the signature check
    // (and is then refused as no event at all); a wrong signature is refused as such.
    let lemon = |signature: &str| {
        let response = reqwest::blocking::Client::new()
            .post(format!("{}{}", server.base, before.lemon_path))
            .header("X-Signature", signature)
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
            .expect("POST a Lemon Squeezy webhook");
        let status = response.status().as_u16();
        (status, response.json::<Value>().unwrap_or(Value::Null)["error"].clone())
    };
    assert_eq!(lemon(&hmac_hex(LEMON_SECRET, b"{}")), (400, json!("bad_request")), "the signature verified");
    assert_eq!(lemon(&hmac_hex("another secret", b"{}")), (400, json!("invalid_signature")));
}

/// The keyring `key` opens in the deployment's database.
fn ring_of(deployment: &Deployment, key: &str) -> Option<MasterKey> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let options = licensd_store::StoreOptions { max_connections: 2, ..Default::default() };
    runtime.block_on(async {
        let store = licensd_store::Store::connect(&deployment.database_url, &options).await.unwrap();
        let ring = licensd_commands::keyring::open_ring(&store, &MasterKey::parse(key).unwrap()).await.unwrap();
        store.close().await;
        ring
    })
}

/// Rows of `sql`, read straight from the deployment's database, every column as text.
fn query(deployment: &Deployment, sql: &str) -> Vec<Vec<Option<String>>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let options = licensd_store::StoreOptions { max_connections: 2, ..Default::default() };
    runtime.block_on(async {
        let store = licensd_store::Store::connect(&deployment.database_url, &options).await.unwrap();
        let rows = store.query_rows(sql, &[]).await.unwrap();
        store.close().await;
        rows
    })
}

/// Every sealed vault row: (subject, field, value).
fn vault_rows(deployment: &Deployment) -> Vec<(String, String, String)> {
    query(deployment, "SELECT subject, field, value FROM pii")
        .into_iter()
        .map(|row| {
            let [Some(a), Some(b), Some(c)] = row.as_slice() else { panic!("a vault row with NULLs") };
            (a.clone(), b.clone(), c.clone())
        })
        .collect()
}

/// Every kept idempotent answer's stored body.
fn kept_answers(deployment: &Deployment) -> Vec<String> {
    query(deployment, "SELECT body FROM idempotency_keys WHERE body IS NOT NULL")
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect()
}

/// The deployment's key as text: the SQLite data folder's file, or the configured one.
fn current_key(deployment: &Deployment) -> String {
    match &deployment.master_key {
        Some(key) => key.clone(),
        None => std::fs::read_to_string(deployment.data_dir.join("master.key")).unwrap().trim().to_string(),
    }
}

#[test]
fn a_rotation_cut_short_and_run_again_moves_every_secret_to_the_new_key() {
    each_backend(|deployment| {
        let server = deployment.start_with(RELAXED_LIMITS);
        let before = create_data(deployment, &server);
        check_everything_works(&server, &before);
        server.terminate();
        let hashes = caught_up_hashes(deployment);
        let old_key = current_key(deployment);
        let new_key_file = deployment.data_dir.join("rotated.key");

        rotate_and_kill_midway(deployment, &new_key_file);
        let rows = vault_rows(deployment);
        let moved = rows.iter().filter(|(_, _, v)| v.starts_with("v2.1.")).count();
        assert!(moved >= 1 && moved < rows.len(), "cut short midway: {moved} of {} rows moved", rows.len());
        let refused = deployment.serve_fails();
        assert!(refused.contains("rotate-master-key"), "the old key is refused, pointing at the rotation: {refused}");

        // Half-rotated, the new key opens everything: rows under either key.
        let half = Deployment {
            data_dir: deployment.data_dir.clone(),
            database_url: deployment.database_url.clone(),
            master_key: Some(std::fs::read_to_string(&new_key_file).unwrap().trim().to_string()),
        };
        let server = half.start_with(RELAXED_LIMITS);
        for (i, key) in before.licenses.iter().enumerate() {
            let (status, answer) = server.get(&before.merchant.api_key, &format!("/v1/licenses/{key}"));
            assert_eq!((status, answer["email"].as_str()), (200, Some(format!("buyer{i}@example.com").as_str())));
        }
        server.terminate();

        let output = rotate_command(deployment, &new_key_file, &[]).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!((report["keyId"].as_u64(), report["resumed"].as_bool()), (Some(1), Some(true)), "{report}");

        // SQLite's key file was replaced in place; Postgres' key comes from LICENSD_MASTER_KEY,
        // which the operator sets to the new file's key.
        let new_key = match &deployment.master_key {
            Some(_) => std::fs::read_to_string(&new_key_file).unwrap().trim().to_string(),
            None => {
                assert!(!new_key_file.exists(), "the new key file took the key file's place");
                current_key(deployment)
            }
        };
        assert_ne!(new_key, old_key);
        // SQLite starts from the replaced key file, Postgres from the variable set to the new key.
        let rotated = Deployment {
            data_dir: deployment.data_dir.clone(),
            database_url: deployment.database_url.clone(),
            master_key: deployment.master_key.as_ref().map(|_| new_key.clone()),
        };
        let with_old = Deployment {
            data_dir: deployment.data_dir.clone(),
            database_url: deployment.database_url.clone(),
            master_key: Some(old_key.clone()),
        };
        assert!(with_old.serve_fails().contains("rotate-master-key"), "the old key is refused after the rotation");

        let old = MasterKey::parse(&old_key).unwrap();
        let rows = vault_rows(deployment);
        assert!(rows.len() >= 14, "account email, password verifier, 12 license emails: {}", rows.len());
        for (subject, field, value) in &rows {
            assert!(value.starts_with("v2.1."), "{subject}/{field} is sealed under key 1");
            assert!(old.open(&Sealed(value.clone()), &format!("pii:{subject}:{field}")).is_err());
        }
        let answers = kept_answers(deployment);
        assert!(!answers.is_empty() && answers.iter().all(|body| body.starts_with("v2.1.")), "{answers:?}");
        // The secrets inside events were recorded sealed anew, and the read models follow.
        let resealed =
            query(deployment, "SELECT CAST(payload AS TEXT) FROM events WHERE event_type = 'SecretsResealed'");
        assert_eq!(resealed.len(), 2, "the merchant's app and the kept answer's app: {resealed:?}");
        let payloads = format!("{resealed:?}");
        for part in ["secret", "signing_keys", "websocket_key", "webhooks"] {
            assert!(payloads.contains(part), "{part} was re-sealed: {payloads}");
        }
        assert_eq!(
            query(deployment, "SELECT CAST(payload AS TEXT) FROM events WHERE event_type = 'CommerceResealed'").len(),
            1
        );
        // Read models hash sealed values as "Sealed(..)": the hashes cannot tell new ciphertexts
        // from old, so what they show is that a rebuild ends where the rotation left them.
        let after = caught_up_hashes(&rotated);
        let audit = |hashes: &[(String, String)]| hashes.iter().find(|(n, _)| n == "audit_log").map(|(_, h)| h.clone());
        assert_ne!(audit(&after), audit(&hashes), "the re-sealing events are in the audit log");
        // The old key is gone from the keyring: the new key's ring opens nothing it sealed.
        let ring = ring_of(&rotated, &new_key).expect("the new key opens the keyring");
        assert!(ring.open(&old.seal(b"x", "p"), "p").is_err(), "the keyring no longer holds the old key");
        let rebuilt = rotated.cli(&["rebuild"]);
        assert!(rebuilt.to_string().contains("hash"), "{rebuilt}");
        assert_eq!(caught_up_hashes(&rotated), after, "a rebuild after the rotation gives the same read models");

        // SQLite: a backup taken after the rotation restores into a fresh folder, with the
        // new key file beside it, and everything opens there (the old key is not needed).
        if deployment.master_key.is_none() {
            let backups = common::TempDir::new();
            let folder = backups.0.join("after-rotation");
            rotated.cli(&["backup", "--to", folder.to_str().unwrap()]);
            let restored = Deployment::sqlite(&backups.0.join("restored"));
            let report = restored.cli(&["restore", "--from", folder.to_str().unwrap()]);
            assert_eq!(report["matchesBackup"], true, "{report}");
            assert_eq!(current_key(&restored), new_key, "the backup carried the new key");
            let server = restored.start_with(RELAXED_LIMITS);
            check_everything_works(&server, &before);
            server.terminate();
        }

        let server = rotated.start_with(RELAXED_LIMITS);
        check_everything_works(&server, &before);
        let key = before.merchant.license(&server, json!({}));
        let email = json!({ "email": "after@example.com" });
        let path = format!("/v1/licenses/{key}/email");
        assert_eq!(server.send("PUT", &before.merchant.api_key, &path, Some(&email)).0, 200);
        let (_, answer) = server.get(&before.merchant.api_key, &format!("/v1/licenses/{key}"));
        assert_eq!(answer["email"], "after@example.com");
        server.terminate();
        let fresh = vault_rows(deployment).into_iter().find(|(s, _, _)| s.contains(&key)).expect("the new row");
        assert!(fresh.2.starts_with("v2.1."), "new values are sealed under the new key");

        // A second rotation moves everything from key 1 to key 2 the same way.
        let second_file = deployment.data_dir.join("rotated-again.key");
        let output = rotate_command(&rotated, &second_file, &[]).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!((report["keyId"].as_u64(), report["resumed"].as_bool()), (Some(2), Some(false)), "{report}");
        let again = Deployment {
            data_dir: deployment.data_dir.clone(),
            database_url: deployment.database_url.clone(),
            master_key: rotated
                .master_key
                .as_ref()
                .map(|_| std::fs::read_to_string(&second_file).unwrap().trim().to_string()),
        };
        let server = again.start_with(RELAXED_LIMITS);
        check_everything_works(&server, &before);
        let (_, answer) = server.get(&before.merchant.api_key, &format!("/v1/licenses/{key}"));
        assert_eq!(answer["email"], "after@example.com");
        server.terminate();
        assert!(vault_rows(deployment).iter().all(|(_, _, v)| v.starts_with("v2.2.")));
    });
}

/// A dashboard session cookie for the account's owner.
fn dashboard_cookie(server: &Server) -> String {
    let form = [("email", "owner@example.com"), ("password", PASSWORD)];
    let signed_in = http().post(format!("{}/dashboard/login", server.base)).form(&form).send().expect("sign-in");
    assert_eq!(signed_in.status().as_u16(), 303);
    signed_in.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string()
}

/// The dashboard's status for a browser sending `cookie` (200 signed in, 303 to the sign-in page).
fn dashboard_status(server: &Server, cookie: &str) -> u16 {
    http().get(format!("{}/dashboard", server.base)).header("cookie", cookie).send().unwrap().status().as_u16()
}

#[test]
fn a_rotation_waits_for_every_server_to_stop_and_can_sign_everyone_out() {
    each_backend(|deployment| {
        let server = deployment.start_with(RELAXED_LIMITS);
        let merchant = deployment.merchant_with_credits(&server, "owner@example.com", 10);
        deployment
            .cli_with_input(&["account", "set-password", "--account", &merchant.account_id], &format!("{PASSWORD}\n"));
        let cookie = dashboard_cookie(&server);
        assert_eq!(dashboard_status(&server, &cookie), 200);

        let new_key_file = deployment.data_dir.join("next.key");
        let refused = rotate_command(deployment, &new_key_file, &[("LICENSD_ROTATE_SIGN_EVERYONE_OUT", "true")])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "refused while the server runs");
        let why = if deployment.master_key.is_some() { "nodes are running" } else { "server is running" };
        assert!(stderr.contains(why) && stderr.contains("nothing was changed"), "{stderr}");
        assert_eq!(stderr.matches("nothing was changed").count(), 1, "said once: {stderr}");
        assert!(!new_key_file.exists(), "no new key was written");
        assert_eq!(ring_of(deployment, &current_key(deployment)).unwrap().key_id(), 0, "no key was added");
        if deployment.master_key.is_none() {
            let second = deployment.serve_fails();
            assert!(second.contains("another licensd process"), "a second server on the folder: {second}");
        }
        server.terminate();

        let output = rotate_command(deployment, &new_key_file, &[("LICENSD_ROTATE_SIGN_EVERYONE_OUT", "true")])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["signedEveryoneOut"], true, "{report}");
        caught_up_hashes(deployment); // the rotation brought the read models up to its events
        let new_key = match &deployment.master_key {
            Some(_) => std::fs::read_to_string(&new_key_file).unwrap().trim().to_string(),
            None => current_key(deployment),
        };
        let rotated = Deployment {
            data_dir: deployment.data_dir.clone(),
            database_url: deployment.database_url.clone(),
            master_key: deployment.master_key.as_ref().map(|_| new_key),
        };
        let server = rotated.start_with(RELAXED_LIMITS);
        assert_eq!(dashboard_status(&server, &cookie), 303, "the session signed under the old token key is over");
        let cookie = dashboard_cookie(&server);
        assert_eq!(dashboard_status(&server, &cookie), 200, "signing in again works");
        server.terminate();
    });
}

#[test]
fn a_rotation_killed_while_re_sealing_events_finishes_when_run_again() {
    each_backend(|deployment| {
        let server = deployment.start_with(RELAXED_LIMITS);
        let merchant = deployment.merchant_with_credits(&server, "owner@example.com", 10);
        for i in 0..5 {
            let (status, app) = server.post(&merchant.api_key, "/v1/apps", &json!({ "name": format!("app {i}") }));
            assert_eq!(status, 201, "{app}");
        }
        let key = merchant.license(&server, json!({}));
        server.terminate();
        let resealed = || {
            let rows = query(deployment, "SELECT stream_id FROM events WHERE event_type = 'SecretsResealed'");
            rows.into_iter().filter_map(|row| row.into_iter().next().flatten()).collect::<Vec<_>>()
        };

        let new_key_file = deployment.data_dir.join("next.key");
        rotate_and_kill_at(deployment, &new_key_file, "re-sealed the secrets of a stream");
        let first_run = resealed();
        assert!(!first_run.is_empty(), "the first run recorded at least one app");
        let output = rotate_command(deployment, &new_key_file, &[]).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["resumed"], true, "{report}");
        let mut streams = resealed();
        assert_eq!(streams.len(), 6, "each of the six apps once: {streams:?}");
        streams.dedup();
        assert_eq!(streams.len(), 6, "no app twice");
        assert!(first_run.iter().all(|s| streams.contains(s)));

        let rotated = Deployment {
            data_dir: deployment.data_dir.clone(),
            database_url: deployment.database_url.clone(),
            master_key: deployment
                .master_key
                .as_ref()
                .map(|_| std::fs::read_to_string(&new_key_file).unwrap().trim().to_string()),
        };
        let server = rotated.start_with(RELAXED_LIMITS);
        let sdk = AuthForgeClient::new(AuthForgeConfig {
            app_id: merchant.app_id.clone(),
            app_secret: merchant.app_secret.clone(),
            public_key: merchant.public_key.clone(),
            api_base_url: server.base.clone(),
            hwid_override: Some("machine".into()),
            ..Default::default()
        });
        sdk.login(&key).expect("the app's secret and signing key open under the new key alone");
        server.terminate();
    });
}
