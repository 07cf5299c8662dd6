//! What `serve` tells Prometheus (`GET /metrics`) and a load balancer
//! (`GET /healthz`): runs by connector and status, what they used, limits
//! hit, and how many runs are going and waiting.

use crate::meter::Usage;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabel {
    pub connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub connector: String,
    /// `succeeded`, or the error kind of the envelope (`timeout`, `memory_limit`, …).
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// The error kinds that are a host limit refusing a connector.
const LIMIT_KINDS: [&str; 16] = [
    "timeout",
    "memory_limit",
    "body_too_large",
    "request_budget",
    "too_many_redirects",
    "batch_too_large",
    "network_denied",
    "secret_denied",
    "stream_denied",
    "stream_limit",
    "rejected_limit",
    "invalid_result",
    "cancelled",
    "already_running",
    "lease_lost",
    "trap",
];

pub struct Metrics {
    registry: Registry,
    started: Family<ConnectorLabel, Counter>,
    finished: Family<RunLabels, Counter>,
    duration: Family<ConnectorLabel, Histogram>,
    peak_memory: Family<ConnectorLabel, Histogram>,
    records: Family<ConnectorLabel, Counter>,
    http_requests: Family<ConnectorLabel, Counter>,
    http_retries: Family<ConnectorLabel, Counter>,
    http_bytes: Family<ConnectorLabel, Counter>,
    cpu_seconds: Family<ConnectorLabel, Counter<f64>>,
    limit_hits: Family<KindLabel, Counter>,
    pub running: Gauge,
    pub waiting: Gauge,
    /// False once the process is shutting down: `/healthz` then answers 503.
    pub healthy: AtomicBool,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("nuntiq");
        let started = Family::<ConnectorLabel, Counter>::default();
        let finished = Family::<RunLabels, Counter>::default();
        let duration = Family::<ConnectorLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0])
        });
        let peak_memory = Family::<ConnectorLabel, Histogram>::new_with_constructor(|| {
            // 1 MiB to 4 GiB (the most a 32-bit guest can have), by fours.
            Histogram::new((0..7).map(|i| (1u64 << (20 + 2 * i)) as f64))
        });
        let records = Family::<ConnectorLabel, Counter>::default();
        let http_requests = Family::<ConnectorLabel, Counter>::default();
        let http_retries = Family::<ConnectorLabel, Counter>::default();
        let http_bytes = Family::<ConnectorLabel, Counter>::default();
        let cpu_seconds = Family::<ConnectorLabel, Counter<f64>>::default();
        let limit_hits = Family::<KindLabel, Counter>::default();
        let running = Gauge::default();
        let waiting = Gauge::default();
        registry.register("runs_started", "Runs started, by connector (job name)", started.clone());
        registry.register("runs", "Runs finished, by connector and status", finished.clone());
        registry.register("run_duration_seconds", "Wall time of finished runs", duration.clone());
        registry.register(
            "run_peak_memory_bytes",
            "Largest linear memory a run's connector had",
            peak_memory.clone(),
        );
        registry.register("records_written", "Suppliers inserted or updated", records.clone());
        registry.register("http_requests", "HTTP requests connectors sent", http_requests.clone());
        registry.register("http_retries", "HTTP retries the host made", http_retries.clone());
        registry.register("http_bytes_in", "HTTP response bytes read", http_bytes.clone());
        registry.register(
            "run_cpu_seconds",
            "CPU time of runs (connector and host calls)",
            cpu_seconds.clone(),
        );
        registry.register("limit_hits", "Runs ended by a host limit, by kind", limit_hits.clone());
        registry.register("runs_running", "Runs going now", running.clone());
        registry.register(
            "runs_waiting",
            "Runs due but waiting for a concurrency slot",
            waiting.clone(),
        );
        Arc::new(Self {
            registry,
            started,
            finished,
            duration,
            peak_memory,
            records,
            http_requests,
            http_retries,
            http_bytes,
            cpu_seconds,
            limit_hits,
            running,
            waiting,
            healthy: AtomicBool::new(true),
        })
    }

    pub fn run_started(&self, connector: &str) {
        self.started.get_or_create(&label(connector)).inc();
        self.running.inc();
    }

    /// A run ended with `status` (`succeeded` or an error kind) and `usage`.
    pub fn run_finished(&self, connector: &str, status: &str, usage: Option<&Usage>, wall_seconds: f64) {
        self.running.dec();
        let l = label(connector);
        self.finished
            .get_or_create(&RunLabels {
                connector: connector.to_owned(),
                status: status.to_owned(),
            })
            .inc();
        self.duration.get_or_create(&l).observe(wall_seconds);
        if let Some(u) = usage {
            self.peak_memory.get_or_create(&l).observe(u.peak_memory_bytes as f64);
            self.records.get_or_create(&l).inc_by(u.records_written);
            self.http_requests.get_or_create(&l).inc_by(u.http_requests);
            self.http_retries.get_or_create(&l).inc_by(u.http_retries);
            self.http_bytes.get_or_create(&l).inc_by(u.http_bytes_in);
            self.cpu_seconds.get_or_create(&l).inc_by(u.cpu_ms as f64 / 1000.0);
        }
        if LIMIT_KINDS.contains(&status) {
            self.limit_hits
                .get_or_create(&KindLabel {
                    kind: status.to_owned(),
                })
                .inc();
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn label(connector: &str) -> ConnectorLabel {
    ConnectorLabel {
        connector: connector.to_owned(),
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until the process ends, on a
/// thread of its own; returns the address it listens on (port 0 picks one).
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("nuntiq-metrics".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            let Ok(runtime) = runtime else { return };
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let metrics = metrics.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                            let metrics = metrics.clone();
                            async move { Ok::<_, std::convert::Infallible>(answer(&metrics, request.uri().path())) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        })?;
    Ok(bound)
}

fn answer(metrics: &Metrics, path: &str) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/healthz" if metrics.healthy.load(Ordering::Relaxed) => (StatusCode::OK, "text/plain", "ok\n".into()),
        "/healthz" => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "shutting down\n".into()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: the paths are /metrics and /healthz\n".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_limits_are_counted_by_connector_and_kind() {
        let m = Metrics::new();
        m.run_started("acme_eu");
        let usage = Usage {
            records_written: 42,
            http_requests: 3,
            ..Usage::default()
        };
        m.run_finished("acme_eu", "succeeded", Some(&usage), 0.3);
        m.run_started("hostile");
        m.run_finished("hostile", "memory_limit", None, 0.1);
        let text = m.encode();
        for expected in [
            r#"nuntiq_runs_total{connector="acme_eu",status="succeeded"} 1"#,
            r#"nuntiq_runs_total{connector="hostile",status="memory_limit"} 1"#,
            r#"nuntiq_records_written_total{connector="acme_eu"} 42"#,
            r#"nuntiq_http_requests_total{connector="acme_eu"} 3"#,
            r#"nuntiq_limit_hits_total{kind="memory_limit"} 1"#,
            "nuntiq_runs_running 0",
            r#"nuntiq_run_duration_seconds_count{connector="acme_eu"} 1"#,
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }

    /// Job names an attacker would pick: a trailing backslash, a quote that
    /// closes the value and forges a sample, a line break that starts one.
    const HOSTILE: [&str; 4] = [
        "trail\\",
        "x\"} 99999 # fake",
        "two\nnuntiq_runs_running 99999",
        "acme_eu",
    ];

    #[test]
    fn hostile_label_values_are_escaped_and_parse_back_exactly() {
        let m = Metrics::new();
        for (i, name) in HOSTILE.iter().enumerate() {
            m.run_started(name);
            let usage = Usage {
                records_written: i as u64 + 1,
                ..Usage::default()
            };
            m.run_finished(name, "succeeded", Some(&usage), 0.1);
        }
        let text = m.encode();
        // A real OpenMetrics parser (the format /metrics serves): one bad
        // value would fail the whole scrape.
        let exposition = openmetrics_parser::openmetrics::parse_openmetrics(&text)
            .unwrap_or_else(|e| panic!("the exposition does not parse ({e}):\n{text}"));
        let value = |v: &openmetrics_parser::OpenMetricsValue| match v {
            openmetrics_parser::OpenMetricsValue::Counter(c) => c.value.as_f64(),
            openmetrics_parser::OpenMetricsValue::Gauge(g) => g.as_f64(),
            _ => f64::NAN,
        };
        let records = &exposition.families["nuntiq_records_written"];
        let mut seen: Vec<(String, f64)> = records
            .iter_samples()
            .map(|s| {
                let labels = s.get_labelset().unwrap();
                (labels.get_label_value("connector").unwrap().to_owned(), value(&s.value))
            })
            .collect();
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        let mut expected: Vec<(String, f64)> = HOSTILE
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), i as f64 + 1.0))
            .collect();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(seen, expected, "{text}");
        // Nothing forged: the families are ours and no sample says 99999.
        let running = &exposition.families["nuntiq_runs_running"];
        assert_eq!(running.iter_samples().map(|s| value(&s.value)).sum::<f64>(), 0.0);
        for (name, family) in &exposition.families {
            assert!(name.starts_with("nuntiq_"), "{name}:\n{text}");
            for sample in family.iter_samples() {
                assert_ne!(value(&sample.value), 99999.0, "{name}:\n{text}");
            }
        }
    }
}
