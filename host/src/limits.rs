//! Host-enforced limits on one job. A connector cannot ask for more; the
//! operator sets them with flags. Each limit that ends a run has its own error
//! kind in the envelope.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The operator's limits for one job.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory of the connector, all memories together.
    pub max_memory_bytes: usize,
    /// Elements across the connector's tables.
    pub max_table_elements: usize,
    /// Wall-clock time for the whole run, host calls included.
    pub timeout: Duration,
    /// Wasm stack; deeper recursion traps.
    pub max_wasm_stack_bytes: usize,
    /// Connector log lines per run (its stdout and stderr included); later
    /// lines are dropped and counted.
    pub max_log_lines: u64,
    /// Connector log bytes per run, likewise.
    pub max_log_bytes: u64,
    /// Epoch interruption (what stops a connector spinning without host calls).
    /// Off only in [`Limits::unenforced`], to measure what the limits cost.
    pub epoch_interruption: bool,
    /// Bytes the host copies out of the connector in one call (wasmtime's
    /// hostcall fuel): strings and lists it hands over, however they alias.
    pub max_call_bytes: usize,
    /// After the deadline or a signal: how long the host may take to stop the
    /// connector, settle the store and report, before it reports anyway.
    pub grace: Duration,
}

/// The largest result object a connector may return, as JSON text: it is a
/// summary that the host prints in the envelope.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory_bytes: 256 << 20,
            max_table_elements: 100_000,
            timeout: Duration::from_secs(15 * 60),
            max_wasm_stack_bytes: 512 << 10,
            max_log_lines: 50_000,
            max_log_bytes: 32 << 20,
            epoch_interruption: true,
            max_call_bytes: 16 << 20,
            grace: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// No limits at all: for measuring their cost on the honest path
    /// (`cargo run --release --example limits_cost`), never for tenants.
    pub fn unenforced() -> Self {
        Self {
            max_memory_bytes: usize::MAX,
            max_table_elements: usize::MAX,
            timeout: Duration::from_secs(365 * 24 * 3600),
            max_wasm_stack_bytes: Limits::default().max_wasm_stack_bytes,
            max_log_lines: u64::MAX,
            max_log_bytes: u64::MAX,
            epoch_interruption: false,
            max_call_bytes: usize::MAX,
            grace: Limits::default().grace,
        }
    }
}

/// A limit that ended a run; travels inside a trap so the runtime can name it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error(
        "the connector tried to grow its memory to {desired} bytes, over the limit of {limit} bytes \
         (--max-memory)"
    )]
    Memory { desired: usize, limit: usize },
    #[error("the connector tried to grow its tables to {desired} elements, over the limit of {limit} (--max-memory)")]
    Table { desired: usize, limit: usize },
    #[error("the run exceeded its time limit of {} (--timeout)", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("the run was cancelled by {0}")]
    Cancelled(&'static str),
    #[error(
        "the connector handed the host more than {limit} bytes in one call (--max-call-bytes); \
         the host bounds what it copies out of a connector, however its strings and lists alias"
    )]
    CallTooLarge { limit: usize },
    #[error(
        "the connector held more than {limit} resources at once (streams, pollables, HTTP requests \
         and their bodies); drop each one when done with it"
    )]
    Resources { limit: usize },
    /// The run's budget ([`crate::budget`]) ran out.
    #[error(transparent)]
    Budget(#[from] crate::budget::Exceeded),
    /// The store ended the run: it refused the host's credentials, say.
    #[error("{message}")]
    Store { kind: &'static str, message: String },
}

impl LimitExceeded {
    /// The envelope's error kind.
    pub fn kind(&self) -> &'static str {
        match self {
            LimitExceeded::Memory { .. }
            | LimitExceeded::Table { .. }
            | LimitExceeded::CallTooLarge { .. }
            | LimitExceeded::Resources { .. } => "memory_limit",
            LimitExceeded::Timeout(_) => "timeout",
            LimitExceeded::Cancelled(_) => "cancelled",
            LimitExceeded::Budget(_) => "limit",
            LimitExceeded::Store { kind, .. } => kind,
        }
    }

    /// What ran out, when the run's budget did (the envelope's `error.limit`).
    pub fn budget_resource(&self) -> Option<&'static str> {
        match self {
            LimitExceeded::Budget(e) => Some(e.resource.name()),
            _ => None,
        }
    }

    /// The limit behind a trap, if a limit caused it: ours travel in the error,
    /// wasmtime's hostcall fuel is recognised by its message, a full resource
    /// table by its error.
    pub fn of_trap(error: &wasmtime::Error, max_call_bytes: usize, max_resources: usize) -> Option<LimitExceeded> {
        if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
            return Some(limit.clone());
        }
        for cause in error.chain() {
            if cause.to_string().starts_with(HOSTCALL_FUEL_EXHAUSTED) {
                return Some(LimitExceeded::CallTooLarge { limit: max_call_bytes });
            }
            if matches!(
                cause.downcast_ref::<wasmtime::component::ResourceTableError>(),
                Some(wasmtime::component::ResourceTableError::Full)
            ) {
                return Some(LimitExceeded::Resources { limit: max_resources });
            }
        }
        None
    }
}

/// The host could not get what a run needs (a thread, a descriptor, a
/// runtime): the host's fault, not the connector's. The run fails as
/// `host_overloaded`, and its slot and streams are closed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the host is overloaded: {0}; the run was not started or could not go on (try again later, or run fewer at once)")]
pub struct Overloaded(pub String);

/// Whether an error, or one of its causes, is the process running out of
/// file descriptors (EMFILE, ENFILE): the host's shortage, not the peer's.
pub fn out_of_descriptors(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Whether the process cannot open a file right now for want of
/// descriptors: asked of the kernel, for errors that do not carry an errno
/// (SQLite's "unable to open database file").
pub fn descriptors_exhausted() -> bool {
    // SAFETY: plain syscalls on a path literal and the descriptor they return.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd >= 0 {
        unsafe { libc::close(fd) };
        return false;
    }
    matches!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE)
    )
}

/// How wasmtime 48 words a hostcall-fuel trap (its error type is private);
/// the `alias-bomb` end-to-end test keeps this honest.
const HOSTCALL_FUEL_EXHAUSTED: &str = "too much data is being copied between the host and the guest";

/// Why a job is being stopped from outside the connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Deadline,
    /// SIGTERM or SIGINT, by name.
    Signal(&'static str),
    /// The run's budget ran out.
    Limit(LimitExceeded),
}

/// The job's deadline and cancellation, shared by the runtime (epoch checks,
/// the call itself) and the store (no commit after the job was stopped).
#[derive(Debug)]
pub struct Stop {
    deadline: Instant,
    timeout: Duration,
    /// A signal or a spent budget; the first one wins.
    cause: OnceLock<StopReason>,
    notify: tokio::sync::Notify,
}

impl Stop {
    pub fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            deadline: Instant::now() + timeout,
            timeout,
            cause: OnceLock::new(),
            notify: tokio::sync::Notify::new(),
        })
    }

    /// A stop that never comes (admin commands, tests).
    pub fn never() -> Arc<Self> {
        Self::new(Duration::from_secs(100 * 365 * 24 * 3600))
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Records a signal; the first stop wins.
    pub fn cancel(&self, signal: &'static str) {
        self.set(StopReason::Signal(signal));
    }

    /// Stops the run because a limit ran out; the first stop wins.
    pub fn exceed(&self, limit: LimitExceeded) {
        self.set(StopReason::Limit(limit));
    }

    fn set(&self, cause: StopReason) {
        if self.cause.set(cause).is_ok() {
            self.notify.notify_waiters();
        }
    }

    pub fn reason(&self) -> Option<StopReason> {
        if let Some(cause) = self.cause.get() {
            return Some(cause.clone());
        }
        (Instant::now() >= self.deadline).then_some(StopReason::Deadline)
    }

    /// The limit a stopped job reports.
    pub fn exceeded(&self) -> Option<LimitExceeded> {
        self.reason().map(|r| match r {
            StopReason::Deadline => LimitExceeded::Timeout(self.timeout),
            StopReason::Signal(signal) => LimitExceeded::Cancelled(signal),
            StopReason::Limit(limit) => limit,
        })
    }

    /// Resolves once the deadline passes or a signal arrives.
    pub async fn stopped(&self) -> LimitExceeded {
        loop {
            let notified = self.notify.notified();
            if let Some(limit) = self.exceeded() {
                return limit;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(self.deadline.into()) => {}
            }
        }
    }
}

/// The last answer a limit-guarded capability (http, delta-state,
/// supplier-load) gave the connector. When the connector then fails, the
/// envelope names the limit only if a limit refused its last such call.
#[derive(Debug, Clone, Default)]
pub struct Refusals(Arc<Mutex<Option<LimitHit>>>);

impl Refusals {
    /// A limit refused the call.
    pub fn refused(&self, hit: LimitHit) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(hit);
    }

    /// The call was answered otherwise: any earlier refusal is history.
    pub fn answered(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn last(&self) -> Option<LimitHit> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A host limit a capability enforced by refusing a call (the connector saw an
/// error it could handle). If the run then fails, the envelope names the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitHit {
    /// The envelope's error kind: `body_too_large`, `request_budget`, `pending_requests`,
    /// `too_many_redirects`, `network_denied`, `secret_denied`, `replay_miss`,
    /// `batch_too_large`, `already_running`, `lease_lost`, `stream_denied`, `stream_limit`.
    pub kind: &'static str,
    pub message: String,
}

/// wasmtime's view of the memory and table limits: growth past them traps
/// with a [`LimitExceeded`] the runtime can recognise.
pub struct GuestLimiter {
    max_memory_bytes: usize,
    max_table_elements: usize,
    /// The largest memory the connector grew to (for the run's usage).
    pub peak_memory_bytes: usize,
}

impl GuestLimiter {
    pub fn new(limits: &Limits) -> Self {
        Self {
            max_memory_bytes: limits.max_memory_bytes,
            max_table_elements: limits.max_table_elements,
            peak_memory_bytes: 0,
        }
    }
}

impl wasmtime::ResourceLimiter for GuestLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            return Err(LimitExceeded::Memory {
                desired,
                limit: self.max_memory_bytes,
            }
            .into());
        }
        self.peak_memory_bytes = self.peak_memory_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_table_elements {
            return Err(LimitExceeded::Table {
                desired,
                limit: self.max_table_elements,
            }
            .into());
        }
        Ok(true)
    }
}

/// Parses sizes such as `256MiB`, `64 MB` or `1048576`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let size: bytesize::ByteSize = text
        .trim()
        .parse()
        .map_err(|e| format!("{text:?} is not a size such as 256MiB ({e})"))?;
    usize::try_from(size.as_u64()).map_err(|_| format!("{text:?} is too large"))
}

/// Parses durations such as `15m`, `90s` or `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("{text:?} is not a duration such as 15m or 90s ({e})"))
}

/// The job's HTTP requests, counted against `--max-requests`: shared by
/// `http` and `wasi:http`, so neither way around the other exists.
#[derive(Debug)]
pub struct RequestBudget {
    max: u64,
    used: AtomicU64,
}

impl RequestBudget {
    pub fn new(max: u64) -> Self {
        Self {
            max,
            used: AtomicU64::new(0),
        }
    }

    /// Takes one request, or says why there is none left.
    pub fn take(&self) -> Result<(), String> {
        self.used
            .fetch_update(AtomicOrdering::Relaxed, AtomicOrdering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .map(drop)
            .map_err(|_| {
                format!(
                    "the job's budget of {} HTTP requests is spent (--max-requests)",
                    self.max
                )
            })
    }

    pub fn used(&self) -> u64 {
        self.used.load(AtomicOrdering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn growth_past_the_limit_is_refused_with_a_named_error() {
        let mut limiter = GuestLimiter::new(&Limits {
            max_memory_bytes: 1 << 20,
            ..Limits::default()
        });
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        let err = limiter.memory_growing(1 << 20, 2 << 20, None).unwrap_err();
        let limit = err.downcast_ref::<LimitExceeded>().unwrap();
        assert_eq!(limit.kind(), "memory_limit");
        assert!(
            err.to_string()
                .contains("over the limit of 1048576 bytes (--max-memory)"),
            "{err}"
        );
        assert!(limiter.table_growing(0, 10, None).unwrap());
        assert!(limiter.table_growing(0, 1_000_000, None).is_err());
    }

    #[test]
    fn refusals_name_only_the_last_answer() {
        let r = Refusals::default();
        r.refused(LimitHit {
            kind: "body_too_large",
            message: "big".into(),
        });
        assert_eq!(r.last().unwrap().kind, "body_too_large");
        r.answered();
        assert_eq!(r.last(), None, "a later answer makes the refusal history");
    }

    #[tokio::test]
    async fn a_stop_comes_at_the_deadline_or_with_a_signal() {
        let stop = Stop::new(Duration::from_millis(30));
        assert_eq!(stop.reason(), None);
        assert_eq!(stop.stopped().await, LimitExceeded::Timeout(Duration::from_millis(30)));
        assert_eq!(stop.reason(), Some(StopReason::Deadline));

        let stop = Stop::never();
        let waiter = {
            let stop = stop.clone();
            tokio::spawn(async move { stop.stopped().await })
        };
        tokio::task::yield_now().await;
        stop.cancel("SIGTERM");
        stop.cancel("SIGINT");
        assert_eq!(waiter.await.unwrap(), LimitExceeded::Cancelled("SIGTERM"));
        assert_eq!(LimitExceeded::Cancelled("SIGTERM").kind(), "cancelled");
    }

    #[test]
    fn timeouts_read_well() {
        assert_eq!(
            LimitExceeded::Timeout(Duration::from_secs(90)).to_string(),
            "the run exceeded its time limit of 1m 30s (--timeout)"
        );
    }
}
