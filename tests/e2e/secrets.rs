//! Secrets stay secret and the operator's views stay honest: split, encoded
//! and numeric secrets, bearer tokens bound to the API's origin, results that
//! claim the envelope's keys, and connector-written values in `state show`.

use crate::hostile::{Arena, tail};
use nuntiq_e2e::*;
use serde_json::{Value, json};

fn with_mode(arena: &Arena, mode: &str) -> Value {
    let mut settings = arena.settings();
    settings["config"]["mode"] = json!(mode);
    settings
}

#[test]
fn a_secret_split_by_control_characters_never_prints() {
    let arena = Arena::new();
    for (round, format) in ["text", "json"].into_iter().enumerate() {
        let run = arena.attack_with(
            "secret-splitter",
            &with_mode(&arena, "split"),
            &["--log-format", format],
        );
        arena.assert_contained(&run, "connector_error");
        let everything = format!("{}\n{}", run.envelope, run.stderr);
        let (head, tail_half) = TOKEN.split_at(TOKEN.len() / 2);
        assert!(
            !everything.contains(TOKEN),
            "{format}: the token printed whole:\n{everything}"
        );
        assert!(
            !everything.contains(&format!("{head}\u{7}")) && !everything.contains(&format!("\u{202e}{tail_half}")),
            "{format}: a split token printed"
        );
        // Characters a terminal shows as nothing would print the token to the eye.
        for invisible in ['\u{200b}', '\u{ad}', '\u{2060}', '\u{feff}', '\u{fe0f}', '\u{e0041}'] {
            assert!(
                !everything.contains(&format!("{head}{invisible}")),
                "{format}: the token printed split by U+{:04X}",
                invisible as u32
            );
        }
        assert!(
            run.error_message().contains("giving up with [REDACTED]"),
            "{}",
            run.envelope
        );
        assert!(
            run.stderr.contains("stdout [REDACTED]") && run.stderr.contains("stderr [REDACTED]"),
            "{}",
            tail(&run.stderr)
        );
        let db = Db::open(&arena.work.db());
        let state = db.state("acme_eu", "suppliers").unwrap();
        assert!(!state.to_string().contains(head), "{state}");
        // Rejected rows are kept as they came, but never with a split token in them.
        let rejected = db.rows("SELECT row, reason, times FROM rejected_record");
        let times: usize = rejected
            .iter()
            .map(|r| r[2].as_deref().unwrap().parse::<usize>().unwrap())
            .sum();
        assert_eq!(times, 11 * (round + 1), "every split row was set aside");
        for r in &rejected {
            let (row, reason) = (r[0].as_deref().unwrap(), r[1].as_deref().unwrap());
            assert!(row.contains("[REDACTED]") && !row.contains(head), "{row:?}");
            assert!(reason.contains("[REDACTED]") && !reason.contains(head), "{reason:?}");
        }
    }
}

#[test]
fn an_encoded_secret_never_reaches_the_cassette_or_the_log() {
    use base64::Engine;
    let arena = Arena::new();
    // Every sign a query string encodes.
    let key = "k3y+with/signs=and!a space";
    let mut settings = with_mode(&arena, "encoded");
    settings["secrets"]["query_key"] = json!(key);
    settings["config"]["echo_url"] = json!(format!("{}/_mock/echo", arena.mock.url));
    let cassette = arena.work.path("echo.json");
    let run = arena.attack_with(
        "secret-splitter",
        &settings,
        &["--log-format", "json", "--record", cassette.to_str().unwrap()],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.envelope, tail(&run.stderr));
    // The API really echoed the token and each encoding of the key to the connector.
    let form_encoded: String = url::form_urlencoded::byte_serialize(key.as_bytes()).collect();
    let as_typed = key.replace(' ', "%20");
    let lower_hex: String = key
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect();
    let query = |value: &str| json!([TOKEN.len(), "key=".len() + value.len()]);
    assert_eq!(
        run.envelope["echoed"],
        json!([query(&form_encoded), query(&as_typed), query(&lower_hex)]),
        "{}",
        run.envelope
    );

    let text = std::fs::read_to_string(&cassette).unwrap();
    let recorded: Value = serde_json::from_str(&text).unwrap();
    let interactions = recorded["interactions"].as_array().unwrap();
    assert_eq!(interactions.len(), 3, "{text}");
    for interaction in interactions {
        let url = interaction["request"]["url"].as_str().unwrap();
        assert!(url.ends_with("/_mock/echo?key=[REDACTED]"), "{url}");
        // The body is not UTF-8: it is kept as base64, of the redacted bytes.
        let body = base64::engine::general_purpose::STANDARD
            .decode(interaction["response"]["body_base64"].as_str().expect("a base64 body"))
            .unwrap();
        assert_eq!(
            body,
            b"\xff\xfeauthorization: Bearer [REDACTED]\nquery: key=[REDACTED]\n\x80",
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    // The envelope, and the rows set aside with the URL as their reason.
    assert!(
        run.envelope["last_url"]
            .as_str()
            .unwrap()
            .ends_with("/_mock/echo?key=[REDACTED]"),
        "{}",
        run.envelope
    );
    // Redacted, the three bodies are one row, seen three times.
    let rejected = Db::open(&arena.work.db()).rows("SELECT row, reason, times FROM rejected_record");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0][2].as_deref(), Some("3"));
    for r in &rejected {
        let (row, reason) = (r[0].as_deref().unwrap(), r[1].as_deref().unwrap());
        assert!(
            row.contains("authorization: Bearer [REDACTED]") && row.contains("query: key=[REDACTED]"),
            "{row:?}"
        );
        assert!(reason.ends_with("/_mock/echo?key=[REDACTED]"), "{reason:?}");
    }
    let lines: Vec<Value> = run.json_logs().into_iter().filter(|l| l["step"] == "echo").collect();
    assert_eq!(lines.len(), 3, "{}", run.stderr);
    for line in &lines {
        assert!(
            line["detail"]["url"].as_str().unwrap().ends_with("key=[REDACTED]"),
            "{line}"
        );
        assert!(
            line["message"].as_str().unwrap().contains("Bearer [REDACTED]"),
            "{line}"
        );
    }

    // No form of either secret anywhere: as it is, percent- or form-encoded,
    // or base64 at any alignment.
    let everything = format!("{text}\n{}\n{}\n{rejected:?}", run.stderr, run.envelope);
    let mut forms = vec![key.to_owned(), TOKEN.to_owned(), form_encoded, as_typed, lower_hex];
    for offset in 0..3 {
        let shifted = [&b"ab"[..offset], TOKEN.as_bytes()].concat();
        let (first, end) = ((8 * offset).div_ceil(6), 8 * shifted.len() / 6);
        for engine in [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::URL_SAFE,
        ] {
            forms.push(engine.encode(&shifted)[first..end].to_owned());
        }
    }
    for form in &forms {
        assert!(
            !everything.contains(form.as_str()),
            "{form:?} is written:\n{everything}"
        );
    }
}

#[test]
fn a_numeric_secret_is_redacted_as_a_json_number() {
    let arena = Arena::new();
    let mut settings = with_mode(&arena, "numeric");
    settings["secrets"]["account"] = json!("987654321012");
    let run = arena.attack_with("secret-splitter", &settings, &["--log-format", "json"]);
    assert_eq!(run.code, 0, "{}", run.envelope);
    assert_eq!(run.envelope["account"], "[REDACTED]");
    assert_eq!(run.envelope["nested"][0], "[REDACTED]");
    assert!(!run.stderr.contains("987654321012"), "{}", run.stderr);
    let line = run
        .json_logs()
        .into_iter()
        .find(|l| l["message"] == "the account")
        .unwrap();
    assert_eq!(line["detail"]["account"], "[REDACTED]");
}

#[test]
fn a_bearer_secret_goes_only_to_the_api_origin_unless_the_operator_says_so() {
    let arena = Arena::new();
    let port = arena.mock.url.rsplit(':').next().unwrap().to_owned();
    let elsewhere = format!("http://localhost:{port}");
    let mut settings = with_mode(&arena, "bearer-elsewhere");
    settings["config"]["elsewhere"] = json!(elsewhere);
    let before = arena.mock.requests().len();
    let run = arena.attack_with("secret-splitter", &settings, &["--allow-host", &elsewhere]);
    assert_eq!(run.code, 1, "{}", run.envelope);
    assert_eq!(run.error_kind(), "secret_denied", "{}", run.envelope);
    assert!(
        run.error_message().contains(&format!(
            "bearer-secret \"acme_token\" is sent only to config.api_url's origin, not to http://localhost:{port}; \
             an operator can allow that origin with --bearer-host http://localhost:{port}"
        )),
        "{}",
        run.envelope
    );
    assert_eq!(arena.mock.requests().len(), before, "nothing was sent");

    // The operator names the origin: now the token goes there.
    let run = arena.attack_with(
        "secret-splitter",
        &settings,
        &["--allow-host", &elsewhere, "--bearer-host", &elsewhere],
    );
    assert!(run.error_message().contains("the token went to"), "{}", run.envelope);
    let sent = arena.mock.requests().pop().unwrap();
    assert_eq!(sent["host"], format!("localhost:{port}"));
    assert_eq!(sent["authorized"], true);
}

#[test]
fn a_result_cannot_claim_the_envelopes_own_keys() {
    let arena = Arena::new();
    let run = arena.attack_with("secret-splitter", &with_mode(&arena, "liar"), &[]);
    assert_eq!(run.code, 1, "{}", run.envelope);
    assert_eq!(run.envelope["success"], false);
    assert_eq!(run.error_kind(), "invalid_result");
    assert!(
        run.error_message()
            .contains("sets \"success\", one of the envelope's own keys"),
        "{}",
        run.envelope
    );
}

#[test]
fn state_show_escapes_what_a_connector_wrote() {
    let arena = Arena::new();
    let run = arena.attack_with("secret-splitter", &with_mode(&arena, "forge-views"), &[]);
    assert_eq!(run.code, 0, "{}", run.envelope);
    let db = arena.work.db();
    let (code, text, err) = host_output(&["state", "show", "--db", db.to_str().unwrap(), "--stream", "forged"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\u{202e}'),
        "{text:?}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("  status ")).count(),
        1,
        "no forged status line: {text}"
    );
    assert!(
        text.contains(r"cursor             tok\n  status             succeeded\u{1b}[2J\u{1b}]0;pwned\u{7}\u{202e}dne"),
        "{text}"
    );
    for view in [&["runs"][..], &["state", "audit"][..]] {
        let mut args = view.to_vec();
        args.extend(["--db", db.to_str().unwrap()]);
        let (code, text, _) = host_output(&args);
        assert_eq!(code, 0);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}'),
            "{view:?}: {text:?}"
        );
    }
    // JSON stays exact.
    let (_, json_text, _) = host_output(&[
        "state",
        "show",
        "--db",
        db.to_str().unwrap(),
        "--stream",
        "forged",
        "--json",
    ]);
    let rows: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(
        rows[0]["committed_cursor_value"],
        "tok\n  status             succeeded\u{1b}[2J\u{1b}]0;pwned\u{7}\u{202e}dne"
    );
}

#[test]
fn null_in_config_and_job_params_means_absent() {
    let arena = Arena::new();
    let mut settings = arena.settings();
    settings["job_params"]["since_override"] = Value::Null;
    settings["job_params"]["lookback_days"] = Value::Null;
    settings["config"]["page_size"] = Value::Null;
    let run = arena.attack_with("acme", &settings, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.envelope, tail(&run.stderr));
    assert!(!run.stderr.contains("since_override set"), "{}", run.stderr);
    let metadata: Value = serde_json::from_str(
        Db::open(&arena.work.db()).state("acme_eu", "suppliers").unwrap()["metadata"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(metadata["page_size"], 200, "the default, not \"null\"");
}

#[test]
fn a_one_letter_secret_leaves_the_log_readable() {
    let arena = Arena::new();
    let mut settings = arena.settings();
    settings["secrets"]["letter"] = json!("t");
    let run = arena.attack_with("acme", &settings, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("[INFO] [customer 10000001] Pulling suppliers updated_after="),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Fetched page 1"), "{}", run.stderr);
    assert!(!run.stderr.contains("[REDACTED]"), "{}", run.stderr);
    assert_eq!(run.envelope["connector_name"], "acme_eu");
}
