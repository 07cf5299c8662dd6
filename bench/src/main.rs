//! `nuntiq-bench`: contenders that run as their own processes (so wall time
//! and peak RSS are measured the same way for all), and the harness that runs
//! every contender on the same data and prints the table.

mod harness;
mod native;
mod plain;

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
        #[arg(long)]
        api_url: String,
        #[arg(long)]
        token: String,
        /// Fetch suppliers updated after this; its stored cursor when absent.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 200)]
        page_size: u32,
        #[arg(long)]
        db: PathBuf,
    },
    /// Contender 2 (diagnostic): the Acme connector as plain Rust on the host's store, no wasm.
    Native {
        #[arg(long)]
        api_url: String,
        #[arg(long)]
        token: String,
        #[arg(long)]
        since: String,
        #[arg(long, default_value_t = 200)]
        page_size: u32,
        #[arg(long)]
        db: PathBuf,
    },
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
        } => {
            return harness::run(harness::Options {
                suppliers,
                runs,
                large,
                python,
                out,
            });
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
        Command::Plain {
            api_url,
            token,
            since,
            page_size,
            db,
        } => plain::plain(&api_url, &token, since.as_deref(), page_size, &db)?,
        Command::Native {
            api_url,
            token,
            since,
            page_size,
            db,
        } => native::native(&api_url, &token, &since, page_size, &db)?,
    };
    println!(
        "{{\"rows\": {rows}, \"seconds\": {:.4}}}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
