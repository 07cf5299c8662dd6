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

pub use crate::raw_http::{HttpError, Response, RetryPolicy};
use crate::raw_http::{Request as RawRequest, get_with_retry};

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
            HttpError::Denied(m) => format!("request refused by the host's network policy: {m}"),
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
