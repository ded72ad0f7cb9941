//! The in-process server the HTTP fuzz target drives: the real router over a real SQLite store
//! with one merchant (account, app, license, Stripe and Lemon Squeezy connections), the in-memory
//! model's tail running, and no worker that could send anything over the network.
//!
//! Inputs name the merchant's credentials by placeholder (`@APP@`, `@SECRET@`, `@KEY@`, ...), so
//! seeds that authenticate stay valid across runs and mutations reach past authentication.

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use licensd_api::{ApiConfig, AppState, AuthConfig};
use licensd_commands::{Actor, Commands, MasterKey, Writer, WriterConfig};
use licensd_domain::account::AccountCommand;
use licensd_domain::commerce::Provider;
use licensd_domain::SystemClock;
use licensd_projections::{HotModel, HotRunner, TailConfig};
use licensd_store::{Store, StoreOptions};
use licensd_workers::commerce::signature;
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};
use tokio::runtime::Runtime;
use tower::ServiceExt;

/// One endpoint the fuzzer may call. `sign` names the provider whose signature header is
/// computed over the fuzzed body (so the payload parser, not the signature check, is exercised).
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub bearer: bool,
    pub sign: Option<Provider>,
}

const fn route(method: &'static str, path: &'static str, bearer: bool) -> Route {
    Route { method, path, bearer, sign: None }
}

/// Every endpoint that reads a body or a path from the caller, except the few that would cut the
/// harness off from itself (rotating the app secret, revoking the API key, re-keying a commerce
/// connection) or reach out of the machine (the webhook test ping).
pub const ROUTES: &[Route] = &[
    route("POST", "/auth/validate", false),
    route("POST", "/auth/heartbeat", false),
    route("POST", "/auth/selfban", false),
    route("POST", "/auth/offline/activate", false),
    Route { method: "POST", path: "/billing/webhook/stripe/@STRIPE@", bearer: false, sign: Some(Provider::Stripe) },
    Route { method: "POST", path: "/billing/webhook/lemon/@LEMON@", bearer: false, sign: Some(Provider::Lemon) },
    route("POST", "/billing/webhook/stripe/@STRIPE@", false),
    route("POST", "/v1/licenses", true),
    route("PUT", "/v1/licenses/@OTHER@", true),
    route("PUT", "/v1/licenses/@OTHER@/variables", true),
    route("PUT", "/v1/licenses/@OTHER@/email", true),
    route("POST", "/v1/licenses/@OTHER@/offline-files", true),
    route("POST", "/v1/apps", true),
    route("PUT", "/v1/apps/@APP@", true),
    route("PUT", "/v1/apps/@APP@/settings", true),
    route("PUT", "/v1/apps/@APP@/portal", true),
    route("PUT", "/v1/apps/@APP@/variables", true),
    route("PUT", "/v1/apps/@APP@/security", true),
    route("POST", "/v1/apps/@APP@/security/blacklist", true),
    route("DELETE", "/v1/apps/@APP@/security/whitelist", true),
    route("POST", "/v1/apps/@APP@/webhooks", true),
    route("POST", "/v1/apps/@APP@/customers/forget", true),
    route("POST", "/v1/api-keys", true),
    route("PUT", "/v1/credits/settings", true),
    route("POST", "/v1/commerce/mappings", true),
    route("POST", "/v1/commerce/events/replay", true),
    route("POST", "/portal/challenges", false),
    route("POST", "/portal/sessions", false),
    route("POST", "/dashboard/login", false),
    // The body is appended to the path: query strings and path segments are untrusted input too.
    route("GET", "/v1/licenses?appId=@APP@&", true),
    route("GET", "/v1/licenses/", true),
    route("GET", "/v1/commerce/events?", true),
    route("GET", "/v1/audit-log?", true),
];

/// The merchant's credentials, substituted for the placeholders of an input.
struct Credentials {
    api_key: String,
    app_id: String,
    app_secret: String,
    license_key: String,
    /// A second license, the one the Developer API routes change (so `@KEY@` stays valid).
    other_key: String,
    /// A session token from a validation of `@KEY@` on machine `fuzz-machine`.
    session_token: String,
    stripe: (String, String),
    lemon: (String, String),
}

pub struct Harness {
    runtime: Runtime,
    router: Router,
    credentials: Credentials,
    /// Keeps the in-memory model's tail running for the life of the process.
    _tail: tokio::sync::watch::Sender<bool>,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Rate limits raised out of the way: the fuzzer calls far faster than any documented limit.
fn unlimited() -> ApiConfig {
    let auth = AuthConfig {
        validate_per_ip: u32::MAX,
        validate_per_key: u32::MAX,
        heartbeat_per_key: u32::MAX,
        selfban_per_ip: u32::MAX,
        selfban_per_key: u32::MAX,
        ..AuthConfig::default()
    };
    ApiConfig { auth, api_burst: u32::MAX, api_per_second: u32::MAX, ..ApiConfig::default() }
}

impl Harness {
    /// The process-wide harness, set up on first use.
    pub fn get() -> &'static Harness {
        static HARNESS: OnceLock<Harness> = OnceLock::new();
        HARNESS.get_or_init(|| Harness::start().expect("fuzz harness set-up"))
    }

    fn start() -> Result<Self, Box<dyn std::error::Error>> {
        let dir = TempDir(std::env::temp_dir().join(format!("licensd-fuzz-{}", uuid::Uuid::new_v4().simple())));
        std::fs::create_dir_all(&dir.0)?;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let url = format!("sqlite://{}/licensd.db", dir.0.display());
        let (tail_stop, tail_stopped) = tokio::sync::watch::channel(false);
        let (router, credentials) = runtime.block_on(async {
            let options =
                StoreOptions { max_connections: 4, sqlite_synchronous_full: false, ..StoreOptions::durable() };
            let store = Store::connect(&url, &options).await?;
            store.migrate().await?;
            let (writer, _task) = Writer::spawn(store.clone(), WriterConfig::default());
            let commands =
                Commands::new(store.clone(), writer, Arc::new(SystemClock), MasterKey::parse(&"ab".repeat(32))?);
            let hot = Arc::new(HotModel::default());
            let tail = HotRunner::new(store.clone(), hot.clone(), TailConfig::default());
            tokio::spawn(tail.run(commands.writer().subscribe_commits(), tail_stopped));
            let runner = HotRunner::new(store, hot.clone(), TailConfig::default());
            let created = commands.create_account("fuzz@example.com", &Actor::Operator).await?;
            // Enough credits that validations are never refused for want of them.
            let grant = AccountCommand::GrantCredits { amount: 1 << 40, reason: "fuzzing".into() };
            commands.account_command(created.account_id, grant, &Actor::Operator).await?;
            let router = licensd_api::router(AppState::new(commands, hot, runner, unlimited())?);
            let credentials = provision(&router, created.api_key).await?;
            Ok::<_, Box<dyn std::error::Error>>((router, credentials))
        })?;
        Ok(Self { runtime, router, credentials, _tail: tail_stop, _dir: dir })
    }

    /// Replaces the placeholders of `text` with the merchant's credentials.
    pub fn substitute(&self, text: &str) -> String {
        let c = &self.credentials;
        text.replace("@APP@", &c.app_id)
            .replace("@SECRET@", &c.app_secret)
            .replace("@KEY@", &c.license_key)
            .replace("@OTHER@", &c.other_key)
            .replace("@STRIPE@", &c.stripe.0)
            .replace("@LEMON@", &c.lemon.0)
            .replace("@TOKEN@", &c.session_token)
            .replace("@NONCE@", &uuid::Uuid::new_v4().simple().to_string())
    }

    /// Calls `route` with `body` (placeholders substituted); returns the status and body.
    pub fn call(&self, route: &Route, body: &[u8]) -> (StatusCode, Vec<u8>) {
        let body = match std::str::from_utf8(body) {
            Ok(text) => self.substitute(text).into_bytes(),
            Err(_) => body.to_vec(), // invalid UTF-8 goes through untouched
        };
        let mut path = self.substitute(route.path);
        // The dashboard's sign-in is an HTML form; everything else speaks JSON.
        let content_type =
            if path.starts_with("/dashboard") { "application/x-www-form-urlencoded" } else { "application/json" };
        let mut request = Request::builder().method(route.method).header("content-type", content_type);
        if route.method == "GET" {
            // Only characters a URI can carry; the rest of the input is dropped.
            path.extend(body.iter().map(|&b| b as char).filter(|c| c.is_ascii_graphic() && *c != '#'));
        }
        if route.bearer {
            request = request.header("authorization", format!("Bearer {}", self.credentials.api_key));
        }
        match route.sign {
            Some(Provider::Stripe) => {
                let now = chrono_now();
                request = request.header(
                    "stripe-signature",
                    signature::stripe_signature_header(&body, &self.credentials.stripe.1, now),
                );
            }
            Some(Provider::Lemon) => {
                request =
                    request.header("x-signature", signature::lemon_signature_header(&body, &self.credentials.lemon.1));
            }
            None => {}
        }
        let Ok(request) = request.uri(path).body(Body::from(body)) else {
            return (StatusCode::BAD_REQUEST, Vec::new()); // not a URI: never reaches a server
        };
        self.runtime.block_on(async {
            let response = self.router.clone().oneshot(request).await.expect("the router is infallible");
            read(response).await
        })
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

async fn read(response: Response<Body>) -> (StatusCode, Vec<u8>) {
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default();
    (status, bytes.to_vec())
}

async fn send(router: &Router, method: &str, path: &str, api_key: &str, body: Value) -> Result<Value, String> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {api_key}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .map_err(|e| e.to_string())?;
    let response = router.clone().oneshot(request).await.map_err(|e| e.to_string())?;
    let (status, bytes) = read(response).await;
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_success() {
        Ok(value)
    } else {
        Err(format!("{method} {path}: {status} {value}"))
    }
}

/// The session token of a successful validation (from its signed payload).
async fn session_token(router: &Router, app_id: &str, secret: &str, key: &str) -> Result<String, String> {
    use base64::{engine::general_purpose::STANDARD, Engine};
    let body = json!({
        "appId": app_id, "appSecret": secret, "licenseKey": key, "hwid": "fuzz-machine",
        "nonce": uuid::Uuid::new_v4().simple().to_string(),
    });
    let answer = send(router, "POST", "/auth/validate", "", body).await?;
    let payload = STANDARD.decode(answer["payload"].as_str().unwrap_or_default()).map_err(|e| e.to_string())?;
    let claims: Value = serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
    claims["sessionToken"].as_str().map(str::to_string).ok_or_else(|| format!("no session token in {claims}"))
}

/// An app, a license and both commerce connections, made through the Developer API.
async fn provision(router: &Router, api_key: String) -> Result<Credentials, String> {
    let text = |v: &Value, pointer: &str| v.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
    let app = send(router, "POST", "/v1/apps", &api_key, json!({ "name": "Fuzzed app" })).await?;
    let app_id = text(&app, "/appId");
    let created =
        send(router, "POST", "/v1/licenses", &api_key, json!({ "appId": app_id, "maxHwidSlots": 2, "quantity": 2 }))
            .await?;
    let mut connections = Vec::new();
    for provider in ["stripe", "lemon"] {
        let secret = format!("whsec_fuzz_{provider}");
        let body = json!({ "signingSecret": secret });
        let connection = send(router, "PUT", &format!("/v1/commerce/connections/{provider}"), &api_key, body).await?;
        connections.push((text(&connection, "/connectionId"), secret));
    }
    let app_secret = text(&app, "/appSecret");
    let license_key = text(&created, "/licenses/0/licenseKey");
    let session_token = session_token(router, &app_id, &app_secret, &license_key).await?;
    let lemon = connections.pop().unwrap_or_default();
    let stripe = connections.pop().unwrap_or_default();
    Ok(Credentials {
        app_secret,
        license_key,
        other_key: text(&created, "/licenses/1/licenseKey"),
        session_token,
        app_id,
        api_key,
        stripe,
        lemon,
    })
}
