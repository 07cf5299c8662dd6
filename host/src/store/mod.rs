//! The persistence seam: delta-state rows and the supplier store, on SQLite
//! (the embedded default, a file) or PostgreSQL (shared by many hosts).
//!
//! The logic is written once against [`sql::Conn`]. A [`Store`] handle hands
//! its work to one worker in order — SQLite's is a thread owning the
//! connection, PostgreSQL's a task on the store runtime taking a pooled
//! connection per piece of work — so a slow disk or network never blocks the
//! connector's thread, and writes keep their order.

pub mod cursor;
pub mod delta;
pub mod owner;
pub mod postgres;
pub mod records;
pub mod rejected;
pub mod schedule;
pub mod schema;
pub mod sql;
pub mod sqlite;
pub mod suppliers;
#[cfg(test)]
pub(crate) mod testing;

use crate::limits::Stop;
pub use cursor::CursorType;
pub use delta::{Begun, FailOutcome, Reset, StreamFilter};
pub use owner::RunOwner;
use postgres::PgPool;
pub use records::{AddressRecord, LocationRecord, SupplierRecord};
use serde::Serialize;
use sql::Conn;
use sqlite::SqliteConn;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
pub use suppliers::SaveCounts;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// A stream's identity: one delta-state row per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub customer_number: String,
    pub connector_name: String,
    pub stream_name: String,
}

impl std::fmt::Display for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} (customer {})",
            self.connector_name, self.stream_name, self.customer_number
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Idle,
    Running,
    Succeeded,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Idle => "idle",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            _ => RunStatus::Idle,
        }
    }
}

/// The platform's DeltaStreamState.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamState {
    pub connector_name: String,
    pub stream_name: String,
    pub cursor_type: Option<CursorType>,
    pub committed_cursor_value: Option<String>,
    pub committed_at_utc: Option<String>,
    pub status: RunStatus,
    pub started_at_utc: Option<String>,
    pub completed_at_utc: Option<String>,
    pub records_processed: Option<u64>,
    pub error_summary: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub updated_at_utc: Option<String>,
    pub updated_by: Option<String>,
}

impl StreamState {
    /// What getState returns for a stream that never ran.
    pub fn idle(key: &StreamKey) -> Self {
        Self {
            connector_name: key.connector_name.clone(),
            stream_name: key.stream_name.clone(),
            cursor_type: None,
            committed_cursor_value: None,
            committed_at_utc: None,
            status: RunStatus::Idle,
            started_at_utc: None,
            completed_at_utc: None,
            records_processed: None,
            error_summary: None,
            metadata: None,
            updated_at_utc: None,
            updated_by: None,
        }
    }
}

/// What a successful complete commits.
#[derive(Debug, Clone)]
pub struct Completion {
    pub cursor_type: CursorType,
    pub new_cursor_value: String,
    pub records_processed: Option<u64>,
    pub metadata: Option<serde_json::Value>,
    pub updated_by: String,
    /// How far past now a timestamp cursor may point.
    pub max_cursor_skew: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The platform's 422 CURSOR_REGRESSION.
    #[error("CURSOR_REGRESSION: {0}")]
    CursorRegression(String),
    #[error("{0}")]
    CursorTypeMismatch(String),
    #[error("{0}")]
    InvalidCursor(String),
    #[error("{0}")]
    NotRunning(String),
    /// Another live run holds the stream's lease.
    #[error("{0}")]
    AlreadyRunning(String),
    /// This run no longer holds the stream's lease.
    #[error("{0}")]
    LeaseLost(String),
    #[error("{0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("the store's writer thread stopped")]
    Closed,
    /// An earlier background supplier write failed; nothing after it commits.
    #[error("an earlier save-all failed, so nothing more is written: {0}")]
    EarlierWrite(String),
    /// The job was stopped (deadline or signal) before this could commit.
    #[error("{0}")]
    Stopped(String),
}

/// A failed `complete`: why, and the suppliers it was to write, handed back so
/// that a retried complete still writes them (a cursor never passes unwritten data).
#[derive(Debug)]
pub struct CompleteError {
    pub error: StoreError,
    pub pending: Vec<SupplierRecord>,
}

/// Why a database could not be opened; the CLI exits 2 naming the path.
#[derive(Debug, thiserror::Error)]
#[error("--db {}: {reason}", path.display())]
pub struct OpenError {
    pub path: PathBuf,
    pub reason: String,
}

/// Where the store lives: `--db PATH` (SQLite) or `--db postgres://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Db {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Db {
    /// `postgres://` and `postgresql://` URLs are PostgreSQL; anything else a SQLite file.
    pub fn parse(db: &str) -> Self {
        if postgres::is_url(db) {
            Db::Postgres(db.to_owned())
        } else {
            Db::Sqlite(PathBuf::from(db))
        }
    }

    /// How messages name it (a URL without its password).
    pub fn shown(&self) -> String {
        match self {
            Db::Sqlite(path) => path.display().to_string(),
            Db::Postgres(url) => postgres::redacted(url),
        }
    }
}

impl std::fmt::Display for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

/// One piece of the store's work, run by the handle's worker in order; it
/// gets the connection, or why there is none.
type Job = Box<dyn for<'c> FnOnce(Result<&'c mut Conn, StoreError>) -> BoxFuture<'c> + Send>;
type BoxFuture<'c> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'c>>;

/// What a job's caller hands over: given the connection, the work as a
/// future that borrows it.
pub trait JobFn<R>: for<'c> FnOnce(&'c mut Conn) -> JobFuture<'c, R> + Send + 'static {}
impl<R, F: for<'c> FnOnce(&'c mut Conn) -> JobFuture<'c, R> + Send + 'static> JobFn<R> for F {}
pub type JobFuture<'c, R> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<R, StoreError>> + Send + 'c>>;

/// The runtime PostgreSQL's workers and connections run on: shared by every
/// handle of the process, beside the connectors' own threads.
fn store_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("nuntiq-store")
            .enable_all()
            .build()
            .expect("the store runtime starts")
    })
}

/// One pool per database URL, shared by the process's runs.
async fn pool_for(url: &str) -> Result<PgPool, OpenError> {
    static POOLS: OnceLock<tokio::sync::Mutex<HashMap<String, PgPool>>> = OnceLock::new();
    let mut pools = POOLS.get_or_init(Default::default).lock().await;
    if let Some(pool) = pools.get(url) {
        return Ok(pool.clone());
    }
    let pool = PgPool::open(url).await?;
    pools.insert(url.to_owned(), pool.clone());
    Ok(pool)
}

/// A handle to the store's worker. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    jobs: mpsc::Sender<Job>,
    writes: Arc<BackgroundWrites>,
    /// Time the worker spent working, in nanoseconds.
    busy: Arc<AtomicU64>,
    /// SQLite's writer thread, waited for when the last handle goes (after
    /// `jobs`, so its queue is closed by then).
    _writer: Option<Arc<SqliteWriter>>,
    /// A dry run's private copy of the database, removed with the last handle
    /// (after the writer has closed it, so its WAL goes with it).
    _copy: Option<Arc<tempfile::TempPath>>,
}

/// The end of SQLite's writer thread. The last handle waits for it, so the
/// connection is closed before the process exits — a dry run's copy is
/// checkpointed as it closes, so its `-wal` and `-shm` go with it (a process
/// that exited first left them in the temporary directory).
struct SqliteWriter {
    thread: std::thread::ThreadId,
    closed: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

/// The longest the last handle waits for the writer to finish and close.
const WRITER_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl Drop for SqliteWriter {
    fn drop(&mut self) {
        // A handle dropped by the writer itself cannot wait for it.
        if std::thread::current().id() == self.thread {
            return;
        }
        if let Ok(closed) = self.closed.get_mut() {
            let _ = closed.recv_timeout(WRITER_CLOSE_WAIT);
        }
    }
}

/// Supplier batches written behind the connector's back: it fetches the next
/// page while the last one is written. Bounded, and ordered before any later
/// job — so a cursor commit always comes after the data it covers.
struct BackgroundWrites {
    /// Batches in flight; a connector that outruns the disk waits here.
    permits: Arc<Semaphore>,
    /// The first background write that failed; later writes and commits refuse.
    failed: Mutex<Option<String>>,
    /// What every write of this handle did, in the order the writer ran them.
    counts: Mutex<SaveCounts>,
}

impl BackgroundWrites {
    fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn counts(&self) -> SaveCounts {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, counts: SaveCounts) {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).add(counts);
    }
}

/// Supplier batches written in the background at most at once.
const BATCHES_IN_FLIGHT: usize = 2;

impl Store {
    /// Opens (creating if needed) and migrates the store `db`. Callable from
    /// inside an async context: PostgreSQL's set-up runs on the store runtime.
    pub fn open(db: &Db) -> Result<Self, OpenError> {
        match db {
            Db::Sqlite(path) => Self::open_sqlite(path),
            Db::Postgres(url) => {
                let (tx, rx) = std::sync::mpsc::channel();
                let url = url.clone();
                store_runtime().spawn(async move {
                    let _ = tx.send(pool_for(&url).await);
                });
                let pool = rx.recv().map_err(|_| OpenError {
                    path: db.shown().into(),
                    reason: "the store runtime stopped".into(),
                })??;
                Ok(Self::start_postgres(pool))
            }
        }
    }

    /// Opens (creating if needed) and migrates the SQLite database at `path`.
    pub fn open_sqlite(path: &Path) -> Result<Self, OpenError> {
        Self::start_sqlite(schema::open(path)?, path, None)
    }

    /// A dry run's store: a private copy of the database at `path` (empty when
    /// there is none yet), deleted when the last handle goes. The run reads
    /// what the real store holds and writes nothing to it.
    pub fn open_sqlite_copy(path: &Path) -> Result<Self, OpenError> {
        let fail = |reason: String| OpenError {
            path: path.to_owned(),
            reason,
        };
        let copy = tempfile::Builder::new()
            .prefix("nuntiq-dry-run-")
            .suffix(".db")
            .tempfile()
            .map_err(|e| fail(format!("cannot make the dry run's copy: {e}")))?
            .into_temp_path();
        if path.is_file() {
            let source = schema::open_read_only(path)?;
            std::fs::remove_file(&copy).map_err(|e| fail(e.to_string()))?;
            source
                .execute("VACUUM INTO ?1", [copy.to_string_lossy()])
                .map_err(|e| fail(format!("cannot copy it for the dry run: {e}")))?;
        }
        let conn = schema::open(&copy)?;
        Self::start_sqlite(conn, path, Some(Arc::new(copy)))
    }

    fn new(
        jobs: mpsc::Sender<Job>,
        busy: Arc<AtomicU64>,
        writer: Option<Arc<SqliteWriter>>,
        copy: Option<Arc<tempfile::TempPath>>,
    ) -> Self {
        Self {
            jobs,
            writes: Arc::new(BackgroundWrites {
                permits: Arc::new(Semaphore::new(BATCHES_IN_FLIGHT)),
                failed: Mutex::new(None),
                counts: Mutex::new(SaveCounts::default()),
            }),
            busy,
            _writer: writer,
            _copy: copy,
        }
    }

    /// SQLite's worker: a thread that owns the connection.
    fn start_sqlite(
        conn: rusqlite::Connection,
        path: &Path,
        copy: Option<Arc<tempfile::TempPath>>,
    ) -> Result<Self, OpenError> {
        let (jobs, mut rx) = mpsc::channel::<Job>(64);
        let busy = Arc::new(AtomicU64::new(0));
        let working = busy.clone();
        let fail = |reason: String| OpenError {
            path: path.to_owned(),
            reason,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| fail(format!("failed to start the store thread: {e}")))?;
        let (closing, closed) = std::sync::mpsc::channel::<()>();
        // A dry run's copy is checkpointed on close, so its WAL goes with it.
        let checkpoint = copy.is_some();
        let thread = std::thread::Builder::new()
            .name("nuntiq-store".into())
            .spawn(move || {
                let mut conn = Conn::Sqlite(SqliteConn::new(conn));
                while let Some(job) = rx.blocking_recv() {
                    let started = std::time::Instant::now();
                    runtime.block_on(job(Ok(&mut conn)));
                    working.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
                // Every handle is gone: close, then say so.
                if let Conn::Sqlite(c) = conn {
                    c.close(checkpoint);
                }
                let _ = closing.send(());
            })
            .map_err(|e| fail(format!("failed to start the store thread: {e}")))?;
        let writer = SqliteWriter {
            thread: thread.thread().id(),
            closed: std::sync::Mutex::new(closed),
        };
        Ok(Self::new(jobs, busy, Some(Arc::new(writer)), copy))
    }

    /// PostgreSQL's worker: a task on the store runtime, a pooled connection per job.
    fn start_postgres(pool: PgPool) -> Self {
        let (jobs, mut rx) = mpsc::channel::<Job>(64);
        let busy = Arc::new(AtomicU64::new(0));
        let working = busy.clone();
        store_runtime().spawn(async move {
            while let Some(job) = rx.recv().await {
                let started = std::time::Instant::now();
                match pool.conn().await {
                    Ok(conn) => {
                        let mut conn = Conn::Postgres(conn);
                        job(Ok(&mut conn)).await;
                    }
                    Err(e) => job(Err(e)).await,
                }
                working.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
        });
        Self::new(jobs, busy, None, None)
    }

    fn job<R: Send + 'static>(f: impl JobFn<R>) -> (Job, oneshot::Receiver<Result<R, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let result = match conn {
                    Ok(conn) => f(conn).await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            })
        });
        (job, answer)
    }

    /// Runs `f` on the writer thread and waits for its answer. Once handed
    /// over, `f` runs to its end even if this future is dropped.
    async fn call<R: Send + 'static>(&self, f: impl JobFn<R>) -> Result<R, StoreError> {
        let (job, answer) = Self::job(f);
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Like `call`, for threads outside the async runtime (the lease heartbeat).
    fn call_blocking<R: Send + 'static>(&self, f: impl JobFn<R>) -> Result<R, StoreError> {
        let (job, answer) = Self::job(f);
        self.jobs.blocking_send(job).map_err(|_| StoreError::Closed)?;
        answer.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    /// Begins a run; no begin commits once `stop` came. Also returns what this
    /// handle had written by then, so the run's own writes can be told apart.
    pub async fn begin_run(
        &self,
        key: StreamKey,
        cursor_type: CursorType,
        owner: RunOwner,
        stop: Arc<Stop>,
    ) -> Result<(Begun, SaveCounts), StoreError> {
        let writes = self.writes.clone();
        self.call(move |c| {
            Box::pin(async move {
                let begun = delta::begin_run(c, &key, cursor_type, &owner, &stop).await?;
                Ok((begun, writes.counts()))
            })
        })
        .await
    }

    /// Writes `pending` and advances the cursor in one transaction, if `run_id`
    /// still holds the lease and `stop` has not come. `written_before` is what
    /// this handle had written when the run began. On failure the suppliers are
    /// handed back, unwritten or not known to be.
    pub async fn complete_run(
        &self,
        key: StreamKey,
        run_id: String,
        completion: Completion,
        pending: Vec<SupplierRecord>,
        written_before: SaveCounts,
        stop: Arc<Stop>,
    ) -> Result<(StreamState, SaveCounts), CompleteError> {
        let writes = self.writes.clone();
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                // The data this cursor covers must all be durable: refuse after a failed write.
                let result = match (writes.failure(), conn) {
                    (Some(e), _) => Err(StoreError::EarlierWrite(e)),
                    (None, Err(e)) => Err(e),
                    (None, Ok(conn)) => {
                        let mut during_run = writes.counts();
                        during_run.inserted -= written_before.inserted;
                        during_run.updated -= written_before.updated;
                        during_run.unchanged -= written_before.unchanged;
                        delta::complete_run(conn, &key, &run_id, &completion, &pending, during_run, &stop).await
                    }
                };
                let _ = reply.send(match result {
                    Ok((state, counts)) => {
                        writes.count(counts);
                        Ok((state, counts))
                    }
                    Err(error) => Err(CompleteError { error, pending }),
                });
            })
        });
        let closed = || CompleteError {
            error: StoreError::Closed,
            pending: Vec::new(),
        };
        self.jobs.send(job).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    pub async fn fail_run(
        &self,
        key: StreamKey,
        run_id: String,
        error_summary: String,
        updated_by: String,
    ) -> Result<FailOutcome, StoreError> {
        self.call(move |c| {
            Box::pin(async move { delta::fail_run(c, &key, &run_id, &error_summary, &updated_by).await })
        })
        .await
    }

    /// Fails many runs in one transaction.
    pub async fn fail_runs(
        &self,
        runs: Vec<(StreamKey, String)>,
        error_summary: String,
        updated_by: String,
    ) -> Result<Vec<FailOutcome>, StoreError> {
        self.call(move |c| Box::pin(async move { delta::fail_runs(c, &runs, &error_summary, &updated_by).await }))
            .await
    }

    /// Extends the leases of `runs`; returns the run ids that lost theirs.
    pub fn renew_leases_blocking(&self, runs: Vec<(StreamKey, RunOwner)>) -> Result<Vec<String>, StoreError> {
        self.call_blocking(move |c| Box::pin(async move { delta::renew_leases(c, &runs).await }))
    }

    pub async fn get_state(&self, key: StreamKey) -> Result<StreamState, StoreError> {
        self.call(move |c| Box::pin(async move { delta::get_state(c, &key).await }))
            .await
    }

    /// Claims up to `limit` of many slots in one transaction (see [`schedule::claim_many`]).
    pub async fn claim_slots(
        &self,
        claims: Vec<schedule::SlotClaim>,
        owner: schedule::SlotOwner,
        limit: usize,
    ) -> Result<Vec<Option<schedule::Claim>>, StoreError> {
        self.call(move |c| Box::pin(async move { schedule::claim_many(c, &claims, &owner, limit).await }))
            .await
    }

    /// Renews running slots' claims; returns the job ids that lost theirs.
    pub fn renew_slots_blocking(
        &self,
        job_ids: Vec<String>,
        lease: std::time::Duration,
    ) -> Result<Vec<String>, StoreError> {
        self.call_blocking(move |c| Box::pin(async move { schedule::renew(c, &job_ids, lease).await }))
    }

    /// Records how a slot's run ended.
    pub async fn finish_slot(
        &self,
        job_id: String,
        status: &'static str,
        outcome: Option<String>,
    ) -> Result<(), StoreError> {
        self.call(move |c| Box::pin(async move { schedule::finish(c, &job_id, status, outcome.as_deref()).await }))
            .await
    }

    /// Records what job `job_id` used on its runs' history rows.
    pub async fn record_usage(&self, job_id: String, usage: crate::meter::Usage) -> Result<u64, StoreError> {
        self.call(move |c| Box::pin(async move { delta::record_usage(c, &job_id, &usage).await }))
            .await
    }

    /// Sets a source row aside for run `run_id` of stream `key`.
    pub async fn reject(&self, key: StreamKey, run_id: String, row: String, reason: String) -> Result<(), StoreError> {
        self.call(move |c| Box::pin(async move { rejected::reject(c, &key, &run_id, &row, &reason).await }))
            .await
    }

    /// Hands a batch to the writer thread and returns once it is queued (it
    /// waits only while [`BATCHES_IN_FLIGHT`] batches are ahead of it). The batch
    /// is upserted in order, at most [`suppliers::SUPPLIERS_PER_TRANSACTION`]
    /// per transaction; a failure surfaces at the next save, commit or [`Store::drain`].
    /// A batch that reaches the writer after `stop` is not written.
    pub async fn save_suppliers(
        &self,
        customer_number: String,
        batch: Vec<SupplierRecord>,
        stop: Arc<Stop>,
    ) -> Result<usize, StoreError> {
        if let Some(e) = self.writes.failure() {
            return Err(StoreError::EarlierWrite(e));
        }
        let permit = self
            .writes
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let writes = self.writes.clone();
        let count = batch.len();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let written = match (stop.exceeded(), conn) {
                    (Some(limit), _) => Err(format!("{limit}; the batch was not written")),
                    (None, Err(e)) => Err(e.to_string()),
                    (None, Ok(conn)) => suppliers::save_suppliers(conn, &customer_number, &batch)
                        .await
                        .map_err(|e| e.to_string()),
                };
                match written {
                    Ok(counts) => writes.count(counts),
                    Err(e) => {
                        writes.failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                    }
                }
                drop(permit);
            })
        });
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        Ok(count)
    }

    /// Waits until every write handed over so far is done; reports a failed
    /// one, else what all writes of this handle did.
    pub async fn drain(&self) -> Result<SaveCounts, StoreError> {
        self.call(|_| Box::pin(async { Ok(()) })).await?;
        match self.writes.failure() {
            Some(e) => Err(StoreError::EarlierWrite(e)),
            None => Ok(self.writes.counts()),
        }
    }

    /// How long the writer thread has worked so far.
    pub fn busy(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.busy.load(Ordering::Relaxed))
    }

    /// What the writes of this handle did so far (in-flight ones not yet counted).
    pub fn written(&self) -> SaveCounts {
        self.writes.counts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::tests::supplier;
    use std::time::Duration;

    #[tokio::test]
    async fn a_failed_background_write_stops_later_writes_and_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::open_sqlite(&path).unwrap();
        let key = StreamKey {
            customer_number: "c1".into(),
            connector_name: "acme_eu".into(),
            stream_name: "suppliers".into(),
        };
        let owner = RunOwner::this_process("sha", "test", Duration::from_secs(60));
        let stop = Stop::never();
        store
            .begin_run(key.clone(), CursorType::TimestampUtc, owner.clone(), stop.clone())
            .await
            .unwrap();
        assert_eq!(
            store
                .save_suppliers("c1".into(), vec![supplier("S1", "One", Some("Delft"))], stop.clone())
                .await
                .unwrap(),
            1
        );
        store.drain().await.unwrap();

        // Break the schema under the writer: the next background write fails.
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("DROP TABLE supplier_address")
            .unwrap();
        assert_eq!(
            store
                .save_suppliers("c1".into(), vec![supplier("S2", "Two", Some("Gouda"))], stop.clone())
                .await
                .unwrap(),
            1
        );
        let err = store.drain().await.unwrap_err();
        assert!(matches!(err, StoreError::EarlierWrite(_)), "{err}");
        assert!(matches!(
            store.save_suppliers("c1".into(), vec![], stop.clone()).await,
            Err(StoreError::EarlierWrite(_))
        ));
        let completion = Completion {
            cursor_type: CursorType::TimestampUtc,
            new_cursor_value: "2024-01-01T00:00:00Z".into(),
            records_processed: Some(2),
            metadata: None,
            updated_by: "test".into(),
            max_cursor_skew: cursor::DEFAULT_MAX_CURSOR_SKEW,
        };
        let err = store
            .complete_run(
                key.clone(),
                owner.run_id,
                completion,
                vec![supplier("S3", "Three", None)],
                SaveCounts::default(),
                stop,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err.error, StoreError::EarlierWrite(_)),
            "the cursor never covers a lost write: {}",
            err.error
        );
        assert_eq!(err.pending.len(), 1, "the unwritten batch is handed back");
        assert_eq!(store.get_state(key).await.unwrap().committed_cursor_value, None);
    }
}
