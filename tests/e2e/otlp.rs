//! Spans over OTLP/HTTP: a local receiver gets an Acme run's spans, linked
//! run → HTTP attempts, store batches, delta begin/complete, under the trace
//! id the envelope and the run history show, with no secret in any attribute.

use crate::MOCK;
use nuntiq_e2e::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A tiny OTLP/HTTP receiver on 127.0.0.1: keeps each POST's path and body, answers 200.
struct Receiver {
    addr: String,
    posts: Arc<Mutex<Vec<(String, Vec<u8>)>>>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let posts: Arc<Mutex<Vec<(String, Vec<u8>)>>> = Arc::default();
        let kept = posts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || serve_connection(stream, &kept));
            }
        });
        Self { addr, posts }
    }

    /// Every span received, decoded.
    fn spans(&self) -> Vec<Span> {
        let posts = self.posts.lock().unwrap();
        let mut spans = Vec::new();
        for (path, body) in posts.iter() {
            assert_eq!(path, "/v1/traces", "spans go to the OTLP traces path");
            let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("an OTLP protobuf body");
            for resource in request.resource_spans {
                for scope in resource.scope_spans {
                    spans.extend(scope.spans);
                }
            }
        }
        spans
    }
}

/// Reads HTTP/1.1 requests off one connection (keep-alive) until it closes.
fn serve_connection(stream: TcpStream, posts: &Mutex<Vec<(String, Vec<u8>)>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        posts.lock().unwrap().push((path, body));
        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).map(|kv| text(&kv.value))
}

#[test]
fn an_acme_runs_spans_reach_an_otlp_receiver_linked_and_without_secrets() {
    let receiver = Receiver::start();
    let mock = Mock::start(MOCK, 650);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let endpoint = format!("http://{}", receiver.addr);
    let run = run_acme(
        &mock,
        &settings,
        &work.db(),
        &["--otlp-endpoint", &endpoint, "--log-format", "json"],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.envelope, run.stderr);
    let trace_id = run.envelope["trace_id"].as_str().expect("the envelope names its trace").to_owned();
    assert!(
        trace_id.len() == 32 && trace_id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "a W3C trace id: {trace_id}"
    );
    assert_ne!(trace_id, "0".repeat(32));

    // Flushed before the process ended: everything is there already.
    let spans = receiver.spans();
    let by_id: HashMap<Vec<u8>, &Span> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let roots: Vec<&Span> = spans.iter().filter(|s| s.parent_span_id.is_empty()).collect();
    assert_eq!(roots.len(), 1, "one root: {:?}", roots.iter().map(|s| &s.name).collect::<Vec<_>>());
    let root = roots[0];
    assert_eq!(root.name, "run");
    assert_eq!(hex(&root.trace_id), trace_id, "the envelope's trace id is the exported trace's");
    assert_eq!(attribute(&root.attributes, "customer").as_deref(), Some("10000001"));
    assert_eq!(attribute(&root.attributes, "trace_id").as_deref(), Some(trace_id.as_str()));
    assert_eq!(attribute(&root.attributes, "plugin").as_deref(), Some("acme.wasm"));

    // Every span is in the run's trace and descends from the run.
    let descends_from_root = |span: &Span| {
        let mut at = span;
        for _ in 0..16 {
            if at.span_id == root.span_id {
                return true;
            }
            match by_id.get(&at.parent_span_id) {
                Some(parent) => at = parent,
                None => return false,
            }
        }
        false
    };
    for span in &spans {
        assert_eq!(hex(&span.trace_id), trace_id, "{} is in the run's trace", span.name);
        assert!(descends_from_root(span), "{} descends from the run", span.name);
    }
    let named = |name: &str| spans.iter().filter(|s| s.name == name).collect::<Vec<_>>();
    // 650 suppliers at 200 a page, most in the window: several pages, each an attempt.
    let http = named("http");
    assert!(http.len() >= 2, "HTTP attempts: {}", http.len());
    for attempt in &http {
        assert_eq!(attribute(&attempt.attributes, "method").as_deref(), Some("GET"));
        assert_eq!(attribute(&attempt.attributes, "host").as_deref(), Some("127.0.0.1"));
        assert_eq!(attribute(&attempt.attributes, "status").as_deref(), Some("200"));
        for kv in &attempt.attributes {
            let value = text(&kv.value);
            assert!(
                !value.contains("/v2/") && !value.contains('?'),
                "no path or query on an attempt: {}={value}",
                kv.key
            );
        }
    }
    let begins = named("delta_begin");
    let completes = named("delta_complete");
    assert_eq!((begins.len(), completes.len()), (1, 1));
    assert_eq!(
        attribute(&begins[0].attributes, "stream").as_deref(),
        Some("acme_eu/suppliers")
    );
    let batches = named("store_batch");
    assert!(!batches.is_empty(), "store batches");
    let rows: i64 = batches
        .iter()
        .map(|b| attribute(&b.attributes, "rows").unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(rows, run.envelope["usage"]["records_written"].as_i64().unwrap(), "every row written is in a batch");

    // No secret in any attribute, span or event.
    for span in &spans {
        let events = span.events.iter().flat_map(|e| e.attributes.iter());
        for kv in span.attributes.iter().chain(events) {
            assert!(!text(&kv.value).contains(TOKEN) && !kv.key.contains(TOKEN), "{}: {kv:?}", span.name);
        }
    }

    // The run history has the same trace id.
    let (code, out, err) = host_output(&["runs", "--json", "--db", work.db().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let runs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(runs[0]["trace_id"], trace_id.as_str(), "{out}");

    // Every log line of the run names its customer.
    let lines = run.json_logs();
    assert!(lines.len() >= 3);
    for line in &lines {
        assert_eq!(line["customer"], "10000001", "{line}");
    }
}

#[test]
fn an_otlp_endpoint_that_is_down_never_fails_a_run() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mock = Mock::start(MOCK, 300);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let endpoint = format!("http://127.0.0.1:{port}");
    let run = run_acme(&mock, &settings, &work.db(), &["--otlp-endpoint", &endpoint]);
    assert_eq!(run.code, 0, "{}\n{}", run.envelope, run.stderr);
    assert_eq!(run.envelope["success"], true);
    assert_eq!(run.envelope["trace_id"].as_str().map(str::len), Some(32));
    assert_eq!(
        run.stderr.matches("could not be sent to --otlp-endpoint").count(),
        1,
        "said once: {}",
        run.stderr
    );
}

#[test]
fn a_bad_otlp_endpoint_is_refused_before_anything_runs() {
    let mock = Mock::start(MOCK, 10);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let run = run_acme(&mock, &settings, &work.db(), &["--otlp-endpoint", "ftp://127.0.0.1:4318"]);
    assert_eq!(run.code, 2, "{}", run.envelope);
    assert_eq!(run.error_kind(), "invalid_arguments");
    assert!(run.error_message().contains("--otlp-endpoint"), "{}", run.envelope);
    assert!(!work.db().exists(), "nothing was written");
}

#[test]
fn serves_runs_each_reach_an_otlp_receiver_as_one_linked_trace_without_secrets() {
    use crate::serve::{Jobs, Serve, wait_until};
    use std::time::Duration;
    let receiver = Receiver::start();
    let mock = Mock::start(MOCK, 120);
    let work = Workdir::new();
    let mut jobs = Jobs::new();
    jobs.add(&mock, "acme_one", "acme", "10000001", "every = \"1s\"");
    jobs.add(&mock, "acme_two", "acme", "10000002", "every = \"1s\"");
    let file = jobs.write();
    let db = work.db();
    let endpoint = format!("http://{}", receiver.addr);
    let serve = Serve::start(
        &file,
        db.to_str().unwrap(),
        &["--otlp-endpoint", &endpoint, "--log-format", "json"],
    );
    let succeeded = || {
        if !db.exists() {
            return 0;
        }
        Db::open(&db)
            .try_rows("SELECT job_name FROM schedule_slot WHERE status = 'succeeded'")
            .map_or(0, |r| r.len())
    };
    wait_until("both jobs ran twice", Duration::from_secs(60), || succeeded() >= 4);
    let (code, log) = serve.stop();
    assert_eq!(code, 0, "{log}");
    // Every line of a run names its job's customer, not only its first.
    let mut of_runs = 0;
    for line in log.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
        let customer = match line["job"].as_str() {
            Some("acme_one") => "10000001",
            Some("acme_two") => "10000002",
            _ => continue,
        };
        assert_eq!(line["customer"], customer, "{line}");
        of_runs += 1;
    }
    assert!(of_runs >= 8, "{log}");

    // Flushed as serve ended: one trace per run, rooted at the run.
    let spans = receiver.spans();
    let by_id: HashMap<Vec<u8>, &Span> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let roots: Vec<&Span> = spans.iter().filter(|s| s.parent_span_id.is_empty()).collect();
    assert!(roots.len() >= 4, "a root per run: {}", roots.len());
    let mut traces: HashMap<Vec<u8>, &Span> = HashMap::new();
    for root in &roots {
        assert_eq!(root.name, "run", "only runs are roots");
        let job = attribute(&root.attributes, "job").unwrap_or_default();
        let customer = attribute(&root.attributes, "customer").unwrap_or_default();
        assert!(
            matches!(
                (job.as_str(), customer.as_str()),
                ("acme_one", "10000001") | ("acme_two", "10000002")
            ),
            "the run names its job and customer: {job} {customer}"
        );
        assert_eq!(
            attribute(&root.attributes, "trace_id").as_deref(),
            Some(hex(&root.trace_id).as_str())
        );
        assert!(traces.insert(root.trace_id.clone(), root).is_none(), "one root per trace");
    }
    // Every span descends, by its parent links, from its own trace's run.
    for span in &spans {
        let root = traces.get(&span.trace_id).unwrap_or_else(|| panic!("{} has a run", span.name));
        let mut at = span;
        let mut steps = 0;
        while at.span_id != root.span_id {
            let parent = by_id
                .get(&at.parent_span_id)
                .unwrap_or_else(|| panic!("{}'s parent was received", at.name));
            assert_eq!(parent.trace_id, span.trace_id, "a parent in the same trace");
            at = parent;
            steps += 1;
            assert!(steps < 16, "no cycle");
        }
    }
    // Each run that succeeded has its HTTP attempts, delta begin and complete
    // and store batch in its trace, under the trace id of its runs row.
    let (code, out, err) = host_output(&["runs", "--json", "--limit", "1000", "--db", db.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let runs: Vec<Value> = serde_json::from_str(&out).unwrap();
    let done: Vec<&Value> = runs.iter().filter(|r| r["status"] == "succeeded").collect();
    assert!(done.len() >= 4, "{out}");
    for run in done {
        let trace = run["trace_id"].as_str().unwrap();
        let (id, _) = traces
            .iter()
            .find(|(id, _)| hex(id) == trace)
            .unwrap_or_else(|| panic!("the runs row's trace {trace} was received"));
        let names: Vec<&str> = spans.iter().filter(|s| &s.trace_id == id).map(|s| s.name.as_str()).collect();
        for wanted in ["http", "delta_begin", "delta_complete", "store_batch"] {
            assert!(names.contains(&wanted), "{wanted} in {trace}: {names:?}");
        }
    }
    // No secret in any attribute, span or event.
    for span in &spans {
        let events = span.events.iter().flat_map(|e| e.attributes.iter());
        for kv in span.attributes.iter().chain(events) {
            assert!(!text(&kv.value).contains(TOKEN) && !kv.key.contains(TOKEN), "{}: {kv:?}", span.name);
        }
    }
}
