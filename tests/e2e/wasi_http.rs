//! wasi:http outgoing requests: a standard HTTP client inside a connector
//! works, held to the same network policy, request budget and limits as the
//! `http` interface, recorded and replayed like it; a connector hoarding
//! wasi:http resources is cut off.

use crate::MOCK;
use crate::hostile::tail;
use nuntiq_e2e::*;
use serde_json::{Value, json};
use std::net::TcpListener;

const RSS_BOUND: u64 = 300 << 20;

struct Client {
    mock: Mock,
    work: Workdir,
}

impl Client {
    fn new() -> Self {
        Self {
            mock: Mock::start(MOCK, 300),
            work: Workdir::new(),
        }
    }

    fn args(&self, mode: &str, requests: Value, extra: &[&str]) -> Vec<String> {
        let mut settings = acme_settings(&self.mock.api_url(), "acme_eu");
        settings["config"]["mode"] = json!(mode);
        settings["config"]["requests"] = requests;
        let path = self.work.write_settings("client.json", &settings);
        let mut args = vec![
            "run-plugin".to_owned(),
            guest("wasi-http-client").display().to_string(),
            path.display().to_string(),
            "--db".into(),
            self.work.db().display().to_string(),
            "--allow-host".into(),
            self.mock.allow_host(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Runs the `fetch` mode and returns the run and its per-request results.
    fn fetch(&self, requests: Value, extra: &[&str]) -> (Run, Vec<Value>) {
        let run = nuntiq_host(self.args("fetch", requests, extra));
        assert_eq!(run.code, 0, "{}\n{}", run.envelope, tail(&run.stderr));
        let results = run.envelope["results"].as_array().expect("results").clone();
        (run, results)
    }

    fn page(&self, per_page: u32) -> String {
        format!("{}/suppliers?page=1&per_page={per_page}", self.mock.api_url())
    }

    fn supplier_requests(&self) -> usize {
        self.mock
            .requests()
            .iter()
            .filter(|r| r["path"] == "/v2/suppliers")
            .count()
    }
}

#[test]
fn a_standard_http_client_works_inside_a_connector() {
    let client = Client::new();
    let (run, results) = client.fetch(
        json!([
            {"url": client.page(50), "bearer_secret": "acme_token"},
            {"url": client.page(50)},
            {"url": client.page(50), "method": "POST", "body_bytes": 10_000, "bearer_secret": "acme_token"},
        ]),
        &[],
    );
    assert_eq!(results[0]["status"], 200, "{results:?}");
    assert!(results[0]["bytes"].as_u64().unwrap() > 50 * 100, "{results:?}");
    assert_eq!(results[1]["status"], 401, "no token, no data: {results:?}");
    // The mock has no POST route: the request and its body arrived, and the answer came back.
    assert_eq!(results[2]["status"], 404, "{results:?}");
    assert_eq!(client.supplier_requests(), 2, "{:?}", client.mock.requests());
    let usage = &run.envelope["usage"];
    assert_eq!(usage["http_requests"], 3, "{usage}");
    assert!(usage["http_bytes_in"].as_u64().unwrap() >= results[0]["bytes"].as_u64().unwrap());
}

#[test]
fn wasi_http_is_held_to_the_network_policy() {
    let client = Client::new();
    // A loopback port the operator did not allow, listening so a connection would show.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let port = other.local_addr().unwrap().port();
    let mock_port = client.mock.allow_host().rsplit(':').next().unwrap().to_owned();
    let (run, results) = client.fetch(
        json!([
            {"url": format!("http://127.0.0.1:{port}/steal")},
            // A name that resolves to loopback: only 127.0.0.1 itself is allowed.
            {"url": format!("http://localhost:{mock_port}/v2/suppliers")},
            {"url": format!("http://[::1]:{mock_port}/v2/suppliers")},
            {"url": format!("https://127.0.0.1:{port}/steal")},
        ]),
        &[],
    );
    for result in &results {
        assert_eq!(result["error"], "HttpRequestDenied", "{results:?}");
    }
    assert_eq!(results.len(), 4);
    assert!(other.accept().is_err(), "nothing connected to the other port");
    assert_eq!(client.supplier_requests(), 0);
    assert!(
        run.stderr.contains("wasi:http GET refused") && run.stderr.contains("--allow-host"),
        "the log says what was refused and how to allow it: {}",
        tail(&run.stderr)
    );
    assert_eq!(run.envelope["usage"]["http_requests"], 0);
}

#[test]
fn wasi_http_spends_the_same_request_budget() {
    let client = Client::new();
    let (run, results) = client.fetch(
        json!([{"url": client.page(10)}, {"url": client.page(10)}, {"url": client.page(10)}]),
        &["--max-requests", "2"],
    );
    assert_eq!(results[0]["status"], 401, "{results:?}");
    assert_eq!(results[1]["status"], 401, "{results:?}");
    assert_eq!(results[2]["error"], "ConnectionLimitReached", "{results:?}");
    assert_eq!(client.supplier_requests(), 2);
    assert!(run.stderr.contains("--max-requests"), "{}", tail(&run.stderr));
}

#[test]
fn wasi_http_bodies_and_waits_are_bounded() {
    let client = Client::new();
    let (_, results) = client.fetch(
        json!([
            {"url": client.page(200), "bearer_secret": "acme_token"},
            {"url": client.page(10), "method": "POST", "body_bytes": 3 << 20},
        ]),
        &["--max-response-body", "4KiB"],
    );
    let big = &results[0];
    assert!(
        big["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("HttpResponseBodySize"))
            || big["body_error"].as_str().is_some_and(|e| e.contains("body size")),
        "{results:?}"
    );
    assert!(big["bytes"].as_u64().unwrap_or(0) <= 4096, "{results:?}");
    assert!(
        results[1]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("HttpRequestBodySize")),
        "a request body past 1 MiB is refused: {results:?}"
    );

    // The connector may ask for a shorter wait than the host's.
    client
        .mock
        .faults(json!([{"action": "delay", "delay_ms": 5000, "times": 1}]));
    let (_, results) = client.fetch(json!([{"url": client.page(10), "first_byte_timeout_ms": 200}]), &[]);
    assert_eq!(results[0]["error"], "HttpResponseTimeout", "{results:?}");
}

#[test]
fn wasi_http_exchanges_are_recorded_and_replayed_without_the_network() {
    let client = Client::new();
    let cassette = client.work.path("wasi-http.cassette.json");
    let cassette = cassette.to_str().unwrap();
    let requests = json!([
        {"url": client.page(10), "bearer_secret": "acme_token"},
        {"url": client.page(3), "method": "POST", "body_bytes": 100},
    ]);
    let (_, recorded) = client.fetch(requests.clone(), &["--record", cassette]);
    assert_eq!(recorded[0]["status"], 200, "{recorded:?}");
    assert!(recorded[0]["bytes"].as_u64().unwrap() > 1000, "{recorded:?}");
    let text = std::fs::read_to_string(cassette).unwrap();
    assert!(text.contains("\"POST\"") && text.contains("per_page=10"), "{text}");
    assert!(!text.contains(TOKEN), "the cassette holds no secret");
    let sent = client.mock.requests().len();

    // The replay answers the same, byte for byte, and the API hears nothing.
    let (_, replayed) = client.fetch(requests, &["--replay", cassette]);
    assert_eq!(replayed, recorded);
    assert_eq!(client.mock.requests().len(), sent, "a replay sent a request");

    // A request the cassette lacks is refused, naming it; still nothing is sent.
    let (run, missed) = client.fetch(json!([{"url": client.page(7)}]), &["--replay", cassette]);
    assert_eq!(missed[0]["error"], "HttpRequestDenied", "{missed:?}");
    assert!(
        run.stderr
            .contains("GET /v2/suppliers?page=1&per_page=7 is not in the cassette"),
        "{}",
        tail(&run.stderr)
    );
    assert_eq!(client.mock.requests().len(), sent);
}

#[test]
fn hoarding_wasi_http_resources_is_cut_off() {
    let client = Client::new();
    let (run, rss) = nuntiq_host_measured(client.args("hoard", json!([]), &[]));
    assert_eq!(run.code, 1, "{}\n{}", run.envelope, tail(&run.stderr));
    assert!(
        run.error_message().contains("1024 resources"),
        "the error names the limit: {}",
        run.envelope
    );
    assert!(rss < RSS_BOUND, "host peak RSS {} MB", rss >> 20);
}
