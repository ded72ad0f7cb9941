//! A value the database refuses, sent through the real server: the request that carries it gets
//! 400 `bad_request` with our own text (never the database's, never 5xx), and requests of other
//! tenants sent at the same moment (so in the same group-commit batches) all succeed. Postgres
//! only: its jsonb refuses NUL in a string, which SQLite stores and reads back intact.

mod common;

use common::{Deployment, Merchant, Server, TempDir};
use serde_json::json;

const REQUESTS_PER_TENANT: usize = 20;

fn create(server: &Server, merchant: &Merchant, label: &str) -> (u16, serde_json::Value) {
    let body = json!({ "appId": merchant.app_id, "label": label, "maxHwidSlots": 1 });
    server.post(&merchant.api_key, "/v1/licenses", &body)
}

#[test]
fn postgres_a_refused_value_fails_only_its_own_request() {
    let Some(db) = common::temp_postgres() else { return };
    let dir = TempDir::new();
    let deployment = Deployment::postgres(&dir.0, &db.url);
    let server = deployment.start();
    let tenants: Vec<Merchant> =
        (0..3).map(|i| deployment.merchant_with_credits(&server, &format!("t{i}@example.com"), 0)).collect();
    let outcomes = std::thread::scope(|scope| {
        let handles: Vec<_> = tenants
            .iter()
            .enumerate()
            .flat_map(|(i, tenant)| {
                let server = &server;
                (0..REQUESTS_PER_TENANT).map(move |n| {
                    // Tenant 0 sends a NUL in every other label; the others send clean ones.
                    let bad = i == 0 && n % 2 == 0;
                    let label = if bad { format!("bad\u{0}{n}") } else { format!("good {n}") };
                    scope.spawn(move || (bad, create(server, tenant, &label)))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    let (mut refused, mut created) = (0, 0);
    for (bad, (status, body)) in outcomes {
        if bad {
            assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{body}");
            let message = body["message"].as_str().unwrap_or_default().to_lowercase();
            for leak in ["utf8", "byte sequence", "jsonb", "unicode", "sqlstate", "0x00"] {
                assert!(!message.contains(leak), "database text in the response: {body}");
            }
            refused += 1;
        } else {
            assert_eq!(status, 201, "a clean request failed beside a refused one: {body}");
            created += 1;
        }
    }
    assert_eq!((refused, created), (REQUESTS_PER_TENANT / 2, REQUESTS_PER_TENANT * 5 / 2));
    eprintln!("refused {refused} NUL requests with 400; {created} clean requests of 3 tenants created");
    // A NUL in a read's parameter (the license search) is the request's fault too.
    let path = format!("/v1/licenses?appId={}&search=a%00b", tenants[1].app_id);
    let (status, body) = server.get(&tenants[1].api_key, &path);
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "NUL in a search: {body}");
    // The server is still healthy and the refused labels are nowhere.
    for (i, tenant) in tenants.iter().enumerate() {
        let (status, list) = server.get(&tenant.api_key, &format!("/v1/licenses?appId={}&limit=100", tenant.app_id));
        assert_eq!(status, 200, "{list}");
        // The labels, not the whole text: a random id can hold "bad" too (an app id `…-bad6-…`
        // failed this test once).
        let labels: Vec<&str> =
            list["licenses"].as_array().unwrap().iter().filter_map(|l| l["label"].as_str()).collect();
        assert!(labels.iter().all(|l| l.starts_with("good ")), "a refused request left a license: {list}");
        let clean = if i == 0 { REQUESTS_PER_TENANT / 2 } else { REQUESTS_PER_TENANT };
        assert_eq!(labels.len(), clean, "{list}");
    }
}
