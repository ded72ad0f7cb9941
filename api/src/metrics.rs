//! Prometheus text exposition, written by hand: counters, gauges and histograms; and the
//! access log, written by the same middleware that times each request.

use crate::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use licensd_commands::histogram::{Histogram, SECONDS};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Metrics another part of the process renders (the workers': webhooks, commerce, snapshots),
/// appended to `/metrics`. The API crate cannot see the workers; the binary wires them here.
pub type ExtraMetrics = Arc<dyn Fn(&mut String) + Send + Sync>;

#[derive(Default)]
pub struct Metrics {
    /// Responses by status class: 1xx..5xx.
    responses: [AtomicU64; 5],
    /// Request durations by route template and status class. Entries are only ever added (one
    /// per route and class, a bounded set: templates, never raw paths), never removed.
    durations: DashMap<(&'static str, u8), Histogram>,
    /// Route templates, interned: each distinct template is leaked once (they are the router's
    /// own, a fixed set).
    routes: DashMap<String, &'static str>,
    extra: OnceLock<ExtraMetrics>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("routes", &self.routes.len()).finish_non_exhaustive()
    }
}

impl Metrics {
    /// Sets the renderer of the metrics the API crate cannot see (once; later calls are ignored).
    pub fn set_extra(&self, extra: ExtraMetrics) {
        let _ = self.extra.set(extra);
    }

    fn route(&self, template: &str) -> &'static str {
        if let Some(interned) = self.routes.get(template) {
            return *interned;
        }
        *self.routes.entry(template.to_string()).or_insert_with(|| Box::leak(template.to_string().into_boxed_str()))
    }

    /// Records one answered request.
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        let class = (status / 100).clamp(1, 5) as u8;
        self.responses[usize::from(class) - 1].fetch_add(1, Ordering::Relaxed);
        let route = self.route(route);
        if let Some(histogram) = self.durations.get(&(route, class)) {
            histogram.observe(seconds);
            return;
        }
        self.durations.entry((route, class)).or_insert_with(|| Histogram::new(SECONDS)).observe(seconds);
    }

    fn render_durations(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP licensd_http_request_duration_seconds Time from a request's arrival to its response's headers, by route template and status class.\n# TYPE licensd_http_request_duration_seconds histogram"
        );
        let mut keys: Vec<(&'static str, u8)> = self.durations.iter().map(|e| *e.key()).collect();
        keys.sort();
        for key @ (route, class) in keys {
            if let Some(histogram) = self.durations.get(&key) {
                let labels = format!("route=\"{}\",class=\"{class}xx\"", escape_label(route));
                histogram.render(out, "licensd_http_request_duration_seconds", &labels);
            }
        }
    }
}

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Runs inside the router, after a route matched: carries the route's template out to
/// [`count_requests`] (which runs outside the router, where the template is not known), and
/// wraps the request in its trace span when spans are on (the span's name needs the template).
pub async fn carry_route(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let template = request.extensions().get::<MatchedPath>().cloned();
    let span = match &template {
        Some(template) if state.config.request_spans => request_span(request.method(), template.as_str()),
        _ => tracing::Span::none(),
    };
    let mut response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    if let Some(template) = template {
        response.extensions_mut().insert(template);
    }
    response
}

/// Times every request, counts it under its route template and status class, and writes one
/// access-log record: method, route template (never the raw path, which can hold a license key),
/// status, duration and client IP. No header, query or body is logged.
pub async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let client = crate::client_ip::of(request.extensions());
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    let route = response.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str());
    let status = response.status().as_u16();
    state.metrics.observe(route, status, seconds);
    if state.config.access_log {
        tracing::info!(
            target: "licensd::access",
            method = %method,
            route,
            status,
            duration_ms = seconds * 1000.0,
            client_ip = %client.map_or_else(|| "unknown".to_string(), |ip| ip.to_string()),
            "request"
        );
    }
    response
}

/// A request's span for trace export, with OpenTelemetry's HTTP server names; the status is
/// recorded once known. Named by the route template, never the raw path (it can hold a key).
fn request_span(method: &axum::http::Method, route: &str) -> tracing::Span {
    tracing::info_span!(
        target: "licensd::request",
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    )
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
    let head = state.hot.position().seq.max(0) as u64;
    let lag_events = per_projection_owned(&projections, |p| head.saturating_sub(p.position.seq.max(0) as u64));
    metric(
        "licensd_projection_lag_events",
        "gauge",
        "Events in the log (as far as the in-memory model has read it) that a read model has not applied yet.",
        &lag_events.iter().map(|(l, v)| (l.as_str(), *v)).collect::<Vec<_>>(),
    );
    let lag_seconds = per_projection_owned(&projections, |p| match (&p.failing, p.caught_up_at) {
        (None, Some(_)) => 0,
        (_, Some(at)) => at.elapsed().as_secs(),
        (_, None) => 0,
    });
    metric(
        "licensd_projection_lag_seconds",
        "gauge",
        "Seconds since a read model last reached the end of the log (0 while it is there).",
        &lag_seconds.iter().map(|(l, v)| (l.as_str(), *v)).collect::<Vec<_>>(),
    );
    let roles: Vec<(String, u64)> = licensd_store::leases_held()
        .into_iter()
        .map(|(role, held)| (format!("{{role=\"{role}\"}}"), u64::from(held)))
        .collect();
    metric(
        "licensd_lease_held",
        "gauge",
        "1 while this node holds a single-owner role's lease (SQL read models, webhooks, commerce) and runs it.",
        &roles.iter().map(|(l, v)| (l.as_str(), *v)).collect::<Vec<_>>(),
    );
    state.metrics.render_durations(&mut out);
    let _ = writeln!(
        out,
        "# HELP licensd_append_batch_events Events per group-commit transaction.\n# TYPE licensd_append_batch_events histogram"
    );
    stats.batch_events.render(&mut out, "licensd_append_batch_events", "");
    let _ = writeln!(
        out,
        "# HELP licensd_append_commit_seconds Time of one group-commit transaction: its inserts, its commit and the commit's fsync.\n# TYPE licensd_append_commit_seconds histogram"
    );
    stats.commit_seconds.render(&mut out, "licensd_append_commit_seconds", "");
    let _ = writeln!(
        out,
        "# HELP licensd_writer_fsync_seconds Time of the COMMIT of one group-commit transaction alone: on SQLite the WAL write and its fsync, on Postgres the commit round trip with the server's WAL flush.\n# TYPE licensd_writer_fsync_seconds histogram"
    );
    stats.sync_seconds.render(&mut out, "licensd_writer_fsync_seconds", "");
    licensd_workers::metrics::render(&mut out);
    licensd_workers::kafka::render(&mut out);
    if let Some(extra) = state.metrics.extra.get() {
        extra(&mut out);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

fn per_projection_owned(
    projections: &[licensd_projections::status::ProjectionStatus],
    value: impl Fn(&licensd_projections::status::ProjectionStatus) -> u64,
) -> Vec<(String, u64)> {
    projections.iter().map(|p| (format!("{{projection=\"{}\"}}", p.name), value(p))).collect()
}

#[cfg(test)]
mod tests {
    use super::Metrics;
    use std::sync::Arc;

    /// Threads observing the same new routes at once: each route and class gets one histogram
    /// and no observation is lost to a histogram created twice.
    #[test]
    fn concurrent_first_observations_of_a_route_are_all_counted() {
        let metrics = Arc::new(Metrics::default());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000u32 {
                        let route = format!("/r/{}", i % 5);
                        metrics.observe(&route, if (i + t) % 2 == 0 { 200 } else { 404 }, 0.001);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(metrics.durations.len(), 10, "5 routes x 2 classes");
        assert_eq!(metrics.routes.len(), 5, "each template interned once");
        let total: u64 = metrics.durations.iter().map(|h| h.count()).sum();
        assert_eq!(total, 16_000);
        let mut page = String::new();
        metrics.render_durations(&mut page);
        assert!(page.contains("licensd_http_request_duration_seconds_count{route=\"/r/0\",class=\"2xx\"}"));
    }
}
