//! `acme-mock`: a small Acme ERP supplier API for tests, the demo and benchmarks.
//!
//! `GET /v2/suppliers?updated_after&page&per_page` with a bearer check serves
//! seeded suppliers; `/_mock/*` lets a test script faults, change data and read
//! back what the API was asked (`/_mock/echo` answers with what a request
//! carried, in a body that is not UTF-8). It binds loopback only.

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use nuntiq_e2e::dataset::Dataset;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Parser)]
#[command(name = "acme-mock", about = "A mock Acme ERP supplier API on 127.0.0.1")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API; prints `listening on http://127.0.0.1:PORT` first.
    Serve {
        /// 0 picks a free port.
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Seeded suppliers.
        #[arg(long, default_value_t = 1200)]
        suppliers: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The bearer token the API accepts.
        #[arg(long, default_value = "test-bearer-token-here")]
        token: String,
        /// Also write the base URL to this file (for scripts).
        #[arg(long)]
        url_file: Option<std::path::PathBuf>,
    },
    /// Change `change` suppliers and insert `insert` new ones on a running mock.
    Mutate {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 3)]
        change: usize,
        #[arg(long, default_value_t = 2)]
        insert: usize,
    },
}

/// A scripted fault, consumed by matching supplier requests in order.
#[derive(Debug, Clone, Deserialize)]
struct FaultRule {
    /// Only requests for this page; any page when absent.
    page: Option<u64>,
    /// How many requests it applies to.
    #[serde(default = "one")]
    times: u32,
    #[serde(flatten)]
    action: Action,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum Action {
    /// Answer with this status (and `Retry-After`, body) instead of the page.
    Status {
        status: u16,
        retry_after: Option<String>,
        body: Option<String>,
    },
    /// Drop the connection without answering.
    Reset,
    /// Wait, then answer normally.
    Delay { delay_ms: u64 },
    /// Answer 200 with a body that is not JSON.
    Malformed,
    /// Answer with a redirect.
    Redirect { location: String, status: Option<u16> },
    /// Answer normally, but with `next_page` written as a string.
    NextPageAsString,
}

struct Mock {
    data: Dataset,
    token: String,
    faults: Vec<FaultRule>,
    requests: Vec<Value>,
    /// `/_mock/blob` requests: now being answered, the most at once, all.
    blobs: BlobStats,
    /// Rendered pages by (updated_after, page, per_page), so the mock is never
    /// the bottleneck of a benchmark; cleared when the data changes.
    pages: HashMap<(Option<DateTime<Utc>>, u64, usize), Bytes>,
}

type Shared = Arc<Mutex<Mock>>;

#[derive(Default, serde::Serialize)]
struct BlobStats {
    now: usize,
    most_at_once: usize,
    total: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            port,
            suppliers,
            seed,
            token,
            url_file,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(serve(port, suppliers, seed, token, url_file))
        }
        Command::Mutate { url, change, insert } => {
            let body = json!({"change": change, "insert": insert});
            let mut response = ureq::post(format!("{}/_mock/mutate", url.trim_end_matches('/'))).send_json(&body)?;
            println!("{}", response.body_mut().read_to_string()?);
            Ok(())
        }
    }
}

async fn serve(
    port: u16,
    suppliers: usize,
    seed: u64,
    token: String,
    url_file: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let mock: Shared = Arc::new(Mutex::new(Mock {
        data: Dataset::seeded(suppliers, seed, Utc::now()),
        token,
        faults: Vec::new(),
        requests: Vec::new(),
        blobs: BlobStats::default(),
        pages: HashMap::new(),
    }));
    if let Some(path) = url_file {
        std::fs::write(path, &url)?;
    }
    println!("listening on {url}");
    std::io::stdout().flush()?;
    loop {
        let (stream, _) = listener.accept().await?;
        let mock = mock.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(mock.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .expect("static response parts")
}

async fn handle(mock: Shared, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let path = req.uri().path().to_owned();
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/v2/suppliers") => suppliers(mock, &req, query).await,
        (Method::GET, "/_mock/blob") => {
            // `bytes` of body after `delay_ms`: a large or a slow answer.
            let n = |k: &str| query.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            {
                let mut m = mock.lock().unwrap();
                m.blobs.now += 1;
                m.blobs.total += 1;
                m.blobs.most_at_once = m.blobs.most_at_once.max(m.blobs.now);
            }
            // Counted out however the wait ends (the client may hang up mid-way).
            struct Out(Shared);
            impl Drop for Out {
                fn drop(&mut self) {
                    self.0.lock().unwrap().blobs.now -= 1;
                }
            }
            let _out = Out(mock.clone());
            tokio::time::sleep(Duration::from_millis(n("delay_ms"))).await;
            Ok(respond(StatusCode::OK, "x".repeat(n("bytes") as usize)))
        }
        (Method::GET, "/_mock/blob_stats") => Ok(respond(StatusCode::OK, json_text(&mock.lock().unwrap().blobs))),
        (Method::GET, "/_mock/echo") => Ok(echo(&req)),
        (Method::GET, "/_mock/requests") => Ok(respond(StatusCode::OK, json_text(&mock.lock().unwrap().requests))),
        (Method::GET, "/_mock/suppliers") => {
            let m = mock.lock().unwrap();
            let rows: Vec<&Value> = m.data.rows.iter().map(|r| &r.json).collect();
            Ok(respond(StatusCode::OK, json_text(&rows)))
        }
        (Method::POST, "/_mock/faults") => {
            let body = read_json(req).await;
            match body.and_then(|v| serde_json::from_value::<Vec<FaultRule>>(v).map_err(|e| e.to_string())) {
                Ok(rules) => {
                    mock.lock().unwrap().faults.extend(rules);
                    Ok(respond(StatusCode::OK, "{}"))
                }
                Err(e) => Ok(respond(StatusCode::BAD_REQUEST, json!({"error": e}).to_string())),
            }
        }
        (Method::POST, "/_mock/touch") => {
            let body = read_json(req).await.unwrap_or(json!({}));
            let (Some(number), Some(Ok(at)), Some(name)) = (
                body["number"].as_str(),
                body["updated_at"].as_str().map(DateTime::parse_from_rfc3339),
                body["name"].as_str(),
            ) else {
                return Ok(respond(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "expected {number, updated_at, name}"}).to_string(),
                ));
            };
            let mut m = mock.lock().unwrap();
            m.pages.clear();
            if m.data.touch(number, at.with_timezone(&Utc), name) {
                Ok(respond(StatusCode::OK, "{}"))
            } else {
                Ok(respond(
                    StatusCode::NOT_FOUND,
                    json!({"error": "no such supplier"}).to_string(),
                ))
            }
        }
        (Method::POST, "/_mock/patch") => {
            let body = read_json(req).await.unwrap_or(json!({}));
            let (Some(number), Some(fields)) = (body["number"].as_str(), body["fields"].as_object()) else {
                return Ok(respond(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "expected {number, fields}"}).to_string(),
                ));
            };
            let mut m = mock.lock().unwrap();
            m.pages.clear();
            if m.data.patch(number, fields) {
                Ok(respond(StatusCode::OK, "{}"))
            } else {
                Ok(respond(
                    StatusCode::NOT_FOUND,
                    json!({"error": "no such supplier"}).to_string(),
                ))
            }
        }
        (Method::POST, "/_mock/mutate") => {
            let body = read_json(req).await.unwrap_or(json!({}));
            let count = |k: &str| body.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
            let mut m = mock.lock().unwrap();
            // Rendered pages show the old data: drop them.
            m.pages.clear();
            let (changed, inserted) = m.data.mutate(count("change"), count("insert"), Utc::now());
            drop(m);
            Ok(respond(
                StatusCode::OK,
                json!({"changed": changed, "inserted": inserted}).to_string(),
            ))
        }
        _ => Ok(respond(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no route for {path}")}).to_string(),
        )),
    }
}

/// What the request carried (its `Authorization` header and raw query)
/// echoed back in a body that is not UTF-8, as a careless API might.
fn echo(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut body = b"\xff\xfe".to_vec();
    body.extend_from_slice(b"authorization: ");
    body.extend_from_slice(req.headers().get("authorization").map_or(&b""[..], |v| v.as_bytes()));
    body.extend_from_slice(b"\nquery: ");
    body.extend_from_slice(req.uri().query().unwrap_or("").as_bytes());
    body.extend_from_slice(b"\n\x80");
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

async fn read_json(req: Request<Incoming>) -> Result<Value, String> {
    use http_body_util::BodyExt;
    let bytes = req.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

async fn suppliers(
    mock: Shared,
    req: &Request<Incoming>,
    query: HashMap<String, String>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let page: u64 = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let authorized = {
        let m = mock.lock().unwrap();
        req.headers().get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {}", m.token))
    };
    let fault = {
        let mut m = mock.lock().unwrap();
        let found = m.faults.iter().position(|f| f.page.is_none_or(|p| p == page));
        found.map(|i| {
            let rule = &mut m.faults[i];
            rule.times = rule.times.saturating_sub(1);
            let action = rule.action.clone();
            if rule.times == 0 {
                m.faults.remove(i);
            }
            action
        })
    };
    let next_page_as_string = matches!(fault, Some(Action::NextPageAsString));
    let log = |status: u16, note: Option<&str>| {
        mock.lock().unwrap().requests.push(json!({
            "path": req.uri().path(),
            "host": req.headers().get("host").and_then(|v| v.to_str().ok()),
            "query": query,
            "authorized": authorized,
            "has_authorization": req.headers().contains_key("authorization"),
            "status": status,
            "fault": note,
        }));
    };
    match fault {
        Some(Action::Status {
            status,
            retry_after,
            body,
        }) => {
            log(status, Some("status"));
            let mut response = respond(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                body.unwrap_or_else(|| json!({"error": "injected fault"}).to_string()),
            );
            if let Some(ra) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", ra.parse().expect("retry-after is a header value"));
            }
            return Ok(response);
        }
        Some(Action::Reset) => {
            log(0, Some("reset"));
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected reset",
            ));
        }
        Some(Action::Malformed) => {
            log(200, Some("malformed"));
            return Ok(respond(StatusCode::OK, "{\"data\": [ this is not json"));
        }
        Some(Action::Redirect { location, status }) => {
            log(status.unwrap_or(302), Some("redirect"));
            let mut response = respond(
                StatusCode::from_u16(status.unwrap_or(302)).unwrap_or(StatusCode::FOUND),
                "",
            );
            response
                .headers_mut()
                .insert("location", location.parse().expect("location is a header value"));
            return Ok(response);
        }
        Some(Action::Delay { delay_ms }) => tokio::time::sleep(Duration::from_millis(delay_ms)).await,
        Some(Action::NextPageAsString) | None => {}
    }
    if !authorized {
        log(401, None);
        return Ok(respond(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid or missing bearer token"}).to_string(),
        ));
    }
    let updated_after = match query.get("updated_after").map(|s| DateTime::parse_from_rfc3339(s)) {
        None => None,
        Some(Ok(t)) => Some(t.with_timezone(&Utc)),
        Some(Err(e)) => {
            log(400, None);
            return Ok(respond(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("updated_after: {e}")}).to_string(),
            ));
        }
    };
    let per_page: usize = query
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(200)
        .clamp(1, 10_000);
    let body = {
        let mut m = mock.lock().unwrap();
        let cache_key = (updated_after, page, per_page);
        match m.pages.get(&cache_key) {
            Some(body) => body.clone(),
            None => {
                let body = render_page(&m.data, updated_after, page, per_page);
                m.pages.insert(cache_key, body.clone());
                body
            }
        }
    };
    if next_page_as_string {
        log(200, Some("next_page_as_string"));
        let mut page: Value = serde_json::from_slice(&body).expect("a rendered page");
        if let Some(n) = page["next_page"].as_u64() {
            page["next_page"] = json!(n.to_string());
        }
        return Ok(respond(StatusCode::OK, page.to_string()));
    }
    log(200, None);
    Ok(respond(StatusCode::OK, body))
}

/// `{"data": [...], "next_page": N|null}` for one page of rows updated after `after`.
fn render_page(data: &Dataset, after: Option<DateTime<Utc>>, page: u64, per_page: usize) -> Bytes {
    let skip = (page.max(1) as usize - 1) * per_page;
    let mut matching = data.updated_after(after).skip(skip);
    let rows: Vec<&Value> = matching.by_ref().take(per_page).map(|r| &r.json).collect();
    let next_page = matching.next().map(|_| page + 1);
    Bytes::from(json!({"data": rows, "next_page": next_page}).to_string())
}
