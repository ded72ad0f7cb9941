//! OpenTelemetry trace export, on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: every HTTP request becomes a server span
//! (method, route template, status; never the raw path, which can hold a license key), exported
//! over OTLP/HTTP with protobuf bodies to `<endpoint>/v1/traces` in batches. The exporter reads
//! the standard `OTEL_*` variables (headers, timeout, batch schedule, service name; the service
//! name defaults to `licensd`). gRPC export is not built in.

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use opentelemetry_sdk::Resource;
use tracing_subscriber::registry::LookupSpan;

const ENDPOINT_VARIABLES: [&str; 2] = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"];

/// Whether the environment asks for trace export.
pub fn configured() -> bool {
    ENDPOINT_VARIABLES.iter().any(|name| std::env::var(name).is_ok_and(|value| !value.trim().is_empty()))
}

/// The running exporter; [`Telemetry::shutdown`] sends the spans still queued.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("licensd: the last trace spans could not be exported: {e}");
        }
    }
}

/// The tracing layer exporting spans, and its exporter; `None` when no endpoint is configured.
/// Builds the HTTP client, so it runs before the async runtime exists.
pub fn layer<S>() -> anyhow::Result<Option<(tracing_opentelemetry::OpenTelemetryLayer<S, Tracer>, Telemetry)>>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    if !configured() {
        return Ok(None);
    }
    // The exporter's HTTP client brings no TLS crypto of its own (`https://` endpoints): the same
    // ring provider as the server's listener.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .context("cannot set up the OpenTelemetry trace exporter (OTEL_EXPORTER_OTLP_ENDPOINT)")?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("licensd");
    }
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    let tracer = provider.tracer("licensd");
    Ok(Some((tracing_opentelemetry::layer().with_tracer(tracer), Telemetry { provider })))
}
