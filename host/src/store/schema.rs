//! The SQLite file: opening it (WAL, `synchronous=NORMAL`: a commit survives
//! a killed process and readers never block the writer) and its schema versions.

use super::OpenError;
use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the platform's delta state and audit log, and the supplier tables.
    r#"
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
"#,
    // 2: one run per stream at a time (a lease held by a process), and run history.
    r#"
ALTER TABLE delta_stream_state ADD COLUMN run_id TEXT;
ALTER TABLE delta_stream_state ADD COLUMN owner_host TEXT;
ALTER TABLE delta_stream_state ADD COLUMN owner_pid INTEGER;
ALTER TABLE delta_stream_state ADD COLUMN owner_process_start TEXT;
ALTER TABLE delta_stream_state ADD COLUMN lease_expires_at_utc TEXT;

CREATE TABLE delta_run (
    run_id            TEXT PRIMARY KEY,
    customer_number   TEXT NOT NULL,
    connector_name    TEXT NOT NULL,
    stream_name       TEXT NOT NULL,
    cursor_type       TEXT NOT NULL,
    status            TEXT NOT NULL,
    started_at_utc    TEXT NOT NULL,
    ended_at_utc      TEXT,
    records_processed INTEGER,
    cursor_before     TEXT,
    cursor_after      TEXT,
    error_summary     TEXT,
    plugin_sha256     TEXT,
    owner_host        TEXT,
    owner_pid         INTEGER
);
CREATE INDEX delta_run_by_stream ON delta_run(customer_number, connector_name, stream_name, started_at_utc);
"#,
];

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

#[cfg(test)]
mod tests {
    use super::*;

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
