//! A commit the database did not answer: tried again with backoff within the
//! run's grace, committed once the database answers, or given up after the
//! grace as the store's fault (`store_unavailable`), the cursor unmoved.
//!
//! The commit is caught in the act: the test holds a lock on the supplier
//! table, so the run's final transaction waits inside PostgreSQL; the TCP
//! proxy between the host and the server is then cut.

use crate::MOCK;
use crate::scheduler::PgProxy;
use crate::serve::wait_until;
use nuntiq_e2e::*;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// The schema a test schema's URL puts first on the search path.
fn schema_name(url: &str) -> String {
    url.rsplit("search_path%3D").next().unwrap().to_owned()
}

/// Lock requests on `schema`'s supplier table that wait: a commit held up.
fn waiting_on_suppliers(schema: &str) -> i64 {
    let mut client = pg_connect(&pg_server());
    client
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE NOT l.granted AND c.relname = 'supplier' AND n.nspname = $1",
            &[&schema],
        )
        .unwrap()
        .get(0)
}

/// A store whose tables exist (a run for another customer made them), behind
/// a proxy; and the Acme settings of customer `customer`.
struct Setup {
    mock: Mock,
    schema: PgSchema,
    proxy: PgProxy,
    work: Workdir,
}

impl Setup {
    fn new() -> Self {
        let mock = Mock::start(MOCK, 40);
        let schema = PgSchema::new();
        let proxy = PgProxy::start(true);
        let work = Workdir::new();
        let setup = Self {
            mock,
            schema,
            proxy,
            work,
        };
        let first = run_acme(&setup.mock, &setup.settings("20000002"), Path::new(&setup.url()), &[]);
        assert_eq!(first.code, 0, "{}\n{}", first.envelope, first.stderr);
        setup
    }

    fn url(&self) -> String {
        self.proxy.url(&self.schema.url())
    }

    fn settings(&self, customer: &str) -> std::path::PathBuf {
        let mut settings = acme_settings(&self.mock.api_url(), "acme_eu");
        settings["customer_number"] = json!(customer);
        self.work.write_settings(&format!("{customer}.json"), &settings)
    }

    /// Starts a run of `customer` whose commit waits for the test's lock,
    /// and cuts the database off while it waits. Returns the run and the
    /// lock's connection (roll it back to let go).
    fn cut_during_commit(&self, customer: &str, extra: &[&str]) -> (std::process::Child, postgres::Client) {
        let mut hold = pg_connect(&self.schema.url());
        hold.batch_execute("BEGIN; LOCK TABLE supplier IN SHARE MODE").unwrap();
        let child = spawn_acme(&self.mock, &self.settings(customer), Path::new(&self.url()), extra);
        let schema = schema_name(&self.schema.url());
        wait_until("the run's commit waits in PostgreSQL", Duration::from_secs(60), || {
            waiting_on_suppliers(&schema) > 0
        });
        self.proxy.cut();
        (child, hold)
    }
}

#[test]
fn a_commit_the_database_did_not_answer_is_retried_and_commits_once_it_answers() {
    let setup = Setup::new();
    let (child, mut hold) = setup.cut_during_commit("10000001", &[]);
    // Retried meanwhile (the default grace is 10 s).
    std::thread::sleep(Duration::from_secs(2));
    hold.batch_execute("ROLLBACK").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    setup.proxy.restore();
    let run = finish(child);
    assert_eq!(run.code, 0, "{}\n{}", run.envelope, run.stderr);
    assert_eq!(run.envelope["success"], true);
    assert_eq!(
        run.stderr
            .matches("The commit of stream acme_eu/suppliers (customer 10000001) did not reach the database")
            .count(),
        1,
        "said once: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("The database answered again: stream acme_eu/suppliers (customer 10000001) committed after"),
        "{}",
        run.stderr
    );
    let db = Db::open(Path::new(&setup.schema.url()));
    assert_eq!(db.suppliers("10000001").len(), 40);
    assert_eq!(
        db.rows("SELECT status FROM delta_run WHERE customer_number = '10000001'"),
        [[Some("succeeded".to_owned())]]
    );
    assert_eq!(
        db.scalar::<String>(
            "SELECT status FROM delta_stream_state WHERE customer_number = '10000001' AND stream_name = 'suppliers'"
        ),
        "succeeded"
    );
}

#[test]
fn a_commit_the_database_never_answers_gives_up_after_the_grace_as_the_stores_fault() {
    let setup = Setup::new();
    let (child, mut hold) = setup.cut_during_commit("30000003", &["--grace", "2s"]);
    // The database stays away until the run has given up.
    let run = finish(child);
    hold.batch_execute("ROLLBACK").unwrap();
    setup.proxy.restore();
    assert_eq!(run.code, 1, "{}\n{}", run.envelope, run.stderr);
    assert_eq!(run.error_kind(), "store_unavailable", "{}", run.envelope);
    assert!(run.stderr.contains("did not reach the database"), "{}", run.stderr);
    assert!(
        run.stderr.contains("The commit of stream acme_eu/suppliers (customer 30000003) gave up after"),
        "{}",
        run.stderr
    );
    // Nothing of the run was committed: no supplier, no cursor.
    let db = Db::open(Path::new(&setup.schema.url()));
    wait_until("the cut-off transaction is gone", Duration::from_secs(10), || {
        waiting_on_suppliers(&schema_name(&setup.schema.url())) == 0
    });
    assert_eq!(db.suppliers("30000003").len(), 0);
    assert_eq!(
        db.scalar::<i64>(
            "SELECT count(*) FROM delta_stream_state WHERE customer_number = '30000003' AND committed_cursor_value IS NOT NULL"
        ),
        0
    );
}
