//! `nuntiq-bench`: contenders that run as their own processes (so wall time
//! and peak RSS are measured the same way for all), and the harness that runs
//! every contender on the same data and prints the table.

mod api;
mod harness;
mod native;
mod plain;
mod scale;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "nuntiq-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every contender and print the table (what `make bench` does).
    Run {
        #[arg(long, default_value_t = 100_000)]
        suppliers: usize,
        /// Runs per contender; the table shows the median.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Suppliers for the flat-memory run of the host and the plain loader (0 skips it).
        #[arg(long, default_value_t = 1_000_000)]
        large: usize,
        /// The venv's python with requests, tenacity and dlt; without it the Python contenders are skipped.
        #[arg(long)]
        python: Option<PathBuf>,
        #[arg(long, default_value = "bench/results.json")]
        out: PathBuf,
        /// Jobs at once in one `serve` for the concurrency figures (serve_scale); empty skips them.
        #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
        serve_levels: Vec<usize>,
        /// Skip the SQLite-vs-PostgreSQL load (pg_load).
        #[arg(long)]
        no_pg_load: bool,
        /// The PostgreSQL server for serve_scale and pg_load (a fresh schema per measurement).
        #[arg(long, default_value_t = scale::default_pg())]
        pg: String,
    },
    /// Only the concurrency figures: N Acme jobs at once in one `nuntiq-host serve` on PostgreSQL.
    ServeScale {
        #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
        levels: Vec<usize>,
        /// Suppliers every run fetches (the mock's whole data set).
        #[arg(long, default_value_t = 200)]
        suppliers_per_job: usize,
        #[arg(long, default_value_t = 50)]
        page_size: u32,
        /// One series of levels per value: the mock waits this long before every page
        /// (0: runs as short as they go; 2000: runs last long enough that all N are in flight).
        #[arg(long, value_delimiter = ',', default_value = "0,2000")]
        page_delay_ms: Vec<u64>,
        #[arg(long, default_value_t = scale::default_pg())]
        pg: String,
        /// Longest one level may take, serve start to the last run's end.
        #[arg(long, default_value = "600")]
        timeout_s: u64,
        /// Set the serve_scale key in this JSON file (e.g. bench/results.json), keeping its other keys.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The soak: N Acme jobs every few seconds in one `serve` on PostgreSQL for a while;
    /// claimed, missed and skipped slots and the lag percentiles.
    Soak {
        #[arg(long, default_value_t = 1000)]
        jobs: usize,
        #[arg(long, default_value_t = 5)]
        every_s: u64,
        #[arg(long, default_value_t = 60)]
        duration_s: u64,
        #[arg(long, default_value_t = 64)]
        max_concurrent: usize,
        /// Suppliers every run fetches (the mock's whole data set).
        #[arg(long, default_value_t = 50)]
        suppliers_per_job: usize,
        #[arg(long, default_value_t = scale::default_pg())]
        pg: String,
        /// Set the soak key in this JSON file (e.g. bench/results.json), keeping its other keys.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Only the SQLite-vs-PostgreSQL figures: the host's first load and unchanged re-read into each.
    PgLoad {
        #[arg(long, default_value_t = 100_000)]
        suppliers: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, default_value_t = scale::default_pg())]
        pg: String,
        /// Set the pg_load key in this JSON file (e.g. bench/results.json), keeping its other keys.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Delivery to the Customer API: the host against the seed's Python pattern
    /// (1000 per request), into the same Customer API mock.
    ApiDelivery {
        #[arg(long, default_value_t = 100_000)]
        suppliers: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The venv's python with requests and tenacity; without it only the host runs.
        #[arg(long)]
        python: Option<PathBuf>,
        /// Set the api_delivery key in this JSON file (e.g. bench/results.json), keeping its other keys.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// What the harness compares across stores: a digest of every platform column.
    Digest {
        #[arg(long)]
        db: PathBuf,
    },
    /// Contender 0 (diagnostic): the mapped rows upserted straight into the host's store (its floor).
    StoreOnly {
        #[arg(long)]
        suppliers: usize,
        #[arg(long)]
        db: PathBuf,
    },
    /// Contender P: a plain Rust loader of the same rows into its own natural-key tables (no host code).
    Plain {
        #[command(flatten)]
        source: Source,
        /// Fetch suppliers updated after this; its stored cursor when absent.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        db: PathBuf,
    },
    /// Contender G2: the plain Rust loader's rows into PostgreSQL (tokio-postgres, unnest upserts, pipelined).
    PlainPg {
        #[command(flatten)]
        source: Source,
        #[arg(long)]
        since: Option<String>,
        /// postgres://… (a schema of its own via options=-c search_path=…).
        #[arg(long)]
        db: String,
    },
    /// Contender R (a floor): the plain loader's fetching and parsing alone, nothing
    /// written: what any re-read of the window costs before it touches a store.
    PlainRead {
        #[command(flatten)]
        source: Source,
        #[arg(long)]
        since: String,
    },
    /// Contender 2 (diagnostic): the Acme connector as plain Rust on the host's store, no wasm.
    Native {
        #[command(flatten)]
        source: Source,
        #[arg(long)]
        since: String,
        #[arg(long)]
        db: PathBuf,
    },
}

/// Where a single contender reads from: the Acme API, its token and the page size.
#[derive(clap::Args)]
struct Source {
    #[arg(long)]
    api_url: String,
    #[arg(long)]
    token: String,
    #[arg(long, default_value_t = 200)]
    page_size: u32,
}

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let rows = match Cli::parse().command {
        Command::Run {
            suppliers,
            runs,
            large,
            python,
            out,
            serve_levels,
            no_pg_load,
            pg,
        } => {
            return harness::run(harness::Options {
                suppliers,
                runs,
                large,
                python,
                out,
                serve_levels,
                pg_load: !no_pg_load,
                pg,
            });
        }
        Command::ServeScale {
            levels,
            suppliers_per_job,
            page_size,
            page_delay_ms,
            pg,
            timeout_s,
            out,
        } => {
            let (levels, value) = scale::serve_scale(&scale::ServeScaleOptions {
                levels,
                suppliers_per_job,
                page_size,
                page_delays_ms: page_delay_ms,
                pg,
                timeout: std::time::Duration::from_secs(timeout_s),
            })?;
            scale::print_serve_scale(&levels, &value);
            if let Some(out) = out {
                scale::write_key(&out, "serve_scale", value)?;
            }
            return Ok(());
        }
        Command::Soak {
            jobs,
            every_s,
            duration_s,
            max_concurrent,
            suppliers_per_job,
            pg,
            out,
        } => {
            let value = scale::soak(&scale::SoakOptions {
                jobs,
                every_s: every_s.max(1),
                duration: std::time::Duration::from_secs(duration_s),
                max_concurrent,
                suppliers_per_job,
                pg,
            })?;
            scale::print_soak(&value);
            if let Some(out) = out {
                scale::write_key(&out, "soak", value)?;
            }
            return Ok(());
        }
        Command::PgLoad {
            suppliers,
            runs,
            pg,
            out,
        } => {
            let (rows, value) = scale::pg_load_alone(suppliers, runs, &pg)?;
            scale::print_pg_load(&rows);
            if let Some(out) = out {
                scale::write_key(&out, "pg_load", value)?;
            }
            return Ok(());
        }
        Command::ApiDelivery {
            suppliers,
            runs,
            python,
            out,
        } => {
            let value = api::api_delivery(suppliers, runs, python.as_deref())?;
            api::print_api_delivery(&value);
            if let Some(out) = out {
                scale::write_key(&out, "api_delivery", value)?;
            }
            return Ok(());
        }
        Command::Digest { db } => {
            println!("{}", harness::content_digest(&db)?);
            return Ok(());
        }
        Command::StoreOnly { suppliers, db } => {
            let (rows, store_seconds) = native::store_only(suppliers, &db)?;
            println!(
                "{{\"rows\": {rows}, \"seconds\": {:.4}, \"store_seconds\": {store_seconds:.4}}}",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        Command::Plain { source, since, db } => {
            plain::plain(&source.api_url, &source.token, since.as_deref(), source.page_size, &db)?
        }
        Command::PlainPg { source, since, db } => {
            plain::plain_pg(&source.api_url, &source.token, since.as_deref(), source.page_size, &db)?
        }
        Command::PlainRead { source, since } => {
            plain::read_only(&source.api_url, &source.token, &since, source.page_size)?
        }
        Command::Native { source, since, db } => {
            native::native(&source.api_url, &source.token, &since, source.page_size, &db)?
        }
    };
    println!(
        "{{\"rows\": {rows}, \"seconds\": {:.4}}}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
