//! What the sandbox limits cost on the honest path: the Acme connector against
//! the mock API, alternating runs with the default limits and with none
//! (no epoch interruption, no memory limiter, no log budget), same process.
//!
//! `make build && cargo run --release -p nuntiq-host --example limits_cost [suppliers] [rounds]`

use nuntiq_host::job::{JobOptions, run_plugin};
use nuntiq_host::limits::Limits;
use nuntiq_host::log::Level;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    // A plugin is compiled in a child process of this binary.
    if let Some(code) = nuntiq_host::compile::run_child_if_asked() {
        std::process::exit(code.into());
    }
    let mut args = std::env::args().skip(1);
    let suppliers: usize = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let rounds: usize = args.next().map_or(Ok(7), |a| a.parse())?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut mock = Command::new(root.join("target/release/acme-mock"))
        .args(["serve", "--suppliers", &suppliers.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(mock.stdout.take().unwrap()).read_line(&mut line)?;
    let url = line.trim().trim_start_matches("listening on ").to_owned();
    let dir = tempfile::tempdir()?;
    let settings = dir.path().join("settings.json");
    std::fs::write(
        &settings,
        serde_json::json!({
            "customer_number": "10000001",
            "secrets": {"acme_token": "test-bearer-token-here"},
            "config": {"connector_name": "acme_eu", "api_url": format!("{url}/v2"), "page_size": 1000},
            "job_params": {"since_override": "2000-01-01T00:00:00Z"}
        })
        .to_string(),
    )?;

    let run = |limits: Limits, round: usize| -> anyhow::Result<Duration> {
        let db = dir.path().join(format!("{}-{round}.db", limits.epoch_interruption));
        let started = Instant::now();
        let report = run_plugin(JobOptions {
            log_level: Level::Warn,
            allow_hosts: vec![url.clone()],
            limits,
            cache_dir: Some(root.join("target/limits-cost-cache")),
            ..JobOptions::new(
                root.join("dist/acme.wasm"),
                settings.clone(),
                nuntiq_host::store::Db::Sqlite(db),
            )
        });
        anyhow::ensure!(report.exit_code == 0, "run failed: {}", report.envelope);
        Ok(started.elapsed())
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        with.push(run(Limits::default(), round)?);
        without.push(run(Limits::unenforced(), round)?);
    }
    let _ = mock.kill();
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut with), median(&mut without));
    println!(
        "acme run, {suppliers} suppliers, median of {rounds}: with limits {a:.3?}, without {b:.3?}, ratio {:.3}",
        a.as_secs_f64() / b.as_secs_f64()
    );
    Ok(())
}
