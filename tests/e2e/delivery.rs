//! Delivery guarantees: SIGKILL at many points of a run, overlapping runs,
//! stale leases, concurrent readers, and the state administration commands.

use crate::MOCK;
use chrono::{Duration as Days, Utc};
use nuntiq_e2e::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// Every request to the mock waits this long, so a run spans many pages of time.
fn slow_pages(mock: &Mock, delay_ms: u64) {
    mock.faults(json!([{"action": "delay", "delay_ms": delay_ms, "times": 1_000_000}]));
}

/// The store must hold every supplier the committed cursor covers: rows
/// updated after the window start and before the cursor's last second (the
/// next run re-reads that second), as they are now.
fn assert_cursor_not_ahead_of_data(db: &Path, mock: &Mock) {
    let db = Db::open(db);
    let Some(cursor) = db
        .state("acme_eu", "suppliers")
        .and_then(|s| s["committed_cursor_value"].as_str().map(|c| parse_time(&overlap(c))))
    else {
        return;
    };
    let stored = db.suppliers("10000001");
    let window = Utc::now() - Days::days(7);
    let covered: Vec<Value> = mock
        .truth()
        .into_iter()
        .filter(|r| parse_time(r["updated_at"].as_str().unwrap()) <= cursor)
        .collect();
    for (number, expected) in expected_from(&covered, window) {
        assert_eq!(
            stored.get(&number),
            Some(&expected),
            "{number} is covered by cursor {cursor} but not stored"
        );
    }
    assert_eq!(db.count("supplier") as usize, stored.len(), "no duplicates");
}

/// After a clean run the store equals the source's truth and the cursor is its newest stamp.
fn assert_converged(db: &Path, mock: &Mock) {
    let truth = mock.truth();
    let window = Utc::now() - Days::days(7);
    let db = Db::open(db);
    let stored = db.suppliers("10000001");
    let expected = expected_from(&truth, window);
    assert_same_suppliers(&stored, &expected);
    let state = db.state("acme_eu", "suppliers").unwrap();
    assert_eq!(state["status"], "succeeded");
    let cursor = parse_time(state["committed_cursor_value"].as_str().unwrap());
    assert_eq!(Some(cursor), newest_after(&truth, window));
}

on_both_engines!(
    sigkill_at_many_points_then_rerun_converges_on_sqlite,
    sigkill_at_many_points_then_rerun_converges_on_postgres,
    sigkill_at_many_points_then_rerun_converges
);

fn sigkill_at_many_points_then_rerun_converges(db: &Path) {
    let mock = Mock::start(MOCK, 1000);
    slow_pages(&mock, 20);
    let work = Workdir::new();
    let mut settings = acme_settings(&mock.api_url(), "acme_eu");
    settings["config"]["page_size"] = json!(25);
    let settings = work.write_settings("settings.json", &settings);
    let db = db.to_owned();
    let window_start = (Utc::now() - Days::days(7)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let backfill = format!("since_override={window_start}");

    // How long one full multi-page run takes here.
    let started = Instant::now();
    let first = run_acme(&mock, &settings, &db, &["--param", &backfill]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let full = started.elapsed();

    // Kill points spread over the whole run: fetching, between flushes, inside
    // a flush, right before and after the commit.
    let points = 28;
    let mut killed = 0;
    for i in 0..points {
        if i % 3 == 0 {
            mock.mutate(2, 1);
        }
        // 24 points across the run, 4 around its end (the commit and the exit).
        let at = match i {
            0..24 => full.mul_f64(0.03 + 0.87 * i as f64 / 23.0),
            _ => full.mul_f64(0.95 + 0.05 * (i - 24) as f64),
        };
        let mut child = spawn_acme(&mock, &settings, &db, &["--param", &backfill]);
        std::thread::sleep(at);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        assert_cursor_not_ahead_of_data(&db, &mock);

        // The rerun takes the stream over at once (its owner is dead) and converges.
        let rerun = run_acme(&mock, &settings, &db, &[]);
        assert_eq!(
            rerun.code, 0,
            "kill point {i} ({at:?}): {}\n{}",
            rerun.envelope, rerun.stderr
        );
        assert_converged(&db, &mock);
    }
    eprintln!("{killed} of {points} kill points hit a running process; a full run took {full:?}");
    assert!(
        killed >= 20,
        "only {killed} of {points} kill points hit a running process (a run took {full:?})"
    );
}

on_both_engines!(
    two_processes_at_once_exactly_one_runs_on_sqlite,
    two_processes_at_once_exactly_one_runs_on_postgres,
    two_processes_at_once_exactly_one_runs
);

fn two_processes_at_once_exactly_one_runs(db: &Path) {
    let mock = Mock::start(MOCK, 300);
    let work = Workdir::new();
    let mut settings = acme_settings(&mock.api_url(), "acme_eu");
    settings["config"]["page_size"] = json!(10);
    let settings = work.write_settings("settings.json", &settings);
    let db = db.to_owned();
    // A first run creates the database; the contest is over a backfill of ~30 slow pages.
    let warm = run_acme(&mock, &settings, &db, &[]);
    assert_eq!(warm.code, 0, "{}", warm.stderr);
    slow_pages(&mock, 30);
    let runs_before = history(&db).len();

    let a = spawn_acme(
        &mock,
        &settings,
        &db,
        &["--param", "since_override=2020-01-01T00:00:00Z"],
    );
    let b = spawn_acme(
        &mock,
        &settings,
        &db,
        &["--param", "since_override=2020-01-01T00:00:00Z"],
    );
    let (pid_a, pid_b) = (a.id(), b.id());
    let (a, b) = (finish(a), finish(b));
    let (winner, loser, winner_pid) = match (a.code, b.code) {
        (0, 1) => (a, b, pid_a),
        (1, 0) => (b, a, pid_b),
        _ => panic!(
            "exactly one must run: {}\n{}\n--\n{}\n{}",
            a.envelope, a.stderr, b.envelope, b.stderr
        ),
    };
    assert_eq!(winner.envelope["success"], true);
    assert_eq!(loser.error_kind(), "already_running", "{}", loser.envelope);
    let message = loser.error_message();
    assert!(
        message.contains(&format!("by process {winner_pid} on ")),
        "names the owner: {message}"
    );
    assert!(message.contains(" started 20"), "says when it started: {message}");
    assert_eq!(history(&db).len(), runs_before + 1, "the refused run changed nothing");
    let state = Db::open(&db).state("acme_eu", "suppliers").unwrap();
    assert_eq!(state["status"], "succeeded");
    assert_eq!(state["committed_cursor_value"], winner.envelope["cursor_committed"]);
}

on_both_engines!(
    stale_running_row_is_taken_over_after_its_lease_or_at_once_if_its_process_died_on_sqlite,
    stale_running_row_is_taken_over_after_its_lease_or_at_once_if_its_process_died_on_postgres,
    stale_running_row_is_taken_over_after_its_lease_or_at_once_if_its_process_died
);

fn stale_running_row_is_taken_over_after_its_lease_or_at_once_if_its_process_died(db: &Path) {
    let mock = Mock::start(MOCK, 300);
    slow_pages(&mock, 200);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let db = db.to_owned();
    let kill_mid_run = |lease: &str| {
        let mut child = spawn_acme(&mock, &settings, &db, &["--lease", lease]);
        wait_until_running(&db);
        child.kill().unwrap();
        child.wait().unwrap();
    };

    // A process on another host (staged): its lease must run out first.
    kill_mid_run("2s");
    Db::open_writable(&db).execute("UPDATE delta_stream_state SET owner_host = 'other-host'");
    let refused = run_acme(&mock, &settings, &db, &[]);
    assert_eq!(refused.code, 1);
    assert_eq!(refused.error_kind(), "already_running", "{}", refused.envelope);
    assert!(
        refused.error_message().contains("on other-host"),
        "{}",
        refused.envelope
    );
    std::thread::sleep(Duration::from_millis(2100));
    let after_lease = run_acme(&mock, &settings, &db, &[]);
    assert_eq!(after_lease.code, 0, "{}", after_lease.stderr);
    assert!(
        after_lease.stderr.contains("its lease expired at"),
        "{}",
        after_lease.stderr
    );

    // A dead process on this host: taken over at once, long lease or not.
    kill_mid_run("1h");
    let at_once = run_acme(&mock, &settings, &db, &[]);
    assert_eq!(at_once.code, 0, "{}", at_once.stderr);
    assert!(at_once.stderr.contains("no longer exists"), "{}", at_once.stderr);
    let abandoned = history(&db)
        .iter()
        .filter(|r| r["error_summary"].as_str().unwrap_or("").starts_with("abandoned: "))
        .count();
    assert_eq!(abandoned, 2, "both killed runs are recorded as abandoned");
}

/// Polls until a run holds the stream.
fn wait_until_running(db: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let exists = db.to_string_lossy().starts_with("postgres://") || db.exists();
        let status = exists
            .then(|| Db::open(db).try_rows("SELECT status FROM delta_stream_state"))
            .flatten()
            .and_then(|rows| rows.into_iter().next())
            .and_then(|row| row.into_iter().next().flatten());
        if status.as_deref() == Some("running") {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no run started");
}

#[test]
fn a_live_run_keeps_its_lease_past_expiry_and_readers_are_never_blocked() {
    let mock = Mock::start(MOCK, 400);
    slow_pages(&mock, 100);
    let work = Workdir::new();
    let mut settings = acme_settings(&mock.api_url(), "acme_eu");
    settings["config"]["page_size"] = json!(10);
    let settings = work.write_settings("settings.json", &settings);
    let db = work.db();
    // About 40 pages of 100 ms: several times the one-second lease.
    let long = spawn_acme(&mock, &settings, &db, &["--lease", "1s"]);
    wait_until_running(&db);
    let mut reads = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        let out = host_command()
            .args(["state", "show", "--json", "--db", db.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "a reader during the run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
        if rows[0]["status"] == "running" {
            assert!(
                rows[0]["run_id"].is_string() && rows[0]["owner_pid"].is_number(),
                "{rows}"
            );
        }
        let export = host_command()
            .args(["suppliers", "export", "--db", db.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(export.status.success());
        reads += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    // Well past the first lease's expiry, another process is still refused.
    let second = run_acme(&mock, &settings, &db, &["--lease", "1s"]);
    assert_eq!(
        second.error_kind(),
        "already_running",
        "{}\n{}",
        second.envelope,
        second.stderr
    );
    let long = finish(long);
    assert_eq!(
        long.code, 0,
        "the live run completed: {}\n{}",
        long.envelope, long.stderr
    );
    assert!(!long.stderr.contains("lost its lease"), "{}", long.stderr);
    assert!(reads >= 10);
}

/// Every run in the history, newest first.
pub(crate) fn history(db: &Path) -> Vec<Value> {
    let (code, out, err) = host_output(&["runs", "--json", "--db", db.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().clone()
}

#[test]
fn reset_is_audited_and_the_next_run_starts_from_it() {
    let mock = Mock::start(MOCK, 200);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let db = work.db();
    let dbs = db.to_str().unwrap();
    let first = run_acme(&mock, &settings, &db, &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let cursor = first.envelope["cursor_committed"].as_str().unwrap().to_owned();

    // Backwards, with a reason: allowed and audited.
    let back = (Utc::now() - Days::days(2)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let (code, out, err) = host_output(&[
        "state",
        "reset",
        "--db",
        dbs,
        "--connector",
        "acme_eu",
        "--stream",
        "suppliers",
        "--cursor",
        &back,
        "--reason",
        "re-pull two days after the ERP fix",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("cursor {cursor} -> {back} (status idle)")),
        "{out}"
    );
    let state = Db::open(&db).state("acme_eu", "suppliers").unwrap();
    assert_eq!(
        (state["status"].as_str(), state["committed_cursor_value"].as_str()),
        (Some("idle"), Some(back.as_str()))
    );

    let (code, out, _) = host_output(&["state", "audit", "--db", dbs, "--json"]);
    assert_eq!(code, 0);
    let events: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(events[0]["event_type"], "cursor_reset");
    assert_eq!(events[0]["old_cursor_value"], cursor.as_str());
    assert_eq!(events[0]["new_cursor_value"], back.as_str());
    assert_eq!(events[0]["reason"], "re-pull two days after the ERP fix");
    assert_eq!(events[1]["event_type"], "cursor_advance");

    // The next run fetches from the reset cursor.
    let before = mock.requests().len();
    let next = run_acme(&mock, &settings, &db, &[]);
    assert_eq!(next.code, 0, "{}", next.stderr);
    assert_eq!(
        mock.requests()[before]["query"]["updated_after"],
        overlap(&back).as_str()
    );
    assert_eq!(next.envelope["fetched"], fetched_after(&mock.truth(), &overlap(&back)));

    // Refusals: no reason, a malformed cursor, an unknown stream.
    let (code, _, err) = host_output(&[
        "state",
        "reset",
        "--db",
        dbs,
        "--connector",
        "acme_eu",
        "--stream",
        "suppliers",
        "--cursor",
        &back,
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--reason"), "{err}");
    let (code, _, err) = host_output(&[
        "state",
        "reset",
        "--db",
        dbs,
        "--connector",
        "acme_eu",
        "--stream",
        "suppliers",
        "--cursor",
        "last tuesday",
        "--reason",
        "x",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--cursor: \"last tuesday\" is not an RFC 3339 timestamp"),
        "{err}"
    );
    let (code, _, err) = host_output(&[
        "state",
        "reset",
        "--db",
        dbs,
        "--connector",
        "nope",
        "--stream",
        "suppliers",
        "--cursor",
        &back,
        "--reason",
        "x",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("no stream nope/suppliers"), "{err}");
}

#[test]
fn run_history_records_every_run_with_the_plugin_hash() {
    let mock = Mock::start(MOCK, 100);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let db = work.db();
    let ok = run_acme(&mock, &settings, &db, &[]);
    mock.faults(json!([{"action": "status", "status": 404}]));
    let failed = run_acme(&mock, &settings, &db, &[]);
    assert_eq!((ok.code, failed.code), (0, 1));

    let runs = history(&db);
    assert_eq!(runs.len(), 2);
    let (newest, oldest) = (&runs[0], &runs[1]);
    assert_eq!(oldest["status"], "succeeded");
    assert_eq!(oldest["cursor_before"], Value::Null);
    assert_eq!(oldest["cursor_after"], ok.envelope["cursor_committed"]);
    assert_eq!(oldest["records_processed"], ok.envelope["fetched"]);
    assert_eq!(newest["status"], "failed");
    assert_eq!(newest["cursor_before"], ok.envelope["cursor_committed"]);
    assert!(
        newest["error_summary"].as_str().unwrap().contains("HTTP 404"),
        "{newest}"
    );
    assert!(newest["ended_at_utc"].is_string() && newest["started_at_utc"].is_string());
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(std::fs::read(guest("acme")).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(runs.iter().all(|r| r["plugin_sha256"] == hash.as_str()));
    assert!(
        runs.iter()
            .all(|r| r["owner_pid"].is_number() && r["owner_host"].is_string())
    );

    let (code, out, _) = host_output(&["runs", "--db", db.to_str().unwrap(), "--limit", "1"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("failed") && !out.contains("succeeded"),
        "newest first, one row: {out}"
    );
}

#[test]
fn a_live_run_in_another_pid_namespace_on_this_hostname_is_not_taken_over() {
    let mock = Mock::start(MOCK, 100);
    slow_pages(&mock, 200);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let db = work.db();
    let mut child = spawn_acme(&mock, &settings, &db, &["--lease", "1h"]);
    wait_until_running(&db);
    child.kill().unwrap();
    child.wait().unwrap();
    // Stage what a container sharing this hostname but not this pid namespace
    // leaves: a pid that means nothing here, and its own namespace.
    let rw = Db::open_rw(&db);
    rw.execute(
        "UPDATE delta_stream_state SET owner_pid = 999999, owner_instance = 'boot:other/pid:[4026531999]'",
        [],
    )
    .unwrap();
    drop(rw);
    let run = run_acme(&mock, &settings, &db, &[]);
    assert_eq!(run.code, 1, "{}", run.envelope);
    assert_eq!(
        run.error_kind(),
        "already_running",
        "its lease still runs: {}",
        run.envelope
    );
}

#[test]
fn reset_can_change_the_cursor_type_as_begin_says() {
    let mock = Mock::start(MOCK, 50);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let db = work.db();
    let dbs = db.to_str().unwrap();
    assert_eq!(run_acme(&mock, &settings, &db, &[]).code, 0);
    let reset = |cursor: &str, cursor_type: &str| {
        host_output(&[
            "state",
            "reset",
            "--db",
            dbs,
            "--connector",
            "acme_eu",
            "--stream",
            "suppliers",
            "--cursor",
            cursor,
            "--cursor-type",
            cursor_type,
            "--reason",
            "the ERP switched to numeric change ids",
        ])
    };
    let (code, _, err) = reset("41", "numeric_id");
    assert_eq!(code, 0, "{err}");
    let state = Db::open(&db).state("acme_eu", "suppliers").unwrap();
    assert_eq!(
        (state["cursor_type"].as_str(), state["committed_cursor_value"].as_str()),
        (Some("numeric_id"), Some("41"))
    );
    let run = run_acme(&mock, &settings, &db, &[]);
    assert_eq!(run.code, 1);
    assert!(
        run.error_message().contains(
            "an operator can change the stream's cursor type with `nuntiq-host state reset --cursor-type timestamp_utc"
        ),
        "{}",
        run.envelope
    );
    let (code, _, err) = reset("2024-01-01T00:00:00Z", "timestamp_utc");
    assert_eq!(code, 0, "{err}");
    assert_eq!(run_acme(&mock, &settings, &db, &[]).code, 0);
    // Far-future cursors are refused here too.
    let (code, _, err) = reset("2999-01-01T00:00:00Z", "timestamp_utc");
    assert_eq!(code, 2);
    assert!(err.contains("is in the future"), "{err}");
}
