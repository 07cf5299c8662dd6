//! Delivery to the Nuntiq Customer API: the host (`--db nuntiq+http://…/api`,
//! its batches pipelined behind the connector) against the seed's Python
//! pattern posting 1000 suppliers a request, both reading the same Acme mock
//! and writing to the same Customer API mock, which is reset between runs. The
//! mock's own CPU time per run is reported, to show it is not the bottleneck.

use crate::harness::{MockServer, PAGE_SIZE, SINCE, TOKEN, bin, measure, root};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const API_KEY: &str = "bench-api-key-3c9e";
const CUSTOMER: &str = "10000001";

/// A running `nuntiq-api-mock`, killed on drop.
struct ApiMock {
    child: Child,
    url: String,
}

impl ApiMock {
    fn start() -> anyhow::Result<Self> {
        let mut child = Command::new(bin("nuntiq-api-mock"))
            .args(["serve", "--token", &format!("{API_KEY}:{CUSTOMER}")])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
        let url = line.trim().trim_start_matches("listening on ").to_owned();
        anyhow::ensure!(url.starts_with("http://"), "nuntiq-api-mock did not start: {line:?}");
        Ok(Self { child, url })
    }

    fn reset(&self) -> anyhow::Result<()> {
        ureq::post(format!("{}/_mock/reset", self.url)).send_json(Value::Null)?;
        Ok(())
    }

    /// Suppliers the mock accepted, from its request log (small: one record a
    /// request), so the harness never holds the table: a forked child inherits
    /// its parent's peak RSS, which would blur the next contender's figure.
    fn accepted(&self) -> anyhow::Result<u64> {
        let requests: Value = ureq::get(format!("{}/_mock/requests", self.url))
            .call()?
            .body_mut()
            .read_json()?;
        Ok(requests
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["op"] == "supplier" && r["status"] == 200)
            .filter_map(|r| r["items"].as_u64())
            .sum())
    }

    /// Every supplier of the table, counted without keeping them.
    fn stored(&self) -> anyhow::Result<usize> {
        let body = ureq::get(format!("{}/_mock/suppliers?customer={CUSTOMER}", self.url))
            .call()?
            .body_mut()
            .with_config()
            .limit(1 << 32)
            .read_to_vec()?;
        Ok(serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&body)?.len())
    }

    /// The mock process's CPU time so far (user + system), from /proc.
    fn cpu(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf reads a constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Some(Duration::from_millis(ticks * 1000 / hz))
    }
}

impl Drop for ApiMock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One contender's runs: wall times, peak RSS and the mock's CPU per run.
fn contender(
    name: &str,
    n: usize,
    runs: usize,
    api: &ApiMock,
    mut command: impl FnMut(usize) -> anyhow::Result<Command>,
) -> anyhow::Result<Value> {
    let (mut walls, mut rss, mut mock_cpu) = (Vec::new(), 0u64, Vec::new());
    for i in 0..runs {
        api.reset()?;
        let before = api.cpu();
        let (sample, _) = measure(&mut command(i)?)?;
        let accepted = api.accepted()?;
        anyhow::ensure!(accepted >= n as u64, "{name} delivered {accepted} of {n} suppliers");
        walls.push(sample.wall.as_secs_f64());
        rss = rss.max(sample.peak_rss_kb);
        if let (Some(b), Some(a)) = (before, api.cpu()) {
            mock_cpu.push((a - b).as_secs_f64());
        }
    }
    let stored = api.stored()?;
    anyhow::ensure!(stored == n, "{name}: the API holds {stored} suppliers, not {n}");
    let wall = crate::harness::median_f64(walls.clone()).unwrap_or(f64::NAN);
    Ok(json!({
        "name": name,
        "suppliers": n,
        "runs": runs,
        "wall_s_median": wall,
        "wall_s": walls,
        "records_per_s": n as f64 / wall,
        "peak_rss_mb": rss as f64 / 1024.0,
        "mock_cpu_s_median": crate::harness::median_f64(mock_cpu),
    }))
}

/// Both contenders over `n` suppliers; the Python one only with `python`.
pub fn api_delivery(n: usize, runs: usize, python: Option<&Path>) -> anyhow::Result<Value> {
    let source = MockServer::start(n)?;
    let api = ApiMock::start()?;
    let dir = tempfile::tempdir()?;
    let settings = dir.path().join("settings.json");
    std::fs::write(
        &settings,
        json!({
            "customer_number": CUSTOMER,
            "secrets": {"acme_token": TOKEN},
            "config": {"connector_name": "acme_eu", "api_url": source.api_url(), "page_size": PAGE_SIZE},
            "job_params": {}
        })
        .to_string(),
    )?;
    // Compiled once before timing: a run's peak RSS is the run's, not the compiler's.
    let cache = dir.path().join("cache");
    crate::scale::warm_cache(&cache)?;
    let host = contender("nuntiq-host → Customer API", n, runs, &api, |i| {
        let mut c = Command::new(bin("nuntiq-host"));
        c.arg("run-plugin")
            .arg(root().join("dist/acme.wasm"))
            .arg(&settings)
            .args(["--db", &format!("nuntiq+{}/api", api.url), "--ledger"])
            .arg(dir.path().join(format!("ledger-{i}.db")))
            .args(["--allow-host", &source.url, "--log-level", "warn", "--cache-dir"])
            .arg(&cache)
            .args(["--param", &format!("since_override={SINCE}")])
            .env("NUNTIQ_API_TOKEN", API_KEY);
        Ok(c)
    })?;
    let mut result = json!({ "host": host });
    if let Some(python) = python {
        let seed = contender("seed Python pattern → Customer API", n, runs, &api, |_| {
            let mut c = Command::new(python);
            c.arg(root().join("bench/python/seed_api_delivery.py"))
                .args(["--api-url", &source.api_url(), "--token", TOKEN])
                .args(["--nuntiq-url", &format!("{}/api", api.url), "--nuntiq-key", API_KEY])
                .args(["--page-size", &PAGE_SIZE.to_string(), "--since", SINCE]);
            Ok(c)
        })?;
        let ratio = seed["wall_s_median"].as_f64().unwrap_or(f64::NAN) / host["wall_s_median"].as_f64().unwrap_or(f64::NAN);
        result["python_seed"] = seed;
        result["python_over_host"] = json!(ratio);
    }
    Ok(result)
}

pub fn print_api_delivery(value: &Value) {
    println!("\nDelivery to the Customer API (mock reset before every run; medians)");
    println!("{:<40} {:>10} {:>12} {:>10} {:>12}", "contender", "wall s", "records/s", "RSS MB", "mock CPU s");
    for key in ["host", "python_seed"] {
        let row = &value[key];
        if row.is_null() {
            continue;
        }
        println!(
            "{:<40} {:>10.3} {:>12.0} {:>10.1} {:>12}",
            row["name"].as_str().unwrap_or(key),
            row["wall_s_median"].as_f64().unwrap_or(f64::NAN),
            row["records_per_s"].as_f64().unwrap_or(f64::NAN),
            row["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
            row["mock_cpu_s_median"]
                .as_f64()
                .map_or("-".into(), |s| format!("{s:.2}"))
        );
    }
    if let Some(ratio) = value["python_over_host"].as_f64() {
        println!("Python pattern / host wall time: {ratio:.2}x");
    }
}
