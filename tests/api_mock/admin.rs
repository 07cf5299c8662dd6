//! The `/_mock` side of the Customer API mock: what tests read back (tables, audit, the request
//! log), the faults they queue, staged delta-state rows, and the reset between cases.

use crate::delta::{DeltaStreamState, StreamKey};
use crate::faults::Faults;
use crate::{Answer, Mock, State, message, ok_json, read_body, schema};
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;

/// A delta-state row with the customer it belongs to, as `/_mock/streams` shows it.
#[derive(Serialize)]
struct StreamRow<'a> {
    customer: &'a str,
    #[serde(flatten)]
    state: &'a DeltaStreamState,
}

/// Answers one `/_mock/...` request; none needs a key.
pub async fn admin(mock: &Mock, req: Request<Incoming>) -> Answer {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err((status, text)) => return message(status, &text),
    };
    let mut s = mock.state.lock().unwrap();
    match (method, path.as_str()) {
        (Method::GET, "/_mock/suppliers") => {
            let Some(customer) = query.get("customer") else {
                return message(400, "customer= is required: /_mock/suppliers?customer=C");
            };
            let rows: Vec<_> = s.suppliers.get(customer).into_iter().flat_map(|t| t.values()).collect();
            ok_json(&rows)
        }
        (Method::GET, "/_mock/streams") => {
            let rows: Vec<StreamRow> = s
                .streams
                .rows
                .iter()
                .map(|((customer, _, _), state)| StreamRow { customer, state })
                .collect();
            ok_json(&rows)
        }
        (Method::POST, "/_mock/streams") => match stage_stream(&body) {
            Ok((key, state)) => {
                s.streams.rows.insert(key, state);
                message(200, "staged")
            }
            Err(e) => message(400, &e),
        },
        (Method::GET, "/_mock/audit") => ok_json(&s.streams.audit),
        (Method::GET, "/_mock/requests") => ok_json(&s.requests),
        (Method::GET, "/_mock/faults") => ok_json(&s.faults),
        (Method::POST, "/_mock/faults") => match s.faults.add(&body) {
            Ok(()) => ok_json(&s.faults),
            Err(e) => message(400, &format!("faults: {e}")),
        },
        (Method::POST, "/_mock/faults/clear") => {
            s.faults = Faults::default();
            ok_json(&s.faults)
        }
        (Method::POST, "/_mock/reset") => {
            let generation = s.generation + 1;
            *s = State {
                generation,
                ..State::default()
            };
            message(200, "reset")
        }
        (method, _) => message(404, &format!("no route for {method} {path}")),
    }
}

/// `{"customer", …DeltaStreamState}`: a row as a test wants it (e.g. `running` since long ago).
fn stage_stream(body: &[u8]) -> Result<(StreamKey, DeltaStreamState), String> {
    let mut value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let customer = match value.as_object_mut().and_then(|o| o.remove("customer")) {
        Some(Value::String(c)) => c,
        _ => return Err("customer (a string) is required".into()),
    };
    let state: DeltaStreamState = schema::parse(value.to_string().as_bytes())?;
    Ok((
        (customer, state.connector_name.clone(), state.stream_name.clone()),
        state,
    ))
}
