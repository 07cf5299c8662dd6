//! Test harness: start the mock API, run the real `nuntiq-host` binary, read
//! the real SQLite file back, and compute what the store should hold from the
//! mock's own truth (an oracle written apart from the connector's mapping).

pub mod api_mock;
pub mod dataset;

pub use api_mock::{ApiMock, MockRequest};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const TOKEN: &str = "test-bearer-token-here";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The host binary `make build` produced (override with NUNTIQ_HOST_BIN).
pub fn host_bin() -> PathBuf {
    let path = std::env::var_os("NUNTIQ_HOST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/nuntiq-host"));
    assert!(path.exists(), "{} is missing: run `make build` first", path.display());
    path
}

/// The host binary, with its compile cache and cache key in target/ (shared by
/// the tests, never the user's).
/// The e2e hosts' `NUNTIQ_SECRETS_KEY`: 32 bytes, base64.
pub const TEST_SEAL_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

pub fn host_command() -> Command {
    let mut command = Command::new(host_bin());
    command.env("XDG_CACHE_HOME", workspace_root().join("target/e2e-cache"));
    // A seal key, as every host that stores jobs has: `serve JOBS_FILE` stores
    // the file's jobs, sealing their inline secrets (a test may unset it).
    command.env("NUNTIQ_SECRETS_KEY", TEST_SEAL_KEY);
    command.env("XDG_CONFIG_HOME", workspace_root().join("target/e2e-config"));
    command
}

/// Runs an admin command (`state …`, `runs`, `suppliers …`, `compile`): exit code, stdout, stderr.
pub fn host_output(args: &[&str]) -> (i32, String, String) {
    let out = host_command().args(args).output().expect("nuntiq-host runs");
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A guest component `make build` put in dist/.
pub fn guest(name: &str) -> PathBuf {
    let path = workspace_root().join("dist").join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is missing: run `make build` first", path.display());
    path
}

/// A running `acme-mock serve`, killed on drop.
pub struct Mock {
    child: Child,
    pub url: String,
}

impl Mock {
    pub fn start(bin: &str, suppliers: usize) -> Self {
        let mut child = Command::new(bin)
            .args(["serve", "--suppliers", &suppliers.to_string(), "--token", TOKEN])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("acme-mock starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("acme-mock prints its address");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .expect("listening line")
            .to_owned();
        Self { child, url }
    }

    /// The API base, as it goes into config.api_url.
    pub fn api_url(&self) -> String {
        format!("{}/v2", self.url)
    }

    /// The `--allow-host` entry that opens this mock (plain http on loopback).
    pub fn allow_host(&self) -> String {
        self.url.clone()
    }

    pub fn faults(&self, rules: Value) {
        ureq::post(format!("{}/_mock/faults", self.url))
            .send_json(&rules)
            .expect("faults accepted");
    }

    /// Changes `change` suppliers and inserts `insert`; returns their numbers.
    pub fn mutate(&self, change: usize, insert: usize) -> (Vec<String>, Vec<String>) {
        let v: Value = ureq::post(format!("{}/_mock/mutate", self.url))
            .send_json(json!({"change": change, "insert": insert}))
            .expect("mutate")
            .body_mut()
            .read_json()
            .expect("mutate answer");
        let list = |k: &str| {
            v[k].as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        };
        (list("changed"), list("inserted"))
    }

    /// Renames supplier `number` and stamps it `updated_at` exactly.
    pub fn touch(&self, number: &str, updated_at: &str, name: &str) {
        ureq::post(format!("{}/_mock/touch", self.url))
            .send_json(json!({"number": number, "updated_at": updated_at, "name": name}))
            .expect("touch accepted");
    }

    /// Overwrites fields of supplier `number` as the API shows it.
    pub fn patch(&self, number: &str, fields: Value) {
        ureq::post(format!("{}/_mock/patch", self.url))
            .send_json(json!({"number": number, "fields": fields}))
            .expect("patch accepted");
    }

    /// `/_mock/blob` requests: `now` being answered, `most_at_once`, `total`.
    pub fn blob_stats(&self) -> Value {
        self.get_json("/_mock/blob_stats")
    }

    /// Every supplier request the mock received, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        self.get_json("/_mock/requests").as_array().unwrap().clone()
    }

    /// Every supplier row the mock holds.
    pub fn truth(&self) -> Vec<Value> {
        self.get_json("/_mock/suppliers").as_array().unwrap().clone()
    }

    fn get_json(&self, path: &str) -> Value {
        ureq::get(format!("{}{path}", self.url))
            .call()
            .expect(path)
            .body_mut()
            .read_json()
            .expect(path)
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temp directory with a settings.json and a database path.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db(&self) -> PathBuf {
        self.path("nuntiq.db")
    }

    /// Writes `settings` as `name` and returns its path.
    pub fn write_settings(&self, name: &str, settings: &Value) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, serde_json::to_vec_pretty(settings).unwrap()).unwrap();
        path
    }
}

impl Default for Workdir {
    fn default() -> Self {
        Self::new()
    }
}

/// The seed's settings.json for a mock.
pub fn acme_settings(api_url: &str, connector_name: &str) -> Value {
    json!({
        "customer_number": "10000001",
        "secrets": {"acme_token": TOKEN},
        "config": {"connector_name": connector_name, "api_url": api_url, "page_size": 200},
        "job_params": {"lookback_days": 7}
    })
}

/// What one `nuntiq-host` process did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub envelope: Value,
    pub stderr: String,
}

impl Run {
    pub fn error_kind(&self) -> &str {
        self.envelope["error"]["kind"].as_str().unwrap_or("")
    }

    pub fn error_message(&self) -> &str {
        self.envelope["error"]["message"].as_str().unwrap_or("")
    }

    /// The stderr lines of `--log-format json`, parsed.
    pub fn json_logs(&self) -> Vec<Value> {
        self.stderr
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
            .collect()
    }
}

/// Runs the host binary; asserts stdout is exactly one JSON object.
pub fn nuntiq_host<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let output = host_command().args(args).output().expect("nuntiq-host runs");
    let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stdout must be exactly one line:\n{stdout}\nstderr:\n{stderr}"
    );
    let envelope: Value =
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}"));
    assert!(envelope.is_object(), "the envelope is an object: {envelope}");
    Run {
        code: output.status.code().expect("exited, not killed"),
        envelope,
        stderr,
    }
}

/// Runs the host binary like [`nuntiq_host`] and also returns the process's
/// peak resident memory in bytes (from `wait4`, the kernel's own count).
pub fn nuntiq_host_measured<I, S>(args: I) -> (Run, u64)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let (code, stdout, stderr, peak) = host_output_measured(args);
    let envelope = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let run = Run { code, envelope, stderr };
    (run, peak)
}

/// Runs any command of the host binary: exit code, stdout, stderr and peak
/// resident memory in bytes. `wait4` counts the largest of the process and
/// the children it waited for (a compile child included).
pub fn host_output_measured<I, S>(args: I) -> (i32, String, String, u64)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let err = tempfile::NamedTempFile::new().expect("temp file");
    let child = host_command()
        .args(args)
        .stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap())
        .spawn()
        .expect("nuntiq-host starts");
    let mut status = 0;
    // SAFETY: a plain syscall on our own child; the kernel fills `usage`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status),
        "nuntiq-host did not exit normally (status {status})"
    );
    let stdout = std::fs::read_to_string(out.path()).expect("stdout is UTF-8");
    let stderr = String::from_utf8_lossy(&std::fs::read(err.path()).unwrap()).into_owned();
    (libc::WEXITSTATUS(status), stdout, stderr, usage.ru_maxrss as u64 * 1024)
}

/// `run-plugin acme.wasm settings --db db --allow-host mock [extra...]`.
pub fn run_acme(mock: &Mock, settings: &Path, db: &Path, extra: &[&str]) -> Run {
    nuntiq_host(acme_args(mock, settings, db, extra))
}

/// The same job as a child process, for tests that kill it or run several at once.
pub fn spawn_acme(mock: &Mock, settings: &Path, db: &Path, extra: &[&str]) -> Child {
    host_command()
        .args(acme_args(mock, settings, db, extra))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nuntiq-host starts")
}

/// Waits for a spawned job and reads its envelope.
pub fn finish(child: Child) -> Run {
    let output = child.wait_with_output().expect("nuntiq-host ends");
    let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let envelope = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    Run {
        code: output.status.code().expect("exited, not killed"),
        envelope,
        stderr,
    }
}

/// The arguments of an Acme job against `mock`.
pub fn acme_args(mock: &Mock, settings: &Path, db: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "run-plugin".into(),
        guest("acme").display().to_string(),
        settings.display().to_string(),
        "--db".into(),
        db.display().to_string(),
        "--allow-host".into(),
        mock.allow_host(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// (location_code, location_name, [(street, city, country_code)])
pub type StoredLocation = (String, String, Vec<(String, String, String)>);

/// A supplier as the store holds it (or should): name, active flag and
/// locations with their addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub name: String,
    pub is_active: bool,
    pub locations: Vec<StoredLocation>,
}

/// Asserts two supplier maps are equal, naming the first differences instead
/// of printing thousands of rows.
#[track_caller]
pub fn assert_same_suppliers(stored: &BTreeMap<String, Stored>, expected: &BTreeMap<String, Stored>) {
    let missing: Vec<&String> = expected.keys().filter(|k| !stored.contains_key(*k)).take(5).collect();
    let extra: Vec<&String> = stored.keys().filter(|k| !expected.contains_key(*k)).take(5).collect();
    let differ: Vec<String> = expected
        .iter()
        .filter_map(|(k, e)| {
            stored
                .get(k)
                .filter(|s| *s != e)
                .map(|s| format!("{k}: stored {s:?}, expected {e:?}"))
        })
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "store != truth ({} stored, {} expected)\nmissing: {missing:?}\nextra: {extra:?}\ndiffer:\n{}",
        stored.len(),
        expected.len(),
        differ.join("\n")
    );
}

/// The seed's mapping, restated independently as the oracle.
pub fn expected_from(truth: &[Value], updated_after: DateTime<Utc>) -> BTreeMap<String, Stored> {
    truth
        .iter()
        .filter(|row| parse_time(row["updated_at"].as_str().unwrap()) > updated_after)
        .map(|row| {
            let text = |v: &Value, default: &str| v.as_str().unwrap_or(default).to_owned();
            let address = &row["address"];
            let locations = match address.as_object() {
                Some(a) if !a.is_empty() => vec![(
                    "MAIN".to_owned(),
                    "Headquarters".to_owned(),
                    vec![(
                        text(&address["street"], ""),
                        text(&address["city"], ""),
                        text(&address["country"], "XX"),
                    )],
                )],
                _ => vec![],
            };
            (
                row["number"].as_str().unwrap().to_owned(),
                Stored {
                    name: text(&row["name"], ""),
                    is_active: row["active"].as_bool().unwrap_or(true),
                    locations,
                },
            )
        })
        .collect()
}

pub fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
        .with_timezone(&Utc)
}

/// Where the Acme connector starts reading after committing `cursor`: a
/// second before it, so changes made in the cursor's own second are read.
pub fn overlap(cursor: &str) -> String {
    (parse_time(cursor) - chrono::Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// How many rows of `truth` a run reading from `since` (strictly after) fetches.
pub fn fetched_after(truth: &[Value], since: &str) -> usize {
    let since = parse_time(since);
    truth
        .iter()
        .filter(|r| parse_time(r["updated_at"].as_str().unwrap()) > since)
        .count()
}

/// The newest `updated_at` among rows updated after `after`.
pub fn newest_after(truth: &[Value], after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    truth
        .iter()
        .map(|r| parse_time(r["updated_at"].as_str().unwrap()))
        .filter(|t| *t > after)
        .max()
}

/// Read access to the host's store: a SQLite file, or (for a `postgres://`
/// URL) a PostgreSQL schema.
pub enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(std::cell::RefCell<postgres::Client>),
}

/// A value a test query returns.
pub trait Scalar: Sized {
    fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self>;
    fn from_pg(row: &postgres::Row) -> Self;
}

impl Scalar for i64 {
    fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        row.get(0)
    }
    fn from_pg(row: &postgres::Row) -> Self {
        row.get(0)
    }
}

impl Scalar for String {
    fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        row.get(0)
    }
    fn from_pg(row: &postgres::Row) -> Self {
        row.get(0)
    }
}

impl Db {
    pub fn open(path: &Path) -> Self {
        let text = path.to_string_lossy();
        if text.starts_with("postgres://") {
            return Db::Postgres(std::cell::RefCell::new(pg_connect(&text)));
        }
        Db::Sqlite(
            rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("db opens"),
        )
    }

    /// Like [`Db::open`], writable: for tests that stage a state no run would leave.
    pub fn open_writable(path: &Path) -> Self {
        if path.to_string_lossy().starts_with("postgres://") {
            return Self::open(path);
        }
        Db::Sqlite(Self::open_rw(path))
    }

    /// A writable connection, for tests that stage a state no run would leave.
    pub fn open_rw(path: &Path) -> rusqlite::Connection {
        rusqlite::Connection::open(path).expect("db opens")
    }

    /// Runs a statement (PostgreSQL or SQLite), for tests that stage a state no run would leave.
    pub fn execute(&self, sql: &str) -> u64 {
        match self {
            Db::Sqlite(c) => c.execute(sql, []).unwrap_or_else(|e| panic!("{sql}: {e}")) as u64,
            Db::Postgres(c) => c
                .borrow_mut()
                .execute(sql, &[])
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        }
    }

    /// The one value a query returns.
    pub fn scalar<T: Scalar>(&self, sql: &str) -> T {
        match self {
            Db::Sqlite(c) => c
                .query_row(sql, [], |r| T::from_sqlite(r))
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            Db::Postgres(c) => T::from_pg(
                &c.borrow_mut()
                    .query_one(sql, &[])
                    .unwrap_or_else(|e| panic!("{sql}: {e}")),
            ),
        }
    }

    pub fn count(&self, table: &str) -> i64 {
        self.scalar(&format!("SELECT count(*) FROM {table}"))
    }

    /// Like [`Db::rows`], but `None` when the query fails (a table not made yet).
    pub fn try_rows(&self, sql: &str) -> Option<Vec<Vec<Option<String>>>> {
        let ok = match self {
            Db::Sqlite(c) => c.prepare(sql).is_ok(),
            Db::Postgres(c) => c.borrow_mut().prepare(sql).is_ok(),
        };
        ok.then(|| self.rows(sql))
    }

    /// Every row of a query, each column as text (NULL as None).
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match self {
            Db::Sqlite(c) => {
                let mut stmt = c.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let n = stmt.column_count();
                stmt.query_map([], |r| {
                    (0..n)
                        .map(|i| {
                            Ok(match r.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => None,
                                rusqlite::types::ValueRef::Integer(v) => Some(v.to_string()),
                                rusqlite::types::ValueRef::Real(v) => Some(v.to_string()),
                                rusqlite::types::ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                                rusqlite::types::ValueRef::Blob(_) => Some("<blob>".into()),
                            })
                        })
                        .collect()
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
            }
            Db::Postgres(c) => c
                .borrow_mut()
                .query(sql, &[])
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .iter()
                .map(pg_row_text)
                .collect(),
        }
    }

    /// Every supplier of a customer, with locations and addresses.
    pub fn suppliers(&self, customer: &str) -> BTreeMap<String, Stored> {
        let q = |v: &str| format!("'{}'", v.replace('\'', "''"));
        let mut out = BTreeMap::new();
        let suppliers = self.rows(&format!(
            "SELECT supplier_number, organization_code, supplier_name, is_active FROM supplier
             WHERE customer_number = {}",
            q(customer)
        ));
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        for s in suppliers {
            let (number, org, name) = (text(&s[0]), text(&s[1]), text(&s[2]));
            let is_active = s[3].as_deref() == Some("1");
            let key = format!(
                "customer_number = {} AND supplier_number = {} AND supplier_organization_code = {}",
                q(customer),
                q(&number),
                q(&org)
            );
            let locations = self
                .rows(&format!(
                    "SELECT location_code, location_name FROM supplier_location WHERE {key} ORDER BY location_code"
                ))
                .into_iter()
                .map(|l| {
                    let code = text(&l[0]);
                    let addresses = self
                        .rows(&format!(
                            "SELECT street, city, country_code FROM supplier_address
                             WHERE {key} AND location_code = {} ORDER BY position",
                            q(&code)
                        ))
                        .into_iter()
                        .map(|a| (text(&a[0]), text(&a[1]), text(&a[2])))
                        .collect();
                    (code, text(&l[1]), addresses)
                })
                .collect();
            out.insert(
                number,
                Stored {
                    name,
                    is_active,
                    locations,
                },
            );
        }
        out
    }

    /// The delta-state row as a JSON object (column → value), if any.
    pub fn state(&self, connector: &str, stream: &str) -> Option<Value> {
        let sql = format!(
            "SELECT * FROM delta_stream_state WHERE connector_name = '{connector}' AND stream_name = '{stream}'"
        );
        match self {
            Db::Sqlite(c) => {
                let mut stmt = c.prepare(&sql).unwrap();
                let names: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
                stmt.query_row([], |r| {
                    let mut obj = serde_json::Map::new();
                    for (i, name) in names.iter().enumerate() {
                        let v = match r.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => Value::Null,
                            rusqlite::types::ValueRef::Integer(n) => json!(n),
                            rusqlite::types::ValueRef::Real(f) => json!(f),
                            rusqlite::types::ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                            rusqlite::types::ValueRef::Blob(_) => Value::Null,
                        };
                        obj.insert(name.clone(), v);
                    }
                    Ok(Value::Object(obj))
                })
                .ok()
            }
            Db::Postgres(c) => {
                let rows = c.borrow_mut().query(&sql, &[]).unwrap();
                let row = rows.first()?;
                let mut obj = serde_json::Map::new();
                for (i, column) in row.columns().iter().enumerate() {
                    let v = match *column.type_() {
                        postgres::types::Type::INT8 => row.get::<_, Option<i64>>(i).map_or(Value::Null, |n| json!(n)),
                        _ => row.get::<_, Option<String>>(i).map_or(Value::Null, Value::String),
                    };
                    obj.insert(column.name().to_owned(), v);
                }
                Some(Value::Object(obj))
            }
        }
    }
}

/// The PostgreSQL server the tests use (`NUNTIQ_TEST_PG` overrides): the one
/// every session and CI start on 127.0.0.1:5432.
pub fn pg_server() -> String {
    std::env::var("NUNTIQ_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A connection; panics naming the server when it does not answer (tests
/// that need PostgreSQL fail, never skip, when it is down).
pub fn pg_connect(url: &str) -> postgres::Client {
    // The driver reads `options` from the URL; the schema tests use is set there.
    postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is needed for this test and did not answer: {e}"))
}

fn pg_row_text(row: &postgres::Row) -> Vec<Option<String>> {
    (0..row.len())
        .map(|i| match *row.columns()[i].type_() {
            postgres::types::Type::INT8 => row.get::<_, Option<i64>>(i).map(|n| n.to_string()),
            postgres::types::Type::INT4 => row.get::<_, Option<i32>>(i).map(|n| n.to_string()),
            postgres::types::Type::BOOL => row.get::<_, Option<bool>>(i).map(|b| b.to_string()),
            postgres::types::Type::BYTEA => row.get::<_, Option<Vec<u8>>>(i).map(|_| "<blob>".into()),
            _ => row.get::<_, Option<String>>(i),
        })
        .collect()
}

/// A schema of its own in the test server, dropped with this value: its
/// `url()` is the `--db` of the test's runs.
pub struct PgSchema {
    schema: String,
}

impl PgSchema {
    pub fn new() -> Self {
        let schema = format!("nuntiq_e2e_{}", uuid_like());
        pg_connect(&pg_server())
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .unwrap_or_else(|e| panic!("cannot create a test schema: {e}"));
        Self { schema }
    }

    /// The schema's name (for `pg_dump --schema`).
    pub fn name(&self) -> &str {
        &self.schema
    }

    /// The database URL with this schema first on the search path.
    pub fn url(&self) -> String {
        let base = pg_server();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-c%20search_path%3D{}", self.schema)
    }
}

impl Default for PgSchema {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&pg_server(), postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
        }
    }
}

/// A name no other test picks at the same time.
fn uuid_like() -> String {
    format!("{:016x}{:08x}", fastrand::u64(..), std::process::id())
}
