//! Bad input: each case is a clear message naming the field, file or host,
//! exit code 2, and nothing written (the database is not even created).

use crate::MOCK;
use nuntiq_e2e::*;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Runs a job that must be refused before anything happens.
fn refused(plugin: &Path, settings: &Path, extra: &[&str]) -> Run {
    let db = settings.with_file_name("refused.db");
    let mut args = vec![
        "run-plugin".to_owned(),
        plugin.display().to_string(),
        settings.display().to_string(),
        "--db".into(),
        db.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let run = nuntiq_host(args);
    assert_eq!(run.code, 2, "bad input exits 2: {}\n{}", run.envelope, run.stderr);
    assert_eq!(run.envelope["success"], false);
    assert!(!db.exists(), "nothing was written: {} exists", db.display());
    assert!(run.stderr.contains("[ERROR] Nothing was run: "), "{}", run.stderr);
    run
}

fn settings_file(work: &Workdir, settings: serde_json::Value) -> PathBuf {
    work.write_settings("settings.json", &settings)
}

const API: &str = "https://api.acme-erp.com/v2";

#[test]
fn missing_customer_number_is_named() {
    let work = Workdir::new();
    let mut s = acme_settings(API, "acme_eu");
    s.as_object_mut().unwrap().remove("customer_number");
    let run = refused(&guest("acme"), &settings_file(&work, s), &[]);
    assert_eq!(run.error_kind(), "invalid_settings");
    assert!(
        run.error_message()
            .ends_with("settings.json: customer_number: required: the tenant's customer number, e.g. \"10000001\""),
        "{}",
        run.envelope
    );
}

#[test]
fn malformed_json_names_the_file_and_position() {
    let work = Workdir::new();
    let path = work.path("settings.json");
    std::fs::write(&path, "{\"customer_number\": \"1\",").unwrap();
    let run = refused(&guest("acme"), &path, &[]);
    assert_eq!(run.error_kind(), "invalid_settings");
    assert!(
        run.error_message().contains("settings.json: not valid JSON"),
        "{}",
        run.envelope
    );
    assert!(run.error_message().contains("line 1"), "{}", run.envelope);
}

#[test]
fn unknown_top_level_key_is_refused() {
    let work = Workdir::new();
    let mut s = acme_settings(API, "acme_eu");
    s["secret"] = json!({"acme_token": "x"});
    let run = refused(&guest("acme"), &settings_file(&work, s), &[]);
    assert!(
        run.error_message().contains("settings.json: secret: unknown key"),
        "{}",
        run.envelope
    );
}

#[test]
fn missing_api_url_is_named() {
    let work = Workdir::new();
    let mut s = acme_settings(API, "acme_eu");
    s["config"].as_object_mut().unwrap().remove("api_url");
    let run = refused(&guest("acme"), &settings_file(&work, s), &[]);
    assert_eq!(run.error_kind(), "invalid_settings");
    assert!(
        run.error_message().contains("settings.json: config.api_url: required"),
        "{}",
        run.envelope
    );
}

#[test]
fn unreadable_settings_file_is_named() {
    let work = Workdir::new();
    let run = refused(&guest("acme"), &work.path("absent.json"), &[]);
    assert!(run.error_message().contains("absent.json"), "{}", run.envelope);
}

#[test]
fn core_module_is_not_a_component() {
    let work = Workdir::new();
    let module = work.path("core.wasm");
    // The smallest valid core module: magic and version.
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let run = refused(&module, &settings_file(&work, acme_settings(API, "acme_eu")), &[]);
    assert_eq!(run.error_kind(), "invalid_plugin");
    assert!(
        run.error_message()
            .contains("core.wasm is a core WebAssembly module, not a component"),
        "{}",
        run.envelope
    );
    assert!(
        run.error_message().contains("wasm32-wasip2"),
        "says how to build one: {}",
        run.envelope
    );
}

#[test]
fn a_text_file_is_not_wasm() {
    let work = Workdir::new();
    let file = work.path("acme.wasm");
    std::fs::write(&file, "#!/bin/sh\necho hi\n").unwrap();
    let run = refused(&file, &settings_file(&work, acme_settings(API, "acme_eu")), &[]);
    assert!(
        run.error_message().contains("acme.wasm is not a WebAssembly file"),
        "{}",
        run.envelope
    );
}

#[test]
fn component_of_another_world_names_the_missing_export() {
    let work = Workdir::new();
    let run = refused(
        &guest("wrong-world"),
        &settings_file(&work, acme_settings(API, "acme_eu")),
        &[],
    );
    assert_eq!(run.error_kind(), "invalid_plugin");
    let m = run.error_message();
    assert!(
        m.contains("it does not export `run: func() -> result<string, string>`, so it is not a connector"),
        "names the export: {m}"
    );
    assert!(m.contains("world nuntiq:connector/connector@0.3.0"), "{m}");
}

#[test]
fn component_with_an_unknown_import_names_it() {
    let work = Workdir::new();
    let run = refused(
        &guest("unknown-import"),
        &settings_file(&work, acme_settings(API, "acme_eu")),
        &[],
    );
    assert_eq!(run.error_kind(), "invalid_plugin");
    assert!(
        run.error_message()
            .contains("it imports test:other/filesystem-backdoor, which this host does not provide"),
        "{}",
        run.envelope
    );
}

#[test]
fn a_contract_version_the_host_lacks_is_refused_before_compiling() {
    let work = Workdir::new();
    let cache = work.path("cache");
    let run = refused(
        &guest("future-contract"),
        &settings_file(&work, acme_settings(API, "acme_eu")),
        &["--cache-dir", cache.to_str().unwrap()],
    );
    assert_eq!(run.error_kind(), "invalid_plugin");
    assert!(
        run.error_message().contains(
            "it imports nuntiq:connector/context@0.4.0, but this host provides \
             nuntiq:connector/context@0.1.0 and nuntiq:connector/context@0.2.1 and \
             nuntiq:connector/context@0.3.0"
        ),
        "{}",
        run.envelope
    );
    assert!(!run.stderr.contains("Compiled"), "nothing was compiled: {}", run.stderr);
    let cached = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert_eq!(cached, 0, "nothing was cached");
}

#[test]
fn api_url_on_a_host_the_operator_did_not_allow_is_refused() {
    let mock = Mock::start(MOCK, 10);
    let work = Workdir::new();
    let settings = settings_file(&work, acme_settings(&mock.api_url(), "acme_eu"));
    // Loopback needs the operator's --allow-host; the tenant's api_url alone is not enough.
    let run = refused(&guest("acme"), &settings, &[]);
    assert_eq!(run.error_kind(), "network_denied");
    let host = mock.url.trim_start_matches("http://");
    assert!(run.error_message().contains(host), "names the host: {}", run.envelope);
    assert!(
        run.error_message().contains(&format!("--allow-host http://{host}")),
        "says what to do: {}",
        run.envelope
    );
    // An allow entry for another port does not open it either.
    let run = refused(&guest("acme"), &settings, &["--allow-host", "http://127.0.0.1:1"]);
    assert_eq!(run.error_kind(), "network_denied");
    assert!(mock.requests().is_empty(), "the mock was never asked");
}

#[test]
fn unusable_db_and_flags_are_refused() {
    let work = Workdir::new();
    let settings = settings_file(&work, acme_settings(API, "acme_eu"));
    let dir = work.path("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let run = nuntiq_host([
        "run-plugin",
        guest("acme").to_str().unwrap(),
        settings.to_str().unwrap(),
        "--db",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(
        (run.code, run.error_kind()),
        (2, "invalid_database"),
        "{}",
        run.envelope
    );
    assert!(
        run.error_message().contains("a-directory: is a directory"),
        "{}",
        run.envelope
    );

    let run = refused(&guest("acme"), &settings, &["--allow-host", "ftp://x.example"]);
    assert_eq!(run.error_kind(), "invalid_arguments");
    assert!(
        run.error_message().contains("--allow-host \"ftp://x.example\""),
        "{}",
        run.envelope
    );

    let run = refused(&guest("acme"), &settings, &["--param", "no-equals-sign"]);
    assert!(
        run.error_message()
            .contains("--param \"no-equals-sign\": expected KEY=VALUE"),
        "{}",
        run.envelope
    );

    let run = refused(&work.path("missing.wasm"), &settings, &[]);
    assert_eq!(run.error_kind(), "invalid_plugin");
    assert!(run.error_message().contains("missing.wasm"), "{}", run.envelope);
}

#[test]
fn bad_flag_values_still_print_one_envelope() {
    let work = Workdir::new();
    let settings = settings_file(&work, acme_settings(API, "acme_eu"));
    let db = work.db();
    let run = nuntiq_host([
        "run-plugin",
        guest("acme").to_str().unwrap(),
        settings.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--timeout",
        "soon",
    ]);
    assert_eq!(run.code, 2);
    assert_eq!(run.error_kind(), "invalid_arguments");
    assert!(
        run.error_message()
            .contains("\"soon\" is not a duration such as 15m or 90s"),
        "{}",
        run.envelope
    );
    assert!(!db.exists());
}

#[test]
fn component_model_async_is_refused_up_front_naming_the_fix() {
    let work = Workdir::new();
    let run = refused(
        &guest("async-export"),
        &settings_file(&work, acme_settings(API, "acme_eu")),
        &[],
    );
    assert_eq!(run.error_kind(), "invalid_plugin");
    let m = run.error_message();
    assert!(m.contains("it uses component-model async"), "{m}");
    assert!(m.contains("--backend-qjs-disable-async"), "names the fix: {m}");
    assert!(
        !run.stderr.contains("Compiled"),
        "refused before compiling: {}",
        run.stderr
    );
}
