//! The Nuntiq Customer API as a store: delta state in the platform's
//! delta-state service and suppliers upserted through `POST /v1/supplier`
//! (nuntiq-platform.md §6–§8), with a local SQL ledger beside it for what the
//! API has no place for — run history, usage, rejected rows, leases, slots.
//!
//! The guarantees of the SQL stores hold over the network:
//! - the store's worker runs its work in order, so `complete` is sent only
//!   after every batch handed over before it was acknowledged, and its own
//!   final batch before the cursor;
//! - transient failures are retried ([`client`]); upserts make that safe, and a
//!   `complete` whose answer was lost is recognised on its retry;
//! - a batch the API refuses with 400 is split to find the rows it refuses:
//!   those are set aside as rejected (with the API's message) and the rest
//!   written;
//! - 401 and 403 end the run at once (`store_denied`), its cursor untouched.
//!
//! Concurrency is the platform's recipe (the service has none of its own): a
//! stream the API shows `running`, begun less than an hour ago, is
//! `already_running` — unless this host's ledger knows that run as its own
//! and dead (it took it over), so a killed run is resumed at once.

pub mod client;
pub mod wire;

use super::backend::{BoxFuture, DeltaBackend, Ledger, LoadOptions, Saved, SupplierSink};
use super::delta::{Begun, FailOutcome};
use super::schedule::{Claim, HeldStream, HostBeat, SlotClaim, SlotOwner, Unrun};
use super::{Completion, CursorType, RunOwner, RunStatus, SaveCounts, Store, StoreError, StreamKey, StreamState};
use crate::limits::{LimitExceeded, Stop};
use crate::meter::Usage;
use crate::store::SupplierRecord;
use client::{ApiClient, ApiError};
use reqwest::Method;
use std::sync::Arc;
use std::time::Duration;

/// A run the API shows `running` for less than this is another's, still going.
const RUNNING_IS_LIVE_FOR: chrono::Duration = chrono::Duration::minutes(60);

/// The Customer API backend of one store handle.
pub struct NuntiqApi {
    client: ApiClient,
    ledger: Store,
    /// The run the handle began last: the API's refused rows are set aside under it.
    current: Option<(StreamKey, String)>,
    /// The customers whose first write of this handle went out: only that
    /// one carries `full_load`, or each batch would wipe the one before.
    full_load_sent: std::collections::HashSet<String>,
}

impl NuntiqApi {
    pub fn new(client: ApiClient, ledger: Store) -> Self {
        Self {
            client,
            ledger,
            current: None,
            full_load_sent: Default::default(),
        }
    }

    fn stream_url(&self, key: &StreamKey, op: Option<&str>) -> url::Url {
        let mut segments = vec![
            "delta",
            "streams",
            key.connector_name.as_str(),
            key.stream_name.as_str(),
        ];
        segments.extend(op);
        self.client.url(&segments)
    }

    /// One delta-state call, its answer read as the stream's state.
    async fn delta(
        &self,
        key: &StreamKey,
        method: Method,
        op: Option<&str>,
        body: Option<Vec<u8>>,
        stop: &Arc<Stop>,
    ) -> Result<StreamState, StoreError> {
        let url = self.stream_url(key, op);
        let answer = self
            .client
            .send(method.clone(), &url, &key.customer_number, body.as_deref(), stop)
            .await
            .map_err(|e| store_error(e, &format!("{method} {url}"), stop))?;
        wire::stream_state(key, &answer.body)
            .map_err(|why| StoreError::Database(format!("{method} {url} answered, but {why}")))
    }

    /// Gives the ledger's run up when the API would not begin it.
    async fn release(&self, key: &StreamKey, owner: &RunOwner, why: &str) {
        let _ = self
            .ledger
            .fail_run(
                key.clone(),
                owner.run_id.clone(),
                why.to_owned(),
                owner.updated_by.clone(),
            )
            .await;
    }

    /// Upserts `batch` in requests of at most 1000; a request refused with 400
    /// is split until the rows it refuses are found, and those are set aside.
    async fn post_suppliers(
        &mut self,
        customer: &str,
        batch: &[SupplierRecord],
        options: LoadOptions,
        stop: &Arc<Stop>,
    ) -> Result<SaveCounts, StoreError> {
        let mut counts = SaveCounts::default();
        for chunk in batch.chunks(wire::SUPPLIERS_PER_REQUEST) {
            let mut pending = vec![chunk];
            while let Some(rows) = pending.pop() {
                // Only the first request of the run carries full_load.
                let full_load = options.full_load && self.full_load_sent.insert(customer.to_owned());
                let sent = LoadOptions { full_load, ..options };
                let url = self.client.url(&["supplier"]);
                let body = wire::supplier_post(rows, sent);
                match self.client.send(Method::POST, &url, customer, Some(&body), stop).await {
                    Ok(answer) => counts.add(wire::import_counts(&answer.body, rows.len())),
                    Err(ApiError::Invalid(_)) if rows.len() > 1 => {
                        if full_load {
                            // Refused, so nothing was replaced yet: the next request carries it.
                            self.full_load_sent.remove(customer);
                        }
                        let (a, b) = rows.split_at(rows.len() / 2);
                        // Depth first, first half first: rows keep their order.
                        pending.push(b);
                        pending.push(a);
                    }
                    Err(ApiError::Invalid(message)) => {
                        if full_load {
                            self.full_load_sent.remove(customer);
                        }
                        self.set_aside(&rows[0], &message).await?;
                        counts.refused += 1;
                    }
                    Err(e) => return Err(store_error(e, &format!("POST {url}"), stop)),
                }
            }
        }
        Ok(counts)
    }

    /// Keeps a supplier the API refused as a rejected row of the current run.
    async fn set_aside(&self, supplier: &SupplierRecord, message: &str) -> Result<(), StoreError> {
        let (key, run_id) = self.current.clone().unwrap_or_else(|| {
            (
                StreamKey {
                    customer_number: String::new(),
                    connector_name: String::new(),
                    stream_name: "suppliers".into(),
                },
                String::new(),
            )
        });
        // The API's message may quote the row: its bank account numbers go.
        let numbers = supplier
            .locations
            .iter()
            .flat_map(|l| &l.bank_accounts)
            .filter_map(|b| b.bank_account_number.as_deref());
        let reason = crate::log::Redactor::new(numbers).clean(&format!("the Customer API refused it: {message}"), 1024);
        self.ledger
            .reject(key, run_id, wire::rejected_row(supplier), reason)
            .await
    }
}

/// An API failure as the store reports it; 401 and 403 also stop the run.
fn store_error(e: ApiError, call: &str, stop: &Stop) -> StoreError {
    match e {
        ApiError::Unauthorized(m) | ApiError::Forbidden(m) => {
            let message = format!(
                "{call}: the Customer API refused the host's token ({m}); check NUNTIQ_API_TOKEN (or \
                 --api-token-env, --api-token-file) and the token's permissions for this customer"
            );
            stop.exceed(LimitExceeded::Store {
                kind: "store_denied",
                message: message.clone(),
            });
            StoreError::Denied(message)
        }
        ApiError::Invalid(m) => StoreError::Invalid(format!("{call}: {m}")),
        ApiError::NotFound(m) => StoreError::Database(format!("{call}: 404 {m}")),
        ApiError::Unprocessable { code, message } => match code.as_deref() {
            Some("CURSOR_REGRESSION") => StoreError::CursorRegression(message),
            Some("INVALID_CURSOR") => StoreError::InvalidCursor(message),
            _ => StoreError::Invalid(format!(
                "{call}: 422 {}{message}",
                code.map(|c| format!("{c}: ")).unwrap_or_default()
            )),
        },
        ApiError::Unavailable(m) => StoreError::Unavailable(m),
        ApiError::Stopped(m) => StoreError::Stopped(m),
    }
}

/// Whether the API's `running` stream was begun less than an hour ago.
fn recently_started(state: &StreamState) -> bool {
    state
        .started_at_utc
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| chrono::Utc::now() - t.to_utc() < RUNNING_IS_LIVE_FOR)
}

impl DeltaBackend for NuntiqApi {
    fn begin_run<'a>(
        &'a mut self,
        key: &'a StreamKey,
        cursor_type: CursorType,
        owner: &'a RunOwner,
        stop: &'a Arc<Stop>,
    ) -> BoxFuture<'a, Result<Begun, StoreError>> {
        Box::pin(async move {
            // The host's own lease first: no two runs sharing this ledger overlap.
            let (local, _) = self
                .ledger
                .begin_run(key.clone(), cursor_type, owner.clone(), stop.clone())
                .await?;
            let state = match self.delta(key, Method::GET, None, None, stop).await {
                Ok(state) => state,
                Err(e) => {
                    self.release(key, owner, &format!("the Customer API could not be asked: {e}"))
                        .await;
                    return Err(e);
                }
            };
            // The platform's recipe: a run it shows going, begun within the hour, is
            // another's — unless the ledger just took it over from a dead run of its own.
            if state.status == RunStatus::Running && local.took_over.is_none() && recently_started(&state) {
                let message = format!(
                    "the Customer API shows a run of stream {key} going since {}; another worker runs it \
                     (a run begun less than 60 minutes ago is left alone). If none does, it is taken over an \
                     hour after it began",
                    state.started_at_utc.as_deref().unwrap_or("?")
                );
                self.release(key, owner, &message).await;
                return Err(StoreError::AlreadyRunning(message));
            }
            if let Some(stored) = state.cursor_type
                && stored != cursor_type
                && state.committed_cursor_value.is_some()
            {
                let message = format!(
                    "stream {key} keeps a {stored} cursor in the Customer API; this run asked for {cursor_type}"
                );
                self.release(key, owner, &message).await;
                return Err(StoreError::CursorTypeMismatch(message));
            }
            let begun = match self
                .delta(
                    key,
                    Method::POST,
                    Some("begin"),
                    Some(wire::begin_body(cursor_type)),
                    stop,
                )
                .await
            {
                Ok(begun) => begun,
                Err(e) => {
                    self.release(key, owner, &format!("the Customer API did not begin it: {e}"))
                        .await;
                    return Err(e);
                }
            };
            self.current = Some((key.clone(), owner.run_id.clone()));
            Ok(Begun {
                lower_bound: begun.committed_cursor_value,
                took_over: local.took_over,
            })
        })
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
        Box::pin(async move {
            // Every earlier batch was acknowledged (the worker is ordered); the final one, then the cursor.
            let counts = self
                .post_suppliers(&key.customer_number, pending, options, stop)
                .await?;
            if let Some(limit) = stop.exceeded() {
                return Err(StoreError::Stopped(format!("{limit}; the cursor was not committed")));
            }
            let committed = self
                .delta(
                    key,
                    Method::POST,
                    Some("complete"),
                    Some(wire::complete_body(completion)),
                    stop,
                )
                .await;
            let state = match committed {
                Ok(state) => state,
                // A retried complete whose first answer was lost: the API has it already.
                Err(StoreError::CursorRegression(message)) => {
                    let now = self.delta(key, Method::GET, None, None, stop).await?;
                    if now.status == RunStatus::Succeeded
                        && now.committed_cursor_value.as_deref() == Some(completion.new_cursor_value.as_str())
                    {
                        now
                    } else {
                        return Err(StoreError::CursorRegression(message));
                    }
                }
                Err(e) => return Err(e),
            };
            let mut written = during_run;
            written.add(counts);
            // The history follows the API's word; a ledger that cannot say so is logged by the caller.
            self.ledger
                .record_completion(
                    key.clone(),
                    run_id.to_owned(),
                    completion.clone(),
                    written,
                    stop.clone(),
                )
                .await?;
            if self.current.as_ref().is_some_and(|(_, id)| id == run_id) {
                self.current = None;
            }
            Ok((state, counts))
        })
    }

    fn fail_runs<'a>(
        &'a mut self,
        runs: &'a [(StreamKey, String)],
        error_summary: &'a str,
        updated_by: &'a str,
    ) -> BoxFuture<'a, Result<Vec<FailOutcome>, StoreError>> {
        Box::pin(async move {
            // The ledger says which runs were still running; only those are failed in the API.
            let outcomes = self
                .ledger
                .fail_runs(runs.to_vec(), error_summary.to_owned(), updated_by.to_owned())
                .await?;
            // A failure must reach the API even after a stop: it is what ends the run there.
            let never = Stop::never();
            for ((key, _), outcome) in runs.iter().zip(&outcomes) {
                if *outcome == FailOutcome::Failed {
                    self.delta(
                        key,
                        Method::POST,
                        Some("fail"),
                        Some(wire::fail_body(error_summary)),
                        &never,
                    )
                    .await?;
                }
            }
            Ok(outcomes)
        })
    }

    fn get_state<'a>(&'a mut self, key: &'a StreamKey) -> BoxFuture<'a, Result<StreamState, StoreError>> {
        Box::pin(async move { self.delta(key, Method::GET, None, None, &Stop::never()).await })
    }
}

impl SupplierSink for NuntiqApi {
    fn save_suppliers<'a>(
        &'a mut self,
        customer_number: &'a str,
        batch: &'a [SupplierRecord],
        options: LoadOptions,
    ) -> BoxFuture<'a, Result<Saved, StoreError>> {
        Box::pin(async move {
            let counts = self
                .post_suppliers(customer_number, batch, options, &Stop::never())
                .await?;
            Ok(Saved {
                counts,
                refused: Vec::new(),
            })
        })
    }
}

impl Ledger for NuntiqApi {
    fn renew_leases<'a>(
        &'a mut self,
        runs: &'a [(StreamKey, RunOwner)],
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(self.ledger.renew_leases(runs.to_vec()))
    }

    fn reject<'a>(
        &'a mut self,
        key: &'a StreamKey,
        run_id: &'a str,
        row: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(
            self.ledger
                .reject(key.clone(), run_id.to_owned(), row.to_owned(), reason.to_owned()),
        )
    }

    fn record_usage<'a>(&'a mut self, job_id: &'a str, usage: &'a Usage) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(self.ledger.record_usage(job_id.to_owned(), *usage))
    }

    fn claim_slots<'a>(
        &'a mut self,
        claims: &'a [SlotClaim],
        owner: &'a SlotOwner,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Option<Claim>>, StoreError>> {
        Box::pin(self.ledger.claim_slots(claims.to_vec(), owner.clone(), limit))
    }

    fn renew_slots<'a>(
        &'a mut self,
        job_ids: &'a [String],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(self.ledger.renew_slots(job_ids.to_vec(), lease))
    }

    fn record_completion<'a>(
        &'a mut self,
        key: &'a StreamKey,
        run_id: &'a str,
        completion: &'a Completion,
        written: SaveCounts,
        stop: &'a Arc<Stop>,
    ) -> BoxFuture<'a, Result<StreamState, StoreError>> {
        Box::pin(self.ledger.record_completion(
            key.clone(),
            run_id.to_owned(),
            completion.clone(),
            written,
            stop.clone(),
        ))
    }

    fn finish_slot<'a>(
        &'a mut self,
        job_id: &'a str,
        status: &'a str,
        outcome: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(
            self.ledger
                .finish_slot(job_id.to_owned(), status.to_owned(), outcome.map(str::to_owned)),
        )
    }

    fn record_unrun<'a>(
        &'a mut self,
        slots: &'a [Unrun],
        owner: &'a SlotOwner,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        Box::pin(self.ledger.record_unrun(slots.to_vec(), owner.clone()))
    }

    fn record_job_end<'a>(&'a mut self, end: &'a super::delta::JobEnd) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.ledger.record_job_end(end.clone()))
    }

    fn stale_streams(&mut self) -> BoxFuture<'_, Result<i64, StoreError>> {
        Box::pin(self.ledger.stale_streams())
    }

    fn heartbeat<'a>(&'a mut self, me: &'a HostBeat) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(self.ledger.heartbeat(me.clone()))
    }

    fn free_dead_here<'a>(&'a mut self, me: &'a HostBeat) -> BoxFuture<'a, Result<Vec<i64>, StoreError>> {
        Box::pin(self.ledger.free_dead_here(me.clone()))
    }

    fn held_streams<'a>(&'a mut self, host: &'a str, pid: u32) -> BoxFuture<'a, Result<Vec<HeldStream>, StoreError>> {
        Box::pin(self.ledger.held_streams(host.to_owned(), pid))
    }

    fn release_streams<'a>(
        &'a mut self,
        streams: &'a [HeldStream],
        why: &'a str,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(self.ledger.release_streams(streams.to_vec(), why.to_owned()))
    }

    fn load_jobs(&mut self, known: Option<i64>) -> BoxFuture<'_, Result<Option<super::jobs::JobSet>, StoreError>> {
        Box::pin(self.ledger.load_jobs(known))
    }
}
