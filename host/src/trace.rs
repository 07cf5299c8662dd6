//! Traces: each run's trace id (its envelope and its `runs` rows carry it)
//! and, with `--otlp-endpoint`, its spans sent over OTLP/HTTP (protobuf).
//!
//! The spans go through a bounded batch exporter on its own thread: a run
//! only queues them, and when the queue is full or the endpoint is down they
//! are dropped, never waited for. Only the host's own spans and events are
//! exported (target `nuntiq…`), with fields its code redacted where it built them.

use crate::log::TARGET;
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// How long one export may take; the same bounds the flush at exit.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// Spans waiting to be sent at most; more are dropped.
const MAX_QUEUED_SPANS: usize = 8192;

struct Export {
    provider: SdkTracerProvider,
    tracer: opentelemetry_sdk::trace::Tracer,
}

static EXPORT: OnceLock<Export> = OnceLock::new();

/// Checks `--otlp-endpoint`: an http(s) URL; a bare origin gets the OTLP
/// traces path, `/v1/traces`.
pub fn parse_endpoint(text: &str) -> Result<url::Url, String> {
    let mut url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{text:?} is not an http(s) URL; give the collector's OTLP/HTTP address, e.g. http://127.0.0.1:4318"
        ));
    }
    if url.path() == "/" || url.path().is_empty() {
        url.set_path("/v1/traces");
    }
    Ok(url)
}

/// Sends every run's spans from now on to `endpoint` (call before any log
/// is made, outside any async runtime).
pub fn export_to(endpoint: &url::Url) -> Result<(), String> {
    // No proxy from the environment: the operator named the collector.
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .connect_timeout(EXPORT_TIMEOUT)
        .timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("--otlp-endpoint: the HTTP client could not start: {e}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(endpoint.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
    let exporter = Reported {
        inner: exporter,
        endpoint: endpoint.to_string(),
        failed: AtomicBool::new(false),
    };
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(MAX_QUEUED_SPANS)
                .with_scheduled_delay(Duration::from_millis(500))
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("nuntiq-host")
                .build(),
        )
        .build();
    let tracer = provider.tracer("nuntiq-host");
    let _ = EXPORT.set(Export { provider, tracer });
    Ok(())
}

/// The layer that hands the host's spans to the exporter, if spans are exported.
pub fn exporting_layer<S>() -> Option<impl Layer<S>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let export = EXPORT.get()?;
    let ours = tracing_subscriber::filter::filter_fn(|meta| meta.target().starts_with(TARGET));
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(export.tracer.clone())
            .with_filter(ours),
    )
}

/// Sends what is still queued (waiting at most the export timeout) and stops
/// exporting. Called once, as the process ends.
pub fn flush() {
    if let Some(export) = EXPORT.get() {
        let _ = export.provider.shutdown_with_timeout(EXPORT_TIMEOUT * 2);
    }
}

/// The trace id of `span`, a run's root span: 32 lowercase hex digits
/// (W3C trace context). The exported trace's when spans are exported, else
/// a fresh one, so runs are told apart either way.
pub fn trace_id(span: &tracing::Span) -> String {
    if EXPORT.get().is_some() {
        let id = span.context().span().span_context().trace_id();
        if id != TraceId::INVALID {
            return id.to_string();
        }
    }
    uuid::Uuid::new_v4().simple().to_string()
}

/// The OTLP exporter, saying once (at warn) that the endpoint could not be
/// reached: spans are dropped then, and runs go on.
#[derive(Debug)]
struct Reported {
    inner: opentelemetry_otlp::SpanExporter,
    endpoint: String,
    failed: AtomicBool,
}

impl SpanExporter for Reported {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        if let Err(e) = &result
            && !self.failed.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                target: TARGET,
                "Spans could not be sent to --otlp-endpoint {}: {e}; spans are dropped while it fails, \
                 runs go on (said once)",
                self.endpoint
            );
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}
