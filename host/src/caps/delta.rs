//! `delta-state`: the run lifecycle (begin → complete | fail) over the store,
//! with the platform's status and monotonicity rules. The host keeps track of
//! every run a connector opens so that none is left `running` when the job ends.

use super::supplier::SupplierQueue;
use crate::bindings::delta_state::{self, CursorType as WitCursorType, DeltaError, RunStatus as WitRunStatus};
use crate::limits::LimitHit;
use crate::log::LogSink;
use crate::store::{Completion, CursorType, RunOwner, RunStatus, Store, StoreError, StreamKey, StreamState};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;
use wasmtime::component::{Resource, ResourceTable};

/// Longest connector or stream name accepted.
const MAX_NAME_BYTES: usize = 200;
/// Largest metadata object accepted, as JSON text.
const MAX_METADATA_BYTES: usize = 64 * 1024;

/// The guest's handle to one run: an index into [`DeltaCap::runs`].
pub struct DeltaRunHandle {
    id: u64,
}

/// One run as the host tracks it.
pub struct DeltaRun {
    pub key: StreamKey,
    owner: RunOwner,
    cursor_type: CursorType,
    lower_bound: Option<String>,
    new_cursor: Option<String>,
    records_processed: Option<u64>,
    metadata: Option<serde_json::Value>,
    /// Begun and neither completed nor failed.
    pub open: bool,
}

/// Who this job's runs are, for leases and run history.
#[derive(Debug, Clone)]
pub struct RunIdentity {
    /// Written to the rows' `updated_by`.
    pub updated_by: String,
    pub plugin_sha256: String,
    /// How long a lease lasts without a heartbeat; heartbeats come every quarter of it.
    pub lease: Duration,
}

pub struct DeltaCap {
    customer_number: String,
    store: Store,
    identity: RunIdentity,
    log: Arc<LogSink>,
    runs: BTreeMap<u64, DeltaRun>,
    next_id: u64,
    /// Runs the host had to fail because the connector let go of them.
    pub abandoned: Vec<StreamKey>,
    /// Set when the store refused a begin or complete over a lease.
    pub refused: Option<LimitHit>,
    heartbeat: Option<Heartbeat>,
}

impl DeltaCap {
    pub fn new(customer_number: String, store: Store, identity: RunIdentity, log: Arc<LogSink>) -> Self {
        Self {
            customer_number,
            store,
            identity,
            log,
            runs: BTreeMap::new(),
            next_id: 0,
            abandoned: Vec::new(),
            refused: None,
            heartbeat: None,
        }
    }

    /// The open runs the heartbeat renews.
    fn leased(&mut self) -> Arc<Mutex<Vec<(StreamKey, RunOwner)>>> {
        let (store, log, lease) = (self.store.clone(), self.log.clone(), self.identity.lease);
        self.heartbeat
            .get_or_insert_with(|| Heartbeat::start(store, log, lease))
            .runs
            .clone()
    }

    fn release(&mut self, run_id: &str) {
        if let Some(hb) = &self.heartbeat {
            hb.runs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(_, o)| o.run_id != run_id);
        }
    }

    /// Fails every run still open, e.g. after a trap or an error from `run`.
    /// Returns the streams it failed.
    pub async fn fail_open_runs(&mut self, summary: &str) -> Vec<StreamKey> {
        let open: Vec<u64> = self.runs.iter().filter(|(_, r)| r.open).map(|(id, _)| *id).collect();
        let mut failed = Vec::new();
        for id in open {
            if let Some(key) = self.fail_run(id, summary).await {
                failed.push(key);
            }
        }
        failed
    }

    async fn fail_run(&mut self, id: u64, summary: &str) -> Option<StreamKey> {
        let run = self.runs.get_mut(&id)?;
        run.open = false;
        let (key, run_id) = (run.key.clone(), run.owner.run_id.clone());
        self.release(&run_id);
        let summary = self.log.redactor().redact(summary);
        let updated_by = self.identity.updated_by.clone();
        if let Err(e) = self.store.fail_run(key.clone(), run_id, summary, updated_by).await {
            self.log
                .warn(&format!("Could not mark stream {key} failed: {e}"), Some("delta"), None);
        }
        Some(key)
    }

    pub fn open_runs(&self) -> impl Iterator<Item = &DeltaRun> {
        self.runs.values().filter(|r| r.open)
    }
}

/// What the delta-state interface sees of the store data: its own state, the
/// resource table, and the supplier queue that `complete` writes atomically.
pub struct DeltaView<'a> {
    pub cap: &'a mut DeltaCap,
    pub table: &'a mut ResourceTable,
    pub queue: &'a mut SupplierQueue,
}

impl DeltaView<'_> {
    fn run(&mut self, handle: &Resource<DeltaRunHandle>) -> wasmtime::Result<&mut DeltaRun> {
        let id = self.table.get(handle)?.id;
        Ok(self.cap.runs.get_mut(&id).expect("every handle has a run"))
    }
}

impl From<WitCursorType> for CursorType {
    fn from(t: WitCursorType) -> Self {
        match t {
            WitCursorType::TimestampUtc => CursorType::TimestampUtc,
            WitCursorType::NumericId => CursorType::NumericId,
            WitCursorType::OpaqueToken => CursorType::OpaqueToken,
        }
    }
}

impl From<CursorType> for WitCursorType {
    fn from(t: CursorType) -> Self {
        match t {
            CursorType::TimestampUtc => WitCursorType::TimestampUtc,
            CursorType::NumericId => WitCursorType::NumericId,
            CursorType::OpaqueToken => WitCursorType::OpaqueToken,
        }
    }
}

impl From<StreamState> for delta_state::StreamState {
    fn from(s: StreamState) -> Self {
        Self {
            connector_name: s.connector_name,
            stream_name: s.stream_name,
            cursor_type: s.cursor_type.map(Into::into),
            committed_cursor_value: s.committed_cursor_value,
            committed_at_utc: s.committed_at_utc,
            status: match s.status {
                RunStatus::Idle => WitRunStatus::Idle,
                RunStatus::Running => WitRunStatus::Running,
                RunStatus::Succeeded => WitRunStatus::Succeeded,
                RunStatus::Failed => WitRunStatus::Failed,
            },
            started_at_utc: s.started_at_utc,
            completed_at_utc: s.completed_at_utc,
            records_processed: s.records_processed,
            error_summary: s.error_summary,
            metadata: s.metadata.map(|m| m.to_string()),
            updated_at_utc: s.updated_at_utc,
            updated_by: s.updated_by,
        }
    }
}

impl From<StoreError> for DeltaError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::CursorRegression(_) => DeltaError::CursorRegression(e.to_string()),
            StoreError::CursorTypeMismatch(m) => DeltaError::CursorTypeMismatch(m),
            StoreError::InvalidCursor(m) => DeltaError::InvalidCursor(m),
            StoreError::NotRunning(m) | StoreError::LeaseLost(m) => DeltaError::NotRunning(m),
            StoreError::AlreadyRunning(m) => DeltaError::AlreadyRunning(m),
            StoreError::Invalid(m) => DeltaError::InvalidArgument(m),
            other => DeltaError::Store(other.to_string()),
        }
    }
}

fn check_name(what: &str, name: &str) -> Result<(), DeltaError> {
    if name.trim().is_empty() {
        return Err(DeltaError::InvalidArgument(format!("{what} must not be empty")));
    }
    if name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(DeltaError::InvalidArgument(format!(
            "{what} must be at most {MAX_NAME_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

impl delta_state::HostDeltaRun for DeltaView<'_> {
    async fn begin(
        &mut self,
        connector_name: String,
        stream_name: String,
        cursor_type: WitCursorType,
    ) -> wasmtime::Result<Result<Resource<DeltaRunHandle>, DeltaError>> {
        if let Err(e) = check_name("connector_name", &connector_name).and(check_name("stream_name", &stream_name)) {
            return Ok(Err(e));
        }
        let key = StreamKey {
            customer_number: self.cap.customer_number.clone(),
            connector_name,
            stream_name,
        };
        if self.cap.open_runs().any(|r| r.key == key) {
            return Ok(Err(DeltaError::AlreadyRunning(format!(
                "a run of stream {key} is already open in this job; complete or fail it first"
            ))));
        }
        let cursor_type = CursorType::from(cursor_type);
        let id = &self.cap.identity;
        let owner = RunOwner::this_process(&id.plugin_sha256, &id.updated_by, id.lease);
        let begun = match self.cap.store.begin_run(key.clone(), cursor_type, owner.clone()).await {
            Ok(begun) => begun,
            Err(e) => {
                if let StoreError::AlreadyRunning(message) = &e {
                    self.cap.refused = Some(LimitHit {
                        kind: "already_running",
                        message: message.clone(),
                    });
                }
                return Ok(Err(e.into()));
            }
        };
        if let Some(note) = &begun.took_over {
            self.cap.log.warn(&format!("Taking over: {note}"), Some("delta"), None);
        }
        self.cap
            .leased()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((key.clone(), owner.clone()));
        let id = self.cap.next_id;
        self.cap.next_id += 1;
        self.cap.runs.insert(
            id,
            DeltaRun {
                key,
                owner,
                cursor_type,
                lower_bound: begun.lower_bound,
                new_cursor: None,
                records_processed: None,
                metadata: None,
                open: true,
            },
        );
        Ok(Ok(self.table.push(DeltaRunHandle { id })?))
    }

    async fn lower_bound_cursor(&mut self, run: Resource<DeltaRunHandle>) -> wasmtime::Result<Option<String>> {
        Ok(self.run(&run)?.lower_bound.clone())
    }

    async fn set_new_cursor(
        &mut self,
        run: Resource<DeltaRunHandle>,
        value: String,
    ) -> wasmtime::Result<Result<(), DeltaError>> {
        let run = self.run(&run)?;
        if let Err(problem) = run.cursor_type.validate(&value) {
            return Ok(Err(DeltaError::InvalidCursor(format!(
                "{} cursor: {problem}",
                run.cursor_type
            ))));
        }
        run.new_cursor = Some(value);
        Ok(Ok(()))
    }

    async fn set_records_processed(&mut self, run: Resource<DeltaRunHandle>, count: u64) -> wasmtime::Result<()> {
        self.run(&run)?.records_processed = Some(count);
        Ok(())
    }

    async fn set_metadata(
        &mut self,
        run: Resource<DeltaRunHandle>,
        metadata: String,
    ) -> wasmtime::Result<Result<(), DeltaError>> {
        if metadata.len() > MAX_METADATA_BYTES {
            return Ok(Err(DeltaError::InvalidArgument(format!(
                "metadata is {} bytes; at most {MAX_METADATA_BYTES} are allowed",
                metadata.len()
            ))));
        }
        match serde_json::from_str::<serde_json::Value>(&metadata) {
            Ok(value @ serde_json::Value::Object(_)) => {
                self.run(&run)?.metadata = Some(value);
                Ok(Ok(()))
            }
            _ => Ok(Err(DeltaError::InvalidArgument(
                "metadata must be a JSON object".into(),
            ))),
        }
    }

    async fn complete(
        &mut self,
        handle: Resource<DeltaRunHandle>,
    ) -> wasmtime::Result<Result<delta_state::StreamState, DeltaError>> {
        let updated_by = self.cap.identity.updated_by.clone();
        let run = self.run(&handle)?;
        if !run.open {
            return Ok(Err(DeltaError::NotRunning(format!(
                "the run of stream {} already ended",
                run.key
            ))));
        }
        let Some(new_cursor_value) = run.new_cursor.clone() else {
            return Ok(Err(DeltaError::InvalidArgument(
                "set-new-cursor is required before complete; the run stays open".into(),
            )));
        };
        let (key, run_id) = (run.key.clone(), run.owner.run_id.clone());
        let completion = Completion {
            cursor_type: run.cursor_type,
            new_cursor_value,
            records_processed: run.records_processed,
            metadata: run.metadata.clone(),
            updated_by,
        };
        let pending = self.queue.take();
        match self
            .cap
            .store
            .complete_run(key, run_id.clone(), completion, pending)
            .await
        {
            Ok(state) => {
                self.run(&handle)?.open = false;
                self.cap.release(&run_id);
                Ok(Ok(state.into()))
            }
            Err(e) => {
                if let StoreError::LeaseLost(message) = &e {
                    // Another run owns the stream now: this one ends here, unwritten.
                    self.run(&handle)?.open = false;
                    self.cap.release(&run_id);
                    self.cap.refused = Some(LimitHit {
                        kind: "lease_lost",
                        message: message.clone(),
                    });
                }
                Ok(Err(e.into()))
            }
        }
    }

    async fn fail(
        &mut self,
        handle: Resource<DeltaRunHandle>,
        error_summary: String,
    ) -> wasmtime::Result<Result<(), DeltaError>> {
        let id = self.table.get(&handle)?.id;
        let run = self.cap.runs.get(&id).expect("every handle has a run");
        if !run.open {
            return Ok(Err(DeltaError::NotRunning(format!(
                "the run of stream {} already ended",
                run.key
            ))));
        }
        // What was queued for this run is not written: the window is re-fetched.
        self.queue.take();
        self.cap.fail_run(id, &error_summary).await;
        Ok(Ok(()))
    }

    async fn drop(&mut self, handle: Resource<DeltaRunHandle>) -> wasmtime::Result<()> {
        let id = self.table.delete(handle)?.id;
        if self.cap.runs.get(&id).is_some_and(|r| r.open) {
            self.queue.take();
            if let Some(key) = self
                .cap
                .fail_run(id, "the connector let go of its delta run without complete or fail")
                .await
            {
                self.cap.abandoned.push(key);
            }
        }
        Ok(())
    }
}

impl delta_state::Host for DeltaView<'_> {
    async fn get_state(
        &mut self,
        connector_name: String,
        stream_name: String,
    ) -> wasmtime::Result<Result<delta_state::StreamState, DeltaError>> {
        let key = StreamKey {
            customer_number: self.cap.customer_number.clone(),
            connector_name,
            stream_name,
        };
        Ok(self.cap.store.get_state(key).await.map(Into::into).map_err(Into::into))
    }
}

/// Renews the leases of this job's open runs from its own thread, so a run
/// stays alive while the connector computes, waits or retries.
struct Heartbeat {
    runs: Arc<Mutex<Vec<(StreamKey, RunOwner)>>>,
    /// Dropping it stops the thread.
    _stop: mpsc::Sender<()>,
}

impl Heartbeat {
    fn start(store: Store, log: Arc<LogSink>, lease: Duration) -> Self {
        let runs: Arc<Mutex<Vec<(StreamKey, RunOwner)>>> = Arc::default();
        let (stop, stopped) = mpsc::channel::<()>();
        let every = (lease / 4).max(Duration::from_millis(50));
        let shared = runs.clone();
        std::thread::Builder::new()
            .name("nuntiq-lease".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let open = shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if open.is_empty() {
                        continue;
                    }
                    match store.renew_leases_blocking(open) {
                        Ok(lost) => {
                            for run_id in lost {
                                log.warn(
                                    &format!("Run {run_id} lost its lease; it will not be allowed to complete"),
                                    Some("delta"),
                                    None,
                                );
                                shared
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .retain(|(_, o)| o.run_id != run_id);
                            }
                        }
                        Err(e) => log.warn(&format!("Could not renew the run's lease: {e}"), Some("delta"), None),
                    }
                }
            })
            .expect("the lease thread starts");
        Self { runs, _stop: stop }
    }
}
