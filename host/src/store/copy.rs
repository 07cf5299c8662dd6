//! `store copy`: everything one SQL store holds — delta state (cursors,
//! status, leases), the audit log, run history, rejected rows, suppliers with
//! their locations and addresses, schedule slots — written into another, of
//! either engine. The source is read in one snapshot; the target is written
//! in one transaction, which commits only after the target's row counts and
//! content digest equal the source's: a failed copy leaves the target as it
//! was.

use super::postgres::PgPool;
use super::schema;
use super::sql::{Conn, Engine, Param, Value, params};
use super::sqlite::SqliteConn;
use super::{Db, StoreError};
use sha2::{Digest, Sha256};

/// The tables of a store, parents before children. Every table of both
/// schemas but PostgreSQL's `nuntiq_schema` and [`NOT_COPIED`] (a test holds
/// this true, so a new table is not forgotten here).
pub const TABLES: &[&str] = &[
    "delta_stream_state",
    "delta_audit_log",
    "delta_run",
    "supplier",
    "supplier_location",
    "supplier_address",
    "supplier_bank_account",
    "rejected_record",
    "schedule_slot",
    "jobs",
    "job_apply",
    "job_action",
    "customer_pause",
    "job_trigger",
];

/// Tables whose rows are numbered in the order they were written (`id`):
/// the numbers are kept, and PostgreSQL's sequence goes on from them.
const NUMBERED: &[&str] = &["delta_audit_log", "job_apply", "job_action"];

/// Tables not copied: the `serve` processes' heartbeats belong to the
/// processes on the source's database, not to the data; the jobs'
/// generation is the target's own (its `serve`s see the copied jobs as new).
pub const NOT_COPIED: &[&str] = &["hosts", "jobs_generation"];

/// Columns one engine keeps for itself: PostgreSQL's insertion order of run
/// history (SQLite's is the rowid), and its suppliers' locations document,
/// which both engines show as the location, address and bank account tables
/// (views on PostgreSQL). Not copied: the target numbers the rows anew, in
/// the source's order, and builds the document from the rows of those views.
const ENGINE_ONLY: &[(&str, &str)] = &[("delta_run", "seq"), ("supplier", "locations")];

/// PostgreSQL's views of a supplier's document: rows inserted into them are
/// appended to it, in the order they come; deleting the suppliers deletes them.
const SUPPLIER_VIEWS: &[&str] = &["supplier_location", "supplier_address", "supplier_bank_account"];

/// The most parameters one statement carries (SQLite allows 32 766,
/// PostgreSQL 65 535).
const MAX_PARAMS: usize = 30_000;

/// Why a copy did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Bad input (exit 2): a store that cannot be opened, a non-empty target, the same store twice.
    #[error("{0}")]
    Refused(String),
    /// The copy failed or did not verify (exit 1); the target is unchanged.
    #[error("{0}")]
    Failed(String),
}

impl From<StoreError> for CopyError {
    fn from(e: StoreError) -> Self {
        CopyError::Failed(format!("the copy failed, the target is unchanged: {e}"))
    }
}

/// What was copied: rows per table and the content digest both stores share.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Copied {
    pub tables: Vec<(String, u64)>,
    pub digest: String,
}

/// Opens `db` for the copy; `must_exist` for the source (a SQLite path that
/// is not there is a typo, not an empty store).
pub async fn open(flag: &str, db: &Db, must_exist: bool) -> Result<Conn, CopyError> {
    let refuse = |reason: String| CopyError::Refused(format!("{flag} {db}: {reason}"));
    match db {
        Db::Sqlite(path) => {
            if must_exist && !path.is_file() {
                return Err(refuse("no such database file".into()));
            }
            let conn = schema::open(path).map_err(|e| refuse(e.reason))?;
            Ok(Conn::Sqlite(SqliteConn::new(conn)))
        }
        Db::Postgres(url) => {
            let pool = PgPool::open(url).await.map_err(|e| refuse(e.reason))?;
            let conn = pool.conn().await.map_err(|e| refuse(e.to_string()))?;
            Ok(Conn::Postgres(conn))
        }
        Db::Nuntiq(_) => Err(refuse(
            "the Customer API is not a SQL store; copy its ledger (run-plugin's --ledger) instead".into(),
        )),
    }
}

/// The columns of `table` this engine has, in its order, less the engine's own.
pub async fn columns(conn: &mut Conn, table: &str) -> Result<Vec<String>, StoreError> {
    let rows = match conn.engine() {
        Engine::Sqlite => {
            conn.query(
                &format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"),
                params![],
            )
            .await?
        }
        Engine::Postgres => {
            conn.query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = ?1 ORDER BY ordinal_position",
                params![table],
            )
            .await?
        }
    };
    Ok(rows
        .iter()
        .map(|r| r.text(0))
        .filter(|c| !ENGINE_ONLY.contains(&(table, c.as_str())))
        .collect())
}

/// Copies everything `from` holds into `to`. A target that holds rows is
/// refused unless `force`, which replaces them.
pub async fn copy(from: &mut Conn, to: &mut Conn, force: bool) -> Result<Copied, CopyError> {
    // One snapshot of the source, whatever runs beside the copy.
    from.batch(match from.engine() {
        Engine::Sqlite => "BEGIN",
        Engine::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    })
    .await?;
    let result = async {
        to.begin().await?;
        match copy_in(from, to, force).await {
            Ok(copied) => {
                to.commit().await?;
                Ok(copied)
            }
            Err(e) => {
                let _ = to.rollback().await;
                Err(e)
            }
        }
    }
    .await;
    let _ = from.batch("ROLLBACK").await;
    result
}

async fn copy_in(from: &mut Conn, to: &mut Conn, force: bool) -> Result<Copied, CopyError> {
    let mut held = Vec::new();
    for table in TABLES {
        let n = count(to, table).await?;
        if n > 0 {
            held.push(format!("{table} {n}"));
        }
    }
    if !held.is_empty() {
        if !force {
            return Err(CopyError::Refused(format!(
                "the target is not empty ({}): pass --force to replace what it holds",
                held.join(", ")
            )));
        }
        for table in TABLES.iter().rev() {
            if to.engine() == Engine::Postgres && SUPPLIER_VIEWS.contains(table) {
                continue;
            }
            to.execute(&format!("DELETE FROM {table}"), params![]).await?;
        }
    }

    for table in TABLES {
        let source_columns = columns(from, table).await?;
        let mut target_columns = columns(to, table).await?;
        let mut sorted = source_columns.clone();
        sorted.sort();
        target_columns.sort();
        if sorted != target_columns {
            return Err(CopyError::Refused(format!(
                "table {table} has other columns in the target ({}) than in the source ({}); both stores must \
                 be at this host's schema version",
                target_columns.join(", "),
                sorted.join(", ")
            )));
        }
        let order = match *table {
            t if NUMBERED.contains(&t) => " ORDER BY id".to_owned(),
            "delta_run" => format!(" ORDER BY {}", from.insertion_order()),
            // Appended in order, so each lands at its position.
            "supplier_address" | "supplier_bank_account" => {
                " ORDER BY customer_number, supplier_number, supplier_organization_code, location_code, position"
                    .to_owned()
            }
            _ => String::new(),
        };
        let list = source_columns.join(", ");
        let rows = from
            .query(&format!("SELECT {list} FROM {table}{order}"), params![])
            .await?;
        // The audit log's ids are kept (they order it); PostgreSQL generates
        // them unless told otherwise.
        let overriding = if NUMBERED.contains(table) && to.engine() == Engine::Postgres {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        let width = source_columns.len();
        let per_statement = (MAX_PARAMS / width).clamp(1, 1000);
        for chunk in rows.chunks(per_statement) {
            let mut sql = format!("INSERT INTO {table} ({list}){overriding} VALUES ");
            let mut values: Vec<Param<'_>> = Vec::with_capacity(chunk.len() * width);
            for (r, row) in chunk.iter().enumerate() {
                if r > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                for c in 0..width {
                    if c > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!("?{}", r * width + c + 1));
                    values.push(match row.0.get(c).unwrap_or(&Value::Null) {
                        Value::Null => Param::Null,
                        Value::Int(n) => Param::Int(*n),
                        Value::Text(s) => Param::Text(s),
                        Value::Blob(b) => Param::Blob(b),
                    });
                }
                sql.push(')');
            }
            to.execute(&sql, &values).await?;
        }
    }
    if to.engine() == Engine::Postgres {
        // The next audit entry (apply, action) numbers on from the copied ones.
        for table in NUMBERED {
            to.query(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(max(id), 0) + 1, false) \
                     FROM {table}"
                ),
                params![],
            )
            .await?;
        }
    }

    // Checked inside the target's transaction: a copy that differs is not committed.
    let source = digest(from).await?;
    let target = digest(to).await?;
    for ((table, want), (_, got)) in source.tables.iter().zip(&target.tables) {
        if want != got {
            return Err(CopyError::Failed(format!(
                "the copy of {table} has {got} rows, the source {want}; nothing was committed"
            )));
        }
    }
    if source.digest != target.digest {
        return Err(CopyError::Failed(format!(
            "the copy's content digest {} differs from the source's {}; nothing was committed",
            target.digest, source.digest
        )));
    }
    Ok(source)
}

async fn count(conn: &mut Conn, table: &str) -> Result<u64, StoreError> {
    let row = conn
        .query_opt(&format!("SELECT count(*) FROM {table}"), params![])
        .await?;
    Ok(row.map_or(0, |r| r.int(0)) as u64)
}

/// Row counts per table and a digest of every copied column of every row,
/// the same for equal contents on either engine: each row's values are
/// hashed with their kind, and a table's row hashes are sorted before they
/// are hashed together, so neither engine's row order nor its collation
/// matters.
pub async fn digest(conn: &mut Conn) -> Result<Copied, StoreError> {
    let mut all = Sha256::new();
    let mut tables = Vec::new();
    for table in TABLES {
        let mut cols = columns(conn, table).await?;
        cols.sort();
        let mut hashes: Vec<[u8; 32]> = Vec::new();
        conn.query_each(&format!("SELECT {} FROM {table}", cols.join(", ")), params![], |row| {
            let mut h = Sha256::new();
            for value in &row.0 {
                match value {
                    Value::Null => h.update([0u8]),
                    Value::Int(n) => {
                        h.update([1u8]);
                        h.update(n.to_le_bytes());
                    }
                    Value::Text(s) => {
                        h.update([2u8]);
                        h.update((s.len() as u64).to_le_bytes());
                        h.update(s.as_bytes());
                    }
                    Value::Blob(b) => {
                        h.update([3u8]);
                        h.update((b.len() as u64).to_le_bytes());
                        h.update(b);
                    }
                }
            }
            hashes.push(h.finalize().into());
            Ok(())
        })
        .await?;
        hashes.sort_unstable();
        all.update(table.as_bytes());
        all.update((hashes.len() as u64).to_le_bytes());
        for h in &hashes {
            all.update(h);
        }
        tables.push((table.to_string(), hashes.len() as u64));
    }
    let digest = all.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Copied { tables, digest })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{count as rows, postgres, sqlite};

    async fn tables_of(conn: &mut Conn) -> Vec<String> {
        let sql = match conn.engine() {
            Engine::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
            Engine::Postgres => {
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() \
                 AND table_name <> 'nuntiq_schema' ORDER BY table_name"
            }
        };
        conn.query(sql, params![])
            .await
            .unwrap()
            .iter()
            .map(|r| r.text(0))
            .collect()
    }

    #[tokio::test]
    async fn every_table_of_both_engines_is_copied() {
        let mut listed: Vec<String> = TABLES.iter().chain(NOT_COPIED).map(|t| t.to_string()).collect();
        listed.sort();
        let (_a, mut lite) = sqlite().await;
        assert_eq!(tables_of(&mut lite).await, listed);
        let (_b, mut pg) = postgres().await;
        assert_eq!(tables_of(&mut pg).await, listed);
        for table in TABLES {
            let mut a = columns(&mut lite, table).await.unwrap();
            let mut b = columns(&mut pg, table).await.unwrap();
            a.sort();
            b.sort();
            assert_eq!(a, b, "{table} has the same columns on both engines");
        }
    }

    async fn fill(conn: &mut Conn) {
        conn.execute(
            "INSERT INTO delta_stream_state (customer_number, connector_name, stream_name, cursor_type, \
             committed_cursor_value, status) VALUES ('1', 'acme', 'suppliers', 'timestamp', '2026-01-01T00:00:00Z', 'idle')",
            params![],
        )
        .await
        .unwrap();
        for i in 0..3 {
            conn.execute(
                "INSERT INTO delta_audit_log (customer_number, connector_name, stream_name, event_type, \
                 created_at_utc) VALUES ('1', 'acme', 'suppliers', ?1, 'now')",
                params![format!("e{i}").as_str()],
            )
            .await
            .unwrap();
        }
        conn.execute(
            "INSERT INTO supplier (customer_number, supplier_number, organization_code, supplier_name, is_active, \
             fingerprint, created_at, updated_at) VALUES ('1', 'S1', '', 'Ünïcode ☃', 1, ?1, 'a', 'b')",
            params![&[0u8, 255, 7][..]],
        )
        .await
        .unwrap();
        // Its location, addresses and bank account: rows of tables on SQLite,
        // appended to the supplier's document through the views on PostgreSQL.
        for sql in [
            "INSERT INTO supplier_location (customer_number, supplier_number, supplier_organization_code, \
             location_code, location_name, is_active, created_at, updated_at) \
             VALUES ('1', 'S1', '', 'MAIN', 'Head \"office\"', 1, 'a', 'b')",
            "INSERT INTO supplier_address (customer_number, supplier_number, supplier_organization_code, \
             location_code, position, street, city) VALUES ('1', 'S1', '', 'MAIN', 0, '1 Main St', 'Delft')",
            "INSERT INTO supplier_address (customer_number, supplier_number, supplier_organization_code, \
             location_code, position, city) VALUES ('1', 'S1', '', 'MAIN', 1, 'Gouda')",
            "INSERT INTO supplier_bank_account (customer_number, supplier_number, supplier_organization_code, \
             location_code, position, bank_account_number, is_primary) VALUES ('1', 'S1', '', 'MAIN', 0, 'NL01', 1)",
        ] {
            conn.execute(sql, params![]).await.unwrap();
        }
    }

    async fn round_trip(from: &mut Conn, to: &mut Conn) {
        fill(from).await;
        let before = digest(from).await.unwrap();
        let copied = copy(from, to, false).await.unwrap();
        assert_eq!(copied, before);
        assert_eq!(digest(to).await.unwrap(), before);
        assert_eq!(rows(to, "delta_audit_log").await, 3);

        // Not again without --force; with it, the same content.
        let e = copy(from, to, false).await.unwrap_err();
        assert!(
            matches!(e, CopyError::Refused(ref m) if m.contains("--force") && m.contains("supplier 1")),
            "{e}"
        );
        assert_eq!(copy(from, to, true).await.unwrap(), before);
        assert_eq!(rows(to, "supplier").await, 1);
        assert_eq!(rows(to, "supplier_address").await, 2);
        assert_eq!(rows(to, "supplier_bank_account").await, 1);
        let gouda = to
            .query_opt("SELECT position FROM supplier_address WHERE city = 'Gouda'", params![])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(gouda.int(0), 1, "each address lands at its position");

        // The next audit entry gets a new id on the target.
        to.execute(
            "INSERT INTO delta_audit_log (customer_number, connector_name, stream_name, event_type, created_at_utc) \
             VALUES ('1', 'acme', 'suppliers', 'after', 'now')",
            params![],
        )
        .await
        .unwrap();
        assert_eq!(rows(to, "delta_audit_log").await, 4);
    }

    #[tokio::test]
    async fn sqlite_to_postgres_and_back() {
        let (_a, mut lite) = sqlite().await;
        let (_b, mut pg) = postgres().await;
        round_trip(&mut lite, &mut pg).await;
        let (_c, mut back) = sqlite().await;
        let copied = copy(&mut pg, &mut back, false).await.unwrap();
        assert_eq!(copied, digest(&mut pg).await.unwrap());
        assert_eq!(digest(&mut back).await.unwrap(), copied);
        assert_eq!(rows(&mut back, "delta_audit_log").await, 4);
    }

    #[tokio::test]
    async fn postgres_to_sqlite() {
        let (_a, mut pg) = postgres().await;
        let (_b, mut lite) = sqlite().await;
        round_trip(&mut pg, &mut lite).await;
    }
}
