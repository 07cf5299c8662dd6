//! The SQLite store: schema, migrations and the statements behind each operation.
//!
//! WAL mode with `synchronous=NORMAL`: a commit survives a killed process, and
//! readers never block the writer.

use super::{Completion, CursorType, OpenError, RunStatus, StoreError, StreamKey, StreamState};
use crate::bindings::supplier_load::{Supplier, SupplierLocation};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::path::Path;
use std::time::Duration;

/// The platform splits `save_all` into requests of 1000 rows; so do our transactions.
pub const SUPPLIERS_PER_TRANSACTION: usize = 1000;

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE delta_stream_state (
    customer_number        TEXT NOT NULL,
    connector_name         TEXT NOT NULL,
    stream_name            TEXT NOT NULL,
    cursor_type            TEXT,
    committed_cursor_value TEXT,
    committed_at_utc       TEXT,
    status                 TEXT NOT NULL DEFAULT 'idle',
    started_at_utc         TEXT,
    completed_at_utc       TEXT,
    records_processed      INTEGER,
    error_summary          TEXT,
    metadata               TEXT,
    updated_at_utc         TEXT,
    updated_by             TEXT,
    PRIMARY KEY (customer_number, connector_name, stream_name)
);

CREATE TABLE delta_audit_log (
    id               INTEGER PRIMARY KEY,
    customer_number  TEXT NOT NULL,
    connector_name   TEXT NOT NULL,
    stream_name      TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    old_cursor_value TEXT,
    new_cursor_value TEXT,
    reason           TEXT,
    api_user         TEXT,
    created_at_utc   TEXT NOT NULL
);

CREATE TABLE supplier (
    supplier_id               INTEGER PRIMARY KEY,
    customer_number           TEXT NOT NULL,
    supplier_number           TEXT NOT NULL,
    organization_code         TEXT NOT NULL DEFAULT '',
    supplier_name             TEXT NOT NULL,
    alternative_supplier_name TEXT,
    supplier_type             TEXT,
    is_active                 INTEGER NOT NULL DEFAULT 1,
    custom_field_1            TEXT,
    custom_field_2            TEXT,
    custom_field_3            TEXT,
    custom_field_4            TEXT,
    custom_field_5            TEXT,
    created_at                TEXT NOT NULL,
    updated_at                TEXT NOT NULL,
    UNIQUE (customer_number, supplier_number, organization_code)
);

CREATE TABLE supplier_location (
    supplier_location_id      INTEGER PRIMARY KEY,
    supplier_id               INTEGER NOT NULL REFERENCES supplier(supplier_id) ON DELETE CASCADE,
    location_code             TEXT NOT NULL,
    location_name             TEXT,
    organization_code         TEXT,
    default_currency_code     TEXT,
    default_payment_term_code TEXT,
    default_payment_method    TEXT,
    taxpayer_id               TEXT,
    duns_number               TEXT,
    is_active                 INTEGER NOT NULL DEFAULT 1,
    custom_field_1            TEXT,
    custom_field_2            TEXT,
    custom_field_3            TEXT,
    custom_field_4            TEXT,
    custom_field_5            TEXT,
    created_at                TEXT NOT NULL,
    updated_at                TEXT NOT NULL,
    UNIQUE (supplier_id, location_code)
);

CREATE TABLE supplier_address (
    supplier_address_id  INTEGER PRIMARY KEY,
    supplier_location_id INTEGER NOT NULL REFERENCES supplier_location(supplier_location_id) ON DELETE CASCADE,
    street               TEXT,
    city                 TEXT,
    state                TEXT,
    postal_code          TEXT,
    country_code         TEXT,
    custom_field_1       TEXT,
    custom_field_2       TEXT,
    custom_field_3       TEXT
);
CREATE INDEX supplier_address_by_location ON supplier_address(supplier_location_id);
"#];

/// Opens the database, sets the pragmas and runs pending migrations.
pub fn open(path: &Path) -> Result<Connection, OpenError> {
    let fail = |reason: String| OpenError {
        path: path.to_owned(),
        reason,
    };
    if path.is_dir() {
        return Err(fail("is a directory; pass a file path such as nuntiq.db".into()));
    }
    let mut conn = Connection::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    configure(&conn).map_err(|e| fail(format!("not a usable SQLite database: {e}")))?;
    migrate(&mut conn).map_err(fail)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), String> {
    let version: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| format!("not a usable SQLite database: {e}"))?;
    if version > MIGRATIONS.len() {
        return Err(format!(
            "was written by a newer nuntiq-host (schema version {version}, this one knows {}); \
             upgrade nuntiq-host or use another --db",
            MIGRATIONS.len()
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        tx.execute_batch(sql)
            .and_then(|_| tx.pragma_update(None, "user_version", i + 1))
            .and_then(|_| tx.commit())
            .map_err(|e| format!("failed to apply schema version {}: {e}", i + 1))?;
    }
    Ok(())
}

pub fn now_utc() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The DeltaStreamState columns, in the order [`state_from_row`] reads them.
const STATE_COLUMNS: &str = "connector_name, stream_name, cursor_type, committed_cursor_value, committed_at_utc,
    status, started_at_utc, completed_at_utc, records_processed, error_summary, metadata, updated_at_utc,
    updated_by, customer_number";

fn state_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StreamState> {
    let cursor_type: Option<String> = r.get(2)?;
    let status: String = r.get(5)?;
    let metadata: Option<String> = r.get(10)?;
    Ok(StreamState {
        connector_name: r.get(0)?,
        stream_name: r.get(1)?,
        cursor_type: cursor_type.as_deref().and_then(CursorType::parse),
        committed_cursor_value: r.get(3)?,
        committed_at_utc: r.get(4)?,
        status: RunStatus::parse(&status),
        started_at_utc: r.get(6)?,
        completed_at_utc: r.get(7)?,
        records_processed: r.get::<_, Option<i64>>(8)?.map(|n| n.max(0) as u64),
        error_summary: r.get(9)?,
        metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
        updated_at_utc: r.get(11)?,
        updated_by: r.get(12)?,
    })
}

fn read_state(conn: &Connection, key: &StreamKey) -> rusqlite::Result<Option<StreamState>> {
    conn.prepare_cached(&format!(
        "SELECT {STATE_COLUMNS} FROM delta_stream_state
         WHERE customer_number = ?1 AND connector_name = ?2 AND stream_name = ?3"
    ))?
    .query_row(
        params![key.customer_number, key.connector_name, key.stream_name],
        state_from_row,
    )
    .optional()
}

/// Which streams `state show` lists; `None` matches any.
#[derive(Debug, Default, Clone)]
pub struct StreamFilter {
    pub customer_number: Option<String>,
    pub connector_name: Option<String>,
    pub stream_name: Option<String>,
}

/// Every stream matching `filter` with its customer number, in key order.
pub fn list_states(conn: &Connection, filter: &StreamFilter) -> rusqlite::Result<Vec<(String, StreamState)>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {STATE_COLUMNS} FROM delta_stream_state
         WHERE (?1 IS NULL OR customer_number = ?1) AND (?2 IS NULL OR connector_name = ?2)
           AND (?3 IS NULL OR stream_name = ?3)
         ORDER BY customer_number, connector_name, stream_name"
    ))?;
    stmt.query_map(
        params![filter.customer_number, filter.connector_name, filter.stream_name],
        |r| Ok((r.get(13)?, state_from_row(r)?)),
    )?
    .collect()
}

/// Opens an existing database for reading only; never creates or migrates.
pub fn open_read_only(path: &Path) -> Result<Connection, OpenError> {
    let fail = |reason: String| OpenError {
        path: path.to_owned(),
        reason,
    };
    if !path.is_file() {
        return Err(fail(
            "no such database; `nuntiq-host run-plugin` creates it on its first run".into(),
        ));
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| fail(format!("cannot open: {e}")))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(|e| fail(e.to_string()))?;
    let version: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| fail(format!("not a usable SQLite database: {e}")))?;
    if version == 0 || version > MIGRATIONS.len() {
        return Err(fail(format!("not a nuntiq-host database (schema version {version})")));
    }
    Ok(conn)
}

pub fn get_state(conn: &mut Connection, key: &StreamKey) -> Result<StreamState, StoreError> {
    Ok(read_state(conn, key)?.unwrap_or_else(|| StreamState::idle(key)))
}

/// The platform's begin: creates the row if missing, overwrites the run-state
/// fields in place and returns the committed cursor (the lower bound).
pub fn begin_run(
    conn: &mut Connection,
    key: &StreamKey,
    cursor_type: CursorType,
    updated_by: &str,
) -> Result<Option<String>, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let existing = read_state(&tx, key)?;
    if let Some(stored) = existing.as_ref().and_then(|s| s.cursor_type)
        && stored != cursor_type
    {
        return Err(StoreError::CursorTypeMismatch(format!(
            "stream {key} keeps a {stored} cursor, but begin asked for {cursor_type}; \
             an operator must reset the stream to change its cursor type"
        )));
    }
    let now = now_utc();
    tx.execute(
        "INSERT INTO delta_stream_state
             (customer_number, connector_name, stream_name, cursor_type, status,
              started_at_utc, completed_at_utc, error_summary, records_processed, updated_at_utc, updated_by)
         VALUES (?1, ?2, ?3, ?4, 'running', ?5, NULL, NULL, NULL, ?5, ?6)
         ON CONFLICT (customer_number, connector_name, stream_name) DO UPDATE SET
             cursor_type = excluded.cursor_type, status = 'running', started_at_utc = excluded.started_at_utc,
             completed_at_utc = NULL, error_summary = NULL, records_processed = NULL,
             updated_at_utc = excluded.updated_at_utc, updated_by = excluded.updated_by",
        params![
            key.customer_number,
            key.connector_name,
            key.stream_name,
            cursor_type.as_str(),
            now,
            updated_by
        ],
    )?;
    tx.commit()?;
    Ok(existing.and_then(|s| s.committed_cursor_value))
}

/// Writes the final suppliers and advances the cursor. Earlier chunks of an
/// oversized `pending` commit on their own; the last chunk shares the cursor's
/// transaction, so after a crash the cursor is never ahead of the data.
pub fn complete_run(
    conn: &mut Connection,
    key: &StreamKey,
    completion: &Completion,
    pending: &[Supplier],
) -> Result<StreamState, StoreError> {
    let last_chunk_start = pending.len().saturating_sub(1) / SUPPLIERS_PER_TRANSACTION * SUPPLIERS_PER_TRANSACTION;
    let (earlier, last) = pending.split_at(last_chunk_start);
    save_suppliers(conn, &key.customer_number, earlier)?;

    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let state = read_state(&tx, key)?
        .ok_or_else(|| StoreError::NotRunning(format!("stream {key} not found: call begin first")))?;
    let old = state.committed_cursor_value.as_deref();
    let advances = completion
        .cursor_type
        .advances(old, &completion.new_cursor_value)
        .map_err(StoreError::InvalidCursor)?;
    if !advances {
        return Err(StoreError::CursorRegression(format!(
            "{} cursor {:?} does not move past the committed {:?} of stream {key}",
            completion.cursor_type,
            completion.new_cursor_value,
            old.unwrap_or_default()
        )));
    }
    upsert_suppliers(&tx, &key.customer_number, last)?;
    let now = now_utc();
    let metadata = completion.metadata.as_ref().map(|m| m.to_string());
    tx.execute(
        "UPDATE delta_stream_state SET
             committed_cursor_value = ?4, committed_at_utc = ?5, status = 'succeeded',
             completed_at_utc = ?5, records_processed = ?6, metadata = ?7, error_summary = NULL,
             updated_at_utc = ?5, updated_by = ?8
         WHERE customer_number = ?1 AND connector_name = ?2 AND stream_name = ?3",
        params![
            key.customer_number,
            key.connector_name,
            key.stream_name,
            completion.new_cursor_value,
            now,
            completion.records_processed.map(|n| n as i64),
            metadata,
            completion.updated_by
        ],
    )?;
    tx.execute(
        "INSERT INTO delta_audit_log
             (customer_number, connector_name, stream_name, event_type, old_cursor_value, new_cursor_value, api_user, created_at_utc)
         VALUES (?1, ?2, ?3, 'cursor_advance', ?4, ?5, ?6, ?7)",
        params![
            key.customer_number,
            key.connector_name,
            key.stream_name,
            old,
            completion.new_cursor_value,
            completion.updated_by,
            now
        ],
    )?;
    let state = read_state(&tx, key)?.expect("row exists inside this transaction");
    tx.commit()?;
    Ok(state)
}

/// The platform's fail: status `failed` with a summary; the cursor stays.
pub fn fail_run(
    conn: &mut Connection,
    key: &StreamKey,
    error_summary: &str,
    updated_by: &str,
) -> Result<(), StoreError> {
    let now = now_utc();
    let changed = conn.execute(
        "UPDATE delta_stream_state SET status = 'failed', error_summary = ?4, completed_at_utc = ?5,
             updated_at_utc = ?5, updated_by = ?6
         WHERE customer_number = ?1 AND connector_name = ?2 AND stream_name = ?3",
        params![
            key.customer_number,
            key.connector_name,
            key.stream_name,
            error_summary,
            now,
            updated_by
        ],
    )?;
    if changed == 0 {
        return Err(StoreError::NotRunning(format!(
            "stream {key} not found: call begin first"
        )));
    }
    Ok(())
}

pub fn save_suppliers(
    conn: &mut Connection,
    customer_number: &str,
    suppliers: &[Supplier],
) -> Result<usize, StoreError> {
    for chunk in suppliers.chunks(SUPPLIERS_PER_TRANSACTION) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        upsert_suppliers(&tx, customer_number, chunk)?;
        tx.commit()?;
    }
    Ok(suppliers.len())
}

/// Upserts on (customer_number, supplier_number, organization_code), then each
/// location on (supplier, location_code), replacing the location's addresses.
fn upsert_suppliers(tx: &Transaction<'_>, customer_number: &str, suppliers: &[Supplier]) -> rusqlite::Result<()> {
    if suppliers.is_empty() {
        return Ok(());
    }
    let now = now_utc();
    let mut upsert_supplier = tx.prepare_cached(
        "INSERT INTO supplier
             (customer_number, supplier_number, organization_code, supplier_name, alternative_supplier_name,
              supplier_type, is_active, custom_field_1, custom_field_2, custom_field_3, custom_field_4,
              custom_field_5, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, COALESCE(?7, 1), ?8, ?9, ?10, ?11, ?12, ?13, ?13)
         ON CONFLICT (customer_number, supplier_number, organization_code) DO UPDATE SET
             supplier_name = excluded.supplier_name,
             alternative_supplier_name = excluded.alternative_supplier_name,
             supplier_type = excluded.supplier_type,
             is_active = COALESCE(?7, supplier.is_active),
             custom_field_1 = excluded.custom_field_1, custom_field_2 = excluded.custom_field_2,
             custom_field_3 = excluded.custom_field_3, custom_field_4 = excluded.custom_field_4,
             custom_field_5 = excluded.custom_field_5, updated_at = excluded.updated_at
         RETURNING supplier_id",
    )?;
    let mut upsert_location = tx.prepare_cached(
        "INSERT INTO supplier_location
             (supplier_id, location_code, location_name, organization_code, default_currency_code,
              default_payment_term_code, default_payment_method, taxpayer_id, duns_number, is_active,
              custom_field_1, custom_field_2, custom_field_3, custom_field_4, custom_field_5, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, COALESCE(?10, 1), ?11, ?12, ?13, ?14, ?15, ?16, ?16)
         ON CONFLICT (supplier_id, location_code) DO UPDATE SET
             location_name = excluded.location_name, organization_code = excluded.organization_code,
             default_currency_code = excluded.default_currency_code,
             default_payment_term_code = excluded.default_payment_term_code,
             default_payment_method = excluded.default_payment_method,
             taxpayer_id = excluded.taxpayer_id, duns_number = excluded.duns_number,
             is_active = COALESCE(?10, supplier_location.is_active),
             custom_field_1 = excluded.custom_field_1, custom_field_2 = excluded.custom_field_2,
             custom_field_3 = excluded.custom_field_3, custom_field_4 = excluded.custom_field_4,
             custom_field_5 = excluded.custom_field_5, updated_at = excluded.updated_at
         RETURNING supplier_location_id",
    )?;
    let mut delete_addresses = tx.prepare_cached("DELETE FROM supplier_address WHERE supplier_location_id = ?1")?;
    let mut insert_address = tx.prepare_cached(
        "INSERT INTO supplier_address
             (supplier_location_id, street, city, state, postal_code, country_code,
              custom_field_1, custom_field_2, custom_field_3)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;

    for s in suppliers {
        let supplier_id: i64 = upsert_supplier.query_row(
            params![
                customer_number,
                s.supplier_number,
                s.organization_code.as_deref().unwrap_or(""),
                s.supplier_name,
                s.alternative_supplier_name,
                s.supplier_type,
                s.is_active,
                s.custom_field_1,
                s.custom_field_2,
                s.custom_field_3,
                s.custom_field_4,
                s.custom_field_5,
                now
            ],
            |r| r.get(0),
        )?;
        for l in &s.locations {
            let location_id = upsert_location_row(&mut upsert_location, supplier_id, l, &now)?;
            delete_addresses.execute([location_id])?;
            for a in &l.addresses {
                insert_address.execute(params![
                    location_id,
                    a.street,
                    a.city,
                    a.state,
                    a.postal_code,
                    a.country_code,
                    a.custom_field_1,
                    a.custom_field_2,
                    a.custom_field_3
                ])?;
            }
        }
    }
    Ok(())
}

fn upsert_location_row(
    stmt: &mut rusqlite::CachedStatement<'_>,
    supplier_id: i64,
    l: &SupplierLocation,
    now: &str,
) -> rusqlite::Result<i64> {
    stmt.query_row(
        params![
            supplier_id,
            l.location_code,
            l.location_name,
            l.organization_code,
            l.default_currency_code,
            l.default_payment_term_code,
            l.default_payment_method,
            l.taxpayer_id,
            l.duns_number,
            l.is_active,
            l.custom_field_1,
            l.custom_field_2,
            l.custom_field_3,
            l.custom_field_4,
            l.custom_field_5,
            now
        ],
        |r| r.get(0),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bindings::supplier_load::SupplierAddress;

    pub(crate) fn supplier(number: &str, name: &str, city: Option<&str>) -> Supplier {
        Supplier {
            supplier_number: number.into(),
            supplier_name: name.into(),
            alternative_supplier_name: None,
            supplier_type: None,
            organization_code: None,
            is_active: Some(true),
            custom_field_1: None,
            custom_field_2: None,
            custom_field_3: None,
            custom_field_4: None,
            custom_field_5: None,
            locations: city
                .map(|city| SupplierLocation {
                    location_code: "MAIN".into(),
                    location_name: Some("Headquarters".into()),
                    organization_code: None,
                    default_currency_code: None,
                    default_payment_term_code: None,
                    default_payment_method: None,
                    taxpayer_id: None,
                    duns_number: None,
                    is_active: Some(true),
                    custom_field_1: None,
                    custom_field_2: None,
                    custom_field_3: None,
                    custom_field_4: None,
                    custom_field_5: None,
                    addresses: vec![SupplierAddress {
                        street: Some("1 Main St".into()),
                        city: Some(city.into()),
                        state: None,
                        postal_code: None,
                        country_code: Some("NL".into()),
                        custom_field_1: None,
                        custom_field_2: None,
                        custom_field_3: None,
                    }],
                })
                .into_iter()
                .collect(),
        }
    }

    fn key() -> StreamKey {
        StreamKey {
            customer_number: "10000001".into(),
            connector_name: "acme_eu".into(),
            stream_name: "suppliers".into(),
        }
    }

    fn completion(cursor: &str) -> Completion {
        Completion {
            cursor_type: CursorType::TimestampUtc,
            new_cursor_value: cursor.into(),
            records_processed: Some(1),
            metadata: Some(serde_json::json!({"schema_version": 1})),
            updated_by: "test".into(),
        }
    }

    fn count(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("t.db")).unwrap();
        (dir, conn)
    }

    #[test]
    fn upsert_replaces_in_place_without_duplicates() {
        let (_dir, mut conn) = db();
        save_suppliers(
            &mut conn,
            "c1",
            &[supplier("S1", "One", Some("Utrecht")), supplier("S2", "Two", None)],
        )
        .unwrap();
        save_suppliers(&mut conn, "c1", &[supplier("S1", "One renamed", Some("Delft"))]).unwrap();
        assert_eq!(count(&conn, "supplier"), 2);
        assert_eq!(count(&conn, "supplier_location"), 1);
        assert_eq!(count(&conn, "supplier_address"), 1);
        let (name, city): (String, String) = conn
            .query_row(
                "SELECT s.supplier_name, a.city FROM supplier s JOIN supplier_location l USING (supplier_id)
                 JOIN supplier_address a USING (supplier_location_id) WHERE s.supplier_number = 'S1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((name.as_str(), city.as_str()), ("One renamed", "Delft"));
        // Another tenant's S1 is another row.
        save_suppliers(&mut conn, "c2", &[supplier("S1", "Theirs", None)]).unwrap();
        assert_eq!(count(&conn, "supplier"), 3);
    }

    #[test]
    fn organization_code_is_part_of_the_key() {
        let (_dir, mut conn) = db();
        let mut other_org = supplier("S1", "One in org B", None);
        other_org.organization_code = Some("B".into());
        save_suppliers(&mut conn, "c1", &[supplier("S1", "One", None), other_org]).unwrap();
        assert_eq!(count(&conn, "supplier"), 2);
    }

    #[test]
    fn lifecycle_advances_and_audits() {
        let (_dir, mut conn) = db();
        let k = key();
        assert_eq!(get_state(&mut conn, &k).unwrap().status, RunStatus::Idle);
        assert_eq!(
            begin_run(&mut conn, &k, CursorType::TimestampUtc, "test").unwrap(),
            None
        );
        assert_eq!(get_state(&mut conn, &k).unwrap().status, RunStatus::Running);
        let state = complete_run(
            &mut conn,
            &k,
            &completion("2024-05-01T09:00:00Z"),
            &[supplier("S1", "One", None)],
        )
        .unwrap();
        assert_eq!(state.status, RunStatus::Succeeded);
        assert_eq!(state.committed_cursor_value.as_deref(), Some("2024-05-01T09:00:00Z"));
        assert_eq!(count(&conn, "supplier"), 1);
        assert_eq!(count(&conn, "delta_audit_log"), 1);
        assert_eq!(
            begin_run(&mut conn, &k, CursorType::TimestampUtc, "test")
                .unwrap()
                .as_deref(),
            Some("2024-05-01T09:00:00Z")
        );
    }

    #[test]
    fn regression_is_refused_and_writes_nothing() {
        let (_dir, mut conn) = db();
        let k = key();
        begin_run(&mut conn, &k, CursorType::TimestampUtc, "test").unwrap();
        complete_run(&mut conn, &k, &completion("2024-05-01T09:00:00Z"), &[]).unwrap();
        begin_run(&mut conn, &k, CursorType::TimestampUtc, "test").unwrap();
        let err = complete_run(
            &mut conn,
            &k,
            &completion("2024-05-01T10:00:00+02:00"),
            &[supplier("S9", "Nine", None)],
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::CursorRegression(_)), "{err}");
        assert!(err.to_string().starts_with("CURSOR_REGRESSION"));
        assert_eq!(count(&conn, "supplier"), 0);
        assert_eq!(
            get_state(&mut conn, &k).unwrap().committed_cursor_value.as_deref(),
            Some("2024-05-01T09:00:00Z")
        );
    }

    #[test]
    fn fail_keeps_the_cursor_and_begin_clears_the_summary() {
        let (_dir, mut conn) = db();
        let k = key();
        begin_run(&mut conn, &k, CursorType::TimestampUtc, "test").unwrap();
        complete_run(&mut conn, &k, &completion("2024-05-01T09:00:00Z"), &[]).unwrap();
        begin_run(&mut conn, &k, CursorType::TimestampUtc, "test").unwrap();
        fail_run(&mut conn, &k, "page 3: 500", "test").unwrap();
        let s = get_state(&mut conn, &k).unwrap();
        assert_eq!(
            (s.status, s.error_summary.as_deref()),
            (RunStatus::Failed, Some("page 3: 500"))
        );
        assert_eq!(s.committed_cursor_value.as_deref(), Some("2024-05-01T09:00:00Z"));
        begin_run(&mut conn, &k, CursorType::TimestampUtc, "test").unwrap();
        assert_eq!(get_state(&mut conn, &k).unwrap().error_summary, None);
    }

    #[test]
    fn cursor_type_cannot_change_silently() {
        let (_dir, mut conn) = db();
        let k = key();
        begin_run(&mut conn, &k, CursorType::TimestampUtc, "test").unwrap();
        let err = begin_run(&mut conn, &k, CursorType::NumericId, "test").unwrap_err();
        assert!(matches!(err, StoreError::CursorTypeMismatch(_)), "{err}");
    }

    #[test]
    fn oversized_final_batch_keeps_the_last_chunk_with_the_cursor() {
        let (_dir, mut conn) = db();
        let k = key();
        begin_run(&mut conn, &k, CursorType::TimestampUtc, "test").unwrap();
        let many: Vec<_> = (0..2500).map(|i| supplier(&format!("S{i}"), "x", None)).collect();
        complete_run(&mut conn, &k, &completion("2024-05-01T09:00:00Z"), &many).unwrap();
        assert_eq!(count(&conn, "supplier"), 2500);
    }

    #[test]
    fn a_directory_or_garbage_file_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
        let e = open(&junk).unwrap_err().to_string();
        assert!(e.contains("not a usable SQLite database"), "{e}");
    }
}
