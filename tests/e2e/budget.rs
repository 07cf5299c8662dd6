//! One budget per run: what the host holds, opens or writes for a run is
//! charged to that run. Each test is an attack of a hostile guest of our own
//! (`host-hog`, `wasi-http-client`) and asserts what the host paid for it:
//! peak RSS, descriptors, log bytes, rows.

use crate::MOCK;
use crate::hostile::tail;
use nuntiq_e2e::*;
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What any single run of these attacks may cost the host process.
const RSS_BOUND: u64 = 256 << 20;

/// A mock, a work directory and the settings of `host-hog` in one mode.
struct Hog {
    mock: Mock,
    work: Workdir,
}

impl Hog {
    fn new() -> Self {
        Self {
            mock: Mock::start(MOCK, 10),
            work: Workdir::new(),
        }
    }

    fn args(&self, mode: &str, config: Value, extra: &[&str]) -> Vec<String> {
        let mut settings = acme_settings(&self.mock.api_url(), "acme_eu");
        settings["config"]["mode"] = json!(mode);
        for (k, v) in config.as_object().unwrap() {
            settings["config"][k] = v.clone();
        }
        let path = self.work.write_settings(&format!("{mode}.json"), &settings);
        let mut args = vec![
            "run-plugin".to_owned(),
            guest("host-hog").display().to_string(),
            path.display().to_string(),
            "--db".into(),
            self.work.db().display().to_string(),
            "--allow-host".into(),
            self.mock.allow_host(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn blob(&self, bytes: u64, delay_ms: u64) -> String {
        format!("{}/_mock/blob?bytes={bytes}&delay_ms={delay_ms}", self.mock.url)
    }
}

#[track_caller]
fn assert_limit(run: &Run, limit: &str) {
    assert_eq!(run.code, 1, "{}\n{}", run.envelope, tail(&run.stderr));
    assert_eq!(run.error_kind(), "limit", "{}\n{}", run.envelope, tail(&run.stderr));
    assert_eq!(run.envelope["error"]["limit"], limit, "{}", run.envelope);
}

#[test]
fn two_million_refused_wasi_http_requests_stop_at_the_runs_host_memory() {
    let hog = Hog::new();
    let (run, rss) = nuntiq_host_measured(hog.args(
        "refused-flood",
        json!({"count": "2000000", "url": "http://169.254.169.254/latest/meta-data"}),
        &[
            "--max-memory",
            "16MiB",
            "--max-log-lines",
            "10",
            "--max-log-bytes",
            "1KiB",
        ],
    ));
    assert_limit(&run, "host_memory");
    assert!(run.error_message().contains("--max-host-memory"), "{}", run.envelope);
    assert!(rss < RSS_BOUND, "peak RSS {} MB", rss >> 20);
    // The refusals the connector caused are counted against its log budget:
    // 10 lines of its own making at most, beside the host's start and end lines.
    assert!(
        run.stderr.len() < 8 << 10,
        "{} bytes of stderr:\n{}",
        run.stderr.len(),
        tail(&run.stderr)
    );
    assert!(run.stderr.contains("were dropped"), "{}", run.stderr);
    assert_eq!(
        run.envelope["usage"]["peak_host_memory_bytes"],
        128 << 20,
        "the budget was filled, then the run was stopped"
    );
}

#[test]
fn a_connector_hoarding_sockets_holds_at_most_its_max_connections() {
    let hog = Hog::new();
    let mut child = host_command()
        .args(hog.args(
            "socket-hoard",
            json!({"count": "1000", "url": hog.blob(10, 2500)}),
            &["--timeout", "8s", "--max-connections", "16"],
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let fds = format!("/proc/{}/fd", child.id());
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        most = most.max(std::fs::read_dir(&fds).map(|d| d.count()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = finish(child);
    // stdio, the store (3), runtimes' pollers, the cache: a few dozen at rest.
    assert!(
        most <= 16 + 40,
        "the run held {most} descriptors at once\n{}",
        tail(&run.stderr)
    );
    let blobs = hog.mock.blob_stats();
    let at_once = blobs["most_at_once"].as_u64().unwrap();
    // Requests did reach the server, but never more than the cap at once.
    assert!(blobs["total"].as_u64().unwrap() >= 1, "{blobs}");
    assert!(at_once <= 16, "{at_once} requests reached the server at once: {blobs}");
    assert_eq!(run.error_kind(), "timeout", "{}", run.envelope);
}

#[test]
fn begin_fail_cycles_stop_at_max_begins_with_bounded_memory_and_rows() {
    let hog = Hog::new();
    let (run, rss) = nuntiq_host_measured(hog.args("begin-fail", json!({"count": "60000"}), &[]));
    assert_limit(&run, "begins");
    assert!(run.error_message().contains("--max-begins"), "{}", run.envelope);
    assert!(rss < RSS_BOUND, "peak RSS {} MB", rss >> 20);
    let rows = Db::open(&hog.work.db()).count("delta_run");
    assert_eq!(rows, 1000, "one run row per begin, up to the limit");
}

#[test]
fn rejected_rows_are_counted_per_run_however_often_the_stream_begins() {
    let hog = Hog::new();
    let run = nuntiq_host(hog.args("rebegin-reject", json!({"count": "20", "rows": "100"}), &[]));
    // The connector ignores the refusals and completes every run.
    assert_eq!(run.code, 0, "{}\n{}", run.envelope, tail(&run.stderr));
    assert_eq!(run.envelope["rejected"], 100, "{}", run.envelope);
    let db = Db::open(&hog.work.db());
    assert_eq!(
        db.count("rejected_record"),
        100,
        "what the envelope counts is what was stored"
    );
    let stored: i64 = db.scalar("SELECT sum(length(row)) FROM rejected_record");
    assert!(stored < 100 * 64 * 1024, "{stored} bytes stored");
}

#[test]
fn stored_rows_past_the_budget_stop_the_run_before_they_are_written() {
    let hog = Hog::new();
    let run = nuntiq_host(hog.args(
        "rebegin-reject",
        json!({"count": "5", "rows": "10"}),
        &["--max-stored-rows", "25"],
    ));
    assert_limit(&run, "stored_rows");
    assert!(Db::open(&hog.work.db()).count("rejected_record") <= 25);
}

/// The `wasi-http-client` fixture fetching `urls` (reading every body).
fn fetch_args(mock: &Mock, work: &Workdir, urls: &[String], extra: &[&str]) -> Vec<String> {
    let mut settings = acme_settings(&mock.api_url(), "acme_eu");
    settings["config"]["mode"] = json!("fetch");
    settings["config"]["requests"] = json!(urls.iter().map(|u| json!({"url": u})).collect::<Vec<_>>());
    let path = work.write_settings("fetch.json", &settings);
    let mut args = vec![
        "run-plugin".to_owned(),
        guest("wasi-http-client").display().to_string(),
        path.display().to_string(),
        "--db".into(),
        work.db().display().to_string(),
        "--allow-host".into(),
        mock.allow_host(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn a_recording_streams_each_body_to_disk_instead_of_holding_them() {
    let hog = Hog::new();
    let cassette = hog.work.path("big.json");
    let urls: Vec<String> = (0..30).map(|i| format!("{}&n={i}", hog.blob(16 << 20, 0))).collect();
    let (run, rss) = nuntiq_host_measured(fetch_args(
        &hog.mock,
        &hog.work,
        &urls,
        &["--record", cassette.to_str().unwrap()],
    ));
    assert_eq!(run.code, 0, "{}\n{}", run.envelope, tail(&run.stderr));
    let fetched = run.envelope["results"].as_array().unwrap();
    assert!(fetched.iter().all(|r| r["bytes"] == 16 << 20), "{fetched:?}");
    assert!(rss < RSS_BOUND, "peak RSS {} MB for 480 MB recorded", rss >> 20);
    assert!(std::fs::metadata(&cassette).unwrap().len() > 30 * (16 << 20));
}

#[test]
fn a_replay_through_wasi_http_applies_the_body_limit() {
    let hog = Hog::new();
    let cassette = hog.work.path("eight.json");
    let url = hog.blob(8 << 20, 0);
    let recorded = nuntiq_host(fetch_args(
        &hog.mock,
        &hog.work,
        std::slice::from_ref(&url),
        &["--record", cassette.to_str().unwrap()],
    ));
    assert_eq!(recorded.code, 0, "{}", tail(&recorded.stderr));
    let urls = vec![url; 200];
    let (run, rss) = nuntiq_host_measured(fetch_args(
        &hog.mock,
        &hog.work,
        &urls,
        &["--replay", cassette.to_str().unwrap(), "--max-response-body", "1MiB"],
    ));
    assert_eq!(run.code, 0, "{}\n{}", run.envelope, tail(&run.stderr));
    let results = run.envelope["results"].as_array().unwrap();
    assert_eq!(results.len(), 200);
    assert!(
        results.iter().all(|r| r.get("bytes").is_none()),
        "no replayed body past --max-response-body reached the connector: {:?}",
        &results[..2]
    );
    assert!(rss < RSS_BOUND, "peak RSS {} MB", rss >> 20);
}

#[test]
fn an_error_the_connector_passes_on_is_said_once() {
    let mock = Mock::start(MOCK, 300);
    let work = Workdir::new();
    let settings = work.write_settings("acme.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let run = run_acme(&mock, &settings, &work.db(), &["--max-requests", "1"]);
    assert_eq!(run.error_kind(), "request_budget", "{}", run.envelope);
    let message = run.error_message();
    assert_eq!(message.matches("HTTP requests is spent").count(), 1, "{message}");
}
