//! The scheduler an operator can trust: every due slot ends in exactly one
//! recorded outcome, every run is in the run history, mistakes in the jobs
//! file stop `serve` at start, and SIGHUP does not kill it.

use crate::MOCK;
use crate::serve::{Jobs, Serve, wait_until};
use chrono::{DateTime, Duration as Span, DurationRound, Utc};
use nuntiq_e2e::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// The sum of a metric's samples whose labels contain every `labels` pair.
fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// GET `http://addr/path`: status and body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response = agent
        .get(&format!("http://{addr}{path}"))
        .call()
        .expect("serve answers");
    (
        response.status().as_u16(),
        response.body_mut().read_to_string().unwrap(),
    )
}

/// Where `serve --metrics-addr 127.0.0.1:0` listens, from its start line.
fn metrics_addr(serve: &Serve) -> String {
    let line = serve.wait_for_line("Metrics on http://", Duration::from_secs(60));
    let start = line.find("http://").unwrap() + "http://".len();
    line[start..].split('/').next().unwrap().to_owned()
}

#[test]
fn under_overload_every_due_slot_ends_in_exactly_one_recorded_outcome() {
    let mock = Mock::start(MOCK, 40);
    // Each run takes about a second; six jobs are due every second and one
    // runs at a time: most slots can never start.
    mock.faults(json!([{"action": "delay", "delay_ms": 800, "times": 1_000_000}]));
    let schema = PgSchema::new();
    let mut jobs = Jobs::new();
    for i in 0..6 {
        jobs.add(&mock, &format!("busy_{i}"), "acme", &format!("C{i}"), "every = \"1s\"");
    }
    let file = jobs.write();
    let serve = Serve::start(
        &file,
        &schema.url(),
        &[
            "--max-concurrent",
            "1",
            "--log-format",
            "json",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let addr = metrics_addr(&serve);
    serve.wait_for_line("Serving 6 jobs", Duration::from_secs(60));
    let watched_from = Utc::now().duration_trunc(Span::seconds(1)).unwrap() + Span::seconds(2);
    std::thread::sleep(Duration::from_secs(10));
    let db = Db::open(Path::new(&schema.url()));
    // The metric counts what this (only) host recorded: it lies between two
    // reads of the table taken around the scrape.
    let missed = || db.scalar::<i64>("SELECT count(*) FROM schedule_slot WHERE status = 'missed'") as f64;
    let before = missed();
    let (_, metrics) = get(&addr, "/metrics");
    let after = missed();
    let scraped = metric_sum(&metrics, "nuntiq_slots_total", &[("outcome", "missed")]);
    assert!(
        before <= scraped && scraped <= after,
        "{before} <= {scraped} <= {after}\n{metrics}"
    );
    assert!(scraped > 0.0, "slots were missed under this load:\n{metrics}");
    let watched_until = Utc::now() - Span::seconds(3);
    let (code, log) = serve.stop();
    assert_eq!(code, 0, "{log}");

    let rows = db.rows("SELECT job_name, slot_at, status, outcome FROM schedule_slot");
    let mut recorded: BTreeMap<(String, DateTime<Utc>), String> = BTreeMap::new();
    for row in &rows {
        let key = (row[0].clone().unwrap(), parse_time(row[1].as_deref().unwrap()));
        assert!(
            recorded.insert(key.clone(), row[2].clone().unwrap()).is_none(),
            "one row per slot: {key:?}"
        );
    }
    // Every slot the cadence made due while serve ran, job by job.
    let mut unrecorded = Vec::new();
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..6 {
        let job = format!("busy_{i}");
        let mut slot = watched_from;
        while slot <= watched_until {
            match recorded.get(&(job.clone(), slot)) {
                Some(status) => *by_status.entry(status.clone()).or_default() += 1,
                None => unrecorded.push(format!("{job} {slot}")),
            }
            slot += Span::seconds(1);
        }
    }
    assert!(
        unrecorded.is_empty(),
        "due slots without an outcome: {unrecorded:?}\n{rows:?}"
    );
    let statuses: BTreeSet<&str> = by_status.keys().map(String::as_str).collect();
    assert!(
        statuses.is_subset(&BTreeSet::from(["succeeded", "failed", "missed", "skipped"])),
        "{by_status:?}"
    );
    assert!(by_status.get("succeeded").copied().unwrap_or(0) >= 2, "{by_status:?}");
    assert!(by_status.get("missed").copied().unwrap_or(0) >= 20, "{by_status:?}");

    // Each missed slot was named in a log line, once.
    let mut logged: Vec<(String, String)> = Vec::new();
    for line in log.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
        if line["detail"]["outcome"] == "missed" {
            for slot in line["detail"]["slots"].as_array().unwrap() {
                logged.push((
                    slot["job"].as_str().unwrap().into(),
                    slot["slot"].as_str().unwrap().into(),
                ));
            }
        }
    }
    let mut in_table: Vec<(String, String)> = rows
        .iter()
        .filter(|r| r[2].as_deref() == Some("missed"))
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    logged.sort();
    in_table.sort();
    assert_eq!(logged, in_table);

    // `slots` lists them, filtered by job and outcome.
    let (code, out, err) = host_output(&[
        "slots",
        "--db",
        &schema.url(),
        "--job",
        "busy_0",
        "--outcome",
        "missed",
        "--limit",
        "1000",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap();
    let expected = rows
        .iter()
        .filter(|r| r[0].as_deref() == Some("busy_0") && r[2].as_deref() == Some("missed"))
        .count();
    assert_eq!(listed.len(), expected);
    assert!(
        listed
            .iter()
            .all(|s| s["job_name"] == "busy_0" && s["result"] == "missed"),
        "{out}"
    );
    let (code, text, _) = host_output(&["slots", "--db", &schema.url(), "--outcome", "succeeded"]);
    assert_eq!(code, 0);
    assert!(
        text.lines().count() >= 3 && text.lines().all(|l| l.contains("succeeded")),
        "{text}"
    );
}

#[test]
fn with_missed_all_every_slot_runs_late_in_order_instead_of_being_missed() {
    let mock = Mock::start(MOCK, 40);
    mock.faults(json!([{"action": "delay", "delay_ms": 1200, "times": 1_000_000}]));
    let work = Workdir::new();
    let db = work.db();
    let mut jobs = Jobs::new();
    jobs.add(&mock, "catch_up", "acme", "C1", "every = \"1s\"\nmissed = \"all\"");
    let file = jobs.write();
    let serve = Serve::start(&file, db.to_str().unwrap(), &[]);
    serve.wait_for_line("Serving 1 jobs", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(8));
    let (code, log) = serve.stop();
    assert_eq!(code, 0, "{log}");
    let db = Db::open(&db);
    let rows = db.rows("SELECT slot_at, status FROM schedule_slot ORDER BY slot_at");
    // Runs take longer than the interval: with "all" each slot still ran,
    // one after another, and none was recorded as missed or skipped.
    assert!(rows.len() >= 3, "{rows:?}");
    assert!(
        rows.iter().all(|r| r[1].as_deref() == Some("succeeded")),
        "{rows:?}\n{log}"
    );
    for pair in rows.windows(2) {
        let (a, b) = (
            parse_time(pair[0][0].as_deref().unwrap()),
            parse_time(pair[1][0].as_deref().unwrap()),
        );
        assert_eq!(b - a, Span::seconds(1), "no slot left out: {rows:?}");
    }
}

#[test]
fn every_run_is_in_the_history_with_its_job_slot_and_error_kind_even_one_that_never_began() {
    let mock = Mock::start(MOCK, 20);
    let schema = PgSchema::new();
    let mut jobs = Jobs::new();
    jobs.add(&mock, "good", "acme", "C1", "every = \"1s\"");
    jobs.add(&mock, "broken", "acme", "C2", "every = \"1s\"");
    // The broken job's plugin is a copy of its own.
    let plugin = jobs.work.path("broken.wasm");
    std::fs::copy(guest("acme"), &plugin).unwrap();
    let at = jobs.toml.find("name = \"broken\"").unwrap();
    let tail = jobs.toml[at..].replacen(&guest("acme").display().to_string(), &plugin.display().to_string(), 1);
    jobs.toml.replace_range(at.., &tail);
    let file = jobs.write();
    let serve = Serve::start(&file, &schema.url(), &["--lease", "5s"]);
    serve.wait_for_line("Serving 2 jobs", Duration::from_secs(60));
    // Its plugin is replaced without an apply: each run is refused before any stream begins.
    std::fs::copy(guest("memory-hog"), &plugin).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let (code, log) = serve.stop();
    assert_eq!(code, 0, "{log}");

    let db = Db::open(Path::new(&schema.url()));
    let failed_slots = db.scalar::<i64>(
        "SELECT count(*) FROM schedule_slot WHERE job_name = 'broken' AND status = 'failed' AND outcome = 'invalid_plugin'",
    );
    assert!(failed_slots >= 2, "{log}");
    let (code, out, err) = host_output(&["runs", "--db", &schema.url(), "--limit", "1000", "--json"]);
    assert_eq!(code, 0, "{err}");
    let runs: Vec<Value> = serde_json::from_str(&out).unwrap();
    let of = |job: &str| runs.iter().filter(|r| r["job"] == job).collect::<Vec<_>>();
    let broken = of("broken");
    // Its first run may have come before the file went.
    let ran = db.scalar::<i64>(
        "SELECT count(*) FROM schedule_slot WHERE job_name = 'broken' AND status IN ('succeeded', 'failed')",
    );
    assert_eq!(broken.len() as i64, ran, "one history row per run: {out}");
    let broken: Vec<_> = broken.into_iter().filter(|r| r["status"] != "succeeded").collect();
    assert_eq!(
        broken.len() as i64,
        failed_slots,
        "one history row per failed slot: {out}"
    );
    for r in &broken {
        assert_eq!(r["status"], "failed");
        assert_eq!(r["error_kind"], "invalid_plugin");
        assert_eq!(r["customer_number"], "C2");
        assert!(r["slot"].as_str().unwrap().ends_with('Z'), "{r}");
        assert!(r["error_summary"].as_str().unwrap().contains("broken.wasm"), "{r}");
        assert!(r["usage"].is_object(), "{r}");
    }
    let good = of("good");
    let succeeded =
        db.scalar::<i64>("SELECT count(*) FROM schedule_slot WHERE job_name = 'good' AND status = 'succeeded'");
    assert_eq!(good.len() as i64, succeeded, "{out}");
    assert!(
        good.iter()
            .all(|r| r["status"] == "succeeded" && r["error_kind"].is_null() && r["slot"].is_string())
    );
    // Every slot's run id is in the history.
    assert_eq!(
        db.scalar::<i64>(
            "SELECT count(*) FROM schedule_slot s WHERE NOT EXISTS (SELECT 1 FROM delta_run r WHERE r.job_id = s.job_id)"
        ),
        0
    );
    let (code, text, _) = host_output(&["runs", "--db", &schema.url(), "--connector", "broken"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("job broken  slot ") && text.contains("error (invalid_plugin):"),
        "{text}"
    );
}

#[test]
fn serve_refuses_at_start_an_api_url_its_policy_denies_and_crons_that_never_fire() {
    let mock = Mock::start(MOCK, 5);
    let mut jobs = Jobs::new();
    jobs.add(&mock, "ok", "acme", "C1", "every = \"1h\"");
    jobs.add(&mock, "no_allow", "acme", "C2", "every = \"1h\"");
    // The second job loses its allow_hosts: its http api_url is then refused.
    let allow = format!("allow_hosts = [\"{}\"]\n", mock.allow_host());
    let at = jobs.toml.rfind(&allow).unwrap();
    jobs.toml.replace_range(at..at + allow.len(), "");
    let file = jobs.write();
    let db = jobs.work.db();
    let (code, _, err) = host_output(&["serve", file.to_str().unwrap(), "--db", db.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("job \"no_allow\"") && err.contains("config.api_url") && err.contains("allow_hosts"),
        "{err}"
    );
    assert!(!db.exists(), "nothing was written");

    for (cron, expected) in [("0 0 31 2 *", "never fires"), ("*/61 * * * *", "minute step /61")] {
        let mut jobs = Jobs::new();
        jobs.add(&mock, "fine", "acme", "C1", "every = \"1h\"");
        jobs.add(&mock, "never", "acme", "C2", &format!("cron = \"{cron}\""));
        let file = jobs.write();
        let db = jobs.work.db();
        let (code, _, err) = host_output(&["serve", file.to_str().unwrap(), "--db", db.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("job \"never\"") && err.contains("cron") && err.contains(expected),
            "{err}"
        );
        assert!(!db.exists());
    }
}

#[test]
fn sighup_does_not_stop_serve_and_its_jobs_go_on() {
    let mock = Mock::start(MOCK, 10);
    let mut jobs = Jobs::new();
    jobs.add(&mock, "acme_eu", "acme", "C1", "every = \"1s\"");
    let file = jobs.write();
    let db_path = jobs.work.db();
    let serve = Serve::start(&file, db_path.to_str().unwrap(), &[]);
    serve.wait_for_line("Serving 1 jobs", Duration::from_secs(60));
    wait_until("a first run", Duration::from_secs(30), || {
        db_path.exists()
            && Db::open(&db_path)
                .try_rows("SELECT 1 FROM schedule_slot WHERE status = 'succeeded'")
                .is_some_and(|r| !r.is_empty())
    });
    serve.signal(libc::SIGHUP);
    serve.wait_for_line("SIGHUP", Duration::from_secs(10));
    let succeeded =
        || Db::open(&db_path).scalar::<i64>("SELECT count(*) FROM schedule_slot WHERE status = 'succeeded'");
    let before = succeeded();
    serve.signal(libc::SIGHUP);
    wait_until("two more runs after SIGHUP", Duration::from_secs(30), || {
        succeeded() >= before + 2
    });
    assert!(serve.is_running());
    let (code, log) = serve.stop();
    assert_eq!(code, 0, "exits as after any SIGTERM: {log}");
    assert_eq!(log.matches("SIGHUP: Applied").count(), 2, "each SIGHUP applies the file again: {log}");
}

/// The sample names a scrape can hold, from its `# TYPE` lines (a family
/// with no series yet still has one): a counter's `_total`, a histogram's
/// `_bucket`, `_sum` and `_count`, an info's `_info`, a gauge's own name.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            "info" => {
                names.insert(format!("{name}_info"));
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// The metric names a PromQL expression reads: identifiers left once label
/// matchers (`{…}`), ranges (`[…]`), strings, grouping clauses (`by (…)`),
/// function calls and keywords are taken out.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    let mut plain = String::new();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut in_string = None;
    for c in expr.chars() {
        match (in_string, c) {
            (Some(q), c) if c == q => in_string = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => in_string = Some(c),
            (None, '{') => depth_brace += 1,
            (None, '}') => depth_brace -= 1,
            (None, '[') => depth_bracket += 1,
            (None, ']') => depth_bracket -= 1,
            (None, c) if depth_brace == 0 && depth_bracket == 0 => plain.push(c),
            _ => plain.push(' '),
        }
    }
    let chars: Vec<char> = plain.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let open = chars[i..].iter().position(|c| !c.is_whitespace()).map(|p| i + p);
        // A function call, or an aggregation with its grouping first (`max by (job) (…)`).
        let rest: String = open.map_or_else(String::new, |p| chars[p..].iter().take(8).collect());
        let called = open.is_some_and(|p| chars[p] == '(')
            || ["by", "without"]
                .iter()
                .any(|g| rest.strip_prefix(g).is_some_and(|r| r.starts_with([' ', '('])));
        const GROUPING: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
        const KEYWORDS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "inf", "nan"];
        if GROUPING.contains(&word.as_str()) {
            // Its label list, if any, names labels, not metrics.
            if let (true, Some(p)) = (called, open) {
                i = p + chars[p..].iter().position(|c| *c == ')').unwrap_or(0);
            }
        } else if !called
            && !KEYWORDS.contains(&word.to_lowercase().as_str())
            && !chars[..start].last().is_some_and(|c| c.is_ascii_digit() || *c == '.')
        {
            names.insert(word);
        }
    }
    names
}

#[test]
fn the_promql_reader_finds_metric_names_only() {
    assert_eq!(
        promql_metrics(r#"time() - max by (job) (nuntiq_job_last_success_timestamp_seconds{job=~"a|b"}) > 3.6e3"#),
        BTreeSet::from(["nuntiq_job_last_success_timestamp_seconds".to_owned()])
    );
    assert_eq!(
        promql_metrics("sum by (le) (rate(x_bucket[5m])) / on (instance) group_left y offset 5m"),
        BTreeSet::from(["x_bucket".to_owned(), "y".to_owned()])
    );
    assert_eq!(
        promql_metrics("count by (version, contracts) (nuntiq_build_info) * 2e3"),
        BTreeSet::from(["nuntiq_build_info".to_owned()])
    );
}

#[test]
fn the_dashboard_and_the_alert_rules_read_only_metrics_serve_exports() {
    let mock = Mock::start(MOCK, 10);
    let mut jobs = Jobs::new();
    jobs.add(&mock, "acme_eu", "acme", "C1", "every = \"1s\"");
    let file = jobs.write();
    let db = jobs.work.db();
    let serve = Serve::start(&file, db.to_str().unwrap(), &["--metrics-addr", "127.0.0.1:0"]);
    let addr = metrics_addr(&serve);
    wait_until("a run succeeded", Duration::from_secs(30), || {
        get(&addr, "/metrics")
            .1
            .contains("nuntiq_job_last_success_timestamp_seconds{")
    });
    let (status, exposition) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(get(&addr, "/readyz"), (200, "ready\n".to_owned()));
    assert_eq!(get(&addr, "/healthz"), (200, "ok\n".to_owned()));
    let (code, log) = serve.stop();
    assert_eq!(code, 0, "{log}");
    let exported = exported_names(&exposition);
    for name in [
        "nuntiq_slots_total",
        "nuntiq_build_info",
        "process_resident_memory_bytes",
        "process_open_fds",
        "nuntiq_streams_stale_running",
    ] {
        assert!(exported.contains(name), "{name} is exported:\n{exposition}");
    }
    assert!(exposition.contains("nuntiq_build_info{version=\""), "{exposition}");
    let rss = metric_sum(&exposition, "process_resident_memory_bytes", &[]);
    assert!(rss > 1e6, "a real RSS: {rss}");

    let root = workspace_root().join("deploy");
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("prometheus-alerts.yml")).unwrap()).unwrap();
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("each rule is an alert");
            let expr = rule["expr"].as_str().expect("each rule has an expr");
            let read = promql_metrics(expr);
            assert!(!read.is_empty(), "{name}: {expr}");
            for metric in read {
                assert!(
                    exported.contains(&metric),
                    "{name} reads {metric}, which serve does not export"
                );
            }
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{name} says what is wrong"
            );
            alerts += 1;
        }
    }
    assert!(alerts >= 6, "{alerts}");

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("grafana-dashboard.json")).unwrap()).unwrap();
    let mut exprs = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            let read = promql_metrics(expr);
            assert!(!read.is_empty(), "{}: {expr}", panel["title"]);
            for metric in read {
                assert!(
                    exported.contains(&metric),
                    "panel {} reads {metric}, not exported",
                    panel["title"]
                );
            }
            exprs += 1;
        }
    }
    assert!(exprs >= 12, "{exprs}");
}

#[test]
fn two_hosts_with_room_for_everything_share_the_slots_and_a_killed_hosts_jobs_run_again_within_seconds() {
    let mock = Mock::start(MOCK, 20);
    // Slow pages: runs are going (their slots and streams held) when a host dies.
    mock.faults(json!([{"action": "delay", "delay_ms": 400, "times": 1_000_000}]));
    let schema = PgSchema::new();
    let mut jobs = Jobs::new();
    for i in 0..20 {
        jobs.add(
            &mock,
            &format!("acme_{i:02}"),
            "acme",
            &format!("C{i:02}"),
            "every = \"2s\"",
        );
    }
    let file = jobs.write();
    // The default 60 s lease: a dead host's jobs must not wait for it.
    let a = Serve::start(&file, &schema.url(), &["--log-level", "warn"]);
    let mut b = Serve::start(&file, &schema.url(), &["--log-level", "warn"]);
    let db = Db::open(Path::new(&schema.url()));
    let hosts = || db.try_rows("SELECT id FROM hosts").map_or(0, |r| r.len());
    wait_until("both hosts heartbeat", Duration::from_secs(60), || hosts() == 2);
    let from = (Utc::now() + Span::seconds(4)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    std::thread::sleep(Duration::from_secs(14));
    let shares = db.rows(&format!(
        "SELECT pid, count(*) FROM schedule_slot WHERE status = 'succeeded' AND slot_at >= '{from}' GROUP BY pid"
    ));
    let counts: Vec<i64> = shares
        .iter()
        .map(|r| r[1].as_deref().unwrap().parse().unwrap())
        .collect();
    let total: i64 = counts.iter().sum();
    assert!(total >= 40, "at least two rounds of twenty slots ran: {shares:?}");
    assert_eq!(counts.len(), 2, "both hosts ran slots: {shares:?}");
    for n in &counts {
        assert!(
            *n * 100 <= total * 65,
            "no host ran more than 65 % of {total}: {shares:?}"
        );
    }

    // Killed while it holds slots and streams of runs going on.
    let b_pid = b.pid();
    let held_by_b = || {
        db.scalar::<i64>(&format!(
            "SELECT count(*) FROM delta_stream_state WHERE status = 'running' AND owner_pid = {b_pid}"
        ))
    };
    wait_until("host b is in the middle of runs", Duration::from_secs(10), || held_by_b() > 0);
    b.kill();
    let killed = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let streams_of_b = db.rows(&format!(
        "SELECT customer_number FROM delta_stream_state WHERE status = 'running' AND owner_pid = {b_pid}"
    ));
    let slots_of_b = db.rows(&format!(
        "SELECT job_name FROM schedule_slot WHERE status = 'running' AND pid = {b_pid}"
    ));
    assert!(!streams_of_b.is_empty() && !slots_of_b.is_empty(), "{streams_of_b:?} {slots_of_b:?}");
    let started = std::time::Instant::now();
    wait_until("every job ran again after the kill", Duration::from_secs(10), || {
        db.scalar::<i64>(&format!(
            "SELECT count(DISTINCT job_name) FROM schedule_slot WHERE status = 'succeeded' AND claimed_at > '{killed}'"
        )) == 20
    });
    let took = started.elapsed();
    let (code, log) = a.stop();
    assert_eq!(code, 0, "{log}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    // Nothing of the dead host's was left running: its slots were taken
    // over and its streams began again by the other host's runs.
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM schedule_slot WHERE status = 'running'"),
        0,
        "{log}"
    );
    assert_eq!(held_by_b(), 0, "{log}");
    for customer in streams_of_b.iter().map(|r| r[0].clone().unwrap()) {
        assert!(
            db.scalar::<i64>(&format!(
                "SELECT count(*) FROM delta_run WHERE customer_number = '{customer}' AND status = 'succeeded' \
                 AND started_at_utc > '{killed}'"
            )) >= 1,
            "the stream of {customer} that host b held ran again\n{log}"
        );
    }
    // Host b's slots that were going were taken over, or are history blamed
    // on its death (not on a lease that had not run out).
    for job in slots_of_b.iter().map(|r| r[0].clone().unwrap()) {
        let settled = db.scalar::<i64>(&format!(
            "SELECT count(*) FROM schedule_slot WHERE job_name = '{job}' AND claimed_at >= '{from}' AND \
             ((pid = {b_pid} AND status = 'abandoned' AND outcome = 'host_died') OR (takeovers > 0 AND status <> 'running'))"
        ));
        assert!(settled >= 1, "{job}: {:?}\n{log}", db.rows(&format!("SELECT * FROM schedule_slot WHERE job_name = '{job}'")));
    }
}

/// A TCP proxy in front of the shared PostgreSQL: cut and restored by the
/// test, so an outage is simulated without stopping the server other tests
/// use. While cut it closes every connection it carried and each new one.
pub(crate) struct PgProxy {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    carried: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl PgProxy {
    pub(crate) fn start(open: bool) -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Self {
            port,
            open: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(open)),
            carried: Default::default(),
        };
        let (gate, carried) = (proxy.open.clone(), proxy.carried.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !gate.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect("127.0.0.1:5432") else {
                    continue;
                };
                let mut list = carried.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                drop(list);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        proxy
    }

    /// `url` (a test schema's) through this proxy.
    pub(crate) fn url(&self, url: &str) -> String {
        url.replace("127.0.0.1:5432", &format!("127.0.0.1:{}", self.port))
    }

    pub(crate) fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for stream in self.carried.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    pub(crate) fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_database_outage_is_the_stores_fault_everywhere_and_everything_is_released_once_it_answers() {
    let mock = Mock::start(MOCK, 40);
    // Slow pages: runs are in flight when the database goes away.
    mock.faults(json!([{"action": "delay", "delay_ms": 1500, "times": 1_000_000}]));
    let schema = PgSchema::new();
    assert!(schema.url().contains("127.0.0.1:5432"), "{}", schema.url());
    let proxy = PgProxy::start(true);
    let mut jobs = Jobs::new();
    // A commit that finds the database away is tried again for the run's
    // grace: 2 s here, shorter than the outage.
    for i in 0..3 {
        jobs.add(&mock, &format!("acme_{i}"), "acme", &format!("C{i}"), "every = \"1s\"\ngrace = \"2s\"");
    }
    let file = jobs.write();
    let serve = Serve::start(&file, &proxy.url(&schema.url()), &["--metrics-addr", "127.0.0.1:0"]);
    let addr = metrics_addr(&serve);
    let db = Db::open(Path::new(&schema.url()));
    wait_until("runs are going", Duration::from_secs(60), || {
        serve.log().matches("Fetched page 1").count() >= 3
    });
    // Cut while a run waits for its page (it has begun its stream).
    wait_until("a run mid-request", Duration::from_secs(30), || {
        let log = serve.log();
        log.matches("Pulling suppliers").count() > log.matches("Fetched page 1").count()
    });
    proxy.cut();
    wait_until("/readyz says the database is gone", Duration::from_secs(10), || {
        get(&addr, "/readyz").0 == 503
    });
    assert_eq!(get(&addr, "/healthz"), (200, "ok\n".to_owned()), "liveness only");
    std::thread::sleep(Duration::from_secs(5));
    proxy.restore();
    let back = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    wait_until("/readyz answers 200 again", Duration::from_secs(10), || {
        get(&addr, "/readyz").0 == 200
    });
    // Nothing that began before the database came back is still running 10 s later.
    std::thread::sleep(Duration::from_secs(10));
    let stuck_slots = db.rows(&format!(
        "SELECT job_name, slot_at FROM schedule_slot WHERE status = 'running' AND claimed_at < '{back}'"
    ));
    let stuck_streams = db.rows(&format!(
        "SELECT connector_name FROM delta_stream_state WHERE status = 'running' AND started_at_utc < '{back}'"
    ));
    let (_, metrics) = get(&addr, "/metrics");
    let (code, log) = serve.stop();
    assert!(
        stuck_slots.is_empty() && stuck_streams.is_empty(),
        "{stuck_slots:?} {stuck_streams:?}\n{log}"
    );
    assert_eq!(code, 0, "{log}");

    // The runs cut off are the store's failures, alike in slots, runs and metrics.
    let slots = db
        .scalar::<i64>("SELECT count(*) FROM schedule_slot WHERE status = 'failed' AND outcome = 'store_unavailable'");
    assert!(slots >= 1, "{log}");
    let runs = db.scalar::<i64>("SELECT count(DISTINCT job_id) FROM delta_run WHERE error_kind = 'store_unavailable'");
    assert_eq!(runs, slots, "{log}");
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM schedule_slot WHERE outcome IN ('connector_error', 'lease_expired')"),
        0,
        "no one else is blamed"
    );
    let counted = metric_sum(&metrics, "nuntiq_runs_total", &[("status", "store_unavailable")]);
    assert_eq!(counted, slots as f64, "{metrics}");
    // Slots whose time passed meanwhile are missed, for that reason.
    assert!(
        db.scalar::<i64>(
            "SELECT count(*) FROM schedule_slot WHERE status = 'missed' AND outcome = 'store_unavailable'"
        ) >= 3,
        "{log}"
    );
    assert!(
        metric_sum(&metrics, "nuntiq_store_errors_total", &[]) >= 1.0,
        "{metrics}"
    );
    // One line when the outage starts, one when it ends.
    assert_eq!(log.matches("database outage began").count(), 1, "{log}");
    assert_eq!(log.matches("database outage ended").count(), 1, "{log}");
}

#[test]
fn serve_started_while_the_database_is_down_waits_for_it() {
    let mock = Mock::start(MOCK, 10);
    let schema = PgSchema::new();
    let proxy = PgProxy::start(false);
    let mut jobs = Jobs::new();
    jobs.add(&mock, "acme_eu", "acme", "C1", "every = \"1s\"");
    let file = jobs.write();
    let serve = Serve::start(&file, &proxy.url(&schema.url()), &["--wait-for-db", "30s"]);
    serve.wait_for_line("waiting up to 30s for the database", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    assert!(serve.is_running(), "{}", serve.log());
    proxy.restore();
    serve.wait_for_line("answers after", Duration::from_secs(15));
    let db = Db::open(Path::new(&schema.url()));
    wait_until("a run succeeded", Duration::from_secs(30), || {
        db.try_rows("SELECT 1 FROM schedule_slot WHERE status = 'succeeded'")
            .is_some_and(|r| !r.is_empty())
    });
    let (code, log) = serve.stop();
    assert_eq!(code, 0, "{log}");

    // Without waiting, a database that does not answer is still exit 2, at once.
    let (code, _, err) = host_output(&[
        "serve",
        file.to_str().unwrap(),
        "--db",
        &proxy_down_url(),
        "--wait-for-db",
        "0s",
    ]);
    assert_eq!(code, 2, "{err}");
}

/// A PostgreSQL URL whose every connection is closed at once.
fn proxy_down_url() -> String {
    let closed = PgProxy::start(false);
    closed.url(&pg_server())
}

#[test]
fn a_process_restarted_after_a_crash_takes_over_its_dead_predecessors_slot_at_once() {
    let mock = Mock::start(MOCK, 300);
    // Slow pages: the first process is killed in the middle of its run.
    mock.faults(json!([{"action": "delay", "delay_ms": 100, "times": 1_000_000}]));
    let schema = PgSchema::new();
    let mut jobs = Jobs::new();
    jobs.add(&mock, "acme_eu", "acme", "10000001", "every = \"1h\"");
    let file = jobs.write();
    // The default 60 s lease, and a heartbeat that goes stale only after 4 s.
    let mut first = Serve::start(&file, &schema.url(), &[]);
    first.wait_for_line("Fetched page 1", Duration::from_secs(60));
    first.kill();
    let db = Db::open(Path::new(&schema.url()));
    assert_eq!(db.scalar::<String>("SELECT status FROM schedule_slot"), "running");

    mock.faults(json!([]));
    let restarted = std::time::Instant::now();
    let second = Serve::start(&file, &schema.url(), &[]);
    second.wait_for_line("of this machine ended without stopping", Duration::from_secs(30));
    let line = second.wait_for_line("took over the slot", Duration::from_secs(30));
    let took = restarted.elapsed();
    wait_until("the slot ended", Duration::from_secs(60), || {
        db.scalar::<String>("SELECT status FROM schedule_slot") != "running"
    });
    let (code, log) = second.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        line.contains("stopped its heartbeat") || line.contains("heartbeat"),
        "{line}"
    );
    assert!(
        took < Duration::from_secs(10),
        "taken over {took:?} after the restart, not after a lease"
    );
    assert_eq!(
        db.rows("SELECT status, takeovers FROM schedule_slot"),
        [[Some("succeeded".to_owned()), Some("1".to_owned())]],
        "{log}"
    );
    // The dead process's stream lease was freed at once too: its run is
    // failed as abandoned by a process that no longer exists, and the
    // restarted one's run committed.
    let runs = db.rows("SELECT status, error_summary FROM delta_run ORDER BY started_at_utc");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0][0].as_deref(), Some("failed"), "{runs:?}");
    assert!(
        runs[0][1].as_deref().is_some_and(|s| s.contains("abandoned") && s.contains("no longer exists")),
        "{runs:?}"
    );
    assert_eq!(runs[1][0].as_deref(), Some("succeeded"), "{runs:?}");
}

#[test]
fn a_dead_host_on_another_machine_loses_its_slot_and_stream_once_its_heartbeat_is_stale() {
    let mock = Mock::start(MOCK, 300);
    // Slow pages: the first process is killed in the middle of its run.
    mock.faults(json!([{"action": "delay", "delay_ms": 100, "times": 1_000_000}]));
    let schema = PgSchema::new();
    let mut jobs = Jobs::new();
    jobs.add(&mock, "acme_eu", "acme", "10000001", "every = \"1h\"");
    let file = jobs.write();
    // The default 60 s lease.
    let mut first = Serve::start(&file, &schema.url(), &[]);
    first.wait_for_line("Fetched page 1", Duration::from_secs(60));
    first.kill();
    // Made a process of another machine: its pid cannot be looked up here,
    // so only its heartbeat can say it is gone.
    let db = Db::open(Path::new(&schema.url()));
    db.execute("UPDATE hosts SET hostname = 'elsewhere', instance = 'boot:elsewhere'");
    db.execute("UPDATE schedule_slot SET host = 'elsewhere'");
    assert_eq!(
        db.execute("UPDATE delta_stream_state SET owner_host = 'elsewhere', owner_instance = 'boot:elsewhere' WHERE status = 'running'"),
        1
    );

    mock.faults(json!([]));
    let restarted = std::time::Instant::now();
    let second = Serve::start(&file, &schema.url(), &[]);
    let line = second.wait_for_line("took over the slot", Duration::from_secs(30));
    wait_until("the slot ended", Duration::from_secs(60), || {
        db.scalar::<String>("SELECT status FROM schedule_slot") != "running"
    });
    let took = restarted.elapsed();
    let (code, log) = second.stop();
    assert_eq!(code, 0, "{log}");
    assert!(line.contains("on elsewhere") && line.contains("heartbeat stopped"), "{line}");
    assert!(!log.contains("ended without stopping"), "not a process of this machine: {log}");
    assert!(took < Duration::from_secs(15), "taken over {took:?} after the restart, not after the 60 s lease");
    assert_eq!(
        db.rows("SELECT status, takeovers FROM schedule_slot"),
        [[Some("succeeded".to_owned()), Some("1".to_owned())]],
        "{log}"
    );
    let runs = db.rows("SELECT status, error_summary FROM delta_run ORDER BY started_at_utc");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs[0][1].as_deref().is_some_and(|s| s.contains("stopped its heartbeat")),
        "the stream was taken over for the stale heartbeat: {runs:?}"
    );
    assert_eq!(runs[1][0].as_deref(), Some("succeeded"), "{runs:?}");
}
