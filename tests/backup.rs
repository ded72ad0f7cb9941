//! `licensd backup` while the server takes writes, and `licensd restore` into a fresh data folder:
//! the restored log is the source's up to the backup's position, event for event, and the
//! restored server serves the data.

mod common;

use common::{Deployment, TempDir};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Every event of a SQLite log, in order, as the store reads it (every column).
fn event_lines(log_file: &Path) -> Vec<(i64, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut lines = Vec::new();
    runtime
        .block_on(licensd_store::sqlite_event_lines(log_file, |line| lines.push(line.to_string())))
        .expect("read the log");
    lines.into_iter().map(|line| (line.split('|').next().unwrap().parse().expect("a position"), line)).collect()
}

#[test]
fn a_backup_taken_under_load_restores_into_a_fresh_folder_with_the_same_events() {
    let source_dir = TempDir::new();
    let source = Deployment::sqlite(&source_dir.0);
    let server = source.start_with(common::RELAXED_LIMITS);
    let merchant = source.merchant_with_credits(&server, "backup@example.com", 1_000_000);
    let before = merchant.license(&server, json!({ "note": "before the backup" }));

    // Writes keep arriving while the backup is taken.
    let stop = AtomicBool::new(false);
    let written = AtomicU64::new(0);
    let backups = TempDir::new();
    let folder = backups.0.join("nightly");
    let manifest = std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let (status, _) =
                        server.post(&merchant.api_key, "/v1/licenses", &json!({ "appId": merchant.app_id }));
                    assert_eq!(status, 201);
                    written.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        while written.load(Ordering::Relaxed) < 20 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let report = source.cli(&["backup", "--to", folder.to_str().unwrap()]);
        let during = written.load(Ordering::Relaxed);
        while written.load(Ordering::Relaxed) < during + 20 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        report["manifest"].clone()
    });
    let after = merchant.license(&server, json!({ "note": "after the backup" }));
    server.terminate();

    // The copy is the source's log up to the backup's position, event for event, and the source
    // went on past it (the backup was taken under load).
    let head = manifest["head"].as_i64().expect("head");
    let source_events = event_lines(&source_dir.0.join("licensd.db"));
    let backed_up = event_lines(&folder.join("licensd.db"));
    assert!(source_events.len() > backed_up.len(), "writes continued after the backup");
    let prefix: Vec<_> = source_events.iter().filter(|(p, _)| *p <= head).cloned().collect();
    assert_eq!(backed_up, prefix, "the backup is exactly the log up to its position");
    assert_eq!(manifest["events"].as_u64(), Some(backed_up.len() as u64));
    assert!(manifest["masterKey"].as_str().unwrap().starts_with("included"), "{manifest}");

    // Restore into a fresh data folder: same events, and the server serves them.
    let restored_dir = TempDir::new();
    let restored = Deployment::sqlite(&restored_dir.0.join("data"));
    let report = restored.cli(&["restore", "--from", folder.to_str().unwrap()]);
    assert_eq!(report["eventsSha256"], manifest["eventsSha256"]);
    assert_eq!(event_lines(&restored.data_dir.join("licensd.db")), prefix);
    let server = restored.start_with(common::RELAXED_LIMITS);
    let (status, license) = server.get(&merchant.api_key, &format!("/v1/licenses/{before}"));
    assert_eq!(status, 200, "a license from before the backup is served: {license}");
    let (status, _) = server.get(&merchant.api_key, &format!("/v1/licenses/{after}"));
    assert_eq!(status, 404, "one created after the backup is not there");
    // New writes after the restore are seen by every read model.
    merchant.license(&server, json!({ "note": "after the restore" }));
    server.terminate();
    let caught_up = common::caught_up_hashes(&restored);
    let rebuilt = restored.cli(&["rebuild"]);
    for (name, hash) in caught_up {
        let fresh = rebuilt["rebuilt"].as_array().unwrap().iter().find(|r| r["projection"] == name.as_str()).unwrap();
        assert_eq!(
            fresh["hash"].as_str(),
            Some(hash.as_str()),
            "{name}: the copied read model plus its catch-up equals a rebuild"
        );
    }
}

#[test]
fn restore_refuses_a_used_folder_a_damaged_backup_and_a_missing_key() {
    let source_dir = TempDir::new();
    let source = Deployment::sqlite(&source_dir.0);
    source.cli(&["account", "create", "--email", "refusals@example.com"]);
    let backups = TempDir::new();
    let folder = backups.0.join("b");
    source.cli(&["backup", "--to", folder.to_str().unwrap()]);
    assert!(source.cli_fails(&["backup", "--to", folder.to_str().unwrap()]).contains("not empty"));

    // Into the source's own folder: refused, nothing changed.
    assert!(source.cli_fails(&["restore", "--from", folder.to_str().unwrap()]).contains("fresh data folder"));

    // Without its key, and without a key configured: refused before anything is copied.
    let keyless = backups.0.join("keyless");
    copy_folder(&folder, &keyless);
    std::fs::remove_file(keyless.join("master.key")).unwrap();
    let target = TempDir::new();
    let fresh = Deployment::sqlite(&target.0.join("data"));
    assert!(fresh.cli_fails(&["restore", "--from", keyless.to_str().unwrap()]).contains("no master key"));
    assert!(!fresh.data_dir.join("licensd.db").exists());

    // With the wrong key configured: refused, and the copied files taken away again.
    let mut wrong = Deployment::sqlite(&target.0.join("data"));
    wrong.master_key = Some("ab".repeat(32));
    let refused = wrong.cli_fails(&["restore", "--from", keyless.to_str().unwrap()]);
    assert!(refused.contains("master key cannot open"), "{refused}");
    assert!(!wrong.data_dir.join("licensd.db").exists(), "nothing left behind");

    // A manifest that does not match the copied log.
    let damaged = backups.0.join("damaged");
    copy_folder(&folder, &damaged);
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(damaged.join("backup.json")).unwrap()).unwrap();
    manifest["eventsSha256"] = json!("0".repeat(64));
    std::fs::write(damaged.join("backup.json"), manifest.to_string()).unwrap();
    assert!(fresh.cli_fails(&["restore", "--from", damaged.to_str().unwrap()]).contains("does not match"));
    assert!(!fresh.data_dir.join("licensd.db").exists());

    // The untouched backup restores.
    let report = fresh.cli(&["restore", "--from", folder.to_str().unwrap()]);
    assert_eq!(report["matchesBackup"], true);
    let listed = fresh.cli(&["account", "list"]);
    assert_eq!(listed["accounts"][0]["email"], "refusals@example.com");
}

#[test]
fn backup_with_postgres_points_to_pg_dump() {
    let Some(database) = common::temp_postgres() else { return };
    let dir = TempDir::new();
    let deployment = Deployment::postgres(&dir.0, &database.url);
    let said = deployment.cli_fails(&["backup", "--to", dir.0.join("b").to_str().unwrap()]);
    assert!(said.contains("pg_dump"), "{said}");
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
