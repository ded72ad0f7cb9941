//! Drives the real `licensd` binary: a server on 127.0.0.1:0 and the operator commands.

#![allow(dead_code)] // each test file uses a different part of this harness

pub mod mixed;

use hmac::{Hmac, Mac};
use serde_json::json;
use serde_json::Value;
use sha2::Sha256;
use std::io::Write;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

pub const BIN: &str = env!("CARGO_BIN_EXE_licensd");

/// Limits raised so that a test's own traffic is never throttled (tests of the limits set theirs).
pub const RELAXED_LIMITS: &[(&str, &str)] = &[
    ("LICENSD_VALIDATE_PER_KEY", "1000"),
    ("LICENSD_VALIDATE_PER_IP", "1000"),
    ("LICENSD_HEARTBEAT_PER_KEY", "1000"),
    ("LICENSD_API_BURST", "100000"),
    ("LICENSD_API_PER_SECOND", "100000"),
    ("LICENSD_PORTAL_CHALLENGES_PER_IP", "1000"),
    ("LICENSD_PORTAL_CHALLENGES_PER_KEY", "1000"),
    ("LICENSD_WEBHOOK_ALLOW_HTTP_LOOPBACK", "true"),
];

/// Where a test's licensd keeps its data: a temporary folder, and the database URL to use.
pub struct Deployment {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub master_key: Option<String>,
}

impl Deployment {
    pub fn sqlite(dir: &Path) -> Self {
        Self {
            data_dir: dir.to_path_buf(),
            database_url: format!("sqlite://{}/licensd.db", dir.display()),
            master_key: None,
        }
    }

    pub fn postgres(dir: &Path, url: &str) -> Self {
        Self { data_dir: dir.to_path_buf(), database_url: url.to_string(), master_key: Some("cd".repeat(32)) }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("LICENSD_DATA_DIR", &self.data_dir)
            .env("LICENSD_DATABASE_URL", &self.database_url)
            .env("LICENSD_LOG", "warn")
            .env_remove("LICENSD_MASTER_KEY");
        if let Some(key) = &self.master_key {
            command.env("LICENSD_MASTER_KEY", key);
        }
        command
    }

    /// Runs an operator command and parses its JSON output; panics with stderr on failure.
    pub fn cli(&self, args: &[&str]) -> Value {
        let output = self.command(args).output().expect("run licensd");
        assert!(output.status.success(), "licensd {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).expect("JSON output")
    }

    /// An operator command given `input` on stdin (e.g. `account set-password`).
    pub fn cli_with_input(&self, args: &[&str], input: &str) -> Value {
        use std::io::Write as _;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run licensd");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "licensd {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).expect("the command prints JSON")
    }

    /// `licensd serve` expected to refuse to start: returns its stderr once it exited (failing if
    /// it is still running after 60 s, or exited 0).
    pub fn serve_fails(&self) -> String {
        let mut child = self
            .command(&["serve"])
            .env("LICENSD_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn licensd serve");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("licensd serve kept running where it should have refused to start");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(!status.success(), "licensd serve exited 0 where it should have failed");
        let mut stderr = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
        stderr
    }

    /// Runs an operator command expected to fail; returns its stderr.
    pub fn cli_fails(&self, args: &[&str]) -> String {
        let output = self.command(args).output().expect("run licensd");
        assert!(!output.status.success(), "licensd {args:?} should have failed");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    pub fn start(&self) -> Server {
        self.start_with(&[])
    }

    /// Starts the server with extra environment (e.g. raised rate limits).
    pub fn start_with(&self, env: &[(&str, &str)]) -> Server {
        self.start_logging_to(env, None)
    }

    /// Starts the server with its log (stderr) written to `log`, for tests that read it.
    pub fn start_logging_to(&self, env: &[(&str, &str)], log: Option<&Path>) -> Server {
        let mut command = self.command(&["serve"]);
        command.envs(env.iter().copied());
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
            None => Stdio::inherit(),
        };
        let mut child = command
            .env("LICENSD_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn licensd serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("licensd printed its address");
        let listening: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("unexpected first line: {line:?}"));
        let addr = listening["listening"].as_str().expect("listening address").to_string();
        Server { child, base: format!("http://{addr}") }
    }

    /// Creates an account and an app, and returns (API key, app id).
    pub fn merchant(&self, server: &Server, email: &str) -> (String, String) {
        let merchant = self.merchant_with_credits(server, email, 0);
        (merchant.api_key, merchant.app_id)
    }

    /// An account holding `credits`, with one app whose credentials are returned.
    pub fn merchant_with_credits(&self, server: &Server, email: &str, credits: u64) -> Merchant {
        let account = self.cli(&["account", "create", "--email", email]);
        let api_key = account["apiKey"].as_str().unwrap().to_string();
        let account_id = account["accountId"].as_str().unwrap().to_string();
        if credits > 0 {
            self.cli(&["credits", "grant", "--account", &account_id, "--amount", &credits.to_string()]);
        }
        let (status, app) = server.post(&api_key, "/v1/apps", &serde_json::json!({ "name": "Test app" }));
        assert_eq!(status, 201, "{app}");
        let text = |field: &str| app[field].as_str().unwrap().to_string();
        Merchant {
            account_id,
            api_key,
            app_id: text("appId"),
            app_secret: text("appSecret"),
            public_key: text("publicKey"),
        }
    }
}

/// A merchant's credentials for one app.
#[derive(Debug, Clone)]
pub struct Merchant {
    pub account_id: String,
    pub api_key: String,
    pub app_id: String,
    pub app_secret: String,
    pub public_key: String,
}

impl Merchant {
    /// Creates one license and returns its key.
    pub fn license(&self, server: &Server, body: Value) -> String {
        let mut body = body;
        body["appId"] = Value::from(self.app_id.clone());
        let (status, created) = server.post(&self.api_key, "/v1/licenses", &body);
        assert_eq!(status, 201, "{created}");
        created["licenses"][0]["licenseKey"].as_str().unwrap().to_string()
    }

    /// `PUT` on the Developer API, asserting success.
    pub fn put(&self, server: &Server, path: &str, body: Value) -> Value {
        let (status, answer) = server.send("PUT", &self.api_key, path, Some(&body));
        assert!((200..300).contains(&status), "PUT {path}: {status} {answer}");
        answer
    }
}

pub struct Server {
    child: Child,
    pub base: String,
}

/// A client that shows redirects instead of following them (the dashboard's sign-in answers 303).
pub fn no_redirect_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client")
}

impl Server {
    pub fn get(&self, api_key: &str, path: &str) -> (u16, Value) {
        let response = client().get(format!("{}{path}", self.base)).bearer_auth(api_key).send().expect("GET");
        (response.status().as_u16(), response.json().unwrap_or(Value::Null))
    }

    pub fn post(&self, api_key: &str, path: &str, body: &Value) -> (u16, Value) {
        let response =
            client().post(format!("{}{path}", self.base)).bearer_auth(api_key).json(body).send().expect("POST");
        (response.status().as_u16(), response.json().unwrap_or(Value::Null))
    }

    pub fn send(&self, method: &str, api_key: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = client().request(method, format!("{}{path}", self.base)).bearer_auth(api_key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().expect("request");
        (response.status().as_u16(), response.json().unwrap_or(Value::Null))
    }

    /// A public auth call: raw JSON in, (status, JSON) out.
    pub fn auth(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = client().post(format!("{}{path}", self.base)).json(body).send().expect("POST");
        (response.status().as_u16(), response.json().unwrap_or(Value::Null))
    }

    pub fn get_text(&self, path: &str) -> (u16, String) {
        let response = client().get(format!("{}{path}", self.base)).send().expect("GET");
        (response.status().as_u16(), response.text().unwrap_or_default())
    }

    /// What `/metrics` says was written: events appended and licenses. A refused request must
    /// leave it unchanged. Other `licensd_events_*` series are left out on purpose: a read model
    /// adds its own series the first time it reports, which a test must not read as a write.
    pub fn written(&self) -> Vec<String> {
        let (_, metrics) = self.get_text("/metrics");
        metrics
            .lines()
            .filter(|l| l.starts_with("licensd_events_appended_total ") || l.starts_with("licensd_licenses "))
            .map(String::from)
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the clean exit.
    pub fn terminate(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let status = self.child.wait().expect("wait for licensd");
        assert!(status.success(), "licensd exited with {status} after SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary folder removed at the end of the test.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("licensd-e2e-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temporary folder");
        Self(dir)
    }
}

impl TempDir {
    /// Every byte of the SQLite database files in the folder (with the WAL), as lossy text: for
    /// checking what is, and is not, stored in clear: the log's file and the read models' file
    /// (`licensd-read.db`).
    pub fn sqlite_files(&self) -> String {
        let mut stored = Vec::new();
        for entry in std::fs::read_dir(&self.0).expect("the data folder") {
            let path = entry.expect("a folder entry").path();
            if path.file_name().unwrap_or_default().to_string_lossy().starts_with("licensd") {
                stored.extend(std::fs::read(path).expect("a database file"));
            }
        }
        String::from_utf8_lossy(&stored).into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `test` against a fresh server started with `env` on SQLite, then on Postgres when one is
/// configured (`LICENSD_TEST_POSTGRES_URL`).
pub fn on_both_backends(env: &[(&str, &str)], test: impl Fn(&Deployment, &Server)) {
    each_backend(|deployment| test(deployment, &deployment.start_with(env)));
}

/// Runs `test` on a fresh SQLite deployment, then on a fresh Postgres one when configured; the
/// test starts (and restarts) its servers itself.
pub fn each_backend(test: impl Fn(&Deployment)) {
    let dir = TempDir::new();
    test(&Deployment::sqlite(&dir.0));
    if let Some(database) = temp_postgres() {
        let dir = TempDir::new();
        test(&Deployment::postgres(&dir.0, &database.url));
    }
}

/// Runs SQL against the deployment's database (the server may be running): the rows' first
/// column for a `SELECT`, nothing otherwise; a change to a read model (`rm_` table) goes to the
/// read models' database.
pub fn sql(deployment: &Deployment, statement: &'static str, args: Vec<licensd_store::SqlValue>) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let options = licensd_store::StoreOptions::durable();
        let store = licensd_store::Store::connect(&deployment.database_url, &options).await.unwrap();
        let rows = if statement.starts_with("SELECT") {
            store.query_text(statement, &args).await.unwrap().into_iter().flatten().collect()
        } else if statement.contains(" rm_") {
            // The read models (on SQLite, their own file).
            store.execute_read_models(&[licensd_store::Statement::new(statement, args)]).await.unwrap();
            vec![]
        } else {
            store.execute(&[licensd_store::Statement::new(statement, args)]).await.unwrap();
            vec![]
        };
        store.close().await;
        rows
    })
}

/// A throwaway Postgres database, or `None` when `LICENSD_TEST_POSTGRES_URL` is unset.
pub fn temp_postgres() -> Option<licensd_store::testing::TempDatabase> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(licensd_store::testing::TempDatabase::postgres())
}

/// `(name, hash, caught up)` of every read model, from `licensd projections`.
pub fn projection_hashes(deployment: &Deployment) -> Vec<(String, String, bool)> {
    let report = deployment.cli(&["projections"]);
    report["projections"]
        .as_array()
        .expect("projections")
        .iter()
        .map(|p| {
            let name = p["projection"].as_str().unwrap().to_string();
            (name, p["hash"].as_str().unwrap().to_string(), p["caughtUp"] == true)
        })
        .collect()
}

/// Like [`projection_hashes`], asserting every model is caught up with the log.
pub fn caught_up_hashes(deployment: &Deployment) -> Vec<(String, String)> {
    projection_hashes(deployment)
        .into_iter()
        .map(|(name, hash, caught_up)| {
            assert!(caught_up, "projection {name} is not caught up");
            (name, hash)
        })
        .collect()
}

/// A running deployment on SQLite with one merchant: the usual starting point of a test.
pub struct World {
    pub dir: TempDir,
    pub deployment: Deployment,
    /// `None` only while a test has stopped the server.
    pub server: Option<Server>,
    pub merchant: Merchant,
}

impl World {
    /// A server started with `env`, and a merchant holding `credits` with one app.
    pub fn new(env: &[(&str, &str)], credits: u64) -> Self {
        let dir = TempDir::new();
        let deployment = Deployment::sqlite(&dir.0);
        let server = deployment.start_with(env);
        let merchant = deployment.merchant_with_credits(&server, "merchant@example.com", credits);
        Self { dir, deployment, server: Some(server), merchant }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("the server is running")
    }
}

/// The Python tools the suite drives (the official SDK, pytest, schemathesis, an SMTP server),
/// installed at pinned versions into `target/sdk-python-venv` on first use; returns its python.
pub fn python_venv() -> PathBuf {
    const PACKAGES: [&str; 5] =
        ["authforge-sdk==2.0.0", "pytest==9.2.0", "schemathesis==4.32.5", "aiosmtpd==1.4.6", "websockets==15.0.1"];
    let run = |command: &mut Command| command.status().is_ok_and(|s| s.success());
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("sdk-python-venv");
    let python = venv.join("bin").join("python");
    let ready = venv.join(".installed");
    let wanted = PACKAGES.join("\n");
    if std::fs::read_to_string(&ready).ok().as_deref() != Some(wanted.as_str()) {
        assert!(
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv)),
            "python3 with the venv module is needed for the Python tests"
        );
        assert!(
            run(Command::new(&python).args(["-m", "pip", "install", "--quiet"]).args(PACKAGES)),
            "installing {PACKAGES:?} failed"
        );
        std::fs::write(&ready, wanted).unwrap();
    }
    python
}

/// The Kafka-protocol broker of the Kafka tests (`LICENSD_TEST_KAFKA_BROKER_BIN`, the tansu
/// binary that `.ci/tansu` builds): `None`, with a note, when unset; a panic when `CI` is set,
/// so CI never skips them silently.
pub fn kafka_broker_bin() -> Option<PathBuf> {
    match std::env::var_os("LICENSD_TEST_KAFKA_BROKER_BIN") {
        Some(bin) => Some(PathBuf::from(bin)),
        None if std::env::var_os("CI").is_some() => {
            panic!("CI is set but LICENSD_TEST_KAFKA_BROKER_BIN is not: .ci/run builds the broker with .ci/tansu")
        }
        None => {
            eprintln!(
                "skipped: LICENSD_TEST_KAFKA_BROKER_BIN is unset (`bash .ci/tansu` builds the broker and prints it)"
            );
            None
        }
    }
}

/// A port that was free a moment ago, for servers that cannot report the one they bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn hmac_hex(secret: &str, data: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// A real SMTP server writing each message into a Maildir.
pub struct MailSink {
    child: Child,
    pub port: u16,
    maildir: PathBuf,
}

impl MailSink {
    pub fn start(dir: &Path) -> Self {
        let python = python_venv();
        let maildir = dir.join("maildir");
        let port = free_port();
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .spawn()
            .expect("start aiosmtpd");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the SMTP server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, port, maildir }
    }

    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else { return vec![] };
        entries.flatten().filter_map(|e| std::fs::read_to_string(e.path()).ok()).collect()
    }
}

impl Drop for MailSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Answers `GET /v1/checkout/sessions/{id}/line_items` like Stripe: a list of line items whose
/// price is `price_<id>`; session `cs_down` answers 503 (a Stripe outage), and so does every
/// session while `outage` is set.
pub fn fake_stripe_api(outage: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut authorized = false;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
                authorized |= header.to_ascii_lowercase().starts_with("authorization: bearer sk_test_");
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or_default().to_string();
            let session = path.split('/').nth(4).unwrap_or_default().to_string();
            let (status, body) = if !authorized {
                ("401 Unauthorized", json!({ "error": { "type": "invalid_request_error" } }))
            } else if session == "cs_down" || outage.load(Ordering::SeqCst) {
                ("503 Service Unavailable", json!({ "error": { "type": "api_error" } }))
            } else {
                let price = session.trim_start_matches("cs_").to_string();
                let item = json!({
                    "id": format!("li_{price}"), "object": "item", "amount_total": 1900, "currency": "usd",
                    "description": "Pro", "quantity": 1,
                    "price": { "id": format!("price_{price}"), "object": "price", "product": "prod_1", "type": "one_time" },
                });
                ("200 OK", json!({ "object": "list", "data": [item], "has_more": false, "url": path }))
            };
            let body = body.to_string();
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    base
}

/// A self-signed certificate for 127.0.0.1 (openssl command line), and its key.
pub fn self_signed_certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        // webpki refuses a CA certificate as the server's own: this one is an end entity.
        .args(["-addext", "extendedKeyUsage=serverAuth", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success());
    (cert, key)
}
