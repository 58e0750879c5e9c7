//! Trace spans exported over OTLP/HTTP (protobuf), on when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set (Spin's convention) or a Dapr `Configuration` sets `spec.tracing` (daprd's),
//! with a parent-based trace-id-ratio sampler at the configured rate. Off, nothing is
//! allocated or recorded: every entry point returns `None` at once. A [`SpanCx`] is a
//! started span with its context, which hands W3C `traceparent`/`tracestate` headers
//! on to the next hop.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider};

/// Where and how much to export.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// The OTLP/HTTP traces URL (`…/v1/traces`).
    pub endpoint: String,
    /// The share of new traces recorded (0–1); a sampled parent is always followed.
    pub sampling_rate: f64,
    /// `service.name` of the spans.
    pub service: String,
}

impl TraceConfig {
    /// From Spin's environment: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/traces`); `OTEL_TRACES_SAMPLER_ARG` as the
    /// rate (default 1); `OTEL_SERVICE_NAME` else `service`.
    pub fn from_env(service: &str) -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|e| format!("{}/v1/traces", e.trim_end_matches('/'))))?;
        let sampling_rate = var("OTEL_TRACES_SAMPLER_ARG").and_then(|v| v.parse().ok()).unwrap_or(1.0);
        Some(Self { endpoint, sampling_rate, service: var("OTEL_SERVICE_NAME").unwrap_or_else(|| service.to_string()) })
    }
}

struct Tracing {
    provider: SdkTracerProvider,
    tracer: opentelemetry_sdk::trace::SdkTracer,
}

static TRACING: OnceLock<Tracing> = OnceLock::new();

/// Starts exporting with `cfg` (the first call wins; later ones are ignored).
pub fn init(cfg: &TraceConfig) -> Result<(), String> {
    if TRACING.get().is_some() {
        return Ok(());
    }
    // The exporter's blocking HTTP client must be made (and later dropped) outside any
    // async runtime: its own thread, here; the batch processor's thread, later.
    let endpoint = cfg.endpoint.clone();
    let exporter = std::thread::spawn(move || {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint.clone())
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("the OTLP exporter for {endpoint}: {e}"))
    })
    .join()
    .map_err(|_| "the OTLP exporter could not be made".to_string())??;
    // Exported every 500 ms, so a trace shows up while one looks at it.
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(BatchConfigBuilder::default().with_scheduled_delay(Duration::from_millis(500)).build())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(cfg.sampling_rate.clamp(0.0, 1.0)))))
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(cfg.service.clone()).build())
        .build();
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "spindapr");
    let _ = TRACING.set(Tracing { provider, tracer });
    tracing::info!(endpoint = %cfg.endpoint, sampling_rate = cfg.sampling_rate, "exporting trace spans over OTLP");
    Ok(())
}

/// Whether spans are being made.
pub fn enabled() -> bool {
    TRACING.get().is_some()
}

/// Exports what is pending and stops (at process exit).
pub fn shutdown() {
    if let Some(t) = TRACING.get()
        && let Err(e) = t.provider.shutdown()
    {
        tracing::debug!("stopping the trace exporter: {e}");
    }
}

/// A started span and the context it makes current.
pub struct SpanCx {
    cx: Context,
}

/// How a span relates to its peer (OpenTelemetry's span kinds).
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Serving a request.
    Server,
    /// Making a request.
    Client,
    /// Handing a message to a broker.
    Producer,
    /// Handling a message from a broker.
    Consumer,
    /// Work inside the process.
    Internal,
}

impl From<Kind> for SpanKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Server => SpanKind::Server,
            Kind::Client => SpanKind::Client,
            Kind::Producer => SpanKind::Producer,
            Kind::Consumer => SpanKind::Consumer,
            Kind::Internal => SpanKind::Internal,
        }
    }
}

/// Starts a span; `from_*` take the name and attributes as a closure, called only when
/// spans are made, so with tracing off none of the caller's formatting is done.
fn start(name: String, kind: Kind, parent: &Context, attrs: Vec<KeyValue>) -> Option<SpanCx> {
    let t = TRACING.get()?;
    let span = t.tracer.span_builder(name).with_kind(kind.into()).with_attributes(attrs).start_with_context(&t.tracer, parent);
    Some(SpanCx { cx: parent.with_span(span) })
}

/// A span whose parent is the W3C context in `headers` (a new trace without one).
pub fn from_headers(kind: Kind, headers: &http::HeaderMap, describe: impl FnOnce() -> (String, Vec<KeyValue>)) -> Option<SpanCx> {
    TRACING.get()?;
    let parent = TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    let (name, attrs) = describe();
    start(name, kind, &parent, attrs)
}

/// A span whose parent is a `traceparent` value (e.g. a CloudEvent's).
pub fn from_traceparent(kind: Kind, traceparent: Option<&str>, describe: impl FnOnce() -> (String, Vec<KeyValue>)) -> Option<SpanCx> {
    TRACING.get()?;
    let mut h = http::HeaderMap::new();
    if let Some(v) = traceparent.and_then(|t| http::HeaderValue::from_str(t).ok()) {
        h.insert("traceparent", v);
    }
    from_headers(kind, &h, describe)
}

impl SpanCx {
    /// A child span of this one.
    pub fn child(&self, name: impl Into<String>, kind: Kind, attrs: Vec<KeyValue>) -> Option<SpanCx> {
        start(name.into(), kind, &self.cx, attrs)
    }

    /// Sets this span's context as `traceparent`/`tracestate` on `headers`.
    pub fn inject(&self, headers: &mut http::HeaderMap) {
        TraceContextPropagator::new().inject_context(&self.cx, &mut opentelemetry_http::HeaderInjector(headers));
    }

    /// This span's context as a `traceparent` value.
    pub fn traceparent(&self) -> String {
        let mut h = http::HeaderMap::new();
        self.inject(&mut h);
        h.get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    }

    /// Adds an attribute.
    pub fn set(&self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        self.cx.span().set_attribute(KeyValue::new(key, value));
    }

    /// Ends the span, as an error when `error` says why (later calls do nothing).
    pub fn end(&self, error: Option<String>) {
        let span = self.cx.span();
        if let Some(e) = error {
            span.set_status(Status::error(e));
        }
        span.end();
    }
}

/// `key = value` for span attributes.
pub fn kv(key: &'static str, value: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(key, value)
}
