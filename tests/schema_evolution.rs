//! The log outlives the code that reads it: an event of a type this version does not know (a
//! later version wrote it) is skipped and counted, never freezing the read models; an event of a
//! known type that cannot be decoded stops its projection and `/healthz` says so, with the
//! position and the error, answering 503 once it is stuck past `LICENSD_PROJECTION_STUCK_SECS`.

mod common;

use common::{on_both_backends, Deployment, Server};
use licensd_store::{AppendRequest, EventStore, ExpectedVersion, NewEvent, Store, StoreOptions};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ENV: &[(&str, &str)] = &[("LICENSD_PROJECTION_STUCK_SECS", "1")];

/// Appends one raw event, as another (later) version of licensd would.
fn append_raw(deployment: &Deployment, stream_id: &str, event_type: &str, payload: Value) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let options = StoreOptions { max_connections: 1, ..StoreOptions::durable() };
        let store = Store::connect(&deployment.database_url, &options).await.expect("store");
        let event = NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            payload,
            metadata: json!({}),
        };
        let request = AppendRequest::new(stream_id, ExpectedVersion::Any, vec![event]);
        store.append(request).await.expect("append");
    });
}

fn health(server: &Server) -> (u16, Value) {
    let (status, text) = server.get_text("/healthz");
    (status, serde_json::from_str(&text).expect("JSON health"))
}

/// Polls `/healthz` until `done` holds (or 20 s pass) and returns the last answer.
fn health_until(server: &Server, done: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = health(server);
        if done(status, &body) || Instant::now() > deadline {
            return (status, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn unknown_event_types_are_skipped_and_a_bad_known_event_is_reported_stuck() {
    on_both_backends(ENV, |deployment, server| {
        let merchant = deployment.merchant_with_credits(server, "future@example.com", 10);
        let account_stream = format!("account-{}", merchant.account_id);
        append_raw(deployment, &account_stream, "AccountRenamed", json!({ "type": "AccountRenamed", "name": "n" }));

        // Everything after the unknown event is still applied: a license created afterwards
        // (the API waits for the in-memory model to show it) validates.
        let key = merchant.license(server, json!({}));
        let body = json!({ "appId": merchant.app_id, "appSecret": merchant.app_secret, "licenseKey": key,
            "hwid": "h", "nonce": "0".repeat(32) });
        let (status, answer) = server.auth("/auth/validate", &body);
        assert_eq!(status, 200, "{answer}");
        let (status, healthy) = health_until(server, |_, body| {
            body["projections"].as_array().is_some_and(|p| p.iter().all(|p| p["skippedEvents"] == 1))
        });
        assert_eq!(status, 200, "{healthy}");
        let names: Vec<_> = healthy["projections"].as_array().unwrap().iter().map(|p| p["name"].clone()).collect();
        assert!(names.contains(&json!("hot")), "{names:?}");
        assert!(healthy["projections"].as_array().unwrap().iter().all(|p| p["skippedEvents"] == 1), "{healthy}");
        let (_, metrics) = server.get_text("/metrics");
        assert!(metrics.contains("licensd_events_skipped_total{projection=\"hot\"} 1"), "{metrics}");

        // A known type whose payload cannot be decoded stops the projections that read it.
        append_raw(
            deployment,
            &account_stream,
            "CreditsGranted",
            json!({ "type": "CreditsGranted", "amount": "lots" }),
        );
        let (status, stuck) = health_until(server, |_, body| {
            body["stuckProjections"].as_array().is_some_and(|s| s.contains(&json!("hot")))
        });
        assert_eq!(status, 503, "{stuck}");
        assert!(stuck["stuckProjections"].as_array().unwrap().contains(&json!("hot")), "{stuck}");
        let hot = stuck["projections"].as_array().unwrap().iter().find(|p| p["name"] == "hot").unwrap().clone();
        let message = hot["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("CreditsGranted v1") && message.contains("event at"), "{hot}");
        assert_eq!(hot["stuck"], true);
    });
}
