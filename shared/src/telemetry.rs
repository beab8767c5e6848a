//! OpenTelemetry traces over OTLP/gRPC (`--otlp-endpoint`, off by
//! default), and the W3C trace context (`traceparent`) on gRPC calls, so
//! one operation is one trace across the CLI, the node that took the call,
//! the leader and the host that acts on it. Both binaries use this module:
//! the CLI's calls carry its span's context; a daemon continues the trace
//! of each call that carries one, and passes it on (forwarded calls, the
//! command it proposes, and from there to the agent that starts a VM).

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tonic::codegen::http::HeaderMap;
use tonic::metadata::{MetadataKey, MetadataMap};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";
/// How often finished spans are sent (the SDK's default is 5 s).
const EXPORT_EVERY: Duration = Duration::from_millis(500);
/// Spans held for export at most; past it new spans are dropped (and the
/// SDK counts them), never blocking the code that made them.
const MAX_QUEUED_SPANS: usize = 8192;
/// Longest one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether this process exports traces: without it, calls carry no
/// context and no work is done for one.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// An exporter that could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("--otlp-endpoint {endpoint}: {message}")]
pub struct TelemetryError {
    endpoint: String,
    message: String,
}

/// The running exporter; [`Telemetry::shutdown`] sends what is queued.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Sends the spans still queued and stops exporting (at exit).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "flushing traces at exit failed");
        }
    }
}

/// The `tracing` layer that turns spans into OpenTelemetry spans sent to
/// `endpoint` (`http://HOST:4317`), as `service` (`blixard`, `blixardd`)
/// with `instance` (the node id) as `service.instance.id`. Must be called
/// inside a Tokio runtime (the exporter's channel lives there).
pub fn layer<S>(
    endpoint: &str,
    service: &'static str,
    instance: String,
) -> Result<
    (
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
        Telemetry,
    ),
    TelemetryError,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let err = |message: String| TelemetryError {
        endpoint: endpoint.to_string(),
        message,
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(err("must be a URL such as http://127.0.0.1:4317".into()));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| err(e.to_string()))?;
    let batches = BatchConfigBuilder::default()
        .with_scheduled_delay(EXPORT_EVERY)
        .with_max_queue_size(MAX_QUEUED_SPANS)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batches)
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.instance.id", instance))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_span_processor(processor)
        .build();
    let tracer = provider.tracer(service);
    ENABLED.store(true, Ordering::Relaxed);
    Ok((
        tracing_opentelemetry::layer().with_tracer(tracer),
        Telemetry { provider },
    ))
}

/// Whether this process exports traces.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(key.as_bytes()), value.parse()) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct TextExtractor<'a>(&'a str);

impl Extractor for TextExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// Adds the current span's trace context to an outgoing call.
pub fn inject_current(metadata: &mut MetadataMap) {
    if !enabled() {
        return;
    }
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
}

/// The current span's `traceparent`, to carry in data (a proposed
/// command) rather than a call; `None` when not tracing.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let mut metadata = MetadataMap::new();
    inject_current(&mut metadata);
    metadata
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Makes `span` continue the trace of an incoming call's headers, if they
/// carry one; whether they did.
pub fn continue_from_headers(span: &tracing::Span, headers: &HeaderMap) -> bool {
    if !enabled() || !headers.contains_key(TRACEPARENT) {
        return false;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    span.set_parent(cx).is_ok()
}

/// Makes `span` continue the trace named by a stored `traceparent`.
pub fn continue_from(span: &tracing::Span, traceparent: &str) -> bool {
    if !enabled() || traceparent.is_empty() {
        return false;
    }
    let cx = TraceContextPropagator::new().extract(&TextExtractor(traceparent));
    span.set_parent(cx).is_ok()
}
