//! `nuntiq-host`: the command line. Parses flags, calls the library, prints
//! the one result envelope on stdout and picks the exit code.

use clap::{Parser, Subcommand};
use nuntiq_host::admin::{self, AdminError, ExportFormat};
use nuntiq_host::cache::CompileCache;
use nuntiq_host::compile::{CompileLimits, parse_compile_memory};
use nuntiq_host::flags::JobFlags;
use nuntiq_host::job::{JobOptions, envelope_line, run_plugin};
use nuntiq_host::limits;
use nuntiq_host::log::{Level, LogFormat};
use nuntiq_host::scaffold::{Cursor, Lang};
use nuntiq_host::store::cursor::DEFAULT_MAX_CURSOR_SKEW;
use nuntiq_host::store::{CursorType, Db, Reset, StreamFilter};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Runs Nuntiq connectors (wasm32-wasip2 components) in a sandbox.
///
/// Exit codes: 0 success; 1 the connector failed (its error, a trap, a retry
/// budget exhausted, a delta run left open); 2 bad input (settings.json,
/// plugin file, --db, flags, or a config.api_url the network policy refuses).
/// `--version`: the host and every contract version it runs.
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (runs connectors of nuntiq:connector {}; new ones build against {})",
        env!("CARGO_PKG_VERSION"),
        nuntiq_host::plugin::Contract::all_runnable().join(", "),
        nuntiq_host::plugin::Contract::CURRENT.version()
    )
});

#[derive(Parser)]
#[command(name = "nuntiq-host", version = VERSION.as_str(), max_term_width = 100)]
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
    #[command(after_long_help = SECURITY_MODEL)]
    RunPlugin(RunPluginArgs),
    /// Run the jobs stored in --db on their cadence, on this host or on many
    /// sharing one PostgreSQL database (each scheduled slot runs once); with
    /// a jobs file, apply it first (the one-machine shortcut).
    #[command(after_long_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// The jobs every serve of a database runs, stored in it: apply a jobs
    /// file, list, show, pause, resume, trigger and delete them. Exit 0 done,
    /// 2 bad input (a jobs file with a mistake: nothing is written; no such
    /// job), 1 the database failed.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
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
    /// Whole stores: copy one into another (SQLite and PostgreSQL, either way).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// What a plugin is and whether this host can run it: world, contract
    /// version, imports and exports, size, SHA-256. Exit 0 when it can run,
    /// 1 when it cannot (the output says why), 2 when the file cannot be read
    /// or a limit refuses it (its structure, or what compiling it takes).
    Inspect {
        plugin: PathBuf,
        /// A JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Where compiled components are cached [default: ~/.cache/nuntiq-host].
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        #[command(flatten)]
        compile_limits: CompileLimitArgs,
    },
    /// Start a connector: a project that builds and tests with only this
    /// binary and its language's toolchain (the SDK and the contract are
    /// written into it), with settings and fixtures to run at once.
    New {
        /// The project's name (lowercase letters, digits, - and _).
        name: String,
        /// Where to create it (the project is DIR/NAME).
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// The connector's language.
        #[arg(long, value_enum, default_value_t = Lang::Rust)]
        lang: Lang,
        /// The kind of cursor it keeps: updated-at timestamps, ascending ids, or a change feed's token.
        #[arg(long, value_enum, default_value_t = Cursor::Timestamp)]
        cursor: Cursor,
        /// Rust: the guest SDK from this directory instead of the copy written into the crate.
        #[arg(long, value_name = "PATH", conflicts_with = "sdk_git")]
        sdk_path: Option<PathBuf>,
        /// Rust: the guest SDK from a git repository holding guests/sdk.
        #[arg(long, value_name = "URL")]
        sdk_git: Option<String>,
        /// With --sdk-git: a tag, branch or commit.
        #[arg(long, value_name = "REV", requires = "sdk_git")]
        sdk_rev: Option<String>,
    },
    /// The contract this host runs (WIT): with --out DIR, writes DIR/connector.wit
    /// and its WASI deps, what componentize-py (-d DIR), jco (--wit DIR) and
    /// wit-bindgen read; without, prints connector.wit.
    Wit {
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// The compiled-component cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Compile a plugin into the compile cache ahead of time (under the
    /// compile limits; exit 2 when it is refused).
    Compile {
        plugin: PathBuf,
        /// [default: ~/.cache/nuntiq-host]
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        #[command(flatten)]
        compile_limits: CompileLimitArgs,
    },
    /// Run history: start and end, status, records, cursor before and after,
    /// error summary, plugin file hash; newest first.
    Runs {
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        streams: StreamArgs,
        /// At most this many rows.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// A JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The slots `serve` claimed or recorded, newest first: how each ended
    /// (succeeded, a failure kind, missed, skipped, lease_expired) or running.
    Slots {
        #[command(flatten)]
        db: DbArg,
        /// Only this job's slots.
        #[arg(long, value_name = "J")]
        job: Option<String>,
        /// Only slots that ended so: succeeded, failed, missed, skipped, or a failure kind.
        #[arg(long, value_name = "O")]
        outcome: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// A JSON array instead of text (each slot with its `result`).
        #[arg(long)]
        json: bool,
    },
    /// Rows connectors set aside (`delta-run.reject`): the raw row, why, how
    /// often and when it was seen; most recent first.
    Rejected {
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        streams: StreamArgs,
        /// At most this many rows.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// A JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Make the stored jobs equal FILE's: prints what it adds, changes and
    /// removes, and records who applied which file when. Each job's plugin is
    /// read (its SHA-256 recorded, and checked against the job's `sha256`
    /// when it names one) and its settings file's content is stored, so
    /// every host runs the same job. Anything wrong: exit 2, nothing written.
    Apply {
        file: PathBuf,
        #[command(flatten)]
        db: DbArg,
        /// Print what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Who applies, for the record [default: $USER@hostname].
        #[arg(long, value_name = "WHO")]
        by: Option<String>,
    },
    /// Every stored job: customer, cadence, next slot, last run and its
    /// result, last success, lag (how late the last run started) and pause.
    List {
        #[command(flatten)]
        db: DbArg,
        /// A JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One job: its stored definition (secrets masked or sealed), pause,
    /// last run and success, recent actions and slots.
    Show {
        name: String,
        #[command(flatten)]
        db: DbArg,
        /// A JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop starting a job's runs (or, with --customer, every job of a
    /// customer's, those applied later too): each slot due meanwhile is
    /// recorded as skipped (paused); a run going finishes.
    Pause(PauseArgs),
    /// Start a paused job's (or customer's) runs again from its next slot.
    Resume(PauseArgs),
    /// One run of NAME now, as a slot of its own, claimed by one serve under
    /// the same leases (after the job's run going, if one is).
    Trigger {
        name: String,
        #[command(flatten)]
        db: DbArg,
        /// Who triggers, for the record [default: $USER@hostname].
        #[arg(long, value_name = "WHO")]
        by: Option<String>,
    },
    /// Remove a job: no new slot starts (a run going finishes; its slots
    /// and run history stay).
    Delete {
        name: String,
        #[command(flatten)]
        db: DbArg,
        /// Who deletes, for the record [default: $USER@hostname].
        #[arg(long, value_name = "WHO")]
        by: Option<String>,
    },
}

#[derive(clap::Args)]
struct PauseArgs {
    /// The job.
    #[arg(required_unless_present = "customer", conflicts_with = "customer")]
    name: Option<String>,
    /// Every job of this customer (customer_number) instead.
    #[arg(long, value_name = "C")]
    customer: Option<String>,
    /// Why (required; recorded).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    db: DbArg,
    /// Who, for the record [default: $USER@hostname].
    #[arg(long, value_name = "WHO")]
    by: Option<String>,
}

#[derive(clap::Args)]
struct StreamArgs {
    #[arg(long)]
    customer: Option<String>,
    #[arg(long)]
    connector: Option<String>,
    #[arg(long)]
    stream: Option<String>,
}

impl StreamArgs {
    fn filter(self) -> StreamFilter {
        StreamFilter {
            customer_number: self.customer,
            connector_name: self.connector,
            stream_name: self.stream,
        }
    }
}

#[derive(Subcommand)]
enum StateCommand {
    /// Show each stream's status, committed cursor, last run and lease.
    Show {
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        streams: StreamArgs,
        /// A JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Set a stream's committed cursor, in any direction; audited as cursor_reset.
    Reset {
        #[command(flatten)]
        db: DbArg,
        /// Needed when more than one customer has this connector and stream.
        #[arg(long)]
        customer: Option<String>,
        #[arg(long)]
        connector: String,
        #[arg(long)]
        stream: String,
        /// The new committed cursor, valid for the stream's cursor type.
        #[arg(long)]
        cursor: String,
        /// Why (required; kept in the audit log).
        #[arg(long)]
        reason: String,
        /// The stream's cursor type: required when it has none yet; otherwise
        /// it changes the type (the connector's next begin must ask for it).
        #[arg(long, value_parser = ["timestamp_utc", "numeric_id", "opaque_token"])]
        cursor_type: Option<String>,
        /// Reset even while a live run holds the stream; that run then cannot complete.
        #[arg(long)]
        force: bool,
        /// How far past now a timestamp cursor may point [default: 1h].
        #[arg(long, value_name = "DURATION", value_parser = limits::parse_duration)]
        max_cursor_skew: Option<Duration>,
    },
    /// The audit log (cursor_advance, cursor_reset), newest first.
    Audit {
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        streams: StreamArgs,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Each entry: the plugin's SHA-256, its size, when it was written, and
    /// whether this build of the host can load it.
    List {
        /// [default: ~/.cache/nuntiq-host]
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Removes entries this build cannot load and, with --older-than, those
    /// written longer ago than that (without it: every entry).
    Prune {
        /// e.g. 7d, 12h
        #[arg(long, value_name = "DURATION", value_parser = limits::parse_duration)]
        older_than: Option<Duration>,
        /// [default: ~/.cache/nuntiq-host]
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
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

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy everything a store holds (delta state, audit log, run history, rejected rows, suppliers with
    /// their locations and addresses, schedule slots) into another store, in one transaction that commits
    /// only when the target's row counts and content digest equal the source's. Stop the jobs that write
    /// the source first; runs that go on beside the copy are not in it. Exit 0 copied, 1 the copy failed
    /// (the target is unchanged), 2 bad input (a store that cannot be opened, a non-empty target).
    Copy {
        /// The store to read: a SQLite file, or postgres://USER@HOST:PORT/DATABASE (libpq's PG* variables and
        /// ~/.pgpass apply).
        #[arg(long, value_name = "PATH|URL", value_parser = parse_db)]
        from: Db,
        /// The store to write: created if a SQLite file does not exist; it must hold nothing unless --force.
        #[arg(long, value_name = "PATH|URL", value_parser = parse_db)]
        to: Db,
        /// Replace whatever the target holds.
        #[arg(long)]
        force: bool,
        /// The summary as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct DbArg {
    /// The store `run-plugin` wrote: a SQLite file, or postgres://USER@HOST:PORT/DATABASE.
    #[arg(long, env = "NUNTIQ_DB", default_value = "nuntiq.db", value_name = "PATH|URL", value_parser = parse_db)]
    db: Db,
}

fn parse_db(db: &str) -> Result<Db, String> {
    Db::parse(db)
}

/// `run-plugin --help`: what a connector can and cannot do.
const SECURITY_MODEL: &str = "\
Security model (the connector is untrusted):
  A connector gets no files, no environment variables, no arguments and no
  sockets. It reaches the outside only through the host's interfaces:
  - HTTP GET to config.api_url's origin over https, plus --allow-host entries.
    Plain http and private, loopback, link-local (cloud metadata), CGNAT,
    unique-local and unspecified addresses need the operator's --allow-host
    (or --allow-private-networks); names are resolved once by the host and the
    connection goes to the checked address; every redirect hop is re-checked.
  - Secrets: by name, as a bearer token the host attaches to config.api_url's
    origin only (others with --bearer-host); get-secret can be switched off with
    --deny-secret-read. Secret values are redacted from logs, the envelope,
    metadata and delta error summaries (secrets under 8 bytes as whole tokens).
  - Delta state of its own connector (config.connector_name) only, at most
    --max-streams streams; suppliers of its own customer number only.
  - Cursors: numeric ids are plain integers, timestamps at most
    --max-cursor-skew past now.

Limits (exceeding one fails the run with that error kind; the delta run is
failed, the cursor does not move, exit code 1):
  --timeout 15m               whole run, host calls included        timeout
  --max-memory 256MiB         linear memory and tables              memory_limit
  --max-stack 512KiB          wasm stack (recursion)                trap
  --max-response-body 64MiB   HTTP bodies a run holds at once       body_too_large
  --max-requests 10000        HTTP requests per run                 request_budget
  (redirects: 5 per request, each hop re-checked)                   too_many_redirects
  --max-queued-suppliers 10000  unsaved suppliers                   batch_too_large
  --max-queued-bytes 32MiB    host memory of unsaved suppliers      batch_too_large
  --max-call-bytes 16MiB      data copied out of one call           memory_limit
  --max-streams 100           streams begun per run                 stream_limit
  --max-rejected 100          rows set aside per run (reject fails) rejected_limit
  The run's budget: whatever the host holds, opens or writes for the run
  (going over stops the run; error.limit names what ran out):      limit
  --max-host-memory 128MiB    host memory held at once: response bodies,
                              wasi:http requests and their tasks, queued and
                              unwritten suppliers, delta runs      host_memory
  --max-begins 1000           delta runs begun per run             begins
  --max-stored-rows 5000000   rows handed to the store per run     stored_rows
  --max-stored-bytes 4GiB     bytes of those rows                  stored_bytes
  --max-connections 16        sockets held at once, http and wasi:http
                              together; further requests wait for one
  (another connector's stream)                                      stream_denied
  (a bearer secret to another origin)                               secret_denied
  (refused host or address)                                         network_denied
  SIGTERM / SIGINT            stop like the deadline                cancelled
  --grace 10s: after the deadline or a signal, the host settles the store
  and fails open runs within this time, then reports. A final commit the
  database did not answer is tried again with backoff for this long too.
  --max-log-lines 50000, --max-log-bytes 32MiB: later log lines the connector
  writes or causes (host warnings about its refused requests, retries and
  rejected rows) are dropped and counted (not a failure); log messages are
  cut at 16KiB.

The plugin file is untrusted too. Before anything is compiled, its structure
is read: at most 128MiB, components and modules nested at most 32 deep, 1000
components, 1000 core modules, and 10000 instances once its nested components
are instantiated. It is then compiled in a process of its own (a cache hit
needs none) under:
  --max-compile-memory 448MiB memory of the compile
  --max-compile-time 2m       its CPU time (twice that on the clock)
A plugin past any of these is refused naming the limit: exit 2,
invalid_plugin, nothing compiled or cached. Under serve, a changed plugin file
that is refused leaves its jobs on the plugin they had (one warning per change).
";

const SERVE_HELP: &str = "\
Without JOBS_FILE, serve runs the jobs stored in --db (nuntiq-host jobs apply)
and sees every change to them (apply, pause, resume, trigger, delete) within
seconds, without a restart. With JOBS_FILE it applies the file first, and
again on SIGHUP.

The jobs file (TOML; paths are relative to it):

  [[job]]
  name = \"acme_eu\"                  # unique: it keys the job's slots
  plugin = \"dist/acme.wasm\"
  settings = \"settings.json\"        # or an inline [job.settings] table
  every = \"15m\"                     # or cron = \"*/15 * * * *\" (UTC)
  allow_hosts = [\"http://127.0.0.1:8080\"]
  timeout = \"5m\"                    # any run-plugin limit, with _ for -
  params = { lookback_days = 3 }
  sha256 = \"…\"                     # optional: the plugin's digest it is pinned to

Each slot (a job at one scheduled moment) is claimed in the database: hosts
sharing it run each slot once, a slot whose host died is taken over once its
lease expires, and a slot is not claimed while the job's previous run goes on.
SIGTERM or SIGINT: no new runs; running ones get --grace, then are stopped
cleanly (cursors untouched). A second signal exits at once.

A plugin is compiled when a job first needs it and again when its file
changes, one compile at a time, under --max-compile-memory and
--max-compile-time (see run-plugin --help). A changed file that is refused
leaves its jobs on the plugin they had: a warning names the file and the
limit once, and the runs go on.
";

/// Where compiled components are kept, for `run-plugin` and `serve`.
#[derive(clap::Args)]
struct CompileCacheArgs {
    /// Compiled components are cached here [default: ~/.cache/nuntiq-host].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile the plugin every time instead of using the cache.
    #[arg(long, conflicts_with = "cache_dir")]
    no_compile_cache: bool,
}

/// What compiling a plugin may cost: the compile runs in a child process
/// under these limits.
#[derive(clap::Args)]
struct CompileLimitArgs {
    /// Memory the compile of a plugin may use, in a process of its own [default: 448MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_compile_memory)]
    max_compile_memory: Option<u64>,
    /// CPU time the compile of a plugin may use; on the clock it may take
    /// twice that [default: 2m].
    #[arg(long, value_name = "DURATION", value_parser = limits::parse_duration)]
    max_compile_time: Option<Duration>,
}

impl CompileLimitArgs {
    fn limits(&self) -> CompileLimits {
        let default = CompileLimits::default();
        CompileLimits {
            max_memory_bytes: self.max_compile_memory.unwrap_or(default.max_memory_bytes),
            max_time: self.max_compile_time.unwrap_or(default.max_time),
        }
    }
}

impl CompileCacheArgs {
    /// The cache directory, or none when the cache is off.
    fn dir(self) -> Option<PathBuf> {
        if self.no_compile_cache {
            None
        } else {
            self.cache_dir.or_else(CompileCache::default_dir)
        }
    }
}

/// Where a job's secret references may read on this host. A job is tenant
/// input: without these bounds it could name the host's own credentials.
#[derive(clap::Args)]
struct SecretSourceArgs {
    /// A secret { env = "VAR" } may read only variables with this prefix; {customer} in it is
    /// the job's customer number (scopes each tenant to its own); repeatable [default: NUNTIQ_SECRET_].
    #[arg(long = "secret-env-prefix", value_name = "PREFIX", value_parser = parse_env_prefix)]
    secret_env_prefixes: Vec<String>,
    /// A secret { file = "PATH" } may read only files under DIR (symbolic links
    /// resolved); {customer} in it is the job's customer number, e.g.
    /// /run/secrets/{customer}; repeatable [default: /run/secrets].
    #[arg(long = "secrets-dir", value_name = "DIR")]
    secrets_dirs: Vec<PathBuf>,
}

impl SecretSourceArgs {
    fn policy(self) -> nuntiq_host::secrets::SecretPolicy {
        nuntiq_host::secrets::SecretPolicy::new(self.secret_env_prefixes, self.secrets_dirs)
    }
}

/// An empty prefix would let a job read every variable of the host.
fn parse_env_prefix(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("an empty prefix would let jobs read every environment variable of this host".into());
    }
    Ok(text.to_owned())
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A jobs file (TOML, one [[job]] table per connector instance) to apply
    /// to --db first, and again on SIGHUP; without it, the jobs stored in
    /// --db (nuntiq-host jobs apply) are run.
    jobs: Option<PathBuf>,
    /// The store: a SQLite file (one host), postgres://USER@HOST:PORT/DATABASE
    /// (one host or many), or the Customer API, nuntiq+https://HOST/api (with --ledger).
    #[arg(long, env = "NUNTIQ_DB", default_value = "nuntiq.db", value_name = "PATH|URL", value_parser = parse_db)]
    db: Db,
    /// With --db nuntiq+https://HOST/api: where slots, leases, run history,
    /// rejected rows and usage are kept (a SQLite file or postgres:// URL;
    /// share one PostgreSQL between hosts). Each job's token: its
    /// api_token_env or api_token_file, else NUNTIQ_API_TOKEN.
    #[arg(long, env = "NUNTIQ_LEDGER", default_value = "nuntiq.db", value_name = "PATH|URL", value_parser = parse_db)]
    ledger: Db,
    /// Serve GET /metrics (Prometheus) and GET /healthz here, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Runs at once in this process.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    max_concurrent: u64,
    /// Runs at once for one customer.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    max_per_customer: u64,
    /// After SIGTERM/SIGINT: how long running jobs may go on before they are stopped.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = limits::parse_duration)]
    grace: Duration,
    /// A claimed slot's lease, renewed every quarter of it; also each run's
    /// stream lease unless its job sets one.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = limits::parse_duration)]
    lease: Duration,
    /// At start, how long to wait (with backoff) for a PostgreSQL database
    /// that does not answer yet, instead of exiting 2; 0 does not wait.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = limits::parse_duration)]
    wait_for_db: Duration,
    /// Connector wasm stack, for every job [default: 512KiB].
    #[arg(long, value_name = "SIZE", value_parser = limits::parse_size)]
    max_stack: Option<usize>,
    #[command(flatten)]
    compile_cache: CompileCacheArgs,
    #[command(flatten)]
    compile_limits: CompileLimitArgs,
    #[command(flatten)]
    secret_sources: SecretSourceArgs,
    /// Log line format on stderr; every line names its job.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Lowest level logged.
    #[arg(long, value_enum, default_value_t = Level::Info)]
    log_level: Level,
    /// Send the run's spans over OTLP/HTTP (protobuf) to URL, e.g.
    /// http://127.0.0.1:4318 (/v1/traces is added to a bare origin). A
    /// collector that is down never fails or slows a run.
    #[arg(long, value_name = "URL", value_parser = nuntiq_host::trace::parse_endpoint)]
    otlp_endpoint: Option<url::Url>,
}

#[derive(clap::Args)]
struct RunPluginArgs {
    /// The connector: a wasm32-wasip2 component implementing nuntiq:connector/connector.
    plugin: PathBuf,
    /// The job's settings: customer_number, secrets, config (with api_url), job_params.
    settings: PathBuf,
    /// The store for delta state and suppliers: a SQLite file (created if
    /// missing) or postgres://USER@HOST:PORT/DATABASE (migrated on first use).
    #[arg(long, env = "NUNTIQ_DB", default_value = "nuntiq.db", value_name = "PATH|URL", value_parser = parse_db)]
    db: Db,
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
    /// Send the run's spans over OTLP/HTTP (protobuf) to URL, e.g.
    /// http://127.0.0.1:4318 (/v1/traces is added to a bare origin). A
    /// collector that is down never fails or slows a run.
    #[arg(long, value_name = "URL", value_parser = nuntiq_host::trace::parse_endpoint)]
    otlp_endpoint: Option<url::Url>,
    #[command(flatten)]
    flags: JobFlags,
    /// Connector wasm stack; deeper recursion traps [default: 512KiB].
    #[arg(long, value_name = "SIZE", value_parser = limits::parse_size)]
    max_stack: Option<usize>,
    #[command(flatten)]
    compile_cache: CompileCacheArgs,
    #[command(flatten)]
    compile_limits: CompileLimitArgs,
    #[command(flatten)]
    secret_sources: SecretSourceArgs,
    /// Offline: answer file:// URLs (config.api_url may be one) from files in
    /// DIR, confined to it; see the README for how paths and queries map to files.
    #[arg(long, value_name = "DIR")]
    fixtures: Option<PathBuf>,
    /// Write every HTTP exchange of the run to a cassette FILE (secrets redacted).
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    record: Option<PathBuf>,
    /// Answer every HTTP request from a cassette FILE, without the network
    /// (no --allow-host needed); the connector's clock starts at the recorded
    /// time, and recorded waits between retries move it on instead of being slept.
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    /// With --replay: sleep the recorded waits between retries, as the recorded run did.
    #[arg(long, requires = "replay")]
    replay_real_time: bool,
    /// Run fully against a throw-away copy of --db: nothing is written; the
    /// envelope says what would have been (counts and would_commit).
    #[arg(long)]
    dry_run: bool,
    /// With --db nuntiq+https://HOST/api: where run history, rejected rows,
    /// usage and leases are kept (a SQLite file or postgres:// URL).
    #[arg(long, env = "NUNTIQ_LEDGER", default_value = "nuntiq.db", value_name = "PATH|URL", value_parser = parse_db)]
    ledger: Db,
}

impl RunPluginArgs {
    fn into_options(self) -> JobOptions {
        let mut options = JobOptions {
            params: self.params,
            log_format: self.log_format,
            log_level: self.log_level,
            fixtures: self.fixtures,
            record: self.record,
            replay: self.replay,
            replay_real_time: self.replay_real_time,
            dry_run: self.dry_run,
            ledger: self.ledger,
            cache_dir: self.compile_cache.dir(),
            compile: self.compile_limits.limits(),
            secret_policy: self.secret_sources.policy(),
            ..JobOptions::new(self.plugin, self.settings, self.db)
        };
        self.flags.apply(&mut options);
        if let Some(stack) = self.max_stack {
            options.limits.max_wasm_stack_bytes = stack;
        }
        options
    }
}

/// `text` with the user-info of every URL in it (`scheme://user:password@`)
/// replaced by `***`.
fn hide_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c == '\'' || c == '"' || c.is_whitespace())
            .unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(user_end) => {
                out.push_str("***");
                rest = &tail[user_end..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

fn main() -> ExitCode {
    // `nuntiq-host __compile`: the hidden subcommand a plugin is compiled in.
    if let Some(code) = nuntiq_host::compile::run_child_if_asked() {
        return ExitCode::from(code);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // Clap quotes a refused value: a URL's password must not reach the terminal.
            let rendered = hide_url_credentials(&e.render().to_string());
            eprint!("{rendered}");
            // run-plugin keeps its promise of one envelope on stdout, even for bad flags.
            if std::env::args().nth(1).as_deref() == Some("run-plugin") {
                let message = rendered
                    .lines()
                    .next()
                    .unwrap_or("invalid arguments")
                    .trim_start_matches("error: ");
                let envelope = serde_json::json!({"success": false, "error": {
                    "kind": "invalid_arguments",
                    "message": format!("{message}; see nuntiq-host run-plugin --help"),
                }});
                print!("{}", envelope_line(&envelope));
            }
            return ExitCode::from(2);
        }
    };
    let mut stdout = std::io::stdout().lock();
    let args = match cli.command {
        Command::RunPlugin(args) => args,
        Command::State {
            command: StateCommand::Show { db, streams, json },
        } => return admin_exit(admin::state_show(&db.db, &streams.filter(), json, &mut stdout)),
        Command::State {
            command:
                StateCommand::Audit {
                    db,
                    streams,
                    limit,
                    json,
                },
        } => return admin_exit(admin::state_audit(&db.db, &streams.filter(), limit, json, &mut stdout)),
        Command::State {
            command:
                StateCommand::Reset {
                    db,
                    customer,
                    connector,
                    stream,
                    cursor,
                    reason,
                    cursor_type,
                    force,
                    max_cursor_skew,
                },
        } => {
            let reset = Reset {
                new_cursor_value: cursor,
                cursor_type: cursor_type.as_deref().and_then(CursorType::parse),
                reason,
                api_user: operator(),
                force,
                max_cursor_skew: max_cursor_skew.unwrap_or(DEFAULT_MAX_CURSOR_SKEW),
            };
            return admin_exit(admin::state_reset(
                &db.db,
                customer,
                connector,
                stream,
                &reset,
                &mut stdout,
            ));
        }
        Command::Inspect {
            plugin,
            json,
            cache_dir,
            compile_limits,
        } => {
            let cache = cache_dir.or_else(CompileCache::default_dir).map(CompileCache::new);
            return match nuntiq_host::inspect::inspect(&plugin, cache.as_ref(), compile_limits.limits()) {
                Ok(found) => {
                    let printed = if json {
                        serde_json::to_writer_pretty(&mut stdout, &found)
                            .map_err(std::io::Error::from)
                            .and_then(|_| writeln!(stdout))
                    } else {
                        nuntiq_host::inspect::print(&found, &mut stdout)
                    };
                    match printed {
                        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                            eprintln!("nuntiq-host: failed to write the output: {e}");
                            ExitCode::from(1)
                        }
                        _ if found.compatible => ExitCode::SUCCESS,
                        _ => ExitCode::from(1),
                    }
                }
                Err(e) => {
                    eprintln!("nuntiq-host: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::New {
            name,
            dir,
            lang,
            cursor,
            sdk_path,
            sdk_git,
            sdk_rev,
        } => {
            use nuntiq_host::scaffold::{NewConnector, SdkSource, new_connector};
            let sdk = match (sdk_path, sdk_git) {
                (Some(path), _) => SdkSource::Path(std::path::absolute(&path).unwrap_or(path)),
                (None, Some(url)) => SdkSource::Git { url, rev: sdk_rev },
                (None, None) => SdkSource::Embedded,
            };
            return match new_connector(&NewConnector {
                name: name.clone(),
                dir,
                lang,
                cursor,
                sdk,
            }) {
                Ok(root) => {
                    let shown = root.display();
                    let steps = match lang {
                        Lang::Rust => format!(
                            "cargo test\n  cargo wasm      # = cargo build --release --target wasm32-wasip2\n  \
                             nuntiq-host run-plugin target/wasm32-wasip2/release/{}.wasm settings.example.json \
                             --fixtures fixtures --db dev.db",
                            name.replace('-', "_")
                        ),
                        Lang::Python => "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt\n  \
                             .venv/bin/python -m pytest\n  .venv/bin/python build.py\n  \
                             nuntiq-host run-plugin connector.wasm settings.example.json --fixtures fixtures --db dev.db"
                            .to_owned(),
                        Lang::Js => "npm install\n  npm test\n  npm run build\n  \
                             nuntiq-host run-plugin connector.wasm settings.example.json --fixtures fixtures --db dev.db"
                            .to_owned(),
                    };
                    println!("Created {shown}. Next:\n  cd {shown}\n  {steps}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("nuntiq-host: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Wit { out: None } => {
            print!("{}", nuntiq_host::scaffold::connector_wit());
            return ExitCode::SUCCESS;
        }
        Command::Wit { out: Some(out) } => {
            return match nuntiq_host::scaffold::write_wit(&out) {
                Ok(files) => {
                    println!(
                        "Wrote {} files of nuntiq:connector@{} to {} (connector.wit and deps/)",
                        files.len(),
                        nuntiq_host::plugin::Contract::CURRENT.version(),
                        out.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("nuntiq-host: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Cache { command } => {
            let (cache_dir, older_than) = match command {
                CacheCommand::List { cache_dir } => (cache_dir, None),
                CacheCommand::Prune { older_than, cache_dir } => (cache_dir, Some(older_than)),
            };
            let Some(dir) = cache_dir.or_else(CompileCache::default_dir) else {
                eprintln!("nuntiq-host: no cache directory is known here; pass --cache-dir");
                return ExitCode::from(2);
            };
            let done = match older_than {
                None => nuntiq_host::cache::list(&dir, &mut stdout),
                Some(older_than) => nuntiq_host::cache::prune(&dir, older_than, &mut stdout),
            };
            return match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("nuntiq-host: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Serve(args) => {
            nuntiq_host::log::init_process(args.log_level);
            if let Err(e) = args.otlp_endpoint.as_ref().map_or(Ok(()), nuntiq_host::trace::export_to) {
                eprintln!("nuntiq-host: {e}");
                return ExitCode::from(2);
            }
            let code = nuntiq_host::serve::serve(nuntiq_host::serve::ServeOptions {
                jobs_file: args.jobs,
                db: args.db,
                ledger: args.ledger,
                metrics_addr: args.metrics_addr,
                max_concurrent: args.max_concurrent as usize,
                max_per_customer: args.max_per_customer as usize,
                grace: args.grace,
                lease: args.lease,
                cache_dir: args.compile_cache.dir(),
                compile: args.compile_limits.limits(),
                secret_policy: args.secret_sources.policy(),
                max_stack: args.max_stack,
                log_format: args.log_format,
                log_level: args.log_level,
                wait_for_db: args.wait_for_db,
            });
            nuntiq_host::trace::flush();
            return ExitCode::from(code);
        }
        Command::Compile {
            plugin,
            cache_dir,
            compile_limits,
        } => {
            let Some(dir) = cache_dir.or_else(CompileCache::default_dir) else {
                eprintln!("nuntiq-host: no cache directory is known here; pass --cache-dir");
                return ExitCode::from(2);
            };
            return match nuntiq_host::job::compile(&plugin, dir, compile_limits.limits()) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("nuntiq-host: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Store {
            command: StoreCommand::Copy { from, to, force, json },
        } => {
            return match admin::copy_store(&from, &to, force, json, &mut stdout) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("nuntiq-host: {e}");
                    ExitCode::from(match e {
                        nuntiq_host::store::copy::CopyError::Refused(_) => 2,
                        nuntiq_host::store::copy::CopyError::Failed(_) => 1,
                    })
                }
            };
        }
        Command::Jobs { command } => return jobs_command(command, &mut stdout),
        Command::Runs {
            db,
            streams,
            limit,
            json,
        } => return admin_exit(admin::runs(&db.db, &streams.filter(), limit, json, &mut stdout)),
        Command::Slots {
            db,
            job,
            outcome,
            limit,
            json,
        } => {
            return admin_exit(admin::slots(
                &db.db,
                job.as_deref(),
                outcome.as_deref(),
                limit,
                json,
                &mut stdout,
            ));
        }
        Command::Rejected {
            db,
            streams,
            limit,
            json,
        } => return admin_exit(admin::rejected(&db.db, &streams.filter(), limit, json, &mut stdout)),
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
    nuntiq_host::log::init_process(args.log_level);
    if let Some(endpoint) = &args.otlp_endpoint
        && let Err(e) = nuntiq_host::trace::export_to(endpoint)
    {
        let envelope = serde_json::json!({"success": false, "error": {"kind": "invalid_arguments", "message": e}});
        let _ = stdout.write_all(envelope_line(&envelope).as_bytes());
        return ExitCode::from(2);
    }
    let report = run_plugin(args.into_options());
    let _ = stdout.write_all(envelope_line(&report.envelope).as_bytes());
    let _ = stdout.flush();
    // The spans still queued go out before the process ends (bounded wait).
    nuntiq_host::trace::flush();
    ExitCode::from(report.exit_code)
}

/// `nuntiq-host jobs …`.
fn jobs_command(command: JobsCommand, out: &mut dyn Write) -> ExitCode {
    use nuntiq_host::jobs_admin::{self as jobs, actor};
    let done = match command {
        JobsCommand::Apply { file, db, dry_run, by } => jobs::apply(&db.db, &file, dry_run, &actor(by), out).map(|_| ()),
        JobsCommand::List { db, json } => jobs::list(&db.db, json, out),
        JobsCommand::Show { name, db, json } => jobs::show(&db.db, &name, json, out),
        JobsCommand::Pause(args) => pause_command(args, true, out),
        JobsCommand::Resume(args) => pause_command(args, false, out),
        JobsCommand::Trigger { name, db, by } => jobs::trigger(&db.db, &name, &actor(by), out),
        JobsCommand::Delete { name, db, by } => jobs::delete(&db.db, &name, &actor(by), out),
    };
    admin_exit(done)
}

/// `jobs pause|resume`, of a job or a customer.
fn pause_command(args: PauseArgs, pause: bool, out: &mut dyn Write) -> Result<(), AdminError> {
    use nuntiq_host::jobs_admin::{Target, actor, pause as set_pause};
    let target = match (args.name, args.customer) {
        (Some(name), _) => Target::Job(name),
        (None, Some(customer)) => Target::Customer(customer),
        (None, None) => return Err(AdminError::Refused("name a job, or --customer C".into())),
    };
    set_pause(&args.db.db, &target, pause, &args.reason, &actor(args.by), out)
}

/// Who runs an admin command, for the audit log: `user@host (nuntiq-host)`.
fn operator() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    format!("{user}@{} (nuntiq-host)", nuntiq_host::store::owner::this_host())
}

/// Admin commands print their error on stderr: 2 for an unusable database, 1 otherwise.
fn admin_exit(result: Result<(), AdminError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `| head` closing the pipe early is not an error.
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nuntiq-host: {e}");
            ExitCode::from(if matches!(e, AdminError::Open(_) | AdminError::Refused(_)) {
                2
            } else {
                1
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hide_url_credentials;

    #[test]
    fn credentials_in_urls_are_hidden() {
        assert_eq!(
            hide_url_credentials("invalid value 'postgres://me:pw@db:5432/x' for '--db'"),
            "invalid value 'postgres://***@db:5432/x' for '--db'"
        );
        assert_eq!(
            hide_url_credentials("nuntiq+http://u:s@127.0.0.1:9/api and https://plain.example/x"),
            "nuntiq+http://***@127.0.0.1:9/api and https://plain.example/x"
        );
        assert_eq!(hide_url_credentials("no url here"), "no url here");
    }
}
