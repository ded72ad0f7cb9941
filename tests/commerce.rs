//! Commerce end to end against the real binary: provider webhooks signed with each provider's
//! documented scheme, a local server speaking Stripe's line-items API, a real SMTP server
//! (aiosmtpd) receiving buyer email, Replay, and GDPR erasure checked across every table, every
//! event payload and the server log.

mod common;

use common::{each_backend, fake_stripe_api, hmac_hex, Deployment, MailSink, Server, TempDir};
use serde_json::{json, Value};

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use std::time::{Duration, Instant};

const BUYER: &str = "erin.buyer@example.com";

struct Shop {
    server: Server,
    log: PathBuf,
    api_key: String,
    app_id: String,
    stripe_path: String,
    lemon_path: String,
}

const STRIPE_SECRET: &str = "whsec_test_0123456789";
const LEMON_SECRET: &str = "lemon-signing-secret";

impl Shop {
    fn post_stripe(&self, event: &Value) -> (u16, Value) {
        let body = event.to_string();
        let t = chrono::Utc::now().timestamp();
        let signature = format!("t={t},v1={}", hmac_hex(STRIPE_SECRET, format!("{t}.{body}").as_bytes()));
        self.deliver(&self.stripe_path, "Stripe-Signature", &signature, body)
    }

    fn post_lemon(&self, event: &Value) -> (u16, Value) {
        let body = event.to_string();
        let signature = hmac_hex(LEMON_SECRET, body.as_bytes());
        self.deliver(&self.lemon_path, "X-Signature", &signature, body)
    }

    fn deliver(&self, path: &str, header: &str, signature: &str, body: String) -> (u16, Value) {
        let response = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.server.base))
            .header(header, signature)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .expect("deliver");
        (response.status().as_u16(), response.json().unwrap_or(Value::Null))
    }

    fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.server.send(method, &self.api_key, path, body)
    }

    fn mapping(&self, body: Value) -> Value {
        let mut body = body;
        body["appId"] = json!(self.app_id);
        let (status, mapping) = self.api("POST", "/v1/commerce/mappings", Some(&body));
        assert_eq!(status, 201, "{mapping}");
        mapping
    }

    /// Waits until the ledger entry for `external_id` leaves `pending` (and `failed`, when asked).
    fn settled(&self, external_id: &str, through_failed: bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, page) = self.api("GET", "/v1/commerce/events?limit=200", None);
            let found = page["events"]
                .as_array()
                .unwrap_or_else(|| panic!("{page}\n{}", self.log_errors()))
                .iter()
                .find(|e| e["externalEventId"] == external_id)
                .cloned();
            if let Some(event) = found {
                let status = event["status"].as_str().unwrap_or_default();
                if status != "pending" && !(through_failed && status == "failed") {
                    return event;
                }
            }
            assert!(Instant::now() < deadline, "{external_id} never settled\n{}", self.log_errors());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's warnings and errors so far (for failure messages).
    fn log_errors(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect::<Vec<_>>().join("\n")
    }

    fn licenses(&self) -> Vec<Value> {
        let (status, page) = self.api("GET", &format!("/v1/licenses?appId={}&limit=200", self.app_id), None);
        assert_eq!(status, 200, "{page}");
        page["licenses"].as_array().unwrap().clone()
    }

    fn license(&self, key: &str) -> Value {
        let (status, license) = self.api("GET", &format!("/v1/licenses/{key}"), None);
        assert_eq!(status, 200, "{license}");
        license
    }
}

fn open_shop(deployment: &Deployment, env: &[(&str, &str)], log: &Path) -> Shop {
    let server = deployment.start_logging_to(env, Some(log));
    let (api_key, app_id) = deployment.merchant(&server, "merchant@example.com");
    let connect = |provider: &str, body: Value| {
        let (status, connection) =
            server.send("PUT", &api_key, &format!("/v1/commerce/connections/{provider}"), Some(&body));
        assert_eq!(status, 200, "{connection}");
        connection["webhookPath"].as_str().unwrap().to_string()
    };
    let stripe_path = connect("stripe", json!({ "signingSecret": STRIPE_SECRET, "apiKey": "sk_test_abc" }));
    let lemon_path = connect("lemon", json!({ "signingSecret": LEMON_SECRET }));
    Shop { server, log: log.to_path_buf(), api_key, app_id, stripe_path, lemon_path }
}

fn checkout(id: &str, session: &str, extra: Value) -> Value {
    let mut object = json!({
        "id": session, "object": "checkout.session", "mode": "payment", "payment_status": "paid",
        "customer": "cus_erin", "payment_intent": format!("pi_{session}"), "subscription": null,
        "customer_details": { "email": BUYER, "name": "Erin Buyer" }, "livemode": false,
    });
    for (k, v) in extra.as_object().unwrap() {
        object[k] = v.clone();
    }
    json!({ "id": id, "object": "event", "type": "checkout.session.completed", "api_version": "2024-06-20",
            "created": 1_700_000_000, "livemode": false, "data": { "object": object } })
}

fn stripe_event(id: &str, kind: &str, object: Value) -> Value {
    json!({ "id": id, "object": "event", "type": kind, "created": 1_700_000_000, "data": { "object": object } })
}

#[test]
fn stripe_and_lemon_purchases_flow_through_the_ledger_and_erasure_leaves_no_trace() {
    let dir = TempDir::new();
    let deployment = Deployment::sqlite(&dir.0);
    let mail = MailSink::start(&dir.0);
    let stripe_api = fake_stripe_api(Default::default());
    let smtp = format!("smtp://127.0.0.1:{}", mail.port);
    let log = dir.0.join("server.log");
    let env = [
        ("LICENSD_SMTP_URL", smtp.as_str()),
        ("LICENSD_SMTP_FROM", "Shop <shop@example.com>"),
        ("LICENSD_STRIPE_API_BASE", stripe_api.as_str()),
        ("LICENSD_COMMERCE_RETRY_DELAY_MS", "300"),
        ("LICENSD_LOG", "debug"),
    ];
    let shop = open_shop(&deployment, &env, &log);
    let settings = json!({ "supportContact": "help@shop.example" });
    assert_eq!(shop.api("PUT", &format!("/v1/apps/{}/settings", shop.app_id), Some(&settings)).0, 200);
    shop.mapping(json!({ "provider": "stripe", "priceId": "price_pro", "kind": "one_time", "hwidSlots": 2,
                         "label": "Pro", "variables": { "tier": "pro" } }));

    // A bad signature is refused and stores nothing.
    let purchase = checkout("evt_purchase", "cs_pro", json!({}));
    let forged = shop.deliver(&shop.stripe_path, "Stripe-Signature", "t=1,v1=00", purchase.to_string());
    assert_eq!(forged.0, 400, "{}", forged.1);
    assert_eq!(shop.api("GET", "/v1/commerce/events", None).1["events"].as_array().unwrap().len(), 0);

    // 20 concurrent deliveries of the same event (line items left out, as Stripe does): one entry,
    // one license, fetched line items, one buyer email.
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20).map(|_| s.spawn(|| shop.post_stripe(&purchase))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(answers.iter().all(|(status, _)| *status == 200), "{answers:?}");
    assert_eq!(answers.iter().filter(|(_, a)| a["duplicate"] == false).count(), 1, "{answers:?}");
    let entry = shop.settled("evt_purchase", false);
    assert_eq!(entry["status"], "processed", "{entry}");
    let licenses = shop.licenses();
    assert_eq!(licenses.len(), 1, "{licenses:?}");
    let key = licenses[0]["licenseKey"].as_str().unwrap().to_string();
    assert_eq!(entry["licenseKeys"], json!([key]));
    let license = shop.license(&key);
    assert_eq!((license["maxHwidSlots"].as_u64(), license["label"].as_str()), (Some(2), Some("Pro")));
    assert_eq!(license["expiresAt"], Value::Null, "blank days is perpetual");
    let (_, variables) = shop.api("GET", &format!("/v1/licenses/{key}/variables"), None);
    assert_eq!(variables["tier"], "pro");

    // Redelivery after processing changes nothing.
    assert_eq!(shop.post_stripe(&purchase).1["duplicate"], true);
    assert_eq!(shop.licenses().len(), 1);

    let deadline = Instant::now() + Duration::from_secs(20);
    while mail.messages().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let messages = mail.messages();
    assert_eq!(messages.len(), 1, "one buyer email");
    assert!(messages[0].contains(&key) && messages[0].contains(BUYER) && messages[0].contains("help@shop.example"));

    // An unmapped price is skipped; after the mapping exists, Replay creates the license once.
    let late = checkout(
        "evt_late",
        "cs_late",
        json!({ "customer": "cus_other",
        "customer_details": { "email": "other@example.com" },
        "line_items": { "object": "list", "data": [{ "price": { "id": "price_late", "product": "prod_2" }, "quantity": 1 }] } }),
    );
    assert_eq!(shop.post_stripe(&late).0, 200);
    let skipped = shop.settled("evt_late", false);
    assert_eq!(
        (skipped["status"].as_str(), skipped["reason"].as_str()),
        (Some("skipped"), Some("no_mapping_for_price"))
    );
    shop.mapping(json!({ "provider": "stripe", "priceId": "price_late", "kind": "one_time", "days": 90 }));
    let event_id = skipped["eventId"].as_str().unwrap().to_string();
    let (status, replay) = shop.api("POST", &format!("/v1/commerce/events/{event_id}/replay"), None);
    assert_eq!(status, 202, "{replay}");
    assert_eq!(shop.settled("evt_late", false)["status"], "processed");
    let (status, again) = shop.api("POST", &format!("/v1/commerce/events/{event_id}/replay"), None);
    assert_eq!(status, 409, "a processed entry cannot be replayed: {again}");
    let (_, bulk) = shop.api("POST", "/v1/commerce/events/replay", Some(&json!({ "status": "skipped" })));
    assert_eq!(bulk["replayed"], 0);
    assert_eq!(shop.licenses().len(), 2);
    let (_, by_key) = shop.api("GET", &format!("/v1/commerce/events?licenseKey={key}"), None);
    assert_eq!(by_key["events"].as_array().unwrap().len(), 1, "{by_key}");

    // A Stripe outage: retried once automatically, then held.
    let outage = checkout("evt_outage", "cs_down", json!({}));
    assert_eq!(shop.post_stripe(&outage).0, 200);
    let held = shop.settled("evt_outage", true);
    assert_eq!((held["status"].as_str(), held["reason"].as_str()), (Some("held"), Some("transient_retry_exhausted")));
    assert_eq!(held["retryCount"], 1, "{held}");

    // Subscription lifecycle: purchase, first invoice (already fulfilled), renewal, cancellation.
    shop.mapping(json!({ "provider": "stripe", "priceId": "price_monthly", "kind": "subscription", "days": 30 }));
    let subscribe = checkout(
        "evt_sub",
        "cs_sub",
        json!({ "mode": "subscription", "subscription": "sub_1",
        "payment_intent": null, "invoice": "in_first",
        "line_items": { "data": [{ "price": { "id": "price_monthly" }, "quantity": 1 }] } }),
    );
    shop.post_stripe(&subscribe);
    let sub_key = shop.settled("evt_sub", false)["licenseKeys"][0].as_str().unwrap().to_string();
    let expiry =
        |key: &str| chrono::DateTime::parse_from_rfc3339(shop.license(key)["expiresAt"].as_str().unwrap()).unwrap();
    let first_expiry = expiry(&sub_key);
    let invoice = |id: &str, reason: &str| {
        stripe_event(
            id,
            "invoice.paid",
            json!({ "id": format!("in_{id}"), "object": "invoice", "billing_reason": reason,
            "subscription": "sub_1", "customer": "cus_erin", "payment_intent": format!("pi_{id}") }),
        )
    };
    shop.post_stripe(&invoice("evt_inv1", "subscription_create"));
    assert_eq!(shop.settled("evt_inv1", false)["status"], "processed");
    assert_eq!(expiry(&sub_key), first_expiry, "the first invoice does not extend");
    shop.post_stripe(&invoice("evt_inv2", "subscription_cycle"));
    assert_eq!(shop.settled("evt_inv2", false)["status"], "processed");
    assert_eq!((expiry(&sub_key) - first_expiry).num_days(), 30);
    shop.post_stripe(&stripe_event(
        "evt_cancel",
        "customer.subscription.deleted",
        json!({ "id": "sub_1", "object": "subscription", "customer": "cus_erin", "status": "canceled" }),
    ));
    assert_eq!(shop.settled("evt_cancel", false)["status"], "processed");
    assert_eq!(shop.license(&sub_key)["status"], "revoked");
    assert_eq!(shop.license(&key)["status"], "active", "other licenses of the customer are untouched");

    // A refund of the one-time purchase revokes it; unknown event types are recorded and skipped.
    shop.post_stripe(&stripe_event(
        "evt_refund",
        "charge.refunded",
        json!({ "id": "ch_1", "object": "charge", "payment_intent": "pi_cs_pro", "customer": "cus_erin" }),
    ));
    assert_eq!(shop.settled("evt_refund", false)["status"], "processed");
    assert_eq!(shop.license(&key)["status"], "revoked");
    shop.post_stripe(&stripe_event("evt_other", "customer.created", json!({ "id": "cus_x" })));
    assert_eq!(shop.settled("evt_other", false)["reason"], "unmapped_event_type");
    shop.post_stripe(&stripe_event("evt_orphan", "customer.subscription.deleted", json!({ "id": "sub_none" })));
    assert_eq!(shop.settled("evt_orphan", false)["reason"], "no_license_to_revoke");

    // Lemon Squeezy: an order creates a license, its refund revokes it.
    shop.mapping(json!({ "provider": "lemon", "priceId": "777", "kind": "one_time", "respectQuantity": true }));
    let order = json!({
        "meta": { "event_name": "order_created", "custom_data": null, "test_mode": true },
        "data": { "type": "orders", "id": "9001", "attributes": {
            "store_id": 1, "customer_id": 4242, "identifier": "abc", "user_name": "Erin", "user_email": BUYER,
            "status": "paid", "total": 1900, "updated_at": "2026-11-23T10:00:00.000000Z",
            "first_order_item": { "id": 1, "order_id": 9001, "product_id": 55, "variant_id": 777, "quantity": 2 } } }
    });
    assert_eq!(shop.post_lemon(&order).0, 200);
    let forged = shop.deliver(&shop.lemon_path, "X-Signature", &"0".repeat(64), order.to_string());
    assert_eq!(forged.0, 400);
    let lemon_id = "order_created:9001:2026-11-23T10:00:00.000000Z";
    let lemon_keys = shop.settled(lemon_id, false)["licenseKeys"].as_array().unwrap().clone();
    assert_eq!(lemon_keys.len(), 2, "quantity 2 is respected");
    let mut refunded = order.clone();
    refunded["meta"]["event_name"] = json!("order_refunded");
    refunded["data"]["attributes"]["status"] = json!("refunded");
    shop.post_lemon(&refunded);
    assert_eq!(shop.settled("order_refunded:9001:2026-11-23T10:00:00.000000Z", false)["status"], "processed");
    assert!(lemon_keys.iter().all(|k| shop.license(k.as_str().unwrap())["status"] == "revoked"));

    // GDPR erasure: every trace of the email goes, the rows stay.
    let (status, erased) = shop.api(
        "POST",
        &format!("/apps/{}/customers/forget", shop.app_id),
        Some(&json!({ "customerEmail": BUYER.to_uppercase(), "reason": format!("Ticket 7 from {BUYER}") })),
    );
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["licensesRedacted"], 4, "{erased}");
    assert_eq!(erased["ledgerRowsRedacted"].as_u64(), Some(5), "{erased}");
    assert!(erased["ledgerRowsScanned"].as_u64().unwrap() >= 12, "{erased}");
    let (_, after) = shop.api("GET", "/v1/commerce/events?limit=200", None);
    assert!(after["events"].as_array().unwrap().iter().any(|e| e["redacted"] == true));
    let (status, erased_none) =
        shop.api("POST", &format!("/v1/apps/{}/customers/forget", shop.app_id), Some(&json!({ "reason": "x" })));
    assert_eq!(status, 400, "{erased_none}");

    drop(shop);
    assert!(!std::fs::read_to_string(&log).unwrap().contains(BUYER), "the log never holds the email");
    let traces = |deployment: &Deployment| email_traces(&deployment.database_url);
    assert_eq!(traces(&deployment), Vec::<String>::new());
    deployment.cli(&["rebuild"]);
    assert_eq!(traces(&deployment), Vec::<String>::new(), "a rebuild does not bring it back");
}

#[test]
fn fulfilled_purchases_are_summed_per_currency_and_day_and_unknown_amounts_are_not_zero() {
    each_backend(|deployment| {
        let dir = TempDir::new();
        let shop = open_shop(deployment, &[("LICENSD_COMMERCE_RETRY_DELAY_MS", "300")], &dir.0.join("server.log"));
        shop.mapping(
            json!({ "provider": "stripe", "priceId": "price_a", "kind": "one_time", "respectQuantity": true }),
        );
        shop.mapping(json!({ "provider": "lemon", "priceId": "777", "kind": "one_time" }));
        let items = |price: &str, quantity: u32| json!({ "object": "list", "data": [{ "price": { "id": price, "product": "prod_1" }, "quantity": quantity }] });
        let paid = |id: &str, price: &str, quantity: u32, money: Value| {
            let mut extra = money;
            extra["line_items"] = items(price, quantity);
            let event = checkout(id, &format!("cs_{id}"), extra);
            assert_eq!(shop.post_stripe(&event).0, 200);
            shop.settled(id, false)
        };
        assert_eq!(
            paid("evt_a", "price_a", 1, json!({ "amount_total": 1900, "currency": "eur" }))["status"],
            "processed"
        );
        // Two licenses of one payment: its amount counts once.
        let two = paid("evt_b", "price_a", 2, json!({ "amount_total": 2500, "currency": "eur" }));
        assert_eq!(two["licenseKeys"].as_array().map(Vec::len), Some(2), "{two}");
        // A payload without an amount (as every event recorded before amounts were): unknown.
        assert_eq!(paid("evt_c", "price_a", 1, json!({}))["status"], "processed");
        // Not fulfilled (no mapping): not revenue.
        assert_eq!(paid("evt_d", "price_x", 1, json!({ "amount_total": 999, "currency": "eur" }))["status"], "skipped");
        let order = json!({
            "meta": { "event_name": "order_created" },
            "data": { "type": "orders", "id": "77", "attributes": {
                "customer_id": 1, "user_email": "lemon@example.com", "total": 1000, "currency": "USD",
                "updated_at": "2026-11-23T10:00:00.000000Z",
                "first_order_item": { "variant_id": 777, "product_id": 5, "quantity": 1 } } }
        });
        assert_eq!(shop.post_lemon(&order).0, 200);
        assert_eq!(shop.settled("order_created:77:2026-11-23T10:00:00.000000Z", false)["status"], "processed");

        let expected = json!([
            { "currency": "EUR", "amountMinor": 4400, "purchases": 2 },
            { "currency": "USD", "amountMinor": 1000, "purchases": 1 },
        ]);
        let (status, overview) = shop.api("GET", &format!("/v1/overview?appId={}&days=2", shop.app_id), None);
        assert_eq!(status, 200, "{overview}");
        assert_eq!(overview["revenue"], json!({ "byCurrency": expected, "purchasesOfUnknownAmount": 1 }));
        let today = &overview["daily"][1];
        assert_eq!((&today["revenue"], &today["purchasesOfUnknownAmount"]), (&expected, &json!(1)), "{today}");
        assert_eq!(overview["daily"][0]["revenue"], json!([]), "nothing the day before");
        // The account's overview sums its apps alike.
        let (_, account) = shop.api("GET", "/v1/overview?days=1", None);
        assert_eq!(account["revenue"]["byCurrency"], expected);

        // A rebuild of the roll-up from the log gives the same rows.
        let Shop { server, .. } = shop;
        server.terminate();
        let live = common::caught_up_hashes(deployment);
        deployment.cli(&["rebuild", "--projection", "usage_rollup"]);
        assert_eq!(common::caught_up_hashes(deployment), live);
    });
}

/// Every cell of every table (event payloads included) that mentions the buyer's email.
fn email_traces(database_url: &str) -> Vec<String> {
    let path = database_url.trim_start_matches("sqlite://").split('?').next().unwrap().to_string();
    let script = format!(
        "import sqlite3\nc = sqlite3.connect({path:?})\nfor (t,) in c.execute(\"SELECT name FROM sqlite_master WHERE type='table'\").fetchall():\n    for row in c.execute(f'SELECT * FROM \"{{t}}\"'):\n        for cell in row:\n            if isinstance(cell, bytes): cell = cell.decode('utf-8', 'replace')\n            if isinstance(cell, str) and {BUYER:?} in cell.lower(): print(t)\n"
    );
    let mut child =
        Command::new("python3").args(["-c", &script]).stdout(std::process::Stdio::piped()).spawn().expect("python3");
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(child.wait().unwrap().success());
    out.lines().map(str::to_string).collect()
}
