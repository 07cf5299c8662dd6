//! Test databases of both engines: a SQLite file in a temporary directory, or
//! a schema of its own in the PostgreSQL server the tests use (so tests run
//! in parallel). A PostgreSQL test fails, never skips, when the server is down.

use super::postgres::PgPool;
use super::schema;
use super::sql::{Conn, params};
use super::sqlite::SqliteConn;

/// Where PostgreSQL tests connect (`NUNTIQ_TEST_PG` overrides): the server
/// every session and CI start on 127.0.0.1:5432, trust auth.
pub fn server_url() -> String {
    std::env::var("NUNTIQ_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// What keeps a test database alive; dropping it removes a PostgreSQL schema.
pub enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres { schema: String },
}

impl TestDb {
    /// The `--db` value of this database.
    pub fn url(&self) -> String {
        match self {
            TestDb::Sqlite(dir) => dir.path().join("t.db").display().to_string(),
            TestDb::Postgres { schema } => schema_url(schema),
        }
    }
}

fn schema_url(schema: &str) -> String {
    let base = server_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { schema } = self {
            let schema = schema.clone();
            // Off the test's runtime: a fresh one, for one statement.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                runtime.block_on(async {
                    let (client, connection) = tokio_postgres::connect(&server_url(), tokio_postgres::NoTls)
                        .await
                        .ok()?;
                    tokio::spawn(connection);
                    client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .await
                        .ok()
                })
            })
            .join();
        }
    }
}

pub async fn sqlite() -> (TestDb, Conn) {
    let dir = tempfile::tempdir().unwrap();
    let conn = schema::open(&dir.path().join("t.db")).unwrap();
    (TestDb::Sqlite(dir), Conn::Sqlite(SqliteConn::new(conn)))
}

/// A fresh schema in the test server; panics, naming the server, when it cannot be reached.
pub async fn postgres_db() -> TestDb {
    let url = server_url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is needed for this test and did not answer: {e}"));
    tokio::spawn(connection);
    let schema = format!("nuntiq_t_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap_or_else(|e| panic!("cannot create a test schema in {url}: {e}"));
    TestDb::Postgres { schema }
}

pub async fn postgres() -> (TestDb, Conn) {
    let db = postgres_db().await;
    let pool = PgPool::open(&db.url()).await.unwrap_or_else(|e| panic!("{e}"));
    let conn = pool.conn().await.unwrap();
    (db, Conn::Postgres(conn))
}

/// Rows in `table`.
pub async fn count(conn: &mut Conn, table: &str) -> i64 {
    conn.query_opt(&format!("SELECT count(*) FROM {table}"), params![])
        .await
        .unwrap()
        .unwrap()
        .int(0)
}

/// Runs each named `async fn(&mut Conn)` test on SQLite and on PostgreSQL.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (_db, mut conn) = crate::store::testing::sqlite().await;
                    super::$name(&mut conn).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let (_db, mut conn) = crate::store::testing::postgres().await;
                    super::$name(&mut conn).await;
                }
            )*
        }
    };
}
pub(crate) use on_both_engines;

#[tokio::test]
async fn the_postgres_test_server_answers() {
    let (_db, mut conn) = postgres().await;
    assert_eq!(count(&mut conn, "supplier").await, 0);
}
