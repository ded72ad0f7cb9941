//! `Idempotency-Key` on Developer API writes (Stripe's semantics), and writes that committed
//! answering 2xx even when the read models lag. Every scenario runs on SQLite and, when
//! `LICENSD_TEST_POSTGRES_URL` is set, on Postgres.

mod common;

use common::{Deployment, Merchant, Server, TempDir};
use serde_json::{json, Value};
use std::time::Duration;

/// A running server on each backend available, with one merchant.
fn on_each_backend(env: &[(&str, &str)], scenario: impl Fn(&Deployment, &Server, &Merchant)) {
    let dir = TempDir::new();
    let sqlite = Deployment::sqlite(&dir.0);
    let server = sqlite.start_with(env);
    let merchant = sqlite.merchant_with_credits(&server, "merchant@example.com", 0);
    scenario(&sqlite, &server, &merchant);
    drop(server);
    if let Some(db) = common::temp_postgres() {
        let dir = TempDir::new();
        let postgres = Deployment::postgres(&dir.0, &db.url);
        let server = postgres.start_with(env);
        let merchant = postgres.merchant_with_credits(&server, "merchant@example.com", 0);
        scenario(&postgres, &server, &merchant);
    }
}

struct Answer {
    status: u16,
    body: Value,
    replayed: bool,
}

fn send(server: &Server, method: &str, api_key: &str, path: &str, key: Option<&str>, body: &Value) -> Answer {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client.request(method, format!("{}{path}", server.base)).bearer_auth(api_key).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().expect("request");
    let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    Answer { status: response.status().as_u16(), replayed, body: response.json().unwrap_or(Value::Null) }
}

fn license_keys(answer: &Value) -> Vec<String> {
    let licenses = answer["licenses"].as_array().unwrap_or_else(|| panic!("no licenses in {answer}"));
    licenses.iter().map(|l| l["licenseKey"].as_str().unwrap().to_string()).collect()
}

/// Every license of the merchant's app, as the listing shows them.
fn stored_licenses(server: &Server, merchant: &Merchant) -> usize {
    let (status, page) = server.get(&merchant.api_key, &format!("/v1/licenses?appId={}&limit=200", merchant.app_id));
    assert_eq!(status, 200, "{page}");
    page["licenses"].as_array().unwrap().len()
}

#[test]
fn a_retried_post_replays_the_first_answer_and_creates_nothing_new() {
    on_each_backend(&[], |deployment, server, merchant| {
        let body = json!({ "appId": merchant.app_id, "quantity": 3 });
        let key = Some("order-1234");
        let first = send(server, "POST", &merchant.api_key, "/v1/licenses", key, &body);
        assert_eq!(first.status, 201, "{}", first.body);
        assert!(!first.replayed, "the first answer is not a replay");
        assert_eq!(license_keys(&first.body).len(), 3);

        let again = send(server, "POST", &merchant.api_key, "/v1/licenses", key, &body);
        assert_eq!((again.status, &again.body), (201, &first.body), "the first answer, replayed");
        assert!(again.replayed, "a replay says so in Idempotent-Replayed");
        assert_eq!(stored_licenses(server, merchant), 3, "the retry created nothing");

        let other = send(server, "POST", &merchant.api_key, "/v1/licenses", key, &json!({ "appId": merchant.app_id }));
        assert_eq!((other.status, other.body["error"].as_str()), (409, Some("conflict")), "{}", other.body);
        assert_eq!(stored_licenses(server, merchant), 3, "a conflicting reuse changes nothing");

        // The same key on another path is another request: a conflict, not a replay.
        let elsewhere = send(server, "PUT", &merchant.api_key, "/v1/credits/settings", key, &json!({}));
        assert_eq!(elsewhere.status, 409, "{}", elsewhere.body);

        // Keys are scoped per account: another merchant's identical key is its own request.
        let stranger = deployment.merchant_with_credits(server, "other@example.com", 0);
        let theirs = json!({ "appId": stranger.app_id, "quantity": 3 });
        let answer = send(server, "POST", &stranger.api_key, "/v1/licenses", key, &theirs);
        assert_eq!(answer.status, 201, "{}", answer.body);
        assert_eq!(stored_licenses(server, &stranger), 3);

        let long = "k".repeat(256);
        let refused = send(server, "POST", &merchant.api_key, "/v1/licenses", Some(&long), &body);
        assert_eq!((refused.status, refused.body["error"].as_str()), (400, Some("bad_request")), "{}", refused.body);
        let empty = send(server, "POST", &merchant.api_key, "/v1/licenses", Some(""), &body);
        assert_eq!(empty.status, 400, "{}", empty.body);
        let longest = "k".repeat(255);
        assert_eq!(send(server, "POST", &merchant.api_key, "/v1/licenses", Some(&longest), &body).status, 201);
        assert_eq!(stored_licenses(server, merchant), 6, "only the 255-character key ran");

        // Without a key nothing changes: every request runs.
        for _ in 0..2 {
            assert_eq!(send(server, "POST", &merchant.api_key, "/v1/licenses", None, &body).status, 201);
        }
        assert_eq!(stored_licenses(server, merchant), 12);
    });
}

#[test]
fn replays_cover_put_and_delete_and_errors_are_replayed_too() {
    on_each_backend(&[], |_, server, merchant| {
        let license = merchant.license(server, json!({}));
        let path = format!("/v1/licenses/{license}");
        let revoke = json!({ "action": "revoke" });
        let first = send(server, "PUT", &merchant.api_key, &path, Some("revoke-1"), &revoke);
        assert_eq!(first.status, 200, "{}", first.body);
        let again = send(server, "PUT", &merchant.api_key, &path, Some("revoke-1"), &revoke);
        assert_eq!((again.status, &again.body, again.replayed), (200, &first.body, true));

        let deleted = send(server, "DELETE", &merchant.api_key, &path, Some("delete-1"), &json!({}));
        assert_eq!(deleted.status, 200, "{}", deleted.body);
        let again = send(server, "DELETE", &merchant.api_key, &path, Some("delete-1"), &json!({}));
        assert_eq!((again.status, &again.body, again.replayed), (200, &deleted.body, true));

        // A refused request's answer is kept as well: the retry gets the same 4xx.
        let bad = json!({ "appId": merchant.app_id, "quantity": 1000 });
        let refused = send(server, "POST", &merchant.api_key, "/v1/licenses", Some("bad-1"), &bad);
        assert_eq!(refused.status, 400, "{}", refused.body);
        let again = send(server, "POST", &merchant.api_key, "/v1/licenses", Some("bad-1"), &bad);
        assert_eq!((again.status, &again.body, again.replayed), (400, &refused.body, true));
    });
}

#[test]
fn concurrent_requests_with_one_key_have_exactly_one_effect() {
    on_each_backend(&[], |_, server, merchant| {
        let body = json!({ "appId": merchant.app_id, "quantity": 3 });
        let answers: Vec<Answer> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let body = &body;
                    scope.spawn(move || send(server, "POST", &merchant.api_key, "/v1/licenses", Some("race-1"), body))
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let created: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
        assert!(!created.is_empty(), "one of them ran");
        assert!(created.iter().all(|a| a.body == created[0].body), "every 201 is the same answer");
        assert_eq!(created.iter().filter(|a| !a.replayed).count(), 1, "exactly one ran; the others replayed");
        for answer in answers.iter().filter(|a| a.status != 201) {
            assert_eq!((answer.status, answer.body["error"].as_str()), (409, Some("conflict")), "{}", answer.body);
        }
        assert_eq!(stored_licenses(server, merchant), 3, "exactly one effect");
    });
}

#[test]
fn a_committed_write_answers_2xx_even_when_the_read_model_lags() {
    // A zero wait: the in-memory model almost never shows a write the instant it commits.
    on_each_backend(&[("LICENSD_READ_YOUR_WRITES_TIMEOUT_MS", "0")], |_, server, merchant| {
        let body = json!({ "appId": merchant.app_id, "quantity": 2 });
        for round in 0..20 {
            let answer = send(server, "POST", &merchant.api_key, "/v1/licenses", None, &body);
            assert_eq!(answer.status, 201, "round {round}: {}", answer.body);
            assert_eq!(license_keys(&answer.body).len(), 2, "round {round}: every created license is answered");
            let app = send(server, "POST", &merchant.api_key, "/v1/apps", None, &json!({ "name": "Lagging" }));
            assert_eq!(app.status, 201, "round {round}: {}", app.body);
        }
        // The listing is a projection that follows the log; give it time, but never more than 40.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let mut stored = stored_licenses(server, merchant);
        while stored < 40 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            stored = stored_licenses(server, merchant);
        }
        assert_eq!(stored, 40);
    });
}

#[test]
fn the_openapi_document_offers_the_header_on_every_write() {
    let w = common::World::new(&[], 0);
    let (status, document) = w.server().get(&w.merchant.api_key, "/v1/openapi.json");
    assert_eq!(status, 200);
    let mut writes = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let parameters = operation["parameters"].as_array().unwrap();
            let offered = parameters.iter().any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header");
            // A file upload streams its body to the store: it is not buffered to be hashed, so
            // it takes no key (README, "Protected files").
            let streamed = operation["requestBody"]["content"].get("application/octet-stream").is_some();
            assert_eq!(offered, method != "get" && !streamed, "{method} {path}");
            writes += usize::from(method != "get");
        }
    }
    assert!(writes > 20, "every write operation was checked ({writes})");
}

#[test]
fn an_undeclared_method_is_a_405_and_claims_no_key() {
    let w = common::World::new(&[], 0);
    let (server, merchant) = (w.server(), &w.merchant);
    let path = format!("/v1/apps/{}/settings", merchant.app_id);
    let wrong = send(server, "POST", &merchant.api_key, &path, Some("settings-1"), &json!({}));
    assert_eq!(wrong.status, 405, "{}", wrong.body);
    let right = send(server, "PUT", &merchant.api_key, &path, Some("settings-1"), &json!({}));
    assert_eq!(right.status, 200, "the key is still free: {}", right.body);
    let spaced = send(server, "PUT", &merchant.api_key, &path, Some("two words"), &json!({}));
    assert_eq!(spaced.status, 400, "keys are visible ASCII without spaces: {}", spaced.body);
}

/// Runs `sql` on the deployment's database, as an operator would by hand: the state a crash
/// leaves behind is made directly rather than by hoping a kill lands at the right instant.
fn run_sql(deployment: &Deployment, sql: &str) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let options = licensd_store::StoreOptions::durable();
        let store = licensd_store::Store::connect(&deployment.database_url, &options).await.expect("connect");
        let sql: &'static str = Box::leak(sql.to_string().into_boxed_str()); // a test's few statements
        let changed = store.execute(&[licensd_store::Statement::new(sql, [])]).await.expect("sql");
        store.close().await;
        changed
    })
}

/// Exactly what a process that died after its append committed, but before it stored the
/// answer, leaves behind: the claim with no answer.
fn forget_the_answer(deployment: &Deployment, key: &str, claimed_ms_ago: i64) {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let sql = format!(
        "UPDATE idempotency_keys SET status = NULL, content_type = NULL, body = NULL, created_at = {}
         WHERE idem_key = '{key}'",
        now_ms - claimed_ms_ago
    );
    assert_eq!(run_sql(deployment, &sql), 1, "the claim row of {key}");
}

#[test]
fn a_retry_after_a_crash_between_commit_and_answer_rebuilds_the_same_answer() {
    on_each_backend(&[], |deployment, server, merchant| {
        let body = json!({ "appId": merchant.app_id, "quantity": 3 });
        let first = send(server, "POST", &merchant.api_key, "/v1/licenses", Some("crash-1"), &body);
        assert_eq!(first.status, 201, "{}", first.body);
        assert_eq!(stored_licenses(server, merchant), 3);

        // A claim younger than the lease, held by this very process, may still be running.
        forget_the_answer(deployment, "crash-1", 0);
        let early = send(server, "POST", &merchant.api_key, "/v1/licenses", Some("crash-1"), &body);
        assert_eq!(early.status, 409, "{}", early.body);

        // Older than the lease (30 s by default): its request is taken as dead and re-run.
        forget_the_answer(deployment, "crash-1", 120_000);
        let retry = send(server, "POST", &merchant.api_key, "/v1/licenses", Some("crash-1"), &body);
        assert_eq!(retry.status, 201, "{}", retry.body);
        assert_eq!(license_keys(&retry.body), license_keys(&first.body), "the same three licenses");
        assert_eq!(retry.body, first.body, "the answer the first run would have given");
        assert_eq!(stored_licenses(server, merchant), 3, "the re-run minted nothing new");

        // The rebuilt answer is kept: the next retry is a plain replay.
        let again = send(server, "POST", &merchant.api_key, "/v1/licenses", Some("crash-1"), &body);
        assert_eq!((again.status, again.replayed, &again.body), (201, true, &first.body));

        // An app (generated id, secret and signing key) is rebuilt the same way.
        let app = json!({ "name": "Crash app" });
        let created = send(server, "POST", &merchant.api_key, "/v1/apps", Some("crash-app"), &app);
        assert_eq!(created.status, 201, "{}", created.body);
        forget_the_answer(deployment, "crash-app", 120_000);
        let rebuilt = send(server, "POST", &merchant.api_key, "/v1/apps", Some("crash-app"), &app);
        assert_eq!((rebuilt.status, &rebuilt.body), (201, &created.body), "same app id, secret and key");
        let (status, apps) = server.get(&merchant.api_key, "/v1/apps");
        assert_eq!(status, 200, "{apps}");
        let named = apps["apps"].as_array().unwrap().iter().filter(|a| a["name"] == "Crash app").count();
        assert_eq!(named, 1, "one app, not two: {apps}");

        // A webhook (generated id and signing secret) too.
        let path = format!("/v1/apps/{}/webhooks", merchant.app_id);
        let hook = json!({ "url": "https://example.com/hook", "events": ["license.created"] });
        let created = send(server, "POST", &merchant.api_key, &path, Some("crash-hook"), &hook);
        assert_eq!(created.status, 201, "{}", created.body);
        forget_the_answer(deployment, "crash-hook", 120_000);
        std::thread::sleep(Duration::from_millis(5)); // a re-decision would carry a later timestamp
        let rebuilt = send(server, "POST", &merchant.api_key, &path, Some("crash-hook"), &hook);
        assert_eq!((rebuilt.status, &rebuilt.body), (201, &created.body), "same id, secret and time");
        let (status, hooks) = server.get(&merchant.api_key, &path);
        assert_eq!(status, 200, "{hooks}");
        assert_eq!(hooks["webhooks"].as_array().map(Vec::len), Some(1), "one webhook: {hooks}");
    });
}

#[test]
fn a_claim_left_by_a_previous_run_is_taken_over_at_once_after_a_restart() {
    let dir = TempDir::new();
    let postgres = common::temp_postgres();
    let mut deployments = vec![(Deployment::sqlite(&dir.0), None)];
    let pg_dir = TempDir::new();
    if let Some(db) = &postgres {
        deployments.push((Deployment::postgres(&pg_dir.0, &db.url), Some(())));
    }
    for (deployment, _) in deployments {
        let server = deployment.start();
        let merchant = deployment.merchant_with_credits(&server, "merchant@example.com", 0);
        let body = json!({ "appId": merchant.app_id, "quantity": 2 });
        let first = send(&server, "POST", &merchant.api_key, "/v1/licenses", Some("restart-1"), &body);
        assert_eq!(first.status, 201, "{}", first.body);
        server.kill();
        // A fresh claim, but the process that held it is gone.
        forget_the_answer(&deployment, "restart-1", 0);
        let server = deployment.start();
        let retry = send(&server, "POST", &merchant.api_key, "/v1/licenses", Some("restart-1"), &body);
        assert_eq!((retry.status, &retry.body), (201, &first.body));
        assert_eq!(stored_licenses(&server, &merchant), 2);
    }
}

/// The request a client sends under idempotency key `key`: its quantity is a function of the key,
/// and its label is the key, so the listing tells how many licenses each key made.
fn keyed_create(app_id: &str, client: usize, n: usize) -> (String, Value) {
    let key = format!("kill-{client}-{n}");
    let body = json!({ "appId": app_id, "quantity": 1 + (client + n) % 3, "label": key });
    (key, body)
}

/// Every license of the app, paged through, counted per label.
fn licenses_per_label(server: &Server, merchant: &Merchant) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/v1/licenses?appId={}&limit=100&cursor={cursor}", merchant.app_id);
        let (status, page) = server.get(&merchant.api_key, &path);
        assert_eq!(status, 200, "{page}");
        for license in page["licenses"].as_array().unwrap() {
            *counts.entry(license["label"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        }
        match page["cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => return counts,
        }
    }
}

/// SIGKILL while keyed creates are in flight; after a restart every key is retried. Each key's
/// licenses exist exactly once, and a key that was answered before the kill answers the same.
fn keyed_creates_survive_sigkill(deployment: &Deployment) {
    const CLIENTS: usize = 4;
    let unlimited = [("LICENSD_API_BURST", "1000000"), ("LICENSD_API_PER_SECOND", "1000000")];
    let server = deployment.start_with(&unlimited);
    let merchant = deployment.merchant_with_credits(&server, "kill@example.com", 0);
    let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, Value)>::new()));
    let answered = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (base, api_key, app_id) = (server.base.clone(), merchant.api_key.clone(), merchant.app_id.clone());
            let (sent, answered) = (sent.clone(), answered.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                for n in 0.. {
                    let (key, body) = keyed_create(&app_id, client, n);
                    sent.lock().unwrap().push((key.clone(), body.clone()));
                    let request = http.post(format!("{base}/v1/licenses")).bearer_auth(&api_key).json(&body);
                    let Ok(response) = request.header("Idempotency-Key", &key).send() else { return };
                    let status = response.status().as_u16();
                    let Ok(created) = response.json::<Value>() else { return };
                    assert_eq!(status, 201, "{created}");
                    answered.lock().unwrap().insert(key, created);
                }
            })
        })
        .collect();
    // Kill at a random moment once writes are flowing.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while answered.lock().unwrap().len() < CLIENTS && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(rand::random::<u64>() % 500 + 100));
    server.kill();
    for client in clients {
        client.join().unwrap();
    }
    let (sent, answered) = (sent.lock().unwrap().clone(), answered.lock().unwrap().clone());
    assert!(!answered.is_empty(), "some creates were answered before the kill");

    let server = deployment.start_with(&unlimited);
    let mut expected = std::collections::BTreeMap::new();
    for (key, body) in &sent {
        let retry = send(&server, "POST", &merchant.api_key, "/v1/licenses", Some(key), body);
        assert_eq!(retry.status, 201, "retry of {key}: {}", retry.body);
        if let Some(first) = answered.get(key) {
            assert_eq!(license_keys(&retry.body), license_keys(first), "{key} answers its first licenses");
        }
        expected.insert(key.clone(), body["quantity"].as_u64().unwrap() as usize);
    }
    // The listing is a read model that catches up after the restart: wait for it, then compare.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut counts = licenses_per_label(&server, &merchant);
    while counts != expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        counts = licenses_per_label(&server, &merchant);
    }
    assert_eq!(counts, expected, "every key's licenses exist exactly once");
    eprintln!(
        "{} keyed creates ({} answered before the SIGKILL, {} licenses) each took effect exactly once",
        sent.len(),
        answered.len(),
        expected.values().sum::<usize>()
    );
}

#[test]
fn keyed_creates_in_flight_at_a_sigkill_take_effect_exactly_once_when_retried() {
    let dir = TempDir::new();
    keyed_creates_survive_sigkill(&Deployment::sqlite(&dir.0));
    if let Some(db) = common::temp_postgres() {
        let dir = TempDir::new();
        keyed_creates_survive_sigkill(&Deployment::postgres(&dir.0, &db.url));
    }
}

/// A re-run decides at the time of the first claim, so even an answer computed from the clock
/// (a signed offline file with its issue time) and a charge come out as the first run's.
#[test]
fn a_rerun_mint_answers_the_same_signed_file_and_charges_once() {
    let dir = TempDir::new();
    let postgres = common::temp_postgres();
    let pg_dir = TempDir::new();
    let mut deployments = vec![Deployment::sqlite(&dir.0)];
    deployments.extend(postgres.as_ref().map(|db| Deployment::postgres(&pg_dir.0, &db.url)));
    for deployment in deployments {
        // A short lease, waited out for real: the claim keeps its true time, as after a crash.
        let server = deployment.start_with(&[("LICENSD_IDEMPOTENCY_LEASE_SECS", "1")]);
        let merchant = deployment.merchant_with_credits(&server, "mint@example.com", 5);
        let license = merchant.license(&server, json!({}));
        let path = format!("/v1/licenses/{license}/offline-files");
        let body = json!({ "anyMachine": true });
        let first = send(&server, "POST", &merchant.api_key, &path, Some("mint-1"), &body);
        assert_eq!(first.status, 201, "{}", first.body);
        let sql =
            "UPDATE idempotency_keys SET status = NULL, content_type = NULL, body = NULL WHERE idem_key = 'mint-1'";
        assert_eq!(run_sql(&deployment, sql), 1);
        std::thread::sleep(Duration::from_millis(1500)); // past the lease; a later clock would show in the file
        let retry = send(&server, "POST", &merchant.api_key, &path, Some("mint-1"), &body);
        assert_eq!((retry.status, &retry.body), (201, &first.body), "the same jti and signed file");
        let (status, credits) = server.get(&merchant.api_key, "/v1/credits");
        assert_eq!((status, &credits["balance"]), (200, &json!(4)), "charged once: {credits}");
    }
}
