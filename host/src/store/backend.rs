//! The store's seam, one trait per capability (Spin's `StoreManager` shape):
//! delta state, the supplier sink and the host's own ledger, each as domain
//! operations. SQL (SQLite, PostgreSQL) implements all three on one
//! connection, so `complete` writes the run's final batch and advances the
//! cursor in one transaction; the Nuntiq Customer API implements delta state
//! and the sink over HTTP and keeps a SQL ledger beside it.
//!
//! The ordered write-behind queue ([`super::Store`]) stays above the seam and
//! is the same for every backend: a cursor is committed only behind every
//! batch handed over before it.

use super::delta::{self, Begun, FailOutcome};
use super::schedule::{self, Claim, HeldStream, HostBeat, SlotClaim, SlotOwner, Unrun};
use super::sql::Conn;
use super::{Completion, CursorType, RunOwner, SaveCounts, StoreError, StreamKey, StreamState, SupplierRecord};
use crate::limits::Stop;
use crate::meter::Usage;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A backend operation's future, borrowing the backend and its arguments.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a batch of suppliers is written (contract 0.3.0's load options).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Replace every supplier of the customer: the first batch written with it
    /// deletes the rest first (see [`super::Store::save_suppliers`]).
    pub full_load: bool,
    /// Add addresses a location does not have yet; never replace stored ones.
    pub address_insert_only: bool,
    /// Add bank accounts a location does not have yet; never replace stored ones.
    pub bank_insert_only: bool,
}

/// What a batch written to the sink came to.
#[derive(Debug, Default)]
pub struct Saved {
    pub counts: SaveCounts,
    /// Rows the sink refused one by one (the Customer API's 400), with its
    /// message: set aside as rejected, the rest written.
    pub refused: Vec<(SupplierRecord, String)>,
}

/// Delta state: a stream's cursor and status, and the runs that move them.
pub trait DeltaBackend: Send {
    /// Begins a run (status `running`) and hands out the committed cursor.
    fn begin_run<'a>(
        &'a mut self,
        key: &'a StreamKey,
        cursor_type: CursorType,
        owner: &'a RunOwner,
        stop: &'a Arc<Stop>,
    ) -> BoxFuture<'a, Result<Begun, StoreError>>;

    /// Writes the run's final batch and advances the cursor: both durable or
    /// neither (SQL: one transaction; an HTTP backend: every batch
    /// acknowledged before the cursor call). `during_run` is what the run's
    /// earlier batches wrote, for its history.
    fn complete_run<'a>(
        &'a mut self,
        key: &'a StreamKey,
        run_id: &'a str,
        completion: &'a Completion,
        pending: &'a [SupplierRecord],
        options: LoadOptions,
        during_run: SaveCounts,
        stop: &'a Arc<Stop>,
    ) -> BoxFuture<'a, Result<(StreamState, SaveCounts), StoreError>>;

    /// Fails runs; each answer says how its run had ended.
    fn fail_runs<'a>(
        &'a mut self,
        runs: &'a [(StreamKey, String)],
        error_summary: &'a str,
        updated_by: &'a str,
    ) -> BoxFuture<'a, Result<Vec<FailOutcome>, StoreError>>;

    /// The stream's state (synthetic `idle` when it never ran).
    fn get_state<'a>(&'a mut self, key: &'a StreamKey) -> BoxFuture<'a, Result<StreamState, StoreError>>;
}

/// Where suppliers go.
pub trait SupplierSink: Send {
    /// Upserts `batch` for `customer_number`.
    fn save_suppliers<'a>(
        &'a mut self,
        customer_number: &'a str,
        batch: &'a [SupplierRecord],
        options: LoadOptions,
    ) -> BoxFuture<'a, Result<Saved, StoreError>>;
}

/// What the host keeps for itself: leases, rejected rows, usage, slots.
pub trait Ledger: Send {
    /// Extends the leases of `runs`; returns the run ids that lost theirs.
    fn renew_leases<'a>(
        &'a mut self,
        runs: &'a [(StreamKey, RunOwner)],
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;

    /// Sets a source row aside for run `run_id` of stream `key`.
    fn reject<'a>(
        &'a mut self,
        key: &'a StreamKey,
        run_id: &'a str,
        row: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Records what job `job_id` used on its runs' history rows.
    fn record_usage<'a>(&'a mut self, job_id: &'a str, usage: &'a Usage) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Claims up to `limit` of many slots in one transaction.
    fn claim_slots<'a>(
        &'a mut self,
        claims: &'a [SlotClaim],
        owner: &'a SlotOwner,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Option<Claim>>, StoreError>>;

    /// Renews running slots' claims; returns the job ids that lost theirs.
    fn renew_slots<'a>(
        &'a mut self,
        job_ids: &'a [String],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;

    /// Records in the run history a completion another backend committed and
    /// checked (its cursor taken as it is); returns the stream's mirror.
    fn record_completion<'a>(
        &'a mut self,
        key: &'a StreamKey,
        run_id: &'a str,
        completion: &'a Completion,
        written: SaveCounts,
        stop: &'a Arc<Stop>,
    ) -> BoxFuture<'a, Result<StreamState, StoreError>>;

    /// Records how a slot's run ended.
    fn finish_slot<'a>(
        &'a mut self,
        job_id: &'a str,
        status: &'a str,
        outcome: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Puts a scheduled run's job, slot and error kind on its history rows
    /// (one row of its own when no stream began).
    fn record_job_end<'a>(&'a mut self, end: &'a delta::JobEnd) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Streams marked running whose lease expired.
    fn stale_streams(&mut self) -> BoxFuture<'_, Result<i64, StoreError>>;

    /// Writes a `serve` process's heartbeat; returns how many hosts are live.
    fn heartbeat<'a>(&'a mut self, me: &'a HostBeat) -> BoxFuture<'a, Result<usize, StoreError>>;

    /// Marks dead the `serve` processes of this machine that no longer run.
    fn free_dead_here<'a>(&'a mut self, me: &'a HostBeat) -> BoxFuture<'a, Result<Vec<i64>, StoreError>>;

    /// The streams marked running by a process.
    fn held_streams<'a>(&'a mut self, host: &'a str, pid: u32) -> BoxFuture<'a, Result<Vec<HeldStream>, StoreError>>;

    /// Fails and releases streams whose run is over.
    fn release_streams<'a>(
        &'a mut self,
        streams: &'a [HeldStream],
        why: &'a str,
    ) -> BoxFuture<'a, Result<usize, StoreError>>;

    /// The stored jobs (control plane), unless their generation is still `known`.
    fn load_jobs(&mut self, known: Option<i64>) -> BoxFuture<'_, Result<Option<super::jobs::JobSet>, StoreError>>;

    /// Records slots that end without a run (missed, skipped); answers which it recorded.
    fn record_unrun<'a>(
        &'a mut self,
        slots: &'a [Unrun],
        owner: &'a SlotOwner,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>>;
}

/// A store: all three capabilities' backends, as the store's worker holds it.
pub trait Backend: DeltaBackend + SupplierSink + Ledger {}
impl<T: DeltaBackend + SupplierSink + Ledger> Backend for T {}

impl DeltaBackend for Conn {
    fn begin_run<'a>(
        &'a mut self,
        key: &'a StreamKey,
        cursor_type: CursorType,
        owner: &'a RunOwner,
        stop: &'a Arc<Stop>,
    ) -> BoxFuture<'a, Result<Begun, StoreError>> {
        Box::pin(delta::begin_run(self, key, cursor_type, owner, stop))
    }

    fn complete_run<'a>(
        &'a mut self,
        key: &'a StreamKey,
        run_id: &'a str,
        completion: &'a Completion,
        pending: &'a [SupplierRecord],
        options: LoadOptions,
        during_run: SaveCounts,
        stop: &'a Arc<Stop>,
    ) -> BoxFuture<'a, Result<(StreamState, SaveCounts), StoreError>> {
        Box::pin(delta::complete_run(
            self, key, run_id, completion, pending, options, during_run, stop,
        ))
    }

    fn fail_runs<'a>(
        &'a mut self,
        runs: &'a [(StreamKey, String)],
        error_summary: &'a str,
        updated_by: &'a str,
    ) -> BoxFuture<'a, Result<Vec<FailOutcome>, StoreError>> {
        Box::pin(delta::fail_runs(self, runs, error_summary, updated_by))
    }

    fn get_state<'a>(&'a mut self, key: &'a StreamKey) -> BoxFuture<'a, Result<StreamState, StoreError>> {
        Box::pin(delta::get_state(self, key))
    }
}

impl SupplierSink for Conn {
    fn save_suppliers<'a>(
        &'a mut self,
        customer_number: &'a str,
        batch: &'a [SupplierRecord],
        options: LoadOptions,
    ) -> BoxFuture<'a, Result<Saved, StoreError>> {
        Box::pin(async move {
            let counts = super::suppliers::save_suppliers(self, customer_number, batch, options).await?;
            Ok(Saved {
                counts,
                refused: Vec::new(),
            })
        })
    }
}

impl Ledger for Conn {
    fn renew_leases<'a>(
        &'a mut self,
        runs: &'a [(StreamKey, RunOwner)],
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(delta::renew_leases(self, runs))
    }

    fn reject<'a>(
        &'a mut self,
        key: &'a StreamKey,
        run_id: &'a str,
        row: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(super::rejected::reject(self, key, run_id, row, reason))
    }

    fn record_usage<'a>(&'a mut self, job_id: &'a str, usage: &'a Usage) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(delta::record_usage(self, job_id, usage))
    }

    fn claim_slots<'a>(
        &'a mut self,
        claims: &'a [SlotClaim],
        owner: &'a SlotOwner,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Option<Claim>>, StoreError>> {
        Box::pin(schedule::claim_many(self, claims, owner, limit))
    }

    fn record_completion<'a>(
        &'a mut self,
        key: &'a StreamKey,
        run_id: &'a str,
        completion: &'a Completion,
        written: SaveCounts,
        stop: &'a Arc<Stop>,
    ) -> BoxFuture<'a, Result<StreamState, StoreError>> {
        Box::pin(delta::record_completion(self, key, run_id, completion, written, stop))
    }

    fn renew_slots<'a>(
        &'a mut self,
        job_ids: &'a [String],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(schedule::renew(self, job_ids, lease))
    }

    fn finish_slot<'a>(
        &'a mut self,
        job_id: &'a str,
        status: &'a str,
        outcome: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(schedule::finish(self, job_id, status, outcome))
    }

    fn record_unrun<'a>(
        &'a mut self,
        slots: &'a [Unrun],
        owner: &'a SlotOwner,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        Box::pin(schedule::record_unrun(self, slots, owner))
    }

    fn record_job_end<'a>(&'a mut self, end: &'a delta::JobEnd) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(delta::record_job_end(self, end))
    }

    fn stale_streams(&mut self) -> BoxFuture<'_, Result<i64, StoreError>> {
        Box::pin(schedule::stale_streams(self))
    }

    fn heartbeat<'a>(&'a mut self, me: &'a HostBeat) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(schedule::heartbeat(self, me))
    }

    fn free_dead_here<'a>(&'a mut self, me: &'a HostBeat) -> BoxFuture<'a, Result<Vec<i64>, StoreError>> {
        Box::pin(schedule::free_dead_here(self, me))
    }

    fn held_streams<'a>(&'a mut self, host: &'a str, pid: u32) -> BoxFuture<'a, Result<Vec<HeldStream>, StoreError>> {
        Box::pin(schedule::held_streams(self, host, pid))
    }

    fn release_streams<'a>(
        &'a mut self,
        streams: &'a [HeldStream],
        why: &'a str,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(schedule::release_streams(self, streams, why))
    }

    fn load_jobs(&mut self, known: Option<i64>) -> BoxFuture<'_, Result<Option<super::jobs::JobSet>, StoreError>> {
        Box::pin(super::jobs::load(self, known))
    }
}
