//! The control plane (`nuntiq-host jobs …`, `serve --db` without a file):
//! jobs are rows in the store, applied declaratively, paused, resumed,
//! triggered and deleted, and every live `serve` sees the change within
//! seconds; plugins pinned by digest.

use crate::MOCK;
use crate::serve::{Jobs, Serve, wait_until};
use chrono::{DateTime, Utc};
use nuntiq_e2e::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// `nuntiq-host jobs ARGS… --db DB`: exit code, stdout, stderr.
fn jobs(db: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["jobs"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--db", db]);
    host_output(&all)
}

/// `jobs list --json`.
fn listed(db: &str) -> Vec<Value> {
    let (code, out, err) = jobs(db, &["list", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn find<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {list:?}"))
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn every_command_reads_and_writes_the_stored_jobs(db: &Path) {
    let db = db.to_str().unwrap();
    let mock = Mock::start(MOCK, 5);
    let mut file = Jobs::new();
    file.add(&mock, "acme_a", "acme", "C1", "every = \"1h\"");
    file.add(&mock, "acme_b", "acme", "C2", "every = \"1h\"");
    let path = file.write();
    let path = path.to_str().unwrap();

    // A dry run says what it would add and writes nothing.
    let (code, out, err) = jobs(db, &["apply", path, "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("+ acme_a  (added)") && out.contains("nothing was written"),
        "{out}"
    );
    if !db.starts_with("postgres://") {
        assert!(!Path::new(db).exists(), "a dry run makes no store");
    } else {
        assert!(listed(db).is_empty());
    }

    let (code, out, err) = jobs(db, &["apply", path, "--by", "alice"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("+ acme_a  (added)") && out.contains("+ acme_b  (added)"),
        "{out}"
    );
    assert!(out.contains("2 added, 0 changed, 0 removed, 0 unchanged"), "{out}");
    let list = listed(db);
    assert_eq!(list.len(), 2);
    let a = find(&list, "acme_a");
    assert_eq!(
        (a["customer_number"].as_str(), a["cadence"].as_str()),
        (Some("C1"), Some("every 1h"))
    );
    assert_eq!(a["paused"], false);
    assert_eq!(a["applied_by"], "alice");
    let next = at(a["next_slot"].as_str().expect("a next slot"));
    assert!(
        next > Utc::now() && next <= Utc::now() + chrono::Duration::hours(1),
        "{next}"
    );
    assert_eq!(a["plugin_sha256"].as_str().unwrap().len(), 64);

    // The settings' content is stored: editing the file after the apply changes nothing stored.
    let settings = file.work.path("acme_a.json");
    let original: Value = serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
    std::fs::write(&settings, r#"{"customer_number": "edited"}"#).unwrap();
    let (code, out, err) = jobs(db, &["show", "acme_a", "--json"]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["definition"]["settings"]["config"], original["config"], "{shown}");
    let stored = &shown["definition"]["settings"]["secrets"]["acme_token"];
    assert!(stored["sealed"].is_string(), "an inline secret is stored sealed: {stored}");
    assert!(!out.contains(TOKEN), "{out}");
    assert!(Path::new(shown["definition"]["plugin"].as_str().unwrap()).is_absolute());
    std::fs::write(&settings, serde_json::to_vec(&original).unwrap()).unwrap();

    // A second file: one job changed, one removed, one added.
    let mut second = Jobs::new();
    second.add(&mock, "acme_b", "acme", "C2", "every = \"2h\"");
    second.add(&mock, "acme_c", "acme", "C3", "cron = \"0 3 * * *\"");
    let second_path = second.write();
    let (code, out, err) = jobs(db, &["apply", second_path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "~ acme_b  (changed)",
        "+ acme_c  (added)",
        "- acme_a  (removed)",
        "1 added, 1 changed, 1 removed",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    let names: Vec<String> = listed(db)
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["acme_b", "acme_c"]);
    assert_eq!(find(&listed(db), "acme_c")["cadence"], "cron 0 3 * * *");
    // Applying it again changes nothing, and is still recorded.
    let (code, out, _) = jobs(db, &["apply", second_path.to_str().unwrap()]);
    assert!(
        code == 0 && out.contains("0 added, 0 changed, 0 removed, 2 unchanged"),
        "{out}"
    );
    let store = Db::open(Path::new(db));
    assert_eq!(
        store.count("job_apply"),
        3,
        "every apply is recorded, the dry run is not"
    );
    assert_eq!(
        store.scalar::<String>("SELECT applied_by FROM job_apply ORDER BY id LIMIT 1"),
        "alice"
    );

    // A file with a mistake writes nothing, naming the job and the key.
    let mut bad = Jobs::new();
    bad.add(&mock, "acme_d", "acme", "C4", "every = \"1h\"");
    bad.add(&mock, "acme_e", "acme", "C5", "every = \"1h\"\nmax_memroy = \"1MiB\"");
    let (code, _, err) = jobs(db, &["apply", bad.write().to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("job \"acme_e\"") && err.contains("max_memroy"), "{err}");
    assert_eq!(listed(db).len(), 2, "nothing was written");
    assert_eq!(store.count("job_apply"), 3);

    // Pause and resume, per job and per customer, with the reason recorded.
    let (code, out, err) = jobs(
        db,
        &["pause", "acme_b", "--reason", "vendor maintenance", "--by", "bob"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Paused acme_b"), "{out}");
    let b = find(&listed(db), "acme_b").clone();
    assert_eq!(b["paused"], true);
    assert!(
        b["paused_reason"].as_str().unwrap().contains("vendor maintenance"),
        "{b}"
    );
    let (_, out, _) = jobs(db, &["show", "acme_b"]);
    assert!(
        out.contains("paused") && out.contains("by bob") && out.contains("vendor maintenance"),
        "{out}"
    );
    let (code, _, err) = jobs(db, &["trigger", "acme_b"]);
    assert!(
        code == 2 && err.contains("resume it first"),
        "a paused job is not triggered: {err}"
    );
    let (code, _, err) = jobs(db, &["resume", "acme_b", "--reason", "back"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(find(&listed(db), "acme_b")["paused"], false);

    let (code, out, err) = jobs(db, &["pause", "--customer", "C3", "--reason", "unpaid"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("customer C3 (1 jobs now)"), "{out}");
    let c = find(&listed(db), "acme_c").clone();
    assert!(
        c["paused"] == true && c["paused_reason"].as_str().unwrap().contains("customer C3"),
        "{c}"
    );
    assert_eq!(
        find(&listed(db), "acme_b")["paused"],
        false,
        "another customer's job runs on"
    );
    assert_eq!(jobs(db, &["resume", "--customer", "C3", "--reason", "paid"]).0, 0);
    assert_eq!(find(&listed(db), "acme_c")["paused"], false);
    let (code, _, err) = jobs(db, &["resume", "--customer", "C3", "--reason", "again"]);
    assert!(code == 2 && err.contains("not paused"), "{err}");

    // Trigger: a slot of its own, waiting for a serve.
    let (code, out, err) = jobs(db, &["trigger", "acme_b", "--by", "carol"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Triggered acme_b: slot "), "{out}");
    let (_, out, _) = jobs(db, &["show", "acme_b", "--json"]);
    let shown: Value = serde_json::from_str(&out).unwrap();
    let actions: Vec<&str> = shown["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trigger", "resume", "pause"], "{shown}");
    assert_eq!(shown["actions"][0]["by"], "carol");
    assert_eq!(store.count("job_trigger"), 1);

    // Delete; unknown names are bad input.
    let (code, out, err) = jobs(db, &["delete", "acme_c"]);
    assert!(code == 0 && out.contains("Deleted acme_c"), "{out}{err}");
    let names: Vec<String> = listed(db)
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["acme_b"]);
    for args in [
        &["delete", "acme_c"][..],
        &["show", "nope"],
        &["pause", "nope", "--reason", "x"],
        &["trigger", "nope"],
    ] {
        let (code, _, err) = jobs(db, args);
        assert!(code == 2 && err.contains("no job is named"), "{args:?}: {err}");
    }
    let (_, out, _) = jobs(db, &["list"]);
    assert!(
        out.starts_with("NAME") && out.contains("acme_b") && out.contains("every 2h"),
        "{out}"
    );
}

on_both_engines!(
    every_command_reads_and_writes_the_stored_jobs_on_sqlite,
    every_command_reads_and_writes_the_stored_jobs_on_postgres,
    every_command_reads_and_writes_the_stored_jobs
);

/// The slots of `job` as (slot time, status, outcome), oldest first.
fn slots(db: &Db, job: &str) -> Vec<(String, String, Option<String>)> {
    db.try_rows(&format!(
        "SELECT slot_at, status, outcome FROM schedule_slot WHERE job_name = '{job}' ORDER BY slot_at"
    ))
    .unwrap_or_default()
    .into_iter()
    .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap(), r[2].clone()))
    .collect()
}

/// Slots of `job` whose time is at or after `since` and that ran (or run).
fn ran_since(db: &Db, job: &str, since: DateTime<Utc>) -> Vec<String> {
    slots(db, job)
        .into_iter()
        .filter(|(slot, status, _)| at(slot) >= since && !matches!(status.as_str(), "missed" | "skipped"))
        .map(|(slot, _, _)| slot)
        .collect()
}

fn succeeded_since(db: &Db, job: &str, since: DateTime<Utc>) -> bool {
    slots(db, job)
        .iter()
        .any(|(slot, status, _)| at(slot) >= since && status == "succeeded")
}

fn paused_since(db: &Db, job: &str, since: DateTime<Utc>) -> usize {
    slots(db, job)
        .iter()
        .filter(|(slot, status, outcome)| {
            at(slot) >= since && status == "skipped" && outcome.as_deref() == Some("paused")
        })
        .count()
}

/// How long a change may take to reach every host.
const WITHIN: Duration = Duration::from_secs(10);

#[test]
fn two_serves_on_one_postgres_see_every_change_within_seconds() {
    let mock = Mock::start(MOCK, 5);
    let schema = PgSchema::new();
    let url = schema.url();
    let db = Db::open(Path::new(&url));
    // Both start before any job is stored.
    let args = ["--lease", "5s", "--log-level", "info"];
    let a = Serve::start_from_db(&url, &args, &[]);
    let b = Serve::start_from_db(&url, &args, &[]);
    a.wait_for_line("Serving 0 jobs from the database", Duration::from_secs(60));
    b.wait_for_line("Serving 0 jobs from the database", Duration::from_secs(60));

    // Added.
    let mut first = Jobs::new();
    first.add(&mock, "alpha", "acme", "C1", "every = \"1s\"");
    let (code, _, err) = jobs(&url, &["apply", first.write().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let applied = Utc::now();
    wait_until("alpha runs", WITHIN, || {
        succeeded_since(&db, "alpha", applied - chrono::Duration::seconds(1))
    });

    let mut second = Jobs::new();
    second.add(&mock, "alpha", "acme", "C1", "every = \"1s\"");
    second.add(&mock, "beta", "acme", "C2", "every = \"1s\"");
    second.add(&mock, "gamma", "acme", "C3", "every = \"1h\"");
    let (code, out, err) = jobs(&url, &["apply", second.write().to_str().unwrap()]);
    assert!(
        code == 0 && out.contains("+ beta") && out.contains("+ gamma"),
        "{out}{err}"
    );
    let applied = Utc::now();
    wait_until("beta runs", WITHIN, || {
        succeeded_since(&db, "beta", applied - chrono::Duration::seconds(1))
    });

    // Changed: alpha every 3 s; once the change is everywhere, its slots are 3 s apart.
    let mut third = Jobs::new();
    third.add(&mock, "alpha", "acme", "C1", "every = \"3s\"");
    third.add(&mock, "beta", "acme", "C2", "every = \"1s\"");
    third.add(&mock, "gamma", "acme", "C3", "every = \"1h\"");
    let third_path = third.write();
    let (code, out, _) = jobs(&url, &["apply", third_path.to_str().unwrap()]);
    assert!(code == 0 && out.contains("~ alpha  (changed)"), "{out}");
    let changed = Utc::now() + chrono::Duration::seconds(3);
    wait_until(
        "two alpha slots on the new cadence",
        WITHIN + Duration::from_secs(3),
        || ran_since(&db, "alpha", changed).len() >= 2,
    );
    for slot in ran_since(&db, "alpha", changed) {
        assert_eq!(
            at(&slot).timestamp() % 3,
            0,
            "alpha runs every 3 s: {slot}\n{}",
            a.log()
        );
    }

    // Paused (one job): its slots are recorded skipped (paused), none runs.
    let (code, _, err) = jobs(&url, &["pause", "beta", "--reason", "maintenance"]);
    assert_eq!(code, 0, "{err}");
    let paused = Utc::now();
    wait_until("beta's slots are skipped as paused", WITHIN, || {
        paused_since(&db, "beta", paused) >= 2
    });
    let settled = Utc::now();
    wait_until("two more skipped slots", WITHIN, || {
        paused_since(&db, "beta", settled) >= 2
    });
    assert!(ran_since(&db, "beta", settled).is_empty(), "{:?}", slots(&db, "beta"));
    assert!(succeeded_since(&db, "alpha", settled), "alpha runs on");
    let (code, _, _) = jobs(&url, &["resume", "beta", "--reason", "done"]);
    assert_eq!(code, 0);
    let resumed = Utc::now();
    wait_until("beta runs again", WITHIN, || succeeded_since(&db, "beta", resumed));

    // Paused (a customer): every job of C1.
    let (code, _, err) = jobs(&url, &["pause", "--customer", "C1", "--reason", "unpaid"]);
    assert_eq!(code, 0, "{err}");
    let paused = Utc::now();
    wait_until("alpha's slots are skipped as paused", WITHIN, || {
        paused_since(&db, "alpha", paused) >= 1
    });
    let settled = Utc::now();
    wait_until("another skipped alpha slot", WITHIN, || {
        paused_since(&db, "alpha", settled) >= 1
    });
    assert!(ran_since(&db, "alpha", settled).is_empty(), "{:?}", slots(&db, "alpha"));
    assert!(succeeded_since(&db, "beta", settled), "another customer's job runs on");
    assert_eq!(jobs(&url, &["resume", "--customer", "C1", "--reason", "paid"]).0, 0);
    let resumed = Utc::now();
    wait_until("alpha runs again", WITHIN, || succeeded_since(&db, "alpha", resumed));

    // Triggered: gamma (hourly) runs once more now, as a slot of its own, on one host.
    let (code, out, err) = jobs(&url, &["trigger", "gamma"]);
    assert_eq!(code, 0, "{err}");
    let slot = out.split("slot ").nth(1).unwrap().split(';').next().unwrap().to_owned();
    wait_until("the triggered slot ran", WITHIN, || {
        slots(&db, "gamma")
            .iter()
            .any(|(s, status, _)| *s == slot && status == "succeeded")
    });
    assert_eq!(
        db.scalar::<i64>(&format!(
            "SELECT count(*) FROM delta_run r JOIN schedule_slot s ON s.job_id = r.job_id
             WHERE s.job_name = 'gamma' AND s.slot_at = '{slot}'"
        )),
        1,
        "one run for the trigger"
    );

    // Removed: beta gets no slot once the change is everywhere, while alpha goes on.
    let mut fourth = Jobs::new();
    fourth.add(&mock, "alpha", "acme", "C1", "every = \"1s\"");
    fourth.add(&mock, "gamma", "acme", "C3", "every = \"1h\"");
    let (code, out, _) = jobs(&url, &["apply", fourth.write().to_str().unwrap()]);
    assert!(code == 0 && out.contains("- beta  (removed)"), "{out}");
    let removed = Utc::now() + chrono::Duration::seconds(3);
    wait_until("alpha runs three more slots", WITHIN + Duration::from_secs(3), || {
        ran_since(&db, "alpha", removed).len() >= 3
    });
    assert!(
        slots(&db, "beta").iter().all(|(s, _, _)| at(s) < removed),
        "no slot of the removed job: {:?}",
        slots(&db, "beta")
    );

    let (code_a, log_a) = a.stop();
    let (code_b, log_b) = b.stop();
    assert_eq!((code_a, code_b), (0, 0), "{log_a}\n--\n{log_b}");
    for log in [&log_a, &log_b] {
        assert!(log.contains("the stored jobs changed"), "{log}");
    }
    // Every slot once: the primary key, and one run per claimed slot.
    assert_eq!(
        db.scalar::<i64>(
            "SELECT count(*) FROM schedule_slot s WHERE s.status NOT IN ('missed', 'skipped')
               AND (SELECT count(*) FROM delta_run r WHERE r.job_id = s.job_id) <> 1"
        ),
        0
    );
    // Which host claims which slot is the fair share's business (scheduler.rs
    // tests it with room for everything); with two jobs one host may take them all.
}

#[test]
fn a_plugin_whose_digest_differs_is_refused_at_apply_and_at_run_time() {
    let mock = Mock::start(MOCK, 5);
    let mut file = Jobs::new();
    let plugin = file.work.path("connector.wasm");
    std::fs::copy(guest("acme"), &plugin).unwrap();
    let real = {
        use sha2::Digest;
        let bytes = std::fs::read(&plugin).unwrap();
        sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let db = file.work.db();
    let db_text = db.to_str().unwrap().to_owned();
    let pinned = "ab".repeat(32);
    file.add(
        &mock,
        "pinned",
        "acme",
        "C1",
        &format!("every = \"1s\"\nsha256 = \"{pinned}\""),
    );
    let toml = file
        .toml
        .replace(&guest("acme").display().to_string(), &plugin.display().to_string());
    std::fs::write(file.work.path("jobs.toml"), &toml).unwrap();
    let (code, _, err) = jobs(&db_text, &["apply", file.work.path("jobs.toml").to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&pinned) && err.contains(&real) && err.contains("job \"pinned\""),
        "{err}"
    );
    assert!(!db.exists(), "nothing was written");

    // Pinned to the right digest: applied, and runs.
    std::fs::write(file.work.path("jobs.toml"), toml.replace(&pinned, &real.to_uppercase())).unwrap();
    let (code, _, err) = jobs(&db_text, &["apply", file.work.path("jobs.toml").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let serve = Serve::start_from_db(&db_text, &[], &[]);
    let store = || Db::open(&db);
    wait_until("a run", WITHIN, || {
        succeeded_since(&store(), "pinned", Utc::now() - chrono::Duration::hours(1))
    });

    // Replaced in place without an apply: refused, both digests said, not run.
    std::fs::copy(guest("memory-hog"), &plugin).unwrap();
    wait_until("a refused slot", WITHIN, || {
        slots(&store(), "pinned")
            .iter()
            .any(|(_, _, outcome)| outcome.as_deref() == Some("invalid_plugin"))
    });
    let (_, log) = serve.stop();
    let line = log
        .lines()
        .find(|l| l.contains("is pinned to"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains(&real) && line.contains("nothing was run"), "{line}");
    let summary =
        store().scalar::<String>("SELECT error_summary FROM delta_run WHERE error_kind = 'invalid_plugin' LIMIT 1");
    assert!(summary.contains(&real), "{summary}");
}

#[test]
fn sighup_applies_the_jobs_file_again_and_a_broken_one_changes_nothing() {
    let mock = Mock::start(MOCK, 5);
    let mut file = Jobs::new();
    file.add(&mock, "first", "acme", "C1", "every = \"1s\"");
    let path = file.write();
    let db = file.work.db();
    let serve = Serve::start(&path, db.to_str().unwrap(), &[]);
    serve.wait_for_line("Serving 1 jobs", Duration::from_secs(60));
    let store = || Db::open(&db);
    wait_until("first runs", WITHIN, || {
        succeeded_since(&store(), "first", Utc::now() - chrono::Duration::hours(1))
    });

    file.add(&mock, "second", "acme", "C2", "every = \"1s\"");
    file.write();
    serve.signal(libc::SIGHUP);
    serve.wait_for_line("SIGHUP: Applied", WITHIN);
    let applied = Utc::now();
    wait_until("second runs", WITHIN, || {
        succeeded_since(&store(), "second", applied - chrono::Duration::seconds(1))
    });

    std::fs::write(&path, format!("{}\n[[job]]\nname = \"broken\"\n", file.toml)).unwrap();
    serve.signal(libc::SIGHUP);
    let line = serve.wait_for_line("was not applied", WITHIN);
    assert!(line.contains("job \"broken\""), "{line}");
    let after = Utc::now();
    wait_until("both jobs run on", WITHIN, || {
        succeeded_since(&store(), "first", after) && succeeded_since(&store(), "second", after)
    });
    assert!(serve.is_running());
    let (code, log) = serve.stop();
    assert_eq!(code, 0, "{log}");
    assert_eq!(
        store().count("job_apply"),
        2,
        "the start's apply and the first SIGHUP's"
    );
}

/// A seal key for tests: 32 bytes, base64.
const SEAL_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

#[test]
fn pg_dump_of_the_database_holds_no_secret_value() {
    let mock = Mock::start(MOCK, 5);
    let schema = PgSchema::new();
    let url = schema.url();
    let mut file = Jobs::new();
    // One job's token comes from the environment of the host that runs it,
    // the other's is inline in its settings file and sealed at apply.
    file.add(
        &mock,
        "from_env",
        "acme",
        "C1",
        "every = \"1s\"\n[job.secrets]\nacme_token = { env = \"NUNTIQ_SECRET_ACME\" }",
    );
    file.add(&mock, "inline", "acme", "C2", "every = \"1s\"");
    let path = file.write();
    // A host without NUNTIQ_SECRETS_KEY seals with a key file of its own.
    let config = Workdir::new();
    let apply = |key: Option<&str>| {
        let mut command = host_command();
        command.env_remove("NUNTIQ_SECRETS_KEY").env("XDG_CONFIG_HOME", config.path(""));
        if let Some(key) = key {
            command.env("NUNTIQ_SECRETS_KEY", key);
        }
        let out = command
            .args(["jobs", "apply", path.to_str().unwrap(), "--db", &url])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = apply(None);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains(TOKEN), "{err}");
    let key_file = config.path("nuntiq-host/secrets.key");
    let mode = std::fs::metadata(&key_file).expect("the host's key file").permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);

    // Hosts with another key cannot open it: the inline job fails as
    // secret_unavailable, naming the key, while the referenced one runs.
    let db = Db::open(Path::new(&url));
    let serve = Serve::start_from_db(
        &url,
        &[],
        &[("NUNTIQ_SECRETS_KEY", SEAL_KEY), ("NUNTIQ_SECRET_ACME", TOKEN)],
    );
    let since = Utc::now() - chrono::Duration::hours(1);
    wait_until("the referenced job runs and the sealed one cannot open", WITHIN, || {
        succeeded_since(&db, "from_env", since)
            && db.scalar::<i64>(
                "SELECT count(*) FROM schedule_slot WHERE job_name = 'inline' AND outcome = 'secret_unavailable'",
            ) > 0
    });
    let (code, log) = serve.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("sealed with key"), "{log}");
    assert!(!log.contains(TOKEN), "{log}");

    // Applied again under the shared key, every host opens it.
    let (code, err) = apply(Some(SEAL_KEY));
    assert_eq!(code, 0, "{err}");
    let serve = Serve::start_from_db(
        &url,
        &[],
        &[("NUNTIQ_SECRETS_KEY", SEAL_KEY), ("NUNTIQ_SECRET_ACME", TOKEN)],
    );
    let since = Utc::now();
    wait_until("both jobs run with their secrets", WITHIN, || {
        succeeded_since(&db, "from_env", since) && succeeded_since(&db, "inline", since)
    });
    let (code, log) = serve.stop();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains(TOKEN), "{log}");

    let dump = std::process::Command::new("pg_dump")
        .args(["--dbname", &pg_server(), "--schema", schema.name()])
        .output()
        .expect("pg_dump runs");
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains("NUNTIQ_SECRET_ACME") && dump.contains("sealed"),
        "the jobs are in the dump"
    );
    assert!(!dump.contains(TOKEN), "a secret value is in the dump");
}
