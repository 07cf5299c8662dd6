//! `http::get(url)`: a request builder over the host's `get-with-retry`, which
//! retries 429 and 5xx with backoff and reaches only the hosts the operator
//! allowed.
//!
//! ```no_run
//! use nuntiq_connector::{get_config, http};
//!
//! let api_url = get_config("api_url").unwrap_or_default();
//! let page: serde_json::Value = http::get(format!("{api_url}/suppliers"))
//!     .query("page", 1)
//!     .bearer_secret("api_token") // the host attaches the token; the connector never holds it
//!     .send()
//!     .map_err(|e| e.message())?
//!     .json()
//!     .map_err(|e| e.to_string())?;
//! # Ok::<(), String>(())
//! ```
//!
//! [`Request::start`] sends it in the background instead, so the next page
//! downloads while this one is mapped and written:
//!
//! ```no_run
//! use nuntiq_connector::http;
//!
//! let page = |n: u32| http::get("https://api.example.com/suppliers").query("page", n);
//! let mut next = Some(page(1).start().map_err(|e| e.message())?);
//! let mut n = 1;
//! while let Some(pending) = next.take() {
//!     let body: serde_json::Value = pending.finish().map_err(|e| e.message())?.json().map_err(|e| e.to_string())?;
//!     if body["next_page"].is_number() {
//!         n += 1;
//!         next = Some(page(n).start().map_err(|e| e.message())?); // in flight while this page is handled
//!     }
//!     // … map and queue this page's rows …
//! }
//! # Ok::<(), String>(())
//! ```

pub use crate::raw_http::{HttpError, Response, RetryPolicy};
use crate::raw_http::{PendingResponse, Request as RawRequest, get_with_retry, start_get_with_retry};

/// Starts a GET request.
pub fn get(url: impl Into<String>) -> Request {
    Request {
        raw: RawRequest {
            url: url.into(),
            query: Vec::new(),
            headers: Vec::new(),
            timeout_ms: None,
            bearer_secret: None,
        },
        policy: None,
    }
}

/// A GET request being built; [`Request::send`] hands it to the host.
pub struct Request {
    raw: RawRequest,
    policy: Option<RetryPolicy>,
}

impl Request {
    /// Adds a query parameter (at most 256 per request).
    pub fn query(mut self, key: &str, value: impl ToString) -> Self {
        self.raw.query.push((key.to_owned(), value.to_string()));
        self
    }

    /// Adds a header (at most 64; `host`, hop-by-hop headers and `authorization`
    /// with a bearer secret are refused by the host).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.raw.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sends `Authorization: Bearer <secrets[name]>`; the token never enters the connector.
    pub fn bearer_secret(mut self, name: &str) -> Self {
        self.raw.bearer_secret = Some(name.to_owned());
        self
    }

    /// The per-attempt timeout (the host clamps it to its own limit).
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.raw.timeout_ms = Some(ms);
        self
    }

    /// Replaces the host's default retry policy (the host clamps it to its limits).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Sends it through the host, with retries; blocks until the last attempt.
    pub fn send(self) -> Result<Response, HttpError> {
        get_with_retry(&self.raw, self.policy.as_ref())
    }

    /// Sends it in the background and returns at once; [`Pending::finish`]
    /// waits for the outcome `send` would have given. A malformed or refused
    /// request fails here. At most 4 may be pending at a time (the host
    /// answers a fifth with `Denied`); dropping a [`Pending`] cancels it.
    pub fn start(self) -> Result<Pending, HttpError> {
        start_get_with_retry(&self.raw, self.policy.as_ref()).map(Pending)
    }
}

/// A request running in the host while the connector works on.
pub struct Pending(PendingResponse);

impl Pending {
    /// Waits for the response (retries included).
    pub fn finish(self) -> Result<Response, HttpError> {
        PendingResponse::finish(self.0)
    }
}

impl Response {
    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

impl HttpError {
    /// What went wrong, for people (wit-bindgen's `Display` is the `Debug` form).
    pub fn message(&self) -> String {
        match self {
            HttpError::Denied(m) => format!("refused by the host: {m}"),
            HttpError::InvalidRequest(m) => format!("invalid request: {m}"),
            HttpError::Timeout(m) | HttpError::Connection(m) => m.clone(),
            HttpError::Status(r) => {
                let body = String::from_utf8_lossy(&r.body);
                let body: String = body.chars().take(200).collect();
                format!("HTTP {} from {}: {}", r.status, r.url, body.trim())
            }
            HttpError::RetriesExhausted(e) => {
                format!("gave up after {} attempts; last: {}", e.attempts, e.last_cause)
            }
            HttpError::BodyTooLarge(limit) => format!("the response body is over the host's limit of {limit} bytes"),
        }
    }
}
