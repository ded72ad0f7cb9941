//! The operator's command line, run as the real binary: the container health check, the master
//! key file, and how the commands start and fail.

mod common;

use common::{each_backend, self_signed_certificate, Deployment, TempDir, BIN};
use serde_json::Value;
use std::process::{Command, Output};

fn licensd(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("LICENSD_MASTER_KEY")
        .env_remove("LICENSD_LOG")
        .envs(env.iter().copied())
        .output()
        .expect("run licensd")
}

/// A health check that waits long enough for a debug build on a busy machine (the checks that
/// must fail fail at once: refused connection, wrong certificate).
const PATIENT: (&str, &str) = ("LICENSD_HEALTHCHECK_TIMEOUT_MS", "30000");

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn healthcheck_exits_0_while_the_server_is_healthy_and_1_once_it_is_gone() {
    each_backend(|deployment| {
        let server = deployment.start();
        let port = server.base.rsplit(':').next().unwrap().to_string();
        // The container sets LICENSD_LISTEN to the wildcard address; the check asks loopback.
        let listen = format!("0.0.0.0:{port}");
        // A loaded machine can take longer than the 3 s default to answer: this test is about
        // the exit code, not the speed.
        let healthy = licensd(&["healthcheck"], &[("LICENSD_LISTEN", &listen), PATIENT]);
        assert!(healthy.status.success(), "healthcheck failed: {}", stderr(&healthy));
        let body: Value = serde_json::from_slice(&healthy.stdout).expect("the /healthz document");
        assert_eq!(body["status"], "ok");
        server.terminate();

        let gone = licensd(&["healthcheck"], &[("LICENSD_LISTEN", &listen)]);
        assert_eq!(gone.status.code(), Some(1), "no server: exit 1");
        assert!(stderr(&gone).contains("cannot connect"), "says why: {}", stderr(&gone));
    });
}

/// With native TLS the check speaks TLS and trusts exactly the server's own certificate.
#[test]
fn healthcheck_speaks_tls_to_a_tls_server_and_trusts_only_its_certificate() {
    let dir = TempDir::new();
    let (cert, key) = self_signed_certificate(&dir.0);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let deployment = Deployment::sqlite(&dir.0.join("data"));
    let server = deployment.start_with(&[("LICENSD_TLS_CERT", cert), ("LICENSD_TLS_KEY", key)]);
    let listen = server.base.trim_start_matches("http://").to_string();

    let healthy = licensd(&["healthcheck"], &[("LICENSD_LISTEN", &listen), ("LICENSD_TLS_CERT", cert), PATIENT]);
    assert!(healthy.status.success(), "healthcheck over TLS failed: {}", stderr(&healthy));
    let body: Value = serde_json::from_slice(&healthy.stdout).expect("the /healthz document");
    assert_eq!(body["status"], "ok");

    // Plain HTTP to a TLS listener is not an answer; another certificate is not trusted.
    let plain = licensd(&["healthcheck"], &[("LICENSD_LISTEN", &listen)]);
    assert_eq!(plain.status.code(), Some(1), "{}", stderr(&plain));
    let other = TempDir::new();
    let (other_cert, _) = self_signed_certificate(&other.0);
    let pinned =
        licensd(&["healthcheck"], &[("LICENSD_LISTEN", &listen), ("LICENSD_TLS_CERT", other_cert.to_str().unwrap())]);
    assert_eq!(pinned.status.code(), Some(1));
    assert!(stderr(&pinned).contains("TLS handshake"), "says why: {}", stderr(&pinned));
}

#[test]
fn healthcheck_refuses_an_unusable_address_and_a_non_http_answer() {
    let bad = licensd(&["healthcheck", "--listen", "localhost:8080"], &[]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("IP address and port"), "{}", stderr(&bad));

    // A listener that answers something other than HTTP (as a TLS listener would).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let answering = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut socket, _) = listener.accept().unwrap();
        let mut request = [0u8; 256];
        let _ = socket.read(&mut request);
        let _ = socket.write_all(b"\x15\x03\x03\x00\x02\x02\x46");
    });
    let garbled = licensd(&["healthcheck", "--listen", &addr], &[]);
    answering.join().unwrap();
    assert_eq!(garbled.status.code(), Some(1));
    assert!(stderr(&garbled).contains("not an HTTP answer"), "{}", stderr(&garbled));
}

#[test]
fn the_master_key_file_is_written_once_and_read_by_every_later_start() {
    let dir = TempDir::new();
    let key_file = dir.0.join("secrets").join("master.key");
    let key_path = key_file.to_str().unwrap();
    let env = [("LICENSD_MASTER_KEY_FILE", key_path), ("LICENSD_DATA_DIR", dir.0.to_str().unwrap())];
    let first = licensd(&["init-master-key"], &env);
    assert!(first.status.success(), "{}", stderr(&first));
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(first["created"], true);
    let written = std::fs::read_to_string(&key_file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "only the owner reads the key");
    }
    let again = licensd(&["init-master-key"], &env);
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["created"], false, "a second run keeps the key");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), written);

    // Postgres needs a key from outside the database: the file serves, restart after restart.
    if let Some(database) = common::temp_postgres() {
        let mut deployment = Deployment::postgres(&dir.0, &database.url);
        deployment.master_key = None;
        let with_file = |args: &[&str]| {
            let output = Command::new(BIN)
                .args(args)
                .env_remove("LICENSD_MASTER_KEY")
                .env("LICENSD_LOG", "warn")
                .env("LICENSD_DATABASE_URL", &deployment.database_url)
                .envs(env)
                .output()
                .expect("run licensd");
            assert!(output.status.success(), "licensd {args:?}: {}", stderr(&output));
            serde_json::from_slice::<Value>(&output.stdout).expect("JSON")
        };
        let account = with_file(&["account", "create", "--email", "keyfile@example.com"]);
        let id = account["accountId"].as_str().unwrap();
        // The key check at start opens what the first run sealed.
        with_file(&["account", "suspend", "--account", id]);
        drop(database);
    }

    let garbage = dir.0.join("garbage.key");
    std::fs::write(&garbage, "not a key").unwrap();
    let data = dir.0.join("data");
    let env = [("LICENSD_MASTER_KEY_FILE", garbage.to_str().unwrap()), ("LICENSD_DATA_DIR", data.to_str().unwrap())];
    let refused = licensd(&["account", "create", "--email", "x@example.com"], &env);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("LICENSD_MASTER_KEY_FILE"), "{}", stderr(&refused));
}

#[test]
fn account_list_shows_every_account_with_its_email_and_state() {
    each_backend(|deployment| {
        let empty = deployment.cli(&["account", "list"]);
        assert_eq!(empty["accounts"], serde_json::json!([]));
        let first = deployment.cli(&["account", "create", "--email", "first@example.com"]);
        let second = deployment.cli(&["account", "create", "--email", "second@example.com"]);
        let second_id = second["accountId"].as_str().unwrap();
        deployment.cli(&["account", "suspend", "--account", second_id]);
        deployment.cli(&["credits", "grant", "--account", first["accountId"].as_str().unwrap(), "--amount", "7"]);
        let listed = deployment.cli(&["account", "list"]);
        let accounts = listed["accounts"].as_array().expect("accounts");
        assert_eq!(accounts.len(), 2, "{listed}");
        let find = |id: &Value| accounts.iter().find(|a| a["accountId"] == *id).expect("listed").clone();
        let (a, b) = (find(&first["accountId"]), find(&second["accountId"]));
        assert_eq!(
            (a["email"].as_str(), a["suspended"].as_bool(), a["balance"].as_i64()),
            (Some("first@example.com"), Some(false), Some(7))
        );
        assert_eq!((b["email"].as_str(), b["suspended"].as_bool()), (Some("second@example.com"), Some(true)));
        assert_eq!(a["apiKeys"], 1);
        assert!(!listed.to_string().contains(first["apiKey"].as_str().unwrap()), "no key in the listing");
    });
}

/// On Postgres a reader takes only the events of transactions older than the oldest one running
/// anywhere in the cluster. A transaction that another session (here: another database's client,
/// in the suite: a parallel test) holds open across a command's commit thus hid that command's
/// account from the next `account list`, which printed a shorter list as if it were complete.
#[test]
fn account_list_waits_for_transactions_running_elsewhere_on_postgres_rather_than_miss_an_account() {
    let Some(database) = common::temp_postgres() else { return };
    let dir = TempDir::new();
    let deployment = Deployment::postgres(&dir.0, &database.url);
    let admin = std::env::var("LICENSD_TEST_POSTGRES_URL").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // A transaction with an id, open in another database of the cluster: it pins the horizon.
    let hold = || {
        runtime.block_on(async {
            let mut tx = sqlx::PgPool::connect(&admin).await.unwrap().begin().await.unwrap();
            sqlx::query("SELECT pg_current_xact_id()").execute(&mut *tx).await.unwrap();
            tx
        })
    };
    let holder = hold();
    let created = deployment.cli(&["account", "create", "--email", "pinned@example.com"]);
    let list = std::thread::spawn({
        let deployment = Deployment::postgres(&dir.0, &database.url);
        move || deployment.cli(&["account", "list"])
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    runtime.block_on(holder.commit()).unwrap();
    let listed = list.join().expect("account list");
    assert_eq!(listed["accounts"][0]["accountId"], created["accountId"], "{listed}");

    // A transaction that outlasts LICENSD_READ_SETTLE_MS: the command says so instead of printing
    // a list without the newest account.
    let holder = hold();
    deployment.cli(&["account", "create", "--email", "second@example.com"]);
    let output = deployment.command(&["account", "list"]).env("LICENSD_READ_SETTLE_MS", "200").output().unwrap();
    runtime.block_on(holder.rollback()).unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stdout));
    assert!(stderr(&output).contains("LICENSD_READ_SETTLE_MS"), "{}", stderr(&output));
    assert_eq!(deployment.cli(&["account", "list"])["accounts"].as_array().unwrap().len(), 2);
}

#[test]
fn an_invalid_log_filter_or_format_is_refused_before_anything_starts() {
    let dir = TempDir::new();
    let data = dir.0.join("data");
    let data_dir = data.to_str().unwrap();
    for (filter, said) in [("debgu", "'debgu' is not a level"), ("info,licensd=loud", "not a valid log filter")] {
        let output = licensd(&["migrate"], &[("LICENSD_DATA_DIR", data_dir), ("LICENSD_LOG", filter)]);
        assert_eq!(output.status.code(), Some(1), "{filter}");
        assert!(stderr(&output).contains(said), "{filter}: {}", stderr(&output));
        assert!(!data.exists(), "nothing was created for {filter}");
    }
    let output = licensd(&["migrate"], &[("LICENSD_DATA_DIR", data_dir), ("LICENSD_LOG_FORMAT", "yaml")]);
    assert!(stderr(&output).contains("must be 'text' or 'json'"), "{}", stderr(&output));
    // Valid filters still start.
    let output = licensd(&["migrate"], &[("LICENSD_DATA_DIR", data_dir), ("LICENSD_LOG", "warn,licensd_api=debug")]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn a_fatal_error_is_printed_once() {
    let dir = TempDir::new();
    let data = dir.0.join("data");
    for format in ["text", "json"] {
        let env = [
            ("LICENSD_DATA_DIR", data.to_str().unwrap()),
            ("LICENSD_MASTER_KEY", "too short"),
            ("LICENSD_LOG_FORMAT", format),
        ];
        let output = licensd(&["account", "list"], &env);
        assert_eq!(output.status.code(), Some(1));
        let text = stderr(&output);
        assert_eq!(text.matches("LICENSD_MASTER_KEY is invalid").count(), 1, "{format}: once, not twice: {text}");
    }
    // Commands that need the key say so once too.
    let output =
        licensd(&["account", "list"], &[("LICENSD_DATA_DIR", data.to_str().unwrap()), ("LICENSD_MASTER_KEY", "x")]);
    assert_eq!(stderr(&output).matches("LICENSD_MASTER_KEY is invalid").count(), 1, "{}", stderr(&output));
}

#[test]
fn a_port_already_taken_stops_the_start_before_the_data_folder_or_key_is_created() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let dir = TempDir::new();
    let data = dir.0.join("never-created");
    let output = licensd(&["serve"], &[("LICENSD_DATA_DIR", data.to_str().unwrap()), ("LICENSD_LISTEN", &listen)]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains(&format!("cannot listen on {listen}")), "{}", stderr(&output));
    assert!(!data.exists(), "no data folder (and no master key) left behind");
}

#[test]
fn help_groups_the_settings_under_headings() {
    let output = licensd(&["serve", "--help"], &[]);
    let help = String::from_utf8_lossy(&output.stdout);
    for heading in ["Storage:", "Logging:", "HTTP server:", "Webhooks:", "Dashboard:", "Live sessions:"] {
        assert!(help.contains(heading), "no '{heading}' in serve --help:\n{help}");
    }
}
