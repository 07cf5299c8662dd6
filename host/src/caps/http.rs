//! `http`: GET with the platform's retry policy, behind the network policy.
//!
//! Retry is two small pieces: [`classify`] sorts an attempt's outcome into
//! retry or give up, and [`RetryPolicy::delay_after`] is the backoff schedule
//! (tenacity's `wait_exponential`), which a `Retry-After` header can lengthen.

use super::RunCtx;
use super::offline::{Exchange, Fixtures, Recorder, Replay};
use crate::bindings::http::{self, HttpError, Request, Response, RetriesExhausted};
use crate::budget::{Charge, Exceeded, RunBudget};
use crate::limits::{LimitHit, Refusals, RequestBudget};
use crate::log::LogSink;
use crate::meter::{Counters, Section};
use crate::policy::{AllowedHost, Denied, NetworkPolicy, redact_url};
use crate::settings::Settings;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use std::time::{Duration, SystemTime};
use url::Url;
use wasmtime::component::Resource;

/// A retry policy with the host's limits applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff_multiplier: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub timeout: Duration,
    pub retry_statuses: Vec<u16>,
}

impl Default for RetryPolicy {
    /// The seed connector's tenacity policy: 5 attempts, exponential backoff
    /// (multiplier 1 s, min 2 s, max 30 s), 30 s per request, retry 429/5xx.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff_multiplier: Duration::from_secs(1),
            backoff_min: Duration::from_secs(2),
            backoff_max: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            retry_statuses: vec![429, 500, 502, 503, 504],
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based): multiplier × 2^(attempt−1),
    /// kept within [min, max].
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exp = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.backoff_multiplier
            .saturating_mul(exp)
            .min(self.backoff_max)
            .max(self.backoff_min)
    }
}

/// Host limits: a guest's policy is clamped to them, and they bound every request.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Used when the guest passes no policy.
    pub default_policy: RetryPolicy,
    pub max_attempts: u32,
    pub max_timeout: Duration,
    pub max_backoff: Duration,
    /// Shortest wait between attempts, whatever a policy or `Retry-After: 0` says.
    pub min_backoff: Duration,
    /// A `Retry-After` longer than this ends the retries instead of waiting.
    pub max_retry_after: Duration,
    /// Response bodies beyond this fail with `body-too-large`.
    pub max_body_bytes: u64,
    pub max_redirects: u32,
    /// Requests (attempts and redirect hops) per job.
    pub max_requests: u64,
    /// Origins besides `config.api_url`'s to which a `bearer-secret` may be sent
    /// (`--bearer-host`); the api_url origin is always one.
    pub bearer_hosts: Vec<AllowedHost>,
}

/// Most query parameters and headers one request may carry, and its longest URL.
const MAX_QUERY_PAIRS: usize = 256;
const MAX_HEADERS: usize = 64;
const MAX_URL_BYTES: usize = 16 * 1024;

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            default_policy: RetryPolicy::default(),
            max_attempts: 10,
            max_timeout: Duration::from_secs(120),
            max_backoff: Duration::from_secs(60),
            min_backoff: Duration::from_millis(100),
            max_retry_after: Duration::from_secs(60),
            max_body_bytes: 64 * 1024 * 1024,
            max_redirects: 5,
            max_requests: 10_000,
            bearer_hosts: Vec::new(),
        }
    }
}

impl HttpConfig {
    /// The wait after failed attempt `attempt`: the backoff schedule, lengthened
    /// by a `Retry-After` — never shorter than the host's floor, so
    /// `Retry-After: 0` cannot make a hot loop. A `Retry-After` past the host's
    /// cap ends the retries (`Err` says why).
    pub fn wait_before_retry(
        &self,
        policy: &RetryPolicy,
        attempt: u32,
        retry_after: Option<Duration>,
    ) -> Result<Duration, String> {
        let backoff = policy.delay_after(attempt).max(self.min_backoff);
        match retry_after {
            Some(wanted) if wanted > self.max_retry_after => Err(format!(
                "the server asked to retry after {} s, beyond the host's {} s limit",
                wanted.as_secs(),
                self.max_retry_after.as_secs()
            )),
            Some(wanted) => Ok(backoff.max(wanted)),
            None => Ok(backoff),
        }
    }

    /// Applies the host's limits to a guest's policy.
    pub fn clamp(&self, p: http::RetryPolicy) -> RetryPolicy {
        let ms = |v: u32| Duration::from_millis(v.into());
        let backoff_min = ms(p.backoff_min_ms).clamp(self.min_backoff, self.max_backoff);
        RetryPolicy {
            max_attempts: p.max_attempts.clamp(1, self.max_attempts),
            backoff_multiplier: ms(p.backoff_multiplier_ms).min(self.max_backoff),
            backoff_min,
            backoff_max: ms(p.backoff_max_ms).clamp(backoff_min, self.max_backoff),
            timeout: ms(p.timeout_ms).clamp(Duration::from_millis(1), self.max_timeout),
            retry_statuses: p
                .retry_statuses
                .into_iter()
                .filter(|s| (400..600).contains(s))
                .take(32)
                .collect(),
        }
    }
}

/// What one attempt came to.
#[derive(Debug)]
enum Attempt {
    Done(Response),
    /// A status the policy retries, with its `Retry-After`, if any.
    RetryableStatus(Response, Option<Duration>),
    Timeout(String),
    Connection(String),
    /// Ends the request at once: a bad redirect, a status not retried.
    Fatal(HttpError),
    /// Ends the request at once because a host limit refused it (the envelope's kind).
    Limit(&'static str, HttpError),
    /// The bodies the run holds together would pass the body limit.
    HeldTooMuch,
    /// The run's budget ran out (the run is being stopped).
    Budget(Exceeded),
}

fn held_too_much(url: &Url, limit: u64) -> String {
    format!(
        "the response from {} would take the bodies this run holds at once (pending requests' \
         included) past the limit of {limit} bytes (--max-response-body); finish or drop pending \
         requests before starting more",
        redact_url(url)
    )
}

/// Retry or give up: transient statuses, timeouts and connection errors retry.
fn classify(status: u16, policy: &RetryPolicy) -> bool {
    policy.retry_statuses.contains(&status)
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Resolves host names and keeps only the addresses the policy allows, so the
/// connection goes to an address that was checked (no second lookup to rebind).
struct PolicyResolver {
    policy: Arc<NetworkPolicy>,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = allowed_addresses(&policy, &host, &resolved)?;
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The resolved addresses the connector may connect to: all of them for a name
/// the operator named, only public ones otherwise.
fn allowed_addresses(policy: &NetworkPolicy, host: &str, resolved: &[SocketAddr]) -> Result<Vec<SocketAddr>, Denied> {
    let trusted = policy.name_trusted(host);
    let allowed: Vec<SocketAddr> = resolved
        .iter()
        .copied()
        .filter(|a| trusted || policy.address_allowed(a.ip()))
        .collect();
    if allowed.is_empty() {
        let addrs: Vec<String> = resolved.iter().map(|a| a.ip().to_string()).collect();
        return Err(Denied(format!(
            "{host} resolves only to private, loopback or link-local addresses ({}); \
             an operator can allow it with --allow-host {host}",
            addrs.join(", ")
        )));
    }
    Ok(allowed)
}

/// Idle pooled connections a run keeps per host.
const MAX_IDLE_CONNECTIONS_PER_HOST: usize = 4;

/// Builds the job's client: no proxies (they would bypass the address checks),
/// no automatic redirects (each hop is checked here), DNS through the policy.
pub fn build_client(policy: Arc<NetworkPolicy>) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .dns_resolver(Arc::new(PolicyResolver { policy }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        // Idle sockets are descriptors too: a few per host, beside the
        // run's --max-connections in use.
        .pool_max_idle_per_host(MAX_IDLE_CONNECTIONS_PER_HOST)
        .user_agent(concat!("nuntiq-host/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// The `http` capability of one run: its requests (sent on the host's HTTP
/// threads, see [`io`]) and the ones the connector started and has not finished.
pub struct HttpCap {
    fetcher: Arc<Fetcher>,
    refusals: Refusals,
    pending: HashMap<u32, InFlight>,
    next_pending: u32,
}

/// Everything a request needs, shared with the ones running in the background.
struct Fetcher {
    client: reqwest::Client,
    policy: Arc<NetworkPolicy>,
    settings: Arc<Settings>,
    config: HttpConfig,
    log: Arc<LogSink>,
    requests: Arc<RequestBudget>,
    offline: Offline,
    counters: Arc<Counters>,
    /// Bytes of response bodies the run holds: being read, or read and not
    /// yet handed to the connector. Background requests share
    /// `--max-response-body` through it, so pending requests cannot make the
    /// host buffer more than one response's worth.
    held: Arc<AtomicU64>,
    /// The run's budget: every body is host memory of the run, and every
    /// request takes one of its connections.
    budget: Arc<RunBudget>,
}

/// A share of [`Fetcher::held`] and of the run's host memory, given back when dropped.
struct Hold {
    held: Arc<AtomicU64>,
    bytes: u64,
    charge: Charge,
}

impl Hold {
    fn new(held: &Arc<AtomicU64>, budget: &Arc<RunBudget>) -> Self {
        Self {
            held: held.clone(),
            bytes: 0,
            charge: budget.empty(),
        }
    }

    /// Takes `n` more bytes, unless the run would then hold more than `limit`
    /// (`HeldTooMuch`, the connector's to handle) or its budget ran out (the
    /// run is stopped). A compare-and-swap, so two requests growing at once
    /// are refused only when both together would not fit.
    fn grow(&mut self, n: u64, limit: u64) -> Result<(), Attempt> {
        let taken = self.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            held.checked_add(n).filter(|&total| total <= limit)
        });
        if taken.is_err() {
            return Err(Attempt::HeldTooMuch);
        }
        self.bytes += n;
        self.charge.grow(n, "HTTP response bodies").map_err(Attempt::Budget)
    }

    /// Keeps at most `n` bytes of this share and gives the rest back.
    fn shrink_to(&mut self, n: u64) {
        let back = self.bytes.saturating_sub(n);
        self.held.fetch_sub(back, Ordering::AcqRel);
        self.bytes -= back;
        self.charge.shrink_to(n);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// What a request's task hands back: its outcome and the body bytes it holds.
struct Finished {
    outcome: Result<Response, SendError>,
    _hold: Hold,
}

/// A `pending-response` handle's host side: its key in [`HttpCap::pending`].
pub struct PendingGet;

/// Requests one run may have started and not finished. Their bodies share the
/// body limit ([`Fetcher::held`]), so starting more buys no more host memory.
pub const MAX_PENDING: usize = 4;

/// The host's HTTP runtime: a couple of threads of its own, so a request (a
/// prefetched page above all) makes progress while the connector computes;
/// a run's own runtime is single-threaded and busy in wasm then. Every
/// `http` request runs here. (`wasi:http` requests share the run's client but
/// run on the run's own runtime: a connection one of them opened and pooled
/// is driven there, so an `http` request reusing it waits for that thread.)
fn io() -> Result<&'static tokio::runtime::Runtime, String> {
    static IO: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    IO.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("nuntiq-http")
            .enable_all()
            .build()
            .map_err(|e| format!("the host could not start its HTTP threads: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// A request running on [`io`]; dropping it cancels the request.
struct InFlight(tokio::task::JoinHandle<Finished>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where answers come from besides the network (see `caps::offline`).
#[derive(Default)]
pub struct Offline {
    pub fixtures: Option<Fixtures>,
    /// Shared with `wasi:http`, which answers from the same cassette.
    pub replay: Option<Arc<std::sync::Mutex<Replay>>>,
    pub record: Option<Arc<Recorder>>,
}

/// Headers a connector may not set: the host owns framing and routing.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

impl HttpCap {
    pub fn new(
        client: reqwest::Client,
        policy: Arc<NetworkPolicy>,
        settings: Arc<Settings>,
        config: HttpConfig,
        offline: Offline,
        ctx: &RunCtx,
    ) -> Self {
        let max_requests = config.max_requests;
        Self {
            fetcher: Arc::new(Fetcher {
                client,
                policy,
                settings,
                config,
                log: ctx.log.clone(),
                requests: Arc::new(RequestBudget::new(max_requests)),
                offline,
                counters: ctx.counters.clone(),
                held: Arc::default(),
                budget: ctx.budget.clone(),
            }),
            refusals: ctx.refusals.clone(),
            pending: HashMap::new(),
            next_pending: 0,
        }
    }

    /// `wasi:http`'s side of this capability: the same client (DNS pinned
    /// through the policy), policy, budget and limits.
    pub fn outgoing(&self) -> super::wasi_http::OutgoingHooks {
        self.fetcher.outgoing(self.refusals.clone())
    }

    /// Checks the request and sends it on the HTTP runtime. A request that is
    /// malformed or refused up front fails here, the rest when awaited.
    fn start(&mut self, request: &Request, policy: Option<http::RetryPolicy>) -> Result<InFlight, HttpError> {
        let fetcher = &self.fetcher;
        let policy = policy.map_or_else(|| fetcher.config.default_policy.clone(), |p| fetcher.config.clamp(p));
        let (url, headers) = match fetcher.prepare(request) {
            Ok(prepared) => prepared,
            Err((kind, e)) => {
                self.settle(kind.zip(match &e {
                    HttpError::Denied(message) => Some(message.clone()),
                    _ => None,
                }));
                return Err(e);
            }
        };
        // Refused here, not in the background: a connector that starts a
        // request to a denied host and drops it still has the refusal named.
        // (Each redirect hop and each resolved address is checked again.)
        if url.scheme() != "file"
            && let Err(Denied(why)) = fetcher.policy.check_url(&url)
        {
            self.settle(Some(("network_denied", why.clone())));
            return Err(HttpError::Denied(why));
        }
        let io = match io() {
            Ok(io) => io,
            Err(why) => {
                self.settle(Some(("host_overloaded", why.clone())));
                return Err(HttpError::Connection(why));
            }
        };
        let fetcher = fetcher.clone();
        let timeout_ms = request.timeout_ms;
        Ok(InFlight(
            // On the shared HTTP threads, still the run's: in its span, its
            // registry the default (its spans and library events go to its log).
            io.spawn(tracing::instrument::WithSubscriber::with_current_subscriber(crate::log::in_span(
                tracing::Span::current(),
                fetcher.send_and_hold(url, headers, policy, timeout_ms),
            ))),
        ))
    }

    /// Waits for a started request; the wait is the connector's HTTP time.
    async fn outcome(&mut self, in_flight: InFlight) -> wasmtime::Result<Result<Response, HttpError>> {
        let started = Instant::now();
        let mut in_flight = in_flight;
        let Finished { outcome, _hold } = (&mut in_flight.0)
            .await
            .map_err(|e| wasmtime::Error::msg(format!("the host's HTTP task failed: {e}")))?;
        self.fetcher.counters.add(Section::Http, started);
        match &outcome {
            Err(SendError::Limit(hit, _)) => self.refusals.refused(hit.clone()),
            _ => self.refusals.answered(),
        }
        Ok(outcome.map_err(SendError::into_http))
    }

    /// Cancels the requests the connector started and never finished nor
    /// dropped (it returned, trapped, was stopped, or forgot its handles):
    /// they carry its credentials and must not outlive its `run`.
    pub fn cancel_pending(&mut self) {
        self.pending.clear();
    }

    /// Records how a call ended for the envelope: a host limit by its kind, or answered.
    fn settle(&self, limit: Option<(&'static str, String)>) {
        match limit {
            Some((kind, message)) => self.refusals.refused(LimitHit { kind, message }),
            None => self.refusals.answered(),
        }
    }
}

impl Fetcher {
    fn outgoing(&self, refusals: Refusals) -> super::wasi_http::OutgoingHooks {
        super::wasi_http::OutgoingHooks {
            client: self.client.clone(),
            policy: self.policy.clone(),
            requests: self.requests.clone(),
            budget: self.budget.clone(),
            max_body_bytes: self.config.max_body_bytes,
            timeout: self.config.max_timeout,
            refusals,
            counters: self.counters.clone(),
            log: self.log.clone(),
            replay: self.offline.replay.clone(),
            record: self.offline.record.clone(),
        }
    }

    /// Whether a bearer secret may go to `url`: the api_url origin, or one the
    /// operator named with `--bearer-host`.
    fn bearer_allowed(&self, url: &Url) -> bool {
        AllowedHost::origin_of(&self.settings.api_url).is_some_and(|api| api.matches_url(url))
            || self.config.bearer_hosts.iter().any(|h| h.matches_url(url))
    }

    /// Checks the request and turns it into a URL and headers. `Err` with a
    /// kind is a host limit the envelope should name if the connector gives up.
    fn prepare(&self, request: &Request) -> Result<(Url, HeaderMap), (Option<&'static str>, HttpError)> {
        let invalid = |m: String| (None, HttpError::InvalidRequest(m));
        if request.query.len() > MAX_QUERY_PAIRS || request.headers.len() > MAX_HEADERS {
            return Err(invalid(format!(
                "a request carries at most {MAX_QUERY_PAIRS} query parameters and {MAX_HEADERS} headers \
                 (this one {} and {})",
                request.query.len(),
                request.headers.len()
            )));
        }
        let query_bytes: usize = request.query.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        if request.url.len() + query_bytes > MAX_URL_BYTES {
            return Err(invalid(format!(
                "the URL with its query would be {} bytes; at most {MAX_URL_BYTES} are allowed",
                request.url.len() + query_bytes
            )));
        }
        let mut url = Url::parse(&request.url).map_err(|e| {
            invalid(format!(
                "{:?} is not an absolute URL ({e})",
                crate::log::sanitize(&request.url, 512)
            ))
        })?;
        if !request.query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(request.query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("{name:?} is not a valid header name")))?;
            if FORBIDDEN_HEADERS.contains(&header.as_str()) {
                return Err(invalid(format!(
                    "the {header} header is set by the host, not the connector"
                )));
            }
            if header == reqwest::header::AUTHORIZATION && request.bearer_secret.is_some() {
                return Err(invalid(
                    "authorization cannot be set together with bearer-secret".into(),
                ));
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| invalid(format!("the value of header {name:?} is not valid")))?;
            headers.append(header, value);
        }
        if let Some(name) = &request.bearer_secret
            && url.scheme() == "file"
        {
            // A fixture never sees the token; the name must still be a secret.
            if !self.settings.secrets.contains_key(name) {
                return Err(invalid(format!(
                    "bearer-secret {name:?} is not in settings.json's secrets"
                )));
            }
        } else if let Some(name) = &request.bearer_secret {
            if !self.bearer_allowed(&url) {
                let origin = AllowedHost::origin_of(&url).map_or_else(|| redact_url(&url), |o| o.to_string());
                return Err((
                    Some("secret_denied"),
                    HttpError::Denied(format!(
                        "bearer-secret {name:?} is sent only to config.api_url's origin, not to {origin}; \
                         an operator can allow that origin with --bearer-host {origin}"
                    )),
                ));
            }
            let token = self
                .settings
                .secrets
                .get(name)
                .and_then(|v| v.as_str())
                .ok_or_else(|| invalid(format!("bearer-secret {name:?} is not in settings.json's secrets")))?;
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| invalid(format!("secret {name:?} cannot be sent in a header")))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok((url, headers))
    }

    /// One attempt: the request and any redirects, each hop checked by the
    /// policy (a `file://` hop is answered by the fixtures instead).
    async fn attempt(
        &self,
        mut url: Url,
        headers: &HeaderMap,
        policy: &RetryPolicy,
        attempt: u32,
        hold: &mut Hold,
    ) -> Attempt {
        let mut headers = headers.clone();
        let origin = url.origin();
        for hop in 0..=self.config.max_redirects {
            if url.scheme() != "file"
                && let Err(Denied(why)) = self.policy.check_url(&url)
            {
                return Attempt::Limit("network_denied", HttpError::Denied(why));
            }
            if let Err(why) = self.requests.take() {
                return Attempt::Limit("request_budget", HttpError::Denied(why));
            }
            self.counters.http_requests.fetch_add(1, Ordering::Relaxed);
            // The host only, never the path, query or headers: a secret may ride in those.
            let span = crate::log::OwnedSpan::new(tracing::info_span!(
                "http",
                method = "GET",
                host = self.log.redactor().clean(url.host_str().unwrap_or("-"), 256),
                attempt,
                status = tracing::field::Empty
            ));
            let fetched = crate::log::in_span((*span).clone(), self.fetch(&url, &headers, policy.timeout, hold));
            let exchange = match fetched.await {
                Ok(exchange) => exchange,
                Err(a) => return a,
            };
            span.record("status", exchange.status);
            let header = |name: &str| {
                exchange
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
            };
            if (300..400).contains(&exchange.status)
                && let Some(location) = header("location")
            {
                let Some(next) = url.join(location).ok() else {
                    return Attempt::Fatal(HttpError::InvalidRequest(format!(
                        "{} redirected to an unusable Location",
                        redact_url(&url)
                    )));
                };
                if hop == self.config.max_redirects {
                    break;
                }
                // Credentials never follow a redirect to another origin.
                if next.origin() != origin {
                    headers.remove(reqwest::header::AUTHORIZATION);
                }
                url = next;
                continue;
            }
            let retry_after = header("retry-after").and_then(|v| parse_retry_after(v, self.offline.now()));
            let status = exchange.status;
            let response = Response {
                status,
                headers: exchange.headers,
                body: exchange.body,
                attempts: attempt,
                url: url.to_string(),
            };
            return if (200..300).contains(&status) {
                Attempt::Done(response)
            } else if classify(status, policy) {
                Attempt::RetryableStatus(response, retry_after)
            } else {
                Attempt::Fatal(HttpError::Status(response))
            };
        }
        Attempt::Limit(
            "too_many_redirects",
            HttpError::InvalidRequest(format!(
                "{} redirected more than {} times; the host follows at most {}",
                redact_url(&url),
                self.config.max_redirects,
                self.config.max_redirects
            )),
        )
    }

    /// One hop's answer: from the cassette when replaying, from the fixtures
    /// for `file://`, else from the network (and recorded when recording).
    /// Its body is counted in `hold`, the request's share of the run's body
    /// limit; a request holds one body at a time, so an earlier hop's or
    /// attempt's share is given back first.
    async fn fetch(
        &self,
        url: &Url,
        headers: &HeaderMap,
        timeout: Duration,
        hold: &mut Hold,
    ) -> Result<Exchange, Attempt> {
        hold.shrink_to(0);
        let limit = self.config.max_body_bytes;
        let too_large = || Attempt::Limit("body_too_large", HttpError::BodyTooLarge(limit));
        let offline = if let Some(replay) = &self.offline.replay {
            let answer = replay
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .answer("GET", url, self.log.redactor());
            Some(answer.map_err(|m| Attempt::Limit("replay_miss", HttpError::InvalidRequest(m)))?)
        } else if url.scheme() == "file" {
            match &self.offline.fixtures {
                Some(fixtures) => Some(fixtures.answer(url)),
                None => {
                    return Err(Attempt::Fatal(HttpError::InvalidRequest(format!(
                        "{url}: file:// URLs are answered from fixtures only; pass --fixtures DIR"
                    ))));
                }
            }
        } else {
            None
        };
        if let Some(exchange) = offline {
            return if exchange.body.len() as u64 > limit {
                Err(too_large())
            } else {
                hold.grow(exchange.body.len() as u64, limit).map(|()| exchange)
            };
        }
        // The socket is the run's until the body is read: one of its connections.
        let Some(_connection) = self.budget.connection(timeout).await else {
            return Err(Attempt::Timeout(format!(
                "GET {} waited {} for one of the run's {} connections (--max-connections), held by its other requests",
                redact_url(url),
                humantime::format_duration(timeout),
                self.budget.limits().max_connections
            )));
        };
        let sent = self
            .client
            .get(url.clone())
            .headers(headers.clone())
            .timeout(timeout)
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => return Err(self.send_error(url, e)),
        };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let status = response.status().as_u16();
        let headers = Exchange::header_pairs(response.headers());
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() as u64 + chunk.len() as u64 > limit {
                        return Err(too_large());
                    }
                    hold.grow(chunk.len() as u64, limit)?;
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(self.send_error(url, e)),
            }
        }
        self.counters
            .http_bytes_in
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        let exchange = Exchange { status, headers, body };
        if let Some(recorder) = &self.offline.record {
            recorder.record("GET", url, &exchange, self.log.redactor());
        }
        Ok(exchange)
    }

    fn send_error(&self, url: &Url, e: reqwest::Error) -> Attempt {
        // A policy refusal from the resolver travels inside the connect error.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if let Some(Denied(why)) = err.downcast_ref::<Denied>() {
                return Attempt::Limit(
                    "network_denied",
                    HttpError::Denied(format!("GET {} refused: {why}", redact_url(url))),
                );
            }
            source = err.source();
        }
        let cause = error_chain(&e);
        if crate::limits::out_of_descriptors(&e) {
            return Attempt::Limit(
                "host_overloaded",
                HttpError::Connection(format!(
                    "GET {} failed: the host has no file descriptor to spare ({cause}); this is the host's \
                     shortage, not the server's",
                    redact_url(url)
                )),
            );
        }
        if e.is_timeout() {
            Attempt::Timeout(format!("GET {} timed out: {cause}", redact_url(url)))
        } else {
            Attempt::Connection(format!("GET {} failed: {cause}", redact_url(url)))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

impl http::Host for HttpCap {
    async fn get_with_retry(
        &mut self,
        request: Request,
        policy: Option<http::RetryPolicy>,
    ) -> wasmtime::Result<Result<Response, HttpError>> {
        match self.start(&request, policy) {
            Ok(in_flight) => self.outcome(in_flight).await,
            Err(e) => Ok(Err(e)),
        }
    }

    async fn start_get_with_retry(
        &mut self,
        request: Request,
        policy: Option<http::RetryPolicy>,
    ) -> wasmtime::Result<Result<Resource<PendingGet>, HttpError>> {
        if self.pending.len() >= MAX_PENDING {
            let message = format!(
                "{MAX_PENDING} requests are pending already, the most a run may have; \
                 finish or drop one before starting another"
            );
            self.settle(Some(("pending_requests", message.clone())));
            return Ok(Err(HttpError::Denied(message)));
        }
        let in_flight = match self.start(&request, policy) {
            Ok(in_flight) => in_flight,
            Err(e) => return Ok(Err(e)),
        };
        // A key still pending is never reused, however long the run.
        let mut key = self.next_pending;
        while self.pending.contains_key(&key) {
            key = key.wrapping_add(1);
        }
        self.next_pending = key.wrapping_add(1);
        self.pending.insert(key, in_flight);
        self.refusals.answered();
        Ok(Ok(Resource::new_own(key)))
    }
}

impl http::HostPendingResponse for HttpCap {
    async fn finish(&mut self, this: Resource<PendingGet>) -> wasmtime::Result<Result<Response, HttpError>> {
        let in_flight = self
            .pending
            .remove(&this.rep())
            .ok_or_else(|| wasmtime::Error::msg("finish: no such pending-response"))?;
        self.outcome(in_flight).await
    }

    async fn drop(&mut self, this: Resource<PendingGet>) -> wasmtime::Result<()> {
        // Dropping the in-flight request cancels it.
        self.pending.remove(&this.rep());
        Ok(())
    }
}

/// How a request failed: with a host limit the envelope can name, or not.
enum SendError {
    Limit(LimitHit, HttpError),
    Other(HttpError),
}

impl SendError {
    fn into_http(self) -> HttpError {
        match self {
            SendError::Limit(_, e) | SendError::Other(e) => e,
        }
    }
}

impl Fetcher {
    /// A request's whole life on the HTTP runtime: sent (with retries), then
    /// its body kept within the run's share of the body limit until the
    /// connector takes it.
    async fn send_and_hold(
        self: Arc<Self>,
        url: Url,
        headers: HeaderMap,
        policy: RetryPolicy,
        timeout_ms: Option<u32>,
    ) -> Finished {
        // The body is counted from its first chunk until the connector takes
        // it (or drops the request), never handed from one share to another.
        let mut hold = Hold::new(&self.held, &self.budget);
        let outcome = self.send_with_retry(url, headers, policy, timeout_ms, &mut hold).await;
        let body = match &outcome {
            Ok(response) | Err(SendError::Other(HttpError::Status(response))) => response.body.len() as u64,
            _ => 0,
        };
        hold.shrink_to(body);
        Finished { outcome, _hold: hold }
    }

    async fn send_with_retry(
        &self,
        url: Url,
        headers: HeaderMap,
        policy: RetryPolicy,
        timeout_ms: Option<u32>,
        hold: &mut Hold,
    ) -> Result<Response, SendError> {
        let timeout = timeout_ms.map_or(policy.timeout, |ms| {
            Duration::from_millis(ms.into()).clamp(Duration::from_millis(1), self.config.max_timeout)
        });
        let policy = RetryPolicy { timeout, ..policy };

        let mut attempt = 1;
        loop {
            let outcome = self.attempt(url.clone(), &headers, &policy, attempt, hold).await;
            let (status, cause, retry_after, last) = match outcome {
                Attempt::Done(response) => return Ok(response),
                Attempt::Fatal(error) => return Err(SendError::Other(error)),
                Attempt::Budget(exceeded) => {
                    let message = exceeded.to_string();
                    let hit = LimitHit {
                        kind: "limit",
                        message: message.clone(),
                    };
                    return Err(SendError::Limit(hit, HttpError::Denied(message)));
                }
                Attempt::HeldTooMuch => {
                    let limit = self.config.max_body_bytes;
                    let hit = LimitHit {
                        kind: "body_too_large",
                        message: held_too_much(&url, limit),
                    };
                    return Err(SendError::Limit(hit, HttpError::BodyTooLarge(limit)));
                }
                Attempt::Limit(kind, error) => {
                    let message = match &error {
                        HttpError::BodyTooLarge(limit) => format!(
                            "a response from {} was larger than the limit of {limit} bytes (--max-response-body)",
                            redact_url(&url)
                        ),
                        HttpError::Denied(why) | HttpError::InvalidRequest(why) => why.clone(),
                        other => format!("{other:?}"),
                    };
                    return Err(SendError::Limit(LimitHit { kind, message }, error));
                }
                Attempt::RetryableStatus(response, retry_after) => {
                    let cause = format!("HTTP {} from {}", response.status, url.host_str().unwrap_or(""));
                    (
                        Some(response.status),
                        cause,
                        retry_after,
                        Some(HttpError::Status(response)),
                    )
                }
                Attempt::Timeout(cause) => (None, cause.clone(), None, Some(HttpError::Timeout(cause))),
                Attempt::Connection(cause) => (None, cause.clone(), None, Some(HttpError::Connection(cause))),
            };
            let exhausted = |attempts, cause: String| {
                Err(SendError::Other(HttpError::RetriesExhausted(RetriesExhausted {
                    attempts,
                    last_status: status,
                    last_cause: cause,
                })))
            };
            if attempt >= policy.max_attempts {
                return match (attempt, last) {
                    (1, Some(error)) => Err(SendError::Other(error)),
                    _ => exhausted(attempt, cause),
                };
            }
            let delay = match self.config.wait_before_retry(&policy, attempt, retry_after) {
                Ok(delay) => delay,
                Err(why) => return exhausted(attempt, format!("{cause}; {why}")),
            };
            self.log.caused(
                crate::log::Level::Warn,
                &format!(
                    "Transient failure ({cause}); retry {} of {} in {:.1} s",
                    attempt,
                    policy.max_attempts - 1,
                    delay.as_secs_f64()
                ),
                Some("http_get"),
                Some(json!({"url": url.as_str(), "attempt": attempt, "status": status})),
            );
            // A response that will be retried is not kept through the wait.
            drop(last);
            hold.shrink_to(0);
            // Under --replay the recorded wait moves the connector's clock on instead.
            self.offline.wait(delay).await;
            attempt += 1;
            self.counters.http_retries.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_backoff_matches_tenacity() {
        // wait_exponential(multiplier=1, min=2, max=30) after attempts 1..=6.
        let p = RetryPolicy::default();
        let waits: Vec<u64> = (1..=6).map(|a| p.delay_after(a).as_secs()).collect();
        assert_eq!(waits, [2, 2, 4, 8, 16, 30]);
        assert_eq!(p.delay_after(40), Duration::from_secs(30));
    }

    #[test]
    fn retry_after_lengthens_the_wait_but_never_shortens_it() {
        let c = HttpConfig::default();
        let p = RetryPolicy::default();
        let secs = |d: Result<Duration, String>| d.map(|d| d.as_secs_f64());
        // Retry-After: 0 still waits the backoff: no hot loop.
        assert_eq!(secs(c.wait_before_retry(&p, 1, Some(Duration::ZERO))), Ok(2.0));
        assert_eq!(secs(c.wait_before_retry(&p, 4, Some(Duration::ZERO))), Ok(8.0));
        assert_eq!(secs(c.wait_before_retry(&p, 1, Some(Duration::from_secs(7)))), Ok(7.0));
        assert_eq!(secs(c.wait_before_retry(&p, 1, None)), Ok(2.0));
        let too_long = c.wait_before_retry(&p, 1, Some(Duration::from_secs(3600))).unwrap_err();
        assert!(
            too_long.contains("retry after 3600 s, beyond the host's 60 s limit"),
            "{too_long}"
        );
        // A guest policy with no backoff still gets the host's floor.
        let eager = c.clamp(http::RetryPolicy {
            backoff_min_ms: 0,
            backoff_multiplier_ms: 0,
            ..guest()
        });
        assert_eq!(c.wait_before_retry(&eager, 1, Some(Duration::ZERO)), Ok(c.min_backoff));
    }

    #[test]
    fn transient_statuses_retry_and_others_do_not() {
        let p = RetryPolicy::default();
        for s in [429, 500, 502, 503, 504] {
            assert!(classify(s, &p), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 501] {
            assert!(!classify(s, &p), "{s}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(90)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn guest_policies_are_clamped() {
        let c = HttpConfig::default();
        let p = c.clamp(http::RetryPolicy {
            max_attempts: 1000,
            backoff_multiplier_ms: 0,
            backoff_min_ms: 0,
            backoff_max_ms: u32::MAX,
            timeout_ms: u32::MAX,
            retry_statuses: vec![200, 503, 999],
        });
        assert_eq!(p.max_attempts, 10);
        assert_eq!(p.backoff_min, c.min_backoff);
        assert_eq!(p.backoff_max, c.max_backoff);
        assert_eq!(p.timeout, c.max_timeout);
        assert_eq!(p.retry_statuses, [503]);
        assert_eq!(
            c.clamp(http::RetryPolicy {
                max_attempts: 0,
                ..guest()
            })
            .max_attempts,
            1
        );
    }

    #[test]
    fn names_resolving_to_private_addresses_are_cut_to_the_public_ones() {
        use crate::policy::AllowedHost;
        let api = url::Url::parse("https://api.acme-erp.com/v2").unwrap();
        let policy = NetworkPolicy::new(&api, vec![AllowedHost::parse("erp.internal").unwrap()], false);
        let addr = |s: &str| SocketAddr::new(s.parse().unwrap(), 0);
        // DNS rebinding: the api host now answers with the metadata address.
        let e = allowed_addresses(&policy, "api.acme-erp.com", &[addr("169.254.169.254")]).unwrap_err();
        assert!(e.0.contains("api.acme-erp.com resolves only to private"), "{e}");
        assert!(e.0.contains("169.254.169.254"), "{e}");
        // Mixed answers keep only the public addresses: the connection goes to a checked one.
        let kept = allowed_addresses(
            &policy,
            "api.acme-erp.com",
            &[addr("10.0.0.1"), addr("93.184.216.34"), addr("::1")],
        )
        .unwrap();
        assert_eq!(kept, [addr("93.184.216.34")]);
        // A name the operator allowed keeps its private addresses.
        let kept = allowed_addresses(&policy, "erp.internal", &[addr("10.0.0.1")]).unwrap();
        assert_eq!(kept, [addr("10.0.0.1")]);
        let open = NetworkPolicy::new(&api, vec![], true);
        assert_eq!(
            allowed_addresses(&open, "api.acme-erp.com", &[addr("10.0.0.1")])
                .unwrap()
                .len(),
            1
        );
    }

    fn guest() -> http::RetryPolicy {
        http::RetryPolicy {
            max_attempts: 3,
            backoff_multiplier_ms: 10,
            backoff_min_ms: 10,
            backoff_max_ms: 100,
            timeout_ms: 1000,
            retry_statuses: vec![503],
        }
    }

    mod against_a_loopback_server {
        use super::*;
        use crate::bindings::http::Host;
        use crate::log::{LogFormat, tests::sink};
        use crate::policy::AllowedHost;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        /// Answers each connection with the next canned response ("HANG" never answers).
        async fn canned(responses: Vec<String>) -> (String, Arc<AtomicUsize>) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let hits = Arc::new(AtomicUsize::new(0));
            let counter = hits.clone();
            tokio::spawn(async move {
                for response in responses {
                    let (mut socket, _) = listener.accept().await.unwrap();
                    let mut request = vec![0u8; 8192];
                    let _ = socket.read(&mut request).await;
                    counter.fetch_add(1, Ordering::SeqCst);
                    if response == "HANG" {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    } else {
                        let _ = socket.write_all(response.as_bytes()).await;
                    }
                }
            });
            (url, hits)
        }

        /// A server on a thread of its own (so it answers while the test's
        /// runtime is blocked): it reads one request, then hands the
        /// connection to `then`.
        fn serve_once(then: impl FnOnce(std::net::TcpStream) + Send + 'static) -> String {
            use std::io::Read;
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            std::thread::spawn(move || {
                let (mut socket, _) = listener.accept().unwrap();
                let mut request = [0u8; 8192];
                let _ = socket.read(&mut request);
                then(socket);
            });
            url
        }

        /// Waits until every pending request's task has ended, nobody finishing them.
        async fn until_answered(cap: &HttpCap) {
            let waited = Instant::now();
            while !cap.pending.values().all(|p| p.0.is_finished()) {
                assert!(waited.elapsed() < Duration::from_secs(30), "the requests never ended");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }

        fn reply(status: u16, body: &str) -> String {
            format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }

        fn cap(url: &str, config: HttpConfig) -> (HttpCap, crate::log::tests::Captured) {
            let api = Url::parse(url).unwrap();
            let policy = Arc::new(NetworkPolicy::new(&api, vec![AllowedHost::parse(url).unwrap()], false));
            let settings = Arc::new(Settings {
                customer_number: "1".into(),
                secrets: serde_json::Map::new(),
                config: serde_json::Map::new(),
                job_params: serde_json::Map::new(),
                api_url: api,
                connector_name: None,
            });
            let (log, captured) = sink(LogFormat::Json, &[]);
            let client = build_client(policy.clone()).unwrap();
            let ctx = RunCtx::new(Arc::new(log), crate::limits::Stop::never(), RunBudget::unlimited());
            (
                HttpCap::new(client, policy, settings, config, Offline::default(), &ctx),
                captured,
            )
        }

        fn request(url: &str) -> Request {
            Request {
                url: format!("{url}/suppliers"),
                query: vec![("page".into(), "1".into())],
                headers: vec![],
                timeout_ms: None,
                bearer_secret: None,
            }
        }

        fn fast(max_attempts: u32) -> Option<http::RetryPolicy> {
            Some(http::RetryPolicy {
                max_attempts,
                timeout_ms: 500,
                ..guest()
            })
        }

        #[tokio::test]
        async fn transient_statuses_are_retried_until_success() {
            let (url, hits) = canned(vec![reply(503, ""), reply(503, ""), reply(200, "{}")]).await;
            let (mut cap, log) = cap(
                &url,
                HttpConfig {
                    min_backoff: Duration::from_millis(1),
                    ..HttpConfig::default()
                },
            );
            let response = cap.get_with_retry(request(&url), fast(5)).await.unwrap().unwrap();
            assert_eq!(
                (response.status, response.attempts, response.body.as_slice()),
                (200, 3, b"{}".as_slice())
            );
            assert_eq!(hits.load(Ordering::SeqCst), 3);
            assert_eq!(
                log.text()
                    .lines()
                    .filter(|l| l.contains("\"step\":\"http_get\""))
                    .count(),
                2
            );
        }

        #[tokio::test]
        async fn retries_exhausted_reports_the_last_status() {
            let (url, hits) = canned(vec![reply(503, ""); 5]).await;
            let (mut cap, _) = cap(
                &url,
                HttpConfig {
                    min_backoff: Duration::from_millis(1),
                    ..HttpConfig::default()
                },
            );
            let error = cap.get_with_retry(request(&url), fast(3)).await.unwrap().unwrap_err();
            let HttpError::RetriesExhausted(e) = error else {
                panic!("{error:?}")
            };
            assert_eq!((e.attempts, e.last_status), (3, Some(503)));
            assert_eq!(hits.load(Ordering::SeqCst), 3);
        }

        #[tokio::test]
        async fn other_statuses_return_at_once_with_the_response() {
            let (url, hits) = canned(vec![reply(404, "no such page"), reply(200, "")]).await;
            let (mut cap, _) = cap(&url, HttpConfig::default());
            let error = cap.get_with_retry(request(&url), fast(5)).await.unwrap().unwrap_err();
            let HttpError::Status(r) = error else {
                panic!("{error:?}")
            };
            assert_eq!((r.status, r.body.as_slice()), (404, b"no such page".as_slice()));
            assert_eq!(hits.load(Ordering::SeqCst), 1);
        }

        #[tokio::test]
        async fn a_single_attempt_that_times_out_is_a_timeout() {
            let (url, _) = canned(vec!["HANG".into()]).await;
            let (mut cap, _) = cap(&url, HttpConfig::default());
            let policy = Some(http::RetryPolicy {
                max_attempts: 1,
                timeout_ms: 100,
                ..guest()
            });
            let error = cap.get_with_retry(request(&url), policy).await.unwrap().unwrap_err();
            assert!(
                matches!(&error, HttpError::Timeout(m) if m.contains("timed out")),
                "{error:?}"
            );
        }

        #[tokio::test]
        async fn a_started_request_is_answered_while_the_connector_computes() {
            // The server says when it has answered.
            let (answered, on_answer) = std::sync::mpsc::channel();
            let url = serve_once(move |mut socket| {
                use std::io::Write;
                socket.write_all(reply(200, "{\"page\": 2}").as_bytes()).unwrap();
                answered.send(()).unwrap();
            });
            let (mut cap, _) = cap(&url, HttpConfig::default());
            let pending = cap.start_get_with_retry(request(&url), None).await.unwrap().unwrap();
            // This thread runs the run's runtime and is now blocked, as it is
            // while wasm computes: the request must go on without it.
            on_answer
                .recv_timeout(Duration::from_secs(30))
                .expect("the request was not sent while its caller was busy");
            let response = http::HostPendingResponse::finish(&mut cap, pending)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (response.status, response.body.as_slice()),
                (200, b"{\"page\": 2}".as_slice())
            );
        }

        #[tokio::test]
        async fn a_run_has_at_most_four_pending_requests_and_a_drop_frees_one() {
            let (url, _) = canned(vec!["HANG".into(); 8]).await;
            let (mut cap, _) = cap(&url, HttpConfig::default());
            let mut held = Vec::new();
            for _ in 0..MAX_PENDING {
                held.push(cap.start_get_with_retry(request(&url), None).await.unwrap().unwrap());
            }
            let refused = cap
                .start_get_with_retry(request(&url), None)
                .await
                .unwrap()
                .unwrap_err();
            assert!(
                matches!(&refused, HttpError::Denied(m) if m.contains("4 requests are pending already")),
                "{refused:?}"
            );
            assert_eq!(cap.refusals.last().unwrap().kind, "pending_requests");
            http::HostPendingResponse::drop(&mut cap, held.pop().unwrap())
                .await
                .unwrap();
            assert_eq!(cap.pending.len(), MAX_PENDING - 1);
            cap.start_get_with_retry(request(&url), None).await.unwrap().unwrap();
            // A malformed request fails at once and takes no place.
            let mut bad = request(&url);
            bad.url = "not a url".into();
            cap.pending.clear();
            let e = cap.start_get_with_retry(bad, None).await.unwrap().unwrap_err();
            assert!(
                matches!(&e, HttpError::InvalidRequest(m) if m.contains("not an absolute URL")),
                "{e:?}"
            );
            assert!(cap.pending.is_empty());
        }

        #[tokio::test]
        async fn pending_responses_share_one_body_limit() {
            // A server on its own thread, so both responses arrive while nobody finishes them.
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                for socket in listener.incoming().take(3) {
                    let mut socket = socket.unwrap();
                    let mut request = [0u8; 8192];
                    let _ = socket.read(&mut request);
                    let _ = socket.write_all(reply(200, &"x".repeat(60)).as_bytes());
                }
            });
            let (mut cap, _) = cap(
                &url,
                HttpConfig {
                    max_body_bytes: 100,
                    ..HttpConfig::default()
                },
            );
            // Two 60-byte responses cannot both wait in a run limited to 100 bytes.
            let first = cap.start_get_with_retry(request(&url), None).await.unwrap().unwrap();
            let second = cap.start_get_with_retry(request(&url), None).await.unwrap().unwrap();
            until_answered(&cap).await;
            assert_eq!(
                cap.fetcher.held.load(Ordering::SeqCst),
                60,
                "one body waits, the other was refused"
            );
            let mut outcomes = Vec::new();
            for pending in [first, second] {
                outcomes.push(http::HostPendingResponse::finish(&mut cap, pending).await.unwrap());
            }
            let refused: Vec<&HttpError> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
            assert_eq!(refused.len(), 1, "{outcomes:?}");
            assert!(matches!(refused[0], HttpError::BodyTooLarge(100)), "{refused:?}");
            assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1);
            // Handed to the connector, a body no longer counts: the next one fits.
            assert_eq!(cap.fetcher.held.load(Ordering::SeqCst), 0);
            let third = cap.get_with_retry(request(&url), None).await.unwrap().unwrap();
            assert_eq!(third.body.len(), 60);
        }

        #[tokio::test]
        async fn a_request_to_a_denied_host_is_refused_when_started() {
            let (url, hits) = canned(vec![reply(200, "")]).await;
            let (mut cap, _) = cap(&url, HttpConfig::default());
            let mut elsewhere = request(&url);
            elsewhere.url = "http://not-allowed.invalid/suppliers".into();
            let e = cap.start_get_with_retry(elsewhere, None).await.unwrap().unwrap_err();
            assert!(
                matches!(&e, HttpError::Denied(m) if m.contains("not-allowed.invalid")),
                "{e:?}"
            );
            assert_eq!(cap.refusals.last().unwrap().kind, "network_denied");
            assert!(cap.pending.is_empty());
            assert_eq!(hits.load(Ordering::SeqCst), 0);
        }

        #[tokio::test]
        async fn requests_left_pending_are_cancelled_when_the_run_ends() {
            // The server holds the request open and says when the host hangs up.
            let (events, on_event) = std::sync::mpsc::channel();
            let url = serve_once(move |mut socket| {
                use std::io::Read;
                let mut buffer = [0u8; 8192];
                events.send("request").unwrap();
                socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                if matches!(socket.read(&mut buffer), Ok(0)) {
                    events.send("closed").unwrap();
                }
            });
            let (mut cap, _) = cap(&url, HttpConfig::default());
            let _forgotten = cap.start_get_with_retry(request(&url), None).await.unwrap().unwrap();
            assert_eq!(on_event.recv_timeout(Duration::from_secs(30)), Ok("request"));
            cap.cancel_pending();
            assert_eq!(
                on_event.recv_timeout(Duration::from_secs(30)),
                Ok("closed"),
                "a request the connector never finished outlived its run"
            );
            assert!(cap.pending.is_empty());
        }

        #[tokio::test]
        async fn a_pending_key_still_in_use_is_never_reused() {
            let (url, _) = canned(vec!["HANG".into(); 2]).await;
            let (mut cap, _) = cap(&url, HttpConfig::default());
            let first = cap.start_get_with_retry(request(&url), None).await.unwrap().unwrap();
            // As if the counter had wrapped around to the first one's key.
            cap.next_pending = first.rep();
            let second = cap.start_get_with_retry(request(&url), None).await.unwrap().unwrap();
            assert_ne!(first.rep(), second.rep());
            assert_eq!(cap.pending.len(), 2);
        }

        #[tokio::test]
        async fn a_retried_response_is_not_held_with_the_next_one() {
            // 60 + 60 bytes would pass the 100-byte limit if the 503's body were still held.
            let (url, hits) = canned(vec![reply(503, &"r".repeat(60)), reply(200, &"x".repeat(60))]).await;
            let (mut cap, _) = cap(
                &url,
                HttpConfig {
                    max_body_bytes: 100,
                    min_backoff: Duration::from_millis(1),
                    ..HttpConfig::default()
                },
            );
            let pending = cap.start_get_with_retry(request(&url), fast(3)).await.unwrap().unwrap();
            until_answered(&cap).await;
            assert_eq!(
                cap.fetcher.held.load(Ordering::SeqCst),
                60,
                "only the final body is held"
            );
            let response = http::HostPendingResponse::finish(&mut cap, pending)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (response.status, response.attempts, hits.load(Ordering::SeqCst)),
                (200, 2, 2)
            );
            assert_eq!(cap.fetcher.held.load(Ordering::SeqCst), 0);
        }

        #[test]
        fn a_hold_grows_only_within_the_limit_and_gives_back_what_it_sheds() {
            let held = Arc::new(AtomicU64::new(0));
            let budget = RunBudget::unlimited();
            let mut a = Hold::new(&held, &budget);
            let mut b = Hold::new(&held, &budget);
            assert!(a.grow(60, 100).is_ok());
            assert!(
                matches!(b.grow(50, 100), Err(Attempt::HeldTooMuch)),
                "60 + 50 passes 100"
            );
            assert_eq!(held.load(Ordering::SeqCst), 60, "a refused grow takes nothing");
            assert!(b.grow(40, 100).is_ok());
            assert_eq!(
                budget.used(crate::budget::Resource::HostMemory),
                100,
                "the run's budget is charged too"
            );
            a.shrink_to(10);
            assert_eq!(held.load(Ordering::SeqCst), 50);
            a.shrink_to(20);
            assert_eq!(held.load(Ordering::SeqCst), 50, "shrinking never grows");
            drop(b);
            assert_eq!(held.load(Ordering::SeqCst), 10);
            drop(a);
            assert_eq!(held.load(Ordering::SeqCst), 0);
            assert_eq!(budget.used(crate::budget::Resource::HostMemory), 0);
        }

        #[test]
        fn a_body_past_the_runs_host_memory_stops_the_run() {
            let held = Arc::new(AtomicU64::new(0));
            let stop = crate::limits::Stop::never();
            let budget = RunBudget::new(
                crate::budget::BudgetLimits {
                    max_host_memory: 100,
                    ..Default::default()
                },
                stop.clone(),
            );
            let mut a = Hold::new(&held, &budget);
            assert!(a.grow(80, 1000).is_ok());
            assert!(matches!(a.grow(30, 1000), Err(Attempt::Budget(_))));
            assert_eq!(stop.exceeded().map(|l| l.kind()), Some("limit"));
        }

        #[tokio::test]
        async fn oversized_bodies_are_cut_and_recorded_as_a_limit() {
            let (url, _) = canned(vec![reply(200, &"x".repeat(100))]).await;
            let (mut cap, _) = cap(
                &url,
                HttpConfig {
                    max_body_bytes: 10,
                    ..HttpConfig::default()
                },
            );
            let error = cap.get_with_retry(request(&url), None).await.unwrap().unwrap_err();
            assert!(matches!(error, HttpError::BodyTooLarge(10)), "{error:?}");
            assert_eq!(cap.refusals.last().unwrap().kind, "body_too_large");
        }
    }
}
