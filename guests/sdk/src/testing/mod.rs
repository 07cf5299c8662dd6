//! An in-process double of every host interface, for `cargo test` on your own
//! machine (feature `testing`, native targets only): the same calls a
//! connector makes in the host — `context`, `logger`, `http`, `delta-state`,
//! `supplier-load` — answered by a [`TestHost`] that serves HTTP from
//! fixtures and canned responses, keeps suppliers, rejected rows and cursors
//! in memory across runs, and checks what the host checks (cursor rules,
//! `set-new-cursor` before `complete`, a run left open, supplier fields).
//!
//! ```toml
//! [dev-dependencies]
//! nuntiq-connector = { path = "sdk", features = ["testing"] }
//! ```
//!
//! ```ignore
//! use nuntiq_connector::testing::TestHost;
//!
//! #[test]
//! fn a_second_run_fetches_only_what_changed() {
//!     let host = TestHost::from_settings("settings.example.json").fixtures("fixtures");
//!     let first = host.run(<Connector as nuntiq_connector::Guest>::run).unwrap();
//!     assert_eq!(host.suppliers().len(), 3);
//!     assert_eq!(host.cursor("suppliers").as_deref(), Some("2024-05-02T10:15:00Z"));
//!     let second = host.run(<Connector as nuntiq_connector::Guest>::run).unwrap();
//! }
//! ```
//!
//! What it does not do: the network (only fixtures and [`TestHost::respond`]
//! answer), waits between retries (they are counted, not slept), the
//! sandbox's limits on memory and time, and `wasi:http`.

mod answers;
pub mod cursor;
pub(crate) mod imports;

use answers::Answer;

use crate::delta_state::{CursorType, RunStatus, StreamState};
use crate::supplier_load::Supplier;
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::rc::Rc;

/// A delta-state call the connector made, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum DeltaCall {
    /// `DeltaRun::begin` of a stream.
    Begin {
        /// The stream's name.
        stream: String,
        /// The cursor type asked for.
        cursor_type: CursorType,
    },
    /// `set_new_cursor(value)`, valid or not.
    SetNewCursor(String),
    /// `set_records_processed(count)`.
    SetRecordsProcessed(u64),
    /// `set_metadata(json)`, valid or not.
    SetMetadata(String),
    /// `reject(row, reason)`.
    Reject {
        /// The raw row.
        row: String,
        /// Why it was set aside.
        reason: String,
    },
    /// A successful `complete`, with the cursor it committed.
    Complete(String),
    /// `fail(summary)` of an open run.
    Fail(String),
}

/// A row the connector set aside with `reject`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The stream whose run set it aside.
    pub stream: String,
    /// The raw row, as the connector passed it.
    pub row: String,
    /// Why.
    pub reason: String,
}

/// One log line.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// debug, info, warn or error.
    pub level: crate::log::Level,
    /// The message.
    pub message: String,
    /// The step it names, if any.
    pub step: Option<String>,
}

/// A stream's committed state.
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    cursor_type: CursorType,
    committed: Option<String>,
    status: RunStatus,
    records_processed: Option<u64>,
    error_summary: Option<String>,
    metadata: Option<String>,
}

/// A delta run the connector began.
#[derive(Debug)]
pub(crate) struct Run {
    stream: String,
    cursor_type: CursorType,
    lower_bound: Option<String>,
    new_cursor: Option<String>,
    records_processed: Option<u64>,
    metadata: Option<String>,
    rejected: u32,
    open: bool,
}

/// Everything the test host keeps: settings, answers, and the stores.
#[derive(Debug, Default)]
pub(crate) struct State {
    customer_number: String,
    config: Map<String, Value>,
    params: Map<String, Value>,
    secrets: BTreeMap<String, String>,
    answers: answers::Answers,
    requests: Vec<String>,
    logs: Vec<LogLine>,
    streams: BTreeMap<String, Stream>,
    runs: Vec<Run>,
    /// Streams begun in the current job (the host allows 100).
    begun: BTreeSet<String>,
    queue: Vec<Supplier>,
    /// The run's `set-options`: full load, address- and bank-insert-only.
    load_options: (bool, bool, bool),
    /// Whether the run wrote suppliers yet (a full load deletes only before).
    load_started: bool,
    /// Every supplier handed to `queue`, in order.
    queued: Vec<Supplier>,
    store: BTreeMap<(String, String), Supplier>,
    rejected: Vec<Rejected>,
    calls: Vec<DeltaCall>,
    pending: HashMap<u32, Result<crate::raw_http::Response, crate::raw_http::HttpError>>,
    next_pending: u32,
}

thread_local! {
    /// The host the connector on this thread talks to, while [`TestHost::run`] runs it.
    static CURRENT: RefCell<Option<Rc<RefCell<State>>>> = const { RefCell::new(None) };
}

/// Runs `f` with the current test host's state.
fn with<T>(f: impl FnOnce(&mut State) -> T) -> T {
    let state = CURRENT.with(|c| c.borrow().clone()).unwrap_or_else(|| {
        panic!(
            "a host interface was called outside TestHost::run: call the connector as \
             host.run(<Connector as Guest>::run)"
        )
    });
    let mut state = state.borrow_mut();
    f(&mut state)
}

/// The host of a connector under test. Cheap to clone; clones share the host.
#[derive(Clone, Debug)]
pub struct TestHost {
    state: Rc<RefCell<State>>,
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

impl TestHost {
    /// A host with customer `10000001`, no settings, no answers and empty stores.
    pub fn new() -> Self {
        let state = State {
            customer_number: "10000001".into(),
            ..State::default()
        };
        Self {
            state: Rc::new(RefCell::new(state)),
        }
    }

    /// A host with the settings of a settings.json (`customer_number`,
    /// `secrets`, `config`, `job_params`), as `run-plugin` reads it.
    pub fn from_settings(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let settings: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON ({e})", path.display()));
        let host = Self::new();
        {
            let mut s = host.state.borrow_mut();
            if let Some(c) = settings["customer_number"].as_str() {
                s.customer_number = c.to_owned();
            }
            let object = |key: &str| settings[key].as_object().cloned().unwrap_or_default();
            s.config = object("config");
            s.params = object("job_params");
            for (k, v) in object("secrets") {
                s.secrets.insert(k, v.as_str().unwrap_or_default().to_owned());
            }
        }
        host
    }

    /// Sets `config[key]` (`null` removes it).
    pub fn config(self, key: &str, value: impl Into<Value>) -> Self {
        self.set(|s| set_or_remove(&mut s.config, key, value.into()))
    }

    /// Sets `job_params[key]`, as `--param KEY=VALUE` does (`null` removes it).
    pub fn param(self, key: &str, value: impl Into<Value>) -> Self {
        self.set(|s| set_or_remove(&mut s.params, key, value.into()))
    }

    /// Sets `secrets[key]`.
    pub fn secret(self, key: &str, value: &str) -> Self {
        self.set(|s| {
            s.secrets.insert(key.to_owned(), value.to_owned());
        })
    }

    /// Answers `file://` URLs from files in `dir`, as `run-plugin --fixtures DIR` does.
    pub fn fixtures(self, dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref().to_owned();
        self.set(|s| s.answers.fixtures = Some(dir))
    }

    /// Answers GET `url` (any URL, its query params required, others allowed)
    /// with `status` and `body`. Several responses to one URL are given in
    /// order, then the last one again: `503` then `200` tests a retry.
    pub fn respond(self, url: &str, status: u16, body: impl Into<Vec<u8>>) -> Self {
        let answer = Answer {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
        };
        self.set(|s| s.answers.respond(url, answer))
    }

    /// Sets a stream's committed cursor, as `nuntiq-host state reset` does.
    pub fn set_cursor(self, stream: &str, cursor_type: CursorType, value: &str) -> Self {
        self.set(|s| {
            s.streams.insert(
                stream.to_owned(),
                Stream {
                    cursor_type,
                    committed: Some(value.to_owned()),
                    status: RunStatus::Idle,
                    records_processed: None,
                    error_summary: None,
                    metadata: None,
                },
            );
        })
    }

    fn set(self, f: impl FnOnce(&mut State)) -> Self {
        f(&mut self.state.borrow_mut());
        self
    }

    /// Runs one job, as `run-plugin` would: calls `run` (pass
    /// `<YourConnector as Guest>::run`), fails any delta run it left open,
    /// and returns its result object, or the envelope's error as
    /// `"kind: message"` (`connector_error`, `cursor_not_committed`,
    /// `invalid_result`).
    pub fn run(&self, run: impl FnOnce() -> Result<String, String>) -> Result<Value, String> {
        let previous = CURRENT.with(|c| c.replace(Some(self.state.clone())));
        let outcome = run();
        CURRENT.with(|c| *c.borrow_mut() = previous);
        let mut s = self.state.borrow_mut();
        let left_open = imports::delta_state::fail_open_runs(&mut s);
        s.begun.clear();
        s.queue.clear();
        s.load_options = (false, false, false);
        s.load_started = false;
        s.pending.clear();
        let text = match outcome {
            Err(message) => return Err(format!("connector_error: {message}")),
            Ok(_) if !left_open.is_empty() => {
                return Err(format!(
                    "cursor_not_committed: the connector returned success with the delta run of {} still open; \
                     call complete() (or use delta_run, which does)",
                    left_open.join(", ")
                ));
            }
            Ok(text) => text,
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(value @ Value::Object(_)) if text.len() <= 64 * 1024 => Ok(value),
            _ => Err(format!(
                "invalid_result: the result must be a JSON object of at most 64 KiB, not {:?}",
                text.chars().take(100).collect::<String>()
            )),
        }
    }

    /// The suppliers in the store, by supplier number (and organization code).
    pub fn suppliers(&self) -> Vec<Supplier> {
        self.state.borrow().store.values().cloned().collect()
    }

    /// Every supplier the connector queued, in order, across runs (saved or not).
    pub fn queued(&self) -> Vec<Supplier> {
        self.state.borrow().queued.clone()
    }

    /// One stored supplier (without an organization code).
    pub fn supplier(&self, supplier_number: &str) -> Option<Supplier> {
        let key = (supplier_number.to_owned(), String::new());
        self.state.borrow().store.get(&key).cloned()
    }

    /// The committed cursor of one of `config.connector_name`'s streams.
    pub fn cursor(&self, stream: &str) -> Option<String> {
        self.state
            .borrow()
            .streams
            .get(stream)
            .and_then(|s| s.committed.clone())
    }

    /// A stream's state, as `delta-state.get-state` gives it.
    pub fn state(&self, stream: &str) -> StreamState {
        imports::delta_state::stream_state(&self.state.borrow(), stream)
    }

    /// Rows set aside with `reject`, in order.
    pub fn rejected(&self) -> Vec<Rejected> {
        self.state.borrow().rejected.clone()
    }

    /// Every delta-state call, in order, across runs.
    pub fn calls(&self) -> Vec<DeltaCall> {
        self.state.borrow().calls.clone()
    }

    /// Every URL requested (each attempt), with its query.
    pub fn requests(&self) -> Vec<String> {
        self.state.borrow().requests.clone()
    }

    /// Every line the connector logged.
    pub fn logs(&self) -> Vec<LogLine> {
        self.state.borrow().logs.clone()
    }
}

fn set_or_remove(map: &mut Map<String, Value>, key: &str, value: Value) {
    if value.is_null() {
        map.remove(key);
    } else {
        map.insert(key.to_owned(), value);
    }
}

#[cfg(test)]
mod load_option_tests {
    use super::TestHost;
    use crate::suppliers::{LoadOptions, SupplierLoad, address, bank_account, location, set_options, supplier};

    fn one(number: &str, tag: &str) -> crate::Supplier {
        let mut account = bank_account();
        account.bank_account_number = Some(format!("ACCT-{tag}"));
        let mut place = address();
        place.city = Some(format!("City {tag}"));
        let mut hq = location("HQ");
        hq.addresses = vec![place];
        hq.bank_accounts = vec![account];
        let mut s = supplier(number, "A supplier");
        s.locations = vec![hq];
        s
    }

    fn load(options: LoadOptions, suppliers: &[(&str, &str)]) -> Result<String, String> {
        set_options(options).map_err(|e| e.message())?;
        let mut batch = SupplierLoad::new();
        for (number, tag) in suppliers {
            batch.add(one(number, tag));
        }
        batch.save_all().map_err(|e| e.message())?;
        Ok("{}".into())
    }

    const PLAIN: LoadOptions = LoadOptions {
        full_load: false,
        address_insert_only: false,
        bank_insert_only: false,
    };

    #[test]
    fn insert_only_adds_and_a_full_load_replaces_as_the_host_does() {
        let host = TestHost::new();
        host.run(|| load(PLAIN, &[("S1", "1"), ("S2", "1")])).unwrap();
        let insert_only = LoadOptions {
            address_insert_only: true,
            bank_insert_only: true,
            ..PLAIN
        };
        host.run(|| load(insert_only, &[("S1", "2")])).unwrap();
        let hq = &host.supplier("S1").unwrap().locations[0];
        assert_eq!(hq.addresses.len(), 2);
        assert_eq!(hq.bank_accounts.len(), 2);
        host.run(|| load(PLAIN, &[("S1", "3")])).unwrap();
        assert_eq!(host.supplier("S1").unwrap().locations[0].bank_accounts.len(), 1);

        let full = LoadOptions { full_load: true, ..PLAIN };
        host.run(|| load(full, &[("S3", "1")])).unwrap();
        let numbers: Vec<String> = host.suppliers().into_iter().map(|s| s.supplier_number).collect();
        assert_eq!(numbers, ["S3"]);

        let late = host.run(|| {
            let mut batch = SupplierLoad::new();
            batch.add(one("S4", "1"));
            batch.queue().map_err(|e| e.message())?;
            set_options(full).map_err(|e| e.message())?;
            Ok("{}".into())
        });
        assert!(late.unwrap_err().contains("full-load can only be chosen before"));
    }
}
