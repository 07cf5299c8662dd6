//! `nuntiq-bench`: contenders that run as their own processes (so wall time
//! and peak RSS are measured the same way for all), and the harness that runs
//! every contender on the same data and prints the table.

mod native;

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
    /// Contender 0: the mapped rows upserted straight into the store.
    StoreOnly {
        #[arg(long)]
        suppliers: usize,
        #[arg(long)]
        db: PathBuf,
    },
    /// Contender 2: the Acme connector as plain Rust, no wasm.
    Native {
        #[arg(long)]
        api_url: String,
        #[arg(long)]
        token: String,
        #[arg(long)]
        since: String,
        #[arg(long, default_value_t = 1000)]
        page_size: u32,
        #[arg(long)]
        db: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let rows = match Cli::parse().command {
        Command::StoreOnly { suppliers, db } => native::store_only(suppliers, &db)?,
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
