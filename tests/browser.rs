//! The dashboard and the self-service portal in a real browser (headless Chromium driven over
//! WebDriver), against the real binary, a real SMTP server and a local server speaking Stripe's
//! line-items API. Screenshots of the main pages go to `target/screenshots/` (or
//! `LICENSD_SCREENSHOT_DIR`), kept by CI as artifacts.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them). Without them the test fails, never skips, in CI.

#[path = "live/client.rs"]
#[allow(dead_code)] // the users scenario drives one live session
mod client;
mod common;

use common::{fake_stripe_api, hmac_hex, Deployment, MailSink, Server, TempDir};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MERCHANT: &str = "merchant@example.com";
const PASSWORD: &str = "a long dashboard password";
const BUYER: &str = "dana.buyer@example.com";
const STRIPE_SECRET: &str = "whsec_browser_test";

struct ChromeDriver(Child, u16);

impl ChromeDriver {
    fn start() -> Self {
        let port = common::free_port();
        let child = Command::new(std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into()))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is needed: install Debian's chromium and chromium-driver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self(child, port)
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser(driver: &ChromeDriver, profile: &std::path::Path) -> Client {
    let args = [
        "--headless=new".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--window-size=1280,1000".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), json!({ "binary": binary, "args": args }));
    // Plain HTTP to the local driver: no TLS stack needed.
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("connect to chromedriver")
}

struct Page {
    client: Client,
    base: String,
    shots: PathBuf,
}

impl Page {
    async fn open(&self, path: &str) {
        self.client.goto(&format!("{}{path}", self.base)).await.expect("navigate");
        // A dashboard route is drawn by script after the navigation: wait until this one is.
        if let Some((_, hash)) = path.split_once('#').filter(|_| path.starts_with("/dashboard")) {
            let settled = format!("main[data-route=\"#{}\"]:not([aria-busy])", hash.replace('"', "\\\""));
            self.wait(&settled).await;
        }
    }

    async fn wait(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    async fn text(&self, css: &str) -> String {
        self.wait(css).await.text().await.expect("text")
    }

    async fn fill(&self, css: &str, value: &str) {
        let input = self.wait(css).await;
        input.clear().await.expect("clear");
        input.send_keys(value).await.expect("type");
    }

    async fn submit(&self, form_css: &str) {
        self.wait(&format!("{form_css} button[type=submit]")).await.click().await.expect("submit");
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// Waits until `css` holds text containing `needle`.
    async fn until_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = element.text().await {
                    if text.contains(needle) {
                        return text;
                    }
                }
            }
            if Instant::now() > deadline {
                self.shot("failure").await;
                let source = self.client.source().await.unwrap_or_default();
                panic!("{css} never showed {needle:?}; the page (screenshot failure.png):\n{source}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs the harness's blocking HTTP and process calls without stalling the async browser driver.
fn blocking<T>(call: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(call)
}

/// The newest sign-in code mailed to `to`, waiting for it to arrive.
fn code_for(mail: &MailSink, to: &str, seen: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let codes: Vec<String> = mail
            .messages()
            .iter()
            .filter(|m| m.contains(to) && m.contains("sign-in code"))
            .filter_map(|m| {
                m.lines()
                    .map(str::trim)
                    .find(|l| l.len() == 6 && l.chars().all(|c| c.is_ascii_digit()))
                    .map(String::from)
            })
            .collect();
        if codes.len() > seen {
            return codes.last().unwrap().clone();
        }
        assert!(Instant::now() < deadline, "no sign-in code arrived for {to}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bind_machine(server: &Server, app_id: &str, secret: &str, key: &str, hwid: &str) {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let body = json!({ "appId": app_id, "appSecret": secret, "licenseKey": key, "hwid": hwid, "nonce": nonce });
    let (status, answer) = server.auth("/auth/validate", &body);
    assert_eq!((status, answer["status"].as_str()), (200, Some("ok")), "{answer}");
}

/// A Stripe checkout whose line items cannot be read during an outage, so it ends up held.
fn held_purchase(server: &Server, api_key: &str, app_id: &str) -> String {
    let path = connect_stripe(server, api_key, json!({ "signingSecret": STRIPE_SECRET, "apiKey": "sk_test_browser" }));
    let mapping = json!({ "provider": "stripe", "priceId": "price_pro", "appId": app_id, "kind": "one_time" });
    let (status, answer) = server.post(api_key, "/v1/commerce/mappings", &mapping);
    assert_eq!(status, 201, "{answer}");
    let event = json!({ "id": "evt_browser_1", "object": "event", "type": "checkout.session.completed",
        "created": 1_700_000_000, "data": { "object": {
            "id": "cs_pro", "object": "checkout.session", "mode": "payment", "payment_status": "paid",
            "customer": "cus_dana", "payment_intent": "pi_browser", "customer_details": { "email": BUYER },
            "amount_total": 2900, "currency": "eur" } } });
    post_stripe(server, &path, &event);
    ledger_status(server, api_key, "evt_browser_1", "held")
}

/// Connects the merchant's Stripe account with `settings`; returns the webhook path.
fn connect_stripe(server: &Server, api_key: &str, settings: Value) -> String {
    let (status, connection) = server.send("PUT", api_key, "/v1/commerce/connections/stripe", Some(&settings));
    assert_eq!(status, 200, "{connection}");
    connection["webhookPath"].as_str().unwrap().to_string()
}

/// Delivers `event` to the Stripe webhook `path`, signed as Stripe signs, and expects it taken.
fn post_stripe(server: &Server, path: &str, event: &Value) {
    let body = event.to_string();
    let t = chrono::Utc::now().timestamp();
    let signature = format!("t={t},v1={}", hmac_hex(STRIPE_SECRET, format!("{t}.{body}").as_bytes()));
    let response = reqwest::blocking::Client::new()
        .post(format!("{}{path}", server.base))
        .header("Stripe-Signature", signature)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// A webhook for new licenses on loopback where nothing listens, and three licenses: three
/// deliveries queued. Returns the webhook's id.
fn three_webhook_deliveries(server: &Server, api_key: &str, app_id: &str) -> String {
    let url = format!("http://127.0.0.1:{}/hook", common::free_port());
    let hooks = format!("/v1/apps/{app_id}/webhooks");
    let (status, hook) = server.post(api_key, &hooks, &json!({ "url": url, "events": ["license.created"] }));
    assert_eq!(status, 201, "{hook}");
    let id = hook["webhookId"].as_str().unwrap().to_string();
    let (status, made) = server.post(api_key, "/v1/licenses", &json!({ "appId": app_id, "quantity": 3 }));
    assert_eq!(status, 201, "{made}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get(api_key, &format!("{hooks}/{id}/deliveries")).1["total"] != 3 {
        assert!(Instant::now() < deadline, "three deliveries are queued");
        std::thread::sleep(Duration::from_millis(100));
    }
    id
}

/// Three signed Stripe events of a type no mapping handles: three ledger entries (skipped).
fn three_skipped_commerce_events(server: &Server, api_key: &str) {
    let path = connect_stripe(server, api_key, json!({ "signingSecret": STRIPE_SECRET }));
    for n in 1..=3 {
        let event = json!({ "id": format!("evt_page_{n}"), "object": "event", "type": "customer.created",
            "created": 1_700_000_000 + n, "data": { "object": { "id": format!("cus_{n}"), "object": "customer" } } });
        post_stripe(server, &path, &event);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get(api_key, "/v1/commerce/events").1["total"] != 3 {
        assert!(Instant::now() < deadline, "three commerce events are recorded");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for the ledger entry of `external_id` to reach `status`; returns its event id.
fn ledger_status(server: &Server, api_key: &str, external_id: &str, status: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, page) = server.get(api_key, "/v1/commerce/events?limit=50");
        let entry = page["events"].as_array().and_then(|events| {
            events.iter().find(|e| e["externalEventId"] == external_id && e["status"] == status).cloned()
        });
        if let Some(entry) = entry {
            return entry["eventId"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "{external_id} never became {status}: {page}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchant_and_end_user_flows_work_in_a_real_browser() {
    let dir = TempDir::new();
    let shots = std::env::var("LICENSD_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    let _ = std::fs::remove_file(shots.join("failure.png"));
    let mail = blocking(|| MailSink::start(&dir.0));
    let outage = Arc::new(AtomicBool::new(true));
    let stripe = fake_stripe_api(outage.clone());
    let deployment = Deployment::sqlite(&dir.0);
    let smtp = format!("smtp://127.0.0.1:{}", mail.port);
    let server = blocking(|| {
        deployment.start_with(&[
            ("LICENSD_SMTP_URL", smtp.as_str()),
            ("LICENSD_STRIPE_API_BASE", stripe.as_str()),
            ("LICENSD_COMMERCE_RETRY_DELAY_MS", "200"),
        ])
    });
    let account = blocking(|| deployment.cli(&["account", "create", "--email", MERCHANT]));
    let account_id = account["accountId"].as_str().unwrap().to_string();
    let api_key = account["apiKey"].as_str().unwrap().to_string();
    blocking(|| deployment.cli(&["credits", "grant", "--account", &account_id, "--amount", "1000"]));
    blocking(|| {
        deployment.cli_with_input(&["account", "set-password", "--account", &account_id], &format!("{PASSWORD}\n"))
    });

    let driver = ChromeDriver::start();
    let client = browser(&driver, &dir.0.join("chromium-profile")).await;
    // `localhost` (not 127.0.0.1): browsers treat it as a secure context, so the Secure cookie works.
    let base = server.base.replace("127.0.0.1", "localhost");
    let page = Page { client, base, shots };

    // Sign-in: a wrong password is refused, the right one lands on the apps page.
    page.open("/dashboard").await;
    page.fill("#email", MERCHANT).await;
    page.fill("#password", "not the password").await;
    page.submit("#login-form").await;
    page.until_text("#login-error", "wrong").await;
    page.shot("dashboard-login").await;
    page.fill("#password", PASSWORD).await;
    page.submit("#login-form").await;
    page.wait("#new-app-name").await;

    // Create an app; its credentials are shown once.
    page.fill("#new-app-name", "Acme Editor").await;
    page.submit("main form").await;
    let app_id = page.text("#shown-once code[data-field='App ID']").await;
    let app_secret = page.text("#shown-once code[data-field='App secret']").await;
    page.shot("dashboard-app-created").await;
    page.wait("#open-new-app").await.click().await.unwrap();
    page.wait("#tab-settings").await.click().await.unwrap();

    // Portal policy: 2 resets per 30 days, no cooldown, branded; the support URL gets https://.
    page.fill("#policy-limit", "2").await;
    page.fill("#policy-cooldown", "0").await;
    page.fill("#policy-support-url", "help.acme.example/tickets").await;
    page.fill("#policy-display-name", "Acme Licenses").await;
    page.fill("#policy-accent", "#a78bfa").await;
    page.submit("#portal-policy").await;
    page.until_text("#flash", "Portal policy saved").await;
    let (_, policy) = blocking(|| server.get(&api_key, &format!("/v1/apps/{app_id}/portal")));
    assert_eq!(policy["supportUrl"], "https://help.acme.example/tickets", "{policy}");
    assert_eq!((policy["resetLimit"].as_u64(), policy["accentColor"].as_str()), (Some(2), Some("#A78BFA")));

    // Generate a license and attach the buyer's email.
    page.wait("#tab-licenses").await.click().await.unwrap();
    page.fill("#gen-label", "browser test").await;
    page.submit("form:has(#gen-quantity)").await;
    let key = page.text("#generated-keys li a").await;
    page.shot("dashboard-app").await;
    page.wait("#generated-keys li a").await.click().await.unwrap();
    page.fill("#portal-email", BUYER).await;
    page.submit("#portal-email-form").await;
    page.until_text("#license-email", BUYER).await;
    let (_, license) = blocking(|| server.get(&api_key, &format!("/v1/licenses/{key}")));
    assert_eq!(license["email"], BUYER, "{license}");

    // The end user signs in through the portal with the code from the real mailbox.
    blocking(|| bind_machine(&server, &app_id, &app_secret, &key, "machine-a"));
    page.open("/portal").await;
    assert_eq!(page.text("#portal-title").await, "License portal", "no branding before sign-in");
    page.fill("#license-key", &key).await;
    page.fill("#email", &BUYER.to_uppercase()).await;
    page.shot("portal-sign-in").await;
    page.submit("#challenge-form").await;
    page.wait("#code").await;
    let code = blocking(|| code_for(&mail, BUYER, 0));
    page.fill("#code", &code).await;
    page.submit("#code-form").await;
    page.until_text("#devices", "1 bound").await;
    assert_eq!(page.text("#portal-title").await, "Acme Licenses", "branding after sign-in");
    assert!(!page.text("#masked-key").await.contains(&key[5..9]), "the key is shown masked");
    page.shot("portal-home").await;
    let axe = blocking(axe_source);
    page.audit(&axe, "a11y-portal-home").await;
    assert_eq!(page.text("#bound-devices").await, "machine-a", "the bound device is listed");

    // Reset until the policy refuses: two resets, then the button is disabled with the reason.
    for (round, machine) in ["machine-b", "machine-c"].iter().enumerate() {
        page.wait("#reset-button:not([disabled])").await.click().await.unwrap();
        page.until_text("#devices", "0 bound").await;
        blocking(|| bind_machine(&server, &app_id, &app_secret, &key, machine));
        page.open("/portal").await;
        page.until_text("#devices", "1 bound").await;
        let (_, history) = blocking(|| server.get(&api_key, &format!("/v1/licenses/{key}/events")));
        let recorded =
            history["events"].as_array().unwrap().iter().filter(|e| e["type"] == "PortalResetRecorded").count();
        assert_eq!(recorded, round + 1, "{history}");
    }
    page.wait("#reset-button[disabled]").await;
    let reason = page.text("#reset-reason").await;
    assert!(reason.contains("all 2 device resets"), "{reason}");
    let support = page.wait("#support-link").await.attr("href").await.unwrap();
    assert_eq!(support.as_deref(), Some("https://help.acme.example/tickets"));
    page.shot("portal-reset-refused").await;
    page.audit(&axe, "a11y-portal-reset-refused").await;
    let help = page.text("#reset-support").await;
    assert!(help.contains("Support page: help.acme.example/tickets"), "labelled support links: {help}");
    // The API refuses as well: the policy is enforced server-side, not by the button.
    let (status, answer) = blocking(|| server.get(&api_key, &format!("/v1/licenses/{key}")));
    assert_eq!((status, answer["hwidList"].as_array().map(Vec::len)), (200, Some(1)));

    // A purchase held by a Stripe outage is replayed from the dashboard once Stripe is back.
    let event_id = blocking(|| held_purchase(&server, &api_key, &app_id));
    outage.store(false, Ordering::SeqCst);
    page.open("/dashboard#/commerce?status=held").await;
    page.until_text(".event-status", "held").await;
    page.shot("dashboard-commerce-held").await;
    page.wait(&format!("button.replay[data-event='{event_id}']")).await.click().await.unwrap();
    blocking(|| ledger_status(&server, &api_key, "evt_browser_1", "processed"));
    page.open("/dashboard#/commerce").await;
    page.until_text(".event-status", "processed").await;
    page.shot("dashboard-commerce").await;
    let (_, entry) = blocking(|| server.get(&api_key, &format!("/v1/commerce/events/{event_id}")));
    assert_eq!(entry["licenseKeys"].as_array().map(Vec::len), Some(1), "{entry}");
    // The fulfilled purchase is charted as revenue (EUR 29.00 today), as the roll-up says.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let (_, overview) = blocking(|| server.get(&api_key, "/v1/overview?days=14"));
    let day = overview["daily"].as_array().unwrap().iter().find(|d| d["day"] == today.as_str()).unwrap().clone();
    assert_eq!(day["revenue"], json!([{ "currency": "EUR", "amountMinor": 2900, "purchases": 1 }]), "{day}");
    page.open("/dashboard#/overview").await;
    let bar = page.wait(&format!("#chart-revenue-eur rect[data-day='{today}']")).await;
    assert_eq!(bar.attr("data-value").await.unwrap().as_deref(), Some("29"));
    // The period is chosen by links named in days (they once printed as their URLs).
    assert_eq!(page.text("#overview-period").await, "Period: 7 days 14 days 30 days 90 days");
    page.shot("dashboard-overview-revenue").await;

    // The other pages render for this account.
    for (route, marker, name) in [
        ("#/credits", "#balance", "dashboard-credits"),
        ("#/api-keys", "main table", "dashboard-api-keys"),
        ("#/audit", "main table", "dashboard-audit"),
        (&format!("#/licenses/{key}") as &str, ".event-type", "dashboard-license"),
    ] {
        page.open(&format!("/dashboard{route}")).await;
        page.wait(marker).await;
        page.shot(name).await;
    }
    // The history names events in words; the raw type is only a tooltip.
    let reset = page.text(".event-type[title='PortalResetRecorded']").await;
    assert!(reset.to_lowercase().contains("portal") && reset != "PortalResetRecorded", "{reset}");

    // A request from the page without its CSRF token is refused.
    let forged: Value = page
        .client
        .execute(
            "return fetch('/v1/apps', {method: 'POST', headers: {'Content-Type': 'application/json'}, \
             body: JSON.stringify({name: 'forged'})}).then(r => r.status)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(forged, json!(403));
    page.client.close().await.unwrap();
}

/// Signs the merchant in on the dashboard's login form.
async fn dashboard_sign_in(page: &Page) {
    page.open("/dashboard").await;
    page.fill("#email", MERCHANT).await;
    page.fill("#password", PASSWORD).await;
    page.submit("#login-form").await;
    page.wait("#new-app-name").await;
}

/// An app's users page (issue 17) on both backends: cursor pages, exact-login search, a hostile
/// login shown as text, the detail with the linked license and the live session, blacklist and
/// unblacklist, a password reset and a confirmed delete, each reaching the user's live session
/// (events 301, 304, 303) and the Developer API; a write without the page's CSRF token changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_users_are_managed_in_a_real_browser() {
    let shots = std::env::var("LICENSD_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    let dir = TempDir::new();
    users_page_scenario(&Deployment::sqlite(&dir.0), &dir.0, &shots).await;
    if let Some(database) = blocking(common::temp_postgres) {
        let dir = TempDir::new();
        users_page_scenario(&Deployment::postgres(&dir.0, &database.url), &dir.0, &shots).await;
        blocking(move || drop(database));
    }
}

async fn users_page_scenario(deployment: &Deployment, dir: &std::path::Path, shots: &std::path::Path) {
    let env =
        client::live_env(&[("LICENSD_APP_USER_ARGON2_MEMORY_KIB", "256"), ("LICENSD_APP_USER_ARGON2_ITERATIONS", "1")]);
    let server = blocking(|| deployment.start_with(&env));
    let (m, ws_key) = blocking(|| client::live_merchant(deployment, &server, MERCHANT));
    blocking(|| {
        deployment.cli_with_input(&["account", "set-password", "--account", &m.account_id], &format!("{PASSWORD}\n"))
    });
    let users = format!("/v1/apps/{}/users", m.app_id);
    let mut ids = Vec::new();
    for (login, extra) in [
        ("ann.b", json!({"levels": ["beta"], "comment": "first customer"})),
        ("<b>bold</b>", json!({})),
        ("cat.d", json!({})),
    ] {
        let mut body = json!({"login": login, "password": "secret1"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (status, made) = blocking(|| server.post(&m.api_key, &users, &body));
        assert_eq!(status, 201, "{made}");
        ids.push(made["userId"].as_str().unwrap().to_string());
    }
    let ann = ids[0].clone();
    let license = blocking(|| m.license(&server, json!({ "maxHwidSlots": 1 })));

    // Ann signs in on machine-1 over a live session, links the license, and listens for events.
    let rt = client::runtime();
    let mut ws = blocking(|| {
        let mut ws = client::Ws::connect(&rt, &server.base);
        assert_eq!(ws.init(&ws_key, "machine-1")["status"], 1);
        assert_eq!(ws.call(json!({"type": 17, "id": 2, "subscribed": true}))["status"], 1);
        let sign_in = json!({"type": 3, "id": 3, "login": "ann.b", "password": "secret1", "credentials_type": 0});
        assert_eq!(ws.call(sign_in)["status"], 1);
        assert_eq!(ws.call(json!({"type": 4, "id": 4, "license": license}))["status"], 1);
        ws
    });

    let driver = ChromeDriver::start();
    let client = browser(&driver, &dir.join("chromium-profile")).await;
    let page = Page { client, base: server.base.replace("127.0.0.1", "localhost"), shots: shots.to_path_buf() };
    dashboard_sign_in(&page).await;

    // The app page links to its users; two per page, oldest first, then the cursor's next page.
    page.open(&format!("/dashboard#/apps/{}", m.app_id)).await;
    page.wait("#tab-users").await.click().await.unwrap();
    page.wait("#user-search").await;
    page.open(&format!("/dashboard#/apps/{}/users?limit=2", m.app_id)).await;
    page.until_text("#users", "ann.b").await;
    let first: Vec<String> = logins(&page).await;
    assert_eq!(first, ["ann.b", "<b>bold</b>"], "the hostile login is text, never markup");
    assert!(page.client.find(Locator::Css("#users td b")).await.is_err(), "no <b> element was made");
    page.shot("dashboard-app-users").await;
    page.wait("#users-next").await.click().await.unwrap();
    page.until_text("#users", "cat.d").await;
    assert_eq!(logins(&page).await, ["cat.d"]);
    assert!(page.client.find(Locator::Css("#users-next")).await.is_err(), "the last page has no next");

    // Search by login (any case), then the detail: the linked license and the live session.
    page.fill("#user-search", "ANN.B").await;
    page.submit("#user-search-form").await;
    page.until_text("#users", "ann.b").await;
    assert_eq!(logins(&page).await, ["ann.b"]);
    page.wait("#users .user-login").await.click().await.unwrap();
    page.until_text("#user-licenses", &license).await;
    page.until_text("#user-sessions", "machine-1").await;
    assert_eq!(page.text("#user-comment").await, "first customer");
    page.shot("dashboard-app-user").await;

    // A forged write (no CSRF token) from the page is refused and changes nothing.
    let forged: Value = page
        .client
        .execute(
            "return fetch(arguments[0], {method: 'PATCH', headers: {'Content-Type': 'application/json'}, \
             body: JSON.stringify({status: 'blacklisted'})}).then(r => r.status)",
            vec![json!(format!("{users}/{ann}"))],
        )
        .await
        .unwrap();
    assert_eq!(forged, json!(403));
    let status_of = || blocking(|| server.get(&m.api_key, &format!("{users}/{ann}")));
    assert_eq!(status_of().1["status"], "active");

    // Blacklist, after its confirmation names the consequence: event 301 on ann's session;
    // unblacklist; she signs in again.
    page.wait("#toggle-blacklist").await.click().await.unwrap();
    assert!(page.text("#toggle-blacklist-confirm .consequence").await.contains("1 live session"));
    assert_eq!(status_of().1["status"], "active", "nothing before the confirmation");
    page.wait("#toggle-blacklist-yes").await.click().await.unwrap();
    page.until_text("#flash", "User blacklisted").await;
    page.until_text("#user-status", "blacklisted").await;
    blocking(|| assert_eq!(ws.recv()["event_type"], 301));
    assert_eq!(status_of().1["status"], "blacklisted");
    page.wait("#toggle-blacklist").await.click().await.unwrap();
    page.until_text("#flash", "User unblacklisted").await;
    assert_eq!(status_of().1["status"], "active");
    let sign_in = |id: u64, password: &str| json!({"type": 3, "id": id, "login": "ann.b", "password": password, "credentials_type": 0});
    blocking(|| assert_eq!(ws.call(sign_in(5, "secret1"))["status"], 1));

    // Reset password: event 304, signed out, only the new password works.
    page.fill("#new-user-password", "brand-new-pass").await;
    page.submit("#reset-password-form").await;
    page.until_text("#flash", "Password reset").await;
    blocking(|| {
        assert_eq!(ws.recv()["event_type"], 304);
        assert_eq!(ws.call(sign_in(6, "secret1"))["status"], 200);
        assert_eq!(ws.call(sign_in(7, "brand-new-pass"))["status"], 1);
    });

    // Delete, confirmed after the page names the consequence: event 303, the user is gone, the
    // license stays and is free again.
    page.client.refresh().await.unwrap(); // drawn while she was signed out
    page.until_text("#user-sessions", "machine-1").await;
    page.wait("#delete-user").await.click().await.unwrap();
    let consequence = page.text("#delete-consequence").await;
    for needle in ["Delete ann.b?", "1 live session", "1 linked license is unlinked", "cannot be undone"] {
        assert!(consequence.contains(needle), "{needle:?} in {consequence:?}");
    }
    page.shot("dashboard-app-user-delete").await;
    assert_eq!(status_of().0, 200, "nothing deleted before the confirmation");
    page.wait("#delete-confirmed").await.click().await.unwrap();
    page.until_text("#flash", "User deleted").await;
    page.wait("#user-search").await;
    blocking(|| assert_eq!(ws.recv()["event_type"], 303));
    assert_eq!(status_of().0, 404);
    let (status, kept) = blocking(|| server.get(&m.api_key, &format!("/v1/licenses/{license}")));
    assert_eq!(status, 200, "{kept}");
    let (_, left) = blocking(|| server.get(&m.api_key, &users));
    assert_eq!(left["users"].as_array().map(Vec::len), Some(2), "{left}");

    page.client.close().await.unwrap();
    blocking(move || drop((ws, rt, server)));
}

/// The logins of the users table, in order.
async fn logins(page: &Page) -> Vec<String> {
    page.texts("#users .user-login").await
}

/// axe-core (from the npm registry, as the project's accessibility checker), fetched once into
/// `target/axe-core-<version>/` with npm's own client; the test fails when it cannot be had.
fn axe_source() -> String {
    const VERSION: &str = "4.10.3";
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join(format!("axe-core-{VERSION}"));
    let script = dir.join("package").join("axe.min.js");
    if !script.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let packed = Command::new("npm")
            .args(["pack", &format!("axe-core@{VERSION}"), "--pack-destination"])
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .expect("npm is needed to fetch axe-core");
        assert!(packed.success(), "npm pack axe-core failed");
        let tarball = dir.join(format!("axe-core-{VERSION}.tgz"));
        let unpacked = Command::new("tar").arg("xzf").arg(&tarball).arg("-C").arg(&dir).status().unwrap();
        assert!(unpacked.success(), "could not unpack {}", tarball.display());
    }
    std::fs::read_to_string(script).expect("axe.min.js")
}

impl Page {
    /// Checks the page as drawn now, then screenshots it at 1366 px and at 390 px: axe-core finds
    /// no serious or critical violation, and at 390 px nothing is wider than the screen.
    async fn audit(&self, axe: &str, name: &str) {
        let run = format!(
            "const done = arguments[arguments.length - 1]; {axe}\n;axe.run(document, {{ resultTypes: ['violations'] }}).then(r => \
             done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical').map(v => v.id + ' (' + v.impact + '): ' \
             + v.help + ' at ' + v.nodes.map(n => n.target.join(' ')).join(', '))), e => done(['axe failed: ' + e]));"
        );
        let found = self.client.execute_async(&run, vec![]).await.expect("run axe");
        assert_eq!(found, json!([]), "accessibility violations on {name}");
        self.client.set_window_size(1366, 900).await.unwrap();
        self.shot(&format!("{name}-1366")).await;
        self.client.set_window_size(390, 844).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let widths = self
            .client
            .execute("return [document.documentElement.scrollWidth, window.innerWidth]", vec![])
            .await
            .unwrap();
        let (scroll, inner) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        if scroll > 390 || scroll > inner {
            self.shot(&format!("{name}-390-overflow")).await;
            let wide = self
                .client
                .execute(
                    "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > \
                     window.innerWidth + 1).slice(0, 8).map(e => e.tagName + '#' + e.id + '.' + e.className)",
                    vec![],
                )
                .await
                .unwrap();
            panic!("{name} overflows at 390 px: scrollWidth {scroll}, innerWidth {inner}; widest: {wide}");
        }
        self.shot(&format!("{name}-390")).await;
        self.client.set_window_size(1366, 900).await.unwrap();
    }

    /// The text of every element matching `css`, read in one script (no stale elements).
    async fn texts(&self, css: &str) -> Vec<String> {
        let found = self
            .client
            .execute("return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", vec![json!(css)])
            .await
            .unwrap();
        serde_json::from_value(found).unwrap()
    }

    /// The `attribute` of every `css` element on each page of a paged list, following `next`
    /// until it is gone (each page read once it has replaced the one before).
    async fn every_page(&self, css: &str, attribute: &str, next: &str) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let deadline = Instant::now() + Duration::from_secs(20);
            let rows = loop {
                let found = self
                    .client
                    .execute(
                        "return [...document.querySelectorAll(arguments[0])].map(e => e.getAttribute(arguments[1]))",
                        vec![json!(css), json!(attribute)],
                    )
                    .await
                    .unwrap();
                let rows: Vec<String> = serde_json::from_value(found).unwrap_or_default();
                if !rows.is_empty() && rows.first() != before.as_ref() {
                    break rows;
                }
                assert!(Instant::now() < deadline, "the page of {css} never came");
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            before = rows.first().cloned();
            all.extend(rows);
            assert!(all.len() < 1000, "paging does not end");
            let Ok(link) = self.client.find(Locator::Css(next)).await else { return all };
            link.click().await.unwrap();
        }
    }

    /// The id of the focused element.
    async fn focused(&self) -> String {
        let id = self.client.execute("return document.activeElement && document.activeElement.id", vec![]).await;
        id.unwrap().as_str().unwrap_or_default().to_string()
    }

    async fn press(&self, key: &str) {
        self.client.active_element().await.unwrap().send_keys(key).await.unwrap();
    }
}

const ENTER: &str = "\u{E007}";
const ESCAPE: &str = "\u{E00C}";

/// Issue 20 and issue 18's dashboard, on both backends: every destructive action asks first
/// (a cancel changes nothing), licenses page past 200 with the API's cursor, files upload with
/// progress and carry a policy, the security lists edit one entry per row, a live session is
/// kicked, a license's levels, offline file and history work; every page passes axe-core with no
/// serious or critical violation and fits 390 px.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_safe_paged_and_accessible() {
    let shots = std::env::var("LICENSD_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    let axe = blocking(axe_source);
    let dir = TempDir::new();
    dashboard_scenario(&Deployment::sqlite(&dir.0), &dir.0, &shots, &axe, true).await;
    if let Some(database) = blocking(common::temp_postgres) {
        let dir = TempDir::new();
        dashboard_scenario(&Deployment::postgres(&dir.0, &database.url), &dir.0, &shots, &axe, false).await;
        blocking(move || drop(database));
    }
}

async fn dashboard_scenario(
    deployment: &Deployment,
    dir: &std::path::Path,
    shots: &std::path::Path,
    axe: &str,
    audit: bool,
) {
    // Webhooks may target loopback, where nothing listens: deliveries stay queued for a retry.
    let hooks_env = [("LICENSD_WEBHOOK_ALLOW_HTTP_LOOPBACK", "true"), ("LICENSD_WEBHOOK_RETRY_BASE_MS", "60000")];
    let server = blocking(|| deployment.start_with(&client::live_env(&hooks_env)));
    let (m, ws_key) = blocking(|| client::live_merchant(deployment, &server, MERCHANT));
    blocking(|| {
        deployment.cli(&["credits", "grant", "--account", &m.account_id, "--amount", "5000"]);
        deployment.cli_with_input(&["account", "set-password", "--account", &m.account_id], &format!("{PASSWORD}\n"))
    });
    let mut all_keys = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let body = json!({ "appId": m.app_id, "quantity": 100, "maxHwidSlots": 2, "label": "bulk" });
        let (status, made) = blocking(|| server.post(&m.api_key, "/v1/licenses", &body));
        assert_eq!(status, 201, "{made}");
        for l in made["licenses"].as_array().unwrap() {
            all_keys.insert(l["licenseKey"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(all_keys.len(), 300);

    let driver = ChromeDriver::start();
    let client = browser(&driver, &dir.join("chromium-profile")).await;
    let page = Page { client, base: server.base.replace("127.0.0.1", "localhost"), shots: shots.to_path_buf() };
    page.client.set_window_size(1366, 900).await.unwrap();
    page.open("/dashboard/login").await;
    page.wait("#login-form").await;
    if audit {
        page.audit(axe, "a11y-login").await;
    }
    dashboard_sign_in(&page).await;
    if audit {
        page.audit(axe, "a11y-apps").await;
    }
    let app = format!("/dashboard#/apps/{}", m.app_id);

    // Paging past 200: three pages of 100 hold every one of the 300 licenses, each once.
    page.open(&format!("{app}/licenses?limit=100")).await;
    let mut seen = std::collections::BTreeSet::new();
    let mut pages = 0;
    let mut before = String::new();
    loop {
        // The page's keys, read in one go (the view is redrawn under the driver between pages).
        let deadline = Instant::now() + Duration::from_secs(20);
        let keys = loop {
            let keys = page.texts("#licenses .license-key").await;
            if keys.first().is_some_and(|first| *first != before) {
                break keys;
            }
            assert!(Instant::now() < deadline, "the next page never came");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(keys.len(), 100, "page {pages}");
        before = keys[0].clone();
        for key in keys {
            assert!(seen.insert(key), "a license shown twice");
        }
        pages += 1;
        let Ok(next) = page.client.find(Locator::Css("#licenses-next")).await else { break };
        next.click().await.unwrap();
    }
    assert_eq!((pages, &seen), (3, &all_keys), "every license, past the 200th, on three pages");
    // Newest first: the last page ends with the oldest license.
    let (_, oldest) =
        blocking(|| server.get(&m.api_key, &format!("/v1/licenses?appId={}&order=asc&limit=1", m.app_id)));
    let oldest_key = oldest["licenses"][0]["licenseKey"].as_str().unwrap().to_string();
    assert_eq!(page.texts("#licenses .license-key").await.last(), Some(&oldest_key));
    page.until_text("#license-count", "300 licenses match").await;
    page.wait("#licenses-first").await;
    let csv = page.wait("#licenses-csv").await.attr("href").await.unwrap().unwrap();
    assert!(csv.starts_with("/v1/licenses.csv?appId="), "{csv}");
    // The export link works with the dashboard's session: a header and every license.
    let rows = page
        .client
        .execute_async(
            "const done = arguments[1]; fetch(arguments[0]).then(r => r.text()).then(t => done(t.trim().split('\\n').length))",
            vec![json!(csv)],
        )
        .await
        .unwrap();
    assert_eq!(rows, json!(301), "{csv}");
    if audit {
        page.audit(axe, "a11y-app-licenses").await;
    }
    // The buyer-email filter finds the one license sold to that address, typed in any case.
    let sold = all_keys.iter().next().unwrap().clone();
    let email = json!({ "email": "filter.me@example.com" });
    let (status, _) = blocking(|| server.send("PUT", &m.api_key, &format!("/v1/licenses/{sold}/email"), Some(&email)));
    assert_eq!(status, 200);
    page.fill("#license-filter-email", "Filter.Me@Example.com").await;
    page.submit("#license-filter").await;
    page.until_text("#license-count", "1 license matches").await;
    assert_eq!(page.texts("#licenses .license-key").await, vec![sold]);

    // The App ID and the public key with its key id are shown on every tab; the secret never.
    for tab in ["licenses", "users", "files", "sessions", "webhooks", "settings", "security"] {
        page.open(&format!("{app}/{tab}")).await;
        page.wait(&format!("#tab-{tab}[aria-current='page']")).await;
        page.wait("#tab-body").await;
        assert_eq!(page.text("#app-id").await, m.app_id);
        assert!(page.text("#public-keys").await.contains(&m.public_key), "{tab}: the public key");
        assert!(!page.text("main").await.contains(&m.app_secret), "{tab}: the secret is never shown");
        if audit {
            page.audit(axe, &format!("a11y-app-{tab}")).await;
        }
    }

    // Rotating the secret asks first; Cancel (and Escape, from the keyboard) change nothing.
    page.open(&format!("{app}/settings")).await;
    page.wait("#rotate-secret").await.click().await.unwrap();
    let consequence = page.text("#rotate-secret-consequence").await;
    assert!(consequence.contains("stops working at once"), "{consequence}");
    assert_eq!(page.focused().await, "rotate-secret-yes", "focus moves into the dialog");
    page.shot("dashboard-confirm-rotate-secret").await;
    page.wait("#rotate-secret-cancel").await.click().await.unwrap();
    assert!(page.client.find(Locator::Css("#rotate-secret-yes")).await.is_err(), "the dialog closed");
    assert_eq!(page.focused().await, "rotate-secret", "focus returns to the button");
    page.press(ENTER).await;
    page.wait("#rotate-secret-yes").await;
    page.press(ESCAPE).await;
    assert!(page.client.find(Locator::Css("#rotate-secret-yes")).await.is_err(), "Escape closed it");
    let key = all_keys.iter().next().unwrap().clone();
    blocking(|| bind_machine(&server, &m.app_id, &m.app_secret, &key, "machine-a"));

    // Disabling the app names the consequence; cancelled, the app stays enabled.
    page.wait("#toggle-app").await.click().await.unwrap();
    assert!(page.text("#toggle-app-consequence").await.contains("stops validating"));
    page.wait("#toggle-app-cancel").await.click().await.unwrap();
    let (_, shown) = blocking(|| server.get(&m.api_key, &format!("/v1/apps/{}", m.app_id)));
    assert_eq!(shown["disabled"], false);

    // Signing keys in two steps: a new key is added without signing, made to sign after a
    // confirmation (cancelled first: nothing changes), and the old one retired.
    let keys = || blocking(|| server.get(&m.api_key, &format!("/v1/apps/{}/signing-keys", m.app_id)).1);
    let state_of = |keys: &Value, state: &str| -> Vec<String> {
        let all = keys["signingKeys"].as_array().unwrap();
        all.iter().filter(|k| k["state"] == state).map(|k| k["keyId"].as_str().unwrap().to_string()).collect()
    };
    let old_key = state_of(&keys(), "signing");
    page.wait("#add-signing-key").await.click().await.unwrap();
    page.until_text("#flash", "Key added").await;
    let new_key = state_of(&keys(), "verifying");
    assert_eq!((old_key.len(), new_key.len()), (1, 1));
    page.wait(&format!("#promote-{}", new_key[0])).await.click().await.unwrap();
    let consequence = page.text(&format!("#promote-{}-consequence", new_key[0])).await;
    assert!(consequence.contains("reject the new signatures"), "{consequence}");
    page.wait(&format!("#promote-{}-cancel", new_key[0])).await.click().await.unwrap();
    assert_eq!(state_of(&keys(), "signing"), old_key, "cancelled: the old key still signs");
    page.wait(&format!("#promote-{}", new_key[0])).await.click().await.unwrap();
    page.wait(&format!("#promote-{}-yes", new_key[0])).await.click().await.unwrap();
    page.until_text("#flash", "signs now").await;
    assert_eq!(state_of(&keys(), "signing"), new_key);
    page.wait(&format!("#retire-{}", old_key[0])).await.click().await.unwrap();
    page.wait(&format!("#retire-{}-yes", old_key[0])).await.click().await.unwrap();
    page.until_text("#flash", "retired").await;
    assert_eq!(state_of(&keys(), "retired"), old_key);
    page.shot("dashboard-signing-keys").await;

    // Security lists: one entry per row, added and removed, labelled in words.
    page.open(&format!("{app}/security")).await;
    assert!(page.text("#list-hwidBlacklist h3").await.contains("Blocked machines"));
    page.fill("#add-hwidBlacklist", "bad-machine").await;
    page.submit("#add-hwidBlacklist-form").await;
    page.until_text("#list-hwidBlacklist", "bad-machine").await;
    let lists = || blocking(|| server.get(&m.api_key, &format!("/v1/apps/{}/security", m.app_id)).1);
    assert_eq!(lists()["hwidBlacklist"], json!(["bad-machine"]));
    // Removing an entry names the consequence first; cancelled, the entry stays.
    page.wait("#remove-hwidBlacklist-bad_machine").await.click().await.unwrap();
    assert!(page
        .text("#remove-hwidBlacklist-bad_machine-confirm .consequence")
        .await
        .contains("bad-machine are accepted again"));
    page.wait("#remove-hwidBlacklist-bad_machine-cancel").await.click().await.unwrap();
    assert_eq!(lists()["hwidBlacklist"], json!(["bad-machine"]), "cancelled: the entry stays");
    page.wait("#remove-hwidBlacklist-bad_machine").await.click().await.unwrap();
    page.wait("#remove-hwidBlacklist-bad_machine-yes").await.click().await.unwrap();
    page.until_text("#flash", "Removed bad-machine").await;
    assert_eq!(lists()["hwidBlacklist"], json!([]));

    // Files: an upload shows its progress, the list its size and checksum; the policy editor and
    // a confirmed delete reach the API.
    let content: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let upload = dir.join("model.bin");
    std::fs::write(&upload, &content).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&content))
    };
    page.open(&format!("{app}/files")).await;
    page.fill("#upload-name", "model.bin").await;
    page.wait("#upload-file").await.send_keys(upload.to_str().unwrap()).await.unwrap();
    page.submit("#upload-form").await;
    page.until_text("#upload-status", "Uploaded model.bin version 1 (6.0 MiB)").await;
    let progress = page
        .client
        .execute(
            "const p = document.getElementById('upload-progress'); return [p.value, Number(p.dataset.events)]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(progress[0], json!(100), "the bar is full");
    assert!(progress[1].as_u64().unwrap() >= 1, "the browser reported upload progress: {progress}");
    page.until_text("#files", &sha).await;
    page.shot("dashboard-files-uploaded").await;
    let file = || blocking(|| server.get(&m.api_key, &format!("/v1/apps/{}/files/model.bin", m.app_id)));
    assert_eq!((file().1["sha256"].as_str(), file().1["size"].as_u64()), (Some(sha.as_str()), Some(6 << 20)));
    let editor = ".policy-form[data-file='model.bin']";
    page.wait(&format!("{editor} select")).await.select_by_value("levels").await.unwrap();
    page.fill(&format!("{editor} input[name=levels]"), "pro, beta").await;
    page.submit(editor).await;
    page.until_text(&format!("{editor} .status"), "Saved").await;
    assert_eq!(file().1["policy"], json!({ "kind": "levels", "levels": ["pro", "beta"] }));
    page.wait(".file-name").await.click().await.unwrap();
    page.until_text("#file-versions", "Versions of model.bin").await;
    page.wait("#delete-file-model_bin").await.click().await.unwrap();
    assert!(page.text("#delete-file-model_bin-consequence").await.contains("Every version of model.bin"));
    page.wait("#delete-file-model_bin-cancel").await.click().await.unwrap();
    assert_eq!(file().0, 200, "cancelled: the file stays");
    page.wait("#delete-file-model_bin").await.click().await.unwrap();
    page.wait("#delete-file-model_bin-yes").await.click().await.unwrap();
    page.until_text("#flash", "model.bin deleted").await;
    assert_eq!(file().0, 404);

    // A live session is kicked after the confirmation: the client is closed with 4100.
    let rt = client::runtime();
    let mut ws = blocking(|| {
        let mut ws = client::Ws::connect(&rt, &server.base);
        assert_eq!(ws.init(&ws_key, "kick-me")["status"], 1);
        ws
    });
    page.open(&format!("{app}/sessions")).await;
    page.until_text("#sessions", "kick-me").await;
    page.wait("#sessions button[id^='kick-']").await.click().await.unwrap();
    page.wait("#sessions button[id$='-yes']").await.click().await.unwrap();
    page.until_text("#sessions", "Disconnected").await;
    blocking(|| loop {
        // Event 1 comes first, then the close.
        if let client::Frame::Closed(code, reason) = ws.next() {
            assert_eq!(code, 4100, "{reason}");
            break;
        }
    });

    // Webhook deliveries and commerce events page with the API's cursors, like the license list.
    let hook = blocking(|| three_webhook_deliveries(&server, &m.api_key, &m.app_id));
    page.open(&format!("{app}/webhooks")).await;
    page.wait(&format!("#deliveries-{hook}")).await.click().await.unwrap();
    page.until_text("#deliveries-count", "3 deliveries").await;
    page.open(&format!("{app}/webhooks?deliveries={hook}&limit=2")).await;
    let shown = page.every_page(".delivery", "data-delivery", "#deliveries-next").await;
    let (_, listed) = blocking(|| server.get(&m.api_key, &format!("/v1/apps/{}/webhooks/{hook}/deliveries", m.app_id)));
    let ids: Vec<String> =
        listed["deliveries"].as_array().unwrap().iter().map(|d| d["deliveryId"].as_str().unwrap().into()).collect();
    assert_eq!(shown, ids, "two pages of two hold the three deliveries, newest first");
    page.wait("#deliveries-first").await;
    blocking(|| three_skipped_commerce_events(&server, &m.api_key));
    page.open("/dashboard#/commerce?limit=2").await;
    page.until_text("#commerce-count", "3 events").await;
    let shown = page.every_page(".commerce-event", "data-event", "#commerce-events-next").await;
    let (_, listed) = blocking(|| server.get(&m.api_key, "/v1/commerce/events"));
    let ids: Vec<String> =
        listed["events"].as_array().unwrap().iter().map(|e| e["eventId"].as_str().unwrap().into()).collect();
    assert_eq!(shown, ids, "two pages of two hold the three events, newest first");
    page.wait("#commerce-events-first").await;

    // One license: revoke asks first (cancel: still active), levels, an offline file, then a
    // confirmed revoke; the history reads in words with no raw payload shown.
    page.open(&format!("/dashboard#/licenses/{key}")).await;
    page.until_text("#machines", "machine-a").await;
    // The bound machine shows when it was first and last seen, as the API has them.
    let (_, shown) = blocking(|| server.get(&m.api_key, &format!("/v1/licenses/{key}")));
    let machine = &shown["machines"][0];
    assert!(machine["lastSeenAt"].is_string(), "{shown}");
    for (css, field) in [("#machines time.bound-at", "boundAt"), ("#machines time.last-seen", "lastSeenAt")] {
        let at = page.wait(css).await.attr("datetime").await.unwrap();
        assert_eq!(at.as_deref(), machine[field].as_str(), "{css}");
    }
    page.wait("#toggle-status").await.click().await.unwrap();
    assert!(page.text("#toggle-status-consequence").await.contains("stops validating"));
    page.wait("#toggle-status-cancel").await.click().await.unwrap();
    let license = || blocking(|| server.get(&m.api_key, &format!("/v1/licenses/{key}")).1);
    assert_eq!(license()["status"], "active", "cancelled: nothing changed");
    page.fill("#license-levels", "pro, beta").await;
    page.submit("#levels-form").await;
    page.until_text("#flash", "Levels saved").await;
    assert_eq!(license()["levels"], json!(["pro", "beta"]));
    page.fill("#offline-hwid", "machine-z").await;
    page.submit("#offline-form").await;
    page.wait("#offline-download").await;
    if audit {
        page.audit(axe, "a11y-license").await;
    }
    // Release one machine, after its confirmation.
    page.wait("#machines button[id^='release-']").await.click().await.unwrap();
    assert!(page.text("#machines .consequence").await.contains("loses its slot"));
    page.wait("#machines button[id$='-yes']").await.click().await.unwrap();
    page.until_text("#flash", "Machine released").await;
    assert_eq!(license()["machines"], json!([]), "released");
    page.wait("#toggle-status").await.click().await.unwrap();
    page.wait("#toggle-status-yes").await.click().await.unwrap();
    page.until_text("#flash", "Revoked").await;
    assert_eq!(license()["status"], "revoked");
    let history = page.text("#history").await;
    assert!(history.contains("License revoked"), "{history}");
    assert!(!history.contains("nonce") && !history.contains('{'), "no raw payload: {history}");

    // A variables form fed broken JSON says so in words, next to the button.
    page.fill("form:has(textarea) textarea", "{not json").await;
    page.submit("form:has(textarea)").await;
    let said = page.text("form:has(textarea) .status").await;
    assert!(said.contains("must be a JSON object"), "{said}");

    // The history pages newest first through the API's cursor, like the lists.
    page.open(&format!("/dashboard#/licenses/{key}?limit=3")).await;
    let shown = page.every_page("#history .event-type", "data-version", "#history-next").await;
    let (_, all) = blocking(|| server.get(&m.api_key, &format!("/v1/licenses/{key}/events")));
    let mut versions: Vec<String> =
        all["events"].as_array().unwrap().iter().map(|e| e["version"].to_string()).collect();
    versions.reverse();
    assert!(versions.len() > 6, "more than two pages: {versions:?}");
    assert_eq!(shown, versions, "every event once, newest first");
    page.wait("#history-first").await;

    // The overview's charts add up every billed call of the day: 266 validations show as 266 (the
    // old chart summed one page of 200 transactions), matching the API's ledger for today.
    let busy = all_keys.iter().nth(1).unwrap().clone();
    blocking(|| {
        for _ in 0..266 {
            bind_machine(&server, &m.app_id, &m.app_secret, &busy, "machine-b");
        }
    });
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let (status, overview) = blocking(|| server.get(&m.api_key, "/v1/overview?days=14"));
    assert_eq!(status, 200, "{overview}");
    let rollup = overview["daily"].as_array().unwrap().iter().find(|d| d["day"] == today.as_str()).unwrap().clone();
    assert!(rollup["validations"].as_u64().unwrap() >= 266, "{rollup}");
    page.open("/dashboard#/overview").await;
    for (chart, field) in [
        ("chart-validations", "validations"),
        ("chart-credits", "creditsBurned"),
        ("chart-new-licenses", "newLicenses"),
    ] {
        let bar = page.wait(&format!("#{chart} rect[data-day='{today}']")).await;
        assert_eq!(bar.attr("data-value").await.unwrap(), Some(rollup[field].to_string()), "{chart} today: {rollup}");
    }
    assert_eq!(page.text("#overview-licenses dd").await, overview["licenses"]["active"].to_string());
    assert!(page.text("#balance-lasts").await.starts_with("Lasts about"), "the balance projection");
    if audit {
        page.audit(axe, "a11y-overview").await;
    }

    // The audit log leaves the client's machine bindings out by default, and shows them on request.
    page.open("/dashboard#/audit").await;
    page.wait("#audit-filter").await;
    let by = page.texts("main td:nth-child(3)").await;
    assert!(!by.is_empty() && !by.iter().any(|b| b == "Client"), "{by:?}");
    page.wait("#audit-actor").await.select_by_value("client").await.unwrap();
    page.submit("#audit-filter").await;
    page.until_text("main table", "Client").await;

    for (route, marker, name) in [
        ("#/commerce", "main section", "a11y-commerce"),
        ("#/credits", "#balance", "a11y-credits"),
        ("#/api-keys", "main table", "a11y-api-keys"),
        ("#/audit", "main table", "a11y-audit"),
    ] {
        page.open(&format!("/dashboard{route}")).await;
        page.wait(marker).await;
        if audit {
            page.audit(axe, name).await;
        }
    }
    // An API key's revocation asks first too.
    page.open("/dashboard#/api-keys").await;
    page.wait("main button[id^='revoke-key-']").await.click().await.unwrap();
    assert!(page.text(".consequence").await.contains("refused from now on"));
    page.wait("main button[id$='-cancel']").await.click().await.unwrap();
    assert_eq!(blocking(|| server.get(&m.api_key, "/v1/apps")).0, 200, "the key still works");

    page.open("/portal").await;
    page.wait("#challenge-form").await;
    if audit {
        page.audit(axe, "a11y-portal-sign-in").await;
    }
    page.client.close().await.unwrap();
    blocking(move || drop((ws, rt, server)));
}
