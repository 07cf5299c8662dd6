//! One `run-plugin` job from start to envelope: validate every input before
//! anything is written, run the connector, and say how it ended.

use crate::cache::{CacheOutcome, CompileCache};
use crate::caps::delta::RunIdentity;
use crate::caps::http::HttpConfig;
use crate::caps::supplier::SupplierConfig;
use crate::limits::Limits;
use crate::log::{Level, LogFormat, LogSink, Redactor};
use crate::policy::{AllowedHost, NetworkPolicy};
use crate::runtime::{Job, Outcome, PluginError, Runtime};
use crate::settings::{Settings, SettingsError};
use crate::store::{OpenError, Store};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;

/// The operator's choices for one job (the CLI flags).
#[derive(Debug, Clone)]
pub struct JobOptions {
    pub plugin: PathBuf,
    pub settings: PathBuf,
    pub db: PathBuf,
    pub params: Vec<String>,
    pub log_format: LogFormat,
    pub log_level: Level,
    pub allow_hosts: Vec<String>,
    pub allow_private_networks: bool,
    pub deny_secret_read: bool,
    pub limits: Limits,
    pub http: HttpConfig,
    pub suppliers: SupplierConfig,
    /// How long a stream's lease lasts without a heartbeat.
    pub lease: std::time::Duration,
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
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
}

impl InputError {
    pub fn kind(&self) -> &'static str {
        match self {
            InputError::Settings(_) => "invalid_settings",
            InputError::Plugin(_) => "invalid_plugin",
            InputError::Database(_) => "invalid_database",
            InputError::Arguments(_) => "invalid_arguments",
            InputError::NetworkDenied(_) => "network_denied",
        }
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

/// Runs one job and reports; logs go to stderr.
pub fn run_plugin(options: JobOptions) -> Report {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    runtime.block_on(run(options))
}

async fn run(options: JobOptions) -> Report {
    let prepared = match prepare(&options) {
        Ok(p) => p,
        Err(e) => {
            // Settings may not have parsed, so there may be no secrets to redact:
            // our messages name secrets, never their values.
            let log = LogSink::stderr(options.log_format, options.log_level, Redactor::default());
            let message = e.to_string();
            log.error(&format!("Nothing was run: {message}"), Some("start"), None);
            return Report::failure(e.kind(), message, 2);
        }
    };
    let Prepared {
        settings,
        runtime,
        plugin,
        store,
        policy,
    } = prepared;
    redact_panics(&settings);
    let log = Arc::new(
        LogSink::stderr(
            options.log_format,
            options.log_level,
            Redactor::new(settings.secret_values()),
        )
        .with_connector_budget(options.limits.max_log_lines, options.limits.max_log_bytes),
    );
    let plugin_name = options.plugin.file_name().map_or_else(
        || options.plugin.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    log_compilation(&log, &plugin_name, &plugin, options.cache_dir.as_deref());
    log.info(
        &format!("Running {plugin_name} for customer {}", settings.customer_number),
        Some("start"),
        Some(json!({"plugin": options.plugin, "db": options.db})),
    );
    let job = Job {
        settings: settings.clone(),
        store,
        log: log.clone(),
        policy,
        http: options.http.clone(),
        suppliers: options.suppliers.clone(),
        deny_secret_read: options.deny_secret_read,
        limits: options.limits.clone(),
        identity: RunIdentity {
            updated_by: format!("nuntiq-host:{plugin_name}"),
            plugin_sha256: plugin.sha256.clone(),
            lease: options.lease,
        },
    };
    let redact = |text: &str| log.redactor().redact(text);
    match runtime.run(&plugin.pre, job).await {
        Ok(Outcome::Success(mut result)) => {
            result.insert("success".into(), Value::Bool(true));
            log.info("Run succeeded", Some("done"), None);
            Report {
                envelope: log.redactor().redact_json(Value::Object(result)),
                exit_code: 0,
            }
        }
        Ok(Outcome::Failure { kind, message }) => {
            let message = redact(&message);
            log.error(&format!("Run failed ({kind}): {message}"), Some("done"), None);
            Report::failure(kind, message, 1)
        }
        Err(e) => {
            let message = redact(&format!("{e:#}"));
            log.error(&format!("Run failed (internal): {message}"), Some("done"), None);
            Report::failure("internal", message, 1)
        }
    }
}

struct Prepared {
    settings: Arc<Settings>,
    runtime: Runtime,
    plugin: crate::runtime::Plugin,
    store: Store,
    policy: Arc<NetworkPolicy>,
}

/// Checks every input; the database is opened (and created) last, so bad
/// input writes nothing.
fn prepare(options: &JobOptions) -> Result<Prepared, InputError> {
    let allowed = options
        .allow_hosts
        .iter()
        .map(|h| AllowedHost::parse(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(InputError::Arguments)?;
    let settings = Arc::new(Settings::load(&options.settings, &options.params)?);
    let policy = Arc::new(NetworkPolicy::new(
        &settings.api_url,
        allowed,
        options.allow_private_networks,
    ));
    policy
        .check_url(&settings.api_url)
        .map_err(|d| InputError::NetworkDenied(format!("{}: config.api_url: {d}", options.settings.display())))?;
    let runtime = Runtime::new(&options.limits).map_err(|e| InputError::Arguments(format!("{e:#}")))?;
    let cache = options.cache_dir.clone().map(CompileCache::new);
    let plugin = runtime.load(&options.plugin, cache.as_ref())?;
    let store = Store::open_sqlite(&options.db)?;
    Ok(Prepared {
        settings,
        runtime,
        plugin,
        store,
        policy,
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
        CacheOutcome::Disabled => log.debug(&format!("Compiled {name} in {ms:.0} ms (no compile cache)"), Some("compile"), None),
    }
}

/// `nuntiq-host compile`: compiles a plugin into the cache ahead of time.
pub fn compile(plugin: &std::path::Path, cache_dir: PathBuf) -> Result<String, InputError> {
    let runtime = Runtime::new(&Limits::default()).map_err(|e| InputError::Arguments(format!("{e:#}")))?;
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
        _ => format!("compiled {} in {ms:.0} ms: {}", plugin.display(), entry.display()),
    })
}

/// A host panic must not print a secret either: the hook redacts its message.
fn redact_panics(settings: &Settings) {
    let redactor = Redactor::new(settings.secret_values());
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("nuntiq-host panicked: {}", redactor.redact(&info.to_string()));
    }));
}

/// The envelope as one line of JSON.
pub fn envelope_line(envelope: &Value) -> String {
    let mut line = serde_json::to_string(envelope).unwrap_or_else(|_| "{\"success\":false}".into());
    line.push('\n');
    line
}
