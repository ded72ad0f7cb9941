//! Prometheus text exposition, written by hand: a handful of counters and gauges.

use crate::AppState;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses by status class: 1xx..5xx.
    responses: [AtomicU64; 5],
}

pub async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let class = (response.status().as_u16() / 100).clamp(1, 5) as usize - 1;
    state.metrics.responses[class].fetch_add(1, Ordering::Relaxed);
    response
}

pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let responses = &state.metrics.responses;
    let by_class: Vec<(String, u64)> =
        (0..5).map(|i| (format!("{{class=\"{}xx\"}}", i + 1), responses[i].load(Ordering::Relaxed))).collect();
    let by_class: Vec<(&str, u64)> = by_class.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric("licensd_http_responses_total", "counter", "HTTP responses by status class.", &by_class);
    let writer = state.commands.writer();
    let stats = writer.stats();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    metric("licensd_events_appended_total", "counter", "Events committed to the log.", &[("", load(&stats.events))]);
    metric("licensd_append_batches_total", "counter", "Group-commit transactions.", &[("", load(&stats.batches))]);
    metric(
        "licensd_append_batches_failed_total",
        "counter",
        "Group-commit transactions that failed as a whole.",
        &[("", load(&stats.failed_batches))],
    );
    metric("licensd_write_queue_depth", "gauge", "Appends waiting for the writer.", &[("", writer.queued() as u64)]);
    metric(
        "licensd_hot_path_sql_reads_total",
        "counter",
        "SQL reads issued by /auth/validate and /auth/heartbeat (served from memory: stays 0 unless another process wrote the same license concurrently).",
        &[("", licensd_store::hot_path_sql_reads())],
    );
    metric(
        "licensd_auth_shed_total",
        "counter",
        "Validations and heartbeats refused with 429 because LICENSD_AUTH_MAX_IN_FLIGHT were being served.",
        &[("", state.auth.shed.load(Ordering::Relaxed))],
    );
    let position = state.hot.position();
    metric(
        "licensd_read_model_position",
        "gauge",
        "Global log position applied to the in-memory read model.",
        &[("", position.seq.max(0) as u64)],
    );
    metric(
        "licensd_licenses",
        "gauge",
        "Licenses in the in-memory read model.",
        &[("", state.hot.license_count() as u64)],
    );
    metric("licensd_apps", "gauge", "Apps in the in-memory read model.", &[("", state.hot.app_count() as u64)]);
    let live = &state.live;
    metric(
        "licensd_live_sessions",
        "gauge",
        "Live WebSocket sessions held (connected, or resumable after a drop).",
        &[("", live.sessions() as u64)],
    );
    metric(
        "licensd_live_authorized_sessions",
        "gauge",
        "Live sessions authorized by a license (seats taken).",
        &[("", live.authorized_sessions() as u64)],
    );
    metric(
        "licensd_live_pushes_total",
        "counter",
        "Panel events written to live sessions.",
        &[("", live.metrics.pushes())],
    );
    let (buckets, sum, count) = live.metrics.latency();
    let _ = writeln!(
        out,
        "# HELP licensd_live_push_latency_ms Event commit to panel-event frame written, in milliseconds.\n# TYPE licensd_live_push_latency_ms histogram"
    );
    for (bound, n) in buckets {
        let _ = writeln!(out, "licensd_live_push_latency_ms_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "licensd_live_push_latency_ms_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "licensd_live_push_latency_ms_sum {sum}\nlicensd_live_push_latency_ms_count {count}");
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let projections = licensd_projections::status::statuses();
    let per_projection = |value: fn(&licensd_projections::status::ProjectionStatus) -> u64| -> Vec<(String, u64)> {
        projections.iter().map(|p| (format!("{{projection=\"{}\"}}", p.name), value(p))).collect()
    };
    let skipped = per_projection(|p| p.skipped);
    metric(
        "licensd_events_skipped_total",
        "counter",
        "Events of types or streams a read model does not know (written by a later version), skipped.",
        &skipped.iter().map(|(l, v)| (l.as_str(), *v)).collect::<Vec<_>>(),
    );
    let failing = per_projection(|p| u64::from(p.failing.is_some()));
    metric(
        "licensd_projection_failing",
        "gauge",
        "1 while a read model's last step failed (see /healthz for the error).",
        &failing.iter().map(|(l, v)| (l.as_str(), *v)).collect::<Vec<_>>(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
