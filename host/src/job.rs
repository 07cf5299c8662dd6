//! One `run-plugin` job from start to envelope: validate every input before
//! anything is written, run the connector, and say how it ended.

use crate::budget::BudgetLimits;
use crate::cache::{CacheOutcome, CompileCache};
use crate::caps::delta::{DeltaConfig, RunIdentity};
use crate::caps::http::HttpConfig;
use crate::caps::http::Offline;
use crate::caps::offline::{Fixtures, Recorder, Replay};
use crate::caps::supplier::SupplierConfig;
use crate::compile::CompileLimits;
use crate::limits::{Limits, Overloaded, Stop};
use crate::log::{Level, LogFormat, LogSink, MAX_MESSAGE_BYTES, Redactor};
use crate::policy::{AllowedHost, NetworkPolicy};
use crate::runtime::{Job, Outcome, Plugin, PluginError, Runtime, Succeeded};
use crate::secrets::SecretPolicy;
use crate::settings::{Settings, SettingsError};
use crate::store::{Db, OpenError, Store};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The operator's choices for one job (the CLI flags).
#[derive(Debug, Clone)]
pub struct JobOptions {
    pub plugin: PathBuf,
    pub settings: PathBuf,
    pub db: Db,
    pub params: Vec<String>,
    pub log_format: LogFormat,
    pub log_level: Level,
    pub allow_hosts: Vec<String>,
    /// Origins besides config.api_url's that may receive a bearer secret.
    pub bearer_hosts: Vec<String>,
    pub allow_private_networks: bool,
    pub deny_secret_read: bool,
    pub limits: Limits,
    /// The run's budget of host resources (memory, connections, begins, stored rows).
    pub budget: BudgetLimits,
    pub http: HttpConfig,
    pub suppliers: SupplierConfig,
    /// Stream limits; `connector_name` comes from the settings.
    pub delta: DeltaConfig,
    /// How long a stream's lease lasts without a heartbeat.
    pub lease: std::time::Duration,
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// What compiling the plugin may cost (`--max-compile-memory`, `--max-compile-time`).
    pub compile: CompileLimits,
    /// Offline development: where `file://` URLs are answered from.
    pub fixtures: Option<PathBuf>,
    /// Write every HTTP exchange of the run to this cassette.
    pub record: Option<PathBuf>,
    /// Answer every HTTP request from this cassette, without the network.
    pub replay: Option<PathBuf>,
    /// Under `replay`: sleep the recorded waits between retries instead of
    /// moving the connector's clock past them.
    pub replay_real_time: bool,
    /// Run fully against a throw-away copy of the database: nothing is written.
    pub dry_run: bool,
    /// With `--db nuntiq+…`: where the run history, rejected rows, usage and
    /// leases go (a SQLite file or PostgreSQL).
    pub ledger: Db,
    /// With `--db nuntiq+…`: where the Customer API's token comes from.
    pub api_token: ApiTokenSource,
    /// The job's id in the run history (a fresh one when `None`).
    pub job_id: Option<String>,
    /// The plugin's SHA-256 the job is pinned to: a plugin file whose digest
    /// differs is refused (`invalid_plugin`, both digests named) and not run.
    pub plugin_sha256: Option<String>,
    /// Settings given in place (a `serve` jobs file's `[job.settings]`); then
    /// `settings` only names them in messages.
    pub inline_settings: Option<Value>,
    /// A jobs file's `[job.secrets]`, put over the settings' own.
    pub job_secrets: serde_json::Map<String, Value>,
    /// Which environment variables and directories secret references may read.
    pub secret_policy: SecretPolicy,
}

impl JobOptions {
    /// A job with every limit and policy at its default.
    pub fn new(plugin: PathBuf, settings: PathBuf, db: Db) -> Self {
        Self {
            plugin,
            settings,
            db,
            params: Vec::new(),
            log_format: LogFormat::Text,
            log_level: Level::Info,
            allow_hosts: Vec::new(),
            bearer_hosts: Vec::new(),
            allow_private_networks: false,
            deny_secret_read: false,
            limits: Limits::default(),
            budget: BudgetLimits::default(),
            http: HttpConfig::default(),
            suppliers: SupplierConfig::default(),
            delta: DeltaConfig::default(),
            lease: std::time::Duration::from_secs(300),
            cache_dir: CompileCache::default_dir(),
            compile: CompileLimits::default(),
            fixtures: None,
            record: None,
            replay: None,
            replay_real_time: false,
            dry_run: false,
            ledger: Db::Sqlite(PathBuf::from("nuntiq.db")),
            api_token: ApiTokenSource::default(),
            job_id: None,
            inline_settings: None,
            plugin_sha256: None,
            job_secrets: serde_json::Map::new(),
            secret_policy: SecretPolicy::default(),
        }
    }
}

/// Where the Customer API's token comes from: an environment variable or a
/// file, never the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiTokenSource {
    Env(String),
    File(PathBuf),
}

/// The variable the token is read from unless another is named.
pub const DEFAULT_TOKEN_ENV: &str = "NUNTIQ_API_TOKEN";

impl Default for ApiTokenSource {
    fn default() -> Self {
        ApiTokenSource::Env(DEFAULT_TOKEN_ENV.into())
    }
}

impl ApiTokenSource {
    /// The token; `Err` names the variable or file and what to do.
    pub fn read(&self) -> Result<crate::store::nuntiq::client::ApiToken, String> {
        use crate::store::nuntiq::client::ApiToken;
        match self {
            ApiTokenSource::Env(name) => {
                let value = std::env::var(name).map_err(|_| {
                    format!(
                        "the Customer API token: ${name} is not set; export it, name another variable with \
                         --api-token-env, or a file with --api-token-file"
                    )
                })?;
                ApiToken::new(value).map_err(|e| format!("${name}: {e}"))
            }
            ApiTokenSource::File(path) => {
                let value = std::fs::read_to_string(path)
                    .map_err(|e| format!("--api-token-file {}: {e}", path.display()))?;
                ApiToken::new(value).map_err(|e| format!("--api-token-file {}: {e}", path.display()))
            }
        }
    }
}

/// Why a job did not run at all: bad input, exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Database(#[from] OpenError),
    #[error("{0}")]
    Arguments(String),
    #[error("{0}")]
    NetworkDenied(String),
    /// A secret reference did not resolve on this host (its variable or file
    /// is missing, or a sealed value does not open).
    #[error("{0}")]
    SecretUnavailable(String),
    /// The host could not get what the run needs (exit 1: the input is fine).
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
}

impl InputError {
    pub fn kind(&self) -> &'static str {
        match self {
            InputError::Settings(_) => "invalid_settings",
            InputError::Plugin(_) => "invalid_plugin",
            InputError::Database(_) => "invalid_database",
            InputError::Arguments(_) => "invalid_arguments",
            InputError::NetworkDenied(_) => "network_denied",
            InputError::SecretUnavailable(_) => "secret_unavailable",
            InputError::Overloaded(_) => "host_overloaded",
        }
    }

    /// 2 for bad input; 1 when the host, not the input, was short of something.
    pub fn exit_code(&self) -> u8 {
        match self {
            InputError::Overloaded(_) => 1,
            _ => 2,
        }
    }
}

/// What the jobs of one process share: the wasm engine and linker, and each
/// plugin compiled once — again when its file changes (runs already going
/// finish on the one they started with). A changed file that is refused
/// leaves its path on the plugin it had.
pub struct Runner {
    runtime: Runtime,
    cache: Option<CompileCache>,
    plugins: Mutex<HashMap<PathBuf, Known>>,
    /// One load at a time: the runs of a changed plugin compile it once, and
    /// compiles never add up in memory.
    loading: Mutex<()>,
}

/// A plugin path as last looked at.
struct Known {
    stamp: Option<FileStamp>,
    /// The last plugin that loaded from this path.
    good: Option<Arc<Plugin>>,
    /// Why the file at `stamp` was refused, when it was (`good` is then the one before).
    refused: Option<PluginError>,
}

/// What [`Runner::plugin`] gives a run.
pub struct Loaded {
    pub plugin: Arc<Plugin>,
    /// Whether this call compiled or loaded it (else it was reused).
    pub fresh: bool,
    /// The file changed and was refused for this reason; `plugin` is the one
    /// loaded before. Only the first run to find out is told, so the refusal
    /// is logged once per change of the file.
    pub refused: Option<PluginError>,
}

/// When a plugin file last changed, as far as a reload needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            modified: meta.modified().ok(),
            len: meta.len(),
        })
    }
}

impl Runner {
    pub fn new(limits: &Limits, cache_dir: Option<PathBuf>, compile: CompileLimits) -> Result<Self, InputError> {
        Ok(Self {
            runtime: Runtime::new(limits, compile).map_err(|e| InputError::Arguments(format!("{e:#}")))?,
            cache: cache_dir.map(CompileCache::new),
            plugins: Mutex::default(),
            loading: Mutex::new(()),
        })
    }

    /// The plugin at `path`: reused while the file is unchanged, loaded again
    /// when it changed. A changed file that is refused keeps the plugin that
    /// loaded before (an error only when there is none).
    pub fn plugin(&self, path: &Path) -> Result<Loaded, PluginError> {
        let stamp = FileStamp::of(path);
        if let Some(known) = self.known(path, stamp) {
            return known;
        }
        let _one = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        // Another run may have loaded it while this one waited.
        if let Some(known) = self.known(path, stamp) {
            return known;
        }
        let loaded = self.runtime.load(path, self.cache.as_ref());
        let mut plugins = self.plugins.lock().unwrap_or_else(|p| p.into_inner());
        let previous = plugins.get(path).and_then(|k| k.good.clone());
        match loaded {
            Ok(plugin) => {
                let plugin = Arc::new(plugin);
                let known = Known {
                    stamp,
                    good: Some(plugin.clone()),
                    refused: None,
                };
                plugins.insert(path.to_owned(), known);
                Ok(Loaded {
                    plugin,
                    fresh: true,
                    refused: None,
                })
            }
            Err(refused) => {
                if !refused.is_transient() {
                    let known = Known {
                        stamp,
                        good: previous.clone(),
                        refused: Some(refused.clone()),
                    };
                    plugins.insert(path.to_owned(), known);
                }
                match previous {
                    Some(plugin) => Ok(Loaded {
                        plugin,
                        fresh: false,
                        refused: Some(refused),
                    }),
                    None => Err(refused),
                }
            }
        }
    }

    /// What is known of the file at `stamp`, if it was looked at already.
    fn known(&self, path: &Path, stamp: Option<FileStamp>) -> Option<Result<Loaded, PluginError>> {
        let plugins = self.plugins.lock().unwrap_or_else(|p| p.into_inner());
        let known = plugins.get(path).filter(|k| k.stamp == stamp)?;
        match (&known.good, &known.refused) {
            (Some(plugin), _) => Some(Ok(Loaded {
                plugin: plugin.clone(),
                fresh: false,
                refused: None,
            })),
            (None, Some(refused)) => Some(Err(refused.clone())),
            (None, None) => None,
        }
    }

    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache.as_ref().map(CompileCache::dir)
    }
}

/// How the process ends: the envelope for stdout and the exit code.
pub struct Report {
    pub envelope: Value,
    pub exit_code: u8,
}

impl Report {
    fn failure(kind: &str, message: String, exit_code: u8) -> Self {
        Self {
            envelope: json!({"success": false, "error": {"kind": kind, "message": message}}),
            exit_code,
        }
    }
}

/// Runs one job and reports; logs go to stderr. SIGTERM and SIGINT stop it
/// like the deadline does; a second one ends the process at once.
pub fn run_plugin(options: JobOptions) -> Report {
    let stop = Stop::new(options.limits.timeout);
    listen_for_signals(stop.clone());
    let runner = match Runner::new(&options.limits, options.cache_dir.clone(), options.compile) {
        Ok(runner) => runner,
        Err(e) => return Report::failure(e.kind(), e.to_string(), 2),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            let overloaded = Overloaded(format!("the run's async runtime could not start: {e}"));
            return Report::failure("host_overloaded", overloaded.to_string(), 1);
        }
    };
    runtime.block_on(run_job(&runner, &options, stop, |format, level, redactor| {
        let log = LogSink::stderr(format, level, redactor);
        // One run in this process: what libraries report on other threads (the
        // store's, DNS lookups) goes to its log too, redacted with its secrets.
        let _ = tracing::dispatcher::set_global_default(log.dispatch().clone());
        log
    }))
}

/// Watches for SIGTERM and SIGINT on a thread of its own (a connector spinning
/// in wasm never yields to the async runtime, but it checks the stop).
fn listen_for_signals(stop: Arc<Stop>) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("nuntiq-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                let name = if signal == SIGTERM { "SIGTERM" } else { "SIGINT" };
                seen += 1;
                if seen == 1 {
                    stop.cancel(name);
                    continue;
                }
                // A second signal: the operator wants out now.
                let envelope = json!({"success": false, "error": {"kind": "cancelled", "message": format!(
                    "the run was cancelled by {name} a second time and stopped at once, without settling the store; \
                     an open delta run stays running until its lease expires or a run on this machine finds this \
                     process gone"
                )}});
                print!("{}", envelope_line(&envelope));
                std::process::exit(1);
            }
        });
}

/// Runs one job with `runner`'s engine and plugins, and reports how it ended.
/// `make_log` makes the job's log from the operator's format and level and the
/// job's redactor (`LogSink::stderr` for `run-plugin`).
pub async fn run_job(
    runner: &Runner,
    options: &JobOptions,
    stop: Arc<Stop>,
    make_log: impl Fn(LogFormat, Level, Redactor) -> LogSink,
) -> Report {
    let prepared = match prepare(options, runner) {
        Ok(p) => p,
        Err(e) => {
            // Settings may not have parsed, so there may be no secrets to redact:
            // our messages name secrets, never their values.
            let log = make_log(options.log_format, options.log_level, Redactor::default());
            let message = Redactor::default().clean(&e.to_string(), MAX_MESSAGE_BYTES);
            log.error(&format!("Nothing was run: {message}"), Some("start"), None);
            return Report::failure(e.kind(), message, e.exit_code());
        }
    };
    let Prepared {
        settings,
        plugin,
        fresh,
        refused,
        store,
        policy,
        bearer_hosts,
        offline,
        api_token,
    } = prepared;
    let recorder = offline.record.clone();
    // The Customer API's token is redacted like a secret, though the connector never sees it.
    let secrets: Vec<&str> = settings.secret_values().chain(api_token.as_deref()).collect();
    redact_panics(&secrets);
    if let Some(limit) = stop.exceeded() {
        let message = format!("{limit} before the connector started; nothing was run");
        make_log(options.log_format, options.log_level, Redactor::default()).error(&message, Some("start"), None);
        return Report::failure(limit.kind(), message, 1);
    }
    let log = Arc::new(
        make_log(
            options.log_format,
            options.log_level,
            Redactor::new(secrets.iter().copied()),
        )
        .with_connector_budget(options.limits.max_log_lines, options.limits.max_log_bytes),
    );
    log.set_customer(&settings.customer_number);
    // What wasmtime, reqwest and hyper report on the run's thread goes to its
    // log (the runtime is the thread's own: its tasks are polled here).
    let _log_default = tracing::dispatcher::set_default(log.dispatch());
    let plugin_name = options.plugin.file_name().map_or_else(
        || options.plugin.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let job_id = options.job_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let (run_span, trace_id) = log.run_span(&plugin_name, &job_id);
    if fresh {
        log_compilation(&log, &plugin_name, &plugin, runner.cache_dir());
    }
    if let Some(refused) = refused {
        log.warn(
            &format!(
                "The changed plugin file was refused: {refused}. The plugin loaded before it (SHA-256 {}) \
                 keeps running until the file changes again",
                plugin.sha256
            ),
            Some("compile"),
            Some(json!({"plugin": options.plugin, "running_sha256": plugin.sha256})),
        );
    }
    log.info(
        &format!("Running {plugin_name} for customer {}", settings.customer_number),
        Some("start"),
        Some(json!({"plugin": options.plugin, "db": options.db.shown()})),
    );
    let store_seen = store.clone();
    let job = Job {
        settings: settings.clone(),
        store,
        log: log.clone(),
        policy,
        http: HttpConfig {
            bearer_hosts,
            ..options.http.clone()
        },
        suppliers: options.suppliers.clone(),
        delta: DeltaConfig {
            connector_name: settings.connector_name.clone(),
            commit_retry: options.limits.grace,
            ..options.delta.clone()
        },
        deny_secret_read: options.deny_secret_read,
        limits: options.limits.clone(),
        budget: options.budget.clone(),
        identity: RunIdentity {
            updated_by: format!("nuntiq-host:{plugin_name}"),
            plugin_sha256: plugin.sha256.clone(),
            plugin_metadata: (!plugin.metadata.is_empty())
                .then(|| serde_json::to_string(&plugin.metadata).unwrap_or_default()),
            lease: options.lease,
            job_id,
            trace_id: Some(trace_id.clone()),
        },
        stop: stop.clone(),
        offline,
    };
    let redact = |text: &str| log.redactor().clean(text, MAX_ENVELOPE_MESSAGE_BYTES);
    let outcome = tracing::Instrument::instrument(runner.runtime.run(&plugin.pre, job), run_span.clone()).await;
    if let Some(recorder) = &recorder {
        match recorder.save() {
            Ok(n) => log.info(
                &format!("Recorded {n} HTTP exchanges in {}", recorder.path().display()),
                Some("record"),
                None,
            ),
            Err(e) => log.error(&format!("Could not write the cassette: {e}"), Some("record"), None),
        }
    }
    let (outcome, usage) = match outcome {
        Ok(ended) => (Ok(ended.outcome), Some(ended.usage)),
        Err(e) => (Err(e), None),
    };
    let mut report = match outcome {
        Ok(Outcome::Success(done)) => {
            let Succeeded {
                mut result,
                written,
                rejected,
                committed,
            } = done;
            result.insert("inserted".into(), written.inserted.into());
            result.insert("updated".into(), written.updated.into());
            result.insert("unchanged".into(), written.unchanged.into());
            result.insert("rejected".into(), rejected.into());
            if options.dry_run {
                let would: Vec<Value> = committed
                    .iter()
                    .map(|(k, cursor)| json!({"connector_name": k.connector_name, "stream_name": k.stream_name, "cursor": cursor}))
                    .collect();
                result.insert("dry_run".into(), Value::Bool(true));
                result.insert("would_commit".into(), Value::Array(would));
            }
            result.insert("success".into(), Value::Bool(true));
            log.info(
                &format!(
                    "Run succeeded: {} suppliers inserted, {} updated, {} unchanged; {rejected} rows rejected{}",
                    written.inserted,
                    written.updated,
                    written.unchanged,
                    if options.dry_run {
                        format!(" (a dry run: nothing was written to {})", options.db)
                    } else {
                        String::new()
                    }
                ),
                Some("done"),
                None,
            );
            Report {
                envelope: log.redactor().clean_json(Value::Object(result)),
                exit_code: 0,
            }
        }
        Ok(Outcome::Failure { kind, message, limit }) => {
            let message = redact(&message);
            log.error(&format!("Run failed ({kind}): {message}"), Some("done"), None);
            let mut report = Report::failure(kind, message, 1);
            if let Some(limit) = limit {
                report.envelope["error"]["limit"] = limit.into();
            }
            report
        }
        Err(overloaded) => {
            let message = redact(&overloaded.to_string());
            log.error(&format!("Run failed (host_overloaded): {message}"), Some("done"), None);
            Report::failure("host_overloaded", message, 1)
        }
    };
    // A run that failed after its database became unreachable failed for the
    // store's sake, whatever the connector made of the errors it was given.
    if report.exit_code != 0 && store_seen.saw_unavailable() {
        let before = report.envelope["error"]["kind"].as_str().unwrap_or("internal").to_owned();
        let message = report.envelope["error"]["message"].as_str().unwrap_or_default().to_owned();
        log.error(
            &format!("Run failed (store_unavailable): the database became unreachable during the run ({before}: {message})"),
            Some("done"),
            None,
        );
        report.envelope["error"]["kind"] = "store_unavailable".into();
        report.envelope["error"]["message"] =
            format!("the database became unreachable during the run; {before}: {message}").into();
    }
    // What the run used, for billing and throttling: in every envelope.
    if let (Some(usage), Some(envelope)) = (usage, report.envelope.as_object_mut()) {
        envelope.insert("usage".into(), json!(usage));
    }
    // Where to find the run's spans, and its `runs` rows' `trace_id`.
    if let Some(envelope) = report.envelope.as_object_mut() {
        envelope.insert("trace_id".into(), trace_id.into());
    }
    drop(run_span);
    report
}

/// Longest error message in the envelope, in bytes.
const MAX_ENVELOPE_MESSAGE_BYTES: usize = 8 * 1024;

struct Prepared {
    settings: Arc<Settings>,
    plugin: Arc<Plugin>,
    /// Whether the plugin was compiled or loaded for this job (else reused).
    fresh: bool,
    /// The plugin file changed and was refused for this; `plugin` is the one before.
    refused: Option<PluginError>,
    store: Store,
    policy: Arc<NetworkPolicy>,
    bearer_hosts: Vec<AllowedHost>,
    offline: Offline,
    /// The Customer API's token, when that is the store: for the redactor.
    api_token: Option<String>,
}

/// Checks every input; the database is opened (and created) last, so bad
/// input writes nothing.
fn prepare(options: &JobOptions, runner: &Runner) -> Result<Prepared, InputError> {
    let allowed = options
        .allow_hosts
        .iter()
        .map(|h| AllowedHost::parse(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(InputError::Arguments)?;
    let bearer_hosts = options
        .bearer_hosts
        .iter()
        .map(|h| AllowedHost::parse(h).map_err(|e| e.replacen("--allow-host", "--bearer-host", 1)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(InputError::Arguments)?;
    let mut settings = match &options.inline_settings {
        Some(value) => Settings::parse(&options.settings, value.clone(), &options.params)?,
        None => Settings::load(&options.settings, &options.params)?,
    };
    settings.merge_secrets(&options.settings, &options.job_secrets)?;
    settings
        .resolve_secrets(&options.secret_policy)
        .map_err(InputError::SecretUnavailable)?;
    let settings = Arc::new(settings);
    let policy = Arc::new(network_policy(options, &settings, allowed)?);
    let offline = offline_sources(options, &settings)?;
    let Loaded { plugin, fresh, refused } = runner.plugin(&options.plugin)?;
    if let Some(expected) = &options.plugin_sha256
        && plugin.sha256 != *expected
    {
        return Err(InputError::Plugin(crate::runtime::PluginError::DigestMismatch {
            path: options.plugin.display().to_string(),
            expected: expected.clone(),
            found: plugin.sha256.clone(),
        }));
    }
    let mut api_token = None;
    let store = match (&options.db, options.dry_run) {
        (Db::Sqlite(path), true) => Store::open_sqlite_copy(path).map_err(overloaded_or)?,
        (Db::Nuntiq(_), true) => {
            return Err(InputError::Arguments(format!(
                "--dry-run works on a SQLite file (it runs against a throw-away copy); {} is the Customer API, \
                 which has no copy to run against: run against a SQLite store with --fixtures or --replay instead",
                options.db
            )));
        }
        (Db::Nuntiq(api), false) => {
            let token = options.api_token.read().map_err(InputError::Arguments)?;
            api_token = Some(token.expose().to_owned());
            Store::open_api(api, &options.ledger, token).map_err(overloaded_or)?
        }
        (Db::Postgres(_), true) => {
            return Err(InputError::Arguments(format!(
                "--dry-run works on a SQLite file (it runs against a throw-away copy); for {}, \
                 point --db at a copy made with CREATE DATABASE … TEMPLATE …",
                options.db
            )));
        }
        (db, false) => Store::open(db).map_err(overloaded_or)?,
    };
    Ok(Prepared {
        settings,
        plugin,
        fresh,
        refused,
        store,
        policy,
        bearer_hosts,
        offline,
        api_token,
    })
}

/// The run's network policy, once `config.api_url` is checked against it: a
/// URL the policy refuses would fail every run, so it is bad input (`serve`
/// checks each job's at start too).
pub fn network_policy(
    options: &JobOptions,
    settings: &Settings,
    allowed: Vec<AllowedHost>,
) -> Result<NetworkPolicy, InputError> {
    // A replay never reaches the network, so it needs no network flags.
    let policy = if options.replay.is_some() {
        NetworkPolicy::replaying()
    } else {
        NetworkPolicy::new(&settings.api_url, allowed, options.allow_private_networks)
    };
    if settings.api_url.scheme() != "file" && options.replay.is_none() {
        policy
            .check_url(&settings.api_url)
            .map_err(|d| InputError::NetworkDenied(format!("{}: config.api_url: {d}", options.settings.display())))?;
    }
    Ok(policy)
}

/// Checks a job's network flags and `config.api_url` against them without
/// running it.
pub fn check_network(options: &JobOptions, settings: &Settings) -> Result<(), InputError> {
    let allowed = options
        .allow_hosts
        .iter()
        .map(|h| AllowedHost::parse(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(InputError::Arguments)?;
    network_policy(options, settings, allowed).map(|_| ())
}

/// A database that could not be opened because the host ran out of
/// descriptors is the host's shortage, not bad input.
fn overloaded_or(e: OpenError) -> InputError {
    if crate::limits::descriptors_exhausted() {
        InputError::Overloaded(Overloaded(format!("{e}")))
    } else {
        InputError::Database(e)
    }
}

/// The fixtures and the cassette to replay, checked before anything runs.
fn offline_sources(options: &JobOptions, settings: &Settings) -> Result<Offline, InputError> {
    if options.record.is_some() && options.replay.is_some() {
        return Err(InputError::Arguments(
            "--record and --replay exclude each other: record from the API, then replay the cassette".into(),
        ));
    }
    if settings.api_url.scheme() == "file" && options.fixtures.is_none() && options.replay.is_none() {
        return Err(InputError::Arguments(format!(
            "{}: config.api_url {} is a file:// URL; pass --fixtures DIR to answer it from fixture files",
            options.settings.display(),
            settings.api_url
        )));
    }
    Ok(Offline {
        fixtures: options
            .fixtures
            .as_deref()
            .map(Fixtures::open)
            .transpose()
            .map_err(InputError::Arguments)?,
        replay: options
            .replay
            .as_deref()
            .map(|path| Replay::load(path, options.replay_real_time))
            .transpose()
            .map_err(InputError::Arguments)?
            .map(|replay| Arc::new(std::sync::Mutex::new(replay))),
        record: options
            .record
            .clone()
            .map(|path| Recorder::create(path, std::time::SystemTime::now()))
            .transpose()
            .map_err(InputError::Arguments)?
            .map(Arc::new),
    })
}

/// Says where the compiled component came from.
fn log_compilation(log: &LogSink, name: &str, plugin: &crate::runtime::Plugin, cache_dir: Option<&std::path::Path>) {
    let ms = plugin.load_time.as_secs_f64() * 1000.0;
    let dir = cache_dir.map_or_else(String::new, |d| d.display().to_string());
    match &plugin.cached {
        CacheOutcome::Hit => log.debug(&format!("Loaded {name} from the compile cache in {ms:.1} ms"), Some("compile"), None),
        CacheOutcome::Compiled { stored: true } => {
            log.info(&format!("Compiled {name} in {ms:.0} ms; cached in {dir}"), Some("compile"), None)
        }
        CacheOutcome::Compiled { stored: false } => log.warn(
            &format!("Compiled {name} in {ms:.0} ms but could not write the compile cache in {dir}; check that the directory is writable, or pass --cache-dir"),
            Some("compile"),
            None,
        ),
        CacheOutcome::Replaced(why) => log.warn(
            &format!("The compile cache entry for {name} was unusable: {why}; recompiled it in {ms:.0} ms"),
            Some("compile"),
            None,
        ),
        CacheOutcome::Refused(why) => log.warn(
            &format!("Compiled {name} in {ms:.0} ms without the compile cache: {why}"),
            Some("compile"),
            None,
        ),
        CacheOutcome::Disabled => log.debug(&format!("Compiled {name} in {ms:.0} ms (no compile cache)"), Some("compile"), None),
    }
}

/// `nuntiq-host compile`: compiles a plugin into the cache ahead of time.
pub fn compile(plugin: &std::path::Path, cache_dir: PathBuf, limits: CompileLimits) -> Result<String, InputError> {
    let runtime = Runtime::new(&Limits::default(), limits).map_err(|e| InputError::Arguments(format!("{e:#}")))?;
    let cache = CompileCache::new(cache_dir);
    let loaded = runtime.load(plugin, Some(&cache))?;
    let ms = loaded.load_time.as_secs_f64() * 1000.0;
    let entry = cache.entry_path(runtime.engine(), &loaded.sha256);
    Ok(match loaded.cached {
        CacheOutcome::Hit => format!("{} is already compiled: {}", plugin.display(), entry.display()),
        CacheOutcome::Compiled { stored: false } => {
            return Err(InputError::Arguments(format!(
                "compiled {} but could not write {}; check that the directory is writable",
                plugin.display(),
                entry.display()
            )));
        }
        CacheOutcome::Refused(why) => {
            return Err(InputError::Arguments(format!(
                "compiled {} but did not cache it: {why}",
                plugin.display()
            )));
        }
        _ => format!("compiled {} in {ms:.0} ms: {}", plugin.display(), entry.display()),
    })
}

/// A host panic must not print a secret either: the hook redacts its message
/// with the secrets of every job this process has run.
fn redact_panics(values: &[&str]) {
    static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static HOOK: std::sync::Once = std::sync::Once::new();
    {
        let mut secrets = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
        for &value in values {
            if !secrets.iter().any(|s| s == value) {
                secrets.push(value.to_owned());
            }
        }
    }
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| match SECRETS.try_lock() {
            Ok(secrets) => {
                let redactor = Redactor::new(secrets.iter().map(String::as_str));
                eprintln!(
                    "nuntiq-host panicked: {}",
                    redactor.clean(&info.to_string(), MAX_MESSAGE_BYTES)
                );
            }
            // Never print what could not be redacted.
            Err(_) => eprintln!("nuntiq-host panicked (message withheld: the secrets were busy)"),
        }));
    });
}

/// The envelope as one line of JSON.
pub fn envelope_line(envelope: &Value) -> String {
    let mut line = serde_json::to_string(envelope).unwrap_or_else(|_| "{\"success\":false}".into());
    line.push('\n');
    line
}
