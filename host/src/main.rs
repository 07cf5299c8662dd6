//! `nuntiq-host`: the command line. Parses flags, calls the library, prints
//! the one result envelope on stdout and picks the exit code.

use clap::{Parser, Subcommand};
use nuntiq_host::admin::{self, AdminError, ExportFormat};
use nuntiq_host::job::{JobOptions, envelope_line, run_plugin};
use nuntiq_host::log::{Level, LogFormat};
use nuntiq_host::store::sqlite::StreamFilter;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Runs Nuntiq connectors (wasm32-wasip2 components) in a sandbox.
///
/// Exit codes: 0 success; 1 the connector failed (its error, a trap, a retry
/// budget exhausted, a delta run left open); 2 bad input (settings.json,
/// plugin file, --db, flags, or a config.api_url the network policy refuses).
#[derive(Parser)]
#[command(name = "nuntiq-host", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one job: call the connector's `run` and print its result envelope.
    ///
    /// stdout carries exactly one JSON object: the connector's result with
    /// "success": true, or {"success": false, "error": {"kind", "message"}}.
    /// stderr carries the log.
    RunPlugin(RunPluginArgs),
    /// Delta-state rows (the platform's DeltaStreamState).
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// The supplier store.
    Suppliers {
        #[command(subcommand)]
        command: SuppliersCommand,
    },
}

#[derive(Subcommand)]
enum StateCommand {
    /// Show each stream's status, committed cursor and last run.
    Show {
        #[command(flatten)]
        db: DbArg,
        #[arg(long)]
        customer: Option<String>,
        #[arg(long)]
        connector: Option<String>,
        #[arg(long)]
        stream: Option<String>,
        /// A JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SuppliersCommand {
    /// Print every stored supplier with its locations and addresses, in a stable order.
    Export {
        #[command(flatten)]
        db: DbArg,
        #[arg(long)]
        customer: Option<String>,
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
    },
}

#[derive(clap::Args)]
struct DbArg {
    /// The SQLite database `run-plugin` wrote.
    #[arg(long, default_value = "nuntiq.db", value_name = "PATH")]
    db: PathBuf,
}

#[derive(clap::Args)]
struct RunPluginArgs {
    /// The connector: a wasm32-wasip2 component implementing nuntiq:connector/connector.
    plugin: PathBuf,
    /// The job's settings: customer_number, secrets, config (with api_url), job_params.
    settings: PathBuf,
    /// SQLite database for delta state and suppliers (created if missing).
    #[arg(long, default_value = "nuntiq.db", value_name = "PATH")]
    db: PathBuf,
    /// Set or override a job_params key; VALUE is JSON if it parses, else a string.
    /// Backfill: --param since_override=2024-01-01T00:00:00Z
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Lowest level logged.
    #[arg(long, value_enum, default_value_t = Level::Info)]
    log_level: Level,
    /// Also allow this origin: HOST, HOST:PORT, https://HOST[:PORT] or http://HOST[:PORT].
    /// Needed for plain http and for private or loopback addresses; repeatable.
    #[arg(long = "allow-host", value_name = "HOST[:PORT]")]
    allow_hosts: Vec<String>,
    /// Let connectors reach private, loopback and link-local addresses of allowed hosts.
    #[arg(long)]
    allow_private_networks: bool,
    /// get-secret returns nothing; bearer-secret injection still works.
    #[arg(long)]
    deny_secret_read: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    let args = match cli.command {
        Command::RunPlugin(args) => args,
        Command::State {
            command:
                StateCommand::Show {
                    db,
                    customer,
                    connector,
                    stream,
                    json,
                },
        } => {
            let filter = StreamFilter {
                customer_number: customer,
                connector_name: connector,
                stream_name: stream,
            };
            return admin_exit(admin::state_show(&db.db, &filter, json, &mut stdout));
        }
        Command::Suppliers {
            command: SuppliersCommand::Export { db, customer, format },
        } => {
            return admin_exit(admin::suppliers_export(
                &db.db,
                customer.as_deref(),
                format,
                &mut stdout,
            ));
        }
    };
    let report = {
        run_plugin(JobOptions {
            plugin: args.plugin,
            settings: args.settings,
            db: args.db,
            params: args.params,
            log_format: args.log_format,
            log_level: args.log_level,
            allow_hosts: args.allow_hosts,
            allow_private_networks: args.allow_private_networks,
            deny_secret_read: args.deny_secret_read,
        })
    };
    let _ = stdout.write_all(envelope_line(&report.envelope).as_bytes());
    let _ = stdout.flush();
    ExitCode::from(report.exit_code)
}

/// Admin commands print their error on stderr: 2 for an unusable database, 1 otherwise.
fn admin_exit(result: Result<(), AdminError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `| head` closing the pipe early is not an error.
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nuntiq-host: {e}");
            ExitCode::from(if matches!(e, AdminError::Open(_)) { 2 } else { 1 })
        }
    }
}
