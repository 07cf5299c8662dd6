//! The Customer API mock pinned by plain HTTP: auth, the delta-state rules per cursor type,
//! the supplier upsert and its options, validation that applies nothing, the 1000-row cap,
//! and every fault action. The host's Nuntiq backend is tested against exactly this.

use crate::API_MOCK;
use nuntiq_e2e::api_mock::{API_TOKEN, CUSTOMER};
use nuntiq_e2e::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// One HTTP answer: status, `Retry-After`, and the body (JSON, or the text as a string).
#[derive(Debug)]
struct Reply {
    status: u16,
    retry_after: Option<String>,
    json: Value,
}

impl Reply {
    fn message(&self) -> &str {
        self.json["message"].as_str().unwrap_or("")
    }
}

/// A caller of the mock's API with a given key and customer (either may be left out).
struct Caller {
    base: String,
    token: Option<String>,
    customer: Option<String>,
    agent: ureq::Agent,
}

fn caller(mock: &ApiMock, token: Option<&str>, customer: Option<&str>) -> Caller {
    // No pooled connections: a fault that hangs up must not poison the next request.
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .build()
        .into();
    Caller {
        base: mock.api_url(),
        token: token.map(str::to_owned),
        customer: customer.map(str::to_owned),
        agent,
    }
}

/// The default key for the default customer.
fn client(mock: &ApiMock) -> Caller {
    caller(mock, Some(API_TOKEN), Some(CUSTOMER))
}

impl Caller {
    fn try_send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Reply, ureq::Error> {
        let url = format!("{}{path}", self.base);
        let mut headers = Vec::new();
        if let Some(t) = &self.token {
            headers.push(("Authorization", format!("Bearer {t}")));
        }
        if let Some(c) = &self.customer {
            headers.push(("X-Customer-Number", c.clone()));
        }
        let mut response = match method {
            "GET" => {
                let mut r = self.agent.get(&url);
                for (k, v) in &headers {
                    r = r.header(*k, v);
                }
                r.call()?
            }
            _ => {
                let mut r = self.agent.post(&url);
                for (k, v) in &headers {
                    r = r.header(*k, v);
                }
                r.send_json(body.unwrap_or(&Value::Null))?
            }
        };
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.body_mut().read_to_string()?;
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Reply {
            status: response.status().as_u16(),
            retry_after,
            json,
        })
    }

    fn get(&self, path: &str) -> Reply {
        self.try_send("GET", path, None)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    fn post(&self, path: &str, body: Value) -> Reply {
        self.try_send("POST", path, Some(&body))
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    fn suppliers(&self, body: Value) -> Reply {
        self.post("/v1/supplier", body)
    }

    fn op(&self, op: &str, body: Value) -> Reply {
        self.post(&format!("/v1/delta/streams/acme_eu/suppliers/{op}"), body)
    }

    fn state(&self) -> Reply {
        self.get("/v1/delta/streams/acme_eu/suppliers")
    }
}

fn supplier(number: &str, name: &str) -> Value {
    json!({"supplier_number": number, "supplier_name": name})
}

fn with_location(mut s: Value, location: Value) -> Value {
    s["supplier_location"] = json!([location]);
    s
}

fn items(items: Vec<Value>) -> Value {
    json!({ "items": items })
}

/// (supplier_number, supplier_name) of every stored supplier, in the mock's order.
fn names(mock: &ApiMock, customer: &str) -> Vec<(String, String)> {
    mock.suppliers(customer)
        .iter()
        .map(|s| {
            (
                s["supplier_number"].as_str().unwrap().to_owned(),
                s["supplier_name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn counts(reply: &Reply) -> (u64, u64, u64) {
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json["message"], "Import result");
    let n = |k: &str| reply.json[k].as_u64().unwrap();
    (n("inserted"), n("updated"), n("unchanged"))
}

#[test]
fn an_unknown_or_missing_key_is_401_and_a_customer_the_key_lacks_is_403() {
    let mock = ApiMock::start_with(API_MOCK, &[("key-alpha", &["100"]), ("key-beta", &["200", "300"])]);
    let denied = [
        (caller(&mock, None, Some("100")), 401),
        (caller(&mock, Some("key-gamma"), Some("100")), 401),
        (caller(&mock, Some("key-alpha"), None), 403),
        (caller(&mock, Some("key-alpha"), Some("200")), 403),
    ];
    for (c, status) in &denied {
        let r = c.state();
        assert_eq!(r.status, *status, "{r:?}");
        let expected = if *status == 401 {
            "invalid or missing API key"
        } else {
            "insufficient permissions for customer"
        };
        assert!(r.message().starts_with(expected), "{r:?}");
        // A refused write applies nothing.
        assert_eq!(c.suppliers(items(vec![supplier("1", "a")])).status, *status);
        assert_eq!(c.op("begin", json!({"cursor_type": "numeric_id"})).status, *status);
    }
    assert!(denied[3].0.state().message().contains("200"), "names the customer");
    let beta = caller(&mock, Some("key-beta"), Some("300"));
    assert_eq!(beta.state().status, 200);
    assert_eq!(beta.op("begin", json!({"cursor_type": "numeric_id"})).status, 200);
    assert_eq!(mock.streams().len(), 1, "only the authorized begin made a row");
    assert_eq!(mock.streams()[0]["customer"], "300");
    assert_eq!(
        mock.streams()[0]["updated_by"],
        "api-key-2",
        "the key's name, not the key"
    );
    for customer in ["100", "200", "300"] {
        assert!(mock.suppliers(customer).is_empty());
    }

    let requests = mock.requests();
    let authorized: Vec<bool> = requests.iter().map(|r| r.authorized).collect();
    assert_eq!(authorized, [[false; 13].as_slice(), &[true, true]].concat());
    assert_eq!(requests[0].customer.as_deref(), Some("100"));
    assert_eq!(requests[6].customer, None);
    assert_eq!(requests[1].op.as_deref(), Some("supplier"));
    assert_eq!(requests[1].items, Some(1));
    // Nothing the mock shows holds a key.
    let everything = format!(
        "{:?}{:?}{}{}",
        requests,
        mock.streams(),
        json!(mock.audit()),
        json!(mock.pending_faults())
    );
    assert!(!everything.contains("key-alpha") && !everything.contains("key-beta"));
}

#[test]
fn the_state_of_a_stream_never_begun_is_a_synthetic_idle_row_with_every_field() {
    let mock = ApiMock::start(API_MOCK);
    let r = client(&mock).state();
    assert_eq!(r.status, 200);
    let fields = [
        "cursor_type",
        "committed_cursor_value",
        "committed_at_utc",
        "started_at_utc",
        "completed_at_utc",
        "records_processed",
        "error_summary",
        "metadata",
        "updated_at_utc",
        "updated_by",
    ];
    let obj = r.json.as_object().unwrap();
    for f in fields {
        assert_eq!(obj.get(f), Some(&Value::Null), "{f} is present and null: {}", r.json);
    }
    assert_eq!(r.json["status"], "idle");
    assert_eq!(r.json["connector_name"], "acme_eu");
    assert_eq!(r.json["stream_name"], "suppliers");
    assert_eq!(obj.len(), fields.len() + 3);
    assert!(mock.streams().is_empty(), "reading makes no row");
}

#[test]
fn begin_sets_running_clears_the_last_run_and_is_not_refused_while_running() {
    let mock = ApiMock::start(API_MOCK);
    let c = client(&mock);
    for bad in [json!({"cursor_type": "date"}), json!({})] {
        let r = c.op("begin", bad);
        assert_eq!(
            (r.status, r.json["code"].as_str()),
            (422, Some("INVALID_CURSOR_TYPE")),
            "{r:?}"
        );
    }
    assert!(mock.streams().is_empty(), "a refused begin makes no row");

    let first = c.op("begin", json!({"cursor_type": "timestamp_utc"})).json;
    assert_eq!(first["status"], "running");
    assert_eq!(first["cursor_type"], "timestamp_utc");
    assert_eq!(
        first["committed_cursor_value"],
        Value::Null,
        "no lower bound on a first run"
    );
    parse_time(first["started_at_utc"].as_str().unwrap());

    let done = c.op(
        "complete",
        json!({"new_cursor_value": "2024-05-01T12:00:00Z", "records_processed": 5, "metadata": {"pages": 2}}),
    );
    assert_eq!(done.json["status"], "succeeded", "{done:?}");
    assert_eq!(done.json["records_processed"], 5);
    assert_eq!(done.json["metadata"], json!({"pages": 2}));
    assert!(done.json["completed_at_utc"].is_string() && done.json["committed_at_utc"].is_string());

    let failed = c.op("fail", json!({"error_summary": "acme answered 503"})).json;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error_summary"], "acme answered 503");
    assert_eq!(
        failed["committed_cursor_value"], "2024-05-01T12:00:00Z",
        "fail leaves the cursor"
    );

    let again = c.op("begin", json!({"cursor_type": "timestamp_utc"})).json;
    assert_eq!(again["status"], "running");
    assert_eq!(
        again["committed_cursor_value"], "2024-05-01T12:00:00Z",
        "the lower bound"
    );
    for cleared in ["error_summary", "completed_at_utc", "records_processed"] {
        assert_eq!(again[cleared], Value::Null, "{cleared} cleared by begin");
    }
    assert_eq!(again["metadata"], json!({"pages": 2}), "metadata is not run state");

    let while_running = c.op("begin", json!({"cursor_type": "timestamp_utc"}));
    assert_eq!(while_running.status, 200, "begin never refuses a running stream");
    assert!(
        parse_time(while_running.json["started_at_utc"].as_str().unwrap())
            >= parse_time(again["started_at_utc"].as_str().unwrap())
    );
    assert_eq!(c.state().json, while_running.json, "GET shows the stored row");
}

#[test]
fn complete_and_fail_before_any_begin_are_404() {
    let mock = ApiMock::start(API_MOCK);
    let c = client(&mock);
    for (op, body) in [
        ("complete", json!({"new_cursor_value": "1"})),
        ("fail", json!({"error_summary": "x"})),
    ] {
        let r = c.op(op, body);
        assert_eq!(r.status, 404, "{op}: {r:?}");
        assert_eq!(r.message(), "stream not found: call /begin first");
    }
    assert!(mock.streams().is_empty());
    assert!(mock.audit().is_empty());
}

/// A status and the `code` of a 422.
type Coded = (u16, Option<String>);

/// Begins a stream of `cursor_type`, then completes it with each value in turn: the statuses
/// (and 422 codes) the mock answered, the cursor it ended with, and the audit log.
fn completes(cursor_type: &str, values: &[&str]) -> (Vec<Coded>, Value, Vec<Value>) {
    let mock = ApiMock::start(API_MOCK);
    let c = client(&mock);
    assert_eq!(c.op("begin", json!({"cursor_type": cursor_type})).status, 200);
    let answers = values
        .iter()
        .map(|v| {
            let r = c.op("complete", json!({"new_cursor_value": v}));
            (r.status, r.json["code"].as_str().map(str::to_owned))
        })
        .collect();
    (answers, c.state().json["committed_cursor_value"].clone(), mock.audit())
}

fn ok() -> Coded {
    (200, None)
}

fn refused(code: &str) -> Coded {
    (422, Some(code.to_owned()))
}

#[test]
fn a_timestamp_cursor_only_moves_forward_compared_as_instants() {
    let (answers, cursor, audit) = completes(
        "timestamp_utc",
        &[
            "not a time",
            "2024-05-01T12:00:00Z",
            "2024-05-01T12:00:00Z",
            "2024-05-01T11:59:59Z",
            // 11:30Z: after 12:00Z as text, before it in time.
            "2024-05-01T12:30:00+01:00",
            // 12:30Z: before 12:00Z as text, after it in time.
            "2024-05-01T11:30:00-01:00",
            "2024-05-02",
        ],
    );
    assert_eq!(
        answers,
        [
            refused("INVALID_CURSOR"),
            ok(),
            ok(),
            refused("CURSOR_REGRESSION"),
            refused("CURSOR_REGRESSION"),
            ok(),
            refused("INVALID_CURSOR")
        ]
    );
    assert_eq!(cursor, "2024-05-01T11:30:00-01:00");
    let moves: Vec<(Value, Value, Value)> = audit
        .iter()
        .map(|a| {
            (
                a["event_type"].clone(),
                a["old_cursor_value"].clone(),
                a["new_cursor_value"].clone(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        [
            (json!("cursor_advance"), Value::Null, json!("2024-05-01T12:00:00Z")),
            (
                json!("cursor_advance"),
                json!("2024-05-01T12:00:00Z"),
                json!("2024-05-01T12:00:00Z")
            ),
            (
                json!("cursor_advance"),
                json!("2024-05-01T12:00:00Z"),
                json!("2024-05-01T11:30:00-01:00")
            ),
        ],
        "only accepted completes are audited"
    );
}

#[test]
fn a_numeric_cursor_compares_as_a_number_not_as_text() {
    let (answers, cursor, _) = completes("numeric_id", &["9", "10", "10", "9", "ten", "11.5"]);
    assert_eq!(
        answers,
        [
            ok(),
            ok(),
            ok(),
            refused("CURSOR_REGRESSION"),
            refused("INVALID_CURSOR"),
            refused("INVALID_CURSOR")
        ]
    );
    assert_eq!(cursor, "10");
}

#[test]
fn an_opaque_cursor_refuses_only_the_token_it_holds() {
    let (answers, cursor, _) = completes("opaque_token", &["b", "a", "a", ""]);
    assert_eq!(
        answers,
        [ok(), ok(), refused("CURSOR_REGRESSION"), refused("INVALID_CURSOR")]
    );
    assert_eq!(cursor, "a");
}

#[test]
fn reset_needs_a_reason_and_sets_the_cursor_back() {
    let mock = ApiMock::start(API_MOCK);
    let c = client(&mock);
    c.op("begin", json!({"cursor_type": "timestamp_utc"}));
    c.op("complete", json!({"new_cursor_value": "2024-05-01T12:00:00Z"}));
    for (body, code) in [
        (json!({"new_cursor_value": "2020-01-01T00:00:00Z"}), "REASON_REQUIRED"),
        (
            json!({"new_cursor_value": "2020-01-01T00:00:00Z", "reason": " "}),
            "REASON_REQUIRED",
        ),
        (
            json!({"new_cursor_value": "2020-01-01T00:00:00Z", "reason": "backfill", "cursor_type": "date"}),
            "INVALID_CURSOR_TYPE",
        ),
        (
            json!({"new_cursor_value": "last year", "reason": "backfill"}),
            "INVALID_CURSOR",
        ),
    ] {
        let r = c.op("reset", body.clone());
        assert_eq!((r.status, r.json["code"].as_str()), (422, Some(code)), "{body}: {r:?}");
    }
    assert_eq!(c.state().json["committed_cursor_value"], "2024-05-01T12:00:00Z");

    let r = c.op(
        "reset",
        json!({"new_cursor_value": "2020-01-01T00:00:00Z", "reason": "backfill"}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["status"], "idle");
    assert_eq!(r.json["committed_cursor_value"], "2020-01-01T00:00:00Z");
    let audit = mock.audit();
    let last = audit.last().unwrap();
    assert_eq!(last["event_type"], "cursor_reset");
    assert_eq!(last["reason"], "backfill");
    assert_eq!(last["old_cursor_value"], "2024-05-01T12:00:00Z");
    assert_eq!(last["api_user"], "api-key-1");
    assert_eq!(
        c.op("begin", json!({"cursor_type": "timestamp_utc"})).json["committed_cursor_value"],
        "2020-01-01T00:00:00Z",
        "the next run starts from the reset cursor"
    );
}

#[test]
fn streams_and_suppliers_are_kept_apart_per_customer() {
    let mock = ApiMock::start_with(API_MOCK, &[(API_TOKEN, &["100", "200"])]);
    let (a, b) = (
        caller(&mock, Some(API_TOKEN), Some("100")),
        caller(&mock, Some(API_TOKEN), Some("200")),
    );
    a.op("begin", json!({"cursor_type": "numeric_id"}));
    a.op("complete", json!({"new_cursor_value": "7"}));
    assert_eq!(b.state().json["status"], "idle");
    assert_eq!(b.op("complete", json!({"new_cursor_value": "1"})).status, 404);
    assert_eq!(counts(&a.suppliers(items(vec![supplier("1", "for 100")]))), (1, 0, 0));
    assert_eq!(counts(&b.suppliers(items(vec![supplier("1", "for 200")]))), (1, 0, 0));
    assert_eq!(names(&mock, "100"), [("1".into(), "for 100".into())]);
    assert_eq!(names(&mock, "200"), [("1".into(), "for 200".into())]);
    let customers: Vec<Value> = mock.streams().iter().map(|s| s["customer"].clone()).collect();
    assert_eq!(customers, [json!("100")]);
}

#[test]
fn suppliers_upsert_on_number_and_organization_code() {
    let mock = ApiMock::start(API_MOCK);
    let c = client(&mock);
    let mut eu = supplier("1", "EU one");
    eu["organization_code"] = json!("EU");
    let mut alt = supplier("2", "two");
    alt["alternative_supplier_name"] = json!("deux");
    assert_eq!(
        counts(&c.suppliers(items(vec![supplier("1", "one"), eu.clone(), alt]))),
        (3, 0, 0)
    );
    let mut blank_org = supplier("1", "one, renamed");
    blank_org["organization_code"] = json!("");
    let r = c.suppliers(items(vec![blank_org, eu, supplier("2", "two"), supplier("3", "three")]));
    // "" is the absent organization_code; an unset field replaces a set one.
    assert_eq!(counts(&r), (1, 2, 1));
    assert_eq!(
        names(&mock, CUSTOMER),
        [
            ("1".into(), "one, renamed".into()),
            ("1".into(), "EU one".into()),
            ("2".into(), "two".into()),
            ("3".into(), "three".into())
        ]
    );
    let stored = mock.suppliers(CUSTOMER);
    assert_eq!(stored[2]["alternative_supplier_name"], Value::Null);
    assert_eq!(stored[2]["supplier_location"], json!([]));
    assert_eq!(stored[0]["organization_code"], "", "stored as last sent");
}

fn address(street: &str) -> Value {
    json!({"street": street, "city": "Utrecht", "country_code": "NL"})
}

fn bank(name: &str, number: &str) -> Value {
    json!({"bank_name": name, "bank_account_number": number, "is_primary": true})
}

/// The stored locations of supplier `number`: (location_code, [street], [bank_name]).
fn locations(mock: &ApiMock, number: &str) -> Vec<(String, Vec<String>, Vec<String>)> {
    let stored = mock.suppliers(CUSTOMER);
    let s = stored.iter().find(|s| s["supplier_number"] == number).expect("stored");
    let list = |v: &Value, k: &str| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x[k].as_str().unwrap().to_owned())
            .collect()
    };
    s["supplier_location"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["location_code"].as_str().unwrap().to_owned(),
                list(&l["supplier_address"], "street"),
                list(&l["supplier_bank_account"], "bank_name"),
            )
        })
        .collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn listed_locations_are_upserted_by_code_and_their_addresses_replaced() {
    let mock = ApiMock::start(API_MOCK);
    let c = client(&mock);
    let mut s = supplier("1", "one");
    s["supplier_location"] = json!([
        {"location_code": "A", "supplier_address": [address("x"), address("y")], "supplier_bank_account": [bank("Old", "111")]},
        {"location_code": "B", "supplier_address": [address("z")]}
    ]);
    counts(&c.suppliers(items(vec![s])));
    let mut s = supplier("1", "one");
    s["supplier_location"] = json!([
        {"location_code": "C", "location_name": "new"},
        {"location_code": "A", "supplier_address": [address("w")]}
    ]);
    assert_eq!(counts(&c.suppliers(items(vec![s]))), (0, 1, 0));
    assert_eq!(
        locations(&mock, "1"),
        [
            ("A".into(), strings(&["w"]), vec![]),
            ("B".into(), strings(&["z"]), vec![]),
            ("C".into(), vec![], vec![])
        ],
        "A replaced (its bank accounts too, none listed), B left alone, C appended"
    );
}

#[test]
fn address_insert_only_adds_only_addresses_not_already_present() {
    let mock = ApiMock::start(API_MOCK);
    let c = client(&mock);
    let post = |streets: &[&str], insert_only: bool| {
        let list: Vec<Value> = streets.iter().map(|s| address(s)).collect();
        let s = with_location(
            supplier("1", "one"),
            json!({"location_code": "A", "supplier_address": list}),
        );
        counts(&c.suppliers(json!({"SupplierAddressInsertOnly": insert_only, "items": [s]})))
    };
    post(&["x"], false);
    assert_eq!(post(&["x", "y"], true), (0, 1, 0));
    assert_eq!(locations(&mock, "1")[0].1, strings(&["x", "y"]));
    assert_eq!(post(&["y"], true), (0, 0, 1), "nothing new: unchanged");
    // A field differs: not the same address, so it is added.
    let changed = with_location(
        supplier("1", "one"),
        json!({"location_code": "A", "supplier_address": [{"street": "x", "city": "Delft", "country_code": "NL"}]}),
    );
    c.suppliers(json!({"SupplierAddressInsertOnly": true, "items": [changed]}));
    assert_eq!(locations(&mock, "1")[0].1, strings(&["x", "y", "x"]));
    assert_eq!(post(&["y"], false), (0, 1, 0));
    assert_eq!(
        locations(&mock, "1")[0].1,
        strings(&["y"]),
        "without the option: replaced"
    );
}

#[test]
fn bank_insert_only_keeps_an_account_whose_number_is_present() {
    let mock = ApiMock::start(API_MOCK);
    let c = client(&mock);
    let post = |accounts: Vec<Value>, insert_only: bool| {
        let s = with_location(
            supplier("1", "one"),
            json!({"location_code": "A", "supplier_bank_account": accounts}),
        );
        counts(&c.suppliers(json!({"SupplierBankInsertOnly": insert_only, "items": [s]})))
    };
    post(vec![bank("Old", "111")], false);
    assert_eq!(post(vec![bank("New", "111"), bank("Other", "222")], true), (0, 1, 0));
    assert_eq!(locations(&mock, "1")[0].2, strings(&["Old", "Other"]));
    assert_eq!(post(vec![bank("New", "111")], false), (0, 1, 0));
    assert_eq!(
        locations(&mock, "1")[0].2,
        strings(&["New"]),
        "without the option: replaced"
    );
    let stored = &mock.suppliers(CUSTOMER)[0]["supplier_location"][0]["supplier_bank_account"][0];
    assert_eq!(stored["is_primary"], true);
    assert_eq!(stored["bank_account_number"], "111");
}

#[test]
fn full_load_replaces_all_of_that_customers_suppliers_only() {
    let mock = ApiMock::start_with(API_MOCK, &[(API_TOKEN, &["100", "200"])]);
    let (a, b) = (
        caller(&mock, Some(API_TOKEN), Some("100")),
        caller(&mock, Some(API_TOKEN), Some("200")),
    );
    a.suppliers(items(vec![supplier("1", "one"), supplier("2", "two")]));
    b.suppliers(items(vec![supplier("9", "nine")]));
    let r = a.suppliers(json!({"full_load": true, "items": [supplier("2", "two"), supplier("3", "three")]}));
    assert_eq!(counts(&r), (2, 0, 0), "after the delete every row is new");
    assert_eq!(
        names(&mock, "100"),
        [("2".into(), "two".into()), ("3".into(), "three".into())]
    );
    assert_eq!(names(&mock, "200"), [("9".into(), "nine".into())]);
    a.suppliers(json!({"full_load": false, "items": [supplier("4", "four")]}));
    assert_eq!(
        names(&mock, "100").len(),
        3,
        "a later batch without full_load keeps them"
    );
    let logged: Vec<(Option<usize>, Option<bool>)> = mock.requests().iter().map(|r| (r.items, r.full_load)).collect();
    assert_eq!(
        logged,
        [
            (Some(2), Some(false)),
            (Some(1), Some(false)),
            (Some(2), Some(true)),
            (Some(1), Some(false))
        ]
    );
}

#[test]
fn a_validation_error_anywhere_in_a_batch_applies_none_of_it() {
    let mock = ApiMock::start(API_MOCK);
    let c = client(&mock);
    c.suppliers(items(vec![supplier("1", "kept")]));
    let location = |l: Value| with_location(supplier("5", "five"), l);
    let cases = [
        (json!({"supplier_name": "no number"}), "supplier_number is required"),
        (supplier("", "empty number"), "supplier_number is empty"),
        (
            json!({"supplier_number": "5", "supplier_name": null}),
            "supplier_name is required",
        ),
        (
            location(json!({"location_name": "no code"})),
            "supplier_location.location_code is required",
        ),
        (
            location(json!({"location_code": "A", "supplier_address": [{"country_code": "NLD"}]})),
            "supplier_location.supplier_address.country_code is not two ASCII letters",
        ),
        (
            location(json!({"location_code": "A", "supplier_address": [{"country_code": "N1"}]})),
            "supplier_location.supplier_address.country_code is not two ASCII letters",
        ),
        (supplier("5", "nul\u{0}name"), "supplier_name contains a NUL character"),
        (
            location(json!({"location_code": "A", "supplier_bank_account": [bank("b", "NL91\u{0}ABNA0417")]})),
            "supplier_location.supplier_bank_account.bank_account_number contains a NUL character",
        ),
    ];
    for (bad, expected) in cases {
        for full_load in [false, true] {
            let body = json!({"full_load": full_load, "items": [supplier("1", "changed"), supplier("2", "new"), bad]});
            let r = c.suppliers(body);
            assert_eq!(r.status, 400, "{r:?}");
            assert_eq!(r.message(), format!("validation error: {expected}"));
            assert_eq!(names(&mock, CUSTOMER), [("1".into(), "kept".into())], "{expected}");
        }
    }
    let r = c.suppliers(items(vec![supplier("5", "fine")]));
    assert_eq!(counts(&r), (1, 0, 0));
}

#[test]
fn an_unknown_key_is_400_naming_it_and_applies_nothing() {
    let mock = ApiMock::start(API_MOCK);
    let c = client(&mock);
    let mut colour = supplier("1", "one");
    colour["colour"] = json!("red");
    let iban = with_location(
        supplier("1", "one"),
        json!({"location_code": "A", "supplier_bank_account": [{"iban": "NL91ABNA0417164300"}]}),
    );
    for (body, key) in [
        (items(vec![colour]), "colour"),
        (json!({"fullLoad": true, "items": []}), "fullLoad"),
        (items(vec![iban]), "iban"),
        (json!({"full_load": "yes", "items": []}), "full_load"),
    ] {
        let r = c.suppliers(body);
        assert_eq!(r.status, 400, "{r:?}");
        assert!(
            r.message().starts_with("validation error: ") && r.message().contains(key),
            "{r:?}"
        );
        assert!(!r.message().contains("NL91"), "no value in the message: {r:?}");
    }
    let r = c.op("begin", json!({"cursor_type": "numeric_id", "cursor": "1"}));
    assert_eq!(r.status, 400);
    assert!(r.message().contains("`cursor`"), "{r:?}");
    assert!(mock.suppliers(CUSTOMER).is_empty() && mock.streams().is_empty());
}

#[test]
fn more_than_1000_rows_in_one_post_is_400_and_1000_are_taken() {
    let mock = ApiMock::start(API_MOCK);
    let c = client(&mock);
    let rows = |n: usize| (0..n).map(|i| supplier(&format!("S{i:05}"), "x")).collect::<Vec<_>>();
    let r = c.suppliers(items(rows(1001)));
    assert_eq!((r.status, r.message()), (400, "at most 1000 rows per request"));
    assert!(mock.suppliers(CUSTOMER).is_empty());
    assert_eq!(counts(&c.suppliers(items(rows(1000)))), (1000, 0, 0));
    assert_eq!(mock.suppliers(CUSTOMER).len(), 1000);
    let sizes: Vec<Option<usize>> = mock.requests().iter().map(|r| r.items).collect();
    assert_eq!(sizes, [Some(1001), Some(1000)]);
}

#[test]
fn a_status_fault_answers_in_place_of_the_api_and_applies_nothing() {
    let mock = ApiMock::start(API_MOCK);
    let c = client(&mock);
    mock.faults(json!([
        {"op": "supplier", "times": 2, "action": "status", "status": 503, "retry_after": "1"},
        {"op": "supplier", "action": "status", "status": 429, "body": "slow down"}
    ]));
    // A rule for suppliers leaves the delta-state service alone.
    assert_eq!(c.op("begin", json!({"cursor_type": "numeric_id"})).status, 200);
    let body = items(vec![supplier("1", "one")]);
    for _ in 0..2 {
        let r = c.suppliers(body.clone());
        assert_eq!((r.status, r.retry_after.as_deref()), (503, Some("1")), "{r:?}");
        assert!(mock.suppliers(CUSTOMER).is_empty());
    }
    let r = c.suppliers(body.clone());
    assert_eq!((r.status, &r.json), (429, &json!("slow down")));
    assert_eq!(counts(&c.suppliers(body)), (1, 0, 0), "the rules are used up");
    let log: Vec<(Option<u16>, Option<String>)> = mock.requests().iter().map(|r| (r.status, r.fault.clone())).collect();
    let status = Some("status".to_owned());
    assert_eq!(
        log,
        [
            (Some(200), None),
            (Some(503), status.clone()),
            (Some(503), status.clone()),
            (Some(429), status),
            (Some(200), None)
        ]
    );
    assert_eq!(mock.requests()[1].items, Some(1), "a faulted batch is still counted");
}

#[test]
fn a_delay_fault_waits_then_applies() {
    let mock = ApiMock::start(API_MOCK);
    let c = client(&mock);
    c.op("begin", json!({"cursor_type": "numeric_id"}));
    mock.faults(json!([{"op": "complete", "action": "delay", "delay_ms": 400}]));
    let started = Instant::now();
    let r = c.op("complete", json!({"new_cursor_value": "5"}));
    // A lower bound only: the mock sleeps at least this long, whatever the machine's load.
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(r.json["committed_cursor_value"], "5");
    assert_eq!(mock.requests()[1].fault.as_deref(), Some("delay"));
    assert_eq!(mock.requests()[1].status, Some(200));
}

#[test]
fn drop_after_apply_hangs_up_but_the_write_is_applied_and_a_retry_is_harmless() {
    let mock = ApiMock::start(API_MOCK);
    let c = client(&mock);
    mock.faults(json!([
        {"op": "supplier", "action": "drop_after_apply"},
        {"op": "complete", "action": "drop_after_apply"}
    ]));
    let body = items(vec![supplier("1", "one")]);
    let lost = c.try_send("POST", "/v1/supplier", Some(&body));
    assert!(lost.is_err(), "no answer: {lost:?}");
    assert_eq!(
        names(&mock, CUSTOMER),
        [("1".into(), "one".into())],
        "applied all the same"
    );
    assert_eq!(counts(&c.suppliers(body)), (0, 0, 1), "the retry changes nothing");

    c.op("begin", json!({"cursor_type": "timestamp_utc"}));
    let commit = json!({"new_cursor_value": "2024-05-01T12:00:00Z"});
    assert!(
        c.try_send("POST", "/v1/delta/streams/acme_eu/suppliers/complete", Some(&commit))
            .is_err()
    );
    assert_eq!(c.state().json["status"], "succeeded");
    assert_eq!(c.state().json["committed_cursor_value"], "2024-05-01T12:00:00Z");
    assert_eq!(
        c.op("complete", commit).status,
        200,
        "an equal timestamp is no regression"
    );

    let requests = mock.requests();
    let dropped: Vec<(&str, Option<u16>)> = requests
        .iter()
        .filter(|r| r.fault.is_some())
        .map(|r| (r.op.as_deref().unwrap(), r.status))
        .collect();
    assert_eq!(dropped, [("supplier", Some(200)), ("complete", Some(200))]);
}

#[test]
fn a_reset_fault_hangs_up_without_applying() {
    let mock = ApiMock::start(API_MOCK);
    let c = client(&mock);
    mock.faults(json!([{"op": "any", "times": 2, "action": "reset"}]));
    assert!(
        c.try_send("POST", "/v1/supplier", Some(&items(vec![supplier("1", "one")])))
            .is_err()
    );
    assert!(
        c.try_send(
            "POST",
            "/v1/delta/streams/acme_eu/suppliers/begin",
            Some(&json!({"cursor_type": "numeric_id"}))
        )
        .is_err()
    );
    assert!(mock.suppliers(CUSTOMER).is_empty() && mock.streams().is_empty());
    let log: Vec<(Option<u16>, Option<String>)> = mock.requests().iter().map(|r| (r.status, r.fault.clone())).collect();
    assert_eq!(log, [(None, Some("reset".into())), (None, Some("reset".into()))]);
    assert_eq!(c.state().status, 200, "the rule is used up");
}

#[test]
fn rules_match_their_own_op_in_order_and_any_matches_every_op() {
    let mock = ApiMock::start(API_MOCK);
    let c = client(&mock);
    mock.faults(json!([
        {"op": "complete", "action": "status", "status": 500},
        {"op": "any", "action": "status", "status": 502},
        {"op": "fail", "action": "status", "status": 504}
    ]));
    assert_eq!(c.state().status, 502);
    assert_eq!(c.op("begin", json!({"cursor_type": "numeric_id"})).status, 200);
    assert_eq!(c.op("fail", json!({"error_summary": "x"})).status, 504);
    assert_eq!(c.op("complete", json!({"new_cursor_value": "1"})).status, 500);
    assert_eq!(c.op("complete", json!({"new_cursor_value": "1"})).status, 200);
    assert_eq!(mock.pending_faults()["rules"], json!([]));
}

#[test]
fn a_poison_prefix_refuses_every_batch_holding_it_until_cleared() {
    let mock = ApiMock::start(API_MOCK);
    let c = client(&mock);
    mock.faults(json!([{"op": "supplier", "action": "poison", "prefix": "BAD-"}]));
    for _ in 0..3 {
        let r = c.suppliers(items(vec![supplier("GOOD-1", "g"), supplier("BAD-7", "b")]));
        assert_eq!(r.status, 400);
        assert!(r.message().starts_with("validation error: supplier_number"), "{r:?}");
    }
    assert!(mock.suppliers(CUSTOMER).is_empty(), "the good row went nowhere either");
    assert_eq!(counts(&c.suppliers(items(vec![supplier("GOOD-1", "g")]))), (1, 0, 0));
    assert_eq!(mock.pending_faults()["poison"], json!(["BAD-"]));
    mock.clear_faults();
    assert_eq!(counts(&c.suppliers(items(vec![supplier("BAD-7", "b")]))), (1, 0, 0));
}

#[test]
fn a_bad_fault_rule_is_refused_and_adds_none() {
    let mock = ApiMock::start(API_MOCK);
    let post = |body: Value| {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut r = agent
            .post(format!("{}/_mock/faults", mock.url))
            .send_json(body)
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    for (body, says) in [
        (
            json!([{"op": "begin", "action": "reset"}, {"op": "begin", "action": "explode"}]),
            "explode",
        ),
        (json!([{"op": "begin", "action": "status"}]), "`status`"),
        (json!([{"op": "lease", "action": "reset"}]), "lease"),
        (json!([{"op": "begin", "action": "reset", "times": 0}]), "times"),
    ] {
        let (status, text) = post(body);
        assert_eq!(status, 400, "{text}");
        assert!(text.contains(says), "{text}");
    }
    assert_eq!(mock.pending_faults(), json!({"rules": [], "poison": []}));
}

#[test]
fn a_stream_row_can_be_staged_and_mock_reset_clears_everything() {
    let mock = ApiMock::start(API_MOCK);
    let c = client(&mock);
    mock.stage_stream(
        json!({"customer": CUSTOMER, "connector_name": "acme_eu", "stream_name": "suppliers",
        "status": "running", "started_at_utc": "2020-01-01T00:00:00Z", "cursor_type": "numeric_id",
        "committed_cursor_value": "4"}),
    );
    let state = c.state().json;
    assert_eq!(
        (state["status"].as_str(), state["started_at_utc"].as_str()),
        (Some("running"), Some("2020-01-01T00:00:00Z"))
    );
    assert_eq!(c.op("complete", json!({"new_cursor_value": "3"})).status, 422);
    c.suppliers(items(vec![supplier("1", "one")]));
    mock.faults(
        json!([{"op": "any", "action": "delay", "delay_ms": 1}, {"op": "supplier", "action": "poison", "prefix": "X"}]),
    );
    mock.reset();
    assert!(mock.suppliers(CUSTOMER).is_empty());
    assert!(mock.streams().is_empty() && mock.audit().is_empty() && mock.requests().is_empty());
    assert_eq!(mock.pending_faults(), json!({"rules": [], "poison": []}));
    assert_eq!(c.state().json["status"], "idle");
}
