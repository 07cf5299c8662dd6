//! The wasmtime side: engine and linker set-up, loading and checking a
//! connector component, and running one job in its own store.

use crate::bindings::{Connector, ConnectorPre, context, http, logger, supplier_load, types};
use crate::caps::context::ContextCap;
use crate::caps::delta::{DeltaCap, DeltaView};
use crate::caps::http::{HttpCap, HttpConfig};
use crate::caps::logger::{GuestOutput, LoggerCap};
use crate::caps::supplier::{SupplierCap, SupplierConfig};
use crate::log::LogSink;
use crate::policy::NetworkPolicy;
use crate::settings::Settings;
use crate::store::Store as StateStore;
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::{Component, HasData, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

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
}

impl WasiView for JobState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// delta-state sees its own state, the table and the supplier queue.
struct DeltaData;

impl HasData for DeltaData {
    type Data<'a> = DeltaView<'a>;
}

/// Why a plugin file cannot be run; the CLI exits 2.
#[derive(Debug, thiserror::Error)]
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
    #[error("{path} does not implement world nuntiq:connector/connector@0.1.0: {reason}")]
    WrongWorld { path: String, reason: String },
}

/// Per-process set-up: the engine and the linker with every interface.
pub struct Runtime {
    engine: Engine,
    linker: Linker<JobState>,
}

impl Runtime {
    pub fn new() -> anyhow::Result<Self> {
        let mut config = Config::new();
        // Concurrent component-model features are unused and make boundary calls dearer.
        config.concurrency_support(false);
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("failed to create the wasm engine: {e:#}"))?;

        let mut linker = Linker::<JobState>::new(&engine);
        let mut link = || -> wasmtime::Result<()> {
            wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
            types::add_to_linker::<_, HasSelf<ContextCap>>(&mut linker, |s| &mut s.context)?;
            context::add_to_linker::<_, HasSelf<ContextCap>>(&mut linker, |s| &mut s.context)?;
            logger::add_to_linker::<_, HasSelf<LoggerCap>>(&mut linker, |s| &mut s.logger)?;
            http::add_to_linker::<_, HasSelf<HttpCap>>(&mut linker, |s| &mut s.http)?;
            crate::bindings::delta_state::add_to_linker::<_, DeltaData>(&mut linker, |s| DeltaView {
                cap: &mut s.delta,
                table: &mut s.table,
                queue: &mut s.supplier.queue,
            })?;
            supplier_load::add_to_linker::<_, HasSelf<SupplierCap>>(&mut linker, |s| &mut s.supplier)?;
            Ok(())
        };
        link().map_err(|e| anyhow::anyhow!("failed to link the host interfaces: {e:#}"))?;
        Ok(Self { engine, linker })
    }

    /// Reads, compiles and checks a connector against the world.
    pub fn load(&self, path: &Path) -> Result<ConnectorPre<JobState>, PluginError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| PluginError::Unreadable {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        if wasmparser::Parser::is_core_wasm(&bytes) {
            return Err(PluginError::CoreModule { path: shown });
        }
        if !wasmparser::Parser::is_component(&bytes) {
            return Err(PluginError::NotWasm { path: shown });
        }
        let component = Component::new(&self.engine, &bytes).map_err(|e| PluginError::Invalid {
            path: shown.clone(),
            reason: format!("{e:#}"),
        })?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::WrongWorld {
                path: shown.clone(),
                reason: format!("{e:#}"),
            })?;
        ConnectorPre::new(pre).map_err(|e| PluginError::WrongWorld {
            path: shown,
            reason: format!("{e:#}"),
        })
    }
}

/// Everything a job needs besides the component.
pub struct Job {
    pub settings: Arc<Settings>,
    pub store: StateStore,
    pub log: Arc<LogSink>,
    pub policy: Arc<NetworkPolicy>,
    pub http: HttpConfig,
    pub suppliers: SupplierConfig,
    pub deny_secret_read: bool,
    /// Recorded as the delta rows' `updated_by`.
    pub updated_by: String,
}

/// How a job ended.
#[derive(Debug)]
pub enum Outcome {
    /// The connector's result object.
    Success(Map<String, Value>),
    /// `kind` is machine-readable (`connector_error`, `trap`, `cursor_not_committed`, …).
    Failure { kind: &'static str, message: String },
}

impl Runtime {
    /// Instantiates the connector in a fresh store and calls its `run` export.
    /// Whatever happens, no delta run is left open.
    pub async fn run(&self, pre: &ConnectorPre<JobState>, job: Job) -> anyhow::Result<Outcome> {
        let client = crate::caps::http::build_client(job.policy.clone())?;
        let customer = job.settings.customer_number.clone();
        let wasi = WasiCtxBuilder::new()
            .stdout(GuestOutput::stdout(job.log.clone()))
            .stderr(GuestOutput::stderr(job.log.clone()))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = JobState {
            wasi,
            table: ResourceTable::new(),
            context: ContextCap::new(job.settings.clone(), job.deny_secret_read),
            logger: LoggerCap::new(job.log.clone()),
            http: HttpCap::new(
                client,
                job.policy.clone(),
                job.settings.clone(),
                job.http,
                job.log.clone(),
            ),
            delta: DeltaCap::new(customer.clone(), job.store.clone(), job.updated_by, job.log.clone()),
            supplier: SupplierCap::new(customer, job.store.clone(), job.suppliers),
        };
        let mut store = Store::new(&self.engine, state);

        let returned = match pre.instantiate_async(&mut store).await {
            Ok(connector) => Connector::call_run(&connector, &mut store).await,
            Err(e) => Err(e),
        };
        let log = job.log;
        let delta = &mut store.data_mut().delta;
        let outcome = match returned {
            Ok(Ok(result)) => match serde_json::from_str::<Value>(&result) {
                Ok(Value::Object(object)) => {
                    let open: Vec<String> = delta.open_runs().map(|r| r.key.to_string()).collect();
                    let failed = delta
                        .fail_open_runs("the connector returned without completing its delta run")
                        .await;
                    let abandoned: Vec<String> = delta.abandoned.iter().map(ToString::to_string).collect();
                    if failed.is_empty() && abandoned.is_empty() {
                        Outcome::Success(object)
                    } else {
                        let streams: Vec<String> = open.into_iter().chain(abandoned).collect();
                        Outcome::Failure {
                            kind: "cursor_not_committed",
                            message: format!(
                                "the connector returned success without completing its delta run of {}; \
                                 the run was marked failed and the cursor did not move",
                                streams.join(", ")
                            ),
                        }
                    }
                }
                _ => {
                    delta
                        .fail_open_runs("the connector's result is not a JSON object")
                        .await;
                    Outcome::Failure {
                        kind: "invalid_result",
                        message: "the connector's result is not a JSON object".into(),
                    }
                }
            },
            Ok(Err(message)) => {
                delta.fail_open_runs(&message).await;
                Outcome::Failure {
                    kind: "connector_error",
                    message,
                }
            }
            Err(trap) => {
                let message = describe_trap(&trap);
                log.error(&format!("The connector trapped: {trap:?}"), Some("trap"), None);
                delta.fail_open_runs(&message).await;
                Outcome::Failure { kind: "trap", message }
            }
        };
        Ok(outcome)
    }
}

/// One line for the envelope; the backtrace goes to the log.
fn describe_trap(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::UnreachableCodeReached) => {
            "the connector trapped (wasm `unreachable`, which is how a Rust panic ends); see the log for its message"
                .into()
        }
        Some(trap) => format!("the connector trapped: {trap}"),
        None => format!("the connector trapped: {error}"),
    }
}
