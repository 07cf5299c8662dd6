//! Delta state: the platform's begin / complete / fail / reset, a lease so one
//! run per stream holds it at a time, run history and the audit log — written
//! once for both engines (see `sql.rs`). Every read that decides a write
//! happens inside the write's transaction, with the stream's row locked.

use super::backend::LoadOptions;
use super::owner::{RunOwner, process_alive, same_machine};
use super::records::SupplierRecord;
use super::schema::now_utc;
use super::sql::{Conn, Row, params, transaction};
use super::suppliers::{
    ANALYZE_AFTER_WRITES, SUPPLIERS_PER_TRANSACTION, SaveCounts, refresh_statistics, save_suppliers, upsert_suppliers,
};
use super::{Completion, CursorType, RunStatus, StoreError, StreamKey, StreamState};
use crate::limits::Stop;
use crate::meter::Usage;
use serde::Serialize;

/// The columns [`state_from_row`] reads, in order.
const STATE_COLUMNS: &str = "connector_name, stream_name, cursor_type, committed_cursor_value, committed_at_utc,
    status, started_at_utc, completed_at_utc, records_processed, error_summary, metadata, updated_at_utc,
    updated_by, customer_number, run_id, owner_host, owner_pid, owner_process_start, lease_expires_at_utc,
    owner_instance";

/// The lease fields of a stream row (not part of the platform's schema).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Lease {
    pub run_id: Option<String>,
    pub owner_host: Option<String>,
    pub owner_pid: Option<u32>,
    #[serde(skip)]
    pub owner_process_start: Option<String>,
    pub lease_expires_at_utc: Option<String>,
    #[serde(skip)]
    pub owner_instance: Option<String>,
}

fn state_from_row(r: &Row) -> (String, StreamState, Lease) {
    let state = StreamState {
        connector_name: r.text(0),
        stream_name: r.text(1),
        cursor_type: r.opt_text(2).as_deref().and_then(CursorType::parse),
        committed_cursor_value: r.opt_text(3),
        committed_at_utc: r.opt_text(4),
        status: RunStatus::parse(&r.text(5)),
        started_at_utc: r.opt_text(6),
        completed_at_utc: r.opt_text(7),
        records_processed: r.opt_int(8).map(|n| n.max(0).unsigned_abs()),
        error_summary: r.opt_text(9),
        metadata: r.opt_text(10).and_then(|m| serde_json::from_str(&m).ok()),
        updated_at_utc: r.opt_text(11),
        updated_by: r.opt_text(12),
    };
    let lease = Lease {
        run_id: r.opt_text(14),
        owner_host: r.opt_text(15),
        owner_pid: r.opt_int(16).and_then(|p| u32::try_from(p).ok()),
        owner_process_start: r.opt_text(17),
        lease_expires_at_utc: r.opt_text(18),
        owner_instance: r.opt_text(19),
    };
    (r.text(13), state, lease)
}

/// The stream's row; inside a write transaction, locked until it ends.
async fn read_state(conn: &mut Conn, key: &StreamKey) -> Result<Option<(StreamState, Lease)>, StoreError> {
    let lock = conn.for_update();
    select_state(conn, key, lock).await
}

/// The stream's row, read outside a transaction (a first check before work
/// that the transaction then checks again).
async fn read_state_unlocked(conn: &mut Conn, key: &StreamKey) -> Result<Option<(StreamState, Lease)>, StoreError> {
    select_state(conn, key, "").await
}

async fn select_state(
    conn: &mut Conn,
    key: &StreamKey,
    lock: &str,
) -> Result<Option<(StreamState, Lease)>, StoreError> {
    let sql = format!(
        "SELECT {STATE_COLUMNS} FROM delta_stream_state
         WHERE customer_number = ?1 AND connector_name = ?2 AND stream_name = ?3{lock}"
    );
    Ok(conn
        .query_opt(
            &sql,
            params![&key.customer_number, &key.connector_name, &key.stream_name],
        )
        .await?
        .map(|r| {
            let (_, state, lease) = state_from_row(&r);
            (state, lease)
        }))
}

pub async fn get_state(conn: &mut Conn, key: &StreamKey) -> Result<StreamState, StoreError> {
    Ok(read_state_unlocked(conn, key)
        .await?
        .map_or_else(|| StreamState::idle(key), |(state, _)| state))
}

/// The WHERE clause of a [`StreamFilter`], bound as ?1, ?2, ?3.
pub(super) const STREAM_FILTER: &str =
    "(CAST(?1 AS TEXT) IS NULL OR customer_number = ?1) AND (CAST(?2 AS TEXT) IS NULL OR connector_name = ?2)
    AND (CAST(?3 AS TEXT) IS NULL OR stream_name = ?3)";

/// Which streams a listing covers; `None` matches any.
#[derive(Debug, Default, Clone)]
pub struct StreamFilter {
    pub customer_number: Option<String>,
    pub connector_name: Option<String>,
    pub stream_name: Option<String>,
}

impl StreamFilter {
    /// The rows of a listing whose `sql` filters with [`STREAM_FILTER`] and
    /// ends in `LIMIT ?4`.
    pub(super) async fn list(
        &self,
        conn: &mut Conn,
        sql: &str,
        limit: usize,
    ) -> Result<Vec<super::sql::Row>, StoreError> {
        let params = params![
            &self.customer_number,
            &self.connector_name,
            &self.stream_name,
            limit as i64
        ];
        conn.query(sql, params).await
    }
}

/// A stream row as `state show` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct StateRow {
    pub customer_number: String,
    #[serde(flatten)]
    pub state: StreamState,
    #[serde(flatten)]
    pub lease: Lease,
}

/// Every stream matching `filter`, in key order.
pub async fn list_states(conn: &mut Conn, filter: &StreamFilter) -> Result<Vec<StateRow>, StoreError> {
    let sql = format!(
        "SELECT {STATE_COLUMNS} FROM delta_stream_state
         WHERE {STREAM_FILTER}
         ORDER BY customer_number, connector_name, stream_name"
    );
    let rows = conn
        .query(
            &sql,
            params![&filter.customer_number, &filter.connector_name, &filter.stream_name],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (customer_number, state, lease) = state_from_row(r);
            StateRow {
                customer_number,
                state,
                lease,
            }
        })
        .collect())
}

/// What `begin` hands out.
#[derive(Debug, Clone, PartialEq)]
pub struct Begun {
    /// The committed cursor: the lower bound to fetch from.
    pub lower_bound: Option<String>,
    /// Set when this run took a stream over from a dead or expired run; says which and why.
    pub took_over: Option<String>,
}

/// Refuses to commit once the job was stopped (deadline or signal): the
/// connector's answer would never reach it, so the envelope, the stream and
/// the run history would disagree.
fn check_not_stopped(stop: &Stop, what: &str) -> Result<(), StoreError> {
    match stop.exceeded() {
        Some(limit) => Err(StoreError::Stopped(format!("{limit}; {what} was not committed"))),
        None => Ok(()),
    }
}

fn lease_until(owner: &RunOwner) -> String {
    let lease = chrono::Duration::from_std(owner.lease).unwrap_or(chrono::Duration::hours(1));
    (chrono::Utc::now() + lease).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The platform's begin, with a lease: refused while another live run holds
/// the stream; a run whose owner died on this host, or whose lease expired,
/// is failed and taken over. Returns the committed cursor.
pub async fn begin_run(
    conn: &mut Conn,
    key: &StreamKey,
    cursor_type: CursorType,
    owner: &RunOwner,
    stop: &Stop,
) -> Result<Begun, StoreError> {
    transaction(conn, async |tx: &mut Conn| {
        // The row exists before it is locked, so two hosts beginning a new
        // stream together queue on it instead of both inserting.
        tx.execute(
            "INSERT INTO delta_stream_state (customer_number, connector_name, stream_name, status)
             VALUES (?1, ?2, ?3, 'idle')
             ON CONFLICT (customer_number, connector_name, stream_name) DO NOTHING",
            params![&key.customer_number, &key.connector_name, &key.stream_name],
        )
        .await?;
        let existing = read_state(tx, key).await?;
        let now = now_utc();
        let mut took_over = None;
        if let Some((state, lease)) = &existing {
            if let Some(stored) = state.cursor_type
                && stored != cursor_type
            {
                return Err(StoreError::CursorTypeMismatch(format!(
                    "stream {key} keeps a {stored} cursor, but begin asked for {cursor_type}; \
                     an operator can change the stream's cursor type with \
                     `nuntiq-host state reset --cursor-type {cursor_type} …`"
                )));
            }
            if state.status == RunStatus::Running
                && let Some(run_id) = &lease.run_id
            {
                let host = lease.owner_host.as_deref().unwrap_or("?");
                let pid = lease.owner_pid.unwrap_or(0);
                let expires = lease.lease_expires_at_utc.as_deref().unwrap_or("");
                let owner_dead_here = same_machine(host, lease.owner_instance.as_deref())
                    && !process_alive(pid, lease.owner_process_start.as_deref());
                let lease_valid = expires > now.as_str();
                // A `serve` elsewhere whose heartbeat stopped: dead, though its lease runs on.
                let owner_gone = lease_valid
                    && !owner_dead_here
                    && !(host == owner.host && pid == owner.pid)
                    && super::schedule::process_gone(tx, host, i64::from(pid)).await?;
                if lease_valid && !owner_dead_here && !owner_gone {
                    return Err(StoreError::AlreadyRunning(format!(
                        "stream {key} is already running: run {run_id} started {} by process {pid} on {host}, \
                         its lease runs until {expires}; this run was refused and changed nothing. \
                         The stream is taken over once that process ends or its lease expires",
                        state.started_at_utc.as_deref().unwrap_or("?")
                    )));
                }
                let why = if owner_dead_here {
                    format!("its process {pid} on {host} no longer exists")
                } else if owner_gone {
                    format!("its process {pid} on {host} stopped its heartbeat")
                } else {
                    format!("its lease expired at {expires}")
                };
                tx.execute(
                    "UPDATE delta_run SET status = 'failed', ended_at_utc = ?2, error_summary = ?3
                     WHERE run_id = ?1 AND status = 'running'",
                    params![
                        run_id,
                        &now,
                        &format!("abandoned: {why}; taken over by run {}", owner.run_id)
                    ],
                )
                .await?;
                took_over = Some(format!("took over stream {key} from run {run_id}: {why}"));
            }
        }
        let lower_bound = existing.as_ref().and_then(|(s, _)| s.committed_cursor_value.clone());
        tx.execute(
            "UPDATE delta_stream_state SET
                 cursor_type = ?4, status = 'running', started_at_utc = ?5, completed_at_utc = NULL,
                 error_summary = NULL, records_processed = NULL, updated_at_utc = ?5, updated_by = ?6,
                 run_id = ?7, owner_host = ?8, owner_pid = ?9, owner_process_start = ?10,
                 lease_expires_at_utc = ?11, owner_instance = ?12
             WHERE customer_number = ?1 AND connector_name = ?2 AND stream_name = ?3",
            params![
                &key.customer_number,
                &key.connector_name,
                &key.stream_name,
                cursor_type.as_str(),
                &now,
                &owner.updated_by,
                &owner.run_id,
                &owner.host,
                owner.pid,
                &owner.process_start,
                &lease_until(owner),
                &owner.instance
            ],
        )
        .await?;
        tx.execute(
            "INSERT INTO delta_run
                 (run_id, customer_number, connector_name, stream_name, cursor_type, status, started_at_utc,
                  cursor_before, plugin_sha256, owner_host, owner_pid, job_id, plugin_metadata, trace_id)
             VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                &owner.run_id,
                &key.customer_number,
                &key.connector_name,
                &key.stream_name,
                cursor_type.as_str(),
                &now,
                &lower_bound,
                &owner.plugin_sha256,
                &owner.host,
                owner.pid,
                &owner.job_id,
                &owner.plugin_metadata,
                &owner.trace_id
            ],
        )
        .await?;
        check_not_stopped(stop, "the run's begin")?;
        Ok(Begun { lower_bound, took_over })
    })
    .await
}

/// Refuses when `run_id` no longer holds the stream's lease.
fn check_lease(key: &StreamKey, run_id: &str, row: Option<&(StreamState, Lease)>) -> Result<(), StoreError> {
    let Some((state, lease)) = row else {
        return Err(StoreError::NotRunning(format!(
            "stream {key} not found: call begin first"
        )));
    };
    if lease.run_id.as_deref() != Some(run_id) || state.status != RunStatus::Running {
        return Err(StoreError::LeaseLost(format!(
            "run {run_id} no longer holds stream {key}: it is {} by run {} (process {} on {}); \
             a run that lost its lease may not complete, and the next run re-fetches its window",
            state.status.as_str(),
            lease.run_id.as_deref().unwrap_or("-"),
            lease.owner_pid.unwrap_or(0),
            lease.owner_host.as_deref().unwrap_or("?"),
        )));
    }
    Ok(())
}

/// Refuses a cursor that does not move forward from the committed one.
fn check_advance(
    key: &StreamKey,
    completion: &Completion,
    row: Option<&(StreamState, Lease)>,
) -> Result<Option<String>, StoreError> {
    let old = row.and_then(|(s, _)| s.committed_cursor_value.clone());
    let advances = completion
        .cursor_type
        .advances(old.as_deref(), &completion.new_cursor_value, completion.max_cursor_skew)
        .map_err(StoreError::InvalidCursor)?;
    if !advances {
        return Err(StoreError::CursorRegression(format!(
            "{} cursor {:?} does not move past the committed {:?} of stream {key}",
            completion.cursor_type,
            completion.new_cursor_value,
            old.unwrap_or_default()
        )));
    }
    Ok(old)
}

/// Writes the final suppliers and advances the cursor. The cursor is checked
/// before anything is written; earlier chunks of an oversized `pending` then
/// commit on their own, and the last chunk shares the cursor's transaction, so
/// after a crash the cursor is never ahead of the data. `written` is what the
/// run's earlier `save-all`s wrote; it goes into the run history with the
/// final chunk's counts.
pub async fn complete_run(
    conn: &mut Conn,
    key: &StreamKey,
    run_id: &str,
    completion: &Completion,
    pending: &[SupplierRecord],
    options: LoadOptions,
    written: SaveCounts,
    stop: &Stop,
) -> Result<(StreamState, SaveCounts), StoreError> {
    complete(conn, key, run_id, completion, pending, options, written, stop, Advance::Checked).await
}

/// Records in a ledger a completion another service (the Customer API)
/// committed and checked: the run history, the audit and the stream's mirror
/// take its cursor as it is, even where the mirror disagrees (a reset made on
/// the platform). The lease is still checked.
pub async fn record_completion(
    conn: &mut Conn,
    key: &StreamKey,
    run_id: &str,
    completion: &Completion,
    written: SaveCounts,
    stop: &Stop,
) -> Result<StreamState, StoreError> {
    Ok(complete(conn, key, run_id, completion, &[], LoadOptions::default(), written, stop, Advance::Recorded).await?.0)
}

/// Whether a completion's cursor is checked here or was checked elsewhere.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Advance {
    Checked,
    Recorded,
}

/// The cursor `completion` replaces: checked to advance, or taken as recorded.
fn previous_cursor(
    key: &StreamKey,
    completion: &Completion,
    row: Option<&(StreamState, Lease)>,
    advance: Advance,
) -> Result<Option<String>, StoreError> {
    match advance {
        Advance::Checked => check_advance(key, completion, row),
        Advance::Recorded => Ok(row.and_then(|(s, _)| s.committed_cursor_value.clone())),
    }
}

#[allow(clippy::too_many_arguments)]
async fn complete(
    conn: &mut Conn,
    key: &StreamKey,
    run_id: &str,
    completion: &Completion,
    pending: &[SupplierRecord],
    options: LoadOptions,
    written: SaveCounts,
    stop: &Stop,
    advance: Advance,
) -> Result<(StreamState, SaveCounts), StoreError> {
    let row = read_state_unlocked(conn, key).await?;
    check_lease(key, run_id, row.as_ref())?;
    previous_cursor(key, completion, row.as_ref(), advance)?;
    let last_chunk_start = pending.len().saturating_sub(1) / SUPPLIERS_PER_TRANSACTION * SUPPLIERS_PER_TRANSACTION;
    let (earlier, last) = pending.split_at(last_chunk_start);
    let earlier_counts = save_suppliers(conn, &key.customer_number, earlier, options).await?;
    // Only the first write of a full load deletes.
    let last_options = LoadOptions {
        full_load: options.full_load && earlier.is_empty(),
        ..options
    };

    let done = transaction(conn, async |tx: &mut Conn| {
        let row = read_state(tx, key).await?;
        check_lease(key, run_id, row.as_ref())?;
        let old = previous_cursor(key, completion, row.as_ref(), advance)?;
        let mut counts = earlier_counts;
        counts.add(upsert_suppliers(tx, &key.customer_number, last, last_options).await?);
        let now = now_utc();
        let metadata = completion.metadata.as_ref().map(|m| m.to_string());
        let records = completion
            .records_processed
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        tx.execute(
            "UPDATE delta_stream_state SET
                 committed_cursor_value = ?4, committed_at_utc = ?5, status = 'succeeded',
                 completed_at_utc = ?5, records_processed = ?6, metadata = ?7, error_summary = NULL,
                 updated_at_utc = ?5, updated_by = ?8, run_id = NULL, lease_expires_at_utc = NULL
             WHERE customer_number = ?1 AND connector_name = ?2 AND stream_name = ?3",
            params![
                &key.customer_number,
                &key.connector_name,
                &key.stream_name,
                &completion.new_cursor_value,
                &now,
                records,
                &metadata,
                &completion.updated_by
            ],
        )
        .await?;
        let mut in_run = written;
        in_run.add(counts);
        tx.execute(
            "UPDATE delta_run SET status = 'succeeded', ended_at_utc = ?2, records_processed = ?3, cursor_after = ?4,
                 suppliers_inserted = ?5, suppliers_updated = ?6, suppliers_unchanged = ?7
             WHERE run_id = ?1",
            params![
                run_id,
                &now,
                records,
                &completion.new_cursor_value,
                in_run.inserted as i64,
                in_run.updated as i64,
                in_run.unchanged as i64
            ],
        )
        .await?;
        audit(
            tx,
            key,
            "cursor_advance",
            old.as_deref(),
            &completion.new_cursor_value,
            None,
            &completion.updated_by,
            &now,
        )
        .await?;
        let (state, _) = read_state(tx, key)
            .await?
            .ok_or_else(|| StoreError::Database(format!("stream {key} vanished inside its own transaction")))?;
        check_not_stopped(stop, "the cursor")?;
        Ok((state, counts))
    })
    .await?;
    let mut in_run = written;
    in_run.add(done.1);
    if in_run.inserted + in_run.updated >= ANALYZE_AFTER_WRITES {
        // After the commit, and best effort: the run succeeded either way.
        let _ = refresh_statistics(conn).await;
    }
    Ok(done)
}

#[allow(clippy::too_many_arguments)]
async fn audit(
    conn: &mut Conn,
    key: &StreamKey,
    event_type: &str,
    old: Option<&str>,
    new: &str,
    reason: Option<&str>,
    api_user: &str,
    now: &str,
) -> Result<u64, StoreError> {
    conn.execute(
        "INSERT INTO delta_audit_log
             (customer_number, connector_name, stream_name, event_type, old_cursor_value, new_cursor_value,
              reason, api_user, created_at_utc)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            &key.customer_number,
            &key.connector_name,
            &key.stream_name,
            event_type,
            old,
            new,
            reason,
            api_user,
            now
        ],
    )
    .await
}

/// How a run ended when the host asked to fail it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailOutcome {
    /// It was running and is now failed; the cursor stayed.
    Failed,
    /// It had already ended (`succeeded` or `failed`) before this call: the
    /// history and the stream keep what happened.
    AlreadyEnded(String),
    /// Its run-history row says running, but another run holds the stream now.
    NotHeld,
    /// No such run was ever begun (its begin never committed).
    NeverBegun,
}

/// The platform's fail: status `failed` with a summary; the cursor stays. Only
/// a run that is still running is failed: one that completed keeps its
/// success in the stream and in the history alike.
pub async fn fail_run(
    conn: &mut Conn,
    key: &StreamKey,
    run_id: &str,
    error_summary: &str,
    updated_by: &str,
) -> Result<FailOutcome, StoreError> {
    let outcomes = fail_runs(conn, &[(key.clone(), run_id.to_owned())], error_summary, updated_by).await?;
    Ok(outcomes.into_iter().next().unwrap_or(FailOutcome::NeverBegun))
}

/// Fails several runs in one transaction (the host's clean-up after a stop).
pub async fn fail_runs(
    conn: &mut Conn,
    runs: &[(StreamKey, String)],
    error_summary: &str,
    updated_by: &str,
) -> Result<Vec<FailOutcome>, StoreError> {
    transaction(conn, async |tx: &mut Conn| {
        let mut outcomes = Vec::with_capacity(runs.len());
        for (key, run_id) in runs {
            outcomes.push(fail_in(tx, key, run_id, error_summary, updated_by).await?);
        }
        Ok(outcomes)
    })
    .await
}

async fn fail_in(
    tx: &mut Conn,
    key: &StreamKey,
    run_id: &str,
    error_summary: &str,
    updated_by: &str,
) -> Result<FailOutcome, StoreError> {
    let sql = format!("SELECT status FROM delta_run WHERE run_id = ?1{}", tx.for_update());
    let status = tx.query_opt(&sql, params![run_id]).await?.map(|r| r.text(0));
    match status.as_deref() {
        None => return Ok(FailOutcome::NeverBegun),
        Some("running") => {}
        Some(ended) => return Ok(FailOutcome::AlreadyEnded(ended.to_owned())),
    }
    let now = now_utc();
    tx.execute(
        "UPDATE delta_run SET status = 'failed', ended_at_utc = ?2, error_summary = ?3
         WHERE run_id = ?1 AND status = 'running'",
        params![run_id, &now, error_summary],
    )
    .await?;
    let changed = tx
        .execute(
            "UPDATE delta_stream_state SET status = 'failed', error_summary = ?5, completed_at_utc = ?6,
                 updated_at_utc = ?6, updated_by = ?7, run_id = NULL, lease_expires_at_utc = NULL
             WHERE customer_number = ?1 AND connector_name = ?2 AND stream_name = ?3 AND run_id = ?4",
            params![
                &key.customer_number,
                &key.connector_name,
                &key.stream_name,
                run_id,
                error_summary,
                &now,
                updated_by
            ],
        )
        .await?;
    Ok(if changed == 0 {
        FailOutcome::NotHeld
    } else {
        FailOutcome::Failed
    })
}

/// Extends the leases of runs still open; returns the run ids that lost theirs.
pub async fn renew_leases(conn: &mut Conn, runs: &[(StreamKey, RunOwner)]) -> Result<Vec<String>, StoreError> {
    transaction(conn, async |tx: &mut Conn| {
        let mut lost = Vec::new();
        for (key, owner) in runs {
            let changed = tx
                .execute(
                    "UPDATE delta_stream_state SET lease_expires_at_utc = ?5
                     WHERE customer_number = ?1 AND connector_name = ?2 AND stream_name = ?3 AND run_id = ?4
                       AND status = 'running'",
                    params![
                        &key.customer_number,
                        &key.connector_name,
                        &key.stream_name,
                        &owner.run_id,
                        &lease_until(owner)
                    ],
                )
                .await?;
            if changed == 0 {
                lost.push(owner.run_id.clone());
            }
        }
        Ok(lost)
    })
    .await
}

/// An operator's cursor reset, as the platform defines it.
#[derive(Debug, Clone)]
pub struct Reset {
    pub new_cursor_value: String,
    /// Needed when the stream has no row yet.
    pub cursor_type: Option<CursorType>,
    pub reason: String,
    pub api_user: String,
    /// Reset even while a live run holds the stream (that run then cannot complete).
    pub force: bool,
    /// How far past now a timestamp cursor may point.
    pub max_cursor_skew: std::time::Duration,
}

/// The platform's reset: any direction, `reason` required, always audited
/// (`cursor_reset`); the status becomes `idle`. Returns the old cursor.
pub async fn reset_cursor(conn: &mut Conn, key: &StreamKey, reset: &Reset) -> Result<Option<String>, StoreError> {
    if reset.reason.trim().is_empty() {
        return Err(StoreError::Invalid("--reason must say why the cursor is reset".into()));
    }
    transaction(conn, async |tx: &mut Conn| {
        let row = read_state(tx, key).await?;
        // --cursor-type changes the stream's type (the next begin must ask for it).
        let cursor_type = match (reset.cursor_type, row.as_ref().and_then(|(s, _)| s.cursor_type)) {
            (Some(t), _) | (None, Some(t)) => t,
            (None, None) => {
                return Err(StoreError::Invalid(format!(
                    "stream {key} has no cursor type yet; pass --cursor-type timestamp_utc|numeric_id|opaque_token"
                )));
            }
        };
        cursor_type
            .validate(&reset.new_cursor_value, reset.max_cursor_skew)
            .map_err(|e| StoreError::InvalidCursor(format!("--cursor: {e}")))?;
        if let Some((state, lease)) = &row
            && state.status == RunStatus::Running
            && lease.lease_expires_at_utc.as_deref() > Some(now_utc().as_str())
            && !reset.force
        {
            return Err(StoreError::AlreadyRunning(format!(
                "stream {key} is running (run {} by process {} on {}, started {}); wait for it to end or pass --force",
                lease.run_id.as_deref().unwrap_or("-"),
                lease.owner_pid.unwrap_or(0),
                lease.owner_host.as_deref().unwrap_or("?"),
                state.started_at_utc.as_deref().unwrap_or("?"),
            )));
        }
        let old = row.as_ref().and_then(|(s, _)| s.committed_cursor_value.clone());
        let now = now_utc();
        tx.execute(
            "INSERT INTO delta_stream_state
                 (customer_number, connector_name, stream_name, cursor_type, committed_cursor_value, committed_at_utc,
                  status, updated_at_utc, updated_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'idle', ?6, ?7)
             ON CONFLICT (customer_number, connector_name, stream_name) DO UPDATE SET
                 cursor_type = excluded.cursor_type, committed_cursor_value = excluded.committed_cursor_value,
                 committed_at_utc = excluded.committed_at_utc, status = 'idle',
                 updated_at_utc = excluded.updated_at_utc, updated_by = excluded.updated_by, run_id = NULL,
                 lease_expires_at_utc = NULL",
            params![
                &key.customer_number,
                &key.connector_name,
                &key.stream_name,
                cursor_type.as_str(),
                &reset.new_cursor_value,
                &now,
                &reset.api_user
            ],
        )
        .await?;
        if let Some((_, lease)) = &row
            && let Some(run_id) = &lease.run_id
        {
            tx.execute(
                "UPDATE delta_run SET status = 'failed', ended_at_utc = ?2, error_summary = ?3
                 WHERE run_id = ?1 AND status = 'running'",
                params![
                    run_id,
                    &now,
                    &format!("the cursor was reset by {}: {}", reset.api_user, reset.reason)
                ],
            )
            .await?;
        }
        audit(
            tx,
            key,
            "cursor_reset",
            old.as_deref(),
            &reset.new_cursor_value,
            Some(&reset.reason),
            &reset.api_user,
            &now,
        )
        .await?;
        Ok(old)
    })
    .await
}

/// Records what job `job_id` used on the history rows of the runs it began.
pub async fn record_usage(conn: &mut Conn, job_id: &str, usage: &Usage) -> Result<u64, StoreError> {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    conn.execute(
        "UPDATE delta_run SET wall_ms = ?2, cpu_ms = ?3, store_ms = ?4, peak_memory_bytes = ?5, http_requests = ?6,
             http_retries = ?7, http_bytes_in = ?8, records_written = ?9
         WHERE job_id = ?1",
        params![
            job_id,
            n(usage.wall_ms),
            n(usage.cpu_ms),
            n(usage.store_ms),
            n(usage.peak_memory_bytes),
            n(usage.http_requests),
            n(usage.http_retries),
            n(usage.http_bytes_in),
            n(usage.records_written)
        ],
    )
    .await
}

/// One row of run history.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub customer_number: String,
    pub connector_name: String,
    pub stream_name: String,
    pub status: String,
    pub started_at_utc: String,
    pub ended_at_utc: Option<String>,
    pub records_processed: Option<i64>,
    pub cursor_before: Option<String>,
    pub cursor_after: Option<String>,
    pub error_summary: Option<String>,
    pub plugin_sha256: Option<String>,
    pub owner_host: Option<String>,
    pub owner_pid: Option<u32>,
    pub suppliers_inserted: Option<i64>,
    pub suppliers_updated: Option<i64>,
    pub suppliers_unchanged: Option<i64>,
    /// The job this run belonged to, and what that job used (see `meter::Usage`).
    pub job_id: Option<String>,
    pub usage: Option<Usage>,
    /// The plugin's name, version, authors and source, from its metadata sections.
    pub plugin: Option<crate::plugin::Metadata>,
    /// The trace id of the job's run (its envelope's `trace_id`, its spans').
    pub trace_id: Option<String>,
    /// Under `serve`: the job's name and the slot the run was for.
    #[serde(rename = "job")]
    pub job_name: Option<String>,
    #[serde(rename = "slot")]
    pub slot_at: Option<String>,
    /// A failed run's error kind (`network_denied`, `timeout`, …), as in its envelope.
    pub error_kind: Option<String>,
}

/// How one scheduled run ended, for its run history (see [`record_job_end`]).
#[derive(Debug, Clone)]
pub struct JobEnd {
    pub job_id: String,
    pub job_name: String,
    pub slot_at: String,
    pub customer_number: String,
    pub connector_name: String,
    pub started_at_utc: String,
    /// The envelope's error kind and message, when it failed.
    pub error: Option<(String, String)>,
    pub usage: Option<Usage>,
    pub host: String,
    pub pid: u32,
}

/// Puts a scheduled run's job name, slot and error kind on its history rows;
/// a run that failed before any stream began (`network_denied`, `internal`,
/// `host_overloaded`, …) gets one row of its own (no stream, status
/// `failed`), so every run is in the history.
pub async fn record_job_end(conn: &mut Conn, end: &JobEnd) -> Result<(), StoreError> {
    let kind = end.error.as_ref().map(|(kind, _)| kind.as_str());
    let updated = conn
        .execute(
            "UPDATE delta_run SET job_name = ?2, slot_at = ?3,
                 error_kind = CASE WHEN status = 'succeeded' THEN NULL ELSE CAST(?4 AS TEXT) END
             WHERE job_id = ?1",
            params![&end.job_id, &end.job_name, &end.slot_at, kind],
        )
        .await?;
    if updated > 0 {
        return Ok(());
    }
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let u = end.usage.unwrap_or_default();
    let message = end.error.as_ref().map(|(_, message)| message.as_str());
    conn.execute(
        "INSERT INTO delta_run
             (run_id, customer_number, connector_name, stream_name, cursor_type, status, started_at_utc,
              ended_at_utc, error_summary, owner_host, owner_pid, job_id, job_name, slot_at, error_kind,
              wall_ms, cpu_ms, store_ms, peak_memory_bytes, http_requests, http_retries, http_bytes_in,
              records_written)
         VALUES (?1, ?2, ?3, '', '', ?4, ?5, ?6, ?7, ?8, ?9, ?1, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
                 ?20)",
        params![
            &end.job_id,
            &end.customer_number,
            &end.connector_name,
            if end.error.is_some() { "failed" } else { "succeeded" },
            &end.started_at_utc,
            &super::schema::now_utc(),
            message,
            &end.host,
            end.pid,
            &end.job_name,
            &end.slot_at,
            kind,
            n(u.wall_ms),
            n(u.cpu_ms),
            n(u.store_ms),
            n(u.peak_memory_bytes),
            n(u.http_requests),
            n(u.http_retries),
            n(u.http_bytes_in),
            n(u.records_written)
        ],
    )
    .await?;
    Ok(())
}

/// Run history, newest first.
pub async fn list_runs(conn: &mut Conn, filter: &StreamFilter, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
    let sql = format!(
        "SELECT run_id, customer_number, connector_name, stream_name, status, started_at_utc, ended_at_utc,
                records_processed, cursor_before, cursor_after, error_summary, plugin_sha256, owner_host, owner_pid,
                suppliers_inserted, suppliers_updated, suppliers_unchanged, job_id, wall_ms, cpu_ms, store_ms,
                peak_memory_bytes, http_requests, http_retries, http_bytes_in, records_written, plugin_metadata,
                trace_id, job_name, slot_at, error_kind
         FROM delta_run
         WHERE {STREAM_FILTER}
         ORDER BY started_at_utc DESC, {} DESC LIMIT ?4",
        conn.insertion_order()
    );
    let rows = filter.list(conn, &sql, limit).await?;
    Ok(rows
        .iter()
        .map(|r| RunRecord {
            run_id: r.text(0),
            customer_number: r.text(1),
            connector_name: r.text(2),
            stream_name: r.text(3),
            status: r.text(4),
            started_at_utc: r.text(5),
            ended_at_utc: r.opt_text(6),
            records_processed: r.opt_int(7),
            cursor_before: r.opt_text(8),
            cursor_after: r.opt_text(9),
            error_summary: r.opt_text(10),
            plugin_sha256: r.opt_text(11),
            owner_host: r.opt_text(12),
            owner_pid: r.opt_int(13).and_then(|p| u32::try_from(p).ok()),
            suppliers_inserted: r.opt_int(14),
            suppliers_updated: r.opt_int(15),
            suppliers_unchanged: r.opt_int(16),
            job_id: r.opt_text(17),
            usage: r.opt_int(18).map(|wall_ms| {
                let u = |i| r.opt_int(i).unwrap_or(0).max(0).unsigned_abs();
                Usage {
                    wall_ms: wall_ms.max(0).unsigned_abs(),
                    cpu_ms: u(19),
                    store_ms: u(20),
                    peak_memory_bytes: u(21),
                    // Not kept in the run history (the envelope and metrics have it).
                    peak_host_memory_bytes: 0,
                    http_requests: u(22),
                    http_retries: u(23),
                    http_bytes_in: u(24),
                    records_written: u(25),
                }
            }),
            plugin: r.opt_text(26).and_then(|m| serde_json::from_str(&m).ok()),
            trace_id: r.opt_text(27),
            job_name: r.opt_text(28),
            slot_at: r.opt_text(29),
            error_kind: r.opt_text(30),
        })
        .collect())
}

/// One audit event: `cursor_advance` or `cursor_reset`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub customer_number: String,
    pub connector_name: String,
    pub stream_name: String,
    pub event_type: String,
    pub old_cursor_value: Option<String>,
    pub new_cursor_value: Option<String>,
    pub reason: Option<String>,
    pub api_user: Option<String>,
    pub created_at_utc: String,
}

/// The audit log, newest first.
pub async fn list_audit(conn: &mut Conn, filter: &StreamFilter, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
    let sql = format!(
        "SELECT customer_number, connector_name, stream_name, event_type, old_cursor_value, new_cursor_value,
                reason, api_user, created_at_utc
         FROM delta_audit_log
         WHERE {STREAM_FILTER}
         ORDER BY id DESC LIMIT ?4"
    );
    let rows = filter.list(conn, &sql, limit).await?;
    Ok(rows
        .iter()
        .map(|r| AuditRecord {
            customer_number: r.text(0),
            connector_name: r.text(1),
            stream_name: r.text(2),
            event_type: r.text(3),
            old_cursor_value: r.opt_text(4),
            new_cursor_value: r.opt_text(5),
            reason: r.opt_text(6),
            api_user: r.opt_text(7),
            created_at_utc: r.text(8),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::owner::RunOwner;
    use crate::store::records::tests::supplier;
    use crate::store::sql::Conn;
    use crate::store::testing::{count, on_both_engines};
    use std::time::Duration;

    fn key() -> StreamKey {
        StreamKey {
            customer_number: "10000001".into(),
            connector_name: "acme_eu".into(),
            stream_name: "suppliers".into(),
        }
    }

    fn owner() -> RunOwner {
        RunOwner::this_process("sha", "test", Duration::from_secs(60))
    }

    fn completion(cursor: &str) -> Completion {
        Completion {
            cursor_type: CursorType::TimestampUtc,
            new_cursor_value: cursor.into(),
            records_processed: Some(1),
            metadata: Some(serde_json::json!({"schema_version": 1})),
            updated_by: "test".into(),
            max_cursor_skew: crate::store::cursor::DEFAULT_MAX_CURSOR_SKEW,
        }
    }

    /// Begins and completes a run at `cursor`.
    async fn commit(conn: &mut Conn, cursor: &str) {
        let o = owner();
        begin_run(conn, &key(), CursorType::TimestampUtc, &o, &Stop::never())
            .await
            .unwrap();
        complete_run(
            conn,
            &key(),
            &o.run_id,
            &completion(cursor),
            &[],
            LoadOptions::default(),
            SaveCounts::default(),
            &Stop::never(),
        )
        .await
        .unwrap();
    }

    async fn lifecycle_advances_audits_and_keeps_history(conn: &mut Conn) {
        let k = key();
        assert_eq!(get_state(conn, &k).await.unwrap().status, RunStatus::Idle);
        let o = owner();
        let begun = begin_run(conn, &k, CursorType::TimestampUtc, &o, &Stop::never())
            .await
            .unwrap();
        assert_eq!(
            begun,
            Begun {
                lower_bound: None,
                took_over: None
            }
        );
        assert_eq!(get_state(conn, &k).await.unwrap().status, RunStatus::Running);
        let (state, _) = complete_run(
            conn,
            &k,
            &o.run_id,
            &completion("2024-05-01T09:00:00Z"),
            &[supplier("S1", "One", None)],
            LoadOptions::default(),
            SaveCounts::default(),
            &Stop::never(),
        )
        .await
        .unwrap();
        assert_eq!(state.status, RunStatus::Succeeded);
        assert_eq!(state.committed_cursor_value.as_deref(), Some("2024-05-01T09:00:00Z"));
        assert_eq!(count(conn, "supplier").await, 1);
        let audit = list_audit(conn, &StreamFilter::default(), 10).await.unwrap();
        assert_eq!((audit.len(), audit[0].event_type.as_str()), (1, "cursor_advance"));
        let runs = list_runs(conn, &StreamFilter::default(), 10).await.unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].status, "succeeded");
        assert_eq!(runs[0].cursor_after.as_deref(), Some("2024-05-01T09:00:00Z"));
        assert_eq!(runs[0].plugin_sha256.as_deref(), Some("sha"));
        let next = begin_run(conn, &k, CursorType::TimestampUtc, &owner(), &Stop::never())
            .await
            .unwrap();
        assert_eq!(next.lower_bound.as_deref(), Some("2024-05-01T09:00:00Z"));
    }

    async fn regression_is_refused_and_writes_nothing(conn: &mut Conn) {
        commit(conn, "2024-05-01T09:00:00Z").await;
        let o = owner();
        begin_run(conn, &key(), CursorType::TimestampUtc, &o, &Stop::never())
            .await
            .unwrap();
        let err = complete_run(
            conn,
            &key(),
            &o.run_id,
            &completion("2024-05-01T10:00:00+02:00"),
            &[supplier("S9", "Nine", None)],
            LoadOptions::default(),
            SaveCounts::default(),
            &Stop::never(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, StoreError::CursorRegression(_)), "{err}");
        assert!(err.to_string().starts_with("CURSOR_REGRESSION"));
        assert_eq!(count(conn, "supplier").await, 0);
        assert_eq!(
            get_state(conn, &key()).await.unwrap().committed_cursor_value.as_deref(),
            Some("2024-05-01T09:00:00Z")
        );
    }

    async fn nothing_commits_once_the_job_was_stopped(conn: &mut Conn) {
        commit(conn, "2024-05-01T09:00:00Z").await;
        let o = owner();
        begin_run(conn, &key(), CursorType::TimestampUtc, &o, &Stop::never())
            .await
            .unwrap();
        let stopped = Stop::new(Duration::ZERO);
        let err = complete_run(
            conn,
            &key(),
            &o.run_id,
            &completion("2024-06-01T00:00:00Z"),
            &[supplier("LATE", "Too late", None)],
            LoadOptions::default(),
            SaveCounts::default(),
            &stopped,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, StoreError::Stopped(_)), "{err}");
        assert!(err.to_string().contains("the cursor was not committed"), "{err}");
        assert_eq!(
            count(conn, "supplier").await,
            0,
            "the final chunk rolled back with the cursor"
        );
        assert_eq!(
            get_state(conn, &key()).await.unwrap().committed_cursor_value.as_deref(),
            Some("2024-05-01T09:00:00Z")
        );
        let err = begin_run(
            conn,
            &StreamKey {
                stream_name: "other".into(),
                ..key()
            },
            CursorType::TimestampUtc,
            &owner(),
            &stopped,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, StoreError::Stopped(_)), "{err}");
        assert!(
            read_state(
                conn,
                &StreamKey {
                    stream_name: "other".into(),
                    ..key()
                }
            )
            .await
            .unwrap()
            .is_none()
        );
    }

    async fn failing_a_run_that_already_completed_keeps_its_success(conn: &mut Conn) {
        let o = owner();
        begin_run(conn, &key(), CursorType::TimestampUtc, &o, &Stop::never())
            .await
            .unwrap();
        complete_run(
            conn,
            &key(),
            &o.run_id,
            &completion("2024-05-01T09:00:00Z"),
            &[],
            LoadOptions::default(),
            SaveCounts::default(),
            &Stop::never(),
        )
        .await
        .unwrap();
        let outcomes = fail_runs(
            conn,
            &[(key(), o.run_id.clone()), (key(), "never-begun".into())],
            "timeout",
            "test",
        )
        .await
        .unwrap();
        assert_eq!(
            outcomes,
            [FailOutcome::AlreadyEnded("succeeded".into()), FailOutcome::NeverBegun]
        );
        assert_eq!(get_state(conn, &key()).await.unwrap().status, RunStatus::Succeeded);
        assert_eq!(
            list_runs(conn, &StreamFilter::default(), 10).await.unwrap()[0].status,
            "succeeded"
        );
    }

    async fn fail_keeps_the_cursor_and_begin_clears_the_summary(conn: &mut Conn) {
        commit(conn, "2024-05-01T09:00:00Z").await;
        let o = owner();
        begin_run(conn, &key(), CursorType::TimestampUtc, &o, &Stop::never())
            .await
            .unwrap();
        fail_run(conn, &key(), &o.run_id, "page 3: 500", "test").await.unwrap();
        let s = get_state(conn, &key()).await.unwrap();
        assert_eq!(
            (s.status, s.error_summary.as_deref()),
            (RunStatus::Failed, Some("page 3: 500"))
        );
        assert_eq!(s.committed_cursor_value.as_deref(), Some("2024-05-01T09:00:00Z"));
        begin_run(conn, &key(), CursorType::TimestampUtc, &owner(), &Stop::never())
            .await
            .unwrap();
        assert_eq!(get_state(conn, &key()).await.unwrap().error_summary, None);
    }

    async fn cursor_type_cannot_change_silently(conn: &mut Conn) {
        commit(conn, "2024-05-01T09:00:00Z").await;
        let err = begin_run(conn, &key(), CursorType::NumericId, &owner(), &Stop::never())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::CursorTypeMismatch(_)), "{err}");
    }

    async fn oversized_final_batch_keeps_the_last_chunk_with_the_cursor(conn: &mut Conn) {
        let o = owner();
        begin_run(conn, &key(), CursorType::TimestampUtc, &o, &Stop::never())
            .await
            .unwrap();
        let many: Vec<_> = (0..2500).map(|i| supplier(&format!("S{i}"), "x", None)).collect();
        complete_run(
            conn,
            &key(),
            &o.run_id,
            &completion("2024-05-01T09:00:00Z"),
            &many,
            LoadOptions::default(),
            SaveCounts::default(),
            &Stop::never(),
        )
        .await
        .unwrap();
        assert_eq!(count(conn, "supplier").await, 2500);
    }

    async fn a_live_run_holds_the_stream(conn: &mut Conn) {
        let first = owner();
        begin_run(conn, &key(), CursorType::TimestampUtc, &first, &Stop::never())
            .await
            .unwrap();
        // Another process on another host, while the lease is valid: refused.
        let mut other = owner();
        other.host = "elsewhere".into();
        let err = begin_run(conn, &key(), CursorType::TimestampUtc, &other, &Stop::never())
            .await
            .unwrap_err();
        let StoreError::AlreadyRunning(message) = &err else {
            panic!("{err}")
        };
        assert!(message.contains(&format!("run {} started", first.run_id)), "{message}");
        assert!(
            message.contains(&format!("by process {} on {}", first.pid, first.host)),
            "{message}"
        );
        // This same live process counts as alive too.
        assert!(
            begin_run(conn, &key(), CursorType::TimestampUtc, &owner(), &Stop::never())
                .await
                .is_err()
        );
        assert_eq!(
            list_runs(conn, &StreamFilter::default(), 10).await.unwrap().len(),
            1,
            "the refusal changed nothing"
        );
    }

    async fn a_dead_owner_on_this_host_is_taken_over_at_once(conn: &mut Conn) {
        let mut dead = owner();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        dead.pid = child.id();
        dead.process_start = None;
        child.wait().unwrap();
        begin_run(conn, &key(), CursorType::TimestampUtc, &dead, &Stop::never())
            .await
            .unwrap();
        let next = owner();
        let begun = begin_run(conn, &key(), CursorType::TimestampUtc, &next, &Stop::never())
            .await
            .unwrap();
        let note = begun.took_over.expect("took over");
        assert!(
            note.contains(&format!("its process {} on {} no longer exists", dead.pid, dead.host)),
            "{note}"
        );
        let runs = list_runs(conn, &StreamFilter::default(), 10).await.unwrap();
        let old = runs.iter().find(|r| r.run_id == dead.run_id).unwrap();
        assert_eq!(old.status, "failed");
        assert!(old.error_summary.as_deref().unwrap().starts_with("abandoned: "));
        // The dead run may not complete now.
        let err = complete_run(
            conn,
            &key(),
            &dead.run_id,
            &completion("2024-05-01T09:00:00Z"),
            &[],
            LoadOptions::default(),
            SaveCounts::default(),
            &Stop::never(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, StoreError::LeaseLost(_)), "{err}");
        complete_run(
            conn,
            &key(),
            &next.run_id,
            &completion("2024-05-01T09:00:00Z"),
            &[],
            LoadOptions::default(),
            SaveCounts::default(),
            &Stop::never(),
        )
        .await
        .unwrap();
    }

    async fn an_expired_lease_is_taken_over_and_renewal_keeps_a_live_one(conn: &mut Conn) {
        let mut remote = owner();
        remote.host = "elsewhere".into();
        remote.lease = Duration::from_millis(50);
        begin_run(conn, &key(), CursorType::TimestampUtc, &remote, &Stop::never())
            .await
            .unwrap();
        // Renewal keeps it alive past its first expiry.
        std::thread::sleep(Duration::from_millis(30));
        assert!(renew_leases(conn, &[(key(), remote.clone())]).await.unwrap().is_empty());
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            begin_run(conn, &key(), CursorType::TimestampUtc, &owner(), &Stop::never())
                .await
                .is_err(),
            "still held"
        );
        std::thread::sleep(Duration::from_millis(60));
        let next = owner();
        let begun = begin_run(conn, &key(), CursorType::TimestampUtc, &next, &Stop::never())
            .await
            .unwrap();
        assert!(begun.took_over.unwrap().contains("its lease expired at"));
        // The old owner learns it lost the lease at its next heartbeat, and cannot fail the new run.
        assert_eq!(
            renew_leases(conn, &[(key(), remote.clone())]).await.unwrap(),
            [remote.run_id.clone()]
        );
        assert_eq!(
            fail_run(conn, &key(), &remote.run_id, "late", "test").await.unwrap(),
            FailOutcome::AlreadyEnded("failed".into()),
            "the taken-over run stays as the taker recorded it"
        );
        assert_eq!(get_state(conn, &key()).await.unwrap().status, RunStatus::Running);
    }

    async fn reset_moves_the_cursor_any_way_audits_and_idles(conn: &mut Conn) {
        commit(conn, "2024-05-01T09:00:00Z").await;
        let reset = Reset {
            new_cursor_value: "2024-01-01T00:00:00Z".into(),
            cursor_type: None,
            reason: "backfill after the ERP migration".into(),
            api_user: "ops".into(),
            force: false,
            max_cursor_skew: crate::store::cursor::DEFAULT_MAX_CURSOR_SKEW,
        };
        let old = reset_cursor(conn, &key(), &reset).await.unwrap();
        assert_eq!(old.as_deref(), Some("2024-05-01T09:00:00Z"));
        let s = get_state(conn, &key()).await.unwrap();
        assert_eq!(
            (s.status, s.committed_cursor_value.as_deref()),
            (RunStatus::Idle, Some("2024-01-01T00:00:00Z"))
        );
        let audit = list_audit(conn, &StreamFilter::default(), 10).await.unwrap();
        assert_eq!(audit[0].event_type, "cursor_reset");
        assert_eq!(audit[0].reason.as_deref(), Some("backfill after the ERP migration"));
        assert_eq!(audit[0].old_cursor_value.as_deref(), Some("2024-05-01T09:00:00Z"));
        // Bad values and missing reasons are refused.
        let bad = Reset {
            new_cursor_value: "yesterday".into(),
            ..reset.clone()
        };
        assert!(matches!(
            reset_cursor(conn, &key(), &bad).await,
            Err(StoreError::InvalidCursor(_))
        ));
        let silent = Reset {
            reason: " ".into(),
            ..reset.clone()
        };
        assert!(matches!(
            reset_cursor(conn, &key(), &silent).await,
            Err(StoreError::Invalid(_))
        ));
        // A live run holds the stream unless forced.
        let o = owner();
        begin_run(conn, &key(), CursorType::TimestampUtc, &o, &Stop::never())
            .await
            .unwrap();
        assert!(matches!(
            reset_cursor(conn, &key(), &reset).await,
            Err(StoreError::AlreadyRunning(_))
        ));
        reset_cursor(conn, &key(), &Reset { force: true, ..reset })
            .await
            .unwrap();
        assert!(matches!(
            complete_run(
                conn,
                &key(),
                &o.run_id,
                &completion("2024-06-01T00:00:00Z"),
                &[],
                LoadOptions::default(),
                SaveCounts::default(),
                &Stop::never()
            )
            .await,
            Err(StoreError::LeaseLost(_))
        ));
    }

    on_both_engines!(
        lifecycle_advances_audits_and_keeps_history,
        regression_is_refused_and_writes_nothing,
        nothing_commits_once_the_job_was_stopped,
        failing_a_run_that_already_completed_keeps_its_success,
        fail_keeps_the_cursor_and_begin_clears_the_summary,
        cursor_type_cannot_change_silently,
        oversized_final_batch_keeps_the_last_chunk_with_the_cursor,
        a_live_run_holds_the_stream,
        a_dead_owner_on_this_host_is_taken_over_at_once,
        an_expired_lease_is_taken_over_and_renewal_keeps_a_live_one,
        reset_moves_the_cursor_any_way_audits_and_idles,
    );
}
