//! The benchmark instruments against the real binary: the load generator speaks the SDK
//! protocol and counts an answer only when it passes the SDKs' checks, the floor answers in
//! the same format, and overload is shed with 429 instead of queueing.

mod common;

use common::World;
use licensd_bench::fixture::{self, Merchant};
use licensd_bench::load::{self, LoadSpec, Mode, Report, Target, Workload};
use licensd_bench::protocol::{AppCredentials, Call};
use std::sync::Arc;
use std::time::Duration;

fn unlimited() -> Vec<(&'static str, &'static str)> {
    vec![
        ("LICENSD_VALIDATE_PER_IP", "1000000000"),
        ("LICENSD_VALIDATE_PER_KEY", "1000000000"),
        ("LICENSD_HEARTBEAT_PER_KEY", "1000000000"),
    ]
}

fn spec(call: Call, concurrency: usize) -> LoadSpec {
    LoadSpec {
        workload: Workload::Only(call),
        mode: Mode::Closed { concurrency },
        warmup: Duration::from_millis(200),
        duration: Duration::from_millis(800),
        timeout: Duration::from_secs(10),
    }
}

/// Licenses and logged-in machines of the world's merchant (logged in `logins` at a time).
async fn target(world: &World, logins: usize) -> Target {
    let m = &world.merchant;
    let merchant = Merchant {
        api_key: m.api_key.clone(),
        app: AppCredentials::new(&m.app_id, &m.app_secret, &m.public_key).unwrap(),
    };
    let base_url = world.server().base.clone();
    let keys = fixture::licenses(&base_url, &merchant, 20, 2, 2).await.unwrap();
    let target = Target { base_url, app: merchant.app, machines: Arc::new(fixture::machines(&keys, 2)) };
    let machines = load::log_in_all(&target, logins).await.unwrap();
    assert!(machines.iter().all(|m| m.session_token.is_some()));
    Target { machines: Arc::new(machines), ..target }
}

fn assert_all_verified(report: &Report) {
    assert!(report.verified > 0, "{report:?}");
    assert_eq!(report.failed_checks, 0, "{report:?}");
    assert_eq!(report.verified, report.sent, "{report:?}");
    assert_eq!(report.outcomes.keys().collect::<Vec<_>>(), vec!["200"], "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_generator_counts_only_answers_that_pass_the_sdk_checks() {
    let world = tokio::task::block_in_place(|| World::new(&unlimited(), 1_000_000));
    let target = target(&world, 4).await;
    for call in [Call::Validate, Call::Heartbeat] {
        let report = load::run(&target, spec(call, 4)).await.unwrap();
        assert_all_verified(&report);
        assert!(report.latency_verified.p50 <= report.latency_verified.p99);
    }

    // Answers signed by another key are fast and well-formed, and every one is a failure.
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key();
    let other_key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, other_key.as_bytes());
    let other = AppCredentials::new(&target.app.app_id, &target.app.app_secret, &other_key).unwrap();
    let wrong = Target { app: other, ..target.clone() };
    let report = load::run(&wrong, spec(Call::Validate, 2)).await.unwrap();
    assert_eq!(report.verified, 0, "{report:?}");
    assert!(report.failed_checks > 0 && report.failed_checks == report.sent, "{report:?}");
    assert_eq!(report.first_failure.as_deref(), Some("200: bad signature"));

    // The floor answers in the same format, verifiably.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let floor_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(licensd_bench::floor::serve(listener, None));
    let floor_key = licensd_bench::floor::signing_key().verifying_key();
    let floor_key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, floor_key.as_bytes());
    let floor_app = AppCredentials::new(&target.app.app_id, "x", &floor_key).unwrap();
    let floor = Target { base_url: floor_url, app: floor_app, ..target };
    assert_all_verified(&load::run(&floor, spec(Call::Validate, 4)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_requests_than_the_in_flight_limit_are_shed_with_429() {
    let mut env = unlimited();
    env.push(("LICENSD_AUTH_MAX_IN_FLIGHT", "1"));
    let world = tokio::task::block_in_place(|| World::new(&env, 1_000_000));
    let target = target(&world, 1).await;
    let report = load::run(&target, spec(Call::Validate, 32)).await.unwrap();
    let shed = report.outcomes.get("429 rate_limited").copied().unwrap_or(0);
    assert!(shed > 0, "{report:?}");
    assert!(report.verified > 0, "the one slot keeps serving: {report:?}");
    assert_eq!(report.failed_checks, 0);
    let (_, metrics) = tokio::task::block_in_place(|| world.server().get_text("/metrics"));
    let counted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("licensd_auth_shed_total "))
        .and_then(|v| v.parse().ok())
        .expect("shed counter");
    assert!(counted >= shed, "{counted} < {shed}");
}

/// More clients than `LICENSD_MAX_CONNECTIONS`, each on its own connection: the connections
/// beyond the limit are answered 429 `rate_limited` at once instead of waiting in the kernel's
/// accept queue (where, at twice the sustainable rate, requests timed out or were reset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_connections_than_the_limit_are_refused_with_429_not_queued() {
    let mut env = unlimited();
    env.push(("LICENSD_MAX_CONNECTIONS", "4"));
    let world = tokio::task::block_in_place(|| World::new(&env, 1_000_000));
    let target = target(&world, 1).await;
    let spec =
        LoadSpec { timeout: Duration::from_secs(5), duration: Duration::from_secs(2), ..spec(Call::Validate, 48) };
    let report = load::run(&target, spec).await.unwrap();
    let refused = report.outcomes.get("429 rate_limited").copied().unwrap_or(0);
    assert!(refused > 0, "connections over the limit are refused: {report:?}");
    assert!(report.verified > 0, "the four connections keep being served: {report:?}");
    assert_eq!(report.failed_checks, 0, "{report:?}");
    assert_eq!(report.outcomes.get("timeout"), None, "nothing waits until the client gives up: {report:?}");
    let others: u64 = report
        .outcomes
        .iter()
        .filter(|(label, _)| !matches!(label.as_str(), "200" | "429 rate_limited"))
        .map(|(_, n)| n)
        .sum();
    assert!(others * 100 <= report.sent, "answers are 200 or 429, not resets: {report:?}");
}

/// `licensd-bench files` end to end on a small file (8 MiB, 3 clients): every mode completes
/// and every client's bytes hash to the file's SHA-256; the report and the JSON carry the
/// figures. Never asserts on speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_benchmark_runs_and_verifies_every_download() {
    let options = licensd_bench::files::FilesOptions {
        licensd: common::BIN.into(),
        size: 8 * 1024 * 1024,
        clients: 3,
        scratch: None,
        url_modes: vec![false, true],
    };
    let results = licensd_bench::files::run(&options).await.expect("the files benchmark");
    assert_eq!(results.size_bytes, 8 * 1024 * 1024);
    for (what, run) in [
        ("upload", &results.upload),
        ("baseline", &results.baseline),
        ("stream", &results.stream),
        ("url", &results.url),
    ] {
        assert!(run.verified && run.mb_per_s > 0.0, "{what}: {run:?}");
    }
    let modes: Vec<(&str, usize)> = results.concurrent.iter().map(|c| (c.mode.as_str(), c.verified)).collect();
    assert_eq!(modes, [("stream", 3), ("url", 3)]);
    assert!(results.concurrent.iter().all(|c| c.rss_peak_bytes >= c.rss_before_bytes && c.rss_before_bytes > 0));
    let section = licensd_bench::files::report::section(&results);
    assert!(section.starts_with(licensd_bench::files::report::HEADING), "{section}");
    let json = licensd_bench::files::report::with_json(r#"{"live": {"x": 1}}"#, &results).unwrap();
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!((json["live"]["x"].as_u64(), json["files"]["size_bytes"].as_u64()), (Some(1), Some(8 * 1024 * 1024)));
}

/// `licensd-bench nodes` end to end with tiny counts: three nodes on one Postgres database with
/// a real broker. Every throughput step has verified answers from every node and none failed;
/// every revocation on node A was pushed to its session on node C, through Kafka and then with
/// the broker stopped, and node C's own histogram counted each push. Never asserts on speed.
/// Skipped without `LICENSD_TEST_POSTGRES_URL`, and without `LICENSD_TEST_KAFKA_BROKER_BIN`
/// unless `CI` is set (then it fails, like the multi-node Kafka tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_benchmark_spreads_the_load_and_counts_every_push_through_kafka_and_the_fallback() {
    let Some(broker) = common::kafka_broker_bin() else { return };
    let Ok(postgres_url) = std::env::var("LICENSD_TEST_POSTGRES_URL") else {
        eprintln!("skipped: LICENSD_TEST_POSTGRES_URL is unset");
        return;
    };
    use licensd_bench::nodes::{self, report, NodesOptions};
    let options = NodesOptions {
        licensd: common::BIN.into(),
        broker,
        postgres_url,
        nodes: 3,
        partitions: 3,
        licenses: 30,
        concurrency: 6,
        warmup: Duration::from_millis(300),
        duration: Duration::from_secs(1),
        revocations: 3,
        idle: Duration::from_secs(1),
        floors: false,
    };
    let results = nodes::run(&options).await.expect("the nodes benchmark");
    assert_eq!(results.steps.iter().map(|s| s.nodes).collect::<Vec<_>>(), [1, 2, 3]);
    for step in &results.steps {
        assert!(step.verified > 0 && step.verified == step.sent && step.failed_checks == 0, "{step:?}");
        let clients: Vec<usize> = step.per_node.iter().map(|n| n.clients).collect();
        assert_eq!(clients.iter().sum::<usize>(), 6, "the same clients, spread: {step:?}");
        assert!(step.per_node.iter().all(|n| n.verified > 0), "every node answered: {step:?}");
    }
    assert_eq!(results.steps[0].ratio_to_one, 1.0);
    for (source, pushes) in [("kafka", &results.kafka), ("postgres-fallback", &results.fallback)] {
        let pushes = pushes.as_ref().expect("revocations ran");
        assert_eq!(pushes.log_source, source);
        assert_eq!(pushes.revocation.repetitions, 3, "{source}: every revocation's event 201 arrived");
        assert_eq!(pushes.revocation.server.count, 3, "{source}: node C wrote each push: {pushes:?}");
        assert!(pushes.revocation.client.p50 > 0 && pushes.revocation.api_answer.p50 > 0, "{pushes:?}");
    }
    let three = &results.steps[2];
    assert!(three.published_per_second > 0.0, "the relay published the bills: {three:?}");
    // Under load a node's own writes make it read the log up to them, and that read often takes
    // other nodes' events before their messages arrive: how many come by Kafka then depends on
    // timing. Node C writes nothing while the revocations run, so those reach it by Kafka.
    let (kafka, fallback) = (results.kafka.as_ref().unwrap(), results.fallback.as_ref().unwrap());
    assert!(kafka.applied_from_kafka > 0.0, "node C applied revocations from Kafka: {kafka:?}");
    assert_eq!(fallback.applied_from_kafka, 0.0, "nothing from Kafka with the broker stopped: {fallback:?}");
    let probe = results.probe.as_ref().expect("the idle windows ran");
    assert!(probe.default.transactions_per_second > 0.0 && probe.slow.probe_ms == 10_000, "{probe:?}");
    let section = report::section(&results);
    assert!(section.starts_with(report::HEADING), "{section}");
    assert!(section.contains("through Kafka") && section.contains("Postgres fallback"), "{section}");
    let json = report::with_json(r#"{"files": {"x": 1}}"#, &results).unwrap();
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!((json["files"]["x"].as_u64(), json["nodes"]["steps"].as_array().map(Vec::len)), (Some(1), Some(3)));
}
