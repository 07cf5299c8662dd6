//! PostgreSQL, the shared engine for many hosts: tokio-postgres through a
//! deadpool pool. Its transactions, row locks (`SELECT … FOR UPDATE`) and
//! unique constraints are the hosts' only coordination. Migrations are
//! versioned and run under a transaction-scoped advisory lock, so hosts that
//! start together apply each one once.

use super::pg_connect;
use super::sql::{Param, Row, Value};
use super::{OpenError, StoreError};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::TryStreamExt;
use std::collections::HashMap;
use std::error::Error;
use std::time::Duration;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// Whether `--db` names a PostgreSQL database rather than a SQLite file.
pub fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// The URL as it may be shown: without its password (in the user part or a
/// `password=` setting).
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if u.query_pairs().any(|(k, _)| k == "password") {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k == "password" {
                            "***".to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's own message says what was wrong; the driver's Display alone says "db error".
        let lost = is_connection_lost(&e);
        let detail = e
            .as_db_error()
            .map(|db| format!("{}: {}", db.code().code(), db.message()))
            .unwrap_or_else(|| {
                let mut text = e.to_string();
                let mut source = e.source();
                while let Some(s) = source {
                    text.push_str(&format!(": {s}"));
                    source = s.source();
                }
                text
            });
        if lost {
            StoreError::Unavailable(format!("PostgreSQL: {detail}"))
        } else {
            StoreError::Database(detail)
        }
    }
}

/// The server cannot be reached or went away (connection refused, reset or
/// closed; the server shutting down or not accepting connections): the
/// store's fault, not the statement's.
fn is_connection_lost(e: &tokio_postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // Class 08: connection exception; 57P01-57P03: shutting down, cannot connect now.
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    if e.is_closed() {
        return true;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    let text = e.to_string();
    text.starts_with("error connecting") || text.starts_with("error communicating") || text.contains("timeout")
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(format!("no PostgreSQL connection: {other}")),
        }
    }
}

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match *self {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(n) => match *ty {
                Type::INT2 => i16::try_from(n)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(n)?.to_sql(ty, out),
                Type::BOOL => (n != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => n.to_string().to_sql(ty, out),
                _ => n.to_sql(ty, out),
            },
            Param::Text(s) => s.to_sql(ty, out),
            Param::Blob(b) => b.to_sql(ty, out),
        }
    }

    /// Any column type: the value is converted to what the statement wants.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Connections to one database: the pool a process shares between its runs.
#[derive(Clone)]
pub struct PgPool {
    pool: Pool,
    /// The URL without its password, for messages.
    pub shown: String,
}

/// Connections one process opens at most (runs queue for one beyond that).
pub const POOL_SIZE: usize = 16;

impl PgPool {
    /// Connects, checks the server answers, and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self, OpenError> {
        let shown = redacted(url);
        let fail = |reason: String| OpenError {
            path: shown.clone().into(),
            reason,
        };
        let settings = pg_connect::settings(url, &|var| std::env::var(var).ok()).map_err(fail)?;
        let notes = settings.notes;
        let mut config = settings.config;
        // Plan each statement for its own values: a generic plan made while a
        // table was empty would scan it whole for ever after.
        let options = match config.get_options() {
            Some(given) => format!("{given} -c plan_cache_mode=force_custom_plan"),
            None => "-c plan_cache_mode=force_custom_plan".to_owned(),
        };
        config.options(options);
        let manager = Manager::from_config(
            config,
            settings.tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(10)))
            .wait_timeout(Some(Duration::from_secs(120)))
            .build()
            .map_err(|e| fail(format!("cannot make a connection pool: {e}")))?;
        let pool = Self {
            pool,
            shown: shown.clone(),
        };
        let mut conn = pool.conn().await.map_err(|e| {
            let mut reason = format!("cannot connect: {e}");
            for note in &notes {
                reason.push_str(&format!("; {note}"));
            }
            if !e.to_string().contains("certificate") {
                reason.push_str("; is the server running, the database created and the password right?");
            }
            fail(reason)
        })?;
        migrate(&mut conn)
            .await
            .map_err(|e| fail(format!("cannot migrate the schema: {e}")))?;
        Ok(pool)
    }

    /// A connection from the pool, back to it when dropped.
    pub async fn conn(&self) -> Result<PgConn, StoreError> {
        Ok(PgConn {
            client: self.pool.get().await?,
            translated: HashMap::new(),
            inserting: false,
            opening: None,
        })
    }
}

pub struct PgConn {
    client: deadpool_postgres::Object,
    /// `?N` placeholders written as PostgreSQL's `$N`, by statement text.
    translated: HashMap<String, String>,
    /// Whether the last supplier batch only added suppliers (see `pg_suppliers.rs`).
    pub(crate) inserting: bool,
    /// A batch transaction's `BEGIN`, not sent yet: the supplier upsert sends
    /// it with its first statements, one round trip fewer per batch.
    pub(crate) opening: Option<&'static str>,
}

/// `?1` → `$1`: the store's SQL is written once, with SQLite's placeholders.
fn translate(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

impl PgConn {
    async fn statement(&mut self, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
        let text = match self.translated.get(sql) {
            Some(t) => t,
            None => self.translated.entry(sql.to_owned()).or_insert_with(|| translate(sql)),
        };
        Ok(self.client.prepare_cached(text).await?)
    }

    pub(super) async fn begin(&mut self) -> Result<(), StoreError> {
        Ok(self.client.batch_execute("BEGIN").await?)
    }

    pub(super) async fn commit(&mut self) -> Result<(), StoreError> {
        Ok(self.client.batch_execute("COMMIT").await?)
    }

    pub(super) async fn rollback(&mut self) -> Result<(), StoreError> {
        Ok(self.client.batch_execute("ROLLBACK").await?)
    }

    pub(super) async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let statement = self.statement(sql).await?;
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        Ok(self.client.execute(&statement, &params).await?)
    }

    pub(super) async fn query_each(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        mut visit: impl FnMut(Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let statement = self.statement(sql).await?;
        let rows = self.client.query_raw(&statement, params.iter()).await?;
        let mut rows = std::pin::pin!(rows);
        while let Some(row) = rows.try_next().await? {
            visit(read_row(&row)?)?;
        }
        Ok(())
    }

    /// The raw client, for the supplier upsert's array statements.
    pub(super) fn client(&self) -> &tokio_postgres::Client {
        &self.client
    }

    pub(super) async fn prepared(&mut self, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
        self.statement(sql).await
    }
}

fn read_row(row: &tokio_postgres::Row) -> Result<Row, StoreError> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let value = match *column.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(|n| Value::Int(n.into())),
            Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(|n| Value::Int(n.into())),
            Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(|b| Value::Int(b.into())),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            _ => row.try_get::<_, Option<String>>(i)?.map(Value::Text),
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

/// Schema versions, applied in order; `nuntiq_schema.version` records how many
/// ran. The tables and columns are SQLite's (`schema.rs`) with PostgreSQL's
/// types, so the same statements serve both.
const MIGRATIONS: [&str; 8] = [
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
    records_processed      BIGINT,
    error_summary          TEXT,
    metadata               TEXT,
    updated_at_utc         TEXT,
    updated_by             TEXT,
    run_id                 TEXT,
    owner_host             TEXT,
    owner_pid              BIGINT,
    owner_process_start    TEXT,
    lease_expires_at_utc   TEXT,
    owner_instance         TEXT,
    PRIMARY KEY (customer_number, connector_name, stream_name)
);

CREATE TABLE delta_audit_log (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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

CREATE TABLE delta_run (
    seq                 BIGINT GENERATED ALWAYS AS IDENTITY,
    run_id              TEXT PRIMARY KEY,
    customer_number     TEXT NOT NULL,
    connector_name      TEXT NOT NULL,
    stream_name         TEXT NOT NULL,
    cursor_type         TEXT NOT NULL,
    status              TEXT NOT NULL,
    started_at_utc      TEXT NOT NULL,
    ended_at_utc        TEXT,
    records_processed   BIGINT,
    cursor_before       TEXT,
    cursor_after        TEXT,
    error_summary       TEXT,
    plugin_sha256       TEXT,
    owner_host          TEXT,
    owner_pid           BIGINT,
    suppliers_inserted  BIGINT,
    suppliers_updated   BIGINT,
    suppliers_unchanged BIGINT,
    rejected            BIGINT
);
CREATE INDEX delta_run_by_stream ON delta_run(customer_number, connector_name, stream_name, started_at_utc);

CREATE TABLE supplier (
    customer_number           TEXT NOT NULL,
    supplier_number           TEXT NOT NULL,
    organization_code         TEXT NOT NULL,
    supplier_name             TEXT NOT NULL,
    alternative_supplier_name TEXT,
    supplier_type             TEXT,
    is_active                 BIGINT NOT NULL,
    custom_field_1            TEXT,
    custom_field_2            TEXT,
    custom_field_3            TEXT,
    custom_field_4            TEXT,
    custom_field_5            TEXT,
    fingerprint               BYTEA NOT NULL,
    created_at                TEXT NOT NULL,
    updated_at                TEXT NOT NULL,
    PRIMARY KEY (customer_number, supplier_number, organization_code)
);

CREATE TABLE supplier_location (
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
    is_active                  BIGINT NOT NULL,
    custom_field_1             TEXT,
    custom_field_2             TEXT,
    custom_field_3             TEXT,
    custom_field_4             TEXT,
    custom_field_5             TEXT,
    created_at                 TEXT NOT NULL,
    updated_at                 TEXT NOT NULL,
    PRIMARY KEY (customer_number, supplier_number, supplier_organization_code, location_code)
);

CREATE TABLE supplier_address (
    customer_number            TEXT NOT NULL,
    supplier_number            TEXT NOT NULL,
    supplier_organization_code TEXT NOT NULL,
    location_code              TEXT NOT NULL,
    position                   BIGINT NOT NULL,
    street                     TEXT,
    city                       TEXT,
    state                      TEXT,
    postal_code                TEXT,
    country_code               TEXT,
    custom_field_1             TEXT,
    custom_field_2             TEXT,
    custom_field_3             TEXT,
    PRIMARY KEY (customer_number, supplier_number, supplier_organization_code, location_code, position)
);

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
    times             BIGINT NOT NULL,
    PRIMARY KEY (customer_number, connector_name, stream_name, row_sha256)
);
"#,
    // 2: SQLite's version 5.
    r#"
ALTER TABLE delta_run ADD COLUMN job_id TEXT;
ALTER TABLE delta_run ADD COLUMN wall_ms BIGINT;
ALTER TABLE delta_run ADD COLUMN cpu_ms BIGINT;
ALTER TABLE delta_run ADD COLUMN store_ms BIGINT;
ALTER TABLE delta_run ADD COLUMN peak_memory_bytes BIGINT;
ALTER TABLE delta_run ADD COLUMN http_requests BIGINT;
ALTER TABLE delta_run ADD COLUMN http_retries BIGINT;
ALTER TABLE delta_run ADD COLUMN http_bytes_in BIGINT;
ALTER TABLE delta_run ADD COLUMN records_written BIGINT;
CREATE INDEX delta_run_by_job ON delta_run(job_id);

CREATE TABLE schedule_slot (
    job_name         TEXT NOT NULL,
    slot_at          TEXT NOT NULL,
    status           TEXT NOT NULL,
    job_id           TEXT NOT NULL,
    host             TEXT NOT NULL,
    pid              BIGINT NOT NULL,
    claimed_at       TEXT NOT NULL,
    lease_expires_at TEXT NOT NULL,
    ended_at         TEXT,
    outcome          TEXT,
    takeovers        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job_name, slot_at)
);
"#,
    // 3: the plugin's own metadata (name, version, authors, source) on run history.
    r#"
ALTER TABLE delta_run ADD COLUMN plugin_metadata TEXT;
"#,
    // 4: bank accounts per location (contract 0.3.0).
    r#"
CREATE TABLE supplier_bank_account (
    customer_number            TEXT NOT NULL,
    supplier_number            TEXT NOT NULL,
    supplier_organization_code TEXT NOT NULL,
    location_code              TEXT NOT NULL,
    position                   BIGINT NOT NULL,
    bank_name                  TEXT,
    bank_branch                TEXT,
    bank_account_number        TEXT,
    bank_routing_number        TEXT,
    swift_code                 TEXT,
    account_currency           TEXT,
    is_primary                 BIGINT,
    custom_field_1             TEXT,
    custom_field_2             TEXT,
    custom_field_3             TEXT,
    PRIMARY KEY (customer_number, supplier_number, supplier_organization_code, location_code, position)
);
"#,
    // 5: the trace id of the run that began the stream's run (its spans, its envelope).
    r#"
ALTER TABLE delta_run ADD COLUMN trace_id TEXT;
"#,
    // 6: SQLite's version 9: a scheduled run's job name, slot and error kind; the hosts' heartbeats.
    r#"
ALTER TABLE delta_run ADD COLUMN job_name TEXT;
ALTER TABLE delta_run ADD COLUMN slot_at TEXT;
ALTER TABLE delta_run ADD COLUMN error_kind TEXT;

CREATE TABLE hosts (
    id             TEXT PRIMARY KEY,
    hostname       TEXT NOT NULL,
    pid            BIGINT NOT NULL,
    instance       TEXT,
    process_start  TEXT,
    started        TEXT NOT NULL,
    last_heartbeat TEXT NOT NULL
);
CREATE INDEX hosts_by_process ON hosts(hostname, pid);
"#,
    // 7: SQLite's version 10, the control plane: jobs as rows (applied with `jobs apply`), the
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
    paused            BIGINT NOT NULL DEFAULT 0,
    paused_reason     TEXT,
    paused_by         TEXT,
    paused_at         TEXT
);
CREATE INDEX jobs_by_customer ON jobs(customer_number);

CREATE TABLE job_apply (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    applied_by  TEXT NOT NULL,
    applied_at  TEXT NOT NULL,
    file        TEXT NOT NULL,
    file_sha256 TEXT NOT NULL,
    added       TEXT NOT NULL,
    changed     TEXT NOT NULL,
    removed     TEXT NOT NULL
);

CREATE TABLE job_action (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL
);
INSERT INTO jobs_generation (id, generation) VALUES (1, 0);
"#,
    // 8: a supplier is one row. Its locations, with their addresses and bank
    // accounts, are a JSON document on it (`supplier_doc.rs`): a first load
    // wrote three rows into three natural-key indexes per supplier, and that
    // was most of the server's time. `json`, not `jsonb`: the server only
    // checks the text, where building jsonb took as long again as the row
    // (the views cast it once per supplier). The old tables become views of the
    // same name and columns, so every reader (export, `store copy`, SQL by
    // hand) sees what it saw; inserting into a view appends to the document.
    r#"
ALTER TABLE supplier ADD COLUMN locations JSON NOT NULL DEFAULT '[]';

UPDATE supplier s SET locations = d.doc::json
FROM (
    SELECT l.customer_number, l.supplier_number, l.supplier_organization_code,
           jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
               'location_code', l.location_code, 'location_name', l.location_name,
               'organization_code', l.organization_code, 'default_currency_code', l.default_currency_code,
               'default_payment_term_code', l.default_payment_term_code,
               'default_payment_method', l.default_payment_method, 'taxpayer_id', l.taxpayer_id,
               'duns_number', l.duns_number, 'is_active', l.is_active,
               'custom_field_1', l.custom_field_1, 'custom_field_2', l.custom_field_2,
               'custom_field_3', l.custom_field_3, 'custom_field_4', l.custom_field_4,
               'custom_field_5', l.custom_field_5, 'created_at', l.created_at, 'updated_at', l.updated_at,
               'addresses', (
                   SELECT jsonb_agg(jsonb_strip_nulls(to_jsonb(a) - 'customer_number' - 'supplier_number'
                                    - 'supplier_organization_code' - 'location_code' - 'position')
                                    ORDER BY a.position)
                   FROM supplier_address a
                   WHERE a.customer_number = l.customer_number AND a.supplier_number = l.supplier_number
                     AND a.supplier_organization_code = l.supplier_organization_code
                     AND a.location_code = l.location_code),
               'bank_accounts', (
                   SELECT jsonb_agg(jsonb_strip_nulls(to_jsonb(b) - 'customer_number' - 'supplier_number'
                                    - 'supplier_organization_code' - 'location_code' - 'position')
                                    ORDER BY b.position)
                   FROM supplier_bank_account b
                   WHERE b.customer_number = l.customer_number AND b.supplier_number = l.supplier_number
                     AND b.supplier_organization_code = l.supplier_organization_code
                     AND b.location_code = l.location_code)
           )) ORDER BY l.location_code) AS doc
    FROM supplier_location l
    GROUP BY l.customer_number, l.supplier_number, l.supplier_organization_code
) d
WHERE s.customer_number = d.customer_number AND s.supplier_number = d.supplier_number
  AND s.organization_code = d.supplier_organization_code;

DROP TABLE supplier_bank_account;
DROP TABLE supplier_address;
DROP TABLE supplier_location;

CREATE VIEW supplier_location AS
SELECT s.customer_number, s.supplier_number, s.organization_code AS supplier_organization_code,
       l.doc->>'location_code' AS location_code, l.doc->>'location_name' AS location_name,
       l.doc->>'organization_code' AS organization_code,
       l.doc->>'default_currency_code' AS default_currency_code,
       l.doc->>'default_payment_term_code' AS default_payment_term_code,
       l.doc->>'default_payment_method' AS default_payment_method,
       l.doc->>'taxpayer_id' AS taxpayer_id, l.doc->>'duns_number' AS duns_number,
       (l.doc->>'is_active')::bigint AS is_active,
       l.doc->>'custom_field_1' AS custom_field_1, l.doc->>'custom_field_2' AS custom_field_2,
       l.doc->>'custom_field_3' AS custom_field_3, l.doc->>'custom_field_4' AS custom_field_4,
       l.doc->>'custom_field_5' AS custom_field_5,
       l.doc->>'created_at' AS created_at, l.doc->>'updated_at' AS updated_at
FROM supplier s CROSS JOIN LATERAL jsonb_array_elements(s.locations::jsonb) AS l(doc);

CREATE VIEW supplier_address AS
SELECT s.customer_number, s.supplier_number, s.organization_code AS supplier_organization_code,
       l.doc->>'location_code' AS location_code, a.n - 1 AS position,
       a.doc->>'street' AS street, a.doc->>'city' AS city, a.doc->>'state' AS state,
       a.doc->>'postal_code' AS postal_code, a.doc->>'country_code' AS country_code,
       a.doc->>'custom_field_1' AS custom_field_1, a.doc->>'custom_field_2' AS custom_field_2,
       a.doc->>'custom_field_3' AS custom_field_3
FROM supplier s CROSS JOIN LATERAL jsonb_array_elements(s.locations::jsonb) AS l(doc)
     CROSS JOIN LATERAL jsonb_array_elements(l.doc->'addresses') WITH ORDINALITY AS a(doc, n);

CREATE VIEW supplier_bank_account AS
SELECT s.customer_number, s.supplier_number, s.organization_code AS supplier_organization_code,
       l.doc->>'location_code' AS location_code, b.n - 1 AS position,
       b.doc->>'bank_name' AS bank_name, b.doc->>'bank_branch' AS bank_branch,
       b.doc->>'bank_account_number' AS bank_account_number,
       b.doc->>'bank_routing_number' AS bank_routing_number, b.doc->>'swift_code' AS swift_code,
       b.doc->>'account_currency' AS account_currency, (b.doc->>'is_primary')::bigint AS is_primary,
       b.doc->>'custom_field_1' AS custom_field_1, b.doc->>'custom_field_2' AS custom_field_2,
       b.doc->>'custom_field_3' AS custom_field_3
FROM supplier s CROSS JOIN LATERAL jsonb_array_elements(s.locations::jsonb) AS l(doc)
     CROSS JOIN LATERAL jsonb_array_elements(l.doc->'bank_accounts') WITH ORDINALITY AS b(doc, n);

-- A row inserted into a view is appended to its supplier's document (what
-- `store copy` writes); its position is where it lands. No supplier, or no
-- location for an address or account, is an error, as the foreign key was.
CREATE FUNCTION nuntiq_location_inserted() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    UPDATE supplier SET locations = (locations::jsonb || jsonb_build_array(jsonb_strip_nulls(
        to_jsonb(NEW) - 'customer_number' - 'supplier_number' - 'supplier_organization_code')))::json
    WHERE customer_number = NEW.customer_number AND supplier_number = NEW.supplier_number
      AND organization_code = NEW.supplier_organization_code;
    IF NOT FOUND THEN
        RAISE foreign_key_violation USING MESSAGE = format(
            'location %s: customer %s has no supplier %s (organization %L)',
            NEW.location_code, NEW.customer_number, NEW.supplier_number, NEW.supplier_organization_code);
    END IF;
    RETURN NEW;
END
$f$;

CREATE FUNCTION nuntiq_location_child_inserted() RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
    list text := TG_ARGV[0];
    child jsonb := jsonb_strip_nulls(to_jsonb(NEW) - 'customer_number' - 'supplier_number'
                                      - 'supplier_organization_code' - 'location_code' - 'position');
BEGIN
    UPDATE supplier s SET locations = (
        SELECT jsonb_agg(CASE WHEN l.doc->>'location_code' = NEW.location_code
                              THEN jsonb_set(l.doc, ARRAY[list],
                                             COALESCE(l.doc->list, '[]') || jsonb_build_array(child))
                              ELSE l.doc END ORDER BY l.n)::json
        FROM jsonb_array_elements(s.locations::jsonb) WITH ORDINALITY AS l(doc, n))
    WHERE s.customer_number = NEW.customer_number AND s.supplier_number = NEW.supplier_number
      AND s.organization_code = NEW.supplier_organization_code
      AND s.locations::jsonb @> jsonb_build_array(jsonb_build_object('location_code', NEW.location_code));
    IF NOT FOUND THEN
        RAISE foreign_key_violation USING MESSAGE = format(
            '%s of location %s: customer %s has no such location of supplier %s (organization %L)',
            list, NEW.location_code, NEW.customer_number, NEW.supplier_number, NEW.supplier_organization_code);
    END IF;
    RETURN NEW;
END
$f$;

CREATE TRIGGER supplier_location_insert INSTEAD OF INSERT ON supplier_location
    FOR EACH ROW EXECUTE FUNCTION nuntiq_location_inserted();
CREATE TRIGGER supplier_address_insert INSTEAD OF INSERT ON supplier_address
    FOR EACH ROW EXECUTE FUNCTION nuntiq_location_child_inserted('addresses');
CREATE TRIGGER supplier_bank_account_insert INSTEAD OF INSERT ON supplier_bank_account
    FOR EACH ROW EXECUTE FUNCTION nuntiq_location_child_inserted('bank_accounts');
"#,
];

/// Applies pending migrations in one transaction, under an advisory lock
/// scoped to this schema: a second host starting at the same moment waits,
/// then finds them applied.
async fn migrate(conn: &mut PgConn) -> Result<(), StoreError> {
    let client = &conn.client;
    client.batch_execute("BEGIN").await?;
    let result = async {
        client
            .execute(
                "SELECT pg_advisory_xact_lock(hashtext('nuntiq-migrate:' || current_schema()))",
                &[],
            )
            .await?;
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS nuntiq_schema (version BIGINT NOT NULL)")
            .await?;
        let version: Option<i64> = client
            .query_opt("SELECT version FROM nuntiq_schema", &[])
            .await?
            .map(|r| r.get(0));
        let applied = version.unwrap_or(0).max(0) as usize;
        if applied > MIGRATIONS.len() {
            return Err(StoreError::Database(format!(
                "the database is at schema version {applied}, newer than this host's {}; upgrade nuntiq-host",
                MIGRATIONS.len()
            )));
        }
        for migration in &MIGRATIONS[applied..] {
            client.batch_execute(migration).await?;
        }
        if version.is_none() {
            client
                .execute(
                    "INSERT INTO nuntiq_schema (version) VALUES ($1)",
                    &[&(MIGRATIONS.len() as i64)],
                )
                .await?;
        } else if applied < MIGRATIONS.len() {
            client
                .execute("UPDATE nuntiq_schema SET version = $1", &[&(MIGRATIONS.len() as i64)])
                .await?;
        }
        Ok::<_, StoreError>(())
    }
    .await;
    match result {
        Ok(()) => Ok(client.batch_execute("COMMIT").await?),
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars() {
        assert_eq!(
            translate("SELECT a FROM t WHERE (?1 IS NULL OR b = ?1) AND c = ?12 AND d = '?'"),
            "SELECT a FROM t WHERE ($1 IS NULL OR b = $1) AND c = $12 AND d = '?'"
        );
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redacted("postgres://app:s3cret@db.internal:5432/nuntiq"),
            "postgres://app:***@db.internal:5432/nuntiq"
        );
        assert_eq!(
            redacted("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
    }

    #[test]
    fn passwords_in_the_query_are_not_shown() {
        assert_eq!(
            redacted("postgres://app@db.internal/nuntiq?sslmode=verify-full&password=s3cret"),
            "postgres://app@db.internal/nuntiq?sslmode=verify-full&password=***"
        );
    }

    /// Version 7 kept locations, addresses and bank accounts in tables of
    /// their own; version 8 folds them into each supplier's document, and
    /// the views of the same names show the same rows. A run after the
    /// upgrade updates a migrated supplier by the usual rules.
    #[tokio::test]
    async fn a_version_7_store_keeps_its_locations_addresses_and_bank_accounts() {
        use crate::store::records::tests::supplier;
        use crate::store::sql::{Conn, params};

        let db = crate::store::testing::postgres_db().await;
        let (client, connection) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        for migration in &MIGRATIONS[..7] {
            client.batch_execute(migration).await.unwrap();
        }
        client
            .batch_execute(
                "CREATE TABLE nuntiq_schema (version BIGINT NOT NULL);
                 INSERT INTO nuntiq_schema VALUES (7);
                 INSERT INTO supplier VALUES ('c1', 'S1', '', 'One', NULL, NULL, 1, NULL, NULL, NULL, NULL, NULL,
                     '\\x00', 'T0', 'T1');
                 INSERT INTO supplier VALUES ('c1', 'S2', 'B', 'Two', NULL, NULL, 0, NULL, NULL, NULL, NULL, NULL,
                     '\\x01', 'T0', 'T1');
                 INSERT INTO supplier_location VALUES ('c1', 'S1', '', 'MAIN', 'Head \"office\"', NULL, 'EUR', NULL,
                     NULL, 'NL1', NULL, 1, NULL, NULL, NULL, NULL, NULL, 'T0', 'T1');
                 INSERT INTO supplier_location VALUES ('c1', 'S1', '', 'BRANCH', NULL, NULL, NULL, NULL, NULL, NULL,
                     NULL, 0, NULL, NULL, NULL, NULL, NULL, 'T0', 'T0');
                 INSERT INTO supplier_address VALUES ('c1', 'S1', '', 'MAIN', 0, '1 Main St', 'Delft', NULL, NULL,
                     'NL', NULL, NULL, NULL);
                 INSERT INTO supplier_address VALUES ('c1', 'S1', '', 'MAIN', 1, NULL, 'Gouda', NULL, NULL, NULL,
                     NULL, NULL, NULL);
                 INSERT INTO supplier_bank_account VALUES ('c1', 'S1', '', 'BRANCH', 0, 'Bank', NULL, 'NL01', NULL,
                     NULL, 'EUR', 1, NULL, NULL, NULL);",
            )
            .await
            .unwrap();
        let rows = |table: &'static str| {
            let client = &client;
            async move {
                let sql = format!("SELECT t::text FROM {table} t ORDER BY 1");
                let rows = client.query(&sql, &[]).await.unwrap();
                rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<String>>()
            }
        };
        let tables = ["supplier_location", "supplier_address", "supplier_bank_account"];
        let mut before = Vec::new();
        for table in tables {
            before.push(rows(table).await);
        }
        assert_eq!(before.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);

        let pool = PgPool::open(&db.url()).await.unwrap_or_else(|e| panic!("{e}"));
        for (table, was) in tables.iter().zip(&before) {
            assert_eq!(&rows(table).await, was, "{table} shows what the table held");
        }
        let kinds: Vec<String> = client
            .query(
                "SELECT table_type::text FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name LIKE 'supplier_%' ORDER BY table_name",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(kinds, ["VIEW", "VIEW", "VIEW"]);

        // MAIN listed again with one address: replaced; BRANCH not listed: kept with its account.
        let mut conn = Conn::Postgres(pool.conn().await.unwrap());
        let counts = crate::store::suppliers::save_suppliers(
            &mut conn,
            "c1",
            &[supplier("S1", "One renamed", Some("Utrecht"))],
            Default::default(),
        )
        .await
        .unwrap();
        assert_eq!(counts.updated, 1);
        let cities: Vec<String> = conn
            .query(
                "SELECT location_code || ':' || city FROM supplier_address ORDER BY 1",
                params![],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.text(0))
            .collect();
        assert_eq!(cities, ["MAIN:Utrecht"]);
        let kept = conn
            .query_opt(
                "SELECT bank_account_number, is_primary FROM supplier_bank_account WHERE location_code = 'BRANCH'",
                params![],
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!((kept.text(0), kept.int(1)), ("NL01".to_owned(), 1));
    }

    /// The test server has TLS on (as Debian sets it up, with its own
    /// certificate): `require` encrypts without checking it, `verify-ca`
    /// without a root certificate is refused before connecting.
    #[tokio::test]
    async fn require_encrypts_and_verify_needs_a_root_certificate() {
        // A schema of its own: opening migrates, and the server's public
        // schema may hold another version's tables.
        let db = crate::store::testing::postgres_db().await;
        let url = format!("{}&sslmode=require", db.url());
        let pool = PgPool::open(&url).await.unwrap_or_else(|e| panic!("{e}"));
        let conn = pool.conn().await.unwrap();
        let ssl: bool = conn
            .client()
            .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        assert!(ssl, "sslmode=require must encrypt");

        let url = format!("{}&sslmode=verify-ca", db.url());
        let message = PgPool::open(&url).await.err().expect("no root certificate").to_string();
        assert!(message.contains("sslrootcert"), "{message}");
    }
}
