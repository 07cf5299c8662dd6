//! Containment and integrity against hand-written attackers: host memory
//! bounded in bytes, streams confined to their connector, cursors that cannot
//! be poisoned, and no record lost at the edges of a run.

use crate::hostile::{Arena, tail};
use nuntiq_e2e::*;
use serde_json::{Value, json};

/// What the host may spend on one hostile run, however the guest lays out its data.
const RSS_BOUND: u64 = 300 << 20;

fn with_mode(arena: &Arena, mode: &str) -> Value {
    let mut settings = arena.settings();
    settings["config"]["mode"] = json!(mode);
    settings
}

/// Runs `guest` in `mode` and returns the run and the host's peak RSS.
fn measured(arena: &Arena, guest_name: &str, mode: &str, extra: &[&str]) -> (Run, u64) {
    nuntiq_host_measured(arena.attack_args(guest_name, &with_mode(arena, mode), extra))
}

#[track_caller]
fn assert_small(rss: u64, run: &Run) {
    assert!(
        rss < RSS_BOUND,
        "host peak RSS {} MB is past {} MB\n{}\n{}",
        rss >> 20,
        RSS_BOUND >> 20,
        run.envelope,
        tail(&run.stderr)
    );
    let longest = run.stderr.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 64 << 10, "a {longest}-byte log line");
}

#[test]
fn aliased_supplier_lists_cannot_make_the_host_allocate_gigabytes() {
    let arena = Arena::new();
    // 5 suppliers × 1000 locations × 100 addresses of aliased 8-byte strings.
    let (run, rss) = measured(&arena, "payload-bomb", "queue-alias", &["--max-memory", "64MiB"]);
    arena.assert_contained(&run, "memory_limit");
    assert!(
        run.error_message()
            .contains("handed the host more than 16777216 bytes in one call (--max-call-bytes)"),
        "{}",
        run.envelope
    );
    assert_small(rss, &run);

    // Batches that each fit one call stop at the queue's byte budget.
    let (run, rss) = measured(&arena, "payload-bomb", "queue-accumulate", &["--max-memory", "64MiB"]);
    arena.assert_contained(&run, "batch_too_large");
    assert!(run.error_message().contains("(--max-queued-bytes)"), "{}", run.envelope);
    assert_small(rss, &run);
}

#[test]
fn oversized_log_details_are_cut_or_refused_and_no_line_outgrows_the_budget() {
    let arena = Arena::new();
    let (run, rss) = measured(&arena, "payload-bomb", "detail-cut", &["--log-format", "json"]);
    arena.assert_contained(&run, "connector_error");
    assert_small(rss, &run);
    let line = run
        .json_logs()
        .into_iter()
        .find(|l| l["message"] == "a line with a big detail")
        .expect("the line is logged");
    assert!(
        line["detail"]["detail_dropped"]
            .as_str()
            .unwrap()
            .contains("over the 8192-byte limit"),
        "{line}"
    );

    let (run, rss) = measured(&arena, "payload-bomb", "detail-huge", &["--log-format", "json"]);
    arena.assert_contained(&run, "memory_limit");
    assert_small(rss, &run);
}

#[test]
fn oversized_results_fail_the_run_with_a_small_envelope() {
    let arena = Arena::new();
    let (run, rss) = measured(&arena, "payload-bomb", "result-big", &[]);
    arena.assert_contained(&run, "invalid_result");
    assert!(
        run.error_message()
            .contains("a result is a summary of at most 65536 bytes"),
        "{}",
        run.envelope
    );
    assert!(run.envelope.to_string().len() < 16 << 10);
    assert_small(rss, &run);

    let (run, rss) = measured(&arena, "payload-bomb", "result-huge", &[]);
    arena.assert_contained(&run, "memory_limit");
    assert!(run.envelope.to_string().len() < 16 << 10);
    assert_small(rss, &run);
}

#[test]
fn query_lists_and_metadata_are_bounded() {
    let arena = Arena::new();
    let before = arena.supplier_requests();
    let (run, rss) = measured(&arena, "payload-bomb", "query-alias", &[]);
    arena.assert_contained(&run, "memory_limit");
    assert_small(rss, &run);

    let run = arena.attack_with("payload-bomb", &with_mode(&arena, "query-many"), &[]);
    arena.assert_contained(&run, "connector_error");
    assert!(
        run.error_message().contains("at most 256 query parameters"),
        "{}",
        run.envelope
    );
    assert_eq!(arena.supplier_requests(), before, "nothing was sent");

    let run = arena.attack_with("payload-bomb", &with_mode(&arena, "headers-many"), &[]);
    arena.assert_contained(&run, "connector_error");
    assert!(
        run.error_message().contains("64 headers (this one 0 and 1000)"),
        "{}",
        run.envelope
    );
    assert_eq!(arena.supplier_requests(), before, "nothing was sent");

    let run = arena.attack_with("payload-bomb", &with_mode(&arena, "metadata-big"), &[]);
    arena.assert_contained(&run, "connector_error");
    assert!(
        run.error_message().contains("at most 65536 are allowed"),
        "{}",
        run.envelope
    );
}

#[test]
fn background_requests_are_bounded_per_run_and_freed_when_dropped() {
    let arena = Arena::new();
    let before = arena.supplier_requests();
    let run = arena.attack_with("payload-bomb", &with_mode(&arena, "pending-many"), &[]);
    arena.assert_contained(&run, "connector_error");
    let message = run.error_message();
    assert!(
        message.contains(
            "4 started, the next refused: refused by the host: 4 requests are pending already, \
             the most a run may have; finish or drop one before starting another"
        ),
        "{message}"
    );
    assert!(
        message.contains("after dropping them, 4 more finished with [200, 200, 200, 200]"),
        "{message}"
    );
    // The refused request never left the host: 4 sent, 4 cancelled at most, 4 finished.
    let sent = arena.supplier_requests() - before;
    assert!((4..=8).contains(&sent), "{sent} requests reached the API");

    // Four copies of one page waiting at once under a limit of 2.5 pages: two fit, two are refused.
    let page = ureq::get(format!("{}/suppliers?page=1&per_page=200", arena.mock.api_url()))
        .header("authorization", format!("Bearer {TOKEN}"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_vec()
        .unwrap()
        .len();
    let limit = (page * 5 / 2).to_string();
    let run = arena.attack_with(
        "payload-bomb",
        &with_mode(&arena, "pending-bodies"),
        &["--max-response-body", &limit],
    );
    assert_eq!(run.code, 1, "{}", run.envelope);
    let message = run.error_message();
    let mut statuses: Vec<&str> = message.split(['[', ']']).nth(1).unwrap_or("").split(", ").collect();
    statuses.sort();
    assert_eq!(statuses, ["0", "0", "200", "200"], "{message}");
    assert!(
        message.contains(&format!("over the host's limit of {limit} bytes")),
        "{message}"
    );
    // When the connector fails right after the refusal, the envelope names it in the host's words.
    if run.error_kind() == "body_too_large" {
        assert!(
            message.contains("would take the bodies this run holds at once (pending requests' included)"),
            "{message}"
        );
    } else {
        assert_eq!(run.error_kind(), "connector_error", "{}", run.envelope);
    }
}

#[test]
fn a_connector_cannot_read_or_move_another_connectors_cursor() {
    let arena = Arena::new();
    let mut settings = with_mode(&arena, "other-connector");
    settings["config"]["connector_name"] = json!("evil_conn");
    settings["config"]["victim"] = json!("acme_eu");
    let run = arena.attack_with("trespasser", &settings, &[]);
    assert_eq!(run.code, 1, "{}", run.envelope);
    assert_eq!(run.error_kind(), "stream_denied", "{}", run.envelope);
    let message = run.error_message();
    assert!(
        message.contains("get-state refused: connector \"acme_eu\" is not this job's connector \"evil_conn\""),
        "{message}"
    );
    assert!(message.contains("begin refused:"), "{message}");
    let db = Db::open(&arena.work.db());
    let state = db.state("acme_eu", "suppliers").unwrap();
    assert_eq!(
        state["committed_cursor_value"], arena.cursor,
        "the victim's cursor did not move"
    );
    assert_eq!(state["status"], "succeeded");
    assert_eq!(db.count("delta_stream_state"), 1, "no stream was created");
}

#[test]
fn a_run_may_open_at_most_max_streams_streams() {
    let arena = Arena::new();
    let run = arena.attack_with("trespasser", &with_mode(&arena, "many-streams"), &[]);
    assert_eq!(run.code, 1, "{}", run.envelope);
    assert_eq!(run.error_kind(), "stream_limit", "{}", run.envelope);
    assert!(
        run.error_message()
            .contains("stream 100 refused: this job already began runs of 100 streams, its limit (--max-streams)"),
        "{}",
        run.envelope
    );
    let db = Db::open(&arena.work.db());
    assert_eq!(db.count("delta_stream_state"), 101, "acme_eu/suppliers and 100 streams");
    let running: i64 = db.scalar("SELECT count(*) FROM delta_stream_state WHERE status = 'running'");
    assert_eq!(running, 0, "every stream the run opened was failed");

    let run = arena.attack_with(
        "trespasser",
        &with_mode(&arena, "many-streams"),
        &["--max-streams", "5"],
    );
    assert!(run.error_message().contains("stream 5 refused"), "{}", run.envelope);
}

#[test]
fn poisoned_cursors_are_refused_and_honest_runs_go_on() {
    let arena = Arena::new();
    let run = arena.attack_with("trespasser", &with_mode(&arena, "poison-timestamp"), &[]);
    arena.assert_contained(&run, "connector_error");
    for value in [
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59-23:59",
        "2099-01-01T00:00:00Z",
    ] {
        assert!(
            run.error_message()
                .contains(&format!("\"{value}\" refused: timestamp_utc cursor:")),
            "{value}: {}",
            run.envelope
        );
    }
    assert!(!run.error_message().contains("accepted"), "{}", run.envelope);

    let run = arena.attack_with("trespasser", &with_mode(&arena, "poison-numeric"), &[]);
    assert_eq!(run.code, 1);
    for value in [
        "1e300",
        "99999999999999999999999999999999999999999999",
        " 5 ",
        "+5",
        "-0",
        "5.0",
    ] {
        assert!(
            run.error_message()
                .contains(&format!("{value:?} refused: numeric_id cursor:")),
            "{value}: {}",
            run.envelope
        );
    }
    let ids = Db::open(&arena.work.db()).state("acme_eu", "ids").unwrap();
    assert_eq!(ids["committed_cursor_value"], Value::Null);

    // The honest connector still fetches what changes.
    arena.mock.mutate(2, 0);
    let honest = arena.attack("acme", &[]);
    assert_eq!(honest.code, 0, "{}", honest.stderr);
    assert_eq!(honest.envelope["updated"], 2);
}

#[test]
fn a_row_from_the_future_is_kept_without_moving_the_cursor_past_the_run() {
    let arena = Arena::new();
    let truth = arena.mock.truth();
    let number = truth[3]["number"].as_str().unwrap().to_owned();
    let later = (chrono::Utc::now() + chrono::Duration::hours(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    arena
        .mock
        .touch(&number, &later, "Stamped by a clock three hours ahead");
    let started = chrono::Utc::now();
    let run = arena.attack("acme", &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let cursor = parse_time(run.envelope["cursor_committed"].as_str().unwrap());
    assert!(
        cursor <= chrono::Utc::now() && cursor >= started - chrono::Duration::seconds(1),
        "{cursor}"
    );
    assert!(
        run.stderr.contains(&format!(
            "[WARN] [customer 10000001] Supplier {number} has updated_at {later}, after this run began"
        )),
        "{}",
        run.stderr
    );
    let stored = Db::open(&arena.work.db()).suppliers("10000001");
    assert_eq!(stored[&number].name, "Stamped by a clock three hours ahead");
    // The next run reads it again (its stamp is still ahead) and still succeeds.
    let again = arena.attack("acme", &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.envelope["updated"], 0);
    assert!(again.envelope["unchanged"].as_u64().unwrap() >= 1);
}

#[test]
fn a_change_in_the_cursors_own_second_is_not_lost() {
    let arena = Arena::new();
    let cursor = arena.cursor.as_str().unwrap().to_owned();
    // Another supplier changes in the very instant of the committed cursor,
    // after the run that committed it read its page.
    let victim = arena
        .mock
        .truth()
        .into_iter()
        .find(|r| parse_time(r["updated_at"].as_str().unwrap()) < parse_time(&cursor))
        .unwrap();
    let number = victim["number"].as_str().unwrap().to_owned();
    arena.mock.touch(&number, &cursor, "Changed in the cursor's second");
    let run = arena.attack("acme", &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.envelope["updated"], 1, "{}", run.envelope);
    let stored = Db::open(&arena.work.db()).suppliers("10000001");
    assert_eq!(stored[&number].name, "Changed in the cursor's second");
}

#[test]
fn a_failed_complete_keeps_its_batch_so_a_retried_complete_writes_it() {
    let arena = Arena::new();
    let run = arena.attack_with("trespasser", &with_mode(&arena, "complete-retry"), &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.envelope, tail(&run.stderr));
    assert!(
        run.envelope["first_complete"]
            .as_str()
            .unwrap()
            .starts_with("CURSOR_REGRESSION"),
        "{}",
        run.envelope
    );
    let stored = Db::open(&arena.work.db()).suppliers("10000001");
    let retried = stored.keys().filter(|k| k.starts_with("RETRY-")).count();
    assert_eq!(retried, 10, "the cursor moved, so all 10 queued suppliers are stored");
    assert_eq!(run.envelope["inserted"], 10);
}

#[test]
fn records_processed_past_i64_is_stored_as_the_largest_count_not_a_negative_one() {
    let arena = Arena::new();
    let run = arena.attack_with("trespasser", &with_mode(&arena, "records-max"), &[]);
    assert_eq!(run.code, 0, "{}", run.envelope);
    let state = Db::open(&arena.work.db()).state("acme_eu", "suppliers").unwrap();
    assert_eq!(state["records_processed"], i64::MAX);
}

#[test]
fn a_limit_the_connector_handled_does_not_name_a_later_unrelated_failure() {
    let arena = Arena::new();
    let run = arena.attack_with(
        "trespasser",
        &with_mode(&arena, "limit-then-other"),
        &["--max-response-body", "1KiB"],
    );
    arena.assert_contained(&run, "connector_error");
    assert!(
        run.error_message().contains("the endpoint is missing: HTTP 404"),
        "{}",
        run.envelope
    );
}
