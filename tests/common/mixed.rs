//! A mixed load like production's, for fault tests: SDK validations and heartbeats on licenses
//! whose machines outnumber their slots, Developer API writes and signed Stripe deliveries. Every
//! acknowledgement is recorded, and every `200` of an auth call is checked as the SDKs check it
//! (signature, nonce), so a wrong "ok" cannot pass as a success.

use super::{hmac_hex, Deployment, Merchant, Server};
use licensd_bench::protocol::{nonce, verify_success, AppCredentials, Call, Machine};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

pub const STRIPE_SECRET: &str = "whsec_fault_tests";
pub const LICENSES: usize = 6;
pub const SLOTS: usize = 2;
/// More machines than slots, so binds race for the last slot.
pub const MACHINES_PER_LICENSE: usize = 3;
pub const AUTH_CLIENTS: usize = 3;
pub const CREDITS: u64 = 10_000_000;

/// The shop under load: a merchant, its licenses and machines, and a Stripe connection.
pub struct Shop {
    pub merchant: Merchant,
    pub credentials: AppCredentials,
    pub machines: Vec<Machine>,
    pub stripe_path: String,
}

impl Shop {
    pub fn open(deployment: &Deployment, server: &Server) -> Self {
        let merchant = deployment.merchant_with_credits(server, "faults@example.com", CREDITS);
        let credentials =
            AppCredentials::new(&merchant.app_id, &merchant.app_secret, &merchant.public_key).expect("app key");
        let machines = (0..LICENSES)
            .flat_map(|_| {
                let key = merchant.license(server, json!({ "maxHwidSlots": SLOTS }));
                (0..MACHINES_PER_LICENSE).map(move |_| Machine::new(&key))
            })
            .collect();
        let connection =
            merchant.put(server, "/v1/commerce/connections/stripe", json!({ "signingSecret": STRIPE_SECRET }));
        let connection_id = connection["connectionId"].as_str().expect("connection id");
        Self { merchant, credentials, machines, stripe_path: format!("/billing/webhook/stripe/{connection_id}") }
    }
}

/// What the clients were told, over every round.
#[derive(Default, Debug)]
pub struct Tally {
    pub licenses_created: Vec<String>,
    pub deliveries: Vec<String>,
    pub validations: u64,
    /// Successful heartbeats per license key.
    pub heartbeats: HashMap<String, u64>,
    /// Every answer by kind and status, e.g. `validate 200`, `api 503`, `heartbeat transport`.
    pub outcomes: BTreeMap<String, u64>,
}

impl Tally {
    fn count(&mut self, what: &str, status: Option<u16>) {
        let status = status.map_or("transport".to_string(), |s| s.to_string());
        *self.outcomes.entry(format!("{what} {status}")).or_default() += 1;
    }

    pub fn heartbeats_total(&self) -> u64 {
        self.heartbeats.values().sum()
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().expect("client")
}

fn post(
    http: &reqwest::blocking::Client,
    url: &str,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> Option<(u16, Vec<u8>)> {
    let mut request = http.post(url).header("content-type", "application/json").body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().ok()?;
    let status = response.status().as_u16();
    Some((status, response.bytes().ok()?.to_vec()))
}

/// Runs the load until `stop` is set or the server stops answering at all (`until_gone`), and
/// adds what was acknowledged to `tally`. Auth answers of 200 that fail the SDK's checks panic.
pub fn run(server: &Server, shop: &Shop, tally: &Mutex<Tally>, stop: &AtomicBool, until_gone: bool) {
    let sequence = AtomicU64::new(tally.lock().unwrap().deliveries.len() as u64);
    let machines: Vec<Mutex<Machine>> = shop.machines.iter().cloned().map(Mutex::new).collect();
    let finished = |answered: bool| stop.load(Ordering::SeqCst) || (until_gone && !answered);
    std::thread::scope(|scope| {
        for client in 0..AUTH_CLIENTS {
            let machines = &machines;
            scope.spawn(move || {
                let http = http();
                for n in (client..).step_by(AUTH_CLIENTS) {
                    let mut machine = machines[n % machines.len()].lock().unwrap();
                    let call =
                        if machine.session_token.is_some() && n % 3 != 0 { Call::Heartbeat } else { Call::Validate };
                    let nonce = nonce();
                    let body =
                        licensd_bench::protocol::request_body(call, &shop.credentials, &machine, &nonce).unwrap();
                    let answer = post(&http, &format!("{}{}", server.base, call.path()), body, &[]);
                    let mut tally = tally.lock().unwrap();
                    tally.count(call.name(), answer.as_ref().map(|a| a.0));
                    if let Some((200, bytes)) = &answer {
                        let token = verify_success(bytes, &nonce, &shop.credentials.public_key)
                            .unwrap_or_else(|e| panic!("a 200 {} failed the SDK's checks: {e}", call.name()));
                        machine.session_token = Some(token);
                        match call {
                            Call::Validate => tally.validations += 1,
                            Call::Heartbeat => *tally.heartbeats.entry(machine.license_key.clone()).or_default() += 1,
                        }
                    } else if matches!(&answer, Some((403 | 401, _))) {
                        machine.session_token = None; // slots full or session gone: validate next time
                    }
                    drop(tally);
                    if finished(answer.is_some()) {
                        return;
                    }
                }
            });
        }
        scope.spawn(|| {
            let http = http();
            loop {
                let body = json!({ "appId": shop.merchant.app_id, "label": "fault-test" }).to_string().into_bytes();
                let bearer = [("authorization", format!("Bearer {}", shop.merchant.api_key))];
                let answer = post(&http, &format!("{}/v1/licenses", server.base), body, &bearer);
                let mut tally = tally.lock().unwrap();
                tally.count("api", answer.as_ref().map(|a| a.0));
                if let Some((201, bytes)) = &answer {
                    let created: Value = serde_json::from_slice(bytes).expect("created JSON");
                    let key = created["licenses"][0]["licenseKey"].as_str().expect("key");
                    tally.licenses_created.push(key.to_string());
                }
                drop(tally);
                if finished(answer.is_some()) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        scope.spawn(|| {
            let http = http();
            loop {
                let id = format!("evt_fault_{}", sequence.fetch_add(1, Ordering::SeqCst));
                let answer = post(
                    &http,
                    &format!("{}{}", server.base, shop.stripe_path),
                    stripe_event(&id),
                    &[("stripe-signature", stripe_signature(&stripe_event(&id)))],
                );
                let mut tally = tally.lock().unwrap();
                tally.count("commerce", answer.as_ref().map(|a| a.0));
                if matches!(answer, Some((200, _))) {
                    tally.deliveries.push(id);
                }
                drop(tally);
                if finished(answer.is_some()) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(150));
            }
        });
    });
}

/// A completed checkout with no line items of ours: the ledger records it and holds it.
fn stripe_event(id: &str) -> Vec<u8> {
    let object = json!({ "id": format!("cs_{id}"), "customer": "cus_1", "payment_intent": format!("pi_{id}") });
    json!({ "id": id, "type": "checkout.session.completed", "data": { "object": object } }).to_string().into_bytes()
}

fn stripe_signature(body: &[u8]) -> String {
    let t = chrono::Utc::now().timestamp();
    format!("t={t},v1={}", hmac_hex(STRIPE_SECRET, &[format!("{t}.").as_bytes(), body].concat()))
}

/// Checks what the fault tests promise against a running server: every acknowledged license and
/// delivery is there, no license has more machines than slots, and the credits debited are the
/// billable successes acknowledged, plus at most the calls in flight when the server died
/// (`unacknowledged`), minus at most the documented heartbeat gap (nine per license and restart).
pub fn check(server: &Server, shop: &Shop, tally: &Tally, restarts: u64, unacknowledged: u64) {
    let api_key = &shop.merchant.api_key;
    for key in &tally.licenses_created {
        let (status, license) = server.get(api_key, &format!("/v1/licenses/{key}"));
        assert_eq!(status, 200, "acknowledged license {key} is missing: {license}");
    }
    let (status, events) = server.get(api_key, "/v1/commerce/events?limit=200");
    assert_eq!(status, 200, "{events}");
    let recorded: Vec<&str> =
        events["events"].as_array().unwrap().iter().filter_map(|e| e["externalEventId"].as_str()).collect();
    // The ledger listing has no cursor: keep runs within one page so every delivery is checked.
    assert!(tally.deliveries.len() <= 200, "{} deliveries: more than one page to check", tally.deliveries.len());
    for id in &tally.deliveries {
        assert!(recorded.contains(&id.as_str()), "acknowledged delivery {id} is not in the ledger");
    }

    let mut cursor = String::new();
    let mut checked = 0;
    loop {
        let path = format!("/v1/licenses?appId={}&limit=200&cursor={cursor}", shop.merchant.app_id);
        let (status, page) = server.get(api_key, &path);
        assert_eq!(status, 200, "{page}");
        for license in page["licenses"].as_array().unwrap() {
            let bound = license["hwidList"].as_array().map_or(0, Vec::len);
            let slots = license["maxHwidSlots"].as_u64().unwrap() as usize;
            assert!(bound <= slots, "{} has {bound} machines for {slots} slots", license["licenseKey"]);
            checked += 1;
        }
        match page["cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    assert!(checked >= LICENSES + tally.licenses_created.len(), "every license was listed ({checked})");

    let (_, credits) = server.get(api_key, "/v1/credits");
    let debited = CREDITS - credits["balance"].as_u64().expect("balance");
    let heartbeat_most: u64 = tally.heartbeats.values().map(|n| n / 10 + 1).sum();
    let heartbeat_least: u64 = tally.heartbeats.values().map(|n| n.saturating_sub(9 * (restarts + 1)) / 10).sum();
    let least = tally.validations + heartbeat_least;
    let most = tally.validations + heartbeat_most + unacknowledged;
    assert!(
        (least..=most).contains(&debited),
        "{debited} credits debited; acknowledged billable work allows {least}..={most} ({tally:?})"
    );
}
