//! Ends from outside the connector — the deadline while the host is inside
//! the store, SIGTERM and SIGINT — and many processes starting together: the
//! envelope, the stream and the run history must agree, no `running` row may
//! outlive its process, and the process ends within its grace period.

use crate::MOCK;
use crate::delivery::history;
use crate::hostile::{Arena, tail};
use nuntiq_e2e::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// A generous bound on "the deadline, then the grace period": liveness, not speed.
const SLACK: Duration = Duration::from_secs(20);

/// No stream and no history row says `running`.
#[track_caller]
fn assert_nothing_running(db: &Path) {
    let db = Db::open(db);
    let streams: i64 = db.scalar("SELECT count(*) FROM delta_stream_state WHERE status = 'running'");
    let runs: i64 = db.scalar("SELECT count(*) FROM delta_run WHERE status = 'running'");
    assert_eq!((streams, runs), (0, 0), "running rows outlived their process");
}

/// The stream's status and cursor agree with the newest run of it in the history.
#[track_caller]
fn assert_stream_agrees_with_history(db: &Path, connector: &str, stream: &str) {
    let state = Db::open(db).state(connector, stream).unwrap();
    let runs = history(db);
    let newest = runs
        .iter()
        .find(|r| r["connector_name"] == connector && r["stream_name"] == stream)
        .unwrap();
    assert_eq!(state["status"], newest["status"], "stream {state}\nhistory {newest}");
    if newest["status"] == "succeeded" {
        assert_eq!(state["committed_cursor_value"], newest["cursor_after"]);
    } else {
        assert_eq!(
            state["committed_cursor_value"], newest["cursor_before"],
            "the cursor did not move"
        );
    }
}

/// Holds SQLite's write lock on `db` until dropped.
struct WriteLock(rusqlite::Connection);

impl WriteLock {
    fn take(db: &Path) -> Self {
        let conn = Db::open_rw(db);
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        Self(conn)
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.execute_batch("ROLLBACK");
    }
}

/// Polls until `check` holds, for at most 20 s.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// Streams running in `db`; 0 while the starting process has not created its tables yet.
fn running_rows(db: &Path) -> i64 {
    Db::open(db)
        .try_rows("SELECT count(*) FROM delta_stream_state WHERE status = 'running'")
        .and_then(|rows| rows[0][0].as_deref().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn spawn(arena: &Arena, guest_name: &str, settings: &Value, extra: &[&str]) -> Child {
    host_command()
        .args(arena.attack_args(guest_name, settings, extra))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nuntiq-host starts")
}

#[test]
fn a_deadline_during_complete_in_the_store_commits_nothing_and_everything_agrees() {
    let arena = Arena::new();
    let db = arena.work.db();
    let mut settings = arena.settings();
    settings["config"]["mode"] = json!("slow-complete");
    settings["config"]["pause_ms"] = json!(1000);
    let started = Instant::now();
    let child = spawn(&arena, "trespasser", &settings, &["--timeout", "3s"]);
    wait_for("the run to begin", || running_rows(&db) == 1);
    // The connector calls complete() while this lock holds the store; the deadline passes meanwhile.
    let lock = WriteLock::take(&db);
    std::thread::sleep(Duration::from_secs(5).saturating_sub(started.elapsed()));
    drop(lock);
    let run = finish(child);
    assert!(
        started.elapsed() < Duration::from_secs(3) + SLACK,
        "took {:?}",
        started.elapsed()
    );
    assert!(
        run.stderr.contains("completing"),
        "complete() was called: {}",
        tail(&run.stderr)
    );
    assert_eq!((run.code, run.error_kind()), (1, "timeout"), "{}", run.envelope);
    let state = Db::open(&db).state("acme_eu", "suppliers").unwrap();
    assert_eq!(state["status"], "failed", "{state}");
    assert_eq!(state["committed_cursor_value"], arena.cursor);
    assert!(
        !Db::open(&db)
            .suppliers("10000001")
            .keys()
            .any(|k| k.starts_with("SLOW-"))
    );
    assert_stream_agrees_with_history(&db, "acme_eu", "suppliers");
    assert_nothing_running(&db);
}

#[test]
fn a_deadline_during_begin_leaves_no_running_row() {
    let arena = Arena::new();
    let db = arena.work.db();
    let lock = WriteLock::take(&db);
    let started = Instant::now();
    let child = spawn(&arena, "acme", &arena.settings(), &["--timeout", "2s"]);
    std::thread::sleep(Duration::from_secs(4));
    drop(lock);
    let run = finish(child);
    assert!(
        started.elapsed() < Duration::from_secs(2) + SLACK,
        "took {:?}",
        started.elapsed()
    );
    assert_eq!((run.code, run.error_kind()), (1, "timeout"), "{}", run.envelope);
    let state = Db::open(&db).state("acme_eu", "suppliers").unwrap();
    assert_eq!(state["committed_cursor_value"], arena.cursor);
    assert_eq!(
        history(&db).len(),
        1,
        "the begin never committed: only the honest run is in the history"
    );
    assert_nothing_running(&db);
}

#[test]
fn the_deadline_with_many_open_streams_ends_within_the_grace_period() {
    let arena = Arena::new();
    let db = arena.work.db();
    let mut settings = arena.settings();
    settings["config"]["mode"] = json!("many-streams-spin");
    let started = Instant::now();
    let run = arena.attack_with("trespasser", &settings, &["--timeout", "2s"]);
    assert!(
        started.elapsed() < Duration::from_secs(2) + SLACK,
        "took {:?}",
        started.elapsed()
    );
    assert_eq!((run.code, run.error_kind()), (1, "timeout"), "{}", run.envelope);
    let failed: i64 = Db::open(&db).scalar("SELECT count(*) FROM delta_stream_state WHERE status = 'failed'");
    assert_eq!(failed, 100, "every open stream was failed");
    assert_nothing_running(&db);
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: a plain syscall on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
}

#[test]
fn sigterm_and_sigint_fail_the_run_and_report_it() {
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let mock = Mock::start(MOCK, 300);
        mock.faults(json!([{"action": "delay", "delay_ms": 100, "times": 1_000_000}]));
        let work = Workdir::new();
        let mut settings = acme_settings(&mock.api_url(), "acme_eu");
        settings["config"]["page_size"] = json!(10);
        let settings = work.write_settings("settings.json", &settings);
        let db = work.db();
        let child = spawn_acme(&mock, &settings, &db, &[]);
        wait_for("the run to begin", || db.exists() && running_rows(&db) == 1);
        std::thread::sleep(Duration::from_millis(300));
        let sent = Instant::now();
        signal(&child, sig);
        let run = finish(child);
        assert!(sent.elapsed() < SLACK, "{name}: took {:?}", sent.elapsed());
        assert_eq!(
            (run.code, run.error_kind()),
            (1, "cancelled"),
            "{name}: {}",
            run.envelope
        );
        assert!(
            run.error_message()
                .starts_with(&format!("the run was cancelled by {name}")),
            "{}",
            run.envelope
        );
        let state = Db::open(&db).state("acme_eu", "suppliers").unwrap();
        assert_eq!(state["status"], "failed");
        assert_eq!(state["committed_cursor_value"], Value::Null, "the cursor did not move");
        assert!(state["error_summary"].as_str().unwrap().contains(name), "{state}");
        assert_stream_agrees_with_history(&db, "acme_eu", "suppliers");
        assert_nothing_running(&db);
    }
}

#[test]
fn many_processes_starting_on_a_new_database_all_start() {
    let mock = Mock::start(MOCK, 50);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    // Several rounds, each on a new file: the race is over who creates the schema.
    for round in 0..4 {
        let db = work.path(&format!("new-{round}.db"));
        let children: Vec<Child> = (0..8).map(|_| spawn_acme(&mock, &settings, &db, &[])).collect();
        let runs: Vec<Run> = children.into_iter().map(finish).collect();
        for run in &runs {
            assert!(
                run.code == 0 || run.error_kind() == "already_running",
                "round {round}: {}\n{}",
                run.envelope,
                tail(&run.stderr)
            );
        }
        assert!(runs.iter().any(|r| r.code == 0));
        assert_eq!(
            Db::open(&db).state("acme_eu", "suppliers").unwrap()["status"],
            "succeeded"
        );
    }
}
