//! The Developer API behind the merchant dashboard (issue 20): every list paged by opaque cursor
//! with `order` and filters, totals, and the CSV exports. Each test runs on SQLite and Postgres.

mod common;

use common::{on_both_backends, Merchant, Server};
use serde_json::{json, Value};

const RELAXED: &[(&str, &str)] = &[
    ("LICENSD_VALIDATE_PER_KEY", "1000"),
    ("LICENSD_VALIDATE_PER_IP", "1000"),
    ("LICENSD_API_BURST", "1000"),
    ("LICENSD_API_PER_SECOND", "1000"),
];

/// Every page of `path` (which has no cursor): the items under `field`, and each page's answer.
fn all_pages(server: &Server, api_key: &str, path: &str, field: &str) -> (Vec<Value>, Vec<Value>) {
    pages_from(server, api_key, path, field, None)
}

/// Like [`all_pages`], from the page `cursor` points at.
fn pages_from(
    server: &Server,
    api_key: &str,
    path: &str,
    field: &str,
    mut cursor: Option<String>,
) -> (Vec<Value>, Vec<Value>) {
    let mut items = Vec::new();
    let mut pages = Vec::new();
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_string(),
        };
        let (status, page) = server.get(api_key, &url);
        assert_eq!(status, 200, "{url}: {page}");
        items.extend(page[field].as_array().unwrap().iter().cloned());
        cursor = page["cursor"].as_str().map(String::from);
        pages.push(page);
        if cursor.is_none() {
            return (items, pages);
        }
        assert!(pages.len() < 100, "paging does not end");
    }
}

/// Bills are committed just after their answers: waits until the ledger holds `rows` movements.
fn wait_for_ledger(server: &Server, api_key: &str, rows: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.get(api_key, "/v1/credits/transactions?limit=200").1["transactions"].as_array().map_or(0, Vec::len)
        < rows
    {
        assert!(std::time::Instant::now() < deadline, "{rows} ledger rows");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn keys(licenses: &[Value]) -> Vec<String> {
    licenses.iter().map(|l| l["licenseKey"].as_str().unwrap().to_string()).collect()
}

fn bad_request(server: &Server, api_key: &str, path: &str) -> String {
    let (status, error) = server.get(api_key, path);
    assert_eq!((status, error["error"].as_str()), (400, Some("bad_request")), "{path}: {error}");
    error["message"].as_str().unwrap().to_string()
}

/// A GET answered as text: (status, content type, next cursor header, body).
fn get_csv(server: &Server, api_key: &str, path: &str) -> (u16, String, Option<String>, String) {
    let response = reqwest::blocking::Client::new()
        .get(format!("{}{path}", server.base))
        .bearer_auth(api_key)
        .send()
        .expect("GET");
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from);
    let content_type = header("content-type").unwrap_or_default();
    let next = header("x-next-cursor");
    (response.status().as_u16(), content_type, next, response.text().unwrap())
}

/// An expiry two seconds from now (the API takes only future expiries); see [`wait_until_expired`].
fn soon() -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339()
}

fn wait_until_expired() {
    std::thread::sleep(std::time::Duration::from_millis(2_500));
}

/// Five licenses created one after another: plain, labelled, revoked, expired, and expiring later.
fn seeded_licenses(server: &Server, m: &Merchant) -> Vec<String> {
    let created = vec![
        m.license(server, json!({})),
        m.license(server, json!({ "label": "=HYPERLINK(\"x\"),a" })),
        m.license(server, json!({ "label": "gold" })),
        m.license(server, json!({ "label": "gold", "expiresAt": soon() })),
        m.license(server, json!({ "expiresAt": "2031-06-01T00:00:00Z" })),
    ];
    m.put(server, &format!("/v1/licenses/{}", created[2]), json!({ "action": "revoke" }));
    // Past its expiry the license is expired (not revoked).
    wait_until_expired();
    created
}

#[test]
fn licenses_are_paged_newest_first_with_filters_sorts_and_totals() {
    on_both_backends(RELAXED, |deployment, server| {
        let m = deployment.merchant_with_credits(server, "pages@example.com", 10);
        let created = seeded_licenses(server, &m);
        let list = format!("/v1/licenses?appId={}", m.app_id);

        // Newest first by default, two at a time; `total` counts every match on every page.
        let (newest_first, pages) = all_pages(server, &m.api_key, &format!("{list}&limit=2"), "licenses");
        assert_eq!(pages.len(), 3);
        assert!(pages.iter().all(|p| p["total"] == 5), "{pages:?}");
        let mut expected = created.clone();
        expected.reverse();
        assert_eq!(keys(&newest_first), expected);
        let (oldest_first, _) = all_pages(server, &m.api_key, &format!("{list}&limit=2&order=asc"), "licenses");
        assert_eq!(keys(&oldest_first), created);

        // A cursor is a position, not an offset: a license created between two pages neither
        // repeats nor hides a row of the listing being read.
        let (status, first) = server.get(&m.api_key, &format!("{list}&limit=2"));
        assert_eq!(status, 200);
        let newcomer = m.license(server, json!({}));
        let next = first["cursor"].as_str().map(String::from);
        let (after, _) = pages_from(server, &m.api_key, &format!("{list}&limit=2"), "licenses", next);
        let mut seen = keys(first["licenses"].as_array().unwrap());
        seen.extend(keys(&after));
        assert_eq!(seen, expected, "the newcomer is on no page of the listing begun before it");
        assert_eq!(server.get(&m.api_key, &list).1["licenses"][0]["licenseKey"], newcomer.as_str());

        // Filters: status (expired is an active license past its expiry), label, expiry window.
        let matching = |query: &str| {
            let (status, page) = server.get(&m.api_key, &format!("{list}&{query}"));
            assert_eq!(status, 200, "{query}: {page}");
            (keys(page["licenses"].as_array().unwrap()), page["total"].as_i64().unwrap())
        };
        assert_eq!(matching("status=revoked"), (vec![created[2].clone()], 1));
        assert_eq!(matching("status=expired"), (vec![created[3].clone()], 1));
        assert_eq!(
            matching("status=active&order=asc"),
            (vec![created[0].clone(), created[1].clone(), created[4].clone(), newcomer.clone()], 4)
        );
        assert_eq!(matching("label=gold&order=asc"), (vec![created[2].clone(), created[3].clone()], 2));
        assert_eq!(
            matching("expiresAfter=2031-01-01T00:00:00Z&expiresBefore=2032-01-01T00:00:00Z"),
            (vec![created[4].clone()], 1)
        );
        assert_eq!(matching("search=HYPERLINK"), (vec![created[1].clone()], 1));

        // Sorted by expiry: dated licenses soonest first, licenses without expiry last.
        let (by_expiry, _) =
            all_pages(server, &m.api_key, &format!("{list}&sort=expires&order=asc&limit=2"), "licenses");
        assert_eq!(keys(&by_expiry)[..2], [created[3].clone(), created[4].clone()]);
        assert_eq!(by_expiry.len(), 6);
        let (by_key, _) = all_pages(server, &m.api_key, &format!("{list}&sort=key&order=asc&limit=4"), "licenses");
        let mut sorted = keys(&by_key);
        sorted.sort();
        assert_eq!(keys(&by_key), sorted);

        // Bad input: a clear 400 each.
        for bad in ["order=up", "sort=price", "status=lapsed", "expiresAfter=soon", "limit=0", "cursor=%21%21"] {
            bad_request(server, &m.api_key, &format!("{list}&{bad}"));
        }
        let long = "x".repeat(101);
        bad_request(server, &m.api_key, &format!("{list}&label={long}"));
        // A cursor only resumes the list, sort and order it came from.
        let cursor = first["cursor"].as_str().unwrap();
        let message = bad_request(server, &m.api_key, &format!("{list}&order=asc&cursor={cursor}"));
        assert!(message.contains("cursor"), "{message}");
        bad_request(server, &m.api_key, &format!("{list}&sort=key&cursor={cursor}"));
        bad_request(server, &m.api_key, &format!("/v1/credits/transactions?cursor={cursor}"));
    });
}

#[test]
fn licenses_and_transactions_export_as_csv_with_formulas_defused() {
    let env: Vec<(&str, &str)> = RELAXED.iter().copied().chain([("LICENSD_EXPORT_MAX_ROWS", "4")]).collect();
    on_both_backends(&env, |deployment, server| {
        let m = deployment.merchant_with_credits(server, "csv@example.com", 10);
        let created = seeded_licenses(server, &m);
        let export = format!("/v1/licenses.csv?appId={}&order=asc", m.app_id);

        let (status, content_type, next, body) = get_csv(server, &m.api_key, &export);
        assert_eq!(status, 200, "{body}");
        assert!(content_type.starts_with("text/csv"), "{content_type}");
        let lines: Vec<&str> = body.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(
            lines[0],
            "licenseKey,appId,status,label,expiresAt,maxHwidSlots,hwidCount,levels,maxSessions,createdAt"
        );
        assert_eq!(lines.len(), 5, "at most LICENSD_EXPORT_MAX_ROWS rows: {body}");
        assert!(lines[1].starts_with(&format!("{},{},active,,,1,0,,,", created[0], m.app_id)), "{}", lines[1]);
        // The label starts like a formula and holds a comma and quotes: quoted, doubled, defused.
        assert!(lines[2].contains(",active,\"'=HYPERLINK(\"\"x\"\"),a\","), "{}", lines[2]);
        assert!(lines[3].contains(",revoked,gold,"), "{}", lines[3]);
        assert!(lines[4].contains(",expired,gold,"), "{}", lines[4]);
        let next = next.expect("more rows follow by cursor");
        let (_, _, last, rest) = get_csv(server, &m.api_key, &format!("{export}&cursor={next}"));
        assert_eq!(last, None);
        let rest: Vec<&str> = rest.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(rest.len(), 2, "{rest:?}");
        assert!(rest[1].starts_with(&created[4]));
        let (status, _, _, _) = get_csv(server, &m.api_key, &format!("{export}&limit=5"));
        assert_eq!(status, 400, "a limit over LICENSD_EXPORT_MAX_ROWS is refused");
        let (status, _, _, _) = get_csv(server, &m.api_key, &format!("/v1/licenses.csv?appId={}&status=x", m.app_id));
        assert_eq!(status, 400);

        // Transactions: a grant and two validations, negative deltas written as numbers.
        for nonce in 1..=2u32 {
            let body = json!({ "appId": m.app_id, "appSecret": m.app_secret, "licenseKey": created[0],
                               "hwid": "machine-1", "nonce": format!("{nonce:032x}") });
            assert_eq!(server.auth("/auth/validate", &body).0, 200);
        }
        wait_for_ledger(server, &m.api_key, 3);
        let (status, _, _, body) = get_csv(server, &m.api_key, "/v1/credits/transactions.csv?order=asc");
        assert_eq!(status, 200, "{body}");
        let lines: Vec<&str> = body.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(lines[0], "at,delta,kind,reason,licenseKey");
        assert_eq!(lines.len(), 4, "{body}");
        assert!(lines[1].contains(",10,grant,"), "{}", lines[1]);
        assert!(lines[2].contains(",-1,validation,") && lines[2].ends_with(&created[0]), "{}", lines[2]);
    });
}

#[test]
fn transactions_audit_log_and_commerce_events_page_by_cursor_with_filters() {
    on_both_backends(RELAXED, |deployment, server| {
        let m = deployment.merchant_with_credits(server, "ledgers@example.com", 20);
        let key = m.license(server, json!({ "maxHwidSlots": 3 }));
        for nonce in 1..=5u32 {
            let body = json!({ "appId": m.app_id, "appSecret": m.app_secret, "licenseKey": key,
                               "hwid": format!("machine-{}", nonce % 3), "nonce": format!("{nonce:032x}") });
            assert_eq!(server.auth("/auth/validate", &body).0, 200);
        }
        wait_for_ledger(server, &m.api_key, 6);

        // Transactions: six movements, two per page, in both orders, filtered by kind.
        let (newest, pages) = all_pages(server, &m.api_key, "/v1/credits/transactions?limit=2", "transactions");
        assert_eq!((newest.len(), pages.len()), (6, 3));
        let kinds: Vec<&str> = newest.iter().map(|t| t["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["validation", "validation", "validation", "validation", "validation", "grant"]);
        let (mut oldest, _) =
            all_pages(server, &m.api_key, "/v1/credits/transactions?limit=4&order=asc", "transactions");
        oldest.reverse();
        assert_eq!(oldest, newest);
        let (grants, _) = all_pages(server, &m.api_key, "/v1/credits/transactions?kind=grant", "transactions");
        assert_eq!(grants.len(), 1);
        let (of_key, _) =
            all_pages(server, &m.api_key, &format!("/v1/credits/transactions?licenseKey={key}"), "transactions");
        assert_eq!(of_key.len(), 5);
        bad_request(server, &m.api_key, "/v1/credits/transactions?licenseKey=nope");
        bad_request(server, &m.api_key, "/v1/credits/transactions?order=sideways");

        // Audit log: the three machine bindings are the client's; leaving them out keeps the
        // merchant's own changes.
        let (clients, _) = all_pages(server, &m.api_key, "/v1/audit-log?actorKind=client&limit=2", "entries");
        assert_eq!(clients.len(), 3, "{clients:?}");
        assert!(clients.iter().all(|e| e["actorKind"] == "client" && e["event"] == "HwidBound"), "{clients:?}");
        let (others, _) = all_pages(server, &m.api_key, "/v1/audit-log?excludeActorKind=client&limit=2", "entries");
        assert!(!others.is_empty() && others.iter().all(|e| e["actorKind"] != "client"), "{others:?}");
        assert!(others.iter().any(|e| e["event"] == "LicenseCreated" && e["actorKind"] == "api_key"));
        let (all, _) = all_pages(server, &m.api_key, "/v1/audit-log?limit=3", "entries");
        assert_eq!(all.len(), clients.len() + others.len());
        let (created, _) = all_pages(server, &m.api_key, "/v1/audit-log?action=LicenseCreated", "entries");
        assert_eq!(created.len(), 1);
        let (mixed, _) = all_pages(server, &m.api_key, "/v1/audit-log?actorKind=operator,api_key&order=asc", "entries");
        assert_eq!(mixed.first().map(|e| &e["actorKind"]), Some(&json!("operator")), "the account came first");
        for bad in ["actorKind=robot", "excludeActorKind=", "actorKind=client,"] {
            bad_request(server, &m.api_key, &format!("/v1/audit-log?{bad}"));
        }

        // The key's history in words: names, actors, summaries; nonces only with detail=full.
        let (status, history) = server.get(&m.api_key, &format!("/v1/licenses/{key}/events"));
        assert_eq!(status, 200, "{history}");
        let events = history["events"].as_array().unwrap();
        let created = events.iter().find(|e| e["type"] == "LicenseCreated").unwrap();
        assert_eq!(created["name"], "License created");
        assert!(created["actorName"].as_str().unwrap().starts_with("API key af_live_"), "{created}");
        assert_eq!(created["summary"], "Up to 3 machines, no expiry");
        let bound = events.iter().find(|e| e["type"] == "HwidBound").unwrap();
        assert_eq!((&bound["name"], &bound["actorName"]), (&json!("Machine bound"), &json!("Client (SDK)")));
        assert!(bound["summary"].as_str().unwrap().starts_with("Machine machine-"), "{bound}");
        let billed = events.iter().find(|e| e["type"] == "ValidationBilled").unwrap();
        assert_eq!((&billed["name"], &billed["summary"]), (&json!("Validated"), &json!("1 credit")));
        assert!(!history.to_string().contains(&format!("{:032x}", 1)), "no nonce by default: {history}");
        assert!(events.iter().all(|e| e.get("data").is_none()));
        let (_, full) = server.get(&m.api_key, &format!("/v1/licenses/{key}/events?detail=full"));
        assert!(full.to_string().contains(&format!("{:032x}", 1)), "the raw data has the nonce");
        bad_request(server, &m.api_key, &format!("/v1/licenses/{key}/events?detail=everything"));

        // The history paged by version: oldest first by default like the whole answer (which has
        // no cursor), newest first on request; a page's cursor resumes only its own order.
        assert!(history.get("cursor").is_none(), "one answer without limit or cursor");
        let versions = |events: &[Value]| events.iter().map(|e| e["version"].as_i64().unwrap()).collect::<Vec<_>>();
        let every = versions(events);
        assert_eq!(every.len(), 9, "created, three bindings, five validations");
        let history_path = format!("/v1/licenses/{key}/events?limit=4");
        let (paged, pages) = all_pages(server, &m.api_key, &history_path, "events");
        assert_eq!((versions(&paged), pages.len()), (every.clone(), 3));
        let (mut newest, _) = all_pages(server, &m.api_key, &format!("{history_path}&order=desc"), "events");
        newest.reverse();
        assert_eq!(versions(&newest), every);
        let cursor = pages[0]["cursor"].as_str().unwrap();
        bad_request(server, &m.api_key, &format!("{history_path}&order=desc&cursor={cursor}"));
        for bad in ["limit=0", "limit=201", "order=sideways", "cursor=abc"] {
            bad_request(server, &m.api_key, &format!("/v1/licenses/{key}/events?{bad}"));
        }

        // Commerce events: the paging answer shape even when the ledger is empty.
        let (status, events) = server.get(&m.api_key, "/v1/commerce/events?limit=5&order=asc");
        assert_eq!(status, 200, "{events}");
        assert_eq!(
            (events["events"].as_array().map(Vec::len), &events["cursor"], &events["total"]),
            (Some(0), &Value::Null, &json!(0))
        );
        bad_request(server, &m.api_key, "/v1/commerce/events?cursor=abc");
    });
}

#[test]
fn webhook_deliveries_are_paged_by_cursor_with_a_status_filter() {
    let port = common::free_port();
    let env: Vec<(&str, &str)> = RELAXED
        .iter()
        .copied()
        .chain([("LICENSD_WEBHOOK_ALLOW_HTTP_LOOPBACK", "true"), ("LICENSD_WEBHOOK_RETRY_BASE_MS", "60000")])
        .collect();
    on_both_backends(&env, |deployment, server| {
        let m = deployment.merchant_with_credits(server, "hooks@example.com", 10);
        // Nothing listens there: every delivery stays queued for a retry.
        let url = format!("http://127.0.0.1:{port}/hook");
        let hooks = format!("/v1/apps/{}/webhooks", m.app_id);
        let (status, hook) = server.post(&m.api_key, &hooks, &json!({ "url": url, "events": ["license.created"] }));
        assert_eq!(status, 201, "{hook}");
        let log = format!("{hooks}/{}/deliveries", hook["webhookId"].as_str().unwrap());
        for _ in 0..5 {
            m.license(server, json!({}));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while server.get(&m.api_key, &log).1["total"] != 5 {
            assert!(std::time::Instant::now() < deadline, "five deliveries are queued");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let (newest, pages) = all_pages(server, &m.api_key, &format!("{log}?limit=2"), "deliveries");
        assert_eq!((newest.len(), pages.len()), (5, 3));
        assert!(pages.iter().all(|p| p["total"] == 5));
        let (mut oldest, _) = all_pages(server, &m.api_key, &format!("{log}?limit=3&order=asc"), "deliveries");
        oldest.reverse();
        let ids = |d: &[Value]| d.iter().map(|d| d["deliveryId"].clone()).collect::<Vec<_>>();
        assert_eq!(ids(&oldest), ids(&newest));
        let (delivered, _) = all_pages(server, &m.api_key, &format!("{log}?status=delivered"), "deliveries");
        assert!(delivered.is_empty());
        bad_request(server, &m.api_key, &format!("{log}?status=lost"));
        bad_request(server, &m.api_key, &format!("{log}?cursor=%7B%7D"));
    });
}

#[test]
fn the_overview_counts_a_seeded_day_from_the_roll_up_not_a_page_of_the_ledger() {
    on_both_backends(RELAXED, |deployment, server| {
        let m = deployment.merchant_with_credits(server, "overview@example.com", 1000);
        let busy = m.license(server, json!({ "label": "busy", "maxHwidSlots": 2 }));
        let quiet = m.license(server, json!({}));
        let revoked = m.license(server, json!({}));
        m.put(server, &format!("/v1/licenses/{revoked}"), json!({ "action": "revoke" }));
        m.license(server, json!({ "expiresAt": "2030-01-01T00:00:00Z" }));
        m.license(server, json!({ "expiresAt": soon() }));
        wait_until_expired();
        let validate = |key: &str, hwid: &str, nonce: u32| {
            let body = json!({ "appId": m.app_id, "appSecret": m.app_secret, "licenseKey": key, "hwid": hwid,
                               "nonce": format!("{nonce:032x}") });
            let (status, answer) = server.auth("/auth/validate", &body);
            assert_eq!(status, 200, "{answer}");
        };
        // 266 validations: more than the 200 rows a page of the ledger ever held.
        for n in 0..266 {
            validate(&busy, if n % 2 == 0 { "pc-a" } else { "pc-b" }, n + 1);
        }
        validate(&quiet, "pc-c", 1000);

        // Bills are committed just after their answers: wait until the last one is in the log.
        let overview_path = format!("/v1/overview?appId={}&days=2", m.app_id);
        let total = |overview: &Value| {
            overview["daily"].as_array().unwrap().iter().map(|d| d["validations"].as_i64().unwrap()).sum::<i64>()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let overview = loop {
            let (status, overview) = server.get(&m.api_key, &overview_path);
            assert_eq!(status, 200, "{overview}");
            if total(&overview) >= 267 || std::time::Instant::now() > deadline {
                break overview;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let daily = overview["daily"].as_array().unwrap();
        assert_eq!(daily.len(), 2, "one entry per day of the window, empty days included");
        let sum = |field: &str| daily.iter().map(|d| d[field].as_i64().unwrap()).sum::<i64>();
        assert_eq!(sum("validations"), 267);
        assert_eq!(sum("creditsBurned"), 267);
        assert_eq!(sum("newLicenses"), 5);
        assert_eq!(sum("heartbeats"), 0);
        assert_eq!(overview["licenses"], json!({ "active": 3, "expired": 1, "revoked": 1 }));
        assert_eq!(overview["activeMachines"], 3);
        assert_eq!(overview["liveSessions"], 0);
        let credits = &overview["credits"];
        assert_eq!((credits["balance"].as_i64(), credits["burnedInPeriod"].as_i64()), (Some(733), Some(267)));
        // 267 credits over two days: 133.5 a day, so 733 last five more days.
        assert_eq!((credits["burnPerDay"].as_f64(), credits["lastsDays"].as_i64()), (Some(133.5), Some(5)));
        let top = overview["topLicenses"].as_array().unwrap();
        assert_eq!(top[0], json!({ "licenseKey": busy, "label": "busy", "validations": 266, "heartbeats": 0 }));
        assert_eq!(top[1]["licenseKey"], quiet.as_str());
        assert_eq!(top.len(), 2);

        // Without appId: the whole account (the same single app here); another account sees none of it.
        let (_, account) = server.get(&m.api_key, "/v1/overview?days=2");
        assert_eq!((account["appId"].clone(), account["daily"].clone()), (Value::Null, overview["daily"].clone()));
        let other = deployment.merchant_with_credits(server, "other@example.com", 0);
        let (_, theirs) = server.get(&other.api_key, "/v1/overview");
        assert_eq!(theirs["daily"].as_array().unwrap().len(), 30, "30 days by default");
        assert!(theirs["daily"].as_array().unwrap().iter().all(|d| d["validations"] == 0));
        assert_eq!(theirs["credits"]["lastsDays"], Value::Null, "no burn, no projection");
        assert_eq!(server.get(&other.api_key, &format!("/v1/overview?appId={}", m.app_id)).0, 403);
        for bad in ["days=0", "days=367", "days=x"] {
            bad_request(server, &m.api_key, &format!("/v1/overview?{bad}"));
        }

        // The roll-up is one of the read models the CLI reports (and hashes) like the others. The
        // server still runs, so the other read models may trail the log by a pace: only the
        // report is checked here, not that everything is caught up.
        let hashes = common::projection_hashes(deployment);
        assert!(hashes.iter().any(|(name, _, _)| name == "usage_rollup"), "{hashes:?}");
    });
}

/// On Postgres a catch-up reads only below the oldest transaction still running anywhere in the
/// cluster: the license's page waits for that horizon to pass what was committed (as a lookup of
/// a fresh key does) rather than answer a machine bound a moment ago without its binding time.
#[test]
fn a_machine_just_bound_shows_when_it_was_bound_while_a_transaction_runs_elsewhere_on_postgres() {
    let Some(database) = common::temp_postgres() else { return };
    let dir = common::TempDir::new();
    let deployment = common::Deployment::postgres(&dir.0, &database.url);
    let server = deployment.start_with(RELAXED);
    let m = deployment.merchant_with_credits(&server, "horizon@example.com", 20);
    let key = m.license(&server, json!({}));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // A transaction with an id, open in another database of the cluster: it pins the horizon.
    let admin = std::env::var("LICENSD_TEST_POSTGRES_URL").unwrap();
    let holder = runtime.block_on(async {
        let mut tx = sqlx::PgPool::connect(&admin).await.unwrap().begin().await.unwrap();
        sqlx::query("SELECT pg_current_xact_id()").execute(&mut *tx).await.unwrap();
        tx
    });
    let body = json!({ "appId": m.app_id, "appSecret": m.app_secret, "licenseKey": key, "hwid": "pc-1",
                       "nonce": format!("{:032x}", 1) });
    assert_eq!(server.auth("/auth/validate", &body).0, 200);
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        runtime.block_on(holder.commit()).unwrap();
    });
    let (status, license) = server.get(&m.api_key, &format!("/v1/licenses/{key}"));
    release.join().unwrap();
    assert_eq!(status, 200, "{license}");
    assert!(license["machines"][0]["boundAt"].as_str().is_some_and(|at| at.ends_with('Z')), "{license}");
}

#[test]
fn one_bound_machine_is_released_and_machines_show_when_they_were_bound_and_last_seen() {
    on_both_backends(RELAXED, |deployment, server| {
        let m = deployment.merchant_with_credits(server, "machines@example.com", 20);
        let key = m.license(server, json!({ "maxHwidSlots": 2 }));
        let validate = |hwid: &str, nonce: u32| {
            let body = json!({ "appId": m.app_id, "appSecret": m.app_secret, "licenseKey": key, "hwid": hwid,
                               "nonce": format!("{nonce:032x}") });
            server.auth("/auth/validate", &body)
        };
        assert_eq!(validate("pc-1", 1).0, 200);
        assert_eq!(validate("pc/2 é", 2).0, 200);
        assert_eq!(validate("pc-3", 3).1["error"], "hwid_mismatch", "both slots are taken");

        let (status, license) = server.get(&m.api_key, &format!("/v1/licenses/{key}"));
        assert_eq!(status, 200, "{license}");
        let machines = license["machines"].as_array().unwrap();
        let hwids: Vec<&str> = machines.iter().map(|m| m["hwid"].as_str().unwrap()).collect();
        assert_eq!(hwids, ["pc-1", "pc/2 é"]);
        assert!(machines.iter().all(|m| m["boundAt"].as_str().is_some_and(|at| at.ends_with('Z'))), "{machines:?}");

        // Last seen: every validation of a bound machine moves it; the binding was its first.
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(validate("pc-1", 5).0, 200);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let machines = loop {
            let (_, license) = server.get(&m.api_key, &format!("/v1/licenses/{key}"));
            let machines = license["machines"].as_array().unwrap().clone();
            let at = |i: usize, field: &str| machines[i][field].as_str().unwrap_or_default().to_string();
            if at(0, "lastSeenAt") > at(1, "boundAt") {
                break machines;
            }
            assert!(std::time::Instant::now() < deadline, "pc-1's second validation shows: {machines:?}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let field = |i: usize, name: &str| machines[i][name].as_str().unwrap().to_string();
        assert!(field(0, "lastSeenAt") > field(0, "boundAt"), "{machines:?}");
        assert!(field(1, "lastSeenAt") >= field(1, "boundAt"), "seen once, when it was bound: {machines:?}");
        assert!(field(1, "lastSeenAt") < field(0, "lastSeenAt"), "{machines:?}");

        // Release the second machine (its HWID percent-encoded in the path): only it goes.
        let path = format!("/v1/licenses/{key}/machines/pc%2F2%20%C3%A9");
        let (status, released) = server.send("DELETE", &m.api_key, &path, None);
        assert_eq!(status, 200, "{released}");
        assert_eq!(released["license"]["hwidList"], json!(["pc-1"]));
        let (status, missing) = server.send("DELETE", &m.api_key, &path, None);
        assert_eq!((status, missing["error"].as_str()), (404, Some("not_found")), "{missing}");
        assert_eq!(validate("pc-3", 6).0, 200, "the freed slot takes a new machine");
        let (_, license) = server.get(&m.api_key, &format!("/v1/licenses/{key}"));
        let hwids: Vec<&str> =
            license["machines"].as_array().unwrap().iter().map(|m| m["hwid"].as_str().unwrap()).collect();
        assert_eq!(hwids, ["pc-1", "pc-3"]);
        let (_, listed) = server.get(&m.api_key, &format!("/v1/licenses?appId={}", m.app_id));
        assert_eq!(listed["licenses"][0]["hwidList"], json!(["pc-1", "pc-3"]));
        let (_, history) = server.get(&m.api_key, &format!("/v1/licenses/{key}/events"));
        let release = history["events"].as_array().unwrap().iter().find(|e| e["type"] == "HwidReleased").cloned();
        assert_eq!(
            release.map(|e| (e["name"].clone(), e["summary"].clone())),
            Some((json!("Machine released"), json!("Machine pc/2 é")))
        );
        // The CSV's machine count follows the read model.
        let (_, _, _, csv) = get_csv(server, &m.api_key, &format!("/v1/licenses.csv?appId={}", m.app_id));
        assert!(csv.contains(",active,,,2,2,,,"), "{csv}");

        // Another account's license: 403, nothing released.
        let other = deployment.merchant_with_credits(server, "other-machines@example.com", 0);
        let (status, _) = server.send("DELETE", &other.api_key, &format!("/v1/licenses/{key}/machines/pc-1"), None);
        assert_eq!(status, 403);
    });
}

#[test]
fn licenses_are_found_by_their_buyers_exact_email_until_it_is_changed_removed_or_erased() {
    on_both_backends(RELAXED, |deployment, server| {
        let m = deployment.merchant_with_credits(server, "emails@example.com", 10);
        let ann = m.license(server, json!({ "email": "Ann@Example.com" }));
        let ann_again = m.license(server, json!({ "email": "ann@example.com" }));
        let bob = m.license(server, json!({}));
        m.put(server, &format!("/v1/licenses/{bob}/email"), json!({ "email": "bob@example.com" }));
        let _nobody = m.license(server, json!({}));
        // Another merchant's license with the same buyer never shows in this app's listing.
        let other = deployment.merchant_with_credits(server, "other-emails@example.com", 10);
        let _theirs = other.license(server, json!({ "email": "ann@example.com" }));

        let list = format!("/v1/licenses?appId={}&order=asc", m.app_id);
        let by_email = |email: &str| {
            let (status, page) = server.get(&m.api_key, &format!("{list}&email={email}"));
            assert_eq!(status, 200, "{email}: {page}");
            (keys(page["licenses"].as_array().unwrap()), page["total"].as_i64().unwrap())
        };
        // Exact after normalization (case, surrounding spaces); a part of an address matches nothing.
        assert_eq!(by_email("ann@example.com"), (vec![ann.clone(), ann_again.clone()], 2));
        assert_eq!(by_email("%20ANN@example.COM%20"), (vec![ann.clone(), ann_again.clone()], 2));
        assert_eq!(by_email("bob@example.com"), (vec![bob.clone()], 1));
        assert_eq!(by_email("nn@example.com"), (vec![], 0));
        // Combined with the other filters and exported alike.
        assert_eq!(by_email("ann@example.com&status=revoked"), (vec![], 0));
        let (status, _, _, csv) =
            get_csv(server, &m.api_key, &format!("/v1/licenses.csv?appId={}&email=bob@example.com", m.app_id));
        assert_eq!(status, 200);
        assert_eq!(csv.lines().count(), 2, "{csv}");
        assert!(csv.contains(&bob), "{csv}");

        // A changed address is found under the new one only; a removed one under none.
        m.put(server, &format!("/v1/licenses/{ann_again}/email"), json!({ "email": "carol@example.com" }));
        assert_eq!(by_email("ann@example.com"), (vec![ann.clone()], 1));
        assert_eq!(by_email("carol@example.com"), (vec![ann_again.clone()], 1));
        m.put(server, &format!("/v1/licenses/{ann_again}/email"), json!({ "email": null }));
        assert_eq!(by_email("carol@example.com"), (vec![], 0));

        // Erasure (GDPR) clears the index with the address.
        let (status, forgot) = server.post(
            &m.api_key,
            &format!("/v1/apps/{}/customers/forget", m.app_id),
            &json!({ "customerEmail": "ann@example.com" }),
        );
        assert_eq!(status, 200, "{forgot}");
        assert_eq!(forgot["licensesRedacted"], 1, "{forgot}");
        assert_eq!(by_email("ann@example.com"), (vec![], 0));
        assert_eq!(by_email("bob@example.com"), (vec![bob.clone()], 1), "other buyers stay findable");

        // Bad input: a clear 400, nothing else read.
        for bad in ["not-an-address", "a@b", "a%00b@example.com", &format!("{}@example.com", "x".repeat(250))] {
            let message = bad_request(server, &m.api_key, &format!("{list}&email={bad}"));
            assert!(message.contains("email"), "{bad}: {message}");
        }
    });
}

/// The session token in a signed `/auth/validate` answer.
fn session_token(answer: &Value) -> String {
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD.decode(answer["payload"].as_str().unwrap()).unwrap();
    serde_json::from_slice::<Value>(&payload).unwrap()["sessionToken"].as_str().unwrap().to_string()
}

#[test]
fn a_machine_kept_alive_by_heartbeats_alone_shows_its_last_heartbeat_even_after_a_restart() {
    let mut env = RELAXED.to_vec();
    env.push(("LICENSD_PRESENCE_FLUSH_MS", "200"));
    common::each_backend(|deployment| {
        let server = deployment.start_with(&env);
        let m = deployment.merchant_with_credits(&server, "heartbeats@example.com", 50);
        let key = m.license(&server, json!({ "maxHwidSlots": 2 }));
        let validate = |hwid: &str| {
            let nonce = uuid::Uuid::new_v4().simple().to_string();
            let body = json!({ "appId": m.app_id, "appSecret": m.app_secret, "licenseKey": key, "hwid": hwid,
                               "nonce": nonce });
            let (status, answer) = server.auth("/auth/validate", &body);
            assert_eq!(status, 200, "{answer}");
            session_token(&answer)
        };
        let mut token = validate("pc-1");
        let _other = validate("pc-2");
        let machines = |server: &Server| {
            let (status, license) = server.get(&m.api_key, &format!("/v1/licenses/{key}"));
            assert_eq!(status, 200, "{license}");
            license["machines"].as_array().unwrap().clone()
        };
        // Both validations are shown first (their events reach the read model).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let validated = loop {
            let list = machines(&server);
            if list.iter().all(|m| m["lastSeenAt"].is_string()) {
                break list[0]["lastSeenAt"].as_str().unwrap().to_string();
            }
            assert!(std::time::Instant::now() < deadline, "validations shown: {list:?}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        };

        // Three heartbeats (fewer than ten: no event is billed), later than the validation.
        std::thread::sleep(std::time::Duration::from_millis(30));
        for _ in 0..3 {
            let nonce = uuid::Uuid::new_v4().simple().to_string();
            let beat = json!({ "appId": m.app_id, "sessionToken": token, "hwid": "pc-1", "nonce": nonce });
            let (status, answer) = server.auth("/auth/heartbeat", &beat);
            assert_eq!(status, 200, "{answer}");
            token = session_token(&answer);
        }
        let beaten = machines(&server);
        let last_beat = beaten[0]["lastSeenAt"].as_str().unwrap().to_string();
        assert!(last_beat > validated, "the heartbeat moves last seen: {validated} -> {beaten:?}");
        assert_eq!(beaten[1]["lastSeenAt"], beaten[1]["boundAt"], "only pc-1 beat: {beaten:?}");
        let (_, history) = server.get(&m.api_key, &format!("/v1/licenses/{key}/events"));
        assert!(
            history["events"].as_array().unwrap().iter().all(|e| e["type"] != "HeartbeatBilled"),
            "no event was written for the beats: {history}"
        );

        // Written by the flusher: a restarted server (memory empty) still shows it.
        std::thread::sleep(std::time::Duration::from_millis(600));
        server.terminate();
        let server = deployment.start_with(&env);
        let after = machines(&server);
        assert_eq!(after[0]["lastSeenAt"].as_str(), Some(last_beat.as_str()), "{after:?}");

        server.terminate();
    });
}

/// Waits up to 20 s for `done`, then fails with `what`.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_license_whose_email_was_stored_before_the_index_is_found_by_it_after_the_start_up_backfill() {
    common::each_backend(|deployment| {
        let server = deployment.start_with(RELAXED);
        let m = deployment.merchant_with_credits(&server, "backfill@example.com", 10);
        let old = m.license(&server, json!({ "email": "Old@Example.com" }));
        let removed = m.license(&server, json!({ "email": "gone@example.com" }));
        m.put(&server, &format!("/v1/licenses/{removed}/email"), json!({ "email": null }));
        let (_, answer) = server.get(&m.api_key, &format!("/v1/licenses?appId={}&limit=10", m.app_id));
        assert_eq!(answer["total"], 2, "{answer}");
        server.terminate();

        // As an older release left them: the events say an email was set but carry no digest,
        // the read model has none; `removed` had its address removed (no vault row).
        let strip = if deployment.database_url.starts_with("postgres") {
            "UPDATE events SET payload = payload - 'email_digest' WHERE event_type = 'BuyerEmailSet'"
        } else {
            "UPDATE events SET payload = json_remove(payload, '$.email_digest') WHERE event_type = 'BuyerEmailSet'"
        };
        common::sql(deployment, strip, vec![]);
        common::sql(deployment, "UPDATE rm_licenses SET email_digest = NULL", vec![]);

        let by_email = |server: &Server, email: &str| {
            let (status, page) = server.get(&m.api_key, &format!("/v1/licenses?appId={}&email={email}", m.app_id));
            assert_eq!(status, 200, "{page}");
            keys(page["licenses"].as_array().unwrap())
        };
        let digests = |key: &str| {
            let stream = format!("license-{key}");
            common::sql(
                deployment,
                "SELECT CAST(payload AS TEXT) FROM events WHERE stream_id = $1 AND event_type = 'BuyerEmailSet'",
                vec![stream.into()],
            )
            .iter()
            .filter(|p| p.contains("email_digest"))
            .count()
        };
        assert_eq!(digests(&old), 0, "seeded the old way");

        // The start indexes the old license once; the removed address stays unfindable.
        let server = deployment.start_with(RELAXED);
        eventually("the backfill indexes the old license", || {
            by_email(&server, "old@example.com") == vec![old.clone()]
        });
        assert_eq!(by_email(&server, "gone@example.com"), Vec::<String>::new());
        assert_eq!((digests(&old), digests(&removed)), (1, 0));
        server.terminate();

        // Started again (another node, or a rerun after a crash): nothing is appended twice.
        common::sql(deployment, "UPDATE rm_licenses SET email_digest = NULL", vec![]);
        let server = deployment.start_with(RELAXED);
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert_eq!((digests(&old), digests(&removed)), (1, 0));
        server.terminate();
    });
}

#[test]
fn heartbeat_rows_of_released_machines_and_deleted_licenses_are_pruned() {
    let mut env = RELAXED.to_vec();
    env.push(("LICENSD_PRESENCE_FLUSH_MS", "100"));
    common::each_backend(|deployment| {
        let server = deployment.start_with(&env);
        let m = deployment.merchant_with_credits(&server, "pruned@example.com", 50);
        let key = m.license(&server, json!({ "maxHwidSlots": 2 }));
        for hwid in ["pc-1", "pc-2"] {
            let nonce = uuid::Uuid::new_v4().simple().to_string();
            let body = json!({ "appId": m.app_id, "appSecret": m.app_secret, "licenseKey": key, "hwid": hwid,
                               "nonce": nonce });
            let (status, answer) = server.auth("/auth/validate", &body);
            assert_eq!(status, 200, "{answer}");
            let nonce = uuid::Uuid::new_v4().simple().to_string();
            let beat =
                json!({ "appId": m.app_id, "sessionToken": session_token(&answer), "hwid": hwid, "nonce": nonce });
            let (status, answer) = server.auth("/auth/heartbeat", &beat);
            assert_eq!(status, 200, "{answer}");
        }
        let rows = || {
            common::sql(
                deployment,
                "SELECT hwid FROM machine_heartbeats WHERE license_key = $1 ORDER BY hwid",
                vec![key.clone().into()],
            )
        };
        eventually("both heartbeats written", || rows() == ["pc-1", "pc-2"]);

        let (status, answer) = server.send("DELETE", &m.api_key, &format!("/v1/licenses/{key}/machines/pc-1"), None);
        assert_eq!(status, 200, "{answer}");
        eventually("the released machine's row pruned", || rows() == ["pc-2"]);
        let (status, answer) = server.send("DELETE", &m.api_key, &format!("/v1/licenses/{key}"), None);
        assert!(status < 300, "{status} {answer}");
        eventually("the deleted license's rows pruned", || rows().is_empty());
        server.terminate();
    });
}
