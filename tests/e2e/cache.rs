//! The compiled-component cache: `compile` ahead of time, hits on later runs,
//! and corrupt, truncated, foreign, symlinked or planted entries recompiled
//! rather than loaded; a directory others can write is not used.

use crate::MOCK;
use nuntiq_e2e::*;
use std::path::{Path, PathBuf};

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
                .collect()
        })
        .unwrap_or_default()
}

fn compile(cache: &Path) -> (i32, String, String) {
    host_output(&[
        "compile",
        guest("acme").to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ])
}

fn run_with_cache(mock: &Mock, work: &Workdir, cache: &Path) -> Run {
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    run_acme(
        mock,
        &settings,
        &work.db(),
        &["--cache-dir", cache.to_str().unwrap(), "--log-level", "debug"],
    )
}

#[test]
fn compile_ahead_of_time_then_runs_load_from_the_cache() {
    let mock = Mock::start(MOCK, 20);
    let work = Workdir::new();
    let cache = work.path("cache");
    let (code, said, err) = compile(&cache);
    assert_eq!(code, 0, "{err}");
    assert!(said.starts_with("compiled ") && said.contains(".cwasm"), "{said}");
    assert_eq!(entries(&cache).len(), 1);

    let run = run_with_cache(&mock, &work, &cache);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("[DEBUG] [customer 10000001] Loaded acme.wasm from the compile cache"),
        "{}",
        run.stderr
    );
    assert!(compile(&cache).1.contains("is already compiled"));
}

#[test]
fn corrupt_truncated_and_foreign_entries_are_recompiled_never_loaded() {
    let mock = Mock::start(MOCK, 20);
    let work = Workdir::new();
    let cache = work.path("cache");
    let first = run_with_cache(&mock, &work, &cache);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(
        first.stderr.contains("[INFO] [customer 10000001] Compiled acme.wasm in "),
        "{}",
        first.stderr
    );
    let entry = entries(&cache).pop().expect("an entry was written");
    let good = std::fs::read(&entry).unwrap();

    let mut corrupt = good.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0x55;
    let damaged: [(&str, Vec<u8>); 3] = [
        ("its MAC does not match", corrupt),
        ("its MAC does not match", good[..good.len() - 100].to_vec()),
        ("it is not a nuntiq-host cache entry", b"\x7fELF not ours".to_vec()),
    ];
    for (why, bytes) in damaged {
        std::fs::write(&entry, bytes).unwrap();
        let run = run_with_cache(&mock, &work, &cache);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "[WARN] [customer 10000001] The compile cache entry for acme.wasm was unusable: {why}"
            )) && run.stderr.contains("; recompiled it in "),
            "{}",
            run.stderr
        );
        assert_eq!(std::fs::read(&entry).unwrap(), good, "the entry was rewritten whole");
    }
}

#[test]
fn no_compile_cache_writes_nothing_and_the_default_is_the_user_cache_dir() {
    let mock = Mock::start(MOCK, 20);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let home = work.path("xdg");
    let args = acme_args(&mock, &settings, &work.db(), &[]);
    let out = host_command()
        .env("XDG_CACHE_HOME", &home)
        .args(&args)
        .arg("--no-compile-cache")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!home.exists(), "nothing cached");
    let out = host_command()
        .env("XDG_CACHE_HOME", &home)
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(entries(&home.join("nuntiq-host")).len(), 1);
}

#[test]
fn another_components_entry_or_a_symlink_under_acmes_name_never_runs() {
    let mock = Mock::start(MOCK, 20);
    let work = Workdir::new();
    let cache = work.path("cache");
    let acme_entry = {
        let run = run_with_cache(&mock, &work, &cache);
        assert_eq!(run.code, 0, "{}", run.stderr);
        entries(&cache).pop().unwrap()
    };
    // A valid entry of another component, renamed to acme's entry.
    let (code, _, err) = host_output(&[
        "compile",
        guest("no-commit").to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let other = entries(&cache).into_iter().find(|p| *p != acme_entry).unwrap();
    std::fs::copy(&other, &acme_entry).unwrap();
    let run = run_with_cache(&mock, &work, &cache);
    assert_eq!(run.code, 0, "acme ran, not the other component: {}", run.envelope);
    assert!(run.stderr.contains("written for another plugin"), "{}", run.stderr);

    // A symlink in acme's place is not followed.
    std::fs::remove_file(&acme_entry).unwrap();
    std::os::unix::fs::symlink(&other, &acme_entry).unwrap();
    let run = run_with_cache(&mock, &work, &cache);
    assert_eq!(run.code, 0, "{}", run.envelope);
    assert!(run.stderr.contains("it is a symlink"), "{}", run.stderr);
    assert!(!acme_entry.is_symlink(), "replaced by a real entry");
}

#[test]
fn a_cache_directory_others_can_write_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let mock = Mock::start(MOCK, 20);
    let work = Workdir::new();
    let cache = work.path("shared-cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let run = run_with_cache(&mock, &work, &cache);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("without the compile cache: the compile cache directory")
            && run.stderr.contains("has mode 777")
            && run.stderr.contains("chmod 755"),
        "{}",
        run.stderr
    );
    assert!(entries(&cache).is_empty(), "nothing was written there");
}
