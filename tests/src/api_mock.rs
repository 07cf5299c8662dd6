//! A running `nuntiq-api-mock` (the Customer API mock) and a typed client for its `/_mock`
//! side: what it stores, what it was asked, and the faults it should inject.

use serde::Deserialize;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The API key tests give the mock and the host, and the customer of the seed's settings.json.
pub const API_TOKEN: &str = "nuntiq-test-api-key-0d9c1e";
pub const CUSTOMER: &str = "10000001";

/// A running `nuntiq-api-mock serve`, killed on drop.
pub struct ApiMock {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

/// One API request as the mock recorded it (it never records headers, so never the token).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct MockRequest {
    pub method: String,
    pub path: String,
    /// `supplier`, `begin`, `complete`, `fail`, `state`, `reset`; None for an unknown route.
    pub op: Option<String>,
    pub customer: Option<String>,
    /// Neither 401 nor 403.
    pub authorized: bool,
    /// Supplier POSTs: rows in the batch and its `full_load`.
    pub items: Option<usize>,
    pub full_load: Option<bool>,
    /// What the mock decided (for `drop_after_apply`, what it would have answered); None when
    /// it hung up without deciding (`reset`) or the request is still in flight.
    pub status: Option<u16>,
    /// The fault action this request took, if any.
    pub fault: Option<String>,
}

impl ApiMock {
    /// Starts the mock with [`API_TOKEN`] for [`CUSTOMER`].
    pub fn start(bin: &str) -> Self {
        Self::start_with(bin, &[(API_TOKEN, &[CUSTOMER])])
    }

    /// Starts the mock with these API keys, each for its customers.
    pub fn start_with(bin: &str, grants: &[(&str, &[&str])]) -> Self {
        let mut command = Command::new(bin);
        command.arg("serve");
        for (token, customers) in grants {
            command.arg("--token").arg(format!("{token}:{}", customers.join(",")));
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nuntiq-api-mock starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("nuntiq-api-mock prints its address");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("nuntiq-api-mock did not start: {line:?}"))
            .to_owned();
        Self { child, url }
    }

    /// The API base: `http://127.0.0.1:PORT/api`.
    pub fn api_url(&self) -> String {
        format!("{}/api", self.url)
    }

    /// The host's `--db` for this mock: `nuntiq+http://127.0.0.1:PORT/api`.
    pub fn store_url(&self) -> String {
        format!("nuntiq+{}", self.api_url())
    }

    /// Every supplier of `customer` in the wire shape, sorted by (supplier_number, organization_code).
    pub fn suppliers(&self, customer: &str) -> Vec<Value> {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("customer", customer)
            .finish();
        self.get_list(&format!("/_mock/suppliers?{query}"))
    }

    /// Every delta-state row: `DeltaStreamState` plus `customer`.
    pub fn streams(&self) -> Vec<Value> {
        self.get_list("/_mock/streams")
    }

    /// The row of one stream, if it has one.
    pub fn stream(&self, customer: &str, connector: &str, stream: &str) -> Option<Value> {
        self.streams()
            .into_iter()
            .find(|s| s["customer"] == customer && s["connector_name"] == connector && s["stream_name"] == stream)
    }

    /// Puts a delta-state row in place as given (`{"customer", …DeltaStreamState}`), e.g. a
    /// run `running` since long ago.
    pub fn stage_stream(&self, row: Value) {
        self.post("/_mock/streams", &row);
    }

    /// Every `cursor_advance` and `cursor_reset`, oldest first.
    pub fn audit(&self) -> Vec<Value> {
        self.get_list("/_mock/audit")
    }

    /// Every API request received, oldest first.
    pub fn requests(&self) -> Vec<MockRequest> {
        serde_json::from_value(Value::Array(self.get_list("/_mock/requests"))).expect("request records")
    }

    /// Queues fault rules (a JSON array; see the mock's module doc).
    pub fn faults(&self, rules: Value) {
        self.post("/_mock/faults", &rules);
    }

    /// The rules not used up yet, and the poison prefixes.
    pub fn pending_faults(&self) -> Value {
        self.get("/_mock/faults")
    }

    /// Drops every queued rule and poison prefix.
    pub fn clear_faults(&self) {
        self.post("/_mock/faults/clear", &Value::Null);
    }

    /// Clears tables, requests and faults.
    pub fn reset(&self) {
        self.post("/_mock/reset", &Value::Null);
    }

    fn post(&self, path: &str, body: &Value) {
        ureq::post(format!("{}{path}", self.url))
            .send_json(body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    }

    fn get(&self, path: &str) -> Value {
        ureq::get(format!("{}{path}", self.url))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .body_mut()
            .read_json()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    fn get_list(&self, path: &str) -> Vec<Value> {
        match self.get(path) {
            Value::Array(list) => list,
            other => panic!("GET {path}: not a list: {other}"),
        }
    }
}

impl Drop for ApiMock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
