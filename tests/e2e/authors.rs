//! What a connector author works with: `inspect`, offline runs from fixtures
//! and cassettes, and dry runs.

use crate::MOCK;
use nuntiq_e2e::*;
use serde_json::{Value, json};
use std::path::Path;

/// Settings whose API is never reached: replays and fixtures answer instead.
fn offline_settings(work: &Workdir, api_url: &str) -> std::path::PathBuf {
    work.write_settings("settings.json", &acme_settings(api_url, "acme_eu"))
}

fn run(plugin: &Path, settings: &Path, db: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<String> = vec![
        "run-plugin".into(),
        plugin.display().to_string(),
        settings.display().to_string(),
        "--db".into(),
        db.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    nuntiq_host(args)
}

/// The supplier rows a cassette's bodies hold.
fn cassette_rows(path: &Path) -> Vec<Value> {
    let cassette: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    cassette["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| serde_json::from_str::<Value>(i["response"]["body"].as_str()?).ok())
        .flat_map(|page| page["data"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn the_shipped_cassette_replays_without_the_network_at_its_recorded_time() {
    let work = Workdir::new();
    let cassette = workspace_root().join("tests/cassettes/acme.json");
    // Nothing listens here: a request that reached the network would fail.
    // The cassette was recorded with pages of 100 (tests/record-cassette.sh).
    let mut settings = acme_settings("http://127.0.0.1:9/v2", "acme_eu");
    settings["config"]["page_size"] = json!(100);
    let settings = work.write_settings("settings.json", &settings);
    let replay = run(
        &guest("acme"),
        &settings,
        &work.db(),
        &[
            "--allow-host",
            "http://127.0.0.1:9",
            "--replay",
            cassette.to_str().unwrap(),
        ],
    );
    assert_eq!(replay.code, 0, "{}\n{}", replay.envelope, replay.stderr);
    let rows = cassette_rows(&cassette);
    assert!(rows.len() > 200, "{}", rows.len());
    let recorded: Value = serde_json::from_slice(&std::fs::read(&cassette).unwrap()).unwrap();
    // The replayed connector's clock starts at the recorded time: its bootstrap
    // window (7 days) is the recorded one, so its first query is in the cassette.
    let window_start = parse_time(recorded["recorded_at"].as_str().unwrap()) - chrono::Duration::days(7);
    let expected = expected_from(&rows, window_start);
    assert_eq!(replay.envelope["fetched"], expected.len());
    assert_same_suppliers(&Db::open(&work.db()).suppliers("10000001"), &expected);

    // A run the cassette cannot answer (the incremental query from the new cursor) fails clearly.
    let miss = run(
        &guest("acme"),
        &settings,
        &work.db(),
        &[
            "--allow-host",
            "http://127.0.0.1:9",
            "--replay",
            cassette.to_str().unwrap(),
        ],
    );
    assert_eq!((miss.code, miss.error_kind()), (1, "replay_miss"), "{}", miss.envelope);
    assert!(
        miss.error_message().contains("is not in the cassette"),
        "{}",
        miss.envelope
    );
}

#[test]
fn recording_keeps_every_exchange_without_the_token() {
    let mock = Mock::start(MOCK, 120);
    mock.faults(json!([{"action": "status", "status": 503, "retry_after": "0"}]));
    let work = Workdir::new();
    let mut settings = acme_settings(&mock.api_url(), "acme_eu");
    settings["config"]["page_size"] = json!(50);
    let settings = work.write_settings("settings.json", &settings);
    let cassette = work.path("run.json");
    let recorded = run_acme(&mock, &settings, &work.db(), &["--record", cassette.to_str().unwrap()]);
    assert_eq!(recorded.code, 0, "{}", recorded.stderr);
    let text = std::fs::read_to_string(&cassette).unwrap();
    assert!(!text.contains(TOKEN), "the token was recorded");
    let parsed: Value = serde_json::from_str(&text).unwrap();
    let statuses: Vec<u64> = parsed["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["response"]["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses[0], 503, "the retried attempt is recorded too: {statuses:?}");
    assert_eq!(statuses.len(), mock.requests().len());
    drop(mock);

    // Replayed after a pause, into a new store: the same suppliers, no network.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = Workdir::new();
    let replay = run(
        &guest("acme"),
        &settings,
        &again.db(),
        &[
            "--allow-host",
            &format!(
                "http://{}",
                parsed["interactions"][0]["request"]["url"]
                    .as_str()
                    .unwrap()
                    .split('/')
                    .nth(2)
                    .unwrap()
            ),
            "--replay",
            cassette.to_str().unwrap(),
        ],
    );
    assert_eq!(replay.code, 0, "{}\n{}", replay.envelope, replay.stderr);
    assert_eq!(replay.envelope["fetched"], recorded.envelope["fetched"]);
    assert_eq!(
        Db::open(&again.db()).suppliers("10000001"),
        Db::open(&work.db()).suppliers("10000001")
    );
}

#[test]
fn fixtures_answer_file_urls_from_a_directory_and_nothing_outside_it() {
    let work = Workdir::new();
    let fixtures = work.path("fixtures");
    std::fs::create_dir_all(fixtures.join("v2")).unwrap();
    let row = |n: &str| {
        json!({"number": n, "name": format!("Fixture {n}"), "updated_at": "2024-05-01T09:00:00Z",
                               "address": {"street": "1 Main St", "city": "Delft", "country": "NL"}})
    };
    std::fs::write(
        fixtures.join("v2/suppliers@page=1.json"),
        json!({"data": [row("F-1"), row("F-2")], "next_page": 2}).to_string(),
    )
    .unwrap();
    std::fs::write(
        fixtures.join("v2/suppliers@page=2.json"),
        json!({"data": [row("F-3")], "next_page": null}).to_string(),
    )
    .unwrap();
    let settings = offline_settings(&work, "file:///v2");
    let fixture_run = |db: &Path| {
        run(
            &guest("acme"),
            &settings,
            db,
            &[
                "--fixtures",
                fixtures.to_str().unwrap(),
                "--param",
                "since_override=2024-01-01T00:00:00Z",
            ],
        )
    };
    let first = fixture_run(&work.db());
    assert_eq!(first.code, 0, "{}\n{}", first.envelope, first.stderr);
    assert_eq!(first.envelope["fetched"], 3);
    let stored = Db::open(&work.db()).suppliers("10000001");
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["F-1", "F-2", "F-3"]);

    // A page that leads out of the directory is not served.
    let outside = work.path("outside.json");
    std::fs::write(
        &outside,
        json!({"data": [row("STOLEN")], "next_page": null}).to_string(),
    )
    .unwrap();
    std::fs::remove_file(fixtures.join("v2/suppliers@page=2.json")).unwrap();
    std::os::unix::fs::symlink(&outside, fixtures.join("v2/suppliers@page=2.json")).unwrap();
    let escaped = fixture_run(&work.path("other.db"));
    assert_eq!(escaped.code, 1, "{}", escaped.envelope);
    assert!(escaped.error_message().contains("HTTP 404"), "{}", escaped.envelope);
    assert!(!escaped.envelope.to_string().contains("STOLEN"));

    // Without --fixtures a file:// api_url is bad input.
    let refused = run(&guest("acme"), &settings, &work.path("x.db"), &[]);
    assert_eq!((refused.code, refused.error_kind()), (2, "invalid_arguments"));
    assert!(
        refused.error_message().contains("pass --fixtures DIR"),
        "{}",
        refused.envelope
    );
}

#[test]
fn a_dry_run_writes_nothing_and_says_what_it_would_have() {
    let mock = Mock::start(MOCK, 80);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let fresh = work.path("never.db");
    let dry = run_acme(&mock, &settings, &fresh, &["--dry-run"]);
    assert_eq!(dry.code, 0, "{}\n{}", dry.envelope, dry.stderr);
    assert!(!fresh.exists(), "no database was created");
    assert_eq!(dry.envelope["dry_run"], true);
    assert!(dry.envelope["inserted"].as_u64().unwrap() > 50);
    assert_eq!(
        dry.envelope["would_commit"][0]["cursor"],
        dry.envelope["cursor_committed"]
    );

    // Against an existing store: it reads it (nothing new is "inserted") and leaves it as it was.
    let real = run_acme(&mock, &settings, &work.db(), &[]);
    assert_eq!(real.code, 0);
    mock.mutate(2, 1);
    let before = std::fs::read(work.db()).unwrap();
    let state_before = Db::open(&work.db()).state("acme_eu", "suppliers").unwrap();
    // The dry run's copy lives in the temporary directory, and leaves nothing there.
    let tmp = work.path("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let dry = finish(
        host_command()
            .env("TMPDIR", &tmp)
            .args(acme_args(&mock, &settings, &work.db(), &["--dry-run"]))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "the dry run left {left:?} in its temporary directory");
    assert_eq!(
        (&dry.envelope["inserted"], &dry.envelope["updated"]),
        (&json!(1), &json!(2))
    );
    assert_eq!(
        Db::open(&work.db()).state("acme_eu", "suppliers").unwrap(),
        state_before
    );
    assert_eq!(
        std::fs::read(work.db()).unwrap(),
        before,
        "the database file is untouched"
    );
    assert!(dry.stderr.contains("a dry run: nothing was written"), "{}", dry.stderr);
}

#[test]
fn inspect_says_what_a_plugin_is_and_whether_it_runs_here() {
    let (code, text, _) = host_output(&["inspect", guest("acme").to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("world       nuntiq:connector/connector@0.3.0"), "{text}");
    assert!(text.contains("compatible  yes"), "{text}");
    let (code, out, _) = host_output(&["inspect", guest("acme-v0_1").to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    let found: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(found["contract"], "nuntiq:connector@0.1.0");
    assert_eq!(found["compatible"], true);
    use sha2::Digest;
    let bytes = std::fs::read(guest("acme-v0_1")).unwrap();
    let sha: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(found["sha256"], sha);
    assert_eq!(found["size_bytes"], bytes.len());
    assert!(found["exports"].as_array().unwrap().iter().any(|e| e["name"] == "run"));
    assert!(
        found["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "nuntiq:connector/delta-state@0.1.0")
    );

    let (code, out, _) = host_output(&["inspect", guest("future-contract").to_str().unwrap(), "--json"]);
    assert_eq!(code, 1);
    let found: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(found["compatible"], false);
    assert!(
        found["problems"][0]
            .as_str()
            .unwrap()
            .contains("nuntiq:connector/context@0.4.0"),
        "{found}"
    );
    let (code, _, err) = host_output(&["inspect", "/no/such/plugin.wasm"]);
    assert_eq!(code, 2);
    assert!(err.contains("/no/such/plugin.wasm"), "{err}");
}

#[test]
fn a_new_connector_builds_outside_the_repository_and_runs_at_once() {
    let work = Workdir::new();
    let (code, out, err) = host_output(&["new", "hello-erp", "--dir", work.dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let root = work.path("hello-erp");
    assert!(out.contains(&format!("Created {}", root.display())), "{out}");
    for file in [
        "Cargo.toml",
        ".cargo/config.toml",
        "src/lib.rs",
        "src/tests.rs",
        "sdk/Cargo.toml",
        "sdk/wit/connector.wit",
        "settings.example.json",
        "README.md",
    ] {
        assert!(root.join(file).is_file(), "{file}");
    }
    let cargo = || std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // Nothing in the crate names this checkout: it builds from the binary's copy of the SDK.
    for (path, text) in files_of(&root) {
        assert!(
            !text.contains(workspace_root().to_str().unwrap()),
            "{} names the checkout",
            path.display()
        );
    }
    // `cargo test`, natively, against the SDK's in-process host: the crate's own tests pass.
    let target = workspace_root().join("target/scaffold");
    let tested = cargo()
        .args(["test"])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    let report = String::from_utf8_lossy(&tested.stdout);
    assert!(
        tested.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&tested.stderr)
    );
    assert!(report.contains("test result: ok. 3 passed"), "{report}");
    // `cargo wasm`, the crate's alias for the component build, as an author would type it.
    let built = cargo()
        .args(["wasm"])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let wasm = target.join("wasm32-wasip2/release/hello_erp.wasm");
    let (code, text, _) = host_output(&["inspect", wasm.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("nuntiq:connector/connector@0.3.0"), "{text}");

    let run = nuntiq_host([
        "run-plugin",
        wasm.to_str().unwrap(),
        root.join("settings.example.json").to_str().unwrap(),
        "--fixtures",
        root.join("fixtures").to_str().unwrap(),
        "--db",
        work.db().to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.envelope, run.stderr);
    assert_eq!(
        (&run.envelope["inserted"], &run.envelope["rejected"]),
        (&json!(3), &json!(1))
    );
    let stored = Db::open(&work.db()).suppliers("10000001");
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["S-1001", "S-1002", "S-1003"]);
    assert!(!stored["S-1002"].is_active);

    let (code, _, err) = host_output(&["new", "hello-erp", "--dir", work.dir.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("already exists"), "{err}");

    // The SDK as a git dependency, the README's other way: a repository that
    // holds guests/sdk (here a local one, pinned to its commit).
    let repo = work.path("sdk-repo");
    copy_dir(&workspace_root().join("guests/sdk"), &repo.join("guests/sdk"));
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(&repo)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "sdk"]);
    let rev = git(&["rev-parse", "HEAD"]);
    let url = format!("file://{}", repo.display());
    let dir = work.dir.path().to_str().unwrap();
    let (code, _, err) = host_output(&["new", "hello-git", "--dir", dir, "--sdk-git", &url, "--sdk-rev", &rev]);
    assert_eq!(code, 0, "{err}");
    let manifest = std::fs::read_to_string(work.path("hello-git/Cargo.toml")).unwrap();
    assert!(
        manifest.contains(&format!("git = \"{url}\"")) && manifest.contains(&rev),
        "{manifest}"
    );
    let built = cargo()
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(work.path("hello-git"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let wasm = target.join("wasm32-wasip2/release/hello_git.wasm");
    let (code, text, _) = host_output(&["inspect", wasm.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
}

/// Every file under `root` (the SDK's sources included) as text.
fn files_of(root: &Path) -> Vec<(std::path::PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((
                    path.clone(),
                    String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned(),
                ));
            }
        }
    }
    out
}

#[test]
fn a_replay_needs_no_network_flags_and_skips_its_recorded_waits() {
    // The shipped cassette, with three 503s (Retry-After: 20) recorded before the first page.
    let mut cassette: Value =
        serde_json::from_slice(&std::fs::read(workspace_root().join("tests/cassettes/acme.json")).unwrap()).unwrap();
    let interactions = cassette["interactions"].as_array_mut().unwrap();
    let first = interactions[0].clone();
    for _ in 0..3 {
        let mut busy = first.clone();
        busy["response"] = json!({"status": 503, "headers": [["retry-after", "20"]], "body": "busy"});
        interactions.insert(0, busy);
    }
    let work = Workdir::new();
    let path = work.path("retried.json");
    std::fs::write(&path, serde_json::to_vec(&cassette).unwrap()).unwrap();
    // A loopback api_url, which the policy refuses without --allow-host; nothing listens there either.
    let mut settings = acme_settings("http://127.0.0.1:9/v2", "acme_eu");
    settings["config"]["page_size"] = json!(100);
    let settings = work.write_settings("settings.json", &settings);
    let replay = run(
        &guest("acme"),
        &settings,
        &work.db(),
        &["--replay", path.to_str().unwrap()],
    );
    assert_eq!(replay.code, 0, "{}\n{}", replay.envelope, replay.stderr);
    assert_eq!(replay.envelope["usage"]["http_retries"], 3, "{}", replay.envelope);
    assert!(replay.stderr.contains("retry 3 of 4 in 20.0 s"), "{}", replay.stderr);
    // Slept, the three recorded waits alone would take 60 s: the run took less than that.
    let wall_ms = replay.envelope["usage"]["wall_ms"].as_u64().unwrap();
    assert!(wall_ms < 60_000, "the replay waited: {wall_ms} ms");
    eprintln!("replay with three recorded retries (60 s of waits): {wall_ms} ms");
}

#[test]
fn the_contract_is_written_out_for_other_toolchains() {
    let work = Workdir::new();
    let out = work.path("wit");
    let (code, text, err) = host_output(&["wit", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("nuntiq:connector@0.3.0"), "{text}");
    assert_eq!(
        std::fs::read_to_string(out.join("connector.wit")).unwrap(),
        std::fs::read_to_string(workspace_root().join("wit/connector.wit")).unwrap()
    );
    for dep in ["deps/cli-0.2.9", "deps/http-0.2.12", "deps/io"] {
        assert!(out.join(dep).is_dir(), "{dep}");
    }
    let (code, version, _) = host_output(&["--version"]);
    assert_eq!(code, 0);
    assert!(version.contains("0.1.0, 0.2.0, 0.2.1, 0.3.0"), "{version}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn a_connector_built_against_contract_0_2_0_runs_on_this_0_3_0_host() {
    let plugin = guest("contract-v0_2_0");
    let (code, out, _) = host_output(&["inspect", plugin.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{out}");
    let found: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(found["compatible"], true, "{found}");
    let imports: Vec<&str> = found["imports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert!(imports.contains(&"nuntiq:connector/http@0.2.0"), "{imports:?}");

    let mock = Mock::start(MOCK, 5);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let run = nuntiq_host([
        "run-plugin",
        plugin.to_str().unwrap(),
        settings.to_str().unwrap(),
        "--db",
        work.db().to_str().unwrap(),
        "--allow-host",
        &mock.allow_host(),
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.envelope, run.stderr);
    assert_eq!(run.envelope["status"], 200, "{}", run.envelope);
    let stored = Db::open(&work.db()).suppliers("10000001");
    assert!(stored.contains_key("V020-1"), "{stored:?}");
}
