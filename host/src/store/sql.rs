//! The seam between the store's logic and its two engines: one connection
//! type, [`Conn`], that speaks SQL to SQLite or PostgreSQL. Delta state, run
//! history, rejected rows and the admin views are written once against it, in
//! SQL both engines accept (`?1` placeholders, `ON CONFLICT … DO UPDATE`,
//! `RETURNING`); what differs is small and named here: how a write
//! transaction begins, how a row is locked, and the supplier upsert, which
//! each engine does its own fastest way (see `suppliers.rs`).

use super::StoreError;
use super::postgres::PgConn;
use super::sqlite::SqliteConn;

/// A value handed to a statement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<&'a Option<String>> for Param<'a> {
    fn from(v: &'a Option<String>) -> Self {
        v.as_deref().map_or(Param::Null, Param::Text)
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(v: Option<&'a str>) -> Self {
        v.map_or(Param::Null, Param::Text)
    }
}

impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(v: &'a [u8]) -> Self {
        Param::Blob(v)
    }
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Param::Null, Param::Int)
    }
}

impl From<u32> for Param<'_> {
    fn from(v: u32) -> Self {
        Param::Int(v.into())
    }
}

impl From<bool> for Param<'_> {
    fn from(v: bool) -> Self {
        Param::Int(v.into())
    }
}

impl From<Option<bool>> for Param<'_> {
    fn from(v: Option<bool>) -> Self {
        v.map_or(Param::Null, |b| Param::Int(b.into()))
    }
}

/// The parameters of one statement: `params![a, b, …]`.
macro_rules! params {
    ($($p:expr),* $(,)?) => {
        &[$($crate::store::sql::Param::from($p)),*][..]
    };
}
pub(crate) use params;

/// A value read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// One result row, its columns in the order the statement named them.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> &Value {
        self.0.get(i).unwrap_or(&Value::Null)
    }

    pub fn opt_text(&self, i: usize) -> Option<String> {
        match self.at(i) {
            Value::Text(s) => Some(s.clone()),
            Value::Int(n) => Some(n.to_string()),
            _ => None,
        }
    }

    pub fn text(&self, i: usize) -> String {
        self.opt_text(i).unwrap_or_default()
    }

    pub fn opt_int(&self, i: usize) -> Option<i64> {
        match self.at(i) {
            Value::Int(n) => Some(*n),
            Value::Text(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn int(&self, i: usize) -> i64 {
        self.opt_int(i).unwrap_or(0)
    }

    pub fn blob(&self, i: usize) -> Vec<u8> {
        match self.at(i) {
            Value::Blob(b) => b.clone(),
            Value::Text(s) => s.clone().into_bytes(),
            _ => Vec::new(),
        }
    }
}

/// Which engine a connection speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A connection to the store, of either engine.
pub enum Conn {
    Sqlite(SqliteConn),
    Postgres(PgConn),
}

impl Conn {
    pub fn engine(&self) -> Engine {
        match self {
            Conn::Sqlite(_) => Engine::Sqlite,
            Conn::Postgres(_) => Engine::Postgres,
        }
    }

    /// What a read that must hold its rows until the transaction ends adds:
    /// PostgreSQL locks them; SQLite's write transaction already excludes
    /// every other writer.
    pub fn for_update(&self) -> &'static str {
        match self {
            Conn::Sqlite(_) => "",
            Conn::Postgres(_) => " FOR UPDATE",
        }
    }

    /// The column that orders rows of `delta_run` as they were inserted.
    pub fn insertion_order(&self) -> &'static str {
        match self {
            Conn::Sqlite(_) => "rowid",
            Conn::Postgres(_) => "seq",
        }
    }

    /// Begins a write transaction.
    pub async fn begin(&mut self) -> Result<(), StoreError> {
        match self {
            Conn::Sqlite(c) => c.begin(),
            Conn::Postgres(c) => c.begin().await,
        }
    }

    pub async fn commit(&mut self) -> Result<(), StoreError> {
        match self {
            Conn::Sqlite(c) => c.commit(),
            Conn::Postgres(c) => c.commit().await,
        }
    }

    pub async fn rollback(&mut self) -> Result<(), StoreError> {
        match self {
            Conn::Sqlite(c) => c.rollback(),
            Conn::Postgres(c) => c.rollback().await,
        }
    }

    /// Runs a statement; returns how many rows it changed.
    pub async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        match self {
            Conn::Sqlite(c) => c.execute(sql, params),
            Conn::Postgres(c) => c.execute(sql, params).await,
        }
    }

    pub async fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let mut rows = Vec::new();
        self.query_each(sql, params, |r| {
            rows.push(r);
            Ok(())
        })
        .await?;
        Ok(rows)
    }

    pub async fn query_opt(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Runs statements that take no parameters and return nothing (`BEGIN …`).
    pub async fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        match self {
            Conn::Sqlite(c) => Ok(c.conn.execute_batch(sql)?),
            Conn::Postgres(c) => Ok(c.client().batch_execute(sql).await?),
        }
    }

    /// Hands each row to `visit` as it is read (a listing of any size streams).
    pub async fn query_each(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        visit: impl FnMut(Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        match self {
            Conn::Sqlite(c) => c.query_each(sql, params, visit),
            Conn::Postgres(c) => c.query_each(sql, params, visit).await,
        }
    }
}

/// Runs `body` in a write transaction: committed when it returns `Ok`,
/// rolled back when it returns `Err`.
pub async fn transaction<T>(
    conn: &mut Conn,
    body: impl AsyncFnOnce(&mut Conn) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    transaction_opened_by(conn, None, body).await
}

/// [`transaction`], begun on PostgreSQL by `opening` instead of `BEGIN`
/// alone (e.g. `BEGIN; SET LOCAL …`: one round trip, not two).
pub async fn transaction_opened_by<T>(
    conn: &mut Conn,
    opening: Option<&str>,
    body: impl AsyncFnOnce(&mut Conn) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    match (opening, conn.engine()) {
        (Some(sql), Engine::Postgres) => conn.batch(sql).await?,
        _ => conn.begin().await?,
    }
    match body(conn).await {
        Ok(value) => {
            conn.commit().await?;
            Ok(value)
        }
        Err(e) => {
            // The error that ended the transaction is the one to report.
            let _ = conn.rollback().await;
            Err(e)
        }
    }
}
