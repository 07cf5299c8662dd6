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
    // 3: suppliers keyed by their natural key, with a content fingerprint so an
    // unchanged supplier is not rewritten; write counts in run history; the
    // lease owner's machine identity (boot id and pid namespace).
    r#"
CREATE TABLE supplier_v3 (
    customer_number           TEXT NOT NULL,
    supplier_number           TEXT NOT NULL,
    organization_code         TEXT NOT NULL,
    supplier_name             TEXT NOT NULL,
    alternative_supplier_name TEXT,
    supplier_type             TEXT,
    is_active                 INTEGER NOT NULL,
    custom_field_1            TEXT,
    custom_field_2            TEXT,
    custom_field_3            TEXT,
    custom_field_4            TEXT,
    custom_field_5            TEXT,
    fingerprint               BLOB NOT NULL,
    created_at                TEXT NOT NULL,
    updated_at                TEXT NOT NULL,
    PRIMARY KEY (customer_number, supplier_number, organization_code)
) WITHOUT ROWID;
INSERT INTO supplier_v3
SELECT customer_number, supplier_number, organization_code, supplier_name, alternative_supplier_name, supplier_type,
       is_active, custom_field_1, custom_field_2, custom_field_3, custom_field_4, custom_field_5, X'',
       created_at, updated_at
FROM supplier;

CREATE TABLE supplier_location_v3 (
    customer_number            TEXT NOT NULL,
    supplier_number            TEXT NOT NULL,
    supplier_organization_code TEXT NOT NULL,
    location_code              TEXT NOT NULL,
    location_name              TEXT,
    organization_code          TEXT,
    default_currency_code      TEXT,
    default_payment_term_code  TEXT,
    default_payment_method     TEXT,
    taxpayer_id                TEXT,
    duns_number                TEXT,
    is_active                  INTEGER NOT NULL,
    custom_field_1             TEXT,
    custom_field_2             TEXT,
    custom_field_3             TEXT,
    custom_field_4             TEXT,
    custom_field_5             TEXT,
    created_at                 TEXT NOT NULL,
    updated_at                 TEXT NOT NULL,
    PRIMARY KEY (customer_number, supplier_number, supplier_organization_code, location_code)
) WITHOUT ROWID;
INSERT INTO supplier_location_v3
SELECT s.customer_number, s.supplier_number, s.organization_code, l.location_code, l.location_name,
       l.organization_code, l.default_currency_code, l.default_payment_term_code, l.default_payment_method,
       l.taxpayer_id, l.duns_number, l.is_active, l.custom_field_1, l.custom_field_2, l.custom_field_3,
       l.custom_field_4, l.custom_field_5, l.created_at, l.updated_at
FROM supplier_location l JOIN supplier s USING (supplier_id);

CREATE TABLE supplier_address_v3 (
    customer_number            TEXT NOT NULL,
    supplier_number            TEXT NOT NULL,
    supplier_organization_code TEXT NOT NULL,
    location_code              TEXT NOT NULL,
    position                   INTEGER NOT NULL,
    street                     TEXT,
    city                       TEXT,
    state                      TEXT,
    postal_code                TEXT,
    country_code               TEXT,
    custom_field_1             TEXT,
    custom_field_2             TEXT,
    custom_field_3             TEXT,
    PRIMARY KEY (customer_number, supplier_number, supplier_organization_code, location_code, position)
) WITHOUT ROWID;
INSERT INTO supplier_address_v3
SELECT s.customer_number, s.supplier_number, s.organization_code, l.location_code,
       row_number() OVER (PARTITION BY a.supplier_location_id ORDER BY a.supplier_address_id) - 1,
       a.street, a.city, a.state, a.postal_code, a.country_code, a.custom_field_1, a.custom_field_2,
       a.custom_field_3
FROM supplier_address a JOIN supplier_location l USING (supplier_location_id) JOIN supplier s USING (supplier_id);

DROP TABLE supplier_address;
DROP TABLE supplier_location;
DROP TABLE supplier;
ALTER TABLE supplier_v3 RENAME TO supplier;
ALTER TABLE supplier_location_v3 RENAME TO supplier_location;
ALTER TABLE supplier_address_v3 RENAME TO supplier_address;

ALTER TABLE delta_run ADD COLUMN suppliers_inserted INTEGER;
ALTER TABLE delta_run ADD COLUMN suppliers_updated INTEGER;
ALTER TABLE delta_run ADD COLUMN suppliers_unchanged INTEGER;
ALTER TABLE delta_stream_state ADD COLUMN owner_instance TEXT;
"#,
    // 4: rows a connector set aside (`delta-run.reject`), once per distinct row.
    r#"
CREATE TABLE rejected_record (
    customer_number   TEXT NOT NULL,
    connector_name    TEXT NOT NULL,
    stream_name       TEXT NOT NULL,
    row_sha256        TEXT NOT NULL,
    row               TEXT NOT NULL,
    reason            TEXT NOT NULL,
    first_rejected_at TEXT NOT NULL,
    last_rejected_at  TEXT NOT NULL,
    last_run_id       TEXT NOT NULL,
    times             INTEGER NOT NULL,
    PRIMARY KEY (customer_number, connector_name, stream_name, row_sha256)
) WITHOUT ROWID;
ALTER TABLE delta_run ADD COLUMN rejected INTEGER;
"#,
    // 5: what each job used, on its runs' history rows; the slots `serve`
    // claims so that each scheduled run happens once, whichever host runs it.
    r#"
ALTER TABLE delta_run ADD COLUMN job_id TEXT;
ALTER TABLE delta_run ADD COLUMN wall_ms INTEGER;
ALTER TABLE delta_run ADD COLUMN cpu_ms INTEGER;
ALTER TABLE delta_run ADD COLUMN store_ms INTEGER;
ALTER TABLE delta_run ADD COLUMN peak_memory_bytes INTEGER;
ALTER TABLE delta_run ADD COLUMN http_requests INTEGER;
ALTER TABLE delta_run ADD COLUMN http_retries INTEGER;
ALTER TABLE delta_run ADD COLUMN http_bytes_in INTEGER;
ALTER TABLE delta_run ADD COLUMN records_written INTEGER;
CREATE INDEX delta_run_by_job ON delta_run(job_id);

CREATE TABLE schedule_slot (
    job_name         TEXT NOT NULL,
    slot_at          TEXT NOT NULL,
    status           TEXT NOT NULL,
    job_id           TEXT NOT NULL,
    host             TEXT NOT NULL,
    pid              INTEGER NOT NULL,
    claimed_at       TEXT NOT NULL,
    lease_expires_at TEXT NOT NULL,
    ended_at         TEXT,
    outcome          TEXT,
    takeovers        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_name, slot_at)
) WITHOUT ROWID;
"#,
    // 6: the plugin's own metadata (name, version, authors, source) on run history.
    r#"
ALTER TABLE delta_run ADD COLUMN plugin_metadata TEXT;
"#,
    // 7: bank accounts per location (contract 0.3.0).
    r#"
CREATE TABLE supplier_bank_account (
    customer_number            TEXT NOT NULL,
    supplier_number            TEXT NOT NULL,
    supplier_organization_code TEXT NOT NULL,
    location_code              TEXT NOT NULL,
    position                   INTEGER NOT NULL,
    bank_name                  TEXT,
    bank_branch                TEXT,
    bank_account_number        TEXT,
    bank_routing_number        TEXT,
    swift_code                 TEXT,
    account_currency           TEXT,
    is_primary                 INTEGER,
    custom_field_1             TEXT,
    custom_field_2             TEXT,
    custom_field_3             TEXT,
    PRIMARY KEY (customer_number, supplier_number, supplier_organization_code, location_code, position)
) WITHOUT ROWID;
"#,
    // 8: the trace id of the run that began the stream's run (its spans, its envelope).
    r#"
ALTER TABLE delta_run ADD COLUMN trace_id TEXT;
"#,
    // 9: a scheduled run's job name, slot and error kind on its history rows;
    // the `serve` processes' heartbeats, so hosts share the due slots and a
    // dead host's slots are taken over in seconds.
    r#"
ALTER TABLE delta_run ADD COLUMN job_name TEXT;
ALTER TABLE delta_run ADD COLUMN slot_at TEXT;
ALTER TABLE delta_run ADD COLUMN error_kind TEXT;

CREATE TABLE hosts (
    id             TEXT PRIMARY KEY,
    hostname       TEXT NOT NULL,
    pid            INTEGER NOT NULL,
    instance       TEXT,
    process_start  TEXT,
    started        TEXT NOT NULL,
    last_heartbeat TEXT NOT NULL
);
CREATE INDEX hosts_by_process ON hosts(hostname, pid);
"#,
    // 10: the control plane: jobs as rows (applied with `jobs apply`), the
    // record of each apply and each operator action, per-customer pauses,
    // triggered runs, and a generation every `serve` polls to see a change.
    r#"
CREATE TABLE jobs (
    name              TEXT PRIMARY KEY,
    customer_number   TEXT NOT NULL,
    connector_name    TEXT,
    definition        TEXT NOT NULL,
    definition_digest TEXT NOT NULL,
    plugin_sha256     TEXT NOT NULL,
    applied_at        TEXT NOT NULL,
    applied_by        TEXT NOT NULL,
    paused            INTEGER NOT NULL DEFAULT 0,
    paused_reason     TEXT,
    paused_by         TEXT,
    paused_at         TEXT
);
CREATE INDEX jobs_by_customer ON jobs(customer_number);

CREATE TABLE job_apply (
    id          INTEGER PRIMARY KEY,
    applied_by  TEXT NOT NULL,
    applied_at  TEXT NOT NULL,
    file        TEXT NOT NULL,
    file_sha256 TEXT NOT NULL,
    added       TEXT NOT NULL,
    changed     TEXT NOT NULL,
    removed     TEXT NOT NULL
);

CREATE TABLE job_action (
    id              INTEGER PRIMARY KEY,
    at              TEXT NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    job_name        TEXT,
    customer_number TEXT,
    reason          TEXT
);

CREATE TABLE customer_pause (
    customer_number TEXT PRIMARY KEY,
    reason          TEXT NOT NULL,
    paused_by       TEXT NOT NULL,
    paused_at       TEXT NOT NULL
);

CREATE TABLE job_trigger (
    job_name     TEXT NOT NULL,
    slot_at      TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    PRIMARY KEY (job_name, slot_at)
);

CREATE TABLE jobs_generation (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT INTO jobs_generation (id, generation) VALUES (1, 0);
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

/// How long a process waits for another one's lock (a writer, a migration).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Switching a new file to WAL takes an exclusive lock for which SQLite's
    // busy handler is not always consulted: when many processes start on one
    // new file together, retry until the busy timeout.
    let started = std::time::Instant::now();
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(e) if is_busy(&e) && started.elapsed() < BUSY_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => break other?,
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Applies pending schema versions. The version is read inside the write
/// transaction that applies them, so of many processes starting together on
/// one file, one migrates and the others wait for it, see the work done and
/// go on.
fn migrate(conn: &mut Connection) -> Result<(), String> {
    let current: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| format!("not a usable SQLite database: {e}"))?;
    if current == MIGRATIONS.len() {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .map_err(|e| format!("failed to lock the database to migrate it: {e}"))?;
    let version: usize = tx
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
        tx.execute_batch(sql)
            .map_err(|e| format!("failed to apply schema version {}: {e}", i + 1))?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len())
        .and_then(|_| tx.commit())
        .map_err(|e| format!("failed to record schema version {}: {e}", MIGRATIONS.len()))?;
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
    fn many_openers_of_a_new_file_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        let openers: Vec<_> = (0..6)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || open(&path).map(|_| ()))
            })
            .collect();
        for opener in openers {
            opener.join().unwrap().unwrap();
        }
        let conn = open(&path).unwrap();
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len());
    }

    #[test]
    fn a_version_2_store_keeps_its_suppliers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute_batch(
                "INSERT INTO supplier (supplier_id, customer_number, supplier_number, organization_code, supplier_name,
                     is_active, created_at, updated_at) VALUES (7, 'c1', 'S1', '', 'One', 1, 't', 't');
                 INSERT INTO supplier_location (supplier_location_id, supplier_id, location_code, is_active,
                     created_at, updated_at) VALUES (3, 7, 'MAIN', 1, 't', 't');
                 INSERT INTO supplier_address (supplier_location_id, city) VALUES (3, 'Delft'), (3, 'Gouda');",
            )
            .unwrap();
        }
        let conn = open(&path).unwrap();
        let rows: Vec<(String, String, i64, String)> = conn
            .prepare("SELECT supplier_number, location_code, position, city FROM supplier_address ORDER BY position")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                ("S1".into(), "MAIN".into(), 0, "Delft".into()),
                ("S1".into(), "MAIN".into(), 1, "Gouda".into())
            ]
        );
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
