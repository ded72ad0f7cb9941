//! Start-up from a snapshot of the in-memory model, end to end on both backends: a restart
//! after SIGKILL loads the last snapshot and replays the log after it (nonces and bills
//! included); a damaged snapshot, or one written by other code, is ignored with a log line and
//! the whole log is replayed; `licensd rebuild` proves snapshot + tail equals a full replay; and
//! the nonce cap refuses new nonces instead of forgetting old ones.

mod common;

use common::{Deployment, Merchant, Server, TempDir, RELAXED_LIMITS};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Snapshots after every applied event, checked every 100 ms.
fn env_with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = RELAXED_LIMITS.to_vec();
    env.extend([("LICENSD_SNAPSHOT_INTERVAL_SECS", "1"), ("LICENSD_SNAPSHOT_EVERY_EVENTS", "1")]);
    env.extend(extra.iter().copied());
    env
}

fn validate(server: &Server, m: &Merchant, key: &str, nonce: &str) -> (u16, Value) {
    let body =
        json!({ "appId": m.app_id, "appSecret": m.app_secret, "licenseKey": key, "hwid": "hw-1", "nonce": nonce });
    server.auth("/auth/validate", &body)
}

fn snapshot_path(deployment: &Deployment) -> std::path::PathBuf {
    deployment.data_dir.join("hot-model.snapshot")
}

/// Waits until a snapshot is written (one modified after `since`, if given).
fn wait_for_new_snapshot(path: &Path, since: Option<std::time::SystemTime>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if modified.is_some() && modified != since {
            return;
        }
        assert!(Instant::now() < deadline, "no snapshot written at {}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_of(deployment: &Deployment, env: &[(&str, &str)], log: &Path) -> (Server, impl Fn() -> String) {
    let mut env = env.to_vec();
    env.push(("LICENSD_LOG", "info"));
    let server = deployment.start_logging_to(&env, Some(log));
    let log = log.to_path_buf();
    (server, move || std::fs::read_to_string(&log).unwrap_or_default())
}

fn restarts_from_snapshots(deployment: Deployment) {
    let env = env_with(&[]);
    let server = deployment.start_with(&env);
    let merchant = deployment.merchant_with_credits(&server, "snap@example.com", 100);
    let key = merchant.license(&server, json!({}));
    assert_eq!(validate(&server, &merchant, &key, "nonce-0001").0, 200);
    let path = snapshot_path(&deployment);
    wait_for_new_snapshot(&path, None);
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    // One more bill after the snapshot: only the tail carries it.
    assert_eq!(validate(&server, &merchant, &key, "nonce-0002").0, 200);
    server.kill();

    let log = deployment.data_dir.join("restart.log");
    let (server, read_log) = log_of(&deployment, &env, &log);
    let text = read_log();
    assert!(text.contains("from_snapshot=true"), "started from the snapshot: {text}");
    assert!(!text.contains("snapshot of the in-memory model ignored"), "{text}");
    for nonce in ["nonce-0001", "nonce-0002"] {
        let (status, answer) = validate(&server, &merchant, &key, nonce);
        assert_eq!((status, answer["error"].clone()), (401, json!("replay_detected")), "{nonce} remembered");
    }
    assert_eq!(validate(&server, &merchant, &key, "nonce-0003").0, 200);
    let (_, credits) = server.get(&merchant.api_key, "/v1/credits");
    assert_eq!(credits["balance"], json!(97), "three bills, each counted once: {credits}");
    wait_for_new_snapshot(&path, Some(before));
    server.terminate();

    // A damaged snapshot: ignored, logged, and the whole log replayed.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let (server, read_log) = log_of(&deployment, &env, &deployment.data_dir.join("damaged.log"));
    let text = read_log();
    assert!(text.contains("snapshot of the in-memory model ignored") && text.contains("damaged"), "{text}");
    assert!(text.contains("from_snapshot=false"), "{text}");
    let (status, answer) = validate(&server, &merchant, &key, "nonce-0003");
    assert_eq!((status, answer["error"].clone()), (401, json!("replay_detected")), "replayed from the log: {answer}");
    assert_eq!(validate(&server, &merchant, &key, "nonce-0004").0, 200);
    server.terminate();

    // Written by other code (another version of licensd): ignored, logged.
    let text = std::fs::read_to_string(&path).unwrap();
    let (header, body) = text.split_once('\n').unwrap();
    let mut header: Value = serde_json::from_str(header).unwrap();
    header["code"] = json!("0".repeat(32));
    std::fs::write(&path, format!("{header}\n{body}")).unwrap();
    let (server, read_log) = log_of(&deployment, &env, &deployment.data_dir.join("other-code.log"));
    let text = read_log();
    assert!(text.contains("written by other code"), "{text}");
    assert_eq!(validate(&server, &merchant, &key, "nonce-0005").0, 200);
    server.terminate();

    // The snapshot written at that shutdown, with the log after it, equals a full replay.
    let rebuilt = deployment.cli(&["rebuild", "--projection", "hot"]);
    let hot = &rebuilt["rebuilt"][0];
    assert_eq!(hot["snapshot"]["used"], json!(true), "{rebuilt}");
    assert_eq!(hot["snapshot"]["matchesReplay"], json!(true), "{rebuilt}");
    assert_eq!(hot["snapshot"]["hash"], hot["hash"]);
}

#[test]
fn sqlite_restarts_from_snapshots() {
    let dir = TempDir::new();
    restarts_from_snapshots(Deployment::sqlite(&dir.0));
}

#[test]
fn postgres_restarts_from_snapshots() {
    let Some(db) = common::temp_postgres() else { return };
    let dir = TempDir::new();
    restarts_from_snapshots(Deployment::postgres(&dir.0, &db.url));
}

/// At the cap, a new nonce is refused (503) rather than an old one forgotten; a replay is still
/// told apart; and the cap holds across a restart from the snapshot.
#[test]
fn the_nonce_cap_refuses_new_nonces_and_forgets_none() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let env = env_with(&[("LICENSD_NONCE_CAP", "2")]);
    let server = deployment.start_with(&env);
    let merchant = deployment.merchant_with_credits(&server, "cap@example.com", 100);
    let key = merchant.license(&server, json!({}));
    assert_eq!(validate(&server, &merchant, &key, "nonce-a").0, 200);
    assert_eq!(validate(&server, &merchant, &key, "nonce-b").0, 200);
    let (status, answer) = validate(&server, &merchant, &key, "nonce-c");
    assert_eq!((status, answer["error"].clone()), (503, json!("nonce_capacity_reached")), "{answer}");
    let (status, answer) = validate(&server, &merchant, &key, "nonce-a");
    assert_eq!((status, answer["error"].clone()), (401, json!("replay_detected")), "{answer}");
    let (_, credits) = server.get(&merchant.api_key, "/v1/credits");
    assert_eq!(credits["balance"], json!(98), "a refused validation bills nothing: {credits}");
    server.terminate();

    let server = deployment.start_with(&env);
    let (status, answer) = validate(&server, &merchant, &key, "nonce-c");
    assert_eq!((status, answer["error"].clone()), (503, json!("nonce_capacity_reached")), "{answer}");
    let (status, answer) = validate(&server, &merchant, &key, "nonce-b");
    assert_eq!((status, answer["error"].clone()), (401, json!("replay_detected")), "{answer}");
    server.terminate();
}
