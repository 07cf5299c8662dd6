//! The persistence seam: delta-state rows and the supplier store, on SQLite
//! (the embedded default, a file) or PostgreSQL (shared by many hosts).
//!
//! The logic is written once against [`sql::Conn`]. A [`Store`] handle hands
//! its work to one worker in order — SQLite's is a thread owning the
//! connection, PostgreSQL's a task on the store runtime taking a pooled
//! connection per piece of work — so a slow disk or network never blocks the
//! connector's thread, and writes keep their order.

pub mod backend;
mod children;
pub mod cursor;
pub mod delta;
pub mod jobs;
pub mod nuntiq;
pub mod dry_run;
pub mod owner;
mod pg_suppliers;
mod supplier_doc;
pub mod postgres;
pub mod copy;
pub mod pg_connect;
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
pub use records::{AddressRecord, BankAccountRecord, LocationRecord, SupplierRecord};
use serde::Serialize;
use sql::Conn;
use sqlite::SqliteConn;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
pub use suppliers::SaveCounts;
use backend::{Backend, BoxFuture};
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
    /// The store refused the host's credentials (the Customer API's 401/403).
    #[error("{0}")]
    Denied(String),
    /// The store could not be reached, after retries.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

/// Suppliers handed to the store, with the host memory they take charged to
/// their run until they are written (or given up).
#[derive(Debug)]
pub struct Batch {
    pub records: Vec<SupplierRecord>,
    pub held: crate::budget::Charge,
    /// How they are written (`supplier-load.set-options`).
    pub options: backend::LoadOptions,
}

impl Batch {
    /// A batch no run's budget is charged for (a load outside any run).
    pub fn unbudgeted(records: Vec<SupplierRecord>) -> Self {
        Self {
            records,
            held: crate::budget::RunBudget::unlimited().empty(),
            options: backend::LoadOptions::default(),
        }
    }
}

/// A failed `complete`: why, and the suppliers it was to write, handed back so
/// that a retried complete still writes them (a cursor never passes unwritten data).
#[derive(Debug)]
pub struct CompleteError {
    pub error: StoreError,
    pub pending: Option<Batch>,
}

/// Why a database could not be opened; the CLI exits 2 naming the path.
#[derive(Debug, thiserror::Error)]
#[error("--db {}: {reason}", path.display())]
pub struct OpenError {
    pub path: PathBuf,
    pub reason: String,
}

/// Where the store lives: `--db PATH` (SQLite), `--db postgres://…`, or
/// `--db nuntiq+https://HOST/api` (the Customer API, with a SQL ledger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Db {
    Sqlite(PathBuf),
    Postgres(String),
    /// The Customer API's base URL (`https://HOST/api`).
    Nuntiq(url::Url),
}

/// The scheme prefix that picks the Customer API.
const NUNTIQ_PREFIX: &str = "nuntiq+";

impl Db {
    /// `postgres://` and `postgresql://` URLs are PostgreSQL, `nuntiq+http(s)://`
    /// the Customer API; anything else a SQLite file.
    pub fn parse(db: &str) -> Result<Self, String> {
        if postgres::is_url(db) {
            return Ok(Db::Postgres(db.to_owned()));
        }
        let Some(api) = db.strip_prefix(NUNTIQ_PREFIX) else {
            return Ok(Db::Sqlite(PathBuf::from(db)));
        };
        let url = url::Url::parse(api).map_err(|e| format!("{db:?} is not a URL ({e}); write nuntiq+https://HOST/api"))?;
        if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
            return Err(format!("{db:?}: the Customer API is nuntiq+https://HOST/api (nuntiq+http:// for a local test)"));
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            return Err(format!(
                "{}: the URL carries no credentials or query; the token comes from NUNTIQ_API_TOKEN, \
                 --api-token-env or --api-token-file, never from the command line",
                Db::Nuntiq(url).shown()
            ));
        }
        Ok(Db::Nuntiq(url))
    }

    /// How messages name it (a URL without its password).
    pub fn shown(&self) -> String {
        match self {
            Db::Sqlite(path) => path.display().to_string(),
            Db::Postgres(url) => postgres::redacted(url),
            Db::Nuntiq(url) => {
                let mut shown = url.clone();
                let _ = shown.set_username("");
                let _ = shown.set_password(None);
                shown.set_query(None);
                format!("{NUNTIQ_PREFIX}{shown}")
            }
        }
    }
}

impl std::fmt::Display for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

/// One piece of the store's work, run by the handle's worker in order; it
/// gets the backend, or why there is none.
type Job = Box<dyn for<'c> FnOnce(Result<&'c mut dyn Backend, StoreError>) -> BoxFuture<'c, ()> + Send>;

/// What a job's caller hands over: given the backend, the work as a
/// future that borrows it.
trait JobFn<R>: for<'c> FnOnce(&'c mut dyn Backend) -> BoxFuture<'c, Result<R, StoreError>> + Send + 'static {}
impl<R, F: for<'c> FnOnce(&'c mut dyn Backend) -> BoxFuture<'c, Result<R, StoreError>> + Send + 'static> JobFn<R>
    for F
{
}

/// The runtime PostgreSQL's workers and connections run on: shared by every
/// handle of the process, beside the connectors' own threads.
fn store_runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("nuntiq-store")
                .enable_all()
                .build()
                .map_err(|e| format!("the store's threads could not start: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
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
    /// Set once a call found the database unreachable: a run that then
    /// fails is the store's failure (`store_unavailable`), not the connector's.
    unavailable: Arc<std::sync::atomic::AtomicBool>,
    /// SQLite's writer thread, waited for when the last handle goes (after
    /// `jobs`, so its queue is closed by then).
    _writer: Option<Arc<SqliteWriter>>,
    /// A dry run's private copy of the database, removed with the last handle
    /// (after the writer has closed it).
    _copy: Option<Arc<dry_run::DryRunCopy>>,
}

/// The end of SQLite's writer thread. The last handle waits for it, so the
/// connection is closed before the process exits — a dry run's copy is
/// checkpointed as it closes, so its `-wal` and `-shm` go with it (a process
/// that exited first left them in the temporary directory).
struct SqliteWriter {
    /// The worker's own thread, when it has one (it cannot wait for itself).
    thread: Option<std::thread::ThreadId>,
    closed: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

/// The longest the last handle waits for the writer to finish and close.
const WRITER_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl Drop for SqliteWriter {
    fn drop(&mut self) {
        // A handle dropped by the writer itself cannot wait for it.
        if Some(std::thread::current().id()) == self.thread {
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
            Db::Nuntiq(_) => Err(OpenError {
                path: db.shown().into(),
                reason: "the Customer API is opened with its token and ledger (Store::open_api)".into(),
            }),
            Db::Postgres(url) => {
                let fail = |reason: String| OpenError {
                    path: db.shown().into(),
                    reason,
                };
                let runtime = store_runtime().map_err(fail)?;
                let (tx, rx) = std::sync::mpsc::channel();
                let url = url.clone();
                runtime.spawn(async move {
                    let _ = tx.send(pool_for(&url).await);
                });
                let pool = rx.recv().map_err(|_| fail("the store runtime stopped".into()))??;
                Ok(Self::start_postgres(runtime, pool))
            }
        }
    }

    /// Opens (creating if needed) and migrates the SQLite database at `path`.
    pub fn open_sqlite(path: &Path) -> Result<Self, OpenError> {
        Self::start_sqlite(schema::open(path)?, path, None)
    }

    /// A dry run's store: a private copy of the database at `path` (empty when
    /// there is none yet) in a 0700 directory of its own, as 0600 files,
    /// deleted when the last handle goes; what killed dry runs left is removed
    /// first (see [`dry_run`]). The run reads what the real store holds and
    /// writes nothing to it.
    pub fn open_sqlite_copy(path: &Path) -> Result<Self, OpenError> {
        let fail = |reason: String| OpenError {
            path: path.to_owned(),
            reason,
        };
        let copy = dry_run::DryRunCopy::create().map_err(|e| {
            fail(format!(
                "cannot make the dry run's copy in {}: {e}",
                std::env::temp_dir().display()
            ))
        })?;
        let file = copy.path();
        if path.is_file() {
            // Into the empty 0600 file made for it, which keeps its mode.
            let source = schema::open_read_only(path)?;
            source
                .execute("VACUUM INTO ?1", [file.to_string_lossy()])
                .map_err(|e| fail(format!("cannot copy it for the dry run: {e}")))?;
        }
        let conn = schema::open(&file)?;
        Self::start_sqlite(conn, path, Some(Arc::new(copy)))
    }

    fn new(
        jobs: mpsc::Sender<Job>,
        busy: Arc<AtomicU64>,
        writer: Option<Arc<SqliteWriter>>,
        copy: Option<Arc<dry_run::DryRunCopy>>,
    ) -> Self {
        Self {
            jobs,
            writes: Arc::new(BackgroundWrites {
                permits: Arc::new(Semaphore::new(BATCHES_IN_FLIGHT)),
                failed: Mutex::new(None),
                counts: Mutex::new(SaveCounts::default()),
            }),
            busy,
            unavailable: Arc::default(),
            _writer: writer,
            _copy: copy,
        }
    }

    /// SQLite's worker: a thread that owns the connection.
    fn start_sqlite(
        conn: rusqlite::Connection,
        path: &Path,
        copy: Option<Arc<dry_run::DryRunCopy>>,
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
                    runtime.block_on(job(Ok(&mut conn as &mut dyn Backend)));
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
            thread: Some(thread.thread().id()),
            closed: std::sync::Mutex::new(closed),
        };
        Ok(Self::new(jobs, busy, Some(Arc::new(writer)), copy))
    }

    /// The Customer API as the store (see [`nuntiq`]): delta state and
    /// suppliers go to the API at `api`, with `token`; run history, usage,
    /// rejected rows, leases and slots to the SQL `ledger` beside it.
    pub fn open_api(api: &url::Url, ledger: &Db, token: nuntiq::client::ApiToken) -> Result<Self, OpenError> {
        let fail = |reason: String| OpenError {
            path: PathBuf::from(api.as_str()),
            reason,
        };
        if let Db::Nuntiq(_) = ledger {
            return Err(fail("--ledger must be a SQLite file or a postgres:// URL, not the Customer API".into()));
        }
        let ledger = Self::open(ledger)?;
        let client = nuntiq::client::ApiClient::new(api.clone(), token, nuntiq::client::RetryPolicy::default())
            .map_err(fail)?;
        let runtime = store_runtime().map_err(fail)?;
        let (jobs, mut rx) = mpsc::channel::<Job>(64);
        let busy = Arc::new(AtomicU64::new(0));
        let working = busy.clone();
        let (ended, end) = std::sync::mpsc::channel::<()>();
        let mut backend = nuntiq::NuntiqApi::new(client, ledger);
        runtime.spawn(async move {
            while let Some(job) = rx.recv().await {
                let started = std::time::Instant::now();
                job(Ok(&mut backend as &mut dyn Backend)).await;
                working.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            // The ledger's handle goes with the backend, closing it; then say so.
            drop(backend);
            let _ = ended.send(());
        });
        let worker = SqliteWriter {
            thread: None,
            closed: std::sync::Mutex::new(end),
        };
        Ok(Self::new(jobs, busy, Some(Arc::new(worker)), None))
    }

    /// PostgreSQL's worker: a task on the store runtime, a pooled connection per job.
    fn start_postgres(runtime: &tokio::runtime::Runtime, pool: PgPool) -> Self {
        let (jobs, mut rx) = mpsc::channel::<Job>(64);
        let busy = Arc::new(AtomicU64::new(0));
        let working = busy.clone();
        runtime.spawn(async move {
            // Whether the last supplier batch only added suppliers, carried
            // from one pooled connection to the next (see `pg_suppliers.rs`).
            let mut inserting = false;
            while let Some(job) = rx.recv().await {
                let started = std::time::Instant::now();
                match pool.conn().await {
                    Ok(mut conn) => {
                        conn.inserting = inserting;
                        let mut conn = Conn::Postgres(conn);
                        job(Ok(&mut conn as &mut dyn Backend)).await;
                        if let Conn::Postgres(c) = &conn {
                            inserting = c.inserting;
                        }
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
        self.note(answer.await.map_err(|_| StoreError::Closed)?)
    }

    /// Remembers an unreachable database (see [`Store::saw_unavailable`]).
    fn note<R>(&self, result: Result<R, StoreError>) -> Result<R, StoreError> {
        if matches!(result, Err(StoreError::Unavailable(_))) {
            self.unavailable.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Whether a call of this handle found the database unreachable.
    pub fn saw_unavailable(&self) -> bool {
        self.unavailable.load(Ordering::Relaxed)
    }

    /// Like `call`, for threads outside the async runtime (the lease heartbeat).
    fn call_blocking<R: Send + 'static>(&self, f: impl JobFn<R>) -> Result<R, StoreError> {
        let (job, answer) = Self::job(f);
        self.jobs.blocking_send(job).map_err(|_| StoreError::Closed)?;
        self.note(answer.blocking_recv().map_err(|_| StoreError::Closed)?)
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
                let begun = c.begin_run(&key, cursor_type, &owner, &stop).await?;
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
        pending: Batch,
        written_before: SaveCounts,
        stop: Arc<Stop>,
    ) -> Result<(StreamState, SaveCounts), CompleteError> {
        let writes = self.writes.clone();
        let (reply, answer) = oneshot::channel();
        // Ends when the writer is done with it, on its own thread.
        let span = tracing::info_span!("store_batch", rows = pending.records.len());
        let job: Job = Box::new(move |conn| {
            Box::pin(crate::log::in_span(span, async move {
                // The data this cursor covers must all be durable: refuse after a failed write.
                let result = match (writes.failure(), conn) {
                    (Some(e), _) => Err(StoreError::EarlierWrite(e)),
                    (None, Err(e)) => Err(e),
                    (None, Ok(conn)) => {
                        let mut during_run = writes.counts();
                        during_run.inserted -= written_before.inserted;
                        during_run.updated -= written_before.updated;
                        during_run.unchanged -= written_before.unchanged;
                        during_run.refused -= written_before.refused;
                        conn.complete_run(
                            &key,
                            &run_id,
                            &completion,
                            &pending.records,
                            pending.options,
                            during_run,
                            &stop,
                        )
                            .await
                    }
                };
                let _ = reply.send(match result {
                    Ok((state, counts)) => {
                        writes.count(counts);
                        Ok((state, counts))
                    }
                    Err(error) => Err(CompleteError {
                        error,
                        pending: Some(pending),
                    }),
                });
            }))
        });
        let closed = || CompleteError {
            error: StoreError::Closed,
            pending: None,
        };
        self.jobs.send(job).await.map_err(|_| closed())?;
        let result = answer.await.map_err(|_| closed())?;
        if let Err(CompleteError {
            error: StoreError::Unavailable(_),
            ..
        }) = &result
        {
            self.unavailable.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Records in this (ledger) store a completion another backend committed
    /// and checked; see [`backend::Ledger::record_completion`].
    pub async fn record_completion(
        &self,
        key: StreamKey,
        run_id: String,
        completion: Completion,
        written: SaveCounts,
        stop: Arc<Stop>,
    ) -> Result<StreamState, StoreError> {
        self.call(move |c| Box::pin(async move { c.record_completion(&key, &run_id, &completion, written, &stop).await }))
            .await
    }

    pub async fn fail_run(
        &self,
        key: StreamKey,
        run_id: String,
        error_summary: String,
        updated_by: String,
    ) -> Result<FailOutcome, StoreError> {
        let runs = [(key, run_id)];
        self.call(move |c| {
            Box::pin(async move {
                let mut outcomes = c.fail_runs(&runs, &error_summary, &updated_by).await?;
                outcomes.pop().ok_or_else(|| StoreError::Database("failing a run gave no answer".into()))
            })
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
        self.call(move |c| Box::pin(async move { c.fail_runs(&runs, &error_summary, &updated_by).await }))
            .await
    }

    /// Extends the leases of `runs`; returns the run ids that lost theirs.
    pub fn renew_leases_blocking(&self, runs: Vec<(StreamKey, RunOwner)>) -> Result<Vec<String>, StoreError> {
        self.call_blocking(move |c| Box::pin(async move { c.renew_leases(&runs).await }))
    }

    /// [`Store::renew_leases_blocking`], awaited.
    pub async fn renew_leases(&self, runs: Vec<(StreamKey, RunOwner)>) -> Result<Vec<String>, StoreError> {
        self.call(move |c| Box::pin(async move { c.renew_leases(&runs).await }))
            .await
    }

    pub async fn get_state(&self, key: StreamKey) -> Result<StreamState, StoreError> {
        self.call(move |c| Box::pin(async move { c.get_state(&key).await }))
            .await
    }

    /// Claims up to `limit` of many slots in one transaction (see [`schedule::claim_many`]).
    pub async fn claim_slots(
        &self,
        claims: Vec<schedule::SlotClaim>,
        owner: schedule::SlotOwner,
        limit: usize,
    ) -> Result<Vec<Option<schedule::Claim>>, StoreError> {
        self.call(move |c| Box::pin(async move { c.claim_slots(&claims, &owner, limit).await }))
            .await
    }

    /// Renews running slots' claims; returns the job ids that lost theirs.
    pub fn renew_slots_blocking(&self, job_ids: Vec<String>, lease: std::time::Duration) -> Result<Vec<String>, StoreError> {
        self.call_blocking(move |c| Box::pin(async move { c.renew_slots(&job_ids, lease).await }))
    }

    /// [`Store::renew_slots_blocking`], awaited.
    pub async fn renew_slots(&self, job_ids: Vec<String>, lease: std::time::Duration) -> Result<Vec<String>, StoreError> {
        self.call(move |c| Box::pin(async move { c.renew_slots(&job_ids, lease).await }))
            .await
    }

    /// Records how a slot's run ended.
    pub async fn finish_slot(
        &self,
        job_id: String,
        status: impl Into<String>,
        outcome: Option<String>,
    ) -> Result<(), StoreError> {
        let status = status.into();
        self.call(move |c| Box::pin(async move { c.finish_slot(&job_id, &status, outcome.as_deref()).await }))
            .await
    }

    /// Records slots that end without a run (see [`schedule::record_unrun`]).
    pub async fn record_unrun(
        &self,
        slots: Vec<schedule::Unrun>,
        owner: schedule::SlotOwner,
    ) -> Result<Vec<bool>, StoreError> {
        self.call(move |c| Box::pin(async move { c.record_unrun(&slots, &owner).await }))
            .await
    }

    /// Puts a scheduled run's job, slot and error kind on its history rows
    /// (see [`delta::record_job_end`]).
    pub async fn record_job_end(&self, end: delta::JobEnd) -> Result<(), StoreError> {
        self.call(move |c| Box::pin(async move { c.record_job_end(&end).await }))
            .await
    }

    /// The stored jobs, unless their generation is still `known` (see [`jobs::load`]).
    pub async fn load_jobs(&self, known: Option<i64>) -> Result<Option<jobs::JobSet>, StoreError> {
        self.call(move |c| Box::pin(async move { c.load_jobs(known).await })).await
    }

    /// Streams marked running whose lease expired (see [`schedule::stale_streams`]).
    pub async fn stale_streams(&self) -> Result<i64, StoreError> {
        self.call(move |c| Box::pin(async move { c.stale_streams().await })).await
    }

    /// Writes a `serve` process's heartbeat; returns how many hosts are live.
    pub async fn heartbeat(&self, me: schedule::HostBeat) -> Result<usize, StoreError> {
        self.call(move |c| Box::pin(async move { c.heartbeat(&me).await })).await
    }

    /// Marks dead the `serve` processes of this machine that no longer run; returns their pids.
    pub async fn free_dead_here(&self, me: schedule::HostBeat) -> Result<Vec<i64>, StoreError> {
        self.call(move |c| Box::pin(async move { c.free_dead_here(&me).await })).await
    }

    /// The streams marked running by process `pid` on `host`.
    pub async fn held_streams(&self, host: String, pid: u32) -> Result<Vec<schedule::HeldStream>, StoreError> {
        self.call(move |c| Box::pin(async move { c.held_streams(&host, pid).await })).await
    }

    /// Fails and releases streams whose run is over (see [`schedule::release_streams`]).
    pub async fn release_streams(&self, streams: Vec<schedule::HeldStream>, why: String) -> Result<usize, StoreError> {
        self.call(move |c| Box::pin(async move { c.release_streams(&streams, &why).await }))
            .await
    }

    /// Records what job `job_id` used on its runs' history rows.
    pub async fn record_usage(&self, job_id: String, usage: crate::meter::Usage) -> Result<u64, StoreError> {
        self.call(move |c| Box::pin(async move { c.record_usage(&job_id, &usage).await }))
            .await
    }

    /// Sets a source row aside for run `run_id` of stream `key`.
    pub async fn reject(&self, key: StreamKey, run_id: String, row: String, reason: String) -> Result<(), StoreError> {
        self.call(move |c| Box::pin(async move { c.reject(&key, &run_id, &row, &reason).await }))
            .await
    }

    /// Hands a batch to the writer thread and returns once it is queued (it
    /// waits only while [`BATCHES_IN_FLIGHT`] batches are ahead of it). The batch
    /// is upserted in order, at most [`suppliers::SUPPLIERS_PER_TRANSACTION`]
    /// per transaction; a failure surfaces at the next save, commit or [`Store::drain`].
    /// A batch that reaches the writer after `stop` is not written.
    pub async fn save_suppliers(&self, customer_number: String, batch: Batch, stop: Arc<Stop>) -> Result<usize, StoreError> {
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
        let count = batch.records.len();
        // Ends when the writer is done with it, on its own thread.
        let span = tracing::info_span!("store_batch", rows = count);
        let job: Job = Box::new(move |conn| {
            Box::pin(crate::log::in_span(span, async move {
                let written = match (stop.exceeded(), conn) {
                    (Some(limit), _) => Err(format!("{limit}; the batch was not written")),
                    (None, Err(e)) => Err(e.to_string()),
                    (None, Ok(conn)) => conn
                        .save_suppliers(&customer_number, &batch.records, batch.options)
                        .await
                        .map(|saved| saved.counts)
                        .map_err(|e| e.to_string()),
                };
                drop(batch);
                match written {
                    Ok(counts) => writes.count(counts),
                    Err(e) => {
                        writes.failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                    }
                }
                drop(permit);
            }))
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

    fn batch(records: Vec<SupplierRecord>) -> Batch {
        Batch::unbudgeted(records)
    }

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
                .save_suppliers("c1".into(), batch(vec![supplier("S1", "One", Some("Delft"))]), stop.clone())
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
                .save_suppliers("c1".into(), batch(vec![supplier("S2", "Two", Some("Gouda"))]), stop.clone())
                .await
                .unwrap(),
            1
        );
        let err = store.drain().await.unwrap_err();
        assert!(matches!(err, StoreError::EarlierWrite(_)), "{err}");
        assert!(matches!(
            store.save_suppliers("c1".into(), batch(vec![]), stop.clone()).await,
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
                batch(vec![supplier("S3", "Three", None)]),
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
        assert_eq!(err.pending.unwrap().records.len(), 1, "the unwritten batch is handed back");
        assert_eq!(store.get_state(key).await.unwrap().committed_cursor_value, None);
    }
}
