//! Two figures beside the 100 000-supplier table, on PostgreSQL:
//!
//! - `serve-scale`: 1, 10, 100 and 1000 Acme jobs due at once in one
//!   `nuntiq-host serve` process (`--max-concurrent N`, one customer and
//!   connector each), storing into a fresh PostgreSQL schema per level: runs
//!   per second, run latency (from the run history), peak RSS of the process.
//! - `pg-load`: the host's first load and unchanged re-read of the same
//!   suppliers into SQLite and into PostgreSQL, in the same rounds.
//!
//! Everything listens and connects on 127.0.0.1 only.

use crate::harness::{self, HostUsage, MockServer, Sample, bin, host_command, last_json, measure, median, root};
use chrono::{DateTime, Utc};
use nuntiq_e2e::Db;
use serde::Serialize;
use serde_json::{Value, json};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The PostgreSQL server the tests use (`NUNTIQ_TEST_PG` overrides).
pub fn default_pg() -> String {
    nuntiq_e2e::pg_server()
}

/// Fails, naming the server, when nothing answers on its host and port
/// (`Db::open` would panic instead).
pub fn pg_reachable(base: &str) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(base)?;
    let host = url.host_str().unwrap_or("127.0.0.1");
    let port = url.port().unwrap_or(5432);
    let addr: std::net::SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|e| anyhow::anyhow!("{base}: give the server as an IP address ({e})"))?;
    anyhow::ensure!(addr.ip().is_loopback(), "{base}: the bench only talks to loopback addresses");
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| anyhow::anyhow!("PostgreSQL at {base} did not answer: {e}"))?;
    Ok(())
}

/// A schema of its own in the server, dropped with this value; its `url()`
/// is the `--db` of the measured processes.
struct Schema {
    name: String,
    base: String,
}

impl Schema {
    fn new(base: &str) -> anyhow::Result<Self> {
        pg_reachable(base)?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
        let name = format!("nuntiq_bench_{}_{nanos:08x}", std::process::id());
        Db::open(Path::new(base)).execute(&format!("CREATE SCHEMA {name}"));
        Ok(Self {
            name,
            base: base.to_owned(),
        })
    }

    fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-c%20search_path%3D{}", self.base, self.name)
    }

    fn db(&self) -> Db {
        Db::open(Path::new(&self.url()))
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        let dropped = std::panic::catch_unwind(move || {
            Db::open(Path::new(&base)).execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"));
        });
        if dropped.is_err() {
            eprintln!("could not drop schema {}; drop it by hand", self.name);
        }
    }
}

/// Compiles acme.wasm into `cache` (so no measurement includes compiling it).
pub fn warm_cache(cache: &Path) -> anyhow::Result<()> {
    let out = Command::new(bin("nuntiq-host"))
        .arg("compile")
        .arg(acme_wasm())
        .arg("--cache-dir")
        .arg(cache)
        .output()?;
    anyhow::ensure!(out.status.success(), "compile failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

fn acme_wasm() -> PathBuf {
    let path = root().join("dist/acme.wasm");
    assert!(path.exists(), "{} is missing: run `make build` first", path.display());
    path
}

/// Reads or creates the JSON object at `out` and sets `key` in it, leaving the
/// other keys (the rest of a `make bench` results file) as they were.
pub fn write_key(out: &Path, key: &str, value: Value) -> anyhow::Result<()> {
    let mut results = match std::fs::read_to_string(out) {
        Ok(text) => serde_json::from_str::<Value>(&text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(e) => return Err(e.into()),
    };
    anyhow::ensure!(results.is_object(), "{} is not a JSON object", out.display());
    results[key] = value;
    std::fs::write(out, serde_json::to_string_pretty(&results)? + "\n")?;
    eprintln!("wrote {key} into {}", out.display());
    Ok(())
}

fn nearest_rank(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn at(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

// ---------------------------------------------------------------- serve-scale

pub struct ServeScaleOptions {
    pub levels: Vec<usize>,
    /// Suppliers in the mock; every job fetches all of them.
    pub suppliers_per_job: usize,
    pub page_size: u32,
    /// Each series: the mock waits this long before every page (0: no wait).
    /// With short runs the levels measure throughput; with a wait as a real
    /// API's, runs last long enough that all N are in flight at once.
    pub page_delays_ms: Vec<u64>,
    pub pg: String,
    /// Longest a level may take, serve start to the last run's end.
    pub timeout: Duration,
}

/// One concurrency level.
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    /// Jobs in the file, all due at once; also `--max-concurrent`.
    pub jobs: usize,
    /// The mock's wait before every page.
    pub page_delay_ms: u64,
    /// Slots that ended `succeeded` / ended at all within the timeout.
    pub succeeded: usize,
    pub ended: usize,
    /// `serve` spawned → every slot ended (polled every 20 ms).
    pub wall_s: f64,
    pub runs_per_s: f64,
    /// `serve` spawned → the first run's start in the run history.
    pub startup_s: Option<f64>,
    /// First run's start → last run's end, from the run history.
    pub active_s: Option<f64>,
    pub runs_per_s_active: Option<f64>,
    /// Run latency: delta_run ended_at_utc − started_at_utc.
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    /// The host's own wall per run (delta_run.wall_ms), median.
    pub host_wall_p50_ms: Option<f64>,
    /// Slot claimed → slot ended (schedule_slot), p50 and p99: includes waiting for the pool.
    pub slot_p50_ms: Option<f64>,
    pub slot_p99_ms: Option<f64>,
    /// First slot claimed → last slot claimed (the scheduler claims one at a time).
    pub claim_spread_s: Option<f64>,
    /// Most runs in progress at one moment, from the run history.
    pub max_overlap: usize,
    /// VmHWM of the serve process, read after the last run ended, before SIGTERM.
    pub peak_rss_mb: f64,
    /// wait4's ru_maxrss (at least the harness's own RSS at spawn).
    pub rusage_peak_rss_mb: f64,
    /// (peak RSS − peak RSS at 1 job) / jobs.
    pub rss_per_instance_mb: Option<f64>,
    /// peak RSS / jobs.
    pub peak_over_jobs_mb: f64,
    /// Highest thread and open-descriptor counts seen while polling.
    pub peak_threads: u64,
    pub peak_fds: u64,
    pub suppliers_stored: i64,
    /// serve's stderr at --log-level warn, by message (ids and times taken out).
    pub log_lines: std::collections::BTreeMap<String, usize>,
    pub serve_exit: i32,
    pub note: String,
}

fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// The seal key the benchmark's `serve` stores its jobs' inline secrets with.
const SEAL_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// The jobs file: `n` Acme jobs, each its own connector and customer, all due
/// now (a yearly cron: the slot is this year's, the next one far away), each
/// fetching the mock's whole data set.
fn jobs_file(dir: &Path, mock: &MockServer, n: usize, page_size: u32) -> anyhow::Result<PathBuf> {
    jobs_file_with(dir, mock, n, page_size, "cron = \"0 0 1 1 *\"")
}

/// [`jobs_file`] with another cadence (`every = "5s"`).
fn jobs_file_with(dir: &Path, mock: &MockServer, n: usize, page_size: u32, cadence: &str) -> anyhow::Result<PathBuf> {
    let q = |s: &str| serde_json::to_string(s).expect("a string");
    let mut toml = String::new();
    for i in 0..n {
        let name = format!("acme_{i:04}");
        toml.push_str(&format!(
            "[[job]]\nname = {}\nplugin = {}\n{cadence}\nallow_hosts = [{}]\n\
             params = {{ since_override = {} }}\n\
             [job.settings]\ncustomer_number = {}\nsecrets = {{ acme_token = {} }}\n\
             config = {{ connector_name = {}, api_url = {}, page_size = {page_size} }}\njob_params = {{}}\n\n",
            q(&name),
            q(&acme_wasm().display().to_string()),
            q(&mock.url),
            q(harness::SINCE),
            q(&format!("B{i:06}")),
            q(harness::TOKEN),
            q(&name),
            q(&mock.api_url()),
        ));
    }
    let path = dir.join("jobs.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// Raises the child's soft open-file limit to the hard one: 1000 runs, each
/// with its own runtime and connections.
fn raise_nofile(command: &mut Command) {
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
            Ok(())
        });
    }
}

fn nofile_hard() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscall writing into `limit`.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    limit.rlim_max as u64
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A log line without its time, run ids (UUIDs) and job names, so equal messages group.
fn normalise(line: &str) -> String {
    let line = line.split_once(" UTC ").map_or(line, |(_, rest)| rest);
    let mut out = String::new();
    for word in line.split(' ') {
        let bare = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        let uuid = bare.len() == 36 && bare.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        let job = bare.starts_with("acme_") && bare[5..].chars().all(|c| c.is_ascii_digit());
        out.push_str(if uuid {
            "<run>"
        } else if job {
            "<job>"
        } else {
            word
        });
        out.push(' ');
    }
    out.trim_end().to_owned()
}

fn wait_rusage(pid: libc::pid_t, block: bool) -> Option<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: plain syscall on our own child; `rusage` is written by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if block { 0 } else { libc::WNOHANG };
    let waited = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
    (waited == pid).then(|| {
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -libc::WTERMSIG(status)
        };
        (code, usage)
    })
}

fn measure_level(
    options: &ServeScaleOptions,
    mock: &MockServer,
    cache: &Path,
    n: usize,
    page_delay_ms: u64,
    baseline_rss_mb: Option<f64>,
) -> anyhow::Result<Level> {
    let schema = Schema::new(&options.pg)?;
    let work = tempfile::tempdir()?;
    let jobs = jobs_file(work.path(), mock, n, options.page_size)?;
    let log_path = work.path().join("serve.log");
    let log = std::fs::File::create(&log_path)?;
    let mut command = Command::new(bin("nuntiq-host"));
    command
        // serve JOBS_FILE stores the jobs, sealing their inline secrets.
        .env("NUNTIQ_SECRETS_KEY", SEAL_KEY)
        .arg("serve")
        .arg(&jobs)
        .args(["--db", &schema.url(), "--max-concurrent", &n.to_string()])
        .args(["--log-level", "warn", "--grace", "120s", "--cache-dir"])
        .arg(cache)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    raise_nofile(&mut command);
    let db = schema.db();
    let spawned_at = Utc::now();
    let started = Instant::now();
    let child = command.spawn()?;
    let pid = child.id();
    let (mut peak_threads, mut peak_fds) = (0, 0);
    let mut ended = 0usize;
    let mut exited = None;
    while started.elapsed() < options.timeout {
        peak_threads = peak_threads.max(proc_status(pid, "Threads:").unwrap_or(0));
        peak_fds = peak_fds.max(open_fds(pid).unwrap_or(0));
        if let Some(done) = wait_rusage(pid as libc::pid_t, false) {
            exited = Some(done);
            break;
        }
        ended = db
            .try_rows("SELECT count(*) FROM schedule_slot WHERE status <> 'running'")
            .and_then(|rows| rows[0][0].as_deref()?.parse().ok())
            .unwrap_or(0);
        if ended >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = started.elapsed();
    let mut notes = Vec::new();
    let hwm_kb = proc_status(pid, "VmHWM:");
    let (code, usage) = match exited {
        Some(done) => {
            notes.push(format!("serve exited early: {}", tail(&log_path, 5)));
            done
        }
        None => {
            if ended < n {
                notes.push(format!("timed out after {:?} with {ended} of {n} slots ended", options.timeout));
            }
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(180);
            loop {
                if let Some(done) = wait_rusage(pid as libc::pid_t, false) {
                    break done;
                }
                if Instant::now() > deadline {
                    notes.push("serve did not stop within 180 s of SIGTERM: killed".into());
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                    break wait_rusage(pid as libc::pid_t, true).expect("our child");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };

    // The run history.
    let runs = db.rows("SELECT started_at_utc, ended_at_utc, wall_ms, status, error_summary FROM delta_run");
    let mut latencies = Vec::new();
    let mut events = Vec::new();
    let (mut first_start, mut last_end): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (None, None);
    let mut host_walls = Vec::new();
    for r in &runs {
        let (Some(s), Some(e)) = (r[0].as_deref().and_then(at), r[1].as_deref().and_then(at)) else {
            continue;
        };
        latencies.push((e - s).num_milliseconds() as f64);
        events.push((s, 1i64));
        events.push((e, -1i64));
        first_start = Some(first_start.map_or(s, |f| f.min(s)));
        last_end = Some(last_end.map_or(e, |l| l.max(e)));
        if let Some(w) = r[2].as_deref().and_then(|w| w.parse::<f64>().ok()) {
            host_walls.push(w);
        }
    }
    latencies.sort_by(f64::total_cmp);
    host_walls.sort_by(f64::total_cmp);
    // Ends before starts at the same millisecond: touching runs do not overlap.
    events.sort();
    let (mut live, mut max_overlap) = (0i64, 0i64);
    for (_, delta) in &events {
        live += delta;
        max_overlap = max_overlap.max(live);
    }
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| r[3].as_deref() != Some("succeeded"))
        .filter_map(|r| r[4].clone())
        .take(3)
        .collect();
    if !failed.is_empty() {
        notes.push(format!("failed runs, e.g.: {}", failed.join(" | ")));
    }
    let slots = db.rows(
        "SELECT status, coalesce(outcome, ''), claimed_at, ended_at FROM schedule_slot",
    );
    let succeeded = slots.iter().filter(|s| s[0].as_deref() == Some("succeeded")).count();
    let mut slot_ms: Vec<f64> = slots
        .iter()
        .filter_map(|s| Some((at(s[3].as_deref()?)? - at(s[2].as_deref()?)?).num_milliseconds() as f64))
        .collect();
    slot_ms.sort_by(f64::total_cmp);
    let claims: Vec<DateTime<Utc>> = slots.iter().filter_map(|s| at(s[2].as_deref()?)).collect();
    let claim_spread_s = claims
        .iter()
        .min()
        .zip(claims.iter().max())
        .map(|(a, b)| (*b - *a).num_milliseconds() as f64 / 1000.0);
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for s in slots.iter().filter(|s| s[0].as_deref() != Some("succeeded")) {
        *outcomes
            .entry(format!("{}/{}", s[0].as_deref().unwrap_or("?"), s[1].as_deref().unwrap_or("")))
            .or_default() += 1;
    }
    if !outcomes.is_empty() {
        notes.push(format!("slots not succeeded: {outcomes:?}"));
    }
    let suppliers_stored: i64 = db.scalar("SELECT count(*) FROM supplier");
    let expected = (n * options.suppliers_per_job) as i64;
    if suppliers_stored != expected {
        notes.push(format!("{suppliers_stored} suppliers stored, {expected} expected"));
    }
    if code != 0 {
        notes.push(format!("serve exited {code}: {}", tail(&log_path, 3)));
    }
    // serve logs at warn: every line is a warning or an error; grouped by
    // message, with times, run ids and job names taken out.
    let mut log_lines = std::collections::BTreeMap::<String, usize>::new();
    for line in std::fs::read_to_string(&log_path).unwrap_or_default().lines() {
        *log_lines.entry(normalise(line)).or_default() += 1;
    }
    for (message, count) in &log_lines {
        notes.push(format!("{count}× log \"{message}\""));
    }
    if let Some(keep) = std::env::var_os("NUNTIQ_BENCH_KEEP_LOGS") {
        let kept = Path::new(&keep).join(format!("serve-{n}-{page_delay_ms}ms.log"));
        std::fs::create_dir_all(&keep)?;
        std::fs::copy(&log_path, &kept)?;
    }
    drop(db);
    drop(schema);

    let peak_rss_mb = hwm_kb.unwrap_or(usage.ru_maxrss as u64) as f64 / 1024.0;
    let active = first_start.zip(last_end).map(|(f, l)| (l - f).num_milliseconds() as f64 / 1000.0);
    let secs = wall.as_secs_f64();
    Ok(Level {
        jobs: n,
        page_delay_ms,
        succeeded,
        ended,
        wall_s: secs,
        runs_per_s: succeeded as f64 / secs,
        startup_s: first_start.map(|f| (f - spawned_at).num_milliseconds() as f64 / 1000.0),
        active_s: active,
        runs_per_s_active: active.filter(|a| *a > 0.0).map(|a| succeeded as f64 / a),
        latency_p50_ms: nearest_rank(&latencies, 0.50),
        latency_p99_ms: nearest_rank(&latencies, 0.99),
        latency_max_ms: latencies.last().copied(),
        host_wall_p50_ms: nearest_rank(&host_walls, 0.50),
        slot_p50_ms: nearest_rank(&slot_ms, 0.50),
        slot_p99_ms: nearest_rank(&slot_ms, 0.99),
        claim_spread_s,
        max_overlap: max_overlap as usize,
        peak_rss_mb,
        rusage_peak_rss_mb: usage.ru_maxrss as f64 / 1024.0,
        rss_per_instance_mb: baseline_rss_mb.filter(|_| n > 1).map(|b| (peak_rss_mb - b) / n as f64),
        peak_over_jobs_mb: peak_rss_mb / n as f64,
        peak_threads,
        peak_fds,
        suppliers_stored,
        log_lines,
        serve_exit: code,
        note: notes.join("; "),
    })
}

/// Every level in turn (each with a fresh schema), against one mock.
pub fn serve_scale(options: &ServeScaleOptions) -> anyhow::Result<(Vec<Level>, Value)> {
    pg_reachable(&options.pg)?;
    let cache = tempfile::tempdir()?;
    warm_cache(cache.path())?;
    let mut levels: Vec<Level> = Vec::new();
    for &delay in &options.page_delays_ms {
        // A mock of its own per series: its page delay is a fault consumed by count.
        eprintln!(
            "serve-scale: mock with {} suppliers, {delay} ms before every page…",
            options.suppliers_per_job
        );
        let mock = MockServer::start(options.suppliers_per_job)?;
        mock.warm_and_measure(0)?;
        if delay > 0 {
            set_page_delay(&mock, delay)?;
        }
        let mut baseline = None;
        for &n in &options.levels {
            eprintln!("serve-scale: {n} jobs at once in one serve ({delay} ms a page)…");
            let level = measure_level(options, &mock, cache.path(), n, delay, baseline)?;
            eprintln!(
                "  {n}: {}/{n} succeeded in {:.2} s, overlap {}, peak RSS {:.1} MB{}",
                level.succeeded,
                level.wall_s,
                level.max_overlap,
                level.peak_rss_mb,
                if level.note.is_empty() { String::new() } else { format!(" ({})", level.note) }
            );
            if n == 1 && level.succeeded == 1 {
                baseline = Some(level.peak_rss_mb);
            }
            levels.push(level);
        }
    }
    let value = json!({
        "suppliers_per_run": options.suppliers_per_job,
        "page_size": options.page_size,
        "page_delays_ms": options.page_delays_ms,
        "store": "postgresql, a fresh schema per level",
        "nofile_limit": nofile_hard(),
        "rss_per_instance": "(peak RSS at N − peak RSS at 1) / N; peak RSS is the serve process's VmHWM",
        "levels": levels,
    });
    Ok((levels, value))
}

/// Every supplier request of `mock` waits `ms` first (a fault the mock
/// consumes by count: as many as it will ever see here).
fn set_page_delay(mock: &MockServer, ms: u64) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{}/_mock/faults", mock.url))
            .header("content-type", "application/json")
            .body(json!([{"action": "delay", "delay_ms": ms, "times": u32::MAX}]).to_string())
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "the mock refused the delay: {}", response.status());
        Ok(())
    })
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

pub fn print_serve_scale(levels: &[Level], value: &Value) {
    println!(
        "\nserve: N Acme jobs due at once in one `nuntiq-host serve --max-concurrent N` on PostgreSQL \
         (a fresh schema each), {} suppliers per run, page size {}",
        value["suppliers_per_run"], value["page_size"]
    );
    println!(
        "\n| page delay (ms) | jobs | succeeded | wall (s) | runs/s | runs/s (active) | start (s) | claims over (s) | max overlap | \
         latency p50 (ms) | p99 (ms) | slot p99 (ms) | peak RSS (MB) | RSS/instance (MB) | peak/N (MB) | threads | fds | note |"
    );
    println!("|-----:|-----:|----------:|---------:|-------:|----------------:|----------:|----------------:|------------:|-----------------:|---------:|--------------:|--------------:|------------------:|------------:|--------:|----:|------|");
    for l in levels {
        println!(
            "| {} | {} | {} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {:.2} | {} | {} | {} |",
            l.page_delay_ms,
            l.jobs,
            l.succeeded,
            l.wall_s,
            l.runs_per_s,
            opt(l.runs_per_s_active, 1),
            opt(l.startup_s, 2),
            opt(l.claim_spread_s, 2),
            l.max_overlap,
            opt(l.latency_p50_ms, 0),
            opt(l.latency_p99_ms, 0),
            opt(l.slot_p99_ms, 0),
            l.peak_rss_mb,
            opt(l.rss_per_instance_mb, 2),
            l.peak_over_jobs_mb,
            l.peak_threads,
            l.peak_fds,
            l.note
        );
    }
    println!(
        "wall: serve spawned → every slot ended; active: first run start → last run end; latency: a run's \
         started → ended in delta_run; slot: claimed → ended; claims over: first → last slot claimed; RSS/instance = (peak at N − peak at 1) / N"
    );
}

// ---------------------------------------------------------------- soak

pub struct SoakOptions {
    pub jobs: usize,
    pub every_s: u64,
    pub duration: Duration,
    pub max_concurrent: usize,
    pub suppliers_per_job: usize,
    pub pg: String,
}

/// The soak: `jobs` Acme jobs every `every_s` seconds in one `serve` on
/// PostgreSQL for `duration`. Over the whole rounds inside it: the due slots
/// (from the cadence), how many were claimed (ran), missed, skipped or left
/// without a row, and the lag (slot time → claim) percentiles of those that ran.
pub fn soak(o: &SoakOptions) -> anyhow::Result<Value> {
    pg_reachable(&o.pg)?;
    let cache = tempfile::tempdir()?;
    warm_cache(cache.path())?;
    eprintln!("soak: mock with {} suppliers…", o.suppliers_per_job);
    let mock = MockServer::start(o.suppliers_per_job)?;
    mock.warm_and_measure(0)?;
    let schema = Schema::new(&o.pg)?;
    let work = tempfile::tempdir()?;
    let jobs = jobs_file_with(work.path(), &mock, o.jobs, 50, &format!("every = \"{}s\"", o.every_s))?;
    let log_path = work.path().join("serve.log");
    let mut command = Command::new(bin("nuntiq-host"));
    command
        // serve JOBS_FILE stores the jobs, sealing their inline secrets.
        .env("NUNTIQ_SECRETS_KEY", SEAL_KEY)
        .arg("serve")
        .arg(&jobs)
        .args(["--db", &schema.url(), "--max-concurrent", &o.max_concurrent.to_string()])
        .args(["--log-level", "warn", "--grace", "60s", "--cache-dir"])
        .arg(cache.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?);
    raise_nofile(&mut command);
    eprintln!(
        "soak: {} jobs every {} s for {} s in one serve (--max-concurrent {})…",
        o.jobs,
        o.every_s,
        o.duration.as_secs(),
        o.max_concurrent
    );
    let spawned = Utc::now();
    let child = command.spawn()?;
    let pid = child.id();
    let started = Instant::now();
    let (mut peak_fds, mut peak_threads) = (0, 0);
    while started.elapsed() < o.duration {
        peak_fds = peak_fds.max(open_fds(pid).unwrap_or(0));
        peak_threads = peak_threads.max(proc_status(pid, "Threads:").unwrap_or(0));
        std::thread::sleep(Duration::from_millis(200));
    }
    let ended = Utc::now();
    let hwm_kb = proc_status(pid, "VmHWM:");
    // SAFETY: a plain syscall on our own child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let code = wait_rusage(pid as libc::pid_t, true).map_or(-1, |(code, _)| code);
    // Whole rounds: from the first slot 5 s after the spawn (the start) to
    // the last one whose next slot came before the end (so it was settled).
    let every = chrono::Duration::seconds(o.every_s as i64);
    let step = o.every_s as i64;
    let first = (spawned.timestamp() / step + 1) * step + step;
    let last = ended.timestamp() / step * step - step;
    let rounds = ((last - first) / step + 1).max(0) as usize;
    let window = |t: i64| DateTime::from_timestamp(t, 0).map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let (from, to) = (window(first).unwrap_or_default(), window(last).unwrap_or_default());
    let db = schema.db();
    let by_status = db.rows(&format!(
        "SELECT status, count(*) FROM schedule_slot WHERE slot_at >= '{from}' AND slot_at <= '{to}' GROUP BY status"
    ));
    let count = |s: &str| -> usize {
        by_status
            .iter()
            .filter(|r| r[0].as_deref() == Some(s))
            .filter_map(|r| r[1].as_deref()?.parse::<usize>().ok())
            .sum()
    };
    let recorded: usize = by_status.iter().filter_map(|r| r[1].as_deref()?.parse::<usize>().ok()).sum();
    let ran = count("succeeded") + count("failed") + count("running") + count("abandoned");
    let mut lags: Vec<f64> = db
        .rows(&format!(
            "SELECT slot_at, claimed_at FROM schedule_slot WHERE slot_at >= '{from}' AND slot_at <= '{to}'
               AND status IN ('succeeded', 'failed', 'running', 'abandoned')"
        ))
        .iter()
        .filter_map(|r| Some((at(r[1].as_deref()?)? - at(r[0].as_deref()?)?).as_seconds_f64()))
        .collect();
    lags.sort_by(f64::total_cmp);
    let due = o.jobs * rounds;
    let _ = every;
    let value = json!({
        "jobs": o.jobs,
        "every_s": o.every_s,
        "duration_s": o.duration.as_secs(),
        "max_concurrent": o.max_concurrent,
        "window": [from, to],
        "rounds": rounds,
        "due": due,
        "claimed": ran,
        "succeeded": count("succeeded"),
        "failed": count("failed"),
        "missed": count("missed"),
        "skipped": count("skipped"),
        "unrecorded": due.saturating_sub(recorded),
        "lag_s": {
            "p50": nearest_rank(&lags, 0.50),
            "p95": nearest_rank(&lags, 0.95),
            "p99": nearest_rank(&lags, 0.99),
            "max": lags.last(),
        },
        "peak_rss_mb": hwm_kb.map(|kb| kb as f64 / 1024.0),
        "peak_fds": peak_fds,
        "peak_threads": peak_threads,
        "serve_exit": code,
    });
    if code != 0 {
        eprintln!("soak: serve exited {code}: {}", tail(&log_path, 5));
    }
    Ok(value)
}

pub fn print_soak(v: &Value) {
    println!(
        "\nsoak: {} jobs every {} s for {} s in one serve (--max-concurrent {}), {} whole rounds {} .. {}",
        v["jobs"], v["every_s"], v["duration_s"], v["max_concurrent"], v["rounds"], v["window"][0], v["window"][1]
    );
    println!(
        "due {}  claimed {} (succeeded {}, failed {})  missed {}  skipped {}  without a row {}",
        v["due"], v["claimed"], v["succeeded"], v["failed"], v["missed"], v["skipped"], v["unrecorded"]
    );
    let lag = |k: &str| v["lag_s"][k].as_f64().map_or("-".into(), |x| format!("{x:.2}"));
    println!(
        "lag (slot time → claim, s): p50 {}  p95 {}  p99 {}  max {};  peak RSS {} MB, {} fds, {} threads; exit {}",
        lag("p50"),
        lag("p95"),
        lag("p99"),
        lag("max"),
        v["peak_rss_mb"].as_f64().map_or("-".into(), |x| format!("{x:.0}")),
        v["peak_fds"],
        v["peak_threads"],
        v["serve_exit"]
    );
    let _ = std::io::stdout().flush();
}

// ---------------------------------------------------------------- pg-load

#[derive(Debug, Serialize)]
pub struct EngineRow {
    pub id: String,
    pub store: String,
    pub load: String,
    pub suppliers: usize,
    pub runs: usize,
    pub wall_s_median: f64,
    pub records_per_s: f64,
    pub peak_rss_mb: f64,
    /// The host's own account (envelope usage), medians.
    pub usage: HostUsage,
    /// This row's wall over SQLite's for the same load.
    pub ratio_to_sqlite: Option<f64>,
    pub note: String,
}

/// Runs `command`, checks its envelope fetched `n` (and inserted `n` on a
/// first load), returns the sample and envelope.
fn host_run(command: &mut Command, n: usize, first: bool, what: &str) -> anyhow::Result<(Sample, Value)> {
    let (sample, stdout) = measure(command)?;
    let envelope = last_json(&stdout).unwrap_or_default();
    anyhow::ensure!(
        envelope["fetched"].as_u64() == Some(n as u64)
            && (!first || envelope["inserted"].as_u64() == Some(n as u64)),
        "{what} did not {} {n} suppliers: {stdout}",
        if first { "insert" } else { "fetch" }
    );
    Ok((sample, envelope))
}

/// The host's first load and unchanged re-read into SQLite and into
/// PostgreSQL, alternating in each round (so both see the same background load).
pub fn pg_load(
    mock: &MockServer,
    cache: &Path,
    n: usize,
    runs: usize,
    pg: &str,
) -> anyhow::Result<(Vec<EngineRow>, Value)> {
    pg_reachable(pg)?;
    let runs = runs.max(1);
    let mut samples: [Vec<Sample>; 5] = Default::default();
    let mut envelopes: [Vec<Value>; 5] = Default::default();
    for round in 0..runs {
        eprintln!(
            "pg-load: round {} of {runs}: SQLite, then PostgreSQL, then the plain loader into PostgreSQL…",
            round + 1
        );
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("h.db");
        for (slot, first) in [(0, true), (1, false)] {
            let (s, e) = host_run(&mut host_command(dir.path(), mock, &db, cache, true)?, n, first, "SQLite")?;
            samples[slot].push(s);
            envelopes[slot].push(e);
        }
        drop(dir);
        let dir = tempfile::tempdir()?;
        let schema = Schema::new(pg)?;
        let url = schema.url();
        for (slot, first) in [(2, true), (3, false)] {
            let (s, e) = host_run(
                &mut host_command(dir.path(), mock, Path::new(&url), cache, true)?,
                n,
                first,
                "PostgreSQL",
            )?;
            samples[slot].push(s);
            envelopes[slot].push(e);
        }
        drop(schema);
        let schema = Schema::new(pg)?;
        let (s, stdout) = measure(&mut harness::plain_pg_command(mock, &schema.url()))?;
        let out = last_json(&stdout).unwrap_or_default();
        anyhow::ensure!(
            out["rows"].as_u64() == Some(n as u64),
            "the plain PostgreSQL loader did not write {n} suppliers: {stdout}"
        );
        samples[4].push(s);
        envelopes[4].push(Value::Null);
        drop(schema);
    }
    let unchanged = |slot: usize| -> Vec<u64> {
        envelopes[slot].iter().map(|e| e["unchanged"].as_u64().unwrap_or(0)).collect()
    };
    let row = |slot: usize, id: &str, store: &str, load: &str, note: String| {
        let m = median(&samples[slot]);
        let secs = m.wall.as_secs_f64();
        EngineRow {
            id: id.into(),
            store: store.into(),
            load: load.into(),
            suppliers: n,
            runs,
            wall_s_median: secs,
            records_per_s: n as f64 / secs,
            peak_rss_mb: m.peak_rss_kb as f64 / 1024.0,
            usage: harness::host_usage(&envelopes[slot]),
            ratio_to_sqlite: None,
            note,
        }
    };
    let mut rows = vec![
        row(0, "S1", "SQLite (file)", "first load", "empty store".into()),
        row(1, "S1r", "SQLite (file)", "unchanged re-read", format!("unchanged per run {:?}", unchanged(1))),
        row(2, "G1", "PostgreSQL 127.0.0.1", "first load", "fresh schema".into()),
        row(3, "G1r", "PostgreSQL 127.0.0.1", "unchanged re-read", format!("unchanged per run {:?}", unchanged(3))),
        row(
            4,
            "G2",
            "plain Rust loader → PostgreSQL",
            "first load",
            "tokio-postgres without TLS, the host's table (a row per supplier, its locations a JSON document built with serde_json), unnest() upserts of every row (no change detection), 1000 per transaction, pipelined, batch commits without a WAL flush".into(),
        ),
    ];
    let (sqlite_first, sqlite_again) = (rows[0].wall_s_median, rows[1].wall_s_median);
    rows[2].ratio_to_sqlite = Some(rows[2].wall_s_median / sqlite_first);
    rows[3].ratio_to_sqlite = Some(rows[3].wall_s_median / sqlite_again);
    rows[4].ratio_to_sqlite = Some(rows[4].wall_s_median / sqlite_first);
    rows[0].ratio_to_sqlite = Some(1.0);
    rows[1].ratio_to_sqlite = Some(1.0);
    let over_plain = rows[2].wall_s_median / rows[4].wall_s_median;
    rows[2].note = format!("fresh schema, TLS (sslmode=prefer); {over_plain:.2}× the plain PostgreSQL loader (G2)");
    let value = json!({
        "suppliers": n,
        "runs": runs,
        "page_size": harness::PAGE_SIZE,
        "postgres_version": server_version(pg),
        "postgres_settings": server_settings(pg),
        "rows": rows,
        "pg_over_sqlite_first_load": rows[2].ratio_to_sqlite,
        "pg_over_sqlite_reread": rows[3].ratio_to_sqlite,
        "pg_over_plain_pg_first_load": over_plain,
        "targets": {
            "pg_over_sqlite_first_load_at_most": PG_FIRST_LOAD_OVER_AT_MOST,
            "pg_over_plain_pg_first_load_at_most": PG_FIRST_LOAD_OVER_AT_MOST,
        },
    });
    Ok((rows, value))
}

/// The server settings that weigh most on write speed, as the server reports them.
fn server_settings(pg: &str) -> Value {
    let names = ["fsync", "synchronous_commit", "wal_level", "shared_buffers", "max_connections"];
    let read = std::panic::catch_unwind(|| {
        let db = Db::open(Path::new(pg));
        names
            .iter()
            .map(|n| (n.to_string(), json!(db.scalar::<String>(&format!("SHOW {n}")))))
            .collect::<serde_json::Map<_, _>>()
    });
    read.map_or(Value::Null, Value::Object)
}

fn server_version(pg: &str) -> Option<String> {
    std::panic::catch_unwind(|| Db::open(Path::new(pg)).scalar::<String>("SHOW server_version")).ok()
}

/// Issue #21: a first load on PostgreSQL within this of SQLite's and of the plain loader's.
const PG_FIRST_LOAD_OVER_AT_MOST: f64 = 1.3;

pub fn print_pg_load(rows: &[EngineRow]) {
    let (n, runs) = rows.first().map_or((0, 0), |r| (r.suppliers, r.runs));
    println!(
        "\nthe host's first load and unchanged re-read of {n} suppliers (page size {}), SQLite vs PostgreSQL, \
         median of {runs} (alternating in each round)",
        harness::PAGE_SIZE
    );
    println!("\n| # | store | load | wall (s, median) | records/s | peak RSS (MB) | host store ms | vs SQLite | note |");
    println!("|---|-------|------|-----------------:|----------:|--------------:|--------------:|----------:|------|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.3} | {:.0} | {:.1} | {} | {} | {} |",
            r.id,
            r.store,
            r.load,
            r.wall_s_median,
            r.records_per_s,
            r.peak_rss_mb,
            opt(r.usage.store_ms, 0),
            r.ratio_to_sqlite.map_or("-".into(), |x| format!("{x:.2}×")),
            r.note
        );
    }
    let wall = |id: &str| rows.iter().find(|r| r.id == id).map(|r| r.wall_s_median);
    if let (Some(g1), Some(s1), Some(g2)) = (wall("G1"), wall("S1"), wall("G2")) {
        let verdict = |x: f64| if x <= PG_FIRST_LOAD_OVER_AT_MOST { "met" } else { "NOT met" };
        println!(
            "\nPostgreSQL first load (G1): {:.2}× SQLite's (S1), target ≤ {PG_FIRST_LOAD_OVER_AT_MOST}× — {}; \
             {:.2}× the plain PostgreSQL loader (G2), target ≤ {PG_FIRST_LOAD_OVER_AT_MOST}× — {}",
            g1 / s1,
            verdict(g1 / s1),
            g1 / g2,
            verdict(g1 / g2)
        );
        println!("(`serve` throughput on PostgreSQL: the serve_scale table of `make bench`, or `nuntiq-bench serve-scale`.)");
    }
    let _ = std::io::stdout().flush();
}

/// `nuntiq-bench pg-load` alone: its own mock and compile cache.
pub fn pg_load_alone(n: usize, runs: usize, pg: &str) -> anyhow::Result<(Vec<EngineRow>, Value)> {
    pg_reachable(pg)?;
    let cache = tempfile::tempdir()?;
    warm_cache(cache.path())?;
    eprintln!("pg-load: mock with {n} suppliers…");
    let mock = MockServer::start(n)?;
    mock.warm_and_measure(0)?;
    pg_load(&mock, cache.path(), n, runs, pg)
}
