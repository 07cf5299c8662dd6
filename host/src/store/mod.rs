//! The persistence seam: delta-state rows and the supplier store.
//!
//! SQLite is the embedded default. One writer thread owns the connection; the
//! async capabilities hand it work through a bounded channel, so a slow disk
//! never blocks the runtime's threads and writes keep their order.

pub mod cursor;
pub mod delta;
pub mod owner;
pub mod schema;
pub mod suppliers;

use crate::bindings::supplier_load::Supplier;
pub use cursor::CursorType;
pub use delta::{Begun, Reset, StreamFilter};
pub use owner::RunOwner;
use serde::Serialize;
use std::path::{Path, PathBuf};
use tokio::sync::{mpsc, oneshot};

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
    Database(#[from] rusqlite::Error),
    #[error("the store's writer thread stopped")]
    Closed,
}

/// Why a database could not be opened; the CLI exits 2 naming the path.
#[derive(Debug, thiserror::Error)]
#[error("--db {}: {reason}", path.display())]
pub struct OpenError {
    pub path: PathBuf,
    pub reason: String,
}

type Job = Box<dyn FnOnce(&mut rusqlite::Connection) + Send>;

/// A handle to the store's writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    jobs: mpsc::Sender<Job>,
}

impl Store {
    /// Opens (creating if needed) and migrates the SQLite database at `path`.
    pub fn open_sqlite(path: &Path) -> Result<Self, OpenError> {
        let conn = schema::open(path)?;
        let (jobs, mut rx) = mpsc::channel::<Job>(64);
        std::thread::Builder::new()
            .name("nuntiq-store".into())
            .spawn(move || {
                let mut conn = conn;
                while let Some(job) = rx.blocking_recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| OpenError {
                path: path.to_owned(),
                reason: format!("failed to start the store thread: {e}"),
            })?;
        Ok(Self { jobs })
    }

    fn job<R: Send + 'static>(
        f: impl FnOnce(&mut rusqlite::Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> (Job, oneshot::Receiver<Result<R, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        (job, answer)
    }

    /// Runs `f` on the writer thread and waits for its answer.
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (job, answer) = Self::job(f);
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Like `call`, for threads outside the async runtime (the lease heartbeat).
    fn call_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (job, answer) = Self::job(f);
        self.jobs.blocking_send(job).map_err(|_| StoreError::Closed)?;
        answer.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    pub async fn begin_run(
        &self,
        key: StreamKey,
        cursor_type: CursorType,
        owner: RunOwner,
    ) -> Result<Begun, StoreError> {
        self.call(move |c| delta::begin_run(c, &key, cursor_type, &owner)).await
    }

    /// Writes `pending` and advances the cursor in one transaction, if `run_id` still holds the lease.
    pub async fn complete_run(
        &self,
        key: StreamKey,
        run_id: String,
        completion: Completion,
        pending: Vec<Supplier>,
    ) -> Result<StreamState, StoreError> {
        self.call(move |c| delta::complete_run(c, &key, &run_id, &completion, &pending))
            .await
    }

    pub async fn fail_run(
        &self,
        key: StreamKey,
        run_id: String,
        error_summary: String,
        updated_by: String,
    ) -> Result<(), StoreError> {
        self.call(move |c| delta::fail_run(c, &key, &run_id, &error_summary, &updated_by))
            .await
    }

    /// Extends the leases of `runs`; returns the run ids that lost theirs.
    pub fn renew_leases_blocking(&self, runs: Vec<(StreamKey, RunOwner)>) -> Result<Vec<String>, StoreError> {
        self.call_blocking(move |c| delta::renew_leases(c, &runs))
    }

    pub async fn get_state(&self, key: StreamKey) -> Result<StreamState, StoreError> {
        self.call(move |c| delta::get_state(c, &key)).await
    }

    /// Upserts suppliers, at most [`suppliers::SUPPLIERS_PER_TRANSACTION`] per transaction.
    pub async fn save_suppliers(&self, customer_number: String, batch: Vec<Supplier>) -> Result<usize, StoreError> {
        self.call(move |c| suppliers::save_suppliers(c, &customer_number, &batch))
            .await
    }
}
