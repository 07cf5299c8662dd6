//! `delta-state`: the run lifecycle (begin → complete | fail) over the store,
//! with the platform's status and monotonicity rules. The host keeps track of
//! every run a connector opens so that none is left `running` when the job ends.

use super::RunCtx;
use super::supplier::SupplierQueue;
use crate::bindings::delta_state::{self, CursorType as WitCursorType, DeltaError, RunStatus as WitRunStatus};
use crate::budget::{Charge, Resource as Spent};
use crate::limits::{LimitHit, Overloaded};
use crate::log::LogSink;
use crate::meter::Section;
use crate::settings::check_name;
use crate::store::{
    Completion, CursorType, FailOutcome, RunOwner, RunStatus, SaveCounts, Store, StoreError, StreamKey, StreamState,
};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use wasmtime::component::{Resource, ResourceTable};

/// Largest metadata object accepted, as JSON text.
const MAX_METADATA_BYTES: usize = 64 * 1024;
/// Longest error summary kept, in bytes.
const MAX_SUMMARY_BYTES: usize = 4 * 1024;

/// What a job's delta runs may touch.
#[derive(Debug, Clone)]
pub struct DeltaConfig {
    /// The job's own connector (`config.connector_name`); no other connector's
    /// streams may be named. `None`: the job has no delta state.
    pub connector_name: Option<String>,
    /// Distinct streams one job may begin.
    pub max_streams: usize,
    /// How far past now a timestamp cursor may point.
    pub max_cursor_skew: Duration,
    /// Rows one run may set aside with `reject`; past it the call fails.
    pub max_rejected: u64,
    /// How long a `complete` the database did not answer is tried again
    /// (with backoff) before the connector is told: the run's grace.
    pub commit_retry: Duration,
}

impl Default for DeltaConfig {
    fn default() -> Self {
        Self {
            connector_name: None,
            max_streams: 100,
            max_cursor_skew: crate::store::cursor::DEFAULT_MAX_CURSOR_SKEW,
            max_rejected: 100,
            commit_retry: crate::limits::Limits::default().grace,
        }
    }
}

/// Largest rejected row kept, in bytes, and longest reason.
const MAX_REJECTED_ROW_BYTES: usize = 64 * 1024;
const MAX_REJECT_REASON_BYTES: usize = 1024;

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
    /// What the job's store handle had written when this run began.
    written_at_begin: SaveCounts,
    /// Begun (or being begun) and neither completed nor failed.
    pub open: bool,
    /// The host memory this run's state takes (its names, cursors and
    /// metadata), charged to the job's budget while the host keeps it.
    _held: Charge,
}

/// Host memory charged for one delta run's state besides its metadata.
const RUN_STATE_BYTES: u64 = 2048;

/// Who this job's runs are, for leases and run history.
#[derive(Debug, Clone)]
pub struct RunIdentity {
    /// Written to the rows' `updated_by`.
    pub updated_by: String,
    pub plugin_sha256: String,
    /// The plugin's metadata sections (name, version, authors, source) as JSON, if it has any.
    pub plugin_metadata: Option<String>,
    /// How long a lease lasts without a heartbeat; heartbeats come every quarter of it.
    pub lease: Duration,
    /// This job's id, on every run it begins (see [`RunOwner::job_id`]).
    pub job_id: String,
    /// The run's trace id (W3C), on every run it begins.
    pub trace_id: Option<String>,
}

pub struct DeltaCap {
    customer_number: String,
    config: DeltaConfig,
    store: Store,
    identity: RunIdentity,
    ctx: RunCtx,
    runs: BTreeMap<u64, DeltaRun>,
    next_id: u64,
    /// Every stream a run of this job began.
    streams: HashSet<StreamKey>,
    /// Runs the host had to fail because the connector let go of them.
    pub abandoned: Vec<StreamKey>,
    /// Rows the job's runs set aside.
    pub rejected: u64,
    /// The cursors the job's runs committed.
    pub committed: Vec<(StreamKey, String)>,
    heartbeat: Option<Heartbeat>,
}

impl DeltaCap {
    pub fn new(customer_number: String, config: DeltaConfig, store: Store, identity: RunIdentity, ctx: RunCtx) -> Self {
        Self {
            customer_number,
            config,
            store,
            identity,
            ctx,
            runs: BTreeMap::new(),
            next_id: 0,
            streams: HashSet::new(),
            abandoned: Vec::new(),
            rejected: 0,
            committed: Vec::new(),
            heartbeat: None,
        }
    }

    /// Completes a run in the store; a commit the database did not answer
    /// (connection lost, server down) is tried again with backoff (0.25 s
    /// doubling to 4 s) for up to `commit_retry` (the run's grace) and never
    /// after the run's stop, then the connector is told. A retry that finds
    /// the run's lease already given up and the stream committed at this
    /// run's cursor since the first attempt is the first attempt's commit,
    /// whose answer the outage swallowed.
    async fn commit(
        &self,
        key: &StreamKey,
        run_id: &str,
        completion: Completion,
        pending: crate::store::Batch,
        written_at_begin: SaveCounts,
        stop: Arc<crate::limits::Stop>,
    ) -> Result<(StreamState, SaveCounts), crate::store::CompleteError> {
        let first_attempt = crate::store::schema::now_utc();
        let give_up = Instant::now() + self.config.commit_retry;
        let mut pause = Duration::from_millis(250);
        let mut pending = pending;
        let mut retries = 0u32;
        loop {
            let attempt = self
                .store
                .complete_run(
                    key.clone(),
                    run_id.to_owned(),
                    completion.clone(),
                    pending,
                    written_at_begin,
                    stop.clone(),
                )
                .await;
            let mut failed = match attempt {
                Ok(done) => {
                    if retries > 0 {
                        self.ctx.log.info(
                            &format!("The database answered again: stream {key} committed after {retries} retries"),
                            Some("store"),
                            Some(serde_json::json!({"retries": retries})),
                        );
                    }
                    return Ok(done);
                }
                Err(failed) => failed,
            };
            if retries > 0 && matches!(failed.error, StoreError::LeaseLost(_)) {
                if let Ok(state) = self.store.get_state(key.clone()).await
                    && state.status == RunStatus::Succeeded
                    && state.committed_cursor_value.as_deref() == Some(completion.new_cursor_value.as_str())
                    && state.completed_at_utc.as_deref().is_some_and(|at| at >= first_attempt.as_str())
                {
                    self.ctx.log.info(
                        &format!(
                            "Stream {key} was committed by the attempt the database did not answer ({retries} \
                             retries)"
                        ),
                        Some("store"),
                        None,
                    );
                    return Ok((state, SaveCounts::default()));
                }
                return Err(failed);
            }
            let StoreError::Unavailable(why) = &failed.error else {
                return Err(failed);
            };
            let now = Instant::now();
            if failed.pending.is_none() || stop.reason().is_some() || now + pause > give_up {
                if retries > 0 {
                    self.ctx.log.error(
                        &format!(
                            "The commit of stream {key} gave up after {retries} retries in {:.1} s: {why}",
                            self.config.commit_retry.saturating_sub(give_up.saturating_duration_since(now)).as_secs_f64()
                        ),
                        Some("store"),
                        None,
                    );
                }
                return Err(failed);
            }
            if retries == 0 {
                self.ctx.log.warn(
                    &format!(
                        "The commit of stream {key} did not reach the database ({why}); trying again for up to {} \
                         (the run's grace)",
                        humantime::format_duration(self.config.commit_retry)
                    ),
                    Some("store"),
                    None,
                );
            }
            pending = failed.pending.take().expect("checked above");
            retries += 1;
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.stopped() => {}
            }
            pause = (pause * 2).min(Duration::from_secs(4));
        }
    }

    /// The span of one delta call, naming its stream (redacted: the connector chose the name).
    fn stream_span(&self, call: &'static str, key: &StreamKey) -> tracing::Span {
        let stream = format!("{}/{}", key.connector_name, key.stream_name);
        let stream = self.ctx.log.redactor().clean(&stream, 512);
        if call == "delta_begin" {
            tracing::info_span!("delta_begin", stream)
        } else {
            tracing::info_span!("delta_complete", stream)
        }
    }

    /// A refusal the connector can handle, remembered so a failure right after
    /// it is reported under `kind`.
    fn refuse(&self, kind: &'static str, message: String) -> DeltaError {
        self.ctx.refusals.refused(LimitHit {
            kind,
            message: message.clone(),
        });
        match kind {
            "stream_denied" => DeltaError::Denied(message),
            _ => DeltaError::Limit(message),
        }
    }

    /// The stream `connector_name`/`stream_name` of this job's customer, if
    /// the job may name it: only its own connector's streams.
    fn stream_key(&self, connector_name: String, stream_name: String) -> Result<StreamKey, DeltaError> {
        check_name(&stream_name).map_err(|p| DeltaError::InvalidArgument(format!("stream_name {p}")))?;
        match &self.config.connector_name {
            Some(own) if *own == connector_name => Ok(StreamKey {
                customer_number: self.customer_number.clone(),
                connector_name,
                stream_name,
            }),
            Some(own) => Err(self.refuse(
                "stream_denied",
                format!(
                    "connector {:?} is not this job's connector {own:?} (settings.json config.connector_name); \
                     a run may only read and write its own connector's streams",
                    crate::log::sanitize(&connector_name, 200)
                ),
            )),
            None => Err(self.refuse(
                "stream_denied",
                "this job's settings.json names no connector (config.connector_name), so it has no delta state".into(),
            )),
        }
    }

    /// The open runs the heartbeat renews.
    fn leased(&mut self) -> Result<Arc<Mutex<Vec<(StreamKey, RunOwner)>>>, Overloaded> {
        if self.heartbeat.is_none() {
            let (store, log, lease) = (self.store.clone(), self.ctx.log.clone(), self.identity.lease);
            self.heartbeat = Some(Heartbeat::start(store, log, lease)?);
        }
        Ok(self.heartbeat.as_ref().expect("started above").runs.clone())
    }

    fn release(&mut self, run_id: &str) {
        if let Some(hb) = &self.heartbeat {
            hb.runs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(_, o)| o.run_id != run_id);
            hb.ending.lock().unwrap_or_else(|p| p.into_inner()).remove(run_id);
        }
    }

    /// Marks a run as being completed (or no longer), for the heartbeat.
    fn ending(&mut self, run_id: &str, ending: bool) {
        if let Some(hb) = &self.heartbeat {
            let mut set = hb.ending.lock().unwrap_or_else(|p| p.into_inner());
            if ending {
                set.insert(run_id.to_owned());
            } else {
                set.remove(run_id);
            }
        }
    }

    /// Fails every run still open (or still being begun), e.g. after a trap,
    /// an error from `run` or a stop, in one store transaction. Returns each
    /// stream with how its run ended: a run whose complete committed before
    /// the host learned of it keeps its success.
    pub async fn fail_open_runs(&mut self, summary: &str) -> Vec<(StreamKey, FailOutcome)> {
        let open: Vec<u64> = self.runs.iter().filter(|(_, r)| r.open).map(|(id, _)| *id).collect();
        let mut runs = Vec::with_capacity(open.len());
        for id in open {
            let run = self.runs.get_mut(&id).expect("listed above");
            run.open = false;
            runs.push((run.key.clone(), run.owner.run_id.clone()));
        }
        if runs.is_empty() {
            return Vec::new();
        }
        for (_, run_id) in &runs {
            self.release(run_id);
        }
        let summary = self.ctx.log.redactor().clean(summary, MAX_SUMMARY_BYTES);
        let updated_by = self.identity.updated_by.clone();
        match self.store.fail_runs(runs.clone(), summary, updated_by).await {
            Ok(outcomes) => runs.into_iter().map(|(k, _)| k).zip(outcomes).collect(),
            Err(e) => {
                for (key, _) in &runs {
                    self.ctx
                        .log
                        .warn(&format!("Could not mark stream {key} failed: {e}"), Some("delta"), None);
                }
                runs.into_iter().map(|(k, _)| (k, FailOutcome::NotHeld)).collect()
            }
        }
    }

    async fn fail_run(&mut self, id: u64, summary: &str) -> Option<StreamKey> {
        let run = self.runs.get_mut(&id)?;
        run.open = false;
        let (key, run_id) = (run.key.clone(), run.owner.run_id.clone());
        self.release(&run_id);
        let summary = self.ctx.log.redactor().clean(summary, MAX_SUMMARY_BYTES);
        let updated_by = self.identity.updated_by.clone();
        if let Err(e) = self.store.fail_run(key.clone(), run_id, summary, updated_by).await {
            self.ctx
                .log
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
            StoreError::NotRunning(m) | StoreError::LeaseLost(m) | StoreError::Stopped(m) => DeltaError::NotRunning(m),
            StoreError::AlreadyRunning(m) => DeltaError::AlreadyRunning(m),
            StoreError::Invalid(m) => DeltaError::InvalidArgument(m),
            other => DeltaError::Store(other.to_string()),
        }
    }
}

impl delta_state::HostDeltaRun for DeltaView<'_> {
    async fn begin(
        &mut self,
        connector_name: String,
        stream_name: String,
        cursor_type: WitCursorType,
    ) -> wasmtime::Result<Result<Resource<DeltaRunHandle>, DeltaError>> {
        let key = match self.cap.stream_key(connector_name, stream_name) {
            Ok(key) => key,
            Err(e) => return Ok(Err(e)),
        };
        if self.cap.open_runs().any(|r| r.key == key) {
            return Ok(Err(DeltaError::AlreadyRunning(format!(
                "a run of stream {key} is already open in this job; complete or fail it first"
            ))));
        }
        if !self.cap.streams.contains(&key) && self.cap.streams.len() >= self.cap.config.max_streams {
            let message = format!(
                "this job already began runs of {} streams, its limit (--max-streams); stream {key} was refused",
                self.cap.streams.len()
            );
            return Ok(Err(self.cap.refuse("stream_limit", message)));
        }
        let budget = self.cap.ctx.budget.clone();
        let held = match budget
            .spend(Spent::Begins, 1, "delta-run.begin")
            .and_then(|()| budget.hold(Spent::HostMemory, RUN_STATE_BYTES, "delta runs"))
        {
            Ok(held) => held,
            Err(exceeded) => return Ok(Err(self.cap.refuse("limit", exceeded.to_string()))),
        };
        // The lease heartbeat first: a run that begins must be renewed.
        let leased = match self.cap.leased() {
            Ok(leased) => leased,
            Err(overloaded) => {
                let message = overloaded.to_string();
                self.cap.ctx.refusals.refused(LimitHit {
                    kind: "host_overloaded",
                    message: message.clone(),
                });
                return Ok(Err(DeltaError::Store(message)));
            }
        };
        self.cap.streams.insert(key.clone());
        let cursor_type = CursorType::from(cursor_type);
        let id = &self.cap.identity;
        let owner = RunOwner {
            job_id: Some(id.job_id.clone()),
            trace_id: id.trace_id.clone(),
            plugin_metadata: id.plugin_metadata.clone(),
            ..RunOwner::this_process(&id.plugin_sha256, &id.updated_by, id.lease)
        };
        // Known before the store hears of it: if the job is stopped while the
        // begin is in flight, the clean-up still fails whatever it committed.
        let run_id = self.cap.next_id;
        self.cap.next_id += 1;
        self.cap.runs.insert(
            run_id,
            DeltaRun {
                key: key.clone(),
                owner: owner.clone(),
                cursor_type,
                lower_bound: None,
                new_cursor: None,
                records_processed: None,
                metadata: None,
                written_at_begin: SaveCounts::default(),
                open: true,
                _held: held,
            },
        );
        let started = Instant::now();
        let begun = crate::log::in_span(
            self.cap.stream_span("delta_begin", &key),
            self.cap
                .store
                .begin_run(key.clone(), cursor_type, owner.clone(), self.cap.ctx.stop.clone()),
        )
        .await;
        self.cap.ctx.counters.add(Section::StoreWait, started);
        let (begun, written) = match begun {
            Ok(begun) => begun,
            Err(e) => {
                self.cap.runs.remove(&run_id);
                match &e {
                    StoreError::AlreadyRunning(message) => self.cap.ctx.refusals.refused(LimitHit {
                        kind: "already_running",
                        message: message.clone(),
                    }),
                    _ => self.cap.ctx.refusals.answered(),
                }
                return Ok(Err(e.into()));
            }
        };
        self.cap.ctx.refusals.answered();
        if let Some(note) = &begun.took_over {
            self.cap
                .ctx
                .log
                .warn(&format!("Taking over: {note}"), Some("delta"), None);
        }
        if let Some(lower) = &begun.lower_bound
            && let Err(problem) = cursor_type.validate(lower, self.cap.config.max_cursor_skew)
        {
            self.cap.ctx.log.warn(
                &format!(
                    "The committed cursor of stream {key} is not usable: {problem}. Runs cannot move it; an \
                     operator can reset it with `nuntiq-host state reset --connector {} --stream {} --cursor … \
                     --reason …`",
                    key.connector_name, key.stream_name
                ),
                Some("delta"),
                None,
            );
        }
        leased
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((key.clone(), owner));
        let run = self.cap.runs.get_mut(&run_id).expect("registered above");
        run.lower_bound = begun.lower_bound;
        run.written_at_begin = written;
        Ok(Ok(self.table.push(DeltaRunHandle { id: run_id })?))
    }

    async fn lower_bound_cursor(&mut self, run: Resource<DeltaRunHandle>) -> wasmtime::Result<Option<String>> {
        Ok(self.run(&run)?.lower_bound.clone())
    }

    async fn set_new_cursor(
        &mut self,
        run: Resource<DeltaRunHandle>,
        value: String,
    ) -> wasmtime::Result<Result<(), DeltaError>> {
        let skew = self.cap.config.max_cursor_skew;
        let run = self.run(&run)?;
        if let Err(problem) = run.cursor_type.validate(&value, skew) {
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
                // Stored and shown to operators: no secret and no control character in it.
                let value = self.cap.ctx.log.redactor().clean_json(value);
                let run = self.run(&run)?;
                run._held.shrink_to(RUN_STATE_BYTES);
                if let Err(exceeded) = run._held.grow(metadata.len() as u64, "delta run metadata") {
                    return Ok(Err(self.cap.refuse("limit", exceeded.to_string())));
                }
                run.metadata = Some(value);
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
        let max_cursor_skew = self.cap.config.max_cursor_skew;
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
        let (key, run_id, written_at_begin) = (run.key.clone(), run.owner.run_id.clone(), run.written_at_begin);
        let completion = Completion {
            cursor_type: run.cursor_type,
            new_cursor_value,
            records_processed: run.records_processed,
            metadata: run.metadata.clone(),
            updated_by,
            max_cursor_skew,
        };
        let pending = self.queue.take();
        if let Err(exceeded) = super::supplier::spend_stored(&self.cap.ctx.budget, &pending.records) {
            self.queue.restore(pending);
            return Ok(Err(self.cap.refuse("limit", exceeded.to_string())));
        }
        let stop = self.cap.ctx.stop.clone();
        let started = Instant::now();
        self.cap.ending(&run_id, true);
        let completed = crate::log::in_span(
            self.cap.stream_span("delta_complete", &key),
            self.cap.commit(&key, &run_id, completion, pending, written_at_begin, stop),
        )
        .await;
        self.cap.ctx.counters.add(Section::StoreWait, started);
        match completed {
            Ok((state, _)) => {
                let run = self.run(&handle)?;
                run.open = false;
                let done = (
                    run.key.clone(),
                    state.committed_cursor_value.clone().unwrap_or_default(),
                );
                self.cap.committed.push(done);
                self.cap.release(&run_id);
                self.cap.ctx.refusals.answered();
                Ok(Ok(state.into()))
            }
            Err(failed) => {
                // Nothing of the batch is known to be written: it stays queued,
                // so a later complete writes it before any cursor covers it.
                if let Some(pending) = failed.pending {
                    self.queue.restore(pending);
                }
                match &failed.error {
                    StoreError::LeaseLost(message) => {
                        // Another run owns the stream now: this one ends here, unwritten.
                        self.run(&handle)?.open = false;
                        self.cap.release(&run_id);
                        self.cap.ctx.refusals.refused(LimitHit {
                            kind: "lease_lost",
                            message: message.clone(),
                        });
                    }
                    _ => {
                        // The run stays open: its lease matters again.
                        self.cap.ending(&run_id, false);
                        self.cap.ctx.refusals.answered();
                    }
                }
                Ok(Err(failed.error.into()))
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

    async fn reject(
        &mut self,
        handle: Resource<DeltaRunHandle>,
        row: String,
        reason: String,
    ) -> wasmtime::Result<Result<(), DeltaError>> {
        let max = self.cap.config.max_rejected;
        let rejected = self.cap.rejected;
        let run = self.run(&handle)?;
        if !run.open {
            return Ok(Err(DeltaError::NotRunning(format!(
                "the run of stream {} already ended",
                run.key
            ))));
        }
        if row.len() > MAX_REJECTED_ROW_BYTES {
            return Ok(Err(DeltaError::InvalidArgument(format!(
                "a rejected row is at most {MAX_REJECTED_ROW_BYTES} bytes, this one is {}",
                row.len()
            ))));
        }
        if rejected >= max {
            let message = format!(
                "this job already set aside {max} rows, its limit per run however many delta runs it begins \
                 (--max-rejected); stream {} needs its source fixed, or the limit raising",
                run.key
            );
            return Ok(Err(self.cap.refuse("rejected_limit", message)));
        }
        let (key, run_id) = (run.key.clone(), run.owner.run_id.clone());
        let budget = &self.cap.ctx.budget;
        if let Err(exceeded) = budget
            .spend(Spent::StoredRows, 1, "rejected rows")
            .and_then(|()| budget.spend(Spent::StoredBytes, (row.len() + reason.len()) as u64, "rejected rows"))
        {
            return Ok(Err(self.cap.refuse("limit", exceeded.to_string())));
        }
        let redactor = self.cap.ctx.log.redactor();
        let (row, reason) = (redactor.redact_raw(&row), redactor.clean(&reason, MAX_REJECT_REASON_BYTES));
        self.cap.ctx.refusals.answered();
        let stored = self.cap.store.reject(key.clone(), run_id, row, reason.clone()).await;
        // Counted once stored, so the envelope says what the store holds.
        match &stored {
            Ok(()) => {
                self.cap.rejected += 1;
                self.cap.ctx.log.caused(
                    crate::log::Level::Warn,
                    &format!("Rejected a row of stream {key}: {reason}"),
                    Some("reject"),
                    None,
                );
            }
            Err(e) => self.cap.ctx.log.caused(
                crate::log::Level::Warn,
                &format!("A row of stream {key} was not set aside ({reason}): {e}"),
                Some("reject"),
                None,
            ),
        }
        Ok(stored.map_err(Into::into))
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
        // Its handle is gone and it has ended: nothing will ask for it again.
        self.cap.runs.remove(&id);
        Ok(())
    }
}

impl delta_state::Host for DeltaView<'_> {
    async fn get_state(
        &mut self,
        connector_name: String,
        stream_name: String,
    ) -> wasmtime::Result<Result<delta_state::StreamState, DeltaError>> {
        let key = match self.cap.stream_key(connector_name, stream_name) {
            Ok(key) => key,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.cap.store.get_state(key).await.map(Into::into).map_err(Into::into))
    }
}

/// Of the runs a renewal did not find running, those that really lost their
/// lease: not the ones that ended (released) or are completing meanwhile — a
/// renewal can wait for a store connection while its run commits.
fn still_open(lost: Vec<String>, runs: &[(StreamKey, RunOwner)], ending: &HashSet<String>) -> Vec<String> {
    lost.into_iter()
        .filter(|id| !ending.contains(id) && runs.iter().any(|(_, o)| &o.run_id == id))
        .collect()
}

/// Renews the leases of this job's open runs from its own thread, so a run
/// stays alive while the connector computes, waits or retries.
struct Heartbeat {
    runs: Arc<Mutex<Vec<(StreamKey, RunOwner)>>>,
    /// Runs being completed: a renewal queued before their commit may run
    /// after it and find them ended, which is not a lost lease (a lease lost
    /// before the commit fails the complete itself).
    ending: Arc<Mutex<HashSet<String>>>,
    /// Dropping it stops the thread.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Heartbeat {
    /// Stops the thread and waits for it, so its handle on the store is gone
    /// before the run's: the run's then closes the store, not this thread
    /// after the process has moved on.
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Heartbeat {
    fn start(store: Store, log: Arc<LogSink>, lease: Duration) -> Result<Self, Overloaded> {
        let runs: Arc<Mutex<Vec<(StreamKey, RunOwner)>>> = Arc::default();
        let ending: Arc<Mutex<HashSet<String>>> = Arc::default();
        let (stop, stopped) = mpsc::channel::<()>();
        let every = (lease / 4).max(Duration::from_millis(50));
        let (shared, closing) = (runs.clone(), ending.clone());
        let thread = std::thread::Builder::new()
            .name("nuntiq-lease".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let open = shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if open.is_empty() {
                        continue;
                    }
                    match store.renew_leases_blocking(open) {
                        Ok(lost) => {
                            let lost = still_open(
                                lost,
                                &shared.lock().unwrap_or_else(|p| p.into_inner()),
                                &closing.lock().unwrap_or_else(|p| p.into_inner()),
                            );
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
            .map_err(|e| Overloaded(format!("the thread that renews the run's leases could not start: {e}")))?;
        Ok(Self {
            runs,
            ending,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_runs_still_open_and_not_completing_are_reported_lost() {
        let key = StreamKey {
            customer_number: "c".into(),
            connector_name: "acme_eu".into(),
            stream_name: "suppliers".into(),
        };
        let open = |id: &str| {
            let mut owner = RunOwner::this_process("sha", "test", Duration::from_secs(60));
            owner.run_id = id.into();
            (key.clone(), owner)
        };
        let runs = [open("live"), open("completing")];
        let ending: HashSet<String> = ["completing".to_owned()].into();
        let lost = vec!["live".to_owned(), "completing".to_owned(), "released".to_owned()];
        // A renewal that waited for a store connection while its run committed
        // finds it ended: only a run still open and not completing lost its lease.
        assert_eq!(still_open(lost, &runs, &ending), ["live"]);
    }
}
