//! Hostile guests: one component per attack. Each test checks the kind of
//! failure, that the host exits normally with code 1, that the cursor did not
//! move, and that nothing the failed run queued reached the store.

use crate::MOCK;
use nuntiq_e2e::*;
use serde_json::{Value, json};

/// A mock, and a database whose `acme_eu/suppliers` stream has a committed
/// cursor from an honest Acme run.
pub(crate) struct Arena {
    pub mock: Mock,
    pub work: Workdir,
    pub cursor: Value,
    pub suppliers: i64,
}

impl Arena {
    pub fn new() -> Self {
        let mock = Mock::start(MOCK, 60);
        let work = Workdir::new();
        let settings = work.write_settings("acme.json", &acme_settings(&mock.api_url(), "acme_eu"));
        let honest = run_acme(&mock, &settings, &work.db(), &[]);
        assert_eq!(honest.code, 0, "{}", honest.stderr);
        let suppliers = Db::open(&work.db()).count("supplier");
        Self {
            cursor: honest.envelope["cursor_committed"].clone(),
            mock,
            work,
            suppliers,
        }
    }

    pub fn settings(&self) -> Value {
        acme_settings(&self.mock.api_url(), "acme_eu")
    }

    /// Runs `guest` with these settings against the arena's database.
    pub fn attack_with(&self, guest_name: &str, settings: &Value, extra: &[&str]) -> Run {
        nuntiq_host(self.attack_args(guest_name, settings, extra))
    }

    /// The `run-plugin` arguments of an attack.
    pub fn attack_args(&self, guest_name: &str, settings: &Value, extra: &[&str]) -> Vec<String> {
        let path = self.work.write_settings(&format!("{guest_name}.json"), settings);
        let mut args = vec![
            "run-plugin".to_owned(),
            guest(guest_name).display().to_string(),
            path.display().to_string(),
            "--db".into(),
            self.work.db().display().to_string(),
            "--allow-host".into(),
            self.mock.allow_host(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    pub fn attack(&self, guest_name: &str, extra: &[&str]) -> Run {
        self.attack_with(guest_name, &self.settings(), extra)
    }

    /// The run failed with `kind`, the process exited 1, the delta run is
    /// failed with a summary, the cursor did not move and nothing queued was written.
    pub fn assert_contained(&self, run: &Run, kind: &str) {
        assert_eq!(run.code, 1, "exit code: {}\n{}", run.envelope, tail(&run.stderr));
        assert_eq!(run.error_kind(), kind, "{}\n{}", run.envelope, tail(&run.stderr));
        let db = Db::open(&self.work.db());
        let state = db.state("acme_eu", "suppliers").unwrap();
        assert_eq!(state["status"], "failed", "{state}");
        assert_eq!(state["committed_cursor_value"], self.cursor, "the cursor did not move");
        assert!(!state["error_summary"].as_str().unwrap_or("").is_empty(), "{state}");
        let stored = db.suppliers("10000001");
        assert!(
            !stored.contains_key("HOSTILE-1"),
            "a queued supplier of the failed run was written"
        );
        assert!(!stored.keys().any(|k| k.starts_with("GIANT-")));
    }

    pub fn supplier_requests(&self) -> usize {
        self.mock.requests().len()
    }
}

pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[test]
fn spin_loop_is_stopped_by_the_timeout() {
    let arena = Arena::new();
    let run = arena.attack("spin-loop", &["--timeout", "1s"]);
    arena.assert_contained(&run, "timeout");
    assert_eq!(run.error_message(), "the run exceeded its time limit of 1s (--timeout)");
}

#[test]
fn timeout_also_cuts_a_connector_waiting_in_a_host_call() {
    let arena = Arena::new();
    arena.mock.faults(json!([{"action": "delay", "delay_ms": 20000}]));
    let mut settings = arena.settings();
    settings["job_params"]["since_override"] = json!("2020-01-01T00:00:00Z");
    let run = arena.attack_with("acme", &settings, &["--timeout", "1s"]);
    arena.assert_contained(&run, "timeout");
}

#[test]
fn memory_hog_hits_the_memory_limit() {
    let arena = Arena::new();
    let run = arena.attack("memory-hog", &["--max-memory", "64MiB"]);
    arena.assert_contained(&run, "memory_limit");
    assert!(
        run.error_message()
            .contains("over the limit of 67108864 bytes (--max-memory)"),
        "{}",
        run.envelope
    );
}

#[test]
fn deep_recursion_traps_with_the_backtrace_in_the_log_only() {
    let arena = Arena::new();
    let run = arena.attack("deep-recursion", &[]);
    arena.assert_contained(&run, "trap");
    assert!(run.error_message().contains("call stack exhausted"), "{}", run.envelope);
    assert!(
        !run.error_message().contains("wasm backtrace"),
        "no backtrace in the envelope"
    );
    assert!(
        run.stderr.contains("wasm backtrace:"),
        "the backtrace is in the log: {}",
        tail(&run.stderr)
    );
}

#[test]
fn log_flood_is_capped_and_counted() {
    let arena = Arena::new();
    let run = arena.attack("log-flood", &["--max-log-lines", "1000"]);
    arena.assert_contained(&run, "connector_error");
    let flood_lines = run.stderr.lines().filter(|l| l.contains("flood line")).count();
    assert_eq!(flood_lines, 1000, "exactly the budget was written");
    // 2 000 000 logger lines and 200 000 stdout lines, less the 1000 written.
    assert!(
        run.stderr.contains("[WARN] [customer 10000001] 2199000 log lines the connector wrote or caused were dropped"),
        "the drop count is logged once: {}",
        tail(&run.stderr)
    );
    assert_eq!(run.stderr.matches("were dropped").count(), 1);
}

#[test]
fn host_outside_the_allowlist_is_refused_before_any_lookup() {
    let arena = Arena::new();
    let run = arena.attack("outside-allowlist", &[]);
    arena.assert_contained(&run, "network_denied");
    // The policy decides on the name: "not config.api_url's origin" comes before DNS.
    assert!(
        run.error_message()
            .contains("exfiltrate.invalid:443 refused: the host is not config.api_url's origin"),
        "{}",
        run.envelope
    );
}

#[test]
fn loopback_addresses_the_operator_did_not_allow_are_refused_in_every_spelling() {
    let arena = Arena::new();
    let port = arena.mock.url.rsplit(':').next().unwrap().to_owned();
    let mut settings = arena.settings();
    // The operator opened the mock as `localhost` only; every other spelling of
    // loopback — including ones that reach the same socket — stays closed.
    settings["config"]["api_url"] = json!(format!("http://localhost:{port}/v2"));
    let targets: Vec<String> = [
        "127.0.0.1",
        "127.0.0.2",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "2130706433",
        "0x7f.1",
        "0177.0.0.1",
        "127.1",
    ]
    .iter()
    .map(|h| format!("http://{h}:{port}/v2/suppliers"))
    .collect();
    settings["config"]["targets"] = json!(targets);
    let before = arena.supplier_requests();
    let path = arena.work.write_settings("probe.json", &settings);
    let run = nuntiq_host([
        "run-plugin",
        guest("loopback-probe").to_str().unwrap(),
        path.to_str().unwrap(),
        "--db",
        arena.work.db().to_str().unwrap(),
        "--allow-host",
        &format!("http://localhost:{port}"),
    ]);
    arena.assert_contained(&run, "network_denied");
    for target in &targets {
        assert!(
            run.error_message().contains(&format!("{target}: refused by the host")),
            "{target}: {}",
            run.envelope
        );
    }
    assert_eq!(arena.supplier_requests(), before, "no probe reached the mock");
}

#[test]
fn redirect_from_the_allowed_host_to_a_forbidden_one_is_refused() {
    let arena = Arena::new();
    let port = arena.mock.url.rsplit(':').next().unwrap();
    let location = format!("http://127.0.0.2:{port}/v2/suppliers");
    arena.mock.faults(json!([{"action": "redirect", "location": location}]));
    let mut settings = arena.settings();
    settings["job_params"]["since_override"] = json!("2020-01-01T00:00:00Z");
    let before = arena.supplier_requests();
    let run = arena.attack_with("acme", &settings, &[]);
    arena.assert_contained(&run, "network_denied");
    assert!(run.error_message().contains("127.0.0.2"), "{}", run.envelope);
    assert_eq!(arena.supplier_requests(), before + 1, "the redirect was not followed");
}

#[test]
fn redirect_loops_stop_after_five_hops() {
    let arena = Arena::new();
    let location = format!("{}/v2/suppliers?page=1", arena.mock.url);
    arena
        .mock
        .faults(json!([{"action": "redirect", "location": location, "times": 20}]));
    let mut settings = arena.settings();
    settings["job_params"]["since_override"] = json!("2020-01-01T00:00:00Z");
    let before = arena.supplier_requests();
    let run = arena.attack_with("acme", &settings, &[]);
    arena.assert_contained(&run, "too_many_redirects");
    assert!(
        run.error_message().contains("redirected more than 5 times"),
        "{}",
        run.envelope
    );
    assert_eq!(arena.supplier_requests(), before + 6, "the first request and five hops");
}

#[test]
fn sandbox_has_no_files_env_preopens_or_sockets() {
    let arena = Arena::new();
    let mut settings = arena.settings();
    settings["config"]["socket_target"] = json!(arena.mock.url.trim_start_matches("http://"));
    let run = arena.attack_with("sandbox-escape", &settings, &[]);
    arena.assert_contained(&run, "connector_error");
    assert_eq!(
        run.error_message(),
        "no ambient authority: read /etc/passwd, read ./settings.json, write /tmp/pwned, list /, list ., \
         environment, HOME, arguments, tcp connect"
    );
}

#[test]
fn secrets_are_redacted_from_logs_envelope_and_state() {
    let arena = Arena::new();
    let run = arena.attack("secret-logger", &["--log-format", "json"]);
    arena.assert_contained(&run, "connector_error");
    let everything = format!("{}\n{}", run.envelope, run.stderr);
    assert!(!everything.contains(TOKEN), "the token leaked:\n{everything}");
    assert!(run.error_message().contains("[REDACTED]"), "{}", run.envelope);
    let lines = run.json_logs();
    assert!(lines.iter().any(|l| l["message"] == "the token is [REDACTED]"));
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "stdout: [REDACTED]" && l["step"] == "stdout")
    );
    assert!(
        lines
            .iter()
            .any(|l| l["detail"]["url"] == "https://x.example/?access_token=[REDACTED]")
    );
    let state = Db::open(&arena.work.db()).state("acme_eu", "suppliers").unwrap();
    assert!(!state.to_string().contains(TOKEN), "{state}");
}

#[test]
fn deny_secret_read_hides_secrets_but_bearer_injection_still_works() {
    let arena = Arena::new();
    let run = arena.attack("secret-logger", &["--deny-secret-read"]);
    arena.assert_contained(&run, "connector_error");
    assert_eq!(
        run.error_message(),
        "get-secret returned nothing (secret reads are off)"
    );

    let mut settings = arena.settings();
    settings["job_params"]["since_override"] = json!("2020-01-01T00:00:00Z");
    let honest = arena.attack_with("acme", &settings, &["--deny-secret-read"]);
    assert_eq!(honest.code, 0, "{}", honest.stderr);
    assert_eq!(
        honest.envelope["fetched"].as_i64().unwrap(),
        arena.suppliers + 1 /* one old row */
    );
}

#[test]
fn panic_mid_run_fails_the_open_run() {
    let arena = Arena::new();
    let run = arena.attack("panic-mid-run", &[]);
    arena.assert_contained(&run, "trap");
    assert!(
        run.error_message().starts_with(
            "the connector panicked: page 3 had 0 rows: index out of range (at guests/hostile/panic-mid-run/src/lib.rs:"
        ),
        "{}",
        run.envelope
    );
    assert!(
        run.stderr.contains("[WARN] [customer 10000001] page 3 had 0 rows: index out of range"),
        "the panic is logged"
    );
    assert!(run.stderr.contains("wasm backtrace: #0 "), "{}", tail(&run.stderr));
    let stored = Db::open(&arena.work.db()).suppliers("10000001");
    // What the connector saved before the panic stays (at-least-once); the queue does not.
    assert!(stored.contains_key("HOSTILE-SAVED"));
}

#[test]
fn success_without_committing_the_cursor_is_a_failure() {
    let arena = Arena::new();
    let run = arena.attack("no-commit", &[]);
    arena.assert_contained(&run, "cursor_not_committed");
    assert!(run.error_message().contains("acme_eu/suppliers"), "{}", run.envelope);

    let mut settings = arena.settings();
    settings["config"]["leak_handle"] = json!(true);
    let run = arena.attack_with("no-commit", &settings, &[]);
    arena.assert_contained(&run, "cursor_not_committed");
}

#[test]
fn gigantic_batch_is_refused_with_a_clear_error() {
    let arena = Arena::new();
    let run = arena.attack("giant-batch", &[]);
    arena.assert_contained(&run, "batch_too_large");
    assert!(
        run.error_message()
            .contains("the limit of 10000 (--max-queued-suppliers)"),
        "{}",
        run.envelope
    );
}

#[test]
fn forbidden_and_malformed_headers_are_refused() {
    let arena = Arena::new();
    let before = arena.supplier_requests();
    let run = arena.attack("header-smuggler", &[]);
    arena.assert_contained(&run, "connector_error");
    let m = run.error_message();
    for name in ["host", "transfer-encoding", "connection"] {
        assert!(
            m.contains(&format!(
                "{name}: invalid request: the {name} header is set by the host"
            )),
            "{m}"
        );
    }
    assert!(
        m.contains("authorization: invalid request: authorization cannot be set together with bearer-secret"),
        "{m}"
    );
    assert!(
        m.contains("x-note: invalid request: the value of header \"x-note\" is not valid"),
        "{m}"
    );
    assert!(
        m.contains("bad header: invalid request: \"bad header\" is not a valid header name"),
        "{m}"
    );
    assert_eq!(arena.supplier_requests(), before, "nothing was sent");
}

#[test]
fn oversized_response_body_is_cut() {
    let arena = Arena::new();
    let mut settings = arena.settings();
    settings["job_params"]["since_override"] = json!("2020-01-01T00:00:00Z");
    let run = arena.attack_with("acme", &settings, &["--max-response-body", "1KiB"]);
    arena.assert_contained(&run, "body_too_large");
    assert!(
        run.error_message()
            .contains("larger than the limit of 1024 bytes (--max-response-body)"),
        "{}",
        run.envelope
    );
}

#[test]
fn request_budget_is_enforced() {
    let arena = Arena::new();
    let mut settings = arena.settings();
    settings["job_params"]["since_override"] = json!("2020-01-01T00:00:00Z");
    settings["config"]["page_size"] = json!(10);
    let before = arena.supplier_requests();
    let run = arena.attack_with("acme", &settings, &["--max-requests", "3"]);
    arena.assert_contained(&run, "request_budget");
    assert_eq!(arena.supplier_requests(), before + 3);
}
