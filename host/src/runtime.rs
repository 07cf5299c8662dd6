//! The wasmtime side: engine and linker set-up, loading and checking a
//! connector component, and running one job in its own store.

use crate::bindings::{v0_1, v0_2, v0_3};
use crate::cache::{CacheOutcome, CompileCache};
use crate::budget::{BudgetLimits, RunBudget};
use crate::caps::RunCtx;
use crate::caps::context::ContextCap;
use crate::caps::delta::{DeltaCap, DeltaConfig, DeltaView, RunIdentity};
use crate::caps::http::{HttpCap, HttpConfig};
use crate::caps::logger::{GuestOutput, LoggerCap};
use crate::caps::supplier::{SupplierCap, SupplierConfig};
use crate::compile::{CompileError, CompileLimits, Compiler, MAX_PLUGIN_BYTES, Structure, StructureError};
use crate::limits::{GuestLimiter, LimitExceeded, Limits, MAX_RESULT_BYTES, Overloaded, Stop};
use crate::caps::wasi_http::{self, OutgoingHooks};
use crate::log::LogSink;
use crate::meter::{Breakdown, Meter, Usage};
use crate::plugin::{Contract, Shape};
use crate::policy::NetworkPolicy;
use crate::settings::Settings;
use crate::store::{FailOutcome, SaveCounts, Store as StateStore, StreamKey};
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::time::timeout_at;
use wasmtime::component::{Component, HasData, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Everything one job's store holds: a state per capability, the resource
/// table, and an empty WASI context (no files, no env, no sockets).
pub struct JobState {
    wasi: WasiCtx,
    table: ResourceTable,
    context: ContextCap,
    logger: LoggerCap,
    http: HttpCap,
    delta: DeltaCap,
    supplier: SupplierCap,
    limiter: GuestLimiter,
    meter: Meter,
    /// wasi:http: its context, and the policy hooks through which every
    /// outgoing request goes (made from `http`, sharing its budget).
    wasi_http: WasiHttpCtx,
    outgoing: OutgoingHooks,
    /// Host memory the run holds for as long as it runs (a replayed cassette).
    _held: Vec<crate::budget::Charge>,
}

impl WasiHttpView for JobState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.wasi_http,
            table: &mut self.table,
            hooks: &mut self.outgoing,
        }
    }
}

impl WasiView for JobState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl JobState {
    fn delta_view(&mut self) -> DeltaView<'_> {
        DeltaView {
            cap: &mut self.delta,
            table: &mut self.table,
            queue: &mut self.supplier.queue,
        }
    }
}

/// delta-state sees its own state, the table and the supplier queue.
struct DeltaData;

impl HasData for DeltaData {
    type Data<'a> = DeltaView<'a>;
}

/// Why a plugin file cannot be run; the CLI exits 2.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error(
        "{path} is a core WebAssembly module, not a component; build it with \
         `cargo build --target wasm32-wasip2` (or `cargo component build`)"
    )]
    CoreModule { path: String },
    #[error("{path} is not a WebAssembly file")]
    NotWasm { path: String },
    #[error("{path} is not a valid component: {reason}")]
    Invalid { path: String, reason: String },
    #[error("{path} cannot run on this host: {reason}")]
    Unlinkable { path: String, reason: String },
    #[error("{path} does not implement world {contract}/connector: {reason}")]
    WrongWorld {
        path: String,
        contract: Contract,
        reason: String,
    },
    /// Past one of the fixed structure limits: refused before compiling.
    #[error("{path} is refused: {reason}")]
    OverLimit { path: String, reason: StructureError },
    /// The compile ran into `--max-compile-memory` or `--max-compile-time`.
    #[error("{path} could not be compiled: {reason}; nothing was cached")]
    CompileLimit { path: String, reason: CompileError },
    /// The file is not the plugin the job is pinned to (its `sha256`, or the
    /// digest `jobs apply` recorded): it was replaced without a new apply.
    #[error(
        "{path} has SHA-256 {found}, not the {expected} the job is pinned to (replaced without a new jobs \
         apply?); nothing was run: put the pinned plugin back, or run jobs apply to record the new one"
    )]
    DigestMismatch { path: String, expected: String, found: String },
    /// The compile process failed for a reason of the host's; the next load tries again.
    #[error("{path} could not be compiled: {reason}")]
    CompileFailed { path: String, reason: String },
}

impl PluginError {
    /// Refused by one of the host's limits (structure or compile): the CLI's
    /// `inspect` exits 2 for these, as for a file it cannot read.
    pub fn is_limit(&self) -> bool {
        matches!(self, PluginError::OverLimit { .. } | PluginError::CompileLimit { .. })
    }

    /// A failure of the host's rather than the plugin's: not remembered, so the
    /// next load of the same file tries again.
    pub fn is_transient(&self) -> bool {
        matches!(self, PluginError::CompileFailed { .. })
    }

    fn of_compile(path: &str, error: CompileError) -> Self {
        let path = path.to_owned();
        match error {
            CompileError::Invalid(reason) => PluginError::Invalid { path, reason },
            CompileError::Failed(reason) => PluginError::CompileFailed { path, reason },
            reason => PluginError::CompileLimit { path, reason },
        }
    }
}

/// Per-process set-up: the engine and the linker with every interface.
pub struct Runtime {
    engine: Engine,
    linker: Linker<JobState>,
    /// One ticker for every run on this engine: the epoch is the engine's, so
    /// a ticker per run would advance it once per run per tick.
    ticker: Arc<EpochTicker>,
    /// Compiles plugins in a child process, with this engine's settings.
    compiler: Compiler,
}

/// How often the epoch advances; a spinning connector is checked this often.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// What the engine's configuration is made from. The runtime and the compile
/// child build their engines from the same settings (the child gets them as
/// JSON), so what the child compiles loads here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    pub epoch_interruption: bool,
    pub max_wasm_stack_bytes: usize,
}

impl EngineSettings {
    pub fn of(limits: &Limits) -> Self {
        Self {
            epoch_interruption: limits.epoch_interruption,
            max_wasm_stack_bytes: limits.max_wasm_stack_bytes,
        }
    }
}

/// The one engine configuration, for the runtime and the compile child alike.
pub fn engine_config(settings: &EngineSettings) -> Config {
    let mut config = Config::new();
    // Concurrent component-model features are unused and make boundary calls dearer.
    config.concurrency_support(false);
    // Epochs stop a connector that spins without calling the host.
    config.epoch_interruption(settings.epoch_interruption);
    config.max_wasm_stack(settings.max_wasm_stack_bytes);
    // Host functions run on the same fiber stack, above the wasm frames.
    config.async_stack_size(settings.max_wasm_stack_bytes + (1 << 20));
    config
}

impl Runtime {
    pub fn new(limits: &Limits, compile: CompileLimits) -> anyhow::Result<Self> {
        let settings = EngineSettings::of(limits);
        let engine = Engine::new(&engine_config(&settings))
            .map_err(|e| anyhow::anyhow!("failed to create the wasm engine: {e:#}"))?;

        let mut linker = Linker::<JobState>::new(&engine);
        let mut link = || -> wasmtime::Result<()> {
            wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
            // wasi:http types and outgoing-handler only (no incoming side).
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
            // The current contract, implemented by the capabilities.
            v0_3::types::add_to_linker::<_, HasSelf<ContextCap>>(&mut linker, |s| &mut s.context)?;
            v0_3::context::add_to_linker::<_, HasSelf<ContextCap>>(&mut linker, |s| &mut s.context)?;
            v0_3::logger::add_to_linker::<_, HasSelf<LoggerCap>>(&mut linker, |s| &mut s.logger)?;
            v0_3::http::add_to_linker::<_, HasSelf<HttpCap>>(&mut linker, |s| &mut s.http)?;
            v0_3::delta_state::add_to_linker::<_, DeltaData>(&mut linker, JobState::delta_view)?;
            v0_3::supplier_load::add_to_linker::<_, HasSelf<SupplierCap>>(&mut linker, |s| &mut s.supplier)?;
            // The frozen 0.2.x and 0.1.0 contracts, forwarded to the same capabilities.
            v0_2::types::add_to_linker::<_, HasSelf<ContextCap>>(&mut linker, |s| &mut s.context)?;
            v0_2::context::add_to_linker::<_, HasSelf<ContextCap>>(&mut linker, |s| &mut s.context)?;
            v0_2::logger::add_to_linker::<_, HasSelf<LoggerCap>>(&mut linker, |s| &mut s.logger)?;
            v0_2::http::add_to_linker::<_, HasSelf<HttpCap>>(&mut linker, |s| &mut s.http)?;
            v0_2::delta_state::add_to_linker::<_, DeltaData>(&mut linker, JobState::delta_view)?;
            v0_2::supplier_load::add_to_linker::<_, HasSelf<SupplierCap>>(&mut linker, |s| &mut s.supplier)?;
            v0_1::types::add_to_linker::<_, HasSelf<ContextCap>>(&mut linker, |s| &mut s.context)?;
            v0_1::context::add_to_linker::<_, HasSelf<ContextCap>>(&mut linker, |s| &mut s.context)?;
            v0_1::logger::add_to_linker::<_, HasSelf<LoggerCap>>(&mut linker, |s| &mut s.logger)?;
            v0_1::http::add_to_linker::<_, HasSelf<HttpCap>>(&mut linker, |s| &mut s.http)?;
            v0_1::delta_state::add_to_linker::<_, DeltaData>(&mut linker, JobState::delta_view)?;
            v0_1::supplier_load::add_to_linker::<_, HasSelf<SupplierCap>>(&mut linker, |s| &mut s.supplier)?;
            Ok(())
        };
        link().map_err(|e| anyhow::anyhow!("failed to link the host interfaces: {e:#}"))?;
        let ticker = Arc::new(EpochTicker::new(engine.clone()));
        Ok(Self {
            engine,
            linker,
            ticker,
            compiler: Compiler::new(settings, compile),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Reads a plugin and checks its structure and what it imports against
    /// what this host links — before compiling, so a plugin that cannot run
    /// costs milliseconds and leaves nothing in the cache — then compiles it
    /// in a child process under the compile limits (or loads it from `cache`)
    /// and checks it against its contract's world.
    pub fn load(&self, path: &Path, cache: Option<&CompileCache>) -> Result<Plugin, PluginError> {
        let shown = path.display().to_string();
        let bytes = read_plugin(path)?;
        let shape = check_shape(&shown, &bytes)?;
        let contract = shape.contract().map_err(|m| PluginError::Unlinkable {
            path: shown.clone(),
            reason: m.to_string(),
        })?;
        let sha256 = hex_sha256(&bytes);
        let started = Instant::now();
        // A cache hit never calls this: only a compile pays for a child process.
        let compile = move || self.compiler.compile(bytes);
        let (component, cached) = match cache {
            Some(cache) => cache.load_or_compile(&self.engine, &sha256, compile),
            None => compile()
                .and_then(|artifact| load_compiled(&self.engine, &artifact))
                .map(|c| (c, CacheOutcome::Disabled)),
        }
        .map_err(|e| PluginError::of_compile(&shown, e))?;
        let load_time = started.elapsed();
        let wrong_world = |e: wasmtime::Error| PluginError::WrongWorld {
            path: shown.clone(),
            contract,
            reason: format!("{e:#}"),
        };
        let pre = self.linker.instantiate_pre(&component).map_err(wrong_world)?;
        let pre = match contract {
            Contract::V0_1 => ConnectorPre::V0_1(v0_1::ConnectorPre::new(pre).map_err(wrong_world)?),
            Contract::V0_2 => ConnectorPre::V0_2(v0_2::ConnectorCorePre::new(pre).map_err(wrong_world)?),
            Contract::V0_3 => ConnectorPre::V0_3(v0_3::ConnectorCorePre::new(pre).map_err(wrong_world)?),
        };
        Ok(Plugin {
            pre,
            contract,
            sha256,
            metadata: shape.metadata,
            cached,
            load_time,
        })
    }
}

/// Loads what this host's compiler wrote (a compile child of this binary)
/// into the engine.
pub fn load_compiled(engine: &Engine, artifact: &[u8]) -> Result<Component, CompileError> {
    // SAFETY: the bytes come straight from the compile child's pipe: this
    // binary's own `precompile_component`, under the same engine settings,
    // never from a file; wasmtime checks its version and configuration.
    Ok(unsafe { Component::deserialize(engine, artifact) }?)
}

/// A plugin file's bytes, refused unread when it is larger than this host
/// reads or not a regular file (whose size cannot be known before reading).
pub fn read_plugin(path: &Path) -> Result<Vec<u8>, PluginError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let shown = path.display().to_string();
    let unreadable = |reason: String| PluginError::Unreadable {
        path: shown.clone(),
        reason,
    };
    // Non-blocking, so a FIFO put in a plugin's place cannot hang the open;
    // reads of a regular file are unaffected.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| unreadable(e.to_string()))?;
    let meta = file.metadata().map_err(|e| unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(unreadable("it is not a regular file".into()));
    }
    if meta.len() > MAX_PLUGIN_BYTES {
        return Err(PluginError::OverLimit {
            path: shown,
            reason: StructureError::TooLarge { size: meta.len() },
        });
    }
    // The size just checked, in one read, however the file grows meanwhile.
    let mut bytes = vec![0; meta.len() as usize];
    (&file)
        .read_exact(&mut bytes)
        .map_err(|e| unreadable(format!("{e} (was it being replaced?)")))?;
    Ok(bytes)
}

/// A component (not a core module, not junk) within the structure limits.
pub fn check_structure(shown: &str, bytes: &[u8]) -> Result<Structure, PluginError> {
    if wasmparser::Parser::is_core_wasm(bytes) {
        return Err(PluginError::CoreModule { path: shown.to_owned() });
    }
    if !wasmparser::Parser::is_component(bytes) {
        return Err(PluginError::NotWasm { path: shown.to_owned() });
    }
    crate::compile::check_structure(bytes).map_err(|reason| match reason {
        StructureError::Malformed(reason) => PluginError::Invalid {
            path: shown.to_owned(),
            reason,
        },
        reason => PluginError::OverLimit {
            path: shown.to_owned(),
            reason,
        },
    })
}

/// A component within the structure limits whose imports this host links.
pub fn check_shape(shown: &str, bytes: &[u8]) -> Result<Shape, PluginError> {
    check_structure(shown, bytes)?;
    let shape = crate::plugin::scan(bytes).map_err(|reason| PluginError::Invalid {
        path: shown.to_owned(),
        reason,
    })?;
    if let Some(first) = shape.mismatches().first() {
        return Err(PluginError::Unlinkable {
            path: shown.to_owned(),
            reason: first.to_string(),
        });
    }
    Ok(shape)
}

/// A connector checked against its contract's world, ready to instantiate.
pub enum ConnectorPre {
    V0_1(v0_1::ConnectorPre<JobState>),
    V0_2(v0_2::ConnectorCorePre<JobState>),
    V0_3(v0_3::ConnectorCorePre<JobState>),
}

impl ConnectorPre {
    /// Instantiates the connector in `store` and calls its `run` export.
    async fn call_run(&self, store: &mut Store<JobState>) -> wasmtime::Result<Result<String, String>> {
        match self {
            ConnectorPre::V0_1(pre) => pre.instantiate_async(&mut *store).await?.call_run(store).await,
            ConnectorPre::V0_2(pre) => pre.instantiate_async(&mut *store).await?.call_run(store).await,
            ConnectorPre::V0_3(pre) => pre.instantiate_async(&mut *store).await?.call_run(store).await,
        }
    }
}

/// A connector checked against the world, ready to instantiate.
pub struct Plugin {
    pub pre: ConnectorPre,
    /// The contract version it was built against.
    pub contract: Contract,
    /// SHA-256 of the file, recorded in run history.
    pub sha256: String,
    /// Its name, version, authors and source, recorded in run history.
    pub metadata: crate::plugin::Metadata,
    /// Whether it came from the compile cache.
    pub cached: CacheOutcome,
    /// Compiling or loading it took this long.
    pub load_time: Duration,
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Everything a job needs besides the component.
pub struct Job {
    pub settings: Arc<Settings>,
    pub store: StateStore,
    pub log: Arc<LogSink>,
    pub policy: Arc<NetworkPolicy>,
    pub http: HttpConfig,
    pub suppliers: SupplierConfig,
    pub delta: DeltaConfig,
    pub deny_secret_read: bool,
    pub limits: Limits,
    /// The run's budget of host resources.
    pub budget: BudgetLimits,
    /// Who the job's delta runs are: `updated_by`, plugin hash, lease.
    pub identity: RunIdentity,
    /// The job's deadline and cancellation.
    pub stop: Arc<Stop>,
    /// Answers that do not come from the network (fixtures, a cassette).
    pub offline: crate::caps::http::Offline,
}

/// What a successful job did.
#[derive(Debug)]
pub struct Succeeded {
    /// The connector's result object.
    pub result: Map<String, Value>,
    /// What the job's supplier writes did.
    pub written: SaveCounts,
    /// Rows its runs set aside.
    pub rejected: u64,
    /// The cursors its runs committed.
    pub committed: Vec<(StreamKey, String)>,
}

/// A job's outcome and what it used.
#[derive(Debug)]
pub struct Ended {
    pub outcome: Outcome,
    pub usage: Usage,
    /// Where the run's thread spent its time.
    pub breakdown: Breakdown,
}

/// How a job ended.
#[derive(Debug)]
pub enum Outcome {
    Success(Succeeded),
    /// `kind` is machine-readable (`connector_error`, `trap`, `cursor_not_committed`, …).
    Failure {
        kind: &'static str,
        message: String,
        /// For kind `limit`: what of the run's budget ran out (`host_memory`, …).
        limit: Option<&'static str>,
    },
}

impl Outcome {
    pub fn failure(kind: &'static str, message: String) -> Self {
        Outcome::Failure {
            kind,
            message,
            limit: None,
        }
    }
}

/// The envelope's own keys: a connector's result may not set them.
pub const ENVELOPE_KEYS: [&str; 10] = [
    "success",
    "trace_id",
    "error",
    "usage",
    "inserted",
    "updated",
    "unchanged",
    "rejected",
    "dry_run",
    "would_commit",
];

impl Runtime {
    /// Instantiates the connector in a fresh store and calls its `run` export.
    /// Whatever happens, no delta run is left open: after a stop (deadline,
    /// signal or a spent budget) the host settles the store and fails what is
    /// open within the grace period.
    pub async fn run(&self, pre: &ConnectorPre, mut job: Job) -> Result<Ended, Overloaded> {
        let ctx = RunCtx::new(job.log.clone(), job.stop.clone(), RunBudget::new(job.budget.clone(), job.stop.clone()));
        let (mut store, panic) = self.build(&mut job, &ctx)?;
        let store_busy_before = job.store.busy();
        // One stop for the whole run: the epoch callback cuts a connector
        // spinning in wasm; the select below cuts one waiting in a host call
        // (retries, slow responses), on a signal or when its budget ran out.
        let _ticker = match job.limits.epoch_interruption {
            true => {
                let stop = ctx.stop.clone();
                store.set_epoch_deadline(1);
                store.epoch_deadline_callback(move |_| match stop.exceeded() {
                    Some(limit) => Err(limit.into()),
                    None => Ok(UpdateDeadline::Continue(1)),
                });
                Some(self.ticker.hold()?)
            }
            false => None,
        };
        let returned = tokio::select! {
            returned = pre.call_run(&mut store) => returned,
            limit = ctx.stop.stopped() => Err(limit.into()),
        };
        store.data_mut().http.cancel_pending();
        // A run its budget or its store stopped failed so, whatever the connector
        // did next (it may return before the select sees the stop).
        let returned = match ctx.stop.exceeded() {
            Some(limit @ (LimitExceeded::Budget(_) | LimitExceeded::Store { .. })) => Err(limit.into()),
            _ => returned,
        };
        // After a stop, the clean-up has the grace period and no more.
        let settle_by = ctx.stop.reason().is_some().then(|| Instant::now() + job.limits.grace);
        let outcome = classify(returned, &mut store, &job, &ctx, settle_by, &panic).await;
        Ok(settle(outcome, &store, &job, &ctx, settle_by, store_busy_before).await)
    }

    /// A fresh store for one run: a state per capability, the resource table,
    /// an empty WASI context, the run's limits and meter.
    fn build(&self, job: &mut Job, ctx: &RunCtx) -> Result<(Store<JobState>, PanicMessage), Overloaded> {
        let client = crate::caps::http::build_client(job.policy.clone())
            .map_err(|e| Overloaded(format!("the run's HTTP client could not start: {e:#}")))?;
        let customer = job.settings.customer_number.clone();
        let stderr = GuestOutput::stderr(job.log.clone());
        let panic = stderr.panic_message();
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(GuestOutput::stdout(job.log.clone()))
            .stderr(stderr)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            // Random bytes are allocated by the host at the size the guest asks for.
            .max_random_size(MAX_RANDOM_BYTES);
        // A replay's connector lives at the recorded time, so its time-derived
        // queries match; the cassette is host memory the run holds.
        let mut held = Vec::new();
        if let Some(replay) = &job.offline.replay {
            let (clock, bytes) = {
                let replay = replay.lock().unwrap_or_else(|p| p.into_inner());
                (replay.clock(), replay.bytes)
            };
            wasi.monotonic_clock(clock.monotonic()).wall_clock(clock);
            // Over budget, the run is stopped before the connector starts.
            held.extend(ctx.budget.hold(crate::budget::Resource::HostMemory, bytes, "the replayed cassette").ok());
        }
        let wasi = wasi.build();
        let http = HttpCap::new(
            client,
            job.policy.clone(),
            job.settings.clone(),
            job.http.clone(),
            std::mem::take(&mut job.offline),
            ctx,
        );
        let mut table = ResourceTable::new();
        table.set_max_capacity(wasi_http::MAX_RESOURCES);
        let state = JobState {
            wasi,
            table,
            context: ContextCap::new(job.settings.clone(), job.deny_secret_read),
            logger: LoggerCap::new(ctx),
            outgoing: http.outgoing(),
            wasi_http: wasi_http::context(),
            http,
            delta: DeltaCap::new(
                customer.clone(),
                job.delta.clone(),
                job.store.clone(),
                job.identity.clone(),
                ctx.clone(),
            ),
            supplier: SupplierCap::new(customer, job.store.clone(), job.suppliers.clone(), ctx.clone()),
            limiter: GuestLimiter::new(&job.limits),
            meter: Meter::new(ctx.counters.clone()),
            _held: held,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.call_hook(|mut cx, hook| {
            cx.data_mut().meter.on(hook);
            Ok(())
        });
        // What one call may copy out of the guest, whatever its strings and lists alias.
        store.set_hostcall_fuel(job.limits.max_call_bytes);
        Ok((store, panic))
    }
}

/// The last Rust panic message the connector printed, if any.
type PanicMessage = Arc<Mutex<Option<String>>>;

/// How the call ended, for the envelope; no delta run is left open.
async fn classify(
    returned: wasmtime::Result<Result<String, String>>,
    store: &mut Store<JobState>,
    job: &Job,
    ctx: &RunCtx,
    settle_by: Option<Instant>,
    panic: &PanicMessage,
) -> Outcome {
    let log = &ctx.log;
    let delta = &mut store.data_mut().delta;
    match returned {
        Ok(Ok(result)) => match parse_result(&result) {
            Ok(object) => {
                let failed = delta
                    .fail_open_runs("the connector returned without completing its delta run")
                    .await;
                let streams: Vec<String> = failed
                    .iter()
                    .map(|(k, _)| k)
                    .chain(&delta.abandoned)
                    .map(ToString::to_string)
                    .collect();
                if streams.is_empty() {
                    Outcome::Success(Succeeded {
                        result: object,
                        written: SaveCounts::default(),
                        rejected: delta.rejected,
                        committed: std::mem::take(&mut delta.committed),
                    })
                } else {
                    Outcome::failure(
                        "cursor_not_committed",
                        format!(
                            "the connector returned success without completing its delta run of {}; \
                             the run was marked failed and the cursor did not move",
                            streams.join(", ")
                        ),
                    )
                }
            }
            Err(problem) => {
                let message = format!("the connector's result {problem}");
                let failed = delta.fail_open_runs(&message).await;
                Outcome::failure("invalid_result", with_commits(message, &failed))
            }
        },
        Ok(Err(message)) => {
            // A connector that gave up because a host limit refused its last call: name the limit.
            let (kind, message) = match ctx.refusals.last() {
                Some(hit) => (hit.kind, passed_on(&hit.message, &message)),
                None => ("connector_error", message),
            };
            delta.fail_open_runs(&message).await;
            Outcome::failure(kind, message)
        }
        Err(trap) => {
            let limit = LimitExceeded::of_trap(&trap, job.limits.max_call_bytes, wasi_http::MAX_RESOURCES);
            let (kind, message) = match &limit {
                Some(limit) => (limit.kind(), limit.to_string()),
                None => ("trap", describe_trap(&trap, panic.lock().unwrap_or_else(|p| p.into_inner()).as_deref())),
            };
            if settle_by.is_none() {
                let (frames, detail) = wasm_backtrace(&trap);
                log.error(
                    &format!("The connector was stopped: {}; wasm backtrace: {frames}", trap.root_cause()),
                    Some("trap"),
                    Some(detail),
                );
            }
            let failed = match settle_by {
                // Let what the store was given finish (it commits nothing after the
                // stop), then fail the open runs, within the grace period.
                Some(by) => match timeout_at(by.into(), async {
                    let _ = job.store.drain().await;
                    delta.fail_open_runs(&message).await
                })
                .await
                {
                    Ok(failed) => failed,
                    Err(_) => {
                        log.error(
                            &format!(
                                "The store did not settle within the grace period ({}); open runs stay \
                                 running until their lease expires or a run on this machine finds this \
                                 process gone",
                                humantime::format_duration(job.limits.grace)
                            ),
                            Some("done"),
                            None,
                        );
                        Vec::new()
                    }
                },
                None => delta.fail_open_runs(&message).await,
            };
            Outcome::Failure {
                kind,
                message: with_commits(message, &failed),
                limit: limit.as_ref().and_then(LimitExceeded::budget_resource),
            }
        }
    }
}

/// The connector's own message after the limit that refused its last call,
/// unless it already says the same (most connectors pass the host's error on).
fn passed_on(limit: &str, connector: &str) -> String {
    if connector.contains(limit) {
        connector.to_owned()
    } else if limit.contains(connector) {
        limit.to_owned()
    } else {
        format!("{limit}; the connector then failed: {connector}")
    }
}

/// Waits for background writes, then reports the outcome with the run's usage.
async fn settle(
    outcome: Outcome,
    store: &Store<JobState>,
    job: &Job,
    ctx: &RunCtx,
    settle_by: Option<Instant>,
    store_busy_before: Duration,
) -> Ended {
    let log = &ctx.log;
    // Background supplier writes finish before the process reports.
    let drained = match settle_by {
        Some(by) => timeout_at(by.into(), job.store.drain())
            .await
            .unwrap_or(Ok(job.store.written())),
        None => job.store.drain().await,
    };
    let outcome = match (outcome, drained) {
        (Outcome::Success(..), Err(e)) => Outcome::failure("store_error", format!("suppliers could not be written: {e}")),
        // Rows the store refused one by one (the Customer API's 400) were set aside too.
        (Outcome::Success(done), Ok(written)) => Outcome::Success(Succeeded {
            rejected: done.rejected + written.refused,
            written,
            ..done
        }),
        (outcome, _) => outcome,
    };
    let dropped = log.dropped();
    if dropped > 0 {
        log.warn(
            &format!(
                "{dropped} log lines the connector wrote or caused were dropped: the run's budget is {} lines \
                 and {} bytes (--max-log-lines, --max-log-bytes)",
                job.limits.max_log_lines, job.limits.max_log_bytes
            ),
            Some("log"),
            Some(serde_json::json!({"dropped": dropped})),
        );
    }
    let data = store.data();
    let written = job.store.written();
    let counters = &ctx.counters;
    let usage = Usage {
        wall_ms: crate::meter::whole_ms(data.meter.wall()),
        cpu_ms: crate::meter::whole_ms(data.meter.cpu()),
        store_ms: crate::meter::whole_ms(job.store.busy().saturating_sub(store_busy_before)),
        peak_memory_bytes: data.limiter.peak_memory_bytes as u64,
        peak_host_memory_bytes: ctx.budget.peak_host_memory(),
        http_requests: counters.http_requests.load(Ordering::Relaxed),
        http_retries: counters.http_retries.load(Ordering::Relaxed),
        http_bytes_in: counters.http_bytes_in.load(Ordering::Relaxed),
        records_written: written.inserted + written.updated,
    };
    let breakdown = data.meter.breakdown();
    // Billing and throttling read it from the run history too.
    if let Err(e) = job.store.record_usage(job.identity.job_id.clone(), usage).await {
        log.warn(
            &format!("Could not record the job's usage in the run history: {e}"),
            Some("usage"),
            None,
        );
    }
    log.debug(
        &format!(
            "Where the time went: {} ms in all; the connector's own work (parsing, mapping) {:.0} ms; \
             HTTP {:.0} ms ({} requests, {} KiB); queueing suppliers {:.0} ms; waiting for the store {:.0} ms; \
             logging {:.0} ms; crossing the boundary {:.0} ms; the store thread worked {} ms",
            usage.wall_ms,
            breakdown.connector_ms,
            breakdown.http_ms,
            usage.http_requests,
            usage.http_bytes_in / 1024,
            breakdown.queue_ms,
            breakdown.store_wait_ms,
            breakdown.log_ms,
            breakdown.boundary_ms,
            usage.store_ms
        ),
        Some("usage"),
        Some(serde_json::json!({"usage": usage, "breakdown": breakdown})),
    );
    Ended {
        outcome,
        usage,
        breakdown,
    }
}

/// Random bytes one WASI call may ask the host for.
const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// The connector's result: a JSON object of at most [`MAX_RESULT_BYTES`];
/// the envelope's own keys are the host's.
fn parse_result(text: &str) -> Result<Map<String, Value>, String> {
    if text.len() > MAX_RESULT_BYTES {
        return Err(format!(
            "is {} bytes; a result is a summary of at most {MAX_RESULT_BYTES} bytes",
            text.len()
        ));
    }
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else {
        return Err("is not a JSON object".into());
    };
    if let Some(key) = ENVELOPE_KEYS.iter().find(|k| object.contains_key(**k)) {
        return Err(format!(
            "sets {key:?}, one of the envelope's own keys ({}), which only the host writes",
            ENVELOPE_KEYS.join(", ")
        ));
    }
    Ok(object)
}

/// A failure message that also says which runs had committed before it: their
/// cursors moved, and the stream and the run history say so too.
fn with_commits(message: String, failed: &[(StreamKey, FailOutcome)]) -> String {
    let committed: Vec<String> = failed
        .iter()
        .filter(|(_, o)| matches!(o, FailOutcome::AlreadyEnded(status) if status == "succeeded"))
        .map(|(k, _)| k.to_string())
        .collect();
    if committed.is_empty() {
        message
    } else {
        format!(
            "{message} (the delta run of {} had already committed its cursor and data before that)",
            committed.join(", ")
        )
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] while any run holds it:
/// one thread per engine, started by the first holder, ending when the last
/// lets go.
struct EpochTicker {
    engine: Engine,
    /// Runs holding the ticker, and whether its thread is running.
    state: Arc<Mutex<(usize, bool)>>,
}

/// A run's hold on the ticker; dropping it lets go.
struct TickerHold {
    state: Arc<Mutex<(usize, bool)>>,
}

impl EpochTicker {
    fn new(engine: Engine) -> Self {
        Self {
            engine,
            state: Arc::default(),
        }
    }

    fn hold(&self) -> Result<TickerHold, Overloaded> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !state.1 {
            let (engine, shared) = (self.engine.clone(), self.state.clone());
            std::thread::Builder::new()
                .name("nuntiq-epoch".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                        let mut state = shared.lock().unwrap_or_else(|p| p.into_inner());
                        if state.0 == 0 {
                            state.1 = false;
                            return;
                        }
                    }
                })
                .map_err(|e| Overloaded(format!("the epoch thread could not start: {e}")))?;
            state.1 = true;
        }
        state.0 += 1;
        Ok(TickerHold {
            state: self.state.clone(),
        })
    }
}

impl Drop for TickerHold {
    fn drop(&mut self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0 -= 1;
    }
}

/// One line for the envelope; the backtrace goes to the log.
fn describe_trap(error: &wasmtime::Error, panic: Option<&str>) -> String {
    match (error.downcast_ref::<wasmtime::Trap>(), panic) {
        (Some(wasmtime::Trap::UnreachableCodeReached), Some(panic)) => format!("the connector panicked: {panic}"),
        (Some(wasmtime::Trap::StackOverflow), _) => {
            "the connector trapped: call stack exhausted (unbounded recursion? the limit is --max-stack)".into()
        }
        (Some(trap), _) => format!("the connector trapped: {trap}"),
        (None, _) => format!("the connector trapped: {}", error.root_cause()),
    }
}

/// The wasm frames of a trap: one line for text logs, a list for JSON logs.
fn wasm_backtrace(error: &wasmtime::Error) -> (String, Value) {
    let Some(trace) = error.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return ("(none)".into(), Value::Null);
    };
    let frames: Vec<String> = trace
        .frames()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = f
                .func_name()
                .map_or_else(|| format!("wasm function {}", f.func_index()), str::to_owned);
            let offset = f.module_offset().map_or_else(String::new, |o| format!(" @ {o:#x}"));
            format!("#{i} {name}{offset}")
        })
        .collect();
    (frames.join(", "), serde_json::json!({ "wasm_backtrace": frames }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_the_connector_passes_on_is_said_once() {
        let limit = "the job's budget of 1 HTTP requests is spent (--max-requests)";
        let passed = format!("fetching page 2 failed: {limit}");
        assert_eq!(passed_on(limit, &passed), passed);
        assert_eq!(passed_on(limit, "budget"), limit, "a message the limit already says adds nothing");
        assert_eq!(
            passed_on(limit, "gave up"),
            format!("{limit}; the connector then failed: gave up")
        );
    }

    #[test]
    fn runs_share_one_epoch_ticker_that_stops_with_the_last() {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let ticker = EpochTicker::new(Engine::new(&config).unwrap());
        let running = || ticker.state.lock().unwrap().1;
        let (a, b) = (ticker.hold().unwrap(), ticker.hold().unwrap());
        assert_eq!(*ticker.state.lock().unwrap(), (2, true), "one thread for both");
        drop(a);
        std::thread::sleep(EPOCH_TICK * 3);
        assert!(running(), "still held");
        drop(b);
        let deadline = Instant::now() + Duration::from_secs(5);
        while running() && Instant::now() < deadline {
            std::thread::sleep(EPOCH_TICK);
        }
        assert!(!running(), "the thread ends with the last hold");
        let _c = ticker.hold().unwrap();
        assert!(running(), "and starts again with the next");
    }
}
