//! OpenTelemetry traces (`telemetry.traces`), off unless an endpoint is configured.
//!
//! `tracing` spans of the target [`TARGET`] become OpenTelemetry spans (through
//! `tracing-opentelemetry`) and are exported in batches, over OTLP/HTTP with protobuf
//! bodies, by a task on the serve runtime. Only those spans reach the exporter: no log
//! event, no library's span; and the log lines never show them (see `cli::init_logging`).
//! Without an endpoint the exporting layer is not installed, so these spans are
//! disabled at their call sites and cost a branch.
//!
//! What is made: one `server` span per HTTP request of either listener ([`layer`]),
//! named `METHOD route`, with `http.request.method`, `http.route`,
//! `http.response.status_code` and `fedbroker.request_id` (the `X-Request-Id` of the
//! answer); `/token` adds `fedbroker.outcome`, `fedbroker.error` (the RFC error code),
//! `fedbroker.issuer` (the configured issuer's name) and `fedbroker.rule` (the deciding
//! rule's name). Children of a `/token` span: `verify` (with `fedbroker.issuer`),
//! `replay`, `sign` and `cloud` (with `fedbroker.cloud`), as the stage histograms of
//! `/metrics` time them. Nothing else of a request goes into a span: never a token, a
//! claim's value, a subject or a target.
//!
//! A request's W3C `traceparent` (and `tracestate`) is honoured: its span is a child of
//! the caller's, in the caller's trace, and the caller's sampled flag decides whether it
//! is kept (parent-based sampling); traces that start here are kept at
//! `telemetry.traces.sample_ratio`.

use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracerProvider};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{DEFAULT_SERVICE_NAME, TracesConfig};

/// The target of the spans that are exported, and of no other span or event.
pub const TARGET: &str = "fedbroker::trace";

/// Finished spans waiting for export, at most; beyond, new ones are dropped (and the SDK
/// says so once in the log).
const MAX_QUEUE: usize = 8192;
/// How often a batch leaves, at the latest.
const EXPORT_DELAY: Duration = Duration::from_secs(2);

/// Whether [`start`] succeeded in this process: the routers install [`layer`] only then,
/// so that without traces a request pays nothing for them.
static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether traces are exported by this process.
pub fn is_on() -> bool {
    STARTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The exporting pipeline; [`Traces::shutdown`] sends what is queued.
pub struct Traces {
    provider: SdkTracerProvider,
}

/// Start exporting to `config`'s endpoint. Must be called within the tokio runtime that
/// will run the exports (the batch task is spawned on it); returns the tracer for the
/// `tracing` layer.
pub fn start(config: &TracesConfig) -> Result<(Traces, opentelemetry_sdk::trace::Tracer), String> {
    // The broker's own client: the workspace's reqwest and rustls, no proxy from the
    // environment, no redirect (the headers may carry a key).
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("fedbroker/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("the OTLP HTTP client: {e}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.endpoint.as_str())
        .with_timeout(config.timeout)
        .with_headers(config.headers.clone().into_iter().collect())
        .build()
        .map_err(|e| format!("the OTLP exporter: {e}"))?;
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(MAX_QUEUE)
        .with_scheduled_delay(EXPORT_DELAY)
        .with_max_export_timeout(config.timeout)
        .build();
    let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
        .with_batch_config(batch)
        .build();
    // The SDK's resource (telemetry.sdk.*, OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME),
    // with the configured service name, else OTEL_SERVICE_NAME, else "fedbroker".
    let service_name = match &config.service_name {
        Some(name) => Some(name.clone()),
        None if std::env::var("OTEL_SERVICE_NAME").is_ok_and(|n| !n.trim().is_empty()) => None,
        None => Some(DEFAULT_SERVICE_NAME.to_owned()),
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if let Some(name) = service_name {
        resource = resource.with_service_name(name);
    }
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("fedbroker");
    STARTED.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok((Traces { provider }, tracer))
}

impl Traces {
    /// Export what is queued and stop. Blocks: call it outside the runtime's tasks,
    /// while the runtime still runs (its batch task does the sending). Bounded by
    /// `telemetry.traces.timeout` per batch.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "traces: the last spans may not have been exported");
        }
    }
}

/// Whether a span or event goes to the exporter: the spans of [`TARGET`] only.
pub fn exported(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.target() == TARGET
}

/// The middleware of both listeners when traces are on ([`is_on`]): one span per
/// request, in the caller's trace when it sent a `traceparent`. Inside the request id's
/// middleware (it reads the id).
pub async fn layer(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = req.method().clone();
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = route.as_deref(),
        http.response.status_code = Empty,
        fedbroker.request_id = Empty,
        fedbroker.outcome = Empty,
        fedbroker.error = Empty,
        fedbroker.issuer = Empty,
        fedbroker.rule = Empty,
    );
    if span.is_disabled() {
        return next.run(req).await;
    }
    if let Some(id) = req.extensions().get::<crate::request_id::RequestId>() {
        span.record("fedbroker.request_id", id.0.as_str());
    }
    let parent = TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(req.headers()));
    let _ = span.set_parent(parent);
    let resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status();
    // As i64: tracing-opentelemetry would write a u64 as a string.
    span.record("http.response.status_code", i64::from(status.as_u16()));
    // A server span is in error for 5xx answers only (the semantic conventions): a
    // refused exchange is the broker doing its job.
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    resp
}

/// Mark a span (declared with an `otel.status_code` field) as failed.
pub fn failed(span: &tracing::Span) {
    span.record("otel.status_code", "ERROR");
}
