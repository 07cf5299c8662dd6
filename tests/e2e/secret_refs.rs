//! Secret references: a job's secrets named by where they live (`env`,
//! `file`) and read on the host that runs it, within the bounds its operator
//! set; a missing one fails the run as `secret_unavailable`, naming the key
//! and never a value.

use crate::MOCK;
use crate::serve::{Jobs, Serve, wait_until};
use nuntiq_e2e::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// `run-plugin` of the Acme job with `env` set.
fn run_with_env(mock: &Mock, settings: &Path, db: &Path, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let output = host_command()
        .args(acme_args(mock, settings, db, extra))
        .envs(env.iter().copied())
        .output()
        .expect("nuntiq-host runs");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    Run {
        code: output.status.code().unwrap(),
        envelope: serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}")),
        stderr,
    }
}

fn settings_with_secret(mock: &Mock, secret: Value) -> Value {
    let mut settings = acme_settings(&mock.api_url(), "acme_eu");
    settings["secrets"]["acme_token"] = secret;
    settings
}

#[test]
fn an_env_reference_is_read_where_the_job_runs_and_a_missing_one_fails_the_run_naming_it() {
    let mock = Mock::start(MOCK, 120);
    let work = Workdir::new();
    let settings = work.write_settings(
        "s.json",
        &settings_with_secret(&mock, json!({"env": "NUNTIQ_SECRET_ACME"})),
    );

    // The same job with its token inline, for what a run of this mock stores.
    let control = Workdir::new();
    let inline = control.write_settings("s.json", &settings_with_secret(&mock, json!(TOKEN)));
    assert_eq!(run_acme(&mock, &inline, &control.db(), &[]).code, 0);
    let stored = Db::open(&control.db()).count("supplier");
    assert!(stored > 100, "{stored}");

    let run = run_with_env(&mock, &settings, &work.db(), &[], &[("NUNTIQ_SECRET_ACME", TOKEN)]);
    assert_eq!(run.code, 0, "{}\n{}", run.envelope, run.stderr);
    assert_eq!(Db::open(&work.db()).count("supplier"), stored);
    // The value read from the environment is redacted like an inline one.
    assert!(!run.stderr.contains(TOKEN) && !run.envelope.to_string().contains(TOKEN));

    let fresh = Workdir::new();
    let run = run_with_env(&mock, &settings, &fresh.db(), &[], &[]);
    assert_eq!(run.code, 2, "{}", run.envelope);
    assert_eq!(run.error_kind(), "secret_unavailable");
    let message = run.error_message();
    assert!(
        message.contains("secrets.acme_token") && message.contains("NUNTIQ_SECRET_ACME") && message.contains("not set"),
        "{message}"
    );
    assert!(!fresh.db().exists(), "a run whose secret is missing writes nothing");
}

#[test]
fn a_reference_may_not_reach_the_hosts_own_variables_or_files_outside_its_secrets_dir() {
    let mock = Mock::start(MOCK, 10);
    let work = Workdir::new();
    // The host's own credentials are not a job's to read.
    let settings = work.write_settings("s.json", &settings_with_secret(&mock, json!({"env": "PGPASSWORD"})));
    let run = run_with_env(
        &mock,
        &settings,
        &work.db(),
        &[],
        &[("PGPASSWORD", "hunter2-db-password")],
    );
    assert_eq!(run.error_kind(), "secret_unavailable", "{}", run.envelope);
    assert!(
        run.error_message().contains("must start with NUNTIQ_SECRET_"),
        "{}",
        run.error_message()
    );
    assert!(!format!("{}{}", run.envelope, run.stderr).contains("hunter2"));
    // The operator may widen the prefixes; then it is read.
    let run = run_with_env(
        &mock,
        &settings,
        &work.db(),
        &["--secret-env-prefix", "PG"],
        &[("PGPASSWORD", TOKEN)],
    );
    assert_eq!(run.code, 0, "{}", run.envelope);

    let secrets = Workdir::new();
    let outside = Workdir::new();
    std::fs::write(secrets.path("acme_token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(outside.path("shadow"), "root:$6$not-for-jobs").unwrap();
    std::os::unix::fs::symlink(outside.path("shadow"), secrets.path("link")).unwrap();
    let dir = secrets.path("");
    let dir = dir.to_str().unwrap();
    let inside = work.write_settings(
        "file.json",
        &settings_with_secret(&mock, json!({"file": secrets.path("acme_token")})),
    );
    let fresh = Workdir::new();
    let run = run_with_env(&mock, &inside, &fresh.db(), &["--secrets-dir", dir], &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.envelope, run.stderr);
    assert!(Db::open(&fresh.db()).count("supplier") > 0);
    // Without --secrets-dir only /run/secrets is allowed.
    let run = run_with_env(&mock, &inside, &fresh.db(), &[], &[]);
    assert_eq!(run.error_kind(), "secret_unavailable", "{}", run.envelope);
    for escape in [outside.path("shadow"), secrets.path("link")] {
        let settings = work.write_settings("escape.json", &settings_with_secret(&mock, json!({"file": escape})));
        let run = run_with_env(&mock, &settings, &fresh.db(), &["--secrets-dir", dir], &[]);
        assert_eq!(run.error_kind(), "secret_unavailable", "{escape:?}: {}", run.envelope);
        assert!(
            run.error_message()
                .contains("not in a directory jobs may read secrets from")
        );
        assert!(!format!("{}{}", run.envelope, run.stderr).contains("not-for-jobs"));
    }
    // Scoped by customer: a tenant's job reads its own directory only.
    let root = Workdir::new();
    for customer in ["10000001", "10000002"] {
        std::fs::create_dir(root.path(customer)).unwrap();
        std::fs::write(root.path(customer).join("acme_token"), TOKEN).unwrap();
    }
    let scope = format!("{}/{{customer}}", root.path("").display());
    for (customer, code) in [("10000001", 0), ("10000002", 2)] {
        let mut settings = settings_with_secret(&mock, json!({"file": root.path(customer).join("acme_token")}));
        settings["customer_number"] = json!(if code == 0 { customer } else { "10000001" });
        let settings = work.write_settings("scoped.json", &settings);
        let fresh = Workdir::new();
        let run = run_with_env(&mock, &settings, &fresh.db(), &["--secrets-dir", &scope], &[]);
        assert_eq!(run.code, code, "{customer}: {}", run.envelope);
        if code != 0 {
            assert_eq!(run.error_kind(), "secret_unavailable");
            assert!(run.error_message().contains("not in a directory jobs may read secrets from"));
        }
    }

    // A relative path would mean different files on different hosts.
    let relative = work.write_settings("rel.json", &settings_with_secret(&mock, json!({"file": "acme_token"})));
    let run = run_with_env(&mock, &relative, &fresh.db(), &[], &[]);
    assert_eq!(
        (run.code, run.error_kind()),
        (2, "invalid_settings"),
        "{}",
        run.envelope
    );
    assert!(run.error_message().contains("secrets.acme_token") && run.error_message().contains("absolute"));
}

#[test]
fn serve_puts_job_secrets_over_the_settings_and_records_a_missing_one_as_secret_unavailable() {
    let mock = Mock::start(MOCK, 20);
    let schema = PgSchema::new();
    let mut jobs = Jobs::new();
    // The settings' own token is wrong: only the job's reference makes the run succeed.
    jobs.add_with(
        &mock,
        "referenced",
        "acme",
        "C1",
        json!({}),
        "every = \"1s\"\n[job.secrets]\nacme_token = { env = \"NUNTIQ_SECRET_C1\" }",
    );
    jobs.add_with(
        &mock,
        "missing",
        "acme",
        "C2",
        json!({}),
        "every = \"1s\"\n[job.secrets]\nacme_token = { env = \"NUNTIQ_SECRET_C2\" }",
    );
    for name in ["referenced", "missing"] {
        let path = jobs.work.path(&format!("{name}.json"));
        let mut settings: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        settings["secrets"]["acme_token"] = json!("wrong-token");
        std::fs::write(&path, settings.to_string()).unwrap();
    }
    let file = jobs.write();
    let serve = Serve::start_env(&file, &schema.url(), &["--lease", "5s"], &[("NUNTIQ_SECRET_C1", TOKEN)]);
    serve.wait_for_line("Serving 2 jobs", Duration::from_secs(60));
    let db = Db::open(Path::new(&schema.url()));
    let count = |sql: &str| db.scalar::<i64>(sql);
    wait_until("both jobs ran twice", Duration::from_secs(30), || {
        count("SELECT count(*) FROM schedule_slot WHERE job_name = 'referenced' AND status = 'succeeded'") >= 2
            && count(
                "SELECT count(*) FROM schedule_slot WHERE job_name = 'missing' AND status = 'failed' \
                 AND outcome = 'secret_unavailable'",
            ) >= 2
    });
    let (code, log) = serve.stop();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains(TOKEN));
    assert!(
        log.contains("NUNTIQ_SECRET_C2") && log.contains("secret_unavailable"),
        "{log}"
    );
    assert_eq!(
        count("SELECT count(*) FROM schedule_slot WHERE job_name = 'missing' AND status = 'succeeded'"),
        0
    );
    let (code, out, err) = host_output(&["runs", "--db", &schema.url(), "--limit", "1000", "--json"]);
    assert_eq!(code, 0, "{err}");
    let runs: Vec<Value> = serde_json::from_str(&out).unwrap();
    let missing: Vec<_> = runs.iter().filter(|r| r["job"] == "missing").collect();
    assert!(!missing.is_empty());
    for r in missing {
        assert_eq!(r["error_kind"], "secret_unavailable", "{r}");
        assert!(
            r["error_summary"].as_str().unwrap().contains("secrets.acme_token"),
            "{r}"
        );
    }
}

#[test]
fn serve_refuses_at_start_a_job_secret_of_no_known_form() {
    let mock = Mock::start(MOCK, 5);
    let mut jobs = Jobs::new();
    jobs.add(
        &mock,
        "odd",
        "acme",
        "C1",
        "every = \"1m\"\n[job.secrets]\nacme_token = { vault = \"kv/acme\" }",
    );
    let file = jobs.write();
    let (code, _, err) = host_output(&[
        "serve",
        file.to_str().unwrap(),
        "--db",
        jobs.work.db().to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("\"odd\"") && err.contains("secrets.acme_token") && err.contains("\"vault\""),
        "{err}"
    );
}
