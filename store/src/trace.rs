//! Spans for the steps inside a request (event-log reads and appends, SQL read-model reads,
//! signing), so an exported trace shows where a request's time went. A step span exists only
//! inside a request's span: outside one (workers, projections, start-up) it would be a root of
//! its own and flood the exporter, and with trace export off a step costs one check of the
//! current span. Exported under the request spans' target (see `src/main.rs`).

/// A child span of the current request's span named `name` (`None`-span outside a request).
pub fn step(name: &'static str) -> tracing::Span {
    if tracing::Span::current().is_none() {
        return tracing::Span::none();
    }
    tracing::info_span!(target: "licensd::request", "step", otel.name = name, otel.kind = "internal")
}
