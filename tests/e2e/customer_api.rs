//! The Nuntiq Customer API as the store (`--db nuntiq+http://…/api`): the real
//! host, the Acme connector and the Customer API mock, with SIGKILLs and
//! faults; the mock's tables must end equal to the source and its cursor
//! never pass rows it lacks.

use crate::load_options::bank_settings;
use crate::serve::{Jobs, Serve, wait_until};
use crate::{API_MOCK, MOCK};
use chrono::{Duration as Days, Utc};
use nuntiq_e2e::api_mock::{API_TOKEN, ApiMock, CUSTOMER};
use nuntiq_e2e::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `run-plugin GUEST settings` delivering to `api` with `token`, its ledger in `work`.
fn to_api(plugin: &str, api: &ApiMock, settings: &Path, work: &Workdir, token: &str) -> Command {
    let mut command = host_command();
    command
        .args([
            "run-plugin",
            guest(plugin).to_str().unwrap(),
            settings.to_str().unwrap(),
            "--db",
            &api.store_url(),
            "--ledger",
            work.path("ledger.db").to_str().unwrap(),
        ])
        .env("NUNTIQ_API_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// The Acme job against `mock`, delivering to `api`.
fn acme_to_api(mock: &Mock, api: &ApiMock, settings: &Path, work: &Workdir, token: &str, extra: &[&str]) -> Command {
    let mut command = to_api("acme", api, settings, work, token);
    command.args(["--allow-host", &mock.allow_host()]).args(extra);
    command
}

/// The bank loader delivering to `api`, with `params` as `--param`s.
fn banks_to_api(api: &ApiMock, settings: &Path, work: &Workdir, params: &[&str]) -> Command {
    let mut command = to_api("bank-loader", api, settings, work, API_TOKEN);
    for p in params {
        command.args(["--param", p]);
    }
    command
}

fn run(mut command: Command) -> Run {
    finish(command.spawn().expect("nuntiq-host starts"))
}

/// The mock's suppliers of the seed's customer, as the oracle compares them.
fn delivered(api: &ApiMock) -> BTreeMap<String, Stored> {
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    api.suppliers(CUSTOMER)
        .into_iter()
        .map(|s| {
            let locations = s["supplier_location"]
                .as_array()
                .map(|ls| {
                    ls.iter()
                        .map(|l| {
                            let addresses = l["supplier_address"]
                                .as_array()
                                .map(|a| {
                                    a.iter()
                                        .map(|a| (text(&a["street"]), text(&a["city"]), text(&a["country_code"])))
                                        .collect()
                                })
                                .unwrap_or_default();
                            (text(&l["location_code"]), text(&l["location_name"]), addresses)
                        })
                        .collect()
                })
                .unwrap_or_default();
            (
                text(&s["supplier_number"]),
                Stored {
                    name: text(&s["supplier_name"]),
                    is_active: s["is_active"].as_bool().unwrap_or(true),
                    locations,
                },
            )
        })
        .collect()
}

fn committed(api: &ApiMock) -> Option<String> {
    api.stream(CUSTOMER, "acme_eu", "suppliers")
        .and_then(|s| s["committed_cursor_value"].as_str().map(str::to_owned))
}

fn window() -> chrono::DateTime<Utc> {
    Utc::now() - Days::days(7)
}

/// Every row the API's committed cursor covers is in the API, as it is now.
fn assert_cursor_not_ahead_of_data(api: &ApiMock, mock: &Mock) {
    let Some(cursor) = committed(api) else { return };
    let cursor = parse_time(&overlap(&cursor));
    let covered: Vec<Value> = mock
        .truth()
        .into_iter()
        .filter(|r| parse_time(r["updated_at"].as_str().unwrap()) <= cursor)
        .collect();
    let stored = delivered(api);
    for (number, expected) in expected_from(&covered, window()) {
        assert_eq!(
            stored.get(&number),
            Some(&expected),
            "{number} is covered by the API's cursor {cursor} but not in the API"
        );
    }
}

fn assert_converged(api: &ApiMock, mock: &Mock) {
    let truth = mock.truth();
    assert_same_suppliers(&delivered(api), &expected_from(&truth, window()));
    let cursor = parse_time(&committed(api).expect("a cursor in the API"));
    assert_eq!(Some(cursor), newest_after(&truth, window()));
}

fn assert_token_hidden(run: &Run) {
    assert!(
        !run.stderr.contains(API_TOKEN) && !run.envelope.to_string().contains(API_TOKEN),
        "the token is never printed:\n{}\n{}",
        run.envelope,
        run.stderr
    );
}

#[test]
fn acme_delivers_every_supplier_to_the_customer_api_and_commits_the_cursor_there() {
    let mock = Mock::start(MOCK, 2500);
    let api = ApiMock::start(API_MOCK);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));

    let first = run(acme_to_api(&mock, &api, &settings, &work, API_TOKEN, &[]));
    assert_eq!(first.code, 0, "{}\n{}", first.envelope, first.stderr);
    assert_converged(&api, &mock);
    assert_token_hidden(&first);
    let requests = api.requests();
    let posts: Vec<_> = requests.iter().filter(|r| r.op.as_deref() == Some("supplier")).collect();
    assert!(posts.len() >= 3, "2500 suppliers take several requests: {}", posts.len());
    assert!(posts.iter().all(|r| r.items.unwrap() <= 1000), "at most 1000 rows a request");
    assert!(
        requests
            .iter()
            .all(|r| r.authorized && r.customer.as_deref() == Some(CUSTOMER)),
        "every request carries the token and X-Customer-Number: {requests:?}"
    );
    // The cursor is committed only after every batch was acknowledged.
    let complete = requests.iter().position(|r| r.op.as_deref() == Some("complete")).unwrap();
    assert!(requests[complete + 1..].iter().all(|r| r.op.as_deref() != Some("supplier")));

    // The ledger keeps the run history the API has no place for.
    let (code, out, err) = host_output(&["runs", "--db", work.path("ledger.db").to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let runs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(runs[0]["status"], "succeeded", "{runs}");

    // Changes flow on the next run; an unchanged re-read posts them as unchanged.
    mock.mutate(5, 3);
    let second = run(acme_to_api(&mock, &api, &settings, &work, API_TOKEN, &[]));
    assert_eq!(second.code, 0, "{}\n{}", second.envelope, second.stderr);
    assert_converged(&api, &mock);
}

#[test]
fn sigkills_and_api_faults_leave_nuntiq_equal_to_the_source() {
    let mock = Mock::start(MOCK, 600);
    mock.faults(json!([{"action": "delay", "delay_ms": 15, "times": 1_000_000}]));
    let api = ApiMock::start(API_MOCK);
    let work = Workdir::new();
    let mut settings = acme_settings(&mock.api_url(), "acme_eu");
    settings["config"]["page_size"] = json!(25);
    let settings = work.write_settings("settings.json", &settings);
    let start = window().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let backfill = format!("since_override={start}");

    let started = Instant::now();
    let first = run(acme_to_api(&mock, &api, &settings, &work, API_TOKEN, &["--param", &backfill]));
    assert_eq!(first.code, 0, "{}\n{}", first.envelope, first.stderr);
    let full = started.elapsed();

    let mut killed = 0;
    let points = 10;
    for i in 0..points {
        mock.mutate(3, 2);
        // Transient API faults the host must ride out: 503s, a 429 with
        // Retry-After, a write applied whose answer is lost, a lost complete.
        api.faults(json!([
            {"op": "supplier", "action": "status", "status": 503, "times": 2},
            {"op": "supplier", "action": "status", "status": 429, "retry_after": "1", "times": 1},
            {"op": "supplier", "action": "drop_after_apply", "times": 1},
            {"op": "complete", "action": "drop_after_apply", "times": 1},
        ]));
        let at = full.mul_f64(0.05 + 0.9 * i as f64 / (points - 1) as f64);
        let mut child = acme_to_api(&mock, &api, &settings, &work, API_TOKEN, &["--param", &backfill])
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        assert_cursor_not_ahead_of_data(&api, &mock);

        // The rerun takes the stream over (its owner is dead, as the shared
        // ledger knows) and converges, faults and all.
        let rerun = run(acme_to_api(&mock, &api, &settings, &work, API_TOKEN, &[]));
        assert_eq!(rerun.code, 0, "kill point {i} ({at:?}): {}\n{}", rerun.envelope, rerun.stderr);
        assert_converged(&api, &mock);
        assert_token_hidden(&rerun);
    }
    assert!(killed >= points / 2, "only {killed} of {points} kills hit a running host");
    let faults = api.requests().iter().filter(|r| r.fault.is_some()).count();
    assert!(faults >= points, "the faults were met: {faults}");
}

#[test]
fn a_refused_token_ends_the_run_at_once_and_leaves_the_cursor() {
    let mock = Mock::start(MOCK, 50);
    // The second key may act only for another customer: 403 for ours.
    let api = ApiMock::start_with(API_MOCK, &[(API_TOKEN, &[CUSTOMER]), ("other-customers-key-7f3a", &["20000002"])]);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let first = run(acme_to_api(&mock, &api, &settings, &work, API_TOKEN, &[]));
    assert_eq!(first.code, 0, "{}", first.stderr);
    let cursor = committed(&api);
    mock.mutate(3, 3);

    for (token, status) in [("not-the-key-5e1b", 401), ("other-customers-key-7f3a", 403)] {
        let before = api.requests().len();
        let denied = run(acme_to_api(&mock, &api, &settings, &work, token, &[]));
        assert_eq!(denied.code, 1, "{}", denied.envelope);
        assert_eq!(denied.error_kind(), "store_denied", "{}", denied.envelope);
        assert!(
            denied.error_message().contains("refused the host's token")
                && denied.error_message().contains("NUNTIQ_API_TOKEN"),
            "{}",
            denied.envelope
        );
        assert!(!denied.stderr.contains(token) && !denied.envelope.to_string().contains(token));
        let asked = &api.requests()[before..];
        assert_eq!(asked.len(), 1, "nothing is retried after {status}: {asked:?}");
        assert_eq!(asked[0].status, Some(status));
        assert_eq!(committed(&api), cursor, "the cursor is untouched");
    }
}

#[test]
fn a_token_in_argv_or_the_url_is_refused_and_a_missing_one_named() {
    let api = ApiMock::start(API_MOCK);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &bank_settings());
    let with_creds = api.store_url().replace("http://", "http://user:secret-in-url@");
    let refused = nuntiq_host([
        "run-plugin",
        guest("bank-loader").to_str().unwrap(),
        settings.to_str().unwrap(),
        "--db",
        &with_creds,
    ]);
    assert_eq!(refused.code, 2, "{}", refused.envelope);
    assert!(!refused.stderr.contains("secret-in-url") && !refused.envelope.to_string().contains("secret-in-url"));

    let missing = host_command()
        .args([
            "run-plugin",
            guest("bank-loader").to_str().unwrap(),
            settings.to_str().unwrap(),
            "--db",
            &api.store_url(),
            "--ledger",
            work.path("ledger.db").to_str().unwrap(),
            "--api-token-env",
            "NO_SUCH_TOKEN_VARIABLE",
        ])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let out = String::from_utf8_lossy(&missing.stdout);
    assert!(out.contains("$NO_SUCH_TOKEN_VARIABLE is not set"), "{out}");
    assert!(api.requests().is_empty(), "nothing was sent without a token");
}

#[test]
fn a_batch_refused_with_400_is_split_and_only_the_bad_rows_are_set_aside() {
    let mock = Mock::start(MOCK, 300);
    let api = ApiMock::start(API_MOCK);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let truth = mock.truth();
    let expected = expected_from(&truth, window());
    let bad: Vec<&String> = expected.keys().skip(7).step_by(97).take(2).collect();
    api.faults(json!(
        bad.iter()
            .map(|n| json!({"op": "supplier", "action": "poison", "prefix": n}))
            .collect::<Vec<_>>()
    ));
    let done = run(acme_to_api(&mock, &api, &settings, &work, API_TOKEN, &[]));
    assert_eq!(done.code, 0, "{}\n{}", done.envelope, done.stderr);
    assert_eq!(done.envelope["rejected"], bad.len(), "{}", done.envelope);
    let stored = delivered(&api);
    for (number, row) in &expected {
        if bad.contains(&number) {
            assert!(!stored.contains_key(number), "{number} was refused");
        } else {
            assert_eq!(stored.get(number), Some(row), "{number} is written");
        }
    }
    let (code, out, _) = host_output(&[
        "rejected",
        "--db",
        work.path("ledger.db").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0);
    let rejected: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rejected.as_array().unwrap().len(), bad.len(), "{rejected}");
    for r in rejected.as_array().unwrap() {
        assert!(
            r["reason"].as_str().unwrap().contains("the Customer API refused it"),
            "{r}"
        );
        assert!(bad.iter().any(|n| r["row"].as_str().unwrap().contains(n.as_str())), "{r}");
    }
}

#[test]
fn bank_accounts_and_the_load_options_reach_the_api_and_only_the_first_request_carries_full_load() {
    let api = ApiMock::start(API_MOCK);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &bank_settings());
    let load = |params: &[&str]| {
        let done = run(banks_to_api(&api, &settings, &work, params));
        assert_eq!(done.code, 0, "{}\n{}", done.envelope, done.stderr);
        assert!(!done.stderr.contains("ACCT"), "no bank account number is logged");
        done
    };
    let accounts = || -> Vec<String> {
        let mut all: Vec<String> = api
            .suppliers(CUSTOMER)
            .iter()
            .flat_map(|s| s["supplier_location"].as_array().cloned().unwrap_or_default())
            .flat_map(|l| l["supplier_bank_account"].as_array().cloned().unwrap_or_default())
            .map(|b| b["bank_account_number"].as_str().unwrap().to_owned())
            .collect();
        all.sort();
        all
    };
    load(&[]);
    assert_eq!(accounts(), ["NL00000ACCT1", "NL00001ACCT1", "NL00002ACCT1"]);
    load(&["tag=2", "bank_insert_only=true"]);
    assert_eq!(accounts().len(), 6, "{:?}", accounts());

    // A full load of 2500 in writes of 600: one request carries full_load,
    // so every supplier of the run survives and the three old ones are gone
    // only because numbers were reused.
    let before = api.requests().len();
    load(&["count=2500", "save_every=600", "full_load=true", "prefix=F"]);
    let posts: Vec<_> = api.requests()[before..]
        .iter()
        .filter(|r| r.op.as_deref() == Some("supplier"))
        .cloned()
        .collect();
    assert!(posts.len() >= 5, "{posts:?}");
    assert_eq!(posts[0].full_load, Some(true), "{posts:?}");
    assert!(posts[1..].iter().all(|r| r.full_load == Some(false)), "{posts:?}");
    let numbers: Vec<String> = api
        .suppliers(CUSTOMER)
        .iter()
        .map(|s| s["supplier_number"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(numbers.len(), 2500);
    assert!(numbers.iter().all(|n| n.starts_with('F')), "the full load replaced the rest");
}

#[test]
fn a_run_the_api_shows_going_for_less_than_an_hour_is_left_alone() {
    let api = ApiMock::start(API_MOCK);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &bank_settings());
    let going = |minutes: i64| {
        api.stage_stream(json!({
            "customer": CUSTOMER,
            "connector_name": "banks",
            "stream_name": "banks",
            "cursor_type": "numeric_id",
            "committed_cursor_value": "7",
            "status": "running",
            "started_at_utc": (Utc::now() - Days::minutes(minutes)).to_rfc3339(),
        }))
    };
    let load = || run(banks_to_api(&api, &settings, &work, &[]));
    going(5);
    let left = load();
    assert_eq!(left.code, 1, "{}", left.envelope);
    assert!(left.error_message().contains("another worker runs it"), "{}", left.envelope);
    assert!(api.suppliers(CUSTOMER).is_empty(), "nothing was written");

    going(61);
    let taken = load();
    assert_eq!(taken.code, 0, "{}\n{}", taken.envelope, taken.stderr);
    let stream = api.stream(CUSTOMER, "banks", "banks").unwrap();
    assert_eq!(stream["committed_cursor_value"], "8", "{stream}");
}

#[test]
fn serve_delivers_each_customer_with_its_own_token() {
    let mock = Mock::start(MOCK, 40);
    let api = ApiMock::start_with(API_MOCK, &[("key-of-c01-4b2e", &["C01"]), ("key-of-c02-9d1f", &["C02"])]);
    let mut jobs = Jobs::new();
    std::fs::write(jobs.work.path("c02.token"), "key-of-c02-9d1f\n").unwrap();
    jobs.add(&mock, "c01", "acme", "C01", "every = \"2s\"\napi_token_env = \"C01_TOKEN\"");
    jobs.add(&mock, "c02", "acme", "C02", "every = \"2s\"\napi_token_file = \"c02.token\"");
    let file = jobs.write();
    let ledger = jobs.work.path("ledger.db");

    // A job whose token is missing stops the start, naming the job and the key.
    let missing = host_command()
        .args(["serve", file.to_str().unwrap(), "--db", &api.store_url(), "--ledger"])
        .arg(&ledger)
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("job \"c01\"") && err.contains("$C01_TOKEN is not set"), "{err}");

    // SAFETY-free: the variable is set on the child's command line only.
    let serve = Serve::start_env(
        &file,
        &api.store_url(),
        &["--ledger", ledger.to_str().unwrap()],
        &[("C01_TOKEN", "key-of-c01-4b2e")],
    );
    wait_until("both customers delivered", Duration::from_secs(60), || {
        !api.suppliers("C01").is_empty() && !api.suppliers("C02").is_empty()
    });
    let (code, log) = serve.stop();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("key-of-c0"), "no token is logged:\n{log}");
    let expected = expected_from(&mock.truth(), window());
    for customer in ["C01", "C02"] {
        assert_eq!(api.suppliers(customer).len(), expected.len(), "{customer}");
    }
    assert!(api.requests().iter().all(|r| r.authorized), "each customer's token was its own");
}

#[test]
fn the_apis_cursor_regression_and_not_found_reach_the_connector_as_the_contract_names_them() {
    let api = ApiMock::start(API_MOCK);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &bank_settings());
    let first = run(banks_to_api(&api, &settings, &work, &[]));
    assert_eq!(first.code, 0, "{}", first.stderr);
    let cursor = || api.stream(CUSTOMER, "banks", "banks").unwrap()["committed_cursor_value"].clone();
    assert_eq!(cursor(), "1");

    api.faults(json!([{"op": "complete", "action": "status", "status": 422,
        "body": "{\"code\": \"CURSOR_REGRESSION\", \"message\": \"new_cursor_value 2 is behind 40\"}"}]));
    let regressed = run(banks_to_api(&api, &settings, &work, &[]));
    assert_eq!(regressed.code, 1, "{}", regressed.envelope);
    assert!(
        regressed.error_message().contains("new_cursor_value 2 is behind 40"),
        "the connector saw cursor-regression with the API's message: {}",
        regressed.envelope
    );
    assert_eq!(cursor(), "1", "the cursor stays");

    api.faults(json!([{"op": "complete", "action": "status", "status": 404,
        "body": "{\"message\": \"stream not found: call /begin first\"}"}]));
    let missing = run(banks_to_api(&api, &settings, &work, &[]));
    assert_eq!(missing.code, 1, "{}", missing.envelope);
    assert!(
        missing.error_message().contains("404 stream not found: call /begin first"),
        "a store error that names it: {}",
        missing.envelope
    );
    assert_eq!(cursor(), "1");
}
