//! SIGKILL (and a graceful SIGTERM) during a stream of appends loses no acknowledged event, and
//! the read models left behind equal a rebuild from the log (SQLite and Postgres); SIGKILL while
//! the SQL read models catch up projects no event twice and skips none.

mod common;

use common::{caught_up_hashes, Deployment, Server, TempDir, RELAXED_LIMITS};
use rand::Rng;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A durability test, not a rate-limit test: raise the per-key Developer API limit. Snapshots
/// are written every second, so kills land around snapshot writes and restarts load them.
const UNLIMITED: &[(&str, &str)] = &[
    ("LICENSD_API_BURST", "1000000"),
    ("LICENSD_API_PER_SECOND", "1000000"),
    ("LICENSD_SNAPSHOT_INTERVAL_SECS", "1"),
    ("LICENSD_SNAPSHOT_EVERY_EVENTS", "50"),
];

/// Rounds of load; each but the last ends in SIGKILL, the last in SIGTERM.
const ROUNDS: usize = 4;
const CLIENTS: usize = 4;

/// How the server is stopped under load.
#[derive(Clone, Copy)]
enum Stop {
    Kill,
    Terminate,
}

/// Clients creating licenses until the server stops; returns every key acknowledged with 201.
fn load_until_stopped(server: Server, api_key: &str, app_id: &str, stop: Stop) -> Vec<String> {
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (base, api_key, app_id) = (server.base.clone(), api_key.to_string(), app_id.to_string());
            let acknowledged = acknowledged.clone();
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                for n in 0.. {
                    let body =
                        json!({ "appId": app_id, "quantity": 1 + (client + n) % 3, "label": format!("c{client}-{n}") });
                    let sent = http.post(format!("{base}/v1/licenses")).bearer_auth(&api_key).json(&body).send();
                    let Ok(response) = sent else { return }; // the server is gone
                    if response.status() != 201 {
                        continue;
                    }
                    let Ok(created) = response.json::<serde_json::Value>() else { return };
                    let keys = created["licenses"].as_array().unwrap().iter();
                    acknowledged.lock().unwrap().extend(keys.map(|l| l["licenseKey"].as_str().unwrap().to_string()));
                }
            })
        })
        .collect();
    // Stop at a random moment once writes are flowing (a loaded machine may take a while to ack).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(rand::thread_rng().gen_range(100..900)));
    match stop {
        Stop::Kill => server.kill(),
        // A graceful stop must exit 0 after committing every queued write (asserted inside).
        Stop::Terminate => server.terminate(),
    }
    for client in clients {
        client.join().unwrap();
    }
    Arc::try_unwrap(acknowledged).unwrap().into_inner().unwrap()
}

fn survives_sigkill(deployment: Deployment) {
    let server = deployment.start_with(UNLIMITED);
    let (api_key, app_id) = deployment.merchant(&server, "crash@example.com");
    let mut server = Some(server);
    let mut acknowledged = Vec::new();
    for round in 0..ROUNDS {
        let stop = if round + 1 == ROUNDS { Stop::Terminate } else { Stop::Kill };
        let acked = load_until_stopped(server.take().unwrap(), &api_key, &app_id, stop);
        assert!(!acked.is_empty(), "round {round} acknowledged some writes before the stop");
        acknowledged.extend(acked);
        let restarted = deployment.start_with(UNLIMITED);
        for key in &acknowledged {
            let (status, license) = restarted.get(&api_key, &format!("/v1/licenses/{key}"));
            assert_eq!(status, 200, "acknowledged license {key} lost after stop {round}: {license}");
        }
        server = Some(restarted);
    }
    server.take().unwrap().terminate();
    eprintln!("{} acknowledged licenses survived {} SIGKILLs and a SIGTERM", acknowledged.len(), ROUNDS - 1);

    let live = caught_up_hashes(&deployment);
    let rebuilt = deployment.cli(&["rebuild"]);
    let snapshot = &rebuilt["rebuilt"][0]["snapshot"];
    assert_eq!(snapshot["used"], json!(true), "a snapshot was left behind: {snapshot}");
    assert_eq!(snapshot["matchesReplay"], json!(true), "snapshot + tail equals a full replay: {snapshot}");
    assert_eq!(caught_up_hashes(&deployment), live, "read models left by the kills equal a rebuild from the log");
}

#[test]
fn sqlite_survives_kills_during_appends() {
    let dir = TempDir::new();
    survives_sigkill(Deployment::sqlite(&dir.0));
}

#[test]
fn postgres_survives_kills_during_appends() {
    let Some(db) = common::temp_postgres() else { return };
    let dir = TempDir::new();
    survives_sigkill(Deployment::postgres(&dir.0, &db.url));
}

/// Sets every SQL projection's checkpoint to a version no code has: the next start empties them
/// and projects the whole log again, in pages, while the test kills it.
fn force_replay(deployment: &Deployment) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let options = licensd_store::StoreOptions::durable();
        let store = licensd_store::Store::connect(&deployment.database_url, &options).await.unwrap();
        let reset = licensd_store::Statement::new("UPDATE projection_checkpoints SET version = -1", []);
        assert!(store.execute_read_models(&[reset]).await.unwrap() > 0, "checkpoints to reset");
        store.close().await;
    });
}

/// A log of several pages whose projection is not idempotent: each bound machine adds one to
/// `rm_licenses.hwid_count`, so an event projected twice changes the hash, as a skipped one does.
fn survives_sigkill_while_projecting(deployment: Deployment) {
    let server = deployment.start_with(RELAXED_LIMITS);
    let merchant = deployment.merchant_with_credits(&server, "projecting@example.com", 1_000_000);
    for round in 0..25 {
        let (status, created) =
            server.post(&merchant.api_key, "/v1/licenses", &json!({ "appId": merchant.app_id, "quantity": 100 }));
        assert_eq!(status, 201, "{created}");
        for (i, license) in created["licenses"].as_array().unwrap().iter().take(8).enumerate() {
            let body = json!({
                "appId": merchant.app_id, "appSecret": merchant.app_secret,
                "licenseKey": license["licenseKey"], "hwid": format!("hw-{round}-{i}"), "nonce": format!("{round:016x}{i:016x}"),
            });
            let (status, answer) = server.auth("/auth/validate", &body);
            assert_eq!(status, 200, "{answer}");
        }
    }
    server.terminate();
    let expected = caught_up_hashes(&deployment);

    force_replay(&deployment);
    for _ in 0..3 {
        let server = deployment.start_with(RELAXED_LIMITS);
        std::thread::sleep(Duration::from_millis(rand::thread_rng().gen_range(10..400)));
        server.kill();
    }
    // Serving (its signal handlers installed), then a graceful stop: the tail drains to the end.
    let server = deployment.start_with(RELAXED_LIMITS);
    while server.get_text("/healthz").0 != 200 {
        std::thread::sleep(Duration::from_millis(50));
    }
    server.terminate();
    assert_eq!(caught_up_hashes(&deployment), expected, "killed mid-catch-up: every event projected exactly once");
}

#[test]
fn sqlite_projects_each_event_once_across_kills() {
    let dir = TempDir::new();
    survives_sigkill_while_projecting(Deployment::sqlite(&dir.0));
}

#[test]
fn postgres_projects_each_event_once_across_kills() {
    let Some(db) = common::temp_postgres() else { return };
    let dir = TempDir::new();
    survives_sigkill_while_projecting(Deployment::postgres(&dir.0, &db.url));
}
