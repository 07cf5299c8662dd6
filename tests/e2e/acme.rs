//! The Acme connector end to end: full and incremental runs, retries,
//! failures and recovery, independent cursors, backfills.

use crate::MOCK;
use chrono::{Duration, Utc};
use nuntiq_e2e::*;
use serde_json::{Value, json};

/// The first run's lower bound, as the connector recorded it.
fn lower_bound_used(db: &Db, connector: &str) -> chrono::DateTime<Utc> {
    let state = db.state(connector, "suppliers").expect("state row");
    let metadata: Value = serde_json::from_str(state["metadata"].as_str().unwrap()).unwrap();
    parse_time(metadata["lower_bound_used"].as_str().unwrap())
}

fn supplier_requests(mock: &Mock) -> Vec<Value> {
    mock.requests()
        .into_iter()
        .filter(|r| r["path"] == "/v2/suppliers")
        .collect()
}

#[test]
fn first_run_stores_everything_and_second_run_fetches_nothing() {
    let mock = Mock::start(MOCK, 1200);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));

    let first = run_acme(&mock, &settings, &work.db(), &[]);
    assert_eq!(first.code, 0, "{}\n{}", first.envelope, first.stderr);

    let db = Db::open(&work.db());
    let bootstrap = lower_bound_used(&db, "acme_eu");
    let age = Utc::now() - bootstrap;
    assert!(
        age > Duration::days(7) - Duration::minutes(5) && age <= Duration::days(7) + Duration::seconds(2),
        "bootstrap is now - 7 days: {bootstrap}"
    );

    let truth = mock.truth();
    let expected = expected_from(&truth, bootstrap);
    assert!(
        expected.len() > 1000 && expected.len() < truth.len(),
        "old rows stay out of the window"
    );
    assert_same_suppliers(&db.suppliers("10000001"), &expected);
    assert_eq!(db.count("supplier"), expected.len() as i64);

    let newest = newest_after(&truth, bootstrap).unwrap();
    let cursor = first.envelope["cursor_committed"].as_str().unwrap().to_owned();
    assert_eq!(
        parse_time(&cursor),
        newest,
        "the cursor is the greatest updated_at as an instant"
    );
    // What the run used: counted by the host, whatever the connector says.
    let mut envelope = first.envelope.clone();
    let usage = envelope
        .as_object_mut()
        .unwrap()
        .remove("usage")
        .expect("usage in the envelope");
    // The run's trace, also on its history row.
    let trace_id = envelope.as_object_mut().unwrap().remove("trace_id").expect("trace_id in the envelope");
    assert!(
        trace_id.as_str().is_some_and(|t| t.len() == 32 && t.chars().all(|c| c.is_ascii_hexdigit())),
        "{trace_id}"
    );
    assert_eq!(usage["http_requests"], mock.requests().len() as u64, "{usage}");
    assert_eq!(usage["http_retries"], 0, "{usage}");
    assert_eq!(usage["records_written"], expected.len() as u64, "{usage}");
    assert!(
        usage["http_bytes_in"].as_u64().unwrap() > 100 * expected.len() as u64,
        "{usage}"
    );
    assert!(usage["peak_memory_bytes"].as_u64().unwrap() >= 64 * 1024, "{usage}");
    assert!(
        usage["wall_ms"].as_u64().unwrap() >= usage["cpu_ms"].as_u64().unwrap() / 2,
        "{usage}"
    );
    assert_eq!(
        envelope,
        json!({"connector_name": "acme_eu", "fetched": expected.len(), "cursor_committed": cursor,
               "inserted": expected.len(), "updated": 0, "unchanged": 0, "rejected": 0, "success": true})
    );
    let state = db.state("acme_eu", "suppliers").unwrap();
    assert_eq!(state["status"], "succeeded");
    assert_eq!(state["committed_cursor_value"], cursor.as_str());
    assert_eq!(state["records_processed"], expected.len());
    assert_eq!(state["cursor_type"], "timestamp_utc");
    assert_eq!(state["error_summary"], Value::Null);
    let metadata: Value = serde_json::from_str(state["metadata"].as_str().unwrap()).unwrap();
    assert_eq!(metadata["schema_version"], 1);
    assert_eq!(metadata["page_size"], 200);
    assert_eq!(db.count("delta_audit_log"), 1);

    // Flushed every 500, logged as it went.
    assert!(first.stderr.contains("[INFO] [customer 10000001] Flushed 500 so far"), "{}", first.stderr);
    assert!(first.stderr.contains("[INFO] [customer 10000001] Flushed 1000 so far"), "{}", first.stderr);

    // Nothing changed: the run re-reads only the cursor's last second, and
    // rewrites none of it.
    let before = supplier_requests(&mock).len();
    let second = run_acme(&mock, &settings, &work.db(), &[]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    let boundary = fetched_after(&truth, &overlap(&cursor));
    assert!((1..10).contains(&boundary), "a few boundary rows: {boundary}");
    assert_eq!(second.envelope["fetched"], boundary);
    assert_eq!(
        (
            &second.envelope["inserted"],
            &second.envelope["updated"],
            &second.envelope["unchanged"]
        ),
        (&json!(0), &json!(0), &json!(boundary))
    );
    assert_eq!(second.envelope["cursor_committed"], cursor.as_str());
    let asked = supplier_requests(&mock);
    assert_eq!(asked.len(), before + 1, "one request, one page");
    assert_eq!(asked[before]["query"]["updated_after"], overlap(&cursor).as_str());
    assert_same_suppliers(&Db::open(&work.db()).suppliers("10000001"), &expected);
}

#[test]
fn incremental_run_fetches_exactly_the_changes() {
    let mock = Mock::start(MOCK, 700);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let first = run_acme(&mock, &settings, &work.db(), &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let cursor = first.envelope["cursor_committed"].as_str().unwrap().to_owned();

    let (changed, inserted) = mock.mutate(3, 2);
    let before = supplier_requests(&mock).len();
    let second = run_acme(&mock, &settings, &work.db(), &[]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    let fetched = fetched_after(&mock.truth(), &overlap(&cursor));
    assert_eq!(second.envelope["fetched"], fetched, "the changes and the boundary rows");
    assert_eq!(second.envelope["inserted"], 2);
    assert_eq!(second.envelope["updated"], 3);
    assert_eq!(second.envelope["unchanged"], fetched - 5);
    let asked = supplier_requests(&mock);
    assert_eq!(
        asked[before]["query"]["updated_after"],
        overlap(&cursor).as_str(),
        "the lower bound is the committed cursor, less a second"
    );

    let db = Db::open(&work.db());
    let truth = mock.truth();
    let expected = expected_from(&truth, lower_bound_used_first(&first));
    let stored = db.suppliers("10000001");
    assert_same_suppliers(&stored, &expected);
    for number in changed.iter().chain(&inserted) {
        assert!(stored[number].name.contains("Supplies"), "{number} stored");
    }
    assert!(
        changed.iter().all(|n| stored[n].name.contains("(renamed")),
        "changes applied"
    );
    let newest = newest_after(&truth, parse_time(&cursor)).unwrap();
    assert_eq!(
        parse_time(second.envelope["cursor_committed"].as_str().unwrap()),
        newest
    );
    assert_eq!(db.count("delta_audit_log"), 2);
}

/// The bootstrap the first run used, from its log line.
fn lower_bound_used_first(run: &Run) -> chrono::DateTime<Utc> {
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("First-run bootstrap → "))
        .expect("bootstrap logged");
    let after = line.split("First-run bootstrap → ").nth(1).unwrap();
    parse_time(after.split_whitespace().next().unwrap())
}

#[test]
fn rate_limits_503_bursts_and_resets_are_retried() {
    let mock = Mock::start(MOCK, 450);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    mock.faults(json!([
        {"page": 1, "action": "status", "status": 429, "retry_after": "1"},
        {"page": 2, "times": 2, "action": "status", "status": 503},
        {"page": 3, "action": "reset"},
    ]));
    let run = run_acme(&mock, &settings, &work.db(), &["--log-format", "json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.envelope, run.stderr);

    let warns: Vec<Value> = run.json_logs().into_iter().filter(|l| l["level"] == "warn").collect();
    assert_eq!(warns.len(), 4, "one warn per retry: {warns:#?}");
    assert!(warns.iter().all(|w| w["step"] == "http_get"));
    let statuses: Vec<&Value> = warns.iter().map(|w| &w["detail"]["status"]).collect();
    assert_eq!(
        statuses,
        [&json!(429), &json!(503), &json!(503), &Value::Null],
        "the reset has no status"
    );
    let attempts: Vec<&Value> = warns.iter().map(|w| &w["detail"]["attempt"]).collect();
    assert_eq!(attempts, [&json!(1), &json!(1), &json!(2), &json!(1)]);
    assert!(warns.iter().all(|w| {
        w["detail"]["url"]
            .as_str()
            .unwrap()
            .contains("/v2/suppliers?updated_after=")
    }));

    let pages: Vec<u64> = supplier_requests(&mock)
        .iter()
        .map(|r| r["query"]["page"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(pages, [1, 1, 2, 2, 2, 3, 3]);
    let db = Db::open(&work.db());
    assert_eq!(db.count("supplier") as u64, run.envelope["fetched"].as_u64().unwrap());
}

#[test]
fn unauthorized_fails_at_once_and_keeps_the_cursor() {
    let mock = Mock::start(MOCK, 300);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let first = run_acme(&mock, &settings, &work.db(), &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let cursor = first.envelope["cursor_committed"].clone();

    let mut bad = acme_settings(&mock.api_url(), "acme_eu");
    bad["secrets"]["acme_token"] = json!("expired-token-value");
    let bad_settings = work.write_settings("bad.json", &bad);
    let before = supplier_requests(&mock).len();
    let run = run_acme(&mock, &bad_settings, &work.db(), &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.error_kind(), "connector_error");
    assert!(run.error_message().contains("HTTP 401"), "{}", run.envelope);
    assert_eq!(supplier_requests(&mock).len(), before + 1, "401 is not retried");
    assert!(!run.stderr.contains("[WARN]"), "no retry warnings: {}", run.stderr);
    assert!(!run.stderr.contains("expired-token-value") && !run.envelope.to_string().contains("expired-token-value"));

    let state = Db::open(&work.db()).state("acme_eu", "suppliers").unwrap();
    assert_eq!(state["status"], "failed");
    assert_eq!(state["committed_cursor_value"], cursor);
    assert!(state["error_summary"].as_str().unwrap().contains("HTTP 401"), "{state}");
}

#[test]
fn failure_on_page_3_keeps_pages_1_and_2_and_the_rerun_converges() {
    let mock = Mock::start(MOCK, 1250);
    let work = Workdir::new();
    let mut settings = acme_settings(&mock.api_url(), "acme_eu");
    settings["config"]["page_size"] = json!(250);
    let settings = work.write_settings("settings.json", &settings);
    mock.faults(json!([{"page": 3, "action": "malformed"}]));

    let failed = run_acme(&mock, &settings, &work.db(), &[]);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert_eq!(failed.error_kind(), "connector_error");
    assert!(failed.error_message().contains("page 3"), "{}", failed.envelope);
    let db = Db::open(&work.db());
    let state = db.state("acme_eu", "suppliers").unwrap();
    assert_eq!(state["status"], "failed");
    assert_eq!(state["committed_cursor_value"], Value::Null, "the cursor did not move");
    let truth = mock.truth();
    let bootstrap = lower_bound_used_first(&failed);
    let all = expected_from(&truth, bootstrap);
    let stored = db.suppliers("10000001");
    // Pages 1 and 2 (500 rows) were flushed before page 3 failed.
    assert_eq!(stored.len(), 500);
    assert!(stored.iter().all(|(k, v)| all.get(k) == Some(v)));
    let pages: Vec<String> = supplier_requests(&mock)
        .iter()
        .map(|r| r["query"]["page"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(pages, ["1", "2", "3"], "no page after the failure");

    let rerun = run_acme(&mock, &settings, &work.db(), &[]);
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    assert_eq!(supplier_requests(&mock).len(), 3 + 5, "five pages on the rerun");
    let db = Db::open(&work.db());
    let expected = expected_from(&truth, bootstrap);
    assert_same_suppliers(&db.suppliers("10000001"), &expected);
    assert_eq!(db.count("supplier"), expected.len() as i64, "no duplicates");
    assert_eq!(db.state("acme_eu", "suppliers").unwrap()["status"], "succeeded");
}

#[test]
fn connectors_keep_independent_cursors_and_backfills_refetch_the_window() {
    let mock = Mock::start(MOCK, 400);
    let work = Workdir::new();
    let eu = work.write_settings("eu.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let us = work.write_settings("us.json", &acme_settings(&mock.api_url(), "acme_us"));
    let eu1 = run_acme(&mock, &eu, &work.db(), &[]);
    let us1 = run_acme(&mock, &us, &work.db(), &[]);
    assert_eq!((eu1.code, us1.code), (0, 0), "{}\n{}", eu1.stderr, us1.stderr);
    assert_eq!(eu1.envelope["fetched"], us1.envelope["fetched"]);

    mock.mutate(2, 1);
    let eu2 = run_acme(&mock, &eu, &work.db(), &[]);
    let changes =
        |run: &Run| -> u64 { run.envelope["inserted"].as_u64().unwrap() + run.envelope["updated"].as_u64().unwrap() };
    assert_eq!(changes(&eu2), 3);
    let db = Db::open(&work.db());
    assert_eq!(
        db.state("acme_us", "suppliers").unwrap()["committed_cursor_value"],
        us1.envelope["cursor_committed"]
    );
    assert_ne!(
        db.state("acme_eu", "suppliers").unwrap()["committed_cursor_value"],
        us1.envelope["cursor_committed"]
    );
    let us2 = run_acme(&mock, &us, &work.db(), &[]);
    let us_cursor = us1.envelope["cursor_committed"].as_str().unwrap();
    let us_fetched = fetched_after(&mock.truth(), &overlap(us_cursor));
    assert!(us_fetched >= 3, "{us_fetched}");
    assert_eq!(us2.envelope["fetched"], us_fetched, "acme_us still sees the changes");
    assert_eq!(
        us2.envelope["unchanged"], us_fetched,
        "the same customer's store already holds what acme_eu wrote"
    );

    // Backfill: refetch everything since a point in the past.
    let since = (Utc::now() - Duration::days(3))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let before = supplier_requests(&mock).len();
    let backfill = run_acme(&mock, &eu, &work.db(), &["--param", &format!("since_override={since}")]);
    assert_eq!(backfill.code, 0, "{}", backfill.stderr);
    let asked = supplier_requests(&mock);
    assert_eq!(asked[before]["query"]["updated_after"], since.as_str());
    let truth = mock.truth();
    let window = truth
        .iter()
        .filter(|r| parse_time(r["updated_at"].as_str().unwrap()) > parse_time(&since))
        .count();
    assert_eq!(backfill.envelope["fetched"], window);
    assert!(backfill.stderr.contains(&format!("since_override set → {since}")));
    // The live cursor did not move backwards.
    assert_eq!(backfill.envelope["cursor_committed"], eu2.envelope["cursor_committed"]);

    // A backfill from the future would skip every change until then: refused.
    let future = run_acme(
        &mock,
        &eu,
        &work.db(),
        &["--param", "since_override=2999-01-01T00:00:00Z"],
    );
    assert_eq!(future.code, 1);
    assert!(
        future
            .error_message()
            .contains("since_override 2999-01-01T00:00:00Z is in the future"),
        "{}",
        future.envelope
    );
    let state = Db::open(&work.db()).state("acme_eu", "suppliers").unwrap();
    assert_eq!(state["committed_cursor_value"], eu2.envelope["cursor_committed"]);
}

#[test]
fn a_connector_built_against_contract_0_1_0_still_runs() {
    let mock = Mock::start(MOCK, 300);
    let work = Workdir::new();
    let since = (Utc::now() - Duration::days(7))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut settings = acme_settings(&mock.api_url(), "acme_eu");
    settings["job_params"]["since"] = json!(since);
    let settings = work.write_settings("settings.json", &settings);
    let run = nuntiq_host([
        "run-plugin",
        guest("acme-v0_1").to_str().unwrap(),
        settings.to_str().unwrap(),
        "--db",
        work.db().to_str().unwrap(),
        "--allow-host",
        &mock.allow_host(),
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.envelope, run.stderr);
    assert_eq!(run.envelope["contract"], "0.1.0");
    let expected = expected_from(&mock.truth(), parse_time(&since));
    assert_eq!(run.envelope["fetched"], expected.len());
    assert_eq!(run.envelope["inserted"], expected.len());
    let db = Db::open(&work.db());
    assert_same_suppliers(&db.suppliers("10000001"), &expected);
    assert_eq!(db.state("acme_eu", "suppliers").unwrap()["status"], "succeeded");
}

#[test]
fn bad_rows_are_set_aside_and_the_stream_goes_on() {
    let mock = Mock::start(MOCK, 300);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let first = run_acme(&mock, &settings, &work.db(), &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    // Three rows change, two of them untidily; the pages also say next_page as a string.
    let (changed, _) = mock.mutate(3, 0);
    mock.patch(&changed[0], json!({"active": "yes"}));
    mock.patch(&changed[1], json!({"updated_at": "last tuesday"}));
    mock.faults(json!([{"action": "next_page_as_string", "times": 1000}]));
    let mut small_pages = acme_settings(&mock.api_url(), "acme_eu");
    small_pages["config"]["page_size"] = json!(2);
    let small_pages = work.write_settings("small.json", &small_pages);
    let second = run_acme(&mock, &small_pages, &work.db(), &[]);
    assert_eq!(second.code, 0, "{}\n{}", second.envelope, second.stderr);
    assert_eq!(second.envelope["rejected"], 2, "{}", second.envelope);
    assert_eq!(second.envelope["updated"], 1, "the tidy change is stored");
    let (code, out, err) = host_output(&["rejected", "--db", work.db().to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    let reasons: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{out}");
    assert!(reasons.iter().any(|r| r.contains("expected a boolean")), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("updated_at \"last tuesday\" is not an RFC 3339 timestamp")),
        "{reasons:?}"
    );
    assert!(
        rows[0]["row"].as_str().unwrap().contains(&changed[0])
            || rows[1]["row"].as_str().unwrap().contains(&changed[0])
    );
    let (_, text, _) = host_output(&["rejected", "--db", work.db().to_str().unwrap()]);
    assert!(
        text.contains("acme_eu/suppliers (customer 10000001)  seen 1 time(s)"),
        "{text}"
    );
    let history =
        Db::open(&work.db()).scalar::<i64>("SELECT rejected FROM delta_run ORDER BY started_at_utc DESC LIMIT 1");
    assert_eq!(history, 2);

    // Past the threshold the run fails, and the cursor stays.
    let cursor = Db::open(&work.db()).state("acme_eu", "suppliers").unwrap()["committed_cursor_value"].clone();
    let strict = run_acme(
        &mock,
        &settings,
        &work.db(),
        &["--max-rejected", "1", "--param", "since_override=2020-01-01T00:00:00Z"],
    );
    assert_eq!(
        (strict.code, strict.error_kind()),
        (1, "rejected_limit"),
        "{}",
        strict.envelope
    );
    assert_eq!(
        Db::open(&work.db()).state("acme_eu", "suppliers").unwrap()["committed_cursor_value"],
        cursor
    );
}
