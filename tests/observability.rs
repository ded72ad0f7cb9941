//! `/metrics` and the access log of the real server: request durations by route template and
//! status class, the writer's batch sizes and commit times, read-model lag, the workers'
//! counters, the snapshot's age; one JSON access record per request, without keys.

mod common;

use common::{each_backend, TempDir};
use serde_json::{json, Value};

/// The value of one sample line (`name{labels} value`) of a Prometheus text page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_and_access_log_describe_the_requests_without_their_secrets() {
    each_backend(|deployment| {
        let logs = TempDir::new();
        let log = logs.0.join("server.log");
        let mut env = common::RELAXED_LIMITS.to_vec();
        env.extend([("LICENSD_LOG", "info"), ("LICENSD_LOG_FORMAT", "json"), ("LICENSD_SNAPSHOT_EVERY_EVENTS", "1")]);
        let server = deployment.start_logging_to(&env, Some(&log));
        let merchant = deployment.merchant_with_credits(&server, "metrics@example.com", 1000);
        let key = merchant.license(&server, json!({}));
        for _ in 0..3 {
            assert_eq!(server.get(&merchant.api_key, &format!("/v1/licenses/{key}")).0, 200);
        }
        assert_eq!(server.get(&merchant.api_key, "/v1/licenses/NOPE-NOPE-NOPE-NOPE").0, 404);
        assert_eq!(server.get_text("/no/such/page").0, 404);

        // The snapshot is written after the events above (LICENSD_SNAPSHOT_EVERY_EVENTS=1).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let page = loop {
            let (status, page) = server.get_text("/metrics");
            assert_eq!(status, 200);
            if page.contains("licensd_snapshot_age_seconds ") || std::time::Instant::now() > deadline {
                break page;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        let route = |template: &str, class: &str| {
            let series =
                format!("licensd_http_request_duration_seconds_count{{route=\"{template}\",class=\"{class}\"}}");
            sample(&page, &series).unwrap_or_else(|| panic!("no {series} in\n{page}"))
        };
        assert_eq!(route("/v1/licenses/{key}", "2xx"), 3.0, "three answered 200 under the route's template");
        assert_eq!(route("/v1/licenses/{key}", "4xx"), 1.0);
        assert_eq!(route("/v1/licenses", "2xx"), 1.0);
        assert!(route("unmatched", "4xx") >= 1.0);
        assert!(!page.contains(&key), "no license key in a label");
        let inf =
            "licensd_http_request_duration_seconds_bucket{route=\"/v1/licenses/{key}\",class=\"2xx\",le=\"+Inf\"}";
        assert_eq!(sample(&page, inf), Some(3.0));
        assert!(sample(&page, "licensd_append_batch_events_count").unwrap() >= 1.0, "{page}");
        assert!(sample(&page, "licensd_append_commit_seconds_count").unwrap() >= 1.0);
        // The COMMIT is timed apart, once per committed batch, and is part of the whole.
        let syncs = sample(&page, "licensd_writer_fsync_seconds_count").expect("the fsync histogram");
        assert!(syncs >= 1.0 && syncs <= sample(&page, "licensd_append_commit_seconds_count").unwrap(), "{page}");
        let sync_sum = sample(&page, "licensd_writer_fsync_seconds_sum").unwrap();
        assert!(sync_sum > 0.0 && sync_sum <= sample(&page, "licensd_append_commit_seconds_sum").unwrap(), "{page}");
        assert!(sample(&page, "licensd_append_batch_events_sum").unwrap() >= 1.0);
        assert!(sample(&page, "licensd_projection_lag_events{projection=\"licenses\"}").is_some(), "{page}");
        assert!(sample(&page, "licensd_projection_lag_seconds{projection=\"licenses\"}").is_some());
        assert_eq!(sample(&page, "licensd_webhook_attempts_total{outcome=\"delivered\"}"), Some(0.0));
        assert_eq!(sample(&page, "licensd_commerce_events_total{outcome=\"processed\"}"), Some(0.0));
        assert!(sample(&page, "licensd_snapshot_age_seconds").is_some(), "a snapshot was written: {page}");
        dashboard_uses_only_exported_metrics(&page);
        server.terminate();

        let records: Vec<Value> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|record| record["target"] == "licensd::access")
            .collect();
        let by_route = |template: &str, status: u64| {
            records.iter().filter(|r| r["fields"]["route"] == template && r["fields"]["status"] == status).count()
        };
        assert_eq!(by_route("/v1/licenses/{key}", 200), 3, "one record per request");
        assert_eq!(by_route("/v1/licenses/{key}", 404), 1);
        let record = records.iter().find(|r| r["fields"]["route"] == "/v1/licenses/{key}").unwrap();
        assert_eq!(record["fields"]["method"], "GET");
        assert_eq!(record["fields"]["client_ip"], "127.0.0.1");
        assert!(record["fields"]["duration_ms"].as_f64().is_some(), "{record}");
        let all = std::fs::read_to_string(&log).unwrap();
        assert!(!all.contains(&key), "the license key is not logged");
        assert!(!all.contains(&merchant.api_key), "the API key is not logged");
    });
}

/// Every metric the Grafana dashboard in deploy/ queries is one the server exports.
fn dashboard_uses_only_exported_metrics(page: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/licensd.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("dashboard JSON");
    let exported: Vec<&str> = page.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (start, _) in expr.match_indices("licensd_") {
                let name: String =
                    expr[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix).filter(|f| exported.contains(f)))
                    .unwrap_or(&name);
                assert!(exported.contains(&family), "{} queries {name}, which /metrics lacks", panel["title"]);
                queried += 1;
            }
        }
    }
    assert!(queried >= 20, "the dashboard queries the metrics ({queried})");
}

#[test]
fn the_access_log_can_be_turned_off() {
    let dir = TempDir::new();
    let deployment = common::Deployment::sqlite(&dir.0);
    let log = dir.0.join("server.log");
    let env = [("LICENSD_LOG", "info"), ("LICENSD_ACCESS_LOG", "false")];
    let server = deployment.start_logging_to(&env, Some(&log));
    assert_eq!(server.get_text("/healthz").0, 200);
    server.terminate();
    assert!(!std::fs::read_to_string(&log).unwrap().contains("licensd::access"));
}

/// One request an OTLP/HTTP receiver got: path, content type and raw body.
type Export = (String, String, Vec<u8>);

/// A minimal OTLP/HTTP trace receiver: accepts `POST`s, records them, answers `200` with an
/// empty `ExportTraceServiceResponse` (an empty protobuf message), as a collector does.
fn otlp_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Export>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
            let (mut length, mut content_type) = (0usize, String::new());
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    match name.trim().to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        "content-type" => content_type = value.trim().to_string(),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            log.lock().unwrap().push((path, content_type, body));
            let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    (endpoint, received)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, each request is a span exported over OTLP/HTTP
/// (protobuf at `/v1/traces`), named by its route template, never by the raw path.
#[test]
fn request_spans_are_exported_over_otlp_http() {
    let (endpoint, received) = otlp_receiver();
    let dir = TempDir::new();
    let deployment = common::Deployment::sqlite(&dir.0);
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let server = deployment.start_with(&env);
    let merchant = deployment.merchant_with_credits(&server, "traces@example.com", 10);
    let key = merchant.license(&server, json!({}));
    assert_eq!(server.get(&merchant.api_key, &format!("/v1/licenses/{key}")).0, 200);
    server.terminate(); // flushes what is still queued

    let exports = received.lock().unwrap().clone();
    assert!(!exports.is_empty(), "no OTLP export arrived");
    assert!(
        exports.iter().all(|(path, kind, _)| path == "/v1/traces" && kind == "application/x-protobuf"),
        "{exports:?}"
    );
    let bodies: Vec<u8> = exports.iter().flat_map(|(_, _, body)| body.clone()).collect();
    for expected in ["licensd", "GET /v1/licenses/{key}", "http.route", "http.response.status_code"] {
        let shown: String = String::from_utf8_lossy(&bodies).chars().filter(|c| !c.is_control()).collect();
        assert!(contains(&bodies, expected.as_bytes()), "no '{expected}' in the exported spans: {shown}");
    }
    assert!(!contains(&bodies, key.as_bytes()), "a license key in a span");
}

/// One span as OTLP carries it (`opentelemetry.proto.trace.v1.Span`): the fields the tests read.
#[derive(Debug, Clone, Default)]
struct OtlpSpan {
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    name: String,
    start: u64,
    end: u64,
}

/// A protobuf field's value: varints and fixed-width numbers as numbers, length-delimited
/// fields (strings, bytes, nested messages) as their bytes.
enum Field<'a> {
    Number(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &mut &[u8]) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let Some((&byte, rest)) = buf.split_first() else { panic!("a varint cut short") };
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    value
}

/// The fields of one protobuf message in wire order: (field number, value).
fn fields(mut buf: &[u8]) -> Vec<(u64, Field<'_>)> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf);
        let (number, value) = match key & 7 {
            0 => (key >> 3, Field::Number(varint(&mut buf))),
            1 => {
                let (bytes, rest) = buf.split_at(8);
                buf = rest;
                (key >> 3, Field::Number(u64::from_le_bytes(bytes.try_into().unwrap())))
            }
            2 => {
                let length = varint(&mut buf) as usize;
                let (bytes, rest) = buf.split_at(length);
                buf = rest;
                (key >> 3, Field::Bytes(bytes))
            }
            5 => {
                let (bytes, rest) = buf.split_at(4);
                buf = rest;
                (key >> 3, Field::Number(u64::from(u32::from_le_bytes(bytes.try_into().unwrap()))))
            }
            other => panic!("wire type {other} is not in OTLP"),
        };
        out.push((number, value));
    }
    out
}

/// The nested messages at field `number`.
fn messages(buf: &[u8], number: u64) -> Vec<&[u8]> {
    fields(buf)
        .into_iter()
        .filter_map(|(n, value)| match value {
            Field::Bytes(bytes) if n == number => Some(bytes),
            _ => None,
        })
        .collect()
}

/// Every span of an `ExportTraceServiceRequest` body: resource_spans (1) → scope_spans (2) →
/// spans (2), each with trace_id (1), span_id (2), parent_span_id (4), name (5), start (7), end (8).
fn decode_spans(body: &[u8]) -> Vec<OtlpSpan> {
    let mut spans = Vec::new();
    for resource in messages(body, 1) {
        for scope in messages(resource, 2) {
            for raw in messages(scope, 2) {
                let mut span = OtlpSpan::default();
                for (number, value) in fields(raw) {
                    match (number, value) {
                        (1, Field::Bytes(b)) => span.trace_id = b.to_vec(),
                        (2, Field::Bytes(b)) => span.span_id = b.to_vec(),
                        (4, Field::Bytes(b)) => span.parent_span_id = b.to_vec(),
                        (5, Field::Bytes(b)) => span.name = String::from_utf8_lossy(b).into_owned(),
                        (7, Field::Number(n)) => span.start = n,
                        (8, Field::Number(n)) => span.end = n,
                        _ => {}
                    }
                }
                spans.push(span);
            }
        }
    }
    spans
}

/// The steps inside a request (event-log reads and appends, SQL read-model reads, signing) are
/// exported as spans whose parent is the request's span, in its trace and within its time.
#[test]
fn the_steps_of_a_request_are_exported_as_its_child_spans() {
    each_backend(|deployment| {
        let (endpoint, received) = otlp_receiver();
        let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
        let server = deployment.start_with(&env);
        let merchant = deployment.merchant_with_credits(&server, "steps@example.com", 10);
        let key = merchant.license(&server, json!({}));
        assert_eq!(server.get(&merchant.api_key, &format!("/v1/licenses/{key}")).0, 200);
        let sdk = authforge::AuthForgeClient::new(authforge::AuthForgeConfig {
            app_id: merchant.app_id.clone(),
            app_secret: merchant.app_secret.clone(),
            public_key: merchant.public_key.clone(),
            api_base_url: server.base.clone(),
            hwid_override: Some("traced-machine".into()),
            ..Default::default()
        });
        sdk.login(&key).expect("an SDK login");
        server.terminate(); // flushes what is still queued

        let spans: Vec<OtlpSpan> =
            received.lock().unwrap().iter().flat_map(|(_, _, body)| decode_spans(body)).collect();
        let child_of = |request: &str, step: &str| {
            spans.iter().any(|child| {
                child.name == step
                    && spans.iter().any(|parent| {
                        parent.name == request
                            && parent.span_id == child.parent_span_id
                            && parent.trace_id == child.trace_id
                            && parent.start <= child.start
                            && child.end <= parent.end
                    })
            })
        };
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        for (request, step) in [
            ("POST /v1/licenses", "store.append"),
            ("GET /v1/licenses/{key}", "sql.read"),
            ("POST /auth/validate", "sign"),
            ("POST /auth/validate", "store.append"),
        ] {
            assert!(child_of(request, step), "no '{step}' span under '{request}': {names:?}");
        }
        let roots = spans.iter().filter(|s| s.parent_span_id.is_empty() && !s.name.contains(' ')).count();
        assert_eq!(roots, 0, "a step outside a request became a trace of its own: {names:?}");
    });
}
