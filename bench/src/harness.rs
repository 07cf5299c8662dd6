//! `nuntiq-bench run`: every contender on the same data from the same mock,
//! each as its own process, wall time (median) and peak RSS measured alike;
//! one table with every contender's ratio to the host, the issue's targets
//! checked (a report: nothing aborts on a miss), and `bench/results.json`.

use serde::Serialize;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const TOKEN: &str = "test-bearer-token-here";
/// Every contender fetches the whole data set: updated after this.
pub(crate) const SINCE: &str = "2000-01-01T00:00:00Z";
/// Rows per page, as in the independent measurement (nginx, pre-rendered pages of 200).
pub(crate) const PAGE_SIZE: u32 = 200;

/// The issue's targets.
const HOST_OVER_PLAIN_AT_MOST: f64 = 1.3;
const PYTHON_OVER_HOST_AT_LEAST: f64 = 4.0;
const DLT_OVER_HOST_AT_LEAST: f64 = 15.0;
const REREAD_OVER_FIRST_AT_MOST: f64 = 0.25;
const NO_CHANGE_AT_MOST_MS: f64 = 10.0;
/// "Flat memory": peak RSS at 1 000 000 suppliers over peak RSS at 100 000.
const LARGE_RSS_OVER_SMALL_AT_MOST: f64 = 1.25;

pub struct Options {
    pub suppliers: usize,
    pub runs: usize,
    pub large: usize,
    pub python: Option<PathBuf>,
    pub out: PathBuf,
    /// Jobs at once in one `serve` (serve_scale); empty skips it.
    pub serve_levels: Vec<usize>,
    /// The host's load into SQLite and PostgreSQL (pg_load).
    pub pg_load: bool,
    /// The PostgreSQL server of both.
    pub pg: String,
}

/// One process's measurement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) wall: Duration,
    pub(crate) peak_rss_kb: u64,
}

#[derive(Debug, Serialize)]
struct Row {
    id: String,
    name: String,
    suppliers: usize,
    runs: usize,
    wall_s_median: f64,
    records_per_s: f64,
    peak_rss_mb: f64,
    /// This contender's wall time over the host's row named in `compared_with`.
    time_ratio_to_host: Option<f64>,
    compared_with: String,
    note: String,
}

#[derive(Debug, Serialize)]
struct Check {
    target: String,
    measured: String,
    /// "ok", "MISSED" or "not measured".
    status: &'static str,
}

fn check(target: impl Into<String>, measured: Option<(String, bool)>) -> Check {
    let (measured, status) = match measured {
        Some((text, true)) => (text, "ok"),
        Some((text, false)) => (text, "MISSED"),
        None => ("-".into(), "not measured"),
    };
    Check {
        target: target.into(),
        measured,
        status,
    }
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_owned()
}

pub(crate) fn bin(name: &str) -> PathBuf {
    let path = root().join("target/release").join(name);
    assert!(path.exists(), "{} is missing: run `make build` first", path.display());
    path
}

/// Spawns, waits with `wait4` for the child's own peak RSS, and returns its stdout.
pub(crate) fn measure(command: &mut Command) -> anyhow::Result<(Sample, String)> {
    let out = tempfile::NamedTempFile::new()?;
    let started = Instant::now();
    let child = command.stdout(out.reopen()?).stderr(Stdio::piped()).spawn()?;
    let pid = child.id() as libc::pid_t;
    let stderr = child.stderr.unwrap();
    let errors = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let mut status = 0;
    // SAFETY: plain syscall on our own child; `rusage` is written by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    anyhow::ensure!(waited == pid, "wait4 failed");
    let stderr = errors.join().unwrap_or_default();
    anyhow::ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{command:?} failed: {}",
        stderr.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
    let stdout = std::fs::read_to_string(out.path())?;
    Ok((
        Sample {
            wall,
            peak_rss_kb: usage.ru_maxrss as u64,
        },
        stdout,
    ))
}

/// The median wall time and the highest peak RSS.
pub(crate) fn median(samples: &[Sample]) -> Sample {
    let mut walls: Vec<Duration> = samples.iter().map(|s| s.wall).collect();
    walls.sort();
    Sample {
        wall: walls[walls.len() / 2],
        peak_rss_kb: samples.iter().map(|s| s.peak_rss_kb).max().unwrap_or(0),
    }
}

pub(crate) fn median_f64(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// The JSON a contender printed last (the host's envelope, the others' `{"rows", "seconds"}`).
pub(crate) fn last_json(stdout: &str) -> Option<Value> {
    serde_json::from_str(stdout.lines().rev().find(|l| !l.trim().is_empty())?).ok()
}

/// The rows a contender reported, to check every contender did the whole job.
fn rows_reported(stdout: &str) -> Option<u64> {
    let v = last_json(stdout)?;
    v.get("rows").or_else(|| v.get("fetched")).and_then(Value::as_u64)
}

pub(crate) struct MockServer {
    child: Child,
    pub(crate) url: String,
}

impl MockServer {
    pub(crate) fn start(suppliers: usize) -> anyhow::Result<Self> {
        let mut child = Command::new(bin("acme-mock"))
            .args(["serve", "--suppliers", &suppliers.to_string(), "--token", TOKEN])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
        let url = line.trim().trim_start_matches("listening on ").to_owned();
        Ok(Self { child, url })
    }

    pub(crate) fn api_url(&self) -> String {
        format!("{}/v2", self.url)
    }

    /// Renders every page once, then reads them all `rounds` times: requests per second.
    pub(crate) fn warm_and_measure(&self, rounds: usize) -> anyhow::Result<(f64, f64)> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let client = reqwest::Client::new();
            let get = |page: u64| {
                client
                    .get(format!("{}/suppliers", self.api_url()))
                    .query(&[
                        ("updated_after", SINCE),
                        ("page", &page.to_string()),
                        ("per_page", &PAGE_SIZE.to_string()),
                    ])
                    .bearer_auth(TOKEN)
                    .send()
            };
            // Walk next_page once: the mock renders and keeps every page.
            let mut pages = 1u64;
            loop {
                let v: Value = serde_json::from_slice(&get(pages).await?.bytes().await?)?;
                match v["next_page"].as_u64() {
                    Some(next) => pages = next,
                    None => break,
                }
            }
            // Then read them as fast as one client can, without parsing.
            let started = Instant::now();
            let (mut requests, mut bytes) = (0u64, 0u64);
            for _ in 0..rounds {
                for page in 1..=pages {
                    bytes += get(page).await?.bytes().await?.len() as u64;
                    requests += 1;
                }
            }
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            Ok((requests as f64 / secs, bytes as f64 / secs / 1e6))
        })
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn settings(dir: &Path, api_url: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("settings.json");
    std::fs::write(
        &path,
        json!({
            "customer_number": "10000001",
            "secrets": {"acme_token": TOKEN},
            "config": {"connector_name": "acme_eu", "api_url": api_url, "page_size": PAGE_SIZE},
            "job_params": {}
        })
        .to_string(),
    )?;
    Ok(path)
}

/// The host job; `backfill` adds `--param since_override=SINCE` (the whole window).
pub(crate) fn host_command(dir: &Path, mock: &MockServer, db: &Path, cache: &Path, backfill: bool) -> anyhow::Result<Command> {
    let mut c = Command::new(bin("nuntiq-host"));
    c.arg("run-plugin")
        .arg(root().join("dist/acme.wasm"))
        .arg(settings(dir, &mock.api_url())?)
        .arg("--db")
        .arg(db)
        .args(["--allow-host", &mock.url, "--log-level", "warn", "--cache-dir"])
        .arg(cache);
    if backfill {
        c.args(["--param", &format!("since_override={SINCE}")]);
    }
    Ok(c)
}

/// Where every contender reads from: the mock, its token, the window and the page size.
fn source_args(mock: &MockServer) -> Vec<String> {
    let api_url = mock.api_url();
    let page_size = PAGE_SIZE.to_string();
    ["--api-url", &api_url, "--token", TOKEN, "--page-size", &page_size]
        .map(str::to_owned)
        .to_vec()
}

fn plain_command(mock: &MockServer, db: &Path) -> Command {
    let mut c = Command::new(bin("nuntiq-bench"));
    c.arg("plain")
        .args(source_args(mock))
        .args(["--since", SINCE, "--db"])
        .arg(db);
    c
}

/// The plain loader writing PostgreSQL (contender G2) into the schema `url` names.
pub(crate) fn plain_pg_command(mock: &MockServer, url: &str) -> Command {
    let mut c = Command::new(bin("nuntiq-bench"));
    c.arg("plain-pg")
        .args(source_args(mock))
        .args(["--since", SINCE, "--db", url]);
    c
}

/// The plain loader's fetch thread alone: the floor of a re-read.
fn plain_read_command(mock: &MockServer) -> Command {
    let mut c = Command::new(bin("nuntiq-bench"));
    c.arg("plain-read").args(source_args(mock)).args(["--since", SINCE]);
    c
}

fn native_command(mock: &MockServer, db: &Path) -> Command {
    let mut c = Command::new(bin("nuntiq-bench"));
    c.arg("native")
        .args(source_args(mock))
        .args(["--since", SINCE, "--db"])
        .arg(db);
    c
}

fn python_seed_command(python: &Path, mock: &MockServer, db: &Path, backfill: bool) -> Command {
    let mut c = Command::new(python);
    c.arg(root().join("bench/python/seed_connector.py"))
        .args(source_args(mock))
        .arg("--db")
        .arg(db);
    if backfill {
        c.args(["--since", SINCE]);
    }
    c
}

/// Runs `make` (a fresh command per run, in a fresh directory) `runs` times;
/// every run must report `expect_rows` when given. Returns the median and the
/// last run's directory (its store, for the content check).
fn repeat(
    runs: usize,
    expect_rows: Option<usize>,
    mut make: impl FnMut(&Path) -> anyhow::Result<Command>,
) -> anyhow::Result<(Sample, Vec<u64>, tempfile::TempDir)> {
    let mut samples = Vec::new();
    let mut reported = Vec::new();
    let mut last = None;
    for _ in 0..runs.max(1) {
        let dir = tempfile::tempdir()?;
        let mut command = make(dir.path())?;
        let (sample, stdout) = measure(&mut command)?;
        let rows = rows_reported(&stdout);
        if let Some(expect) = expect_rows {
            anyhow::ensure!(
                rows == Some(expect as u64),
                "expected {expect} rows, got {rows:?}: {stdout}"
            );
        }
        reported.push(rows.unwrap_or(0));
        samples.push(sample);
        last = Some(dir);
    }
    Ok((median(&samples), reported, last.expect("at least one run")))
}

fn row(id: &str, name: &str, suppliers: usize, runs: usize, sample: Sample, note: &str) -> Row {
    let secs = sample.wall.as_secs_f64();
    Row {
        id: id.into(),
        name: name.into(),
        suppliers,
        runs,
        wall_s_median: secs,
        records_per_s: if suppliers > 0 { suppliers as f64 / secs } else { 0.0 },
        peak_rss_mb: sample.peak_rss_kb as f64 / 1024.0,
        time_ratio_to_host: None,
        compared_with: String::new(),
        note: note.into(),
    }
}

/// The host's own account of a run (the envelope's `usage`), medians over runs.
#[derive(Debug, Default, Serialize)]
pub(crate) struct HostUsage {
    pub(crate) wall_ms: Option<f64>,
    pub(crate) cpu_ms: Option<f64>,
    pub(crate) store_ms: Option<f64>,
}

pub(crate) fn host_usage(envelopes: &[Value]) -> HostUsage {
    let field = |k: &str| median_f64(envelopes.iter().filter_map(|e| e["usage"][k].as_f64()).collect());
    HostUsage {
        wall_ms: field("wall_ms"),
        cpu_ms: field("cpu_ms"),
        store_ms: field("store_ms"),
    }
}

/// A digest of every supplier, location and address column the platform
/// defines (not timestamps, not the host's fingerprint), with row counts: equal
/// digests mean two contenders stored the same thing. Run as its own process
/// (`nuntiq-bench digest`), so the harness stays small: a child's peak RSS as
/// `wait4` reports it is never below its parent's at the spawn.
pub fn content_digest(db: &Path) -> anyhow::Result<String> {
    use std::hash::{Hash, Hasher};
    let tables: [(&str, &[&str]); 3] = [
        (
            "supplier",
            &[
                "customer_number",
                "supplier_number",
                "organization_code",
                "supplier_name",
                "alternative_supplier_name",
                "supplier_type",
                "is_active",
                "custom_field_1",
                "custom_field_2",
                "custom_field_3",
                "custom_field_4",
                "custom_field_5",
            ],
        ),
        (
            "supplier_location",
            &[
                "customer_number",
                "supplier_number",
                "supplier_organization_code",
                "location_code",
                "location_name",
                "organization_code",
                "default_currency_code",
                "default_payment_term_code",
                "default_payment_method",
                "taxpayer_id",
                "duns_number",
                "is_active",
                "custom_field_1",
                "custom_field_2",
                "custom_field_3",
                "custom_field_4",
                "custom_field_5",
            ],
        ),
        (
            "supplier_address",
            &[
                "customer_number",
                "supplier_number",
                "supplier_organization_code",
                "location_code",
                "position",
                "street",
                "city",
                "state",
                "postal_code",
                "country_code",
                "custom_field_1",
                "custom_field_2",
                "custom_field_3",
            ],
        ),
    ];
    let conn = nuntiq_e2e::Db::open_rw(db);
    let mut parts = Vec::new();
    for (table, columns) in tables {
        let row = columns.iter().map(|c| format!("quote({c})")).collect::<Vec<_>>().join("||','||");
        let mut stmt = conn.prepare(&format!("SELECT {row} AS r FROM {table} ORDER BY r"))?;
        let mut rows = stmt.query([])?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let mut count = 0u64;
        while let Some(r) = rows.next()? {
            let text: String = r.get(0)?;
            text.hash(&mut hasher);
            count += 1;
        }
        parts.push(format!("{table} {count} rows #{:016x}", hasher.finish()));
    }
    Ok(parts.join(", "))
}

fn digest_in_child(db: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin("nuntiq-bench")).arg("digest").arg("--db").arg(db).output()?;
    anyhow::ensure!(
        out.status.success(),
        "digest of {} failed: {}",
        db.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// This process's own peak RSS, in MB: no child's reading can be below it.
fn own_peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

pub fn run(options: Options) -> anyhow::Result<()> {
    let n = options.suppliers;
    let runs = options.runs.max(1);
    let cache = tempfile::tempdir()?;
    eprintln!("mock: seeding {n} suppliers and rendering its pages…");
    let mock = MockServer::start(n)?;
    let (rps, mbps) = mock.warm_and_measure(3)?;
    eprintln!("mock: {rps:.0} requests/s, {mbps:.0} MB/s");

    // Warm compile cache for the host.
    let compiled = Command::new(bin("nuntiq-host"))
        .arg("compile")
        .arg(root().join("dist/acme.wasm"))
        .arg("--cache-dir")
        .arg(cache.path())
        .output()?;
    anyhow::ensure!(compiled.status.success(), "compile failed");

    let mut rows = Vec::new();
    let mut stores: Vec<(&str, tempfile::TempDir, &str)> = Vec::new();

    // 1 and 1r: the first load into an empty store, then the same window again
    // on the store it left (every supplier comes back unchanged); P, the plain
    // loader, in the same rounds, so the ratio that matters most sees the same
    // machine (background load drifts).
    eprintln!("1, 1r, P: nuntiq-host first load, an unchanged re-read of the same window, the plain Rust loader…");
    let (mut first, mut again, mut first_envelopes, mut again_envelopes) = (vec![], vec![], vec![], vec![]);
    let (mut plain_samples, mut plain_dir) = (vec![], None);
    let mut read_samples = vec![];
    let mut host_dir = None;
    for _ in 0..runs {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("h.db");
        let (sample, stdout) = measure(&mut host_command(dir.path(), &mock, &db, cache.path(), true)?)?;
        let envelope = last_json(&stdout).unwrap_or_default();
        anyhow::ensure!(
            envelope["fetched"].as_u64() == Some(n as u64) && envelope["inserted"].as_u64() == Some(n as u64),
            "the host's first load did not insert {n} suppliers: {stdout}"
        );
        first.push(sample);
        first_envelopes.push(envelope);
        let (sample, stdout) = measure(&mut host_command(dir.path(), &mock, &db, cache.path(), true)?)?;
        let envelope = last_json(&stdout).unwrap_or_default();
        anyhow::ensure!(
            envelope["fetched"].as_u64() == Some(n as u64),
            "the host's re-read did not fetch {n} suppliers: {stdout}"
        );
        again.push(sample);
        again_envelopes.push(envelope);
        host_dir = Some(dir);

        let dir = tempfile::tempdir()?;
        let (sample, stdout) = measure(&mut plain_command(&mock, &dir.path().join("p.db")))?;
        let rows = rows_reported(&stdout);
        anyhow::ensure!(rows == Some(n as u64), "the plain loader loaded {rows:?}, not {n}: {stdout}");
        plain_samples.push(sample);
        plain_dir = Some(dir);

        let (sample, stdout) = measure(&mut plain_read_command(&mock))?;
        let rows = rows_reported(&stdout);
        anyhow::ensure!(rows == Some(n as u64), "the plain reader read {rows:?}, not {n}: {stdout}");
        read_samples.push(sample);
    }
    stores.push(("1", host_dir.expect("at least one run"), "h.db"));
    let reread_unchanged: Vec<u64> = again_envelopes
        .iter()
        .map(|e| e["unchanged"].as_u64().unwrap_or(0))
        .collect();
    let first_usage = host_usage(&first_envelopes);
    let again_usage = host_usage(&again_envelopes);
    rows.push(row(
        "1",
        "nuntiq-host + acme.wasm, first load (warm compile cache)",
        n,
        runs,
        median(&first),
        "process start to exit, empty store",
    ));

    let plain = median(&plain_samples);
    stores.push(("P", plain_dir.expect("at least one run"), "p.db"));
    rows.push(row(
        "P",
        "plain Rust loader (reqwest, serde, rusqlite; own natural-key tables)",
        n,
        runs,
        plain,
        "process start to exit, empty store",
    ));

    eprintln!("0: the host's store alone…");
    let mut store_samples = Vec::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir()?;
        let (sample, stdout) = measure(
            Command::new(bin("nuntiq-bench"))
                .args(["store-only", "--suppliers", &n.to_string()])
                .arg("--db")
                .arg(dir.path().join("s.db")),
        )?;
        // The upserts alone: the process's own timing leaves out generating the rows.
        let v: Value = serde_json::from_str(stdout.trim())?;
        store_samples.push(Sample {
            wall: Duration::from_secs_f64(v["store_seconds"].as_f64().unwrap_or(0.0)),
            peak_rss_kb: sample.peak_rss_kb,
        });
    }
    rows.push(row(
        "0",
        "the host's store alone (same rows, its schema and upserts)",
        n,
        runs,
        median(&store_samples),
        "upsert time only (the floor of our schema); RSS includes generating the rows",
    ));

    eprintln!("2: native baseline (the Acme connector as plain Rust on the host's store)…");
    let (native, _, _) = repeat(runs, Some(n), |dir| Ok(native_command(&mock, &dir.join("n.db"))))?;
    rows.push(row(
        "2",
        "native baseline: the connector in Rust on the host's store, no wasm",
        n,
        runs,
        native,
        "process start to exit, empty store",
    ));

    if let Some(python) = &options.python {
        eprintln!("3: Python seed connector (requests + tenacity, sqlite3 executemany)…");
        let (seed, _, seed_dir) = repeat(runs, Some(n), |dir| {
            Ok(python_seed_command(python, &mock, &dir.join("py.db"), true))
        })?;
        stores.push(("3", seed_dir, "py.db"));
        rows.push(row(
            "3",
            "Python seed pattern (requests + tenacity; sqlite3 executemany, own natural-key tables)",
            n,
            runs,
            seed,
            "process start to exit, empty store",
        ));

        eprintln!("4: dlt rest_api → DuckDB…");
        let (dlt, _, _) = repeat(runs, Some(n), |dir| {
            let mut c = Command::new(python);
            c.arg(root().join("bench/python/dlt_pipeline.py"))
                .args(source_args(&mock))
                .args(["--since", SINCE, "--db"])
                .arg(dir.join("d.duckdb"))
                .arg("--pipelines-dir")
                .arg(dir.join("pipelines"))
                .env("HOME", dir);
            Ok(c)
        })?;
        rows.push(row(
            "4",
            "dlt rest_api source → DuckDB",
            n,
            runs,
            dlt,
            "process start to exit, empty destination",
        ));
    }

    let unchanged_note = if reread_unchanged.iter().all(|&u| u == n as u64) {
        format!("second backfill on the populated store; unchanged = {n} in every run")
    } else {
        format!("second backfill on the populated store; unchanged per run: {reread_unchanged:?}")
    };
    rows.push(row(
        "1r",
        "nuntiq-host, unchanged re-read of the same window",
        n,
        runs,
        median(&again),
        &unchanged_note,
    ));
    rows.push(row(
        "R",
        "plain Rust reader: P's fetching and parsing alone, nothing written",
        n,
        runs,
        median(&read_samples),
        "the floor under any re-read of the window; process start to exit",
    ));

    // The no-change incremental runs: the stored cursor, nothing new.
    eprintln!("1i, 3i: incremental runs with no changes…");
    let work = tempfile::tempdir()?;
    let host_db = work.path().join("h.db");
    measure(&mut host_command(work.path(), &mock, &host_db, cache.path(), true)?)?;
    let mut idle_envelopes = Vec::new();
    let mut idle_samples = Vec::new();
    for _ in 0..runs {
        let (sample, stdout) = measure(&mut host_command(work.path(), &mock, &host_db, cache.path(), false)?)?;
        idle_samples.push(sample);
        idle_envelopes.push(last_json(&stdout).unwrap_or_default());
    }
    let idle_usage = host_usage(&idle_envelopes);
    let idle_fetched: Vec<u64> = idle_envelopes.iter().map(|e| e["fetched"].as_u64().unwrap_or(0)).collect();
    let idle_written: u64 = idle_envelopes
        .iter()
        .map(|e| e["inserted"].as_u64().unwrap_or(0) + e["updated"].as_u64().unwrap_or(0))
        .sum();
    rows.push(row(
        "1i",
        "nuntiq-host, incremental run with no changes",
        0,
        runs,
        median(&idle_samples),
        &format!(
            "1 request; re-reads the cursor's second ({} rows), writes {idle_written}; host's own wall {} ms",
            idle_fetched.iter().max().unwrap_or(&0),
            idle_usage.wall_ms.map_or("?".into(), |w| format!("{w:.0}"))
        ),
    ));
    if let Some(python) = &options.python {
        let py_db = work.path().join("p.db");
        measure(&mut python_seed_command(python, &mock, &py_db, true))?;
        let (py_idle, py_rows, _) = repeat(runs, None, |_| Ok(python_seed_command(python, &mock, &py_db, false)))?;
        rows.push(row(
            "3i",
            "Python seed pattern, incremental run with no changes",
            0,
            runs,
            py_idle,
            &format!("1 request, {} rows", py_rows.iter().max().unwrap_or(&0)),
        ));
    }

    eprintln!("1c: first runs with an empty compile cache…");
    let mut compile_ms = Vec::new();
    let (cold, _, _) = repeat(runs, Some(n), |dir| {
        let fresh = dir.join("empty-cache");
        let out = Command::new(bin("nuntiq-host"))
            .arg("compile")
            .arg(root().join("dist/acme.wasm"))
            .arg("--cache-dir")
            .arg(&fresh)
            .output()?;
        let said = String::from_utf8_lossy(&out.stdout);
        if let Some(ms) = said
            .split(" in ")
            .nth(1)
            .and_then(|r| r.split(" ms").next())
            .and_then(|m| m.parse::<f64>().ok())
        {
            compile_ms.push(ms);
        }
        std::fs::remove_dir_all(&fresh)?;
        host_command(dir, &mock, &dir.join("h.db"), &fresh, true)
    })?;
    rows.push(row(
        "1c",
        "nuntiq-host, first load with an empty compile cache",
        n,
        runs,
        cold,
        "includes compiling acme.wasm",
    ));
    let compile_median = median_f64(compile_ms);

    // The same first load and re-read into SQLite and into PostgreSQL.
    let pg_load = if options.pg_load {
        eprintln!("S1, G1: the host's first load and re-read into SQLite and PostgreSQL…");
        match crate::scale::pg_load(&mock, cache.path(), n, runs, &options.pg) {
            Ok(done) => Some(done),
            Err(e) => {
                eprintln!("pg_load not measured: {e:#}");
                Some((Vec::new(), json!({"error": format!("{e:#}")})))
            }
        }
    } else {
        None
    };
    drop(mock);

    // The same content in every store that keeps the platform's tables.
    let digests: Vec<(String, String)> = stores
        .iter()
        .map(|(id, dir, file)| Ok((id.to_string(), digest_in_child(&dir.path().join(file))?)))
        .collect::<anyhow::Result<_>>()?;
    drop(stores);

    if options.large > 0 {
        let big = options.large;
        eprintln!("mock: seeding {big} suppliers…");
        let mock = MockServer::start(big)?;
        mock.warm_and_measure(0)?;
        eprintln!("1L, 2L: host and native baseline on {big} suppliers…");
        let (host, _, _) = repeat(1, Some(big), |dir| {
            host_command(dir, &mock, &dir.join("h.db"), cache.path(), true)
        })?;
        rows.push(row("1L", "nuntiq-host + acme.wasm", big, 1, host, "flat memory check"));
        let (native, _, _) = repeat(1, Some(big), |dir| Ok(native_command(&mock, &dir.join("n.db"))))?;
        rows.push(row("2L", "native baseline", big, 1, native, "flat memory check"));
    }

    // Many jobs at once in one serve process, on PostgreSQL.
    let serve_scale = if options.serve_levels.is_empty() {
        None
    } else {
        let scale_options = crate::scale::ServeScaleOptions {
            levels: options.serve_levels.clone(),
            suppliers_per_job: 200,
            page_size: 50,
            page_delays_ms: vec![0, 2000],
            pg: options.pg.clone(),
            timeout: Duration::from_secs(600),
        };
        match crate::scale::serve_scale(&scale_options) {
            Ok(done) => Some(done),
            Err(e) => {
                eprintln!("serve_scale not measured: {e:#}");
                Some((Vec::new(), json!({"error": format!("{e:#}")})))
            }
        }
    };

    let wall_of = |rows: &[Row], id: &str| rows.iter().find(|r| r.id == id).map(|r| r.wall_s_median);
    let (host_time, host_idle, host_large) = (wall_of(&rows, "1"), wall_of(&rows, "1i"), wall_of(&rows, "1L"));
    for r in &mut rows {
        let (basis, label) = match r.id.as_str() {
            "1i" | "3i" => (host_idle, "1i"),
            "1L" | "2L" => (host_large, "1L"),
            _ => (host_time, "1"),
        };
        r.time_ratio_to_host = basis.map(|b| r.wall_s_median / b);
        r.compared_with = label.into();
    }

    let wall = |id: &str| wall_of(&rows, id);
    let rss = |id: &str| rows.iter().find(|r| r.id == id).map(|r| r.peak_rss_mb);
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    // How contender `a`'s wall time compares with `b`'s, and whether that is `ok`.
    let versus = |a: &str, b: &str, ok: &dyn Fn(f64) -> bool| {
        ratio(wall(a), wall(b)).map(|x| {
            let shown = format!("{x:.2}× ({:.3} s vs {:.3} s)", wall(a).unwrap(), wall(b).unwrap());
            (shown, ok(x))
        })
    };
    let mut checks = vec![
        check(
            format!("host first load ≤ {HOST_OVER_PLAIN_AT_MOST}× the plain Rust loader"),
            versus("1", "P", &|x| x <= HOST_OVER_PLAIN_AT_MOST),
        ),
        check(
            format!("Python seed pattern ≥ {PYTHON_OVER_HOST_AT_LEAST}× the host"),
            versus("3", "1", &|x| x >= PYTHON_OVER_HOST_AT_LEAST),
        ),
        check(
            format!("dlt ≥ {DLT_OVER_HOST_AT_LEAST}× the host"),
            versus("4", "1", &|x| x >= DLT_OVER_HOST_AT_LEAST),
        ),
        check(
            format!("unchanged re-read ≤ {REREAD_OVER_FIRST_AT_MOST}× the first load"),
            versus("1r", "1", &|x| x <= REREAD_OVER_FIRST_AT_MOST),
        ),
        check(
            format!("unchanged re-read writes nothing (unchanged = {n})"),
            Some((
                format!("unchanged per run {reread_unchanged:?}"),
                reread_unchanged.iter().all(|&u| u == n as u64),
            )),
        ),
        check(
            format!("no-change incremental run ≤ {NO_CHANGE_AT_MOST_MS} ms of host work (warm cache)"),
            idle_usage.wall_ms.zip(wall("1i")).map(|(host_ms, process)| {
                (
                    format!(
                        "{host_ms:.0} ms (the run's wall in its envelope); process start to exit {:.1} ms",
                        process * 1000.0
                    ),
                    host_ms <= NO_CHANGE_AT_MOST_MS,
                )
            }),
        ),
        check(
            format!(
                "flat memory: peak RSS at {} suppliers ≤ {LARGE_RSS_OVER_SMALL_AT_MOST}× at {n}",
                options.large
            ),
            ratio(rss("1L"), rss("1")).map(|x| {
                (
                    format!("{x:.2}× ({:.1} MB vs {:.1} MB)", rss("1L").unwrap(), rss("1").unwrap()),
                    x <= LARGE_RSS_OVER_SMALL_AT_MOST,
                )
            }),
        ),
    ];
    if digests.len() > 1 {
        let same = digests.iter().all(|(_, d)| *d == digests[0].1);
        checks.push(check(
            format!(
                "the same suppliers, locations and addresses in every store of the platform's tables ({})",
                digests.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>().join(", ")
            ),
            Some((
                if same {
                    digests[0].1.clone()
                } else {
                    digests.iter().map(|(id, d)| format!("{id}: {d}")).collect::<Vec<_>>().join("; ")
                },
                same,
            )),
        ));
    }

    let machine = machine();
    print_table(&rows, n, runs, rps, compile_median, &machine);
    println!(
        "\nthe host's own account (envelope usage, median): first load wall {} ms, CPU {} ms, store {} ms; \
         unchanged re-read wall {} ms, CPU {} ms, store {} ms",
        fmt_ms(first_usage.wall_ms),
        fmt_ms(first_usage.cpu_ms),
        fmt_ms(first_usage.store_ms),
        fmt_ms(again_usage.wall_ms),
        fmt_ms(again_usage.cpu_ms),
        fmt_ms(again_usage.store_ms),
    );
    let floor = versus("R", "1", &|_| true).map(|(shown, _)| shown);
    let over_floor = versus("1r", "R", &|_| true).map(|(shown, _)| shown);
    println!(
        "the floor of a re-read (R: fetch and parse natively, write nothing) is {} the host's first load; \
         the host's unchanged re-read is {} that floor",
        floor.as_deref().unwrap_or("?"),
        over_floor.as_deref().unwrap_or("?"),
    );
    print_checks(&checks);
    if let Some((rows, _)) = &pg_load
        && !rows.is_empty()
    {
        crate::scale::print_pg_load(rows);
    }
    if let Some((levels, value)) = &serve_scale
        && !levels.is_empty()
    {
        crate::scale::print_serve_scale(levels, value);
    }
    let harness_rss = own_peak_rss_mb();
    if let Some(mb) = harness_rss {
        println!("(the harness's own peak RSS: {mb:.1} MB; a child's peak RSS as wait4 reports it is at least its parent's)");
    }
    let results = json!({
        "machine": machine,
        "suppliers": n,
        "runs": runs,
        "page_size": PAGE_SIZE,
        "mock": {"requests_per_s": rps, "mb_per_s": mbps},
        "compile_ms_median": compile_median,
        "host_usage": {"first_load": first_usage, "unchanged_reread": again_usage, "no_change": idle_usage},
        "contenders": rows,
        "content": digests.iter().map(|(id, d)| json!({"id": id, "digest": d})).collect::<Vec<_>>(),
        "targets": checks,
        "harness_peak_rss_mb": harness_rss,
        "pg_load": pg_load.map(|(_, v)| v),
        "serve_scale": serve_scale.map(|(_, v)| v),
    });
    std::fs::write(&options.out, serde_json::to_string_pretty(&results)? + "\n")?;
    eprintln!("wrote {}", options.out.display());
    Ok(())
}

fn fmt_ms(ms: Option<f64>) -> String {
    ms.map_or("?".into(), |m| format!("{m:.0}"))
}

pub(crate) fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(": ").nth(1))
        .unwrap_or("?");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = meminfo
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let version = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory_gib": (mem_kb as f64 / 1024.0 / 1024.0).round(),
        "rustc": version("rustc", "--version"),
        "os": version("uname", "-sr"),
    })
}

fn print_table(rows: &[Row], n: usize, runs: usize, rps: f64, compile_ms: Option<f64>, machine: &Value) {
    println!(
        "\n{n} suppliers (9 in 10 with a location and an address), page size {PAGE_SIZE}, median of {runs} runs; \
         machine: {} × {}, {} GiB",
        machine["cpus"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["memory_gib"]
    );
    println!("mock API: {rps:.0} requests/s from one client (pre-rendered pages)");
    if let Some(ms) = compile_ms {
        println!("compiling acme.wasm into an empty cache: {ms:.0} ms (median)");
    }
    println!(
        "\n| # | contender | suppliers | wall (s, median) | records/s | peak RSS (MB) | time vs host | note |"
    );
    println!("|---|-----------|----------:|-----------------:|----------:|--------------:|-------------:|------|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.3} | {} | {:.1} | {} | {} |",
            r.id,
            r.name,
            r.suppliers,
            r.wall_s_median,
            if r.records_per_s > 0.0 {
                format!("{:.0}", r.records_per_s)
            } else {
                "-".into()
            },
            r.peak_rss_mb,
            r.time_ratio_to_host
                .map_or("-".into(), |x| format!("{x:.2}× of {}", r.compared_with)),
            r.note
        );
    }
}

fn print_checks(checks: &[Check]) {
    println!("\ntargets:");
    for c in checks {
        println!("  [{}] {}: {}", c.status, c.target, c.measured);
    }
}
