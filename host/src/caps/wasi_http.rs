//! `wasi:http/outgoing-handler`: a standard HTTP client inside a connector
//! (JavaScript's `fetch`, a Python or Rust wasi-http client) under the same
//! rules as `http`: the allowlist and private-network ban, DNS pinned to the
//! checked addresses (the same client), the job's request budget, the body
//! limit and the timeout. Retries and bearer injection stay in `http`; a
//! redirect is handed to the connector (wasi:http does not follow them), and
//! each hop it follows is a new request, checked again.
//!
//! wasmtime-wasi-http owns the resources (fields, requests, bodies, streams);
//! this module owns only [`OutgoingHooks::send_request`], the one way out.

use super::offline::{Exchange, Recorder, Replay};
use crate::budget::{Charge, RunBudget};
use crate::limits::{LimitHit, Refusals, RequestBudget};
use crate::log::LogSink;
use crate::meter::Counters;
use crate::policy::{Denied, NetworkPolicy, redact_url};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::json;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use url::Url;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpHooks};

/// Largest request body a connector may send (a query, a token request).
pub const MAX_REQUEST_BODY_BYTES: usize = 1 << 20;

/// What one outgoing body may hold in the host before the connector has to
/// wait, and the most header bytes one `fields` may carry: with the resource
/// table's cap below, they bound what a connector can park in host memory.
const OUTGOING_CHUNK_BYTES: usize = 64 << 10;
const FIELDS_BYTES: usize = 16 << 10;

/// Host memory charged for each request a connector sends, from the moment
/// its task is spawned until the guest drops its future and the runtime drops
/// the task: a request the connector drops without yielding still has a task
/// (and its buffers, about 450 bytes measured) until the run's thread yields.
const REQUEST_CHARGE_BYTES: u64 = 1024;

/// Resources (streams, pollables, fields, requests…) a connector may hold at
/// once. An honest connector holds tens; the cap keeps a hostile one from
/// parking a million of them, each with its buffers, in host memory.
pub const MAX_RESOURCES: usize = 1024;

/// The wasi:http context with the host's header limit.
pub fn context() -> WasiHttpCtx {
    let mut ctx = WasiHttpCtx::new();
    ctx.set_field_size_limit(FIELDS_BYTES);
    ctx
}

/// The policy side of `wasi:http`, made by [`super::http::HttpCap::outgoing`].
pub struct OutgoingHooks {
    pub(super) client: reqwest::Client,
    pub(super) policy: Arc<NetworkPolicy>,
    pub(super) requests: Arc<RequestBudget>,
    /// The run's budget: host memory for each request's task and body, and
    /// one of the run's connections for each socket.
    pub(super) budget: Arc<RunBudget>,
    pub(super) max_body_bytes: u64,
    pub(super) timeout: Duration,
    pub(super) refusals: Refusals,
    pub(super) counters: Arc<Counters>,
    pub(super) log: Arc<LogSink>,
    /// Replaying a cassette: answers come from it, never from the network.
    pub(super) replay: Option<Arc<Mutex<Replay>>>,
    /// Recording one: every exchange is kept (its body read in full first).
    pub(super) record: Option<Arc<Recorder>>,
}

type Sent = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

impl OutgoingHooks {
    /// Checks a request before anything leaves the host: the URL against the
    /// policy, then the budget. `Err` is what the connector sees.
    fn admit(&self, method: &http::Method, url: &str) -> Result<Url, Error> {
        let refuse = |kind: &'static str, error: Error, message: String| {
            self.log.caused(
                crate::log::Level::Warn,
                &format!("wasi:http {method} refused: {message}"),
                Some("http"),
                Some(json!({"kind": kind})),
            );
            self.refusals.refused(LimitHit { kind, message });
            error
        };
        let url = Url::parse(url).map_err(|_| Error::HttpRequestUriInvalid)?;
        if let Err(Denied(why)) = self.policy.check_url(&url) {
            return Err(refuse("network_denied", Error::HttpRequestDenied, why));
        }
        if let Err(why) = self.requests.take() {
            return Err(refuse("request_budget", Error::ConnectionLimitReached, why));
        }
        self.counters.http_requests.fetch_add(1, Ordering::Relaxed);
        Ok(url)
    }

    /// A replayed run's answer: the cassette's, or a refusal that names what
    /// it lacks (a replay never reaches the network).
    fn replayed(&self, replay: &Mutex<Replay>, method: &http::Method, url: &Url, mut charge: Charge) -> Sent {
        let answer = replay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .answer(method.as_str(), url, self.log.redactor());
        match answer {
            Ok(exchange) => {
                // A replayed body is held by the host like a live one: the same limit, the same charge.
                let size = exchange.body.len() as u64;
                if size > self.max_body_bytes {
                    self.log.caused(
                        crate::log::Level::Warn,
                        &format!(
                            "wasi:http {method} {}: the recorded response body ({size} bytes) is past the host's \
                             limit of {} (--max-response-body)",
                            redact_url(url),
                            self.max_body_bytes
                        ),
                        Some("http"),
                        None,
                    );
                    return Err(Error::HttpResponseBodySize(Some(self.max_body_bytes)));
                }
                charge
                    .grow(size, "replayed wasi:http bodies")
                    .map_err(|_| Error::InternalError(None))?;
                self.counters.http_bytes_in.fetch_add(size, Ordering::Relaxed);
                Ok((charged(respond(exchange)?, charge, None), Box::new(async { Ok(()) })))
            }
            Err(message) => {
                self.log.caused(
                    crate::log::Level::Warn,
                    &format!("wasi:http {method} refused: {message}"),
                    Some("http"),
                    Some(json!({"kind": "replay_miss"})),
                );
                self.refusals.refused(LimitHit {
                    kind: "replay_miss",
                    message,
                });
                Err(Error::HttpRequestDenied)
            }
        }
    }
}

/// Headers about the original connection's framing, not the body handed over.
const FRAMING: [&str; 4] = ["content-length", "transfer-encoding", "connection", "keep-alive"];

/// A response whose body is all there (replayed, or read in full to record).
fn respond(exchange: Exchange) -> Result<http::Response<WasiBody>, Error> {
    let mut response = http::Response::builder().status(exchange.status);
    // Framing is the body's own now (a recorded body may have been redacted).
    for (name, value) in exchange
        .headers
        .iter()
        .filter(|(name, _)| !FRAMING.contains(&name.to_ascii_lowercase().as_str()))
    {
        response = response.header(name.as_str(), value.as_str());
    }
    let body = Full::new(Bytes::from(exchange.body))
        .map_err(|never| match never {})
        .boxed_unsync();
    response.body(body).map_err(|_| Error::HttpProtocolError)
}

impl WasiHttpHooks for OutgoingHooks {
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        OUTGOING_CHUNK_BYTES
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _io: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        // Charged before anything else: the task wasmtime spawns for this
        // request lives until the guest drops it and the runtime gets to it.
        let charge = match self.budget.hold(
            crate::budget::Resource::HostMemory,
            REQUEST_CHARGE_BYTES,
            "wasi:http requests",
        ) {
            Ok(charge) => charge,
            Err(exceeded) => {
                self.refusals.refused(LimitHit {
                    kind: "limit",
                    message: exceeded.to_string(),
                });
                return Box::new(async {
                    Err(Error::InternalError(Some(
                        "the run's host memory budget is spent".into(),
                    )))
                });
            }
        };
        let url = match self.admit(request.method(), &request.uri().to_string()) {
            Ok(url) => url,
            Err(e) => {
                return Box::new(async move {
                    drop(charge);
                    Err(e)
                });
            }
        };
        if let Some(replay) = &self.replay {
            let answer = self.replayed(replay, request.method(), &url, charge);
            return Box::new(async move { answer });
        }
        // The connector may ask for shorter waits, never longer ones.
        let first_byte = options
            .and_then(|o| o.first_byte_timeout)
            .map_or(self.timeout, |t| t.min(self.timeout));
        let forward = Forward {
            client: self.client.clone(),
            refusals: self.refusals.clone(),
            budget: self.budget.clone(),
            charge,
            max_body_bytes: self.max_body_bytes,
            timeout: self.timeout,
            first_byte,
            counters: self.counters.clone(),
            log: self.log.clone(),
            record: self.record.clone(),
        };
        // The host only, never the path, query or headers: a secret may ride in those.
        let span = tracing::info_span!(
            "http",
            method = request.method().as_str(),
            host = self.log.redactor().clean(url.host_str().unwrap_or("-"), 256),
            status = tracing::field::Empty
        );
        Box::new(crate::log::in_span(span, forward.send(request, url)))
    }
}

/// One admitted request on its way out, run on the runtime while the
/// connector polls.
struct Forward {
    client: reqwest::Client,
    refusals: Refusals,
    budget: Arc<RunBudget>,
    /// This request's share of the run's host memory, handed on to its response body.
    charge: Charge,
    max_body_bytes: u64,
    timeout: Duration,
    first_byte: Duration,
    counters: Arc<Counters>,
    log: Arc<LogSink>,
    record: Option<Arc<Recorder>>,
}

impl Forward {
    async fn send(mut self, request: http::Request<WasiBody>, url: Url) -> Sent {
        let (parts, body) = request.into_parts();
        let body = Limited::new(body, MAX_REQUEST_BODY_BYTES)
            .collect()
            .await
            .map_err(|_| Error::HttpRequestBodySize(Some(MAX_REQUEST_BODY_BYTES as u64)))?
            .to_bytes();
        self.charge
            .grow(body.len() as u64, "wasi:http request bodies")
            .map_err(|_| Error::InternalError(None))?;
        let mut headers = parts.headers;
        // reqwest sets Host from the URL; the connector's copy goes.
        headers.remove(http::header::HOST);
        // The socket is the run's until the response body ends or is dropped.
        let Some(connection) = self.budget.connection(self.first_byte).await else {
            self.log.caused(
                crate::log::Level::Warn,
                &format!(
                    "wasi:http {} {}: waited {} for one of the run's {} connections (--max-connections), \
                     held by its other requests; drop or finish responses to free them",
                    parts.method,
                    redact_url(&url),
                    humantime::format_duration(self.first_byte),
                    self.budget.limits().max_connections
                ),
                Some("http"),
                None,
            );
            return Err(Error::ConnectionLimitReached);
        };
        let sent = self
            .client
            .request(parts.method.clone(), url.clone())
            .headers(headers)
            .body(body)
            .timeout(self.timeout)
            .send();
        let response = match tokio::time::timeout(self.first_byte, sent).await {
            Err(_) => return Err(Error::HttpResponseTimeout),
            Ok(Err(e)) => return Err(self.send_error(&parts.method, &url, e)),
            Ok(Ok(r)) => r,
        };
        tracing::Span::current().record("status", response.status().as_u16());
        let max = self.max_body_bytes;
        if response.content_length().is_some_and(|n| n > max) {
            self.log.caused(
                crate::log::Level::Warn,
                &format!(
                    "wasi:http {} {}: the response body ({} bytes) is past the host's limit of {max} (--max-response-body)",
                    parts.method,
                    redact_url(&url),
                    response.content_length().unwrap_or(0)
                ),
                Some("http"),
                None,
            );
            return Err(Error::HttpResponseBodySize(Some(max)));
        }
        if let Some(recorder) = self.record.clone() {
            return self.recorded(&recorder, &parts.method, &url, response).await;
        }
        let counters = self.counters.clone();
        let response: http::Response<reqwest::Body> = response.into();
        let response = response.map(move |body| {
            Limited::new(body, max as usize)
                .map_frame(move |frame| {
                    if let Some(data) = frame.data_ref() {
                        counters.http_bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    frame
                })
                .map_err(move |e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        Error::HttpResponseBodySize(Some(max))
                    } else if e.downcast_ref::<reqwest::Error>().is_some_and(|e| e.is_timeout()) {
                        Error::ConnectionReadTimeout
                    } else {
                        Error::HttpProtocolError
                    }
                })
                .boxed_unsync()
        });
        Ok((
            charged(response, self.charge, Some(connection)),
            Box::new(async { Ok(()) }),
        ))
    }

    /// Reads the whole body (within the limit), records the exchange and
    /// hands the connector the same bytes.
    async fn recorded(
        mut self,
        recorder: &Recorder,
        method: &http::Method,
        url: &Url,
        response: reqwest::Response,
    ) -> Sent {
        let status = response.status().as_u16();
        let headers = Exchange::header_pairs(response.headers());
        let _reading = recorder.reading.acquire().await.map_err(|_| Error::HttpProtocolError)?;
        let response: http::Response<reqwest::Body> = response.into();
        let body = Limited::new(response.into_body(), self.max_body_bytes as usize)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Error::HttpResponseBodySize(Some(self.max_body_bytes))
                } else {
                    Error::HttpProtocolError
                }
            })?
            .to_bytes();
        self.counters
            .http_bytes_in
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        self.charge
            .grow(body.len() as u64, "recorded wasi:http bodies")
            .map_err(|_| Error::InternalError(None))?;
        let exchange = Exchange {
            status,
            headers,
            body: body.to_vec(),
        };
        recorder.record(method.as_str(), url, &exchange, self.log.redactor());
        Ok((
            charged(respond(exchange)?, self.charge, None),
            Box::new(async { Ok(()) }),
        ))
    }

    /// The connector's error code; the log says what happened.
    fn send_error(&self, method: &http::Method, url: &Url, e: reqwest::Error) -> Error {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if let Some(Denied(why)) = err.downcast_ref::<Denied>() {
                self.log.caused(
                    crate::log::Level::Warn,
                    &format!("wasi:http {method} {} refused: {why}", redact_url(url)),
                    Some("http"),
                    Some(json!({"kind": "network_denied"})),
                );
                return Error::DestinationIpProhibited;
            }
            source = err.source();
        }
        if crate::limits::out_of_descriptors(&e) {
            let message = format!(
                "wasi:http {method} {}: the host has no file descriptor to spare; this is the host's shortage, \
                 not the server's",
                redact_url(url)
            );
            self.log.warn(&message, Some("http"), None);
            self.refusals.refused(LimitHit {
                kind: "host_overloaded",
                message,
            });
            return Error::ConnectionRefused;
        }
        if e.is_timeout() {
            Error::ConnectionTimeout
        } else if e.is_connect() {
            Error::ConnectionRefused
        } else {
            Error::HttpProtocolError
        }
    }
}

/// A response whose body keeps the request's charge (and its connection, if
/// it has a socket) until the connector has read it to the end or dropped it.
fn charged(
    response: http::Response<WasiBody>,
    charge: Charge,
    connection: Option<OwnedSemaphorePermit>,
) -> http::Response<WasiBody> {
    response.map(|body| {
        ChargedBody {
            body,
            _held: (charge, connection),
        }
        .boxed_unsync()
    })
}

/// A body holding what the run was charged for it; dropped with it.
struct ChargedBody {
    body: WasiBody,
    _held: (Charge, Option<OwnedSemaphorePermit>),
}

impl http_body::Body for ChargedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
