//! `store copy`: a store filled by real runs, copied SQLite → PostgreSQL →
//! SQLite, holds the same cursors, suppliers, history and audit at each step,
//! and a run on the copy carries on from the copied cursor.

use crate::MOCK;
use nuntiq_e2e::*;
use std::path::Path;

const HISTORY: &str = "SELECT run_id, customer_number, connector_name, stream_name, status, started_at_utc, \
                       ended_at_utc, records_processed, cursor_before, cursor_after, suppliers_inserted, \
                       suppliers_updated, suppliers_unchanged FROM delta_run ORDER BY run_id";
const AUDIT: &str = "SELECT id, connector_name, event_type, old_cursor_value, new_cursor_value, reason \
                     FROM delta_audit_log ORDER BY id";

fn copy(from: &str, to: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["store", "copy", "--from", from, "--to", to];
    args.extend_from_slice(extra);
    host_output(&args)
}

#[test]
fn a_store_filled_by_real_runs_copies_to_postgres_and_back_unchanged() {
    let mock = Mock::start(MOCK, 600);
    let work = Workdir::new();
    let eu = work.write_settings("eu.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let us = work.write_settings("us.json", &acme_settings(&mock.api_url(), "acme_us"));
    let sqlite = work.db();
    for settings in [&eu, &us, &eu] {
        let run = run_acme(&mock, settings, &sqlite, &[]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        mock.mutate(5, 3);
    }
    let (code, _, err) = host_output(&[
        "state",
        "reset",
        "--db",
        sqlite.to_str().unwrap(),
        "--connector",
        "acme_us",
        "--stream",
        "suppliers",
        "--customer",
        "10000001",
        "--cursor",
        "2020-01-01T00:00:00Z",
        "--reason",
        "copy test",
    ]);
    assert_eq!(code, 0, "{err}");

    let pg = PgSchema::new();
    let pg_url = pg.url();
    let (code, out, err) = copy(sqlite.to_str().unwrap(), &pg_url, &["--json"]);
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let source = Db::open(&sqlite);
    assert_eq!(summary["tables"]["supplier"], source.count("supplier"));
    assert_eq!(summary["tables"]["delta_run"], 3);

    // A target that holds anything is refused, and left as it is, unless --force.
    let (code, _, err) = copy(sqlite.to_str().unwrap(), &pg_url, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not empty") && err.contains("--force"), "{err}");
    let (code, again, err) = copy(sqlite.to_str().unwrap(), &pg_url, &["--json", "--force"]);
    assert_eq!(code, 0, "{err}");
    let again: serde_json::Value = serde_json::from_str(again.trim()).unwrap();
    assert_eq!(again["digest"], summary["digest"]);

    let back = work.path("back.db");
    let (code, out, err) = copy(&pg_url, back.to_str().unwrap(), &["--json"]);
    assert_eq!(code, 0, "{err}");
    let round: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        round["digest"], summary["digest"],
        "the same content on both engines digests the same"
    );

    let on_pg = Db::open(Path::new(&pg_url));
    let on_back = Db::open(&back);
    for db in [&on_pg, &on_back] {
        assert_eq!(db.suppliers("10000001"), source.suppliers("10000001"));
        assert_eq!(db.count("supplier_location"), source.count("supplier_location"));
        assert_eq!(db.count("supplier_address"), source.count("supplier_address"));
        for connector in ["acme_eu", "acme_us"] {
            assert_eq!(
                db.state(connector, "suppliers"),
                source.state(connector, "suppliers"),
                "{connector}"
            );
        }
        assert_eq!(db.rows(HISTORY), source.rows(HISTORY));
        assert_eq!(db.rows(AUDIT), source.rows(AUDIT));
    }

    // The copy is a store runs carry on with: from the copied cursor, not from scratch.
    let run = run_acme(&mock, &eu, Path::new(&pg_url), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let fetched = run.envelope["fetched"].as_u64().unwrap();
    assert!(
        fetched < 100,
        "an incremental run after the copy, not a bootstrap: {fetched} fetched"
    );
    assert_eq!(on_pg.count("delta_run"), 4);

    // Bad input: a source that does not exist, the same store twice.
    let (code, _, err) = copy(work.path("missing.db").to_str().unwrap(), back.to_str().unwrap(), &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--from") && err.contains("missing.db"), "{err}");
    let (code, _, err) = copy(back.to_str().unwrap(), back.to_str().unwrap(), &["--force"]);
    assert_eq!(code, 2);
    assert!(err.contains("same store"), "{err}");
}
