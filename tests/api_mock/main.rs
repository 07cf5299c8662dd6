//! `nuntiq-api-mock`: the Nuntiq Customer API (delta-state service and supplier upsert) for
//! tests, the demo and benchmarks, written from the platform docs, with fault injection.
//!
//! `nuntiq-api-mock serve [--port 0] --token TOKEN:CUSTOMER[,CUSTOMER…]… [--url-file F]` binds
//! 127.0.0.1 only and prints `listening on http://127.0.0.1:PORT` first; the host is given
//! `nuntiq+http://127.0.0.1:PORT/api`. Tables live in memory; nothing touches disk per request.
//!
//! # The wire format assumed (the docs show no request bodies; the host's client assumes the same)
//!
//! Every `/api` request needs `Authorization: Bearer <token>` (else 401 `{"message": "invalid or
//! missing API key"}`) and an `X-Customer-Number` the token was given for (else 403 `{"message":
//! "insufficient permissions for customer …"}`). Errors are `{"message"}`, plus `"code"` on 422s.
//! Request bodies are strict: an unknown key or a wrong type is 400 naming the field by its path,
//! never by row index or position.
//!
//! Delta state, one row per (customer, connector, stream); `{connector}`/`{stream}` are
//! percent-decoded path segments under `/api/v1/delta/streams/{connector}/{stream}`:
//! - `GET` → 200 `DeltaStreamState` (every §6.3 field, null where unset); a stream that never
//!   began is a synthetic `status: "idle"` row with `cursor_type: null`.
//! - `POST …/begin {"cursor_type"}` → 422 `INVALID_CURSOR_TYPE` unless `timestamp_utc`,
//!   `numeric_id` or `opaque_token`; creates the row if missing, sets `cursor_type`, status
//!   `running`, a fresh `started_at_utc`, and clears `error_summary`, `completed_at_utc` and
//!   `records_processed`. Never refuses a `running` row. 200 with the state.
//! - `POST …/complete {"new_cursor_value", "records_processed"?, "metadata"?}` → 404 `stream not
//!   found: call /begin first` without a row; 422 `INVALID_CURSOR` for an empty value, or one
//!   the stored type cannot read (RFC 3339 for `timestamp_utc`, an integer for `numeric_id`);
//!   422 `CURSOR_REGRESSION` when it goes back (timestamps compared as instants, ids as
//!   numbers, both allowing equal; an opaque token equal to the previous one). The first
//!   complete takes any well-formed value. Sets the cursor, `committed_at_utc`, status
//!   `succeeded`, `completed_at_utc`, `records_processed` and `metadata` (null when not sent),
//!   audits `cursor_advance`. It does not look at the status (a complete without a begin since
//!   the last one is accepted).
//! - `POST …/fail {"error_summary"}` → 404 as above; else status `failed`, cursor untouched.
//! - `POST …/reset {"new_cursor_value", "reason", "cursor_type"?}` → 422 `REASON_REQUIRED`
//!   without a non-blank reason, 422 `INVALID_CURSOR_TYPE`/`INVALID_CURSOR` as above; else sets
//!   the cursor (and `committed_at_utc`) regardless of order, status `idle`, audits
//!   `cursor_reset`; creates the row if missing. Every token may reset (the mock has no roles).
//! - Every write sets `updated_at_utc` and `updated_by` (`api-key-N`: the N-th `--token`, never
//!   the token). Times are RFC 3339 UTC with microseconds.
//!
//! Suppliers, one table per customer: `POST /api/v1/supplier` with
//! `{"full_load", "SupplierAddressInsertOnly", "SupplierBankInsertOnly", "items": [Supplier…]}`
//! (the flags default to false; `items` is required, at most 1000, else 400 `at most 1000 rows
//! per request`). Objects use the schema's wire names (`schema.rs`); absent and null mean "not
//! set", and an absent list is an empty one. A batch is checked whole before anything is
//! applied: a missing or empty `supplier_number`, `supplier_name` or `location_code`, a
//! `country_code` that is not two ASCII letters, a NUL in any string, or a poisoned prefix is
//! 400 `validation error: <field>`, naming no row or value. Upsert key: (`supplier_number`,
//! `organization_code` with absent = ""): the supplier's fields are replaced; listed locations
//! are upserted by `location_code` (others stay, new ones are appended); a listed location's
//! addresses and bank accounts are replaced by the listed ones, or with the insert-only flag
//! only those not present are added (addresses compared field by field, accounts by
//! `bank_account_number`). `full_load: true` first deletes all of the customer's suppliers.
//! No defaults are filled in (`is_active` stays null when not sent). A key listed twice in a
//! batch is applied twice, in order. 200 `{"message": "Import result", "inserted", "updated",
//! "unchanged"}` (unchanged: the supplier after the upsert equals the stored one).
//!
//! # Faults and inspection (`/_mock`, no auth)
//! `POST /_mock/faults [{"op", "times"?, "action", …}]` queues rules (all or none); each API
//! request takes the first rule for its op (`supplier`, `begin`, `complete`, `fail`, `state`,
//! `reset`, or `any`) before auth is checked. `status` answers instead of applying; `delay`
//! waits, then proceeds; `drop_after_apply` proceeds (auth and all), then closes the connection
//! unanswered; `reset` closes it without applying. `poison {prefix}` is standing (not queued):
//! every later supplier batch with a `supplier_number` starting with it is a validation error.
//! `GET /_mock/faults` shows what is left; `POST /_mock/faults/clear` drops rules and poison.
//! `GET /_mock/suppliers?customer=C`, `GET /_mock/streams`, `POST /_mock/streams` (stage one
//! row: `{"customer", …DeltaStreamState}`), `GET /_mock/audit`, `GET /_mock/requests`, and
//! `POST /_mock/reset` (clears tables, requests and faults). A request record is
//! `{method, path, op, customer, authorized, items, full_load, status, fault?}`: `authorized`
//! means neither 401 nor 403, `items`/`full_load` are for supplier POSTs, `status` is what the
//! mock decided (for `drop_after_apply`, what it would have answered; null for `reset` or while
//! in flight). Headers are not recorded, so the token never is.

mod admin;
mod delta;
mod faults;
mod schema;
mod suppliers;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use delta::{Refusal, StreamKey, Streams};
use faults::{Action, Faults, Op};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderMap;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use schema::{LooseSupplierPost, SupplierPost};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Rows a supplier POST may carry (the platform's `save_all` split).
const MAX_ROWS: usize = 1000;
/// A request body over this is refused with 413 before it is parsed.
const MAX_BODY: usize = 64 << 20;

#[derive(Parser)]
#[command(name = "nuntiq-api-mock", about = "A mock Nuntiq Customer API on 127.0.0.1")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API under /api; prints `listening on http://127.0.0.1:PORT` first.
    Serve {
        /// 0 picks a free port.
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// An API key and the customers it may act for (repeatable).
        #[arg(long = "token", value_name = "TOKEN:CUSTOMER[,CUSTOMER…]", required = true)]
        tokens: Vec<String>,
        /// Also write the base URL to this file (for scripts).
        #[arg(long)]
        url_file: Option<std::path::PathBuf>,
    },
}

/// An API key, the customers it is for, and the name it is audited under.
struct Grant {
    token: String,
    customers: Vec<String>,
    user: String,
}

/// Parses `TOKEN:CUSTOMER[,CUSTOMER…]`; errors never show the value (it holds a secret).
fn grant(n: usize, text: &str) -> anyhow::Result<Grant> {
    let Some((token, customers)) = text.rsplit_once(':') else {
        bail!("--token #{n}: expected TOKEN:CUSTOMER[,CUSTOMER…] (no ':' found; the value is not shown)");
    };
    let customers: Vec<String> = customers.split(',').map(str::to_owned).collect();
    if token.is_empty() || customers.iter().any(String::is_empty) {
        bail!("--token #{n}: empty token or customer in TOKEN:CUSTOMER[,CUSTOMER…] (the value is not shown)");
    }
    Ok(Grant {
        token: token.to_owned(),
        customers,
        user: format!("api-key-{n}"),
    })
}

#[derive(Debug, Clone, Serialize)]
struct RequestRecord {
    method: String,
    path: String,
    op: Option<Op>,
    customer: Option<String>,
    authorized: bool,
    items: Option<usize>,
    full_load: Option<bool>,
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fault: Option<&'static str>,
}

#[derive(Default)]
struct State {
    suppliers: HashMap<String, suppliers::Table>,
    streams: Streams,
    requests: Vec<RequestRecord>,
    /// Bumped by `/_mock/reset`, so a request in flight across it does not write into the new log.
    generation: u64,
    faults: Faults,
}

struct Mock {
    grants: Vec<Grant>,
    state: Mutex<State>,
}

type Answer = Response<Full<Bytes>>;

fn main() -> anyhow::Result<()> {
    let Command::Serve { port, tokens, url_file } = Cli::parse().command;
    let grants = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| grant(i + 1, t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(port, grants, url_file))
}

async fn serve(port: u16, grants: Vec<Grant>, url_file: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .with_context(|| format!("failed to bind 127.0.0.1:{port}"))?;
    let url = format!("http://{}", listener.local_addr()?);
    if let Some(path) = url_file {
        std::fs::write(&path, &url).with_context(|| format!("failed to write {}", path.display()))?;
    }
    println!("listening on {url}");
    std::io::stdout().flush()?;
    let mock = Arc::new(Mock {
        grants,
        state: Mutex::default(),
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let mock = mock.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(mock.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(status: u16, body: impl Into<Bytes>) -> Answer {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .expect("static response parts")
}

fn message(status: u16, text: &str) -> Answer {
    respond(status, json!({ "message": text }).to_string())
}

fn refused(r: Refusal) -> Answer {
    match r.code {
        Some(code) => respond(r.status, json!({"code": code, "message": r.message}).to_string()),
        None => message(r.status, &r.message),
    }
}

fn ok_json<T: Serialize>(v: &T) -> Answer {
    respond(200, serde_json::to_vec(v).expect("serializable"))
}

/// Closes the connection without an answer (hyper drops it on a service error).
fn hang_up(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, why.to_owned())
}

/// A refusal before any API work: its status and message.
type Refused = (u16, String);

async fn read_body(body: Incoming) -> Result<Bytes, Refused> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err((413, format!("request body over {} MiB", MAX_BODY >> 20)))
        }
        Err(e) => Err((400, format!("failed to read the request body: {e}"))),
    }
}

async fn handle(mock: Arc<Mock>, req: Request<Incoming>) -> Result<Answer, std::io::Error> {
    let path = req.uri().path().to_owned();
    if path == "/api" || path.starts_with("/api/") {
        return api(mock, req).await;
    }
    if path.starts_with("/_mock/") {
        return Ok(admin::admin(&mock, req).await);
    }
    Ok(message(404, &format!("no route for {path}: the API is under /api")))
}

/// An API route: its op, and the stream it names for delta-state ops.
#[derive(Debug, PartialEq)]
struct Route {
    op: Op,
    stream: Option<(String, String)>,
}

/// 404 for an unknown path; 405 (with what is allowed) for a known one with another method.
fn route(method: &Method, path: &str) -> Result<Route, Refused> {
    let not_found = || (404, format!("no route for {method} {path}"));
    let only = |allowed: Method, route: Route| {
        if *method == allowed {
            Ok(route)
        } else {
            Err((405, format!("{path} only allows {allowed}")))
        }
    };
    if path == "/api/v1/supplier" {
        return only(
            Method::POST,
            Route {
                op: Op::Supplier,
                stream: None,
            },
        );
    }
    let rest = path.strip_prefix("/api/v1/delta/streams/").ok_or_else(not_found)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let decode = |s: &str| {
        let text = percent_encoding::percent_decode_str(s).decode_utf8().ok()?.into_owned();
        (!text.is_empty()).then_some(text)
    };
    let (Some(connector), Some(stream)) = (
        segments.first().and_then(|s| decode(s)),
        segments.get(1).and_then(|s| decode(s)),
    ) else {
        return Err(not_found());
    };
    let stream = Some((connector, stream));
    let op = match segments.get(2..) {
        Some([]) => return only(Method::GET, Route { op: Op::State, stream }),
        Some(["begin"]) => Op::Begin,
        Some(["complete"]) => Op::Complete,
        Some(["fail"]) => Op::Fail,
        Some(["reset"]) => Op::Reset,
        _ => return Err(not_found()),
    };
    only(Method::POST, Route { op, stream })
}

impl Mock {
    /// The caller's audit name and customer, or the 401/403 to answer.
    fn authorize(&self, headers: &HeaderMap) -> Result<(&str, String), Refused> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        let Some(grant) = token.and_then(|t| self.grants.iter().find(|g| g.token == t)) else {
            return Err((401, "invalid or missing API key".into()));
        };
        let customer = headers.get("x-customer-number").and_then(|v| v.to_str().ok());
        match customer {
            Some(c) if grant.customers.iter().any(|g| g == c) => Ok((&grant.user, c.to_owned())),
            Some(c) => Err((403, format!("insufficient permissions for customer {c}"))),
            None => Err((
                403,
                "insufficient permissions for customer (no X-Customer-Number header)".into(),
            )),
        }
    }

    /// Logs a request on arrival (so the log is in arrival order); returns where it went.
    fn log(&self, record: RequestRecord) -> (u64, usize) {
        let mut s = self.state.lock().unwrap();
        s.requests.push(record);
        (s.generation, s.requests.len() - 1)
    }

    fn update(&self, at: (u64, usize), f: impl FnOnce(&mut RequestRecord)) {
        let mut s = self.state.lock().unwrap();
        if s.generation == at.0
            && let Some(r) = s.requests.get_mut(at.1)
        {
            f(r);
        }
    }
}

async fn api(mock: Arc<Mock>, req: Request<Incoming>) -> Result<Answer, std::io::Error> {
    let (parts, body) = req.into_parts();
    let route = route(&parts.method, parts.uri.path());
    let op = route.as_ref().ok().map(|r| r.op);
    let auth = mock.authorize(&parts.headers);
    let at = mock.log(RequestRecord {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        op,
        customer: parts
            .headers
            .get("x-customer-number")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        authorized: auth.is_ok(),
        items: None,
        full_load: None,
        status: None,
        fault: None,
    });
    let body = match read_body(body).await {
        Ok(b) => b,
        Err((status, text)) => {
            mock.update(at, |r| r.status = Some(status));
            return Ok(message(status, &text));
        }
    };
    // A supplier POST's rows and full_load for the log: as parsed, else read loosely (outside the lock).
    let size = |parsed: Option<(Option<usize>, Option<bool>)>| match parsed {
        Some(size @ (Some(_), _)) => size,
        _ if op == Some(Op::Supplier) => LooseSupplierPost::peek(&body),
        _ => (None, None),
    };
    let fault = op.and_then(|op| mock.state.lock().unwrap().faults.take(op));
    mock.update(at, |r| r.fault = fault.as_ref().map(Action::name));
    let mut drop_after_apply = false;
    match fault {
        Some(Action::Status {
            status,
            retry_after,
            body: text,
        }) => {
            let (items, full_load) = size(None);
            mock.update(at, |r| {
                (r.status, r.items, r.full_load) = (Some(status), items, full_load)
            });
            let mut answer = respond(
                status,
                text.unwrap_or_else(|| json!({"message": "injected fault"}).to_string()),
            );
            if let Some(ra) = retry_after {
                let value = ra.parse().expect("checked when the rule was added");
                answer.headers_mut().insert("retry-after", value);
            }
            return Ok(answer);
        }
        Some(Action::Reset) => {
            let (items, full_load) = size(None);
            mock.update(at, |r| (r.items, r.full_load) = (items, full_load));
            return Err(hang_up("injected reset"));
        }
        Some(Action::Delay { delay_ms }) => tokio::time::sleep(Duration::from_millis(delay_ms)).await,
        Some(Action::DropAfterApply) => drop_after_apply = true,
        None => {}
    }
    let (answer, parsed) = match (auth, route) {
        (Err((status, text)), _) | (Ok(_), Err((status, text))) => (message(status, &text), None),
        (Ok((user, customer)), Ok(route)) => match route.stream {
            None => {
                let (answer, items, full_load) = post_suppliers(&mock, &customer, &body);
                (answer, Some((items, full_load)))
            }
            Some((connector, stream)) => {
                let answer = delta_op(&mock, route.op, (customer, connector, stream), user, &body);
                (answer, None)
            }
        },
    };
    let (items, full_load) = size(parsed);
    let status = answer.status().as_u16();
    mock.update(at, |r| {
        (r.status, r.items, r.full_load) = (Some(status), items, full_load)
    });
    if drop_after_apply {
        return Err(hang_up("injected drop after apply"));
    }
    Ok(answer)
}

/// Parses and validates the whole batch outside the lock, then applies it under the lock.
fn post_suppliers(mock: &Mock, customer: &str, body: &[u8]) -> (Answer, Option<usize>, Option<bool>) {
    let post: SupplierPost = match schema::parse(body) {
        Ok(p) => p,
        Err(e) => return (message(400, &format!("validation error: {e}")), None, None),
    };
    let (items, full_load) = (Some(post.items.len()), Some(post.full_load));
    if post.items.len() > MAX_ROWS {
        return (
            message(400, &format!("at most {MAX_ROWS} rows per request")),
            items,
            full_load,
        );
    }
    let poison = mock.state.lock().unwrap().faults.poison.clone();
    if let Err(e) = schema::validate(&post.items, &poison) {
        return (message(400, &format!("validation error: {e}")), items, full_load);
    }
    let counts = {
        let mut s = mock.state.lock().unwrap();
        suppliers::apply(s.suppliers.entry(customer.to_owned()).or_default(), post)
    };
    let answer = json!({"message": "Import result", "inserted": counts.inserted,
        "updated": counts.updated, "unchanged": counts.unchanged});
    (ok_json(&answer), items, full_load)
}

fn delta_op(mock: &Mock, op: Op, key: StreamKey, user: &str, body: &[u8]) -> Answer {
    let invalid = |e: String| message(400, &format!("invalid body: {e}"));
    let mut s = mock.state.lock().unwrap();
    let streams = &mut s.streams;
    let result = match op {
        Op::State => Ok(streams.get(&key)),
        Op::Begin => match schema::parse(body) {
            Ok(b) => streams.begin(&key, b, user),
            Err(e) => return invalid(e),
        },
        Op::Complete => match schema::parse(body) {
            Ok(b) => streams.complete(&key, b, user),
            Err(e) => return invalid(e),
        },
        Op::Fail => match schema::parse(body) {
            Ok(b) => streams.fail(&key, b, user),
            Err(e) => return invalid(e),
        },
        Op::Reset => match schema::parse(body) {
            Ok(b) => streams.reset(&key, b, user),
            Err(e) => return invalid(e),
        },
        Op::Supplier | Op::Any => unreachable!("routed to delta_op only for delta-state ops"),
    };
    match result {
        Ok(state) => ok_json(&state),
        Err(r) => refused(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_paths_are_percent_decoded_and_methods_checked() {
        let r = route(&Method::POST, "/api/v1/delta/streams/acme%20eu/sup%2Fpliers/begin").unwrap();
        assert_eq!(
            r,
            Route {
                op: Op::Begin,
                stream: Some(("acme eu".into(), "sup/pliers".into()))
            }
        );
        assert_eq!(route(&Method::GET, "/api/v1/delta/streams/a/b").unwrap().op, Op::State);
        assert_eq!(
            route(&Method::GET, "/api/v1/delta/streams/a/b/begin").unwrap_err().0,
            405
        );
        assert_eq!(route(&Method::GET, "/api/v1/delta/streams/a/").unwrap_err().0, 404);
        assert_eq!(
            route(&Method::POST, "/api/v1/delta/streams/a/b/c/d").unwrap_err().0,
            404
        );
        assert_eq!(route(&Method::GET, "/api/v1/supplier").unwrap_err().0, 405);
    }

    #[test]
    fn a_bad_token_flag_never_echoes_its_value() {
        let err = grant(2, "s3cret-without-colon").err().unwrap().to_string();
        assert!(err.contains("--token #2") && !err.contains("s3cret"), "{err}");
        let g = grant(1, "a:b:10000001,10000002").unwrap();
        assert_eq!((g.token.as_str(), g.customers.len()), ("a:b", 2));
    }
}
