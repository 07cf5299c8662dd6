//! What `serve` tells Prometheus (`GET /metrics`) and a load balancer
//! (`GET /healthz`: alive; `GET /readyz`: alive and its database answers):
//! runs by connector and status, what they used, limits hit, how many runs
//! are going and waiting, how each due slot ended, per-job lag and last
//! success, store errors, build and process figures.

use crate::meter::Usage;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
pub struct SlotLabels {
    pub job: String,
    /// `succeeded`, a failure kind, `missed` or `skipped`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CustomerLabels {
    /// The settings' `customer_number`: one series per customer and status.
    pub customer: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    /// What the scheduler asked the store: `claim`, `record`, `renew`, `finish`, `ping`.
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    contracts: String,
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

/// The scheduler's store operations, as `nuntiq_store_errors_total` labels them.
const STORE_OPERATIONS: [&str; 5] = ["claim", "record", "renew", "finish", "ping"];

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
    slots: Family<SlotLabels, Counter>,
    last_success: Family<JobLabel, Gauge<f64, AtomicU64>>,
    lag: Family<JobLabel, Gauge<f64, AtomicU64>>,
    taken_over: Family<JobLabel, Counter>,
    store_errors: Family<OperationLabel, Counter>,
    customer_runs: Family<CustomerLabels, Counter>,
    /// Streams whose status is `running` with an expired lease: a run that
    /// died without its host noticing (the next run takes the stream over).
    pub stale_streams: Gauge,
    resident_memory: Gauge,
    open_fds: Gauge,
    pub running: Gauge,
    pub waiting: Gauge,
    /// False once the process is shutting down: `/healthz` then answers 503.
    pub healthy: AtomicBool,
    /// False while the database does not answer: `/readyz` then answers 503.
    pub database_answers: AtomicBool,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        // Process metrics keep their conventional names (no prefix), beside ours.
        let mut root = Registry::default();
        let resident_memory = Gauge::default();
        let open_fds = Gauge::default();
        root.register(
            "process_resident_memory_bytes",
            "Resident memory of this process (from /proc/self/statm)",
            resident_memory.clone(),
        );
        root.register(
            "process_open_fds",
            "Open file descriptors of this process (from /proc/self/fd)",
            open_fds.clone(),
        );
        let registry = root.sub_registry_with_prefix("nuntiq");
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
        let slots = Family::<SlotLabels, Counter>::default();
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
        registry.register(
            "slots",
            "Due slots this host recorded an outcome for, by job and outcome (succeeded, a failure kind, missed, \
             skipped)",
            slots.clone(),
        );
        registry.register("runs_running", "Runs going now", running.clone());
        let last_success = Family::<JobLabel, Gauge<f64, AtomicU64>>::default();
        let lag = Family::<JobLabel, Gauge<f64, AtomicU64>>::default();
        let taken_over = Family::<JobLabel, Counter>::default();
        let store_errors = Family::<OperationLabel, Counter>::default();
        let customer_runs = Family::<CustomerLabels, Counter>::default();
        let stale_streams = Gauge::default();
        registry.register(
            "job_last_success_timestamp_seconds",
            "When the job's last successful run on this host ended (Unix time)",
            last_success.clone(),
        );
        registry.register(
            "job_lag_seconds",
            "How late the job's latest due slot started, or, while it waits, how long it has waited",
            lag.clone(),
        );
        registry.register(
            "slots_taken_over",
            "Slots this host took over from a host whose lease expired",
            taken_over.clone(),
        );
        registry.register(
            "store_errors",
            "Store operations of the scheduler that failed, by operation",
            store_errors.clone(),
        );
        registry.register(
            "customer_runs",
            "Runs finished, by customer_number and status (one series per customer and status)",
            customer_runs.clone(),
        );
        registry.register(
            "streams_stale_running",
            "Streams marked running whose lease expired (a run died unnoticed)",
            stale_streams.clone(),
        );
        registry.register(
            "build",
            "This host's version and the contract versions it runs",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                contracts: crate::plugin::Contract::all_runnable().join(","),
            }),
        );
        registry.register(
            "runs_waiting",
            "Runs due but waiting for a concurrency slot",
            waiting.clone(),
        );
        // Counters that alerts take a rate of exist from the start, at 0.
        for kind in LIMIT_KINDS {
            let _ = limit_hits.get_or_create(&KindLabel { kind: kind.to_owned() });
        }
        for operation in STORE_OPERATIONS {
            let _ = store_errors.get_or_create(&OperationLabel {
                operation: operation.to_owned(),
            });
        }
        Arc::new(Self {
            registry: root,
            last_success,
            lag,
            taken_over,
            store_errors,
            customer_runs,
            stale_streams,
            resident_memory,
            open_fds,
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
            slots,
            running,
            waiting,
            healthy: AtomicBool::new(true),
            database_answers: AtomicBool::new(true),
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

    /// This host recorded how a due slot of `job` ended.
    pub fn slot_ended(&self, job: &str, outcome: &str) {
        self.slots
            .get_or_create(&SlotLabels {
                job: job.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A run of `job` for `customer` ended with `status`.
    pub fn job_ended(&self, job: &str, customer: &str, status: &str) {
        if status == "succeeded" {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.last_success.get_or_create(&job_label(job)).set(now);
        }
        self.customer_runs
            .get_or_create(&CustomerLabels {
                customer: customer.to_owned(),
                status: status.to_owned(),
            })
            .inc();
    }

    /// How late `job`'s due slot started, or how long it has waited so far.
    pub fn lag(&self, job: &str, seconds: f64) {
        self.lag.get_or_create(&job_label(job)).set(seconds.max(0.0));
    }

    /// The jobs this process schedules: their per-job counters exist from the start, at 0.
    pub fn jobs<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for job in names {
            let _ = self.taken_over.get_or_create(&job_label(job));
        }
    }

    pub fn taken_over(&self, job: &str) {
        self.taken_over.get_or_create(&job_label(job)).inc();
    }

    pub fn store_error(&self, operation: &str) {
        self.store_errors
            .get_or_create(&OperationLabel {
                operation: operation.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        self.sample_process();
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Metrics {
    /// Reads this process's resident memory and open descriptors (Linux /proc;
    /// elsewhere they stay 0).
    fn sample_process(&self) {
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm")
            && let Some(pages) = statm.split_whitespace().nth(1).and_then(|p| p.parse::<i64>().ok())
        {
            // SAFETY: sysconf reads a constant.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as i64;
            self.resident_memory.set(pages * page);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle being read is one of them.
            self.open_fds.set(fds.count() as i64 - 1);
        }
    }
}

fn job_label(job: &str) -> JobLabel {
    JobLabel { job: job.to_owned() }
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
        "/readyz" if !metrics.healthy.load(Ordering::Relaxed) => {
            (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "shutting down\n".into())
        }
        "/readyz" if !metrics.database_answers.load(Ordering::Relaxed) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "the database does not answer\n".into(),
        ),
        "/readyz" => (StatusCode::OK, "text/plain", "ready\n".into()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: the paths are /metrics, /healthz and /readyz\n".into(),
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
        m.slot_ended("acme_eu", "succeeded");
        m.slot_ended("hostile", "missed");
        m.slot_ended("hostile", "missed");
        m.job_ended("acme_eu", "10000001", "succeeded");
        m.taken_over("acme_eu");
        m.store_error("claim");
        let text = m.encode();
        for expected in [
            r#"nuntiq_runs_total{connector="acme_eu",status="succeeded"} 1"#,
            r#"nuntiq_runs_total{connector="hostile",status="memory_limit"} 1"#,
            r#"nuntiq_records_written_total{connector="acme_eu"} 42"#,
            r#"nuntiq_http_requests_total{connector="acme_eu"} 3"#,
            r#"nuntiq_limit_hits_total{kind="memory_limit"} 1"#,
            "nuntiq_runs_running 0",
            r#"nuntiq_slots_total{job="acme_eu",outcome="succeeded"} 1"#,
            r#"nuntiq_slots_total{job="hostile",outcome="missed"} 2"#,
            r#"nuntiq_customer_runs_total{customer="10000001",status="succeeded"} 1"#,
            r#"nuntiq_slots_taken_over_total{job="acme_eu"} 1"#,
            r#"nuntiq_store_errors_total{operation="claim"} 1"#,
            "nuntiq_job_last_success_timestamp_seconds{job=\"acme_eu\"} 1",
            "nuntiq_build_info{version=",
            "process_open_fds ",
            "process_resident_memory_bytes ",
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
            assert!(
                name.starts_with("nuntiq_") || name.starts_with("process_"),
                "{name}:\n{text}"
            );
            for sample in family.iter_samples() {
                assert_ne!(value(&sample.value), 99999.0, "{name}:\n{text}");
            }
        }
    }
}
