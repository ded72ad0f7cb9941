//! Faults under a production-like mixed load (SDK validations and heartbeats, Developer API
//! writes, signed Stripe deliveries): SIGKILL at random moments, Postgres stopped and started
//! under the server, and a full disk. After each: every acknowledged write is there, no license
//! has more machines than slots, credits debited match the billable successes acknowledged, no
//! "ok" was ever wrong, and the read models equal a rebuild from the log.
//!
//! `LICENSD_FAULT_KILLS` sets the number of SIGKILLs per backend (default 4); RELIABILITY.md has
//! the figures of longer runs.

mod common;

use common::mixed::{self, Shop, Tally, AUTH_CLIENTS};
use common::{caught_up_hashes, fake_stripe_api, Deployment, Server, TempDir};
use licensd_bench::protocol::{nonce, verify_success};
use rand::Rng;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits raised out of the load's way; Stripe's API is a local stand-in.
fn environment(stripe_api: &str) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> = [
        "LICENSD_VALIDATE_PER_KEY",
        "LICENSD_VALIDATE_PER_IP",
        "LICENSD_HEARTBEAT_PER_KEY",
        "LICENSD_API_BURST",
        "LICENSD_API_PER_SECOND",
    ]
    .into_iter()
    .map(|name| (name, "1000000".to_string()))
    .collect();
    env.push(("LICENSD_STRIPE_API_BASE", stripe_api.to_string()));
    env
}

fn start(deployment: &Deployment, env: &[(&'static str, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    deployment.start_with(&env)
}

/// Whether this run must exercise the privileged faults (CI does; a developer's laptop may not).
fn required() -> bool {
    std::env::var_os("CI").is_some()
}

fn skip(why: &str) {
    assert!(!required(), "CI must run this fault test, but {why}");
    eprintln!("skipped: {why}");
}

fn run_ok(command: &mut Command) -> bool {
    command.status().is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// The rebuild-equals-live check, on a stopped server.
fn rebuild_matches(deployment: &Deployment) {
    let live = caught_up_hashes(deployment);
    deployment.cli(&["rebuild"]);
    assert_eq!(caught_up_hashes(deployment), live, "read models equal a rebuild from the log");
}

fn sigkill_loop(deployment: Deployment) {
    let kills: usize = std::env::var("LICENSD_FAULT_KILLS").ok().and_then(|n| n.parse().ok()).unwrap_or(4);
    let env = environment(&fake_stripe_api(Default::default()));
    let server = start(&deployment, &env);
    let shop = Shop::open(&deployment, &server);
    drop(server);
    let tally = Mutex::new(Tally::default());
    for round in 0..kills {
        let server = start(&deployment, &env);
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let acknowledged = || tally.lock().unwrap().licenses_created.len();
            let before = acknowledged();
            scope.spawn(|| mixed::run(&server, &shop, &tally, &stop, true));
            // Kill at a random moment once writes are flowing (a loaded machine may take a while).
            let deadline = Instant::now() + Duration::from_secs(30);
            while acknowledged() == before && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(rand::thread_rng().gen_range(100..2000)));
            assert!(run_ok(Command::new("kill").args(["-KILL", &server.pid().to_string()])), "kill -9");
        });
        server.kill(); // reap
        let t = tally.lock().unwrap();
        eprintln!(
            "kill {}: {} licenses, {} deliveries, {} validations acknowledged so far",
            round + 1,
            t.licenses_created.len(),
            t.deliveries.len(),
            t.validations
        );
    }
    let server = start(&deployment, &env);
    let tally = tally.into_inner().unwrap();
    // In flight at each kill, possibly committed but never answered: one call per client.
    let unacknowledged = (kills * (AUTH_CLIENTS + 2)) as u64;
    mixed::check(&server, &shop, &tally, kills as u64, unacknowledged);
    server.terminate();
    rebuild_matches(&deployment);
    assert!(tally.licenses_created.len() > kills && tally.validations > kills as u64, "load flowed: {tally:?}");
    eprintln!(
        "{kills} SIGKILLs survived: {} licenses, {} deliveries, {} validations, {} heartbeats acknowledged and \
         present; outcomes {:?}",
        tally.licenses_created.len(),
        tally.deliveries.len(),
        tally.validations,
        tally.heartbeats_total(),
        tally.outcomes
    );
}

#[test]
fn sqlite_survives_sigkills_under_mixed_load() {
    let dir = TempDir::new();
    sigkill_loop(Deployment::sqlite(&dir.0));
}

#[test]
fn postgres_survives_sigkills_under_mixed_load() {
    let Some(db) = common::temp_postgres() else { return };
    let dir = TempDir::new();
    sigkill_loop(Deployment::postgres(&dir.0, &db.url));
}

/// A Postgres cluster of the test's own (initdb into a temporary folder, its own port), so it
/// can be stopped and started without disturbing anything else.
struct PrivatePostgres {
    _dir: TempDir,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn create() -> Option<Self> {
        let mut versions: Vec<PathBuf> =
            std::fs::read_dir("/usr/lib/postgresql").ok()?.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        let bin = versions.pop().filter(|b| b.join("initdb").exists())?;
        if !is_root() {
            return None; // initdb must run as the postgres user, which only root can become
        }
        let dir = TempDir::new();
        let data = dir.0.join("pg");
        std::fs::create_dir_all(&data).ok()?;
        let owned = run_ok(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&data));
        let initdb = bin.join("initdb");
        let created = owned
            && run_ok(
                Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .arg(initdb)
                    .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "-D"])
                    .arg(&data)
                    .stdout(std::process::Stdio::null()),
            );
        let cluster = Self { _dir: dir, data, bin, port: common::free_port() };
        (created && cluster.start()).then_some(cluster)
    }

    fn pg_ctl(&self, args: &[&str]) -> bool {
        run_ok(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-w", "-t", "60"])
                .args(args)
                .stdout(std::process::Stdio::null()),
        )
    }

    fn start(&self) -> bool {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.data.display());
        let log = self.data.join("server.log");
        self.pg_ctl(&["-o", &options, "-l", log.to_str().unwrap(), "start"])
    }

    fn stop(&self) -> bool {
        self.pg_ctl(&["-m", "fast", "stop"])
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}

fn session_token(answer: &serde_json::Value) -> String {
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD.decode(answer["payload"].as_str().unwrap()).unwrap();
    serde_json::from_slice::<serde_json::Value>(&payload).unwrap()["sessionToken"].as_str().unwrap().to_string()
}

/// Stops a background load when dropped, so a failed assertion does not leave it running.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Retries `call` until it answers `status` or 60 s pass; returns how long that took.
fn until(status: u16, call: impl Fn() -> (u16, serde_json::Value)) -> Duration {
    let started = Instant::now();
    loop {
        let (got, answer) = call();
        if got == status {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "still {got} after 60 s: {answer}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn postgres_stopped_under_the_server_gives_errors_never_a_wrong_ok_and_recovers() {
    let Some(postgres) = PrivatePostgres::create() else {
        return skip("no private Postgres cluster (needs root and initdb)");
    };
    let dir = TempDir::new();
    let deployment = Deployment::postgres(&dir.0, &postgres.url());
    let env = environment(&fake_stripe_api(Default::default()));
    let server = start(&deployment, &env);
    let shop = Shop::open(&deployment, &server);
    let tally = Mutex::new(Tally::default());
    let stop = AtomicBool::new(false);
    // A license of its own with free slots: validating a new machine on it needs a write.
    let key = &shop.merchant.license(&server, json!({ "maxHwidSlots": 5 }));
    let validation = |hwid: &str| {
        json!({ "appId": shop.merchant.app_id, "appSecret": shop.merchant.app_secret, "licenseKey": key,
                "hwid": hwid, "nonce": nonce() })
    };
    let (status, answer) = server.auth("/auth/validate", &validation("bound-before"));
    assert_eq!(status, 200, "{answer}");
    let token = session_token(&answer);
    let nonce = nonce();
    let (mut outage, mut recovery) = (Duration::ZERO, Duration::ZERO);
    std::thread::scope(|scope| {
        scope.spawn(|| mixed::run(&server, &shop, &tally, &stop, false));
        let _stop_load = StopOnDrop(&stop); // also when an assertion below fails
        std::thread::sleep(Duration::from_secs(2));
        let down = Instant::now();
        assert!(postgres.stop(), "pg_ctl stop");
        // Writes are refused with a clear, retryable error; nothing claims success.
        let create = || server.post(&shop.merchant.api_key, "/v1/licenses", &json!({ "appId": shop.merchant.app_id }));
        for _ in 0..2 {
            let (status, error) = create();
            assert_eq!((status, error["error"].as_str()), (503, Some("unavailable")), "{error}");
        }
        let (status, error) = server.auth("/auth/validate", &validation("never-seen-before"));
        assert!(
            matches!((status, error["error"].as_str()), (500, Some("system_error")) | (503, _)),
            "{status} {error}"
        );
        // What the in-memory model answers alone keeps working: a bound machine's heartbeat.
        let beat =
            json!({ "appId": shop.merchant.app_id, "sessionToken": token, "hwid": "bound-before", "nonce": nonce });
        let (status, answer) = server.auth("/auth/heartbeat", &beat);
        assert_eq!(status, 200, "{answer}");
        verify_success(answer.to_string().as_bytes(), &nonce, &shop.credentials.public_key).expect("a genuine answer");
        std::thread::sleep(Duration::from_secs(2));
        assert!(postgres.start(), "pg_ctl start");
        outage = down.elapsed();
        recovery = until(201, create);
        std::thread::sleep(Duration::from_secs(2));
    });
    let tally = tally.into_inner().unwrap();
    // The outage outlasted the leases, so the node gave up its single-owner roles (read models,
    // webhooks, commerce); it takes them back once renewals succeed again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, health) = server.get_text("/healthz");
        let health: serde_json::Value = serde_json::from_str(&health).unwrap_or_default();
        let roles = health["roles"].as_object().cloned().unwrap_or_default();
        if !roles.is_empty() && roles.values().all(|held| held == true) {
            break;
        }
        assert!(Instant::now() < deadline, "the roles never came back after the outage: {health}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Commits whose acknowledgement the dying connection lost: at most one per client.
    mixed::check(&server, &shop, &tally, 0, (AUTH_CLIENTS + 2) as u64);
    // Refused for the outage: server errors and timeouts (403s are slots full, outage or not).
    let outage_answer = |k: &str| k.ends_with(" 500") || k.ends_with(" 503") || k.ends_with(" transport");
    let refused: u64 = tally.outcomes.iter().filter(|(k, _)| outage_answer(k)).map(|(_, n)| n).sum();
    assert!(refused > 0, "the outage was felt: {:?}", tally.outcomes);
    server.terminate();
    rebuild_matches(&deployment);
    eprintln!(
        "Postgres down {:.1} s under load: {refused} calls refused, every 200 verified; writes back {:.2} s after \
         the restart; outcomes {:?}",
        outage.as_secs_f64(),
        recovery.as_secs_f64(),
        tally.outcomes
    );
}

/// A small tmpfs of the test's own, to fill up and to make read-only.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).ok()?;
        let options = format!("size={size}");
        run_ok(Command::new("mount").args(["-t", "tmpfs", "-o", &options, "tmpfs"]).arg(path))
            .then(|| Self(path.to_path_buf()))
    }

    fn remount(&self, mode: &str) -> bool {
        run_ok(Command::new("mount").args(["-o", &format!("remount,{mode}")]).arg(&self.0))
    }

    /// Writes zeros until the filesystem refuses; returns the filler file.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).and_then(|_| file.sync_data()).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_writes_keeps_serving_reads_and_recovers() {
    let dir = TempDir::new();
    let Some(disk) = Tmpfs::mount(&dir.0.join("disk"), "32m") else { return skip("cannot mount a tmpfs (needs root)") };
    let deployment = Deployment::sqlite(&disk.0);
    let env = environment(&fake_stripe_api(Default::default()));
    let server = start(&deployment, &env);
    let shop = Shop::open(&deployment, &server);
    let merchant = &shop.merchant;
    let key = shop.machines[0].license_key.clone();
    let validate = |hwid: &str| {
        server.auth(
            "/auth/validate",
            &json!({ "appId": merchant.app_id, "appSecret": merchant.app_secret, "licenseKey": key, "hwid": hwid,
                     "nonce": uuid::Uuid::new_v4().simple().to_string() }),
        )
    };
    let (status, answer) = validate("machine-1");
    assert_eq!(status, 200, "{answer}");
    let create = || server.post(&merchant.api_key, "/v1/licenses", &json!({ "appId": merchant.app_id }));

    let filler = disk.fill();
    // SQLite may still place a few rows in pages the file already has free (the read models
    // that moved to their own file left some): those writes are durable and acknowledged. Once
    // a write needs new space it is refused.
    let mut acknowledged = 0;
    let refused = loop {
        let (status, error) = create();
        if status != 201 {
            break (status, error);
        }
        acknowledged += 1;
        assert!(acknowledged < 100, "a full disk never refused a write");
    };
    assert_eq!((refused.0, refused.1["error"].as_str()), (503, Some("unavailable")), "{}", refused.1);
    // Space the server gives back itself (a WAL checkpoint truncating the log's WAL, a snapshot
    // that could not be written removing its temporary file) may fit a later write: such a write
    // is durable and acknowledged (the count after the restart below proves it kept), anything
    // else is the same refusal.
    let mut refusals = 0;
    for _ in 0..5 {
        let (status, error) = create();
        match status {
            201 => acknowledged += 1,
            _ => {
                assert_eq!(
                    (status, error["error"].as_str()),
                    (503, Some("unavailable")),
                    "a write on a full disk: {error}"
                );
                refusals += 1;
            }
        }
    }
    assert!(refusals > 0, "a full disk refused only once ({acknowledged} acknowledged)");
    let (status, error) = validate("machine-2");
    assert!(matches!((status, error["error"].as_str()), (500, Some("system_error")) | (503, _)), "{status} {error}");
    assert_eq!(server.get(&merchant.api_key, &format!("/v1/licenses/{key}")).0, 200, "reads serve from memory");
    assert_eq!(server.get(&merchant.api_key, "/v1/apps").0, 200);
    assert_eq!(server.get_text("/healthz").0, 200);

    std::fs::remove_file(filler).unwrap();
    let recovery = until(201, create);
    assert_eq!(validate("machine-2").0, 200, "billing works again");
    let (_, listed) = server.get(&merchant.api_key, &format!("/v1/licenses?appId={}&limit=200", merchant.app_id));
    let licenses_after = listed["licenses"].as_array().unwrap().len();
    server.terminate();
    rebuild_matches(&deployment);

    // A database on a read-only filesystem is refused at start with a clear error, and starts
    // once the filesystem is writable again, with everything in it.
    assert!(disk.remount("ro"), "remount read-only");
    let refusal = deployment.serve_fails();
    assert!(refusal.to_ascii_lowercase().contains("read"), "a clear error: {refusal}");
    assert!(disk.remount("rw"), "remount read-write");
    let server = start(&deployment, &env);
    let (_, listed) = server.get(&merchant.api_key, &format!("/v1/licenses?appId={}&limit=200", merchant.app_id));
    assert_eq!(listed["licenses"].as_array().unwrap().len(), licenses_after, "nothing lost");
    server.terminate();
    eprintln!(
        "full disk: writes refused with 503 while reads served; writes back {:.2} s after space returned",
        recovery.as_secs_f64()
    );
}
