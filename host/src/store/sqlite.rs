//! SQLite, the embedded engine: one connection owned by the store's writer
//! thread (readers open their own, read-only). Write transactions begin
//! `IMMEDIATE`, so a writer waits for the lock up front instead of failing
//! half-way; the schema and its migrations are in `schema.rs`.

use super::StoreError;
use super::sql::{Param, Row, Value};
use rusqlite::types::{ToSqlOutput, ValueRef};

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Param::Null => ValueRef::Null,
            Param::Int(n) => ValueRef::Integer(n),
            Param::Text(s) => ValueRef::Text(s.as_bytes()),
            Param::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

pub struct SqliteConn {
    pub(crate) conn: rusqlite::Connection,
    /// Whether the last supplier batch was mostly new suppliers (see `suppliers.rs`).
    pub(crate) inserting: bool,
}

impl SqliteConn {
    pub fn new(conn: rusqlite::Connection) -> Self {
        Self { conn, inserting: false }
    }

    /// Closes the connection; with `checkpoint`, the last connection to close
    /// copies the WAL into the database file and removes it. Without, the
    /// WAL's tail stays beside the database (it is part of it; SQLite's
    /// automatic checkpoints, every 1000 pages, keep it short): a checkpoint
    /// on close costs a 100 000-supplier first load about 5 % for its syncs.
    pub fn close(self, checkpoint: bool) {
        if !checkpoint {
            let _ = self
                .conn
                .set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
        }
        drop(self.conn);
    }

    pub(super) fn begin(&mut self) -> Result<(), StoreError> {
        Ok(self.conn.execute_batch("BEGIN IMMEDIATE")?)
    }

    pub(super) fn commit(&mut self) -> Result<(), StoreError> {
        Ok(self.conn.execute_batch("COMMIT")?)
    }

    pub(super) fn rollback(&mut self) -> Result<(), StoreError> {
        if !self.conn.is_autocommit() {
            self.conn.execute_batch("ROLLBACK")?;
        }
        Ok(())
    }

    pub(super) fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        Ok(stmt.execute(rusqlite::params_from_iter(params))? as u64)
    }

    pub(super) fn query_each(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        mut visit: impl FnMut(Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        while let Some(r) = rows.next()? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => Value::Int(n),
                    ValueRef::Real(f) => Value::Text(f.to_string()),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                });
            }
            visit(Row(values))?;
        }
        Ok(())
    }
}
