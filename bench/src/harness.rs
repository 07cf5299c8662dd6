//! `nuntiq-bench run`: every contender on the same data from the same mock,
//! each as its own process from an empty store, wall time (median) and peak
//! RSS measured alike; a table on stdout and `bench/results.json`.

use serde::Serialize;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "test-bearer-token-here";
/// Every contender fetches the whole data set: updated after this.
const SINCE: &str = "2000-01-01T00:00:00Z";
const PAGE_SIZE: u32 = 1000;

pub struct Options {
    pub suppliers: usize,
    pub runs: usize,
    pub large: usize,
    pub python: Option<PathBuf>,
    pub out: PathBuf,
}

/// One process's measurement.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    peak_rss_kb: u64,
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
    /// This contender's wall time over the host's (contender 1) in the same table.
    time_ratio_to_host: Option<f64>,
    note: String,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_owned()
}

fn bin(name: &str) -> PathBuf {
    let path = root().join("target/release").join(name);
    assert!(path.exists(), "{} is missing: run `make build` first", path.display());
    path
}

/// Spawns, waits with `wait4` for the child's own peak RSS, and returns its stdout.
fn measure(command: &mut Command) -> anyhow::Result<(Sample, String)> {
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

fn median(samples: &[Sample]) -> Sample {
    let mut walls: Vec<Duration> = samples.iter().map(|s| s.wall).collect();
    walls.sort();
    Sample {
        wall: walls[walls.len() / 2],
        peak_rss_kb: samples.iter().map(|s| s.peak_rss_kb).max().unwrap_or(0),
    }
}

/// The rows a contender reported, to check every contender did the whole job.
fn rows_reported(stdout: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(stdout.lines().last()?).ok()?;
    v.get("rows").or_else(|| v.get("fetched")).and_then(Value::as_u64)
}

struct MockServer {
    child: Child,
    url: String,
}

impl MockServer {
    fn start(suppliers: usize) -> anyhow::Result<Self> {
        let mut child = Command::new(bin("acme-mock"))
            .args(["serve", "--suppliers", &suppliers.to_string(), "--token", TOKEN])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
        let url = line.trim().trim_start_matches("listening on ").to_owned();
        Ok(Self { child, url })
    }

    fn api_url(&self) -> String {
        format!("{}/v2", self.url)
    }

    /// Renders every page once, then reads them all `rounds` times: requests per second.
    fn warm_and_measure(&self, rounds: usize) -> anyhow::Result<(f64, f64)> {
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

/// The host job: `extra` adds `--param since_override=…` or not.
fn host_command(dir: &Path, mock: &MockServer, db: &Path, cache: &Path, backfill: bool) -> anyhow::Result<Command> {
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

fn init_db(db: &Path) -> anyhow::Result<()> {
    let status = Command::new(bin("nuntiq-bench"))
        .arg("init-db")
        .arg("--db")
        .arg(db)
        .status()?;
    anyhow::ensure!(status.success(), "init-db failed");
    Ok(())
}

/// Runs `make` (a fresh command per run, from an empty store in `dir`) `runs` times.
fn repeat(
    runs: usize,
    expect_rows: usize,
    mut make: impl FnMut(&Path, usize) -> anyhow::Result<Command>,
) -> anyhow::Result<Sample> {
    let mut samples = Vec::new();
    for run in 0..runs {
        let dir = tempfile::tempdir()?;
        let mut command = make(dir.path(), run)?;
        let (sample, stdout) = measure(&mut command)?;
        let rows = rows_reported(&stdout);
        anyhow::ensure!(
            rows == Some(expect_rows as u64),
            "expected {expect_rows} rows, got {rows:?}: {stdout}"
        );
        samples.push(sample);
    }
    Ok(median(&samples))
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
        note: note.into(),
    }
}

pub fn run(options: Options) -> anyhow::Result<()> {
    let n = options.suppliers;
    let runs = options.runs;
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
    eprintln!("0: store only…");
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
        "store only (same rows, same schema, same upserts)",
        n,
        runs,
        median(&store_samples),
        "upsert time only; RSS includes generating the rows",
    ));

    eprintln!("1: nuntiq-host run-plugin dist/acme.wasm (warm compile cache)…");
    let host = repeat(runs, n, |dir, _| {
        host_command(dir, &mock, &dir.join("h.db"), cache.path(), true)
    })?;
    rows.push(row(
        "1",
        "nuntiq-host + acme.wasm",
        n,
        runs,
        host,
        "process start to exit",
    ));

    eprintln!("2: native Rust baseline…");
    let native = repeat(runs, n, |dir, _| Ok(native_command(&mock, &dir.join("n.db"))))?;
    rows.push(row(
        "2",
        "native Rust, same fetch/parse/map/upsert, no wasm",
        n,
        runs,
        native,
        "process start to exit",
    ));

    if let Some(python) = &options.python {
        eprintln!("3: Python seed connector (requests + tenacity + sqlite3)…");
        let seed = repeat(runs, n, |dir, _| {
            let db = dir.join("p.db");
            init_db(&db)?;
            Ok(python_seed_command(python, &mock, &db, true))
        })?;
        rows.push(row(
            "3",
            "Python seed connector (requests + tenacity, sqlite3)",
            n,
            runs,
            seed,
            "process start to exit",
        ));

        eprintln!("4: dlt rest_api → DuckDB…");
        let dlt = repeat(runs, n, |dir, _| {
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
            "process start to exit",
        ));
    }

    // The no-change incremental run: one request, zero rows.
    eprintln!("no-change incremental runs…");
    let work = tempfile::tempdir()?;
    let host_db = work.path().join("h.db");
    measure(&mut host_command(work.path(), &mock, &host_db, cache.path(), true)?)?;
    let host_idle = repeat(runs, 0, |_, _| {
        host_command(work.path(), &mock, &host_db, cache.path(), false)
    })?;
    rows.push(row(
        "1i",
        "nuntiq-host, incremental run with no changes",
        0,
        runs,
        host_idle,
        "1 request, 0 rows",
    ));
    if let Some(python) = &options.python {
        let py_db = work.path().join("p.db");
        init_db(&py_db)?;
        measure(&mut python_seed_command(python, &mock, &py_db, true))?;
        let py_idle = repeat(runs, 0, |_, _| Ok(python_seed_command(python, &mock, &py_db, false)))?;
        rows.push(row(
            "3i",
            "Python seed connector, incremental run with no changes",
            0,
            runs,
            py_idle,
            "1 request, 0 rows",
        ));
    }

    eprintln!("first runs with an empty compile cache…");
    let mut compile_ms = Vec::new();
    let cold = repeat(runs, n, |dir, _| {
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
        "nuntiq-host, first run with an empty compile cache",
        n,
        runs,
        cold,
        "includes compiling acme.wasm",
    ));
    compile_ms.sort_by(f64::total_cmp);
    let compile_median = compile_ms.get(compile_ms.len() / 2).copied();
    drop(mock);

    if options.large > 0 {
        let big = options.large;
        eprintln!("mock: seeding {big} suppliers…");
        let mock = MockServer::start(big)?;
        mock.warm_and_measure(0)?;
        eprintln!("1M: host and native…");
        let host = repeat(1, big, |dir, _| {
            host_command(dir, &mock, &dir.join("h.db"), cache.path(), true)
        })?;
        rows.push(row("1L", "nuntiq-host + acme.wasm", big, 1, host, "flat memory check"));
        let native = repeat(1, big, |dir, _| Ok(native_command(&mock, &dir.join("n.db"))))?;
        rows.push(row("2L", "native Rust baseline", big, 1, native, "flat memory check"));
    }

    let host_time = rows
        .iter()
        .find(|r| r.id == "1")
        .map(|r| r.wall_s_median)
        .unwrap_or(1.0);
    let host_idle_time = rows
        .iter()
        .find(|r| r.id == "1i")
        .map(|r| r.wall_s_median)
        .unwrap_or(1.0);
    let host_large = rows.iter().find(|r| r.id == "1L").map(|r| r.wall_s_median);
    for r in &mut rows {
        r.time_ratio_to_host = match r.id.as_str() {
            "1i" | "3i" => Some(r.wall_s_median / host_idle_time),
            "1L" | "2L" => host_large.map(|h| r.wall_s_median / h),
            _ => Some(r.wall_s_median / host_time),
        };
    }

    let machine = machine();
    print_table(&rows, n, runs, rps, compile_median, &machine);
    let results = json!({
        "machine": machine,
        "suppliers": n,
        "runs": runs,
        "page_size": PAGE_SIZE,
        "mock": {"requests_per_s": rps, "mb_per_s": mbps},
        "compile_ms_median": compile_median,
        "contenders": rows,
    });
    std::fs::write(&options.out, serde_json::to_string_pretty(&results)? + "\n")?;
    eprintln!("wrote {}", options.out.display());
    Ok(())
}

fn machine() -> Value {
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
        "\n{n} suppliers with location and address, page size {PAGE_SIZE}, median of {runs} runs; \
         machine: {} × {}, {} GiB",
        machine["cpus"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["memory_gib"]
    );
    println!("mock API: {rps:.0} requests/s from one client (pre-rendered pages)");
    if let Some(ms) = compile_ms {
        println!("compiling acme.wasm into an empty cache: {ms:.0} ms (median)");
    }
    println!("\n| # | contender | suppliers | wall (s) | records/s | peak RSS (MB) | time vs host |");
    println!("|---|-----------|----------:|---------:|----------:|--------------:|-------------:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.3} | {} | {:.1} | {} |",
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
            r.time_ratio_to_host.map_or("-".into(), |x| format!("{x:.2}×"))
        );
    }
}
