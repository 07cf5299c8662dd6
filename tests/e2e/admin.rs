//! `state show` and `suppliers export` read back what a run wrote.

use crate::MOCK;
use nuntiq_e2e::*;
use serde_json::Value;

#[test]
fn state_show_and_suppliers_export_reflect_the_store() {
    let mock = Mock::start(MOCK, 120);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let run = run_acme(&mock, &settings, &work.db(), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let db = work.db();
    let db = db.to_str().unwrap();

    let (code, out, _) = host_output(&["state", "show", "--db", db, "--json"]);
    assert_eq!(code, 0);
    let states: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(states.as_array().unwrap().len(), 1);
    assert_eq!(states[0]["customer_number"], "10000001");
    assert_eq!(states[0]["connector_name"], "acme_eu");
    assert_eq!(states[0]["status"], "succeeded");
    assert_eq!(states[0]["committed_cursor_value"], run.envelope["cursor_committed"]);
    assert_eq!(states[0]["metadata"]["schema_version"], 1);

    let (_, out, _) = host_output(&["state", "show", "--db", db, "--json", "--connector", "acme_us"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), serde_json::json!([]));
    let (code, out, _) = host_output(&["state", "show", "--db", db]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("acme_eu/suppliers (customer 10000001)\n  status             succeeded"),
        "{out}"
    );

    let (code, out, _) = host_output(&["suppliers", "export", "--db", db]);
    assert_eq!(code, 0);
    let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len() as u64, run.envelope["fetched"].as_u64().unwrap());
    let numbers: Vec<&str> = rows.iter().map(|r| r["supplier_number"].as_str().unwrap()).collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "stable order by supplier_number"
    );
    let stored = Db::open(&work.db()).suppliers("10000001");
    for row in &rows {
        let s = &stored[row["supplier_number"].as_str().unwrap()];
        assert_eq!(row["supplier_name"], s.name.as_str());
        assert_eq!(row["locations"].as_array().unwrap().len(), s.locations.len());
        for (l, (code, _, addresses)) in row["locations"].as_array().unwrap().iter().zip(&s.locations) {
            assert_eq!(l["location_code"], code.as_str());
            assert_eq!(l["addresses"][0]["city"], addresses[0].1.as_str());
        }
    }

    let (code, out, _) = host_output(&["suppliers", "export", "--db", db, "--format", "csv"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("customer_number,supplier_number,organization_code,supplier_name,"));
    // One row per supplier here: each has at most one location with one address.
    assert_eq!(lines.len() - 1, rows.len());
}

#[test]
fn admin_commands_refuse_a_missing_database() {
    let work = Workdir::new();
    let missing = work.path("missing.db");
    let (code, out, err) = host_output(&["state", "show", "--db", missing.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("missing.db: no such database"), "{err}");
    assert!(!missing.exists(), "a read-only view creates nothing");
}

/// PostgreSQL keeps a supplier's locations and addresses as a document on its
/// row (SQLite as rows of their own): the same runs, a first load and an
/// incremental one with changed and new suppliers, export the same suppliers
/// from both engines.
#[test]
fn the_same_runs_export_the_same_suppliers_from_sqlite_and_postgres() {
    let mock = Mock::start(MOCK, 600);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let sqlite = work.db();
    let pg = PgSchema::new();
    let pg_url = pg.url();
    let export = |db: &str| {
        let (code, out, err) = host_output(&["suppliers", "export", "--db", db]);
        assert_eq!(code, 0, "{err}");
        out
    };
    for round in 0..2 {
        for db in [sqlite.as_path(), std::path::Path::new(&pg_url)] {
            let run = run_acme(&mock, &settings, db, &[]);
            assert_eq!(run.code, 0, "{}", run.stderr);
            if round == 1 {
                assert!(run.envelope["updated"].as_u64().unwrap() > 0, "{}", run.envelope);
            }
        }
        let (lite, postgres) = (export(sqlite.to_str().unwrap()), export(&pg_url));
        // The mock's window holds most of its 600 suppliers.
        assert!(lite.lines().count() > 500, "{}", lite.lines().count());
        assert_eq!(lite, postgres, "round {round}");
        mock.mutate(20, 5);
    }
}
