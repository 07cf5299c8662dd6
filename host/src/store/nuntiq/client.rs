//! The Customer API client (nuntiq-platform.md §4): every request carries
//! `Authorization: Bearer <token>` and `X-Customer-Number`; transient
//! failures (429 with its `Retry-After`, 5xx, a lost connection, a timeout)
//! are retried with backoff, which is safe because every write is an upsert
//! or an idempotent state change; everything else is answered at once.

use crate::limits::Stop;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use std::time::{Duration, SystemTime};
use url::Url;

/// The API's token: read from the environment or a file, never from argv,
/// never shown, never handed to a connector.
#[derive(Clone)]
pub struct ApiToken(String);

impl ApiToken {
    pub fn new(token: String) -> Result<Self, String> {
        let token = token.trim().to_owned();
        if token.is_empty() {
            return Err("the Customer API token is empty".into());
        }
        HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the Customer API token cannot be sent in a header (a control character?)".to_owned())?;
        Ok(Self(token))
    }

    /// The value, for the redactor only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken([REDACTED])")
    }
}

/// How an API call ended when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 401: the token is missing, wrong or expired.
    Unauthorized(String),
    /// 403: the token may not do this for this customer.
    Forbidden(String),
    /// 400: the request (a row of it) did not validate; the API's message.
    Invalid(String),
    /// 404: the API's message.
    NotFound(String),
    /// 422: its code (`CURSOR_REGRESSION`, …) and message.
    Unprocessable { code: Option<String>, message: String },
    /// Every attempt failed with something transient, or another status.
    Unavailable(String),
    /// The run was stopped while the call waited to retry.
    Stopped(String),
}

/// A successful answer: its status and body.
pub struct Answer {
    pub body: Vec<u8>,
}

/// How often and how patiently a call is retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this gives up instead of waiting.
    pub max_retry_after: Duration,
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 8,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            timeout: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based), lengthened by a `Retry-After`.
    fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self
            .first_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.max_backoff);
        retry_after.map_or(backoff, |r| r.max(backoff))
    }
}

/// What one attempt came to.
enum Attempt {
    Done(Answer),
    /// Worth another attempt: why, and the server's `Retry-After`.
    Retry(String, Option<Duration>),
    Fail(ApiError),
}

/// A client of one Customer API.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    token: ApiToken,
    policy: RetryPolicy,
}

impl ApiClient {
    pub fn new(base: Url, token: ApiToken, policy: RetryPolicy) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            // The token never follows a redirect.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("nuntiq-host/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("the Customer API client could not start: {e}"))?;
        Ok(Self {
            http,
            base,
            token,
            policy,
        })
    }

    /// The API's base URL, as messages show it.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `base/v1/<segments…>`, each segment escaped.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("v1").extend(segments);
        }
        url
    }

    /// Sends `method url` for `customer` with a JSON `body`, retrying what is
    /// transient until the policy's attempts are spent or `stop` comes.
    pub async fn send(
        &self,
        method: reqwest::Method,
        url: &Url,
        customer: &str,
        body: Option<&[u8]>,
        stop: &Stop,
    ) -> Result<Answer, ApiError> {
        let mut attempt = 1;
        loop {
            let cause = match self.attempt(method.clone(), url, customer, body).await {
                Attempt::Done(answer) => return Ok(answer),
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry(cause, retry_after) => {
                    if retry_after.is_some_and(|r| r > self.policy.max_retry_after) {
                        return Err(ApiError::Unavailable(format!(
                            "{cause}; it asked to retry after more than {} s",
                            self.policy.max_retry_after.as_secs()
                        )));
                    }
                    (cause, self.policy.wait(attempt, retry_after))
                }
            };
            let (cause, wait) = cause;
            if attempt >= self.policy.attempts {
                return Err(ApiError::Unavailable(format!("{cause} ({attempt} attempts)")));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                limit = stop.stopped() => {
                    return Err(ApiError::Stopped(format!("{limit}; {method} {url} was not retried after: {cause}")));
                }
            }
            attempt += 1;
        }
    }

    async fn attempt(&self, method: reqwest::Method, url: &Url, customer: &str, body: Option<&[u8]>) -> Attempt {
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", self.token.0)).expect("checked in ApiToken::new");
        bearer.set_sensitive(true);
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .header(AUTHORIZATION, bearer)
            .header("X-Customer-Number", customer)
            .timeout(self.policy.timeout);
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body.to_vec());
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(format!("{method} {url}: {}", chain(&e)), None),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::caps::http::parse_retry_after(v, SystemTime::now()));
        let body = match response.bytes().await {
            Ok(b) => b.to_vec(),
            // A body lost on the way: the write may have been applied; retrying is safe.
            Err(e) => return Attempt::Retry(format!("{method} {url}: the answer was lost: {}", chain(&e)), None),
        };
        let refusal = || super::wire::Refusal::parse(&body);
        let message = || {
            let r = refusal();
            r.message.unwrap_or_else(|| format!("HTTP {status}"))
        };
        match status {
            200..=299 => Attempt::Done(Answer { body }),
            429 | 500..=599 => Attempt::Retry(format!("{method} {url}: HTTP {status}: {}", message()), retry_after),
            400 => Attempt::Fail(ApiError::Invalid(message())),
            401 => Attempt::Fail(ApiError::Unauthorized(message())),
            403 => Attempt::Fail(ApiError::Forbidden(message())),
            404 => Attempt::Fail(ApiError::NotFound(message())),
            422 => {
                let r = refusal();
                Attempt::Fail(ApiError::Unprocessable {
                    code: r.code,
                    message: r.message.unwrap_or_else(|| "HTTP 422".into()),
                })
            }
            _ => Attempt::Fail(ApiError::Unavailable(format!(
                "{method} {url}: HTTP {status}: {}",
                message()
            ))),
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_retry_after_lengthens_it() {
        let p = RetryPolicy::default();
        let waits: Vec<u64> = (1..=8).map(|a| p.wait(a, None).as_millis() as u64).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
        assert_eq!(p.wait(1, Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(p.wait(5, Some(Duration::ZERO)), Duration::from_millis(3200));
    }

    #[test]
    fn urls_escape_their_segments_and_keep_the_base_path() {
        let token = ApiToken::new("t0k".into()).unwrap();
        let c = ApiClient::new(
            Url::parse("http://127.0.0.1:9/api").unwrap(),
            token,
            RetryPolicy::default(),
        )
        .unwrap();
        assert_eq!(
            c.url(&["delta", "streams", "sap eu", "a/b", "begin"]).as_str(),
            "http://127.0.0.1:9/api/v1/delta/streams/sap%20eu/a%2Fb/begin"
        );
        let c = ApiClient::new(
            Url::parse("http://127.0.0.1:9/api/").unwrap(),
            ApiToken::new("t".into()).unwrap(),
            RetryPolicy::default(),
        )
        .unwrap();
        assert_eq!(c.url(&["supplier"]).as_str(), "http://127.0.0.1:9/api/v1/supplier");
    }

    #[test]
    fn a_token_never_prints() {
        let token = ApiToken::new(" s3cr3t-token \n".into()).unwrap();
        assert_eq!(token.expose(), "s3cr3t-token");
        assert!(!format!("{token:?}").contains("s3cr3t"));
        assert!(ApiToken::new("  ".into()).is_err());
        assert!(ApiToken::new("a\u{7}b".into()).is_err());
    }
}
